//! Matcher lookup latency at scale: p50/p99 of `Store::match_identifier` (exclusions +
//! candidates, the work a call or e-mail does to identify its customer) with 1,000,000
//! contacts in SQLite, and the process's memory.
//!
//! Run: `cargo bench --bench matcher_scale` (release). Environment:
//! `LEADLINE_BENCH_CONTACTS` (default 1000000), `LEADLINE_BENCH_LOOKUPS` (default 20000).

use std::time::Instant;

use leadline::crm::model::EntityKind;
use leadline::matcher::{Identifier, MatchStatus, PhoneKey};
use leadline::store::{NewEntity, Store};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident and peak memory of this process, from /proc (Linux).
fn memory() -> (String, String) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_owned())
            .unwrap_or_else(|| "?".to_owned())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A distinct German mobile number per index.
fn phone(i: usize) -> String {
    format!("+49151{:08}", i)
}

/// A small deterministic generator: the bench needs spread, not cryptography.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn percentile(sorted: &[u128], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; test runners (`cargo test --all-targets`, nextest's
    // `--list`) run bench binaries too, and must get an empty test list, not a benchmark.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let contacts = env_usize("LEADLINE_BENCH_CONTACTS", 1_000_000);
    let lookups = env_usize("LEADLINE_BENCH_LOOKUPS", 20_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let store = Store::connect(&url).await.expect("open SQLite");
    store.migrate().await.expect("migrate");

    let started = Instant::now();
    let mut created = 0;
    for chunk_start in (0..contacts).step_by(50_000) {
        let batch: Vec<NewEntity> = (chunk_start..(chunk_start + 50_000).min(contacts))
            .map(|i| NewEntity {
                kind: EntityKind::Contact,
                name: format!("Contact {i}"),
                identifiers: vec![Identifier::Phone(PhoneKey::E164(phone(i)))],
                responsible: None,
                source: "OTHER".to_owned(),
                company: None,
                customer: None,
                deal: None,
            })
            .collect();
        created += store.import_entities(&batch).await.expect("import").created;
    }
    let load = started.elapsed();
    println!(
        "loaded {created} contacts in {:.1} s ({:.0} contacts/s)",
        load.as_secs_f64(),
        created as f64 / load.as_secs_f64()
    );

    let mut rng = Lcg(42);
    // Warm-up: the first lookups pay for page-cache misses and statement preparation.
    for _ in 0..1_000 {
        let i = rng.next() as usize % contacts;
        let _ = store
            .match_identifier(Identifier::Phone(PhoneKey::E164(phone(i))))
            .await;
    }
    let mut known = Vec::with_capacity(lookups);
    let mut unknown = Vec::with_capacity(lookups / 10);
    for n in 0..lookups {
        // One lookup in ten is a new caller (the index answers "nobody").
        let is_new = n % 10 == 9;
        let i = if is_new {
            contacts + (rng.next() as usize % contacts)
        } else {
            rng.next() as usize % contacts
        };
        let t = Instant::now();
        let outcome = store
            .match_identifier(Identifier::Phone(PhoneKey::E164(phone(i))))
            .await
            .expect("lookup");
        let micros = t.elapsed().as_micros();
        let expected = if is_new {
            MatchStatus::Unknown
        } else {
            MatchStatus::Known
        };
        assert_eq!(outcome.status, expected, "lookup of {}", phone(i));
        if is_new {
            unknown.push(micros);
        } else {
            known.push(micros);
        }
    }
    known.sort_unstable();
    unknown.sort_unstable();
    let (rss, peak) = memory();
    println!("matcher lookup over {contacts} contacts in SQLite, {lookups} lookups:");
    println!(
        "  known caller   p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        percentile(&known, 0.50),
        percentile(&known, 0.99),
        *known.last().unwrap() as f64 / 1000.0
    );
    println!(
        "  unknown caller p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        percentile(&unknown, 0.50),
        percentile(&unknown, 0.99),
        *unknown.last().unwrap() as f64 / 1000.0
    );
    println!("  process memory: RSS {rss}, peak {peak}");
    let db_size: u64 = std::fs::read_dir(dir.path())
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    println!("  database on disk: {:.0} MiB", db_size as f64 / 1048576.0);
    store.close().await;
}
