//! The browser harness (tests/common/browser.rs) against a small site of its own, served
//! by an axum server in the test: waits, forms, the keyboard, languages, the browser log
//! (JavaScript errors and CSP violations), timing in the page, and clean-up.

use std::convert::Infallible;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::common::browser::{Browser, DEADLINE, Key, Options};

/// The site's Content Security Policy: scripts only from the site itself.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'";

const INDEX: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Harness</title>
<script src="/app.js" defer></script></head>
<body>
<form id="signin">
  <label>E-mail <input name="email" type="email" autocomplete="username"></label>
  <label>Password <input name="password" type="password"></label>
  <label>Role <select name="role"><option value="agent">Agent</option>
    <option value="admin">Admin</option></select></label>
  <button type="submit">Sign in</button>
</form>
<p id="out" hidden></p>
<div id="calls" aria-live="assertive"></div>
</body></html>"#;

const APP_JS: &str = r#"
document.getElementById("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target;
  const out = document.getElementById("out");
  out.textContent = `Hello ${form.email.value} (${form.role.value}, ${form.password.value.length})`;
  out.hidden = false;
});
new EventSource("/events").addEventListener("ringing", (event) => {
  const card = document.createElement("div");
  card.className = "card";
  card.dataset.call = event.data;
  card.textContent = `Call ${event.data}`;
  document.getElementById("calls").append(card);
});
"#;

const BROKEN: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<script src="/broken.js"></script></head><body><p id="ready">ready</p></body></html>"#;

const INLINE: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<script>document.title = "inline ran";</script></head><body><p id="ready">ready</p></body></html>"#;

/// The test site on 127.0.0.1:0; `ringing` sends an SSE `ringing` event with a call id.
struct Site {
    base: String,
    ringing: broadcast::Sender<String>,
    server: tokio::task::JoinHandle<()>,
}

impl Site {
    async fn start() -> Site {
        let (ringing, _) = broadcast::channel::<String>(16);
        let events = ringing.clone();
        let page = |body: &'static str| {
            move || async move { ([(header::CONTENT_SECURITY_POLICY, CSP)], Html(body)) }
        };
        let app = Router::new()
            .route("/", get(page(INDEX)))
            .route("/broken", get(page(BROKEN)))
            .route("/inline", get(page(INLINE)))
            .route(
                "/app.js",
                get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], APP_JS) }),
            )
            .route(
                "/broken.js",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "text/javascript")],
                        "throw new Error('deliberately broken');",
                    )
                }),
            )
            .route("/lang", get(lang_page))
            .route(
                "/events",
                get(move || {
                    let stream = BroadcastStream::new(events.subscribe()).filter_map(|call| {
                        call.ok().map(|id| {
                            Ok::<_, Infallible>(Event::default().event("ringing").data(id))
                        })
                    });
                    async move { Sse::new(stream) }
                }),
            );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the test site");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("serve the test site");
        });
        Site {
            base,
            ringing,
            server,
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Echoes the request's Accept-Language; the page adds `navigator.languages`.
async fn lang_page(headers: HeaderMap) -> impl IntoResponse {
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Html(format!(
        r#"<!doctype html><html><body><p id="accept">{accept}</p></body></html>"#
    ))
}

#[tokio::test]
async fn browser_harness_fills_clicks_and_types_with_the_keyboard() {
    let site = Site::start().await;
    let browser = Browser::start(&site.base).await;

    browser.goto("/").await;
    assert_eq!(browser.document_lang().await, "en");
    browser.fill("email", "anna@example.com").await;
    browser.fill("password", "secret").await;
    browser.fill_in("form#signin", "role", "admin").await;
    browser.click("form#signin [type=submit]").await;
    browser
        .wait_for_text("#out", "Hello anna@example.com (admin, 6)")
        .await;

    // The same form with the keyboard only: Tab to the e-mail field, type, Tab, type,
    // Enter submits.
    browser.goto("/").await;
    browser.wait_gone("#out").await;
    let tabs = browser.tab_to(r#"input[name="email"]"#, 10).await;
    assert!(tabs >= 1, "the focus starts on the page, not in the field");
    browser
        .press_keys(&format!("bob@example.com{}pw{}", Key::Tab, Key::Enter))
        .await;
    browser
        .wait_for_text("#out", "Hello bob@example.com (agent, 2)")
        .await;
    assert!(browser.focus_matches(r#"input[name="password"]"#).await);

    let png = browser.client().screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    browser.finish().await;
}

#[tokio::test]
async fn browser_harness_reports_javascript_errors_and_csp_violations() {
    let site = Site::start().await;
    let browser = Browser::start(&site.base).await;

    browser.goto("/broken").await;
    browser.wait_for("#ready").await;
    let errors = browser.console_errors().await;
    assert!(
        errors
            .iter()
            .any(|e| e.source == "javascript" && e.message.contains("deliberately broken")),
        "the uncaught exception is reported: {errors:?}"
    );
    assert!(
        browser.console_errors().await.is_empty(),
        "each entry is handed out once"
    );

    browser.goto("/inline").await;
    browser.wait_for("#ready").await;
    assert_ne!(
        browser.client().title().await.expect("title"),
        "inline ran",
        "the CSP blocked the inline script"
    );
    let errors = browser.console_errors().await;
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("Content Security Policy")),
        "the CSP violation is reported: {errors:?}"
    );

    // A clean page passes.
    browser.goto("/").await;
    browser.wait_for("form#signin").await;
    browser.finish().await;
}

#[tokio::test]
async fn browser_harness_times_an_element_appearing_in_the_page() {
    let site = Site::start().await;
    let browser = Browser::start(&site.base).await;
    browser.goto("/").await;
    browser.wait_for("form#signin").await;
    // The page's EventSource must be connected before the event is sent.
    crate::common::wait_until(DEADLINE, "the page to subscribe to /events", || async {
        (site.ringing.receiver_count() > 0).then_some(())
    })
    .await;

    let watch = browser.watch_for(r#".card[data-call="c1"]"#).await;
    assert!(
        watch.clock_offset < Duration::from_millis(50) + watch.clock_uncertainty,
        "page and test read the same clock: {watch:?}"
    );
    let sent = SystemTime::now();
    site.ringing
        .send("c1".to_owned())
        .expect("the page listens");
    let shown = browser.appeared(&watch, DEADLINE).await;
    let latency = shown.since(sent);
    assert!(!shown.already_there);
    assert!(
        shown.dom >= sent - watch.clock_uncertainty - Duration::from_millis(1),
        "appeared after it was sent: {shown:?}, sent {sent:?}"
    );
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    let frame = shown
        .frame_since(sent)
        .expect("a visible tab renders a frame");
    assert!(frame >= latency);
    eprintln!("event sent → card in the DOM {latency:?}, next frame {frame:?} ({watch:?})");

    // A watch for what is already there returns at once.
    let watch = browser.watch_for("form#signin").await;
    assert!(browser.appeared(&watch, DEADLINE).await.already_there);
    browser.finish().await;
}

#[tokio::test]
async fn browser_harness_runs_two_browsers_in_two_languages() {
    let site = Site::start().await;
    let begun = Instant::now();
    let (english, german) = tokio::join!(
        Browser::start(&site.base),
        Browser::start_with(&site.base, Options::german())
    );
    eprintln!("two browsers started in {:?}", begun.elapsed());
    assert_eq!(german.lang(), "de-DE");

    for (browser, accept, language) in [
        (&english, "en-US,en", "en-US"),
        (&german, "de-DE,de", "de-DE"),
    ] {
        browser.goto("/lang").await;
        browser.wait_for_text("#accept", accept).await;
        let navigator = browser.execute("return navigator.language;", vec![]).await;
        assert_eq!(navigator, language);
    }

    // Separate profiles: a cookie set in one is not in the other.
    english
        .execute("document.cookie = 'who=english; path=/';", vec![])
        .await;
    let cookie = german.execute("return document.cookie;", vec![]).await;
    assert_eq!(cookie, "");
    english.finish().await;
    german.finish().await;
}

#[tokio::test]
async fn browser_harness_leaves_no_process_or_file_behind_a_failed_test() {
    let site = Site::start().await;
    let base = site.base.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A test that panics with its browser open.
    let failed = tokio::spawn(async move {
        let browser = Browser::start(&base).await;
        browser.goto("/").await;
        tx.send((
            browser
                .chromium_pid()
                .expect("chromedriver reports the pid"),
            browser.temp_dir().to_owned(),
        ))
        .ok();
        panic!("a deliberate failure");
    })
    .await;
    assert!(failed.is_err_and(|e| e.is_panic()));
    let (pid, dir) = rx.await.expect("the browser started");
    assert!(!dir.exists(), "{} is removed", dir.display());
    // Killed: gone, or a zombie until whoever inherited it reaps it.
    let what = format!("Chromium {pid} to be gone");
    crate::common::wait_until(Duration::from_secs(5), &what, || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        match stat.rsplit(") ").next().unwrap_or("").chars().next() {
            None | Some('Z') => Ok(()),
            Some(state) => Err(format!("state {state}")),
        }
    })
    .await;
}
