//! Media: the gateway in the RTP path of a call.
//!
//! Owns the RTP port range, the SDP rewrite that puts the gateway's address in each leg's
//! offer and answer, the per-call relay (symmetric RTP with latching, RTCP, loss and jitter
//! statistics, media timeout), queue music played to waiting callers, G.711 recording to
//! WAV, SRTP with SDES keys on the legs that agree it, voicemail greetings, and the
//! number's working hours. The SDP rewrite, G.711, the recording's timeline and the
//! schedule are pure; the relay and the recording writer are the adapters around them.

pub mod g711;
pub mod greeting;
pub mod music;
pub mod ports;
pub mod record;
pub mod recording;
pub mod relay;
pub mod retention;
pub mod sdes;
pub mod sdp;
pub mod srtp;
pub mod stats;
pub mod voicemail;

pub use music::Music;
pub use ports::{PortPair, PortPool, PortRange};
pub use relay::{MediaEngine, MediaSession};

/// Which party of a call a socket, a stream or an SDP faces: the one whose INVITE the
/// gateway took (the caller) or the one the gateway called (the callee).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Caller,
    Callee,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Side::Caller => 0,
            Side::Callee => 1,
        }
    }
}

/// What can go wrong setting up media.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Every port pair of the range is taken or cannot be bound.
    #[error("no free RTP port pair in {0}")]
    PortsExhausted(PortRange),
    #[error("cannot bind an RTP socket: {0}")]
    Bind(#[from] std::io::Error),
    /// The caller offers neither PCMU nor PCMA, so the gateway cannot answer it itself.
    #[error("the caller offers no G.711 audio")]
    NoCodec,
    /// The party offers SRTP the relay cannot agree to (488).
    #[error(transparent)]
    Srtp(#[from] sdes::Refusal),
}
