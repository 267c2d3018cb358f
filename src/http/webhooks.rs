//! `/webhooks`: signed HTTP callbacks for call events, owned by the employee who created
//! them. Admins see every webhook, agents their own; someone else's answers 404 as if it
//! did not exist. The secret is shown once, in the answer that created it (A4). What a
//! webhook is told is decided in `crate::webhooks`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use super::{AppState, List, ListQuery};
use crate::crm::model::WebhookId;
use crate::store::{NewWebhook, WebhookRecord, rfc3339};
use crate::webhooks;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `https://…` (or `http://…`) receiver; no credentials in it.
    pub url: String,
    /// `call.ringing`, `call.answered`, `call.ended`, `lead.created`, `contact.created`,
    /// `deal.created`, `entity.updated`, `email.ingested`, `activity.created`.
    pub events: Vec<String>,
    /// HMAC key of `X-Leadline-Signature` (16–256 characters); left out or null: one is
    /// generated and returned once.
    #[serde(default)]
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: String,
    /// The employee it belongs to; null for one created with the bootstrap admin token.
    pub owner: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
    /// The last delivery the receiver answered 2xx.
    pub last_delivery_at: Option<String>,
    /// Why the last failed delivery failed (after its retries).
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

impl From<WebhookRecord> for Webhook {
    fn from(w: WebhookRecord) -> Self {
        Self {
            id: w.id.0,
            owner: w.owner.map(|u| u.0),
            url: w.url,
            events: w.events,
            created_at: rfc3339(w.created_at),
            last_delivery_at: w.last_delivery_at.map(rfc3339),
            last_error: w.last_error,
            last_error_at: w.last_error_at.map(rfc3339),
        }
    }
}

/// The answer to a creation: the webhook and, this once, its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// Shown once: keep it to check `X-Leadline-Signature`.
    pub secret: String,
}

impl From<webhooks::Error> for ApiError {
    fn from(e: webhooks::Error) -> Self {
        ApiError::field(e.code(), e.field(), e.to_string())
    }
}

/// Register a webhook (any employee; it is theirs). Deliveries are `POST`s of
/// `{"event": "call.ringing", "data": <CallUpdate>}` with `X-Leadline-Signature:
/// sha256=<hex HMAC-SHA256 of the body>`, carrying only the calls the owner may see.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn create_webhook(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    principal.require_employee()?;
    let url = webhooks::parse_url(&body.url, state.webhook_private_targets)?;
    let events = webhooks::parse_events(&body.events)?;
    let secret = webhooks::secret_or_generated(body.secret.as_deref())?;
    let record = state
        .store
        .create_webhook(NewWebhook {
            owner: principal.user_id().cloned(),
            url: url.to_string(),
            events,
            secret: secret.clone(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            webhook: record.into(),
            secret,
        }),
    ))
}

/// Webhooks: all for admins, their own for agents.
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", params(ListQuery),
    responses((status = 200, body = List<Webhook>), (status = 403, body = ErrorBody)))]
async fn list_webhooks(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<Webhook>>> {
    principal.require_employee()?;
    let owner = if principal.is_admin() {
        None
    } else {
        principal.user_id()
    };
    let paged = state.store.list_webhooks(owner, &query.page()?).await?;
    Ok(Json(List::from_paged(paged, Webhook::from)))
}

/// One webhook (its owner or an admin).
#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks",
    responses((status = 200, body = Webhook), (status = 404, body = ErrorBody)))]
async fn get_webhook(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Webhook>> {
    Ok(Json(visible(&state, &principal, id).await?.into()))
}

/// Delete a webhook (its owner or an admin); deliveries still queued for it are dropped.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks",
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_webhook(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let hook = visible(&state, &principal, id).await?;
    state.store.delete_webhook(&hook.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The webhook if the caller may see it; someone else's is 404, like a missing one.
async fn visible(state: &AppState, principal: &Principal, id: String) -> ApiResult<WebhookRecord> {
    principal.require_employee()?;
    let hook = state.store.get_webhook(&WebhookId(id.clone())).await?;
    if principal.is_admin() || (hook.owner.is_some() && hook.owner.as_ref() == principal.user_id())
    {
        Ok(hook)
    } else {
        Err(ApiError::not_found("webhook", id))
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, delete_webhook))
}
