//! A withheld caller on a number whose trust rules send them to voicemail (T6): answered
//! by the gateway, the message recorded, the call flagged, nothing made in the CRM.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::net::UdpSocket;

use crate::calls_sip::{carrier_call_from, line};
use crate::common::wait_until;
use crate::helpers::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t6_t13_an_anonymous_caller_is_sent_to_voicemail_and_creates_nothing() {
    let app = TestApp::spawn_for_sipp().await;
    line(&app, 20).await;
    let id = app.get_ok("/api/v1/numbers").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, number) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/numbers/{id}"),
            Some(&app.admin),
            Some(json!({"trust": {"anonymous": "voicemail"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{number}");

    let caller_audio = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let media_port = caller_audio.local_addr().unwrap().port().to_string();
    let carrier = carrier_call_from(
        &app,
        "anonymous",
        "carrier_call_media.xml",
        &["-key", "media", &media_port],
    );
    // The voicemail tone tells where the gateway listens...
    let mut buf = vec![0u8; 2048];
    let (_, gateway) =
        tokio::time::timeout(Duration::from_secs(20), caller_audio.recv_from(&mut buf))
            .await
            .expect("the voicemail answers with its tone")
            .unwrap();
    // ...then the caller speaks for 1 s, paced as a phone sends it.
    for n in 0..50u16 {
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
    let (ok, trace) = carrier.finish().await;
    assert!(
        ok && trace.contains("o=leadline"),
        "answered by the gateway: {trace}"
    );

    let call = wait_until(
        Duration::from_secs(15),
        "the call's recording to be kept",
        || async {
            let calls = app.get_ok("/api/v1/calls").await;
            let call = calls["items"].as_array()?.first()?.clone();
            (call["ended_at"].is_string() && call["recording"].is_string()).then_some(call)
        },
    )
    .await;
    assert_eq!(call["trust"]["flag"], "anonymous", "{call}");
    assert_eq!(call["voicemail"], true, "{call}");
    assert!(call["recording_ms"].as_u64().unwrap() > 0, "{call}");
    assert_eq!(call["crm_action"], "logged", "{call}");
    assert_eq!(call["created"], json!([]), "{call}");
    assert!(call["activity"].is_null(), "no activity: {call}");
    assert!(app.leads().await.is_empty());
    app.stop().await;
}
