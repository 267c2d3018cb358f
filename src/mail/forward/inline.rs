//! Inline forwards: the block of header lines a mail client writes above the text of the
//! message it forwards, found by its shape rather than by each client's exact wording.
//!
//! Three shapes, tried line by line from the top; the first that fits wins, so a forward of
//! a forward yields the outermost original:
//! 1. a marker, then a header block that names the sender: a rule line with or without
//!    words (`---------- Forwarded message ---------`, `-----Original Message-----`,
//!    Outlook's `_____`; Yahoo writes the whole block on the rule's line), or a short line
//!    ending in a colon (`Begin forwarded message:`, in any language);
//! 2. with a forward subject (`Fwd:`, `WG:`, `TR:` …) only: a header block without marker
//!    that starts with the sender (new Outlook, Outlook 2013);
//! 3. with a forward subject only: one line naming the sender and ending in a colon
//!    (Outlook 2019 for Mac: `Am 28/10/2021, 12:46 schrieb "John Doe" <john@…>:`).
//!
//! A reply subject (`Re:`, `AW:` …) is never read as a forward: its quoted header is the
//! message answered, and a BCC'd reply's customers are its recipients.

use chrono::{DateTime, FixedOffset};

use super::labels::{Field, SubjectKind, label_prefix, subject_kind};
use super::{ForwardSource, ForwardedMessage};
use crate::matcher::{EmailAddress, Mailbox, parse_email};

/// Lines looked at: forward blocks sit at the top, below what the forwarder wrote.
const MAX_LINES: usize = 500;
/// Characters kept of one line; header lines are far shorter, and this bounds the work on
/// Yahoo's one-line blocks.
const MAX_LINE_CHARS: usize = 2000;
/// Blank lines allowed between a marker and its header block (Apple Mail writes one).
const MAX_GAP: usize = 2;

/// The forwarded message's header as the block shows it: `None` when `body` holds no
/// inline forward. `subject` is the outer message's subject.
pub fn inline_forward(subject: Option<&str>, body: &str) -> Option<ForwardedMessage> {
    let kind = subject.map_or(SubjectKind::Other, subject_kind);
    if kind == SubjectKind::Reply {
        return None;
    }
    let lines: Vec<String> = body.lines().take(MAX_LINES).map(clean).collect();
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = marker(line)
            && let Some(fields) = header_block(&lines, i + 1, rest)
            && names_sender(&fields)
        {
            return Some(forwarded(&fields));
        }
        if kind != SubjectKind::Forward {
            continue;
        }
        if matches!(label(line), Some((Field::From, _)))
            && let Some(fields) = header_block(&lines, i, "")
            && fields.len() >= 2
            && names_sender(&fields)
        {
            return Some(forwarded(&fields));
        }
        if let Some(found) = wrote_line(line, lines.get(i + 1).map(String::as_str)) {
            return Some(found);
        }
    }
    None
}

/// The label a header line starts with, also in bold (`*From:* …`, Outlook's text of HTML).
fn label(line: &str) -> Option<(Field, &str)> {
    label_prefix(line.trim_start_matches('*'))
}

/// What a marker line leaves for the header block: `Some("")` for a marker alone on its
/// line, `Some(rest)` when the block follows on the same line (Yahoo).
fn marker(line: &str) -> Option<&str> {
    separator(line).or_else(|| intro(line).then_some(""))
}

/// A rule of `-`, `_`, `=`: five or more alone, or two or more on each side of some words.
fn separator(line: &str) -> Option<&str> {
    let is_rule = |c: char| matches!(c, '-' | '_' | '=' | '—' | '–');
    let after_open = line.trim_start_matches(is_rule);
    let opening = line[..line.len() - after_open.len()].chars().count();
    if opening < 2 {
        return None;
    }
    if after_open.trim().is_empty() {
        return (opening >= 5).then_some("");
    }
    // Words, then a closing rule of at least two characters.
    let mut search = after_open;
    while let Some(start) = search.find(is_rule) {
        let closing = &search[start..];
        let after_close = closing.trim_start_matches(is_rule);
        if closing[..closing.len() - after_close.len()].chars().count() >= 2 {
            return Some(after_close.trim());
        }
        search = after_close;
    }
    None
}

/// `Begin forwarded message:` and its translations: a short line ending in a colon, with
/// no digit (that would be a reply's "On <date> … wrote:") and no address.
fn intro(line: &str) -> bool {
    let Some(text) = line.strip_suffix(':').or_else(|| line.strip_suffix('：')) else {
        return false;
    };
    !text.trim().is_empty()
        && text.chars().count() <= 80
        && !text.contains('@')
        && !text.chars().any(|c| c.is_ascii_digit())
        && label(line).is_none()
}

/// The header lines from `start` on (after `same_line`, the rest of a marker's line), as
/// long as each line begins with a known label. `None` when no field was found.
fn header_block(lines: &[String], start: usize, same_line: &str) -> Option<Vec<(Field, String)>> {
    let mut fields = glued_fields(same_line);
    let mut at = start;
    if fields.is_empty() {
        let gap = lines[start.min(lines.len())..]
            .iter()
            .take(MAX_GAP)
            .take_while(|l| l.is_empty())
            .count();
        at += gap;
    }
    for line in lines.iter().skip(at) {
        match label(line) {
            Some((field, value)) => fields.push((field, clean_value(value))),
            None => break,
        }
    }
    (!fields.is_empty()).then_some(fields)
}

/// Fields written one after another on one line (Yahoo: `Von: A <a@x>An: b@y…Betreff: …`).
/// A label counts where no lower-case letter precedes it, so `Vastaanottaja:` is not read
/// as a `ja:` … and `…CETBetreff:` still is.
fn glued_fields(text: &str) -> Vec<(Field, String)> {
    let mut starts: Vec<(usize, Field, usize)> = Vec::new();
    let mut previous: Option<char> = None;
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        if !previous.is_some_and(char::is_lowercase)
            && let Some((field, value)) = label_prefix(rest)
        {
            let value_at = text.len() - value.len();
            starts.push((at, field, value_at));
            previous = None;
            at = value_at;
            continue;
        }
        let c = rest.chars().next().expect("at < len is a char boundary");
        previous = Some(c);
        at += c.len_utf8();
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &(_, field, value_at))| {
            let end = starts.get(k + 1).map_or(text.len(), |next| next.0);
            (field, clean_value(&text[value_at..end]))
        })
        .collect()
}

/// A block counts when its sender field says something (`From:` alone is no sender).
fn names_sender(fields: &[(Field, String)]) -> bool {
    fields
        .iter()
        .any(|(field, value)| *field == Field::From && !value.is_empty())
}

fn forwarded(fields: &[(Field, String)]) -> ForwardedMessage {
    let value = |wanted: Field| {
        fields
            .iter()
            .find(|(field, value)| *field == wanted && !value.is_empty())
            .map(|(_, value)| value.clone())
    };
    let (from_name, from) = value(Field::From).map_or((None, None), |v| mailbox_in(&v));
    let recipients = fields
        .iter()
        .filter(|(field, _)| matches!(field, Field::To | Field::Cc))
        .flat_map(|(_, value)| mailboxes_in(value))
        .collect();
    let date_text = value(Field::Date);
    ForwardedMessage {
        source: ForwardSource::Inline,
        from_name,
        from,
        recipients,
        subject: value(Field::Subject),
        date: date_text.as_deref().and_then(rfc5322_date),
        date_text,
    }
}

/// Outlook 2019 for Mac's one line, also split after the address as Gmail's replies are
/// (`… John <john@x>` / `wrote:`).
fn wrote_line(line: &str, next: Option<&str>) -> Option<ForwardedMessage> {
    let joined;
    let line = if !line.ends_with([':', '：'])
        && let Some(next) = next.filter(|n| n.ends_with(':') && n.chars().count() <= 40)
    {
        joined = format!("{line} {next}");
        &joined
    } else {
        line
    };
    if !line.ends_with([':', '：']) || label(line).is_some() {
        return None;
    }
    let (start, address) = first_address(line)?;
    // Written as a mailbox (`<a@x>`, `(a@x)`), not a sentence that mentions an address
    // ("Please answer anna@x.de:").
    if !line[..start].ends_with(['<', '(', '[']) {
        return None;
    }
    Some(ForwardedMessage {
        source: ForwardSource::Inline,
        from_name: name_before(&line[..start]),
        from: Some(address),
        recipients: Vec::new(),
        subject: None,
        date: None,
        date_text: None,
    })
}

/// The name a "wrote" line gives before the address: quoted (`"John Doe"`, `„John Doe”`,
/// `« John Doe »`), else the capitalised words just before it (`… heeft John Doe <`).
fn name_before(text: &str) -> Option<String> {
    let text = text.trim_end_matches(|c: char| c.is_whitespace() || "<([".contains(c));
    let closing = text.chars().last()?;
    if let Some(opening) = match closing {
        '"' => Some('"'),
        '”' => Some('„'),
        '“' => Some('“'),
        '»' => Some('«'),
        '\'' => Some('\''),
        _ => None,
    } {
        let inner = &text[..text.len() - closing.len_utf8()];
        let start = inner.rfind(opening).or_else(|| inner.rfind('“'))?;
        return display_name(&inner[start + opening.len_utf8()..]);
    }
    let words: Vec<&str> = text
        .split_whitespace()
        .rev()
        .take_while(|word| {
            word.chars().next().is_some_and(char::is_uppercase)
                && !word.ends_with(',')
                && !word.chars().any(|c| c.is_ascii_digit())
        })
        .collect();
    let name: Vec<&str> = words.into_iter().rev().collect();
    display_name(&name.join(" "))
}

/// The first address in a header value and the display name before it: handles
/// `Name <a@x>`, `"Name" <a@x>`, `Name [mailto:a@x]`, `Name<mailto:a@x> <a@x<mailto:a@x>>`,
/// a bare `a@x`, and a name with no address at all.
fn mailbox_in(value: &str) -> (Option<String>, Option<EmailAddress>) {
    match first_address(value) {
        Some((start, address)) => {
            let name =
                display_name(&value[..start]).filter(|n| !n.eq_ignore_ascii_case(address.as_str()));
            (name, Some(address))
        }
        None => (display_name(value), None),
    }
}

/// Every address of a To/Cc value, each with the name written before it.
fn mailboxes_in(value: &str) -> Vec<Mailbox> {
    let mut found: Vec<Mailbox> = Vec::new();
    for part in value.split([';', ',']) {
        if let (name, Some(address)) = mailbox_in(part)
            && !found.iter().any(|m| m.address == address)
        {
            found.push(Mailbox { name, address });
        }
    }
    found
}

/// The byte offset and value of the first text around an `@` that is an address (M3).
fn first_address(text: &str) -> Option<(usize, EmailAddress)> {
    let is_address_char = |c: char| c.is_alphanumeric() || "._%+-".contains(c);
    for (at, _) in text.match_indices('@') {
        let start = text[..at]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_address_char(c))
            .last()
            .map_or(at, |(i, _)| i);
        let end = text[at + 1..]
            .find(|c: char| !is_address_char(c))
            .map_or(text.len(), |i| at + 1 + i);
        let candidate = text[start..end].trim_end_matches('.');
        if let Ok(address) = parse_email(candidate) {
            // `<mailto:a@x>` leaves `mailto:` in the name before the address.
            let start = text[..start]
                .strip_suffix("mailto:")
                .or_else(|| text[..start].strip_suffix("MAILTO:"))
                .map_or(start, str::len);
            return Some((start, address));
        }
    }
    None
}

/// A display name without the brackets, quotes and emphasis around it.
fn display_name(text: &str) -> Option<String> {
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || "<>[]()\"'*„“”«»:".contains(c));
    let name = trimmed.split_whitespace().collect::<Vec<_>>().join(" ");
    (!name.is_empty()).then_some(name)
}

/// A header value without surrounding space and Markdown-ish emphasis.
fn clean_value(value: &str) -> String {
    value.trim().trim_matches('*').trim().to_owned()
}

/// One line as the detector reads it: without quote markers (`> `), byte-order marks,
/// zero-width spaces and surrounding space; cut at [`MAX_LINE_CHARS`].
fn clean(line: &str) -> String {
    let line: String = line
        .chars()
        .filter(|c| !matches!(c, '\u{feff}' | '\u{200b}' | '\r'))
        .take(MAX_LINE_CHARS)
        .collect();
    line.trim_start_matches(|c: char| c == '>' || c.is_whitespace())
        .trim_end()
        .to_owned()
}

/// Thunderbird and Gmail write the original Date as RFC 5322; other clients localise it
/// (kept as text only).
fn rfc5322_date(text: &str) -> Option<DateTime<FixedOffset>> {
    mail_parser::DateTime::parse_rfc822(text)
        .as_ref()
        .and_then(crate::mail::parse::to_chrono)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(subject: Option<&str>, body: &str) -> Option<(Option<String>, Option<String>)> {
        inline_forward(subject, body).map(|f| (f.from_name, f.from.map(|a| a.to_string())))
    }

    fn john() -> Option<(Option<String>, Option<String>)> {
        Some((Some("John Doe".into()), Some("john.doe@acme.com".into())))
    }

    #[test]
    fn e16_gmail_block_after_a_rule() {
        let body = "Bitte anlegen.\n\n---------- Forwarded message ---------\n\
                    Von: John Doe <John.Doe@acme.com>\nDate: Wed, 27 Oct 2021 09:31:00 +0200\n\
                    Subject: Angebot\nTo: <bessie@acme.com>\n\nText";
        let found = inline_forward(None, body).unwrap();
        assert_eq!(found.from.unwrap().as_str(), "john.doe@acme.com");
        assert_eq!(found.from_name.as_deref(), Some("John Doe"));
        assert_eq!(found.subject.as_deref(), Some("Angebot"));
        assert_eq!(found.recipients[0].address.as_str(), "bessie@acme.com");
        assert_eq!(
            found.date.unwrap().to_rfc3339(),
            "2021-10-27T09:31:00+02:00"
        );
    }

    #[test]
    fn e16_apple_mail_intro_line_and_quote_markers() {
        let body = "> Anfang der weitergeleiteten Nachricht:\n>\n\
                    > Von: John Doe <john.doe@acme.com>\n> Betreff: x\n>\n> Text";
        assert_eq!(sender(None, body), john());
    }

    #[test]
    fn e16_yahoo_block_on_the_rule_line() {
        let body = "   ----- Weitergeleitete Nachricht ----- Von: John Doe <john.doe@acme.com>An: \
                    \"b@acme.com\" <b@acme.com>Gesendet: Dienstag, 2. November 2021, 09:26:50 \
                    MEZBetreff: Integer consequat\n Text";
        let found = inline_forward(None, body).unwrap();
        assert_eq!(found.from.unwrap().as_str(), "john.doe@acme.com");
        assert_eq!(found.subject.as_deref(), Some("Integer consequat"));
        assert_eq!(
            found.date_text.as_deref(),
            Some("Dienstag, 2. November 2021, 09:26:50 MEZ")
        );
    }

    #[test]
    fn e16_outlook_block_needs_a_forward_subject_without_a_rule() {
        let body = "Siehe unten.\n\nFrom: John Doe [mailto:john.doe@acme.com]\n\
                    Sent: 25 October 2021 11:17\nTo: b@acme.com\nSubject: x\n\nText";
        assert_eq!(sender(Some("WG: x"), body), john());
        assert_eq!(sender(Some("Angebot"), body), None);
        assert_eq!(sender(None, body), None);
    }

    #[test]
    fn e16_outlook_mac_wrote_line_with_forward_subject() {
        for line in [
            "Am 28/10/2021, 12:46 schrieb \"John Doe\" <john.doe@acme.com>:",
            "Le 28/10/2021 12:46, « John Doe » <john.doe@acme.com> a écrit :",
            "Dnia 28/10/2021, 12:46 użytkownik „John Doe” <john.doe@acme.com> napisał:",
            "Op 28/10/2021 12:46 heeft John Doe <john.doe@acme.com> geschreven:",
            "28/10/2021 12:46 időpontban John Doe (john.doe@acme.com) ezt írta:",
            "\u{feff}John Doe <john.doe@acme.com> kirjoitti 28/10/2021 12.46:",
        ] {
            let body = format!("{line}\n\n    Text");
            assert_eq!(sender(Some("FW: x"), &body), john(), "{line}");
            assert_eq!(sender(None, &body), None, "{line}");
        }
    }

    #[test]
    fn e16_a_sentence_mentioning_an_address_is_no_wrote_line() {
        let body = "Please answer anna@example.com directly:\n\nthanks";
        assert_eq!(sender(Some("Fwd: x"), body), None);
    }

    #[test]
    fn e16_a_reply_is_never_a_forward() {
        let body = "Ok.\n\n________________________________\nFrom: John Doe <john.doe@acme.com>\n\
                    Sent: today\nSubject: x\n\nText";
        assert_eq!(sender(Some("Re: x"), body), None);
        assert_eq!(sender(Some("AW: x"), body), None);
        assert_eq!(sender(Some("Fw: x"), body), john());
        let reply = "Sure.\n\nOn Tue, Sep 20, 2022 at 3:44 AM, Eliott <e@example.com> wrote:\n> hi";
        assert_eq!(sender(None, reply), None);
    }

    #[test]
    fn e16_rules_in_signatures_are_not_markers() {
        let body = "Hello\n\n-----\nAcme Ltd.\n\n--\nJohn\n______________\nwww.acme.com";
        assert_eq!(sender(None, body), None);
        assert_eq!(sender(Some("Fwd: x"), body), None);
    }

    #[test]
    fn e16_sender_forms_in_header_values() {
        let cases = [
            ("John Doe <john.doe@acme.com>", john()),
            ("\"John Doe\" <john.doe@acme.com>", john()),
            (
                "*John Doe* <john.doe@acme.com<mailto:john.doe@acme.com>>",
                john(),
            ),
            (
                "John Doe<mailto:john.doe@acme.com> <john.doe@acme.com<mailto:john.doe@acme.com>> \
                 on behalf of ticketing@acme.com<mailto:ticketing@acme.com>",
                john(),
            ),
            (
                "john.doe@acme.com",
                Some((None, Some("john.doe@acme.com".into()))),
            ),
            (
                "John, Doe <john.doe@acme.com>",
                Some((Some("John, Doe".into()), Some("john.doe@acme.com".into()))),
            ),
            ("John Doe", Some((Some("John Doe".into()), None))),
        ];
        for (value, expected) in cases {
            let body = format!("-----Original Message-----\nFrom: {value}\nSent: x\n\nText");
            assert_eq!(sender(None, &body), expected, "{value}");
        }
    }

    #[test]
    fn e16_a_block_with_an_empty_sender_names_nobody() {
        let body = "---------- Forwarded message ---------\n送信元：\nVon: \n\nText";
        assert_eq!(sender(None, body), None);
    }

    #[test]
    fn e16_first_block_wins_in_nested_forwards() {
        let body = "---------- Forwarded message ---------\nFrom: John Doe <john.doe@acme.com>\n\
                    Subject: x\n\nText\n\n---------- Forwarded message ---------\n\
                    From: Other <other@acme.com>\n\nOlder";
        assert_eq!(sender(None, body), john());
    }
}
