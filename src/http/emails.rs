//! `/emails`: the mail store with its links to entities, the raw message and its
//! attachments, and saving a message to the CRM by hand (E12). `/settings/forward`: the forward address (E16).

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
    /// Its place in the message, for `/emails/{id}/attachments/{index}`.
    pub index: usize,
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
    /// Why the intake did what it did: addresses and domains tried, candidates and why,
    /// rules applied, outcome. Null for mail stored before decision records existed.
    pub decision: Option<crate::crm::decision::DecisionRecord>,
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
                .enumerate()
                .map(
                    |(
                        index,
                        AttachmentInfo {
                            name,
                            content_type,
                            size,
                        },
                    )| Attachment {
                        index,
                        name,
                        content_type,
                        size,
                    },
                )
                .collect(),
            size: e.size,
            decision: e.decision,
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

/// One attachment of a message, as sent (`Content-Type` as stored, text in UTF-8), to
/// download: for whoever may read the message (E1, A2); 404 alike for a message they may
/// not read and an index it does not have.
#[utoipa::path(get, path = "/emails/{id}/attachments/{index}", tag = "mail",
    params(("id" = String, Path), ("index" = usize, Path, description = "`index` of the e-mail's `attachments`")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
              (status = 404, body = ErrorBody)))]
async fn get_attachment(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, index)): Path<(String, String)>,
) -> ApiResult<axum::response::Response> {
    let email = readable(&state, &principal, &id).await?;
    let missing = || ApiError::not_found("attachment", format!("{id}/{index}"));
    let position: usize = index.parse().map_err(|_| missing())?;
    let info = email.attachments.get(position).ok_or_else(missing)?;
    let raw = state.store.email_raw(&id).await?;
    // A message may be tens of megabytes: parsed beside the async workers, as the poller
    // does.
    let parsed = tokio::task::spawn_blocking(move || crate::mail::parse(&raw))
        .await
        .map_err(|e| ApiError::Internal(format!("parsing the message: {e}")))?
        .map_err(|e| ApiError::Internal(format!("the stored message does not parse: {e}")))?;
    let attachment = parsed
        .attachments
        .into_iter()
        .nth(position)
        .ok_or_else(missing)?;
    let content_type = download_type(&info.content_type);
    let name = info.name.as_deref().or(attachment.file_name.as_deref());
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition(name, position)),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            // Opened in the browser anyway, a sent HTML file runs nothing and reaches
            // nothing of ours.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; sandbox".to_owned(),
            ),
            (header::CACHE_CONTROL, "private, no-store".to_owned()),
        ],
        attachment.content,
    )
        .into_response())
}

/// The `Content-Type` of a download: the stored type when it is a plain `type/subtype`
/// (text is served as the UTF-8 the parser turned it into), else bytes.
fn download_type(stored: &str) -> String {
    let token = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match stored.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => {
            let mime = stored.to_ascii_lowercase();
            if kind.eq_ignore_ascii_case("text") {
                format!("{mime}; charset=utf-8")
            } else {
                mime
            }
        }
        _ => "application/octet-stream".to_owned(),
    }
}

/// RFC 6266 `Content-Disposition` of a download: the file name as sent, in UTF-8 with the
/// RFC 5987 encoding (`filename*`), after an ASCII stand-in (`filename`) for clients
/// that read only that. Folders in the name and control characters are dropped; a part
/// without a name is `attachment-<index>`.
pub fn disposition(name: Option<&str>, index: usize) -> String {
    // attr-char of RFC 5987: these stay, every other byte is percent-encoded.
    const ATTR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'`')
        .remove(b'|')
        .remove(b'~');
    let base = name
        .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n))
        .map(|n| n.chars().filter(|c| !c.is_control()).collect::<String>())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .unwrap_or_else(|| format!("attachment-{index}"));
    let fallback: String = base
        .chars()
        .map(|c| {
            if c.is_ascii() && !matches!(c, '"' | '\\') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        percent_encoding::utf8_percent_encode(&base, ATTR)
    )
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
        .routes(routes!(get_attachment))
        .routes(routes!(save_email))
        .routes(routes!(forward_address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_is_sent_in_utf8_with_an_ascii_stand_in() {
        assert_eq!(
            disposition(Some("Angebot Müller.pdf"), 0),
            "attachment; filename=\"Angebot M_ller.pdf\"; \
             filename*=UTF-8''Angebot%20M%C3%BCller.pdf"
        );
        assert_eq!(
            disposition(Some("plan.v2_final-1.txt"), 3),
            "attachment; filename=\"plan.v2_final-1.txt\"; filename*=UTF-8''plan.v2_final-1.txt"
        );
    }

    #[test]
    fn quotes_folders_and_control_characters_do_not_reach_the_header() {
        let header = disposition(Some("..\\..\\evil\"\r\nX-Injected: 1.html"), 0);
        assert!(!header.contains(['\r', '\n']), "{header}");
        assert!(
            header.starts_with("attachment; filename=\"evil_X-Injected: 1.html\";"),
            "{header}"
        );
        assert!(
            header.ends_with("filename*=UTF-8''evil%22X-Injected%3A%201.html"),
            "{header}"
        );
        assert!(axum::http::HeaderValue::from_str(&header).is_ok());
        assert_eq!(
            disposition(Some("/tmp/"), 2),
            "attachment; filename=\"attachment-2\"; filename*=UTF-8''attachment-2"
        );
        assert_eq!(
            disposition(None, 1),
            "attachment; filename=\"attachment-1\"; filename*=UTF-8''attachment-1"
        );
    }

    #[test]
    fn the_stored_type_is_served_when_it_is_a_type() {
        assert_eq!(download_type("application/pdf"), "application/pdf");
        assert_eq!(download_type("text/plain"), "text/plain; charset=utf-8");
        assert_eq!(download_type("Image/PNG"), "image/png");
        for odd in ["", "pdf", "text/html\r\nX: 1", "a/b c", "/x"] {
            assert_eq!(download_type(odd), "application/octet-stream", "{odd:?}");
        }
    }
}
