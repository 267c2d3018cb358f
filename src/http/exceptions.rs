//! `/exceptions`: phone numbers, e-mail addresses and domains kept out of the CRM (M4, M5).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use super::{AppState, List, ListQuery};
use crate::crm::model::ExceptionId;
use crate::matcher::parse_exception;
use crate::store::{ExceptionRecord, rfc3339};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateException {
    /// `+4930123456`, `bad@example.com`, `@gmail.com` or `gmail.com` (not `*@gmail.com`).
    pub value: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Exception {
    pub id: String,
    /// phone | email | domain
    pub kind: String,
    /// Normalised: E.164, lowercased e-mail, or `@domain`.
    pub value: String,
    pub created_at: String,
}

impl From<ExceptionRecord> for Exception {
    fn from(e: ExceptionRecord) -> Self {
        Self {
            id: e.id.0,
            kind: e.kind,
            value: e.value,
            created_at: rfc3339(e.created_at),
        }
    }
}

/// Add an exception (admin). `*@gmail.com` is refused with the accepted forms (M5).
#[utoipa::path(post, path = "/exceptions", tag = "settings", request_body = CreateException,
    responses((status = 201, body = Exception), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_exception(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateException>,
) -> ApiResult<(StatusCode, Json<Exception>)> {
    principal.require_admin()?;
    let country = state.store.crm_settings().await?.default_country;
    let rule = parse_exception(&body.value, Some(country))
        .map_err(|e| ApiError::field(e.code(), "value", e.to_string()))?;
    let record = state.store.create_exception(&rule).await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

/// List exceptions.
#[utoipa::path(get, path = "/exceptions", tag = "settings", params(ListQuery),
    responses((status = 200, body = List<Exception>)))]
async fn list_exceptions(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<Exception>>> {
    principal.require_employee()?;
    let paged = state.store.list_exceptions(&query.page()?).await?;
    Ok(Json(List::from_paged(paged, Exception::from)))
}

/// Remove an exception (admin).
#[utoipa::path(delete, path = "/exceptions/{id}", tag = "settings",
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_exception(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    state.store.delete_exception(&ExceptionId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_exception, list_exceptions))
        .routes(routes!(delete_exception))
}
