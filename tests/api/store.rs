//! The store's bulk import directly (the vCard import builds on it), on both databases.

use leadline::crm::intake::NumberSettings;
use leadline::crm::model::{
    CallEventKind, CallOutcome, CrmMode, CrmSettings, Direction, Directions, EntityKind,
    LeadCreation, MailCheck, MailSecurity, MailboxKind, NumberId, Role, UserId,
};
use leadline::matcher::{Identifier, PhoneKey, parse_email};
use leadline::store::{
    CallEvent, EmailOutcome, EntityFilter, EventStep, IncomingEmail, MailOrigin, NewEntity,
    NewMailbox, NewUser, Opening, Page, StepDone, StepJob, Store, StoreError,
};

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
        path: None,
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
        path: None,
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
    let drop = |cseq, call_id| {
        store.drop_binding_if_unchanged(
            "103",
            "sip:103@10.0.0.1",
            "192.0.2.10:40000",
            cseq,
            call_id,
        )
    };
    assert!(!drop(1, "reg-3").await.unwrap());
    // Rebooted: a new Call-ID that starts its CSeq again, here at the same 2. The binding
    // the pings gave up on was the old Call-ID's: the new one stays.
    let rebooted = RegistrationRecord {
        call_id: "reg-after-reboot".into(),
        ..binding("sip:103@10.0.0.1", "udp", 2, now + 60_000)
    };
    store.save_bindings("103", &[rebooted], &[]).await.unwrap();
    assert!(!drop(2, "reg-3").await.unwrap());
    assert_eq!(store.live_udp_bindings(now).await.unwrap().len(), 1);
    assert!(drop(2, "reg-after-reboot").await.unwrap());
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

/// Reads `text` with every UUID replaced by `#n`, numbered in the order first seen over
/// all calls with the same `seen`, so two runs that create the same things in the same
/// order read the same.
fn without_ids(text: &str, seen: &mut Vec<String>) -> String {
    let is_uuid = |t: &[u8]| {
        t.len() == 36
            && t.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            })
    };
    let bytes = text.as_bytes();
    let (mut out, mut i) = (String::new(), 0);
    while i < bytes.len() {
        if i + 36 <= bytes.len() && is_uuid(&bytes[i..i + 36]) {
            let id = &text[i..i + 36];
            let n = match seen.iter().position(|s| s == id) {
                Some(n) => n,
                None => {
                    seen.push(id.to_owned());
                    seen.len() - 1
                }
            };
            out.push_str(&format!("#{n}"));
            i += 36;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The mailbox, users, queue and customers of `mail_batch_decides_as_one_message_at_a_time`.
async fn mail_setup(store: &Store, mode: CrmMode) -> String {
    let user = |name: &str| NewUser {
        name: name.to_owned(),
        email: format!("{name}@leadline.test"),
        role: Role::Agent,
        extension: None,
        phones: Vec::new(),
        sip: None,
        password_hash: None,
        sip_digest: None,
    };
    let anna = store.create_user(user("anna")).await.unwrap();
    let bob = store.create_user(user("bob")).await.unwrap();
    let queue = store
        .create_queue("Sales", std::slice::from_ref(&anna.id), &Default::default())
        .await
        .unwrap();
    store
        .put_crm_settings(&CrmSettings {
            mode,
            repeat_mode: true,
            ..CrmSettings::default()
        })
        .await
        .unwrap();
    let mut karl = contact("Karl", &[], &["karl@kunde.example"]);
    karl.responsible = Some(bob.id.clone());
    let mut carla = contact("Carla", &[], &["carla@kunde.example"]);
    carla.responsible = Some(anna.id.clone());
    store.import_entities(&[karl, carla]).await.unwrap();
    store
        .create_mailbox(&NewMailbox {
            name: "Sales inbox".into(),
            kind: MailboxKind::Company,
            owner: None,
            address: "sales@leadline.test".into(),
            host: "127.0.0.1".into(),
            port: 143,
            security: MailSecurity::None,
            username: "sales".into(),
            password: "secret".into(),
            auth: leadline::crm::model::MailAuth::Password,
            oauth2: None,
            folders: None,
            spam_folder: None,
            sync_window_days: None,
            crm_link: true,
            create_leads_incoming: true,
            create_leads_outgoing: true,
            vcard_contacts: false,
            route_to_responsible: true,
            blacklist: vec!["spam@junk.example".into()],
            queue: Some(queue.id),
            check: MailCheck::Idle,
        })
        .await
        .unwrap()
        .id
}

/// Messages whose intake depends on the messages before them: a second message from a
/// new sender, copies by Message-ID and by folder position, a known customer twice (a
/// deal or repeat lead made by the first), several customers on one sent message.
fn mail_batch(mailbox: &str, uid_validity: i64) -> Vec<IncomingEmail> {
    let mail = |uid: i64, folder: &str, id: Option<&str>, direction, from: &str, to: &[&str]| {
        let customers: Vec<String> = match direction {
            Direction::Incoming => vec![from.to_owned()],
            Direction::Outgoing => to.iter().map(|t| (*t).to_owned()).collect(),
        };
        IncomingEmail {
            origin: MailOrigin::Folder {
                mailbox: mailbox.to_owned(),
                folder: folder.to_owned(),
                uid_validity,
                uid,
            },
            message_id: id.map(str::to_owned),
            in_reply_to: None,
            thread_root: id.map(str::to_owned),
            direction,
            from: from.to_owned(),
            from_name: None,
            to: to.iter().map(|t| (*t).to_owned()).collect(),
            cc: Vec::new(),
            subject: format!("Message {uid} in {folder}"),
            received_at: 1_790_000_000_000 + uid,
            seen: uid % 3 == 0,
            attachments: Vec::new(),
            raw: format!("Subject: Message {uid}\r\n\r\nHallo\r\n").into_bytes(),
            customers: if from.is_empty() {
                Vec::new()
            } else {
                customers
            },
        }
    };
    let (inc, out) = (Direction::Incoming, Direction::Outgoing);
    let us = ["sales@leadline.test"];
    vec![
        mail(1, "INBOX", Some("<1@x>"), inc, "new1@x.example", &us),
        mail(2, "INBOX", Some("<2@x>"), inc, "New1@X.example", &us),
        mail(3, "INBOX", Some("<3@x>"), inc, "karl@kunde.example", &us),
        mail(4, "INBOX", Some("<4@x>"), inc, "karl@kunde.example", &us),
        mail(5, "INBOX", Some("<5@x>"), inc, "carla@kunde.example", &us),
        mail(6, "INBOX", Some("<6@x>"), inc, "carla@kunde.example", &us),
        mail(7, "INBOX", Some("<7@x>"), inc, "spam@junk.example", &us),
        mail(8, "INBOX", Some("<8@x>"), inc, "anna@leadline.test", &us),
        // The same message again in the same folder, then in another one.
        mail(9, "INBOX", Some("<1@x>"), inc, "new1@x.example", &us),
        mail(1, "Archive", Some("<1@x>"), inc, "new1@x.example", &us),
        mail(
            10,
            "INBOX",
            Some("<10@x>"),
            out,
            "sales@leadline.test",
            &["new2@x.example", "new1@x.example", "carla@kunde.example"],
        ),
        mail(11, "INBOX", Some("<11@x>"), inc, "new2@x.example", &us),
        mail(12, "INBOX", None, inc, "new3@x.example", &us),
        mail(13, "INBOX", None, inc, "new3@x.example", &us),
        mail(14, "INBOX", Some("<14@x>"), inc, "", &us),
        // A folder position taken by message 1.
        mail(1, "INBOX", Some("<15@x>"), inc, "new4@x.example", &us),
        mail(16, "INBOX", Some("<16@x>"), inc, "not an address", &us),
    ]
}

/// What the intake did with each message, in words without ids.
async fn mail_story(store: &Store, outcomes: &[EmailOutcome]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut story = Vec::new();
    for outcome in outcomes {
        let mut line = format!("{outcome:?}");
        if let Some(id) = &outcome.email {
            let email = store.get_email(id).await.unwrap();
            line.push_str(&format!(
                " | {} | {} | {:?} | seen {} | {:?}",
                email.crm_action,
                email.crm_reason,
                email.entities,
                email.seen,
                email.completed_at.is_some()
            ));
        }
        for entity in &outcome.created {
            let record = store.get_entity(entity).await.unwrap();
            line.push_str(&format!(
                " | {} {:?} {:?} {:?} {:?}",
                record.name, record.responsible, record.customer, record.deal, record.emails
            ));
        }
        story.push(without_ids(&line, &mut seen));
    }
    story
}

/// The intake decides a batch exactly as it would decide its messages one at a time: the
/// batch's writes are planned up front, so each message must see what the ones before
/// it created (leads, contacts, deals), the activity times they moved and the queue
/// turns they took.
async fn mail_batch_decides_as_one_message_at_a_time(one: &Store, batch: &Store, mode: CrmMode) {
    // Then the folder again after a UIDVALIDITY change: stored messages move, those
    // without a Message-ID come in again.
    let mailbox = mail_setup(one, mode).await;
    let mut outcomes = Vec::new();
    for email in mail_batch(&mailbox, 7)
        .into_iter()
        .chain(mail_batch(&mailbox, 8))
    {
        let one_message = std::slice::from_ref(&email);
        outcomes.extend(one.ingest_emails(one_message).await.unwrap());
    }
    let singly = mail_story(one, &outcomes).await;

    let mailbox = mail_setup(batch, mode).await;
    let mut outcomes = batch.ingest_emails(&mail_batch(&mailbox, 7)).await.unwrap();
    outcomes.extend(batch.ingest_emails(&mail_batch(&mailbox, 8)).await.unwrap());
    let together = mail_story(batch, &outcomes).await;
    for (n, (a, b)) in singly.iter().zip(&together).enumerate() {
        assert_eq!(
            a, b,
            "message {n}: one at a time (left) and in a batch (right)"
        );
    }
    assert_eq!(singly.len(), together.len());
    assert!(singly.iter().any(|l| l.contains("repeated")), "{singly:#?}");
    assert!(singly.iter().any(|l| l.contains("created")), "{singly:#?}");

    // The batch is idempotent: again, everything is a replay.
    let again = batch.ingest_emails(&mail_batch(&mailbox, 8)).await.unwrap();
    assert!(again.iter().all(|o| o.email.is_none()), "{again:?}");
}

async fn sqlite_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    (dir, store)
}

#[tokio::test]
async fn mail_batch_decides_as_one_message_at_a_time_sqlite() {
    for mode in [CrmMode::Classic, CrmMode::Simple] {
        let (_one_dir, one) = sqlite_store().await;
        let (_batch_dir, batch) = sqlite_store().await;
        mail_batch_decides_as_one_message_at_a_time(&one, &batch, mode).await;
    }
}

#[tokio::test]
async fn mail_batch_decides_as_one_message_at_a_time_postgres() {
    for mode in [CrmMode::Classic, CrmMode::Simple] {
        let server = PgServer::shared();
        let connect = |name: String| async move {
            let store = Store::connect(&server.create_database(&name).await)
                .await
                .unwrap();
            store.migrate().await.unwrap();
            store
        };
        let one = connect(format!("mail_one_{mode}")).await;
        let batch = connect(format!("mail_batch_{mode}")).await;
        mail_batch_decides_as_one_message_at_a_time(&one, &batch, mode).await;
    }
}

/// A number with a queue of one agent, for the call batches below.
async fn call_line(store: &Store) -> UserId {
    let anna = store
        .create_user(NewUser {
            name: "anna".to_owned(),
            email: "anna@leadline.test".to_owned(),
            role: Role::Agent,
            extension: None,
            phones: Vec::new(),
            sip: None,
            password_hash: None,
            sip_digest: None,
        })
        .await
        .unwrap();
    let queue = store
        .create_queue("Sales", std::slice::from_ref(&anna.id), &Default::default())
        .await
        .unwrap();
    store
        .create_number(
            &NumberSettings {
                id: NumberId::from("line".to_owned()),
                number: "+4930901820".to_owned(),
                default_country: "DE".parse().unwrap(),
                queue: Some(queue.id),
                lead_creation: LeadCreation::Automatic,
                directions: Directions::Both,
                route_to_responsible: true,
                ring_timeout_s: 20,
                source: "CALL".to_owned(),
                change_responsible_on_transfer: false,
                trust: Default::default(),
            },
            None,
        )
        .await
        .unwrap();
    anna.id
}

fn call_event(call_id: &str, event: CallEventKind, from: &str, at: i64) -> CallEvent {
    CallEvent {
        call_id: call_id.to_owned(),
        event,
        direction: Direction::Incoming,
        from: from.to_owned(),
        to: "+4930901820".to_owned(),
        user: None,
        outcome: None,
        at,
        diverted_from: None,
        verstat: None,
    }
}

async fn lead_count(store: &Store) -> usize {
    store
        .list_entities(
            EntityKind::Lead,
            &EntityFilter::default(),
            &Page {
                limit: 100,
                after: None,
            },
        )
        .await
        .unwrap()
        .items
        .len()
}

/// T1, M7 and the intake's exactly-once rule inside one group commit: a batch holding
/// an event twice, two calls of one new caller, an event applied before and the opening
/// of a call another of its events logged already (a lost race, replayed alone) gives
/// each job the answer it gets alone, and its neighbours are applied.
async fn m7_t1_one_intake_batch_with_repeats_and_a_lost_race(store: &Store) {
    call_line(store).await;
    let ringing = |id: &str, from: &str| call_event(id, CallEventKind::Ringing, from, 1_000);
    let before = store
        .apply_openings_as_one_batch(&[ringing("before", "030 5550001")])
        .await
        .unwrap();
    assert!(matches!(before[..], [Ok(Opening::Fresh(_))]), "{before:?}");
    // Opened by its `ended` (no `ringing` came first): its `ringing` now loses the race.
    store
        .apply_call_event(&call_event(
            "ended-first",
            CallEventKind::Ended,
            "030 5550002",
            2_000,
        ))
        .await
        .unwrap();

    let results = store
        .apply_openings_as_one_batch(&[
            ringing("a", "030 5550003"),
            ringing("a", "030 5550003"),
            ringing("b", "+49 30 5550003"),
            ringing("before", "030 5550001"),
            ringing("c", "030 5550004"),
        ])
        .await
        .unwrap();
    let fresh = |results: &[Result<Opening, StoreError>], i: usize| match &results[i] {
        Ok(Opening::Fresh(outcome)) => outcome.clone(),
        other => panic!("job {i}: {other:?}"),
    };
    let a = fresh(&results, 0);
    assert!(
        matches!(results[1], Ok(Opening::Repeated)),
        "{:?}",
        results[1]
    );
    let b = fresh(&results, 2);
    assert!(
        matches!(results[3], Ok(Opening::Repeated)),
        "{:?}",
        results[3]
    );
    let c = fresh(&results, 4);
    // One lead for the new number, created by the first call; the second is its caller.
    assert_eq!(a.answer.created.len(), 1, "{a:?}");
    assert!(b.answer.created.is_empty(), "{b:?}");
    assert_eq!(b.answer.matches[0].entity, a.answer.created[0]);
    assert_eq!(c.answer.created.len(), 1, "{c:?}");
    // What the answers said is what was stored.
    assert_eq!(store.call_by_call_id("b").await.unwrap().unwrap(), b.call);

    // A lost race fails the batch, which is replayed job by job: the neighbour is
    // applied, the loser is told to look again.
    let results = store
        .apply_openings_as_one_batch(&[
            ringing("ended-first", "030 5550002"),
            ringing("d", "030 5550005"),
        ])
        .await
        .unwrap();
    assert!(
        matches!(results[0], Ok(Opening::LostRace)),
        "{:?}",
        results[0]
    );
    fresh(&results, 1);
    // before, ended-first, a, c, d: five leads, and each call logged once.
    assert_eq!(lead_count(store).await, 5);
    for call_id in ["before", "ended-first", "a", "b", "c", "d"] {
        assert!(
            store.call_by_call_id(call_id).await.unwrap().is_some(),
            "{call_id}"
        );
    }
}

#[tokio::test]
async fn m7_t1_one_intake_batch_with_repeats_and_a_lost_race_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    m7_t1_one_intake_batch_with_repeats_and_a_lost_race(&store).await;
}

#[tokio::test]
async fn m7_t1_one_intake_batch_with_repeats_and_a_lost_race_postgres() {
    let url = PgServer::shared().create_database("intake_batch").await;
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    m7_t1_one_intake_batch_with_repeats_and_a_lost_race(&store).await;
}

/// T13 and exactly-once per (call, event) inside one group commit of later steps: a
/// call's `answered`, its repeat and its `ended` in one batch apply in order; a step of
/// a call not in the log writes nothing; media of an unknown call fails alone; legs
/// that cannot be read fail alone (the batch is replayed step by step) while their
/// neighbours are applied.
async fn t13_one_step_batch_with_repeats_and_failing_steps(store: &Store) {
    let anna = call_line(store).await;
    for (id, from) in [("talk", "030 5550011"), ("missed", "030 5550012")] {
        store
            .apply_call_event(&call_event(id, CallEventKind::Ringing, from, 1_000))
            .await
            .unwrap();
    }
    let mut answered = call_event("talk", CallEventKind::Answered, "030 5550011", 2_000);
    answered.user = Some(anna.clone());
    let legs = |call_id: &str, legs: &str| StepJob::Legs {
        call_id: call_id.to_owned(),
        legs: legs.to_owned(),
    };
    let steps = vec![
        StepJob::Event(answered.clone()),
        StepJob::Event(answered),
        StepJob::Event(call_event(
            "talk",
            CallEventKind::Ended,
            "030 5550011",
            5_000,
        )),
        StepJob::Event(call_event(
            "missed",
            CallEventKind::Ended,
            "030 5550012",
            3_000,
        )),
        StepJob::Event(call_event(
            "nowhere",
            CallEventKind::Ended,
            "030 5550013",
            3_000,
        )),
        StepJob::Media {
            call_id: "nowhere".to_owned(),
            stats: None,
            recording: None,
        },
        legs("talk", "[]"),
    ];
    let results = store.apply_steps_as_one_batch(steps).await.unwrap();
    let applied = |results: &[Result<StepDone, StoreError>], i: usize| match &results[i] {
        Ok(StepDone::Event(EventStep::Applied(outcome))) => outcome.clone(),
        other => panic!("step {i}: {other:?}"),
    };
    let first = applied(&results, 0);
    assert_eq!(first.call.answered_by, Some(anna.clone()));
    assert!(
        matches!(results[1], Ok(StepDone::Event(EventStep::Repeated))),
        "{:?}",
        results[1]
    );
    let ended = applied(&results, 2);
    assert_eq!(ended.call.outcome, Some(CallOutcome::Answered));
    assert_eq!(ended.call.duration_s(), Some(3));
    // A later step repeats the call's first answer (the intake's).
    assert_eq!(ended.answer, first.answer);
    assert!(!first.answer.route.is_empty());
    assert_eq!(applied(&results, 3).call.outcome, Some(CallOutcome::Missed));
    assert!(
        matches!(results[4], Ok(StepDone::Event(EventStep::NotLogged))),
        "{:?}",
        results[4]
    );
    assert!(
        matches!(results[5], Err(StoreError::NotFound { .. })),
        "{:?}",
        results[5]
    );
    assert!(
        matches!(results[6], Ok(StepDone::Written)),
        "{:?}",
        results[6]
    );

    // Legs that cannot be read fail the batch, which is replayed step by step: they
    // fail alone.
    let results = store
        .apply_steps_as_one_batch(vec![
            legs("missed", "not json"),
            StepJob::Media {
                call_id: "missed".to_owned(),
                stats: Some("{\"packets\": 1}".to_owned()),
                recording: None,
            },
        ])
        .await
        .unwrap();
    assert!(results[0].is_err(), "{:?}", results[0]);
    assert!(
        matches!(results[1], Ok(StepDone::Written)),
        "{:?}",
        results[1]
    );

    // What the answers said is what was stored.
    let talk = store.call_by_call_id("talk").await.unwrap().unwrap();
    assert_eq!(talk, ended.call);
    let missed = store.call_by_call_id("missed").await.unwrap().unwrap();
    assert_eq!(missed.outcome, Some(CallOutcome::Missed));
    assert!(missed.legs.is_empty());
    assert_eq!(missed.media, Some(serde_json::json!({"packets": 1})));
    assert!(store.call_by_call_id("nowhere").await.unwrap().is_none());
    // Applied once: the same `ended` again changes nothing.
    let again = store
        .apply_call_event(&call_event(
            "missed",
            CallEventKind::Ended,
            "030 5550012",
            9_000,
        ))
        .await
        .unwrap();
    assert!(again.repeated);
    assert_eq!(again.call.ended_at, Some(3_000));
}

#[tokio::test]
async fn t13_one_step_batch_with_repeats_and_failing_steps_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    t13_one_step_batch_with_repeats_and_failing_steps(&store).await;
}

#[tokio::test]
async fn t13_one_step_batch_with_repeats_and_failing_steps_postgres() {
    let url = PgServer::shared().create_database("step_batch").await;
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    t13_one_step_batch_with_repeats_and_failing_steps(&store).await;
}
