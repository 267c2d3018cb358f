//! Operations endpoints: liveness, readiness, Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// What `/readyz` says: `ok`, `degraded` (calls are taken, their writes journaled) or
/// `database unavailable`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    /// Degraded: the call writes in the local journal, not yet in the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_records: Option<u64>,
}

/// Readiness: the database answers (`ok`), or it does not and the node takes calls
/// anyway, journaling their writes until it is back (`degraded`, still 200: the node
/// routes calls from its snapshot, so a load balancer keeps sending them).
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let journal = state.store.journal();
    let degraded = |records| {
        (
            StatusCode::OK,
            Json(Readiness {
                status: "degraded",
                journal_records: Some(records),
            }),
        )
    };
    // Known down: no ping that would wait for the pool's timeout.
    if let Some(journal) = journal
        && journal.state().degraded
    {
        return degraded(journal.state().records);
    }
    let ping = tokio::time::timeout(crate::store::journal::LIVE_WAIT, state.store.ping()).await;
    let err = match ping {
        Ok(Ok(())) => {
            return match journal.map(|j| j.state().records) {
                Some(records) if records > 0 => degraded(records),
                _ => (
                    StatusCode::OK,
                    Json(Readiness {
                        status: "ok",
                        journal_records: None,
                    }),
                ),
            };
        }
        Ok(Err(err)) => err.to_string(),
        Err(_) => "no answer in time".to_owned(),
    };
    tracing::warn!(%err, "readiness check failed");
    match journal {
        Some(journal) => {
            journal.database_down(&err);
            degraded(journal.state().records)
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: "database unavailable",
                journal_records: None,
            }),
        ),
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found("path", uri.path())
}
