//! Bearer-token authentication and roles (A1).
//!
//! Tokens are random 256-bit strings; only their SHA-256 is stored, so a stolen database
//! does not hand out working tokens. `LEADLINE_ADMIN_TOKEN` is accepted as an admin token
//! without being stored.

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
use crate::store::TokenOwner;

/// Who is calling, resolved from the bearer token.
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

/// The principal of the request's bearer token.
async fn resolve(parts: &Parts, state: &AppState) -> ApiResult<Principal> {
    principal_of_hash(state, &bearer_hash(&parts.headers)?).await
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
    match state.store.token_owner(hash).await? {
        Some(TokenOwner::Bootstrap) => Ok(Principal::Bootstrap),
        Some(TokenOwner::User { id, role }) => Ok(Principal::User { id, role }),
        Some(TokenOwner::Trunk(id)) => Ok(Principal::Trunk(id)),
        None => Err(ApiError::Unauthorized),
    }
}
