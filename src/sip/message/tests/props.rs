//! Properties: no input makes `parse_message`, `frame` or `rejection_response` panic,
//! what they return keeps its promises, and framing a stream of valid messages gives
//! back exactly those messages.

use super::*;
use proptest::prelude::*;
use std::sync::OnceLock;

/// Every corpus message, to mutate.
fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let root = format!("{}/tests/data", env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        for dir in [
            "sip-torture/rfc4475",
            "sip-torture/rfc5118",
            "sip-torture/sofia-sip",
        ] {
            for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e != "tsv") {
                    out.push(std::fs::read(path).unwrap());
                }
            }
        }
        out.sort();
        out
    })
}

/// Runs everything on one input and checks what the results promise.
fn exercise(bytes: &[u8]) {
    match parse(bytes) {
        Ok(m) => {
            assert!(m.top_via_header().and_then(|v| v.typed()).is_ok());
            assert!(m.from_header().and_then(|h| h.typed()).is_ok());
            assert!(m.to_header().and_then(|h| h.typed()).is_ok());
            assert!(m.cseq_header().and_then(|h| h.typed()).is_ok());
        }
        Err(rejection) => {
            assert!(matches!(
                rejection.status,
                400 | 413 | 416 | 501 | 505 | 513
            ));
            if let Some(out) = rejection_response(bytes, &rejection, &["INVITE", "BYE"]) {
                match rsip::SipMessage::try_from(out.as_slice()) {
                    Ok(SipMessage::Response(r)) => {
                        assert_eq!(r.status_code.code(), rejection.status);
                    }
                    other => panic!("{other:?}: {}", String::from_utf8_lossy(&out)),
                }
            }
        }
    }
    match frame(bytes, &Limits::UDP) {
        Frame::KeepAlive(n) | Frame::Message(n) => assert!(n > 0 && n <= bytes.len()),
        Frame::Incomplete => assert!(bytes.len() < Limits::UDP.max_message),
        Frame::Invalid(r) => assert!(matches!(r.status, 400 | 413 | 513)),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop::sample::select(vec![
        b"\r\n".to_vec(),
        b"\n".to_vec(),
        b"\r".to_vec(),
        b" ".to_vec(),
        b":".to_vec(),
        b";".to_vec(),
        b",".to_vec(),
        b"<".to_vec(),
        b">".to_vec(),
        b"\"".to_vec(),
        b"\\".to_vec(),
        b"(".to_vec(),
        b"[".to_vec(),
        b"%".to_vec(),
        b"@".to_vec(),
        b"\r\n ".to_vec(),
        b"\r\n\r\n".to_vec(),
        b"Content-Length: 99999999999999999999\r\n".to_vec(),
        b"Via: SIP/2.0/UDP [::1]:5060;branch=z9hG4bK\r\n".to_vec(),
        vec![0],
        vec![0xFF, 0xFE],
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (
            any::<usize>(),
            prop_oneof![interesting, prop::collection::vec(any::<u8>(), 1..8)]
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Set(i, b) => {
                if let Some(slot) = bytes.get_mut(i % len) {
                    *slot = *b;
                }
            }
            Mutation::Insert(i, b) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
        }
    }
    bytes
}

/// Pieces of SIP syntax, so that random soup reaches past the start line.
fn sip_soup() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        "INVITE ",
        "SIP/2.0",
        "SIP/2.0 ",
        "200 ",
        "sip:",
        "sips:",
        "tel:",
        "user",
        "@",
        "host",
        "[2001:db8::1]",
        ":5060",
        ";",
        "=",
        ",",
        " ",
        "\t",
        "\r\n",
        "\n",
        "\r\n ",
        "\r\n\r\n",
        "Via: ",
        "SIP/2.0/UDP ",
        "branch=z9hG4bK",
        "From: ",
        "To: ",
        "Call-ID: ",
        "CSeq: ",
        "1 INVITE",
        "Content-Length: ",
        "l: ",
        "0",
        "12",
        "-1",
        "Max-Forwards: ",
        "Contact: ",
        "*",
        "\"",
        "\\",
        "<",
        ">",
        "(",
        ")",
        "?",
        "%",
        "%4",
        "tag",
        "Expires: ",
        "v: ",
        "m: ",
    ]);
    prop::collection::vec(pieces, 0..120).prop_map(|p| p.concat().into_bytes())
}

/// A valid request or response with a Content-Length, CRLF or LF line ends.
fn valid_message() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec![
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE", "INFO",
    ]);
    let host = prop::sample::select(vec![
        "example.com",
        "192.0.2.1",
        "[2001:db8::1]",
        "pbx.example.net:5080",
    ]);
    (
        (any::<bool>(), method, "[a-z0-9+._-]{1,12}", host),
        (
            "[a-zA-Z0-9]{1,16}",
            "[a-zA-Z0-9]{1,10}",
            "[a-zA-Z0-9.-]{1,20}",
            any::<u32>(),
        ),
        (
            100u16..700,
            prop::collection::vec(any::<u8>(), 0..300),
            any::<bool>(),
        ),
    )
        .prop_map(
            |((request, method, user, host), (branch, tag, call_id, cseq), (code, body, lf))| {
                let start = if request {
                    format!("{method} sip:{user}@{host} SIP/2.0")
                } else {
                    format!("SIP/2.0 {code} Whatever")
                };
                let eol = if lf { "\n" } else { "\r\n" };
                let head = [
                    start,
                    format!("Via: SIP/2.0/TCP {host};branch=z9hG4bK{branch}"),
                    format!("From: <sip:{user}@{host}>;tag={tag}"),
                    format!("To: \"Some One\" <sip:{user}@example.org>"),
                    format!("Call-ID: {call_id}"),
                    format!("CSeq: {cseq} {method}"),
                    "Max-Forwards: 70".to_string(),
                    format!("Content-Length: {}", body.len()),
                ]
                .join(eol);
                let mut out = format!("{head}{eol}{eol}").into_bytes();
                out.extend_from_slice(&body);
                out
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        exercise(&bytes);
    }

    #[test]
    fn sip_shaped_soup_never_panics(bytes in sip_soup()) {
        exercise(&bytes);
    }

    #[test]
    fn mutated_corpus_messages_never_panic(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let original = pick.get(corpus()).clone();
        exercise(&mutate(original, &mutations));
    }

    #[test]
    fn generated_valid_messages_are_accepted_and_framed_whole(msg in valid_message()) {
        prop_assert!(parse(&msg).is_ok(), "{:?}", parse(&msg));
        prop_assert_eq!(frame(&msg, &Limits::UDP), Frame::Message(msg.len()));
    }

    #[test]
    fn a_strict_prefix_of_a_message_is_incomplete(msg in valid_message(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(msg.len());
        prop_assert_eq!(frame(&msg[..cut], &Limits::UDP), Frame::Incomplete);
    }

    #[test]
    fn framing_a_stream_gives_back_each_message_and_each_parses_the_same(
        parts in prop::collection::vec((0usize..3, valid_message()), 1..6),
    ) {
        let mut stream = Vec::new();
        for (keepalives, msg) in &parts {
            stream.extend(b"\r\n".repeat(*keepalives));
            stream.extend_from_slice(msg);
        }
        let mut rest = &stream[..];
        let mut got = Vec::new();
        while !rest.is_empty() {
            match frame(rest, &Limits::UDP) {
                Frame::KeepAlive(n) => rest = &rest[n..],
                Frame::Message(n) => {
                    got.push(&rest[..n]);
                    rest = &rest[n..];
                }
                other => prop_assert!(false, "{other:?} with {} bytes left", rest.len()),
            }
        }
        prop_assert_eq!(got.len(), parts.len());
        for (framed, (_, original)) in got.iter().zip(&parts) {
            prop_assert_eq!(*framed, &original[..]);
            prop_assert_eq!(parse(framed), parse(original));
        }
    }
}
