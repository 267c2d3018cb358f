//! Webhooks: where to send call events, for whom, signed with which secret, and how the
//! last deliveries went. Which events reach which webhook is decided elsewhere
//! (`crate::webhooks`); the secret is read here for signing and never leaves through the
//! API (A4). Also the outbox (`webhook_outbox`): the deliveries owed, each claimed by
//! one node while it sends (PostgreSQL `FOR UPDATE SKIP LOCKED`; SQLite has one writer).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::any::AnyRow;

use super::{
    Backend, Page, Paged, Result, Store, StoreError, col, json_list, now_ms, parse_json_list,
    parse_stored,
};
use crate::crm::model::{Millis, Role, UserId, WebhookId};

/// How long the delivery task trusts its copy of the webhook list when nothing in this
/// process changed it.
pub const WEBHOOK_CACHE_TTL: Duration = Duration::from_secs(2);

/// The delivery task's copy of the webhook list. A change bumps the generation, so a
/// load that began before it cannot put the old list back.
#[derive(Debug, Default)]
pub(crate) struct WebhookCache(RwLock<CachedList>);

#[derive(Debug, Default)]
struct CachedList {
    generation: u64,
    list: Option<(Arc<Vec<WebhookRecord>>, Instant)>,
}

impl WebhookCache {
    /// The list if fresh, else the generation a load must be stored under.
    fn fresh(&self) -> Result<Arc<Vec<WebhookRecord>>, u64> {
        let cached = self.0.read().unwrap_or_else(|e| e.into_inner());
        match &cached.list {
            Some((list, at)) if at.elapsed() < WEBHOOK_CACHE_TTL => Ok(list.clone()),
            _ => Err(cached.generation),
        }
    }

    fn store(&self, list: Arc<Vec<WebhookRecord>>, generation: u64) {
        let mut cached = self.0.write().unwrap_or_else(|e| e.into_inner());
        if cached.generation == generation {
            cached.list = Some((list, Instant::now()));
        }
    }

    pub(crate) fn clear(&self) {
        let mut cached = self.0.write().unwrap_or_else(|e| e.into_inner());
        cached.generation = cached.generation.wrapping_add(1);
        cached.list = None;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    /// `None`: created with the bootstrap admin token.
    pub owner: Option<UserId>,
    pub url: String,
    /// `call.ringing`, `call.answered`, `call.ended`.
    pub events: Vec<String>,
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    pub id: WebhookId,
    pub owner: Option<UserId>,
    /// The owner's role now; the bootstrap admin's webhooks are an admin's.
    pub owner_role: Role,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub created_at: Millis,
    pub last_delivery_at: Option<Millis>,
    pub last_error: Option<String>,
    pub last_error_at: Option<Millis>,
}

/// How one delivery ended, for the webhook's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryResult {
    Delivered,
    Failed(String),
}

/// A delivery owed to a webhook, as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxDelivery {
    /// Also the `X-Leadline-Delivery` header: the same for every attempt, on any node.
    pub id: String,
    pub webhook: WebhookId,
    pub event: String,
    pub body: String,
}

/// Outbox rows per `INSERT`: four bound values each, well under SQLite's 32,766 and
/// PostgreSQL's 65,535 bound parameters per statement.
const OUTBOX_ROWS_PER_INSERT: usize = 1000;

const WEBHOOK_SELECT: &str = "SELECT w.id, w.owner_id, u.role AS owner_role, w.url, w.events, \
    w.secret, w.created_at, w.last_delivery_at, w.last_error, w.last_error_at \
    FROM webhooks w LEFT JOIN users u ON u.id = w.owner_id";

impl Store {
    pub async fn create_webhook(&self, new: NewWebhook) -> Result<WebhookRecord> {
        let id = WebhookId::generate();
        self.execute_change(
            sqlx::query(
                "INSERT INTO webhooks (id, owner_id, url, events, secret, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id.as_str())
            .bind(new.owner.as_ref().map(|u| u.as_str().to_owned()))
            .bind(&new.url)
            .bind(json_list(&new.events))
            .bind(&new.secret)
            .bind(now_ms()),
            Some(id.as_str()),
        )
        .await
        .map_err(|e| match &e {
            // The owner went away between authentication and now.
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::invalid("owner", "the creating employee no longer exists")
            }
            _ => StoreError::Database(e),
        })?;
        self.webhook_cache.clear();
        self.get_webhook(&id).await
    }

    pub async fn get_webhook(&self, id: &WebhookId) -> Result<WebhookRecord> {
        let row = sqlx::query(dynamic_sql!("{WEBHOOK_SELECT} WHERE w.id = $1"))
            .bind(id.as_str())
            .fetch_optional(self.reader())
            .await?
            .ok_or_else(|| StoreError::not_found("webhook", id.as_str()))?;
        webhook_from_row(&row)
    }

    /// Every webhook, or only those `owner` created, oldest first.
    pub async fn list_webhooks(
        &self,
        owner: Option<&UserId>,
        page: &Page,
    ) -> Result<Paged<WebhookRecord>> {
        let rows = sqlx::query(dynamic_sql!(
            "{WEBHOOK_SELECT} WHERE w.id > $1 AND ($2 = '' OR w.owner_id = $2) \
             ORDER BY w.id LIMIT $3"
        ))
        .bind(page.after())
        .bind(owner.map_or("", UserId::as_str))
        .bind(page.sql_limit())
        .fetch_all(self.reader())
        .await?;
        let hooks = rows
            .iter()
            .map(webhook_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(page.finish(hooks, |h| h.id.to_string()))
    }

    /// Every webhook with its owner's role, for the delivery task, which asks for every
    /// call update: kept in memory, reloaded at once after a change made through this
    /// process and at least every [`WEBHOOK_CACHE_TTL`] (another process's change).
    pub async fn webhooks_cached(&self) -> Result<Arc<Vec<WebhookRecord>>> {
        let generation = match self.webhook_cache.fresh() {
            Ok(list) => return Ok(list),
            Err(generation) => generation,
        };
        let list = Arc::new(self.webhooks().await?);
        self.webhook_cache.store(list.clone(), generation);
        Ok(list)
    }

    /// Every webhook with its owner's role (a handful of rows).
    pub async fn webhooks(&self) -> Result<Vec<WebhookRecord>> {
        sqlx::query(dynamic_sql!("{WEBHOOK_SELECT} ORDER BY w.id"))
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(webhook_from_row)
            .collect()
    }

    pub async fn delete_webhook(&self, id: &WebhookId) -> Result<()> {
        let done = self
            .execute_change(
                sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id.as_str()),
                None,
            )
            .await?;
        self.webhook_cache.clear();
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("webhook", id.as_str()));
        }
        Ok(())
    }

    /// Notes how a delivery ended (a deleted webhook is no error: nothing to note).
    pub async fn note_delivery(&self, id: &WebhookId, result: &DeliveryResult) -> Result<()> {
        let now = now_ms();
        let query = match result {
            DeliveryResult::Delivered => {
                sqlx::query("UPDATE webhooks SET last_delivery_at = $2 WHERE id = $1")
                    .bind(id.as_str())
                    .bind(now)
            }
            DeliveryResult::Failed(error) => {
                sqlx::query("UPDATE webhooks SET last_error = $2, last_error_at = $3 WHERE id = $1")
                    .bind(id.as_str())
                    .bind(error.clone())
                    .bind(now)
            }
        };
        query.execute(self.writer()).await?;
        Ok(())
    }
}

impl Store {
    /// Writes the deliveries owed, all or none, in their order (each row's id is newer
    /// than the one before, and rows are claimed oldest first).
    pub async fn enqueue_deliveries(&self, deliveries: &[(WebhookId, &str, &str)]) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        for chunk in deliveries.chunks(OUTBOX_ROWS_PER_INSERT) {
            let rows = (0..chunk.len())
                .map(|i| {
                    let p = 2 + 4 * i;
                    format!("(${p}, ${}, ${}, ${}, $1)", p + 1, p + 2, p + 3)
                })
                .collect::<Vec<_>>()
                .join(", ");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO webhook_outbox (id, webhook_id, event, body, created_at) \
                 VALUES {rows}"
            )))
            .bind(now);
            for (webhook, event, body) in chunk {
                query = query
                    .bind(uuid::Uuid::now_v7().to_string())
                    .bind(webhook.as_str())
                    .bind(*event)
                    .bind(*body);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Claims for `node` until `until` the oldest `per_webhook` deliveries of each webhook
    /// none of whose deliveries anybody holds (a claim that ran out at `now` is held by
    /// nobody): one node at a time sends a webhook's deliveries, in order.
    pub async fn claim_deliveries(
        &self,
        node: &str,
        now: Millis,
        until: Millis,
        per_webhook: i64,
    ) -> Result<Vec<OutboxDelivery>> {
        // Rows another node is claiming this instant are skipped, not waited for.
        let lock = match self.backend() {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let rows = sqlx::query(dynamic_sql!(
            "UPDATE webhook_outbox SET claimed_by = $1, claimed_until = $2 \
             WHERE id IN (SELECT id FROM ( \
                 SELECT id, ROW_NUMBER() OVER (PARTITION BY webhook_id ORDER BY id) AS n \
                 FROM (SELECT o.id, o.webhook_id FROM webhook_outbox o \
                       WHERE NOT EXISTS (SELECT 1 FROM webhook_outbox h \
                                         WHERE h.webhook_id = o.webhook_id \
                                           AND h.claimed_until >= $3) \
                       {lock}) AS free) AS ranked \
               WHERE n <= $4) \
             RETURNING id, webhook_id, event, body"
        ))
        .bind(node)
        .bind(until)
        .bind(now)
        .bind(per_webhook)
        .fetch_all(self.writer())
        .await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                Ok(OutboxDelivery {
                    id: col(row, "id")?,
                    webhook: WebhookId(col(row, "webhook_id")?),
                    event: col(row, "event")?,
                    body: col(row, "body")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // RETURNING does not keep the subquery's order.
        claimed.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(claimed)
    }

    /// A delivery sent, or failed for good: no longer owed.
    pub async fn finish_delivery(&self, id: &str, node: &str) -> Result<()> {
        sqlx::query("DELETE FROM webhook_outbox WHERE id = $1 AND claimed_by = $2")
            .bind(id)
            .bind(node)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Gives back one claimed delivery, to be claimed again at once.
    pub async fn release_delivery(&self, id: &str, node: &str) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_outbox SET claimed_by = NULL, claimed_until = NULL \
             WHERE id = $1 AND claimed_by = $2",
        )
        .bind(id)
        .bind(node)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Gives back what `node` holds (it stops); `None`: every claim, which only the one
    /// process of SQLite may do at start, when any claim is a previous run's.
    pub async fn release_deliveries(&self, node: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_outbox SET claimed_by = NULL, claimed_until = NULL \
             WHERE claimed_by IS NOT NULL AND ($1 = '' OR claimed_by = $1)",
        )
        .bind(node.unwrap_or_default())
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// How many deliveries are owed.
    pub async fn pending_deliveries(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM webhook_outbox")
            .fetch_one(self.reader())
            .await?;
        col(&row, "n")
    }
}

fn webhook_from_row(row: &AnyRow) -> Result<WebhookRecord> {
    let events: String = col(row, "events")?;
    let owner: Option<String> = col(row, "owner_id")?;
    let owner_role = match col::<Option<String>>(row, "owner_role")? {
        Some(role) => parse_stored(&role, "users.role")?,
        None if owner.is_none() => Role::Admin,
        None => {
            return Err(StoreError::Corrupt(format!(
                "webhook owner '{}' has no user row",
                owner.unwrap_or_default()
            )));
        }
    };
    Ok(WebhookRecord {
        id: WebhookId(col(row, "id")?),
        owner: owner.map(UserId),
        owner_role,
        url: col(row, "url")?,
        events: parse_json_list(&events, "webhooks.events")?,
        secret: col(row, "secret")?,
        created_at: col(row, "created_at")?,
        last_delivery_at: col(row, "last_delivery_at")?,
        last_error: col(row, "last_error")?,
        last_error_at: col(row, "last_error_at")?,
    })
}
