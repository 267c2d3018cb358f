//! `mail::parse` and everything the adapters call after it, on one message: no input may
//! panic, and what comes out keeps its promises (addresses parse back to themselves, M3;
//! a forward's customers are never insiders, E5/M6).
#![no_main]

use leadline::mail::forward::{ForwardOutcome, detect};
use leadline::mail::{Correspondence, Insiders, correspondence, parse, parse_vcards};
use leadline::matcher::{EmailAddress, parse_email};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mail) = parse(data) else {
        return;
    };
    for mailbox in mail.from.iter().chain(mail.recipients()) {
        assert_eq!(parse_email(mailbox.address.as_str()), Ok(mailbox.address.clone()));
    }
    // The first recipient plays the forward address, the sender an employee.
    let insiders = Insiders::new(
        mail.to.iter().take(1).map(|m| m.address.clone()),
        mail.from.iter().map(|m| m.address.clone()),
    );
    let is_insider = |a: &EmailAddress| insiders.contains(a);
    if let Correspondence::Customer { customers, .. } = correspondence(&mail, &insiders) {
        assert!(!customers.is_empty());
        assert!(customers.iter().all(|c| !is_insider(&c.address)));
    }
    match detect(&mail, &insiders) {
        ForwardOutcome::Forwarded { customers, .. } | ForwardOutcome::Bcc { customers } => {
            assert!(!customers.is_empty());
            assert!(customers.iter().all(|c| !is_insider(&c.address)));
        }
        ForwardOutcome::Unknown(_) => {}
    }
    for card in &mail.vcards {
        let _ = parse_vcards(&card.content);
    }
});
