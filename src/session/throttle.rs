//! The sign-in throttle: too many failed sign-ins for one (client address, e-mail) pair
//! within a minute lock that pair out for ten minutes, right password or not.
//!
//! Sans-I/O, like the SIP registrar's lockout: the owner asks [`LoginThrottle::check`]
//! before it looks at a password, reports a wrong one with [`LoginThrottle::failure`] and
//! a right one with [`LoginThrottle::success`]; time comes in as `now` (milliseconds).
//! Memory is bounded by `max_tracked` pairs: past it the counter with the oldest last
//! failure is forgotten, and a lock only when every tracked pair is locked.
//!
//! Counting per pair, not per address, keeps one office behind a NAT from locking its
//! colleagues out, and not per e-mail alone keeps an attacker from locking a person out
//! from anywhere. IPv6 clients count per /64 (one subscriber gets a whole /64 and could
//! otherwise rotate through it); IPv4-mapped IPv6 addresses count as IPv4.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};

use crate::crm::model::Millis;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures within `window_ms` that lock the pair.
    pub max_failures: usize,
    pub window_ms: Millis,
    pub lock_ms: Millis,
    /// Pairs remembered at most.
    pub max_tracked: usize,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window_ms: 60_000,
            lock_ms: 600_000,
            max_tracked: 10_000,
        }
    }
}

/// What is being tried from an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// Signing in as this e-mail (lower-cased: `Anna@x` and `anna@x` are one pair).
    Email(String),
    /// First-start setup with the admin token.
    Setup,
}

/// The pair failures are counted for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThrottleKey {
    ip: IpAddr,
    subject: Subject,
}

impl ThrottleKey {
    /// Sign-in as `email` from `ip`.
    pub fn sign_in(ip: IpAddr, email: &str) -> Self {
        Self {
            ip: group(ip),
            subject: Subject::Email(email.trim().to_lowercase()),
        }
    }

    /// First-start setup from `ip`.
    pub fn setup(ip: IpAddr) -> Self {
        Self {
            ip: group(ip),
            subject: Subject::Setup,
        }
    }
}

/// The address failures count for: IPv4 as is, IPv6 by its /64.
fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

/// May the pair try now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Allowed,
    /// Locked out; the lock ends in this many seconds (rounded up).
    Locked {
        retry_after_s: u64,
    },
}

/// What a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted: this many failures within the window.
    Counted(usize),
    /// This failure locked the pair (log it once).
    Locked,
}

/// Position in an eviction order: (time, tie-breaker).
type Slot = (Millis, u64);

#[derive(Debug)]
struct Entry {
    /// Times of the failures still in the window, oldest first, at most `max_failures`.
    failures: Vec<Millis>,
    locked_until: Option<Millis>,
    /// Key in `counting` (by last failure) or, when locked, in `locked` (by lock end).
    slot: Slot,
}

/// Failed sign-ins per pair.
#[derive(Debug)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    entries: HashMap<ThrottleKey, Entry>,
    /// Counting pairs by last failure: forgotten first, oldest first.
    counting: BTreeMap<Slot, ThrottleKey>,
    /// Locked pairs by end of lock: forgotten only when no counting pair is left.
    locked: BTreeMap<Slot, ThrottleKey>,
    next_seq: u64,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(ThrottlePolicy::default())
    }
}

impl LoginThrottle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            entries: HashMap::new(),
            counting: BTreeMap::new(),
            locked: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Pairs remembered now.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    /// Whether the pair may try a password at `now`.
    pub fn check(&mut self, key: &ThrottleKey, now: Millis) -> Attempt {
        self.purge_expired(now);
        match self.entries.get(key).and_then(|e| e.locked_until) {
            Some(until) if now < until => Attempt::Locked {
                retry_after_s: u64::try_from((until - now + 999) / 1000).unwrap_or(0),
            },
            _ => Attempt::Allowed,
        }
    }

    /// A wrong password (or token) for the pair at `now`.
    pub fn failure(&mut self, key: &ThrottleKey, now: Millis) -> Failure {
        self.purge_expired(now);
        let window_start = now.saturating_sub(self.policy.window_ms);
        let seq = self.seq();
        if let Some(entry) = self.entries.get_mut(key) {
            if entry.locked_until.is_some_and(|until| now < until) {
                // Checked before the password, so not expected; the lock is not extended.
                return Failure::Locked;
            }
            self.counting.remove(&entry.slot);
            self.locked.remove(&entry.slot);
            entry.locked_until = None;
            entry.failures.retain(|&t| t > window_start);
        } else {
            if self.policy.max_tracked == 0 {
                return Failure::Counted(1);
            }
            if self.entries.len() >= self.policy.max_tracked {
                self.evict_one();
            }
            self.entries.insert(
                key.clone(),
                Entry {
                    failures: Vec::new(),
                    locked_until: None,
                    slot: (now, seq),
                },
            );
        }
        let max = self.policy.max_failures.max(1);
        let entry = self
            .entries
            .get_mut(key)
            .expect("the entry was found or inserted above");
        if entry.failures.len() >= max {
            entry.failures.remove(0);
        }
        entry.failures.push(now);
        if entry.failures.len() >= max {
            let until = now.saturating_add(self.policy.lock_ms);
            entry.locked_until = Some(until);
            entry.failures.clear();
            entry.slot = (until, seq);
            self.locked.insert(entry.slot, key.clone());
            Failure::Locked
        } else {
            entry.slot = (now, seq);
            self.counting.insert(entry.slot, key.clone());
            Failure::Counted(entry.failures.len())
        }
    }

    /// The right password forgets the pair's failures. It does not lift a lock: a locked
    /// pair is not let through to try one.
    pub fn success(&mut self, key: &ThrottleKey) {
        if let Some(entry) = self.entries.get(key)
            && entry.locked_until.is_none()
        {
            self.counting.remove(&entry.slot);
            self.entries.remove(key);
        }
    }

    /// Forgets locks that are over and counters whose failures all left the window.
    fn purge_expired(&mut self, now: Millis) {
        while let Some((&(until, _), key)) = self.locked.first_key_value() {
            if until > now {
                break;
            }
            let key = key.clone();
            self.locked.pop_first();
            self.entries.remove(&key);
        }
        let window_start = now.saturating_sub(self.policy.window_ms);
        while let Some((&(last, _), key)) = self.counting.first_key_value() {
            if last > window_start {
                break;
            }
            let key = key.clone();
            self.counting.pop_first();
            self.entries.remove(&key);
        }
    }

    /// The least valuable entry goes: the counter with the oldest last failure, or, when
    /// every tracked pair is locked, the lock that ends first.
    fn evict_one(&mut self) {
        if let Some((_, key)) = self
            .counting
            .pop_first()
            .or_else(|| self.locked.pop_first())
        {
            self.entries.remove(&key);
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_800_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn anna() -> ThrottleKey {
        ThrottleKey::sign_in(ip("192.0.2.7"), "anna@example.com")
    }

    #[test]
    fn a5_five_failures_within_a_minute_lock_the_pair_for_ten_minutes() {
        let mut t = LoginThrottle::default();
        for n in 1..5 {
            assert_eq!(t.check(&anna(), T0 + n), Attempt::Allowed);
            assert_eq!(t.failure(&anna(), T0 + n), Failure::Counted(n as usize));
        }
        assert_eq!(t.failure(&anna(), T0 + 5), Failure::Locked);
        assert_eq!(
            t.check(&anna(), T0 + 6),
            Attempt::Locked { retry_after_s: 600 }
        );
        // A right password during the lock is not even tried; success lifts nothing.
        t.success(&anna());
        assert_eq!(
            t.check(&anna(), T0 + 5 + 599_001),
            Attempt::Locked { retry_after_s: 1 }
        );
        assert_eq!(t.check(&anna(), T0 + 5 + 600_000), Attempt::Allowed);
        assert_eq!(t.tracked(), 0, "the lock is forgotten once over");
    }

    #[test]
    fn failures_spread_over_more_than_a_minute_do_not_lock() {
        let mut t = LoginThrottle::default();
        for n in 0..20 {
            let now = T0 + n * 20_000;
            assert_eq!(t.check(&anna(), now), Attempt::Allowed);
            assert!(matches!(t.failure(&anna(), now), Failure::Counted(c) if c <= 3));
        }
    }

    #[test]
    fn success_forgets_the_failures() {
        let mut t = LoginThrottle::default();
        for n in 0..4 {
            t.failure(&anna(), T0 + n);
        }
        t.success(&anna());
        assert_eq!(t.failure(&anna(), T0 + 10), Failure::Counted(1));
    }

    #[test]
    fn a5_pairs_are_counted_apart_by_address_e_mail_and_setup() {
        let mut t = LoginThrottle::default();
        for n in 0..5 {
            t.failure(&anna(), T0 + n);
        }
        assert!(matches!(t.check(&anna(), T0 + 10), Attempt::Locked { .. }));
        let same_pair = ThrottleKey::sign_in(ip("192.0.2.7"), " Anna@Example.COM ");
        assert!(matches!(
            t.check(&same_pair, T0 + 10),
            Attempt::Locked { .. }
        ));
        let other_ip = ThrottleKey::sign_in(ip("192.0.2.8"), "anna@example.com");
        let other_email = ThrottleKey::sign_in(ip("192.0.2.7"), "ben@example.com");
        let setup = ThrottleKey::setup(ip("192.0.2.7"));
        for key in [other_ip, other_email, setup] {
            assert_eq!(t.check(&key, T0 + 10), Attempt::Allowed, "{key:?}");
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut t = LoginThrottle::default();
        for n in 0..5 {
            let addr = ip(&format!("2001:db8:1:2::{n}"));
            t.failure(&ThrottleKey::sign_in(addr, "a@x.test"), T0 + n);
        }
        let neighbour = ThrottleKey::sign_in(ip("2001:db8:1:2:ffff::1"), "a@x.test");
        assert!(matches!(
            t.check(&neighbour, T0 + 9),
            Attempt::Locked { .. }
        ));
        let next_net = ThrottleKey::sign_in(ip("2001:db8:1:3::1"), "a@x.test");
        assert_eq!(t.check(&next_net, T0 + 9), Attempt::Allowed);
        assert_eq!(
            ThrottleKey::setup(ip("::ffff:192.0.2.7")),
            ThrottleKey::setup(ip("192.0.2.7"))
        );
    }

    #[test]
    fn memory_is_bounded_and_locks_are_forgotten_last() {
        let mut t = LoginThrottle::new(ThrottlePolicy {
            max_tracked: 3,
            ..ThrottlePolicy::default()
        });
        for n in 0..5 {
            t.failure(&anna(), T0 + n);
        }
        for n in 0..100 {
            let key = ThrottleKey::sign_in(ip("198.51.100.1"), &format!("u{n}@x.test"));
            t.failure(&key, T0 + 100 + n);
            assert!(t.tracked() <= 3);
        }
        assert!(
            matches!(t.check(&anna(), T0 + 1_000), Attempt::Locked { .. }),
            "a flood of other pairs does not lift a lock"
        );
    }
}
