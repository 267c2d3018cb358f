//! The grammar on the examples of RFC 3261, RFC 4475 and RFC 5118.

use super::fields::*;
use super::uri::*;
use super::*;

#[test]
fn semicolons_in_the_user_part_stay_in_the_user_part() {
    let Uri::Sip(u) = uri(b"sip:user;par=u%40example.net@example.com").unwrap() else {
        panic!("not a SIP URI");
    };
    assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
    assert_eq!(u.host, Host::Name(b"example.com"));
    assert!(u.params.is_empty());
}

#[test]
fn an_unbracketed_ipv6_host_is_refused() {
    assert!(uri(b"sip:2001:db8::10").is_err());
    assert!(uri(b"sip:[2001:db8::10]:5070").is_ok());
    let Uri::Sip(u) = uri(b"sip:[2001:db8::10:5070]").unwrap() else {
        panic!()
    };
    assert_eq!(
        u.port, None,
        "RFC 5118 §4.3: the port is inside the brackets"
    );
}

#[test]
fn uri_headers_and_params_are_split() {
    let Uri::Sip(u) = uri(b"sip:user@example.com;lr;x=1?Route=%3Csip:a%3E&b=").unwrap() else {
        panic!()
    };
    assert_eq!(u.params, b"lr;x=1");
    assert_eq!(u.headers, Some(&b"Route=%3Csip:a%3E&b="[..]));
    assert!(uri(b"sip:user@example.com;").is_err());
    assert!(uri(b"sip:user@example.com;lr=").is_err());
    assert!(uri(b"sip:us%zzer@example.com").is_err());
    assert!(uri(b"sip:user@exa mple.com").is_err());
    assert!(uri(b"sip:user@example.com:70000").is_err());
}

#[test]
fn other_schemes_are_checked_for_their_characters_only() {
    assert!(matches!(uri(b"tel:+1-201-555-0123"), Ok(Uri::Other { .. })));
    assert!(uri(b"soap.beep://192.0.2.103:3002").is_ok());
    assert!(uri(b"1tel:123").is_err());
    assert!(uri(b"tel:").is_err());
    assert!(uri(b"http://a b").is_err());
}

#[test]
fn name_addr_forms() {
    let na = single_name_addr(br#""J Rosenberg \\\""  <sip:jdrosen@example.com> ; tag = 98asjd8"#)
        .unwrap();
    assert_eq!(na.param("tag"), Some(Some(&b"98asjd8"[..])));
    assert_eq!(
        na.canonical(),
        r#""J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8"#
    );
    let na = single_name_addr(b"caller<sip:caller@example.com>;tag=323").unwrap();
    assert_eq!(na.display, Some(&b"caller"[..]));
    let na = single_name_addr(b"sip:caller@example.net;tag=1").unwrap();
    assert_eq!(na.canonical(), "<sip:caller@example.net>;tag=1");
    assert!(single_name_addr(br#""Mr. J. User <sip:j.user@example.com>"#).is_err());
    assert!(single_name_addr(b"Bell, Alexander <sip:a.g.bell@example.com>").is_err());
    assert!(single_name_addr(br#""Watson" < sip:t.watson@example.org >"#).is_err());
    assert!(single_name_addr(b"sip:a@b, sip:c@d").is_err());
    assert!(single_name_addr(b"<sip:a@b>;;").is_err());
}

#[test]
fn contact_lists_star_and_comments() {
    assert_eq!(contact_list(b" * ").unwrap(), None);
    let list = contact_list(
        br#""Quoted string \"\"" <sip:jdrosen@bell-labs.com> ; newparam = newvalue ; q = 0.33 (((nested comments) and (more))) , tel:4443322"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(list.len(), 2);
    assert!(contact_list(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err());
    assert!(contact_list(b"<sip:user@example.com?Route=%3Csip:sip.example.com%3E>").is_ok());
    assert!(contact_list(br#""Joe" <sip:joe@example.org>;;;;"#).is_err());
}

#[test]
fn via_values_with_lws_and_lists() {
    let v = via_list(
        b"SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239",
    )
    .unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(
        v[0].canonical(),
        "SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8"
    );
    let v = via_list(b"SIP/2.0/UDP first.example.com: 4000;ttl=16 ;maddr=224.2.0.1").unwrap();
    assert_eq!(v[0].port, Some(4000));
    let v = via_list(b"SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255").unwrap();
    assert_eq!(v[0].params[0].value, Some(&b"2001:db8::9:255"[..]));
    assert!(via_list(b"SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
    assert!(via_list(b"SIP/7.0/UDP c.example.com").is_err());
    assert!(via_list(b"SIP/2.0/TCP srlab.example.com:5060;maddr=192.0.2.5 (NTA 1.0)").is_ok());
}

#[test]
fn scalars() {
    assert_eq!(cseq(b"0009 INVITE").unwrap(), (9, &b"INVITE"[..]));
    assert!(cseq(b"36893488147419103232 REGISTER").is_err());
    assert!(cseq(b"4294967296 INVITE").is_err());
    assert!(cseq(b"4294967295 INVITE").is_ok());
    assert!(cseq(b"8INVITE").is_err());
    assert_eq!(bounded_number(b"0068", 255), Some(68));
    assert_eq!(bounded_number(b"300", 255), None);
    assert!(call_id(b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{").is_ok());
    assert!(call_id(b"a b").is_err());
    assert!(call_id(b"a@b@c").is_err());
    assert!(expires(b"180").is_ok());
    assert!(expires(b"Thu, 01 Dec 2040 16:00:00 GMT").is_ok());
    assert!(expires(b"Thu, 44 Dec 19999 16:00:00 EDT").is_err());
    assert!(expires(b"Fri, 01 Jan 2010 16:00:00 EST").is_err());
    assert!(expires(b"0 0l@company.com").is_err());
}
