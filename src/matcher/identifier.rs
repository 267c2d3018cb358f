//! `Identifier`: what the matcher compares, one type for both channels (M1).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::email::EmailAddress;
use super::phone::PhoneKey;

/// A caller's number or a correspondent's address, normalised (M2, M3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identifier {
    Phone(PhoneKey),
    Email(EmailAddress),
}

/// Which channel an identifier comes from; stored next to the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    Phone,
    Email,
}

impl Identifier {
    /// What the database stores and indexes: the E.164 or digits string, or the
    /// lower-cased address. Keys of different kinds never collide: E.164 starts with `+`,
    /// digits are only digits, addresses contain `@`.
    pub fn key(&self) -> &str {
        match self {
            Identifier::Phone(key) => key.as_str(),
            Identifier::Email(address) => address.as_str(),
        }
    }

    pub fn kind(&self) -> IdentifierKind {
        match self {
            Identifier::Phone(_) => IdentifierKind::Phone,
            Identifier::Email(_) => IdentifierKind::Email,
        }
    }
}

impl From<PhoneKey> for Identifier {
    fn from(value: PhoneKey) -> Self {
        Identifier::Phone(value)
    }
}

impl From<EmailAddress> for Identifier {
    fn from(value: EmailAddress) -> Self {
        Identifier::Email(value)
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl IdentifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierKind::Phone => "phone",
            IdentifierKind::Email => "email",
        }
    }
}

impl fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::{normalise_phone, parse_email};

    #[test]
    fn m1_one_identifier_for_both_channels() {
        let de = Some("DE".parse().unwrap());
        let phone = Identifier::from(normalise_phone("030 1234567", de).unwrap());
        let extension = Identifier::from(normalise_phone("101", de).unwrap());
        let email = Identifier::from(parse_email("Anna <Anna@Example.de>").unwrap());
        assert_eq!(
            (phone.kind(), phone.key()),
            (IdentifierKind::Phone, "+49301234567")
        );
        assert_eq!(
            (extension.kind(), extension.key()),
            (IdentifierKind::Phone, "101")
        );
        assert_eq!(
            (email.kind(), email.key()),
            (IdentifierKind::Email, "anna@example.de")
        );
        assert_eq!(email.to_string(), "anna@example.de");
        assert_eq!(IdentifierKind::Email.as_str(), "email");
        assert_eq!(
            serde_json::to_string(&IdentifierKind::Phone).unwrap(),
            "\"phone\""
        );
    }
}
