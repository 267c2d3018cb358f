//! The queue desk: which agents are free, which callers wait in which queue, and who is
//! offered whom. The decisions are the pure [`Board`]'s; the desk holds it, hears about
//! every call's agents, presence changes and waiting callers through the [`Desk`] handle,
//! and sends each waiting call its offers and position changes on that call's channel.
//! Changes are short, non-blocking sections under one lock, and an agent who becomes
//! free is offered the longest-waiting caller in the same section: no task hop between
//! "free" and "offered". One small task wakes the desk when an agent's wrap-up or rest
//! ends while callers wait. The desk also keeps each queue's music (one generator per
//! queue, fanned out to its waiting callers by the media relay).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::crm::model::{Millis, Presence, QueueId, UserId};
use crate::crm::queueing::{Board, QueueRules, QueueSettings};
use crate::media::greeting::Greeting;
use crate::media::music::Music;
use crate::store::{Store, now_ms};

/// How often the desk looks again while callers wait, whatever it heard.
const RECHECK_MS: Millis = 1_000;

/// What the desk knows about an agent beyond their stored presence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentNow {
    /// In a call of ours: talking in one (incoming, outgoing or internal) or their phone
    /// ringing for one.
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

/// What the desk tells a waiting call.
#[derive(Debug)]
pub enum DeskNews {
    /// Ring these agents for the caller, all at once. `since`: when the desk decided, to
    /// measure how long the offer takes to ring.
    Offer { users: Vec<UserId>, since: Instant },
    /// The caller's place in the queue changed (1 = next).
    Position(usize),
}

/// A caller's place in a queue, as the desk gave it.
#[derive(Debug)]
pub struct Ticket {
    pub id: u64,
    pub news: mpsc::UnboundedReceiver<DeskNews>,
    pub position: usize,
}

/// Where the desk reads queues' members and settings and agents' devices: the store's
/// in-memory snapshot and bindings.
trait Directory: Send + Sync {
    fn rules(&self, queue: &QueueId) -> Option<QueueRules>;
    fn can_ring(&self, user: &UserId, now: Millis) -> bool;
}

impl Directory for Store {
    fn rules(&self, queue: &QueueId) -> Option<QueueRules> {
        let members = self.cached_queue_members(queue)?;
        let strategy = self
            .cached_queue_settings(queue)
            .unwrap_or_default()
            .strategy;
        Some(QueueRules { members, strategy })
    }

    fn can_ring(&self, user: &UserId, now: Millis) -> bool {
        !self.cached_user_bindings(user, now).is_empty()
    }
}

/// Without a store (tools that need an `AppState` and no calls): no queue, no device.
struct Nowhere;

impl Directory for Nowhere {
    fn rules(&self, _: &QueueId) -> Option<QueueRules> {
        None
    }

    fn can_ring(&self, _: &UserId, _: Millis) -> bool {
        false
    }
}

struct State {
    board: Board,
    calls: HashMap<u64, Waiting>,
    /// The line as positions were last told.
    told_line: u64,
}

struct Waiting {
    news: mpsc::UnboundedSender<DeskNews>,
    position: usize,
}

struct Inner {
    state: Mutex<State>,
    directory: Box<dyn Directory>,
    /// Woken when the next wrap-up or rest end may have moved.
    wake: Notify,
    music: Mutex<HashMap<QueueId, Music>>,
    data_dir: std::path::PathBuf,
}

/// Cheap to clone; every clone talks to the same desk.
#[derive(Clone)]
pub struct Desk {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Desk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desk").finish_non_exhaustive()
    }
}

impl Default for Desk {
    /// A desk with no store: nobody can be offered anything.
    fn default() -> Self {
        Self::with(Box::new(Nowhere), Vec::new(), std::path::PathBuf::new())
    }
}

impl Desk {
    /// The desk of a running gateway: queues and devices from `store`'s snapshot, the
    /// stored presences, music from the data dir. Starts its wake-up task, which ends
    /// with `stop`.
    pub fn start(
        store: Store,
        presences: impl IntoIterator<Item = (UserId, Presence, u32)>,
        data_dir: std::path::PathBuf,
        stop: tokio_util::sync::CancellationToken,
    ) -> Self {
        let desk = Self::with(Box::new(store), presences, data_dir);
        let waker = desk.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = waker.wake_when_due() => {}
                () = stop.cancelled() => {}
            }
        });
        desk
    }

    fn with(
        directory: Box<dyn Directory>,
        presences: impl IntoIterator<Item = (UserId, Presence, u32)>,
        data_dir: std::path::PathBuf,
    ) -> Self {
        let now = now_ms();
        let mut board = Board::default();
        for (user, presence, max_calls) in presences {
            board.set_presence(&user, presence, now);
            board.set_max_calls(&user, max_calls, now);
        }
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    board,
                    calls: HashMap::new(),
                    told_line: 0,
                }),
                directory,
                wake: Notify::new(),
                music: Mutex::new(HashMap::new()),
                data_dir,
            }),
        }
    }

    /// Offers callers when an agent's wrap-up or rest ends, and at least every second
    /// while callers wait: a phone that registers again or a member added to a queue
    /// changes nothing the desk hears of.
    async fn wake_when_due(&self) {
        loop {
            let now = now_ms();
            let next = {
                let state = self.lock();
                let waiting = !state.calls.is_empty();
                let due = state.board.next_wake(now);
                match (due, waiting) {
                    (Some(at), true) => Some(at.min(now + RECHECK_MS)),
                    (None, true) => Some(now + RECHECK_MS),
                    (due, false) => due,
                }
            };
            let woken = self.inner.wake.notified();
            match next {
                Some(at) => {
                    let wait = u64::try_from(at - now).unwrap_or(0);
                    tokio::select! {
                        () = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {
                            self.changed(&mut self.lock());
                        }
                        () = woken => {}
                    }
                }
                None => woken.await,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After any change: offers to free agents, new positions to waiting callers.
    fn changed(&self, state: &mut State) {
        let now = now_ms();
        let since = Instant::now();
        let directory = &self.inner.directory;
        let offers = state.board.dispatch(
            now,
            |queue| directory.rules(queue),
            |user| directory.can_ring(user, now),
        );
        for offer in offers {
            match state.calls.get(&offer.ticket) {
                Some(waiting) => {
                    let news = DeskNews::Offer {
                        users: offer.users,
                        since,
                    };
                    if waiting.news.send(news).is_err() {
                        // The call is gone without saying so: free its agents.
                        state.board.leave(offer.ticket);
                        state.calls.remove(&offer.ticket);
                    }
                }
                None => state.board.leave(offer.ticket),
            }
        }
        if state.told_line != state.board.line_changes() {
            state.told_line = state.board.line_changes();
            for (ticket, position) in state.board.positions() {
                if let Some(waiting) = state.calls.get_mut(&ticket)
                    && waiting.position != position
                {
                    waiting.position = position;
                    let _ = waiting.news.send(DeskNews::Position(position));
                }
            }
        }
        self.inner.wake.notify_one();
    }

    /// An agent's presence changed (after it was stored): a newly available agent may be
    /// offered a waiting caller at once.
    pub fn presence_changed(&self, user: &UserId, status: Presence) {
        let mut state = self.lock();
        state.board.set_presence(user, status, now_ms());
        self.changed(&mut state);
    }

    /// How many calls `user` may be in at once changed (after it was stored).
    pub fn max_calls_changed(&self, user: &UserId, max_calls: u32) {
        let mut state = self.lock();
        state.board.set_max_calls(user, max_calls, now_ms());
        self.changed(&mut state);
    }

    /// An agent's presence as the desk knows it.
    pub fn presence(&self, user: &UserId) -> Presence {
        self.lock().board.presence(user)
    }

    /// Whether `user` is in a call or in wrap-up now.
    pub fn agent(&self, user: &UserId, now: Millis) -> AgentNow {
        let state = self.lock().board.agent_state(user, now);
        AgentNow {
            in_call: state.in_call,
            wrap_up_until: state.wrap_up_until,
        }
    }

    /// The callers waiting in `queue`, next served first.
    pub fn waiting(&self, queue: &QueueId) -> Vec<WaitingCaller> {
        self.lock()
            .board
            .waiting_in(queue)
            .into_iter()
            .map(|(position, w)| WaitingCaller {
                call_id: w.call_id.clone(),
                call: w.call.clone(),
                caller: w.caller.clone(),
                since: w.since,
                position,
            })
            .collect()
    }

    /// The queue's members who can be offered a call now, in its strategy's order, and
    /// whether anyone in it is available at all (so that a caller may wait).
    pub fn free_members(&self, queue: &QueueId, members: &[UserId]) -> (Vec<UserId>, bool) {
        let now = now_ms();
        let directory = &self.inner.directory;
        let strategy = directory
            .rules(queue)
            .map_or(crate::crm::model::QueueStrategy::InTurn, |rules| {
                rules.strategy
            });
        let rules = QueueRules {
            members: members.to_vec(),
            strategy,
        };
        let state = self.lock();
        let can_ring = |user: &UserId| directory.can_ring(user, now);
        (
            state.board.free_in_order(&rules, now, can_ring),
            state.board.staffed(&rules, can_ring),
        )
    }

    /// A call's agents now: who talks in it, whose phones ring for it. An agent who
    /// leaves a call starts `wrap_up_ms` of wrap-up.
    pub fn call_state(
        &self,
        call_id: &str,
        talking: Vec<UserId>,
        ringing: Vec<UserId>,
        wrap_up_ms: Millis,
    ) {
        let mut state = self.lock();
        state
            .board
            .call_state(call_id, talking, ringing, wrap_up_ms, now_ms());
        self.changed(&mut state);
    }

    /// A caller starts waiting in `queue`.
    pub fn enqueue(
        &self,
        queue: &QueueId,
        call_id: &str,
        call: Option<String>,
        caller: &str,
    ) -> Ticket {
        let (sender, news) = mpsc::unbounded_channel();
        let mut state = self.lock();
        let id = state.board.enqueue(
            queue.clone(),
            call_id.to_owned(),
            call,
            caller.to_owned(),
            now_ms(),
        );
        let position = state.board.positions().get(&id).copied().unwrap_or(1);
        state.calls.insert(
            id,
            Waiting {
                news: sender,
                position,
            },
        );
        self.changed(&mut state);
        Ticket { id, news, position }
    }

    /// The offer to a waiting caller is over: taken by `answered_by`, or by nobody.
    pub fn offer_over(&self, ticket: u64, answered_by: Option<&UserId>) {
        let mut state = self.lock();
        state.board.offer_over(ticket, answered_by, now_ms());
        if answered_by.is_some() {
            state.calls.remove(&ticket);
        }
        self.changed(&mut state);
    }

    /// The caller stopped waiting.
    pub fn leave(&self, ticket: u64) {
        let mut state = self.lock();
        state.board.leave(ticket);
        state.calls.remove(&ticket);
        self.changed(&mut state);
    }

    /// The music `queue`'s waiting callers hear: started on first use, from the uploaded
    /// file or the built-in pattern.
    pub fn music(&self, queue: &QueueId, settings: &QueueSettings) -> Music {
        let mut music = self.inner.music.lock().unwrap_or_else(|e| e.into_inner());
        music
            .entry(queue.clone())
            .or_insert_with(|| Music::start(self.read_music(settings)))
            .clone()
    }

    fn read_music(&self, settings: &QueueSettings) -> Option<Greeting> {
        let file = settings.music.as_ref()?;
        let path = self
            .inner
            .data_dir
            .join(crate::sip::b2bua::MUSIC_DIR)
            .join(file);
        let bytes = std::fs::read(&path)
            .map_err(
                |err| tracing::warn!(%err, path = %path.display(), "cannot read the queue's music"),
            )
            .ok()?;
        Greeting::from_wav(&bytes)
            .map_err(|err| tracing::warn!(%err, "the queue's music does not read"))
            .ok()
    }

    /// A queue's music was uploaded or removed: callers waiting now hear the new one.
    pub fn music_changed(&self, queue: &QueueId, settings: &QueueSettings) {
        let music = self.inner.music.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(playing) = music.get(queue) {
            playing.replace(self.read_music(settings));
        }
    }
}
