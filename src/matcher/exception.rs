//! Exception rules as an admin writes them (M4, M5): one list that holds phone numbers,
//! e-mail addresses and domains. Parsing decides which of the three a value is.

use std::fmt;

use super::country::Country;
use super::email::{Domain, DomainError, EmailAddress, EmailError, WILDCARDS, parse_email};
use super::phone::{PhoneError, PhoneKey, normalise_phone};

/// One entry of the exceptions list (M4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExceptionRule {
    Phone(PhoneKey),
    Email(EmailAddress),
    Domain(Domain),
}

/// Why a value cannot be an exception.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExceptionError {
    #[error(
        "an exception needs a value: a phone number, an e-mail address or a domain such as '@gmail.com'"
    )]
    Empty,
    /// M5: wildcards and other non-domains; the message shows the accepted forms.
    #[error(transparent)]
    InvalidDomain(#[from] DomainError),
    #[error(transparent)]
    InvalidPhone(#[from] PhoneError),
    #[error(transparent)]
    InvalidEmail(#[from] EmailError),
}

impl ExceptionError {
    /// A stable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            ExceptionError::Empty => "empty",
            ExceptionError::InvalidDomain(_) => "invalid_domain",
            ExceptionError::InvalidPhone(_) => "invalid_phone",
            ExceptionError::InvalidEmail(_) => "invalid_email",
        }
    }
}

impl ExceptionRule {
    /// `"phone"`, `"email"` or `"domain"`: how the rule is stored.
    pub fn kind_str(&self) -> &'static str {
        match self {
            ExceptionRule::Phone(_) => "phone",
            ExceptionRule::Email(_) => "email",
            ExceptionRule::Domain(_) => "domain",
        }
    }

    /// The normalised value: `+4930123456`, `bad@example.com`, `@gmail.com`.
    pub fn value(&self) -> String {
        match self {
            ExceptionRule::Phone(key) => key.as_str().to_owned(),
            ExceptionRule::Email(address) => address.as_str().to_owned(),
            ExceptionRule::Domain(domain) => format!("@{domain}"),
        }
    }
}

impl fmt::Display for ExceptionRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value())
    }
}

/// M4/M5: read one exception as an admin typed it. `default_country` reads national phone
/// spellings (`030 123456`); without it they are kept as digits, like any number (M2).
///
/// `@gmail.com` and `gmail.com` are domains, anything else with an `@` an address, a
/// dotted name with letters a domain, and the rest a phone number. A wildcard anywhere
/// (`*@gmail.com`) is refused with the accepted forms.
pub fn parse_exception(
    value: &str,
    default_country: Option<Country>,
) -> Result<ExceptionRule, ExceptionError> {
    let text = value.trim();
    if text.is_empty() {
        return Err(ExceptionError::Empty);
    }
    if text.starts_with('@') || is_domain_like(text) {
        return Ok(ExceptionRule::Domain(Domain::parse(text)?));
    }
    if text.contains('@') {
        return Ok(ExceptionRule::Email(parse_email(text)?));
    }
    Ok(ExceptionRule::Phone(normalise_phone(
        text,
        default_country,
    )?))
}

/// Wildcards (refused as domains, with the accepted forms), host names (`gmail.com`,
/// `1und1.de`) and words without digits (`gmail`, so the error is about domains) go to the
/// domain parser. Phone spellings with letters (`030 123456 ext. 12`, `tel:+49…`) have
/// white space, no dot, or digits, and do not.
fn is_domain_like(text: &str) -> bool {
    if text.contains(WILDCARDS) {
        return true;
    }
    let has_letter = text.chars().any(char::is_alphabetic);
    let has_digit = text.chars().any(|c| c.is_ascii_digit());
    let hostname = text.contains('.') && !text.contains(char::is_whitespace);
    !text.contains('@') && has_letter && (hostname || !has_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn de() -> Option<Country> {
        Some("DE".parse().unwrap())
    }

    fn rule(value: &str) -> (&'static str, String) {
        let rule = parse_exception(value, de()).unwrap();
        (rule.kind_str(), rule.value())
    }

    #[test]
    fn m4_one_list_of_numbers_addresses_and_domains() {
        assert_eq!(rule("+4930123456"), ("phone", "+4930123456".into()));
        assert_eq!(rule("030 123456"), ("phone", "+4930123456".into()));
        assert_eq!(rule("030 123456 ext. 12"), ("phone", "+4930123456".into()));
        assert_eq!(rule("tel:+49-30-123456"), ("phone", "+4930123456".into()));
        assert_eq!(rule("101"), ("phone", "101".into()));
        assert_eq!(
            rule(" Bad@Example.com "),
            ("email", "bad@example.com".into())
        );
        assert_eq!(
            rule("Spam <bad@example.com>"),
            ("email", "bad@example.com".into())
        );
        assert_eq!(rule("@gmail.com"), ("domain", "@gmail.com".into()));
        assert_eq!(rule("GMail.com"), ("domain", "@gmail.com".into()));
        assert_eq!(rule("1und1.de"), ("domain", "@1und1.de".into()));
    }

    #[test]
    fn m4_national_number_without_country_is_kept_as_digits() {
        let rule = parse_exception("030 123456", None).unwrap();
        assert_eq!(
            rule,
            ExceptionRule::Phone(PhoneKey::Digits("030123456".into()))
        );
    }

    #[test]
    fn m5_wildcard_domain_is_refused() {
        let err = parse_exception("*@gmail.com", de()).unwrap_err();
        assert_eq!(err.code(), "invalid_domain");
        assert_eq!(
            err.to_string(),
            "'*@gmail.com' is not accepted: write the domain as '@gmail.com' or 'gmail.com'"
        );
        for value in [
            "*.gmail.com",
            "%@gmail.com",
            "user*@gmail.com",
            "*",
            "@*.ru",
        ] {
            let err = parse_exception(value, de()).unwrap_err();
            assert_eq!(err.code(), "invalid_domain", "{value}");
        }
    }

    #[test]
    fn m4_invalid_values_have_codes() {
        let code = |value: &str| parse_exception(value, de()).unwrap_err().code();
        assert_eq!(code(""), "empty");
        assert_eq!(code("   "), "empty");
        assert_eq!(code("gmail"), "invalid_domain");
        assert_eq!(code("@gmail"), "invalid_domain");
        assert_eq!(code("bad@"), "invalid_email");
        assert_eq!(code("bad @example.com"), "invalid_email");
        assert_eq!(code("+ ( )"), "invalid_phone");
        assert_eq!(
            parse_exception("", None).unwrap_err().to_string(),
            "an exception needs a value: a phone number, an e-mail address or a domain such as '@gmail.com'"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn m4_parse_exception_never_panics(value in "\\PC{0,40}") {
                let _ = parse_exception(&value, de());
                let _ = parse_exception(&value, None);
            }

            /// Digits are left out: they are what remained of an unreadable value
            /// (`30A000` → `30000`), and those digits alone may well read as a number.
            #[test]
            fn m4_normalised_value_parses_to_the_same_rule(
                value in "[@*+]?[A-Za-z0-9 .@()-]{0,24}",
            ) {
                if let Ok(rule) = parse_exception(&value, de())
                    && !matches!(rule, ExceptionRule::Phone(PhoneKey::Digits(_)))
                {
                    prop_assert_eq!(parse_exception(&rule.value(), de()), Ok(rule.clone()));
                }
            }
        }
    }
}
