//! The in-process event bus: what happens to calls, as it happens, for the agents' call
//! window (SSE) and webhooks, and employees' presence changes for the console (SSE only).
//! `tokio::sync::broadcast` channels, one per kind of event so each consumer subscribes to
//! the kinds it handles: publishing never waits, a subscriber too slow to keep up loses
//! the oldest events and is told so. CRM records created or changed ([`RecordUpdate`])
//! are for webhooks only, so they stay on the node where they happened.
//!
//! With several nodes on one PostgreSQL, what a node publishes is also handed to the
//! cluster link (`crate::cluster::events`), which sends it to the other nodes; what
//! arrives from them is published here with [`EventBus::publish_from_elsewhere`], for the
//! event stream only: webhooks follow [`EventBus::subscribe_own`], this node's own
//! events, so each event is delivered by the node where it happened, once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::crm::access::{self, AccessSettings, Viewer};
use crate::crm::model::{Presence, UserId};
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// An employee's presence was set (by themself or an admin): every employee's console
/// may show it, so it is not filtered by access level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PresenceUpdate {
    /// The employee's user id.
    pub user: String,
    pub status: Presence,
    /// Why a paused employee is paused; null otherwise.
    pub reason: Option<String>,
    /// RFC 3339: when the status was set.
    pub since: Option<String>,
}

/// A CRM record created or changed (`lead.created`, `entity.updated`, `activity.created`,
/// ...), for webhooks: the record as the API shows it, and whom it concerns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordUpdate {
    /// The webhook event name.
    pub event: &'static str,
    /// The record's JSON, as the API answers for it.
    pub data: serde_json::Value,
    /// The responsible person of every entity the record is or is shown on: one for an
    /// entity, those of its entities for an activity or e-mail.
    pub responsibles: Vec<Option<UserId>>,
    /// Employees told of it whatever its entities say: a personal mailbox's owner of its
    /// mail, a company mailbox's queue of its mail on no entity (E1).
    pub readers: Vec<UserId>,
    /// Who else is told.
    pub others: Others,
}

/// Who, besides a record's `readers`, is told of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Others {
    /// Who may see every entity it is on (A1, A2): records of the CRM.
    ByEntities,
    /// Admins: mail of a company mailbox or the forward address on no entity (E1).
    Admins,
    /// Nobody: a personal mailbox's mail on no entity is its owner's alone (E1).
    Nobody,
}

impl RecordUpdate {
    /// A record of the CRM, told to who may see every entity it is on.
    pub fn on_entities(
        event: &'static str,
        data: serde_json::Value,
        responsibles: Vec<Option<UserId>>,
    ) -> Self {
        Self {
            event,
            data,
            responsibles,
            readers: Vec::new(),
            others: Others::ByEntities,
        }
    }

    /// Whether `viewer` may be told of the record: one of its readers, or who may see
    /// every entity it is on (A1, and A2 for an activity; one on no entity only for who
    /// sees everything), or as [`Others`] says for mail on no entity (E1).
    pub fn visible_to(&self, settings: AccessSettings, viewer: &Viewer) -> bool {
        if viewer
            .user
            .as_ref()
            .is_some_and(|me| self.readers.contains(me))
        {
            return true;
        }
        match self.others {
            Others::ByEntities => access::activity_visible(settings, viewer, &self.responsibles),
            Others::Admins => viewer.admin,
            Others::Nobody => false,
        }
    }
}

/// What this node published, for its webhooks.
#[derive(Debug, Clone, PartialEq)]
pub enum Own {
    // Boxed: a call update is several times a record update's size.
    Call(Box<CallUpdate>),
    Record(RecordUpdate),
}

/// An event as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shared {
    // Boxed: presence updates are much smaller and as frequent.
    Call(Box<CallUpdate>),
    Presence(PresenceUpdate),
}

/// Events waiting for the cluster link; past this, new ones are dropped and counted
/// rather than letting a stalled database grow memory.
const LINK_CAPACITY: usize = 4096;

/// Cheap to clone; every clone publishes to the same subscribers.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<CallUpdate>,
    /// The call and record updates published by this node, not those received from
    /// others.
    own: broadcast::Sender<Own>,
    presence: broadcast::Sender<PresenceUpdate>,
    /// To the other nodes, when there are any (PostgreSQL).
    link: Option<mpsc::Sender<Shared>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
            own: broadcast::channel(CAPACITY).0,
            presence: broadcast::channel(CAPACITY).0,
            link: None,
        }
    }
}

impl EventBus {
    /// A bus whose events are also handed to the returned receiver, for the other nodes.
    pub fn linked() -> (Self, mpsc::Receiver<Shared>) {
        let (link, outgoing) = mpsc::channel(LINK_CAPACITY);
        let bus = Self {
            link: Some(link),
            ..Self::default()
        };
        (bus, outgoing)
    }

    pub fn publish(&self, update: CallUpdate) {
        self.share(Shared::Call(Box::new(update.clone())));
        // No subscriber is not an error: no webhook task (tests) or nobody has the call
        // window open.
        let _ = self.own.send(Own::Call(Box::new(update.clone())));
        let _ = self.sender.send(update);
    }

    /// A record created or changed here: for this node's webhooks only (the event stream
    /// does not show records, and each event's own node delivers its webhooks).
    pub fn publish_record(&self, update: RecordUpdate) {
        // No subscriber is not an error: no webhook task (tests).
        let _ = self.own.send(Own::Record(update));
    }

    /// Call updates of every node: the call window's cards.
    pub fn subscribe(&self) -> broadcast::Receiver<CallUpdate> {
        self.sender.subscribe()
    }

    /// Call and record updates published by this node: webhooks, which each event's own
    /// node delivers.
    pub fn subscribe_own(&self) -> broadcast::Receiver<Own> {
        self.own.subscribe()
    }

    pub fn publish_presence(&self, update: PresenceUpdate) {
        self.share(Shared::Presence(update.clone()));
        // No subscriber is not an error: no console is open.
        let _ = self.presence.send(update);
    }

    pub fn subscribe_presence(&self) -> broadcast::Receiver<PresenceUpdate> {
        self.presence.subscribe()
    }

    /// An event another node published: for this node's subscribers, not sent on again.
    pub fn publish_from_elsewhere(&self, event: Shared) {
        match event {
            Shared::Call(update) => {
                let _ = self.sender.send(*update);
            }
            Shared::Presence(update) => {
                let _ = self.presence.send(update);
            }
        }
    }

    fn share(&self, event: Shared) {
        let Some(link) = &self.link else { return };
        if link.try_send(event).is_err() {
            tracing::warn!(
                "the cluster link is behind or gone: an event is not sent to the other nodes"
            );
            metrics::counter!("leadline_cluster_events_dropped_total").increment(1);
        }
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

    #[tokio::test]
    async fn presence_updates_never_reach_call_subscribers() {
        let bus = EventBus::default();
        let mut calls = bus.subscribe();
        let mut presence = bus.subscribe_presence();
        bus.publish_presence(PresenceUpdate {
            user: "anna".into(),
            status: Presence::Paused,
            reason: Some("lunch".into()),
            since: Some("2026-11-23T10:00:00Z".into()),
        });
        bus.publish(update(&["ben"], None, None));
        assert_eq!(presence.recv().await.unwrap().status, Presence::Paused);
        assert_eq!(calls.recv().await.unwrap().ringing, ["ben"]);
        assert!(calls.try_recv().is_err(), "only the call update");
    }

    #[tokio::test]
    async fn own_events_go_to_the_link_and_webhooks_but_others_only_to_the_stream() {
        let (bus, mut link) = EventBus::linked();
        let mut stream = bus.subscribe();
        let mut own = bus.subscribe_own();
        bus.publish(update(&["anna"], None, None));
        bus.publish_from_elsewhere(Shared::Call(Box::new(update(&["ben"], None, None))));
        assert_eq!(stream.recv().await.unwrap().ringing, ["anna"]);
        assert_eq!(stream.recv().await.unwrap().ringing, ["ben"]);
        match own.recv().await.unwrap() {
            Own::Call(sent) => assert_eq!(sent.ringing, ["anna"]),
            other => panic!("{other:?}"),
        }
        assert!(own.try_recv().is_err(), "another node's event is not ours");
        match link.recv().await.unwrap() {
            Shared::Call(sent) => assert_eq!(sent.ringing, ["anna"]),
            other => panic!("{other:?}"),
        }
        assert!(link.try_recv().is_err(), "a received event is not sent on");
    }

    #[tokio::test]
    async fn records_go_to_webhooks_only_never_to_the_stream_or_the_link() {
        let (bus, mut link) = EventBus::linked();
        let mut stream = bus.subscribe();
        let mut own = bus.subscribe_own();
        bus.publish_record(RecordUpdate::on_entities(
            "lead.created",
            serde_json::json!({"id": "l1"}),
            vec![Some(UserId("anna".into()))],
        ));
        match own.recv().await.unwrap() {
            Own::Record(sent) => assert_eq!(sent.event, "lead.created"),
            other => panic!("{other:?}"),
        }
        assert!(
            stream.try_recv().is_err(),
            "the call window shows calls only"
        );
        assert!(
            link.try_recv().is_err(),
            "delivered by the node where it happened"
        );
    }

    #[test]
    fn a1_a_record_is_visible_to_who_may_see_every_entity_it_is_on() {
        use crate::crm::access::Level;
        let anna = Viewer {
            user: Some(UserId("anna".into())),
            admin: false,
            queue_mates: std::iter::once(UserId("anna".into())).collect(),
        };
        let own = AccessSettings {
            agent_view: Level::Own,
            agent_edit: Level::Own,
        };
        let record = |responsibles: &[Option<&str>]| {
            RecordUpdate::on_entities(
                "activity.created",
                serde_json::Value::Null,
                responsibles
                    .iter()
                    .map(|r| r.map(|u| UserId(u.into())))
                    .collect(),
            )
        };
        assert!(record(&[Some("anna")]).visible_to(own, &anna));
        assert!(!record(&[Some("ben")]).visible_to(own, &anna));
        assert!(!record(&[Some("anna"), Some("ben")]).visible_to(own, &anna));
        assert!(!record(&[None]).visible_to(own, &anna));
        assert!(!record(&[]).visible_to(own, &anna));
    }

    #[test]
    fn e1_mail_on_no_entity_reaches_its_readers_and_admins_only_as_its_mailbox_allows() {
        use crate::crm::access::Level;
        let viewer = |user: &str, admin: bool| Viewer {
            user: Some(UserId(user.into())),
            admin,
            queue_mates: std::iter::once(UserId(user.into())).collect(),
        };
        let (anna, ben, admin) = (
            viewer("anna", false),
            viewer("ben", false),
            viewer("root", true),
        );
        let all = AccessSettings {
            agent_view: Level::All,
            agent_edit: Level::Own,
        };
        let mail = |others: Others| RecordUpdate {
            event: "email.ingested",
            data: serde_json::Value::Null,
            responsibles: Vec::new(),
            readers: vec![UserId("anna".into())],
            others,
        };
        let personal = mail(Others::Nobody);
        assert!(personal.visible_to(all, &anna), "the mailbox's owner");
        assert!(!personal.visible_to(all, &admin), "not even an admin");
        assert!(!personal.visible_to(all, &ben));
        let company = mail(Others::Admins);
        assert!(company.visible_to(all, &anna), "the mailbox's queue");
        assert!(company.visible_to(all, &admin));
        assert!(
            !company.visible_to(all, &ben),
            "agent_view all is for the CRM's records, not mail on no entity"
        );
        // On the CRM, a personal mailbox's owner is told even of an entity they may not see.
        let own = AccessSettings {
            agent_view: Level::Own,
            agent_edit: Level::Own,
        };
        let on_crm = RecordUpdate {
            responsibles: vec![Some(UserId("ben".into()))],
            ..mail(Others::ByEntities)
        };
        assert!(on_crm.visible_to(own, &anna));
        assert!(on_crm.visible_to(own, &ben));
        assert!(on_crm.visible_to(own, &admin));
    }

    #[test]
    fn a_presence_update_is_written_with_the_apis_names() {
        let json = serde_json::to_value(PresenceUpdate {
            user: "anna".into(),
            status: Presence::Offline,
            reason: None,
            since: None,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"user": "anna", "status": "offline", "reason": null, "since": null})
        );
    }
}
