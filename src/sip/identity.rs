//! Who is calling, and which of our numbers they dialled, read from an incoming INVITE.
//!
//! Pure: a parsed request and the peer's [`Profile`] in, numbers out, spelled the way the
//! matcher compares them (E.164 when the number can be read, else its digits). This module
//! owns the reading of identity headers (RFC 3325 P-Asserted-/P-Preferred-Identity,
//! Remote-Party-ID, From), of withheld callers (RFC 3323/3325 `Privacy: id`, anonymous
//! URIs), of forwarding (RFC 5806 Diversion, RFC 7044 History-Info) and of the carrier's
//! verification of the caller (RFC 8224 Identity, ATIS-1000074 `verstat`). It does not decide
//! what a number means: the B2BUA looks the called number up, the matcher the caller.
//! A header that cannot be read is skipped, never an error: a caller we cannot name is
//! still a call to record.

use rsipstack::sip::typed::{DiversionEntry, From as NameAddr, HistoryInfoEntry, To};
use rsipstack::sip::uri::Param;
use rsipstack::sip::{Header, Host, Request, Scheme, Uri};

use super::profiles::{CallerHeader, NumberFormat, Profile};
use crate::crm::trust::Verstat;
use crate::matcher::{Country, PhoneKey, normalise_phone};

/// The caller of an incoming call, as far as the INVITE tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerId {
    /// The number as the matcher should read it: `+4930901820` when it can be read as
    /// E.164, otherwise its digits as sent (`101`). `None` when the caller is withheld,
    /// unavailable, or named by something that is not a number (`sip:alice@…`).
    pub number: Option<String>,
    /// A name to show, never a number or a placeholder like "Anonymous".
    pub display_name: Option<String>,
    /// The header the answer comes from; for a withheld caller, the header withheld.
    pub source: CallerHeader,
    /// The caller is withheld (`Privacy: id`, RPID `privacy=full`) or said to be
    /// unavailable (`anonymous@anonymous.invalid`, `unknown`, `unavailable` …).
    pub anonymous: bool,
}

/// Both readings of the called number, for the B2BUA to choose when [`called`]'s choice
/// is not one of our numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalledParty {
    /// The number this INVITE is addressed to: the Request-URI user part, or the To user
    /// part when the Request-URI names no number (a registered contact like `1234567t0`).
    pub dialled: Option<String>,
    /// The number the caller dialled before the call was forwarded: the oldest Diversion
    /// entry with a number (RFC 5806 prepends each new one), else the first History-Info
    /// entry with a number (RFC 7044 lists them in order, the original target first).
    pub original: Option<String>,
}

/// What the carrier says about the caller's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// The first `verstat` in the profile's `verstat_headers`, in any of the places
    /// carriers put it: a parameter of a tel URI, of a SIP URI's user part, of the URI,
    /// or of the header.
    pub verstat: Option<Verstat>,
    /// An RFC 8224 `Identity` header came with the call (a PASSporT Leadline does not
    /// check itself: the carrier's `verstat` is its verdict).
    pub identity: bool,
}

/// The carrier's verification of the caller, read where the profile says it is.
pub fn verification(request: &Request, profile: &Profile) -> Verification {
    let verstat = profile.verstat_headers.iter().find_map(|&header| {
        raw_entries(request, header)
            .iter()
            .find_map(|entry| verstat_in(entry))
    });
    let identity = request
        .headers
        .iter()
        .any(|header| matches!(header, Header::Identity(_)));
    Verification { verstat, identity }
}

/// The `verstat` parameter anywhere in one header entry; the name's case varies.
fn verstat_in(entry: &str) -> Option<Verstat> {
    let lower = entry.to_ascii_lowercase();
    lower.match_indices("verstat=").find_map(|(at, name)| {
        let starts_param = entry[..at].ends_with([';', '?', '&']);
        let value = entry[at + name.len()..]
            .split([';', '@', '>', ',', '&', ' ', '\t'])
            .next()
            .unwrap_or_default();
        starts_param
            .then(|| Verstat::parse(&percent_decode(value)))
            .flatten()
    })
}

/// The entries of one identity header as written, for parameters the URI parser drops.
fn raw_entries(request: &Request, header: CallerHeader) -> Vec<String> {
    match header {
        CallerHeader::From => request
            .headers
            .iter()
            .find_map(|h| match h {
                Header::From(from) => Some(vec![from.value().to_owned()]),
                _ => None,
            })
            .unwrap_or_default(),
        CallerHeader::PAssertedIdentity => values(request, |h| match h {
            Header::PAssertedIdentity(v) => Some(v.value()),
            _ => None,
        })
        .collect(),
        CallerHeader::PPreferredIdentity => values(request, |h| match h {
            Header::PPreferredIdentity(v) => Some(v.value()),
            _ => None,
        })
        .collect(),
        CallerHeader::RemotePartyId => values(request, |h| match h {
            Header::Other(name, v) if name.eq_ignore_ascii_case("Remote-Party-ID") => {
                Some(v.as_str())
            }
            _ => None,
        })
        .collect(),
        CallerHeader::Diversion => Vec::new(),
    }
}

/// The caller: the first header in the profile's order that names a number.
///
/// With the profile's `privacy = "honour"`, `Privacy: id` (RFC 3325 §9.3) or an RPID
/// `privacy=full|uri` withholds the caller, even if another header still names them. An
/// anonymous URI does not end the search: RFC 3325 networks send an anonymous From with
/// the asserted identity, and that identity is the caller.
pub fn caller(request: &Request, profile: &Profile) -> CallerId {
    let privacy_id = profile.honour_privacy && privacy_id(request);
    let withheld = |source| CallerId {
        number: None,
        display_name: None,
        source,
        anonymous: true,
    };
    let mut present = None;
    let mut anonymous_in = None;
    for &header in &profile.caller_headers {
        for party in parties(request, header, profile.honour_privacy) {
            if privacy_id || party.withheld {
                return withheld(header);
            }
            present.get_or_insert(header);
            match party.user {
                User::Number(written) => {
                    let display_name = match party.display_name {
                        DisplayName::Shown(name) => Some(name),
                        DisplayName::Absent => from_display_name(request),
                        DisplayName::Withheld => None,
                    };
                    return CallerId {
                        number: Some(read_number(&written, profile)),
                        display_name,
                        source: header,
                        anonymous: false,
                    };
                }
                User::Anonymous => {
                    anonymous_in.get_or_insert(header);
                }
                User::Other => {}
            }
        }
    }
    if privacy_id {
        // No identity header at all, and still the caller asked to be withheld.
        return withheld(CallerHeader::From);
    }
    match anonymous_in {
        Some(header) => withheld(header),
        None => CallerId {
            number: None,
            display_name: from_display_name(request),
            source: present.unwrap_or(CallerHeader::From),
            anonymous: false,
        },
    }
}

/// Our number that was dialled: the original number of a forwarded call when the profile
/// lists `diversion`, otherwise the number the INVITE is addressed to (see
/// [`CalledParty`]). `None` when neither names a number (`sip:bob@…`).
pub fn called(request: &Request, profile: &Profile) -> Option<String> {
    let party = called_party(request, profile);
    if profile.lists(CallerHeader::Diversion) {
        party.original.or(party.dialled)
    } else {
        party.dialled
    }
}

/// The dialled and the original called number, each normalised like the caller.
pub fn called_party(request: &Request, profile: &Profile) -> CalledParty {
    let number = |uri: &Uri| match classify(uri) {
        User::Number(written) => Some(read_number(&written, profile)),
        User::Anonymous | User::Other => None,
    };
    let to = || {
        request.headers.iter().find_map(|header| match header {
            Header::To(to) => To::parse(to.value()).ok(),
            _ => None,
        })
    };
    let dialled = number(&request.uri).or_else(|| to().and_then(|to| number(&to.uri)));

    let diverted = values(request, |h| match h {
        Header::Diversion(v) => Some(v.value()),
        _ => None,
    })
    .filter_map(|entry| DiversionEntry::parse(&entry).ok())
    .filter_map(|entry| number(&entry.uri))
    .last();
    let original = diverted.or_else(|| {
        values(request, |h| match h {
            Header::HistoryInfo(v) => Some(v.value()),
            _ => None,
        })
        .filter_map(|entry| HistoryInfoEntry::parse(&entry).ok())
        .find_map(|entry| number(&entry.uri))
    });
    CalledParty { dialled, original }
}

/// One name-addr of an identity header.
struct Party {
    display_name: DisplayName,
    user: User,
    /// An RPID `privacy=full|uri` the profile honours.
    withheld: bool,
}

enum DisplayName {
    Shown(String),
    /// None given, or nothing worth showing: the From's may serve.
    Absent,
    /// RPID `privacy=name|full`, honoured.
    Withheld,
}

/// What a URI's user part names.
#[derive(Debug, PartialEq, Eq)]
enum User {
    /// `+` and digits, or digits, with separators and parameters removed.
    Number(String),
    /// RFC 3323 §4.1.1.3 `anonymous@anonymous.invalid`, or a placeholder like `unknown`.
    Anonymous,
    /// A name, an account, an empty user part, no user part.
    Other,
}

/// User parts that stand for "no caller number" (RFC 3323 and what gateways write).
const ANONYMOUS: [&str; 8] = [
    "anonymous",
    "anonym",
    "unknown",
    "unavailable",
    "restricted",
    "private",
    "withheld",
    "unbekannt",
];

/// More digits than any number with its prefixes: an account id or a hash.
const MAX_DIGITS: usize = 20;

/// The name-addrs of `header` in the request, in order; RPIDs of the called party are
/// left out (draft-ietf-sip-privacy-04 §6: `party=called` names the other end).
fn parties(request: &Request, header: CallerHeader, honour_privacy: bool) -> Vec<Party> {
    let entries: Vec<String> = match header {
        // RFC 3261 §20.20: one From, whose display name may hold a comma.
        CallerHeader::From => request
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::From(from) => Some(from.value().to_owned()),
                _ => None,
            })
            .take(1)
            .collect(),
        CallerHeader::PAssertedIdentity => values(request, |h| match h {
            Header::PAssertedIdentity(v) => Some(v.value()),
            _ => None,
        })
        .collect(),
        CallerHeader::PPreferredIdentity => values(request, |h| match h {
            Header::PPreferredIdentity(v) => Some(v.value()),
            _ => None,
        })
        .collect(),
        CallerHeader::RemotePartyId => values(request, |h| match h {
            Header::Other(name, v) if name.eq_ignore_ascii_case("Remote-Party-ID") => {
                Some(v.as_str())
            }
            _ => None,
        })
        .collect(),
        CallerHeader::Diversion => Vec::new(),
    };
    entries
        .iter()
        .filter_map(|entry| NameAddr::parse(entry).ok())
        .filter(|addr| !param_is(&addr.params, "party", &["called"]))
        .map(|addr| {
            let rpid_privacy = param_is(&addr.params, "privacy", &["full", "uri"]);
            let hide_name = param_is(&addr.params, "privacy", &["full", "name"]);
            let display_name = match clean_display_name(addr.display_name.as_deref()) {
                _ if honour_privacy && hide_name => DisplayName::Withheld,
                Some(name) => DisplayName::Shown(name),
                None => DisplayName::Absent,
            };
            Party {
                display_name,
                user: classify(&addr.uri),
                withheld: honour_privacy && rpid_privacy,
            }
        })
        .collect()
}

/// Every comma-separated entry of every header `pick` selects, in order.
fn values<'r>(
    request: &'r Request,
    pick: impl Fn(&'r Header) -> Option<&'r str> + 'r,
) -> impl Iterator<Item = String> + 'r {
    request
        .headers
        .iter()
        .filter_map(pick)
        .flat_map(split_entries)
}

/// Splits a header value at the commas between entries, not inside quotes or `<…>`.
fn split_entries(value: &str) -> Vec<String> {
    let mut entries = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut escaped, mut angle) = (false, false, false);
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' if !angle => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                entries.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    entries.push(current);
    entries.retain(|entry| !entry.trim().is_empty());
    entries
}

fn param_is(params: &[Param], name: &str, values: &[&str]) -> bool {
    params.iter().any(|param| match param {
        Param::Other(key, Some(value)) if key.value().eq_ignore_ascii_case(name) => values
            .iter()
            .any(|v| value.value().trim_matches('"').eq_ignore_ascii_case(v)),
        _ => false,
    })
}

/// `Privacy: id` among the privacy values (RFC 3323 §4.2, RFC 3325 §9.3).
fn privacy_id(request: &Request) -> bool {
    request.headers.iter().any(|header| match header {
        Header::Privacy(privacy) => privacy
            .value()
            .split([';', ',', ' ', '\t'])
            .any(|value| value.eq_ignore_ascii_case("id")),
        _ => false,
    })
}

fn from_display_name(request: &Request) -> Option<String> {
    request.headers.iter().find_map(|header| match header {
        Header::From(from) => NameAddr::parse(from.value())
            .ok()
            .and_then(|from| clean_display_name(from.display_name.as_deref())),
        _ => None,
    })
}

/// A display name worth showing: unquoted, and not a number or an anonymous placeholder.
fn clean_display_name(raw: Option<&str>) -> Option<String> {
    let mut name = String::new();
    let mut chars = raw?.trim().chars();
    while let Some(c) = chars.next() {
        // RFC 3261 §25.1 quoted-pair.
        name.extend(if c == '\\' { chars.next() } else { Some(c) });
    }
    let name = name.trim();
    let is_name = name.chars().any(char::is_alphabetic)
        && !ANONYMOUS.iter().any(|a| name.eq_ignore_ascii_case(a));
    is_name.then(|| name.to_owned())
}

/// What the user part of `uri` names: `sip:`/`sips:` user parts (with `user=phone` or
/// without) and `tel:` numbers.
fn classify(uri: &Uri) -> User {
    let host = uri.host_with_port.host.to_string();
    if host.eq_ignore_ascii_case("anonymous.invalid") {
        return User::Anonymous;
    }
    let raw = match &uri.scheme {
        Some(Scheme::Other(scheme)) if scheme.eq_ignore_ascii_case("tel") => Some(host),
        Some(Scheme::Other(_)) => None,
        Some(Scheme::Sip | Scheme::Sips) | None => match &uri.auth {
            Some(auth) => Some(auth.user.clone()),
            // rsipstack reads `sip:+1-212-555-1212;isub=12@gw` as host `+1-212-555-1212`
            // with a parameter `isub=12@gw`: the user part is what it took for the host.
            None => split_subscriber(uri).then_some(host),
        },
    };
    let Some(raw) = raw else {
        return User::Other;
    };
    let user = percent_decode(&raw);
    // RFC 3966 parameters of a telephone-subscriber (`;isub=`, `;ext=`, `;phone-context=`).
    let user = user.split(';').next().unwrap_or_default().trim();
    if ANONYMOUS.iter().any(|a| user.eq_ignore_ascii_case(a)) {
        return User::Anonymous;
    }
    phone_text(user).map_or(User::Other, User::Number)
}

fn split_subscriber(uri: &Uri) -> bool {
    uri.params.iter().any(|param| match param {
        Param::Other(_, Some(value)) => value.value().contains('@'),
        _ => false,
    }) && matches!(uri.host_with_port.host, Host::Domain(_))
}

/// `+` and digits, or digits, once RFC 3966 visual separators are removed.
fn phone_text(user: &str) -> Option<String> {
    let text: String = user
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
        .collect();
    let digits = text.strip_prefix('+').unwrap_or(&text);
    let is_number =
        (1..=MAX_DIGITS).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    is_number.then_some(text)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An E.164 number (`+4930901820`) written the way the profile's peer expects it in a
/// user part: the caller ID and the dialled number of an outgoing call. The inverse of
/// what [`caller`] reads.
pub fn write_number(e164: &str, profile: &Profile) -> String {
    let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
    if !e164.starts_with('+') {
        // Not E.164 (an extension, digits we could not read): as it is.
        return digits;
    }
    match profile.number_format {
        NumberFormat::E164 | NumberFormat::Auto => format!("+{digits}"),
        NumberFormat::E164NoPlus => digits,
        NumberFormat::International00 => format!("00{digits}"),
        NumberFormat::National => match phonenumber::parse(None, e164) {
            Ok(parsed)
                if profile
                    .country
                    .is_some_and(|c| parsed.country().id() == Some(c.id())) =>
            {
                // The national (significant) number behind the trunk prefix; countries
                // without a trunk prefix (Italy keeps its 0) are written as dialled there.
                let national = parsed.national().to_string();
                match profile.country.and_then(trunk_prefix) {
                    Some(prefix) if !national.starts_with(prefix) => format!("{prefix}{national}"),
                    _ => national,
                }
            }
            _ => format!("00{digits}"),
        },
    }
}

/// Reads `written` (`+` and digits, or digits) the way the profile says the peer writes
/// numbers. A written `+` is always E.164. Bare digits:
///
/// - `national`, `international-00`: `00…` is international, anything else national.
/// - `e164-no-plus`: the country code comes first, unless the number starts with `0`
///   (then it is read as `auto`: some carriers send national numbers anyway).
/// - `e164`, `auto`: guessed. `0…` is national (or `00…` international); otherwise, in a
///   country whose national numbers start with the trunk prefix `0` (DE, FR, GB …), the
///   digits are tried as E.164 without `+` first, elsewhere (US, IT, DK …) as a national
///   number first. The E.164 guess is kept only for a valid number.
fn read_number(written: &str, profile: &Profile) -> String {
    let country = profile.country;
    if written.starts_with('+') {
        return key(written, None);
    }
    match profile.number_format {
        NumberFormat::National | NumberFormat::International00 => key(written, country),
        NumberFormat::E164NoPlus if !written.starts_with('0') => {
            e164(&format!("+{written}"), None).unwrap_or_else(|| auto(written, country))
        }
        NumberFormat::E164NoPlus | NumberFormat::E164 | NumberFormat::Auto => {
            auto(written, country)
        }
    }
}

fn auto(digits: &str, country: Option<Country>) -> String {
    if digits.starts_with('0') {
        return key(digits, country);
    }
    let guess = || valid_e164(&format!("+{digits}"));
    match country {
        Some(country) if trunk_prefix(country) != Some("0") => e164(digits, Some(country))
            .or_else(guess)
            .unwrap_or_else(|| key(digits, Some(country))),
        _ => guess().unwrap_or_else(|| key(digits, country)),
    }
}

/// The matcher's key: E.164, or the digits when the number cannot be read.
fn key(text: &str, country: Option<Country>) -> String {
    match normalise_phone(text, country) {
        Ok(key) => key.as_str().to_owned(),
        Err(_) => text.chars().filter(char::is_ascii_digit).collect(),
    }
}

fn e164(text: &str, country: Option<Country>) -> Option<String> {
    match normalise_phone(text, country) {
        Ok(PhoneKey::E164(e164)) => Some(e164),
        _ => None,
    }
}

/// An E.164 reading that the metadata calls a valid number, for guesses.
fn valid_e164(text: &str) -> Option<String> {
    e164(text, None).filter(|e164| {
        phonenumber::parse(None, e164).is_ok_and(|number| phonenumber::is_valid(&number))
    })
}

fn trunk_prefix(country: Country) -> Option<&'static str> {
    phonenumber::metadata::DATABASE
        .by_id(country.as_str())
        .and_then(|meta| meta.national_prefix())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::profiles::Profiles;

    /// Real captured INVITEs (`tests/data/sip-traces/wireshark-identity/SOURCES.md`).
    const WIRESHARK: &[(&str, &str)] = &[
        (
            "Asterisk_ZFONE_XLITE-018",
            include_str!(
                "../../tests/data/sip-traces/wireshark-identity/Asterisk_ZFONE_XLITE-018.sip"
            ),
        ),
        (
            "FAX-Call-t38-CA-TDM-SIP-FB-1-005",
            include_str!(
                "../../tests/data/sip-traces/wireshark-identity/FAX-Call-t38-CA-TDM-SIP-FB-1-005.sip"
            ),
        ),
        (
            "MagicJack+_short_call-005",
            include_str!(
                "../../tests/data/sip-traces/wireshark-identity/MagicJack+_short_call-005.sip"
            ),
        ),
        (
            "Sample_SIP_call_with_RTP_in_G711-001",
            include_str!(
                "../../tests/data/sip-traces/wireshark-identity/Sample_SIP_call_with_RTP_in_G711-001.sip"
            ),
        ),
        (
            "Sample_SIP_call_with_RTP_in_G711-012",
            include_str!(
                "../../tests/data/sip-traces/wireshark-identity/Sample_SIP_call_with_RTP_in_G711-012.sip"
            ),
        ),
        (
            "aaa-037",
            include_str!("../../tests/data/sip-traces/wireshark-identity/aaa-037.sip"),
        ),
        (
            "aaa-069",
            include_str!("../../tests/data/sip-traces/wireshark-identity/aaa-069.sip"),
        ),
        (
            "h263-over-rtp-001",
            include_str!("../../tests/data/sip-traces/wireshark-identity/h263-over-rtp-001.sip"),
        ),
        (
            "metasploit-sip-invite-spoof-001",
            include_str!(
                "../../tests/data/sip-traces/wireshark-identity/metasploit-sip-invite-spoof-001.sip"
            ),
        ),
        (
            "wireshark_digium060515-001",
            include_str!(
                "../../tests/data/sip-traces/wireshark-identity/wireshark_digium060515-001.sip"
            ),
        ),
    ];

    /// SIPp scenarios of the Asterisk test suite (`tests/data/sip-traces/asterisk/SOURCES.md`).
    const ASTERISK: &[(&str, &str)] = &[
        (
            "anonymous_from_basic_call-alice",
            include_str!(
                "../../tests/data/sip-traces/asterisk/anonymous_from_basic_call-alice.xml"
            ),
        ),
        (
            "connected_line_allow-alice",
            include_str!("../../tests/data/sip-traces/asterisk/connected_line_allow-alice.xml"),
        ),
        (
            "diversion_request-user1",
            include_str!("../../tests/data/sip-traces/asterisk/diversion_request-user1.xml"),
        ),
        (
            "history_info_request-user1",
            include_str!("../../tests/data/sip-traces/asterisk/history_info_request-user1.xml"),
        ),
        (
            "uac-blind-transfer",
            include_str!("../../tests/data/sip-traces/asterisk/uac-blind-transfer.xml"),
        ),
    ];

    fn lookup(table: &[(&str, &'static str)], name: &str) -> &'static str {
        table
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| *text)
            .unwrap_or_else(|| panic!("no test message {name}"))
    }

    /// A captured message, byte for byte.
    fn wireshark(name: &str) -> String {
        lookup(WIRESHARK, name).to_owned()
    }

    /// The first message a SIPp scenario sends, with its `[placeholders]` filled as SIPp
    /// fills them; `[service]` (SIPp's `-s`) is the Request-URI user.
    fn sipp(name: &str, service: &str) -> String {
        let xml = lookup(ASTERISK, name);
        let send = &xml[xml.find("<send").expect("a <send>")..];
        let start = send.find("<![CDATA[").expect("CDATA") + "<![CDATA[".len();
        let end = send.find("]]>").expect("end of CDATA");
        let lines: Vec<&str> = send[start..end].lines().map(str::trim).collect();
        let text = lines.join("\n");
        let text = text.trim();
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let body = if body.is_empty() {
            String::new()
        } else {
            format!("{}\r\n", body.replace('\n', "\r\n"))
        };
        let fill = |text: &str| {
            [
                ("[service]", service),
                ("[remote_ip]", "192.0.2.10"),
                ("[remote_port]", "5060"),
                ("[local_ip]", "192.0.2.20"),
                ("[local_port]", "5062"),
                ("[media_ip]", "192.0.2.20"),
                ("[media_port]", "6000"),
                ("[local_ip_type]", "4"),
                ("[media_ip_type]", "4"),
                ("[transport]", "UDP"),
                ("[branch]", "z9hG4bK-1-0"),
                ("[call_id]", "1-4242@192.0.2.20"),
                ("[call_number]", "1"),
                ("[pid]", "4242"),
                ("[cseq]", "1"),
            ]
            .iter()
            .fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
        };
        let body = fill(&body);
        let head = fill(head)
            .replace("[len]", &body.len().to_string())
            .replace('\n', "\r\n");
        format!("{head}\r\n\r\n{body}")
    }

    /// Replaces the header `name` (first line only) or adds it after the request line.
    fn set(message: &str, name: &str, value: &str) -> String {
        let (head, body) = message.split_once("\r\n\r\n").expect("a blank line");
        let mut lines: Vec<String> = head.split("\r\n").map(str::to_owned).collect();
        let prefix = format!("{}:", name.to_ascii_lowercase());
        let line = format!("{name}: {value}");
        match lines
            .iter()
            .position(|l| l.to_ascii_lowercase().starts_with(&prefix))
        {
            Some(at) => lines[at] = line,
            None => lines.insert(1, line),
        }
        format!("{}\r\n\r\n{body}", lines.join("\r\n"))
    }

    /// Adds one more line of header `name` after the request line.
    fn add(message: &str, name: &str, value: &str) -> String {
        message.replacen("\r\n", &format!("\r\n{name}: {value}\r\n"), 1)
    }

    fn parse(message: &str) -> Request {
        Request::try_from(message).unwrap_or_else(|e| panic!("{e}: {message}"))
    }

    fn profile(name: &str) -> Profile {
        Profiles::builtin().get(name).unwrap().clone()
    }

    /// A built-in profile with a default country, as the B2BUA sets it from the number.
    fn in_country(name: &str, country: &str) -> Profile {
        Profile {
            country: Some(country.parse().unwrap()),
            ..profile(name)
        }
    }

    fn no_privacy(name: &str) -> Profile {
        Profile {
            honour_privacy: false,
            ..profile(name)
        }
    }

    fn known(number: &str, name: Option<&str>, source: CallerHeader) -> CallerId {
        CallerId {
            number: Some(number.to_owned()),
            display_name: name.map(str::to_owned),
            source,
            anonymous: false,
        }
    }

    fn unnamed(name: Option<&str>, source: CallerHeader) -> CallerId {
        CallerId {
            number: None,
            display_name: name.map(str::to_owned),
            source,
            anonymous: false,
        }
    }

    fn withheld(source: CallerHeader) -> CallerId {
        CallerId {
            number: None,
            display_name: None,
            source,
            anonymous: true,
        }
    }

    use CallerHeader::{From as FromHeader, PAssertedIdentity as Pai, RemotePartyId as Rpid};

    /// One test per row: `name: message, profile => caller, called;`.
    macro_rules! identity_cases {
        ($($name:ident: $message:expr, $profile:expr => $caller:expr, $called:expr;)*) => {$(
            #[test]
            fn $name() {
                let message: String = $message;
                let request = parse(&message);
                let profile: Profile = $profile;
                assert_eq!(caller(&request, &profile), $caller, "caller, {}", profile.name);
                assert_eq!(
                    called(&request, &profile).as_deref(),
                    $called,
                    "called, {}",
                    profile.name
                );
            }
        )*};
    }

    // Real captured messages, unchanged.
    identity_cases! {
        extension_in_from_is_kept_as_digits:
            wireshark("Asterisk_ZFONE_XLITE-018"), in_country("generic", "DE")
            => known("10009", Some("Philippec2"), FromHeader), Some("10008");
        anonymous_invalid_from_is_anonymous:
            wireshark("wireshark_digium060515-001"), profile("asterisk")
            => withheld(FromHeader), Some("1234");
        unavailable_caller_is_anonymous_and_called_number_uses_the_country:
            wireshark("FAX-Call-t38-CA-TDM-SIP-FB-1-005"), in_country("generic", "IT")
            => withheld(FromHeader), Some("+39061963177");
        account_name_in_from_is_not_a_number:
            wireshark("MagicJack+_short_call-005"), in_country("generic", "US")
            => unnamed(None, FromHeader), Some("+19055551212");
        user_phone_from_is_read_in_the_country:
            wireshark("Sample_SIP_call_with_RTP_in_G711-012"), in_country("generic", "MX")
            => known("+525514540002", Some("Ivan Alizade"), FromHeader), None;
        digits_are_not_guessed_into_a_country_where_they_are_invalid:
            wireshark("Sample_SIP_call_with_RTP_in_G711-012"), profile("generic")
            => known("5514540002", Some("Ivan Alizade"), FromHeader), None;
        from_without_user_part_names_no_caller:
            wireshark("Sample_SIP_call_with_RTP_in_G711-001"), profile("generic")
            => unnamed(None, FromHeader), None;
        international_00_is_read_without_a_country:
            wireshark("aaa-037"), profile("generic")
            => unnamed(Some("arik"), FromHeader), Some("+97239287044");
        numbers_of_a_country_without_trunk_prefix_are_national:
            wireshark("aaa-069"), in_country("generic", "DK")
            => known("+4535104723", Some("arik"), FromHeader), Some("+4535104724");
        hostile_empty_user_parts_name_nobody:
            wireshark("metasploit-sip-invite-spoof-001"), profile("generic")
            => unnamed(Some("testtest"), FromHeader), None;
        sip_address_with_a_name_is_not_a_number:
            wireshark("h263-over-rtp-001"), profile("generic")
            => unnamed(Some("Matthew Hodgson"), FromHeader), None;
    }

    // Asterisk test-suite scenarios; the names in them are replaced by numbers.
    identity_cases! {
        diversion_gives_original_called_number:
            sipp("diversion_request-user1", "")
                .replace("amenhotep@", "+4930901820@")
                .replace("user2@", "+4930901821@"),
            profile("asterisk")
            => unnamed(Some("user1"), FromHeader), Some("+4930901820");
        diversion_is_not_used_when_the_profile_does_not_list_it:
            sipp("diversion_request-user1", "")
                .replace("amenhotep@", "+4930901820@")
                .replace("user2@", "+4930901821@"),
            profile("generic")
            => unnamed(Some("user1"), FromHeader), Some("+4930901821");
        history_info_gives_original_called_number:
            sipp("history_info_request-user1", "")
                .replace("amenhotep@", "+4930901820@")
                .replace("user2@", "+4930901821@"),
            profile("asterisk")
            => unnamed(Some("user1"), FromHeader), Some("+4930901820");
        rpid_of_the_called_party_is_not_the_caller:
            sipp("connected_line_allow-alice", "").replace("alice@127.0.0.1", "+4930901820@127.0.0.1"),
            profile("asterisk")
            => unnamed(Some("Alice"), FromHeader), None;
        rpid_of_the_calling_party_wins_over_from:
            sipp("connected_line_allow-alice", "")
                .replace("alice@127.0.0.1", "+4930901820@127.0.0.1")
                .replace("party=called", "party=calling"),
            profile("asterisk")
            => known("+4930901820", Some("Alice"), Rpid), None;
        // What Asterisk sends with callerid_privacy=prohib, send_pai and send_rpid
        // (anonymous_from_basic_call: bob.xml checks these From, PAI and RPID values).
        privacy_id_makes_caller_anonymous:
            asterisk_prohib("+4930901820"), profile("asterisk")
            => withheld(Pai), None;
        privacy_is_ignored_when_the_profile_says_so:
            asterisk_prohib("+4930901820"), no_privacy("asterisk")
            => known("+4930901820", Some("Alice"), Pai), None;
        rpid_privacy_full_withholds_the_caller:
            set(&asterisk_prohib("+4930901820"), "P-Asserted-Identity", "<sip:alice@127.0.0.1>")
                .replace("Privacy: id\r\n", ""),
            profile("asterisk")
            => withheld(Rpid), None;
        anonymous_from_gives_way_to_the_asserted_identity:
            asterisk_prohib("+4930901820").replace("Privacy: id\r\n", ""),
            profile("asterisk")
            => known("+4930901820", Some("Alice"), Pai), None;
    }

    // What Asterisk sends to an endpoint with user_eq_phone=yes, send_pai and send_rpid
    // (user_eq_phone: uas.xml checks user=phone in R-URI, From, To, PAI and RPID;
    // extensions.conf sets CALLERID(num)=5550113, CALLERID(name)=Homer and dials
    // +12568675309).
    identity_cases! {
        user_eq_phone_numbers_from_asterisk:
            carrier("+12568675309", &[
                ("From", "\"Homer\" <sip:5550113@127.0.0.1;user=phone>;tag=1"),
                ("To", "<sip:+12568675309@127.0.0.1;user=phone>"),
                ("P-Asserted-Identity", "\"Homer\" <sip:5550113@127.0.0.1;user=phone>"),
                ("Remote-Party-ID", "\"Homer\" <sip:5550113@127.0.0.1;user=phone>;party=calling;privacy=off;screen=no"),
            ]),
            in_country("asterisk", "US")
            => known("5550113", Some("Homer"), Pai), Some("+12568675309");
    }

    /// Asterisk's INVITE for a caller with `callerid_privacy=prohib`, with `number` for
    /// Alice's name.
    fn asterisk_prohib(number: &str) -> String {
        let message = sipp("anonymous_from_basic_call-alice", "");
        let message = set(
            &message,
            "From",
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=4242SIPpTag001",
        );
        let message = add(
            &message,
            "P-Asserted-Identity",
            &format!("\"Alice\" <sip:{number}@127.0.0.1>"),
        );
        let message = add(
            &message,
            "Remote-Party-ID",
            &format!("\"Alice\" <sip:{number}@127.0.0.1>;party=calling;privacy=full;screen=no"),
        );
        add(&message, "Privacy", "id")
    }

    /// A SIPp UAC INVITE to `service`, the base for what carriers send.
    fn carrier(service: &str, headers: &[(&str, &str)]) -> String {
        headers.iter().fold(
            sipp("uac-blind-transfer", service),
            |message, (name, value)| set(&message, name, value),
        )
    }

    // Carriers and PBXs as their documentation describes them (docs/sip-profiles.md).
    identity_cases! {
        pai_wins_over_from_for_telekom:
            carrier("+4922899990", &[
                ("To", "<sip:+4922899990@telekom.de;user=phone>"),
                ("From", "\"Erika Mustermann\" <sip:+498912345678@telekom.de;user=phone>;tag=1"),
                ("P-Asserted-Identity", "<sip:+4930901820@telekom.de;user=phone>"),
            ]),
            profile("telekom")
            => known("+4930901820", Some("Erika Mustermann"), Pai), Some("+4922899990");
        tel_uri_with_visual_separators_in_pai:
            carrier("+4922899990", &[("P-Asserted-Identity", "<tel:+49-30-901820>")]),
            profile("telekom")
            => known("+4930901820", Some("sipp"), Pai), Some("+4922899990");
        telekom_privacy_id_withholds_the_asserted_caller:
            carrier("+4922899990", &[
                ("From", "<sip:anonymous@anonymous.invalid>;tag=1"),
                ("P-Asserted-Identity", "<sip:+4930901820@telekom.de;user=phone>"),
                ("Privacy", "id"),
            ]),
            profile("telekom")
            => withheld(Pai), Some("+4922899990");
        sipgate_e164_without_plus:
            carrier("1234567t0", &[
                ("From", "\"4930901820\" <sip:4930901820@sipgate.de>;tag=1"),
                ("To", "<sip:4922899990@sipgate.de>"),
            ]),
            profile("sipgate")
            => known("+4930901820", None, FromHeader), Some("+4922899990");
        fritzbox_national_numbers_use_the_country:
            carrier("leadline", &[
                ("From", "<sip:030901820@fritz.box>;tag=1"),
                ("To", "<sip:022899990@fritz.box>"),
            ]),
            profile("fritzbox")
            => known("+4930901820", None, FromHeader), Some("+4922899990");
        fritzbox_foreign_caller_with_00:
            carrier("leadline", &[("From", "\"Anna\" <sip:0041441234567@fritz.box>;tag=1")]),
            profile("fritzbox")
            => known("+41441234567", Some("Anna"), FromHeader), None;
        // Twilio's own example INVITE (glossary "SIP INVITEs"), Diversion included.
        twilio_e164_with_plus_and_diversion_left_alone:
            carrier("+14155552222", &[
                ("To", "\"Bob\" <sip:+14155552222@example.pstn.twilio.com>"),
                ("From", "\"Alice\" <sip:+14155551111@example.pstn.twilio.com>;tag=1"),
                ("Diversion", "\"Sales\" <sip:+14155550000@example.pstn.twilio.com>"),
                ("P-Asserted-Identity", "\"Alice\" <sip:+14155551111@example.pstn.twilio.com>"),
            ]),
            profile("twilio-elastic")
            => known("+14155551111", Some("Alice"), Pai), Some("+14155552222");
        threecx_rpid_wins_over_the_auth_id_in_from:
            carrier("+4922899990", &[
                ("From", "\"Sales 101\" <sip:a7Hk2x@pbx.example>;tag=1"),
                ("Remote-Party-ID", "\"Sales 101\" <sip:+4930901820@pbx.example>;party=calling;screen=yes;privacy=off"),
            ]),
            profile("3cx")
            => known("+4930901820", Some("Sales 101"), Rpid), Some("+4922899990");
    }

    identity_cases! {
        rpid_privacy_withholds_a_number_another_header_still_shows:
            carrier("+4922899990", &[
                ("From", "\"Sales 101\" <sip:+4930901820@pbx.example>;tag=1"),
                ("Remote-Party-ID", "<sip:+4930901820@pbx.example>;party=calling;privacy=full"),
            ]),
            profile("3cx")
            => withheld(Rpid), Some("+4922899990");
        rpid_privacy_name_hides_only_the_name:
            carrier("+4922899990", &[
                ("From", "\"Sales 101\" <sip:a7Hk2x@pbx.example>;tag=1"),
                ("Remote-Party-ID", "\"Sales\" <sip:+4930901820@pbx.example>;party=calling;privacy=name"),
            ]),
            profile("3cx")
            => known("+4930901820", None, Rpid), Some("+4922899990");
        privacy_id_without_identity_headers_is_still_anonymous:
            add(&carrier("+4922899990", &[("From", "<sip:192.0.2.20>;tag=1")]), "Privacy", "id"),
            profile("generic")
            => withheld(FromHeader), Some("+4922899990");
    }

    fn verstat_of(headers: &[(&str, &str)], profile: &Profile) -> Verification {
        verification(&parse(&carrier("+14155552222", headers)), profile)
    }

    #[test]
    fn t6_verstat_is_read_where_carriers_put_it() {
        let generic = profile("generic");
        // ATIS-1000074 §5.3.1: a parameter of the user part of the asserted SIP URI.
        let in_user = verstat_of(
            &[(
                "P-Asserted-Identity",
                "<sip:+12155551212;verstat=TN-Validation-Passed@ims.example.net;user=phone>",
            )],
            &generic,
        );
        assert_eq!(in_user.verstat, Some(Verstat::Passed));
        // A tel URI parameter, as US carriers and Twilio send it.
        let in_tel = verstat_of(
            &[(
                "P-Asserted-Identity",
                "<tel:+12155551212;verstat=TN-Validation-Failed>",
            )],
            &generic,
        );
        assert_eq!(in_tel.verstat, Some(Verstat::Failed));
        // A URI parameter of From, for networks without P-Asserted-Identity, in lower case.
        let in_from = verstat_of(
            &[(
                "From",
                "\"Bob\" <sip:+12155551212@gw.example.com;user=phone;verstat=no-tn-validation>;tag=9",
            )],
            &generic,
        );
        assert_eq!(in_from.verstat, Some(Verstat::NoValidation));
        // The asserted identity comes first in the profile's order.
        let both = verstat_of(
            &[
                (
                    "From",
                    "<sip:+12155551212@gw.example.com;verstat=TN-Validation-Passed>;tag=9",
                ),
                (
                    "P-Asserted-Identity",
                    "<sip:+12155551212@ims.example.net;verstat=TN-Validation-Failed>",
                ),
            ],
            &generic,
        );
        assert_eq!(both.verstat, Some(Verstat::Failed));
    }

    #[test]
    fn t6_no_or_unknown_verstat_and_the_identity_header() {
        let generic = profile("generic");
        let none = verstat_of(&[], &generic);
        assert_eq!(none.verstat, None);
        assert!(!none.identity);
        // RFC 8224 §4: the PASSporT the originating carrier signed; its verdict travels
        // in verstat, which this terminating network did not add.
        let signed = verstat_of(
            &[
                (
                    "Identity",
                    "eyJhbGciOiJFUzI1NiIsInR5cCI6InBhc3Nwb3J0In0.eyJhdHRlc3QiOiJBIn0.c2ln;\
                     info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken",
                ),
                (
                    "P-Asserted-Identity",
                    "<sip:+12155551212@ims.example.net;xverstat=TN-Validation-Failed>",
                ),
            ],
            &generic,
        );
        assert_eq!(signed.verstat, None);
        assert!(signed.identity);
        let garbled = verstat_of(
            &[("P-Asserted-Identity", "<tel:+12155551212;verstat=Maybe>")],
            &generic,
        );
        assert_eq!(garbled.verstat, None);
        // A profile that reads no verstat ignores a From a caller could write themselves.
        let not_read = Profile {
            verstat_headers: Vec::new(),
            ..generic
        };
        let ignored = verstat_of(
            &[(
                "From",
                "<sip:+12155551212@gw.example.com;verstat=TN-Validation-Failed>;tag=9",
            )],
            &not_read,
        );
        assert_eq!(ignored.verstat, None);
    }

    #[test]
    fn called_party_keeps_both_numbers() {
        let message = carrier(
            "+14155552222",
            &[(
                "Diversion",
                "<sip:+14155550000@t.example>;reason=unconditional;counter=1",
            )],
        );
        let party = called_party(&parse(&message), &profile("twilio-elastic"));
        assert_eq!(
            party,
            CalledParty {
                dialled: Some("+14155552222".into()),
                original: Some("+14155550000".into()),
            }
        );
    }

    #[test]
    fn the_oldest_diversion_entry_is_the_original_number() {
        // RFC 5806: each diverting proxy adds its entry on top.
        let message = carrier("+4930333", &[]);
        let message = add(
            &message,
            "Diversion",
            "<sip:+4930901822@b>;reason=no-answer;counter=1",
        );
        let message = add(
            &message,
            "Diversion",
            "<sip:+4930901821@a>;reason=user-busy, <sip:voicemail@a>;reason=unknown",
        );
        let request = parse(&message);
        let headers: Vec<_> = values(&request, |h| match h {
            Header::Diversion(v) => Some(v.value()),
            _ => None,
        })
        .collect();
        assert_eq!(headers.len(), 3, "{headers:?}");
        assert_eq!(
            called(&request, &profile("asterisk")).as_deref(),
            Some("+4930901822")
        );
    }

    #[test]
    fn write_number_follows_the_number_format_and_reads_back() {
        use NumberFormat::*;
        for (format, country, expected) in [
            (E164, None, "+4930901820"),
            (Auto, None, "+4930901820"),
            (E164NoPlus, None, "4930901820"),
            (International00, None, "004930901820"),
            (National, Some("DE"), "030901820"),
            (National, Some("AT"), "004930901820"),
        ] {
            let profile = Profile {
                number_format: format,
                country: country.map(|c| c.parse().unwrap()),
                ..profile("generic")
            };
            let written = write_number("+4930901820", &profile);
            assert_eq!(written, expected, "{format:?} {country:?}");
            assert_eq!(read_number(&written, &profile), "+4930901820", "{format:?}");
        }
        assert_eq!(write_number("101", &profile("generic")), "101");
    }

    #[test]
    fn read_number_follows_the_number_format() {
        use NumberFormat::*;
        let read = |written: &str, format, country: Option<&str>| {
            let profile = Profile {
                number_format: format,
                country: country.map(|c| c.parse().unwrap()),
                ..profile("generic")
            };
            read_number(written, &profile)
        };
        let de = Some("DE");
        for (written, format, country, expected) in [
            ("+4930901820", National, de, "+4930901820"),
            ("+4930901820", E164NoPlus, None, "+4930901820"),
            ("4930901820", E164NoPlus, de, "+4930901820"),
            ("030901820", E164NoPlus, de, "+4930901820"),
            ("101", E164NoPlus, de, "101"),
            ("030901820", National, de, "+4930901820"),
            ("0041441234567", National, de, "+41441234567"),
            ("004930901820", International00, de, "+4930901820"),
            ("030901820", International00, de, "+4930901820"),
            ("004930901820", International00, None, "+4930901820"),
            ("4930901820", Auto, de, "+4930901820"),
            ("030901820", Auto, de, "+4930901820"),
            ("101", Auto, de, "101"),
            ("9055551212", Auto, Some("US"), "+19055551212"),
            ("19055551212", Auto, Some("US"), "+19055551212"),
            ("4930901820", Auto, Some("US"), "+4930901820"),
            ("061963177", Auto, Some("IT"), "+39061963177"),
            ("4930901820", Auto, None, "+4930901820"),
            ("030901820", Auto, None, "030901820"),
            ("030901820", E164, de, "+4930901820"),
        ] {
            assert_eq!(
                read(written, format, country),
                expected,
                "{written} as {format} in {country:?}"
            );
        }
    }

    #[test]
    fn user_parts_are_classified() {
        let user = |text: &str| classify(&NameAddr::parse(text).unwrap().uri);
        let number = |text: &str| User::Number(text.to_owned());
        assert_eq!(user("<sip:%2B4930901820@x>"), number("+4930901820"));
        assert_eq!(user("<sips:030-901-820@x>"), number("030901820"));
        assert_eq!(
            user("<sip:+1-212-555-1212;isub=12@gw.com;user=phone>"),
            number("+12125551212")
        );
        assert_eq!(
            user("<tel:+1-212-555-1212;phone-context=+1>"),
            number("+12125551212")
        );
        assert_eq!(
            user("<sip:(030)%20901820@x;user=phone>"),
            number("030901820")
        );
        assert_eq!(user("<sip:Anonymous@anonymous.invalid>"), User::Anonymous);
        assert_eq!(user("<sip:4930901820@anonymous.invalid>"), User::Anonymous);
        assert_eq!(user("<sip:restricted@carrier>"), User::Anonymous);
        assert_eq!(user("<sip:1234567t0@sipgate.de>"), User::Other);
        assert_eq!(user("<sip:@127.0.0.1>"), User::Other);
        assert_eq!(user("<sip:192.0.2.1>"), User::Other);
        assert_eq!(user("<mailto:a@b>"), User::Other);
        assert_eq!(user("<sip:123456789012345678901@x>"), User::Other);
        assert_eq!(user("<sip:*31#4930901820@x>"), User::Other);
    }

    /// rsipstack puts a telephone-subscriber with parameters into the host;
    /// [`split_subscriber`] undoes that. If this fails after an upgrade, the parser reads
    /// such user parts itself and the workaround may go.
    #[test]
    fn canary_rsipstack_splits_subscriber_parameters_into_the_host() {
        let uri = NameAddr::parse("<sip:+12125551212;isub=12@gw.com;user=phone>")
            .unwrap()
            .uri;
        assert!(uri.auth.is_none());
        assert_eq!(uri.host_with_port.host.to_string(), "+12125551212");
    }

    #[test]
    fn display_names_are_unquoted_and_placeholders_dropped() {
        assert_eq!(
            clean_display_name(Some("Jo \\\"JJ\\\" Doe")).as_deref(),
            Some("Jo \"JJ\" Doe")
        );
        assert_eq!(
            clean_display_name(Some(" Müller, Anna ")).as_deref(),
            Some("Müller, Anna")
        );
        assert_eq!(clean_display_name(Some("+49 30 901820")), None);
        assert_eq!(clean_display_name(Some("unknown")), None);
        assert_eq!(clean_display_name(Some("ANONYMOUS")), None);
        assert_eq!(clean_display_name(Some("")), None);
        assert_eq!(clean_display_name(None), None);
    }

    #[test]
    fn entries_split_at_commas_outside_quotes_and_brackets() {
        assert_eq!(
            split_entries("\"Doe, Jo\" <sip:1@a;x=\"a,b\">, <tel:+4930901820>,"),
            ["\"Doe, Jo\" <sip:1@a;x=\"a,b\">", " <tel:+4930901820>"]
        );
        assert_eq!(
            split_entries("\"a\\\",b\" <sip:1@a>"),
            ["\"a\\\",b\" <sip:1@a>"]
        );
    }

    #[test]
    fn every_builtin_profile_reads_every_message() {
        let profiles = Profiles::builtin();
        for (name, text) in WIRESHARK {
            let request = parse(text);
            for profile in profiles.names() {
                let profile = profiles.get(profile).unwrap();
                let id = caller(&request, profile);
                assert!(
                    !(id.anonymous && id.number.is_some()),
                    "{name} {}",
                    profile.name
                );
                let _ = called_party(&request, profile);
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use rsipstack::sip::headers::untyped;
        use rsipstack::sip::uri::Auth;

        fn user() -> impl Strategy<Value = String> {
            prop_oneof![
                "\\PC{0,24}",
                "[+0-9 ().-]{0,24}",
                "(anonymous|unknown|Anonymous|%2B49|%|%zz|\\+)[0-9;=a-z@]{0,12}",
            ]
        }

        fn name_addr() -> impl Strategy<Value = String> {
            (
                prop_oneof![
                    Just(String::new()),
                    "\"[^\"]{0,12}\" ",
                    "[a-zA-Z\\\\\" ]{0,8}"
                ],
                prop::sample::select(vec!["sip:", "sips:", "tel:", "", "mailto:", "SIP:"]),
                user(),
                prop::sample::select(vec![
                    "@example.com",
                    "@anonymous.invalid",
                    "@[::1]:5060",
                    "",
                    "@",
                ]),
                prop::sample::select(vec![
                    "",
                    ";user=phone",
                    ";isub=1@x",
                    ";phone-context=+49@h",
                    ";party=called",
                    ";privacy=full",
                    ";privacy=name",
                    ";index=1.1",
                    ";index",
                    ";reason=busy;counter=x",
                ]),
                prop::bool::ANY,
                prop::sample::select(vec![
                    "",
                    ";tag=1",
                    ", <tel:+4930901820>",
                    ",",
                    ";party=calling",
                ]),
            )
                .prop_map(|(name, scheme, user, host, uri_params, angle, tail)| {
                    let uri = format!("{scheme}{user}{host}{uri_params}");
                    if angle {
                        format!("{name}<{uri}>{tail}")
                    } else {
                        format!("{name}{uri}{tail}")
                    }
                })
        }

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![3 => name_addr(), 1 => "\\PC{0,60}"]
        }

        fn base() -> Request {
            parse(&wireshark("Asterisk_ZFONE_XLITE-018"))
        }

        proptest! {
            #[test]
            fn caller_never_panics_on_random_header_values(
                from in value(),
                to in value(),
                pai in prop::collection::vec(value(), 0..3),
                ppi in prop::option::of(value()),
                rpid in prop::collection::vec(value(), 0..3),
                diversion in prop::collection::vec(value(), 0..3),
                history in prop::collection::vec(value(), 0..3),
                privacy in prop::option::of("(id|none|user|header|\\PC{0,8})([;, ]id)?"),
                request_user in prop::option::of(user()),
                profile in prop::sample::select(Profiles::builtin().names().iter().map(|s| s.to_string()).collect::<Vec<_>>()),
                honour_privacy in prop::bool::ANY,
            ) {
                let mut request = base();
                request.headers.0.retain(|h| !matches!(h, Header::From(_) | Header::To(_)));
                request.headers.push(Header::From(untyped::From::new(from)));
                request.headers.push(Header::To(untyped::To::new(to)));
                for value in pai {
                    request.headers.push(Header::PAssertedIdentity(untyped::PAssertedIdentity::new(value)));
                }
                if let Some(value) = ppi {
                    request.headers.push(Header::PPreferredIdentity(untyped::PPreferredIdentity::new(value)));
                }
                for value in rpid {
                    request.headers.push(Header::Other("Remote-Party-ID".into(), value));
                }
                for value in diversion {
                    request.headers.push(Header::Diversion(untyped::Diversion::new(value)));
                }
                for value in history {
                    request.headers.push(Header::HistoryInfo(untyped::HistoryInfo::new(value)));
                }
                if let Some(value) = privacy {
                    request.headers.push(Header::Privacy(untyped::Privacy::new(value)));
                }
                request.uri.auth = request_user.map(|user| Auth { user, password: None });

                let mut profile = Profiles::builtin().get(&profile).unwrap().clone();
                profile.honour_privacy = honour_privacy;
                profile.caller_headers = vec![
                    CallerHeader::PPreferredIdentity,
                    CallerHeader::PAssertedIdentity,
                    CallerHeader::RemotePartyId,
                    CallerHeader::From,
                    CallerHeader::Diversion,
                ];
                let id = caller(&request, &profile);
                prop_assert!(!(id.anonymous && id.number.is_some()));
                for number in [id.number, called(&request, &profile)].into_iter().flatten() {
                    let digits = number.strip_prefix('+').unwrap_or(&number);
                    prop_assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()), "{}", number);
                }
            }
        }
    }
}
