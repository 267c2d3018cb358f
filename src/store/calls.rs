//! The call log and call activities: applies call events through the intake.
//!
//! A call event is applied in one transaction: the (call, event) idempotency row, the
//! intake's decision (entities, activity, queue rotation) and the call log row commit
//! together or not at all. Opening `ringing` events go through the group commit of
//! `batch`; the intake itself is written by `intake`. Two rules hold however many processes share the database:
//! a repeated event changes nothing (primary key on `call_events`), and a new identifier
//! creates one entity (primary key on `identifier_owners`, M7).

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

use super::activities::{activity_subject, insert_call_activity};
use super::audit::HandedAudit;
use super::entities::{NewEntity, Tx, claim_identifier, insert_entity, table};
use super::intake::{BatchOutcome, IntakeJob, JobResult, apply_intakes};
use super::rows::FilteredPage;
use super::script::Stmt;
use super::snapshot::ConfigSnapshot;
pub use super::steps::{EventStep, StepDone, StepJob};
use super::{
    Page, Paged, Result, Store, StoreError, col, json_list, now_ms, parse_json_list, parse_stored,
};
use crate::cluster::NodeId;
use crate::crm::decision::DecisionRecord;
use crate::crm::dry_run::PastCall;
use crate::crm::intake::{CallFacts, call_completes_activity};
use crate::crm::model::{
    CallEventKind, CallOutcome, CallRecordId, CrmAction, Direction, EntityKind, EntityRef, Millis,
    NumberId, QueueId, UserId,
};
use crate::matcher::{Candidate, Identifier, MatchOutcome};

/// A call event as pushed by a PBX or produced by our own B2BUA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The first redirecting number of a forwarded call, as received (Diversion,
    /// History-Info, or the PBX's `diverted_from`). Absent in journals written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverted_from: Option<String>,
    /// The carrier's verification of the caller (`verstat`), as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verstat: Option<String>,
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
    /// Length of the recording.
    pub recording_ms: Option<i64>,
    /// The recording is a voicemail message the caller left.
    pub voicemail: bool,
    /// What the media relay measured (JSON of `media::relay::MediaStats`).
    pub media: Option<serde_json::Value>,
    /// The legs the B2BUA rang (empty for calls pushed over `/calls/events`).
    pub legs: Vec<CallLeg>,
    /// The queue of the number the call came in on.
    pub queue: Option<QueueId>,
    /// How long the caller waited in the queue; `None` when they never waited.
    pub wait_ms: Option<i64>,
    /// Why the intake did what it did; `None` for calls logged before records existed.
    pub decision: Option<DecisionRecord>,
    /// The first redirecting number of a forwarded call (E.164 when it normalises).
    pub diverted_from: Option<String>,
    /// The carrier's verification of the caller, as received.
    pub verstat: Option<String>,
    /// T6: the trust rule that kept the call out of the CRM.
    pub trust_flag: Option<crate::crm::trust::TrustFlag>,
}

/// One outgoing leg of a routed call: a device of an employee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLeg {
    pub user: UserId,
    /// The device's Contact URI.
    pub target: String,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
    /// `ringing`, `answered`, `busy`, `declined`, `cancelled`, `no_answer` or `failed`.
    pub state: String,
    /// The SIP status that ended the leg, if one did.
    pub status: Option<u16>,
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
    /// The name and responsible of [`EventAnswer::shown_entity`] as the intake wrote or
    /// matched it: what the agent's phone shows, without reading the entity again.
    /// Absent in answers stored before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown: Option<ShownEntity>,
}

/// The CRM's name for a caller and who is responsible for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownEntity {
    pub name: String,
    pub responsible: Option<UserId>,
}

impl EventAnswer {
    /// The entity a call is shown as (the call window, the phone's display): the best
    /// match, else what the call created (a deal only with its contact or company).
    pub fn shown_entity(&self) -> Option<EntityRef> {
        self.matches.first().map(|m| m.entity.clone()).or_else(|| {
            self.created
                .iter()
                .find(|e| e.kind != EntityKind::Deal)
                .cloned()
        })
    }
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

/// Filters of the call log.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    /// Calls that involve this employee (dialled, answered or responsible).
    pub user: Option<UserId>,
    /// Calls that concern this employee: they placed or answered it, it rang them, or
    /// the customer is theirs (the agent's own calls of the call log).
    pub mine: Option<UserId>,
    pub customer: Option<String>,
    /// Only calls that ended so (`Some(true)`), or not so (`Some(false)`).
    pub outcome: Option<(CallOutcome, bool)>,
    /// Our number (E.164).
    pub number: Option<String>,
    /// Started at or after (UTC ms).
    pub started_from: Option<Millis>,
    /// Started before (UTC ms).
    pub started_before: Option<Millis>,
    /// Calls whose activity is on this entity.
    pub entity: Option<EntityRef>,
    /// Access: only calls that may concern the agent or be on entities they see.
    pub visible_to: Option<super::access::ListScope>,
}

/// `(calls concern the employee at {me})`: they placed or answered it, it is theirs, or
/// it rang them (`{quoted}`: the id quoted for the JSON route and legs). The one
/// definition of "my calls", shared by the agent's scope and `?mine=true`.
fn concerns_clause(query: &mut FilteredPage, me: &UserId) -> String {
    let id = query.bind(me.to_string());
    // Route and legs are JSON; user ids are UUIDs, so no LIKE wildcard in them.
    let quoted = query.bind(format!("%\"{me}\"%"));
    format!(
        "calls.user_id = {id} OR calls.answered_by = {id} OR calls.responsible = {id} \
         OR calls.route LIKE {quoted} OR calls.legs LIKE {quoted}"
    )
}

/// What the intake's group commit did with one opening event (tests).
#[doc(hidden)]
#[derive(Debug)]
pub enum Opening {
    Fresh(Box<EventOutcome>),
    /// This (call, event) was applied before.
    Repeated,
    /// The call was logged by another of its events meanwhile: the event is retried
    /// as a later step.
    LostRace,
}

/// What the intake decides a call event by: the customer's side of it and who dialled.
fn facts_of(event: &CallEvent) -> CallFacts {
    CallFacts {
        direction: event.direction,
        customer_raw: match event.direction {
            Direction::Incoming => event.from.clone(),
            Direction::Outgoing => event.to.clone(),
        },
        user: event.user.clone(),
        trust_flag: None,
    }
}

/// The most times a decision is retried after losing a race for an identifier (M7) or a
/// queue turn: each retry sees the winner's commit, so two are always enough.
const MAX_DECISION_ROUNDS: usize = 3;

impl Store {
    /// Applies one call event (API.md `/calls/events`), exactly once per (call, event).
    pub async fn apply_call_event(&self, event: &CallEvent) -> Result<EventOutcome> {
        self.apply_replayable_call_event(event, None).await
    }

    /// [`Store::apply_call_event`] for a call this process's B2BUA runs live: a call it
    /// opens is logged as `node`'s, so that other nodes close it if this one is lost. A
    /// live call's Call-ID was just received, so no erasure can have left a tombstone of
    /// it: the tombstone look-up, a database read, stays off the way to the first ring.
    pub async fn apply_call_event_on(
        &self,
        event: &CallEvent,
        node: Option<&NodeId>,
    ) -> Result<EventOutcome> {
        self.apply_call_event_inner(event, node).await
    }

    /// An event that may be a replay (pushed by a PBX, or read back from the journal): an
    /// erased call's events are answered as repeats, so a replay never brings the person
    /// back.
    pub(crate) async fn apply_replayable_call_event(
        &self,
        event: &CallEvent,
        node: Option<&NodeId>,
    ) -> Result<EventOutcome> {
        if let Some(kept_as) = self.erased_call(&event.call_id).await? {
            // An erased call's events are answered as repeats: replaying them must not
            // bring the person back.
            if let Some(call) = self.call_by_call_id(&kept_as).await? {
                return Ok(EventOutcome {
                    call,
                    answer: EventAnswer::default(),
                    repeated: true,
                });
            }
        }
        self.apply_call_event_inner(event, node).await
    }

    async fn apply_call_event_inner(
        &self,
        event: &CallEvent,
        node: Option<&NodeId>,
    ) -> Result<EventOutcome> {
        let facts = facts_of(event);
        for round in 0..MAX_DECISION_ROUNDS {
            // The first event of a call (of whatever kind) runs the intake; later ones only
            // move the call along, group-committed (`steps`), which also finds whether the
            // call is logged yet. A `ringing` almost always opens its call, so the first
            // round goes straight to the intake: a late `ringing` hits the call log's
            // unique key (a lost race) and the next round moves the logged call along.
            if round > 0 || event.event != CallEventKind::Ringing {
                // An API request's audit row is written in the transaction that applies
                // its event (or finds it a repeat), never after it.
                let audit = HandedAudit::take();
                let step = StepJob::Event(event.clone());
                match self.steps().submit_audited(step, audit.row()).await? {
                    StepDone::Event(EventStep::Applied(outcome)) => {
                        audit.committed();
                        metrics::counter!("leadline_call_events_total", "event" => event.event.as_str(),
                            "crm_action" => outcome.call.crm_action.as_str())
                        .increment(1);
                        return Ok(*outcome);
                    }
                    StepDone::Event(EventStep::Repeated) => {
                        audit.committed();
                        return self.repeated_event(event).await;
                    }
                    // Not logged yet: this event opens the call.
                    StepDone::Event(EventStep::NotLogged) | StepDone::Written => {}
                }
            }
            let context = self.intake_context(event, &facts).await?;
            let facts = CallFacts {
                trust_flag: context.trust_flag,
                ..facts.clone()
            };
            let audit = HandedAudit::take();
            let job = IntakeJob::new(
                event.clone(),
                facts,
                context,
                node.map(|n| n.as_str().to_owned()),
            )
            .with_audit(audit.row());
            let result = if event.event == CallEventKind::Ringing {
                let result = self.batcher().submit(job).await?;
                // An answered job's batch committed its row (a lost race rolled it back).
                if result.is_some() {
                    audit.committed();
                }
                result
            } else {
                let result = self.open_call_with_step(job).await?;
                // Only an opened call is committed; a repeat is rolled back there.
                if matches!(result, Some(JobResult::Fresh(_))) {
                    audit.committed();
                }
                result
            };
            match result {
                Some(JobResult::Fresh(outcome)) => {
                    metrics::counter!("leadline_call_events_total", "event" => event.event.as_str(),
                        "crm_action" => outcome.call.crm_action.as_str())
                    .increment(1);
                    return Ok(*outcome);
                }
                Some(JobResult::Repeated) => return self.repeated_event(event).await,
                // Lost a race with a concurrent event: look again.
                None => continue,
            }
        }
        Err(StoreError::Conflict {
            code: "contention",
            message: "the call event kept losing races with concurrent events; retry it".to_owned(),
        })
    }

    /// Tests: the steps applied as one batch of the steps' group commit, as if they had
    /// all been waiting for it together (what a busy gateway does by chance).
    #[doc(hidden)]
    pub async fn apply_steps_as_one_batch(
        &self,
        steps: Vec<StepJob>,
    ) -> Result<Vec<Result<StepDone>>> {
        let snapshot = self.config_snapshot().await?;
        let audits = vec![None; steps.len()];
        Ok(super::steps::settle(self.writer(), &snapshot, &steps, &audits).await)
    }

    /// Tests: the calls' opening events applied as one batch of the intake's group
    /// commit, lost races and failures replayed as the writer does.
    #[doc(hidden)]
    pub async fn apply_openings_as_one_batch(
        &self,
        events: &[CallEvent],
    ) -> Result<Vec<Result<Opening>>> {
        let mut jobs = Vec::with_capacity(events.len());
        for event in events {
            let facts = facts_of(event);
            let context = self.intake_context(event, &facts).await?;
            let facts = CallFacts {
                trust_flag: context.trust_flag,
                ..facts
            };
            jobs.push(IntakeJob::new(event.clone(), facts, context, None));
        }
        Ok(super::batch::settle(self.writer(), jobs)
            .await
            .into_iter()
            .map(|result| {
                result.map(|r| match r {
                    Some(JobResult::Fresh(outcome)) => Opening::Fresh(outcome),
                    Some(JobResult::Repeated) => Opening::Repeated,
                    None => Opening::LostRace,
                })
            })
            .collect())
    }

    /// A call whose first event is `answered` or `ended` (the PBX sent no `ringing`):
    /// the intake and that step in one transaction.
    async fn open_call_with_step(&self, job: IntakeJob) -> Result<Option<JobResult>> {
        let mut tx = self.writer().begin().await?;
        let outcome = apply_intakes(&mut tx, std::slice::from_ref(&job), now_ms()).await?;
        match outcome {
            BatchOutcome::Done(mut results) => match results.pop() {
                Some(JobResult::Fresh(opened)) => {
                    let call = locked_call(&mut tx, &job.event.call_id)
                        .await?
                        .ok_or_else(|| StoreError::not_found("call", job.event.call_id.as_str()))?;
                    advance_call(&mut tx, &self.cache().snapshot(), &call, &job.event).await?;
                    tx.commit().await?;
                    let call = self.get_call(opened.call.id.as_str()).await?;
                    Ok(Some(JobResult::Fresh(Box::new(EventOutcome {
                        call,
                        ..*opened
                    }))))
                }
                other => {
                    tx.rollback().await?;
                    Ok(other)
                }
            },
            BatchOutcome::LostRace => {
                tx.rollback().await?;
                Ok(None)
            }
        }
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

    /// A call the B2BUA transferred (REFER) to `user`, who answered: they are now the
    /// one who answered it, and T10 moves what the call created to them when the
    /// number says so. Not an idempotent event: a call may be transferred many times.
    pub async fn call_transferred(&self, call_id: &str, user: &UserId, at: Millis) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        let Some(call) = locked_call(&mut tx, call_id).await? else {
            tx.rollback().await?;
            return Err(StoreError::not_found("call", call_id));
        };
        sqlx::query("UPDATE calls SET answered_by = $2 WHERE id = $1")
            .bind(call.id.as_str())
            .bind(user.as_str())
            .execute(&mut *tx)
            .await?;
        let event = CallEvent {
            call_id: call_id.to_owned(),
            event: CallEventKind::Answered,
            direction: call.direction,
            from: call.from.clone(),
            to: call.to.clone(),
            user: Some(user.clone()),
            outcome: None,
            at,
            diverted_from: None,
            verstat: None,
        };
        let mut call = call;
        for stmt in reassign_on_transfer(&self.cache().snapshot(), &mut call, &event) {
            stmt.execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records the legs of a routed call (the B2BUA, when the call ends).
    pub async fn set_call_legs(&self, call_id: &str, legs: &[CallLeg]) -> Result<()> {
        let legs = serde_json::to_string(legs)
            .map_err(|e| StoreError::Corrupt(format!("calls.legs: {e}")))?;
        // Group-committed with the other calls' steps.
        self.steps()
            .submit(StepJob::Legs {
                call_id: call_id.to_owned(),
                legs,
            })
            .await?;
        Ok(())
    }

    /// Records the queue a call came in on and how long its caller waited there
    /// (`None`: never waited).
    pub async fn set_call_queue(
        &self,
        call_id: &str,
        queue: &QueueId,
        wait_ms: Option<i64>,
    ) -> Result<()> {
        sqlx::query("UPDATE calls SET queue_id = $2, wait_ms = $3 WHERE call_id = $1")
            .bind(call_id)
            .bind(queue.as_str())
            .bind(wait_ms)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    pub async fn call_by_call_id(&self, call_id: &str) -> Result<Option<CallRecord>> {
        let row = sqlx::query("SELECT * FROM calls WHERE call_id = $1")
            .bind(call_id)
            .fetch_optional(self.reader())
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
        let mut query = FilteredPage::new(
            "SELECT * FROM calls WHERE ($1 = '' OR id < $1)".to_owned(),
            page.after(),
        );
        if let Some(user) = &filter.user {
            query.and(
                "(user_id = $? OR answered_by = $? OR responsible = $?)",
                user.to_string(),
            );
        }
        if let Some(customer) = &filter.customer {
            query.and("customer = $?", customer.clone());
        }
        if let Some(me) = &filter.mine {
            let mine = concerns_clause(&mut query, me);
            query.and_clause(&mine);
        }
        match filter.outcome {
            Some((outcome, true)) => query.and("calls.outcome = $?", outcome.to_string()),
            Some((outcome, false)) => query.and(
                "(calls.outcome IS NULL OR calls.outcome <> $?)",
                outcome.to_string(),
            ),
            None => {}
        }
        if let Some(number) = &filter.number {
            query.and("calls.number = $?", number.clone());
        }
        if let Some(from) = filter.started_from {
            let from = query.bind_int(from);
            query.and_clause(&format!("calls.started_at >= {from}"));
        }
        if let Some(before) = filter.started_before {
            let before = query.bind_int(before);
            query.and_clause(&format!("calls.started_at < {before}"));
        }
        if let Some(entity) = &filter.entity {
            let kind = query.bind(entity.kind.as_str().to_owned());
            let id = query.bind(entity.id.clone());
            query.and_clause(&format!(
                "calls.id IN (SELECT a.call_id FROM activity_entities ae \
                 JOIN activities a ON a.id = ae.activity_id \
                 WHERE ae.entity_kind = {kind} AND ae.entity_id = {id} \
                 AND a.call_id IS NOT NULL)"
            ));
        }
        if let Some(scope) = &filter.visible_to {
            let concerns = concerns_clause(&mut query, &scope.me);
            let on_entities = super::access::activity_in_scope(
                &mut query,
                "activities a JOIN activity_entities ae ON ae.activity_id = a.id \
                 WHERE a.call_id = calls.id",
                scope.responsibles.as_deref(),
            );
            query.and_clause(&format!("{concerns} OR {on_entities}"));
        }
        let rows = query.fetch("id DESC", page, self.reader()).await?;
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
            diverted_from: call.diverted_from.clone(),
            verstat: call.verstat.clone(),
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
        // The record keeps what the intake found and says what the agent did with it.
        let mut decision = call.decision.clone().unwrap_or_default();
        decision.outcome = format!("created {entity} by hand (T4)");
        sqlx::query(
            "UPDATE calls SET crm_action = 'created', crm_reason = $2, created_entities = $3, \
             activity_id = $4, responsible = COALESCE(responsible, $5), decision = $6 \
             WHERE id = $1",
        )
        .bind(call.id.as_str())
        .bind(format!("created {kind} by hand (T4)"))
        .bind(json_list(&[entity.to_string()]))
        .bind(activity.as_str())
        .bind(responsible.as_ref().map(UserId::as_str))
        .bind(decision.to_json())
        .execute(&mut *tx)
        .await?;
        self.commit_change(tx, None).await?;
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
}

/// Answered / ended on a call already in the log.
pub(super) async fn advance_call(
    tx: &mut Tx<'_>,
    config: &ConfigSnapshot,
    call: &CallRecord,
    event: &CallEvent,
) -> Result<()> {
    let mut after = call.clone();
    for stmt in plan_advance(config, &mut after, event) {
        stmt.execute(tx).await?;
    }
    Ok(())
}

/// The writes of `answered` / `ended` on a call in the log, in the order they run, and
/// what they do to its row (`call` becomes the row as it reads after them). Pure: the
/// steps' group commit plans a whole batch with it and sends the statements at once.
pub(super) fn plan_advance(
    config: &ConfigSnapshot,
    call: &mut CallRecord,
    event: &CallEvent,
) -> Vec<Stmt> {
    let before = call.clone();
    let mut stmts = Vec::new();
    match event.event {
        CallEventKind::Ringing => {}
        CallEventKind::Answered => {
            stmts.push(
                Stmt::new(
                    "UPDATE calls SET answered_at = COALESCE(answered_at, $2), \
                     answered_by = COALESCE($3, answered_by) WHERE id = $1",
                )
                .bind(before.id.as_str())
                .bind(event.at)
                .bind(event.user.as_ref().map(ToString::to_string)),
            );
            call.answered_at.get_or_insert(event.at);
            if let Some(user) = &event.user {
                call.answered_by = Some(user.clone());
            }
            if before.ended_at.is_some() && before.outcome == Some(CallOutcome::Missed) {
                // `ended` overtook `answered` (PBXs send from several threads): the
                // call was answered after all, so it is no call-back task.
                stmts.push(
                    Stmt::new("UPDATE calls SET outcome = 'answered' WHERE id = $1")
                        .bind(before.id.as_str()),
                );
                call.outcome = Some(CallOutcome::Answered);
                if let Some(activity) = &before.activity {
                    let subject = activity_subject(
                        before.direction,
                        &before.customer_label(),
                        Some(CallOutcome::Answered),
                    );
                    stmts.push(
                        Stmt::new(
                            "UPDATE activities SET completed = 1, completed_at = $2, \
                             subject = $3 WHERE id = $1",
                        )
                        .bind(activity.as_str())
                        .bind(before.ended_at)
                        .bind(subject),
                    );
                }
            }
            stmts.extend(close_call_backs(&before, event.at));
            stmts.extend(reassign_on_transfer(config, call, event));
        }
        CallEventKind::Ended => {
            let answered = before.answered_at.is_some();
            let outcome = event.outcome.unwrap_or(if answered {
                CallOutcome::Answered
            } else {
                CallOutcome::Missed
            });
            stmts.push(
                Stmt::new(
                    "UPDATE calls SET ended_at = COALESCE(ended_at, $2), outcome = $3 \
                     WHERE id = $1",
                )
                .bind(before.id.as_str())
                .bind(event.at)
                .bind(outcome.as_str()),
            );
            call.ended_at.get_or_insert(event.at);
            call.outcome = Some(outcome);
            if let Some(activity) = &before.activity {
                // T13: a missed incoming call stays open as "call back".
                let completed = call_completes_activity(before.direction, outcome);
                let subject =
                    activity_subject(before.direction, &before.customer_label(), Some(outcome));
                stmts.push(
                    Stmt::new(
                        "UPDATE activities SET completed = $2, completed_at = $3, \
                         subject = $4 WHERE id = $1",
                    )
                    .bind(activity.as_str())
                    .bind(i64::from(completed))
                    .bind(completed.then_some(event.at))
                    .bind(subject),
                );
            }
        }
    }
    stmts
}

/// A customer who is called back, or calls again and is answered,
/// has been reached: the open "call back" activities of their earlier unanswered
/// calls are completed.
fn close_call_backs(call: &CallRecord, at: Millis) -> Option<Stmt> {
    let customer = call.customer.as_ref()?;
    Some(
        Stmt::new(
            "UPDATE activities SET completed = 1, completed_at = $3 \
             WHERE completed = 0 AND kind = 'call' AND id IN (SELECT activity_id FROM calls \
             WHERE customer = $1 AND id <> $2 AND activity_id IS NOT NULL \
             AND answered_at IS NULL)",
        )
        .bind(customer.as_str())
        .bind(call.id.as_str())
        .bind(at),
    )
}

/// T10: with "change the responsible person when the call is transferred", whoever
/// answers a call that created entities becomes their responsible (and of `call`).
fn reassign_on_transfer(
    config: &ConfigSnapshot,
    call: &mut CallRecord,
    event: &CallEvent,
) -> Vec<Stmt> {
    let (Some(user), Some(number)) = (&event.user, &call.number) else {
        return Vec::new();
    };
    if call.responsible.as_ref() == Some(user) || call.created.is_empty() {
        return Vec::new();
    }
    let Some(settings) = config.numbers.get(number) else {
        return Vec::new();
    };
    if !settings.change_responsible_on_transfer {
        return Vec::new();
    }
    let mut stmts: Vec<Stmt> = call
        .created
        .iter()
        .map(|entity| {
            Stmt::new(format!(
                "UPDATE {} SET responsible = $2 WHERE id = $1",
                table(entity.kind)
            ))
            .bind(entity.id.as_str())
            .bind(user.as_str())
        })
        .collect();
    for sql in [
        "UPDATE calls SET responsible = $2 WHERE id = $1",
        "UPDATE activities SET responsible = $2 WHERE call_id = $1",
    ] {
        stmts.push(Stmt::new(sql).bind(call.id.as_str()).bind(user.as_str()));
    }
    call.responsible = Some(user.clone());
    stmts
}

/// Reads a call inside the transaction after taking its row lock. The no-op update
/// locks the row on PostgreSQL until commit; on SQLite the single writer already
/// serialises it.
pub(super) async fn locked_call(tx: &mut Tx<'_>, call_id: &str) -> Result<Option<CallRecord>> {
    sqlx::query("UPDATE calls SET started_at = started_at WHERE call_id = $1")
        .bind(call_id)
        .execute(&mut **tx)
        .await?;
    call_by_call_id_in(tx, call_id).await
}

pub(super) async fn call_by_call_id_in(
    tx: &mut Tx<'_>,
    call_id: &str,
) -> Result<Option<CallRecord>> {
    let row = sqlx::query("SELECT * FROM calls WHERE call_id = $1")
        .bind(call_id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(call_from_row).transpose()
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

impl Store {
    /// The dry-run's reads: a number's last `last` incoming calls, oldest first, each
    /// customer matched as the database knows them now. Reads only.
    pub async fn past_calls(&self, number: &NumberId, last: u32) -> Result<Vec<PastCall>> {
        let rows = sqlx::query(
            "SELECT * FROM calls WHERE number_id = $1 AND direction = 'incoming' \
             ORDER BY started_at DESC, id DESC LIMIT $2",
        )
        .bind(number.as_str())
        .bind(i64::from(last))
        .fetch_all(self.reader())
        .await?;
        let mut calls = rows.iter().map(call_from_row).collect::<Result<Vec<_>>>()?;
        calls.reverse();
        let identifiers: Vec<Identifier> = calls
            .iter()
            .filter_map(|c| c.customer.as_deref())
            .map(|key| Identifier::Phone(super::matching::stored_phone_key(key)))
            .collect();
        let mut conn = self.reader().acquire().await?;
        let mut matched = super::matching::match_all(&mut conn, &identifiers)
            .await?
            .into_iter();
        let matched: Vec<Option<MatchOutcome>> = calls
            .iter()
            .map(|c| c.customer.as_ref().and_then(|_| matched.next()))
            .collect();
        let bests: Vec<Candidate> = matched
            .iter()
            .flatten()
            .filter_map(|m| m.chosen().cloned())
            .collect();
        let contexts = super::matching::customer_contexts(&mut conn, &bests).await?;
        Ok(calls
            .into_iter()
            .zip(matched)
            .map(|(call, matched)| {
                let customer = matched
                    .as_ref()
                    .and_then(MatchOutcome::chosen)
                    .and_then(|best| contexts.get(&best.entity).cloned())
                    .unwrap_or_default();
                // T9: the recorded decision says whether the call took a queue turn;
                // older rows without one did when they created something for someone.
                let took_turn = match &call.decision {
                    Some(record) => record.rules.iter().any(|r| r == "T9"),
                    None => call.crm_action == CrmAction::Created && call.responsible.is_some(),
                };
                PastCall {
                    facts: CallFacts {
                        direction: call.direction,
                        customer_raw: call.from.clone(),
                        user: call.user.clone(),
                        // The trust verdict the call got (T6) is replayed as recorded.
                        trust_flag: call.trust_flag,
                    },
                    id: call.id.0,
                    matched,
                    customer,
                    started_at: call.started_at,
                    route: call.route,
                    created: call.created,
                    took_turn,
                }
            })
            .collect())
    }
}

pub(super) fn call_from_row(row: &AnyRow) -> Result<CallRecord> {
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
        recording_ms: col(row, "recording_ms")?,
        voicemail: col::<i64>(row, "voicemail")? == 1,
        media: col::<Option<String>>(row, "media")?
            .and_then(|text| serde_json::from_str(&text).ok()),
        legs: match col::<Option<String>>(row, "legs")? {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("calls.legs: {e}")))?,
            None => Vec::new(),
        },
        queue: col::<Option<String>>(row, "queue_id")?.map(QueueId),
        wait_ms: col(row, "wait_ms")?,
        decision: DecisionRecord::from_stored(col::<Option<String>>(row, "decision")?.as_deref()),
        diverted_from: col(row, "diverted_from")?,
        verstat: col(row, "verstat")?,
        trust_flag: col::<Option<String>>(row, "trust_flag")?
            .as_deref()
            .and_then(crate::crm::trust::TrustFlag::parse),
    })
}
