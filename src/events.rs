//! The in-process event bus: what happens to calls, as it happens, for the agents' call
//! window (SSE) and later webhooks. A `tokio::sync::broadcast` channel: publishing never
//! waits, a subscriber too slow to keep up loses the oldest events and is told so.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::crm::access::{self, AccessSettings, Viewer};
use crate::crm::model::UserId;
use crate::store::CallLeg;

/// The legs of the calls in progress in this process, by the caller's SIP Call-ID, for
/// `GET /calls` to show live calls as they ring.
#[derive(Debug, Clone, Default)]
pub struct LiveCalls(Arc<RwLock<HashMap<String, Vec<CallLeg>>>>);

impl LiveCalls {
    pub fn set(&self, call_id: &str, legs: Vec<CallLeg>) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(call_id.to_owned(), legs);
    }

    pub fn remove(&self, call_id: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(call_id);
    }

    /// The legs of a call in progress here; `None` when it is not (or no longer) live.
    pub fn legs(&self, call_id: &str) -> Option<Vec<CallLeg>> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(call_id)
            .cloned()
    }
}

/// How many events a subscriber may lag behind before it loses some.
const CAPACITY: usize = 1024;

/// One step of a call as the call window shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CallUpdate {
    /// `ringing`, `answered` or `ended`.
    pub event: String,
    /// The call log id (`/api/v1/calls/{id}`), when the intake has run.
    pub call: Option<String>,
    pub call_id: String,
    pub direction: String,
    /// The customer's number (E.164 when it could be read).
    pub customer: String,
    /// Our number.
    pub number: String,
    /// The entity the caller was matched to or created as (`lead:…`), if any.
    pub entity: Option<String>,
    /// Its name in the CRM.
    pub name: Option<String>,
    pub responsible: Option<String>,
    /// Employees whose phones ring now.
    pub ringing: Vec<String>,
    pub answered_by: Option<String>,
    pub outcome: Option<String>,
    /// RFC 3339.
    pub at: String,
}

impl CallUpdate {
    /// Whether `viewer` may be told of this update, in the call window and by webhooks:
    /// it rings them or they answered it, or they may see the caller's entity at the
    /// account's level (A1/A2; an update with no entity only for who sees everything).
    /// Decided from the update alone: nobody waits for the database on every event.
    pub fn visible_to(&self, settings: AccessSettings, viewer: &Viewer) -> bool {
        let concerns = viewer.user.as_ref().is_some_and(|me| {
            self.ringing.iter().any(|u| u == me.as_str())
                || self.answered_by.as_deref() == Some(me.as_str())
        });
        let responsibles: Vec<Option<UserId>> = match &self.entity {
            Some(_) => vec![self.responsible.clone().map(UserId)],
            None => Vec::new(),
        };
        access::call_visible(settings, viewer, concerns, &responsibles)
    }
}

/// Cheap to clone; every clone publishes to the same subscribers.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<CallUpdate>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl EventBus {
    pub fn publish(&self, update: CallUpdate) {
        // No subscriber is not an error: nobody has the call window open.
        let _ = self.sender.send(update);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<CallUpdate> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(
        ringing: &[&str],
        answered_by: Option<&str>,
        responsible: Option<&str>,
    ) -> CallUpdate {
        CallUpdate {
            event: "ringing".into(),
            call: None,
            call_id: "c1".into(),
            direction: "incoming".into(),
            customer: "+4917612345678".into(),
            number: "+4930901820".into(),
            entity: None,
            name: None,
            responsible: responsible.map(str::to_owned),
            ringing: ringing.iter().map(|s| (*s).to_owned()).collect(),
            answered_by: answered_by.map(str::to_owned),
            outcome: None,
            at: "2026-11-23T10:00:00Z".into(),
        }
    }

    #[tokio::test]
    async fn subscribers_get_what_is_published_after_they_subscribe() {
        let bus = EventBus::default();
        bus.publish(update(&["early"], None, None));
        let mut rx = bus.subscribe();
        bus.publish(update(&["anna"], None, None));
        assert_eq!(rx.recv().await.unwrap().ringing, ["anna"]);
    }
}
