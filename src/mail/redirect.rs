//! What the transport writes on a message that was redirected or automatically forwarded
//! on its way (E16): the trace that tells "a customer wrote to Anna, and Anna's mailbox
//! sent it on" apart from "someone wrote to this address".
//!
//! A redirect keeps the original From, To and body; only header fields added on the way
//! show it happened, and each system writes its own:
//! - RFC 5322 §3.6.6 `Resent-From` / `Resent-Sender`: the mailbox that resent the message
//!   (Thunderbird's "Redirect", mutt's bounce, Exchange inbox rules that redirect);
//! - `X-MS-Exchange-Inbox-Rules-Loop` (the mailbox whose inbox rule sent it on) and
//!   `X-MS-Exchange-ForwardingLoop` (mailbox forwarding, `address;tenant`), with the
//!   markers `X-MS-Exchange-Organization-AutoForwarded: true` and
//!   `X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent`;
//! - Gmail's automatic forwarding: `X-Forwarded-For: <forwarding mailbox> <destination>`
//!   and `X-Forwarded-To: <destination>`;
//! - Dovecot Pigeonhole's Sieve `redirect`: `X-Sieve-Redirected-From`;
//! - every local delivery on the way: `Delivered-To` / `X-Original-To`.
//!
//! [`trace`] reads them from the header fields into a [`RedirectTrace`]; deciding whose
//! mail it is stays with [`super::forward::detect`]. Pure: header text in, values out.

use crate::matcher::{EmailAddress, parse_email};

/// The redirect evidence of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedirectTrace {
    /// The mailboxes the message was redirected or forwarded from, the most telling first
    /// (the resender, the mailbox of the rule, Gmail's forwarding mailbox, then the
    /// deliveries on the way, newest first), each once.
    pub redirected_from: Vec<EmailAddress>,
    /// The header fields that mark the message as redirected or forwarded by a machine,
    /// whether or not they name a mailbox (lower case, in message order, each once).
    pub markers: Vec<&'static str>,
}

impl RedirectTrace {
    /// Whether anything says the message was sent on by a rule, a redirect or a forward
    /// setting, rather than written to its recipient.
    pub fn is_redirect(&self) -> bool {
        self.evidence().is_some()
    }

    /// The first header field that shows the message was sent on (a delivery alone does
    /// not: every message has one).
    pub fn evidence(&self) -> Option<&'static str> {
        self.markers
            .iter()
            .copied()
            .find(|m| *m != DELIVERED_TO && *m != ORIGINAL_TO)
    }
}

const DELIVERED_TO: &str = "delivered-to";
const ORIGINAL_TO: &str = "x-original-to";

/// Where a header field stands among the evidence: the lower the rank, the more it says
/// about which mailbox sent the message on.
fn rank(name: &str) -> Option<(&'static str, u8)> {
    Some(match name.to_ascii_lowercase().as_str() {
        "resent-from" => ("resent-from", 0),
        "resent-sender" => ("resent-sender", 1),
        "x-ms-exchange-inbox-rules-loop" => ("x-ms-exchange-inbox-rules-loop", 2),
        "x-ms-exchange-forwardingloop" => ("x-ms-exchange-forwardingloop", 3),
        "x-sieve-redirected-from" => ("x-sieve-redirected-from", 4),
        "x-forwarded-for" => ("x-forwarded-for", 5),
        "x-original-to" => (ORIGINAL_TO, 6),
        "delivered-to" => (DELIVERED_TO, 7),
        // Markers without a mailbox of their own.
        "x-forwarded-to" => ("x-forwarded-to", u8::MAX),
        "x-ms-exchange-organization-autoforwarded" => {
            ("x-ms-exchange-organization-autoforwarded", u8::MAX)
        }
        "x-ms-exchange-generated-message-source" => {
            ("x-ms-exchange-generated-message-source", u8::MAX)
        }
        "auto-submitted" => ("auto-submitted", u8::MAX),
        _ => return None,
    })
}

/// Reads the redirect evidence from a message's header fields (name, raw value), in the
/// order they appear (newest first, as every hop prepends its own).
pub fn trace<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> RedirectTrace {
    let mut found: Vec<(u8, usize, EmailAddress)> = Vec::new();
    let mut markers: Vec<&'static str> = Vec::new();
    for (position, (name, value)) in headers.into_iter().enumerate() {
        let Some((marker, rank)) = rank(name) else {
            continue;
        };
        let value = value.trim();
        let counts = match marker {
            // Only the values that mean "sent on by a machine" are markers.
            "x-ms-exchange-organization-autoforwarded" => value.eq_ignore_ascii_case("true"),
            "x-ms-exchange-generated-message-source" => {
                value.to_ascii_lowercase().contains("mailbox rules agent")
            }
            "auto-submitted" => value.to_ascii_lowercase().starts_with("auto-forwarded"),
            _ => !value.is_empty(),
        };
        if !counts {
            continue;
        }
        if !markers.contains(&marker) {
            markers.push(marker);
        }
        if rank == u8::MAX {
            continue;
        }
        let addresses = addresses_in(value);
        // Gmail writes the forwarding mailbox first and the destination after it.
        let take = if marker == "x-forwarded-for" {
            1
        } else {
            usize::MAX
        };
        found.extend(
            addresses
                .into_iter()
                .take(take)
                .map(|address| (rank, position, address)),
        );
    }
    found.sort_by_key(|(rank, position, _)| (*rank, *position));
    let mut redirected_from: Vec<EmailAddress> = Vec::new();
    for (_, _, address) in found {
        if !redirected_from.contains(&address) {
            redirected_from.push(address);
        }
    }
    RedirectTrace {
        redirected_from,
        markers,
    }
}

/// Every address in a header value, whatever its shape: `a@b`, `<a@b>`, `Name <a@b>`,
/// lists separated by commas, spaces or semicolons (`address;tenant-id`).
fn addresses_in(value: &str) -> Vec<EmailAddress> {
    value
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .map(|token| token.trim_matches(|c: char| matches!(c, '<' | '>' | '"' | '(' | ')')))
        .filter(|token| token.contains('@'))
        .filter_map(|token| parse_email(token).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(trace: &RedirectTrace) -> Vec<&str> {
        trace
            .redirected_from
            .iter()
            .map(EmailAddress::as_str)
            .collect()
    }

    #[test]
    fn e16_gmail_forwarding_names_the_forwarding_mailbox_not_the_destination() {
        let trace = trace([
            ("Delivered-To", " crm-x@leadline.example"),
            ("X-Forwarded-To", " crm-x@leadline.example"),
            (
                "X-Forwarded-For",
                " anna@company.example crm-x@leadline.example",
            ),
            ("Delivered-To", " anna@company.example"),
        ]);
        assert_eq!(
            addresses(&trace),
            ["anna@company.example", "crm-x@leadline.example"]
        );
        assert!(trace.is_redirect());
        assert_eq!(
            trace.markers,
            ["delivered-to", "x-forwarded-to", "x-forwarded-for"]
        );
    }

    #[test]
    fn e16_the_resender_comes_before_the_rule_and_the_deliveries() {
        let trace = trace([
            ("Delivered-To", "crm-x@leadline.example"),
            (
                "X-MS-Exchange-Inbox-Rules-Loop",
                "Anna.Berg@Company.example",
            ),
            ("Resent-From", "Anna Berg <anna.berg@company.example>"),
        ]);
        assert_eq!(
            addresses(&trace),
            ["anna.berg@company.example", "crm-x@leadline.example"]
        );
    }

    #[test]
    fn e16_exchange_forwarding_loop_carries_a_tenant_after_the_address() {
        let trace = trace([(
            "X-MS-Exchange-ForwardingLoop",
            "anna@company.example;6a2b1c9e-0000-4000-8000-000000000000",
        )]);
        assert_eq!(addresses(&trace), ["anna@company.example"]);
    }

    #[test]
    fn e16_markers_count_only_with_their_meaning() {
        let plain = trace([
            ("X-MS-Exchange-Organization-AutoForwarded", "false"),
            ("Auto-Submitted", "auto-replied"),
            ("X-MS-Exchange-Generated-Message-Source", "Transport"),
        ]);
        assert!(!plain.is_redirect(), "{plain:?}");
        let forwarded = trace([
            ("X-MS-Exchange-Organization-AutoForwarded", " true"),
            (
                "X-MS-Exchange-Generated-Message-Source",
                "Mailbox Rules Agent",
            ),
        ]);
        assert!(forwarded.is_redirect());
        assert!(forwarded.redirected_from.is_empty());
    }

    #[test]
    fn e16_a_delivery_alone_is_no_redirect() {
        let trace = trace([("Delivered-To", "crm-x@leadline.example")]);
        assert!(!trace.is_redirect());
        assert_eq!(addresses(&trace), ["crm-x@leadline.example"]);
        assert_eq!(super::trace([("Subject", "hi")]), RedirectTrace::default());
    }
}
