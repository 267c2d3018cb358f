//! The registration state machine, event by event (T2: carrier trunks we register to).

use proptest::prelude::*;

use super::*;

const NOW: Millis = 1_700_000_000_000;
const INTERVAL: u32 = 600;

fn register(expires_s: u32) -> Action {
    Action::Send(Request::Register { expires_s })
}

fn rejected(status: u16) -> Outcome {
    Outcome::Failed(Failure::Rejected {
        status,
        reason: "Forbidden".into(),
        retry_after_s: None,
    })
}

/// A registration that answered one challenge and is registered for `expires_s`.
fn registered(expires_s: u32) -> Registration {
    let mut r = Registration::new(INTERVAL);
    assert_eq!(r.start(), register(INTERVAL));
    r.on_outcome(Outcome::Challenged { stale: false }, NOW, 0.0);
    r.on_outcome(Outcome::Registered { expires_s }, NOW, 0.0);
    assert!(r.is_registered());
    r
}

#[test]
fn t2_first_register_answers_the_challenge_then_is_registered() {
    let mut r = Registration::new(INTERVAL);
    assert_eq!(r.status().state, TrunkRegistrationState::Registering);
    assert_eq!(r.start(), register(600));
    // RFC 3261 §22.2: the same REGISTER again, now with credentials.
    assert_eq!(
        r.on_outcome(Outcome::Challenged { stale: false }, NOW, 0.0),
        register(600)
    );
    let action = r.on_outcome(Outcome::Registered { expires_s: 3600 }, NOW, 0.0);
    assert_eq!(
        action,
        Action::Wait {
            until: NOW + 3_540_000
        }
    );
    let status = r.status();
    assert_eq!(status.state, TrunkRegistrationState::Registered);
    assert_eq!(status.registered_until, Some(NOW + 3_600_000));
    assert_eq!(status.next_attempt_at, Some(NOW + 3_540_000));
    assert_eq!((status.failures, status.last_error), (0, None));
}

#[test]
fn t2_a_second_challenge_is_a_failure_not_a_loop() {
    let mut r = Registration::new(INTERVAL);
    r.start();
    r.on_outcome(Outcome::Challenged { stale: false }, NOW, 0.0);
    let action = r.on_outcome(Outcome::Challenged { stale: false }, NOW, 0.0);
    assert_eq!(
        action,
        Action::Wait {
            until: NOW + BACKOFF_FIRST_MS
        }
    );
    let status = r.status();
    assert_eq!(status.state, TrunkRegistrationState::Failed);
    assert_eq!(status.failures, 1);
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("refused the username"),
        "{status:?}"
    );
    // The next attempt may answer a challenge again.
    assert_eq!(r.on_timer(NOW + BACKOFF_FIRST_MS), register(600));
    assert_eq!(
        r.on_outcome(
            Outcome::Challenged { stale: false },
            NOW + BACKOFF_FIRST_MS,
            0.0
        ),
        register(600)
    );
}

#[test]
fn a_stale_challenge_is_answered_again_a_bounded_number_of_times() {
    let mut r = Registration::new(INTERVAL);
    r.start();
    r.on_outcome(Outcome::Challenged { stale: false }, NOW, 0.0);
    for _ in 0..MAX_STALE_ANSWERS {
        assert_eq!(
            r.on_outcome(Outcome::Challenged { stale: true }, NOW, 0.0),
            register(600)
        );
    }
    assert!(matches!(
        r.on_outcome(Outcome::Challenged { stale: true }, NOW, 0.0),
        Action::Wait { .. }
    ));
    assert_eq!(r.status().state, TrunkRegistrationState::Failed);
}

#[test]
fn refresh_is_at_half_or_a_minute_before_expiry_never_sooner_than_five_seconds() {
    for (expires_s, refresh_ms) in [
        (3600, 3_540_000),
        (600, 540_000),
        (120, 60_000),
        (60, 30_000),
        (10, 5_000),
        (4, 5_000),
        (1, 5_000),
    ] {
        assert_eq!(
            refresh_delay_ms(expires_s),
            refresh_ms,
            "expires {expires_s}"
        );
    }
    let mut r = registered(10);
    // A timer that fires early waits on; at the time, the refresh goes out.
    assert_eq!(r.on_timer(NOW + 4_999), Action::Wait { until: NOW + 5_000 });
    assert_eq!(r.on_timer(NOW + 5_000), register(600));
    // The refresh may be challenged again (a new nonce): answered once more.
    assert_eq!(
        r.on_outcome(Outcome::Challenged { stale: false }, NOW + 5_000, 0.0),
        register(600)
    );
    r.on_outcome(Outcome::Registered { expires_s: 10 }, NOW + 5_010, 0.0);
    assert_eq!(r.status().registered_until, Some(NOW + 15_010));
}

#[test]
fn failures_back_off_exponentially_up_to_ten_minutes_with_jitter() {
    let bases = [
        5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 600_000,
    ];
    for (i, base) in bases.into_iter().enumerate() {
        let failures = u32::try_from(i).unwrap() + 1;
        assert_eq!(backoff_ms(failures, 0.0), base, "failure {failures}");
        let jittered = backoff_ms(failures, 0.999);
        assert!(jittered >= base * 3 / 4 && jittered < base, "{jittered}");
    }
    assert_eq!(backoff_ms(1_000, 0.0), BACKOFF_MAX_MS);
    assert_eq!(backoff_ms(u32::MAX, f64::NAN), BACKOFF_MAX_MS);
    assert_eq!(backoff_ms(0, -3.0), BACKOFF_FIRST_MS);

    let mut r = Registration::new(INTERVAL);
    r.start();
    let mut now = NOW;
    for (i, expected) in [5_000, 10_000, 20_000].into_iter().enumerate() {
        let Action::Wait { until } = r.on_outcome(rejected(403), now, 0.0) else {
            panic!("a failure waits");
        };
        assert_eq!(until - now, expected);
        let status = r.status();
        assert_eq!(status.failures, u32::try_from(i).unwrap() + 1);
        assert_eq!(status.next_attempt_at, Some(until));
        assert_eq!(
            status.last_error.as_deref(),
            Some("the carrier answered 403 Forbidden")
        );
        now = until;
        assert_eq!(r.on_timer(now), register(600));
    }
    // A success clears the count and the error.
    r.on_outcome(Outcome::Registered { expires_s: 600 }, now, 0.0);
    assert_eq!((r.status().failures, r.status().last_error), (0, None));
}

#[test]
fn retry_after_is_honoured_up_to_the_cap() {
    let mut r = Registration::new(INTERVAL);
    r.start();
    let busy = |secs| {
        Outcome::Failed(Failure::Rejected {
            status: 503,
            reason: "Service Unavailable".into(),
            retry_after_s: Some(secs),
        })
    };
    assert_eq!(
        r.on_outcome(busy(120), NOW, 0.0),
        Action::Wait {
            until: NOW + 120_000
        }
    );
    r.on_timer(NOW + 120_000);
    assert_eq!(
        r.on_outcome(busy(86_400), NOW, 0.0),
        Action::Wait {
            until: NOW + BACKOFF_MAX_MS
        }
    );
}

#[test]
fn interval_too_brief_raises_the_interval_and_keeps_it() {
    let mut r = Registration::new(60);
    r.start();
    assert_eq!(
        r.on_outcome(
            Outcome::IntervalTooBrief {
                min_expires_s: Some(300)
            },
            NOW,
            0.0
        ),
        register(300)
    );
    r.on_outcome(Outcome::Registered { expires_s: 300 }, NOW, 0.0);
    assert_eq!(r.on_timer(NOW + 240_000), register(300));
    // No Min-Expires, or one that is no longer: a failure, not a loop.
    for min in [None, Some(300), Some(10)] {
        let mut r = Registration::new(300);
        r.start();
        let action = r.on_outcome(Outcome::IntervalTooBrief { min_expires_s: min }, NOW, 0.0);
        assert!(matches!(action, Action::Wait { .. }), "{min:?}");
        assert_eq!(r.status().state, TrunkRegistrationState::Failed);
    }
}

#[test]
fn a_timeout_and_an_unreachable_carrier_are_failures_with_their_reason() {
    let mut r = Registration::new(INTERVAL);
    r.start();
    r.on_outcome(Outcome::Failed(Failure::NoResponse), NOW, 0.0);
    assert_eq!(
        r.status().last_error.as_deref(),
        Some("no response from the carrier")
    );
    r.on_timer(NOW + 5_000);
    r.on_outcome(
        Outcome::Failed(Failure::Unreachable("connection refused".into())),
        NOW,
        0.0,
    );
    assert_eq!(
        r.status().last_error.as_deref(),
        Some("cannot reach the carrier: connection refused")
    );
    assert_eq!(r.status().failures, 2);
}

#[test]
fn a_failed_refresh_keeps_the_binding_time_but_is_not_registered() {
    let mut r = registered(600);
    r.on_timer(NOW + 540_000);
    r.on_outcome(Outcome::Failed(Failure::NoResponse), NOW + 572_000, 0.0);
    assert!(!r.is_registered());
    let status = r.status();
    assert_eq!(status.state, TrunkRegistrationState::Failed);
    assert_eq!(status.registered_until, Some(NOW + 600_000));
    assert_eq!(status.next_attempt_at, Some(NOW + 577_000));
}

#[test]
fn a_lost_tcp_flow_registers_again_but_not_in_a_loop() {
    let mut r = registered(600);
    assert_eq!(
        r.on_flow_lost(NOW + 1_000),
        Action::Wait { until: NOW + 5_000 }
    );
    assert_eq!(r.on_timer(NOW + 5_000), register(600));
    r.on_outcome(Outcome::Registered { expires_s: 600 }, NOW + 5_000, 0.0);
    assert_eq!(r.on_flow_lost(NOW + 60_000), register(600));
    // Not registered: nothing to redo, the back-off stands.
    let mut r = Registration::new(INTERVAL);
    r.start();
    r.on_outcome(rejected(403), NOW, 0.0);
    assert_eq!(r.on_flow_lost(NOW), Action::Wait { until: NOW + 5_000 });
}

#[test]
fn a_granted_expiry_of_zero_is_a_failure() {
    let mut r = Registration::new(INTERVAL);
    r.start();
    r.on_outcome(Outcome::Registered { expires_s: 0 }, NOW, 0.0);
    assert_eq!(r.status().state, TrunkRegistrationState::Failed);
}

#[test]
fn a_removed_trunk_is_unregistered_then_stops() {
    let mut r = registered(600);
    assert_eq!(r.on_removed(NOW + 1_000), Action::Send(Request::Unregister));
    // Until the carrier confirms, it still holds our binding.
    assert_eq!(r.status().state, TrunkRegistrationState::Registered);
    // The un-register may be challenged like any REGISTER.
    assert_eq!(
        r.on_outcome(Outcome::Challenged { stale: false }, NOW, 0.0),
        Action::Send(Request::Unregister)
    );
    assert_eq!(
        r.on_outcome(Outcome::Registered { expires_s: 0 }, NOW, 0.0),
        Action::Stop
    );
    let status = r.status();
    assert_eq!(status.state, TrunkRegistrationState::Unregistered);
    assert_eq!(
        (status.registered_until, status.next_attempt_at),
        (None, None)
    );
    assert_eq!(r.on_timer(NOW + 10_000_000), Action::Stop);
}

#[test]
fn a_failed_unregister_still_stops_and_says_why() {
    let mut r = registered(600);
    r.on_removed(NOW);
    assert_eq!(
        r.on_outcome(Outcome::Failed(Failure::NoResponse), NOW, 0.0),
        Action::Stop
    );
    assert_eq!(
        r.status().last_error.as_deref(),
        Some("un-register: no response from the carrier")
    );
}

#[test]
fn a_removed_trunk_without_a_binding_stops_at_once() {
    let mut r = Registration::new(INTERVAL);
    r.start();
    r.on_outcome(rejected(403), NOW, 0.0);
    assert_eq!(r.on_removed(NOW), Action::Stop);
    assert_eq!(r.status().state, TrunkRegistrationState::Unregistered);
    // An expired binding needs no un-register either.
    let mut r = registered(60);
    assert_eq!(r.on_removed(NOW + 60_000), Action::Stop);
}

#[test]
fn a_changed_trunk_unregisters_the_old_binding_then_registers_anew() {
    let mut r = registered(600);
    assert_eq!(
        r.on_trunk_changed(300, NOW + 1_000),
        Action::Send(Request::Unregister)
    );
    assert_eq!(
        r.on_outcome(Outcome::Registered { expires_s: 0 }, NOW + 1_000, 0.0),
        register(300)
    );
    assert_eq!(r.status().state, TrunkRegistrationState::Registering);
    // A failing trunk that changes (a fixed password) retries at once, count cleared.
    let mut r = Registration::new(INTERVAL);
    r.start();
    r.on_outcome(rejected(403), NOW, 0.0);
    assert_eq!(r.on_trunk_changed(600, NOW), register(600));
    assert_eq!(r.status().failures, 0);
    assert_eq!(r.status().last_error, None);
}

#[test]
fn a_stray_outcome_changes_nothing() {
    let mut r = registered(600);
    let before = r.clone();
    assert_eq!(
        r.on_outcome(rejected(500), NOW, 0.0),
        Action::Wait {
            until: NOW + 540_000
        }
    );
    assert_eq!(r, before);
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        (0u32..4000).prop_map(|expires_s| Outcome::Registered { expires_s }),
        any::<bool>().prop_map(|stale| Outcome::Challenged { stale }),
        proptest::option::of(0u32..4000)
            .prop_map(|min_expires_s| Outcome::IntervalTooBrief { min_expires_s }),
        (300u16..700).prop_map(|status| Outcome::Failed(Failure::Rejected {
            status,
            reason: "x".into(),
            retry_after_s: None,
        })),
        Just(Outcome::Failed(Failure::NoResponse)),
    ]
}

proptest! {
    /// Whatever a carrier answers, one attempt sends a bounded number of requests before
    /// the machine waits: no challenge or 423 loop can flood a carrier.
    #[test]
    fn no_answer_sequence_makes_an_attempt_loop(
        outcomes in proptest::collection::vec(outcome(), 1..60),
        jitter in 0.0f64..1.0,
    ) {
        let mut r = Registration::new(60);
        let mut action = r.start();
        let mut sends_in_a_row = 1;
        let mut now = NOW;
        for outcome in outcomes {
            match action {
                Action::Send(_) => {
                    action = r.on_outcome(outcome, now, jitter);
                    if matches!(action, Action::Send(_)) {
                        sends_in_a_row += 1;
                    }
                }
                Action::Wait { until } => {
                    prop_assert!(until >= now + MIN_REFRESH_MS * 3 / 4, "{until} {now}");
                    now = until;
                    sends_in_a_row = 1;
                    action = r.on_timer(now);
                }
                Action::Stop => unreachable!("never removed"),
            }
            prop_assert!(
                sends_in_a_row <= 2 + usize::from(MAX_STALE_ANSWERS) + usize::from(MAX_TOO_BRIEF),
                "{sends_in_a_row}"
            );
        }
    }
}
