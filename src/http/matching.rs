//! `/match` (the matcher, read-only, with its reason) and `/activities` (timelines, an
//! employee's work, notes).

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{Access, fill_page};
use super::auth::Principal;
use super::calls::MatchItem;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use super::{AppState, List, ListQuery, validate};
use crate::crm::decision::DecisionRecord;
use crate::crm::model::{ActivityKind, Direction, EntityRef};
use crate::matcher::{Identifier, MatchStatus, normalise_phone, parse_email};
use crate::store::{ActivityFilter, ActivityRecord, rfc3339};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct MatchQuery {
    /// A phone number in any format.
    pub phone: Option<String>,
    /// Our number the call arrived on: national numbers are read with its country.
    pub number: Option<String>,
    /// An e-mail address.
    pub email: Option<String>,
    /// The mailbox the e-mail came to: its blacklist applies (E4).
    pub mailbox: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MatchAnswer {
    /// The normalised identifier (E.164, digits, or lowercased e-mail).
    pub identifier: String,
    pub status: MatchStatus,
    pub reason: String,
    /// In M8 order: contacts, companies, leads; most recently active first.
    pub matches: Vec<MatchItem>,
}

/// Run the matcher (M1–M8) without recording anything.
#[utoipa::path(get, path = "/match", tag = "crm", params(MatchQuery),
    responses((status = 200, body = MatchAnswer), (status = 400, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn get_match(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<MatchQuery>,
) -> ApiResult<Json<MatchAnswer>> {
    let access = Access::of(&state, &principal).await?;
    let identifier = match (&query.phone, &query.email) {
        (Some(phone), None) => {
            let crm = state.store.crm_settings().await?;
            let country = match &query.number {
                Some(number) => {
                    let key = normalise_phone(number, Some(crm.default_country)).map_err(|e| {
                        ApiError::bad_request("invalid_query", Some("number".into()), e.to_string())
                    })?;
                    let settings = state
                        .store
                        .number_settings(key.as_str())
                        .await?
                        .ok_or_else(|| {
                            ApiError::field(
                                "unknown_number",
                                "number",
                                format!("{} is not a configured number", key.as_str()),
                            )
                        })?;
                    settings.default_country
                }
                None => crm.default_country,
            };
            let key = normalise_phone(phone, Some(country)).map_err(|e| {
                ApiError::bad_request("invalid_query", Some("phone".into()), e.to_string())
            })?;
            Identifier::Phone(key)
        }
        (None, Some(email)) => Identifier::Email(parse_email(email).map_err(|e| {
            ApiError::bad_request("invalid_query", Some("email".into()), e.to_string())
        })?),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                Some("phone".into()),
                "give exactly one of ?phone= or ?email=",
            ));
        }
    };
    if let (Some(mailbox), Identifier::Email(_)) = (&query.mailbox, &identifier) {
        let mailbox = state.store.get_mailbox(mailbox).await?;
        if crate::crm::mail::blacklist(&mailbox.blacklist)
            .check(&identifier)
            .is_some()
        {
            return Ok(Json(MatchAnswer {
                identifier: identifier.key().to_owned(),
                status: MatchStatus::Excluded,
                reason: format!("on the blacklist of the mailbox {} (E4)", mailbox.name),
                matches: Vec::new(),
            }));
        }
    }
    let outcome = state.store.match_identifier(identifier).await?;
    // The status stays "known" (the number is a customer's, so no new lead), but an agent
    // is shown only the entities they may see, and a reason that neither names nor
    // counts the others.
    let found = outcome.matches.len();
    let visible: Vec<_> = outcome
        .matches
        .into_iter()
        .filter(|c| access.sees(c.responsible.as_ref()))
        .collect();
    let reason = match visible.first() {
        _ if visible.len() == found => outcome.reason,
        Some(first) => format!(
            "matched {} by {}; other matches are not yours to see",
            first.entity, outcome.identifier
        ),
        None => format!(
            "{} belongs to a customer you may not see",
            outcome.identifier
        ),
    };
    Ok(Json(MatchAnswer {
        identifier: outcome.identifier.key().to_owned(),
        status: outcome.status,
        reason,
        matches: visible
            .into_iter()
            .map(|c| MatchItem {
                kind: c.entity.kind,
                id: c.entity.id,
                responsible: c.responsible.map(|u| u.0),
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ActivityQuery {
    /// `kind:id`, e.g. `lead:0190…`: the entity's timeline. Needed unless `mine=true`.
    pub entity: Option<String>,
    /// `true`: only activities the caller is responsible for (their work: call-backs,
    /// voicemails, e-mails to answer), admins included.
    pub mine: Option<bool>,
    /// `false`: only open activities; `true`: only completed ones.
    pub completed: Option<bool>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Activity {
    pub id: String,
    pub kind: ActivityKind,
    pub direction: Direction,
    pub subject: String,
    /// Every entity the activity is shown on, `kind:id`.
    pub entities: Vec<String>,
    /// False for an open task, e.g. "call back" after a missed call (T13).
    pub completed: bool,
    pub responsible: Option<String>,
    /// The call log row (for call activities).
    pub call: Option<String>,
    /// The call's recording or voicemail message (`/api/v1/calls/{id}/recording`), or
    /// null when it has none.
    pub recording: Option<String>,
    /// The stored message (`/api/v1/emails/{id}`) of an e-mail activity.
    pub email: Option<String>,
    /// M8: the entity the matcher chose and why.
    pub matched: Option<String>,
    pub match_reason: Option<String>,
    pub created_at: String,
    pub completed_at: Option<String>,
    /// The employee's note (at most 10,000 characters), or null.
    pub note: Option<String>,
    /// Why the intake made this activity: identifiers tried, candidates, rules,
    /// outcome; null for activities made by hand or before records existed.
    pub decision: Option<DecisionRecord>,
}

impl From<ActivityRecord> for Activity {
    fn from(a: ActivityRecord) -> Self {
        Self {
            id: a.id,
            kind: a.kind,
            direction: a.direction,
            subject: a.subject,
            entities: a.entities.iter().map(ToString::to_string).collect(),
            completed: a.completed,
            responsible: a.responsible.map(|u| u.0),
            recording: a
                .call
                .as_ref()
                .filter(|_| a.has_recording)
                .map(|call| format!("/api/v1/calls/{call}/recording")),
            call: a.call,
            email: a.email,
            matched: a.matched,
            match_reason: a.match_reason,
            created_at: rfc3339(a.created_at),
            completed_at: a.completed_at.map(rfc3339),
            note: a.note,
            decision: a.decision,
        }
    }
}

/// The timeline of one entity (`?entity=`), or the caller's own work (`?mine=true`, with
/// `completed=false` the open part of it: call-backs, voicemails, e-mails to answer),
/// newest first. Either way only activities the caller may see (A2).
#[utoipa::path(get, path = "/activities", tag = "crm", params(ActivityQuery),
    responses((status = 200, body = List<Activity>), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn list_activities(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ActivityQuery>,
) -> ApiResult<Json<List<Activity>>> {
    let access = Access::of(&state, &principal).await?;
    let mine = query.mine == Some(true);
    let entity = match (&query.entity, mine) {
        (Some(text), _) => {
            let entity: EntityRef =
                text.parse().map_err(|e: crate::crm::model::BadEntityRef| {
                    ApiError::bad_request("invalid_query", Some("entity".into()), e.to_string())
                })?;
            // 404 for an entity that does not exist or is hidden, rather than an empty
            // timeline.
            access.see_entity(&state, &entity).await?;
            Some(entity)
        }
        (None, true) => None,
        (None, false) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                Some("entity".into()),
                "give entity=kind:id for an entity's timeline, or mine=true for your own work",
            ));
        }
    };
    let responsible = if mine {
        Some(access.me().cloned().ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                Some("mine".into()),
                "mine: the bootstrap admin token belongs to no employee; use an employee's token",
            )
        })?)
    } else {
        None
    };
    let filter = ActivityFilter {
        entity,
        responsible,
        completed: query.completed,
    };
    let page = ListQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .page()?;
    // A2: an activity also on an entity the caller may not see is left out.
    let paged = fill_page(
        &page,
        |a: &ActivityRecord| a.id.clone(),
        |p| {
            let (state, filter) = (&state, &filter);
            async move { Ok(state.store.list_activities(filter, &p).await?) }
        },
        |items: Vec<ActivityRecord>| {
            let (state, access) = (&state, &access);
            async move { access.keep_visible(state, items, |a| &a.entities).await }
        },
    )
    .await?;
    Ok(Json(List::from_paged(paged, Activity::from)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateActivity {
    /// Complete or reopen; an e-mail's `\Seen` on the server follows (E9).
    pub completed: Option<bool>,
    /// Move the activity (a call or an e-mail) onto exactly these entities, `kind:id`.
    /// A3: needs edit rights on every entity it leaves and joins.
    pub entities: Option<Vec<String>>,
    /// The note, at most 10,000 characters; null (or only white space) removes it.
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    pub note: Option<Option<String>>,
}

/// Complete or reopen an activity (a "call back" task, an e-mail), write its note, or
/// move it to other entities. Needs edit rights on every entity it is on (and, to move,
/// on every entity it joins: A3); an activity the caller may not see answers 404.
#[utoipa::path(patch, path = "/activities/{id}", tag = "crm", request_body = UpdateActivity,
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn update_activity(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateActivity>,
) -> ApiResult<axum::http::StatusCode> {
    let access = Access::of(&state, &principal).await?;
    let current = state.store.activity_links(&id).await?;
    if !access.activity_visible(&state, &current).await? {
        return Err(ApiError::not_found("activity", id));
    }
    let target = match &body.entities {
        None => None,
        Some(list) => {
            let mut target = Vec::with_capacity(list.len());
            for (i, item) in list.iter().enumerate() {
                let entity: EntityRef =
                    item.parse().map_err(|e: crate::crm::model::BadEntityRef| {
                        ApiError::field("invalid_entity", format!("entities[{i}]"), e.to_string())
                    })?;
                // A hidden target is refused exactly like a missing one.
                access
                    .check_reference(&state, &format!("entities[{i}]"), &entity)
                    .await?;
                target.push(entity);
            }
            if target.is_empty() {
                return Err(ApiError::field(
                    "entities_required",
                    "entities",
                    "an activity is always on at least one entity",
                ));
            }
            Some(target)
        }
    };
    let note = body
        .note
        .map(|note| validate::note("note", note))
        .transpose()?;
    if body.completed.is_none() && target.is_none() && note.is_none() {
        return Err(ApiError::field(
            "empty_update",
            "completed",
            "give `completed`, `note`, `entities` or several of them",
        ));
    }
    let joins: &[EntityRef] = target.as_deref().unwrap_or_default();
    if !access.may_move(&state, &current, joins).await? {
        return Err(ApiError::Forbidden(
            "changing or moving this activity needs edit rights on every entity it is on \
             and every entity it goes to (A3)"
                .to_owned(),
        ));
    }
    if let Some(target) = &target {
        state.store.move_activity(&id, target).await?;
    }
    if let Some(note) = &note {
        state.store.set_activity_note(&id, note.as_deref()).await?;
    }
    if let Some(completed) = body.completed {
        state.store.set_activity_done(&id, completed).await?;
    }
    // The pollers push the new state to the server on their next pass.
    state.mail_changed.notify_one();
    Ok(axum::http::StatusCode::NO_CONTENT)
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_match))
        .routes(routes!(list_activities))
        .routes(routes!(update_activity))
}
