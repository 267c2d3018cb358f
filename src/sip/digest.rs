//! Digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760), both sides: the
//! registrar challenges and verifies, the trunk answers a carrier's challenge.
//!
//! Owns the digest arithmetic, stateless nonces and the parsing of `Authorization` /
//! `WWW-Authenticate` values (and their `Proxy-` twins, which share the syntax). It looks
//! up no user, keeps no state and does no I/O: time comes in as `now_ms`, HA1 comes in from
//! the store. We keep HA1 per algorithm ([`Ha1Pair`]), never the password.
//!
//! rsip's typed `Authorization`/`WwwAuthenticate` (in `rsipstack::sip::typed`) are not used
//! here because (checked against 0.7.14) they refuse the RFC 8760 spelling `SHA-256` (they
//! know only `SHA256`), lose every parameter after an escaped quote (`\"`), parse `nc` as a
//! `u8` (refused from the 256th request on, and printed back in decimal), refuse a
//! `qop="auth,auth-int"` offer, and keep the digest `uri` as a re-printed `Uri` where the
//! digest must hash the text as sent.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use md5::{Digest as _, Md5};
use rand::RngCore as _;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// How long an issued nonce stays fresh by default. Kamailio's default is the same; a
/// client whose nonce is older gets `stale=true` and retries without asking the user.
pub const NONCE_MAX_AGE_MS: i64 = 300_000;

/// What is wrong with a digest header, in words an administrator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("authentication scheme is '{0}', expected Digest")]
    NotDigest(String),
    #[error("malformed digest header: {0}")]
    Syntax(&'static str),
    #[error("digest parameter '{0}' is missing")]
    MissingParam(&'static str),
    #[error("digest parameter '{0}' appears more than once")]
    DuplicateParam(String),
    #[error("digest algorithm '{0}' is not supported; use MD5 or SHA-256")]
    UnsupportedAlgorithm(String),
    #[error(
        "digest algorithm '{0}' (a -sess variant) is not supported; SIP has no use for it, \
         use MD5 or SHA-256"
    )]
    SessionAlgorithm(String),
    #[error("qop '{0}' is not supported; only qop=auth is")]
    UnsupportedQop(String),
    #[error("digest nc '{0}' is not 8 hexadecimal digits")]
    BadNonceCount(String),
    #[error("digest response must be {expected} hexadecimal digits for {algorithm}")]
    BadResponse {
        algorithm: Algorithm,
        expected: usize,
    },
    #[error("digest userhash is not supported (it was never offered)")]
    UserhashUnsupported,
}

/// The digest algorithms of RFC 8760. The `-sess` variants are refused on purpose: they
/// need the client's cnonce in HA1, so a stored HA1 would be useless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The spelling in headers (RFC 7616 section 6.1 registry).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Length of a hex digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 => 64,
        }
    }

    /// Lower-case hex of H(data).
    pub fn hash_hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(data)),
            Algorithm::Sha256 => hex::encode(Sha256::digest(data)),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;

    /// Case-insensitive. `SHA256` (no hyphen) is accepted too because rsip-based clients
    /// send it; we always answer with `SHA-256`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("MD5") {
            Ok(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") || s.eq_ignore_ascii_case("SHA256") {
            Ok(Algorithm::Sha256)
        } else if s.len() > 5 && s.as_bytes()[s.len() - 5..].eq_ignore_ascii_case(b"-sess") {
            Err(DigestError::SessionAlgorithm(s.to_owned()))
        } else {
            Err(DigestError::UnsupportedAlgorithm(s.to_owned()))
        }
    }
}

/// HA1 = H(username ":" realm ":" password) for both algorithms of RFC 8760.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ha1Pair {
    pub realm: String,
    pub md5: String,
    pub sha256: String,
}

impl Ha1Pair {
    pub fn compute(username: &str, realm: &str, password: &str) -> Self {
        let input = format!("{username}:{realm}:{password}");
        Self {
            realm: realm.to_owned(),
            md5: Algorithm::Md5.hash_hex(input.as_bytes()),
            sha256: Algorithm::Sha256.hash_hex(input.as_bytes()),
        }
    }

    /// The HA1 to verify a response made with `algorithm`.
    pub fn for_algorithm(&self, algorithm: Algorithm) -> &str {
        match algorithm {
            Algorithm::Md5 => &self.md5,
            Algorithm::Sha256 => &self.sha256,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Stateless nonces
// ---------------------------------------------------------------------------------------

/// The server secret that signs nonces. Nodes sharing a database share it (stored there
/// once, see [`NonceKey::to_hex`]), so any node accepts any node's nonces.
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

impl NonceKey {
    /// 32 bytes from the thread-local CSPRNG (ChaCha, seeded by the OS).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key as 64 hex digits, the form it is stored in.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A key stored by [`NonceKey::to_hex`]; `None` if `text` is not 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(<redacted>)")
    }
}

/// Bytes of the MAC kept in a nonce: 128 bits is far beyond what online guessing reaches.
const NONCE_MAC_LEN: usize = 16;
const NONCE_RAW_LEN: usize = 8 + NONCE_MAC_LEN;
/// base64url without padding of 24 bytes.
const NONCE_TEXT_LEN: usize = 32;
/// Domain separation: this key signs nothing else, but a label costs nothing.
const NONCE_LABEL: &[u8] = b"leadline digest nonce v1\0";

fn nonce_mac(key: &NonceKey, realm: &str, issued_ms: i64) -> [u8; 32] {
    // The time has a fixed width, so `time || realm` is unambiguous.
    hmac_sha256(
        &key.0,
        &[NONCE_LABEL, &issued_ms.to_be_bytes(), realm.as_bytes()],
    )
}

/// Stateless nonce: base64url(issued-at ms as 8 bytes big-endian || first 16 bytes of
/// HMAC-SHA256(key, label || time || realm)). The server keeps nothing per nonce; a nonce made
/// under another key checks as [`NonceState::Forged`] and its client is re-challenged.
pub fn issue_nonce(key: &NonceKey, realm: &str, now_ms: i64) -> String {
    let mut raw = [0u8; NONCE_RAW_LEN];
    raw[..8].copy_from_slice(&now_ms.to_be_bytes());
    raw[8..].copy_from_slice(&nonce_mac(key, realm, now_ms)[..NONCE_MAC_LEN]);
    URL_SAFE_NO_PAD.encode(raw)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    /// Ours, for this realm, and younger than `max_age_ms`.
    Fresh,
    /// Ours but older than `max_age_ms`: answer 401 with `stale=true`.
    Stale,
    /// Not issued under this key for this realm: another realm, another key, or made up.
    Forged,
}

/// Checks a nonce's MAC (in constant time) and then its age. A nonce from the future
/// (the wall clock stepped back) is fresh while it is within `max_age_ms` of now.
pub fn check_nonce(
    key: &NonceKey,
    realm: &str,
    nonce: &str,
    now_ms: i64,
    max_age_ms: i64,
) -> NonceState {
    if nonce.len() != NONCE_TEXT_LEN {
        return NonceState::Forged;
    }
    let mut raw = [0u8; NONCE_RAW_LEN];
    match URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) {
        Ok(NONCE_RAW_LEN) => {}
        _ => return NonceState::Forged,
    }
    let mut time = [0u8; 8];
    time.copy_from_slice(&raw[..8]);
    let issued_ms = i64::from_be_bytes(time);
    let expected = nonce_mac(key, realm, issued_ms);
    if !bool::from(expected[..NONCE_MAC_LEN].ct_eq(&raw[8..])) {
        return NonceState::Forged;
    }
    let age = i128::from(now_ms) - i128::from(issued_ms);
    if age.abs() <= i128::from(max_age_ms) {
        NonceState::Fresh
    } else {
        NonceState::Stale
    }
}

/// HMAC-SHA256 (RFC 2104) over the concatenation of `parts`. Written here because the
/// `hmac` crate in our lock file (0.13) pairs with `sha2` 0.11, not the 0.10 we use;
/// checked against the RFC 4231 vectors below.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block_key.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block_key.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

// ---------------------------------------------------------------------------------------
// Challenges
// ---------------------------------------------------------------------------------------

/// One `WWW-Authenticate` / `Proxy-Authenticate` value.
pub fn challenge(realm: &str, nonce: &str, algorithm: Algorithm, stale: bool) -> String {
    let mut value = format!(
        "Digest realm={}, nonce={}, algorithm={}, qop=\"auth\"",
        quoted(realm),
        quoted(nonce),
        algorithm
    );
    if stale {
        value.push_str(", stale=true");
    }
    value
}

/// The challenge values to send, one header each: SHA-256 first, then MD5 (RFC 8760
/// section 2.4: in order of preference; a client takes the first algorithm it supports).
pub fn challenges(realm: &str, nonce: &str, stale: bool) -> Vec<String> {
    [Algorithm::Sha256, Algorithm::Md5]
        .into_iter()
        .map(|algorithm| challenge(realm, nonce, algorithm, stale))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Which algorithms a registrant is offered, in which order
// ---------------------------------------------------------------------------------------

/// Why a written digest order is refused (a user's `sip_digest`, a profile's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("name at least one of \"sha256\", \"md5\"")]
    Empty,
    #[error("'{0}' is not a digest algorithm: use \"sha256\", \"md5\" or both in order")]
    Unknown(String),
    #[error("\"{0}\" is listed twice")]
    Twice(&'static str),
}

impl Algorithm {
    /// The spelling in settings: `sha256`, `md5`.
    pub fn setting_name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha256 => "sha256",
        }
    }
}

/// Reads an order written as names (`["sha256", "md5"]`, case-insensitive, `sha-256`
/// too): most preferred first, each at most once, at least one.
pub fn parse_order<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Algorithm>, OrderError> {
    let mut order = Vec::new();
    for name in names {
        let algorithm = match name.trim().to_ascii_lowercase().as_str() {
            "sha256" | "sha-256" => Algorithm::Sha256,
            "md5" => Algorithm::Md5,
            _ => return Err(OrderError::Unknown(name.to_owned())),
        };
        if order.contains(&algorithm) {
            return Err(OrderError::Twice(algorithm.setting_name()));
        }
        order.push(algorithm);
    }
    if order.is_empty() {
        return Err(OrderError::Empty);
    }
    Ok(order)
}

/// The stored form of an order: `sha256,md5`.
pub fn order_text(order: &[Algorithm]) -> String {
    order
        .iter()
        .map(|a| a.setting_name())
        .collect::<Vec<_>>()
        .join(",")
}

/// The challenges a registrant gets: its own order (a user's `sip_digest`, a PBX trunk's
/// profile) when it has one, else the gateway's. An unknown registrant has none, so it
/// gets exactly what a known one without a choice gets (no enumeration).
pub fn offer_order<'a>(own: Option<&'a [Algorithm]>, gateway: &'a [Algorithm]) -> &'a [Algorithm] {
    match own {
        Some(own) if !own.is_empty() => own,
        _ => gateway,
    }
}

/// A parsed challenge, as a carrier sends it to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: Algorithm,
    /// `true` when the challenge offers `qop=auth` (possibly among others); `false` for an
    /// RFC 2069 style challenge without qop.
    pub qop_auth: bool,
    pub opaque: Option<String>,
    pub stale: bool,
}

pub fn parse_challenge(header_value: &str) -> Result<Challenge, DigestError> {
    let params = parse_digest_params(header_value)?;
    let algorithm = match params.get("algorithm") {
        Some(a) => a.parse()?,
        None => Algorithm::Md5, // RFC 2617 section 3.2.1: absent means MD5.
    };
    let qop_auth = match params.get("qop") {
        None => false,
        Some(offer) => {
            if offer
                .split(',')
                .any(|q| q.trim().eq_ignore_ascii_case("auth"))
            {
                true
            } else {
                return Err(DigestError::UnsupportedQop(offer.to_owned()));
            }
        }
    };
    Ok(Challenge {
        realm: params.require("realm")?.to_owned(),
        nonce: params.require("nonce")?.to_owned(),
        algorithm,
        qop_auth,
        opaque: params.get("opaque").map(str::to_owned),
        stale: params
            .get("stale")
            .is_some_and(|s| s.eq_ignore_ascii_case("true")),
    })
}

/// Of several challenges (one per header), the one to answer: the strongest algorithm we
/// support, first of its kind on a tie; `None` when none is usable.
pub fn choose_challenge<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(Algorithm, &'a str)> = None;
    for value in values {
        let Ok(challenge) = parse_challenge(value) else {
            continue;
        };
        match (best, challenge.algorithm) {
            (None, algorithm) | (Some((Algorithm::Md5, _)), algorithm @ Algorithm::Sha256) => {
                best = Some((algorithm, value));
            }
            _ => {}
        }
    }
    best.map(|(_, value)| value)
}

// ---------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------

/// A parsed `Authorization` / `Proxy-Authorization` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    /// Lower-case hex, of the length the algorithm gives.
    pub response: String,
    pub algorithm: Algorithm,
    /// `auth` (in any case, as sent) or `None`; nothing else parses.
    pub qop: Option<String>,
    /// 8 hex digits when `qop` is present. Kept as sent without qop (some clients send it
    /// anyway; it is then not part of the digest).
    pub nc: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
}

/// Parses an `Authorization` / `Proxy-Authorization` value: quoted strings with escapes,
/// parameters in any order, unknown parameters ignored, duplicates refused (two parsers
/// must never read different credentials from one header).
pub fn parse_credentials(header_value: &str) -> Result<Credentials, DigestError> {
    let params = parse_digest_params(header_value)?;
    if params
        .get("userhash")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Err(DigestError::UserhashUnsupported);
    }
    let algorithm = match params.get("algorithm") {
        Some(a) => a.parse()?,
        None => Algorithm::Md5,
    };
    let qop = match params.get("qop") {
        None => None,
        // Kept as sent: the client hashed this very text.
        Some(q) if q.eq_ignore_ascii_case("auth") => Some(q.to_owned()),
        Some(q) => return Err(DigestError::UnsupportedQop(q.to_owned())),
    };
    let nc = params.get("nc").map(str::to_owned);
    let cnonce = params.get("cnonce").map(str::to_owned);
    if qop.is_some() {
        // RFC 7616 section 3.4: with qop, nc and cnonce are mandatory.
        let nc = nc.as_deref().ok_or(DigestError::MissingParam("nc"))?;
        if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DigestError::BadNonceCount(nc.to_owned()));
        }
        if cnonce.is_none() {
            return Err(DigestError::MissingParam("cnonce"));
        }
    }
    let response = params.require("response")?;
    if response.len() != algorithm.hex_len() || !response.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DigestError::BadResponse {
            algorithm,
            expected: algorithm.hex_len(),
        });
    }
    Ok(Credentials {
        username: params.require("username")?.to_owned(),
        realm: params.require("realm")?.to_owned(),
        nonce: params.require("nonce")?.to_owned(),
        uri: params.require("uri")?.to_owned(),
        response: response.to_ascii_lowercase(),
        algorithm,
        qop,
        nc,
        cnonce,
        opaque: params.get("opaque").map(str::to_owned),
    })
}

/// request-digest of RFC 2617 section 3.2.2.1 with A2 = method ":" uri (qop=auth or none).
fn request_digest(
    algorithm: Algorithm,
    ha1_hex: &str,
    nonce: &str,
    qop: Option<(&str, &str, &str)>, // (nc, cnonce, qop)
    method: &str,
    uri: &str,
) -> String {
    let ha2 = algorithm.hash_hex(format!("{method}:{uri}").as_bytes());
    let data = match qop {
        Some((nc, cnonce, qop)) => format!("{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"),
        None => format!("{ha1_hex}:{nonce}:{ha2}"),
    };
    algorithm.hash_hex(data.as_bytes())
}

fn expected_response(credentials: &Credentials, method: &str, ha1_hex: &str) -> Option<String> {
    let qop = match (&credentials.qop, &credentials.nc, &credentials.cnonce) {
        (None, _, _) => None,
        (Some(qop), Some(nc), Some(cnonce)) => Some((nc.as_str(), cnonce.as_str(), qop.as_str())),
        _ => return None,
    };
    Some(request_digest(
        credentials.algorithm,
        ha1_hex,
        &credentials.nonce,
        qop,
        method,
        &credentials.uri,
    ))
}

/// response = KD(HA1, nonce:nc:cnonce:qop:H(A2)), or KD(HA1, nonce:H(A2)) without qop;
/// A2 = method:uri. `ha1_hex` must be the HA1 of `credentials.algorithm`
/// ([`Ha1Pair::for_algorithm`]). The comparison is constant-time.
///
/// `method` is the method the client signed: the request's, except for an ACK that
/// repeats its INVITE's credentials (those were computed with INVITE).
pub fn verify(credentials: &Credentials, method: &str, ha1_hex: &str) -> bool {
    let Some(expected) = expected_response(credentials, method, &ha1_hex.to_ascii_lowercase())
    else {
        return false;
    };
    expected
        .as_bytes()
        .ct_eq(credentials.response.as_bytes())
        .into()
}

/// What to do with a request that carries credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Authorized,
    /// The digest is right but the nonce is old or from an earlier key: challenge again with
    /// `stale=true`. Not a failed attempt (the client knows the password).
    StaleNonce,
    /// Wrong response (wrong password, or the wrong user): challenge again and count a
    /// failure for the lockout.
    BadResponse,
    /// Credentials for another realm (e.g. for a proxy further on): not ours to judge.
    OtherRealm,
}

/// The registrar's whole check for one set of credentials: realm, digest, nonce. When the
/// user is unknown there is no HA1: treat it as [`Verdict::BadResponse`] so an attacker
/// cannot tell users apart.
pub fn authenticate(
    credentials: &Credentials,
    method: &str,
    ha1: &Ha1Pair,
    key: &NonceKey,
    now_ms: i64,
    max_age_ms: i64,
) -> Verdict {
    if credentials.realm != ha1.realm {
        return Verdict::OtherRealm;
    }
    if !verify(
        credentials,
        method,
        ha1.for_algorithm(credentials.algorithm),
    ) {
        return Verdict::BadResponse;
    }
    match check_nonce(key, &ha1.realm, &credentials.nonce, now_ms, max_age_ms) {
        NonceState::Fresh => Verdict::Authorized,
        NonceState::Stale | NonceState::Forged => Verdict::StaleNonce,
    }
}

// ---------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------

/// Answers a carrier's challenge: the `Authorization` (or `Proxy-Authorization`) value.
/// `nc` counts the requests made with this nonce, starting at 1.
pub fn answer(
    challenge_header_value: &str,
    method: &str,
    uri: &str,
    username: &str,
    password: &str,
    cnonce: &str,
    nc: u32,
) -> Result<String, DigestError> {
    let challenge = parse_challenge(challenge_header_value)?;
    let algorithm = challenge.algorithm;
    let ha1 = algorithm.hash_hex(format!("{username}:{}:{password}", challenge.realm).as_bytes());
    let nc = format!("{nc:08x}");
    let qop = challenge.qop_auth.then_some((nc.as_str(), cnonce, "auth"));
    let response = request_digest(algorithm, &ha1, &challenge.nonce, qop, method, uri);
    let mut value = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\", algorithm={algorithm}",
        quoted(username),
        quoted(&challenge.realm),
        quoted(&challenge.nonce),
        quoted(uri),
    );
    if challenge.qop_auth {
        value.push_str(&format!(", qop=auth, nc={nc}, cnonce={}", quoted(cnonce)));
    }
    if let Some(opaque) = &challenge.opaque {
        value.push_str(&format!(", opaque={}", quoted(opaque)));
    }
    Ok(value)
}

// ---------------------------------------------------------------------------------------
// auth-param syntax (RFC 7235 section 2.1, RFC 3261 section 25.1)
// ---------------------------------------------------------------------------------------

/// Parameters of a `Digest` header value, names lower-cased, values unquoted.
struct DigestParams(Vec<(String, String)>);

impl DigestParams {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn require(&self, name: &'static str) -> Result<&str, DigestError> {
        self.get(name).ok_or(DigestError::MissingParam(name))
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// A digest header has about a dozen parameters; the bound keeps the duplicate check cheap.
const MAX_PARAMS: usize = 32;

fn parse_digest_params(header_value: &str) -> Result<DigestParams, DigestError> {
    let bytes = header_value.as_bytes();
    let mut i = 0;
    while i < bytes.len() && is_lws(bytes[i]) {
        i += 1;
    }
    let scheme_start = i;
    while i < bytes.len() && is_token_byte(bytes[i]) {
        i += 1;
    }
    let scheme = &header_value[scheme_start..i];
    if scheme.is_empty() {
        return Err(DigestError::Syntax("no authentication scheme"));
    }
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestError::NotDigest(scheme.to_owned()));
    }
    if i < bytes.len() && !is_lws(bytes[i]) {
        return Err(DigestError::Syntax("no space after the scheme"));
    }

    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        // Separators: any run of whitespace and commas (empty list elements are allowed).
        while i < bytes.len() && (is_lws(bytes[i]) || bytes[i] == b',') {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let name_start = i;
        while i < bytes.len() && is_token_byte(bytes[i]) {
            i += 1;
        }
        if i == name_start {
            return Err(DigestError::Syntax("a parameter name is not a token"));
        }
        let name = header_value[name_start..i].to_ascii_lowercase();
        while i < bytes.len() && is_lws(bytes[i]) {
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            return Err(DigestError::Syntax("a parameter has no '='"));
        }
        i += 1;
        while i < bytes.len() && is_lws(bytes[i]) {
            i += 1;
        }
        let value = if bytes.get(i) == Some(&b'"') {
            i += 1;
            let mut value = Vec::new();
            loop {
                match bytes.get(i) {
                    None => return Err(DigestError::Syntax("a quoted string is not closed")),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        // quoted-pair: the next byte stands for itself.
                        let Some(&escaped) = bytes.get(i + 1) else {
                            return Err(DigestError::Syntax("a quoted string is not closed"));
                        };
                        value.push(escaped);
                        i += 2;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            // Only ASCII bytes were dropped, so the rest is still UTF-8; check anyway.
            String::from_utf8(value)
                .map_err(|_| DigestError::Syntax("a quoted string is not UTF-8"))?
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b',' && !is_lws(bytes[i]) {
                i += 1;
            }
            if i == start {
                return Err(DigestError::Syntax("a parameter has an empty value"));
            }
            header_value[start..i].to_owned()
        };
        while i < bytes.len() && is_lws(bytes[i]) {
            i += 1;
        }
        if i < bytes.len() && bytes[i] != b',' {
            return Err(DigestError::Syntax("parameters must be separated by ','"));
        }
        if params.len() == MAX_PARAMS {
            return Err(DigestError::Syntax("more than 32 parameters"));
        }
        if params.iter().any(|(n, _)| *n == name) {
            return Err(DigestError::DuplicateParam(name));
        }
        params.push((name, value));
    }
    Ok(DigestParams(params))
}

/// A quoted-string: `"` and `\` escaped.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod order_tests {
    use super::*;
    use Algorithm::{Md5, Sha256};

    #[test]
    fn written_orders_are_read_in_order_and_checked() {
        type Case = (&'static [&'static str], Result<Vec<Algorithm>, OrderError>);
        let cases: &[Case] = &[
            (&["sha256", "md5"], Ok(vec![Sha256, Md5])),
            (&["md5"], Ok(vec![Md5])),
            (&["MD5", "SHA-256"], Ok(vec![Md5, Sha256])),
            (&[" sha256 "], Ok(vec![Sha256])),
            (&[], Err(OrderError::Empty)),
            (&["md5", "MD5"], Err(OrderError::Twice("md5"))),
            (&["sha512"], Err(OrderError::Unknown("sha512".into()))),
            (&["md5-sess"], Err(OrderError::Unknown("md5-sess".into()))),
        ];
        for (names, expected) in cases {
            assert_eq!(&parse_order(names.iter().copied()), expected, "{names:?}");
        }
        assert_eq!(order_text(&[Md5, Sha256]), "md5,sha256");
        assert_eq!(
            parse_order(order_text(&[Md5, Sha256]).split(',')),
            Ok(vec![Md5, Sha256])
        );
    }

    /// A registrant's own order wins; without one (or unknown) the gateway's applies.
    #[test]
    fn the_registrants_own_order_wins_over_the_gateways() {
        let gateway = [Sha256, Md5];
        let md5_only = [Md5];
        let cases: &[(Option<&[Algorithm]>, &[Algorithm])] = &[
            (Some(&md5_only), &[Md5]),
            (None, &[Sha256, Md5]),
            (Some(&[]), &[Sha256, Md5]),
        ];
        for (own, expected) in cases {
            assert_eq!(offer_order(*own, &gateway), *expected, "{own:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VECTORS: &str = include_str!("../../tests/data/sip-traces/digest/digest-vectors.tsv");

    #[test]
    fn ha1_matches_rfc2617_example() {
        // RFC 2617 section 3.5: Mufasa / testrealm@host.com / Circle Of Life.
        let pair = Ha1Pair::compute("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(pair.md5, "939e7578ed9e3c518a452acee763bce9");
        assert_eq!(pair.sha256.len(), 64);
    }

    struct Vector<'a> {
        line: usize,
        message_file: &'a str,
        method: &'a str,
        username: &'a str,
        realm: &'a str,
        uri: &'a str,
        nonce: &'a str,
        cnonce: &'a str,
        nc: &'a str,
        qop: &'a str,
        algorithm: &'a str,
        password: &'a str,
        expected: &'a str,
    }

    fn vectors() -> Vec<Vector<'static>> {
        let mut lines = VECTORS.lines().enumerate();
        let (_, header) = lines.next().expect("the vectors file has a header");
        let names: Vec<&str> = header.split('\t').collect();
        let col = |name: &str| {
            names
                .iter()
                .position(|n| *n == name)
                .unwrap_or_else(|| panic!("column {name} in digest-vectors.tsv"))
        };
        let c = [
            col("message_file"),
            col("method"),
            col("username"),
            col("realm"),
            col("digest_uri"),
            col("nonce"),
            col("cnonce"),
            col("nc"),
            col("qop"),
            col("algorithm"),
            col("password"),
            col("expected_response"),
        ];
        lines
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| {
                let f: Vec<&str> = l.split('\t').collect();
                assert_eq!(f.len(), names.len(), "line {}", n + 1);
                Vector {
                    line: n + 1,
                    message_file: f[c[0]],
                    method: f[c[1]],
                    username: f[c[2]],
                    realm: f[c[3]],
                    uri: f[c[4]],
                    nonce: f[c[5]],
                    cnonce: f[c[6]],
                    nc: f[c[7]],
                    qop: f[c[8]],
                    algorithm: f[c[9]],
                    password: f[c[10]],
                    expected: f[c[11]],
                }
            })
            .collect()
    }

    fn opt(s: &str) -> Option<String> {
        (!s.is_empty()).then(|| s.to_owned())
    }

    /// Reads a copied corpus message; `sip-traces/X` in the vectors file is
    /// `tests/data/sip-traces/digest/X` here.
    fn corpus_message(path: &str) -> String {
        let rel = path.strip_prefix("sip-traces/").unwrap_or(path);
        let full = format!(
            "{}/tests/data/sip-traces/digest/{rel}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
    }

    fn header_values<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
        message
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .split("\r\n")
            .filter_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
            })
            .collect()
    }

    #[test]
    fn corpus_vectors_all_verify_from_the_password() {
        let all = vectors();
        assert_eq!(all.len(), 16, "digest-vectors.tsv has 16 rows");
        for v in &all {
            let algorithm: Algorithm = v.algorithm.parse().expect("vector algorithm");
            let ha1 = Ha1Pair::compute(v.username, v.realm, v.password);
            let credentials = Credentials {
                username: v.username.to_owned(),
                realm: v.realm.to_owned(),
                nonce: v.nonce.to_owned(),
                uri: v.uri.to_owned(),
                response: v.expected.to_owned(),
                algorithm,
                qop: opt(v.qop),
                nc: opt(v.nc),
                cnonce: opt(v.cnonce),
                opaque: None,
            };
            let computed = expected_response(&credentials, v.method, ha1.for_algorithm(algorithm));
            assert_eq!(computed.as_deref(), Some(v.expected), "line {}", v.line);
            assert!(
                verify(&credentials, v.method, ha1.for_algorithm(algorithm)),
                "line {}",
                v.line
            );
            // The other algorithm's HA1, a wrong password or a wrong method never verify.
            let other = match algorithm {
                Algorithm::Md5 => Algorithm::Sha256,
                Algorithm::Sha256 => Algorithm::Md5,
            };
            assert!(!verify(&credentials, v.method, ha1.for_algorithm(other)));
            let wrong = Ha1Pair::compute(v.username, v.realm, "not the password");
            assert!(!verify(
                &credentials,
                v.method,
                wrong.for_algorithm(algorithm)
            ));
            assert!(!verify(
                &credentials,
                "OPTIONS",
                ha1.for_algorithm(algorithm)
            ));
        }
    }

    #[test]
    fn corpus_messages_carry_the_vector_credentials() {
        let mut checked = 0;
        for v in vectors().iter().filter(|v| v.message_file != "(inline)") {
            let message = corpus_message(v.message_file);
            let values = header_values(&message, "Authorization");
            assert_eq!(values.len(), 1, "{}", v.message_file);
            let credentials = parse_credentials(values[0]).expect(v.message_file);
            assert_eq!(credentials.username, v.username);
            assert_eq!(credentials.realm, v.realm);
            assert_eq!(credentials.nonce, v.nonce);
            assert_eq!(credentials.uri, v.uri);
            assert_eq!(credentials.response, v.expected);
            let ha1 = Ha1Pair::compute(v.username, v.realm, v.password);
            assert!(
                verify(&credentials, v.method, &ha1.md5),
                "{}",
                v.message_file
            );
            checked += 1;
        }
        assert_eq!(checked, 5);
    }

    #[test]
    fn ack_repeating_invite_credentials_verifies_only_with_invite() {
        let message = corpus_message(
            "sip-traces/wireshark-samples/Asterisk_ZFONE_XLITE/Asterisk_ZFONE_XLITE-022.sip",
        );
        assert!(message.starts_with("ACK "));
        let credentials =
            parse_credentials(header_values(&message, "Authorization")[0]).expect("parses");
        let ha1 = Ha1Pair::compute("10009", "192.168.10.2", "10009");
        assert!(verify(&credentials, "INVITE", &ha1.md5));
        assert!(!verify(&credentials, "ACK", &ha1.md5));
    }

    #[test]
    fn real_headers_of_the_corpus_parse() {
        let dir = format!(
            "{}/tests/data/sip-traces/digest/wireshark-samples",
            env!("CARGO_MANIFEST_DIR")
        );
        let (mut credentials, mut challenges) = (0, 0);
        for capture in std::fs::read_dir(&dir).expect("corpus dir") {
            for file in std::fs::read_dir(capture.expect("entry").path()).expect("capture dir") {
                let path = file.expect("entry").path();
                let message = std::fs::read_to_string(&path).expect("message");
                for name in ["Authorization", "Proxy-Authorization"] {
                    for value in header_values(&message, name) {
                        parse_credentials(value)
                            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                        credentials += 1;
                    }
                }
                for name in ["WWW-Authenticate", "Proxy-Authenticate"] {
                    for value in header_values(&message, name) {
                        parse_challenge(value)
                            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                        challenges += 1;
                    }
                }
            }
        }
        assert_eq!((credentials, challenges), (8, 5));
    }

    #[test]
    fn proxy_authorization_with_nc_but_no_qop_parses_as_plain_digest() {
        // aaa-042 (Nero SIPPS): quoted nc, no qop, no cnonce; digest uri differs from the
        // Request-URI. Verification uses the RFC 2069 form.
        let message = corpus_message("sip-traces/wireshark-samples/aaa/aaa-042.sip");
        let c =
            parse_credentials(header_values(&message, "Proxy-Authorization")[0]).expect("parses");
        assert_eq!(c.username, "voi18062");
        assert_eq!(c.uri, "sip:192.168.1.2");
        assert_eq!(c.opaque.as_deref(), Some("1701a1351f70795"));
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert_eq!((c.qop, c.cnonce, c.algorithm), (None, None, Algorithm::Md5));
    }

    #[test]
    fn carrier_challenge_with_opaque_and_stale_false_parses() {
        let message = corpus_message("sip-traces/wireshark-samples/aaa/aaa-040.sip");
        let c = parse_challenge(header_values(&message, "Proxy-Authenticate")[0]).expect("parses");
        assert_eq!(c.realm, "sip.cybercity.dk");
        assert_eq!(c.opaque.as_deref(), Some("1701a1351f70795"));
        assert!(!c.stale && !c.qop_auth);
        assert_eq!(c.algorithm, Algorithm::Md5);
    }

    #[test]
    fn answer_to_a_real_xlite_challenge_reproduces_the_real_response() {
        // 002 is Asterisk's challenge, 003 X-Lite's answer; our client must say the same.
        let challenge = corpus_message(
            "sip-traces/wireshark-samples/Asterisk_ZFONE_XLITE/Asterisk_ZFONE_XLITE-002.sip",
        );
        let value = answer(
            header_values(&challenge, "WWW-Authenticate")[0],
            "REGISTER",
            "sip:192.168.10.2",
            "10009",
            "10009",
            "unused-without-qop",
            1,
        )
        .expect("answers");
        let c = parse_credentials(&value).expect("our answer parses");
        assert_eq!(c.response, "4f66a0579d32ad5fa25745dfc9aa1871");
        assert_eq!((c.qop, c.cnonce), (None, None));
    }

    #[test]
    fn answer_then_verify_round_trips_for_both_algorithms_with_and_without_qop() {
        let key = NonceKey::from_bytes([7; 32]);
        let realm = "leadline.example";
        let nonce = issue_nonce(&key, realm, 1_000);
        let ha1 = Ha1Pair::compute("101", realm, "s3cr\"et\\");
        for algorithm in [Algorithm::Md5, Algorithm::Sha256] {
            for with_qop in [true, false] {
                let mut ch = challenge(realm, &nonce, algorithm, false);
                if !with_qop {
                    ch = ch.replace(", qop=\"auth\"", "");
                }
                let value = answer(
                    &ch,
                    "REGISTER",
                    "sip:leadline.example",
                    "101",
                    "s3cr\"et\\",
                    "c\"n",
                    258,
                )
                .expect("answers");
                let c = parse_credentials(&value).expect("parses");
                assert_eq!(c.algorithm, algorithm);
                assert_eq!(c.qop.is_some(), with_qop, "{value}");
                if with_qop {
                    assert_eq!(c.nc.as_deref(), Some("00000102"));
                    assert_eq!(c.cnonce.as_deref(), Some("c\"n"));
                }
                assert!(verify(&c, "REGISTER", ha1.for_algorithm(algorithm)));
                assert!(!verify(&c, "INVITE", ha1.for_algorithm(algorithm)));
                assert_eq!(
                    authenticate(&c, "REGISTER", &ha1, &key, 2_000, NONCE_MAX_AGE_MS),
                    Verdict::Authorized
                );
            }
        }
    }

    #[test]
    fn authenticate_tells_stale_from_bad_and_other_realm() {
        let key = NonceKey::from_bytes([1; 32]);
        let realm = "pbx";
        let ha1 = Ha1Pair::compute("101", realm, "pw");
        let nonce = issue_nonce(&key, realm, 0);
        let value = answer(
            &challenge(realm, &nonce, Algorithm::Sha256, false),
            "REGISTER",
            "sip:pbx",
            "101",
            "pw",
            "x",
            1,
        )
        .expect("answers");
        let c = parse_credentials(&value).expect("parses");
        let at = |now| authenticate(&c, "REGISTER", &ha1, &key, now, 60_000);
        assert_eq!(at(60_000), Verdict::Authorized);
        assert_eq!(at(60_001), Verdict::StaleNonce);
        // After a restart the key is new: a right digest on an old nonce is only stale.
        let restarted = NonceKey::from_bytes([2; 32]);
        assert_eq!(
            authenticate(&c, "REGISTER", &ha1, &restarted, 1, 60_000),
            Verdict::StaleNonce
        );
        let wrong = Ha1Pair::compute("101", realm, "guess");
        assert_eq!(
            authenticate(&c, "REGISTER", &wrong, &key, 1, 60_000),
            Verdict::BadResponse
        );
        let elsewhere = Ha1Pair::compute("101", "other", "pw");
        assert_eq!(
            authenticate(&c, "REGISTER", &elsewhere, &key, 1, 60_000),
            Verdict::OtherRealm
        );
    }

    #[test]
    fn nonce_is_fresh_then_stale() {
        let key = NonceKey::generate();
        let nonce = issue_nonce(&key, "r", 10_000);
        assert_eq!(nonce.len(), NONCE_TEXT_LEN);
        assert_eq!(
            check_nonce(&key, "r", &nonce, 10_000, 5_000),
            NonceState::Fresh
        );
        assert_eq!(
            check_nonce(&key, "r", &nonce, 15_000, 5_000),
            NonceState::Fresh
        );
        assert_eq!(
            check_nonce(&key, "r", &nonce, 15_001, 5_000),
            NonceState::Stale
        );
        // The clock stepped back a little: still ours and fresh.
        assert_eq!(
            check_nonce(&key, "r", &nonce, 9_000, 5_000),
            NonceState::Fresh
        );
    }

    #[test]
    fn nonce_from_another_key_or_realm_or_tampered_is_forged() {
        let key = NonceKey::from_bytes([9; 32]);
        let nonce = issue_nonce(&key, "r", 10_000);
        let other = NonceKey::from_bytes([8; 32]);
        assert_eq!(
            check_nonce(&other, "r", &nonce, 10_000, 5_000),
            NonceState::Forged
        );
        assert_eq!(
            check_nonce(&key, "r2", &nonce, 10_000, 5_000),
            NonceState::Forged
        );
        // Re-date it: take a nonce's MAC and put a later time in front.
        let mut raw = URL_SAFE_NO_PAD.decode(&nonce).expect("base64url");
        raw[..8].copy_from_slice(&20_000i64.to_be_bytes());
        let redated = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(
            check_nonce(&key, "r", &redated, 20_000, 5_000),
            NonceState::Forged
        );
    }

    #[test]
    fn nonce_garbage_is_forged() {
        let key = NonceKey::from_bytes([9; 32]);
        for garbage in [
            "",
            "7e2bcb4c",
            "not base64 at all, not at all!!!",
            "================================",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "ÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄ",
        ] {
            assert_eq!(
                check_nonce(&key, "r", garbage, 0, i64::MAX),
                NonceState::Forged,
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn hmac_sha256_matches_rfc4231() {
        let long_key = [0xaa; 131];
        let key4: Vec<u8> = (1..=25).collect();
        let cases: [(&[u8], &[u8], &str); 6] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 20],
                &[0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                &key4,
                &[0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                &long_key,
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                &long_key,
                b"This is a test using a larger than block-size key and a larger than \
                  block-size data. The key needs to be hashed before being used by the HMAC \
                  algorithm.",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (i, (key, data, expected)) in cases.into_iter().enumerate() {
            assert_eq!(hex::encode(hmac_sha256(key, &[data])), expected, "case {i}");
            // Split input gives the same MAC.
            let (a, b) = data.split_at(data.len() / 2);
            assert_eq!(hex::encode(hmac_sha256(key, &[a, b])), expected, "case {i}");
        }
    }

    #[test]
    fn challenges_offer_sha256_first_then_md5() {
        let values = challenges("pbx \"one\"", "abc", true);
        assert_eq!(
            values,
            [
                r#"Digest realm="pbx \"one\"", nonce="abc", algorithm=SHA-256, qop="auth", stale=true"#,
                r#"Digest realm="pbx \"one\"", nonce="abc", algorithm=MD5, qop="auth", stale=true"#,
            ]
        );
        let parsed = parse_challenge(&values[0]).expect("parses");
        assert_eq!(parsed.realm, "pbx \"one\"");
        assert!(parsed.stale && parsed.qop_auth);
        assert_eq!(
            choose_challenge(values.iter().rev().map(String::as_str)),
            Some(values[0].as_str())
        );
        assert!(!challenges("r", "n", false)[1].contains("stale"));
    }

    #[test]
    fn algorithm_parses_case_insensitively_and_refuses_sess() {
        assert_eq!("md5".parse::<Algorithm>(), Ok(Algorithm::Md5));
        assert_eq!("sha-256".parse::<Algorithm>(), Ok(Algorithm::Sha256));
        assert_eq!("SHA256".parse::<Algorithm>(), Ok(Algorithm::Sha256));
        assert_eq!(
            "MD5-sess".parse::<Algorithm>(),
            Err(DigestError::SessionAlgorithm("MD5-sess".into()))
        );
        assert_eq!(
            "SHA-512-256".parse::<Algorithm>(),
            Err(DigestError::UnsupportedAlgorithm("SHA-512-256".into()))
        );
        assert_eq!(
            "ÄÄÄ".parse::<Algorithm>(),
            Err(DigestError::UnsupportedAlgorithm("ÄÄÄ".into()))
        );
        assert_eq!(Algorithm::Sha256.to_string(), "SHA-256");
    }

    #[test]
    fn parse_credentials_takes_any_order_escapes_and_ignores_unknown() {
        let c = parse_credentials(
            "digest  RESPONSE=\"6629FAE49393A05397450978507C4EF1\" ,, cnonce=\"0a4f113b\",\
             nc=00000001,qop=auth, x-unknown=\"a,b=c\", Username=\"Mu\\\"fa\\\\sa\",\r\n \
             realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
             uri=\"/dir/index.html\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .expect("parses");
        assert_eq!(c.username, "Mu\"fa\\sa");
        assert_eq!(c.response, "6629fae49393a05397450978507c4ef1");
        assert_eq!(c.qop.as_deref(), Some("auth"));
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(
            c.opaque.as_deref(),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
    }

    #[test]
    fn parse_credentials_names_what_is_wrong() {
        let ok = "username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", \
                  response=\"00000000000000000000000000000000\"";
        let cases: [(String, DigestError); 12] = [
            (
                format!("Basic {ok}"),
                DigestError::NotDigest("Basic".into()),
            ),
            (
                String::new(),
                DigestError::Syntax("no authentication scheme"),
            ),
            (
                format!("Digest {}", ok.replace("username=\"u\", ", "")),
                DigestError::MissingParam("username"),
            ),
            (
                format!("Digest {ok}, realm=\"x\""),
                DigestError::DuplicateParam("realm".into()),
            ),
            (
                format!("Digest {ok}, algorithm=MD5-sess"),
                DigestError::SessionAlgorithm("MD5-sess".into()),
            ),
            (
                format!("Digest {ok}, algorithm=SHA-256"),
                DigestError::BadResponse {
                    algorithm: Algorithm::Sha256,
                    expected: 64,
                },
            ),
            (
                format!("Digest {ok}, qop=auth-int, nc=00000001, cnonce=\"c\""),
                DigestError::UnsupportedQop("auth-int".into()),
            ),
            (
                format!("Digest {ok}, qop=auth, cnonce=\"c\""),
                DigestError::MissingParam("nc"),
            ),
            (
                format!("Digest {ok}, qop=auth, nc=1, cnonce=\"c\""),
                DigestError::BadNonceCount("1".into()),
            ),
            (
                format!("Digest {ok}, qop=auth, nc=00000001"),
                DigestError::MissingParam("cnonce"),
            ),
            (
                format!("Digest {ok}, opaque=\"unterminated"),
                DigestError::Syntax("a quoted string is not closed"),
            ),
            (
                format!("Digest {ok}, userhash=true"),
                DigestError::UserhashUnsupported,
            ),
        ];
        assert!(parse_credentials(&format!("Digest {ok}")).is_ok());
        for (value, expected) in cases {
            assert_eq!(parse_credentials(&value), Err(expected), "{value}");
        }
        assert_eq!(
            parse_credentials("Digest username \"u\""),
            Err(DigestError::Syntax("a parameter has no '='"))
        );
        assert_eq!(
            parse_credentials("Digest username=\"u\" realm=\"r\""),
            Err(DigestError::Syntax("parameters must be separated by ','"))
        );
    }

    #[test]
    fn parse_credentials_refuses_a_flood_of_parameters() {
        let flood: String = (0..10_000).map(|i| format!("x{i}=1, ")).collect();
        assert_eq!(
            parse_credentials(&format!("Digest {flood}")),
            Err(DigestError::Syntax("more than 32 parameters"))
        );
    }

    #[test]
    fn answer_refuses_sess_and_auth_int_only_challenges() {
        assert_eq!(
            answer(
                "Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess",
                "REGISTER",
                "sip:r",
                "u",
                "p",
                "c",
                1
            ),
            Err(DigestError::SessionAlgorithm("MD5-sess".into()))
        );
        assert_eq!(
            answer(
                "Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"",
                "REGISTER",
                "sip:r",
                "u",
                "p",
                "c",
                1
            ),
            Err(DigestError::UnsupportedQop("auth-int".into()))
        );
        // An offer of both is answered with auth.
        let value = answer(
            "Digest realm=\"r\", nonce=\"n\", qop=\"auth-int, auth\"",
            "REGISTER",
            "sip:r",
            "u",
            "p",
            "c",
            1,
        )
        .expect("answers");
        assert!(value.contains("qop=auth,"), "{value}");
    }

    /// Nodes sharing a database share the key through its stored hex form: a nonce one
    /// node issued checks as fresh on another, and a mangled stored value is refused.
    #[test]
    fn nonce_issued_by_one_node_is_fresh_on_another_sharing_the_stored_key() {
        let node_a = NonceKey::generate();
        let node_b = NonceKey::from_hex(&node_a.to_hex()).expect("round trip");
        let nonce = issue_nonce(&node_a, "leadline", 1_000);
        assert_eq!(
            check_nonce(&node_b, "leadline", &nonce, 2_000, NONCE_MAX_AGE_MS),
            NonceState::Fresh
        );
        let other = NonceKey::generate();
        assert_eq!(
            check_nonce(&other, "leadline", &nonce, 2_000, NONCE_MAX_AGE_MS),
            NonceState::Forged
        );
        assert_eq!(node_a.to_hex().len(), 64);
        for bad in ["", "abc", &"zz".repeat(32), &"00".repeat(33)] {
            assert!(NonceKey::from_hex(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn nonce_key_debug_hides_the_secret() {
        assert_eq!(
            format!("{:?}", NonceKey::from_bytes([0xab; 32])),
            "NonceKey(<redacted>)"
        );
    }

    proptest! {
        #[test]
        fn parse_credentials_never_panics(value in "\\PC*") {
            let _ = parse_credentials(&value);
            let _ = parse_challenge(&value);
        }

        #[test]
        fn parse_credentials_never_panics_on_near_valid_input(
            value in "(Digest|digest|Basic)[ \t]{0,2}((username|realm|nonce|uri|response|qop|nc|cnonce|algorithm|opaque)[ ]?=[ ]?(\"([^\"\\\\]|\\\\.){0,8}\"?|[a-zA-Z0-9-]{0,8})[ ,]{0,3}){0,12}"
        ) {
            let _ = parse_credentials(&value);
            let _ = parse_challenge(&value);
        }

        #[test]
        fn check_nonce_never_panics(
            nonce in "\\PC{0,40}|[A-Za-z0-9_-]{32}",
            now in any::<i64>(),
            max_age in any::<i64>(),
        ) {
            let key = NonceKey::from_bytes([3; 32]);
            let _ = check_nonce(&key, "r", &nonce, now, max_age);
        }

        #[test]
        fn issued_nonces_check_fresh_at_any_time(now in any::<i64>(), realm in "\\PC{0,20}") {
            let key = NonceKey::from_bytes([4; 32]);
            let nonce = issue_nonce(&key, &realm, now);
            prop_assert_eq!(check_nonce(&key, &realm, &nonce, now, 0), NonceState::Fresh);
        }

        #[test]
        fn answer_round_trips_any_username_and_password(
            username in "\\PC{1,16}",
            password in "\\PC{0,16}",
            realm in "\\PC{1,16}",
            sha in any::<bool>(),
            nc in 1u32..,
        ) {
            let algorithm = if sha { Algorithm::Sha256 } else { Algorithm::Md5 };
            let value = answer(
                &challenge(&realm, "n", algorithm, false),
                "REGISTER",
                "sip:x",
                &username,
                &password,
                "cn",
                nc,
            )
            .expect("answers");
            let c = parse_credentials(&value).expect("parses");
            prop_assert_eq!(&c.username, &username);
            prop_assert_eq!(&c.realm, &realm);
            let ha1 = Ha1Pair::compute(&username, &realm, &password);
            prop_assert!(verify(&c, "REGISTER", ha1.for_algorithm(algorithm)));
        }
    }
}
