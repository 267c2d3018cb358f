//! The tokio side of carrier registration: a supervisor that reads the carrier trunks
//! from the store every [`POLL_INTERVAL`] (so a change made through any gateway process
//! is seen) and keeps one worker (`worker.rs`) per trunk running, told of changes through a watch
//! channel. At shutdown every worker un-registers at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::worker::{SHUTDOWN_DEADLINE, Worker};
use crate::cluster::Leases;
use crate::cluster::ownership::Kind;
use crate::crm::model::TrunkId;
use crate::sip::client::SipClient;
use crate::sip::profiles::Profiles;
use crate::store::{CarrierAccount, Store};

/// How often the trunks are read from the store.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A trunk to register with, as the worker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Account {
    pub carrier: CarrierAccount,
    pub interval_s: u32,
    /// RFC 5626 §4.4.1 CRLF keep-alive on our TCP connection to the carrier.
    pub tcp_crlf: Option<Duration>,
}

impl Account {
    /// Whether `other` registers the same binding the same way (a rename does not).
    pub fn same_registration(&self, other: &Account) -> bool {
        let (a, b) = (&self.carrier, &other.carrier);
        (
            &a.host,
            a.port,
            a.transport,
            &a.username,
            &a.password,
            self.interval_s,
        ) == (
            &b.host,
            b.port,
            b.transport,
            &b.username,
            &b.password,
            other.interval_s,
        )
    }
}

/// The accounts to register with: carrier trunks whose profile registers
/// (`registration_interval_s` above 0).
fn accounts(carriers: Vec<CarrierAccount>, profiles: &Profiles) -> HashMap<TrunkId, Account> {
    carriers
        .into_iter()
        .filter_map(|carrier| {
            let profile = profiles.get(&carrier.profile)?;
            let interval = profile.registration_interval()?;
            Some((
                carrier.id.clone(),
                Account {
                    interval_s: u32::try_from(interval.as_secs()).unwrap_or(u32::MAX),
                    tcp_crlf: profile.keepalive.tcp_crlf(),
                    carrier,
                },
            ))
        })
        .collect()
}

struct WorkerHandle {
    /// `None`: the trunk is gone or no longer registers.
    account: watch::Sender<Option<Account>>,
    task: JoinHandle<()>,
}

/// Registers every carrier trunk whose lease this node holds until `cancel`; then
/// un-registers them (each within `SHUTDOWN_DEADLINE`) and returns.
pub async fn run(
    store: Store,
    client: SipClient,
    profiles: Arc<Profiles>,
    leases: Leases,
    cancel: CancellationToken,
) {
    let mut workers: HashMap<TrunkId, WorkerHandle> = HashMap::new();
    let mut leaving: Vec<JoinHandle<()>> = Vec::new();
    let mut store_failing = false;
    loop {
        match store.carrier_accounts().await {
            Ok(carriers) => {
                if store_failing {
                    tracing::info!("carrier trunks readable again");
                    store_failing = false;
                }
                let mut wanted = accounts(carriers, &profiles);
                // Exactly one node registers each trunk; losing the lease un-registers.
                leases.want(Kind::Trunk, wanted.keys().map(TrunkId::as_str));
                wanted.retain(|id, _| leases.holds(Kind::Trunk, id.as_str()));
                for (_, worker) in workers.extract_if(|id, _| !wanted.contains_key(id)) {
                    // Deleted, or no longer registering: the worker un-registers and ends.
                    let _ = worker.account.send(None);
                    leaving.push(worker.task);
                }
                for (id, account) in wanted {
                    match workers.get(&id) {
                        Some(worker) => {
                            worker.account.send_if_modified(|current| {
                                let changed = current.as_ref() != Some(&account);
                                if changed {
                                    *current = Some(account.clone());
                                }
                                changed
                            });
                        }
                        None => {
                            let (tx, rx) = watch::channel(Some(account.clone()));
                            let worker =
                                Worker::new(store.clone(), client.clone(), account, cancel.clone());
                            workers.insert(
                                id,
                                WorkerHandle {
                                    account: tx,
                                    task: tokio::spawn(worker.run(rx)),
                                },
                            );
                        }
                    }
                }
            }
            Err(err) => {
                if !store_failing {
                    tracing::warn!(%err, "cannot read carrier trunks; registrations keep their last settings");
                    store_failing = true;
                }
            }
        }
        // A worker ends only when its trunk is removed, or if it panicked: then the next
        // poll starts a new one.
        workers.retain(|_, w| !w.task.is_finished());
        leaving.retain(|task| !task.is_finished());
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
    // Each worker sees the cancellation and un-registers, all at once; a carrier that
    // does not answer costs at most a few deadlines in all.
    let mut all: Vec<_> = workers
        .into_values()
        .map(|w| w.task)
        .chain(leaving)
        .collect();
    let _ = tokio::time::timeout(SHUTDOWN_DEADLINE * 3, async {
        for task in &mut all {
            let _ = task.await;
        }
    })
    .await;
    for task in &all {
        task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::model::Transport;

    #[test]
    fn a_rename_is_not_a_new_registration() {
        let carrier = CarrierAccount {
            id: TrunkId("t".into()),
            name: "Carrier".into(),
            profile: "generic".into(),
            host: "192.0.2.1".into(),
            port: 5060,
            transport: Transport::Udp,
            username: "u".into(),
            password: Some("p".into()),
        };
        let a = Account {
            carrier: carrier.clone(),
            interval_s: 600,
            tcp_crlf: None,
        };
        let mut b = a.clone();
        b.carrier.name = "Renamed".into();
        assert!(a.same_registration(&b));
        b.carrier.password = Some("new".into());
        assert!(!a.same_registration(&b));
        assert!(!format!("{carrier:?}").contains("\"p\""), "{carrier:?}");
    }
}
