//! `/session`: signing in to the web console with e-mail and password, the session cookie,
//! signing out, and the first start's set-up of an admin who can sign in.
//!
//! Owns the adapters of `crate::session`: the password hashing off the async workers
//! ([`Passwords`]), the sign-in throttle in the process state, the cookie on the answer,
//! and the sweep of sessions that are over ([`sweep`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::header::{CACHE_CONTROL, SET_COOKIE, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::PrincipalSlot;
use super::auth::{self, Principal, hash_token};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiJson;
use super::users::User;
use super::validate;
use crate::crm::model::UserId;
use crate::session::password::{self, PasswordError};
use crate::session::{Attempt, Failure, SessionTimes, ThrottleKey, cookie};
use crate::store::{NewSession, now_ms};

/// Password hashing and checking, on the blocking pool and a few at a time: each takes
/// tens of milliseconds of CPU and 19 MiB, and a flood of sign-ins must not take every
/// core or gigabytes of memory.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
}

impl Default for Passwords {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            permits: Arc::new(Semaphore::new(cores.clamp(1, 8))),
        }
    }
}

impl Passwords {
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<T> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        // The permit goes with the work: a client that hangs up does not free it while
        // the hash still runs.
        tokio::task::spawn_blocking(move || {
            let done = work();
            drop(permit);
            done
        })
        .await
        .map_err(|e| ApiError::Internal(format!("password hashing failed: {e}")))
    }

    /// The stored form of a password that passed the rules.
    pub async fn hash(&self, password: String) -> ApiResult<String> {
        self.run(move || password::hash(&password))
            .await?
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Whether `password` matches `stored`; without a stored hash it does the same work
    /// and says no.
    pub async fn verify(&self, password: String, stored: Option<String>) -> ApiResult<bool> {
        self.run(move || match stored {
            Some(stored) => password::verify(&password, &stored),
            None => password::verify_nobody(&password),
        })
        .await
    }
}

/// The password rules as the API's validation errors (field `password`).
pub fn password_rules(value: &str) -> ApiResult<()> {
    password::check_rules(value).map_err(|e| match e {
        PasswordError::TooShort => ApiError::field("password_too_short", "password", e.to_string()),
        PasswordError::TooLong => ApiError::field("password_too_long", "password", e.to_string()),
        PasswordError::Hash(cause) => ApiError::Internal(cause),
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub email: String,
    pub password: String,
}

/// A signed-in session: its person and the token changes must carry in `X-CSRF-Token`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// The same object as `GET /users/{id}`.
    pub user: User,
    /// Send it as `X-CSRF-Token` with every POST, PUT, PATCH and DELETE made with the
    /// cookie. Fixed for the session's life.
    pub csrf_token: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SetupState {
    /// True while no admin can sign in (no admin has a password).
    pub needed: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// The bootstrap admin token (`LEADLINE_ADMIN_TOKEN`, or the one printed on the first
    /// start).
    pub token: String,
    pub name: String,
    pub email: String,
    pub password: String,
}

/// Sign in: sets the `leadline_session` cookie (HttpOnly, SameSite=Strict, Path=/,
/// Secure over HTTPS). A wrong e-mail and a wrong password get the same 401; five
/// failures within a minute for one address and e-mail lock that pair out for ten
/// minutes (429 with `Retry-After`).
#[utoipa::path(post, path = "/session", tag = "session", security(()), request_body = SignIn,
    responses(
        (status = 200, body = SessionInfo, headers(("Set-Cookie" = String, description = "leadline_session=…; HttpOnly; SameSite=Strict; Path=/"))),
        (status = 401, body = ErrorBody, description = "invalid_credentials"),
        (status = 403, body = ErrorBody, description = "csrf_failed: Origin is another site"),
        (status = 429, body = ErrorBody, description = "too_many_attempts",
         headers(("Retry-After" = u64, description = "seconds until the lock ends")))))]
async fn sign_in(
    State(state): State<AppState>,
    parts: Parts,
    ApiJson(body): ApiJson<SignIn>,
) -> ApiResult<Response> {
    // A page of another site must not sign the browser in to an account of its choosing.
    cookie::check_origin(&parts.headers)?;
    let key = ThrottleKey::sign_in(peer_ip(&parts), &body.email);
    allow_attempt(&state, &key)?;
    let email = validate::email("email", &body.email).ok();
    let credentials = match &email {
        Some(email) => state.store.credentials(email).await?,
        None => None,
    };
    let stored = credentials.as_ref().and_then(|c| c.password_hash.clone());
    // No password can be longer; refused without hashing a megabyte.
    let fits = body.password.chars().count() <= password::MAX_CHARS;
    let matches = fits && state.passwords.verify(body.password, stored).await?;
    let Some(credentials) = credentials.filter(|_| matches) else {
        failed_attempt(&state, &key, "sign_in");
        return Err(ApiError::invalid_credentials());
    };
    lock_throttle(&state).success(&key);
    start_session(&state, &parts, &credentials.user).await
}

/// The signed-in person (by the cookie) and the session's CSRF token; 401 without a live
/// session. Counts as use of the session.
#[utoipa::path(get, path = "/session", tag = "session", security(("session" = [])),
    responses((status = 200, body = SessionInfo), (status = 401, body = ErrorBody)))]
async fn current_session(
    State(state): State<AppState>,
    parts: Parts,
) -> ApiResult<(
    [(axum::http::HeaderName, HeaderValue); 1],
    Json<SessionInfo>,
)> {
    let token = cookie::session_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
    let (id, _) = auth::session_user(&state, &hash_token(token), true).await?;
    let user = state.store.get_user(&id).await.map_err(|e| match e {
        crate::store::StoreError::NotFound { .. } => ApiError::Unauthorized,
        other => other.into(),
    })?;
    Ok((
        no_store(),
        Json(SessionInfo {
            user: user.into(),
            csrf_token: cookie::csrf_token(token),
        }),
    ))
}

/// Sign out: ends the cookie's session and clears the cookie (needs `X-CSRF-Token`). A
/// session that is over already gets 401, and the cookie is cleared too.
#[utoipa::path(delete, path = "/session", tag = "session", security(("session" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn sign_out(State(state): State<AppState>, parts: Parts) -> ApiResult<Response> {
    let secure = cookie::is_https(&parts);
    let clear = [(SET_COOKIE, cookie::clear_cookie(secure))];
    let Some(token) = cookie::session_token(&parts.headers) else {
        return Err(ApiError::Unauthorized);
    };
    let hash = hash_token(token);
    match auth::session_user(&state, &hash, false).await {
        Ok((id, role)) => {
            cookie::check_csrf(&parts.method, &parts.headers, token)?;
            fill_audit_slot(&parts, &Principal::User { id, role });
            state.store.delete_session(&hash).await?;
            // Call windows opened with this session ask again at their next event.
            state.access_changed.send_modify(|v| *v = v.wrapping_add(1));
            Ok((StatusCode::NO_CONTENT, clear).into_response())
        }
        Err(ApiError::Unauthorized) => Ok((clear, ApiError::Unauthorized).into_response()),
        Err(other) => Err(other),
    }
}

/// Whether the first start's set-up is still to be done (no admin can sign in yet).
#[utoipa::path(get, path = "/session/setup", tag = "session", security(()),
    responses((status = 200, body = SetupState)))]
async fn setup_state(State(state): State<AppState>) -> ApiResult<Json<SetupState>> {
    Ok(Json(SetupState {
        needed: !state.store.admin_can_sign_in().await?,
    }))
}

/// First start: with the bootstrap admin token, create the first admin who can sign in
/// (or give the admin with that e-mail, who has none, a password) and sign them in. Only
/// while no admin has a password (else 409 `already_set_up`). Wrong tokens count toward
/// the sign-in throttle (per address).
#[utoipa::path(post, path = "/session/setup", tag = "session", security(()), request_body = Setup,
    responses(
        (status = 200, body = SessionInfo, headers(("Set-Cookie" = String))),
        (status = 401, body = ErrorBody, description = "invalid_token"),
        (status = 409, body = ErrorBody, description = "already_set_up, or user_exists (an agent's e-mail)"),
        (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too_many_attempts")))]
async fn set_up(
    State(state): State<AppState>,
    parts: Parts,
    ApiJson(body): ApiJson<Setup>,
) -> ApiResult<Response> {
    cookie::check_origin(&parts.headers)?;
    if state.store.admin_can_sign_in().await? {
        return Err(already_set_up());
    }
    let key = ThrottleKey::setup(peer_ip(&parts));
    allow_attempt(&state, &key)?;
    match auth::principal_of_hash(&state, &hash_token(body.token.trim())).await {
        Ok(Principal::Bootstrap) => lock_throttle(&state).success(&key),
        Ok(_) | Err(ApiError::Unauthorized) => {
            failed_attempt(&state, &key, "setup");
            return Err(ApiError::Unauthenticated {
                code: "invalid_token",
                message: "this is not the admin token (LEADLINE_ADMIN_TOKEN, or the one \
                          printed on the first start)"
                    .to_owned(),
            });
        }
        Err(other) => return Err(other),
    }
    fill_audit_slot(&parts, &Principal::Bootstrap);
    let name = validate::name("name", &body.name)?;
    let email = validate::email("email", &body.email)?;
    password_rules(&body.password)?;
    let stored = state.passwords.hash(body.password).await?;
    let user = state
        .store
        .set_up_first_admin(&name, &email, &stored)
        .await?;
    start_session(&state, &parts, &user.id).await
}

fn already_set_up() -> ApiError {
    ApiError::Conflict {
        code: "already_set_up",
        message: "an admin can sign in already: sign in, or ask an admin for an account".to_owned(),
    }
}

/// Stores a new session for `user` and answers with the cookie and the session's body.
async fn start_session(state: &AppState, parts: &Parts, user: &UserId) -> ApiResult<Response> {
    let user = state.store.get_user(user).await?;
    // The audit row, written with the session, names the person who signed in, not
    // "anonymous" (a set-up's went with the admin it made, as the bootstrap token's).
    fill_audit_slot(
        parts,
        &Principal::User {
            id: user.id.clone(),
            role: user.role,
        },
    );
    let token = cookie::new_token();
    state
        .store
        .create_session(&NewSession {
            token_hash: hash_token(&token),
            user: user.id.clone(),
            times: SessionTimes::new(now_ms()),
            remote_addr: peer(parts).map(|addr| addr.to_string()),
            user_agent: parts
                .headers
                .get(USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        })
        .await?;
    let set_cookie = cookie::set_cookie(&token, cookie::is_https(parts));
    Ok((
        [(SET_COOKIE, set_cookie)],
        no_store(),
        Json(SessionInfo {
            user: user.into(),
            csrf_token: cookie::csrf_token(&token),
        }),
    )
        .into_response())
}

/// Answers carrying a CSRF token are not kept by caches.
fn no_store() -> [(axum::http::HeaderName, HeaderValue); 1] {
    [(CACHE_CONTROL, HeaderValue::from_static("no-store"))]
}

fn fill_audit_slot(parts: &Parts, principal: &Principal) {
    if let Some(slot) = parts.extensions.get::<PrincipalSlot>() {
        slot.fill(principal);
    }
}

/// The TCP peer (the audit log's `remote_addr`; behind a proxy, the proxy).
fn peer(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

/// The address failures are counted for; served without peer information (in-process
/// tests) every client is one.
fn peer_ip(parts: &Parts) -> IpAddr {
    peer(parts).map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip())
}

fn lock_throttle(state: &AppState) -> std::sync::MutexGuard<'_, crate::session::LoginThrottle> {
    state
        .login_throttle
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// 429 while the pair is locked out.
fn allow_attempt(state: &AppState, key: &ThrottleKey) -> ApiResult<()> {
    match lock_throttle(state).check(key, now_ms()) {
        Attempt::Allowed => Ok(()),
        Attempt::Locked { retry_after_s } => Err(ApiError::TooManyAttempts { retry_after_s }),
    }
}

fn failed_attempt(state: &AppState, key: &ThrottleKey, kind: &'static str) {
    metrics::counter!("leadline_login_failures_total", "kind" => kind).increment(1);
    if lock_throttle(state).failure(key, now_ms()) == Failure::Locked {
        metrics::counter!("leadline_login_lockouts_total", "kind" => kind).increment(1);
        tracing::warn!(
            ?key,
            kind,
            "too many failed sign-ins: locked out for ten minutes"
        );
    }
}

/// Deletes sessions that are over, every hour until `cancel` (a session is refused as
/// soon as it is over; this only keeps the table small).
pub async fn sweep(store: crate::store::Store, cancel: tokio_util::sync::CancellationToken) {
    loop {
        let now = now_ms();
        match store
            .delete_expired_sessions(now, crate::session::idle_cutoff(now))
            .await
        {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "sessions that were over deleted"),
            Err(err) => tracing::error!(%err, "session sweep failed"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_in, current_session, sign_out))
        .routes(routes!(setup_state, set_up))
}
