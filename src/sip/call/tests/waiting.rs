//! The queue's waiting room: tables like the other call tests.

use super::*;
use crate::crm::model::OverflowAction;
use crate::crm::queueing::Overflow;

fn queue_call(action: OverflowAction, forward_to: Option<&str>) -> Option<QueueCall> {
    Some(QueueCall {
        id: crate::crm::model::QueueId("sales".into()),
        wait_when_unanswered: true,
        max_wait: Duration::from_secs(300),
        overflow: Overflow {
            action,
            forward_to: forward_to.map(str::to_owned),
        },
        max_message: Duration::from_secs(60),
    })
}

/// Nobody in the queue is free: no one rings, the caller waits (voicemail on overflow).
fn queued() -> Setup {
    Setup {
        plan: RoutePlan {
            ring_timeout_ms: 20_000,
            ..RoutePlan::default()
        },
        queue: queue_call(OverflowAction::Voicemail, None),
        ..incoming()
    }
}

fn queued_rejecting() -> Setup {
    Setup {
        queue: queue_call(OverflowAction::Reject, None),
        ..queued()
    }
}

fn queued_forwarding() -> Setup {
    Setup {
        queue: queue_call(OverflowAction::Forward, Some("+4930111")),
        ..queued()
    }
}

/// The responsible (Bob) rings first; nobody of the queue is free.
fn responsible_then_queue() -> Setup {
    let mut devices = HashMap::new();
    devices.insert(user("bob"), vec![device("desk")]);
    Setup {
        plan: plan(&[user("bob")], &devices, 20),
        queue: queue_call(OverflowAction::Voicemail, None),
        ..incoming()
    }
}

/// Free agents were rung: a caller nobody answered does not wait.
fn queue_with_free_agents() -> Setup {
    Setup {
        queue: Some(QueueCall {
            wait_when_unanswered: false,
            ..queue_call(OverflowAction::Voicemail, None).unwrap()
        }),
        ..incoming()
    }
}

const O00: Leg = Leg::Offer(0, 0);
const O01: Leg = Leg::Offer(0, 1);
const O10: Leg = Leg::Offer(1, 0);

fn offered(agents: &[(&str, &[&str])]) -> Event {
    Event::Offered(
        agents
            .iter()
            .map(|(name, devices)| (user(name), devices.iter().map(|d| device(d)).collect()))
            .collect(),
    )
}

fn anna_offered() -> Event {
    offered(&[("anna", &["anna-desk"])])
}

#[test]
fn t5_queue_callers_wait_when_nobody_is_free_and_are_offered_to_the_next_free_agent() {
    check(vec![
        Row {
            name: "nobody free: the queue answers and the caller waits",
            setup: queued,
            history: vec![],
            after_s: 0,
            event: start(),
            actions: &["wait", "timer MaxWait"],
            then: "waiting",
        },
        Row {
            name: "the responsible rings first, then the caller waits",
            setup: responsible_then_queue,
            history: vec![start()],
            after_s: 20,
            event: Event::Timer(Timer::Step(0)),
            actions: &["hangup Ring(0, 0)", "stop Step(0)", "wait", "timer MaxWait"],
            then: "waiting",
        },
        Row {
            name: "free agents rang and nobody answered: no waiting, the after-hours way",
            setup: queue_with_free_agents,
            history: vec![start(), Event::Timer(Timer::Step(0))],
            after_s: 20,
            event: Event::Timer(Timer::Step(1)),
            actions: &[
                "hangup Ring(1, 0)",
                "stop Step(1)",
                "reject 480",
                "write legs",
                "write ended missed",
                "write queue",
                "write media",
                "publish ended missed",
                "count Calls(Missed)",
            ],
            then: "over",
        },
        Row {
            name: "an offer rings every offered device at once",
            setup: queued,
            history: vec![start()],
            after_s: 30,
            event: offered(&[("anna", &["anna-desk"]), ("ben", &["ben-desk"])]),
            actions: &[
                "publish ringing anna",
                "publish ringing ben",
                "timer Offer(0)",
                "invite Offer(0, 0)",
                "invite Offer(0, 1)",
            ],
            then: "waiting",
        },
        Row {
            name: "the first to answer talks to the caller; the music stops",
            setup: queued,
            history: vec![
                start(),
                offered(&[("anna", &["anna-desk"]), ("ben", &["ben-desk"])]),
            ],
            after_s: 42,
            event: answered(O01, "o=ben"),
            actions: &[
                "hangup Offer(0, 0)",
                "stop Offer(0)",
                "stop MaxWait",
                "offer over ben",
                "learn Offer(0, 1)",
                "arm media",
                "write answered ben",
                "publish answered ben",
                "count Calls(Answered)",
            ],
            then: "talking Offer(0, 1) ben",
        },
        Row {
            name: "an offer that rings out leaves the caller waiting in their place",
            setup: queued,
            history: vec![start(), anna_offered()],
            after_s: 20,
            event: Event::Timer(Timer::Offer(0)),
            actions: &["hangup Offer(0, 0)", "stop Offer(0)", "offer over nobody"],
            then: "waiting",
        },
        Row {
            name: "a busy offered phone: the same",
            setup: queued,
            history: vec![start(), anna_offered()],
            after_s: 1,
            event: Event::Failed {
                leg: O00,
                status: 486,
            },
            actions: &["stop Offer(0)", "offer over nobody"],
            then: "waiting",
        },
        Row {
            name: "a late answer to an old offer is hung up",
            setup: queued,
            history: vec![start(), anna_offered(), Event::Timer(Timer::Offer(0))],
            after_s: 1,
            event: answered(O00, "o=anna"),
            actions: &["hangup Offer(0, 0)"],
            then: "waiting",
        },
        Row {
            name: "the second offer's legs are its own",
            setup: queued,
            history: vec![
                start(),
                anna_offered(),
                Event::Timer(Timer::Offer(0)),
                anna_offered(),
            ],
            after_s: 3,
            event: answered(O10, "o=anna"),
            actions: &[
                "stop Offer(1)",
                "stop MaxWait",
                "offer over anna",
                "learn Offer(1, 0)",
                "arm media",
                "write answered anna",
                "publish answered anna",
                "count Calls(Answered)",
            ],
            then: "talking Offer(1, 0) anna",
        },
    ]);
}

#[test]
fn a_caller_who_hangs_up_while_waiting_is_abandoned_with_their_wait() {
    check(vec![
        Row {
            name: "hung up while waiting",
            setup: queued,
            history: vec![start()],
            after_s: 45,
            event: bye(Leg::Caller),
            actions: &[
                "stop MaxWait",
                "leave queue",
                "write legs",
                "write ended abandoned",
                "write queue waited 45s",
                "write media",
                "publish ended abandoned",
                "count Calls(Abandoned)",
            ],
            then: "over",
        },
        Row {
            name: "hung up while an offer rings",
            setup: queued,
            history: vec![start(), anna_offered()],
            after_s: 5,
            event: bye(Leg::Caller),
            actions: &[
                "stop Offer(0)",
                "hangup Offer(0, 0)",
                "stop MaxWait",
                "leave queue",
                "write legs",
                "write ended abandoned",
                "write queue waited 5s",
                "write media",
                "publish ended abandoned",
                "count Calls(Abandoned)",
            ],
            then: "over",
        },
    ]);
}

#[test]
fn after_the_longest_wait_the_overflow_rule_takes_the_caller() {
    check(vec![
        Row {
            name: "voicemail",
            setup: queued,
            history: vec![start()],
            after_s: 300,
            event: Event::Timer(Timer::MaxWait),
            actions: &["leave queue", "voicemail 60s"],
            then: "voicemail",
        },
        Row {
            name: "a voicemail that cannot be taken hangs up: the caller was answered",
            setup: queued,
            history: vec![start(), Event::Timer(Timer::MaxWait)],
            after_s: 1,
            event: Event::VoicemailOver(Err(503)),
            actions: &[
                "hangup Caller",
                "write legs",
                "write ended missed",
                "write queue waited 100s",
                "write media",
                "publish ended missed",
                "count Calls(Missed)",
            ],
            then: "over",
        },
        Row {
            name: "reject hangs up",
            setup: queued_rejecting,
            history: vec![start(), anna_offered()],
            after_s: 300,
            event: Event::Timer(Timer::MaxWait),
            actions: &[
                "stop Offer(0)",
                "hangup Offer(0, 0)",
                "leave queue",
                "hangup Caller",
                "write legs",
                "write ended missed",
                "write queue waited 300s",
                "write media",
                "publish ended missed",
                "count Calls(Missed)",
            ],
            then: "over",
        },
        Row {
            name: "forward",
            setup: queued_forwarding,
            history: vec![start()],
            after_s: 300,
            event: Event::Timer(Timer::MaxWait),
            actions: &["leave queue", "forward +4930111", "timer Forward"],
            then: "forwarding",
        },
        Row {
            name: "the forward's answer goes to the relay, not to the answered caller",
            setup: queued_forwarding,
            history: vec![start(), Event::Timer(Timer::MaxWait)],
            after_s: 10,
            event: answered(Leg::Forward, "o=colleague"),
            actions: &[
                "stop Forward",
                "learn Forward",
                "arm media",
                "write answered",
            ],
            then: "talking Forward",
        },
    ]);
}

#[test]
fn a_caller_who_cannot_wait_is_turned_away_as_before() {
    check(vec![Row {
        name: "no G.711 or no port: 480",
        setup: queued,
        history: vec![start()],
        after_s: 0,
        event: Event::CannotWait,
        actions: &[
            "stop MaxWait",
            "reject 480",
            "write legs",
            "write ended missed",
            "write queue",
            "write media",
            "publish ended missed",
            "count Calls(Missed)",
        ],
        then: "over",
    }]);
}
