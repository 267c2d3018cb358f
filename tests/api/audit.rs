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
