//! Carrier trunks (T2: rented numbers arrive from a carrier the gateway registers to) and
//! NAT keep-alives, against a real SIPp playing the carrier's registrar or a phone.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{free_port, wait_until};
use crate::helpers::TestApp;

/// A SIPp server (UAS) scenario running in the background on its own port.
struct SippServer {
    child: tokio::process::Child,
    port: u16,
    trace: PathBuf,
    _dir: tempfile::TempDir,
}

/// What a finished SIPp run did.
struct SippRun {
    success: bool,
    messages: String,
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/sipp")
        .join(name)
}

/// Whether something holds `port` on 127.0.0.1 for `transport`.
fn port_taken(port: u16, transport: &str) -> bool {
    match transport {
        "tcp" => std::net::TcpListener::bind(("127.0.0.1", port)).is_err(),
        _ => std::net::UdpSocket::bind(("127.0.0.1", port)).is_err(),
    }
}

impl SippServer {
    /// Starts `name` as a server on a free port of 127.0.0.1 (or on `port`) and returns
    /// once SIPp holds the port. A free port taken by someone else before SIPp could bind
    /// it makes SIPp exit: then it tries another.
    async fn start(name: &str, transport: &str, port: Option<u16>, extra: &[&str]) -> SippServer {
        for _ in 0..5 {
            let port = port.unwrap_or_else(free_port);
            let dir = tempfile::tempdir().expect("temp dir");
            let trace = dir.path().join("messages.log");
            let mut command = tokio::process::Command::new("sipp");
            command
                .arg("-sf")
                .arg(scenario(name))
                .args(["-t", if transport == "tcp" { "t1" } else { "u1" }])
                .args(["-i", "127.0.0.1", "-p", &port.to_string()])
                .args(["-m", "1", "-nostdin", "-timeout", "60s", "-timeout_error"])
                .args(["-trace_msg", "-message_file"])
                .arg(&trace)
                .args(extra)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            let child = RefCell::new(
                command
                    .spawn()
                    .expect("sipp runs (scripts/test installs sip-tester)"),
            );
            let listening = wait_until(Duration::from_secs(10), "SIPp to listen", || {
                let child = &child;
                async move {
                    if child.borrow_mut().try_wait().ok().flatten().is_some() {
                        return Ok::<bool, String>(false);
                    }
                    if port_taken(port, transport) {
                        Ok(true)
                    } else {
                        Err(format!("port {port} not bound yet"))
                    }
                }
            })
            .await;
            if listening {
                return SippServer {
                    child: child.into_inner(),
                    port,
                    trace,
                    _dir: dir,
                };
            }
        }
        panic!("SIPp did not start on any of 5 free ports");
    }

    /// Waits for the scenario to end (each run bounds itself with `-timeout`).
    async fn finish(mut self) -> SippRun {
        let status = tokio::time::timeout(Duration::from_secs(90), self.child.wait())
            .await
            .expect("SIPp ends within its own timeout")
            .expect("SIPp exit status");
        SippRun {
            success: status.success(),
            messages: std::fs::read_to_string(&self.trace).unwrap_or_default(),
        }
    }
}

/// The requests of a SIPp trace with the given method, in order, as text.
fn received(messages: &str, method: &str) -> Vec<String> {
    messages
        .split("----------------------------------------------- ")
        .filter(|block| block.contains("message received"))
        .filter_map(|block| {
            let start = block.find(&format!("{method} sip:"))?;
            Some(block[start..].to_owned())
        })
        .collect()
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn create_carrier(
    app: &TestApp,
    name: &str,
    port: u16,
    transport: &str,
    password: &str,
) -> String {
    let trunk = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": name, "kind": "carrier", "host": "127.0.0.1", "port": port,
                   "transport": transport, "username": "trunk-user", "password": password}),
            StatusCode::CREATED,
        )
        .await;
    // Not attempted yet, but on its way.
    assert_eq!(trunk["registration"]["state"], "registering", "{trunk}");
    assert!(trunk.get("password").is_none(), "A4: {trunk}");
    trunk["id"].as_str().expect("trunk id").to_owned()
}

/// The trunk's `registration` once `ready` holds for it.
async fn registration_when(
    app: &TestApp,
    trunk: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    wait_until(Duration::from_secs(30), what, || async {
        let (status, body) = app
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/trunks/{trunk}"),
                Some(&app.admin),
                None,
            )
            .await;
        let registration = body["registration"].clone();
        if status == StatusCode::OK && ready(&registration) {
            Ok(registration)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("an RFC 3339 time: {value}"))
        .with_timezone(&Utc)
}

async fn metrics(app: &TestApp) -> String {
    app.client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Registers to a SIPp registrar over `transport`: challenge answered (MD5, qop=auth,
/// nc=1), 10 s granted, a refresh with the next nc on the same Call-ID; then the run ends
/// with the un-register `finish` triggers.
async fn t2_registers_answers_the_challenge_and_refreshes(
    transport: &str,
    name: &str,
    finish: impl AsyncFnOnce(&TestApp, &str),
) {
    let app = TestApp::spawn().await;
    let carrier = SippServer::start("carrier_registrar.xml", transport, None, &[]).await;
    let carrier_port = carrier.port;
    let trunk = create_carrier(&app, name, carrier_port, transport, "trunk-secret").await;

    let first = registration_when(&app, &trunk, "the trunk to be registered", |r| {
        r["state"] == "registered"
    })
    .await;
    assert_eq!(first["failures"], 0, "{first}");
    assert_eq!(first["last_error"], Value::Null, "{first}");
    let until = time(&first["registered_until"]);
    let updated = time(&first["updated_at"]);
    // The 200 OK granted 10 s (in its Contact's expires); a refresh is due at half.
    assert_eq!((until - updated).num_milliseconds(), 10_000, "{first}");
    let refresh_in = time(&first["next_attempt_at"]) - updated;
    assert_eq!(refresh_in.num_milliseconds(), 5_000, "{first}");
    let text = metrics(&app).await;
    assert!(
        text.contains(&format!(
            "leadline_sip_trunk_registered{{trunk=\"{name}\"}} 1"
        )),
        "{text}"
    );

    // The refresh: registered_until moves on.
    registration_when(&app, &trunk, "a refresh", |r| {
        r["state"] == "registered" && time(&r["registered_until"]) > until
    })
    .await;

    finish(&app, &trunk).await;
    let run = carrier.finish().await;
    assert!(run.success, "{}", run.messages);
    let registers = received(&run.messages, "REGISTER");
    assert_eq!(registers.len(), 4, "{}", run.messages);
    let first_request = &registers[0];
    // RFC 3261 §10.2: the registrar's domain, no user part.
    assert!(
        first_request.starts_with(&format!("REGISTER sip:127.0.0.1:{carrier_port}")),
        "{first_request}"
    );
    assert_eq!(header(first_request, "Authorization"), None);
    assert_eq!(
        header(first_request, "To"),
        Some("<sip:trunk-user@127.0.0.1>"),
        "AOR sip:<username>@<host>"
    );
    assert!(
        header(first_request, "Contact")
            .unwrap()
            .contains(&format!("sip:trunk-user@{}", app.sip_addr())),
        "{first_request}"
    );
    let answer = header(&registers[1], "Authorization").expect("credentials");
    for part in [
        "Digest username=\"trunk-user\"",
        "realm=\"carrier.test\"",
        "algorithm=MD5",
        "qop=auth",
        "nc=00000001",
    ] {
        assert!(answer.contains(part), "{part} in {answer}");
    }
    let refresh = header(&registers[2], "Authorization").expect("credentials on refresh");
    assert!(refresh.contains("nc=00000002"), "{refresh}");
    let call_ids: Vec<_> = registers.iter().map(|r| header(r, "Call-ID")).collect();
    assert!(call_ids.windows(2).all(|w| w[0] == w[1]), "{call_ids:?}");
    let cseqs: Vec<_> = registers
        .iter()
        .map(|r| header(r, "CSeq").unwrap())
        .collect();
    assert_eq!(
        cseqs,
        ["1 REGISTER", "2 REGISTER", "3 REGISTER", "4 REGISTER"]
    );
    assert_eq!(header(&registers[3], "Expires"), Some("0"));
    app.stop().await;
}

#[tokio::test]
async fn t2_carrier_registration_over_udp_then_unregister_on_delete() {
    t2_registers_answers_the_challenge_and_refreshes("udp", "Carrier UDP", async |app, trunk| {
        let (status, _) = app
            .request(
                reqwest::Method::DELETE,
                &format!("/api/v1/trunks/{trunk}"),
                Some(&app.admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    })
    .await;
}

#[tokio::test]
async fn t2_carrier_registration_over_tcp_then_unregister_on_register_false() {
    t2_registers_answers_the_challenge_and_refreshes("tcp", "Carrier TCP", async |app, trunk| {
        let (status, body) = app
            .request(
                reqwest::Method::PATCH,
                &format!("/api/v1/trunks/{trunk}"),
                Some(&app.admin),
                Some(json!({"register": false})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["registration"],
            Value::Null,
            "no longer registers: {body}"
        );
    })
    .await;
}

/// A registrar that refuses the account: `failed` with its reason, and retries that back
/// off (5 s, then 10 s, less jitter), not a flood.
#[tokio::test]
async fn t2_a_refused_account_fails_and_backs_off() {
    let app = TestApp::spawn().await;
    let carrier = SippServer::start("carrier_forbidden.xml", "udp", None, &[]).await;
    let trunk = create_carrier(&app, "Refusing carrier", carrier.port, "udp", "x").await;

    let failed = registration_when(&app, &trunk, "the first failure", |r| {
        r["state"] == "failed"
    })
    .await;
    assert_eq!(failed["failures"], 1, "{failed}");
    assert_eq!(
        failed["last_error"], "the carrier answered 403 Account Suspended",
        "{failed}"
    );
    let wait = time(&failed["next_attempt_at"]) - time(&failed["updated_at"]);
    assert!(
        (3_750..=5_000).contains(&wait.num_milliseconds()),
        "{failed}"
    );

    let again = registration_when(&app, &trunk, "the retry to fail too", |r| {
        r["failures"] == 2
    })
    .await;
    assert_eq!(again["state"], "failed");
    let wait = time(&again["next_attempt_at"]) - time(&again["updated_at"]);
    assert!(
        (7_500..=10_000).contains(&wait.num_milliseconds()),
        "{again}"
    );
    // The retry waited for its time (wall clock against the runtime's timer: a little
    // slack).
    let early = time(&failed["next_attempt_at"]) - time(&again["updated_at"]);
    assert!(early.num_milliseconds() < 50, "{failed} {again}");

    let text = metrics(&app).await;
    assert!(
        text.contains("leadline_sip_trunk_registered{trunk=\"Refusing carrier\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("leadline_sip_trunk_register_failures_total{trunk=\"Refusing carrier\"} 2"),
        "{text}"
    );
    let run = carrier.finish().await;
    assert!(run.success, "{}", run.messages);
    app.stop().await;
}

/// A wrong password: the second challenge ends the attempt as a failure (no loop of
/// REGISTERs answering challenges).
#[tokio::test]
async fn t2_a_second_challenge_means_wrong_credentials() {
    let app = TestApp::spawn().await;
    let carrier = SippServer::start("carrier_registrar.xml", "udp", None, &[]).await;
    let trunk = create_carrier(&app, "Wrong password", carrier.port, "udp", "wrong").await;
    let failed = registration_when(&app, &trunk, "the failure", |r| r["state"] == "failed").await;
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("refused the username or password"),
        "{failed}"
    );
    let run = carrier.finish().await;
    assert!(run.success, "{}", run.messages);
    assert_eq!(
        received(&run.messages, "REGISTER").len(),
        2,
        "{}",
        run.messages
    );
    app.stop().await;
}

/// One gateway registers to another as its carrier: the other's registrar offers SHA-256
/// first (RFC 8760) and checks the digest, so this is the SHA-256 path end to end.
#[tokio::test]
async fn t2_registers_to_another_leadline_registrar_with_sha256_offered_first() {
    let carrier = TestApp::spawn().await;
    carrier
        .post_ok(
            "/api/v1/users",
            json!({"name": "Trunk account", "email": "trunk@example.com", "role": "agent",
                   "extension": "201", "sip_password": "trunk-secret-201"}),
            StatusCode::CREATED,
        )
        .await;
    let app = TestApp::spawn().await;
    let trunk = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "Leadline carrier", "kind": "carrier", "host": "127.0.0.1",
                   "port": carrier.sip_addr().port(), "username": "201",
                   "password": "trunk-secret-201"}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let registered = registration_when(&app, &trunk, "the trunk to be registered", |r| {
        r["state"] == "registered"
    })
    .await;
    // Asked for the generic profile's 600 s; the registrar granted them.
    let granted = time(&registered["registered_until"]) - time(&registered["updated_at"]);
    assert_eq!(granted.num_seconds(), 600, "{registered}");
    let bindings = carrier.get_ok("/api/v1/registrations").await;
    let items = bindings["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{bindings}");
    assert_eq!(items[0]["aor"], "201");
    assert_eq!(
        items[0]["contact"],
        format!("sip:201@{}", app.sip_addr()),
        "{bindings}"
    );
    assert!(
        items[0]["user_agent"]
            .as_str()
            .unwrap()
            .starts_with("Leadline/")
    );
    app.stop().await;
    // Stopping un-registered the binding.
    assert!(
        carrier.get_ok("/api/v1/registrations").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    carrier.stop().await;
}

/// A gateway whose `generic` profile (the one of agents' phones) pings UDP bindings
/// every 5 s, the shortest interval a profile allows.
async fn spawn_with_fast_keepalive() -> TestApp {
    TestApp::spawn_with(|config, dir| {
        let profiles = dir.join("profiles");
        std::fs::create_dir_all(&profiles).unwrap();
        let generic = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("sip-profiles/generic.toml"),
        )
        .unwrap();
        assert!(generic.contains("udp_options_s = 30"));
        std::fs::write(
            profiles.join("generic.toml"),
            generic.replace("udp_options_s = 30", "udp_options_s = 5"),
        )
        .unwrap();
        config.sip_profiles = Some(profiles);
        // SIPp answers MD5 only, and only the first challenge.
        config.sip_digest = vec![
            leadline::sip::digest::Algorithm::Md5,
            leadline::sip::digest::Algorithm::Sha256,
        ];
    })
    .await
}

/// A phone registers over UDP from its port; the gateway then sends an OPTIONS to that
/// port (the NAT address the REGISTER came from) and the phone answers.
#[tokio::test]
async fn a_udp_binding_gets_keepalive_options_at_its_source() {
    let app = spawn_with_fast_keepalive().await;
    app.post_ok(
        "/api/v1/users",
        json!({"name": "Anna", "email": "anna@example.com", "role": "agent",
               "extension": "101", "sip_password": "correct-horse-1"}),
        StatusCode::CREATED,
    )
    .await;
    let port = free_port();
    let register = run_sipp_client(
        &app,
        "register.xml",
        port,
        &["-s", "101", "-au", "101", "-ap", "correct-horse-1"],
    )
    .await;
    assert!(register.success, "{}", register.messages);

    // The same port now answers like the phone would.
    let phone = SippServer::start("keepalive_uas.xml", "udp", Some(port), &[]).await;
    let run = phone.finish().await;
    assert!(run.success, "{}", run.messages);
    let options = received(&run.messages, "OPTIONS");
    let ping = options.first().expect("an OPTIONS");
    assert!(
        ping.starts_with(&format!("OPTIONS sip:101@127.0.0.1:{port}")),
        "addressed to the contact: {ping}"
    );
    assert!(
        header(ping, "Via")
            .unwrap()
            .contains(&app.sip_addr().to_string()),
        "{ping}"
    );
    let text = metrics(&app).await;
    assert!(
        text.contains("leadline_sip_keepalive_pings_total{result=\"answered\"}"),
        "{text}"
    );
    app.stop().await;
}

/// A binding whose address never answers (the phone is gone, or its NAT mapping closed)
/// is dropped after three unanswered pings, so calls no longer ring into the void.
#[tokio::test]
async fn a_udp_binding_that_never_answers_is_dropped() {
    let app = spawn_with_fast_keepalive().await;
    // Holds the port so nothing else answers; reads what arrives.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let source = silent.local_addr().unwrap();
    let store = &app.app.as_ref().unwrap().store;
    let now = chrono::Utc::now().timestamp_millis();
    let binding = leadline::store::RegistrationRecord {
        aor: "102".into(),
        owner_kind: "user".into(),
        owner_id: "nobody".into(),
        contact: format!("sip:102@{source}"),
        expires_at: now + 300_000,
        call_id: "gone-1".into(),
        cseq: 1,
        q: None,
        instance: None,
        user_agent: Some("gone".into()),
        transport: "udp".into(),
        source: source.to_string(),
        path: None,
    };
    store.save_bindings("102", &[binding], &[]).await.unwrap();
    assert_eq!(
        app.get_ok("/api/v1/registrations").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let call_ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = call_ids.clone();
    let listen = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, _)) = silent.recv_from(&mut buf).await {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let mut seen = seen.lock().unwrap();
            if let Some(id) = header(&text, "Call-ID")
                && !seen.iter().any(|c| c == id)
            {
                seen.push(id.to_owned());
            }
        }
    });
    wait_until(
        Duration::from_secs(60),
        "the dead binding to be dropped",
        || async {
            let items = app.get_ok("/api/v1/registrations").await["items"]
                .as_array()
                .unwrap()
                .len();
            if items == 0 { Ok(()) } else { Err(items) }
        },
    )
    .await;
    listen.abort();
    // Each ping is its own request (its retransmissions share one Call-ID).
    let pings = call_ids.lock().unwrap().len();
    assert!(pings >= 3, "{pings} pings before the drop");
    let text = metrics(&app).await;
    assert_eq!(
        metric(&text, "leadline_sip_keepalive_dropped_total"),
        Some(1.0),
        "{text}"
    );
    let unanswered = metric(
        &text,
        "leadline_sip_keepalive_pings_total{result=\"unanswered\"}",
    );
    assert!(unanswered >= Some(3.0), "{text}");
    app.stop().await;
}

/// The value of one series in Prometheus text, e.g. `name{label="x"}`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// One SIPp client run from `port` against the gateway, bounded.
async fn run_sipp_client(app: &TestApp, name: &str, port: u16, extra: &[&str]) -> SippRun {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("messages.log");
    let status = tokio::process::Command::new("sipp")
        .arg(app.sip_addr().to_string())
        .arg("-sf")
        .arg(scenario(name))
        .args(["-t", "u1", "-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-m", "1", "-nostdin", "-timeout", "10s", "-timeout_error"])
        .args(["-trace_msg", "-message_file"])
        .arg(&trace)
        .args(extra)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(30), status)
        .await
        .expect("SIPp finishes")
        .expect("sipp runs");
    SippRun {
        success: status.success(),
        messages: std::fs::read_to_string(&trace).unwrap_or_default(),
    }
}
