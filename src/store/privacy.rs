//! Erasure and export of a person's data, and the tombstones the intakes check.
//!
//! An erasure is a job: its plan (ids and file names, from `crm::privacy::plan`) and the
//! tombstones are committed first, then the rows are deleted or anonymised in one
//! transaction, then the files are removed, then the job is marked finished. Every step
//! works from the plan's ids and can run again, so a job a crash interrupted is simply
//! run again ([`Store::resume_erasures`]).

use std::path::Path;

use sqlx::any::AnyRow;

use super::entities::{Tx, table};
use super::{Backend, Result, Store, StoreError, col, now_ms};
use crate::crm::model::{EntityKind, EntityRef};
use crate::crm::privacy::{
    ErasedCounts, ErasurePlan, Found, FoundCall, FoundEmail, TombstoneKind, erased_call_id,
    holds_mark, is_plain_file_name, like_anywhere, outbox_marks, plan, tombstone_hash,
};

/// `$start, $start+1, …` for `n` values.
fn params(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binds every value of `values` to `sql` (which has placeholders from `$1`).
async fn fetch_in(
    conn: &mut sqlx::AnyConnection,
    sql: String,
    values: &[String],
) -> Result<Vec<AnyRow>> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in values {
        query = query.bind(value.clone());
    }
    Ok(query.fetch_all(conn).await?)
}

async fn execute_in(tx: &mut Tx<'_>, sql: String, values: &[String]) -> Result<u64> {
    if values.is_empty() {
        return Ok(0);
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in values {
        query = query.bind(value.clone());
    }
    Ok(query.execute(&mut **tx).await?.rows_affected())
}

/// Deletes the webhook deliveries owed whose body (the JSON as it is sent) holds any of
/// `marks` on its own ([`holds_mark`]); how many. `LIKE` narrows the outbox down to
/// candidates, so a long queue for a dead receiver is not read whole.
async fn purge_outbox(tx: &mut Tx<'_>, marks: &[String]) -> Result<u64> {
    let mut doomed = Vec::new();
    for chunk in marks.chunks(500) {
        let clause = (1..=chunk.len())
            .map(|i| format!("LOWER(body) LIKE ${i} ESCAPE '\\'"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let patterns: Vec<String> = chunk.iter().map(|m| like_anywhere(m)).collect();
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, body FROM webhook_outbox WHERE {clause}"
        )));
        for pattern in patterns {
            query = query.bind(pattern);
        }
        for row in query.fetch_all(&mut **tx).await? {
            let body: String = col(&row, "body")?;
            if chunk.iter().any(|m| holds_mark(&body, m)) {
                doomed.push(col::<String>(&row, "id")?);
            }
        }
    }
    doomed.sort();
    doomed.dedup();
    let mut deleted = 0;
    for chunk in doomed.chunks(500) {
        let list = params(1, chunk.len());
        deleted += execute_in(
            tx,
            format!("DELETE FROM webhook_outbox WHERE id IN ({list})"),
            chunk,
        )
        .await?;
    }
    Ok(deleted)
}

/// An erasure that is planned and whose tombstones are written.
#[derive(Debug, Clone)]
pub struct ErasureJob {
    pub id: String,
    pub plan: ErasurePlan,
}

impl Store {
    /// The installation's tombstone salt, made at first use.
    async fn privacy_salt(&self) -> Result<String> {
        let fresh = hex::encode(rand::random::<[u8; 32]>());
        sqlx::query(
            "INSERT INTO privacy_salt (id, salt) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(fresh)
        .execute(self.writer())
        .await?;
        let row = sqlx::query("SELECT salt FROM privacy_salt WHERE id = 1")
            .fetch_one(self.writer())
            .await?;
        col(&row, "salt")
    }

    /// The salted hash of `value` if an erasure left a tombstone of it; `None` before the
    /// first erasure (no salt yet, so nothing can be erased).
    pub(crate) async fn tombstone_of(
        &self,
        kind: TombstoneKind,
        value: &str,
    ) -> Result<Option<String>> {
        let Some(row) = sqlx::query("SELECT salt FROM privacy_salt WHERE id = 1")
            .fetch_optional(self.reader())
            .await?
        else {
            return Ok(None);
        };
        let hash = tombstone_hash(&col::<String>(&row, "salt")?, kind, value);
        let found = sqlx::query("SELECT hash FROM tombstones WHERE hash = $1")
            .bind(&hash)
            .fetch_optional(self.reader())
            .await?;
        Ok(found.map(|_| hash))
    }

    /// The Call-ID an erased call is kept under, if `call_id` was erased.
    pub(crate) async fn erased_call(&self, call_id: &str) -> Result<Option<String>> {
        Ok(self
            .tombstone_of(TombstoneKind::CallId, call_id)
            .await?
            .map(|hash| erased_call_id(&hash)))
    }

    /// Which of these Message-IDs were erased.
    pub(crate) async fn erased_messages(&self, message_ids: &[Option<&str>]) -> Result<Vec<bool>> {
        let mut erased = Vec::with_capacity(message_ids.len());
        let mut salt: Option<Option<String>> = None;
        for id in message_ids {
            let Some(id) = id else {
                erased.push(false);
                continue;
            };
            if salt.is_none() {
                let row = sqlx::query("SELECT salt FROM privacy_salt WHERE id = 1")
                    .fetch_optional(self.reader())
                    .await?;
                salt = Some(row.map(|r| col::<String>(&r, "salt")).transpose()?);
            }
            let Some(Some(salt)) = &salt else {
                erased.push(false);
                continue;
            };
            let found = sqlx::query("SELECT hash FROM tombstones WHERE hash = $1")
                .bind(tombstone_hash(salt, TombstoneKind::MessageId, id))
                .fetch_optional(self.reader())
                .await?;
            erased.push(found.is_some());
        }
        Ok(erased)
    }

    /// Everything that belongs to the person `target` (a lead or a contact).
    async fn find_person(&self, target: &EntityRef) -> Result<Found> {
        let mut conn = self.reader().acquire().await?;
        let exists = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM {} WHERE id = $1",
            table(target.kind)
        )))
        .bind(&target.id)
        .fetch_optional(&mut *conn)
        .await?;
        if exists.is_none() {
            return Err(StoreError::not_found(target.kind.as_str(), &target.id));
        }
        let mut entities = vec![target.clone()];
        if target.kind == EntityKind::Contact {
            // The contact's leads (converted to it, or repeat leads for it) and the deals
            // of only this contact are the person's data too. A company is not a person:
            // it stays, as do deals of the company without this contact.
            for (kind, sql) in [
                (
                    EntityKind::Lead,
                    "SELECT id FROM leads WHERE customer = $1 OR converted_contact = $1",
                ),
                (
                    EntityKind::Deal,
                    "SELECT id FROM deals WHERE contact_id = $1",
                ),
            ] {
                for row in sqlx::query(sql)
                    .bind(&target.id)
                    .fetch_all(&mut *conn)
                    .await?
                {
                    entities.push(EntityRef::new(kind, col::<String>(&row, "id")?));
                }
            }
        }
        let mut identifiers = Vec::new();
        let mut activities = Vec::new();
        for entity in &entities {
            for row in sqlx::query(
                "SELECT value FROM entity_identifiers WHERE entity_kind = $1 AND entity_id = $2",
            )
            .bind(entity.kind.as_str())
            .bind(&entity.id)
            .fetch_all(&mut *conn)
            .await?
            {
                identifiers.push(col::<String>(&row, "value")?);
            }
            for row in sqlx::query(
                "SELECT activity_id FROM activity_entities WHERE entity_kind = $1 AND entity_id = $2",
            )
            .bind(entity.kind.as_str())
            .bind(&entity.id)
            .fetch_all(&mut *conn)
            .await?
            {
                activities.push(col::<String>(&row, "activity_id")?);
            }
        }
        identifiers.sort();
        identifiers.dedup();
        activities.sort();
        activities.dedup();

        let mut calls = Vec::new();
        let mut emails = Vec::new();
        let mut message_ids = Vec::new();
        // In chunks: a person with thousands of activities stays under the backends'
        // limits on bound parameters.
        for chunk in activities.chunks(500) {
            let list = params(1, chunk.len());
            for row in fetch_in(
                &mut conn,
                format!(
                    "SELECT email_message_id FROM activities WHERE id IN ({list}) \
                     AND email_message_id IS NOT NULL"
                ),
                chunk,
            )
            .await?
            {
                message_ids.push(col::<String>(&row, "email_message_id")?);
            }
            calls.extend(
                fetch_in(
                    &mut conn,
                    format!(
                        "SELECT id, call_id, recording FROM calls WHERE activity_id IN ({list}) \
                         OR id IN (SELECT call_id FROM activities WHERE id IN ({list}))"
                    ),
                    chunk,
                )
                .await?,
            );
            emails.extend(
                fetch_in(
                    &mut conn,
                    format!("SELECT id, message_id FROM emails WHERE activity_id IN ({list})"),
                    chunk,
                )
                .await?,
            );
        }
        // Calls and mail of the person's identifiers that reached no activity (logged
        // only, or when no entity was created): theirs as well.
        for chunk in identifiers.chunks(500) {
            let list = params(1, chunk.len());
            calls.extend(
                fetch_in(
                    &mut conn,
                    format!("SELECT id, call_id, recording FROM calls WHERE customer IN ({list})"),
                    chunk,
                )
                .await?,
            );
            emails.extend(
                fetch_in(
                    &mut conn,
                    format!("SELECT id, message_id FROM emails WHERE lower(from_addr) IN ({list})"),
                    chunk,
                )
                .await?,
            );
        }
        // Every stored copy of an erased message (other folders, other mailboxes).
        for chunk in message_ids.chunks(500) {
            let list = params(1, chunk.len());
            emails.extend(
                fetch_in(
                    &mut conn,
                    format!("SELECT id, message_id FROM emails WHERE message_id IN ({list})"),
                    chunk,
                )
                .await?,
            );
        }
        let calls = calls
            .iter()
            .map(|row| {
                Ok(FoundCall {
                    id: col(row, "id")?,
                    call_id: col(row, "call_id")?,
                    recording: col(row, "recording")?,
                })
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            // A call anonymised by an earlier erasure keeps no Call-ID worth a tombstone.
            .filter(|c: &FoundCall| !c.call_id.starts_with("erased:"))
            .collect();
        let emails = emails
            .iter()
            .map(|row| {
                Ok(FoundEmail {
                    id: col(row, "id")?,
                    message_id: col(row, "message_id")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Found {
            entities,
            identifiers,
            activities,
            calls,
            emails,
        })
    }

    /// Plans the erasure of `target` and commits the plan with the tombstones: from now
    /// on a replayed call event or a re-synced message of the person creates nothing.
    pub async fn start_erasure(&self, target: &EntityRef) -> Result<ErasureJob> {
        let salt = self.privacy_salt().await?;
        let found = self.find_person(target).await?;
        let (plan, tombstones) = plan(&found, &salt);
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        let plan_json = serde_json::to_string(&plan)
            .map_err(|e| StoreError::Corrupt(format!("erasure plan: {e}")))?;
        let counts_json = serde_json::to_string(&plan.counts())
            .map_err(|e| StoreError::Corrupt(format!("erasure counts: {e}")))?;
        let mut tx = self.writer().begin().await?;
        sqlx::query(
            "INSERT INTO erasures (id, entity, plan, counts, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(target.to_string())
        .bind(plan_json)
        .bind(counts_json)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for tombstone in &tombstones {
            sqlx::query(
                "INSERT INTO tombstones (hash, kind, erased_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (hash) DO UPDATE SET erased_at = excluded.erased_at",
            )
            .bind(&tombstone.hash)
            .bind(tombstone.kind.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // A call update owed to a webhook before the intake linked the call names the
        // caller's number only; the plan keeps no identifier, so those go now.
        let identifiers: Vec<String> = found
            .identifiers
            .iter()
            .filter(|i| !i.starts_with('@'))
            .cloned()
            .collect();
        purge_outbox(&mut tx, &identifiers).await?;
        tx.commit().await?;
        Ok(ErasureJob { id, plan })
    }

    /// Carries out a planned erasure: rows, then the files in `recordings`, then the
    /// job's end. Every step may run again after a crash.
    pub async fn run_erasure(&self, job: &ErasureJob, recordings: &Path) -> Result<ErasedCounts> {
        let plan = &job.plan;
        let mut tx = self.writer().begin().await?;
        for chunk in plan.activities.chunks(500) {
            let list = params(1, chunk.len());
            execute_in(
                &mut tx,
                format!("DELETE FROM activity_entities WHERE activity_id IN ({list})"),
                chunk,
            )
            .await?;
            execute_in(
                &mut tx,
                format!("DELETE FROM activities WHERE id IN ({list})"),
                chunk,
            )
            .await?;
        }
        for call in &plan.calls {
            // The answers stored for its events name the entities and the caller.
            sqlx::query(
                "DELETE FROM call_events WHERE call_id IN (SELECT call_id FROM calls WHERE id = $1)",
            )
            .bind(&call.id)
            .execute(&mut *tx)
            .await?;
            // Kept for statistics (when, how long, who answered), with the customer's
            // side blanked and the Call-ID replaced by its tombstone.
            sqlx::query(
                "UPDATE calls SET \
                 from_raw = CASE WHEN direction = 'incoming' THEN '' ELSE from_raw END, \
                 to_raw = CASE WHEN direction = 'outgoing' THEN '' ELSE to_raw END, \
                 customer = NULL, activity_id = NULL, created_entities = '[]', \
                 crm_reason = 'erased', recording = NULL, recording_ms = NULL, call_id = $2, \
                 decision = NULL, diverted_from = NULL, verstat = NULL \
                 WHERE id = $1",
            )
            .bind(&call.id)
            .bind(&call.erased_call_id)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in plan.emails.chunks(500) {
            let list = params(1, chunk.len());
            // The raw message (attachments included) is a column of the row.
            execute_in(
                &mut tx,
                format!("DELETE FROM emails WHERE id IN ({list})"),
                chunk,
            )
            .await?;
        }
        // Deliveries still owed to webhooks carry the records and calls as they were.
        purge_outbox(&mut tx, &outbox_marks(plan)).await?;
        for entity in &plan.entities {
            for sql in [
                "DELETE FROM entity_identifiers WHERE entity_kind = $1 AND entity_id = $2",
                "DELETE FROM identifier_owners WHERE entity_kind = $1 AND entity_id = $2",
                "DELETE FROM activity_entities WHERE entity_kind = $1 AND entity_id = $2",
            ] {
                sqlx::query(sql)
                    .bind(entity.kind.as_str())
                    .bind(&entity.id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {} WHERE id = $1",
                table(entity.kind)
            )))
            .bind(&entity.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;

        for file in plan.recordings.iter().filter(|f| is_plain_file_name(f)) {
            match tokio::fs::remove_file(recordings.join(file)).await {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(StoreError::Batch(format!(
                        "cannot delete a recording of the erasure: {err}"
                    )));
                }
            }
        }

        if self.backend() == Backend::Sqlite {
            // With secure_delete on the writer the deleted rows are zeroed in the pages;
            // the WAL still holds the pages as they were until it is copied back and
            // truncated.
            self.truncate_wal().await?;
        }
        sqlx::query("UPDATE erasures SET finished_at = $2 WHERE id = $1")
            .bind(&job.id)
            .bind(now_ms())
            .execute(self.writer())
            .await?;
        Ok(plan.counts())
    }

    /// Copies the WAL into the database and empties it. A reader on an older snapshot
    /// (or the checkpoint task) may hold it back for a moment: tried again briefly.
    async fn truncate_wal(&self) -> Result<()> {
        use sqlx::Row as _;
        for _ in 0..100 {
            let done = match sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(self.writer())
                .await
            {
                Ok(row) => row
                    .try_get::<i64, _>(0)
                    .map(|busy| busy == 0)
                    .unwrap_or(false),
                Err(err) => {
                    tracing::debug!(%err, "WAL checkpoint after an erasure is busy");
                    false
                }
            };
            if done {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err(StoreError::Batch(
            "the WAL could not be emptied after the erasure; it is tried again at the next start"
                .to_owned(),
        ))
    }

    /// Erases the person `target` (a lead or a contact) from the database and the
    /// recordings folder.
    pub async fn erase(&self, target: &EntityRef, recordings: &Path) -> Result<ErasedCounts> {
        let job = self.start_erasure(target).await?;
        self.run_erasure(&job, recordings).await
    }

    /// Finishes the erasures a crash interrupted; returns how many.
    pub async fn resume_erasures(&self, recordings: &Path) -> Result<usize> {
        let rows =
            sqlx::query("SELECT id, plan FROM erasures WHERE finished_at IS NULL ORDER BY id")
                .fetch_all(self.reader())
                .await?;
        let mut resumed = 0;
        for row in rows {
            let plan: String = col(&row, "plan")?;
            let job = ErasureJob {
                id: col(&row, "id")?,
                plan: serde_json::from_str(&plan)
                    .map_err(|e| StoreError::Corrupt(format!("erasures.plan: {e}")))?,
            };
            self.run_erasure(&job, recordings).await?;
            resumed += 1;
        }
        Ok(resumed)
    }
}

/// The columns of each table an export shows: (name, is a number). Raw messages are
/// added apart, as base64.
const EXPORT_COLUMNS: &[(&str, &[(&str, bool)])] = &[
    (
        "contacts",
        &[
            ("id", false),
            ("name", false),
            ("company_id", false),
            ("responsible", false),
            ("source", false),
            ("created_at", true),
            ("updated_at", true),
        ],
    ),
    (
        "leads",
        &[
            ("id", false),
            ("name", false),
            ("status", false),
            ("customer", false),
            ("converted_contact", false),
            ("converted_company", false),
            ("converted_deal", false),
            ("responsible", false),
            ("source", false),
            ("created_at", true),
            ("updated_at", true),
        ],
    ),
    (
        "deals",
        &[
            ("id", false),
            ("name", false),
            ("contact_id", false),
            ("company_id", false),
            ("status", false),
            ("responsible", false),
            ("source", false),
            ("created_at", true),
            ("updated_at", true),
        ],
    ),
    (
        "activities",
        &[
            ("id", false),
            ("kind", false),
            ("direction", false),
            ("subject", false),
            ("note", false),
            ("completed", true),
            ("responsible", false),
            ("call_id", false),
            ("email_message_id", false),
            ("created_at", true),
            ("completed_at", true),
        ],
    ),
    (
        "calls",
        &[
            ("id", false),
            ("call_id", false),
            ("direction", false),
            ("from_raw", false),
            ("to_raw", false),
            ("customer", false),
            ("number", false),
            ("answered_by", false),
            ("responsible", false),
            ("started_at", true),
            ("answered_at", true),
            ("ended_at", true),
            ("outcome", false),
            ("crm_action", false),
            ("crm_reason", false),
            ("recording", false),
            ("recording_ms", true),
            ("voicemail", true),
        ],
    ),
    (
        "emails",
        &[
            ("id", false),
            ("mailbox_id", false),
            ("folder", false),
            ("message_id", false),
            ("direction", false),
            ("from_addr", false),
            ("from_name", false),
            ("to_addrs", false),
            ("cc_addrs", false),
            ("subject", false),
            ("received_at", true),
            ("attachments", false),
            ("size", true),
            ("crm_action", false),
            ("crm_reason", false),
        ],
    ),
];

fn columns_of(table: &str) -> &'static [(&'static str, bool)] {
    EXPORT_COLUMNS
        .iter()
        .find(|(name, _)| *name == table)
        .map_or(&[], |(_, columns)| columns)
}

fn row_json(
    row: &AnyRow,
    columns: &[(&str, bool)],
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut object = serde_json::Map::new();
    for (name, number) in columns {
        let value = if *number {
            col::<Option<i64>>(row, name)?.map_or(serde_json::Value::Null, Into::into)
        } else {
            col::<Option<String>>(row, name)?.map_or(serde_json::Value::Null, Into::into)
        };
        object.insert((*name).to_owned(), value);
    }
    Ok(object)
}

/// Everything stored about a person, as [`Store::export_person`] returns it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PersonExport {
    pub entity: String,
    /// The person and their leads and deals, with their identifiers and, for a
    /// contact, the reference of their company.
    pub entities: Vec<serde_json::Value>,
    pub activities: Vec<serde_json::Value>,
    /// Calls, with the link of their recording; voicemail messages are among them too.
    pub calls: Vec<serde_json::Value>,
    pub voicemails: Vec<serde_json::Value>,
    /// E-mails with the raw message (attachments included) as base64.
    pub emails: Vec<serde_json::Value>,
}

impl Store {
    /// Rows of `table` whose `id` is one of `ids`, with the export's columns.
    async fn export_rows(
        &self,
        conn: &mut sqlx::AnyConnection,
        table: &str,
        ids: &[String],
        extra: &str,
    ) -> Result<Vec<(AnyRow, serde_json::Map<String, serde_json::Value>)>> {
        let columns = columns_of(table);
        let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
        let ids: Vec<String> = ids
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut rows = Vec::new();
        for chunk in ids.chunks(500) {
            for row in fetch_in(
                conn,
                format!(
                    "SELECT {}{extra} FROM {table} WHERE id IN ({}) ORDER BY id",
                    names.join(", "),
                    params(1, chunk.len())
                ),
                chunk,
            )
            .await?
            {
                let object = row_json(&row, columns)?;
                rows.push((row, object));
            }
        }
        Ok(rows)
    }

    /// One document with everything stored about the person `target` (a lead or a
    /// contact): what an erasure of them would erase.
    pub async fn export_person(&self, target: &EntityRef) -> Result<PersonExport> {
        use base64::Engine as _;
        let found = self.find_person(target).await?;
        let mut conn = self.reader().acquire().await?;
        let mut export = PersonExport {
            entity: target.to_string(),
            ..PersonExport::default()
        };
        for entity in &found.entities {
            let ids = [entity.id.clone()];
            for (_, mut object) in self
                .export_rows(&mut conn, table(entity.kind), &ids, "")
                .await?
            {
                let identifiers = sqlx::query(
                    "SELECT kind, value FROM entity_identifiers \
                     WHERE entity_kind = $1 AND entity_id = $2 ORDER BY position",
                )
                .bind(entity.kind.as_str())
                .bind(&entity.id)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| {
                    Ok(serde_json::json!({
                        "kind": col::<String>(row, "kind")?,
                        "value": col::<String>(row, "value")?,
                    }))
                })
                .collect::<Result<Vec<_>>>()?;
                object.insert("ref".into(), entity.to_string().into());
                object.insert("identifiers".into(), identifiers.into());
                if let Some(serde_json::Value::String(company)) = object.get("company_id") {
                    let company = format!("company:{company}");
                    object.insert("company".into(), company.into());
                }
                export.entities.push(object.into());
            }
        }
        for (_, object) in self
            .export_rows(&mut conn, "activities", &found.activities, "")
            .await?
        {
            export.activities.push(object.into());
        }
        let calls: Vec<String> = found.calls.iter().map(|c| c.id.clone()).collect();
        for (_, mut object) in self.export_rows(&mut conn, "calls", &calls, "").await? {
            let recording = match (object.get("recording"), object.get("id")) {
                (Some(serde_json::Value::String(_)), Some(serde_json::Value::String(id))) => {
                    serde_json::Value::String(format!("/api/v1/calls/{id}/recording"))
                }
                _ => serde_json::Value::Null,
            };
            object.insert("recording_url".into(), recording);
            let voicemail = object.get("voicemail") == Some(&serde_json::Value::from(1));
            if voicemail {
                export.voicemails.push(object.clone().into());
            }
            export.calls.push(object.into());
        }
        let emails: Vec<String> = found.emails.iter().map(|e| e.id.clone()).collect();
        for (row, mut object) in self
            .export_rows(&mut conn, "emails", &emails, ", raw")
            .await?
        {
            let raw: Vec<u8> = col(&row, "raw")?;
            object.insert(
                "raw_base64".into(),
                base64::engine::general_purpose::STANDARD.encode(raw).into(),
            );
            export.emails.push(object.into());
        }
        Ok(export)
    }
}

/// How often unfinished erasures are looked for besides at start: one whose process
/// died is finished by whichever process looks next.
const RESUME_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Finishes interrupted erasures at start and every few minutes, until `cancel`.
pub async fn keep_erasures_finished(
    store: Store,
    recordings: std::path::PathBuf,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        match store.resume_erasures(&recordings).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(erasures = n, "finished interrupted erasures"),
            Err(err) => tracing::error!(%err, "cannot finish an interrupted erasure"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(RESUME_EVERY) => {}
        }
    }
}
