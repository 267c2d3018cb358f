//! `/mailboxes`: connected IMAP mailboxes (E1–E11). The password is write-only (A4).

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
use crate::crm::model::{MailCheck, MailSecurity, MailboxKind, QueueId, UserId};
use crate::matcher::parse_exception;
use crate::store::{MailboxRecord, NewMailbox, rfc3339};

/// A mailbox's settings; on update every field is optional and missing ones are kept.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxInput {
    pub name: Option<String>,
    /// personal | company (E1).
    pub kind: Option<String>,
    /// The employee of a personal mailbox: only they may connect it (E1).
    #[serde(default, deserialize_with = "validate::double_option")]
    pub owner: Option<Option<String>>,
    /// The mailbox's own address (M6); default the username when it is an address.
    pub address: Option<String>,
    pub host: Option<String>,
    /// Default 993 for `tls`, 143 otherwise.
    pub port: Option<u16>,
    /// tls | starttls | none.
    pub security: Option<String>,
    pub username: Option<String>,
    /// Write-only: stored for the IMAP login, never returned (A4).
    pub password: Option<String>,
    /// Folders to process; null = inbox and sent, found by SPECIAL-USE (E4).
    #[serde(default, deserialize_with = "validate::double_option")]
    pub folders: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    pub spam_folder: Option<Option<String>>,
    /// Days back on the first sync (3); null = all mail (E3).
    #[serde(default, deserialize_with = "validate::double_option")]
    pub sync_window_days: Option<Option<u32>>,
    pub crm_link: Option<bool>,
    pub create_leads_incoming: Option<bool>,
    pub create_leads_outgoing: Option<bool>,
    pub vcard_contacts: Option<bool>,
    /// E13: mail from a customer goes to their responsible only if they are in the queue.
    pub route_to_responsible: Option<bool>,
    /// Addresses and domains (`@gmail.com` or `gmail.com`, M5) never taken to the CRM.
    pub blacklist: Option<Vec<String>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    pub queue: Option<Option<String>>,
    /// idle | 2m | 5m | 10m | 1h | 3h | 12h (E6).
    pub check: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Mailbox {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub owner: Option<String>,
    pub address: String,
    pub host: String,
    pub port: u16,
    pub security: String,
    pub username: String,
    pub folders: Option<Vec<String>>,
    pub spam_folder: Option<String>,
    pub sync_window_days: Option<u32>,
    pub crm_link: bool,
    pub create_leads_incoming: bool,
    pub create_leads_outgoing: bool,
    pub vcard_contacts: bool,
    pub route_to_responsible: bool,
    pub blacklist: Vec<String>,
    pub queue: Option<String>,
    pub check: String,
    /// connecting | syncing | idle | error (E10).
    pub state: String,
    pub last_error: Option<String>,
    pub last_sync_at: Option<String>,
    pub created_at: String,
}

impl From<MailboxRecord> for Mailbox {
    fn from(m: MailboxRecord) -> Self {
        Self {
            id: m.id,
            name: m.name,
            kind: m.kind.to_string(),
            owner: m.owner.map(|u| u.0),
            address: m.address,
            host: m.host,
            port: m.port,
            security: m.security.to_string(),
            username: m.username,
            folders: m.folders,
            spam_folder: m.spam_folder,
            sync_window_days: m.sync_window_days,
            crm_link: m.crm_link,
            create_leads_incoming: m.create_leads_incoming,
            create_leads_outgoing: m.create_leads_outgoing,
            vcard_contacts: m.vcard_contacts,
            route_to_responsible: m.route_to_responsible,
            blacklist: m.blacklist,
            queue: m.queue.map(|q| q.0),
            check: m.check.to_string(),
            state: m.state,
            last_error: m.last_error,
            last_sync_at: m.last_sync_at.map(rfc3339),
            created_at: rfc3339(m.created_at),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestResult {
    pub ok: bool,
}

/// E1: who may change a mailbox: its owner for a personal one, admins for a company one.
fn may_manage(principal: &Principal, mailbox: &MailboxRecord) -> bool {
    match mailbox.kind {
        MailboxKind::Personal => principal.user_id() == mailbox.owner.as_ref(),
        MailboxKind::Company => principal.is_admin(),
    }
}

/// Who may see a mailbox's settings: admins, and the owner of a personal one.
fn may_see(principal: &Principal, mailbox: &MailboxRecord) -> bool {
    principal.is_admin() || may_manage(principal, mailbox)
}

fn parse<T: std::str::FromStr>(field: &str, value: &str) -> ApiResult<T>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e: T::Err| ApiError::field("invalid_value", field, e.to_string()))
}

/// Merges the input over `current` (or the defaults) and checks the rules.
async fn settings(
    state: &AppState,
    principal: &Principal,
    input: MailboxInput,
    current: Option<&MailboxRecord>,
) -> ApiResult<(NewMailbox, bool)> {
    let kind = match (&input.kind, current) {
        (Some(kind), None) => parse::<MailboxKind>("kind", kind)?,
        (Some(kind), Some(current)) if parse::<MailboxKind>("kind", kind)? != current.kind => {
            return Err(ApiError::field(
                "immutable",
                "kind",
                "a mailbox cannot change between personal and company; connect it anew",
            ));
        }
        (_, Some(current)) => current.kind,
        (None, None) => MailboxKind::Personal,
    };
    let owner = match (input.owner, current) {
        (Some(owner), _) => owner.map(UserId),
        (None, Some(current)) => current.owner.clone(),
        (None, None) => principal.user_id().cloned(),
    };
    match kind {
        MailboxKind::Personal => {
            // E1: an admin cannot connect someone else's personal mailbox.
            let Some(me) = principal.user_id() else {
                return Err(ApiError::Forbidden(
                    "a personal mailbox is connected by its owner with their own token (E1)".into(),
                ));
            };
            if owner.as_ref() != Some(me) {
                return Err(ApiError::Forbidden(
                    "only the employee can connect their personal mailbox; an admin connects \
                     company mailboxes (E1)"
                        .into(),
                ));
            }
        }
        MailboxKind::Company => {
            principal.require_admin()?;
            if owner.is_some() {
                return Err(ApiError::field(
                    "invalid_value",
                    "owner",
                    "a company mailbox has no owner",
                ));
            }
        }
    }
    let security = match (&input.security, current) {
        (Some(s), _) => parse::<MailSecurity>("security", s)?,
        (None, Some(c)) => c.security,
        (None, None) => MailSecurity::Tls,
    };
    let host = match (&input.host, current) {
        (Some(host), _) => validate::name("host", host)?,
        (None, Some(c)) => c.host.clone(),
        (None, None) => return Err(ApiError::field("required", "host", "host is required")),
    };
    let port = input
        .port
        .or(current.map(|c| c.port))
        .unwrap_or(if security == MailSecurity::Tls {
            993
        } else {
            143
        });
    if port == 0 {
        return Err(ApiError::field(
            "invalid_value",
            "port",
            "port must be 1 to 65535",
        ));
    }
    let username = match (&input.username, current) {
        (Some(u), _) => validate::name("username", u)?,
        (None, Some(c)) => c.username.clone(),
        (None, None) => {
            return Err(ApiError::field(
                "required",
                "username",
                "username is required",
            ));
        }
    };
    let (password, password_changed) = match (input.password, current) {
        (Some(p), _) if !p.is_empty() => (p, true),
        (Some(_), _) => {
            return Err(ApiError::field(
                "required",
                "password",
                "password must not be empty",
            ));
        }
        (None, Some(_)) => (String::new(), false),
        (None, None) => {
            return Err(ApiError::field(
                "required",
                "password",
                "password is required",
            ));
        }
    };
    let address = match (&input.address, current) {
        (Some(a), _) => validate::email("address", a)?,
        (None, Some(c)) if input.username.is_none() => c.address.clone(),
        _ => validate::email("address", &username).map_err(|_| {
            ApiError::field(
                "required",
                "address",
                "the username is not an e-mail address: give the mailbox's address",
            )
        })?,
    };
    let folders = match (input.folders, current) {
        (Some(f), _) => f,
        (None, Some(c)) => c.folders.clone(),
        (None, None) => None,
    };
    if let Some(folders) = &folders
        && (folders.is_empty() || folders.iter().any(|f| f.trim().is_empty()))
    {
        return Err(ApiError::field(
            "invalid_value",
            "folders",
            "folders: list folder names, or null for inbox and sent",
        ));
    }
    let spam_folder = match (input.spam_folder, current) {
        (Some(s), _) => s.filter(|s| !s.trim().is_empty()),
        (None, Some(c)) => c.spam_folder.clone(),
        (None, None) => None,
    };
    // E11: spam delivered into a processed folder would bring every spam into the CRM.
    if let Some(spam) = &spam_folder {
        let processed = folders.clone().unwrap_or_else(|| vec!["INBOX".to_owned()]);
        if processed.iter().any(|f| f.eq_ignore_ascii_case(spam)) {
            return Err(ApiError::field(
                "spam_folder_processed",
                "spam_folder",
                format!(
                    "the spam folder '{spam}' is one of the folders processed: every spam \
                     message would reach the CRM and nothing would be filtered. Let the mail \
                     server file spam into its own folder (e.g. Junk) and give that one (E11)"
                ),
            ));
        }
    }
    let sync_window_days = match (input.sync_window_days, current) {
        (Some(d), _) => d,
        (None, Some(c)) => c.sync_window_days,
        (None, None) => Some(3),
    };
    if sync_window_days == Some(0) {
        return Err(ApiError::field(
            "invalid_value",
            "sync_window_days",
            "sync_window_days: a number of days (3), or null for all mail",
        ));
    }
    let blacklist = match (input.blacklist, current) {
        (Some(list), _) => {
            let mut checked = Vec::with_capacity(list.len());
            for (i, entry) in list.iter().enumerate() {
                let field = format!("blacklist[{i}]");
                let rule = parse_exception(entry, None)
                    .map_err(|e| ApiError::field(e.code(), field.clone(), e.to_string()))?;
                if rule.kind_str() == "phone" {
                    return Err(ApiError::field(
                        "invalid_value",
                        field,
                        "a mailbox blacklist holds e-mail addresses and domains",
                    ));
                }
                checked.push(rule.value());
            }
            checked
        }
        (None, Some(c)) => c.blacklist.clone(),
        (None, None) => Vec::new(),
    };
    let queue = match (input.queue, current) {
        (Some(q), _) => q.map(QueueId),
        (None, Some(c)) => c.queue.clone(),
        (None, None) => None,
    };
    if let Some(queue) = &queue
        && state.store.queue_state(queue).await?.is_none()
    {
        return Err(ApiError::field(
            "invalid_reference",
            "queue",
            format!("queue '{queue}' does not exist"),
        ));
    }
    let check = match (&input.check, current) {
        (Some(c), _) => parse::<MailCheck>("check", c)?,
        (None, Some(c)) => c.check,
        (None, None) => MailCheck::Idle,
    };
    let name = match (&input.name, current) {
        (Some(n), _) => validate::name("name", n)?,
        (None, Some(c)) => c.name.clone(),
        (None, None) => address.clone(),
    };
    let flag =
        |given: Option<bool>, kept: Option<bool>, default: bool| given.or(kept).unwrap_or(default);
    Ok((
        NewMailbox {
            name,
            kind,
            owner,
            address,
            host,
            port,
            security,
            username,
            password,
            folders,
            spam_folder,
            sync_window_days,
            crm_link: flag(input.crm_link, current.map(|c| c.crm_link), true),
            create_leads_incoming: flag(
                input.create_leads_incoming,
                current.map(|c| c.create_leads_incoming),
                true,
            ),
            create_leads_outgoing: flag(
                input.create_leads_outgoing,
                current.map(|c| c.create_leads_outgoing),
                false,
            ),
            vcard_contacts: flag(
                input.vcard_contacts,
                current.map(|c| c.vcard_contacts),
                true,
            ),
            route_to_responsible: flag(
                input.route_to_responsible,
                current.map(|c| c.route_to_responsible),
                false,
            ),
            blacklist,
            queue,
            check,
        },
        password_changed,
    ))
}

/// Connect a mailbox: a personal one by its owner, a company one by an admin (E1).
#[utoipa::path(post, path = "/mailboxes", tag = "mail", request_body = MailboxInput,
    responses((status = 201, body = Mailbox), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_mailbox(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<MailboxInput>,
) -> ApiResult<(StatusCode, Json<Mailbox>)> {
    principal.require_employee()?;
    let (new, _) = settings(&state, &principal, body, None).await?;
    let mailbox = state.store.create_mailbox(&new).await?;
    state.mail_changed.notify_one();
    Ok((StatusCode::CREATED, Json(mailbox.into())))
}

/// The mailboxes the caller may see: admins all, agents their own.
#[utoipa::path(get, path = "/mailboxes", tag = "mail", params(ListQuery),
    responses((status = 200, body = List<Mailbox>)))]
async fn list_mailboxes(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<Mailbox>>> {
    principal.require_employee()?;
    let mut paged = state.store.list_mailboxes(&query.page()?).await?;
    paged.items.retain(|m| may_see(&principal, m));
    Ok(Json(List::from_paged(paged, Mailbox::from)))
}

async fn visible(state: &AppState, principal: &Principal, id: &str) -> ApiResult<MailboxRecord> {
    principal.require_employee()?;
    let mailbox = state.store.get_mailbox(id).await?;
    if !may_see(principal, &mailbox) {
        // Another employee's personal mailbox: its existence is not theirs to know.
        return Err(ApiError::not_found("mailbox", id));
    }
    Ok(mailbox)
}

/// One mailbox with its state and last error (E10).
#[utoipa::path(get, path = "/mailboxes/{id}", tag = "mail",
    responses((status = 200, body = Mailbox), (status = 404, body = ErrorBody)))]
async fn get_mailbox(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Mailbox>> {
    Ok(Json(visible(&state, &principal, &id).await?.into()))
}

/// Change a mailbox's settings (its owner, or an admin for a company mailbox).
#[utoipa::path(patch, path = "/mailboxes/{id}", tag = "mail", request_body = MailboxInput,
    responses((status = 200, body = Mailbox), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_mailbox(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MailboxInput>,
) -> ApiResult<Json<Mailbox>> {
    let current = visible(&state, &principal, &id).await?;
    if !may_manage(&principal, &current) {
        return Err(ApiError::Forbidden(
            "only the owner changes a personal mailbox (E1)".into(),
        ));
    }
    let (new, password_changed) = settings(&state, &principal, body, Some(&current)).await?;
    let mailbox = state
        .store
        .update_mailbox(&id, &new, password_changed)
        .await?;
    state.mail_changed.notify_one();
    Ok(Json(mailbox.into()))
}

/// Disconnect a mailbox: the owner, or an admin (also for a personal one, when the
/// employee leaves). Collected mail and activities stay.
#[utoipa::path(delete, path = "/mailboxes/{id}", tag = "mail",
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_mailbox(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let current = visible(&state, &principal, &id).await?;
    if !may_manage(&principal, &current) && !principal.is_admin() {
        return Err(ApiError::Forbidden("not your mailbox".into()));
    }
    state.store.delete_mailbox(&id).await?;
    state.mail_changed.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// E10: checks the connection, TLS and the login; fetches nothing.
#[utoipa::path(post, path = "/mailboxes/{id}/test", tag = "mail",
    responses((status = 200, body = TestResult), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn test_mailbox(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<TestResult>> {
    let mailbox = visible(&state, &principal, &id).await?;
    let password = state.store.mailbox_password(&id).await?;
    let settings = crate::mail::imap_settings(&mailbox, password);
    crate::mail::imap::test_login(&settings)
        .await
        .map_err(|e| ApiError::field(e.code(), "host", e.to_string()))?;
    Ok(Json(TestResult { ok: true }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_mailbox, list_mailboxes))
        .routes(routes!(get_mailbox, update_mailbox, delete_mailbox))
        .routes(routes!(test_mailbox))
}
