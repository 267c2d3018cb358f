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
