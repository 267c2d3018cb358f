//! `POST /mailboxes/{id}/dry-run` over messages collected from a real Dovecot: other
//! settings show their per-message difference, and nothing is written.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::dovecot::{DOMAIN, Dovecot};
use crate::common::wait_until;
use crate::decisions::dump;
use crate::helpers::TestApp;

/// Long enough for an IDLE wake-up on a loaded machine.
const MAIL_DEADLINE: Duration = Duration::from_secs(30);

fn message(from: &str, id: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <alice@{DOMAIN}>\r\nSubject: Anfrage {id}\r\n\
         Message-ID: <{id}@example.org>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nGuten Tag.\r\n"
    )
    .into_bytes()
}

/// The items of a dry-run by the sender of each message.
async fn dry_run(app: &TestApp, mailbox: &str, body: Value) -> Vec<(String, Value)> {
    let run = app
        .post_ok(
            &format!("/api/v1/mailboxes/{mailbox}/dry-run"),
            body,
            StatusCode::OK,
        )
        .await;
    let mut out = Vec::new();
    for item in run["items"].as_array().unwrap() {
        let email = app
            .get_ok(&format!(
                "/api/v1/emails/{}",
                item["email"].as_str().unwrap()
            ))
            .await;
        out.push((email["from"].as_str().unwrap().to_owned(), item.clone()));
    }
    out
}

fn of<'a>(items: &'a [(String, Value)], from: &str) -> &'a Value {
    &items.iter().find(|(f, _)| f == from).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e3_e4_e7_e8_a_mailbox_dry_run_shows_other_settings_per_message_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let line = app.sales_line().await;
    app.post_ok(
        "/api/v1/contacts",
        json!({"name": "Stammkunde", "emails": ["stamm@kunde.example"]}),
        StatusCode::CREATED,
    )
    .await;
    let dovecot = Dovecot::start();
    let mailbox = app
        .post_ok(
            "/api/v1/mailboxes",
            json!({"name": "Sales inbox", "kind": "company", "host": "127.0.0.1",
                   "port": dovecot.imap_port(), "security": "none", "username": "alice",
                   "password": dovecot.password("alice"), "address": format!("alice@{DOMAIN}"),
                   "check": "idle", "sync_window_days": null}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(MAIL_DEADLINE, "the mailbox to idle", || async {
        let value = app.get_ok(&format!("/api/v1/mailboxes/{mailbox}")).await;
        (value["state"] == "idle").then_some(())
    })
    .await;
    for (from, id) in [
        ("neu@kunde.example", "m1"),
        ("stamm@kunde.example", "m2"),
        ("spam@werbung.example", "m3"),
    ] {
        dovecot.deliver("alice", &message(from, id)).await;
    }
    wait_until(
        MAIL_DEADLINE,
        "the three messages to be collected",
        || async {
            let items = app.get_ok("/api/v1/emails?limit=10").await;
            (items["items"].as_array().unwrap().len() == 3).then_some(())
        },
    )
    .await;

    let before = dump(&app).await;
    // Lead creation off (E3): the new senders' messages would only be stored; the known
    // customer's still goes on the contact (E7).
    let off = dry_run(
        &app,
        &mailbox,
        json!({"settings": {"create_leads_incoming": false}, "last": 100}),
    )
    .await;
    assert_eq!(off.len(), 3, "{off:?}");
    for from in ["neu@kunde.example", "spam@werbung.example"] {
        let item = of(&off, from);
        let created = item["actual"]["created"].as_array().unwrap();
        assert!(created[0].as_str().unwrap().starts_with("lead:"), "{item}");
        assert_eq!(item["actual"]["activity"], true, "E8: {item}");
        assert_eq!(
            item["proposed"],
            json!({"created": [], "activity": false}),
            "E3: {item}"
        );
    }
    let known = of(&off, "stamm@kunde.example");
    assert_eq!(known["actual"], json!({"created": [], "activity": true}));
    assert_eq!(known["proposed"], known["actual"], "E7: {known}");

    // A blacklisted domain (E4) keeps its sender out; the others as they were.
    let listed = dry_run(
        &app,
        &mailbox,
        json!({"settings": {"blacklist": ["@werbung.example"]}}),
    )
    .await;
    assert_eq!(
        of(&listed, "spam@werbung.example")["proposed"],
        json!({"created": [], "activity": false})
    );
    assert_eq!(
        of(&listed, "neu@kunde.example")["proposed"],
        json!({"created": ["lead"], "activity": true}),
        "E8: the settings as they are create the lead again"
    );
    // The token's last use and the node's heartbeat are the gateway's own bookkeeping.
    let after = dump(&app).await;
    let changed: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, _)| b.0.as_str())
        .filter(|table| !matches!(*table, "tokens" | "nodes"))
        .collect();
    assert_eq!(before.len(), after.len());
    assert!(
        changed.is_empty(),
        "a dry-run writes nothing: {changed:?} changed"
    );

    let path = format!("/api/v1/mailboxes/{mailbox}/dry-run");
    for (body, field) in [
        (json!({"last": 0}), "last"),
        (json!({"last": 1001}), "last"),
        (json!({"settings": {"queue": "nope"}}), "queue"),
        (
            json!({"settings": {"blacklist": ["+4930123456"]}}),
            "blacklist[0]",
        ),
    ] {
        let (status, err) = app
            .request(
                reqwest::Method::POST,
                &path,
                Some(&app.admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{err}");
    }
    let (status, _) = app
        .request(
            reqwest::Method::POST,
            "/api/v1/mailboxes/nope/dry-run",
            Some(&app.admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let agent = app.token_for(&line.anna).await;
    let (status, _) = app
        .request(reqwest::Method::POST, &path, Some(&agent), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "A1: admins only");
    app.stop().await;
}
