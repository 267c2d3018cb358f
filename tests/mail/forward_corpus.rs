//! E16 against real forwards: the inline blocks of 12 mail clients in 20+ languages
//! (crisp-oss/email-forward-parser), five complete forwarded messages (mikel/mail: Gmail
//! inline and message/rfc822), and twelve real replies (mailgun/talon) that must not be
//! read as forwards. Prints the hit rate and every miss; asserts at least 95 %.

use std::collections::BTreeMap;

use leadline::mail::forward::{ForwardOutcome, detect, inline_forward};
use leadline::mail::{Insiders, parse};
use leadline::matcher::parse_mailbox;

use crate::{read, tsv};

/// What the corpus expects of one forward, and what was found.
struct Case {
    label: String,
    expected_address: Option<String>,
    expected_name: Option<String>,
    found_address: Option<String>,
    found_name: Option<String>,
}

impl Case {
    fn hit(&self) -> bool {
        match &self.expected_address {
            Some(address) => self.found_address.as_ref() == Some(address),
            // "From: John Doe" without address: found when the name is.
            None => self.found_address.is_none() && self.found_name == self.expected_name,
        }
    }
}

fn text(path: &str) -> String {
    String::from_utf8_lossy(&read(path)).into_owned()
}

fn inline_cases(false_positives: &mut Vec<String>) -> Vec<Case> {
    let mut cases = Vec::new();
    for row in tsv("email/forwarded-inline/expected.tsv") {
        let body_file = row.get("body_file");
        let subject_file = row.get("subject_file");
        let body = text(&format!("email/forwarded-inline/{body_file}"));
        let subject = (!subject_file.is_empty())
            .then(|| text(&format!("email/forwarded-inline/{subject_file}")));
        let found = inline_forward(subject.as_deref().map(str::trim), &body);
        let label = format!(
            "{} {} {} ({body_file}{})",
            row.get("client"),
            row.get("language"),
            row.get("test_group"),
            if subject_file.is_empty() {
                String::new()
            } else {
                format!(" + {subject_file}")
            }
        );
        if row.get("forwarded") != "true" {
            if let Some(found) = found {
                false_positives.push(format!("{label}: read a forward from {:?}", found.from));
            }
            continue;
        }
        let address = row.get("original_from_address");
        let name = row.get("original_from_name");
        cases.push(Case {
            label,
            expected_address: (!address.starts_with('(')).then(|| address.to_owned()),
            expected_name: (!name.is_empty() && !name.starts_with('(')).then(|| name.to_owned()),
            found_address: found
                .as_ref()
                .and_then(|f| f.from.as_ref())
                .map(ToString::to_string),
            found_name: found.and_then(|f| f.from_name),
        });
    }
    cases
}

/// Complete messages: parsed, then `detect` with the forwarding employee and the forward
/// address as insiders.
fn full_cases() -> Vec<Case> {
    tsv("email/forwarded-full/expected.tsv")
        .iter()
        .map(|row| {
            let file = row.get("file");
            let mail = parse(&read(&format!("email/forwarded-full/{file}"))).expect(file);
            let insiders = Insiders::new(
                mail.from.iter().map(|m| m.address.clone()),
                mail.to.iter().map(|m| m.address.clone()),
            );
            let expected = parse_mailbox(row.get("original_sender")).expect("an address");
            let (found_address, found_name) = match detect(&mail, &insiders) {
                ForwardOutcome::Forwarded { customers, .. } => (
                    Some(customers[0].address.to_string()),
                    customers[0].name.clone(),
                ),
                other => {
                    println!("  {file}: {other:?}");
                    (None, None)
                }
            };
            Case {
                label: format!("{file} ({})", row.get("forward_kind")),
                expected_address: Some(expected.address.to_string()),
                expected_name: expected.name,
                found_address,
                found_name,
            }
        })
        .collect()
}

#[test]
fn e16_forward_corpus_original_sender_hit_rate() {
    let mut false_positives = Vec::new();
    let mut cases = inline_cases(&mut false_positives);
    let inline = cases.len();
    cases.extend(full_cases());
    let hits = cases.iter().filter(|c| c.hit()).count();
    let names = cases
        .iter()
        .filter(|c| c.hit() && c.found_name == c.expected_name)
        .count();
    let rate = 100.0 * hits as f64 / cases.len() as f64;
    println!(
        "E16 original sender found: {hits}/{} ({rate:.1} %): {} inline, {} complete messages; \
         display name right in {names}",
        cases.len(),
        inline,
        cases.len() - inline
    );
    let mut misses: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for case in cases.iter().filter(|c| !c.hit()) {
        misses.entry("miss").or_default().push(format!(
            "{}: expected {:?}, found {:?} / {:?}",
            case.label, case.expected_address, case.found_address, case.found_name
        ));
    }
    for case in cases
        .iter()
        .filter(|c| c.hit() && c.found_name != c.expected_name)
    {
        misses.entry("name differs").or_default().push(format!(
            "{}: expected {:?}, found {:?}",
            case.label, case.expected_name, case.found_name
        ));
    }
    for (kind, list) in &misses {
        for line in list {
            println!("  {kind}: {line}");
        }
    }
    for line in &false_positives {
        println!("  false forward: {line}");
    }
    assert!(rate >= 95.0, "hit rate {rate:.1} % is below 95 %");
    assert!(
        false_positives.is_empty(),
        "{} messages that are not forwards were read as forwards",
        false_positives.len()
    );
}

#[test]
fn e16_real_replies_are_not_forwards() {
    let rows = tsv("email/talon-replies/expected.tsv");
    assert_eq!(rows.len(), 12);
    for row in rows {
        let file = row.get("file");
        let mail = parse(&read(&format!("email/talon-replies/{file}"))).expect(file);
        let sender = mail.sender().expect("a sender").address.clone();
        assert_eq!(sender.as_str(), row.get("sender_address"), "{file}");
        // The replying client's user is the insider who BCC'd the forward address.
        let outcome = detect(&mail, &Insiders::new([sender], []));
        assert!(
            !matches!(outcome, ForwardOutcome::Forwarded { .. }),
            "{file}: a reply read as a forward: {outcome:?}"
        );
    }
}

/// E16 keeps attachments: the files of the complete forwards, with the names expected.tsv
/// gives (RFC 2047 and RFC 2231 names decoded), and the attached original as a file too.
#[test]
fn e16_forwarded_messages_keep_their_attachments() {
    /// File name, content type, inline.
    type File = (&'static str, &'static str, bool);
    let expected: &[(&str, &[File])] = &[
        (
            "raw_email2.eml",
            &[("smime.p7s", "application/pkcs7-signature", false)],
        ),
        (
            "attachment_with_base64_encoded_name.eml",
            &[("This is a test.pdf", "application/pdf", false)],
        ),
        (
            "attachment_message_rfc822.eml",
            &[("ForwardedMessage.eml", "message/rfc822", false)],
        ),
        (
            "attachment_message_rfc822_inline_image.eml",
            &[
                ("img.png", "image/png", true),
                ("Testmail.eml", "message/rfc822", false),
            ],
        ),
    ];
    for (file, files) in expected {
        let mail = parse(&read(&format!("email/forwarded-full/{file}"))).expect(file);
        let got: Vec<(&str, &str, bool)> = mail
            .attachments
            .iter()
            .map(|a| {
                (
                    a.file_name.as_deref().unwrap_or(""),
                    a.content_type.as_str(),
                    a.inline,
                )
            })
            .collect();
        assert_eq!(got, *files, "{file}");
        assert!(mail.attachments.iter().all(|a| a.size() > 0), "{file}");
    }
    let nested = parse(&read("email/forwarded-full/attachment_message_rfc822.eml")).unwrap();
    assert_eq!(
        nested.messages[0].attachments[0].file_name.as_deref(),
        Some("broken.pdf")
    );
}
