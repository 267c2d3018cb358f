//! Reading and writing the bits of IMAP syntax the session needs (RFC 3501 4, 7, 9):
//! quoting, FETCH attributes, dates, LIST attributes, and which untagged responses mean
//! the folder changed. Pure functions over `imap_proto`'s parsed responses.

use std::ops::RangeInclusive;

use async_imap::imap_proto::{AttributeValue, MailboxDatum, NameAttribute, Response};
use chrono::{DateTime, Utc};

use super::{Body, Fetched, ImapError, Uid};

/// Untagged data that means the selected folder changed (RFC 3501 7.3, 7.4; RFC 7162
/// VANISHED).
pub(super) fn is_change(response: &Response<'_>) -> bool {
    matches!(
        response,
        Response::MailboxData(MailboxDatum::Exists(_))
            | Response::Expunge(_)
            | Response::Vanished { .. }
            | Response::Fetch(..)
    )
}

pub(super) fn outcome_text(outcome: &async_imap::imap_proto::Outcome<'_>) -> String {
    let text = outcome.information.as_deref().unwrap_or("(no text)");
    match &outcome.code {
        Some(code) => truncate(&format!("[{code:?}] {text}")),
        None => truncate(text),
    }
}

/// Server text in our errors is cut, so a parse error cannot drag a whole message body
/// into a log line or an API answer.
pub(super) fn truncate(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// An IMAP quoted string (RFC 3501 4.3); line breaks and NUL cannot be quoted.
pub(super) fn quote(value: &str, command: &'static str) -> Result<String, ImapError> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(ImapError::Refused {
            command,
            message: format!("{value:?} contains a line break or NUL, which IMAP cannot send"),
        });
    }
    Ok(format!(
        "\"{}\"",
        value.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

pub(super) fn name_attribute(attribute: &NameAttribute<'_>) -> String {
    match attribute {
        NameAttribute::NoInferiors => "\\noinferiors".to_owned(),
        NameAttribute::NoSelect => "\\noselect".to_owned(),
        NameAttribute::Marked => "\\marked".to_owned(),
        NameAttribute::Unmarked => "\\unmarked".to_owned(),
        NameAttribute::All => "\\all".to_owned(),
        NameAttribute::Archive => "\\archive".to_owned(),
        NameAttribute::Drafts => "\\drafts".to_owned(),
        NameAttribute::Flagged => "\\flagged".to_owned(),
        NameAttribute::Junk => "\\junk".to_owned(),
        NameAttribute::Sent => "\\sent".to_owned(),
        NameAttribute::Trash => "\\trash".to_owned(),
        NameAttribute::Extension(other) => other.to_ascii_lowercase(),
        _ => String::new(),
    }
}

pub(super) fn fetched_uid(attributes: &[AttributeValue<'_>]) -> Option<Uid> {
    attributes.iter().find_map(|a| match a {
        AttributeValue::Uid(uid) => Some(Uid(*uid)),
        _ => None,
    })
}

pub(super) fn fetched_body<'a>(attributes: &'a [AttributeValue<'_>]) -> Option<&'a [u8]> {
    attributes.iter().find_map(|a| match a {
        AttributeValue::BodySection {
            section: None,
            index: None,
            data: Some(data),
        }
        | AttributeValue::Rfc822(Some(data)) => Some(data.as_ref()),
        _ => None,
    })
}

pub(super) fn fetched_flags(attributes: &[AttributeValue<'_>]) -> Vec<String> {
    attributes
        .iter()
        .filter_map(|a| match a {
            AttributeValue::Flags(flags) => Some(flags.iter().map(|f| f.to_string())),
            _ => None,
        })
        .flatten()
        .collect()
}

pub(super) fn has_flag(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

/// MODSEQ of a FETCH response (RFC 7162 3.1.4.1).
pub(super) fn fetched_modseq(attributes: &[AttributeValue<'_>]) -> Option<u64> {
    attributes.iter().find_map(|a| match a {
        AttributeValue::ModSeq(modseq) => Some(*modseq),
        _ => None,
    })
}

/// The FETCH a conditional or silent STORE answers with under CONDSTORE (RFC 7162
/// 3.1.3): UID and MODSEQ, no FLAGS. A FETCH with FLAGS is someone else's change.
pub(super) fn is_store_echo(response: &Response<'_>) -> bool {
    matches!(response, Response::Fetch(_, attributes)
        if !attributes.iter().any(|a| matches!(a, AttributeValue::Flags(_))))
}

/// The UID set of a `[MODIFIED set]` response code (RFC 7162 3.1.3) at the start of a
/// tagged OK's text: the messages a conditional STORE left alone because they changed
/// since. imap-proto does not know the code and leaves it in the text. A set that does
/// not parse is empty: the next pass reads those messages' state anyway.
pub(super) fn modified_set(text: &str) -> Vec<RangeInclusive<u32>> {
    let text = text.trim_start();
    let Some(head) = text.get(..10) else {
        return Vec::new();
    };
    if !head.eq_ignore_ascii_case("[MODIFIED ") {
        return Vec::new();
    }
    let Some(end) = text.find(']') else {
        return Vec::new();
    };
    text[10..end]
        .split(',')
        .map(|part| {
            let (a, b) = part.split_once(':').unwrap_or((part, part));
            let (a, b) = (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?);
            Some(a.min(b)..=a.max(b))
        })
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// UID, flags, date and size of one FETCH response; `None` without UID or size.
pub(super) fn fetched_meta(attributes: &[AttributeValue<'_>]) -> Option<Fetched> {
    let uid = fetched_uid(attributes)?;
    let size = attributes.iter().find_map(|a| match a {
        AttributeValue::Rfc822Size(size) => Some(*size),
        _ => None,
    })?;
    let internal_date = attributes.iter().find_map(|a| match a {
        AttributeValue::InternalDate(date) => parse_internal_date(date),
        _ => None,
    });
    let flags = fetched_flags(attributes);
    Some(Fetched {
        uid,
        seen: has_flag(&flags, "\\Seen"),
        flags,
        internal_date,
        size,
        body: Body::Raw(Vec::new()),
    })
}

/// RFC 3501 9 date-time: `"23-Nov-2026 17:56:38 +0000"`, the day maybe space-padded.
pub(super) fn parse_internal_date(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text.trim(), "%d-%b-%Y %H:%M:%S %z")
        .ok()
        .map(|date| date.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_date_with_padded_day_and_offset() {
        let date = parse_internal_date(" 3-Nov-2026 09:05:01 +0100").expect("parses");
        assert_eq!(date.to_rfc3339(), "2026-11-03T08:05:01+00:00");
        let date = parse_internal_date("23-Nov-2026 17:56:38 -0000").expect("parses");
        assert_eq!(date.to_rfc3339(), "2026-11-23T17:56:38+00:00");
        assert_eq!(parse_internal_date("yesterday"), None);
    }

    #[test]
    fn quoting_escapes_and_refuses_line_breaks() {
        assert_eq!(quote("Sent Items", "SELECT").unwrap(), "\"Sent Items\"");
        assert_eq!(quote(r#"a"b\c"#, "SELECT").unwrap(), r#""a\"b\\c""#);
        assert!(quote("a\r\nb", "SELECT").is_err());
    }

    #[test]
    fn e9_modified_code_gives_the_uids_left_alone() {
        assert_eq!(
            modified_set("[MODIFIED 7,9:11] Conditional store failed"),
            [7..=7, 9..=11]
        );
        assert_eq!(modified_set("[modified 12:10]"), [10..=12]);
        assert!(modified_set("Store completed (0.001 + 0.000 secs).").is_empty());
        assert!(modified_set("[MODIFIED 7,x] odd").is_empty());
        assert!(modified_set("[MODIFIED 7").is_empty());
        assert!(modified_set("").is_empty());
    }

    #[test]
    fn truncation_keeps_utf8_whole() {
        let long = "ä".repeat(400);
        let cut = truncate(&long);
        assert!(cut.len() <= 304);
        assert!(cut.ends_with('…'));
    }
}
