//! A call's media: the relay session that puts the gateway in the RTP path, the
//! number's media settings and the recording. The driver rewrites SDP through the
//! session, arms its timeout, and keeps what it measured on the call when it ends.

use super::*;
use crate::media::MediaSession;
use crate::store::NumberMedia;

/// What a call keeps about its media.
#[derive(Default)]
pub(super) struct CallMedia {
    /// `None` when the media flows between the parties (relay off).
    pub session: Option<Arc<MediaSession>>,
    pub settings: NumberMedia,
    pub recording: Option<crate::media::record::RecordingJob>,
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

/// Folder of the data dir holding call recordings and voicemail messages.
pub const RECORDINGS_DIR: &str = "recordings";
/// Folder of the data dir holding numbers' voicemail greetings.
pub const GREETINGS_DIR: &str = "greetings";
/// Folder of the data dir holding queues' music.
pub const MUSIC_DIR: &str = "music";
