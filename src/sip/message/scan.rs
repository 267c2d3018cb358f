//! Splitting raw bytes into a start line, header fields and a body (RFC 3261 §7).
//!
//! Lines end in CRLF or, leniently, in a bare LF (RFC 3261 §7.5 asks for CRLF, but
//! Sofia-SIP's and RFC 5118's test messages use LF and parsers accept them). Folded
//! lines are joined with one SP before anything else looks at them (§7.3.1), so a
//! header name folded before its colon (`CaLl-Id CRLF : value`) still reads.

use std::borrow::Cow;

use super::grammar::{is_token, is_ws, shown};
use super::{Limits, Rejection};

/// Leading CRLFs (or bare LFs) that RFC 3261 §7.5 says to ignore before a start line;
/// on a stream they are RFC 5626 keep-alives.
pub(super) fn keepalive_len(bytes: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match (bytes.get(i), bytes.get(i + 1)) {
            (Some(b'\r'), Some(b'\n')) => i += 2,
            (Some(b'\n'), _) => i += 1,
            _ => return i,
        }
    }
}

/// One line starting at `from`: its content (without CR LF) and where the next begins.
/// None when no LF follows (the line runs to the end of the data).
fn line(bytes: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = bytes.get(from..)?;
    let lf = rest.iter().position(|&b| b == b'\n')?;
    let content = rest.get(..lf).unwrap_or(&[]);
    let content = content.strip_suffix(b"\r").unwrap_or(content);
    Some((content, from + lf + 1))
}

/// Where the body begins: just after the empty line that ends the header section.
/// `bytes` must start with the start line. None while no empty line has arrived.
pub(super) fn body_start(bytes: &[u8]) -> Option<usize> {
    let (_, mut next) = line(bytes, 0)?;
    loop {
        let (content, after) = line(bytes, next)?;
        if content.is_empty() {
            return Some(after);
        }
        next = after;
    }
}

/// The first line and the offset just after it; a datagram with no LF at all is only a
/// start line.
pub(super) fn start_line(bytes: &[u8]) -> (&[u8], usize) {
    line(bytes, 0).unwrap_or_else(|| {
        let content = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        (content, bytes.len())
    })
}

/// One header field after unfolding. Borrowed from the message when it can be (a field
/// on one line, in UTF-8, not a compact form): a message is read once per datagram, so
/// copying every field is what this saves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field<'a> {
    /// As written, except that RFC 3261 compact forms are expanded (`v` → `Via`).
    pub name: Cow<'a, str>,
    /// Unfolded and trimmed. Bytes that are not UTF-8 (a Latin-1 display name) are
    /// replaced by U+FFFD: rsip reads header lines as UTF-8 and silently drops every
    /// header from the first line that is not.
    pub value: Cow<'a, str>,
}

impl Field<'_> {
    pub(super) fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    fn into_owned(self) -> Field<'static> {
        Field {
            name: Cow::Owned(self.name.into_owned()),
            value: Cow::Owned(self.value.into_owned()),
        }
    }
}

/// The header fields and the octets after the empty line.
#[derive(Debug)]
pub(super) struct Head<'a> {
    pub fields: Vec<Field<'a>>,
    pub body: &'a [u8],
}

/// How strictly to read header lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// `parse_message`: limits enforced, malformed lines refused.
    Strict,
    /// `rejection_response` and framing: read what can be read, skip the rest.
    Lenient,
}

/// Reads the header section that starts at `from` (just after the start line). Without
/// an empty line the header section runs to the end of the data and the body is empty:
/// a datagram's end also ends its message.
pub(super) fn head<'a>(
    bytes: &'a [u8],
    from: usize,
    limits: &Limits,
    mode: Mode,
) -> Result<Head<'a>, Rejection> {
    let strict = mode == Mode::Strict;
    let mut fields = Vec::with_capacity(16);
    // The logical line being assembled from a line and its continuations: borrowed until
    // a continuation makes it a copy.
    let mut pending: Option<Cow<'a, [u8]>> = None;
    let mut next = from;
    let body_from = loop {
        let (content, after) = match line(bytes, next) {
            Some(found) => found,
            None => {
                let rest = bytes.get(next..).unwrap_or(&[]);
                (rest.strip_suffix(b"\r").unwrap_or(rest), bytes.len())
            }
        };
        if content.is_empty() {
            break after;
        }
        if strict && content.len() > limits.max_header_line {
            return Err(Rejection::message_too_large(format!(
                "header line of {} bytes exceeds {}",
                content.len(),
                limits.max_header_line
            )));
        }
        if strict && content.contains(&b'\r') {
            return Err(Rejection::bad_request(format!(
                "bare CR in header line {}",
                fields.len() + 1
            )));
        }
        let continuation = content.first().is_some_and(|&b| is_ws(b));
        match (&mut pending, continuation) {
            (Some(pending), true) => {
                // §7.3.1: a fold is equivalent to one SP.
                let piece = content.trim_ascii();
                if !piece.is_empty() {
                    let logical = pending.to_mut();
                    while logical.last().is_some_and(|&b| is_ws(b)) {
                        logical.pop();
                    }
                    logical.push(b' ');
                    logical.extend_from_slice(piece);
                }
                if strict && pending.len() > limits.max_header_line {
                    return Err(Rejection::message_too_large(format!(
                        "folded header field of more than {} bytes",
                        limits.max_header_line
                    )));
                }
            }
            _ => {
                if let Some(done) = pending.take() {
                    push_field(&mut fields, done, limits, mode)?;
                }
                // A first header line that starts with SP/HT continues nothing: read it
                // as a header line (Sofia-SIP's test1 "  To :" is classed good).
                let piece = content.trim_ascii_start();
                if !piece.is_empty() {
                    pending = Some(Cow::Borrowed(piece));
                }
            }
        }
        if after >= bytes.len() {
            break bytes.len();
        }
        next = after;
    };
    if let Some(done) = pending.take() {
        push_field(&mut fields, done, limits, mode)?;
    }
    Ok(Head {
        fields,
        body: bytes.get(body_from..).unwrap_or(&[]),
    })
}

fn push_field<'a>(
    fields: &mut Vec<Field<'a>>,
    logical: Cow<'a, [u8]>,
    limits: &Limits,
    mode: Mode,
) -> Result<(), Rejection> {
    let field = match logical {
        Cow::Borrowed(line) => split_field(line, mode)?,
        Cow::Owned(line) => split_field(&line, mode)?.map(Field::into_owned),
    };
    if let Some(field) = field {
        if mode == Mode::Strict && fields.len() >= limits.max_headers {
            return Err(Rejection::message_too_large(format!(
                "more than {} header fields",
                limits.max_headers
            )));
        }
        fields.push(field);
    }
    Ok(())
}

/// `name: value` of one logical line; None for a line skipped in lenient mode.
fn split_field(logical: &[u8], mode: Mode) -> Result<Option<Field<'_>>, Rejection> {
    let strict = mode == Mode::Strict;
    let Some(colon) = logical.iter().position(|&b| b == b':') else {
        if strict {
            return Err(Rejection::bad_request(format!(
                "header line without a colon: {}",
                excerpt(logical)
            )));
        }
        return Ok(None);
    };
    let name = logical.get(..colon).unwrap_or(&[]).trim_ascii_end();
    if !is_token(name) {
        if strict {
            return Err(Rejection::bad_request(
                match name.iter().find(|&&b| !super::grammar::is_token_char(b)) {
                    Some(&b) => format!("header name {} contains {}", excerpt(name), shown(b)),
                    None => "empty header name".to_string(),
                },
            ));
        }
        return Ok(None);
    }
    let value = logical.get(colon + 1..).unwrap_or(&[]).trim_ascii();
    Ok(Some(Field {
        name: expand_compact(name),
        value: String::from_utf8_lossy(value),
    }))
}

/// RFC 3261 §7.3.3 and later RFCs' compact forms. rsip knows only some of them (`r` for
/// Refer-To, `x` for Session-Expires … would stay unknown headers).
fn expand_compact(name: &[u8]) -> Cow<'_, str> {
    let full = match name {
        [b] => match b.to_ascii_lowercase() {
            b'a' => "Accept-Contact",
            b'b' => "Referred-By",
            b'c' => "Content-Type",
            b'd' => "Request-Disposition",
            b'e' => "Content-Encoding",
            b'f' => "From",
            b'i' => "Call-ID",
            b'j' => "Reject-Contact",
            b'k' => "Supported",
            b'l' => "Content-Length",
            b'm' => "Contact",
            b'n' => "Identity-Info",
            b'o' => "Event",
            b'r' => "Refer-To",
            b's' => "Subject",
            b't' => "To",
            b'u' => "Allow-Events",
            b'v' => "Via",
            b'x' => "Session-Expires",
            b'y' => "Identity",
            _ => return String::from_utf8_lossy(name),
        },
        _ => return String::from_utf8_lossy(name),
    };
    Cow::Borrowed(full)
}

/// The start of a line for a reason phrase: at most 40 characters, control bytes shown
/// as `?`.
pub(super) fn excerpt(s: &[u8]) -> String {
    let shown: String = String::from_utf8_lossy(s)
        .chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!("\"{shown}\"")
}
