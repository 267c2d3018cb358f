//! A node killed with kill -9 under load loses no call: each call's opening event is in
//! the node's journal before the call rings, and the node restarted on the same data dir
//! replays what its queued database writes had not committed.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use crate::calls_sip::{NUMBER, Sipp};
use crate::cluster_load::{Carrier, all};
use crate::common::{free_port, wait_until};
use crate::node_process::NodeProcess;

const TOKEN: &str = "wal-test-admin-token-0123456789";
/// A rate at which the debug build's writes queue behind the intake's group commit.
const RATE: u32 = 50;
const CALLS: u32 = 600;
/// Calls ended before the kill: a few seconds into the load.
const CALLS_BEFORE_KILL: u64 = 120;

/// The node's arguments beyond its addresses: no shedding while the runtime lags (the
/// debug build under load on a shared machine lags; the shedding has tests of its own).
fn node_args(sip: &str) -> Vec<&str> {
    vec![
        "--sip",
        sip,
        // SIPp answers only the first challenge, and only MD5.
        "--sip-digest",
        "md5,sha256",
        "--sip-shed-lag-ms",
        "0",
    ]
}

/// The sum of a counter's lines in the node's `/metrics`.
async fn metric(node: &NodeProcess, name: &str) -> u64 {
    let text = reqwest::Client::new()
        .get(format!("http://{}/metrics", node.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|n| n as u64)
        .sum()
}

async fn readiness(node: &NodeProcess) -> Option<Value> {
    reqwest::Client::new()
        .get(format!("http://{}/readyz", node.http))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// One node on SQLite takes 50 calls/s from new callers, all answered by a SIPp phone;
/// it is killed with kill -9 a few seconds in and restarted on the same data dir and SIP
/// address while the load goes on. Once the restarted node says `/readyz` `ok` (its
/// journal replayed), every call SIPp saw ringing or answered is in the call log exactly
/// once, and each caller in the log has one lead, none twice (M7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m7_a_node_killed_under_load_loses_no_answered_call() {
    let sip_port = free_port();
    let sip = format!("127.0.0.1:{sip_port}");
    let node = NodeProcess::start(TOKEN, &node_args(&sip)).await;
    let anna = node.sales_line(NUMBER).await;
    let phone_port = free_port();
    let (registered, messages) = Sipp::start(
        "register.xml",
        phone_port,
        Some(sip.clone()),
        &["-s", "101", "-au", "101", "-ap", "pw-101-secret"],
    )
    .finish()
    .await;
    assert!(registered, "the phone registers: {messages}");
    wait_until(
        Duration::from_secs(20),
        "the node to know the phone",
        || {
            let (node, anna) = (&node, &anna);
            async move {
                let presence = node.get("/presence").await?;
                presence["items"]
                    .as_array()?
                    .iter()
                    .any(|p| p["user"] == *anna && p["devices"] == 1)
                    .then_some(())
            }
        },
    )
    .await;
    let phone = Sipp::start(
        "agent_answer_many.xml",
        phone_port,
        None,
        &[
            "-m",
            "100000",
            "-timeout",
            "600s",
            "-buff_size",
            "4194304",
            "-default_behaviors",
            "all,-abortunexp",
        ],
    );
    let callers: Vec<String> = (0..CALLS).map(|i| format!("+4917691{i:06}")).collect();
    let carrier = Carrier::start_with("carrier_load_rung.xml", sip_port, &callers, RATE);

    wait_until(Duration::from_secs(120), "calls ended on the node", || {
        let node = &node;
        async move { (metric(node, "leadline_calls_total").await >= CALLS_BEFORE_KILL).then_some(()) }
    })
    .await;
    let data = node.kill_keeping_data().await;
    let node = NodeProcess::start_in(TOKEN, &node_args(&sip), data).await;
    let first = readiness(&node).await;
    wait_until(
        Duration::from_secs(120),
        "the journal to be replayed",
        || {
            let node = &node;
            async move { (readiness(node).await?["status"] == "ok").then_some(()) }
        },
    )
    .await;
    let replayed = metric(&node, "leadline_journal_replayed_total").await;

    let (carrier_calls, unexpected) = carrier.finish().await;
    assert_eq!(carrier_calls.len(), callers.len(), "every call was placed");
    let rung: Vec<&str> = carrier_calls
        .iter()
        .filter(|(_, call)| call.rung)
        .map(|(id, _)| id.as_str())
        .collect();
    assert!(!rung.is_empty(), "calls rang: {unexpected}");
    // The restarted node's own late intakes may still be queued once SIPp is done.
    let log = wait_until(
        Duration::from_secs(120),
        "every call seen ringing in the log",
        || {
            let (node, rung) = (&node, &rung);
            async move {
                let calls = all(node, "/calls").await;
                let ids: HashSet<&str> = calls
                    .iter()
                    .map(|call| call["call_id"].as_str().unwrap())
                    .collect();
                rung.iter().all(|id| ids.contains(id)).then_some(calls)
            }
        },
    )
    .await;
    let mut times: HashMap<&str, usize> = HashMap::new();
    for call in &log {
        *times.entry(call["call_id"].as_str().unwrap()).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "calls logged twice: {twice:?}");

    // M7: one lead per caller whose call reached the log, none twice, none missing.
    let leads = all(&node, "/leads").await;
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
    eprintln!(
        "wal: {} calls placed, {} seen ringing, {} ended well, {} logged, {} leads; the \
         restarted node said {first:?} at first and replayed {replayed} journal records",
        carrier_calls.len(),
        rung.len(),
        carrier_calls.values().filter(|call| call.ok).count(),
        log.len(),
        leads.len()
    );
    phone.stop().await;
}
