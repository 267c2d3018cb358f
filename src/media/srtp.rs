//! The SRTP transform of one leg (RFC 3711): what its party sends is decrypted with the
//! party's key, what goes to it is encrypted with the relay's, for RTP and RTCP alike.
//! The cipher work is the `webrtc-srtp` crate's; this owns which key goes where.

use webrtc_srtp::context::Context;
use webrtc_srtp::option::srtp_replay_protection;
use webrtc_srtp::protection_profile::ProtectionProfile;

use super::sdes::MasterKey;

/// RFC 3711 §3.3.2's default replay window, in packets.
const REPLAY_WINDOW: usize = 64;

/// Why a packet could not be transformed.
#[derive(Debug, thiserror::Error)]
pub enum SrtpError {
    /// A key the suite cannot use (never for a key read by `sdes`).
    #[error("cannot set up SRTP: {0}")]
    Key(String),
    /// Authentication failed, a replay, or not an (S)RTP/(S)RTCP packet at all.
    #[error("packet refused: {0}")]
    Packet(String),
}

/// Whether a packet is RTP or RTCP (SRTCP has its own index and authentication).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rtp,
    Rtcp,
}

/// One leg's pair of SRTP contexts.
pub struct LegSrtp {
    peer: MasterKey,
    ours: MasterKey,
    inbound: Context,
    outbound: Context,
}

impl LegSrtp {
    /// `peer` is the key the party encrypts with, `ours` the one the relay encrypts with.
    pub fn new(peer: MasterKey, ours: MasterKey) -> Result<Self, SrtpError> {
        let context = |key: &MasterKey, replay: bool| {
            Context::new(
                key.key(),
                key.salt(),
                ProtectionProfile::Aes128CmHmacSha1_80,
                replay.then(|| srtp_replay_protection(REPLAY_WINDOW)),
                None,
            )
            .map_err(|e| SrtpError::Key(e.to_string()))
        };
        Ok(Self {
            inbound: context(&peer, true)?,
            outbound: context(&ours, false)?,
            peer,
            ours,
        })
    }

    /// Whether this transform uses exactly these keys (a re-sent SDP keeps its state:
    /// rollover counters and the replay window).
    pub fn uses(&self, peer: &MasterKey, ours: &MasterKey) -> bool {
        self.peer == *peer && self.ours == *ours
    }

    /// The plain packet of one the party sent.
    pub fn unprotect(&mut self, kind: Kind, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let plain = match kind {
            Kind::Rtp => self.inbound.decrypt_rtp(packet),
            Kind::Rtcp => self.inbound.decrypt_rtcp(packet),
        };
        plain
            .map(|b| b.to_vec())
            .map_err(|e| SrtpError::Packet(e.to_string()))
    }

    /// The protected packet to send the party.
    pub fn protect(&mut self, kind: Kind, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let protected = match kind {
            Kind::Rtp => self.outbound.encrypt_rtp(packet),
            Kind::Rtcp => self.outbound.encrypt_rtcp(packet),
        };
        protected
            .map(|b| b.to_vec())
            .map_err(|e| SrtpError::Packet(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16) -> Vec<u8> {
        rtp_rs::RtpPacketBuilder::new()
            .payload_type(0)
            .ssrc(0x1234)
            .sequence(rtp_rs::Seq::from(seq))
            .timestamp(u32::from(seq) * 160)
            .payload(&[0x55u8; 160])
            .build()
            .unwrap()
    }

    /// The party's side of the leg: it encrypts with `peer` and decrypts with `ours`.
    fn pair() -> (LegSrtp, LegSrtp) {
        let peer = MasterKey::from_bytes([1; 30]);
        let ours = MasterKey::from_bytes([2; 30]);
        (
            LegSrtp::new(peer.clone(), ours.clone()).unwrap(),
            LegSrtp::new(ours, peer).unwrap(),
        )
    }

    #[test]
    fn packets_round_trip_both_ways_and_are_not_plain_on_the_wire() {
        let (mut relay, mut party) = pair();
        for seq in 0..5 {
            let wire = party.protect(Kind::Rtp, &rtp(seq)).unwrap();
            assert_eq!(wire.len(), rtp(seq).len() + 10, "an 80-bit tag");
            assert_ne!(wire[12..172], rtp(seq)[12..], "the payload is encrypted");
            assert_eq!(relay.unprotect(Kind::Rtp, &wire).unwrap(), rtp(seq));
            let back = relay.protect(Kind::Rtp, &rtp(seq)).unwrap();
            assert_eq!(party.unprotect(Kind::Rtp, &back).unwrap(), rtp(seq));
        }
        let report = b"\x80\xc9\x00\x01\x00\x00\x12\x34".to_vec();
        let wire = party.protect(Kind::Rtcp, &report).unwrap();
        assert_eq!(relay.unprotect(Kind::Rtcp, &wire).unwrap(), report);
    }

    #[test]
    fn tampered_replayed_and_foreign_packets_are_refused() {
        let (mut relay, mut party) = pair();
        let wire = party.protect(Kind::Rtp, &rtp(1)).unwrap();
        let mut tampered = wire.clone();
        tampered[20] ^= 1;
        assert!(relay.unprotect(Kind::Rtp, &tampered).is_err());
        assert!(relay.unprotect(Kind::Rtp, &wire).is_ok());
        assert!(relay.unprotect(Kind::Rtp, &wire).is_err(), "a replay");
        assert!(relay.unprotect(Kind::Rtp, &rtp(2)).is_err(), "plain RTP");
        assert!(relay.unprotect(Kind::Rtp, b"junk").is_err());
        assert!(relay.unprotect(Kind::Rtcp, b"junk").is_err());
    }

    #[test]
    fn uses_tells_the_same_keys_apart() {
        let (relay, _) = pair();
        let one = MasterKey::from_bytes([1; 30]);
        let two = MasterKey::from_bytes([2; 30]);
        assert!(relay.uses(&one, &two));
        assert!(!relay.uses(&two, &one));
    }
}
