//! `/numbers`: per-number CRM integration (T2, T4–T8, T10).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use super::{AppState, List, ListQuery, validate};
use crate::crm::intake::NumberSettings;
use crate::crm::model::{Directions, LeadCreation, NumberId, QueueId, SOURCE_CALL, TrunkId};
use crate::matcher::Country;
use crate::store::{NumberRecord, rfc3339};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNumber {
    /// Our number; E.164, or national with `default_country`.
    pub number: String,
    /// Trunk id, or null for a number used only through `/calls/events`.
    pub trunk: Option<String>,
    /// ISO country for callers who arrive in national format (default: the account's).
    pub default_country: Option<String>,
    pub queue: Option<String>,
    pub lead_creation: Option<LeadCreation>,
    pub directions: Option<Directions>,
    pub route_to_responsible: Option<bool>,
    pub ring_timeout_s: Option<u32>,
    pub source: Option<String>,
    pub change_responsible_on_transfer: Option<bool>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNumber {
    #[serde(default, deserialize_with = "validate::double_option")]
    pub trunk: Option<Option<String>>,
    pub default_country: Option<String>,
    #[serde(default, deserialize_with = "validate::double_option")]
    pub queue: Option<Option<String>>,
    pub lead_creation: Option<LeadCreation>,
    pub directions: Option<Directions>,
    pub route_to_responsible: Option<bool>,
    pub ring_timeout_s: Option<u32>,
    pub source: Option<String>,
    pub change_responsible_on_transfer: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Number {
    pub id: String,
    /// E.164.
    pub number: String,
    pub trunk: Option<String>,
    pub default_country: String,
    pub queue: Option<String>,
    pub lead_creation: LeadCreation,
    pub directions: Directions,
    pub route_to_responsible: bool,
    pub ring_timeout_s: u32,
    pub source: String,
    pub change_responsible_on_transfer: bool,
    pub created_at: String,
}

impl From<NumberRecord> for Number {
    fn from(n: NumberRecord) -> Self {
        let s = n.settings;
        Self {
            id: s.id.0,
            number: s.number,
            trunk: n.trunk.map(|t| t.0),
            default_country: s.default_country.as_str().to_owned(),
            queue: s.queue.map(|q| q.0),
            lead_creation: s.lead_creation,
            directions: s.directions,
            route_to_responsible: s.route_to_responsible,
            ring_timeout_s: s.ring_timeout_s,
            source: s.source,
            change_responsible_on_transfer: s.change_responsible_on_transfer,
            created_at: rfc3339(n.created_at),
        }
    }
}

fn country(field: &str, value: &str) -> ApiResult<Country> {
    value.parse().map_err(|_| {
        ApiError::field(
            "invalid_country",
            field,
            format!("{field}: '{value}' is not an ISO 3166 country code such as DE, ES or IT"),
        )
    })
}

fn ring_timeout(value: u32) -> ApiResult<u32> {
    if !(5..=300).contains(&value) {
        return Err(ApiError::field(
            "invalid_ring_timeout",
            "ring_timeout_s",
            "ring_timeout_s must be 5 to 300 seconds",
        ));
    }
    Ok(value)
}

async fn check_references(
    state: &AppState,
    settings: &NumberSettings,
    trunk: Option<&TrunkId>,
) -> ApiResult<()> {
    if !state.store.source_exists(&settings.source).await? {
        return Err(ApiError::field(
            "unknown_source",
            "source",
            format!(
                "source '{}' does not exist; create it under /sources first",
                settings.source
            ),
        ));
    }
    if let Some(queue) = &settings.queue {
        state.store.get_queue(queue).await.map_err(|_| {
            ApiError::field(
                "unknown_queue",
                "queue",
                format!("queue '{queue}' does not exist"),
            )
        })?;
    }
    if let Some(trunk) = trunk {
        state.store.get_trunk(trunk).await.map_err(|_| {
            ApiError::field(
                "unknown_trunk",
                "trunk",
                format!("trunk '{trunk}' does not exist"),
            )
        })?;
    }
    Ok(())
}

/// Configure a number (admin).
#[utoipa::path(post, path = "/numbers", tag = "routing", request_body = CreateNumber,
    responses((status = 201, body = Number), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_number(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateNumber>,
) -> ApiResult<(StatusCode, Json<Number>)> {
    principal.require_admin()?;
    let default_country = match body.default_country.as_deref() {
        Some(c) => country("default_country", c)?,
        None => state.store.crm_settings().await?.default_country,
    };
    let settings = NumberSettings {
        id: NumberId::generate(),
        number: validate::e164("number", &body.number, Some(default_country))?,
        default_country,
        queue: body.queue.map(QueueId),
        lead_creation: body.lead_creation.unwrap_or(LeadCreation::Automatic),
        directions: body.directions.unwrap_or(Directions::Incoming),
        route_to_responsible: body.route_to_responsible.unwrap_or(true),
        ring_timeout_s: ring_timeout(body.ring_timeout_s.unwrap_or(20))?,
        source: body.source.unwrap_or_else(|| SOURCE_CALL.to_owned()),
        change_responsible_on_transfer: body.change_responsible_on_transfer.unwrap_or(false),
    };
    let trunk = body.trunk.map(TrunkId);
    check_references(&state, &settings, trunk.as_ref()).await?;
    let number = state.store.create_number(&settings, trunk.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(number.into())))
}

/// List numbers.
#[utoipa::path(get, path = "/numbers", tag = "routing", params(ListQuery),
    responses((status = 200, body = List<Number>)))]
async fn list_numbers(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<Number>>> {
    principal.require_employee()?;
    let paged = state.store.list_numbers(&query.page()?).await?;
    Ok(Json(List::from_paged(paged, Number::from)))
}

/// One number.
#[utoipa::path(get, path = "/numbers/{id}", tag = "routing",
    responses((status = 200, body = Number), (status = 404, body = ErrorBody)))]
async fn get_number(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Number>> {
    principal.require_employee()?;
    Ok(Json(state.store.get_number(&NumberId(id)).await?.into()))
}

/// Change a number's settings (admin).
#[utoipa::path(patch, path = "/numbers/{id}", tag = "routing", request_body = UpdateNumber,
    responses((status = 200, body = Number), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_number(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateNumber>,
) -> ApiResult<Json<Number>> {
    principal.require_admin()?;
    let current = state.store.get_number(&NumberId(id)).await?;
    let mut s = current.settings;
    if let Some(c) = body.default_country {
        s.default_country = country("default_country", &c)?;
    }
    if let Some(q) = body.queue {
        s.queue = q.map(QueueId);
    }
    if let Some(v) = body.lead_creation {
        s.lead_creation = v;
    }
    if let Some(v) = body.directions {
        s.directions = v;
    }
    if let Some(v) = body.route_to_responsible {
        s.route_to_responsible = v;
    }
    if let Some(v) = body.ring_timeout_s {
        s.ring_timeout_s = ring_timeout(v)?;
    }
    if let Some(v) = body.source {
        s.source = v;
    }
    if let Some(v) = body.change_responsible_on_transfer {
        s.change_responsible_on_transfer = v;
    }
    let trunk = match body.trunk {
        Some(t) => t.map(TrunkId),
        None => current.trunk,
    };
    check_references(&state, &s, trunk.as_ref()).await?;
    Ok(Json(
        state.store.update_number(&s, trunk.as_ref()).await?.into(),
    ))
}

/// Remove a number (admin); its call log stays.
#[utoipa::path(delete, path = "/numbers/{id}", tag = "routing",
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_number(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    state.store.delete_number(&NumberId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_number, list_numbers))
        .routes(routes!(get_number, update_number, delete_number))
}
