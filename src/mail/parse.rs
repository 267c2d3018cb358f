//! Raw RFC 5322 bytes → [`ParsedMail`], a value of our own, through the `mail-parser` crate.
//!
//! It keeps what the CRM needs from a message and nothing more: ids for threading, the
//! parties (addresses normalised as the matcher compares them, M3), one text body, the
//! attachments (kept, E16), messages attached as message/rfc822, and vCard parts (E3).
//! mail-parser reads broken MIME as far as it goes; so does this module: an address that is
//! not an address is left out, a date that is not a date is `None`. Only bytes without any
//! header field are an [`Error`].

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone};
use mail_parser::decoders::html::html_to_text;
use mail_parser::{
    Address, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};

use super::Error;
use super::redirect::{RedirectTrace, trace};
use crate::matcher::{EmailAddress, Mailbox};

/// How deep attached messages (message/rfc822) are read. A forward of a forward of a
/// forward is three levels; deeper nesting is left as an opaque attachment.
pub const MAX_NESTING: usize = 8;

/// One message as Leadline reads it. Owned: it outlives the raw bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedMail {
    /// Message-ID without the angle brackets; the idempotency key of forwarded mail.
    pub message_id: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub subject: Option<String>,
    /// The Date header with the sender's offset; `None` when missing or impossible.
    pub date: Option<DateTime<FixedOffset>>,
    /// Usually one; RFC 5322 §3.6.2 allows several authors.
    pub from: Vec<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    /// Only present on copies the sender kept (sent folder) or on a BCC'd copy some servers
    /// leave it on.
    pub bcc: Vec<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    /// The text/plain body parts joined by blank lines; made from the HTML when the message
    /// has no text/plain alternative (see `text_from_html`).
    pub text: Option<String>,
    pub text_from_html: bool,
    /// Every part mail-parser does not show as body text, in message order: files, inline
    /// images, attached messages (their raw bytes).
    pub attachments: Vec<Attachment>,
    /// Attached message/rfc822 parts, read the same way, up to [`MAX_NESTING`] levels.
    pub messages: Vec<ParsedMail>,
    /// Parts that are vCards (text/vcard, text/x-vcard, text/directory, `*.vcf`), whether
    /// the sender attached them or put them inline.
    pub vcards: Vec<VCardPart>,
    /// What the transport wrote when the message was redirected or forwarded on its way
    /// (E16).
    pub redirect: RedirectTrace,
}

/// One attached file. The content is decoded and owned (the adapter has already bounded
/// the message size, so a copy is cheap next to the I/O around it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// As the sender named it (RFC 2231 and RFC 2047 encodings decoded).
    pub file_name: Option<String>,
    /// `type/subtype` in lower case; `application/octet-stream` when the part names none.
    pub content_type: String,
    /// Shown in the body (Content-Disposition: inline, or an image of multipart/related).
    pub inline: bool,
    /// Transfer encoding undone. Text parts are UTF-8 after their charset was applied; an
    /// attached message is its raw RFC 5322 bytes.
    pub content: Vec<u8>,
}

/// A vCard found in a message: its bytes go to [`crate::mail::parse_vcards`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VCardPart {
    pub file_name: Option<String>,
    pub content: Vec<u8>,
}

impl Attachment {
    /// Size of the decoded content in bytes.
    pub fn size(&self) -> usize {
        self.content.len()
    }
}

impl ParsedMail {
    /// The first author: the correspondent for direction and matching (E2).
    pub fn sender(&self) -> Option<&Mailbox> {
        self.from.first()
    }

    /// To, Cc and Bcc in that order.
    pub fn recipients(&self) -> impl Iterator<Item = &Mailbox> {
        self.to.iter().chain(&self.cc).chain(&self.bcc)
    }
}

/// Reads one message. Never panics; fails only when there is nothing that could be a
/// message (no bytes, or no header field at all).
pub fn parse(raw: &[u8]) -> Result<ParsedMail, Error> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::EmptyMessage);
    }
    let message = MessageParser::default()
        .parse(raw)
        .filter(|message| has_header_field(message, raw))
        .ok_or(Error::NoHeaders)?;
    Ok(read_message(&message, 0))
}

/// mail-parser reads any bytes as a message (a line of prose becomes a header name without
/// value); a message needs at least one `name: value` field (RFC 5322 §2.2).
fn has_header_field(message: &Message<'_>, raw: &[u8]) -> bool {
    let Some(root) = message.parts.first() else {
        return false;
    };
    root.headers.iter().any(|header| {
        let name = header.name();
        let field = raw.get(header.offset_field() as usize..header.offset_start() as usize);
        !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            && field.is_some_and(|f| f.contains(&b':'))
    })
}

fn read_message(message: &Message<'_>, depth: usize) -> ParsedMail {
    let (text, text_from_html) = body_text(message);
    let mut mail = ParsedMail {
        message_id: message
            .message_id()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned),
        in_reply_to: ids(message.in_reply_to()),
        references: ids(message.references()),
        subject: message
            .subject()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        date: message.date().and_then(to_chrono),
        from: mailboxes(message.from()),
        to: mailboxes(message.to()),
        cc: mailboxes(message.cc()),
        bcc: mailboxes(message.bcc()),
        reply_to: mailboxes(message.reply_to()),
        text,
        text_from_html,
        redirect: trace(message.headers_raw()),
        ..ParsedMail::default()
    };
    for part in message
        .attachments
        .iter()
        .filter_map(|&id| message.parts.get(id as usize))
    {
        mail.attachments.push(attachment(part));
        if let PartType::Message(nested) = &part.body
            && depth < MAX_NESTING
            && !nested.parts.is_empty()
        {
            mail.messages.push(read_message(nested, depth + 1));
        }
    }
    // All parts of this level, not only the attachments: a text/x-vcard part without a
    // Content-Disposition is shown by mail-parser as body text.
    mail.vcards = message
        .parts
        .iter()
        .filter(|part| is_vcard(part))
        .map(|part| VCardPart {
            file_name: part.attachment_name().map(str::to_owned),
            content: part.contents().to_vec(),
        })
        .collect();
    mail
}

/// The text body: text/plain parts joined, or the HTML parts as text when mail-parser
/// found no text/plain alternative (it then lists the HTML parts as text body too).
fn body_text(message: &Message<'_>) -> (Option<String>, bool) {
    let mut pieces = Vec::new();
    let mut from_html = false;
    for part in message
        .text_body
        .iter()
        .filter_map(|&id| message.parts.get(id as usize))
        .filter(|part| !is_vcard(part))
    {
        match &part.body {
            PartType::Text(text) => pieces.push(text.to_string()),
            PartType::Html(html) => {
                from_html = true;
                pieces.push(html_to_text(html));
            }
            _ => {}
        }
    }
    let text = pieces.join("\n\n");
    if text.trim().is_empty() {
        (None, false)
    } else {
        (Some(text), from_html)
    }
}

fn attachment(part: &MessagePart<'_>) -> Attachment {
    let inline = matches!(part.body, PartType::InlineBinary(_))
        || part.content_disposition().is_some_and(|d| d.is_inline());
    Attachment {
        file_name: part.attachment_name().map(str::to_owned),
        content_type: content_type(part),
        inline,
        content: part.contents().to_vec(),
    }
}

fn content_type(part: &MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => match part.body {
            PartType::Text(_) => "text/plain".to_owned(),
            PartType::Html(_) => "text/html".to_owned(),
            PartType::Message(_) => "message/rfc822".to_owned(),
            _ => "application/octet-stream".to_owned(),
        },
    }
}

/// RFC 6350 §10.1 registers text/vcard; older clients send text/x-vcard or RFC 2425's
/// text/directory, and some only name the file `*.vcf`.
fn is_vcard(part: &MessagePart<'_>) -> bool {
    if matches!(part.body, PartType::Multipart(_) | PartType::Message(_)) {
        return false;
    }
    let by_type = part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("text")
            && ct.subtype().is_some_and(|sub| {
                ["vcard", "x-vcard", "directory"]
                    .iter()
                    .any(|known| sub.eq_ignore_ascii_case(known))
            })
    });
    let by_name = part.attachment_name().is_some_and(|name| {
        let name = name.trim().to_ascii_lowercase();
        name.ends_with(".vcf") || name.ends_with(".vcard")
    });
    by_type || by_name
}

/// Message ids of In-Reply-To/References, without angle brackets.
fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    let list: Vec<&str> = match value {
        HeaderValue::Text(id) => vec![id.as_ref()],
        HeaderValue::TextList(ids) => ids.iter().map(|id| id.as_ref()).collect(),
        _ => Vec::new(),
    };
    list.into_iter()
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Addresses of one header, groups flattened. Entries without a usable address
/// (`undisclosed-recipients:;`, `Whomever <>`) are dropped: nothing could match them (M3).
fn mailboxes(address: Option<&Address<'_>>) -> Vec<Mailbox> {
    let Some(address) = address else {
        return Vec::new();
    };
    address
        .iter()
        .filter_map(|addr| {
            let address = EmailAddress::parse(addr.address()?).ok()?;
            let name = addr
                .name()
                .map(|name| name.trim().trim_matches('"').trim())
                .filter(|name| !name.is_empty())
                .map(str::to_owned);
            Some(Mailbox { name, address })
        })
        .collect()
}

/// A calendar-checked date (mail-parser accepts 31 February); `None` otherwise.
pub(super) fn to_chrono(date: &mail_parser::DateTime) -> Option<DateTime<FixedOffset>> {
    if !date.is_valid() {
        return None;
    }
    let seconds = i32::from(date.tz_hour) * 3600 + i32::from(date.tz_minute) * 60;
    let offset = FixedOffset::east_opt(if date.tz_before_gmt {
        -seconds
    } else {
        seconds
    })?;
    let local = NaiveDate::from_ymd_opt(
        i32::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    )?
    .and_hms_opt(
        u32::from(date.hour),
        u32::from(date.minute),
        u32::from(date.second),
    )?;
    offset.from_local_datetime(&local).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(raw: &str) -> ParsedMail {
        parse(raw.replace('\n', "\r\n").as_bytes()).unwrap()
    }

    #[test]
    fn threading_ids_subject_and_date() {
        let m = mail(
            "Message-ID: <abc@example.com>\n\
             In-Reply-To: <parent@example.com>\n\
             References: <root@example.com> <parent@example.com>\n\
             Subject: =?utf-8?q?Angebot_f=C3=BCr_Sie?=\n\
             Date: Tue, 2 Nov 2021 09:26:50 +0100\n\
             From: Anna <anna@example.com>\n\
             \n\
             Hallo\n",
        );
        assert_eq!(m.message_id.as_deref(), Some("abc@example.com"));
        assert_eq!(m.in_reply_to, ["parent@example.com"]);
        assert_eq!(m.references, ["root@example.com", "parent@example.com"]);
        assert_eq!(m.subject.as_deref(), Some("Angebot für Sie"));
        assert_eq!(
            m.date.unwrap().to_rfc3339(),
            "2021-11-02T09:26:50+01:00",
            "the sender's offset is kept"
        );
        assert_eq!(m.text.as_deref().map(str::trim), Some("Hallo"));
    }

    #[test]
    fn m3_addresses_are_lower_cased_and_names_kept() {
        let m = mail(
            "From: \"Muster, Anna\" <Anna.Muster@Example.DE>\n\
             To: Bob <BOB@example.com>, carol@example.com\n\
             Cc: Team: dave@example.com, Eve <eve@example.com>;\n\
             Bcc: undisclosed-recipients:;\n\
             Reply-To: <sales@example.com>\n\
             Subject: x\n\
             \n\
             body\n",
        );
        assert_eq!(m.from[0].address.as_str(), "anna.muster@example.de");
        assert_eq!(m.from[0].name.as_deref(), Some("Muster, Anna"));
        let to: Vec<_> = m.to.iter().map(|b| b.address.as_str()).collect();
        assert_eq!(to, ["bob@example.com", "carol@example.com"]);
        assert_eq!(m.to[1].name, None);
        let cc: Vec<_> = m.cc.iter().map(|b| b.address.as_str()).collect();
        assert_eq!(
            cc,
            ["dave@example.com", "eve@example.com"],
            "groups flattened"
        );
        assert!(m.bcc.is_empty(), "a group without members is no address");
        assert_eq!(m.reply_to[0].address.as_str(), "sales@example.com");
        assert_eq!(
            m.sender().unwrap().address.as_str(),
            "anna.muster@example.de"
        );
        assert_eq!(m.recipients().count(), 4);
    }

    #[test]
    fn text_comes_from_html_when_there_is_only_html() {
        let m = mail(
            "From: a@example.com\n\
             Content-Type: text/html; charset=utf-8\n\
             \n\
             <html><body><p>Guten Tag,</p><p>bitte <b>anrufen</b>.</p></body></html>\n",
        );
        assert!(m.text_from_html);
        let text = m.text.unwrap();
        assert!(text.contains("Guten Tag,"), "{text}");
        assert!(text.contains("bitte anrufen."), "{text}");
        assert!(!text.contains('<'), "{text}");
    }

    #[test]
    fn plain_alternative_wins_over_html() {
        let m = mail(
            "From: a@example.com\n\
             Content-Type: multipart/alternative; boundary=b\n\
             \n\
             --b\n\
             Content-Type: text/plain\n\
             \n\
             plain words\n\
             --b\n\
             Content-Type: text/html\n\
             \n\
             <p>html words</p>\n\
             --b--\n",
        );
        assert!(!m.text_from_html);
        assert_eq!(m.text.as_deref().map(str::trim), Some("plain words"));
    }

    #[test]
    fn e16_attachments_are_kept_with_name_type_and_bytes() {
        let m = mail(
            "From: a@example.com\n\
             Content-Type: multipart/mixed; boundary=b\n\
             \n\
             --b\n\
             Content-Type: text/plain\n\
             \n\
             see attached\n\
             --b\n\
             Content-Type: application/PDF; name=\"=?utf-8?q?Preisliste_=C3=A4.pdf?=\"\n\
             Content-Disposition: attachment\n\
             Content-Transfer-Encoding: base64\n\
             \n\
             JVBERi0xLjQK\n\
             --b--\n",
        );
        assert_eq!(m.attachments.len(), 1);
        let pdf = &m.attachments[0];
        assert_eq!(pdf.file_name.as_deref(), Some("Preisliste ä.pdf"));
        assert_eq!(pdf.content_type, "application/pdf");
        assert_eq!(pdf.content, b"%PDF-1.4\n");
        assert_eq!(pdf.size(), 9);
        assert!(!pdf.inline);
        assert!(m.vcards.is_empty());
    }

    #[test]
    fn e3_vcards_are_found_attached_or_inline() {
        let m = mail(
            "From: a@example.com\n\
             Content-Type: multipart/mixed; boundary=b\n\
             \n\
             --b\n\
             Content-Type: text/plain\n\
             \n\
             my card\n\
             --b\n\
             Content-Type: text/x-vcard; charset=utf-8\n\
             \n\
             BEGIN:VCARD\n\
             VERSION:3.0\n\
             FN:Anna\n\
             END:VCARD\n\
             --b\n\
             Content-Type: application/octet-stream; name=\"bob.vcf\"\n\
             Content-Disposition: attachment; filename=\"bob.vcf\"\n\
             \n\
             BEGIN:VCARD\n\
             VERSION:4.0\n\
             FN:Bob\n\
             END:VCARD\n\
             --b--\n",
        );
        assert_eq!(m.vcards.len(), 2);
        assert!(String::from_utf8_lossy(&m.vcards[0].content).contains("FN:Anna"));
        assert_eq!(m.vcards[1].file_name.as_deref(), Some("bob.vcf"));
        let text = m.text.unwrap();
        assert!(
            !text.contains("BEGIN:VCARD"),
            "a vCard is not body text: {text}"
        );
    }

    #[test]
    fn attached_message_is_read_as_a_nested_mail() {
        let m = mail(
            "From: boss@company.example\n\
             Subject: Fwd: Anfrage\n\
             Content-Type: multipart/mixed; boundary=b\n\
             \n\
             --b\n\
             Content-Type: text/plain\n\
             \n\
             see below\n\
             --b\n\
             Content-Type: message/rfc822\n\
             \n\
             From: Kunde <kunde@example.org>\n\
             Subject: Anfrage\n\
             Date: Mon, 1 Mar 2021 10:00:00 +0000\n\
             \n\
             Bitte um Angebot.\n\
             --b--\n",
        );
        assert_eq!(m.messages.len(), 1);
        assert_eq!(
            m.attachments.len(),
            1,
            "the attached message is kept as a file too"
        );
        assert_eq!(m.attachments[0].content_type, "message/rfc822");
        let original = &m.messages[0];
        assert_eq!(original.from[0].address.as_str(), "kunde@example.org");
        assert_eq!(original.subject.as_deref(), Some("Anfrage"));
        assert!(
            original
                .text
                .as_deref()
                .unwrap()
                .contains("Bitte um Angebot.")
        );
    }

    #[test]
    fn impossible_dates_and_bad_addresses_are_left_out() {
        let m = mail(
            "From: not an address\n\
             To: <>\n\
             Date: Mon, 31 Feb 2021 10:00:00 +0000\n\
             Subject: x\n\
             \n\
             body\n",
        );
        assert!(m.from.is_empty());
        assert!(m.to.is_empty());
        assert_eq!(m.date, None);
    }

    #[test]
    fn nothing_to_read_is_an_error() {
        assert_eq!(parse(b""), Err(Error::EmptyMessage));
        assert_eq!(parse(b" \r\n\t"), Err(Error::EmptyMessage));
        assert_eq!(parse(b"just some words"), Err(Error::NoHeaders));
        assert_eq!(parse(b"\x00\x01\x02"), Err(Error::NoHeaders));
        assert!(parse(b"Subject: only a header").is_ok());
    }
}
