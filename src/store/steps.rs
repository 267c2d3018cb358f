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
//! instead: an `ended` is never applied before its call's opening event. A batch that
//! fails is rolled back and each step is replayed alone, so one bad step never fails its
//! neighbours.

use std::sync::Arc;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::calls::{
    CallEvent, EventOutcome, advance_call, call_by_call_id_in, first_answer, locked_call,
};
use super::entities::Tx;
use super::snapshot::{ConfigCache, ConfigSnapshot};
use super::{Result, StoreError, StoredRecording, col, flag, now_ms};

/// The most steps in one transaction.
const MAX_BATCH: usize = 256;
/// Steps waiting for the writer; a full queue makes callers wait (back-pressure).
const QUEUE_DEPTH: usize = 4_096;

pub(crate) enum StepJob {
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

pub(crate) enum StepDone {
    Event(EventStep),
    Written,
}

pub(crate) enum EventStep {
    Applied(Box<EventOutcome>),
    /// This (call, event) was applied before.
    Repeated,
    /// The call is not in the log: nothing was written.
    NotLogged,
}

type Reply = Result<StepDone>;

struct Submission {
    job: StepJob,
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
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Submission { job, reply })
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
        let (jobs, replies): (Vec<StepJob>, Vec<oneshot::Sender<Reply>>) =
            batch.drain(..).map(|s| (s.job, s.reply)).unzip();
        let snapshot = config.snapshot();
        match apply(&pool, &snapshot, &jobs).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    // The requester may have gone: nothing to do.
                    let _ = reply.send(result);
                }
            }
            Err(err) if jobs.len() == 1 => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(err));
                }
            }
            Err(_) => {
                tracing::debug!(steps = jobs.len(), "step batch replayed one by one");
                metrics::counter!("leadline_call_step_batch_replays_total").increment(1);
                for (job, reply) in jobs.iter().zip(replies) {
                    let result = apply(&pool, &snapshot, std::slice::from_ref(job))
                        .await
                        .and_then(|mut r| r.pop().unwrap_or(Err(StoreError::Closed)));
                    let _ = reply.send(result);
                }
            }
        }
    }
}

/// One transaction for `jobs`, in order. The outer error fails the whole batch; an
/// inner one is that step's own (a call that is not there) and leaves the rest.
async fn apply(pool: &AnyPool, config: &ConfigSnapshot, jobs: &[StepJob]) -> Result<Vec<Reply>> {
    let mut tx = pool.begin().await?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        results.push(match job {
            StepJob::Event(event) => Ok(StepDone::Event(event_step(&mut tx, config, event).await?)),
            StepJob::Legs { call_id, legs } => {
                sqlx::query("UPDATE calls SET legs = $2 WHERE call_id = $1")
                    .bind(call_id)
                    .bind(legs)
                    .execute(&mut *tx)
                    .await?;
                Ok(StepDone::Written)
            }
            StepJob::Media {
                call_id,
                stats,
                recording,
            } => media_step(&mut tx, call_id, stats.as_deref(), recording.as_ref())
                .await?
                .map(|()| StepDone::Written),
        });
    }
    tx.commit().await?;
    Ok(results)
}

/// `answered` / `ended` (or a late `ringing`) of a call in the log.
async fn event_step(
    tx: &mut Tx<'_>,
    config: &ConfigSnapshot,
    event: &CallEvent,
) -> Result<EventStep> {
    // Lock the call row, then read it: a copy read before the transaction may predate a
    // concurrent step of the same call.
    let Some(call) = locked_call(tx, &event.call_id).await? else {
        return Ok(EventStep::NotLogged);
    };
    let fresh = sqlx::query(
        "INSERT INTO call_events (call_id, event, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (call_id, event) DO NOTHING",
    )
    .bind(&event.call_id)
    .bind(event.event.as_str())
    .bind(now_ms())
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        return Ok(EventStep::Repeated);
    }
    advance_call(tx, config, &call, event).await?;
    let answer = first_answer(tx, &event.call_id).await?;
    let text = serde_json::to_string(&answer)
        .map_err(|e| StoreError::Corrupt(format!("event answer: {e}")))?;
    sqlx::query("UPDATE call_events SET response = $3 WHERE call_id = $1 AND event = $2")
        .bind(&event.call_id)
        .bind(event.event.as_str())
        .bind(text)
        .execute(&mut **tx)
        .await?;
    let call = call_by_call_id_in(tx, &event.call_id)
        .await?
        .ok_or_else(|| StoreError::not_found("call", event.call_id.as_str()))?;
    Ok(EventStep::Applied(Box::new(EventOutcome {
        call,
        answer,
        repeated: false,
    })))
}

/// What the relay measured on a call and its recording; a voicemail message also names
/// the call's open activity as a call-back with a message.
async fn media_step(
    tx: &mut Tx<'_>,
    call_id: &str,
    stats: Option<&str>,
    recording: Option<&StoredRecording>,
) -> Result<Result<()>> {
    let Some(row) = sqlx::query("SELECT id, activity_id, from_raw FROM calls WHERE call_id = $1")
        .bind(call_id)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(Err(StoreError::not_found("call", call_id)));
    };
    let id: String = col(&row, "id")?;
    sqlx::query(
        "UPDATE calls SET media = COALESCE($2, media), recording = COALESCE($3, recording), \
         recording_ms = COALESCE($4, recording_ms), \
         voicemail = CASE WHEN $3 IS NULL THEN voicemail ELSE $5 END WHERE id = $1",
    )
    .bind(&id)
    .bind(stats)
    .bind(recording.map(|r| r.file.clone()))
    .bind(recording.map(|r| i64::try_from(r.duration_ms).unwrap_or(i64::MAX)))
    .bind(flag(recording.is_some_and(|r| r.voicemail)))
    .execute(&mut **tx)
    .await?;
    if let Some(recording) = recording.filter(|r| r.voicemail)
        && let Some(activity) = col::<Option<String>>(&row, "activity_id")?
    {
        let from: String = col(&row, "from_raw")?;
        let seconds = recording.duration_ms.div_ceil(1000);
        sqlx::query(
            "UPDATE activities SET subject = $2, completed = 0, completed_at = NULL \
             WHERE id = $1",
        )
        .bind(&activity)
        .bind(format!("Call back: voicemail ({seconds} s) from {from}"))
        .execute(&mut **tx)
        .await?;
    }
    Ok(Ok(()))
}
