use super::*;

fn request(text: &str) -> Request {
    Request::try_from(text.replace('\n', "\r\n").as_str()).expect("parses")
}

fn invite(extra: &str) -> Request {
    request(&format!(
        "INVITE sip:+4930901820@gw.example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKone
Max-Forwards: 70
From: <sip:+4917612345678@carrier.example>;tag=abc
To: <sip:+4930901820@gw.example.com>
Call-ID: call-1@192.0.2.1
CSeq: 1 INVITE
{extra}Content-Length: 0

"
    ))
}

fn options(extra: &str) -> Request {
    request(&format!(
        "OPTIONS sip:gw.example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKopt
{extra}From: <sip:probe@192.0.2.1>;tag=p1
To: <sip:gw.example.com>
Call-ID: opt-1
CSeq: 7 OPTIONS
Content-Length: 0

"
    ))
}

fn own() -> Vec<SocketAddr> {
    vec!["198.51.100.7:5070".parse().unwrap()]
}

#[test]
fn an_unknown_required_extension_is_refused_with_420_naming_it() {
    // RFC 4475 §3.3.5 (bext01): Require lists two tags nobody supports; Proxy-Require is
    // for proxies and does not concern the UAS.
    let req = options(
        "Require: nothingSupportsThis, nothingSupportsThisEither\nProxy-Require: noProxiesSupportThis\nMax-Forwards: 6\n",
    );
    let refusal = check(&req, &own()).unwrap_err();
    assert_eq!(refusal.status(), 420);
    assert_eq!(
        refusal,
        Refusal::BadExtension(vec![
            "nothingSupportsThis".into(),
            "nothingSupportsThisEither".into()
        ])
    );
}

#[test]
fn max_forwards_zero_refuses_an_initial_invite_with_483() {
    let req = invite("")
        .to_string()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    let req = Request::try_from(req.as_str()).unwrap();
    assert_eq!(check(&req, &own()), Err(Refusal::TooManyHops));
}

#[test]
fn max_forwards_zero_on_options_is_answered_by_the_endpoint() {
    // RFC 4475 §3.3.7 (zeromf): an endpoint processes it as if Max-Forwards were positive.
    let req = options("Max-Forwards: 0\n");
    assert_eq!(check(&req, &own()), Ok(()));
}

#[test]
fn an_invite_carrying_our_own_via_is_a_loop() {
    let req = invite("Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bKours\n");
    let refusal = check(&req, &own()).unwrap_err();
    assert_eq!(refusal.status(), 482);
}

#[test]
fn our_address_with_another_port_is_not_our_via() {
    let req = invite("Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKother\n");
    assert_eq!(check(&req, &own()), Ok(()));
    let default_port = invite("Via: SIP/2.0/TCP 198.51.100.7;branch=z9hG4bKother\n");
    assert_eq!(check(&default_port, &own()), Ok(()));
    let v6 = vec!["[2001:db8::7]:5060".parse().unwrap()];
    let req = invite("Via: SIP/2.0/UDP [2001:db8::7];branch=z9hG4bKv6\n");
    assert_eq!(check(&req, &v6).unwrap_err().status(), 482);
}

#[test]
fn a_merged_request_is_refused_with_482_but_a_retransmission_is_not() {
    let mut tracker = MergeTracker::default();
    let first = invite("");
    assert_eq!(tracker.observe(&first, 1_000), Ok(()));
    // The same request again (retransmission): the transaction layer absorbs it.
    assert_eq!(tracker.observe(&first, 1_500), Ok(()));
    // The same From tag, Call-ID and CSeq by another path: another top branch.
    let merged = Request::try_from(
        first
            .to_string()
            .replace("branch=z9hG4bKone", "branch=z9hG4bKtwo")
            .as_str(),
    )
    .unwrap();
    assert_eq!(tracker.observe(&merged, 2_000).unwrap_err().status(), 482);
    // After the transaction lifetime the key is forgotten.
    assert_eq!(tracker.observe(&merged, 40_000), Ok(()));
}

#[test]
fn in_dialog_requests_and_acks_are_not_merge_checked() {
    let mut tracker = MergeTracker::default();
    let in_dialog = invite("").to_string().replace(
        "To: <sip:+4930901820@gw.example.com>",
        "To: <sip:+4930901820@gw.example.com>;tag=xyz",
    );
    let a = Request::try_from(in_dialog.as_str()).unwrap();
    let b = Request::try_from(in_dialog.replace("z9hG4bKone", "z9hG4bKtwo").as_str()).unwrap();
    assert_eq!(tracker.observe(&a, 0), Ok(()));
    assert_eq!(tracker.observe(&b, 1), Ok(()));
}

#[test]
fn the_tracker_stays_bounded_under_a_flood() {
    let mut tracker = MergeTracker::default();
    let base = invite("").to_string();
    for i in 0..(MERGE_CAPACITY + 10) {
        let text = base.replace("call-1@", &format!("call-{i}@"));
        let req = Request::try_from(text.as_str()).unwrap();
        let _ = tracker.observe(&req, i as i64 / 1000);
    }
    assert!(tracker.seen.len() <= MERGE_CAPACITY);
}
