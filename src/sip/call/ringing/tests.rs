use super::*;
use crate::crm::model::UserId;
use crate::sip::router::{Device, plan};

fn user(id: &str) -> UserId {
    UserId(id.to_owned())
}

fn devices(entries: &[(&str, &[&str])]) -> HashMap<UserId, Vec<Device>> {
    entries
        .iter()
        .map(|(u, ds)| {
            (
                user(u),
                ds.iter()
                    .map(|d| Device {
                        contact: format!("sip:{d}@192.0.2.1"),
                        transport: "udp".into(),
                        source: "192.0.2.1:5060".into(),
                        path: None,
                        q: None,
                        owner: None,
                        carrier_host: None,
                    })
                    .collect(),
            )
        })
        .collect()
}

fn two_steps() -> RoutePlan {
    plan(
        &[user("bob"), user("cid")],
        &devices(&[("bob", &["desk", "mobile"]), ("cid", &["softphone"])]),
        20,
    )
}

#[test]
fn nobody_registered_is_an_immediate_480_and_a_missed_call() {
    let (ringing, actions) = Ringing::start(&plan(&[user("ann")], &HashMap::new(), 20));
    assert_eq!(
        actions,
        [RingAction::Reject {
            status: 480,
            outcome: Unanswered::Missed
        }]
    );
    assert!(ringing.is_done());
}

#[test]
fn first_answer_wins_and_the_other_legs_are_cancelled() {
    let (mut ringing, actions) = Ringing::start(&two_steps());
    assert_eq!(actions, [RingAction::StartStep(0)]);
    assert_eq!(
        ringing.on(RingEvent::Progress {
            leg: (0, 0),
            early_media: false
        }),
        [RingAction::RelayProgress {
            leg: (0, 0),
            early_media: false
        }]
    );
    // A second 180 from the other device is not relayed again.
    assert!(
        ringing
            .on(RingEvent::Progress {
                leg: (0, 1),
                early_media: false
            })
            .is_empty()
    );
    assert_eq!(
        ringing.on(RingEvent::Answered((0, 1))),
        [
            RingAction::Cancel(vec![(0, 0)]),
            RingAction::Connect((0, 1))
        ]
    );
    assert!(ringing.is_done());
    // A 2xx racing in from the cancelled leg must be ended too.
    assert_eq!(
        ringing.on(RingEvent::Answered((0, 0))),
        [RingAction::Cancel(vec![(0, 0)])]
    );
}

#[test]
fn t5_no_answer_falls_back_to_the_next_step_after_the_timeout() {
    let (mut ringing, _) = Ringing::start(&two_steps());
    assert_eq!(
        ringing.on(RingEvent::StepTimedOut { step: 0 }),
        [
            RingAction::Cancel(vec![(0, 0), (0, 1)]),
            RingAction::StartStep(1)
        ]
    );
    // The old step's timer firing late changes nothing.
    assert!(ringing.on(RingEvent::StepTimedOut { step: 0 }).is_empty());
    assert_eq!(
        ringing.on(RingEvent::StepTimedOut { step: 1 }),
        [
            RingAction::Cancel(vec![(1, 0)]),
            RingAction::Reject {
                status: 480,
                outcome: Unanswered::Missed
            }
        ]
    );
}

#[test]
fn busy_or_decline_moves_on_once_every_device_of_the_step_has_ended() {
    let (mut ringing, _) = Ringing::start(&two_steps());
    assert!(
        ringing
            .on(RingEvent::Failed {
                leg: (0, 0),
                status: 486
            })
            .is_empty(),
        "the mobile still rings"
    );
    assert_eq!(
        ringing.on(RingEvent::Failed {
            leg: (0, 1),
            status: 603
        }),
        [RingAction::StartStep(1)]
    );
    assert_eq!(ringing.current_step(), Some(1));
}

#[test]
fn everyone_busy_is_486_busy() {
    let (mut ringing, _) = Ringing::start(&plan(
        &[user("cid")],
        &devices(&[("cid", &["softphone"])]),
        20,
    ));
    assert_eq!(
        ringing.on(RingEvent::Failed {
            leg: (0, 0),
            status: 486
        }),
        [RingAction::Reject {
            status: 486,
            outcome: Unanswered::Busy
        }]
    );
}

#[test]
fn the_callers_cancel_cancels_every_ringing_leg() {
    let (mut ringing, _) = Ringing::start(&two_steps());
    ringing.on(RingEvent::Failed {
        leg: (0, 0),
        status: 486,
    });
    assert_eq!(
        ringing.on(RingEvent::CallerCancelled),
        [
            RingAction::Cancel(vec![(0, 1)]),
            RingAction::Reject {
                status: 487,
                outcome: Unanswered::Cancelled
            }
        ]
    );
    assert!(ringing.on(RingEvent::StepTimedOut { step: 0 }).is_empty());
}

#[test]
fn early_media_is_relayed_each_time() {
    let (mut ringing, _) = Ringing::start(&two_steps());
    for leg in [(0, 0), (0, 1)] {
        assert_eq!(
            ringing.on(RingEvent::Progress {
                leg,
                early_media: true
            }),
            [RingAction::RelayProgress {
                leg,
                early_media: true
            }]
        );
    }
}
