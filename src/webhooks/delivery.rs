//! The delivery of webhooks. A dispatcher task follows this node's own call and record
//! updates, decides for each which webhooks' owners may see it (`owner_sees`, or the
//! record's [`crate::events::RecordUpdate::visible_to`]), and writes one
//! outbox row per delivery owed (`store::webhooks`), in one transaction, as the update is
//! accepted. The same task claims owed rows (its own and any other node's whose claim ran
//! out: that node died) and hands them to one worker task per webhook, through a bounded
//! queue. A webhook's rows are claimed a few at a time ([`Policy::queue`]), oldest first,
//! and only while no node holds any of its rows, so its deliveries keep their order even
//! across nodes. A worker sends one delivery at a time, with a timeout and a few retries,
//! so a slow receiver delays only its own deliveries, then deletes the row. Rows left by a stop are given back at shutdown (and, on SQLite, any claim at start),
//! rows of a node killed are claimed again once its claim runs out ([`claim_for`]).
//! A claim outlasts every attempt of a delivery, so two nodes never send the same row;
//! a node killed mid-send leaves the receiver to see a retry with the same
//! `X-Leadline-Delivery` (at least once).
//!
//! Metrics: `leadline_webhook_deliveries_total{result="delivered"|"failed"}`,
//! `leadline_webhook_events_lost_total` (updates the dispatcher fell too far behind for).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{event_name, owner_sees, sign};
use crate::cluster::NodeId;
use crate::crm::access::{AccessSettings, Viewer};
use crate::crm::model::{Role, WebhookId};
use crate::events::Own;
use crate::store::{
    Backend, DeliveryResult, OutboxDelivery, Store, StoreError, WebhookRecord, now_ms,
};

/// How often owed rows are looked for besides right after an update: rows another node
/// gave back or left behind, and rows given back for a full queue.
const CLAIM_EVERY: Duration = Duration::from_secs(1);

/// How deliveries are made; [`Policy::default`] in production, shorter waits in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// For one request, connection included.
    pub timeout: Duration,
    /// Attempts per delivery, the first included.
    pub tries: u32,
    /// Wait before the second attempt; each further wait is four times longer.
    pub backoff: Duration,
    /// Deliveries a node takes from the outbox for one webhook at a time (the rest wait
    /// in the table); also how many a claim must outlast.
    pub queue: usize,
    /// Whether receivers may be on loopback, private or link-local addresses. Off, a
    /// webhook cannot make the gateway call its own network (SSRF): URL hosts are checked
    /// when the webhook is saved, and every name is resolved to public addresses only
    /// when it is called.
    pub private_targets: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            tries: 3,
            backoff: Duration::from_secs(1),
            queue: 4,
            private_targets: false,
        }
    }
}

/// How long a node holds a claimed delivery: every attempt with its wait, for each
/// delivery that may wait ahead of it in its webhook's queue, and a minute to spare. A
/// claim ends earlier when the row is sent or given back; only a dead node's runs out.
pub fn claim_for(policy: &Policy) -> Duration {
    let mut one = Duration::ZERO;
    let mut wait = policy.backoff;
    for attempt in 1..=policy.tries.max(1) {
        one = one.saturating_add(policy.timeout);
        if attempt < policy.tries {
            one = one.saturating_add(wait);
            wait = wait.saturating_mul(4);
        }
    }
    let queued = u32::try_from(held(policy)).unwrap_or(u32::MAX);
    one.saturating_mul(queued)
        .saturating_add(Duration::from_secs(60))
}

/// Rows of one webhook a node claims at once.
fn held(policy: &Policy) -> i64 {
    i64::try_from(policy.queue.max(1)).unwrap_or(i64::MAX)
}

/// Why one attempt failed, in words for the webhook's `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the receiver answered {0}")]
    Status(u16),
    #[error("request failed: {0}")]
    Request(String),
    #[error(
        "refused: {0} is not a public address (private targets are off: webhook_private_targets)"
    )]
    Refused(String),
}

impl DeliveryError {
    /// Worth another try: the receiver may be back, or busy. Other 4xx answers are the
    /// receiver saying no, and a redirect is not followed (it could lead anywhere).
    fn retryable(&self) -> bool {
        match self {
            DeliveryError::Status(status) => *status >= 500 || *status == 429,
            DeliveryError::Refused(_) => false,
            _ => true,
        }
    }
}

/// The body of every delivery: the call update, or the record as the API shows it.
#[derive(Serialize)]
struct Payload<'a, T> {
    event: &'a str,
    data: &'a T,
}

/// One claimed delivery waiting in a webhook's queue.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    event: String,
    body: Bytes,
}

/// Follows `events` until `cancel`, then stops the workers (deliveries in flight are
/// abandoned and given back) and returns once none uses the store any more.
pub async fn run(
    store: Store,
    node: NodeId,
    mut events: broadcast::Receiver<Own>,
    policy: Policy,
    cancel: CancellationToken,
) {
    let mut builder = reqwest::Client::builder();
    if !policy.private_targets {
        builder = builder.dns_resolver(std::sync::Arc::new(PublicOnly));
    }
    let client = match builder
        .timeout(policy.timeout)
        .connect_timeout(policy.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("leadline/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %chain(&e), "webhooks disabled: cannot build the HTTP client");
            return;
        }
    };
    if store.backend() == Backend::Sqlite
        && let Err(e) = store.release_deliveries(None).await
    {
        tracing::error!(error = %e, "webhooks: cannot take back the previous run's deliveries");
    }
    let claim = claim_for(&policy);
    let drained = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut workers = Workers {
        store: store.clone(),
        node: node.clone(),
        client,
        policy,
        cancel: cancel.clone(),
        drained: drained.clone(),
        queues: HashMap::new(),
        tasks: TaskTracker::new(),
    };
    let mut tick = tokio::time::interval(CLAIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Only an update that owes deliveries claims at once: the others (most, when
        // few webhooks follow calls) cost the call path's database writer nothing.
        let owed = tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => true,
            () = drained.notified() => true,
            received = events.recv() => match received {
                Ok(Own::Call(update)) => match event_name(&update) {
                    Some(event) => match dispatch(&store, event, &update,
                        |settings, owner| owner_sees(settings, owner, &update)).await {
                        Ok(written) => written > 0,
                        Err(e) => {
                            tracing::error!(error = %e, call_id = %update.call_id,
                                "webhooks: could not write the deliveries of a call update");
                            false
                        }
                    },
                    None => false,
                },
                Ok(Own::Record(record)) => {
                    match dispatch(&store, record.event, &record.data,
                        |settings, owner| record.visible_to(settings, owner)).await {
                        Ok(written) => written > 0,
                        Err(e) => {
                            tracing::error!(error = %e, event = record.event,
                                "webhooks: could not write the deliveries of a record");
                            false
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(lost)) => {
                    tracing::warn!(lost, "webhooks fell behind the event bus; updates lost");
                    metrics::counter!("leadline_webhook_events_lost_total").increment(lost);
                    false
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        };
        if !owed {
            continue;
        }
        if let Err(e) = workers.claim(claim).await {
            tracing::warn!(error = %e, "webhooks: cannot claim owed deliveries; retrying");
        }
    }
    workers.queues.clear();
    workers.tasks.close();
    workers.tasks.wait().await;
    // What this node held and did not finish is owed still: another node, or this one
    // started again, sends it.
    if let Err(e) = store.release_deliveries(Some(node.as_str())).await {
        tracing::warn!(error = %e, "webhooks: cannot give back unfinished deliveries; they wait for their claim to run out");
    }
}

/// Writes a delivery of `data` for every webhook subscribed to `event` whose owner
/// `sees` it; how many.
async fn dispatch<T: Serialize>(
    store: &Store,
    event: &str,
    data: &T,
    sees: impl Fn(AccessSettings, &Viewer) -> bool,
) -> Result<usize, StoreError> {
    let hooks = store.webhooks_cached().await?;
    let hooks: Vec<&WebhookRecord> = hooks
        .iter()
        .filter(|h| h.events.iter().any(|e| e == event))
        .collect();
    if hooks.is_empty() {
        return Ok(0);
    }
    let settings = store.access_settings().await?.normalised();
    let body = serde_json::to_string(&Payload { event, data })
        .map_err(|e| StoreError::Corrupt(format!("{event} as JSON: {e}")))?;
    let mut owed = Vec::new();
    for hook in hooks {
        let owner = owner_of(store, hook, settings).await?;
        if sees(settings, &owner) {
            owed.push((hook.id.clone(), event, body.as_str()));
        }
    }
    store.enqueue_deliveries(&owed).await?;
    Ok(owed.len())
}

/// Writes the deliveries of many records at once (an import's): each following
/// webhook's owner looked up once, each body made once, every row in a few statements;
/// how many. A webhook gets a record if it follows its event and its owner may see it.
pub async fn dispatch_records(
    store: &Store,
    records: &[crate::events::RecordUpdate],
) -> Result<usize, StoreError> {
    let hooks = store.webhooks_cached().await?;
    let follows = |hook: &WebhookRecord, event: &str| hook.events.iter().any(|e| e == event);
    let hooks: Vec<&WebhookRecord> = hooks
        .iter()
        .filter(|h| records.iter().any(|r| follows(h, r.event)))
        .collect();
    if hooks.is_empty() {
        return Ok(0);
    }
    let settings = store.access_settings().await?.normalised();
    let mut owners = Vec::with_capacity(hooks.len());
    for hook in &hooks {
        owners.push(owner_of(store, hook, settings).await?);
    }
    let mut bodies = Vec::with_capacity(records.len());
    for record in records {
        bodies.push(
            serde_json::to_string(&Payload {
                event: record.event,
                data: &record.data,
            })
            .map_err(|e| StoreError::Corrupt(format!("{} as JSON: {e}", record.event)))?,
        );
    }
    let mut owed = Vec::new();
    for (record, body) in records.iter().zip(&bodies) {
        for (hook, owner) in hooks.iter().zip(&owners) {
            if follows(hook, record.event) && record.visible_to(settings, owner) {
                owed.push((hook.id.clone(), record.event, body.as_str()));
            }
        }
    }
    store.enqueue_deliveries(&owed).await?;
    Ok(owed.len())
}

/// The webhook's owner as the access rules see them (as `http::access::Access::of` sees
/// a caller).
async fn owner_of(
    store: &Store,
    hook: &WebhookRecord,
    settings: AccessSettings,
) -> Result<Viewer, StoreError> {
    store
        .viewer(
            hook.owner.as_ref(),
            hook.owner_role == Role::Admin,
            settings,
        )
        .await
}

struct Workers {
    store: Store,
    node: NodeId,
    client: reqwest::Client,
    policy: Policy,
    cancel: CancellationToken,
    /// A worker has sent all it held: its webhook's next rows may be claimed.
    drained: std::sync::Arc<tokio::sync::Notify>,
    queues: HashMap<WebhookId, mpsc::Sender<Delivery>>,
    tasks: TaskTracker,
}

impl Workers {
    /// Claims owed deliveries and queues them to their webhooks' workers; what does not
    /// fit in a queue (a worker still busy with a previous claim's rows, which ran out)
    /// is given back, and so is the rest of that webhook's batch, so one webhook's
    /// deliveries keep their order.
    async fn claim(&mut self, claim: Duration) -> Result<(), StoreError> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(claim.as_millis()).unwrap_or(i64::MAX));
        let claimed = self
            .store
            .claim_deliveries(self.node.as_str(), now, until, held(&self.policy))
            .await?;
        let mut full: HashSet<WebhookId> = HashSet::new();
        for row in claimed {
            if full.contains(&row.webhook) || !self.enqueue(&row) {
                full.insert(row.webhook.clone());
                self.store
                    .release_delivery(&row.id, self.node.as_str())
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether the delivery is in its webhook's queue.
    fn enqueue(&mut self, row: &OutboxDelivery) -> bool {
        let queue = self.queues.entry(row.webhook.clone()).or_insert_with(|| {
            let (sender, receiver) = mpsc::channel(self.policy.queue.max(1));
            self.tasks.spawn(work(
                self.store.clone(),
                self.node.clone(),
                self.drained.clone(),
                self.client.clone(),
                self.policy.clone(),
                row.webhook.clone(),
                receiver,
                self.cancel.clone(),
            ));
            sender
        });
        let delivery = Delivery {
            id: row.id.clone(),
            event: row.event.clone(),
            body: Bytes::from(row.body.clone().into_bytes()),
        };
        match queue.try_send(delivery) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(webhook = %row.webhook, "webhook queue full: the delivery waits in the outbox");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The worker ended (its webhook was gone, or is back under the same id
                // only in theory): start afresh.
                self.queues.remove(&row.webhook);
                self.enqueue(row)
            }
        }
    }
}

/// One webhook's worker: its deliveries, one after the other.
#[allow(clippy::too_many_arguments)]
async fn work(
    store: Store,
    node: NodeId,
    drained: std::sync::Arc<tokio::sync::Notify>,
    client: reqwest::Client,
    policy: Policy,
    id: WebhookId,
    mut queue: mpsc::Receiver<Delivery>,
    cancel: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            () = cancel.cancelled() => return,
            next = queue.recv() => match next {
                Some(delivery) => delivery,
                None => return,
            },
        };
        // Read at send time: a webhook deleted meanwhile gets nothing more (its rows went
        // with it).
        let hook = match store.get_webhook(&id).await {
            Ok(hook) => hook,
            Err(StoreError::NotFound { .. }) => return,
            Err(e) => {
                tracing::error!(webhook = %id, error = %e, "webhook delivery: cannot read the webhook; it waits in the outbox");
                if let Err(e) = store.release_delivery(&delivery.id, node.as_str()).await {
                    tracing::warn!(webhook = %id, error = %e, "cannot give back a webhook delivery");
                }
                continue;
            }
        };
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            outcome = deliver(&client, &policy, &hook, &delivery) => outcome,
        };
        let result = match outcome {
            Ok(()) => {
                metrics::counter!("leadline_webhook_deliveries_total", "result" => "delivered")
                    .increment(1);
                DeliveryResult::Delivered
            }
            Err(e) => {
                tracing::warn!(webhook = %id, event = delivery.event, error = %e,
                    "webhook delivery failed");
                metrics::counter!("leadline_webhook_deliveries_total", "result" => "failed")
                    .increment(1);
                DeliveryResult::Failed(e.to_string())
            }
        };
        if let Err(e) = store.finish_delivery(&delivery.id, node.as_str()).await {
            tracing::error!(webhook = %id, error = %e, "cannot mark a webhook delivery done");
        }
        if let Err(e) = store.note_delivery(&id, &result).await {
            tracing::error!(webhook = %id, error = %e, "cannot note a webhook delivery");
        }
        if queue.is_empty() {
            drained.notify_one();
        }
    }
}

/// Sends one delivery, retrying what may succeed later; the last attempt's error.
async fn deliver(
    client: &reqwest::Client,
    policy: &Policy,
    hook: &WebhookRecord,
    delivery: &Delivery,
) -> Result<(), DeliveryError> {
    let signature = sign(hook.secret.as_bytes(), &delivery.body);
    // One id for all attempts, on any node, so a receiver can tell a retry from a new
    // event.
    let delivery_id = &delivery.id;
    // A host written as an address skips the resolver; the setting may also have changed
    // since the webhook was saved.
    if !policy.private_targets
        && let Ok(url) = reqwest::Url::parse(&hook.url)
        && let Some(ip) = super::literal_ip(&url)
        && !super::is_public(ip)
    {
        return Err(DeliveryError::Refused(ip.to_string()));
    }
    let mut wait = policy.backoff;
    let mut attempt = 1;
    loop {
        let sent = client
            .post(&hook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Leadline-Event", &delivery.event)
            .header("X-Leadline-Delivery", delivery_id)
            .header("X-Leadline-Signature", &signature)
            .body(delivery.body.clone())
            .send()
            .await;
        let error = match sent.map_err(reqwest::Error::without_url) {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => DeliveryError::Status(response.status().as_u16()),
            Err(e) if e.is_timeout() => DeliveryError::Timeout(policy.timeout),
            Err(e) if e.is_connect() => DeliveryError::Connect(chain(&e)),
            Err(e) => DeliveryError::Request(chain(&e)),
        };
        if attempt >= policy.tries || !error.retryable() {
            return Err(error);
        }
        tracing::debug!(webhook = %hook.id, attempt, error = %error, "webhook delivery retried");
        tokio::time::sleep(wait).await;
        wait = wait.saturating_mul(4);
        attempt += 1;
    }
}

/// A resolver that answers only public addresses, so a name pointing inside (`localhost`,
/// an intranet host, a cloud metadata name) fails like an unknown one.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<std::net::SocketAddr> =
                found.filter(|addr| super::is_public(addr.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} has no public address (private targets are off: \
                     webhook_private_targets)"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// An error with its causes: reqwest's own message alone ("error sending request") does
/// not say what went wrong.
fn chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use reqwest::dns::Resolve as _;

    use super::*;

    #[test]
    fn a_claim_outlasts_every_attempt_of_every_queued_delivery() {
        let policy = Policy {
            timeout: Duration::from_secs(5),
            tries: 3,
            backoff: Duration::from_secs(1),
            queue: 2,
            private_targets: false,
        };
        // One delivery: 5 + 1 + 5 + 4 + 5 s; two may be ahead; a minute to spare.
        assert_eq!(claim_for(&policy), Duration::from_secs(2 * 20 + 60));
    }

    /// A name that resolves inside (here `localhost`, from /etc/hosts, no network needed)
    /// fails to resolve for webhooks, like an unknown name.
    #[tokio::test]
    async fn names_resolving_inside_do_not_resolve_for_webhooks() {
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match PublicOnly.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(err) => err,
        };
        assert!(err.to_string().contains("no public address"), "{err}");
    }
}
