//! The pure core of the e-mail side (E2, E5, E16, M6): what a message says, seen from the
//! company.
//!
//! It owns four readings of a message, each a function from values to values:
//! - [`parse`]: raw RFC 5322 bytes → [`ParsedMail`] (threading ids, addresses, text body,
//!   attachments, nested messages, vCard parts), through the `mail-parser` crate;
//! - [`correspondence`]: who the customers are and which way the message went (E2, E5, M6);
//! - [`forward::detect`]: for mail that reached the secret forward address (E16), the
//!   original sender of a forwarded message, or the customers a BCC'd copy was sent to;
//! - [`vcard::parse_vcards`]: vCard 2.1/3.0/4.0 → [`ContactDraft`]s, through `calcard`.
//!
//! These must not do I/O: no sockets, no database, no files, no clock. The adapters around
//! them do: [`imap`] (the IMAP client), [`poller`] (one task per mailbox, into the store)
//! and the SMTP/LMTP listener fetch the bytes, bound their size, and act on what these
//! functions return; matching an address to the CRM (M3, M4, M8) stays with the matcher.
//! [`oauth2`] is the pure side of OAuth2 logins; [`credentials`] gives the poller and the
//! connection test a mailbox's password or access token.

pub mod credentials;
mod direction;
mod error;
pub mod forward;
pub mod imap;
mod intake;
pub mod oauth2;
mod parse;
pub mod poller;
pub mod redirect;
pub mod smtp;
pub mod vcard;

pub use direction::{Correspondence, Insiders, correspondence};
pub use error::Error;
pub use forward::{ForwardOutcome, ForwardSource, ForwardedMessage, UnknownForward};
pub use parse::{Attachment, MAX_NESTING, ParsedMail, VCardPart, parse};
pub use redirect::RedirectTrace;
pub use vcard::{ContactDraft, parse_vcards};

pub use credentials::{Credentials, LoginError};
pub use intake::take_forwarded;
pub use poller::imap_settings;
