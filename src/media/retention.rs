//! The retention sweep: recordings and voicemail messages older than the configured
//! number of days are deleted, file and call-log reference together.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Store, now_ms};

/// How often the sweep looks; retention is counted in days, so hourly is plenty.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Recordings deleted per database round trip.
const BATCH: i64 = 200;

/// Runs until `cancel`; `days == 0` keeps recordings for ever.
pub async fn run(store: Store, dir: PathBuf, days: u32, cancel: CancellationToken) {
    if days == 0 {
        return;
    }
    let keep_ms = i64::from(days) * 24 * 3600 * 1000;
    loop {
        if let Err(err) = sweep(&store, &dir, now_ms() - keep_ms).await {
            tracing::error!(%err, "recording retention sweep failed");
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}

/// Deletes the recordings of calls started before `before`; returns how many.
pub async fn sweep(
    store: &Store,
    dir: &std::path::Path,
    before: i64,
) -> Result<usize, crate::store::StoreError> {
    let mut deleted = 0;
    loop {
        let expired = store.recordings_before(before, BATCH).await?;
        if expired.is_empty() {
            return Ok(deleted);
        }
        for (call, file) in expired {
            // Only a plain file name is ever stored; anything else is not ours to delete.
            if !file.contains(['/', '\\']) && !file.starts_with('.') {
                match tokio::fs::remove_file(dir.join(&file)).await {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        // Tried again at the next sweep rather than in a loop now.
                        tracing::error!(%err, %file, "cannot delete an expired recording");
                        return Ok(deleted);
                    }
                }
            }
            store.clear_recording(&call).await?;
            deleted += 1;
        }
    }
}
