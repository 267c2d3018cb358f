//! `frame`: stream framing by Content-Length (RFC 3261 §18.3) and keep-alives.

use super::*;

fn framed(bytes: &[u8]) -> Frame {
    frame(bytes, &Limits::UDP)
}

fn invalid(bytes: &[u8]) -> Rejection {
    match framed(bytes) {
        Frame::Invalid(r) => r,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn crlf_keepalives_are_consumed_before_anything_else() {
    assert_eq!(framed(b"\r\n\r\n"), Frame::KeepAlive(4));
    assert_eq!(framed(b"\r\n"), Frame::KeepAlive(2));
    assert_eq!(framed(b"\r\n\r\nINVITE"), Frame::KeepAlive(4));
    assert_eq!(framed(b"\r\n\r"), Frame::KeepAlive(2));
    assert_eq!(framed(b"\r"), Frame::Incomplete);
    assert_eq!(framed(b""), Frame::Incomplete);
}

#[test]
fn a_message_is_framed_only_once_all_of_its_body_has_arrived() {
    let msg = options_with(
        "Content-Length: 0\r\n\r\n",
        "Content-Length: 5\r\n\r\nhello",
    );
    for cut in 1..msg.len() {
        assert_eq!(framed(&msg[..cut]), Frame::Incomplete, "cut at {cut}");
    }
    assert_eq!(framed(&msg), Frame::Message(msg.len()));
    let mut two = msg.clone();
    two.extend_from_slice(OPTIONS.as_bytes());
    assert_eq!(framed(&two), Frame::Message(msg.len()));
}

#[test]
fn lf_only_messages_frame_too() {
    let lf = OPTIONS.replace("\r\n", "\n");
    assert_eq!(framed(lf.as_bytes()), Frame::Message(lf.len()));
}

#[test]
fn a_stream_without_content_length_is_invalid() {
    let without = options_with("Content-Length: 0\r\n", "");
    assert_eq!(invalid(&without).status, 400);
    assert!(invalid(&without).reason.contains("missing Content-Length"));
}

#[test]
fn negative_or_repeated_content_length_is_invalid() {
    let negative = options_with("Content-Length: 0", "Content-Length: -999");
    assert_eq!(invalid(&negative).status, 400);
    let twice = options_with("Content-Length: 0", "Content-Length: 0\r\nl: 5");
    assert!(invalid(&twice).reason.contains("multiple Content-Length"));
    assert_eq!(
        framed(&data("sip-torture/rfc4475/ncl.dat")),
        Frame::Invalid(invalid(&data("sip-torture/rfc4475/ncl.dat")))
    );
    assert!(matches!(
        framed(&data("sip-torture/rfc4475/mcl01.dat")),
        Frame::Invalid(_)
    ));
}

#[test]
fn a_content_length_larger_than_the_buffer_waits_for_more() {
    // RFC 4475 §3.1.2.2 "clerr" over a stream: the receiver can only wait.
    assert_eq!(
        framed(&data("sip-torture/rfc4475/clerr.dat")),
        Frame::Incomplete
    );
}

#[test]
fn a_content_length_past_max_message_is_413() {
    let huge = options_with("Content-Length: 0", "Content-Length: 70000");
    assert_eq!(invalid(&huge).status, 413);
    let overflow = options_with(
        "Content-Length: 0",
        "Content-Length: 999999999999999999999999",
    );
    assert_eq!(invalid(&overflow).status, 413);
}

#[test]
fn a_header_section_that_never_ends_is_513_at_max_message() {
    let limits = Limits {
        max_message: 1000,
        ..Limits::UDP
    };
    let mut endless = b"INVITE sip:a@example.com SIP/2.0\r\n".to_vec();
    while endless.len() < 999 {
        endless.extend_from_slice(b"X-Pad: 1\r\n");
    }
    assert_eq!(frame(&endless[..999], &limits), Frame::Incomplete);
    match frame(&endless, &limits) {
        Frame::Invalid(r) => assert_eq!(r.status, 513),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rfc4475_messages_with_a_content_length_frame_back_to_back() {
    let files = [
        "wsinv.dat",
        "esc01.dat",
        "mpart01.dat",
        "dblreq.dat",
        "unreason.dat",
        "longreq.dat",
    ];
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for f in files {
        let bytes = data(&format!("sip-torture/rfc4475/{f}"));
        // dblreq's trailing octets would be the next message on a stream: cut them.
        let len = match framed(&bytes) {
            Frame::Message(n) => n,
            other => panic!("{f}: {other:?}"),
        };
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(&bytes[..len]);
        expected.push(bytes[..len].to_vec());
    }
    let mut rest = &stream[..];
    let mut got = Vec::new();
    while !rest.is_empty() {
        match framed(rest) {
            Frame::KeepAlive(n) => rest = &rest[n..],
            Frame::Message(n) => {
                assert!(parse(&rest[..n]).is_ok());
                got.push(rest[..n].to_vec());
                rest = &rest[n..];
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, expected);
}
