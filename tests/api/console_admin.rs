//! The console's administration pages in headless Chromium against the real gateway: an
//! admin sets up their password and signs in, creates an agent, a queue and a number by
//! filling the forms; the API's errors land beside the fields they name (the number, a
//! weekday of the hours editor, the forward target); what was typed is what the API then
//! holds; the weekly hours round-trip; screenshots of every page in English and German.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::browser::{Browser, Options, WINDOW};
use crate::helpers::TestApp;

const ADMIN_EMAIL: &str = "alex@firma.test";
const ADMIN_PASSWORD: &str = "correct-horse-battery";

/// The first start: the setup form with the gateway's admin token, then signed in.
async fn set_up_admin(app: &TestApp, browser: &Browser) {
    browser.goto("/").await;
    browser.wait_for("form#setup").await;
    browser.fill_in("form#setup", "token", &app.admin).await;
    browser.fill_in("form#setup", "name", "Alex Admin").await;
    browser.fill_in("form#setup", "email", ADMIN_EMAIL).await;
    browser
        .fill_in("form#setup", "password", ADMIN_PASSWORD)
        .await;
    browser.click("form#setup [type=submit]").await;
    browser.wait_for("nav#nav").await;
}

/// The admin's password set over the API, for tests about other things.
async fn admin_with_password(app: &TestApp) {
    app.post_ok(
        "/api/v1/session/setup",
        json!({"token": app.admin, "name": "Alex Admin", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
        StatusCode::OK,
    )
    .await;
}

/// Opens `#/<hash>` and waits for the page's heading.
async fn open(browser: &Browser, hash: &str, heading: &str) {
    browser.goto(&format!("/#/{hash}")).await;
    browser.wait_for_text("main h1", heading).await;
}

/// The items of an API list.
async fn items(app: &TestApp, path: &str) -> Vec<Value> {
    app.get_ok(path).await["items"]
        .as_array()
        .expect("a list")
        .clone()
}

/// A screenshot of the whole page: the window made as tall as the page (and the browser's
/// own bars, which headless Chromium counts in the window), then back.
async fn page_shot(browser: &Browser, name: &str) {
    let height = browser
        .execute(
            "window.scrollTo(0, 0); return Math.ceil(document.documentElement.scrollHeight)",
            vec![],
        )
        .await
        .as_u64()
        .unwrap_or(u64::from(WINDOW.1)) as u32;
    let client = browser.client();
    client
        .set_window_size(WINDOW.0, (height + 120).clamp(WINDOW.1, 3200))
        .await
        .expect("resize");
    // Let the page lay itself out for the new size before the picture.
    browser
        .execute(
            "return new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))",
            vec![],
        )
        .await;
    browser.screenshot(name).await;
    client
        .set_window_size(WINDOW.0, WINDOW.1)
        .await
        .expect("resize back");
}

#[tokio::test]
async fn an_admin_creates_an_agent_a_queue_and_a_number_through_the_forms() {
    let app = TestApp::spawn().await;
    let browser = Browser::start(&app.base).await;
    set_up_admin(&app, &browser).await;
    // The dashboard is everyone's home page.
    browser.wait_for_text("main h1", "Dashboard").await;

    // An agent, typed into the people form.
    open(&browser, "users", "People").await;
    let people = "form[data-form=\"users\"]";
    browser.fill_in(people, "name", "Anna Berger").await;
    browser.fill_in(people, "email", "anna@firma.test").await;
    browser.fill_in(people, "role", "agent").await;
    browser.fill_in(people, "extension", "101").await;
    browser
        .fill_in(people, "phones", "+4915112345678\n+4930555111")
        .await;
    browser
        .fill_in(people, "sip_password", "sip-secret-101")
        .await;
    browser.fill_in(people, "password", "anna-password-1").await;
    browser.click(&format!("{people} [type=submit]")).await;
    browser
        .wait_for_text("table[data-list=\"users\"] tbody", "Anna Berger")
        .await;
    let anna = items(&app, "/api/v1/users")
        .await
        .into_iter()
        .find(|u| u["email"] == "anna@firma.test")
        .expect("Anna exists");
    assert_eq!(anna["role"], "agent");
    assert_eq!(anna["extension"], "101");
    assert_eq!(anna["phones"], json!(["+4915112345678", "+4930555111"]));
    assert_eq!(anna["sip_password_set"], true);
    assert_eq!(anna["password_set"], true);
    let anna_id = anna["id"].as_str().unwrap().to_owned();

    // A queue with Anna as its member, picked from the people.
    open(&browser, "queues", "Queues").await;
    let queues = "form[data-form=\"queues\"]";
    browser.fill_in(queues, "name", "Sales").await;
    browser.fill_in(queues, "member_to_add", &anna_id).await;
    browser
        .click(&format!("{queues} .members-editor .add-row button"))
        .await;
    browser
        .wait_for_present(&format!("{queues} li.member[data-user=\"{anna_id}\"]"))
        .await;
    browser.click(&format!("{queues} [type=submit]")).await;
    browser.wait_for_text("main h1", "Sales").await;
    let queue = items(&app, "/api/v1/queues")
        .await
        .into_iter()
        .find(|q| q["name"] == "Sales")
        .expect("the queue exists");
    assert_eq!(queue["members"], json!([anna_id]));
    let queue_id = queue["id"].as_str().unwrap().to_owned();

    // A number: first one that is not a number, whose error shows beside the field.
    open(&browser, "numbers", "Numbers").await;
    let numbers = "form[data-form=\"numbers\"]";
    browser.fill_in(numbers, "number", "12ab").await;
    browser.click(&format!("{numbers} [type=submit]")).await;
    let error = browser
        .wait_for(&format!("{numbers} .field-error[data-for=\"number\"]"))
        .await
        .text()
        .await
        .expect("error text");
    assert!(error.contains("12ab"), "the API's message: {error}");
    assert!(
        browser
            .focus_matches(&format!(
                "{numbers} [name=\"number\"][aria-invalid=\"true\"]"
            ))
            .await,
        "the bad field has the focus: {}",
        browser.focused().await
    );
    page_shot(&browser, "numbers-error-en").await;

    browser.fill_in(numbers, "number", "+49 30 901820").await;
    browser.fill_in(numbers, "queue", &queue_id).await;
    browser.fill_in(numbers, "lead_creation", "manual").await;
    browser.fill_in(numbers, "directions", "both").await;
    browser.fill_in(numbers, "ring_timeout_s", "25").await;
    browser.fill_in(numbers, "recording", "true").await;
    browser
        .fill_in(numbers, "recording_channels", "mixed")
        .await;
    browser
        .fill_in(numbers, "after_hours.action", "voicemail")
        .await;
    browser
        .fill_in(numbers, "after_hours.max_message_s", "90")
        .await;
    browser.click(&format!("{numbers} [type=submit]")).await;
    browser
        .wait_for_text("table[data-list=\"numbers\"] tbody", "+4930901820")
        .await;
    let number = items(&app, "/api/v1/numbers").await.remove(0);
    assert_eq!(number["number"], "+4930901820");
    assert_eq!(number["queue"], json!(queue_id));
    assert_eq!(number["lead_creation"], "manual");
    assert_eq!(number["directions"], "both");
    assert_eq!(number["ring_timeout_s"], 25);
    assert_eq!(number["recording"], true);
    assert_eq!(number["recording_channels"], "mixed");
    assert_eq!(number["hours"], Value::Null, "always open");
    assert_eq!(number["after_hours"]["action"], "voicemail");
    assert_eq!(number["after_hours"]["max_message_s"], 90);
    browser.finish().await;
    app.stop().await;
}

/// Sets a time or date input as the picker would (its text entry is the locale's).
async fn set_input(browser: &Browser, css: &str, value: &str) {
    browser.wait_for_present(css).await;
    browser
        .execute(
            "const el = document.querySelector(arguments[0]); el.value = arguments[1]; \
             el.dispatchEvent(new Event('input', {bubbles: true})); \
             el.dispatchEvent(new Event('change', {bubbles: true}));",
            vec![json!(css), json!(value)],
        )
        .await;
}

#[tokio::test]
async fn weekly_hours_set_in_the_editor_round_trip_through_the_api() {
    let app = TestApp::spawn().await;
    admin_with_password(&app).await;
    let trunk = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "Carrier", "kind": "carrier", "register": false, "host": "127.0.0.1"}),
            StatusCode::CREATED,
        )
        .await;
    let number = app
        .post_ok(
            "/api/v1/numbers",
            json!({"number": "+4930901821", "trunk": trunk["id"]}),
            StatusCode::CREATED,
        )
        .await;
    let id = number["id"].as_str().unwrap();
    let browser = Browser::start(&app.base).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    open(&browser, &format!("numbers/{id}"), "+4930901821").await;

    let form = "form[data-form=\"numbers\"]";
    browser
        .click(&format!("{form} input[value=\"week\"]"))
        .await;
    browser.fill_in(form, "hours.tz", "Europe/Berlin").await;
    // Monday: two ranges, the second overlapping the first for now.
    let monday = format!("{form} fieldset[data-day=\"mon\"]");
    browser.click(&format!("{monday} .add-range")).await;
    browser.click(&format!("{monday} .add-range")).await;
    set_input(
        &browser,
        &format!("{monday} [name=\"hours.week.mon[0][0]\"]"),
        "08:00",
    )
    .await;
    set_input(
        &browser,
        &format!("{monday} [name=\"hours.week.mon[0][1]\"]"),
        "12:30",
    )
    .await;
    set_input(
        &browser,
        &format!("{monday} [name=\"hours.week.mon[1][0]\"]"),
        "12:00",
    )
    .await;
    set_input(
        &browser,
        &format!("{monday} [name=\"hours.week.mon[1][1]\"]"),
        "17:00",
    )
    .await;
    // Friday until midnight, Saturday closed, a day off.
    let friday = format!("{form} fieldset[data-day=\"fri\"]");
    browser.click(&format!("{friday} .add-range")).await;
    set_input(
        &browser,
        &format!("{friday} [name=\"hours.week.fri[0][0]\"]"),
        "14:00",
    )
    .await;
    set_input(
        &browser,
        &format!("{friday} [name=\"hours.week.fri[0][1]\"]"),
        "00:00",
    )
    .await;
    browser.click(&format!("{form} .days-off button")).await;
    set_input(
        &browser,
        &format!("{form} [name=\"hours.days_off[0]\"]"),
        "2026-12-24",
    )
    .await;
    browser.click(&format!("{form} [type=submit]")).await;

    // The overlap is the API's error, shown in Monday's group.
    let error = browser
        .wait_for(&format!(
            "{monday} .field-error[data-for=\"hours.week.mon\"]"
        ))
        .await
        .text()
        .await
        .expect("text");
    assert!(error.contains("overlaps"), "the API's message: {error}");
    page_shot(&browser, "number-hours-error-en").await;

    // Fixed; a forward target that is no number shows beside its field.
    set_input(
        &browser,
        &format!("{monday} [name=\"hours.week.mon[1][0]\"]"),
        "13:00",
    )
    .await;
    browser.fill_in(form, "after_hours.action", "forward").await;
    browser
        .fill_in(form, "after_hours.forward_to", "call me")
        .await;
    browser.click(&format!("{form} [type=submit]")).await;
    browser
        .wait_for(&format!(
            "{form} .field-error[data-for=\"after_hours.forward_to\"]"
        ))
        .await;
    browser
        .fill_in(form, "after_hours.forward_to", "+49 30 1234567")
        .await;
    browser.click(&format!("{form} [type=submit]")).await;
    browser.wait_for_text(".toast", "Saved").await;

    let expected = json!({
        "tz": "Europe/Berlin",
        "week": {"mon": [["08:00", "12:30"], ["13:00", "17:00"]], "fri": [["14:00", "24:00"]]},
        "days_off": ["2026-12-24"],
    });
    let stored = app.get_ok(&format!("/api/v1/numbers/{id}")).await;
    assert_eq!(
        hours_without_empty_days(&stored["hours"]),
        expected,
        "{stored}"
    );
    assert_eq!(stored["after_hours"]["action"], "forward");
    assert_eq!(stored["after_hours"]["forward_to"], "+49301234567");

    // And back: the page, opened afresh, shows what the API holds.
    open(&browser, "numbers", "Numbers").await;
    open(&browser, &format!("numbers/{id}"), "+4930901821").await;
    let shown = browser
        .execute(
            "return [...document.querySelectorAll('fieldset.day input[type=time]')]\
             .map((i) => i.name + '=' + i.value)",
            vec![],
        )
        .await;
    assert_eq!(
        shown,
        json!([
            "hours.week.mon[0][0]=08:00",
            "hours.week.mon[0][1]=12:30",
            "hours.week.mon[1][0]=13:00",
            "hours.week.mon[1][1]=17:00",
            "hours.week.fri[0][0]=14:00",
            "hours.week.fri[0][1]=00:00",
        ])
    );
    // Always open again: null over the API (once the first save's notice is gone, so the
    // next one is this save's).
    browser.wait_gone(".toast").await;
    browser
        .click(&format!("{form} input[value=\"always\"]"))
        .await;
    browser.click(&format!("{form} [type=submit]")).await;
    browser.wait_for_text(".toast", "Saved").await;
    let stored = app.get_ok(&format!("/api/v1/numbers/{id}")).await;
    assert_eq!(stored["hours"], Value::Null, "{stored}");
    browser.finish().await;
    app.stop().await;
}

/// The API's `hours` without weekdays it lists as closed (`[]`), to compare with the
/// days the editor was given.
fn hours_without_empty_days(hours: &Value) -> Value {
    let mut hours = hours.clone();
    if let Some(week) = hours.get_mut("week").and_then(Value::as_object_mut) {
        week.retain(|_, ranges| ranges.as_array().is_some_and(|r| !r.is_empty()));
    }
    hours
}

/// Example data for the screenshots: people, a queue, trunks, numbers, a mailbox, an
/// exception, a webhook.
async fn example_data(app: &TestApp) -> Value {
    let anna = app
        .post_ok(
            "/api/v1/users",
            json!({"name": "Anna Berger", "email": "anna@firma.test", "role": "agent",
                   "extension": "101", "phones": ["+4915112345678"], "sip_password": "sip-secret-101"}),
            StatusCode::CREATED,
        )
        .await;
    let ben = app
        .post_ok(
            "/api/v1/users",
            json!({"name": "Ben Koch", "email": "ben@firma.test", "role": "agent", "extension": "102"}),
            StatusCode::CREATED,
        )
        .await;
    let queue = app
        .post_ok(
            "/api/v1/queues",
            json!({"name": "Sales", "members": [anna["id"], ben["id"]]}),
            StatusCode::CREATED,
        )
        .await;
    let carrier = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "Carrier", "kind": "carrier", "host": "127.0.0.1", "port": 9,
                   "username": "leadline", "password": "carrier-secret"}),
            StatusCode::CREATED,
        )
        .await;
    app.post_ok(
        "/api/v1/trunks",
        json!({"name": "Office PBX", "kind": "pbx", "allowed_ips": ["10.0.0.5"]}),
        StatusCode::CREATED,
    )
    .await;
    let number = app
        .post_ok(
            "/api/v1/numbers",
            json!({"number": "+4930901820", "trunk": carrier["id"], "queue": queue["id"],
                   "hours": {"tz": "Europe/Berlin",
                             "week": {"mon": [["09:00", "12:00"], ["13:00", "18:00"]],
                                      "tue": [["09:00", "18:00"]], "wed": [["09:00", "18:00"]],
                                      "thu": [["09:00", "18:00"]], "fri": [["09:00", "16:00"]]},
                             "days_off": ["2026-12-24", "2026-12-25"]},
                   "after_hours": {"action": "voicemail", "max_message_s": 90}}),
            StatusCode::CREATED,
        )
        .await;
    app.post_ok(
        "/api/v1/mailboxes",
        json!({"name": "Info", "kind": "company", "host": "127.0.0.1", "port": 9,
               "security": "none", "username": "info@firma.test", "password": "mail-secret"}),
        StatusCode::CREATED,
    )
    .await;
    app.post_ok(
        "/api/v1/exceptions",
        json!({"value": "@gmail.com"}),
        StatusCode::CREATED,
    )
    .await;
    app.post_ok(
        "/api/v1/webhooks",
        json!({"url": "https://crm.example.com/leadline", "events": ["call.ended"]}),
        StatusCode::CREATED,
    )
    .await;
    json!({"anna": anna["id"], "queue": queue["id"], "number": number["id"], "trunk": carrier["id"]})
}

/// Every administration page and the dashboard, in one language.
async fn screenshots(app: &TestApp, ids: &Value, options: Options, lang: &str) {
    let browser = Browser::start_with(&app.base, options).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let id = |key: &str| ids[key].as_str().unwrap().to_owned();
    let pages = [
        ("dashboard", "dashboard".to_owned(), ".stat-grid"),
        (
            "people",
            "users".to_owned(),
            "table[data-list=\"users\"] tbody tr",
        ),
        ("person", format!("users/{}", id("anna")), "div.tokens"),
        ("queues", format!("queues/{}", id("queue")), "li.member"),
        (
            "numbers",
            "numbers".to_owned(),
            "table[data-list=\"numbers\"] tbody tr",
        ),
        (
            "number",
            format!("numbers/{}", id("number")),
            "fieldset.hours-editor",
        ),
        ("trunks", format!("trunks/{}", id("trunk")), "dl.facts"),
        (
            "registrations",
            "registrations".to_owned(),
            "table[data-list=\"registrations\"]",
        ),
        (
            "mailboxes",
            "mailboxes".to_owned(),
            "table[data-list=\"mailboxes\"] tbody tr",
        ),
        ("settings", "settings".to_owned(), "#forward-address"),
        (
            "exceptions",
            "exceptions".to_owned(),
            "table[data-list=\"exceptions\"] tbody tr",
        ),
        ("sources", "sources".to_owned(), "table.list tbody tr"),
        ("pipelines", "pipelines".to_owned(), "li.stage"),
        (
            "webhooks",
            "webhooks".to_owned(),
            "table[data-list=\"webhooks\"] tbody tr",
        ),
        (
            "audit",
            "audit".to_owned(),
            "table[data-list=\"audit\"] tbody tr",
        ),
    ];
    for (name, hash, ready) in pages {
        browser.goto(&format!("/#/{hash}")).await;
        browser.wait_for("main h1").await;
        browser.wait_for_present(ready).await;
        browser.wait_gone("main [aria-busy=\"true\"]").await;
        page_shot(&browser, &format!("{name}-{lang}")).await;
    }
    browser.finish().await;
}

#[tokio::test]
async fn screenshots_of_the_administration_pages_in_english_and_german() {
    let app = TestApp::spawn().await;
    admin_with_password(&app).await;
    let ids = example_data(&app).await;
    screenshots(&app, &ids, Options::default(), "en").await;
    screenshots(&app, &ids, Options::german(), "de").await;
    app.stop().await;
}
