//! `/events`: the agents' call window as Server-Sent Events. Admins see every call; an
//! agent sees the calls that ring them, that they answered, and those of customers they
//! may see (A1: `own`, `queue` or `all`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};
use tokio_stream::{Stream, StreamExt as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::access::Access;
use super::auth::Principal;
use super::error::{ApiResult, ErrorBody};

/// Stream the call window (SSE). Each event is named `ringing`, `answered` or `ended`
/// and carries a `CallUpdate` as JSON; `lagged` says how many were lost by a reader too
/// slow to keep up.
#[utoipa::path(get, path = "/events", tag = "calls",
    responses(
        (status = 200, description = "text/event-stream of CallUpdate", content_type = "text/event-stream",
         body = crate::events::CallUpdate),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn call_window(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let rights = Arc::new(Mutex::new(Rights {
        access: Access::of(&state, &principal).await?,
        loaded: Instant::now(),
        changed: state.access_changed.subscribe(),
    }));
    let reader = state.clone();
    let updates = BroadcastStream::new(state.events.subscribe())
        .then(move |item| {
            let (rights, state, principal) = (rights.clone(), reader.clone(), principal.clone());
            async move {
                let update = match item {
                    Ok(update) => update,
                    Err(BroadcastStreamRecvError::Lagged(lost)) => {
                        return Some(Ok(Event::default().event("lagged").data(lost.to_string())));
                    }
                };
                let mut rights = rights.lock().await;
                rights.refresh(&state, &principal).await;
                if !rights.access.sees_update(&update) {
                    return None;
                }
                let event = Event::default().event(update.event.clone());
                Some(Ok(event.json_data(&update).unwrap_or_else(|_| {
                    Event::default()
                        .event("error")
                        .data("cannot encode the update")
                })))
            }
        })
        .filter_map(|event| event);
    let stop = WatchStream::new(state.stopping.clone())
        .filter(|stopping| *stopping)
        .map(|_| None);
    let until_stopped = updates
        .map(Some)
        .merge(stop)
        .take_while(Option::is_some)
        .filter_map(|item| item);
    Ok(Sse::new(until_stopped).keep_alive(KeepAlive::default()))
}

/// How often an open window re-reads the caller's rights even without a change made in
/// this process (another process sharing PostgreSQL may have made it).
const RIGHTS_REFRESH: Duration = Duration::from_secs(5);

/// The rights an open call window applies: re-read at the first event after a change of
/// levels or queues here, and at least every [`RIGHTS_REFRESH`] otherwise, so narrowing
/// an agent's level takes effect in open windows too.
struct Rights {
    access: Access,
    loaded: Instant,
    changed: tokio::sync::watch::Receiver<u64>,
}

impl Rights {
    async fn refresh(&mut self, state: &AppState, principal: &Principal) {
        let changed = self.changed.has_changed().unwrap_or(false);
        if !changed && self.loaded.elapsed() < RIGHTS_REFRESH {
            return;
        }
        self.changed.borrow_and_update();
        match Access::of(state, principal).await {
            Ok(access) => {
                self.access = access;
                self.loaded = Instant::now();
            }
            // The old rights stay until the database answers again; the next event retries.
            Err(err) => tracing::warn!(%err, "call window: cannot re-read the caller's rights"),
        }
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(call_window))
}
