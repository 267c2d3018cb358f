//! `PUT /pipelines/{id}/stages`: a pipeline's stages as one ordered list (T12), so an
//! admin adds, renames, reorders and removes stages in one step.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::catalog::Pipeline;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiJson;
use super::{AppState, validate};
use crate::crm::model::{DealStatus, PipelineId, StageId};
use crate::store::StageInput;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageItem {
    /// An existing stage of this pipeline (keeps its deals); left out: a new stage.
    pub id: Option<String>,
    pub name: String,
    /// What a deal in this stage is (default open).
    pub status: Option<DealStatus>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceStages {
    /// The stages in order; new deals go to the first. Stages left out are removed.
    pub stages: Vec<StageItem>,
}

/// Replace a pipeline's stages (admin): rename, reorder, add (no `id`) and remove (left
/// out; a stage that still has deals cannot be removed: 409 `in_use`).
#[utoipa::path(put, path = "/pipelines/{id}/stages", tag = "settings", request_body = ReplaceStages,
    responses((status = 200, body = Pipeline), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn replace_stages(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReplaceStages>,
) -> ApiResult<Json<Pipeline>> {
    principal.require_admin()?;
    let id = PipelineId(id);
    let current = state.store.get_pipeline(&id).await?;
    if body.stages.is_empty() {
        return Err(ApiError::field(
            "required",
            "stages",
            "a pipeline needs at least one stage: new deals go to the first",
        ));
    }
    let mut stages = Vec::with_capacity(body.stages.len());
    for (index, item) in body.stages.into_iter().enumerate() {
        let name = validate::name(&format!("stages[{index}].name"), &item.name)?;
        let stage_id = match item.id {
            Some(stage) => {
                if !current.stages.iter().any(|s| s.id.as_str() == stage) {
                    return Err(ApiError::field(
                        "unknown_stage",
                        format!("stages[{index}].id"),
                        format!("stage '{stage}' is not a stage of this pipeline"),
                    ));
                }
                if stages
                    .iter()
                    .any(|s: &StageInput| s.id.as_ref().map(StageId::as_str) == Some(&stage))
                {
                    return Err(ApiError::field(
                        "duplicate_stage",
                        format!("stages[{index}].id"),
                        format!("stage '{stage}' is listed twice"),
                    ));
                }
                Some(StageId(stage))
            }
            None => None,
        };
        stages.push(StageInput {
            id: stage_id,
            name,
            status: item.status.unwrap_or(DealStatus::Open),
        });
    }
    let pipeline = state.store.replace_stages(&id, &stages).await?;
    Ok(Json(pipeline.into()))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(replace_stages))
}
