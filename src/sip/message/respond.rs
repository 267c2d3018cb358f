//! The stateless answer to a refused request (RFC 3261 §8.2.6): copied from whatever
//! header fields can still be read in the raw bytes, because the message as a whole was
//! not trusted.

use super::grammar::{self, is_ws};
use super::scan::{self, Field, Mode};
use super::{Limits, Rejection};
use sha2::{Digest as _, Sha256};

/// See [`super::rejection_response`].
pub(super) fn rejection_response(
    bytes: &[u8],
    rejection: &Rejection,
    allow: &[&str],
) -> Option<Vec<u8>> {
    let bytes = bytes.get(scan::keepalive_len(bytes)..)?;
    let (line, after) = scan::start_line(bytes);
    let first = line.split(|&b| is_ws(b)).find(|w| !w.is_empty())?;
    // Never answer a response (§8.1.3.3 drops them), nor an ACK (§17.2.1: it has none).
    if first.len() >= 4
        && first
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
        || first == b"ACK"
    {
        return None;
    }
    let head = scan::head(bytes, after, &Limits::UDP, Mode::Lenient).ok()?;
    let first_of = |name: &str| -> Option<String> {
        head.fields
            .iter()
            .find(|f| f.is(name) && !f.value.is_empty())
            .map(|f| one_line(&f.value))
    };
    let vias: Vec<String> = head
        .fields
        .iter()
        .filter(|f| f.is("Via") && !f.value.is_empty())
        .map(|f| one_line(&f.value))
        .collect();
    let call_id = first_of("Call-ID")?;
    let cseq = first_of("CSeq")?;
    let top_via = vias.first()?;
    let from = first_of("From");
    let to = first_of("To").map(|to| with_tag(to, &head.fields, top_via, &call_id, &cseq));

    let mut out = format!(
        "SIP/2.0 {} {}\r\n",
        rejection.status,
        reason_phrase(&rejection.reason)
    );
    for via in &vias {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    if let Some(from) = from {
        out.push_str(&format!("From: {from}\r\n"));
    }
    if let Some(to) = to {
        out.push_str(&format!("To: {to}\r\n"));
    }
    out.push_str(&format!("Call-ID: {call_id}\r\nCSeq: {cseq}\r\n"));
    if rejection.allow && !allow.is_empty() {
        out.push_str(&format!("Allow: {}\r\n", one_line(&allow.join(", "))));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// A header value as it may be written back: no CR or LF can end the line early.
fn one_line(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

/// A Reason-Phrase is TEXT-UTF8 without control characters; ours quotes peer input.
fn reason_phrase(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

/// §8.2.6.2: the response's To gets a tag when the request's has none. The tag is a hash
/// of the request's identifiers, so a retransmission gets the same tag (we keep no state)
/// and the function stays pure.
fn with_tag(to: String, fields: &[Field], top_via: &str, call_id: &str, cseq: &str) -> String {
    let has_tag = match grammar::single_name_addr(to.as_bytes()) {
        Ok(na) => na.param("tag").is_some(),
        Err(_) => to.to_ascii_lowercase().contains(";tag="),
    };
    if has_tag {
        return to;
    }
    let from = fields
        .iter()
        .find(|f| f.is("From"))
        .map_or("", |f| &*f.value);
    let mut hash = Sha256::new();
    for part in [top_via, call_id, cseq, from] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let tag = hex::encode(&hash.finalize()[..8]);
    format!("{to};tag={tag}")
}
