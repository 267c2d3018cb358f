//! The leases of this node: the work that must run on exactly one node (a mailbox's
//! poller, a carrier registration) runs here only while this node holds its lease in the
//! database. The supervisors of that work say what they would run ([`Leases::want`]) and
//! run what is held ([`Leases::holds`], [`Leases::watch`]); the keeper ([`keep`])
//! acquires and renews those leases, releases the rest, and releases all on shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::NodeId;
use super::ownership::{self, Attempt, Kind, RENEW_EVERY, Resource};
use crate::store::{Store, now_ms};

/// How long one round of renewals may take before the leases it did not reach count as
/// failed: well inside the margin a holder keeps before its leases run out.
const ROUND_LIMIT: Duration = Duration::from_secs(2);

/// This node's leases, shared by the keeper and the supervisors; cheap to clone.
#[derive(Clone)]
pub struct Leases {
    inner: Arc<Inner>,
}

struct Inner {
    node: NodeId,
    wanted: Mutex<BTreeMap<Kind, BTreeSet<Resource>>>,
    wanted_changed: Notify,
    held: watch::Sender<BTreeSet<Resource>>,
}

impl Leases {
    pub fn new(node: NodeId) -> Self {
        Self {
            inner: Arc::new(Inner {
                node,
                wanted: Mutex::default(),
                wanted_changed: Notify::new(),
                held: watch::channel(BTreeSet::new()).0,
            }),
        }
    }

    /// The work of `kind` this node would run if it held the leases: replaces what was
    /// said before; a change wakes the keeper at once.
    pub fn want<'a>(&self, kind: Kind, ids: impl IntoIterator<Item = &'a str>) {
        let resources: BTreeSet<Resource> =
            ids.into_iter().map(|id| Resource::new(kind, id)).collect();
        let mut wanted = self.inner.wanted.lock().unwrap_or_else(|e| e.into_inner());
        if wanted.get(&kind) != Some(&resources) {
            wanted.insert(kind, resources);
            self.inner.wanted_changed.notify_one();
        }
    }

    /// Whether this node holds the lease of `kind` `id` now.
    pub fn holds(&self, kind: Kind, id: &str) -> bool {
        self.inner.held.borrow().contains(&Resource::new(kind, id))
    }

    /// Changes whenever the leases held change.
    pub fn watch(&self) -> watch::Receiver<BTreeSet<Resource>> {
        self.inner.held.subscribe()
    }

    fn wanted(&self) -> BTreeSet<Resource> {
        let wanted = self.inner.wanted.lock().unwrap_or_else(|e| e.into_inner());
        wanted.values().flatten().cloned().collect()
    }

    fn publish(&self, held: &BTreeMap<Resource, i64>) {
        let now: BTreeSet<Resource> = held.keys().cloned().collect();
        self.inner.held.send_if_modified(|current| {
            let changed = *current != now;
            if changed {
                *current = now;
            }
            changed
        });
    }
}

/// Keeps the wanted leases until `cancel`: tries them every [`RENEW_EVERY`] and as soon as
/// the wanted ones change; then releases every lease held.
pub async fn keep(store: Store, leases: Leases, cancel: CancellationToken) {
    let node = leases.inner.node.clone();
    let mut held: BTreeMap<Resource, i64> = BTreeMap::new();
    loop {
        let wanted = leases.wanted();
        for resource in ownership::unwanted(&held, &wanted) {
            held.remove(&resource);
            if let Err(err) = store.release_lease(resource.as_str(), node.as_str()).await {
                tracing::warn!(%resource, %err, "cannot release a lease; it runs out by itself");
            }
        }
        leases.publish(&held);
        let attempts = round(&store, &node, &wanted).await;
        let before = held.clone();
        held = ownership::after_round(&held, &attempts, now_ms());
        for resource in held.keys().filter(|r| !before.contains_key(*r)) {
            tracing::info!(%resource, "lease taken");
        }
        for resource in before.keys().filter(|r| !held.contains_key(*r)) {
            tracing::info!(%resource, "lease lost");
        }
        leases.publish(&held);
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(RENEW_EVERY) => {}
            () = leases.inner.wanted_changed.notified() => {}
        }
    }
    let releasing = std::mem::take(&mut held);
    leases.publish(&held);
    for resource in releasing.keys() {
        let _ = store.release_lease(resource.as_str(), node.as_str()).await;
    }
}

/// One acquire-or-renew statement per wanted lease, within [`ROUND_LIMIT`] in all.
async fn round(
    store: &Store,
    node: &NodeId,
    wanted: &BTreeSet<Resource>,
) -> Vec<(Resource, Attempt)> {
    let mut attempts: Vec<(Resource, Attempt)> = wanted
        .iter()
        .map(|r| (r.clone(), Attempt::Failed))
        .collect();
    let _ = tokio::time::timeout(ROUND_LIMIT, async {
        for (resource, attempt) in &mut attempts {
            let now = now_ms();
            let expires_at = ownership::expiry(now);
            *attempt = match store
                .acquire_lease(resource.as_str(), node.as_str(), now, expires_at)
                .await
            {
                Ok(true) => Attempt::Won { expires_at },
                Ok(false) => Attempt::Taken,
                Err(err) => {
                    tracing::warn!(%resource, %err, "cannot renew a lease");
                    Attempt::Failed
                }
            };
        }
    })
    .await;
    attempts
}
