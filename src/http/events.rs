//! `/events`: the agents' call window as Server-Sent Events. Admins see every call; an
//! agent sees the calls that ring them, that they answered, and those of customers they
//! may see (A1: `own`, `queue` or `all`). Every employee also gets the presence changes
//! (`presence`), which the console's presence board and queue view follow.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};
use tokio_stream::{Stream, StreamExt as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::access::Access;
use super::auth::{self, Principal};
use super::error::ApiError;
use super::error::{ApiResult, ErrorBody};
use crate::events::{CallUpdate, PresenceUpdate};

/// Stream the call window (SSE). A call's event is named `ringing`, `answered` or `ended`
/// and carries a `CallUpdate` as JSON; an employee's presence change is named `presence`
/// and carries a `PresenceUpdate` (`{"user", "status", "reason", "since"}`); `lagged`
/// says how many were lost by a reader too slow to keep up.
#[utoipa::path(get, path = "/events", tag = "calls",
    responses(
        (status = 200, description = "text/event-stream of CallUpdate (events `ringing`, `answered`, `ended`) and PresenceUpdate (event `presence`)",
         content_type = "text/event-stream", body = crate::events::CallUpdate),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn call_window(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let rights = Arc::new(Mutex::new(Rights {
        access: Access::of(&state, &principal).await?,
        credential: auth::credential(&headers)?,
        loaded: Instant::now(),
        changed: state.access_changed.subscribe(),
    }));
    let reader = state.clone();
    let calls = BroadcastStream::new(state.events.subscribe()).map(Bus::Call);
    let presence = BroadcastStream::new(state.events.subscribe_presence()).map(Bus::Presence);
    let updates = calls
        .merge(presence)
        .then(move |item| {
            let (rights, state) = (rights.clone(), reader.clone());
            async move {
                let item = match item.transpose() {
                    Ok(item) => item,
                    Err(BroadcastStreamRecvError::Lagged(lost)) => {
                        return Step::Send(Event::default().event("lagged").data(lost.to_string()));
                    }
                };
                let mut rights = rights.lock().await;
                if !rights.refresh(&state).await {
                    return Step::End;
                }
                let encoded = match item {
                    Bus::Call(update) => {
                        if !rights.access.sees_update(&update) {
                            return Step::Skip;
                        }
                        Event::default()
                            .event(update.event.clone())
                            .json_data(&update)
                    }
                    // Every employee may read everyone's presence (`GET /presence`).
                    Bus::Presence(update) => Event::default().event("presence").json_data(&update),
                };
                Step::Send(encoded.unwrap_or_else(|_| {
                    Event::default()
                        .event("error")
                        .data("cannot encode the update")
                }))
            }
        })
        .take_while(|step| !matches!(step, Step::End))
        .filter_map(|step| match step {
            Step::Send(event) => Some(Ok(event)),
            Step::Skip | Step::End => None,
        });
    let stop = WatchStream::new(state.stopping.clone())
        .filter(|stopping| *stopping)
        .map(|_| None);
    // The window ends when the process stops or the updates end (a revoked token).
    let until_stopped = updates
        .map(Some)
        .chain(tokio_stream::once(None))
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
    /// The caller's token or session, asked about again: a revoked token, an ended
    /// session or a deleted user closes the window, a changed role applies.
    credential: auth::Credential,
    loaded: Instant,
    changed: tokio::sync::watch::Receiver<u64>,
}

/// One event of the bus, of either kind.
enum Bus<C, P> {
    Call(C),
    Presence(P),
}

impl
    Bus<
        Result<CallUpdate, BroadcastStreamRecvError>,
        Result<PresenceUpdate, BroadcastStreamRecvError>,
    >
{
    /// The event, or the loss a lagging reader is told of, whichever kind lagged.
    fn transpose(self) -> Result<Bus<CallUpdate, PresenceUpdate>, BroadcastStreamRecvError> {
        Ok(match self {
            Bus::Call(update) => Bus::Call(update?),
            Bus::Presence(update) => Bus::Presence(update?),
        })
    }
}

/// What one bus event becomes in a window.
enum Step {
    Send(Event),
    Skip,
    /// The caller's token is no longer valid: the window closes.
    End,
}

impl Rights {
    /// Re-reads the rights when due; `false` when the token is no longer valid.
    async fn refresh(&mut self, state: &AppState) -> bool {
        let changed = self.changed.has_changed().unwrap_or(false);
        if !changed && self.loaded.elapsed() < RIGHTS_REFRESH {
            return true;
        }
        self.changed.borrow_and_update();
        let principal = match auth::principal_of(state, &self.credential, false).await {
            Ok(principal) => principal,
            Err(ApiError::Unauthorized) => return false,
            Err(err) => {
                // The old rights stay until the database answers again.
                tracing::warn!(%err, "call window: cannot check the caller's token");
                return true;
            }
        };
        match Access::of(state, &principal).await {
            Ok(access) => {
                self.access = access;
                self.loaded = Instant::now();
            }
            Err(err) => tracing::warn!(%err, "call window: cannot re-read the caller's rights"),
        }
        true
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(call_window))
}
