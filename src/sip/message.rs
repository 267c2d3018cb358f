//! The gateway's entry point for SIP bytes from the network.
//!
//! rsip's parser (`rsipstack::sip`) is lenient where a proxy cannot be: it accepts most
//! of RFC 4475's invalid messages, cannot represent unknown methods and needs CRLF. This
//! module owns the checks a proxy makes before trusting a message (RFC 3261 §8.2, §16.3,
//! §18.3), the answer to what it refuses, and TCP framing. It hands rsip a canonical form
//! of what it checked, so rsip's typed headers then read what the wire said.
//!
//! Pure: no I/O, no clock, no randomness, and no panic on any input (fuzzed, see
//! `fuzz/`). It must not decide routing or policy (Max-Forwards 0, Require, unknown
//! Content-Type are for the layers above), and it never forwards the bytes it was given.
//! The checks and every deviation from rsip are listed in `docs/sip-parsing.md`.

mod checks;
mod framing;
mod grammar;
mod respond;
mod scan;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use checks::StartLine;
use grammar::{Host, SipUri, Uri};
use rsipstack::sip::prelude::*;
use rsipstack::sip::{self as rsip, SipMessage};
use scan::{Field, Mode};

/// Bounds on what a peer may make us read (ARCHITECTURE: every network input is bounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole message, start line to the end of the body.
    pub max_message: usize,
    /// Header fields (after unfolding; a comma list counts once).
    pub max_headers: usize,
    /// One header field after unfolding, and the start line.
    pub max_header_line: usize,
}

impl Limits {
    /// The largest UDP payload, 100 header fields, 8 KiB per field.
    pub const UDP: Limits = Limits {
        max_message: 65_535,
        max_headers: 100,
        max_header_line: 8 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::UDP
    }
}

/// Why a message is refused, and the response that says so (RFC 3261 §21).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {reason}")]
pub struct Rejection {
    pub status: u16,
    /// The standard phrase and what is wrong, e.g. `Bad Request: missing Call-ID`.
    pub reason: String,
    /// 501: the response carries an `Allow` header.
    pub allow: bool,
}

impl Rejection {
    /// The detail quotes peer input (a host, a scheme), so it is cut at 200 characters.
    fn new(status: u16, phrase: &str, detail: impl std::fmt::Display) -> Self {
        let detail = detail.to_string();
        let detail = match detail.char_indices().nth(200) {
            Some((cut, _)) => format!("{}…", &detail[..cut]),
            None => detail,
        };
        Self {
            status,
            reason: format!("{phrase}: {detail}"),
            allow: false,
        }
    }

    /// 400: the message does not follow the grammar or lacks what a proxy needs.
    pub fn bad_request(detail: impl std::fmt::Display) -> Self {
        Self::new(400, "Bad Request", detail)
    }

    /// 413: the body makes the message larger than we accept.
    pub fn entity_too_large(detail: impl std::fmt::Display) -> Self {
        Self::new(413, "Request Entity Too Large", detail)
    }

    /// 416: a Request-URI scheme we do not serve (only sip, sips and tel).
    pub fn unsupported_uri_scheme(detail: impl std::fmt::Display) -> Self {
        Self::new(416, "Unsupported URI Scheme", detail)
    }

    /// 501 with `Allow`: a well-formed request with a method we do not implement.
    pub fn not_implemented(method: impl std::fmt::Display) -> Self {
        Self {
            allow: true,
            ..Self::new(501, "Not Implemented", format!("method {method}"))
        }
    }

    /// 505: a SIP version other than 2.0.
    pub fn version_not_supported(version: impl std::fmt::Display) -> Self {
        Self::new(505, "Version Not Supported", version)
    }

    /// 513: the message, its header section, a header line or the header count exceed
    /// our limits. These are limits of ours, not errors of the sender, hence not 400.
    pub fn message_too_large(detail: impl std::fmt::Display) -> Self {
        Self::new(513, "Message Too Large", detail)
    }
}

/// Parse one complete message: a datagram, or a frame that [`frame`] delimited.
///
/// The checks, in order: size (513, or 413 when the body is what is too large); the start
/// line (request: method token, Request-URI, `SIP/2.0` else 505; response: code 100-699);
/// header count and field length (513); line ends (CRLF, or bare LF leniently); at most
/// one Content-Length that is a non-negative integer and fits the body (400; a longer body
/// is cut to it, §18.3; none means the rest of the datagram); Via, From, To, Call-ID and
/// CSeq present once (Via at least once) and well-formed, Max-Forwards 0-255, Contact and
/// Expires well-formed (400 naming the header); then for requests an unknown method (501
/// with `allow`), the CSeq method (400) and the Request-URI scheme (416). Then rsip parses
/// a canonical form; its errors become 400, and so does a top Via, From, To or CSeq that
/// rsip's typed headers cannot read. An accepted message's `top_via_header()`,
/// `from_header()`, `to_header()` and `cseq_header()` all read with `.typed()`.
pub fn parse_message(bytes: &[u8], limits: &Limits) -> Result<SipMessage, Rejection> {
    if bytes.len() > limits.max_message {
        return Err(oversized(bytes, limits));
    }
    let bytes = bytes.get(scan::keepalive_len(bytes)..).unwrap_or(&[]);
    if bytes.is_empty() {
        return Err(Rejection::bad_request("empty message"));
    }
    let (line, after) = scan::start_line(bytes);
    if line.len() > limits.max_header_line {
        return Err(Rejection::message_too_large(format!(
            "start line of {} bytes exceeds {}",
            line.len(),
            limits.max_header_line
        )));
    }
    let start = checks::start_line(line)?;
    let head = scan::head(bytes, after, limits, Mode::Strict)?;
    let body = framing::datagram_body(&head.fields, head.body)?;
    let checked = checks::headers(head.fields)?;
    if let StartLine::Request { method, uri, .. } = &start {
        if checks::known_method(method).is_none() {
            return Err(Rejection::not_implemented(grammar::text(method)));
        }
        if checked.cseq_method.as_bytes() != *method {
            // RFC 4475 §3.1.2.17 "mismatch01".
            return Err(Rejection::bad_request(format!(
                "CSeq method {} does not match the request method {}",
                checked.cseq_method,
                grammar::text(method)
            )));
        }
        if let Uri::Other { scheme } = uri
            && !scheme.eq_ignore_ascii_case(b"tel")
        {
            // RFC 4475 §3.3.2 "unkscm", §3.3.3 "novelsc".
            return Err(Rejection::unsupported_uri_scheme(grammar::text(scheme)));
        }
    }
    let message = to_rsip(&start, &checked.fields, body)?;
    readable(&message)?;
    Ok(message)
}

/// 413 when the header section fits and the body is what is too large, else 513.
fn oversized(bytes: &[u8], limits: &Limits) -> Rejection {
    let start = scan::keepalive_len(bytes);
    let header_fits = bytes
        .get(start..)
        .and_then(scan::body_start)
        .is_some_and(|b| start + b <= limits.max_message);
    let detail = format!(
        "message of {} bytes exceeds {}",
        bytes.len(),
        limits.max_message
    );
    if header_fits {
        Rejection::entity_too_large(detail)
    } else {
        Rejection::message_too_large(detail)
    }
}

/// rsip parses the canonical text of the checked start line and header fields; the body
/// is set afterwards because rsip drops it when Content-Length is absent (it reads no
/// Content-Length as 0, §18.3 says the datagram's end). A message without one gets one,
/// so that writing it to a stream later frames it right.
fn to_rsip(start: &StartLine<'_>, fields: &[Field], body: &[u8]) -> Result<SipMessage, Rejection> {
    // One allocation for the whole text: the fields, their separators and a margin for
    // the start line and a Content-Length.
    let size: usize = fields
        .iter()
        .map(|f| f.name.len() + f.value.len() + 4)
        .sum();
    let mut text = String::with_capacity(size + 256);
    start.write_canonical(&mut text);
    text.push_str("\r\n");
    for field in fields {
        text.push_str(&field.name);
        text.push_str(": ");
        text.push_str(&field.value);
        text.push_str("\r\n");
    }
    if !fields.iter().any(|f| f.is("Content-Length")) {
        let _ = write!(text, "Content-Length: {}\r\n", body.len());
    }
    text.push_str("\r\n");
    let mut message = rsip::parser::parse_message(text.as_bytes())
        .map_err(|e| Rejection::bad_request(format!("SIP stack: {e}")))?;
    match &mut message {
        SipMessage::Request(request) => {
            request.body = body.to_vec();
            if let StartLine::Request {
                uri: Uri::Sip(ours),
                ..
            } = start
                && !same_uri(&request.uri, ours)
            {
                request.uri = rsip_uri(ours)?;
            }
        }
        SipMessage::Response(response) => response.body = body.to_vec(),
    }
    Ok(message)
}

/// Whether rsip read the Request-URI as we did. rsip splits at the first `;` and `?`
/// before it looks for `@`, so a user part with `;` (RFC 4475 "semiuri",
/// `sip:+4930123;npdi@carrier`) becomes the host.
fn same_uri(theirs: &rsip::Uri, ours: &SipUri<'_>) -> bool {
    let scheme = matches!(
        (&theirs.scheme, ours.secure),
        (Some(rsip::Scheme::Sip), false) | (Some(rsip::Scheme::Sips), true)
    );
    let user = theirs.auth.as_ref().map(|a| a.user.as_bytes()) == ours.user
        && theirs
            .auth
            .as_ref()
            .and_then(|a| a.password.as_deref())
            .map(str::as_bytes)
            == ours.password;
    let host = match (&theirs.host_with_port.host, ours.host) {
        (rsip::Host::IpAddr(std::net::IpAddr::V4(a)), Host::V4(b)) => *a == b,
        (rsip::Host::IpAddr(std::net::IpAddr::V6(a)), Host::V6(b)) => *a == b,
        (rsip::Host::Domain(d), Host::Name(n)) => d.0.as_bytes() == n,
        _ => false,
    };
    let port = theirs.host_with_port.port.map(|p| p.0) == ours.port;
    let params = ours
        .params
        .split(|&b| b == b';')
        .filter(|p| !p.is_empty())
        .count();
    scheme && user && host && port && theirs.params.len() == params && theirs.headers.is_empty()
}

/// Our reading of a SIP URI in rsip's type (user part still escaped, as rsip keeps it).
fn rsip_uri(ours: &SipUri<'_>) -> Result<rsip::Uri, Rejection> {
    let host = match ours.host {
        Host::Name(n) => rsip::Host::Domain(rsip::Domain(grammar::text(n))),
        Host::V4(a) => rsip::Host::IpAddr(a.into()),
        Host::V6(a) => rsip::Host::IpAddr(a.into()),
    };
    Ok(rsip::Uri {
        scheme: Some(if ours.secure {
            rsip::Scheme::Sips
        } else {
            rsip::Scheme::Sip
        }),
        auth: ours.user.map(|user| rsip::Auth {
            user: grammar::text(user),
            password: ours.password.map(grammar::text),
        }),
        host_with_port: rsip::uri::HostWithPort {
            host,
            port: ours.port.map(rsip::Port::from),
        },
        params: rsip::parse_params(&grammar::text(ours.params))
            .map_err(|e| Rejection::bad_request(format!("Request-URI parameters: {e}")))?,
        headers: Vec::new(),
    })
}

/// The typed headers every layer above reads must read.
fn readable(message: &SipMessage) -> Result<(), Rejection> {
    let unreadable =
        |name: &str, e: rsip::Error| Rejection::bad_request(format!("{name} unreadable: {e}"));
    message
        .top_via_header()
        .and_then(|via| via.typed())
        .map_err(|e| unreadable("Via", e))?;
    message
        .from_header()
        .and_then(|h| h.typed())
        .map_err(|e| unreadable("From", e))?;
    message
        .to_header()
        .and_then(|h| h.typed())
        .map_err(|e| unreadable("To", e))?;
    message
        .cseq_header()
        .and_then(|h| h.typed())
        .map_err(|e| unreadable("CSeq", e))?;
    Ok(())
}

/// Builds the response bytes for a refused request from the raw bytes: Via (all of them),
/// From, To (with a tag added when it has none), Call-ID and CSeq copied as far as they
/// can be read even when the message as a whole is broken, `Allow` listing `allow` when
/// the rejection asks for it (501), and `Content-Length: 0`.
///
/// None when the bytes are a response or an ACK (neither is ever answered) or when not
/// even Via, Call-ID and CSeq can be read: then the caller drops the datagram and logs it.
pub fn rejection_response(bytes: &[u8], rejection: &Rejection, allow: &[&str]) -> Option<Vec<u8>> {
    respond::rejection_response(bytes, rejection, allow)
}

/// What the front of a stream buffer holds (RFC 3261 §18.3: on a stream, messages are
/// delimited by Content-Length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Not a whole message yet: read more.
    Incomplete,
    /// CRLF or CRLFCRLF keep-alive (RFC 5626 §3.5.1) or the empty lines §7.5 says to
    /// ignore: consume this many bytes.
    KeepAlive(usize),
    /// A whole message of this length is at the front: give it to [`parse_message`].
    Message(usize),
    /// Missing or bad Content-Length, or more than `max_message`: answer (the rejection
    /// and [`rejection_response`] on the buffer) and close the connection, because where
    /// the next message starts is unknowable.
    Invalid(Rejection),
}

/// Frames the front of a stream buffer. Call it again after consuming a `KeepAlive` or
/// `Message`. It rescans the buffer on each call, so call it per read, not per byte.
pub fn frame(buffer: &[u8], limits: &Limits) -> Frame {
    framing::frame(buffer, limits)
}
