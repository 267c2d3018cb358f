//! The delivery of webhooks: one dispatcher task follows the event bus, decides for each
//! update which webhooks' owners may see it (`owner_sees`), and hands the signed body to
//! one worker task per webhook, through a bounded queue. A worker sends one delivery at a
//! time, with a timeout and a few retries, so a slow receiver delays only its own
//! deliveries; when its queue is full, new ones for it are dropped and counted, never
//! waited for. Deliveries are at least once: a receiver may see a retry of one it got.
//!
//! Metrics: `leadline_webhook_deliveries_total{result="delivered"|"failed"|"dropped"}`,
//! `leadline_webhook_events_lost_total` (updates the dispatcher fell too far behind for).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{event_name, owner_sees, sign};
use crate::crm::access::{AccessSettings, Viewer};
use crate::crm::model::{Role, WebhookId};
use crate::events::CallUpdate;
use crate::store::{DeliveryResult, Store, StoreError, WebhookRecord};

/// How deliveries are made; [`Policy::default`] in production, shorter waits in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// For one request, connection included.
    pub timeout: Duration,
    /// Attempts per delivery, the first included.
    pub tries: u32,
    /// Wait before the second attempt; each further wait is four times longer.
    pub backoff: Duration,
    /// Deliveries waiting per webhook.
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
            queue: 256,
            private_targets: false,
        }
    }
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

/// The body of every delivery.
#[derive(Serialize)]
struct Payload<'a> {
    event: &'a str,
    data: &'a CallUpdate,
}

/// One signed callback waiting in a webhook's queue.
#[derive(Debug, Clone)]
struct Delivery {
    event: &'static str,
    body: Bytes,
}

/// Follows `events` until `cancel`, then stops the workers (deliveries in flight are
/// abandoned) and returns once none uses the store any more.
pub async fn run(
    store: Store,
    mut events: broadcast::Receiver<CallUpdate>,
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
    let mut workers = Workers {
        store: store.clone(),
        client,
        policy,
        cancel: cancel.clone(),
        queues: HashMap::new(),
        tasks: TaskTracker::new(),
    };
    loop {
        let received = tokio::select! {
            () = cancel.cancelled() => break,
            received = events.recv() => received,
        };
        match received {
            Ok(update) => {
                if let Err(e) = dispatch(&store, &mut workers, &update).await {
                    tracing::error!(error = %e, call_id = %update.call_id,
                        "webhooks: could not dispatch a call update");
                }
            }
            Err(broadcast::error::RecvError::Lagged(lost)) => {
                tracing::warn!(lost, "webhooks fell behind the event bus; updates lost");
                metrics::counter!("leadline_webhook_events_lost_total").increment(lost);
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    workers.queues.clear();
    workers.tasks.close();
    workers.tasks.wait().await;
}

/// Queues the update for every webhook subscribed to it whose owner may see it.
async fn dispatch(
    store: &Store,
    workers: &mut Workers,
    update: &CallUpdate,
) -> Result<(), StoreError> {
    let Some(event) = event_name(update) else {
        return Ok(());
    };
    let hooks = store.webhooks_cached().await?;
    // Workers of deleted webhooks end with their queue.
    let live: HashSet<&WebhookId> = hooks.iter().map(|h| &h.id).collect();
    workers.queues.retain(|id, _| live.contains(id));
    let hooks: Vec<&WebhookRecord> = hooks
        .iter()
        .filter(|h| h.events.iter().any(|e| e == event))
        .collect();
    if hooks.is_empty() {
        return Ok(());
    }
    let settings = store.access_settings().await?.normalised();
    let body = serde_json::to_vec(&Payload {
        event,
        data: update,
    })
    .map_err(|e| StoreError::Corrupt(format!("call update as JSON: {e}")))?;
    let delivery = Delivery {
        event,
        body: Bytes::from(body),
    };
    for hook in hooks {
        let owner = owner_of(store, hook, settings).await?;
        if owner_sees(settings, &owner, update) {
            workers.enqueue(&hook.id, delivery.clone());
        }
    }
    Ok(())
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
    client: reqwest::Client,
    policy: Policy,
    cancel: CancellationToken,
    queues: HashMap<WebhookId, mpsc::Sender<Delivery>>,
    tasks: TaskTracker,
}

impl Workers {
    fn enqueue(&mut self, id: &WebhookId, delivery: Delivery) {
        let queue = self.queues.entry(id.clone()).or_insert_with(|| {
            let (sender, receiver) = mpsc::channel(self.policy.queue.max(1));
            self.tasks.spawn(work(
                self.store.clone(),
                self.client.clone(),
                self.policy.clone(),
                id.clone(),
                receiver,
                self.cancel.clone(),
            ));
            sender
        });
        match queue.try_send(delivery) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(webhook = %id, "webhook queue full: the receiver is too slow; delivery dropped");
                metrics::counter!("leadline_webhook_deliveries_total", "result" => "dropped")
                    .increment(1);
            }
            Err(mpsc::error::TrySendError::Closed(delivery)) => {
                // The worker found its webhook gone; it may be back under the same id
                // only in theory. Start afresh.
                self.queues.remove(id);
                self.enqueue(id, delivery);
            }
        }
    }
}

/// One webhook's worker: its deliveries, one after the other.
async fn work(
    store: Store,
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
        // Read at send time: a webhook deleted meanwhile gets nothing more.
        let hook = match store.get_webhook(&id).await {
            Ok(hook) => hook,
            Err(StoreError::NotFound { .. }) => return,
            Err(e) => {
                tracing::error!(webhook = %id, error = %e, "webhook delivery: cannot read the webhook");
                metrics::counter!("leadline_webhook_deliveries_total", "result" => "failed")
                    .increment(1);
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
        if let Err(e) = store.note_delivery(&id, &result).await {
            tracing::error!(webhook = %id, error = %e, "cannot note a webhook delivery");
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
    // One id for all attempts, so a receiver can tell a retry from a new event.
    let delivery_id = uuid::Uuid::now_v7().to_string();
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
            .header("X-Leadline-Event", delivery.event)
            .header("X-Leadline-Delivery", &delivery_id)
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
