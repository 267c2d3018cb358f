//! SIP over TLS (RFC 3261 §26): a phone registers over TLS and is called down its TLS
//! connection; the certificate follows its files without a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::calls_sip::{carrier_call, ended_call, line};
use crate::common::tls::{TestCertificate, self_signed};
use crate::common::wait_until;
use crate::helpers::TestApp;

/// The name in the test certificates.
const NAME: &str = "leadline.test";

/// A gateway for SIPp (MD5 first) listening for TLS with a fresh certificate.
async fn tls_gateway() -> (TestApp, TestCertificate) {
    let mut certificate = None;
    let app = TestApp::spawn_for_sipp_with(|config| {
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).unwrap();
        let made = self_signed(&dir, "sip", NAME);
        config.tls_cert = Some(made.cert.clone());
        config.tls_key = Some(made.key.clone());
        config.sip_tls = Some("127.0.0.1:0".parse().unwrap());
        certificate = Some(made);
    })
    .await;
    (app, certificate.expect("made"))
}

fn sip_tls_addr(app: &TestApp) -> SocketAddr {
    app.app
        .as_ref()
        .expect("running")
        .sip_tls_addr
        .expect("a TLS listener")
}

/// A client configuration trusting only `trusted` (the gateway's test certificate).
fn trusting(trusted: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(trusted.to_vec()))
        .expect("a valid certificate");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

async fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(NAME).unwrap(), tcp)
        .await
}

/// A phone over one TLS connection: writes SIP text, reads whole SIP messages.
struct TlsPhone {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    local: SocketAddr,
    pending: bytes::BytesMut,
}

impl TlsPhone {
    async fn connect(addr: SocketAddr, trusted: &[u8]) -> TlsPhone {
        let stream = handshake(addr, trusting(trusted))
            .await
            .expect("the TLS handshake succeeds");
        let local = stream.get_ref().0.local_addr().unwrap();
        TlsPhone {
            stream,
            local,
            pending: bytes::BytesMut::new(),
        }
    }

    async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next whole message, within `within`.
    async fn next(&mut self, within: Duration) -> Option<String> {
        use leadline::sip::message::{Frame, Limits, frame};
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match frame(&self.pending, &Limits::UDP) {
                Frame::Message(n) => {
                    let message = self.pending.split_to(n);
                    return Some(String::from_utf8_lossy(&message).into_owned());
                }
                Frame::KeepAlive(n) => {
                    let _ = self.pending.split_to(n);
                    continue;
                }
                _ => {}
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.pending)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// REGISTER with digest as `user` (answering the challenge); the final answer.
    async fn register(&mut self, gw: SocketAddr, user: &str, password: &str) -> String {
        let local = self.local;
        let register = |cseq: u32, authorization: &str| {
            format!(
                "REGISTER sip:{gw} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-tls-reg-{cseq}\r\n\
                 From: <sip:{user}@{gw}>;tag=tlsphone\r\nTo: <sip:{user}@{gw}>\r\n\
                 Call-ID: tls-phone-reg-{user}\r\nCSeq: {cseq} REGISTER\r\n\
                 Contact: <sip:{user}@{local};transport=tls>\r\n\
                 Max-Forwards: 70\r\nExpires: 300\r\n{authorization}Content-Length: 0\r\n\r\n"
            )
        };
        self.send(&register(1, "")).await;
        let challenge = self
            .next(Duration::from_secs(10))
            .await
            .expect("a challenge");
        assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
        let offered = header_line(&challenge, "WWW-Authenticate")
            .split_once(':')
            .unwrap()
            .1
            .trim()
            .to_owned();
        let answer = leadline::sip::digest::answer(
            &offered,
            "REGISTER",
            &format!("sip:{gw}"),
            user,
            password,
            "tlscnonce",
            1,
        )
        .unwrap();
        self.send(&register(2, &format!("Authorization: {answer}\r\n")))
            .await;
        self.next(Duration::from_secs(10))
            .await
            .expect("an answer to the REGISTER")
    }

    /// Answers `request` with `status`, echoing its dialog headers (`extra` before the
    /// body, e.g. a To tag's Contact and an SDP).
    async fn answer(&mut self, request: &str, status: &str, to_tag: &str, extra: &str) {
        let to = header_line(request, "To");
        let to = if to.contains(";tag=") {
            to.to_owned()
        } else {
            format!("{to};tag={to_tag}")
        };
        let vias: Vec<&str> = request
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("via:"))
            .collect();
        let response = format!(
            "SIP/2.0 {status}\r\n{}\r\n{}\r\n{to}\r\n{}\r\n{}\r\n{extra}",
            vias.join("\r\n"),
            header_line(request, "From"),
            header_line(request, "Call-ID"),
            header_line(request, "CSeq"),
        );
        self.send(&response).await;
    }
}

fn header_line<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .unwrap_or_else(|| panic!("no {name} in {message}"))
        .trim_end_matches('\r')
}

/// T1 over TLS (RFC 3261 §26, §18.2.2): a phone registers with digest over TLS, its
/// binding says `tls`, and a carrier's call (UDP) rings it down that same TLS connection
/// (the phone never accepts a connection), is answered there and logged as answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t1_a_phone_registered_over_tls_is_called_and_answers_on_its_tls_connection() {
    let (app, certificate) = tls_gateway().await;
    let line = line(&app, 20).await;
    let gw = sip_tls_addr(&app);
    let mut phone = TlsPhone::connect(gw, &certificate.der).await;
    let ok = phone.register(gw, "101", "pw-101-secret").await;
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(ok.contains(";transport=tls"), "the binding as made: {ok}");
    let registrations = app.get_ok("/api/v1/registrations").await;
    let binding = registrations["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["contact"].as_str().is_some_and(|c| c.contains("101@")))
        .cloned()
        .unwrap_or_else(|| panic!("Anna's binding: {registrations}"));
    assert_eq!(binding["transport"], json!("tls"), "{binding}");

    let carrier = carrier_call(&app, "carrier_call.xml", &[]);
    let invite = phone
        .next(Duration::from_secs(20))
        .await
        .expect("the INVITE comes down the registration's TLS connection");
    assert!(invite.starts_with("INVITE sip:101@"), "{invite}");
    assert!(
        header_line(&invite, "Via").contains("SIP/2.0/TLS"),
        "sent over TLS: {invite}"
    );
    let local = phone.local;
    let sdp = format!(
        "v=0\r\no=anna 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n",
        crate::common::free_port()
    );
    phone
        .answer(
            &invite,
            "200 OK",
            "annatls",
            &format!(
                "Contact: <sip:101@{local};transport=tls>\r\nContent-Type: application/sdp\r\n\
                 Content-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ),
        )
        .await;
    let ack = phone
        .next(Duration::from_secs(10))
        .await
        .expect("the ACK of the 200");
    assert!(ack.starts_with("ACK "), "{ack}");
    let bye = phone
        .next(Duration::from_secs(20))
        .await
        .expect("the carrier's hang-up reaches the phone over TLS");
    assert!(bye.starts_with("BYE "), "{bye}");
    phone
        .answer(&bye, "200 OK", "annatls", "Content-Length: 0\r\n\r\n")
        .await;
    let (ok, carrier) = carrier.finish().await;
    assert!(ok, "the carrier's call was answered and hung up: {carrier}");
    let call = ended_call(&app).await;
    assert_eq!(call["answered_by"], json!(line.anna), "{call}");
    app.stop().await;
}

/// Replacing the certificate files switches the certificate new TLS connections get,
/// without a restart; a broken replacement keeps the one in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_to_new_connections_without_a_restart() {
    let (app, first) = tls_gateway().await;
    let gw = sip_tls_addr(&app);
    let served = |stream: &tokio_rustls::client::TlsStream<TcpStream>| {
        stream
            .get_ref()
            .1
            .peer_certificates()
            .expect("a certificate")[0]
            .to_vec()
    };
    let stream = handshake(gw, trusting(&first.der)).await.unwrap();
    assert_eq!(served(&stream), first.der);

    // A key that is not the certificate's (a renewal half written) is refused and the
    // old pair keeps serving.
    let dir = tempfile::tempdir().unwrap();
    let second = self_signed(dir.path(), "second", NAME);
    std::fs::copy(&second.cert, &first.cert).unwrap();
    app.wait_for_metric_line(
        "leadline_tls_certificate_refused_total 1",
        "the half-renewed pair to be refused",
    )
    .await;
    let stream = handshake(gw, trusting(&first.der)).await.unwrap();
    assert_eq!(served(&stream), first.der, "the broken pair is not served");

    std::fs::copy(&second.key, &first.key).unwrap();
    wait_until(
        Duration::from_secs(20),
        "the new certificate to be served",
        || async {
            let stream = handshake(gw, trusting(&second.der)).await.ok()?;
            (served(&stream) == second.der).then_some(())
        },
    )
    .await;
    app.stop().await;
}
