//! OAuth2 mailboxes end to end: a real Dovecot 2.3 that checks access tokens against this
//! test's own authorization server (axum on loopback port 0: token endpoint with the
//! refresh-token and device-code grants, device authorization endpoint, RFC 7662
//! introspection for Dovecot), the gateway's poller and connection test over the HTTP
//! API, and `leadline mailbox authorize` as the real binary.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::routing::post;
use axum::{Form, Json, Router};
use leadline::mail::imap::{self, CertificateDer, ImapError, ImapSettings, Security};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::common::dovecot::{DOMAIN, Dovecot, OAuth2Passdb, Options};
use crate::common::wait_until;
use crate::helpers::TestApp;

const USER: &str = "alice";
const CLIENT_ID: &str = "leadline-test-client";
/// Long enough for a reconnect after the poller's first back-off (5 s ± 25 %) and a pass
/// on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------------------
// The authorization server

/// What the test's authorization server knows and saw.
#[derive(Default)]
struct AuthState {
    /// How long access tokens live.
    lifetime: Duration,
    /// Whether a refresh answers with a new refresh token and revokes the old one.
    rotate: bool,
    /// `Some`: the client must authenticate with this secret.
    client_secret: Option<String>,
    next: u64,
    /// refresh token → (user, revoked)
    grants: HashMap<String, (String, bool)>,
    /// access token → (user, refresh token, expires)
    access: HashMap<String, (String, String, Instant)>,
    /// device code → device
    devices: HashMap<String, Device>,
    /// Every refresh: the refresh token used and the access token issued (`None`: refused).
    refreshes: Vec<(String, Option<String>)>,
    /// Every introspection: the token asked about and whether it was active.
    introspections: Vec<(String, bool)>,
}

#[derive(Default)]
struct Device {
    user_code: String,
    approved_for: Option<String>,
    slow_downs_left: u32,
    /// When the client polled, and what it was told.
    polls: Vec<(Instant, &'static str)>,
}

impl AuthState {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}-{}-{}", self.next, uuid::Uuid::new_v4().simple())
    }

    fn issue_access(&mut self, user: &str, grant: &str) -> String {
        let token = self.id("at");
        let expires = Instant::now() + self.lifetime;
        self.access
            .insert(token.clone(), (user.to_owned(), grant.to_owned(), expires));
        token
    }

    fn issue_grant(&mut self, user: &str) -> String {
        let token = self.id("rt");
        self.grants.insert(token.clone(), (user.to_owned(), false));
        token
    }

    fn client_ok(&self, form: &HashMap<String, String>) -> bool {
        form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && (self.client_secret.is_none()
                || form.get("client_secret") == self.client_secret.as_ref())
    }
}

type Answer = (AxumStatus, Json<Value>);

fn oauth_error(error: &str, description: &str) -> Answer {
    (
        AxumStatus::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
}

async fn token_endpoint(
    State(state): State<Arc<Mutex<AuthState>>>,
    Form(form): Form<HashMap<String, String>>,
) -> Answer {
    let mut state = state.lock().unwrap();
    if !state.client_ok(&form) {
        if let Some(used) = form.get("refresh_token") {
            state.refreshes.push((used.clone(), None));
        }
        return (
            AxumStatus::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_description": "bad client secret"})),
        );
    }
    let lifetime = state.lifetime.as_secs();
    match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {
            let used = form.get("refresh_token").cloned().unwrap_or_default();
            let user = match state.grants.get(&used) {
                Some((user, false)) => user.clone(),
                _ => {
                    state.refreshes.push((used, None));
                    return oauth_error("invalid_grant", "Token has been expired or revoked.");
                }
            };
            let mut answer = json!({"token_type": "Bearer", "expires_in": lifetime,
                                    "scope": form.get("scope")});
            let grant = if state.rotate {
                state.grants.get_mut(&used).unwrap().1 = true;
                let next = state.issue_grant(&user);
                answer["refresh_token"] = json!(next);
                next
            } else {
                used.clone()
            };
            let access = state.issue_access(&user, &grant);
            answer["access_token"] = json!(access);
            state.refreshes.push((used, Some(access)));
            (AxumStatus::OK, Json(answer))
        }
        Some("urn:ietf:params:oauth:grant-type:device_code") => {
            let code = form.get("device_code").cloned().unwrap_or_default();
            let Some(device) = state.devices.get_mut(&code) else {
                return oauth_error("invalid_grant", "unknown device code");
            };
            let told = if device.slow_downs_left > 0 {
                device.slow_downs_left -= 1;
                "slow_down"
            } else if device.approved_for.is_some() {
                "granted"
            } else {
                "authorization_pending"
            };
            device.polls.push((Instant::now(), told));
            if told != "granted" {
                return oauth_error(told, "");
            }
            let user = device.approved_for.take().unwrap();
            state.devices.remove(&code);
            let grant = state.issue_grant(&user);
            let access = state.issue_access(&user, &grant);
            (
                AxumStatus::OK,
                Json(json!({"access_token": access, "token_type": "Bearer",
                            "expires_in": lifetime, "refresh_token": grant})),
            )
        }
        _ => oauth_error("unsupported_grant_type", ""),
    }
}

async fn device_endpoint(
    State(state): State<Arc<Mutex<AuthState>>>,
    Form(form): Form<HashMap<String, String>>,
) -> Answer {
    let mut state = state.lock().unwrap();
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID) || !form.contains_key("scope") {
        return oauth_error("invalid_request", "client_id and scope are required");
    }
    let device_code = state.id("dc");
    let user_code = format!("WDJB-{:04}", state.next);
    state.devices.insert(
        device_code.clone(),
        Device {
            user_code: user_code.clone(),
            slow_downs_left: 1,
            ..Device::default()
        },
    );
    (
        AxumStatus::OK,
        Json(json!({
            "device_code": device_code, "user_code": user_code,
            "verification_uri": "https://auth.example/activate",
            "verification_uri_complete": format!("https://auth.example/activate?user_code={user_code}"),
            "expires_in": 1800, "interval": 1,
        })),
    )
}

/// RFC 7662, for Dovecot's `oauth2` passdb.
async fn introspection_endpoint(
    State(state): State<Arc<Mutex<AuthState>>>,
    Form(form): Form<HashMap<String, String>>,
) -> Json<Value> {
    let mut state = state.lock().unwrap();
    let token = form.get("token").cloned().unwrap_or_default();
    let user = match state.access.get(&token) {
        Some((user, grant, expires))
            if *expires > Instant::now() && state.grants.get(grant).is_some_and(|g| !g.1) =>
        {
            Some(user.clone())
        }
        _ => None,
    };
    state.introspections.push((token, user.is_some()));
    Json(match user {
        Some(user) => json!({"active": true, "username": user, "scope": "mail"}),
        None => json!({"active": false}),
    })
}

struct AuthServer {
    base: String,
    state: Arc<Mutex<AuthState>>,
    _server: tokio::task::JoinHandle<()>,
}

impl AuthServer {
    async fn start(lifetime: Duration) -> AuthServer {
        let state = Arc::new(Mutex::new(AuthState {
            lifetime,
            ..AuthState::default()
        }));
        let router = Router::new()
            .route("/token", post(token_endpoint))
            .route("/device", post(device_endpoint))
            .route("/introspect", post(introspection_endpoint))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("auth server");
        });
        AuthServer {
            base,
            state,
            _server: server,
        }
    }

    fn token_url(&self) -> String {
        format!("{}/token", self.base)
    }

    fn device_url(&self) -> String {
        format!("{}/device", self.base)
    }

    fn passdb(&self, mechanisms: &[&'static str]) -> OAuth2Passdb {
        OAuth2Passdb {
            introspection_url: format!("{}/introspect", self.base),
            mechanisms: mechanisms.to_vec(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut AuthState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// A refresh token for `user`, as if they had signed in before.
    fn grant(&self, user: &str) -> String {
        self.with(|s| s.issue_grant(user))
    }

    /// An access token for `user` straight away (for the IMAP adapter's own tests).
    fn access_token(&self, user: &str) -> String {
        self.with(|s| {
            let grant = s.issue_grant(user);
            s.issue_access(user, &grant)
        })
    }

    /// Revokes a refresh token and every access token issued for it.
    fn revoke(&self, refresh_token: &str) {
        self.with(|s| s.grants.get_mut(refresh_token).expect("a known grant").1 = true);
    }

    fn refreshes(&self) -> Vec<(String, Option<String>)> {
        self.with(|s| s.refreshes.clone())
    }

    fn introspections(&self) -> Vec<(String, bool)> {
        self.with(|s| s.introspections.clone())
    }

    /// Access tokens not yet expired.
    fn live_access_tokens(&self) -> usize {
        self.with(|s| s.access.values().filter(|a| a.2 > Instant::now()).count())
    }

    /// The user signs in at the verification page and enters `user_code`.
    fn approve(&self, user_code: &str, user: &str) {
        self.with(|s| {
            let device = s
                .devices
                .values_mut()
                .find(|d| d.user_code == user_code)
                .unwrap_or_else(|| panic!("no device with user code {user_code:?}"));
            device.approved_for = Some(user.to_owned());
        });
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn oauth2_dovecot(auth: &AuthServer, mechanisms: &[&'static str]) -> Dovecot {
    Dovecot::start_with(Options {
        oauth2: Some(auth.passdb(mechanisms)),
        ..Options::default()
    })
}

/// Successful logins in Dovecot's log, by SASL mechanism.
fn logins(dovecot: &Dovecot) -> Vec<String> {
    dovecot
        .log_text()
        .lines()
        .filter_map(|line| line.split("Login: user=<alice>, method=").nth(1))
        .map(|rest| rest.split(',').next().unwrap_or_default().to_owned())
        .collect()
}

fn message(from: &str, subject: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Kunde <{from}>\r\nTo: <{USER}@{DOMAIN}>\r\nSubject: {subject}\r\n\
         Message-ID: <{id}@example.org>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\n\
         Bitte um ein Angebot.\r\n"
    )
    .into_bytes()
}

fn mailbox_body(dovecot: &Dovecot, oauth2: Value) -> Value {
    json!({
        "name": "Sales inbox", "kind": "company", "host": "127.0.0.1",
        "port": dovecot.imap_port(), "security": "none", "username": USER,
        "address": format!("{USER}@{DOMAIN}"), "check": "idle", "sync_window_days": null,
        "auth": "oauth2", "oauth2": oauth2,
    })
}

async fn create_mailbox(app: &TestApp, body: Value) -> String {
    app.post_ok("/api/v1/mailboxes", body, StatusCode::CREATED)
        .await["id"]
        .as_str()
        .expect("mailbox id")
        .to_owned()
}

async fn wait_for_state(app: &TestApp, mailbox: &str, state: &str) -> Value {
    wait_until(DEADLINE, &format!("mailbox state {state}"), || async {
        let value = app.get_ok(&format!("/api/v1/mailboxes/{mailbox}")).await;
        if value["state"] == state {
            Ok(value)
        } else {
            Err(value)
        }
    })
    .await
}

async fn wait_for_subjects(app: &TestApp, subjects: &[&str]) {
    wait_until(DEADLINE, "the messages to be collected", || async {
        let emails = app.get_ok("/api/v1/emails?limit=500").await;
        let have: Vec<String> = emails["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["subject"].as_str().unwrap_or_default().to_owned())
            .collect();
        if subjects.iter().all(|s| have.iter().any(|h| h == s)) {
            Ok(())
        } else {
            Err(have)
        }
    })
    .await
}

async fn patch(app: &TestApp, mailbox: &str, body: Value) -> (StatusCode, Value) {
    app.request(
        reqwest::Method::PATCH,
        &format!("/api/v1/mailboxes/{mailbox}"),
        Some(&app.admin),
        Some(body),
    )
    .await
}

async fn post_invalid(app: &TestApp, body: Value) -> Value {
    let (status, answer) = app
        .request(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            Some(&app.admin),
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{body} → {answer}"
    );
    answer["error"].clone()
}

fn imap_settings(dovecot: &Dovecot, security: Security, token: &str) -> ImapSettings {
    let port = match security {
        Security::Tls => dovecot.imaps_port(),
        Security::StartTls | Security::None => dovecot.imap_port(),
    };
    let mut settings = ImapSettings::new("127.0.0.1", port, security, USER, "");
    settings.extra_roots = vec![CertificateDer::from(dovecot.ca_certificate_der())];
    settings.bearer = Some(token.to_owned());
    settings
}

// ---------------------------------------------------------------------------------------
// The IMAP adapter: SASL mechanisms

/// OAUTHBEARER where the server offers it, else XOAUTH2; with STARTTLS the capabilities
/// are asked after TLS, with implicit TLS the greeting's are used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_login_takes_oauthbearer_or_xoauth2_as_the_server_offers() {
    let auth = AuthServer::start(Duration::from_secs(3600)).await;
    for (offered, expected) in [
        (&["oauthbearer"][..], "OAUTHBEARER"),
        (&["xoauth2"][..], "XOAUTH2"),
        (&["xoauth2", "oauthbearer"][..], "OAUTHBEARER"),
    ] {
        let dovecot = oauth2_dovecot(&auth, offered);
        let config = dovecot.doveconf();
        assert!(
            config.contains("driver = oauth2") && config.contains("driver = passwd-file"),
            "{config}"
        );
        for security in [Security::StartTls, Security::Tls] {
            let token = auth.access_token(USER);
            let mut session = imap::connect(&imap_settings(&dovecot, security, &token))
                .await
                .unwrap_or_else(|e| {
                    panic!("{offered:?} {security:?}: {e}\n{}", dovecot.log_text())
                });
            session
                .select("INBOX")
                .await
                .expect("SELECT after an OAuth2 login");
            session.logout().await.expect("LOGOUT");
            assert!(
                auth.introspections().contains(&(token, true)),
                "Dovecot asked about the token"
            );
        }
        // The passwords still work beside the tokens.
        let password = ImapSettings::new(
            "127.0.0.1",
            dovecot.imap_port(),
            Security::None,
            USER,
            dovecot.password(USER),
        );
        imap::test_login(&password)
            .await
            .expect("LOGIN with the password");
        let methods = logins(&dovecot);
        assert_eq!(
            methods.iter().filter(|m| *m == expected).count(),
            2,
            "{offered:?}: {methods:?}"
        );
        assert_eq!(
            methods.iter().filter(|m| *m == "PLAIN").count(),
            1,
            "{methods:?}"
        );
    }
}

/// A refused token ends the SASL exchange with NO (the error challenge is answered), not
/// with the login deadline; the error says what the server said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_refused_token_is_login_failed_without_waiting_for_the_deadline() {
    let auth = AuthServer::start(Duration::from_secs(3600)).await;
    for (offered, said) in [
        ("oauthbearer", "status invalid_token"),
        ("xoauth2", "status 401"),
    ] {
        let dovecot = oauth2_dovecot(&auth, &[offered]);
        let mut settings = imap_settings(&dovecot, Security::None, "not-a-token");
        // Dovecot answers NO after its 2 s failure delay; the deadline is far beyond it.
        settings.timeouts.login = Duration::from_secs(60);
        let error = imap::test_login(&settings).await.expect_err("a bad token");
        assert!(matches!(error, ImapError::LoginFailed { .. }), "{error}");
        assert_eq!(error.code(), "login_failed");
        let text = error.to_string();
        assert!(
            text.contains("refused the OAuth2 access token") && text.contains(said),
            "{offered}: {text}"
        );
        assert!(
            !text.contains("within"),
            "ended by NO, not the deadline: {text}"
        );
    }
}

/// A server that keeps challenging never gets an answer it waits for: the login deadline
/// ends the exchange.
#[tokio::test]
async fn oauth2_endless_sasl_challenges_end_at_the_login_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let _server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write
                    .write_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER] ready\r\n")
                    .await;
                // Every line the client sends gets another (error) challenge: `{}`.
                while let Ok(Some(_)) = lines.next_line().await {
                    if write.write_all(b"+ e30=\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut settings = ImapSettings::new("127.0.0.1", port, Security::None, USER, "");
    settings.bearer = Some("token".into());
    settings.timeouts.login = Duration::from_millis(500);
    let error = imap::test_login(&settings).await.expect_err("never ends");
    assert_eq!(error.code(), "login_failed", "{error}");
    assert!(
        error
            .to_string()
            .contains("no answer to AUTHENTICATE OAUTHBEARER"),
        "{error}"
    );
}

/// A server without a token mechanism is told apart from a refused token.
#[tokio::test]
async fn oauth2_server_without_token_mechanisms_is_login_failed() {
    let dovecot = Dovecot::start();
    let error = imap::test_login(&imap_settings(&dovecot, Security::StartTls, "token"))
        .await
        .expect_err("no XOAUTH2, no OAUTHBEARER");
    assert_eq!(error.code(), "login_failed");
    assert!(
        error
            .to_string()
            .contains("neither AUTH=OAUTHBEARER nor AUTH=XOAUTH2"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------
// Through the gateway

/// An OAuth2 mailbox connects with an access token from its refresh token and takes mail
/// in; logins within the token's life use the cached token (the connection test as well).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_mailbox_takes_mail_in_with_a_cached_access_token() {
    let auth = AuthServer::start(Duration::from_secs(3600)).await;
    auth.with(|s| s.client_secret = Some("client-secret-1".into()));
    let dovecot = oauth2_dovecot(&auth, &["xoauth2", "oauthbearer"]);
    let app = TestApp::spawn().await;
    let refresh = auth.grant(USER);
    let mailbox = create_mailbox(
        &app,
        mailbox_body(
            &dovecot,
            json!({"token_url": auth.token_url(), "client_id": CLIENT_ID,
                   "client_secret": "client-secret-1", "refresh_token": refresh,
                   "scope": "mail offline_access"}),
        ),
    )
    .await;
    wait_for_state(&app, &mailbox, "idle").await;
    dovecot
        .deliver(USER, &message("kunde@example.org", "Angebot", "o1"))
        .await;
    wait_for_subjects(&app, &["Angebot"]).await;

    for _ in 0..2 {
        app.post_ok(
            &format!("/api/v1/mailboxes/{mailbox}/test"),
            json!(null),
            StatusCode::OK,
        )
        .await;
    }
    let refreshes = auth.refreshes();
    assert_eq!(
        refreshes.len(),
        1,
        "one refresh for three logins: {refreshes:?}"
    );
    let token = refreshes[0].1.clone().expect("granted");
    let asked: Vec<_> = auth
        .introspections()
        .into_iter()
        .filter(|(t, active)| *t == token && *active)
        .collect();
    assert_eq!(asked.len(), 3, "the poller and two tests logged in with it");
    assert_eq!(
        logins(&dovecot),
        ["OAUTHBEARER"; 3],
        "{}",
        dovecot.log_text()
    );
    app.stop().await;
}

/// Tokens valid 2 s: after the server drops the connection and the token has expired,
/// the poller gets a new one (with the rotated refresh token the first refresh stored)
/// and takes new mail in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_access_token_is_renewed_after_it_expires_and_rotation_is_stored() {
    let app = TestApp::spawn().await;
    token_renewal_and_rotation(&app).await;
    app.stop().await;
}

/// The same on PostgreSQL: the stored rotation there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_token_renewal_on_postgresql() {
    let server = crate::common::postgres::PgServer::shared();
    let url = server.create_database("oauth2_renewal").await;
    let app = TestApp::spawn_with(|config, _| config.database_url = url).await;
    token_renewal_and_rotation(&app).await;
    app.stop().await;
}

async fn token_renewal_and_rotation(app: &TestApp) {
    let auth = AuthServer::start(Duration::from_secs(2)).await;
    auth.with(|s| s.rotate = true);
    let dovecot = oauth2_dovecot(&auth, &["xoauth2"]);
    let first_grant = auth.grant(USER);
    let mailbox = create_mailbox(
        app,
        mailbox_body(
            &dovecot,
            json!({"token_url": auth.token_url(), "client_id": CLIENT_ID,
                   "refresh_token": first_grant, "scope": "mail"}),
        ),
    )
    .await;
    wait_for_state(app, &mailbox, "idle").await;
    dovecot
        .deliver(USER, &message("kunde@example.org", "Vorher", "r1"))
        .await;
    wait_for_subjects(app, &["Vorher"]).await;
    assert_eq!(auth.refreshes().len(), 1);

    // Every token issued so far is dead; then the server drops the IDLE connection.
    wait_until(DEADLINE, "the access tokens to expire", || async {
        (auth.live_access_tokens() == 0).then_some(())
    })
    .await;
    dovecot.doveadm(&["kick", USER]);
    dovecot
        .deliver(USER, &message("kunde@example.org", "Nachher", "r2"))
        .await;
    wait_for_subjects(app, &["Vorher", "Nachher"]).await;

    let refreshes = auth.refreshes();
    assert!(refreshes.len() >= 2, "{refreshes:?}");
    assert!(
        refreshes.iter().all(|(_, granted)| granted.is_some()),
        "the rotated refresh token was stored and used: {refreshes:?}"
    );
    assert_eq!(refreshes[0].0, first_grant);
    assert_ne!(
        refreshes[1].0, first_grant,
        "the second refresh used the rotated token"
    );
    let second = refreshes[1].1.clone().unwrap();
    assert!(
        auth.introspections().contains(&(second, true)),
        "Dovecot saw the renewed token"
    );
    // Dovecot writes its log line after the login it records: wait for the second one.
    let seen = wait_until(DEADLINE, "Dovecot to log the second login", || async {
        let seen = logins(&dovecot);
        (seen.len() >= 2).then_some(seen)
    })
    .await;
    assert!(seen.iter().all(|m| m == "XOAUTH2"), "{seen:?}");
}

/// E10: a revoked refresh token shows as `state: error` with a `last_error` that says
/// what to do, and the connection test answers 422 `login_failed` with it. Retries do not
/// send the rejected token again; a new one (set over the API) brings the mailbox back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e10_revoked_refresh_token_is_state_error_and_login_failed() {
    let auth = AuthServer::start(Duration::from_secs(2)).await;
    let dovecot = oauth2_dovecot(&auth, &["oauthbearer"]);
    let app = TestApp::spawn().await;
    let grant = auth.grant(USER);
    let mailbox = create_mailbox(
        &app,
        mailbox_body(
            &dovecot,
            json!({"token_url": auth.token_url(), "client_id": CLIENT_ID,
                   "refresh_token": grant, "scope": "mail"}),
        ),
    )
    .await;
    wait_for_state(&app, &mailbox, "idle").await;

    auth.revoke(&grant);
    dovecot.doveadm(&["kick", USER]);
    let expected = format!(
        "OAuth2 refresh token was rejected by {}: invalid_grant (Token has been expired or \
         revoked.); run `leadline mailbox authorize {mailbox}`",
        auth.token_url()
    );
    // First the dropped connection, then, at the reconnect, the rejected refresh token.
    wait_until(
        DEADLINE,
        "the rejected refresh token on the mailbox",
        || async {
            let value = app.get_ok(&format!("/api/v1/mailboxes/{mailbox}")).await;
            if value["state"] == "error" && value["last_error"] == json!(expected) {
                Ok(())
            } else {
                Err(value)
            }
        },
    )
    .await;

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
    assert_eq!(body["error"]["message"], json!(expected), "{body}");
    // The test above used the same credentials as the poller: the rejected token was not
    // sent again (nor is it by the poller's retries).
    let rejected = auth
        .refreshes()
        .iter()
        .filter(|(_, granted)| granted.is_none())
        .count();
    assert_eq!(rejected, 1, "{:?}", auth.refreshes());

    // Someone signs in again and stores the new refresh token.
    let (status, body) = patch(
        &app,
        &mailbox,
        json!({"oauth2": {"refresh_token": auth.grant(USER)}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_state(&app, &mailbox, "idle").await;
    dovecot
        .deliver(USER, &message("kunde@example.org", "Wieder da", "v1"))
        .await;
    wait_for_subjects(&app, &["Wieder da"]).await;
    app.stop().await;
}

/// E10: a wrong client secret is `login_failed` naming the endpoint's answer; it is not
/// sent again until the secret changes, and the right one brings the mailbox up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e10_wrong_client_secret_is_login_failed_until_it_is_fixed() {
    let auth = AuthServer::start(Duration::from_secs(3600)).await;
    auth.with(|s| s.client_secret = Some("the-right-secret".into()));
    let dovecot = oauth2_dovecot(&auth, &["oauthbearer"]);
    let app = TestApp::spawn().await;
    let mailbox = create_mailbox(
        &app,
        mailbox_body(
            &dovecot,
            json!({"token_url": auth.token_url(), "client_id": CLIENT_ID,
                   "client_secret": "a-wrong-secret", "refresh_token": auth.grant(USER),
                   "scope": "mail"}),
        ),
    )
    .await;
    let errored = wait_for_state(&app, &mailbox, "error").await;
    let expected = format!(
        "the OAuth2 server {} refused the request: invalid_client (bad client secret)",
        auth.token_url()
    );
    assert_eq!(errored["last_error"], json!(expected), "{errored}");
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
    assert_eq!(body["error"]["field"], "oauth2", "{body}");
    assert_eq!(
        auth.refreshes().len(),
        1,
        "not sent again: {:?}",
        auth.refreshes()
    );

    let (status, body) = patch(
        &app,
        &mailbox,
        json!({"oauth2": {"client_secret": "the-right-secret"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_state(&app, &mailbox, "idle").await;
    app.stop().await;
}

/// `leadline mailbox authorize ID`, the real binary on the gateway's database: it shows
/// the code, polls through `authorization_pending` and `slow_down` (+5 s), and stores the
/// refresh token; the running gateway then connects with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_mailbox_authorize_runs_the_device_flow_and_the_mailbox_connects() {
    let auth = AuthServer::start(Duration::from_secs(3600)).await;
    let dovecot = oauth2_dovecot(&auth, &["xoauth2"]);
    let app = TestApp::spawn().await;
    // A public client (no secret), not yet authorized.
    let mailbox = create_mailbox(
        &app,
        mailbox_body(
            &dovecot,
            json!({"token_url": auth.token_url(), "device_authorization_url": auth.device_url(),
                   "client_id": CLIENT_ID, "scope": "mail offline_access"}),
        ),
    )
    .await;
    let waiting = wait_for_state(&app, &mailbox, "error").await;
    let text = waiting["last_error"].as_str().unwrap();
    assert!(
        text.contains("no OAuth2 refresh token yet")
            && text.contains(&format!("leadline mailbox authorize {mailbox}")),
        "{text}"
    );

    // One protocol second lasts 40 ms: the interval (1) and slow_down (+5) scale with it.
    const SECOND_MS: u64 = 40;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadline"))
        .arg("--data-dir")
        .arg(app.data_dir())
        .args(["mailbox", "authorize", &mailbox])
        .env_remove("LEADLINE_DATABASE_URL")
        .env_remove("LEADLINE_CONFIG")
        .env("LEADLINE_TEST_DEVICE_POLL_SECOND_MS", SECOND_MS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start leadline mailbox authorize");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut shown = Vec::new();
    let user_code = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = stdout.next_line().await.expect("read stdout") {
            shown.push(line.clone());
            if let Some(code) = line.split("enter code:").nth(1) {
                return code.trim().to_owned();
            }
        }
        panic!("no code shown: {shown:?}");
    })
    .await
    .expect("the code is shown");
    assert!(
        shown
            .iter()
            .any(|l| l.contains("https://auth.example/activate")),
        "{shown:?}"
    );
    // Not before the client has been told to wait.
    wait_until(DEADLINE, "a pending poll", || async {
        auth.with(|s| {
            s.devices
                .values()
                .any(|d| d.polls.iter().any(|p| p.1 == "authorization_pending"))
        })
        .then_some(())
    })
    .await;
    let polls = auth.with(|s| {
        s.devices
            .values()
            .find(|d| d.user_code == user_code)
            .map(|d| d.polls.clone())
            .expect("the device")
    });
    auth.approve(&user_code, USER);

    let output = tokio::time::timeout(DEADLINE, async {
        let mut rest = Vec::new();
        while let Some(line) = stdout.next_line().await.expect("read stdout") {
            rest.push(line);
        }
        let mut stderr = String::new();
        tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)
            .await
            .expect("read stderr");
        (child.wait().await.expect("exit status"), rest, stderr)
    })
    .await
    .expect("the command ends once signed in");
    let (status, rest, stderr) = output;
    assert!(status.success(), "{status}: {rest:?}\n{stderr}");
    assert!(
        rest.iter()
            .any(|l| l.contains("Signed in") && l.contains(&mailbox)),
        "{rest:?}"
    );
    // slow_down came first and made the next poll wait 1 + 5 protocol seconds.
    assert_eq!(polls[0].1, "slow_down", "{polls:?}");
    assert!(
        polls[1].0 - polls[0].0 >= Duration::from_millis(6 * SECOND_MS),
        "{polls:?}"
    );

    let shown = app.get_ok(&format!("/api/v1/mailboxes/{mailbox}")).await;
    assert_eq!(shown["oauth2"]["refresh_token_set"], true, "{shown}");
    wait_for_state(&app, &mailbox, "idle").await;
    dovecot
        .deliver(
            USER,
            &message("kunde@example.org", "Nach der Anmeldung", "d1"),
        )
        .await;
    wait_for_subjects(&app, &["Nach der Anmeldung"]).await;
    assert_eq!(logins(&dovecot), ["XOAUTH2"], "{}", dovecot.log_text());
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// The API

/// A4: the client secret and the refresh token are write-only: no answer carries them,
/// each says only whether it is set; null removes one, absent keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_oauth2_client_secret_and_refresh_token_are_write_only() {
    let app = TestApp::spawn().await;
    write_only_secrets(&app).await;
    app.stop().await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_oauth2_secrets_write_only_on_postgresql() {
    let server = crate::common::postgres::PgServer::shared();
    let url = server.create_database("oauth2_a4").await;
    let app = TestApp::spawn_with(|config, _| config.database_url = url).await;
    write_only_secrets(&app).await;
    app.stop().await;
}

async fn write_only_secrets(app: &TestApp) {
    let auth = AuthServer::start(Duration::from_secs(3600)).await;
    let body = json!({
        "kind": "company", "host": "127.0.0.1", "port": 1, "security": "none",
        "username": "anna@example.com", "auth": "oauth2",
        "oauth2": {"token_url": auth.token_url(), "client_id": CLIENT_ID,
                   "client_secret": "cs-WRITE-ONLY", "refresh_token": "rt-WRITE-ONLY",
                   "scope": "mail"},
    });
    let created = app
        .post_ok("/api/v1/mailboxes", body, StatusCode::CREATED)
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["auth"], "oauth2");
    assert_eq!(
        created["oauth2"],
        json!({"provider": null, "token_url": auth.token_url(),
               "device_authorization_url": null, "client_id": CLIENT_ID, "scope": "mail",
               "client_secret_set": true, "refresh_token_set": true}),
        "{created}"
    );
    let listed = app.get_ok("/api/v1/mailboxes").await;
    let (_, patched) = patch(app, &id, json!({"name": "Renamed"})).await;
    let tested = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/mailboxes/{id}/test"),
            Some(&app.admin),
            None,
        )
        .await
        .1;
    for answer in [
        &created,
        &app.get_ok(&format!("/api/v1/mailboxes/{id}")).await,
        &listed,
        &patched,
        &tested,
    ] {
        let text = answer.to_string();
        assert!(!text.contains("WRITE-ONLY"), "A4: {text}");
    }
    assert_eq!(
        patched["oauth2"]["refresh_token_set"], true,
        "kept: {patched}"
    );
    // The poller's error does not show them either.
    let errored = wait_for_state(app, &id, "error").await;
    assert!(!errored.to_string().contains("WRITE-ONLY"), "{errored}");

    let (status, cleared) = patch(
        app,
        &id,
        json!({"oauth2": {"client_secret": null, "refresh_token": null}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["oauth2"]["client_secret_set"], false, "{cleared}");
    assert_eq!(cleared["oauth2"]["refresh_token_set"], false, "{cleared}");
    assert_eq!(
        cleared["oauth2"]["client_id"], CLIENT_ID,
        "the rest is kept"
    );
}

/// A provider fills in the endpoints and the IMAP scope; what the input gives wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_provider_presets_fill_in_endpoints_and_scope() {
    let app = TestApp::spawn().await;
    let base = |oauth2: Value| {
        json!({"kind": "company", "host": "outlook.office365.com", "security": "tls",
               "username": "sales@example.com", "auth": "oauth2", "oauth2": oauth2})
    };
    let microsoft = app
        .post_ok(
            "/api/v1/mailboxes",
            base(json!({"provider": "microsoft", "client_id": "app-1"})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(
        microsoft["oauth2"],
        json!({"provider": "microsoft",
               "token_url": "https://login.microsoftonline.com/common/oauth2/v2.0/token",
               "device_authorization_url": "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode",
               "client_id": "app-1",
               "scope": "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
               "client_secret_set": false, "refresh_token_set": false}),
        "{microsoft}"
    );
    assert_eq!(microsoft["port"], 993);
    let mut google = base(
        json!({"provider": "google", "client_id": "app-2.apps.googleusercontent.com",
                                 "client_secret": "gs"}),
    );
    google["host"] = json!("imap.gmail.com");
    google["username"] = json!("sales@gmail.example");
    let google = app
        .post_ok("/api/v1/mailboxes", google, StatusCode::CREATED)
        .await;
    assert_eq!(
        google["oauth2"]["token_url"],
        "https://oauth2.googleapis.com/token"
    );
    assert_eq!(
        google["oauth2"]["device_authorization_url"],
        "https://oauth2.googleapis.com/device/code"
    );
    assert_eq!(google["oauth2"]["scope"], "https://mail.google.com/");
    assert_eq!(google["oauth2"]["client_secret_set"], true);

    // A single-tenant Microsoft endpoint instead of `common`, given with the provider.
    let id = microsoft["id"].as_str().unwrap();
    let tenant = "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token";
    let (status, changed) = patch(
        &app,
        id,
        json!({"oauth2": {"provider": "microsoft", "token_url": tenant}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["oauth2"]["token_url"], tenant);
    assert_eq!(
        changed["oauth2"]["scope"],
        "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"
    );
    // Without a refresh token the mailbox waits for `authorize` and asks no provider.
    let waiting = wait_for_state(&app, id, "error").await;
    assert!(
        waiting["last_error"]
            .as_str()
            .unwrap()
            .contains("no OAuth2 refresh token yet"),
        "{waiting}"
    );
    app.stop().await;
}

/// 422s with the field for what an OAuth2 mailbox lacks or gets wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_mailbox_settings_are_checked() {
    let app = TestApp::spawn().await;
    let with = |auth: Value, oauth2: Value, password: Value| {
        let mut body = json!({"kind": "company", "host": "imap.example.com",
                              "username": "sales@example.com", "auth": auth});
        if !oauth2.is_null() {
            body["oauth2"] = oauth2;
        }
        if !password.is_null() {
            body["password"] = password;
        }
        body
    };
    let custom = json!({"token_url": "https://login.example.com/token", "client_id": "c",
                        "scope": "mail"});
    let drop_field = |name: &str| {
        let mut o = custom.clone();
        o.as_object_mut().unwrap().remove(name);
        o
    };
    let set = |name: &str, value: Value| {
        let mut o = custom.clone();
        o[name] = value;
        o
    };
    for (body, code, field) in [
        (
            with(json!("oauth2"), Value::Null, Value::Null),
            "required",
            "oauth2",
        ),
        (
            with(json!("oauth2"), drop_field("client_id"), Value::Null),
            "required",
            "oauth2.client_id",
        ),
        (
            with(json!("oauth2"), drop_field("token_url"), Value::Null),
            "required",
            "oauth2.token_url",
        ),
        (
            with(json!("oauth2"), drop_field("scope"), Value::Null),
            "required",
            "oauth2.scope",
        ),
        (
            with(json!("oauth2"), set("scope", json!(" ")), Value::Null),
            "required",
            "oauth2.scope",
        ),
        (
            with(
                json!("oauth2"),
                set("provider", json!("yahoo")),
                Value::Null,
            ),
            "invalid_value",
            "oauth2.provider",
        ),
        (
            with(
                json!("oauth2"),
                set("token_url", json!("http://login.example.com/token")),
                Value::Null,
            ),
            "invalid_url",
            "oauth2.token_url",
        ),
        (
            with(
                json!("oauth2"),
                set("token_url", json!("login.example.com")),
                Value::Null,
            ),
            "invalid_url",
            "oauth2.token_url",
        ),
        (
            with(
                json!("oauth2"),
                set("device_authorization_url", json!("ftp://x.example/d")),
                Value::Null,
            ),
            "invalid_url",
            "oauth2.device_authorization_url",
        ),
        (
            with(
                json!("oauth2"),
                set("refresh_token", json!("")),
                Value::Null,
            ),
            "required",
            "oauth2.refresh_token",
        ),
        (
            with(json!("oauth2"), custom.clone(), json!("pw")),
            "invalid_value",
            "password",
        ),
        (
            with(json!("password"), custom.clone(), json!("pw")),
            "invalid_value",
            "oauth2",
        ),
        (
            with(json!("kerberos"), Value::Null, json!("pw")),
            "invalid_value",
            "auth",
        ),
    ] {
        let error = post_invalid(&app, body.clone()).await;
        assert_eq!(error["code"], code, "{body} → {error}");
        assert_eq!(error["field"], field, "{body} → {error}");
    }

    // A password mailbox becomes an OAuth2 one (its password is dropped) and back (a
    // password is needed again).
    let id = app
        .post_ok(
            "/api/v1/mailboxes",
            with(json!("password"), Value::Null, json!("pw")),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = patch(&app, &id, json!({"auth": "oauth2"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "oauth2");
    let (status, body) = patch(&app, &id, json!({"auth": "oauth2", "oauth2": custom})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["auth"], "oauth2");
    let (status, body) = patch(&app, &id, json!({"auth": "password"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "password", "{body}");
    let (status, body) = patch(&app, &id, json!({"auth": "password", "password": "pw2"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["auth"], "password");
    assert!(body["oauth2"].is_null(), "{body}");
    app.stop().await;
}
