//! The SIP over TLS load client of `bench/sip-tls` (SIPp has no TLS here): N concurrent
//! workers drive the gateway's TLS listener as hard as they can, each one operation at a
//! time (a closed loop, like SIPp with `-l N`), and print one `RESULT` line.
//!
//! Modes:
//! - `register-new`: REGISTER → 401 → REGISTER with digest → 200 over a new TCP + TLS
//!   connection per registration (the handshake is part of the cost, as for a phone that
//!   reconnects for every refresh);
//! - `register-kept`: the same registrations, many over one connection per worker;
//! - `call`: a carrier's call over one kept connection per worker: INVITE with SDP →
//!   (100/180) → 200 → ACK → BYE → 200, every call from a new caller number.
//!
//! Users come from a file of `extension;password` lines, taken in turn. Trust is the one
//! CA certificate given (the bench's temp CA). The client's own CPU is read by the bench
//! (it is a child process), so that it can be set next to the gateway's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use leadline::sip::message::{Frame, Limits, frame};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// One answer or request not coming within this is a failed operation.
const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    RegisterNew,
    RegisterKept,
    Call,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// The gateway's SIP over TLS address.
    #[arg(long)]
    gateway: SocketAddr,
    /// PEM CA certificate the gateway's certificate is issued by.
    #[arg(long)]
    ca: PathBuf,
    /// Name the gateway's certificate is checked for.
    #[arg(long, default_value = "leadline.test")]
    name: String,
    /// `extension;password` per line (register modes).
    #[arg(long)]
    users: Option<PathBuf>,
    /// Our number the calls go to (call mode).
    #[arg(long, default_value = "+4930901820")]
    number: String,
    /// First caller number's digits; call i comes from this + i.
    #[arg(long, default_value_t = 4917000000000)]
    first_caller: u64,
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Operations in all.
    #[arg(long, default_value_t = 5000)]
    count: usize,
}

struct Shared {
    args: Args,
    tls: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    users: Vec<(String, String)>,
    next: AtomicUsize,
    ok: AtomicUsize,
    failed: AtomicUsize,
    connections: AtomicUsize,
    /// Microseconds of each successful operation, for the percentiles.
    latencies: std::sync::Mutex<Vec<u64>>,
    sequence: AtomicU64,
    /// This run's id (process id and start time).
    run: String,
}

/// One TLS connection reading whole SIP messages.
struct Conn {
    stream: TlsStream<TcpStream>,
    local: SocketAddr,
    pending: bytes::BytesMut,
}

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {WAIT:?}")]
    Timeout,
    #[error("connection closed")]
    Closed,
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    #[error("digest: {0}")]
    Digest(String),
}

impl Conn {
    async fn open(shared: &Shared) -> Result<Conn, LoadError> {
        let tcp = TcpStream::connect(shared.args.gateway).await?;
        tcp.set_nodelay(true)?;
        let local = tcp.local_addr()?;
        let stream = shared.tls.connect(shared.name.clone(), tcp).await?;
        shared.connections.fetch_add(1, Ordering::Relaxed);
        Ok(Conn {
            stream,
            local,
            pending: bytes::BytesMut::with_capacity(4096),
        })
    }

    async fn send(&mut self, text: &str) -> Result<(), LoadError> {
        self.stream.write_all(text.as_bytes()).await?;
        self.stream.flush().await?;
        Ok(())
    }

    async fn next(&mut self) -> Result<String, LoadError> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match frame(&self.pending, &Limits::UDP) {
                Frame::Message(n) => {
                    let message = self.pending.split_to(n);
                    return Ok(String::from_utf8_lossy(&message).into_owned());
                }
                Frame::KeepAlive(n) => {
                    let _ = self.pending.split_to(n);
                    continue;
                }
                _ => {}
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.pending)).await {
                Ok(Ok(0)) => return Err(LoadError::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(LoadError::Timeout),
            }
        }
    }

    /// The next response to `cseq_method`, skipping what else the gateway sends.
    async fn response(&mut self, cseq_method: &str) -> Result<(u16, String), LoadError> {
        loop {
            let message = self.next().await?;
            if let Some(rest) = message.strip_prefix("SIP/2.0 ") {
                let status: u16 = rest.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0);
                if header(&message, "CSeq").is_some_and(|c| c.ends_with(cseq_method)) {
                    return Ok((status, message));
                }
            }
        }
    }
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| {
        let (field, value) = line.split_once(':')?;
        field
            .trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim())
    })
}

/// A tag for branches, tags and Call-IDs unique across runs: a branch seen in an earlier
/// run within 32 s would be answered from the gateway's transaction state, not processed.
fn unique(shared: &Shared) -> String {
    format!(
        "{}x{}",
        shared.run,
        shared.sequence.fetch_add(1, Ordering::Relaxed)
    )
}

async fn register(shared: &Shared, conn: &mut Conn, i: usize) -> Result<(), LoadError> {
    let (user, password) = &shared.users[i % shared.users.len()];
    let gw = shared.args.gateway;
    let local = conn.local;
    let n = unique(shared);
    // The Contact stays the same for a user whatever the connection, so a registration
    // refreshes the user's binding instead of adding one per connection.
    let request = |cseq: u32, authorization: &str| {
        format!(
            "REGISTER sip:{gw} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-l{n}-{cseq}\r\n\
             From: <sip:{user}@{gw}>;tag=l{n}\r\nTo: <sip:{user}@{gw}>\r\n\
             Call-ID: tls-load-{n}\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@127.0.0.1:5999;transport=tls>\r\n\
             Max-Forwards: 70\r\nExpires: 3600\r\n{authorization}Content-Length: 0\r\n\r\n"
        )
    };
    conn.send(&request(1, "")).await?;
    let (status, challenge) = conn.response("REGISTER").await?;
    if status != 401 {
        return Err(LoadError::Unexpected(format!(
            "{status} to the first REGISTER"
        )));
    }
    let offered = header(&challenge, "WWW-Authenticate")
        .ok_or_else(|| LoadError::Unexpected("401 without a challenge".into()))?;
    let answer = leadline::sip::digest::answer(
        offered,
        "REGISTER",
        &format!("sip:{gw}"),
        user,
        password,
        &format!("c{n}"),
        1,
    )
    .map_err(|e| LoadError::Digest(e.to_string()))?;
    conn.send(&request(2, &format!("Authorization: {answer}\r\n")))
        .await?;
    match conn.response("REGISTER").await? {
        (200, _) => Ok(()),
        (status, _) => Err(LoadError::Unexpected(format!(
            "{status} to the REGISTER with credentials"
        ))),
    }
}

async fn call(shared: &Shared, conn: &mut Conn, i: usize) -> Result<(), LoadError> {
    let gw = shared.args.gateway;
    let local = conn.local;
    let number = &shared.args.number;
    let caller = format!("+{}", shared.args.first_caller + i as u64);
    let n = unique(shared);
    let sdp = format!(
        "v=0\r\no=carrier {i} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 9 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    );
    let from = format!("From: <sip:{caller}@{local}>;tag=c{n}");
    let call_id = format!("Call-ID: tls-call-{n}");
    let contact = format!("Contact: <sip:carrier@{local};transport=tls>");
    let invite_branch = format!("z9hG4bK-i{n}");
    conn.send(&format!(
        "INVITE sip:{number}@{gw} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch={invite_branch}\r\n\
         {from}\r\nTo: <sip:{number}@{gw}>\r\n{call_id}\r\nCSeq: 1 INVITE\r\n{contact}\r\n\
         Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    ))
    .await?;
    let (status, answer) = loop {
        let (status, message) = conn.response("INVITE").await?;
        if status >= 200 {
            break (status, message);
        }
    };
    let to = header(&answer, "To").unwrap_or_default().to_owned();
    if status != 200 {
        // A final answer other than 2xx is ACKed in the INVITE's own transaction.
        conn.send(&format!(
            "ACK sip:{number}@{gw} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch={invite_branch}\r\n\
             {from}\r\nTo: {to}\r\n{call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ))
        .await?;
        return Err(LoadError::Unexpected(format!("{status} to the INVITE")));
    }
    // In-dialog requests go to the gateway's Contact (its routing is not under test here).
    let target = header(&answer, "Contact")
        .and_then(|c| Some(c.split_once('<')?.1.split_once('>')?.0.to_owned()))
        .unwrap_or_else(|| format!("sip:{number}@{gw}"));
    conn.send(&format!(
        "ACK {target} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-a{n}\r\n\
         {from}\r\nTo: {to}\r\n{call_id}\r\nCSeq: 1 ACK\r\n{contact}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ))
    .await?;
    conn.send(&format!(
        "BYE {target} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-b{n}\r\n\
         {from}\r\nTo: {to}\r\n{call_id}\r\nCSeq: 2 BYE\r\n{contact}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ))
    .await?;
    match conn.response("BYE").await? {
        (200, _) => Ok(()),
        (status, _) => Err(LoadError::Unexpected(format!("{status} to the BYE"))),
    }
}

async fn worker(shared: Arc<Shared>) {
    let mut conn: Option<Conn> = None;
    let mut reported = false;
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.args.count {
            break;
        }
        let started = Instant::now();
        let outcome = async {
            let kept = !matches!(shared.args.mode, Mode::RegisterNew);
            let c = match conn.take() {
                Some(c) if kept => c,
                _ => Conn::open(&shared).await?,
            };
            let c = conn.insert(c);
            match shared.args.mode {
                Mode::Call => call(&shared, c, i).await,
                _ => register(&shared, c, i).await,
            }
        }
        .await;
        match outcome {
            Ok(()) => {
                shared.ok.fetch_add(1, Ordering::Relaxed);
                let micros = started.elapsed().as_micros() as u64;
                shared.latencies.lock().expect("not poisoned").push(micros);
            }
            Err(e) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                // A connection in an unknown state is not reused.
                conn = None;
                if !reported {
                    eprintln!("sip_tls_load: first failure of a worker: {e}");
                    reported = true;
                }
            }
        }
        if matches!(shared.args.mode, Mode::RegisterNew)
            && let Some(mut c) = conn.take()
        {
            let _ = c.stream.shutdown().await;
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at] as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca)? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let users = match &args.users {
        Some(path) => std::fs::read_to_string(path)?
            .lines()
            .filter_map(|l| l.split_once(';'))
            .map(|(u, p)| (u.to_owned(), p.to_owned()))
            .collect(),
        None => Vec::new(),
    };
    if !matches!(args.mode, Mode::Call) && users.is_empty() {
        anyhow::bail!("--users with at least one extension;password line is needed");
    }
    let name = ServerName::try_from(args.name.clone())?;
    let concurrency = args.concurrency.max(1);
    let shared = Arc::new(Shared {
        args,
        tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        name,
        users,
        next: AtomicUsize::new(0),
        ok: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        connections: AtomicUsize::new(0),
        latencies: std::sync::Mutex::new(Vec::new()),
        sequence: AtomicU64::new(0),
        run: format!(
            "{}{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default()
        ),
    });
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(shared.clone())))
        .collect();
    for w in workers {
        w.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ok = shared.ok.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *shared.latencies.lock().expect("not poisoned"));
    latencies.sort_unstable();
    println!(
        "RESULT mode={:?} concurrency={concurrency} ok={ok} failed={} connections={} seconds={seconds:.3} rate={:.0} p50_ms={:.2} p99_ms={:.2}",
        shared.args.mode,
        shared.failed.load(Ordering::Relaxed),
        shared.connections.load(Ordering::Relaxed),
        ok as f64 / seconds,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    );
    Ok(())
}
