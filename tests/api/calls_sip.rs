//! Calls through the B2BUA, driven like production: SIPp as the carrier (UAC) and SIPp
//! as the agents' softphones (a REGISTER run with digest, then a UAS run on the same
//! port, as TESTING.md describes).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{free_port, wait_until};
use crate::helpers::TestApp;

pub(crate) const NUMBER: &str = "+4930901820";
pub(crate) const CALLER: &str = "+4917612345678";

/// One bounded SIPp run.
pub(crate) struct Sipp {
    child: tokio::process::Child,
    trace: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sipp {
    /// Starts SIPp with `scenario` on local `port`; `remote` is the gateway for a client.
    pub(crate) fn start(scenario: &str, port: u16, remote: Option<String>, extra: &[&str]) -> Sipp {
        let dir = tempfile::tempdir().expect("temp dir");
        let trace = dir.path().join("messages.log");
        // play_pcap_audio names its file relative to SIPp's working directory.
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sipp/g711a.pcap"),
            dir.path().join("g711a.pcap"),
        )
        .expect("the audio capture copies");
        let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/sipp")
            .join(scenario);
        let mut command = tokio::process::Command::new("sipp");
        if let Some(remote) = remote {
            command.arg(remote);
        }
        command
            .arg("-sf")
            .arg(&scenario)
            .args(["-m", "1", "-t", "u1", "-nostdin", "-timeout", "40s"])
            .args(["-timeout_error", "-trace_msg", "-message_file"])
            .arg(&trace)
            .args(["-i", "127.0.0.1"]);
        // Port 0: a client lets the system choose (no race with other tests for it).
        if port != 0 {
            command.args(["-p", &port.to_string()]);
        }
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        command
            .args(["-mp", &crate::common::free_udp_block().to_string()])
            .args(extra)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .expect("sipp runs (scripts/test installs sip-tester)");
        Sipp {
            child,
            trace,
            _dir: dir,
        }
    }

    /// Ends a run that is waiting for something that should not come; what it saw.
    pub(crate) async fn stop(mut self) -> String {
        let _ = self.child.kill().await;
        std::fs::read_to_string(&self.trace).unwrap_or_default()
    }

    /// What the run saw and said, when it has already ended (`None` while it runs): a
    /// test waiting for a call to reach a state fails at once, with the reason, when
    /// one side gave up (its port taken by another test, a message it did not expect).
    pub(crate) fn ended_early(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok().flatten()?;
        let trace = std::fs::read_to_string(&self.trace).unwrap_or_default();
        let stderr =
            std::fs::read_to_string(self._dir.path().join("stderr.log")).unwrap_or_default();
        Some(format!(
            "SIPp ended with {status}\n{trace}\n--- sipp stderr ---\n{stderr}"
        ))
    }

    /// Waits for the run to end; whether it succeeded and every message it saw.
    pub(crate) async fn finish(mut self) -> (bool, String) {
        let status = tokio::time::timeout(Duration::from_secs(180), self.child.wait())
            .await
            .expect("SIPp finishes within 180 s (its own -timeout is shorter)")
            .expect("sipp exit status");
        let mut seen = std::fs::read_to_string(&self.trace).unwrap_or_default();
        if !status.success() {
            // SIPp's own complaint (a port taken, a scenario error) when it failed.
            let stderr =
                std::fs::read_to_string(self._dir.path().join("stderr.log")).unwrap_or_default();
            seen.push_str(&format!("\n--- sipp stderr ---\n{stderr}"));
        }
        (status.success(), seen)
    }
}

/// An agent's softphone: registered over UDP from `port`.
pub(crate) struct Phone {
    pub(crate) port: u16,
}

impl Phone {
    pub(crate) async fn register(app: &TestApp, extension: &str, password: &str) -> Phone {
        let port = free_port();
        let run = Sipp::start(
            "register.xml",
            port,
            Some(app.sip_addr().to_string()),
            &["-s", extension, "-au", extension, "-ap", password],
        );
        let (ok, messages) = run.finish().await;
        assert!(ok, "{extension} registers: {messages}");
        Phone { port }
    }

    /// Starts the phone's behaviour for the next call (`agent_answer.xml` …).
    pub(crate) fn expect_call(&self, scenario: &str) -> Sipp {
        Sipp::start(scenario, self.port, None, &[])
    }
}

pub(crate) struct Line {
    pub(crate) anna: String,
    pub(crate) ben: String,
}

async fn agent(app: &TestApp, name: &str, extension: &str) -> String {
    app.post_ok(
        "/api/v1/users",
        json!({"name": name, "email": format!("{}@example.com", name.to_lowercase()),
               "role": "agent", "extension": extension, "sip_password": format!("pw-{extension}-secret")}),
        StatusCode::CREATED,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Anna and Ben in the Sales queue behind our number, reached from a carrier trunk
/// recognised by its address.
pub(crate) async fn line(app: &TestApp, ring_timeout_s: u32) -> Line {
    line_with_carrier_at(app, ring_timeout_s, "127.0.0.1").await
}

/// As [`line`], with the carrier trunk recognised at `carrier_ip`: an agent's phone
/// that places calls from an unregistered port must not look like the carrier.
async fn line_with_carrier_at(app: &TestApp, ring_timeout_s: u32, carrier_ip: &str) -> Line {
    let anna = agent(app, "Anna", "101").await;
    let ben = agent(app, "Ben", "102").await;
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
    let trunk = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "Carrier", "kind": "carrier", "host": carrier_ip,
                   "register": false, "allowed_ips": [carrier_ip]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post_ok(
        "/api/v1/numbers",
        json!({"number": NUMBER, "default_country": "DE", "queue": queue, "trunk": trunk,
               "ring_timeout_s": ring_timeout_s}),
        StatusCode::CREATED,
    )
    .await;
    Line { anna, ben }
}

pub(crate) fn carrier_call(app: &TestApp, scenario: &str, extra: &[&str]) -> Sipp {
    carrier_call_from(app, CALLER, scenario, extra)
}

/// [`carrier_call`] from another caller number (SIPp keeps the first `-key` given).
pub(crate) fn carrier_call_from(
    app: &TestApp,
    caller: &str,
    scenario: &str,
    extra: &[&str],
) -> Sipp {
    let mut args = vec!["-s", NUMBER, "-key", "caller", caller];
    args.extend_from_slice(extra);
    Sipp::start(scenario, 0, Some(app.sip_addr().to_string()), &args)
}

/// The call log row of the only call, once it has ended.
pub(crate) async fn ended_call(app: &TestApp) -> Value {
    wait_until(Duration::from_secs(10), "the call to end", || async {
        let calls = app.get_ok("/api/v1/calls").await;
        let call = calls["items"].as_array()?.first()?.clone();
        call["ended_at"].is_string().then_some(call)
    })
    .await
}

/// Lets the media of calls on our number flow between the parties.
pub(crate) async fn media_relay_off(app: &TestApp) {
    let number = app.get_ok("/api/v1/numbers").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/numbers/{number}"),
            Some(&app.admin),
            Some(json!({"media_relay": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Waits until the gateway holds no SIP dialog any more: a leak shows here.
async fn dialogs_released(app: &TestApp, what: &str) {
    app.wait_for_metric_line("leadline_sip_dialogs 0", what)
        .await;
}

/// The INVITE the phone received, from its trace.
fn received_invite(messages: &str) -> &str {
    let start = messages
        .find("INVITE sip:")
        .expect("the phone received an INVITE");
    let end = messages[start..]
        .find("\n\n")
        .map_or(messages.len(), |e| start + e);
    &messages[start..end]
}

/// T1, T9, T13: an unknown caller creates a lead before the
/// agent's phone rings; the first in the queue answers; the phone shows the CRM's name
/// and a Call-Info link to the lead; the call log has T13's fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t1_unknown_caller_rings_the_queue_and_the_answer_is_logged() {
    let app = TestApp::spawn_for_sipp().await;
    unknown_caller_rings_the_queue(&app).await;
    app.stop().await;
}

/// The same call with the gateway on PostgreSQL: bindings, intake and call log there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t1_unknown_caller_on_postgresql() {
    let server = crate::common::postgres::PgServer::shared();
    let url = server.create_database("calls_t1").await;
    let app = TestApp::spawn_for_sipp_with(|config| config.database_url = url).await;
    unknown_caller_rings_the_queue(&app).await;
    app.stop().await;
}

/// T1, T9, T13: the scenario of the two tests above, on whatever database `app` uses.
async fn unknown_caller_rings_the_queue(app: &TestApp) {
    let line = line(app, 20).await;
    let anna_phone = Phone::register(app, "101", "pw-101-secret").await;
    let anna_answers = anna_phone.expect_call("agent_answer.xml");

    let (ok, carrier) = carrier_call(app, "carrier_call.xml", &[]).finish().await;
    assert!(ok, "the carrier's call is answered: {carrier}");
    let (ok, phone) = anna_answers.finish().await;
    assert!(ok, "Anna's phone rang, answered and got the BYE: {phone}");

    let leads = app.leads().await;
    assert_eq!(leads.len(), 1, "one lead for the new caller");
    let lead = &leads[0];
    assert_eq!(lead["phones"], json!([CALLER]));
    assert_eq!(
        lead["responsible"],
        json!(line.anna),
        "T9: first in the queue"
    );
    assert_eq!(lead["source"], "CALL");

    let invite = received_invite(&phone);
    let lead_id = lead["id"].as_str().unwrap();
    assert!(
        invite.contains(&format!("/api/v1/leads/{lead_id}>;purpose=info")),
        "Call-Info names the lead: {invite}"
    );
    let name = lead["name"].as_str().unwrap();
    assert!(
        invite.contains(&format!("From: \"{name}\"")),
        "the phone shows the CRM's name {name:?}: {invite}"
    );
    assert!(
        invite.contains("m=audio"),
        "the caller's SDP is passed through"
    );

    let call = ended_call(app).await;
    assert_eq!(call["outcome"], "answered", "{call}");
    assert_eq!(call["answered_by"], json!(line.anna), "{call}");
    assert_eq!(call["direction"], "incoming");
    assert!(call["answered_at"].is_string(), "{call}");
    assert_eq!(call["route"], json!([line.anna, line.ben]), "{call}");
}

/// Nobody registered: 480 to the carrier and one missed call that leaves
/// an open "call back" activity (T13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_nobody_registered_is_480_and_a_missed_call() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    let (ok, carrier) = carrier_call(&app, "carrier_unanswered.xml", &[])
        .finish()
        .await;
    assert!(
        ok && carrier.contains("SIP/2.0 480"),
        "480 Temporarily Unavailable: {carrier}"
    );
    let call = ended_call(&app).await;
    assert_eq!(call["outcome"], "missed", "{call}");
    let activity = call["activity"].as_str().expect("a call activity");
    let lead = &app.leads().await[0];
    let timeline = app
        .get_ok(&format!(
            "/api/v1/activities?entity=lead:{}",
            lead["id"].as_str().unwrap()
        ))
        .await;
    let item = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == json!(activity))
        .expect("the call activity is on the lead")
        .clone();
    assert_eq!(item["completed"], false, "open: call back ({item})");
    app.stop().await;
}

/// An INVITE for a number we do not have is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_number_is_404() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    let run = Sipp::start(
        "carrier_unanswered.xml",
        free_port(),
        Some(app.sip_addr().to_string()),
        &["-s", "+4930111111", "-key", "caller", CALLER],
    );
    let (ok, messages) = run.finish().await;
    assert!(
        ok && messages.contains("SIP/2.0 404"),
        "404 Not Found: {messages}"
    );
    app.stop().await;
}

/// T5 and item 2: a busy agent moves the call on to the next in the queue at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_busy_agent_moves_the_call_to_the_next_in_queue() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let ben_phone = Phone::register(&app, "102", "pw-102-secret").await;
    let anna_busy = anna_phone.expect_call("agent_busy.xml");
    let ben_answers = ben_phone.expect_call("agent_answer.xml");

    let (ok, carrier) = carrier_call(&app, "carrier_call.xml", &[]).finish().await;
    assert!(ok, "{carrier}");
    let (ok, anna) = anna_busy.finish().await;
    assert!(ok, "Anna said busy: {anna}");
    let (ok, ben) = ben_answers.finish().await;
    assert!(ok, "Ben answered: {ben}");
    let call = ended_call(&app).await;
    assert_eq!(call["answered_by"], json!(line.ben), "{call}");
    assert_eq!(call["outcome"], "answered");
    app.stop().await;
}

/// T5 fallback after the ring timeout: Anna's phone rings and is cancelled after
/// `ring_timeout_s`, then Ben's rings and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_no_answer_falls_back_to_the_queue_after_the_ring_timeout() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 5).await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let ben_phone = Phone::register(&app, "102", "pw-102-secret").await;
    let anna_ignores = anna_phone.expect_call("agent_no_answer.xml");
    let ben_answers = ben_phone.expect_call("agent_answer.xml");

    let carrier = carrier_call(&app, "carrier_call.xml", &[]);
    // Item 7: while Anna's phone rings the call is live, with her leg ringing.
    let live = wait_until(Duration::from_secs(10), "the call to ring Anna", || async {
        let calls = app.get_ok("/api/v1/calls").await;
        let call = calls["items"].as_array()?.first()?.clone();
        (call["live"] == true && call["legs"][0]["state"] == "ringing").then_some(call)
    })
    .await;
    assert_eq!(live["legs"][0]["user"], json!(line.anna), "{live}");
    let (ok, carrier) = carrier.finish().await;
    assert!(ok, "{carrier}");
    let (ok, anna) = anna_ignores.finish().await;
    assert!(ok, "Anna's phone was cancelled: {anna}");
    let (ok, ben) = ben_answers.finish().await;
    assert!(ok, "Ben answered: {ben}");
    let call = ended_call(&app).await;
    assert_eq!(call["answered_by"], json!(line.ben), "{call}");
    // The route taken, leg by leg, stays on the finished call.
    assert_eq!(call["live"], false);
    let legs = call["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 2, "{call}");
    assert_eq!(legs[0]["user"], json!(line.anna));
    assert_eq!(legs[0]["state"], "no_answer", "{call}");
    assert_eq!(legs[1]["user"], json!(line.ben));
    assert_eq!(legs[1]["state"], "answered", "{call}");
    app.stop().await;
}

/// Item 2: the caller's CANCEL while the agent's phone rings cancels the agent's leg;
/// the call is logged as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_cancel_cancels_the_ringing_agent() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let anna_rings = anna_phone.expect_call("agent_no_answer.xml");
    let (ok, carrier) = carrier_call(&app, "carrier_cancel.xml", &[]).finish().await;
    assert!(ok, "CANCEL answered 200, INVITE 487: {carrier}");
    let (ok, anna) = anna_rings.finish().await;
    assert!(ok, "Anna's phone got the CANCEL: {anna}");
    let call = ended_call(&app).await;
    assert_eq!(call["outcome"], "cancelled", "{call}");
    assert_eq!(call["answered_by"], json!(null));
    // T13: the caller gave up before anyone answered: a call back is left open.
    let lead = &app.leads().await[0];
    let timeline = app
        .get_ok(&format!(
            "/api/v1/activities?entity=lead:{}",
            lead["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(timeline["items"][0]["completed"], false, "{timeline}");
    app.stop().await;
}

/// T5: a known caller rings their responsible first, even when the queue's turn is
/// someone else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_a_known_caller_rings_the_responsible_first() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    app.post_ok(
        "/api/v1/contacts",
        json!({"name": "Clara Customer", "phones": [CALLER], "responsible": line.ben}),
        StatusCode::CREATED,
    )
    .await;
    let ben_phone = Phone::register(&app, "102", "pw-102-secret").await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let ben_answers = ben_phone.expect_call("agent_answer.xml");
    // Anna's phone must not ring: Ben answers first.
    let anna_idle = anna_phone.expect_call("agent_answer.xml");

    let (ok, carrier) = carrier_call(&app, "carrier_call.xml", &[]).finish().await;
    assert!(ok, "{carrier}");
    let (ok, ben) = ben_answers.finish().await;
    assert!(ok, "Ben answered: {ben}");
    assert!(
        received_invite(&ben).contains("From: \"Clara Customer\""),
        "the phone shows the contact's name: {ben}"
    );
    let call = ended_call(&app).await;
    assert_eq!(call["answered_by"], json!(line.ben), "{call}");
    assert_eq!(call["route"][0], json!(line.ben), "{call}");
    let anna = anna_idle.stop().await;
    assert!(
        !anna.contains("INVITE sip:"),
        "Anna's phone never rang: {anna}"
    );
    assert!(
        app.leads().await.is_empty(),
        "a known caller creates no lead"
    );
    app.stop().await;
}

/// An open call window (`GET /api/v1/events`) of one token.
pub(crate) struct CallWindow {
    response: reqwest::Response,
    seen: String,
}

impl CallWindow {
    pub(crate) async fn open(app: &TestApp, token: &str) -> CallWindow {
        let response = app
            .client
            .get(format!("{}/api/v1/events", app.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        CallWindow::from_response(response)
    }

    /// The window of a `GET /api/v1/events` sent some other way (with a session cookie).
    pub(crate) fn from_response(response: reqwest::Response) -> CallWindow {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "an SSE stream"
        );
        CallWindow {
            response,
            seen: String::new(),
        }
    }

    /// Whether the server ends the stream within `within` (reading what still comes).
    pub(crate) async fn ends_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Ok(None) | Err(_)) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Reads until `needle` has been seen or `within` has passed; everything read.
    pub(crate) async fn read_until(&mut self, needle: &str, within: Duration) -> &str {
        let deadline = tokio::time::Instant::now() + within;
        while !self.seen.contains(needle) {
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                _ => break,
            }
        }
        &self.seen
    }
}

pub(crate) async fn token_of(app: &TestApp, user: &str) -> String {
    app.post_ok(
        &format!("/api/v1/users/{user}/tokens"),
        json!({"name": "call window"}),
        StatusCode::CREATED,
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Item 6: the call window streams to the agent the calls ringing them (with the match),
/// answered and ended; an agent the call never rang sees nothing of it; admins see all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_window_streams_ringing_answered_and_ended_to_the_agent_concerned() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    let mut anna_window = CallWindow::open(&app, &token_of(&app, &line.anna).await).await;
    let mut ben_window = CallWindow::open(&app, &token_of(&app, &line.ben).await).await;
    let mut admin_window = CallWindow::open(&app, &app.admin).await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let anna_answers = anna_phone.expect_call("agent_answer.xml");

    let (ok, carrier) = carrier_call(&app, "carrier_call.xml", &[]).finish().await;
    assert!(ok, "{carrier}");
    assert!(anna_answers.finish().await.0);
    let lead = app.leads().await[0].clone();

    let anna = anna_window
        .read_until("event: ended", Duration::from_secs(10))
        .await;
    assert!(anna.contains("event: ringing"), "{anna}");
    assert!(anna.contains("event: answered"), "{anna}");
    assert!(anna.contains("event: ended"), "{anna}");
    let lead_ref = format!("\"entity\":\"lead:{}\"", lead["id"].as_str().unwrap());
    assert!(
        anna.contains(&lead_ref),
        "the match is in the window: {anna}"
    );
    assert!(
        anna.contains(&format!("\"customer\":\"{CALLER}\"")),
        "{anna}"
    );

    let admin = admin_window
        .read_until("event: ended", Duration::from_secs(10))
        .await;
    assert!(
        admin.contains("event: ringing"),
        "admins see every call: {admin}"
    );

    // Ben's window stays quiet about a call that never rang him.
    let ben = ben_window
        .read_until("event:", Duration::from_millis(500))
        .await;
    assert!(!ben.contains("event: ringing"), "{ben}");
    app.stop().await;
}

/// A1 in the call window: at the default level `own`, a call ringing Anna for
/// her customer is not shown to Ben, though both are connected and in the same queue;
/// Ben's own customer's call that follows is. The events of one bus arrive in order, so
/// once Ben has seen his call end, nothing of Anna's earlier call can still come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_the_call_window_shows_an_agent_at_own_only_calls_ringing_them_or_theirs() {
    const BENS_CUSTOMER: &str = "+4917699887766";
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    for (name, phone, responsible) in [
        ("Anna's customer", CALLER, &line.anna),
        ("Ben's customer", BENS_CUSTOMER, &line.ben),
    ] {
        app.post_ok(
            "/api/v1/contacts",
            json!({"name": name, "phones": [phone], "responsible": responsible}),
            StatusCode::CREATED,
        )
        .await;
    }
    let mut anna_window = CallWindow::open(&app, &token_of(&app, &line.anna).await).await;
    let mut ben_window = CallWindow::open(&app, &token_of(&app, &line.ben).await).await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let ben_phone = Phone::register(&app, "102", "pw-102-secret").await;

    let anna_answers = anna_phone.expect_call("agent_answer.xml");
    let (ok, carrier) = carrier_call(&app, "carrier_call.xml", &[]).finish().await;
    assert!(ok, "{carrier}");
    assert!(anna_answers.finish().await.0);
    let anna_seen = anna_window
        .read_until("event: ended", Duration::from_secs(10))
        .await
        .to_owned();
    assert!(anna_seen.contains("event: ringing"), "{anna_seen}");
    assert!(
        anna_seen.contains(&format!("\"customer\":\"{CALLER}\"")),
        "{anna_seen}"
    );

    let ben_answers = ben_phone.expect_call("agent_answer.xml");
    let (ok, carrier) = carrier_call_from(&app, BENS_CUSTOMER, "carrier_call.xml", &[])
        .finish()
        .await;
    assert!(ok, "{carrier}");
    assert!(ben_answers.finish().await.0);
    let ben_seen = ben_window
        .read_until("event: ended", Duration::from_secs(10))
        .await
        .to_owned();
    assert!(
        ben_seen.contains(&format!("\"customer\":\"{BENS_CUSTOMER}\"")),
        "Ben sees his customer's call: {ben_seen}"
    );
    assert!(
        !ben_seen.contains(CALLER),
        "Ben must not see Anna's call at level own: {ben_seen}"
    );
    // And Anna, by the same order of events, is not shown Ben's call.
    let anna_seen = anna_window
        .read_until(BENS_CUSTOMER, Duration::from_millis(200))
        .await;
    assert!(!anna_seen.contains(BENS_CUSTOMER), "{anna_seen}");
    app.stop().await;
}

/// Item 10: a slow database never drops a call. With the database locked by another
/// writer, the CRM lookup misses its budget; the call rings the number's queue anyway
/// and is answered, and the CRM link (the new lead) completes once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_database_delays_the_crm_link_not_the_call() {
    use sqlx::{Connection as _, Executor as _};
    let app = TestApp::spawn_for_sipp_with(|config| {
        config.call_lookup_budget = Duration::from_millis(50);
    })
    .await;
    let line = line(&app, 20).await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let anna_answers = anna_phone.expect_call("agent_answer.xml");
    // Reads still work under another writer's lock (WAL): the number and its queue
    // are found; only the intake's writes wait.
    let db = app.data_dir().join("leadline.db");
    let mut blocker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    blocker.execute("BEGIN IMMEDIATE").await.unwrap();

    let (ok, carrier) = carrier_call(&app, "carrier_call.xml", &[]).finish().await;
    assert!(ok, "answered while the database was locked: {carrier}");
    assert!(app.leads().await.is_empty(), "nothing could be written yet");
    blocker.execute("COMMIT").await.unwrap();
    drop(blocker);

    let (ok, phone) = anna_answers.finish().await;
    assert!(ok, "{phone}");
    let lead = wait_until(Duration::from_secs(15), "the late CRM link", || async {
        app.leads().await.first().cloned()
    })
    .await;
    assert_eq!(lead["phones"], json!([CALLER]));
    let call = ended_call(&app).await;
    assert_eq!(call["answered_by"], json!(line.anna), "{call}");
    assert_eq!(call["outcome"], "answered", "{call}");
    let metrics = app.metrics().await.expect("/metrics answers");
    assert!(
        metrics.contains("leadline_call_lookup_deadline_missed_total"),
        "counted: {metrics}"
    );
    app.stop().await;
}

/// Item 4 and T10: Anna answers and transfers the caller blind to Ben (REFER); Ben's phone
/// rings and answers, the caller is re-INVITEd to Ben's media, Anna's leg ends; with
/// "change the responsible person when the call is transferred" the new lead is Ben's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_a_blind_transfer_moves_the_call_and_the_new_lead_to_the_answering_agent() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    let number = app.get_ok("/api/v1/numbers").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/numbers/{number}"),
            Some(&app.admin),
            Some(json!({"change_responsible_on_transfer": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let ben_phone = Phone::register(&app, "102", "pw-102-secret").await;
    let anna_transfers = Sipp::start(
        "agent_transfer.xml",
        anna_phone.port,
        None,
        &["-key", "refer_to", "102"],
    );
    let ben_answers = ben_phone.expect_call("agent_answer.xml");

    let (ok, carrier) = carrier_call(&app, "carrier_transferred.xml", &[])
        .finish()
        .await;
    assert!(ok, "re-INVITEd to Ben, then hung up: {carrier}");
    let (ok, anna) = anna_transfers.finish().await;
    assert!(
        ok,
        "Anna's REFER was accepted, notified and her leg ended: {anna}"
    );
    assert!(anna.contains("SIP/2.0 100"), "NOTIFY 100 Trying: {anna}");
    let (ok, ben) = ben_answers.finish().await;
    assert!(ok, "Ben answered and got the caller's BYE: {ben}");

    let call = ended_call(&app).await;
    assert_eq!(call["answered_by"], json!(line.ben), "{call}");
    assert_eq!(call["responsible"], json!(line.ben), "T10: {call}");
    let states: Vec<&str> = call["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["transferred", "answered"], "{call}");
    let lead = &app.leads().await[0];
    assert_eq!(
        lead["responsible"],
        json!(line.ben),
        "T10: the lead is Ben's: {lead}"
    );
    // Every dialog of the call (caller, Anna, Ben) is released when it ends.
    dialogs_released(&app, "the call's dialogs to be released").await;
    app.stop().await;
}

/// Whether something listens on TCP `port` on loopback, read from /proc so that the
/// check does not take the listener's one connection (SIPp's twin socket accepts one).
fn tcp_listening(port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3 && fields[1].ends_with(&wanted) && fields[3] == "0A"
            })
        })
    })
}

/// Item 4 and T10, attended: Anna answers, puts the caller on hold, calls Ben (a second
/// call from the same phone), then sends REFER with `Replaces` naming that call. The
/// gateway hands Ben's side of the consultation over to the caller's call, re-INVITEs
/// each with the other's SDP, hangs up both of Anna's dialogs, and the new lead is Ben's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_an_attended_transfer_connects_the_caller_to_the_consulted_agent() {
    let app = TestApp::spawn_for_sipp().await;
    // The consultation call comes from another port of Anna's address: the carrier is
    // elsewhere (all of 127/8 is loopback).
    let line = line_with_carrier_at(&app, 20, "127.0.0.2").await;
    let number = app.get_ok("/api/v1/numbers").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/numbers/{number}"),
            Some(&app.admin),
            // The SDP each side is offered is checked as it passes through: no relay.
            Some(json!({"change_responsible_on_transfer": true, "media_relay": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let ben_phone = Phone::register(&app, "102", "pw-102-secret").await;
    // SIPp's twin mode (-3pcc): the consulting leg listens for its twin's command.
    let twin = format!("127.0.0.1:{}", free_port());
    let anna_consults = Sipp::start(
        "agent_consult.xml",
        free_port(),
        Some(app.sip_addr().to_string()),
        &[
            "-3pcc",
            &twin,
            "-s",
            "101",
            "-au",
            "101",
            "-ap",
            "pw-101-secret",
            "-key",
            "dial",
            "102",
        ],
    );
    let twin_port: u16 = twin.rsplit(':').next().unwrap().parse().unwrap();
    wait_until(
        Duration::from_secs(10),
        "the consulting leg's twin socket",
        || async { tcp_listening(twin_port).then_some(()) },
    )
    .await;
    let anna_transfers = Sipp::start(
        "agent_attended.xml",
        anna_phone.port,
        None,
        &["-3pcc", &twin, "-key", "refer_to", "102"],
    );
    // Ben is the next in the queue: busy with nothing, he only gets the consultation.
    let ben_answers = ben_phone.expect_call("agent_consulted.xml");

    let (ok, carrier) = carrier_call(&app, "carrier_attended.xml", &["-i", "127.0.0.2"])
        .finish()
        .await;
    assert!(ok, "held, re-INVITEd to Ben, then hung up: {carrier}");
    let (ok, anna) = anna_transfers.finish().await;
    assert!(
        ok,
        "Anna's REFER was accepted, notified and her leg ended: {anna}"
    );
    assert!(anna.contains("SIP/2.0 200"), "NOTIFY 200 OK: {anna}");
    let (ok, consult) = anna_consults.finish().await;
    assert!(
        ok,
        "the consultation dialog was replaced and ended: {consult}"
    );
    let (ok, ben) = ben_answers.finish().await;
    assert!(ok, "Ben took the caller and got the caller's BYE: {ben}");

    // The media follows: the caller is offered Ben's SDP, Ben the caller's answer.
    let last_message_from = |trace: &str, start: &str| {
        let from = trace.rfind(start).map(|i| &trace[i..]).unwrap_or_default();
        from.split("-----------")
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let caller_reinvite = last_message_from(&carrier, "INVITE sip:");
    assert!(
        caller_reinvite.contains("o=ben"),
        "the caller's last re-INVITE carries Ben's SDP: {carrier}"
    );
    let ben_reinvite = last_message_from(&ben, "INVITE sip:");
    assert!(
        ben_reinvite.contains("o=carrier"),
        "Ben is offered the caller's SDP: {ben}"
    );

    let call = ended_call(&app).await;
    assert_eq!(call["answered_by"], json!(line.ben), "{call}");
    assert_eq!(call["responsible"], json!(line.ben), "T10: {call}");
    let states: Vec<&str> = call["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["transferred", "answered"], "{call}");
    let lead = &app.leads().await[0];
    assert_eq!(
        lead["responsible"],
        json!(line.ben),
        "T10: the lead is Ben's: {lead}"
    );
    // The internal consultation is no customer call: only the caller's call is logged.
    assert_eq!(
        app.get_ok("/api/v1/calls").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    dialogs_released(&app, "every dialog of both calls to be released").await;
    app.stop().await;
}

/// Item 5 and T7: Anna's softphone dials a national number; the gateway asks her to
/// authenticate (407), then sends the call out through her number's carrier trunk with
/// that number as caller ID, both written as the trunk's profile says (sipgate: E.164
/// without `+`), and logs an outgoing call by Anna.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_dials_out_through_the_numbers_trunk() {
    let app = TestApp::spawn_for_sipp().await;
    let anna = agent(&app, "Anna", "101").await;
    let queue = app
        .post_ok(
            "/api/v1/queues",
            json!({"name": "Sales", "members": [anna]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let carrier_port = free_port();
    let trunk = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "sipgate", "kind": "carrier", "profile": "sipgate",
                   "host": "127.0.0.1", "port": carrier_port, "register": false,
                   "username": "1234567t0", "password": "carrier-secret"}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post_ok(
        "/api/v1/numbers",
        json!({"number": NUMBER, "default_country": "DE", "queue": queue, "trunk": trunk,
               "directions": "both"}),
        StatusCode::CREATED,
    )
    .await;
    let carrier = Sipp::start("agent_answer.xml", carrier_port, None, &[]);
    let phone = Sipp::start(
        "agent_dial.xml",
        free_port(),
        Some(app.sip_addr().to_string()),
        &[
            "-s",
            "101",
            "-au",
            "101",
            "-ap",
            "pw-101-secret",
            "-key",
            "dial",
            "030123456",
        ],
    );
    let (ok, phone) = phone.finish().await;
    assert!(ok, "challenged, connected, hung up: {phone}");
    assert!(phone.contains("SIP/2.0 407"), "{phone}");
    let (ok, carrier) = carrier.finish().await;
    assert!(ok, "the carrier got the call and the BYE: {carrier}");
    let invite = received_invite(&carrier);
    assert!(
        invite.starts_with("INVITE sip:4930123456@127.0.0.1"),
        "the dialled number, as sipgate writes it: {invite}"
    );
    assert!(
        invite.contains("<sip:4930901820@127.0.0.1>"),
        "our number as caller ID: {invite}"
    );

    let call = ended_call(&app).await;
    assert_eq!(call["direction"], "outgoing", "{call}");
    assert_eq!(call["user"], json!(anna), "{call}");
    assert_eq!(call["customer"], "+4930123456", "{call}");
    assert_eq!(call["outcome"], "answered", "{call}");
    // T7: outgoing calls create leads on this number.
    let lead = &app.leads().await[0];
    assert_eq!(lead["phones"], json!(["+4930123456"]), "{lead}");
    app.stop().await;
}

/// T5: a known caller whose responsible has no registered phone falls back to the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_responsible_not_registered_falls_back_to_the_queue() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    app.post_ok(
        "/api/v1/contacts",
        json!({"name": "Clara Customer", "phones": [CALLER], "responsible": line.ben}),
        StatusCode::CREATED,
    )
    .await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let anna_answers = anna_phone.expect_call("agent_answer.xml");
    let (ok, carrier) = carrier_call(&app, "carrier_call.xml", &[]).finish().await;
    assert!(ok, "{carrier}");
    assert!(anna_answers.finish().await.0);
    let call = ended_call(&app).await;
    assert_eq!(
        call["route"][0],
        json!(line.ben),
        "Ben first in the order: {call}"
    );
    assert_eq!(call["answered_by"], json!(line.anna), "{call}");
    app.stop().await;
}

/// T6: a call from an exception number is routed and logged, and the CRM is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t6_an_exception_number_is_routed_and_logged_only() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    app.post_ok(
        "/api/v1/exceptions",
        json!({"value": CALLER}),
        StatusCode::CREATED,
    )
    .await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let anna_answers = anna_phone.expect_call("agent_answer.xml");
    let (ok, carrier) = carrier_call(&app, "carrier_call.xml", &[]).finish().await;
    assert!(ok, "{carrier}");
    let (ok, phone) = anna_answers.finish().await;
    assert!(ok, "{phone}");
    assert!(
        !received_invite(&phone).contains("Call-Info"),
        "no CRM entity to link: {phone}"
    );
    let call = ended_call(&app).await;
    assert_eq!(call["crm_action"], "logged", "{call}");
    assert_eq!(call["outcome"], "answered");
    assert!(app.leads().await.is_empty());
    app.stop().await;
}

/// T4: manual mode creates nothing when the INVITE arrives; the agent creates the lead
/// from the call window afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_manual_mode_creates_nothing_until_the_agent_asks() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    let number = app.get_ok("/api/v1/numbers").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/numbers/{number}"),
            Some(&app.admin),
            Some(json!({"lead_creation": "manual"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let anna_answers = anna_phone.expect_call("agent_answer.xml");
    let (ok, carrier) = carrier_call(&app, "carrier_call.xml", &[]).finish().await;
    assert!(ok, "{carrier}");
    assert!(anna_answers.finish().await.0);
    let call = ended_call(&app).await;
    assert_eq!(call["crm_action"], "offered", "{call}");
    assert!(
        app.leads().await.is_empty(),
        "nothing before the agent chooses"
    );
    let created = app
        .post_ok(
            &format!(
                "/api/v1/calls/{}/create-entity",
                call["id"].as_str().unwrap()
            ),
            json!({"kind": "lead"}),
            StatusCode::CREATED,
        )
        .await;
    assert!(created.to_string().contains("lead:"), "{created}");
    assert_eq!(app.leads().await[0]["phones"], json!([CALLER]));
    app.stop().await;
}

/// T3, T12: in simple mode a new caller becomes a contact and a deal in the default
/// pipeline's first stage, and the agent's phone shows the contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t3_simple_mode_creates_a_contact_and_a_deal_for_a_new_caller() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    app.put_ok("/api/v1/settings/crm", json!({"mode": "simple"}))
        .await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let anna_answers = anna_phone.expect_call("agent_answer.xml");
    let (ok, carrier) = carrier_call(&app, "carrier_call.xml", &[]).finish().await;
    assert!(ok, "{carrier}");
    let (ok, phone) = anna_answers.finish().await;
    assert!(ok, "{phone}");
    let contacts = app.get_ok("/api/v1/contacts").await;
    let contact = &contacts["items"][0];
    assert_eq!(contact["phones"], json!([CALLER]), "{contacts}");
    assert_eq!(contact["responsible"], json!(line.anna));
    let deals = app.get_ok("/api/v1/deals").await;
    let deal = &deals["items"][0];
    assert_eq!(deal["contact"], contact["id"], "{deals}");
    assert_eq!(deal["stage"], "default-new", "{deal}");
    assert!(
        received_invite(&phone).contains(&format!(
            "/api/v1/contacts/{}>",
            contact["id"].as_str().unwrap()
        )),
        "the phone links the contact: {phone}"
    );
    assert!(app.leads().await.is_empty(), "no lead step in simple mode");
    app.stop().await;
}

/// An agent dials a colleague's extension: an internal call, rung on the colleague's
/// phones with the caller's name and extension, kept out of the CRM and the call log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_calls_a_colleagues_extension() {
    let app = TestApp::spawn_for_sipp().await;
    // No trunk here: every INVITE from loopback is a phone's.
    agent(&app, "Anna", "101").await;
    agent(&app, "Ben", "102").await;
    let ben_phone = Phone::register(&app, "102", "pw-102-secret").await;
    let ben_answers = ben_phone.expect_call("agent_answer.xml");
    let anna_dials = Sipp::start(
        "agent_dial.xml",
        free_port(),
        Some(app.sip_addr().to_string()),
        &[
            "-s",
            "101",
            "-au",
            "101",
            "-ap",
            "pw-101-secret",
            "-key",
            "dial",
            "102",
        ],
    );
    let (ok, anna) = anna_dials.finish().await;
    assert!(ok, "{anna}");
    let (ok, ben) = ben_answers.finish().await;
    assert!(ok, "{ben}");
    let invite = received_invite(&ben);
    assert!(
        invite.contains("From: \"Anna\" <sip:101@"),
        "Ben's phone shows Anna: {invite}"
    );
    assert!(!invite.contains("Call-Info"), "{invite}");
    assert_eq!(app.get_ok("/api/v1/calls").await["items"], json!([]));
    assert!(app.leads().await.is_empty());
    app.stop().await;
}

/// T2: a phone registered from an address a trunk's `allowed_ips` also cover (one office
/// NAT for the PBX and the phones) is still a phone when it calls from its registered
/// address: it authenticates and its call is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_phone_is_not_mistaken_for_a_trunk_on_a_shared_address() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await; // its trunk allows 127.0.0.1
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let ben_phone = Phone::register(&app, "102", "pw-102-secret").await;
    let ben_answers = ben_phone.expect_call("agent_answer.xml");
    let anna_dials = Sipp::start(
        "agent_dial.xml",
        anna_phone.port,
        Some(app.sip_addr().to_string()),
        &[
            "-s",
            "101",
            "-au",
            "101",
            "-ap",
            "pw-101-secret",
            "-key",
            "dial",
            "102",
        ],
    );
    let (ok, anna) = anna_dials.finish().await;
    assert!(ok, "{anna}");
    assert!(
        anna.contains("SIP/2.0 407"),
        "challenged like a phone: {anna}"
    );
    let (ok, ben) = ben_answers.finish().await;
    assert!(ok, "{ben}");
    app.stop().await;
}

/// A phone over one TCP connection: reads whole SIP messages from it.
struct TcpPhone {
    stream: tokio::net::TcpStream,
    pending: bytes::BytesMut,
}

impl TcpPhone {
    async fn send(&mut self, text: &str) {
        use tokio::io::AsyncWriteExt as _;
        self.stream.write_all(text.as_bytes()).await.unwrap();
    }

    /// The next whole message, within `within`.
    async fn next(&mut self, within: Duration) -> Option<String> {
        use leadline::sip::message::{Frame, Limits, frame};
        use tokio::io::AsyncReadExt as _;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match frame(&self.pending, &Limits::UDP) {
                Frame::Message(n) => {
                    let message = self.pending.split_to(n);
                    return Some(String::from_utf8_lossy(&message).into_owned());
                }
                Frame::KeepAlive(n) => {
                    let _ = self.pending.split_to(n);
                    continue;
                }
                _ => {}
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.pending)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }
}

fn header_line<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .unwrap_or_else(|| panic!("no {name} in {message}"))
}

/// Connection reuse (RFC 3261 §18.2.2, RFC 5626): a phone registered over
/// TCP — behind NAT only reachable that way — gets its calls down the very connection it
/// registered over, not a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registered_over_tcp_is_called_on_its_own_connection() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    let gw = app.sip_addr();
    let mut phone = TcpPhone {
        stream: tokio::net::TcpStream::connect(gw).await.unwrap(),
        pending: bytes::BytesMut::new(),
    };
    let local = phone.stream.local_addr().unwrap();
    let register = |cseq: u32, authorization: &str| {
        format!(
            "REGISTER sip:{gw} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-tcp-reg-{cseq}\r\n\
             From: <sip:101@{gw}>;tag=tcpphone\r\nTo: <sip:101@{gw}>\r\nCall-ID: tcp-phone-reg\r\n\
             CSeq: {cseq} REGISTER\r\nContact: <sip:101@{local};transport=tcp>\r\n\
             Max-Forwards: 70\r\nExpires: 300\r\n{authorization}Content-Length: 0\r\n\r\n"
        )
    };
    phone.send(&register(1, "")).await;
    let challenge = phone
        .next(Duration::from_secs(5))
        .await
        .expect("a challenge");
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let offered = header_line(&challenge, "WWW-Authenticate")
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .to_owned();
    let answer = leadline::sip::digest::answer(
        &offered,
        "REGISTER",
        &format!("sip:{gw}"),
        "101",
        "pw-101-secret",
        "tcpcnonce",
        1,
    )
    .unwrap();
    phone
        .send(&register(2, &format!("Authorization: {answer}\r\n")))
        .await;
    let ok = phone.next(Duration::from_secs(5)).await.expect("an answer");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");

    let carrier = carrier_call(&app, "carrier_unanswered.xml", &[]);
    let invite = phone
        .next(Duration::from_secs(10))
        .await
        .expect("the INVITE comes down the registration's connection");
    assert!(invite.starts_with("INVITE sip:101@"), "{invite}");
    let to = header_line(&invite, "To");
    let busy = format!(
        "SIP/2.0 486 Busy Here\r\n{}\r\n{}\r\n{to};tag=tcpbusy\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
        header_line(&invite, "Via"),
        header_line(&invite, "From"),
        header_line(&invite, "Call-ID"),
        header_line(&invite, "CSeq"),
    );
    phone.send(&busy).await;
    let ack = phone.next(Duration::from_secs(5)).await.expect("the ACK");
    assert!(ack.starts_with("ACK "), "{ack}");
    let (ok, carrier) = carrier.finish().await;
    assert!(
        ok && carrier.contains("SIP/2.0 486"),
        "only phone busy: {carrier}"
    );
    app.stop().await;
}

/// Item 2, session timers (RFC 4028): an interval under 90 s is refused with 422 and our
/// Min-SE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_interval_too_small_is_422() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let gw = app.sip_addr();
    let invite = format!(
        "INVITE sip:{NUMBER}@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-se-30\r\n\
         From: <sip:{CALLER}@{local}>;tag=se\r\nTo: <sip:{NUMBER}@{gw}>\r\nCall-ID: se-30\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:c@{local}>\r\nMax-Forwards: 70\r\nSupported: timer\r\n\
         Session-Expires: 30\r\nContent-Length: 0\r\n\r\n"
    );
    socket.send_to(invite.as_bytes(), gw).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut answer = String::new();
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
        answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !answer.starts_with("SIP/2.0 100") {
            break;
        }
    }
    assert!(answer.starts_with("SIP/2.0 422"), "{answer}");
    assert!(answer.contains("Min-SE: 90"), "{answer}");
    app.stop().await;
}

/// Item 2, session timers (RFC 4028): the caller asks to refresh every 90 s, the answer
/// agrees (`Session-Expires`, `Require: timer`); no refresh comes, so at expiry the
/// gateway ends the call on both sides — a carrier gone silent leaves no agent hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_not_refreshed_is_ended_on_both_sides() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    // SIPp sends no RTP: without the relay the media timeout cannot end the call first.
    media_relay_off(&app).await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let anna = Sipp::start(
        "agent_answer.xml",
        anna_phone.port,
        None,
        &["-timeout", "150s"],
    );
    let carrier = carrier_call(&app, "carrier_session_timer.xml", &["-timeout", "150s"]);
    let (ok, carrier) = carrier.finish().await;
    assert!(ok, "the timer agreed, then the gateway's BYE: {carrier}");
    assert!(carrier.contains("Require: timer"), "{carrier}");
    let (ok, anna) = anna.finish().await;
    assert!(ok, "Anna's leg got the BYE too: {anna}");
    let call = ended_call(&app).await;
    assert_eq!(call["answered_by"], json!(line.anna), "{call}");
    let duration = call["duration_s"].as_i64().unwrap();
    assert!(
        (89..=100).contains(&duration),
        "ended at the interval: {call}"
    );
    app.stop().await;
}

/// Calls in progress hold no per-source transaction slot: with a limit of 2 transactions
/// per source, a carrier still holds three calls at once and hangs each up. (Found by
/// `bench/call-load`: held calls used up the carrier's slots, its BYEs got 503 and its
/// address stayed blocked.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_calls_do_not_use_up_the_carriers_transaction_slots() {
    let app =
        TestApp::spawn_for_sipp_with(|config| config.sip_max_transactions_per_source = 2).await;
    line(&app, 20).await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let anna = Sipp::start("agent_answer.xml", anna_phone.port, None, &["-m", "3"]);
    let carrier = Sipp::start(
        "carrier_call_held.xml",
        free_port(),
        Some(app.sip_addr().to_string()),
        &[
            "-s", NUMBER, "-key", "caller", CALLER, "-m", "3", "-l", "3", "-r", "10",
        ],
    );
    let (ok, carrier) = carrier.finish().await;
    assert!(ok, "three calls held at once, each hung up: {carrier}");
    assert!(!carrier.contains("SIP/2.0 503"), "{carrier}");
    let (ok, anna) = anna.finish().await;
    assert!(ok, "{anna}");
    app.stop().await;
}
