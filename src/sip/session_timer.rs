//! Session timers (RFC 4028) for calls we answer: what to agree to, pure.
//!
//! The gateway never refreshes a session itself; it relays the refreshes (re-INVITE,
//! UPDATE) the caller sends. So it takes part only when the caller refreshes
//! (`refresher=uac`, or no preference and the caller supports timers): the answer then
//! carries the interval and `Require: timer`, and a session that is not refreshed in time
//! is ended with BYE on both sides, so a carrier or phone that vanished without a BYE does
//! not leave a call (and an agent) hanging. Otherwise no timer is used, which RFC 4028
//! allows: the answer then carries no `Session-Expires`.

/// The smallest interval we accept (RFC 4028 §5: 90 s unless configured higher).
pub const MIN_SE_S: u32 = 90;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// No session timer on this call.
    None,
    /// The caller refreshes every `interval_s`; without a refresh the call ends.
    CallerRefreshes { interval_s: u32 },
    /// 422 Session Interval Too Small with `Min-SE`.
    TooSmall { min_se_s: u32 },
}

/// Decides from the INVITE's `Session-Expires`, `Min-SE` and whether it lists `timer` in
/// `Supported` (or `Require`).
pub fn negotiate(
    session_expires: Option<&str>,
    min_se: Option<&str>,
    caller_supports_timer: bool,
) -> Negotiated {
    let Some(value) = session_expires else {
        return Negotiated::None;
    };
    let mut parts = value.split(';');
    let Some(Ok(interval_s)) = parts.next().map(|v| v.trim().parse::<u32>()) else {
        return Negotiated::None;
    };
    let refresher = parts.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| value.trim().to_ascii_lowercase())
    });
    let floor = min_se
        .and_then(|v| v.split(';').next()?.trim().parse::<u32>().ok())
        .unwrap_or(0)
        .max(MIN_SE_S);
    if interval_s < MIN_SE_S {
        return Negotiated::TooSmall { min_se_s: floor };
    }
    match refresher.as_deref() {
        Some("uac") | None if caller_supports_timer => Negotiated::CallerRefreshes {
            interval_s: interval_s.max(floor),
        },
        _ => Negotiated::None,
    }
}

/// When the caller's refresh is overdue: RFC 4028 §10 lets the refresh come as late as
/// the interval minus a third (at most 32 s) — we end the session at the interval.
pub fn expiry_ms(interval_s: u32) -> u64 {
    u64::from(interval_s) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_that_refreshes_gets_its_timer() {
        assert_eq!(
            negotiate(Some("1800;refresher=uac"), None, true),
            Negotiated::CallerRefreshes { interval_s: 1800 }
        );
        assert_eq!(
            negotiate(Some("600"), None, true),
            Negotiated::CallerRefreshes { interval_s: 600 },
            "no preference: the caller refreshes"
        );
    }

    #[test]
    fn a_too_small_interval_is_refused_with_our_minimum() {
        assert_eq!(
            negotiate(Some("30;refresher=uac"), None, true),
            Negotiated::TooSmall { min_se_s: 90 }
        );
        assert_eq!(
            negotiate(Some("60"), Some("120"), true),
            Negotiated::TooSmall { min_se_s: 120 }
        );
    }

    #[test]
    fn no_timer_when_we_would_have_to_refresh_or_none_is_asked() {
        assert_eq!(negotiate(None, None, true), Negotiated::None);
        assert_eq!(
            negotiate(Some("1800;refresher=uas"), None, true),
            Negotiated::None
        );
        assert_eq!(
            negotiate(Some("1800"), None, false),
            Negotiated::None,
            "a caller without timer support cannot be the refresher"
        );
        assert_eq!(negotiate(Some("soon"), None, true), Negotiated::None);
    }

    #[test]
    fn min_se_raises_the_interval() {
        assert_eq!(
            negotiate(Some("100"), Some("300"), true),
            Negotiated::CallerRefreshes { interval_s: 300 }
        );
    }
}
