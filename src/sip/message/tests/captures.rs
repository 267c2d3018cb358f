//! The 235 real messages of `tests/data/sip-traces/wireshark/` (index.tsv): all must be
//! accepted, and read as the index says (start line, Call-ID, CSeq, body length).

use super::*;

#[test]
fn every_captured_message_is_accepted_and_read_as_indexed() {
    let index = String::from_utf8(data("sip-traces/wireshark/index.tsv")).unwrap();
    let header: Vec<&str> = index.lines().next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (file, start, call_id, cseq, body) = (
        col("file"),
        col("start_line"),
        col("call_id"),
        col("cseq"),
        col("body_octets_in_datagram"),
    );
    let mut failures = Vec::new();
    let mut count = 0;
    for row in index.lines().skip(1).filter(|r| !r.trim().is_empty()) {
        count += 1;
        let cols: Vec<&str> = row.split('\t').collect();
        let bytes = data(&format!("sip-traces/wireshark/{}", cols[file]));
        let m = match parse(&bytes) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{}: {e}", cols[file]));
                continue;
            }
        };
        let first_word = cols[start].split(' ').next().unwrap();
        let read_start = m.start_line();
        if !read_start.starts_with(first_word) {
            failures.push(format!("{}: start line {read_start:?}", cols[file]));
        }
        if m.call_id_header()
            .map(|c| c.value().to_string())
            .ok()
            .as_deref()
            != Some(cols[call_id])
        {
            failures.push(format!("{}: Call-ID {:?}", cols[file], m.call_id_header()));
        }
        let typed = m
            .cseq_header()
            .and_then(|c| c.typed())
            .map(|c| c.to_string());
        if typed.as_deref() != Ok(cols[cseq]) {
            failures.push(format!("{}: CSeq {typed:?}", cols[file]));
        }
        let body_len = match &m {
            SipMessage::Request(r) => r.body.len(),
            SipMessage::Response(r) => r.body.len(),
        };
        if body_len.to_string() != cols[body] {
            failures.push(format!("{}: body of {body_len} bytes", cols[file]));
        }
    }
    assert_eq!(count, 235);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_hostile_invite_with_an_empty_user_part_is_read_not_refused() {
    // metasploit's `sip:@127.0.0.1`: RFC 3261 wants 1*user, but an empty user is
    // unambiguous and the captures must all be accepted; the layers above treat it as
    // hostile input.
    let m = parse(&data(
        "sip-traces/wireshark/metasploit-sip-invite-spoof/metasploit-sip-invite-spoof-001.sip",
    ))
    .unwrap();
    let SipMessage::Request(r) = m else { panic!() };
    assert_eq!(r.uri.user(), Some(""));
    assert_eq!(r.uri.host().to_string(), "127.0.0.1");
}
