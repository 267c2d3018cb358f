//! SQLite's WAL checkpoints, done beside the writer instead of by it.
//!
//! SQLite copies the WAL back into the database file on the commit that takes it past
//! 1,000 pages, in the committing connection. With one writer connection every write then
//! waits for that copy: it was a third of the mail intake's write time. So the writer
//! turns it off ([`WRITER_PRAGMAS`]) and this task checkpoints from a reader connection
//! while the writer goes on. PASSIVE never blocks the writer or the readers; what it
//! cannot copy now, it copies the next time.

use std::time::Duration;

use sqlx::{AnyPool, Row as _};
use tokio_util::sync::{CancellationToken, DropGuard};

/// The writer connection's settings besides the shared ones: no checkpoints of its own;
/// a page cache that holds a batch of collected mail (a few MB of raw messages: a smaller
/// one spills pages to the WAL mid-transaction, writing them twice); statement journals
/// in memory; deleted content overwritten with zeros, so that an erased person's data
/// does not linger in free pages (every delete goes through the writer).
pub(crate) const WRITER_PRAGMAS: &str = "PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -32768; \
     PRAGMA temp_store = MEMORY; PRAGMA secure_delete = ON;";

/// How soon the WAL is looked at again after it had new pages, and after it had none.
const BUSY: Duration = Duration::from_millis(100);
const IDLE: Duration = Duration::from_millis(500);

/// Runs the checkpoints until dropped (with the last clone of the store).
pub(crate) struct Checkpointer {
    _stop: DropGuard,
}

impl Checkpointer {
    pub fn spawn(readers: AnyPool) -> Self {
        let stop = CancellationToken::new();
        tokio::spawn(run(readers, stop.clone()));
        Self {
            _stop: stop.drop_guard(),
        }
    }
}

async fn run(readers: AnyPool, stop: CancellationToken) {
    let mut wait = IDLE;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        if readers.is_closed() {
            return;
        }
        wait = match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&readers)
            .await
        {
            // (busy, pages in the WAL, pages copied): all copied means nothing was new.
            Ok(row) => match (row.try_get::<i64, _>(1), row.try_get::<i64, _>(2)) {
                (Ok(log), Ok(copied)) if log == copied => IDLE,
                _ => BUSY,
            },
            Err(err) => {
                tracing::debug!(%err, "WAL checkpoint failed; trying again");
                IDLE
            }
        };
    }
}
