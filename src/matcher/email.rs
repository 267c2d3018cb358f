//! E-mail addresses and domains as the matcher compares them (M3, M5).
//!
//! An [`EmailAddress`] is the whole address, trimmed and lower-cased: M3 compares
//! addresses case-insensitively as a whole (the local part too, although RFC 5321 lets a
//! server tell `Anna@` from `anna@`; no mail system customers use does). A display name is
//! kept apart in [`Mailbox`] and never compared. A [`Domain`] is a host name written
//! `gmail.com` or `@gmail.com`; wildcards are refused (M5).
//!
//! This is not a full RFC 5322 parser (the MIME layer owns that): it accepts one mailbox,
//! bare or as `Name <address>`, and refuses what cannot be an address we could match.

use std::fmt;

use serde::{Deserialize, Serialize};

/// RFC 5321 §4.5.3.1.3: a path holds at most 256 octets, so an address at most 254.
const MAX_ADDRESS_LEN: usize = 254;
/// RFC 1035 §2.3.4.
const MAX_DOMAIN_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// An e-mail address normalised for comparison (M3): trimmed, lower-cased, no display name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

/// One mailbox as written in a header: the display name is kept for people to read and
/// never used for matching (M3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: EmailAddress,
}

/// Why a text is not an e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the e-mail address is empty")]
    Empty,
    #[error("'{0}' is not an e-mail address: it has no '@'")]
    NoAt(String),
    #[error("'{0}' is not an e-mail address: nothing comes before the '@'")]
    EmptyLocalPart(String),
    #[error("'{0}' is not an e-mail address: nothing comes after the '@'")]
    EmptyDomain(String),
    #[error("'{0}' is not an e-mail address: it contains white space")]
    Whitespace(String),
    #[error("'{input}' is not an e-mail address: '{found}' may not appear in it")]
    InvalidCharacter { input: String, found: char },
    #[error("'{0}' is not an e-mail address: the part after the '@' is not a host name")]
    InvalidDomain(String),
    #[error("'{0}' is not an e-mail address: the '<' is not closed by a '>' at the end")]
    UnclosedAngle(String),
    #[error("the e-mail address is longer than {MAX_ADDRESS_LEN} characters")]
    TooLong,
}

/// M3: the address of `input`, bare (`A@B.de`) or with a display name (`Name <A@B.de>`).
pub fn parse_email(input: &str) -> Result<EmailAddress, EmailError> {
    parse_mailbox(input).map(|mailbox| mailbox.address)
}

/// Like [`parse_email`], keeping the display name.
pub fn parse_mailbox(input: &str) -> Result<Mailbox, EmailError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(EmailError::Empty);
    }
    let (name, address) = match text.rfind('<') {
        // The address is the last `<…>`; the name before it may itself contain `<`.
        Some(open) => {
            let inner = text[open + 1..]
                .strip_suffix('>')
                .ok_or_else(|| EmailError::UnclosedAngle(input.to_owned()))?;
            (display_name(&text[..open]), inner.trim())
        }
        None => (None, text),
    };
    Ok(Mailbox {
        name,
        address: EmailAddress::from_address(address, input)?,
    })
}

fn display_name(text: &str) -> Option<String> {
    let text = text.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
        .trim();
    (!text.is_empty()).then(|| text.to_owned())
}

impl EmailAddress {
    /// Same as [`parse_email`].
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        parse_email(input)
    }

    /// Checks a bare address; `input` is the whole text, for error messages.
    fn from_address(address: &str, input: &str) -> Result<Self, EmailError> {
        // Checked after lower-casing, which can change characters, so that the stored key
        // parses back to itself.
        let address = address.to_lowercase();
        if address.is_empty() {
            return Err(EmailError::Empty);
        }
        if address.chars().count() > MAX_ADDRESS_LEN {
            return Err(EmailError::TooLong);
        }
        if address.chars().any(char::is_whitespace) {
            return Err(EmailError::Whitespace(input.to_owned()));
        }
        let (local, domain) = address
            .rsplit_once('@')
            .ok_or_else(|| EmailError::NoAt(input.to_owned()))?;
        if local.is_empty() {
            return Err(EmailError::EmptyLocalPart(input.to_owned()));
        }
        if domain.is_empty() {
            return Err(EmailError::EmptyDomain(input.to_owned()));
        }
        // Quoted local parts and comments are legal RFC 5322 but never seen on customer
        // mail; refusing them keeps the comparison key unambiguous.
        if let Some(found) = local.chars().find(|&c| !is_local_char(c)) {
            return Err(EmailError::InvalidCharacter {
                input: input.to_owned(),
                found,
            });
        }
        if !is_hostname(domain, false) {
            return Err(EmailError::InvalidDomain(input.to_owned()));
        }
        Ok(EmailAddress(address))
    }

    /// The compared text, `anna@example.com`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the last `@`.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(local, _)| local)
    }

    /// The part after the `@`, `example.com`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

/// RFC 5322 `atext` and `.`, plus any non-ASCII character (RFC 6531).
fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~.".contains(c)
        || !c.is_ascii() && !c.is_control()
}

/// Labels of letters, digits, `-` and `_` (non-ASCII letters allowed for IDNs), separated
/// by dots; one trailing dot (the DNS root) is tolerated by the caller, not here.
fn is_hostname(text: &str, require_dot: bool) -> bool {
    text.len() <= MAX_DOMAIN_LEN
        && (!require_dot || text.contains('.'))
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        })
}

impl TryFrom<String> for EmailAddress {
    type Error = EmailError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        parse_email(&value)
    }
}

impl From<EmailAddress> for String {
    fn from(value: EmailAddress) -> Self {
        value.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mail domain (M5): lower case, no leading `@`, a dotted host name, no wildcard.
/// Matches addresses whose domain is exactly this one (not its subdomains).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

/// Why a text is not a domain. Each message shows the accepted forms (M5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("'{input}' is not accepted: write the domain as '@{suggestion}' or '{suggestion}'")]
    Wildcard { input: String, suggestion: String },
    #[error("'{0}' is not a domain: write it as '@example.com' or 'example.com'")]
    NotAHostName(String),
}

/// Characters people use as wildcards in blacklists (`*@gmail.com`, `%.ru`, `?`).
pub(super) const WILDCARDS: [char; 3] = ['*', '%', '?'];

impl Domain {
    /// Accepts `gmail.com`, `@gmail.com` and `@GMail.com.`; refuses `*@gmail.com`.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        if input.contains(WILDCARDS) {
            return Err(DomainError::Wildcard {
                input: input.to_owned(),
                suggestion: suggestion(input),
            });
        }
        let text = input.trim();
        let text = text.strip_prefix('@').unwrap_or(text);
        let text = text.strip_suffix('.').unwrap_or(text).to_lowercase();
        if is_hostname(&text, true) {
            Ok(Domain(text))
        } else {
            Err(DomainError::NotAHostName(input.to_owned()))
        }
    }

    /// `gmail.com`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `address` is at this domain.
    pub fn contains(&self, address: &EmailAddress) -> bool {
        address.domain() == self.0
    }
}

/// What the user probably meant by a wildcard pattern: `*@gmail.com`, `*.gmail.com` and
/// `user*@gmail.com` → `gmail.com`.
fn suggestion(input: &str) -> String {
    let stripped: String = input.chars().filter(|c| !WILDCARDS.contains(c)).collect();
    let host = stripped.rsplit('@').next().unwrap_or_default();
    let host = host.trim().trim_start_matches('.');
    Domain::parse(host).map_or_else(|_| "example.com".to_owned(), |domain| domain.0)
}

impl TryFrom<String> for Domain {
    type Error = DomainError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Domain::parse(&value)
    }
}

impl From<Domain> for String {
    fn from(value: Domain) -> Self {
        value.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn m3_email_case_insensitive_display_name_ignored() {
        let a = parse_email("Anna Muster <Anna.Muster@Example.DE>").unwrap();
        let b = parse_email("  anna.muster@example.de ").unwrap();
        let c = parse_email("\"Muster, Anna\" <ANNA.MUSTER@EXAMPLE.DE>").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.as_str(), "anna.muster@example.de");
        assert_eq!(a.local_part(), "anna.muster");
        assert_eq!(a.domain(), "example.de");
    }

    #[test]
    fn m3_display_name_is_kept_apart() {
        let mailbox = parse_mailbox("\"Muster, Anna\" <anna@example.de>").unwrap();
        assert_eq!(mailbox.name.as_deref(), Some("Muster, Anna"));
        assert_eq!(mailbox.address.as_str(), "anna@example.de");
        assert_eq!(parse_mailbox("<anna@example.de>").unwrap().name, None);
        assert_eq!(parse_mailbox("anna@example.de").unwrap().name, None);
        // The last <…> is the address, even when the name holds a '<'.
        let odd = parse_mailbox("a <b <anna@example.de>").unwrap();
        assert_eq!(odd.address.as_str(), "anna@example.de");
    }

    #[test]
    fn m3_malformed_addresses_are_refused() {
        use EmailError::*;
        let err = |input: &str| parse_email(input).unwrap_err();
        assert_eq!(err(""), Empty);
        assert_eq!(err("  "), Empty);
        assert_eq!(err("<>"), Empty);
        assert_eq!(err("anna.example.de"), NoAt("anna.example.de".into()));
        assert_eq!(err("@example.de"), EmptyLocalPart("@example.de".into()));
        assert_eq!(err("anna@"), EmptyDomain("anna@".into()));
        assert_eq!(
            err("an na@example.de"),
            Whitespace("an na@example.de".into())
        );
        assert_eq!(
            err("anna@exa mple.de"),
            Whitespace("anna@exa mple.de".into())
        );
        assert_eq!(
            err("Anna <anna@example.de"),
            UnclosedAngle("Anna <anna@example.de".into())
        );
        assert_eq!(
            err("a\"b@example.de"),
            InvalidCharacter {
                input: "a\"b@example.de".into(),
                found: '"'
            }
        );
        assert_eq!(
            err("anna@exa..mple"),
            InvalidDomain("anna@exa..mple".into())
        );
        assert_eq!(err("anna@-x.de"), InvalidDomain("anna@-x.de".into()));
        assert_eq!(err(&format!("{}@example.de", "a".repeat(250))), TooLong);
        assert_eq!(
            err("anna.example.de").to_string(),
            "'anna.example.de' is not an e-mail address: it has no '@'"
        );
    }

    #[test]
    fn m3_international_addresses_are_accepted() {
        let address = parse_email("Jörg@Müller.DE").unwrap();
        assert_eq!(address.as_str(), "jörg@müller.de");
        assert_eq!(parse_email("root@localhost").unwrap().domain(), "localhost");
    }

    #[test]
    fn m3_email_serde_goes_through_parse() {
        let address: EmailAddress = serde_json::from_str("\"Anna@Example.de\"").unwrap();
        assert_eq!(
            serde_json::to_string(&address).unwrap(),
            "\"anna@example.de\""
        );
        assert!(serde_json::from_str::<EmailAddress>("\"nope\"").is_err());
    }

    #[test]
    fn m5_domain_written_with_or_without_at() {
        let plain = Domain::parse("gmail.com").unwrap();
        assert_eq!(Domain::parse("@gmail.com").unwrap(), plain);
        assert_eq!(Domain::parse(" @GMail.COM. ").unwrap(), plain);
        assert_eq!(plain.as_str(), "gmail.com");
        assert!(plain.contains(&parse_email("x@GMAIL.com").unwrap()));
        assert!(!plain.contains(&parse_email("x@mail.gmail.com").unwrap()));
    }

    #[test]
    fn m5_wildcard_domain_is_refused() {
        let err = Domain::parse("*@gmail.com").unwrap_err();
        assert_eq!(
            err.to_string(),
            "'*@gmail.com' is not accepted: write the domain as '@gmail.com' or 'gmail.com'"
        );
        for (input, suggested) in [
            ("*.gmail.com", "gmail.com"),
            ("user*@gmail.com", "gmail.com"),
            ("%gmail.com", "gmail.com"),
            ("gmail.*", "example.com"),
            ("*", "example.com"),
        ] {
            let Err(DomainError::Wildcard { suggestion, .. }) = Domain::parse(input) else {
                panic!("{input} accepted");
            };
            assert_eq!(suggestion, suggested, "{input}");
        }
        assert_eq!(
            Domain::parse("*").unwrap_err().to_string(),
            "'*' is not accepted: write the domain as '@example.com' or 'example.com'"
        );
    }

    #[test]
    fn m5_domain_must_be_a_dotted_host_name() {
        for input in [
            "",
            "@",
            "gmail",
            "user@gmail.com",
            "gmail..com",
            ".gmail.com",
            "g mail.com",
        ] {
            assert_eq!(
                Domain::parse(input),
                Err(DomainError::NotAHostName(input.to_owned())),
                "{input}"
            );
        }
        assert_eq!(
            Domain::parse("gmail").unwrap_err().to_string(),
            "'gmail' is not a domain: write it as '@example.com' or 'example.com'"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn m3_parse_email_never_panics(input in "\\PC{0,60}") {
                if let Ok(mailbox) = parse_mailbox(&input) {
                    let address = mailbox.address;
                    prop_assert_eq!(parse_email(address.as_str()), Ok(address.clone()));
                }
            }

            #[test]
            fn m3_parse_email_never_panics_on_address_like_text(
                input in "[ \"<>]{0,2}[A-Za-zÄİß0-9.@<>\" -]{0,30}[>]?",
            ) {
                if let Ok(mailbox) = parse_mailbox(&input) {
                    let address = mailbox.address;
                    prop_assert_eq!(parse_email(address.as_str()), Ok(address.clone()));
                }
            }

            #[test]
            fn m3_parsed_address_round_trips(
                input in "[A-Za-z0-9._%+-]{1,20}@[A-Za-z0-9-]{1,10}(\\.[A-Za-z]{2,4}){1,2}",
                name in "[A-Za-z ]{0,12}",
            ) {
                if let Ok(address) = parse_email(&input) {
                    prop_assert_eq!(parse_email(address.as_str()), Ok(address.clone()));
                    prop_assert_eq!(parse_email(&format!("{name} <{input}>")), Ok(address.clone()));
                    prop_assert_eq!(parse_email(&input.to_uppercase()), Ok(address));
                }
            }

            #[test]
            fn m5_domain_parse_never_panics(input in "\\PC{0,40}") {
                if let Ok(domain) = Domain::parse(&input) {
                    prop_assert_eq!(Domain::parse(domain.as_str()), Ok(domain.clone()));
                }
            }
        }
    }
}
