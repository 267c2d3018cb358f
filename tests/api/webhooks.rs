//! Webhooks per owner. A webhook is told of the calls its owner may see
//! (the call window's rule), signed with its secret; a slow or failing receiver is retried
//! and its last error shown; the secret is shown once.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use hmac::{Hmac, Mac as _};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{Mutex, mpsc};

use crate::common::postgres::PgServer;
use crate::common::wait_until;
use crate::helpers::TestApp;

/// One request a receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    /// The last path segment: whose receiver.
    name: String,
    signature: String,
    pub(crate) event: String,
    delivery: String,
    body: Vec<u8>,
}

impl Hit {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn call_id(&self) -> String {
        self.json()["data"]["call_id"].as_str().unwrap().to_owned()
    }

    pub(crate) fn signed_with(&self, secret: &str) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&self.body);
        self.signature == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[derive(Clone)]
struct ReceiverState {
    hits: mpsc::UnboundedSender<Hit>,
    /// Delivery ids seen by `/flaky/…`, which fails each delivery's first attempt.
    seen: Arc<Mutex<Vec<String>>>,
}

/// A real HTTP receiver on 127.0.0.1, port 0. `/hook/{name}` answers 204, `/flaky/{name}`
/// 503 to a delivery's first attempt and 204 to the next, `/broken/{name}` always 500.
pub(crate) struct Receiver {
    base: String,
    hits: mpsc::UnboundedReceiver<Hit>,
    /// Read but not yet asked for.
    pending: Vec<Hit>,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        async fn take(
            State(state): State<ReceiverState>,
            Path((kind, name)): Path<(String, String)>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> AxumStatus {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let hit = Hit {
                name,
                signature: header("x-leadline-signature"),
                event: header("x-leadline-event"),
                delivery: header("x-leadline-delivery"),
                body: body.to_vec(),
            };
            let first_attempt = {
                let mut seen = state.seen.lock().await;
                let first = !seen.contains(&hit.delivery);
                seen.push(hit.delivery.clone());
                first
            };
            let _ = state.hits.send(hit);
            match kind.as_str() {
                "hook" => AxumStatus::NO_CONTENT,
                "flaky" if first_attempt => AxumStatus::SERVICE_UNAVAILABLE,
                "flaky" => AxumStatus::NO_CONTENT,
                _ => AxumStatus::INTERNAL_SERVER_ERROR,
            }
        }
        let (sender, hits) = mpsc::unbounded_channel();
        let state = ReceiverState {
            hits: sender,
            seen: Arc::default(),
        };
        let router = axum::Router::new()
            .route("/{kind}/{name}", axum::routing::post(take))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver {
            base,
            hits,
            pending: Vec::new(),
        }
    }

    pub(crate) fn url(&self, kind: &str, name: &str) -> String {
        format!("{}/{kind}/{name}", self.base)
    }

    /// The next request `name`'s receiver got, waiting at most 10 s.
    pub(crate) async fn next(&mut self, name: &str) -> Hit {
        if let Some(at) = self.pending.iter().position(|h| h.name == name) {
            return self.pending.remove(at);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.hits.recv()).await {
                Ok(Some(hit)) if hit.name == name => return hit,
                Ok(Some(other)) => self.pending.push(other),
                Ok(None) => panic!("the receiver stopped"),
                Err(_) => panic!("{name}'s receiver got nothing within 10 s"),
            }
        }
    }
}

pub(crate) async fn create_hook(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, hook) = app
        .request(Method::POST, "/api/v1/webhooks", Some(token), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    hook
}

async fn ringing(app: &TestApp, call_id: &str, from: &str, to: &str) {
    app.post_ok(
        "/api/v1/calls/events",
        json!({"call_id": call_id, "event": "ringing", "direction": "incoming",
               "from": from, "to": to}),
        StatusCode::OK,
    )
    .await;
}

pub(crate) async fn queue_of(app: &TestApp, name: &str, member: &str) -> String {
    app.post_ok(
        "/api/v1/queues",
        json!({"name": name, "members": [member]}),
        StatusCode::CREATED,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Two agents at the default `own` level and the bootstrap admin each have a webhook.
/// Anna's line rings her, Ben's line rings him for his own customer: each agent's
/// receiver gets exactly their calls, signed with their secret; the admin's gets all.
#[tokio::test]
async fn a_webhook_carries_only_the_calls_its_owner_may_see() {
    let app = spawn_with_loopback_receivers(None).await;
    only_what_the_owner_sees(&app).await;
    app.stop().await;
}

/// The same on PostgreSQL: the migration and the queries are portable.
#[tokio::test]
async fn webhooks_per_owner_on_postgres() {
    let server = PgServer::shared();
    let url = server.create_database("webhooks_per_owner").await;
    let app = spawn_with_loopback_receivers(Some(url)).await;
    only_what_the_owner_sees(&app).await;
    app.stop().await;
}

async fn only_what_the_owner_sees(app: &TestApp) {
    let mut receiver = Receiver::start().await;
    let anna = app
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let ben = app
        .create_user("Ben", "ben@example.com", "agent", "102")
        .await;
    let (anna_token, ben_token) = (app.token_for(&anna).await, app.token_for(&ben).await);
    let anna_queue = queue_of(app, "Anna's line", &anna).await;
    let ben_queue = queue_of(app, "Ben's line", &ben).await;
    for (number, queue) in [("+4930901820", &anna_queue), ("+4930901821", &ben_queue)] {
        app.post_ok(
            "/api/v1/numbers",
            json!({"number": number, "default_country": "DE", "queue": queue}),
            StatusCode::CREATED,
        )
        .await;
    }
    app.post_ok(
        "/api/v1/contacts",
        json!({"name": "Clara Customer", "phones": ["+4917611111111"], "responsible": ben}),
        StatusCode::CREATED,
    )
    .await;

    let anna_secret = "anna-secret-0123456789";
    let anna_hook = create_hook(
        app,
        &anna_token,
        json!({"url": receiver.url("hook", "anna"), "events": ["call.ringing"],
               "secret": anna_secret}),
    )
    .await;
    assert_eq!(anna_hook["owner"], json!(anna));
    assert_eq!(anna_hook["secret"], anna_secret, "shown once, at creation");
    let ben_hook = create_hook(
        app,
        &ben_token,
        json!({"url": receiver.url("hook", "ben"),
               "events": ["call.ringing", "call.answered", "call.ended"]}),
    )
    .await;
    let ben_secret = ben_hook["secret"].as_str().expect("a generated secret");
    let admin_hook = create_hook(
        app,
        &app.admin,
        json!({"url": receiver.url("hook", "admin"), "events": ["call.ringing"], "secret": null}),
    )
    .await;
    let admin_secret = admin_hook["secret"].as_str().unwrap();

    // c1 rings Anna (a new caller on her line), c2 rings Ben (his customer on his
    // line), c3 rings Anna again.
    ringing(app, "c1", "+4917699999999", "+4930901820").await;
    ringing(app, "c2", "+4917611111111", "+4930901821").await;
    ringing(app, "c3", "+4917688888888", "+4930901820").await;

    let first = receiver.next("anna").await;
    assert_eq!(first.call_id(), "c1");
    assert!(first.signed_with(anna_secret), "{first:?}");
    assert_eq!(first.event, "call.ringing");
    assert_eq!(first.json()["event"], "call.ringing");
    assert_eq!(first.json()["data"]["ringing"], json!([anna]));
    assert!(
        first.json()["data"]["entity"]
            .as_str()
            .unwrap()
            .starts_with("lead:"),
        "{:?}",
        first.json()
    );
    // Deliveries to one webhook keep the order of the calls: Ben's call c2 came
    // between, and Anna's next delivery is c3.
    assert_eq!(receiver.next("anna").await.call_id(), "c3");
    // Ben's first delivery is his call c2: Anna's c1 never reached him.
    let bens = receiver.next("ben").await;
    assert_eq!(bens.call_id(), "c2");
    assert!(bens.signed_with(ben_secret));
    assert!(!bens.signed_with(anna_secret));
    assert_eq!(bens.json()["data"]["responsible"], json!(ben));
    let mut admins = Vec::new();
    for _ in 0..3 {
        let hit = receiver.next("admin").await;
        assert!(hit.signed_with(admin_secret));
        admins.push(hit.call_id());
    }
    assert_eq!(
        admins,
        ["c1", "c2", "c3"],
        "the admin's webhook gets every call"
    );

    // The secret is never shown again; someone else's webhook is not there for an agent.
    let anna_id = anna_hook["id"].as_str().unwrap();
    let (status, seen) = app
        .request(
            Method::GET,
            &format!("/api/v1/webhooks/{anna_id}"),
            Some(&anna_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert!(seen.get("secret").is_none(), "A4: {seen}");
    assert!(!seen.to_string().contains(anna_secret), "{seen}");
    for method in [Method::GET, Method::DELETE] {
        let (status, body) = app
            .request(
                method,
                &format!("/api/v1/webhooks/{anna_id}"),
                Some(&ben_token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    let (_, bens_list) = app
        .request(Method::GET, "/api/v1/webhooks", Some(&ben_token), None)
        .await;
    let ids = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&bens_list), [ben_hook["id"].as_str().unwrap()]);
    let all = app.get_ok("/api/v1/webhooks").await;
    assert_eq!(ids(&all).len(), 3, "admins see every webhook: {all}");
    assert!(!all.to_string().contains("secret"), "{all}");

    let delivered = wait_until(
        Duration::from_secs(10),
        "Anna's last delivery noted",
        || async {
            let hook = app.get_ok(&format!("/api/v1/webhooks/{anna_id}")).await;
            hook["last_delivery_at"].as_str().map(str::to_owned)
        },
    )
    .await;
    assert!(delivered.ends_with('Z'), "{delivered}");

    let (status, _) = app
        .request(
            Method::DELETE,
            &format!("/api/v1/webhooks/{anna_id}"),
            Some(&anna_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

/// The receivers of these tests listen on loopback, which the gateway refuses by default.
pub(crate) async fn spawn_with_loopback_receivers(database_url: Option<String>) -> TestApp {
    TestApp::spawn_with(|config, _| {
        config.webhooks.private_targets = true;
        if let Some(url) = database_url {
            config.database_url = url;
        }
    })
    .await
}

/// By default (no `webhook_private_targets`) a webhook may not point into the gateway's
/// own network: loopback, private, link-local (cloud metadata) and `localhost` are refused
/// with the field named.
#[tokio::test]
async fn a_webhook_may_not_target_the_gateways_own_network_by_default() {
    let app = TestApp::spawn().await;
    let anna = app
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let token = app.token_for(&anna).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/hook",
        "http://[::1]/hook",
        "http://localhost/hook",
    ] {
        let (status, body) = app
            .request(
                Method::POST,
                "/api/v1/webhooks",
                Some(&token),
                Some(json!({"url": url, "events": ["call.ringing"]})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["error"]["code"], "invalid_url", "{body}");
        assert_eq!(body["error"]["field"], "url", "{body}");
    }
    app.stop().await;
}

/// Validation names the field; trunk tokens may not register webhooks.
#[tokio::test]
async fn webhook_settings_are_checked_and_trunks_may_not_have_webhooks() {
    let app = TestApp::spawn().await;
    let base = json!({"url": "https://crm.example.com/hooks", "events": ["call.ringing"]});
    for (change, code, field) in [
        (
            json!({"url": "ftp://crm.example.com/hooks"}),
            "invalid_url",
            "url",
        ),
        (
            json!({"url": "crm.example.com/hooks"}),
            "invalid_url",
            "url",
        ),
        (
            json!({"url": "https://user:pw@crm.example.com/"}),
            "invalid_url",
            "url",
        ),
        (json!({"events": []}), "invalid_event", "events"),
        (
            json!({"events": ["call.ringing", "call.exploded"]}),
            "invalid_event",
            "events[1]",
        ),
        (json!({"secret": "short"}), "invalid_secret", "secret"),
    ] {
        let mut body = base.clone();
        for (key, value) in change.as_object().unwrap() {
            body[key] = value.clone();
        }
        let (status, error) = app
            .request(
                Method::POST,
                "/api/v1/webhooks",
                Some(&app.admin),
                Some(body),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{change}: {error}"
        );
        assert_eq!(error["error"]["code"], code, "{change}: {error}");
        assert_eq!(error["error"]["field"], field, "{change}: {error}");
    }

    let trunk = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "Office PBX", "kind": "pbx", "username": "office-pbx",
                   "password": "trunk-secret-9"}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let trunk_token = app
        .post_ok(
            &format!("/api/v1/trunks/{trunk}/tokens"),
            json!({}),
            StatusCode::CREATED,
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for (method, body) in [(Method::POST, Some(base.clone())), (Method::GET, None)] {
        let (status, error) = app
            .request(method, "/api/v1/webhooks", Some(&trunk_token), body)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    }
    app.stop().await;
}

/// A receiver that fails once gets the delivery again (same delivery id); one that always
/// fails is tried three times and its webhook shows why.
#[tokio::test]
async fn failed_deliveries_are_retried_and_the_last_error_is_shown() {
    let app = TestApp::spawn_with(|config, _| {
        config.webhooks.backoff = Duration::from_millis(20);
        config.webhooks.private_targets = true;
    })
    .await;
    let mut receiver = Receiver::start().await;
    app.sales_line().await;
    let flaky = create_hook(
        &app,
        &app.admin,
        json!({"url": receiver.url("flaky", "f"), "events": ["call.ringing"]}),
    )
    .await;
    let broken = create_hook(
        &app,
        &app.admin,
        json!({"url": receiver.url("broken", "b"), "events": ["call.ringing"]}),
    )
    .await;
    app.ringing("r1", "+4917699999999").await;

    let first = receiver.next("f").await;
    let again = receiver.next("f").await;
    assert_eq!(first.delivery, again.delivery, "a retry, not a new event");
    assert_eq!(first.body, again.body);
    let attempts: Vec<String> = [
        receiver.next("b").await,
        receiver.next("b").await,
        receiver.next("b").await,
    ]
    .iter()
    .map(|h| h.delivery.clone())
    .collect();
    assert!(attempts.iter().all(|d| d == &attempts[0]), "{attempts:?}");

    let id = |hook: &Value| hook["id"].as_str().unwrap().to_owned();
    let flaky = id(&flaky);
    wait_until(
        Duration::from_secs(10),
        "the flaky receiver's delivery noted",
        || async {
            let hook = app.get_ok(&format!("/api/v1/webhooks/{flaky}")).await;
            (hook["last_delivery_at"].is_string() && hook["last_error"].is_null()).then_some(())
        },
    )
    .await;
    let broken = id(&broken);
    let error = wait_until(
        Duration::from_secs(10),
        "the broken receiver's error noted",
        || async {
            let hook = app.get_ok(&format!("/api/v1/webhooks/{broken}")).await;
            hook["last_error"].as_str().map(str::to_owned)
        },
    )
    .await;
    assert_eq!(error, "the receiver answered 500");
    let metrics = app.metrics().await.expect("/metrics answers");
    assert!(
        metrics.contains("leadline_webhook_deliveries_total{result=\"failed\"}"),
        "{metrics}"
    );
    app.stop().await;
}
