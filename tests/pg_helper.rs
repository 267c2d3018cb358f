//! Proves the helpers in `tests/common`: a real throwaway PostgreSQL that serves, gives
//! each test its own database and leaves nothing behind (also when the test process is
//! killed), and the polling helpers. It is also CI's smoke test that PostgreSQL runs here.

mod common;

use common::postgres::{PgServer, is_plain_identifier};
use common::{free_port, wait_until};
use sqlx::PgPool;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn pg_server_serves_creates_databases_and_cleans_up() {
    let server = PgServer::start();
    let dir = server.dir().to_path_buf();
    assert!(server.data_dir().join("PG_VERSION").is_file());
    assert!(
        server
            .url()
            .ends_with(&format!(":{}/postgres", server.port()))
    );

    let pool = PgPool::connect(&server.url())
        .await
        .expect("connect to postgres");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .expect("SELECT 1");
    assert_eq!(one, 1);

    let url = server.create_database("pg_helper_second").await;
    assert_eq!(url, server.database_url("pg_helper_second"));
    let second = PgPool::connect(&url)
        .await
        .expect("connect to the new database");
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&second)
        .await
        .expect("current_database()");
    assert_eq!(name, "pg_helper_second");
    sqlx::query("CREATE TABLE t (id BIGINT PRIMARY KEY)")
        .execute(&second)
        .await
        .expect("create a table");
    sqlx::query("INSERT INTO t (id) VALUES (1), (2)")
        .execute(&second)
        .await
        .expect("insert rows");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&second)
        .await
        .expect("count rows");
    assert_eq!(rows, 2);

    // The test database is not visible from the first one's tables.
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = 't'")
            .fetch_one(&pool)
            .await
            .expect("look for the table from the postgres database");
    assert_eq!(tables, 0);

    pool.close().await;
    second.close().await;
    let postmaster = postmaster_pid(&dir);
    drop(server);
    assert!(!dir.exists(), "{} is still there after drop", dir.display());
    assert!(
        process_gone(postmaster),
        "postmaster {postmaster} still runs after drop"
    );
}

#[tokio::test]
async fn pg_server_shared_is_one_server_per_process() {
    let first = PgServer::shared();
    let second = PgServer::shared();
    assert!(std::ptr::eq(first, second));
    let url = first.create_database("pg_helper_shared").await;
    let pool = PgPool::connect(&url)
        .await
        .expect("connect to the shared server");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .expect("SELECT 1");
    assert_eq!(one, 1);
    pool.close().await;
}

#[test]
fn pg_server_accepts_only_plain_database_names() {
    assert!(is_plain_identifier("pg_helper_second"));
    assert!(is_plain_identifier("_t1"));
    for name in [
        "",
        "1abc",
        "Upper",
        "x; DROP DATABASE postgres",
        "a-b",
        &"a".repeat(64),
    ] {
        assert!(!is_plain_identifier(name), "{name:?} accepted");
    }
}

/// Run by `pg_server_is_cleaned_up_when_the_test_process_is_killed` in a child process:
/// starts a server, reports its directory and port, then waits until it is killed.
#[test]
#[ignore = "a child process of pg_server_is_cleaned_up_when_the_test_process_is_killed"]
fn pg_server_child_waits_to_be_killed() {
    let server = PgServer::start();
    println!("SERVER {} {}", server.port(), server.dir().display());
    // Blocks until the parent kills us (or exits, closing our stdin).
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).ok();
}

#[tokio::test]
async fn pg_server_is_cleaned_up_when_the_test_process_is_killed() {
    let mut child = Command::new(std::env::current_exe().expect("path of this test binary"))
        .args([
            "--exact",
            "pg_server_child_waits_to_be_killed",
            "--ignored",
            "--nocapture",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start this test binary as a child");
    let stdout = child.stdout.take().expect("piped stdout");
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.starts_with("SERVER "))
    })
    .await
    .expect("read the child's output")
    .expect("the child reports its server");
    let mut fields = line.split_whitespace().skip(1);
    let port: u16 = fields.next().and_then(|p| p.parse().ok()).expect("port");
    let dir = PathBuf::from(fields.next().expect("directory"));
    TcpStream::connect(("127.0.0.1", port)).expect("the child's server listens");
    let postmaster = postmaster_pid(&dir);

    child.kill().expect("SIGKILL the child"); // no Drop, no unwinding
    child.wait().expect("reap the child");

    wait_until(
        Duration::from_secs(20),
        "the watchdog to remove the server",
        || {
            let gone = !dir.exists() && process_gone(postmaster);
            std::future::ready(gone.then_some(()))
        },
    )
    .await;
}

/// The postmaster's pid, first line of `data/postmaster.pid` while the server runs.
fn postmaster_pid(dir: &Path) -> u32 {
    let file = dir.join("data/postmaster.pid");
    let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    text.lines()
        .next()
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}: {text:?}", file.display()))
}

/// True when `pid` no longer runs (no such process, or a zombie waiting for its reaper).
fn process_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn free_port_is_bindable_for_tcp_and_udp() {
    let port = free_port();
    assert_ne!(port, 0);
    // Nothing else should race us for it on a test machine within microseconds.
    TcpListener::bind(("127.0.0.1", port)).expect("bind TCP on the free port");
    UdpSocket::bind(("127.0.0.1", port)).expect("bind UDP on the free port");
}

#[tokio::test]
async fn wait_until_returns_the_first_ready_value() {
    let mut calls = 0;
    let value = wait_until(Duration::from_secs(5), "the third call", || {
        calls += 1;
        let ready = (calls >= 3).then_some(calls);
        async move { ready }
    })
    .await;
    assert_eq!(value, 3);

    let ok: u8 = wait_until(Duration::from_secs(5), "an Ok", || async {
        Ok::<u8, String>(7)
    })
    .await;
    assert_eq!(ok, 7);
}

#[tokio::test]
#[should_panic(expected = "waiting for the impossible; last: Err(\"not yet\")")]
async fn wait_until_panics_naming_what_never_happened() {
    wait_until(Duration::from_millis(50), "the impossible", || async {
        Err::<(), _>("not yet")
    })
    .await;
}
