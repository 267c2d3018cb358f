//! The call's transitions, table-driven: each row starts a call, replays a short event
//! history, applies one event and compares the actions (written briefly, see [`brief`])
//! and where the call is afterwards.

use std::collections::HashMap;

use super::*;
use crate::crm::hours::AfterHours;
use crate::sip::router::plan;

fn user(id: &str) -> UserId {
    UserId(id.to_owned())
}

fn device(name: &str) -> Device {
    Device {
        contact: format!("sip:{name}@192.0.2.1"),
        transport: "udp".into(),
        source: "192.0.2.1:5060".into(),
        path: None,
        q: None,
        owner: None,
        carrier_host: None,
    }
}

/// Bob (desk and mobile) rings first, then Cid (softphone), 20 s each.
fn two_steps() -> RoutePlan {
    let mut devices = HashMap::new();
    devices.insert(user("bob"), vec![device("desk"), device("mobile")]);
    devices.insert(user("cid"), vec![device("softphone")]);
    plan(&[user("bob"), user("cid")], &devices, 20)
}

fn t0() -> Instant {
    // A fixed origin: every event's time is an offset from it.
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn at(secs: u64) -> Now {
    Now {
        at: t0() + Duration::from_secs(secs),
        wall_ms: 1_700_000_000_000 + (secs as i64) * 1000,
    }
}

fn incoming() -> Setup {
    Setup {
        kind: Kind::Incoming,
        plan: two_steps(),
        phones: None,
        offer: Body::sdp("o=carrier"),
        session_interval_s: None,
        after_hours: None,
        recording: false,
        intake_pending: false,
        received: t0(),
        queue: None,
    }
}

fn with_timer() -> Setup {
    Setup {
        session_interval_s: Some(90),
        ..incoming()
    }
}

fn after_hours(action: AfterHoursAction, forward_to: Option<&str>) -> Setup {
    Setup {
        after_hours: Some(AfterHours {
            action,
            forward_to: forward_to.map(str::to_owned),
            max_message_s: 60,
        }),
        ..incoming()
    }
}

fn voicemail() -> Setup {
    after_hours(AfterHoursAction::Voicemail, None)
}

fn forward() -> Setup {
    after_hours(AfterHoursAction::Forward, Some("+4930111"))
}

fn recorded() -> Setup {
    Setup {
        recording: true,
        ..incoming()
    }
}

fn late_intake() -> Setup {
    Setup {
        intake_pending: true,
        ..incoming()
    }
}

fn internal() -> Setup {
    Setup {
        kind: Kind::Internal,
        ..incoming()
    }
}

/// Click-to-call: Anna's two phones ring first, then the customer's carrier leg.
fn dialled() -> Setup {
    let mut phones = HashMap::new();
    phones.insert(
        user("anna"),
        vec![device("anna-desk"), device("anna-mobile")],
    );
    let mut carrier = HashMap::new();
    carrier.insert(user("anna"), vec![device("carrier")]);
    Setup {
        kind: Kind::Dialled,
        plan: plan(&[user("anna")], &carrier, 180),
        phones: Some(plan(&[user("anna")], &phones, 20)),
        offer: Body::sdp("o=relay"),
        ..incoming()
    }
}

fn sdp(text: &str) -> Body {
    Body::sdp(text)
}

const R00: Leg = Leg::Ring(0, 0);
const R01: Leg = Leg::Ring(0, 1);
const R10: Leg = Leg::Ring(1, 0);
const T0: Leg = Leg::Transfer(0);
const T1: Leg = Leg::Transfer(1);

fn start() -> Event {
    Event::Start { open: true }
}

fn answered(leg: Leg, text: &str) -> Event {
    Event::Answered {
        leg,
        answer: sdp(text),
    }
}

fn bye(leg: Leg) -> Event {
    Event::Hangup { leg, cancel: false }
}

fn reinvite(leg: Leg, req: u32, text: &str) -> Event {
    Event::Request {
        leg,
        req: ReqId(req),
        request: InDialog::Reinvite(Some(sdp(text))),
    }
}

fn refer(leg: Leg, req: u32, to: &str) -> Event {
    Event::Request {
        leg,
        req: ReqId(req),
        request: InDialog::Refer(refer_target(to)),
    }
}

fn response(ask: u32, status: u16, text: &str) -> Event {
    Event::Response {
        ask: Ask(ask),
        status,
        body: (!text.is_empty()).then(|| sdp(text)),
    }
}

fn ben_found() -> Event {
    Event::TransferTarget(Ok((
        user("ben"),
        vec![device("ben-desk"), device("ben-mobile")],
    )))
}

const REPLACES: &str = "<sip:102@gw?Replaces=consult%40anna%3Bto-tag%3Da%3Bfrom-tag%3Db>";
const EARLY_ONLY: &str =
    "<sip:102@gw?Replaces=consult%40anna%3Bto-tag%3Da%3Bfrom-tag%3Db%3Bearly-only>";

/// Talking to Bob's desk.
fn talking() -> Vec<Event> {
    vec![start(), answered(R00, "o=bob")]
}

/// Bob's desk REFERred the caller to Ben, who was found and rings on two devices; the
/// 202 went out (the first NOTIFY with it).
fn blind_ringing() -> Vec<Event> {
    let mut history = talking();
    history.extend([
        refer(R00, 7, "<sip:102@gw>"),
        ben_found(),
        Event::Confirmed { leg: R00 },
    ]);
    history
}

/// Ben's mobile answered the blind transfer: the caller is being re-INVITEd (ask 0).
fn blind_reinviting() -> Vec<Event> {
    let mut history = blind_ringing();
    history.push(answered(T1, "o=ben"));
    history
}

/// Bob's desk REFERred with `Replaces`; the other call handed Ben's side over.
fn attended_taken() -> Vec<Event> {
    let mut history = talking();
    history.extend([
        refer(R00, 7, REPLACES),
        Event::Handover(Handover::Taken {
            sdp: Some(sdp("o=ben")),
            user: Some(user("ben")),
            contact: "sip:ben@192.0.2.9".into(),
        }),
        Event::Confirmed { leg: R00 },
    ]);
    history
}

/// One action, briefly: what the tables compare.
fn brief(action: &Action) -> Option<String> {
    let text = match action {
        Action::Invite { leg, .. } => format!("invite {leg:?}"),
        Action::Forward { target } => format!("forward {target}"),
        Action::Hangup(leg) => format!("hangup {leg:?}"),
        Action::Progress(None) => "180".into(),
        Action::Progress(Some(_)) => "183".into(),
        Action::Answer {
            body,
            session_timer,
        } => format!(
            "answer {}{}",
            String::from_utf8_lossy(&body.bytes),
            session_timer.map_or(String::new(), |s| format!(" timer={s}"))
        ),
        Action::Reject(status) => format!("reject {status}"),
        Action::Send {
            ask,
            to,
            update,
            body,
        } => format!(
            "{}#{} {to:?}{}",
            if *update { "update" } else { "reinvite" },
            ask.0,
            body.as_ref().map_or(String::new(), |b| format!(
                " {}",
                String::from_utf8_lossy(&b.bytes)
            ))
        ),
        Action::Respond {
            req,
            to,
            status,
            session_timer,
            body,
        } => format!(
            "respond {status} req{} {to:?}{}{}",
            req.0,
            session_timer.map_or(String::new(), |s| format!(" timer={s}")),
            body.as_ref().map_or(String::new(), |b| format!(
                " {}",
                String::from_utf8_lossy(&b.bytes)
            ))
        ),
        Action::Notify {
            leg,
            notices,
            then_hangup,
        } => format!(
            "notify {} {leg:?}{}",
            notices
                .iter()
                .map(|(status, _)| status.to_string())
                .collect::<Vec<_>>()
                .join(","),
            if *then_hangup { " then hangup" } else { "" }
        ),
        Action::Learn { from, .. } => format!("learn {from:?}"),
        Action::Timer { timer, at: Some(_) } => format!("timer {timer:?}"),
        Action::Timer { timer, at: None } => format!("stop {timer:?}"),
        Action::ArmMedia => "arm media".into(),
        Action::StartRecording => "record".into(),
        Action::Voicemail { max } => format!("voicemail {}s", max.as_secs()),
        Action::StopVoicemail => "stop voicemail".into(),
        Action::Write(Write::Event {
            kind,
            user,
            outcome,
            ..
        }) => format!(
            "write {kind}{}{}",
            user.as_ref().map_or(String::new(), |u| format!(" {u}")),
            outcome.map_or(String::new(), |o| format!(" {o}"))
        ),
        Action::Write(Write::Transferred { user, .. }) => format!("write transferred {user}"),
        Action::Write(Write::Legs(_)) => "write legs".into(),
        Action::Write(Write::Voicemail(_)) => "write voicemail".into(),
        Action::Write(Write::FinishMedia) => "write media".into(),
        Action::Publish(p) => format!(
            "publish {}{}{}",
            p.event,
            p.ringing
                .as_ref()
                .or(p.answered_by.as_ref())
                .map_or(String::new(), |u| format!(" {u}")),
            p.outcome.map_or(String::new(), |o| format!(" {o}"))
        ),
        Action::LegsChanged => return None,
        Action::Count(metric) => format!("count {metric:?}"),
        Action::SetupDelay(_) => "setup delay".into(),
        Action::FindTransferTarget { extension } => format!("find {extension}"),
        Action::AskHandover { leg, .. } => format!("ask handover {leg:?}"),
        Action::HandOver { leg, user, .. } => format!(
            "hand over {leg:?}{}",
            user.as_ref().map_or(String::new(), |u| format!(" {u}"))
        ),
        Action::RefuseHandover(status) => format!("refuse handover {status}"),
        Action::Wait { .. } => "wait".into(),
        Action::OfferOver { answered_by } => format!(
            "offer over {}",
            answered_by.as_ref().map_or("nobody", |u| u.as_str())
        ),
        Action::LeaveQueue => "leave queue".into(),
        Action::Write(Write::Queue { wait_ms, .. }) => format!(
            "write queue{}",
            wait_ms.map_or(String::new(), |w| format!(" waited {}s", w / 1000))
        ),
    };
    Some(text)
}

/// Where the call is, briefly.
fn phase(call: &Call) -> String {
    match &call.phase {
        Phase::Idle => "idle".into(),
        Phase::Dialling(_) => "dialling".into(),
        Phase::Ringing(r) => format!("ringing step {:?}", r.current_step()),
        Phase::Forwarding => "forwarding".into(),
        Phase::Voicemail => "voicemail".into(),
        Phase::Waiting(_) => "waiting".into(),
        Phase::Talking(t) => format!(
            "talking {:?}{}",
            t.agent,
            t.user.as_ref().map_or(String::new(), |u| format!(" {u}"))
        ),
        Phase::Over if call.is_over() => "over".into(),
        Phase::Over => "over, writes held".into(),
    }
}

struct Row {
    name: &'static str,
    setup: fn() -> Setup,
    history: Vec<Event>,
    /// Seconds after the history.
    after_s: u64,
    event: Event,
    actions: &'static [&'static str],
    then: &'static str,
}

fn check(rows: Vec<Row>) {
    for row in rows {
        let mut call = Call::new((row.setup)());
        // A timer in the history fires well after its deadline.
        let mut clock = 0;
        for event in row.history {
            if matches!(event, Event::Timer(_)) {
                clock += 100;
            }
            call.on(event, at(clock));
        }
        let actions: Vec<String> = call
            .on(row.event, at(clock + row.after_s))
            .iter()
            .filter_map(brief)
            .collect();
        assert_eq!(actions, row.actions, "{}: actions", row.name);
        assert_eq!(phase(&call), row.then, "{}: where the call is", row.name);
    }
}

#[test]
fn t5_ringing_moves_through_the_plan() {
    check(vec![
        Row {
            name: "start rings the first step's devices",
            setup: incoming,
            history: vec![],
            after_s: 0,
            event: start(),
            actions: &[
                "setup delay",
                "publish ringing bob",
                "timer Step(0)",
                "invite Ring(0, 0)",
                "invite Ring(0, 1)",
            ],
            then: "ringing step Some(0)",
        },
        Row {
            name: "the first 180 is relayed, once",
            setup: incoming,
            history: vec![
                start(),
                Event::Progress {
                    leg: R01,
                    early: None,
                },
            ],
            after_s: 1,
            event: Event::Progress {
                leg: R00,
                early: None,
            },
            actions: &[],
            then: "ringing step Some(0)",
        },
        Row {
            name: "early media is relayed each time",
            setup: incoming,
            history: vec![
                start(),
                Event::Progress {
                    leg: R01,
                    early: Some(sdp("o=mobile")),
                },
            ],
            after_s: 1,
            event: Event::Progress {
                leg: R00,
                early: Some(sdp("o=desk")),
            },
            actions: &["183"],
            then: "ringing step Some(0)",
        },
        Row {
            name: "the first answer wins, the other leg is cancelled",
            setup: incoming,
            history: vec![start()],
            after_s: 3,
            event: answered(R01, "o=bob"),
            actions: &[
                "hangup Ring(0, 0)",
                "stop Step(0)",
                "answer o=bob",
                "arm media",
                "write answered bob",
                "publish answered bob",
                "count Calls(Answered)",
            ],
            then: "talking Ring(0, 1) bob",
        },
        Row {
            name: "the ring timeout moves on to the next employee",
            setup: incoming,
            history: vec![start()],
            after_s: 20,
            event: Event::Timer(Timer::Step(0)),
            actions: &[
                "hangup Ring(0, 0)",
                "hangup Ring(0, 1)",
                "publish ringing cid",
                "timer Step(1)",
                "invite Ring(1, 0)",
            ],
            then: "ringing step Some(1)",
        },
        Row {
            name: "a step timer firing early changes nothing",
            setup: incoming,
            history: vec![start()],
            after_s: 5,
            event: Event::Timer(Timer::Step(0)),
            actions: &[],
            then: "ringing step Some(0)",
        },
        Row {
            name: "busy on every device of a step moves on at once",
            setup: incoming,
            history: vec![
                start(),
                Event::Failed {
                    leg: R00,
                    status: 486,
                },
            ],
            after_s: 1,
            event: Event::Failed {
                leg: R01,
                status: 603,
            },
            actions: &["publish ringing cid", "timer Step(1)", "invite Ring(1, 0)"],
            then: "ringing step Some(1)",
        },
        Row {
            name: "a leg that cannot be sent counts as failed",
            setup: incoming,
            history: vec![
                start(),
                Event::Failed {
                    leg: R00,
                    status: 486,
                },
                Event::Failed {
                    leg: R01,
                    status: 486,
                },
            ],
            after_s: 1,
            event: Event::NotSent {
                leg: R10,
                status: 503,
            },
            actions: &[
                "stop Step(1)",
                "reject 480",
                "write legs",
                "write ended missed",
                "write media",
                "publish ended missed",
                "count Calls(Missed)",
            ],
            then: "over",
        },
        Row {
            name: "everyone busy is 486 and a busy call",
            setup: incoming,
            history: vec![
                start(),
                Event::Failed {
                    leg: R00,
                    status: 486,
                },
                Event::Failed {
                    leg: R01,
                    status: 486,
                },
            ],
            after_s: 1,
            event: Event::Failed {
                leg: R10,
                status: 486,
            },
            actions: &[
                "stop Step(1)",
                "reject 486",
                "write legs",
                "write ended busy",
                "write media",
                "publish ended busy",
                "count Calls(Busy)",
            ],
            then: "over",
        },
        Row {
            name: "CANCEL while ringing cancels every leg and is a cancelled call",
            setup: incoming,
            history: vec![start()],
            after_s: 2,
            event: Event::Hangup {
                leg: Leg::Caller,
                cancel: true,
            },
            actions: &[
                "hangup Ring(0, 0)",
                "hangup Ring(0, 1)",
                "stop Step(0)",
                "write legs",
                "write ended cancelled",
                "write media",
                "publish ended cancelled",
                "count Calls(Cancelled)",
            ],
            then: "over",
        },
        Row {
            name: "nobody registered is an immediate 480",
            setup: || Setup {
                plan: RoutePlan::default(),
                ..incoming()
            },
            history: vec![],
            after_s: 0,
            event: start(),
            actions: &[
                "reject 480",
                "write legs",
                "write ended missed",
                "write media",
                "publish ended missed",
                "count Calls(Missed)",
            ],
            then: "over",
        },
        Row {
            name: "a phone's BYE before its answer is taken waits for the talk",
            setup: incoming,
            history: vec![start(), bye(R00)],
            after_s: 1,
            event: answered(R00, "o=bob"),
            actions: &[
                "hangup Ring(0, 1)",
                "stop Step(0)",
                "answer o=bob",
                "arm media",
                "write answered bob",
                "publish answered bob",
                "count Calls(Answered)",
                "hangup Caller",
                "write legs",
                "write ended bob answered",
                "write media",
                "publish ended bob answered",
            ],
            then: "over",
        },
        Row {
            name: "a 2xx after the call was decided is ended",
            setup: incoming,
            history: talking(),
            after_s: 1,
            event: answered(R01, "o=mobile"),
            actions: &["hangup Ring(0, 1)"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "a recorded number starts the recording on the answer",
            setup: recorded,
            history: vec![start()],
            after_s: 1,
            event: answered(R00, "o=bob"),
            actions: &[
                "hangup Ring(0, 1)",
                "stop Step(0)",
                "answer o=bob",
                "arm media",
                "record",
                "write answered bob",
                "publish answered bob",
                "count Calls(Answered)",
            ],
            then: "talking Ring(0, 0) bob",
        },
    ]);
}

#[test]
fn t13_hang_up_media_timeout_and_session_timer_end_the_call() {
    let ended: &[&str] = &[
        "write legs",
        "write ended bob answered",
        "write media",
        "publish ended bob answered",
    ];
    let with = |head: &[&'static str]| -> &'static [&'static str] {
        let all: Vec<&'static str> = head.iter().chain(ended).copied().collect();
        Box::leak(all.into_boxed_slice())
    };
    check(vec![
        Row {
            name: "the caller's BYE hangs up the agent",
            setup: incoming,
            history: talking(),
            after_s: 30,
            event: bye(Leg::Caller),
            actions: with(&["hangup Ring(0, 0)"]),
            then: "over",
        },
        Row {
            name: "the agent's BYE hangs up the caller",
            setup: incoming,
            history: talking(),
            after_s: 30,
            event: bye(R00),
            actions: with(&["hangup Caller"]),
            then: "over",
        },
        Row {
            name: "a cancelled leg finishing changes nothing",
            setup: incoming,
            history: talking(),
            after_s: 1,
            event: bye(R01),
            actions: &[],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "no media for the relay's timeout ends both sides",
            setup: incoming,
            history: talking(),
            after_s: 30,
            event: Event::MediaTimeout,
            actions: with(&["count MediaTimeout", "hangup Ring(0, 0)", "hangup Caller"]),
            then: "over",
        },
        Row {
            name: "the session timer starts on the answer, its headers in the 200",
            setup: with_timer,
            history: vec![start()],
            after_s: 1,
            event: answered(R00, "o=bob"),
            actions: &[
                "hangup Ring(0, 1)",
                "stop Step(0)",
                "answer o=bob timer=90",
                "arm media",
                "write answered bob",
                "publish answered bob",
                "count Calls(Answered)",
                "timer Session",
            ],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "a session not refreshed in time ends both sides",
            setup: with_timer,
            history: talking(),
            after_s: 90,
            event: Event::Timer(Timer::Session),
            actions: with(&[
                "count SessionExpired",
                "hangup Ring(0, 0)",
                "hangup Caller",
                "stop Session",
            ]),
            then: "over",
        },
        Row {
            name: "a refresh moved the expiry: the old timer changes nothing",
            setup: with_timer,
            history: vec![start(), answered(R00, "o=bob")],
            after_s: 60,
            event: Event::Timer(Timer::Session),
            actions: &[],
            then: "talking Ring(0, 0) bob",
        },
    ]);
}

#[test]
fn reinvite_and_update_are_relayed_both_ways() {
    check(vec![
        Row {
            name: "the caller's re-INVITE (hold) goes to the agent",
            setup: incoming,
            history: talking(),
            after_s: 5,
            event: reinvite(Leg::Caller, 3, "o=carrier a=sendonly"),
            actions: &["reinvite#0 Ring(0, 0) o=carrier a=sendonly"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "the agent's answer goes back on the held request",
            setup: incoming,
            history: {
                let mut h = talking();
                h.push(reinvite(Leg::Caller, 3, "o=carrier a=sendonly"));
                h
            },
            after_s: 5,
            event: response(0, 200, "o=bob a=recvonly"),
            actions: &["respond 200 req3 Caller o=bob a=recvonly"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "the agent's UPDATE goes to the caller",
            setup: incoming,
            history: talking(),
            after_s: 5,
            event: Event::Request {
                leg: R00,
                req: ReqId(4),
                request: InDialog::Update(None),
            },
            actions: &["update#0 Caller"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "a refusal is relayed as it came",
            setup: incoming,
            history: {
                let mut h = talking();
                h.push(reinvite(R00, 4, "o=bob2"));
                h
            },
            after_s: 5,
            event: response(0, 488, ""),
            actions: &["respond 488 req4 Ring(0, 0)"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "a re-INVITE from a leg no longer in the call is 481",
            setup: incoming,
            history: talking(),
            after_s: 5,
            event: reinvite(R01, 5, "o=mobile"),
            actions: &["respond 481 req5 Ring(0, 1)"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "a caller's refresh restarts the session timer",
            setup: with_timer,
            history: talking(),
            after_s: 60,
            event: reinvite(Leg::Caller, 3, "o=carrier"),
            actions: &["timer Session", "reinvite#0 Ring(0, 0) o=carrier"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "the answer to a caller's refresh repeats the interval",
            setup: with_timer,
            history: {
                let mut h = talking();
                h.push(reinvite(Leg::Caller, 3, "o=carrier"));
                h
            },
            after_s: 1,
            event: response(0, 200, "o=bob"),
            actions: &["respond 200 req3 Caller timer=90 o=bob"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "the agent's refresh does not touch the caller's session timer",
            setup: with_timer,
            history: {
                let mut h = talking();
                h.push(reinvite(R00, 4, "o=bob"));
                h
            },
            after_s: 1,
            event: response(0, 200, "o=carrier"),
            actions: &["respond 200 req4 Ring(0, 0) o=carrier"],
            then: "talking Ring(0, 0) bob",
        },
    ]);
}

#[test]
fn t10_blind_transfer() {
    check(vec![
        Row {
            name: "a REFER from the agent looks the target up",
            setup: incoming,
            history: talking(),
            after_s: 10,
            event: refer(R00, 7, "<sip:102@gw>"),
            actions: &["find 102"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "REFER from the caller is refused",
            setup: incoming,
            history: talking(),
            after_s: 10,
            event: refer(Leg::Caller, 7, "<sip:102@gw>"),
            actions: &["respond 403 req7 Caller"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "an unreadable Refer-To is 400",
            setup: incoming,
            history: talking(),
            after_s: 10,
            event: refer(R00, 7, "<sip:gw>"),
            actions: &["respond 400 req7 Ring(0, 0)"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "an unknown target is refused with the lookup's status",
            setup: incoming,
            history: {
                let mut h = talking();
                h.push(refer(R00, 7, "<sip:999@gw>"));
                h
            },
            after_s: 10,
            event: Event::TransferTarget(Err(404)),
            actions: &["respond 404 req7 Ring(0, 0)"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "the target found: 202 and its devices ring",
            setup: incoming,
            history: {
                let mut h = talking();
                h.push(refer(R00, 7, "<sip:102@gw>"));
                h
            },
            after_s: 10,
            event: ben_found(),
            actions: &[
                "respond 202 req7 Ring(0, 0)",
                "invite Transfer(0)",
                "invite Transfer(1)",
                "timer Transfer",
            ],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "the first NOTIFY waits for the dialog to be confirmed again",
            setup: incoming,
            history: {
                let mut h = talking();
                h.extend([refer(R00, 7, "<sip:102@gw>"), ben_found()]);
                h
            },
            after_s: 10,
            event: Event::Confirmed { leg: R00 },
            actions: &["notify 100 Ring(0, 0)"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "a second REFER while one is under way is 491",
            setup: incoming,
            history: blind_ringing(),
            after_s: 10,
            event: refer(R00, 8, "<sip:103@gw>"),
            actions: &["respond 491 req8 Ring(0, 0)"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "answered: the other device is cancelled, the caller re-INVITEd",
            setup: incoming,
            history: blind_ringing(),
            after_s: 12,
            event: answered(T1, "o=ben"),
            actions: &[
                "hangup Transfer(0)",
                "stop Transfer",
                "reinvite#0 Caller o=ben",
            ],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "answered: the caller's answer connects, the referrer is notified and hung up",
            setup: incoming,
            history: blind_reinviting(),
            after_s: 12,
            event: response(0, 200, "o=carrier"),
            actions: &[
                "learn Caller",
                "notify 200 Ring(0, 0) then hangup",
                "count Transfer { answered: true }",
                "write transferred ben",
                "publish answered ben",
            ],
            then: "talking Transfer(1) ben",
        },
        Row {
            name: "failed: every device said no, the referrer is notified",
            setup: incoming,
            history: {
                let mut h = blind_ringing();
                h.push(Event::Failed {
                    leg: T0,
                    status: 486,
                });
                h
            },
            after_s: 12,
            event: Event::Failed {
                leg: T1,
                status: 603,
            },
            actions: &[
                "stop Transfer",
                "count Transfer { answered: false }",
                "notify 603 Ring(0, 0)",
            ],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "failed: the target did not answer in time",
            setup: incoming,
            history: blind_ringing(),
            after_s: 30,
            event: Event::Timer(Timer::Transfer),
            actions: &[
                "hangup Transfer(0)",
                "hangup Transfer(1)",
                "count Transfer { answered: false }",
                "notify 408 Ring(0, 0)",
            ],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "nobody to ring is 480 to the referrer",
            setup: incoming,
            history: {
                let mut h = talking();
                h.push(refer(R00, 7, "<sip:102@gw>"));
                h
            },
            after_s: 10,
            event: Event::TransferTarget(Ok((user("ben"), Vec::new()))),
            actions: &[
                "respond 202 req7 Ring(0, 0)",
                "count Transfer { answered: false }",
            ],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "an outcome before the first NOTIFY follows it, in order",
            setup: incoming,
            history: {
                let mut h = talking();
                h.extend([
                    refer(R00, 7, "<sip:102@gw>"),
                    Event::TransferTarget(Ok((user("ben"), Vec::new()))),
                ]);
                h
            },
            after_s: 10,
            event: Event::Confirmed { leg: R00 },
            actions: &["notify 100,480 Ring(0, 0)"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "a connected transfer before the first NOTIFY: both, then the hang-up",
            setup: incoming,
            history: {
                let mut h = talking();
                h.extend([
                    refer(R00, 7, "<sip:102@gw>"),
                    ben_found(),
                    answered(T1, "o=ben"),
                    response(0, 200, "o=carrier"),
                ]);
                h
            },
            after_s: 12,
            event: Event::Confirmed { leg: R00 },
            actions: &["notify 100,200 Ring(0, 0) then hangup"],
            then: "talking Transfer(1) ben",
        },
        Row {
            name: "BYE from the referrer during the transfer keeps the caller waiting",
            setup: incoming,
            history: blind_ringing(),
            after_s: 11,
            event: bye(R00),
            actions: &[],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "referrer gone, then answered: connected without a NOTIFY",
            setup: incoming,
            history: {
                let mut h = blind_reinviting();
                h.push(bye(R00));
                h
            },
            after_s: 12,
            event: response(0, 200, "o=carrier"),
            actions: &[
                "learn Caller",
                "count Transfer { answered: true }",
                "write transferred ben",
                "publish answered ben",
            ],
            then: "talking Transfer(1) ben",
        },
        Row {
            name: "referrer gone, then failed: nobody is left, the caller is hung up",
            setup: incoming,
            history: {
                let mut h = blind_ringing();
                h.push(bye(R00));
                h
            },
            after_s: 30,
            event: Event::Timer(Timer::Transfer),
            actions: &[
                "hangup Transfer(0)",
                "hangup Transfer(1)",
                "count Transfer { answered: false }",
                "hangup Caller",
                "write legs",
                "write ended bob answered",
                "write media",
                "publish ended bob answered",
            ],
            then: "over",
        },
        Row {
            name: "the caller hangs up during the transfer: every leg ends",
            setup: incoming,
            history: blind_ringing(),
            after_s: 11,
            event: bye(Leg::Caller),
            actions: &[
                "hangup Ring(0, 0)",
                "hangup Transfer(0)",
                "hangup Transfer(1)",
                "write legs",
                "write ended bob answered",
                "write media",
                "publish ended bob answered",
            ],
            then: "over",
        },
        Row {
            name: "after the transfer the new party's BYE ends the call as theirs",
            setup: incoming,
            history: {
                let mut h = blind_reinviting();
                h.push(response(0, 200, "o=carrier"));
                h
            },
            after_s: 40,
            event: bye(T1),
            actions: &[
                "hangup Caller",
                "write legs",
                "write ended ben answered",
                "write media",
                "publish ended ben answered",
            ],
            then: "over",
        },
    ]);
}

#[test]
fn t10_attended_transfer() {
    check(vec![
        Row {
            name: "REFER with Replaces asks the other call",
            setup: incoming,
            history: talking(),
            after_s: 10,
            event: refer(R00, 7, REPLACES),
            actions: &["ask handover Taken(0)"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "unknown Replaces: no live call holds it, 404",
            setup: incoming,
            history: {
                let mut h = talking();
                h.push(refer(R00, 7, REPLACES));
                h
            },
            after_s: 10,
            event: Event::Handover(Handover::NoSuchCall),
            actions: &["respond 404 req7 Ring(0, 0)"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "the other call refused: 202, the refusal NOTIFYed after the first NOTIFY",
            setup: incoming,
            history: {
                let mut h = talking();
                h.push(refer(R00, 7, EARLY_ONLY));
                h
            },
            after_s: 10,
            event: Event::Handover(Handover::Refused(486)),
            actions: &[
                "respond 202 req7 Ring(0, 0)",
                "count Transfer { answered: false }",
            ],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "taken over: the caller is offered the new party's SDP",
            setup: incoming,
            history: {
                let mut h = talking();
                h.push(refer(R00, 7, REPLACES));
                h
            },
            after_s: 10,
            event: Event::Handover(Handover::Taken {
                sdp: Some(sdp("o=ben")),
                user: Some(user("ben")),
                contact: "sip:ben@192.0.2.9".into(),
            }),
            actions: &["respond 202 req7 Ring(0, 0)", "reinvite#0 Caller o=ben"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "the caller's answer is offered to the new party",
            setup: incoming,
            history: attended_taken(),
            after_s: 10,
            event: response(0, 200, "o=carrier"),
            actions: &["reinvite#1 Taken(0) o=carrier"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "the new party's answer connects; it is the call's employee now",
            setup: incoming,
            history: {
                let mut h = attended_taken();
                h.push(response(0, 200, "o=carrier"));
                h
            },
            after_s: 10,
            event: response(1, 200, "o=ben"),
            actions: &[
                "learn Taken(0)",
                "notify 200 Ring(0, 0) then hangup",
                "count Transfer { answered: true }",
                "write transferred ben",
                "publish answered ben",
            ],
            then: "talking Taken(0) ben",
        },
        Row {
            name: "the caller refusing the re-INVITE still connects",
            setup: incoming,
            history: attended_taken(),
            after_s: 10,
            event: response(0, 488, ""),
            actions: &[
                "notify 200 Ring(0, 0) then hangup",
                "count Transfer { answered: true }",
                "write transferred ben",
                "publish answered ben",
            ],
            then: "talking Taken(0) ben",
        },
    ]);
}

#[test]
fn t10_attended_transfer_the_call_asked_hands_over_its_far_side() {
    let ended: &[&str] = &[
        "write legs",
        "write ended bob answered",
        "write media",
        "publish ended bob answered",
    ];
    let with = |head: &[&'static str]| -> &'static [&'static str] {
        let all: Vec<&'static str> = head.iter().chain(ended).copied().collect();
        Box::leak(all.into_boxed_slice())
    };
    check(vec![
        Row {
            name: "Replaces names the agent's dialog: the caller is handed over",
            setup: incoming,
            history: talking(),
            after_s: 10,
            event: Event::HandoverAsked {
                named: Some(R00),
                early_only: false,
            },
            actions: with(&["hand over Caller", "hangup Ring(0, 0)"]),
            then: "over",
        },
        Row {
            name: "Replaces names the caller's dialog of an internal call: the callee goes, as an employee",
            setup: internal,
            history: talking(),
            after_s: 10,
            event: Event::HandoverAsked {
                named: Some(Leg::Caller),
                early_only: false,
            },
            actions: with(&["hand over Ring(0, 0) bob", "hangup Caller"]),
            then: "over",
        },
        Row {
            name: "Replaces names the caller's dialog of a customer call: the customer goes",
            setup: incoming,
            history: talking(),
            after_s: 10,
            event: Event::HandoverAsked {
                named: Some(Leg::Caller),
                early_only: false,
            },
            actions: with(&["hand over Ring(0, 0)", "hangup Caller"]),
            then: "over",
        },
        Row {
            name: "early-only never replaces a confirmed dialog",
            setup: incoming,
            history: talking(),
            after_s: 10,
            event: Event::HandoverAsked {
                named: Some(R00),
                early_only: true,
            },
            actions: &["refuse handover 486"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "a dialog of no leg of ours is 481",
            setup: incoming,
            history: talking(),
            after_s: 10,
            event: Event::HandoverAsked {
                named: None,
                early_only: false,
            },
            actions: &["refuse handover 481"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "a call with its own transfer under way is 491",
            setup: incoming,
            history: blind_ringing(),
            after_s: 10,
            event: Event::HandoverAsked {
                named: Some(R00),
                early_only: false,
            },
            actions: &["refuse handover 491"],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "a call still ringing has nothing to hand over",
            setup: incoming,
            history: vec![start()],
            after_s: 1,
            event: Event::HandoverAsked {
                named: Some(Leg::Caller),
                early_only: false,
            },
            actions: &["refuse handover 481"],
            then: "ringing step Some(0)",
        },
    ]);
}

#[test]
fn t13_after_hours_voicemail_forward_and_reject() {
    let closed = || Event::Start { open: false };
    check(vec![
        Row {
            name: "outside hours without a rule: 480",
            setup: incoming,
            history: vec![],
            after_s: 0,
            event: closed(),
            actions: &[
                "reject 480",
                "write legs",
                "write ended missed",
                "write media",
                "publish ended missed",
                "count Calls(Missed)",
            ],
            then: "over",
        },
        Row {
            name: "outside hours with the reject rule: 480",
            setup: || after_hours(AfterHoursAction::Reject, None),
            history: vec![],
            after_s: 0,
            event: closed(),
            actions: &[
                "reject 480",
                "write legs",
                "write ended missed",
                "write media",
                "publish ended missed",
                "count Calls(Missed)",
            ],
            then: "over",
        },
        Row {
            name: "nobody answered with the reject rule: the queue's own refusal",
            setup: || after_hours(AfterHoursAction::Reject, None),
            history: vec![start(), Event::Timer(Timer::Step(0))],
            after_s: 20,
            event: Event::Timer(Timer::Step(1)),
            actions: &[
                "hangup Ring(1, 0)",
                "stop Step(1)",
                "reject 480",
                "write legs",
                "write ended missed",
                "write media",
                "publish ended missed",
                "count Calls(Missed)",
            ],
            then: "over",
        },
        Row {
            name: "outside hours the voicemail answers",
            setup: voicemail,
            history: vec![],
            after_s: 0,
            event: closed(),
            actions: &["voicemail 60s"],
            then: "voicemail",
        },
        Row {
            name: "nobody answered: the voicemail takes over from the queue",
            setup: voicemail,
            history: vec![start(), Event::Timer(Timer::Step(0))],
            after_s: 20,
            event: Event::Timer(Timer::Step(1)),
            actions: &["hangup Ring(1, 0)", "stop Step(1)", "voicemail 60s"],
            then: "voicemail",
        },
        Row {
            name: "the caller hanging up stops the voicemail",
            setup: voicemail,
            history: vec![closed()],
            after_s: 30,
            event: bye(Leg::Caller),
            actions: &["stop voicemail"],
            then: "voicemail",
        },
        Row {
            name: "a message left is kept with the missed call",
            setup: voicemail,
            history: vec![closed(), bye(Leg::Caller)],
            after_s: 30,
            event: Event::VoicemailOver(Ok(Some(StoredRecording {
                file: "m.wav".into(),
                duration_ms: 4000,
                voicemail: true,
            }))),
            actions: &[
                "hangup Caller",
                "write legs",
                "write ended missed",
                "write voicemail",
                "write media",
                "publish ended missed",
                "count Calls(Missed)",
            ],
            then: "over",
        },
        Row {
            name: "no common codec for the voicemail: the caller hears the status",
            setup: voicemail,
            history: vec![closed()],
            after_s: 0,
            event: Event::VoicemailOver(Err(488)),
            actions: &[
                "reject 488",
                "write legs",
                "write ended missed",
                "write media",
                "publish ended missed",
                "count Calls(Missed)",
            ],
            then: "over",
        },
        Row {
            name: "outside hours the call is forwarded",
            setup: forward,
            history: vec![],
            after_s: 0,
            event: closed(),
            actions: &["forward +4930111", "timer Forward"],
            then: "forwarding",
        },
        Row {
            name: "nobody answered: the call is forwarded",
            setup: forward,
            history: vec![start(), Event::Timer(Timer::Step(0))],
            after_s: 1,
            event: Event::Failed {
                leg: R10,
                status: 486,
            },
            actions: &["stop Step(1)", "forward +4930111", "timer Forward"],
            then: "forwarding",
        },
        Row {
            name: "the forward's ringing reaches the caller",
            setup: forward,
            history: vec![closed()],
            after_s: 1,
            event: Event::Progress {
                leg: Leg::Forward,
                early: Some(sdp("o=far")),
            },
            actions: &["183"],
            then: "forwarding",
        },
        Row {
            name: "the forward's answer connects the caller",
            setup: forward,
            history: vec![closed()],
            after_s: 5,
            event: answered(Leg::Forward, "o=far"),
            actions: &[
                "stop Forward",
                "answer o=far",
                "arm media",
                "write answered",
            ],
            then: "talking Forward",
        },
        Row {
            name: "the forward refused: the caller hears 486",
            setup: forward,
            history: vec![closed()],
            after_s: 5,
            event: Event::Failed {
                leg: Leg::Forward,
                status: 404,
            },
            actions: &[
                "reject 486",
                "stop Forward",
                "write legs",
                "write ended missed",
                "write media",
                "publish ended missed",
            ],
            then: "over",
        },
        Row {
            name: "the forward could not be sent: the caller hears why",
            setup: forward,
            history: vec![closed()],
            after_s: 0,
            event: Event::NotSent {
                leg: Leg::Forward,
                status: 503,
            },
            actions: &[
                "reject 503",
                "stop Forward",
                "write legs",
                "write ended missed",
                "write media",
                "publish ended missed",
            ],
            then: "over",
        },
        Row {
            name: "the forward rang out",
            setup: forward,
            history: vec![closed()],
            after_s: 60,
            event: Event::Timer(Timer::Forward),
            actions: &[
                "hangup Forward",
                "reject 486",
                "stop Forward",
                "write legs",
                "write ended missed",
                "write media",
                "publish ended missed",
            ],
            then: "over",
        },
        Row {
            name: "the caller gave up on the forward",
            setup: forward,
            history: vec![closed()],
            after_s: 10,
            event: Event::Hangup {
                leg: Leg::Caller,
                cancel: true,
            },
            actions: &[
                "hangup Forward",
                "stop Forward",
                "write legs",
                "write ended missed",
                "write media",
                "publish ended missed",
            ],
            then: "over",
        },
        Row {
            name: "a forward rule without a number rejects",
            setup: || after_hours(AfterHoursAction::Forward, None),
            history: vec![],
            after_s: 0,
            event: closed(),
            actions: &[
                "reject 486",
                "write legs",
                "write ended missed",
                "write media",
                "publish ended missed",
            ],
            then: "over",
        },
        Row {
            name: "working hours do not apply to an employee's outgoing call",
            setup: || Setup {
                kind: Kind::Outgoing,
                ..voicemail()
            },
            history: vec![],
            after_s: 0,
            event: closed(),
            actions: &[
                "setup delay",
                "publish ringing bob",
                "timer Step(0)",
                "invite Ring(0, 0)",
                "invite Ring(0, 1)",
            ],
            then: "ringing step Some(0)",
        },
    ]);
}

#[test]
fn t13_a_late_intake_holds_the_calls_writes_back_in_order() {
    check(vec![
        Row {
            name: "start arms the late intake's wait",
            setup: late_intake,
            history: vec![],
            after_s: 0,
            event: start(),
            actions: &[
                "timer Intake",
                "setup delay",
                "publish ringing bob",
                "timer Step(0)",
                "invite Ring(0, 0)",
                "invite Ring(0, 1)",
            ],
            then: "ringing step Some(0)",
        },
        Row {
            name: "the answer is held, the call goes on",
            setup: late_intake,
            history: vec![start()],
            after_s: 1,
            event: answered(R00, "o=bob"),
            actions: &[
                "hangup Ring(0, 1)",
                "stop Step(0)",
                "answer o=bob",
                "arm media",
                "publish answered bob",
                "count Calls(Answered)",
            ],
            then: "talking Ring(0, 0) bob",
        },
        Row {
            name: "the call ended before the intake: not over until it is done",
            setup: late_intake,
            history: talking(),
            after_s: 5,
            event: bye(Leg::Caller),
            actions: &["hangup Ring(0, 0)", "publish ended bob answered"],
            then: "over, writes held",
        },
        Row {
            name: "the intake done releases every write in order",
            setup: late_intake,
            history: {
                let mut h = talking();
                h.push(bye(Leg::Caller));
                h
            },
            after_s: 5,
            event: Event::IntakeDone,
            actions: &[
                "stop Intake",
                "write answered bob",
                "write legs",
                "write ended bob answered",
                "write media",
            ],
            then: "over",
        },
        Row {
            name: "the intake's wait over releases them too",
            setup: late_intake,
            history: {
                let mut h = talking();
                h.push(bye(Leg::Caller));
                h
            },
            after_s: 30,
            event: Event::Timer(Timer::Intake),
            actions: &[
                "stop Intake",
                "write answered bob",
                "write legs",
                "write ended bob answered",
                "write media",
            ],
            then: "over",
        },
        Row {
            name: "after release, writes go at once",
            setup: late_intake,
            history: vec![start(), Event::IntakeDone],
            after_s: 1,
            event: answered(R00, "o=bob"),
            actions: &[
                "hangup Ring(0, 1)",
                "stop Step(0)",
                "answer o=bob",
                "arm media",
                "write answered bob",
                "publish answered bob",
                "count Calls(Answered)",
            ],
            then: "talking Ring(0, 0) bob",
        },
    ]);
}

#[test]
fn t7_click_to_call_rings_the_employee_then_the_customer() {
    let phone_answered = || vec![start(), answered(Leg::Phone(0, 1), "o=anna")];
    check(vec![
        Row {
            name: "the employee's phones ring first, offered the relay",
            setup: dialled,
            history: vec![],
            after_s: 0,
            event: start(),
            actions: &[
                "publish ringing anna",
                "timer Step(0)",
                "invite Phone(0, 0)",
                "invite Phone(0, 1)",
            ],
            then: "dialling",
        },
        Row {
            name: "a phone answers: the others stop, the customer is called with its SDP",
            setup: dialled,
            history: vec![start()],
            after_s: 3,
            event: answered(Leg::Phone(0, 1), "o=anna"),
            actions: &[
                "hangup Phone(0, 0)",
                "stop Step(0)",
                "timer Step(0)",
                "invite Ring(0, 0)",
            ],
            then: "ringing step Some(0)",
        },
        Row {
            name: "nobody answers: the customer is never called",
            setup: dialled,
            history: vec![start()],
            after_s: 20,
            event: Event::Timer(Timer::Step(0)),
            actions: &[
                "hangup Phone(0, 0)",
                "hangup Phone(0, 1)",
                "stop Step(0)",
                "write legs",
                "write ended cancelled",
                "write media",
                "publish ended cancelled",
                "count Calls(Cancelled)",
            ],
            then: "over",
        },
        Row {
            name: "the customer answers: they talk",
            setup: dialled,
            history: phone_answered(),
            after_s: 8,
            event: answered(R00, "o=carrier"),
            actions: &[
                "stop Step(0)",
                "answer o=carrier",
                "arm media",
                "write answered anna",
                "publish answered anna",
                "count Calls(Answered)",
            ],
            then: "talking Ring(0, 0) anna",
        },
        Row {
            name: "a busy customer: the employee's phone is hung up, a busy call",
            setup: dialled,
            history: phone_answered(),
            after_s: 8,
            event: Event::Failed {
                leg: R00,
                status: 486,
            },
            actions: &[
                "stop Step(0)",
                "reject 486",
                "hangup Phone(0, 1)",
                "write legs",
                "write ended busy",
                "write media",
                "publish ended busy",
                "count Calls(Busy)",
            ],
            then: "over",
        },
        Row {
            name: "a refused number is a failed call",
            setup: dialled,
            history: phone_answered(),
            after_s: 8,
            event: Event::Failed {
                leg: R00,
                status: 404,
            },
            actions: &[
                "stop Step(0)",
                "reject 480",
                "hangup Phone(0, 1)",
                "write legs",
                "write ended failed",
                "write media",
                "publish ended failed",
                "count Calls(Failed)",
            ],
            then: "over",
        },
        Row {
            name: "the employee hangs up while the customer rings: cancelled",
            setup: dialled,
            history: phone_answered(),
            after_s: 8,
            event: bye(Leg::Phone(0, 1)),
            actions: &[
                "hangup Ring(0, 0)",
                "stop Step(0)",
                "hangup Phone(0, 1)",
                "write legs",
                "write ended cancelled",
                "write media",
                "publish ended cancelled",
                "count Calls(Cancelled)",
            ],
            then: "over",
        },
        Row {
            name: "the employee hung up just as their phone's answer came: the customer is never called",
            setup: dialled,
            history: vec![start(), bye(Leg::Phone(0, 1))],
            after_s: 1,
            event: answered(Leg::Phone(0, 1), "o=anna"),
            actions: &[
                "hangup Phone(0, 0)",
                "stop Step(0)",
                "write legs",
                "write ended cancelled",
                "write media",
                "publish ended cancelled",
                "count Calls(Cancelled)",
            ],
            then: "over",
        },
        Row {
            name: "after the answer, the employee's BYE hangs up the customer",
            setup: dialled,
            history: {
                let mut h = phone_answered();
                h.push(answered(R00, "o=carrier"));
                h
            },
            after_s: 60,
            event: bye(Leg::Phone(0, 1)),
            actions: &[
                "hangup Ring(0, 0)",
                "write legs",
                "write ended anna answered",
                "write media",
                "publish ended anna answered",
            ],
            then: "over",
        },
    ]);
}

#[test]
fn the_click_to_call_customer_leg_is_offered_the_answering_phones_sdp() {
    let mut call = Call::new(dialled());
    call.on(start(), at(0));
    let actions = call.on(answered(Leg::Phone(0, 0), "o=anna-desk"), at(1));
    let offer = actions.iter().find_map(|a| match a {
        Action::Invite {
            leg: Leg::Ring(0, 0),
            offer,
            ..
        } => Some(offer.clone()),
        _ => None,
    });
    assert_eq!(offer, Some(sdp("o=anna-desk")));
    assert_eq!(call.caller(), Leg::Phone(0, 0));
}

#[test]
fn the_legs_show_who_rang_and_how_it_ended() {
    let mut call = Call::new(incoming());
    call.on(start(), at(0));
    call.on(
        Event::Failed {
            leg: R01,
            status: 486,
        },
        at(1),
    );
    call.on(answered(R00, "o=bob"), at(2));
    let legs = call.legs();
    let states: Vec<&str> = legs.iter().map(|l| l.state.as_str()).collect();
    assert_eq!(states, ["answered", "busy"]);
    assert_eq!(legs[1].status, Some(486));
    assert_eq!(legs[1].ended_at, Some(at(1).wall_ms));
    assert_eq!(legs[0].ended_at, None, "still talking");
}

#[test]
fn t10_a_transfer_moves_the_legs_to_the_answering_agent() {
    let mut call = Call::new(incoming());
    for event in blind_reinviting() {
        call.on(event, at(0));
    }
    call.on(response(0, 200, "o=carrier"), at(5));
    let rows = call.legs();
    let legs: Vec<(&str, &str)> = rows
        .iter()
        .filter(|l| l.state != "cancelled" || l.user.as_str() == "ben")
        .map(|l| (l.user.as_str(), l.state.as_str()))
        .collect();
    assert_eq!(
        legs,
        [
            ("bob", "transferred"),
            ("ben", "cancelled"),
            ("ben", "answered")
        ],
        "the desk that did not answer is cancelled"
    );
}

#[test]
fn requests_after_the_end_are_refused_and_late_answers_ended() {
    let mut call = Call::new(incoming());
    for event in talking() {
        call.on(event, at(0));
    }
    call.on(bye(Leg::Caller), at(1));
    assert!(call.is_over());
    let actions: Vec<String> = call
        .on(reinvite(R00, 9, "o=bob"), at(2))
        .iter()
        .filter_map(brief)
        .collect();
    assert_eq!(actions, ["respond 481 req9 Ring(0, 0)"]);
    let actions: Vec<String> = call
        .on(answered(R01, "o=mobile"), at(2))
        .iter()
        .filter_map(brief)
        .collect();
    assert_eq!(actions, ["hangup Ring(0, 1)"]);
}

/// An employee's own call out whose carrier leg could not even be sent (no connection
/// to the carrier) is `failed`, not `missed`: the caller hears 480 as for a call nobody
/// answered.
#[test]
fn t13_an_outgoing_call_whose_carrier_leg_cannot_be_sent_fails() {
    let outgoing = || {
        let mut carrier = HashMap::new();
        carrier.insert(user("anna"), vec![device("carrier")]);
        Setup {
            kind: Kind::Outgoing,
            plan: plan(&[user("anna")], &carrier, 180),
            offer: Body::sdp("o=anna"),
            ..incoming()
        }
    };
    check(vec![Row {
        name: "the carrier leg is not sent",
        setup: outgoing,
        history: vec![start()],
        after_s: 0,
        event: Event::NotSent {
            leg: R00,
            status: 503,
        },
        actions: &[
            "stop Step(0)",
            "reject 480",
            "write legs",
            "write ended failed",
            "write media",
            "publish ended failed",
            "count Calls(Failed)",
        ],
        then: "over",
    }]);
}

#[test]
fn the_customer_unreached_is_busy_missed_or_failed_by_the_carriers_answer() {
    let busy = unreached_outcome(Unanswered::Busy, Some(486));
    assert_eq!(busy, CallOutcome::Busy);
    for status in [None, Some(408), Some(480), Some(487)] {
        assert_eq!(
            unreached_outcome(Unanswered::Missed, status),
            CallOutcome::Missed,
            "{status:?}"
        );
    }
    for status in [403, 404, 484, 488, 500, 503] {
        assert_eq!(
            unreached_outcome(Unanswered::Missed, Some(status)),
            CallOutcome::Failed,
            "{status}"
        );
    }
    assert_eq!(
        unreached_outcome(Unanswered::Cancelled, Some(487)),
        CallOutcome::Cancelled,
        "the employee hung up while the customer's phone rang"
    );
}

mod waiting;
