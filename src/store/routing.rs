//! Configuration admins change at run time: queues, trunks, numbers, sources, pipelines,
//! exceptions.

use sqlx::any::AnyRow;

use super::config::{NUMBER_SETTINGS_COLUMNS, number_settings_from_row};
use super::{
    Page, Paged, Result, Store, StoreError, col, flag, json_list, now_ms, on_unique,
    parse_json_list, parse_stored,
};
use crate::crm::intake::NumberSettings;
use crate::crm::model::{
    DealStatus, ExceptionId, Millis, NumberId, PipelineId, QueueId, StageId, Transport, TrunkId,
    TrunkKind, UserId,
};
use crate::crm::queueing::{Overflow, QueueSettings};
use crate::matcher::ExceptionRule;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRecord {
    pub id: QueueId,
    pub name: String,
    pub members: Vec<UserId>,
    pub rotation: i64,
    pub created_at: Millis,
    /// How the queue serves callers who wait.
    pub settings: QueueSettings,
}

/// The queue columns that hold its settings.
pub(super) const QUEUE_SETTINGS_COLUMNS: &str = "strategy, max_wait_s, wrap_up_s, \
    announce_position, overflow_action, overflow_forward_to, music";

pub(super) fn queue_settings_from_row(row: &AnyRow) -> Result<QueueSettings> {
    let strategy: String = col(row, "strategy")?;
    let action: String = col(row, "overflow_action")?;
    Ok(QueueSettings {
        strategy: parse_stored(&strategy, "queues.strategy")?,
        max_wait_s: u32::try_from(col::<i64>(row, "max_wait_s")?).unwrap_or(u32::MAX),
        wrap_up_s: u32::try_from(col::<i64>(row, "wrap_up_s")?).unwrap_or(u32::MAX),
        announce_position: col::<i64>(row, "announce_position")? == 1,
        overflow: Overflow {
            action: parse_stored(&action, "queues.overflow_action")?,
            forward_to: col(row, "overflow_forward_to")?,
        },
        music: col(row, "music")?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkRecord {
    pub id: TrunkId,
    pub name: String,
    pub kind: TrunkKind,
    pub profile: String,
    pub host: Option<String>,
    pub port: u16,
    pub transport: Transport,
    pub username: Option<String>,
    pub has_password: bool,
    pub register: bool,
    pub allowed_ips: Vec<String>,
    /// Calls through this trunk have the gateway in their media path.
    pub media_relay: bool,
    pub created_at: Millis,
}

/// A trunk to create or the full new state of one (PATCH merges before calling).
#[derive(Debug, Clone)]
pub struct TrunkInput {
    pub name: String,
    pub kind: TrunkKind,
    pub profile: String,
    pub host: Option<String>,
    pub port: u16,
    pub transport: Transport,
    pub username: Option<String>,
    /// `None` keeps the stored password on update.
    pub password: Option<String>,
    pub register: bool,
    pub allowed_ips: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NumberRecord {
    pub settings: NumberSettings,
    pub media: super::NumberMedia,
    pub trunk: Option<TrunkId>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    pub code: String,
    pub name: String,
    pub builtin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineRecord {
    pub id: PipelineId,
    pub name: String,
    pub is_default: bool,
    pub stages: Vec<StageRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRecord {
    pub id: StageId,
    pub name: String,
    pub status: DealStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionRecord {
    pub id: ExceptionId,
    pub kind: String,
    pub value: String,
    pub created_at: Millis,
}

/// Maps a foreign-key failure on write to a 422 naming the field.
fn reference(err: sqlx::Error, field: &str, message: &str) -> StoreError {
    if let sqlx::Error::Database(db) = &err
        && db.is_foreign_key_violation()
    {
        return StoreError::invalid(field, message);
    }
    StoreError::Database(err)
}

/// Maps a foreign-key failure on delete to a 409: the row is still in use.
pub(super) fn in_use(err: sqlx::Error, message: String) -> StoreError {
    if let sqlx::Error::Database(db) = &err
        && db.is_foreign_key_violation()
    {
        return StoreError::Conflict {
            code: "in_use",
            message,
        };
    }
    StoreError::Database(err)
}

impl Store {
    // ---- queues (T9) ----

    pub async fn create_queue(
        &self,
        name: &str,
        members: &[UserId],
        settings: &QueueSettings,
    ) -> Result<QueueRecord> {
        let id = QueueId::generate();
        let mut tx = self.writer().begin().await?;
        sqlx::query("INSERT INTO queues (id, name, rotation, created_at) VALUES ($1, $2, 0, $3)")
            .bind(id.as_str())
            .bind(name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        write_settings(&mut tx, &id, settings).await?;
        replace_members(&mut tx, &id, members).await?;
        self.commit_change(tx, Some(id.as_str())).await?;
        self.config_changed().await;
        self.get_queue(&id).await
    }

    pub async fn get_queue(&self, id: &QueueId) -> Result<QueueRecord> {
        let row = sqlx::query(dynamic_sql!(
            "SELECT id, name, rotation, created_at, {QUEUE_SETTINGS_COLUMNS} FROM queues \
             WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(self.reader())
        .await?
        .ok_or_else(|| StoreError::not_found("queue", id.as_str()))?;
        let state = self
            .queue_state(id)
            .await?
            .ok_or_else(|| StoreError::not_found("queue", id.as_str()))?;
        Ok(QueueRecord {
            id: id.clone(),
            name: col(&row, "name")?,
            members: state.members,
            rotation: col(&row, "rotation")?,
            created_at: col(&row, "created_at")?,
            settings: queue_settings_from_row(&row)?,
        })
    }

    pub async fn list_queues(&self, page: &Page) -> Result<Paged<QueueRecord>> {
        let rows = sqlx::query("SELECT id FROM queues WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(page.after())
            .bind(page.sql_limit())
            .fetch_all(self.reader())
            .await?;
        let mut queues = Vec::with_capacity(rows.len());
        for row in &rows {
            queues.push(self.get_queue(&QueueId(col(row, "id")?)).await?);
        }
        Ok(page.finish(queues, |q| q.id.to_string()))
    }

    /// Renames, replaces members and/or settings; the rotation counter is kept (T9).
    pub async fn update_queue(
        &self,
        id: &QueueId,
        name: Option<&str>,
        members: Option<&[UserId]>,
        settings: Option<&QueueSettings>,
    ) -> Result<QueueRecord> {
        let mut tx = self.writer().begin().await?;
        let done = sqlx::query("UPDATE queues SET name = COALESCE($2, name) WHERE id = $1")
            .bind(id.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("queue", id.as_str()));
        }
        if let Some(members) = members {
            replace_members(&mut tx, id, members).await?;
        }
        if let Some(settings) = settings {
            write_settings(&mut tx, id, settings).await?;
        }
        self.commit_change(tx, None).await?;
        self.config_changed().await;
        self.get_queue(id).await
    }

    pub async fn delete_queue(&self, id: &QueueId) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        sqlx::query("DELETE FROM queue_members WHERE queue_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM queues WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                in_use(
                    e,
                    format!("queue {id} is used by a number; change the number's queue first"),
                )
            })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("queue", id.as_str()));
        }
        self.commit_change(tx, None).await?;
        self.config_changed().await;
        Ok(())
    }

    // ---- trunks (T2) ----

    pub async fn create_trunk(&self, input: &TrunkInput) -> Result<TrunkRecord> {
        let id = TrunkId::generate();
        let now = now_ms();
        self.execute_change(sqlx::query(
            "INSERT INTO trunks (id, name, kind, profile, host, port, transport, username, password, \
             register, allowed_ips, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
        )
        .bind(id.as_str())
        .bind(&input.name)
        .bind(input.kind.as_str())
        .bind(&input.profile)
        .bind(input.host.as_deref())
        .bind(i64::from(input.port))
        .bind(input.transport.as_str())
        .bind(input.username.as_deref())
        .bind(input.password.as_deref())
        .bind(flag(input.register))
        .bind(json_list(&input.allowed_ips))
        .bind(now)
        , Some(id.as_str()))
        .await?;
        self.config_changed().await;
        self.get_trunk(&id).await
    }

    pub async fn get_trunk(&self, id: &TrunkId) -> Result<TrunkRecord> {
        let row = sqlx::query("SELECT * FROM trunks WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(self.reader())
            .await?
            .ok_or_else(|| StoreError::not_found("trunk", id.as_str()))?;
        trunk_from_row(&row)
    }

    pub async fn list_trunks(&self, page: &Page) -> Result<Paged<TrunkRecord>> {
        let rows = sqlx::query("SELECT * FROM trunks WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(page.after())
            .bind(page.sql_limit())
            .fetch_all(self.reader())
            .await?;
        let trunks = rows
            .iter()
            .map(trunk_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(page.finish(trunks, |t| t.id.to_string()))
    }

    pub async fn update_trunk(&self, id: &TrunkId, input: &TrunkInput) -> Result<TrunkRecord> {
        let done = self
            .execute_change(
                sqlx::query(
                    "UPDATE trunks SET name = $2, kind = $3, profile = $4, host = $5, port = $6, \
             transport = $7, username = $8, password = COALESCE($9, password), register = $10, \
             allowed_ips = $11, updated_at = $12 WHERE id = $1",
                )
                .bind(id.as_str())
                .bind(&input.name)
                .bind(input.kind.as_str())
                .bind(&input.profile)
                .bind(input.host.as_deref())
                .bind(i64::from(input.port))
                .bind(input.transport.as_str())
                .bind(input.username.as_deref())
                .bind(input.password.as_deref())
                .bind(flag(input.register))
                .bind(json_list(&input.allowed_ips))
                .bind(now_ms()),
                None,
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("trunk", id.as_str()));
        }
        self.config_changed().await;
        self.get_trunk(id).await
    }

    pub async fn delete_trunk(&self, id: &TrunkId) -> Result<()> {
        let done = self
            .execute_change(
                sqlx::query("DELETE FROM trunks WHERE id = $1").bind(id.as_str()),
                None,
            )
            .await
            .map_err(|e| {
                in_use(
                    e,
                    format!("trunk {id} is used by a number; move or delete the number first"),
                )
            })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("trunk", id.as_str()));
        }
        self.config_changed().await;
        Ok(())
    }

    /// Every trunk, by id (the snapshot's loader).
    pub(crate) async fn all_trunks(&self) -> Result<Vec<TrunkRecord>> {
        sqlx::query("SELECT * FROM trunks ORDER BY id")
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(trunk_from_row)
            .collect()
    }

    // ---- numbers (T2, T4–T8, T10) ----

    pub async fn create_number(
        &self,
        settings: &NumberSettings,
        trunk: Option<&TrunkId>,
    ) -> Result<NumberRecord> {
        let now = now_ms();
        self.execute_change(sqlx::query(
            "INSERT INTO numbers (id, number, trunk_id, default_country, queue_id, lead_creation, \
             directions, route_to_responsible, ring_timeout_s, source, \
             change_responsible_on_transfer, trust, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
        )
        .bind(settings.id.as_str())
        .bind(&settings.number)
        .bind(trunk.map(TrunkId::as_str))
        .bind(settings.default_country.as_str())
        .bind(settings.queue.as_ref().map(QueueId::as_str))
        .bind(settings.lead_creation.as_str())
        .bind(settings.directions.as_str())
        .bind(flag(settings.route_to_responsible))
        .bind(i64::from(settings.ring_timeout_s))
        .bind(&settings.source)
        .bind(flag(settings.change_responsible_on_transfer))
        .bind(trust_json(settings))
        .bind(now)
        , Some(settings.id.as_str()))
        .await
        .map_err(|e| number_error(e, &settings.number))?;
        self.config_changed().await;
        self.get_number(&settings.id).await
    }

    pub async fn get_number(&self, id: &NumberId) -> Result<NumberRecord> {
        let row = sqlx::query(dynamic_sql!(
            "SELECT {NUMBER_SETTINGS_COLUMNS}, {}, trunk_id, created_at FROM numbers \
             WHERE id = $1",
            super::media::NUMBER_MEDIA_COLUMNS
        ))
        .bind(id.as_str())
        .fetch_optional(self.reader())
        .await?
        .ok_or_else(|| StoreError::not_found("number", id.as_str()))?;
        number_from_row(&row)
    }

    pub async fn list_numbers(&self, page: &Page) -> Result<Paged<NumberRecord>> {
        let rows = sqlx::query(dynamic_sql!(
            "SELECT {NUMBER_SETTINGS_COLUMNS}, {}, trunk_id, created_at FROM numbers \
             WHERE id > $1 ORDER BY id LIMIT $2",
            super::media::NUMBER_MEDIA_COLUMNS
        ))
        .bind(page.after())
        .bind(page.sql_limit())
        .fetch_all(self.reader())
        .await?;
        let numbers = rows
            .iter()
            .map(number_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(page.finish(numbers, |n| n.settings.id.to_string()))
    }

    /// Replaces a number's settings (PATCH merges before calling).
    pub async fn update_number(
        &self,
        settings: &NumberSettings,
        trunk: Option<&TrunkId>,
    ) -> Result<NumberRecord> {
        let done = self.execute_change(sqlx::query(
            "UPDATE numbers SET number = $2, trunk_id = $3, default_country = $4, queue_id = $5, \
             lead_creation = $6, directions = $7, route_to_responsible = $8, ring_timeout_s = $9, \
             source = $10, change_responsible_on_transfer = $11, trust = $12, updated_at = $13 \
             WHERE id = $1",
        )
        .bind(settings.id.as_str())
        .bind(&settings.number)
        .bind(trunk.map(TrunkId::as_str))
        .bind(settings.default_country.as_str())
        .bind(settings.queue.as_ref().map(QueueId::as_str))
        .bind(settings.lead_creation.as_str())
        .bind(settings.directions.as_str())
        .bind(flag(settings.route_to_responsible))
        .bind(i64::from(settings.ring_timeout_s))
        .bind(&settings.source)
        .bind(flag(settings.change_responsible_on_transfer))
        .bind(trust_json(settings))
        .bind(now_ms())
        , None)
        .await
        .map_err(|e| number_error(e, &settings.number))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("number", settings.id.as_str()));
        }
        self.config_changed().await;
        self.get_number(&settings.id).await
    }

    pub async fn delete_number(&self, id: &NumberId) -> Result<()> {
        let done = self
            .execute_change(
                sqlx::query("DELETE FROM numbers WHERE id = $1").bind(id.as_str()),
                None,
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("number", id.as_str()));
        }
        self.config_changed().await;
        Ok(())
    }

    // ---- sources (T8) ----

    pub async fn create_source(&self, code: &str, name: &str) -> Result<SourceRecord> {
        self.execute_change(
            sqlx::query(
                "INSERT INTO sources (code, name, builtin, created_at) VALUES ($1, $2, 0, $3)",
            )
            .bind(code)
            .bind(name)
            .bind(now_ms()),
            None,
        )
        .await
        .map_err(|e| {
            on_unique(e, "source_exists", || {
                format!("source {code} already exists")
            })
        })?;
        Ok(SourceRecord {
            code: code.to_owned(),
            name: name.to_owned(),
            builtin: false,
        })
    }

    pub async fn list_sources(&self) -> Result<Vec<SourceRecord>> {
        let rows =
            sqlx::query("SELECT code, name, builtin FROM sources ORDER BY builtin DESC, code")
                .fetch_all(self.reader())
                .await?;
        rows.iter()
            .map(|row| {
                Ok(SourceRecord {
                    code: col(row, "code")?,
                    name: col(row, "name")?,
                    builtin: col::<i64>(row, "builtin")? == 1,
                })
            })
            .collect()
    }

    pub async fn delete_source(&self, code: &str) -> Result<()> {
        let row = sqlx::query("SELECT builtin FROM sources WHERE code = $1")
            .bind(code)
            .fetch_optional(self.reader())
            .await?
            .ok_or_else(|| StoreError::not_found("source", code))?;
        if col::<i64>(&row, "builtin")? == 1 {
            return Err(StoreError::Conflict {
                code: "builtin_source",
                message: format!("{code} is a built-in source and cannot be deleted"),
            });
        }
        self.execute_change(
            sqlx::query("DELETE FROM sources WHERE code = $1").bind(code),
            None,
        )
        .await
        .map_err(|e| in_use(e, format!("source {code} is used by a number")))?;
        Ok(())
    }

    // ---- pipelines and stages (T12) ----

    pub async fn create_pipeline(
        &self,
        name: &str,
        is_default: bool,
        stages: &[(String, DealStatus)],
    ) -> Result<PipelineRecord> {
        let id = PipelineId::generate();
        let mut tx = self.writer().begin().await?;
        if is_default {
            sqlx::query("UPDATE pipelines SET is_default = 0 WHERE is_default = 1")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO pipelines (id, name, is_default, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.as_str())
        .bind(name)
        .bind(flag(is_default))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        for (position, (stage, status)) in stages.iter().enumerate() {
            sqlx::query(
                "INSERT INTO stages (id, pipeline_id, name, position, status) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(StageId::generate().as_str())
            .bind(id.as_str())
            .bind(stage)
            .bind(position as i64)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await?;
        }
        self.commit_change(tx, Some(id.as_str())).await?;
        self.config_changed().await;
        self.get_pipeline(&id).await
    }

    pub async fn get_pipeline(&self, id: &PipelineId) -> Result<PipelineRecord> {
        let row = sqlx::query("SELECT id, name, is_default FROM pipelines WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(self.reader())
            .await?
            .ok_or_else(|| StoreError::not_found("pipeline", id.as_str()))?;
        let stages = sqlx::query(
            "SELECT id, name, status FROM stages WHERE pipeline_id = $1 ORDER BY position",
        )
        .bind(id.as_str())
        .fetch_all(self.reader())
        .await?
        .iter()
        .map(|s| {
            let status: String = col(s, "status")?;
            Ok(StageRecord {
                id: StageId(col(s, "id")?),
                name: col(s, "name")?,
                status: parse_stored(&status, "stages.status")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        Ok(PipelineRecord {
            id: id.clone(),
            name: col(&row, "name")?,
            is_default: col::<i64>(&row, "is_default")? == 1,
            stages,
        })
    }

    pub async fn list_pipelines(&self) -> Result<Vec<PipelineRecord>> {
        let rows = sqlx::query("SELECT id FROM pipelines ORDER BY is_default DESC, created_at, id")
            .fetch_all(self.reader())
            .await?;
        let mut pipelines = Vec::with_capacity(rows.len());
        for row in &rows {
            pipelines.push(self.get_pipeline(&PipelineId(col(row, "id")?)).await?);
        }
        Ok(pipelines)
    }

    pub async fn update_pipeline(
        &self,
        id: &PipelineId,
        name: Option<&str>,
        make_default: bool,
    ) -> Result<PipelineRecord> {
        let mut tx = self.writer().begin().await?;
        if make_default {
            sqlx::query("UPDATE pipelines SET is_default = 0 WHERE is_default = 1 AND id <> $1")
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query(
            "UPDATE pipelines SET name = COALESCE($2, name), \
             is_default = CASE WHEN $3 = 1 THEN 1 ELSE is_default END WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(name)
        .bind(flag(make_default))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("pipeline", id.as_str()));
        }
        self.commit_change(tx, None).await?;
        self.config_changed().await;
        self.get_pipeline(id).await
    }

    pub async fn delete_pipeline(&self, id: &PipelineId) -> Result<()> {
        let pipeline = self.get_pipeline(id).await?;
        if pipeline.is_default {
            return Err(StoreError::Conflict {
                code: "default_pipeline",
                message:
                    "the default pipeline cannot be deleted; make another one the default first"
                        .to_owned(),
            });
        }
        let mut tx = self.writer().begin().await?;
        sqlx::query("DELETE FROM stages WHERE pipeline_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| in_use(e, format!("pipeline {id} still has deals")))?;
        sqlx::query("DELETE FROM pipelines WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| in_use(e, format!("pipeline {id} still has deals")))?;
        self.commit_change(tx, None).await?;
        self.config_changed().await;
        Ok(())
    }

    // ---- exceptions (M4, M5) ----

    pub async fn create_exception(&self, rule: &ExceptionRule) -> Result<ExceptionRecord> {
        let id = ExceptionId::generate();
        let now = now_ms();
        let value = rule.value();
        self.execute_change(
            sqlx::query(
                "INSERT INTO exceptions (id, kind, value, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(id.as_str())
            .bind(rule.kind_str())
            .bind(&value)
            .bind(now),
            Some(id.as_str()),
        )
        .await
        .map_err(|e| {
            on_unique(e, "exception_exists", || {
                format!("{value} is already on the exceptions list")
            })
        })?;
        Ok(ExceptionRecord {
            id,
            kind: rule.kind_str().to_owned(),
            value,
            created_at: now,
        })
    }

    pub async fn list_exceptions(&self, page: &Page) -> Result<Paged<ExceptionRecord>> {
        let rows = sqlx::query(
            "SELECT id, kind, value, created_at FROM exceptions WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(page.after())
        .bind(page.sql_limit())
        .fetch_all(self.reader())
        .await?;
        let items = rows
            .iter()
            .map(|row| {
                Ok(ExceptionRecord {
                    id: ExceptionId(col(row, "id")?),
                    kind: col(row, "kind")?,
                    value: col(row, "value")?,
                    created_at: col(row, "created_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(page.finish(items, |e| e.id.to_string()))
    }

    pub async fn delete_exception(&self, id: &ExceptionId) -> Result<()> {
        let done = self
            .execute_change(
                sqlx::query("DELETE FROM exceptions WHERE id = $1").bind(id.as_str()),
                None,
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("exception", id.as_str()));
        }
        Ok(())
    }
}

async fn write_settings(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &QueueId,
    settings: &QueueSettings,
) -> Result<()> {
    sqlx::query(
        "UPDATE queues SET strategy = $2, max_wait_s = $3, wrap_up_s = $4, \
         announce_position = $5, overflow_action = $6, overflow_forward_to = $7, music = $8 \
         WHERE id = $1",
    )
    .bind(id.as_str())
    .bind(settings.strategy.as_str())
    .bind(i64::from(settings.max_wait_s))
    .bind(i64::from(settings.wrap_up_s))
    .bind(i64::from(settings.announce_position))
    .bind(settings.overflow.action.as_str())
    .bind(settings.overflow.forward_to.as_deref())
    .bind(settings.music.as_deref())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn replace_members(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &QueueId,
    members: &[UserId],
) -> Result<()> {
    sqlx::query("DELETE FROM queue_members WHERE queue_id = $1")
        .bind(id.as_str())
        .execute(&mut **tx)
        .await?;
    for (position, member) in members.iter().enumerate() {
        sqlx::query("INSERT INTO queue_members (queue_id, user_id, position) VALUES ($1, $2, $3)")
            .bind(id.as_str())
            .bind(member.as_str())
            .bind(position as i64)
            .execute(&mut **tx)
            .await
            .map_err(|e| match reference(e, "members", "") {
                StoreError::Invalid { .. } => StoreError::invalid(
                    format!("members[{position}]"),
                    format!("user '{member}' does not exist"),
                ),
                other => on_unique_store(other, member),
            })?;
    }
    Ok(())
}

fn on_unique_store(err: StoreError, member: &UserId) -> StoreError {
    if err.is_unique_violation() {
        return StoreError::invalid("members", format!("user '{member}' is listed twice"));
    }
    err
}

fn number_error(err: sqlx::Error, number: &str) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        if db.is_unique_violation() {
            return StoreError::Conflict {
                code: "number_exists",
                message: format!("{number} is already configured"),
            };
        }
        if db.is_foreign_key_violation() {
            return StoreError::invalid("reference", "the trunk, queue or source does not exist");
        }
    }
    StoreError::Database(err)
}

fn trunk_from_row(row: &AnyRow) -> Result<TrunkRecord> {
    let kind: String = col(row, "kind")?;
    let transport: String = col(row, "transport")?;
    let password: Option<String> = col(row, "password")?;
    let allowed: String = col(row, "allowed_ips")?;
    let port: i64 = col(row, "port")?;
    Ok(TrunkRecord {
        id: TrunkId(col(row, "id")?),
        name: col(row, "name")?,
        kind: parse_stored(&kind, "trunks.kind")?,
        profile: col(row, "profile")?,
        host: col(row, "host")?,
        port: u16::try_from(port)
            .map_err(|_| StoreError::Corrupt(format!("trunks.port {port}")))?,
        transport: parse_stored(&transport, "trunks.transport")?,
        username: col(row, "username")?,
        has_password: password.is_some(),
        register: col::<i64>(row, "register")? == 1,
        allowed_ips: parse_json_list(&allowed, "trunks.allowed_ips")?,
        media_relay: col::<i64>(row, "media_relay")? == 1,
        created_at: col(row, "created_at")?,
    })
}

fn number_from_row(row: &AnyRow) -> Result<NumberRecord> {
    Ok(NumberRecord {
        settings: number_settings_from_row(row)?,
        media: super::media::number_media_from_row(row)?,
        trunk: col::<Option<String>>(row, "trunk_id")?.map(TrunkId),
        created_at: col(row, "created_at")?,
    })
}

/// A number's trust rules as stored in `numbers.trust`.
fn trust_json(settings: &NumberSettings) -> String {
    serde_json::to_string(&settings.trust).unwrap_or_else(|_| "{}".to_owned())
}
