//! Signing in to the web console: passwords, the session cookie, CSRF, the sign-in
//! throttle, sessions that end, and the first start's set-up, over HTTP as a browser does.

use std::time::Duration;

use leadline::crm::model::{Role, UserId};
use leadline::session::{EndSessions, SessionTimes};
use leadline::store::{NewSession, NewUser, Store, UserPatch};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::calls_sip::CallWindow;
use crate::common::postgres::PgServer;
use crate::helpers::TestApp;

const ANNA_PASSWORD: &str = "anna-console-1";
const BEN_PASSWORD: &str = "ben-console-22";

/// A request with exactly these headers (no bearer token unless given).
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = app.client.request(method, format!("{}{}", app.base, path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, headers, value)
}

/// A browser signed in to the console: its cookie and the session's CSRF token.
struct Console {
    cookie: String,
    csrf: String,
    body: Value,
}

impl Console {
    /// `POST /session`, asserting it worked.
    async fn sign_in(app: &TestApp, email: &str, password: &str) -> Console {
        let (status, headers, body) = sign_in(app, email, password, &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Console::from_answer(&headers, body)
    }

    fn from_answer(headers: &HeaderMap, body: Value) -> Console {
        let set_cookie = headers["set-cookie"].to_str().unwrap();
        let value = set_cookie
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("leadline_session=")
            .expect("the session cookie");
        Console {
            cookie: format!("leadline_session={value}"),
            csrf: body["csrf_token"].as_str().expect("csrf_token").to_owned(),
            body,
        }
    }

    fn user_id(&self) -> String {
        self.body["user"]["id"].as_str().unwrap().to_owned()
    }

    /// A request with the cookie, and the CSRF token when `csrf`.
    async fn request(
        &self,
        app: &TestApp,
        method: Method,
        path: &str,
        body: Option<Value>,
        csrf: bool,
    ) -> (StatusCode, Value) {
        let mut headers = vec![("cookie", self.cookie.as_str())];
        if csrf {
            headers.push(("x-csrf-token", self.csrf.as_str()));
        }
        let (status, _, value) = send(app, method, path, &headers, body).await;
        (status, value)
    }

    async fn get(&self, app: &TestApp, path: &str) -> (StatusCode, Value) {
        self.request(app, Method::GET, path, None, false).await
    }
}

async fn sign_in(
    app: &TestApp,
    email: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    send(
        app,
        Method::POST,
        "/api/v1/session",
        headers,
        Some(json!({"email": email, "password": password})),
    )
    .await
}

/// Creates a person with a console password (as admin); their id.
async fn person(app: &TestApp, name: &str, email: &str, role: &str, password: &str) -> String {
    let user = app
        .post_ok(
            "/api/v1/users",
            json!({"name": name, "email": email, "role": role, "password": password}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(user["password_set"], true, "{user}");
    user["id"].as_str().unwrap().to_owned()
}

fn assert_no_password(value: &Value, passwords: &[&str]) {
    let text = value.to_string();
    for password in passwords {
        assert!(!text.contains(password), "a password in an answer: {text}");
    }
    assert!(
        !text.contains("$argon2"),
        "a password hash in an answer: {text}"
    );
    assert!(!text.contains("password_hash"), "{text}");
}

#[tokio::test]
async fn a5_signing_in_sets_a_strict_http_only_cookie_secure_only_over_https() {
    let app = TestApp::spawn().await;
    let anna = person(&app, "Anna", "anna@example.com", "agent", ANNA_PASSWORD).await;

    let (status, headers, body) = sign_in(&app, "Anna@Example.com ", ANNA_PASSWORD, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cookie = headers["set-cookie"].to_str().unwrap();
    let token = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("leadline_session=")
        .unwrap();
    assert_eq!(token.len(), 43, "256 bits in URL-safe base64: {cookie}");
    let attributes: Vec<&str> = cookie.split(';').skip(1).map(str::trim).collect();
    assert_eq!(
        attributes,
        ["HttpOnly", "SameSite=Strict", "Path=/"],
        "{cookie}"
    );
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["user"]["id"], anna.as_str());
    assert_eq!(body["user"]["role"], "agent");
    assert_eq!(body["user"]["password_set"], true);
    assert_eq!(body["csrf_token"].as_str().unwrap().len(), 64);
    assert_no_password(&body, &[ANNA_PASSWORD]);

    // The same object as GET /users/{id}.
    let user = app.get_ok(&format!("/api/v1/users/{anna}")).await;
    assert_eq!(body["user"], user);

    let first = Console::from_answer(&headers, body);
    let (status, headers, body) = sign_in(
        &app,
        "anna@example.com",
        ANNA_PASSWORD,
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    let console = Console::from_answer(&headers, body);
    assert_ne!(console.cookie, first.cookie, "a new session per sign-in");
    assert_ne!(console.csrf, first.csrf, "a CSRF token per session");

    let (status, again) = console.get(&app, "/api/v1/session").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["user"], user);
    assert_eq!(
        again["csrf_token"], console.csrf,
        "GET /session gives the session's CSRF token"
    );

    let (status, _, err) = send(&app, Method::GET, "/api/v1/session", &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["code"], "unauthorized");
    let (status, _, _) = send(
        &app,
        Method::GET,
        "/api/v1/session",
        &[("cookie", "leadline_session=forged")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn a1_a5_a_cookie_carries_the_agents_rights_and_no_more() {
    let app = TestApp::spawn().await;
    let anna = person(&app, "Anna", "anna@example.com", "agent", ANNA_PASSWORD).await;
    let ben = person(&app, "Ben", "ben@example.com", "agent", BEN_PASSWORD).await;
    let bens_lead = app
        .post_ok(
            "/api/v1/leads",
            json!({"name": "Ben's customer", "responsible": ben}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let console = Console::sign_in(&app, "anna@example.com", ANNA_PASSWORD).await;

    let (status, created) = console
        .request(
            &app,
            Method::POST,
            "/api/v1/leads",
            Some(json!({"name": "Anna's customer"})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["responsible"], anna.as_str());

    // A1 at the default level `own`: Ben's lead is not there, through the cookie either.
    let (status, leads) = console.get(&app, "/api/v1/leads").await;
    assert_eq!(status, StatusCode::OK, "{leads}");
    let names: Vec<&str> = leads["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Anna's customer"]);
    let (status, _) = console
        .get(&app, &format!("/api/v1/leads/{bens_lead}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Admin-only configuration stays closed to an agent's cookie.
    let (status, err) = console
        .request(
            &app,
            Method::POST,
            "/api/v1/numbers",
            Some(json!({"number": "+4930901820"})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["error"]["code"], "forbidden");

    // The audit log names the person behind the cookie.
    let audit = app.get_ok("/api/v1/audit?limit=500").await;
    let entry = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "POST /api/v1/leads" && e["status"] == 201)
        .filter(|e| e["actor"] == format!("user:{anna}"))
        .cloned();
    assert!(entry.is_some(), "{audit}");
    let signed_in = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "POST /api/v1/session" && e["actor"] == format!("user:{anna}"));
    assert!(signed_in, "the sign-in is recorded as Anna's: {audit}");
    assert_no_password(&audit, &[ANNA_PASSWORD, BEN_PASSWORD]);
    app.stop().await;
}

#[tokio::test]
async fn a5_cookie_changes_need_the_csrf_token_and_the_gateways_own_origin() {
    let app = TestApp::spawn().await;
    person(&app, "Anna", "anna@example.com", "agent", ANNA_PASSWORD).await;
    let console = Console::sign_in(&app, "anna@example.com", ANNA_PASSWORD).await;
    let body = json!({"name": "Walk-in"});

    let (status, err) = console
        .request(
            &app,
            Method::POST,
            "/api/v1/leads",
            Some(body.clone()),
            false,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["error"]["code"], "csrf_failed");

    let wrong = [
        ("cookie", console.cookie.as_str()),
        ("x-csrf-token", "0000"),
    ];
    let (status, _, err) = send(
        &app,
        Method::POST,
        "/api/v1/leads",
        &wrong,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error"]["code"], "csrf_failed");

    // The gateway's own origin is the address the browser loaded the console from.
    let own_origin = app.base.clone();
    let foreign = [
        ("cookie", console.cookie.as_str()),
        ("x-csrf-token", console.csrf.as_str()),
        ("origin", "https://evil.example"),
    ];
    let (status, _, err) = send(
        &app,
        Method::POST,
        "/api/v1/leads",
        &foreign,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["error"]["code"], "csrf_failed");

    let same = [
        ("cookie", console.cookie.as_str()),
        ("x-csrf-token", console.csrf.as_str()),
        ("origin", own_origin.as_str()),
    ];
    let (status, _, created) = send(
        &app,
        Method::POST,
        "/api/v1/leads",
        &same,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _) = console
        .request(
            &app,
            Method::POST,
            "/api/v1/leads",
            Some(body.clone()),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Reads need no token; a bearer token needs none for changes either.
    let (status, _) = console.get(&app, "/api/v1/leads").await;
    assert_eq!(status, StatusCode::OK);
    app.post_ok("/api/v1/leads", body, StatusCode::CREATED)
        .await;

    // A sign-in posted by another site's page is refused too.
    let (status, _, err) = sign_in(
        &app,
        "anna@example.com",
        ANNA_PASSWORD,
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error"]["code"], "csrf_failed");
    app.stop().await;
}

#[tokio::test]
async fn a5_a_wrong_e_mail_and_a_wrong_password_get_the_same_401() {
    let app = TestApp::spawn().await;
    person(&app, "Anna", "anna@example.com", "agent", ANNA_PASSWORD).await;
    // Ben has no console password: he cannot sign in, and nobody can tell.
    app.create_user("Ben", "ben@example.com", "agent", "102")
        .await;

    let mut answers = Vec::new();
    for (email, password) in [
        ("anna@example.com", "wrong-password-1"),
        ("nobody@example.com", ANNA_PASSWORD),
        ("ben@example.com", "anything-at-all"),
        ("not an address", ANNA_PASSWORD),
        ("anna@example.com", ""),
    ] {
        let (status, headers, body) = sign_in(&app, email, password, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{email}: {body}");
        assert!(headers.get("set-cookie").is_none());
        answers.push(body);
    }
    assert_eq!(answers[0]["error"]["code"], "invalid_credentials");
    for body in &answers {
        assert_eq!(body, &answers[0], "the answers tell nothing apart");
    }
    app.stop().await;
}

#[tokio::test]
async fn a5_five_failures_within_a_minute_lock_the_address_and_e_mail_out_even_for_the_right_password()
 {
    let app = TestApp::spawn().await;
    person(&app, "Anna", "anna@example.com", "agent", ANNA_PASSWORD).await;
    person(&app, "Ben", "ben@example.com", "agent", BEN_PASSWORD).await;
    for n in 0..5 {
        let (status, _, body) =
            sign_in(&app, "anna@example.com", &format!("guess-number-{n}"), &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {n}: {body}");
    }
    for password in ["guess-number-6", ANNA_PASSWORD] {
        let (status, headers, body) = sign_in(&app, "Anna@example.com", password, &[]).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(body["error"]["code"], "too_many_attempts");
        assert_eq!(headers["retry-after"], "600");
        assert!(headers.get("set-cookie").is_none());
    }
    // The lock is Anna's e-mail from this address, not the address.
    Console::sign_in(&app, "ben@example.com", BEN_PASSWORD).await;
    let metrics = app.metrics().await.unwrap_or_default();
    assert!(
        metrics.contains("leadline_login_lockouts_total"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a5_deleting_the_person_changing_their_role_or_resetting_their_password_ends_their_sessions()
 {
    let app = TestApp::spawn().await;
    let anna = person(&app, "Anna", "anna@example.com", "agent", ANNA_PASSWORD).await;
    let users = format!("/api/v1/users/{anna}");

    // A new role: the cookie stops working.
    let console = Console::sign_in(&app, "anna@example.com", ANNA_PASSWORD).await;
    let (status, _) = console.get(&app, "/api/v1/leads").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .request(
            Method::PATCH,
            &users,
            Some(&app.admin),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = console.get(&app, "/api/v1/leads").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Signing in again gives the new role; a change of name ends nothing.
    let console = Console::sign_in(&app, "anna@example.com", ANNA_PASSWORD).await;
    assert_eq!(console.body["user"]["role"], "admin");
    let (status, _) = app
        .request(
            Method::PATCH,
            &users,
            Some(&app.admin),
            Some(json!({"name": "Anna B"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = console.get(&app, "/api/v1/session").await;
    assert_eq!(status, StatusCode::OK);

    // An admin resets the password: the old sessions end, the old password is refused.
    let new_password = "anna-reset-333";
    let (status, user) = app
        .request(
            Method::PATCH,
            &users,
            Some(&app.admin),
            Some(json!({"password": new_password})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_no_password(&user, &[new_password]);
    let (status, _) = console.get(&app, "/api/v1/session").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = sign_in(&app, "anna@example.com", ANNA_PASSWORD, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A person setting their own password stays signed in there; elsewhere they are not.
    let here = Console::sign_in(&app, "anna@example.com", new_password).await;
    let elsewhere = Console::sign_in(&app, "anna@example.com", new_password).await;
    let (status, body) = here
        .request(
            &app,
            Method::PATCH,
            &users,
            Some(json!({"password": "anna-own-4444"})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(here.get(&app, "/api/v1/session").await.0, StatusCode::OK);
    assert_eq!(
        elsewhere.get(&app, "/api/v1/session").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Deleted: the cookie is worth nothing.
    let (status, _) = app
        .request(Method::DELETE, &users, Some(&app.admin), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = here.get(&app, "/api/v1/session").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = here.get(&app, "/api/v1/leads").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn a5_signing_out_ends_the_session_and_clears_the_cookie() {
    let app = TestApp::spawn().await;
    person(&app, "Anna", "anna@example.com", "agent", ANNA_PASSWORD).await;
    let console = Console::sign_in(&app, "anna@example.com", ANNA_PASSWORD).await;
    let other = Console::sign_in(&app, "anna@example.com", ANNA_PASSWORD).await;

    // Signing out is a change: it needs the CSRF token too.
    let (status, err) = console
        .request(&app, Method::DELETE, "/api/v1/session", None, false)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");

    let headers = [
        ("cookie", console.cookie.as_str()),
        ("x-csrf-token", console.csrf.as_str()),
    ];
    let (status, answer, _) = send(&app, Method::DELETE, "/api/v1/session", &headers, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let cleared = answer["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("leadline_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    let (status, _) = console.get(&app, "/api/v1/session").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&app, Method::DELETE, "/api/v1/session", &headers, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "already signed out");
    // Only that browser is signed out.
    assert_eq!(other.get(&app, "/api/v1/session").await.0, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a5_a_call_window_opened_with_the_cookie_closes_when_the_session_ends() {
    let app = TestApp::spawn().await;
    app.sales_line().await;
    person(&app, "Carla", "carla@example.com", "agent", ANNA_PASSWORD).await;
    let console = Console::sign_in(&app, "carla@example.com", ANNA_PASSWORD).await;
    let response = app
        .client
        .get(format!("{}/api/v1/events", app.base))
        .header("cookie", &console.cookie)
        .send()
        .await
        .unwrap();
    let mut window = CallWindow::from_response(response);

    let headers = [
        ("cookie", console.cookie.as_str()),
        ("x-csrf-token", console.csrf.as_str()),
    ];
    let (status, _, _) = send(&app, Method::DELETE, "/api/v1/session", &headers, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The window asks again at its next event.
    app.ringing("after-sign-out", "+49 30 1234567").await;
    assert!(
        window.ends_within(Duration::from_secs(10)).await,
        "the window of an ended session closes"
    );
    app.stop().await;
}

#[tokio::test]
async fn a5_the_first_start_sets_up_one_admin_with_the_admin_token() {
    let app = TestApp::spawn().await;
    let (status, _, state) = send(&app, Method::GET, "/api/v1/session/setup", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state, json!({"needed": true}));

    let setup = |token: &str, email: &str| json!({"token": token, "name": "Olga", "email": email, "password": "olga-admin-55"});
    let (status, _, err) = send(
        &app,
        Method::POST,
        "/api/v1/session/setup",
        &[],
        Some(setup("ll_wrong", "olga@example.com")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    assert_eq!(err["error"]["code"], "invalid_token");

    let (status, _, err) = send(
        &app,
        Method::POST,
        "/api/v1/session/setup",
        &[],
        Some(
            json!({"token": app.admin, "name": "Olga", "email": "olga@example.com",
                    "password": "short"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["field"], "password");

    let (status, headers, body) = send(
        &app,
        Method::POST,
        "/api/v1/session/setup",
        &[],
        Some(setup(&app.admin, "Olga@example.com")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["role"], "admin");
    assert_eq!(body["user"]["email"], "olga@example.com");
    assert_eq!(body["user"]["password_set"], true);
    assert_no_password(&body, &["olga-admin-55"]);
    let olga = Console::from_answer(&headers, body);
    let (status, me) = olga.get(&app, "/api/v1/session").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"]["id"], olga.user_id().as_str());
    // Signed in as an admin: she configures.
    let (status, _) = olga
        .request(
            &app,
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "Anna", "email": "anna@example.com", "role": "agent"})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, _, err) = send(
        &app,
        Method::POST,
        "/api/v1/session/setup",
        &[],
        Some(setup(&app.admin, "second@example.com")),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["error"]["code"], "already_set_up");
    let (_, _, state) = send(&app, Method::GET, "/api/v1/session/setup", &[], None).await;
    assert_eq!(state, json!({"needed": false}));
    Console::sign_in(&app, "olga@example.com", "olga-admin-55").await;
    // The bootstrap token still works for the API.
    app.get_ok("/api/v1/users").await;
    app.stop().await;
}

#[tokio::test]
async fn a5_wrong_set_up_tokens_are_throttled_like_sign_ins() {
    let app = TestApp::spawn().await;
    for n in 0..5 {
        let (status, _, _) = send(
            &app,
            Method::POST,
            "/api/v1/session/setup",
            &[],
            Some(json!({"token": format!("ll_guess{n}"), "name": "X",
                        "email": "x@example.com", "password": "x-password-1"})),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, headers, err) = send(
        &app,
        Method::POST,
        "/api/v1/session/setup",
        &[],
        Some(json!({"token": app.admin, "name": "X",
                    "email": "x@example.com", "password": "x-password-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{err}");
    assert_eq!(headers["retry-after"], "600");
    app.stop().await;
}

#[tokio::test]
async fn a4_passwords_need_ten_characters_and_are_never_returned() {
    let app = TestApp::spawn().await;
    let (status, err) = app
        .request(
            Method::POST,
            "/api/v1/users",
            Some(&app.admin),
            Some(
                json!({"name": "Anna", "email": "anna@example.com", "role": "agent",
                        "password": "123456789"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["code"], "password_too_short");
    assert_eq!(err["error"]["field"], "password");

    let anna = app
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let user = app.get_ok(&format!("/api/v1/users/{anna}")).await;
    assert_eq!(user["password_set"], false);
    let (status, err) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/users/{anna}"),
            Some(&app.admin),
            Some(json!({"password": "short"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["code"], "password_too_short");
    assert_eq!(err["error"]["field"], "password");
    let (status, err) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/users/{anna}"),
            Some(&app.admin),
            Some(json!({"password": "x".repeat(1025)})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["field"], "password");

    let (status, user) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/users/{anna}"),
            Some(&app.admin),
            Some(json!({"password": ANNA_PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["password_set"], true);
    let list = app.get_ok("/api/v1/users").await;
    assert_eq!(list["items"][0]["password_set"], true);
    for answer in [&user, &list] {
        assert_no_password(answer, &[ANNA_PASSWORD]);
    }
    let console = Console::sign_in(&app, "anna@example.com", ANNA_PASSWORD).await;
    assert_no_password(&console.body, &[ANNA_PASSWORD]);
    // An agent may not set a colleague's password.
    let ben = app
        .create_user("Ben", "ben@example.com", "agent", "102")
        .await;
    let (status, _) = console
        .request(
            &app,
            Method::PATCH,
            &format!("/api/v1/users/{ben}"),
            Some(json!({"password": "ben-by-anna-1"})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test]
async fn the_session_endpoints_are_documented() {
    let app = TestApp::spawn().await;
    let (status, _, spec) = send(&app, Method::GET, "/openapi.json", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    for (path, method) in [
        ("/api/v1/session", "post"),
        ("/api/v1/session", "get"),
        ("/api/v1/session", "delete"),
        ("/api/v1/session/setup", "get"),
        ("/api/v1/session/setup", "post"),
    ] {
        let operation = &spec["paths"][path][method];
        assert_eq!(operation["tags"][0], "session", "{path} {method}");
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["session"]["in"],
        "cookie"
    );
    assert_eq!(
        spec["components"]["securitySchemes"]["session"]["name"],
        "leadline_session"
    );
    app.stop().await;
}

/// The store's part on one database: sessions are found with their person's current
/// role, end with a new role or password (but for the one kept), go with their person
/// (cascade), are swept once over; the first admin is set up once.
async fn sessions_in_the_store(store: &Store) {
    let user = |name: &str, role: Role| NewUser {
        name: name.to_owned(),
        email: format!("{name}@leadline.test"),
        role,
        extension: None,
        phones: Vec::new(),
        sip: None,
        password_hash: None,
        sip_digest: None,
    };
    let anna = store.create_user(user("anna", Role::Agent)).await.unwrap();
    assert!(!anna.has_password);
    let now = leadline::store::now_ms();
    let session = |hash: &str, user: &UserId, times: SessionTimes| NewSession {
        token_hash: hash.to_owned(),
        user: user.clone(),
        times,
        remote_addr: Some("127.0.0.1:5000".to_owned()),
        user_agent: Some("x".repeat(1000)),
    };
    for hash in ["s1", "s2", "s3"] {
        store
            .create_session(&session(hash, &anna.id, SessionTimes::new(now)))
            .await
            .unwrap();
    }
    let found = store.session("s1").await.unwrap().unwrap();
    assert_eq!(found.user, anna.id);
    assert_eq!(found.role, Role::Agent);
    assert_eq!(found.times, SessionTimes::new(now));
    store.touch_session("s1", now + 90_000).await.unwrap();
    assert_eq!(
        store
            .session("s1")
            .await
            .unwrap()
            .unwrap()
            .times
            .last_seen_at,
        now + 90_000
    );
    assert_eq!(store.session("nope").await.unwrap(), None);

    // Her own new password keeps s1 only.
    let patch = UserPatch {
        password_hash: Some("$argon2id$stand-in".to_owned()),
        own_session: Some("s1".to_owned()),
        ..UserPatch::default()
    };
    let changed = store.update_user(&anna.id, patch).await.unwrap();
    assert!(changed.has_password);
    assert_eq!(store.session_count(&anna.id).await.unwrap(), 1);
    let credentials = store
        .credentials("anna@leadline.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        credentials.password_hash.as_deref(),
        Some("$argon2id$stand-in")
    );
    // A new role ends them all.
    let patch = UserPatch {
        role: Some(Role::Admin),
        own_session: Some("s1".to_owned()),
        ..UserPatch::default()
    };
    store.update_user(&anna.id, patch).await.unwrap();
    assert_eq!(store.session_count(&anna.id).await.unwrap(), 0);
    assert_eq!(
        leadline::session::sessions_to_end(true, false, Some("s1")),
        EndSessions::All
    );

    // Cascade: deleting the person deletes their sessions on either database.
    let ben = store.create_user(user("ben", Role::Agent)).await.unwrap();
    store
        .create_session(&session("b1", &ben.id, SessionTimes::new(now)))
        .await
        .unwrap();
    store.delete_user(&ben.id).await.unwrap();
    assert_eq!(store.session("b1").await.unwrap(), None);
    assert_eq!(store.session_count(&ben.id).await.unwrap(), 0);

    // The sweep: idle too long, or past the absolute end.
    let carla = store.create_user(user("carla", Role::Agent)).await.unwrap();
    let idle = SessionTimes {
        last_seen_at: now - leadline::session::IDLE_MS - 1,
        ..SessionTimes::new(now - leadline::session::IDLE_MS - 1)
    };
    let past_end = SessionTimes {
        created_at: now - 10,
        last_seen_at: now,
        expires_at: now - 1,
    };
    for (hash, times) in [
        ("c1", idle),
        ("c2", past_end),
        ("c3", SessionTimes::new(now)),
    ] {
        store
            .create_session(&session(hash, &carla.id, times))
            .await
            .unwrap();
    }
    let swept = store
        .delete_expired_sessions(now, leadline::session::idle_cutoff(now))
        .await
        .unwrap();
    assert_eq!(swept, 2);
    assert!(store.session("c3").await.unwrap().is_some());
    assert!(store.delete_session("c3").await.unwrap());
    assert!(!store.delete_session("c3").await.unwrap());

    // Set-up: Anna is an admin with a password, so it is done; on a fresh account an
    // admin without one gets the password, an agent's e-mail is refused.
    assert!(store.admin_can_sign_in().await.unwrap());
    let err = store
        .set_up_first_admin("Olga", "olga@leadline.test", "$argon2id$olga")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            leadline::store::StoreError::Conflict {
                code: "already_set_up",
                ..
            }
        ),
        "{err:?}"
    );
    store.delete_user(&anna.id).await.unwrap();
    assert!(!store.admin_can_sign_in().await.unwrap());
    let err = store
        .set_up_first_admin("Carla", "carla@leadline.test", "$argon2id$c")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            leadline::store::StoreError::Conflict {
                code: "user_exists",
                ..
            }
        ),
        "{err:?}"
    );
    let dora = store.create_user(user("dora", Role::Admin)).await.unwrap();
    let set_up = store
        .set_up_first_admin("Dora D", "dora@leadline.test", "$argon2id$d")
        .await
        .unwrap();
    assert_eq!(
        set_up.id, dora.id,
        "the admin with that e-mail got the password"
    );
    assert!(set_up.has_password);
    let olga = store
        .set_up_first_admin("Olga", "olga@leadline.test", "$argon2id$o")
        .await;
    assert!(olga.is_err(), "once only");
}

#[tokio::test]
async fn a5_sessions_in_the_store_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    sessions_in_the_store(&store).await;
    store.close().await;
}

#[tokio::test]
async fn a5_sessions_in_the_store_postgres() {
    let url = PgServer::shared().create_database("sessions").await;
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    sessions_in_the_store(&store).await;
    store.close().await;
}

/// The whole console flow on PostgreSQL: set-up, sign-in, a cookie change, sign-out.
#[tokio::test]
async fn a5_the_console_sign_in_works_on_postgresql() {
    let url = PgServer::shared().create_database("console_sign_in").await;
    let app = TestApp::spawn_with_database(&url).await;
    let (status, headers, body) = send(
        &app,
        Method::POST,
        "/api/v1/session/setup",
        &[],
        Some(
            json!({"token": app.admin, "name": "Olga", "email": "olga@example.com",
                    "password": "olga-admin-55"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let olga = Console::from_answer(&headers, body);
    let (status, _) = olga
        .request(
            &app,
            Method::POST,
            "/api/v1/users",
            Some(
                json!({"name": "Anna", "email": "anna@example.com", "role": "agent",
                        "password": ANNA_PASSWORD}),
            ),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let anna = Console::sign_in(&app, "anna@example.com", ANNA_PASSWORD).await;
    assert_eq!(anna.get(&app, "/api/v1/leads").await.0, StatusCode::OK);
    let (status, _) = olga
        .request(&app, Method::DELETE, "/api/v1/session", None, true)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        olga.get(&app, "/api/v1/session").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = app
        .request(
            Method::DELETE,
            &format!("/api/v1/users/{}", anna.user_id()),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        anna.get(&app, "/api/v1/leads").await.0,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}
