//! The call's driver: one task per call owns the call's machine ([`crate::sip::call`])
//! and, by the machine's ids, the rsipstack dialogs of its legs and the transactions of
//! the requests it holds. It turns what they report into events, reads the time once per
//! event, and carries out the machine's actions.
//!
//! One `select!` waits on the call's dialog-state channel, the earliest timer, the
//! in-flight SIP requests (a `FuturesUnordered`: their results come back as events;
//! nothing is spawned for the call's own work), the relay's media timeout, the late
//! intake and hand-over asks from other calls (through the [`super::registry`]). The
//! SDP rewrite for the media relay happens here, where the relay session is.

use std::collections::VecDeque;
use std::pin::Pin;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use rsipstack::dialog::dialog::{DialogStateSender, TransactionHandle};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::registry::CallToken;
use super::*;
use crate::media::voicemail::{self, VoicemailError};
use crate::sip::call::{
    self, Action, Body, Event, Handover, InDialog, Leg, Metric, Now, ReqId, Timer, Write,
};
use crate::store::journal::CallWrite;

pub(crate) type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What an in-flight request came back with.
enum Done {
    Event(Event),
    /// Another call handed a dialog over: filed under `leg`, then the machine is told.
    Taken {
        leg: Leg,
        takeover: Result<Takeover, u16>,
    },
    Nothing,
}

/// A consultation transfer asking the call that holds the replaced dialog for its far
/// side.
pub(crate) struct HandoverAsk {
    pub replaces: call::Replaces,
    /// Where the handed-over dialog's changes go from now on.
    pub states: DialogStateSender,
    pub reply: oneshot::Sender<Result<Takeover, u16>>,
}

/// The far side of a call, handed over to the call that takes it.
pub(crate) struct Takeover {
    pub dialog: InviteDialog,
    pub sdp: Option<Body>,
    pub user: Option<UserId>,
    pub contact: String,
}

/// What a call is besides its machine: who it is for and how its legs are sent.
pub(super) struct CallSpec {
    pub call_record: Option<String>,
    pub call_id: String,
    pub customer: String,
    /// Our number the call is on; `None` for a call between two employees (no CRM).
    pub number: Option<NumberSettings>,
    /// The employee whose own phone placed the call (outgoing and internal calls): in a
    /// call for the queues as long as it lasts.
    pub employee: Option<UserId>,
    pub direction: Direction,
    /// The caller as the called legs see it.
    pub shown: Shown,
    /// Click-to-call: the customer as the employee's phones see them.
    pub phone_shown: Option<Shown>,
    /// The host of the From URI on the outgoing legs (ours, or the carrier's domain).
    pub from_host: String,
    /// Answers the far side's digest challenge (a carrier trunk's account).
    pub credential: Option<rsipstack::dialog::authenticate::Credential>,
    pub media: CallMedia,
}

pub(super) struct Driver {
    b2bua: Arc<B2bua>,
    machine: call::Call,
    spec: CallSpec,
    state_sender: DialogStateSender,
    dialogs: Vec<(Leg, InviteDialog)>,
    held: Vec<(ReqId, TransactionHandle)>,
    next_req: u32,
    timers: Vec<(Timer, Instant)>,
    inflight: FuturesUnordered<Boxed<Done>>,
    queued: VecDeque<Event>,
    late_intake: Option<Boxed<()>>,
    token: CallToken,
    /// The call's dialogs are in the registry.
    registered: bool,
    handover_sender: mpsc::UnboundedSender<HandoverAsk>,
    handovers: mpsc::UnboundedReceiver<HandoverAsk>,
    /// The ask the machine is deciding.
    asked: Option<HandoverAsk>,
    /// The dialog handed over to another call, and where its changes go.
    handed_over: Option<(rsipstack::dialog::DialogId, DialogStateSender)>,
    voicemail_stop: Option<oneshot::Sender<()>>,
    /// The caller waits in the queue: the desk's ticket and news.
    waiting: Option<crate::sip::queueing::Ticket>,
    /// The codec the queue answered the caller with: what offered agents are offered.
    queue_codec: Option<crate::media::g711::Codec>,
    /// When the desk decided the offer now being sent.
    offer_since: Option<Instant>,
    /// The call's agents as the desk was last told: (talking, ringing).
    told_desk: (Vec<UserId>, Vec<UserId>),
    /// Why the last carrier leg could not even be sent (its connection or certificate
    /// refused): the caller's refusal says so, else only our log would.
    unsent: Option<String>,
}

impl Driver {
    pub(super) fn new(
        b2bua: Arc<B2bua>,
        machine: call::Call,
        spec: CallSpec,
        state_sender: DialogStateSender,
        caller: Option<InviteDialog>,
        late_intake: Option<Boxed<()>>,
    ) -> Self {
        let (handover_sender, handovers) = mpsc::unbounded_channel();
        let token = b2bua.calls.token();
        let mut driver = Self {
            b2bua,
            machine,
            spec,
            state_sender,
            dialogs: Vec::new(),
            held: Vec::new(),
            next_req: 0,
            timers: Vec::new(),
            inflight: FuturesUnordered::new(),
            queued: VecDeque::new(),
            late_intake,
            token,
            registered: false,
            handover_sender,
            handovers,
            asked: None,
            handed_over: None,
            voicemail_stop: None,
            waiting: None,
            queue_codec: None,
            offer_since: None,
            told_desk: (Vec::new(), Vec::new()),
            unsent: None,
        };
        if let Some(caller) = caller {
            driver.file(Leg::Caller, caller);
        }
        driver
    }

    /// Runs the call until it is over and its legs are done with.
    pub(super) async fn run(mut self, mut states: DialogStateReceiver) {
        // Read once: a call that talks for hours keeps neither the hours nor the rule
        // (the machine has its own copy).
        let open = self
            .spec
            .media
            .settings
            .hours
            .take()
            .is_none_or(|hours| hours.is_open(chrono::Utc::now()));
        self.spec.media.settings.after_hours = None;
        self.queued.push_back(Event::Start { open });
        loop {
            while let Some(event) = self.queued.pop_front() {
                let actions = self.machine.on(event, now());
                self.carry_out(actions).await;
                self.register_when_talking();
            }
            self.tell_desk();
            if self.machine.is_over() && self.inflight.is_empty() {
                break;
            }
            let deadline = self.timers.iter().map(|(_, at)| *at).min();
            let talking = self.machine.is_talking();
            let session = self.spec.media.session.clone();
            let event = tokio::select! {
                Some(state) = states.recv() => self.event_of(state),
                Some(done) = self.inflight.next(), if !self.inflight.is_empty() => {
                    self.done(done)
                }
                () = sleep_until(deadline) => self.timer_fired(),
                () = media_dead(session), if talking => Some(Event::MediaTimeout),
                () = run_late(&mut self.late_intake), if self.late_intake.is_some() => {
                    self.late_intake = None;
                    Some(Event::IntakeDone)
                }
                Some(ask) = self.handovers.recv() => self.handover_asked(ask),
                Some(news) = desk_news(&mut self.waiting), if self.waiting.is_some() => {
                    self.desk_news(news)
                }
            };
            if let Some(event) = event {
                self.queued.push_back(event);
            }
        }
        self.finish(states).await;
    }

    /// The queue desk learns who talks in this call and whose phones ring for it, when
    /// that changed.
    fn tell_desk(&mut self) {
        let over = self.machine.is_over();
        let mut talking = Vec::new();
        let mut ringing = Vec::new();
        if !over {
            for leg in self.machine.legs() {
                if leg.ended_at.is_some() {
                    continue;
                }
                let list = match leg.state.as_str() {
                    "answered" => &mut talking,
                    "ringing" | "transfer" => &mut ringing,
                    _ => continue,
                };
                if !list.contains(&leg.user) {
                    list.push(leg.user);
                }
            }
            if let Some(employee) = &self.spec.employee
                && !talking.contains(employee)
            {
                talking.push(employee.clone());
            }
        }
        if (&talking, &ringing) == (&self.told_desk.0, &self.told_desk.1) {
            return;
        }
        self.told_desk = (talking.clone(), ringing.clone());
        self.b2bua
            .desk
            .call_state(&self.spec.call_id, talking, ringing, self.wrap_up_ms());
    }

    /// The wrap-up an agent gets after this call: its queue's.
    fn wrap_up_ms(&self) -> i64 {
        self.spec
            .number
            .as_ref()
            .and_then(|n| n.queue.as_ref())
            .and_then(|q| self.b2bua.store.cached_queue_settings(q))
            .map_or(0, |s| i64::from(s.wrap_up_s) * 1000)
    }

    fn desk_news(&mut self, news: crate::sip::queueing::DeskNews) -> Option<Event> {
        use crate::sip::queueing::DeskNews;
        match news {
            DeskNews::Offer { users, since } => {
                self.offer_since = Some(since);
                let mut devices = self.b2bua.devices(&users);
                Some(Event::Offered(
                    users
                        .into_iter()
                        .map(|user| {
                            let found = devices.remove(&user).unwrap_or_default();
                            (user, found)
                        })
                        .collect(),
                ))
            }
            DeskNews::Position(position) => {
                let announce = self.queue_settings().is_some_and(|s| s.announce_position);
                if announce && let Some(session) = &self.spec.media.session {
                    session.announce(u32::try_from(position).unwrap_or(u32::MAX));
                }
                None
            }
        }
    }

    fn queue_settings(&self) -> Option<crate::crm::queueing::QueueSettings> {
        let queue = self.spec.number.as_ref()?.queue.as_ref()?;
        Some(
            self.b2bua
                .store
                .cached_queue_settings(queue)
                .unwrap_or_default(),
        )
    }

    /// The queue answers the caller itself, plays its music and puts them in line.
    fn start_waiting(&mut self, session_timer: Option<u32>) -> Result<(), &'static str> {
        let queue = self
            .spec
            .number
            .as_ref()
            .and_then(|n| n.queue.clone())
            .ok_or("the number has no queue")?;
        let settings = self.queue_settings().unwrap_or_default();
        // Waiting callers need the relay: the gateway is their media source.
        if self.spec.media.session.is_none() {
            self.spec.media.session = self
                .b2bua
                .media_session(true)
                .map_err(|_| "no free media ports")?;
        }
        let session = self.spec.media.session.clone().ok_or("no media relay")?;
        let offer = self
            .machine
            .caller_offer()
            .ok_or("the caller's INVITE has no SDP offer")?;
        let (answer, codec) = session
            .answer_caller(&offer.bytes)
            .map_err(|_| "the caller offers no G.711")?;
        let caller = self
            .dialog(self.machine.caller())
            .ok_or("the caller's dialog is gone")?;
        let mut headers = vec![Header::ContentType("application/sdp".into())];
        if let Some(interval_s) = session_timer {
            headers.extend(session_timer_headers(interval_s));
        }
        caller
            .accept(Some(headers), Some(answer))
            .map_err(|_| "cannot answer the caller")?;
        let ticket = self.b2bua.desk.enqueue(
            &queue,
            &self.spec.call_id,
            self.spec.call_record.clone(),
            &self.spec.customer,
        );
        let music = self.b2bua.desk.music(&queue, &settings);
        let position = settings
            .announce_position
            .then(|| u32::try_from(ticket.position).unwrap_or(u32::MAX));
        session.play(&music, codec, position);
        tracing::info!(queue = %queue, position = ticket.position, "the caller waits in the queue");
        metrics::counter!("leadline_queue_waits_total").increment(1);
        self.queue_codec = Some(codec);
        self.waiting = Some(ticket);
        Ok(())
    }

    /// Files a leg's dialog; once the call talks, the registry finds it by its Call-ID.
    fn file(&mut self, leg: Leg, dialog: InviteDialog) {
        if self.registered {
            self.b2bua
                .calls
                .enter(self.token, &dialog.id().call_id, &self.handover_sender);
        }
        self.dialogs.retain(|(l, _)| *l != leg);
        self.dialogs.push((leg, dialog));
    }

    /// A consultation transfer may take over only a call that talks: the call enters
    /// the registry when it starts talking.
    fn register_when_talking(&mut self) {
        if self.registered || !self.machine.is_talking() {
            return;
        }
        self.registered = true;
        for (_, dialog) in &self.dialogs {
            self.b2bua
                .calls
                .enter(self.token, &dialog.id().call_id, &self.handover_sender);
        }
    }

    fn dialog(&self, leg: Leg) -> Option<InviteDialog> {
        self.dialogs
            .iter()
            .find(|(l, _)| *l == leg)
            .map(|(_, d)| d.clone())
    }

    fn leg_of(&self, call_id: &str) -> Option<Leg> {
        self.dialogs
            .iter()
            .find(|(_, d)| d.id().call_id == call_id)
            .map(|(l, _)| *l)
    }

    /// Which side of the relay a party is on.
    fn side(&self, leg: Leg) -> Side {
        if leg == self.machine.caller() || matches!(leg, Leg::Caller | Leg::Phone(..)) {
            Side::Caller
        } else {
            Side::Callee
        }
    }

    /// `body`, a party's SDP going to `to`: through the relay's rewrite when the gateway
    /// is in the media path, unchanged otherwise.
    fn sdp_to(&self, to: Leg, body: &[u8]) -> Vec<u8> {
        match &self.spec.media.session {
            Some(session) => session.sdp_from(self.side(to).other(), body),
            None => body.to_vec(),
        }
    }

    fn event_of(&mut self, state: DialogState) -> Option<Event> {
        if let Some((id, to)) = &self.handed_over
            && state.id().call_id == id.call_id
        {
            let _ = to.send(state);
            return None;
        }
        let leg = self.leg_of(&state.id().call_id)?;
        match state {
            DialogState::Early(_, response) if leg != self.machine.caller() => {
                Some(Event::Progress {
                    leg,
                    early: body_of(&response.headers, &response.body),
                })
            }
            DialogState::Confirmed(..) => Some(Event::Confirmed { leg }),
            DialogState::Updated(_, request, handle) => {
                let req = self.hold(handle);
                let body = body_of(&request.headers, &request.body);
                let request = if request.method == Method::Update {
                    InDialog::Update(body)
                } else {
                    InDialog::Reinvite(body)
                };
                Some(Event::Request { leg, req, request })
            }
            DialogState::Refer(_, request, handle) => {
                let req = self.hold(handle);
                let target = request
                    .headers
                    .iter()
                    .find_map(|h| match h {
                        Header::ReferTo(v) => Some(v.value().to_owned()),
                        Header::Other(name, value) if name.eq_ignore_ascii_case("refer-to") => {
                            Some(value.clone())
                        }
                        _ => None,
                    })
                    .map_or(call::ReferTarget::Unreadable, |to| call::refer_target(&to));
                Some(Event::Request {
                    leg,
                    req,
                    request: InDialog::Refer(target),
                })
            }
            DialogState::Terminated(_, reason) => Some(Event::Hangup {
                leg,
                cancel: matches!(reason, TerminatedReason::UacCancel),
            }),
            _ => None,
        }
    }

    fn hold(&mut self, handle: TransactionHandle) -> ReqId {
        let req = ReqId(self.next_req);
        self.next_req = self.next_req.wrapping_add(1);
        self.held.push((req, handle));
        req
    }

    fn done(&mut self, done: Done) -> Option<Event> {
        match done {
            Done::Event(event) => Some(event),
            Done::Nothing => None,
            Done::Taken { leg, takeover } => Some(Event::Handover(match takeover {
                Ok(takeover) => {
                    self.file(leg, takeover.dialog);
                    Handover::Taken {
                        sdp: takeover.sdp,
                        user: takeover.user,
                        contact: takeover.contact,
                    }
                }
                Err(404) => Handover::NoSuchCall,
                Err(status) => Handover::Refused(status),
            })),
        }
    }

    fn timer_fired(&mut self) -> Option<Event> {
        let now = Instant::now();
        let index = self.timers.iter().position(|(_, at)| *at <= now)?;
        let (timer, _) = self.timers.swap_remove(index);
        if timer == Timer::Intake && self.late_intake.is_some() {
            tracing::error!(
                "the late call intake is still not done; recording the next steps anyway"
            );
        }
        Some(Event::Timer(timer))
    }

    fn handover_asked(&mut self, ask: HandoverAsk) -> Option<Event> {
        if self.asked.is_some() {
            let _ = ask.reply.send(Err(491));
            return None;
        }
        let named = self
            .dialogs
            .iter()
            .find(|(_, d)| {
                let id = d.id();
                ask.replaces
                    .names(&id.call_id, &id.local_tag, &id.remote_tag)
            })
            .map(|(l, _)| *l);
        let early_only = ask.replaces.early_only;
        self.asked = Some(ask);
        Some(Event::HandoverAsked { named, early_only })
    }

    async fn carry_out(&mut self, actions: Vec<Action>) {
        for action in actions {
            self.act(action).await;
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Invite { leg, device, offer } => self.invite(leg, &device, offer).await,
            Action::Forward { target } => self.forward(target).await,
            Action::Hangup(leg) => {
                if let Some(dialog) = self.dialog(leg) {
                    self.inflight.push(Box::pin(async move {
                        let _ = dialog.hangup().await;
                        Done::Nothing
                    }));
                }
            }
            Action::Progress(body) => {
                let caller = self.machine.caller();
                if let Some(dialog) = self.dialog(caller) {
                    let (headers, body) = match body {
                        Some(body) => (
                            content_type_header(&body),
                            Some(self.sdp_to(caller, &body.bytes)),
                        ),
                        None => (None, None),
                    };
                    let _ = dialog.ringing(headers, body);
                }
            }
            Action::Answer {
                body,
                session_timer,
            } => {
                let caller = self.machine.caller();
                let Some(dialog) = self.dialog(caller) else {
                    return;
                };
                let mut headers = content_type_header(&body).unwrap_or_default();
                if let Some(interval_s) = session_timer {
                    headers.extend(session_timer_headers(interval_s));
                }
                let answer = self.sdp_to(caller, &body.bytes);
                if let Err(err) = dialog.accept(Some(headers), Some(answer)) {
                    tracing::warn!(%err, "cannot answer the caller; ending the agent's leg");
                    self.queued.push_back(Event::AnswerFailed);
                }
            }
            Action::Reject(status) => {
                if let Some(dialog) = self.dialog(self.machine.caller()) {
                    let reason = self.unsent.take().map(|why| reason_header(status, &why));
                    let _ = dialog.reject(Some(StatusCode::from(status)), reason);
                }
            }
            Action::Send {
                ask,
                to,
                update,
                body,
            } => {
                let Some(dialog) = self.dialog(to) else {
                    self.queued.push_back(Event::Response {
                        ask,
                        status: 481,
                        body: None,
                    });
                    return;
                };
                let headers = body.as_ref().and_then(content_type_header);
                let body = body.map(|b| self.sdp_to(to, &b.bytes));
                self.inflight.push(Box::pin(async move {
                    let response = if update {
                        dialog.update(headers, body).await
                    } else {
                        dialog.reinvite(headers, body).await
                    };
                    Done::Event(match response {
                        Ok(Some(response)) => Event::Response {
                            ask,
                            status: u16::from(response.status_code.clone()),
                            body: body_of(&response.headers, &response.body),
                        },
                        _ => Event::Response {
                            ask,
                            status: 500,
                            body: None,
                        },
                    })
                }));
            }
            Action::Respond {
                req,
                to,
                status,
                session_timer,
                body,
            } => {
                let Some(index) = self.held.iter().position(|(r, _)| *r == req) else {
                    return;
                };
                let (_, handle) = self.held.swap_remove(index);
                let mut headers = body
                    .as_ref()
                    .and_then(content_type_header)
                    .unwrap_or_default();
                if let Some(interval_s) = session_timer {
                    headers.extend(session_timer_headers(interval_s));
                }
                let body = body.map(|b| self.sdp_to(to, &b.bytes));
                self.inflight.push(Box::pin(async move {
                    let status = StatusCode::from(status);
                    let _ = if headers.is_empty() && body.is_none() {
                        handle.reply(status).await
                    } else {
                        handle.respond(status, Some(headers), body).await
                    };
                    Done::Nothing
                }));
            }
            Action::Notify {
                leg,
                notices,
                then_hangup,
            } => {
                if let Some(dialog) = self.dialog(leg) {
                    // A phone slow to answer the NOTIFY must not hold up the call.
                    self.inflight.push(Box::pin(async move {
                        for (status, state) in notices {
                            let _ = dialog.notify_refer(StatusCode::from(status), state).await;
                        }
                        if then_hangup {
                            let _ = dialog.hangup().await;
                        }
                        Done::Nothing
                    }));
                }
            }
            Action::Learn { from, body } => {
                if let Some(session) = &self.spec.media.session {
                    session.sdp_from(self.side(from), &body.bytes);
                }
            }
            Action::Timer { timer, at } => {
                self.timers.retain(|(t, _)| *t != timer);
                if let Some(at) = at {
                    self.timers.push((timer, at));
                }
            }
            Action::ArmMedia => {
                if let Some(session) = &self.spec.media.session {
                    session.arm_timeout();
                }
            }
            Action::StartRecording => self.start_recording(),
            Action::Voicemail { max } => self.voicemail(max),
            Action::StopVoicemail => {
                if let Some(stop) = self.voicemail_stop.take() {
                    let _ = stop.send(());
                }
            }
            Action::Write(write) => self.write(write).await,
            Action::Publish(publish) => self.publish(publish),
            Action::LegsChanged => self.b2bua.live.set(&self.spec.call_id, self.machine.legs()),
            Action::Count(metric) => count(metric),
            Action::SetupDelay(delay) => {
                metrics::histogram!("leadline_call_setup_seconds", "direction" => self.spec.direction.as_str())
                    .record(delay.as_secs_f64());
            }
            Action::FindTransferTarget { extension } => {
                let found = transfer_target(&self.b2bua, &extension).await;
                self.queued.push_back(Event::TransferTarget(found));
            }
            Action::AskHandover { replaces, leg } => {
                let (reply, answer) = oneshot::channel();
                let call_id = replaces.call_id.clone();
                let ask = HandoverAsk {
                    replaces,
                    states: self.state_sender.clone(),
                    reply,
                };
                let registry = self.b2bua.calls.clone();
                let token = self.token;
                self.inflight.push(Box::pin(async move {
                    if registry.ask(token, &call_id, ask).await.is_err() {
                        return Done::Taken {
                            leg,
                            takeover: Err(404),
                        };
                    }
                    let takeover = match answer.await {
                        Ok(takeover) => takeover,
                        // That call ended meanwhile.
                        Err(_) => Err(481),
                    };
                    Done::Taken { leg, takeover }
                }));
            }
            Action::HandOver { leg, user, sdp } => {
                let Some(ask) = self.asked.take() else {
                    return;
                };
                let Some(dialog) = self.dialog(leg) else {
                    let _ = ask.reply.send(Err(481));
                    return;
                };
                let id = dialog.id();
                let contact = dialog.initial_request().uri.to_string();
                let takeover = Takeover {
                    dialog,
                    sdp,
                    user,
                    contact,
                };
                if ask.reply.send(Ok(takeover)).is_ok() {
                    tracing::info!(remaining = %id, "call handed over to a consultation transfer");
                    self.dialogs.retain(|(l, _)| *l != leg);
                    self.handed_over = Some((id, ask.states));
                }
            }
            Action::RefuseHandover(status) => {
                if let Some(ask) = self.asked.take() {
                    let _ = ask.reply.send(Err(status));
                }
            }
            Action::Wait { session_timer } => {
                if let Err(why) = self.start_waiting(session_timer) {
                    tracing::warn!(why, "the caller cannot wait in the queue");
                    self.queued.push_back(Event::CannotWait);
                }
            }
            Action::OfferOver { answered_by } => {
                if let Some(ticket) = &self.waiting {
                    self.b2bua.desk.offer_over(ticket.id, answered_by.as_ref());
                }
                if answered_by.is_some() {
                    self.waiting = None;
                    if let Some(session) = &self.spec.media.session {
                        session.stop_playing();
                    }
                }
            }
            Action::LeaveQueue => {
                if let Some(ticket) = self.waiting.take() {
                    self.b2bua.desk.leave(ticket.id);
                }
                if let Some(session) = &self.spec.media.session {
                    session.stop_playing();
                }
            }
        }
    }

    /// Sends an INVITE to one device: for the plan's and a transfer's legs the CRM's name
    /// as the From display name, `Call-Info` with the entity's URL.
    async fn invite(&mut self, leg: Leg, device: &Device, offer: Body) {
        let shown = match (leg, &self.spec.phone_shown) {
            (Leg::Phone(..), Some(shown)) => shown,
            _ => &self.spec.shown,
        };
        let phone = matches!(leg, Leg::Phone(..));
        let from_user = match (&shown.caller_id, phone) {
            (Some(caller_id), false) => caller_id.clone(),
            _ => caller_user(&shown.number),
        };
        let from_host = if phone {
            self.b2bua.local.to_string()
        } else {
            self.spec.from_host.clone()
        };
        let headers = shown
            .info_url
            .iter()
            .map(|url| Header::Other("Call-Info".into(), format!("<{url}>;purpose=info")))
            .collect();
        let offer = match (leg, self.queue_codec) {
            (Leg::Offer(..), Some(codec)) => Body {
                content_type: offer.content_type,
                bytes: crate::media::sdp::only_codec(&offer.bytes, codec.payload_type()),
            },
            _ => offer,
        };
        let option = (|| {
            Ok::<_, rsipstack::sip::Error>(InviteOption {
                caller_display_name: shown.name.clone(),
                caller: Uri::try_from(format!("sip:{from_user}@{from_host}").as_str())?,
                callee: Uri::try_from(device.contact.as_str())?,
                destination: destination(device),
                content_type: offer.content_type.clone(),
                offer: (!offer.bytes.is_empty()).then(|| self.sdp_to(leg, &offer.bytes)),
                contact: self.b2bua.contact_uri(),
                headers: Some(headers),
                credential: if phone {
                    None
                } else {
                    self.spec.credential.clone()
                },
                ..InviteOption::default()
            })
        })();
        let b2bua = self.b2bua.clone();
        let states = self.state_sender.clone();
        let started = match option {
            Ok(option) => b2bua.send_invite(option, device, states).await,
            Err(err) => Err(err.into()),
        };
        if matches!(leg, Leg::Offer(_, 0))
            && let Some(since) = self.offer_since.take()
        {
            metrics::histogram!("leadline_queue_offer_seconds")
                .record(since.elapsed().as_secs_f64());
        }
        match started {
            Ok((dialog, handle)) => {
                self.file(leg, dialog);
                self.inflight.push(Box::pin(async move {
                    Done::Event(invite_result(leg, handle.await))
                }));
            }
            Err(err) => {
                tracing::warn!(%err, ?leg, "cannot start a leg");
                if device.carrier_host.is_some() {
                    self.unsent = Some(err.to_string());
                }
                self.queued.push_back(Event::NotSent { leg, status: 503 });
            }
        }
    }

    /// Forwards the waiting caller to `target` out through the number's trunk, showing
    /// the caller's own number.
    async fn forward(&mut self, target: String) {
        let unavailable =
            crate::crm::hours::reject_status(crate::crm::hours::Closed::NobodyAnswered);
        let not_sent = |status| Event::NotSent {
            leg: Leg::Forward,
            status,
        };
        let Some(number) = &self.spec.number else {
            return self.queued.push_back(not_sent(unavailable));
        };
        let store = &self.b2bua.store;
        let trunk = match store.get_number(&number.id).await {
            Ok(record) => match record.trunk {
                Some(trunk) => store.get_trunk(&trunk).await.ok(),
                None => None,
            },
            Err(_) => None,
        };
        let Some(trunk) = trunk else {
            tracing::warn!("forwarding needs the number's trunk; rejecting");
            return self.queued.push_back(not_sent(unavailable));
        };
        let leg = match self
            .b2bua
            .carrier_leg(&trunk, &target, &self.spec.customer)
            .await
        {
            Ok(Ok(leg)) => leg,
            Ok(Err((status, why))) => {
                tracing::warn!(why, "cannot forward the call");
                return self.queued.push_back(not_sent(u16::from(status)));
            }
            Err(err) => {
                tracing::error!(%err, "cannot forward the call");
                return self.queued.push_back(not_sent(500));
            }
        };
        tracing::info!(to = %target, trunk = %trunk.name, "forwarding the call");
        metrics::counter!("leadline_call_forwards_total").increment(1);
        let offer = self
            .machine
            .caller_offer()
            .map(|b| self.sdp_to(Leg::Forward, &b.bytes));
        let option = (|| {
            Ok::<_, rsipstack::sip::Error>(InviteOption {
                caller: Uri::try_from(format!("sip:{}@{}", leg.caller_id, leg.host).as_str())?,
                callee: Uri::try_from(leg.device.contact.as_str())?,
                destination: destination(&leg.device),
                content_type: self.machine.caller_offer().and_then(|b| b.content_type),
                offer,
                contact: self.b2bua.contact_uri(),
                credential: leg.credential.clone(),
                ..InviteOption::default()
            })
        })();
        let Ok(option) = option else {
            return self.queued.push_back(not_sent(unavailable));
        };
        match self
            .b2bua
            .send_invite(option, &leg.device, self.state_sender.clone())
            .await
        {
            Ok((dialog, handle)) => {
                self.file(Leg::Forward, dialog);
                self.inflight.push(Box::pin(async move {
                    Done::Event(invite_result(Leg::Forward, handle.await))
                }));
            }
            Err(err) => {
                tracing::warn!(%err, "cannot send the forwarded call");
                self.unsent = Some(err.to_string());
                self.queued.push_back(not_sent(503));
            }
        }
    }

    /// Answers the caller, plays the greeting and the tone, and records the message.
    fn voicemail(&mut self, max: Duration) {
        let (stop, stopped) = oneshot::channel::<()>();
        self.voicemail_stop = Some(stop);
        let engine = self.b2bua.media.clone();
        let caller = self.dialog(self.machine.caller());
        let offer = self.machine.caller_offer().unwrap_or_default().bytes;
        let data_dir = self.b2bua.data_dir.clone();
        let greeting = self.spec.media.settings.greeting.clone();
        let answered = self.queue_codec.is_some();
        self.inflight.push(Box::pin(async move {
            let over = take_voicemail(
                engine, caller, offer, data_dir, greeting, max, stopped, answered,
            );
            Done::Event(Event::VoicemailOver(over.await))
        }));
    }

    fn start_recording(&mut self) {
        let Some(session) = &self.spec.media.session else {
            return;
        };
        let dir = self.b2bua.data_dir.join(RECORDINGS_DIR);
        if let Err(err) = std::fs::create_dir_all(&dir) {
            tracing::error!(%err, dir = %dir.display(), "cannot create the recordings folder");
            return;
        }
        let file = format!("{}.wav", uuid::Uuid::now_v7());
        match crate::media::record::RecordingJob::start(
            session,
            &dir,
            file,
            self.spec.media.settings.recording_channels,
        ) {
            Ok(job) => self.spec.media.recording = Some(job),
            Err(err) => tracing::error!(%err, "cannot start the call's recording"),
        }
    }

    async fn write(&mut self, write: Write) {
        let store = &self.b2bua.store;
        let call_id = &self.spec.call_id;
        match write {
            Write::Event {
                kind,
                user,
                outcome,
                at,
            } => {
                // A call between employees is no customer's call: nothing for the CRM.
                let Some(number) = &self.spec.number else {
                    return;
                };
                let (from, to) = match self.spec.direction {
                    Direction::Incoming => (self.spec.customer.clone(), number.number.clone()),
                    Direction::Outgoing => (number.number.clone(), self.spec.customer.clone()),
                };
                let event = CallEvent {
                    call_id: call_id.clone(),
                    event: kind,
                    direction: self.spec.direction,
                    from,
                    to,
                    user,
                    outcome,
                    at,
                    diverted_from: None,
                    verstat: None,
                };
                let write = CallWrite::Event { event, node: None };
                if let Err(err) = store.write_call(write).await {
                    tracing::error!(%err, event = %kind, "cannot record the call event");
                }
            }
            Write::Queue { queue, wait_ms } => {
                let write = CallWrite::Queue {
                    call_id: call_id.clone(),
                    queue,
                    wait_ms,
                };
                if let Err(err) = store.write_call(write).await {
                    tracing::error!(%err, "cannot record the call's queue");
                }
            }
            Write::Transferred { user, at } => {
                tracing::info!(to = %user, "call transferred");
                let write = CallWrite::Transferred {
                    call_id: call_id.clone(),
                    user,
                    at,
                };
                if let Err(err) = store.write_call(write).await {
                    tracing::error!(%err, "cannot record the transfer");
                }
            }
            Write::Legs(legs) => {
                self.b2bua.live.remove(call_id);
                if !legs.is_empty() {
                    let write = CallWrite::Legs {
                        call_id: call_id.clone(),
                        legs,
                    };
                    if let Err(err) = store.write_call(write).await {
                        tracing::error!(%err, "cannot record the call's legs");
                    }
                }
            }
            Write::Voicemail(message) => {
                let write = CallWrite::media(call_id, None, Some(&message));
                if let Err(err) = store.write_call(write).await {
                    tracing::error!(%err, "cannot keep the voicemail message");
                }
            }
            Write::FinishMedia => self.finish_media().await,
        }
    }

    /// The relay stops (freeing its ports); its statistics and the recording are kept on
    /// the call log row.
    async fn finish_media(&mut self) {
        let Some(session) = self.spec.media.session.take() else {
            return;
        };
        let stats = session.stats_after_close().await;
        for (direction, s) in [("caller", stats.from_caller), ("callee", stats.from_callee)] {
            metrics::counter!("leadline_rtp_packets_total", "from" => direction)
                .increment(s.packets);
            metrics::counter!("leadline_rtp_packets_relayed_total", "from" => direction)
                .increment(s.relayed);
            metrics::counter!("leadline_rtp_packets_lost_total", "from" => direction)
                .increment(s.lost);
            if s.packets > 0 {
                metrics::histogram!("leadline_rtp_jitter_ms", "from" => direction)
                    .record(s.jitter_ms);
            }
        }
        let job = self.spec.media.recording.take();
        let recording = match job {
            Some(job) => job.finish().await.map(|done| StoredRecording {
                file: done.file,
                duration_ms: done.summary.duration_ms,
                voicemail: false,
            }),
            None => None,
        };
        if self.spec.number.is_none() {
            return;
        }
        let write = CallWrite::media(&self.spec.call_id, Some(&stats), recording.as_ref());
        if let Err(err) = self.b2bua.store.write_call(write).await {
            tracing::error!(%err, "cannot keep the call's media statistics");
        }
    }

    /// Tells the call window.
    fn publish(&self, publish: call::Publish) {
        let spec = &self.spec;
        let shown = spec.phone_shown.as_ref().unwrap_or(&spec.shown);
        self.b2bua.events.publish(CallUpdate {
            event: publish.event.to_owned(),
            call: spec.call_record.clone(),
            call_id: spec.call_id.clone(),
            direction: spec.direction.to_string(),
            customer: spec.customer.clone(),
            number: spec
                .number
                .as_ref()
                .map(|n| n.number.clone())
                .unwrap_or_default(),
            entity: shown.entity.clone(),
            name: shown.name.clone(),
            responsible: shown.responsible.as_ref().map(ToString::to_string),
            ringing: publish.ringing.iter().map(ToString::to_string).collect(),
            answered_by: publish.answered_by.as_ref().map(ToString::to_string),
            outcome: publish.outcome.map(|o| o.to_string()),
            at: crate::store::rfc3339(now_ms()),
        });
    }

    /// The call is over: its dialogs are forgotten, except one handed over to another
    /// call, whose changes still report here and are passed on until it ends.
    async fn finish(mut self, mut states: DialogStateReceiver) {
        self.b2bua.calls.leave(self.token);
        if let Some(ticket) = self.waiting.take() {
            self.b2bua.desk.leave(ticket.id);
        }
        self.tell_desk();
        if let Some(ask) = self.asked.take() {
            let _ = ask.reply.send(Err(481));
        }
        for (_, dialog) in &self.dialogs {
            self.b2bua.forget_dialog(&dialog.id());
        }
        // What the dialog layer still holds once a call is over: a leak shows here.
        let own = self
            .b2bua
            .own_dialogs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        metrics::gauge!("leadline_sip_dialogs").set((self.b2bua.dialogs.len() + own) as f64);
        if let Some((id, to)) = self.handed_over.take() {
            drop(self.state_sender);
            while let Some(state) = states.recv().await {
                if state.id().call_id != id.call_id {
                    continue;
                }
                let ended = matches!(state, DialogState::Terminated(..));
                if to.send(state).is_err() || ended {
                    break;
                }
            }
        }
    }
}

/// A blind transfer's target: the employee with that extension and their devices.
/// Transfers to outside numbers would go out through a trunk, which the gateway does
/// not do yet: refused rather than half-done.
async fn transfer_target(b2bua: &B2bua, extension: &str) -> Result<(UserId, Vec<Device>), u16> {
    let user = match b2bua.store.sip_credentials(extension).await {
        Ok(Some(credentials)) => credentials.user,
        Ok(None) => return Err(404),
        Err(err) => {
            tracing::error!(%err, "cannot look up the transfer target");
            return Err(500);
        }
    };
    let devices = b2bua
        .devices(std::slice::from_ref(&user))
        .remove(&user)
        .unwrap_or_default();
    Ok((user, devices))
}

/// The next news from the queue desk for a waiting caller.
async fn desk_news(
    waiting: &mut Option<crate::sip::queueing::Ticket>,
) -> Option<crate::sip::queueing::DeskNews> {
    match waiting {
        Some(ticket) => ticket.news.recv().await,
        None => std::future::pending().await,
    }
}

/// The time of an event, read once for it.
fn now() -> Now {
    Now {
        at: Instant::now(),
        wall_ms: now_ms(),
    }
}

fn count(metric: Metric) {
    match metric {
        Metric::Calls(outcome) => {
            metrics::counter!("leadline_calls_total", "outcome" => outcome.as_str()).increment(1);
        }
        Metric::Transfer { answered } => {
            let result = if answered { "answered" } else { "failed" };
            metrics::counter!("leadline_call_transfers_total", "result" => result).increment(1);
        }
        Metric::SessionExpired => {
            tracing::info!("session expired without a refresh from the caller; ending the call");
            metrics::counter!("leadline_call_session_expired_total").increment(1);
        }
        Metric::MediaTimeout => {
            tracing::warn!(
                reason = "media timeout",
                "no RTP or RTCP from either side; ending the call"
            );
            metrics::counter!("leadline_call_media_timeouts_total").increment(1);
        }
    }
}

/// How an INVITE we sent ended, as the machine hears it.
fn invite_result(leg: Leg, response: Option<Response>) -> Event {
    match response {
        Some(response)
            if response.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful =>
        {
            Event::Answered {
                leg,
                answer: body_of(&response.headers, &response.body).unwrap_or_default(),
            }
        }
        Some(response) => Event::Failed {
            leg,
            status: u16::from(response.status_code),
        },
        None => Event::Failed { leg, status: 408 },
    }
}

/// A message's body with its content type; `None` when it has none.
fn body_of(headers: &rsipstack::sip::Headers, body: &[u8]) -> Option<Body> {
    (!body.is_empty()).then(|| Body {
        content_type: content_type(headers),
        bytes: body.to_vec(),
    })
}

fn content_type_header(body: &Body) -> Option<Vec<Header>> {
    body.content_type
        .as_ref()
        .map(|ct| vec![Header::ContentType(ct.clone().into())])
}

/// What an answer says when the caller refreshes the session (RFC 4028 §9).
fn session_timer_headers(interval_s: u32) -> Vec<Header> {
    vec![
        Header::Other(
            "Session-Expires".into(),
            format!("{interval_s};refresher=uac"),
        ),
        Header::Require("timer".into()),
    ]
}

/// The value of a `Reason` header (RFC 3326) telling the caller why a carrier leg could
/// not be sent: the status it was refused with and our own words, which become a quoted
/// string (quotes and backslashes dropped, line breaks made spaces).
fn reason_header(status: u16, why: &str) -> String {
    let text: String = why
        .chars()
        .filter(|c| !matches!(c, '"' | '\\'))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("SIP;cause={status};text=\"{text}\"")
}

/// Fires at the earliest timer; never while none is set.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the relay saw no media for the timeout; never without a relay.
async fn media_dead(session: Option<Arc<crate::media::MediaSession>>) {
    match session {
        Some(session) => session.dead().await,
        None => std::future::pending().await,
    }
}

async fn run_late(late: &mut Option<Boxed<()>>) {
    match late {
        Some(late) => late.await,
        None => std::future::pending().await,
    }
}

/// Answers the caller for voicemail, plays the greeting and the tone and records the
/// message until the caller hangs up (`stopped`) or `max` passes.
#[allow(clippy::too_many_arguments)]
async fn take_voicemail(
    engine: Option<Arc<crate::media::MediaEngine>>,
    caller: Option<InviteDialog>,
    offer: Vec<u8>,
    data_dir: std::path::PathBuf,
    greeting: Option<String>,
    max: Duration,
    stopped: oneshot::Receiver<()>,
    answered: bool,
) -> Result<Option<StoredRecording>, u16> {
    let Some(engine) = engine else {
        return Err(480);
    };
    let Some(caller) = caller else {
        return Ok(None);
    };
    let line = match voicemail::answer(&engine, &offer) {
        Ok(line) => line,
        Err(VoicemailError::NoCodec) => return Err(488),
        Err(err) => {
            tracing::error!(%err, "cannot take a voicemail message");
            return Err(503);
        }
    };
    let headers = vec![Header::ContentType("application/sdp".into())];
    if answered {
        // The queue answered the caller already: their media moves to the voicemail's
        // port with a re-INVITE (its SDP, an answer to their first offer, is a fine offer).
        match caller
            .reinvite(Some(headers), Some(line.answer.clone()))
            .await
        {
            Ok(Some(response)) if u16::from(response.status_code.clone()) < 300 => {}
            _ => {
                tracing::warn!("the caller refused the move to voicemail");
                return Ok(None);
            }
        }
    } else if let Err(err) = caller.accept(Some(headers), Some(line.answer.clone())) {
        tracing::warn!(%err, "cannot answer the caller for voicemail");
        return Ok(None);
    }
    let greeting = match greeting {
        Some(file) => {
            let path = data_dir.join(GREETINGS_DIR).join(file);
            match tokio::fs::read(&path).await {
                Ok(bytes) => crate::media::greeting::Greeting::from_wav(&bytes)
                    .map_err(|err| tracing::warn!(%err, "the stored greeting does not read"))
                    .ok(),
                Err(_) => None,
            }
        }
        None => None,
    };
    let dir = data_dir.join(RECORDINGS_DIR);
    if let Err(err) = tokio::fs::create_dir_all(&dir).await {
        tracing::error!(%err, "cannot create the recordings folder");
        return Ok(None);
    }
    let file = format!("{}.wav", uuid::Uuid::now_v7());
    let hung_up = async move {
        let _ = stopped.await;
    };
    let message = voicemail::take_message(line, greeting, max, &dir.join(&file), hung_up).await;
    match message {
        Ok(Some(summary)) if summary.samples > 0 => {
            metrics::counter!("leadline_voicemail_messages_total").increment(1);
            Ok(Some(StoredRecording {
                file,
                duration_ms: summary.duration_ms,
                voicemail: true,
            }))
        }
        Ok(_) => {
            let _ = tokio::fs::remove_file(dir.join(&file)).await;
            Ok(None)
        }
        Err(err) => {
            tracing::error!(%err, "voicemail recording failed");
            let _ = tokio::fs::remove_file(dir.join(&file)).await;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_carrier_connection_is_told_as_an_rfc3326_reason() {
        assert_eq!(
            reason_header(503, "tls: invalid peer certificate: UnknownIssuer"),
            "SIP;cause=503;text=\"tls: invalid peer certificate: UnknownIssuer\""
        );
        assert_eq!(
            reason_header(503, "a \"quoted\"\r\nname\\"),
            "SIP;cause=503;text=\"a quoted  name\""
        );
    }
}
