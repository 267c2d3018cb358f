//! Several nodes on one PostgreSQL: events published on one node reach the event stream
//! of the others; webhook deliveries live in the outbox until delivered.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::calls_sip::CallWindow;
use crate::common::postgres::PgServer;
use crate::common::wait_until;
use crate::helpers::TestApp;

/// A second node on the same database as `a`, with its own data dir.
async fn second_node(url: &str, dir: &std::path::Path) -> leadline::App {
    let mut config = crate::helpers::test_config(dir);
    config.database_url = url.to_owned();
    config.webhooks = policy();
    leadline::App::start(config)
        .await
        .expect("the second node starts")
}

async fn window(node: &leadline::App, token: &str) -> CallWindow {
    let response = reqwest::Client::new()
        .get(format!("http://{}/api/v1/events", node.http_addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    CallWindow::from_response(response)
}

/// A call rings, as told to the node at `base`.
async fn ringing_at(base: &str, admin: &str, call_id: &str) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/calls/events"))
        .bearer_auth(admin)
        .json(
            &json!({"call_id": call_id, "event": "ringing", "direction": "incoming",
                      "from": "+4917612345678", "to": "+4930901820"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn ringing(app: &TestApp, call_id: &str) {
    ringing_at(&app.base, &app.admin, call_id).await;
}

/// A call update and a presence change published on node A are on the event stream of
/// node B; each node's stream has each event once (A does not hear its own back, B does
/// not send on what it heard).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_on_one_node_reaches_the_event_stream_of_another() {
    let server = PgServer::shared();
    let url = server.create_database("cluster_events_fan_out").await;
    let a = TestApp::spawn_with_database(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let b = second_node(&url, dir.path()).await;
    let anna = a
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let anna_token = a.token_for(&anna).await;
    let mut b_admin = window(&b, &a.admin).await;
    let mut b_anna = window(&b, &anna_token).await;
    let mut a_admin = CallWindow::open(&a, &a.admin).await;
    let within = Duration::from_secs(10);

    ringing(&a, "fan-out-1").await;
    let seen = b_admin.read_until("fan-out-1", within).await;
    assert!(seen.contains("event: ringing"), "{seen}");
    assert!(seen.contains("\"call_id\":\"fan-out-1\""), "{seen}");

    a.put_ok(
        &format!("/api/v1/users/{anna}/presence"),
        json!({"status": "paused", "reason": "lunch"}),
    )
    .await;
    let seen = b_anna.read_until("lunch", within).await;
    assert!(seen.contains("event: presence"), "{seen}");
    assert!(seen.contains(&format!("\"user\":\"{anna}\"")), "{seen}");

    // A later event marks the end of what is read: the first must be there once.
    ringing(&a, "fan-out-2").await;
    for (node, stream) in [("A", &mut a_admin), ("B", &mut b_admin)] {
        let seen = stream.read_until("fan-out-2", within).await;
        assert!(seen.contains("fan-out-2"), "{node}: {seen}");
        assert_eq!(
            seen.matches("\"call_id\":\"fan-out-1\"").count(),
            1,
            "{node}: {seen}"
        );
    }

    b.shutdown().await.expect("B stops");
    a.stop().await;
}

/// Loopback receivers, and retries soon and often enough that a delivery stays pending
/// while its receiver refuses it.
fn policy() -> leadline::webhooks::delivery::Policy {
    leadline::webhooks::delivery::Policy {
        timeout: Duration::from_secs(5),
        tries: 50,
        backoff: Duration::from_millis(20),
        queue: 4,
        private_targets: true,
    }
}

/// One request a receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Hit {
    delivery: String,
    call_id: String,
    answered: u16,
}

/// A webhook receiver on 127.0.0.1, port 0, answering every request with `status`.
#[derive(Clone)]
struct Receiver {
    url: String,
    status: Arc<AtomicU16>,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    async fn start(status: u16) -> Receiver {
        async fn take(
            State(receiver): State<Receiver>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> AxumStatus {
            let answered = receiver.status.load(Ordering::SeqCst);
            let body: Value = serde_json::from_slice(&body).unwrap_or_default();
            receiver.hits.lock().unwrap().push(Hit {
                delivery: headers
                    .get("x-leadline-delivery")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                call_id: body["data"]["call_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                answered,
            });
            AxumStatus::from_u16(answered).unwrap()
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            url: format!("http://{}/hook", listener.local_addr().unwrap()),
            status: Arc::new(AtomicU16::new(status)),
            hits: Arc::default(),
        };
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(take))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        receiver
    }

    fn hits(&self, call_id: &str) -> Vec<Hit> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.call_id == call_id)
            .cloned()
            .collect()
    }

    fn delivered(&self, call_id: &str) -> Vec<Hit> {
        self.hits(call_id)
            .into_iter()
            .filter(|h| (200..300).contains(&h.answered))
            .collect()
    }
}

async fn hook(app: &TestApp, receiver: &Receiver) {
    app.post_ok(
        "/api/v1/webhooks",
        json!({"url": receiver.url, "events": ["call.ringing"]}),
        StatusCode::CREATED,
    )
    .await;
}

async fn outbox_empty(store: &leadline::store::Store) {
    wait_until(Duration::from_secs(10), "the outbox to empty", || async {
        (store.pending_deliveries().await.unwrap() == 0).then_some(())
    })
    .await;
}

/// A delivery its receiver refuses while the gateway stops stays in the outbox; the
/// gateway started again sends it, with the same delivery id, and it is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_pending_at_a_stop_is_delivered_once_after_the_start() {
    let mut app = TestApp::spawn_with(|config, _| config.webhooks = policy()).await;
    let receiver = Receiver::start(503).await;
    hook(&app, &receiver).await;
    ringing(&app, "pending-1").await;
    let refused = wait_until(Duration::from_secs(10), "a refused attempt", || async {
        receiver.hits("pending-1").first().cloned()
    })
    .await;

    app.restart().await;
    receiver.status.store(204, Ordering::SeqCst);
    let delivered = wait_until(Duration::from_secs(10), "the delivery", || async {
        receiver.delivered("pending-1").first().cloned()
    })
    .await;
    assert_eq!(delivered.delivery, refused.delivery, "the same delivery");
    outbox_empty(&app.app.as_ref().unwrap().store).await;
    assert_eq!(receiver.delivered("pending-1").len(), 1);
    app.stop().await;
}

/// Two nodes on one PostgreSQL, one webhook: the events of both nodes are delivered,
/// each once, though both nodes hear every event and both take from the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_delivery_is_made_once_across_nodes() {
    let server = PgServer::shared();
    let url = server.create_database("cluster_events_outbox_once").await;
    let a = TestApp::spawn_with(|config, _| {
        config.database_url = url.clone();
        config.webhooks = policy();
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let b = second_node(&url, dir.path()).await;
    let b_base = format!("http://{}", b.http_addr);
    let receiver = Receiver::start(204).await;
    hook(&a, &receiver).await;
    let calls = ["once-a1", "once-b1", "once-a2", "once-b2"];
    for (i, call) in calls.iter().enumerate() {
        let base = if i % 2 == 0 { &a.base } else { &b_base };
        ringing_at(base, &a.admin, call).await;
    }
    for call in calls {
        wait_until(Duration::from_secs(10), call, || async {
            receiver.delivered(call).first().cloned()
        })
        .await;
    }
    outbox_empty(&a.app.as_ref().unwrap().store).await;
    for call in calls {
        assert_eq!(receiver.hits(call).len(), 1, "{call}");
    }
    b.shutdown().await.expect("B stops");
    a.stop().await;
}
