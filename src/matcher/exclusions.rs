//! Everything that keeps an identifier out of the CRM: the exceptions list (M4) and the
//! employees' own numbers and addresses (M6). The caller loads both into [`Exclusions`];
//! this module only answers "is it excluded, and why".

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::email::{Domain, EmailAddress};
use super::exception::ExceptionRule;
use super::identifier::Identifier;
use super::phone::PhoneKey;

/// The exceptions list and the employees' identifiers, ready to check against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions {
    exception_phones: HashSet<PhoneKey>,
    exception_emails: HashSet<EmailAddress>,
    exception_domains: HashSet<Domain>,
    employee_phones: HashSet<PhoneKey>,
    /// Digits only, compared with [`PhoneKey::Digits`]: an extension never reads as E.164.
    employee_extensions: HashSet<String>,
    employee_emails: HashSet<EmailAddress>,
}

/// Why an identifier is excluded, with a sentence for the call log or mail store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    pub reason: ExclusionReason,
    pub message: String,
}

/// Which list excluded an identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionReason {
    /// M4: an admin put it on the exceptions list.
    Exception,
    /// M6: it is an employee's own number or address.
    Employee,
}

impl Exclusions {
    /// M4: add one entry of the exceptions list.
    pub fn add_exception(&mut self, rule: &ExceptionRule) {
        match rule {
            ExceptionRule::Phone(key) => self.exception_phones.insert(key.clone()),
            ExceptionRule::Email(address) => self.exception_emails.insert(address.clone()),
            ExceptionRule::Domain(domain) => self.exception_domains.insert(domain.clone()),
        };
    }

    /// M6: an employee's phone number (mobile, direct line).
    pub fn add_employee_phone(&mut self, key: &PhoneKey) {
        self.employee_phones.insert(key.clone());
    }

    /// M6: an employee's extension, e.g. `101`. Only its ASCII digits count; a value
    /// without any is ignored, as it could never match a number.
    pub fn add_employee_extension(&mut self, extension: &str) {
        let digits: String = extension.chars().filter(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            self.employee_extensions.insert(digits);
        }
    }

    /// M6: an employee's login address, or the address of a connected mailbox.
    pub fn add_employee_email(&mut self, email: &EmailAddress) {
        self.employee_emails.insert(email.clone());
    }

    /// Whether `id` is excluded. The exceptions list is checked first: it is what an admin
    /// chose, so its message is the more useful one when both apply.
    pub fn check(&self, id: &Identifier) -> Option<Exclusion> {
        match id {
            Identifier::Phone(key) => self.check_phone(key),
            Identifier::Email(address) => self.check_email(address),
        }
    }

    fn check_phone(&self, key: &PhoneKey) -> Option<Exclusion> {
        if self.exception_phones.contains(key) {
            return Some(Exclusion::exception(format!(
                "{key} is on the exceptions list"
            )));
        }
        if self.employee_phones.contains(key) {
            return Some(Exclusion::employee(format!(
                "{key} is the phone number of an employee"
            )));
        }
        match key {
            PhoneKey::Digits(digits) if self.employee_extensions.contains(digits) => Some(
                Exclusion::employee(format!("extension {digits} belongs to an employee")),
            ),
            _ => None,
        }
    }

    fn check_email(&self, address: &EmailAddress) -> Option<Exclusion> {
        if self.exception_emails.contains(address) {
            return Some(Exclusion::exception(format!(
                "{address} is on the exceptions list"
            )));
        }
        if let Some(domain) = self.exception_domains.iter().find(|d| d.contains(address)) {
            return Some(Exclusion::exception(format!(
                "@{domain} is an excluded domain"
            )));
        }
        if self.employee_emails.contains(address) {
            return Some(Exclusion::employee(format!(
                "{address} belongs to an employee"
            )));
        }
        None
    }
}

impl Exclusion {
    fn exception(message: String) -> Self {
        Self {
            reason: ExclusionReason::Exception,
            message,
        }
    }

    fn employee(message: String) -> Self {
        Self {
            reason: ExclusionReason::Employee,
            message,
        }
    }
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl ExclusionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExclusionReason::Exception => "exception",
            ExclusionReason::Employee => "employee",
        }
    }
}

impl fmt::Display for ExclusionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::{Country, normalise_phone, parse_email, parse_exception};

    fn de() -> Option<Country> {
        Some("DE".parse().unwrap())
    }

    fn phone(input: &str) -> Identifier {
        Identifier::Phone(normalise_phone(input, de()).unwrap())
    }

    fn email(input: &str) -> Identifier {
        Identifier::Email(parse_email(input).unwrap())
    }

    fn exclusions(rules: &[&str]) -> Exclusions {
        let mut exclusions = Exclusions::default();
        for rule in rules {
            exclusions.add_exception(&parse_exception(rule, de()).unwrap());
        }
        exclusions
    }

    fn excluded(exclusions: &Exclusions, id: &Identifier) -> (ExclusionReason, String) {
        let exclusion = exclusions.check(id).expect("should be excluded");
        (exclusion.reason, exclusion.message)
    }

    #[test]
    fn m4_exception_number_matches_in_any_spelling() {
        let list = exclusions(&["+49 30 123456"]);
        for spelling in [
            "030 123456",
            "0049 30 123456",
            "+49 (0)30 123456",
            "tel:+49-30-123456",
        ] {
            assert_eq!(
                excluded(&list, &phone(spelling)),
                (
                    ExclusionReason::Exception,
                    "+4930123456 is on the exceptions list".into()
                ),
                "{spelling}"
            );
        }
        assert_eq!(list.check(&phone("030 1234567")), None);
    }

    #[test]
    fn m4_exception_address_matches_case_insensitively() {
        let list = exclusions(&["Bad@Example.com"]);
        assert_eq!(
            excluded(&list, &email("Someone <BAD@example.COM>")),
            (
                ExclusionReason::Exception,
                "bad@example.com is on the exceptions list".into()
            )
        );
        assert_eq!(list.check(&email("good@example.com")), None);
    }

    #[test]
    fn m5_exception_domain_excludes_every_address_at_it() {
        for rule in ["@gmail.com", "gmail.com", "GMAIL.COM"] {
            let list = exclusions(&[rule]);
            assert_eq!(
                excluded(&list, &email("Anyone@GMail.com")),
                (
                    ExclusionReason::Exception,
                    "@gmail.com is an excluded domain".into()
                ),
                "{rule}"
            );
            // Exactly the domain: wildcards are refused, so subdomains are not implied.
            assert_eq!(list.check(&email("a@mail.gmail.com")), None);
            assert_eq!(list.check(&email("a@gmail.com.evil.org")), None);
        }
    }

    #[test]
    fn m6_employee_extension_is_excluded() {
        let mut list = Exclusions::default();
        list.add_employee_extension("101");
        list.add_employee_extension("ext. 102");
        list.add_employee_extension("none");
        assert_eq!(
            excluded(&list, &phone("101")),
            (
                ExclusionReason::Employee,
                "extension 101 belongs to an employee".into()
            )
        );
        assert!(list.check(&phone("102")).is_some());
        assert_eq!(list.check(&phone("103")), None);
        // A customer whose number merely ends in the extension is not an employee.
        assert_eq!(list.check(&phone("030 123101")), None);
    }

    #[test]
    fn m6_employee_phone_is_excluded() {
        let mut list = Exclusions::default();
        list.add_employee_phone(&normalise_phone("+49 151 23456789", None).unwrap());
        assert_eq!(
            excluded(&list, &phone("0151 23456789")),
            (
                ExclusionReason::Employee,
                "+4915123456789 is the phone number of an employee".into()
            )
        );
    }

    #[test]
    fn m6_employee_and_mailbox_addresses_are_excluded() {
        let mut list = Exclusions::default();
        list.add_employee_email(&parse_email("anna@firma.de").unwrap());
        list.add_employee_email(&parse_email("Sales <Sales@Firma.de>").unwrap());
        assert_eq!(
            excluded(&list, &email("ANNA@firma.de")),
            (
                ExclusionReason::Employee,
                "anna@firma.de belongs to an employee".into()
            )
        );
        assert!(list.check(&email("sales@firma.de")).is_some());
        // Colleagues at the same domain are excluded one by one, customers are not.
        assert_eq!(list.check(&email("kunde@firma.de")), None);
    }

    #[test]
    fn m4_exception_is_reported_before_employee() {
        let mut list = exclusions(&["anna@firma.de"]);
        list.add_employee_email(&parse_email("anna@firma.de").unwrap());
        assert_eq!(
            excluded(&list, &email("anna@firma.de")).0,
            ExclusionReason::Exception
        );
    }

    #[test]
    fn m1_phone_and_email_lists_never_cross() {
        let mut list = exclusions(&["101", "@gmail.com"]);
        list.add_employee_extension("102");
        assert_eq!(list.check(&email("101@example.com")), None);
        // An extension is digits, a full number is E.164: `+49102` is someone else.
        assert_eq!(
            list.check(&Identifier::Phone(PhoneKey::E164("+49102".into()))),
            None
        );
        assert_eq!(ExclusionReason::Employee.as_str(), "employee");
        assert_eq!(
            serde_json::to_string(&ExclusionReason::Exception).unwrap(),
            "\"exception\""
        );
    }
}
