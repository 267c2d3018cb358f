//! Webhook events for CRM records: entities created and changed through the API, and
//! what a pushed call's intake writes, delivered through the same outbox and signing as
//! call events, each webhook told only of the records its owner may see (A1).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::postgres::PgServer;
use crate::helpers::TestApp;
use crate::webhooks::{Receiver, create_hook, queue_of, spawn_with_loopback_receivers};

const RECORD_EVENTS: [&str; 6] = [
    "lead.created",
    "contact.created",
    "deal.created",
    "entity.updated",
    "email.ingested",
    "activity.created",
];

/// A number whose calls ring `member`'s queue.
async fn line(app: &TestApp, number: &str, member: &str) {
    let queue = queue_of(app, &format!("{member}'s line"), member).await;
    app.post_ok(
        "/api/v1/numbers",
        json!({"number": number, "default_country": "DE", "queue": queue}),
        StatusCode::CREATED,
    )
    .await;
}

/// A webhook following every record event for the admin, Anna and Ben, each delivering
/// to its own path on `receiver` (`hook/admin`, `hook/anna`, `hook/ben`).
async fn hooks_for_admin_anna_and_ben(
    app: &TestApp,
    receiver: &Receiver,
    anna_token: &str,
    ben_token: &str,
) {
    for (token, name) in [
        (app.admin.as_str(), "admin"),
        (anna_token, "anna"),
        (ben_token, "ben"),
    ] {
        create_hook(
            app,
            token,
            json!({"url": receiver.url("hook", name), "events": RECORD_EVENTS}),
        )
        .await;
    }
}

async fn ringing(app: &TestApp, call_id: &str, from: &str, to: &str) -> Value {
    app.post_ok(
        "/api/v1/calls/events",
        json!({"call_id": call_id, "event": "ringing", "direction": "incoming",
               "from": from, "to": to}),
        StatusCode::OK,
    )
    .await
}

#[tokio::test]
async fn record_events_are_signed_and_delivered_like_call_events() {
    let app = spawn_with_loopback_receivers(None).await;
    records_reach_the_admins_webhook(&app).await;
    app.stop().await;
}

/// The same on PostgreSQL.
#[tokio::test]
async fn record_events_on_postgres() {
    let server = PgServer::shared();
    let url = server.create_database("webhooks_records").await;
    let app = spawn_with_loopback_receivers(Some(url)).await;
    records_reach_the_admins_webhook(&app).await;
    app.stop().await;
}

async fn records_reach_the_admins_webhook(app: &TestApp) {
    let mut receiver = Receiver::start().await;
    let anna = app
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    line(app, "+4930901820", &anna).await;
    let secret = "records-secret-0123456789";
    create_hook(
        app,
        &app.admin,
        json!({"url": receiver.url("hook", "admin"), "events": RECORD_EVENTS,
               "secret": secret}),
    )
    .await;

    let contact = app
        .post_ok(
            "/api/v1/contacts",
            json!({"name": "Clara Customer", "phones": ["+4917611111111"],
                   "responsible": anna}),
            StatusCode::CREATED,
        )
        .await;
    let id = contact["id"].as_str().unwrap();
    let (status, updated) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/contacts/{id}"),
            Some(&app.admin),
            Some(json!({"name": "Clara Kundin"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");

    let created = receiver.next("admin").await;
    assert!(created.signed_with(secret), "{created:?}");
    assert_eq!(created.event, "contact.created");
    assert_eq!(
        created.json(),
        json!({"event": "contact.created", "data": contact}),
        "the record as the API answered it"
    );
    let changed = receiver.next("admin").await;
    assert!(changed.signed_with(secret));
    assert_eq!(changed.event, "entity.updated");
    assert_eq!(changed.json()["data"], updated);
    assert_eq!(changed.json()["data"]["name"], "Clara Kundin");

    // A new caller: the intake creates a lead and the call's activity on it.
    let answer = ringing(app, "r1", "+4917699999999", "+4930901820").await;
    let lead = answer["created"][0].as_str().unwrap().to_owned();
    assert!(lead.starts_with("lead:"), "{answer}");
    let hit = receiver.next("admin").await;
    assert!(hit.signed_with(secret));
    assert_eq!(hit.event, "lead.created");
    assert_eq!(
        format!("lead:{}", hit.json()["data"]["id"].as_str().unwrap()),
        lead
    );
    assert_eq!(hit.json()["data"]["phones"], json!(["+4917699999999"]));
    let hit = receiver.next("admin").await;
    assert!(hit.signed_with(secret));
    assert_eq!(hit.event, "activity.created");
    let activity = &hit.json()["data"];
    assert_eq!(activity["entities"], json!([lead]), "{activity}");
    assert_eq!(activity["call"], answer["call"]["id"], "{activity}");
    assert_eq!(activity["kind"], "call");

    // A later event of the same call writes no new record: the next delivery is the
    // next record (another API create), not a second lead or activity.
    app.post_ok(
        "/api/v1/calls/events",
        json!({"call_id": "r1", "event": "ended", "direction": "incoming",
               "from": "+4917699999999", "to": "+4930901820", "outcome": "missed"}),
        StatusCode::OK,
    )
    .await;
    let later = app
        .post_ok(
            "/api/v1/leads",
            json!({"name": "Walk-in", "responsible": anna}),
            StatusCode::CREATED,
        )
        .await;
    let hit = receiver.next("admin").await;
    assert_eq!(hit.event, "lead.created");
    assert_eq!(hit.json()["data"]["id"], later["id"]);
}

/// A1: an agent's webhook is told only of records the agent may see. At the default
/// `own` level, Ben's contact and the lead of a call on Ben's line never reach Anna's
/// receiver, though they were written before hers.
#[tokio::test]
async fn a1_an_agents_webhook_gets_only_the_records_the_agent_may_see() {
    let app = spawn_with_loopback_receivers(None).await;
    let mut receiver = Receiver::start().await;
    let anna = app
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let ben = app
        .create_user("Ben", "ben@example.com", "agent", "102")
        .await;
    let (anna_token, ben_token) = (app.token_for(&anna).await, app.token_for(&ben).await);
    line(&app, "+4930901820", &anna).await;
    line(&app, "+4930901821", &ben).await;
    for (token, name) in [(&anna_token, "anna"), (&ben_token, "ben")] {
        create_hook(
            &app,
            token,
            json!({"url": receiver.url("hook", name), "events": RECORD_EVENTS}),
        )
        .await;
    }

    let create = |token: String, name: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app
                .request(
                    Method::POST,
                    "/api/v1/contacts",
                    Some(&token),
                    Some(json!({"name": name})),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body
        }
    };
    let bens = create(ben_token.clone(), "Ben's customer").await;
    let annas = create(anna_token.clone(), "Anna's customer").await;
    let hit = receiver.next("anna").await;
    assert_eq!(hit.json()["data"]["id"], annas["id"], "{:?}", hit.json());
    let hit = receiver.next("ben").await;
    assert_eq!(hit.json()["data"]["id"], bens["id"], "{:?}", hit.json());

    // Calls: a new caller on Ben's line, then one on Anna's.
    let on_bens = ringing(&app, "b1", "+4917622222222", "+4930901821").await;
    let on_annas = ringing(&app, "a1", "+4917633333333", "+4930901820").await;
    for (name, answer, user) in [("anna", &on_annas, &anna), ("ben", &on_bens, &ben)] {
        let lead = receiver.next(name).await;
        assert_eq!(lead.event, "lead.created", "{:?}", lead.json());
        assert_eq!(
            format!("lead:{}", lead.json()["data"]["id"].as_str().unwrap()),
            answer["created"][0].as_str().unwrap()
        );
        assert_eq!(lead.json()["data"]["responsible"], json!(user));
        let activity = receiver.next(name).await;
        assert_eq!(activity.event, "activity.created");
        assert_eq!(activity.json()["data"]["entities"], answer["created"]);
    }
    app.stop().await;
}

/// A1: a contact import announces each contact it created (`contact.created`) and each
/// it completed (`entity.updated`), and a dry run nothing; an agent's webhook gets only
/// the contacts the agent may see (at `own`, theirs).
#[tokio::test]
async fn a1_an_import_announces_its_contacts_to_whoever_may_see_them() {
    let app = spawn_with_loopback_receivers(None).await;
    let mut receiver = Receiver::start().await;
    let anna = app
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let ben = app
        .create_user("Ben", "ben@example.com", "agent", "102")
        .await;
    let anna_token = app.token_for(&anna).await;
    let existing = app
        .post_ok(
            "/api/v1/contacts",
            json!({"name": "Olga Bestand", "phones": ["+4917611111111"], "responsible": ben}),
            StatusCode::CREATED,
        )
        .await;
    let events = ["contact.created", "entity.updated"];
    create_hook(
        &app,
        &app.admin,
        json!({"url": receiver.url("hook", "admin"), "events": events}),
    )
    .await;
    create_hook(
        &app,
        &anna_token,
        json!({"url": receiver.url("hook", "anna"), "events": events}),
    )
    .await;

    let csv = "name,phone,email,responsible\n\
               Olga Bestand,+4917611111111,olga@kunde.example,\n\
               Bernd Neu,+4917622222222,,ben@example.com\n\
               Anke Neu,+4917633333333,,anna@example.com\n";
    for query in ["?dry_run=true", ""] {
        let resp = app
            .client
            .post(format!("{}/api/v1/contacts/import{query}", app.base))
            .bearer_auth(&app.admin)
            .header("Content-Type", "text/csv")
            .body(csv)
            .send()
            .await
            .expect("import sent");
        assert_eq!(resp.status(), StatusCode::OK);
        let answer: Value = resp.json().await.expect("JSON answer");
        assert_eq!(
            answer,
            json!({"created": 2, "updated": 1, "skipped": []}),
            "{query}"
        );
    }

    // The admin's first three deliveries are the import's: none of the dry run's.
    let mut told = Vec::new();
    for _ in 0..3 {
        let hit = receiver.next("admin").await;
        let data = hit.json()["data"].clone();
        told.push((
            hit.event.clone(),
            data["name"].as_str().unwrap().to_owned(),
            data,
        ));
    }
    told.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let names: Vec<(&str, &str)> = told
        .iter()
        .map(|(event, name, _)| (event.as_str(), name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("contact.created", "Anke Neu"),
            ("contact.created", "Bernd Neu"),
            ("entity.updated", "Olga Bestand")
        ]
    );
    let contacts = app.get_ok("/api/v1/contacts?limit=500").await;
    for (_, name, data) in &told {
        let stored = contacts["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} in {contacts}"));
        assert_eq!(data, stored, "the contact as the API shows it");
    }
    assert_eq!(told[2].2["id"], existing["id"]);
    assert_eq!(told[2].2["emails"], json!(["olga@kunde.example"]));

    // Anna is told of her new contact only: her next delivery is her next contact, not
    // Ben's new one or the update of Ben's customer.
    let hit = receiver.next("anna").await;
    assert_eq!(hit.event, "contact.created");
    assert_eq!(hit.json()["data"]["name"], "Anke Neu");
    assert_eq!(hit.json()["data"]["responsible"], json!(anna));
    let (status, later) = app
        .request(
            Method::POST,
            "/api/v1/contacts",
            Some(&anna_token),
            Some(json!({"name": "Anna's next"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{later}");
    let hit = receiver.next("anna").await;
    assert_eq!(hit.json()["data"]["id"], later["id"], "{:?}", hit.json());
    app.stop().await;
}

/// A1, T1: a real call through the B2BUA (SIPp as carrier and as Anna's phone) from a new
/// caller: its lead and its activity reach the admin's webhook once, and Anna's (the
/// lead's responsible, first in the queue), not Ben's; the call's answer and hang-up
/// announce nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_a_call_through_the_b2bua_announces_its_lead_and_activity_once() {
    use crate::calls_sip::{CALLER, Phone, carrier_call, ended_call};
    let app = TestApp::spawn_for_sipp_with(|config| config.webhooks.private_targets = true).await;
    let line = crate::calls_sip::line(&app, 20).await;
    let mut receiver = Receiver::start().await;
    let (anna_token, ben_token) = (
        app.token_for(&line.anna).await,
        app.token_for(&line.ben).await,
    );
    hooks_for_admin_anna_and_ben(&app, &receiver, &anna_token, &ben_token).await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let anna_answers = anna_phone.expect_call("agent_answer.xml");
    let (ok, carrier) = carrier_call(&app, "carrier_call.xml", &[]).finish().await;
    assert!(ok, "the carrier's call is answered: {carrier}");
    let (ok, phone) = anna_answers.finish().await;
    assert!(ok, "Anna's phone answered: {phone}");
    let call = ended_call(&app).await;
    let leads = app.leads().await;
    assert_eq!(leads.len(), 1, "{leads:?}");
    let lead = &leads[0];
    assert_eq!(lead["responsible"], json!(line.anna));
    let lead_ref = format!("lead:{}", lead["id"].as_str().unwrap());

    for name in ["admin", "anna"] {
        let hit = receiver.next(name).await;
        assert_eq!(hit.event, "lead.created", "{name}: {:?}", hit.json());
        assert_eq!(hit.json()["data"]["id"], lead["id"]);
        assert_eq!(hit.json()["data"]["phones"], json!([CALLER]));
        let hit = receiver.next(name).await;
        assert_eq!(hit.event, "activity.created", "{name}: {:?}", hit.json());
        let activity = &hit.json()["data"];
        assert_eq!(activity["entities"], json!([lead_ref]), "{activity}");
        assert_eq!(activity["call"], call["id"], "{activity}");
    }

    // The next delivery of each is the next record: no second lead or activity from the
    // call's later events, and nothing of Anna's lead for Ben.
    let (status, marker) = app
        .request(
            Method::POST,
            "/api/v1/leads",
            Some(&app.admin),
            Some(json!({"name": "Walk-in", "responsible": line.ben})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{marker}");
    for name in ["admin", "ben"] {
        let hit = receiver.next(name).await;
        assert_eq!(hit.event, "lead.created", "{name}: {:?}", hit.json());
        assert_eq!(hit.json()["data"]["id"], marker["id"], "{name}");
    }
    app.stop().await;
}

/// A1, E16: a copy Anna BCC'd to the forward address over SMTP makes the recipient her
/// lead; her webhook and the admin's are told of the lead, the stored message (as `GET
/// /emails/{id}` shows it, no raw message) and its activity, in that order; Ben's of none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_mail_at_the_forward_address_announces_the_message_and_what_it_created() {
    let app = spawn_with_loopback_receivers(None).await;
    let mut receiver = Receiver::start().await;
    let anna = app
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let ben = app
        .create_user("Ben", "ben@example.com", "agent", "102")
        .await;
    let (anna_token, ben_token) = (app.token_for(&anna).await, app.token_for(&ben).await);
    hooks_for_admin_anna_and_ben(&app, &receiver, &anna_token, &ben_token).await;
    let address = app.get_ok("/api/v1/settings/forward").await["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let bcc = dir.path().join("bcc.eml");
    std::fs::write(
        &bcc,
        "From: Anna <anna@example.com>\r\nTo: Neukunde <neu@example.org>\r\n\
         Subject: Ihr Angebot\r\nMessage-ID: <bcc-hook@example.com>\r\n\r\nAnbei.\r\n",
    )
    .unwrap();
    let data = format!("@{}", bcc.display());
    crate::mail::swaks(
        &app,
        &[
            "--to",
            &address,
            "--from",
            "anna@example.com",
            "--data",
            &data,
        ],
    )
    .await;
    let leads = app.leads().await;
    assert_eq!(leads.len(), 1, "{leads:?}");
    let lead = &leads[0];
    assert_eq!(lead["responsible"], json!(anna), "{lead}");
    let lead_ref = format!("lead:{}", lead["id"].as_str().unwrap());
    let emails = app.get_ok("/api/v1/emails").await;
    let email_id = emails["items"][0]["id"].as_str().unwrap().to_owned();
    let email = app.get_ok(&format!("/api/v1/emails/{email_id}")).await;

    for name in ["admin", "anna"] {
        let hit = receiver.next(name).await;
        assert_eq!(hit.event, "lead.created", "{name}: {:?}", hit.json());
        assert_eq!(hit.json()["data"]["id"], lead["id"]);
        let hit = receiver.next(name).await;
        assert_eq!(hit.event, "email.ingested", "{name}: {:?}", hit.json());
        assert_eq!(
            hit.json(),
            json!({"event": "email.ingested", "data": email}),
            "the message as GET /emails/{{id}} shows it"
        );
        assert!(hit.json()["data"].get("raw").is_none());
        let hit = receiver.next(name).await;
        assert_eq!(hit.event, "activity.created", "{name}: {:?}", hit.json());
        let activity = &hit.json()["data"];
        assert_eq!(activity["entities"], json!([lead_ref]), "{activity}");
        assert_eq!(activity["email"], json!(email_id), "{activity}");
    }

    // Ben's next delivery is a later record of his own: nothing of Anna's lead before it.
    let (status, marker) = app
        .request(
            Method::POST,
            "/api/v1/leads",
            Some(&app.admin),
            Some(json!({"name": "Walk-in", "responsible": ben})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{marker}");
    let hit = receiver.next("ben").await;
    assert_eq!(hit.event, "lead.created", "{:?}", hit.json());
    assert_eq!(hit.json()["data"]["id"], marker["id"]);
    app.stop().await;
}

/// A1, E3: a vCard attached to mail in Anna's personal mailbox (Dovecot, over IMAP)
/// becomes her contact: her webhook and the admin's are told of the contact first, then
/// of the message on it and its activity; Ben's of none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_e3_a_vcard_in_collected_mail_announces_its_contact_to_the_mailboxs_audience() {
    use crate::common::dovecot::{DOMAIN, Dovecot};
    let app = spawn_with_loopback_receivers(None).await;
    let mut receiver = Receiver::start().await;
    let anna = app
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let ben = app
        .create_user("Ben", "ben@example.com", "agent", "102")
        .await;
    let (anna_token, ben_token) = (app.token_for(&anna).await, app.token_for(&ben).await);
    hooks_for_admin_anna_and_ben(&app, &receiver, &anna_token, &ben_token).await;
    let dovecot = Dovecot::start();
    let (status, mailbox) = app
        .request(
            Method::POST,
            "/api/v1/mailboxes",
            Some(&anna_token),
            Some(json!({
                "name": "Anna", "kind": "personal", "host": "127.0.0.1",
                "port": dovecot.imap_port(), "security": "none", "username": "alice",
                "password": dovecot.password("alice"), "address": format!("alice@{DOMAIN}"),
                "check": "idle", "sync_window_days": null,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{mailbox}");
    let mailbox = mailbox["id"].as_str().unwrap().to_owned();
    crate::common::wait_until(
        std::time::Duration::from_secs(20),
        "the mailbox to wait with IDLE",
        || async {
            let value = app.get_ok(&format!("/api/v1/mailboxes/{mailbox}")).await;
            (value["state"] == "idle").then_some(())
        },
    )
    .await;
    let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Karla Kunde\r\nORG:Kunde AG\r\n\
                EMAIL;TYPE=work:karla@kunde.example\r\nTEL;TYPE=work:+49 30 1234567\r\nEND:VCARD\r\n";
    let with_card = format!(
        "From: Karla <karla@kunde.example>\r\nTo: <alice@{DOMAIN}>\r\nSubject: Visitenkarte\r\n\
         Message-ID: <vc-hook@kunde.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain\r\n\r\nMeine Karte anbei.\r\n--b\r\n\
         Content-Type: text/vcard; name=\"karla.vcf\"\r\n\
         Content-Disposition: attachment; filename=\"karla.vcf\"\r\n\r\n{card}--b--\r\n"
    );
    dovecot.deliver("alice", with_card.as_bytes()).await;

    for name in ["admin", "anna"] {
        let hit = receiver.next(name).await;
        assert_eq!(hit.event, "contact.created", "{name}: {:?}", hit.json());
        let contact = hit.json()["data"].clone();
        assert_eq!(contact["name"], "Karla Kunde", "{contact}");
        assert_eq!(contact["responsible"], json!(anna), "{contact}");
        assert_eq!(
            contact["emails"],
            json!(["karla@kunde.example"]),
            "{contact}"
        );
        assert_eq!(
            app.get_ok(&format!(
                "/api/v1/contacts/{}",
                contact["id"].as_str().unwrap()
            ))
            .await,
            contact,
            "the contact as GET /contacts/{{id}} shows it"
        );
        let contact_ref = format!("contact:{}", contact["id"].as_str().unwrap());
        let hit = receiver.next(name).await;
        assert_eq!(hit.event, "email.ingested", "{name}: {:?}", hit.json());
        assert_eq!(hit.json()["data"]["entities"], json!([contact_ref]));
        let hit = receiver.next(name).await;
        assert_eq!(hit.event, "activity.created", "{name}: {:?}", hit.json());
    }

    // Ben's next delivery is a later record of his own: nothing of Anna's contact first.
    let (status, marker) = app
        .request(
            Method::POST,
            "/api/v1/leads",
            Some(&app.admin),
            Some(json!({"name": "Walk-in", "responsible": ben})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{marker}");
    let hit = receiver.next("ben").await;
    assert_eq!(hit.event, "lead.created", "{:?}", hit.json());
    assert_eq!(hit.json()["data"]["id"], marker["id"]);
    app.stop().await;
}
