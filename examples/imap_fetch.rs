//! The raw IMAP fetch rate of `mail::imap` against a local Dovecot: what the mail poller
//! can read per second before it parses or stores anything. Run it with
//! `bench/imap-fetch` (release build); `--help` for the arguments.
//!
//! Seeds one Dovecot mailbox (tests/common/dovecot.rs) with MESSAGES real messages
//! (tests/data/imap-bench, repeated in turn), lets Dovecot assign UIDs with a first SELECT,
//! then reads them all with `fetch_since` in batches of BATCH, as the poller does:
//! plain IMAP, then implicit TLS (on Dovecot's now warm cache), then `flags_of_all`. Client
//! and server share the machine's cores, so the figure is a floor for a remote server's
//! CPU and a ceiling for its network.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::dovecot::Dovecot;
use leadline::mail::imap::{self, Body, CertificateDer, ImapSettings, Security, Uid};

const USER: &str = "alice";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: imap_fetch [MESSAGES (10000)] [BATCH (200)]");
        return;
    }
    let number = |i: usize, default: usize| -> usize {
        args.get(i).map_or(default, |a| {
            a.parse()
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or_else(|| panic!("expected a positive number, got {a:?}"))
        })
    };
    let count = number(0, 10_000);
    let batch = number(1, 200);

    let corpus = load_corpus(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/imap-bench"));
    let messages: Vec<&[u8]> = corpus
        .iter()
        .map(Vec::as_slice)
        .cycle()
        .take(count)
        .collect();
    let bytes: usize = messages.iter().map(|m| m.len()).sum();
    println!(
        "corpus: {} real messages (tests/data/imap-bench), repeated in turn to {count}: \
         {:.1} MB, mean {:.1} KB",
        corpus.len(),
        mb(bytes as u64),
        bytes as f64 / count as f64 / 1024.0
    );

    let dovecot = Dovecot::start();
    let seeding = Instant::now();
    dovecot.seed_maildir(USER, "INBOX", &messages);
    println!("seeded the Maildir directly in {:.2?}", seeding.elapsed());

    let settings = |security: Security| {
        let port = match security {
            Security::Tls => dovecot.imaps_port(),
            _ => dovecot.imap_port(),
        };
        let mut s = ImapSettings::new("127.0.0.1", port, security, USER, dovecot.password(USER));
        s.extra_roots = vec![CertificateDer::from(dovecot.ca_certificate_der())];
        s.timeouts.command = Duration::from_secs(600);
        s
    };

    let mut session = imap::connect(&settings(Security::None))
        .await
        .expect("connect");
    let started = Instant::now();
    let state = session.select("INBOX").await.expect("SELECT");
    assert_eq!(
        state.exists as usize, count,
        "Dovecot sees every seeded message"
    );
    println!(
        "first SELECT (Dovecot lists the {count} new Maildir files, assigns UIDs): {:.2?}",
        started.elapsed()
    );
    session.logout().await.ok();

    println!();
    println!(
        "{:<34} {:>8} {:>9} {:>8} {:>11} {:>8}",
        "raw fetch, fetch_since in batches", "messages", "MB", "seconds", "messages/s", "MB/s"
    );
    for (label, security) in [
        ("plain IMAP (first read)", Security::None),
        ("implicit TLS (cache warm)", Security::Tls),
    ] {
        let mut session = imap::connect(&settings(security)).await.expect("connect");
        session.select("INBOX").await.expect("SELECT");
        let started = Instant::now();
        let (fetched, fetched_bytes) = fetch_all(&mut session, batch).await;
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(fetched, count, "every message fetched once");
        println!(
            "{:<34} {:>8} {:>9.1} {:>8.2} {:>11.0} {:>8.1}",
            format!("{label}, batch {batch}"),
            fetched,
            mb(fetched_bytes),
            seconds,
            fetched as f64 / seconds,
            mb(fetched_bytes) / seconds
        );
        session.logout().await.ok();
    }

    let mut session = imap::connect(&settings(Security::None))
        .await
        .expect("connect");
    session.select("INBOX").await.expect("SELECT");
    let started = Instant::now();
    let flags = session.flags_of_all().await.expect("flags");
    println!(
        "\nflags_of_all over {} messages: {:.2?} (BODY.PEEK left {} of them unseen)",
        flags.len(),
        started.elapsed(),
        flags.iter().filter(|f| !f.seen).count()
    );
    session.logout().await.ok();
}

/// Everything in the selected folder, batch after batch; (messages, bytes).
async fn fetch_all(session: &mut imap::ImapSession, batch: usize) -> (usize, u64) {
    let (mut count, mut bytes, mut last) = (0, 0u64, Uid(0));
    loop {
        let fetched = session.fetch_since(last, batch).await.expect("fetch_since");
        let Some(newest) = fetched.last() else {
            return (count, bytes);
        };
        last = newest.uid;
        for message in &fetched {
            match &message.body {
                Body::Raw(raw) => bytes += raw.len() as u64,
                Body::TooLarge => panic!("no bench message is over the limit"),
            }
        }
        count += fetched.len();
    }
}

fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "eml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no .eml files in {}", dir.display());
    files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}
