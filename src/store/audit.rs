//! The audit log: an append-only record of the changes the API carried out.
//! What counts as a change and how its row is derived from the request is the HTTP
//! layer's business (`http::audit`); this module only stores and pages the rows. It never
//! stores request values, only field names.
//!
//! Rows are written by one task with group commit, like call intakes (`batch`): every
//! change through the API now costs a second write, and on SQLite's one writer a busy
//! PBX pushing call events would otherwise pay it row by row.

use sqlx::AnyPool;
use sqlx::any::AnyRow;
use tokio::sync::{mpsc, oneshot};

use super::rows::{Cell, Rows};
use super::{Page, Paged, Result, Store, StoreError, col, json_list, now_ms, parse_json_list};
use crate::crm::model::{AuditId, Millis};

/// One change, as the HTTP layer describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    /// `user:<id>`, `bootstrap` or `trunk:<id>`.
    pub actor: String,
    /// Method and route template: `PATCH /api/v1/contacts/{id}`.
    pub action: String,
    pub object: Option<String>,
    /// Top-level field names of the request body (never values).
    pub fields: Vec<String>,
    pub remote_addr: Option<String>,
    pub status: u16,
}

/// A stored entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: AuditId,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub object: Option<String>,
    pub fields: Vec<String>,
    pub remote_addr: Option<String>,
    pub status: u16,
}

impl Store {
    /// Appends one entry, stamped now. Returns once the row is committed.
    pub async fn record_audit(&self, entry: NewAudit) -> Result<AuditId> {
        self.queue_audit(entry).await?.committed().await
    }

    /// Queues one entry, stamped now, for the writer's next batch; returns once queued
    /// (waiting only while the queue is full, which holds back the changes behind it).
    pub async fn queue_audit(&self, entry: NewAudit) -> Result<QueuedAudit> {
        self.audit_writer().queue(Some(entry)).await
    }

    /// Returns once every entry queued before is committed: readers of the log see what
    /// was answered before they asked.
    pub async fn flush_audit(&self) -> Result<()> {
        self.audit_writer()
            .queue(None)
            .await?
            .committed()
            .await
            .map(drop)
    }

    /// The log, newest first; only the entries about `object` if given.
    pub async fn list_audit(
        &self,
        object: Option<&str>,
        page: &Page,
    ) -> Result<Paged<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, object, fields, remote_addr, status FROM audit_log \
             WHERE ($1 = '' OR id < $1) AND ($2 = '' OR object = $2) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(page.after())
        .bind(object.unwrap_or(""))
        .bind(page.sql_limit())
        .fetch_all(self.reader())
        .await?;
        let entries = rows
            .iter()
            .map(audit_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(page.finish(entries, |e| e.id.to_string()))
    }
}

impl Store {
    /// Retention: deletes the entries recorded before `before`, in bounded batches so the
    /// writer is never held for long; how many went.
    pub async fn delete_audit_before(&self, before: Millis) -> Result<u64> {
        // Ids are UUID v7, time-ordered: the primary key finds the old rows without an
        // index on `at` (the first 48 bits are the milliseconds).
        let bound = uuid_v7_floor(before);
        let mut deleted = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log \
                 WHERE id < $1 AND at < $2 ORDER BY id LIMIT 1000)",
            )
            .bind(&bound)
            .bind(before)
            .execute(self.writer())
            .await?
            .rows_affected();
            deleted += done;
            if done == 0 {
                return Ok(deleted);
            }
        }
    }
}

/// The smallest UUID v7 text of the millisecond `ms`.
fn uuid_v7_floor(ms: Millis) -> String {
    let ms = u64::try_from(ms).unwrap_or(0) & 0xffff_ffff_ffff;
    format!(
        "{:08x}-{:04x}-0000-0000-000000000000",
        ms >> 16,
        ms & 0xffff
    )
}

/// The most rows in one transaction.
const MAX_BATCH: usize = 256;
/// Rows waiting for the writer; a full queue makes requests wait (back-pressure).
const QUEUE_DEPTH: usize = 4_096;

/// A row to write, or (`entry: None`) a barrier answered once everything queued before
/// it is committed.
struct Submission {
    id: AuditId,
    at: Millis,
    entry: Option<NewAudit>,
    reply: oneshot::Sender<Result<()>>,
}

/// A queued entry; its commit can be awaited.
pub struct QueuedAudit {
    pub id: AuditId,
    answer: oneshot::Receiver<Result<()>>,
}

impl QueuedAudit {
    pub async fn committed(self) -> Result<AuditId> {
        self.answer.await.map_err(|_| StoreError::Closed)??;
        Ok(self.id)
    }
}

/// The audit rows' writer task; cheap to clone.
#[derive(Clone)]
pub(crate) struct AuditWriter {
    sender: mpsc::Sender<Submission>,
}

impl AuditWriter {
    /// Starts the writer task on the current runtime.
    pub fn spawn(pool: AnyPool) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(write_batches(pool, receiver));
        Self { sender }
    }

    /// Queues an entry (waiting only while the queue is full) or a barrier (`None`).
    async fn queue(&self, entry: Option<NewAudit>) -> Result<QueuedAudit> {
        // Id and time are taken here, so rows keep the order of the changes.
        let id = AuditId::generate();
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Submission {
                id: id.clone(),
                at: now_ms(),
                entry,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(QueuedAudit { id, answer })
    }
}

async fn write_batches(pool: AnyPool, mut receiver: mpsc::Receiver<Submission>) {
    let mut batch: Vec<Submission> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut rows = Rows::new(
            "audit_log",
            &[
                "id",
                "at",
                "actor",
                "action",
                "object",
                "fields",
                "remote_addr",
                "status",
            ],
            "",
        );
        let mut replies = Vec::with_capacity(batch.len());
        for s in batch.drain(..) {
            let Some(entry) = s.entry else {
                // A barrier: answered with the batch, after everything before it.
                replies.push(s.reply);
                continue;
            };
            rows.push(vec![
                Cell::from(s.id.0),
                Cell::from(s.at),
                Cell::from(entry.actor),
                Cell::from(entry.action),
                Cell::from(entry.object),
                Cell::from(json_list(&entry.fields)),
                Cell::from(entry.remote_addr),
                Cell::from(i64::from(entry.status)),
            ]);
            replies.push(s.reply);
        }
        let written = if rows.is_empty() {
            Ok(())
        } else {
            write(&pool, rows).await
        };
        for reply in replies {
            // The requester may have gone (client disconnected): nothing to do.
            let _ = reply.send(match &written {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Batch(e.to_string())),
            });
        }
    }
}

async fn write(pool: &AnyPool, rows: Rows) -> Result<()> {
    let mut tx = pool.begin().await?;
    rows.write(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

fn audit_from_row(row: &AnyRow) -> Result<AuditRecord> {
    let fields: String = col(row, "fields")?;
    let status: i64 = col(row, "status")?;
    Ok(AuditRecord {
        id: AuditId(col(row, "id")?),
        at: col(row, "at")?,
        actor: col(row, "actor")?,
        action: col(row, "action")?,
        object: col(row, "object")?,
        fields: parse_json_list(&fields, "audit_log.fields")?,
        remote_addr: col(row, "remote_addr")?,
        status: u16::try_from(status)
            .map_err(|_| StoreError::Corrupt(format!("column audit_log.status holds {status}")))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_of_a_millisecond_sorts_between_the_ids_around_it() {
        let ms: Millis = 1_795_000_000_123;
        let floor = uuid_v7_floor(ms);
        let at = |ms: u64| {
            uuid::Uuid::new_v7(uuid::Timestamp::from_unix_time(
                ms / 1000,
                (ms % 1000) as u32 * 1_000_000,
                0,
                16,
            ))
            .to_string()
        };
        assert!(at(ms as u64 - 1) < floor, "{} < {floor}", at(ms as u64 - 1));
        assert!(at(ms as u64) >= floor, "{} >= {floor}", at(ms as u64));
    }
}
