//! The store on PostgreSQL: the same scenarios as on SQLite, and M7 across two real
//! gateway processes sharing one database.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::postgres::PgServer;
use crate::common::wait_until;
use crate::helpers::TestApp;
use crate::scenarios;

macro_rules! on_postgres {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let server = PgServer::shared();
            let url = server.create_database(stringify!($name)).await;
            let app = TestApp::spawn_with_database(&url).await;
            scenarios::$name(&app).await;
            app.stop().await;
        }
    )*};
}

on_postgres!(
    t1_new_caller_creates_one_lead_then_is_matched,
    t3_simple_mode_creates_contact_and_deal,
    t6_exception_number_is_logged_only,
    repeated_event_creates_nothing_new,
    t13_call_lifecycle_and_missed_call,
    t4_manual_mode_creates_on_request,
    concurrent_steps_of_one_call_log_it_once,
    t10_transfer_changes_responsible_when_enabled,
    missed_call_back_closes_when_the_customer_is_reached,
);

/// A `leadline serve` process; killed on drop.
struct Gateway {
    /// Held so the process is killed when the test ends (`kill_on_drop`).
    _child: Child,
    base: String,
}

impl Gateway {
    async fn start(database_url: &str, admin_token: &str, data_dir: &std::path::Path) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_leadline"))
            .args([
                "serve",
                "--http",
                "127.0.0.1:0",
                "--sip",
                "127.0.0.1:0",
                "--smtp",
                "127.0.0.1:0",
                "--database-url",
                database_url,
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .env("LEADLINE_ADMIN_TOKEN", admin_token)
            .env("LEADLINE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start leadline");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        // The process logs its bound address: port 0 means the OS picked a free one.
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("http_addr=").nth(1) {
                    return rest.split_whitespace().next().map(str::to_owned);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("leadline logs its HTTP address");
        // Keep draining the log so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Gateway {
            _child: child,
            base: format!("http://{addr}"),
        }
    }
}

/// M7: 50 simultaneous `ringing` events from one new number, spread over two gateway
/// processes on one PostgreSQL, create exactly one lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m7_fifty_simultaneous_calls_over_two_processes_create_one_lead() {
    let server = PgServer::shared();
    let url = server.create_database("m7_two_processes").await;
    let token = "m7-test-admin-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let gateways = [
        Gateway::start(&url, token, dir.path()).await,
        Gateway::start(&url, token, dir.path()).await,
    ];
    let client = reqwest::Client::new();
    let post = |base: &str, path: &str, body: serde_json::Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let base = gateways[0].base.clone();
    let anna = post(
        &base,
        "/api/v1/users",
        json!({"name": "Anna", "email": "anna@example.com", "role": "agent"}),
    )
    .await
    .unwrap()
    .json::<serde_json::Value>()
    .await
    .unwrap()["id"]
        .clone();
    let queue = post(
        &base,
        "/api/v1/queues",
        json!({"name": "Sales", "members": [anna]}),
    )
    .await
    .unwrap()
    .json::<serde_json::Value>()
    .await
    .unwrap()["id"]
        .clone();
    let resp = post(
        &base,
        "/api/v1/numbers",
        json!({"number": "+4930901820", "queue": queue}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // The second process learns of the number by notification: wait until it routes a
    // withheld caller (logged only, nothing created) by the number's queue.
    let mut probes = 0;
    wait_until(
        Duration::from_secs(10),
        "the second process to know the number",
        || {
            probes += 1;
            let body = json!({"call_id": format!("probe-{probes}"), "event": "ringing",
                          "direction": "incoming", "from": "anonymous", "to": "+4930901820"});
            let request = post(&gateways[1].base, "/api/v1/calls/events", body);
            async move {
                let answer: serde_json::Value = request.await.ok()?.json().await.ok()?;
                (answer["route"].as_array()?.len() == 1).then_some(())
            }
        },
    )
    .await;

    let events = (0..50).map(|i| {
        let base = gateways[i % 2].base.clone();
        let body = json!({"call_id": format!("race-{i}"), "event": "ringing",
                          "direction": "incoming", "from": "030 1234567", "to": "+4930901820"});
        let request = post(&base, "/api/v1/calls/events", body);
        async move {
            let resp = request.await.expect("event sent");
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.expect("json answer");
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    });
    let answers = futures_join_all(events).await;
    let created: Vec<_> = answers
        .iter()
        .filter(|a| !a["created"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(created.len(), 1, "exactly one event creates the lead");
    let attached = answers
        .iter()
        .filter(|a| a["call"]["crm_action"] == "attached")
        .count();
    assert_eq!(attached, 49);

    let leads = wait_until(Duration::from_secs(10), "leads listed", || {
        let request = client
            .get(format!("{}/api/v1/leads?limit=500", gateways[1].base))
            .bearer_auth(token)
            .send();
        async move {
            let resp = request.await.ok()?;
            resp.json::<serde_json::Value>().await.ok()
        }
    })
    .await;
    assert_eq!(leads["items"].as_array().unwrap().len(), 1, "{leads}");
    // T9: one entity created, one queue turn taken.
    let queue = client
        .get(format!(
            "{}/api/v1/queues/{}",
            gateways[1].base,
            queue.as_str().unwrap()
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(queue["next"], anna);
    drop(gateways);
}

/// `join_all` without a futures dependency: spawn each on the runtime so they truly run
/// at once, then collect in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("task finished"));
    }
    out
}
