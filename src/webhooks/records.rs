//! Announcing what the mail intake wrote: `email.ingested` for each stored message (as
//! `GET /emails/{id}` shows it, so without the raw message), and `*.created` /
//! `activity.created` for the entities and activity it made. Who is told follows who may
//! read the message (E1, A2): [`mail_audience`] decides, the rest reads and publishes.
//! Also the contacts vCards attached to collected mail made ([`announce_cards`], E3),
//! what a contact import wrote ([`announce_import`]), in bulk, and what the call
//! journal's replay wrote ([`announce_replayed`]).
//! Nothing is read for an event no webhook follows, and a failed read is only logged:
//! the message is stored either way.

use crate::crm::model::{EntityKind, EntityRef, MailboxKind, UserId};
use crate::events::{EventBus, Others, RecordUpdate};
use crate::store::{
    ActivityFilter, EmailOutcome, EmailRecord, EventOutcome, MailboxRecord, Page, Store, StoreError,
};

/// The mailbox a message came from, as far as who may read it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A personal mailbox and its owner.
    Personal(Option<UserId>),
    /// A company mailbox and the members of its queue.
    Company(Vec<UserId>),
    /// The forward address (E16), or a mailbox removed since.
    Forward,
}

/// E1, A2: who is told of a stored message: its personal mailbox's owner always; on the
/// CRM, who may see every entity it is on; on no entity, a company mailbox's queue and
/// the admins, the forward address's admins, and of a personal mailbox's nobody else.
pub fn mail_audience(source: &Source, on_crm: bool) -> (Vec<UserId>, Others) {
    let readers = match source {
        Source::Personal(owner) => owner.iter().cloned().collect(),
        Source::Company(members) if !on_crm => members.clone(),
        _ => Vec::new(),
    };
    let others = match source {
        _ if on_crm => Others::ByEntities,
        Source::Personal(_) => Others::Nobody,
        Source::Company(_) | Source::Forward => Others::Admins,
    };
    (readers, others)
}

/// E3: how a contact made of a vCard in a mailbox's mail is announced: to whoever may
/// read that mail once it is on the CRM (E1, [`mail_audience`]): a personal mailbox's
/// owner, and who may see the contact (A1).
pub fn card_update(
    source: &Source,
    data: serde_json::Value,
    responsible: Option<UserId>,
) -> RecordUpdate {
    let (readers, others) = mail_audience(source, true);
    RecordUpdate {
        event: "contact.created",
        data,
        responsibles: vec![responsible],
        readers,
        others,
    }
}

/// E3: tells this node's webhooks of the contacts (`contact.created`) made of vCards in
/// `mailbox`'s mail, as `GET /contacts/{id}` shows them ([`card_update`]). Companies made
/// of cards are not announced, as for an import. A failed read is only logged: the
/// contacts stand.
pub async fn announce_cards(
    store: &Store,
    events: &EventBus,
    mailbox: &MailboxRecord,
    created: &[EntityRef],
) {
    let ids: Vec<String> = created
        .iter()
        .filter(|e| e.kind == EntityKind::Contact)
        .map(|e| e.id.clone())
        .collect();
    if ids.is_empty() || !super::followed(store, "contact.created").await {
        return;
    }
    let read = async {
        let source = mailbox_source(store, mailbox).await?;
        let mut updates = Vec::new();
        for record in store.get_entities(EntityKind::Contact, &ids).await? {
            let responsible = record.responsible.clone();
            let data = serde_json::to_value(crate::http::entities::Entity::from(record))
                .map_err(|e| StoreError::Corrupt(format!("an entity as JSON: {e}")))?;
            updates.push(card_update(&source, data, responsible));
        }
        Ok::<_, StoreError>(updates)
    };
    match read.await {
        Ok(updates) => updates.into_iter().for_each(|u| events.publish_record(u)),
        Err(e) => {
            tracing::warn!(error = %e, mailbox = %mailbox.id, "webhooks: cannot read the contacts of vCards")
        }
    }
}

/// Tells this node's webhooks what the intake did with these messages; a message
/// collected before (`email: None`) was announced then.
pub async fn announce_mail(store: &Store, events: &EventBus, outcomes: &[EmailOutcome]) {
    for outcome in outcomes {
        let Some(id) = &outcome.email else { continue };
        for entity in &outcome.created {
            if let Some(event) = super::created_event(entity.kind) {
                crate::http::entities::announce_ref(store, events, event, entity).await;
            }
        }
        if let Err(e) = announce_message(store, events, id, outcome.activity.as_deref()).await {
            tracing::warn!(error = %e, email = %id, "webhooks: cannot read a stored message");
        }
    }
}

/// Announces what a contact import wrote: `contact.created` for each contact it created,
/// `entity.updated` for each it completed, to the webhooks whose owners may see them (A1).
/// Only the events a webhook follows are read, in bulk, and written straight to the
/// outbox in a few statements: through the event bus, a large file's records would
/// outrun the dispatcher and be dropped. The dispatcher sends them at its next look at
/// the outbox (within a second). A failed read or write is logged: the import stands.
pub async fn announce_import(store: &Store, created: &[EntityRef], updated: &[EntityRef]) {
    if let Err(e) = write_import(store, created, updated).await {
        tracing::error!(error = %e, "webhooks: could not write the deliveries of an import");
    }
}

/// Announces what the intake of a call logged by the journal's replay wrote, exactly as
/// a live call's intake is (`http::calls::intake_records`, A1), but straight to the
/// outbox: at start the replay runs before the webhook task follows the event bus, and
/// it may log many calls at once, which would outrun the dispatcher. A failed read or
/// write is logged: the call stands.
pub async fn announce_replayed(store: &Store, outcome: &EventOutcome) {
    let records = crate::http::calls::intake_records(store, outcome).await;
    if records.is_empty() {
        return;
    }
    if let Err(e) = super::delivery::dispatch_records(store, &records).await {
        tracing::error!(error = %e, call_id = %outcome.call.call_id,
            "webhooks: could not write the deliveries of a replayed call");
    }
}

async fn write_import(
    store: &Store,
    created: &[EntityRef],
    updated: &[EntityRef],
) -> Result<(), StoreError> {
    let mut records = Vec::new();
    for (event, entities) in [("contact.created", created), ("entity.updated", updated)] {
        if entities.is_empty() || !super::followed(store, event).await {
            continue;
        }
        for &kind in EntityKind::ALL {
            let ids: Vec<String> = entities
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            for record in store.get_entities(kind, &ids).await? {
                let responsible = record.responsible.clone();
                let data = serde_json::to_value(crate::http::entities::Entity::from(record))
                    .map_err(|e| StoreError::Corrupt(format!("an entity as JSON: {e}")))?;
                records.push(RecordUpdate::on_entities(event, data, vec![responsible]));
            }
        }
    }
    super::delivery::dispatch_records(store, &records).await?;
    Ok(())
}

async fn announce_message(
    store: &Store,
    events: &EventBus,
    id: &str,
    activity: Option<&str>,
) -> Result<(), StoreError> {
    let ingested = super::followed(store, "email.ingested").await;
    let activity = match activity {
        Some(a) if super::followed(store, "activity.created").await => Some(a),
        _ => None,
    };
    if !ingested && activity.is_none() {
        return Ok(());
    }
    let email = store.get_email(id).await?;
    let responsibles = responsibles(store, &email.entities).await?;
    if ingested {
        let on_crm = email.activity.is_some() && !email.entities.is_empty();
        let (readers, others) = mail_audience(&source(store, &email).await?, on_crm);
        let data = serde_json::to_value(crate::http::emails::Email::from(email.clone()))
            .map_err(|e| StoreError::Corrupt(format!("an e-mail as JSON: {e}")))?;
        events.publish_record(RecordUpdate {
            event: "email.ingested",
            data,
            responsibles: responsibles.clone(),
            readers,
            others,
        });
    }
    if let Some(activity) = activity {
        match find_activity(store, email.entities.first(), activity).await? {
            Some(data) => events.publish_record(RecordUpdate::on_entities(
                "activity.created",
                data,
                responsibles,
            )),
            None => {
                tracing::warn!(%activity, "webhooks: a message's activity is not on its entity's timeline")
            }
        }
    }
    Ok(())
}

async fn responsibles(
    store: &Store,
    entities: &[EntityRef],
) -> Result<Vec<Option<UserId>>, StoreError> {
    let map = store.entity_responsibles(entities).await?;
    Ok(entities
        .iter()
        .map(|e| map.get(e).cloned().flatten())
        .collect())
}

async fn source(store: &Store, email: &EmailRecord) -> Result<Source, StoreError> {
    let Some(id) = &email.mailbox else {
        return Ok(Source::Forward);
    };
    match store.get_mailbox(id).await {
        Ok(mailbox) => mailbox_source(store, &mailbox).await,
        Err(StoreError::NotFound { .. }) => Ok(Source::Forward),
        Err(e) => Err(e),
    }
}

/// Whose a mailbox's mail is: its owner's, or its queue's members'.
async fn mailbox_source(store: &Store, mailbox: &MailboxRecord) -> Result<Source, StoreError> {
    Ok(match mailbox.kind {
        MailboxKind::Personal => Source::Personal(mailbox.owner.clone()),
        MailboxKind::Company => Source::Company(match &mailbox.queue {
            Some(queue) => store
                .queue_state(queue)
                .await?
                .map(|q| q.members)
                .unwrap_or_default(),
            None => Vec::new(),
        }),
    })
}

/// The message's activity as `GET /activities` lists it, found on the timeline of its
/// first entity, where it is the newest or close to it.
async fn find_activity(
    store: &Store,
    on: Option<&EntityRef>,
    activity: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    let Some(entity) = on else { return Ok(None) };
    let filter = ActivityFilter {
        entity: Some(entity.clone()),
        ..ActivityFilter::default()
    };
    let page = Page {
        limit: 20,
        after: None,
    };
    let Some(record) = store
        .list_activities(&filter, &page)
        .await?
        .items
        .into_iter()
        .find(|a| a.id == activity)
    else {
        return Ok(None);
    };
    serde_json::to_value(crate::http::matching::Activity::from(record))
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("an activity as JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId(id.into())
    }

    #[test]
    fn e1_a_personal_mailboxs_mail_on_no_entity_is_its_owners_alone() {
        let source = Source::Personal(Some(user("anna")));
        assert_eq!(
            mail_audience(&source, false),
            (vec![user("anna")], Others::Nobody)
        );
        assert_eq!(
            mail_audience(&source, true),
            (vec![user("anna")], Others::ByEntities),
            "on the CRM, also who may see its entities"
        );
    }

    #[test]
    fn e3_a_vcards_contact_goes_to_the_mailboxs_owner_and_who_may_see_it() {
        let data = serde_json::json!({"id": "c1"});
        let personal = card_update(
            &Source::Personal(Some(user("anna"))),
            data.clone(),
            Some(user("anna")),
        );
        assert_eq!(personal.event, "contact.created");
        assert_eq!(personal.readers, [user("anna")]);
        assert_eq!(personal.others, Others::ByEntities);
        assert_eq!(personal.responsibles, [Some(user("anna"))]);
        let company = card_update(
            &Source::Company(vec![user("anna"), user("ben")]),
            data,
            None,
        );
        assert!(
            company.readers.is_empty(),
            "not the whole queue: who may see the contact"
        );
        assert_eq!(company.others, Others::ByEntities);
    }

    #[test]
    fn e1_company_and_forwarded_mail_on_no_entity_is_for_the_queue_and_admins() {
        let queue = Source::Company(vec![user("anna"), user("ben")]);
        assert_eq!(
            mail_audience(&queue, false),
            (vec![user("anna"), user("ben")], Others::Admins)
        );
        assert_eq!(
            mail_audience(&queue, true),
            (Vec::new(), Others::ByEntities)
        );
        assert_eq!(
            mail_audience(&Source::Forward, false),
            (Vec::new(), Others::Admins)
        );
        assert_eq!(
            mail_audience(&Source::Forward, true),
            (Vec::new(), Others::ByEntities)
        );
    }
}
