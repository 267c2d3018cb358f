//! Several nodes on one PostgreSQL: events published on one node reach the event stream
//! of the others; webhook deliveries live in the outbox until delivered.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::calls_sip::CallWindow;
use crate::common::postgres::PgServer;
use crate::helpers::TestApp;

/// A second node on the same database as `a`, with its own data dir.
async fn second_node(url: &str, dir: &std::path::Path) -> leadline::App {
    let mut config = crate::helpers::test_config(dir);
    config.database_url = url.to_owned();
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

async fn ringing(app: &TestApp, call_id: &str) {
    app.post_ok(
        "/api/v1/calls/events",
        json!({"call_id": call_id, "event": "ringing", "direction": "incoming",
               "from": "+4917612345678", "to": "+4930901820"}),
        StatusCode::OK,
    )
    .await;
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
