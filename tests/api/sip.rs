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

fn call_id_of(bytes: &[u8]) -> Option<String> {
    use rsipstack::sip::{HeadersExt as _, SipMessage};
    match SipMessage::try_from(bytes).ok()? {
        SipMessage::Response(r) => r.call_id_header().ok().map(|c| c.value().to_owned()),
        SipMessage::Request(r) => r.call_id_header().ok().map(|c| c.value().to_owned()),
    }
}

/// Sends one message over one transport; the answer carrying `call_id`, if any comes.
async fn exchange(
    gateway: std::net::SocketAddr,
    transport: &str,
    bytes: &[u8],
    call_id: &str,
) -> Option<Vec<u8>> {
    use bytes::BytesMut;
    use leadline::sip::message::{Frame, Limits, frame};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    if transport == "udp" {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
        socket.send_to(bytes, gateway).await.ok()?;
        let mut buf = vec![0u8; 65536];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            if call_id_of(&buf[..n]).as_deref() == Some(call_id) {
                return Some(buf[..n].to_vec());
            }
        }
        return None;
    }
    let mut stream = tokio::net::TcpStream::connect(gateway).await.ok()?;
    stream.write_all(bytes).await.ok()?;
    // Several messages in one stream are answered in any order: take the answer with
    // this message's Call-ID.
    let mut pending = BytesMut::new();
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read_buf(&mut pending)).await {
        if n == 0 {
            return None;
        }
        while let Frame::Message(len) = frame(&pending, &Limits::UDP) {
            let one = pending.split_to(len);
            if call_id_of(&one).as_deref() == Some(call_id) {
                return Some(one.to_vec());
            }
        }
    }
    None
}

/// Checks the gateway's answers to one corpus file over UDP and TCP.
async fn check_torture_message(
    gateway: std::net::SocketAddr,
    name: String,
    bytes: Vec<u8>,
) -> bool {
    use leadline::sip::endpoint::{ALLOW, lacks_from_tag};
    use leadline::sip::message::{Frame, Limits, frame, parse_message, rejection_response};
    use rsipstack::sip::{HeadersExt as _, SipMessage};

    // What the gateway should say, decided in-process by the same checks.
    let (expected_status, call_id) = match parse_message(&bytes, &Limits::UDP) {
        // No From tag (RFC 2543): refused by name, never dropped in silence.
        Ok(message) if lacks_from_tag(&message) => match &message {
            SipMessage::Request(request) => (
                Some(400),
                request.call_id_header().ok().map(|c| c.value().to_owned()),
            ),
            SipMessage::Response(_) => return false,
        },
        Ok(SipMessage::Request(request)) if request.method().to_string() != "ACK" => (
            None,
            request.call_id_header().ok().map(|c| c.value().to_owned()),
        ),
        Ok(_) => return false, // responses and ACKs get no answer
        Err(rejection) => match rejection_response(&bytes, &rejection, ALLOW) {
            Some(response) => (Some(rejection.status), call_id_of(&response)),
            None => return false, // dropped: nothing can be answered
        },
    };
    let Some(call_id) = call_id else { return false };
    for transport in ["udp", "tcp"] {
        let framed = frame(&bytes, &Limits::UDP);
        if transport == "tcp" && matches!(framed, Frame::Incomplete | Frame::KeepAlive(_)) {
            // Content-Length promises more than the file holds: a stream peer waits for
            // the rest, so there is nothing to see over TCP.
            continue;
        }
        let answer = exchange(gateway, transport, &bytes, &call_id).await;
        // Answers of the transaction layer carry our User-Agent; refusals built by the
        // message checks do not. An accepted request may still be refused by what
        // handles it (a registrar's 400 for a To that is no SIP URI, RFC 4475 §3.3.3).
        let via_stack = answer
            .as_deref()
            .is_none_or(|a| String::from_utf8_lossy(a).contains("User-Agent: Leadline/"));
        let status = answer
            .as_deref()
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|a| a.get(8..11))
            .and_then(|code| code.parse::<u16>().ok());
        if transport == "udp" {
            match expected_status {
                Some(expected) => assert_eq!(status, Some(expected), "{name} over udp"),
                None => assert!(
                    via_stack,
                    "{name} over udp: accepted but refused ({status:?})"
                ),
            }
            continue;
        }
        // Over a stream the framing decides first (§18.3: Content-Length is mandatory),
        // then the same checks on the framed message.
        match framed {
            Frame::Invalid(_) => {
                assert!(
                    status.is_none_or(|s| s >= 400),
                    "{name} over tcp: {status:?}"
                )
            }
            Frame::Incomplete | Frame::KeepAlive(_) => {}
            Frame::Message(n) => match parse_message(&bytes[..n], &Limits::UDP) {
                Ok(message) if lacks_from_tag(&message) => {
                    assert_eq!(status, Some(400), "{name} over tcp: no From tag")
                }
                Ok(_) => assert!(
                    via_stack,
                    "{name} over tcp: accepted but refused ({status:?})"
                ),
                Err(rejection) => assert!(
                    status.is_none_or(|s| s == rejection.status),
                    "{name} over tcp: expected {} got {status:?}",
                    rejection.status
                ),
            },
        }
    }
    true
}

/// Every torture message of the corpus, sent over UDP and over TCP: the gateway answers
/// a refused request with the status its message checks chose (the unit tests hold each
/// file to `expected.tsv`), answers accepted ones through the transaction layer, never
/// answers a response, and still answers OPTIONS afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_torture_message_over_udp_and_tcp_and_the_gateway_still_answers() {
    let app = TestApp::spawn_for_sipp().await;
    let gateway = app.sip_addr();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sip-torture");
    let mut tasks = Vec::new();
    for set in ["rfc4475", "rfc5118", "rfc5118-crlf-ersip", "sofia-sip"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(set))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| !matches!(p.extension().and_then(|e| e.to_str()), Some("tsv" | "md")))
            .collect();
        entries.sort();
        for path in entries {
            let name = format!("{set}/{}", path.file_name().unwrap().to_string_lossy());
            let bytes = std::fs::read(&path).unwrap();
            // Each file on its own sockets, all at once: waits overlap.
            tasks.push(tokio::spawn(check_torture_message(gateway, name, bytes)));
        }
    }
    assert!(tasks.len() > 100, "corpus copied: {}", tasks.len());
    let mut checked = 0;
    for task in tasks {
        if task.await.expect("no assertion failed") {
            checked += 1;
        }
    }
    assert!(checked > 50, "requests exercised: {checked}");
    let run = sipp(&app, "options.xml", "udp", &[]).await;
    assert!(run.success, "OPTIONS after the torture: {}", run.messages);
    app.stop().await;
}

/// RFC 3261 §17.2.2: a retransmitted request is absorbed by its server transaction,
/// which resends the same response; the request is handled once.
#[tokio::test]
async fn udp_retransmission_is_absorbed_by_the_transaction() {
    let app = TestApp::spawn_for_sipp().await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-retrans-1\r\n\
         From: <sip:probe@{local}>;tag=r1\r\nTo: <sip:{gw}>\r\nCall-ID: retrans-1\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        gw = app.sip_addr()
    );
    let mut answers = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..2 {
        socket
            .send_to(options.as_bytes(), app.sip_addr())
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let to_tag = |a: &str| {
        a.lines()
            .find(|l| l.to_ascii_lowercase().starts_with("to:"))
            .map(str::to_owned)
    };
    assert!(answers[0].starts_with("SIP/2.0 200"), "{}", answers[0]);
    // The same response again (same To tag): the transaction answered, not a second run
    // of the handler, which would pick a new tag.
    assert_eq!(to_tag(&answers[0]), to_tag(&answers[1]));
    app.stop().await;
}

/// RFC 3261 §8.2.2.3, §16.3 and §8.2.2.2 over the wire: an unknown required extension
/// gets 420 with `Unsupported`, an INVITE with no hops left 483, and the same INVITE
/// arriving again by another path (another branch) 482.
#[tokio::test]
async fn unsupported_extensions_hop_exhaustion_and_merged_requests_are_refused() {
    let app = TestApp::spawn_for_sipp().await;
    let gw = app.sip_addr();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let request = |method: &str, branch: &str, call_id: &str, extra: &str| {
        format!(
            "{method} sip:+4930901820@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\n\
             From: <sip:+4917612345678@{local}>;tag=adm1\r\nTo: <sip:+4930901820@{gw}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:carrier@{local}>\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        )
    };
    let mut buf = vec![0u8; 65536];
    let mut ask = async |text: String| {
        socket.send_to(text.as_bytes(), gw).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };

    let answer = ask(request(
        "OPTIONS",
        "z9hG4bK-adm-1",
        "adm-require",
        "Max-Forwards: 70\r\nRequire: nothingSupportsThis\r\n",
    ))
    .await;
    assert!(answer.starts_with("SIP/2.0 420"), "{answer}");
    assert!(
        answer.contains("Unsupported: nothingSupportsThis"),
        "{answer}"
    );

    let answer = ask(request(
        "INVITE",
        "z9hG4bK-adm-2",
        "adm-hops",
        "Max-Forwards: 0\r\n",
    ))
    .await;
    assert!(answer.starts_with("SIP/2.0 483"), "{answer}");

    // OPTIONS with no hops left ends here, so it is answered (RFC 4475 §3.3.7).
    let answer = ask(request(
        "OPTIONS",
        "z9hG4bK-adm-3",
        "adm-zeromf",
        "Max-Forwards: 0\r\n",
    ))
    .await;
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");

    let first = ask(request(
        "INVITE",
        "z9hG4bK-adm-4",
        "adm-merge",
        "Max-Forwards: 70\r\n",
    ))
    .await;
    assert!(!first.starts_with("SIP/2.0 482"), "{first}");
    // Skip whatever else the first INVITE draws (100 Trying, its final answer).
    let merged = request(
        "INVITE",
        "z9hG4bK-adm-5",
        "adm-merge",
        "Max-Forwards: 69\r\n",
    );
    socket.send_to(merged.as_bytes(), gw).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut saw_482 = false;
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.starts_with("SIP/2.0 482") && text.contains("z9hG4bK-adm-5") {
            saw_482 = true;
            break;
        }
    }
    assert!(saw_482, "the merged INVITE is refused with 482");
    app.stop().await;
}

/// Reads from a TCP stream until `needle` appears or the deadline passes.
async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str) -> String {
    use tokio::io::AsyncReadExt as _;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// TCP carries messages larger than a datagram up to `sip_tcp_max_message` (default
/// 256 KiB); past it the gateway answers 413 (the Content-Length alone tells) and closes,
/// never buffering without bound.
#[tokio::test]
async fn tcp_accepts_large_messages_up_to_the_configured_limit() {
    use tokio::io::AsyncWriteExt as _;
    let app = TestApp::spawn_for_sipp().await;
    let gw = app.sip_addr();
    let options = |call_id: &str, body_len: usize| {
        let body = "x".repeat(body_len);
        format!(
            "OPTIONS sip:{gw} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-{call_id}\r\n\
             From: <sip:probe@127.0.0.1>;tag=big\r\nTo: <sip:{gw}>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\n\
             Content-Length: {body_len}\r\n\r\n{body}"
        )
    };
    let mut stream = tokio::net::TcpStream::connect(gw).await.unwrap();
    stream
        .write_all(options("tcp-big-100k", 100 * 1024).as_bytes())
        .await
        .unwrap();
    let answer = read_until(&mut stream, "tcp-big-100k").await;
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");

    let mut stream = tokio::net::TcpStream::connect(gw).await.unwrap();
    // The peer may see the connection close before it has written everything.
    let _ = stream
        .write_all(options("tcp-big-300k", 300 * 1024).as_bytes())
        .await;
    let answer = read_until(&mut stream, "tcp-big-300k").await;
    assert!(answer.starts_with("SIP/2.0 413"), "{answer}");
    app.stop().await;
}

/// T2: a PBX trunk registers with its trunk credentials like a phone
/// does, and its registration is listed as the trunk's; INVITEs are taken only from a
/// recognised trunk (by `allowed_ips` or by the registration's source), others get 403.
#[tokio::test]
async fn a_pbx_trunk_registers_with_its_credentials_and_only_trunks_may_invite() {
    let app = TestApp::spawn_for_sipp().await;
    let gw = app.sip_addr();
    let invite_from = async |call_id: &str| {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let invite = format!(
            "INVITE sip:+4930901820@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}\r\n\
             From: <sip:+4917612345678@{local}>;tag=t2\r\nTo: <sip:+4930901820@{gw}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@{local}>\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        socket.send_to(invite.as_bytes(), gw).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Ok((n, _))) =
            tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !text.starts_with("SIP/2.0 100") {
                return text;
            }
        }
        panic!("no final answer to {call_id}");
    };

    // Not a trunk: an agent's phone placing a call must authenticate first (407).
    let answer = invite_from("t2-stranger").await;
    assert!(answer.starts_with("SIP/2.0 407"), "{answer}");
    assert!(answer.contains("Proxy-Authenticate: Digest"), "{answer}");

    // An employee's extension is no trunk username: the registrar could not tell them apart.
    agent_with_sip_password(&app).await;
    let clash = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "Clash", "kind": "pbx", "username": "101", "password": "x-secret-1"}),
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(clash["error"]["code"], "username_taken");
    let trunk = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "Office PBX", "kind": "pbx", "profile": "asterisk",
                   "username": "office-pbx", "password": "trunk-secret-9"}),
            StatusCode::CREATED,
        )
        .await;
    let trunk_id = trunk["id"].as_str().unwrap().to_owned();
    // Wrong trunk password: challenged again like any wrong password.
    let run = sipp(
        &app,
        "register.xml",
        "udp",
        &["-s", "office-pbx", "-au", "office-pbx", "-ap", "not-it"],
    )
    .await;
    assert!(!run.success, "{}", run.messages);
    let run = sipp(
        &app,
        "register.xml",
        "udp",
        &[
            "-s",
            "office-pbx",
            "-au",
            "office-pbx",
            "-ap",
            "trunk-secret-9",
        ],
    )
    .await;
    assert!(run.success, "{}", run.messages);
    let registrations = app.get_ok("/api/v1/registrations").await;
    let items = registrations["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{registrations}");
    assert_eq!(items[0]["trunk"], json!(trunk_id));
    assert_eq!(items[0]["user"], json!(null));
    assert_eq!(items[0]["aor"], "office-pbx");

    // Registered from 127.0.0.1: requests from there are the trunk's now, so the INVITE
    // gets as far as the number lookup (none is configured here: 404, not 403).
    let answer = invite_from("t2-registered").await;
    assert!(answer.starts_with("SIP/2.0 404"), "{answer}");
    app.stop().await;
}

/// T2: a trunk that does not register is recognised by its `allowed_ips`.
#[tokio::test]
async fn a_trunk_is_recognised_by_allowed_ips() {
    let app = TestApp::spawn_for_sipp().await;
    let trunk = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "Carrier", "kind": "carrier", "profile": "sipgate",
                   "host": "192.0.2.1", "register": false, "allowed_ips": ["127.0.0.0/8"]}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(trunk["allowed_ips"], json!(["127.0.0.0/8"]));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let gw = app.sip_addr();
    let invite = format!(
        "INVITE sip:+4930901820@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-allowed\r\n\
         From: <sip:+4917612345678@{local}>;tag=t2a\r\nTo: <sip:+4930901820@{gw}>\r\n\
         Call-ID: t2-allowed\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{local}>\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    socket.send_to(invite.as_bytes(), gw).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut last = String::new();
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
        last = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !last.starts_with("SIP/2.0 100") {
            break;
        }
    }
    // Recognised: past the trunk check to the number lookup (none configured: 404).
    assert!(last.starts_with("SIP/2.0 404"), "{last}");
    app.stop().await;
}
