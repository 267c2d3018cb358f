//! The local call journal: while the database cannot be reached, the B2BUA's call writes
//! (opening events with their node, later events, queue, transfers, legs, media) are
//! appended to `DATA_DIR/journal/calls.jsonl` instead of waiting on it, and replayed in
//! order once it answers again. In normal operation it is the opening events'
//! write-ahead log: each is appended (group-fsynced) before its database write is queued,
//! and the checkpoint moves past it once committed, so a process killed while the write
//! was queued replays it at its next start.
//!
//! Owns the journal file (one writer thread appends JSON lines and fsyncs each group of
//! appends together), the node's view of the database ("degraded": found unreachable and
//! not answering a probe since), and the replay task. A write goes live while the journal
//! is empty and the database is not known to be down; otherwise, and when a live write
//! fails to reach the database or takes longer than [`LIVE_WAIT`], it is journaled, so
//! that no write overtakes one journaled before it. The replay applies each record
//! through the same paths as a live write ((call, event) once, M7 claims), so a record
//! applied twice (a crash mid-replay, a write that reached the database before its error)
//! changes nothing. A call the replay logs is handed to the caller of [`run`] (the
//! webhooks' announcement), once. What is applied is checkpointed: in memory at once, in
//! `calls.offset` by the writer thread at most every [`ahead::CHECKPOINT_EVERY`] and at
//! shutdown (a file behind only replays lines already applied); once every record is
//! applied the file is emptied. A record the database refuses for good is moved to
//! `rejected.jsonl` and the replay goes on.

mod ahead;
mod record;

use ahead::{Commit, WriteAhead, checkpoint_wait};
pub use record::{CallWrite, Recording, is_unreachable};

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use super::steps::StepJob;
use super::{CallEvent, Result, Store, StoreError, StoredRecording};
use crate::cluster::NodeId;
use crate::store::EventOutcome;

/// The longest a call waits on a live write before it is journaled: a call must not hang
/// on a database that does not answer (the pool would wait for its `acquire_timeout`).
pub const LIVE_WAIT: Duration = Duration::from_secs(2);
/// How often the replay task probes a database found down, and how long a probe waits.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const FILE: &str = "calls.jsonl";
const CHECKPOINT: &str = "calls.offset";
const REJECTED: &str = "rejected.jsonl";
/// A file applied to its end is emptied once it is this long: emptying costs an fsync, so
/// not after every commit.
const EMPTY_AT: u64 = 256 * 1024;

/// The journal of one node; shared by the B2BUA's writes, `/readyz` and the replay.
pub struct Journal {
    dir: PathBuf,
    appender: std_mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

struct Shared {
    degraded: AtomicBool,
    /// Records appended and not applied yet.
    records: AtomicU64,
    /// How far the file is written whole and synced: what the replay may read.
    synced: AtomicU64,
    /// How far the file is applied (the checkpoint); moved only under `ahead`'s lock.
    applied: AtomicU64,
    /// The checkpoint moved since the writer last wrote its file.
    checkpoint_behind: AtomicBool,
    /// The write-ahead lines past the checkpoint. Its lock also orders every move of the
    /// checkpoint and its file.
    ahead: std::sync::Mutex<WriteAhead>,
    wake: Notify,
}

impl Shared {
    fn set_records(&self, records: u64) {
        self.records.store(records, Ordering::Release);
        metrics::gauge!("leadline_journal_records").set(records as f64);
    }

    fn add_records(&self, n: u64) {
        let now = self.records.fetch_add(n, Ordering::AcqRel) + n;
        metrics::gauge!("leadline_journal_records").set(now as f64);
    }

    fn lock_ahead(&self) -> std::sync::MutexGuard<'_, WriteAhead> {
        // The bookkeeping stays consistent across a panic elsewhere: each change is one
        // map operation.
        self.ahead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How an append is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Append {
    /// Only while the journal is in use (not empty, or the database down).
    IfInUse,
    /// Journaled for the replay whatever the state.
    Force,
    /// A write-ahead line: appended always, applied by its own live write, and by the
    /// replay only if that write does not commit.
    Ahead,
}

enum Command {
    /// Appends `line` as `how` says. Answers where the line starts, if appended.
    Append {
        line: String,
        how: Append,
        reply: oneshot::Sender<io::Result<Option<u64>>>,
    },
    /// Empties the file when nothing was appended past `upto` (all of it applied).
    Truncate {
        upto: u64,
        reply: oneshot::Sender<io::Result<bool>>,
    },
    /// The checkpoint moved while its file was up to date: the writer times its write.
    Checkpoint,
    /// Writes the checkpoint's file now (shutdown).
    Flush { reply: oneshot::Sender<()> },
}

/// What `/readyz` says of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalState {
    pub degraded: bool,
    pub records: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the call journal in {dir}: {source}")]
    Open { dir: String, source: io::Error },
}

impl Journal {
    /// Opens the journal in `dir` (created at the first append). Records a killed process
    /// left are counted for the replay; a line a crash cut short (never acknowledged) is
    /// moved to the rejected file so that nothing is appended behind it.
    pub fn open(dir: &Path) -> std::result::Result<Self, JournalError> {
        let failed = |source| JournalError::Open {
            dir: dir.display().to_string(),
            source,
        };
        let path = dir.join(FILE);
        let (len, applied, records) = match std::fs::read(&path) {
            Ok(mut bytes) => {
                if let Some(cut) = record::torn_tail(&bytes) {
                    tracing::warn!(
                        bytes = bytes.len() - cut,
                        "the call journal ends in a cut-off write; setting it aside"
                    );
                    append_rejected(dir, &String::from_utf8_lossy(&bytes[cut..]), "cut off")
                        .map_err(failed)?;
                    bytes.truncate(cut);
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(cut as u64))
                        .map_err(failed)?;
                }
                let applied = read_checkpoint(dir).min(bytes.len() as u64);
                let records = record::decode(&bytes[applied as usize..], applied).len() as u64;
                (bytes.len() as u64, applied, records)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, 0, 0),
            Err(e) => return Err(failed(e)),
        };
        if records > 0 {
            tracing::warn!(
                records,
                "call writes journaled by an earlier run: replaying them"
            );
        }
        let shared = Arc::new(Shared {
            degraded: AtomicBool::new(false),
            records: AtomicU64::new(0),
            synced: AtomicU64::new(len),
            applied: AtomicU64::new(applied),
            checkpoint_behind: AtomicBool::new(false),
            ahead: std::sync::Mutex::default(),
            wake: Notify::new(),
        });
        shared.set_records(records);
        let (appender, commands) = std_mpsc::channel();
        let writer = Writer {
            dir: dir.to_owned(),
            file: None,
            len,
            shared: shared.clone(),
            checkpoint_written: None,
        };
        std::thread::Builder::new()
            .name("leadline-journal".to_owned())
            .spawn(move || writer.run(commands))
            .map_err(failed)?;
        Ok(Self {
            dir: dir.to_owned(),
            appender,
            shared,
        })
    }

    pub fn state(&self) -> JournalState {
        JournalState {
            degraded: self.shared.degraded.load(Ordering::Acquire),
            records: self.shared.records.load(Ordering::Acquire),
        }
    }

    /// Writes go to the journal now, not to the database.
    fn in_use(&self) -> bool {
        let state = self.state();
        state.degraded || state.records > 0
    }

    /// The database was found unreachable: writes are journaled at once from now until
    /// a probe finds it back.
    pub fn database_down(&self, why: &dyn std::fmt::Display) {
        if !self.shared.degraded.swap(true, Ordering::AcqRel) {
            tracing::warn!(%why, "database unreachable: journaling calls' writes");
            self.shared.wake.notify_one();
        }
    }

    async fn append(&self, write: &CallWrite, force: bool) -> Result<bool> {
        let how = if force {
            Append::Force
        } else {
            Append::IfInUse
        };
        let appended = self.append_as(write, how).await?.is_some();
        if appended {
            self.shared.wake.notify_one();
        }
        Ok(appended)
    }

    /// Appends a write-ahead line (synced when this returns); answers where it starts.
    async fn append_ahead(&self, write: &CallWrite) -> Result<u64> {
        self.append_as(write, Append::Ahead)
            .await?
            .ok_or_else(|| StoreError::Journal("write-ahead line not appended".to_owned()))
    }

    async fn append_as(&self, write: &CallWrite, how: Append) -> Result<Option<u64>> {
        let (reply, answer) = oneshot::channel();
        self.appender
            .send(Command::Append {
                line: write.encode(),
                how,
                reply,
            })
            .map_err(|_| StoreError::Closed)?;
        answer
            .await
            .map_err(|_| StoreError::Closed)?
            .map_err(|e| StoreError::Journal(e.to_string()))
    }

    /// The write-ahead line at `start` is committed: the checkpoint moves past it and the
    /// committed lines behind it, and a file applied to its end is emptied once long.
    fn committed(&self, start: u64) {
        let mut ahead = self.shared.lock_ahead();
        ahead.committed(start);
        let from = self.shared.applied.load(Ordering::Acquire);
        let to = ahead.advance(from);
        if to == from {
            return;
        }
        self.move_checkpoint(to);
        if to >= EMPTY_AT && to == self.shared.synced.load(Ordering::Acquire) {
            // Nobody waits for it: the writer empties the file only if nothing came since.
            let (reply, _) = oneshot::channel();
            let _ = self.appender.send(Command::Truncate { upto: to, reply });
        }
    }

    /// The write-ahead line at `start` did not reach the database: the replay applies it.
    fn hand_to_replay(&self, start: u64) {
        if self.shared.lock_ahead().hand_to_replay(start) {
            self.shared.add_records(1);
            self.shared.wake.notify_one();
        }
    }

    /// Sets the checkpoint; called with `ahead`'s lock held. Its file is the writer's to
    /// write, woken here if it was up to date ([`checkpoint_wait`]).
    fn move_checkpoint(&self, to: u64) {
        self.shared.applied.store(to, Ordering::Release);
        if !self.shared.checkpoint_behind.swap(true, Ordering::AcqRel) {
            let _ = self.appender.send(Command::Checkpoint);
        }
    }

    /// Writes the checkpoint's file if it is behind, and waits for it: at shutdown, so
    /// that the next start replays nothing already applied.
    pub(super) async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        if self.appender.send(Command::Flush { reply }).is_ok() {
            let _ = done.await;
        }
    }

    async fn truncate(&self, upto: u64) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.appender
            .send(Command::Truncate { upto, reply })
            .map_err(|_| StoreError::Closed)?;
        answer
            .await
            .map_err(|_| StoreError::Closed)?
            .map_err(|e| StoreError::Journal(e.to_string()))
    }

    /// The records past the checkpoint that are whole and synced, as bytes from `from`.
    fn unapplied(&self) -> io::Result<(u64, Vec<u8>)> {
        let from = self.shared.applied.load(Ordering::Acquire);
        let to = self.shared.synced.load(Ordering::Acquire);
        if to <= from {
            return Ok((from, Vec::new()));
        }
        let mut file = File::open(self.dir.join(FILE))?;
        file.seek(SeekFrom::Start(from))?;
        let mut bytes = vec![0; (to - from) as usize];
        file.read_exact(&mut bytes)?;
        Ok((from, bytes))
    }

    /// What the replay does with the line at `start..end`; `None`: the checkpoint is
    /// past it already (a write-ahead line committed meanwhile), or it is committed and
    /// the checkpoint now moves past it.
    fn to_apply(&self, start: u64, end: u64) -> Option<Replayed> {
        let mut ahead = self.shared.lock_ahead();
        let applied = self.shared.applied.load(Ordering::Acquire);
        if end <= applied {
            return None;
        }
        match ahead.state(start) {
            Some(Commit::Done) => {
                ahead.passed(start);
                let to = ahead.advance(end);
                self.move_checkpoint(to);
                None
            }
            // Its live write is still running: applied twice, it changes nothing.
            Some(Commit::InFlight) => Some(Replayed::Ahead),
            None => Some(Replayed::Journaled),
        }
    }

    /// One record applied or set aside: the checkpoint moves past it (and the committed
    /// write-ahead lines behind it). Not synced: a record applied again after a crash
    /// changes nothing.
    fn applied(&self, start: u64, end: u64, replayed: Replayed) {
        let mut ahead = self.shared.lock_ahead();
        ahead.passed(start);
        if replayed == Replayed::Journaled {
            let left = self
                .shared
                .records
                .load(Ordering::Acquire)
                .saturating_sub(1);
            self.shared.set_records(left);
        }
        let applied = self.shared.applied.load(Ordering::Acquire);
        if end > applied {
            let to = ahead.advance(end);
            self.move_checkpoint(to);
        }
    }

    fn reject(&self, text: &str, why: &str) {
        metrics::counter!("leadline_journal_rejected_total").increment(1);
        tracing::error!(%why, record = %text, "journaled call write refused; set aside in rejected.jsonl");
        if let Err(err) = append_rejected(&self.dir, text, why) {
            tracing::error!(%err, "cannot set the refused call write aside");
        }
    }
}

/// What a line the replay applies was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replayed {
    /// Journaled for the replay: counted in the records left.
    Journaled,
    /// A write-ahead line whose live write is still running.
    Ahead,
}

fn read_checkpoint(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join(CHECKPOINT))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

fn append_rejected(dir: &Path, text: &str, why: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(REJECTED))?;
    let line = serde_json::json!({ "why": why, "record": text });
    writeln!(file, "{line}")?;
    file.sync_data()
}

type AppendReply = oneshot::Sender<io::Result<Option<u64>>>;

/// The one thread that writes the journal file.
struct Writer {
    dir: PathBuf,
    file: Option<File>,
    len: u64,
    shared: Arc<Shared>,
    /// When the checkpoint's file was last written in this run.
    checkpoint_written: Option<Instant>,
}

impl Writer {
    fn run(mut self, commands: std_mpsc::Receiver<Command>) {
        loop {
            let behind = self.shared.checkpoint_behind.load(Ordering::Acquire);
            let since = self.checkpoint_written.map(|at| at.elapsed());
            let first = match checkpoint_wait(behind, since) {
                None => commands.recv().ok(),
                Some(wait) if wait.is_zero() => {
                    self.write_checkpoint();
                    continue;
                }
                Some(wait) => match commands.recv_timeout(wait) {
                    Ok(command) => Some(command),
                    Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => None,
                },
            };
            // Every sender is gone: the journal is dropped.
            let Some(first) = first else { break };
            // Everything waiting is appended with one write and one fsync.
            let mut group = vec![first];
            group.extend(commands.try_iter());
            let mut appends = Vec::new();
            for command in group {
                match command {
                    Command::Append { line, how, reply } => appends.push((line, how, reply)),
                    Command::Truncate { upto, reply } => {
                        self.append_group(std::mem::take(&mut appends));
                        let _ = reply.send(self.truncate(upto));
                    }
                    Command::Checkpoint => {}
                    Command::Flush { reply } => {
                        self.write_checkpoint();
                        let _ = reply.send(());
                    }
                }
            }
            self.append_group(appends);
        }
        self.write_checkpoint();
    }

    /// Writes the checkpoint's file if the checkpoint moved since. Not synced, and not
    /// under `ahead`'s lock: the checkpoint only grows between truncations (which this
    /// thread does), so a value read here and written late is at worst behind, and
    /// `checkpoint_behind`, set again by the move, brings the newer one.
    fn write_checkpoint(&mut self) {
        if !self.shared.checkpoint_behind.swap(false, Ordering::AcqRel) {
            return;
        }
        let to = self.shared.applied.load(Ordering::Acquire);
        self.checkpoint_written = Some(Instant::now());
        if let Err(err) = std::fs::write(self.dir.join(CHECKPOINT), to.to_string()) {
            tracing::warn!(%err, "cannot keep the call journal's checkpoint");
            self.shared.checkpoint_behind.store(true, Ordering::Release);
        }
    }

    fn append_group(&mut self, appends: Vec<(String, Append, AppendReply)>) {
        if appends.is_empty() {
            return;
        }
        if let Err(err) = self.open() {
            tracing::error!(%err, "cannot open the call journal");
            for (_, _, reply) in appends {
                let _ = reply.send(Err(io::Error::new(err.kind(), err.to_string())));
            }
            return;
        }
        let mut text = String::new();
        // Where each taken line starts and ends, and whether it is write-ahead.
        let mut taken = Vec::new();
        let mut journaled = 0;
        for (line, how, reply) in appends {
            let shared = &self.shared;
            // A write journaled in this group puts the ones after it behind it.
            let in_use = shared.degraded.load(Ordering::Acquire)
                || shared.records.load(Ordering::Acquire) > 0
                || journaled > 0;
            if how != Append::IfInUse || in_use {
                let start = self.len + text.len() as u64;
                text.push_str(&line);
                let end = self.len + text.len() as u64;
                if how != Append::Ahead {
                    journaled += 1;
                }
                taken.push((start, end, how, reply));
            } else {
                let _ = reply.send(Ok(None));
            }
        }
        if taken.is_empty() {
            return;
        }
        let written = self.write(text.as_bytes());
        match written {
            Ok(()) => {
                {
                    // Known before the replay can read them: it must not take a
                    // write-ahead line for a journaled one.
                    let mut ahead = self.shared.lock_ahead();
                    for (start, end, how, _) in &taken {
                        if *how == Append::Ahead {
                            ahead.appended(*start, *end);
                        }
                    }
                    self.shared.add_records(journaled);
                    self.shared.synced.store(self.len, Ordering::Release);
                }
                for (start, _, _, reply) in taken {
                    let _ = reply.send(Ok(Some(start)));
                }
            }
            Err(err) => {
                tracing::error!(%err, "cannot append to the call journal");
                for (_, _, _, reply) in taken {
                    let _ = reply.send(Err(io::Error::new(err.kind(), err.to_string())));
                }
            }
        }
    }

    /// Opens the file at the first append; `len` then is where the next line starts.
    fn open(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(FILE))?;
            self.len = file.metadata()?.len();
            self.file = Some(file);
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.open()?;
        let file = self.file.as_mut().expect("opened above");
        if let Err(err) = file.write_all(bytes).and_then(|()| file.sync_data()) {
            // A partial line must not stay in front of the next append.
            let _ = file.set_len(self.len);
            return Err(err);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn truncate(&mut self, upto: u64) -> io::Result<bool> {
        // Held throughout: no checkpoint moves while the offsets start again from 0.
        let shared = self.shared.clone();
        let mut ahead = shared.lock_ahead();
        if self.len != upto || shared.applied.load(Ordering::Acquire) != upto {
            return Ok(false);
        }
        if let Some(file) = &self.file {
            file.set_len(0)?;
            file.sync_data()?;
        } else if upto > 0 {
            OpenOptions::new()
                .write(true)
                .open(self.dir.join(FILE))?
                .set_len(0)?;
        }
        self.len = 0;
        ahead.clear();
        shared.synced.store(0, Ordering::Release);
        shared.applied.store(0, Ordering::Release);
        // No file reads as 0, the checkpoint now.
        shared.checkpoint_behind.store(false, Ordering::Release);
        match std::fs::remove_file(self.dir.join(CHECKPOINT)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(true)
    }
}

impl Store {
    /// Journals this store's B2BUA writes in `journal` when the database is unreachable.
    pub fn attach_journal(&self, journal: Journal) {
        if self.journal.set(Arc::new(journal)).is_err() {
            tracing::warn!("a call journal was already attached");
        }
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.journal.get().map(|j| j.as_ref())
    }

    /// The opening event of a call this node's B2BUA runs ([`Store::apply_call_event_on`]);
    /// `None`: the database could not be reached and the event was journaled.
    pub async fn open_call(
        &self,
        event: &CallEvent,
        node: &NodeId,
    ) -> Result<Option<EventOutcome>> {
        let opening = self.write_ahead(event, node).await;
        self.open_call_after(event, node, opening).await
    }

    /// Makes a call's opening event durable in the journal (one fsync shared with the
    /// other appends waiting) before its database write is queued: the B2BUA waits for
    /// this, not for the commit, before the call rings. While the journal is in use the
    /// event is simply journaled. A journal that cannot be written leaves the event to
    /// the database alone, as without a journal.
    pub async fn write_ahead(&self, event: &CallEvent, node: &NodeId) -> Opening {
        let Some(journal) = self.journal.get() else {
            return Opening(None);
        };
        let write = CallWrite::Event {
            event: event.clone(),
            node: Some(node.as_str().to_owned()),
        };
        let ahead = async {
            if journal.in_use() && journal.append(&write, false).await? {
                return Ok(Ahead::Journaled);
            }
            journal.append_ahead(&write).await.map(Ahead::Line)
        };
        match ahead.await {
            Ok(ahead) => Opening(Some(ahead)),
            Err(err) => {
                tracing::error!(%err, "cannot write a call's opening event ahead; the database alone keeps it");
                Opening(None)
            }
        }
    }

    /// The database write of an opening event after [`Store::write_ahead`]: applied (and
    /// the journal's checkpoint moves past its line once committed), or left to the
    /// replay when the database could not be reached (`None`).
    pub async fn open_call_after(
        &self,
        event: &CallEvent,
        node: &NodeId,
        opening: Opening,
    ) -> Result<Option<EventOutcome>> {
        let live = self.apply_call_event_on(event, Some(node));
        let (journal, start) = match (self.journal.get(), opening.0) {
            (_, Some(Ahead::Journaled)) => return Ok(None),
            (Some(journal), Some(Ahead::Line(start))) => (journal.clone(), start),
            _ => {
                let write = CallWrite::Event {
                    event: event.clone(),
                    node: Some(node.as_str().to_owned()),
                };
                return self.journaled(&write, live).await;
            }
        };
        // Dropped before the write answers (the call's task stopped): the replay applies
        // the line, so that it is neither lost nor holds the checkpoint back for good.
        let mut pending = PendingLine {
            journal: Some(journal.clone()),
            start,
        };
        let answer = if self.can_lose_database() {
            match tokio::time::timeout(LIVE_WAIT, live).await {
                Ok(answer) => answer,
                Err(_) => {
                    pending.replay();
                    journal.database_down(&"no answer in time");
                    return Ok(None);
                }
            }
        } else {
            live.await
        };
        match answer {
            Err(err) if self.can_lose_database() && is_unreachable(&err) => {
                pending.replay();
                journal.database_down(&err);
                Ok(None)
            }
            // Refused for good, like a live write without a journal: nothing to replay.
            answer => {
                pending.committed();
                answer.map(Some)
            }
        }
    }

    /// PostgreSQL can be unreachable while the process runs; the embedded SQLite file
    /// cannot, so on it every write waits for the database (the journal is only the
    /// opening events' write-ahead log there).
    fn can_lose_database(&self) -> bool {
        self.backend() == super::Backend::Postgres
    }

    /// A later write of a call this node's B2BUA runs: applied, or journaled when the
    /// database could not be reached.
    pub async fn write_call(&self, write: CallWrite) -> Result<()> {
        self.journaled(&write, self.apply_call_write(&write))
            .await
            .map(|_| ())
    }

    /// Applies one write to the database: the live path and the replay's.
    async fn apply_call_write(&self, write: &CallWrite) -> Result<()> {
        match write {
            CallWrite::Event { event, node } => {
                let node = node.clone().map(NodeId);
                self.apply_replayable_call_event(event, node.as_ref())
                    .await?;
            }
            CallWrite::Queue {
                call_id,
                queue,
                wait_ms,
            } => self.set_call_queue(call_id, queue, *wait_ms).await?,
            CallWrite::Transferred { call_id, user, at } => {
                self.call_transferred(call_id, user, *at).await?;
            }
            CallWrite::Legs { call_id, legs } => self.set_call_legs(call_id, legs).await?,
            CallWrite::Media {
                call_id,
                stats,
                recording,
            } => {
                self.steps()
                    .submit(StepJob::Media {
                        call_id: call_id.clone(),
                        stats: stats.clone(),
                        recording: recording.as_ref().map(|r| StoredRecording {
                            file: r.file.clone(),
                            duration_ms: r.duration_ms,
                            voicemail: r.voicemail,
                        }),
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// Applies one write for the replay; the outcome of an event that logged its call
    /// (ran the intake), which is what webhooks are told of.
    async fn replay_call_write(&self, write: &CallWrite) -> Result<Option<EventOutcome>> {
        let CallWrite::Event { event, node } = write else {
            self.apply_call_write(write).await?;
            return Ok(None);
        };
        // Read before: an outcome does not say whether its event ran the intake, only
        // whether it was applied before.
        let logged_before = self.call_by_call_id(&event.call_id).await?.is_some();
        let node = node.clone().map(NodeId);
        let outcome = self
            .apply_replayable_call_event(event, node.as_ref())
            .await?;
        Ok(logs_the_call(logged_before, outcome.repeated).then_some(outcome))
    }

    /// Runs `live` unless the journal is in use; journals `write` when the database
    /// cannot be reached (or does not answer within [`LIVE_WAIT`]).
    async fn journaled<T>(
        &self,
        write: &CallWrite,
        live: impl Future<Output = Result<T>>,
    ) -> Result<Option<T>> {
        let Some(journal) = self.journal() else {
            return live.await.map(Some);
        };
        if journal.in_use() && journal.append(write, false).await? {
            return Ok(None);
        }
        if !self.can_lose_database() {
            return live.await.map(Some);
        }
        match tokio::time::timeout(LIVE_WAIT, live).await {
            Ok(Ok(done)) => return Ok(Some(done)),
            Ok(Err(err)) if is_unreachable(&err) => journal.database_down(&err),
            Ok(Err(err)) => return Err(err),
            Err(_) => journal.database_down(&"no answer in time"),
        }
        journal.append(write, true).await?;
        Ok(None)
    }
}

/// Whether a replayed call event logged its call, so that its intake's records are
/// announced: not when the call was logged before (a later event, or a write-ahead line
/// committed before a kill), nor when it is answered as a repeat (applied meanwhile by
/// its own live write, or an erased call's, which must not come back).
fn logs_the_call(logged_before: bool, repeated: bool) -> bool {
    !logged_before && !repeated
}

/// What [`Store::write_ahead`] made of an opening event; `None`: nothing (no journal).
pub struct Opening(Option<Ahead>);

enum Ahead {
    /// Journaled for the replay: the journal is in use.
    Journaled,
    /// A write-ahead line starting there.
    Line(u64),
}

/// A write-ahead line whose database write has not answered yet.
struct PendingLine {
    journal: Option<Arc<Journal>>,
    start: u64,
}

impl PendingLine {
    fn committed(&mut self) {
        if let Some(journal) = self.journal.take() {
            journal.committed(self.start);
        }
    }

    fn replay(&mut self) {
        if let Some(journal) = self.journal.take() {
            journal.hand_to_replay(self.start);
        }
    }
}

impl Drop for PendingLine {
    fn drop(&mut self) {
        if let Some(journal) = self.journal.take() {
            journal.hand_to_replay(self.start);
        }
    }
}

impl CallWrite {
    /// What the media relay left of a call: its statistics and recording.
    pub fn media(
        call_id: &str,
        stats: Option<&crate::media::relay::MediaStats>,
        recording: Option<&StoredRecording>,
    ) -> Self {
        CallWrite::Media {
            call_id: call_id.to_owned(),
            stats: stats.map(|s| serde_json::to_string(s).unwrap_or_default()),
            recording: recording.map(|r| Recording {
                file: r.file.clone(),
                duration_ms: r.duration_ms,
                voicemail: r.voicemail,
            }),
        }
    }
}

/// Probes a database found down and replays the journal once it answers; stops on
/// `cancel`. A node that starts with records left replays them first thing. `opened` is
/// told of each call the replay logged (the outcome of the event that ran its intake),
/// before the checkpoint moves past it; a call the database had already (a write-ahead
/// line committed before a kill, a write that reached it before its error) or an erased
/// one is not told again.
pub async fn run<F, Fut>(store: Store, cancel: CancellationToken, opened: F)
where
    F: Fn(EventOutcome) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(journal) = store.journal.get().cloned() else {
        return;
    };
    loop {
        let state = journal.state();
        if state.degraded {
            let back = tokio::time::timeout(PROBE_EVERY, store.ping()).await;
            if matches!(back, Ok(Ok(()))) {
                tracing::info!(
                    records = state.records,
                    "database back: replaying the call journal"
                );
                journal.shared.degraded.store(false, Ordering::Release);
            }
        }
        let state = journal.state();
        if !state.degraded && state.records > 0 {
            replay(&store, &journal, &cancel, &opened).await;
        } else if !state.degraded && journal.shared.synced.load(Ordering::Acquire) > 0 {
            // Applied up to the end at a moment new records arrived: empty it now.
            let end = journal.shared.applied.load(Ordering::Acquire);
            if let Err(err) = journal.truncate(end).await {
                tracing::error!(%err, "cannot empty the call journal");
            }
        }
        let state = journal.state();
        let wait = if state.degraded || state.records > 0 {
            PROBE_EVERY
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = journal.shared.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Applies the journal's records in order until it is empty, the database is lost again
/// or `cancel`.
async fn replay<F, Fut>(store: &Store, journal: &Journal, cancel: &CancellationToken, opened: &F)
where
    F: Fn(EventOutcome) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let (from, bytes) = match journal.unapplied() {
            Ok(read) => read,
            Err(err) => {
                tracing::error!(%err, "cannot read the call journal");
                return;
            }
        };
        if bytes.is_empty() {
            match journal.truncate(from).await {
                // Emptied; or records arrived meanwhile: go on with them.
                Ok(true) => return,
                Ok(false) => continue,
                Err(err) => {
                    tracing::error!(%err, "cannot empty the call journal");
                    return;
                }
            }
        }
        for line in record::decode(&bytes, from) {
            if cancel.is_cancelled() {
                return;
            }
            let Some(replayed) = journal.to_apply(line.start, line.end) else {
                continue;
            };
            match &line.write {
                Err(why) => journal.reject(line.text, why),
                Ok(write) => match store.replay_call_write(write).await {
                    Ok(logged) => {
                        metrics::counter!("leadline_journal_replayed_total").increment(1);
                        if let Some(outcome) = logged {
                            opened(outcome).await;
                        }
                    }
                    Err(err) if is_unreachable(&err) => {
                        journal.database_down(&err);
                        return;
                    }
                    Err(err) => journal.reject(line.text, &err.to_string()),
                },
            }
            journal.applied(line.start, line.end, replayed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::model::QueueId;

    fn queue_write(call_id: &str) -> CallWrite {
        CallWrite::Queue {
            call_id: call_id.to_owned(),
            queue: QueueId("q".to_owned()),
            wait_ms: None,
        }
    }

    fn unapplied_ids(journal: &Journal) -> Vec<String> {
        let (from, bytes) = journal.unapplied().unwrap();
        record::decode(&bytes, from)
            .into_iter()
            .map(|line| line.write.unwrap().call_id().to_owned())
            .collect()
    }

    #[test]
    fn a_replayed_event_announces_only_a_call_it_logs() {
        assert!(logs_the_call(false, false), "the journaled opening event");
        assert!(
            !logs_the_call(true, false),
            "a later event of a logged call"
        );
        assert!(
            !logs_the_call(false, true),
            "committed by its live write meanwhile, or an erased call's"
        );
        assert!(!logs_the_call(true, true), "committed before a kill");
    }

    #[tokio::test]
    async fn records_survive_a_restart_from_their_checkpoint_and_are_emptied_once_applied() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert!(
            !journal.append(&queue_write("a"), false).await.unwrap(),
            "an unused journal leaves the write to the database"
        );
        journal.database_down(&"test");
        for id in ["a", "b", "c"] {
            assert!(journal.append(&queue_write(id), false).await.unwrap());
        }
        assert_eq!(journal.state().records, 3);
        assert_eq!(unapplied_ids(&journal), ["a", "b", "c"]);
        let (from, bytes) = journal.unapplied().unwrap();
        let first = &record::decode(&bytes, from)[0];
        journal.applied(first.start, first.end, Replayed::Journaled);
        journal.flush().await;
        drop(journal);

        // A crash in the middle of an append leaves a torn line: set aside at the start.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        file.write_all(b"{\"write\":\"que").unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.state().records, 2);
        assert!(!journal.state().degraded);
        assert_eq!(unapplied_ids(&journal), ["b", "c"]);
        let rejected = std::fs::read_to_string(dir.path().join(REJECTED)).unwrap();
        assert!(rejected.contains("cut off"), "{rejected}");

        // Not empty: a new write goes behind the records left.
        assert!(journal.append(&queue_write("d"), false).await.unwrap());
        let (from, bytes) = journal.unapplied().unwrap();
        let lines = record::decode(&bytes, from);
        for line in &lines {
            journal.applied(line.start, line.end, Replayed::Journaled);
        }
        assert_eq!(journal.state().records, 0);
        assert!(
            !journal.truncate(from).await.unwrap(),
            "records past `from`"
        );
        assert!(journal.truncate(lines[2].end).await.unwrap());
        assert_eq!(std::fs::metadata(dir.path().join(FILE)).unwrap().len(), 0);
        assert!(!dir.path().join(CHECKPOINT).exists());
        assert!(!journal.append(&queue_write("e"), false).await.unwrap());
    }

    #[tokio::test]
    async fn write_ahead_lines_are_passed_once_committed_and_replayed_after_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let a = journal.append_ahead(&queue_write("a")).await.unwrap();
        let b = journal.append_ahead(&queue_write("b")).await.unwrap();
        let c = journal.append_ahead(&queue_write("c")).await.unwrap();
        assert_eq!(
            journal.state().records,
            0,
            "write-ahead lines are not for the replay"
        );
        assert!(
            !journal.append(&queue_write("x"), false).await.unwrap(),
            "nor do they put later writes in the journal"
        );
        journal.committed(b);
        journal.flush().await;
        assert_eq!(read_checkpoint(dir.path()), 0, "a is still in flight");
        journal.committed(a);
        journal.flush().await;
        assert_eq!(read_checkpoint(dir.path()), c, "past a and b");
        assert_eq!(unapplied_ids(&journal), ["c"]);
        drop(journal);

        // Killed with c in flight: the next start replays it.
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.state().records, 1);
        assert_eq!(unapplied_ids(&journal), ["c"]);
        assert!(journal.append(&queue_write("d"), false).await.unwrap());

        // A line whose write found the database down goes to the replay.
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let a = journal.append_ahead(&queue_write("a")).await.unwrap();
        journal.hand_to_replay(a);
        assert_eq!(journal.state().records, 1);
        let (from, bytes) = journal.unapplied().unwrap();
        let line = &record::decode(&bytes, from)[0];
        assert_eq!(
            journal.to_apply(line.start, line.end),
            Some(Replayed::Journaled)
        );
        journal.applied(line.start, line.end, Replayed::Journaled);
        assert_eq!(journal.state().records, 0);
        journal.committed(a);
        journal.flush().await;
        assert_eq!(
            read_checkpoint(dir.path()),
            line.end,
            "a late commit changes nothing"
        );
    }

    #[tokio::test]
    async fn the_checkpoint_file_follows_without_a_flush_and_when_the_journal_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let a = journal.append_ahead(&queue_write("a")).await.unwrap();
        let b = journal.append_ahead(&queue_write("b")).await.unwrap();
        let c = journal.append_ahead(&queue_write("c")).await.unwrap();
        journal.committed(a);
        assert_eq!(journal.shared.applied.load(Ordering::Acquire), b);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Written by the writer thread on its own, within its interval.
        while read_checkpoint(dir.path()) != b {
            assert!(
                Instant::now() < deadline,
                "the checkpoint's file stayed behind"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        journal.committed(b);
        assert_eq!(journal.shared.applied.load(Ordering::Acquire), c);
        drop(journal);
        while read_checkpoint(dir.path()) != c {
            assert!(
                Instant::now() < deadline,
                "the journal dropped without its checkpoint"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(
            unapplied_ids(&journal),
            ["c"],
            "only the line in flight is left"
        );
    }
}
