//! The audit log: an append-only record of the changes the API carried out.
//! What counts as a change and how its row is derived from the request is the HTTP
//! layer's business (`http::audit`); this module only stores and pages the rows. It never
//! stores request values, only field names.
//!
//! A change's row is written in the change's own transaction: the HTTP layer runs the
//! handler inside [`PendingAudit::scope`], and the store's write helpers
//! ([`Store::commit_change`], [`Store::execute_change`]) insert the pending row just
//! before `COMMIT`, so the change and its row are committed together or not at all.
//!
//! A change applied by a group commit in a task of its own (a pushed call event, a
//! click-to-call's opening event) hands its row over with the job ([`HandedAudit`]); the
//! batch inserts its jobs' rows before its `COMMIT` ([`audit_rows`]).
//!
//! Requests that write nothing in a transaction (a hold music file, a mailbox's
//! connection test) get their row afterwards from the queue below: one task with group
//! commit, like call intakes (`batch`), so they never pay a write row by row on SQLite's
//! one writer.

use std::sync::{Arc, Mutex};

use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyPool};
use tokio::sync::{mpsc, oneshot};

use super::entities::Tx;
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

tokio::task_local! {
    /// The audit row of the API change the current task is carrying out.
    static PENDING: PendingAudit;
}

/// An API change's audit row, waiting for the transaction that makes the change.
#[derive(Debug, Clone)]
pub struct PendingAudit(Arc<Mutex<Pending>>);

#[derive(Debug)]
struct Pending {
    /// `object` as named without a created id; `status` the answer expected unless the
    /// change creates an object (then 201).
    entry: NewAudit,
    /// The kind a created id is named with (`number` → `number:<id>`), if the route
    /// creates objects.
    created_kind: Option<&'static str>,
    written: Option<WrittenAudit>,
}

/// What the change's transaction committed for its audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenAudit {
    pub id: AuditId,
    pub object: Option<String>,
    pub status: u16,
}

impl PendingAudit {
    pub fn new(entry: NewAudit, created_kind: Option<&'static str>) -> Self {
        Self(Arc::new(Mutex::new(Pending {
            entry,
            created_kind,
            written: None,
        })))
    }

    /// Runs `work` (the handler) with this row pending for its writes.
    pub async fn scope<F: Future>(&self, work: F) -> F::Output {
        PENDING.scope(self.clone(), work).await
    }

    /// Who acts, once the request's credentials are known.
    pub fn set_actor(&self, actor: String) {
        self.lock().entry.actor = actor;
    }

    /// The row as committed, if a change's transaction wrote it.
    pub fn written(&self) -> Option<WrittenAudit> {
        self.lock().written.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The row to insert, if this change has not written one yet.
    fn row(&self, created: Option<&str>) -> Option<(NewAudit, WrittenAudit)> {
        let pending = self.lock();
        if pending.written.is_some() {
            return None;
        }
        let mut entry = pending.entry.clone();
        if let (Some(id), Some(kind)) = (created, pending.created_kind) {
            entry.object = Some(format!("{kind}:{id}"));
            entry.status = 201;
        }
        let written = WrittenAudit {
            id: AuditId::generate(),
            object: entry.object.clone(),
            status: entry.status,
        };
        Some((entry, written))
    }
}

/// An API change's audit row handed to a group commit that runs in a task of its own
/// (the intake's and the call steps' writers): the job carries the row into the batch's
/// transaction, and the change's task learns from the answer whether it was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditRow {
    id: AuditId,
    entry: NewAudit,
}

/// The current task's pending row, handed over to a group commit.
#[derive(Debug, Default)]
pub(crate) struct HandedAudit(Option<(PendingAudit, WrittenAudit, AuditRow)>);

impl HandedAudit {
    /// The current task's pending row, if it is carrying out an API change that has not
    /// written it yet; an empty hand otherwise (the B2BUA's own calls, a replay).
    pub fn take() -> Self {
        Self(pending_row(None).map(|(pending, entry, written)| {
            let row = AuditRow {
                id: written.id.clone(),
                entry,
            };
            (pending, written, row)
        }))
    }

    /// The row for the job to carry.
    pub fn row(&self) -> Option<AuditRow> {
        self.0.as_ref().map(|(_, _, row)| row.clone())
    }

    /// The batch's transaction committed the row with the change.
    pub fn committed(self) {
        if let Some((pending, written, _)) = self.0 {
            pending.lock().written = Some(written);
        }
    }
}

const COLUMNS: &[&str] = &[
    "id",
    "at",
    "actor",
    "action",
    "object",
    "fields",
    "remote_addr",
    "status",
];

fn cells(id: AuditId, at: Millis, entry: NewAudit) -> Vec<Cell> {
    vec![
        Cell::from(id.0),
        Cell::from(at),
        Cell::from(entry.actor),
        Cell::from(entry.action),
        Cell::from(entry.object),
        Cell::from(json_list(&entry.fields)),
        Cell::from(entry.remote_addr),
        Cell::from(i64::from(entry.status)),
    ]
}

/// The audit rows a group commit's jobs carry, stamped `at`: one multi-row insert for
/// the batch, so a busy PBX's events do not pay a statement each.
pub(crate) fn audit_rows<'a>(rows: impl IntoIterator<Item = &'a AuditRow>, at: Millis) -> Rows {
    let mut out = Rows::new("audit_log", COLUMNS, "");
    for row in rows {
        out.push(cells(row.id.clone(), at, row.entry.clone()));
    }
    out
}

/// The current task's pending row, if it is carrying out an API change that has not
/// written it yet.
fn pending_row(created: Option<&str>) -> Option<(PendingAudit, NewAudit, WrittenAudit)> {
    PENDING
        .try_with(|p| p.clone())
        .ok()
        .and_then(|p| p.row(created).map(|(entry, written)| (p, entry, written)))
}

async fn insert_row(tx: &mut Tx<'_>, entry: NewAudit, id: &AuditId) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, action, object, fields, remote_addr, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id.as_str())
    .bind(now_ms())
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.object)
    .bind(json_list(&entry.fields))
    .bind(entry.remote_addr)
    .bind(i64::from(entry.status))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Commits a change's transaction, with the current task's pending audit row (if any)
    /// inserted first: both are committed or neither. `created`: the id of the object the
    /// change created, which names the row's object.
    pub(crate) async fn commit_change(&self, mut tx: Tx<'_>, created: Option<&str>) -> Result<()> {
        let Some((pending, entry, written)) = pending_row(created) else {
            tx.commit().await?;
            return Ok(());
        };
        insert_row(&mut tx, entry, &written.id).await?;
        tx.commit().await?;
        pending.lock().written = Some(written);
        Ok(())
    }

    /// Runs one statement of a change. Without a pending audit row it runs alone, as
    /// before; with one, statement and row share a transaction (a statement that changed
    /// no row writes no audit row: the handler answers 404 or 409).
    #[track_caller]
    pub(crate) fn execute_change<'q>(
        &self,
        query: Query<'q, Any, AnyArguments>,
        created: Option<&'q str>,
    ) -> impl Future<Output = Result<AnyQueryResult, sqlx::Error>> + 'q {
        let pool = self.writer().clone();
        async move {
            let Some((pending, entry, written)) = pending_row(created) else {
                return query.execute(&pool).await;
            };
            let mut tx = pool.begin().await?;
            let done = query.execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Ok(done);
            }
            insert_row(&mut tx, entry, &written.id)
                .await
                .map_err(|e| match e {
                    StoreError::Database(db) => db,
                    other => sqlx::Error::Protocol(other.to_string()),
                })?;
            tx.commit().await?;
            pending.lock().written = Some(written);
            Ok(done)
        }
    }

    /// Corrects a row its change's transaction wrote when the answer turned out other
    /// than expected (another 2xx, or an error after the change was committed).
    pub async fn amend_audit(&self, id: &AuditId, object: Option<&str>, status: u16) -> Result<()> {
        sqlx::query("UPDATE audit_log SET object = $2, status = $3 WHERE id = $1")
            .bind(id.as_str())
            .bind(object)
            .bind(i64::from(status))
            .execute(self.writer())
            .await?;
        Ok(())
    }

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
        let mut rows = Rows::new("audit_log", COLUMNS, "");
        let mut replies = Vec::with_capacity(batch.len());
        for s in batch.drain(..) {
            let Some(entry) = s.entry else {
                // A barrier: answered with the batch, after everything before it.
                replies.push(s.reply);
                continue;
            };
            rows.push(cells(s.id, s.at, entry));
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

    fn pending(created_kind: Option<&'static str>) -> PendingAudit {
        PendingAudit::new(
            NewAudit {
                actor: "anonymous".to_owned(),
                action: "POST /api/v1/numbers".to_owned(),
                object: Some("/api/v1/numbers".to_owned()),
                fields: vec!["number".to_owned()],
                remote_addr: None,
                status: 200,
            },
            created_kind,
        )
    }

    #[test]
    fn a_created_id_names_the_object_and_makes_the_status_201() {
        let p = pending(Some("number"));
        p.set_actor("bootstrap".to_owned());
        let (entry, written) = p.row(Some("n-1")).unwrap();
        assert_eq!(entry.actor, "bootstrap");
        assert_eq!(entry.object.as_deref(), Some("number:n-1"));
        assert_eq!(
            (written.object.as_deref(), written.status),
            (Some("number:n-1"), 201)
        );
        let (entry, _) = pending(None).row(Some("n-1")).unwrap();
        assert_eq!(
            entry.object.as_deref(),
            Some("/api/v1/numbers"),
            "no kind to name it by"
        );
        assert_eq!(entry.status, 200);
    }

    #[test]
    fn a_change_writes_its_row_once() {
        let p = pending(None);
        let (_, written) = p.row(None).unwrap();
        p.lock().written = Some(written.clone());
        assert_eq!(
            p.row(None),
            None,
            "a second transaction of the change writes none"
        );
        assert_eq!(p.written(), Some(written));
    }

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
