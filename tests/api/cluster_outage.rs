//! The database down: a node whose PostgreSQL is unreachable still rings its queue for
//! every call, journals the calls' writes locally, says "degraded" on `/readyz`, and
//! replays the journal once the database is back, without duplicates (M7).

use std::collections::HashMap;
use std::time::Duration;

use leadline::crm::model::{CallEventKind, Direction};
use leadline::store::journal::{self, CallWrite, Journal};
use leadline::store::{CallEvent, Store};
use serde_json::Value;

use crate::calls_sip::{NUMBER, Sipp};
use crate::common::postgres::PgServer;
use crate::common::{free_port, wait_until};
use crate::node_process::NodeProcess;

const TOKEN: &str = "cluster-outage-admin-token-0123456789";
/// Three new callers, the first of them calling twice.
const CALLERS: [&str; 4] = [
    "+4917611110001",
    "+4917611110002",
    "+4917611110003",
    "+4917611110001",
];
/// The database is probed every second once found down; the deadline leaves room for
/// a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

async fn readiness(node: &NodeProcess) -> Option<Value> {
    reqwest::get(format!("http://{}/readyz", node.http))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// One node on a PostgreSQL that is stopped: four carrier calls (three new callers, one
/// of them twice) all ring Anna's phone and are answered; once PostgreSQL is back the
/// journal is replayed, every call is in the log as answered and ended, and each new
/// caller has exactly one lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m7_calls_taken_while_the_database_is_down_are_replayed_once() {
    let pg = PgServer::start();
    let url = pg.create_database("cluster_outage").await;
    let sip = free_port();
    let sip_addr = format!("127.0.0.1:{sip}");
    let node = NodeProcess::start(
        TOKEN,
        &[
            "--sip",
            &sip_addr,
            "--sip-digest",
            "md5,sha256",
            "--database-url",
            &url,
        ],
    )
    .await;
    node.sales_line(NUMBER).await;
    let phone_port = free_port();
    let (registered, messages) = Sipp::start(
        "register.xml",
        phone_port,
        Some(sip_addr.clone()),
        &["-s", "101", "-au", "101", "-ap", "pw-101-secret"],
    )
    .finish()
    .await;
    assert!(registered, "Anna's phone registers: {messages}");
    let ready = readiness(&node).await;
    assert_eq!(
        ready.as_ref().map(|r| r["status"].clone()),
        Some("ok".into())
    );

    pg.stop_fast();
    let degraded = wait_until(DEADLINE, "/readyz to say degraded", || async {
        readiness(&node)
            .await
            .filter(|ready| ready["status"] == "degraded")
    })
    .await;
    assert_eq!(degraded["journal_records"], 0, "{degraded}");
    // The API does not journal: a write is refused, to be retried by the client.
    let refused = reqwest::Client::new()
        .post(format!("http://{}/api/v1/leads", node.http))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"name": "Walk-in", "phones": ["+4930555000"]}))
        .send()
        .await
        .expect("the node answers");
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = refused.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");

    let calls = CALLERS.len().to_string();
    let phone = Sipp::start("agent_answer.xml", phone_port, None, &["-m", &calls]);
    for caller in CALLERS {
        let (ok, seen) = Sipp::start(
            "carrier_call.xml",
            0,
            Some(sip_addr.clone()),
            &["-s", NUMBER, "-key", "caller", caller],
        )
        .finish()
        .await;
        assert!(ok, "the call from {caller} is answered: {seen}");
    }
    let (ok, seen) = phone.finish().await;
    assert!(ok, "every call rang Anna's phone: {seen}");
    let journaled = readiness(&node).await.expect("the node answers");
    assert_eq!(journaled["status"], "degraded", "{journaled}");
    assert!(
        journaled["journal_records"].as_u64().unwrap_or(0) >= CALLERS.len() as u64,
        "each call's writes are journaled: {journaled}"
    );

    pg.restart();
    wait_until(DEADLINE, "the journal replayed and /readyz ok", || async {
        readiness(&node)
            .await
            .filter(|ready| ready["status"] == "ok")
    })
    .await;

    let log = node.get("/calls?limit=500").await.expect("the call log");
    let items = log["items"].as_array().expect("calls");
    assert_eq!(items.len(), CALLERS.len(), "each call logged once: {log}");
    let mut per_caller: HashMap<&str, usize> = HashMap::new();
    for call in items {
        assert_eq!(call["outcome"], "answered", "{call}");
        assert!(call["ended_at"].is_string(), "{call}");
        *per_caller
            .entry(call["from"].as_str().unwrap())
            .or_default() += 1;
    }
    assert_eq!(per_caller.get(CALLERS[0]), Some(&2), "{log}");
    let leads = node.get("/leads?limit=500").await.expect("the leads");
    let mut leads_per_phone: HashMap<String, usize> = HashMap::new();
    for lead in leads["items"].as_array().expect("leads") {
        for phone in lead["phones"].as_array().expect("phones") {
            *leads_per_phone
                .entry(phone.as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    let new_callers = &CALLERS[..3];
    for caller in new_callers {
        assert_eq!(leads_per_phone.get(*caller), Some(&1), "{leads}");
    }
    assert_eq!(leads_per_phone.len(), new_callers.len(), "{leads}");
    let metrics = reqwest::get(format!("http://{}/metrics", node.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("leadline_journal_replayed_total"),
        "the replay is counted"
    );
}

/// The store alone: a call write that finds PostgreSQL stopped (the pool's own error, not
/// a guess of it) is journaled and makes the node degraded, later writes are journaled at
/// once, and the replay task applies them when PostgreSQL is back: the call is logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_write_that_finds_the_database_stopped_is_journaled_and_replayed() {
    let pg = PgServer::start();
    let url = pg.create_database("outage_store").await;
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    store.load_snapshot().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    store.attach_journal(Journal::open(dir.path()).unwrap());
    let cancel = tokio_util::sync::CancellationToken::new();
    let replay = tokio::spawn(journal::run(store.clone(), cancel.clone(), |_| async {}));
    let event = |kind, at| CallEvent {
        call_id: "outage-call-1".to_owned(),
        event: kind,
        direction: Direction::Incoming,
        from: "+4917611110009".to_owned(),
        to: NUMBER.to_owned(),
        user: None,
        outcome: None,
        at,
        diverted_from: None,
        verstat: None,
    };
    let journal = store.journal().unwrap();

    pg.stop_fast();
    let opening = CallWrite::Event {
        event: event(CallEventKind::Ringing, 1_000),
        node: None,
    };
    store
        .write_call(opening)
        .await
        .expect("journaled, not failed");
    assert!(
        journal.state().degraded,
        "the write found the database down"
    );
    assert_eq!(journal.state().records, 1);
    let mut ended = event(CallEventKind::Ended, 5_000);
    ended.outcome = Some(leadline::crm::model::CallOutcome::Missed);
    store
        .write_call(CallWrite::Event {
            event: ended,
            node: None,
        })
        .await
        .unwrap();
    assert_eq!(journal.state().records, 2);

    pg.restart();
    wait_until(DEADLINE, "the journal replayed", || async {
        let state = journal.state();
        (!state.degraded && state.records == 0).then_some(())
    })
    .await;
    let call = store
        .call_by_call_id("outage-call-1")
        .await
        .unwrap()
        .expect("the call is logged");
    assert_eq!(call.ended_at, Some(5_000));
    cancel.cancel();
    replay.await.unwrap();
    store.close().await;
}
