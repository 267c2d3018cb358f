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
use crate::crm::hours::{AfterHours, AfterHoursAction, Hours};
use crate::crm::intake::NumberSettings;
use crate::crm::model::{Directions, LeadCreation, NumberId, QueueId, SOURCE_CALL, TrunkId};
use crate::crm::trust::TrustSettings;
use crate::matcher::Country;
use crate::media::recording::Channels;
use crate::store::{NumberMedia, NumberRecord, rfc3339};

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
    /// The gateway relays the media (default true).
    pub media_relay: Option<bool>,
    /// Record answered calls (default false; needs the relay).
    pub recording: Option<bool>,
    /// `split` (caller left, callee right; default) or `mixed` (mono).
    pub recording_channels: Option<Channels>,
    /// Weekly schedule `{"tz", "week": {"mon": [["09:00","18:00"]]…}, "days_off": […]}`;
    /// null: always open.
    #[schema(value_type = Option<Object>)]
    pub hours: Option<serde_json::Value>,
    /// `{"action": "voicemail"|"forward"|"reject", "forward_to", "max_message_s"}`:
    /// outside the hours, and when nobody in the queue answers.
    #[schema(value_type = Option<Object>)]
    pub after_hours: Option<serde_json::Value>,
    /// Caller trust (T6); absent fields take their defaults.
    pub trust: Option<TrustSettings>,
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
    pub media_relay: Option<bool>,
    pub recording: Option<bool>,
    pub recording_channels: Option<Channels>,
    /// null removes the schedule (always open).
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<Object>)]
    pub hours: Option<Option<serde_json::Value>>,
    /// null removes the rule.
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<Object>)]
    pub after_hours: Option<Option<serde_json::Value>>,
    /// Replaces the trust rules as a whole; absent fields take their defaults.
    pub trust: Option<TrustSettings>,
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
    pub media_relay: bool,
    pub recording: bool,
    pub recording_channels: Channels,
    #[schema(value_type = Option<Object>)]
    pub hours: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after_hours: Option<AfterHours>,
    /// URL of the voicemail greeting, if one was uploaded.
    pub greeting: Option<String>,
    /// Caller trust (T6).
    pub trust: TrustSettings,
    pub created_at: String,
}

impl From<NumberRecord> for Number {
    fn from(n: NumberRecord) -> Self {
        let s = n.settings;
        let media = n.media;
        let greeting = media
            .greeting
            .as_ref()
            .map(|_| format!("/api/v1/numbers/{}/greeting", s.id.0));
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
            media_relay: media.media_relay,
            recording: media.recording,
            recording_channels: media.recording_channels,
            hours: media.hours.as_ref().map(Hours::to_json),
            after_hours: media.after_hours,
            greeting,
            trust: s.trust,
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

/// A limit of zero calls an hour would flag every caller: no limit is `null`.
fn trust(value: TrustSettings) -> ApiResult<TrustSettings> {
    if value.max_calls_per_caller_per_hour == Some(0) {
        return Err(ApiError::field(
            "invalid_trust",
            "trust.max_calls_per_caller_per_hour",
            "the limit must be at least 1 call an hour; null means no limit",
        ));
    }
    Ok(value)
}

fn hours(value: &serde_json::Value) -> ApiResult<Hours> {
    Hours::parse(value)
        .map_err(|e| ApiError::field("invalid_hours", e.field.clone(), e.to_string()))
}

fn after_hours(
    value: &serde_json::Value,
    country: Country,
    trunk: Option<&TrunkId>,
) -> ApiResult<AfterHours> {
    let mut rule = AfterHours::parse(value)
        .map_err(|e| ApiError::field("invalid_after_hours", e.field.clone(), e.to_string()))?;
    if rule.action == AfterHoursAction::Forward {
        let target = rule.forward_to.as_deref().unwrap_or_default();
        rule.forward_to = Some(validate::e164(
            "after_hours.forward_to",
            target,
            Some(country),
        )?);
        if trunk.is_none() {
            return Err(ApiError::field(
                "forward_needs_trunk",
                "after_hours.action",
                "forwarding goes out through the number's trunk: give the number a trunk first",
            ));
        }
    }
    Ok(rule)
}

/// A number's media settings must make sense together.
fn check_media(media: &NumberMedia, trunk_relays: bool) -> ApiResult<()> {
    if media.recording && !(media.media_relay || trunk_relays) {
        return Err(ApiError::field(
            "recording_needs_relay",
            "recording",
            "recording needs the media through the gateway: set media_relay to true",
        ));
    }
    Ok(())
}

async fn trunk_relays(state: &AppState, trunk: Option<&TrunkId>) -> ApiResult<bool> {
    Ok(match trunk {
        Some(trunk) => state.store.get_trunk(trunk).await?.media_relay,
        None => false,
    })
}

pub(super) async fn check_references(
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
        trust: trust(body.trust.unwrap_or_default())?,
    };
    let trunk = body.trunk.map(TrunkId);
    check_references(&state, &settings, trunk.as_ref()).await?;
    let media = NumberMedia {
        media_relay: body.media_relay.unwrap_or(true),
        recording: body.recording.unwrap_or(false),
        recording_channels: body.recording_channels.unwrap_or(Channels::Split),
        hours: body
            .hours
            .as_ref()
            .filter(|v| !v.is_null())
            .map(hours)
            .transpose()?,
        after_hours: body
            .after_hours
            .as_ref()
            .filter(|v| !v.is_null())
            .map(|v| after_hours(v, settings.default_country, trunk.as_ref()))
            .transpose()?,
        greeting: None,
    };
    check_media(&media, trunk_relays(&state, trunk.as_ref()).await?)?;
    state.store.create_number(&settings, trunk.as_ref()).await?;
    state.store.set_number_media(&settings.id, &media).await?;
    let number = state.store.get_number(&settings.id).await?;
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

/// A number's settings with the intake's fields of `body` applied (PATCH and the
/// dry-run read them the same way).
pub(super) fn patched(mut s: NumberSettings, body: &UpdateNumber) -> ApiResult<NumberSettings> {
    if let Some(c) = &body.default_country {
        s.default_country = country("default_country", c)?;
    }
    if let Some(q) = &body.queue {
        s.queue = q.clone().map(QueueId);
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
    if let Some(v) = &body.source {
        s.source = v.clone();
    }
    if let Some(v) = body.change_responsible_on_transfer {
        s.change_responsible_on_transfer = v;
    }
    if let Some(v) = body.trust.clone() {
        s.trust = trust(v)?;
    }
    Ok(s)
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
    let s = patched(current.settings, &body)?;
    let trunk = match body.trunk {
        Some(t) => t.map(TrunkId),
        None => current.trunk,
    };
    check_references(&state, &s, trunk.as_ref()).await?;
    let mut media = current.media;
    if let Some(v) = body.media_relay {
        media.media_relay = v;
    }
    if let Some(v) = body.recording {
        media.recording = v;
    }
    if let Some(v) = body.recording_channels {
        media.recording_channels = v;
    }
    if let Some(v) = body.hours {
        media.hours = v.as_ref().filter(|v| !v.is_null()).map(hours).transpose()?;
    }
    if let Some(v) = body.after_hours {
        media.after_hours = v
            .as_ref()
            .filter(|v| !v.is_null())
            .map(|v| after_hours(v, s.default_country, trunk.as_ref()))
            .transpose()?;
    }
    check_media(&media, trunk_relays(&state, trunk.as_ref()).await?)?;
    state.store.update_number(&s, trunk.as_ref()).await?;
    state.store.set_number_media(&s.id, &media).await?;
    Ok(Json(state.store.get_number(&s.id).await?.into()))
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

/// Whether the request's body is declared a WAV file.
pub(super) fn is_wav(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|mime| {
            matches!(
                mime.as_str(),
                "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave"
            )
        })
}

/// Largest greeting upload: two minutes of 48 kHz 16-bit stereo, with room.
const MAX_GREETING_UPLOAD: usize = 32 * 1024 * 1024;

/// Upload the voicemail greeting (admin): a WAV file (PCM 8–32 bit or float, G.711; any
/// rate from 8 to 48 kHz; mono or stereo; up to 120 s). Stored as 8 kHz mono.
#[utoipa::path(put, path = "/numbers/{id}/greeting", tag = "routing",
    request_body(content = Vec<u8>, content_type = "audio/wav"),
    responses((status = 200, body = Number), (status = 404, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_greeting(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<Number>> {
    principal.require_admin()?;
    if !is_wav(&headers) {
        return Err(ApiError::Unsupported {
            message: "send the greeting as a WAV file with Content-Type: audio/wav".to_owned(),
        });
    }
    let number = state.store.get_number(&NumberId(id.clone())).await?;
    let greeting = crate::media::greeting::Greeting::from_wav(&body)
        .map_err(|e| ApiError::field("invalid_greeting", "greeting", e.to_string()))?;
    let dir = state.data_dir.join(crate::sip::b2bua::GREETINGS_DIR);
    let file = format!("{id}.wav");
    let write = async {
        tokio::fs::create_dir_all(&dir).await?;
        // Written aside and renamed: a call never plays a half-written greeting.
        let partial = dir.join(format!("{file}.partial"));
        tokio::fs::write(&partial, greeting.to_wav_bytes()).await?;
        tokio::fs::rename(&partial, dir.join(&file)).await
    };
    write
        .await
        .map_err(|err| ApiError::Internal(format!("cannot store the greeting: {err}")))?;
    let mut media = number.media;
    media.greeting = Some(file);
    state
        .store
        .set_number_media(&NumberId(id.clone()), &media)
        .await?;
    Ok(Json(state.store.get_number(&NumberId(id)).await?.into()))
}

/// The voicemail greeting as stored (8 kHz mono WAV).
#[utoipa::path(get, path = "/numbers/{id}/greeting", tag = "routing",
    responses((status = 200, content_type = "audio/wav", body = Vec<u8>),
              (status = 404, body = ErrorBody)))]
async fn get_greeting(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::response::Response> {
    principal.require_employee()?;
    let number = state.store.get_number(&NumberId(id.clone())).await?;
    let Some(file) = number.media.greeting else {
        return Err(ApiError::not_found("greeting", id));
    };
    let path = state
        .data_dir
        .join(crate::sip::b2bua::GREETINGS_DIR)
        .join(file);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::not_found("greeting", id))?;
    Ok(axum::response::IntoResponse::into_response((
        [(axum::http::header::CONTENT_TYPE, "audio/wav")],
        bytes,
    )))
}

/// Remove the greeting (admin): voicemail then plays only the tone.
#[utoipa::path(delete, path = "/numbers/{id}/greeting", tag = "routing",
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_greeting(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    let number = state.store.get_number(&NumberId(id.clone())).await?;
    let mut media = number.media;
    let Some(file) = media.greeting.take() else {
        return Err(ApiError::not_found("greeting", id));
    };
    state.store.set_number_media(&NumberId(id), &media).await?;
    let _ = tokio::fs::remove_file(
        state
            .data_dir
            .join(crate::sip::b2bua::GREETINGS_DIR)
            .join(file),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> OpenApiRouter<AppState> {
    let greeting = OpenApiRouter::new()
        .routes(routes!(put_greeting, get_greeting, delete_greeting))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_GREETING_UPLOAD));
    OpenApiRouter::new()
        .routes(routes!(create_number, list_numbers))
        .routes(routes!(get_number, update_number, delete_number))
        .merge(greeting)
}
