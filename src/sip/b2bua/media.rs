//! A call's media: the relay session that puts the gateway in the RTP path,
//! the SDP rewrite at every point where one party's SDP goes to the other, the
//! recording, and what the relay measured, kept on the call when it ends.

use super::*;
use crate::media::{MediaSession, Side};
use crate::store::{NumberMedia, StoredRecording};

/// What a call keeps about its media.
#[derive(Default)]
pub(super) struct CallMedia {
    /// `None` when the media flows between the parties (relay off).
    pub session: Option<Arc<MediaSession>>,
    pub settings: NumberMedia,
    pub recording: std::sync::Mutex<Option<crate::media::record::RecordingJob>>,
}

impl B2bua {
    /// The relay session of a new call, if its number or trunk wants the relay. Every
    /// port pair taken is a refusal the caller hears about (503), not a call without media.
    pub(super) fn media_session(
        &self,
        relay: bool,
    ) -> Result<Option<Arc<MediaSession>>, StatusCode> {
        let Some(engine) = self.media.as_ref().filter(|_| relay) else {
            return Ok(None);
        };
        match engine.session() {
            Ok(session) => Ok(Some(Arc::new(session))),
            Err(err) => {
                tracing::error!(%err, "no media relay for the call");
                Err(StatusCode::ServiceUnavailable)
            }
        }
    }
}

impl Call {
    /// `body`, an SDP that `from` sent, as the other party gets it: through the relay's
    /// rewrite when the gateway is in the media path, unchanged otherwise.
    pub(super) fn sdp_for(&self, from: Side, body: &[u8]) -> Vec<u8> {
        match &self.media.session {
            Some(session) => session.sdp_from(from, body),
            None => body.to_vec(),
        }
    }

    /// Answered: silence now counts towards the media timeout, and the recording starts
    /// if the number records calls.
    pub(super) fn media_answered(&self) {
        let Some(session) = &self.media.session else {
            return;
        };
        session.arm_timeout();
        if !self.media.settings.recording {
            return;
        }
        let dir = self.b2bua.data_dir.join(RECORDINGS_DIR);
        if let Err(err) = std::fs::create_dir_all(&dir) {
            tracing::error!(%err, dir = %dir.display(), "cannot create the recordings folder");
            return;
        }
        let file = format!("{}.wav", uuid::Uuid::now_v7());
        match crate::media::record::RecordingJob::start(
            session,
            &dir,
            file,
            self.media.settings.recording_channels,
        ) {
            Ok(job) => {
                *self
                    .media
                    .recording
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(job);
            }
            Err(err) => tracing::error!(%err, "cannot start the call's recording"),
        }
    }

    /// Resolves when the relay saw no media for the timeout; never without a relay.
    pub(super) async fn media_dead(&self) {
        match &self.media.session {
            Some(session) => session.dead().await,
            None => std::future::pending().await,
        }
    }

    /// The call is over: stops the relay (freeing its ports), finishes the recording and
    /// keeps both on the call log row.
    pub(super) async fn finish_media(&self) {
        let Some(session) = &self.media.session else {
            return;
        };
        let stats = session.stats_after_close().await;
        for (direction, s) in [("caller", stats.from_caller), ("callee", stats.from_callee)] {
            metrics::counter!("leadline_rtp_packets_total", "from" => direction)
                .increment(s.packets);
            metrics::counter!("leadline_rtp_packets_relayed_total", "from" => direction)
                .increment(s.relayed);
            metrics::counter!("leadline_rtp_packets_lost_total", "from" => direction)
                .increment(s.lost);
            if s.packets > 0 {
                metrics::histogram!("leadline_rtp_jitter_ms", "from" => direction)
                    .record(s.jitter_ms);
            }
        }
        let job = self
            .media
            .recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let recording = match job {
            Some(job) => job.finish().await.map(|done| StoredRecording {
                file: done.file,
                duration_ms: done.summary.duration_ms,
                voicemail: false,
            }),
            None => None,
        };
        if self.number.is_none() {
            return;
        }
        if let Err(err) = self
            .b2bua
            .store
            .set_call_media(&self.call_id, Some(&stats), recording.as_ref())
            .await
        {
            tracing::error!(%err, "cannot keep the call's media statistics");
        }
    }
}

/// Folder of the data dir holding call recordings and voicemail messages.
pub const RECORDINGS_DIR: &str = "recordings";
/// Folder of the data dir holding numbers' voicemail greetings.
pub const GREETINGS_DIR: &str = "greetings";
