//! `/privacy`: erasure of a person's data (right to erasure) and the export of it
//! (right of access), for admins.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use crate::crm::model::EntityRef;
use crate::crm::privacy::{ErasedCounts, parse_target};
use crate::store::NewAudit;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    /// The person: `lead:<id>` or `contact:<id>`.
    pub entity: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EraseResponse {
    pub erased: ErasedCounts,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ExportQuery {
    /// The person: `lead:<id>` or `contact:<id>`.
    pub entity: String,
}

/// Everything stored about one person.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PersonExport {
    /// The person exported (`contact:<id>`).
    pub entity: String,
    /// The person, their leads and their own deals, each with `ref`, its identifiers and
    /// (a contact) the reference of its company.
    pub entities: Vec<serde_json::Value>,
    pub activities: Vec<serde_json::Value>,
    /// The person's calls, each with `recording_url` (null without a recording).
    pub calls: Vec<serde_json::Value>,
    /// The calls that are voicemail messages (also among `calls`).
    pub voicemails: Vec<serde_json::Value>,
    /// The person's e-mails, each with the raw message as `raw_base64`.
    pub emails: Vec<serde_json::Value>,
}

fn target(field: &str, text: &str) -> ApiResult<EntityRef> {
    parse_target(text).map_err(|e| ApiError::field("invalid_entity", field, e.to_string()))
}

/// Erase a person (admin): the lead or contact, a contact's leads and own deals, their
/// activities and e-mails and recordings; their calls are kept anonymised. What remains
/// is a tombstone of salted hashes, so replays and re-syncs do not bring them back.
#[utoipa::path(post, path = "/privacy/erase", tag = "privacy", request_body = EraseRequest,
    responses((status = 200, body = EraseResponse), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn erase(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<EraseRequest>,
) -> ApiResult<Json<EraseResponse>> {
    principal.require_admin()?;
    let entity = target("entity", &body.entity)?;
    let recordings = state.data_dir.join(crate::sip::b2bua::RECORDINGS_DIR);
    let erased = state.store.erase(&entity, &recordings).await?;
    // The request's own audit row names the path; this one names the person erased and
    // what went, never who they were.
    state
        .store
        .record_audit(NewAudit {
            actor: super::audit::actor(Some(&principal)),
            action: "ERASE".to_owned(),
            object: Some(entity.to_string()),
            fields: vec![
                format!("entities={}", erased.entities),
                format!("activities={}", erased.activities),
                format!("calls={}", erased.calls),
                format!("emails={}", erased.emails),
                format!("recordings={}", erased.recordings),
            ],
            remote_addr: None,
            status: 200,
        })
        .await?;
    tracing::info!(entity = %entity, ?erased, "erased a person's data");
    Ok(Json(EraseResponse { erased }))
}

/// Export everything stored about a person (admin), raw e-mails as base64.
#[utoipa::path(get, path = "/privacy/export", tag = "privacy", params(ExportQuery),
    responses((status = 200, body = PersonExport), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn export(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> ApiResult<Json<PersonExport>> {
    principal.require_admin()?;
    let entity = target("entity", &query.entity)?;
    let e = state.store.export_person(&entity).await?;
    Ok(Json(PersonExport {
        entity: e.entity,
        entities: e.entities,
        activities: e.activities,
        calls: e.calls,
        voicemails: e.voicemails,
        emails: e.emails,
    }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(erase))
        .routes(routes!(export))
}
