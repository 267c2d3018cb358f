//! `rejection_response`: the answer to a refused request.

use super::*;

const ALLOW: &[&str] = &["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"];

fn response_to(bytes: &[u8]) -> (Rejection, rsip::Response) {
    let rejection = parse(bytes).expect_err("the request must be refused");
    let out = rejection_response(bytes, &rejection, ALLOW).expect("a response");
    let response = match rsip::SipMessage::try_from(out.as_slice()) {
        Ok(SipMessage::Response(r)) => r,
        other => panic!("{other:?}\n{}", String::from_utf8_lossy(&out)),
    };
    (rejection, response)
}

fn values(headers: &rsip::Headers, name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value().to_string())
        .collect()
}

#[test]
fn a_refused_request_gets_a_response_with_its_via_call_id_and_cseq() {
    let request = data("sip-torture/rfc4475/clerr.dat");
    let (rejection, response) = response_to(&request);
    assert_eq!(response.status_code.code(), 400);
    let text = String::from_utf8(rejection_response(&request, &rejection, ALLOW).unwrap()).unwrap();
    assert!(
        text.starts_with(
            "SIP/2.0 400 Bad Request: Content-Length 9999 exceeds body of 154 bytes\r\n"
        ),
        "{text}"
    );
    assert_eq!(
        values(&response.headers, "Via"),
        ["SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523"]
    );
    assert_eq!(
        response.call_id_header().unwrap().value(),
        "clerr.0ha0isndaksdjweiafasdk3"
    );
    assert_eq!(response.cseq_header().unwrap().value(), "8 INVITE");
    assert_eq!(values(&response.headers, "Content-Length"), ["0"]);
    assert!(
        response.to_header().unwrap().tag().unwrap().is_some(),
        "a To tag is added"
    );
    assert!(response.body.is_empty());
}

#[test]
fn every_refused_rfc4475_request_with_via_call_id_and_cseq_gets_a_parseable_response() {
    let mut answered = 0;
    for file in [
        "badinv01.dat",
        "clerr.dat",
        "ncl.dat",
        "scalar02.dat",
        "quotbal.dat",
        "ltgtruri.dat",
        "lwsruri.dat",
        "escruri.dat",
        "regbadct.dat",
        "badaspec.dat",
        "baddn.dat",
        "badvers.dat",
        "mismatch01.dat",
        "mismatch02.dat",
        "unkscm.dat",
        "novelsc.dat",
        "multi01.dat",
        "mcl01.dat",
        "intmeth.dat",
        "esc02.dat",
    ] {
        let request = data(&format!("sip-torture/rfc4475/{file}"));
        let (rejection, response) = response_to(&request);
        assert_eq!(response.status_code.code(), rejection.status, "{file}");
        let raw = scan::head(
            &request,
            scan::start_line(&request).1,
            &Limits::UDP,
            Mode::Lenient,
        )
        .unwrap();
        let raw_values = |name: &str| -> Vec<String> {
            raw.fields
                .iter()
                .filter(|f| f.is(name))
                .map(|f| f.value.to_string())
                .collect()
        };
        assert_eq!(
            values(&response.headers, "Via"),
            raw_values("Via"),
            "{file}"
        );
        assert_eq!(
            values(&response.headers, "Call-ID")[..],
            raw_values("Call-ID")[..1],
            "{file}"
        );
        assert_eq!(
            values(&response.headers, "CSeq")[..],
            raw_values("CSeq")[..1],
            "{file}"
        );
        answered += 1;
    }
    assert_eq!(answered, 20);
}

#[test]
fn a_501_lists_the_allowed_methods() {
    let (rejection, response) = response_to(&data("sip-torture/rfc4475/mismatch02.dat"));
    assert_eq!((rejection.status, rejection.allow), (501, true));
    assert_eq!(
        values(&response.headers, "Allow"),
        ["INVITE, ACK, CANCEL, BYE, OPTIONS"]
    );
    let (_, response) = response_to(&data("sip-torture/rfc4475/clerr.dat"));
    assert!(values(&response.headers, "Allow").is_empty());
}

#[test]
fn a_to_that_has_a_tag_keeps_it() {
    let tagged = options_with(
        "To: Bob <sip:bob@example.com>",
        "To: Bob <sip:bob@example.com>;tag=abc",
    );
    let broken = String::from_utf8(tagged)
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 300");
    let (_, response) = response_to(broken.as_bytes());
    assert_eq!(
        response.to_header().unwrap().value(),
        "Bob <sip:bob@example.com>;tag=abc"
    );
}

#[test]
fn the_added_tag_is_the_same_for_a_retransmission() {
    let request = data("sip-torture/rfc4475/clerr.dat");
    let rejection = parse(&request).unwrap_err();
    let first = rejection_response(&request, &rejection, ALLOW);
    assert_eq!(first, rejection_response(&request, &rejection, ALLOW));
}

#[test]
fn responses_and_acks_are_never_answered() {
    for file in ["bigcode.dat", "scalarlg.dat"] {
        let bytes = data(&format!("sip-torture/rfc4475/{file}"));
        let rejection = parse(&bytes).unwrap_err();
        assert_eq!(
            rejection_response(&bytes, &rejection, ALLOW),
            None,
            "{file}"
        );
    }
    let ack = String::from_utf8(options_with("OPTIONS sip", "ACK sip"))
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 300");
    let rejection = parse(ack.as_bytes()).unwrap_err();
    assert_eq!(rejection_response(ack.as_bytes(), &rejection, ALLOW), None);
}

#[test]
fn without_via_call_id_or_cseq_there_is_nothing_to_answer() {
    // RFC 4475 "insuf" has no Call-ID.
    let insuf = data("sip-torture/rfc4475/insuf.dat");
    let rejection = parse(&insuf).unwrap_err();
    assert_eq!(rejection_response(&insuf, &rejection, ALLOW), None);
    assert_eq!(
        rejection_response(b"\x16\x03\x01\x02\x00", &rejection, ALLOW),
        None
    );
    assert_eq!(rejection_response(b"", &rejection, ALLOW), None);
}

#[test]
fn nothing_in_the_rejection_or_the_request_can_add_a_line_to_the_response() {
    let rejection = Rejection::bad_request("evil\r\nX-Injected: 1");
    let request = options_with(
        "Call-ID: a84b4c76e66710@pc33.example.com",
        "Call-ID: a\rX-Injected: 2",
    );
    let out = rejection_response(&request, &rejection, &["INVITE\r\nX-Injected: 3"]).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("\nX-Injected"), "{text}");
    assert!(!text.contains("\rX-Injected"), "{text}");
}
