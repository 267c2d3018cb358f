//! The intake of collected mail (E3–E8, E13, E14, M6–M8) for a batch of messages in one
//! transaction, with a few statements per batch instead of a dozen per message.
//!
//! First the batch is read, for all its messages at once: the copies stored before (by
//! folder position and by Message-ID), the activities of its Message-IDs, the matcher's
//! view of every customer address, the companies and open deals of every candidate, and
//! the queues' rotations. Then each message is decided in order by the pure
//! `crm::mail::decide_mail`, against what was read plus what the messages before it in
//! the batch did — the leads, contacts and deals they created, the activity times they
//! moved, the queue turns they took — so a batch decides exactly as its messages would
//! one after the other. Then everything is written with multi-row statements, one per
//! table (a few for the mail store's raw bytes).
//!
//! A concurrent writer that got somewhere first (a folder position, an identifier, the
//! activity of a Message-ID, queue turns) shows in the database's answers: the batch is
//! rolled back and read again, and after a few tries the conflict is reported.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::entities::{Tx, table};
use super::mail::{
    EmailOutcome, FolderPosition, IncomingEmail, MailOrigin, email_subject, forward_policy,
    load_policy, write_checkpoint,
};
use super::matching::{customer_contexts, match_all};
use super::rows::{Cell, EntityRows, Rows, placeholders};
use super::{Result, Store, StoreError, col, flag, json_list, now_ms};
use crate::crm::decision::{Considered, DecisionRecord};
use crate::crm::intake::{
    CustomerContext, DealTarget, Decision, NewEntities, OpenDeal, PipelineEntry,
};
use crate::crm::mail::{MailFacts, MailIntakeInput, MailboxPolicy, decide_mail};
use crate::crm::model::{
    CompanyId, ContactId, CrmAction, CrmSettings, DealId, Direction, EntityKind, EntityRef, Millis,
    QueueId, SimpleCreates, UserId,
};
use crate::crm::queue::QueueState;
use crate::matcher::{
    Candidate, Exclusions, Identifier, MatchOutcome, MatchStatus, parse_email, resolve,
};

/// Tries of a batch that keeps losing races before the conflict is reported.
const ATTEMPTS: usize = 3;
/// Values per `IN (…)` list, under the statement limits of both databases.
const IN_CHUNK: usize = 500;

/// What a message's intake reads besides the message: its mailbox's policy and the
/// account's configuration.
pub(super) struct IntakeSettings<'a> {
    pub crm: &'a CrmSettings,
    pub queues: &'a HashMap<QueueId, Vec<UserId>>,
    pub pipelines: &'a [PipelineEntry],
}

/// A message's own facts that its activity carries.
pub(super) struct EmailFacts<'a> {
    pub direction: Direction,
    pub subject: &'a str,
    pub message_id: Option<&'a str>,
    pub seen: bool,
    pub received_at: Millis,
}

/// `leadline_mail_stage_seconds{stage}`: the store's part of a batch's time.
fn stage_time(stage: &'static str, spent: Duration) {
    metrics::histogram!("leadline_mail_stage_seconds", "stage" => stage)
        .record(spent.as_secs_f64());
}

/// A stored copy of a message in one mailbox folder: the row and its UIDVALIDITY.
#[derive(Debug, Clone)]
struct Copy {
    row: CopyRow,
    uid_validity: Option<i64>,
    uid: Option<i64>,
}

#[derive(Debug, Clone)]
enum CopyRow {
    Stored(String),
    /// Inserted by this batch: an index into [`Planned::emails`].
    New(usize),
}

/// (Message-ID, mailbox or "", folder or ""): where the same message counts as repeated.
type CopyKey = (String, String, String);
/// (mailbox, folder, UIDVALIDITY, UID).
type Position = (String, String, i64, i64);

fn position_of(origin: &MailOrigin) -> Option<Position> {
    match origin {
        MailOrigin::Folder {
            mailbox,
            folder,
            uid_validity,
            uid,
        } => Some((mailbox.clone(), folder.clone(), *uid_validity, *uid)),
        _ => None,
    }
}

/// (mailbox, folder, UIDVALIDITY, UID) as the `emails` columns hold them.
fn columns_of(origin: &MailOrigin) -> (Option<&str>, Option<&str>, Option<i64>, Option<i64>) {
    match origin {
        MailOrigin::Folder {
            mailbox,
            folder,
            uid_validity,
            uid,
        } => (
            Some(mailbox.as_str()),
            Some(folder.as_str()),
            Some(*uid_validity),
            Some(*uid),
        ),
        _ => (None, None, None, None),
    }
}

/// What the database holds for a batch, read before anything is decided.
#[derive(Debug, Default)]
pub(super) struct Looked {
    copies: HashMap<CopyKey, Copy>,
    positions: HashSet<Position>,
    /// The activity of each Message-ID that has one (one per Message-ID).
    activities: HashMap<String, String>,
    /// The matcher's outcome for each customer address, by key.
    matches: HashMap<String, MatchOutcome>,
    /// Company and open deals of every candidate of those addresses.
    contexts: HashMap<EntityRef, CustomerContext>,
    /// The rotation of every queue the batch may hand work to (T9).
    rotations: HashMap<QueueId, i64>,
}

impl Looked {
    /// Reads what deciding `emails` needs.
    pub(super) async fn for_emails(
        tx: &mut Tx<'_>,
        emails: &[IncomingEmail],
        queues: &[&QueueId],
    ) -> Result<Self> {
        let mut looked = Self::default();
        looked.read_copies(tx, emails).await?;
        looked.read_positions(tx, emails).await?;
        looked.read_activities(tx, emails).await?;
        let customers: Vec<&str> = emails
            .iter()
            .flat_map(|e| e.customers.iter().map(String::as_str))
            .collect();
        looked.read_matches(tx, &customers).await?;
        looked.read_rotations(tx, queues).await?;
        Ok(looked)
    }

    /// Reads what deciding one stored message by hand (E12) needs.
    pub(super) async fn for_customers(
        tx: &mut Tx<'_>,
        customers: &[String],
        queues: &[&QueueId],
    ) -> Result<Self> {
        let mut looked = Self::default();
        let customers: Vec<&str> = customers.iter().map(String::as_str).collect();
        looked.read_matches(tx, &customers).await?;
        looked.read_rotations(tx, queues).await?;
        Ok(looked)
    }

    async fn read_copies(&mut self, tx: &mut Tx<'_>, emails: &[IncomingEmail]) -> Result<()> {
        let ids = message_ids(emails);
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT id, message_id, mailbox_id, folder, uid_validity, uid FROM emails \
                 WHERE message_id IN ({}) ORDER BY id",
                placeholders(1, chunk.len())
            );
            // Assembled from constants and placeholders only.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&mut **tx).await? {
                let key = (
                    col::<String>(&row, "message_id")?,
                    col::<Option<String>>(&row, "mailbox_id")?.unwrap_or_default(),
                    col::<Option<String>>(&row, "folder")?.unwrap_or_default(),
                );
                let copy = Copy {
                    row: CopyRow::Stored(col(&row, "id")?),
                    uid_validity: col(&row, "uid_validity")?,
                    uid: col(&row, "uid")?,
                };
                // The oldest copy, as a look-up of one would find first.
                self.copies.entry(key).or_insert(copy);
            }
        }
        Ok(())
    }

    async fn read_positions(&mut self, tx: &mut Tx<'_>, emails: &[IncomingEmail]) -> Result<()> {
        let mut folders: HashMap<(&str, &str, i64), Vec<i64>> = HashMap::new();
        for email in emails {
            if let MailOrigin::Folder {
                mailbox,
                folder,
                uid_validity,
                uid,
            } = &email.origin
            {
                folders
                    .entry((mailbox, folder, *uid_validity))
                    .or_default()
                    .push(*uid);
            }
        }
        for ((mailbox, folder, validity), uids) in folders {
            for chunk in uids.chunks(IN_CHUNK) {
                let sql = format!(
                    "SELECT uid FROM emails WHERE mailbox_id = $1 AND folder = $2 \
                     AND uid_validity = $3 AND uid IN ({})",
                    placeholders(4, chunk.len())
                );
                // Assembled from constants and placeholders only.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(mailbox)
                    .bind(folder)
                    .bind(validity);
                for uid in chunk {
                    query = query.bind(*uid);
                }
                for row in query.fetch_all(&mut **tx).await? {
                    self.positions.insert((
                        mailbox.to_owned(),
                        folder.to_owned(),
                        validity,
                        col(&row, "uid")?,
                    ));
                }
            }
        }
        Ok(())
    }

    async fn read_activities(&mut self, tx: &mut Tx<'_>, emails: &[IncomingEmail]) -> Result<()> {
        let ids = message_ids(emails);
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT id, email_message_id FROM activities WHERE email_message_id IN ({})",
                placeholders(1, chunk.len())
            );
            // Assembled from constants and placeholders only.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&mut **tx).await? {
                self.activities
                    .insert(col(&row, "email_message_id")?, col(&row, "id")?);
            }
        }
        Ok(())
    }

    /// M1–M8 for every address that parses, and the context of every candidate: the
    /// best one may change within the batch as activities move the ranking (M8).
    async fn read_matches(&mut self, tx: &mut Tx<'_>, customers: &[&str]) -> Result<()> {
        let mut seen = HashSet::new();
        let identifiers: Vec<Identifier> = customers
            .iter()
            .filter_map(|a| parse_email(a).ok().map(Identifier::Email))
            .filter(|i| seen.insert(i.key().to_owned()))
            .collect();
        let mut candidates = Vec::new();
        for chunk in identifiers.chunks(IN_CHUNK / 2) {
            for outcome in match_all(tx, chunk).await? {
                candidates.extend(outcome.matches.iter().cloned());
                self.matches
                    .insert(outcome.identifier.key().to_owned(), outcome);
            }
        }
        let mut seen = HashSet::new();
        candidates.retain(|c| seen.insert(c.entity.clone()));
        for chunk in candidates.chunks(IN_CHUNK) {
            self.contexts.extend(customer_contexts(tx, chunk).await?);
        }
        Ok(())
    }

    async fn read_rotations(&mut self, tx: &mut Tx<'_>, queues: &[&QueueId]) -> Result<()> {
        if queues.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT id, rotation FROM queues WHERE id IN ({})",
            placeholders(1, queues.len())
        );
        // Assembled from constants and placeholders only.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in queues {
            query = query.bind(id.as_str());
        }
        for row in query.fetch_all(&mut **tx).await? {
            self.rotations
                .insert(QueueId(col(&row, "id")?), col(&row, "rotation")?);
        }
        Ok(())
    }
}

/// An entity a message creates; its last activity is known once the batch is decided.
#[derive(Debug)]
struct NewRow {
    entity: EntityRef,
    name: String,
    responsible: Option<String>,
    source: String,
    now: Millis,
    /// Leads: the customer of a repeat lead (E14).
    customer: Option<String>,
    /// Deals: contact, company, pipeline, stage.
    deal: Option<(Option<String>, Option<String>, DealTarget)>,
    identifier: Option<Identifier>,
}

/// A message of the batch going into the mail store.
#[derive(Debug)]
struct NewEmail {
    /// Index into the batch.
    index: usize,
    id: String,
    now: Millis,
    uid_validity: Option<i64>,
    uid: Option<i64>,
    action: String,
    reason: String,
    created: Vec<EntityRef>,
    activity: Option<String>,
    /// `None` for a copy that joined the activity of a message collected before.
    record: Option<DecisionRecord>,
}

/// The decisions of a batch: what the messages before each one did, and what to write.
pub(super) struct Planner<'a> {
    looked: &'a Looked,
    settings: &'a IntakeSettings<'a>,
    /// Entities the batch created, by the address they carry (M7: a later message from
    /// the address finds them).
    created_by_key: HashMap<String, Candidate>,
    created: HashSet<EntityRef>,
    /// Last activity times the batch set.
    active: HashMap<EntityRef, Millis>,
    /// Open deals the batch created, by their contact or company.
    deals: HashMap<EntityRef, Vec<OpenDeal>>,
    /// Queue rotations with the turns the batch took so far.
    rotations: HashMap<QueueId, i64>,
    turns: HashMap<QueueId, i64>,
    /// (address, owner) of every identifier the batch claims (M7).
    claims: Vec<(String, EntityRef, Millis)>,
    entities: Vec<NewRow>,
    /// (id, direction, subject, completed, responsible, matched, reason, created, completed
    /// at, Message-ID)
    activities: Vec<Vec<Cell>>,
    links: Vec<(String, EntityRef)>,
}

/// What one message's decisions did: its activity, what it created, why.
pub(super) struct Decided {
    pub activity: Option<String>,
    pub created: Vec<EntityRef>,
    pub reason: String,
    pub record: DecisionRecord,
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl<'a> Planner<'a> {
    /// `rotations`: the queues' rotations to start from, when others took turns since
    /// they were read.
    pub(super) fn new(
        looked: &'a Looked,
        settings: &'a IntakeSettings<'a>,
        rotations: Option<&HashMap<QueueId, i64>>,
    ) -> Self {
        Self {
            looked,
            settings,
            created_by_key: HashMap::new(),
            created: HashSet::new(),
            active: HashMap::new(),
            deals: HashMap::new(),
            rotations: rotations.unwrap_or(&looked.rotations).clone(),
            turns: HashMap::new(),
            claims: Vec::new(),
            entities: Vec::new(),
            activities: Vec::new(),
            links: Vec::new(),
        }
    }

    /// The matcher's outcome for `identifier` now: what was read, with the entities the
    /// batch created and the activity times it moved.
    fn outcome(&self, identifier: &Identifier) -> Result<MatchOutcome> {
        let key = identifier.key();
        let read = self.looked.matches.get(key).ok_or_else(|| {
            StoreError::Corrupt(format!("{key} was not looked up for the mail intake"))
        })?;
        let created = self.created_by_key.get(key);
        let moved = read
            .matches
            .iter()
            .any(|c| self.active.contains_key(&c.entity));
        if read.status == MatchStatus::Excluded || (created.is_none() && !moved) {
            return Ok(read.clone());
        }
        let candidates = read
            .matches
            .iter()
            .chain(created)
            .map(|c| Candidate {
                last_activity_at: self
                    .active
                    .get(&c.entity)
                    .copied()
                    .unwrap_or(c.last_activity_at),
                ..c.clone()
            })
            .collect();
        Ok(resolve(
            identifier.clone(),
            &Exclusions::default(),
            candidates,
        ))
    }

    /// T11/E14: the company and open deals of `best` now.
    fn context(&self, best: &Candidate) -> CustomerContext {
        let mut context = if self.created.contains(&best.entity) {
            CustomerContext::default()
        } else {
            self.looked
                .contexts
                .get(&best.entity)
                .cloned()
                .unwrap_or_default()
        };
        let added = self.deals.get(&best.entity);
        let deal_ref = |d: &OpenDeal| EntityRef::new(EntityKind::Deal, d.id.as_str());
        let moved = context
            .open_deals
            .iter()
            .any(|d| self.active.contains_key(&deal_ref(d)));
        if added.is_none() && !moved {
            return context;
        }
        context
            .open_deals
            .extend(added.into_iter().flatten().cloned());
        for deal in &mut context.open_deals {
            if let Some(at) = self.active.get(&deal_ref(deal)) {
                deal.last_activity_at = *at;
            }
        }
        // As the store lists them: most recently active first.
        context.open_deals.sort_by(|a, b| {
            b.last_activity_at
                .cmp(&a.last_activity_at)
                .then_with(|| b.id.as_str().cmp(a.id.as_str()))
        });
        context
    }

    /// The queue with its rotation as the batch left it (T9).
    fn queue(&self, policy: &MailboxPolicy) -> Option<QueueState> {
        let id = policy.queue.as_ref()?;
        let members = self.settings.queues.get(id)?;
        let rotation = *self.rotations.get(id)?;
        Some(QueueState {
            id: id.clone(),
            members: members.clone(),
            rotation,
        })
    }

    /// Matches every customer address of a message, decides for each, plans what the
    /// decisions create and one activity for the message on every entity involved (E7,
    /// E8: never an activity without an entity).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decide(
        &mut self,
        facts: &EmailFacts<'_>,
        customers: &[String],
        policy: &MailboxPolicy,
        blacklist: &Exclusions,
        by_hand: bool,
        now: Millis,
    ) -> Result<Decided> {
        let mut reasons = Vec::new();
        let mut identifiers = Vec::new();
        let mut raws = Vec::new();
        // Addresses left out before matching, for the decision record.
        let mut skipped: Vec<(Option<Identifier>, Option<&'static str>, String)> = Vec::new();
        let mut seen = HashSet::new();
        for address in customers {
            match parse_email(address) {
                Ok(email) => {
                    let identifier = Identifier::Email(email);
                    if !seen.insert(identifier.key().to_owned()) {
                        continue;
                    }
                    if blacklist.check(&identifier).is_some() {
                        let reason = format!("{address} is on the mailbox's blacklist (E4)");
                        skipped.push((Some(identifier), Some("E4"), reason.clone()));
                        reasons.push(reason);
                        continue;
                    }
                    identifiers.push(identifier);
                    raws.push(address.as_str());
                }
                Err(_) => {
                    let reason = format!("'{address}' is not an e-mail address");
                    skipped.push((None, None, reason.clone()));
                    reasons.push(reason);
                }
            }
        }
        let record_of = |parts: &[Considered<'_>]| {
            let mut record = DecisionRecord::build(parts);
            for (identifier, rule, why) in &skipped {
                record.add_skipped(identifier.as_ref(), *rule, why);
            }
            record
        };
        if identifiers.is_empty() {
            if reasons.is_empty() {
                reasons.push("no customer address on the message".into());
            }
            let reason = reasons.join("; ");
            let record = if skipped.is_empty() {
                DecisionRecord::logged(&[], &reason)
            } else {
                record_of(&[])
            };
            return Ok(Decided {
                activity: None,
                created: Vec::new(),
                reason,
                record,
            });
        }
        // Every address is matched before any is acted on, as one look-up would.
        let looked: Vec<(MatchOutcome, CustomerContext)> = identifiers
            .iter()
            .map(|identifier| {
                let outcome = self.outcome(identifier)?;
                let context = outcome
                    .matches
                    .first()
                    .map(|best| self.context(best))
                    .unwrap_or_default();
                Ok((outcome, context))
            })
            .collect::<Result<_>>()?;

        let mut attach: Vec<EntityRef> = Vec::new();
        let mut created: Vec<EntityRef> = Vec::new();
        let mut responsible: Option<UserId> = None;
        let mut chosen = None;
        let mut decided: Vec<(Decision, Vec<EntityRef>)> = Vec::with_capacity(looked.len());
        for (identifier, (outcome, customer)) in identifiers.iter().zip(&looked) {
            let queue = self.queue(policy);
            let decision = decide_mail(MailIntakeInput {
                mailbox: policy,
                facts: &MailFacts {
                    direction: facts.direction,
                    customer: identifier.key().to_owned(),
                },
                matched: outcome,
                customer,
                crm: self.settings.crm,
                queue: queue.as_ref(),
                pipelines: self.settings.pipelines,
                by_hand,
            });
            if decision.advances_queue()
                && let Some(state) = &queue
            {
                *self.rotations.entry(state.id.clone()).or_default() += 1;
                *self.turns.entry(state.id.clone()).or_default() += 1;
            }
            reasons.push(format!("{}: {}", identifier.key(), decision.reason));
            let mut made = Vec::new();
            if decision.records_activity() {
                if responsible.is_none() {
                    responsible = decision.responsible.user().cloned();
                }
                if chosen.is_none() {
                    chosen = decision.matched.clone();
                }
                attach.extend(decision.attach.iter().cloned());
                if let Some(plan) = &decision.create {
                    let owner = decision.responsible.user().cloned();
                    made = self.create(
                        plan,
                        identifier,
                        facts.direction,
                        owner,
                        &decision.source,
                        now,
                    );
                    created.extend(made.iter().cloned());
                }
            }
            decided.push((decision, made));
        }
        let parts: Vec<Considered<'_>> = looked
            .iter()
            .zip(&raws)
            .zip(&decided)
            .map(|(((outcome, _), raw), (decision, made))| Considered {
                raw,
                matched: Some(outcome),
                decision,
                created: made,
            })
            .collect();
        let record = record_of(&parts);
        if attach.is_empty() && created.is_empty() {
            return Ok(Decided {
                activity: None,
                created: Vec::new(),
                reason: reasons.join("; "),
                record,
            });
        }
        let activity = new_id();
        let reason = reasons.join("; ");
        self.activities.push(vec![
            activity.clone().into(),
            "email".into(),
            facts.direction.as_str().into(),
            email_subject(facts.direction, facts.subject).into(),
            flag(facts.seen).into(),
            responsible.map(|u| u.to_string()).into(),
            chosen.map(|m| m.entity.to_string()).into(),
            reason.clone().into(),
            facts.received_at.min(now).into(),
            facts.seen.then_some(now).into(),
            facts.message_id.map(str::to_owned).into(),
            record.to_json().into(),
        ]);
        let mut linked = HashSet::new();
        for entity in created.iter().chain(&attach) {
            if linked.insert(entity.clone()) {
                self.links.push((activity.clone(), entity.clone()));
                self.active.insert(entity.clone(), now);
            }
        }
        Ok(Decided {
            activity: Some(activity),
            created,
            reason,
            record,
        })
    }

    /// Plans what one decision creates; a later message finds it (M7).
    fn create(
        &mut self,
        plan: &NewEntities,
        identifier: &Identifier,
        direction: Direction,
        responsible: Option<UserId>,
        source: &str,
        now: Millis,
    ) -> Vec<EntityRef> {
        let label = identifier.key();
        let name = match direction {
            Direction::Incoming => format!("E-mail from {label}"),
            Direction::Outgoing => format!("E-mail to {label}"),
        };
        let row = |entity: EntityRef, name: String| NewRow {
            entity,
            name,
            responsible: responsible.as_ref().map(ToString::to_string),
            source: source.to_owned(),
            now,
            customer: None,
            deal: None,
            identifier: None,
        };
        let owner_id = new_id();
        let mut made = Vec::new();
        match plan {
            NewEntities::Lead { customer } => {
                let lead = EntityRef::new(EntityKind::Lead, &owner_id);
                let mut new = row(
                    lead.clone(),
                    match customer {
                        Some(_) => format!("Repeat: {name}"),
                        None => name.clone(),
                    },
                );
                new.customer = customer.as_ref().map(ToString::to_string);
                if customer.is_none() {
                    new.identifier = Some(identifier.clone());
                    self.claim(identifier, &lead, responsible.clone(), now);
                }
                self.entities.push(new);
                made.push(lead);
            }
            NewEntities::CustomerWithDeal { kind, deal } => {
                let kind = match kind {
                    SimpleCreates::Contact => EntityKind::Contact,
                    SimpleCreates::Company => EntityKind::Company,
                };
                let customer = EntityRef::new(kind, &owner_id);
                let mut new = row(customer.clone(), label.to_owned());
                new.identifier = Some(identifier.clone());
                self.claim(identifier, &customer, responsible.clone(), now);
                self.entities.push(new);
                made.push(customer.clone());
                if let Some(target) = deal {
                    made.push(self.deal(row, &customer, target, name, now));
                }
            }
            NewEntities::DealFor { customer, deal } => {
                let entity = EntityRef::new(EntityKind::Deal, &owner_id);
                let mut new = row(entity.clone(), name);
                new.deal = Some(deal_fields(customer, deal));
                self.entities.push(new);
                self.open_deal(customer, &entity, responsible, now);
                made.push(entity);
            }
        }
        for entity in &made {
            self.created.insert(entity.clone());
        }
        made
    }

    fn deal(
        &mut self,
        row: impl Fn(EntityRef, String) -> NewRow,
        customer: &EntityRef,
        target: &DealTarget,
        name: String,
        now: Millis,
    ) -> EntityRef {
        let entity = EntityRef::new(EntityKind::Deal, new_id());
        let mut new = row(entity.clone(), name);
        new.deal = Some(deal_fields(customer, target));
        let responsible = new.responsible.clone().map(UserId);
        self.entities.push(new);
        self.open_deal(customer, &entity, responsible, now);
        entity
    }

    fn open_deal(
        &mut self,
        customer: &EntityRef,
        deal: &EntityRef,
        responsible: Option<UserId>,
        now: Millis,
    ) {
        let (contact, company) = match customer.kind {
            EntityKind::Company => (None, Some(CompanyId(customer.id.clone()))),
            _ => (Some(ContactId(customer.id.clone())), None),
        };
        self.deals
            .entry(customer.clone())
            .or_default()
            .push(OpenDeal {
                id: DealId(deal.id.clone()),
                contact,
                company,
                responsible,
                last_activity_at: now,
            });
    }

    fn claim(
        &mut self,
        identifier: &Identifier,
        owner: &EntityRef,
        responsible: Option<UserId>,
        now: Millis,
    ) {
        self.claims
            .push((identifier.key().to_owned(), owner.clone(), now));
        self.created_by_key.insert(
            identifier.key().to_owned(),
            Candidate {
                entity: owner.clone(),
                responsible,
                last_activity_at: now,
            },
        );
    }

    /// Takes the queue turns the batch planned, atomically (T9).
    pub(super) async fn take_turns(&self, tx: &mut Tx<'_>) -> Result<Turns> {
        let mut moved = self.looked.rotations.clone();
        let mut changed = false;
        for (queue, count) in &self.turns {
            let row = sqlx::query(
                "UPDATE queues SET rotation = rotation + $2 WHERE id = $1 RETURNING rotation",
            )
            .bind(queue.as_str())
            .bind(*count)
            .fetch_optional(&mut **tx)
            .await?;
            let Some(row) = row else {
                return Ok(Turns::LostRace(conflict("a queue was deleted")));
            };
            let start = col::<i64>(&row, "rotation")? - count;
            if self.looked.rotations.get(queue) != Some(&start) {
                moved.insert(queue.clone(), start);
                changed = true;
            }
        }
        Ok(if changed {
            Turns::Moved(moved)
        } else {
            Turns::Taken
        })
    }

    /// Writes the entities, activities and links the batch decided on. `Ok(Err)`: a
    /// concurrent writer got there first (a lost race).
    pub(super) async fn write(self, tx: &mut Tx<'_>) -> Result<Raced<()>> {
        let mut claims = Rows::new(
            "identifier_owners",
            &["value", "entity_kind", "entity_id", "created_at"],
            "ON CONFLICT (value) DO NOTHING RETURNING value",
        );
        for (value, owner, now) in &self.claims {
            claims.push(vec![
                value.clone().into(),
                owner.kind.as_str().into(),
                owner.id.clone().into(),
                (*now).into(),
            ]);
        }
        if !claims.is_empty() {
            let taken: HashSet<String> = claims
                .write(tx)
                .await?
                .iter()
                .map(|row| col(row, "value"))
                .collect::<Result<_>>()?;
            if let Some((value, _, _)) = self.claims.iter().find(|(v, _, _)| !taken.contains(v)) {
                return Ok(Err(lost_race(value)));
            }
        }

        let EntityRows {
            mut leads,
            mut contacts,
            mut companies,
            mut deals,
            mut identifiers,
        } = EntityRows::new();
        for new in &self.entities {
            let last = self.active.get(&new.entity).copied().unwrap_or(new.now);
            let mut row: Vec<Cell> = vec![
                new.entity.id.clone().into(),
                new.name.clone().into(),
                new.responsible.clone().into(),
                new.source.clone().into(),
                new.now.into(),
                new.now.into(),
                last.into(),
            ];
            match new.entity.kind {
                EntityKind::Lead => {
                    row.extend(["new".into(), new.customer.clone().into()]);
                    leads.push(row);
                }
                EntityKind::Contact => contacts.push(row),
                EntityKind::Company => companies.push(row),
                EntityKind::Deal => {
                    let Some((contact, company, target)) = &new.deal else {
                        return Err(StoreError::invalid(
                            "pipeline",
                            "a deal needs a pipeline and a stage",
                        ));
                    };
                    row.extend([
                        contact.clone().into(),
                        company.clone().into(),
                        target.pipeline.to_string().into(),
                        target.stage.to_string().into(),
                        "open".into(),
                    ]);
                    deals.push(row);
                }
            }
            if let Some(identifier) = &new.identifier {
                identifiers.push(vec![
                    new.entity.kind.as_str().into(),
                    new.entity.id.clone().into(),
                    identifier.kind().as_str().into(),
                    identifier.key().into(),
                    0i64.into(),
                ]);
            }
        }
        for rows in [leads, contacts, companies, deals, identifiers] {
            if !rows.is_empty() {
                rows.write(tx).await?;
            }
        }

        let mut activities = Rows::new(
            "activities",
            &[
                "id",
                "kind",
                "direction",
                "subject",
                "completed",
                "responsible",
                "matched",
                "match_reason",
                "created_at",
                "completed_at",
                "email_message_id",
                "decision",
            ],
            // Another process took a Message-ID's activity a moment ago: a lost race.
            "ON CONFLICT DO NOTHING RETURNING id",
        );
        let wanted = self.activities.len();
        for row in self.activities {
            activities.push(row);
        }
        if wanted > 0 && activities.write(tx).await?.len() != wanted {
            return Ok(Err(conflict(
                "another process took the activity of a Message-ID",
            )));
        }
        let mut links = Rows::new(
            "activity_entities",
            &["activity_id", "entity_kind", "entity_id"],
            "ON CONFLICT DO NOTHING",
        );
        for (activity, entity) in &self.links {
            links.push(vec![
                activity.clone().into(),
                entity.kind.as_str().into(),
                entity.id.clone().into(),
            ]);
        }
        if !links.is_empty() {
            links.write(tx).await?;
        }

        // The last activity of what existed before the batch; what it created was
        // written with its own.
        let mut touched: HashMap<EntityKind, Vec<(&str, Millis)>> = HashMap::new();
        for (entity, at) in &self.active {
            if !self.created.contains(entity) {
                touched
                    .entry(entity.kind)
                    .or_default()
                    .push((entity.id.as_str(), *at));
            }
        }
        for (kind, entities) in touched {
            for chunk in entities.chunks(IN_CHUNK / 2) {
                let mut cases = String::new();
                for n in 0..chunk.len() {
                    cases.push_str(&format!(" WHEN ${} THEN ${}", 2 * n + 1, 2 * n + 2));
                }
                let ids = (0..chunk.len())
                    .map(|n| format!("${}", 2 * n + 1))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "UPDATE {} SET last_activity_at = CASE id{cases} END WHERE id IN ({ids})",
                    table(kind)
                );
                // Assembled from a constant table name and placeholders only.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (id, at) in chunk {
                    query = query.bind(*id).bind(*at);
                }
                query.execute(&mut **tx).await?;
            }
        }
        Ok(Ok(()))
    }
}

fn deal_fields(
    customer: &EntityRef,
    target: &DealTarget,
) -> (Option<String>, Option<String>, DealTarget) {
    match customer.kind {
        EntityKind::Company => (None, Some(customer.id.clone()), target.clone()),
        _ => (Some(customer.id.clone()), None, target.clone()),
    }
}

/// `Err`: a concurrent writer got there first; roll back and read again (the error is
/// reported if it keeps happening).
pub(super) type Raced<T> = std::result::Result<T, StoreError>;

/// What taking the queue turns found.
pub(super) enum Turns {
    Taken,
    /// Others took turns since the read: decide again from these rotations.
    Moved(HashMap<QueueId, i64>),
    LostRace(StoreError),
}

pub(super) fn lost_race(identifier: &str) -> StoreError {
    StoreError::Conflict {
        code: "duplicate_identifier",
        message: format!("{identifier} was taken by another entity a moment ago (M7)"),
    }
}

fn conflict(what: &str) -> StoreError {
    StoreError::Conflict {
        code: "mail_intake_conflict",
        message: format!("{what} while the mail was taken in; collected again"),
    }
}

/// The messages of one batch, decided: outcomes in batch order and the `emails` rows.
struct Planned<'p> {
    planner: Planner<'p>,
    outcomes: Vec<EmailOutcome>,
    emails: Vec<NewEmail>,
    /// Stored copies that moved to a new UIDVALIDITY: (id, UIDVALIDITY, UID).
    moves: Vec<(String, Option<i64>, Option<i64>)>,
}

fn repeated() -> EmailOutcome {
    EmailOutcome {
        email: None,
        action: "repeated".into(),
        activity: None,
        created: Vec::new(),
    }
}

/// Decides every message of the batch in order (pure). A folder position collected
/// before is a replay; a Message-ID seen before in the same folder is the same message
/// (after a UIDVALIDITY change it moves); a Message-ID with an activity gets no second.
fn plan<'p>(
    emails: &[IncomingEmail],
    policies: &[&(MailboxPolicy, Exclusions)],
    looked: &'p Looked,
    settings: &'p IntakeSettings<'p>,
    rotations: Option<&HashMap<QueueId, i64>>,
) -> Result<Planned<'p>> {
    let mut planner = Planner::new(looked, settings, rotations);
    let mut copies = looked.copies.clone();
    let mut positions = looked.positions.clone();
    let mut activities = looked.activities.clone();
    let mut outcomes = Vec::with_capacity(emails.len());
    let mut rows: Vec<NewEmail> = Vec::with_capacity(emails.len());
    let mut moves = Vec::new();
    for ((index, email), (policy, blacklist)) in emails.iter().enumerate().zip(policies) {
        let now = now_ms();
        let (mailbox, folder, uid_validity, uid) = columns_of(&email.origin);
        let key = email.message_id.as_ref().map(|id| {
            (
                id.clone(),
                mailbox.unwrap_or("").to_owned(),
                folder.unwrap_or("").to_owned(),
            )
        });
        if let Some(copy) = key.as_ref().and_then(|k| copies.get_mut(k)) {
            if copy.uid_validity != uid_validity {
                if let (Some(mb), Some(f), Some(v), Some(u)) =
                    (mailbox, folder, copy.uid_validity, copy.uid)
                {
                    positions.remove(&(mb.to_owned(), f.to_owned(), v, u));
                }
                match &copy.row {
                    CopyRow::Stored(id) => moves.push((id.clone(), uid_validity, uid)),
                    CopyRow::New(row) => {
                        rows[*row].uid_validity = uid_validity;
                        rows[*row].uid = uid;
                    }
                }
                copy.uid_validity = uid_validity;
                copy.uid = uid;
                if let Some(position) = position_of(&email.origin) {
                    positions.insert(position);
                }
            }
            outcomes.push(repeated());
            continue;
        }
        if let Some(position) = position_of(&email.origin)
            && !positions.insert(position)
        {
            outcomes.push(repeated());
            continue;
        }
        let id = new_id();
        if let Some(key) = key {
            copies.insert(
                key,
                Copy {
                    row: CopyRow::New(rows.len()),
                    uid_validity,
                    uid,
                },
            );
        }
        let mut row = NewEmail {
            index,
            id: id.clone(),
            now,
            uid_validity,
            uid,
            action: String::new(),
            reason: String::new(),
            created: Vec::new(),
            activity: None,
            record: None,
        };
        // One activity per Message-ID: a copy in another mailbox or folder joins it.
        if let Some(activity) = email.message_id.as_ref().and_then(|id| activities.get(id)) {
            row.action = "attached".into();
            row.reason = "the same message (Message-ID) was collected before: one activity".into();
            row.activity = Some(activity.clone());
            row.record = Some(DecisionRecord {
                outcome: format!(
                    "attached to activity {activity}, of the same message collected before"
                ),
                ..DecisionRecord::default()
            });
            outcomes.push(EmailOutcome {
                email: Some(id),
                action: "attached".into(),
                activity: Some(activity.clone()),
                created: Vec::new(),
            });
            rows.push(row);
            continue;
        }
        let decided = planner.decide(
            &EmailFacts {
                direction: email.direction,
                subject: &email.subject,
                message_id: email.message_id.as_deref(),
                seen: email.seen,
                received_at: email.received_at,
            },
            &email.customers,
            policy,
            blacklist,
            false,
            now,
        )?;
        if let (Some(message_id), Some(activity)) = (&email.message_id, &decided.activity) {
            activities.insert(message_id.clone(), activity.clone());
        }
        let action = match (&decided.activity, decided.created.is_empty()) {
            (None, _) => CrmAction::Logged,
            (Some(_), true) => CrmAction::Attached,
            (Some(_), false) => CrmAction::Created,
        };
        row.action = action.as_str().to_owned();
        row.reason = decided.reason;
        row.created = decided.created.clone();
        row.activity = decided.activity.clone();
        row.record = Some(decided.record);
        outcomes.push(EmailOutcome {
            email: Some(id),
            action: action.as_str().to_owned(),
            activity: decided.activity,
            created: decided.created,
        });
        rows.push(row);
    }
    Ok(Planned {
        planner,
        outcomes,
        emails: rows,
        moves,
    })
}

/// Takes a batch of collected messages into the mail store and the CRM in one
/// transaction, moving the folder checkpoint with it when given, so that the checkpoint
/// never passes a message that is not stored. A batch that loses a race is read and
/// decided again.
pub(super) async fn ingest_batch(
    store: &Store,
    emails: &[IncomingEmail],
    position: Option<&FolderPosition<'_>>,
) -> Result<Vec<EmailOutcome>> {
    let ids: Vec<Option<&str>> = emails.iter().map(|e| e.message_id.as_deref()).collect();
    let erased = store.erased_messages(&ids).await?;
    if erased.contains(&true) {
        // Messages of an erased person (a re-sync, or a copy in another folder) are
        // skipped: the folder checkpoint still moves past them.
        let kept: Vec<IncomingEmail> = emails
            .iter()
            .zip(&erased)
            .filter(|(_, erased)| !**erased)
            .map(|(email, _)| email.clone())
            .collect();
        let mut outcomes = Box::pin(ingest_batch(store, &kept, position))
            .await?
            .into_iter();
        return erased
            .iter()
            .map(|erased| match erased {
                true => Ok(repeated()),
                false => outcomes
                    .next()
                    .ok_or_else(|| StoreError::Corrupt("mail batch outcomes".into())),
            })
            .collect();
    }
    let snapshot = store.config_snapshot().await?;
    let settings = IntakeSettings {
        crm: &snapshot.crm,
        queues: &snapshot.queues,
        pipelines: &snapshot.pipelines,
    };
    let mut lost = None;
    for _ in 0..ATTEMPTS {
        let mut tx = store.writer().begin().await?;
        match ingest(&mut tx, emails, &settings, position).await? {
            Ok((outcomes, writing)) => {
                let started = Instant::now();
                tx.commit().await?;
                stage_time("store", writing + started.elapsed());
                return Ok(outcomes);
            }
            Err(err) => {
                tx.rollback().await?;
                tracing::debug!(%err, "mail batch lost a race; reading it again");
                metrics::counter!("leadline_mail_batch_replays_total").increment(1);
                lost = Some(err);
            }
        }
    }
    Err(lost.unwrap_or_else(|| conflict("the batch kept losing races")))
}

/// One try at a batch in `tx`; with the outcomes, the time the writes took.
async fn ingest(
    tx: &mut Tx<'_>,
    emails: &[IncomingEmail],
    settings: &IntakeSettings<'_>,
    position: Option<&FolderPosition<'_>>,
) -> Result<Raced<(Vec<EmailOutcome>, Duration)>> {
    let started = Instant::now();
    let mut loaded: HashMap<&str, (MailboxPolicy, Exclusions)> = HashMap::new();
    // E16: the forward address's policy names the employee each message came through.
    let mut forwards: HashMap<Option<&UserId>, (MailboxPolicy, Exclusions)> = HashMap::new();
    for email in emails {
        match &email.origin {
            MailOrigin::Folder { mailbox, .. } => {
                if !loaded.contains_key(mailbox.as_str()) {
                    loaded.insert(mailbox, load_policy(tx, mailbox, settings.crm).await?);
                }
            }
            MailOrigin::Forward { employee } => {
                forwards
                    .entry(employee.as_ref())
                    .or_insert_with(|| forward_policy(settings.crm, employee.clone()));
            }
        }
    }
    let policies: Vec<&(MailboxPolicy, Exclusions)> = emails
        .iter()
        .map(|email| match &email.origin {
            MailOrigin::Folder { mailbox, .. } => loaded.get(mailbox.as_str()),
            MailOrigin::Forward { employee } => forwards.get(&employee.as_ref()),
        })
        .map(|policy| policy.ok_or_else(|| StoreError::Corrupt("mailbox policy".into())))
        .collect::<Result<_>>()?;
    let mut queues: Vec<&QueueId> = policies
        .iter()
        .filter_map(|(p, _)| p.queue.as_ref())
        .filter(|id| settings.queues.contains_key(*id))
        .collect();
    queues.sort();
    queues.dedup();
    let looked = Looked::for_emails(tx, emails, &queues).await?;
    let mut planned = plan(emails, &policies, &looked, settings, None)?;
    stage_time("match", started.elapsed());

    let started = Instant::now();
    match planned.planner.take_turns(tx).await? {
        Turns::Taken => {}
        Turns::Moved(rotations) => {
            let taken = planned.planner.turns.clone();
            planned = plan(emails, &policies, &looked, settings, Some(&rotations))?;
            if planned.planner.turns != taken {
                return Ok(Err(conflict("the queues changed")));
            }
        }
        Turns::LostRace(err) => return Ok(Err(err)),
    }
    let Planned {
        planner,
        outcomes,
        emails: rows,
        moves,
    } = planned;
    for (id, uid_validity, uid) in &moves {
        sqlx::query("UPDATE emails SET uid_validity = $2, uid = $3 WHERE id = $1")
            .bind(id)
            .bind(*uid_validity)
            .bind(*uid)
            .execute(&mut **tx)
            .await?;
    }
    if let Err(err) = write_emails(tx, emails, &rows).await? {
        return Ok(Err(err));
    }
    if let Err(err) = planner.write(tx).await? {
        return Ok(Err(err));
    }
    if let Some(position) = position {
        write_checkpoint(&mut **tx, position).await?;
    }
    Ok(Ok((outcomes, started.elapsed())))
}

async fn write_emails(
    tx: &mut Tx<'_>,
    emails: &[IncomingEmail],
    rows: &[NewEmail],
) -> Result<Raced<()>> {
    if rows.is_empty() {
        return Ok(Ok(()));
    }
    let mut table = Rows::new(
        "emails",
        &[
            "id",
            "mailbox_id",
            "folder",
            "uid_validity",
            "uid",
            "message_id",
            "in_reply_to",
            "thread_root",
            "direction",
            "from_addr",
            "from_name",
            "to_addrs",
            "cc_addrs",
            "subject",
            "received_at",
            "ingested_at",
            "completed_at",
            "seen",
            "attachments",
            "size",
            "raw",
            "crm_action",
            "crm_reason",
            "created_entities",
            "activity_id",
            "decision",
        ],
        // A folder position another process collected a moment ago: a lost race.
        "ON CONFLICT (mailbox_id, folder, uid_validity, uid) DO NOTHING RETURNING id",
    );
    for row in rows {
        let email = &emails[row.index];
        let (mailbox, folder, _, _) = columns_of(&email.origin);
        let attachments = serde_json::to_string(&email.attachments)
            .map_err(|e| StoreError::Corrupt(format!("attachments: {e}")))?;
        let created: Vec<String> = row.created.iter().map(ToString::to_string).collect();
        table.push(vec![
            row.id.clone().into(),
            mailbox.map(str::to_owned).into(),
            folder.map(str::to_owned).into(),
            row.uid_validity.into(),
            row.uid.into(),
            email.message_id.clone().into(),
            email.in_reply_to.clone().into(),
            email.thread_root.clone().into(),
            email.direction.as_str().into(),
            email.from.clone().into(),
            email.from_name.clone().into(),
            json_list(&email.to).into(),
            json_list(&email.cc).into(),
            email.subject.clone().into(),
            email.received_at.into(),
            row.now.into(),
            email.seen.then_some(row.now).into(),
            flag(email.seen).into(),
            attachments.into(),
            (email.raw.len() as i64).into(),
            email.raw.clone().into(),
            row.action.clone().into(),
            row.reason.clone().into(),
            json_list(&created).into(),
            row.activity.clone().into(),
            row.record.as_ref().map(DecisionRecord::to_json).into(),
        ]);
    }
    if table.write(tx).await?.len() != rows.len() {
        return Ok(Err(conflict("another process collected a message")));
    }
    Ok(Ok(()))
}

/// The batch's Message-IDs, each once, sorted (for `IN (…)` look-ups in chunks).
fn message_ids(emails: &[IncomingEmail]) -> Vec<&str> {
    let mut ids: Vec<&str> = emails
        .iter()
        .filter_map(|e| e.message_id.as_deref())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}
