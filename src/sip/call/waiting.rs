//! The queue's waiting room, part of the call's machine: nobody free answered, so the
//! queue answers the caller itself (the gateway plays the music), and the queue desk
//! offers them to the next agent who becomes free. An offer rings all the offered
//! agents' devices at once (the desk picks them by the queue's strategy); the first
//! answer connects the caller; an offer nobody takes leaves the caller waiting in their
//! place. The caller hanging up is an abandoned call; the queue's longest wait hands them
//! to its overflow rule (voicemail, forward, or a hang-up).

use super::*;
use crate::crm::model::OverflowAction;
use crate::sip::router::Step;

#[derive(Debug, Clone)]
pub(super) struct Wait {
    since_ms: Millis,
    offer: Option<Offering>,
    next_offer: u16,
}

/// An offer ringing now: one step of every offered agent's devices.
#[derive(Debug, Clone)]
struct Offering {
    n: u16,
    ringing: Ringing,
    /// Who each device belongs to, by device index.
    owners: Vec<UserId>,
}

impl Call {
    /// A caller nobody answered waits when the queue has someone available.
    pub(super) fn waits(&self) -> bool {
        self.setup.kind == Kind::Incoming
            && self
                .setup
                .queue
                .as_ref()
                .is_some_and(|q| q.wait_when_unanswered)
    }

    pub(super) fn start_waiting(&mut self, now: Now, out: &mut Vec<Action>) {
        self.queue_answered = true;
        self.phase = Phase::Waiting(Wait {
            since_ms: now.wall_ms,
            offer: None,
            next_offer: 0,
        });
        out.push(Action::Wait {
            session_timer: self.setup.session_interval_s,
        });
        let max_wait = self
            .setup
            .queue
            .as_ref()
            .map_or(Duration::from_secs(300), |q| q.max_wait);
        out.push(Action::Timer {
            timer: Timer::MaxWait,
            at: Some(now.at + max_wait),
        });
    }

    pub(super) fn waiting(&mut self, wait: Wait, event: Event, now: Now, out: &mut Vec<Action>) {
        match event {
            Event::CannotWait => {
                // Never answered: the caller is turned away as if nobody could wait.
                self.queue_answered = false;
                out.push(stop(Timer::MaxWait));
                if self.rule_takes_over() {
                    return self.closed(Closed::NobodyAnswered, now, out);
                }
                out.push(Action::Reject(480));
                return self.unanswered(Unanswered::Missed, now, out);
            }
            Event::Offered(agents) if wait.offer.is_none() => {
                return self.offer(wait, agents, now, out);
            }
            Event::Answered { leg, answer } => {
                let Some(device) = offer_device(&wait, leg) else {
                    out.push(Action::Hangup(leg));
                    self.phase = Phase::Waiting(wait);
                    return;
                };
                self.note_sdp(leg, Some(&answer));
                self.leg_ended(leg, "answered", Some(200), now);
                return self.offer_news(wait, RingEvent::Answered((0, device)), now, out);
            }
            Event::Failed { leg, status } | Event::NotSent { leg, status } => {
                if let Some(device) = offer_device(&wait, leg) {
                    self.leg_ended(leg, leg_state(status), Some(status), now);
                    let news = RingEvent::Failed {
                        leg: (0, device),
                        status,
                    };
                    return self.offer_news(wait, news, now, out);
                }
            }
            Event::Timer(Timer::Offer(n)) if wait.offer.as_ref().is_some_and(|o| o.n == n) => {
                for (leg, record) in &mut self.legs {
                    if matches!(leg, Leg::Offer(o, _) if *o == n) && record.state == "ringing" {
                        record.state = "no_answer".to_owned();
                        record.status = Some(408);
                        record.ended_at = Some(now.wall_ms);
                        self.legs_changed = true;
                    }
                }
                return self.offer_news(wait, RingEvent::StepTimedOut { step: 0 }, now, out);
            }
            Event::Hangup { leg, .. } if leg == self.caller => {
                return self.abandoned(wait, now, out);
            }
            Event::Timer(Timer::MaxWait) => return self.overflow(wait, now, out),
            Event::Request { req, leg, request } => {
                // A session refresh without SDP is fine; the queue does not renegotiate.
                let body = match &request {
                    InDialog::Reinvite(body) | InDialog::Update(body) => body.as_ref(),
                    InDialog::Refer(_) => None,
                };
                let refresh = !matches!(request, InDialog::Refer(_))
                    && body.is_none_or(|b| b.bytes.is_empty());
                out.push(respond(req, leg, if refresh { 200 } else { 488 }));
            }
            _ => {}
        }
        self.phase = Phase::Waiting(wait);
    }

    /// Rings every offered agent's devices at once.
    fn offer(
        &mut self,
        mut wait: Wait,
        agents: Vec<(UserId, Vec<Device>)>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let n = wait.next_offer;
        wait.next_offer = wait.next_offer.wrapping_add(1);
        let mut owners = Vec::new();
        let mut devices = Vec::new();
        for (user, found) in agents {
            for device in found.into_iter().take(MAX_DEVICES_PER_USER) {
                owners.push(user.clone());
                devices.push(device);
            }
        }
        let first = owners.first().cloned();
        let plan = RoutePlan {
            steps: first
                .map(|user| Step {
                    user,
                    devices: devices.clone(),
                })
                .into_iter()
                .collect(),
            unreachable: Vec::new(),
            ring_timeout_ms: self.setup.plan.ring_timeout_ms.max(1_000),
        };
        let (ringing, actions) = Ringing::start(&plan);
        if !actions.contains(&RingAction::StartStep(0)) {
            // Nobody could be rung after all (their phones went away): keep waiting.
            out.push(Action::OfferOver { answered_by: None });
            self.phase = Phase::Waiting(wait);
            return;
        }
        for user in dedup(&owners) {
            out.push(Action::Publish(Publish {
                event: "ringing",
                ringing: Some(user),
                answered_by: None,
                outcome: None,
            }));
        }
        out.push(Action::Timer {
            timer: Timer::Offer(n),
            at: Some(now.at + Duration::from_millis(plan.ring_timeout_ms)),
        });
        for (index, device) in devices.into_iter().enumerate() {
            let leg = Leg::Offer(n, index as u16);
            self.leg_started(leg, &owners[index], &device.contact, "ringing", now);
            out.push(Action::Invite {
                leg,
                device,
                offer: self.setup.offer.clone(),
            });
        }
        wait.offer = Some(Offering { n, ringing, owners });
        self.phase = Phase::Waiting(wait);
    }

    /// A ringing offer's news, through its ringing state.
    fn offer_news(&mut self, mut wait: Wait, news: RingEvent, now: Now, out: &mut Vec<Action>) {
        let Some(mut offering) = wait.offer.take() else {
            self.phase = Phase::Waiting(wait);
            return;
        };
        let n = offering.n;
        let actions = offering.ringing.on(news);
        for action in actions {
            match action {
                RingAction::Cancel(legs) => {
                    for (_, device) in legs {
                        let leg = Leg::Offer(n, device as u16);
                        self.leg_ended(leg, "cancelled", None, now);
                        out.push(Action::Hangup(leg));
                    }
                }
                RingAction::Connect((_, device)) => {
                    out.push(stop(Timer::Offer(n)));
                    let user = offering.owners[device].clone();
                    return self.take_offer(wait, Leg::Offer(n, device as u16), user, now, out);
                }
                RingAction::Reject { .. } => {
                    // Nobody took it: the caller keeps their place.
                    out.push(stop(Timer::Offer(n)));
                    out.push(Action::OfferOver { answered_by: None });
                    self.phase = Phase::Waiting(wait);
                    return;
                }
                RingAction::StartStep(_) | RingAction::RelayProgress { .. } => {}
            }
        }
        wait.offer = Some(offering);
        self.phase = Phase::Waiting(wait);
    }

    /// An offered agent answered: the caller talks to them.
    fn take_offer(&mut self, wait: Wait, leg: Leg, user: UserId, now: Now, out: &mut Vec<Action>) {
        out.push(stop(Timer::MaxWait));
        self.wait_ms = Some(now.wall_ms - wait.since_ms);
        out.push(Action::OfferOver {
            answered_by: Some(user.clone()),
        });
        if let Some(answer) = self.last_sdp(leg) {
            out.push(Action::Learn {
                from: leg,
                body: answer,
            });
        }
        self.setup.plan.steps = Vec::new();
        self.talks_to(leg, Some(user), now, out);
    }

    /// Ends a ringing offer's legs.
    fn cancel_offer(&mut self, wait: &Wait, now: Now, out: &mut Vec<Action>) {
        let Some(offering) = &wait.offer else {
            return;
        };
        out.push(stop(Timer::Offer(offering.n)));
        let ringing: Vec<Leg> = self
            .legs
            .iter()
            .filter(|(leg, record)| {
                matches!(leg, Leg::Offer(o, _) if *o == offering.n) && record.state == "ringing"
            })
            .map(|(leg, _)| *leg)
            .collect();
        for leg in ringing {
            self.leg_ended(leg, "cancelled", None, now);
            out.push(Action::Hangup(leg));
        }
    }

    /// The caller hung up while waiting.
    fn abandoned(&mut self, wait: Wait, now: Now, out: &mut Vec<Action>) {
        self.cancel_offer(&wait, now, out);
        out.push(stop(Timer::MaxWait));
        out.push(Action::LeaveQueue);
        self.wait_ms = Some(now.wall_ms - wait.since_ms);
        let abandoned = CallOutcome::Abandoned;
        self.end(abandoned, None, Some(abandoned), now, out);
    }

    /// The caller waited the longest wait: the queue's overflow rule.
    fn overflow(&mut self, wait: Wait, now: Now, out: &mut Vec<Action>) {
        self.cancel_offer(&wait, now, out);
        out.push(Action::LeaveQueue);
        self.wait_ms = Some(now.wall_ms - wait.since_ms);
        let Some(queue) = self.setup.queue.clone() else {
            out.push(Action::Hangup(self.caller));
            return self.end(
                CallOutcome::Missed,
                None,
                Some(CallOutcome::Missed),
                now,
                out,
            );
        };
        match (queue.overflow.action, queue.overflow.forward_to) {
            (OverflowAction::Voicemail, _) => {
                self.phase = Phase::Voicemail;
                out.push(Action::Voicemail {
                    max: queue.max_message,
                });
            }
            (OverflowAction::Forward, Some(target)) => {
                self.phase = Phase::Forwarding;
                out.push(Action::Forward { target });
                out.push(Action::Timer {
                    timer: Timer::Forward,
                    at: Some(now.at + FORWARD_RING),
                });
            }
            (OverflowAction::Forward, None) | (OverflowAction::Reject, _) => {
                out.push(Action::Hangup(self.caller));
                self.end(
                    CallOutcome::Missed,
                    None,
                    Some(CallOutcome::Missed),
                    now,
                    out,
                );
            }
        }
    }
}

fn offer_device(wait: &Wait, leg: Leg) -> Option<usize> {
    match (leg, &wait.offer) {
        (Leg::Offer(n, device), Some(offering)) if offering.n == n => Some(usize::from(device)),
        _ => None,
    }
}

fn stop(timer: Timer) -> Action {
    Action::Timer { timer, at: None }
}

fn dedup(users: &[UserId]) -> Vec<UserId> {
    let mut seen: Vec<UserId> = Vec::new();
    for user in users {
        if !seen.contains(user) {
            seen.push(user.clone());
        }
    }
    seen
}
