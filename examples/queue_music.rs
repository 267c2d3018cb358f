//! How many callers can wait on one queue and hear its music without loss
//! (bench/queue-music).
//!
//! Per step: N `MediaSession`s of the library, each answering a caller with
//! `answer_caller` and playing one shared `Music` (the built-in pattern, PCMU), on a
//! 2-worker tokio runtime like the gateway's (threads `relay-*`); the queue's generator on
//! a current-thread runtime of its own (thread `music`), so its CPU is told apart from the
//! relay tasks'; the N callers are UDP sockets on loopback that send nothing (the music
//! goes to their SDP address), read by one task each on one current-thread runtime (thread
//! `receiver`), so the receiving side takes at most one core.
//!
//! Measured in a window after a warm-up, per caller: packets expected (from the first to
//! the last sequence number received in the window; a caller that received nothing
//! expects 50 per second), received, lost (expected − received), late (more than 60 ms
//! after the one before). CPU per thread group from /proc/self/task/*/stat, as a share
//! of one core over the window.
//!
//! Usage: `queue_music [--seconds 20] [--warmup 3] [--ports 12000-29999] N...`
//! Prints one line per step and, last, `max_clean N`: the highest N up to which every
//! step had 0 % loss, received at least 99 % of the packets due, and had at most 0.1 %
//! of its packets late; and `max_lossless N`, the same without the bound on late ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use leadline::media::{MediaEngine, Music, PortPool, PortRange};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Callers waiting on one queue, all hearing its music")]
struct Args {
    /// Measured window of a step, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Music before the window, in seconds.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// RTP port range of the relay (4 ports per waiting caller).
    #[arg(long, default_value = "12000-29999")]
    ports: PortRange,
    /// Worker threads of the relay's runtime: the gateway runs one per core.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Waiting callers per step.
    #[arg(required = true)]
    counts: Vec<usize>,
}

/// What one caller heard in the window.
#[derive(Default, Clone, Copy)]
struct Heard {
    received: u64,
    expected: u64,
    late: u64,
}

/// One step's request to the receiver thread: bind `n` sockets, say their ports, then
/// listen in the window it is sent.
struct Step {
    n: usize,
    ports: oneshot::Sender<Vec<u16>>,
    window: oneshot::Receiver<(Instant, Instant)>,
    heard: std::sync::mpsc::Sender<Vec<Heard>>,
}

const LATE: Duration = Duration::from_millis(60);
const PACKETS_PER_SECOND: u64 = 50;

fn main() {
    let args = Args::parse();
    let relay = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .thread_name("relay")
        .enable_all()
        .build()
        .expect("the relay's runtime");

    // The generator on a thread of its own, so its CPU can be read apart.
    let (music_tx, music_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("music".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the generator's runtime");
            runtime.block_on(async {
                music_tx.send(Music::start(None)).expect("main waits");
                std::future::pending::<()>().await;
            });
        })
        .expect("the generator's thread");
    let music = music_rx.recv().expect("the music");

    let (steps, step_rx) = std::sync::mpsc::channel::<Step>();
    std::thread::Builder::new()
        .name("receiver".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the receiver's runtime");
            while let Ok(step) = step_rx.recv() {
                runtime.block_on(receive(step));
            }
        })
        .expect("the receiver's thread");

    let ip: IpAddr = "127.0.0.1".parse().expect("an address");
    let engine = {
        let _inside = relay.enter();
        MediaEngine::new(PortPool::new(args.ports, ip), ip, Duration::from_secs(3600))
    };
    println!(
        "{:>7} {:>10} {:>10} {:>7} {:>6} {:>7} {:>8} {:>8} {:>8}",
        "callers", "expected", "received", "loss%", "late", "due%", "relay%", "music%", "recv%"
    );
    let mut max_clean = 0;
    let mut clean_so_far = true;
    let mut max_lossless = 0;
    let mut lossless_so_far = true;
    for &n in &args.counts {
        let (ports_tx, ports_rx) = oneshot::channel();
        let (window_tx, window_rx) = oneshot::channel();
        let (heard_tx, heard_rx) = std::sync::mpsc::channel();
        steps
            .send(Step {
                n,
                ports: ports_tx,
                window: window_rx,
                heard: heard_tx,
            })
            .expect("the receiver runs");
        let ports = ports_rx.blocking_recv().expect("the receiver's ports");
        let sessions = {
            let _inside = relay.enter();
            let mut sessions = Vec::with_capacity(n);
            for port in ports {
                let session = match engine.session() {
                    Ok(session) => session,
                    Err(err) => {
                        eprintln!("queue_music: {n} callers: {err}");
                        std::process::exit(1);
                    }
                };
                let offer = format!(
                    "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
                     t=0 0\r\nm=audio {port} RTP/AVP 0 8 101\r\n\
                     a=rtpmap:101 telephone-event/8000\r\n"
                );
                let (_, codec) = session
                    .answer_caller(offer.as_bytes())
                    .expect("a G.711 offer");
                session.play(&music, codec, None);
                sessions.push(session);
            }
            sessions
        };
        let start = Instant::now() + Duration::from_secs(args.warmup);
        let end = start + Duration::from_secs(args.seconds);
        let _ = window_tx.send((start, end));
        std::thread::sleep(start.saturating_duration_since(Instant::now()));
        let cpu_before = cpu_by_thread();
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        let cpu_after = cpu_by_thread();
        let heard = heard_rx.recv().expect("the receiver's counts");
        {
            let _inside = relay.enter();
            drop(sessions);
        }

        let expected: u64 = heard.iter().map(|h| h.expected).sum();
        let received: u64 = heard.iter().map(|h| h.received).sum();
        let late: u64 = heard.iter().map(|h| h.late).sum();
        let lost = expected.saturating_sub(received);
        let loss = 100.0 * lost as f64 / expected.max(1) as f64;
        let due = n as u64 * args.seconds * PACKETS_PER_SECOND;
        let due_share = 100.0 * received as f64 / due.max(1) as f64;
        let share = |group: &str| {
            let ticks = cpu_after.get(group).copied().unwrap_or(0)
                - cpu_before.get(group).copied().unwrap_or(0);
            100.0 * ticks as f64 / clock_ticks() as f64 / args.seconds as f64
        };
        println!(
            "{:>7} {:>10} {:>10} {:>7.3} {:>6} {:>7.2} {:>8.1} {:>8.1} {:>8.1}",
            n,
            expected,
            received,
            loss,
            late,
            due_share,
            share("relay"),
            share("music"),
            share("receiver"),
        );
        // Late packets are not lost, but a caller whose every tenth packet comes late
        // hears the jitter buffer working: more than 0.1 % late does not count as clean.
        let clean = lost == 0 && due_share >= 99.0 && late * 1_000 <= received;
        clean_so_far &= clean;
        if clean_so_far {
            max_clean = max_clean.max(n);
        }
        lossless_so_far &= lost == 0 && due_share >= 99.0;
        if lossless_so_far {
            max_lossless = max_lossless.max(n);
        }
        // Let the ports of the step go back to the pool before the next one.
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("max_clean {max_clean}");
    println!("max_lossless {max_lossless}");
}

/// The receiver's part of a step: one task per caller socket.
async fn receive(step: Step) {
    let mut sockets = Vec::with_capacity(step.n);
    for _ in 0..step.n {
        sockets.push(
            UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("a caller socket"),
        );
    }
    let ports = sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()).unwrap_or(0))
        .collect();
    let _ = step.ports.send(ports);
    let Ok((start, end)) = step.window.await else {
        return;
    };
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(listen(socket, start, end)))
        .collect();
    let mut heard = Vec::with_capacity(tasks.len());
    for task in tasks {
        heard.push(task.await.unwrap_or_default());
    }
    let _ = step.heard.send(heard);
}

async fn listen(socket: UdpSocket, start: Instant, end: Instant) -> Heard {
    let mut buffer = [0u8; 512];
    let mut heard = Heard::default();
    // The last packet's sequence number, extended past the 16-bit wrap, and arrival;
    // the lowest and highest extended numbers seen.
    let mut last: Option<(u16, i64, Instant)> = None;
    let mut range: Option<(i64, i64)> = None;
    loop {
        let Ok(Ok((length, _))) = tokio::time::timeout_at(end, socket.recv_from(&mut buffer)).await
        else {
            break;
        };
        let now = Instant::now();
        if now < start || length < 12 {
            continue;
        }
        let sequence = u16::from_be_bytes([buffer[2], buffer[3]]);
        let extended = last.map_or(0, |(previous, extended, _)| {
            extended + i64::from(sequence.wrapping_sub(previous) as i16)
        });
        if let Some((_, _, at)) = last
            && now.duration_since(at) > LATE
        {
            heard.late += 1;
        }
        heard.received += 1;
        last = Some((sequence, extended, now));
        range = Some(range.map_or((extended, extended), |(low, high)| {
            (low.min(extended), high.max(extended))
        }));
    }
    heard.expected = match range {
        Some((low, high)) => (high - low + 1) as u64,
        None => end.duration_since(start).as_secs() * PACKETS_PER_SECOND,
    };
    heard
}

/// CPU ticks (user + system) by thread group: `relay` (the relay runtime's workers),
/// `music`, `receiver`.
fn cpu_by_thread() -> HashMap<String, u64> {
    let mut by_group = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_group;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: the name may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat(5); 12 and 13 after the state.
        let ticks = fields
            .get(11)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        let group = ["relay", "music", "receiver"]
            .into_iter()
            .find(|g| name.starts_with(g))
            .unwrap_or("other");
        *by_group.entry(group.to_owned()).or_default() += ticks;
    }
    by_group
}

/// The unit of /proc's CPU times: USER_HZ, which Linux fixes at 100 for user space.
fn clock_ticks() -> u64 {
    100
}
