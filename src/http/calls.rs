//! `/calls`: the CTI endpoint (`/calls/events`), the call log (T13) with its filters, and
//! manual creation from the call window (T4).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{Access, fill_page};
use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use super::period::period;
use super::{AppState, List, ListQuery};
use crate::crm::decision::DecisionRecord;
use crate::crm::model::{
    BadEntityRef, CallEventKind, CallOutcome, CrmAction, Direction, EntityKind, EntityRef, UserId,
};
use crate::crm::trust::TrustFlag;
use crate::events::{CallUpdate, EventBus, LiveCalls, RecordUpdate};
use crate::matcher::normalise_phone;
use crate::store::{
    ActivityFilter, ActivityRecord, CallEvent, CallFilter, CallLeg, CallRecord, EventOutcome, Page,
    Store, now_ms, rfc3339,
};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallEventBody {
    /// The PBX's id of the call (SIP Call-ID); events are idempotent per (call_id, event).
    pub call_id: String,
    pub event: CallEventKind,
    pub direction: Direction,
    /// The caller, in any format (national numbers use the number's default country).
    pub from: String,
    /// The called number.
    pub to: String,
    /// User id: who answered (answered) or who dialled (outgoing).
    pub user: Option<String>,
    /// For `ended`: how the call ended (default: answered if it was, else missed).
    pub outcome: Option<CallOutcome>,
    /// RFC 3339 time of the event (default: now).
    pub at: Option<String>,
    /// A forwarded call: the first redirecting number (the number the caller dialled).
    /// When it is one of our numbers, the call follows that number's settings.
    pub diverted_from: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Call {
    pub id: String,
    pub call_id: String,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    /// The customer's number in E.164 (digits if it did not parse).
    pub customer: Option<String>,
    /// Our number (E.164) the call came in on or went out from.
    pub number: Option<String>,
    /// Who dialled an outgoing call.
    pub user: Option<String>,
    pub answered_by: Option<String>,
    pub responsible: Option<String>,
    pub started_at: String,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    pub outcome: Option<CallOutcome>,
    pub duration_s: Option<i64>,
    /// What the call did to the CRM: created | attached | offered | logged.
    pub crm_action: CrmAction,
    pub crm_reason: String,
    /// Entities this call created, `kind:id`.
    pub created: Vec<String>,
    /// User ids in ring order.
    pub route: Vec<String>,
    pub activity: Option<String>,
    /// URL of the recording (`/api/v1/calls/{id}/recording`), when one was made.
    pub recording: Option<String>,
    pub recording_ms: Option<i64>,
    /// The recording is a voicemail message left for a call back.
    pub voicemail: bool,
    /// What the media relay measured, by who sent: packets received and relayed, lost
    /// (from RTP sequence numbers), RFC 3550 jitter in ms; `timed_out` if the media
    /// timeout ended the call. Null when the media did not go through the gateway.
    #[schema(value_type = Option<Object>)]
    pub media: Option<serde_json::Value>,
    /// The call is ringing or talking now (on this gateway process).
    pub live: bool,
    /// The devices the gateway rang, in order, and how each leg ended.
    pub legs: Vec<Leg>,
    /// The queue of the number the call came in on.
    pub queue: Option<String>,
    /// How long the caller waited in the queue, in seconds (the queue answered them and
    /// played its music); null when they never waited.
    pub wait_s: Option<f64>,
    /// Why the call did what it did to the CRM: identifiers tried, candidates and why,
    /// rules applied, outcome. Null for calls logged before decision records existed.
    pub decision: Option<DecisionRecord>,
    /// A forwarded call's first redirecting number (E.164 when it normalises, else as
    /// received); `number` is then that number when it is ours.
    pub diverted_from: Option<String>,
    /// The carrier's verification of the caller and the trust rule that kept the call
    /// out of the CRM (T6).
    pub trust: CallTrust,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallTrust {
    /// `TN-Validation-Passed`, `TN-Validation-Failed`, `No-TN-Validation`, or null when
    /// the carrier sent none.
    pub verstat: Option<String>,
    pub flag: Option<TrustFlag>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Leg {
    pub user: String,
    /// The device's Contact URI.
    pub target: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// ringing | answered | busy | declined | cancelled | no_answer | failed
    pub state: String,
    /// The SIP status that ended the leg.
    pub status: Option<u16>,
}

impl From<CallLeg> for Leg {
    fn from(l: CallLeg) -> Self {
        Self {
            user: l.user.0,
            target: l.target,
            started_at: rfc3339(l.started_at),
            ended_at: l.ended_at.map(rfc3339),
            state: l.state,
            status: l.status,
        }
    }
}

impl Call {
    /// The log row, with the legs of the live call if it is one.
    pub(crate) fn with_live(record: CallRecord, live: &LiveCalls) -> Self {
        let legs = live.legs(&record.call_id);
        let mut call = Call::from(record);
        if let Some(legs) = legs {
            call.live = true;
            call.legs = legs.into_iter().map(Leg::from).collect();
        }
        call
    }
}

impl From<CallRecord> for Call {
    fn from(c: CallRecord) -> Self {
        let duration_s = c.duration_s();
        let recording = c
            .recording
            .as_ref()
            .map(|_| format!("/api/v1/calls/{}/recording", c.id.0));
        Self {
            id: c.id.0,
            call_id: c.call_id,
            direction: c.direction,
            from: c.from,
            to: c.to,
            customer: c.customer,
            number: c.number,
            user: c.user.map(|u| u.0),
            answered_by: c.answered_by.map(|u| u.0),
            responsible: c.responsible.map(|u| u.0),
            started_at: rfc3339(c.started_at),
            answered_at: c.answered_at.map(rfc3339),
            ended_at: c.ended_at.map(rfc3339),
            outcome: c.outcome,
            duration_s,
            crm_action: c.crm_action,
            crm_reason: c.crm_reason,
            created: c.created.iter().map(ToString::to_string).collect(),
            route: c.route.into_iter().map(|u| u.0).collect(),
            activity: c.activity,
            recording,
            recording_ms: c.recording_ms,
            voicemail: c.voicemail,
            media: c.media,
            live: false,
            legs: c.legs.into_iter().map(Leg::from).collect(),
            queue: c.queue.map(|q| q.0),
            wait_s: c.wait_ms.map(|ms| ms as f64 / 1000.0),
            decision: c.decision,
            diverted_from: c.diverted_from,
            trust: CallTrust {
                verstat: c.verstat,
                flag: c.trust_flag,
            },
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MatchItem {
    pub kind: EntityKind,
    pub id: String,
    pub responsible: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallEventAnswer {
    pub call: Call,
    /// Entities created by this call, `kind:id`.
    pub created: Vec<String>,
    /// Known entities with the caller's number, in M8 order.
    pub matches: Vec<MatchItem>,
    /// User ids to ring, in order: the responsible first (T5), then the queue.
    pub route: Vec<String>,
    pub ring_timeout_s: u32,
    /// True when this (call_id, event) was applied before: nothing changed.
    pub repeated: bool,
}

impl From<EventOutcome> for CallEventAnswer {
    fn from(o: EventOutcome) -> Self {
        Self {
            call: o.call.into(),
            created: o.answer.created.iter().map(ToString::to_string).collect(),
            matches: o
                .answer
                .matches
                .into_iter()
                .map(|m| MatchItem {
                    kind: m.entity.kind,
                    id: m.entity.id,
                    responsible: m.responsible.map(|u| u.0),
                })
                .collect(),
            route: o.answer.route.into_iter().map(|u| u.0).collect(),
            ring_timeout_s: o.answer.ring_timeout_s,
            repeated: o.repeated,
        }
    }
}

/// Push a call event (admin or trunk token). `ringing` answers with the ring order.
#[utoipa::path(post, path = "/calls/events", tag = "calls", request_body = CallEventBody,
    responses((status = 200, body = CallEventAnswer), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn post_event(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CallEventBody>,
) -> ApiResult<Json<CallEventAnswer>> {
    if !(principal.is_admin() || matches!(principal, Principal::Trunk(_))) {
        return Err(ApiError::Forbidden(
            "call events are pushed with an admin or a trunk token".to_owned(),
        ));
    }
    let call_id = body.call_id.trim();
    if call_id.is_empty() || call_id.len() > 256 {
        return Err(ApiError::field(
            "invalid_call_id",
            "call_id",
            "call_id must be 1 to 256 characters",
        ));
    }
    for (field, value) in [("from", &body.from), ("to", &body.to)] {
        if value.len() > 256 {
            return Err(ApiError::field(
                "too_long",
                field,
                format!("{field} must be at most 256 characters"),
            ));
        }
    }
    let at = match body.at.as_deref() {
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|e| {
                ApiError::field(
                    "invalid_time",
                    "at",
                    format!(
                        "at: '{text}' is not an RFC 3339 time ({e}), e.g. 2026-11-23T10:00:00Z"
                    ),
                )
            })?
            .timestamp_millis(),
        None => now_ms(),
    };
    if let Some(user) = &body.user {
        // A typo in the user id must not silently lose who answered.
        state
            .store
            .get_user(&UserId(user.clone()))
            .await
            .map_err(|_| {
                ApiError::field(
                    "unknown_user",
                    "user",
                    format!("user '{user}' does not exist"),
                )
            })?;
    }
    let event = CallEvent {
        call_id: call_id.to_owned(),
        event: body.event,
        direction: body.direction,
        from: body.from,
        to: body.to,
        user: body.user.map(UserId),
        outcome: body.outcome,
        at,
        diverted_from: body.diverted_from.filter(|d| !d.trim().is_empty()),
        verstat: None,
    };
    // Only the event that logs the call runs the intake (later ones repeat its answer):
    // whether this one does is read only when a webhook follows what the intake writes.
    let opens = intake_followed(&state.store).await
        && state.store.call_by_call_id(&event.call_id).await?.is_none();
    let outcome = state.store.apply_call_event(&event).await?;
    // A repeat changed nothing and was announced the first time.
    if !outcome.repeated {
        state
            .events
            .publish(pushed_update(&state, &event, &outcome).await);
        if opens {
            announce_intake(&state.store, &state.events, &outcome).await;
        }
    }
    Ok(Json(outcome.into()))
}

/// The webhook events a call's intake may cause.
const INTAKE_EVENTS: [&str; 4] = [
    "lead.created",
    "contact.created",
    "deal.created",
    "activity.created",
];

/// Whether any webhook follows what a call's intake writes.
pub(crate) async fn intake_followed(store: &Store) -> bool {
    for event in INTAKE_EVENTS {
        if crate::webhooks::followed(store, event).await {
            return true;
        }
    }
    false
}

/// Tells this node's webhooks what the intake of a newly logged call wrote (see
/// [`intake_records`]), through the event bus.
pub(crate) async fn announce_intake(store: &Store, events: &EventBus, outcome: &EventOutcome) {
    for record in intake_records(store, outcome).await {
        events.publish_record(record);
    }
}

/// What the intake of a newly logged call wrote, as webhooks are told of it, in order:
/// the entities it created (`lead.created`, ...) and its activity (`activity.created`),
/// as the API shows them. Only what some webhook follows is read. Reads fail only into
/// the log: the call stands.
pub(crate) async fn intake_records(store: &Store, outcome: &EventOutcome) -> Vec<RecordUpdate> {
    let call = &outcome.call;
    let mut records = Vec::new();
    for entity in &call.created {
        let Some(event) = crate::webhooks::created_event(entity.kind) else {
            continue;
        };
        if !crate::webhooks::followed(store, event).await {
            continue;
        }
        let record = match store.get_entity(entity).await {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(error = %e, event, %entity, "webhooks: cannot read a new entity");
                continue;
            }
        };
        let responsible = record.responsible.clone();
        match serde_json::to_value(super::entities::Entity::from(record)) {
            Ok(data) => records.push(RecordUpdate::on_entities(event, data, vec![responsible])),
            Err(e) => tracing::error!(error = %e, event, "an entity as JSON for webhooks"),
        }
    }
    let Some(activity) = &call.activity else {
        return records;
    };
    if !crate::webhooks::followed(store, "activity.created").await {
        return records;
    }
    let on = outcome
        .answer
        .shown_entity()
        .or_else(|| call.created.first().cloned());
    match call_activity(store, on, activity).await {
        Ok(Some(record)) => {
            let responsibles = match store.entity_responsibles(&record.entities).await {
                Ok(map) => record
                    .entities
                    .iter()
                    .map(|e| map.get(e).cloned().flatten())
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, %activity, "webhooks: cannot read an activity's entities");
                    return records;
                }
            };
            match serde_json::to_value(super::matching::Activity::from(record)) {
                Ok(data) => records.push(RecordUpdate::on_entities(
                    "activity.created",
                    data,
                    responsibles,
                )),
                Err(e) => tracing::error!(error = %e, "an activity as JSON for webhooks"),
            }
        }
        Ok(None) => {
            tracing::warn!(%activity, "webhooks: a new call's activity is not on its entity's timeline");
        }
        Err(e) => tracing::warn!(error = %e, %activity, "webhooks: cannot read a call's activity"),
    }
    records
}

/// A call's activity, found on the timeline of the entity the call is on: it is the
/// newest there, or close to it.
async fn call_activity(
    store: &Store,
    on: Option<EntityRef>,
    activity: &str,
) -> Result<Option<ActivityRecord>, crate::store::StoreError> {
    let Some(entity) = on else {
        return Ok(None);
    };
    let page = Page {
        limit: 20,
        after: None,
    };
    let filter = ActivityFilter {
        entity: Some(entity),
        ..ActivityFilter::default()
    };
    Ok(store
        .list_activities(&filter, &page)
        .await?
        .items
        .into_iter()
        .find(|a| a.id == activity))
}

/// The call window's view of a pushed event (SSE and webhooks), as the B2BUA gives it for
/// its own calls. The PBX rings whom it chooses; `ringing` is the ring order we answered
/// it with.
async fn pushed_update(state: &AppState, event: &CallEvent, outcome: &EventOutcome) -> CallUpdate {
    let call = &outcome.call;
    let entity = outcome.answer.shown_entity();
    let summary = match &entity {
        // One indexed row, not the whole entity: this runs for every pushed event. A
        // failed look-up only leaves the name out; the event is announced all the same.
        Some(entity) => state.store.entity_summary(entity).await.ok().flatten(),
        None => None,
    };
    let responsible = summary
        .as_ref()
        .and_then(|(_, responsible)| responsible.clone())
        .or_else(|| {
            outcome
                .answer
                .matches
                .first()
                .and_then(|m| m.responsible.clone())
        });
    CallUpdate {
        event: event.event.as_str().to_owned(),
        call: Some(call.id.to_string()),
        call_id: call.call_id.clone(),
        direction: call.direction.to_string(),
        customer: call
            .customer
            .clone()
            .unwrap_or_else(|| match call.direction {
                Direction::Incoming => call.from.clone(),
                Direction::Outgoing => call.to.clone(),
            }),
        number: call.number.clone().unwrap_or_default(),
        entity: entity.map(|e| e.to_string()),
        name: summary.map(|(name, _)| name),
        responsible: responsible.map(|u| u.0),
        ringing: match event.event {
            CallEventKind::Ringing => outcome
                .answer
                .route
                .iter()
                .map(ToString::to_string)
                .collect(),
            _ => Vec::new(),
        },
        answered_by: match event.event {
            CallEventKind::Answered => call.answered_by.as_ref().map(ToString::to_string),
            _ => None,
        },
        outcome: match event.event {
            CallEventKind::Ended => call.outcome.map(|o| o.to_string()),
            _ => None,
        },
        at: rfc3339(event.at),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct CallQuery {
    /// Only calls of this user id (admins; agents always see their own).
    pub user: Option<String>,
    /// `true`: only the caller's own calls (they placed or answered it, it rang them, or
    /// the customer is theirs), admins included.
    pub mine: Option<bool>,
    /// `answered`, `missed`, `busy`, `failed` or `cancelled`.
    pub outcome: Option<String>,
    /// `true`: `outcome=missed`; `false`: every call but the missed ones.
    pub missed: Option<bool>,
    /// Calls on this number of ours, in any format (national with the account's country).
    pub number: Option<String>,
    /// Calls started at or after: RFC 3339, or a day `YYYY-MM-DD` (UTC, from its start).
    pub from: Option<String>,
    /// Calls started at or before: RFC 3339, or a day `YYYY-MM-DD` (UTC, through its end).
    pub to: Option<String>,
    /// Calls on this entity, `kind:id` (`lead:0190…`).
    pub entity: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The filters of `?mine=&outcome=&missed=&number=&from=&to=&entity=` (all but access),
/// checked; errors name the field.
async fn call_filter(
    state: &AppState,
    access: &Access,
    query: &CallQuery,
) -> ApiResult<CallFilter> {
    let mine = match query.mine {
        Some(true) => Some(access.me().cloned().ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                Some("mine".to_owned()),
                "mine: the bootstrap admin token belongs to no employee; use an employee's token",
            )
        })?),
        _ => None,
    };
    let outcome = query
        .outcome
        .as_deref()
        .map(|o| {
            o.parse::<CallOutcome>().map_err(|e| {
                ApiError::bad_request("invalid_query", Some("outcome".into()), e.to_string())
            })
        })
        .transpose()?;
    let outcome = match (outcome, query.missed) {
        (Some(o), Some(missed)) if (o == CallOutcome::Missed) != missed => {
            return Err(ApiError::bad_request(
                "invalid_query",
                Some("missed".to_owned()),
                format!("missed={missed} contradicts outcome={o}"),
            ));
        }
        (Some(o), _) => Some((o, true)),
        (None, Some(missed)) => Some((CallOutcome::Missed, missed)),
        (None, None) => None,
    };
    let number = match &query.number {
        Some(raw) => {
            let country = state.store.crm_settings().await?.default_country;
            Some(
                normalise_phone(raw, Some(country))
                    .map_err(|e| {
                        ApiError::bad_request("invalid_query", Some("number".into()), e.to_string())
                    })?
                    .as_str()
                    .to_owned(),
            )
        }
        None => None,
    };
    let period = period(query.from.as_deref(), query.to.as_deref())?;
    let entity = match &query.entity {
        Some(text) => {
            let entity: EntityRef = text.parse().map_err(|e: BadEntityRef| {
                ApiError::bad_request("invalid_query", Some("entity".into()), e.to_string())
            })?;
            // A hidden entity's calls are as absent as a missing entity's.
            access.see_entity(state, &entity).await?;
            Some(entity)
        }
        None => None,
    };
    Ok(CallFilter {
        user: query.user.clone().map(UserId),
        mine,
        customer: None,
        outcome,
        number,
        started_from: period.start,
        started_before: period.end,
        entity,
        ..visible_filter(access)
    })
}

/// The call log, newest first. Agents see the calls that concern them (they rang them,
/// they placed or answered them, or the customer is theirs) and those on entities they
/// may see (A2); the filters narrow that further.
#[utoipa::path(get, path = "/calls", tag = "calls", params(CallQuery),
    responses((status = 200, body = List<Call>), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn list_calls(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<CallQuery>,
) -> ApiResult<Json<List<Call>>> {
    let access = Access::of(&state, &principal).await?;
    let page = ListQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .page()?;
    let filter = call_filter(&state, &access, &query).await?;
    let paged = fill_page(
        &page,
        |c: &CallRecord| c.id.to_string(),
        |p| {
            let (state, filter) = (&state, &filter);
            async move { Ok(state.store.list_calls(filter, &p).await?) }
        },
        |calls| {
            let (state, access) = (&state, &access);
            async move { access.visible_calls(state, calls).await }
        },
    )
    .await?;
    Ok(Json(List::from_paged(paged, |c| {
        Call::with_live(c, &state.live)
    })))
}

/// The call log's filter for what `access` may see: the statistics count through it too,
/// so they never reach further than the log.
pub(super) fn visible_filter(access: &Access) -> CallFilter {
    CallFilter {
        // At `all` every call is visible; below, the query already leaves out what cannot
        // be, so pages fill without scanning the whole log.
        visible_to: access.list_scope().filter(|_| !access.sees_all_entities()),
        ..CallFilter::default()
    }
}

/// One call of the log.
#[utoipa::path(get, path = "/calls/{id}", tag = "calls",
    responses((status = 200, body = Call), (status = 404, body = ErrorBody)))]
async fn get_call(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Call>> {
    let access = Access::of(&state, &principal).await?;
    let call = access.see_call(&state, &id).await?;
    Ok(Json(Call::with_live(call, &state.live)))
}

/// A call's recording or voicemail message as WAV: for admins, the agents on the call,
/// the responsible person, and whoever may see every entity the call is on (A2).
#[utoipa::path(get, path = "/calls/{id}/recording", tag = "calls",
    responses((status = 200, content_type = "audio/wav", body = Vec<u8>),
              (status = 404, body = ErrorBody)))]
async fn get_recording(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::response::Response> {
    let access = Access::of(&state, &principal).await?;
    let call = state.store.get_call(&id).await?;
    // A phone that only rang does not make its owner a listener: they may see the call
    // in the log, but hear it only if the customer is theirs to see.
    let hears = access.is_admin()
        || on_the_call(&call, access.me())
        || access
            .activity_visible(
                &state,
                state
                    .store
                    .call_entities(&[call.id.to_string()])
                    .await?
                    .get(call.id.as_str())
                    .map_or(&[][..], Vec::as_slice),
            )
            .await?;
    if !hears {
        // Whether the call exists is not the business of someone who may not hear it.
        return Err(ApiError::not_found("call", id));
    }
    let Some(file) = call
        .recording
        .filter(|f| !f.contains(['/', '\\']) && !f.starts_with('.'))
    else {
        return Err(ApiError::not_found("recording", id));
    };
    let path = state
        .data_dir
        .join(crate::sip::b2bua::RECORDINGS_DIR)
        .join(&file);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found("recording", id));
        }
        Err(err) => {
            return Err(ApiError::Internal(format!(
                "cannot read the recording: {err}"
            )));
        }
    };
    Ok(axum::response::IntoResponse::into_response((
        [
            (axum::http::header::CONTENT_TYPE, "audio/wav".to_owned()),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"call-{id}.wav\""),
            ),
        ],
        bytes,
    )))
}

/// Who may hear a call: whoever answered or placed it, a phone it rang that took it
/// over by transfer, and the responsible person.
fn on_the_call(call: &CallRecord, user: Option<&UserId>) -> bool {
    let Some(user) = user else { return false };
    [&call.user, &call.answered_by, &call.responsible]
        .iter()
        .any(|u| u.as_ref() == Some(user))
        || call.legs.iter().any(|leg| {
            &leg.user == user && matches!(leg.state.as_str(), "answered" | "transferred")
        })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEntityFromCall {
    /// `lead` or `contact`.
    pub kind: EntityKind,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedFromCall {
    pub call: Call,
    /// `kind:id` of the new entity.
    pub created: String,
}

/// T4: create a lead or contact from a call on a number with manual lead creation.
#[utoipa::path(post, path = "/calls/{id}/create-entity", tag = "calls",
    request_body = CreateEntityFromCall,
    responses((status = 201, body = CreatedFromCall), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_entity(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CreateEntityFromCall>,
) -> ApiResult<(StatusCode, Json<CreatedFromCall>)> {
    if !matches!(body.kind, EntityKind::Lead | EntityKind::Contact) {
        return Err(ApiError::field(
            "invalid_kind",
            "kind",
            "the call window creates a lead or a contact",
        ));
    }
    Access::of(&state, &principal)
        .await?
        .see_call(&state, &id)
        .await?;
    // The agent who creates it becomes responsible; an admin's creation follows the queue.
    let responsible = principal.user_id().cloned();
    let (call, entity) = state
        .store
        .create_entity_for_call(&id, body.kind, responsible)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedFromCall {
            call: call.into(),
            created: entity.to_string(),
        }),
    ))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_event))
        .routes(routes!(list_calls))
        .routes(routes!(get_call))
        .routes(routes!(get_recording))
        .routes(routes!(create_entity))
}
