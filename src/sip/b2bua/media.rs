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

/// The 488 for a caller's offer the relay cannot take: SRTP whose keys travelled in
/// clear (`caller_is_tls` false) or with no key it can use. `Warning` says why.
pub(super) fn srtp_refusal(
    session: Option<&MediaSession>,
    caller_is_tls: bool,
    offer: &[u8],
) -> Option<Header> {
    let session = session?;
    session.set_signalling_tls(crate::media::Side::Caller, caller_is_tls);
    let refusal = session.refusal(crate::media::Side::Caller, offer)?;
    tracing::info!(%refusal, "the caller's SRTP offer is refused");
    metrics::counter!("leadline_srtp_refusals_total").increment(1);
    Some(Header::Warning(
        format!("399 leadline \"{refusal}\"").into(),
    ))
}

/// Folder of the data dir holding call recordings and voicemail messages.
pub const RECORDINGS_DIR: &str = "recordings";
/// Folder of the data dir holding numbers' voicemail greetings.
pub const GREETINGS_DIR: &str = "greetings";
/// Folder of the data dir holding queues' music.
pub const MUSIC_DIR: &str = "music";
