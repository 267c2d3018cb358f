//! `frame` over a stream buffer, cutting and parsing messages until it stops: no input
//! may panic, and every length it returns must be within the buffer.
#![no_main]

use leadline::sip::message::{Frame, Limits, frame, parse_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::UDP;
    let mut rest = data;
    loop {
        match frame(rest, &limits) {
            Frame::KeepAlive(n) => {
                assert!(n > 0 && n <= rest.len());
                rest = &rest[n..];
            }
            Frame::Message(n) => {
                assert!(n > 0 && n <= rest.len());
                let _ = parse_message(&rest[..n], &limits);
                rest = &rest[n..];
            }
            Frame::Incomplete | Frame::Invalid(_) => break,
        }
    }
});
