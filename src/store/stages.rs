//! A pipeline's stages as one ordered list: renamed, reordered, added and removed at once
//! (T12).

use super::routing::{PipelineRecord, in_use};
use super::{Result, Store, StoreError, col};
use crate::crm::model::{DealStatus, PipelineId, StageId};

/// One stage of the new list: an existing stage (by id) keeps its deals, one without an id
/// is added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageInput {
    pub id: Option<StageId>,
    pub name: String,
    pub status: DealStatus,
}

impl Store {
    /// Replaces the pipeline's stages with `stages`, in that order. Stages left out are
    /// removed, which a stage holding deals refuses (409 `in_use`); an id of another
    /// pipeline's stage is refused (404 naming the stage).
    pub async fn replace_stages(
        &self,
        pipeline: &PipelineId,
        stages: &[StageInput],
    ) -> Result<PipelineRecord> {
        let mut tx = self.writer().begin().await?;
        let exists = sqlx::query("SELECT id FROM pipelines WHERE id = $1")
            .bind(pipeline.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found("pipeline", pipeline.as_str()));
        }
        let current: Vec<String> = sqlx::query("SELECT id FROM stages WHERE pipeline_id = $1")
            .bind(pipeline.as_str())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| col(row, "id"))
            .collect::<Result<_>>()?;
        if let Some(stranger) = stages
            .iter()
            .filter_map(|s| s.id.as_ref())
            .find(|id| !current.iter().any(|c| c == id.as_str()))
        {
            return Err(StoreError::not_found("stage", stranger.as_str()));
        }
        // Out of the way of the unique (pipeline, position) while the order changes.
        sqlx::query("UPDATE stages SET position = -1 - position WHERE pipeline_id = $1")
            .bind(pipeline.as_str())
            .execute(&mut *tx)
            .await?;
        for gone in current.iter().filter(|c| {
            !stages
                .iter()
                .any(|s| s.id.as_ref().map(StageId::as_str) == Some(c))
        }) {
            sqlx::query("DELETE FROM stages WHERE id = $1")
                .bind(gone.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| in_use(e, format!("stage {gone} still has deals")))?;
        }
        for (position, stage) in stages.iter().enumerate() {
            match &stage.id {
                Some(id) => {
                    sqlx::query(
                        "UPDATE stages SET name = $2, status = $3, position = $4 WHERE id = $1",
                    )
                    .bind(id.as_str())
                    .bind(&stage.name)
                    .bind(stage.status.as_str())
                    .bind(position as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query(
                        "INSERT INTO stages (id, pipeline_id, name, position, status) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(StageId::generate().as_str())
                    .bind(pipeline.as_str())
                    .bind(&stage.name)
                    .bind(position as i64)
                    .bind(stage.status.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        self.commit_change(tx, None).await?;
        self.config_changed().await;
        self.get_pipeline(pipeline).await
    }
}
