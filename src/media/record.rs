//! The recording adapter: a blocking task that takes a call's tapped audio packets from
//! the relay and writes them with [`super::recording::Recorder`], so file writes never
//! hold up the relay's packets.

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::recording::{Channels, Recorder, RecordingError, RecordingSummary};
use super::relay::{MediaSession, TAP_QUEUE, TappedPacket};

/// A recording in progress.
pub struct RecordingJob {
    file: String,
    path: PathBuf,
    writer: tokio::task::JoinHandle<Result<RecordingSummary, RecordingError>>,
}

/// A finished recording: its file name in the recordings folder and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub file: String,
    pub summary: RecordingSummary,
}

impl RecordingJob {
    /// Starts recording `session` into `dir/file`. The file is complete once the session
    /// has been closed and [`RecordingJob::finish`] returned.
    pub fn start(
        session: &MediaSession,
        dir: &Path,
        file: String,
        channels: Channels,
    ) -> Result<RecordingJob, RecordingError> {
        let path = dir.join(&file);
        let mut recorder = Recorder::create(&path, channels)?;
        let (tap, mut packets) = mpsc::channel::<TappedPacket>(TAP_QUEUE);
        session.tap(tap);
        let writer = tokio::task::spawn_blocking(move || {
            while let Some(p) = packets.blocking_recv() {
                recorder.packet(
                    p.from,
                    p.payload_type,
                    p.sequence,
                    p.timestamp,
                    p.ssrc,
                    &p.payload,
                    p.arrival_samples,
                );
            }
            recorder.finish()
        });
        Ok(RecordingJob { file, path, writer })
    }

    /// Waits for the writer (the relay must have ended, closing the tap) and returns
    /// the recording; an empty or failed recording is removed and gives `None`.
    pub async fn finish(self) -> Option<Finished> {
        match self.writer.await {
            Ok(Ok(summary)) if summary.samples > 0 => Some(Finished {
                file: self.file,
                summary,
            }),
            Ok(Ok(_)) => {
                let _ = tokio::fs::remove_file(&self.path).await;
                None
            }
            Ok(Err(err)) => {
                tracing::error!(%err, file = %self.path.display(), "recording failed");
                let _ = tokio::fs::remove_file(&self.path).await;
                None
            }
            Err(err) => {
                tracing::error!(%err, "recording task failed");
                None
            }
        }
    }
}
