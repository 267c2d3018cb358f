//! The digest order per user: `sip_digest` on `/users` (validated, `null` = the gateway's
//! `--sip-digest`), and a phone that reads only the first challenge (SIPp) registering
//! while the gateway offers SHA-256 first; an unknown extension is challenged like a
//! known one without a choice of its own.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::calls_sip::Sipp;
use crate::common::free_port;
use crate::helpers::TestApp;

/// The `WWW-Authenticate` algorithms of the gateway's 401 to a first REGISTER for `user`.
async fn challenged_algorithms(app: &TestApp, user: &str) -> Vec<String> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let gw = app.sip_addr();
    let register = format!(
        "REGISTER sip:{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-dg-{user}\r\n\
         From: <sip:{user}@{gw}>;tag=dg\r\nTo: <sip:{user}@{gw}>\r\nCall-ID: dg-{user}\r\n\
         CSeq: 1 REGISTER\r\nContact: <sip:{user}@{local}>\r\nMax-Forwards: 70\r\n\
         Expires: 300\r\nContent-Length: 0\r\n\r\n"
    );
    socket.send_to(register.as_bytes(), gw).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
        .await
        .expect("a challenge within the deadline")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("SIP/2.0 401"), "{answer}");
    answer
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
        .map(|l| {
            l.split(',')
                .find_map(|p| p.trim().strip_prefix("algorithm="))
                .unwrap_or("?")
                .to_owned()
        })
        .collect()
}

async fn patch_user(app: &TestApp, id: &str, body: Value) -> (StatusCode, Value) {
    app.request(
        Method::PATCH,
        &format!("/api/v1/users/{id}"),
        Some(&app.admin),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn a_users_digest_order_is_validated_and_null_means_the_gateways() {
    let app = TestApp::spawn().await;
    let created = app
        .post_ok(
            "/api/v1/users",
            json!({"name": "Anna", "email": "anna@example.com", "role": "agent",
                   "extension": "101", "sip_digest": ["MD5", "sha-256"]}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created["sip_digest"], json!(["md5", "sha256"]));
    let id = created["id"].as_str().unwrap().to_owned();
    for wrong in [
        json!([]),
        json!(["sha1"]),
        json!(["md5", "md5"]),
        json!("md5"),
    ] {
        let (status, body) = patch_user(&app, &id, json!({"sip_digest": wrong})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{wrong}: {body}");
        if wrong.is_array() {
            assert_eq!(body["error"]["field"], "sip_digest", "{wrong}: {body}");
            assert_eq!(body["error"]["code"], "invalid_sip_digest", "{body}");
        }
    }
    let (status, body) = patch_user(&app, &id, json!({"sip_digest": ["md5"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sip_digest"], json!(["md5"]));
    assert_eq!(
        app.get_ok(&format!("/api/v1/users/{id}")).await["sip_digest"],
        json!(["md5"])
    );
    // A change of something else keeps it; null gives it back to the gateway.
    let (_, body) = patch_user(&app, &id, json!({"name": "Anna B"})).await;
    assert_eq!(body["sip_digest"], json!(["md5"]));
    let (status, body) = patch_user(&app, &id, json!({"sip_digest": null})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sip_digest"], Value::Null);
    let (status, body) = app
        .request(
            Method::POST,
            "/api/v1/users",
            Some(&app.admin),
            Some(
                json!({"name": "Ben", "email": "ben@example.com", "role": "agent",
                        "sip_digest": ["sha512"]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "sip_digest", "{body}");
    app.stop().await;
}

/// SIPp answers only the first challenge and knows only MD5. The gateway offers SHA-256
/// first (its default); Anna's phone is set to `["md5"]`, so it registers. Everyone else,
/// existing or not, is still offered SHA-256 first.
#[tokio::test]
async fn a_user_set_to_md5_registers_with_a_phone_that_reads_only_the_first_challenge() {
    let app = TestApp::spawn().await;
    let anna = app
        .post_ok(
            "/api/v1/users",
            json!({"name": "Anna", "email": "anna@example.com", "role": "agent",
                   "extension": "101", "sip_password": "correct-horse-1",
                   "sip_digest": ["md5"]}),
            StatusCode::CREATED,
        )
        .await;
    app.post_ok(
        "/api/v1/users",
        json!({"name": "Ben", "email": "ben@example.com", "role": "agent",
               "extension": "102", "sip_password": "correct-horse-2"}),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(challenged_algorithms(&app, "101").await, ["MD5"]);
    assert_eq!(challenged_algorithms(&app, "102").await, ["SHA-256", "MD5"]);
    assert_eq!(
        challenged_algorithms(&app, "999").await,
        ["SHA-256", "MD5"],
        "an unknown extension looks like a known one with the gateway's order"
    );

    let run = Sipp::start(
        "register.xml",
        free_port(),
        Some(app.sip_addr().to_string()),
        &["-s", "101", "-au", "101", "-ap", "correct-horse-1"],
    );
    let (ok, messages) = run.finish().await;
    assert!(
        ok,
        "SIPp registers with the first challenge (MD5): {messages}"
    );
    let registrations = app.get_ok("/api/v1/registrations").await;
    let items = registrations["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{registrations}");
    assert_eq!(items[0]["user"], anna["id"]);
    app.stop().await;
}
