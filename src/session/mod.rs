//! Signing in to the web console: how long a session lives, which sessions end when a
//! person changes, the session cookie and its CSRF token ([`cookie`]), the password rules
//! and hashing ([`password`]) and the sign-in throttle ([`throttle`]).
//!
//! No I/O: time comes in as `now` (UTC milliseconds). The HTTP handlers
//! (`http::session`) and the store (`store::sessions`) are the adapters.

pub mod cookie;
pub mod password;
pub mod throttle;

pub use throttle::{Attempt, Failure, LoginThrottle, Subject, ThrottleKey, ThrottlePolicy};

use crate::crm::model::Millis;

/// A session ends this long after the last request made with it.
pub const IDLE_MS: Millis = 12 * 3600 * 1000;
/// A session ends this long after sign-in, however busy.
pub const ABSOLUTE_MS: Millis = 30 * 24 * 3600 * 1000;
/// `last_seen_at` is written at most this often: a console polls, and a write per request
/// would cost more than the minute of idle time it could misjudge.
pub const TOUCH_EVERY_MS: Millis = 60 * 1000;

/// The times of a stored session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimes {
    pub created_at: Millis,
    pub last_seen_at: Millis,
    /// The absolute end ([`ABSOLUTE_MS`] after sign-in).
    pub expires_at: Millis,
}

impl SessionTimes {
    /// A session signed in at `now`.
    pub fn new(now: Millis) -> Self {
        Self {
            created_at: now,
            last_seen_at: now,
            expires_at: now.saturating_add(ABSOLUTE_MS),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The session may be used; `touch`: write `now` as its `last_seen_at`.
    Live { touch: bool },
    /// Idle too long or past its absolute end: the row can go.
    Expired,
}

/// Whether a session may be used at `now`.
pub fn liveness(times: &SessionTimes, now: Millis) -> Liveness {
    if now >= times.expires_at || now >= times.last_seen_at.saturating_add(IDLE_MS) {
        return Liveness::Expired;
    }
    Liveness::Live {
        touch: now.saturating_sub(times.last_seen_at) >= TOUCH_EVERY_MS,
    }
}

/// Sessions last seen before this time are over at `now` (the sweep deletes them, and
/// those past `expires_at`).
pub fn idle_cutoff(now: Millis) -> Millis {
    now.saturating_sub(IDLE_MS)
}

/// Which of a person's sessions a change to them ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndSessions {
    None,
    All,
    /// All but the session (by token hash) the change was made with.
    AllBut(String),
}

/// A new role or a new password ends the person's sessions: whoever signed in before the
/// change signs in again, with the new password and seeing the new role's pages. A person
/// who sets their own password through the console stays signed in there (the session
/// that proved they are who changes it); a role change ends every session, the changer's
/// own included.
pub fn sessions_to_end(
    role_changed: bool,
    password_set: bool,
    own_session: Option<&str>,
) -> EndSessions {
    match (role_changed, password_set, own_session) {
        (true, _, _) => EndSessions::All,
        (false, true, Some(own)) => EndSessions::AllBut(own.to_owned()),
        (false, true, None) => EndSessions::All,
        (false, false, _) => EndSessions::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_800_000_000_000;

    #[test]
    fn a5_a_session_lives_while_used_then_ends_after_twelve_idle_hours() {
        let times = SessionTimes::new(T0);
        assert_eq!(
            liveness(&times, T0 + 1_000),
            Liveness::Live { touch: false }
        );
        assert_eq!(
            liveness(&times, T0 + IDLE_MS - 1),
            Liveness::Live { touch: true }
        );
        assert_eq!(liveness(&times, T0 + IDLE_MS), Liveness::Expired);
    }

    #[test]
    fn last_seen_is_written_at_most_once_a_minute() {
        let times = SessionTimes::new(T0);
        assert_eq!(
            liveness(&times, T0 + TOUCH_EVERY_MS - 1),
            Liveness::Live { touch: false }
        );
        assert_eq!(
            liveness(&times, T0 + TOUCH_EVERY_MS),
            Liveness::Live { touch: true }
        );
    }

    #[test]
    fn a5_a_busy_session_still_ends_thirty_days_after_sign_in() {
        let mut times = SessionTimes::new(T0);
        times.last_seen_at = T0 + ABSOLUTE_MS - 1_000;
        assert_eq!(
            liveness(&times, T0 + ABSOLUTE_MS - 1),
            Liveness::Live { touch: false }
        );
        assert_eq!(liveness(&times, T0 + ABSOLUTE_MS), Liveness::Expired);
        assert_eq!(idle_cutoff(T0 + IDLE_MS), T0);
    }

    #[test]
    fn a5_a_new_role_or_password_ends_sessions_but_not_the_one_setting_its_own_password() {
        assert_eq!(sessions_to_end(false, false, Some("h")), EndSessions::None);
        assert_eq!(sessions_to_end(true, false, None), EndSessions::All);
        assert_eq!(sessions_to_end(true, true, Some("h")), EndSessions::All);
        assert_eq!(sessions_to_end(false, true, None), EndSessions::All);
        assert_eq!(
            sessions_to_end(false, true, Some("h")),
            EndSessions::AllBut("h".to_owned())
        );
    }
}
