//! Agents' presence over HTTP: `PUT /users/{id}/presence` (the person or an admin),
//! `GET /presence` (everyone's, with their registered devices and whether the queue desk
//! has them in a call or in wrap-up), and `GET /queues/{id}/live` (the callers waiting in a
//! queue and its members as the desk sees them now). A change is stored, told to the
//! desk, and published on the event stream (`presence`); the audit layer records it.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiJson;
use super::{AppState, List};
use crate::crm::model::{Millis, Presence, QueueId, UserId};
use crate::events::PresenceUpdate;
use crate::sip::queueing::{AgentNow, WaitingCaller};
use crate::store::{PresenceRecord, now_ms, rfc3339};

/// The longest pause reason kept, in characters.
pub const MAX_REASON_CHARS: usize = 200;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPresence {
    /// `available`, `paused` or `offline`.
    pub status: String,
    /// Why the person pauses (at most 200 characters); kept only with `paused`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One employee's presence, as the queue desk sees them now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PresenceItem {
    /// The employee's user id.
    pub user: String,
    pub status: Presence,
    /// Why a paused employee is paused; null otherwise.
    pub reason: Option<String>,
    /// RFC 3339: when the status was last set; null when it never was (available since
    /// the person was created).
    pub since: Option<String>,
    /// How many of their phones are registered now.
    pub devices: usize,
    /// In a call of ours (ringing to them from a queue included).
    pub in_call: bool,
    /// RFC 3339: in wrap-up after a call until then; null when not.
    pub wrap_up_until: Option<String>,
}

/// A caller waiting in a queue.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LiveWaiting {
    /// The call log id (`/calls/{id}`), null until the call is logged.
    pub call: Option<String>,
    /// The caller's number as the call log shows it.
    pub caller: String,
    /// RFC 3339: when they started waiting.
    pub since: String,
    /// 1 for the next caller served.
    pub position: usize,
}

/// A member of a queue as the live view shows them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LiveAgent {
    pub user: String,
    pub status: Presence,
    pub in_call: bool,
}

/// A queue now: who waits (next served first) and its members in turn order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueLive {
    pub waiting: Vec<LiveWaiting>,
    pub agents: Vec<LiveAgent>,
}

/// Why a presence change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceInputError {
    #[error("'{0}' is not a presence status; use one of: available, paused, offline")]
    Status(String),
    #[error("the reason has {0} characters; at most 200 are kept")]
    ReasonTooLong(usize),
}

impl From<PresenceInputError> for ApiError {
    fn from(err: PresenceInputError) -> Self {
        match err {
            PresenceInputError::Status(_) => {
                ApiError::field("invalid_status", "status", err.to_string())
            }
            PresenceInputError::ReasonTooLong(_) => {
                ApiError::field("reason_too_long", "reason", err.to_string())
            }
        }
    }
}

/// The status and the reason to store: the reason trimmed, blank as none, and dropped
/// unless the person pauses (a reason only explains a pause).
pub fn presence_change(
    status: &str,
    reason: Option<&str>,
) -> Result<(Presence, Option<String>), PresenceInputError> {
    let status: Presence = status
        .parse()
        .map_err(|_| PresenceInputError::Status(status.to_owned()))?;
    if status != Presence::Paused {
        return Ok((status, None));
    }
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if let Some(r) = reason {
        let chars = r.chars().count();
        if chars > MAX_REASON_CHARS {
            return Err(PresenceInputError::ReasonTooLong(chars));
        }
    }
    Ok((status, reason.map(str::to_owned)))
}

/// A person sets their own presence; an admin anyone's.
pub fn may_set_presence(is_admin: bool, me: Option<&UserId>, user: &UserId) -> bool {
    is_admin || me == Some(user)
}

/// Admins watch every queue; an agent the queues they are a member of.
pub fn may_watch_queue(is_admin: bool, me: Option<&UserId>, members: &[UserId]) -> bool {
    is_admin || me.is_some_and(|me| members.contains(me))
}

impl PresenceItem {
    fn new(record: PresenceRecord, devices: usize, now: AgentNow) -> Self {
        Self {
            user: record.user.0,
            status: record.status,
            reason: record.reason,
            since: record.since.map(rfc3339),
            devices,
            in_call: now.in_call,
            wrap_up_until: now.wrap_up_until.map(rfc3339),
        }
    }
}

impl From<WaitingCaller> for LiveWaiting {
    fn from(w: WaitingCaller) -> Self {
        Self {
            call: w.call,
            caller: w.caller,
            since: rfc3339(w.since),
            position: w.position,
        }
    }
}

fn item(state: &AppState, record: PresenceRecord, now: Millis) -> PresenceItem {
    let devices = state.store.cached_user_bindings(&record.user, now).len();
    let agent = state.desk.agent(&record.user, now);
    PresenceItem::new(record, devices, agent)
}

/// Set an employee's presence (the person themself or an admin). Only `available`
/// agents out of a call and wrap-up are offered queue calls; a `paused` one keeps the
/// reason (at most 200 characters). Published on `/events` as `presence`.
#[utoipa::path(put, path = "/users/{id}/presence", tag = "users", request_body = SetPresence,
    responses((status = 200, body = PresenceItem), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn set_presence(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SetPresence>,
) -> ApiResult<Json<PresenceItem>> {
    principal.require_employee()?;
    let user = UserId(id);
    if !may_set_presence(principal.is_admin(), principal.user_id(), &user) {
        return Err(ApiError::Forbidden(
            "only an admin or the person themself set their presence".to_owned(),
        ));
    }
    let (status, reason) = presence_change(&body.status, body.reason.as_deref())?;
    let now = now_ms();
    let record = state
        .store
        .set_presence(&user, status, reason.as_deref(), now)
        .await?;
    state.desk.presence_changed(&user, status);
    state.events.publish_presence(PresenceUpdate {
        user: record.user.0.clone(),
        status: record.status,
        reason: record.reason.clone(),
        since: record.since.map(rfc3339),
    });
    Ok(Json(item(&state, record, now)))
}

/// Every employee's presence, with their registered devices and whether they are in a
/// call or in wrap-up now (employees).
#[utoipa::path(get, path = "/presence", tag = "users",
    responses((status = 200, body = List<PresenceItem>), (status = 403, body = ErrorBody)))]
async fn list_presence(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<List<PresenceItem>>> {
    principal.require_employee()?;
    let now = now_ms();
    let items = state
        .store
        .presences()
        .await?
        .into_iter()
        .map(|record| item(&state, record, now))
        .collect();
    // Every employee on one page: a team, not a customer list.
    Ok(Json(List { items, next: None }))
}

/// A queue now: the callers waiting (next served first, with their position) and the
/// members in turn order with their presence and whether they are in a call (admins,
/// and agents who are members of the queue).
#[utoipa::path(get, path = "/queues/{id}/live", tag = "routing",
    responses((status = 200, body = QueueLive), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn queue_live(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<QueueLive>> {
    principal.require_employee()?;
    let queue = state.store.get_queue(&QueueId(id)).await?;
    if !may_watch_queue(principal.is_admin(), principal.user_id(), &queue.members) {
        return Err(ApiError::Forbidden(
            "only admins and the queue's members watch a queue".to_owned(),
        ));
    }
    let now = now_ms();
    let mut presence: HashMap<UserId, Presence> = state
        .store
        .presences()
        .await?
        .into_iter()
        .map(|p| (p.user, p.status))
        .collect();
    let agents = queue
        .members
        .iter()
        .filter_map(|member| {
            // A member without a presence row is no longer an employee.
            let status = presence.remove(member)?;
            Some(LiveAgent {
                user: member.0.clone(),
                status,
                in_call: state.desk.agent(member, now).in_call,
            })
        })
        .collect();
    let waiting = state
        .desk
        .waiting(&queue.id)
        .into_iter()
        .map(LiveWaiting::from)
        .collect();
    Ok(Json(QueueLive { waiting, agents }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(set_presence))
        .routes(routes!(list_presence))
        .routes(routes!(queue_live))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_kept_only_with_a_pause() {
        assert_eq!(
            presence_change("paused", Some("  lunch ")),
            Ok((Presence::Paused, Some("lunch".to_owned())))
        );
        assert_eq!(
            presence_change("available", Some("lunch")),
            Ok((Presence::Available, None))
        );
        assert_eq!(
            presence_change("offline", Some(&"x".repeat(500))),
            Ok((Presence::Offline, None)),
            "a reason that is dropped is not checked"
        );
        assert_eq!(
            presence_change("paused", Some("   ")),
            Ok((Presence::Paused, None))
        );
    }

    #[test]
    fn a_pause_reason_has_at_most_200_characters() {
        let ok = "ä".repeat(200);
        assert_eq!(
            presence_change("paused", Some(&ok)),
            Ok((Presence::Paused, Some(ok.clone())))
        );
        assert_eq!(
            presence_change("paused", Some(&"ä".repeat(201))),
            Err(PresenceInputError::ReasonTooLong(201))
        );
    }

    #[test]
    fn an_unknown_status_names_the_choices() {
        let err = presence_change("busy", None).unwrap_err();
        assert_eq!(err, PresenceInputError::Status("busy".to_owned()));
        let message = err.to_string();
        for choice in Presence::ALL {
            assert!(message.contains(choice.as_str()), "{message}");
        }
    }

    #[test]
    fn a_person_sets_their_own_presence_an_admin_anyones() {
        let (anna, ben) = (UserId("anna".into()), UserId("ben".into()));
        assert!(may_set_presence(false, Some(&anna), &anna));
        assert!(!may_set_presence(false, Some(&anna), &ben));
        assert!(may_set_presence(true, Some(&anna), &ben));
        assert!(may_set_presence(true, None, &ben), "the admin token");
    }

    #[test]
    fn only_admins_and_members_watch_a_queue() {
        let (anna, ben) = (UserId("anna".into()), UserId("ben".into()));
        let members = [anna.clone()];
        assert!(may_watch_queue(false, Some(&anna), &members));
        assert!(!may_watch_queue(false, Some(&ben), &members));
        assert!(!may_watch_queue(false, None, &members));
        assert!(may_watch_queue(true, Some(&ben), &members));
    }
}
