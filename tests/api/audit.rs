//! Every allowed change lands in the audit log (who, what, on which
//! object, from where), refused ones do not, values never do, and only admins read it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::postgres::PgServer;
use crate::helpers::TestApp;

const SIP_PASSWORD: &str = "sip-Secret-4711";
const IMAP_PASSWORD: &str = "imap-Secret-0815";

/// The whole log, newest first, read page by page with `limit` and `cursor`.
async fn read_log(app: &TestApp, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/audit?limit={limit}&cursor={c}"),
            None => format!("/api/v1/audit?limit={limit}"),
        };
        let page = app.get_ok(&path).await;
        let got = page["items"].as_array().expect("items").clone();
        assert!(got.len() <= limit as usize, "{page}");
        items.extend(got);
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

fn entries<'a>(log: &'a [Value], action: &str) -> Vec<&'a Value> {
    log.iter().filter(|e| e["action"] == action).collect()
}

#[tokio::test]
async fn allowed_changes_are_logged_with_names_not_values_and_only_admins_read_them() {
    let app = TestApp::spawn().await;
    changes_are_logged(&app).await;
    app.stop().await;
}

/// The same on PostgreSQL: the migration and the queries are portable.
#[tokio::test]
async fn allowed_changes_are_logged_on_postgres() {
    let server = PgServer::shared();
    let url = server.create_database("audit_log").await;
    let app = TestApp::spawn_with_database(&url).await;
    changes_are_logged(&app).await;
    app.stop().await;
}

async fn changes_are_logged(app: &TestApp) {
    let anna = app
        .post_ok(
            "/api/v1/users",
            json!({"name": "Anna", "email": "anna@example.com", "role": "agent",
                   "extension": "101", "sip_password": SIP_PASSWORD}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = app.token_for(&anna).await;

    // The agent creates a contact, the admin renames it.
    let (status, contact) = app
        .request(
            Method::POST,
            "/api/v1/contacts",
            Some(&token),
            Some(json!({"name": "Acme Buyer", "phones": ["+4930123456"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{contact}");
    let contact = contact["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/contacts/{contact}"),
            Some(&app.admin),
            Some(json!({"name": "Acme Purchasing"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A refused change changed nothing, so it is not in the log.
    let (status, body) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/contacts/{contact}"),
            Some(&app.admin),
            Some(json!({"stage": "won"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // A mailbox with an IMAP password, on a port where nothing listens.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mailbox = app
        .post_ok(
            "/api/v1/mailboxes",
            json!({"kind": "company", "host": "127.0.0.1", "port": closed_port,
                   "security": "none", "username": "sales@example.com", "password": IMAP_PASSWORD,
                   "check": "1h"}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, refused) = app
        .request(Method::GET, "/api/v1/audit", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");

    let log = read_log(app, 500).await;
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "POST /api/v1/mailboxes",
            "PATCH /api/v1/contacts/{id}",
            "POST /api/v1/contacts",
            "POST /api/v1/users/{id}/tokens",
            "POST /api/v1/users",
        ],
        "newest first, reads and the refused PATCH left out: {log:#?}"
    );
    let ats: Vec<&str> = log.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[0] >= w[1]), "{ats:?}");

    let patch = entries(&log, "PATCH /api/v1/contacts/{id}")[0];
    assert_eq!(patch["actor"], "bootstrap");
    assert_eq!(patch["object"], format!("contact:{contact}"));
    assert_eq!(patch["fields"], json!(["name"]));
    assert_eq!(patch["status"], 200);
    let created = entries(&log, "POST /api/v1/contacts")[0];
    assert_eq!(created["actor"], format!("user:{anna}"));
    assert_eq!(created["object"], format!("contact:{contact}"));
    assert_eq!(created["fields"], json!(["name", "phones"]));
    assert_eq!(created["status"], 201);
    let user = entries(&log, "POST /api/v1/users")[0];
    assert_eq!(user["object"], format!("user:{anna}"));
    assert_eq!(
        user["fields"],
        json!(["email", "extension", "name", "role", "sip_password"])
    );
    assert_eq!(
        entries(&log, "POST /api/v1/users/{id}/tokens")[0]["object"],
        format!("user:{anna}")
    );
    let mailbox_entry = entries(&log, "POST /api/v1/mailboxes")[0];
    assert_eq!(mailbox_entry["object"], format!("mailbox:{mailbox}"));
    assert!(
        mailbox_entry["fields"]
            .as_array()
            .unwrap()
            .contains(&json!("password")),
        "{mailbox_entry}"
    );
    for entry in &log {
        let addr = entry["remote_addr"].as_str().unwrap_or_default();
        assert!(addr.starts_with("127.0.0.1:"), "{entry}");
    }

    // Names only: neither password nor the token appears anywhere in the log.
    let text = serde_json::to_string(&log).unwrap();
    for secret in [SIP_PASSWORD, IMAP_PASSWORD, token.as_str()] {
        assert!(!text.contains(secret), "{secret} leaked into {text}");
    }

    // One object's history.
    let history = app
        .get_ok(&format!("/api/v1/audit?object=contact:{contact}"))
        .await;
    let history: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        ["PATCH /api/v1/contacts/{id}", "POST /api/v1/contacts"]
    );
}

#[tokio::test]
async fn the_log_pages_newest_first_with_limit_and_cursor() {
    let app = TestApp::spawn().await;
    for n in 0..5 {
        app.post_ok(
            "/api/v1/exceptions",
            json!({"value": format!("+49301234{n:03}")}),
            StatusCode::CREATED,
        )
        .await;
    }
    let whole = read_log(&app, 500).await;
    assert_eq!(whole.len(), 5, "{whole:#?}");
    let paged = read_log(&app, 2).await;
    assert_eq!(paged, whole, "pages of 2 walk the same log");
    let ids: Vec<&str> = whole.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    let first = app.get_ok("/api/v1/audit?limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["next"], whole[1]["id"]);
    let (status, body) = app
        .request(Method::GET, "/api/v1/audit?limit=0", Some(&app.admin), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "limit", "{body}");
    app.stop().await;
}

/// Entries are kept `audit_retention_days` (365 by default): the sweep deletes those
/// recorded before the cut-off and keeps the newer ones.
#[tokio::test]
async fn the_retention_sweep_deletes_entries_past_the_cut_off_only() {
    use leadline::store::{Store, now_ms};
    let app = TestApp::spawn().await;
    app.create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    assert!(!read_log(&app, 10).await.is_empty());
    let url = format!("sqlite://{}", app.data_dir().join("leadline.db").display());
    let store = Store::connect(&url).await.unwrap();
    let day = 24 * 3600 * 1000;
    assert_eq!(
        store.delete_audit_before(now_ms() - day).await.unwrap(),
        0,
        "entries of today stay"
    );
    let deleted = store.delete_audit_before(now_ms() + 1).await.unwrap();
    assert!(deleted >= 1, "{deleted}");
    assert!(read_log(&app, 10).await.is_empty());
    store.close().await;
    app.stop().await;
}

/// Each change writes its audit row in its own transaction: a change whose row the
/// database refuses answers 5xx and changes nothing, and a change that went through has
/// exactly one row, naming the object it created.
#[tokio::test]
async fn a_change_whose_audit_row_fails_is_rolled_back() {
    let app = TestApp::spawn().await;
    let url = format!("sqlite://{}", app.data_dir().join("leadline.db").display());
    audit_row_and_change_share_a_transaction(
        &app,
        &url,
        &["CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log \
           BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END"],
        "DROP TRIGGER audit_refused",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_change_whose_audit_row_fails_is_rolled_back_on_postgres() {
    let server = PgServer::shared();
    let url = server.create_database("audit_same_tx").await;
    let app = TestApp::spawn_with_database(&url).await;
    audit_row_and_change_share_a_transaction(
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

async fn audit_row_and_change_share_a_transaction(
    app: &TestApp,
    url: &str,
    refuse: &[&str],
    allow: &str,
) {
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(url).await.expect("database");

    let number = app
        .post_ok(
            "/api/v1/numbers",
            json!({"number": "+4930901820", "default_country": "DE"}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let object = format!("number:{number}");
    let history = app.get_ok(&format!("/api/v1/audit?object={object}")).await;
    let rows = history["items"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "one row for one change: {history}");
    assert_eq!(rows[0]["action"], "POST /api/v1/numbers");
    assert_eq!(rows[0]["status"], 201);
    assert_eq!(rows[0]["fields"], json!(["default_country", "number"]));
    let before = read_log(app, 500).await;
    let crm_before = app.get_ok("/api/v1/settings/crm").await;

    for statement in refuse {
        sqlx::query(sqlx::AssertSqlSafe(*statement))
            .execute(&db)
            .await
            .expect("trigger created");
    }
    let mode = if crm_before["mode"] == "simple" {
        "classic"
    } else {
        "simple"
    };
    let refused = [
        (
            Method::POST,
            "/api/v1/numbers".to_owned(),
            json!({"number": "+4930901821", "default_country": "DE"}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/numbers/{number}"),
            json!({"ring_timeout_s": 42}),
        ),
        (
            Method::PUT,
            "/api/v1/settings/crm".to_owned(),
            json!({"mode": mode}),
        ),
        (
            Method::DELETE,
            format!("/api/v1/numbers/{number}"),
            Value::Null,
        ),
    ];
    for (method, path, body) in refused {
        let body = (!body.is_null()).then_some(body);
        let (status, answer) = app
            .request(method.clone(), &path, Some(&app.admin), body)
            .await;
        assert!(
            status.is_server_error(),
            "{method} {path} without its audit row: {status} {answer}"
        );
        assert!(
            answer["error"]["code"].is_string(),
            "a JSON error: {answer}"
        );
    }

    // Nothing changed: the number is there as it was, alone, and so are the settings.
    let numbers = app.get_ok("/api/v1/numbers").await;
    let items = numbers["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{numbers}");
    assert_eq!(items[0]["id"], number.as_str());
    assert_ne!(items[0]["ring_timeout_s"], 42, "{numbers}");
    assert_eq!(app.get_ok("/api/v1/settings/crm").await, crm_before);

    sqlx::query(sqlx::AssertSqlSafe(allow))
        .execute(&db)
        .await
        .expect("trigger dropped");
    assert_eq!(
        read_log(app, 500).await,
        before,
        "no row for a refused change"
    );
    let (status, body) = app
        .request(
            Method::DELETE,
            &format!("/api/v1/numbers/{number}"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let history = app.get_ok(&format!("/api/v1/audit?object={object}")).await;
    let actions: Vec<(&str, u64)> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("DELETE /api/v1/numbers/{id}", 204),
            ("POST /api/v1/numbers", 201)
        ]
    );
    db.close().await;
}
