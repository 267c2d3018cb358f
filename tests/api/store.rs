//! The store's bulk import directly (the vCard import builds on it), on both databases.

use leadline::crm::model::EntityKind;
use leadline::matcher::{Identifier, PhoneKey, parse_email};
use leadline::store::{NewEntity, Store};

use crate::common::postgres::PgServer;

fn contact(name: &str, phones: &[&str], emails: &[&str]) -> NewEntity {
    let mut identifiers: Vec<Identifier> = phones
        .iter()
        .map(|p| Identifier::Phone(PhoneKey::E164((*p).to_owned())))
        .collect();
    identifiers.extend(
        emails
            .iter()
            .map(|e| Identifier::Email(parse_email(e).unwrap())),
    );
    NewEntity {
        kind: EntityKind::Contact,
        name: name.to_owned(),
        identifiers,
        responsible: None,
        source: "OTHER".to_owned(),
        company: None,
        customer: None,
        deal: None,
    }
}

/// M7: an import never creates a second entity for a taken identifier, whether it is
/// taken already or twice in the same file, and gives back a skipped entity's claims.
async fn m7_import_skips_taken_identifiers(store: &Store) {
    let first = store
        .import_entities(&[contact("Existing", &["+4930111"], &[])])
        .await
        .unwrap();
    assert_eq!(first.created, 1);

    let report = store
        .import_entities(&[
            contact("New", &["+4930222"], &["new@example.com"]),
            contact("Clash", &["+4930333", "+4930111"], &[]),
            contact("Twice in file", &["+4930222"], &[]),
        ])
        .await
        .unwrap();
    assert_eq!(report.created, 1);
    assert_eq!(report.skipped, vec![1, 2]);

    // The skipped contact's free number was given back: a later import may use it.
    let again = store
        .import_entities(&[contact("Later", &["+4930333"], &[])])
        .await
        .unwrap();
    assert_eq!(again.created, 1, "{again:?}");

    let matched = store
        .match_identifier(Identifier::Email(parse_email("NEW@example.com").unwrap()))
        .await
        .unwrap();
    assert_eq!(matched.matches.len(), 1);
}

#[tokio::test]
async fn m7_import_skips_taken_identifiers_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    m7_import_skips_taken_identifiers(&store).await;
}

#[tokio::test]
async fn m7_import_skips_taken_identifiers_postgres() {
    let url = PgServer::shared().create_database("import").await;
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    m7_import_skips_taken_identifiers(&store).await;
}

/// Bindings survive a restart (they are rows), refresh in place, and expire.
async fn registrations_persist_refresh_and_expire(store: &Store) {
    use leadline::store::RegistrationRecord;
    let binding = |contact: &str, expires_at: i64| RegistrationRecord {
        aor: "101".into(),
        owner_kind: "user".into(),
        owner_id: "u1".into(),
        contact: contact.into(),
        expires_at,
        call_id: "reg-1".into(),
        cseq: 1,
        q: None,
        instance: None,
        user_agent: Some("Linphone/5".into()),
        transport: "udp".into(),
        source: "192.0.2.10:5060".into(),
    };
    let now = 1_000_000;
    store
        .save_bindings(
            "101",
            &[
                binding("sip:101@192.0.2.10:5060", now + 60_000),
                binding("sip:101@198.51.100.7", now + 5_000),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(store.bindings("101", now).await.unwrap().len(), 2);
    // A refresh moves the expiry of the same contact; no second row.
    store
        .save_bindings(
            "101",
            &[binding("sip:101@192.0.2.10:5060", now + 120_000)],
            &[],
        )
        .await
        .unwrap();
    let live = store.bindings("101", now + 10_000).await.unwrap();
    assert_eq!(live.len(), 1, "the 5 s binding expired");
    assert_eq!(live[0].expires_at, now + 120_000);
    // Un-register one contact.
    store
        .save_bindings("101", &[], &["sip:101@192.0.2.10:5060".to_owned()])
        .await
        .unwrap();
    assert_eq!(store.bindings("101", now).await.unwrap().len(), 1);
    assert_eq!(store.purge_expired_bindings(now + 10_000).await.unwrap(), 1);
    assert!(store.bindings("101", now).await.unwrap().is_empty());
}

#[tokio::test]
async fn registrations_persist_refresh_and_expire_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    registrations_persist_refresh_and_expire(&store).await;
}

#[tokio::test]
async fn registrations_persist_refresh_and_expire_postgres() {
    let url = PgServer::shared().create_database("registrations").await;
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    registrations_persist_refresh_and_expire(&store).await;
}
