//! Call-centre queueing, pure: who of a queue's agents is free, which callers wait in
//! which queue, and whom each waiting caller is offered to next. No clock, no I/O: the
//! time comes in as UTC milliseconds; the queue desk (`crate::sip::queueing`) keeps one
//! [`Board`] and carries out its [`Offer`]s.
//!
//! An agent is **free** when their presence is `available`, the calls of ours they talk
//! in, their phones ring for and the waiting callers offered to them are fewer than their
//! `max_calls` (1 unless set: a person takes one call at a time), their wrap-up after their
//! last call is over, and a queue call they let ring out is not too recent ([`REST_MS`]). Waiting callers are served first come, first served: across queues by
//! arrival, so an agent in two queues takes the caller who has waited longest.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::model::{Millis, OverflowAction, Presence, QueueId, QueueStrategy, UserId};

/// How long an agent who let an offered queue call ring out (or declined it) is not
/// offered another: without it a waiting caller would ring the same phone again at once.
pub const REST_MS: Millis = 10_000;

/// A queue's settings for waiting callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    pub strategy: QueueStrategy,
    pub max_wait_s: u32,
    pub wrap_up_s: u32,
    pub announce_position: bool,
    pub overflow: Overflow,
    /// The uploaded music's file name in the data dir's `music` folder.
    pub music: Option<String>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            strategy: QueueStrategy::InTurn,
            max_wait_s: 300,
            wrap_up_s: 0,
            announce_position: false,
            overflow: Overflow::default(),
            music: None,
        }
    }
}

/// What happens to a caller who waited `max_wait_s`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overflow {
    pub action: OverflowAction,
    /// With `forward`: where to (E.164).
    pub forward_to: Option<String>,
}

impl Default for Overflow {
    fn default() -> Self {
        Self {
            action: OverflowAction::Voicemail,
            forward_to: None,
        }
    }
}

/// What the board needs to know of a queue when it offers one of its callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRules {
    /// In the queue's order (for `in_turn`, the T9 rotation's order).
    pub members: Vec<UserId>,
    pub strategy: QueueStrategy,
}

/// A waiting caller offered to these agents (all at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub ticket: u64,
    pub users: Vec<UserId>,
}

/// A caller waiting in a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub ticket: u64,
    pub queue: QueueId,
    pub call_id: String,
    pub call: Option<String>,
    pub caller: String,
    pub since: Millis,
    /// The agents the caller is being offered to now; empty while just waiting.
    pub offered: Vec<UserId>,
}

#[derive(Debug, Clone)]
struct Agent {
    presence: Presence,
    talking: u32,
    ringing: u32,
    /// The waiting callers being offered to them.
    offered: Vec<u64>,
    /// How many calls they may be in at once.
    max_calls: u32,
    wrap_up_until: Millis,
    rest_until: Millis,
    /// When they last finished a call (or were first seen): `longest_idle` picks the
    /// smallest.
    idle_since: Millis,
}

impl Agent {
    fn new(presence: Presence, now: Millis) -> Self {
        Self {
            presence,
            talking: 0,
            ringing: 0,
            offered: Vec::new(),
            max_calls: 1,
            wrap_up_until: 0,
            rest_until: 0,
            idle_since: now,
        }
    }
}

/// One call's agents, as its driver last reported them.
#[derive(Debug, Clone, Default)]
struct CallAgents {
    talking: Vec<UserId>,
    ringing: Vec<UserId>,
    wrap_up_ms: Millis,
}

/// Everything the desk decides with; see the module doc.
#[derive(Debug, Default)]
pub struct Board {
    agents: HashMap<UserId, Agent>,
    calls: HashMap<String, CallAgents>,
    /// In arrival order.
    waiting: Vec<Waiter>,
    next_ticket: u64,
    /// `in_turn`: the member last offered a waiting caller, per queue.
    last_offered: HashMap<QueueId, UserId>,
    /// Bumped whenever a caller joins or leaves the line: positions changed.
    line_changes: u64,
}

/// An agent as the API shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentState {
    pub presence: Presence,
    pub in_call: bool,
    pub wrap_up_until: Option<Millis>,
}

impl Board {
    pub fn new(presences: impl IntoIterator<Item = (UserId, Presence)>, now: Millis) -> Self {
        Self {
            agents: presences
                .into_iter()
                .map(|(user, presence)| (user, Agent::new(presence, now)))
                .collect(),
            ..Self::default()
        }
    }

    fn agent_mut(&mut self, user: &UserId, now: Millis) -> &mut Agent {
        self.agents
            .entry(user.clone())
            .or_insert_with(|| Agent::new(Presence::Available, now))
    }

    pub fn set_presence(&mut self, user: &UserId, presence: Presence, now: Millis) {
        self.agent_mut(user, now).presence = presence;
    }

    /// How many calls of ours `user` may be in at once (at least 1).
    pub fn set_max_calls(&mut self, user: &UserId, max_calls: u32, now: Millis) {
        self.agent_mut(user, now).max_calls = max_calls.max(1);
    }

    pub fn presence(&self, user: &UserId) -> Presence {
        self.agents
            .get(user)
            .map_or(Presence::Available, |a| a.presence)
    }

    /// What the API shows of an agent at `now`.
    pub fn agent_state(&self, user: &UserId, now: Millis) -> AgentState {
        match self.agents.get(user) {
            Some(agent) => AgentState {
                presence: agent.presence,
                in_call: agent.talking > 0 || agent.ringing > 0 || !agent.offered.is_empty(),
                wrap_up_until: Some(agent.wrap_up_until).filter(|until| *until > now),
            },
            None => AgentState {
                presence: Presence::Available,
                in_call: false,
                wrap_up_until: None,
            },
        }
    }

    /// Every agent the board knows.
    pub fn agents(&self) -> impl Iterator<Item = &UserId> {
        self.agents.keys()
    }

    /// A call's agents now: who talks in it and whose phones ring for it. An agent who
    /// stops talking in it starts the call's wrap-up once they talk in no other call.
    pub fn call_state(
        &mut self,
        call_id: &str,
        talking: Vec<UserId>,
        ringing: Vec<UserId>,
        wrap_up_ms: Millis,
        now: Millis,
    ) {
        let before = self.calls.remove(call_id).unwrap_or_default();
        for user in &before.talking {
            if !talking.contains(user) {
                let agent = self.agent_mut(user, now);
                agent.talking = agent.talking.saturating_sub(1);
                if agent.talking == 0 {
                    agent.idle_since = now;
                    agent.wrap_up_until = agent.wrap_up_until.max(now + before.wrap_up_ms);
                }
            }
        }
        for user in &talking {
            if !before.talking.contains(user) {
                self.agent_mut(user, now).talking += 1;
            }
        }
        for user in &before.ringing {
            if !ringing.contains(user) {
                let agent = self.agent_mut(user, now);
                agent.ringing = agent.ringing.saturating_sub(1);
            }
        }
        for user in &ringing {
            if !before.ringing.contains(user) {
                self.agent_mut(user, now).ringing += 1;
            }
        }
        if !talking.is_empty() || !ringing.is_empty() {
            self.calls.insert(
                call_id.to_owned(),
                CallAgents {
                    talking,
                    ringing,
                    wrap_up_ms,
                },
            );
        }
    }

    /// Whether `user` may be offered a queue call at `now`.
    pub fn is_free(&self, user: &UserId, now: Millis) -> bool {
        match self.agents.get(user) {
            None => true,
            Some(agent) => {
                let engaged = agent.talking as usize + agent.ringing as usize + agent.offered.len();
                agent.presence == Presence::Available
                    && engaged < agent.max_calls as usize
                    && now >= agent.wrap_up_until
                    && now >= agent.rest_until
            }
        }
    }

    /// The queue's free members who can be rung (`can_ring`: a registered device), in
    /// the order the strategy offers them: `in_turn` the members' order, `longest_idle`
    /// the one idle longest first; `ring_all` rings them all at once.
    pub fn free_in_order(
        &self,
        rules: &QueueRules,
        now: Millis,
        can_ring: impl Fn(&UserId) -> bool,
    ) -> Vec<UserId> {
        let mut free: Vec<UserId> = rules
            .members
            .iter()
            .filter(|user| self.is_free(user, now) && can_ring(user))
            .cloned()
            .collect();
        if rules.strategy == QueueStrategy::LongestIdle {
            free.sort_by_key(|user| self.agents.get(user).map_or(0, |a| a.idle_since));
        }
        free
    }

    /// Whether waiting makes sense: some member is `available` with a device, so a
    /// caller who waits will be offered to someone once they are free.
    pub fn staffed(&self, rules: &QueueRules, can_ring: impl Fn(&UserId) -> bool) -> bool {
        rules
            .members
            .iter()
            .any(|user| self.presence(user) == Presence::Available && can_ring(user))
    }

    /// A caller starts waiting; the ticket names them from now on.
    pub fn enqueue(
        &mut self,
        queue: QueueId,
        call_id: String,
        call: Option<String>,
        caller: String,
        now: Millis,
    ) -> u64 {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.line_changes += 1;
        self.waiting.push(Waiter {
            ticket,
            queue,
            call_id,
            call,
            caller,
            since: now,
            offered: Vec::new(),
        });
        ticket
    }

    /// The caller stopped waiting (hung up, overflowed, or their call ended).
    pub fn leave(&mut self, ticket: u64) {
        if let Some(index) = self.waiting.iter().position(|w| w.ticket == ticket) {
            self.line_changes += 1;
            let waiter = self.waiting.remove(index);
            self.release(&waiter.offered, ticket);
        }
    }

    fn release(&mut self, users: &[UserId], ticket: u64) {
        for user in users {
            if let Some(agent) = self.agents.get_mut(user) {
                agent.offered.retain(|t| *t != ticket);
            }
        }
    }

    /// The offer to a waiting caller is over: `answered_by` took the call (the caller
    /// leaves the queue), or nobody did (the caller keeps their place, and the agents
    /// offered rest for [`REST_MS`]).
    pub fn offer_over(&mut self, ticket: u64, answered_by: Option<&UserId>, now: Millis) {
        let Some(index) = self.waiting.iter().position(|w| w.ticket == ticket) else {
            return;
        };
        let offered = std::mem::take(&mut self.waiting[index].offered);
        self.release(&offered, ticket);
        match answered_by {
            Some(_) => {
                self.line_changes += 1;
                self.waiting.remove(index);
            }
            None => {
                for user in &offered {
                    self.agent_mut(user, now).rest_until = now + REST_MS;
                }
            }
        }
    }

    /// Offers waiting callers to free agents: the longest-waiting caller first, each to
    /// the free members of their queue in its strategy (`ring_all`: all of them, the
    /// others: one). `rules_of` gives a queue's members and strategy, `can_ring` whether
    /// an agent has a registered device.
    pub fn dispatch(
        &mut self,
        now: Millis,
        rules_of: impl Fn(&QueueId) -> Option<QueueRules>,
        can_ring: impl Fn(&UserId) -> bool,
    ) -> Vec<Offer> {
        let mut offers = Vec::new();
        // Each queue's rules once per dispatch: many callers wait in few queues.
        let mut rules_by_queue: HashMap<QueueId, Option<QueueRules>> = HashMap::new();
        for index in 0..self.waiting.len() {
            if !self.waiting[index].offered.is_empty() {
                continue;
            }
            let queue = self.waiting[index].queue.clone();
            let rules = rules_by_queue
                .entry(queue.clone())
                .or_insert_with(|| rules_of(&queue));
            let Some(mut rules) = rules.clone() else {
                continue;
            };
            if rules.strategy == QueueStrategy::InTurn {
                rotate_after(&mut rules.members, self.last_offered.get(&queue));
            }
            let free = self.free_in_order(&rules, now, &can_ring);
            let chosen: Vec<UserId> = match rules.strategy {
                QueueStrategy::RingAll => free,
                _ => free.into_iter().take(1).collect(),
            };
            if chosen.is_empty() {
                continue;
            }
            let ticket = self.waiting[index].ticket;
            for user in &chosen {
                self.agent_mut(user, now).offered.push(ticket);
            }
            if rules.strategy == QueueStrategy::InTurn {
                self.last_offered.insert(queue, chosen[0].clone());
            }
            self.waiting[index].offered = chosen.clone();
            offers.push(Offer {
                ticket,
                users: chosen,
            });
        }
        offers
    }

    /// The next moment an agent's wrap-up or rest ends while callers wait: the desk
    /// dispatches again then.
    pub fn next_wake(&self, now: Millis) -> Option<Millis> {
        if self.waiting.is_empty() {
            return None;
        }
        self.agents
            .values()
            .flat_map(|a| [a.wrap_up_until, a.rest_until])
            .filter(|at| *at > now)
            .min()
    }

    /// The callers waiting in `queue`, next served first, with their positions (1 = next).
    pub fn waiting_in(&self, queue: &QueueId) -> Vec<(usize, &Waiter)> {
        self.waiting
            .iter()
            .filter(|w| &w.queue == queue)
            .enumerate()
            .map(|(i, w)| (i + 1, w))
            .collect()
    }

    /// A number that changes whenever a caller joins or leaves the line: positions need
    /// telling only then.
    pub fn line_changes(&self) -> u64 {
        self.line_changes
    }

    /// Every waiting caller's position in their queue (1 = next), by ticket.
    pub fn positions(&self) -> HashMap<u64, usize> {
        let mut per_queue: HashMap<&QueueId, usize> = HashMap::new();
        self.waiting
            .iter()
            .map(|w| {
                let position = per_queue.entry(&w.queue).or_default();
                *position += 1;
                (w.ticket, *position)
            })
            .collect()
    }

    /// The queues that have callers waiting.
    pub fn queues_waiting(&self) -> Vec<QueueId> {
        let mut queues: Vec<QueueId> = self.waiting.iter().map(|w| w.queue.clone()).collect();
        queues.sort();
        queues.dedup();
        queues
    }
}

/// `in_turn`: the members starting after the one offered last, wrapping around.
fn rotate_after(members: &mut [UserId], last: Option<&UserId>) {
    if let Some(position) = last.and_then(|last| members.iter().position(|m| m == last)) {
        members.rotate_left(position + 1);
    }
}

#[cfg(test)]
mod tests;
