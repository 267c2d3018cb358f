//! The HTTP admin API (axum): routing, authentication, one file per resource.
//!
//! Handlers are thin: parse and validate input into domain types, call the store (which
//! calls the pure core), and shape the response of API.md. OpenAPI is generated from the
//! handlers' annotations and served at `/openapi.json`.

mod access;
pub mod audit;
pub mod auth;
pub(crate) mod calls;
mod catalog;
mod dial;
mod dry_run;
pub(crate) mod emails;
pub(crate) mod entities;
pub mod error;
mod events;
mod exceptions;
pub mod extract;
pub mod https;
mod import;
mod list;
mod mailboxes;
pub(crate) mod matching;
mod nodes;
mod numbers;
mod ops;
mod period;
mod presence;
mod privacy;
mod queues;
mod registrations;
pub mod session;
mod settings;
mod stages;
mod stats;
mod tokens;
mod trunks;
mod users;
mod validate;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::store::Store;

pub use list::{List, ListQuery};

/// Shared state of every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// SHA-256 of `LEADLINE_ADMIN_TOKEN`, accepted as an admin token.
    pub env_admin_token_hash: Option<String>,
    pub metrics: Option<PrometheusHandle>,
    /// Realm of SIP digest credentials (HA1 is computed with it).
    pub sip_realm: Arc<str>,
    /// SIP profiles a trunk may name.
    pub profiles: Arc<crate::sip::profiles::Profiles>,
    /// Call updates for the call window.
    pub events: crate::events::EventBus,
    /// Legs of the calls in progress in this process.
    pub live: crate::events::LiveCalls,
    /// Agents in calls or wrap-up, callers waiting in queues (this process).
    pub desk: crate::sip::queueing::Desk,
    /// This process among the nodes sharing the database.
    pub node: crate::cluster::NodeId,
    /// Turns true when the process stops: endless responses (SSE) end then, or the
    /// graceful shutdown would wait for them forever.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Woken when mailboxes are added, changed or removed: the pollers follow.
    pub mail_changed: Arc<tokio::sync::Notify>,
    /// Mailbox logins, shared with the pollers (one OAuth2 token cache per process).
    pub mail_credentials: crate::mail::Credentials,
    /// The domain of the forward address (E16).
    pub mail_domain: Arc<str>,
    /// Holds recordings and greetings.
    pub data_dir: Arc<std::path::Path>,
    /// Bumped when access levels or queue memberships change here, so open call windows
    /// apply the new rights at their next event (other processes: within seconds).
    pub access_changed: Arc<tokio::sync::watch::Sender<u64>>,
    /// Webhooks may target loopback and private addresses (operator setting).
    pub webhook_private_targets: bool,
    /// Places click-to-calls; `None` when the gateway's SIP side is not running.
    pub dialer: Option<crate::sip::b2bua::Dialer>,
    /// Failed console sign-ins per (address, e-mail) in this process.
    pub login_throttle: Arc<std::sync::Mutex<crate::session::LoginThrottle>>,
    /// Console password hashing, bounded.
    pub passwords: session::Passwords,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Leadline API",
        description = "Admin and agent API of the Leadline gateway: numbers, queues, CRM records, call log."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []), ("session" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        // The web console's cookie; changes made with it also need `X-CSRF-Token`.
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::session::cookie::COOKIE_NAME,
                "Set by POST /api/v1/session. POST, PUT, PATCH and DELETE made with it \
                 must carry the session's csrf_token in X-CSRF-Token.",
            ))),
        );
    }
}

/// The whole HTTP application; testable with `oneshot` or served on a listener.
pub fn router(state: AppState) -> Router {
    // The audit layer goes on after nesting, so it sees the full path, and before the
    // operations routes, which change nothing.
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", api_routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record,
        ))
        .merge(ops::routes())
        .split_for_parts();
    let openapi = Arc::new(openapi);
    api.route(
        "/openapi.json",
        axum::routing::get(move || {
            let openapi = openapi.clone();
            async move { axum::Json(openapi.as_ref().clone()) }
        }),
    )
    .merge(crate::console::routes())
    .fallback(ops::not_found)
    .layer(DefaultBodyLimit::max(extract::MAX_JSON_BODY))
    .layer(TraceLayer::new_for_http())
    .with_state(state)
}

/// Every resource under `/api/v1`, with its OpenAPI paths.
pub(crate) fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(users::routes())
        .merge(entities::routes())
        .merge(import::routes())
        .merge(calls::routes())
        .merge(dial::routes())
        .merge(events::routes())
        .merge(matching::routes())
        .merge(queues::routes())
        .merge(trunks::routes())
        .merge(numbers::routes())
        .merge(dry_run::routes())
        .merge(settings::routes())
        .merge(exceptions::routes())
        .merge(catalog::routes())
        .merge(stages::routes())
        .merge(registrations::routes())
        .merge(mailboxes::routes())
        .merge(emails::routes())
        .merge(audit::routes())
        .merge(webhooks::routes())
        .merge(session::routes())
        .merge(stats::routes())
        .merge(tokens::routes())
        .merge(presence::routes())
        .merge(nodes::routes())
        .merge(privacy::routes())
}
