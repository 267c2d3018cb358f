//! `/sources` (T8) and `/pipelines` with their stages (T12).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiJson;
use super::{AppState, List, validate};
use crate::crm::model::{DealStatus, PipelineId};
use crate::store::{PipelineRecord, SourceRecord};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSource {
    /// Upper-case code, e.g. `HOTLINE` (A–Z, 0–9, `_`; at most 32).
    pub code: String,
    pub name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Source {
    pub code: String,
    pub name: String,
    /// Built-in sources (CALL, EMAIL, WEB, OTHER) cannot be deleted.
    pub builtin: bool,
}

impl From<SourceRecord> for Source {
    fn from(s: SourceRecord) -> Self {
        Self {
            code: s.code,
            name: s.name,
            builtin: s.builtin,
        }
    }
}

/// Add a custom source (admin).
#[utoipa::path(post, path = "/sources", tag = "settings", request_body = CreateSource,
    responses((status = 201, body = Source), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_source(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateSource>,
) -> ApiResult<(StatusCode, Json<Source>)> {
    principal.require_admin()?;
    let code = body.code.trim();
    if code.is_empty()
        || code.len() > 32
        || !code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ApiError::field(
            "invalid_source_code",
            "code",
            "code must be 1 to 32 characters of A-Z, 0-9 and _, e.g. HOTLINE",
        ));
    }
    let name = validate::name("name", &body.name)?;
    let source = state.store.create_source(code, &name).await?;
    Ok((StatusCode::CREATED, Json(source.into())))
}

/// All sources.
#[utoipa::path(get, path = "/sources", tag = "settings",
    responses((status = 200, body = List<Source>)))]
async fn list_sources(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<List<Source>>> {
    principal.require_employee()?;
    let items = state.store.list_sources().await?;
    Ok(Json(List {
        items: items.into_iter().map(Source::from).collect(),
        next: None,
    }))
}

/// Delete a custom source no number uses (admin).
#[utoipa::path(delete, path = "/sources/{code}", tag = "settings",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_source(
    State(state): State<AppState>,
    principal: Principal,
    Path(code): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    state.store.delete_source(&code).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStage {
    pub name: String,
    /// What a deal in this stage is (default open).
    pub status: Option<DealStatus>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePipeline {
    pub name: String,
    /// In order; new deals go to the first (T12).
    pub stages: Vec<CreateStage>,
    #[serde(default)]
    pub is_default: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePipeline {
    pub name: Option<String>,
    /// `true` makes this the default pipeline (the previous default stops being it).
    pub is_default: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stage {
    pub id: String,
    pub name: String,
    pub status: DealStatus,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Pipeline {
    pub id: String,
    pub name: String,
    pub is_default: bool,
    pub stages: Vec<Stage>,
}

impl From<PipelineRecord> for Pipeline {
    fn from(p: PipelineRecord) -> Self {
        Self {
            id: p.id.0,
            name: p.name,
            is_default: p.is_default,
            stages: p
                .stages
                .into_iter()
                .map(|s| Stage {
                    id: s.id.0,
                    name: s.name,
                    status: s.status,
                })
                .collect(),
        }
    }
}

/// Create a pipeline with its stages (admin).
#[utoipa::path(post, path = "/pipelines", tag = "settings", request_body = CreatePipeline,
    responses((status = 201, body = Pipeline), (status = 422, body = ErrorBody)))]
async fn create_pipeline(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreatePipeline>,
) -> ApiResult<(StatusCode, Json<Pipeline>)> {
    principal.require_admin()?;
    let name = validate::name("name", &body.name)?;
    if body.stages.is_empty() {
        return Err(ApiError::field(
            "stages_required",
            "stages",
            "a pipeline needs at least one stage; new deals go to the first",
        ));
    }
    if body
        .stages
        .first()
        .and_then(|s| s.status)
        .unwrap_or(DealStatus::Open)
        != DealStatus::Open
    {
        return Err(ApiError::field(
            "invalid_stage",
            "stages[0].status",
            "the first stage takes new deals, so it must be open",
        ));
    }
    let stages = body
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok((
                validate::name(&format!("stages[{i}].name"), &s.name)?,
                s.status.unwrap_or(DealStatus::Open),
            ))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let pipeline = state
        .store
        .create_pipeline(&name, body.is_default, &stages)
        .await?;
    Ok((StatusCode::CREATED, Json(pipeline.into())))
}

/// All pipelines, the default first.
#[utoipa::path(get, path = "/pipelines", tag = "settings",
    responses((status = 200, body = List<Pipeline>)))]
async fn list_pipelines(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<List<Pipeline>>> {
    principal.require_employee()?;
    let items = state.store.list_pipelines().await?;
    Ok(Json(List {
        items: items.into_iter().map(Pipeline::from).collect(),
        next: None,
    }))
}

/// One pipeline.
#[utoipa::path(get, path = "/pipelines/{id}", tag = "settings",
    responses((status = 200, body = Pipeline), (status = 404, body = ErrorBody)))]
async fn get_pipeline(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Pipeline>> {
    principal.require_employee()?;
    Ok(Json(
        state.store.get_pipeline(&PipelineId(id)).await?.into(),
    ))
}

/// Rename a pipeline or make it the default (admin).
#[utoipa::path(patch, path = "/pipelines/{id}", tag = "settings", request_body = UpdatePipeline,
    responses((status = 200, body = Pipeline), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_pipeline(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdatePipeline>,
) -> ApiResult<Json<Pipeline>> {
    principal.require_admin()?;
    if body.is_default == Some(false) {
        return Err(ApiError::field(
            "invalid_default",
            "is_default",
            "make another pipeline the default instead of unsetting this one",
        ));
    }
    let name = body
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    let pipeline = state
        .store
        .update_pipeline(
            &PipelineId(id),
            name.as_deref(),
            body.is_default == Some(true),
        )
        .await?;
    Ok(Json(pipeline.into()))
}

/// Delete a pipeline without deals (admin); not the default one.
#[utoipa::path(delete, path = "/pipelines/{id}", tag = "settings",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_pipeline(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    state.store.delete_pipeline(&PipelineId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_source, list_sources))
        .routes(routes!(delete_source))
        .routes(routes!(create_pipeline, list_pipelines))
        .routes(routes!(get_pipeline, update_pipeline, delete_pipeline))
}
