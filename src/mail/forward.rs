//! The forward/BCC address (E16): whose history a message sent to the account's secret
//! address belongs to.
//!
//! Mail reaches the secret address three ways, and [`detect`] tells them apart:
//! - an employee forwards a customer's message there by hand: the customer is the original
//!   sender (from an attached message/rfc822 first, else from the inline block the mail
//!   client wrote, see [`inline_forward`]);
//! - an employee puts the address in Bcc of a message they write to customers: the
//!   customers are its recipients;
//! - a mailbox sends on what it receives, unchanged: automatic forwarding (Gmail, Microsoft
//!   365), an inbox or server rule, Sieve `redirect`, a mail client's "Redirect". The
//!   author is the customer and the message is incoming; the employee it was addressed to,
//!   named by the redirect trace (see [`super::redirect`]) or by its recipients, is the one
//!   whose customer it is.
//!
//! Insiders are never customers (E5, M6); matching the customers to the CRM is the
//! matcher's job.

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
    /// A message its author (not one of ours) wrote, sent on to the secret address by a
    /// redirect, an automatic forward or a rule, or written to it directly: incoming from
    /// the author. `addressed_to` are the employees it was addressed to, the most telling
    /// first (empty when nothing names one).
    Redirected {
        author: Mailbox,
        addressed_to: Vec<EmailAddress>,
        /// The header field that shows the redirect; `None` when only the recipients do
        /// (a plain server redirect) or nothing does.
        evidence: Option<&'static str>,
    },
    /// No customer could be named.
    Unknown(UnknownForward),
}

/// Why [`detect`] names no customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownForward {
    /// A forward whose block names the original sender without an address.
    SenderWithoutAddress(ForwardedMessage),
    /// Every party is an insider (E5).
    NoCustomer,
    /// The message has no readable From address.
    NoSender,
}

/// E16: the customers of `mail`, received at the secret address. `insiders` holds the
/// secret address itself (as the receiving address), the employees and the connected
/// mailboxes (M6).
pub fn detect(mail: &ParsedMail, insiders: &Insiders) -> ForwardOutcome {
    let Some(sender) = mail.sender() else {
        return forward_of(mail, insiders)
            .unwrap_or(ForwardOutcome::Unknown(UnknownForward::NoSender));
    };
    let by_outsider = !insiders.contains(&sender.address);
    let employees_addressed = addressed_employees(mail, insiders);
    // A redirect keeps the author's From and any forward block the author wrote: read as a
    // forward, a customer's own "Fwd:" would make a stranger the customer.
    let redirected =
        by_outsider && (mail.redirect.is_redirect() || !employees_addressed.is_empty());
    if !redirected && let Some(outcome) = forward_of(mail, insiders) {
        return outcome;
    }
    if by_outsider {
        let evidence = mail.redirect.evidence();
        return ForwardOutcome::Redirected {
            author: sender.clone(),
            addressed_to: employees_addressed,
            evidence,
        };
    }
    let customers = insiders.outsiders(mail.recipients());
    if customers.is_empty() {
        ForwardOutcome::Unknown(UnknownForward::NoCustomer)
    } else {
        ForwardOutcome::Bcc { customers }
    }
}

/// The forwarded original in `mail`, as an outcome, if `mail` carries one.
fn forward_of(mail: &ParsedMail, insiders: &Insiders) -> Option<ForwardOutcome> {
    let original = mail
        .messages
        .iter()
        .find(|m| m.sender().is_some())
        .map(attached_original)
        .or_else(|| {
            let body = mail.text.as_deref()?;
            inline_forward(mail.subject.as_deref(), body)
        })?;
    let Some(address) = original.from.clone() else {
        return Some(ForwardOutcome::Unknown(
            UnknownForward::SenderWithoutAddress(original),
        ));
    };
    let customers = if insiders.contains(&address) {
        insiders.outsiders(&original.recipients)
    } else {
        vec![Mailbox {
            name: original.from_name.clone(),
            address,
        }]
    };
    Some(if customers.is_empty() {
        ForwardOutcome::Unknown(UnknownForward::NoCustomer)
    } else {
        ForwardOutcome::Forwarded {
            original,
            customers,
        }
    })
}

/// The employees a message was addressed to: those the redirect trace names, then its
/// recipients, each once; the receiving address itself is nobody's.
fn addressed_employees(mail: &ParsedMail, insiders: &Insiders) -> Vec<EmailAddress> {
    let mut found: Vec<EmailAddress> = Vec::new();
    let candidates = mail
        .redirect
        .redirected_from
        .iter()
        .chain(mail.to.iter().chain(&mail.cc).map(|m| &m.address));
    for address in candidates {
        if insiders.is_employee(address) && !found.contains(address) {
            found.push(address.clone());
        }
    }
    found
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
    use crate::mail::redirect::trace;
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
            ForwardOutcome::Redirected { author, .. } => vec![author.address.as_str()],
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
    fn e16_mail_written_to_the_address_is_incoming_from_its_author() {
        let m = mail(
            "kunde@example.org",
            &[SECRET],
            "Anfrage",
            "Bitte um Angebot",
        );
        assert_eq!(
            detect(&m, &insiders()),
            ForwardOutcome::Redirected {
                author: boxes(&["kunde@example.org"]).remove(0),
                addressed_to: Vec::new(),
                evidence: None,
            }
        );
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

    #[test]
    fn e16_a_server_redirect_is_the_authors_mail_to_the_employee_it_was_addressed_to() {
        // Nothing but the recipients shows the redirect: From the customer, To Anna.
        let m = mail(
            "Kunde <kunde@example.org>",
            &["anna@company.example"],
            "Anfrage",
            "Bitte um Angebot.",
        );
        let ForwardOutcome::Redirected {
            author,
            addressed_to,
            evidence,
        } = detect(&m, &insiders())
        else {
            panic!("expected a redirect");
        };
        assert_eq!(author.address.as_str(), "kunde@example.org");
        assert_eq!(addressed_to, [parse_email("anna@company.example").unwrap()]);
        assert_eq!(evidence, None);
    }

    #[test]
    fn e16_the_trace_names_the_employee_before_the_recipients() {
        // Sent to a shared alias, redirected by Bob's rule.
        let mut m = mail(
            "kunde@example.org",
            &["anna@company.example"],
            "Anfrage",
            "x",
        );
        m.redirect = trace([
            ("X-MS-Exchange-Inbox-Rules-Loop", "bob@company.example"),
            ("X-MS-Exchange-Organization-AutoForwarded", "true"),
        ]);
        let ForwardOutcome::Redirected {
            addressed_to,
            evidence,
            ..
        } = detect(&m, &insiders())
        else {
            panic!("expected a redirect");
        };
        assert_eq!(
            addressed_to,
            [
                parse_email("bob@company.example").unwrap(),
                parse_email("anna@company.example").unwrap()
            ]
        );
        assert_eq!(evidence, Some("x-ms-exchange-inbox-rules-loop"));
    }

    #[test]
    fn e16_a_customers_own_forward_redirected_to_us_stays_the_customers() {
        // The customer forwarded a colleague's mail to Anna; Anna's mailbox sent it on.
        let mut m = mail(
            "kunde@example.org",
            &["anna@company.example"],
            "Fwd: Bedarf",
            "---------- Forwarded message ---------\nFrom: Kollege <kollege@example.org>\n\
             Subject: Bedarf\n\nWir brauchen 20 Stück.",
        );
        m.redirect = trace([(
            "X-Forwarded-For",
            "anna@company.example in-7f3a@leadline.example",
        )]);
        assert_eq!(customers(&detect(&m, &insiders())), ["kunde@example.org"]);
    }

    #[test]
    fn e16_an_employees_mail_redirected_to_us_stays_outgoing() {
        // Anna wrote to a customer with Bob in Cc; Bob's automatic forward sent the copy.
        let mut m = mail(
            "anna@company.example",
            &["kunde@example.org"],
            "Angebot",
            "anbei",
        );
        m.cc = boxes(&["bob@company.example"]);
        m.redirect = trace([(
            "X-Forwarded-For",
            "bob@company.example in-7f3a@leadline.example",
        )]);
        assert_eq!(
            detect(&m, &insiders()),
            ForwardOutcome::Bcc {
                customers: boxes(&["kunde@example.org"])
            }
        );
    }

    #[test]
    fn e16_a_forward_from_an_unknown_address_still_names_the_original_sender() {
        // An employee forwarding from a private address we do not know, by hand.
        let m = mail(
            "anna.private@example.net",
            &[SECRET],
            "Fwd: Anfrage",
            "---------- Forwarded message ---------\nFrom: Kunde <kunde@example.org>\n\
             Subject: Anfrage\n\nBitte um Angebot.",
        );
        assert_eq!(customers(&detect(&m, &insiders())), ["kunde@example.org"]);
        assert!(matches!(
            detect(&m, &insiders()),
            ForwardOutcome::Forwarded { .. }
        ));
    }
}
