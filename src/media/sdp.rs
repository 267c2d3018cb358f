//! SDP as the relay needs it (RFC 4566, RFC 3264): where a party wants its audio, which
//! payload types it uses and at what clock rate, whether it holds the call; and the
//! rewrite that puts the gateway's address and ports in its place.
//!
//! Only what the relay changes is touched; codecs, `a=fmtp`, `telephone-event` (RFC 4733)
//! and every other line pass through, so codec negotiation stays between the parties.
//! ICE lines are dropped: the parties' candidates are useless behind the relay, and a
//! party that saw them would try to reach its peer around the gateway.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::sdes::{self, AudioSecurity, Crypto, Profile};

/// What one party's SDP says about its audio.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AudioOffer {
    /// Where it receives RTP; `None` when the port is 0 or the address is `0.0.0.0`
    /// (a hold in RFC 2543 style) or missing.
    pub rtp: Option<SocketAddr>,
    /// Where it receives RTCP (`a=rtcp`, RFC 3605; else the RTP port + 1).
    pub rtcp: Option<SocketAddr>,
    /// Clock rate by payload type, from `a=rtpmap` and the static table (RFC 3551).
    pub clock_rates: HashMap<u8, u32>,
    /// Payload types of the `m=audio` line, in preference order.
    pub payload_types: Vec<u8>,
    pub direction: MediaDirection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaDirection {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl AudioOffer {
    /// Whether the party takes part in a two-way conversation now (not holding).
    pub fn talking(&self) -> bool {
        self.direction == MediaDirection::SendRecv && self.rtp.is_some()
    }

    /// The clock of a payload type; 8 kHz when the SDP does not say (G.711, telephone-event).
    pub fn clock_rate(&self, payload_type: u8) -> u32 {
        self.clock_rates.get(&payload_type).copied().unwrap_or(8000)
    }
}

/// Lines of an SDP body; both CRLF and bare LF ends are read.
fn lines(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.lines().map(|l| l.trim_end_matches('\r'))
}

/// The address of a `c=` value (`IN IP4 192.0.2.1`, `IN IP6 ::1`; TTL suffixes ignored).
fn connection_address(value: &str) -> Option<IpAddr> {
    let mut parts = value.split_whitespace();
    if parts.next()? != "IN" {
        return None;
    }
    let _kind = parts.next()?;
    let addr = parts.next()?.split('/').next()?;
    addr.parse().ok()
}

/// Static payload types of RFC 3551 that a party may use without `a=rtpmap`.
fn static_clock_rate(payload_type: u8) -> Option<u32> {
    match payload_type {
        0 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 13 | 15 | 18 => Some(8000),
        6 => Some(16000),
        10 | 11 => Some(44100),
        14 | 25 | 26 | 28 | 31 | 32 | 33 | 34 => Some(90000),
        16 => Some(11025),
        17 => Some(22050),
        _ => None,
    }
}

/// Reads the first active `m=audio` section of a body; `None` if there is none.
pub fn audio(sdp: &[u8]) -> Option<AudioOffer> {
    let text = std::str::from_utf8(sdp).ok()?;
    let mut session_connection = None;
    let mut session_direction = MediaDirection::SendRecv;
    let mut offer: Option<AudioOffer> = None;
    let mut media_connection = None;
    let mut rtp_port = None;
    let mut rtcp: Option<(u16, Option<IpAddr>)> = None;
    let mut media_direction = None;
    let mut in_audio = false;
    let mut seen_media = false;
    for line in lines(text) {
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        if kind == "m" {
            if offer.is_some() {
                break;
            }
            seen_media = true;
            let mut parts = value.split_whitespace();
            let media = parts.next().unwrap_or_default();
            let port = parts
                .next()
                .and_then(|p| p.split('/').next())
                .and_then(|p| p.parse::<u16>().ok());
            let _proto = parts.next();
            in_audio = media == "audio" && port.is_some_and(|p| p != 0);
            if in_audio {
                let payload_types: Vec<u8> = parts.filter_map(|p| p.parse().ok()).collect();
                let clock_rates = payload_types
                    .iter()
                    .filter_map(|&pt| static_clock_rate(pt).map(|r| (pt, r)))
                    .collect();
                rtp_port = port;
                offer = Some(AudioOffer {
                    payload_types,
                    clock_rates,
                    ..AudioOffer::default()
                });
            }
            continue;
        }
        if seen_media && !in_audio {
            continue;
        }
        match (kind, value) {
            ("c", value) if !seen_media => session_connection = connection_address(value),
            ("c", value) => media_connection = connection_address(value),
            ("a", attribute) => {
                let (name, argument) = attribute.split_once(':').unwrap_or((attribute, ""));
                let direction = match name {
                    "sendrecv" => Some(MediaDirection::SendRecv),
                    "sendonly" => Some(MediaDirection::SendOnly),
                    "recvonly" => Some(MediaDirection::RecvOnly),
                    "inactive" => Some(MediaDirection::Inactive),
                    _ => None,
                };
                if let Some(direction) = direction {
                    if seen_media {
                        media_direction = Some(direction);
                    } else {
                        session_direction = direction;
                    }
                }
                if !seen_media {
                    continue;
                }
                if name == "rtpmap"
                    && let Some(offer) = offer.as_mut()
                {
                    let mut parts = argument.split_whitespace();
                    let pt = parts.next().and_then(|p| p.parse::<u8>().ok());
                    let rate = parts
                        .next()
                        .and_then(|enc| enc.split('/').nth(1))
                        .and_then(|r| r.parse::<u32>().ok());
                    if let (Some(pt), Some(rate)) = (pt, rate)
                        && rate > 0
                    {
                        offer.clock_rates.insert(pt, rate);
                    }
                }
                if name == "rtcp" {
                    let mut parts = argument.split_whitespace();
                    if let Some(port) = parts.next().and_then(|p| p.parse::<u16>().ok()) {
                        let rest: Vec<&str> = parts.collect();
                        rtcp = Some((port, connection_address(&rest.join(" "))));
                    }
                }
            }
            _ => {}
        }
    }
    let mut offer = offer?;
    offer.direction = media_direction.unwrap_or(session_direction);
    let address = media_connection.or(session_connection);
    let address = address.filter(|a| !a.is_unspecified());
    if let (Some(ip), Some(port)) = (address, rtp_port) {
        offer.rtp = Some(SocketAddr::new(ip, port));
        offer.rtcp = Some(match rtcp {
            Some((port, addr)) => SocketAddr::new(addr.unwrap_or(ip), port),
            None => SocketAddr::new(ip, port.saturating_add(1)),
        });
    }
    Some(offer)
}

/// The `o=` line the gateway puts on the SDP it sends one party (RFC 4566 §5.2): one
/// session id per party, and a version that goes up whenever the SDP changes (RFC 3264
/// §8), since the parties' own origins would change when a transfer swaps the far side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    session_id: u64,
    version: u64,
    last_sent: Option<Vec<u8>>,
}

impl Origin {
    pub fn new(session_id: u64) -> Self {
        Self {
            session_id,
            version: 1,
            last_sent: None,
        }
    }
}

/// Where the gateway receives one party's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayAddress {
    pub ip: IpAddr,
    pub rtp_port: u16,
}

fn address_field(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("IN IP4 {v4}"),
        IpAddr::V6(v6) => format!("IN IP6 {v6}"),
    }
}

/// ICE attributes (RFC 8839), dropped behind the relay.
fn is_ice(attribute: &str) -> bool {
    let name = attribute.split(':').next().unwrap_or_default();
    matches!(
        name,
        "candidate"
            | "remote-candidates"
            | "ice-ufrag"
            | "ice-pwd"
            | "ice-options"
            | "ice-lite"
            | "ice-mismatch"
            | "end-of-candidates"
    )
}

/// Rewrites one party's SDP for the other party: every connection address becomes the
/// gateway's, the first active `m=audio` port becomes `to.rtp_port` (RTCP on the next
/// port), other media streams are declined (port 0: only audio is relayed), and the
/// origin is the gateway's. A body that is not SDP text comes back unchanged.
pub fn rewrite(sdp: &[u8], to: RelayAddress, origin: &mut Origin) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(sdp) else {
        return sdp.to_vec();
    };
    if !text.trim_start().starts_with("v=") {
        return sdp.to_vec();
    }
    let connection = address_field(to.ip);
    let mut out = String::with_capacity(text.len() + 64);
    let mut audio_done = false;
    let mut in_relayed_audio = false;
    for line in lines(text) {
        if line.is_empty() {
            continue;
        }
        let Some((kind, value)) = line.split_once('=') else {
            out.push_str(line);
            out.push_str("\r\n");
            continue;
        };
        match kind {
            "o" => {
                // Filled in below once the version is known.
                out.push_str("o=\u{0}\r\n");
            }
            "c" => {
                out.push_str("c=");
                out.push_str(&connection);
                out.push_str("\r\n");
            }
            "m" => {
                let mut parts = value.splitn(3, ' ');
                let media = parts.next().unwrap_or_default();
                let port = parts.next().unwrap_or_default();
                let rest = parts.next().unwrap_or_default();
                let active = port.split('/').next().is_some_and(|p| p != "0");
                in_relayed_audio = media == "audio" && active && !audio_done;
                let new_port = if in_relayed_audio {
                    audio_done = true;
                    to.rtp_port
                } else {
                    0
                };
                out.push_str(&format!("m={media} {new_port} {rest}\r\n"));
            }
            "a" if is_ice(value) => {}
            "a" if value.starts_with("rtcp:") => {
                if in_relayed_audio {
                    out.push_str(&format!(
                        "a=rtcp:{} {}\r\n",
                        to.rtp_port.saturating_add(1),
                        connection
                    ));
                }
            }
            _ => {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
    }
    let body_without_origin = out.clone().into_bytes();
    if origin.last_sent.as_deref() != Some(body_without_origin.as_slice()) {
        if origin.last_sent.is_some() {
            origin.version += 1;
        }
        origin.last_sent = Some(body_without_origin);
    }
    let origin_line = format!(
        "leadline {} {} {}",
        origin.session_id, origin.version, connection
    );
    out.replacen('\u{0}', &origin_line, 1).into_bytes()
}

/// Payload types the first active `m=audio` section maps to `telephone-event` (RFC 4733
/// DTMF), in the order of its `a=rtpmap` lines.
pub fn telephone_events(sdp: &[u8]) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(sdp) else {
        return Vec::new();
    };
    let mut events = Vec::new();
    let mut section = Section::Session;
    for line in lines(text) {
        section = section.after(line);
        if section != Section::RelayedAudio {
            continue;
        }
        if let Some((pt, name)) = rtpmap(line)
            && name.eq_ignore_ascii_case("telephone-event")
        {
            events.push(pt);
        }
    }
    events
}

/// `offer` with only `payload_type` (and telephone-event) left in its audio line: what
/// an agent is offered once the caller was answered with that codec.
///
/// Only the first active `m=audio` section changes: its other payload types go, with
/// their `a=rtpmap` and `a=fmtp` lines. A body that is not SDP text comes back unchanged.
pub fn only_codec(offer: &[u8], payload_type: u8) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(offer) else {
        return offer.to_vec();
    };
    if !text.trim_start().starts_with("v=") {
        return offer.to_vec();
    }
    let mut keep = telephone_events(offer);
    keep.push(payload_type);
    let mut out = String::with_capacity(text.len());
    let mut section = Section::Session;
    for line in lines(text) {
        if line.is_empty() {
            continue;
        }
        section = section.after(line);
        if section == Section::RelayedAudio {
            if let Some(value) = line.strip_prefix("m=") {
                // `m=audio <port> <proto> <fmt>...`: the first three fields stay.
                let fields: Vec<&str> = value.split_whitespace().collect();
                out.push_str("m=");
                out.push_str(&fields[..fields.len().min(3)].join(" "));
                for pt in fields.iter().skip(3) {
                    if pt.parse::<u8>().is_ok_and(|pt| keep.contains(&pt)) {
                        out.push(' ');
                        out.push_str(pt);
                    }
                }
                out.push_str("\r\n");
                continue;
            }
            if let Some(pt) = format_attribute(line)
                && !keep.contains(&pt)
            {
                continue;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// Where a line of SDP is, for the edits that touch only the relayed audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Session,
    /// The first active `m=audio` section.
    RelayedAudio,
    /// Any later media section.
    Other {
        audio_seen: bool,
    },
}

impl Section {
    /// The section `line` belongs to, given the one of the line before it.
    fn after(self, line: &str) -> Section {
        let Some(value) = line.strip_prefix("m=") else {
            return self;
        };
        let audio_seen = match self {
            Section::Session => false,
            Section::RelayedAudio => true,
            Section::Other { audio_seen } => audio_seen,
        };
        let mut parts = value.split_whitespace();
        let media = parts.next().unwrap_or_default();
        let active = parts
            .next()
            .and_then(|p| p.split('/').next())
            .is_some_and(|p| p != "0");
        if media == "audio" && active && !audio_seen {
            Section::RelayedAudio
        } else {
            Section::Other { audio_seen }
        }
    }
}

/// The transport profile and `a=crypto:` attributes (RFC 4568) of the first active
/// `m=audio` section: what the SRTP decision of a leg reads.
pub fn security(sdp: &[u8]) -> AudioSecurity {
    let Ok(text) = std::str::from_utf8(sdp) else {
        return AudioSecurity::default();
    };
    let mut security = AudioSecurity::default();
    let mut section = Section::Session;
    for line in lines(text) {
        section = section.after(line);
        if section != Section::RelayedAudio {
            continue;
        }
        if let Some(value) = line.strip_prefix("m=") {
            let proto = value.split_whitespace().nth(2).unwrap_or_default();
            security.profile = Profile::of(proto);
        } else if let Some(value) = line.strip_prefix("a=crypto:") {
            security.crypto.push(sdes::parse_crypto(value));
        }
    }
    security
}

/// `sdp` as one leg must see it: with `crypto`, the relayed audio section is `RTP/SAVP`
/// (`RTP/SAVPF` for a feedback profile) carrying only that `a=crypto:` line; without, it
/// is `RTP/AVP` (`RTP/AVPF`) with no `a=crypto:` line, since each leg has its own keys.
/// Other sections and a body that is not SDP text come back unchanged.
pub fn secure(sdp: &[u8], crypto: Option<&Crypto>) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(sdp) else {
        return sdp.to_vec();
    };
    if !text.trim_start().starts_with("v=") {
        return sdp.to_vec();
    }
    let mut out = String::with_capacity(text.len() + 80);
    let mut section = Section::Session;
    for line in lines(text) {
        if line.is_empty() {
            continue;
        }
        section = section.after(line);
        if section == Section::RelayedAudio {
            if let Some(value) = line.strip_prefix("m=") {
                let mut fields: Vec<&str> = value.split_whitespace().collect();
                if let Some(proto) = fields.get_mut(2) {
                    *proto = match (*proto, crypto.is_some()) {
                        ("RTP/AVP" | "RTP/SAVP", true) => "RTP/SAVP",
                        ("RTP/AVPF" | "RTP/SAVPF", true) => "RTP/SAVPF",
                        ("RTP/AVP" | "RTP/SAVP", false) => "RTP/AVP",
                        ("RTP/AVPF" | "RTP/SAVPF", false) => "RTP/AVPF",
                        (other, _) => other,
                    };
                }
                out.push_str("m=");
                out.push_str(&fields.join(" "));
                out.push_str("\r\n");
                if let Some(crypto) = crypto {
                    out.push_str("a=crypto:");
                    out.push_str(&sdes::format_crypto(crypto));
                    out.push_str("\r\n");
                }
                continue;
            }
            if line.starts_with("a=crypto:") {
                continue;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// The payload type and encoding name of an `a=rtpmap` line.
fn rtpmap(line: &str) -> Option<(u8, &str)> {
    let value = line.strip_prefix("a=rtpmap:")?;
    let (pt, encoding) = value.split_once(char::is_whitespace)?;
    let name = encoding.trim().split('/').next()?;
    Some((pt.parse().ok()?, name))
}

/// The payload type an `a=rtpmap` or `a=fmtp` line is about.
fn format_attribute(line: &str) -> Option<u8> {
    let value = line
        .strip_prefix("a=rtpmap:")
        .or_else(|| line.strip_prefix("a=fmtp:"))?;
    value.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OFFER: &str = "v=0\r\n\
        o=carrier 2890844526 2890844526 IN IP4 203.0.113.5\r\n\
        s=-\r\n\
        c=IN IP4 203.0.113.5\r\n\
        t=0 0\r\n\
        m=audio 49170 RTP/AVP 8 0 101\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\n\
        a=candidate:1 1 UDP 2130706431 10.0.0.5 49170 typ host\r\n\
        a=ice-ufrag:abcd\r\n\
        a=rtcp:49300 IN IP4 203.0.113.6\r\n\
        a=ptime:20\r\n\
        m=video 51372 RTP/AVP 99\r\n\
        a=rtpmap:99 h263-1998/90000\r\n";

    fn relay() -> RelayAddress {
        RelayAddress {
            ip: "192.0.2.10".parse().unwrap(),
            rtp_port: 20002,
        }
    }

    const SRTP_OFFER: &str = "v=0\r\n\
        o=phone 1 1 IN IP4 198.51.100.7\r\n\
        s=-\r\n\
        c=IN IP4 198.51.100.7\r\n\
        t=0 0\r\n\
        m=audio 4000 RTP/SAVP 0 101\r\n\
        a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj\r\n\
        a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        m=video 4002 RTP/SAVP 99\r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";

    #[test]
    fn security_reads_the_audio_profile_and_its_crypto_lines_only() {
        let srtp = security(SRTP_OFFER.as_bytes());
        assert_eq!(srtp.profile, Profile::Secure);
        assert_eq!(srtp.crypto.len(), 2, "the video's key is not the audio's");
        assert!(srtp.crypto[0].is_err(), "AES-256 is not supported");
        assert_eq!(srtp.crypto[1].as_ref().unwrap().tag, 2);
        assert_eq!(security(OFFER.as_bytes()).profile, Profile::Plain);
        assert!(security(OFFER.as_bytes()).crypto.is_empty());
        assert_eq!(security(b"\xff\xfe"), AudioSecurity::default());
    }

    #[test]
    fn secure_puts_one_key_on_an_srtp_leg_and_none_on_a_plain_one() {
        let ours = Crypto {
            tag: 2,
            key: sdes::MasterKey::from_bytes([7; 30]),
        };
        let srtp = String::from_utf8(secure(OFFER.as_bytes(), Some(&ours))).unwrap();
        assert!(srtp.contains("m=audio 49170 RTP/SAVP 8 0 101\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH\r\n"), "{srtp}");
        assert!(
            srtp.contains("m=video 51372 RTP/AVP 99\r\n"),
            "only audio changes"
        );
        let again = security(srtp.as_bytes());
        assert_eq!(again.crypto, vec![Ok(ours.clone())]);

        let plain = String::from_utf8(secure(SRTP_OFFER.as_bytes(), None)).unwrap();
        assert!(plain.contains("m=audio 4000 RTP/AVP 0 101\r\n"), "{plain}");
        assert_eq!(
            plain.matches("a=crypto:").count(),
            1,
            "the video's stays: {plain}"
        );
        assert!(plain.contains("m=video 4002 RTP/SAVP 99\r\na=crypto:1 "));
        let feedback = OFFER.replace("RTP/AVP 8", "RTP/SAVPF 8");
        let plain = String::from_utf8(secure(feedback.as_bytes(), None)).unwrap();
        assert!(plain.contains("m=audio 49170 RTP/AVPF 8 0 101\r\n"));
        let rekeyed = String::from_utf8(secure(srtp.as_bytes(), Some(&ours))).unwrap();
        assert_eq!(rekeyed.matches("a=crypto:").count(), 1, "{rekeyed}");
        assert_eq!(secure(b"not sdp", None), b"not sdp");
    }

    #[test]
    fn reads_where_a_party_wants_its_audio() {
        let audio = audio(OFFER.as_bytes()).unwrap();
        assert_eq!(audio.rtp, Some("203.0.113.5:49170".parse().unwrap()));
        assert_eq!(audio.rtcp, Some("203.0.113.6:49300".parse().unwrap()));
        assert_eq!(audio.payload_types, vec![8, 0, 101]);
        assert_eq!(audio.clock_rate(101), 8000);
        assert_eq!(audio.direction, MediaDirection::SendRecv);
        assert!(audio.talking());
    }

    #[test]
    fn rtcp_defaults_to_the_next_port_and_media_level_connection_wins() {
        let sdp = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n\
                   m=audio 4000 RTP/AVP 0\nc=IN IP4 10.0.0.2\na=rtpmap:0 PCMU/8000\n";
        let audio = audio(sdp.as_bytes()).unwrap();
        assert_eq!(audio.rtp, Some("10.0.0.2:4000".parse().unwrap()));
        assert_eq!(audio.rtcp, Some("10.0.0.2:4001".parse().unwrap()));
    }

    #[test]
    fn holds_are_recognised() {
        let old_style = OFFER.replace("c=IN IP4 203.0.113.5", "c=IN IP4 0.0.0.0");
        let held = audio(old_style.as_bytes()).unwrap();
        assert_eq!(held.rtp, None);
        assert!(!held.talking());
        let inactive = OFFER.replace("a=ptime:20", "a=inactive");
        assert_eq!(
            audio(inactive.as_bytes()).unwrap().direction,
            MediaDirection::Inactive
        );
        let session_level = OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
        assert_eq!(
            audio(session_level.as_bytes()).unwrap().direction,
            MediaDirection::SendOnly
        );
    }

    #[test]
    fn a_body_without_audio_has_none() {
        assert_eq!(audio(b"v=0\r\nm=video 5000 RTP/AVP 99\r\n"), None);
        assert_eq!(audio(b"v=0\r\nm=audio 0 RTP/AVP 0\r\n"), None);
        assert_eq!(audio(&[0xff, 0xfe]), None);
    }

    #[test]
    fn rewrite_puts_the_gateway_in_the_media_path() {
        let mut origin = Origin::new(77);
        let out = rewrite(OFFER.as_bytes(), relay(), &mut origin);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.contains("o=leadline 77 1 IN IP4 192.0.2.10\r\n"),
            "{text}"
        );
        assert!(text.contains("c=IN IP4 192.0.2.10\r\n"));
        assert!(text.contains("m=audio 20002 RTP/AVP 8 0 101\r\n"));
        assert!(text.contains("a=rtcp:20003 IN IP4 192.0.2.10\r\n"));
        assert!(text.contains("a=fmtp:101 0-15\r\n"), "DTMF passes through");
        assert!(text.contains("m=video 0 RTP/AVP 99\r\n"), "video declined");
        assert!(!text.contains("candidate") && !text.contains("ice-ufrag"));
        assert!(!text.contains("203.0.113"));
        let seen = audio(&out).unwrap();
        assert_eq!(seen.rtp, Some("192.0.2.10:20002".parse().unwrap()));
        assert_eq!(seen.rtcp, Some("192.0.2.10:20003".parse().unwrap()));
    }

    #[test]
    fn the_origin_version_goes_up_only_when_the_sdp_changes() {
        let mut origin = Origin::new(5);
        let first = String::from_utf8(rewrite(OFFER.as_bytes(), relay(), &mut origin)).unwrap();
        let same = String::from_utf8(rewrite(OFFER.as_bytes(), relay(), &mut origin)).unwrap();
        assert_eq!(first, same);
        let held = OFFER.replace("a=ptime:20", "a=sendonly");
        let changed = String::from_utf8(rewrite(held.as_bytes(), relay(), &mut origin)).unwrap();
        assert!(changed.contains("o=leadline 5 2 "), "{changed}");
    }

    #[test]
    fn ipv6_relay_addresses_are_written_as_ip6() {
        let mut origin = Origin::new(1);
        let to = RelayAddress {
            ip: "2001:db8::1".parse().unwrap(),
            rtp_port: 30000,
        };
        let text = String::from_utf8(rewrite(OFFER.as_bytes(), to, &mut origin)).unwrap();
        assert!(text.contains("c=IN IP6 2001:db8::1\r\n"));
        assert_eq!(
            audio(text.as_bytes()).unwrap().rtp,
            Some("[2001:db8::1]:30000".parse().unwrap())
        );
    }

    #[test]
    fn bodies_that_are_not_sdp_pass_unchanged() {
        let mut origin = Origin::new(1);
        assert_eq!(rewrite(b"hello", relay(), &mut origin), b"hello");
        assert_eq!(
            rewrite(&[0xc3, 0x28], relay(), &mut origin),
            vec![0xc3, 0x28]
        );
    }

    #[test]
    fn only_codec_leaves_the_chosen_codec_and_dtmf() {
        let out = only_codec(OFFER.as_bytes(), 0);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("m=audio 49170 RTP/AVP 0 101\r\n"), "{text}");
        assert!(!text.contains("a=rtpmap:8 "), "{text}");
        assert!(text.contains("a=rtpmap:0 PCMU/8000\r\n"));
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(text.contains("a=fmtp:101 0-15\r\n"));
        assert!(
            text.contains("m=video 51372 RTP/AVP 99\r\na=rtpmap:99 h263-1998/90000\r\n"),
            "other streams are untouched: {text}"
        );
        assert_eq!(audio(&out).unwrap().payload_types, vec![0, 101]);
        assert_eq!(
            audio(&out).unwrap().rtp,
            audio(OFFER.as_bytes()).unwrap().rtp
        );
    }

    #[test]
    fn only_codec_without_dtmf_and_on_what_is_not_sdp() {
        let plain = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 0\r\n\
                     m=audio 4000 RTP/AVP 0 8 18\r\na=rtpmap:18 G729/8000\r\n\
                     a=fmtp:18 annexb=no\r\n";
        let text = String::from_utf8(only_codec(plain.as_bytes(), 8)).unwrap();
        assert!(text.contains("m=audio 0 RTP/AVP 0\r\n"), "{text}");
        assert!(text.contains("m=audio 4000 RTP/AVP 8\r\n"), "{text}");
        assert!(!text.contains("G729") && !text.contains("annexb"), "{text}");
        assert_eq!(only_codec(b"hello", 0), b"hello");
        assert_eq!(only_codec(&[0xc3, 0x28], 0), vec![0xc3, 0x28]);
    }

    #[test]
    fn telephone_events_are_read_from_the_audio_section() {
        assert_eq!(telephone_events(OFFER.as_bytes()), vec![101]);
        assert!(telephone_events(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n").is_empty());
    }

    proptest! {
        /// Whatever a party sends, the rewrite never panics and never leaves one of the
        /// party's own addresses in what the other party sees.
        #[test]
        fn rewrite_hides_the_party_for_any_input(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("c=IN IP4 198.51.100.7".to_owned()),
                    Just("m=audio 4000 RTP/AVP 0".to_owned()),
                    Just("m=video 4002 RTP/AVP 99".to_owned()),
                    Just("a=rtcp:4001 IN IP4 198.51.100.7".to_owned()),
                    Just("a=candidate:1 1 UDP 1 198.51.100.7 4000 typ host".to_owned()),
                    Just("o=x 1 1 IN IP4 198.51.100.7".to_owned()),
                    "[a-z]=[ -~]{0,30}",
                ],
                0..20,
            ),
        ) {
            let body = format!("v=0\r\n{}\r\n", lines.join("\r\n"));
            let mut origin = Origin::new(9);
            let out = rewrite(body.as_bytes(), relay(), &mut origin);
            let text = String::from_utf8(out).unwrap();
            let leaks = text.lines().any(|l| {
                (l.starts_with("c=") || l.starts_with("o=") || l.starts_with("a=rtcp")
                    || l.starts_with("a=candidate"))
                    && l.contains("198.51.100.7")
            });
            prop_assert!(!leaks, "{}", text);
            if let Some(audio) = audio(text.as_bytes()) && let Some(rtp) = audio.rtp {
                prop_assert_eq!(rtp.port(), 20002);
            }
        }
    }
}
