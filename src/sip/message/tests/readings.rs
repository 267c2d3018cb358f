//! What particular corpus messages read as once accepted: the places where rsip alone
//! would read them wrong.

use super::corpus::stream;
use super::*;

fn request(path: &str) -> rsip::Request {
    match parse(&data(path)) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("{path}: {other:?}"),
    }
}

#[test]
fn wsinv_folded_and_spaced_headers_read_as_typed_headers() {
    let r = request("sip-torture/rfc4475/wsinv.dat");
    // LWS around '=' would leave rsip with a parameter named "tag " and no tag.
    let to = r.to_header().unwrap().typed().unwrap();
    assert_eq!(to.tag().map(|t| t.value()), Some("1918181833n"));
    let from = r.from_header().unwrap().typed().unwrap();
    assert_eq!(from.tag().map(|t| t.value()), Some("98asjd8"));
    let cseq = r.cseq_header().unwrap().typed().unwrap();
    assert_eq!((cseq.seq, cseq.method), (9, rsip::Method::Invite));
    assert_eq!(r.max_forwards_header().unwrap().value(), "68");
    let via = r.top_via_header().unwrap().typed().unwrap();
    assert_eq!(via.branch().map(|b| b.value()), Some("390skdjuw"));
    assert_eq!(r.body.len(), 150);
}

#[test]
fn dblreq_trailing_octets_are_discarded_not_read_as_an_invite() {
    let r = request("sip-torture/rfc4475/dblreq.dat");
    assert_eq!(r.method, rsip::Method::Register);
    assert!(
        r.body.is_empty(),
        "Content-Length: 0, the INVITE behind it is noise"
    );
}

#[test]
fn semiuri_user_part_with_semicolons_stays_the_user_part() {
    let r = request("sip-torture/rfc4475/semiuri.dat");
    assert_eq!(r.uri.user(), Some("user;par=u%40example.net"));
    assert_eq!(r.uri.host().to_string(), "example.com");
    assert!(r.uri.params.is_empty());
}

#[test]
fn a_telephone_subscriber_user_part_keeps_its_host() {
    let r = request("sip-torture/sofia-sip/test36.txt");
    assert_eq!(r.uri.host().to_string(), "gw1.wcom.com");
    assert!(
        r.uri
            .user()
            .is_some_and(|u| u.starts_with("+1-972-555-2222;phone-context"))
    );
    assert!(r.uri.headers.is_empty());
}

#[test]
fn inv2543_without_content_length_has_the_rest_of_the_datagram_as_body() {
    let r = request("sip-torture/rfc4475/inv2543.dat");
    assert_eq!(r.body.len(), 105);
    assert!(r.body.starts_with(b"v=0"));
}

#[test]
fn a_datagram_without_content_length_gets_one_so_it_frames_on_a_stream() {
    let r = request("sip-torture/rfc4475/inv2543.dat");
    assert_eq!(r.header_value("Content-Length").as_deref(), Some("105"));
    let bytes = r.to_bytes();
    assert_eq!(frame(&bytes, &Limits::UDP), Frame::Message(bytes.len()));
}

#[test]
fn mpart01_binary_body_is_kept_octet_for_octet() {
    let bytes = data("sip-torture/rfc4475/mpart01.dat");
    let r = request("sip-torture/rfc4475/mpart01.dat");
    assert_eq!(r.body.len(), 553);
    assert!(bytes.ends_with(&r.body));
}

#[test]
fn rfc5118_ports_inside_and_outside_the_brackets() {
    let r = request("sip-torture/rfc5118/port-ambiguous.dat");
    assert_eq!(r.uri.host_with_port.to_string(), "[2001:db8::10:5070]");
    assert_eq!(r.uri.host_with_port.port, None);
    let r = request("sip-torture/rfc5118/port-unambiguous.dat");
    assert_eq!(r.uri.host_with_port.port.map(|p| p.value()), Some(5070));
}

#[test]
fn the_crlf_copies_are_cut_to_their_content_length() {
    let r = request("sip-torture/rfc5118-crlf-ersip/ipv6-in-sdp.dat");
    assert_eq!(r.body.len(), 241);
    let r = request("sip-torture/rfc5118-crlf-ersip/mult-ip-in-sdp.dat");
    assert_eq!(r.body.len(), 181);
}

#[test]
fn sofia_test10_as_one_datagram_is_its_register_alone() {
    // As a stream (the index's mode) the SIP/3.0 INVITE behind it is refused; as one
    // datagram the octets after Content-Length: 0 are discarded (§18.3).
    let r = request("sip-torture/sofia-sip/test10.txt");
    assert_eq!(r.method, rsip::Method::Register);
    assert_eq!(
        stream(&data("sip-torture/sofia-sip/test10.txt"))
            .unwrap_err()
            .status,
        505
    );
}
