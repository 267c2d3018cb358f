//! NAT keep-alive for bindings registered over UDP: an OPTIONS to each live binding's
//! source address (the NAT mapping its REGISTER came from) every interval of its profile
//! (`keepalive.udp_options_s`: user bindings use the `generic` profile, a trunk's bindings
//! the trunk's), so the NAT keeps the mapping open and calls can reach the device.
//!
//! This file is the schedule, pure: which binding to ping when, and which ones are dead.
//! [`task`] sends the pings and drops dead bindings.
//!
//! - Pings are spread over the interval: a binding's first ping falls at a point of its
//!   interval fixed by a hash of the binding, so thousands of phones that registered
//!   together are not pinged together; then one ping per interval, never two.
//! - Any response, even 404 or 405, means the device is there. A binding that answered
//!   none of [`MAX_MISSED`] pings in a row is dropped: calls would only ring into the
//!   void, and a device that comes back registers again. A REGISTER from the device in
//!   the meantime clears the count: a new CSeq, or a new Call-ID with any CSeq (a phone
//!   that rebooted starts a new Call-ID and may well count its CSeq from where it did
//!   before, RFC 3261 §10.2.4 only asks for a higher one within one Call-ID).

pub mod task;

use std::collections::{HashMap, HashSet};

use crate::crm::model::Millis;

/// Pings in a row without any response after which a binding is dropped.
pub const MAX_MISSED: u32 = 3;

/// One binding, as the location service keys it, plus where it is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BindingKey {
    pub aor: String,
    pub contact: String,
    /// `ip:port` the REGISTER came from.
    pub source: String,
}

/// A binding to keep alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub key: BindingKey,
    pub interval_ms: Millis,
    /// The CSeq of the REGISTER that made the binding: a new one is proof of life.
    pub generation: i64,
    /// The Call-ID of that REGISTER: a new one (a device that restarted) is too, whatever
    /// its CSeq.
    pub registration: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    next_at: Millis,
    interval_ms: Millis,
    generation: i64,
    registration: String,
    in_flight: bool,
    missed: u32,
}

impl Entry {
    /// Whether `target` shows a REGISTER the entry has not seen: a new CSeq, or a new
    /// Call-ID with any CSeq.
    fn registered_again(&self, target: &Target) -> bool {
        self.generation != target.generation || self.registration != target.registration
    }
}

/// The keep-alive schedule of every UDP binding.
#[derive(Debug, Default)]
pub struct Scheduler {
    entries: HashMap<BindingKey, Entry>,
}

impl Scheduler {
    /// The bindings to ping now. `targets` are all live UDP bindings with their interval;
    /// a binding no longer listed (expired, removed, re-registered from elsewhere) is
    /// forgotten.
    pub fn due(&mut self, targets: &[Target], now: Millis) -> Vec<BindingKey> {
        let live: HashSet<&BindingKey> = targets.iter().map(|t| &t.key).collect();
        self.entries.retain(|key, _| live.contains(key));
        let mut due = Vec::new();
        for target in targets {
            let interval = target.interval_ms.max(1);
            let entry = self
                .entries
                .entry(target.key.clone())
                .or_insert_with(|| Entry {
                    next_at: now + spread(&target.key, interval),
                    interval_ms: interval,
                    generation: target.generation,
                    registration: target.registration.clone(),
                    in_flight: false,
                    missed: 0,
                });
            if entry.registered_again(target) {
                entry.generation = target.generation;
                entry.registration.clone_from(&target.registration);
                entry.missed = 0;
            }
            if entry.interval_ms != interval {
                entry.interval_ms = interval;
                entry.next_at = entry.next_at.min(now + interval);
            }
            if entry.next_at > now {
                continue;
            }
            // A ping still out when the next is due (its deadline is at most the
            // interval, so only under heavy load) is not doubled.
            if !entry.in_flight {
                entry.in_flight = true;
                due.push(target.key.clone());
            }
            entry.next_at += interval;
            if entry.next_at <= now {
                // Fell behind (a pause): resume from now rather than burst.
                entry.next_at = now + interval;
            }
        }
        due
    }

    /// The result of a ping: `alive` when any response came.
    pub fn on_result(&mut self, key: &BindingKey, alive: bool) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.in_flight = false;
            entry.missed = if alive { 0 } else { entry.missed + 1 };
        }
    }

    /// A ping that was due but not sent (too many in flight): neither alive nor missed.
    pub fn on_not_sent(&mut self, key: &BindingKey) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.in_flight = false;
        }
    }

    /// Bindings that missed [`MAX_MISSED`] pings in a row, with the generation they were
    /// seen at (drop only if it is still that one). Forgotten here.
    pub fn take_dead(&mut self) -> Vec<Dead> {
        let dead: Vec<Dead> = self
            .entries
            .iter()
            .filter(|(_, e)| e.missed >= MAX_MISSED)
            .map(|(k, e)| Dead {
                key: k.clone(),
                generation: e.generation,
                registration: e.registration.clone(),
            })
            .collect();
        for Dead { key, .. } in &dead {
            self.entries.remove(key);
        }
        dead
    }
}

/// A binding that missed too many pings, as it was when last seen: it is dropped only if
/// its phone has not registered it again since (a new CSeq, or a new Call-ID after a
/// reboot, whatever its CSeq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dead {
    pub key: BindingKey,
    /// The CSeq of the REGISTER that wrote it.
    pub generation: i64,
    /// The Call-ID of that REGISTER.
    pub registration: String,
}

/// Where in its interval a binding is pinged: FNV-1a of the key, stable across runs.
fn spread(key: &BindingKey, interval_ms: Millis) -> Millis {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [&key.aor, &key.contact, &key.source] {
        for b in part.bytes().chain([0]) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let interval = u64::try_from(interval_ms).unwrap_or(1).max(1);
    Millis::try_from(hash % interval).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    fn target(n: usize, interval_ms: Millis) -> Target {
        Target {
            key: BindingKey {
                aor: format!("{}", 100 + n),
                contact: format!("sip:{}@10.0.0.{}:5060", 100 + n, n % 250),
                source: format!("192.0.2.1:{}", 10_000 + n),
            },
            interval_ms,
            generation: 1,
            registration: format!("boot-1-{n}"),
        }
    }

    /// Runs the schedule second by second; every ping answered.
    fn pings_per_second(targets: &[Target], seconds: i64) -> Vec<Vec<BindingKey>> {
        let mut s = Scheduler::default();
        (0..seconds)
            .map(|t| {
                let due = s.due(targets, NOW + t * 1000);
                for key in &due {
                    s.on_result(key, true);
                }
                due
            })
            .collect()
    }

    #[test]
    fn every_binding_is_pinged_once_per_interval_spread_over_it() {
        let targets: Vec<Target> = (0..3000).map(|n| target(n, 30_000)).collect();
        let seconds = pings_per_second(&targets, 90);
        for (n, t) in targets.iter().enumerate() {
            let at: Vec<usize> = seconds
                .iter()
                .enumerate()
                .filter(|(_, due)| due.contains(&t.key))
                .map(|(s, _)| s)
                .collect();
            // First ping within the first interval (at the tick after its point in it),
            // then exactly every 30 s.
            assert!(at.len() >= 2 && at[0] <= 30, "binding {n}: {at:?}");
            assert!(at.windows(2).all(|w| w[1] - w[0] == 30), "{at:?}");
        }
        // Spread: no second of the interval carries more than a few times its share.
        let busiest = seconds[..30].iter().map(Vec::len).max().unwrap();
        assert!(busiest < 3 * 100, "{busiest}");
    }

    #[test]
    fn a_binding_that_never_answers_is_dead_after_three_intervals() {
        let targets = [target(1, 5_000)];
        let mut s = Scheduler::default();
        let mut misses = 0;
        for t in 0..40 {
            let now = NOW + t * 1000;
            for key in s.due(&targets, now) {
                s.on_result(&key, false);
                misses += 1;
            }
            let dead = s.take_dead();
            if misses < MAX_MISSED {
                assert!(dead.is_empty());
            } else {
                assert_eq!(
                    dead,
                    vec![Dead {
                        key: targets[0].key.clone(),
                        generation: 1,
                        registration: targets[0].registration.clone(),
                    }]
                );
                return;
            }
        }
        panic!("never declared dead");
    }

    /// Advances the clock second by second until a ping is due; returns it.
    fn next_ping(s: &mut Scheduler, targets: &[Target], t: &mut i64) -> BindingKey {
        loop {
            let due = s.due(targets, NOW + *t * 1000);
            *t += 1;
            if let Some(key) = due.into_iter().next() {
                return key;
            }
        }
    }

    #[test]
    fn any_answer_or_a_new_register_clears_the_misses() {
        let mut targets = [target(1, 5_000)];
        let mut s = Scheduler::default();
        let mut t = 0;
        for alive in [false, false, true, false, false] {
            let key = next_ping(&mut s, &targets, &mut t);
            s.on_result(&key, alive);
        }
        assert!(s.take_dead().is_empty(), "an answer in between");
        // A third miss would make three in a row, but the device registered again.
        targets[0].generation = 2;
        let key = next_ping(&mut s, &targets, &mut t);
        s.on_result(&key, false);
        assert!(s.take_dead().is_empty());
        for _ in 0..2 {
            let key = next_ping(&mut s, &targets, &mut t);
            s.on_result(&key, false);
        }
        let dead = s.take_dead();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!((&dead[0].key, dead[0].generation), (&targets[0].key, 2));
        assert_eq!(dead[0].registration, targets[0].registration);
    }

    /// Which re-registrations clear the misses: a new CSeq, or a new Call-ID even with the
    /// CSeq of before (a phone that rebooted); the same REGISTER seen again does not.
    #[test]
    fn a_rebooted_phone_with_a_new_call_id_and_its_old_cseq_starts_afresh() {
        let cases = [
            (1, "boot-1-1", false),
            (2, "boot-1-1", true),
            (1, "boot-2-1", true),
            (2, "boot-2-1", true),
        ];
        for (generation, registration, clears) in cases {
            let mut targets = [target(1, 5_000)];
            let mut s = Scheduler::default();
            let mut t = 0;
            for _ in 0..2 {
                let key = next_ping(&mut s, &targets, &mut t);
                s.on_result(&key, false);
            }
            targets[0].generation = generation;
            targets[0].registration = registration.to_owned();
            let key = next_ping(&mut s, &targets, &mut t);
            s.on_result(&key, false);
            let dead = !s.take_dead().is_empty();
            assert_eq!(
                dead, !clears,
                "CSeq {generation}, Call-ID {registration}: dead after a third miss"
            );
        }
    }

    #[test]
    fn a_ping_still_out_is_not_doubled_and_gone_bindings_are_forgotten() {
        let targets = [target(1, 5_000)];
        let mut s = Scheduler::default();
        let mut sent = 0;
        for t in 0..20 {
            sent += s.due(&targets, NOW + t * 1000).len();
        }
        assert_eq!(sent, 1, "never answered, never timed out: one ping");
        assert!(s.due(&[], NOW + 30_000).is_empty());
        assert!(s.entries.is_empty());
    }

    #[test]
    fn after_a_pause_the_schedule_resumes_without_a_burst() {
        let targets = [target(1, 5_000)];
        let mut s = Scheduler::default();
        let mut total = 0;
        for t in [0, 10, 60, 61, 62, 63, 64, 65] {
            for key in s.due(&targets, NOW + t * 1000) {
                s.on_result(&key, true);
                total += 1;
            }
        }
        assert!(total <= 3, "{total}");
    }
}
