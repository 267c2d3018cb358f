//! E9's flag pass over a 10,000-message mailbox with and without RFC 7162 (CONDSTORE/
//! QRESYNC). Run it with `bench/mail-condstore` (release).
//!
//! Two throwaway Dovecots (tests/common/dovecot.rs) get the same MESSAGES messages
//! written into their Maildir: one as installed (CONDSTORE and QRESYNC), one announcing
//! neither (`imap_capability`), so the gateway falls back to reading every message's
//! flags. For each:
//! 1. The gateway (SQLite in a temp dir) gets the inbox connected over the API (IDLE,
//!    inbox only) and collects all of it.
//! 2. ROUNDS times a second IMAP client marks CHANGES messages read with one `UID STORE`;
//!    the poller, woken by IDLE, runs its pass. The figure is the mean of
//!    `leadline_mail_flag_pass_seconds` over those passes: the E9 part of a folder pass
//!    (reading the server's flags, the store's decisions, the activities completed).
//! 3. Beside it, the same second client's raw read of the flags: every message's
//!    (`flags_of_all`) against what changed since before the last round (`flag_changes`).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::dovecot::{DOMAIN, Dovecot, Options};
use leadline::mail::imap::{self, ImapSession, ImapSettings, Resync, Security, Uid};
use leadline::{App, Config};

const USER: &str = "alice";
const WITHOUT_CONDSTORE: &str =
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ UIDPLUS SPECIAL-USE";

fn message(i: usize) -> Vec<u8> {
    format!(
        "From: Kunde {i} <kunde{i}@example.org>\r\nTo: <{USER}@{DOMAIN}>\r\n\
         Subject: Anfrage {i}\r\nMessage-ID: <condstore-{i}@example.org>\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nContent-Type: text/plain; charset=utf-8\r\n\
         \r\nWir bitten um ein Angebot und um Rueckruf.\r\n"
    )
    .into_bytes()
}

async fn metrics(client: &reqwest::Client, base: &str) -> String {
    match client.get(format!("{base}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// (sum, count) of the flag passes of `kind`.
async fn passes(client: &reqwest::Client, base: &str, kind: &str) -> (f64, f64) {
    let text = metrics(client, base).await;
    (
        metric(
            &text,
            &format!("leadline_mail_flag_pass_seconds_sum{{kind=\"{kind}\"}} "),
        ),
        metric(
            &text,
            &format!("leadline_mail_flag_pass_seconds_count{{kind=\"{kind}\"}} "),
        ),
    )
}

async fn wait_for<F, Fut>(what: &str, deadline: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while !done().await {
        assert!(Instant::now() < end, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Phase {
    label: &'static str,
    pass_kind: &'static str,
    mean_pass: Duration,
    passes: usize,
    full_read: Duration,
    changed_read: Option<(Duration, usize)>,
}

async fn phase(
    label: &'static str,
    capability: Option<&str>,
    messages: &[Vec<u8>],
    rounds: usize,
    changes: usize,
) -> Phase {
    let count = messages.len();
    let dovecot = Dovecot::start_with(Options {
        imap_capability: capability.map(str::to_owned),
        ..Options::default()
    });
    dovecot.seed_maildir(USER, "INBOX", messages);

    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config::for_data_dir(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0)));
    let app = App::start(config).await.expect("gateway starts");
    let base = format!("http://{}", app.http_addr);
    let token = app.generated_admin_token.clone().expect("admin token");
    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let user: serde_json::Value = post(
        "/api/v1/users",
        serde_json::json!({"name": "Anna", "email": "anna@example.com", "role": "agent"}),
    )
    .await
    .expect("user")
    .json()
    .await
    .expect("user json");
    let queue: serde_json::Value = post(
        "/api/v1/queues",
        serde_json::json!({"name": "Sales", "members": [user["id"]]}),
    )
    .await
    .expect("queue")
    .json()
    .await
    .expect("queue json");
    let ingested_before = metric(
        &metrics(&client, &base).await,
        "leadline_mail_ingested_total ",
    );
    let created: serde_json::Value = post(
        "/api/v1/mailboxes",
        serde_json::json!({
            "name": "Sales inbox", "kind": "company", "host": "127.0.0.1",
            "port": dovecot.imap_port(), "security": "none", "username": USER,
            "password": dovecot.password(USER), "address": format!("{USER}@{DOMAIN}"),
            "queue": queue["id"], "check": "idle", "sync_window_days": null,
            "folders": ["INBOX"]}),
    )
    .await
    .expect("mailbox")
    .json()
    .await
    .expect("mailbox json");
    assert!(created["id"].is_string(), "mailbox: {created}");
    let started = Instant::now();
    wait_for(
        "the mailbox to be collected",
        Duration::from_secs(1800),
        || async {
            let now = metric(
                &metrics(&client, &base).await,
                "leadline_mail_ingested_total ",
            );
            now - ingested_before >= count as f64
        },
    )
    .await;
    println!(
        "{label}: {count} messages collected in {:.1?}",
        started.elapsed()
    );
    wait_for("the first flag pass", Duration::from_secs(600), || async {
        passes(&client, &base, "full").await.1 + passes(&client, &base, "incremental").await.1 > 0.0
    })
    .await;

    let settings = ImapSettings::new(
        "127.0.0.1",
        dovecot.imap_port(),
        Security::None,
        USER,
        dovecot.password(USER),
    );
    let mut other: ImapSession = imap::connect(&settings).await.expect("second client");
    other.select("INBOX").await.expect("select");
    let read = Instant::now();
    let all = other.flags_of_all().await.expect("flags");
    let full_read = read.elapsed();
    assert_eq!(all.len(), count);

    let pass_kind = if other.resync() == Resync::Full {
        "full"
    } else {
        "incremental"
    };
    let (sum_before, count_before) = passes(&client, &base, pass_kind).await;
    let stride = (count / (rounds * changes).max(1)).max(1);
    let mut since = None;
    for round in 0..rounds {
        if round + 1 == rounds {
            // Where the last round's changes start, for the raw read below.
            since = other.select("INBOX").await.expect("select").highest_modseq;
        }
        let (_, before) = passes(&client, &base, pass_kind).await;
        let uids: Vec<Uid> = (0..changes)
            .map(|i| Uid((1 + (round * changes + i) * stride) as u32))
            .collect();
        other.set_seen(&uids, true).await.expect("UID STORE");
        wait_for("the flag pass", Duration::from_secs(120), || async {
            passes(&client, &base, pass_kind).await.1 > before
        })
        .await;
    }
    let (sum_after, count_after) = passes(&client, &base, pass_kind).await;
    let n = (count_after - count_before).max(1.0);
    let mean_pass = Duration::from_secs_f64((sum_after - sum_before) / n);

    let changed_read = match since {
        None => None,
        Some(since) => {
            let read = Instant::now();
            let delta = other.flag_changes(since, None).await.expect("CHANGEDSINCE");
            Some((read.elapsed(), delta.changed.len()))
        }
    };
    let _ = other.logout().await;
    app.shutdown().await.expect("clean shutdown");
    Phase {
        label,
        pass_kind,
        mean_pass,
        passes: n as usize,
        full_read,
        changed_read,
    }
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
        .map(|a| a.parse().expect("numbers: MESSAGES ROUNDS CHANGES"))
        .collect();
    let count = args.first().copied().unwrap_or(10_000);
    let rounds = args.get(1).copied().unwrap_or(20);
    let changes = args.get(2).copied().unwrap_or(10);
    let messages: Vec<Vec<u8>> = (0..count).map(message).collect();
    println!("mailbox: {count} messages; {rounds} rounds of {changes} messages marked read");

    let mut results = Vec::new();
    for (label, capability) in [
        ("with CONDSTORE/QRESYNC", None),
        ("without CONDSTORE", Some(WITHOUT_CONDSTORE)),
    ] {
        results.push(phase(label, capability, &messages, rounds, changes).await);
    }
    println!();
    for r in &results {
        println!(
            "{:<24} E9 flag pass ({}): mean {:.1?} over {} passes; raw IMAP read of every \
             message's flags {:.1?}{}",
            r.label,
            r.pass_kind,
            r.mean_pass,
            r.passes,
            r.full_read,
            match r.changed_read {
                Some((time, n)) => format!(", of the {n} changed since a mod-sequence {time:.1?}"),
                None => String::new(),
            }
        );
    }
    if let [with, without] = &results[..] {
        println!(
            "incremental pass {:.0}x faster than the full one",
            without.mean_pass.as_secs_f64() / with.mean_pass.as_secs_f64().max(1e-9)
        );
    }
}
