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

/// T2: carrier accounts carry the password for the SIP side only; the registration state
/// of a trunk is one row, written over and over, and goes with the trunk.
async fn t2_trunk_registration_state_round_trips(store: &Store) {
    use leadline::crm::model::{Transport, TrunkKind, TrunkRegistrationState};
    use leadline::store::{TrunkInput, TrunkRegistrationRecord};
    let input = |name: &str, kind, register| TrunkInput {
        name: name.into(),
        kind,
        profile: "generic".into(),
        host: Some("sip.carrier.example".into()),
        port: 5060,
        transport: Transport::Udp,
        username: Some("acct".into()),
        password: Some("s3cret".into()),
        register,
        allowed_ips: vec![],
    };
    let carrier = store
        .create_trunk(&input("Carrier", TrunkKind::Carrier, true))
        .await
        .unwrap();
    store
        .create_trunk(&input("Off", TrunkKind::Carrier, false))
        .await
        .unwrap();
    store
        .create_trunk(&input("PBX", TrunkKind::Pbx, false))
        .await
        .unwrap();
    let accounts = store.carrier_accounts().await.unwrap();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0].id, carrier.id);
    assert_eq!(accounts[0].password.as_deref(), Some("s3cret"));
    assert!(!format!("{accounts:?}").contains("s3cret"));

    assert_eq!(store.trunk_registration(&carrier.id).await.unwrap(), None);
    let mut record = TrunkRegistrationRecord {
        trunk: carrier.id.clone(),
        state: TrunkRegistrationState::Registering,
        registered_until: None,
        last_error: None,
        failures: 0,
        next_attempt_at: None,
        updated_at: 1_000,
    };
    assert!(store.save_trunk_registration(&record).await.unwrap());
    record.state = TrunkRegistrationState::Failed;
    record.last_error = Some("the carrier answered 403 Forbidden".into());
    record.failures = 2;
    record.next_attempt_at = Some(11_000);
    record.registered_until = Some(600_000);
    record.updated_at = 2_000;
    assert!(store.save_trunk_registration(&record).await.unwrap());
    assert_eq!(
        store.trunk_registration(&carrier.id).await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(store.trunk_registrations().await.unwrap().len(), 1);
    assert_eq!(
        store.trunk_profiles().await.unwrap().get(&carrier.id),
        Some(&"generic".to_owned())
    );

    store.delete_trunk(&carrier.id).await.unwrap();
    assert!(store.trunk_registrations().await.unwrap().is_empty());
    // A worker that still reports on a deleted trunk writes nothing.
    assert!(!store.save_trunk_registration(&record).await.unwrap());
    assert!(store.trunk_registrations().await.unwrap().is_empty());
}

#[tokio::test]
async fn t2_trunk_registration_state_round_trips_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    t2_trunk_registration_state_round_trips(&store).await;
}

#[tokio::test]
async fn t2_trunk_registration_state_round_trips_postgres() {
    let url = PgServer::shared()
        .create_database("trunk_registrations")
        .await;
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    t2_trunk_registration_state_round_trips(&store).await;
}

/// Keep-alive's view of the bindings: live UDP ones only, and a dead one is dropped only
/// if the device did not register again meanwhile.
async fn keepalive_bindings_and_conditional_drop(store: &Store) {
    use leadline::store::RegistrationRecord;
    let binding = |contact: &str, transport: &str, cseq: i64, expires_at: i64| RegistrationRecord {
        aor: "103".into(),
        owner_kind: "user".into(),
        owner_id: "u1".into(),
        contact: contact.into(),
        expires_at,
        call_id: "reg-3".into(),
        cseq,
        q: None,
        instance: None,
        user_agent: None,
        transport: transport.into(),
        source: "192.0.2.10:40000".into(),
    };
    let now = 1_000_000;
    store
        .save_bindings(
            "103",
            &[
                binding("sip:103@10.0.0.1", "udp", 1, now + 60_000),
                binding("sip:103@10.0.0.2", "tcp", 1, now + 60_000),
                binding("sip:103@10.0.0.3", "udp", 1, now - 1),
            ],
            &[],
        )
        .await
        .unwrap();
    let live = store.live_udp_bindings(now).await.unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].contact, "sip:103@10.0.0.1");
    // Registered again (CSeq 2) after the pings began: not dropped.
    store
        .save_bindings(
            "103",
            &[binding("sip:103@10.0.0.1", "udp", 2, now + 60_000)],
            &[],
        )
        .await
        .unwrap();
    let drop =
        |cseq| store.drop_binding_if_unchanged("103", "sip:103@10.0.0.1", "192.0.2.10:40000", cseq);
    assert!(!drop(1).await.unwrap());
    assert!(drop(2).await.unwrap());
    assert!(store.live_udp_bindings(now).await.unwrap().is_empty());
}

#[tokio::test]
async fn keepalive_bindings_and_conditional_drop_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    keepalive_bindings_and_conditional_drop(&store).await;
}

#[tokio::test]
async fn keepalive_bindings_and_conditional_drop_postgres() {
    let url = PgServer::shared().create_database("keepalive").await;
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    keepalive_bindings_and_conditional_drop(&store).await;
}
