//! One rule at a time, on a well-formed OPTIONS with one thing changed.

use super::*;

#[test]
fn the_template_is_accepted() {
    assert_eq!(status(OPTIONS.as_bytes()), 0);
}

#[test]
fn a_message_over_max_message_is_513_or_413_when_the_body_is_the_excess() {
    let limits = Limits {
        max_message: 400,
        ..Limits::UDP
    };
    let body = "x".repeat(300);
    let big = options_with(
        "Content-Length: 0\r\n\r\n",
        &format!("Content-Length: 300\r\n\r\n{body}"),
    );
    let r = parse_message(&big, &limits).unwrap_err();
    assert_eq!(r.status, 413, "{r}");
    let many = options_with(
        "Max-Forwards: 70\r\n",
        &"X-Pad: padding padding padding\r\n".repeat(20),
    );
    let r = parse_message(&many, &limits).unwrap_err();
    assert_eq!(r.status, 513, "{r}");
    assert!(r.reason.starts_with("Message Too Large: message of"));
}

#[test]
fn more_header_fields_than_max_headers_is_513() {
    let limits = Limits {
        max_headers: 10,
        ..Limits::UDP
    };
    let extra = options_with("Max-Forwards: 70\r\n", &"X-A: 1\r\n".repeat(5));
    assert_eq!(parse_message(&extra, &limits).unwrap_err().status, 513);
    assert!(parse_message(OPTIONS.as_bytes(), &limits).is_ok());
}

#[test]
fn a_header_field_longer_than_max_header_line_is_513_even_when_folded() {
    let limits = Limits {
        max_header_line: 100,
        ..Limits::UDP
    };
    let long = options_with(
        "Max-Forwards: 70\r\n",
        &format!("X-Long: {}\r\n", "a".repeat(100)),
    );
    let r = parse_message(&long, &limits).unwrap_err();
    assert_eq!(r.status, 513);
    assert!(r.reason.contains("header line of"), "{r}");
    let folded = options_with(
        "Max-Forwards: 70\r\n",
        &format!("X-Long: {}\r\n", ["aaaaaaaaaaaaaaaaaaaa"; 8].join("\r\n ")),
    );
    let r = parse_message(&folded, &limits).unwrap_err();
    assert!(r.reason.contains("folded header field"), "{r}");
}

#[test]
fn a_long_start_line_is_513() {
    let limits = Limits {
        max_header_line: 40,
        ..Limits::UDP
    };
    let r = parse_message(OPTIONS.as_bytes(), &limits).unwrap_err();
    assert_eq!(r.status, 513);
}

#[test]
fn bare_lf_line_ends_are_accepted_and_mixed_ones_too() {
    let lf = OPTIONS.replace("\r\n", "\n");
    assert_eq!(status(lf.as_bytes()), 0);
    let mixed = OPTIONS.replacen("\r\n", "\n", 3);
    assert_eq!(status(mixed.as_bytes()), 0);
}

#[test]
fn a_bare_cr_inside_the_header_section_is_400() {
    let r = parse(&options_with(
        "Max-Forwards: 70",
        "Max-Forwards: 70\rX-Evil: 1",
    ))
    .unwrap_err();
    assert_eq!(r.status, 400);
    assert!(r.reason.contains("bare CR"), "{r}");
}

#[test]
fn leading_empty_lines_are_ignored() {
    let padded = format!("\r\n\r\n\n{OPTIONS}");
    assert_eq!(status(padded.as_bytes()), 0);
}

#[test]
fn an_empty_or_blank_datagram_is_400() {
    assert_eq!(status(b""), 400);
    assert_eq!(status(b"\r\n\r\n"), 400);
}

#[test]
fn a_header_line_without_a_colon_is_400() {
    let r = parse(&options_with("Max-Forwards: 70\r\n", "Foobar roobar\r\n")).unwrap_err();
    assert!(r.reason.contains("header line without a colon"), "{r}");
}

#[test]
fn a_header_name_that_is_not_a_token_is_400() {
    let r = parse(&options_with("Max-Forwards: 70\r\n", "Bad Name: 1\r\n")).unwrap_err();
    assert!(r.reason.contains("header name"), "{r}");
}

#[test]
fn a_missing_content_length_means_the_rest_of_the_datagram() {
    let with_body = options_with("Content-Length: 0\r\n\r\n", "\r\nhello");
    let Ok(SipMessage::Request(r)) = parse(&with_body) else {
        panic!()
    };
    assert_eq!(r.body, b"hello");
}

#[test]
fn a_body_longer_than_content_length_is_cut_a_shorter_one_is_400() {
    let longer = options_with(
        "Content-Length: 0\r\n\r\n",
        "Content-Length: 5\r\n\r\nhello world",
    );
    let Ok(SipMessage::Request(r)) = parse(&longer) else {
        panic!()
    };
    assert_eq!(r.body, b"hello");
    let shorter = options_with(
        "Content-Length: 0\r\n\r\n",
        "Content-Length: 150\r\n\r\n12345678901234567890",
    );
    assert_eq!(
        parse(&shorter).unwrap_err().reason,
        "Bad Request: Content-Length 150 exceeds body of 20 bytes"
    );
}

#[test]
fn a_content_length_beyond_any_integer_is_400_not_an_overflow() {
    let huge = options_with(
        "Content-Length: 0",
        "Content-Length: 99999999999999999999999999",
    );
    assert_eq!(status(&huge), 400);
    let hex = options_with("Content-Length: 0", "Content-Length: 0x10");
    assert_eq!(status(&hex), 400);
}

#[test]
fn each_missing_required_header_is_named() {
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        let without: String = OPTIONS
            .split_inclusive("\r\n")
            .filter(|l| !l.starts_with(&format!("{name}:")))
            .collect();
        let r = parse(without.as_bytes()).unwrap_err();
        assert_eq!(r.reason, format!("Bad Request: missing {name}"));
    }
}

#[test]
fn compact_header_names_count_as_their_long_forms() {
    let compact = OPTIONS
        .replace("Via:", "v:")
        .replace("To:", "t:")
        .replace("From:", "f:")
        .replace("Call-ID:", "i:")
        .replace("Content-Length:", "l:");
    let Ok(m) = parse(compact.as_bytes()) else {
        panic!()
    };
    assert!(m.via_header().is_ok() && m.call_id_header().is_ok());
    let twice = options_with(
        "Call-ID: a84b4c76e66710@pc33.example.com\r\n",
        "Call-ID: a\r\ni: b\r\n",
    );
    assert_eq!(
        parse(&twice).unwrap_err().reason,
        "Bad Request: multiple Call-ID headers"
    );
}

#[test]
fn compact_forms_rsip_does_not_know_are_expanded() {
    let refer = options_with("Max-Forwards: 70\r\n", "r: <sip:carol@example.com>\r\n");
    let Ok(m) = parse(&refer) else { panic!() };
    assert!(m.refer_to_header().is_some());
}

#[test]
fn max_forwards_must_be_0_to_255() {
    assert_eq!(
        status(&options_with("Max-Forwards: 70", "Max-Forwards: 255")),
        0
    );
    assert_eq!(
        status(&options_with("Max-Forwards: 70", "Max-Forwards: 256")),
        400
    );
    assert_eq!(
        status(&options_with("Max-Forwards: 70", "Max-Forwards: -1")),
        400
    );
    assert_eq!(
        status(&options_with("Max-Forwards: 70", "Max-Forwards: seventy")),
        400
    );
}

#[test]
fn methods_are_case_sensitive_so_lowercase_invite_is_unknown() {
    let lower = options_with("OPTIONS sip", "options sip").to_vec();
    let lower = String::from_utf8(lower)
        .unwrap()
        .replace("63104 OPTIONS", "63104 options");
    let r = parse(lower.as_bytes()).unwrap_err();
    assert_eq!((r.status, r.allow), (501, true));
}

#[test]
fn a_broken_header_is_400_even_with_an_unknown_method() {
    let unknown = String::from_utf8(options_with("OPTIONS sip", "FROB sip"))
        .unwrap()
        .replace("63104 OPTIONS", "63104 FROB");
    assert_eq!(status(unknown.as_bytes()), 501);
    let broken = unknown.replace("Call-ID: a84b4c76e66710@pc33.example.com", "Call-ID: a b");
    assert_eq!(status(broken.as_bytes()), 400);
}

#[test]
fn a_method_that_is_not_a_token_is_400() {
    let bad = String::from_utf8(options_with("OPTIONS sip", "OPT<IONS sip")).unwrap();
    assert_eq!(status(bad.as_bytes()), 400);
}

#[test]
fn the_version_is_checked_before_anything_else_on_the_line() {
    assert_eq!(
        status(&options_with("SIP/2.0\r\nVia", "SIP/3.0\r\nVia")),
        505
    );
    assert_eq!(status(&options_with("SIP/2.0\r\nVia", "sip/2.0\r\nVia")), 0);
    assert_eq!(
        status(&options_with("SIP/2.0\r\nVia", "HTTP/1.1\r\nVia")),
        400
    );
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
}

#[test]
fn request_uri_schemes_other_than_sip_sips_tel_are_416() {
    let tel = String::from_utf8(options_with(
        "sip:bob@example.com SIP",
        "tel:+4930123456 SIP",
    ))
    .unwrap();
    assert_eq!(status(tel.as_bytes()), 0);
    let sips = options_with("sip:bob@example.com SIP", "sips:bob@example.com SIP");
    assert_eq!(status(&sips), 0);
    let mailto = options_with("sip:bob@example.com SIP", "mailto:bob@example.com SIP");
    assert_eq!(parse(&mailto).unwrap_err().status, 416);
}

#[test]
fn a_display_name_with_a_less_than_sign_is_refused_because_rsip_would_misread_it() {
    let spoof = options_with(
        "From: Alice <sip:alice@example.com>",
        "From: \"<sip:+4930123@victim.example>\" <sip:attacker@example.com>",
    );
    let r = parse(&spoof).unwrap_err();
    assert!(r.reason.contains("display name contains '<'"), "{r}");
}

#[test]
fn a_latin1_display_name_is_accepted_with_a_replacement_character() {
    let mut latin1 = OPTIONS
        .replace("From: Alice", "From: \"M\u{0}ller\"")
        .into_bytes();
    let at = latin1.iter().position(|&b| b == 0).unwrap();
    latin1[at] = 0xFC; // ü in ISO 8859-1
    let Ok(m) = parse(&latin1) else { panic!() };
    let from = m.from_header().unwrap().typed().unwrap();
    assert_eq!(from.display_name.as_deref(), Some("M\u{FFFD}ller"));
    // rsip alone drops every header after a line that is not UTF-8 (and still accepts).
    assert!(m.call_id_header().is_ok() && m.cseq_header().is_ok());
}

#[test]
fn folded_and_spaced_headers_reach_rsip_in_canonical_form() {
    let spaced = options_with(
        "From: Alice <sip:alice@example.com>;tag=1928301774",
        "From  :  Alice\r\n  <sip:alice@example.com>\r\n ;  tag  =  1928301774",
    );
    let Ok(m) = parse(&spaced) else { panic!() };
    assert_eq!(
        m.from_header().unwrap().value(),
        "Alice <sip:alice@example.com>;tag=1928301774"
    );
    assert_eq!(
        m.from_header().unwrap().tag().unwrap().unwrap().value(),
        "1928301774"
    );
}

#[test]
fn the_status_line_needs_a_code_from_100_to_699() {
    let response = |line: &str| {
        format!(
            "{line}\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\n\
             To: <sip:b@example.com>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    assert_eq!(status(response("SIP/2.0 200 OK").as_bytes()), 0);
    assert_eq!(status(response("SIP/2.0 100").as_bytes()), 0);
    assert_eq!(status(response("SIP/2.0 699 Custom").as_bytes()), 0);
    for bad in [
        "SIP/2.0 99 Low",
        "SIP/2.0 700 High",
        "SIP/2.0 0200 OK",
        "SIP/2.0 20x OK",
        "SIP/2.0",
    ] {
        assert_eq!(status(response(bad).as_bytes()), 400, "{bad}");
    }
    assert_eq!(status(response("SIP/3.0 200 OK").as_bytes()), 505);
}

#[test]
fn the_top_via_must_be_readable_by_rsip() {
    let unknown = options_with("SIP/2.0/UDP pc33", "SIP/2.0/CARRIER-PIGEON pc33");
    let r = parse(&unknown).unwrap_err();
    assert!(r.reason.contains("Via unreadable"), "{r}");
    // Further down the list an unknown transport is fine (RFC 4475 "transports").
    let lower = options_with(
        "Max-Forwards: 70\r\n",
        "Via: SIP/2.0/CARRIER-PIGEON relay.example.com;branch=z9hG4bK2\r\nMax-Forwards: 70\r\n",
    );
    assert_eq!(status(&lower), 0);
}

#[test]
fn expires_may_be_delta_seconds_or_an_rfc1123_date() {
    for ok in [
        "Expires: 3600",
        "Expires: 0",
        "Expires: Thu, 01 Dec 2040 16:00:00 GMT",
    ] {
        assert_eq!(status(&options_with("Max-Forwards: 70", ok)), 0, "{ok}");
    }
    for bad in [
        "Expires: soon",
        "Expires: -1",
        "Expires: Thu, 01 Dec 2040 16:00:00 EST",
    ] {
        assert_eq!(status(&options_with("Max-Forwards: 70", bad)), 400, "{bad}");
    }
}

#[test]
fn a_reason_quoting_peer_input_is_bounded() {
    let long_host = format!("sip:bob@{}.example.com SIP", "a".repeat(5000));
    let bad = options_with(
        "sip:bob@example.com SIP",
        &long_host.replace("aaaa.", "aaaa.."),
    )
    .to_vec();
    let r = parse(&bad).unwrap_err();
    assert!(
        r.reason.chars().count() < 300,
        "{} characters",
        r.reason.len()
    );
    assert!(r.reason.ends_with('…'));
}
