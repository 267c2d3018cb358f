//! `/users`: employees (role, e-mail, extension, phones, write-only SIP and console
//! passwords) and their tokens.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{self, Credential, Principal, generate_token, hash_token};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use super::session::password_rules;
use super::validate;
use super::{AppState, List, ListQuery};
use crate::crm::model::{Role, UserId};
use crate::sip::digest::Ha1Pair;
use crate::store::{NewUser, UserPatch, UserRecord, rfc3339};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    pub email: String,
    pub role: Role,
    pub extension: Option<String>,
    #[serde(default)]
    pub phones: Vec<String>,
    /// Write-only: stored as digest HA1 (MD5 and SHA-256), never returned.
    pub sip_password: Option<String>,
    /// Write-only console password (10 to 1024 characters), stored as an argon2id hash.
    pub password: Option<String>,
    /// Digest algorithms the person's phones are offered, most preferred first:
    /// `["sha256", "md5"]`, `["md5", "sha256"]`, `["md5"]` … `null` or left out: the
    /// gateway's `--sip-digest`.
    pub sip_digest: Option<Vec<String>>,
    /// How many calls of ours the person may be in at once before queues stop offering
    /// them more (default 1; a shared phone such as a reception desk may take more).
    pub max_calls: Option<u32>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub name: Option<String>,
    pub email: Option<String>,
    pub role: Option<Role>,
    /// `null` removes the extension.
    #[serde(default, deserialize_with = "validate::double_option")]
    pub extension: Option<Option<String>>,
    pub phones: Option<Vec<String>>,
    pub sip_password: Option<String>,
    /// A new console password (10 to 1024 characters). Ends the person's sessions, except
    /// the one a person setting their own password makes the change with.
    pub password: Option<String>,
    /// `null` goes back to the gateway's digest order.
    #[serde(default, deserialize_with = "validate::double_option")]
    pub sip_digest: Option<Option<Vec<String>>>,
    /// Admin only: how many calls of ours the person may be in at once (1 to 100,000).
    pub max_calls: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub role: Role,
    pub extension: Option<String>,
    /// E.164.
    pub phones: Vec<String>,
    /// Whether a SIP password is set (the password itself is never shown).
    pub sip_password_set: bool,
    /// Whether the person has a console password and so can sign in (the password itself
    /// is never shown).
    pub password_set: bool,
    /// The digest order the person's phones are offered; `null`: the gateway's.
    pub sip_digest: Option<Vec<String>>,
    /// How many calls of ours the person may be in at once before queues stop offering
    /// them more.
    pub max_calls: u32,
    pub created_at: String,
}

impl From<UserRecord> for User {
    fn from(u: UserRecord) -> Self {
        Self {
            id: u.id.0,
            name: u.name,
            email: u.email,
            role: u.role,
            extension: u.extension,
            phones: u.phones,
            sip_password_set: u.has_sip_password,
            password_set: u.has_password,
            sip_digest: u
                .sip_digest
                .map(|order| order.iter().map(|a| a.setting_name().to_owned()).collect()),
            max_calls: u.max_calls,
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewToken {
    /// Shown once; only its hash is stored.
    pub token: String,
}

/// Create an employee (admin).
#[utoipa::path(post, path = "/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = User), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    principal.require_admin()?;
    let country = state.store.crm_settings().await?.default_country;
    let extension = body
        .extension
        .as_deref()
        .map(|e| validate::extension("extension", e))
        .transpose()?;
    let phones = validate::phones("phones", &body.phones, Some(country))?;
    let sip = match body.sip_password.as_deref() {
        Some(password) => {
            let ext = extension.as_deref().ok_or_else(|| {
                ApiError::field(
                    "extension_required",
                    "extension",
                    "a SIP password needs an extension: the softphone registers as sip:<extension>@<domain>",
                )
            })?;
            Some(sip_secret(&state, ext, password)?)
        }
        None => None,
    };
    let sip_digest = body.sip_digest.as_deref().map(digest_order).transpose()?;
    let max_calls = body.max_calls.map(max_calls).transpose()?;
    let name = validate::name("name", &body.name)?;
    let email = validate::email("email", &body.email)?;
    let password_hash = match body.password {
        Some(password) => {
            password_rules(&password)?;
            Some(state.passwords.hash(password).await?)
        }
        None => None,
    };
    let user = state
        .store
        .create_user(NewUser {
            name,
            email,
            role: body.role,
            extension,
            phones,
            sip,
            password_hash,
            sip_digest,
        })
        .await?;
    let user = match max_calls {
        Some(n) => {
            state.store.set_max_calls(&user.id, n).await?;
            state.desk.max_calls_changed(&user.id, n);
            state.store.get_user(&user.id).await?
        }
        None => user,
    };
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// List employees.
#[utoipa::path(get, path = "/users", tag = "users", params(ListQuery),
    responses((status = 200, body = List<User>)))]
async fn list_users(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<User>>> {
    principal.require_employee()?;
    let paged = state.store.list_users(&query.page()?).await?;
    Ok(Json(List::from_paged(paged, User::from)))
}

/// One employee.
#[utoipa::path(get, path = "/users/{id}", tag = "users",
    responses((status = 200, body = User), (status = 404, body = ErrorBody)))]
async fn get_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<User>> {
    principal.require_employee()?;
    Ok(Json(state.store.get_user(&UserId(id)).await?.into()))
}

/// Change an employee (admin; an agent may change their own name, phones, SIP password and
/// console password). A new role or password ends the person's sessions.
#[utoipa::path(patch, path = "/users/{id}", tag = "users", request_body = UpdateUser,
    responses((status = 200, body = User), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> ApiResult<Json<User>> {
    let id = UserId(id);
    let is_self = principal.user_id() == Some(&id);
    if !principal.is_admin() {
        if !is_self {
            return Err(ApiError::admin_only());
        }
        if body.role.is_some()
            || body.email.is_some()
            || body.extension.is_some()
            || body.max_calls.is_some()
        {
            return Err(ApiError::Forbidden(
                "only an admin changes role, e-mail, extension or max_calls".to_owned(),
            ));
        }
    }
    let current = state.store.get_user(&id).await?;
    let country = state.store.crm_settings().await?.default_country;
    let new_max_calls = body.max_calls.map(max_calls).transpose()?;
    let extension = match body.extension {
        Some(Some(e)) => Some(Some(validate::extension("extension", &e)?)),
        Some(None) => Some(None),
        None => None,
    };
    let effective_extension = match &extension {
        Some(e) => e.clone(),
        None => current.extension.clone(),
    };
    let sip = match body.sip_password.as_deref() {
        Some(password) => {
            let ext = effective_extension.as_deref().ok_or_else(|| {
                ApiError::field(
                    "extension_required",
                    "extension",
                    "a SIP password needs an extension",
                )
            })?;
            Some(sip_secret(&state, ext, password)?)
        }
        None => None,
    };
    let password_hash = match body.password {
        Some(password) => {
            password_rules(&password)?;
            Some(state.passwords.hash(password).await?)
        }
        None => None,
    };
    // The session this change is made with, when it is the changed person's own.
    let own_session = match auth::credential(&headers) {
        Ok(Credential::Session { hash }) if is_self => Some(hash),
        _ => None,
    };
    let patch = UserPatch {
        name: body
            .name
            .as_deref()
            .map(|n| validate::name("name", n))
            .transpose()?,
        email: body
            .email
            .as_deref()
            .map(|e| validate::email("email", e))
            .transpose()?,
        role: body.role,
        extension,
        phones: body
            .phones
            .as_deref()
            .map(|p| validate::phones("phones", p, Some(country)))
            .transpose()?,
        sip,
        password_hash,
        sip_digest: match &body.sip_digest {
            Some(Some(order)) => Some(Some(digest_order(order)?)),
            Some(None) => Some(None),
            None => None,
        },
        own_session,
    };
    let mut user = state.store.update_user(&id, patch).await?;
    if let Some(n) = new_max_calls {
        state.store.set_max_calls(&id, n).await?;
        state.desk.max_calls_changed(&id, n);
        user.max_calls = n;
    }
    // A role may have changed: open call windows re-read their rights.
    state.access_changed.send_modify(|v| *v = v.wrapping_add(1));
    Ok(Json(user.into()))
}

/// The most calls one person's phones may be in at once: a shared line (a load test's
/// phone, a reception desk) may take many.
const MAX_CALLS_LIMIT: u32 = 100_000;

/// Checks a `max_calls` value.
fn max_calls(n: u32) -> ApiResult<u32> {
    if (1..=MAX_CALLS_LIMIT).contains(&n) {
        Ok(n)
    } else {
        Err(ApiError::field(
            "invalid_max_calls",
            "max_calls",
            format!("max_calls must be between 1 and {MAX_CALLS_LIMIT}"),
        ))
    }
}

/// Remove an employee (admin).
#[utoipa::path(delete, path = "/users/{id}", tag = "users",
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    state.store.delete_user(&UserId(id)).await?;
    // Their open call windows close at the next event.
    state.access_changed.send_modify(|v| *v = v.wrapping_add(1));
    Ok(StatusCode::NO_CONTENT)
}

/// Issue a token for an employee (admin, or the employee for themself). Shown once.
#[utoipa::path(post, path = "/users/{id}/tokens", tag = "users",
    responses((status = 201, body = NewToken), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<NewToken>)> {
    let id = UserId(id);
    if !principal.is_admin() && principal.user_id() != Some(&id) {
        return Err(ApiError::admin_only());
    }
    let user = state.store.get_user(&id).await?;
    let token = generate_token();
    state
        .store
        .create_token(
            &hash_token(&token),
            user.role.as_str(),
            Some(&id),
            None,
            "api",
        )
        .await?;
    Ok((StatusCode::CREATED, Json(NewToken { token })))
}

/// A person's digest order as the API takes it; 422 naming `sip_digest` when wrong.
fn digest_order(names: &[String]) -> ApiResult<Vec<crate::sip::digest::Algorithm>> {
    crate::sip::digest::parse_order(names.iter().map(String::as_str)).map_err(|error| {
        ApiError::field(
            "invalid_sip_digest",
            "sip_digest",
            format!("sip_digest: {error}"),
        )
    })
}

fn sip_secret(state: &AppState, extension: &str, password: &str) -> ApiResult<Ha1Pair> {
    if password.len() < 8 {
        return Err(ApiError::field(
            "weak_password",
            "sip_password",
            "a SIP password needs at least 8 characters: registrars are scanned for weak ones",
        ));
    }
    Ok(Ha1Pair::compute(extension, &state.sip_realm, password))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(create_token))
}
