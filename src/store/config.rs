//! Account settings documents and the routing configuration the intake reads
//! (numbers, queues, pipelines).

use sqlx::any::AnyRow;

use super::{Result, Store, StoreError, col, now_ms, parse_stored};
use crate::crm::intake::{NumberSettings, PipelineEntry};
use crate::crm::model::{CrmSettings, NumberId, PipelineId, QueueId, StageId, UserId};
use crate::crm::queue::QueueState;

const CRM_SETTINGS: &str = "crm";
const ACCESS_SETTINGS: &str = "access";

impl Store {
    /// T3: the account's CRM settings (classic mode until an admin changes it).
    pub async fn crm_settings(&self) -> Result<CrmSettings> {
        self.settings_document(CRM_SETTINGS)
            .await
            .map(Option::unwrap_or_default)
    }

    pub async fn put_crm_settings(&self, settings: &CrmSettings) -> Result<()> {
        self.put_settings_document(CRM_SETTINGS, settings).await
    }

    /// The agent role's reach (`own` until an admin changes it).
    pub async fn access_settings(&self) -> Result<crate::crm::access::AccessSettings> {
        self.settings_document(ACCESS_SETTINGS)
            .await
            .map(Option::unwrap_or_default)
    }

    pub async fn put_access_settings(
        &self,
        settings: &crate::crm::access::AccessSettings,
    ) -> Result<()> {
        self.put_settings_document(ACCESS_SETTINGS, settings).await
    }

    /// A JSON settings document by key, or `None` if never saved.
    pub async fn settings_document<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(self.reader())
            .await?;
        row.map(|row| {
            let text: String = col(&row, "value")?;
            serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("settings '{key}': {e}")))
        })
        .transpose()
    }

    pub async fn put_settings_document<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<()> {
        let text = serde_json::to_string(value)
            .map_err(|e| StoreError::Corrupt(format!("settings '{key}': {e}")))?;
        self.execute_change(sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(text)
        .bind(now_ms())
        , None)
        .await?;
        self.config_changed().await;
        Ok(())
    }

    /// The configured number with this E.164, as the intake reads it.
    pub async fn number_settings(&self, e164: &str) -> Result<Option<NumberSettings>> {
        let row = sqlx::query(dynamic_sql!(
            "SELECT {NUMBER_SETTINGS_COLUMNS} FROM numbers WHERE number = $1"
        ))
        .bind(e164)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(number_settings_from_row).transpose()
    }

    /// A queue's members in order and its rotation counter (T9).
    pub async fn queue_state(&self, id: &QueueId) -> Result<Option<QueueState>> {
        let Some(row) = sqlx::query("SELECT rotation FROM queues WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(self.reader())
            .await?
        else {
            return Ok(None);
        };
        let members =
            sqlx::query("SELECT user_id FROM queue_members WHERE queue_id = $1 ORDER BY position")
                .bind(id.as_str())
                .fetch_all(self.reader())
                .await?
                .iter()
                .map(|r| col(r, "user_id").map(UserId))
                .collect::<Result<Vec<_>>>()?;
        Ok(Some(QueueState {
            id: id.clone(),
            members,
            rotation: col(&row, "rotation")?,
        }))
    }

    pub async fn source_exists(&self, code: &str) -> Result<bool> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM sources WHERE code = $1")
            .bind(code)
            .fetch_one(self.reader())
            .await?;
        Ok(col::<i64>(&row, "n")? > 0)
    }

    pub async fn stage_in_pipeline(&self, pipeline: &PipelineId, stage: &str) -> Result<bool> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM stages WHERE pipeline_id = $1 AND id = $2")
                .bind(pipeline.as_str())
                .bind(stage)
                .fetch_one(self.reader())
                .await?;
        Ok(col::<i64>(&row, "n")? > 0)
    }

    /// Pipelines with their first stage (T12), default first.
    pub async fn pipeline_entries(&self) -> Result<Vec<PipelineEntry>> {
        let rows = sqlx::query(
            "SELECT p.id, p.is_default, \
               (SELECT s.id FROM stages s WHERE s.pipeline_id = p.id ORDER BY s.position LIMIT 1) \
               AS first_stage \
             FROM pipelines p ORDER BY p.is_default DESC, p.created_at, p.id",
        )
        .fetch_all(self.reader())
        .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let first_stage: Option<String> = col(row, "first_stage")?;
            // A pipeline without stages cannot take deals.
            if let Some(stage) = first_stage {
                entries.push(PipelineEntry {
                    id: PipelineId(col(row, "id")?),
                    first_stage: StageId(stage),
                    is_default: col::<i64>(row, "is_default")? == 1,
                });
            }
        }
        Ok(entries)
    }
}

pub(crate) const NUMBER_SETTINGS_COLUMNS: &str = "id, number, default_country, queue_id, \
    lead_creation, directions, route_to_responsible, ring_timeout_s, source, \
    change_responsible_on_transfer, trust";

pub(crate) fn number_settings_from_row(row: &AnyRow) -> Result<NumberSettings> {
    let country: String = col(row, "default_country")?;
    let lead_creation: String = col(row, "lead_creation")?;
    let directions: String = col(row, "directions")?;
    let ring_timeout: i64 = col(row, "ring_timeout_s")?;
    Ok(NumberSettings {
        id: NumberId(col(row, "id")?),
        number: col(row, "number")?,
        default_country: parse_stored(&country, "numbers.default_country")?,
        queue: col::<Option<String>>(row, "queue_id")?.map(QueueId),
        lead_creation: parse_stored(&lead_creation, "numbers.lead_creation")?,
        directions: parse_stored(&directions, "numbers.directions")?,
        route_to_responsible: col::<i64>(row, "route_to_responsible")? == 1,
        ring_timeout_s: u32::try_from(ring_timeout).unwrap_or(20),
        source: col(row, "source")?,
        change_responsible_on_transfer: col::<i64>(row, "change_responsible_on_transfer")? == 1,
        trust: serde_json::from_str(&col::<String>(row, "trust")?).map_err(|e| {
            StoreError::Corrupt(format!("numbers.trust is not valid trust rules: {e}"))
        })?,
    })
}
