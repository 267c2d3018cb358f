//! The call log and call activities: applies call events through the intake.
//!
//! A call event is applied in one transaction: the (call, event) idempotency row, the
//! intake's decision (entities, activity, queue rotation) and the call log row commit
//! together or not at all. Two rules hold however many processes share the database:
//! a repeated event changes nothing (primary key on `call_events`), and a new identifier
//! creates one entity (primary key on `identifier_owners`, M7).

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

use super::entities::{NewDealFields, NewEntity, Tx, claim_identifier, insert_entity, table};
use super::{
    Page, Paged, Result, Store, StoreError, col, json_list, now_ms, parse_json_list, parse_stored,
};
use crate::crm::intake::{
    CallFacts, CustomerContext, Decision, IntakeInput, NewEntities, NumberSettings, Responsible,
    call_completes_activity, decide,
};
use crate::crm::model::{
    ActivityKind, CallEventKind, CallOutcome, CallRecordId, CrmAction, CrmSettings, Direction,
    EntityKind, EntityRef, Millis, SimpleCreates, UserId,
};
use crate::crm::queue::QueueState;
use crate::matcher::{Candidate, Identifier, MatchOutcome, normalise_phone};

/// A call event as pushed by a PBX or produced by our own B2BUA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    pub call_id: String,
    pub event: CallEventKind,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    /// Who answered (answered), who dialled (outgoing).
    pub user: Option<UserId>,
    pub outcome: Option<CallOutcome>,
    pub at: Millis,
}

/// One row of the call log (T13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub id: CallRecordId,
    pub call_id: String,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    /// The customer's identifier (E.164 or digits), if it could be read.
    pub customer: Option<String>,
    pub number: Option<String>,
    pub user: Option<UserId>,
    pub answered_by: Option<UserId>,
    pub responsible: Option<UserId>,
    pub started_at: Millis,
    pub answered_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    pub outcome: Option<CallOutcome>,
    pub crm_action: CrmAction,
    pub crm_reason: String,
    pub created: Vec<EntityRef>,
    pub route: Vec<UserId>,
    pub activity: Option<String>,
    pub recording: Option<String>,
}

impl CallRecord {
    /// Talk time in whole seconds, once the call ended.
    pub fn duration_s(&self) -> Option<i64> {
        match (self.answered_at, self.ended_at) {
            (Some(answered), Some(ended)) => Some((ended - answered).max(0) / 1000),
            (None, Some(_)) => Some(0),
            _ => None,
        }
    }
}

/// The first answer to an event, kept for repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAnswer {
    pub created: Vec<EntityRef>,
    pub matches: Vec<StoredMatch>,
    pub route: Vec<UserId>,
    pub ring_timeout_s: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMatch {
    pub entity: EntityRef,
    pub responsible: Option<UserId>,
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventOutcome {
    pub call: CallRecord,
    pub answer: EventAnswer,
    /// The event had been applied before; nothing changed this time.
    pub repeated: bool,
}

/// One activity on the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityRecord {
    pub id: String,
    pub kind: ActivityKind,
    pub direction: Direction,
    pub subject: String,
    pub completed: bool,
    pub responsible: Option<UserId>,
    pub call: Option<String>,
    pub matched: Option<String>,
    pub match_reason: Option<String>,
    pub entities: Vec<EntityRef>,
    pub created_at: Millis,
    pub completed_at: Option<Millis>,
}

/// Filters of the call log.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    /// Calls that involve this employee (dialled, answered or responsible).
    pub user: Option<UserId>,
    pub customer: Option<String>,
}

/// Everything the intake reads, gathered before the write transaction.
#[derive(Clone)]
struct IntakeContext {
    number: Option<NumberSettings>,
    crm: CrmSettings,
    queue: Option<QueueState>,
    pipelines: Vec<crate::crm::intake::PipelineEntry>,
    identifier: Option<Identifier>,
    matched: Option<MatchOutcome>,
    customer: CustomerContext,
}

impl IntakeContext {
    fn decide(&self, facts: &CallFacts) -> Decision {
        match &self.matched {
            Some(matched) => decide(IntakeInput {
                facts,
                number: self.number.as_ref(),
                matched,
                customer: &self.customer,
                crm: &self.crm,
                queue: self.queue.as_ref(),
                pipelines: &self.pipelines,
            }),
            None => Decision {
                action: CrmAction::Logged,
                reason: format!(
                    "'{}' carries no phone number (withheld or anonymous caller)",
                    facts.customer_raw
                ),
                create: None,
                attach: Vec::new(),
                matched: None,
                responsible: Responsible::Nobody,
                route: match facts.direction {
                    Direction::Incoming => crate::crm::queue::ring_order(None, self.queue.as_ref()),
                    Direction::Outgoing => Vec::new(),
                },
                ring_timeout_s: self.number.as_ref().map_or(0, |n| n.ring_timeout_s),
                source: String::new(),
            },
        }
    }
}

/// The most times a decision is retried after losing a race for an identifier (M7) or a
/// queue turn: each retry sees the winner's commit, so two are always enough.
const MAX_DECISION_ROUNDS: usize = 3;

impl Store {
    /// Applies one call event (API.md `/calls/events`), exactly once per (call, event).
    pub async fn apply_call_event(&self, event: &CallEvent) -> Result<EventOutcome> {
        let facts = CallFacts {
            direction: event.direction,
            customer_raw: match event.direction {
                Direction::Incoming => event.from.clone(),
                Direction::Outgoing => event.to.clone(),
            },
            user: event.user.clone(),
        };
        for _ in 0..MAX_DECISION_ROUNDS {
            // The first event of a call (of whatever kind) runs the intake; later ones
            // only move the call along. Looked at afresh each round: a concurrent first
            // event may have logged the call since.
            let existing = self.call_by_call_id(&event.call_id).await?;
            let context = match existing {
                None => Some(self.intake_context(event, &facts).await?),
                Some(_) => None,
            };
            let mut tx = self.writer().begin().await?;
            let fresh = sqlx::query(
                "INSERT INTO call_events (call_id, event, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (call_id, event) DO NOTHING",
            )
            .bind(&event.call_id)
            .bind(event.event.as_str())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !fresh {
                tx.rollback().await?;
                return self.repeated_event(event).await;
            }

            let answer = match (&context, &existing) {
                (Some(ctx), _) => {
                    let decision = ctx.decide(&facts);
                    match self
                        .apply_decision(&mut tx, event, &facts, ctx, decision)
                        .await?
                    {
                        Applied::Done(answer) => {
                            if event.event != CallEventKind::Ringing {
                                // The call opened with a later step: apply that step too.
                                let call = self
                                    .call_by_call_id_in(&mut tx, &event.call_id)
                                    .await?
                                    .ok_or_else(|| {
                                        StoreError::not_found("call", event.call_id.as_str())
                                    })?;
                                self.advance_call(&mut tx, &call, event).await?;
                            }
                            answer
                        }
                        Applied::LostRace => {
                            // Another event created the customer, took the queue turn or
                            // logged this call a moment ago: look again.
                            tx.rollback().await?;
                            continue;
                        }
                    }
                }
                (None, Some(_)) => {
                    // Lock the call row, then read it: the copy read before the
                    // transaction may predate a concurrent step of the same call.
                    let call = self
                        .locked_call(&mut tx, &event.call_id)
                        .await?
                        .ok_or_else(|| StoreError::not_found("call", event.call_id.as_str()))?;
                    self.advance_call(&mut tx, &call, event).await?;
                    self.first_answer(&mut tx, &event.call_id).await?
                }
                (None, None) => unreachable!("a call not yet logged always has an intake context"),
            };
            let text = serde_json::to_string(&answer)
                .map_err(|e| StoreError::Corrupt(format!("event answer: {e}")))?;
            sqlx::query("UPDATE call_events SET response = $3 WHERE call_id = $1 AND event = $2")
                .bind(&event.call_id)
                .bind(event.event.as_str())
                .bind(text)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            let call = self
                .call_by_call_id(&event.call_id)
                .await?
                .ok_or_else(|| StoreError::not_found("call", event.call_id.as_str()))?;
            metrics::counter!("leadline_call_events_total", "event" => event.event.as_str(),
                "crm_action" => call.crm_action.as_str())
            .increment(1);
            return Ok(EventOutcome {
                call,
                answer,
                repeated: false,
            });
        }
        Err(StoreError::Conflict {
            code: "contention",
            message: "the call event kept losing races with concurrent events; retry it".to_owned(),
        })
    }

    async fn repeated_event(&self, event: &CallEvent) -> Result<EventOutcome> {
        let row = sqlx::query("SELECT response FROM call_events WHERE call_id = $1 AND event = $2")
            .bind(&event.call_id)
            .bind(event.event.as_str())
            .fetch_one(self.reader())
            .await?;
        let answer = match col::<Option<String>>(&row, "response")? {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("call_events.response: {e}")))?,
            None => EventAnswer::default(),
        };
        let call = self
            .call_by_call_id(&event.call_id)
            .await?
            .ok_or_else(|| StoreError::not_found("call", event.call_id.as_str()))?;
        Ok(EventOutcome {
            call,
            answer,
            repeated: true,
        })
    }

    async fn intake_context(&self, event: &CallEvent, facts: &CallFacts) -> Result<IntakeContext> {
        let crm = self.crm_settings().await?;
        let our_side = match event.direction {
            Direction::Incoming => &event.to,
            Direction::Outgoing => &event.from,
        };
        let number = match normalise_phone(our_side, Some(crm.default_country)) {
            Ok(key) if key.is_e164() => self.number_settings(key.as_str()).await?,
            _ => None,
        };
        let queue = match number.as_ref().and_then(|n| n.queue.as_ref()) {
            Some(id) => self.queue_state(id).await?,
            None => None,
        };
        let country = number
            .as_ref()
            .map_or(crm.default_country, |n| n.default_country);
        let identifier = normalise_phone(&facts.customer_raw, Some(country))
            .ok()
            .map(Identifier::Phone);
        let (matched, customer) = match &identifier {
            Some(identifier) => {
                let outcome = self.match_identifier(identifier.clone()).await?;
                let customer = match outcome.matches.first() {
                    Some(best) => self.customer_context(best).await?,
                    None => CustomerContext::default(),
                };
                (Some(outcome), customer)
            }
            None => (None, CustomerContext::default()),
        };
        Ok(IntakeContext {
            number,
            crm,
            queue,
            pipelines: self.pipeline_entries().await?,
            identifier,
            matched,
            customer,
        })
    }

    /// Writes what the intake decided. `LostRace` when the identifier was claimed by a
    /// concurrent event (M7): the caller retries with a fresh look.
    async fn apply_decision(
        &self,
        tx: &mut Tx<'_>,
        event: &CallEvent,
        facts: &CallFacts,
        ctx: &IntakeContext,
        mut decision: Decision,
    ) -> Result<Applied> {
        let now = now_ms();
        let customer_key = ctx.identifier.as_ref().map(|i| i.key().to_owned());
        let mut created: Vec<EntityRef> = Vec::new();

        if let Some(plan) = decision.create.clone() {
            // M7 first: a lost claim must not advance the queue.
            let owner_id = uuid::Uuid::now_v7().to_string();
            let owner_kind = match &plan {
                NewEntities::Lead { .. } => EntityKind::Lead,
                NewEntities::CustomerWithDeal {
                    kind: SimpleCreates::Contact,
                    ..
                } => EntityKind::Contact,
                NewEntities::CustomerWithDeal {
                    kind: SimpleCreates::Company,
                    ..
                } => EntityKind::Company,
                NewEntities::DealFor { .. } => EntityKind::Deal,
            };
            if plan.claims_identifier()
                && let Some(key) = &customer_key
                && !claim_identifier(tx, key, &EntityRef::new(owner_kind, &owner_id), now).await?
            {
                return Ok(Applied::LostRace);
            }
            if decision.advances_queue() {
                let Some(queue) = &ctx.queue else {
                    unreachable!("only a queue member can be next in queue")
                };
                // T9: take the turn atomically; if another event took the one we saw,
                // decide again with the turn we got (pure and cheap).
                let row = sqlx::query(
                    "UPDATE queues SET rotation = rotation + 1 WHERE id = $1 RETURNING rotation",
                )
                .bind(queue.id.as_str())
                .fetch_one(&mut **tx)
                .await?;
                let taken = col::<i64>(&row, "rotation")? - 1;
                if taken != queue.rotation {
                    let turn = IntakeContext {
                        queue: Some(QueueState {
                            rotation: taken,
                            ..queue.clone()
                        }),
                        ..ctx.clone()
                    };
                    decision = turn.decide(facts);
                }
            }
            created = self
                .create_planned(tx, event, &decision, &plan, &owner_id, owner_kind, ctx, now)
                .await?;
        }

        let responsible = decision.responsible.user().cloned();
        let call_row_id = CallRecordId::generate();
        let activity = if decision.records_activity() {
            let mut entities: Vec<EntityRef> = created.clone();
            entities.extend(decision.attach.iter().cloned());
            Some(
                insert_call_activity(
                    tx,
                    event,
                    &call_row_id,
                    &entities,
                    decision.matched.as_ref(),
                    &decision.reason,
                    responsible.as_ref(),
                    now,
                )
                .await?,
            )
        } else {
            None
        };

        let number = ctx.number.as_ref();
        let logged = sqlx::query(
            "INSERT INTO calls (id, call_id, direction, from_raw, to_raw, customer, number_id, \
             number, user_id, responsible, started_at, crm_action, crm_reason, created_entities, \
             route, activity_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (call_id) DO NOTHING",
        )
        .bind(call_row_id.as_str())
        .bind(&event.call_id)
        .bind(event.direction.as_str())
        .bind(&event.from)
        .bind(&event.to)
        .bind(customer_key.as_deref())
        .bind(number.map(|n| n.id.to_string()))
        .bind(number.map(|n| n.number.clone()))
        .bind(event.user.as_ref().map(UserId::as_str))
        .bind(responsible.as_ref().map(UserId::as_str))
        .bind(event.at)
        .bind(decision.action.as_str())
        .bind(&decision.reason)
        .bind(json_list(
            &created.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ))
        .bind(json_list(
            &decision
                .route
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        ))
        .bind(activity.as_deref())
        .execute(&mut **tx)
        .await?;
        if logged.rows_affected() == 0 {
            // Another first event of this call logged it a moment ago (PostgreSQL waits
            // for that commit before reporting the conflict).
            return Ok(Applied::LostRace);
        }

        let matches = ctx
            .matched
            .as_ref()
            .map(|m| m.matches.iter().map(stored_match).collect())
            .unwrap_or_default();
        Ok(Applied::Done(EventAnswer {
            created,
            matches,
            route: decision.route.clone(),
            ring_timeout_s: decision.ring_timeout_s,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_planned(
        &self,
        tx: &mut Tx<'_>,
        event: &CallEvent,
        decision: &Decision,
        plan: &NewEntities,
        owner_id: &str,
        owner_kind: EntityKind,
        ctx: &IntakeContext,
        now: Millis,
    ) -> Result<Vec<EntityRef>> {
        let identifiers: Vec<Identifier> = ctx.identifier.iter().cloned().collect();
        let label = ctx
            .identifier
            .as_ref()
            .map_or(event.from.as_str(), |i| i.key())
            .to_owned();
        let responsible = decision.responsible.user().cloned();
        let base = NewEntity {
            kind: owner_kind,
            name: String::new(),
            identifiers: identifiers.clone(),
            responsible: responsible.clone(),
            source: decision.source.clone(),
            company: None,
            customer: None,
            deal: None,
        };
        let verb = match event.direction {
            Direction::Incoming => "Call from",
            Direction::Outgoing => "Call to",
        };
        let mut created = Vec::new();
        match plan {
            NewEntities::Lead { customer } => {
                let lead = NewEntity {
                    name: match customer {
                        Some(_) => format!("Repeat: {verb} {label}"),
                        None => format!("{verb} {label}"),
                    },
                    customer: customer.as_ref().map(ToString::to_string),
                    ..base
                };
                created.push(insert_entity(tx, owner_id, &lead, now).await?);
            }
            NewEntities::CustomerWithDeal { kind, deal } => {
                let customer = NewEntity {
                    name: label.clone(),
                    ..base.clone()
                };
                let customer_ref = insert_entity(tx, owner_id, &customer, now).await?;
                created.push(customer_ref.clone());
                if let Some(target) = deal {
                    let (contact, company) = match kind {
                        SimpleCreates::Contact => (Some(customer_ref.id.clone()), None),
                        SimpleCreates::Company => (None, Some(customer_ref.id.clone())),
                    };
                    let deal = NewEntity {
                        kind: EntityKind::Deal,
                        name: format!("{verb} {label}"),
                        identifiers: Vec::new(),
                        deal: Some(NewDealFields {
                            contact,
                            company,
                            pipeline: target.pipeline.clone(),
                            stage: target.stage.clone(),
                        }),
                        ..base
                    };
                    created.push(
                        insert_entity(tx, &uuid::Uuid::now_v7().to_string(), &deal, now).await?,
                    );
                }
            }
            NewEntities::DealFor { customer, deal } => {
                let (contact, company) = match customer.kind {
                    EntityKind::Company => (None, Some(customer.id.clone())),
                    _ => (Some(customer.id.clone()), None),
                };
                let new = NewEntity {
                    kind: EntityKind::Deal,
                    name: format!("{verb} {label}"),
                    identifiers: Vec::new(),
                    deal: Some(NewDealFields {
                        contact,
                        company,
                        pipeline: deal.pipeline.clone(),
                        stage: deal.stage.clone(),
                    }),
                    ..base
                };
                created.push(insert_entity(tx, owner_id, &new, now).await?);
            }
        }
        Ok(created)
    }

    /// Answered / ended on a call already in the log.
    async fn advance_call(
        &self,
        tx: &mut Tx<'_>,
        call: &CallRecord,
        event: &CallEvent,
    ) -> Result<()> {
        match event.event {
            CallEventKind::Ringing => Ok(()),
            CallEventKind::Answered => {
                sqlx::query(
                    "UPDATE calls SET answered_at = COALESCE(answered_at, $2), \
                     answered_by = COALESCE($3, answered_by) WHERE id = $1",
                )
                .bind(call.id.as_str())
                .bind(event.at)
                .bind(event.user.as_ref().map(UserId::as_str))
                .execute(&mut **tx)
                .await?;
                if call.ended_at.is_some() && call.outcome == Some(CallOutcome::Missed) {
                    // `ended` overtook `answered` (PBXs send from several threads): the
                    // call was answered after all, so it is no call-back task.
                    sqlx::query("UPDATE calls SET outcome = 'answered' WHERE id = $1")
                        .bind(call.id.as_str())
                        .execute(&mut **tx)
                        .await?;
                    if let Some(activity) = &call.activity {
                        let subject = activity_subject(
                            call.direction,
                            &call.customer_label(),
                            Some(CallOutcome::Answered),
                        );
                        sqlx::query(
                            "UPDATE activities SET completed = 1, completed_at = $2, subject = $3 \
                             WHERE id = $1",
                        )
                        .bind(activity.as_str())
                        .bind(call.ended_at)
                        .bind(subject)
                        .execute(&mut **tx)
                        .await?;
                    }
                }
                self.reassign_on_transfer(tx, call, event).await
            }
            CallEventKind::Ended => {
                let answered = call.answered_at.is_some();
                let outcome = event.outcome.unwrap_or(if answered {
                    CallOutcome::Answered
                } else {
                    CallOutcome::Missed
                });
                sqlx::query(
                    "UPDATE calls SET ended_at = COALESCE(ended_at, $2), outcome = $3 WHERE id = $1",
                )
                .bind(call.id.as_str())
                .bind(event.at)
                .bind(outcome.as_str())
                .execute(&mut **tx)
                .await?;
                if let Some(activity) = &call.activity {
                    // T13: a missed incoming call stays open as "call back".
                    let completed = call_completes_activity(call.direction, outcome);
                    let subject =
                        activity_subject(call.direction, &call.customer_label(), Some(outcome));
                    sqlx::query(
                        "UPDATE activities SET completed = $2, completed_at = $3, subject = $4 \
                         WHERE id = $1",
                    )
                    .bind(activity.as_str())
                    .bind(i64::from(completed))
                    .bind(completed.then_some(event.at))
                    .bind(subject)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }
        }
    }

    /// T10: with "change the responsible person when the call is transferred", whoever
    /// answers a call that created entities becomes their responsible.
    async fn reassign_on_transfer(
        &self,
        tx: &mut Tx<'_>,
        call: &CallRecord,
        event: &CallEvent,
    ) -> Result<()> {
        let (Some(user), Some(number)) = (&event.user, &call.number) else {
            return Ok(());
        };
        if call.responsible.as_ref() == Some(user) || call.created.is_empty() {
            return Ok(());
        }
        let Some(settings) = self.number_settings(number).await? else {
            return Ok(());
        };
        if !settings.change_responsible_on_transfer {
            return Ok(());
        }
        for entity in &call.created {
            sqlx::query(dynamic_sql!(
                "UPDATE {} SET responsible = $2 WHERE id = $1",
                table(entity.kind)
            ))
            .bind(entity.id.as_str())
            .bind(user.as_str())
            .execute(&mut **tx)
            .await?;
        }
        for sql in [
            "UPDATE calls SET responsible = $2 WHERE id = $1",
            "UPDATE activities SET responsible = $2 WHERE call_id = $1",
        ] {
            sqlx::query(sql)
                .bind(call.id.as_str())
                .bind(user.as_str())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn first_answer(&self, tx: &mut Tx<'_>, call_id: &str) -> Result<EventAnswer> {
        let row = sqlx::query(
            "SELECT response FROM call_events WHERE call_id = $1 AND response IS NOT NULL \
             ORDER BY created_at LIMIT 1",
        )
        .bind(call_id)
        .fetch_optional(&mut **tx)
        .await?;
        match row {
            Some(row) => serde_json::from_str(&col::<String>(&row, "response")?)
                .map_err(|e| StoreError::Corrupt(format!("call_events.response: {e}"))),
            None => Ok(EventAnswer::default()),
        }
    }

    pub async fn call_by_call_id(&self, call_id: &str) -> Result<Option<CallRecord>> {
        let row = sqlx::query("SELECT * FROM calls WHERE call_id = $1")
            .bind(call_id)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(call_from_row).transpose()
    }

    /// Reads a call inside the transaction after taking its row lock. The no-op update
    /// locks the row on PostgreSQL until commit; on SQLite the single writer already
    /// serialises it.
    async fn locked_call(&self, tx: &mut Tx<'_>, call_id: &str) -> Result<Option<CallRecord>> {
        sqlx::query("UPDATE calls SET started_at = started_at WHERE call_id = $1")
            .bind(call_id)
            .execute(&mut **tx)
            .await?;
        self.call_by_call_id_in(tx, call_id).await
    }

    async fn call_by_call_id_in(
        &self,
        tx: &mut Tx<'_>,
        call_id: &str,
    ) -> Result<Option<CallRecord>> {
        let row = sqlx::query("SELECT * FROM calls WHERE call_id = $1")
            .bind(call_id)
            .fetch_optional(&mut **tx)
            .await?;
        row.as_ref().map(call_from_row).transpose()
    }

    pub async fn get_call(&self, id: &str) -> Result<CallRecord> {
        let row = sqlx::query("SELECT * FROM calls WHERE id = $1")
            .bind(id)
            .fetch_optional(self.reader())
            .await?
            .ok_or_else(|| StoreError::not_found("call", id))?;
        call_from_row(&row)
    }

    /// The call log, newest first.
    pub async fn list_calls(&self, filter: &CallFilter, page: &Page) -> Result<Paged<CallRecord>> {
        let mut sql = "SELECT * FROM calls WHERE ($1 = '' OR id < $1)".to_owned();
        let mut binds = vec![page.after().to_owned()];
        if let Some(user) = &filter.user {
            binds.push(user.to_string());
            let n = binds.len();
            sql.push_str(&format!(
                " AND (user_id = ${n} OR answered_by = ${n} OR responsible = ${n})"
            ));
        }
        if let Some(customer) = &filter.customer {
            binds.push(customer.clone());
            sql.push_str(&format!(" AND customer = ${}", binds.len()));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", binds.len() + 1));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in &binds {
            query = query.bind(bind.as_str());
        }
        let rows = query
            .bind(page.sql_limit())
            .fetch_all(self.reader())
            .await?;
        let calls = rows.iter().map(call_from_row).collect::<Result<Vec<_>>>()?;
        Ok(page.finish(calls, |c| c.id.to_string()))
    }

    /// T4: the agent chose "create lead" / "create contact" in the call window.
    pub async fn create_entity_for_call(
        &self,
        call_id: &str,
        kind: EntityKind,
        responsible: Option<UserId>,
    ) -> Result<(CallRecord, EntityRef)> {
        let call = self.get_call(call_id).await?;
        let Some(customer) = call.customer.clone() else {
            return Err(StoreError::invalid(
                "call",
                "this call has no caller number to create an entity for",
            ));
        };
        if call.crm_action != CrmAction::Offered {
            return Err(StoreError::Conflict {
                code: "not_offered",
                message: format!(
                    "this call was {} ({}); only calls whose number asks the agent (manual \
                     lead creation) can create an entity by hand",
                    call.crm_action, call.crm_reason
                ),
            });
        }
        let number = match &call.number {
            Some(n) => self.number_settings(n).await?,
            None => None,
        };
        let responsible = match responsible {
            Some(user) => Some(user),
            None => match number.as_ref().and_then(|n| n.queue.as_ref()) {
                Some(queue) => self.take_queue_turn(queue).await?,
                None => None,
            },
        };
        let identifier = Identifier::Phone(super::matching::stored_phone_key(&customer));
        let now = now_ms();
        let entity_id = uuid::Uuid::now_v7().to_string();
        let new = NewEntity {
            kind,
            name: format!(
                "{} {}",
                match call.direction {
                    Direction::Incoming => "Call from",
                    Direction::Outgoing => "Call to",
                },
                customer
            ),
            identifiers: vec![identifier],
            responsible: responsible.clone(),
            source: number.as_ref().map_or_else(
                || crate::crm::model::SOURCE_CALL.to_owned(),
                |n| n.source.clone(),
            ),
            company: None,
            customer: None,
            deal: None,
        };
        let mut tx = self.writer().begin().await?;
        let entity_ref = EntityRef::new(kind, &entity_id);
        if !claim_identifier(&mut tx, &customer, &entity_ref, now).await? {
            return Err(StoreError::Conflict {
                code: "duplicate_identifier",
                message: format!(
                    "{customer} already belongs to an entity; the call is attached there instead (M7)"
                ),
            });
        }
        let entity = insert_entity(&mut tx, &entity_id, &new, now).await?;
        let event = CallEvent {
            call_id: call.call_id.clone(),
            event: CallEventKind::Ringing,
            direction: call.direction,
            from: call.from.clone(),
            to: call.to.clone(),
            user: call.user.clone(),
            outcome: call.outcome,
            at: call.started_at,
        };
        let activity = insert_call_activity(
            &mut tx,
            &event,
            &call.id,
            std::slice::from_ref(&entity),
            None,
            "created by the agent from the call window (T4)",
            responsible.as_ref(),
            now,
        )
        .await?;
        if let Some(outcome) = call.outcome {
            let completed = call_completes_activity(call.direction, outcome);
            sqlx::query("UPDATE activities SET completed = $2, completed_at = $3 WHERE id = $1")
                .bind(activity.as_str())
                .bind(i64::from(completed))
                .bind(completed.then_some(call.ended_at.unwrap_or(now)))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE calls SET crm_action = 'created', crm_reason = $2, created_entities = $3, \
             activity_id = $4, responsible = COALESCE(responsible, $5) WHERE id = $1",
        )
        .bind(call.id.as_str())
        .bind(format!("created {kind} by hand (T4)"))
        .bind(json_list(&[entity.to_string()]))
        .bind(activity.as_str())
        .bind(responsible.as_ref().map(UserId::as_str))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((self.get_call(call_id).await?, entity))
    }

    /// T9 outside a call event: take the queue's next turn.
    async fn take_queue_turn(&self, queue: &crate::crm::model::QueueId) -> Result<Option<UserId>> {
        let Some(mut state) = self.queue_state(queue).await? else {
            return Ok(None);
        };
        let row = sqlx::query(
            "UPDATE queues SET rotation = rotation + 1 WHERE id = $1 RETURNING rotation",
        )
        .bind(queue.as_str())
        .fetch_one(self.writer())
        .await?;
        state.rotation = col::<i64>(&row, "rotation")? - 1;
        Ok(state.next_member().cloned())
    }

    /// The timeline of an entity, newest first.
    pub async fn list_activities(
        &self,
        entity: &EntityRef,
        page: &Page,
    ) -> Result<Paged<ActivityRecord>> {
        let rows = sqlx::query(
            "SELECT a.* FROM activities a JOIN activity_entities ae ON ae.activity_id = a.id \
             WHERE ae.entity_kind = $1 AND ae.entity_id = $2 AND ($3 = '' OR a.id < $3) \
             ORDER BY a.id DESC LIMIT $4",
        )
        .bind(entity.kind.as_str())
        .bind(entity.id.as_str())
        .bind(page.after())
        .bind(page.sql_limit())
        .fetch_all(self.reader())
        .await?;
        let mut activities = rows
            .iter()
            .map(activity_from_row)
            .collect::<Result<Vec<_>>>()?;
        for activity in &mut activities {
            let links = sqlx::query(
                "SELECT entity_kind, entity_id FROM activity_entities WHERE activity_id = $1 \
                 ORDER BY entity_kind, entity_id",
            )
            .bind(activity.id.as_str())
            .fetch_all(self.reader())
            .await?;
            for link in &links {
                let kind: String = col(link, "entity_kind")?;
                activity.entities.push(EntityRef::new(
                    parse_stored(&kind, "activity_entities.entity_kind")?,
                    col::<String>(link, "entity_id")?,
                ));
            }
        }
        Ok(page.finish(activities, |a| a.id.clone()))
    }
}

enum Applied {
    Done(EventAnswer),
    LostRace,
}

impl CallRecord {
    fn customer_label(&self) -> String {
        self.customer
            .clone()
            .unwrap_or_else(|| match self.direction {
                Direction::Incoming => self.from.clone(),
                Direction::Outgoing => self.to.clone(),
            })
    }
}

fn stored_match(candidate: &Candidate) -> StoredMatch {
    StoredMatch {
        entity: candidate.entity.clone(),
        responsible: candidate.responsible.clone(),
    }
}

fn activity_subject(direction: Direction, customer: &str, outcome: Option<CallOutcome>) -> String {
    let base = match direction {
        Direction::Incoming => format!("Incoming call from {customer}"),
        Direction::Outgoing => format!("Outgoing call to {customer}"),
    };
    match outcome {
        Some(CallOutcome::Answered) | None => base,
        Some(CallOutcome::Missed | CallOutcome::Cancelled) if direction == Direction::Incoming => {
            format!("Call back: missed call from {customer}")
        }
        Some(other) => format!("{base} ({other})"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn insert_call_activity(
    tx: &mut Tx<'_>,
    event: &CallEvent,
    call_row_id: &CallRecordId,
    entities: &[EntityRef],
    matched: Option<&Candidate>,
    reason: &str,
    responsible: Option<&UserId>,
    now: Millis,
) -> Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    let customer = match event.direction {
        Direction::Incoming => &event.from,
        Direction::Outgoing => &event.to,
    };
    sqlx::query(
        "INSERT INTO activities (id, kind, direction, subject, completed, responsible, call_id, \
         matched, match_reason, created_at) VALUES ($1, 'call', $2, $3, 0, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(event.direction.as_str())
    .bind(activity_subject(event.direction, customer, None))
    .bind(responsible.map(UserId::as_str))
    .bind(call_row_id.as_str())
    .bind(matched.map(|m| m.entity.to_string()))
    .bind(reason)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let mut seen = std::collections::HashSet::new();
    for entity in entities.iter().filter(|e| seen.insert((*e).clone())) {
        sqlx::query(
            "INSERT INTO activity_entities (activity_id, entity_kind, entity_id) VALUES ($1, $2, $3)",
        )
        .bind(&id)
        .bind(entity.kind.as_str())
        .bind(entity.id.as_str())
        .execute(&mut **tx)
        .await?;
        sqlx::query(dynamic_sql!(
            "UPDATE {} SET last_activity_at = $2 WHERE id = $1",
            table(entity.kind)
        ))
        .bind(entity.id.as_str())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(id)
}

fn call_from_row(row: &AnyRow) -> Result<CallRecord> {
    let direction: String = col(row, "direction")?;
    let outcome: Option<String> = col(row, "outcome")?;
    let action: String = col(row, "crm_action")?;
    let created: String = col(row, "created_entities")?;
    let route: String = col(row, "route")?;
    Ok(CallRecord {
        id: CallRecordId(col(row, "id")?),
        call_id: col(row, "call_id")?,
        direction: parse_stored(&direction, "calls.direction")?,
        from: col(row, "from_raw")?,
        to: col(row, "to_raw")?,
        customer: col(row, "customer")?,
        number: col(row, "number")?,
        user: col::<Option<String>>(row, "user_id")?.map(UserId),
        answered_by: col::<Option<String>>(row, "answered_by")?.map(UserId),
        responsible: col::<Option<String>>(row, "responsible")?.map(UserId),
        started_at: col(row, "started_at")?,
        answered_at: col(row, "answered_at")?,
        ended_at: col(row, "ended_at")?,
        outcome: outcome
            .map(|o| parse_stored(&o, "calls.outcome"))
            .transpose()?,
        crm_action: parse_stored(&action, "calls.crm_action")?,
        crm_reason: col(row, "crm_reason")?,
        created: parse_json_list(&created, "calls.created_entities")?
            .iter()
            .map(|e| parse_stored(e, "calls.created_entities"))
            .collect::<Result<Vec<_>>>()?,
        route: parse_json_list(&route, "calls.route")?
            .into_iter()
            .map(UserId)
            .collect(),
        activity: col(row, "activity_id")?,
        recording: col(row, "recording")?,
    })
}

fn activity_from_row(row: &AnyRow) -> Result<ActivityRecord> {
    let kind: String = col(row, "kind")?;
    let direction: String = col(row, "direction")?;
    Ok(ActivityRecord {
        id: col(row, "id")?,
        kind: parse_stored(&kind, "activities.kind")?,
        direction: parse_stored(&direction, "activities.direction")?,
        subject: col(row, "subject")?,
        completed: col::<i64>(row, "completed")? == 1,
        responsible: col::<Option<String>>(row, "responsible")?.map(UserId),
        call: col(row, "call_id")?,
        matched: col(row, "matched")?,
        match_reason: col(row, "match_reason")?,
        entities: Vec::new(),
        created_at: col(row, "created_at")?,
        completed_at: col(row, "completed_at")?,
    })
}
