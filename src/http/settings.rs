//! `/settings/crm`: account-wide CRM mode (T3), deal pipeline (T12), repeat mode (E14);
//! `/settings/access`: how far the agent role's rights reach (A1–A3).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiJson;
use crate::crm::access::{AccessSettings, Level};
use crate::crm::model::{CrmMode, CrmSettings, PipelineId, SimpleCreates};

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CrmSettingsBody {
    /// classic (leads) or simple (contact/company + deal).
    pub mode: Option<CrmMode>,
    /// What simple mode creates besides the deal.
    pub simple_creates: Option<SimpleCreates>,
    /// Pipeline id for deals from calls and e-mail; null = the default pipeline.
    #[serde(default, deserialize_with = "super::validate::double_option")]
    pub deal_pipeline: Option<Option<String>>,
    pub repeat_mode: Option<bool>,
    /// Country for national-format numbers where no number gives one (default DE).
    pub default_country: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CrmSettingsView {
    pub mode: CrmMode,
    pub simple_creates: SimpleCreates,
    pub deal_pipeline: Option<String>,
    pub repeat_mode: bool,
    pub default_country: String,
}

impl From<CrmSettings> for CrmSettingsView {
    fn from(s: CrmSettings) -> Self {
        Self {
            mode: s.mode,
            simple_creates: s.simple_creates,
            deal_pipeline: s.deal_pipeline.map(|p| p.0),
            repeat_mode: s.repeat_mode,
            default_country: s.default_country.as_str().to_owned(),
        }
    }
}

/// The CRM settings.
#[utoipa::path(get, path = "/settings/crm", tag = "settings",
    responses((status = 200, body = CrmSettingsView)))]
async fn get_crm(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<CrmSettingsView>> {
    principal.require_employee()?;
    Ok(Json(state.store.crm_settings().await?.into()))
}

/// Change the CRM settings (admin). Fields left out keep their value.
#[utoipa::path(put, path = "/settings/crm", tag = "settings", request_body = CrmSettingsBody,
    responses((status = 200, body = CrmSettingsView), (status = 422, body = ErrorBody)))]
async fn put_crm(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CrmSettingsBody>,
) -> ApiResult<Json<CrmSettingsView>> {
    principal.require_admin()?;
    let mut settings = state.store.crm_settings().await?;
    if let Some(mode) = body.mode {
        settings.mode = mode;
    }
    if let Some(creates) = body.simple_creates {
        settings.simple_creates = creates;
    }
    if let Some(pipeline) = body.deal_pipeline {
        if let Some(id) = &pipeline {
            let known = state.store.pipeline_entries().await?;
            if !known.iter().any(|p| p.id.as_str() == id) {
                return Err(ApiError::field(
                    "unknown_pipeline",
                    "deal_pipeline",
                    format!("pipeline '{id}' does not exist or has no stages"),
                ));
            }
        }
        settings.deal_pipeline = pipeline.map(PipelineId);
    }
    if let Some(repeat) = body.repeat_mode {
        settings.repeat_mode = repeat;
    }
    if let Some(country) = body.default_country {
        settings.default_country = country.parse().map_err(|_| {
            ApiError::field(
                "invalid_country",
                "default_country",
                format!("'{country}' is not an ISO 3166 country code such as DE"),
            )
        })?;
    }
    state.store.put_crm_settings(&settings).await?;
    Ok(Json(settings.into()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessBody {
    /// `own` (entities they are responsible for), `queue` (also their queue mates'),
    /// or `all`.
    pub agent_view: Option<Level>,
    /// The same for changes; never wider than `agent_view`.
    pub agent_edit: Option<Level>,
}

/// The agent role's access levels (admins see and edit everything).
#[utoipa::path(get, path = "/settings/access", tag = "settings",
    responses((status = 200, body = AccessSettings)))]
async fn get_access(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<AccessSettings>> {
    principal.require_employee()?;
    Ok(Json(state.store.access_settings().await?))
}

/// Change the agent role's access levels (admin). An edit level wider than the view
/// level is refused: it would let an agent change what they cannot see.
#[utoipa::path(put, path = "/settings/access", tag = "settings", request_body = AccessBody,
    responses((status = 200, body = AccessSettings), (status = 422, body = ErrorBody)))]
async fn put_access(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<AccessBody>,
) -> ApiResult<Json<AccessSettings>> {
    principal.require_admin()?;
    let mut settings = state.store.access_settings().await?;
    if let Some(view) = body.agent_view {
        settings.agent_view = view;
    }
    if let Some(edit) = body.agent_edit {
        settings.agent_edit = edit;
    }
    if settings.agent_edit > settings.agent_view {
        return Err(ApiError::field(
            "edit_wider_than_view",
            "agent_edit",
            format!(
                "agent_edit cannot reach further than agent_view ({:?}): raise agent_view first",
                settings.agent_view
            )
            .to_lowercase(),
        ));
    }
    state.store.put_access_settings(&settings).await?;
    state.access_changed.send_modify(|v| *v = v.wrapping_add(1));
    Ok(Json(settings))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_crm, put_crm))
        .routes(routes!(get_access, put_access))
}
