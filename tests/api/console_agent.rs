//! The agent's console pages in a real browser against the real gateway: the call window
//! following a call that SIPp places through the B2BUA, click-to-call from a customer's
//! page, what an agent at access level `own` does not see (A1), and every agent page in
//! both languages (the README's screenshots).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::calls_sip::{CALLER, NUMBER, Phone, carrier_call, carrier_call_from, ended_call, line};
use crate::common::browser::{Browser, Options};
use crate::common::wait_until;
use crate::dial::{CUSTOMER, CUSTOMER_E164, DialLine};
use crate::helpers::TestApp;

const ANNA_PASSWORD: &str = "anna-console-pw";
const BEN_PASSWORD: &str = "ben-console-pw";

/// Gives an employee a console password (admin).
async fn set_password(app: &TestApp, user: &str, password: &str) {
    let (status, body) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/users/{user}"),
            Some(&app.admin),
            Some(json!({ "password": password })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn create(app: &TestApp, path: &str, body: Value) -> Value {
    app.post_ok(path, body, StatusCode::CREATED).await
}

/// How many elements match `css` in the browser's page now.
async fn count(browser: &Browser, css: &str) -> u64 {
    browser
        .execute(
            "return document.querySelectorAll(arguments[0]).length",
            vec![json!(css)],
        )
        .await
        .as_u64()
        .unwrap_or(0)
}

/// The rendered text of the whole page.
async fn page_text(browser: &Browser) -> String {
    browser
        .execute("return document.body.innerText", vec![])
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// T1 and the call window end to end: Anna signs in; the carrier calls our number from an
/// unknown number; in automatic mode the lead exists before her phone rings, so the card
/// that appears already names it; her SIPp phone rings (the card says on which number and
/// for whom), answers (the card says by whom) and hangs up (the card shows the end and
/// the duration); the card's link opens the lead, whose timeline shows the answered call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_window_follows_a_sip_call_and_the_lead_page_shows_it() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    set_password(&app, &line.anna, ANNA_PASSWORD).await;
    let browser = Browser::start(&app.base).await;
    browser.sign_in("anna@example.com", ANNA_PASSWORD).await;
    browser.goto("/#/leads").await;
    browser.wait_for("table[data-list=\"leads\"]").await;

    let phone = Phone::register(&app, "101", "pw-101-secret").await;
    let answers = phone.expect_call("agent_ring_answer_hang_up.xml");
    let carrier = carrier_call(&app, "carrier_call_hung_up.xml", &[]);

    let ringing = ".call-card[data-state=\"ringing\"]";
    browser.wait_for(ringing).await;
    let leads = app.leads().await;
    assert_eq!(
        leads.len(),
        1,
        "T4 automatic: the lead before the phone rings"
    );
    let name = leads[0]["name"].as_str().unwrap().to_owned();
    let lead_id = leads[0]["id"].as_str().unwrap().to_owned();
    browser
        .wait_for_text(&format!("{ringing} .call-card__name"), &name)
        .await;
    browser
        .wait_for_text(
            &format!("{ringing} .call-card__state"),
            &format!("Ringing on {NUMBER}"),
        )
        .await;
    browser
        .wait_for_text(&format!("{ringing} .call-card__state"), "Anna")
        .await;
    browser
        .wait_for_text(&format!("{ringing} .call-card__number"), CALLER)
        .await;
    browser.screenshot("call-ringing-en").await;

    browser
        .wait_for_text(
            ".call-card[data-state=\"answered\"] .call-card__state",
            "Answered by Anna",
        )
        .await;
    let (ok, seen) = answers.finish().await;
    assert!(ok, "Anna's phone rang, answered and hung up: {seen}");
    let (ok, seen) = carrier.finish().await;
    assert!(ok, "the carrier's call was answered and hung up: {seen}");
    let call = ended_call(&app).await;
    assert_eq!(call["outcome"], "answered", "{call}");
    browser
        .wait_for_text(
            ".call-card[data-state=\"ended\"] .call-card__state",
            "Ended after 0:0",
        )
        .await;
    // The card stays until closed, with a note field for the call's activity.
    browser
        .wait_for(".call-card[data-state=\"ended\"] form.note-form textarea[name=\"note\"]")
        .await;

    browser.click("a.call-card__entity").await;
    browser.wait_for_text("h1", &name).await;
    assert!(
        browser
            .current_url()
            .await
            .ends_with(&format!("#/leads/{lead_id}")),
        "the card links to the lead"
    );
    let item = format!(
        ".timeline li[data-activity=\"{}\"]",
        call["activity"].as_str().unwrap()
    );
    browser.wait_for_text(&item, "answered").await;
    browser.wait_for_text(&item, "Anna").await;

    // The note typed into the ended card lands on the call's activity.
    browser
        .fill_in(
            ".call-card form.note-form",
            "note",
            "Wants a quote for 40 trucks",
        )
        .await;
    browser
        .click(".call-card form.note-form button[type=submit]")
        .await;
    wait_until(Duration::from_secs(10), "the note to be saved", || async {
        let timeline = app
            .get_ok(&format!("/api/v1/activities?entity=lead:{lead_id}"))
            .await;
        (timeline["items"][0]["note"] == "Wants a quote for 40 trucks").then_some(())
    })
    .await;
    browser.click(".call-card__close").await;
    browser.wait_gone(".call-card").await;
    // The lead's page, read again, shows the note in the timeline.
    browser.goto("/#/leads").await;
    browser.wait_for("table[data-list=\"leads\"]").await;
    browser.goto(&format!("/#/leads/{lead_id}")).await;
    browser
        .wait_for_text(&item, "Wants a quote for 40 trucks")
        .await;
    browser.screenshot("lead-en").await;
    browser.finish().await;
    app.stop().await;
}

/// T7 from the console: on her customer's page Anna presses "Call" beside the number;
/// her registered SIPp phone gets the gateway's INVITE first and answers; then the
/// carrier's far side receives the customer's INVITE with our number as caller ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_to_call_from_a_contact_page_rings_the_agent_then_the_customer() {
    let app = TestApp::spawn_for_sipp().await;
    let line = DialLine::new(&app, 20).await;
    set_password(&app, &line.anna, ANNA_PASSWORD).await;
    let contact = create(
        &app,
        "/api/v1/contacts",
        json!({"name": "Jana Müller", "phones": [CUSTOMER], "responsible": line.anna}),
    )
    .await;
    let browser = Browser::start(&app.base).await;
    browser.sign_in("anna@example.com", ANNA_PASSWORD).await;
    browser
        .goto(&format!("/#/contacts/{}", contact["id"].as_str().unwrap()))
        .await;
    browser.wait_for_text("h1", "Jana Müller").await;

    let phone = line.agent_phone(&app, "agent_answer.xml").await;
    let carrier = line.carrier_far_side("answer_and_hang_up.xml");
    let button = format!(".facts button.call-btn[aria-label=\"Call {CUSTOMER_E164}\"]");
    browser.click(&button).await;
    browser
        .wait_for_text(".toast", "Your phone rings now")
        .await;

    let (ok, far_side) = carrier.finish().await;
    assert!(ok, "the customer's INVITE reached the carrier: {far_side}");
    let (ok, agent) = phone.finish().await;
    assert!(ok, "Anna's phone rang first and answered: {agent}");
    assert!(
        agent.contains("INVITE sip:"),
        "Anna's phone got an INVITE: {agent}"
    );
    let customer_invite = far_side
        .find("INVITE sip:")
        .expect("the carrier got an INVITE");
    assert!(
        far_side[customer_invite..].starts_with("INVITE sip:49301234567@"),
        "the customer's number: {far_side}"
    );
    let from = far_side[customer_invite..]
        .lines()
        .find(|l| l.starts_with("From:"))
        .expect("a From header");
    assert!(
        from.contains("4930901820"),
        "our number as caller ID: {from}"
    );
    let call = ended_call(&app).await;
    assert_eq!(call["direction"], "outgoing", "{call}");
    assert_eq!(call["user"], json!(line.anna), "{call}");
    // The call window showed the outgoing call too.
    browser.wait_for(".call-card[data-state=\"ended\"]").await;
    browser.finish().await;
    app.stop().await;
}

/// A1 at level `own`: Ben's customer is not in Anna's contact list, not found by her
/// search, and a call from that customer (ringing Ben, whose customer it is) rings no card
/// in Anna's call window, while a call from her own customer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_own_level_hides_a_colleagues_customer_from_lists_search_and_call_window() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    set_password(&app, &line.anna, ANNA_PASSWORD).await;
    set_password(&app, &line.ben, BEN_PASSWORD).await;
    app.put_ok(
        "/api/v1/settings/access",
        json!({"agent_view": "own", "agent_edit": "own"}),
    )
    .await;
    const BENS_CUSTOMER: &str = "+4915112345678";
    const ANNAS_CUSTOMER: &str = "+4916012345678";
    create(
        &app,
        "/api/v1/contacts",
        json!({"name": "Bernd Bensfreund", "phones": [BENS_CUSTOMER], "responsible": line.ben}),
    )
    .await;
    create(
        &app,
        "/api/v1/contacts",
        json!({"name": "Anke Annasfreundin", "phones": [ANNAS_CUSTOMER], "responsible": line.anna}),
    )
    .await;

    let browser = Browser::start(&app.base).await;
    browser.sign_in("anna@example.com", ANNA_PASSWORD).await;
    browser.goto("/#/contacts").await;
    browser
        .wait_for_text("table[data-list=\"contacts\"] tbody", "Anke Annasfreundin")
        .await;
    assert!(
        !page_text(&browser).await.contains("Bensfreund"),
        "Ben's customer is not in Anna's list"
    );
    browser.fill_in("form[role=search]", "q", "Bernd").await;
    browser.click("form[role=search] button[type=submit]").await;
    browser.wait_for_text(".list-status", "Nothing found").await;
    assert_eq!(
        count(&browser, "table[data-list=\"contacts\"] tbody tr").await,
        0
    );

    // Ben's customer calls: the responsible (Ben) rings first and answers.
    let ben_phone = Phone::register(&app, "102", "pw-102-secret").await;
    let ben_answers = ben_phone.expect_call("agent_answer.xml");
    let (ok, seen) = carrier_call_from(&app, BENS_CUSTOMER, "carrier_call.xml", &[])
        .finish()
        .await;
    assert!(ok, "Ben's customer's call was answered: {seen}");
    let (ok, seen) = ben_answers.finish().await;
    assert!(ok, "Ben's phone answered: {seen}");
    let call = ended_call(&app).await;
    assert_eq!(call["answered_by"], json!(line.ben), "{call}");

    // A call of Anna's own customer still reaches her window (the stream is live) ...
    let (status, body) = app
        .request(
            Method::POST,
            "/api/v1/calls/events",
            Some(&app.admin),
            Some(
                json!({"call_id": "annas-customer", "event": "ringing", "direction": "incoming",
                        "from": ANNAS_CUSTOMER, "to": NUMBER}),
            ),
        )
        .await;
    assert!(status.is_success(), "{body}");
    browser
        .wait_for_text(".call-card .call-card__name", "Anke Annasfreundin")
        .await;
    // ... and Ben's customer's call, earlier on the same stream, rang no card for her.
    assert_eq!(
        count(&browser, ".call-card").await,
        1,
        "only her customer's card"
    );
    let window = browser
        .execute(
            "return document.getElementById('call-window').innerText",
            vec![],
        )
        .await;
    let window = window.as_str().unwrap_or_default();
    assert!(
        !window.contains(BENS_CUSTOMER) && !window.contains("Bensfreund"),
        "nothing of Ben's customer in Anna's call window: {window}"
    );
    browser.finish().await;
    app.stop().await;
}

/// What the screenshots show: Anna's customers, calls and open tasks, seeded over the API
/// (calls reported as a PBX reports them).
struct Seeded {
    anna: String,
    contact: String,
}

async fn seed(app: &TestApp) -> Seeded {
    let anna = create(
        app,
        "/api/v1/users",
        json!({"name": "Anna Berger", "email": "anna@example.com", "role": "agent",
               "extension": "101", "password": ANNA_PASSWORD}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ben = create(
        app,
        "/api/v1/users",
        json!({"name": "Ben Krause", "email": "ben@example.com", "role": "agent", "extension": "102"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let queue = create(
        app,
        "/api/v1/queues",
        json!({"name": "Sales", "members": [anna, ben]}),
    )
    .await;
    create(
        app,
        "/api/v1/numbers",
        json!({"number": NUMBER, "default_country": "DE", "queue": queue["id"]}),
    )
    .await;
    let company = create(
        app,
        "/api/v1/companies",
        json!({"name": "Müller Logistik GmbH", "phones": ["+49 30 1234567"],
               "emails": ["info@mueller-logistik.example"], "responsible": anna}),
    )
    .await;
    let contact = create(
        app,
        "/api/v1/contacts",
        json!({"name": "Jana Müller", "phones": ["+49 171 2345678"],
               "emails": ["jana@mueller-logistik.example"], "company": company["id"],
               "responsible": anna}),
    )
    .await;
    create(
        app,
        "/api/v1/deals",
        json!({"name": "Fleet tracking, 40 trucks", "contact": contact["id"],
               "company": company["id"], "responsible": anna}),
    )
    .await;
    create(
        app,
        "/api/v1/leads",
        json!({"name": "Tom Becker", "phones": ["+49 151 1112223"],
               "emails": ["tom@becker.example"], "responsible": anna}),
    )
    .await;
    let event = |id: &str, event: &str, from: &str, at: &str, user: Option<&str>| {
        json!({"call_id": id, "event": event, "direction": "incoming", "from": from,
               "to": NUMBER, "at": at, "user": user})
    };
    for body in [
        event(
            "s1",
            "ringing",
            "+491712345678",
            "2026-11-23T09:00:00Z",
            None,
        ),
        event(
            "s1",
            "answered",
            "+491712345678",
            "2026-11-23T09:00:06Z",
            Some(&anna),
        ),
        event("s1", "ended", "+491712345678", "2026-11-23T09:04:18Z", None),
        event(
            "s2",
            "ringing",
            "+4915209876543",
            "2026-11-23T10:12:00Z",
            None,
        ),
        event(
            "s2",
            "ended",
            "+4915209876543",
            "2026-11-23T10:12:25Z",
            None,
        ),
        event(
            "s3",
            "ringing",
            "+491511112223",
            "2026-11-23T11:30:00Z",
            None,
        ),
        event("s3", "ended", "+491511112223", "2026-11-23T11:30:20Z", None),
    ] {
        let (status, answer) = app
            .request(
                Method::POST,
                "/api/v1/calls/events",
                Some(&app.admin),
                Some(body),
            )
            .await;
        assert!(status.is_success(), "{answer}");
    }
    Seeded {
        anna,
        contact: contact["id"].as_str().unwrap().to_owned(),
    }
}

/// Every agent page in English and German, as Anna sees them: the catalogue's strings in
/// the page's language, the flows a user would take (complete and reopen a call-back, a
/// call card from a PBX event), and the README's screenshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_pages_in_both_languages() {
    let app = TestApp::spawn().await;
    let seeded = seed(&app).await;
    for (lang, options) in [("en", Options::default()), ("de", Options::german())] {
        let german = lang == "de";
        let pick = |en: &'static str, de: &'static str| if german { de } else { en };
        let browser = Browser::start_with(&app.base, options).await;
        browser.sign_in("anna@example.com", ANNA_PASSWORD).await;
        assert_eq!(browser.document_lang().await, lang);

        // My work: the two missed calls to return; completing one and reopening it.
        browser.goto("/#/work").await;
        browser
            .wait_for_text("h1", pick("My work", "Meine Aufgaben"))
            .await;
        browser
            .wait_for("ul[data-work=\"calls\"] li.work-item")
            .await;
        assert_eq!(
            count(&browser, "ul[data-work=\"calls\"] li.work-item").await,
            2
        );
        browser.screenshot(&format!("work-{lang}")).await;
        browser
            .click("ul[data-work=\"calls\"] li.work-item button[data-action=\"complete\"]")
            .await;
        browser
            .wait_for("ul[data-work=\"calls\"] li.work-item[data-completed=\"true\"]")
            .await;
        let open = app
            .request(
                Method::GET,
                "/api/v1/activities?mine=true&completed=false",
                Some(&app.token_for(&seeded.anna).await),
                None,
            )
            .await
            .1;
        assert_eq!(open["items"].as_array().map(Vec::len), Some(1), "{open}");
        browser
            .click("ul[data-work=\"calls\"] li.work-item button[data-action=\"reopen\"]")
            .await;
        browser
            .wait_for("ul[data-work=\"calls\"] li.work-item[data-completed=\"false\"] button[data-action=\"complete\"]")
            .await;

        // A list, searched.
        browser.wait_gone(".toast").await;
        browser.goto("/#/contacts").await;
        browser
            .wait_for_text("table[data-list=\"contacts\"] tbody", "Jana Müller")
            .await;
        browser.goto("/#/leads").await;
        browser
            .wait_for_text("table[data-list=\"leads\"] tbody", "Tom Becker")
            .await;
        browser.screenshot(&format!("leads-{lang}")).await;

        // A detail page with its timeline.
        browser
            .goto(&format!("/#/contacts/{}", seeded.contact))
            .await;
        browser.wait_for_text("h1", "Jana Müller").await;
        browser
            .wait_for_text(
                ".timeline li[data-kind=\"call\"]",
                pick("answered", "angenommen"),
            )
            .await;
        browser
            .wait_for_text(".timeline li[data-kind=\"call\"]", "4:12")
            .await;
        browser.screenshot(&format!("contact-{lang}")).await;

        // The call log, filtered to missed calls.
        browser.goto("/#/calls").await;
        browser
            .wait_for("table[data-list=\"calls\"] tbody tr")
            .await;
        // Seeded three; the English run's card call is a fourth in the German run.
        let calls = if german { 4 } else { 3 };
        assert_eq!(
            count(&browser, "table[data-list=\"calls\"] tbody tr").await,
            calls
        );
        browser.screenshot(&format!("calls-{lang}")).await;
        browser.fill_in("form[role=search]", "missed", "true").await;
        browser.click("form[role=search] button[type=submit]").await;
        wait_until(Duration::from_secs(10), "the missed calls only", || async {
            (count(&browser, "table[data-list=\"calls\"] tbody tr").await == 2).then_some(())
        })
        .await;

        // A call card, from the PBX's events: Jana calls again.
        browser
            .goto(&format!("/#/contacts/{}", seeded.contact))
            .await;
        let call_id = format!("card-{lang}");
        let (status, body) = app
            .request(
                Method::POST,
                "/api/v1/calls/events",
                Some(&app.admin),
                Some(
                    json!({"call_id": call_id, "event": "ringing", "direction": "incoming",
                            "from": "+491712345678", "to": NUMBER}),
                ),
            )
            .await;
        assert!(status.is_success(), "{body}");
        browser
            .wait_for_text(".call-card .call-card__name", "Jana Müller")
            .await;
        browser
            .wait_for_text(".call-card .call-card__deals", "Fleet tracking, 40 trucks")
            .await;
        browser.wait_for(".call-card .call-card__recent li").await;
        browser.screenshot(&format!("call-card-{lang}")).await;
        for (event, user) in [("answered", Some(&seeded.anna)), ("ended", None)] {
            let (status, body) = app
                .request(
                    Method::POST,
                    "/api/v1/calls/events",
                    Some(&app.admin),
                    Some(
                        json!({"call_id": call_id, "event": event, "direction": "incoming",
                                "from": "+491712345678", "to": NUMBER, "user": user}),
                    ),
                )
                .await;
            assert!(status.is_success(), "{body}");
        }
        browser
            .wait_for_text(
                ".call-card[data-state=\"ended\"] .call-card__state",
                pick("Ended after", "Beendet nach"),
            )
            .await;
        browser.wait_for(".call-card form.note-form").await;
        browser.sign_out().await;
        browser.finish().await;
    }
    app.stop().await;
}
