//! bench/console-card: how long after the carrier's INVITE the agent's call card is in
//! the browser. Run by `bench/console-card` against a gateway it started (release build);
//! this program sets the gateway up over the API, registers a SIPp phone for the agent,
//! signs the agent in with headless Chromium (tests/common/browser.rs), and places calls
//! with SIPp as the carrier, one at a time, each from a new number (so each creates a
//! lead before the phone rings, T4 automatic).
//!
//! For each call: the cards of earlier calls are closed, the harness's in-page
//! MutationObserver watch for `.call-card` is installed, SIPp places the call, and the
//! INVITE's send time is read from SIPp's message trace (microseconds, the machine's
//! clock). The card's time is the page's clock at the DOM insertion (`dom`) and at the
//! next animation frame (`frame`, the closest to "on screen"). Both clocks are the same
//! system clock.
//!
//! Usage: console_card BASE_URL SIP_ADDR ADMIN_TOKEN [CALLS]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use chrono::{Local, NaiveDateTime, TimeZone};
use serde_json::{Value, json};

use common::browser::{Browser, DEADLINE};

const NUMBER: &str = "+4930901820";
const PASSWORD: &str = "bench-agent-pw";

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("the gateway answers");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }
}

fn sipp_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sipp"))
}

/// One SIPp run to the end; its message trace.
async fn sipp(args: &[String], trace: &Path) -> String {
    let status = tokio::process::Command::new("sipp")
        .args(args)
        .args(["-t", "u1", "-nostdin", "-timeout", "30s", "-timeout_error"])
        .args(["-trace_msg", "-message_file"])
        .arg(trace)
        .args(["-i", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .expect("sipp runs");
    let seen = std::fs::read_to_string(trace).unwrap_or_default();
    assert!(status.success(), "sipp {args:?} failed: {seen}");
    seen
}

/// When SIPp sent its first INVITE, from the trace's "----- 2026-12-07 03:53:28.699772"
/// line before it (local time).
fn invite_sent(trace: &str) -> SystemTime {
    let mut stamp = None;
    for line in trace.lines() {
        if let Some(rest) = line.strip_prefix("-----------------------------------------------") {
            stamp = NaiveDateTime::parse_from_str(rest.trim(), "%Y-%m-%d %H:%M:%S%.f").ok();
        } else if line.starts_with("INVITE sip:") {
            let naive = stamp.expect("a time stamp before the INVITE");
            let local = Local
                .from_local_datetime(&naive)
                .single()
                .expect("an unambiguous local time");
            return SystemTime::from(local);
        }
    }
    panic!("no INVITE sent in the trace: {trace}");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, sip, token, rest @ ..] = args.as_slice() else {
        eprintln!("usage: console_card BASE_URL SIP_ADDR ADMIN_TOKEN [CALLS]");
        std::process::exit(2);
    };
    let calls: usize = rest
        .first()
        .map_or(50, |n| n.parse().expect("CALLS is a number"));
    let api = Api {
        base: base.clone(),
        token: token.clone(),
        http: reqwest::Client::new(),
    };
    let anna = api
        .post(
            "/users",
            json!({"name": "Anna Berger", "email": "anna@example.com", "role": "agent",
                   "extension": "101", "sip_password": "pw-101-secret", "password": PASSWORD}),
        )
        .await["id"]
        .clone();
    let queue = api
        .post("/queues", json!({"name": "Sales", "members": [anna]}))
        .await["id"]
        .clone();
    let trunk = api
        .post(
            "/trunks",
            json!({"name": "Carrier", "kind": "carrier", "host": "127.0.0.1",
                   "register": false, "allowed_ips": ["127.0.0.1"]}),
        )
        .await["id"]
        .clone();
    api.post(
        "/numbers",
        json!({"number": NUMBER, "default_country": "DE", "queue": queue, "trunk": trunk,
               "ring_timeout_s": 20}),
    )
    .await;

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(sipp_dir().join("g711a.pcap"), dir.path().join("g711a.pcap")).ok();
    // The agent's phone: registered, then answering every call of the run.
    let phone_port = common::free_port();
    sipp(
        &[
            sip.clone(),
            "-sf".into(),
            sipp_dir().join("register.xml").display().to_string(),
            "-m".into(),
            "1".into(),
            "-p".into(),
            phone_port.to_string(),
            "-s".into(),
            "101".into(),
            "-au".into(),
            "101".into(),
            "-ap".into(),
            "pw-101-secret".into(),
        ],
        &dir.path().join("register.log"),
    )
    .await;
    let mut phone = tokio::process::Command::new("sipp")
        .arg("-sf")
        .arg(sipp_dir().join("agent_answer_many.xml"))
        .args([
            "-p",
            &phone_port.to_string(),
            "-t",
            "u1",
            "-nostdin",
            "-i",
            "127.0.0.1",
        ])
        .args(["-mp", &common::free_udp_block().to_string()])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp runs");

    let browser = Browser::start(base).await;
    browser.sign_in("anna@example.com", PASSWORD).await;
    browser.goto("/#/leads").await;
    browser.wait_for("table[data-list=\"leads\"]").await;
    // The call window's stream is open once the session hooks ran; one warm-up call.
    let mut dom_ms = Vec::with_capacity(calls);
    let mut frame_ms = Vec::with_capacity(calls);
    for i in 0..=calls {
        browser
            .execute(
                "document.querySelectorAll('.call-card__close').forEach((b) => b.click())",
                vec![],
            )
            .await;
        browser.wait_gone(".call-card").await;
        let watch = browser.watch_for(".call-card").await;
        let caller = format!("+4917{:08}", 10_000_000 + i);
        let trace = dir.path().join(format!("carrier-{i}.log"));
        let seen = sipp(
            &[
                sip.clone(),
                "-sf".into(),
                sipp_dir().join("carrier_call.xml").display().to_string(),
                "-m".into(),
                "1".into(),
                "-s".into(),
                NUMBER.into(),
                "-key".into(),
                "caller".into(),
                caller,
                "-mp".into(),
                common::free_udp_block().to_string(),
            ],
            &trace,
        )
        .await;
        let sent = invite_sent(&seen);
        let shown = browser.appeared(&watch, DEADLINE).await;
        assert!(!shown.already_there, "call {i}: a card was left over");
        // The call has ended (SIPp finished): close its card once the window says so.
        browser.wait_for(".call-card[data-state=\"ended\"]").await;
        let ms = |t: SystemTime| {
            t.duration_since(sent)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64()
                * 1000.0
        };
        if i == 0 {
            continue; // warm-up
        }
        dom_ms.push(ms(shown.dom));
        if let Some(frame) = shown.frame {
            frame_ms.push(ms(frame));
        }
    }
    let _ = phone.kill().await;
    browser.finish().await;
    for (what, values) in [("dom", &mut dom_ms), ("frame", &mut frame_ms)] {
        values.sort_by(f64::total_cmp);
        if values.is_empty() {
            println!("{what}: no samples");
            continue;
        }
        println!(
            "carrier INVITE -> call card ({what}), {} calls: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            values.len(),
            percentile(values, 50.0),
            percentile(values, 99.0),
            values[values.len() - 1]
        );
    }
}
