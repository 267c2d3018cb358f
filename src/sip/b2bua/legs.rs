//! The legs of a call as the call log and `GET /calls` show them (item 7).

use super::*;

impl Call {
    pub(super) fn leg_started(&self, leg: LegId) {
        let step = &self.plan.steps[leg.0];
        let mut legs = self.book.legs.lock().unwrap_or_else(|e| e.into_inner());
        legs.push((
            leg,
            CallLeg {
                user: step.user.clone(),
                target: step.devices[leg.1].contact.clone(),
                started_at: now_ms(),
                ended_at: None,
                state: "ringing".to_owned(),
                status: None,
            },
        ));
        self.b2bua.live.set(&self.call_id, snapshot(&legs));
    }

    /// A leg's outcome; the first one given wins (a cancelled leg's 487 stays
    /// "cancelled", a leg that timed out stays "no_answer").
    pub(super) fn leg_ended(&self, leg: LegId, state: &str, status: Option<u16>) {
        let mut legs = self.book.legs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, record)) = legs.iter_mut().find(|(id, _)| *id == leg)
            && record.state == "ringing"
        {
            record.state = state.to_owned();
            record.status = status.or(record.status);
            if state != "answered" {
                record.ended_at = Some(now_ms());
            }
        }
        self.b2bua.live.set(&self.call_id, snapshot(&legs));
    }

    pub(super) fn step_unanswered(&self, step: usize) {
        let ringing: Vec<LegId> = self
            .book
            .legs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(id, leg)| id.0 == step && leg.state == "ringing")
            .map(|(id, _)| *id)
            .collect();
        for leg in ringing {
            self.leg_ended(leg, "no_answer", Some(408));
        }
    }

    /// The call is over: close the legs, keep them on the call log row.
    pub(super) async fn finish_legs(&self) {
        let legs = {
            let mut legs = self.book.legs.lock().unwrap_or_else(|e| e.into_inner());
            let now = now_ms();
            for (_, leg) in legs.iter_mut() {
                leg.ended_at.get_or_insert(now);
            }
            snapshot(&legs)
        };
        self.b2bua.live.remove(&self.call_id);
        if !legs.is_empty()
            && let Err(err) = self.b2bua.store.set_call_legs(&self.call_id, &legs).await
        {
            tracing::error!(%err, "cannot record the call's legs");
        }
    }
}

pub(super) fn snapshot(legs: &[(LegId, CallLeg)]) -> Vec<CallLeg> {
    legs.iter().map(|(_, leg)| leg.clone()).collect()
}

/// How a leg that got a final status ended.
pub(super) fn leg_state(status: u16) -> &'static str {
    match status {
        200..=299 => "answered",
        486 | 600 => "busy",
        603 => "declined",
        487 => "cancelled",
        408 | 480 => "no_answer",
        _ => "failed",
    }
}
