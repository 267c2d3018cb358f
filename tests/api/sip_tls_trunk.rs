//! Carrier trunks over TLS (RFC 3261 §26): the gateway opens the TLS connection to the
//! carrier, verifies its certificate against the configured CA, registers with digest
//! over it and takes the carrier's calls on it; a certificate it cannot verify is refused
//! and the reason shown on the trunk. A trunk that does not register gets its connection
//! from the first call out, which fails with the TLS reason when the certificate is
//! refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::calls_sip::{CALLER, NUMBER, Sipp, ended_call};
use crate::common::tls::{TestCertificate, self_signed};
use crate::common::{free_port, wait_until};
use crate::helpers::TestApp;
use crate::sip_tls::next_message;

/// A carrier's TLS listener: accepts connections with `certificate` until dropped.
struct TlsCarrier {
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    listener: Option<TcpListener>,
    /// Accepts in the background (the refused case): aborted on drop.
    task: Option<JoinHandle<()>>,
}

impl Drop for TlsCarrier {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl TlsCarrier {
    async fn start(certificate: &TestCertificate) -> TlsCarrier {
        let chain = CertificateDer::pem_file_iter(&certificate.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&certificate.key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        TlsCarrier {
            addr: listener.local_addr().unwrap(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            listener: Some(listener),
            task: None,
        }
    }

    /// The gateway's next connection, once its handshake succeeded.
    async fn accept(&mut self) -> CarrierConnection {
        let listener = self.listener.as_ref().expect("listening");
        let (tcp, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
            .await
            .expect("the gateway connects within 30 s")
            .unwrap();
        let stream = self
            .acceptor
            .accept(tcp)
            .await
            .expect("the gateway completes the handshake");
        CarrierConnection {
            stream,
            pending: bytes::BytesMut::new(),
        }
    }

    /// Runs handshakes for every connection in the background (the gateway refuses
    /// them).
    fn keep_accepting(&mut self) {
        let listener = self.listener.take().expect("listening");
        let acceptor = self.acceptor.clone();
        self.task = Some(tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        }));
    }
}

/// The carrier's side of the gateway's TLS connection.
struct CarrierConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    pending: bytes::BytesMut,
}

impl CarrierConnection {
    async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next whole SIP message, within `within`.
    async fn next(&mut self, within: Duration) -> Option<String> {
        next_message(&mut self.stream, &mut self.pending, within).await
    }

    /// Answers `request` with `status` and `extra` header lines (each ending in CRLF).
    async fn answer(&mut self, request: &str, status: &str, extra: &str) {
        self.answer_with(request, status, extra, "").await;
    }

    /// [`CarrierConnection::answer`] with a body (its Content-Type among `extra`). A To
    /// that has a tag already (in-dialog) keeps it.
    async fn answer_with(&mut self, request: &str, status: &str, extra: &str, body: &str) {
        let vias: Vec<&str> = request
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("via:"))
            .collect();
        let to = header(request, "To");
        let tag = if to.contains(";tag=") {
            ""
        } else {
            ";tag=carrier"
        };
        let response = format!(
            "SIP/2.0 {status}\r\n{}\r\n{}\r\n{to}{tag}\r\n{}\r\n{}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            vias.join("\r\n"),
            header(request, "From"),
            header(request, "Call-ID"),
            header(request, "CSeq"),
            body.len(),
        );
        self.send(&response).await;
    }
}

fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .unwrap_or_else(|| panic!("no {name} in {message}"))
        .trim_end_matches('\r')
}

async fn create_tls_carrier(app: &TestApp, name: &str, port: u16) -> String {
    let trunk = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": name, "kind": "carrier", "host": "127.0.0.1", "port": port,
                   "transport": "tls", "username": "trunk-user", "password": "trunk-secret",
                   "allowed_ips": ["127.0.0.1"]}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(trunk["transport"], "tls", "{trunk}");
    trunk["id"].as_str().expect("trunk id").to_owned()
}

/// The trunk's `registration` once `ready` holds for it.
async fn registration_when(
    app: &TestApp,
    trunk: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    wait_until(Duration::from_secs(30), what, || async {
        let trunk = app.get_ok(&format!("/api/v1/trunks/{trunk}")).await;
        let registration = trunk["registration"].clone();
        if ready(&registration) {
            Ok(registration)
        } else {
            Err(trunk.to_string())
        }
    })
    .await
}

/// T2 over TLS: with the carrier's CA configured, the gateway connects over TLS,
/// registers with digest (Via `SIP/2.0/TLS`, Contact `;transport=tls`), and the carrier's
/// call on that same connection makes a lead for the unknown caller as a UDP carrier's
/// would, answered on the connection. A second carrier whose certificate no configured CA
/// signed is refused: `failed`, with the TLS reason on the trunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t2_t1_a_carrier_trunk_registers_and_calls_over_tls_and_a_foreign_certificate_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    let trusted = self_signed(certs.path(), "carrier", "carrier.test");
    let foreign = self_signed(certs.path(), "foreign", "carrier.test");
    let ca = trusted.cert.clone();
    let app = TestApp::spawn_for_sipp_with(|config| config.sip_tls_ca = Some(ca)).await;

    let mut carrier = TlsCarrier::start(&trusted).await;
    let trunk = create_tls_carrier(&app, "TLS carrier", carrier.addr.port()).await;
    let mut connection = carrier.accept().await;
    let register = connection
        .next(Duration::from_secs(10))
        .await
        .expect("a REGISTER over TLS");
    assert!(
        register.starts_with("REGISTER sip:127.0.0.1:"),
        "{register}"
    );
    assert!(
        header(&register, "Via").contains("SIP/2.0/TLS"),
        "{register}"
    );
    assert!(
        header(&register, "Contact").contains(";transport=tls"),
        "{register}"
    );
    connection
        .answer(
            &register,
            "401 Unauthorized",
            "WWW-Authenticate: Digest realm=\"carrier.test\", nonce=\"tls-nonce-1\", \
             qop=\"auth\", algorithm=MD5\r\n",
        )
        .await;
    let answered = connection
        .next(Duration::from_secs(10))
        .await
        .expect("the challenge answered on the same connection");
    let authorization = header(&answered, "Authorization");
    assert!(
        authorization.contains("username=\"trunk-user\"")
            && authorization.contains("nonce=\"tls-nonce-1\""),
        "{answered}"
    );
    let contact = header(&answered, "Contact")
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .to_owned();
    connection
        .answer(
            &answered,
            "200 OK",
            &format!("Contact: {contact};expires=300\r\n"),
        )
        .await;
    let registered = registration_when(&app, &trunk, "registered over TLS", |r| {
        r["state"] == "registered"
    })
    .await;
    assert!(registered["last_error"].is_null(), "{registered}");

    // The carrier's call for our number arrives on the registration's connection.
    let anna = anna_in_sales_behind(&app, &trunk, json!({"ring_timeout_s": 5})).await;
    let carrier_at = carrier.addr;
    let sdp = format!(
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n",
        crate::common::free_port()
    );
    connection
        .send(&format!(
            "INVITE sip:{NUMBER}@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/TLS {carrier_at};branch=z9hG4bK-tls-carrier-1\r\n\
             From: <sip:{CALLER}@127.0.0.1>;tag=carrier-call\r\nTo: <sip:{NUMBER}@127.0.0.1>\r\n\
             Call-ID: tls-carrier-call-1\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:{CALLER}@{carrier_at};transport=tls>\r\nMax-Forwards: 70\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ))
        .await;
    let first = connection
        .next(Duration::from_secs(10))
        .await
        .expect("the gateway answers the INVITE on the same connection");
    assert!(first.starts_with("SIP/2.0 1"), "{first}");
    assert!(first.contains("Call-ID: tls-carrier-call-1"), "{first}");
    let lead = wait_until(Duration::from_secs(10), "a lead for the caller", || async {
        let leads = app.leads().await;
        leads.into_iter().find(|l| l["phones"] == json!([CALLER]))
    })
    .await;
    assert_eq!(lead["source"], "CALL", "{lead}");
    assert_eq!(lead["responsible"], anna, "T9: the queue's first: {lead}");
    drop(connection);

    // A carrier whose certificate no trusted CA signed: refused, reason on the trunk.
    let mut rogue = TlsCarrier::start(&foreign).await;
    rogue.keep_accepting();
    let refused = create_tls_carrier(&app, "Foreign carrier", rogue.addr.port()).await;
    let failed = registration_when(&app, &refused, "the TLS refusal", |r| {
        r["state"] == "failed"
    })
    .await;
    let reason = failed["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("tls: invalid peer certificate: "),
        "{failed}"
    );
    app.stop().await;
}

/// A carrier trunk over TLS set not to register (`"register": false`), Anna, and our
/// number on that trunk for calls both ways; the trunk's id.
async fn tls_line_without_registration(app: &TestApp, carrier_port: u16) -> String {
    let trunk = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "TLS carrier, IP-authenticated", "kind": "carrier",
                   "host": "127.0.0.1", "port": carrier_port, "transport": "tls",
                   "register": false}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(trunk["transport"], "tls", "{trunk}");
    let trunk = trunk["id"].as_str().expect("trunk id").to_owned();
    anna_in_sales_behind(app, &trunk, json!({"directions": "both"})).await;
    trunk
}

/// Anna's softphone over UDP dials 030 123456 with `scenario`.
fn anna_dials(app: &TestApp, scenario: &str) -> Sipp {
    Sipp::start(
        scenario,
        free_port(),
        Some(app.sip_addr().to_string()),
        &[
            "-s",
            "101",
            "-au",
            "101",
            "-ap",
            "pw-101-secret",
            "-key",
            "dial",
            "030123456",
        ],
    )
}

/// T7 over TLS: an agent's call out through a TLS carrier trunk that does not register
/// opens the connection itself (nothing was open before: the carrier's first accept is
/// the call's); the INVITE, the ACK and the BYE of the agent's hang-up all go over that
/// one connection, and the call is logged as the agent's, answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t7_an_agent_calls_out_over_tls_through_a_carrier_trunk_that_does_not_register() {
    let certs = tempfile::tempdir().unwrap();
    let trusted = self_signed(certs.path(), "carrier", "carrier.test");
    let ca = trusted.cert.clone();
    let app = TestApp::spawn_for_sipp_with(|config| config.sip_tls_ca = Some(ca)).await;
    let mut carrier = TlsCarrier::start(&trusted).await;
    let trunk = tls_line_without_registration(&app, carrier.addr.port()).await;

    let phone = anna_dials(&app, "agent_dial.xml");
    let mut connection = carrier.accept().await;
    let invite = connection
        .next(Duration::from_secs(20))
        .await
        .expect("the call's INVITE over the new TLS connection");
    assert!(
        invite.starts_with("INVITE sip:") && invite.contains("4930123456@127.0.0.1:"),
        "the dialled number: {invite}"
    );
    assert!(header(&invite, "Via").contains("SIP/2.0/TLS"), "{invite}");
    assert!(
        header(&invite, "From").contains("4930901820@127.0.0.1>"),
        "our number as caller ID: {invite}"
    );
    let carrier_at = carrier.addr;
    let sdp = format!(
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        free_port()
    );
    connection
        .answer_with(
            &invite,
            "200 OK",
            &format!(
                "Contact: <sip:carrier@{carrier_at};transport=tls>\r\n\
                 Content-Type: application/sdp\r\n"
            ),
            &sdp,
        )
        .await;
    let ack = connection
        .next(Duration::from_secs(10))
        .await
        .expect("the ACK on the same connection");
    assert!(ack.starts_with("ACK "), "{ack}");
    assert_eq!(header(&ack, "Call-ID"), header(&invite, "Call-ID"), "{ack}");
    // The phone hangs up after a short talk: its BYE reaches the carrier here.
    let bye = connection
        .next(Duration::from_secs(20))
        .await
        .expect("the agent's hang-up on the same connection");
    assert!(bye.starts_with("BYE "), "{bye}");
    assert_eq!(header(&bye, "Call-ID"), header(&invite, "Call-ID"), "{bye}");
    connection.answer(&bye, "200 OK", "").await;
    let (ok, phone) = phone.finish().await;
    assert!(ok, "challenged, connected, hung up: {phone}");

    let call = ended_call(&app).await;
    assert_eq!(call["direction"], "outgoing", "{call}");
    assert_eq!(call["customer"], "+4930123456", "{call}");
    assert_eq!(call["outcome"], "answered", "{call}");
    let registration = app.get_ok(&format!("/api/v1/trunks/{trunk}")).await["registration"].clone();
    assert_ne!(
        registration["state"], "registered",
        "the trunk never registered: {registration}"
    );
    app.stop().await;
}

/// T13 over TLS: the call out through a TLS trunk whose carrier shows a certificate no
/// configured CA signed fails cleanly: the agent's phone gets a 480 whose Reason header
/// gives the TLS refusal, the call is logged `failed` with its leg failed (503), and the
/// refused handshake is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_a_call_out_to_a_tls_carrier_with_a_foreign_certificate_fails_with_the_tls_reason() {
    let certs = tempfile::tempdir().unwrap();
    let trusted = self_signed(certs.path(), "carrier", "carrier.test");
    let foreign = self_signed(certs.path(), "foreign", "carrier.test");
    let ca = trusted.cert.clone();
    let app = TestApp::spawn_for_sipp_with(|config| config.sip_tls_ca = Some(ca)).await;
    let mut rogue = TlsCarrier::start(&foreign).await;
    rogue.keep_accepting();
    tls_line_without_registration(&app, rogue.addr.port()).await;

    let (ok, phone) = anna_dials(&app, "agent_dial_refused.xml").finish().await;
    assert!(ok, "challenged, then refused with 480: {phone}");
    assert!(
        phone.contains("Reason: SIP;cause=480;text=\"tls: invalid peer certificate: "),
        "the phone is told why: {phone}"
    );

    let call = ended_call(&app).await;
    assert_eq!(call["direction"], "outgoing", "{call}");
    assert_eq!(call["outcome"], "failed", "{call}");
    assert_eq!(call["legs"][0]["state"], "failed", "{call}");
    assert_eq!(call["legs"][0]["status"], 503, "{call}");
    let metrics = app.metrics().await.expect("the metrics");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("leadline_sip_tls_handshake_failed_total ")
                && l != "leadline_sip_tls_handshake_failed_total 0"
        ),
        "the refused handshake is counted: {metrics}"
    );
    app.stop().await;
}

/// Agent Anna (extension 101) alone in the Sales queue behind our number on `trunk`, the
/// number with `number_fields` besides; Anna's id.
async fn anna_in_sales_behind(app: &TestApp, trunk: &str, number_fields: Value) -> Value {
    let anna = app
        .post_ok(
            "/api/v1/users",
            json!({"name": "Anna", "email": "anna@example.com", "role": "agent",
                   "extension": "101", "sip_password": "pw-101-secret"}),
            StatusCode::CREATED,
        )
        .await["id"]
        .clone();
    let queue = app
        .post_ok(
            "/api/v1/queues",
            json!({"name": "Sales", "members": [&anna]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .clone();
    let mut number = json!({"number": NUMBER, "default_country": "DE", "queue": queue,
                            "trunk": trunk});
    for (field, value) in number_fields.as_object().expect("an object") {
        number[field] = value.clone();
    }
    app.post_ok("/api/v1/numbers", number, StatusCode::CREATED)
        .await;
    anna
}
