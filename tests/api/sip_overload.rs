//! Overload is refused early: past `max_calls_in_setup` a carrier's new INVITE gets 503
//! with Retry-After before any lookup (so no call log entry), the calls admitted finish
//! normally, and new calls are admitted again once they have their answers. While the
//! gateway is behind, the receive loop refuses new calls the same way before they are
//! queued, and lets every other request through. The carrier
//! and the agent's phone are raw UDP sockets here, so the test decides exactly when each
//! call leaves set-up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::calls_sip::{NUMBER, Phone, line};
use crate::common::wait_until;
use crate::helpers::TestApp;

/// How long any one answer may take before the test fails (a deadline, not a figure).
const ANSWER: Duration = Duration::from_secs(15);

/// The header lines of `message` named `name` (full names: the gateway writes those).
fn headers<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    message
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .collect()
}

fn header<'a>(message: &'a str, name: &str) -> &'a str {
    headers(message, name)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no {name} in {message}"))
}

fn value<'a>(message: &'a str, name: &str) -> &'a str {
    header(message, name)
        .split_once(':')
        .map_or("", |(_, v)| v.trim())
}

fn to_tag(message: &str) -> Option<String> {
    let to = value(message, "To");
    to.split(';')
        .find_map(|p| p.trim().strip_prefix("tag="))
        .map(str::to_owned)
}

fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=test 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    )
}

/// A response to `request` copied as RFC 3261 §8.2.6.2 says, with our To tag.
fn response(request: &str, status: &str, tag: &str, contact: SocketAddr, body: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for via in headers(request, "Via") {
        out.push_str(via.trim_end());
        out.push_str("\r\n");
    }
    let to = header(request, "To").trim_end();
    let to = if to.contains(";tag=") {
        to.to_owned()
    } else {
        format!("{to};tag={tag}")
    };
    out.push_str(&format!(
        "{}\r\n{to}\r\n{}\r\n{}\r\nContact: <sip:101@{contact}>\r\n",
        header(request, "From").trim_end(),
        header(request, "Call-ID").trim_end(),
        header(request, "CSeq").trim_end(),
    ));
    if body.is_empty() {
        out.push_str("Content-Length: 0\r\n\r\n");
    } else {
        out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    out
}

/// The agent's phone on the port it registered from: every INVITE is handed to the test,
/// which answers it; BYE and keep-alive OPTIONS are answered 200 at once.
struct RawPhone {
    socket: Arc<UdpSocket>,
    invites: mpsc::UnboundedReceiver<(String, SocketAddr)>,
    /// Call-IDs already handed out: UDP retransmissions of an INVITE are skipped.
    seen: std::collections::HashSet<String>,
}

impl RawPhone {
    async fn on(port: u16) -> RawPhone {
        let socket = Arc::new(
            UdpSocket::bind(("127.0.0.1", port))
                .await
                .expect("the phone's port is free again after SIPp registered from it"),
        );
        let (tx, invites) = mpsc::unbounded_channel();
        let reader = socket.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            let local = reader.local_addr().unwrap();
            while let Ok((n, from)) = reader.recv_from(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.starts_with("INVITE ") {
                    if tx.send((text, from)).is_err() {
                        return;
                    }
                } else if text.starts_with("BYE ") || text.starts_with("OPTIONS ") {
                    let ok = response(&text, "200 OK", "phone", local, "");
                    let _ = reader.send_to(ok.as_bytes(), from).await;
                }
            }
        });
        RawPhone {
            socket,
            invites,
            seen: Default::default(),
        }
    }

    async fn next_invite(&mut self) -> (String, SocketAddr) {
        let deadline = tokio::time::Instant::now() + ANSWER;
        loop {
            let invite = tokio::time::timeout_at(deadline, self.invites.recv())
                .await
                .expect("the phone is rung within the deadline")
                .expect("the phone's reader runs");
            if self.seen.insert(value(&invite.0, "Call-ID").to_owned()) {
                return invite;
            }
        }
    }

    async fn answer(&self, invite: &(String, SocketAddr), status: &str, body: &str) {
        let local = self.socket.local_addr().unwrap();
        // A tag is a token: the Call-ID's part before any '@'.
        let call_id = value(&invite.0, "Call-ID");
        let tag = format!("ph-{}", call_id.split('@').next().unwrap_or("x"));
        let text = response(&invite.0, status, &tag, local, body);
        self.socket
            .send_to(text.as_bytes(), invite.1)
            .await
            .unwrap();
    }
}

/// The carrier trunk (127.0.0.1 is its allowed address), one socket for all its calls.
struct Carrier {
    socket: UdpSocket,
    local: SocketAddr,
    gateway: SocketAddr,
}

impl Carrier {
    async fn new(gateway: SocketAddr) -> Carrier {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        Carrier {
            socket,
            local,
            gateway,
        }
    }

    fn dialog_lines(&self, call_id: &str, caller: &str) -> String {
        format!(
            "From: <sip:{caller}@{local}>;tag=c-{call_id}\r\nCall-ID: {call_id}\r\n",
            local = self.local
        )
    }

    async fn invite(&self, call_id: &str, caller: &str) {
        let body = sdp(40_000);
        let text = format!(
            "INVITE sip:{NUMBER}@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}\r\n\
             {dialog}To: <sip:{NUMBER}@{gw}>\r\nCSeq: 1 INVITE\r\nContact: <sip:carrier@{local}>\r\n\
             Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{body}",
            gw = self.gateway,
            local = self.local,
            dialog = self.dialog_lines(call_id, caller),
            len = body.len(),
        );
        self.socket
            .send_to(text.as_bytes(), self.gateway)
            .await
            .unwrap();
    }

    /// The next response for `call_id` that is not 100 or 180/183.
    async fn final_answer(&self, call_id: &str) -> String {
        let deadline = tokio::time::Instant::now() + ANSWER;
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, _) = tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("a final answer to {call_id} within the deadline"))
                .unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let provisional = ["SIP/2.0 100", "SIP/2.0 180", "SIP/2.0 183"]
                .iter()
                .any(|p| text.starts_with(p));
            if text.starts_with("SIP/2.0 ")
                && !provisional
                && value(&text, "Call-ID") == call_id
                && value(&text, "CSeq").ends_with("INVITE")
            {
                return text;
            }
        }
    }

    /// A BYE in a dialog nobody has (a To tag of ours that was never given out) and its
    /// answer.
    async fn stray_bye(&self, call_id: &str, caller: &str) -> String {
        let text = format!(
            "BYE sip:{NUMBER}@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-bye-{call_id}\r\n\
             {dialog}To: <sip:{NUMBER}@{gw}>;tag=nobody\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            gw = self.gateway,
            local = self.local,
            dialog = self.dialog_lines(call_id, caller),
        );
        self.socket
            .send_to(text.as_bytes(), self.gateway)
            .await
            .unwrap();
        self.bye_answer(call_id).await
    }

    /// The answer to the call's BYE (CSeq 2), waited for at most `ANSWER`.
    async fn bye_answer(&self, call_id: &str) -> String {
        let deadline = tokio::time::Instant::now() + ANSWER;
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, _) = tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("the BYE of {call_id} answered within the deadline"))
                .unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if value(&text, "Call-ID") == call_id && value(&text, "CSeq") == "2 BYE" {
                return text;
            }
        }
    }

    /// ACK of a final answer (a 2xx gets its own transaction, anything else shares the
    /// INVITE's branch), then for a 2xx a BYE whose 200 is awaited.
    async fn ack_and_hang_up(&self, call_id: &str, caller: &str, answer: &str) {
        let success = answer.starts_with("SIP/2.0 2");
        let branch = if success {
            format!("z9hG4bK-ack-{call_id}")
        } else {
            format!("z9hG4bK-{call_id}")
        };
        let tag = to_tag(answer)
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let to = format!("To: <sip:{NUMBER}@{}>{tag}\r\n", self.gateway);
        let request = |method: &str, branch: &str, cseq: u32| {
            format!(
                "{method} sip:{NUMBER}@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\n\
                 {dialog}{to}CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                gw = self.gateway,
                local = self.local,
                dialog = self.dialog_lines(call_id, caller),
            )
        };
        self.socket
            .send_to(request("ACK", &branch, 1).as_bytes(), self.gateway)
            .await
            .unwrap();
        if !success {
            return;
        }
        self.socket
            .send_to(
                request("BYE", &format!("z9hG4bK-bye-{call_id}"), 2).as_bytes(),
                self.gateway,
            )
            .await
            .unwrap();
        let text = self.bye_answer(call_id).await;
        assert!(text.starts_with("SIP/2.0 200"), "{text}");
    }
}

async fn calls(app: &TestApp) -> Vec<Value> {
    app.get_ok("/api/v1/calls").await["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_a_new_call_gets_503_and_admitted_calls_finish_then_new_ones_are_admitted() {
    let app = TestApp::spawn_for_sipp_with(|config| config.max_calls_in_setup = 2).await;
    let line = line(&app, 30).await;
    // One phone takes every call of the test: a shared line, not a person who takes one
    // call at a time (else the queue would hold the second caller for it).
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/users/{}", line.anna),
            Some(&app.admin),
            Some(serde_json::json!({"max_calls": 10})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let registered = Phone::register(&app, "101", "pw-101-secret").await;
    let mut phone = RawPhone::on(registered.port).await;
    let carrier = Carrier::new(app.sip_addr()).await;

    // Two calls ring the agent's phone: both are in set-up.
    carrier.invite("ovl-a", "+4917611110001").await;
    carrier.invite("ovl-b", "+4917611110002").await;
    let first = phone.next_invite().await;
    let second = phone.next_invite().await;
    for invite in [&first, &second] {
        phone.answer(invite, "180 Ringing", "").await;
    }
    app.wait_for_metric_line("leadline_sip_calls_in_setup 2", "two calls in set-up")
        .await;

    // The third is refused at once, with the reason, and never reaches the call log.
    carrier.invite("ovl-c", "+4917611110003").await;
    let refused = carrier.final_answer("ovl-c").await;
    assert!(
        refused.starts_with("SIP/2.0 503"),
        "past the bound: {refused}"
    );
    assert_eq!(value(&refused, "Retry-After"), "1", "{refused}");
    assert!(
        value(&refused, "Warning").contains("too many calls in set-up"),
        "{refused}"
    );
    carrier
        .ack_and_hang_up("ovl-c", "+4917611110003", &refused)
        .await;

    // The admitted calls are answered and end normally.
    for invite in [&first, &second] {
        phone.answer(invite, "200 OK", &sdp(41_000)).await;
    }
    for (call_id, caller) in [("ovl-a", "+4917611110001"), ("ovl-b", "+4917611110002")] {
        let answer = carrier.final_answer(call_id).await;
        assert!(answer.starts_with("SIP/2.0 200"), "{call_id}: {answer}");
        carrier.ack_and_hang_up(call_id, caller, &answer).await;
    }
    app.wait_for_metric_line(
        "leadline_sip_calls_in_setup 0",
        "both answered: none in set-up",
    )
    .await;

    // Recovery: the next call is admitted and rings the phone again.
    carrier.invite("ovl-d", "+4917611110004").await;
    let fourth = phone.next_invite().await;
    phone.answer(&fourth, "486 Busy Here", "").await;
    let answer = carrier.final_answer("ovl-d").await;
    assert!(
        !answer.starts_with("SIP/2.0 503"),
        "admitted again once the others had their answers: {answer}"
    );
    carrier
        .ack_and_hang_up("ovl-d", "+4917611110004", &answer)
        .await;

    let logged = wait_until(ANSWER, "the admitted calls logged as ended", || async {
        let calls = calls(&app).await;
        (calls.len() == 3 && calls.iter().all(|c| c["ended_at"].is_string())).then_some(calls)
    })
    .await;
    assert!(
        logged.iter().all(|c| c["call_id"] != "ovl-c"),
        "a refused call leaves no trace in the call log: {logged:?}"
    );
    for call_id in ["ovl-a", "ovl-b"] {
        let call = logged.iter().find(|c| c["call_id"] == call_id).unwrap();
        assert_eq!(call["outcome"], "answered", "{call}");
    }
    let metrics = app.metrics().await.unwrap_or_default();
    let refusals: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("leadline_sip_refused_total") && l.contains("\"overload\""))
        .collect();
    assert_eq!(refusals.len(), 1, "{metrics}");
    assert!(refusals[0].contains("status=\"503\""), "{refusals:?}");
    assert!(refusals[0].ends_with(" 1"), "{refusals:?}");
    app.stop().await;
}

/// While the gateway is behind, the receive loop answers a new call with a stateless 503
/// (Retry-After, a To tag, the reason) before the transaction layer: nothing is queued,
/// nothing logged. Everything else passes: the phone's REGISTER, an in-dialog BYE (481
/// from the dialog layer, not 503), OPTIONS. "Behind" is forced by a lag bound of 1 µs,
/// which every sample of the runtime's lag exceeds; the shedding rule's own thresholds
/// are unit-tested in `admission::shed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_new_call_is_refused_before_it_is_queued_and_other_requests_pass() {
    let app =
        TestApp::spawn_for_sipp_with(|config| config.sip_shed_lag = Duration::from_micros(1)).await;
    line(&app, 30).await;
    // REGISTER is never shed at the edge.
    let _registered = Phone::register(&app, "101", "pw-101-secret").await;
    crate::common::wait_until(ANSWER, "the first lag sample", || async {
        app.metrics()
            .await?
            .lines()
            .any(|l| {
                l.strip_prefix("leadline_sip_runtime_lag_seconds ")
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0)
            })
            .then_some(())
    })
    .await;
    let carrier = Carrier::new(app.sip_addr()).await;

    carrier.invite("behind-a", "+4917611110011").await;
    let refused = carrier.final_answer("behind-a").await;
    assert!(refused.starts_with("SIP/2.0 503"), "{refused}");
    assert_eq!(value(&refused, "Retry-After"), "1", "{refused}");
    assert!(
        value(&refused, "Warning").contains("the gateway is behind"),
        "{refused}"
    );
    assert!(
        to_tag(&refused).is_some(),
        "a final answer has a To tag: {refused}"
    );
    carrier
        .ack_and_hang_up("behind-a", "+4917611110011", &refused)
        .await;

    let bye = carrier.stray_bye("behind-b", "+4917611110012").await;
    assert!(
        bye.starts_with("SIP/2.0 481"),
        "in-dialog requests pass: {bye}"
    );

    let metrics = app.metrics().await.unwrap_or_default();
    let behind: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("leadline_sip_refused_total") && l.contains("\"behind\""))
        .collect();
    assert_eq!(behind.len(), 1, "{metrics}");
    assert!(behind[0].contains("status=\"503\""), "{behind:?}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("leadline_sip_calls_in_setup ") && l.ends_with(" 0"))
            || !metrics.contains("leadline_sip_calls_in_setup "),
        "the refused call was never admitted: {metrics}"
    );
    assert!(calls(&app).await.is_empty(), "nothing reaches the call log");
    app.stop().await;
}
