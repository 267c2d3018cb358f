//! Webhooks told of what the call journal's replay writes: a call logged by the replay
//! announces its lead and activity once, to whoever may see them (A1), as a live call
//! does; a call the database had already (committed before a kill, or logged live) is
//! not announced again.

use std::time::Duration;

use leadline::cluster::NodeId;
use leadline::crm::model::{CallEventKind, CallOutcome, Direction};
use leadline::store::journal::{self, Journal};
use leadline::store::{CallEvent, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::calls_sip::{NUMBER, Sipp};
use crate::common::postgres::PgServer;
use crate::common::{free_port, wait_until};
use crate::node_process::NodeProcess;
use crate::webhooks::Receiver;

const TOKEN: &str = "replay-webhooks-admin-token-0123456789";
const RECORD_EVENTS: [&str; 6] = [
    "lead.created",
    "contact.created",
    "deal.created",
    "entity.updated",
    "email.ingested",
    "activity.created",
];
/// The database is probed every second once found down; room for a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);
/// Called live before the outage, and again while the database is down.
const KNOWN: &str = "+4917622220001";
/// Calls only while the database is down: its lead is written by the replay.
const NEW: &str = "+4917622220002";

async fn readiness(node: &NodeProcess) -> Option<Value> {
    reqwest::get(format!("http://{}/readyz", node.http))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// `POST /api/v1{path}` with `token`, expecting `201 Created`.
async fn post_as(node: &NodeProcess, token: &str, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/v1{path}", node.http))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "POST {path}");
    response.json().await.unwrap()
}

/// One call from `caller` to the sales line, answered by the phone SIPp runs.
async fn call_from(sip: &str, caller: &str) {
    let (ok, seen) = Sipp::start(
        "carrier_call.xml",
        0,
        Some(sip.to_owned()),
        &["-s", NUMBER, "-key", "caller", caller],
    )
    .finish()
    .await;
    assert!(ok, "the call from {caller} is answered: {seen}");
}

/// A1: one node on a PostgreSQL that is stopped, webhooks of the admin, of Anna (the
/// sales line's agent) and of Ben. A caller's live call announces its lead and activity;
/// with the database down, a new caller and the known one call again. Once the database
/// is back and the journal replayed, the new caller's lead and both calls' activities
/// reach the admin's and Anna's webhooks once, and nothing of the known caller's lead
/// again; Ben's gets none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_calls_the_journal_replay_logs_announce_their_records_once() {
    let pg = PgServer::start();
    let url = pg.create_database("replay_webhooks").await;
    let sip = format!("127.0.0.1:{}", free_port());
    let node = NodeProcess::start(
        TOKEN,
        &[
            "--sip",
            &sip,
            "--sip-digest",
            "md5,sha256",
            "--database-url",
            &url,
            "--webhook-private-targets",
            "true",
        ],
    )
    .await;
    let anna = node.sales_line(NUMBER).await;
    let ben = node
        .post(
            "/users",
            json!({"name": "Ben", "email": "ben@example.com", "role": "agent",
                   "extension": "102"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut receiver = Receiver::start().await;
    for (user, name) in [(None, "admin"), (Some(&anna), "anna"), (Some(&ben), "ben")] {
        let token = match user {
            Some(user) => node.post(&format!("/users/{user}/tokens"), json!({})).await["token"]
                .as_str()
                .unwrap()
                .to_owned(),
            None => TOKEN.to_owned(),
        };
        post_as(
            &node,
            &token,
            "/webhooks",
            json!({"url": receiver.url("hook", name), "events": RECORD_EVENTS}),
        )
        .await;
    }
    let phone_port = free_port();
    let (registered, messages) = Sipp::start(
        "register.xml",
        phone_port,
        Some(sip.clone()),
        &["-s", "101", "-au", "101", "-ap", "pw-101-secret"],
    )
    .finish()
    .await;
    assert!(registered, "Anna's phone registers: {messages}");
    let phone = Sipp::start("agent_answer.xml", phone_port, None, &["-m", "3"]);

    call_from(&sip, KNOWN).await;
    let mut live_call = Value::Null;
    for name in ["admin", "anna"] {
        let hit = receiver.next(name).await;
        assert_eq!(hit.event, "lead.created", "{name}: {:?}", hit.json());
        assert_eq!(hit.json()["data"]["phones"], json!([KNOWN]));
        let hit = receiver.next(name).await;
        assert_eq!(hit.event, "activity.created", "{name}: {:?}", hit.json());
        live_call = hit.json()["data"]["call"].clone();
    }

    pg.stop_fast();
    wait_until(DEADLINE, "/readyz to say degraded", || async {
        readiness(&node)
            .await
            .filter(|ready| ready["status"] == "degraded")
    })
    .await;
    call_from(&sip, NEW).await;
    call_from(&sip, KNOWN).await;
    let (ok, seen) = phone.finish().await;
    assert!(ok, "every call rang Anna's phone: {seen}");
    let journaled = readiness(&node).await.expect("the node answers");
    assert_eq!(journaled["status"], "degraded", "{journaled}");

    pg.restart();
    wait_until(DEADLINE, "the journal replayed and /readyz ok", || async {
        readiness(&node)
            .await
            .filter(|ready| ready["status"] == "ok")
    })
    .await;
    let calls = node.get("/calls?limit=500").await.expect("the call log");
    let calls = calls["items"].as_array().expect("calls").clone();
    assert_eq!(calls.len(), 3, "each call logged once: {calls:?}");
    let leads = node.get("/leads?limit=500").await.expect("the leads");
    let leads = leads["items"].as_array().expect("leads").clone();
    assert_eq!(leads.len(), 2, "one lead per caller: {leads:?}");
    let new_lead = leads
        .iter()
        .find(|lead| lead["phones"] == json!([NEW]))
        .expect("the new caller's lead");
    assert_eq!(new_lead["responsible"], json!(anna), "{new_lead}");
    assert!(
        calls.iter().any(|call| call["id"] == live_call),
        "{live_call} in {calls:?}"
    );
    let mut replayed_calls: Vec<Value> = calls
        .iter()
        .map(|call| call["id"].clone())
        .filter(|id| *id != live_call)
        .collect();
    replayed_calls.sort_by_key(ToString::to_string);

    for name in ["admin", "anna"] {
        let hit = receiver.next(name).await;
        assert_eq!(hit.event, "lead.created", "{name}: {:?}", hit.json());
        assert_eq!(hit.json()["data"]["id"], new_lead["id"], "{name}");
        let mut activities = Vec::new();
        for _ in 0..2 {
            let hit = receiver.next(name).await;
            assert_eq!(hit.event, "activity.created", "{name}: {:?}", hit.json());
            activities.push(hit.json()["data"]["call"].clone());
        }
        activities.sort_by_key(ToString::to_string);
        assert_eq!(
            activities, replayed_calls,
            "{name}: one activity per replayed call"
        );
    }

    // The next delivery of each is a later record: nothing announced twice, no second
    // lead of the known caller, and nothing of Anna's leads for Ben.
    let for_anna = node
        .post("/leads", json!({"name": "Walk-in", "responsible": anna}))
        .await;
    let for_ben = node
        .post("/leads", json!({"name": "Passer-by", "responsible": ben}))
        .await;
    for (name, marker) in [("admin", &for_anna), ("anna", &for_anna), ("ben", &for_ben)] {
        let hit = receiver.next(name).await;
        assert_eq!(hit.event, "lead.created", "{name}: {:?}", hit.json());
        assert_eq!(hit.json()["data"]["id"], marker["id"], "{name}");
    }
}

/// The replay itself, on SQLite: of two calls' opening events written ahead before a
/// kill, the one that reached the database before it is not handed over again (its live
/// write announced it), the other is, once; its later event is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_announces_only_the_calls_it_logs_not_those_committed_before_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("db").display());
    let journal_dir = dir.path().join("journal");
    let node = NodeId::generate();
    let event = |call_id: &str, kind, at| CallEvent {
        call_id: call_id.to_owned(),
        event: kind,
        direction: Direction::Incoming,
        from: format!("+49176333{}", &call_id[call_id.len() - 4..]),
        to: NUMBER.to_owned(),
        user: None,
        outcome: (kind == CallEventKind::Ended).then_some(CallOutcome::Missed),
        at,
        diverted_from: None,
        verstat: None,
    };
    let committed = event("replay-call-0001", CallEventKind::Ringing, 1_000);
    let journaled = event("replay-call-0002", CallEventKind::Ringing, 2_000);
    let journaled_end = event("replay-call-0002", CallEventKind::Ended, 3_000);

    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    store.load_snapshot().await.unwrap();
    store.attach_journal(Journal::open(&journal_dir).unwrap());
    // The first committed, the process killed before the journal learnt of it; the
    // second (and its end) killed before the database write.
    let _ = store.write_ahead(&committed, &node).await;
    store
        .apply_call_event_on(&committed, Some(&node))
        .await
        .unwrap();
    let _ = store.write_ahead(&journaled, &node).await;
    let _ = store.write_ahead(&journaled_end, &node).await;
    store.close().await;
    drop(store);

    let store = Store::connect(&url).await.unwrap();
    store.load_snapshot().await.unwrap();
    let reopened = Journal::open(&journal_dir).unwrap();
    assert_eq!(reopened.state().records, 3, "all three lines are left");
    store.attach_journal(reopened);
    let (told, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let cancel = tokio_util::sync::CancellationToken::new();
    let replay = tokio::spawn(journal::run(
        store.clone(),
        cancel.clone(),
        move |outcome| {
            let _ = told.send(outcome);
            async {}
        },
    ));
    wait_until(DEADLINE, "the journal replayed", || async {
        (store.journal().unwrap().state().records == 0).then_some(())
    })
    .await;
    cancel.cancel();
    replay.await.unwrap();
    let mut handed = Vec::new();
    while let Ok(outcome) = heard.try_recv() {
        handed.push(outcome);
    }
    let ids: Vec<&str> = handed.iter().map(|o| o.call.call_id.as_str()).collect();
    assert_eq!(ids, ["replay-call-0002"], "only the call the replay logged");
    let ended = store
        .call_by_call_id("replay-call-0002")
        .await
        .unwrap()
        .expect("logged by the replay");
    assert_eq!(ended.ended_at, Some(3_000), "its later event applied too");
    store.close().await;
}
