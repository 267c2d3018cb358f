//! `POST /numbers/{id}/dry-run` and `POST /mailboxes/{id}/dry-run`: what a number's last
//! calls or a mailbox's last messages would have done under other settings, through the
//! same intake decisions as live calls and mail; writes nothing.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiJson;
use super::mailboxes::{MailboxInput, settings as mailbox_settings};
use super::numbers::{UpdateNumber, check_references, patched};
use crate::crm::dry_run::{Compared, Effect, Proposal, replay};
use crate::crm::mail::{MailboxPolicy, blacklist};
use crate::crm::mail_dry_run::{MailCompared, MailEffect, MailProposal};
use crate::crm::model::{MailboxKind, NumberId, Role};

/// The last calls a dry-run looks at, by default and at most.
const DEFAULT_LAST: i64 = 100;
const MAX_LAST: i64 = 1000;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunBody {
    /// Any fields of `PATCH /numbers/{id}`, applied to the number's settings for the
    /// run only.
    #[serde(default)]
    pub settings: UpdateNumber,
    /// How many of the number's last incoming calls to replay: 1 to 1000 (default 100).
    pub last: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DryRun {
    /// Oldest call first.
    pub items: Vec<DryRunItem>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DryRunItem {
    /// The call log id.
    pub call: String,
    /// What the call log recorded: the route and the entities created (`kind:id`).
    pub actual: DryRunEffect,
    /// What the proposed settings would do: the route and the kinds that would be
    /// created (`lead`, `contact`, `company`, `deal`).
    pub proposed: DryRunEffect,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DryRunEffect {
    /// User ids in ring order.
    pub route: Vec<String>,
    pub created: Vec<String>,
}

impl From<Effect> for DryRunEffect {
    fn from(e: Effect) -> Self {
        Self {
            route: e.route.into_iter().map(|u| u.0).collect(),
            created: e.created,
        }
    }
}

impl From<Compared> for DryRunItem {
    fn from(c: Compared) -> Self {
        Self {
            call: c.call,
            actual: c.actual.into(),
            proposed: c.proposed.into(),
        }
    }
}

/// Replay the number's last incoming calls with other settings (admin). The customers
/// are matched as the database knows them now, without what those calls themselves
/// created; nothing is written.
#[utoipa::path(post, path = "/numbers/{id}/dry-run", tag = "routing", request_body = DryRunBody,
    responses((status = 200, body = DryRun), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn dry_run_number(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DryRunBody>,
) -> ApiResult<Json<DryRun>> {
    principal.require_admin()?;
    let last = checked_last(body.last, "calls")?;
    let current = state.store.get_number(&NumberId(id)).await?;
    let recorded_queue = current.settings.queue.clone();
    let proposed = patched(current.settings, &body.settings)?;
    check_references(&state, &proposed, None).await?;
    let calls = state.store.past_calls(&proposed.id, last).await?;
    let crm = state.store.crm_settings().await?;
    let pipelines = state.store.pipeline_entries().await?;
    let queue = match &proposed.queue {
        Some(queue) => state.store.queue_state(queue).await?,
        None => None,
    };
    let items = replay(
        &calls,
        Proposal {
            number: &proposed,
            crm: &crm,
            pipelines: &pipelines,
        },
        queue,
        recorded_queue.as_ref(),
    );
    Ok(Json(DryRun {
        items: items.into_iter().map(DryRunItem::from).collect(),
    }))
}

/// `last`: 1 to 1000, 100 when absent.
fn checked_last(last: Option<i64>, what: &str) -> ApiResult<u32> {
    let last = last.unwrap_or(DEFAULT_LAST);
    if !(1..=MAX_LAST).contains(&last) {
        return Err(ApiError::field(
            "invalid_last",
            "last",
            format!("last must be 1 to {MAX_LAST} {what}"),
        ));
    }
    Ok(u32::try_from(last).unwrap_or(1))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxDryRunBody {
    /// Any fields of `PATCH /mailboxes/{id}`, applied to the mailbox's settings for the
    /// run only.
    #[serde(default)]
    pub settings: MailboxInput,
    /// How many of the mailbox's last stored messages to replay: 1 to 1000 (default 100).
    pub last: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MailboxDryRun {
    /// Oldest (first collected) message first.
    pub items: Vec<MailboxDryRunItem>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MailboxDryRunItem {
    /// The e-mail's id in the mail store.
    pub email: String,
    /// What the intake recorded: the entities created (`kind:id`) and whether the
    /// message has an activity.
    pub actual: MailboxDryRunEffect,
    /// What the proposed settings would do: the kinds that would be created (`lead`,
    /// `contact`, `company`, `deal`) and whether the message would get an activity.
    pub proposed: MailboxDryRunEffect,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MailboxDryRunEffect {
    pub created: Vec<String>,
    pub activity: bool,
}

impl From<MailEffect> for MailboxDryRunEffect {
    fn from(e: MailEffect) -> Self {
        Self {
            created: e.created,
            activity: e.activity,
        }
    }
}

impl From<MailCompared> for MailboxDryRunItem {
    fn from(c: MailCompared) -> Self {
        Self {
            email: c.email,
            actual: c.actual.into(),
            proposed: c.proposed.into(),
        }
    }
}

/// Replay the mailbox's last stored messages with other settings (admin), through the
/// mail intake's own decision. The customers are matched as the database knows them
/// now, without what those messages themselves created; nothing is written.
#[utoipa::path(post, path = "/mailboxes/{id}/dry-run", tag = "mail",
    request_body = MailboxDryRunBody,
    responses((status = 200, body = MailboxDryRun), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn dry_run_mailbox(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MailboxDryRunBody>,
) -> ApiResult<Json<MailboxDryRun>> {
    principal.require_admin()?;
    let last = checked_last(body.last, "messages")?;
    let current = state.store.get_mailbox(&id).await?;
    // The settings are checked as the one who may change them would be: an admin for a
    // company mailbox, the owner for a personal one (E1), whose rules an admin's
    // preview must not bend.
    let checker = match (current.kind, &current.owner) {
        (MailboxKind::Personal, Some(owner)) => Principal::User {
            id: owner.clone(),
            role: Role::Agent,
        },
        _ => principal,
    };
    let (proposed, _) = mailbox_settings(&state, &checker, body.settings, Some(&current)).await?;
    let crm = state.store.crm_settings().await?;
    let policy = MailboxPolicy {
        id: current.id.clone(),
        name: proposed.name,
        crm_link: proposed.crm_link,
        create_leads_incoming: proposed.create_leads_incoming,
        create_leads_outgoing: proposed.create_leads_outgoing,
        route_to_responsible: proposed.route_to_responsible,
        queue: proposed.queue,
        owner: proposed.owner,
        new_work_to_owner: false,
        default_country: crm.default_country,
    };
    let blacklist = blacklist(&proposed.blacklist);
    let emails = state.store.past_emails(&current.id, last).await?;
    let pipelines = state.store.pipeline_entries().await?;
    let queue = match &policy.queue {
        Some(queue) => state.store.queue_state(queue).await?,
        None => None,
    };
    let items = crate::crm::mail_dry_run::replay(
        &emails,
        MailProposal {
            mailbox: &policy,
            blacklist: &blacklist,
            crm: &crm,
            pipelines: &pipelines,
        },
        queue,
        current.queue.as_ref(),
    );
    Ok(Json(MailboxDryRun {
        items: items.into_iter().map(MailboxDryRunItem::from).collect(),
    }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dry_run_number))
        .routes(routes!(dry_run_mailbox))
}
