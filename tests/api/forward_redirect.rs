//! The forward address (E16) fed the way most people feed it: a mailbox that sends on what
//! it receives, unchanged — Gmail's and Microsoft 365's automatic forwarding, inbox and
//! server rules, Sieve `redirect`, Thunderbird's "Redirect". Real header sets from
//! `tests/data/email/redirected` (see its SOURCES.md) go over SMTP and LMTP to the running
//! gateway; the customer's history is read back over the HTTP API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::wait_until;
use crate::helpers::TestApp;
use crate::mail::swaks;

const DEADLINE: Duration = Duration::from_secs(20);

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/email/redirected")
}

/// One row of expected.tsv.
struct Case {
    file: String,
    customer: String,
    direction: String,
    responsible: String,
}

fn cases() -> Vec<Case> {
    let index = std::fs::read_to_string(data_dir().join("expected.tsv")).unwrap();
    index
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            Case {
                file: cols[0].to_owned(),
                customer: cols[1].to_owned(),
                direction: cols[2].to_owned(),
                responsible: cols[3].to_owned(),
            }
        })
        .collect()
}

/// The message as the gateway receives it: the account's real forward address in place.
fn message(file: &str, forward_address: &str) -> String {
    std::fs::read_to_string(data_dir().join(file))
        .unwrap()
        .replace("{{FORWARD_ADDRESS}}", forward_address)
}

fn subject_of(message: &str) -> String {
    message
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .expect("a Subject line")
        .trim()
        .to_owned()
}

/// Sends `raw` to the forward address over SMTP or LMTP, as a mail server would.
async fn deliver(app: &TestApp, dir: &Path, name: &str, raw: &str, address: &str, lmtp: bool) {
    let path = dir.join(name);
    std::fs::write(&path, raw).unwrap();
    let data = format!("@{}", path.display());
    let mut args = vec!["--to", address, "--from", "mailer@firma.example"];
    if lmtp {
        args.extend(["--protocol", "LMTP"]);
    }
    args.extend(["--data", &data]);
    swaks(app, &args).await;
}

/// The stored message with this subject, once it is there.
async fn email_with_subject(app: &TestApp, subject: &str) -> Value {
    wait_until(DEADLINE, "the message to be stored", || async {
        app.get_ok("/api/v1/emails?limit=500").await["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["subject"] == subject)
            .cloned()
    })
    .await
}

/// E16: each real header set of a redirected or automatically forwarded customer message
/// lands on that customer's history as incoming, and the lead it creates belongs to the
/// employee it was addressed to (named by the redirect's own header fields when the
/// recipient is a shared alias); an employee's own message that reaches the address as a
/// copy stays outgoing to its recipients. Odd cases go over LMTP, even ones over SMTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e16_redirected_and_auto_forwarded_mail_is_the_authors_for_the_employee_addressed() {
    let app = TestApp::spawn().await;
    let anna = app
        .create_user("Anna Berg", "anna@firma.example", "agent", "101")
        .await;
    let ben = app
        .create_user("Ben Koch", "ben@firma.example", "agent", "102")
        .await;
    let forward = app.get_ok("/api/v1/settings/forward").await["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    assert_eq!(cases.len(), 7, "every sample has its expectation");
    for (i, case) in cases.iter().enumerate() {
        let raw = message(&case.file, &forward);
        let subject = subject_of(&raw);
        deliver(&app, dir.path(), &case.file, &raw, &forward, i % 2 == 1).await;
        let email = email_with_subject(&app, &subject).await;
        assert_eq!(
            email["direction"],
            case.direction.as_str(),
            "{}: {email}",
            case.file
        );
        assert_eq!(email["crm_action"], "created", "{}: {email}", case.file);
        let leads = app.leads().await;
        let lead = leads
            .iter()
            .find(|l| l["emails"] == json!([case.customer]))
            .unwrap_or_else(|| panic!("{}: a lead for {} in {leads:?}", case.file, case.customer));
        let employee = match case.responsible.as_str() {
            "anna" => &anna,
            "ben" => &ben,
            other => panic!("unknown employee {other}"),
        };
        assert_eq!(
            lead["responsible"],
            employee.as_str(),
            "{}: {lead}",
            case.file
        );
        let on_lead = format!("lead:{}", lead["id"].as_str().unwrap());
        assert!(
            email["entities"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| *e == on_lead),
            "{}: the message is on the customer's lead: {email}",
            case.file
        );
        let timeline = app
            .get_ok(&format!("/api/v1/activities?entity={on_lead}"))
            .await;
        let items = timeline["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{}: {timeline}", case.file);
        assert_eq!(items[0]["direction"], case.direction.as_str(), "{timeline}");
    }
    // Nothing else was made: one lead per sample, no employee or forward address as one.
    assert_eq!(app.leads().await.len(), cases.len());

    // A customer already on the CRM keeps their responsible: Ben's contact writes to Anna,
    // whose mail client redirects it; the message joins Ben's contact.
    let contact = app
        .post_ok(
            "/api/v1/contacts",
            json!({"name": "Praxis Sonne", "emails": ["kontakt@praxis-sonne.example"],
                   "responsible": ben}),
            StatusCode::CREATED,
        )
        .await;
    let raw = message("thunderbird-redirect.eml", &forward)
        .replace(
            "praxis@praxis-sonne.example",
            "kontakt@praxis-sonne.example",
        )
        .replace("Subject: Termin", "Subject: Zweiter Termin")
        .replace("<5a1d2c3b-", "<second-5a1d2c3b-");
    deliver(&app, dir.path(), "known.eml", &raw, &forward, false).await;
    let email = email_with_subject(&app, "Zweiter Termin fuer die Vorfuehrung").await;
    assert_eq!(email["direction"], "incoming", "{email}");
    assert_eq!(email["crm_action"], "attached", "{email}");
    assert_eq!(
        email["entities"],
        json!([format!("contact:{}", contact["id"].as_str().unwrap())])
    );
    let contact = app
        .get_ok(&format!(
            "/api/v1/contacts/{}",
            contact["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(contact["responsible"], ben.as_str(), "{contact}");
    assert_eq!(
        app.leads().await.len(),
        cases.len(),
        "no lead for a known customer"
    );
    app.stop().await;
}
