//! The SIP side driven by a real SIPp (Debian `sip-tester`): OPTIONS, REGISTER with
//! digest, lockout, over UDP and TCP.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::free_port;
use crate::helpers::TestApp;

/// What one bounded SIPp run did.
struct SippRun {
    success: bool,
    /// Every message sent and received (`-trace_msg`).
    messages: String,
}

/// Runs one SIPp client scenario (one call) against the gateway, with deadlines.
async fn sipp(app: &TestApp, scenario: &str, transport: &str, extra: &[&str]) -> SippRun {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("messages.log");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/sipp")
        .join(scenario);
    let transport_flag = match transport {
        "tcp" => "t1",
        _ => "u1",
    };
    let mut command = tokio::process::Command::new("sipp");
    command
        .arg(app.sip_addr().to_string())
        .arg("-sf")
        .arg(&scenario)
        .args([
            "-m",
            "1",
            "-t",
            transport_flag,
            "-nostdin",
            "-timeout",
            "10s",
        ])
        .args(["-timeout_error", "-trace_msg", "-message_file"])
        .arg(&trace)
        .args(["-i", "127.0.0.1", "-p", &free_port().to_string()])
        .args(extra)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let status = tokio::time::timeout(Duration::from_secs(30), command.status())
        .await
        .expect("SIPp finishes within 30 s")
        .expect("sipp runs (scripts/test installs sip-tester)");
    SippRun {
        success: status.success(),
        messages: std::fs::read_to_string(&trace).unwrap_or_default(),
    }
}

async fn agent_with_sip_password(app: &TestApp) -> String {
    let user = app
        .post_ok(
            "/api/v1/users",
            json!({"name": "Anna", "email": "anna@example.com", "role": "agent",
                   "extension": "101", "sip_password": "correct-horse-1"}),
            StatusCode::CREATED,
        )
        .await;
    user["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn options_is_answered_over_udp_and_tcp() {
    let app = TestApp::spawn_for_sipp().await;
    for transport in ["udp", "tcp"] {
        let run = sipp(&app, "options.xml", transport, &[]).await;
        assert!(run.success, "{transport}: {}", run.messages);
        assert!(run.messages.contains("SIP/2.0 200 OK"), "{}", run.messages);
        assert!(
            run.messages
                .contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER")
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn register_with_digest_stores_the_binding_over_udp_and_tcp() {
    let app = TestApp::spawn_for_sipp().await;
    let anna = agent_with_sip_password(&app).await;
    for transport in ["udp", "tcp"] {
        let run = sipp(
            &app,
            "register.xml",
            transport,
            &["-s", "101", "-au", "101", "-ap", "correct-horse-1"],
        )
        .await;
        assert!(run.success, "{transport}: {}", run.messages);
        assert!(run.messages.contains("SIP/2.0 401 Unauthorized"));
        assert!(run.messages.contains("SIP/2.0 200 OK"));
        assert!(run.messages.contains(";expires=300"), "{}", run.messages);
    }
    let registrations = app.get_ok("/api/v1/registrations").await;
    let items = registrations["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "one binding per device: {registrations}");
    for item in items {
        assert_eq!(item["user"], json!(anna));
        assert_eq!(item["aor"], "101");
        assert_eq!(item["user_agent"], "SIPp");
        assert!(item["expires_in_s"].as_i64().unwrap() > 290);
    }
    let transports: Vec<&str> = items
        .iter()
        .map(|i| i["transport"].as_str().unwrap())
        .collect();
    assert!(
        transports.contains(&"udp") && transports.contains(&"tcp"),
        "{transports:?}"
    );
    app.stop().await;
}

/// A scanner must not brute-force passwords: after repeated failures from one source the
/// source is refused (403) for a while.
#[tokio::test]
async fn wrong_password_is_challenged_then_the_source_is_locked_out() {
    let app = TestApp::spawn_for_sipp().await;
    agent_with_sip_password(&app).await;
    let mut last = String::new();
    let mut answers = Vec::new();
    for _ in 0..6 {
        let run = sipp(
            &app,
            "register.xml",
            "udp",
            &["-s", "101", "-au", "101", "-ap", "wrong-password"],
        )
        .await;
        assert!(!run.success, "a wrong password never registers");
        let answer = if run.messages.contains("SIP/2.0 403 Forbidden") {
            403
        } else {
            401
        };
        answers.push(answer);
        last = run.messages;
    }
    assert_eq!(answers[..4], [401, 401, 401, 401], "{answers:?}");
    assert_eq!(answers[5], 403, "{answers:?}: {last}");
    // The right password from the same source is refused while locked out.
    let run = sipp(
        &app,
        "register.xml",
        "udp",
        &["-s", "101", "-au", "101", "-ap", "correct-horse-1"],
    )
    .await;
    assert!(
        run.messages.contains("SIP/2.0 403 Forbidden"),
        "{}",
        run.messages
    );
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("leadline_sip_lockouts_total"), "{metrics}");
    app.stop().await;
}

/// No enumeration: an unknown extension gets exactly the answer a known one with a wrong
/// password gets.
#[tokio::test]
async fn unknown_extension_looks_like_a_wrong_password() {
    let app = TestApp::spawn_for_sipp().await;
    agent_with_sip_password(&app).await;
    let known = sipp(
        &app,
        "register.xml",
        "udp",
        &["-s", "101", "-au", "101", "-ap", "nope"],
    )
    .await;
    let unknown = sipp(
        &app,
        "register.xml",
        "udp",
        &["-s", "999", "-au", "999", "-ap", "nope"],
    )
    .await;
    let final_answer = |messages: &str| {
        messages
            .lines()
            .filter(|l| l.starts_with("SIP/2.0 "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        final_answer(&known.messages),
        final_answer(&unknown.messages)
    );
    app.stop().await;
}
