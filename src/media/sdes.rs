//! SDES key exchange for SRTP (RFC 4568): reading and writing `a=crypto:` attributes of
//! the one suite the relay speaks, `AES_CM_128_HMAC_SHA1_80`, and the decision whether a
//! leg of a call gets SRTP or plain RTP.
//!
//! Each leg of the B2BUA decides on its own: the relay decrypts what an SRTP party sends
//! and encrypts what goes to it, so an SRTP phone can talk to a plain-RTP carrier. Keys
//! travel in the SDP, so SRTP is only ever agreed on a leg whose signalling is TLS.
//! Everything here is pure: the caller supplies the random bytes of a fresh key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The crypto suite of RFC 4568 §6.2.1 the relay accepts and offers.
pub const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";
/// Master key length of the suite, in bytes.
pub const KEY_LEN: usize = 16;
/// Master salt length of the suite, in bytes.
pub const SALT_LEN: usize = 14;

/// A master key and salt (`key||salt` of the `inline:` parameter).
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; KEY_LEN + SALT_LEN]);

impl MasterKey {
    /// A key from `KEY_LEN + SALT_LEN` bytes; the caller draws them from a CSPRNG.
    pub fn from_bytes(bytes: [u8; KEY_LEN + SALT_LEN]) -> Self {
        Self(bytes)
    }

    pub fn key(&self) -> &[u8] {
        &self.0[..KEY_LEN]
    }

    pub fn salt(&self) -> &[u8] {
        &self.0[KEY_LEN..]
    }
}

impl std::fmt::Debug for MasterKey {
    // Keys must not reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// One `a=crypto:` attribute the relay can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    /// The tag the answer must repeat (RFC 4568 §5.1).
    pub tag: u32,
    pub key: MasterKey,
}

/// Why an `a=crypto:` attribute is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdesError {
    #[error("malformed crypto attribute: {0}")]
    Malformed(String),
    #[error("crypto suite {0} is not supported (only {SUITE})")]
    Suite(String),
    #[error("the key is not {} bytes of base64", KEY_LEN + SALT_LEN)]
    Key,
    #[error("more than one key per attribute is not supported")]
    SeveralKeys,
    #[error("MKI is not supported")]
    Mki,
    #[error("key lifetime {0} is shorter than 2^31 packets (re-keying is not supported)")]
    Lifetime(String),
    #[error("session parameter {0} is not supported")]
    SessionParameter(String),
}

/// The value of an `a=crypto:` attribute (after `crypto:`):
/// `<tag> <suite> inline:<key||salt>[|<lifetime>] [<session params>]`.
pub fn parse_crypto(value: &str) -> Result<Crypto, SdesError> {
    let mut parts = value.split_whitespace();
    let malformed = || SdesError::Malformed(value.to_owned());
    let tag = parts
        .next()
        .and_then(|t| t.parse::<u32>().ok())
        .filter(|t| *t <= 999_999_999)
        .ok_or_else(malformed)?;
    let suite = parts.next().ok_or_else(malformed)?;
    if suite != SUITE {
        return Err(SdesError::Suite(suite.to_owned()));
    }
    let key_params = parts.next().ok_or_else(malformed)?;
    if let Some(param) = parts.next() {
        return Err(SdesError::SessionParameter(param.to_owned()));
    }
    if key_params.contains(';') {
        return Err(SdesError::SeveralKeys);
    }
    let inline = key_params.strip_prefix("inline:").ok_or_else(malformed)?;
    let mut fields = inline.split('|');
    let encoded = fields.next().unwrap_or_default();
    let decoded = STANDARD.decode(encoded).map_err(|_| SdesError::Key)?;
    let bytes: [u8; KEY_LEN + SALT_LEN] = decoded.try_into().map_err(|_| SdesError::Key)?;
    for field in fields {
        if field.contains(':') {
            return Err(SdesError::Mki);
        }
        if !long_enough(field) {
            return Err(SdesError::Lifetime(field.to_owned()));
        }
    }
    Ok(Crypto {
        tag,
        key: MasterKey::from_bytes(bytes),
    })
}

/// Whether a lifetime (`2^n` or decimal) lasts at least 2^31 packets: beyond any call.
fn long_enough(lifetime: &str) -> bool {
    const LEAST: u64 = 1 << 31;
    match lifetime.strip_prefix("2^") {
        Some(power) => power.parse::<u32>().is_ok_and(|p| (31..=64).contains(&p)),
        None => lifetime.parse::<u64>().is_ok_and(|n| n >= LEAST),
    }
}

/// The attribute value for `crypto`, as sent: `<tag> AES_CM_128_HMAC_SHA1_80 inline:<key>`.
pub fn format_crypto(crypto: &Crypto) -> String {
    format!(
        "{} {SUITE} inline:{}",
        crypto.tag,
        STANDARD.encode(crypto.key.0)
    )
}

/// The transport profile of an `m=` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// `RTP/AVP` or `RTP/AVPF`, or anything else that is not SRTP.
    #[default]
    Plain,
    /// `RTP/SAVP` or `RTP/SAVPF` (RFC 3711, RFC 5124).
    Secure,
}

impl Profile {
    pub fn of(proto: &str) -> Profile {
        match proto {
            "RTP/SAVP" | "RTP/SAVPF" => Profile::Secure,
            _ => Profile::Plain,
        }
    }
}

/// What one party's SDP says about securing its audio.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AudioSecurity {
    pub profile: Profile,
    /// Its `a=crypto:` attributes, in preference order, each read or refused.
    pub crypto: Vec<Result<Crypto, SdesError>>,
}

/// How the relay carries one leg's audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegMedia {
    Plain,
    /// SRTP with the party's key `peer` (it encrypts with it); the relay answers with
    /// its own key under the same tag.
    Srtp(Crypto),
}

/// Why a leg's SDP cannot be accepted: the call gets 488 Not Acceptable Here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// An SAVP-only offer whose signalling is not TLS: its keys travelled in clear.
    #[error("SRTP is only accepted over TLS signalling (the keys would travel in clear)")]
    KeysInClear,
    /// An SAVP-only offer with no key the relay can use.
    #[error("no usable SRTP key: {0}")]
    NoUsableKey(String),
}

/// The decision for one leg, from its party's SDP and its signalling transport.
///
/// RFC 3264 §6 makes the answer keep the offer's transport protocol, so an SAVP offer
/// cannot be answered with plain RTP: one the relay cannot take (no TLS, or no usable
/// key) is refused as a whole (RFC 4568 §7.1.2), rather than answered in a way the
/// party would drop. An `RTP/AVP` offer is plain RTP even when it carries `a=crypto:`
/// (best-effort SRTP is not used; such lines are not passed on).
pub fn leg_media_security(
    security: &AudioSecurity,
    signalling_is_tls: bool,
) -> Result<LegMedia, Refusal> {
    if security.profile == Profile::Plain {
        return Ok(LegMedia::Plain);
    }
    if !signalling_is_tls {
        return Err(Refusal::KeysInClear);
    }
    let mut reasons = Vec::new();
    for crypto in &security.crypto {
        match crypto {
            Ok(crypto) => return Ok(LegMedia::Srtp(crypto.clone())),
            Err(err) => reasons.push(err.to_string()),
        }
    }
    if reasons.is_empty() {
        reasons.push("the offer has no a=crypto line".into());
    }
    Err(Refusal::NoUsableKey(reasons.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    fn srtp_offer(lines: &[&str]) -> AudioSecurity {
        AudioSecurity {
            profile: Profile::Secure,
            crypto: lines.iter().map(|l| parse_crypto(l)).collect(),
        }
    }

    #[test]
    fn crypto_attribute_round_trips() {
        let crypto = parse_crypto(&format!("1 {SUITE} inline:{KEY}")).unwrap();
        assert_eq!(crypto.tag, 1);
        assert_eq!(crypto.key.key().len(), 16);
        assert_eq!(crypto.key.salt().len(), 14);
        assert_eq!(format_crypto(&crypto), format!("1 {SUITE} inline:{KEY}"));
        assert_eq!(
            format!("{:?}", crypto.key),
            "MasterKey(..)",
            "no key in logs"
        );
    }

    #[test]
    fn long_lifetimes_are_accepted_short_ones_and_mki_refused() {
        for lifetime in ["2^31", "2^48", "4294967296"] {
            let line = format!("2 {SUITE} inline:{KEY}|{lifetime}");
            assert_eq!(parse_crypto(&line).unwrap().tag, 2, "{lifetime}");
        }
        for lifetime in ["2^20", "1000", "forever"] {
            let line = format!("2 {SUITE} inline:{KEY}|{lifetime}");
            assert!(
                matches!(parse_crypto(&line), Err(SdesError::Lifetime(_))),
                "{lifetime}"
            );
        }
        let mki = format!("1 {SUITE} inline:{KEY}|2^31|1:4");
        assert_eq!(parse_crypto(&mki), Err(SdesError::Mki));
        let mki = format!("1 {SUITE} inline:{KEY}|1:4");
        assert_eq!(parse_crypto(&mki), Err(SdesError::Mki));
    }

    #[test]
    fn unsupported_suites_keys_and_parameters_are_refused() {
        assert!(matches!(
            parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_32 inline:{KEY}")),
            Err(SdesError::Suite(_))
        ));
        assert_eq!(
            parse_crypto(&format!("1 {SUITE} inline:c2hvcnQ=")),
            Err(SdesError::Key)
        );
        assert_eq!(
            parse_crypto(&format!("1 {SUITE} inline:not*base64*at*all")),
            Err(SdesError::Key)
        );
        assert_eq!(
            parse_crypto(&format!("1 {SUITE} inline:{KEY};inline:{KEY}")),
            Err(SdesError::SeveralKeys)
        );
        assert_eq!(
            parse_crypto(&format!("1 {SUITE} inline:{KEY} UNENCRYPTED_SRTP")),
            Err(SdesError::SessionParameter("UNENCRYPTED_SRTP".into()))
        );
        for bad in [
            "",
            "x AES",
            "1",
            &format!("1 {SUITE}"),
            &format!("1 {SUITE} {KEY}"),
        ] {
            assert!(
                matches!(parse_crypto(bad), Err(SdesError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn srtp_offer_over_tls_takes_the_first_usable_key() {
        let offer = srtp_offer(&[
            &format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}"),
            &format!("2 {SUITE} inline:{KEY}"),
        ]);
        match leg_media_security(&offer, true) {
            Ok(LegMedia::Srtp(crypto)) => assert_eq!(crypto.tag, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn srtp_offer_without_tls_is_refused_as_keys_in_clear() {
        let offer = srtp_offer(&[&format!("1 {SUITE} inline:{KEY}")]);
        assert_eq!(leg_media_security(&offer, false), Err(Refusal::KeysInClear));
    }

    #[test]
    fn srtp_offer_without_usable_key_is_refused_with_the_reason() {
        let err = leg_media_security(&srtp_offer(&[]), true).unwrap_err();
        assert!(err.to_string().contains("no a=crypto"), "{err}");
        let offer = srtp_offer(&[&format!("1 F8_128_HMAC_SHA1_80 inline:{KEY}")]);
        let err = leg_media_security(&offer, true).unwrap_err();
        assert!(err.to_string().contains("F8_128_HMAC_SHA1_80"), "{err}");
    }

    #[test]
    fn plain_offers_stay_plain_on_any_transport() {
        let mut offer = srtp_offer(&[&format!("1 {SUITE} inline:{KEY}")]);
        offer.profile = Profile::Plain;
        assert_eq!(leg_media_security(&offer, true), Ok(LegMedia::Plain));
        assert_eq!(leg_media_security(&offer, false), Ok(LegMedia::Plain));
        assert_eq!(Profile::of("RTP/AVP"), Profile::Plain);
        assert_eq!(Profile::of("RTP/AVPF"), Profile::Plain);
        assert_eq!(Profile::of("RTP/SAVP"), Profile::Secure);
        assert_eq!(Profile::of("RTP/SAVPF"), Profile::Secure);
    }
}
