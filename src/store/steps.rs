//! Group commit for the later steps of calls: `answered` and `ended` events (and a late
//! `ringing`), the legs a routed call rang, and what its media left behind.
//!
//! Like the intake's writer (`batch`), one task takes every step waiting in its channel
//! and applies them in one transaction, in the order they were submitted: a call's own
//! steps come from one task one after the other, so its `answered` is applied before its
//! `ended`. The rules of `calls` hold: each event is applied once per Call-ID and step
//! (the `call_events` row is written in the same transaction, and a repeat changes
//! nothing), and a step of a call that is not in the log yet writes nothing and is
//! answered [`EventStep::NotLogged`], so the caller opens the call with it (the intake)
//! instead: an `ended` is never applied before its call's opening event. A pushed
//! event's audit row is written in the transaction that applies it or finds it a repeat.
//! A batch that fails is rolled back and each step is replayed alone, so one bad step
//! never fails its neighbours.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Connection as _, Executor as _};
use tokio::sync::{mpsc, oneshot};

use super::audit::{AuditRow, audit_rows};
use super::calls::{CallEvent, CallRecord, EventAnswer, EventOutcome, call_from_row, plan_advance};
use super::rows::{Rows, placeholders};
use super::script::{SQLITE, Stmt, joined, rollback_sqlite, run_sqlite};
use super::snapshot::{ConfigCache, ConfigSnapshot};
use super::{Result, StoreError, StoredRecording, col, flag, now_ms};
use crate::crm::model::Millis;

/// The most steps in one transaction.
const MAX_BATCH: usize = 256;
/// Steps waiting for the writer; a full queue makes callers wait (back-pressure).
const QUEUE_DEPTH: usize = 4_096;

/// One later step of a call.
pub enum StepJob {
    Event(CallEvent),
    /// The legs as JSON.
    Legs {
        call_id: String,
        legs: String,
    },
    Media {
        call_id: String,
        /// The relay's statistics as JSON.
        stats: Option<String>,
        recording: Option<StoredRecording>,
    },
}

#[derive(Debug)]
pub enum StepDone {
    Event(EventStep),
    Written,
}

#[derive(Debug)]
pub enum EventStep {
    Applied(Box<EventOutcome>),
    /// This (call, event) was applied before.
    Repeated,
    /// The call is not in the log: nothing was written.
    NotLogged,
}

pub(super) type Reply = Result<StepDone>;

struct Submission {
    job: StepJob,
    /// The audit row of the API change that pushed an event: committed with it.
    audit: Option<AuditRow>,
    reply: oneshot::Sender<Reply>,
}

#[derive(Clone)]
pub(crate) struct StepWriter {
    sender: mpsc::Sender<Submission>,
}

impl StepWriter {
    /// Starts the writer task on the current runtime. It reads number settings (T10)
    /// from `config`.
    pub fn spawn(pool: AnyPool, config: Arc<ConfigCache>) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(pool, config, receiver));
        Self { sender }
    }

    pub async fn submit(&self, job: StepJob) -> Reply {
        self.submit_audited(job, None).await
    }

    /// A step with the audit row of the API change it carries out, written in the same
    /// transaction if the step is applied or found a repeat (both answer the request).
    pub async fn submit_audited(&self, job: StepJob, audit: Option<AuditRow>) -> Reply {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Submission { job, audit, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run(pool: AnyPool, config: Arc<ConfigCache>, mut receiver: mpsc::Receiver<Submission>) {
    let mut batch: Vec<Submission> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        metrics::histogram!("leadline_call_step_batch_size").record(batch.len() as f64);
        let mut jobs = Vec::with_capacity(batch.len());
        let mut audits = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for s in batch.drain(..) {
            jobs.push(s.job);
            audits.push(s.audit);
            replies.push(s.reply);
        }
        let snapshot = config.snapshot();
        for (reply, result) in replies
            .into_iter()
            .zip(settle(&pool, &snapshot, &jobs, &audits).await)
        {
            // The requester may have gone: nothing to do.
            let _ = reply.send(result);
        }
    }
}

/// Applies a batch and answers each step: a batch that fails is replayed one step at a
/// time, so a bad step fails alone. `audits`: each step's audit row, in the same order.
pub(super) async fn settle(
    pool: &AnyPool,
    config: &ConfigSnapshot,
    jobs: &[StepJob],
    audits: &[Option<AuditRow>],
) -> Vec<Reply> {
    match apply(pool, config, jobs, audits).await {
        Ok(results) => results,
        Err(err) if jobs.len() == 1 => vec![Err(err)],
        Err(_) => {
            tracing::debug!(steps = jobs.len(), "step batch replayed one by one");
            metrics::counter!("leadline_call_step_batch_replays_total").increment(1);
            let mut results = Vec::with_capacity(jobs.len());
            for (job, audit) in jobs.iter().zip(audits) {
                results.push(
                    apply(
                        pool,
                        config,
                        std::slice::from_ref(job),
                        std::slice::from_ref(audit),
                    )
                    .await
                    .and_then(|mut r| r.pop().unwrap_or(Err(StoreError::Closed))),
                );
            }
            results
        }
    }
}

/// One transaction for `jobs`, in order. The outer error fails the whole batch; an
/// inner one is that step's own (a call that is not there) and leaves the rest.
///
/// The batch is read once (its calls, the events they have, their first answers), planned
/// in memory with the same statements a step alone would run, in the same order, and
/// written: on SQLite as one command with the commit, so a batch costs two round trips
/// to the connection's thread whatever its size (see `script`).
async fn apply(
    pool: &AnyPool,
    config: &ConfigSnapshot,
    jobs: &[StepJob],
    audits: &[Option<AuditRow>],
) -> Result<Vec<Reply>> {
    let mut conn = pool.acquire().await?;
    if conn.backend_name() == SQLITE {
        let result = apply_sqlite(&mut conn, config, jobs, audits).await;
        if result.is_err() {
            rollback_sqlite(&mut conn).await;
        }
        return result;
    }
    let mut tx = conn.begin().await?;
    let ids = call_ids(jobs);
    // The no-op update locks the calls' rows until commit: a concurrent step of the
    // same call (another process) waits, and then reads what this one wrote.
    let calls = if ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query(dynamic_sql!(
            "UPDATE calls SET started_at = started_at WHERE call_id IN ({}) RETURNING *",
            placeholders(1, ids.len())
        ))
        .bind_all(&ids)
        .fetch_all(&mut *tx)
        .await?
    };
    let events = if ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query(dynamic_sql!(
            "{EVENTS_OF_CALLS} ({}) {EVENTS_ORDER}",
            placeholders(1, ids.len())
        ))
        .bind_all(&ids)
        .fetch_all(&mut *tx)
        .await?
    };
    let mut read = Read::from_rows(&calls, &events)?;
    // Which events are new, as the database has it: a concurrent intake of the same
    // (call, event) may hold the key.
    let wanted = read.new_events(jobs);
    if !wanted.is_empty() {
        let mut rows = Rows::new(
            "call_events",
            &["call_id", "event", "created_at"],
            "ON CONFLICT (call_id, event) DO NOTHING RETURNING call_id, event",
        );
        let now = now_ms();
        for (call_id, event) in &wanted {
            rows.push(vec![
                call_id.clone().into(),
                event.clone().into(),
                now.into(),
            ]);
        }
        let inserted = rows
            .write(&mut tx)
            .await?
            .iter()
            .map(|row| Ok((col(row, "call_id")?, col(row, "event")?)))
            .collect::<Result<HashSet<(String, String)>>>()?;
        for key in wanted {
            if !inserted.contains(&key) {
                read.events.insert(key);
            }
        }
    }
    let now = now_ms();
    let (stmts, results) = read.plan(config, jobs, false, now)?;
    for stmt in stmts {
        stmt.execute(&mut tx).await?;
    }
    let audits = answered_audits(&results, audits, now);
    if !audits.is_empty() {
        audits.write(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(results)
}

async fn apply_sqlite(
    conn: &mut AnyConnection,
    config: &ConfigSnapshot,
    jobs: &[StepJob],
    audits: &[Option<AuditRow>],
) -> Result<Vec<Reply>> {
    let ids = call_ids(jobs);
    // IMMEDIATE: the write lock from the start, so what is read stays true until the
    // commit even with another process on the file (it would wait, not interleave).
    let read = if ids.is_empty() {
        conn.execute("BEGIN IMMEDIATE").await?;
        Read::default()
    } else {
        let list = placeholders(1, ids.len());
        let mut script = Stmt::new(format!(
            "BEGIN IMMEDIATE; SELECT * FROM calls WHERE call_id IN ({list}); \
             {EVENTS_OF_CALLS} ({list}) {EVENTS_ORDER}"
        ));
        for id in &ids {
            script = script.bind(id.as_str());
        }
        let results = run_sqlite(conn, script).await?;
        let [_, calls, events] = <[Vec<AnyRow>; 3]>::try_from(results)
            .map_err(|r| StoreError::Corrupt(format!("{} results for 3 statements", r.len())))?;
        Read::from_rows(&calls, &events)?
    };
    // The single writer holds the lock: the events not there now are new.
    let now = now_ms();
    let (mut stmts, results) = read.plan(config, jobs, true, now)?;
    stmts.extend(answered_audits(&results, audits, now).into_stmts(false));
    stmts.push(Stmt::new("COMMIT"));
    run_sqlite(conn, joined(stmts)).await?;
    Ok(results)
}

/// The audit rows of the events the batch answers (applied, or repeats of one applied
/// before); a step of a call not in the log writes nothing, its row goes with the intake.
fn answered_audits(results: &[Reply], audits: &[Option<AuditRow>], now: Millis) -> Rows {
    let answered = results.iter().zip(audits).filter_map(|(result, audit)| {
        matches!(
            result,
            Ok(StepDone::Event(EventStep::Applied(_) | EventStep::Repeated))
        )
        .then_some(audit.as_ref())
        .flatten()
    });
    audit_rows(answered, now)
}

const EVENTS_OF_CALLS: &str = "SELECT call_id, event, response FROM call_events WHERE call_id IN";
const EVENTS_ORDER: &str = "ORDER BY created_at";

/// The distinct Call-IDs of a batch.
fn call_ids(jobs: &[StepJob]) -> Vec<String> {
    let mut seen = HashSet::new();
    jobs.iter()
        .map(|job| match job {
            StepJob::Event(event) => &event.call_id,
            StepJob::Legs { call_id, .. } | StepJob::Media { call_id, .. } => call_id,
        })
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect()
}

trait BindAll {
    fn bind_all(self, values: &[String]) -> Self;
}

impl<'q> BindAll for sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    fn bind_all(mut self, values: &[String]) -> Self {
        for value in values {
            self = self.bind(value.clone());
        }
        self
    }
}

/// What a batch read: its calls in the log as they are now, the (call, event) keys they
/// have, and each call's first stored answer (the one every later event repeats).
#[derive(Debug, Default)]
struct Read {
    calls: HashMap<String, CallRecord>,
    events: HashSet<(String, String)>,
    first: HashMap<String, EventAnswer>,
}

impl Read {
    fn from_rows(calls: &[AnyRow], events: &[AnyRow]) -> Result<Self> {
        let mut read = Read::default();
        for row in calls {
            let call = call_from_row(row)?;
            read.calls.insert(call.call_id.clone(), call);
        }
        // Oldest first: the first answer of a call is the oldest stored.
        for row in events {
            let call_id: String = col(row, "call_id")?;
            if let Some(text) = col::<Option<String>>(row, "response")?
                && !read.first.contains_key(&call_id)
            {
                let answer = serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("call_events.response: {e}")))?;
                read.first.insert(call_id.clone(), answer);
            }
            read.events.insert((call_id, col(row, "event")?));
        }
        Ok(read)
    }

    /// The (call, event) keys the batch adds, each once, for calls in the log.
    fn new_events(&self, jobs: &[StepJob]) -> Vec<(String, String)> {
        let mut seen = HashSet::new();
        jobs.iter()
            .filter_map(|job| match job {
                StepJob::Event(e) => Some((e.call_id.clone(), e.event.as_str().to_owned())),
                _ => None,
            })
            .filter(|key| self.calls.contains_key(&key.0) && !self.events.contains(key))
            .filter(|key| seen.insert(key.clone()))
            .collect()
    }

    /// The batch's statements, in the order the steps come, and each step's answer.
    /// `insert_events`: the `call_events` rows are written here (else they were already).
    fn plan(
        mut self,
        config: &ConfigSnapshot,
        jobs: &[StepJob],
        insert_events: bool,
        now: Millis,
    ) -> Result<(Vec<Stmt>, Vec<Reply>)> {
        let mut stmts = Vec::new();
        let mut results = Vec::with_capacity(jobs.len());
        for job in jobs {
            results.push(match job {
                StepJob::Event(event) => Ok(StepDone::Event(self.event(
                    config,
                    event,
                    insert_events,
                    now,
                    &mut stmts,
                )?)),
                StepJob::Legs { call_id, legs } => {
                    if let Some(call) = self.calls.get_mut(call_id) {
                        call.legs = serde_json::from_str(legs)
                            .map_err(|e| StoreError::Corrupt(format!("calls.legs: {e}")))?;
                        stmts.push(
                            Stmt::new("UPDATE calls SET legs = $2 WHERE call_id = $1")
                                .bind(call_id.as_str())
                                .bind(legs.as_str()),
                        );
                    }
                    Ok(StepDone::Written)
                }
                StepJob::Media {
                    call_id,
                    stats,
                    recording,
                } => match self.calls.get_mut(call_id) {
                    Some(call) => {
                        stmts.extend(plan_media(call, stats.as_deref(), recording.as_ref()));
                        Ok(StepDone::Written)
                    }
                    None => Err(StoreError::not_found("call", call_id.as_str())),
                },
            });
        }
        Ok((stmts, results))
    }

    /// `answered` / `ended` (or a late `ringing`) of a call.
    fn event(
        &mut self,
        config: &ConfigSnapshot,
        event: &CallEvent,
        insert_event: bool,
        now: Millis,
        stmts: &mut Vec<Stmt>,
    ) -> Result<EventStep> {
        let Some(call) = self.calls.get_mut(&event.call_id) else {
            return Ok(EventStep::NotLogged);
        };
        let key = (event.call_id.clone(), event.event.as_str().to_owned());
        if !self.events.insert(key) {
            return Ok(EventStep::Repeated);
        }
        if insert_event {
            stmts.push(
                Stmt::new(
                    "INSERT INTO call_events (call_id, event, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (call_id, event) DO NOTHING",
                )
                .bind(event.call_id.as_str())
                .bind(event.event.as_str())
                .bind(now),
            );
        }
        stmts.extend(plan_advance(config, call, event));
        // This event's own row has no answer yet: it repeats the call's first one, and
        // is the first one itself if the call had none.
        let answer = self.first.entry(event.call_id.clone()).or_default().clone();
        let text = serde_json::to_string(&answer)
            .map_err(|e| StoreError::Corrupt(format!("event answer: {e}")))?;
        stmts.push(
            Stmt::new("UPDATE call_events SET response = $3 WHERE call_id = $1 AND event = $2")
                .bind(event.call_id.as_str())
                .bind(event.event.as_str())
                .bind(text),
        );
        Ok(EventStep::Applied(Box::new(EventOutcome {
            call: call.clone(),
            answer,
            repeated: false,
        })))
    }
}

/// What the relay measured on a call and its recording; a voicemail message also names
/// the call's open activity as a call-back with a message.
fn plan_media(
    call: &mut CallRecord,
    stats: Option<&str>,
    recording: Option<&StoredRecording>,
) -> Vec<Stmt> {
    let mut stmts = vec![
        Stmt::new(
            "UPDATE calls SET media = COALESCE($2, media), recording = COALESCE($3, recording), \
             recording_ms = COALESCE($4, recording_ms), \
             voicemail = CASE WHEN $3 IS NULL THEN voicemail ELSE $5 END WHERE id = $1",
        )
        .bind(call.id.as_str())
        .bind(stats.map(str::to_owned))
        .bind(recording.map(|r| r.file.clone()))
        .bind(recording.map(|r| i64::try_from(r.duration_ms).unwrap_or(i64::MAX)))
        .bind(flag(recording.is_some_and(|r| r.voicemail))),
    ];
    if let Some(stats) = stats {
        call.media = serde_json::from_str(stats).ok();
    }
    if let Some(recording) = recording {
        call.recording = Some(recording.file.clone());
        call.recording_ms = Some(i64::try_from(recording.duration_ms).unwrap_or(i64::MAX));
        call.voicemail = recording.voicemail;
    }
    if let Some(recording) = recording.filter(|r| r.voicemail)
        && let Some(activity) = &call.activity
    {
        let seconds = recording.duration_ms.div_ceil(1000);
        stmts.push(
            Stmt::new(
                "UPDATE activities SET subject = $2, completed = 0, completed_at = NULL \
                 WHERE id = $1",
            )
            .bind(activity.as_str())
            .bind(format!(
                "Call back: voicemail ({seconds} s) from {}",
                call.from
            )),
        );
    }
    stmts
}
