//! `mail::parse_vcards` on one file: no input may panic, and every e-mail address of a
//! draft is one the matcher reads back to itself (M3).
#![no_main]

use leadline::mail::parse_vcards;
use leadline::matcher::parse_email;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(drafts) = parse_vcards(data) {
        assert!(!drafts.is_empty());
        for address in drafts.iter().flat_map(|d| &d.emails) {
            assert_eq!(parse_email(address.as_str()), Ok(address.clone()));
        }
    }
});
