//! Group commit for the opening events of calls.
//!
//! One task owns the writing of intakes: it takes every job waiting in its channel (up to
//! `MAX_BATCH`) and applies them in one transaction. Under load this turns dozens of
//! statements per call into a dozen per batch, and it is what lets one SQLite writer
//! keep up with a busy PBX. With no load a batch is one job and nothing waits. A batch
//! that loses a race or fails is rolled back and each job is replayed alone, so one bad
//! event never fails its neighbours.

use sqlx::{AnyPool, Connection as _};
use tokio::sync::{mpsc, oneshot};

use super::intake::{BatchOutcome, IntakeJob, JobResult, apply_intakes, apply_intakes_sqlite};
use super::script::{SQLITE, rollback_sqlite};
use super::{Result, StoreError, now_ms};

/// The most jobs in one transaction.
const MAX_BATCH: usize = 256;
/// Jobs waiting for the writer; a full queue makes requests wait (back-pressure).
const QUEUE_DEPTH: usize = 4_096;

/// `None`: the job lost a race and should be retried with a fresh look.
pub(super) type Reply = Result<Option<JobResult>>;

struct Submission {
    job: IntakeJob,
    reply: oneshot::Sender<Reply>,
}

#[derive(Clone)]
pub(crate) struct Batcher {
    sender: mpsc::Sender<Submission>,
}

impl Batcher {
    /// Starts the writer task on the current runtime.
    pub fn spawn(pool: AnyPool) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(pool, receiver));
        Self { sender }
    }

    pub async fn submit(&self, job: IntakeJob) -> Reply {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Submission { job, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run(pool: AnyPool, mut receiver: mpsc::Receiver<Submission>) {
    let mut batch: Vec<Submission> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        metrics::histogram!("leadline_intake_batch_size").record(batch.len() as f64);
        let (jobs, replies): (Vec<IntakeJob>, Vec<oneshot::Sender<Reply>>) =
            batch.drain(..).map(|s| (s.job, s.reply)).unzip();
        for (reply, result) in replies.into_iter().zip(settle(&pool, jobs).await) {
            // The requester may have gone (client disconnected): nothing to do.
            let _ = reply.send(result);
        }
    }
}

/// Applies a batch and answers each job: a batch that loses a race or fails is replayed
/// one job at a time, so one bad event never fails its neighbours.
pub(super) async fn settle(pool: &AnyPool, jobs: Vec<IntakeJob>) -> Vec<Reply> {
    match apply(pool, &jobs).await {
        Ok(BatchOutcome::Done(results)) => results.into_iter().map(|r| Ok(Some(r))).collect(),
        Ok(BatchOutcome::LostRace) if jobs.len() == 1 => vec![Ok(None)],
        Err(err) if jobs.len() == 1 => vec![Err(err)],
        Ok(BatchOutcome::LostRace) | Err(_) => {
            tracing::debug!(jobs = jobs.len(), "batch replayed job by job");
            metrics::counter!("leadline_intake_batch_replays_total").increment(1);
            let mut results = Vec::with_capacity(jobs.len());
            for job in jobs {
                results.push(single(pool, job).await);
            }
            results
        }
    }
}

async fn single(pool: &AnyPool, job: IntakeJob) -> Reply {
    match apply(pool, std::slice::from_ref(&job)).await? {
        BatchOutcome::Done(mut results) => Ok(results.pop()),
        BatchOutcome::LostRace => Ok(None),
    }
}

/// One transaction: commit what was applied, roll back a lost race.
async fn apply(pool: &AnyPool, jobs: &[IntakeJob]) -> Result<BatchOutcome> {
    let mut conn = pool.acquire().await?;
    if conn.backend_name() == SQLITE {
        // The transaction is opened and committed inside (see `apply_intakes_sqlite`).
        let outcome = apply_intakes_sqlite(&mut conn, jobs, now_ms()).await;
        if !matches!(outcome, Ok(BatchOutcome::Done(_))) {
            rollback_sqlite(&mut conn).await;
        }
        return outcome;
    }
    let mut tx = conn.begin().await?;
    let outcome = apply_intakes(&mut tx, jobs, now_ms()).await?;
    match outcome {
        BatchOutcome::Done(_) => tx.commit().await?,
        BatchOutcome::LostRace => tx.rollback().await?,
    }
    Ok(outcome)
}
