//! The IMAP side end to end: a real Dovecot (tests/common/dovecot.rs) on loopback, mail
//! delivered over LMTP, the gateway's poller collecting it into leads and activities,
//! checked over the HTTP API.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::dovecot::{DOMAIN, Dovecot};
use crate::common::wait_until;
use crate::helpers::TestApp;

/// Long enough for a poll pass or an IDLE wake-up on a loaded machine (Dovecot's IDLE
/// has a 0.5 s floor).
const MAIL_DEADLINE: Duration = Duration::from_secs(20);

fn message(from: &str, to: &str, subject: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Kunde <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Message-ID: <{id}@example.org>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nGuten Tag, bitte ein Angebot.\r\n"
    )
    .into_bytes()
}

struct MailSetup {
    dovecot: Dovecot,
    mailbox: String,
    anna: String,
}

/// Anna in the Sales queue; alice's Dovecot account connected as a company mailbox that
/// waits with IDLE, with `extra` settings on top.
async fn connect_mailbox(app: &TestApp, extra: Value) -> MailSetup {
    let dovecot = Dovecot::start();
    let anna = app
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let queue = app
        .post_ok(
            "/api/v1/queues",
            json!({"name": "Sales", "members": [anna]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut body = json!({
        "name": "Sales inbox", "kind": "company", "host": "127.0.0.1",
        "port": dovecot.imap_port(), "security": "none", "username": "alice",
        "password": dovecot.password("alice"), "address": format!("alice@{DOMAIN}"),
        "queue": queue, "check": "idle", "sync_window_days": null,
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let mailbox = app
        .post_ok("/api/v1/mailboxes", body, StatusCode::CREATED)
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for_state(app, &mailbox, "idle").await;
    MailSetup {
        dovecot,
        mailbox,
        anna,
    }
}

async fn wait_for_state(app: &TestApp, mailbox: &str, state: &str) -> Value {
    wait_until(MAIL_DEADLINE, "the mailbox state", || async {
        let value = app.get_ok(&format!("/api/v1/mailboxes/{mailbox}")).await;
        (value["state"] == state).then_some(value)
    })
    .await
}

async fn emails(app: &TestApp) -> Vec<Value> {
    app.get_ok("/api/v1/emails?limit=500").await["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn wait_for_emails(app: &TestApp, count: usize) -> Vec<Value> {
    wait_until(MAIL_DEADLINE, "the messages to be collected", || async {
        let items = emails(app).await;
        (items.len() >= count).then_some(items)
    })
    .await
}

fn by_subject<'a>(emails: &'a [Value], subject: &str) -> &'a Value {
    emails
        .iter()
        .find(|e| e["subject"] == subject)
        .unwrap_or_else(|| panic!("a message '{subject}' in {emails:?}"))
}

/// E8, E5, M4/E4, E15: an unknown sender becomes a lead with the e-mail activity, for
/// the next in the queue; an employee's mail and a blacklisted sender are stored but
/// reach nothing in the CRM; each message keeps its three times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e8_e15_unknown_sender_becomes_a_lead_employees_and_blacklist_do_not() {
    let app = TestApp::spawn().await;
    unknown_sender_employee_and_blacklist(&app).await;
    app.stop().await;
}

/// The same on PostgreSQL: the mail store, raw bytes (BYTEA) and intake there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e8_e15_on_postgresql() {
    let server = crate::common::postgres::PgServer::shared();
    let url = server.create_database("mail_e8").await;
    let app = TestApp::spawn_with(|config, _| config.database_url = url).await;
    unknown_sender_employee_and_blacklist(&app).await;
    app.stop().await;
}

async fn unknown_sender_employee_and_blacklist(app: &TestApp) {
    let setup = connect_mailbox(app, json!({"blacklist": ["@blocked.test"]})).await;
    let inbox = format!("alice@{DOMAIN}");
    let dovecot = &setup.dovecot;
    dovecot
        .deliver(
            "alice",
            &message("kunde@example.org", &inbox, "Angebot", "m1"),
        )
        .await;
    dovecot
        .deliver(
            "alice",
            &message("anna@example.com", &inbox, "Intern", "m2"),
        )
        .await;
    dovecot
        .deliver(
            "alice",
            &message("spam@blocked.test", &inbox, "Werbung", "m3"),
        )
        .await;
    let emails = wait_for_emails(app, 3).await;

    let offer = by_subject(&emails, "Angebot");
    assert_eq!(offer["crm_action"], "created", "{offer}");
    assert_eq!(offer["direction"], "incoming");
    assert!(offer["received_at"].is_string() && offer["ingested_at"].is_string());
    assert!(
        offer["completed_at"].is_null(),
        "unseen: an open activity (E9)"
    );
    let leads = app.leads().await;
    assert_eq!(leads.len(), 1, "{leads:?}");
    assert_eq!(
        leads[0]["responsible"],
        json!(setup.anna),
        "E13/T9: the queue's next"
    );
    assert_eq!(leads[0]["emails"], json!(["kunde@example.org"]));
    assert_eq!(leads[0]["source"], "EMAIL");
    let lead = format!("lead:{}", leads[0]["id"].as_str().unwrap());
    assert_eq!(offer["entities"], json!([lead]));
    let timeline = app
        .get_ok(&format!("/api/v1/activities?entity={lead}"))
        .await;
    assert_eq!(timeline["items"][0]["kind"], "email", "{timeline}");
    assert_eq!(timeline["items"][0]["completed"], false);

    let internal = by_subject(&emails, "Intern");
    assert_eq!(internal["crm_action"], "logged", "E5: {internal}");
    assert!(internal["entities"].as_array().unwrap().is_empty());
    let blocked = by_subject(&emails, "Werbung");
    assert_eq!(blocked["crm_action"], "logged", "E4: {blocked}");
    assert!(
        blocked["crm_reason"]
            .as_str()
            .unwrap()
            .contains("blacklist"),
        "{blocked}"
    );

    // The matcher says the same for the mailbox (E4).
    let matched = app
        .get_ok(&format!(
            "/api/v1/match?email=spam@blocked.test&mailbox={}",
            setup.mailbox
        ))
        .await;
    assert_eq!(matched["status"], "excluded", "{matched}");

    // The raw message as received, for download.
    let raw = app
        .client
        .get(format!(
            "{}/api/v1/emails/{}/raw",
            app.base,
            offer["id"].as_str().unwrap()
        ))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-type"], "message/rfc822");
    assert!(raw.text().await.unwrap().contains("bitte ein Angebot"));
}

/// E7, M8: a message from a known contact goes on the contact's timeline; no lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e7_a_known_sender_gets_the_activity_on_the_contact() {
    let app = TestApp::spawn().await;
    let contact = app
        .post_ok(
            "/api/v1/contacts",
            json!({"name": "Kunde GmbH", "emails": ["Kunde@Example.org"]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let setup = connect_mailbox(&app, json!({})).await;
    setup
        .dovecot
        .deliver(
            "alice",
            &message(
                "kunde@example.org",
                &format!("alice@{DOMAIN}"),
                "Frage",
                "k1",
            ),
        )
        .await;
    let emails = wait_for_emails(&app, 1).await;
    assert_eq!(emails[0]["crm_action"], "attached", "{}", emails[0]);
    assert_eq!(emails[0]["entities"], json!([format!("contact:{contact}")]));
    assert!(app.leads().await.is_empty());
    app.stop().await;
}

/// Item 2: a restart resumes after the checkpoint: nothing collected twice, nothing lost
/// (mail that arrived while the gateway was down comes in after the restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_without_duplicates_or_losses() {
    let mut app = TestApp::spawn().await;
    let setup = connect_mailbox(&app, json!({})).await;
    let inbox = format!("alice@{DOMAIN}");
    setup
        .dovecot
        .deliver("alice", &message("a@example.org", &inbox, "Eins", "r1"))
        .await;
    wait_for_emails(&app, 1).await;
    app.restart().await;
    setup
        .dovecot
        .deliver("alice", &message("b@example.org", &inbox, "Zwei", "r2"))
        .await;
    let emails = wait_for_emails(&app, 2).await;
    wait_for_state(&app, &setup.mailbox, "idle").await;
    assert_eq!(emails.len(), 2, "{emails:?}");
    assert_eq!(app.leads().await.len(), 2);
    app.stop().await;
}

/// E9 both ways: `\Seen` set on the server completes the activity; reopening the
/// activity in the CRM takes `\Seen` off on the server; deleting an unseen message
/// deletes its activity and the untouched lead it created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e9_seen_and_deletion_sync_both_ways() {
    let app = TestApp::spawn().await;
    let setup = connect_mailbox(&app, json!({})).await;
    let inbox = format!("alice@{DOMAIN}");
    let dovecot = &setup.dovecot;
    dovecot
        .deliver("alice", &message("s@example.org", &inbox, "Gelesen", "s1"))
        .await;
    dovecot
        .deliver(
            "alice",
            &message("d@example.org", &inbox, "Geloescht", "s2"),
        )
        .await;
    wait_for_emails(&app, 2).await;
    assert_eq!(app.leads().await.len(), 2);

    // Read on the server (uid 1): the activity is completed.
    dovecot.add_flag("alice", "INBOX", 1, "\\Seen");
    let read = wait_until(MAIL_DEADLINE, "the activity to be completed", || async {
        let emails = emails(&app).await;
        let read = by_subject(&emails, "Gelesen").clone();
        read["completed_at"].is_string().then_some(read)
    })
    .await;
    let activity = read["activity"].as_str().unwrap().to_owned();

    // Reopened in the CRM: the server's flag follows.
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/activities/{activity}"),
            Some(&app.admin),
            Some(json!({"completed": false})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    wait_until(
        MAIL_DEADLINE,
        "\\Seen to be removed on the server",
        || async {
            let flags = dovecot.flags("alice", "INBOX");
            flags
                .iter()
                .any(|(uid, f)| *uid == 1 && !f.contains("\\Seen"))
                .then_some(())
        },
    )
    .await;

    // Deleted unseen on the server (uid 2): activity and lead go.
    dovecot.expunge("alice", "INBOX", 2);
    wait_until(
        MAIL_DEADLINE,
        "the deleted message's lead to go",
        || async { (app.leads().await.len() == 1).then_some(()) },
    )
    .await;
    let emails = emails(&app).await;
    assert_eq!(emails.len(), 1, "{emails:?}");
    assert_eq!(emails[0]["subject"], "Gelesen");
    app.stop().await;
}

/// Item 2: IDLE brings new mail in within seconds (Dovecot's own floor is 0.5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_delivers_new_mail_within_seconds() {
    let app = TestApp::spawn().await;
    let setup = connect_mailbox(&app, json!({})).await;
    let delivered = std::time::Instant::now();
    setup
        .dovecot
        .deliver(
            "alice",
            &message("i@example.org", &format!("alice@{DOMAIN}"), "Idle", "i1"),
        )
        .await;
    wait_for_emails(&app, 1).await;
    // Not a timed assertion: the figure is the bench's; this proves IDLE is used, since
    // the mailbox's fallback interval (25 min) would never deliver within the deadline.
    eprintln!("IDLE delivery took {:?}", delivered.elapsed());
    app.stop().await;
}

/// E11, E10, E1: a processed spam folder is refused with an explanation; the connection
/// test names a wrong password; nobody connects another employee's personal mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e11_e10_e1_mailbox_settings_are_checked() {
    let app = TestApp::spawn().await;
    let dovecot = Dovecot::start();
    let base = json!({"kind": "company", "host": "127.0.0.1", "port": dovecot.imap_port(),
                      "security": "none", "username": "alice", "address": format!("alice@{DOMAIN}")});
    let mut spam = base.clone();
    spam["password"] = json!("x");
    spam["spam_folder"] = json!("INBOX");
    let (status, body) = app
        .request(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            Some(&app.admin),
            Some(spam),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "spam_folder_processed", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("Junk"));

    let mut wrong = base.clone();
    wrong["password"] = json!("not-the-password");
    let mailbox = app
        .post_ok("/api/v1/mailboxes", wrong, StatusCode::CREATED)
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/mailboxes/{mailbox}/test"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "login_failed", "{body}");
    // The poller shows the same on the mailbox (E10).
    let errored = wait_for_state(&app, &mailbox, "error").await;
    assert!(errored["last_error"].is_string(), "{errored}");
    assert!(errored.get("password").is_none(), "A4: {errored}");

    let ben = app
        .create_user("Ben", "ben@example.com", "agent", "102")
        .await;
    let mut personal = base.clone();
    personal["kind"] = json!("personal");
    personal["owner"] = json!(ben);
    personal["password"] = json!("x");
    personal["username"] = json!("bob");
    let (status, body) = app
        .request(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            Some(&app.admin),
            Some(personal.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "E1: {body}");
    let ben_token = app.token_for(&ben).await;
    let (status, body) = app
        .request(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            Some(&ben_token),
            Some(personal),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "Ben connects his own: {body}");
    app.stop().await;
}

/// Item 2: a new UIDVALIDITY re-reads the folder, and messages already collected are
/// recognised by Message-ID: no second copy, no second activity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uidvalidity_change_brings_no_duplicates() {
    let app = TestApp::spawn().await;
    let dovecot = Dovecot::start();
    dovecot.create_folder("alice", "Kunden");
    let one = message("u1@example.org", &format!("alice@{DOMAIN}"), "Eins", "u1");
    dovecot.save("alice", "Kunden", &one);
    let mailbox = app
        .post_ok(
            "/api/v1/mailboxes",
            json!({"kind": "company", "host": "127.0.0.1", "port": dovecot.imap_port(),
                   "security": "none", "username": "alice", "password": dovecot.password("alice"),
                   "address": format!("alice@{DOMAIN}"), "folders": ["Kunden"],
                   "check": "2m", "sync_window_days": null}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for_emails(&app, 1).await;
    // The folder is made anew (new UIDVALIDITY) with the old message and a new one.
    dovecot.recreate_folder("alice", "Kunden");
    dovecot.save("alice", "Kunden", &one);
    let two = message("u2@example.org", &format!("alice@{DOMAIN}"), "Zwei", "u2");
    dovecot.save("alice", "Kunden", &two);
    // A settings change makes the poller reconnect and sync now.
    let (status, _) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/mailboxes/{mailbox}"),
            Some(&app.admin),
            Some(json!({"check": "5m"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let emails = wait_for_emails(&app, 2).await;
    wait_for_state(&app, &mailbox, "idle").await;
    let emails_now = self::emails(&app).await;
    assert_eq!(emails_now.len(), 2, "{emails:?}");
    assert_eq!(app.leads().await.len(), 2);
    app.stop().await;
}

/// E12: with the CRM link off, mail is stored but reaches the CRM only when saved by
/// hand; a message among employees only is refused with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e12_saving_by_hand_with_the_crm_link_off() {
    let app = TestApp::spawn().await;
    let setup = connect_mailbox(&app, json!({"crm_link": false})).await;
    let inbox = format!("alice@{DOMAIN}");
    setup
        .dovecot
        .deliver(
            "alice",
            &message("kunde@example.org", &inbox, "Bitte", "h1"),
        )
        .await;
    setup
        .dovecot
        .deliver(
            "alice",
            &message("anna@example.com", &inbox, "Kaffee?", "h2"),
        )
        .await;
    let emails = wait_for_emails(&app, 2).await;
    let customer = by_subject(&emails, "Bitte");
    assert_eq!(customer["crm_action"], "logged", "{customer}");
    assert!(app.leads().await.is_empty(), "nothing until saved");

    let (status, saved) = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/emails/{}/save", customer["id"].as_str().unwrap()),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved["entities"].as_array().unwrap().len(), 1, "{saved}");
    assert_eq!(app.leads().await.len(), 1);

    let internal = by_subject(&emails, "Kaffee?");
    let (status, refused) = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/emails/{}/save", internal["id"].as_str().unwrap()),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "employee_only", "{refused}");
    app.stop().await;
}

/// Runs swaks against the gateway's SMTP/LMTP listener; its transcript on failure.
pub(crate) async fn swaks(app: &TestApp, args: &[&str]) -> String {
    let addr = app.app.as_ref().expect("running").smtp_addr;
    let output = tokio::time::timeout(
        MAIL_DEADLINE,
        tokio::process::Command::new("swaks")
            .args(["--server", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--timeout", "15", "--helo", "client.test"])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("swaks finishes within the deadline")
    .expect("swaks runs (scripts/test installs the Debian package swaks)");
    let transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "swaks: {transcript}");
    transcript
}

/// E16: a message forwarded to the secret address (an Apple Mail forward with the
/// original attached as message/rfc822) over SMTP becomes the original sender's lead,
/// attachments kept; a copy an employee BCC'd to it over LMTP goes to the recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e16_forwarded_and_bccd_mail_reach_the_customers_history() {
    let app = TestApp::spawn().await;
    app.create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let address = app.get_ok("/api/v1/settings/forward").await["address"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(address.starts_with("crm-"), "{address}");
    let forwarded = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/email/forwarded-full/attachment_message_rfc822.eml");
    let data = format!("@{}", forwarded.display());
    swaks(
        &app,
        &[
            "--to",
            &address,
            "--from",
            "foo@example.com",
            "--data",
            &data,
        ],
    )
    .await;
    let emails = wait_for_emails(&app, 1).await;
    assert_eq!(emails[0]["crm_action"], "created", "{}", emails[0]);
    assert!(emails[0]["mailbox"].is_null());
    assert!(
        emails[0]["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "ForwardedMessage.eml"),
        "attachments kept: {}",
        emails[0]
    );
    let leads = app.leads().await;
    assert_eq!(leads.len(), 1);
    assert_eq!(
        leads[0]["emails"],
        json!(["xxxx@xxxx.com"]),
        "the original sender"
    );

    let dir = tempfile::tempdir().unwrap();
    let bcc = dir.path().join("bcc.eml");
    std::fs::write(
        &bcc,
        "From: Anna <anna@example.com>\r\nTo: Neukunde <neu@example.org>\r\n\
         Subject: Ihr Angebot\r\nMessage-ID: <bcc-1@example.com>\r\n\r\nAnbei.\r\n",
    )
    .unwrap();
    let data = format!("@{}", bcc.display());
    swaks(
        &app,
        &[
            "--protocol",
            "LMTP",
            "--to",
            &address,
            "--from",
            "anna@example.com",
            "--data",
            &data,
        ],
    )
    .await;
    let emails = wait_for_emails(&app, 2).await;
    let sent = by_subject(&emails, "Ihr Angebot");
    assert_eq!(sent["direction"], "outgoing", "{sent}");
    assert_eq!(sent["crm_action"], "created", "{sent}");
    let leads = app.leads().await;
    assert!(
        leads
            .iter()
            .any(|l| l["emails"] == json!(["neu@example.org"])),
        "the BCC'd recipient: {leads:?}"
    );
    app.stop().await;
}

/// E2, E3: the sent folder is collected too: mail an employee wrote (from any client)
/// is outgoing, and with lead creation for unknown recipients on, the recipient becomes
/// a lead; a vCard attached to received mail becomes a contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2_sent_mail_is_outgoing_and_e3_vcards_become_contacts() {
    let app = TestApp::spawn().await;
    let setup = connect_mailbox(&app, json!({"create_leads_outgoing": true})).await;
    let inbox = format!("alice@{DOMAIN}");
    setup.dovecot.save(
        "alice",
        "Sent",
        &message(&inbox, "neukunde@example.org", "Unser Angebot", "o1"),
    );
    let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Karla Kunde\r\nORG:Kunde AG\r\n\
                EMAIL;TYPE=work:karla@kunde.example\r\nTEL;TYPE=work:+49 30 1234567\r\nEND:VCARD\r\n";
    let with_card = format!(
        "From: Karla <karla@kunde.example>\r\nTo: <{inbox}>\r\nSubject: Visitenkarte\r\n\
         Message-ID: <vc1@kunde.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain\r\n\r\nMeine Karte anbei.\r\n--b\r\n\
         Content-Type: text/vcard; name=\"karla.vcf\"\r\n\
         Content-Disposition: attachment; filename=\"karla.vcf\"\r\n\r\n{card}--b--\r\n"
    );
    setup.dovecot.deliver("alice", with_card.as_bytes()).await;
    // A settings change makes the poller look again at once (the Sent folder has no IDLE).
    let (status, _) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/mailboxes/{}", setup.mailbox),
            Some(&app.admin),
            Some(json!({"name": "Sales"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let emails = wait_for_emails(&app, 2).await;
    let sent = by_subject(&emails, "Unser Angebot");
    assert_eq!(sent["direction"], "outgoing", "{sent}");
    assert_eq!(sent["folder"], "Sent");
    assert_eq!(sent["crm_action"], "created", "{sent}");
    let contacts = wait_until(MAIL_DEADLINE, "the vCard's contact", || async {
        let contacts = app.get_ok("/api/v1/contacts").await["items"]
            .as_array()
            .unwrap()
            .clone();
        (!contacts.is_empty()).then_some(contacts)
    })
    .await;
    assert_eq!(contacts[0]["name"], "Karla Kunde", "{contacts:?}");
    assert_eq!(contacts[0]["phones"], json!(["+49301234567"]));
    let card_mail = by_subject(&emails, "Visitenkarte");
    assert_eq!(
        card_mail["entities"],
        json!([format!("contact:{}", contacts[0]["id"].as_str().unwrap())]),
        "the sender's message is on the contact their card made: {card_mail}"
    );
    let leads = app.leads().await;
    assert!(
        leads
            .iter()
            .any(|l| l["emails"] == json!(["neukunde@example.org"])),
        "{leads:?}"
    );
    app.stop().await;
}

/// E13: with "route mail from existing customers to their responsible manager", a
/// customer whose responsible is not in the mailbox's queue becomes new work for the
/// queue: a lead linked to the customer (the address stays the contact's, M7) for the
/// queue's next member, with the message on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e13_a_customer_outside_the_queue_becomes_the_queues_lead() {
    let app = TestApp::spawn().await;
    let ben = app
        .create_user("Ben", "ben@example.com", "agent", "102")
        .await;
    let contact = app
        .post_ok(
            "/api/v1/contacts",
            json!({"name": "Stammkunde", "emails": ["stamm@example.org"], "responsible": ben}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The queue is Anna alone: Ben, the contact's responsible, is not in it.
    let setup = connect_mailbox(&app, json!({"route_to_responsible": true})).await;
    setup
        .dovecot
        .deliver(
            "alice",
            &message(
                "stamm@example.org",
                &format!("alice@{DOMAIN}"),
                "Nachbestellung",
                "e13",
            ),
        )
        .await;
    let emails = wait_for_emails(&app, 1).await;
    assert_eq!(emails[0]["crm_action"], "created", "{}", emails[0]);
    let leads = app.leads().await;
    assert_eq!(leads.len(), 1, "{leads:?}");
    assert_eq!(
        leads[0]["responsible"],
        json!(setup.anna),
        "the queue's next"
    );
    assert_eq!(
        leads[0]["customer"],
        json!(contact),
        "linked to the customer"
    );
    assert!(
        leads[0]["emails"].as_array().unwrap().is_empty(),
        "M7: the address stays the contact's: {}",
        leads[0]
    );
    let mut entities: Vec<String> = emails[0]["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    entities.sort();
    assert_eq!(
        entities,
        vec![
            format!("contact:{contact}"),
            format!("lead:{}", leads[0]["id"].as_str().unwrap())
        ]
    );
    app.stop().await;
}

/// E1 and A4: a personal mailbox's content is its owner's. Ben's mail from a
/// customer went to the CRM (his lead), so it is shared like any activity: the admin
/// reads it, Anna at `own` does not. His mail from a colleague never went to the CRM:
/// only Ben reads it, not even the admin. Mailbox settings and the forward address are
/// not an agent's to see, and no answer carries a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e1_a4_personal_mail_is_its_owners_unless_on_the_crm() {
    let app = TestApp::spawn().await;
    let dovecot = Dovecot::start();
    let anna = app
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let ben = app
        .create_user("Ben", "ben@example.com", "agent", "102")
        .await;
    let (anna_token, ben_token) = (app.token_for(&anna).await, app.token_for(&ben).await);
    dovecot.seed_maildir(
        "bob",
        "INBOX",
        &[
            "From: Neukunde <neu@kunde.test>\r\nTo: bob@leadline.test\r\nSubject: Anfrage\r\n\
             Message-ID: <anfrage-1@kunde.test>\r\n\r\nWas kostet das?\r\n",
            "From: Anna <anna@example.com>\r\nTo: bob@leadline.test\r\nSubject: Mittagessen\r\n\
             Message-ID: <lunch-1@example.com>\r\n\r\nKommst du mit?\r\n",
        ],
    );
    let (status, mailbox) = app
        .request(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            Some(&ben_token),
            Some(json!({
                "name": "Ben", "kind": "personal", "host": "127.0.0.1",
                "port": dovecot.imap_port(), "security": "none", "username": "bob",
                "password": dovecot.password("bob"), "address": format!("bob@{DOMAIN}"),
                "check": "idle", "sync_window_days": null, "create_leads_incoming": true,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{mailbox}");
    let mailbox = mailbox["id"].as_str().unwrap().to_owned();
    let bens = wait_until(MAIL_DEADLINE, "Ben's two messages", || async {
        let (_, page) = app
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/emails?mailbox={mailbox}"),
                Some(&ben_token),
                None,
            )
            .await;
        let items = page["items"].as_array()?.clone();
        (items.len() == 2).then_some(items)
    })
    .await;
    let customer = by_subject(&bens, "Anfrage").clone();
    let colleague = by_subject(&bens, "Mittagessen").clone();
    assert!(customer["activity"].is_string(), "on the CRM: {customer}");
    assert!(colleague["activity"].is_null(), "E5: {colleague}");

    let read = async |token: &str, email: &Value| {
        let id = email["id"].as_str().unwrap();
        let mut statuses = Vec::new();
        for path in [
            format!("/api/v1/emails/{id}"),
            format!("/api/v1/emails/{id}/raw"),
        ] {
            statuses.push(
                app.request(reqwest::Method::GET, &path, Some(token), None)
                    .await
                    .0,
            );
        }
        statuses
    };
    let ok = vec![StatusCode::OK; 2];
    let hidden = vec![StatusCode::NOT_FOUND; 2];
    assert_eq!(read(&ben_token, &customer).await, ok);
    assert_eq!(read(&ben_token, &colleague).await, ok);
    assert_eq!(
        read(&app.admin, &customer).await,
        ok,
        "shared through the CRM"
    );
    assert_eq!(
        read(&app.admin, &colleague).await,
        hidden,
        "E1: Ben's alone"
    );
    assert_eq!(read(&anna_token, &customer).await, hidden, "A2: Ben's lead");
    assert_eq!(read(&anna_token, &colleague).await, hidden);
    let admin_list = emails(&app).await;
    assert!(
        admin_list.iter().all(|e| e["subject"] != "Mittagessen"),
        "absent from the admin's list too: {admin_list:?}"
    );

    // A4: mailbox settings are their owner's and admins'; never a password.
    let (status, listed) = app
        .request(
            reqwest::Method::GET,
            "/api/v1/mailboxes",
            Some(&anna_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["items"], json!([]), "{listed}");
    let (status, _) = app
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/mailboxes/{mailbox}"),
            Some(&anna_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, forward) = app
        .request(
            reqwest::Method::GET,
            "/api/v1/settings/forward",
            Some(&anna_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{forward}");
    for token in [&app.admin, &ben_token] {
        let seen = app
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/mailboxes/{mailbox}"),
                Some(token),
                None,
            )
            .await
            .1;
        assert_eq!(seen["username"], "bob", "{seen}");
        assert!(
            !seen.to_string().contains(dovecot.password("bob")),
            "A4: {seen}"
        );
    }
    app.stop().await;
}
