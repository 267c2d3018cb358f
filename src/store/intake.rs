//! Applies the intake for the opening event of calls: a batch of jobs in one transaction.
//!
//! The reads happen before (`Store::intake_context`, mostly from the configuration
//! snapshot); here, inside the write transaction, the batch is planned with the pure
//! `crm::intake::decide` and written with multi-row statements. Two events in one batch
//! for the same new number are resolved in memory: the second one sees the entity the
//! first creates. Races with other transactions (another process claimed the number,
//! logged the call, or took queue turns) are detected by the database constraints and
//! reported as `LostRace`: the caller rolls back and retries each job alone with a fresh
//! look. Queue turns taken by others only shift the rotation: the batch is re-planned
//! with the turns it actually got.

use std::collections::{HashMap, HashSet};

use super::audit::{AuditRow, audit_rows};
use super::calls::{CallEvent, CallRecord, EventAnswer, EventOutcome, ShownEntity, StoredMatch};
use super::entities::{Tx, table};
use super::matching::{customer_contexts, match_all_named, match_statement, matched_from_rows};
use super::rows::{Cell, EntityRows, Rows, placeholders};
use super::script::{Stmt, joined, run_sqlite};
use super::{Result, Store, StoreError, col, json_list};
use crate::crm::decision::{Considered, DecisionRecord};
use crate::crm::intake::{
    CallFacts, CustomerContext, DealTarget, Decision, IntakeInput, NewEntities, NumberSettings,
    OpenDeal, PipelineEntry, Responsible, decide,
};
use crate::crm::model::{
    CallRecordId, CompanyId, ContactId, CrmAction, CrmSettings, DealId, Direction, EntityKind,
    EntityRef, Millis, QueueId, SimpleCreates, UserId,
};
use crate::crm::queue::{QueueState, ring_order};
use crate::crm::trust::{RATE_WINDOW_MS, TrustFacts, TrustFlag, Verstat, evaluate};
use crate::matcher::{Candidate, Exclusions, Identifier, MatchOutcome, MatchStatus, resolve};
use sqlx::AnyConnection;

/// Everything the intake reads, gathered before the write transaction.
#[derive(Debug, Clone)]
pub(crate) struct IntakeContext {
    pub number: Option<NumberSettings>,
    pub crm: CrmSettings,
    /// The number's queue and its members; the rotation is read in the transaction.
    pub queue: Option<(QueueId, Vec<UserId>)>,
    pub pipelines: Vec<PipelineEntry>,
    /// The customer's identifier; `None` for a withheld or anonymous caller.
    pub identifier: Option<Identifier>,
    /// The first redirecting number of a forwarded call, E.164 when it normalises.
    pub diverted_from: Option<String>,
    /// T6: the caller trust rule that keeps the call out of the CRM.
    pub trust_flag: Option<TrustFlag>,
}

/// One opening call event with what the intake read for it.
#[derive(Debug, Clone)]
pub(crate) struct IntakeJob {
    pub event: CallEvent,
    pub facts: CallFacts,
    pub ctx: IntakeContext,
    /// The node whose B2BUA opened the call (`calls.node_id`); `None` for pushed events.
    pub node: Option<String>,
    /// The audit row of the API change that pushed the event: committed with it.
    audit: Option<AuditRow>,
    /// Ids of what the job may create, fixed up front so re-planning keeps them.
    ids: JobIds,
}

#[derive(Debug, Clone)]
struct JobIds {
    /// The entity that takes the identifier (or the deal, for a deal of a known customer).
    owner: String,
    /// The deal created beside a new contact or company (simple mode).
    deal: String,
    call: CallRecordId,
    activity: String,
}

impl IntakeJob {
    pub fn new(
        event: CallEvent,
        facts: CallFacts,
        ctx: IntakeContext,
        node: Option<String>,
    ) -> Self {
        let id = || uuid::Uuid::now_v7().to_string();
        Self {
            event,
            facts,
            ctx,
            node,
            audit: None,
            ids: JobIds {
                owner: id(),
                deal: id(),
                call: CallRecordId::generate(),
                activity: id(),
            },
        }
    }

    /// The job with the audit row of the API change it carries out.
    pub fn with_audit(self, audit: Option<AuditRow>) -> Self {
        Self { audit, ..self }
    }
}

/// The audit rows a batch's jobs carry: every job of a batch that is applied (fresh or
/// a repeat) was an accepted request.
fn job_audit_rows(jobs: &[IntakeJob], now: Millis) -> Rows {
    audit_rows(jobs.iter().filter_map(|job| job.audit.as_ref()), now)
}

#[derive(Debug)]
pub(crate) enum JobResult {
    Fresh(Box<EventOutcome>),
    /// The (call, event) was applied before: answer with the stored first answer.
    Repeated,
}

#[derive(Debug)]
pub(crate) enum BatchOutcome {
    Done(Vec<JobResult>),
    /// A concurrent transaction got there first; roll back and retry with a fresh look.
    LostRace,
}

/// What the database knows about a fresh job's customer, read in the transaction.
struct Looked {
    matched: Option<MatchOutcome>,
    customer: CustomerContext,
}

/// What one fresh job will do.
struct Plan {
    matched: Option<MatchOutcome>,
    decision: Decision,
}

impl Store {
    /// What the intake needs for a call's opening event, from the configuration snapshot:
    /// no database round trip. Matching the customer happens in the write transaction,
    /// for the whole batch at once (`apply_intakes`).
    pub(crate) async fn intake_context(
        &self,
        event: &CallEvent,
        facts: &CallFacts,
    ) -> Result<IntakeContext> {
        let snapshot = self.config_snapshot().await?;
        let crm = snapshot.crm.clone();
        let our_side = match event.direction {
            Direction::Incoming => &event.to,
            Direction::Outgoing => &event.from,
        };
        let ours = |raw: &str| match crate::matcher::normalise_phone(raw, Some(crm.default_country))
        {
            Ok(key) if key.is_e164() => snapshot.numbers.get(key.as_str()).cloned(),
            _ => None,
        };
        let diverted_from = event.diverted_from.as_deref().map(|raw| {
            crate::matcher::normalise_phone(raw, Some(crm.default_country))
                .ok()
                .filter(|key| key.is_e164())
                .map_or_else(|| raw.to_owned(), |key| key.as_str().to_owned())
        });
        // T2, T8: a call forwarded from one of our numbers follows the settings of the
        // number the caller dialled, whichever of our numbers the forward reached.
        let original = match event.direction {
            Direction::Incoming => diverted_from.as_deref().and_then(ours),
            Direction::Outgoing => None,
        };
        let number = original.or_else(|| ours(our_side));
        let queue = number
            .as_ref()
            .and_then(|n| n.queue.as_ref())
            .and_then(|id| snapshot.queues.get(id).map(|m| (id.clone(), m.clone())));
        let country = number
            .as_ref()
            .map_or(crm.default_country, |n| n.default_country);
        let identifier = crate::matcher::normalise_phone(&facts.customer_raw, Some(country))
            .ok()
            .map(Identifier::Phone);
        let trust_flag = match (&number, event.direction) {
            (Some(number), Direction::Incoming) => {
                let calls_last_hour =
                    match (&identifier, number.trust.max_calls_per_caller_per_hour) {
                        (Some(id), Some(_)) => {
                            self.calls_of_caller_since(
                                &number.number,
                                id.key(),
                                event.at - RATE_WINDOW_MS,
                                &event.call_id,
                            )
                            .await?
                        }
                        _ => 0,
                    };
                let facts = TrustFacts {
                    verstat: event.verstat.as_deref().and_then(Verstat::parse),
                    anonymous: identifier.is_none(),
                    calls_last_hour,
                };
                evaluate(&number.trust, &facts).flag
            }
            _ => None,
        };
        Ok(IntakeContext {
            number,
            crm,
            queue,
            pipelines: snapshot.pipelines.clone(),
            identifier,
            diverted_from,
            trust_flag,
        })
    }

    /// T6: how many calls this caller made to our number since `since`, the call being
    /// decided left out (a repeated or late event of it must not count itself).
    async fn calls_of_caller_since(
        &self,
        number: &str,
        customer: &str,
        since: Millis,
        call_id: &str,
    ) -> Result<u32> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM calls WHERE customer = $1 AND number = $2 \
             AND started_at > $3 AND call_id <> $4",
        )
        .bind(customer)
        .bind(number)
        .bind(since)
        .bind(call_id)
        .fetch_one(self.reader())
        .await?;
        Ok(u32::try_from(col::<i64>(&row, "n")?).unwrap_or(u32::MAX))
    }
}

/// The decision for one job, given the match and queue state it should see.
fn decide_job(
    job: &IntakeJob,
    matched: Option<&MatchOutcome>,
    customer: &CustomerContext,
    queue: Option<&QueueState>,
) -> Decision {
    let ctx = &job.ctx;
    match matched {
        Some(matched) => decide(IntakeInput {
            facts: &job.facts,
            number: ctx.number.as_ref(),
            matched,
            customer,
            crm: &ctx.crm,
            queue,
            pipelines: &ctx.pipelines,
        }),
        None => Decision {
            action: CrmAction::Logged,
            reason: match job.facts.trust_flag {
                Some(flag) => flag.reason().to_owned(),
                None => format!(
                    "'{}' carries no phone number (withheld or anonymous caller)",
                    job.facts.customer_raw
                ),
            },
            create: None,
            attach: Vec::new(),
            matched: None,
            responsible: Responsible::Nobody,
            route: match job.facts.direction {
                Direction::Incoming => ring_order(None, queue),
                Direction::Outgoing => Vec::new(),
            },
            ring_timeout_s: ctx.number.as_ref().map_or(0, |n| n.ring_timeout_s),
            source: String::new(),
            rules: Vec::new(),
        },
    }
}

fn owner_kind(plan: &NewEntities) -> EntityKind {
    match plan {
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
    }
}

/// Plans every fresh job in order. Pure: the same inputs give the same plans, which is
/// what lets the batch be re-planned when its queue turns moved.
fn plan_all(
    jobs: &[IntakeJob],
    looked: &[Option<Looked>],
    rotations: &HashMap<QueueId, i64>,
    now: Millis,
) -> (Vec<Option<Plan>>, HashMap<QueueId, i64>) {
    // Entities this batch creates, by identifier: a later job for the same new number
    // is that entity's known caller (M7 inside the batch).
    let mut created: HashMap<String, (Candidate, CustomerContext)> = HashMap::new();
    let mut counters = rotations.clone();
    let mut turns: HashMap<QueueId, i64> = HashMap::new();
    let mut plans = Vec::with_capacity(jobs.len());
    for (job, looked) in jobs.iter().zip(looked) {
        let Some(looked) = looked else {
            plans.push(None);
            continue;
        };
        let ctx = &job.ctx;
        let (matched, customer) = match (&ctx.identifier, &looked.matched) {
            (Some(id), Some(m)) if m.status != MatchStatus::Excluded => {
                match created.get(id.key()) {
                    Some((candidate, customer)) => {
                        let mut found = vec![candidate.clone()];
                        found.extend(m.matches.iter().cloned());
                        (
                            Some(resolve(id.clone(), &Exclusions::default(), found)),
                            customer.clone(),
                        )
                    }
                    None => (Some(m.clone()), looked.customer.clone()),
                }
            }
            _ => (looked.matched.clone(), looked.customer.clone()),
        };
        let queue = ctx.queue.as_ref().and_then(|(id, members)| {
            counters.get(id).map(|rotation| QueueState {
                id: id.clone(),
                members: members.clone(),
                rotation: *rotation,
            })
        });
        let decision = decide_job(job, matched.as_ref(), &customer, queue.as_ref());
        if decision.advances_queue()
            && let Some(queue) = &queue
        {
            *counters.entry(queue.id.clone()).or_default() += 1;
            *turns.entry(queue.id.clone()).or_default() += 1;
        }
        if let (Some(new), Some(id)) = (&decision.create, &ctx.identifier)
            && new.claims_identifier()
        {
            let owner = EntityRef::new(owner_kind(new), &job.ids.owner);
            let responsible = decision.responsible.user().cloned();
            let customer = match new {
                NewEntities::CustomerWithDeal { deal: Some(_), .. } => CustomerContext {
                    contact_company: None,
                    open_deals: vec![OpenDeal {
                        id: DealId(job.ids.deal.clone()),
                        contact: (owner.kind == EntityKind::Contact)
                            .then(|| ContactId(owner.id.clone())),
                        company: (owner.kind == EntityKind::Company)
                            .then(|| CompanyId(owner.id.clone())),
                        responsible: responsible.clone(),
                        last_activity_at: now,
                    }],
                },
                _ => CustomerContext::default(),
            };
            created.insert(
                id.key().to_owned(),
                (
                    Candidate {
                        entity: owner,
                        responsible,
                        last_activity_at: now,
                    },
                    customer,
                ),
            );
        }
        plans.push(Some(Plan { matched, decision }));
    }
    (plans, turns)
}

/// The claims of new identifiers a batch's plans make (M7), one row per claim.
fn claim_rows(jobs: &[IntakeJob], plans: &[Option<Plan>], now: Millis) -> Rows {
    let mut claims = Rows::new(
        "identifier_owners",
        &["value", "entity_kind", "entity_id", "created_at"],
        "ON CONFLICT (value) DO NOTHING RETURNING value",
    );
    for (job, plan) in jobs.iter().zip(plans) {
        if let (Some(plan), Some(id)) = (plan, &job.ctx.identifier)
            && let Some(new) = &plan.decision.create
            && new.claims_identifier()
        {
            claims.push(vec![
                id.key().into(),
                owner_kind(new).as_str().into(),
                job.ids.owner.clone().into(),
                now.into(),
            ]);
        }
    }
    claims
}

/// Which jobs are the first of their (call, event) in the batch.
fn first_of_keys(jobs: &[IntakeJob]) -> Vec<bool> {
    let mut seen = HashSet::new();
    jobs.iter()
        .map(|job| seen.insert((job.event.call_id.as_str(), job.event.event)))
        .collect()
}

/// One call, one intake: two fresh opening events of one call in a batch go one at a
/// time (`false`).
fn one_intake_per_call(jobs: &[IntakeJob], fresh: &[bool]) -> bool {
    let mut calls = HashSet::new();
    jobs.iter()
        .zip(fresh)
        .all(|(job, fresh)| !*fresh || calls.insert(job.event.call_id.as_str()))
}

/// What each fresh job looks like to the planner: its match and its best candidate's
/// customer context.
fn looked_jobs(
    matched: Vec<Option<MatchOutcome>>,
    fresh: &[bool],
    customers: &HashMap<EntityRef, CustomerContext>,
) -> Vec<Option<Looked>> {
    matched
        .into_iter()
        .zip(fresh)
        .map(|(matched, fresh)| {
            fresh.then(|| {
                let customer = matched
                    .as_ref()
                    .and_then(|m| m.matches.first())
                    .and_then(|best| customers.get(&best.entity).cloned())
                    .unwrap_or_default();
                Looked { matched, customer }
            })
        })
        .collect()
}

fn best_candidates(matched: &[Option<MatchOutcome>]) -> Vec<Candidate> {
    matched
        .iter()
        .flatten()
        .filter_map(|m| m.matches.first().cloned())
        .collect()
}

/// [`apply_intakes`] on SQLite, transaction included: one command reads everything the
/// batch depends on under the write lock (`BEGIN IMMEDIATE`), the plan is made in
/// memory, and one more command writes it all and commits. So two round trips to the
/// connection's thread per batch (three when a caller is a known customer: their
/// company and open deals are read in between) instead of one per statement. Holding
/// the write lock from the start, what was read stays true until the commit: a claim or
/// call row the read did not see cannot appear, and a queue's rotation cannot move. On
/// `LostRace` or an error the transaction is left open: the caller rolls it back.
pub(crate) async fn apply_intakes_sqlite(
    conn: &mut AnyConnection,
    jobs: &[IntakeJob],
    now: Millis,
) -> Result<BatchOutcome> {
    let mut call_ids: Vec<&str> = jobs.iter().map(|j| j.event.call_id.as_str()).collect();
    call_ids.sort_unstable();
    call_ids.dedup();
    let mut identifiers: Vec<Identifier> = Vec::new();
    {
        let mut keys = HashSet::new();
        for id in jobs.iter().filter_map(|j| j.ctx.identifier.as_ref()) {
            if keys.insert(id.key()) {
                identifiers.push(id.clone());
            }
        }
    }
    let mut queue_ids: Vec<&QueueId> = jobs
        .iter()
        .filter_map(|j| j.ctx.queue.as_ref().map(|(id, _)| id))
        .collect();
    queue_ids.sort();
    queue_ids.dedup();

    // 1. Every read in one command.
    let list = placeholders(1, call_ids.len());
    let with_ids = |sql: String, ids: &[&str]| {
        ids.iter()
            .fold(Stmt::new(sql), |stmt, id| stmt.bind(id.to_string()))
    };
    let mut reads = vec![
        Stmt::new("BEGIN IMMEDIATE"),
        with_ids(
            format!("SELECT call_id, event FROM call_events WHERE call_id IN ({list})"),
            &call_ids,
        ),
        with_ids(
            format!("SELECT call_id FROM calls WHERE call_id IN ({list})"),
            &call_ids,
        ),
    ];
    let match_at = match_statement(&identifiers).map(|stmt| {
        reads.push(stmt);
        reads.len() - 1
    });
    let keys: Vec<&str> = identifiers.iter().map(Identifier::key).collect();
    let owners_at = (!keys.is_empty()).then(|| {
        reads.push(with_ids(
            format!(
                "SELECT value FROM identifier_owners WHERE value IN ({})",
                placeholders(1, keys.len())
            ),
            &keys,
        ));
        reads.len() - 1
    });
    let queues: Vec<&str> = queue_ids.iter().map(|q| q.as_str()).collect();
    let queues_at = (!queues.is_empty()).then(|| {
        reads.push(with_ids(
            format!(
                "SELECT id, rotation FROM queues WHERE id IN ({})",
                placeholders(1, queues.len())
            ),
            &queues,
        ));
        reads.len() - 1
    });
    let results = run_sqlite(conn, joined(reads)).await?;
    let rows = |at: Option<usize>| {
        at.and_then(|i| results.get(i))
            .map_or(&[][..], Vec::as_slice)
    };

    // 2. Idempotency: the first of a (call, event) in the batch is fresh unless stored.
    let mut stored: HashSet<(String, String)> = HashSet::new();
    for row in rows(Some(1)) {
        stored.insert((col(row, "call_id")?, col(row, "event")?));
    }
    let first_of_key = first_of_keys(jobs);
    let fresh: Vec<bool> = jobs
        .iter()
        .zip(&first_of_key)
        .map(|(job, first)| {
            *first
                && !stored.contains(&(
                    job.event.call_id.clone(),
                    job.event.event.as_str().to_owned(),
                ))
        })
        .collect();
    if !one_intake_per_call(jobs, &fresh) {
        return Ok(BatchOutcome::LostRace);
    }
    // A call in the log already (opened by another of its events): a lost race, as
    // the call log's key would have found.
    let logged: HashSet<String> = rows(Some(2))
        .iter()
        .map(|row| col(row, "call_id"))
        .collect::<Result<_>>()?;
    if jobs
        .iter()
        .zip(&fresh)
        .any(|(job, fresh)| *fresh && logged.contains(&job.event.call_id))
    {
        return Ok(BatchOutcome::LostRace);
    }

    // 3. Who the customers are (M1-M8).
    let (outcomes, names) = matched_from_rows(&identifiers, rows(match_at))?;
    let by_key: HashMap<&str, MatchOutcome> = keys.iter().copied().zip(outcomes).collect();
    let matched: Vec<Option<MatchOutcome>> = jobs
        .iter()
        .zip(&fresh)
        .map(|(job, fresh)| match (fresh, &job.ctx.identifier) {
            (true, Some(id)) => by_key.get(id.key()).cloned(),
            _ => None,
        })
        .collect();
    let bests = best_candidates(&matched);
    let customers = customer_contexts(conn, &bests).await?;
    let looked = looked_jobs(matched, &fresh, &customers);

    // 4. Plan with the queues' rotations (T9), which no one else can move now.
    let mut rotations: HashMap<QueueId, i64> = HashMap::new();
    for row in rows(queues_at) {
        rotations.insert(QueueId(col(row, "id")?), col(row, "rotation")?);
    }
    let (plans, turns) = plan_all(jobs, &looked, &rotations, now);

    // 5. The claims of new identifiers (M7): one taken already is a lost race.
    let claims = claim_rows(jobs, &plans, now);
    let mut owned: HashSet<String> = rows(owners_at)
        .iter()
        .map(|row| col(row, "value"))
        .collect::<Result<_>>()?;
    for job in jobs.iter().zip(&plans) {
        if let (job, Some(plan)) = job
            && let (Some(id), Some(new)) = (&job.ctx.identifier, &plan.decision.create)
            && new.claims_identifier()
            && !owned.insert(id.key().to_owned())
        {
            return Ok(BatchOutcome::LostRace);
        }
    }

    // 6. Every write and the commit in one command.
    let mut events = Rows::new("call_events", &["call_id", "event", "created_at"], "");
    for (job, fresh) in jobs.iter().zip(&fresh) {
        if *fresh {
            events.push(vec![
                job.event.call_id.clone().into(),
                job.event.event.as_str().into(),
                now.into(),
            ]);
        }
    }
    let Writes {
        calls,
        rest,
        touched,
        outcomes,
    } = plan_writes(jobs, &plans, &names, now);
    let mut writes = Vec::new();
    // No conflict is possible under the lock; were there one, the error fails the batch
    // (replayed job by job) rather than a claim or call row being skipped.
    for rows in [events, claims.with_suffix(""), calls.with_suffix("")] {
        writes.extend(rows.into_stmts(false));
    }
    let mut turns: Vec<(QueueId, i64)> = turns.into_iter().collect();
    turns.sort();
    for (queue, count) in turns {
        writes.push(
            Stmt::new("UPDATE queues SET rotation = rotation + $2 WHERE id = $1")
                .bind(queue.as_str())
                .bind(count),
        );
    }
    for rows in rest {
        writes.extend(rows.into_stmts(false));
    }
    writes.extend(touched_stmts(&touched, now));
    writes.extend(answers_stmt(jobs, &outcomes)?);
    writes.extend(job_audit_rows(jobs, now).into_stmts(false));
    writes.push(Stmt::new("COMMIT"));
    run_sqlite(conn, joined(writes)).await?;
    Ok(BatchOutcome::Done(job_results(outcomes)))
}

/// Applies the opening events of calls inside `tx`.
pub(crate) async fn apply_intakes(
    tx: &mut Tx<'_>,
    jobs: &[IntakeJob],
    now: Millis,
) -> Result<BatchOutcome> {
    // 1. Idempotency: one row per (call, event); the first in the batch wins a duplicate.
    let first_of_key = first_of_keys(jobs);
    let mut events = Rows::new(
        "call_events",
        &["call_id", "event", "created_at"],
        "ON CONFLICT (call_id, event) DO NOTHING RETURNING call_id, event",
    );
    for (job, first) in jobs.iter().zip(&first_of_key) {
        if *first {
            events.push(vec![
                job.event.call_id.clone().into(),
                job.event.event.as_str().into(),
                now.into(),
            ]);
        }
    }
    let inserted: HashSet<(String, String)> = events
        .write(tx)
        .await?
        .iter()
        .map(|row| Ok((col(row, "call_id")?, col(row, "event")?)))
        .collect::<Result<_>>()?;
    let fresh: Vec<bool> = jobs
        .iter()
        .zip(&first_of_key)
        .map(|(job, first)| {
            *first
                && inserted.contains(&(
                    job.event.call_id.clone(),
                    job.event.event.as_str().to_owned(),
                ))
        })
        .collect();
    if !one_intake_per_call(jobs, &fresh) {
        return Ok(BatchOutcome::LostRace);
    }

    // 2. Who the customers are (M1-M8), for the whole batch in one query, seen from
    //    inside the transaction: what committed a moment ago counts.
    let identifiers: Vec<Identifier> = jobs
        .iter()
        .zip(&fresh)
        .filter(|(_, f)| **f)
        .filter_map(|(j, _)| j.ctx.identifier.clone())
        .collect();
    let (outcomes, names) = match_all_named(tx, &identifiers).await?;
    let mut outcomes = outcomes.into_iter();
    let mut matched: Vec<Option<MatchOutcome>> = Vec::with_capacity(jobs.len());
    for (job, fresh) in jobs.iter().zip(&fresh) {
        matched.push(match (fresh, &job.ctx.identifier) {
            (true, Some(_)) => outcomes.next(),
            _ => None,
        });
    }
    let customers = customer_contexts(tx, &best_candidates(&matched)).await?;
    let looked = looked_jobs(matched, &fresh, &customers);

    // 3. The rotation of every queue the batch may hand work to (T9).
    let queue_ids: Vec<&QueueId> = {
        let mut ids: Vec<&QueueId> = jobs
            .iter()
            .zip(&fresh)
            .filter(|(_, f)| **f)
            .filter_map(|(j, _)| j.ctx.queue.as_ref().map(|(id, _)| id))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let mut rotations: HashMap<QueueId, i64> = HashMap::new();
    if !queue_ids.is_empty() {
        let sql = format!(
            "SELECT id, rotation FROM queues WHERE id IN ({})",
            placeholders(1, queue_ids.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in &queue_ids {
            query = query.bind(id.as_str());
        }
        for row in query.fetch_all(&mut **tx).await? {
            rotations.insert(QueueId(col(&row, "id")?), col(&row, "rotation")?);
        }
    }

    // 4. Plan; 5. claim the new identifiers (M7).
    let (mut plans, turns) = plan_all(jobs, &looked, &rotations, now);
    let claims = claim_rows(jobs, &plans, now);
    let wanted = claims.len();
    if wanted > 0 && claims.write(tx).await?.len() != wanted {
        return Ok(BatchOutcome::LostRace);
    }

    // 6. Take the queue turns atomically; if others took turns since the read, re-plan
    //    with the turns this batch actually got.
    let mut moved = false;
    for (queue, count) in &turns {
        let row = sqlx::query(
            "UPDATE queues SET rotation = rotation + $2 WHERE id = $1 RETURNING rotation",
        )
        .bind(queue.as_str())
        .bind(*count)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else {
            // The queue was deleted a moment ago.
            return Ok(BatchOutcome::LostRace);
        };
        let start = col::<i64>(&row, "rotation")? - count;
        if rotations.get(queue) != Some(&start) {
            rotations.insert(queue.clone(), start);
            moved = true;
        }
    }
    if moved {
        plans = plan_all(jobs, &looked, &rotations, now).0;
    }

    // 7. Write the batch, and the audit rows of the requests it carries out.
    let Some(outcomes) = write_plans(tx, jobs, &plans, &names, now).await? else {
        return Ok(BatchOutcome::LostRace);
    };
    let audits = job_audit_rows(jobs, now);
    if !audits.is_empty() {
        audits.write(tx).await?;
    }
    Ok(BatchOutcome::Done(outcomes))
}

/// What a batch writes, planned: the call log rows, the other rows in the order they
/// are written, the entities whose activity time moves, and each job's outcome.
struct Writes {
    calls: Rows,
    rest: Vec<Rows>,
    touched: HashMap<EntityKind, Vec<String>>,
    outcomes: Vec<Option<(CallRecord, EventAnswer)>>,
}

/// Writes entities, activities, call log rows and stored answers. `None` when a call
/// was logged concurrently (lost race).
async fn write_plans(
    tx: &mut Tx<'_>,
    jobs: &[IntakeJob],
    plans: &[Option<Plan>],
    names: &HashMap<EntityRef, String>,
    now: Millis,
) -> Result<Option<Vec<JobResult>>> {
    let Writes {
        calls,
        rest,
        touched,
        outcomes,
    } = plan_writes(jobs, plans, names, now);
    // The call log first: a call logged concurrently is a lost race, found before the
    // rest is written.
    let wanted = calls.len();
    if wanted > 0 && calls.write(tx).await?.len() != wanted {
        return Ok(None);
    }
    for rows in rest {
        if !rows.is_empty() {
            rows.write(tx).await?;
        }
    }
    for stmt in touched_stmts(&touched, now) {
        stmt.execute(tx).await?;
    }
    if let Some(stmt) = answers_stmt(jobs, &outcomes)? {
        stmt.execute(tx).await?;
    }
    Ok(Some(job_results(outcomes)))
}

fn plan_writes(
    jobs: &[IntakeJob],
    plans: &[Option<Plan>],
    names: &HashMap<EntityRef, String>,
    now: Millis,
) -> Writes {
    // Names of what this batch creates: a later job of the batch may show it.
    let mut created_names: HashMap<EntityRef, String> = HashMap::new();
    let mut calls = Rows::new(
        "calls",
        &[
            "id",
            "call_id",
            "direction",
            "from_raw",
            "to_raw",
            "customer",
            "number_id",
            "number",
            "user_id",
            "responsible",
            "started_at",
            "crm_action",
            "crm_reason",
            "created_entities",
            "route",
            "activity_id",
            "node_id",
            "decision",
            "diverted_from",
            "verstat",
            "trust_flag",
        ],
        "ON CONFLICT (call_id) DO NOTHING RETURNING call_id",
    );
    let EntityRows {
        mut leads,
        mut contacts,
        mut companies,
        mut deals,
        mut identifiers,
    } = EntityRows::new();
    let mut activities = Rows::new(
        "activities",
        &[
            "id",
            "kind",
            "direction",
            "subject",
            "completed",
            "responsible",
            "call_id",
            "matched",
            "match_reason",
            "created_at",
            "decision",
        ],
        "",
    );
    let mut links = Rows::new(
        "activity_entities",
        &["activity_id", "entity_kind", "entity_id"],
        "ON CONFLICT DO NOTHING",
    );
    let mut touched: HashMap<EntityKind, Vec<String>> = HashMap::new();
    let mut outcomes: Vec<Option<(CallRecord, EventAnswer)>> = Vec::with_capacity(jobs.len());

    for (job, plan) in jobs.iter().zip(plans) {
        let Some(Plan { matched, decision }) = plan else {
            outcomes.push(None);
            continue;
        };
        let event = &job.event;
        let customer_key = job.ctx.identifier.as_ref().map(|i| i.key().to_owned());
        let label = customer_key
            .clone()
            .unwrap_or_else(|| job.facts.customer_raw.clone());
        let verb = match event.direction {
            Direction::Incoming => "Call from",
            Direction::Outgoing => "Call to",
        };
        let responsible: Option<String> = decision.responsible.user().map(ToString::to_string);
        let entity_cells = |id: &str, name: String| -> Vec<Cell> {
            vec![
                id.into(),
                name.into(),
                responsible.clone().into(),
                decision.source.clone().into(),
                now.into(),
                now.into(),
                now.into(),
            ]
        };
        // An open deal of a contact or company, in the pipeline stage the intake chose.
        let deal_cells = |id: &str, customer: &EntityRef, target: &DealTarget| -> Vec<Cell> {
            let (contact, company) = match customer.kind {
                EntityKind::Company => (None, Some(customer.id.clone())),
                _ => (Some(customer.id.clone()), None),
            };
            let mut row = entity_cells(id, format!("{verb} {label}"));
            row.extend([
                contact.into(),
                company.into(),
                target.pipeline.to_string().into(),
                target.stage.to_string().into(),
                "open".into(),
            ]);
            row
        };
        let mut identifier_row = |kind: EntityKind, id: &str| {
            if let Some(identifier) = &job.ctx.identifier {
                identifiers.push(vec![
                    kind.as_str().into(),
                    id.into(),
                    identifier.kind().as_str().into(),
                    identifier.key().into(),
                    0i64.into(),
                ]);
            }
        };
        let mut created: Vec<EntityRef> = Vec::new();
        match &decision.create {
            None => {}
            Some(NewEntities::Lead { customer }) => {
                let name = match customer {
                    Some(_) => format!("Repeat: {verb} {label}"),
                    None => format!("{verb} {label}"),
                };
                created_names.insert(
                    EntityRef::new(EntityKind::Lead, &job.ids.owner),
                    name.clone(),
                );
                let mut row = entity_cells(&job.ids.owner, name);
                row.push("new".into());
                row.push(customer.as_ref().map(ToString::to_string).into());
                leads.push(row);
                identifier_row(EntityKind::Lead, &job.ids.owner);
                created.push(EntityRef::new(EntityKind::Lead, &job.ids.owner));
            }
            Some(NewEntities::CustomerWithDeal { kind, deal }) => {
                let owner = match kind {
                    SimpleCreates::Contact => EntityKind::Contact,
                    SimpleCreates::Company => EntityKind::Company,
                };
                created_names.insert(EntityRef::new(owner, &job.ids.owner), label.clone());
                let row = entity_cells(&job.ids.owner, label.clone());
                match owner {
                    EntityKind::Company => companies.push(row),
                    _ => contacts.push(row),
                }
                identifier_row(owner, &job.ids.owner);
                created.push(EntityRef::new(owner, &job.ids.owner));
                if let Some(target) = deal {
                    let customer = EntityRef::new(owner, &job.ids.owner);
                    deals.push(deal_cells(&job.ids.deal, &customer, target));
                    created.push(EntityRef::new(EntityKind::Deal, &job.ids.deal));
                }
            }
            Some(NewEntities::DealFor { customer, deal }) => {
                deals.push(deal_cells(&job.ids.owner, customer, deal));
                created.push(EntityRef::new(EntityKind::Deal, &job.ids.owner));
            }
        }

        let record = match matched {
            Some(matched) => DecisionRecord::build(&[Considered {
                raw: &job.facts.customer_raw,
                matched: Some(matched),
                decision,
                created: &created,
            }]),
            None => DecisionRecord::logged(&decision.rules, &decision.reason),
        };
        let record_json = record.to_json();
        let activity = decision
            .records_activity()
            .then(|| job.ids.activity.clone());
        if let Some(activity_id) = &activity {
            activities.push(vec![
                activity_id.clone().into(),
                "call".into(),
                event.direction.as_str().into(),
                super::activities::activity_subject(event.direction, &label, None).into(),
                0i64.into(),
                responsible.clone().into(),
                job.ids.call.to_string().into(),
                decision
                    .matched
                    .as_ref()
                    .map(|m| m.entity.to_string())
                    .into(),
                decision.reason.clone().into(),
                now.into(),
                record_json.clone().into(),
            ]);
            let mut linked = HashSet::new();
            for entity in created.iter().chain(&decision.attach) {
                if linked.insert(entity.clone()) {
                    links.push(vec![
                        activity_id.clone().into(),
                        entity.kind.as_str().into(),
                        entity.id.clone().into(),
                    ]);
                }
            }
            for entity in &decision.attach {
                touched
                    .entry(entity.kind)
                    .or_default()
                    .push(entity.id.clone());
            }
        }

        let number = job.ctx.number.as_ref();
        let created_text: Vec<String> = created.iter().map(ToString::to_string).collect();
        let route_text: Vec<String> = decision.route.iter().map(ToString::to_string).collect();
        calls.push(vec![
            job.ids.call.to_string().into(),
            event.call_id.clone().into(),
            event.direction.as_str().into(),
            event.from.clone().into(),
            event.to.clone().into(),
            customer_key.clone().into(),
            number.map(|n| n.id.to_string()).into(),
            number.map(|n| n.number.clone()).into(),
            event.user.as_ref().map(ToString::to_string).into(),
            responsible.clone().into(),
            event.at.into(),
            decision.action.as_str().into(),
            decision.reason.clone().into(),
            json_list(&created_text).into(),
            json_list(&route_text).into(),
            activity.clone().into(),
            job.node.clone().into(),
            record_json.into(),
            job.ctx.diverted_from.clone().into(),
            event.verstat.clone().into(),
            job.facts.trust_flag.map(|f| f.as_str().to_owned()).into(),
        ]);
        let record = CallRecord {
            id: job.ids.call.clone(),
            call_id: event.call_id.clone(),
            direction: event.direction,
            from: event.from.clone(),
            to: event.to.clone(),
            customer: customer_key,
            number: number.map(|n| n.number.clone()),
            user: event.user.clone(),
            answered_by: None,
            responsible: decision.responsible.user().cloned(),
            started_at: event.at,
            answered_at: None,
            ended_at: None,
            outcome: None,
            crm_action: decision.action,
            crm_reason: decision.reason.clone(),
            created: created.clone(),
            route: decision.route.clone(),
            activity,
            recording: None,
            recording_ms: None,
            voicemail: false,
            media: None,
            legs: Vec::new(),
            queue: None,
            wait_ms: None,
            decision: Some(record),
            diverted_from: job.ctx.diverted_from.clone(),
            verstat: event.verstat.clone(),
            trust_flag: job.facts.trust_flag,
        };
        let answer = EventAnswer {
            created,
            matches: matched
                .as_ref()
                .map(|m| {
                    m.matches
                        .iter()
                        .map(|c| StoredMatch {
                            entity: c.entity.clone(),
                            responsible: c.responsible.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            route: decision.route.clone(),
            ring_timeout_s: decision.ring_timeout_s,
            shown: None,
        };
        let answer = EventAnswer {
            shown: answer.shown_entity().and_then(|entity| {
                let matched = answer.matches.iter().find(|m| m.entity == entity);
                let name = names
                    .get(&entity)
                    .or_else(|| created_names.get(&entity))?
                    .clone();
                Some(ShownEntity {
                    name,
                    responsible: match matched {
                        Some(m) => m.responsible.clone(),
                        None => decision.responsible.user().cloned(),
                    },
                })
            }),
            ..answer
        };
        outcomes.push(Some((record, answer)));
    }

    Writes {
        calls,
        rest: vec![
            leads,
            contacts,
            companies,
            deals,
            identifiers,
            activities,
            links,
        ],
        touched,
        outcomes,
    }
}

/// The activity time of the entities a batch's calls were attached to.
fn touched_stmts(touched: &HashMap<EntityKind, Vec<String>>, now: Millis) -> Vec<Stmt> {
    touched
        .iter()
        .map(|(kind, ids)| {
            let mut stmt = Stmt::new(format!(
                "UPDATE {} SET last_activity_at = $1 WHERE id IN ({})",
                table(*kind),
                placeholders(2, ids.len())
            ))
            .bind(now);
            for id in ids {
                stmt = stmt.bind(id.as_str());
            }
            stmt
        })
        .collect()
}

fn job_results(outcomes: Vec<Option<(CallRecord, EventAnswer)>>) -> Vec<JobResult> {
    outcomes
        .into_iter()
        .map(|o| match o {
            Some((call, answer)) => JobResult::Fresh(Box::new(EventOutcome {
                call,
                answer,
                repeated: false,
            })),
            None => JobResult::Repeated,
        })
        .collect()
}

/// Keeps each fresh event's answer for repeats, in one statement.
fn answers_stmt(
    jobs: &[IntakeJob],
    outcomes: &[Option<(CallRecord, EventAnswer)>],
) -> Result<Option<Stmt>> {
    let mut cases = String::new();
    let mut filter = Vec::new();
    let mut binds: Vec<String> = Vec::new();
    for (job, outcome) in jobs.iter().zip(outcomes) {
        let Some((_, answer)) = outcome else { continue };
        let text = serde_json::to_string(answer)
            .map_err(|e| StoreError::Corrupt(format!("event answer: {e}")))?;
        let n = binds.len();
        cases.push_str(&format!(
            " WHEN call_id = ${} AND event = ${} THEN ${}",
            n + 1,
            n + 2,
            n + 3
        ));
        filter.push(format!("(call_id = ${} AND event = ${})", n + 1, n + 2));
        binds.extend([
            job.event.call_id.clone(),
            job.event.event.as_str().to_owned(),
            text,
        ]);
    }
    if binds.is_empty() {
        return Ok(None);
    }
    let mut stmt = Stmt::new(format!(
        "UPDATE call_events SET response = CASE{cases} END WHERE {}",
        filter.join(" OR ")
    ));
    for bind in binds {
        stmt = stmt.bind(bind);
    }
    Ok(Some(stmt))
}
