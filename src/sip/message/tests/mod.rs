//! Tests of `sip::message`: the torture corpora with their expected outcomes, the real
//! captures, the individual rules, framing, the rejection response, and properties.

use super::*;

mod captures;
mod corpus;
mod framing;
mod props;
mod readings;
mod respond;
mod rules;

/// A file under `tests/data/`.
fn data(path: &str) -> Vec<u8> {
    let full = format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn parse(bytes: &[u8]) -> Result<SipMessage, Rejection> {
    parse_message(bytes, &Limits::UDP)
}

/// The status of a refusal, or 0 for an accepted message (for compact assertions).
fn status(bytes: &[u8]) -> u16 {
    parse(bytes).map_or_else(|r| r.status, |_| 0)
}

/// A well-formed request, for tests that change one thing in it.
const OPTIONS: &str = "OPTIONS sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.com>\r\n\
From: Alice <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 63104 OPTIONS\r\n\
Content-Length: 0\r\n\
\r\n";

/// [`OPTIONS`] with `from` replaced by `to` (which must occur).
fn options_with(from: &str, to: &str) -> Vec<u8> {
    assert!(OPTIONS.contains(from), "{from:?} not in the template");
    OPTIONS.replacen(from, to, 1).into_bytes()
}
