//! The media relay's load generator: N concurrent G.711 calls through an RTP relay, 50 packets/s
//! each way, measuring loss, the delay the relay adds and its jitter, and the CPU and
//! memory the relay takes. Run it with `bench/rtp-relay`, which starts the relays.
//!
//! The relay is driven over rtpengine's ng control protocol (`examples/rtp_relay_host.rs`
//! speaks it for Leadline), so Leadline and rtpengine are measured by the same code. Per
//! call: two UDP sockets on 127.0.0.1 (caller and callee), an `offer` with the caller's
//! SDP and an `answer` with the callee's, each side sending to the relay port the other
//! side's rewritten SDP names. Without `--ng` the two sockets send to each other: the
//! generator's own floor of delay and jitter, with the same packets and the same threads.
//!
//! Every packet is a real G.711 µ-law RTP packet (PT 0, 160 bytes of payload, sequence and
//! timestamp advancing from random starts, one SSRC per stream) whose payload starts with
//! its send time (monotonic ns), a flag saying whether it belongs to the measured window,
//! and its stream's number, so the receiving socket measures the one-way delay through
//! the relay and notices a packet delivered to the wrong call. Calls start at phases
//! spread over the 20 ms packet interval (the callee's stream 10 ms after the caller's),
//! as calls set up at random moments do, instead of all sending in the same millisecond.
//!
//! The calls are split into `--threads` shares. Each share has a sender thread, waking
//! every millisecond to send the packets due in that millisecond with non-blocking sends,
//! and a receiver thread with one task per socket on a current-thread tokio runtime. After
//! `--warmup` seconds of traffic the measured window of `--seconds` starts; a packet
//! that arrives more than `GRACE` after the last packet was sent is counted lost, as a
//! phone's jitter buffer would drop it.
//!
//! Figures: packets sent and received per direction, loss, one-way delay p50/p99/max,
//! added jitter as the p99 over packets of |delay − the stream's median delay| and the
//! p99 over streams of the RFC 3550 interarrival jitter, the relay's CPU (utime + stime
//! of `--relay-pid` over the window, 100 % = one core) and RSS, the generator's own CPU,
//! the rest of the machine's CPU, how late its send ticks ran, and the kernel's drops at
//! the relay's sockets and at the generator's (which side fell behind). The last line,
//! `RESULT key=value …`, is for scripts.

#[path = "rtp_relay_host.rs"]
#[allow(dead_code)]
mod host;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use host::bencode::{self, Value};
use host::ng;
use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "G.711 call load through an RTP relay driven over the ng protocol")]
struct Args {
    /// The relay's ng control address; without it the endpoints send to each other.
    #[arg(long)]
    ng: Option<SocketAddr>,
    /// Concurrent calls.
    #[arg(long, default_value_t = 100)]
    calls: usize,
    /// Length of the measured window.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Traffic before the window, not measured (latching, caches, buffers settle).
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Shares of the calls, each with a sender thread and a receiver thread. One share
    /// costs least: on a small machine every extra thread means more cross-CPU wake-ups.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The relay process, for its CPU and RSS.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// Name of the relay in the output.
    #[arg(long, default_value = "relay")]
    label: String,
    /// Only check that the relay answers an ng ping (exit status 0) and stop.
    #[arg(long)]
    ping: bool,
}

/// The packet interval of G.711 at 20 ms ptime, and its samples at 8 kHz.
const PTIME: Duration = Duration::from_millis(20);
const SAMPLES_PER_PACKET: u32 = 160;
const PAYLOAD_LEN: usize = 160;
/// The sender loop's tick, and the send slots of one packet interval.
const TICK: Duration = Duration::from_millis(1);
const SLOTS: u64 = (PTIME.as_millis() / TICK.as_millis()) as u64;
/// How long after the last send packets are still awaited.
const GRACE: Duration = Duration::from_millis(500);
/// ng requests are retried after this, up to `NG_TRIES` times (UDP).
const NG_TIMEOUT: Duration = Duration::from_millis(500);
const NG_TRIES: usize = 4;

/// Payload layout: send time (ns since the generator's epoch, big-endian), window flag,
/// stream number (big-endian); µ-law silence after that.
const MEASURED: u8 = 1;
const WARMUP: u8 = 0;
const MULAW_SILENCE: u8 = 0xff;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.ping {
        let Some(server) = args.ng else {
            eprintln!("rtp_load: --ping needs --ng");
            return std::process::ExitCode::from(2);
        };
        let ping = Value::dict([("command", Value::from("ping"))]);
        return match NgClient::new(server).and_then(|mut c| c.request(&ping)) {
            Ok(_) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("rtp_load: {server}: {err}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if args.calls == 0 || args.seconds == 0 || args.threads == 0 {
        eprintln!("rtp_load: --calls, --seconds and --threads must be positive");
        return std::process::ExitCode::from(2);
    }
    match run(&args) {
        Ok(report) => {
            report.print(&args);
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("rtp_load: {err}");
            println!(
                "RESULT label={} calls={} error={}",
                args.label,
                args.calls,
                err.replace(' ', "_")
            );
            std::process::ExitCode::FAILURE
        }
    }
}

// --- ng client ---------------------------------------------------------------------------

struct NgClient {
    socket: std::net::UdpSocket,
    server: SocketAddr,
    next_cookie: u64,
    buffer: Vec<u8>,
}

impl NgClient {
    fn new(server: SocketAddr) -> Result<Self, String> {
        let local: SocketAddr = if server.is_ipv4() {
            "127.0.0.1:0".parse().expect("a valid address")
        } else {
            "[::1]:0".parse().expect("a valid address")
        };
        let socket = std::net::UdpSocket::bind(local).map_err(|e| format!("ng socket: {e}"))?;
        Ok(Self {
            socket,
            server,
            next_cookie: u64::from(std::process::id()) << 32,
            buffer: vec![0; 65_535],
        })
    }

    /// Sends a request and waits for the reply with its cookie, retrying on silence
    /// (both relays answer a retransmission the same way). An ng error is an `Err`.
    fn request(&mut self, request: &Value) -> Result<Value, String> {
        self.next_cookie += 1;
        let cookie = format!("{:x}", self.next_cookie);
        let message = ng::message(cookie.as_bytes(), request);
        for _ in 0..NG_TRIES {
            self.socket
                .send_to(&message, self.server)
                .map_err(|e| format!("ng send: {e}"))?;
            let deadline = Instant::now() + NG_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.socket
                    .set_read_timeout(Some(left))
                    .map_err(|e| format!("ng socket: {e}"))?;
                let len = match self.socket.recv(&mut self.buffer) {
                    Ok(len) => len,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) => return Err(format!("ng receive: {e}")),
                };
                let (reply_cookie, body) = ng::split(&self.buffer[..len]);
                if reply_cookie != cookie.as_bytes() {
                    continue; // a late reply to an earlier try
                }
                let reply = bencode::decode(body).map_err(|e| format!("ng reply: {e}"))?;
                let result = reply.get("result").and_then(Value::as_bytes);
                if result == Some(b"error") {
                    let reason = reply
                        .get("error-reason")
                        .and_then(Value::as_bytes)
                        .unwrap_or(b"no reason given");
                    return Err(format!(
                        "the relay refused: {}",
                        String::from_utf8_lossy(reason)
                    ));
                }
                return Ok(reply);
            }
        }
        Err(format!(
            "no reply from {} in {:?}",
            self.server,
            NG_TIMEOUT * NG_TRIES as u32
        ))
    }
}

/// What an endpoint offers: PCMU and telephone-event (RFC 4733), as a desk phone does.
fn endpoint_sdp(session: usize, address: SocketAddr) -> Vec<u8> {
    format!(
        "v=0\r\no=rtp_load {session} 1 IN IP4 {ip}\r\ns=rtp_load\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
        ip = address.ip(),
        port = address.port()
    )
    .into_bytes()
}

/// Where the relay wants the audio of the party that receives this reply's SDP.
fn relay_address(reply: &Value) -> Result<SocketAddr, String> {
    let sdp = reply
        .get("sdp")
        .and_then(Value::as_bytes)
        .ok_or("the reply has no sdp")?;
    leadline::media::sdp::audio(sdp)
        .and_then(|audio| audio.rtp)
        .ok_or_else(|| "the reply's sdp has no audio address".to_owned())
}

// --- calls ---------------------------------------------------------------------------------

/// One call's endpoints and where each sends.
struct Call {
    caller: std::net::UdpSocket,
    callee: std::net::UdpSocket,
    /// Where the caller sends (the relay's caller-facing port).
    caller_to: SocketAddr,
    callee_to: SocketAddr,
}

fn call_id(run: &str, i: usize) -> String {
    format!("{run}-{i}")
}

fn bind_endpoint() -> Result<std::net::UdpSocket, String> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| {
        format!("cannot bind an endpoint socket: {e} (raise `ulimit -n`: 2 sockets a call)")
    })?;
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("endpoint socket: {e}"))?;
    Ok(socket)
}

/// Binds the endpoints and sets the calls up on the relay (offer, then answer).
fn set_up(args: &Args, ng: Option<&mut NgClient>, run: &str) -> Result<Vec<Call>, String> {
    let mut calls = Vec::with_capacity(args.calls);
    let mut ng = ng;
    for i in 0..args.calls {
        let caller = bind_endpoint()?;
        let callee = bind_endpoint()?;
        let local = |s: &std::net::UdpSocket| s.local_addr().map_err(|e| e.to_string());
        let (caller_at, callee_at) = (local(&caller)?, local(&callee)?);
        let (caller_to, callee_to) = match ng.as_deref_mut() {
            None => (callee_at, caller_at),
            Some(ng) => {
                let id = call_id(run, i);
                let offer = Value::dict([
                    ("command", Value::from("offer")),
                    ("call-id", Value::from(id.as_str())),
                    ("from-tag", Value::from(format!("caller-{i}").as_str())),
                    ("sdp", Value::Bytes(endpoint_sdp(2 * i, caller_at))),
                ]);
                let offered = ng
                    .request(&offer)
                    .map_err(|e| format!("offer of call {i}: {e}"))?;
                let answer = Value::dict([
                    ("command", Value::from("answer")),
                    ("call-id", Value::from(id.as_str())),
                    ("from-tag", Value::from(format!("caller-{i}").as_str())),
                    ("to-tag", Value::from(format!("callee-{i}").as_str())),
                    ("sdp", Value::Bytes(endpoint_sdp(2 * i + 1, callee_at))),
                ]);
                let answered = ng
                    .request(&answer)
                    .map_err(|e| format!("answer of call {i}: {e}"))?;
                // The offer's rewrite goes to the callee: it names where the callee sends.
                (relay_address(&answered)?, relay_address(&offered)?)
            }
        };
        calls.push(Call {
            caller,
            callee,
            caller_to,
            callee_to,
        });
    }
    Ok(calls)
}

/// Deletes the calls set up so far; how many the relay refused or did not answer.
fn tear_down(ng: &mut NgClient, run: &str, count: usize) -> usize {
    (0..count)
        .filter(|&i| {
            let delete = Value::dict([
                ("command", Value::from("delete")),
                ("call-id", Value::from(call_id(run, i).as_str())),
            ]);
            ng.request(&delete).is_err()
        })
        .count()
}

// --- traffic -------------------------------------------------------------------------------

/// The shared timeline of a run.
#[derive(Clone, Copy)]
struct Timeline {
    /// Send times in payloads are ns since this instant.
    epoch: Instant,
    start: Instant,
    measure_from: Instant,
    measure_until: Instant,
}

/// A stream a sender thread sends: one direction of one call.
struct Outgoing {
    socket: std::net::UdpSocket,
    to: SocketAddr,
    stream: u32,
    ssrc: u32,
    first_seq: u16,
    first_timestamp: u32,
    sent: u64,
    send_errors: u64,
}

/// What the receiving socket of one stream saw in the window.
#[derive(Default)]
struct Received {
    stream: u32,
    packets: u64,
    delays_ns: Vec<u64>,
    /// RFC 3550 §6.4.1 interarrival jitter at the end of the window, in ns.
    jitter_ns: f64,
    /// Packets that were not this stream's (another call's, not RTP).
    foreign: u64,
}

struct SendReport {
    sent: Vec<(u32, u64)>,
    send_errors: u64,
    /// How late the sender's ticks ran in the window, µs.
    lateness_us: Vec<u64>,
}

/// The streams each send slot of a sender thread sends.
type Slots = Vec<Vec<Outgoing>>;
/// The sockets a receiver thread reads, with the stream each receives.
type Receiving = Vec<(std::net::UdpSocket, u32)>;

/// One share of the calls: its sockets split into the streams a sender thread sends (on
/// duplicated descriptors) and the sockets a receiver thread reads.
fn split_share(calls: Vec<(usize, Call)>, total: usize) -> Result<(Slots, Receiving), String> {
    let mut slots: Slots = (0..SLOTS).map(|_| Vec::new()).collect();
    let mut receiving = Vec::with_capacity(2 * calls.len());
    for (i, call) in calls {
        let dup = |s: &std::net::UdpSocket| {
            s.try_clone()
                .map_err(|e| format!("cannot duplicate an endpoint socket: {e}"))
        };
        // Phases spread evenly over the 20 ms by call number; the callee's half a packet
        // interval later.
        let slot = (i as u64 * SLOTS / total as u64) % SLOTS;
        let streams = [
            (dup(&call.caller)?, call.caller_to, 2 * i as u32, slot),
            (
                dup(&call.callee)?,
                call.callee_to,
                2 * i as u32 + 1,
                (slot + SLOTS / 2) % SLOTS,
            ),
        ];
        for (socket, to, stream, slot) in streams {
            slots[slot as usize].push(Outgoing {
                socket,
                to,
                stream,
                ssrc: rand::random(),
                first_seq: rand::random(),
                first_timestamp: rand::random(),
                sent: 0,
                send_errors: 0,
            });
        }
        // The callee socket receives the caller's stream and the other way round.
        receiving.push((call.callee, 2 * i as u32));
        receiving.push((call.caller, 2 * i as u32 + 1));
    }
    Ok((slots, receiving))
}

/// The sender thread: every millisecond the streams of that slot send their next packet.
/// A plain thread sleeping with the kernel's high-resolution timers paces to tens of µs,
/// where a tokio timer rounds every wake-up to the next millisecond, and that rounding
/// would show in the RFC 3550 jitter. A late tick is caught up at once (a phone's clock
/// does not skip packets either); the send time in the payload is taken per packet, so
/// lateness never counts as delay. Sends are non-blocking: a full socket buffer is a send
/// error, not a stall of every other stream.
fn send(mut slots: Slots, timeline: Timeline) -> SendReport {
    let mut lateness_us = Vec::with_capacity(
        (timeline.measure_until - timeline.measure_from).as_millis() as usize + 1,
    );
    let mut packet = [0u8; 12 + PAYLOAD_LEN];
    let mut payload = [MULAW_SILENCE; PAYLOAD_LEN];
    for tick in 0u64.. {
        let due = timeline.start + TICK * tick as u32;
        if due >= timeline.measure_until {
            break;
        }
        sleep_until(due);
        // Which window a packet belongs to follows its schedule, so sender and
        // receiver agree on it whatever the lateness.
        let measured = due >= timeline.measure_from;
        if measured {
            let late = Instant::now().saturating_duration_since(due);
            lateness_us.push(late.as_micros() as u64);
        }
        let number = tick / SLOTS;
        payload[8] = if measured { MEASURED } else { WARMUP };
        for stream in &mut slots[(tick % SLOTS) as usize] {
            payload[9..13].copy_from_slice(&stream.stream.to_be_bytes());
            let sent_ns = timeline.epoch.elapsed().as_nanos() as u64;
            payload[..8].copy_from_slice(&sent_ns.to_be_bytes());
            let len = RtpPacketBuilder::new()
                .payload_type(0)
                .ssrc(stream.ssrc)
                .sequence(Seq::from(stream.first_seq.wrapping_add(number as u16)))
                .timestamp(
                    stream
                        .first_timestamp
                        .wrapping_add(SAMPLES_PER_PACKET.wrapping_mul(number as u32)),
                )
                .payload(&payload)
                .build_into(&mut packet)
                .expect("a 172-byte buffer holds a 160-byte payload RTP packet");
            match stream.socket.send_to(&packet[..len], stream.to) {
                Ok(_) if measured => stream.sent += 1,
                Ok(_) => {}
                Err(_) => stream.send_errors += 1,
            }
        }
    }
    let (mut sent, mut send_errors) = (Vec::new(), 0);
    for stream in slots.into_iter().flatten() {
        sent.push((stream.stream, stream.sent));
        send_errors += stream.send_errors;
    }
    SendReport {
        sent,
        send_errors,
        lateness_us,
    }
}

/// The receiver thread: one task per socket on a current-thread runtime, until `stop`.
fn receive_all(
    sockets: Receiving,
    timeline: Timeline,
    seconds: u64,
    stop: CancellationToken,
) -> Result<Vec<Received>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()
        .expect("a current-thread runtime builds with time and io");
    runtime.block_on(async move {
        let capacity = (seconds as usize + 1) * 50;
        let mut tasks = Vec::with_capacity(sockets.len());
        for (socket, stream) in sockets {
            // Readable interest only. tokio's UdpSocket registers for writability too,
            // and then every packet the sender thread sends on the same socket would
            // wake this thread when the kernel frees it (sock_wfree → write space →
            // epoll): one spurious wake-up per packet sent.
            // SAFETY: the std socket is owned by the AsyncFd and never replaced, so its
            // descriptor stays open and the same for the AsyncFd's whole life.
            let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
                .map_err(|e| format!("cannot register an endpoint socket: {e}"))?;
            tasks.push(tokio::spawn(receive(
                socket,
                stream,
                timeline,
                capacity,
                stop.clone(),
            )));
        }
        stop.cancelled().await;
        let mut received = Vec::with_capacity(tasks.len());
        for task in tasks {
            received.push(task.await.map_err(|_| "a receive task panicked")?);
        }
        Ok(received)
    })
}

/// One socket's receive task: what arrives for `stream` until the run's end.
async fn receive(
    socket: AsyncFd<std::net::UdpSocket>,
    stream: u32,
    timeline: Timeline,
    capacity: usize,
    stop: CancellationToken,
) -> Received {
    let mut seen = Received {
        stream,
        delays_ns: Vec::with_capacity(capacity),
        ..Received::default()
    };
    let mut buffer = [0u8; 2048];
    let mut first_timestamp = None;
    let mut last_transit: Option<i64> = None;
    // One waiter for the whole task, not one per packet.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let len = tokio::select! {
            biased;
            _ = &mut stopped => break,
            ready = socket.readable() => {
                let Ok(mut ready) = ready else { break };
                match ready.try_io(|socket| socket.get_ref().recv(&mut buffer)) {
                    Ok(Ok(len)) => len,
                    // An ICMP error of an earlier packet, or readiness gone stale.
                    Ok(Err(_)) | Err(_) => continue,
                }
            }
        };
        let arrival_ns = timeline.epoch.elapsed().as_nanos() as i64;
        let Ok(rtp) = RtpReader::new(&buffer[..len]) else {
            seen.foreign += 1;
            continue;
        };
        let payload = rtp.payload();
        if payload.len() != PAYLOAD_LEN || payload[9..13] != stream.to_be_bytes() {
            seen.foreign += 1;
            continue;
        }
        if payload[8] != MEASURED {
            continue;
        }
        let sent_ns = i64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
        seen.delays_ns.push((arrival_ns - sent_ns).max(0) as u64);
        seen.packets += 1;
        // RFC 3550 A.8 in ns rather than in 8 kHz units: at 125 µs a unit, loopback's
        // tens of µs would round away. Transit = arrival − RTP timestamp (as time).
        let first = *first_timestamp.get_or_insert(rtp.timestamp());
        let media_ns = i64::from(rtp.timestamp().wrapping_sub(first)) * 125_000;
        let transit = arrival_ns - media_ns;
        if let Some(last) = last_transit {
            let d = (transit - last).unsigned_abs() as f64;
            seen.jitter_ns += (d - seen.jitter_ns) / 16.0;
        }
        last_transit = Some(transit);
    }
    seen
}

// --- measuring ---------------------------------------------------------------------------

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields are counted after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Packets the kernel dropped for a full receive buffer at the generator's sockets and
/// at the relay's (from /proc/net/udp, since each socket was made, warm-up included):
/// whether a loss happened because the relay or the generator fell behind.
fn socket_drops(generator: &HashSet<u16>, relay: &HashSet<u16>) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let (mut at_generator, mut at_relay) = (0, 0);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(drops)) = (fields.get(1), fields.last()) else {
            continue;
        };
        // 127.0.0.1 as the kernel prints it (a little-endian word in hex).
        let Some(port) = local.strip_prefix("0100007F:") else {
            continue;
        };
        let (Ok(port), Ok(drops)) = (u16::from_str_radix(port, 16), drops.parse::<u64>()) else {
            continue;
        };
        if generator.contains(&port) {
            at_generator += drops;
        } else if relay.contains(&port) {
            at_relay += drops;
        }
    }
    Some((at_generator, at_relay))
}

/// Busy time of the whole machine (every CPU, idle and I/O wait left out), in clock
/// ticks: with the relay's and the generator's own, it shows what else ran in the window.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = ticks.iter().take(8).sum();
    Some(total - ticks.get(3)? - ticks.get(4)?)
}

struct Sample {
    relay_ticks: Option<u64>,
    own_ticks: Option<u64>,
    machine_ticks: Option<u64>,
}

fn sample(relay_pid: Option<u32>) -> Sample {
    Sample {
        relay_ticks: relay_pid.and_then(|pid| cpu_ticks(&pid.to_string())),
        own_ticks: cpu_ticks("self"),
        machine_ticks: machine_busy_ticks(),
    }
}

fn sleep_until(at: Instant) {
    let left = at.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        std::thread::sleep(left);
    }
}

// --- the run ---------------------------------------------------------------------------------

#[derive(Default)]
struct Direction {
    sent: u64,
    received: u64,
}

impl Direction {
    fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            return 100.0;
        }
        100.0 * self.sent.saturating_sub(self.received) as f64 / self.sent as f64
    }
}

struct Report {
    setup: Duration,
    directions: [Direction; 2],
    send_errors: u64,
    foreign: u64,
    delay_us: [f64; 3],
    deviation_p99_us: f64,
    rfc_jitter_us: [f64; 2],
    lateness_us: [f64; 2],
    relay_cpu_pct: Option<f64>,
    relay_rss_kib: Option<u64>,
    own_cpu_pct: Option<f64>,
    /// CPU of everything else on the machine in the window (other programs, and the
    /// kernel's softirq work not charged to a process).
    others_cpu_pct: Option<f64>,
    /// Kernel drops at the generator's sockets and at the relay's.
    drops: Option<(u64, u64)>,
    delete_failures: usize,
}

/// The q-quantile of sorted values (nearest rank).
fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

fn run(args: &Args) -> Result<Report, String> {
    let run_id = format!("rtp-load-{}-{}", std::process::id(), rand::random::<u32>());
    let mut ng = args.ng.map(NgClient::new).transpose()?;
    let setup_started = Instant::now();
    let calls = match set_up(args, ng.as_mut(), &run_id) {
        Ok(calls) => calls,
        Err(err) => {
            // Free what was set up before the failure, so the next run starts clean.
            if let Some(ng) = ng.as_mut() {
                tear_down(ng, &run_id, args.calls);
            }
            return Err(err);
        }
    };
    let setup = setup_started.elapsed();

    let now = Instant::now();
    // 200 ms for the threads to register their sockets before the first packet.
    let start = now + Duration::from_millis(200);
    let measure_from = start + Duration::from_secs(args.warmup);
    let measure_until = measure_from + Duration::from_secs(args.seconds);
    let timeline = Timeline {
        epoch: now,
        start,
        measure_from,
        measure_until,
    };
    let port = |a: std::io::Result<SocketAddr>| a.map_or(0, |a| a.port());
    let generator_ports: HashSet<u16> = calls
        .iter()
        .flat_map(|c| [port(c.caller.local_addr()), port(c.callee.local_addr())])
        .collect();
    let relay_ports: HashSet<u16> = match args.ng {
        Some(_) => calls
            .iter()
            .flat_map(|c| [c.caller_to.port(), c.callee_to.port()])
            .collect(),
        None => HashSet::new(),
    };
    let mut shares: Vec<Vec<(usize, Call)>> = (0..args.threads).map(|_| Vec::new()).collect();
    for (i, call) in calls.into_iter().enumerate() {
        shares[i % args.threads].push((i, call));
    }
    fn spawn<T: Send + 'static>(
        name: String,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<T>, String> {
        std::thread::Builder::new()
            .name(name)
            .spawn(work)
            .map_err(|e| format!("cannot start a generator thread: {e}"))
    }
    let stop = CancellationToken::new();
    let mut senders = Vec::with_capacity(args.threads);
    let mut receivers = Vec::with_capacity(args.threads);
    for (n, share) in shares.into_iter().enumerate() {
        let (slots, receiving) = split_share(share, args.calls)?;
        let (seconds, stop) = (args.seconds, stop.clone());
        senders.push(spawn(format!("rtp-send-{n}"), move || {
            send(slots, timeline)
        })?);
        receivers.push(spawn(format!("rtp-recv-{n}"), move || {
            receive_all(receiving, timeline, seconds, stop)
        })?);
    }

    sleep_until(measure_from);
    let before = sample(args.relay_pid);
    sleep_until(measure_until);
    let after = sample(args.relay_pid);
    let relay_rss_kib = args.relay_pid.and_then(rss_kib);

    let panicked = |_| "a generator thread panicked".to_owned();
    let sends = senders
        .into_iter()
        .map(|t| t.join().map_err(panicked))
        .collect::<Result<Vec<_>, _>>()?;
    // The receivers wait for the last packet a sender sent, however late the sender ran:
    // the generator's own lateness is reported as such, not as the relay's loss.
    std::thread::sleep(GRACE);
    // Read while every socket of both sides is still open.
    let drops = socket_drops(&generator_ports, &relay_ports);
    stop.cancel();
    let mut receipts = Vec::new();
    for receiver in receivers {
        receipts.extend(receiver.join().map_err(panicked)??);
    }
    let delete_failures = match ng.as_mut() {
        Some(ng) => tear_down(ng, &run_id, args.calls),
        None => 0,
    };

    let window = (measure_until - measure_from).as_secs_f64();
    let cpu_pct = |before: Option<u64>, after: Option<u64>| {
        Some(100.0 * after?.saturating_sub(before?) as f64 / args.clk_tck as f64 / window)
    };
    let mut directions = [Direction::default(), Direction::default()];
    let (mut send_errors, mut foreign) = (0, 0);
    let mut delays = Vec::new();
    let mut deviations = Vec::new();
    let mut jitters = Vec::new();
    let mut lateness = Vec::new();
    for report in sends {
        send_errors += report.send_errors;
        for (stream, sent) in report.sent {
            directions[(stream % 2) as usize].sent += sent;
        }
        lateness.extend(report.lateness_us);
    }
    for mut received in receipts {
        directions[(received.stream % 2) as usize].received += received.packets;
        foreign += received.foreign;
        if received.delays_ns.is_empty() {
            continue;
        }
        jitters.push(received.jitter_ns as u64);
        // Against the stream's own median, so a constant offset is not jitter.
        let mut sorted = received.delays_ns.clone();
        sorted.sort_unstable();
        let median = quantile(&sorted, 0.5) as u64;
        deviations.extend(received.delays_ns.iter().map(|&d| d.abs_diff(median)));
        delays.append(&mut received.delays_ns);
    }
    delays.sort_unstable();
    deviations.sort_unstable();
    jitters.sort_unstable();
    lateness.sort_unstable();
    let us = |ns: f64| ns / 1000.0;
    Ok(Report {
        setup,
        directions,
        send_errors,
        foreign,
        delay_us: [
            us(quantile(&delays, 0.5)),
            us(quantile(&delays, 0.99)),
            us(delays.last().map_or(f64::NAN, |&d| d as f64)),
        ],
        deviation_p99_us: us(quantile(&deviations, 0.99)),
        rfc_jitter_us: [us(quantile(&jitters, 0.5)), us(quantile(&jitters, 0.99))],
        lateness_us: [
            quantile(&lateness, 0.99),
            lateness.last().map_or(f64::NAN, |&l| l as f64),
        ],
        relay_cpu_pct: cpu_pct(before.relay_ticks, after.relay_ticks),
        relay_rss_kib,
        own_cpu_pct: cpu_pct(before.own_ticks, after.own_ticks),
        others_cpu_pct: cpu_pct(before.machine_ticks, after.machine_ticks).map(|machine| {
            let ours = cpu_pct(before.own_ticks, after.own_ticks).unwrap_or(0.0)
                + cpu_pct(before.relay_ticks, after.relay_ticks).unwrap_or(0.0);
            (machine - ours).max(0.0)
        }),
        drops,
        delete_failures,
    })
}

impl Report {
    /// Whether the generator kept its schedule: its send ticks at most one packet
    /// interval late (p99). If not, it offered less than the nominal load and the step
    /// measures the generator, not the relay.
    fn kept_up(&self) -> bool {
        self.lateness_us[0] <= PTIME.as_micros() as f64
    }

    fn loss_pct(&self) -> f64 {
        let sent: u64 = self.directions.iter().map(|d| d.sent).sum();
        let received: u64 = self.directions.iter().map(|d| d.received).sum();
        if sent == 0 {
            return 100.0;
        }
        100.0 * sent.saturating_sub(received) as f64 / sent as f64
    }

    fn print(&self, args: &Args) {
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
        let [to_callee, to_caller] = &self.directions;
        println!(
            "{}: {} calls, set up in {:.2} s ({:.0} calls/s), {} s warm-up, {} s measured",
            args.label,
            args.calls,
            self.setup.as_secs_f64(),
            args.calls as f64 / self.setup.as_secs_f64().max(1e-9),
            args.warmup,
            args.seconds
        );
        for (name, d) in [("caller→callee", to_callee), ("callee→caller", to_caller)] {
            println!(
                "  {name}: sent {}, received {}, loss {:.3} %",
                d.sent,
                d.received,
                d.loss_pct()
            );
        }
        println!(
            "  one-way delay p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs; |delay − stream median| p99 {:.0} µs; \
             RFC 3550 jitter p50 {:.0} µs, p99 {:.0} µs (over streams)",
            self.delay_us[0],
            self.delay_us[1],
            self.delay_us[2],
            self.deviation_p99_us,
            self.rfc_jitter_us[0],
            self.rfc_jitter_us[1]
        );
        println!(
            "  relay CPU {} % of one core, RSS {} MiB; generator CPU {} %, everything else {} %; \
             send ticks late p99 {:.0} µs (max {:.0} µs)",
            opt(self.relay_cpu_pct, 0),
            opt(self.relay_rss_kib.map(|k| k as f64 / 1024.0), 1),
            opt(self.own_cpu_pct, 0),
            opt(self.others_cpu_pct, 0),
            self.lateness_us[0],
            self.lateness_us[1]
        );
        let drops = |side: fn((u64, u64)) -> u64| {
            self.drops.map_or("-".to_owned(), |d| side(d).to_string())
        };
        println!(
            "  kernel drops for full receive buffers: {} at the relay's sockets, {} at the generator's (warm-up included); \
             send errors {}, foreign packets {}, deletes failed {}",
            drops(|d| d.1),
            drops(|d| d.0),
            self.send_errors,
            self.foreign,
            self.delete_failures
        );
        if !self.kept_up() {
            println!(
                "  the generator fell behind its schedule (send ticks p99 {:.0} ms late): it offered \
                 less than {} calls' packets in time, so this step measures the generator, not the relay",
                self.lateness_us[0] / 1000.0,
                args.calls
            );
        }
        let sent: u64 = self.directions.iter().map(|d| d.sent).sum();
        let received: u64 = self.directions.iter().map(|d| d.received).sum();
        println!(
            "RESULT label={} calls={} sent={} received={} loss_pct={:.4} delay_p50_us={:.0} \
             delay_p99_us={:.0} delay_max_us={:.0} deviation_p99_us={:.0} rfc_jitter_p99_us={:.0} \
             relay_cpu_pct={} relay_rss_mib={} gen_cpu_pct={} others_cpu_pct={} late_p99_us={:.0} send_errors={} \
             foreign={} relay_drops={} gen_drops={} gen_kept_up={} setup_s={:.2}",
            args.label,
            args.calls,
            sent,
            received,
            self.loss_pct(),
            self.delay_us[0],
            self.delay_us[1],
            self.delay_us[2],
            self.deviation_p99_us,
            self.rfc_jitter_us[1],
            opt(self.relay_cpu_pct, 0),
            opt(self.relay_rss_kib.map(|k| k as f64 / 1024.0), 1),
            opt(self.own_cpu_pct, 0),
            opt(self.others_cpu_pct, 0),
            self.lateness_us[0],
            self.send_errors,
            self.foreign,
            drops(|d| d.1),
            drops(|d| d.0),
            if self.kept_up() { "yes" } else { "no" },
            self.setup.as_secs_f64()
        );
    }
}
