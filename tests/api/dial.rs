//! Click-to-call (`POST /api/v1/calls/dial`) against the real gateway, with SIPp as the
//! agent's registered phone and as the far side of the carrier trunk.
//!
//! The set-up and the two SIPp parties are helpers ([`DialLine`]) so that other tests
//! (a browser driving the console) can run the same flow: "the agent's phone registered
//! and answering" plus "the carrier's far side receiving the customer's INVITE".

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::calls_sip::{CallWindow, NUMBER, Phone, Sipp, ended_call};
use crate::common::free_port;
use crate::helpers::TestApp;

/// Anna's extension and SIP password.
pub(crate) const AGENT_EXTENSION: &str = "101";
pub(crate) const AGENT_SIP_PASSWORD: &str = "pw-101-secret";
/// The customer dialled, as an agent types it, and in E.164.
pub(crate) const CUSTOMER: &str = "030 1234567";
pub(crate) const CUSTOMER_E164: &str = "+49301234567";

/// Click-to-call's set-up: Anna, an agent with a SIP password and an API token; a
/// carrier trunk with the `sipgate` profile (numbers written E.164 without `+`) whose
/// far side is whatever listens on `carrier_port`; our number on that trunk with
/// `directions: both` (T7: outgoing calls create leads).
pub(crate) struct DialLine {
    pub(crate) anna: String,
    pub(crate) token: String,
    pub(crate) trunk: String,
    pub(crate) carrier_port: u16,
}

impl DialLine {
    pub(crate) async fn new(app: &TestApp, ring_timeout_s: u32) -> DialLine {
        let anna = app
            .post_ok(
                "/api/v1/users",
                json!({"name": "Anna", "email": "anna@example.com", "role": "agent",
                       "extension": AGENT_EXTENSION, "sip_password": AGENT_SIP_PASSWORD}),
                StatusCode::CREATED,
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let token = app.token_for(&anna).await;
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
            json!({"number": NUMBER, "default_country": "DE", "trunk": trunk,
                   "directions": "both", "ring_timeout_s": ring_timeout_s}),
            StatusCode::CREATED,
        )
        .await;
        DialLine {
            anna,
            token,
            trunk,
            carrier_port,
        }
    }

    /// Anna's phone registered with the gateway, then running `scenario` for the
    /// gateway's INVITE: `agent_answer.xml` rings, answers and waits for the BYE;
    /// `agent_no_answer.xml` rings until cancelled; `answer_and_hang_up.xml` answers and
    /// hangs up 300 ms later.
    pub(crate) async fn agent_phone(&self, app: &TestApp, scenario: &str) -> Sipp {
        Phone::register(app, AGENT_EXTENSION, AGENT_SIP_PASSWORD)
            .await
            .expect_call(scenario)
    }

    /// The carrier trunk's far side on its port, running `scenario` for the customer's
    /// INVITE: `answer_and_hang_up.xml` answers and hangs up after 300 ms.
    pub(crate) fn carrier_far_side(&self, scenario: &str) -> Sipp {
        Sipp::start(scenario, self.carrier_port, None, &[])
    }

    /// `POST /calls/dial` with Anna's token.
    pub(crate) async fn dial(&self, app: &TestApp, body: Value) -> (StatusCode, Value) {
        app.request(
            reqwest::Method::POST,
            "/api/v1/calls/dial",
            Some(&self.token),
            Some(body),
        )
        .await
    }
}

/// The first INVITE in a SIPp trace, up to its body.
fn invite_in(messages: &str) -> &str {
    let start = messages
        .find("INVITE sip:")
        .expect("an INVITE was received");
    let end = messages[start..]
        .find("\n\n")
        .map_or(messages.len(), |e| start + e);
    &messages[start..end]
}

/// T7 end to end: Anna clicks to call; her registered phone rings and answers first;
/// then the carrier receives the customer's INVITE with our number as caller ID, both
/// written as the trunk's profile says; the customer answers and hangs up, and Anna's
/// phone gets the BYE. The call is Anna's outgoing call from our number, answered, in
/// the call log and the call window, and created a lead that is Anna's with the call's
/// activity on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t7_click_to_call_rings_the_agent_then_calls_the_customer_and_is_logged_as_theirs() {
    let app = TestApp::spawn_for_sipp().await;
    let line = DialLine::new(&app, 20).await;
    let mut window = CallWindow::open(&app, &line.token).await;
    let phone = line.agent_phone(&app, "agent_answer.xml").await;
    let carrier = line.carrier_far_side("answer_and_hang_up.xml");

    let (status, body) = line
        .dial(&app, json!({"to": CUSTOMER, "number": NUMBER}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let call = &body["call"];
    assert_eq!(call["direction"], "outgoing", "{body}");
    assert_eq!(call["user"], json!(line.anna), "{body}");
    assert_eq!(call["number"], NUMBER, "{body}");
    assert_eq!(call["customer"], CUSTOMER_E164, "{body}");
    assert_eq!(call["live"], true, "{body}");
    assert_eq!(
        call["ended_at"],
        Value::Null,
        "answered before anyone picks up"
    );
    let id = call["id"].as_str().unwrap().to_owned();

    let (ok, far_side) = carrier.finish().await;
    assert!(
        ok,
        "the carrier got the customer's call and hung up: {far_side}"
    );
    let (ok, agent) = phone.finish().await;
    assert!(ok, "Anna's phone rang, answered and got the BYE: {agent}");

    let to_phone = invite_in(&agent);
    assert!(
        to_phone.contains(&format!("<sip:{CUSTOMER_E164}@")),
        "Anna's phone shows whom it calls: {to_phone}"
    );
    let to_customer = invite_in(&far_side);
    assert!(
        to_customer.starts_with("INVITE sip:49301234567@127.0.0.1"),
        "the customer, as sipgate writes numbers: {to_customer}"
    );
    let from = to_customer
        .lines()
        .find(|l| l.starts_with("From:"))
        .expect("a From header");
    assert!(
        from.contains("<sip:4930901820@127.0.0.1>"),
        "our number as caller ID, as sipgate writes it: {from}"
    );
    if let Some(asserted) = to_customer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("p-asserted-identity:"))
    {
        assert!(asserted.contains("sip:4930901820@"), "{asserted}");
    }
    // Both legs go through the gateway's relay.
    assert!(to_customer.contains("c=IN IP4 127.0.0.1"), "{to_customer}");

    let logged = ended_call(&app).await;
    assert_eq!(logged["id"], json!(id));
    assert_eq!(logged["direction"], "outgoing", "{logged}");
    assert_eq!(logged["user"], json!(line.anna), "{logged}");
    assert_eq!(logged["answered_by"], json!(line.anna), "{logged}");
    assert_eq!(logged["number"], NUMBER, "{logged}");
    assert_eq!(logged["customer"], CUSTOMER_E164, "{logged}");
    assert_eq!(logged["outcome"], "answered", "{logged}");
    let legs = logged["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 2, "Anna's phone, then the customer: {logged}");
    assert_eq!(legs[0]["state"], "answered", "{logged}");
    assert!(
        legs[0]["target"].as_str().unwrap().contains("127.0.0.1"),
        "{logged}"
    );
    assert_eq!(legs[1]["state"], "answered", "{logged}");
    assert!(
        legs[1]["target"]
            .as_str()
            .unwrap()
            .starts_with("sip:49301234567@127.0.0.1"),
        "{logged}"
    );

    // T7: the number creates on outgoing calls; the lead is the dialler's.
    let leads = app.leads().await;
    assert_eq!(leads.len(), 1, "{leads:?}");
    let lead = &leads[0];
    assert_eq!(lead["phones"], json!([CUSTOMER_E164]), "{lead}");
    assert_eq!(lead["responsible"], json!(line.anna), "{lead}");
    assert_eq!(lead["source"], "CALL", "{lead}");
    assert_eq!(
        logged["created"],
        json!([format!("lead:{}", lead["id"].as_str().unwrap())])
    );
    let timeline = app
        .get_ok(&format!(
            "/api/v1/activities?entity=lead:{}",
            lead["id"].as_str().unwrap()
        ))
        .await;
    let activity = &timeline["items"][0];
    assert_eq!(activity["id"], logged["activity"], "{timeline}");
    assert_eq!(activity["direction"], "outgoing", "{activity}");
    assert_eq!(activity["completed"], true, "{activity}");

    let seen = window
        .read_until("event: ended", Duration::from_secs(10))
        .await;
    for event in ["event: ringing", "event: answered", "event: ended"] {
        assert!(
            seen.contains(event),
            "{event} in Anna's call window: {seen}"
        );
    }
    assert_eq!(
        seen.matches("event: ringing").count(),
        1,
        "one ringing, when her phone rang: {seen}"
    );
    assert!(seen.contains("\"direction\":\"outgoing\""), "{seen}");
    app.stop().await;
}

/// T7, the employee's side first: Anna's phone rings for the number's ring timeout and
/// is cancelled; the customer is never called and the attempt ends as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t7_click_to_call_the_agent_does_not_answer_and_the_customer_is_never_called() {
    let app = TestApp::spawn_for_sipp().await;
    let line = DialLine::new(&app, 5).await;
    let phone = line.agent_phone(&app, "agent_no_answer.xml").await;
    let carrier = line.carrier_far_side("answer_and_hang_up.xml");

    let (status, body) = line.dial(&app, json!({"to": CUSTOMER})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["call"]["number"], NUMBER,
        "the number allowing outgoing calls"
    );

    let (ok, agent) = phone.finish().await;
    assert!(ok, "Anna's phone rang and was cancelled: {agent}");
    let logged = ended_call(&app).await;
    assert_eq!(logged["outcome"], "cancelled", "{logged}");
    assert_eq!(logged["answered_by"], Value::Null, "{logged}");
    assert_eq!(logged["legs"][0]["state"], "no_answer", "{logged}");
    assert_eq!(logged["legs"].as_array().unwrap().len(), 1, "{logged}");
    let far_side = carrier.stop().await;
    assert!(
        !far_side.contains("INVITE"),
        "the customer was never called: {far_side}"
    );
    app.stop().await;
}

/// The customer is busy: Anna's answered phone is hung up with BYE and the call is
/// logged as busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_to_call_to_a_busy_customer_hangs_up_the_agents_phone() {
    let app = TestApp::spawn_for_sipp().await;
    let line = DialLine::new(&app, 20).await;
    let phone = line.agent_phone(&app, "agent_answer.xml").await;
    let carrier = line.carrier_far_side("agent_busy.xml");

    let (status, body) = line
        .dial(&app, json!({"to": CUSTOMER, "number": null}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (ok, far_side) = carrier.finish().await;
    assert!(ok, "the carrier said busy: {far_side}");
    let (ok, agent) = phone.finish().await;
    assert!(ok, "Anna's phone answered and got the BYE: {agent}");
    let logged = ended_call(&app).await;
    assert_eq!(logged["outcome"], "busy", "{logged}");
    assert_eq!(logged["legs"][1]["state"], "busy", "{logged}");
    app.stop().await;
}

/// Anna hangs up while the customer's phone rings: the customer's call is cancelled and
/// so is the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_to_call_the_agent_hanging_up_cancels_the_customers_call() {
    let app = TestApp::spawn_for_sipp().await;
    let line = DialLine::new(&app, 20).await;
    let phone = line.agent_phone(&app, "answer_and_hang_up.xml").await;
    let carrier = line.carrier_far_side("agent_no_answer.xml");

    let (status, body) = line.dial(&app, json!({"to": CUSTOMER})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (ok, agent) = phone.finish().await;
    assert!(ok, "Anna's phone answered and hung up: {agent}");
    let (ok, far_side) = carrier.finish().await;
    assert!(
        ok,
        "the customer's phone rang and was cancelled: {far_side}"
    );
    let logged = ended_call(&app).await;
    assert_eq!(logged["outcome"], "cancelled", "{logged}");
    assert_eq!(logged["answered_at"], Value::Null, "{logged}");
    assert_eq!(logged["legs"][1]["state"], "cancelled", "{logged}");
    app.stop().await;
}

/// What click-to-call refuses, and how: no registered phone (409), a `to` that is no
/// number (422 naming `to`), a number without trunk (422 naming `number`), no number
/// for outgoing calls, a trunk token (403) and the bootstrap admin token (422).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_to_call_refusals_name_the_problem() {
    let app = TestApp::spawn_for_sipp().await;
    let line = DialLine::new(&app, 20).await;

    let (status, body) = line.dial(&app, json!({"to": CUSTOMER})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "no_registered_phone", "{body}");

    let (status, body) = line.dial(&app, json!({"to": "call me"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "to", "{body}");
    let (status, body) = line.dial(&app, json!({"to": "101"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["error"]["field"], "to",
        "an extension is no customer: {body}"
    );

    let (status, body) = line
        .dial(&app, json!({"to": CUSTOMER, "number": "+4930999999"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "number", "{body}");

    app.post_ok(
        "/api/v1/numbers",
        json!({"number": "+4930111111", "default_country": "DE"}),
        StatusCode::CREATED,
    )
    .await;
    let (status, body) = line
        .dial(&app, json!({"to": CUSTOMER, "number": "+4930111111"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "no_trunk", "{body}");
    assert_eq!(body["error"]["field"], "number", "{body}");

    let number = app.get_ok("/api/v1/numbers").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["number"] == NUMBER)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/numbers/{number}"),
            Some(&app.admin),
            Some(json!({"directions": "incoming"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = line.dial(&app, json!({"to": CUSTOMER})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "no_outgoing_number", "{body}");

    let trunk_token = app
        .post_ok(
            &format!("/api/v1/trunks/{}/tokens", line.trunk),
            json!({}),
            StatusCode::CREATED,
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for (token, expected) in [
        (trunk_token.as_str(), StatusCode::FORBIDDEN),
        (app.admin.as_str(), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (status, body) = app
            .request(
                reqwest::Method::POST,
                "/api/v1/calls/dial",
                Some(token),
                Some(json!({"to": CUSTOMER, "number": NUMBER})),
            )
            .await;
        assert_eq!(status, expected, "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    // Nothing was placed: no call in the log.
    let calls = app.get_ok("/api/v1/calls").await;
    assert_eq!(calls["items"], json!([]), "{calls}");
    app.stop().await;
}
