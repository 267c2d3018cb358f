//! SRTP on one leg of the relay, driven the way the B2BUA drives it: a phone whose
//! signalling is TLS offers SDES-SRTP, the carrier leg is plain RTP. The phone sends the
//! real speech of SIPp's capture encrypted; the carrier hears it in clear, the phone hears
//! the carrier encrypted, the recording is speech, and forged packets go nowhere. And a
//! whole call offering SRTP over plain UDP is refused with 488.

use std::net::IpAddr;
use std::time::Duration;

use leadline::media::g711::{self, Codec};
use leadline::media::record::RecordingJob;
use leadline::media::recording::Channels;
use leadline::media::sdes::{MasterKey, Refusal, SUITE, parse_crypto};
use leadline::media::srtp::{Kind, LegSrtp};
use leadline::media::{MediaEngine, MediaError, PortPool, PortRange, Side, sdp};
use tokio::net::UdpSocket;

use crate::calls_sip::{carrier_call, line};
use crate::helpers::TestApp;

/// The RTP packets (header and payload) of SIPp's A-law capture.
pub(crate) fn speech() -> Vec<Vec<u8>> {
    let pcap = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sipp/g711a.pcap"
    ))
    .unwrap();
    let mut packets = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..(at + 16 + len).min(pcap.len())];
        // Ethernet 14 + IPv4 20 + UDP 8, then RTP.
        if frame.len() > 54 {
            packets.push(frame[42..].to_vec());
        }
        at += 16 + len;
    }
    packets
}

pub(crate) fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&x| f64::from(x).powi(2)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

fn engine() -> MediaEngine {
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    for _ in 0..500 {
        let first = 30_000 + 2 * rand::random_range(0..1_300u16);
        if (first..first + 4).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()) {
            let range = PortRange {
                first,
                last: first + 3,
            };
            return MediaEngine::new(PortPool::new(range, ip), ip, Duration::from_secs(60));
        }
    }
    panic!("no free port range");
}

fn sdp_offer(port: u16, proto: &str, extra: &str) -> Vec<u8> {
    format!(
        "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} {proto} 8\r\na=rtpmap:8 PCMA/8000\r\n{extra}a=sendrecv\r\n"
    )
    .into_bytes()
}

async fn recv(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("a packet within 5 s")
        .unwrap();
    buf.truncate(n);
    buf
}

/// T13 with an SRTP phone: the relay decrypts, so the carrier, the statistics and the
/// recording get plain RTP; the phone's side of the wire is never plain RTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_an_srtp_phone_talks_to_a_plain_carrier_and_the_recording_is_speech() {
    let engine = engine();
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let carrier = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let session = engine.session().unwrap();
    session.set_signalling_tls(Side::Caller, true);

    let phone_key = MasterKey::from_bytes(rand::random());
    let crypto = format!("a=crypto:3 {SUITE} inline:{}|2^31\r\n", b64(&phone_key));
    let offer = sdp_offer(phone.local_addr().unwrap().port(), "RTP/SAVP", &crypto);
    assert!(session.refusal(Side::Caller, &offer).is_none());
    let to_carrier = String::from_utf8(session.sdp_from(Side::Caller, &offer)).unwrap();
    assert!(to_carrier.contains(" RTP/AVP 8\r\n"), "{to_carrier}");
    assert!(
        !to_carrier.contains("a=crypto"),
        "no key leaves the TLS leg"
    );
    let carrier_answer = sdp_offer(carrier.local_addr().unwrap().port(), "RTP/AVP", "");
    let to_phone = String::from_utf8(session.sdp_from(Side::Callee, &carrier_answer)).unwrap();
    assert!(to_phone.contains(" RTP/SAVP 8\r\n"), "{to_phone}");
    let line = to_phone
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .expect("the relay's own key");
    let relay_key = parse_crypto(line).unwrap();
    assert_eq!(relay_key.tag, 3, "the answer repeats the phone's tag");
    assert_ne!(relay_key.key, phone_key, "a fresh key, not the phone's");

    let dir = tempfile::tempdir().unwrap();
    let recording =
        RecordingJob::start(&session, dir.path(), "srtp.wav".into(), Channels::Split).unwrap();
    let relay_for_phone = sdp::audio(to_phone.as_bytes()).unwrap().rtp.unwrap();
    let relay_for_carrier = sdp::audio(to_carrier.as_bytes()).unwrap().rtp.unwrap();
    // The phone's SRTP stack: it encrypts with its key and decrypts with the relay's.
    let mut phone_srtp = LegSrtp::new(relay_key.key.clone(), phone_key.clone()).unwrap();

    let packets = speech();
    assert!(packets.len() > 200, "{} packets", packets.len());
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    let mut sent_samples = Vec::new();
    for (i, plain) in packets.iter().enumerate() {
        pace.tick().await;
        let wire = phone_srtp.protect(Kind::Rtp, plain).unwrap();
        assert_ne!(wire[12..plain.len()], plain[12..], "encrypted on the wire");
        if i == 10 {
            let mut forged = wire.clone();
            forged[40] ^= 0x55;
            phone.send_to(&forged, relay_for_phone).await.unwrap();
        }
        phone.send_to(&wire, relay_for_phone).await.unwrap();
        let heard = recv(&carrier).await;
        assert_eq!(heard, *plain, "the carrier hears the phone's RTP in clear");
        g711::decode(Codec::Pcma, &plain[12..], &mut sent_samples);

        // The carrier's packet back goes to the phone encrypted.
        carrier.send_to(plain, relay_for_carrier).await.unwrap();
        let captured = recv(&phone).await;
        assert_ne!(captured, *plain);
        assert_ne!(captured[12..plain.len()], plain[12..], "not plain RTP");
        assert_eq!(phone_srtp.unprotect(Kind::Rtp, &captured).unwrap(), *plain);
    }
    // The forged packet never reached the carrier: every packet it got was compared.
    let stats = session.close().await;
    assert_eq!(stats.from_caller.auth_failures, 1, "{stats:?}");
    assert_eq!(stats.from_caller.packets, packets.len() as u64);
    assert_eq!(stats.from_caller.relayed, packets.len() as u64);
    assert_eq!(stats.from_callee.relayed, packets.len() as u64);
    assert_eq!(
        stats.from_caller.foreign, 0,
        "a forged packet does not latch"
    );

    let finished = recording.finish().await.expect("a recording");
    let mut reader = hound::WavReader::open(dir.path().join(finished.file)).unwrap();
    assert_eq!(reader.spec().channels, 2);
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let phone_channel: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let heard = rms(&phone_channel);
    let spoken = rms(&sent_samples);
    assert!(spoken > 500.0, "the capture is speech: {spoken:.0}");
    assert!(
        heard > spoken * 0.5 && heard < spoken * 2.0,
        "the phone's channel is its speech, not noise: {heard:.0} against {spoken:.0}"
    );
}

fn b64(key: &MasterKey) -> String {
    use base64::Engine;
    let mut bytes = key.key().to_vec();
    bytes.extend_from_slice(key.salt());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// SAVP where the keys travelled in clear is refused (488), by the relay's check and
/// by the gateway's own answer to a waiting caller; over TLS that answer has our key.
#[tokio::test]
async fn srtp_is_refused_without_tls_and_answered_with_our_key_over_tls() {
    let engine = engine();
    let session = engine.session().unwrap();
    let key = MasterKey::from_bytes([9; 30]);
    let offer = sdp_offer(
        4000,
        "RTP/SAVP",
        &format!("a=crypto:1 {SUITE} inline:{}\r\n", b64(&key)),
    );
    assert_eq!(
        session.refusal(Side::Caller, &offer),
        Some(Refusal::KeysInClear)
    );
    assert!(matches!(
        session.answer_caller(&offer),
        Err(MediaError::Srtp(Refusal::KeysInClear))
    ));
    let plain = sdp_offer(4000, "RTP/AVP", "");
    assert_eq!(session.refusal(Side::Caller, &plain), None);

    session.set_signalling_tls(Side::Caller, true);
    let (answer, codec) = session.answer_caller(&offer).unwrap();
    assert_eq!(codec, Codec::Pcma);
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.contains(" RTP/SAVP 8\r\na=crypto:1 "), "{answer}");
    let ours = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .map(|l| parse_crypto(l).unwrap())
        .unwrap();
    assert_ne!(ours.key, key);
    let unusable = sdp_offer(
        4000,
        "RTP/SAVP",
        "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:x\r\n",
    );
    assert!(matches!(
        session.refusal(Side::Caller, &unusable),
        Some(Refusal::NoUsableKey(_))
    ));
}

/// A whole call: a carrier whose signalling is plain UDP offers SRTP only; the gateway
/// cannot answer it with plain RTP (RFC 3264) and must not take keys sent in clear, so
/// the carrier hears 488 with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_offered_over_udp_is_refused_with_488_and_the_reason() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    let (ok, carrier) = carrier_call(&app, "carrier_call_srtp.xml", &[])
        .finish()
        .await;
    assert!(ok && carrier.contains("SIP/2.0 488"), "488: {carrier}");
    assert!(
        carrier.contains("Warning: 399 leadline \"SRTP is only accepted over TLS signalling"),
        "the reason: {carrier}"
    );
    app.stop().await;
}
