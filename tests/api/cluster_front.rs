//! Several nodes on one PostgreSQL behind the SIP proxy: what the nodes share for the
//! front (the digest nonce key, bindings with their Path), seen through two stores on one
//! database as two nodes see it.

use leadline::sip::digest::{self, NonceKey, NonceState};
use leadline::store::{RegistrationRecord, Store};

use crate::common::postgres::PgServer;

async fn node(url: &str) -> Store {
    let store = Store::connect(url).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// The first node to start stores its nonce key; every later node reads that one back,
/// so a nonce node A challenged with checks as fresh on node B.
#[tokio::test]
async fn nodes_on_one_database_share_the_digest_nonce_key() {
    let url = PgServer::shared().create_database("front_nonce").await;
    let (a, b) = (node(&url).await, node(&url).await);
    let key_a = a
        .shared_secret("digest_nonce_key", &NonceKey::generate().to_hex())
        .await
        .unwrap();
    let key_b = b
        .shared_secret("digest_nonce_key", &NonceKey::generate().to_hex())
        .await
        .unwrap();
    assert_eq!(key_a, key_b);
    let (key_a, key_b) = (
        NonceKey::from_hex(&key_a).unwrap(),
        NonceKey::from_hex(&key_b).unwrap(),
    );
    let nonce = digest::issue_nonce(&key_a, "leadline", 1_000);
    assert_eq!(
        digest::check_nonce(&key_b, "leadline", &nonce, 2_000, digest::NONCE_MAX_AGE_MS),
        NonceState::Fresh
    );
    a.close().await;
    b.close().await;
}

/// A binding registered through the proxy keeps its Path in the shared table: the other
/// node reads it back with the binding and rings the phone along it.
#[tokio::test]
async fn a_binding_keeps_its_path_for_every_node() {
    let url = PgServer::shared().create_database("front_path").await;
    let (a, b) = (node(&url).await, node(&url).await);
    let now = 1_000_000;
    let path = "<sip:127.0.0.1:5060;lr;received=sip:192.0.2.10:40000>";
    let binding = RegistrationRecord {
        aor: "101".into(),
        owner_kind: "user".into(),
        owner_id: "u1".into(),
        contact: "sip:101@192.168.1.20:5060".into(),
        expires_at: now + 60_000,
        call_id: "reg-path".into(),
        cseq: 1,
        q: None,
        instance: None,
        user_agent: None,
        transport: "udp".into(),
        source: "127.0.0.1:5060".into(),
        path: Some(path.into()),
    };
    a.save_bindings("101", std::slice::from_ref(&binding), &[])
        .await
        .unwrap();
    assert_eq!(
        b.bindings("101", now).await.unwrap(),
        std::slice::from_ref(&binding)
    );
    let refreshed = RegistrationRecord {
        cseq: 2,
        path: None,
        ..binding
    };
    b.save_bindings("101", std::slice::from_ref(&refreshed), &[])
        .await
        .unwrap();
    assert_eq!(a.bindings("101", now).await.unwrap()[0].path, None);
    a.close().await;
    b.close().await;
}
