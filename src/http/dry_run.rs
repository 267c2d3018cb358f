//! `POST /numbers/{id}/dry-run`: what a number's last calls would have done under other
//! settings, through the same intake decision as live calls; writes nothing.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiJson;
use super::numbers::{UpdateNumber, check_references, patched};
use crate::crm::dry_run::{Compared, Effect, Proposal, replay};
use crate::crm::model::NumberId;

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
    let last = body.last.unwrap_or(DEFAULT_LAST);
    if !(1..=MAX_LAST).contains(&last) {
        return Err(ApiError::field(
            "invalid_last",
            "last",
            format!("last must be 1 to {MAX_LAST} calls"),
        ));
    }
    let current = state.store.get_number(&NumberId(id)).await?;
    let recorded_queue = current.settings.queue.clone();
    let proposed = patched(current.settings, &body.settings)?;
    check_references(&state, &proposed, None).await?;
    let calls = state
        .store
        .past_calls(&proposed.id, u32::try_from(last).unwrap_or(1))
        .await?;
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

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(dry_run_number))
}
