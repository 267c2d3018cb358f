//! The mail intake's figures: how fast the gateway turns a mailbox into activities, next to the
//! raw IMAP fetch rate of the same mailbox in the same run, and how long new mail takes
//! from LMTP delivery to the API with IDLE. Run it with `bench/mail-ingest` (release).
//!
//! 1. A throwaway Dovecot (tests/common/dovecot.rs) gets MESSAGES messages written
//!    straight into its Maildir: customer mail from 2,000 different addresses (so most
//!    messages attach to a lead an earlier one created, as in a real inbox), a text body
//!    of a few KB, every tenth with a PDF-sized attachment.
//! 2. Raw fetch: `mail::imap` reads them all with `fetch_since` in batches of 200, as
//!    the poller does, and throws them away.
//! 3. Ingest: the gateway (SQLite in a temp dir) gets the mailbox connected over the API
//!    and collects it; the clock stops when `leadline_mail_ingested_total` reaches
//!    MESSAGES. Parsing, matching, leads, activities and the mail store are all in it.
//! 4. IDLE latency: SAMPLES messages delivered over LMTP one at a time; for each, the time
//!    from the LMTP `250` to the message counted in `/metrics` (polled every 2 ms).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::dovecot::{DOMAIN, Dovecot};
use leadline::mail::imap::{self, Body, ImapSettings, Security, Uid};
use leadline::{App, Config};

const USER: &str = "alice";
const CUSTOMERS: usize = 2_000;

fn message(i: usize) -> Vec<u8> {
    let customer = i % CUSTOMERS;
    let mut text = String::new();
    for line in 0..40 {
        text.push_str(&format!(
            "Zeile {line}: wir interessieren uns für Ihr Angebot Nr. {i} und bitten um Rückruf.\r\n"
        ));
    }
    let (content_type, body) = if i.is_multiple_of(10) {
        let attachment: String = (0..600)
            .map(|n| format!("{:076}\r\n", n * 7919 + i))
            .collect();
        (
            "multipart/mixed; boundary=\"b\"".to_owned(),
            format!(
                "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}--b\r\n\
                 Content-Type: application/pdf; name=\"angebot-{i}.pdf\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\
                 Content-Disposition: attachment; filename=\"angebot-{i}.pdf\"\r\n\r\n\
                 {attachment}--b--\r\n"
            ),
        )
    } else {
        ("text/plain; charset=utf-8".to_owned(), text)
    };
    format!(
        "From: Kunde {customer} <kunde{customer}@example.org>\r\nTo: <{USER}@{DOMAIN}>\r\n\
         Subject: Anfrage {i}\r\nMessage-ID: <bench-{i}@example.org>\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n\
         Content-Type: {content_type}\r\n\r\n{body}"
    )
    .into_bytes()
}

async fn counted(client: &reqwest::Client, base: &str) -> u64 {
    let Ok(response) = client.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("leadline_mail_ingested_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// `leadline_mail_stage_seconds` from `/metrics`: per stage, the seconds spent and the
/// number of batches.
async fn stages(client: &reqwest::Client, base: &str) -> Vec<(String, f64, u64)> {
    let text = match client.get(format!("{base}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => return Vec::new(),
    };
    let value = |line: &str, name: &str| {
        let rest = line.strip_prefix(name)?.strip_prefix("{stage=\"")?;
        let (stage, number) = rest.split_once("\"} ")?;
        Some((stage.to_owned(), number.trim().parse::<f64>().ok()?))
    };
    let mut found: Vec<(String, f64, u64)> = Vec::new();
    for line in text.lines() {
        if let Some((stage, sum)) = value(line, "leadline_mail_stage_seconds_sum") {
            found.push((stage, sum, 0));
        }
    }
    for line in text.lines() {
        if let Some((stage, count)) = value(line, "leadline_mail_stage_seconds_count")
            && let Some(entry) = found.iter_mut().find(|(s, _, _)| *s == stage)
        {
            entry.2 = count as u64;
        }
    }
    let order = ["fetch", "parse", "match", "store"];
    found.sort_by_key(|(s, _, _)| order.iter().position(|o| o == s).unwrap_or(order.len()));
    found
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: MESSAGES SAMPLES"))
        .collect();
    let count = args.first().copied().unwrap_or(10_000);
    let samples = args.get(1).copied().unwrap_or(100);

    let messages: Vec<Vec<u8>> = (0..count).map(message).collect();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    println!(
        "mailbox: {count} messages, {:.1} MB, from {CUSTOMERS} customer addresses",
        bytes as f64 / 1e6
    );
    let dovecot = Dovecot::start();
    dovecot.seed_maildir(USER, "INBOX", &messages);

    // 2. Raw fetch.
    let settings = ImapSettings::new(
        "127.0.0.1",
        dovecot.imap_port(),
        Security::None,
        USER,
        dovecot.password(USER),
    );
    let mut session = imap::connect(&settings).await.expect("IMAP login");
    session.select("INBOX").await.expect("select");
    let started = Instant::now();
    let (mut last, mut fetched, mut fetched_bytes) = (0u32, 0usize, 0usize);
    loop {
        let batch = session.fetch_since(Uid(last), 200).await.expect("fetch");
        if batch.is_empty() {
            break;
        }
        for m in batch {
            last = last.max(m.uid.0);
            fetched += 1;
            if let Body::Raw(raw) = m.body {
                fetched_bytes += raw.len();
            }
        }
    }
    let fetch_time = started.elapsed();
    let fetch_rate = fetched as f64 / fetch_time.as_secs_f64();
    println!(
        "raw IMAP fetch:  {fetched} messages in {fetch_time:.2?} = {fetch_rate:.0} messages/s ({:.1} MB/s)",
        fetched_bytes as f64 / 1e6 / fetch_time.as_secs_f64()
    );
    let _ = session.logout().await;

    // 3. Ingest through the gateway.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config::for_data_dir(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0)));
    let app = App::start(config).await.expect("gateway starts");
    let base = format!("http://{}", app.http_addr);
    let token = app.generated_admin_token.clone().expect("admin token");
    let client = reqwest::Client::new();
    let queue: serde_json::Value = client
        .post(format!("{base}/api/v1/users"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "Anna", "email": "anna@example.com", "role": "agent"}))
        .send()
        .await
        .expect("user")
        .json()
        .await
        .expect("user json");
    let queue: serde_json::Value = client
        .post(format!("{base}/api/v1/queues"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "Sales", "members": [queue["id"]]}))
        .send()
        .await
        .expect("queue")
        .json()
        .await
        .expect("queue json");
    let started = Instant::now();
    let created = client
        .post(format!("{base}/api/v1/mailboxes"))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "name": "Sales inbox", "kind": "company", "host": "127.0.0.1",
            "port": dovecot.imap_port(), "security": "none", "username": USER,
            "password": dovecot.password(USER), "address": format!("{USER}@{DOMAIN}"),
            "queue": queue["id"], "check": "idle", "sync_window_days": null}))
        .send()
        .await
        .expect("mailbox");
    assert!(
        created.status().is_success(),
        "mailbox: {}",
        created.text().await.unwrap_or_default()
    );
    let deadline = Instant::now() + Duration::from_secs(1800);
    while counted(&client, &base).await < count as u64 {
        assert!(Instant::now() < deadline, "ingest did not finish in 30 min");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ingest_time = started.elapsed();
    let ingest_rate = count as f64 / ingest_time.as_secs_f64();
    println!(
        "gateway ingest:  {count} messages in {ingest_time:.2?} = {ingest_rate:.0} messages/s \
         ({:.0} % of the raw fetch rate; goal >= 50 %)",
        100.0 * ingest_rate / fetch_rate
    );
    // Stages overlap when the poller pipelines them: their sum may exceed the wall time.
    let breakdown: Vec<String> = stages(&client, &base)
        .await
        .into_iter()
        .map(|(stage, seconds, batches)| {
            format!(
                "{stage} {seconds:.2} s ({:.0} µs/message, {batches} batches)",
                seconds * 1e6 / count as f64
            )
        })
        .collect();
    println!("ingest stages:   {}", breakdown.join(", "));

    // 4. IDLE latency.
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let before = counted(&client, &base).await;
        let raw = message(count + i);
        dovecot.deliver(USER, &raw).await;
        let delivered = Instant::now();
        let deadline = delivered + Duration::from_secs(30);
        while counted(&client, &base).await <= before {
            assert!(
                Instant::now() < deadline,
                "message {i} not collected within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(delivered.elapsed());
    }
    latencies.sort();
    println!(
        "IDLE latency:    LMTP delivery -> counted, {samples} messages: p50 {:.0?}, p99 {:.0?}, \
         max {:.0?} (Dovecot's own IDLE floor is ~0.5 s; goal p99 < 1 s)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_owned()))
        })
        .unwrap_or_default();
    println!("process RSS (gateway + client): {rss}");
    app.shutdown().await.expect("clean shutdown");
}
