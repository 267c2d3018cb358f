//! Outbound registration to carrier trunks (T2: rented numbers reach us from a carrier
//! only while we are registered to it).
//!
//! This file is the state machine of one trunk's registration (RFC 3261 §10.2), pure: it
//! is fed what happened (`start`, `on_timer`, `on_outcome`, `on_trunk_changed`,
//! `on_removed`) with `now` and, where a delay is drawn, a jitter value, and answers with
//! one [`Action`]. It decides when to register, refresh, retry and un-register, and when a
//! challenge is answered or is a failure. It sends nothing, reads no clock and draws no
//! random number: [`task`] and its workers do that around it.
//!
//! Rules:
//! - A 401/407 is answered once per attempt; another one that is not `stale` means the
//!   credentials are wrong: a failure, never a loop (a `stale=true` one is answered again,
//!   up to [`MAX_STALE_ANSWERS`] times).
//! - Refresh at half the granted expiry, or a minute before it when that is later, and
//!   never sooner than [`MIN_REFRESH_MS`] after the last success.
//! - Back-off after a failure: 5 s doubling to 10 min ([`backoff_ms`]), minus up to a
//!   quarter as jitter so trunks that failed together do not retry together; a longer
//!   `Retry-After` wins (up to the cap).
//! - A trunk removed (or no longer registering) is un-registered (`Expires: 0`) when the
//!   carrier may still hold our binding; a changed trunk is un-registered with the old
//!   account and registered anew with the new one.

pub mod task;
mod worker;

use std::fmt;

use crate::crm::model::{Millis, TrunkRegistrationState};

/// First back-off after a failure.
pub const BACKOFF_FIRST_MS: Millis = 5_000;
/// Longest back-off (and longest `Retry-After` honoured).
pub const BACKOFF_MAX_MS: Millis = 600_000;
/// A registration is refreshed no sooner than this after it succeeded, whatever expiry
/// the registrar granted: a registrar granting a few seconds must not get a flood.
pub const MIN_REFRESH_MS: Millis = 5_000;
/// Refresh at the latest this long before expiry: covers a UDP transaction's whole
/// retransmission time (Timer F, 32 s) and one more try.
const REFRESH_MARGIN_MS: Millis = 60_000;
/// How often one attempt answers `stale=true` challenges before giving up.
pub const MAX_STALE_ANSWERS: u8 = 2;
/// How often one attempt raises its interval after 423 Interval Too Brief.
const MAX_TOO_BRIEF: u8 = 2;

/// A REGISTER to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Register (or refresh) our contact for `expires_s` seconds.
    Register { expires_s: u32 },
    /// Remove our contact: `Expires: 0` (RFC 3261 §10.2.2).
    Unregister,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send this request now and report its [`Outcome`].
    Send(Request),
    /// Nothing to send before `until`; call `on_timer` then.
    Wait { until: Millis },
    /// The registration is over (the trunk was removed and is un-registered).
    Stop,
}

/// How a request ended, as the adapter read the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx; `expires_s` is what the registrar granted our contact.
    Registered {
        expires_s: u32,
    },
    /// A 401/407 with a challenge we can answer. `stale`: the nonce was old, not the
    /// password wrong (RFC 7616 §3.3).
    Challenged {
        stale: bool,
    },
    /// 423 Interval Too Brief, with the registrar's `Min-Expires` if it sent one.
    IntervalTooBrief {
        min_expires_s: Option<u32>,
    },
    Failed(Failure),
}

/// Why an attempt failed, in words for `last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A final response other than success or an answerable challenge.
    Rejected {
        status: u16,
        reason: String,
        retry_after_s: Option<u32>,
    },
    /// Nothing answered in time.
    NoResponse,
    /// The request could not be sent (name resolution, connection).
    Unreachable(String),
    /// The TLS connection was refused: the carrier's certificate did not verify for the
    /// trunk's host, or the handshake failed.
    Tls(String),
    /// A challenge we cannot answer (algorithm, qop, no password stored).
    Unanswerable(String),
    /// A second challenge after we answered one: wrong username or password.
    CredentialsRefused,
    /// A 423 without a usable `Min-Expires`, or after raising the interval already.
    IntervalRefused,
    /// A 2xx that grants our contact no time.
    NoExpiryGranted,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Rejected { status, reason, .. } => {
                write!(f, "the carrier answered {status} {reason}")
            }
            Failure::NoResponse => f.write_str("no response from the carrier"),
            Failure::Unreachable(why) => write!(f, "cannot reach the carrier: {why}"),
            Failure::Tls(why) => write!(f, "tls: {why}"),
            Failure::Unanswerable(why) => write!(f, "cannot answer the carrier's challenge: {why}"),
            Failure::CredentialsRefused => f.write_str(
                "the carrier refused the username or password (challenged again after \
                 our answer)",
            ),
            Failure::IntervalRefused => f.write_str(
                "the carrier refused the registration interval (423) without a usable \
                 Min-Expires",
            ),
            Failure::NoExpiryGranted => {
                f.write_str("the carrier accepted the REGISTER but granted no expiry")
            }
        }
    }
}

/// What to show and store about a registration (`trunk_registrations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: TrunkRegistrationState,
    pub registered_until: Option<Millis>,
    pub last_error: Option<String>,
    pub failures: u32,
    pub next_attempt_at: Option<Millis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No binding yet: the first attempt, or the first after a change.
    Registering,
    Registered,
    /// The last attempt failed; the next one is at `next_at`.
    Failed,
    /// Removing our binding; `shown` is the state to report until the carrier confirms.
    Unregistering {
        then: Then,
        shown: TrunkRegistrationState,
    },
    Unregistered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Stop,
    /// Register again (with the changed account).
    Restart,
}

/// One trunk's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    phase: Phase,
    /// The expiry the profile asks for.
    wanted_s: u32,
    /// The expiry we ask for: `wanted_s`, or more after a 423.
    interval_s: u32,
    registered_until: Option<Millis>,
    /// When the last REGISTER succeeded.
    registered_at: Option<Millis>,
    last_error: Option<String>,
    failures: u32,
    next_at: Option<Millis>,
    in_flight: Option<Request>,
    /// Per attempt: whether a challenge was answered, how many stale ones, how many 423s.
    answered: bool,
    stale_answers: u8,
    too_brief: u8,
}

impl Registration {
    /// A registration asking for `interval_s` seconds (the profile's
    /// `registration_interval_s`); call [`Registration::start`] to begin.
    pub fn new(interval_s: u32) -> Self {
        Self {
            phase: Phase::Registering,
            wanted_s: interval_s,
            interval_s,
            registered_until: None,
            registered_at: None,
            last_error: None,
            failures: 0,
            next_at: None,
            in_flight: None,
            answered: false,
            stale_answers: 0,
            too_brief: 0,
        }
    }

    /// The first REGISTER.
    pub fn start(&mut self) -> Action {
        self.begin(self.register())
    }

    /// Whether the carrier holds our binding as far as we know (for the gauge).
    pub fn is_registered(&self) -> bool {
        self.phase == Phase::Registered
    }

    /// The request sent and not yet answered, if any.
    pub fn in_flight(&self) -> Option<Request> {
        self.in_flight
    }

    pub fn status(&self) -> Status {
        let state = match self.phase {
            Phase::Registering => TrunkRegistrationState::Registering,
            Phase::Registered => TrunkRegistrationState::Registered,
            Phase::Failed => TrunkRegistrationState::Failed,
            Phase::Unregistering { shown, .. } => shown,
            Phase::Unregistered => TrunkRegistrationState::Unregistered,
        };
        Status {
            state,
            registered_until: self.registered_until,
            last_error: self.last_error.clone(),
            failures: self.failures,
            next_attempt_at: match self.phase {
                Phase::Unregistering { .. } | Phase::Unregistered => None,
                _ => self.next_at,
            },
        }
    }

    /// A timer set by [`Action::Wait`] fired (or any wake-up: early ones just wait on).
    pub fn on_timer(&mut self, now: Millis) -> Action {
        if self.in_flight.is_some() {
            return self.idle();
        }
        match self.phase {
            Phase::Unregistered => Action::Stop,
            Phase::Unregistering { .. } => self.begin(Request::Unregister),
            Phase::Registering | Phase::Registered | Phase::Failed => match self.next_at {
                Some(at) if at > now => Action::Wait { until: at },
                _ => self.begin(self.register()),
            },
        }
    }

    /// The outcome of the request in flight. `jitter` in `[0, 1)` spreads a back-off.
    pub fn on_outcome(&mut self, outcome: Outcome, now: Millis, jitter: f64) -> Action {
        let Some(request) = self.in_flight.take() else {
            // Nothing was asked: a stray report changes nothing.
            return self.idle();
        };
        let result = match outcome {
            Outcome::Challenged { stale } => {
                // RFC 3261 §22.2: answer a challenge once; a second one for the same
                // attempt means the credentials were refused, unless the nonce was only
                // stale.
                if !self.answered || (stale && self.stale_answers < MAX_STALE_ANSWERS) {
                    if self.answered {
                        self.stale_answers += 1;
                    }
                    self.answered = true;
                    return self.resend(request);
                }
                Err(Failure::CredentialsRefused)
            }
            Outcome::Registered { expires_s } => Ok(expires_s),
            Outcome::IntervalTooBrief { min_expires_s } => {
                // RFC 3261 §10.2.8: retry at once with at least Min-Expires.
                match (request, min_expires_s) {
                    (Request::Register { .. }, Some(min))
                        if min > self.interval_s && self.too_brief < MAX_TOO_BRIEF =>
                    {
                        self.too_brief += 1;
                        self.interval_s = min;
                        return self.resend(Request::Register { expires_s: min });
                    }
                    _ => Err(Failure::IntervalRefused),
                }
            }
            Outcome::Failed(failure) => Err(failure),
        };
        self.ended(request, result, now, jitter)
    }

    /// The TCP connection our binding was made over closed: the carrier can no longer
    /// reach us through it (RFC 5626 §4.4.1), so register again over a new one, but no
    /// sooner than [`MIN_REFRESH_MS`] after the last success (a carrier that closes every
    /// connection must not get a REGISTER loop).
    pub fn on_flow_lost(&mut self, now: Millis) -> Action {
        if self.in_flight.is_none() && self.phase == Phase::Registered {
            let earliest = self
                .registered_at
                .map_or(now, |at| at.saturating_add(MIN_REFRESH_MS));
            let at = now.max(earliest);
            self.next_at = Some(self.next_at.map_or(at, |next| next.min(at)));
        }
        self.on_timer(now)
    }

    /// The trunk's account changed (host, port, transport, credentials, profile):
    /// un-register the old binding if there may be one, then register anew. The adapter
    /// sends the `Unregister` with the old account and what follows with the new one.
    pub fn on_trunk_changed(&mut self, interval_s: u32, now: Millis) -> Action {
        self.in_flight = None;
        self.wanted_s = interval_s;
        if self.may_hold_binding(now) {
            self.phase = Phase::Unregistering {
                then: Then::Restart,
                shown: self.status().state,
            };
            return self.begin(Request::Unregister);
        }
        self.restart()
    }

    /// The trunk was deleted or no longer registers: un-register if the carrier may still
    /// hold our binding, else stop.
    pub fn on_removed(&mut self, now: Millis) -> Action {
        self.in_flight = None;
        if self.may_hold_binding(now) {
            self.phase = Phase::Unregistering {
                then: Then::Stop,
                shown: self.status().state,
            };
            return self.begin(Request::Unregister);
        }
        self.finish_unregistering(Then::Stop)
    }

    fn register(&self) -> Request {
        Request::Register {
            expires_s: self.interval_s,
        }
    }

    fn may_hold_binding(&self, now: Millis) -> bool {
        self.registered_until.is_some_and(|until| until > now)
    }

    /// A new attempt: the per-attempt counters start over.
    fn begin(&mut self, request: Request) -> Action {
        self.answered = false;
        self.stale_answers = 0;
        self.too_brief = 0;
        self.resend(request)
    }

    /// The same attempt, one more request (answering a challenge, a 423).
    fn resend(&mut self, request: Request) -> Action {
        self.in_flight = Some(request);
        Action::Send(request)
    }

    fn idle(&self) -> Action {
        match (self.phase, self.next_at) {
            (Phase::Unregistered, _) => Action::Stop,
            (_, Some(until)) => Action::Wait { until },
            // In flight, or waiting for nothing: wake again a back-off later.
            (_, None) => Action::Wait { until: Millis::MAX },
        }
    }

    fn ended(
        &mut self,
        request: Request,
        result: Result<u32, Failure>,
        now: Millis,
        jitter: f64,
    ) -> Action {
        if request == Request::Unregister {
            // Whatever the carrier said, we are done with this binding: retrying an
            // un-register only delays what comes next, and the binding expires anyway.
            if let Err(failure) = &result {
                self.last_error = Some(format!("un-register: {failure}"));
            }
            self.registered_until = None;
            let then = match self.phase {
                Phase::Unregistering { then, .. } => then,
                _ => Then::Stop,
            };
            return self.finish_unregistering(then);
        }
        let result = result.and_then(|expires_s| match expires_s {
            0 => Err(Failure::NoExpiryGranted),
            s => Ok(s),
        });
        match result {
            Ok(expires_s) => {
                let expires_ms = Millis::from(expires_s) * 1000;
                self.phase = Phase::Registered;
                self.registered_until = Some(now.saturating_add(expires_ms));
                self.registered_at = Some(now);
                self.next_at = Some(now.saturating_add(refresh_delay_ms(expires_s)));
                self.failures = 0;
                self.last_error = None;
                Action::Wait {
                    until: now.saturating_add(refresh_delay_ms(expires_s)),
                }
            }
            Err(failure) => {
                self.failures = self.failures.saturating_add(1);
                let mut delay = backoff_ms(self.failures, jitter);
                if let Failure::Rejected {
                    retry_after_s: Some(secs),
                    ..
                } = &failure
                {
                    delay = delay.max((Millis::from(*secs) * 1000).min(BACKOFF_MAX_MS));
                }
                self.phase = Phase::Failed;
                self.last_error = Some(failure.to_string());
                let until = now.saturating_add(delay);
                self.next_at = Some(until);
                Action::Wait { until }
            }
        }
    }

    fn finish_unregistering(&mut self, then: Then) -> Action {
        match then {
            Then::Stop => {
                self.phase = Phase::Unregistered;
                self.next_at = None;
                Action::Stop
            }
            Then::Restart => self.restart(),
        }
    }

    /// A fresh registration with the (possibly changed) wanted interval.
    fn restart(&mut self) -> Action {
        *self = Registration::new(self.wanted_s);
        self.start()
    }
}

/// Whether we register to a trunk: a carrier trunk set to register, with a host and a
/// username, whose profile registers (`registration_interval_s` above 0). The API shows a
/// registration exactly for these; the store query and [`task`] apply the same rule.
pub fn registers(
    kind: crate::crm::model::TrunkKind,
    register: bool,
    host: Option<&str>,
    username: Option<&str>,
    profile: &str,
    profiles: &crate::sip::profiles::Profiles,
) -> bool {
    kind == crate::crm::model::TrunkKind::Carrier
        && register
        && host.is_some()
        && username.is_some()
        && profiles
            .get(profile)
            .is_some_and(|p| p.registration_interval().is_some())
}

/// When to refresh a registration the registrar granted `expires_s` seconds: at half the
/// expiry, or `REFRESH_MARGIN_MS` before it when that is later; never sooner than
/// [`MIN_REFRESH_MS`].
pub fn refresh_delay_ms(expires_s: u32) -> Millis {
    let expires_ms = Millis::from(expires_s) * 1000;
    (expires_ms / 2)
        .max(expires_ms - REFRESH_MARGIN_MS)
        .max(MIN_REFRESH_MS)
}

/// The wait after the `failures`-th failure in a row: [`BACKOFF_FIRST_MS`] doubling up to
/// [`BACKOFF_MAX_MS`], less up to a quarter by `jitter` (in `[0, 1)`).
pub fn backoff_ms(failures: u32, jitter: f64) -> Millis {
    let doublings = failures.saturating_sub(1).min(20);
    let base = BACKOFF_FIRST_MS
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX_MS);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    // Truncation is fine: milliseconds.
    base - ((base / 4) as f64 * jitter) as Millis
}

#[cfg(test)]
mod tests;
