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
//! One [`ImapSession`] is owned by one task. Dropping a call's future is safe: after an
//! abandoned IDLE the next call ends it with `DONE`; after any other abandoned command the
//! session answers [`ImapError::Io`] and the owner reconnects.

mod connect;
mod folders;
mod uidset;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::time::Duration;

use async_imap::imap_proto::{
    AttributeValue, MailboxDatum, NameAttribute, RequestId, Response, ResponseCode, Status,
};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, timeout, timeout_at};

pub use folders::SpecialFolders;
pub use tokio_rustls::rustls::pki_types::CertificateDer;

use connect::ImapConn;
use folders::ListedFolder;

/// How to reach and log in to one mailbox's server.
#[derive(Clone)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    /// Sent only inside LOGIN; `Debug` shows `<redacted>` (A4).
    pub password: String,
    /// Trusted in addition to Mozilla's roots: a company CA, or a test's own certificate.
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub timeouts: Timeouts,
    pub limits: Limits,
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
            extra_roots: Vec::new(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
        }
    }
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

/// Connects and logs in (E10's checks, then a usable session).
pub async fn connect(settings: &ImapSettings) -> Result<ImapSession, ImapError> {
    let (conn, capabilities) = connect::open(settings).await?;
    tracing::debug!(
        host = %settings.host,
        port = settings.port,
        security = ?settings.security,
        "IMAP login ok"
    );
    Ok(ImapSession {
        conn,
        capabilities,
        timeouts: settings.timeouts,
        limits: settings.limits,
        state: State::Ready,
        changes_seen: false,
        uid_cache: None,
    })
}

/// E10: connect, secure, log in and log out; fetches nothing. Returns only
/// `ConnectFailed`, `TlsFailed` or `LoginFailed`: once the login succeeded the settings
/// are good, whatever LOGOUT does.
pub async fn test_login(settings: &ImapSettings) -> Result<(), ImapError> {
    let session = connect(settings).await?;
    if let Err(e) = session.logout().await {
        tracing::debug!(error = %e, "LOGOUT after a successful test login failed");
    }
    Ok(())
}

/// Where the connection stands between two calls.
#[derive(Debug)]
enum State {
    Ready,
    /// A command was sent and its future dropped before the tagged answer: its remaining
    /// responses are in the stream, so the connection cannot be trusted any more.
    InCommand(&'static str),
    /// In IDLE (RFC 2177) with this tag: ended with DONE before the next command.
    Idling(RequestId),
    Broken(String),
}

/// One logged-in IMAP connection. See the module docs for who owns it.
pub struct ImapSession {
    conn: ImapConn,
    capabilities: Capabilities,
    timeouts: Timeouts,
    limits: Limits,
    state: State,
    /// The server mentioned a change (EXISTS, EXPUNGE, FETCH of flags) while we were
    /// doing something else; the next `idle_wait` returns at once.
    changes_seen: bool,
    /// The UIDs of the selected folder above some UID, from the last `fetch_since` search.
    uid_cache: Option<UidCache>,
}

/// UIDs (ascending) that were above `after` in the selected folder when searched.
#[derive(Debug)]
struct UidCache {
    after: Uid,
    uids: Vec<Uid>,
}

impl fmt::Debug for ImapSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapSession")
            .field("capabilities", &self.capabilities)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The special-use-or-name fallbacks, in order of preference (RFC 6154 first).
const SENT_NAMES: &[&str] = &["Sent", "Sent Items", "Sent Messages", "Sent Mail"];
const JUNK_NAMES: &[&str] = &["Junk", "Spam", "Junk E-mail", "Junk Email", "Bulk Mail"];
const TRASH_NAMES: &[&str] = &["Trash", "Deleted Items", "Deleted Messages"];

impl ImapSession {
    /// What the server can do, as announced after login.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The inbox, sent, junk and trash folders (E2, E4, E11): by SPECIAL-USE attribute
    /// (RFC 6154) where the server gives one, else by the usual names, top level or under
    /// INBOX (`Sent`, `Sent Items`, `Sent Messages`, `INBOX.Sent`; `Junk`, `Spam` …).
    pub async fn special_folders(&mut self) -> Result<SpecialFolders, ImapError> {
        let mut listed = Vec::new();
        self.exchange("LIST", "LIST \"\" \"*\"", |response| match response {
            Response::MailboxData(MailboxDatum::List(list)) => {
                listed.push(ListedFolder {
                    name: list.name.to_string(),
                    delimiter: list.delimiter.as_ref().map(|d| d.to_string()),
                    attributes: list.name_attributes.iter().map(name_attribute).collect(),
                });
                true
            }
            _ => false,
        })
        .await?;
        Ok(folders::pick(&listed, SENT_NAMES, JUNK_NAMES, TRASH_NAMES))
    }

    /// Selects `folder` read-write (so [`ImapSession::set_seen`] works) and reports its
    /// UIDVALIDITY, UIDNEXT and size.
    ///
    /// Changes in other folders are not reported while this one is selected: before
    /// idling on a folder synced earlier, compare `uid_next` with the last UID fetched + 1.
    pub async fn select(&mut self, folder: &str) -> Result<FolderState, ImapError> {
        self.uid_cache = None;
        let command = format!("SELECT {}", quote(folder, "SELECT")?);
        let (mut uid_validity, mut uid_next, mut exists) = (None, None, None);
        self.exchange("SELECT", &command, |response| match response {
            Response::MailboxData(MailboxDatum::Exists(n)) => {
                exists = Some(*n);
                true
            }
            Response::Data {
                status: Status::Ok,
                outcome,
            } => {
                match outcome.code {
                    Some(ResponseCode::UidValidity(v)) => uid_validity = Some(v),
                    Some(ResponseCode::UidNext(n)) => uid_next = Some(Uid(n)),
                    _ => {}
                }
                true
            }
            // FLAGS, RECENT, PERMANENTFLAGS belong to the SELECT answer, not to changes.
            Response::MailboxData(MailboxDatum::Recent(_) | MailboxDatum::Flags(_)) => true,
            _ => false,
        })
        .await?;
        // A SELECT answer is complete; changes seen before it are covered by it.
        self.changes_seen = false;
        let uid_validity = uid_validity.ok_or_else(|| {
            self.protocol_error(
                "SELECT",
                "no UIDVALIDITY in the answer (RFC 3501 6.3.1 requires it)",
            )
        })?;
        Ok(FolderState {
            uid_validity,
            uid_next,
            exists: exists.unwrap_or(0),
        })
    }

    /// Up to `limit` messages of the selected folder with a UID above `after` (`Uid(0)`
    /// for all), oldest first, without setting `\Seen` (`BODY.PEEK[]`). Stops early when
    /// [`Limits::max_batch_bytes`] is reached; call again with the last UID returned. An
    /// empty result means there is nothing above `after`: it always asks the server
    /// afresh, while the calls of one pass read from one search.
    pub async fn fetch_since(
        &mut self,
        after: Uid,
        limit: usize,
    ) -> Result<Vec<Fetched>, ImapError> {
        let limit = limit.max(1);
        let mut after = after;
        loop {
            let candidates = match self.cached_uids_after(after, limit) {
                Some(cached) => cached,
                None => {
                    let Some(first) = after.0.checked_add(1) else {
                        return Ok(Vec::new());
                    };
                    // New mail this call is about to fetch: not news for `idle_wait`.
                    self.refresh(|response| {
                        matches!(response, Response::MailboxData(MailboxDatum::Exists(_)))
                    })
                    .await?;
                    // RFC 3501 6.4.8: `n:*` always includes the highest UID, even below n.
                    let mut uids = self.uid_search(&format!("UID {first}:*")).await?;
                    uids.retain(|uid| *uid > after);
                    if uids.is_empty() {
                        self.uid_cache = None;
                        return Ok(Vec::new());
                    }
                    self.uid_cache = Some(UidCache { after, uids });
                    match self.cached_uids_after(after, limit) {
                        Some(fresh) => fresh,
                        None => return Ok(Vec::new()),
                    }
                }
            };
            let fetched = self.fetch_uids(&candidates).await?;
            if !fetched.is_empty() {
                return Ok(fetched);
            }
            // The whole chunk was expunged meanwhile: go on after it.
            after = *candidates.last().expect("candidates are never empty");
        }
    }

    /// Up to `limit` UIDs above `after` from the last search, if it covers `after` and
    /// has any left. A pass over a folder searches once, not once per batch (a search
    /// answers with every UID to the end: per batch that is quadratic in the folder size).
    fn cached_uids_after(&self, after: Uid, limit: usize) -> Option<Vec<Uid>> {
        let cache = self.uid_cache.as_ref().filter(|c| c.after <= after)?;
        let start = cache.uids.partition_point(|uid| *uid <= after);
        let rest = &cache.uids[start..];
        (!rest.is_empty()).then(|| rest[..rest.len().min(limit)].to_vec())
    }

    /// The messages among `uids` in UID order, without setting `\Seen`. Stops early when
    /// [`Limits::max_batch_bytes`] is reached: every requested UID up to the last one
    /// returned is either in the result or no longer exists. Messages over
    /// [`Limits::max_message_bytes`] come back as [`Body::TooLarge`], not downloaded.
    pub async fn fetch_uids(&mut self, uids: &[Uid]) -> Result<Vec<Fetched>, ImapError> {
        let wanted: HashSet<Uid> = uids.iter().copied().collect();
        let mut metas: Vec<Fetched> = Vec::new();
        for set in uidset::format(uids) {
            let command = format!("UID FETCH {set} (UID FLAGS INTERNALDATE RFC822.SIZE)");
            self.exchange("UID FETCH", &command, |response| {
                let Response::Fetch(_, attributes) = response else {
                    return false;
                };
                match fetched_meta(attributes) {
                    Some(meta) if wanted.contains(&meta.uid) => {
                        metas.push(meta);
                        true
                    }
                    // A flag change of another message, sent along (RFC 3501 7.4.2).
                    _ => false,
                }
            })
            .await?;
        }
        metas.sort_by_key(|m| m.uid);
        metas.dedup_by_key(|m| m.uid);

        let mut budget = self.limits.max_batch_bytes;
        let mut taken = 0;
        for meta in &mut metas {
            if meta.size > self.limits.max_message_bytes {
                tracing::warn!(
                    uid = meta.uid.0,
                    size = meta.size,
                    limit = self.limits.max_message_bytes,
                    "IMAP message over the size limit: not downloaded"
                );
                meta.body = Body::TooLarge;
            } else if u64::from(meta.size) > budget && taken > 0 {
                break;
            } else {
                budget = budget.saturating_sub(u64::from(meta.size));
            }
            taken += 1;
        }
        metas.truncate(taken);

        let bodies_wanted: Vec<Uid> = metas
            .iter()
            .filter(|m| m.body != Body::TooLarge)
            .map(|m| m.uid)
            .collect();
        let mut bodies: HashMap<Uid, Vec<u8>> = HashMap::with_capacity(bodies_wanted.len());
        for set in uidset::format(&bodies_wanted) {
            // BODY.PEEK, not BODY: fetching must not mark mail as read (E9).
            let command = format!("UID FETCH {set} (UID BODY.PEEK[])");
            self.exchange("UID FETCH", &command, |response| {
                let Response::Fetch(_, attributes) = response else {
                    return false;
                };
                let (Some(uid), Some(body)) = (fetched_uid(attributes), fetched_body(attributes))
                else {
                    return false;
                };
                bodies.insert(uid, body.to_vec());
                true
            })
            .await?;
        }
        // A message expunged between the two fetches has no body: leave it out.
        metas.retain_mut(|meta| {
            if meta.body == Body::TooLarge {
                return true;
            }
            match bodies.remove(&meta.uid) {
                Some(raw) => {
                    meta.body = Body::Raw(raw);
                    true
                }
                None => false,
            }
        });
        Ok(metas)
    }

    /// `\Seen` and `\Deleted` of every message in the selected folder, for mirroring
    /// seen/unseen and deletions (E9).
    pub async fn flags_of_all(&mut self) -> Result<Vec<UidFlags>, ImapError> {
        // Expunges and flag changes this call is about to report: not news for the next
        // `idle_wait`; new mail (EXISTS) still is.
        self.refresh(|response| {
            matches!(
                response,
                Response::Expunge(_) | Response::Vanished { .. } | Response::Fetch(..)
            )
        })
        .await?;
        let mut all = Vec::new();
        self.exchange("UID FETCH", "UID FETCH 1:* (UID FLAGS)", |response| {
            let Response::Fetch(_, attributes) = response else {
                return false;
            };
            let Some(uid) = fetched_uid(attributes) else {
                return false;
            };
            let flags = fetched_flags(attributes);
            all.push(UidFlags {
                uid,
                seen: has_flag(&flags, "\\Seen"),
                deleted: has_flag(&flags, "\\Deleted"),
            });
            true
        })
        .await?;
        all.sort_by_key(|f| f.uid);
        all.dedup_by_key(|f| f.uid);
        Ok(all)
    }

    /// Sets or clears `\Seen` on `uids` in the selected folder (E9: completing an
    /// activity marks its mail read). UIDs that no longer exist are ignored by the server.
    pub async fn set_seen(&mut self, uids: &[Uid], seen: bool) -> Result<(), ImapError> {
        let sign = if seen { '+' } else { '-' };
        for set in uidset::format(uids) {
            // .SILENT: no FETCH echo of our own change, which would look like news to IDLE.
            let command = format!("UID STORE {set} {sign}FLAGS.SILENT (\\Seen)");
            self.exchange("UID STORE", &command, |_| false).await?;
        }
        Ok(())
    }

    /// UIDs of the selected folder's messages received on or after `date` (the server's
    /// INTERNALDATE, by the server's calendar: RFC 3501 6.4.4 SEARCH SINCE), ascending. For
    /// the sync window (E3: the last 3 days).
    pub async fn search_since(&mut self, date: NaiveDate) -> Result<Vec<Uid>, ImapError> {
        // RFC 3501 9: date = day-month-year with English month names.
        self.uid_search(&format!("SINCE {}", date.format("%-d-%b-%Y")))
            .await
    }

    /// Waits up to `max` for the server to report a change in the selected folder
    /// (IDLE, RFC 2177), re-issuing IDLE every [`Timeouts::idle_renew`]. Returns at once
    /// with `NewData` when a change was already reported during earlier commands.
    ///
    /// Cancel by dropping the future (e.g. in `tokio::select!` with a shutdown signal):
    /// the session stays usable and the next call ends the IDLE first. Note Dovecot
    /// reports changes with up to ~0.5 s delay.
    pub async fn idle_wait(&mut self, max: Duration) -> Result<IdleOutcome, ImapError> {
        if !self.capabilities.idle() {
            return Err(ImapError::Refused {
                command: "IDLE",
                message: "the server does not offer IDLE (RFC 2177): poll instead".to_owned(),
            });
        }
        let end = Instant::now() + max;
        loop {
            self.make_ready().await?;
            if std::mem::take(&mut self.changes_seen) {
                return Ok(IdleOutcome::NewData);
            }
            let now = Instant::now();
            if now >= end {
                return Ok(IdleOutcome::Timeout);
            }
            let round_end = end.min(now + self.timeouts.idle_renew);
            self.start_idle().await?;
            // A change may come with the continuation already (Dovecot reports what
            // happened since the last command when IDLE starts).
            if !self.changes_seen {
                self.wait_in_idle(round_end).await?;
            }
            self.finish_idle().await?;
        }
    }

    /// Ends the session politely (RFC 3501 6.1.3).
    pub async fn logout(mut self) -> Result<(), ImapError> {
        self.exchange("LOGOUT", "LOGOUT", |response| {
            matches!(
                response,
                Response::Data {
                    status: Status::Bye,
                    ..
                }
            )
        })
        .await
    }

    /// NOOP (RFC 3501 6.1.2): lets the server update our view of the selected folder.
    /// Without it, Dovecot answers SEARCH and FETCH from the view of the last sync point:
    /// mail delivered since is missing, mail expunged by another client is still there.
    /// `covered` picks the changes the caller is about to read anyway.
    async fn refresh(&mut self, covered: impl Fn(&Response<'_>) -> bool) -> Result<(), ImapError> {
        self.exchange("NOOP", "NOOP", covered).await
    }

    async fn uid_search(&mut self, criteria: &str) -> Result<Vec<Uid>, ImapError> {
        let mut found = Vec::new();
        let command = format!("UID SEARCH {criteria}");
        self.exchange("UID SEARCH", &command, |response| match response {
            Response::MailboxData(MailboxDatum::Search(uids)) => {
                found.extend(uids.iter().copied().map(Uid));
                true
            }
            _ => false,
        })
        .await?;
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    /// Brings the connection back to "ready for a command": ends an IDLE left by a
    /// dropped `idle_wait`, refuses a connection left mid-command.
    async fn make_ready(&mut self) -> Result<(), ImapError> {
        match &self.state {
            State::Ready => Ok(()),
            State::Idling(_) => self.finish_idle().await,
            &State::InCommand(command) => {
                let reason = format!("an earlier {command} was abandoned before its answer");
                self.state = State::Broken(reason.clone());
                Err(unusable(command, reason))
            }
            State::Broken(reason) => Err(unusable("the next command", reason.clone())),
        }
    }

    /// Sends `command` and passes each untagged response to `on_data` (which returns
    /// whether it was part of the answer) until the tagged completion, all within
    /// [`Timeouts::command`].
    async fn exchange(
        &mut self,
        name: &'static str,
        command: &str,
        mut on_data: impl FnMut(&Response<'_>) -> bool,
    ) -> Result<(), ImapError> {
        self.make_ready().await?;
        self.state = State::InCommand(name);
        let limit = self.timeouts.command;
        let conn = &mut self.conn;
        let mut changes = false;
        let run = async {
            let tag = conn.run_command(command).await?;
            loop {
                let response = conn.read_response().await?.ok_or(Failure::Closed)?;
                match response.parsed() {
                    Response::Done {
                        tag: done,
                        status,
                        outcome,
                    } if *done == tag => {
                        return match status {
                            Status::Ok => Ok(()),
                            _ => Err(Failure::Refused(outcome_text(outcome))),
                        };
                    }
                    Response::Data {
                        status: Status::Bye,
                        outcome,
                    } if name != "LOGOUT" => return Err(Failure::Bye(outcome_text(outcome))),
                    other => {
                        if !on_data(other) && is_change(other) {
                            changes = true;
                        }
                    }
                }
            }
        };
        let outcome = timeout(limit, run).await;
        self.changes_seen |= changes;
        match outcome {
            Ok(Ok(())) => {
                self.state = State::Ready;
                Ok(())
            }
            Ok(Err(failure)) => Err(self.fail(name, failure)),
            Err(_) => Err(self.time_out(name, limit)),
        }
    }

    /// Sends IDLE and waits for the continuation (`+ idling`).
    async fn start_idle(&mut self) -> Result<(), ImapError> {
        self.state = State::InCommand("IDLE");
        let limit = self.timeouts.command;
        let tag = match timeout(limit, self.conn.run_command("IDLE")).await {
            Ok(Ok(tag)) => tag,
            Ok(Err(e)) => return Err(self.fail("IDLE", Failure::Imap(e))),
            Err(_) => return Err(self.time_out("IDLE", limit)),
        };
        // From here a dropped future is recoverable: DONE ends the IDLE, and
        // `finish_idle` skips the continuation if it is still unread.
        self.state = State::Idling(tag.clone());
        let conn = &mut self.conn;
        let mut changes = false;
        let run = async {
            loop {
                let response = conn.read_response().await?.ok_or(Failure::Closed)?;
                match response.parsed() {
                    Response::Continue { .. } => return Ok(()),
                    Response::Done {
                        tag: done, outcome, ..
                    } if *done == tag => return Err(Failure::Refused(outcome_text(outcome))),
                    Response::Data {
                        status: Status::Bye,
                        outcome,
                    } => return Err(Failure::Bye(outcome_text(outcome))),
                    other => changes |= is_change(other),
                }
            }
        };
        let outcome = timeout(limit, run).await;
        self.changes_seen |= changes;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(failure)) => Err(self.fail("IDLE", failure)),
            Err(_) => Err(self.time_out("IDLE", limit)),
        }
    }

    /// In IDLE: reads until a change is reported or `until`. Dropping this future is
    /// safe: the state stays `Idling` and nothing half-read is lost (a response is
    /// consumed whole or not at all by `read_response`).
    async fn wait_in_idle(&mut self, until: Instant) -> Result<(), ImapError> {
        loop {
            let response = match timeout_at(until, self.conn.read_response()).await {
                Err(_) => return Ok(()),
                Ok(Ok(Some(response))) => response,
                Ok(Ok(None)) => return Err(self.fail("IDLE", Failure::Closed)),
                Ok(Err(e)) => return Err(self.fail("IDLE", Failure::Io(e))),
            };
            match response.parsed() {
                Response::Data {
                    status: Status::Bye,
                    outcome,
                } => {
                    let failure = Failure::Bye(outcome_text(outcome));
                    return Err(self.fail("IDLE", failure));
                }
                other if is_change(other) => {
                    self.changes_seen = true;
                    return Ok(());
                }
                // `* OK Still here` keep-alives and the like.
                _ => {}
            }
        }
    }

    /// Sends DONE and reads up to the IDLE's tagged completion (RFC 2177 3).
    async fn finish_idle(&mut self) -> Result<(), ImapError> {
        let State::Idling(tag) = std::mem::replace(&mut self.state, State::InCommand("IDLE"))
        else {
            return Ok(());
        };
        let limit = self.timeouts.command;
        let conn = &mut self.conn;
        let mut changes = false;
        let run = async {
            conn.run_command_untagged("DONE").await?;
            loop {
                let response = conn.read_response().await?.ok_or(Failure::Closed)?;
                match response.parsed() {
                    Response::Done {
                        tag: done,
                        status,
                        outcome,
                    } if *done == tag => {
                        return match status {
                            Status::Ok => Ok(()),
                            _ => Err(Failure::Refused(outcome_text(outcome))),
                        };
                    }
                    Response::Data {
                        status: Status::Bye,
                        outcome,
                    } => return Err(Failure::Bye(outcome_text(outcome))),
                    // `+ idling` when IDLE was abandoned before its continuation was read.
                    other => changes |= is_change(other),
                }
            }
        };
        let outcome = timeout(limit, run).await;
        self.changes_seen |= changes;
        match outcome {
            Ok(Ok(())) => {
                self.state = State::Ready;
                Ok(())
            }
            Ok(Err(failure)) => Err(self.fail("DONE", failure)),
            Err(_) => Err(self.time_out("DONE", limit)),
        }
    }

    /// Maps a failure to the error and records whether the connection is still usable.
    fn fail(&mut self, command: &'static str, failure: Failure) -> ImapError {
        let error = match failure {
            Failure::Refused(message) => {
                self.state = State::Ready;
                return ImapError::Refused { command, message };
            }
            Failure::Closed => ImapError::Io {
                command,
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ),
            },
            Failure::Bye(text) => ImapError::Io {
                command,
                source: io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("the server said BYE: {text}"),
                ),
            },
            // A response imap-proto cannot parse surfaces as io::ErrorKind::Other.
            Failure::Io(e) if e.kind() == io::ErrorKind::Other => ImapError::Protocol {
                command,
                reason: truncate(&e.to_string()),
            },
            Failure::Io(source) => ImapError::Io { command, source },
            Failure::Imap(async_imap::error::Error::Io(source)) => {
                ImapError::Io { command, source }
            }
            Failure::Imap(e) => ImapError::Protocol {
                command,
                reason: truncate(&e.to_string()),
            },
        };
        self.state = State::Broken(error.to_string());
        error
    }

    fn time_out(&mut self, command: &'static str, after: Duration) -> ImapError {
        self.state = State::Broken(format!("{command} timed out"));
        ImapError::Timeout { command, after }
    }

    fn protocol_error(&mut self, command: &'static str, reason: &str) -> ImapError {
        self.state = State::Broken(reason.to_owned());
        ImapError::Protocol {
            command,
            reason: reason.to_owned(),
        }
    }
}

/// What went wrong inside one exchange, before we know what it means for the session.
enum Failure {
    Imap(async_imap::error::Error),
    Io(io::Error),
    Closed,
    Bye(String),
    Refused(String),
}

impl From<async_imap::error::Error> for Failure {
    fn from(e: async_imap::error::Error) -> Self {
        Failure::Imap(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

fn unusable(command: &'static str, reason: String) -> ImapError {
    ImapError::Io {
        command,
        source: io::Error::new(
            io::ErrorKind::NotConnected,
            format!("the IMAP session is unusable ({reason}): reconnect"),
        ),
    }
}

/// Untagged data that means the selected folder changed (RFC 3501 7.3, 7.4; RFC 7162
/// VANISHED).
fn is_change(response: &Response<'_>) -> bool {
    matches!(
        response,
        Response::MailboxData(MailboxDatum::Exists(_))
            | Response::Expunge(_)
            | Response::Vanished { .. }
            | Response::Fetch(..)
    )
}

fn outcome_text(outcome: &async_imap::imap_proto::Outcome<'_>) -> String {
    let text = outcome.information.as_deref().unwrap_or("(no text)");
    match &outcome.code {
        Some(code) => truncate(&format!("[{code:?}] {text}")),
        None => truncate(text),
    }
}

/// Server text in our errors is cut, so a parse error cannot drag a whole message body
/// into a log line or an API answer.
fn truncate(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// An IMAP quoted string (RFC 3501 4.3); line breaks and NUL cannot be quoted.
fn quote(value: &str, command: &'static str) -> Result<String, ImapError> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(ImapError::Refused {
            command,
            message: format!("{value:?} contains a line break or NUL, which IMAP cannot send"),
        });
    }
    Ok(format!(
        "\"{}\"",
        value.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

fn name_attribute(attribute: &NameAttribute<'_>) -> String {
    match attribute {
        NameAttribute::NoInferiors => "\\noinferiors".to_owned(),
        NameAttribute::NoSelect => "\\noselect".to_owned(),
        NameAttribute::Marked => "\\marked".to_owned(),
        NameAttribute::Unmarked => "\\unmarked".to_owned(),
        NameAttribute::All => "\\all".to_owned(),
        NameAttribute::Archive => "\\archive".to_owned(),
        NameAttribute::Drafts => "\\drafts".to_owned(),
        NameAttribute::Flagged => "\\flagged".to_owned(),
        NameAttribute::Junk => "\\junk".to_owned(),
        NameAttribute::Sent => "\\sent".to_owned(),
        NameAttribute::Trash => "\\trash".to_owned(),
        NameAttribute::Extension(other) => other.to_ascii_lowercase(),
        _ => String::new(),
    }
}

fn fetched_uid(attributes: &[AttributeValue<'_>]) -> Option<Uid> {
    attributes.iter().find_map(|a| match a {
        AttributeValue::Uid(uid) => Some(Uid(*uid)),
        _ => None,
    })
}

fn fetched_body<'a>(attributes: &'a [AttributeValue<'_>]) -> Option<&'a [u8]> {
    attributes.iter().find_map(|a| match a {
        AttributeValue::BodySection {
            section: None,
            index: None,
            data: Some(data),
        }
        | AttributeValue::Rfc822(Some(data)) => Some(data.as_ref()),
        _ => None,
    })
}

fn fetched_flags(attributes: &[AttributeValue<'_>]) -> Vec<String> {
    attributes
        .iter()
        .filter_map(|a| match a {
            AttributeValue::Flags(flags) => Some(flags.iter().map(|f| f.to_string())),
            _ => None,
        })
        .flatten()
        .collect()
}

fn has_flag(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

/// UID, flags, date and size of one FETCH response; `None` without UID or size.
fn fetched_meta(attributes: &[AttributeValue<'_>]) -> Option<Fetched> {
    let uid = fetched_uid(attributes)?;
    let size = attributes.iter().find_map(|a| match a {
        AttributeValue::Rfc822Size(size) => Some(*size),
        _ => None,
    })?;
    let internal_date = attributes.iter().find_map(|a| match a {
        AttributeValue::InternalDate(date) => parse_internal_date(date),
        _ => None,
    });
    let flags = fetched_flags(attributes);
    Some(Fetched {
        uid,
        seen: has_flag(&flags, "\\Seen"),
        flags,
        internal_date,
        size,
        body: Body::Raw(Vec::new()),
    })
}

/// RFC 3501 9 date-time: `"23-Nov-2026 17:56:38 +0000"`, the day maybe space-padded.
fn parse_internal_date(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text.trim(), "%d-%b-%Y %H:%M:%S %z")
        .ok()
        .map(|date| date.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_date_with_padded_day_and_offset() {
        let date = parse_internal_date(" 3-Nov-2026 09:05:01 +0100").expect("parses");
        assert_eq!(date.to_rfc3339(), "2026-11-03T08:05:01+00:00");
        let date = parse_internal_date("23-Nov-2026 17:56:38 -0000").expect("parses");
        assert_eq!(date.to_rfc3339(), "2026-11-23T17:56:38+00:00");
        assert_eq!(parse_internal_date("yesterday"), None);
    }

    #[test]
    fn quoting_escapes_and_refuses_line_breaks() {
        assert_eq!(quote("Sent Items", "SELECT").unwrap(), "\"Sent Items\"");
        assert_eq!(quote(r#"a"b\c"#, "SELECT").unwrap(), r#""a\"b\\c""#);
        assert!(quote("a\r\nb", "SELECT").is_err());
    }

    #[test]
    fn truncation_keeps_utf8_whole() {
        let long = "ä".repeat(400);
        let cut = truncate(&long);
        assert!(cut.len() <= 304);
        assert!(cut.ends_with('…'));
    }

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
        let settings = ImapSettings::new("h", 993, Security::Tls, "anna", "hunter2");
        assert!(!format!("{settings:?}").contains("hunter2"));
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
            let _ = s.set_seen(&[Uid(1)], true).await;
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
