//! Helpers shared by the integration tests: free ports, polling with a deadline,
//! throwaway servers (`postgres`, `dovecot`) and headless browsers (`browser`).
//!
//! Each test binary includes this module with `mod common;` and uses only part of it,
//! hence `allow(dead_code)`. Nothing here depends on the `leadline` crate, so the helpers
//! keep compiling while the crate's API moves.
//!
//! No fixed sleeps: wait for a condition with [`wait_until`] (async) or
//! [`wait_until_blocking`], which poll with a short, growing backoff and panic with a
//! message naming what never happened.
#![allow(dead_code)]

pub mod browser;
pub mod dovecot;
pub mod postgres;
pub mod tls;

use std::fmt::Debug;
use std::future::Future;
use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

/// First pause between two polls; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// A port on 127.0.0.1 that was free for both TCP and UDP a moment ago.
///
/// Another process can take it before the caller binds it: a caller that starts a server
/// on it must retry with a new port when the bind fails (as `PgServer::start` does).
/// Prefer binding port 0 and asking the socket for its port wherever the server under
/// test accepts an already bound listener or reports its address.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind(("127.0.0.1", 0)).expect("bind a TCP socket on 127.0.0.1:0");
        let port = tcp.local_addr().expect("address of a bound socket").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("found no port on 127.0.0.1 free for both TCP and UDP in 100 tries");
}

/// The first of four consecutive UDP ports on 127.0.0.1 that were free a moment ago: SIPp
/// binds its media port and the three after it (audio RTP/RTCP, video RTP/RTCP).
pub fn free_udp_block() -> u16 {
    for _ in 0..200 {
        let first = UdpSocket::bind(("127.0.0.1", 0)).expect("bind a UDP socket on 127.0.0.1:0");
        let port = first
            .local_addr()
            .expect("address of a bound socket")
            .port();
        if !port.is_multiple_of(2) || port > 65_530 {
            continue;
        }
        let rest: Vec<_> = (1..4)
            .map_while(|i| UdpSocket::bind(("127.0.0.1", port + i)).ok())
            .collect();
        if rest.len() == 3 {
            return port;
        }
    }
    panic!("found no block of four free UDP ports on 127.0.0.1 in 200 tries");
}

/// What a polled closure returns: ready with a value, or not yet (with a reason to show
/// when the deadline passes). Implemented for `Option` and `Result`.
pub trait Attempt {
    type Value;
    fn value(self) -> Result<Self::Value, String>;
}

impl<T> Attempt for Option<T> {
    type Value = T;
    fn value(self) -> Result<T, String> {
        self.ok_or_else(|| "None".to_owned())
    }
}

impl<T, E: Debug> Attempt for Result<T, E> {
    type Value = T;
    fn value(self) -> Result<T, String> {
        self.map_err(|e| format!("Err({e:?})"))
    }
}

/// Calls `f` until it returns `Some`/`Ok` and returns that value; panics naming `what`
/// (and the last `None`/`Err`) once `deadline` has passed.
///
/// Polls with a backoff from 10 ms doubling to 200 ms. An attempt still running at the
/// deadline is abandoned, so a hanging connect cannot outlive the deadline.
pub async fn wait_until<F, Fut, P>(deadline: Duration, what: &str, mut f: F) -> P::Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
    P: Attempt,
{
    let start = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = deadline.saturating_sub(start.elapsed());
        let last = match tokio::time::timeout(left, f()).await {
            Ok(outcome) => match outcome.value() {
                Ok(value) => return value,
                Err(last) => last,
            },
            Err(_) => "attempt still running at the deadline".to_owned(),
        };
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            panic!(
                "timed out after {:?} ({attempts} attempts) waiting for {what}; last: {last}",
                start.elapsed()
            );
        }
        tokio::time::sleep(backoff.min(left)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// [`wait_until`] for synchronous code (server start-up, `Drop`). `f` must bound its own
/// run time (socket timeouts): a blocking call cannot be abandoned.
pub fn wait_until_blocking<F, P>(deadline: Duration, what: &str, f: F) -> P::Value
where
    F: FnMut() -> P,
    P: Attempt,
{
    match poll_blocking(deadline, f) {
        Ok(value) => value,
        Err(last) => panic!("timed out after {deadline:?} waiting for {what}; last: {last}"),
    }
}

/// The loop behind [`wait_until_blocking`], for callers that add context to the failure
/// (a server's log) before panicking. `Err` carries the last `None`/`Err`.
pub fn poll_blocking<F, P>(deadline: Duration, mut f: F) -> Result<P::Value, String>
where
    F: FnMut() -> P,
    P: Attempt,
{
    let start = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let last = match f().value() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(last);
        }
        std::thread::sleep(backoff.min(left));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
