//! Brute-force protection for digest authentication: too many failed attempts from one
//! source within a window ban that source for a while.
//!
//! Sans-I/O: the owner (the registrar task) asks [`Lockout::is_banned`] before it looks
//! at credentials, reports each [`Verdict::BadResponse`](super::digest::Verdict) with
//! [`Lockout::record_failure`] and each success with [`Lockout::record_success`]; time comes
//! in as `now_ms`. What to answer a banned source (drop silently or 403) is the owner's
//! choice; this module only counts. Memory is bounded by `max_tracked` sources.
//!
//! IPv6 sources are counted per prefix (`/64` by default): one subscriber gets a whole /64
//! and could otherwise rotate through it. IPv4-mapped IPv6 addresses count as IPv4.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures within `window_ms` that trigger a ban.
    pub max_failures: u32,
    pub window_ms: i64,
    pub ban_ms: i64,
    /// Sources remembered at most; beyond it the oldest are forgotten.
    pub max_tracked: usize,
    /// IPv6 sources are grouped by this prefix length (128: per address).
    pub ipv6_prefix_len: u8,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window_ms: 60_000,
            ban_ms: 600_000,
            max_tracked: 100_000,
            ipv6_prefix_len: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Not banned yet: this many failures in the current window.
    Counted(u32),
    /// This failure crossed the threshold: the source is banned from now on (log it, count
    /// it in metrics).
    Banned,
    /// The source was banned already (the owner should not have asked); the ban is not
    /// extended.
    AlreadyBanned,
}

/// Position of an entry in one of the two eviction orders: (time, tie-breaker).
type Slot = (i64, u64);

#[derive(Debug)]
struct Entry {
    /// Times of the failures in the current window, oldest first, at most `max_failures`.
    failures: Vec<i64>,
    banned_until: Option<i64>,
    /// Key in `counting` (by last failure) or, when banned, in `banned` (by ban end).
    slot: Slot,
}

/// Failed-attempt counters per source.
#[derive(Debug)]
pub struct Lockout {
    policy: LockoutPolicy,
    entries: HashMap<IpAddr, Entry>,
    /// Sources that are counting, by last failure: evicted first, oldest first.
    counting: BTreeMap<Slot, IpAddr>,
    /// Banned sources, by end of ban: evicted only when no counting source is left.
    banned: BTreeMap<Slot, IpAddr>,
    next_seq: u64,
}

impl Lockout {
    pub fn new(policy: LockoutPolicy) -> Self {
        Self {
            policy,
            entries: HashMap::new(),
            counting: BTreeMap::new(),
            banned: BTreeMap::new(),
            next_seq: 0,
        }
    }

    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    /// Sources currently remembered (for a gauge).
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    pub fn is_banned(&self, ip: IpAddr, now_ms: i64) -> bool {
        self.entries
            .get(&self.key(ip))
            .and_then(|e| e.banned_until)
            .is_some_and(|until| now_ms < until)
    }

    pub fn record_failure(&mut self, ip: IpAddr, now_ms: i64) -> FailureOutcome {
        let key = self.key(ip);
        let window_start = now_ms.saturating_sub(self.policy.window_ms);
        let seq = self.seq();
        if let Some(entry) = self.entries.get_mut(&key) {
            match entry.banned_until {
                Some(until) if now_ms < until => return FailureOutcome::AlreadyBanned,
                Some(_) => {
                    // The ban is over: start afresh.
                    self.banned.remove(&entry.slot);
                    entry.banned_until = None;
                    entry.failures.clear();
                }
                None => {
                    self.counting.remove(&entry.slot);
                }
            }
            entry.failures.retain(|&t| t > window_start);
        } else {
            if self.entries.len() >= self.policy.max_tracked {
                self.evict_one();
            }
            if self.policy.max_tracked == 0 {
                // Tracking nothing means counting nothing.
                return FailureOutcome::Counted(1);
            }
            self.entries.insert(
                key,
                Entry {
                    failures: Vec::new(),
                    banned_until: None,
                    slot: (now_ms, seq),
                },
            );
        }
        let max_failures = self.policy.max_failures.max(1);
        let entry = self
            .entries
            .get_mut(&key)
            .expect("the entry was found or inserted above");
        // Keep at most `max_failures` times: older ones cannot matter any more.
        if entry.failures.len() >= max_failures as usize {
            entry.failures.remove(0);
        }
        entry.failures.push(now_ms);
        let count = u32::try_from(entry.failures.len()).unwrap_or(u32::MAX);
        if count >= max_failures {
            let until = now_ms.saturating_add(self.policy.ban_ms);
            entry.banned_until = Some(until);
            entry.failures.clear();
            entry.slot = (until, seq);
            self.banned.insert(entry.slot, key);
            FailureOutcome::Banned
        } else {
            entry.slot = (now_ms, seq);
            self.counting.insert(entry.slot, key);
            FailureOutcome::Counted(count)
        }
    }

    /// A successful authentication forgets the source's failures. It does not lift a ban:
    /// a banned source should not have been let through to authenticate.
    pub fn record_success(&mut self, ip: IpAddr) {
        let key = self.key(ip);
        if let Some(entry) = self.entries.get(&key)
            && entry.banned_until.is_none()
        {
            self.counting.remove(&entry.slot);
            self.entries.remove(&key);
        }
    }

    /// Forgets bans that are over and counters whose failures are all outside the window.
    /// Optional (memory is bounded anyway); the owner may call it from a timer.
    pub fn purge_expired(&mut self, now_ms: i64) {
        while let Some((&(until, _), &key)) = self.banned.first_key_value() {
            if until > now_ms {
                break;
            }
            self.banned.pop_first();
            self.entries.remove(&key);
        }
        let window_start = now_ms.saturating_sub(self.policy.window_ms);
        while let Some((&(last, _), &key)) = self.counting.first_key_value() {
            if last > window_start {
                break;
            }
            self.counting.pop_first();
            self.entries.remove(&key);
        }
    }

    /// The least valuable entry goes: the counter with the oldest last failure, or, when
    /// every tracked source is banned, the ban that ends first.
    fn evict_one(&mut self) {
        let popped = self
            .counting
            .pop_first()
            .or_else(|| self.banned.pop_first());
        if let Some((_, key)) = popped {
            self.entries.remove(&key);
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    fn key(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let prefix = u32::from(self.policy.ipv6_prefix_len.min(128));
                    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                    IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn five_failures_within_the_window_ban() {
        let mut lockout = Lockout::new(LockoutPolicy::default());
        for (i, t) in [0, 10_000, 20_000, 30_000].into_iter().enumerate() {
            assert_eq!(
                lockout.record_failure(ip(1), t),
                FailureOutcome::Counted(i as u32 + 1)
            );
            assert!(!lockout.is_banned(ip(1), t));
        }
        assert_eq!(
            lockout.record_failure(ip(1), 59_999),
            FailureOutcome::Banned
        );
        assert!(lockout.is_banned(ip(1), 59_999));
        assert!(!lockout.is_banned(ip(2), 59_999), "only that source");
        assert_eq!(
            lockout.record_failure(ip(1), 60_000),
            FailureOutcome::AlreadyBanned
        );
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_ban() {
        let mut lockout = Lockout::new(LockoutPolicy::default());
        // One failure every 15 s: at most 4 fall in any 60 s window.
        for i in 0..100 {
            let outcome = lockout.record_failure(ip(1), i * 15_000);
            assert!(
                matches!(outcome, FailureOutcome::Counted(n) if n <= 4),
                "{i}: {outcome:?}"
            );
        }
        assert!(!lockout.is_banned(ip(1), 100 * 15_000));
    }

    #[test]
    fn the_window_slides() {
        // Four early failures, then four more just after the first leaves the window: the
        // fifth within any 60 s bans, not the fifth since some fixed start.
        let mut lockout = Lockout::new(LockoutPolicy::default());
        for t in [0, 50_000, 51_000, 52_000] {
            lockout.record_failure(ip(1), t);
        }
        assert_eq!(
            lockout.record_failure(ip(1), 60_000),
            FailureOutcome::Counted(4)
        );
        assert_eq!(
            lockout.record_failure(ip(1), 61_000),
            FailureOutcome::Banned
        );
    }

    #[test]
    fn the_ban_expires() {
        let mut lockout = Lockout::new(LockoutPolicy::default());
        for t in 0..5 {
            lockout.record_failure(ip(1), t);
        }
        assert!(lockout.is_banned(ip(1), 4 + 599_999));
        assert!(!lockout.is_banned(ip(1), 4 + 600_000));
        // After the ban the count starts again from one.
        assert_eq!(
            lockout.record_failure(ip(1), 700_000),
            FailureOutcome::Counted(1)
        );
    }

    #[test]
    fn success_resets_the_count_but_not_a_ban() {
        let mut lockout = Lockout::new(LockoutPolicy::default());
        for t in 0..4 {
            lockout.record_failure(ip(1), t);
        }
        lockout.record_success(ip(1));
        assert_eq!(lockout.tracked(), 0);
        assert_eq!(
            lockout.record_failure(ip(1), 10),
            FailureOutcome::Counted(1)
        );
        for t in 11..15 {
            lockout.record_failure(ip(1), t);
        }
        lockout.record_success(ip(1));
        assert!(lockout.is_banned(ip(1), 20));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut lockout = Lockout::new(LockoutPolicy::default());
        for i in 0..5u16 {
            let addr: Ipv6Addr = format!("2001:db8:1:2::{i:x}").parse().expect("v6");
            lockout.record_failure(IpAddr::V6(addr), 0);
        }
        let neighbour: IpAddr = "2001:db8:1:2:ffff::1".parse().expect("v6");
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        assert!(lockout.is_banned(neighbour, 1));
        assert!(!lockout.is_banned(elsewhere, 1));

        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("v6");
        for t in 0..5 {
            lockout.record_failure(mapped, t);
        }
        assert!(lockout.is_banned(ip(7), 10));
    }

    #[test]
    fn memory_stays_bounded_under_a_million_sources() {
        let policy = LockoutPolicy {
            max_tracked: 10_000,
            ..LockoutPolicy::default()
        };
        let mut lockout = Lockout::new(policy);
        // A few bans first; then a flood of one failure per random source.
        for t in 0..5 {
            lockout.record_failure(ip(1), t);
        }
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..1_000_000i64 {
            // xorshift64*: cheap, deterministic sources over the whole IPv4 space.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let n = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let source = IpAddr::V4(Ipv4Addr::from((n >> 32) as u32));
            lockout.record_failure(source, 10 + i / 100);
            assert!(lockout.tracked() <= 10_000);
        }
        assert_eq!(lockout.tracked(), 10_000);
        assert_eq!(
            lockout.entries.len(),
            lockout.counting.len() + lockout.banned.len()
        );
        // Counting sources were evicted before the ban.
        assert!(lockout.is_banned(ip(1), 10_000));
    }

    #[test]
    fn purge_forgets_what_no_longer_matters() {
        let mut lockout = Lockout::new(LockoutPolicy::default());
        for t in 0..5 {
            lockout.record_failure(ip(1), t);
        }
        lockout.record_failure(ip(2), 0);
        lockout.purge_expired(60_000);
        assert_eq!(
            lockout.tracked(),
            1,
            "the counter of ip 2 is out of the window"
        );
        lockout.purge_expired(600_004);
        assert_eq!(lockout.tracked(), 0);
        assert!(lockout.counting.is_empty() && lockout.banned.is_empty());
    }

    proptest! {
        #[test]
        fn indexes_stay_consistent_and_bounded(
            ops in proptest::collection::vec((0u8..3, 0u8..40, 0i64..2_000_000), 1..400),
        ) {
            let policy = LockoutPolicy { max_tracked: 16, ..LockoutPolicy::default() };
            let mut lockout = Lockout::new(policy);
            let mut now = 0;
            for (op, source, step) in ops {
                now += step / 100;
                match op {
                    0 | 1 => {
                        let _ = lockout.record_failure(ip(source), now);
                    }
                    _ => lockout.record_success(ip(source)),
                }
                prop_assert!(lockout.tracked() <= 16);
                prop_assert_eq!(
                    lockout.entries.len(),
                    lockout.counting.len() + lockout.banned.len()
                );
                for (slot, key) in lockout.counting.iter().chain(lockout.banned.iter()) {
                    prop_assert_eq!(lockout.entries[key].slot, *slot);
                }
            }
        }
    }
}
