//! `/mailboxes`: connected IMAP mailboxes (E1–E11). The password, and an OAuth2 mailbox's
//! client secret and refresh token, are write-only (A4).

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
use crate::crm::model::{
    MailAuth, MailCheck, MailSecurity, MailboxKind, OAuth2Provider, QueueId, UserId,
};
use crate::mail::LoginError;
use crate::matcher::parse_exception;
use crate::store::{MailboxRecord, NewMailbox, NewOAuth2, OAuth2Settings, SecretUpdate, rfc3339};

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
    /// Write-only: stored for the IMAP login, never returned (A4). Not for `oauth2`.
    pub password: Option<String>,
    /// password (default) | oauth2: an access token instead of a password (Microsoft 365,
    /// Gmail).
    pub auth: Option<String>,
    /// The OAuth2 client of an `oauth2` mailbox; on update, fields not given are kept.
    pub oauth2: Option<OAuth2Input>,
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

/// An OAuth2 client. A provider preset fills in `token_url`, `device_authorization_url`
/// and `scope` not given with it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Input {
    /// microsoft | google | null (own endpoints).
    #[serde(default, deserialize_with = "validate::double_option")]
    pub provider: Option<Option<String>>,
    /// The token endpoint (RFC 6749): https, or http on loopback only.
    pub token_url: Option<String>,
    /// The device authorization endpoint (RFC 8628), for `leadline mailbox authorize`.
    #[serde(default, deserialize_with = "validate::double_option")]
    pub device_authorization_url: Option<Option<String>>,
    pub client_id: Option<String>,
    /// Write-only (A4); null removes it (a public client).
    #[serde(default, deserialize_with = "validate::double_option")]
    pub client_secret: Option<Option<String>>,
    /// Write-only (A4). Usually stored by `leadline mailbox authorize`; null removes it.
    #[serde(default, deserialize_with = "validate::double_option")]
    pub refresh_token: Option<Option<String>>,
    /// Space-separated; must grant IMAP access and a refresh token.
    pub scope: Option<String>,
}

/// An OAuth2 mailbox's client as shown: the secrets only as whether they are set (A4).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OAuth2Client {
    pub provider: Option<String>,
    pub token_url: String,
    pub device_authorization_url: Option<String>,
    pub client_id: String,
    pub scope: String,
    pub client_secret_set: bool,
    /// false: not authorized yet; run `leadline mailbox authorize ID`.
    pub refresh_token_set: bool,
}

impl From<OAuth2Settings> for OAuth2Client {
    fn from(o: OAuth2Settings) -> Self {
        OAuth2Client {
            provider: o.provider.map(|p| p.to_string()),
            token_url: o.token_url,
            device_authorization_url: o.device_authorization_url,
            client_id: o.client_id,
            scope: o.scope,
            client_secret_set: o.client_secret_set,
            refresh_token_set: o.refresh_token_set,
        }
    }
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
    /// password | oauth2.
    pub auth: String,
    /// The OAuth2 client of an `oauth2` mailbox, else null.
    pub oauth2: Option<OAuth2Client>,
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
            auth: m.auth.to_string(),
            oauth2: m.oauth2.map(OAuth2Client::from),
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
pub(super) async fn settings(
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
    let auth = match (&input.auth, current) {
        (Some(a), _) => parse::<MailAuth>("auth", a)?,
        (None, Some(c)) => c.auth,
        (None, None) => MailAuth::Password,
    };
    let (password, password_changed, oauth2) = match auth {
        MailAuth::Password => {
            // Coming from OAuth2 the stored password is empty: a new one is needed.
            let keeps = current.is_some_and(|c| c.auth == MailAuth::Password);
            let (password, changed) = match input.password {
                Some(p) if !p.is_empty() => (p, true),
                Some(_) => {
                    return Err(ApiError::field(
                        "required",
                        "password",
                        "password must not be empty",
                    ));
                }
                None if keeps => (String::new(), false),
                None => {
                    return Err(ApiError::field(
                        "required",
                        "password",
                        "password is required",
                    ));
                }
            };
            if input.oauth2.is_some() {
                return Err(ApiError::field(
                    "invalid_value",
                    "oauth2",
                    "oauth2 is for \"auth\": \"oauth2\"; a password mailbox has no OAuth2 client",
                ));
            }
            (password, changed, None)
        }
        MailAuth::Oauth2 => {
            if input.password.is_some() {
                return Err(ApiError::field(
                    "invalid_value",
                    "password",
                    "an oauth2 mailbox logs in with an access token, not a password: leave \
                     password out",
                ));
            }
            let current = current
                .filter(|c| c.auth == MailAuth::Oauth2)
                .and_then(|c| c.oauth2.as_ref());
            // An OAuth2 mailbox stores no password (the old one is removed).
            (
                String::new(),
                true,
                Some(oauth2_client(input.oauth2, current)?),
            )
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
            auth,
            oauth2,
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

/// Merges the OAuth2 input over the current client; a provider named in the input fills
/// in what the input leaves out.
fn oauth2_client(
    input: Option<OAuth2Input>,
    current: Option<&OAuth2Settings>,
) -> ApiResult<NewOAuth2> {
    let Some(input) = input.or_else(|| current.map(|_| OAuth2Input::default())) else {
        return Err(ApiError::field(
            "required",
            "oauth2",
            "an oauth2 mailbox needs its OAuth2 client: {\"provider\": \"microsoft\" | \
             \"google\", \"client_id\": …} or token_url, client_id and scope",
        ));
    };
    let (provider, preset) = match &input.provider {
        Some(Some(name)) => {
            let provider = parse::<OAuth2Provider>("oauth2.provider", name)?;
            (Some(provider), Some(crate::mail::oauth2::preset(provider)))
        }
        Some(None) => (None, None),
        None => (current.and_then(|c| c.provider), None),
    };
    let token_url = match (&input.token_url, preset, current) {
        (Some(url), _, _) => endpoint_url("oauth2.token_url", url)?,
        (None, Some(preset), _) => preset.token_url.to_owned(),
        (None, None, Some(c)) => c.token_url.clone(),
        (None, None, None) => {
            return Err(ApiError::field(
                "required",
                "oauth2.token_url",
                "oauth2.token_url is required without a provider (microsoft, google)",
            ));
        }
    };
    let device_authorization_url = match (&input.device_authorization_url, preset, current) {
        (Some(Some(url)), _, _) => Some(endpoint_url("oauth2.device_authorization_url", url)?),
        (Some(None), _, _) => None,
        (None, Some(preset), _) => Some(preset.device_authorization_url.to_owned()),
        (None, None, Some(c)) => c.device_authorization_url.clone(),
        (None, None, None) => None,
    };
    let client_id = match (&input.client_id, current) {
        (Some(id), _) => validate::name("oauth2.client_id", id)?,
        (None, Some(c)) => c.client_id.clone(),
        (None, None) => {
            return Err(ApiError::field(
                "required",
                "oauth2.client_id",
                "oauth2.client_id is required: the application (client) id registered with \
                 the provider",
            ));
        }
    };
    let scope = match (&input.scope, preset, current) {
        (Some(scope), _, _) if !scope.trim().is_empty() => scope.trim().to_owned(),
        (Some(_), _, _) => {
            return Err(ApiError::field(
                "required",
                "oauth2.scope",
                "oauth2.scope must not be empty",
            ));
        }
        (None, Some(preset), _) => preset.scope.to_owned(),
        (None, None, Some(c)) => c.scope.clone(),
        (None, None, None) => {
            return Err(ApiError::field(
                "required",
                "oauth2.scope",
                "oauth2.scope is required without a provider (microsoft, google)",
            ));
        }
    };
    Ok(NewOAuth2 {
        provider,
        token_url,
        device_authorization_url,
        client_id,
        scope,
        client_secret: secret("oauth2.client_secret", input.client_secret)?,
        refresh_token: secret("oauth2.refresh_token", input.refresh_token)?,
    })
}

/// A write-only secret: absent keeps it, null removes it, a value replaces it.
fn secret(field: &str, input: Option<Option<String>>) -> ApiResult<SecretUpdate> {
    match input {
        None => Ok(SecretUpdate::Keep),
        Some(None) => Ok(SecretUpdate::Clear),
        Some(Some(value)) if value.trim().is_empty() => Err(ApiError::field(
            "required",
            field,
            format!("{field} must not be empty; null removes it"),
        )),
        Some(Some(value)) => Ok(SecretUpdate::Set(value.trim().to_owned())),
    }
}

/// An OAuth2 endpoint: https, since the client secret and the refresh token are posted to
/// it; plain http only to this machine.
fn endpoint_url(field: &str, value: &str) -> ApiResult<String> {
    let invalid =
        |why: &str| ApiError::field("invalid_url", field, format!("{field}: '{value}' {why}"));
    let url = reqwest::Url::parse(value.trim()).map_err(|_| invalid("is not a URL"))?;
    let Some(host) = url.host_str() else {
        return Err(invalid("has no host"));
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(invalid(
                "must be https: the client secret and the refresh token are sent to it",
            ));
        }
        _ => return Err(invalid("must be an https URL")),
    }
    Ok(url.to_string())
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

/// E10: checks the connection, TLS and the login (for OAuth2, getting the access token
/// first); fetches nothing.
#[utoipa::path(post, path = "/mailboxes/{id}/test", tag = "mail",
    responses((status = 200, body = TestResult), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn test_mailbox(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<TestResult>> {
    let mailbox = visible(&state, &principal, &id).await?;
    state
        .mail_credentials
        .test_login(&mailbox)
        .await
        .map_err(|e| match e {
            LoginError::Imap(e) => ApiError::field(e.code(), "host", e.to_string()),
            LoginError::OAuth2(e) => ApiError::field("login_failed", "oauth2", e.to_string()),
            LoginError::Store(e) => e.into(),
        })?;
    Ok(Json(TestResult { ok: true }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_mailbox, list_mailboxes))
        .routes(routes!(get_mailbox, update_mailbox, delete_mailbox))
        .routes(routes!(test_mailbox))
}
