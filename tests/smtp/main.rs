//! The forward/BCC listener (E16, `leadline::mail::smtp`) on 127.0.0.1:0, driven by real
//! `swaks` over SMTP and LMTP (scripts/test installs it), and by a raw TCP client where
//! swaks cannot say it (SIZE=, shutdown, the connection bound).
//!
//! The handler collects deliveries into a channel; every wait has a deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leadline::mail::forward::{ForwardOutcome, detect};
use leadline::mail::smtp::{self, Delivery, ForwardAddress, Protocol, Settings};
use leadline::mail::{Insiders, parse};
use leadline::matcher::parse_email;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const FORWARD: &str = "crm-q7k2m4x9p3w5z6r8t2ab@leadline.test";
const EMPLOYEE: &str = "anna@company.test";
const DEADLINE: Duration = Duration::from_secs(20);

/// A listener on a free port whose handler puts each message in a channel.
struct Listener {
    addr: SocketAddr,
    deliveries: mpsc::Receiver<Delivery>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// What the handler does with a message.
#[derive(Clone, Copy)]
enum Store {
    Works,
    Fails,
}

impl Listener {
    async fn start(settings: Settings, store: Store) -> Listener {
        let listener = smtp::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let (sender, deliveries) = mpsc::channel(16);
        let handler = move |delivery: Delivery| {
            let sender = sender.clone();
            async move {
                match store {
                    Store::Fails => Err("the store is down"),
                    Store::Works => sender
                        .send(delivery)
                        .await
                        .map_err(|_| "the test stopped listening"),
                }
            }
        };
        let recipients = ForwardAddress::parse(FORWARD).unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(smtp::serve(
            listener,
            settings,
            recipients,
            handler,
            cancel.clone(),
        ));
        Listener {
            addr,
            deliveries,
            cancel,
            task: Some(task),
        }
    }

    async fn running() -> Listener {
        Listener::start(Settings::new("mx.leadline.test", 1 << 20), Store::Works).await
    }

    async fn delivery(&mut self) -> Delivery {
        tokio::time::timeout(DEADLINE, self.deliveries.recv())
            .await
            .expect("a delivery within the deadline")
            .expect("the listener is running")
    }

    /// Nothing was delivered. Called after the client finished: the handler runs before
    /// the client hears 250, so a delivery would already be in the channel.
    fn nothing_delivered(&mut self) {
        if let Ok(delivery) = self.deliveries.try_recv() {
            panic!("unexpected delivery {delivery:?}");
        }
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("serve returns after cancellation")
            .expect("serve does not panic");
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// One swaks run: exit code and the whole transcript (`<-` lines are the server's).
struct Swaks {
    code: Option<i32>,
    transcript: String,
}

impl Swaks {
    /// The server's reply lines, as swaks shows them (`<-` ok, `<**` error).
    fn replies(&self) -> Vec<&str> {
        self.transcript
            .lines()
            .filter_map(|l| {
                l.strip_prefix("<-  ")
                    .or_else(|| l.strip_prefix("<** "))
                    .or_else(|| l.strip_prefix("<~  "))
            })
            .collect()
    }

    fn has_reply(&self, start: &str) -> bool {
        self.replies().iter().any(|r| r.starts_with(start))
    }
}

async fn swaks(addr: SocketAddr, args: &[&str]) -> Swaks {
    let port = addr.port().to_string();
    let mut command = tokio::process::Command::new("swaks");
    command
        .args(["--server", "127.0.0.1", "--port", &port])
        .args(["--timeout", "15", "--helo", "client.test"])
        .args(args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("swaks finishes within the deadline")
        .expect("swaks runs (scripts/test installs the Debian package swaks)");
    let mut transcript = String::from_utf8_lossy(&output.stdout).into_owned();
    transcript.push_str(&String::from_utf8_lossy(&output.stderr));
    Swaks {
        code: output.status.code(),
        transcript,
    }
}

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

/// Bytes that exercise the transfer: every byte value, lines starting with dots, a lone
/// dot line and CRLF.CRLF inside the content.
fn awkward_bytes() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255u8).cycle().take(40_000).collect();
    bytes.extend_from_slice(b"\r\n.\r\n..\r\n.hidden\r\n\n.\n");
    bytes.extend((0..=255u8).rev().cycle().take(10_000));
    bytes
}

#[tokio::test]
async fn e16_smtp_forward_with_attachment_is_delivered_byte_for_byte() {
    let mut listener = Listener::running().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("contract.bin");
    let content = awkward_bytes();
    std::fs::write(&file, &content).unwrap();
    let attach = format!("@{}", file.display());

    let run = swaks(
        listener.addr,
        &[
            "--from",
            EMPLOYEE,
            "--to",
            FORWARD,
            "--body",
            ".a line that starts with a dot\n..two dots\n",
            "--attach-type",
            "application/octet-stream",
            "--attach",
            &attach,
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.transcript);
    assert!(
        run.has_reply("250 2.0.0 message accepted"),
        "{}",
        run.transcript
    );

    let delivery = listener.delivery().await;
    assert_eq!(delivery.protocol, Protocol::Smtp);
    assert_eq!(delivery.mail_from.as_deref(), Some(EMPLOYEE));
    assert_eq!(delivery.rcpts, [FORWARD]);
    let mail = parse(&delivery.raw).expect("the delivered bytes are a message");
    let [attachment] = mail.attachments.as_slice() else {
        panic!("one attachment: {:?}", mail.attachments);
    };
    assert_eq!(attachment.file_name.as_deref(), Some("contract.bin"));
    assert_eq!(
        attachment.content, content,
        "the attachment's bytes are intact"
    );
    let text = mail.text.expect("a text part");
    assert!(text.contains(".a line that starts with a dot"), "{text:?}");
    assert!(text.contains("..two dots"), "{text:?}");
    listener.stop().await;
}

#[tokio::test]
async fn e16_lmtp_delivery_answers_per_recipient() {
    let mut listener = Listener::running().await;
    let upper = FORWARD.to_uppercase();
    let run = swaks(
        listener.addr,
        &[
            "--protocol",
            "LMTP",
            "--from",
            EMPLOYEE,
            "--to",
            &format!("{FORWARD},{upper}"),
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.transcript);
    let accepted = run
        .replies()
        .iter()
        .filter(|r| r.starts_with("250 2.0.0 <") && r.contains("message accepted"))
        .count();
    assert_eq!(accepted, 2, "one reply per recipient: {}", run.transcript);

    let delivery = listener.delivery().await;
    assert_eq!(delivery.protocol, Protocol::Lmtp);
    assert_eq!(delivery.rcpts, [FORWARD.to_owned(), upper]);
    assert!(parse(&delivery.raw).is_ok());
    listener.stop().await;
}

#[tokio::test]
async fn e16_wrong_recipient_is_refused_with_550_and_nothing_delivered() {
    let mut listener = Listener::running().await;
    for protocol in ["ESMTP", "LMTP"] {
        let run = swaks(
            listener.addr,
            &[
                "--protocol",
                protocol,
                "--from",
                EMPLOYEE,
                "--to",
                "crm-guessed@leadline.test",
            ],
        )
        .await;
        assert_ne!(run.code, Some(0), "{}", run.transcript);
        assert!(
            run.has_reply("550 5.1.1 <crm-guessed@leadline.test>"),
            "{}",
            run.transcript
        );
    }
    listener.nothing_delivered();
    listener.stop().await;
}

#[tokio::test]
async fn e16_mixed_recipients_deliver_to_the_good_one() {
    let mut listener = Listener::running().await;
    let run = swaks(
        listener.addr,
        &[
            "--from",
            EMPLOYEE,
            "--to",
            &format!("sales@leadline.test,{FORWARD}"),
        ],
    )
    .await;
    assert!(
        run.has_reply("550 5.1.1 <sales@leadline.test>"),
        "{}",
        run.transcript
    );
    assert!(
        run.has_reply("250 2.0.0 message accepted"),
        "{}",
        run.transcript
    );
    let delivery = listener.delivery().await;
    assert_eq!(delivery.rcpts, [FORWARD]);
    listener.stop().await;
}

#[tokio::test]
async fn e16_message_over_the_limit_is_refused_with_552() {
    let mut listener =
        Listener::start(Settings::new("mx.leadline.test", 64 * 1024), Store::Works).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, vec![b'x'; 100 * 1024]).unwrap();
    let attach = format!("@{}", file.display());
    for protocol in ["ESMTP", "LMTP"] {
        let run = swaks(
            listener.addr,
            &[
                "--protocol",
                protocol,
                "--from",
                EMPLOYEE,
                "--to",
                FORWARD,
                "--attach",
                &attach,
            ],
        )
        .await;
        assert_ne!(run.code, Some(0), "{}", run.transcript);
        assert!(run.has_reply("552 5.3.4 "), "{}", run.transcript);
        assert!(run.has_reply("250-SIZE 65536"), "{}", run.transcript);
    }
    listener.nothing_delivered();
    // The session goes on after the refusal: a small message still passes.
    let run = swaks(listener.addr, &["--from", EMPLOYEE, "--to", FORWARD]).await;
    assert_eq!(run.code, Some(0), "{}", run.transcript);
    listener.delivery().await;
    listener.stop().await;
}

#[tokio::test]
async fn e16_handler_failure_is_451_and_the_client_keeps_the_message() {
    let mut listener =
        Listener::start(Settings::new("mx.leadline.test", 1 << 20), Store::Fails).await;
    let run = swaks(listener.addr, &["--from", EMPLOYEE, "--to", FORWARD]).await;
    assert_ne!(run.code, Some(0), "{}", run.transcript);
    assert!(run.has_reply("451 4.3.0 "), "{}", run.transcript);
    listener.nothing_delivered();
    listener.stop().await;
}

/// The index of tests/data/email/forwarded-full: file → original sender.
fn forwarded_full() -> Vec<(String, String)> {
    let index = std::fs::read_to_string(data("email/forwarded-full/expected.tsv")).unwrap();
    let mut lines = index.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (file, sender) = (column("file"), column("original_sender"));
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            (cells[file].to_owned(), cells[sender].to_owned())
        })
        .collect()
}

/// The text swaks sends for a file (see its `--data` handling): an mbox `From ` line
/// dropped, lines ending in CRLF, and one CRLF more before its final dot.
fn as_sent(file: &[u8]) -> Vec<u8> {
    let file = match file.strip_prefix(b"From ") {
        Some(rest) => rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&[][..], |lf| &rest[lf + 1..]),
        None => file,
    };
    let mut out = Vec::with_capacity(file.len() + 1024);
    for (i, &b) in file.iter().enumerate() {
        if b == b'\n' && (i == 0 || file[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Equal bytes, or a panic showing where they part (a message is too long to print).
fn same_bytes(received: &[u8], sent: &[u8], what: &str) {
    if received == sent {
        return;
    }
    let at = received
        .iter()
        .zip(sent)
        .position(|(a, b)| a != b)
        .unwrap_or(received.len().min(sent.len()));
    let around = |bytes: &[u8]| {
        String::from_utf8_lossy(&bytes[at.saturating_sub(40)..(at + 40).min(bytes.len())])
            .into_owned()
    };
    panic!(
        "{what}: received {} bytes, sent {}; they differ at byte {at}:\n received {:?}\n sent     {:?}",
        received.len(),
        sent.len(),
        around(received),
        around(sent)
    );
}

#[tokio::test]
async fn e16_real_forwards_through_the_listener_name_the_original_sender() {
    let mut listener = Listener::running().await;
    let cases = forwarded_full();
    assert_eq!(cases.len(), 5);
    for (file, original_sender) in cases {
        let path = data(&format!("email/forwarded-full/{file}"));
        let sent = std::fs::read(&path).unwrap();
        let run = swaks(
            listener.addr,
            &[
                "--from",
                EMPLOYEE,
                "--to",
                FORWARD,
                "--data",
                &format!("@{}", path.display()),
            ],
        )
        .await;
        assert_eq!(run.code, Some(0), "{file}: {}", run.transcript);
        let delivery = listener.delivery().await;
        let sent = as_sent(&sent);
        same_bytes(&delivery.raw, &sent, &file);

        let received = parse(&delivery.raw).expect(&file);
        assert_eq!(received, parse(&sent).expect(&file), "{file}: parses alike");
        // As in the corpus test: the outer sender and recipients are the insiders.
        let insiders = Insiders::new(
            received
                .from
                .iter()
                .map(|m| m.address.clone())
                .chain([parse_email(FORWARD).unwrap()]),
            received.to.iter().map(|m| m.address.clone()),
        );
        let ForwardOutcome::Forwarded { customers, .. } = detect(&received, &insiders) else {
            panic!("{file}: not read as a forward");
        };
        let expected = leadline::matcher::parse_mailbox(&original_sender).unwrap();
        assert_eq!(customers[0].address, expected.address, "{file}");
    }
    listener.stop().await;
}

#[tokio::test]
async fn e16_bcc_copy_names_its_recipient_as_the_customer() {
    let mut listener = Listener::running().await;
    let run = swaks(
        listener.addr,
        &[
            "--from",
            EMPLOYEE,
            "--to",
            FORWARD,
            "--header",
            "To: Carla Customer <carla@customer.test>",
            "--header",
            "Subject: our offer",
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.transcript);
    let delivery = listener.delivery().await;
    let mail = parse(&delivery.raw).unwrap();
    let insiders = Insiders::new(
        [parse_email(FORWARD).unwrap()],
        [parse_email(EMPLOYEE).unwrap()],
    );
    let ForwardOutcome::Bcc { customers } = detect(&mail, &insiders) else {
        panic!("not a BCC copy: {:?}", detect(&mail, &insiders));
    };
    assert_eq!(customers[0].address.as_str(), "carla@customer.test");
    listener.stop().await;
}

/// A minimal client for what swaks cannot send.
struct Client {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
            .await
            .expect("connect within the deadline")
            .expect("connect");
        let (read, writer) = stream.into_split();
        Client {
            reader: BufReader::new(read),
            writer,
        }
    }

    /// The next reply (all its lines), or "" at end of stream.
    async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(DEADLINE, self.reader.read_line(&mut line))
                .await
                .expect("a reply within the deadline")
                .expect("read");
            reply.push_str(&line);
            if n == 0 || line.as_bytes().get(3) != Some(&b'-') {
                return reply;
            }
        }
    }

    async fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).await.unwrap();
    }
}

#[tokio::test]
async fn e16_declared_size_over_the_limit_is_refused_at_mail_from() {
    let listener =
        Listener::start(Settings::new("mx.leadline.test", 64 * 1024), Store::Works).await;
    let mut client = Client::connect(listener.addr).await;
    assert!(client.reply().await.starts_with("220 "));
    // Pipelined (RFC 2920): the replies come in order.
    client
        .send("EHLO c\r\nMAIL FROM:<a@b.test> SIZE=70000\r\nMAIL FROM:<a@b.test> SIZE=1000\r\nQUIT\r\n")
        .await;
    assert!(client.reply().await.contains("250 SMTPUTF8"));
    assert!(client.reply().await.starts_with("552 5.3.4 "));
    assert!(client.reply().await.starts_with("250 2.1.0 "));
    assert!(client.reply().await.starts_with("221 2.0.0 "));
    assert_eq!(client.reply().await, "", "closed after QUIT");
    listener.stop().await;
}

#[tokio::test]
async fn shutdown_says_421_to_waiting_clients_and_stops_accepting() {
    let listener = Listener::running().await;
    let addr = listener.addr;
    let mut client = Client::connect(addr).await;
    assert!(client.reply().await.starts_with("220 "));
    client.send("EHLO c\r\n").await;
    client.reply().await;
    listener.stop().await;
    assert!(client.reply().await.starts_with("421 4.3.2 "));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn connections_past_the_limit_hear_421() {
    let mut settings = Settings::new("mx.leadline.test", 1 << 20);
    settings.max_connections = 1;
    let listener = Listener::start(settings, Store::Works).await;
    let mut first = Client::connect(listener.addr).await;
    assert!(first.reply().await.starts_with("220 "));
    let mut second = Client::connect(listener.addr).await;
    assert!(second.reply().await.starts_with("421 4.7.0 "));
    assert_eq!(second.reply().await, "");
    // The slot frees when the first leaves.
    first.send("QUIT\r\n").await;
    assert!(first.reply().await.starts_with("221 "));
    assert_eq!(first.reply().await, "");
    let mut third = tokio::time::timeout(DEADLINE, async {
        loop {
            let mut client = Client::connect(listener.addr).await;
            if client.reply().await.starts_with("220 ") {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a slot within the deadline");
    third.send("QUIT\r\n").await;
    listener.stop().await;
}

#[tokio::test]
async fn idle_client_hears_421_after_the_timeout() {
    let mut settings = Settings::new("mx.leadline.test", 1 << 20);
    settings.idle_timeout = Duration::from_millis(300);
    let listener = Listener::start(settings, Store::Works).await;
    let mut client = Client::connect(listener.addr).await;
    assert!(client.reply().await.starts_with("220 "));
    assert!(client.reply().await.starts_with("421 4.4.2 "));
    assert_eq!(client.reply().await, "");
    listener.stop().await;
}
