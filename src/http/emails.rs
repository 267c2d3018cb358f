//! `/emails`: the mail store with its links to entities, the raw message, and saving a
//! message to the CRM by hand (E12). `/settings/forward`: the forward address (E16).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{Access, fill_page};
use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiQuery;
use super::{AppState, List, ListQuery};
use crate::crm::model::EntityRef;
use crate::store::{AttachmentInfo, EmailFilter, EmailRecord, StoreError, rfc3339};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EmailQuery {
    pub mailbox: Option<String>,
    /// `kind:id`, e.g. `lead:0190…`.
    pub entity: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Attachment {
    pub name: Option<String>,
    pub content_type: String,
    pub size: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Email {
    pub id: String,
    /// Null for mail that came to the forward address (E16).
    pub mailbox: Option<String>,
    pub folder: Option<String>,
    pub message_id: Option<String>,
    pub direction: String,
    pub from: String,
    pub from_name: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    /// E15: when the server received it, when it entered the CRM, when its activity
    /// was completed.
    pub received_at: String,
    pub ingested_at: String,
    pub completed_at: Option<String>,
    pub seen: bool,
    /// Every entity the message's activity is shown on, `kind:id`.
    pub entities: Vec<String>,
    pub activity: Option<String>,
    /// created | attached | logged: what the intake did, and why.
    pub crm_action: String,
    pub crm_reason: String,
    pub attachments: Vec<Attachment>,
    pub size: u64,
}

impl From<EmailRecord> for Email {
    fn from(e: EmailRecord) -> Self {
        Self {
            id: e.id,
            mailbox: e.mailbox,
            folder: e.folder,
            message_id: e.message_id,
            direction: e.direction.to_string(),
            from: e.from,
            from_name: e.from_name,
            to: e.to,
            cc: e.cc,
            subject: e.subject,
            received_at: rfc3339(e.received_at),
            ingested_at: rfc3339(e.ingested_at),
            completed_at: e.completed_at.map(rfc3339),
            seen: e.seen,
            entities: e.entities.iter().map(ToString::to_string).collect(),
            activity: e.activity,
            crm_action: e.crm_action,
            crm_reason: e.crm_reason,
            attachments: e
                .attachments
                .into_iter()
                .map(
                    |AttachmentInfo {
                         name,
                         content_type,
                         size,
                     }| Attachment {
                        name,
                        content_type,
                        size,
                    },
                )
                .collect(),
            size: e.size,
        }
    }
}

/// E1: an employee's personal mailbox is theirs; admins do not read its mail unless
/// it reached the CRM (then it is CRM history, shown on the entities).
/// The mail store, newest first; `?mailbox=` and `?entity=kind:id` filter.
#[utoipa::path(get, path = "/emails", tag = "mail", params(EmailQuery),
    responses((status = 200, body = List<Email>), (status = 400, body = ErrorBody)))]
async fn list_emails(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<EmailQuery>,
) -> ApiResult<Json<List<Email>>> {
    let access = Access::of(&state, &principal).await?;
    let entity = query
        .entity
        .as_deref()
        .map(|e| {
            e.parse::<EntityRef>()
                .map_err(|err: crate::crm::model::BadEntityRef| {
                    ApiError::bad_request("invalid_query", Some("entity".into()), err.to_string())
                })
        })
        .transpose()?;
    let page = ListQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .page()?;
    if let Some(entity) = &entity {
        // A hidden entity's mail is as absent as a missing entity's.
        access.see_entity(&state, entity).await?;
    }
    let filter = EmailFilter {
        mailbox: query.mailbox,
        entity,
        visible_to: access.list_scope(),
    };
    let paged = fill_page(
        &page,
        |e: &EmailRecord| e.id.clone(),
        |p| {
            let (state, filter) = (&state, &filter);
            async move { Ok(state.store.list_emails(filter, &p).await?) }
        },
        |emails: Vec<EmailRecord>| {
            let (state, access) = (&state, &access);
            async move {
                let mut mailboxes = HashMap::new();
                let mut kept = Vec::with_capacity(emails.len());
                for email in emails {
                    if access.may_read_email(state, &email, &mut mailboxes).await? {
                        kept.push(email);
                    }
                }
                Ok(kept)
            }
        },
    )
    .await?;
    Ok(Json(List::from_paged(paged, Email::from)))
}

async fn readable(state: &AppState, principal: &Principal, id: &str) -> ApiResult<EmailRecord> {
    let access = Access::of(state, principal).await?;
    let email = state.store.get_email(id).await?;
    if !access
        .may_read_email(state, &email, &mut HashMap::new())
        .await?
    {
        return Err(ApiError::not_found("email", id));
    }
    Ok(email)
}

/// One message.
#[utoipa::path(get, path = "/emails/{id}", tag = "mail",
    responses((status = 200, body = Email), (status = 404, body = ErrorBody)))]
async fn get_email(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Email>> {
    Ok(Json(readable(&state, &principal, &id).await?.into()))
}

/// The message as received (`message/rfc822`), attachments included.
#[utoipa::path(get, path = "/emails/{id}/raw", tag = "mail",
    responses((status = 200, content_type = "message/rfc822"), (status = 404, body = ErrorBody)))]
async fn get_raw(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    readable(&state, &principal, &id).await?;
    let raw = state.store.email_raw(&id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "message/rfc822"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"message.eml\"",
            ),
        ],
        raw,
    ))
}

/// E12: saves a message to the CRM by hand; 422 `employee_only` when only employees
/// are on it.
#[utoipa::path(post, path = "/emails/{id}/save", tag = "mail",
    responses((status = 200, body = Email), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn save_email(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Email>> {
    readable(&state, &principal, &id).await?;
    match state.store.save_email(&id).await {
        Ok(email) => Ok(Json(email.into())),
        Err(StoreError::Conflict {
            code: "employee_only",
            message,
        }) => Err(ApiError::field("employee_only", "id", message)),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ForwardAddress {
    /// `crm-<secret>@<domain>`: forward or BCC customer mail here (E16).
    pub address: String,
}

/// E16: the account's secret forward/BCC address (admin).
#[utoipa::path(get, path = "/settings/forward", tag = "mail",
    responses((status = 200, body = ForwardAddress), (status = 403, body = ErrorBody)))]
async fn forward_address(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<ForwardAddress>> {
    principal.require_admin()?;
    let address = state.store.forward_address(&state.mail_domain).await?;
    Ok(Json(ForwardAddress { address }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_emails))
        .routes(routes!(get_email))
        .routes(routes!(get_raw))
        .routes(routes!(save_email))
        .routes(routes!(forward_address))
}
