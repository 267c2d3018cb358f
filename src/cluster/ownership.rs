//! Pure decisions of the leases: what a lease is called (a mailbox's poller, a carrier
//! registration, the keep-alives of all UDP bindings), how long it lasts, which leases
//! a node holds after a round of renewals, when a lease counts as lost, and how often a
//! node reports itself. No I/O and no clock: the lease keeper (`leases`) passes `now` in.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use crate::crm::model::Millis;

/// How long an acquired or renewed lease lasts without renewal.
pub const LEASE_TTL_MS: Millis = 15_000;
/// How often the holder renews (three tries before the lease runs out).
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A holder that could not renew stops its work this long before the lease runs out, so
/// the next holder (which may take it only once it ran out) never overlaps with it.
pub const STOP_BEFORE_EXPIRY_MS: Millis = 3_000;
/// How often a node tells the database it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// The kinds of work that must run on exactly one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A mailbox's IMAP poller.
    Mailbox,
    /// A carrier trunk's outbound registration.
    Trunk,
    /// The NAT keep-alive OPTIONS of all UDP bindings (one lease, [`KEEPALIVE_ALL`]): one
    /// node pings each phone, not every node.
    Keepalive,
}

/// The id of the one keep-alive lease: `keepalive:udp`.
pub const KEEPALIVE_ALL: &str = "udp";

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mailbox => "mailbox",
            Kind::Trunk => "trunk",
            Kind::Keepalive => "keepalive",
        }
    }
}

/// The name of one lease: `mailbox:<id>` or `trunk:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource(String);

impl Resource {
    pub fn new(kind: Kind, id: &str) -> Self {
        Self(format!("{}:{id}", kind.as_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How one acquire-or-renew statement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// This node holds the lease until `expires_at`.
    Won { expires_at: Millis },
    /// Another node holds it and it has not run out.
    Taken,
    /// The database did not answer: nobody knows who holds it now.
    Failed,
}

/// When a lease acquired or renewed at `now` runs out.
pub fn expiry(now: Millis) -> Millis {
    now + LEASE_TTL_MS
}

/// Whether a lease this node last held until `expires_at` still lets it work at `now`.
pub fn still_ours(expires_at: Millis, now: Millis) -> bool {
    now + STOP_BEFORE_EXPIRY_MS < expires_at
}

/// The leases held after a round: won ones until their new expiry; one whose renewal
/// failed only while its last expiry still covers it; taken or no longer wanted ones not.
pub fn after_round(
    previous: &BTreeMap<Resource, Millis>,
    attempts: &[(Resource, Attempt)],
    now: Millis,
) -> BTreeMap<Resource, Millis> {
    attempts
        .iter()
        .filter_map(|(resource, attempt)| match attempt {
            Attempt::Won { expires_at } => Some((resource.clone(), *expires_at)),
            Attempt::Taken => None,
            Attempt::Failed => previous
                .get(resource)
                .filter(|until| still_ours(**until, now))
                .map(|until| (resource.clone(), *until)),
        })
        .collect()
}

/// Leases held that are no longer wanted (the mailbox or trunk is gone): released.
pub fn unwanted(held: &BTreeMap<Resource, Millis>, wanted: &BTreeSet<Resource>) -> Vec<Resource> {
    held.keys()
        .filter(|r| !wanted.contains(*r))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(id: &str) -> Resource {
        Resource::new(Kind::Mailbox, id)
    }

    #[test]
    fn resources_are_named_by_kind_and_id() {
        assert_eq!(mailbox("m1").as_str(), "mailbox:m1");
        assert_eq!(Resource::new(Kind::Trunk, "t1").to_string(), "trunk:t1");
        assert_eq!(
            Resource::new(Kind::Keepalive, KEEPALIVE_ALL).as_str(),
            "keepalive:udp"
        );
    }

    #[test]
    fn a_lease_is_renewed_several_times_before_it_runs_out() {
        let renew = Millis::try_from(RENEW_EVERY.as_millis()).unwrap();
        assert!(renew * 2 + STOP_BEFORE_EXPIRY_MS < LEASE_TTL_MS);
        let until = expiry(1_000);
        assert!(still_ours(until, 1_000 + renew * 2));
        assert!(!still_ours(until, until - STOP_BEFORE_EXPIRY_MS));
        assert!(!still_ours(until, until + 1));
    }

    #[test]
    fn a_round_keeps_won_leases_and_drops_taken_ones() {
        let previous = BTreeMap::from([(mailbox("a"), 10_000), (mailbox("b"), 10_000)]);
        let held = after_round(
            &previous,
            &[
                (mailbox("a"), Attempt::Won { expires_at: 20_000 }),
                (mailbox("b"), Attempt::Taken),
                (mailbox("c"), Attempt::Won { expires_at: 20_000 }),
            ],
            5_000,
        );
        assert_eq!(
            held,
            BTreeMap::from([(mailbox("a"), 20_000), (mailbox("c"), 20_000)])
        );
    }

    #[test]
    fn a_failed_renewal_keeps_the_lease_only_until_shortly_before_it_runs_out() {
        let previous = BTreeMap::from([(mailbox("a"), 10_000)]);
        let failed = [(mailbox("a"), Attempt::Failed)];
        assert_eq!(
            after_round(&previous, &failed, 5_000),
            BTreeMap::from([(mailbox("a"), 10_000)])
        );
        assert!(after_round(&previous, &failed, 10_000 - STOP_BEFORE_EXPIRY_MS).is_empty());
        assert!(
            after_round(&BTreeMap::new(), &failed, 0).is_empty(),
            "a failed first try holds nothing"
        );
    }

    #[test]
    fn leases_no_longer_wanted_are_released() {
        let held = BTreeMap::from([(mailbox("a"), 1), (mailbox("gone"), 1)]);
        let wanted = BTreeSet::from([mailbox("a"), mailbox("new")]);
        assert_eq!(unwanted(&held, &wanted), vec![mailbox("gone")]);
    }
}
