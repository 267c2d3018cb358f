//! `mail::Error`: a message or a vCard that cannot be read at all.

/// Why input could not be read. Anything short of these is read as far as it goes: a
/// broken MIME part or an unreadable address is skipped, not an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the message is empty")]
    EmptyMessage,
    #[error("the message has no header fields: it is not an RFC 5322 message")]
    NoHeaders,
    #[error("the vCard file is empty")]
    EmptyVCard,
    #[error("no vCard found: the text has no BEGIN:VCARD ... END:VCARD block")]
    NoVCard,
    #[error("the vCard could not be read: {0}")]
    BadVCard(String),
}
