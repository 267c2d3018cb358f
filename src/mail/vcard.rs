//! vCard 2.1, 3.0 and 4.0 → [`ContactDraft`]s (E3: contacts from vCard attachments; the
//! `import-vcards` command and `POST /contacts/import` read files the same way).
//!
//! `calcard` parses; this module first turns the bytes into UTF-8, as calcard reads only
//! UTF-8: UTF-16 with or without a byte-order mark (Roundcube's sample has none), and
//! 8-bit files in the charset their `CHARSET=` parameter names (else Windows-1252, what
//! Outlook-era exports are written in). Values encoded in quoted-printable or base64 are
//! decoded by calcard with their own CHARSET. A draft is what a card says; whether it
//! becomes a contact, and which of its addresses are excluded (M4, M6), is decided later.

use std::borrow::Cow;

use calcard::vcard::{
    VCard, VCardEntry, VCardKind, VCardParameterName, VCardParameterValue, VCardProperty,
    VCardValue,
};
use calcard::{Entry, Parser};
use mail_parser::decoders::charsets::map::charset_decoder;

use super::Error;
use crate::matcher::{EmailAddress, parse_email};

/// Cards read from one input at most; an address book export holds a few thousand.
const MAX_CARDS: usize = 100_000;

/// One card, reduced to what the CRM stores on a contact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactDraft {
    /// FN, else the N components as "given additional family".
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// The first ORG component (the company; the others are departments).
    pub organisation: Option<String>,
    pub title: Option<String>,
    /// Preferred first (PREF, `TYPE=pref`); values that are not addresses are left out.
    pub emails: Vec<EmailAddress>,
    /// As written (`tel:` URIs without the scheme): the matcher normalises them with the
    /// default country of the mailbox or number they arrive on (M2).
    pub phones: Vec<String>,
    /// The card describes an organisation (`KIND:org`, Apple's `X-ABShowAs:COMPANY`).
    pub is_company: bool,
}

/// Every card in `input`. Lines calcard cannot read are skipped; an input without any card
/// is an error.
pub fn parse_vcards(input: &[u8]) -> Result<Vec<ContactDraft>, Error> {
    let text = to_utf8(input);
    if text.trim().is_empty() {
        return Err(Error::EmptyVCard);
    }
    let mut parser = Parser::new(&text);
    let mut drafts = Vec::new();
    let mut first_problem = None;
    for _ in 0..MAX_CARDS {
        match parser.entry() {
            Entry::VCard(card) => drafts.push(draft(&card)),
            Entry::Eof => break,
            Entry::InvalidLine(line) => {
                first_problem.get_or_insert_with(|| format!("unreadable line '{line}'"));
            }
            Entry::UnterminatedComponent(name) => {
                first_problem.get_or_insert_with(|| format!("{name} has no END line"));
                break;
            }
            Entry::TooManyComponents => {
                first_problem.get_or_insert_with(|| "too many nested components".to_owned());
                break;
            }
            // iCalendar and the like: not a contact.
            _ => {}
        }
    }
    match (drafts.is_empty(), first_problem) {
        (false, _) => Ok(drafts),
        (true, Some(problem)) => Err(Error::BadVCard(problem)),
        (true, None) => Err(Error::NoVCard),
    }
}

fn draft(card: &VCard) -> ContactDraft {
    let first_text = |property: VCardProperty| {
        card.properties(&property)
            .find_map(|entry| entry.values.iter().find_map(text).filter(|t| !t.is_empty()))
    };
    let n: Vec<String> = card
        .property(&VCardProperty::N)
        .map(|entry| {
            entry
                .values
                .iter()
                .map(|v| text(v).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let component = |i: usize| n.get(i).filter(|s| !s.is_empty()).cloned();
    let (family_name, given_name) = (component(0), component(1));
    let name = first_text(VCardProperty::Fn).or_else(|| {
        let parts: Vec<String> = [1, 2, 0].into_iter().filter_map(component).collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    });

    let mut emails: Vec<(bool, EmailAddress)> = Vec::new();
    for entry in card.properties(&VCardProperty::Email) {
        let Some(address) = entry
            .values
            .iter()
            .find_map(text)
            .and_then(|v| parse_email(&v).ok())
        else {
            continue;
        };
        if !emails.iter().any(|(_, known)| *known == address) {
            emails.push((is_preferred(entry), address));
        }
    }
    // Stable: the preferred first, the rest in card order.
    emails.sort_by_key(|(preferred, _)| !preferred);

    let phones = card
        .properties(&VCardProperty::Tel)
        .filter_map(|entry| entry.values.iter().find_map(text))
        .map(|v| {
            let v = v.trim();
            v.strip_prefix("tel:")
                .or_else(|| v.strip_prefix("TEL:"))
                .unwrap_or(v)
                .to_owned()
        })
        .filter(|v| !v.is_empty())
        .collect();

    let is_company = card.properties(&VCardProperty::Kind).any(|entry| {
        entry
            .values
            .iter()
            .any(|v| matches!(v, VCardValue::Kind(VCardKind::Org)))
    }) || card
        .properties(&VCardProperty::Other("X-ABSHOWAS".into()))
        .chain(card.properties(&VCardProperty::Other("X-ABShowAs".into())))
        .any(|entry| {
            entry
                .values
                .iter()
                .filter_map(text)
                .any(|v| v.eq_ignore_ascii_case("company"))
        });

    ContactDraft {
        name,
        given_name,
        family_name,
        organisation: first_text(VCardProperty::Org),
        title: first_text(VCardProperty::Title),
        emails: emails.into_iter().map(|(_, address)| address).collect(),
        phones,
        is_company,
    }
}

/// A value as trimmed text; structured values (N, ORG) give their components joined.
fn text(value: &VCardValue) -> Option<String> {
    let text = match value {
        VCardValue::Text(text) => text.trim().to_owned(),
        VCardValue::Component(parts) => parts
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        _ => return None,
    };
    Some(text)
}

/// RFC 6350 PREF, vCard 3.0 `TYPE=pref`, vCard 2.1 `;PREF`.
fn is_preferred(entry: &VCardEntry) -> bool {
    entry.params.iter().any(|param| {
        matches!(param.name, VCardParameterName::Pref)
            || matches!(&param.name, VCardParameterName::Other(n) if n.eq_ignore_ascii_case("pref"))
            || matches!(&param.value, VCardParameterValue::Text(t) if t.eq_ignore_ascii_case("pref"))
    })
}

/// The input as UTF-8 (see the module documentation).
fn to_utf8(input: &[u8]) -> Cow<'_, str> {
    let decode = |charset: &[u8], bytes: &[u8]| {
        charset_decoder(charset).map_or_else(
            || String::from_utf8_lossy(bytes).into_owned(),
            |decoder| decoder(bytes),
        )
    };
    match input {
        [0xEF, 0xBB, 0xBF, rest @ ..] => return String::from_utf8_lossy(rest),
        [0xFF, 0xFE, rest @ ..] => return Cow::Owned(decode(b"utf-16le", rest)),
        [0xFE, 0xFF, rest @ ..] => return Cow::Owned(decode(b"utf-16be", rest)),
        // Without a mark: "BEGIN" in UTF-16 has a zero byte before or after each letter.
        [0, b, ..] if *b != 0 => return Cow::Owned(decode(b"utf-16be", input)),
        [b, 0, ..] if *b != 0 => return Cow::Owned(decode(b"utf-16le", input)),
        _ => {}
    }
    match std::str::from_utf8(input) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(decode(&declared_charset(input), input)),
    }
}

/// The first `CHARSET=` parameter of an 8-bit file, or Windows-1252.
fn declared_charset(input: &[u8]) -> Vec<u8> {
    const KEY: &[u8] = b"charset=";
    input
        .windows(KEY.len())
        .position(|w| w.eq_ignore_ascii_case(KEY))
        .map(|at| {
            input[at + KEY.len()..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
                .copied()
                .collect::<Vec<u8>>()
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| b"windows-1252".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> ContactDraft {
        let mut cards = parse_vcards(input).unwrap();
        assert_eq!(cards.len(), 1);
        cards.remove(0)
    }

    #[test]
    fn e3_vcard_30_gives_name_emails_phones_and_company() {
        let card = one(
            b"BEGIN:VCARD\r\nVERSION:3.0\r\nN:Muster;Anna;;;\r\nFN:Anna Muster\r\n\
            ORG:Muster GmbH;Vertrieb\r\nTITLE:Leitung\r\n\
            EMAIL;TYPE=INTERNET:anna@muster.example\r\n\
            EMAIL;TYPE=INTERNET,pref:Anna.Muster@Muster.Example\r\n\
            TEL;TYPE=WORK:+49 30 1234567\r\nTEL;TYPE=CELL:0171 1234567\r\nEND:VCARD\r\n",
        );
        assert_eq!(card.name.as_deref(), Some("Anna Muster"));
        assert_eq!(card.given_name.as_deref(), Some("Anna"));
        assert_eq!(card.family_name.as_deref(), Some("Muster"));
        assert_eq!(card.organisation.as_deref(), Some("Muster GmbH"));
        assert_eq!(card.title.as_deref(), Some("Leitung"));
        let emails: Vec<_> = card.emails.iter().map(|e| e.as_str()).collect();
        assert_eq!(
            emails,
            ["anna.muster@muster.example", "anna@muster.example"],
            "M3 lower case, preferred first"
        );
        assert_eq!(card.phones, ["+49 30 1234567", "0171 1234567"]);
        assert!(!card.is_company);
    }

    #[test]
    fn e3_vcard_21_quoted_printable_and_40_uri_phone() {
        let card = one(b"BEGIN:VCARD\r\nVERSION:2.1\r\n\
            N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:M=C3=BCller;J=C3=B6rg\r\n\
            TEL;PREF;WORK:030 123\r\nEND:VCARD\r\n");
        assert_eq!(card.name.as_deref(), Some("Jörg Müller"));
        let card = one(b"BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Acme\r\nKIND:org\r\n\
            TEL;VALUE=uri:tel:+1-555-555-0100\r\nEND:VCARD\r\n");
        assert_eq!(card.phones, ["+1-555-555-0100"]);
        assert!(card.is_company);
    }

    #[test]
    fn e3_utf16_without_mark_and_8bit_with_charset_are_transcoded() {
        let text = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Zoë Ünal\r\nEND:VCARD\r\n";
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(one(&be).name.as_deref(), Some("Zoë Ünal"));
        let mut le = vec![0xFF, 0xFE];
        le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(one(&le).name.as_deref(), Some("Zoë Ünal"));
        let latin =
            b"BEGIN:VCARD\r\nVERSION:2.1\r\nFN;CHARSET=windows-1252:John Do\xEB\r\nEND:VCARD\r\n";
        assert_eq!(one(latin).name.as_deref(), Some("John Doë"));
    }

    #[test]
    fn e3_not_a_vcard_is_an_error() {
        assert_eq!(parse_vcards(b""), Err(Error::EmptyVCard));
        assert_eq!(parse_vcards(b" \r\n"), Err(Error::EmptyVCard));
        assert!(parse_vcards(b"hello world").is_err());
        assert!(parse_vcards(b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n").is_err());
        // A card cut short is read as far as it goes.
        let cut = parse_vcards(b"BEGIN:VCARD\r\nFN:x\r\n").unwrap();
        assert_eq!(cut[0].name.as_deref(), Some("x"));
    }
}
