//! What the call path reads, in memory: the routing configuration (CRM settings, numbers
//! with their media settings, queue members, pipelines, trunks) and the registrar's
//! bindings. An INVITE is recognised, its number found, its media chosen and its agents'
//! devices listed without a database round trip; the intake (the CRM match) is the only
//! database work before the first phone rings.
//!
//! **Reads** are synchronous: the configuration is an immutable `Arc<ConfigSnapshot>`
//! behind a `RwLock` held only to clone the `Arc`; the bindings are a [`BindingIndex`]
//! behind a `RwLock` held for one hash look-up and the copy of a few bindings.
//!
//! **Changes made through this process** are applied before the change returns: a
//! configuration write bumps the generation and rebuilds the configuration snapshot (on
//! the writer's request, never on the call path: a rebuild that started at an older
//! generation never replaces a newer one); a REGISTER, an un-register or a dropped
//! binding updates its one address of record in the index.
//!
//! **Changes made through other processes** sharing PostgreSQL arrive by `LISTEN`/
//! `NOTIFY` ([`watch`]): every change above also sends a notification on
//! [`CHANNEL`] naming what changed (the configuration, or one address of record), and a
//! background task of each process rebuilds the configuration or re-reads that address
//! of record. Chosen over a polled change counter because REGISTERs are frequent: a
//! counter row bumped in every REGISTER's transaction would serialise REGISTERs of all
//! processes on that row and still not say which binding changed, while a notification
//! costs no row, says what changed, and is delivered at commit (binding changes notify
//! inside their transaction). Notifications missed while the listener reconnects, or
//! one lost to a crash between a configuration commit and its notification, are covered
//! by a full re-read after every reconnect and every 30 s. SQLite has one process, which
//! makes every change itself: the task only retries a rebuild that failed.
//!
//! Queue rotation is not in the snapshot: it changes on every new caller and is read and
//! advanced inside the intake's write transaction.

pub(crate) mod bindings;
pub(crate) mod watch;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use self::bindings::BindingIndex;
use super::{Backend, Result, Store, TrunkRecord, col};
use crate::crm::intake::{NumberSettings, PipelineEntry};
use crate::crm::model::{CrmSettings, Millis, NumberId, QueueId, TrunkId, UserId};
use crate::sip::trunks::{IpNetwork, TrunkAccess};

/// The PostgreSQL notification channel of configuration and binding changes.
pub const CHANNEL: &str = "leadline_config";

#[derive(Debug, Default)]
pub(crate) struct ConfigSnapshot {
    pub crm: CrmSettings,
    /// By E.164.
    pub numbers: HashMap<String, NumberSettings>,
    /// Members in turn order.
    pub queues: HashMap<QueueId, Vec<UserId>>,
    /// How each queue serves callers who wait.
    pub queue_settings: HashMap<QueueId, crate::crm::queueing::QueueSettings>,
    pub pipelines: Vec<PipelineEntry>,
    /// Media settings by number id.
    pub media: HashMap<NumberId, super::NumberMedia>,
    pub trunks: HashMap<TrunkId, TrunkRecord>,
    /// Each trunk's allowed networks, parsed once, in trunk id order.
    trunk_networks: Vec<(TrunkId, crate::crm::model::TrunkKind, Vec<IpNetwork>)>,
    generation: u64,
}

/// What changed, as a notification names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Config,
    /// The bindings of one address of record.
    Binding(String),
}

impl Change {
    /// The notification's payload: the sending process, then what changed.
    fn payload(&self, node: &str) -> String {
        match self {
            Change::Config => format!("{node} config"),
            Change::Binding(aor) => format!("{node} binding {aor}"),
        }
    }

    /// A payload another process sent; `None` for our own or one we do not know.
    pub(crate) fn parse(payload: &str, own_node: &str) -> Option<Change> {
        let (node, rest) = payload.split_once(' ')?;
        if node == own_node {
            return None;
        }
        match rest.split_once(' ') {
            None if rest == "config" => Some(Change::Config),
            Some(("binding", aor)) if !aor.is_empty() => Some(Change::Binding(aor.to_owned())),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct ConfigCache {
    current: RwLock<Arc<ConfigSnapshot>>,
    /// Bumped by every configuration change; a snapshot carries the one it was read at.
    generation: AtomicU64,
    /// A snapshot has been read from the database (the empty default has not).
    loaded: AtomicBool,
    /// A rebuild failed: the watcher retries it.
    stale: AtomicBool,
    /// One rebuild at a time; a change that finds a newer snapshot done needs none.
    rebuild: tokio::sync::Mutex<()>,
    bindings: RwLock<BindingIndex>,
    /// This process, in notifications (its own are ignored).
    node: String,
}

impl Default for ConfigCache {
    fn default() -> Self {
        Self {
            current: RwLock::default(),
            generation: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            stale: AtomicBool::new(false),
            rebuild: tokio::sync::Mutex::new(()),
            bindings: RwLock::default(),
            node: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

impl ConfigCache {
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    pub(crate) fn snapshot(&self) -> Arc<ConfigSnapshot> {
        // A poisoned lock only means a panic elsewhere while swapping an Arc: the value
        // is still a whole snapshot.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn bindings(&self) -> std::sync::RwLockReadGuard<'_, BindingIndex> {
        self.bindings.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn bindings_mut(&self) -> std::sync::RwLockWriteGuard<'_, BindingIndex> {
        self.bindings.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }
}

impl Store {
    /// A configured number's settings, from the snapshot.
    pub async fn configured_number(&self, e164: &str) -> Result<Option<NumberSettings>> {
        Ok(self.config_snapshot().await?.numbers.get(e164).cloned())
    }

    /// A configured number's settings from the snapshot, without waiting (the call path).
    pub fn cached_number(&self, e164: &str) -> Option<NumberSettings> {
        self.cache().snapshot().numbers.get(e164).cloned()
    }

    /// A number's media settings from the snapshot; the defaults for an unknown number.
    pub fn cached_number_media(&self, id: &NumberId) -> super::NumberMedia {
        self.cache()
            .snapshot()
            .media
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// A trunk from the snapshot.
    pub fn cached_trunk(&self, id: &TrunkId) -> Option<TrunkRecord> {
        self.cache().snapshot().trunks.get(id).cloned()
    }

    /// A queue's members from the snapshot, without touching the database: the route of
    /// last resort when the database is slow.
    pub fn cached_queue_members(&self, queue: &QueueId) -> Option<Vec<UserId>> {
        self.cache().snapshot().queues.get(queue).cloned()
    }

    /// A queue's settings for waiting callers, from the snapshot.
    pub fn cached_queue_settings(
        &self,
        queue: &QueueId,
    ) -> Option<crate::crm::queueing::QueueSettings> {
        self.cache().snapshot().queue_settings.get(queue).cloned()
    }

    /// What trunk recognition (T2) needs of every trunk: its allowed networks and the
    /// sources of its registrations live at `now`.
    pub fn cached_trunk_access(&self, now: Millis) -> Vec<TrunkAccess> {
        let snapshot = self.cache().snapshot();
        let bindings = self.cache().bindings();
        snapshot
            .trunk_networks
            .iter()
            .map(|(id, kind, allowed)| TrunkAccess {
                id: id.clone(),
                kind: *kind,
                allowed: allowed.clone(),
                registered_from: bindings
                    .trunk_sources(id.as_str(), now)
                    .iter()
                    .filter_map(|s| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
                    .collect::<Vec<IpAddr>>(),
            })
            .collect()
    }

    /// An employee's bindings live at `now`, by contact.
    pub fn cached_user_bindings(
        &self,
        user: &UserId,
        now: Millis,
    ) -> Vec<super::RegistrationRecord> {
        self.cache().bindings().user_bindings(user.as_str(), now)
    }

    /// Whether an employee's phone is registered from exactly this `ip:port` at `now`.
    pub fn cached_phone_source(&self, source: &str, now: Millis) -> bool {
        self.cache().bindings().is_phone_source(source, now)
    }

    /// The configuration snapshot. Read from the database only before the first one
    /// (a store used without [`Store::load_snapshot`]); after that, changes keep it
    /// current and nobody waits for it.
    pub(crate) async fn config_snapshot(&self) -> Result<Arc<ConfigSnapshot>> {
        if !self.cache().loaded.load(Ordering::Acquire) {
            self.rebuild_config().await?;
        }
        Ok(self.cache().snapshot())
    }

    /// Reads the configuration and every binding: at start, before the first call.
    pub async fn load_snapshot(&self) -> Result<()> {
        self.rebuild_config().await?;
        self.reload_all_bindings().await
    }

    /// A configuration change was committed through this process: rebuild the
    /// snapshot now and tell the other processes. A failed rebuild is logged and retried
    /// by the watcher; the change itself stands.
    pub(crate) async fn config_changed(&self) {
        self.cache().generation.fetch_add(1, Ordering::AcqRel);
        self.notify(&Change::Config).await;
        if let Err(err) = self.rebuild_config().await {
            tracing::error!(%err, "cannot rebuild the configuration snapshot; retrying");
            self.cache().stale.store(true, Ordering::Release);
        }
    }

    /// Tells the other processes on PostgreSQL; nothing to do on SQLite.
    pub(crate) async fn notify(&self, change: &Change) {
        if self.backend() != Backend::Postgres {
            return;
        }
        if let Err(err) = sqlx::query(NOTIFY)
            .bind(CHANNEL)
            .bind(change.payload(self.cache().node()))
            .execute(self.writer())
            .await
        {
            tracing::warn!(%err, "cannot notify other processes of a configuration change");
        }
    }

    /// As [`Store::notify`], inside the change's transaction: delivered at its commit.
    pub(crate) async fn notify_in(
        &self,
        tx: &mut super::entities::Tx<'_>,
        change: &Change,
    ) -> Result<()> {
        if self.backend() == Backend::Postgres {
            sqlx::query(NOTIFY)
                .bind(CHANNEL)
                .bind(change.payload(self.cache().node()))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Reads the configuration into a new snapshot unless one at least as new exists.
    pub(crate) async fn rebuild_config(&self) -> Result<()> {
        let cache = self.cache();
        let _one = cache.rebuild.lock().await;
        // Read the generation before loading: a change committed during the load makes
        // a newer generation, whose rebuild follows this one.
        let generation = cache.generation.load(Ordering::Acquire);
        if cache.loaded.load(Ordering::Acquire)
            && !cache.is_stale()
            && cache.snapshot().generation >= generation
        {
            return Ok(());
        }
        let mut snapshot = self.read_config().await?;
        snapshot.generation = generation;
        *cache.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        cache.loaded.store(true, Ordering::Release);
        cache.stale.store(false, Ordering::Release);
        Ok(())
    }

    /// A change another process made: the next rebuild must read again.
    pub(crate) fn config_changed_elsewhere(&self) {
        self.cache().generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Re-reads one address of record's bindings (another process changed them).
    pub(crate) async fn reload_aor(&self, aor: &str) -> Result<()> {
        // A local change during the read wins; the read is repeated after it.
        for _ in 0..5 {
            let started = self.cache().bindings().read_started();
            let rows = self.bindings_of_aor(aor).await?;
            if self.cache().bindings_mut().replace_aor(aor, rows, started) {
                return Ok(());
            }
        }
        tracing::debug!(%aor, "bindings kept changing while read; the next full read settles them");
        Ok(())
    }

    /// Re-reads every binding.
    pub(crate) async fn reload_all_bindings(&self) -> Result<()> {
        let started = self.cache().bindings().read_started();
        let rows = self.all_bindings().await?;
        let again = self.cache().bindings_mut().replace_all(rows, started);
        for aor in again {
            self.reload_aor(&aor).await?;
        }
        Ok(())
    }

    async fn read_config(&self) -> Result<ConfigSnapshot> {
        let crm = self.crm_settings().await?;
        let numbers = sqlx::query(dynamic_sql!(
            "SELECT {} FROM numbers",
            super::config::NUMBER_SETTINGS_COLUMNS
        ))
        .fetch_all(self.reader())
        .await?
        .iter()
        .map(|row| super::config::number_settings_from_row(row).map(|n| (n.number.clone(), n)))
        .collect::<Result<HashMap<_, _>>>()?;
        let mut queues: HashMap<QueueId, Vec<UserId>> = HashMap::new();
        let mut queue_settings = HashMap::new();
        for row in sqlx::query(dynamic_sql!(
            "SELECT id, {} FROM queues",
            super::routing::QUEUE_SETTINGS_COLUMNS
        ))
        .fetch_all(self.reader())
        .await?
        {
            let id = QueueId(col(&row, "id")?);
            queue_settings.insert(id.clone(), super::routing::queue_settings_from_row(&row)?);
            queues.insert(id, Vec::new());
        }
        for row in
            sqlx::query("SELECT queue_id, user_id FROM queue_members ORDER BY queue_id, position")
                .fetch_all(self.reader())
                .await?
        {
            let queue = QueueId(col(&row, "queue_id")?);
            queues
                .entry(queue)
                .or_default()
                .push(UserId(col(&row, "user_id")?));
        }
        let pipelines = self.pipeline_entries().await?;
        let media = self.all_number_media().await?;
        let trunk_list = self.all_trunks().await?;
        let trunk_networks = trunk_list
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    t.kind,
                    t.allowed_ips
                        .iter()
                        .filter_map(|n| IpNetwork::parse(n).ok())
                        .collect(),
                )
            })
            .collect();
        Ok(ConfigSnapshot {
            crm,
            numbers,
            queues,
            queue_settings,
            pipelines,
            media,
            trunks: trunk_list.into_iter().map(|t| (t.id.clone(), t)).collect(),
            trunk_networks,
            generation: 0,
        })
    }
}

/// `pg_notify` returns `void`, which the `Any` driver cannot decode: selected from, so
/// the statement returns nothing.
const NOTIFY: &str = "SELECT 1 AS sent FROM (SELECT pg_notify($1, $2)) AS notified";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_name_the_change_and_our_own_are_ignored() {
        let cases = [
            ("other config", Some(Change::Config)),
            ("other binding 101", Some(Change::Binding("101".into()))),
            (
                "other binding sip user",
                Some(Change::Binding("sip user".into())),
            ),
            ("me config", None),
            ("me binding 101", None),
            ("other binding ", None),
            ("other something", None),
            ("garbage", None),
        ];
        for (payload, expected) in cases {
            assert_eq!(Change::parse(payload, "me"), expected, "{payload}");
        }
        assert_eq!(
            Change::parse(&Change::Binding("101".into()).payload("a"), "b"),
            Some(Change::Binding("101".into()))
        );
    }
}
