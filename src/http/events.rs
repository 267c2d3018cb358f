//! `/events`: the agents' call window as Server-Sent Events. Admins see every call; an
//! agent sees the calls that ring them, that they answered, and those of customers they
//! may see (A1: `own`, `queue` or `all`).

use std::convert::Infallible;

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
    // The levels in force when the window opens; a change applies from the next connect.
    let access = Access::of(&state, &principal).await?;
    let updates =
        BroadcastStream::new(state.events.subscribe()).filter_map(move |item| match item {
            Ok(update) if access.sees_update(&update) => {
                let event = Event::default().event(update.event.clone());
                Some(Ok(event.json_data(&update).unwrap_or_else(|_| {
                    Event::default()
                        .event("error")
                        .data("cannot encode the update")
                })))
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(lost)) => {
                Some(Ok(Event::default().event("lagged").data(lost.to_string())))
            }
        });
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

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(call_window))
}
