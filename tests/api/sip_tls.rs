//! SIP over TLS (RFC 3261 §26): a phone registers over TLS and is called down its TLS
//! connection, or places a call with SDES-SRTP on its leg; the certificate follows its
//! files without a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use leadline::media::g711::{self, Codec};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::calls_sip::{NUMBER, Sipp, carrier_call, ended_call, line};
use crate::common::tls::{TestCertificate, self_signed};
use crate::common::{free_port, wait_until};
use crate::helpers::TestApp;
use crate::srtp::{rms, speech};

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
        next_message(&mut self.stream, &mut self.pending, within).await
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

/// A call the phone placed and that was answered: what its later requests repeat.
struct PlacedCall {
    /// The callee's Contact in the 200: where in-dialog requests go.
    target: String,
    call_id: String,
    from: String,
    to: String,
    /// The 200 OK to the INVITE (its SDP is the gateway's answer).
    answer: String,
}

impl TlsPhone {
    /// The next response that is not provisional.
    async fn final_response(&mut self, within: Duration) -> String {
        loop {
            let message = self.next(within).await.expect("a final response");
            if !message.starts_with("SIP/2.0 1") {
                return message;
            }
        }
    }

    /// INVITE `number` as `user` with the SDP `offer`, answering the gateway's proxy
    /// challenge (RFC 3261 §22.3); returns once the call is answered and the 200 ACKed.
    async fn place_call(
        &mut self,
        gw: SocketAddr,
        user: &str,
        password: &str,
        number: &str,
        offer: &str,
    ) -> PlacedCall {
        let local = self.local;
        let uri = format!("sip:{number}@{gw}");
        let call_id = format!("tls-phone-call-{user}");
        let from = format!("From: <sip:{user}@{gw}>;tag=tlscaller");
        let invite = |cseq: u32, authorization: &str| {
            format!(
                "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-tls-inv-{cseq}\r\n\
                 {from}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\n\
                 Contact: <sip:{user}@{local};transport=tls>\r\nMax-Forwards: 70\r\n\
                 {authorization}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
                offer.len()
            )
        };
        self.send(&invite(1, "")).await;
        let challenge = self.final_response(Duration::from_secs(10)).await;
        assert!(challenge.starts_with("SIP/2.0 407"), "{challenge}");
        // The ACK of a non-2xx answer belongs to the INVITE's transaction: same branch.
        self.send(&format!(
            "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-tls-inv-1\r\n\
             {from}\r\n{}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            header_line(&challenge, "To")
        ))
        .await;
        let offered = header_line(&challenge, "Proxy-Authenticate")
            .split_once(':')
            .unwrap()
            .1
            .trim()
            .to_owned();
        let authorization =
            leadline::sip::digest::answer(&offered, "INVITE", &uri, user, password, "tlscnonce", 1)
                .unwrap();
        self.send(&invite(
            2,
            &format!("Proxy-Authorization: {authorization}\r\n"),
        ))
        .await;
        let answer = self.final_response(Duration::from_secs(20)).await;
        assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
        let contact = header_line(&answer, "Contact");
        let target =
            contact[contact.find('<').expect("<") + 1..contact.find('>').expect(">")].to_owned();
        let call = PlacedCall {
            target,
            call_id,
            from,
            to: header_line(&answer, "To").to_owned(),
            answer,
        };
        self.in_dialog(&call, 2, "ACK", "ack").await;
        call
    }

    async fn in_dialog(&mut self, call: &PlacedCall, cseq: u32, method: &str, branch: &str) {
        let PlacedCall {
            target,
            call_id,
            from,
            to,
            ..
        } = call;
        let local = self.local;
        self.send(&format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-tls-{branch}\r\n\
             {from}\r\n{to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ))
        .await;
    }

    /// BYE; the gateway's answer to it.
    async fn hang_up(&mut self, call: &PlacedCall) -> String {
        self.in_dialog(call, 3, "BYE", "bye").await;
        self.final_response(Duration::from_secs(10)).await
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

/// The INVITE in a SIPp trace.
fn invite_in(messages: &str) -> &str {
    let start = messages.find("INVITE sip:").expect("an INVITE");
    let end = messages[start..]
        .find("\n\n\n")
        .map_or(messages.len(), |e| start + e);
    &messages[start..end]
}

async fn recv_from(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("a packet within 5 s")
        .unwrap();
    buf.truncate(n);
    (buf, from)
}

/// One direction's SRTP context as a phone keeps it, straight from `webrtc-srtp` (not the
/// gateway's wrapper, so a mistake there cannot cancel itself out here).
fn srtp_context(master: &[u8]) -> webrtc_srtp::context::Context {
    webrtc_srtp::context::Context::new(
        &master[..16],
        &master[16..],
        webrtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80,
        None,
        None,
    )
    .expect("an AES_CM_128_HMAC_SHA1_80 key")
}

/// T13 over TLS with SDES-SRTP (RFC 4568), a whole outgoing call: Anna's phone registers
/// over TLS, dials out with an `RTP/SAVP` offer and its key, and is answered over TLS with
/// `RTP/SAVP` and the gateway's own key. The carrier (UDP, plain RTP) hears her speech in
/// clear; what the gateway sends her is never plain RTP and decrypts with its key; the
/// call is logged as hers and its recording is speech.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_a_tls_phone_calls_out_with_srtp_the_carrier_hears_it_in_clear_and_the_recording_is_speech()
 {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (app, certificate) = tls_gateway().await;
    let anna = app
        .post_ok(
            "/api/v1/users",
            json!({"name": "Anna", "email": "anna@example.com", "role": "agent",
                   "extension": "101", "sip_password": "pw-101-secret"}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let queue = app
        .post_ok(
            "/api/v1/queues",
            json!({"name": "Sales", "members": [anna]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let carrier_port = free_port();
    let trunk = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "Carrier", "kind": "carrier", "host": "127.0.0.1",
                   "port": carrier_port, "register": false}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post_ok(
        "/api/v1/numbers",
        json!({"number": NUMBER, "default_country": "DE", "queue": queue, "trunk": trunk,
               "directions": "both", "recording": true}),
        StatusCode::CREATED,
    )
    .await;
    // The carrier's media address is a socket of the test's: every packet is compared.
    let carrier_media = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let media_at = carrier_media.local_addr().unwrap().port().to_string();
    let carrier = Sipp::start(
        "carrier_answer_media_at.xml",
        carrier_port,
        None,
        &["-key", "media_at", &media_at],
    );

    let gw = sip_tls_addr(&app);
    let mut phone = TlsPhone::connect(gw, &certificate.der).await;
    let registered = phone.register(gw, "101", "pw-101-secret").await;
    assert!(registered.starts_with("SIP/2.0 200"), "{registered}");
    let phone_media = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let phone_key: [u8; 30] = rand::random();
    let offer = format!(
        "v=0\r\no=anna 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/SAVP 8\r\na=rtpmap:8 PCMA/8000\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\na=sendrecv\r\n",
        phone_media.local_addr().unwrap().port(),
        b64.encode(phone_key)
    );
    let call = phone
        .place_call(gw, "101", "pw-101-secret", "030123456", &offer)
        .await;

    let answer = call.answer.split_once("\r\n\r\n").expect("a body").1;
    assert!(answer.contains(" RTP/SAVP 8\r\n"), "{answer}");
    let crypto = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .unwrap_or_else(|| panic!("the gateway's key: {answer}"));
    let fields: Vec<&str> = crypto.split_whitespace().collect();
    assert_eq!(fields[..2], ["1", "AES_CM_128_HMAC_SHA1_80"], "{crypto}");
    let inline = fields[2]
        .strip_prefix("inline:")
        .and_then(|k| k.split('|').next())
        .unwrap_or_else(|| panic!("an inline key: {crypto}"));
    let gateway_key = b64.decode(inline).expect("base64");
    assert_eq!(gateway_key.len(), 30, "{crypto}");
    assert_ne!(
        gateway_key, phone_key,
        "the gateway's own key, not the phone's"
    );
    let relay_for_phone = leadline::media::sdp::audio(answer.as_bytes())
        .and_then(|a| a.rtp)
        .unwrap_or_else(|| panic!("the relay's address: {answer}"));

    let mut phone_out = srtp_context(&phone_key);
    let mut phone_in = srtp_context(&gateway_key);
    let packets = speech();
    assert!(packets.len() > 200, "{} packets", packets.len());
    let mut spoken = Vec::new();
    let mut relay_for_carrier = None;
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for plain in &packets {
        pace.tick().await;
        let wire = phone_out.encrypt_rtp(plain).unwrap();
        assert_ne!(wire[12..plain.len()], plain[12..], "encrypted on the wire");
        phone_media.send_to(&wire, relay_for_phone).await.unwrap();
        let (heard, relay) = recv_from(&carrier_media).await;
        assert_eq!(heard, *plain, "the carrier hears the phone's RTP in clear");
        relay_for_carrier = Some(relay);
        g711::decode(Codec::Pcma, &plain[12..], &mut spoken);

        carrier_media.send_to(plain, relay).await.unwrap();
        let (captured, _) = recv_from(&phone_media).await;
        assert_eq!(
            captured.len(),
            plain.len() + 10,
            "an SRTP packet (80-bit tag)"
        );
        assert_ne!(captured[12..plain.len()], plain[12..], "not plain RTP");
        assert_eq!(
            phone_in
                .decrypt_rtp(&captured)
                .expect("decrypts with the gateway's key"),
            *plain
        );
    }

    let bye = phone.hang_up(&call).await;
    assert!(bye.starts_with("SIP/2.0 200"), "{bye}");
    let (ok, carrier) = carrier.finish().await;
    assert!(ok, "the carrier answered and got the BYE: {carrier}");
    let to_carrier = invite_in(&carrier);
    let relay_for_carrier = relay_for_carrier.expect("media flowed");
    assert!(
        to_carrier.contains(&format!("m=audio {} RTP/AVP 8", relay_for_carrier.port())),
        "plain RTP from the relay's carrier side: {to_carrier}"
    );
    assert!(
        !to_carrier.contains("a=crypto"),
        "no key leaves the TLS leg: {to_carrier}"
    );

    let logged = wait_until(Duration::from_secs(15), "the recording", || async {
        let calls = app.get_ok("/api/v1/calls").await;
        let call = calls["items"].as_array()?.first()?.clone();
        call["recording"].is_string().then_some(call)
    })
    .await;
    assert_eq!(logged["direction"], "outgoing", "{logged}");
    assert_eq!(logged["user"], json!(anna), "{logged}");
    assert_eq!(logged["outcome"], "answered", "{logged}");
    assert_eq!(
        logged["media"]["from_caller"]["relayed"],
        json!(packets.len()),
        "{logged}"
    );
    let wav = app
        .client
        .get(format!(
            "{}{}",
            app.base,
            logged["recording"].as_str().unwrap()
        ))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut reader = hound::WavReader::new(std::io::Cursor::new(wav.to_vec())).unwrap();
    assert_eq!(reader.spec().channels, 2, "split by default");
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let spoken = rms(&spoken);
    assert!(spoken > 500.0, "the capture is speech: {spoken:.0}");
    // Both parties said the capture: each channel is that speech, not noise or silence.
    for (channel, who) in [(0, "the phone's"), (1, "the carrier's")] {
        let heard: Vec<i16> = samples.iter().skip(channel).step_by(2).copied().collect();
        let heard = rms(&heard);
        assert!(
            heard > spoken * 0.5 && heard < spoken * 2.0,
            "{who} channel is speech: {heard:.0} against {spoken:.0}"
        );
    }
    app.stop().await;
}

/// The next whole SIP message read from `stream` (keep-alives skipped), within `within`;
/// `pending` keeps what was read past it.
pub(crate) async fn next_message(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    pending: &mut bytes::BytesMut,
    within: Duration,
) -> Option<String> {
    use leadline::sip::message::{Frame, Limits, frame};
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match frame(pending, &Limits::UDP) {
            Frame::Message(n) => {
                let message = pending.split_to(n);
                return Some(String::from_utf8_lossy(&message).into_owned());
            }
            Frame::KeepAlive(n) => {
                let _ = pending.split_to(n);
                continue;
            }
            _ => {}
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(pending)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}
