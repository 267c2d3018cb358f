//! Call-centre queueing through the real binary: SIPp as the carrier's callers and as the
//! agents' phones. Callers wait with music when nobody is free, are offered to the next
//! agent who becomes free, in arrival order; paused agents are never offered; the longest
//! wait hands a caller to the overflow rule; a caller who hangs up while waiting is an
//! abandoned call with one call-back activity.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::calls_sip::{Phone, Sipp, carrier_call_from, line};
use crate::common::wait_until;
use crate::helpers::TestApp;

const FIRST: &str = "+4917611111111";
const SECOND: &str = "+4917622222222";
const THIRD: &str = "+4917633333333";
const FOURTH: &str = "+4917644444444";

async fn queue_id(app: &TestApp) -> String {
    app.get_ok("/api/v1/queues").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn patch(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, answer) = app
        .request(reqwest::Method::PATCH, path, Some(&app.admin), Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "PATCH {path}: {answer}");
    answer
}

async fn presence(app: &TestApp, user: &str, status: &str) {
    let (code, answer) = app
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/users/{user}/presence"),
            Some(&app.admin),
            Some(json!({"status": status, "reason": "lunch"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "presence {status}: {answer}");
}

/// The call log row of `caller`'s call, once `ready` says so.
async fn call_of(app: &TestApp, caller: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    wait_until(Duration::from_secs(40), what, || async {
        let calls = app.get_ok("/api/v1/calls").await;
        let call = calls["items"]
            .as_array()?
            .iter()
            .find(|c| c["from"].as_str().is_some_and(|f| f.contains(caller)))?
            .clone();
        ready(&call).then_some(call)
    })
    .await
}

fn answered_by(user: &str) -> impl Fn(&Value) -> bool + '_ {
    move |call: &Value| call["answered_by"].as_str() == Some(user)
}

fn ended(call: &Value) -> bool {
    call["ended_at"].is_string()
}

/// The callers waiting in the queue now, as `GET /queues/{id}/live` shows them.
async fn waiting(app: &TestApp, queue: &str, count: usize) -> Vec<Value> {
    wait_until(
        Duration::from_secs(20),
        &format!("{count} caller(s) waiting"),
        || async {
            let live = app.get_ok(&format!("/api/v1/queues/{queue}/live")).await;
            let waiting = live["waiting"].as_array()?.clone();
            (waiting.len() == count).then_some(waiting)
        },
    )
    .await
}

/// An agent's phone, registered, taking `calls` calls one after the other, each talked
/// `talk_ms` and hung up by the phone.
async fn agent_phone(app: &TestApp, extension: &str, calls: u32, talk_ms: u32) -> Sipp {
    let phone = Phone::register(app, extension, &format!("pw-{extension}-secret")).await;
    talking_phone(&phone, calls, talk_ms)
}

fn talking_phone(phone: &Phone, calls: u32, talk_ms: u32) -> Sipp {
    Sipp::start(
        "agent_talk_hang_up.xml",
        phone.port,
        None,
        &["-m", &calls.to_string(), "-d", &talk_ms.to_string()],
    )
}

async fn finish(run: Sipp, what: &str) {
    let (ok, messages) = run.finish().await;
    assert!(
        ok,
        "{what}: {}",
        &messages[messages.len().saturating_sub(3000)..]
    );
}

/// T9: both agents talk; a third caller is answered by the queue, hears its music, and
/// rings the first agent who is free again (after the queue's wrap-up); the call log
/// shows the queue, the wait, and who answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t9_a_caller_waits_with_music_while_both_agents_talk_and_gets_the_first_free() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    let queue = queue_id(&app).await;
    patch(
        &app,
        &format!("/api/v1/queues/{queue}"),
        json!({"wrap_up_s": 1}),
    )
    .await;
    // Anna takes two calls of 3 s; Ben one of 15 s.
    let anna = agent_phone(&app, "101", 2, 3000).await;
    let ben = agent_phone(&app, "102", 1, 15000).await;
    let first = carrier_call_from(&app, FIRST, "carrier_call_hung_up.xml", &[]);
    call_of(
        &app,
        FIRST,
        "Anna to answer the first caller",
        answered_by(&line.anna),
    )
    .await;
    let second = carrier_call_from(&app, SECOND, "carrier_call_hung_up.xml", &[]);
    call_of(
        &app,
        SECOND,
        "Ben to answer the second",
        answered_by(&line.ben),
    )
    .await;
    // The third caller echoes what they hear: the relay counts it as their media.
    let third = carrier_call_from(&app, THIRD, "carrier_call_hung_up.xml", &["-rtp_echo"]);
    let waiting_now = waiting(&app, &queue, 1).await;
    assert_eq!(waiting_now[0]["position"], 1, "{waiting_now:?}");
    assert!(
        waiting_now[0]["caller"]
            .as_str()
            .is_some_and(|c| c.contains(THIRD)),
        "{waiting_now:?}"
    );
    let board = app.get_ok("/api/v1/presence").await;
    for agent in [&line.anna, &line.ben] {
        let row = board["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["user"] == agent.as_str())
            .unwrap();
        // Talking, or (Anna, whose call is short) in wrap-up after it.
        let busy = row["in_call"] == true || row["wrap_up_until"].is_string();
        assert!(busy, "{board}");
    }
    let served = call_of(
        &app,
        THIRD,
        "the waiting caller to be answered by Anna once she is free",
        answered_by(&line.anna),
    )
    .await;
    assert!(served["outcome"].is_null(), "still talking: {served}");
    for (run, what) in [
        (first, "first caller"),
        (second, "second caller"),
        (third, "third caller"),
    ] {
        finish(run, what).await;
    }
    finish(anna, "Anna's phone").await;
    finish(ben, "Ben's phone").await;
    let call = call_of(&app, THIRD, "the third call to end", ended).await;
    assert_eq!(call["outcome"], "answered", "{call}");
    assert_eq!(call["queue"], queue.as_str(), "{call}");
    let wait_s = call["wait_s"]
        .as_f64()
        .expect("the call log keeps the wait");
    // Anna's wrap-up is part of the wait: she was not offered the caller before it ended.
    assert!(wait_s >= 1.0, "waited {wait_s} s: {call}");
    let legs = call["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 1, "only Anna's phone rang: {call}");
    assert_eq!(legs[0]["user"], line.anna.as_str(), "{call}");
    let heard = call["media"]["from_caller"]["packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        heard > 0,
        "the caller echoed the queue's music back: {call}"
    );
    // The first two never waited; they are the queue's calls all the same.
    let first = call_of(&app, FIRST, "the first call", ended).await;
    assert_eq!(first["queue"], queue.as_str(), "{first}");
    assert!(first["wait_s"].is_null(), "{first}");
    app.stop().await;
}

/// T5 with presence: a paused agent is not offered a queue call even while a caller
/// waits for one; set available, they are offered it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_a_paused_agent_is_never_offered_a_queue_call_and_an_unpaused_one_is() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    let queue = queue_id(&app).await;
    presence(&app, &line.anna, "paused").await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let ben = agent_phone(&app, "102", 1, 15000).await;
    let first = carrier_call_from(&app, FIRST, "carrier_call_hung_up.xml", &[]);
    let call = call_of(&app, FIRST, "Ben to answer", answered_by(&line.ben)).await;
    assert!(
        call["legs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|leg| leg["user"] != line.anna.as_str()),
        "paused Anna's phone did not ring: {call}"
    );
    // Ben talks; Anna is paused: the next caller waits, offered to nobody.
    let second = carrier_call_from(&app, SECOND, "carrier_call_hung_up.xml", &[]);
    waiting(&app, &queue, 1).await;
    let live = app.get_ok(&format!("/api/v1/queues/{queue}/live")).await;
    let anna_live = live["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["user"] == line.anna.as_str())
        .unwrap()
        .clone();
    assert_eq!(anna_live["status"], "paused", "{live}");
    assert_eq!(anna_live["in_call"], false, "{live}");
    let anna = talking_phone(&anna_phone, 1, 500);
    presence(&app, &line.anna, "available").await;
    let served = call_of(
        &app,
        SECOND,
        "Anna, available again, to take the waiting caller",
        answered_by(&line.anna),
    )
    .await;
    assert_eq!(served["legs"].as_array().unwrap().len(), 1, "{served}");
    finish(anna, "Anna's phone").await;
    finish(second, "second caller").await;
    finish(ben, "Ben's phone").await;
    finish(first, "first caller").await;
    app.stop().await;
}

/// A caller who hangs up while waiting is `abandoned`, with their wait and one call-back
/// activity; a caller still waiting at `max_wait_s` is taken by the overflow rule (here
/// voicemail, reached by a re-INVITE since the queue had answered them). The statistics
/// of these calls agree with the call log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_abandoned_callers_and_the_overflow_to_voicemail_after_the_longest_wait() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    let queue = queue_id(&app).await;
    patch(
        &app,
        &format!("/api/v1/queues/{queue}"),
        json!({"max_wait_s": 3, "overflow": {"action": "voicemail"}}),
    )
    .await;
    presence(&app, &line.ben, "offline").await;
    let anna = agent_phone(&app, "101", 1, 12000).await;
    let first = carrier_call_from(&app, FIRST, "carrier_call_hung_up.xml", &[]);
    call_of(&app, FIRST, "Anna to answer", answered_by(&line.anna)).await;
    let gives_up = carrier_call_from(&app, SECOND, "caller_waits.xml", &["-d", "1000"]);
    // The caller echoes the greeting and the tone: what the voicemail records.
    let overflows = carrier_call_from(&app, THIRD, "caller_waits_voicemail.xml", &["-rtp_echo"]);
    finish(gives_up, "the caller who gives up").await;
    finish(overflows, "the caller who overflows to voicemail").await;

    let abandoned = call_of(&app, SECOND, "the abandoned call", ended).await;
    assert_eq!(abandoned["outcome"], "abandoned", "{abandoned}");
    assert_eq!(abandoned["queue"], queue.as_str(), "{abandoned}");
    assert!(abandoned["answered_at"].is_null(), "{abandoned}");
    let waited = abandoned["wait_s"].as_f64().expect("the wait is kept");
    assert!(
        waited > 0.0 && waited < 3.0,
        "gave up before the longest wait: {abandoned}"
    );
    // One call-back activity for the attempt, left open.
    let activity = abandoned["activity"].as_str().expect("an activity");
    let lead = abandoned["created"][0]
        .as_str()
        .expect("the new caller's lead");
    let open = app
        .get_ok(&format!("/api/v1/activities?entity={lead}&completed=false"))
        .await;
    let call_backs: Vec<&Value> = open["items"].as_array().unwrap().iter().collect();
    assert_eq!(call_backs.len(), 1, "{open}");
    assert_eq!(call_backs[0]["id"], activity, "{open}");
    assert!(
        call_backs[0]["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("Call back")),
        "{open}"
    );

    let overflowed = call_of(&app, THIRD, "the overflowed call", ended).await;
    assert_eq!(overflowed["outcome"], "missed", "{overflowed}");
    assert_eq!(
        overflowed["voicemail"], true,
        "a message was left: {overflowed}"
    );
    assert!(overflowed["recording"].is_string(), "{overflowed}");
    let waited = overflowed["wait_s"].as_f64().expect("the wait is kept");
    assert!(waited >= 3.0, "waited the longest wait: {overflowed}");

    finish(anna, "Anna's phone").await;
    finish(first, "first caller").await;
    let answered = call_of(&app, FIRST, "the first call", ended).await;
    let stats = app.get_ok("/api/v1/stats/calls?by=queue").await;
    let item = stats["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == queue.as_str())
        .unwrap_or_else(|| panic!("the queue has figures: {stats}"))
        .clone();
    assert_eq!(item["offered"], 3, "{item}");
    assert_eq!(item["answered"], 1, "{item}");
    assert_eq!(item["abandoned"], 1, "{item}");
    assert_eq!(item["missed"], 1, "{item}");
    let longest = [&abandoned, &overflowed, &answered]
        .iter()
        .filter_map(|c| c["wait_s"].as_f64())
        .fold(0.0, f64::max);
    assert_eq!(item["max_wait_s"].as_f64(), Some(longest), "{item}");
    app.stop().await;
}

/// Three callers wait for the one agent; they are served in the order they came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t9_three_waiting_callers_are_served_in_arrival_order() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    let queue = queue_id(&app).await;
    presence(&app, &line.ben, "offline").await;
    let anna = agent_phone(&app, "101", 4, 1500).await;
    let first = carrier_call_from(&app, FIRST, "carrier_call_hung_up.xml", &[]);
    call_of(&app, FIRST, "Anna to answer", answered_by(&line.anna)).await;
    let mut callers = Vec::new();
    for (count, caller) in [SECOND, THIRD, FOURTH].into_iter().enumerate() {
        callers.push(carrier_call_from(
            &app,
            caller,
            "carrier_call_hung_up.xml",
            &[],
        ));
        let waiting_now = waiting(&app, &queue, count + 1).await;
        assert!(
            waiting_now[count]["caller"]
                .as_str()
                .is_some_and(|c| c.contains(caller)),
            "the newest caller is last: {waiting_now:?}"
        );
    }
    for (run, what) in callers.into_iter().zip(["second", "third", "fourth"]) {
        finish(run, what).await;
    }
    finish(first, "first caller").await;
    finish(anna, "Anna's phone").await;
    let mut answered = Vec::new();
    for caller in [SECOND, THIRD, FOURTH] {
        let call = call_of(&app, caller, "the call to end", ended).await;
        assert_eq!(call["answered_by"], line.anna.as_str(), "{call}");
        answered.push(call["answered_at"].as_str().unwrap().to_owned());
    }
    let mut in_order = answered.clone();
    in_order.sort();
    assert_eq!(answered, in_order, "served first come, first served");
    app.stop().await;
}
