//! mail-parser's own corpus (107 messages: RFC examples, Dovecot's broken MIME, Outlook /
//! Netscape / Eudora / PINE messages): every one reads into a `ParsedMail`, as stored (LF)
//! and with CRLF line ends, and agrees with the crate's expected results on From, Subject,
//! the number of attachments and the number of attached messages.

use leadline::mail::{ParsedMail, parse};
use leadline::matcher::parse_mailbox;

use crate::{read, tsv};

fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 20);
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Differences from expected.tsv, in words; empty when the message agrees.
fn differences(mail: &ParsedMail, row: &crate::Row) -> Vec<String> {
    let mut found = Vec::new();
    let expected_from = row.get("from");
    match parse_mailbox(expected_from) {
        // `Whomever <>`, `Moderator-Address <moderator>`: no address a CRM could match.
        Err(_) => {
            if !mail.from.is_empty() {
                found.push(format!("From: expected none, got {:?}", mail.from));
            }
        }
        Ok(expected) => match mail.from.first() {
            Some(got) if got.address == expected.address && got.name == expected.name => {}
            got => found.push(format!("From: expected {expected_from}, got {got:?}")),
        },
    }
    let expected_subject = Some(row.get("subject")).filter(|s| !s.is_empty());
    if mail.subject.as_deref() != expected_subject {
        found.push(format!(
            "Subject: expected {expected_subject:?}, got {:?}",
            mail.subject
        ));
    }
    let attachments: usize = row.get("attachments").parse().expect("a count");
    if mail.attachments.len() != attachments {
        found.push(format!(
            "attachments: expected {attachments}, got {}",
            mail.attachments.len()
        ));
    }
    let nested: usize = row.get("nested_message_parts").parse().expect("a count");
    if mail.messages.len() != nested {
        found.push(format!(
            "attached messages: expected {nested}, got {}",
            mail.messages.len()
        ));
    }
    found
}

#[test]
fn mail_parser_corpus_reads_every_message_as_expected() {
    let rows = tsv("email/mail-parser/expected.tsv");
    assert_eq!(rows.len(), 107, "the corpus has 107 messages");
    let mut problems = Vec::new();
    let mut read_ok = 0;
    for row in &rows {
        let file = row.get("message");
        let raw = read(&format!("email/mail-parser/{file}"));
        for (variant, bytes) in [("LF", raw.clone()), ("CRLF", to_crlf(&raw))] {
            match parse(&bytes) {
                Ok(mail) => {
                    read_ok += 1;
                    for difference in differences(&mail, row) {
                        problems.push(format!("{file} ({variant}): {difference}"));
                    }
                }
                Err(e) => problems.push(format!("{file} ({variant}): not read: {e}")),
            }
        }
    }
    println!("mail-parser corpus: {read_ok}/{} read", rows.len() * 2);
    for problem in &problems {
        println!("  {problem}");
    }
    assert!(problems.is_empty(), "{} differences", problems.len());
}

/// Inputs the fuzzer (bench/fuzz-mail) found to crash, kept so they stay harmless: each one
/// reads (or is refused) without a panic, in this debug build too.
#[test]
fn fuzz_findings_read_without_panic() {
    let dir = crate::data("email/fuzz");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/data/email/fuzz") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "eml") {
            let raw = std::fs::read(&path).expect("a fixture");
            if let Ok(mail) = parse(&raw) {
                let insiders = leadline::mail::Insiders::default();
                let _ = leadline::mail::forward::detect(&mail, &insiders);
            }
            count += 1;
        }
    }
    assert!(count >= 1, "no fuzz findings in {}", dir.display());
}
