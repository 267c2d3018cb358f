//! The web console in a real browser (headless Chromium, tests/common/browser.rs) against
//! the real application: the first start's set-up, signing in and out, a wrong password,
//! the keyboard alone, both languages, and the page's security headers. The tests write
//! the README's screenshots (docs/screenshots/*.png) as they go.
//!
//! Expected texts come from the console's own catalogues (console/i18n/*.json), so a
//! reworded string does not break a test, but a missing or untranslated one does.

use reqwest::StatusCode;
use reqwest::header::CONTENT_SECURITY_POLICY;
use serde_json::{Value, json};

use crate::common::browser::{Browser, Key, Options};
use crate::common::wait_until;
use crate::helpers::TestApp;

const OLGA_PASSWORD: &str = "olga-admin-55";

/// The catalogue text of `key` in `lang` (`en`, `de`).
fn text(lang: &str, key: &str) -> String {
    let path = format!("{}/console/i18n/{lang}.json", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let catalogue: Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{path}: {e}"));
    catalogue[key]
        .as_str()
        .unwrap_or_else(|| panic!("{path} has no {key}"))
        .to_owned()
}

/// An admin who can sign in to the console, made over the API (as the bearer admin).
async fn olga(app: &TestApp) {
    let user = app
        .post_ok(
            "/api/v1/users",
            json!({"name": "Olga Admin", "email": "olga@example.com", "role": "admin",
                   "password": OLGA_PASSWORD}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(user["password_set"], true, "{user}");
}

/// The sign-in page's fields have visible labels with the catalogue's words.
async fn assert_sign_in_form_is_labelled(browser: &Browser, lang: &str) {
    browser.wait_for("form#signin").await;
    for (field, key) in [("email", "signin.email"), ("password", "signin.password")] {
        let label = browser
            .label_of(&format!(r#"form#signin input[name="{field}"]"#))
            .await;
        assert_eq!(label, text(lang, key), "the label of {field}");
    }
    let submit = browser.text("form#signin [type=submit]").await;
    assert_eq!(submit, text(lang, "signin.submit"));
}

#[tokio::test]
async fn console_first_start_sets_up_the_admin_who_signs_out_and_in_again() {
    let app = TestApp::spawn().await;
    let browser = Browser::start(&app.base).await;

    // First start: the sign-in form and, below it, the set-up with the admin token.
    browser.goto("/").await;
    assert_eq!(browser.document_lang().await, "en");
    assert_sign_in_form_is_labelled(&browser, "en").await;
    browser
        .wait_for_text("form#setup", &text("en", "setup.submit"))
        .await;
    for field in ["token", "name", "email", "password"] {
        browser
            .label_of(&format!(r#"form#setup [name="{field}"]"#))
            .await;
    }
    browser.screenshot("setup-en").await;

    browser.fill_in("form#setup", "token", &app.admin).await;
    browser.fill_in("form#setup", "name", "Olga Admin").await;
    browser
        .fill_in("form#setup", "email", "olga@example.com")
        .await;
    browser
        .fill_in("form#setup", "password", OLGA_PASSWORD)
        .await;
    browser.click("form#setup [type=submit]").await;

    // Signed in: the layout with the navigation, her name, the people page.
    browser.wait_for("nav#nav").await;
    browser.wait_for(r##"nav#nav a[href="#/users"]"##).await;
    browser.wait_for_text(".who", "Olga Admin").await;
    browser.wait_for("select#lang").await;
    // Everyone's home page is the dashboard; the people page is one link away.
    browser.wait_for("h1#page-title").await;
    browser.click(r##"nav#nav a[href="#/users"]"##).await;
    browser
        .wait_for_text("table.list", "olga@example.com")
        .await;

    // Signed out: the sign-in page, now without the set-up, also after a reload.
    browser.sign_out().await;
    browser.wait_gone("nav#nav").await;
    browser.goto("/").await;
    browser.wait_for("form#signin").await;
    let (_, setup) = app
        .request(reqwest::Method::GET, "/api/v1/session/setup", None, None)
        .await;
    assert_eq!(setup, json!({"needed": false}));
    browser.wait_gone("form#setup").await;
    browser.screenshot("signin-en").await;

    // A wrong password: the form says so and nobody is signed in.
    browser
        .fill_in("form#signin", "email", "olga@example.com")
        .await;
    browser
        .fill_in("form#signin", "password", "not-her-password")
        .await;
    browser.click("form#signin [type=submit]").await;
    browser
        .wait_for_text("form#signin .form-error", &text("en", "signin.invalid"))
        .await;
    assert_eq!(browser.count("nav#nav").await, 0, "nobody is signed in");

    // The right one.
    browser.sign_in("olga@example.com", OLGA_PASSWORD).await;
    browser.click(r##"nav#nav a[href="#/users"]"##).await;
    browser
        .wait_for_text("h1", &text("en", "users.title"))
        .await;
    browser.wait_for_text("table.list", "Olga Admin").await;
    browser.screenshot("users-en").await;

    // A person's page (the first column links there).
    browser.click("table.list tbody th a").await;
    browser
        .wait_for_text("main h2", &text("en", "users.edit"))
        .await;
    browser.wait_for_text("h1", "Olga Admin").await;
    browser.screenshot("user-en").await;

    browser.finish().await;
    app.stop().await;
}

#[tokio::test]
async fn console_keyboard_alone_signs_in_and_creates_a_person() {
    let app = TestApp::spawn().await;
    olga(&app).await;
    let browser = Browser::start(&app.base).await;

    // Sign in with Tab and Enter only.
    browser.goto("/#/users").await;
    browser.wait_for("form#signin").await;
    browser.tab_to(r#"form#signin [name="email"]"#, 10).await;
    browser.press_keys("olga@example.com").await;
    browser.tab_to(r#"form#signin [name="password"]"#, 3).await;
    browser
        .press_keys(&format!("{OLGA_PASSWORD}{}", Key::Enter))
        .await;
    browser.wait_for("nav#nav").await;
    browser.wait_for_text("table.list", "Olga Admin").await;

    // Create a person on the people page with the keyboard: Tab into the form, type,
    // Enter in a text field submits.
    let form = r#"form[data-form="users"]"#;
    browser
        .tab_to(&format!(r#"{form} [name="name"]"#), 30)
        .await;
    browser.press_keys("Carla Keys").await;
    browser
        .tab_to(&format!(r#"{form} [name="email"]"#), 3)
        .await;
    browser.press_keys("carla@").await;
    browser
        .tab_to(&format!(r#"{form} [name="extension"]"#), 3)
        .await;
    browser.press_keys(&format!("105{}", Key::Enter)).await;

    // The API refuses the address: the error is beside the field, which has the focus, so
    // the keyboard user types on where they left off.
    let error = browser
        .wait_for(&format!(r#"{form} .field-error[data-for="email"]"#))
        .await;
    assert!(!error.text().await.unwrap().is_empty());
    assert!(
        browser
            .focus_matches(&format!(r#"{form} [name="email"]"#))
            .await,
        "the focus is on the e-mail field, not {}",
        browser.focused().await
    );
    browser
        .press_keys(&format!("{}example.com{}", Key::End, Key::Enter))
        .await;
    browser.wait_for_text("table.list", "Carla Keys").await;
    browser.wait_gone(&format!(r#"{form} .field-error"#)).await;

    let users = app.get_ok("/api/v1/users").await;
    let carla = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "Carla Keys")
        .unwrap_or_else(|| panic!("Carla was created: {users}"));
    assert_eq!(carla["email"], "carla@example.com");
    assert_eq!(carla["extension"], "105");
    assert_eq!(carla["role"], "agent");

    browser.finish().await;
    app.stop().await;
}

#[tokio::test]
async fn console_speaks_german_to_a_german_browser_and_switches_to_english() {
    let app = TestApp::spawn().await;
    olga(&app).await;
    let browser = Browser::start_with(&app.base, Options::german()).await;

    browser.goto("/").await;
    assert_eq!(browser.document_lang().await, "de");
    assert_sign_in_form_is_labelled(&browser, "de").await;
    assert_ne!(text("de", "signin.email"), text("en", "signin.email"));
    browser.screenshot("signin-de").await;

    browser.sign_in("olga@example.com", OLGA_PASSWORD).await;
    browser.click(r##"nav#nav a[href="#/users"]"##).await;
    browser
        .wait_for_text("h1", &text("de", "users.title"))
        .await;
    browser
        .wait_for_text("button#signout", &text("de", "signin.signout"))
        .await;
    browser.wait_for_text("table.list", "Olga Admin").await;
    browser.screenshot("users-de").await;

    // The language selector: English, for this browser, in spite of its Accept-Language.
    browser.select("select#lang", "en").await;
    wait_until(
        crate::common::browser::DEADLINE,
        "the page to reload in English",
        || async {
            let lang = browser.document_lang().await;
            (lang == "en").then_some(()).ok_or(lang)
        },
    )
    .await;
    browser
        .wait_for_text("h1", &text("en", "users.title"))
        .await;

    browser.finish().await;
    app.stop().await;
}

#[tokio::test]
async fn console_pages_send_a_content_security_policy_without_inline_script() {
    let app = TestApp::spawn().await;
    for path in ["/", "/console/js/app.js"] {
        let response = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let policy = response
            .headers()
            .get(CONTENT_SECURITY_POLICY)
            .unwrap_or_else(|| panic!("{path} has a Content-Security-Policy"))
            .to_str()
            .expect("ASCII")
            .to_owned();
        let directive = |name: &str| {
            policy
                .split(';')
                .map(str::trim)
                .find(|d| d.split_whitespace().next() == Some(name))
                .map(str::to_owned)
        };
        // script-src, or default-src where there is none, governs scripts.
        let scripts = directive("script-src")
            .or_else(|| directive("default-src"))
            .unwrap_or_else(|| panic!("{path}: no script-src or default-src in {policy}"));
        assert!(
            !scripts.contains("'unsafe-inline'") && !scripts.contains("'unsafe-eval'"),
            "{path}: {scripts}"
        );
        assert!(
            !scripts.contains('*') && !scripts.contains("http:") && !scripts.contains("data:"),
            "{path}: scripts from the site only: {scripts}"
        );
    }
    app.stop().await;
}

/// A screenshot of the page as a person looks at it: without the passing notices, the
/// focus and the scrolling the test's own steps left behind.
async fn screenshot_at_rest(browser: &Browser, name: &str) {
    browser
        .execute(
            "document.querySelectorAll('.toast').forEach((t) => t.remove()); \
             if (document.activeElement) document.activeElement.blur(); \
             window.scrollTo(0, 0); document.querySelector('main').scrollTop = 0;",
            vec![],
        )
        .await;
    browser.screenshot(name).await;
}

/// The presence of `user` as `GET /api/v1/presence` shows it.
async fn presence_of(app: &TestApp, user: &str) -> Value {
    let list = app.get_ok("/api/v1/presence").await;
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["user"] == user)
        .cloned()
        .unwrap_or_else(|| panic!("{user} is missing from {list}"))
}

/// Waits until `user`'s presence has `status` (and `reason`, if given) in the API.
async fn wait_for_presence(app: &TestApp, user: &str, status: &str, reason: Option<&str>) {
    wait_until(
        crate::common::browser::DEADLINE,
        &format!("{user} to be {status}"),
        || async {
            let p = presence_of(app, user).await;
            let ok = p["status"] == status && reason.is_none_or(|r| p["reason"] == r);
            ok.then_some(()).ok_or(p)
        },
    )
    .await;
}

/// An agent pauses with a reason from the top bar; an admin sees it on the presence
/// board, sets a colleague offline there, and finds both on the queue's page with its
/// queueing settings, the music upload and the queue now; in English and German.
#[tokio::test]
async fn console_an_agent_switches_presence_and_an_admin_sees_it_on_the_board_and_queue() {
    let app = TestApp::spawn().await;
    olga(&app).await;
    let anna = app
        .post_ok(
            "/api/v1/users",
            json!({"name": "Anna Agent", "email": "anna@example.com", "role": "agent",
                   "extension": "101", "password": "anna-agent-55"}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ben = app
        .create_user("Ben Berger", "ben@example.com", "agent", "102")
        .await;
    let queue = app
        .post_ok(
            "/api/v1/queues",
            json!({"name": "Sales", "members": [anna, ben]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Anna pauses from the top bar: the reason shows only for a pause.
    let browser = Browser::start(&app.base).await;
    browser.sign_in("anna@example.com", "anna-agent-55").await;
    let mine = "#my-presence form.presence-form";
    browser
        .wait_for(&format!("{mine} select[data-status=\"available\"]"))
        .await;
    assert_eq!(
        browser.label_of(&format!("{mine} select")).await,
        text("en", "presence.mine")
    );
    browser
        .wait_gone(&format!("{mine} [name=\"reason\"]"))
        .await;
    browser.select(&format!("{mine} select"), "paused").await;
    browser.fill_in(mine, "reason", "Lunch").await;
    browser.click(&format!("{mine} [type=submit]")).await;
    wait_for_presence(&app, &anna, "paused", Some("Lunch")).await;
    browser
        .wait_for(&format!("{mine} select[data-status=\"paused\"]"))
        .await;
    browser.wait_for("#my-presence .presence-dot.paused").await;
    screenshot_at_rest(&browser, "presence-me-en").await;
    browser.sign_out().await;

    // Olga's board shows Anna's pause; she sets Ben offline there.
    browser.sign_in("olga@example.com", OLGA_PASSWORD).await;
    browser.click(r##"nav#nav a[href="#/presence"]"##).await;
    browser
        .wait_for_text("h1", &text("en", "presence.title"))
        .await;
    browser.wait_for_text("table.list", "Anna Agent").await;
    browser.wait_for_text("table.list", "Lunch").await;
    let bens = format!("table.list form.presence-form[data-user=\"{ben}\"]");
    browser.select(&format!("{bens} select"), "offline").await;
    wait_for_presence(&app, &ben, "offline", None).await;
    browser
        .wait_for(&format!("{bens} select[data-status=\"offline\"]"))
        .await;
    screenshot_at_rest(&browser, "presence-en").await;

    // The queue's page: the queue now with both members' presence, the settings, the music.
    browser.goto(&format!("/#/queues/{queue}")).await;
    browser.wait_for_text("h1", "Sales").await;
    browser
        .wait_for(&format!(
            ".queue-live li[data-user=\"{anna}\"][data-status=\"paused\"]"
        ))
        .await;
    browser
        .wait_for(&format!(
            ".queue-live li[data-user=\"{ben}\"][data-status=\"offline\"]"
        ))
        .await;
    browser
        .wait_for_text(".queue-live", &text("en", "queues.nobody_waiting"))
        .await;
    let form = "form[data-form=\"queues\"]";
    for field in [
        "strategy",
        "max_wait_s",
        "wrap_up_s",
        "announce_position",
        "overflow.action",
    ] {
        browser
            .label_of(&format!("{form} [name=\"{field}\"]"))
            .await;
    }
    // The number to forward to shows only for the forward rule.
    browser
        .wait_gone(&format!("{form} [name=\"overflow.forward_to\"]"))
        .await;
    browser
        .select(&format!("{form} [name=\"overflow.action\"]"), "forward")
        .await;
    browser
        .wait_for(&format!("{form} [name=\"overflow.forward_to\"]"))
        .await;
    browser
        .select(&format!("{form} [name=\"overflow.action\"]"), "voicemail")
        .await;
    browser
        .wait_for("form[data-form=\"music\"] input[type=file]")
        .await;
    screenshot_at_rest(&browser, "queues-live-en").await;
    browser.finish().await;

    // The same in German.
    let browser = Browser::start_with(&app.base, Options::german()).await;
    browser.sign_in("olga@example.com", OLGA_PASSWORD).await;
    browser.goto("/#/presence").await;
    browser
        .wait_for_text("h1", &text("de", "presence.title"))
        .await;
    browser
        .wait_for_text("table.list", &text("de", "presence.paused"))
        .await;
    screenshot_at_rest(&browser, "presence-de").await;
    browser.goto(&format!("/#/queues/{queue}")).await;
    browser
        .wait_for_text(".queue-live", &text("de", "queues.nobody_waiting"))
        .await;
    browser
        .wait_for(&format!(
            ".queue-live li[data-user=\"{anna}\"][data-status=\"paused\"]"
        ))
        .await;
    screenshot_at_rest(&browser, "queues-live-de").await;
    browser.finish().await;
    app.stop().await;
}
