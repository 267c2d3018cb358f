//! The gateway in the media path. SIPp plays real G.711 audio (its own
//! g711a.pcap) as the carrier; the agent's audio is a UDP socket of the test, so the test
//! sees where the relayed packets come from and what they carry. Rule T13: the recording
//! is kept on the call; voicemail leaves a "call back" activity with the message.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::UdpSocket;

use crate::calls_sip::{CALLER, NUMBER, Phone, Sipp, carrier_call, line, token_of};
use crate::common::wait_until;
use crate::helpers::TestApp;

/// Sets fields of our number's settings.
async fn patch_number(app: &TestApp, body: Value) -> Value {
    let id = app.get_ok("/api/v1/numbers").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, number) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/numbers/{id}"),
            Some(&app.admin),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{number}");
    number
}

/// The only call, once the gateway has kept what its media left behind.
async fn call_with_media(app: &TestApp) -> Value {
    wait_until(
        Duration::from_secs(15),
        "the call's media to be kept",
        || async {
            let calls = app.get_ok("/api/v1/calls").await;
            let call = calls["items"].as_array()?.first()?.clone();
            (call["ended_at"].is_string() && call["media"].is_object()).then_some(call)
        },
    )
    .await
}

async fn download(app: &TestApp, path: &str, token: &str) -> (StatusCode, Vec<u8>) {
    let response = app
        .client
        .get(format!("{}{}", app.base, path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.bytes().await.unwrap().to_vec())
}

fn read_wav(bytes: &[u8]) -> (hound::WavSpec, Vec<i16>) {
    let mut reader = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a WAV file");
    let spec = reader.spec();
    (spec, reader.samples::<i16>().map(Result::unwrap).collect())
}

fn rms(samples: impl Iterator<Item = i16>) -> f64 {
    let (sum, n) = samples.fold((0f64, 0usize), |(s, n), x| {
        (s + f64::from(x).powi(2), n + 1)
    });
    (sum / n.max(1) as f64).sqrt()
}

/// RMS of the A-law audio in SIPp's capture: what the carrier plays.
fn played_rms() -> f64 {
    let pcap = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sipp/g711a.pcap"
    ))
    .unwrap();
    let mut samples = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..(at + 16 + len).min(pcap.len())];
        // Ethernet 14 + IPv4 20 + UDP 8 + RTP 12.
        if frame.len() > 54 {
            leadline::media::g711::decode(
                leadline::media::g711::Codec::Pcma,
                &frame[54..],
                &mut samples,
            );
        }
        at += 16 + len;
    }
    rms(samples.into_iter())
}

/// The agent's phone's audio: echoes every packet back to where it came from, and
/// reports the sources and how many it got, until `quiet` passes without a packet.
async fn echo_agent(socket: UdpSocket, quiet: Duration) -> (Vec<SocketAddr>, usize) {
    let mut sources = Vec::new();
    let mut count = 0;
    let mut buf = vec![0u8; 2048];
    // The first packet may take the whole call set-up.
    let mut wait = Duration::from_secs(20);
    while let Ok(Ok((len, from))) = tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        count += 1;
        if !sources.contains(&from) {
            sources.push(from);
        }
        let _ = socket.send_to(&buf[..len], from).await;
        wait = quiet;
    }
    (sources, count)
}

/// The relay, RTP latching, statistics and a split recording, through a real call: the
/// carrier's audio reaches the agent from the gateway's own port, the agent's echo goes
/// back, and the recording holds both directions as long as the call talked (T13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_a_relayed_call_is_recorded_with_both_directions() {
    let app = TestApp::spawn_for_sipp().await;
    let line = line(&app, 20).await;
    let number = patch_number(
        &app,
        json!({"recording": true, "recording_channels": "split"}),
    )
    .await;
    assert_eq!(number["media_relay"], true, "{number}");
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    let agent_audio = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let media_port = agent_audio.local_addr().unwrap().port().to_string();
    let anna = Sipp::start(
        "agent_answer_media.xml",
        anna_phone.port,
        None,
        &["-key", "media", &media_port],
    );
    let echo = tokio::spawn(echo_agent(agent_audio, Duration::from_secs(2)));
    let carrier = carrier_call(&app, "carrier_call_audio.xml", &[]);
    let (ok, carrier) = carrier.finish().await;
    assert!(ok, "the carrier played its audio and hung up: {carrier}");
    let (ok, anna) = anna.finish().await;
    assert!(ok, "{anna}");
    let (sources, echoed) = echo.await.unwrap();

    // The carrier offered its own address; the agent heard only the gateway.
    assert_eq!(sources.len(), 1, "one source, latched: {sources:?}");
    let source = sources[0];
    assert_eq!(source.ip().to_string(), "127.0.0.1");
    assert!(
        (20_000..=30_000).contains(&source.port()) && source.port() % 2 == 0,
        "the gateway's RTP port of its range: {source}"
    );
    assert!(
        echoed >= 200,
        "about 236 packets in the capture, got {echoed}"
    );
    let invite = carrier
        .find("SIP/2.0 200")
        .map(|i| &carrier[i..])
        .unwrap_or_default();
    assert!(
        invite.contains("c=IN IP4 127.0.0.1") && invite.contains("o=leadline"),
        "the carrier is answered with the gateway's SDP: {invite}"
    );

    let call = call_with_media(&app).await;
    let media = &call["media"];
    assert!(
        media["from_caller"]["packets"].as_u64().unwrap() >= 200,
        "{call}"
    );
    assert!(
        media["from_caller"]["relayed"].as_u64().unwrap() >= 200,
        "{call}"
    );
    assert!(media["from_caller"]["lost"].as_u64().unwrap() < 5, "{call}");
    assert_eq!(
        media["from_callee"]["packets"].as_u64().unwrap(),
        echoed as u64,
        "{call}"
    );
    assert!(media["from_caller"]["jitter_ms"].is_number(), "{call}");
    assert_eq!(media["timed_out"], false);

    let recording = call["recording"].as_str().expect("a recording URL");
    let (status, wav) = download(&app, recording, &app.admin).await;
    assert_eq!(status, StatusCode::OK);
    let (spec, samples) = read_wav(&wav);
    assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
    let seconds = samples.len() as f64 / 2.0 / 8000.0;
    assert!(
        (6.0..=9.5).contains(&seconds),
        "7 s of audio and the hang-up: {seconds} s"
    );
    let ms = call["recording_ms"].as_f64().unwrap();
    assert!((ms / 1000.0 - seconds).abs() < 0.1, "{ms} ms");
    let caller = rms(samples.iter().step_by(2).copied());
    let callee = rms(samples.iter().skip(1).step_by(2).copied());
    let played = played_rms();
    assert!(
        caller > played * 0.5 && caller < played * 2.0,
        "the caller's channel carries the played audio: {caller:.0} against {played:.0}"
    );
    assert!(
        callee > played * 0.5,
        "the echo is on the callee's channel: {callee:.0}"
    );

    // Rights: the agent who answered hears it; a colleague the call never reached does not.
    let anna_token = token_of(&app, &line.anna).await;
    assert_eq!(
        download(&app, recording, &anna_token).await.0,
        StatusCode::OK
    );
    let ben_token = token_of(&app, &line.ben).await;
    assert_eq!(
        download(&app, recording, &ben_token).await.0,
        StatusCode::NOT_FOUND
    );
    // A2: at `queue`, Ben sees Anna's customers (they share the queue), and with
    // them the call and its recording (A2).
    app.put_ok(
        "/api/v1/settings/access",
        json!({"agent_view": "queue", "agent_edit": "own"}),
    )
    .await;
    assert_eq!(
        download(&app, recording, &ben_token).await.0,
        StatusCode::OK
    );

    let metrics = app.metrics().await.expect("/metrics answers");
    assert!(
        metrics.contains("leadline_rtp_packets_relayed_total"),
        "{metrics}"
    );
    assert!(metrics.contains("leadline_rtp_jitter_ms"), "{metrics}");
}

/// A free stretch of `ports` UDP ports on loopback starting at an even port, between
/// the gateways' default RTP range (20000-30000, used by the other tests) and the
/// system's ephemeral ports (32768 and up, where SIPp's media ports come from).
fn free_range(ports: u16) -> (u16, u16) {
    for _ in 0..500 {
        let first = 30_000 + 2 * rand::random_range(0..(2_700 - ports) / 2);
        if (first..first + ports).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()) {
            return (first, first + ports - 1);
        }
    }
    panic!("no free port range");
}

/// Ports released on every call end: 1,000 short calls through a range of
/// only 60 port pairs, then every port of the range binds again and none is in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_short_calls_leave_every_rtp_port_free() {
    // 60 pairs for at most 9 calls (18 pairs) at once on the carrier's side: the rest is
    // room for calls the carrier counts as over while a busy gateway is still closing
    // them (40 pairs ran out once under a full parallel test run).
    let (first, last) = free_range(120);
    let app = TestApp::spawn_for_sipp_with(|config| {
        config.rtp_ports = leadline::media::PortRange { first, last };
    })
    .await;
    line(&app, 20).await;
    let anna_phone = Phone::register(&app, "101", "pw-101-secret").await;
    // This phone also answers the gateway's keep-alive OPTIONS: a minute of calls
    // outlasts the pings an unanswering binding survives.
    let anna = Sipp::start(
        "agent_answer_many.xml",
        anna_phone.port,
        None,
        // Keep-alive OPTIONS count as runs of the scenario too.
        &["-m", "2000", "-timeout", "240s"],
    );
    // At most 9 calls at once on the carrier's side (see above).
    let carrier = Sipp::start(
        "carrier_call.xml",
        0,
        Some(app.sip_addr().to_string()),
        &[
            "-s", NUMBER, "-key", "caller", CALLER, "-m", "1000", "-r", "200", "-l", "9",
            "-timeout", "240s",
        ],
    );
    let (ok, carrier) = carrier.finish().await;
    assert!(
        ok,
        "1,000 calls set up and ended: {}",
        &carrier[carrier.len().saturating_sub(3000)..]
    );
    anna.stop().await;
    app.wait_for_metric_line("leadline_rtp_port_pairs_in_use 0", "every port pair back")
        .await;
    let taken: Vec<u16> = (first..=last)
        .filter(|p| std::net::UdpSocket::bind(("127.0.0.1", *p)).is_err())
        .collect();
    assert!(
        taken.is_empty(),
        "ports still bound after the calls: {taken:?}"
    );
}

/// A short WAV greeting, as an admin would upload: 16 kHz mono, one second of 440 Hz.
fn greeting_wav() -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
    for n in 0..16_000 {
        let v = (2.0 * std::f64::consts::PI * 440.0 * f64::from(n) / 16_000.0).sin() * 9000.0;
        writer.write_sample(v as i16).unwrap();
    }
    writer.finalize().unwrap();
    out.into_inner()
}

/// Working hours and voicemail (T13): outside the hours the gateway
/// answers, plays the uploaded greeting and the tone, records the caller's message and
/// leaves it on the call and on an open "call back" activity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_outside_hours_the_caller_leaves_a_voicemail_for_a_call_back() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    // No opening hours on any day: always closed.
    patch_number(
        &app,
        json!({"hours": {"tz": "Europe/Berlin", "week": {}, "days_off": []},
               "after_hours": {"action": "voicemail", "max_message_s": 10}}),
    )
    .await;
    let id = app.get_ok("/api/v1/numbers").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app
        .client
        .put(format!("{}/api/v1/numbers/{id}/greeting", app.base))
        .bearer_auth(&app.admin)
        .header("content-type", "audio/wav")
        .body(greeting_wav())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let number: Value = response.json().await.unwrap();
    assert!(number["greeting"].is_string(), "{number}");

    let caller_audio = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let media_port = caller_audio.local_addr().unwrap().port().to_string();
    let carrier = carrier_call(
        &app,
        "carrier_call_media.xml",
        &["-key", "media", &media_port],
    );
    // The greeting (1 s) and the tone (0.4 s) come from the gateway...
    let mut buf = vec![0u8; 2048];
    let (_, gateway) =
        tokio::time::timeout(Duration::from_secs(20), caller_audio.recv_from(&mut buf))
            .await
            .expect("the greeting starts")
            .unwrap();
    let mut heard = 1;
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(300), caller_audio.recv_from(&mut buf)).await
    {
        heard += 1;
    }
    assert!(
        (60..=80).contains(&heard),
        "1.4 s of 20 ms frames, got {heard}"
    );
    // ...then the caller speaks for 2 s (a loud µ-law tone).
    for n in 0..100u16 {
        let packet = rtp_rs::RtpPacketBuilder::new()
            .payload_type(0)
            .ssrc(42)
            .sequence(rtp_rs::Seq::from(n))
            .timestamp(u32::from(n) * 160)
            .payload(&[0x80, 0x00].repeat(80))
            .build()
            .unwrap();
        caller_audio.send_to(&packet, gateway).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, carrier) = carrier.finish().await;
    assert!(
        ok && carrier.contains("o=leadline"),
        "answered by the gateway: {carrier}"
    );

    let call = call_with_media(&app).await;
    assert_eq!(call["outcome"], "missed", "{call}");
    assert_eq!(call["voicemail"], true, "{call}");
    let ms = call["recording_ms"].as_u64().unwrap();
    assert!(
        (1800..=4500).contains(&ms),
        "the 2 s message up to the hang-up: {ms} ms"
    );
    let (status, wav) = download(&app, call["recording"].as_str().unwrap(), &app.admin).await;
    assert_eq!(status, StatusCode::OK);
    let (spec, samples) = read_wav(&wav);
    assert_eq!(spec.channels, 1);
    assert!(
        rms(samples.iter().copied()) > 1000.0,
        "the message is not silence"
    );

    let lead = &app.leads().await[0];
    let timeline = app
        .get_ok(&format!(
            "/api/v1/activities?entity=lead:{}",
            lead["id"].as_str().unwrap()
        ))
        .await;
    let activity = &timeline["items"][0];
    assert_eq!(activity["completed"], false, "{timeline}");
    assert!(
        activity["subject"]
            .as_str()
            .unwrap()
            .starts_with("Call back: voicemail"),
        "{timeline}"
    );
    assert_eq!(
        activity["recording"], call["recording"],
        "the message is on the activity"
    );
}

/// Outside the hours with no rule, or with `reject`: 480, and a missed call (T13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_hours_without_voicemail_the_caller_hears_480() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    patch_number(
        &app,
        json!({"hours": {"tz": "UTC", "week": {}}, "after_hours": {"action": "reject"}}),
    )
    .await;
    let (ok, carrier) = carrier_call(&app, "carrier_unanswered.xml", &[])
        .finish()
        .await;
    assert!(ok && carrier.contains("SIP/2.0 480"), "{carrier}");
    let call = call_with_media(&app).await;
    assert_eq!(call["outcome"], "missed", "{call}");
}

/// Bad settings are refused with the field named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_settings_are_validated() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    let id = app.get_ok("/api/v1/numbers").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (body, code) in [
        (
            json!({"hours": {"tz": "Mars/Olympus", "week": {}}}),
            "invalid_hours",
        ),
        (
            json!({"after_hours": {"action": "sing"}}),
            "invalid_after_hours",
        ),
        (
            json!({"media_relay": false, "recording": true}),
            "recording_needs_relay",
        ),
    ] {
        let (status, error) = app
            .request(
                reqwest::Method::PATCH,
                &format!("/api/v1/numbers/{id}"),
                Some(&app.admin),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert_eq!(error["error"]["code"], code, "{error}");
    }
    let response = app
        .client
        .put(format!("{}/api/v1/numbers/{id}/greeting", app.base))
        .bearer_auth(&app.admin)
        .header("content-type", "audio/wav")
        .body("not a wav")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// After hours, `forward`: the call goes out through the number's trunk
/// to the rule's number, showing the caller's number, and the caller talks to whoever
/// answers there; the call is logged as answered by nobody of ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_hours_the_call_is_forwarded_through_the_trunk() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    let trunk = app.get_ok("/api/v1/trunks").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The carrier's side that takes forwarded calls: SIPp answering on a port of its own.
    let carrier_port = crate::common::free_port();
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/trunks/{trunk}"),
            Some(&app.admin),
            Some(json!({"port": carrier_port})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let colleague = Sipp::start("agent_answer.xml", carrier_port, None, &[]);
    patch_number(
        &app,
        json!({"hours": {"tz": "UTC", "week": {}},
               "after_hours": {"action": "forward", "forward_to": "0151 1234 5678"}}),
    )
    .await;
    let (ok, carrier) = carrier_call(&app, "carrier_call.xml", &[]).finish().await;
    assert!(ok, "the caller was connected and hung up: {carrier}");
    let (ok, forwarded) = colleague.finish().await;
    assert!(
        ok,
        "the forward target answered and got the BYE: {forwarded}"
    );
    let invite = forwarded
        .lines()
        .find(|l| l.starts_with("INVITE "))
        .unwrap_or_default();
    assert!(
        invite.contains("4915112345678"),
        "to the rule's number in E.164: {invite}"
    );
    assert!(
        forwarded.contains(&format!("From: <sip:{CALLER}@"))
            || forwarded.contains("4917612345678@"),
        "showing the caller's number: {forwarded}"
    );
    let call = call_with_media(&app).await;
    assert_eq!(call["outcome"], "answered", "{call}");
    assert!(call["answered_by"].is_null(), "{call}");
}

/// Recordings are kept `recording_retention_days`: the sweep deletes the files of calls
/// started before the cut-off and forgets them on the call; newer ones stay.
#[tokio::test]
async fn the_retention_sweep_deletes_old_recordings_only() {
    use leadline::crm::model::{CallEventKind, CallOutcome, Direction};
    use leadline::store::{CallEvent, Store, StoredRecording, now_ms};

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let recordings = dir.path().join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    let day = 24 * 3600 * 1000;
    for (call_id, age_days) in [("old-call", 100), ("new-call", 1)] {
        let at = now_ms() - age_days * day;
        for (event, outcome) in [
            (CallEventKind::Ringing, None),
            (CallEventKind::Ended, Some(CallOutcome::Answered)),
        ] {
            store
                .apply_call_event(&CallEvent {
                    call_id: call_id.to_owned(),
                    event,
                    direction: Direction::Incoming,
                    from: CALLER.to_owned(),
                    to: "+4930901820".to_owned(),
                    user: None,
                    outcome,
                    at,
                    diverted_from: None,
                    verstat: None,
                })
                .await
                .unwrap();
        }
        let file = format!("{call_id}.wav");
        std::fs::write(recordings.join(&file), b"RIFF").unwrap();
        let recording = StoredRecording {
            file,
            duration_ms: 1000,
            voicemail: false,
        };
        store
            .set_call_media(call_id, None, Some(&recording))
            .await
            .unwrap();
    }
    let deleted = leadline::media::retention::sweep(&store, &recordings, now_ms() - 90 * day)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert!(!recordings.join("old-call.wav").exists());
    assert!(recordings.join("new-call.wav").exists());
    let old = store.call_by_call_id("old-call").await.unwrap().unwrap();
    assert_eq!(old.recording, None);
    let new = store.call_by_call_id("new-call").await.unwrap().unwrap();
    assert_eq!(new.recording.as_deref(), Some("new-call.wav"));
}
