//! Who is calling (A1): a bearer token, or else the web console's session cookie.
//!
//! Tokens are random 256-bit strings; only their SHA-256 is stored, so a stolen database
//! does not hand out working tokens. `LEADLINE_ADMIN_TOKEN` is accepted as an admin token
//! without being stored. A session cookie stands for its person with their current role;
//! a change made with it must pass the CSRF checks of `session::cookie` (a bearer token
//! needs none: a browser never adds one on its own).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::AppState;
use super::audit::PrincipalSlot;
use super::error::{ApiError, ApiResult};
use crate::crm::model::{Role, TrunkId, UserId};
use crate::session::{self, cookie};
use crate::store::TokenOwner;

/// Who is calling, resolved from the bearer token or the session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The bootstrap admin token (environment or generated on first start).
    Bootstrap,
    User {
        id: UserId,
        role: Role,
    },
    /// A PBX trunk pushing call events.
    Trunk(TrunkId),
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Principal::Bootstrap
                | Principal::User {
                    role: Role::Admin,
                    ..
                }
        )
    }

    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::admin_only())
        }
    }

    /// Employees (admins and agents) may read CRM data; trunk tokens may not (A1).
    pub fn require_employee(&self) -> ApiResult<()> {
        match self {
            Principal::Trunk(_) => Err(ApiError::Forbidden(
                "a trunk token may only push call events".to_owned(),
            )),
            _ => Ok(()),
        }
    }

    pub fn user_id(&self) -> Option<&UserId> {
        match self {
            Principal::User { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// A new random token, shown to its owner once.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "ll_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let principal = resolve(parts, state).await?;
        if let Some(slot) = parts.extensions.get::<PrincipalSlot>() {
            slot.fill(&principal);
        }
        Ok(principal)
    }
}

/// The principal of the request's bearer token or, without one, of its session cookie.
async fn resolve(parts: &Parts, state: &AppState) -> ApiResult<Principal> {
    let credential = credential(&parts.headers)?;
    let principal = principal_of(state, &credential, true).await?;
    if let Credential::Session { .. } = credential
        && let Some(token) = cookie::session_token(&parts.headers)
    {
        cookie::check_csrf(&parts.method, &parts.headers, token)?;
    }
    Ok(principal)
}

/// What a request authenticates with, in its stored (hashed) form. Long-lived responses
/// (the call window) keep it to ask again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer`.
    Bearer { hash: String },
    /// The `leadline_session` cookie.
    Session { hash: String },
}

/// The request's credential: the bearer token first, else the session cookie; 401 with
/// neither.
pub fn credential(headers: &axum::http::HeaderMap) -> ApiResult<Credential> {
    if headers.contains_key(AUTHORIZATION) {
        return bearer_hash(headers).map(|hash| Credential::Bearer { hash });
    }
    cookie::session_token(headers)
        .map(|token| Credential::Session {
            hash: hash_token(token),
        })
        .ok_or(ApiError::Unauthorized)
}

/// Who a credential belongs to now; 401 for one unknown, revoked or expired. `touch`: a
/// request by the person (slides the session's idle end); an open call window asking
/// again does not, or a forgotten console tab would stay signed in for ever.
pub async fn principal_of(
    state: &AppState,
    credential: &Credential,
    touch: bool,
) -> ApiResult<Principal> {
    match credential {
        Credential::Bearer { hash } => principal_of_hash(state, hash).await,
        Credential::Session { hash } => {
            let (id, role) = session_user(state, hash, touch).await?;
            Ok(Principal::User { id, role })
        }
    }
}

/// The person of a live session (by token hash) and their current role; 401 for a session
/// that is unknown or over (deleted then, the sweep would do it later).
pub async fn session_user(state: &AppState, hash: &str, touch: bool) -> ApiResult<(UserId, Role)> {
    let session = state
        .store
        .session(hash)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let now = crate::store::now_ms();
    match session::liveness(&session.times, now) {
        session::Liveness::Expired => {
            if let Err(err) = state.store.delete_session(hash).await {
                tracing::warn!(%err, "cannot delete an expired session");
            }
            Err(ApiError::Unauthorized)
        }
        session::Liveness::Live { touch: due } => {
            if touch
                && due
                && let Err(err) = state.store.touch_session(hash, now).await
            {
                // The request is fine; the session only ends a minute early at worst.
                tracing::warn!(%err, "cannot record a session's use");
            }
            Ok((session.user, session.role))
        }
    }
}

/// The stored form of the request's bearer token; 401 without one.
pub fn bearer_hash(headers: &axum::http::HeaderMap) -> ApiResult<String> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    Ok(hash_token(token))
}

/// Who a token (by its hash) belongs to now; 401 for one unknown or revoked. Long-lived
/// responses (the call window) ask again, so a deleted user's window closes.
pub async fn principal_of_hash(state: &AppState, hash: &str) -> ApiResult<Principal> {
    if let Some(env_hash) = &state.env_admin_token_hash
        && bool::from(env_hash.as_bytes().ct_eq(hash.as_bytes()))
    {
        return Ok(Principal::Bootstrap);
    }
    let owner = state.store.token_owner(hash).await?;
    if owner.is_some() {
        state.store.token_used(hash).await;
    }
    match owner {
        Some(TokenOwner::Bootstrap) => Ok(Principal::Bootstrap),
        Some(TokenOwner::User { id, role }) => Ok(Principal::User { id, role }),
        Some(TokenOwner::Trunk(id)) => Ok(Principal::Trunk(id)),
        None => Err(ApiError::Unauthorized),
    }
}
