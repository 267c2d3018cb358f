//! Decision records end to end: calls pushed over `/calls/events` and a message
//! collected from a real Dovecot show why they did what they did, on the call, the
//! e-mail and the activity, on SQLite and PostgreSQL.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::dovecot::{DOMAIN, Dovecot};
use crate::common::wait_until;
use crate::helpers::TestApp;

/// Long enough for an IDLE wake-up on a loaded machine.
const MAIL_DEADLINE: Duration = Duration::from_secs(20);

fn has_rule(decision: &Value, rule: &str) -> bool {
    decision["rules"]
        .as_array()
        .is_some_and(|rules| rules.iter().any(|r| r == rule))
}

async fn call_of(app: &TestApp, call_id: &str) -> Value {
    let calls = app.get_ok("/api/v1/calls?limit=500").await;
    calls["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["call_id"] == call_id)
        .unwrap_or_else(|| panic!("call {call_id} in {calls}"))
        .clone()
}

async fn calls_mail_and_activities_carry_their_decision(app: &TestApp) {
    app.sales_line().await;
    let contact = app
        .post_ok(
            "/api/v1/contacts",
            json!({"name": "Kunde GmbH", "phones": ["+4930123456"],
                   "emails": ["Kunde@Example.org"]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A known contact, dialled in a national spelling.
    app.ringing("known-1", "030 123456").await;
    let known = call_of(app, "known-1").await;
    let decision = &known["decision"];
    assert_eq!(decision["identifiers"], json!(["+4930123456"]), "{known}");
    assert_eq!(
        decision["candidates"][0]["entity"],
        format!("contact:{contact}")
    );
    let why = decision["candidates"][0]["why"].as_str().unwrap();
    assert!(why.contains("normalised from '030 123456'"), "{why}");
    assert!(
        has_rule(decision, "M2") && has_rule(decision, "M8"),
        "{decision}"
    );
    assert_eq!(
        decision["outcome"],
        format!("attached to contact:{contact}")
    );

    // A new caller becomes a lead for the queue's next member.
    app.ringing("new-1", "+4930999888").await;
    let new = call_of(app, "new-1").await;
    let lead = new["created"][0].as_str().unwrap().to_owned();
    assert!(lead.starts_with("lead:"), "{new}");
    let decision = &new["decision"];
    assert!(decision["candidates"].as_array().unwrap().is_empty());
    for rule in ["T3", "M7", "T9"] {
        assert!(has_rule(decision, rule), "{rule} in {decision}");
    }
    assert_eq!(decision["outcome"], format!("created {lead}"));
    let timeline = app
        .get_ok(&format!("/api/v1/activities?entity={lead}"))
        .await;
    assert_eq!(
        timeline["items"][0]["decision"], new["decision"],
        "{timeline}"
    );

    // The same customer by e-mail: the address and its domain were tried (M3, E7).
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
    let message = format!(
        "From: Kunde <Kunde@Example.org>\r\nTo: <alice@{DOMAIN}>\r\nSubject: Frage\r\n\
         Message-ID: <d1@example.org>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nGuten Tag.\r\n"
    );
    dovecot.deliver("alice", message.as_bytes()).await;
    let email = wait_until(MAIL_DEADLINE, "the message to be collected", || async {
        let items = app.get_ok("/api/v1/emails?limit=10").await;
        items["items"].as_array().unwrap().first().cloned()
    })
    .await;
    let decision = &email["decision"];
    assert_eq!(
        decision["identifiers"],
        json!(["kunde@example.org", "@example.org"]),
        "{email}"
    );
    assert_eq!(
        decision["candidates"][0]["entity"],
        format!("contact:{contact}")
    );
    assert!(
        has_rule(decision, "M3") && has_rule(decision, "E7"),
        "{decision}"
    );
    assert!(
        !has_rule(decision, "T1"),
        "no telephony rule on mail: {decision}"
    );
    assert_eq!(
        decision["outcome"],
        format!("attached to contact:{contact}")
    );
    let one = app
        .get_ok(&format!("/api/v1/emails/{}", email["id"].as_str().unwrap()))
        .await;
    assert_eq!(one["decision"], email["decision"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_m3_m8_t3_e7_calls_mail_and_activities_carry_their_decision() {
    let app = TestApp::spawn().await;
    calls_mail_and_activities_carry_their_decision(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_m3_m8_t3_e7_calls_mail_and_activities_carry_their_decision_on_postgresql() {
    let server = crate::common::postgres::PgServer::shared();
    let url = server.create_database("decisions").await;
    let app = TestApp::spawn_with(|config, _| config.database_url = url).await;
    calls_mail_and_activities_carry_their_decision(&app).await;
    app.stop().await;
}

/// Every table of the SQLite database as text, table by table, in rowid order.
pub(crate) async fn dump(app: &TestApp) -> Vec<(String, String)> {
    use sqlx::{Connection as _, Row as _};
    let db = app.data_dir().join("leadline.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|row| row.get::<String, _>(0))
    .collect();
    let mut out = Vec::new();
    for table in tables {
        let columns: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT name FROM pragma_table_info('{table}')"
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|row| format!("quote(\"{}\")", row.get::<String, _>(0)))
        .collect();
        let text: Option<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT group_concat(line, char(10)) FROM \
             (SELECT {} AS line FROM \"{table}\" ORDER BY rowid)",
            columns.join(" || ',' || ")
        )))
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
        out.push((table, text.unwrap_or_default()));
    }
    conn.close().await.unwrap();
    out
}

/// The dry-run replays 20 past calls with another queue and lead creation through the
/// intake's own decision, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_t5_t9_a_dry_run_replays_the_last_calls_with_other_settings_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let line = app.sales_line().await;
    let support = app
        .post_ok(
            "/api/v1/queues",
            json!({"name": "Support", "members": [line.ben]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post_ok(
        "/api/v1/contacts",
        json!({"name": "Stammkunde", "phones": ["+4930100000"], "responsible": line.anna}),
        StatusCode::CREATED,
    )
    .await;
    // 15 new callers and 5 calls of the known contact, interleaved.
    let mut known = Vec::new();
    for n in 0..20 {
        let call_id = format!("past-{n:02}");
        if n % 4 == 3 {
            app.ringing(&call_id, "+4930100000").await;
            known.push(call_id);
        } else {
            app.ringing(&call_id, &format!("+49302000{n:02}")).await;
        }
    }
    let calls = app.get_ok("/api/v1/calls?limit=500").await["items"]
        .as_array()
        .unwrap()
        .clone();
    let call_id_of = |id: &Value| {
        calls
            .iter()
            .find(|c| &c["id"] == id)
            .map(|c| c["call_id"].as_str().unwrap().to_owned())
            .unwrap()
    };

    let before = dump(&app).await;
    let run = app
        .post_ok(
            &format!("/api/v1/numbers/{}/dry-run", line.number),
            json!({"settings": {"queue": support, "lead_creation": "off"}, "last": 100}),
            StatusCode::OK,
        )
        .await;
    let items = run["items"].as_array().unwrap();
    assert_eq!(items.len(), 20, "{run}");
    for item in items {
        let call_id = call_id_of(&item["call"]);
        if known.contains(&call_id) {
            assert_eq!(item["actual"]["created"], json!([]), "{item}");
            assert_eq!(item["proposed"]["created"], json!([]), "{item}");
            assert_eq!(
                item["proposed"]["route"],
                json!([line.anna, line.ben]),
                "T5: the responsible first, then the proposed queue: {item}"
            );
        } else {
            let created = item["actual"]["created"].as_array().unwrap();
            assert!(created[0].as_str().unwrap().starts_with("lead:"), "{item}");
            assert_eq!(item["proposed"]["created"], json!([]), "T4 off: {item}");
            assert_eq!(item["proposed"]["route"], json!([line.ben]), "{item}");
        }
    }
    // The settings as they are: new callers again get a lead each, round the queue (T9),
    // as the call log recorded it.
    let same = app
        .post_ok(
            &format!("/api/v1/numbers/{}/dry-run", line.number),
            json!({"last": 20}),
            StatusCode::OK,
        )
        .await;
    for item in same["items"].as_array().unwrap() {
        let call_id = call_id_of(&item["call"]);
        let expected = if known.contains(&call_id) {
            json!([])
        } else {
            json!(["lead"])
        };
        assert_eq!(item["proposed"]["created"], expected, "{item}");
        assert_eq!(item["proposed"]["route"], item["actual"]["route"], "{item}");
    }
    // Every authenticated request records when its token was last used, and the node's
    // heartbeat ticks: those two are the gateway's own bookkeeping, not the dry-run's.
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

    for (body, field) in [
        (json!({"last": 0}), "last"),
        (json!({"last": 1001}), "last"),
        (json!({"settings": {"queue": "nope"}}), "queue"),
        (json!({"settings": {"ring_timeout_s": 1}}), "ring_timeout_s"),
    ] {
        let (status, err) = app
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/numbers/{}/dry-run", line.number),
                Some(&app.admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{err}");
    }
    let agent = app.token_for(&line.anna).await;
    let (status, _) = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/numbers/{}/dry-run", line.number),
            Some(&agent),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}

/// The console shows the decision record on the timeline, folded, in both languages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m8_the_timeline_shows_why_a_call_was_attached_in_english_and_german() {
    use crate::common::browser::{Browser, Options};
    let app = TestApp::spawn().await;
    app.sales_line().await;
    let olga = app
        .create_user("Olga", "olga@example.com", "admin", "100")
        .await;
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/users/{olga}"),
            Some(&app.admin),
            Some(json!({"password": "olga-console-pw"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let contact = app
        .post_ok(
            "/api/v1/contacts",
            json!({"name": "Jana Müller", "phones": ["+4930123456"]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.ringing("ui-1", "030 123456").await;

    for (lang, summary) in [
        ("en", "Why: attached to Jana Müller (Contact)"),
        ("de", "Warum: attached to Jana Müller (Kontakt)"),
    ] {
        let browser = Browser::start_with(
            &app.base,
            Options {
                lang: format!("{lang}-{}", lang.to_uppercase()),
            },
        )
        .await;
        browser.sign_in("olga@example.com", "olga-console-pw").await;
        browser.goto(&format!("/#/contacts/{contact}")).await;
        let folded = ".timeline li[data-kind=\"call\"] details.decision";
        browser.wait_for_text(folded, summary).await;
        browser.click(&format!("{folded} summary")).await;
        browser
            .wait_for_text(&format!("{folded}[open]"), "M8")
            .await;
        browser
            .wait_for_text(&format!("{folded}[open]"), "+4930123456")
            .await;
        browser
            .wait_for_text(&format!("{folded}[open]"), "Jana Müller")
            .await;
        browser
            .screenshot(&format!("decision-timeline-{lang}"))
            .await;
        browser.assert_no_console_errors().await;
        browser.finish().await;
    }
    app.stop().await;
}
