//! From collected bytes to what the store takes (`IncomingEmail`): the glue between the
//! pure readings of a message (parse, correspondence, forward detection) and the store,
//! shared by the IMAP poller and the forward/BCC listener (E16).

use super::{
    ContactDraft, Correspondence, ForwardOutcome, Insiders, ParsedMail, correspondence, forward,
    parse, parse_vcards,
};
use crate::crm::model::{Direction, UserId};
use crate::matcher::{EmailAddress, Mailbox, parse_email};
use crate::store::{AttachmentInfo, IncomingEmail, MailOrigin, Store, StoreError};

/// A fetched message as the store takes it: parsed, its direction and customers found;
/// with the vCards it carries.
pub fn incoming(
    origin: MailOrigin,
    raw: Vec<u8>,
    seen: bool,
    received_at: i64,
    folder_role: &str,
    insiders: &Insiders,
) -> (IncomingEmail, Vec<ContactDraft>) {
    let parsed = parse(&raw).unwrap_or_default();
    let cards: Vec<ContactDraft> = parsed
        .vcards
        .iter()
        .filter_map(|part| parse_vcards(&part.content).ok())
        .flatten()
        .collect();
    let (direction, customers) = match correspondence(&parsed, insiders) {
        Correspondence::Customer {
            direction,
            customers,
        } => (
            direction,
            customers
                .into_iter()
                .map(|m| m.address.as_str().to_owned())
                .collect(),
        ),
        // Nobody to attach it to: kept in the mail store, logged.
        Correspondence::Internal | Correspondence::NoSender => (
            if folder_role == "sent" {
                Direction::Outgoing
            } else {
                Direction::Incoming
            },
            Vec::new(),
        ),
    };
    let email = email_of(
        origin,
        &parsed,
        raw,
        seen,
        received_at,
        direction,
        customers,
    );
    (email, cards)
}

/// The store's view of a parsed message, with the direction and customers decided.
fn email_of(
    origin: MailOrigin,
    parsed: &ParsedMail,
    raw: Vec<u8>,
    seen: bool,
    received_at: i64,
    direction: Direction,
    customers: Vec<String>,
) -> IncomingEmail {
    let address_list = |list: &[crate::matcher::Mailbox]| {
        list.iter()
            .map(|m| m.address.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    IncomingEmail {
        origin,
        message_id: parsed.message_id.clone(),
        in_reply_to: parsed.in_reply_to.first().cloned(),
        thread_root: parsed
            .references
            .first()
            .cloned()
            .or_else(|| parsed.message_id.clone()),
        direction,
        from: parsed
            .sender()
            .map(|m| m.address.as_str().to_owned())
            .unwrap_or_default(),
        from_name: parsed.sender().and_then(|m| m.name.clone()),
        to: address_list(&parsed.to),
        cc: address_list(&parsed.cc),
        subject: parsed.subject.clone().unwrap_or_default(),
        received_at,
        seen,
        attachments: parsed
            .attachments
            .iter()
            .map(|a| AttachmentInfo {
                name: a.file_name.clone(),
                content_type: a.content_type.clone(),
                size: a.size() as u64,
            })
            .collect(),
        raw,
        customers,
    }
}

/// E16: a message received at the forward address, into the mail store and the CRM: the
/// original sender of a forward is the customer (incoming), the recipients of a BCC'd
/// copy are (outgoing), and the author of a redirected or automatically forwarded message
/// is (incoming). What the message creates belongs to the employee it came through: the
/// one who forwarded or sent it, or the one a redirected message was addressed to.
/// Announces what it stored and created to webhooks; returns what the intake did.
pub async fn take_forwarded(
    store: &Store,
    events: &crate::events::EventBus,
    raw: Vec<u8>,
    forward_address: &str,
) -> Result<crate::store::EmailOutcome, StoreError> {
    let parsed = parse(&raw).unwrap_or_default();
    let staff: Vec<(EmailAddress, Option<UserId>)> = store
        .staff_addresses()
        .await?
        .into_iter()
        .filter_map(|(address, user)| Some((parse_email(&address).ok()?, user.map(UserId))))
        .collect();
    let insiders = Insiders::new(
        parse_email(forward_address).ok(),
        staff.iter().map(|(address, _)| address.clone()),
    );
    let outcome = forward::detect(&parsed, &insiders);
    let sender = || {
        parsed
            .sender()
            .map(|s| s.address.clone())
            .into_iter()
            .collect()
    };
    let (direction, customers, came_through): (Direction, Vec<Mailbox>, Vec<EmailAddress>) =
        match outcome {
            ForwardOutcome::Forwarded {
                original,
                customers,
            } => {
                let written_by_us = original.from.as_ref().is_some_and(|f| insiders.contains(f));
                let direction = if written_by_us {
                    Direction::Outgoing
                } else {
                    Direction::Incoming
                };
                (direction, customers, sender())
            }
            ForwardOutcome::Bcc { customers } => (Direction::Outgoing, customers, sender()),
            ForwardOutcome::Redirected {
                author,
                addressed_to,
                evidence,
            } => {
                tracing::debug!(
                    ?evidence,
                    ?addressed_to,
                    "redirected to the forward address"
                );
                (Direction::Incoming, vec![author], addressed_to)
            }
            ForwardOutcome::Unknown(why) => {
                tracing::info!(?why, "forwarded message names no customer; kept, logged");
                (Direction::Incoming, Vec::new(), Vec::new())
            }
        };
    let employee = came_through.iter().find_map(|address| {
        staff
            .iter()
            .find(|(known, user)| known == address && user.is_some())
            .and_then(|(_, user)| user.clone())
    });
    let customers = customers
        .into_iter()
        .map(|m| m.address.as_str().to_owned())
        .collect();
    // Mail sent to the forward address has been read by whoever sent it.
    let email = email_of(
        MailOrigin::Forward { employee },
        &parsed,
        raw,
        true,
        crate::store::now_ms(),
        direction,
        customers,
    );
    let mut outcomes = store.ingest_emails(std::slice::from_ref(&email)).await?;
    crate::webhooks::records::announce_mail(store, events, &outcomes).await;
    outcomes
        .pop()
        .ok_or_else(|| StoreError::Corrupt("no outcome for the forwarded message".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e3_a_vcard_attachment_comes_out_as_a_contact_draft() {
        let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Karla Kunde\r\nORG:Kunde AG\r\n\
                    EMAIL;TYPE=work:karla@kunde.example\r\nTEL;TYPE=work:+49 30 1234567\r\nEND:VCARD\r\n";
        let raw = format!(
            "From: Karla <karla@kunde.example>\r\nTo: <alice@leadline.test>\r\nSubject: Karte\r\n\
             Message-ID: <vc1@kunde.example>\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
             Content-Type: text/plain\r\n\r\nMeine Karte anbei.\r\n--b\r\n\
             Content-Type: text/vcard; name=\"karla.vcf\"\r\n\
             Content-Disposition: attachment; filename=\"karla.vcf\"\r\n\r\n{card}--b--\r\n"
        );
        let (email, cards) = incoming(
            MailOrigin::Forward { employee: None },
            raw.into_bytes(),
            false,
            0,
            "inbox",
            &Insiders::default(),
        );
        assert_eq!(email.customers, vec!["karla@kunde.example".to_owned()]);
        assert_eq!(cards.len(), 1, "{cards:?}");
        assert_eq!(cards[0].name.as_deref(), Some("Karla Kunde"));
        assert_eq!(cards[0].phones, vec!["+49 30 1234567".to_owned()]);
    }
}
