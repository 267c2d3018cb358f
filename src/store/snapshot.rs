//! A read-mostly snapshot of the routing configuration the intake reads on every call:
//! CRM settings, numbers, queue members, pipelines.
//!
//! Reading these four on every call event cost as many database round trips as the
//! rest of the intake together. The snapshot is reloaded when this process changed the
//! configuration (a generation counter) and at least every `MAX_AGE`, so a change made
//! through another process sharing the PostgreSQL database applies within that time.
//! Queue rotation is not in the snapshot: it changes on every new caller and is read and
//! advanced inside the write transaction.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::{Result, Store, col};
use crate::crm::intake::{NumberSettings, PipelineEntry};
use crate::crm::model::{CrmSettings, QueueId, UserId};

/// How stale a snapshot may get before it is reloaded.
pub const MAX_AGE: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct ConfigSnapshot {
    pub crm: CrmSettings,
    /// By E.164.
    pub numbers: HashMap<String, NumberSettings>,
    /// Members in turn order.
    pub queues: HashMap<QueueId, Vec<UserId>>,
    pub pipelines: Vec<PipelineEntry>,
    /// Media settings by number id.
    pub media: HashMap<crate::crm::model::NumberId, super::NumberMedia>,
    loaded_at: Instant,
    generation: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ConfigCache {
    current: RwLock<Option<Arc<ConfigSnapshot>>>,
    generation: AtomicU64,
}

impl ConfigCache {
    /// Marks the snapshot stale after a configuration change in this process.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn fresh(&self) -> Option<Arc<ConfigSnapshot>> {
        let generation = self.generation.load(Ordering::Acquire);
        // A poisoned lock only means a panic elsewhere while swapping an Arc: the value
        // is still a whole snapshot.
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .filter(|s| s.generation == generation && s.loaded_at.elapsed() < MAX_AGE)
            .cloned()
    }
}

impl Store {
    /// A configured number's settings, from the snapshot.
    pub async fn configured_number(&self, e164: &str) -> Result<Option<NumberSettings>> {
        Ok(self.config_snapshot().await?.numbers.get(e164).cloned())
    }

    /// A queue's members from the last snapshot loaded, however old, without touching
    /// the database: the route of last resort when the database is slow.
    pub fn cached_queue_members(&self, queue: &QueueId) -> Option<Vec<UserId>> {
        let guard = self
            .cache()
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner());
        guard.as_ref()?.queues.get(queue).cloned()
    }

    /// The current configuration snapshot, reloading it if stale.
    pub(crate) async fn config_snapshot(&self) -> Result<Arc<ConfigSnapshot>> {
        if let Some(snapshot) = self.cache().fresh() {
            return Ok(snapshot);
        }
        // Read the generation before loading: a change committed during the load makes
        // this snapshot stale at once rather than hiding the change.
        let generation = self.cache().generation.load(Ordering::Acquire);
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
        for id in sqlx::query("SELECT id FROM queues")
            .fetch_all(self.reader())
            .await?
        {
            queues.insert(QueueId(col(&id, "id")?), Vec::new());
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
        let snapshot = Arc::new(ConfigSnapshot {
            crm,
            numbers,
            queues,
            pipelines,
            media,
            loaded_at: Instant::now(),
            generation,
        });
        *self
            .cache()
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(snapshot.clone());
        Ok(snapshot)
    }
}
