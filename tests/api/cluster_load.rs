//! The front of several nodes under load: two `leadline serve` processes on one
//! PostgreSQL behind Kamailio with `deploy/kamailio/leadline.cfg`, a SIPp carrier placing
//! 50 calls/s from new callers through it, one node killed with kill -9 in the middle;
//! and the event stream of one node showing a call the proxy sent to the other.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::calls_sip::{CALLER, CallWindow, NUMBER, Sipp};
use crate::cluster_front::{Front, Kamailio, Node, call_through};
use crate::common::postgres::PgServer;
use crate::common::{free_port, free_udp_block, wait_until};
use crate::node_process::NodeProcess;

/// Calls per second and seconds of the carrier's run: the rate one service has to take.
const RATE: u32 = 50;
const SECONDS: u32 = 20;
/// Ended calls (both nodes) before node A is killed: about 6 s into the run.
const CALLS_BEFORE_KILL: u64 = 250;
/// After the kill, the dispatcher needs two missed probes (one a second) to take the dead
/// node out; until then an INVITE sent to it moves on after 3 s without an answer. A call
/// whose INVITE left the carrier later than this after the kill must not fail.
const DISPATCHER_WINDOW: Duration = Duration::from_secs(5);
/// The survivor closes the dead node's calls once it has not been seen for 30 s, at its
/// next sweep (every 5 s); the deadline leaves room for a loaded machine.
const CLOSE_DEADLINE: Duration = Duration::from_secs(120);

/// The nodes' arguments beyond the front's. The shedding of new calls while the runtime
/// lags (`--sip-shed-lag-ms`) is off: it answers 503 on a lag of 100 ms, which the debug
/// build on a shared 2-core machine reaches under this load whatever the front does, and
/// these tests are about the front (the shedding has tests of its own).
const NODE_ARGS: &[&str] = &["--sip-shed-lag-ms", "0"];

/// What Anna's phone is told: answer every call of the run, with room for bursts.
const PHONE_ARGS: &[&str] = &[
    "-m",
    "100000",
    "-timeout",
    "600s",
    "-buff_size",
    "4194304",
    "-default_behaviors",
    "all,-abortunexp",
];

/// Every item of a list endpoint (`/calls`, `/leads`), page by page.
pub(crate) async fn all(node: &NodeProcess, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            Some(c) => format!("{path}?limit=500&cursor={c}"),
            None => format!("{path}?limit=500"),
        };
        let page = node
            .get(&page)
            .await
            .unwrap_or_else(|| panic!("GET {page} answers"));
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

/// What the carrier's `-trace_logs` said of each call: when its INVITE left (wall clock),
/// whether it ended well, and whether it was seen ringing or answered (scenarios that
/// log it).
pub(crate) struct CarrierCall {
    pub(crate) sent: Duration,
    pub(crate) ok: bool,
    pub(crate) rung: bool,
}

fn carrier_calls(log: &str) -> HashMap<String, CarrierCall> {
    let mut calls = HashMap::new();
    for line in log.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["start", call_id, seconds, micros] => {
                let seconds: f64 = seconds.parse().expect("seconds");
                let micros: f64 = micros.parse().expect("microseconds");
                let sent =
                    Duration::from_secs(seconds as u64) + Duration::from_micros(micros as u64);
                calls.insert(
                    (*call_id).to_owned(),
                    CarrierCall {
                        sent,
                        ok: false,
                        rung: false,
                    },
                );
            }
            ["ok", call_id] => {
                calls.get_mut(*call_id).expect("an ok call started").ok = true;
            }
            ["rung" | "answered", call_id] => {
                calls.get_mut(*call_id).expect("a rung call started").rung = true;
            }
            _ => {}
        }
    }
    calls
}

/// The carrier of the load: `RATE` calls/s for `SECONDS` through the proxy, each from a
/// new caller (an injection file), with retransmissions; a call gets no answer for 30 s
/// at most, and the whole run ends within 10 minutes whatever happens.
pub(crate) struct Carrier {
    child: tokio::process::Child,
    log: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Carrier {
    fn start(proxy: u16, callers: &[String]) -> Carrier {
        Carrier::start_with("carrier_load_routed.xml", proxy, callers, RATE)
    }

    /// `scenario` at `rate` calls/s to `127.0.0.1:port`, one call per caller.
    pub(crate) fn start_with(scenario: &str, port: u16, callers: &[String], rate: u32) -> Carrier {
        let dir = tempfile::tempdir().unwrap();
        let injection = dir.path().join("callers.csv");
        let lines: String = callers.iter().map(|c| format!("{c};\n")).collect();
        std::fs::write(&injection, format!("SEQUENTIAL\n{lines}")).unwrap();
        let log = dir.path().join("calls.log");
        let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/sipp")
            .join(scenario);
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = tokio::process::Command::new("sipp")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-sf")
            .arg(&scenario)
            .arg("-inf")
            .arg(&injection)
            .args(["-s", NUMBER, "-t", "u1", "-i", "127.0.0.1", "-nostdin"])
            .args(["-r", &rate.to_string()])
            .args(["-m", &callers.len().to_string()])
            .args(["-recv_timeout", "30s", "-timeout", "600s", "-timeout_error"])
            .args(["-default_behaviors", "all,-abortunexp"])
            .args(["-buff_size", "4194304"])
            .args(["-mp", &free_udp_block().to_string()])
            .arg("-trace_logs")
            .arg("-log_file")
            .arg(&log)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(dir.path().join("errors.log"))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("sipp runs (scripts/test installs sip-tester)");
        Carrier { child, log, dir }
    }

    /// Waits for the run to end (failed calls make SIPp exit non-zero); each call's fate,
    /// and the start of what SIPp did not expect (the answers of failed calls).
    pub(crate) async fn finish(mut self) -> (HashMap<String, CarrierCall>, String) {
        tokio::time::timeout(Duration::from_secs(660), self.child.wait())
            .await
            .expect("SIPp ends within its own -timeout")
            .expect("sipp exit status");
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let calls = carrier_calls(&log);
        if calls.is_empty() {
            let stderr =
                std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
            panic!("the carrier placed no call: {stderr}");
        }
        let errors =
            std::fs::read_to_string(self.dir.path().join("errors.log")).unwrap_or_default();
        (calls, errors.chars().take(6000).collect())
    }
}

/// Node B's `leadline_sip_refused_total` lines: why it refused calls, if it did.
async fn refusals(node: &Node) -> Vec<String> {
    let text = reqwest::Client::new()
        .get(format!("http://{}/metrics", node.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with("leadline_sip_refused_total"))
        .map(str::to_owned)
        .collect()
}

fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// The whole front under load: 50 calls/s for 20 s, each from a new caller, spread over
/// two nodes by Kamailio; node A is killed with kill -9 about 6 s in. Only calls A held
/// fail: each failed call had left the carrier before the dispatcher could know A was
/// dead, and it is in the log, if at all, as one of A's calls that node B closed as
/// failed, "node lost"; every later call succeeds on B. Every call in the log ends, and
/// the callers whose calls reached the log have one lead each, none twice (M7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m7_fifty_calls_a_second_through_kamailio_survive_a_node_killed_mid_load() {
    let mut front = Front::start("cluster_load_kill", NODE_ARGS, PHONE_ARGS).await;
    let callers: Vec<String> = (0..RATE * SECONDS)
        .map(|i| format!("+4917690{i:06}"))
        .collect();
    let carrier = Carrier::start(front.proxy, &callers);

    wait_until(
        Duration::from_secs(120),
        "calls ended on both nodes",
        || {
            let front = &front;
            async move {
                let (a, b) = (front.a.calls().await, front.b.calls().await);
                (a > 0 && b > 0 && a + b >= CALLS_BEFORE_KILL).then_some(())
            }
        },
    )
    .await;
    front.a.kill().await;
    let killed_at = since_epoch();

    let (carrier_calls, unexpected) = carrier.finish().await;
    assert_eq!(carrier_calls.len(), callers.len(), "every call was placed");
    let failed: Vec<(&String, &CarrierCall)> =
        carrier_calls.iter().filter(|(_, call)| !call.ok).collect();
    let late: Vec<(&String, Duration)> = failed
        .iter()
        .filter(|(_, call)| call.sent > killed_at + DISPATCHER_WINDOW)
        .map(|(id, call)| (*id, call.sent - killed_at))
        .collect();
    assert!(
        late.is_empty(),
        "calls placed once the dispatcher knew node A was dead failed: {late:?}; node B \
         refused: {:?}; the carrier saw: {unexpected}",
        refusals(&front.b).await
    );
    let after_window = carrier_calls
        .values()
        .filter(|call| call.sent > killed_at + DISPATCHER_WINDOW)
        .count();
    assert!(after_window > 0, "the load went on after the kill");

    // Every call in the log ends: B's own, and A's closed by B's lost-node sweep. Every
    // call placed after the kill ran on B, so each one that went well is in the log (a
    // call's intake may complete after the call, when it ran past its lookup budget).
    let on_b: Vec<&str> = carrier_calls
        .iter()
        .filter(|(_, call)| call.ok && call.sent > killed_at)
        .map(|(id, _)| id.as_str())
        .collect();
    let log = wait_until(CLOSE_DEADLINE, "every logged call to end", || {
        let (b, on_b) = (&front.b, &on_b);
        async move {
            let calls = all(b, "/calls").await;
            let ids: HashSet<&str> = calls
                .iter()
                .map(|call| call["call_id"].as_str().unwrap())
                .collect();
            let ended = calls.iter().all(|call| call["ended_at"].is_string());
            (ended && on_b.iter().all(|id| ids.contains(id))).then_some(calls)
        }
    })
    .await;
    let lost: HashSet<&str> = log
        .iter()
        .filter(|call| {
            call["crm_reason"]
                .as_str()
                .is_some_and(|reason| reason.ends_with("node lost"))
        })
        .map(|call| call["call_id"].as_str().unwrap())
        .collect();
    for call in &log {
        if lost.contains(call["call_id"].as_str().unwrap()) {
            assert_eq!(call["outcome"], "failed", "{call}");
        }
    }
    assert!(!lost.is_empty(), "node A had calls open when it was killed");
    let logged: HashMap<&str, &Value> = log
        .iter()
        .map(|call| (call["call_id"].as_str().unwrap(), call))
        .collect();
    for (call_id, _) in &failed {
        if let Some(call) = logged.get(call_id.as_str()) {
            assert!(
                lost.contains(call_id.as_str()),
                "a failed call was not one of the killed node's: {call}"
            );
        }
    }

    // M7: one lead per caller whose call reached the log, none twice, none missing.
    let leads = all(&front.b, "/leads").await;
    let mut lead_phones = HashSet::new();
    for lead in &leads {
        for phone in lead["phones"].as_array().unwrap() {
            let phone = phone.as_str().unwrap().to_owned();
            assert!(lead_phones.insert(phone.clone()), "two leads for {phone}");
        }
    }
    let logged_callers: HashSet<String> = log
        .iter()
        .map(|call| call["customer"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        lead_phones, logged_callers,
        "the callers with a lead are the callers in the log"
    );
    // Calls that went well before the kill but are not in the log: node A had answered
    // them but not yet written their intake when it was killed.
    let unlogged = carrier_calls
        .iter()
        .filter(|(id, call)| call.ok && !logged.contains_key(id.as_str()))
        .count();
    let failed_after_kill = failed
        .iter()
        .filter(|(_, call)| call.sent > killed_at)
        .count();
    eprintln!(
        "load: {} calls, {} logged, {} went well but were not logged, {} failed ({} placed \
         after the kill), {} closed as node lost, {} leads",
        carrier_calls.len(),
        log.len(),
        unlogged,
        failed.len(),
        failed_after_kill,
        lost.len(),
        leads.len()
    );
    front.phone.stop().await;
}

/// An agent's event stream open on node B shows a call that Kamailio sent to node A:
/// each node's stream is opened before the call, and the node that did not log the call
/// shows it ringing with its Call-ID and caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_event_stream_on_one_node_shows_a_call_kamailio_sent_to_the_other() {
    let front = Front::start("cluster_load_events", NODE_ARGS, PHONE_ARGS).await;
    let token = front
        .a
        .post(
            &format!("/users/{}/tokens", front.anna),
            json!({"name": "call window"}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut windows = Vec::new();
    for node in [&front.a, &front.b] {
        let response = reqwest::Client::new()
            .get(format!("http://{}/api/v1/events", node.http))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        windows.push(CallWindow::from_response(response));
    }

    let caller = "+4917655530001";
    let (ok, messages) = call_through(front.proxy, caller).await;
    assert!(ok, "the call rings the phone and ends: {messages}");
    let (ran_on_a, call) = wait_until(Duration::from_secs(20), "the call logged", || {
        let front = &front;
        async move {
            let (a, b) = (front.a.calls().await, front.b.calls().await);
            if a + b == 0 {
                return None;
            }
            let calls = front.b.read("/calls").await;
            Some((a == 1, calls["items"][0].clone()))
        }
    })
    .await;
    let call_id = call["call_id"].as_str().unwrap();
    let other = &mut windows[usize::from(ran_on_a)];
    let seen = other.read_until(call_id, Duration::from_secs(20)).await;
    assert!(
        seen.contains(&format!("\"call_id\":\"{call_id}\"")),
        "the other node's stream shows the call: {seen}"
    );
    assert!(seen.contains("event: ringing"), "{seen}");
    assert!(
        seen.contains(&caller[1..]),
        "the caller is on the stream: {seen}"
    );
    front.phone.stop().await;
}

/// A phone on TCP: Kamailio, started as documented (`LISTEN` without a protocol), takes
/// its REGISTER over TCP and passes it to the node with a Path naming the connection; the
/// node's INVITE goes back to the phone over that connection, and the phone answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registered_over_tcp_through_kamailio_is_rung() {
    let url = PgServer::shared().create_database("cluster_load_tcp").await;
    let (proxy, sip) = (free_port(), free_port());
    let node = Node::start_with(&url, sip, proxy, NODE_ARGS).await;
    let anna = node.sales_line(NUMBER).await;
    let _kamailio = Kamailio::start(proxy, &[sip]);
    wait_until(
        Duration::from_secs(20),
        "Kamailio to listen on TCP",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", proxy))
                .await
                .ok()
                .map(drop)
        },
    )
    .await;
    let answer =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sipp/agent_answer_many.xml");
    let phone = Sipp::start(
        "register_and_stay.xml",
        0,
        Some(format!("127.0.0.1:{proxy}")),
        &[
            "-s",
            "101",
            "-au",
            "101",
            "-ap",
            "pw-101-secret",
            "-t",
            "t1",
            "-oocsf",
            answer.to_str().unwrap(),
        ],
    );
    wait_until(
        Duration::from_secs(20),
        "the node to know the phone",
        || {
            let (node, anna) = (&node, &anna);
            async move { node.rings(anna).await.then_some(()) }
        },
    )
    .await;

    let (ok, messages) = call_through(proxy, CALLER).await;
    assert!(ok, "the call rings the phone on TCP and ends: {messages}");
    let call = wait_until(Duration::from_secs(20), "the call to end", || {
        let node = &node;
        async move {
            let calls = node.read("/calls").await;
            let call = calls["items"][0].clone();
            call["ended_at"].is_string().then_some(call)
        }
    })
    .await;
    assert_eq!(call["outcome"], "answered", "{call}");
    assert_eq!(call["answered_by"], json!(anna), "{call}");
    let seen = phone.stop().await;
    assert!(
        seen.contains("INVITE sip:101@"),
        "the phone was rung over its connection: {seen}"
    );
}
