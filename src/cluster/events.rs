//! Events from every node: what one node publishes on its event bus (call and presence
//! updates) reaches the event stream of every other node sharing the PostgreSQL, by
//! `NOTIFY` on a channel of its own ([`CHANNEL`]). Each node sends its own events, in
//! the order published, from one task, and listens on another; a notification names its
//! node, so a node ignores its own and never sends on what it received. Notifications are
//! delivered at most once and only to listeners connected at the time: an event sent
//! while a node reconnects is not seen there (the stream is live state, the call log is
//! the record). Webhooks do not depend on this: each node delivers its own events.
//!
//! SQLite has one process and no link: the bus stays as it is.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::NodeId;
use crate::events::{EventBus, Shared};
use crate::store::Store;

/// The PostgreSQL notification channel of events.
pub const CHANNEL: &str = "leadline_events";

/// PostgreSQL refuses a payload of 8000 bytes or more.
pub const MAX_PAYLOAD: usize = 7999;

const NOTIFY: &str = "SELECT 1 AS sent FROM (SELECT pg_notify($1, $2)) AS notified";

/// How soon a lost listener connection is tried again, at first.
const RETRY: Duration = Duration::from_millis(250);

#[derive(Serialize)]
struct Outgoing<'a> {
    node: &'a str,
    #[serde(flatten)]
    event: &'a Shared,
}

#[derive(Deserialize)]
struct Incoming {
    node: String,
    #[serde(flatten)]
    event: Shared,
}

/// The notification payload of an event from `node`, within [`MAX_PAYLOAD`]. A call
/// update ringing very many phones is cut to the phones that fit (other nodes' windows
/// then show fewer ringing); `None` if even that does not fit.
pub fn encode(node: &NodeId, event: &Shared) -> Option<String> {
    let mut event = event.clone();
    loop {
        let text = serde_json::to_string(&Outgoing {
            node: node.as_str(),
            event: &event,
        })
        .ok()?;
        if text.len() <= MAX_PAYLOAD {
            return Some(text);
        }
        match &mut event {
            Shared::Call(update) if !update.ringing.is_empty() => {
                let keep = update.ringing.len() / 2;
                update.ringing.truncate(keep);
            }
            _ => return None,
        }
    }
}

/// The event in a payload another node sent; `None` for our own or one not understood.
pub fn decode(payload: &str, own: &NodeId) -> Option<Shared> {
    let incoming: Incoming = serde_json::from_str(payload).ok()?;
    (incoming.node != own.as_str()).then_some(incoming.event)
}

/// Sends this node's events and publishes the other nodes' on `bus`, until `cancel`.
/// PostgreSQL only: without a database URL there are no other nodes and it returns.
pub async fn run(
    store: Store,
    node: NodeId,
    bus: EventBus,
    outgoing: mpsc::Receiver<Shared>,
    cancel: CancellationToken,
) {
    let Some(url) = store.url() else { return };
    let listener = tokio::spawn(listen(url.to_string(), node.clone(), bus, cancel.clone()));
    send(&store, &node, outgoing, &cancel).await;
    let _ = listener.await;
}

async fn send(
    store: &Store,
    node: &NodeId,
    mut outgoing: mpsc::Receiver<Shared>,
    cancel: &CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => return,
            next = outgoing.recv() => match next {
                Some(event) => event,
                None => return,
            },
        };
        let Some(payload) = encode(node, &event) else {
            tracing::warn!("an event too large for a notification is not sent to the other nodes");
            metrics::counter!("leadline_cluster_events_dropped_total").increment(1);
            continue;
        };
        if let Err(err) = sqlx::query(NOTIFY)
            .bind(CHANNEL)
            .bind(payload)
            .execute(store.writer())
            .await
        {
            tracing::warn!(%err, "cannot send an event to the other nodes");
            metrics::counter!("leadline_cluster_events_dropped_total").increment(1);
        }
    }
}

async fn listen(url: String, node: NodeId, bus: EventBus, cancel: CancellationToken) {
    let mut backoff = RETRY;
    loop {
        let connected = tokio::select! {
            () = cancel.cancelled() => return,
            connected = subscribe(&url) => connected,
        };
        let mut listener = match connected {
            Ok(listener) => {
                backoff = RETRY;
                listener
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for other nodes' events; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        loop {
            // Cancelling a read loses at most the notification being read: the node is
            // stopping.
            let received = tokio::select! {
                () = cancel.cancelled() => return,
                received = listener.recv() => received,
            };
            match received {
                Ok(notification) => {
                    if let Some(event) = decode(notification.payload(), &node) {
                        bus.publish_from_elsewhere(event);
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "other nodes' event listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn subscribe(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::model::Presence;
    use crate::events::{CallUpdate, PresenceUpdate};

    fn call(ringing: usize) -> Shared {
        Shared::Call(Box::new(CallUpdate {
            event: "ringing".into(),
            call: Some("call-1".into()),
            call_id: "c1".into(),
            direction: "incoming".into(),
            customer: "+4917612345678".into(),
            number: "+4930901820".into(),
            entity: None,
            name: None,
            responsible: None,
            ringing: (0..ringing)
                .map(|i| format!("0190f2a4-0000-7000-8000-{i:012}"))
                .collect(),
            answered_by: None,
            outcome: None,
            at: "2026-11-23T10:00:00Z".into(),
        }))
    }

    #[test]
    fn another_nodes_event_is_read_back_as_sent() {
        let (a, b) = (NodeId("a".into()), NodeId("b".into()));
        let presence = Shared::Presence(PresenceUpdate {
            user: "anna".into(),
            status: Presence::Paused,
            reason: Some("lunch".into()),
            since: None,
        });
        for event in [call(2), presence] {
            let payload = encode(&a, &event).unwrap();
            assert_eq!(decode(&payload, &b), Some(event));
        }
    }

    #[test]
    fn a_node_ignores_its_own_events_and_what_it_cannot_read() {
        let a = NodeId("a".into());
        assert_eq!(decode(&encode(&a, &call(1)).unwrap(), &a), None);
        assert_eq!(decode("a config", &NodeId("b".into())), None);
    }

    #[test]
    fn a_call_ringing_too_many_phones_is_cut_to_fit_a_notification() {
        let (a, b) = (NodeId("a".into()), NodeId("b".into()));
        let payload = encode(&a, &call(1000)).unwrap();
        assert!(payload.len() <= MAX_PAYLOAD);
        match decode(&payload, &b) {
            Some(Shared::Call(update)) => {
                assert!(!update.ringing.is_empty() && update.ringing.len() < 1000);
            }
            other => panic!("{other:?}"),
        }
    }
}
