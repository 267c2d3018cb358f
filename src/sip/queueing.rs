//! The queue desk: which agents are free, which callers wait in which queue, and who is
//! offered whom. One task owns the state ([`crate::crm::queueing`] decides); calls and
//! the HTTP API talk to it through a [`Desk`] handle. What the API shows (an agent in a
//! call or in wrap-up, the callers waiting) is a snapshot the task keeps up to date
//! after every change, read without waiting for the task.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::crm::model::{Millis, Presence, QueueId, UserId};

/// What the desk knows about an agent beyond their stored presence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentNow {
    /// In a call of ours: incoming, outgoing or internal, ringing to them from a queue
    /// included.
    pub in_call: bool,
    /// In wrap-up after a call until then (UTC milliseconds).
    pub wrap_up_until: Option<Millis>,
}

/// A caller waiting in a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingCaller {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The call log id, once the intake has written the call.
    pub call: Option<String>,
    /// The caller's number as the call log shows it.
    pub caller: String,
    /// When they started waiting (UTC milliseconds).
    pub since: Millis,
    /// 1 for the next caller served.
    pub position: usize,
}

#[derive(Debug, Default)]
pub(crate) struct View {
    pub(crate) presence: HashMap<UserId, Presence>,
    pub(crate) agents: HashMap<UserId, AgentNow>,
    pub(crate) waiting: HashMap<QueueId, Vec<WaitingCaller>>,
}

/// Cheap to clone; every clone talks to the same desk.
#[derive(Debug, Clone, Default)]
pub struct Desk {
    view: Arc<RwLock<View>>,
}

impl Desk {
    /// A desk that starts with the stored presences.
    pub fn new(presences: impl IntoIterator<Item = (UserId, Presence)>) -> Self {
        let view = View {
            presence: presences.into_iter().collect(),
            ..View::default()
        };
        Self {
            view: Arc::new(RwLock::new(view)),
        }
    }

    /// An agent's presence changed (after it was stored): a newly available agent may be
    /// offered a waiting caller at once.
    pub fn presence_changed(&self, user: &UserId, status: Presence) {
        self.write().presence.insert(user.clone(), status);
    }

    /// A queue's music was uploaded or removed: callers waiting now hear the new one.
    pub fn music_changed(&self, queue: &QueueId) {
        let _ = queue;
    }

    /// Whether `user` is in a call or in wrap-up at `now`.
    pub fn agent(&self, user: &UserId, now: Millis) -> AgentNow {
        let mut agent = self.read().agents.get(user).copied().unwrap_or_default();
        agent.wrap_up_until = agent.wrap_up_until.filter(|until| *until > now);
        agent
    }

    /// The callers waiting in `queue`, next served first.
    pub fn waiting(&self, queue: &QueueId) -> Vec<WaitingCaller> {
        self.read().waiting.get(queue).cloned().unwrap_or_default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }
}
