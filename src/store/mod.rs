//! The database adapter: one `Store` over SQLite (embedded default) or PostgreSQL.
//!
//! Owns connection pools, migrations and every SQL statement. The queries are portable
//! (sqlx's `Any` driver, `$n` placeholders, BIGINT/TEXT columns) so the same code runs on
//! both backends. Decisions are not made here: the store loads what the pure core needs,
//! calls it, and applies the result in one transaction.
//!
//! SQLite has one writer. Rather than let several pooled connections race for the write
//! lock (and fail with `SQLITE_BUSY` when a read transaction upgrades), writes go through
//! a pool of exactly one connection, and reads through a separate pool; WAL mode lets the
//! readers run beside the writer.

/// SQL assembled from constants only (table names, column lists, placeholder numbers):
/// never from user input, which always goes through `bind`.
macro_rules! dynamic_sql {
    ($($arg:tt)*) => {
        sqlx::AssertSqlSafe(format!($($arg)*))
    };
}

mod access;
pub use access::ListScope;
mod activities;
mod audit;
mod batch;
mod call_path;
mod calls;
mod checkpoint;
pub mod cluster;
mod config;
mod dry_run;
mod entities;
mod intake;
pub mod journal;
mod mail;
mod mail_intake;
mod matching;
mod media;
mod presence;
pub mod privacy;
mod registrations;
mod routing;
mod rows;
mod script;
mod sessions;
mod snapshot;
mod stages;
mod stats;
mod steps;
mod trunk_registrations;
mod users;
mod webhooks;

pub use activities::*;
pub use audit::*;
pub use call_path::CallPathGuard;
pub use calls::*;
pub use entities::*;
pub use mail::*;
pub use media::*;
pub use presence::*;
pub use privacy::{ErasureJob, PersonExport};
pub use registrations::*;
pub use routing::*;
pub use sessions::*;
pub use stages::StageInput;
pub use trunk_registrations::*;
pub use users::*;
pub use webhooks::*;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use log::LevelFilter;
use sqlx::ConnectOptions as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor};

use crate::crm::model::Millis;

/// Errors of the database layer, in words an operator or API client can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} '{id}' was not found")]
    NotFound { what: &'static str, id: String },
    /// A uniqueness rule was hit (M7 duplicate identifier, taken e-mail or number …).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The request refers to something that cannot be used (unknown queue, member …).
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("unsupported database URL '{0}': use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The store is shutting down; the request was not applied.
    #[error("the database writer has shut down")]
    Closed,
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A write shared by several requests (group commit) failed; each of them gets this.
    #[error("database write failed: {0}")]
    Batch(String),
    /// The local call journal could not be written (see `journal`).
    #[error("call journal: {0}")]
    Journal(String),
    /// A stored value the code cannot read back: a bug or a hand-edited database.
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        StoreError::NotFound {
            what,
            id: id.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// Turns a unique-constraint violation into a `Conflict` with the given words.
pub(crate) fn on_unique(
    err: sqlx::Error,
    code: &'static str,
    message: impl FnOnce() -> String,
) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict {
            code,
            message: message(),
        },
        _ => StoreError::Database(err),
    }
}

/// Parses a stored enum spelling, reporting a corrupt row instead of panicking.
pub(crate) fn parse_stored<T: FromStr>(value: &str, column: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("column {column} holds '{value}'")))
}

pub(crate) fn json_list(values: &[String]) -> String {
    serde_json::to_string(values).expect("a list of strings always serialises")
}

pub(crate) fn parse_json_list(text: &str, column: &str) -> Result<Vec<String>> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("column {column} is not a JSON list: {e}")))
}

pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 UTC text for a stored time, as the API shows it.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Which database the URL selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Pool for statements that change data (one connection on SQLite).
    write: AnyPool,
    /// Pool for reads; the same pool as `write` on PostgreSQL.
    read: AnyPool,
    backend: Backend,
    /// The PostgreSQL URL, for the listener of other processes' changes.
    url: Option<Arc<str>>,
    cache: Arc<snapshot::ConfigCache>,
    /// Debug builds: the queries of calls' set-up paths (see `call_path`).
    call_paths: Arc<call_path::CallPaths>,
    tokens: Arc<users::TokenCache>,
    /// Group commit of call intakes (see `batch`).
    batcher: batch::Batcher,
    /// Group commit of calls' later steps (see `steps`).
    steps: steps::StepWriter,
    /// Group commit of audit rows (see `audit`).
    audit: audit::AuditWriter,
    /// The webhook list the delivery task reads for every call update.
    webhook_cache: Arc<webhooks::WebhookCache>,
    /// SQLite: WAL checkpoints beside the writer (see `checkpoint`).
    checkpointer: Option<Arc<checkpoint::Checkpointer>>,
    /// Where the B2BUA's call writes go while the database is unreachable.
    journal: Arc<std::sync::OnceLock<Arc<journal::Journal>>>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Migrations whose text changed after databases had applied them: only their opening
/// comments were reworded. sqlx stores the SHA-384 of each migration's text and refuses
/// to start when an applied migration's text no longer matches, so a database that
/// applied an old text gets the new checksum, and only when it holds exactly the old one
/// (any other mismatch is still sqlx's to report).
mod checksum_repair {
    /// `(version, checksum of the old text, checksum of the text in migrations/)`, hex.
    pub(super) const REPAIRS: &[(i64, &str, &str)] = &[
        (
            6,
            "0d4782f09841cd7f5e243bd1b6149744b5d3ad0a1df487a631ab9d6cc1666d0f9c57bb8b454c4fe1929a17f77db7645a",
            "a8377fe286e9febf740721fd4effb738efb17ead0bf3de0ccf76749166d69452eb22c5100b0e060d6d639accd261e040",
        ),
        (
            7,
            "5f3cf165509fcf0c27ed0118b152f6021263676aa6f411709dbd3bf24ccee5e9534521461e525d10ae38a19ff8a01f69",
            "c1fc647d188a05a489355123cf3f993a9f06615bac1c838955dade819aa089e2e8e2967a1799882cc20e7de03a97dff6",
        ),
        (
            8,
            "3baa86756b2cc1acadc01ab85db1dfbfa90fd2f487c023fa3f3c76f9fe7b740cdf9717bfb73533715a9d3015e92555e2",
            "d1f684923eaf390e526e0490fe057a809b623d994503396ddc43146826d52f6ab641ade9ae00b15a7fcfb087441718ef",
        ),
        (
            9,
            "99da106594020214db0d8724413b19e501f7bdb3a67176c4904b66d997cc984fe3faef45f2cd02280af4d133065cfb1a",
            "792dc9fe860bccaaa5cfb00f95aa2760d888f00d5e8e9193b39fece17ae706585f844e2686524870d24fcaa2590482d4",
        ),
        (
            10,
            "5df9aff4fc8fc9c23be8e8d4c7c1a9954c58c99aeae80fdaf8a0111a9f4c665a05b4d6c2e40f46f03b1666772151e40a",
            "eb69d45c3aff953210e33b7f8150f7729019200fab3cf02b4db837568f110449bb34c382b833295b7d20380dc96ab3f7",
        ),
    ];

    #[derive(Debug, PartialEq, Eq)]
    pub(super) struct Update {
        pub version: i64,
        pub old: Vec<u8>,
        pub new: Vec<u8>,
    }

    /// The checksum updates `stored` (`_sqlx_migrations`' version and checksum rows)
    /// needs: a listed version whose checksum is the old one.
    pub(super) fn due(stored: &[(i64, Vec<u8>)]) -> Vec<Update> {
        stored
            .iter()
            .filter_map(|(version, checksum)| {
                let (_, old, new) = REPAIRS.iter().find(|(v, _, _)| v == version)?;
                let old = hex::decode(old).expect("REPAIRS holds hex");
                (*checksum == old).then(|| Update {
                    version: *version,
                    old,
                    new: hex::decode(new).expect("REPAIRS holds hex"),
                })
            })
            .collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use sha2::{Digest, Sha384};

        /// The text of each reworded migration now.
        const CURRENT: &[(i64, &str)] = &[
            (6, include_str!("../../migrations/0006_mail.sql")),
            (7, include_str!("../../migrations/0007_media.sql")),
            (8, include_str!("../../migrations/0008_audit.sql")),
            (9, include_str!("../../migrations/0009_webhooks.sql")),
            (10, include_str!("../../migrations/0010_access.sql")),
        ];

        #[test]
        fn table_holds_the_checksums_of_the_current_texts() {
            assert_eq!(REPAIRS.len(), CURRENT.len());
            for (version, old, new) in REPAIRS {
                let text = CURRENT.iter().find(|(v, _)| v == version).unwrap().1;
                assert_eq!(
                    hex::encode(Sha384::digest(text)),
                    *new,
                    "migration {version}"
                );
                assert_ne!(old, new);
            }
        }

        #[test]
        fn only_the_old_checksum_of_a_listed_version_is_moved() {
            let old7 = hex::decode(REPAIRS[1].1).unwrap();
            let new7 = hex::decode(REPAIRS[1].2).unwrap();
            let stored = vec![
                (1, old7.clone()),
                (7, old7.clone()),
                (8, b"something else".to_vec()),
                (9, hex::decode(REPAIRS[3].2).unwrap()),
            ];
            assert_eq!(
                due(&stored),
                vec![Update {
                    version: 7,
                    old: old7,
                    new: new7
                }]
            );
            assert!(due(&[]).is_empty());
        }
    }
}

impl Store {
    /// Opens the database at `url` (`sqlite://path?mode=rwc` or `postgres://…`).
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        // Statements are not logged one by one (every call runs a dozen); slow ones are.
        let options = AnyConnectOptions::from_str(url)?
            .log_statements(LevelFilter::Off)
            .log_slow_statements(LevelFilter::Warn, Duration::from_millis(500));
        match backend {
            Backend::Sqlite => {
                let write = sqlite_pool(1, checkpoint::WRITER_PRAGMAS)
                    .connect_with(options.clone())
                    .await?;
                let read = sqlite_pool(4, "").connect_with(options).await?;
                let mut store = Self::new(write, read.clone(), backend, None);
                store.checkpointer = Some(Arc::new(checkpoint::Checkpointer::spawn(read)));
                Ok(store)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?;
                Ok(Self::new(pool.clone(), pool, backend, Some(Arc::from(url))))
            }
        }
    }

    fn new(write: AnyPool, read: AnyPool, backend: Backend, url: Option<Arc<str>>) -> Self {
        let cache: Arc<snapshot::ConfigCache> = Arc::default();
        Self {
            steps: steps::StepWriter::spawn(write.clone(), cache.clone()),
            cache,
            url,
            call_paths: Arc::default(),
            batcher: batch::Batcher::spawn(write.clone()),
            audit: audit::AuditWriter::spawn(write.clone()),
            write,
            read,
            backend,
            tokens: Arc::default(),
            webhook_cache: Arc::default(),
            checkpointer: None,
            journal: Arc::default(),
        }
    }

    pub(crate) fn tokens(&self) -> &users::TokenCache {
        &self.tokens
    }

    pub(crate) fn cache(&self) -> &snapshot::ConfigCache {
        &self.cache
    }

    pub(crate) fn batcher(&self) -> &batch::Batcher {
        &self.batcher
    }

    pub(crate) fn steps(&self) -> &steps::StepWriter {
        &self.steps
    }

    pub(crate) fn audit_writer(&self) -> &audit::AuditWriter {
        &self.audit
    }

    /// Applies pending migrations. Several processes may call this at once on PostgreSQL:
    /// sqlx takes an advisory lock.
    pub async fn migrate(&self) -> Result<()> {
        self.repair_migration_checksums().await?;
        MIGRATOR.run(&self.write).await?;
        Ok(())
    }

    /// Moves the stored checksums of migrations whose comments were reworded (see
    /// [`checksum_repair`]) to the new texts, so a database migrated before starts.
    async fn repair_migration_checksums(&self) -> Result<()> {
        let exists = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master \
                 WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()"
            }
        };
        let (tables,): (i64,) = sqlx::query_as(exists).fetch_one(&self.write).await?;
        if tables == 0 {
            return Ok(());
        }
        let stored: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations")
                .fetch_all(&self.write)
                .await?;
        for update in checksum_repair::due(&stored) {
            // Conditional on the old checksum: several nodes may start at once.
            sqlx::query(
                "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2 AND checksum = $3",
            )
            .bind(update.new)
            .bind(update.version)
            .bind(update.old)
            .execute(&self.write)
            .await?;
            tracing::info!(
                version = update.version,
                "migration checksum moved to the reworded text"
            );
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Every query of the store starts here or at [`Store::writer`] (the group commits
    /// aside), which is what lets debug builds see a call's set-up path query.
    #[track_caller]
    pub(crate) fn reader(&self) -> &AnyPool {
        self.call_paths.query(std::panic::Location::caller());
        &self.read
    }

    #[track_caller]
    pub(crate) fn writer(&self) -> &AnyPool {
        self.call_paths.query(std::panic::Location::caller());
        &self.write
    }

    pub(crate) fn url(&self) -> Option<Arc<str>> {
        self.url.clone()
    }

    /// Marks the current task as working on the set-up of call `call_id` until the guard
    /// drops: in debug builds its queries are recorded ([`Store::call_path_queries`]).
    pub fn watch_call_path(&self, call_id: &str) -> CallPathGuard {
        self.call_paths.mark(call_id)
    }

    /// Debug builds: where in the store the marked tasks of `call_id` started queries
    /// (`file:line`), while any of them is still marked; `None` otherwise.
    pub fn call_path_queries(&self, call_id: &str) -> Option<Vec<String>> {
        self.call_paths.queries(call_id)
    }

    /// Starts the task that keeps the snapshot current with other processes' changes
    /// (see `snapshot`); it stops on `cancel`.
    pub fn watch_changes(
        &self,
        cancel: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(snapshot::watch::run(self.clone(), cancel))
    }

    /// Readiness: the database answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// Writes the call journal's checkpoint out and closes the pools.
    pub async fn close(&self) {
        if let Some(journal) = self.journal.get() {
            journal.flush().await;
        }
        self.write.close().await;
        self.read.close().await;
    }
}

/// `pragmas`: settings of these connections besides the shared ones.
fn sqlite_pool(max: u32, pragmas: &'static str) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        // An embedded file has no connection to lose: the ping before each acquire was
        // one more round trip to SQLite's worker thread per query, ~9 % of a call's CPU.
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                // WAL: readers never block the writer. NORMAL: durable across process
                // crashes, fsync only at checkpoints. busy_timeout covers the moment a
                // checkpoint or a second process holds the lock.
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                )
                .await?;
                if !pragmas.is_empty() {
                    conn.execute(pragmas).await?;
                }
                Ok(())
            })
        })
}

/// Reads a column, mapping decode errors to `Corrupt` so callers use `?` uniformly.
pub(crate) fn col<'r, T>(row: &'r AnyRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::Row;
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// Stored flags are BIGINT 0/1 (portable across SQLite and PostgreSQL).
pub(crate) fn flag(value: bool) -> i64 {
    i64::from(value)
}
