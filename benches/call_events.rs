//! Call events per second through `POST /api/v1/calls/events`: `ringing` for new callers,
//! each creating a lead (the heaviest path: match, M7 claim, queue turn, lead, activity,
//! call log, idempotency row), on SQLite and on PostgreSQL. The gateway and the load
//! generator share this process and the machine's cores, as a PBX on the same host would.
//!
//! Run: `cargo bench --bench call_events` (release). Environment:
//! `LEADLINE_BENCH_EVENTS` (default 20000), `LEADLINE_BENCH_CONCURRENCY` (default 32),
//! `LEADLINE_BENCH_DATABASES` (default `sqlite,postgres`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use leadline::{App, Config};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn post(client: &reqwest::Client, base: &str, token: &str, path: &str, body: Value) -> Value {
    let resp = client
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let value: Value = resp.json().await.expect("json");
    assert!(status.is_success(), "{path}: {status} {value}");
    value
}

async fn run(label: &str, database_url: Option<String>) {
    let events = env_usize("LEADLINE_BENCH_EVENTS", 20_000);
    let concurrency = env_usize("LEADLINE_BENCH_CONCURRENCY", 32);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::for_data_dir(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0)));
    if let Some(url) = database_url {
        config.database_url = url;
    }
    let app = App::start(config).await.expect("start");
    let token = app.generated_admin_token.clone().expect("admin token");
    let base = format!("http://{}", app.http_addr);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");

    let mut members = Vec::new();
    for (i, name) in ["Anna", "Ben", "Cem"].iter().enumerate() {
        let user = post(
            &client,
            &base,
            &token,
            "/api/v1/users",
            json!({"name": name, "email": format!("{}@example.com", name.to_lowercase()),
                   "role": "agent", "extension": format!("10{i}")}),
        )
        .await;
        members.push(user["id"].clone());
    }
    let queue = post(
        &client,
        &base,
        &token,
        "/api/v1/queues",
        json!({"name": "Sales", "members": members}),
    )
    .await;
    post(
        &client,
        &base,
        &token,
        "/api/v1/numbers",
        json!({"number": "+4930901820", "queue": queue["id"]}),
    )
    .await;

    let limit = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(events);
    for i in 0..events {
        let permit = limit.clone().acquire_owned().await.expect("semaphore");
        let client = client.clone();
        let base = base.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let answer = post(
                &client,
                &base,
                &token,
                "/api/v1/calls/events",
                json!({"call_id": format!("bench-{i}"), "event": "ringing",
                       "direction": "incoming", "from": format!("0151 {:08}", i),
                       "to": "+4930901820"}),
            )
            .await;
            drop(permit);
            assert_eq!(answer["call"]["crm_action"], "created", "{answer}");
            t.elapsed().as_micros()
        }));
    }
    let mut latencies = Vec::with_capacity(events);
    for task in tasks {
        latencies.push(task.await.expect("task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    println!(
        "{label}: {events} ringing events (new callers, each creating a lead), concurrency {concurrency}: \
         {:.0} events/s; latency p50 {:.2} ms, p99 {:.2} ms",
        events as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
    app.shutdown().await.expect("shutdown");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; test runners (`cargo test --all-targets`, nextest's
    // `--list`) run bench binaries too, and must get an empty test list, not a benchmark.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let databases =
        std::env::var("LEADLINE_BENCH_DATABASES").unwrap_or_else(|_| "sqlite,postgres".to_owned());
    for database in databases.split(',') {
        match database.trim() {
            "sqlite" => run("SQLite", None).await,
            "postgres" => {
                let server = common::postgres::PgServer::start();
                let url = server.create_database("bench").await;
                run("PostgreSQL", Some(url)).await;
            }
            other => panic!("unknown database '{other}' in LEADLINE_BENCH_DATABASES"),
        }
    }
}
