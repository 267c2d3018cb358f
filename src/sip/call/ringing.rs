//! How one call moves through its route plan while it rings (T5): step by step, every
//! device of a step at once, the first answer wins. Pure; part of the call's machine
//! ([`super::Call`]), which feeds it the ringing legs' news.
//!
//! The first device to answer wins and every other leg is cancelled; a busy or
//! declining device ends only its own leg; when every leg of a step has ended the next
//! step starts at once.

use std::collections::HashMap;

use crate::sip::router::RoutePlan;

/// Identifies one outgoing leg: (step index, device index).
pub type LegId = (usize, usize);

/// What happened to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingEvent {
    /// A leg sent 180 or 183.
    Progress { leg: LegId, early_media: bool },
    /// A leg answered with 2xx.
    Answered(LegId),
    /// A leg ended without answering: the final status (486, 603, 404 …; 408 on timeout).
    Failed { leg: LegId, status: u16 },
    /// The current step's ring timeout passed.
    StepTimedOut { step: usize },
    /// The caller cancelled (CANCEL) before anyone answered.
    CallerCancelled,
}

/// What the B2BUA must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingAction {
    /// Send INVITEs to every device of this step and arm its timer.
    StartStep(usize),
    /// Cancel these legs (still ringing).
    Cancel(Vec<LegId>),
    /// Tell the caller it rings (180, or 183 with the leg's early media).
    RelayProgress { leg: LegId, early_media: bool },
    /// Connect the caller to this leg.
    Connect(LegId),
    /// End the caller's INVITE with this status; the call was not answered.
    Reject { status: u16, outcome: Unanswered },
}

/// Why nobody talked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// Nobody answered (or nobody could be rung).
    Missed,
    /// Every device rung said busy.
    Busy,
    /// The caller hung up first.
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    Ringing,
    Ended { status: u16 },
}

/// The ringing state of one call.
#[derive(Debug, Clone)]
pub struct Ringing {
    devices_per_step: Vec<usize>,
    current: Option<usize>,
    legs: HashMap<LegId, LegState>,
    progress_relayed: bool,
    done: bool,
    /// Whether any leg in the whole call was busy and none merely timed out.
    all_busy: bool,
}

impl Ringing {
    /// Starts ringing: the first action (first step, or an immediate 480 when nobody
    /// can be rung).
    pub fn start(plan: &RoutePlan) -> (Self, Vec<RingAction>) {
        let mut ringing = Ringing {
            devices_per_step: plan.steps.iter().map(|s| s.devices.len()).collect(),
            current: None,
            legs: HashMap::new(),
            progress_relayed: false,
            done: false,
            all_busy: true,
        };
        let actions = ringing.next_step();
        (ringing, actions)
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The step ringing now.
    pub fn current_step(&self) -> Option<usize> {
        self.current
    }

    fn next_step(&mut self) -> Vec<RingAction> {
        let next = self.current.map_or(0, |c| c + 1);
        if next >= self.devices_per_step.len() {
            self.done = true;
            let busy = self.all_busy && !self.legs.is_empty();
            return vec![if busy {
                RingAction::Reject {
                    status: 486,
                    outcome: Unanswered::Busy,
                }
            } else {
                RingAction::Reject {
                    status: 480,
                    outcome: Unanswered::Missed,
                }
            }];
        }
        self.current = Some(next);
        for device in 0..self.devices_per_step[next] {
            self.legs.insert((next, device), LegState::Ringing);
        }
        vec![RingAction::StartStep(next)]
    }

    fn ringing_legs(&self) -> Vec<LegId> {
        let mut legs: Vec<LegId> = self
            .legs
            .iter()
            .filter(|(_, s)| **s == LegState::Ringing)
            .map(|(id, _)| *id)
            .collect();
        legs.sort_unstable();
        legs
    }

    /// Applies an event; returns the actions in order.
    pub fn on(&mut self, event: RingEvent) -> Vec<RingAction> {
        if self.done {
            // Late news of a leg after the call was decided: a 2xx must still be ended.
            return match event {
                RingEvent::Answered(leg) => vec![RingAction::Cancel(vec![leg])],
                _ => Vec::new(),
            };
        }
        match event {
            RingEvent::Progress { leg, early_media } => {
                if self.legs.get(&leg) != Some(&LegState::Ringing) {
                    return Vec::new();
                }
                // The caller hears ringing once; early media (183 with SDP) is relayed
                // each time, since it carries the leg's audio.
                if self.progress_relayed && !early_media {
                    return Vec::new();
                }
                self.progress_relayed = true;
                vec![RingAction::RelayProgress { leg, early_media }]
            }
            RingEvent::Answered(leg) => {
                if self.legs.get(&leg) != Some(&LegState::Ringing) {
                    return vec![RingAction::Cancel(vec![leg])];
                }
                self.legs.insert(leg, LegState::Ended { status: 200 });
                self.done = true;
                let others = self.ringing_legs();
                let mut actions = Vec::new();
                if !others.is_empty() {
                    actions.push(RingAction::Cancel(others));
                }
                actions.push(RingAction::Connect(leg));
                actions
            }
            RingEvent::Failed { leg, status } => {
                if self.legs.get(&leg) != Some(&LegState::Ringing) {
                    return Vec::new();
                }
                self.legs.insert(leg, LegState::Ended { status });
                if !matches!(status, 486 | 600) {
                    self.all_busy = false;
                }
                let step_over = Some(leg.0) == self.current
                    && !self
                        .legs
                        .iter()
                        .any(|(id, s)| id.0 == leg.0 && *s == LegState::Ringing);
                if step_over {
                    self.next_step()
                } else {
                    Vec::new()
                }
            }
            RingEvent::StepTimedOut { step } => {
                if Some(step) != self.current {
                    return Vec::new();
                }
                self.all_busy = false;
                let legs: Vec<LegId> = self
                    .ringing_legs()
                    .into_iter()
                    .filter(|l| l.0 == step)
                    .collect();
                for leg in &legs {
                    self.legs.insert(*leg, LegState::Ended { status: 408 });
                }
                let mut actions = Vec::new();
                if !legs.is_empty() {
                    actions.push(RingAction::Cancel(legs));
                }
                actions.extend(self.next_step());
                actions
            }
            RingEvent::CallerCancelled => {
                self.done = true;
                let legs = self.ringing_legs();
                let mut actions = Vec::new();
                if !legs.is_empty() {
                    actions.push(RingAction::Cancel(legs));
                }
                actions.push(RingAction::Reject {
                    status: 487,
                    outcome: Unanswered::Cancelled,
                });
                actions
            }
        }
    }
}

#[cfg(test)]
mod tests;
