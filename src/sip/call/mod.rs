//! One call as a sans-I/O state machine: [`Call::on`] takes an [`Event`] and the time,
//! changes the call's state and returns the [`Action`]s the driver must carry out, in
//! order. The machine reads no clock, takes no lock, spawns nothing, does no I/O and
//! holds no SIP stack handle: its legs are [`Leg`] values, SDP is bytes, statuses are
//! `u16` and the few headers it decides are plain values. The driver
//! (`crate::sip::b2bua::driver`) owns the rsipstack dialogs and transactions by these ids,
//! turns what they report into events and carries out the actions.
//!
//! **States** ([`Phase`]): a click-to-call first rings the employee's own phones
//! (`Dialling`); every call then rings its route plan step by step (`Ringing`, with
//! [`ringing::Ringing`] deciding steps, busy and time-outs, T5). Nobody answering (or a
//! number outside its working hours) hands the waiting caller to the number's after-hours
//! rule: `Forwarding` out through the trunk, `Voicemail`, or a rejection. An answer
//! connects the caller to that leg (`Talking`): re-INVITE and UPDATE are relayed between
//! the two sides (hold is such a re-INVITE), the caller's session refreshes (RFC 4028)
//! restart the session timer, the relay's media timeout and an overdue refresh end the
//! call, and the agent's phone may transfer it, blind (REFER to an extension) or
//! attended (REFER with `Replaces` naming a dialog of another call, handed over through
//! the registry of live calls). `Over` is the end; the machine is done once the writes
//! it holds back have been released ([`Call::is_over`]).
//!
//! **Events** come from the dialogs (progress, answer, failure, hang-up from a given
//! leg, in-dialog requests with a request id under which the driver keeps the
//! transaction), from responses to requests the machine asked for (by [`Ask`] id), from
//! timers (by [`Timer`]), from the CRM intake, the media relay, the lookups the machine
//! asked for, and from other calls (attended transfer hand-over).
//!
//! **Actions** go to the legs (INVITE, hang-up, answer, reject, progress, re-INVITE or
//! UPDATE, responses to held requests, NOTIFY), to the timers (an instant computed from
//! the event's `now`), to the media relay, to the store ([`Write`]: held back while the
//! opening intake that missed its budget is still writing the call, released in order
//! when it is done or has had [`LATE_INTAKE_WAIT`]), to the call window ([`Publish`])
//! and to the metrics.
//!
//! Every SDP in an action is one party's, going to the leg the action names: with the
//! media relay the driver rewrites it as coming from the other side of that leg
//! (`MediaSession::sdp_from`), which keeps the relay's state out of the machine.

use std::time::Duration;

use tokio::time::Instant;

use crate::crm::hours::{AfterHours, AfterHoursAction, Closed, reject_status};
use crate::crm::model::{CallEventKind, CallOutcome, Millis, QueueId, UserId};
use crate::crm::queueing::Overflow;
use crate::sip::router::{Device, MAX_DEVICES_PER_USER, RoutePlan};
use crate::sip::session_timer;
use crate::store::{CallLeg, StoredRecording};

pub mod refer;
pub mod ringing;
mod waiting;

pub use refer::{ReferTarget, Replaces, refer_target};
use ringing::{RingAction, RingEvent, Ringing, Unanswered};

/// How long a call's writes wait for an opening intake that missed its budget.
pub const LATE_INTAKE_WAIT: Duration = Duration::from_secs(30);
/// How long a forwarded call may ring out before the caller is told nobody answers.
pub const FORWARD_RING: Duration = Duration::from_secs(60);

/// One party's dialog in the call, as the driver files it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Leg {
    /// The caller's dialog: the INVITE that came in.
    Caller,
    /// A device of the route plan: (step, device).
    Ring(usize, usize),
    /// Click-to-call: one of the employee's own phones, (step, device) of their plan.
    /// The one that answers is the call's caller side from then on.
    Phone(usize, usize),
    /// A device rung for a blind transfer.
    Transfer(u16),
    /// The after-hours forward out through the trunk.
    Forward,
    /// A dialog a consultation transfer took over from another call.
    Taken(u16),
    /// An agent's device offered a caller waiting in the queue: (offer, device).
    Offer(u16, u16),
}

/// A message body with its content type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

impl Body {
    pub fn sdp(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            content_type: Some("application/sdp".to_owned()),
            bytes: bytes.into(),
        }
    }
}

/// The driver's id of an in-dialog request it holds the transaction of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReqId(pub u32);

/// The machine's id of a request it asked the driver to send; its response comes back
/// as [`Event::Response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ask(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// The ringing step's ring timeout.
    Step(usize),
    /// The caller's session refresh is overdue (RFC 4028).
    Session,
    /// A blind transfer's target did not answer.
    Transfer,
    /// The forwarded call did not answer.
    Forward,
    /// The late intake had its time: the held writes go anyway.
    Intake,
    /// The caller waited the queue's longest wait.
    MaxWait,
    /// The offer of a waiting caller to agents rang out.
    Offer(u16),
}

/// What kind of call this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A customer calling one of our numbers: working hours and the after-hours rule.
    Incoming,
    /// An employee's softphone calling out through a trunk.
    Outgoing,
    /// An employee calling a colleague's extension: no CRM.
    Internal,
    /// Click-to-call: the employee's phones ring first, then the customer.
    Dialled,
}

/// What the call is, fixed when it starts.
#[derive(Debug, Clone)]
pub struct Setup {
    pub kind: Kind,
    /// Who rings: the agents, or the customer's carrier leg for outgoing calls.
    pub plan: RoutePlan,
    /// Click-to-call: the employee's phones.
    pub phones: Option<RoutePlan>,
    /// What new legs are offered: the caller's SDP (for click-to-call, what the
    /// employee's phones are offered).
    pub offer: Body,
    /// The session timer agreed with the caller (RFC 4028), in seconds.
    pub session_interval_s: Option<u32>,
    pub after_hours: Option<AfterHours>,
    /// The number records answered calls.
    pub recording: bool,
    /// The opening intake missed its budget and is still writing the call.
    pub intake_pending: bool,
    /// When the caller's INVITE arrived.
    pub received: Instant,
    /// The number's queue, when it has one.
    pub queue: Option<QueueCall>,
}

/// What the call needs of its number's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueCall {
    pub id: QueueId,
    /// No free member of the queue was rung, and someone in it is available: a caller
    /// nobody answered waits instead of hearing busy.
    pub wait_when_unanswered: bool,
    pub max_wait: Duration,
    pub overflow: Overflow,
    /// The longest voicemail message on overflow.
    pub max_message: Duration,
}

/// The time of an event: monotonic for timers, wall clock for what is recorded.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub wall_ms: Millis,
}

/// An in-dialog request from a leg.
#[derive(Debug, Clone, PartialEq)]
pub enum InDialog {
    Reinvite(Option<Body>),
    Update(Option<Body>),
    Refer(ReferTarget),
}

/// What another call answered when asked for the far side of a dialog a REFER's
/// `Replaces` named.
#[derive(Debug, Clone, PartialEq)]
pub enum Handover {
    /// No live call holds a dialog with that Call-ID (or it is this call's own).
    NoSuchCall,
    /// That call refused; the status goes to the transferring phone.
    Refused(u16),
    /// The dialog is this call's now, filed under the leg the machine asked for.
    Taken {
        sdp: Option<Body>,
        user: Option<UserId>,
        contact: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The call is set up; `open`: the number is within its working hours now.
    Start {
        open: bool,
    },
    /// 180/183 from a leg we called, with early media if any.
    Progress {
        leg: Leg,
        early: Option<Body>,
    },
    /// 2xx from a leg we called.
    Answered {
        leg: Leg,
        answer: Body,
    },
    /// A final non-2xx from a leg we called (408 when it timed out).
    Failed {
        leg: Leg,
        status: u16,
    },
    /// The INVITE to a leg could not be sent: the status the caller may hear.
    NotSent {
        leg: Leg,
        status: u16,
    },
    /// A leg's dialog ended: BYE, or CANCEL (`cancel`) from the caller.
    Hangup {
        leg: Leg,
        cancel: bool,
    },
    /// A leg's dialog is confirmed again (the driver reports it after a 202 to REFER).
    Confirmed {
        leg: Leg,
    },
    Request {
        leg: Leg,
        req: ReqId,
        request: InDialog,
    },
    /// The answer to a request the machine asked for; 500 when none came.
    Response {
        ask: Ask,
        status: u16,
        body: Option<Body>,
    },
    Timer(Timer),
    /// The opening intake that missed its budget is done.
    IntakeDone,
    /// The relay saw no media for its timeout.
    MediaTimeout,
    /// The caller could not be answered.
    AnswerFailed,
    /// A blind transfer's target: the employee and their devices, or a status.
    TransferTarget(Result<(UserId, Vec<Device>), u16>),
    /// The answer to [`Action::AskHandover`].
    Handover(Handover),
    /// Another call asks for this call's far side of one of its dialogs: `named` is
    /// the leg the `Replaces` names, if any.
    HandoverAsked {
        named: Option<Leg>,
        early_only: bool,
    },
    /// The voicemail is over: the message, if any; `Err` with the status the caller is
    /// rejected with when it could not be taken at all.
    VoicemailOver(Result<Option<StoredRecording>, u16>),
    /// The queue offers the waiting caller to these agents' devices, all at once.
    Offered(Vec<(UserId, Vec<Device>)>),
    /// The caller could not be answered to wait (no G.711, no media port).
    CannotWait,
}

/// A write to the store, held back while the late intake is still writing the call.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A step of the call through the intake.
    Event {
        kind: CallEventKind,
        user: Option<UserId>,
        outcome: Option<CallOutcome>,
        at: Millis,
    },
    /// T10: the call and what it created move to `user`.
    Transferred { user: UserId, at: Millis },
    /// The call's legs as they ended; they leave the live calls.
    Legs(Vec<CallLeg>),
    /// The caller's voicemail message.
    Voicemail(StoredRecording),
    /// Stop the relay and keep its statistics and the recording on the call.
    FinishMedia,
    /// The queue the call came in on and how long its caller waited there.
    Queue {
        queue: QueueId,
        wait_ms: Option<i64>,
    },
}

/// What the call window is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub event: &'static str,
    pub ringing: Option<UserId>,
    pub answered_by: Option<UserId>,
    pub outcome: Option<CallOutcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Calls(CallOutcome),
    Transfer { answered: bool },
    SessionExpired,
    MediaTimeout,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send an INVITE to `device`, filed under `leg`.
    Invite {
        leg: Leg,
        device: Device,
        offer: Body,
    },
    /// Forward the caller out through the number's trunk to `target` ([`Leg::Forward`]);
    /// [`Event::NotSent`] when that cannot be done.
    Forward {
        target: String,
    },
    /// End a leg: CANCEL while early, BYE once confirmed.
    Hangup(Leg),
    /// 180 to the caller, or 183 with this early media.
    Progress(Option<Body>),
    /// 200 to the caller, with the session timer's headers when one was agreed.
    Answer {
        body: Body,
        session_timer: Option<u32>,
    },
    /// A final refusal to the caller.
    Reject(u16),
    /// Send a re-INVITE (or UPDATE) to `to`.
    Send {
        ask: Ask,
        to: Leg,
        update: bool,
        body: Option<Body>,
    },
    /// Answer a held request from `to`.
    Respond {
        req: ReqId,
        to: Leg,
        status: u16,
        session_timer: Option<u32>,
        body: Option<Body>,
    },
    /// NOTIFY the referrer of the transfer's states (RFC 3515: status and
    /// `Subscription-State`), one after the other, then hang it up.
    Notify {
        leg: Leg,
        notices: Vec<(u16, &'static str)>,
        then_hangup: bool,
    },
    /// The relay learns a party's SDP that goes nowhere.
    Learn {
        from: Leg,
        body: Body,
    },
    /// Arm or (`None`) stop a timer.
    Timer {
        timer: Timer,
        at: Option<Instant>,
    },
    /// Answered: silence counts towards the media timeout from now on.
    ArmMedia,
    StartRecording,
    /// Take a voicemail message of at most this long.
    Voicemail {
        max: Duration,
    },
    /// The caller hung up on the voicemail.
    StopVoicemail,
    Write(Write),
    Publish(Publish),
    /// The legs changed: the live calls show [`Call::legs`].
    LegsChanged,
    Count(Metric),
    /// Caller's INVITE in → first leg's INVITE out.
    SetupDelay(Duration),
    /// Look up the blind transfer's target (an extension).
    FindTransferTarget {
        extension: String,
    },
    /// Ask the live call holding the `Replaces` dialog for its far side; file it as `leg`.
    AskHandover {
        replaces: Replaces,
        leg: Leg,
    },
    /// Give `leg`'s dialog to the call that asked; this call no longer owns it.
    HandOver {
        leg: Leg,
        user: Option<UserId>,
        sdp: Option<Body>,
    },
    /// Refuse the call that asked for a hand-over.
    RefuseHandover(u16),
    /// Answer the caller as the queue (the gateway's own SDP, with the session timer's
    /// headers when one was agreed), play the queue's music and wait for an offer;
    /// [`Event::CannotWait`] when that cannot be done.
    Wait {
        session_timer: Option<u32>,
    },
    /// The offer of the waiting caller ended: taken by `answered_by` (the music stops;
    /// the caller leaves the queue) or by nobody (the caller keeps waiting).
    OfferOver {
        answered_by: Option<UserId>,
    },
    /// The caller stops waiting (hung up, or the overflow rule takes over).
    LeaveQueue,
}

/// Where the call is.
#[derive(Debug, Clone)]
enum Phase {
    Idle,
    Dialling(Ringing),
    Ringing(Ringing),
    Forwarding,
    Voicemail,
    Waiting(waiting::Wait),
    Talking(Talk),
    Over,
}

#[derive(Debug, Clone)]
struct Talk {
    /// The caller's peer.
    agent: Leg,
    user: Option<UserId>,
    transfer: Option<Transfer>,
    /// The transferring phone hung up while its transfer was under way.
    referrer_gone: bool,
    notices: Notices,
}

/// Where the referrer's NOTIFYs are.
#[derive(Debug, Clone, Copy)]
enum Notices {
    Idle,
    /// The 202 is on its way: the first NOTIFY waits for the dialog to report it sent,
    /// and the transfer's outcome (status, then hang up) waits for the first NOTIFY.
    Due {
        referrer: Leg,
        outcome: Option<(u16, bool)>,
    },
}

/// RFC 3515 §2.4.4: the implicit subscription's first NOTIFY, and its last.
const ACTIVE: &str = "active;expires=60";
const TERMINATED: &str = "terminated;reason=noresource";

#[derive(Debug, Clone)]
enum Transfer {
    /// Blind: the target is being looked up.
    Resolving { req: ReqId },
    /// Blind: the target's devices ring.
    Ringing {
        user: UserId,
        legs: Vec<(Leg, String, bool)>,
        last_status: u16,
    },
    /// Attended: the other call is asked for its far side.
    Asking { req: ReqId, leg: Leg },
    /// `to` is re-INVITEd with the other party's SDP; after its 2xx, `then` (attended:
    /// the new party) is re-INVITEd with `to`'s answer.
    Reinviting {
        ask: Ask,
        user: Option<UserId>,
        leg: Leg,
        contact: String,
        to: Leg,
        then: Option<Leg>,
    },
}

/// What a request the machine sent was for.
#[derive(Debug, Clone, Copy)]
enum AskFor {
    /// A relayed re-INVITE or UPDATE: its answer goes back on `req` to `from`.
    Relay { req: ReqId, from: Leg },
    /// A transfer's re-INVITE (see [`Transfer::Reinviting`]).
    Transfer,
}

/// One call; see the module doc.
#[derive(Debug)]
pub struct Call {
    setup: Setup,
    phase: Phase,
    /// The caller's side: [`Leg::Caller`], or the click-to-call phone that answered.
    caller: Leg,
    /// Every leg started, in order, with where it is.
    legs: Vec<(Leg, CallLeg)>,
    /// The last SDP each party sent: what a consultation transfer offers its new peer.
    sdp: Vec<(Leg, Body)>,
    /// Dialog news that came while ringing but belongs to the talking phase.
    deferred: Vec<Event>,
    asks: Vec<(Ask, AskFor)>,
    next_ask: u32,
    next_taken: u16,
    step_due: Option<(usize, Instant)>,
    session_due: Option<Instant>,
    /// Writes held back for the late intake; `None` once it is done.
    held: Option<Vec<Write>>,
    legs_changed: bool,
    /// The queue answered the caller: refusals hang up from now on.
    queue_answered: bool,
    /// How long the caller waited in the queue, once the waiting is over.
    wait_ms: Option<i64>,
    /// The call's queue and wait are written.
    queue_written: bool,
}

impl Call {
    pub fn new(setup: Setup) -> Self {
        let held = setup.intake_pending.then(Vec::new);
        let mut sdp = Vec::new();
        if setup.kind != Kind::Dialled && !setup.offer.bytes.is_empty() {
            sdp.push((Leg::Caller, setup.offer.clone()));
        }
        Self {
            setup,
            phase: Phase::Idle,
            caller: Leg::Caller,
            legs: Vec::new(),
            sdp,
            deferred: Vec::new(),
            asks: Vec::new(),
            next_ask: 0,
            next_taken: 0,
            step_due: None,
            session_due: None,
            held,
            legs_changed: false,
            queue_answered: false,
            wait_ms: None,
            queue_written: false,
        }
    }

    /// The caller's side of the call.
    pub fn caller(&self) -> Leg {
        self.caller
    }

    /// The leg the caller talks to, while talking.
    pub fn agent(&self) -> Option<Leg> {
        match &self.phase {
            Phase::Talking(talk) => Some(talk.agent),
            Phase::Forwarding => Some(Leg::Forward),
            _ => None,
        }
    }

    /// What the caller offered: what a forward or the voicemail answers.
    pub fn caller_offer(&self) -> Option<Body> {
        Some(self.setup.offer.clone()).filter(|b| !b.bytes.is_empty())
    }

    pub fn is_talking(&self) -> bool {
        matches!(self.phase, Phase::Talking(_))
    }

    /// The call ended and nothing it holds back is left to release.
    pub fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Over) && self.held.is_none()
    }

    /// The legs for the live calls and the call log.
    pub fn legs(&self) -> Vec<CallLeg> {
        self.legs.iter().map(|(_, leg)| leg.clone()).collect()
    }

    /// Applies one event at `now`; the actions to carry out, in order.
    pub fn on(&mut self, event: Event, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        self.step(event, now, &mut out);
        // News kept back while ringing, once the call talks.
        while self.is_talking() && !self.deferred.is_empty() {
            let event = self.deferred.remove(0);
            self.step(event, now, &mut out);
        }
        if std::mem::take(&mut self.legs_changed) {
            out.push(Action::LegsChanged);
        }
        out
    }

    fn step(&mut self, event: Event, now: Now, out: &mut Vec<Action>) {
        match event {
            Event::IntakeDone => return self.release_held(out),
            Event::Timer(Timer::Intake) => {
                // The intake had its time: recording the next steps anyway.
                return self.release_held(out);
            }
            Event::HandoverAsked { named, early_only } => {
                return self.handover_asked(named, early_only, now, out);
            }
            _ => {}
        }
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => self.idle(event, now, out),
            Phase::Dialling(ringing) => self.dialling(ringing, event, now, out),
            Phase::Ringing(ringing) => self.ringing(ringing, event, now, out),
            Phase::Forwarding => self.forwarding(event, now, out),
            Phase::Voicemail => self.voicemail(event, now, out),
            Phase::Waiting(wait) => self.waiting(wait, event, now, out),
            Phase::Talking(talk) => self.talking(talk, event, now, out),
            Phase::Over => {
                self.phase = Phase::Over;
                self.after_end(event, out);
            }
        }
    }

    fn idle(&mut self, event: Event, now: Now, out: &mut Vec<Action>) {
        let Event::Start { open } = event else {
            return;
        };
        if self.held.is_some() {
            out.push(Action::Timer {
                timer: Timer::Intake,
                at: Some(now.at + LATE_INTAKE_WAIT),
            });
        }
        match (&self.setup.phones, self.setup.kind) {
            (Some(phones), Kind::Dialled) => {
                let (ringing, actions) = Ringing::start(phones);
                self.ring_actions(ringing, actions, true, now, out);
            }
            _ if self.setup.kind == Kind::Incoming && !open => {
                self.closed(Closed::OutsideHours, now, out);
            }
            _ => {
                let (ringing, actions) = Ringing::start(&self.setup.plan);
                self.ring_actions(ringing, actions, false, now, out);
            }
        }
    }

    // ---- ringing -------------------------------------------------------------------

    /// A rung leg's answer, refusal or unsent INVITE, noted on the leg and told to the
    /// ringing state; `phones`: the legs are a click-to-call's own phones. `None` for any
    /// other event.
    fn rung_leg(
        &mut self,
        ringing: &mut Ringing,
        event: &Event,
        phones: bool,
        now: Now,
    ) -> Option<Vec<RingAction>> {
        let device = |leg: Leg| match leg {
            Leg::Phone(s, d) if phones => Some((s, d)),
            Leg::Ring(s, d) if !phones => Some((s, d)),
            _ => None,
        };
        let ring_event = match event {
            Event::Answered { leg, answer } => {
                let at = device(*leg)?;
                self.note_sdp(*leg, Some(answer));
                self.leg_ended(*leg, "answered", Some(200), now);
                RingEvent::Answered(at)
            }
            Event::Failed { leg, status } => {
                let at = device(*leg)?;
                self.leg_ended(*leg, leg_state(*status), Some(*status), now);
                RingEvent::Failed {
                    leg: at,
                    status: *status,
                }
            }
            Event::NotSent { leg, status } => {
                let at = device(*leg)?;
                self.leg_ended(*leg, "failed", Some(*status), now);
                RingEvent::Failed {
                    leg: at,
                    status: *status,
                }
            }
            _ => return None,
        };
        Some(ringing.on(ring_event))
    }

    fn dialling(&mut self, mut ringing: Ringing, event: Event, now: Now, out: &mut Vec<Action>) {
        if let Some(actions) = self.rung_leg(&mut ringing, &event, true, now) {
            return self.ring_actions(ringing, actions, true, now, out);
        }
        let actions = match event {
            Event::Timer(Timer::Step(step)) if self.step_is_due(step, now) => {
                self.step_unanswered(step, true, now);
                ringing.on(RingEvent::StepTimedOut { step })
            }
            Event::Request { req, leg, .. } => {
                // Nothing is connected yet: nothing to relay or transfer.
                out.push(respond(req, leg, 491));
                Vec::new()
            }
            // A phone that answered may hang up before its answer has been taken.
            event @ Event::Hangup { .. } => {
                self.deferred.push(event);
                Vec::new()
            }
            _ => Vec::new(),
        };
        self.ring_actions(ringing, actions, true, now, out);
    }

    fn ringing(&mut self, mut ringing: Ringing, event: Event, now: Now, out: &mut Vec<Action>) {
        if let Some(actions) = self.rung_leg(&mut ringing, &event, false, now) {
            return self.ring_actions(ringing, actions, false, now, out);
        }
        let actions = match event {
            Event::Progress {
                leg: Leg::Ring(s, d),
                early,
            } => {
                let early = early.filter(|b| !b.bytes.is_empty());
                let actions = ringing.on(RingEvent::Progress {
                    leg: (s, d),
                    early_media: early.is_some(),
                });
                // The caller hears the first ringing, and every leg's early media.
                if !actions.is_empty() {
                    out.push(Action::Progress(early));
                }
                Vec::new()
            }
            Event::Timer(Timer::Step(step)) if self.step_is_due(step, now) => {
                self.step_unanswered(step, false, now);
                ringing.on(RingEvent::StepTimedOut { step })
            }
            // The caller gave up: a CANCEL, or the BYE of an employee whose click-to-call
            // still rings the customer.
            Event::Hangup { leg, .. } if leg == self.caller => {
                ringing.on(RingEvent::CallerCancelled)
            }
            // A phone that answered may send its REFER, re-INVITE or BYE before its
            // answer has been taken: kept for the talking phase.
            event @ (Event::Request { .. } | Event::Hangup { .. } | Event::Confirmed { .. }) => {
                self.deferred.push(event);
                Vec::new()
            }
            Event::Answered { leg, .. } => {
                out.push(Action::Hangup(leg));
                Vec::new()
            }
            _ => Vec::new(),
        };
        self.ring_actions(ringing, actions, false, now, out);
    }

    fn step_is_due(&self, step: usize, now: Now) -> bool {
        matches!(self.step_due, Some((s, at)) if s == step && now.at >= at)
    }

    /// Carries out the ringing state's actions; `phones`: a click-to-call's own phones.
    fn ring_actions(
        &mut self,
        ringing: Ringing,
        actions: Vec<RingAction>,
        phones: bool,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let leg_of = |(s, d): (usize, usize)| {
            if phones {
                Leg::Phone(s, d)
            } else {
                Leg::Ring(s, d)
            }
        };
        self.phase = if phones {
            Phase::Dialling(ringing)
        } else {
            Phase::Ringing(ringing)
        };
        for action in actions {
            match action {
                RingAction::StartStep(step) => {
                    let plan = if phones {
                        self.setup.phones.as_ref().unwrap_or(&self.setup.plan)
                    } else {
                        &self.setup.plan
                    };
                    let user = plan.steps[step].user.clone();
                    let devices = plan.steps[step].devices.clone();
                    let due = now.at + Duration::from_millis(plan.ring_timeout_ms);
                    let dialled = self.setup.kind == Kind::Dialled;
                    if step == 0 && !dialled {
                        out.push(Action::SetupDelay(
                            now.at.saturating_duration_since(self.setup.received),
                        ));
                    }
                    // A click-to-call told the call window when the employee's phones rang.
                    if !dialled || phones {
                        let mut owners = vec![user.clone()];
                        for owner in devices.iter().filter_map(|d| d.owner.as_ref()) {
                            if !owners.contains(owner) {
                                owners.push(owner.clone());
                            }
                        }
                        for owner in owners {
                            out.push(Action::Publish(Publish {
                                event: "ringing",
                                ringing: Some(owner),
                                answered_by: None,
                                outcome: None,
                            }));
                        }
                    }
                    self.step_due = Some((step, due));
                    out.push(Action::Timer {
                        timer: Timer::Step(step),
                        at: Some(due),
                    });
                    for (index, device) in devices.into_iter().enumerate() {
                        let leg = leg_of((step, index));
                        let owner = device.owner.clone().unwrap_or_else(|| user.clone());
                        self.leg_started(leg, &owner, &device.contact, "ringing", now);
                        out.push(Action::Invite {
                            leg,
                            device,
                            offer: self.setup.offer.clone(),
                        });
                    }
                }
                RingAction::Cancel(legs) => {
                    for leg in legs {
                        let leg = leg_of(leg);
                        self.leg_ended(leg, "cancelled", None, now);
                        out.push(Action::Hangup(leg));
                    }
                }
                // Sent with its early media when the progress came.
                RingAction::RelayProgress { .. } => {}
                RingAction::Connect(leg) => {
                    self.stop_step_timer(out);
                    if phones {
                        return self.phone_answered(leg_of(leg), now, out);
                    }
                    return self.connect(leg_of(leg), now, out);
                }
                RingAction::Reject { status, outcome } => {
                    self.stop_step_timer(out);
                    if phones {
                        // Nobody took the click-to-call: the customer is never called.
                        return self.end(
                            CallOutcome::Cancelled,
                            None,
                            Some(CallOutcome::Cancelled),
                            now,
                            out,
                        );
                    }
                    if outcome != Unanswered::Cancelled && self.waits() {
                        return self.start_waiting(now, out);
                    }
                    if outcome != Unanswered::Cancelled && self.rule_takes_over() {
                        return self.closed(Closed::NobodyAnswered, now, out);
                    }
                    if outcome != Unanswered::Cancelled {
                        out.push(Action::Reject(status));
                    }
                    return self.unanswered(outcome, now, out);
                }
            }
        }
    }

    fn stop_step_timer(&mut self, out: &mut Vec<Action>) {
        if let Some((step, _)) = self.step_due.take() {
            out.push(Action::Timer {
                timer: Timer::Step(step),
                at: None,
            });
        }
    }

    /// A click-to-call phone answered: it is the caller now, and the customer rings.
    fn phone_answered(&mut self, phone: Leg, now: Now, out: &mut Vec<Action>) {
        self.caller = phone;
        if let Some(answer) = self.last_sdp(phone) {
            self.setup.offer = answer;
        }
        // The employee hung up in the moment between answering and this.
        let gone = self
            .deferred
            .iter()
            .any(|e| matches!(e, Event::Hangup { leg, .. } if *leg == phone));
        self.deferred.clear();
        if gone {
            // The customer is never called.
            let cancelled = CallOutcome::Cancelled;
            return self.end(cancelled, None, Some(cancelled), now, out);
        }
        let (ringing, actions) = Ringing::start(&self.setup.plan);
        self.ring_actions(ringing, actions, false, now, out);
    }

    /// A leg answered: the caller gets its answer and the two talk.
    fn connect(&mut self, leg: Leg, now: Now, out: &mut Vec<Action>) {
        let user = match leg {
            Leg::Ring(step, device) => self.setup.plan.steps.get(step).map(|s| {
                s.devices
                    .get(device)
                    .and_then(|d| d.owner.clone())
                    .unwrap_or_else(|| s.user.clone())
            }),
            _ => None,
        };
        // Nothing rings any more: a held call keeps no devices.
        self.setup.plan.steps = Vec::new();
        self.setup.phones = None;
        out.push(Action::Answer {
            body: self.last_sdp(leg).unwrap_or_default(),
            session_timer: self.setup.session_interval_s,
        });
        self.talks_to(leg, user, now, out);
    }

    /// The caller talks to `leg` now: media, the CRM's `answered`, the call window, the
    /// count, and the talking phase.
    fn talks_to(&mut self, leg: Leg, user: Option<UserId>, now: Now, out: &mut Vec<Action>) {
        self.media_answered(out);
        self.write(
            Write::Event {
                kind: CallEventKind::Answered,
                user: user.clone(),
                outcome: None,
                at: now.wall_ms,
            },
            out,
        );
        out.push(Action::Publish(Publish {
            event: "answered",
            ringing: None,
            answered_by: user.clone(),
            outcome: None,
        }));
        out.push(Action::Count(Metric::Calls(CallOutcome::Answered)));
        self.start_talking(leg, user, now, out);
    }

    fn media_answered(&self, out: &mut Vec<Action>) {
        out.push(Action::ArmMedia);
        if self.setup.recording {
            out.push(Action::StartRecording);
        }
    }

    fn start_talking(&mut self, agent: Leg, user: Option<UserId>, now: Now, out: &mut Vec<Action>) {
        if let Some(interval_s) = self.setup.session_interval_s {
            self.arm_session(interval_s, now, out);
        }
        self.phase = Phase::Talking(Talk {
            agent,
            user,
            transfer: None,
            referrer_gone: false,
            notices: Notices::Idle,
        });
    }

    fn arm_session(&mut self, interval_s: u32, now: Now, out: &mut Vec<Action>) {
        let due = now.at + Duration::from_millis(session_timer::expiry_ms(interval_s));
        self.session_due = Some(due);
        out.push(Action::Timer {
            timer: Timer::Session,
            at: Some(due),
        });
    }

    /// Nobody will talk and the caller is not kept on the line.
    fn unanswered(&mut self, why: Unanswered, now: Now, out: &mut Vec<Action>) {
        let outcome = if matches!(self.setup.kind, Kind::Dialled | Kind::Outgoing) {
            if self.setup.kind == Kind::Dialled {
                // The employee's phone is hung up (a no-op when they hung up themselves).
                out.push(Action::Hangup(self.caller));
            }
            let status = self
                .legs
                .iter()
                .rev()
                .find(|(leg, _)| matches!(leg, Leg::Ring(..)))
                .and_then(|(_, leg)| leg.status);
            unreached_outcome(why, status)
        } else {
            match why {
                Unanswered::Missed => CallOutcome::Missed,
                Unanswered::Busy => CallOutcome::Busy,
                Unanswered::Cancelled => CallOutcome::Cancelled,
            }
        };
        self.end(outcome, None, Some(outcome), now, out);
    }

    // ---- after hours ---------------------------------------------------------------

    fn rule(&self) -> Option<AfterHoursAction> {
        self.setup.after_hours.as_ref().map(|rule| rule.action)
    }

    /// Whether the rule keeps a customer on the line when the queue gives up (voicemail
    /// or forward) instead of turning the call away.
    fn rule_takes_over(&self) -> bool {
        self.setup.kind == Kind::Incoming
            && self
                .rule()
                .is_some_and(|action| action != AfterHoursAction::Reject)
    }

    /// Nobody will answer and the caller is still waiting: the after-hours rule.
    fn closed(&mut self, why: Closed, now: Now, out: &mut Vec<Action>) {
        match self.rule() {
            Some(AfterHoursAction::Forward) => {
                let target = self
                    .setup
                    .after_hours
                    .as_ref()
                    .and_then(|rule| rule.forward_to.clone());
                match target {
                    Some(target) => {
                        self.phase = Phase::Forwarding;
                        out.push(Action::Forward { target });
                        out.push(Action::Timer {
                            timer: Timer::Forward,
                            at: Some(now.at + FORWARD_RING),
                        });
                    }
                    None => {
                        out.push(self.refuse(reject_status(Closed::NobodyAnswered)));
                        self.end(CallOutcome::Missed, None, None, now, out);
                    }
                }
            }
            Some(AfterHoursAction::Voicemail) => {
                let max_s = self
                    .setup
                    .after_hours
                    .as_ref()
                    .map_or(120, |r| r.max_message_s);
                self.phase = Phase::Voicemail;
                out.push(Action::Voicemail {
                    max: Duration::from_secs(u64::from(max_s)),
                });
            }
            Some(AfterHoursAction::Reject) | None => {
                out.push(self.refuse(reject_status(why)));
                self.end_closed(None, now, out);
            }
        }
    }

    fn end_closed(&mut self, message: Option<StoredRecording>, now: Now, out: &mut Vec<Action>) {
        self.close_legs(now, out);
        self.write(
            Write::Event {
                kind: CallEventKind::Ended,
                user: None,
                outcome: Some(CallOutcome::Missed),
                at: now.wall_ms,
            },
            out,
        );
        if let Some(message) = message {
            self.write(Write::Voicemail(message), out);
        }
        self.write(Write::FinishMedia, out);
        out.push(ended(None, CallOutcome::Missed));
        out.push(Action::Count(Metric::Calls(CallOutcome::Missed)));
        self.phase = Phase::Over;
    }

    fn forwarding(&mut self, event: Event, now: Now, out: &mut Vec<Action>) {
        self.phase = Phase::Forwarding;
        let unavailable = reject_status(Closed::NobodyAnswered);
        match event {
            Event::Progress {
                leg: Leg::Forward,
                early,
            } => out.push(Action::Progress(early.filter(|b| !b.bytes.is_empty()))),
            Event::Answered {
                leg: Leg::Forward,
                answer,
            } => {
                out.push(Action::Timer {
                    timer: Timer::Forward,
                    at: None,
                });
                self.note_sdp(Leg::Forward, Some(&answer));
                if self.queue_answered {
                    // The caller talks to the queue already: only the relay learns.
                    out.push(Action::Learn {
                        from: Leg::Forward,
                        body: answer,
                    });
                } else {
                    out.push(Action::Answer {
                        body: answer,
                        session_timer: self.setup.session_interval_s,
                    });
                }
                self.media_answered(out);
                self.write(
                    Write::Event {
                        kind: CallEventKind::Answered,
                        user: None,
                        outcome: None,
                        at: now.wall_ms,
                    },
                    out,
                );
                self.start_talking(Leg::Forward, None, now, out);
            }
            Event::Failed {
                leg: Leg::Forward, ..
            } => {
                out.push(self.refuse(unavailable));
                self.end_forward(out, now);
            }
            Event::NotSent {
                leg: Leg::Forward,
                status,
            } => {
                out.push(self.refuse(status));
                self.end_forward(out, now);
            }
            Event::Timer(Timer::Forward) => {
                out.push(Action::Hangup(Leg::Forward));
                out.push(self.refuse(unavailable));
                self.end_forward(out, now);
            }
            Event::Hangup { leg, .. } if leg == self.caller => {
                out.push(Action::Hangup(Leg::Forward));
                self.end_forward(out, now);
            }
            // A request before the forward is answered waits for the talking phase.
            event @ (Event::Request { .. } | Event::Hangup { .. }) => self.deferred.push(event),
            _ => {}
        }
    }

    fn end_forward(&mut self, out: &mut Vec<Action>, now: Now) {
        out.push(Action::Timer {
            timer: Timer::Forward,
            at: None,
        });
        self.end(CallOutcome::Missed, None, None, now, out);
        // The forward's outcome is not counted among the calls: the rule's own metric.
        out.retain(|a| !matches!(a, Action::Count(Metric::Calls(_))));
    }

    fn voicemail(&mut self, event: Event, now: Now, out: &mut Vec<Action>) {
        self.phase = Phase::Voicemail;
        match event {
            Event::Hangup { leg, .. } if leg == self.caller => out.push(Action::StopVoicemail),
            Event::VoicemailOver(Ok(message)) => {
                // At the length limit the gateway hangs up; after the caller's BYE this is
                // a no-op.
                out.push(Action::Hangup(self.caller));
                self.end_closed(message, now, out);
            }
            Event::VoicemailOver(Err(status)) => {
                out.push(self.refuse(status));
                self.end_closed(None, now, out);
            }
            Event::Request { req, leg, .. } => out.push(respond(req, leg, 488)),
            _ => {}
        }
    }

    // ---- talking -------------------------------------------------------------------

    fn talking(&mut self, mut talk: Talk, event: Event, now: Now, out: &mut Vec<Action>) {
        let caller = self.caller;
        match event {
            Event::Hangup { leg, .. } if leg == caller => {
                out.push(Action::Hangup(talk.agent));
                self.end_talk(talk, now, out);
            }
            Event::Hangup { leg, .. } if leg == talk.agent => {
                if talk.transfer.is_some() {
                    // The transferring phone may hang up as soon as its REFER is accepted.
                    talk.referrer_gone = true;
                    self.phase = Phase::Talking(talk);
                } else {
                    out.push(Action::Hangup(caller));
                    self.end_talk(talk, now, out);
                }
            }
            Event::Request {
                leg,
                req,
                request: InDialog::Reinvite(body),
            } => {
                self.relay(&talk, leg, req, body, false, now, out);
                self.phase = Phase::Talking(talk);
            }
            Event::Request {
                leg,
                req,
                request: InDialog::Update(body),
            } => {
                self.relay(&talk, leg, req, body, true, now, out);
                self.phase = Phase::Talking(talk);
            }
            Event::Request {
                leg,
                req,
                request: InDialog::Refer(target),
            } => {
                self.refer(&mut talk, leg, req, target, out);
                self.phase = Phase::Talking(talk);
            }
            Event::Confirmed { leg } if matches!(talk.notices, Notices::Due { referrer, .. } if referrer == leg) =>
            {
                // The implicit subscription starts with a NOTIFY of the current state;
                // an outcome that came meanwhile follows it.
                if let Notices::Due { outcome, .. } = talk.notices {
                    let mut notices = vec![(100, ACTIVE)];
                    notices.extend(outcome.map(|(status, _)| (status, TERMINATED)));
                    out.push(Action::Notify {
                        leg,
                        notices,
                        then_hangup: outcome.is_some_and(|(_, hangup)| hangup),
                    });
                }
                talk.notices = Notices::Idle;
                self.phase = Phase::Talking(talk);
            }
            Event::Response { ask, status, body } => {
                self.response(talk, ask, status, body, now, out);
            }
            Event::Timer(Timer::Session) => {
                if self.session_due.is_some_and(|due| now.at >= due) {
                    out.push(Action::Count(Metric::SessionExpired));
                    out.push(Action::Hangup(talk.agent));
                    out.push(Action::Hangup(caller));
                    self.end_talk(talk, now, out);
                } else {
                    self.phase = Phase::Talking(talk);
                }
            }
            Event::MediaTimeout => {
                out.push(Action::Count(Metric::MediaTimeout));
                out.push(Action::Hangup(talk.agent));
                out.push(Action::Hangup(caller));
                self.end_talk(talk, now, out);
            }
            Event::TransferTarget(result) => self.transfer_target(talk, result, now, out),
            Event::Handover(handover) => self.handover(talk, handover, now, out),
            Event::Answered { leg, answer } => self.transfer_answered(talk, leg, answer, out),
            Event::Failed { leg, status } | Event::NotSent { leg, status } => {
                self.transfer_leg_failed(talk, leg, status, now, out);
            }
            Event::Timer(Timer::Transfer) => {
                let legs = match &talk.transfer {
                    Some(Transfer::Ringing { legs, .. }) => legs.clone(),
                    _ => Vec::new(),
                };
                if legs.is_empty() {
                    self.phase = Phase::Talking(talk);
                    return;
                }
                for (leg, _, alive) in legs {
                    if alive {
                        out.push(Action::Hangup(leg));
                    }
                }
                self.transfer_failed(talk, 408, now, out);
            }
            _ => self.phase = Phase::Talking(talk),
        }
    }

    /// re-INVITE or UPDATE (session refresh, hold, codec change): the other side is
    /// asked the same and its answer given back.
    #[allow(clippy::too_many_arguments)]
    fn relay(
        &mut self,
        talk: &Talk,
        from: Leg,
        req: ReqId,
        body: Option<Body>,
        update: bool,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        // A leg no longer in the call (a cancelled one, the referrer after a transfer)
        // has nobody to relay to.
        if from != self.caller && from != talk.agent {
            out.push(respond(req, from, 481));
            return;
        }
        self.note_sdp(from, body.as_ref());
        let to = if from == self.caller {
            talk.agent
        } else {
            self.caller
        };
        if from == self.caller
            && let Some(interval_s) = self.setup.session_interval_s
        {
            // A refresh from the caller restarts the session timer (RFC 4028 §10).
            self.arm_session(interval_s, now, out);
        }
        let ask = self.ask(AskFor::Relay { req, from });
        out.push(Action::Send {
            ask,
            to,
            update,
            body,
        });
    }

    fn refer(
        &mut self,
        talk: &mut Talk,
        leg: Leg,
        req: ReqId,
        target: ReferTarget,
        out: &mut Vec<Action>,
    ) {
        // Only the agent's phone may transfer the call.
        if leg != talk.agent {
            out.push(respond(req, leg, 403));
            return;
        }
        if talk.transfer.is_some() {
            out.push(respond(req, leg, 491));
            return;
        }
        match target {
            ReferTarget::Blind { user } => {
                talk.transfer = Some(Transfer::Resolving { req });
                out.push(Action::FindTransferTarget { extension: user });
            }
            ReferTarget::Attended { replaces } => {
                let taken = Leg::Taken(self.next_taken);
                self.next_taken += 1;
                talk.transfer = Some(Transfer::Asking { req, leg: taken });
                out.push(Action::AskHandover {
                    replaces,
                    leg: taken,
                });
            }
            ReferTarget::Unreadable => out.push(respond(req, leg, 400)),
        }
    }

    fn accept_refer(&self, talk: &mut Talk, req: ReqId, out: &mut Vec<Action>) {
        out.push(respond(req, talk.agent, 202));
        // Phones expect the 202, then the first NOTIFY, then the outcome.
        talk.notices = Notices::Due {
            referrer: talk.agent,
            outcome: None,
        };
    }

    /// The transfer's outcome for the referrer, once its first NOTIFY went.
    fn notify_outcome(talk: &mut Talk, status: u16, then_hangup: bool, out: &mut Vec<Action>) {
        match &mut talk.notices {
            Notices::Due { outcome, .. } => *outcome = Some((status, then_hangup)),
            Notices::Idle => out.push(Action::Notify {
                leg: talk.agent,
                notices: vec![(status, TERMINATED)],
                then_hangup,
            }),
        }
    }

    fn transfer_target(
        &mut self,
        mut talk: Talk,
        result: Result<(UserId, Vec<Device>), u16>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(Transfer::Resolving { req }) = talk.transfer else {
            self.phase = Phase::Talking(talk);
            return;
        };
        let (user, devices) = match result {
            Ok(found) => found,
            Err(status) => {
                talk.transfer = None;
                out.push(respond(req, talk.agent, status));
                self.phase = Phase::Talking(talk);
                return;
            }
        };
        self.accept_refer(&mut talk, req, out);
        let mut legs = Vec::new();
        for (index, device) in devices.into_iter().take(MAX_DEVICES_PER_USER).enumerate() {
            let leg = Leg::Transfer(index as u16);
            self.leg_started(leg, &user, &device.contact, "transfer", now);
            legs.push((leg, device.contact.clone(), true));
            out.push(Action::Invite {
                leg,
                device,
                offer: self.setup.offer.clone(),
            });
        }
        if legs.is_empty() {
            return self.transfer_failed(talk, 480, now, out);
        }
        out.push(Action::Timer {
            timer: Timer::Transfer,
            at: Some(now.at + Duration::from_millis(self.setup.plan.ring_timeout_ms)),
        });
        talk.transfer = Some(Transfer::Ringing {
            user,
            legs,
            last_status: 480,
        });
        self.phase = Phase::Talking(talk);
    }

    /// A leg answered while talking: a blind transfer's target, or a late 2xx to end.
    fn transfer_answered(&mut self, mut talk: Talk, leg: Leg, answer: Body, out: &mut Vec<Action>) {
        let Some(Transfer::Ringing { user, legs, .. }) = &talk.transfer else {
            out.push(Action::Hangup(leg));
            self.phase = Phase::Talking(talk);
            return;
        };
        let Some((_, contact, true)) = legs.iter().find(|(l, _, _)| *l == leg).cloned() else {
            out.push(Action::Hangup(leg));
            self.phase = Phase::Talking(talk);
            return;
        };
        for (other, _, alive) in legs {
            if *other != leg && *alive {
                out.push(Action::Hangup(*other));
            }
        }
        out.push(Action::Timer {
            timer: Timer::Transfer,
            at: None,
        });
        let user = Some(user.clone());
        self.note_sdp(leg, Some(&answer));
        // The caller is re-INVITEd with the answering phone's SDP so the media goes there.
        let ask = self.ask(AskFor::Transfer);
        out.push(Action::Send {
            ask,
            to: self.caller,
            update: false,
            body: Some(answer).filter(|b| !b.bytes.is_empty()),
        });
        talk.transfer = Some(Transfer::Reinviting {
            ask,
            user,
            leg,
            contact,
            to: self.caller,
            then: None,
        });
        self.phase = Phase::Talking(talk);
    }

    fn transfer_leg_failed(
        &mut self,
        mut talk: Talk,
        leg: Leg,
        status: u16,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(Transfer::Ringing {
            legs, last_status, ..
        }) = &mut talk.transfer
        else {
            self.phase = Phase::Talking(talk);
            return;
        };
        let Some(entry) = legs.iter_mut().find(|(l, _, alive)| *l == leg && *alive) else {
            self.phase = Phase::Talking(talk);
            return;
        };
        entry.2 = false;
        *last_status = status;
        let last = *last_status;
        if legs.iter().any(|(_, _, alive)| *alive) {
            self.phase = Phase::Talking(talk);
            return;
        }
        out.push(Action::Timer {
            timer: Timer::Transfer,
            at: None,
        });
        self.transfer_failed(talk, last, now, out);
    }

    fn transfer_failed(&mut self, mut talk: Talk, status: u16, now: Now, out: &mut Vec<Action>) {
        talk.transfer = None;
        out.push(Action::Count(Metric::Transfer { answered: false }));
        if talk.referrer_gone {
            // Nobody is left to talk to the caller.
            out.push(Action::Hangup(self.caller));
            return self.end_talk(talk, now, out);
        }
        Self::notify_outcome(&mut talk, status, false, out);
        self.phase = Phase::Talking(talk);
    }

    fn handover(&mut self, mut talk: Talk, handover: Handover, now: Now, out: &mut Vec<Action>) {
        let Some(Transfer::Asking { req, leg }) = talk.transfer else {
            self.phase = Phase::Talking(talk);
            return;
        };
        match handover {
            Handover::NoSuchCall => {
                talk.transfer = None;
                out.push(respond(req, talk.agent, 404));
                self.phase = Phase::Talking(talk);
            }
            Handover::Refused(status) => {
                self.accept_refer(&mut talk, req, out);
                self.transfer_failed(talk, status, now, out);
            }
            Handover::Taken { sdp, user, contact } => {
                self.accept_refer(&mut talk, req, out);
                self.note_sdp(leg, sdp.as_ref());
                // The caller is offered the new party's last SDP; its answer is then
                // offered to the new party. Both had been talking to the transferring
                // phone.
                let ask = self.ask(AskFor::Transfer);
                out.push(Action::Send {
                    ask,
                    to: self.caller,
                    update: false,
                    body: sdp.filter(|b| !b.bytes.is_empty()),
                });
                talk.transfer = Some(Transfer::Reinviting {
                    ask,
                    user,
                    leg,
                    contact,
                    to: self.caller,
                    then: Some(leg),
                });
                self.phase = Phase::Talking(talk);
            }
        }
    }

    fn response(
        &mut self,
        mut talk: Talk,
        ask: Ask,
        status: u16,
        body: Option<Body>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(index) = self.asks.iter().position(|(a, _)| *a == ask) else {
            self.phase = Phase::Talking(talk);
            return;
        };
        let (_, what) = self.asks.remove(index);
        let ok = (200..300).contains(&status);
        match what {
            AskFor::Relay { req, from } => {
                let to = if from == self.caller {
                    talk.agent
                } else {
                    self.caller
                };
                self.note_sdp(to, body.as_ref());
                // The answer to a caller's refresh repeats the interval (RFC 4028 §9).
                let session_timer = self
                    .setup
                    .session_interval_s
                    .filter(|_| ok && from == self.caller);
                out.push(Action::Respond {
                    req,
                    to: from,
                    status,
                    session_timer,
                    body: body.filter(|b| !b.bytes.is_empty()),
                });
                self.phase = Phase::Talking(talk);
            }
            AskFor::Transfer => {
                let Some(Transfer::Reinviting {
                    ask: expected,
                    user,
                    leg,
                    contact,
                    to,
                    then,
                }) = talk.transfer.clone()
                else {
                    self.phase = Phase::Talking(talk);
                    return;
                };
                if expected != ask {
                    self.phase = Phase::Talking(talk);
                    return;
                }
                let body = body.filter(|b| !b.bytes.is_empty());
                if ok {
                    self.note_sdp(to, body.as_ref());
                }
                match then {
                    Some(then) if ok => {
                        let ask = self.ask(AskFor::Transfer);
                        out.push(Action::Send {
                            ask,
                            to: then,
                            update: false,
                            body,
                        });
                        talk.transfer = Some(Transfer::Reinviting {
                            ask,
                            user,
                            leg,
                            contact,
                            to: then,
                            then: None,
                        });
                        self.phase = Phase::Talking(talk);
                        return;
                    }
                    // The new party is ours now either way; the media may not follow.
                    _ if !ok => {}
                    // The relay learns where the party wants the media now.
                    _ => {
                        if let Some(body) = body {
                            out.push(Action::Learn { from: to, body });
                        }
                    }
                }
                self.connected(talk, user, leg, contact, now, out);
            }
        }
    }

    /// The caller talks to the transfer's new party now.
    fn connected(
        &mut self,
        mut talk: Talk,
        target: Option<UserId>,
        leg: Leg,
        contact: String,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        if !talk.referrer_gone {
            Self::notify_outcome(&mut talk, 200, true, out);
        }
        out.push(Action::Count(Metric::Transfer { answered: true }));
        if let Some(target) = target {
            let rung = self
                .legs
                .iter()
                .any(|(_, l)| l.state == "transfer" && l.user == target);
            if !rung {
                self.leg_started(leg, &target, &contact, "transfer", now);
            }
            self.transferred_to(&target, now);
            self.write(
                Write::Transferred {
                    user: target.clone(),
                    at: now.wall_ms,
                },
                out,
            );
            out.push(Action::Publish(Publish {
                event: "answered",
                ringing: None,
                answered_by: Some(target.clone()),
                outcome: None,
            }));
            talk.user = Some(target);
        }
        talk.agent = leg;
        talk.transfer = None;
        talk.referrer_gone = false;
        self.phase = Phase::Talking(talk);
    }

    /// Another call asks for this call's far side of the dialog its REFER's `Replaces`
    /// names (RFC 5589 §7): that side is handed over and the replaced dialog ended.
    fn handover_asked(
        &mut self,
        named: Option<Leg>,
        early_only: bool,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let talk = match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Talking(talk) => talk,
            other => {
                // Only a talking call has a confirmed dialog to replace.
                self.phase = other;
                out.push(Action::RefuseHandover(481));
                return;
            }
        };
        if talk.transfer.is_some() {
            out.push(Action::RefuseHandover(491));
            self.phase = Phase::Talking(talk);
            return;
        }
        let (replaced, remaining, user) = match named {
            // The agent's phone placed this call: the far side is an employee only on an
            // internal call.
            Some(leg) if leg == self.caller => (
                leg,
                talk.agent,
                (self.setup.kind == Kind::Internal)
                    .then(|| talk.user.clone())
                    .flatten(),
            ),
            Some(leg) if leg == talk.agent => (leg, self.caller, None),
            _ => {
                out.push(Action::RefuseHandover(481));
                self.phase = Phase::Talking(talk);
                return;
            }
        };
        if early_only {
            // RFC 3891 §3: early-only never replaces a confirmed dialog.
            out.push(Action::RefuseHandover(486));
            self.phase = Phase::Talking(talk);
            return;
        }
        out.push(Action::HandOver {
            leg: remaining,
            user,
            sdp: self.last_sdp(remaining),
        });
        // RFC 3891 §3: the replaced dialog is ended with a BYE.
        out.push(Action::Hangup(replaced));
        self.end_talk(talk, now, out);
    }

    /// The talking is over.
    fn end_talk(&mut self, talk: Talk, now: Now, out: &mut Vec<Action>) {
        if let Some(Transfer::Ringing { legs, .. }) = &talk.transfer {
            for (leg, _, alive) in legs {
                if *alive {
                    out.push(Action::Hangup(*leg));
                }
            }
        }
        if self.session_due.take().is_some() {
            out.push(Action::Timer {
                timer: Timer::Session,
                at: None,
            });
        }
        self.close_legs(now, out);
        self.write(
            Write::Event {
                kind: CallEventKind::Ended,
                user: talk.user.clone(),
                outcome: Some(CallOutcome::Answered),
                at: now.wall_ms,
            },
            out,
        );
        self.write(Write::FinishMedia, out);
        out.push(ended(talk.user, CallOutcome::Answered));
        self.phase = Phase::Over;
    }

    /// A call that never talked ends: legs, the CRM, media, the call window, a count.
    fn end(
        &mut self,
        outcome: CallOutcome,
        user: Option<UserId>,
        counted: Option<CallOutcome>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        self.close_legs(now, out);
        self.write(
            Write::Event {
                kind: CallEventKind::Ended,
                user: user.clone(),
                outcome: Some(outcome),
                at: now.wall_ms,
            },
            out,
        );
        self.write(Write::FinishMedia, out);
        out.push(ended(user, outcome));
        if let Some(counted) = counted {
            out.push(Action::Count(Metric::Calls(counted)));
        }
        self.phase = Phase::Over;
    }

    /// News after the end: a late 2xx is ended, a request is refused.
    fn after_end(&mut self, event: Event, out: &mut Vec<Action>) {
        match event {
            Event::Answered { leg, .. } => out.push(Action::Hangup(leg)),
            Event::Request { leg, req, .. } => out.push(respond(req, leg, 481)),
            _ => {}
        }
    }

    // ---- the legs' book ------------------------------------------------------------

    fn leg_started(&mut self, leg: Leg, user: &UserId, target: &str, state: &str, now: Now) {
        self.legs.push((
            leg,
            CallLeg {
                user: user.clone(),
                target: target.to_owned(),
                started_at: now.wall_ms,
                ended_at: None,
                state: state.to_owned(),
                status: None,
            },
        ));
        self.legs_changed = true;
    }

    /// A leg's outcome; the first one given wins (a cancelled leg's 487 stays
    /// "cancelled", a leg that timed out stays "no_answer").
    fn leg_ended(&mut self, leg: Leg, state: &str, status: Option<u16>, now: Now) {
        if let Some((_, record)) = self.legs.iter_mut().find(|(id, _)| *id == leg)
            && record.state == "ringing"
        {
            record.state = state.to_owned();
            record.status = status.or(record.status);
            if state != "answered" {
                record.ended_at = Some(now.wall_ms);
            }
            self.legs_changed = true;
        }
    }

    fn step_unanswered(&mut self, step: usize, phones: bool, now: Now) {
        let ringing: Vec<Leg> = self
            .legs
            .iter()
            .filter(|(leg, record)| {
                record.state == "ringing"
                    && match leg {
                        Leg::Ring(s, _) => !phones && *s == step,
                        Leg::Phone(s, _) => phones && *s == step,
                        _ => false,
                    }
            })
            .map(|(leg, _)| *leg)
            .collect();
        for leg in ringing {
            self.leg_ended(leg, "no_answer", Some(408), now);
        }
    }

    /// T10: the legs show the call moving to `user`.
    fn transferred_to(&mut self, user: &UserId, now: Now) {
        for (_, leg) in self.legs.iter_mut() {
            if leg.state == "answered" && leg.ended_at.is_none() {
                leg.ended_at = Some(now.wall_ms);
                leg.state = "transferred".to_owned();
            }
        }
        if let Some((_, leg)) = self
            .legs
            .iter_mut()
            .rev()
            .find(|(_, l)| l.state == "transfer" && &l.user == user)
        {
            leg.state = "answered".to_owned();
        }
        for (_, leg) in self.legs.iter_mut() {
            if leg.state == "transfer" {
                leg.state = "cancelled".to_owned();
                leg.ended_at.get_or_insert(now.wall_ms);
            }
        }
        self.legs_changed = true;
    }

    /// The call is over: every leg closes and the call log keeps them.
    fn close_legs(&mut self, now: Now, out: &mut Vec<Action>) {
        for (_, leg) in self.legs.iter_mut() {
            leg.ended_at.get_or_insert(now.wall_ms);
        }
        let legs = self.legs();
        self.write(Write::Legs(legs), out);
    }

    // ---- helpers -------------------------------------------------------------------

    fn write(&mut self, write: Write, out: &mut Vec<Action>) {
        // The call's queue and wait go with the end of its media: every end writes that
        // once.
        if write == Write::FinishMedia && !self.queue_written {
            self.queue_written = true;
            if let Some(queue) = &self.setup.queue {
                let queue = Write::Queue {
                    queue: queue.id.clone(),
                    wait_ms: self.wait_ms,
                };
                self.write(queue, out);
            }
        }
        match &mut self.held {
            Some(held) => held.push(write),
            None => out.push(Action::Write(write)),
        }
    }

    fn release_held(&mut self, out: &mut Vec<Action>) {
        if let Some(held) = self.held.take() {
            out.push(Action::Timer {
                timer: Timer::Intake,
                at: None,
            });
            out.extend(held.into_iter().map(Action::Write));
        }
    }

    fn ask(&mut self, what: AskFor) -> Ask {
        let ask = Ask(self.next_ask);
        self.next_ask += 1;
        self.asks.push((ask, what));
        ask
    }

    /// Keeps what a party last sent as SDP; messages without a body change nothing.
    fn note_sdp(&mut self, leg: Leg, body: Option<&Body>) {
        let Some(body) = body.filter(|b| !b.bytes.is_empty()) else {
            return;
        };
        match self.sdp.iter_mut().find(|(l, _)| *l == leg) {
            Some((_, kept)) => *kept = body.clone(),
            None => self.sdp.push((leg, body.clone())),
        }
    }

    fn last_sdp(&self, leg: Leg) -> Option<Body> {
        self.sdp
            .iter()
            .find(|(l, _)| *l == leg)
            .map(|(_, b)| b.clone())
    }
}

impl Call {
    /// A refusal for the caller: a final status while the INVITE is open, a hang-up once
    /// the queue has answered it.
    fn refuse(&self, status: u16) -> Action {
        if self.queue_answered {
            Action::Hangup(self.caller)
        } else {
            Action::Reject(status)
        }
    }
}

fn respond(req: ReqId, to: Leg, status: u16) -> Action {
    Action::Respond {
        req,
        to,
        status,
        session_timer: None,
        body: None,
    }
}

fn ended(user: Option<UserId>, outcome: CallOutcome) -> Action {
    Action::Publish(Publish {
        event: "ended",
        ringing: None,
        answered_by: user,
        outcome: Some(outcome),
    })
}

/// How a leg that got a final status ended.
pub fn leg_state(status: u16) -> &'static str {
    match status {
        200..=299 => "answered",
        486 | 600 => "busy",
        603 => "declined",
        487 => "cancelled",
        408 | 480 => "no_answer",
        _ => "failed",
    }
}

/// How a call out (a click-to-call, an employee's own call) that never connected the
/// customer ended, given the customer leg's final SIP status: the employee hung up first
/// (cancelled), the customer was busy, did not answer (missed), or the call could not be
/// made at all (failed: a wrong number, the carrier refusing it, no connection to it).
pub fn unreached_outcome(why: Unanswered, status: Option<u16>) -> CallOutcome {
    match why {
        Unanswered::Cancelled => CallOutcome::Cancelled,
        Unanswered::Busy => CallOutcome::Busy,
        Unanswered::Missed => match status {
            None | Some(408 | 480 | 487) => CallOutcome::Missed,
            Some(_) => CallOutcome::Failed,
        },
    }
}

#[cfg(test)]
mod tests;
