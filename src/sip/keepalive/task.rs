//! The tokio side of NAT keep-alive: every `TICK` asks the [`Scheduler`] which
//! bindings are due and sends each an OPTIONS in its own task (never one after another),
//! reads the live UDP bindings from the store every `RELOAD`, and drops the bindings
//! the scheduler declares dead.
//!
//! Several nodes on one PostgreSQL share the bindings: only the node holding the
//! `keepalive:udp` lease pings (and drops dead bindings), so a phone gets one OPTIONS per
//! interval whatever the number of nodes; another node takes over when the holder dies.
//! The embedded single node (SQLite) pings without a lease.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::sip::{Header, Method, Transport};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{BindingKey, Scheduler, Target};
use crate::cluster::Leases;
use crate::cluster::ownership::{KEEPALIVE_ALL, Kind};
use crate::crm::model::{Millis, TrunkId};
use crate::sip::client::{ClientError, Outgoing, SipClient, Target as SendTarget};
use crate::sip::profiles::Profiles;
use crate::store::{RegistrationRecord, Store, now_ms};

/// How often due pings are sent: the resolution of the spread.
const TICK: Duration = Duration::from_secs(1);
/// How often the bindings are read from the store. A new binding needs no ping at once:
/// its REGISTER just opened the NAT mapping.
const RELOAD: Duration = Duration::from_secs(5);
/// A ping unanswered this long counts as missed (UDP retransmits it meanwhile, RFC 3261
/// §17.1.2.2). Within an interval it is cut to four fifths of it, so its result is in
/// before the next ping is due (a ping still out when the next is due skips that one).
const PING_DEADLINE: Duration = Duration::from_secs(10);
/// Pings out at once; more wait for the next tick (bounded memory and sockets).
const MAX_IN_FLIGHT: usize = 512;
/// The profile of bindings that agents' phones made.
const USER_PROFILE: &str = "generic";

/// Where a due ping goes.
#[derive(Debug, Clone)]
struct Destination {
    addr: SocketAddr,
    contact: String,
    /// The Path the binding registered through: behind the proxy the ping follows it to
    /// the phone's NAT address.
    path: Option<String>,
    deadline: Duration,
}

/// Keeps NAT mappings of UDP bindings open until `cancel`; with `leases` (nodes sharing
/// the database) only while this node holds the keep-alive lease.
pub async fn run(
    store: Store,
    client: SipClient,
    profiles: Arc<Profiles>,
    leases: Option<Leases>,
    cancel: CancellationToken,
) {
    if let Some(leases) = &leases {
        leases.want(Kind::Keepalive, [KEEPALIVE_ALL]);
    }
    let mut pinging = false;
    let mut scheduler = Scheduler::default();
    let mut targets: Vec<Target> = Vec::new();
    let mut destinations: HashMap<BindingKey, Destination> = HashMap::new();
    let mut loaded_at: Option<Millis> = None;
    let mut store_failing = false;
    let (results, mut answers) = mpsc::channel::<(BindingKey, Option<bool>)>(MAX_IN_FLIGHT);
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ours = leases
            .as_ref()
            .is_none_or(|l| l.holds(Kind::Keepalive, KEEPALIVE_ALL));
        if ours != pinging {
            pinging = ours;
            if leases.is_some() {
                tracing::info!(pinging, "keep-alives of UDP bindings on this node");
            }
            // A fresh schedule either way: a node taking over spreads its first pings, and
            // one handing over keeps no counts of missed pings the next holder cannot see.
            scheduler = Scheduler::default();
            loaded_at = None;
        }
        if !pinging {
            while answers.try_recv().is_ok() {}
            continue;
        }
        while let Ok((key, alive)) = answers.try_recv() {
            match alive {
                Some(alive) => scheduler.on_result(&key, alive),
                None => scheduler.on_not_sent(&key),
            }
        }
        let now = now_ms();
        let reload_ms = Millis::try_from(RELOAD.as_millis()).unwrap_or(Millis::MAX);
        if loaded_at.is_none_or(|at| now - at >= reload_ms) {
            match load(&store, &profiles, now).await {
                Ok(loaded) => {
                    if store_failing {
                        tracing::info!("bindings readable again; keep-alives resume");
                        store_failing = false;
                    }
                    (targets, destinations) = loaded;
                    loaded_at = Some(now);
                }
                Err(err) => {
                    if !store_failing {
                        tracing::warn!(%err, "cannot read bindings for keep-alives");
                        store_failing = true;
                    }
                }
            }
        }
        for key in scheduler.due(&targets, now) {
            let (Some(destination), Ok(permit)) =
                (destinations.get(&key), permits.clone().try_acquire_owned())
            else {
                scheduler.on_not_sent(&key);
                continue;
            };
            let (client, destination, results) =
                (client.clone(), destination.clone(), results.clone());
            tokio::spawn(async move {
                let alive = ping(&client, &destination).await;
                if let Some(alive) = alive {
                    metrics::counter!("leadline_sip_keepalive_pings_total",
                        "result" => if alive { "answered" } else { "unanswered" })
                    .increment(1);
                }
                let _ = results.send((key, alive)).await;
                drop(permit);
            });
        }
        for super::Dead {
            key,
            generation,
            registration,
        } in scheduler.take_dead()
        {
            match store
                .drop_binding_if_unchanged(
                    &key.aor,
                    &key.contact,
                    &key.source,
                    generation,
                    &registration,
                )
                .await
            {
                Ok(true) => {
                    metrics::counter!("leadline_sip_keepalive_dropped_total").increment(1);
                    tracing::info!(aor = %key.aor, contact = %key.contact, source = %key.source,
                        missed = super::MAX_MISSED,
                        "dropped a UDP binding that answered no keep-alive");
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(%err, aor = %key.aor, "cannot drop a dead binding"),
            }
        }
    }
}

/// The live UDP bindings with their keep-alive intervals; bindings whose profile sends
/// no OPTIONS (`udp_options_s = 0`) are left out.
async fn load(
    store: &Store,
    profiles: &Profiles,
    now: Millis,
) -> crate::store::Result<(Vec<Target>, HashMap<BindingKey, Destination>)> {
    let bindings = store.live_udp_bindings(now).await?;
    let trunk_profiles = if bindings.iter().any(|b| b.owner_kind == "trunk") {
        store.trunk_profiles().await?
    } else {
        HashMap::new()
    };
    let mut targets = Vec::with_capacity(bindings.len());
    let mut destinations = HashMap::with_capacity(bindings.len());
    for binding in bindings {
        let profile = match binding.owner_kind.as_str() {
            "trunk" => trunk_profiles
                .get(&TrunkId(binding.owner_id.clone()))
                .map_or(USER_PROFILE, String::as_str),
            _ => USER_PROFILE,
        };
        let Some(interval) = profiles
            .get(profile)
            .and_then(|p| p.keepalive.udp_options())
        else {
            continue;
        };
        let Ok(addr) = binding.source.parse::<SocketAddr>() else {
            continue;
        };
        let (key, generation) = key_of(&binding);
        let registration = binding.call_id.clone();
        destinations.insert(
            key.clone(),
            Destination {
                addr,
                contact: binding.contact,
                path: binding.path,
                deadline: (interval * 4 / 5).min(PING_DEADLINE),
            },
        );
        targets.push(Target {
            key,
            interval_ms: Millis::try_from(interval.as_millis()).unwrap_or(Millis::MAX),
            generation,
            registration,
        });
    }
    Ok((targets, destinations))
}

fn key_of(binding: &RegistrationRecord) -> (BindingKey, i64) {
    (
        BindingKey {
            aor: binding.aor.clone(),
            contact: binding.contact.clone(),
            source: binding.source.clone(),
        },
        binding.cseq,
    )
}

/// One OPTIONS to the binding's NAT address, addressed to its contact: `Some(true)` when
/// any response came (a 404 or 405 still proves the device and the mapping are there),
/// `Some(false)` when none did, `None` when it could not be sent (our problem, not a sign
/// of a dead device).
async fn ping(client: &SipClient, destination: &Destination) -> Option<bool> {
    let target = SendTarget {
        addr: destination.addr,
        transport: Transport::Udp,
    };
    let from = format!("sip:keepalive@{}", client.local_addr_for(destination.addr));
    let call_id = format!("{}@leadline", uuid::Uuid::new_v4());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let request = client.request(
        Outgoing {
            method: Method::Options,
            uri: &destination.contact,
            from: &from,
            from_tag: &tag[..8],
            to: &destination.contact,
            call_id: &call_id,
            cseq: 1,
            headers: destination
                .path
                .iter()
                .filter(|_| client.through_proxy())
                .map(|path| Header::Route(path.clone().into()))
                .collect(),
        },
        target,
    );
    let request = match request {
        Ok(request) => request,
        Err(err) => {
            tracing::debug!(contact = %destination.contact, %err, "cannot build a keep-alive");
            return None;
        }
    };
    match client.send(request, target, destination.deadline).await {
        Ok(_) => Some(true),
        Err(ClientError::NoResponse(_)) => Some(false),
        Err(err) => {
            tracing::debug!(source = %destination.addr, %err, "cannot send a keep-alive");
            None
        }
    }
}
