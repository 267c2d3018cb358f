//! The audit rows of pushed call events, sign-ins and click-to-calls are written in their
//! change's own transaction: with a trigger refusing audit rows, each answers 5xx and
//! changes nothing (no event applied, no session, no call placed); without it, each
//! request writes exactly one row. On SQLite and PostgreSQL, with SIPp as the agent's
//! registered phone.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::calls_sip::NUMBER;
use crate::common::postgres::PgServer;
use crate::dial::{CUSTOMER, DialLine};
use crate::helpers::TestApp;

const ANNA_PASSWORD: &str = "anna-console-2026";
const CALL_EVENTS: &str = "POST /api/v1/calls/events";
const SIGN_IN: &str = "POST /api/v1/session";
const DIAL: &str = "POST /api/v1/calls/dial";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sign_ins_and_click_to_calls_are_not_made_without_their_audit_row() {
    let app = TestApp::spawn_for_sipp().await;
    let url = format!("sqlite://{}", app.data_dir().join("leadline.db").display());
    audit_rows_share_their_changes_transaction(
        &app,
        &url,
        &["CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log \
           BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END"],
        "DROP TRIGGER audit_refused",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sign_ins_and_click_to_calls_are_not_made_without_their_audit_row_on_postgres() {
    let server = PgServer::shared();
    let url = server.create_database("audit_in_tx").await;
    let database = url.clone();
    let app = TestApp::spawn_for_sipp_with(move |config| config.database_url = database).await;
    audit_rows_share_their_changes_transaction(
        &app,
        &url,
        &[
            "CREATE FUNCTION audit_refused() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'audit refused by the test'; END $$",
            "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log \
             FOR EACH ROW EXECUTE FUNCTION audit_refused()",
        ],
        "DROP TRIGGER audit_refused ON audit_log",
    )
    .await;
    app.stop().await;
}

/// The whole log, oldest first (the rows of concurrent requests in any order).
async fn log(app: &TestApp) -> Vec<Value> {
    let mut items = app.get_ok("/api/v1/audit?limit=500").await["items"]
        .as_array()
        .expect("items")
        .clone();
    items.reverse();
    items
}

fn event(call_id: &str, kind: &str, from: &str) -> Value {
    json!({"call_id": call_id, "event": kind, "direction": "incoming",
           "from": from, "to": NUMBER})
}

async fn push(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.request(
        Method::POST,
        "/api/v1/calls/events",
        Some(&app.admin),
        Some(body),
    )
    .await
}

async fn sign_in(app: &TestApp) -> (StatusCode, Value) {
    app.request(
        Method::POST,
        "/api/v1/session",
        None,
        Some(json!({"email": "anna@example.com", "password": ANNA_PASSWORD})),
    )
    .await
}

async fn count(db: &sqlx::AnyPool, sql: &'static str) -> i64 {
    let row = sqlx::query(sql).fetch_one(db).await.expect("count");
    sqlx::Row::try_get::<i64, _>(&row, 0).expect("a number")
}

fn assert_refused(what: &str, status: StatusCode, answer: &Value) {
    assert!(
        status.is_server_error(),
        "{what} without its audit row: {status} {answer}"
    );
    assert!(
        answer["error"]["code"].is_string(),
        "{what}: a JSON error: {answer}"
    );
}

async fn audit_rows_share_their_changes_transaction(
    app: &TestApp,
    url: &str,
    refuse: &[&str],
    allow: &str,
) {
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(url).await.expect("database");
    let line = DialLine::new(app, 5).await;
    let (status, body) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/users/{}", line.anna),
            Some(&app.admin),
            Some(json!({"password": ANNA_PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A call in the log already: its `answered` goes through the call steps' writer.
    let (status, body) = push(app, event("logged-1", "ringing", "+4917610000001")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let phone = line.agent_phone(app, "agent_no_answer.xml").await;

    let before = log(app).await;
    let calls_before = count(&db, "SELECT COUNT(*) FROM calls").await;
    let events_before = count(&db, "SELECT COUNT(*) FROM call_events").await;
    for statement in refuse {
        sqlx::query(sqlx::AssertSqlSafe(*statement))
            .execute(&db)
            .await
            .expect("trigger created");
    }

    // Pushed events: an opening one alone, several at once (one batch of the intake's
    // group commit, replayed job by job when it fails), and a later step of a logged call.
    let (status, answer) = push(app, event("refused-1", "ringing", "+4917620000001")).await;
    assert_refused("a ringing event", status, &answer);
    let pushes = (0..8).map(|n| {
        push(
            app,
            event(
                &format!("refused-batch-{n}"),
                "ringing",
                &format!("+491762000010{n}"),
            ),
        )
    });
    for (status, answer) in futures_util::future::join_all(pushes).await {
        assert_refused("a ringing event of a batch", status, &answer);
    }
    let (status, answer) = push(app, event("logged-1", "answered", "+4917610000001")).await;
    assert_refused("an answered event", status, &answer);
    // Sign-in and click-to-call.
    let (status, answer) = sign_in(app).await;
    assert_refused("a sign-in", status, &answer);
    let (status, answer) = line.dial(app, json!({"to": CUSTOMER})).await;
    assert_refused("a click-to-call", status, &answer);

    // Nothing changed: no call, no event, no session; the phone was not rung.
    assert_eq!(count(&db, "SELECT COUNT(*) FROM calls").await, calls_before);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM call_events").await,
        events_before
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sessions").await, 0);
    let logged = app.get_ok("/api/v1/calls?limit=500").await;
    assert_eq!(logged["items"].as_array().unwrap().len(), 1, "{logged:#}");
    sqlx::query(sqlx::AssertSqlSafe(allow))
        .execute(&db)
        .await
        .expect("trigger dropped");
    assert_eq!(log(app).await, before, "no row for a change not made");

    // Each request that went through has exactly one row.
    let (status, body) = push(app, event("allowed-1", "ringing", "+4917630000001")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pushes = (0..8).map(|n| {
        push(
            app,
            event(
                &format!("allowed-batch-{n}"),
                "ringing",
                &format!("+491763000010{n}"),
            ),
        )
    });
    for (status, body) in futures_util::future::join_all(pushes).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = push(app, event("logged-1", "answered", "+4917610000001")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A repeat is answered, so it is recorded too.
    let (status, body) = push(app, event("logged-1", "answered", "+4917610000001")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = sign_in(app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = line.dial(app, json!({"to": CUSTOMER})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (ok, rang) = phone.finish().await;
    assert!(ok, "Anna's phone rang for the click-to-call: {rang}");

    let after = log(app).await;
    let mut new: Vec<(&str, &str, u64)> = after[before.len()..]
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let anna = format!("user:{}", line.anna);
    let mut expected = vec![(CALL_EVENTS, "bootstrap", 200); 11];
    expected.push((SIGN_IN, anna.as_str(), 200));
    expected.push((DIAL, anna.as_str(), 202));
    new.sort_unstable();
    expected.sort_unstable();
    assert_eq!(new, expected, "{after:#?}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sessions").await, 1);
    db.close().await;
}
