//! Which way a message went and who the customers in it are (E2, E5, E12, M6).
//!
//! Seen from the company, as calls are: a message written by anyone on the company's side
//! (the mailbox itself, or any employee) is outgoing, whichever folder or client it came
//! from (E2); anything else is incoming. Employees and connected mailboxes are never
//! customers (E5, M6), so they are taken out here, before the matcher sees an address.
//! Exceptions (M4) are not: an excepted customer is still the correspondent, and the
//! matcher records why nothing is created.

use std::collections::HashSet;

use super::ParsedMail;
use crate::crm::model::Direction;
use crate::matcher::{EmailAddress, Mailbox};

/// Everyone on the company's side of a message (M6): the mailbox's own addresses (and the
/// secret forward address, for E16) and every employee's login and mailbox address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Insiders {
    addresses: HashSet<EmailAddress>,
    /// The mailbox's own addresses (or the forward address): on the company's side, but
    /// no employee's.
    own: HashSet<EmailAddress>,
}

/// The reading of one message for the CRM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Correspondence {
    /// Mail with a customer: incoming from the sender, or outgoing to every recipient who
    /// is not an insider. `customers` is never empty and holds each address once.
    Customer {
        direction: Direction,
        customers: Vec<Mailbox>,
    },
    /// Only insiders take part (E5, E12): nothing goes to the CRM.
    Internal,
    /// No readable From address: nobody to attach the message to.
    NoSender,
}

impl Insiders {
    /// `mailbox`: the addresses the mailbox receives and sends as (aliases included);
    /// `employees`: the login addresses of all employees and the addresses of every
    /// connected mailbox (M6).
    pub fn new(
        mailbox: impl IntoIterator<Item = EmailAddress>,
        employees: impl IntoIterator<Item = EmailAddress>,
    ) -> Self {
        let own: HashSet<EmailAddress> = mailbox.into_iter().collect();
        Self {
            addresses: own.iter().cloned().chain(employees).collect(),
            own,
        }
    }

    /// An insider who is a person or a person's mailbox, not the receiving address itself.
    pub fn is_employee(&self, address: &EmailAddress) -> bool {
        self.addresses.contains(address) && !self.own.contains(address)
    }

    pub fn contains(&self, address: &EmailAddress) -> bool {
        self.addresses.contains(address)
    }

    /// The mailboxes that are not insiders, each address once, in the given order.
    pub fn outsiders<'a>(&self, mailboxes: impl IntoIterator<Item = &'a Mailbox>) -> Vec<Mailbox> {
        let mut seen = HashSet::new();
        mailboxes
            .into_iter()
            .filter(|m| !self.contains(&m.address) && seen.insert(m.address.clone()))
            .cloned()
            .collect()
    }
}

/// E2/E5: the direction of `mail` and its customers. Incoming mail has one customer, the
/// sender (the other recipients of a customer's mail are not leads of ours); outgoing mail
/// has every non-insider recipient (To, Cc and, on the sender's copy, Bcc).
pub fn correspondence(mail: &ParsedMail, insiders: &Insiders) -> Correspondence {
    let Some(sender) = mail.sender() else {
        return Correspondence::NoSender;
    };
    let (direction, customers) = if insiders.contains(&sender.address) {
        (Direction::Outgoing, insiders.outsiders(mail.recipients()))
    } else {
        (Direction::Incoming, vec![sender.clone()])
    };
    if customers.is_empty() {
        Correspondence::Internal
    } else {
        Correspondence::Customer {
            direction,
            customers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::{parse_email, parse_mailbox};

    fn insiders() -> Insiders {
        Insiders::new(
            [parse_email("anna@company.example").unwrap()],
            [
                parse_email("bob@company.example").unwrap(),
                parse_email("info@company.example").unwrap(),
            ],
        )
    }

    fn mail(from: &str, to: &[&str], cc: &[&str]) -> ParsedMail {
        let boxes = |list: &[&str]| list.iter().map(|a| parse_mailbox(a).unwrap()).collect();
        ParsedMail {
            from: if from.is_empty() {
                Vec::new()
            } else {
                vec![parse_mailbox(from).unwrap()]
            },
            to: boxes(to),
            cc: boxes(cc),
            ..ParsedMail::default()
        }
    }

    fn addresses(c: &Correspondence) -> Vec<&str> {
        match c {
            Correspondence::Customer { customers, .. } => {
                customers.iter().map(|m| m.address.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }

    #[test]
    fn e2_received_mail_is_incoming_from_its_sender() {
        let c = correspondence(
            &mail(
                "Kunde <Kunde@Example.org>",
                &["anna@company.example"],
                &["other@example.org"],
            ),
            &insiders(),
        );
        assert!(matches!(
            c,
            Correspondence::Customer {
                direction: Direction::Incoming,
                ..
            }
        ));
        assert_eq!(addresses(&c), ["kunde@example.org"]);
    }

    #[test]
    fn e2_sent_mail_is_outgoing_to_its_recipients() {
        let c = correspondence(
            &mail(
                "anna@company.example",
                &["kunde@example.org", "bob@company.example"],
                &["KUNDE@example.org", "zweite@example.net"],
            ),
            &insiders(),
        );
        assert!(matches!(
            c,
            Correspondence::Customer {
                direction: Direction::Outgoing,
                ..
            }
        ));
        assert_eq!(
            addresses(&c),
            ["kunde@example.org", "zweite@example.net"],
            "employees out, each customer once"
        );
    }

    #[test]
    fn e2_mail_written_by_a_colleague_is_outgoing_too() {
        let c = correspondence(
            &mail(
                "bob@company.example",
                &["anna@company.example"],
                &["kunde@example.org"],
            ),
            &insiders(),
        );
        assert!(matches!(
            c,
            Correspondence::Customer {
                direction: Direction::Outgoing,
                ..
            }
        ));
        assert_eq!(addresses(&c), ["kunde@example.org"]);
    }

    #[test]
    fn e5_employee_mail_is_ignored() {
        let c = correspondence(
            &mail(
                "bob@company.example",
                &["anna@company.example"],
                &["info@company.example"],
            ),
            &insiders(),
        );
        assert_eq!(c, Correspondence::Internal);
    }

    #[test]
    fn m6_connected_mailboxes_are_never_customers() {
        let c = correspondence(
            &mail("anna@company.example", &["INFO@company.example"], &[]),
            &insiders(),
        );
        assert_eq!(c, Correspondence::Internal);
    }

    #[test]
    fn a_message_without_sender_has_no_correspondent() {
        let c = correspondence(&mail("", &["anna@company.example"], &[]), &insiders());
        assert_eq!(c, Correspondence::NoSender);
    }
}
