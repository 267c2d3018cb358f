//! The IMAP adapter: one logged-in connection to one mailbox's server, with the few
//! operations the mail poller needs (E2, E9, E10, E11) and nothing else.
//!
//! It owns the connection: TLS (rustls with the ring provider; Mozilla's roots from
//! `webpki-roots` plus optional extra roots), the greeting and LOGIN ([`connect`],
//! [`test_login`]), deadlines on every step, and the wire details that are easy to get
//! wrong: `BODY.PEEK[]` so fetching never marks mail as read, the `n:*` range that
//! returns the last message even when `n` is past it, fetching in bounded batches,
//! skipping messages over the size limit without loading them, and IDLE (RFC 2177) that
//! is re-issued before the server's 30-minute timeout and can be abandoned at any time.
//!
//! It does not know about the CRM, checkpoints or the database: the poller keeps
//! UIDVALIDITY/UID checkpoints and decides what to fetch; this module only tells what the
//! server says. It never changes a message except its `\Seen` flag ([`ImapSession::set_seen`]).
//!
//! Where the server offers RFC 7162 (and [`ImapSettings::resync`] allows it), the session
//! enables QRESYNC (else CONDSTORE) after login, so that E9's pass can ask only for what
//! changed since a mod-sequence ([`ImapSession::flag_changes`]) instead of every
//! message's flags ([`ImapSession::flags_of_all`]).
//!
//! One [`ImapSession`] is owned by one task. Dropping a call's future is safe: after an
//! abandoned IDLE the next call ends it with `DONE`; after any other abandoned command the
//! session answers [`ImapError::Io`] and the owner reconnects.

mod connect;
mod folders;
mod idle;
mod sasl;
mod session;
mod uidset;
mod wire;

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::ops::RangeInclusive;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use folders::SpecialFolders;
pub use session::ImapSession;
pub use tokio_rustls::rustls::pki_types::CertificateDer;

use wire::truncate;

/// How to reach and log in to one mailbox's server.
#[derive(Clone)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    /// Sent only inside LOGIN; `Debug` shows `<redacted>` (A4).
    pub password: String,
    /// An OAuth2 access token: when set, the login is SASL OAUTHBEARER or XOAUTH2 with it
    /// instead of LOGIN with `password`. `Debug` shows `<redacted>` (A4).
    pub bearer: Option<String>,
    /// Trusted in addition to Mozilla's roots: a company CA, or a test's own certificate.
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// How much of RFC 7162 to use where the server offers it.
    pub resync: Resync,
}

impl ImapSettings {
    /// Settings with default timeouts and limits and no extra roots.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        security: Security,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> ImapSettings {
        ImapSettings {
            host: host.into(),
            port,
            security,
            username: username.into(),
            password: password.into(),
            bearer: None,
            extra_roots: Vec::new(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            resync: Resync::QResync,
        }
    }
}

/// How the flags of a folder are brought up to date (E9), at most: the session uses the
/// most of this that the server offers (and ENABLE, RFC 5161, to switch it on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resync {
    /// Every message's flags, every pass.
    Full,
    /// RFC 7162 CONDSTORE: flags changed since a mod-sequence; deletions found by
    /// comparing positions, and listed only when some happened.
    CondStore,
    /// RFC 7162 QRESYNC: CONDSTORE, and the server lists the UIDs expunged since.
    #[default]
    QResync,
}

/// How the connection is secured; spelled as in the API (`"tls"`, `"starttls"`, `"none"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// TLS from the first byte (RFC 8314, usually port 993).
    Tls,
    /// Plain greeting, then `STARTTLS` (RFC 3501 6.2.1, usually port 143).
    StartTls,
    /// No encryption: only for servers on a trusted network.
    None,
}

/// Deadlines. A server that accepts TCP but never answers costs at most `connect` (or
/// `login`, or `command`), never a hung task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect, TLS handshake, greeting and STARTTLS together.
    pub connect: Duration,
    /// LOGIN (a failed login costs the server's failure delay, 2 s on Dovecot).
    pub login: Duration,
    /// Any one command after login, including a whole fetch batch.
    pub command: Duration,
    /// How long one IDLE lasts before it is ended and re-issued: servers may drop a
    /// client idle for 30 minutes (RFC 2177 asks to re-issue at least every 29).
    pub idle_renew: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            login: Duration::from_secs(10),
            command: Duration::from_secs(120),
            idle_renew: Duration::from_secs(25 * 60),
        }
    }
}

/// Bounds on what one fetch loads into memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A message larger than this (RFC822.SIZE) is reported as [`Body::TooLarge`] and not
    /// downloaded.
    pub max_message_bytes: u32,
    /// A fetch batch stops adding messages once their sizes add up to this (it always
    /// takes at least one message that is within `max_message_bytes`).
    pub max_batch_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 32 << 20,
            max_batch_bytes: 64 << 20,
        }
    }
}

/// Why an IMAP operation failed. [`ImapError::code`] gives the API's error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImapError {
    /// No TCP connection, no greeting, or not an IMAP server.
    #[error("cannot connect to the IMAP server {server}: {reason}")]
    ConnectFailed { server: String, reason: String },
    /// The TLS handshake failed (certificate, protocol, a plain port) or STARTTLS was
    /// refused.
    #[error("TLS with the IMAP server {server} failed: {reason}")]
    TlsFailed { server: String, reason: String },
    /// The server refused LOGIN for these credentials (or would not let us try).
    #[error("the IMAP server refused the login of {username:?}: {reason}")]
    LoginFailed { username: String, reason: String },
    /// The server answered NO or BAD to a command (a folder that does not exist, a
    /// missing extension); the session is still usable.
    #[error("the IMAP server refused {command}: {message}")]
    Refused {
        command: &'static str,
        message: String,
    },
    /// The server's answer made no sense to us. The session is not usable any more.
    #[error("unexpected answer from the IMAP server to {command}: {reason}")]
    Protocol {
        command: &'static str,
        reason: String,
    },
    /// The connection broke (or was already unusable). Reconnect.
    #[error("IMAP connection lost during {command}: {source}")]
    Io {
        command: &'static str,
        #[source]
        source: io::Error,
    },
    /// The server did not finish a command in time. The session is not usable any more.
    #[error("the IMAP server did not answer {command} within {after:?}")]
    Timeout {
        command: &'static str,
        after: Duration,
    },
}

impl ImapError {
    /// The machine-readable code: `connect_failed`, `tls_failed` and `login_failed` are
    /// the `POST /mailboxes/{id}/test` errors (E10); the others occur only after login.
    pub fn code(&self) -> &'static str {
        match self {
            ImapError::ConnectFailed { .. } => "connect_failed",
            ImapError::TlsFailed { .. } => "tls_failed",
            ImapError::LoginFailed { .. } => "login_failed",
            ImapError::Refused { .. } => "command_refused",
            ImapError::Protocol { .. } => "protocol_error",
            ImapError::Io { .. } => "io_error",
            ImapError::Timeout { .. } => "timeout",
        }
    }
}

/// What the server announced after login (RFC 3501 7.2.1), upper-cased.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    names: BTreeSet<String>,
}

impl Capabilities {
    fn from_names(names: impl IntoIterator<Item = String>) -> Capabilities {
        Capabilities {
            names: names.into_iter().collect(),
        }
    }

    /// `name` is compared case-insensitively (`"idle"`, `"AUTH=PLAIN"`).
    pub fn has(&self, name: &str) -> bool {
        self.names.contains(&name.to_ascii_uppercase())
    }

    /// RFC 2177: new mail can be pushed instead of polled.
    pub fn idle(&self) -> bool {
        self.has("IDLE")
    }

    /// RFC 6154: folders carry `\Sent`, `\Junk`, … attributes.
    pub fn special_use(&self) -> bool {
        self.has("SPECIAL-USE")
    }

    /// RFC 4315: `UID EXPUNGE` and APPENDUID/COPYUID.
    pub fn uidplus(&self) -> bool {
        self.has("UIDPLUS")
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

/// A message's UID within one folder and one UIDVALIDITY (RFC 3501 2.3.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Uid(pub u32);

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What SELECT reported. A different `uid_validity` than at the last checkpoint means
/// every UID the poller stored for this folder is void (RFC 3501 2.3.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderState {
    pub uid_validity: u32,
    /// The UID the next message will get at least; absent on some old servers.
    pub uid_next: Option<Uid>,
    /// Number of messages in the folder.
    pub exists: u32,
    /// HIGHESTMODSEQ (RFC 7162) when the session uses mod-sequences and the folder keeps
    /// them (none on `NOMODSEQ`): the base for [`ImapSession::flag_changes`].
    pub highest_modseq: Option<u64>,
}

/// One message as fetched, in UID order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub uid: Uid,
    /// `\Seen` is among `flags` (E9: seen on the server = completed activity).
    pub seen: bool,
    /// All flags as the server spells them (`\Seen`, `\Answered`, `$Forwarded` …).
    pub flags: Vec<String>,
    /// When the server received the message (INTERNALDATE; E15).
    pub internal_date: Option<DateTime<Utc>>,
    /// RFC822.SIZE in bytes.
    pub size: u32,
    pub body: Body,
}

/// The raw message, or why it was left on the server.
#[derive(Clone, PartialEq, Eq)]
pub enum Body {
    /// The whole message as stored (RFC 5322 bytes, CRLF line ends).
    Raw(Vec<u8>),
    /// Larger than [`Limits::max_message_bytes`]: not downloaded.
    TooLarge,
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Raw(bytes) => write!(f, "Raw({} bytes)", bytes.len()),
            Body::TooLarge => f.write_str("TooLarge"),
        }
    }
}

/// The flags of one message that the poller mirrors (E9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UidFlags {
    pub uid: Uid,
    pub seen: bool,
    /// Marked `\Deleted` but not yet expunged: clients that "move to trash" lazily
    /// (Thunderbird's IMAP delete model) leave this; the message is deleted for E9.
    pub deleted: bool,
    /// The message's mod-sequence (RFC 7162), when the session uses them.
    pub modseq: Option<u64>,
}

/// What changed in the selected folder since a mod-sequence ([`ImapSession::flag_changes`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlagChanges {
    /// Messages whose flags changed since (new messages too), in UID order.
    pub changed: Vec<UidFlags>,
    /// UIDs expunged since. May name UIDs never seen, never one that still exists.
    pub vanished: Vec<RangeInclusive<u32>>,
    /// Every change up to this mod-sequence is in this answer: the next `since`.
    pub modseq: u64,
    /// Without QRESYNC: what the folder holds now, for the next call.
    pub known: Option<KnownUids>,
}

/// `count` messages of the selected folder had a UID up to `top` when last listed. Without
/// QRESYNC this finds deletions cheaply: while none happened, message number `count` is
/// still `top` (one small SEARCH); only otherwise are the UIDs listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownUids {
    pub top: Uid,
    pub count: u32,
}

impl KnownUids {
    /// What a list of every message of the folder (e.g. [`ImapSession::flags_of_all`])
    /// tells.
    pub fn of(uids: impl IntoIterator<Item = Uid>) -> KnownUids {
        let (top, count) = uids
            .into_iter()
            .fold((Uid(0), 0u32), |(top, n), uid| (top.max(uid), n + 1));
        KnownUids { top, count }
    }
}

/// How [`ImapSession::idle_wait`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleOutcome {
    /// The server reported a change in the selected folder (new, expunged or re-flagged
    /// mail), now or while earlier commands ran: sync the folder.
    NewData,
    /// Nothing happened within the time asked for.
    Timeout,
}

/// Connects and logs in (E10's checks, then a usable session), and switches on what
/// [`ImapSettings::resync`] allows of RFC 7162.
pub async fn connect(settings: &ImapSettings) -> Result<ImapSession, ImapError> {
    let mut session = logged_in(settings).await?;
    session.enable_resync(settings.resync).await?;
    Ok(session)
}

async fn logged_in(settings: &ImapSettings) -> Result<ImapSession, ImapError> {
    let (conn, capabilities) = connect::open(settings).await?;
    tracing::debug!(
        host = %settings.host,
        port = settings.port,
        security = ?settings.security,
        "IMAP login ok"
    );
    Ok(ImapSession::new(conn, capabilities, settings))
}

/// E10: connect, secure, log in and log out; fetches nothing. Returns only
/// `ConnectFailed`, `TlsFailed` or `LoginFailed`: once the login succeeded the settings
/// are good, whatever LOGOUT does.
pub async fn test_login(settings: &ImapSettings) -> Result<(), ImapError> {
    let session = logged_in(settings).await?;
    if let Err(e) = session.logout().await {
        tracing::debug!(error = %e, "LOGOUT after a successful test login failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e10_error_codes_match_the_api() {
        let server = "imap.example.com:993".to_owned();
        let connect = ImapError::ConnectFailed {
            server: server.clone(),
            reason: "refused".into(),
        };
        let tls = ImapError::TlsFailed {
            server,
            reason: "bad certificate".into(),
        };
        let login = ImapError::LoginFailed {
            username: "anna".into(),
            reason: "no".into(),
        };
        assert_eq!(connect.code(), "connect_failed");
        assert_eq!(tls.code(), "tls_failed");
        assert_eq!(login.code(), "login_failed");
    }

    #[test]
    fn a4_debug_hides_the_password() {
        let mut settings = ImapSettings::new("h", 993, Security::Tls, "anna", "hunter2");
        settings.bearer = Some("ya29.token".into());
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("ya29"),
            "{shown}"
        );
    }

    #[test]
    fn security_is_spelled_as_in_the_api() {
        for (security, text) in [
            (Security::Tls, "\"tls\""),
            (Security::StartTls, "\"starttls\""),
            (Security::None, "\"none\""),
        ] {
            assert_eq!(serde_json::to_string(&security).unwrap(), text);
            assert_eq!(serde_json::from_str::<Security>(text).unwrap(), security);
        }
    }

    #[test]
    fn session_futures_are_send() {
        fn is_send<T: Send>(_: &T) {}
        // The poller spawns one task per mailbox: every call must be usable in one.
        async fn all(mut s: ImapSession) {
            let _ = s.special_folders().await;
            let _ = s.select("INBOX").await;
            let _ = s.fetch_since(Uid(0), 10).await;
            let _ = s.flags_of_all().await;
            let _ = s.flag_changes(1, None).await;
            let _ = s.highest_uid().await;
            let _ = s.set_seen(&[Uid(1)], true).await;
            let _ = s.set_seen_unless_changed(&[Uid(1)], true, Some(1)).await;
            let _ = s.idle_wait(Duration::from_secs(1)).await;
            let _ = s.logout().await;
        }
        let settings = ImapSettings::new("h", 1, Security::None, "u", "p");
        is_send(&connect(&settings));
        is_send(&test_login(&settings));
        let _ = all;
        fn check<F: std::future::Future + Send>(_: fn(ImapSession) -> F) {}
        check(all);
    }
}
