//! Caller trust (T6: verification, hourly limit, withheld callers) and forwarded calls
//! (T2, T8: a call forwarded from one of our numbers follows that number), through the
//! B2BUA with SIPp as the carrier and through `/calls/events`.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

use crate::calls_sip::{CALLER, NUMBER, Sipp, line};
use crate::common::wait_until;
use crate::helpers::TestApp;

/// A number of ours the caller dialled before their call was forwarded to [`NUMBER`].
const FORWARDED: &str = "+4930901821";
/// A forwarding number that is not ours.
const ELSEWHERE: &str = "+4940111222";

/// One carrier call to our number that nobody answers (no phone is registered), with
/// `verstat` in P-Asserted-Identity and `diverted` in Diversion; the SIPp trace.
async fn trust_call(app: &TestApp, caller: &str, verstat: &str, diverted: &str) -> String {
    let args = [
        "-s", NUMBER, "-key", "caller", caller, "-key", "verstat", verstat, "-key", "diverted",
        diverted,
    ];
    let run = Sipp::start(
        "carrier_trust.xml",
        0,
        Some(app.sip_addr().to_string()),
        &args,
    );
    let (ok, trace) = run.finish().await;
    assert!(ok, "{trace}");
    trace
}

/// The call log's rows once `n` calls have ended, oldest first.
async fn ended_calls(app: &TestApp, n: usize) -> Vec<Value> {
    let mut calls = wait_until(Duration::from_secs(10), "the calls to end", || async {
        let calls = app.get_ok("/api/v1/calls").await["items"]
            .as_array()?
            .clone();
        (calls.len() == n && calls.iter().all(|c| c["ended_at"].is_string())).then_some(calls)
    })
    .await;
    calls.reverse();
    calls
}

async fn number_id(app: &TestApp, number: &str) -> String {
    let numbers = app.get_ok("/api/v1/numbers").await;
    numbers["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["number"] == number)
        .and_then(|n| n["id"].as_str())
        .unwrap()
        .to_owned()
}

async fn set_trust(app: &TestApp, trust: Value) {
    let id = number_id(app, NUMBER).await;
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/numbers/{id}"),
            Some(&app.admin),
            Some(json!({ "trust": trust })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["trust"], trust, "{body}");
}

async fn activities_of(app: &TestApp, entity: &str) -> usize {
    app.get_ok(&format!("/api/v1/activities?entity={entity}"))
        .await["items"]
        .as_array()
        .unwrap()
        .len()
}

/// T2, T8: a carrier forwards a call for our number B to our number A; the Diversion
/// names B, so the call is B's: the lead takes B's source and the call shows B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t2_t8_a_call_forwarded_from_our_number_follows_that_numbers_source() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    app.post_ok(
        "/api/v1/sources",
        json!({"code": "PARTNER", "name": "Partner line"}),
        StatusCode::CREATED,
    )
    .await;
    app.post_ok(
        "/api/v1/numbers",
        json!({"number": FORWARDED, "default_country": "DE", "source": "PARTNER"}),
        StatusCode::CREATED,
    )
    .await;
    trust_call(&app, CALLER, "TN-Validation-Passed", FORWARDED).await;
    let call = &ended_calls(&app, 1).await[0];
    assert_eq!(call["diverted_from"], FORWARDED, "{call}");
    assert_eq!(call["number"], FORWARDED, "{call}");
    assert_eq!(call["crm_action"], "created", "{call}");
    assert_eq!(call["trust"]["verstat"], "TN-Validation-Passed", "{call}");
    assert_eq!(call["trust"]["flag"], Value::Null, "{call}");
    let leads = app.leads().await;
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0]["source"], "PARTNER", "{}", leads[0]);
    app.stop().await;
}

/// T2: a forward from a number that is not ours is kept on the call, and the call stays
/// on the number it reached; over `/calls/events` the PBX names the forward itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t2_t8_a_forward_from_elsewhere_stays_on_our_number_and_events_take_diverted_from() {
    let app = TestApp::spawn().await;
    app.sales_line().await;
    app.post_ok(
        "/api/v1/sources",
        json!({"code": "PARTNER", "name": "Partner line"}),
        StatusCode::CREATED,
    )
    .await;
    app.post_ok(
        "/api/v1/numbers",
        json!({"number": FORWARDED, "default_country": "DE", "source": "PARTNER"}),
        StatusCode::CREATED,
    )
    .await;
    let elsewhere = app
        .post_ok(
            "/api/v1/calls/events",
            json!({"call_id": "fw-1", "event": "ringing", "direction": "incoming",
                   "from": "030 1234567", "to": NUMBER, "diverted_from": "040 111222"}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(elsewhere["call"]["diverted_from"], ELSEWHERE, "{elsewhere}");
    assert_eq!(elsewhere["call"]["number"], NUMBER, "{elsewhere}");
    let ours = app
        .post_ok(
            "/api/v1/calls/events",
            json!({"call_id": "fw-2", "event": "ringing", "direction": "incoming",
                   "from": "030 7654321", "to": NUMBER, "diverted_from": FORWARDED}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(ours["call"]["number"], FORWARDED, "{ours}");
    assert_eq!(ours["call"]["to"], NUMBER, "{ours}");
    let lead = ours["created"][0].as_str().unwrap();
    let lead = app
        .get_ok(&format!(
            "/api/v1/leads/{}",
            lead.trim_start_matches("lead:")
        ))
        .await;
    assert_eq!(lead["source"], "PARTNER", "{lead}");
    app.stop().await;
}

/// T6: with `reject_failed_verification`, a caller the carrier failed to verify is
/// declined with 603 and the call log keeps the call with its flag; nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t6_failed_verification_is_declined_603_when_the_number_rejects_it() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    set_trust(
        &app,
        json!({"reject_failed_verification": true, "max_calls_per_caller_per_hour": null,
               "anonymous": "route"}),
    )
    .await;
    let trace = trust_call(&app, CALLER, "TN-Validation-Failed", ELSEWHERE).await;
    assert!(trace.contains("SIP/2.0 603"), "603 Decline: {trace}");
    assert!(trace.contains("Warning: 399 leadline"), "{trace}");
    let call = &ended_calls(&app, 1).await[0];
    assert_eq!(call["trust"]["flag"], "verification_failed", "{call}");
    assert_eq!(call["trust"]["verstat"], "TN-Validation-Failed", "{call}");
    assert_eq!(call["crm_action"], "logged", "{call}");
    assert_eq!(call["outcome"], "failed", "{call}");
    assert_eq!(call["activity"], Value::Null, "{call}");
    assert!(app.leads().await.is_empty());
    app.stop().await;
}

/// T6: without the rejection, the unverified caller is routed (the queue rings: nobody
/// is registered, so 480) but creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t6_failed_verification_is_routed_and_creates_nothing_by_default() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    let trace = trust_call(&app, CALLER, "TN-Validation-Failed", ELSEWHERE).await;
    assert!(
        trace.contains("SIP/2.0 480"),
        "routed to the queue: {trace}"
    );
    let call = &ended_calls(&app, 1).await[0];
    assert_eq!(call["trust"]["flag"], "verification_failed", "{call}");
    assert_eq!(call["crm_action"], "logged", "{call}");
    assert_eq!(call["route"], json!([line.anna, line.ben]), "{call}");
    assert_eq!(call["activity"], Value::Null, "{call}");
    assert!(app.leads().await.is_empty());
    app.stop().await;
}

/// T6: with a limit of 3 calls an hour, the caller's first three calls behave as always
/// (a lead, then two more activities on it); the 4th and 5th are flagged `rate`, still
/// routed, and add nothing to the CRM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t6_calls_beyond_the_hourly_limit_are_flagged_rate_and_add_nothing() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    set_trust(
        &app,
        json!({"reject_failed_verification": false, "max_calls_per_caller_per_hour": 3,
               "anonymous": "route"}),
    )
    .await;
    for n in 1..=5 {
        trust_call(&app, CALLER, "TN-Validation-Passed", ELSEWHERE).await;
        ended_calls(&app, n).await;
    }
    let calls = ended_calls(&app, 5).await;
    let flags: Vec<&Value> = calls.iter().map(|c| &c["trust"]["flag"]).collect();
    assert_eq!(
        flags,
        [
            &Value::Null,
            &Value::Null,
            &Value::Null,
            &json!("rate"),
            &json!("rate")
        ]
    );
    let actions: Vec<&Value> = calls.iter().map(|c| &c["crm_action"]).collect();
    assert_eq!(
        actions,
        ["created", "attached", "attached", "logged", "logged"]
    );
    for call in &calls[3..] {
        assert_eq!(call["activity"], Value::Null, "{call}");
        // Still routed: the whole queue, in its turn order.
        let mut route: Vec<&str> = call["route"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        route.sort_unstable();
        let mut queue = [line.anna.as_str(), line.ben.as_str()];
        queue.sort_unstable();
        assert_eq!(route, queue, "{call}");
        assert!(
            call["crm_reason"].as_str().unwrap().contains("per hour"),
            "{call}"
        );
    }
    let leads = app.leads().await;
    assert_eq!(leads.len(), 1);
    let lead = format!("lead:{}", leads[0]["id"].as_str().unwrap());
    assert_eq!(activities_of(&app, &lead).await, 3);
    app.stop().await;
}

/// T6: a withheld caller on a number with `"anonymous": "reject"` is refused with 433
/// Anonymity Disallowed, and logged with the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t6_an_anonymous_caller_is_refused_433_when_the_number_rejects_them() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    set_trust(
        &app,
        json!({"reject_failed_verification": false, "max_calls_per_caller_per_hour": null,
               "anonymous": "reject"}),
    )
    .await;
    let trace = trust_call(&app, "anonymous", "No-TN-Validation", ELSEWHERE).await;
    assert!(
        trace.contains("SIP/2.0 433"),
        "433 Anonymity Disallowed: {trace}"
    );
    let call = &ended_calls(&app, 1).await[0];
    assert_eq!(call["trust"]["flag"], "anonymous", "{call}");
    assert_eq!(call["crm_action"], "logged", "{call}");
    assert!(app.leads().await.is_empty());
    app.stop().await;
}

/// The trust rules are validated: 422 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t6_bad_trust_rules_are_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let line = app.sales_line().await;
    let created = app
        .get_ok(&format!("/api/v1/numbers/{}", line.number))
        .await;
    assert_eq!(
        created["trust"],
        json!({"reject_failed_verification": false, "max_calls_per_caller_per_hour": null,
               "anonymous": "route"})
    );
    for (trust, field) in [
        (json!({"anonymous": "maybe"}), "trust.anonymous"),
        (
            json!({"max_calls_per_caller_per_hour": 0}),
            "trust.max_calls_per_caller_per_hour",
        ),
        (
            json!({"max_calls_per_caller_per_hour": -1}),
            "trust.max_calls_per_caller_per_hour",
        ),
        (
            json!({"reject_failed_verification": "yes"}),
            "trust.reject_failed_verification",
        ),
    ] {
        let (status, body) = app
            .request(
                reqwest::Method::PATCH,
                &format!("/api/v1/numbers/{}", line.number),
                Some(&app.admin),
                Some(json!({ "trust": trust })),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{trust}: {body}");
        assert_eq!(body["error"]["field"], field, "{trust}: {body}");
    }
    app.stop().await;
}
