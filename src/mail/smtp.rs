//! The SMTP/LMTP listener of the forward/BCC address (E16).
//!
//! Employees forward customer mail to the account's secret address
//! `crm-<secret>@<domain>`, or put it in Bcc; their mail server delivers it here over SMTP
//! (RFC 5321), or a local MTA hands it over with LMTP (RFC 2033). Both speak on the same
//! listener: the greeting is the same, and a client that says LHLO gets LMTP's one reply
//! per recipient after the message.
//!
//! It owns the wire: commands and their order, dot-unstuffing, and the bounds on
//! everything a client sends (line length, message size, recipients, failed commands,
//! idle time, connections). Recipients other than the forward address are refused with
//! 550 at RCPT ([`Recipients`], [`ForwardAddress`]). A complete message goes, as the bytes
//! received, to a [`Deliver`] handler, and the client hears 250 only once the handler
//! returned `Ok`: a failed or slow handler gets 451, and the client keeps the message and
//! tries again. It must not read the message (that is [`crate::mail::parse`] and
//! [`crate::mail::forward::detect`], called by the handler) nor touch the store.
//!
//! Layers: [`Session`] is the protocol as a state machine without I/O (bytes in, replies
//! and deliveries out), unit-tested and property-tested; [`serve`] is the thin tokio loop
//! around it.
//!
//! Why `smtp-proto` (Stalwart's parser) for command lines, and our own session around
//! it: `mailin` (sans-I/O too) has no LMTP, and its `Handler` answers the end of DATA
//! synchronously, while ours must await the store before it may say 250;
//! `mailin-embedded` runs blocking I/O on a thread pool; `samotop` is built on async-std
//! and unreleased since 2022; `rs-smtp` is a callback framework (`anyhow`, message as an
//! `AsyncRead`) with no LMTP. `smtp-proto` is maintained as part of Stalwart, fuzzed,
//! parses every registered verb and parameter including LHLO, builds on our toolchain
//! with one dependency (`memchr`), and does no I/O, so it fits inside a sans-I/O session.
//! Its DATA reader is not used: it does not see the end marker or unstuff a dot on the
//! first line of the text (its state starts as if no CRLF preceded), and it does not
//! bound what it buffers; `data` reads the text itself.

mod data;
mod reply;
mod server;
mod session;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub use reply::{Enhanced, Reply};
pub use server::{Deliver, Settings, bind, serve};
pub use session::{Delivery, Handled, Limits, Protocol, Recipients, Session, Step};

/// Why the listener could not start, or why a session ended early (logged, not returned
/// by [`serve`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen for SMTP/LMTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("'{0}' is not a forward address of the form crm-<secret>@<domain>")]
    NotForwardAddress(String),
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the client was idle for longer than {0:?}")]
    IdleTimeout(Duration),
    #[error("the client closed the connection without QUIT")]
    ClosedByPeer,
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// The account's secret address `crm-<secret>@<domain>` (E16, A4): the one recipient the
/// listener accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct ForwardAddress {
    local: String,
    domain: String,
}

impl ForwardAddress {
    /// Reads `crm-<secret>@<domain>` as the store gives it (`Store::forward_address`).
    pub fn parse(address: &str) -> Result<ForwardAddress, Error> {
        let invalid = || Error::NotForwardAddress(address.to_owned());
        let (local, domain) = address.rsplit_once('@').ok_or_else(invalid)?;
        let secret = local
            .get(..4)
            .filter(|prefix| prefix.eq_ignore_ascii_case("crm-"))
            .map(|_| &local[4..])
            .ok_or_else(invalid)?;
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"@<>\"".contains(&b))
        };
        if !plain(secret) || !plain(domain) {
            return Err(invalid());
        }
        Ok(ForwardAddress {
            local: local.to_ascii_lowercase(),
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
        })
    }

    /// Whether `address` (from RCPT TO) is this address. Local part and domain compare
    /// without regard to case: the secret is lower case, and some MTAs change the case of
    /// what users type. A trailing dot on the domain (`example.com.`) is the same domain.
    pub fn matches(&self, address: &str) -> bool {
        address.rsplit_once('@').is_some_and(|(local, domain)| {
            local.eq_ignore_ascii_case(&self.local)
                && domain
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(&self.domain)
        })
    }
}

impl Recipients for ForwardAddress {
    fn accepts(&self, address: &str) -> bool {
        self.matches(address)
    }
}

impl fmt::Display for ForwardAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl fmt::Debug for ForwardAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret is for admins only (A4): logs show the domain.
        write!(f, "ForwardAddress(crm-…@{})", self.domain)
    }
}

#[cfg(test)]
mod tests;
