//! `/queues`: ordered members and round-robin rotation (T9), and how the queue serves
//! callers who wait: strategy, longest wait and overflow, wrap-up, position announcement
//! and music.

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
use crate::crm::model::{OverflowAction, QueueId, QueueStrategy, UserId};
use crate::crm::queueing::{Overflow, QueueSettings};
use crate::store::{QueueRecord, rfc3339};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQueue {
    pub name: String,
    /// User ids in turn order.
    #[serde(default)]
    pub members: Vec<String>,
    /// `in_turn` (default: the rotation), `ring_all` or `longest_idle`: who of the free
    /// agents is offered a call.
    pub strategy: Option<String>,
    /// How long a caller may wait before the overflow rule (default 300 s).
    pub max_wait_s: Option<u32>,
    /// An agent's time after a call of this queue before the next (default 0).
    pub wrap_up_s: Option<u32>,
    /// Tell waiting callers their position (default false).
    pub announce_position: Option<bool>,
    /// What happens after `max_wait_s`: `{"action": "voicemail"|"forward"|"reject",
    /// "forward_to": "+49…"}` (default voicemail).
    pub overflow: Option<OverflowBody>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateQueue {
    pub name: Option<String>,
    /// Replaces the members; the rotation continues from where it was.
    pub members: Option<Vec<String>>,
    pub strategy: Option<String>,
    pub max_wait_s: Option<u32>,
    pub wrap_up_s: Option<u32>,
    pub announce_position: Option<bool>,
    pub overflow: Option<OverflowBody>,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverflowBody {
    /// `voicemail`, `forward` or `reject`.
    pub action: String,
    /// With `forward`: the number the caller is forwarded to, through the trunk of the
    /// number they called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Queue {
    pub id: String,
    pub name: String,
    pub members: Vec<String>,
    /// User id whose turn is next (T9), null for an empty queue.
    pub next: Option<String>,
    pub strategy: String,
    pub max_wait_s: u32,
    pub wrap_up_s: u32,
    pub announce_position: bool,
    pub overflow: OverflowBody,
    /// URL of the uploaded music; null: waiting callers hear the built-in pattern.
    pub music: Option<String>,
    pub created_at: String,
}

/// Longest `max_wait_s`: two hours.
const MAX_WAIT_LIMIT_S: u32 = 7_200;
/// Longest `wrap_up_s`: one hour.
const WRAP_UP_LIMIT_S: u32 = 3_600;

/// Applies the request's settings over `settings`, checked.
fn apply_settings(
    settings: &mut QueueSettings,
    strategy: Option<&str>,
    max_wait_s: Option<u32>,
    wrap_up_s: Option<u32>,
    announce_position: Option<bool>,
    overflow: Option<&OverflowBody>,
) -> ApiResult<()> {
    if let Some(strategy) = strategy {
        settings.strategy = strategy
            .parse::<QueueStrategy>()
            .map_err(|e| ApiError::field("invalid_strategy", "strategy", e.to_string()))?;
    }
    if let Some(max_wait_s) = max_wait_s {
        if !(1..=MAX_WAIT_LIMIT_S).contains(&max_wait_s) {
            return Err(ApiError::field(
                "invalid_max_wait",
                "max_wait_s",
                format!("max_wait_s must be between 1 and {MAX_WAIT_LIMIT_S} seconds"),
            ));
        }
        settings.max_wait_s = max_wait_s;
    }
    if let Some(wrap_up_s) = wrap_up_s {
        if wrap_up_s > WRAP_UP_LIMIT_S {
            return Err(ApiError::field(
                "invalid_wrap_up",
                "wrap_up_s",
                format!("wrap_up_s must be between 0 and {WRAP_UP_LIMIT_S} seconds"),
            ));
        }
        settings.wrap_up_s = wrap_up_s;
    }
    if let Some(announce) = announce_position {
        settings.announce_position = announce;
    }
    if let Some(overflow) = overflow {
        let action = overflow
            .action
            .parse::<OverflowAction>()
            .map_err(|e| ApiError::field("invalid_overflow", "overflow.action", e.to_string()))?;
        let forward_to = match (action, overflow.forward_to.as_deref()) {
            (OverflowAction::Forward, Some(target)) => {
                Some(validate::e164("overflow.forward_to", target, None)?)
            }
            (OverflowAction::Forward, None) => {
                return Err(ApiError::field(
                    "invalid_overflow",
                    "overflow.forward_to",
                    "forwarding needs forward_to: the number to forward waiting callers to",
                ));
            }
            _ => None,
        };
        settings.overflow = Overflow { action, forward_to };
    }
    Ok(())
}

impl From<QueueRecord> for Queue {
    fn from(q: QueueRecord) -> Self {
        let next = crate::crm::queue::QueueState {
            id: q.id.clone(),
            members: q.members.clone(),
            rotation: q.rotation,
        }
        .next_member()
        .map(ToString::to_string);
        let settings = q.settings;
        Self {
            music: settings
                .music
                .as_ref()
                .map(|_| format!("/api/v1/queues/{}/music", q.id.0)),
            id: q.id.0,
            name: q.name,
            members: q.members.into_iter().map(|m| m.0).collect(),
            next,
            strategy: settings.strategy.as_str().to_owned(),
            max_wait_s: settings.max_wait_s,
            wrap_up_s: settings.wrap_up_s,
            announce_position: settings.announce_position,
            overflow: OverflowBody {
                action: settings.overflow.action.as_str().to_owned(),
                forward_to: settings.overflow.forward_to,
            },
            created_at: rfc3339(q.created_at),
        }
    }
}

fn user_ids(members: Vec<String>) -> Vec<UserId> {
    members.into_iter().map(UserId).collect()
}

/// Create a queue (admin).
#[utoipa::path(post, path = "/queues", tag = "routing", request_body = CreateQueue,
    responses((status = 201, body = Queue), (status = 422, body = ErrorBody)))]
async fn create_queue(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateQueue>,
) -> ApiResult<(StatusCode, Json<Queue>)> {
    principal.require_admin()?;
    let name = validate::name("name", &body.name)?;
    let mut settings = QueueSettings::default();
    apply_settings(
        &mut settings,
        body.strategy.as_deref(),
        body.max_wait_s,
        body.wrap_up_s,
        body.announce_position,
        body.overflow.as_ref(),
    )?;
    let queue = state
        .store
        .create_queue(&name, &user_ids(body.members), &settings)
        .await?;
    // Who shares a queue decides the `queue` level's reach.
    state.access_changed.send_modify(|v| *v = v.wrapping_add(1));
    Ok((StatusCode::CREATED, Json(queue.into())))
}

/// List queues.
#[utoipa::path(get, path = "/queues", tag = "routing", params(ListQuery),
    responses((status = 200, body = List<Queue>)))]
async fn list_queues(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<Queue>>> {
    principal.require_employee()?;
    let paged = state.store.list_queues(&query.page()?).await?;
    Ok(Json(List::from_paged(paged, Queue::from)))
}

/// One queue.
#[utoipa::path(get, path = "/queues/{id}", tag = "routing",
    responses((status = 200, body = Queue), (status = 404, body = ErrorBody)))]
async fn get_queue(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Queue>> {
    principal.require_employee()?;
    Ok(Json(state.store.get_queue(&QueueId(id)).await?.into()))
}

/// Rename a queue or replace its members (admin).
#[utoipa::path(patch, path = "/queues/{id}", tag = "routing", request_body = UpdateQueue,
    responses((status = 200, body = Queue), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_queue(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateQueue>,
) -> ApiResult<Json<Queue>> {
    principal.require_admin()?;
    let name = body
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    let members = body.members.map(user_ids);
    let id = QueueId(id);
    let changes_settings = body.strategy.is_some()
        || body.max_wait_s.is_some()
        || body.wrap_up_s.is_some()
        || body.announce_position.is_some()
        || body.overflow.is_some();
    let settings = if changes_settings {
        let mut settings = state.store.get_queue(&id).await?.settings;
        apply_settings(
            &mut settings,
            body.strategy.as_deref(),
            body.max_wait_s,
            body.wrap_up_s,
            body.announce_position,
            body.overflow.as_ref(),
        )?;
        Some(settings)
    } else {
        None
    };
    let queue = state
        .store
        .update_queue(&id, name.as_deref(), members.as_deref(), settings.as_ref())
        .await?;
    state.access_changed.send_modify(|v| *v = v.wrapping_add(1));
    Ok(Json(queue.into()))
}

/// Delete a queue no number uses (admin).
#[utoipa::path(delete, path = "/queues/{id}", tag = "routing",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_queue(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    state.store.delete_queue(&QueueId(id)).await?;
    state.access_changed.send_modify(|v| *v = v.wrapping_add(1));
    Ok(StatusCode::NO_CONTENT)
}

/// Largest music upload: two minutes of 48 kHz 16-bit stereo, with room.
const MAX_MUSIC_UPLOAD: usize = 32 * 1024 * 1024;

/// Upload what waiting callers hear (admin): a WAV file (PCM 8–32 bit or float, G.711;
/// 8 to 48 kHz; mono or stereo; up to 120 s, played in a loop). Stored as 8 kHz mono;
/// callers waiting now hear it at once.
#[utoipa::path(put, path = "/queues/{id}/music", tag = "routing",
    request_body(content = Vec<u8>, content_type = "audio/wav"),
    responses((status = 200, body = Queue), (status = 404, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_music(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<Queue>> {
    principal.require_admin()?;
    if !super::numbers::is_wav(&headers) {
        return Err(ApiError::Unsupported {
            message: "send the music as a WAV file with Content-Type: audio/wav".to_owned(),
        });
    }
    let id = QueueId(id);
    let queue = state.store.get_queue(&id).await?;
    let music = crate::media::greeting::Greeting::from_wav(&body)
        .map_err(|e| ApiError::field("invalid_music", "music", e.to_string()))?;
    let dir = state.data_dir.join(crate::sip::b2bua::MUSIC_DIR);
    let file = format!("{id}.wav");
    let write = async {
        tokio::fs::create_dir_all(&dir).await?;
        // Written aside and renamed: a caller never hears a half-written file.
        let partial = dir.join(format!("{file}.partial"));
        tokio::fs::write(&partial, music.to_wav_bytes()).await?;
        tokio::fs::rename(&partial, dir.join(&file)).await
    };
    write
        .await
        .map_err(|err| ApiError::Internal(format!("cannot store the music: {err}")))?;
    let mut settings = queue.settings;
    settings.music = Some(file);
    let queue = state
        .store
        .update_queue(&id, None, None, Some(&settings))
        .await?;
    state.desk.music_changed(&id, &queue.settings);
    Ok(Json(queue.into()))
}

/// The queue's music as stored (8 kHz mono WAV).
#[utoipa::path(get, path = "/queues/{id}/music", tag = "routing",
    responses((status = 200, content_type = "audio/wav", body = Vec<u8>),
              (status = 404, body = ErrorBody)))]
async fn get_music(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::response::Response> {
    principal.require_employee()?;
    let queue = state.store.get_queue(&QueueId(id.clone())).await?;
    let Some(file) = queue.settings.music else {
        return Err(ApiError::not_found("music", id));
    };
    let bytes = tokio::fs::read(state.data_dir.join(crate::sip::b2bua::MUSIC_DIR).join(file))
        .await
        .map_err(|_| ApiError::not_found("music", id))?;
    Ok(axum::response::IntoResponse::into_response((
        [(axum::http::header::CONTENT_TYPE, "audio/wav")],
        bytes,
    )))
}

/// Remove the music (admin): waiting callers hear the built-in pattern.
#[utoipa::path(delete, path = "/queues/{id}/music", tag = "routing",
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_music(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    let id = QueueId(id);
    let queue = state.store.get_queue(&id).await?;
    let mut settings = queue.settings;
    let Some(file) = settings.music.take() else {
        return Err(ApiError::not_found("music", id.0));
    };
    state
        .store
        .update_queue(&id, None, None, Some(&settings))
        .await?;
    state.desk.music_changed(&id, &settings);
    let _ =
        tokio::fs::remove_file(state.data_dir.join(crate::sip::b2bua::MUSIC_DIR).join(file)).await;
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> OpenApiRouter<AppState> {
    let music = OpenApiRouter::new()
        .routes(routes!(put_music, get_music, delete_music))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_MUSIC_UPLOAD));
    OpenApiRouter::new()
        .merge(music)
        .routes(routes!(create_queue, list_queues))
        .routes(routes!(get_queue, update_queue, delete_queue))
}
