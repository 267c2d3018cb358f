//! Erasure and export of a person's data: `POST /privacy/erase`, `GET /privacy/export`,
//! and the tombstones that keep replays and re-syncs from bringing the person back.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::dovecot::{DOMAIN, Dovecot};
use crate::common::wait_until;
use crate::helpers::TestApp;

const DEADLINE: Duration = Duration::from_secs(20);

const NAME: &str = "Greta Mustermann";
const PHONE: &str = "+49 30 5550123";
const ADDRESS: &str = "greta.mustermann@kunde.example";
/// Every form of the person that must be gone: the name, the address, the number as
/// E.164, in national forms and its subscriber part alone.
const TRACES: &[&str] = &[
    "Mustermann",
    "greta.mustermann",
    "+49305550123",
    "0305550123",
    "030 5550123",
    "30 5550123",
    "5550123",
];

async fn calls(app: &TestApp) -> Vec<Value> {
    app.get_ok("/api/v1/calls?limit=500").await["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn event(app: &TestApp, call_id: &str, event: &str, from: &str) -> Value {
    app.post_ok(
        "/api/v1/calls/events",
        json!({"call_id": call_id, "event": event, "direction": "incoming",
               "from": from, "to": "+4930901820"}),
        StatusCode::OK,
    )
    .await
}

/// The person as a contact with two calls: the API-level part of every test here.
async fn contact_with_calls(app: &TestApp) -> String {
    app.sales_line().await;
    let contact = app
        .post_ok(
            "/api/v1/contacts",
            json!({"name": NAME, "phones": [PHONE], "emails": [ADDRESS]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for call in ["greta-1", "greta-2"] {
        let answer = event(app, call, "ringing", PHONE).await;
        assert_eq!(answer["call"]["crm_action"], "attached", "{answer}");
        event(app, call, "ended", PHONE).await;
    }
    contact
}

/// The database the app writes, opened beside it to look at the outbox as stored.
async fn outbox_db(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(url).await.expect("the database")
}

/// Deliveries still owed to a webhook, held by a node that has not sent them yet: one
/// naming one of the person's calls, one naming only their number (a call update from
/// before the call was linked), one of someone else's.
async fn hold_deliveries(app: &TestApp, db: &sqlx::AnyPool, export: &Value) {
    let hook = app
        .post_ok(
            "/api/v1/webhooks",
            json!({"url": "https://crm.example.com/leadline", "events": ["call.ringing"]}),
            StatusCode::CREATED,
        )
        .await;
    let greta_call = export["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["call_id"] == "greta-1")
        .unwrap()["id"]
        .clone();
    for (id, data) in [
        ("owed-call", json!({"call": greta_call, "name": NAME})),
        (
            "owed-number",
            json!({"call": null, "customer": "+49305550123", "entity": null}),
        ),
        (
            "owed-other",
            json!({"call": "other", "customer": "+4917600000001", "name": "Otto"}),
        ),
    ] {
        sqlx::query(
            "INSERT INTO webhook_outbox \
             (id, webhook_id, event, body, created_at, claimed_by, claimed_until) \
             VALUES ($1, $2, 'call.ringing', $3, 0, 'another-node', $4)",
        )
        .bind(id)
        .bind(hook["id"].as_str().unwrap().to_owned())
        .bind(json!({"event": "call.ringing", "data": data}).to_string())
        .bind(i64::MAX)
        .execute(db)
        .await
        .unwrap();
    }
    assert_eq!(owed(db).await, ["owed-call", "owed-number", "owed-other"]);
}

/// The ids of the deliveries in the outbox.
async fn owed(db: &sqlx::AnyPool) -> Vec<String> {
    sqlx::query("SELECT id FROM webhook_outbox ORDER BY id")
        .fetch_all(db)
        .await
        .unwrap()
        .iter()
        .map(|r| sqlx::Row::get::<String, _>(r, "id"))
        .collect()
}

/// Nothing the API lists or shows names the person any more.
async fn api_forgot_the_person(app: &TestApp, contact: &str) {
    let (status, _) = app
        .request(
            Method::GET,
            &format!("/api/v1/contacts/{contact}"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let mut seen = String::new();
    for path in [
        "/api/v1/contacts?limit=500",
        "/api/v1/leads?limit=500",
        "/api/v1/deals?limit=500",
        "/api/v1/calls?limit=500",
        "/api/v1/emails?limit=500",
        "/api/v1/audit?limit=500",
    ] {
        seen.push_str(&app.get_ok(path).await.to_string());
    }
    for trace in TRACES {
        assert!(!seen.contains(trace), "the API still shows {trace}: {seen}");
    }
}

/// A replayed event of an erased call is a repeat that creates nothing; a new call from
/// the same number is new data and makes a new lead (M7: one lead, not two).
async fn replay_creates_nothing_a_new_call_a_lead(app: &TestApp) {
    let leads_before = app.leads().await.len();
    let calls_before = calls(app).await.len();
    for step in ["ringing", "ended"] {
        let replayed = event(app, "greta-1", step, PHONE).await;
        assert_eq!(replayed["repeated"], true, "{replayed}");
        assert_eq!(replayed["created"], json!([]), "{replayed}");
    }
    assert_eq!(app.leads().await.len(), leads_before);
    assert_eq!(calls(app).await.len(), calls_before);

    let fresh = event(app, "greta-3", "ringing", PHONE).await;
    assert_eq!(fresh["call"]["crm_action"], "created", "{fresh}");
    let again = event(app, "greta-4", "ringing", PHONE).await;
    assert_eq!(again["call"]["crm_action"], "attached", "{again}");
    assert_eq!(app.leads().await.len(), leads_before + 1);
}

async fn erase(app: &TestApp, entity: &str) -> Value {
    app.post_ok(
        "/api/v1/privacy/erase",
        json!({"entity": entity}),
        StatusCode::OK,
    )
    .await
}

/// Every file under `dir`, with its bytes.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            found.push((path, bytes));
        }
    }
    found
}

fn no_trace_on_disk(dir: &std::path::Path) {
    let files = files(dir);
    assert!(
        files
            .iter()
            .any(|(p, _)| p.file_name().unwrap() == "leadline.db"),
        "{files:?}"
    );
    let mut hits = Vec::new();
    for (path, bytes) in &files {
        for trace in TRACES {
            let lower = bytes.to_ascii_lowercase();
            let needle = trace.to_ascii_lowercase();
            if let Some(at) = lower
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
            {
                let around = &bytes[at.saturating_sub(80)..(at + 80).min(bytes.len())];
                hits.push(format!(
                    "{} holds {trace} at {at}: {}",
                    path.display(),
                    String::from_utf8_lossy(around)
                ));
            }
        }
    }
    assert!(hits.is_empty(), "{hits:#?}");
}

fn message(from: &str, to: &str, subject: &str, id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nContent-Type: text/plain; charset=utf-8\r\n\
         \r\n{body}\r\n"
    )
    .into_bytes()
}

/// The person's own words: their name and number in the body too.
fn greta_says() -> String {
    format!("Guten Tag, hier {NAME}, Telefon {PHONE}.")
}

async fn add_mailbox(app: &TestApp, dovecot: &Dovecot) -> String {
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
    wait_until(DEADLINE, "the mailbox to be idle", || async {
        let value = app.get_ok(&format!("/api/v1/mailboxes/{mailbox}")).await;
        (value["state"] == "idle").then_some(())
    })
    .await;
    mailbox
}

async fn wait_for_subject(app: &TestApp, subject: &str) -> Value {
    wait_until(DEADLINE, "the message to be collected", || async {
        let items = app.get_ok("/api/v1/emails?limit=500").await["items"]
            .as_array()
            .unwrap()
            .clone();
        items.into_iter().find(|e| e["subject"] == subject)
    })
    .await
}

/// The whole erasure on the embedded database: a contact with calls (one recorded), a
/// voicemail, an e-mail from a real IMAP mailbox and one through the forward address.
/// The export holds all of it; after the erasure neither the API nor any file of the
/// data dir (database, WAL, recordings) holds the name, number or address; re-adding
/// the mailbox re-syncs without bringing the person back; a replayed call event
/// creates nothing and a new call is a new lead (M7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m7_erasure_leaves_no_trace_and_replays_do_not_bring_the_person_back() {
    let app = TestApp::spawn().await;
    let contact = contact_with_calls(&app).await;
    let store = app.app.as_ref().unwrap().store.clone();
    let recordings = app.data_dir().join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    // A recorded call and a voicemail message, kept as the B2BUA keeps them.
    let mut files = Vec::new();
    for (call, voicemail) in [("greta-2", false), ("greta-vm", true)] {
        if voicemail {
            event(&app, call, "ringing", PHONE).await;
            event(&app, call, "ended", PHONE).await;
        }
        let file = format!("{call}.wav");
        std::fs::write(
            recordings.join(&file),
            format!("RIFF recording of {NAME} {PHONE}"),
        )
        .unwrap();
        store
            .set_call_media(
                call,
                None,
                Some(&leadline::store::StoredRecording {
                    file: file.clone(),
                    duration_ms: 1000,
                    voicemail,
                }),
            )
            .await
            .unwrap();
        files.push(file);
    }

    let dovecot = Dovecot::start();
    let mailbox = add_mailbox(&app, &dovecot).await;
    dovecot
        .deliver(
            "alice",
            &message(
                &format!("{NAME} <{ADDRESS}>"),
                &format!("alice@{DOMAIN}"),
                "Angebot bitte",
                "greta-mail-1@kunde.example",
                &greta_says(),
            ),
        )
        .await;
    let imap = wait_for_subject(&app, "Angebot bitte").await;
    assert_eq!(imap["crm_action"], "attached", "{imap}");

    app.create_user("Carl", "carl@example.com", "agent", "103")
        .await;
    let forward = app.get_ok("/api/v1/settings/forward").await["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let sent = dir.path().join("sent.eml");
    std::fs::write(
        &sent,
        message(
            "Carl <carl@example.com>",
            &format!("{NAME} <{ADDRESS}>"),
            "Ihr Angebot",
            "greta-mail-2@example.com",
            &greta_says(),
        ),
    )
    .unwrap();
    let data = format!("@{}", sent.display());
    crate::mail::swaks(
        &app,
        &[
            "--protocol",
            "LMTP",
            "--to",
            &forward,
            "--from",
            "carl@example.com",
            "--data",
            &data,
        ],
    )
    .await;
    let forwarded = wait_for_subject(&app, "Ihr Angebot").await;
    assert_eq!(forwarded["crm_action"], "attached", "{forwarded}");

    // The export holds every item created for the person.
    let export = app
        .get_ok(&format!("/api/v1/privacy/export?entity=contact:{contact}"))
        .await;
    assert_eq!(export["entity"], format!("contact:{contact}"));
    assert_eq!(export["entities"][0]["name"], NAME, "{export}");
    let text = export.to_string();
    assert!(
        text.contains("+49305550123") && text.contains(ADDRESS),
        "{export}"
    );
    let call_ids: Vec<&str> = export["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_id"].as_str().unwrap())
        .collect();
    for call in ["greta-1", "greta-2", "greta-vm"] {
        assert!(call_ids.contains(&call), "{call} in {call_ids:?}");
    }
    let recorded = export["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["recording_url"].is_string())
        .count();
    assert_eq!(recorded, 2, "{export}");
    assert_eq!(export["voicemails"].as_array().unwrap().len(), 1);
    assert_eq!(export["voicemails"][0]["call_id"], "greta-vm");
    let activities = export["activities"].as_array().unwrap();
    assert_eq!(activities.len(), 5, "three calls and two e-mails: {export}");
    use base64::Engine as _;
    let raws: Vec<String> = export["emails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(e["raw_base64"].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(raws.len(), 2, "{export}");
    for id in ["greta-mail-1@kunde.example", "greta-mail-2@example.com"] {
        assert!(raws.iter().any(|r| r.contains(id)), "{id} in {raws:?}");
    }

    // Bad references and unknown people.
    let (status, body) = app
        .request(
            Method::POST,
            "/api/v1/privacy/erase",
            Some(&app.admin),
            Some(json!({"entity": "deal:x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "entity", "{body}");
    let (status, _) = app
        .request(
            Method::POST,
            "/api/v1/privacy/erase",
            Some(&app.admin),
            Some(json!({"entity": "contact:nobody"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let db = outbox_db(&format!(
        "sqlite:{}",
        app.data_dir().join("leadline.db").display()
    ))
    .await;
    hold_deliveries(&app, &db, &export).await;

    let erased = erase(&app, &format!("contact:{contact}")).await;
    assert_eq!(
        erased,
        json!({"erased": {"entities": 1, "activities": 5, "calls": 3, "emails": 2,
                          "recordings": 2}})
    );
    assert_eq!(
        owed(&db).await,
        ["owed-other"],
        "the person's deliveries are gone from the outbox, the other's stays"
    );
    db.close().await;
    for file in &files {
        assert!(!recordings.join(file).exists(), "{file} deleted");
    }
    let kept = calls(&app).await;
    assert_eq!(kept.len(), 3, "calls kept for statistics: {kept:?}");
    api_forgot_the_person(&app, &contact).await;
    let audit = app
        .get_ok(&format!("/api/v1/audit?object=contact:{contact}"))
        .await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "ERASE"),
        "{audit}"
    );

    // The mailbox removed and added again: it re-syncs, without the erased message.
    let (status, _) = app
        .request(
            Method::DELETE,
            &format!("/api/v1/mailboxes/{mailbox}"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    add_mailbox(&app, &dovecot).await;
    dovecot
        .deliver(
            "alice",
            &message(
                "Otto <otto@other.example>",
                &format!("alice@{DOMAIN}"),
                "Nach der Loeschung",
                "otto-1@other.example",
                "Guten Tag, hier Otto.",
            ),
        )
        .await;
    wait_for_subject(&app, "Nach der Loeschung").await;
    let emails = app.get_ok("/api/v1/emails?limit=500").await;
    assert_eq!(emails["items"].as_array().unwrap().len(), 1, "{emails}");
    let contacts = app.get_ok("/api/v1/contacts?limit=500").await;
    assert_eq!(contacts["items"], json!([]), "{contacts}");
    api_forgot_the_person(&app, &contact).await;
    no_trace_on_disk(app.data_dir());

    replay_creates_nothing_a_new_call_a_lead(&app).await;
    app.stop().await;
}

/// The API-level part on PostgreSQL: erasure of a contact with calls and of the outbox
/// deliveries that name them, the replayed event and the new call (M7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m7_erasure_on_postgresql() {
    let server = crate::common::postgres::PgServer::shared();
    let url = server.create_database("privacy_erase").await;
    let db = outbox_db(&url).await;
    let app = TestApp::spawn_with(|config, _| config.database_url = url).await;
    let contact = contact_with_calls(&app).await;
    let export = app
        .get_ok(&format!("/api/v1/privacy/export?entity=contact:{contact}"))
        .await;
    assert_eq!(export["calls"].as_array().unwrap().len(), 2, "{export}");
    hold_deliveries(&app, &db, &export).await;
    let erased = erase(&app, &format!("contact:{contact}")).await;
    assert_eq!(
        erased,
        json!({"erased": {"entities": 1, "activities": 2, "calls": 2, "emails": 0,
                          "recordings": 0}})
    );
    assert_eq!(
        owed(&db).await,
        ["owed-other"],
        "the person's deliveries are gone"
    );
    db.close().await;
    api_forgot_the_person(&app, &contact).await;
    replay_creates_nothing_a_new_call_a_lead(&app).await;
    app.stop().await;
}

/// Erasing `jörg@example.com` takes the delivery owed that names `JÖRG@Example.com` and
/// keeps the one naming `JÄRG@Example.com`, which the database's ASCII-only `LOWER` and
/// `LIKE` also offer as a candidate (M3: addresses compared in any capitals, non-ASCII
/// ones too; M7: nothing owed names the erased person).
async fn erasure_purges_the_address_in_non_ascii_capitals(app: &TestApp, db: &sqlx::AnyPool) {
    let contact = app
        .post_ok(
            "/api/v1/contacts",
            json!({"name": "Jörg Überall", "emails": ["jörg@example.com"]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hook = app
        .post_ok(
            "/api/v1/webhooks",
            json!({"url": "https://crm.example.com/leadline", "events": ["email.ingested"]}),
            StatusCode::CREATED,
        )
        .await;
    for (id, from) in [
        ("owed-jarg", "JÄRG@Example.com"),
        ("owed-jorg", "Jörg <JÖRG@Example.com>"),
    ] {
        sqlx::query(
            "INSERT INTO webhook_outbox \
             (id, webhook_id, event, body, created_at, claimed_by, claimed_until) \
             VALUES ($1, $2, 'email.ingested', $3, 0, 'another-node', $4)",
        )
        .bind(id)
        .bind(hook["id"].as_str().unwrap().to_owned())
        .bind(json!({"event": "email.ingested", "data": {"from": from}}).to_string())
        .bind(i64::MAX)
        .execute(db)
        .await
        .unwrap();
    }
    assert_eq!(owed(db).await, ["owed-jarg", "owed-jorg"]);
    erase(app, &format!("contact:{contact}")).await;
    assert_eq!(
        owed(db).await,
        ["owed-jarg"],
        "the delivery naming the person in capitals is gone, the other address's stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m3_m7_erasure_purges_deliveries_naming_the_address_in_non_ascii_capitals() {
    let app = TestApp::spawn().await;
    let db = outbox_db(&format!(
        "sqlite:{}",
        app.data_dir().join("leadline.db").display()
    ))
    .await;
    erasure_purges_the_address_in_non_ascii_capitals(&app, &db).await;
    db.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m3_m7_erasure_purges_deliveries_naming_the_address_in_non_ascii_capitals_on_postgresql() {
    let server = crate::common::postgres::PgServer::shared();
    let url = server.create_database("privacy_erase_capitals").await;
    let db = outbox_db(&url).await;
    let app = TestApp::spawn_with(|config, _| config.database_url = url).await;
    erasure_purges_the_address_in_non_ascii_capitals(&app, &db).await;
    db.close().await;
    app.stop().await;
}

/// An erasure a crash interrupted after its plan was written is finished at the next
/// start, and erasing a lead takes the lead alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_erasure_is_finished_at_start() {
    let mut app = TestApp::spawn().await;
    app.sales_line().await;
    event(&app, "walter-1", "ringing", "+49 30 5550999").await;
    let lead = app.leads().await[0]["id"].as_str().unwrap().to_owned();
    let store = app.app.as_ref().unwrap().store.clone();
    let entity = format!("lead:{lead}").parse().unwrap();
    // The plan and the tombstones are committed; the process dies before the rows go.
    store.start_erasure(&entity).await.unwrap();
    assert_eq!(app.leads().await.len(), 1);
    app.restart().await;
    wait_until(DEADLINE, "the erasure to be finished", || async {
        app.leads().await.is_empty().then_some(())
    })
    .await;
    let calls = calls(&app).await;
    assert_eq!(calls.len(), 1);
    assert!(!calls[0].to_string().contains("5550999"), "{calls:?}");
    app.stop().await;
}
