//! Shedding at the edge: whether a new INVITE is refused (503) by the receive loop itself,
//! before rsipstack's transaction layer, the request queue and the call's task ever see
//! it. Behind the receive loop every queue is unbounded (the transaction layer's channel,
//! tokio's run queue), so under overload a call admitted there waits until its caller has
//! retransmitted and given up; refusing it at once costs a parse and a send.
//!
//! The signal is the runtime's lag: how late a timer that should fire every
//! [`PROBE_PERIOD`] fires, smoothed over a few periods, or how overdue it is now when it
//! has not fired at all (a runtime far behind runs no probe). Every step of a call's
//! set-up waits in that run queue, so the lag is what a new call would wait at each step;
//! it rises under overload whatever the bottleneck (our CPU, the SQLite writer waking
//! tasks late, other processes on the cores). The bound on calls in set-up
//! ([`super::setup`]) is checked here too, so a call it would refuse is refused before it
//! is queued.
//!
//! Shedding starts when the lag reaches the bound and stops once it is back under half of
//! it, so a burst of refusals drains the queue instead of flapping on every sample.
//!
//! Pure: the clock (microseconds since the probe's start) is passed in; the probe's task
//! and the receive loops are in `endpoint`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often the runtime's lag is sampled. Short enough that a flood is seen within a few
/// milliseconds; a wake-up costs about a microsecond.
pub const PROBE_PERIOD: Duration = Duration::from_millis(5);

/// The lag past which new calls are refused when nothing is configured
/// (`--sip-shed-lag-ms`). Chosen from `bench/call-load` on the shared 2-core machine: at
/// clean rates the sampled lag stayed at 1–2 ms (p50), under 10 ms (p90), with single
/// samples up to 38 ms while other processes took the cores; 40 ms already refused calls
/// in clean steps. Under twice the clean rate and in the step right after it, p90 was
/// 22–64 ms. 100 ms stays clear of that noise and is still a fifth of the caller's first
/// retransmission (T1, 500 ms): a call's set-up passes the run queue several times, so
/// by then a new call would wait about that long before its phone rings.
pub const DEFAULT_MAX_LAG_MS: u64 = 100;

/// What the edge knows about the gateway's load when a new INVITE arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// The runtime's lag now ([`lag_at`]).
    pub lag: Duration,
    pub calls_in_setup: usize,
    pub setup_limit: usize,
}

/// Why a new INVITE was refused at the edge; `label` is the `reason` of
/// `leadline_sip_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// The runtime is behind: the lag is past the bound (or shedding has not stopped yet).
    Behind,
    /// The bound on calls in set-up is reached.
    SetupFull,
}

impl Overload {
    pub fn label(self) -> &'static str {
        match self {
            Overload::Behind => "behind",
            Overload::SetupFull => "overload",
        }
    }

    /// For the Warning header of the 503.
    pub fn reason(self) -> &'static str {
        match self {
            Overload::Behind => "overloaded: the gateway is behind",
            Overload::SetupFull => "too many calls in set-up",
        }
    }
}

/// The decision for one new INVITE, and whether shedding goes on after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub refuse: Option<Overload>,
    pub shedding: bool,
}

/// `max_lag` zero turns lag-based shedding off (the bound on calls in set-up stays).
pub fn decide(max_lag: Duration, was_shedding: bool, load: Load) -> Decision {
    let shedding =
        !max_lag.is_zero() && (load.lag >= max_lag || (was_shedding && load.lag >= max_lag / 2));
    let refuse = if shedding {
        Some(Overload::Behind)
    } else if load.calls_in_setup >= load.setup_limit {
        Some(Overload::SetupFull)
    } else {
        None
    };
    Decision { refuse, shedding }
}

/// The smoothed lag after one more sample: a quarter of the new sample, so one late
/// wake-up (a context switch to another process) is not a flood but three in a row are.
pub fn smoothed(previous_us: u64, sample_us: u64) -> u64 {
    (previous_us * 3 + sample_us) / 4
}

/// The lag at `now_us`: the smoothed samples, or how overdue the pending probe is if that
/// is more (the probe cannot report while the runtime is too far behind to run it).
pub fn lag_at(smoothed_us: u64, probe_due_us: u64, now_us: u64) -> Duration {
    Duration::from_micros(smoothed_us.max(now_us.saturating_sub(probe_due_us)))
}

/// The probe's readings, shared by its task (writes) and the receive loops (read); plus
/// whether the edge is shedding. Lock-free: read for every new INVITE.
#[derive(Debug, Default)]
pub struct LagGauge {
    smoothed_us: AtomicU64,
    /// When the pending probe should fire (µs on the probe's clock); 0 before the first.
    due_us: AtomicU64,
    shedding: AtomicBool,
}

impl LagGauge {
    /// The probe is about to sleep until `due_us`.
    pub fn armed(&self, due_us: u64) {
        self.due_us.store(due_us, Ordering::Release);
    }

    /// The probe fired at `now_us`; returns the smoothed lag.
    pub fn fired(&self, now_us: u64) -> u64 {
        let due = self.due_us.load(Ordering::Acquire);
        let sample = now_us.saturating_sub(due);
        let next = smoothed(self.smoothed_us.load(Ordering::Relaxed), sample);
        self.smoothed_us.store(next, Ordering::Relaxed);
        next
    }

    pub fn lag(&self, now_us: u64) -> Duration {
        let due = self.due_us.load(Ordering::Acquire);
        if due == 0 {
            return Duration::ZERO;
        }
        lag_at(self.smoothed_us.load(Ordering::Relaxed), due, now_us)
    }

    /// Decides for one new INVITE and keeps the shedding state; also says whether the
    /// state changed (for the log). Two loops deciding at once may both read the old
    /// state: the worst is one call decided by it.
    pub fn decide(
        &self,
        max_lag: Duration,
        now_us: u64,
        calls_in_setup: usize,
        setup_limit: usize,
    ) -> (Decision, bool) {
        let load = Load {
            lag: self.lag(now_us),
            calls_in_setup,
            setup_limit,
        };
        let was = self.shedding.load(Ordering::Relaxed);
        let decision = decide(max_lag, was, load);
        if decision.shedding != was {
            self.shedding.store(decision.shedding, Ordering::Relaxed);
        }
        (decision, decision.shedding != was)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    fn load(lag_ms: u64, calls_in_setup: usize) -> Load {
        Load {
            lag: Duration::from_millis(lag_ms),
            calls_in_setup,
            setup_limit: 100,
        }
    }

    /// When a new INVITE is refused at the edge, and whether shedding continues: it starts
    /// at the bound, holds down to half of it, and the bound on calls in set-up applies
    /// whatever the lag.
    #[test]
    fn a_new_call_is_refused_while_the_gateway_is_behind_or_its_set_up_bound_is_reached() {
        let max = Duration::from_millis(40);
        let behind = Some(Overload::Behind);
        let full = Some(Overload::SetupFull);
        // (was shedding, lag ms, calls in set-up) → (refused, shedding after)
        let cases: &[(bool, u64, usize, Option<Overload>, bool)] = &[
            (false, 0, 0, None, false),
            (false, 39, 99, None, false),
            (false, 40, 0, behind, true),
            (false, 500, 0, behind, true),
            (true, 39, 0, behind, true),
            (true, 20, 0, behind, true),
            (true, 19, 0, None, false),
            (false, 0, 100, full, false),
            (false, 10, 150, full, false),
            (true, 45, 100, behind, true),
            (true, 5, 100, full, false),
        ];
        for &(was, lag_ms, in_setup, refuse, shedding) in cases {
            assert_eq!(
                decide(max, was, load(lag_ms, in_setup)),
                Decision { refuse, shedding },
                "was shedding {was}, lag {lag_ms} ms, {in_setup} in set-up"
            );
        }
    }

    #[test]
    fn a_zero_bound_turns_lag_shedding_off_but_not_the_set_up_bound() {
        let off = Duration::ZERO;
        assert_eq!(decide(off, true, load(10_000, 0)).refuse, None);
        assert_eq!(
            decide(off, false, load(10_000, 100)).refuse,
            Some(Overload::SetupFull)
        );
    }

    /// One late wake-up is not a flood; a run of them is, and a probe that does not fire
    /// at all counts by how overdue it is.
    #[test]
    fn the_lag_is_smoothed_samples_or_how_overdue_the_probe_is() {
        let gauge = LagGauge::default();
        assert_eq!(gauge.lag(123 * MS), Duration::ZERO, "no probe yet");
        let mut now = 0;
        let mut tick = |late_ms: u64| {
            now += 5 * MS;
            gauge.armed(now);
            now += late_ms * MS;
            gauge.fired(now)
        };
        assert_eq!(tick(0), 0);
        assert_eq!(tick(80), 20 * MS, "one late wake-up counts a quarter");
        assert_eq!(tick(0), 15 * MS);
        let after_run = [80, 80, 80].map(&mut tick);
        assert!(after_run[2] >= 40 * MS, "{after_run:?}");
        // Armed and never fired: 300 ms overdue is 300 ms of lag, whatever the samples.
        let due = now + 5 * MS;
        gauge.armed(due);
        assert_eq!(gauge.lag(due + 300 * MS), Duration::from_millis(300));
        assert_eq!(
            lag_at(7 * MS, due, due + MS),
            Duration::from_millis(7),
            "the samples, when the probe is barely late"
        );
    }

    #[test]
    fn the_gauge_keeps_the_shedding_state_between_calls() {
        let gauge = LagGauge::default();
        let max = Duration::from_millis(40);
        gauge.armed(1_000 * MS);
        // 50 ms overdue: shedding starts.
        let (decision, changed) = gauge.decide(max, 1_050 * MS, 0, 100);
        assert_eq!(decision.refuse, Some(Overload::Behind));
        assert!(changed);
        let (decision, changed) = gauge.decide(max, 1_051 * MS, 0, 100);
        assert_eq!(decision.refuse, Some(Overload::Behind));
        assert!(!changed, "still shedding");
        gauge.fired(1_051 * MS); // smoothed 12.75 ms
        gauge.armed(1_056 * MS);
        let (decision, changed) = gauge.decide(max, 1_056 * MS, 0, 100);
        assert_eq!(decision.refuse, None, "back under half");
        assert!(changed);
    }
}
