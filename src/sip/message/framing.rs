//! Where a message ends: Content-Length on a datagram and on a stream (RFC 3261 §18.3).

use super::grammar::is_digits;
use super::scan::{self, Field, Mode};
use super::{Frame, Limits, Rejection};

/// The one Content-Length of a header section: Ok(None) when absent, else its value.
/// Several Content-Length fields (RFC 4475 §3.3.9 "mcl01") or a value that is not
/// `1*DIGIT` (§3.1.2.3 "ncl": -999) make the framing unknowable.
pub(super) fn content_length(fields: &[Field]) -> Result<Option<usize>, Rejection> {
    let mut found = fields.iter().filter(|f| f.is("Content-Length"));
    let Some(field) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(Rejection::bad_request("multiple Content-Length headers"));
    }
    let value = field.value.as_bytes();
    if !is_digits(value) {
        return Err(Rejection::bad_request(format!(
            "Content-Length {} is not a non-negative integer",
            super::scan::excerpt(value)
        )));
    }
    // More digits than usize holds is certainly more than any body we accept.
    Ok(Some(field.value.parse().unwrap_or(usize::MAX)))
}

/// The body of a whole datagram (or frame) given its Content-Length: with none, the rest
/// of the datagram; with a larger one, 400; with a smaller one, the extra octets are
/// discarded (§18.3: "If there are additional bytes in the transport packet beyond the
/// end of the body, they MUST be discarded", RFC 4475 §3.1.1.8 "dblreq").
pub(super) fn datagram_body<'a>(fields: &[Field], rest: &'a [u8]) -> Result<&'a [u8], Rejection> {
    match content_length(fields)? {
        None => Ok(rest),
        Some(n) if n > rest.len() => Err(Rejection::bad_request(if n == usize::MAX {
            format!("Content-Length exceeds body of {} bytes", rest.len())
        } else {
            format!("Content-Length {n} exceeds body of {} bytes", rest.len())
        })),
        Some(n) => Ok(rest.get(..n).unwrap_or(rest)),
    }
}

/// See [`super::frame`].
pub(super) fn frame(buffer: &[u8], limits: &Limits) -> Frame {
    let keepalive = scan::keepalive_len(buffer);
    if keepalive > 0 {
        return Frame::KeepAlive(keepalive);
    }
    let Some(body_start) = scan::body_start(buffer) else {
        if buffer.len() >= limits.max_message {
            return Frame::Invalid(Rejection::message_too_large(format!(
                "no end of the header section within {} bytes",
                limits.max_message
            )));
        }
        return Frame::Incomplete;
    };
    if body_start > limits.max_message {
        return Frame::Invalid(Rejection::message_too_large(format!(
            "header section of {body_start} bytes exceeds {}",
            limits.max_message
        )));
    }
    let (_, after_start_line) = scan::start_line(buffer);
    let head = match scan::head(
        buffer.get(..body_start).unwrap_or(buffer),
        after_start_line,
        limits,
        Mode::Lenient,
    ) {
        Ok(head) => head,
        Err(rejection) => return Frame::Invalid(rejection),
    };
    let length = match content_length(&head.fields) {
        Ok(Some(length)) => length,
        Ok(None) => {
            return Frame::Invalid(Rejection::bad_request(
                "missing Content-Length (required on a stream, RFC 3261 §18.3)",
            ));
        }
        Err(rejection) => return Frame::Invalid(rejection),
    };
    match body_start.checked_add(length) {
        Some(total) if total <= limits.max_message => {
            if buffer.len() >= total {
                Frame::Message(total)
            } else {
                Frame::Incomplete
            }
        }
        _ => Frame::Invalid(Rejection::entity_too_large(format!(
            "Content-Length {length} makes the message larger than {} bytes",
            limits.max_message
        ))),
    }
}
