//! Every message of the torture corpora in `tests/data/sip-torture/` against its
//! `expected.tsv`. Each table below says what we do with each file; the test checks that
//! we do it, that the table covers every row of the index, and that it agrees with the
//! index except where a row says `Deviates` (and then really does deviate).

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ours {
    Accept,
    Refuse(u16),
}
use Ours::{Accept, Refuse};

/// How our outcome relates to the index.
#[derive(Debug, Clone, Copy)]
enum Note {
    /// What the index calls for.
    Agrees,
    /// Not what the index calls for, on purpose; the text says why (also in
    /// docs/sip-parsing.md).
    Deviates(&'static str),
    /// The index leaves it open ("unspecified"); the text says what we chose and why.
    Chosen(&'static str),
}
use Note::{Agrees, Chosen, Deviates};

struct Case {
    file: &'static str,
    ours: Ours,
    /// Must appear in the rejection's reason (empty for accepted messages).
    reason: &'static str,
    note: Note,
}

const fn case(file: &'static str, ours: Ours, reason: &'static str, note: Note) -> Case {
    Case {
        file,
        ours,
        reason,
        note,
    }
}

const UNKNOWN_METHOD: &str = "an unknown method: rsip's Method cannot represent it, and RFC 3261 \
§8.2.1 (and the index's own note) says the endpoint answers 501 with Allow; we are that endpoint";

const RFC4475: &[Case] = &[
    case("wsinv.dat", Accept, "", Agrees),
    case(
        "intmeth.dat",
        Refuse(501),
        "method !interesting-Method",
        Deviates(UNKNOWN_METHOD),
    ),
    case("esc01.dat", Accept, "", Agrees),
    case("escnull.dat", Accept, "", Agrees),
    case(
        "esc02.dat",
        Refuse(501),
        "method RE%47IST%45R",
        Deviates(UNKNOWN_METHOD),
    ),
    case("lwsdisp.dat", Accept, "", Agrees),
    case("longreq.dat", Accept, "", Agrees),
    case("dblreq.dat", Accept, "", Agrees),
    case("semiuri.dat", Accept, "", Agrees),
    case("transports.dat", Accept, "", Agrees),
    case("mpart01.dat", Accept, "", Agrees),
    case("unreason.dat", Accept, "", Agrees),
    case("noreason.dat", Accept, "", Agrees),
    case(
        "badinv01.dat",
        Refuse(400),
        "malformed Via: empty parameter",
        Agrees,
    ),
    case(
        "clerr.dat",
        Refuse(400),
        "Content-Length 9999 exceeds body of 154 bytes",
        Agrees,
    ),
    case("ncl.dat", Refuse(400), "Content-Length \"-999\"", Agrees),
    case("scalar02.dat", Refuse(400), "malformed CSeq", Agrees),
    // A response: refused so it is dropped; the status is never sent.
    case("scalarlg.dat", Refuse(400), "malformed CSeq", Agrees),
    case(
        "quotbal.dat",
        Refuse(400),
        "malformed To: unterminated quoted string",
        Agrees,
    ),
    case(
        "ltgtruri.dat",
        Refuse(400),
        "Request-URI enclosed in <>",
        Agrees,
    ),
    case(
        "lwsruri.dat",
        Refuse(400),
        "Request-URI contains whitespace",
        Agrees,
    ),
    // Tolerated: extra SP between the Request-Line elements is dropped, never forwarded.
    case("lwsstart.dat", Accept, "", Agrees),
    case("trws.dat", Accept, "", Agrees),
    case(
        "escruri.dat",
        Refuse(400),
        "Request-URI carries URI headers",
        Agrees,
    ),
    // Date is not ours to check: "reject or ignore Date".
    case("baddate.dat", Accept, "", Agrees),
    case("regbadct.dat", Refuse(400), "malformed Contact", Agrees),
    case(
        "badaspec.dat",
        Refuse(400),
        "malformed To: spaces inside <>",
        Agrees,
    ),
    case(
        "baddn.dat",
        Refuse(400),
        "malformed From: display name",
        Agrees,
    ),
    case("badvers.dat", Refuse(505), "SIP/7.0", Agrees),
    case(
        "mismatch01.dat",
        Refuse(400),
        "CSeq method INVITE does not match",
        Agrees,
    ),
    case("mismatch02.dat", Refuse(501), "method NEWMETHOD", Agrees),
    case(
        "bigcode.dat",
        Refuse(400),
        "status code \"4294967301\"",
        Agrees,
    ),
    // The semantic cases: the parser accepts, the layers above decide (420, 415, 483 …),
    // except the Request-URI scheme, which rsip cannot represent beyond sip/sips/tel.
    case("badbranch.dat", Accept, "", Agrees),
    case(
        "insuf.dat",
        Refuse(400),
        "missing From, To, Call-ID",
        Agrees,
    ),
    case("unkscm.dat", Refuse(416), "nobodyKnowsThisScheme", Agrees),
    case("novelsc.dat", Refuse(416), "soap.beep", Agrees),
    case("unksm2.dat", Accept, "", Agrees),
    case("bext01.dat", Accept, "", Agrees),
    case("invut.dat", Accept, "", Agrees),
    case("regaut01.dat", Accept, "", Agrees),
    case("multi01.dat", Refuse(400), "multiple From headers", Agrees),
    case(
        "mcl01.dat",
        Refuse(400),
        "multiple Content-Length headers",
        Agrees,
    ),
    case("bcast.dat", Accept, "", Agrees),
    case("zeromf.dat", Accept, "", Agrees),
    case("cparam01.dat", Accept, "", Agrees),
    case("cparam02.dat", Accept, "", Agrees),
    case("regescrt.dat", Accept, "", Agrees),
    case("sdp01.dat", Accept, "", Agrees),
    case("inv2543.dat", Accept, "", Agrees),
    case(
        "test.dat",
        Refuse(400),
        "Request-Line has no SIP-Version",
        Chosen(
            "no SIP-Version on the request line (and a header line without a colon): 400, as a strict parser does",
        ),
    ),
];

const THREE_COLONS: &str = "[2001:db8:::192.0.2.1] is not an IPv6 address (RFC 4291; RFC 5954 \
corrected RFC 3261's ABNF after RFC 5118 asked for tolerance). rsip's Host cannot hold it, so \
accepting would hand the layers above a URI they cannot read";

/// RFC 5118 as archived (LF line ends, two Content-Lengths that do not match the LF body).
const RFC5118: &[Case] = &[
    case("ipv6-good.dat", Accept, "", Agrees),
    case(
        "ipv6-bad.dat",
        Refuse(400),
        "IPv6 address not enclosed in []",
        Agrees,
    ),
    case("port-ambiguous.dat", Accept, "", Agrees),
    case("port-unambiguous.dat", Accept, "", Agrees),
    case("via-received-param-with-delim.dat", Accept, "", Agrees),
    case("via-received-param-no-delim.dat", Accept, "", Agrees),
    case(
        "ipv6-in-sdp.dat",
        Refuse(400),
        "Content-Length 268 exceeds body of 242 bytes",
        Deviates(
            "archive quirk: Content-Length 268, the LF body has 242 octets; a datagram shorter than its Content-Length gets 400 (RFC 3261 §18.3). The CRLF copy is accepted",
        ),
    ),
    case("mult-ip-in-header.dat", Accept, "", Agrees),
    case(
        "mult-ip-in-sdp.dat",
        Refuse(400),
        "Content-Length 181 exceeds body of 180 bytes",
        Deviates(
            "archive quirk: Content-Length 181, the LF body has 180 octets (§18.3: 400). The CRLF copy is accepted",
        ),
    ),
    case("ipv4-mapped-ipv6.dat", Accept, "", Agrees),
    case(
        "ipv6-bug-abnf-3-colons.dat",
        Refuse(400),
        "invalid IPv6 address",
        Deviates(THREE_COLONS),
    ),
    case("ipv6-correct-abnf-2-colons.dat", Accept, "", Agrees),
];

/// ersip's CRLF copies: the same expectations; the two Content-Lengths now fit (the
/// longer bodies are cut to them, §18.3).
const RFC5118_CRLF: &[Case] = &[
    case("ipv6-good.dat", Accept, "", Agrees),
    case(
        "ipv6-bad.dat",
        Refuse(400),
        "IPv6 address not enclosed in []",
        Agrees,
    ),
    case("port-ambiguous.dat", Accept, "", Agrees),
    case("port-unambiguous.dat", Accept, "", Agrees),
    case("via-received-param-with-delim.dat", Accept, "", Agrees),
    case("via-received-param-no-delim.dat", Accept, "", Agrees),
    case("ipv6-in-sdp.dat", Accept, "", Agrees),
    case("mult-ip-in-header.dat", Accept, "", Agrees),
    case("mult-ip-in-sdp.dat", Accept, "", Agrees),
    case("ipv4-mapped-ipv6.dat", Accept, "", Agrees),
    case(
        "ipv6-bug-abnf-3-colons.dat",
        Refuse(400),
        "invalid IPv6 address",
        Deviates(THREE_COLONS),
    ),
    case("ipv6-correct-abnf-2-colons.dat", Accept, "", Agrees),
];

const SOFIA_UNKNOWN_METHOD: &str = "an unknown method: Sofia's parser passes it and the UAS \
above it answers 501 (RFC 3261 §8.2.1); rsip cannot represent it, so we are that UAS";

const SOFIA_VERSION: &str = "SIP/7.0: Sofia's parser passes it and the layer above answers \
505, as SOURCES.md says; we are that layer";

/// Sofia-SIP's verdicts (good/ugly = accept, bad = reject). Files Sofia reads as a stream
/// go through [`stream`], the others through `parse_message` as one datagram.
const SOFIA: &[Case] = &[
    case(
        "own0.txt",
        Accept,
        "",
        Chosen(
            "a well-formed REGISTER with RFC 2543 extras (a Via comment, Hide, Also): accepted, the comment tolerated as in RFC 2543",
        ),
    ),
    case("own1.txt", Accept, "", Agrees),
    case("own2.txt", Accept, "", Agrees),
    case("own3.txt", Accept, "", Agrees),
    case("own4.txt", Accept, "", Agrees),
    case("own5.txt", Accept, "", Agrees),
    case("own6.txt", Accept, "", Agrees),
    case(
        "own8.txt",
        Refuse(505),
        "SIP/1.0",
        Chosen("`JUNK * SIP/1.0`: the version is checked first, 505"),
    ),
    case(
        "10052.txt",
        Refuse(400),
        "Content-Length 180 exceeds body of 178 bytes",
        Chosen(
            "a fuzzer case with a 5000-octet folded From host: the Content-Length does not fit the body, 400",
        ),
    ),
    case("test1.txt", Accept, "", Agrees),
    case("test2.txt", Accept, "", Agrees),
    case("test3.txt", Accept, "", Agrees),
    case("test4.txt", Accept, "", Agrees),
    case("test5.txt", Accept, "", Agrees),
    case("test6.txt", Accept, "", Agrees),
    case(
        "test7.txt",
        Refuse(501),
        "method NEWMETHOD",
        Deviates(SOFIA_UNKNOWN_METHOD),
    ),
    case(
        "test8.txt",
        Refuse(501),
        "method NEWMETHOD",
        Deviates(SOFIA_UNKNOWN_METHOD),
    ),
    case("test9.txt", Accept, "", Agrees),
    // A stream: the REGISTER frames fine, then an INVITE with SIP/3.0.
    case("test10.txt", Refuse(505), "SIP/3.0", Agrees),
    case(
        "test11.txt",
        Refuse(400),
        "missing From, To, Call-ID",
        Agrees,
    ),
    case("test12.txt", Refuse(400), "multiple From headers", Agrees),
    case("test13.txt", Refuse(400), "malformed Expires", Agrees),
    case("test14.txt", Accept, "", Agrees),
    case(
        "test15.txt",
        Refuse(400),
        "malformed Via: empty parameter",
        Agrees,
    ),
    case("test16.txt", Refuse(400), "Content-Length 9999", Agrees),
    case("test17.txt", Refuse(400), "Content-Length \"-999\"", Agrees),
    // A stream: the INVITE frames by its Content-Length, then junk follows.
    case(
        "test18.txt",
        Refuse(400),
        "Request-Line has no SIP-Version",
        Agrees,
    ),
    case(
        "test19.txt",
        Refuse(400),
        "malformed To: unterminated quoted string",
        Agrees,
    ),
    case(
        "test1a.txt",
        Accept,
        "",
        Chosen(
            "test1 with an empty line after Content-Type: what follows is the body of a datagram",
        ),
    ),
    case("test20.txt", Accept, "", Agrees),
    case(
        "test21.txt",
        Refuse(400),
        "Request-URI enclosed in <>",
        Agrees,
    ),
    case(
        "test22.txt",
        Refuse(400),
        "Request-URI contains whitespace",
        Agrees,
    ),
    case("test23.txt", Accept, "", Agrees),
    case("test24.txt", Accept, "", Agrees),
    case(
        "test25.txt",
        Refuse(400),
        "Request-URI carries URI headers",
        Deviates(
            "a Request-URI with ?Route= headers: RFC 4475 §3.1.2.11 (escruri) calls it invalid and allows 400; rsip would keep the headers in the URI, and a proxy must never turn them into header fields",
        ),
    ),
    case("test26.txt", Refuse(416), "name", Agrees),
    case("test27.txt", Accept, "", Agrees),
    case("test28.txt", Accept, "", Agrees),
    case("test29.txt", Refuse(400), "malformed Expires", Agrees),
    case("test30.txt", Accept, "", Agrees),
    case("test31.txt", Accept, "", Agrees),
    case("test32.txt", Accept, "", Agrees),
    case("test33.txt", Refuse(400), "malformed Contact", Agrees),
    case("test34.txt", Accept, "", Agrees),
    case("test35.txt", Refuse(400), "multiple To headers", Agrees),
    case("test36.txt", Accept, "", Agrees),
    case("test37.txt", Accept, "", Agrees),
    case("test38.txt", Accept, "", Agrees),
    case("test39.txt", Accept, "", Agrees),
    case(
        "test40.txt",
        Refuse(400),
        "malformed From: display name",
        Agrees,
    ),
    case(
        "test41.txt",
        Refuse(505),
        "SIP/7.0",
        Deviates(SOFIA_VERSION),
    ),
    case(
        "test42.txt",
        Refuse(505),
        "SIP/7.0",
        Deviates(SOFIA_VERSION),
    ),
    case(
        "test10b.txt",
        Accept,
        "",
        Chosen("REGISTER with Contact: * and no empty line at the end of the datagram"),
    ),
    case(
        "test10c.txt",
        Accept,
        "",
        Chosen("like test10b with two Via: REGISTER with Contact: * and no empty line at the end"),
    ),
    case(
        "test-ack-1.txt",
        Refuse(400),
        "CSeq method NEWMETHOD does not match the request method ACK",
        Chosen("an ACK whose CSeq says NEWMETHOD: the CSeq method must match (RFC 4475 §3.1.2.17)"),
    ),
    case(
        "test14-req.txt",
        Accept,
        "",
        Chosen(
            "an INVITE with a broadcast top Via: where to answer is routing's decision, not parsing's",
        ),
    ),
];

/// What the index allows: acceptance, and which refusals (empty = any status).
struct Allowed {
    accept: bool,
    refuse: Option<&'static [u16]>,
}

fn allowed(set: &str, outcome: &str) -> Option<Allowed> {
    let a = |accept, refuse| Some(Allowed { accept, refuse });
    if set == "sofia-sip" {
        return match outcome {
            "accept" | "accept (ugly but legal)" => a(true, None),
            "reject" => a(false, Some(&[])),
            _ => None,
        };
    }
    match outcome {
        "n/a" | "unspecified" => None,
        "accept parse; reject 416" | "accept parse; 416 or 404" => a(true, Some(&[416])),
        o if o.starts_with("accept") => a(true, None),
        "reject with 505" => a(false, Some(&[505])),
        "reject with 501 (400 acceptable)" => a(false, Some(&[501, 400])),
        "reject (or tolerate)" | "reject (or ignore headers)" | "reject or ignore Date" => {
            a(true, Some(&[400]))
        }
        // A response: dropped, whatever the status says.
        "reject (drop)" => a(false, Some(&[])),
        o if o.starts_with("reject") || o.starts_with("must not crash; reject") => {
            a(false, Some(&[400]))
        }
        other => panic!("unknown outcome {other:?} in {set}/expected.tsv"),
    }
}

fn agrees(allowed: &Allowed, ours: Ours) -> bool {
    match (ours, allowed.refuse) {
        (Accept, _) => allowed.accept,
        (Refuse(_), None) => false,
        (Refuse(status), Some(statuses)) => statuses.is_empty() || statuses.contains(&status),
    }
}

/// Sofia's driver with `-t`: the file is a stream that ends at its end. Frames are
/// delimited by Content-Length; what is left when no frame can be cut (no Content-Length,
/// or not all of it) is the last message, delimited by the end of the stream.
pub(super) fn stream(bytes: &[u8]) -> Result<Vec<SipMessage>, Rejection> {
    let mut rest = bytes;
    let mut out = Vec::new();
    while !rest.is_empty() {
        match frame(rest, &Limits::UDP) {
            Frame::KeepAlive(n) => rest = &rest[n..],
            Frame::Message(n) => {
                out.push(parse(&rest[..n])?);
                rest = &rest[n..];
            }
            Frame::Incomplete | Frame::Invalid(_) => {
                out.push(parse(rest)?);
                break;
            }
        }
    }
    Ok(out)
}

/// Runs one corpus directory against its index and its table.
fn check_set(dir: &str, index: &str, table: &[Case]) {
    let tsv = String::from_utf8(data(&format!("sip-torture/{index}/expected.tsv"))).unwrap();
    let header: Vec<&str> = tsv.lines().next().unwrap().split('\t').collect();
    let outcome_col = if index == "sofia-sip" { 2 } else { 5 };
    let mode_col = header.iter().position(|h| *h == "sofia_read_mode");
    let mut seen = Vec::new();
    let mut failures = Vec::new();
    for row in tsv.lines().skip(1).filter(|r| !r.trim().is_empty()) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (file, outcome) = (cols[0], cols[outcome_col]);
        let case = table
            .iter()
            .find(|c| c.file == file)
            .unwrap_or_else(|| panic!("{dir}/{file} is in the index but not in our table"));
        seen.push(file);
        let bytes = data(&format!("sip-torture/{dir}/{file}"));
        let result = if mode_col.is_some_and(|m| cols[m] == "stream") {
            stream(&bytes).map(|_| ())
        } else {
            parse(&bytes).map(|_| ())
        };
        let got = match &result {
            Ok(()) => Accept,
            Err(r) => Refuse(r.status),
        };
        if got != case.ours {
            failures.push(format!("{file}: expected {:?}, got {result:?}", case.ours));
            continue;
        }
        if let Err(r) = &result
            && !r.reason.contains(case.reason)
        {
            failures.push(format!(
                "{file}: reason {:?} lacks {:?}",
                r.reason, case.reason
            ));
        }
        match (allowed(index, outcome), case.note) {
            (Some(allowed), Agrees) if !agrees(&allowed, case.ours) => failures.push(format!(
                "{file}: {:?} does not agree with {outcome:?}",
                case.ours
            )),
            (Some(allowed), Deviates(_)) if agrees(&allowed, case.ours) => failures.push(format!(
                "{file}: marked as a deviation but agrees with {outcome:?}"
            )),
            (Some(_), Chosen(_)) => failures.push(format!(
                "{file}: the index specifies {outcome:?}, not a choice"
            )),
            (None, Agrees | Deviates(_)) => failures.push(format!(
                "{file}: the index leaves it open: say what we chose"
            )),
            _ => {}
        }
    }
    for case in table {
        assert!(
            seen.contains(&case.file),
            "{}: not in {index}/expected.tsv",
            case.file
        );
    }
    assert!(failures.is_empty(), "{dir}:\n{}", failures.join("\n"));
}

#[test]
fn every_deviation_and_choice_says_why() {
    for case in RFC4475
        .iter()
        .chain(RFC5118)
        .chain(RFC5118_CRLF)
        .chain(SOFIA)
    {
        if let Deviates(why) | Chosen(why) = case.note {
            assert!(why.len() > 30, "{}: {why:?} is not a reason", case.file);
        }
    }
}

#[test]
fn rfc4475_torture_messages_get_the_outcome_the_rfc_calls_for() {
    check_set("rfc4475", "rfc4475", RFC4475);
}

#[test]
fn rfc5118_ipv6_messages_as_archived_get_the_outcome_the_rfc_calls_for() {
    check_set("rfc5118", "rfc5118", RFC5118);
}

#[test]
fn rfc5118_ipv6_messages_with_crlf_get_the_outcome_the_rfc_calls_for() {
    check_set("rfc5118-crlf-ersip", "rfc5118", RFC5118_CRLF);
}

#[test]
fn sofia_sip_messages_get_sofias_verdict() {
    check_set("sofia-sip", "sofia-sip", SOFIA);
}

/// Every accepted corpus message, for the tests of what acceptance promises.
fn accepted() -> Vec<(String, SipMessage)> {
    let mut out = Vec::new();
    for (dir, table) in [
        ("rfc4475", RFC4475),
        ("rfc5118", RFC5118),
        ("rfc5118-crlf-ersip", RFC5118_CRLF),
        ("sofia-sip", SOFIA),
    ] {
        for case in table.iter().filter(|c| c.ours == Accept) {
            let name = format!("{dir}/{}", case.file);
            if let Ok(message) = parse(&data(&format!("sip-torture/{name}"))) {
                out.push((name, message));
            }
        }
    }
    assert!(out.len() > 70, "only {} accepted", out.len());
    out
}

#[test]
fn accepted_messages_have_typed_via_from_to_cseq_and_call_id() {
    for (name, m) in accepted() {
        let via = m.top_via_header().and_then(|v| v.typed());
        assert!(via.is_ok(), "{name}: {via:?}");
        assert!(
            m.from_header().and_then(|h| h.typed()).is_ok(),
            "{name}: From"
        );
        assert!(m.to_header().and_then(|h| h.typed()).is_ok(), "{name}: To");
        assert!(
            m.cseq_header().and_then(|h| h.typed()).is_ok(),
            "{name}: CSeq"
        );
        assert!(m.call_id_header().is_ok(), "{name}: Call-ID");
    }
}

#[test]
fn accepted_messages_are_accepted_again_after_rsip_writes_them() {
    for (name, m) in accepted() {
        let again = parse(&m.to_bytes());
        assert!(
            again.is_ok(),
            "{name}: {again:?}\n{}",
            String::from_utf8_lossy(&m.to_bytes())
        );
    }
}
