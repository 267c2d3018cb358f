//! The forward/BCC address (E16): whose history a message sent to the account's secret
//! address belongs to.
//!
//! An employee either forwards a customer's message there, or puts the secret address in
//! Bcc of a message they write to customers. [`detect`] tells the two apart and names the
//! customers: the original sender of a forward (from an attached message/rfc822 first,
//! else from the inline block the mail client wrote, see [`inline_forward`]), or the
//! recipients of a BCC'd copy. Insiders are never customers (E5, M6); matching the
//! customers to the CRM is the matcher's job.

mod inline;
mod labels;

use chrono::{DateTime, FixedOffset};

pub use inline::inline_forward;

use super::{Insiders, ParsedMail};
use crate::matcher::{EmailAddress, Mailbox};

/// Where the original of a forward was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardSource {
    /// An attached message/rfc822 part: its own header fields.
    Attached,
    /// The block of header lines the forwarding client wrote into the text.
    Inline,
}

/// The forwarded original, as far as the forward shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedMessage {
    pub source: ForwardSource,
    pub from_name: Option<String>,
    /// `None` when the client wrote only a name (`From: John Doe`).
    pub from: Option<EmailAddress>,
    /// To and Cc of the original.
    pub recipients: Vec<Mailbox>,
    pub subject: Option<String>,
    /// The original's date where it is machine-readable (attached, or RFC 5322 inline).
    pub date: Option<DateTime<FixedOffset>>,
    /// The date as an inline block wrote it, often in the client's language.
    pub date_text: Option<String>,
}

/// What a message at the forward address is, and whose history it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardOutcome {
    /// A forward. `customers` is the original sender; when an employee forwarded a message
    /// they had written themselves, it is that message's non-insider recipients.
    Forwarded {
        original: ForwardedMessage,
        customers: Vec<Mailbox>,
    },
    /// A copy an insider sent to customers with the secret address in Bcc: the customers
    /// are its non-insider recipients.
    Bcc { customers: Vec<Mailbox> },
    /// No customer could be named.
    Unknown(UnknownForward),
}

/// Why [`detect`] names no customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownForward {
    /// A forward whose block names the original sender without an address.
    SenderWithoutAddress(ForwardedMessage),
    /// Not a forward, and not written by an insider: a BCC'd copy comes from an employee.
    SenderNotInsider(Mailbox),
    /// Every party is an insider (E5).
    NoCustomer,
    /// The message has no readable From address.
    NoSender,
}

/// E16: the customers of `mail`, received at the secret address. `insiders` holds the
/// secret address itself, the employees and the connected mailboxes (M6).
pub fn detect(mail: &ParsedMail, insiders: &Insiders) -> ForwardOutcome {
    let original = mail
        .messages
        .iter()
        .find(|m| m.sender().is_some())
        .map(attached_original)
        .or_else(|| {
            let body = mail.text.as_deref()?;
            inline_forward(mail.subject.as_deref(), body)
        });
    if let Some(original) = original {
        let Some(address) = original.from.clone() else {
            return ForwardOutcome::Unknown(UnknownForward::SenderWithoutAddress(original));
        };
        let customers = if insiders.contains(&address) {
            insiders.outsiders(&original.recipients)
        } else {
            vec![Mailbox {
                name: original.from_name.clone(),
                address,
            }]
        };
        return if customers.is_empty() {
            ForwardOutcome::Unknown(UnknownForward::NoCustomer)
        } else {
            ForwardOutcome::Forwarded {
                original,
                customers,
            }
        };
    }
    let Some(sender) = mail.sender() else {
        return ForwardOutcome::Unknown(UnknownForward::NoSender);
    };
    if !insiders.contains(&sender.address) {
        return ForwardOutcome::Unknown(UnknownForward::SenderNotInsider(sender.clone()));
    }
    let customers = insiders.outsiders(mail.recipients());
    if customers.is_empty() {
        ForwardOutcome::Unknown(UnknownForward::NoCustomer)
    } else {
        ForwardOutcome::Bcc { customers }
    }
}

fn attached_original(message: &ParsedMail) -> ForwardedMessage {
    let sender = message.sender();
    ForwardedMessage {
        source: ForwardSource::Attached,
        from_name: sender.and_then(|s| s.name.clone()),
        from: sender.map(|s| s.address.clone()),
        recipients: message.to.iter().chain(&message.cc).cloned().collect(),
        subject: message.subject.clone(),
        date: message.date,
        date_text: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::{parse_email, parse_mailbox};

    const SECRET: &str = "in-7f3a@leadline.example";

    fn insiders() -> Insiders {
        Insiders::new(
            [parse_email(SECRET).unwrap()],
            [
                parse_email("anna@company.example").unwrap(),
                parse_email("bob@company.example").unwrap(),
            ],
        )
    }

    fn boxes(list: &[&str]) -> Vec<Mailbox> {
        list.iter().map(|a| parse_mailbox(a).unwrap()).collect()
    }

    fn mail(from: &str, to: &[&str], subject: &str, text: &str) -> ParsedMail {
        ParsedMail {
            from: boxes(&[from]),
            to: boxes(to),
            subject: Some(subject.into()),
            text: Some(text.into()),
            ..ParsedMail::default()
        }
    }

    fn customers(outcome: &ForwardOutcome) -> Vec<&str> {
        match outcome {
            ForwardOutcome::Forwarded { customers, .. } | ForwardOutcome::Bcc { customers } => {
                customers.iter().map(|c| c.address.as_str()).collect()
            }
            ForwardOutcome::Unknown(_) => Vec::new(),
        }
    }

    #[test]
    fn e16_inline_forward_names_the_original_sender() {
        let m = mail(
            "anna@company.example",
            &[SECRET],
            "Fwd: Anfrage",
            "---------- Forwarded message ---------\nFrom: Kunde <kunde@example.org>\n\
             Subject: Anfrage\n\nBitte um Angebot.",
        );
        let outcome = detect(&m, &insiders());
        assert_eq!(customers(&outcome), ["kunde@example.org"]);
        let ForwardOutcome::Forwarded {
            original,
            customers,
        } = outcome
        else {
            unreachable!()
        };
        assert_eq!(original.source, ForwardSource::Inline);
        assert_eq!(original.subject.as_deref(), Some("Anfrage"));
        assert_eq!(customers[0].name.as_deref(), Some("Kunde"));
    }

    #[test]
    fn e16_attached_message_comes_before_the_text() {
        let mut m = mail(
            "anna@company.example",
            &[SECRET],
            "Fwd: Anfrage",
            "---------- Forwarded message ---------\nFrom: someone@else.example\n\nx",
        );
        m.messages.push(ParsedMail {
            from: boxes(&["Kunde <kunde@example.org>"]),
            subject: Some("Anfrage".into()),
            ..ParsedMail::default()
        });
        let outcome = detect(&m, &insiders());
        assert_eq!(customers(&outcome), ["kunde@example.org"]);
        assert!(matches!(
            outcome,
            ForwardOutcome::Forwarded { ref original, .. } if original.source == ForwardSource::Attached
        ));
    }

    #[test]
    fn e16_bcc_copy_goes_to_its_recipients() {
        let mut m = mail(
            "anna@company.example",
            &["kunde@example.org", "bob@company.example"],
            "Ihr Angebot",
            "Sehr geehrte Frau Kunde, anbei das Angebot.",
        );
        m.cc = boxes(&["zweite@example.net"]);
        let outcome = detect(&m, &insiders());
        assert!(matches!(outcome, ForwardOutcome::Bcc { .. }));
        assert_eq!(
            customers(&outcome),
            ["kunde@example.org", "zweite@example.net"]
        );
    }

    #[test]
    fn e16_bcc_reply_is_not_read_as_a_forward() {
        let m = mail(
            "anna@company.example",
            &["kunde@example.org"],
            "AW: Anfrage",
            "Gerne.\n\n-----Original Message-----\nFrom: Kunde <kunde@example.org>\n\
             Sent: Monday\nTo: anna@company.example\n\n> Bitte um Angebot.",
        );
        let outcome = detect(&m, &insiders());
        assert!(matches!(outcome, ForwardOutcome::Bcc { .. }));
        assert_eq!(customers(&outcome), ["kunde@example.org"]);
    }

    #[test]
    fn e16_forward_of_an_own_message_goes_to_its_recipients() {
        let m = mail(
            "anna@company.example",
            &[SECRET],
            "WG: Angebot",
            "-----Original Message-----\nFrom: Anna <anna@company.example>\n\
             To: Kunde <kunde@example.org>; Bob <bob@company.example>\nSubject: Angebot\n\nx",
        );
        assert_eq!(customers(&detect(&m, &insiders())), ["kunde@example.org"]);
    }

    #[test]
    fn e5_mail_among_insiders_has_no_customer() {
        let m = mail(
            "anna@company.example",
            &[SECRET, "bob@company.example"],
            "Hi",
            "x",
        );
        assert_eq!(
            detect(&m, &insiders()),
            ForwardOutcome::Unknown(UnknownForward::NoCustomer)
        );
    }

    #[test]
    fn e16_unforwarded_mail_from_outside_is_unknown() {
        let m = mail("spam@example.net", &[SECRET], "Offer", "Buy now");
        assert!(matches!(
            detect(&m, &insiders()),
            ForwardOutcome::Unknown(UnknownForward::SenderNotInsider(_))
        ));
        let nobody = ParsedMail::default();
        assert_eq!(
            detect(&nobody, &insiders()),
            ForwardOutcome::Unknown(UnknownForward::NoSender)
        );
    }

    #[test]
    fn e16_forward_without_address_is_unknown() {
        let m = mail(
            "anna@company.example",
            &[SECRET],
            "FW: x",
            "-----Original Message-----\nFrom: John Doe\nSent: today\n\nx",
        );
        let ForwardOutcome::Unknown(UnknownForward::SenderWithoutAddress(original)) =
            detect(&m, &insiders())
        else {
            panic!("expected a forward without address");
        };
        assert_eq!(original.from_name.as_deref(), Some("John Doe"));
    }
}
