//! `parse_message` and `rejection_response` on one datagram: no input may panic, an
//! accepted message's typed Via/From/To/CSeq must read, and a response we build must be a
//! response rsip can read.
#![no_main]

use leadline::sip::message::{Limits, parse_message, rejection_response};
use libfuzzer_sys::fuzz_target;
use rsipstack::sip::{SipMessage, prelude::*};

fuzz_target!(|data: &[u8]| {
    match parse_message(data, &Limits::UDP) {
        Ok(message) => {
            assert!(message.top_via_header().and_then(|v| v.typed()).is_ok());
            assert!(message.from_header().and_then(|h| h.typed()).is_ok());
            assert!(message.to_header().and_then(|h| h.typed()).is_ok());
            assert!(message.cseq_header().and_then(|h| h.typed()).is_ok());
        }
        Err(rejection) => {
            if let Some(out) = rejection_response(data, &rejection, &["INVITE", "ACK", "BYE"]) {
                match SipMessage::try_from(out.as_slice()) {
                    Ok(SipMessage::Response(r)) => {
                        assert_eq!(r.status_code.code(), rejection.status)
                    }
                    other => panic!("unreadable response {other:?}"),
                }
            }
        }
    }
});
