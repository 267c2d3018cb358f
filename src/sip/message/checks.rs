//! The checks a proxy makes before trusting a message, in the order a UAS makes them
//! (RFC 3261 §8.2): start line, required header fields, their syntax; then the method
//! (501), the CSeq method, the Request-URI scheme (416). Each check also yields the
//! canonical text of what it read, which is what rsip gets to parse.

use std::borrow::Cow;

use super::Rejection;
use super::grammar::{self, NameAddr, Uri, is_token, is_ws, text};
use super::scan::{Field, excerpt};
use rsipstack::sip::Method;

/// A start line that passed its checks.
#[derive(Debug)]
pub(super) enum StartLine<'a> {
    Request {
        method: &'a [u8],
        uri_text: &'a [u8],
        uri: Uri<'a>,
    },
    Response {
        code: u16,
        reason: String,
    },
}

impl StartLine<'_> {
    /// Appends `METHOD URI SIP/2.0` / `SIP/2.0 CODE reason` with single spaces.
    pub(super) fn write_canonical(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = match self {
            StartLine::Request {
                method, uri_text, ..
            } => write!(
                out,
                "{} {} SIP/2.0",
                String::from_utf8_lossy(method),
                String::from_utf8_lossy(uri_text)
            ),
            StartLine::Response { code, reason } => write!(out, "SIP/2.0 {code} {reason}"),
        };
    }
}

/// `SIP-Version`: Ok for SIP/2.0 (case-insensitive, §7.1), 505 for another well-formed
/// version (RFC 4475 §3.1.2.16 "badvers"), 400 for anything else.
fn version(v: &[u8]) -> Result<(), Rejection> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        return Ok(());
    }
    let well_formed = v.len() > 4
        && v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
        && v.get(4..).is_some_and(|n| {
            let mut parts = n.split(|&b| b == b'.');
            let major = parts.next().is_some_and(grammar::is_digits);
            let minor = parts.next().is_some_and(grammar::is_digits);
            major && minor && parts.next().is_none()
        });
    if well_formed {
        Err(Rejection::version_not_supported(text(v)))
    } else {
        Err(Rejection::bad_request(format!(
            "malformed SIP-Version {}",
            excerpt(v)
        )))
    }
}

/// Request-Line (`Method SP Request-URI SP SIP-Version`) or Status-Line.
///
/// Runs of SP/HT between the elements and at the end of the line are tolerated: RFC 4475
/// §3.1.2.9/§3.1.2.10 ("lwsstart", "trws") allow a liberal element to, Sofia-SIP's
/// test20/test23 are classed good, and we never forward the line as received.
pub(super) fn start_line(line: &[u8]) -> Result<StartLine<'_>, Rejection> {
    if line.len() >= 4
        && line
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        return status_line(line);
    }
    let parts: Vec<&[u8]> = line
        .split(|&b| is_ws(b))
        .filter(|p| !p.is_empty())
        .collect();
    let [method, uri_text, v] = parts[..] else {
        let looks_versioned = parts.last().is_some_and(|p| {
            p.len() > 4 && p.get(..4).is_some_and(|s| s.eq_ignore_ascii_case(b"SIP/"))
        });
        return Err(Rejection::bad_request(
            if parts.len() > 3 && looks_versioned {
                "Request-URI contains whitespace".to_string()
            } else if parts.len() < 3 && !looks_versioned {
                "Request-Line has no SIP-Version".to_string()
            } else {
                format!("malformed Request-Line {}", excerpt(line))
            },
        ));
    };
    version(v)?;
    if !is_token(method) {
        return Err(Rejection::bad_request(format!(
            "method {} is not a token",
            excerpt(method)
        )));
    }
    if uri_text.first() == Some(&b'<') {
        // RFC 4475 §3.1.2.7 "ltgtruri".
        return Err(Rejection::bad_request("Request-URI enclosed in <>"));
    }
    let uri = grammar::uri(uri_text)
        .map_err(|why| Rejection::bad_request(format!("malformed Request-URI: {why}")))?;
    if uri.has_headers() {
        // RFC 3261 §19.1.1 Table 1; RFC 4475 §3.1.2.11 "escruri".
        return Err(Rejection::bad_request(
            "Request-URI carries URI headers ('?')",
        ));
    }
    Ok(StartLine::Request {
        method,
        uri_text,
        uri,
    })
}

/// `Status-Line = SIP-Version SP Status-Code SP Reason-Phrase`; the code must be
/// 100-699 (RFC 4475 §3.1.2.19 "bigcode": 4294967301).
fn status_line(line: &[u8]) -> Result<StartLine<'_>, Rejection> {
    let v_end = line.iter().position(|&b| is_ws(b)).unwrap_or(line.len());
    version(line.get(..v_end).unwrap_or(line))?;
    let rest = line.get(v_end..).unwrap_or(&[]).trim_ascii_start();
    let code_end = rest.iter().position(|&b| is_ws(b)).unwrap_or(rest.len());
    let code = rest.get(..code_end).unwrap_or(&[]);
    let reason = rest.get(code_end..).unwrap_or(&[]).trim_ascii();
    let code = match grammar::bounded_number(code, 699) {
        Some(n) if code.len() == 3 && n >= 100 => u16::try_from(n).unwrap_or(0),
        _ => {
            return Err(Rejection::bad_request(format!(
                "status code {} is not 100-699",
                excerpt(code)
            )));
        }
    };
    Ok(StartLine::Response {
        code,
        reason: String::from_utf8_lossy(reason).into_owned(),
    })
}

/// Header fields every request and response carries (RFC 3261 §8.1.1).
const REQUIRED: [&str; 5] = ["Via", "From", "To", "Call-ID", "CSeq"];

/// Header fields that may appear once (RFC 4475 §3.3.8 "multi01").
const SINGLE: [&str; 6] = ["From", "To", "Call-ID", "CSeq", "Max-Forwards", "Expires"];

/// What the header checks found, for the checks that follow them.
#[derive(Debug)]
pub(super) struct Checked<'a> {
    /// The fields with the values of checked headers in canonical form.
    pub fields: Vec<Field<'a>>,
    pub cseq_method: String,
}

/// Presence, multiplicity and syntax of the header fields a proxy relies on. Takes the
/// fields and gives them back with the checked values in canonical form; the others are
/// passed through untouched (not copied).
pub(super) fn headers(mut fields: Vec<Field<'_>>) -> Result<Checked<'_>, Rejection> {
    // One pass for the counts of REQUIRED and SINGLE (Via is in both lists' order below).
    let mut required = [0usize; REQUIRED.len()];
    let mut single = [0usize; SINGLE.len()];
    for field in &fields {
        if let Some(i) = REQUIRED.iter().position(|n| field.is(n)) {
            required[i] += 1;
        }
        if let Some(i) = SINGLE.iter().position(|n| field.is(n)) {
            single[i] += 1;
        }
    }
    let missing: Vec<&str> = REQUIRED
        .into_iter()
        .zip(required)
        .filter(|(_, n)| *n == 0)
        .map(|(name, _)| name)
        .collect();
    if !missing.is_empty() {
        return Err(Rejection::bad_request(format!(
            "missing {}",
            missing.join(", ")
        )));
    }
    if let Some((name, _)) = SINGLE.into_iter().zip(single).find(|(_, n)| *n > 1) {
        return Err(Rejection::bad_request(format!("multiple {name} headers")));
    }
    let mut cseq_method = String::new();
    for field in &mut fields {
        let canonical = canonical_value(field, &mut cseq_method)
            .map_err(|why| Rejection::bad_request(format!("malformed {}: {why}", field.name)))?;
        if let Some(value) = canonical {
            field.value = Cow::Owned(value);
        }
    }
    Ok(Checked {
        fields,
        cseq_method,
    })
}

/// The canonical value of a checked header; None when the value stays as written.
fn canonical_value(
    field: &Field,
    cseq_method: &mut String,
) -> Result<Option<String>, grammar::Why> {
    let v = field.value.as_bytes();
    let name = &*field.name;
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    if is("Via") {
        let list = grammar::via_list(v)?;
        return Ok(Some(
            list.iter()
                .map(|p| p.canonical())
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    if is("From") || is("To") {
        let na = grammar::single_name_addr(v)?;
        representable(&na)?;
        return Ok(Some(na.canonical()));
    }
    if is("Contact") {
        return Ok(Some(match grammar::contact_list(v)? {
            None => "*".to_string(),
            Some(list) => {
                for na in &list {
                    representable(na)?;
                }
                list.iter()
                    .map(NameAddr::canonical)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        }));
    }
    if is("Call-ID") {
        grammar::call_id(v)?;
        return Ok(None);
    }
    if is("CSeq") {
        let (n, method) = grammar::cseq(v)?;
        *cseq_method = text(method);
        return Ok(Some(format!("{n} {}", text(method))));
    }
    if is("Max-Forwards") {
        // RFC 3261 §20.22: 0-255 (RFC 4475 §3.1.2.4 "scalar02" sends 300).
        let n = grammar::bounded_number(v, 255)
            .ok_or_else(|| format!("{} is not 0-255", excerpt(v)))?;
        return Ok(Some(n.to_string()));
    }
    if is("Expires") {
        grammar::expires(v)?;
        return Ok(None);
    }
    if is("Content-Length") {
        // Checked by the framing already; strip leading zeros.
        let n = grammar::bounded_number(v, u64::MAX).unwrap_or(0);
        return Ok(Some(n.to_string()));
    }
    Ok(None)
}

/// rsip finds a name-addr's URI at the first `<`, even inside the quoted display name, so
/// `"<sip:victim@x>" <sip:attacker@y>` would read as sip:victim. A display name with `<`
/// is legal but too rare to be worth that risk.
fn representable(na: &NameAddr<'_>) -> Result<(), grammar::Why> {
    if na.display.is_some_and(|d| d.contains(&b'<')) {
        return Err("display name contains '<', which our SIP library misreads".into());
    }
    Ok(())
}

/// Methods rsip can represent, compared case-sensitively (RFC 3261 §7.1: "The method is
/// case-sensitive"; rsip would read `invite` as INVITE). Every method rsip knows is
/// upper case, so a case-insensitive match of bytes with no lower-case letter is exact.
pub(super) fn known_method(method: &[u8]) -> Option<Method> {
    if method.iter().any(u8::is_ascii_lowercase) {
        return None;
    }
    Method::try_from(method).ok()
}
