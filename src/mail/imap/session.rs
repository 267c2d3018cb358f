//! One logged-in connection: the commands the poller uses and the state that makes them
//! safe to abandon (a dropped future) or to time out. Commands are our own exchange over
//! async-imap's framing, so a NO or BAD is never swallowed and untagged changes are noted
//! for `idle_wait`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::time::Duration;

use async_imap::imap_proto::{
    AttributeValue, Capability, MailboxDatum, RequestId, Response, ResponseCode, Status,
};
use chrono::NaiveDate;
use tokio::time::timeout;

use super::connect::ImapConn;
use super::folders::{self, ListedFolder, SpecialFolders};
use super::uidset;
use super::wire::{
    fetched_body, fetched_flags, fetched_meta, fetched_modseq, fetched_uid, has_flag, is_change,
    is_store_echo, modified_set, name_attribute, outcome_text, quote, truncate,
};
use super::{
    Body, Capabilities, Fetched, FlagChanges, FolderState, ImapError, ImapSettings, KnownUids,
    Limits, Resync, Timeouts, Uid, UidFlags,
};

/// Where the connection stands between two calls.
#[derive(Debug)]
pub(super) enum State {
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
    pub(super) conn: ImapConn,
    pub(super) capabilities: Capabilities,
    pub(super) timeouts: Timeouts,
    limits: Limits,
    pub(super) state: State,
    /// The server mentioned a change (EXISTS, EXPUNGE, FETCH of flags) while we were
    /// doing something else; the next `idle_wait` returns at once.
    pub(super) changes_seen: bool,
    /// The UIDs of the selected folder above some UID, from the last `fetch_since` search.
    uid_cache: Option<UidCache>,
    /// What of RFC 7162 the server switched on (ENABLE).
    resync: Resync,
    /// HIGHESTMODSEQ of the selected folder at SELECT; none without mod-sequences.
    selected_modseq: Option<u64>,
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
    pub(super) fn new(conn: ImapConn, capabilities: Capabilities, settings: &ImapSettings) -> Self {
        ImapSession {
            conn,
            capabilities,
            timeouts: settings.timeouts,
            limits: settings.limits,
            state: State::Ready,
            changes_seen: false,
            uid_cache: None,
            resync: Resync::Full,
            selected_modseq: None,
        }
    }

    /// What the server can do, as announced after login.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// How much of RFC 7162 this session uses: what the settings allowed and the server
    /// switched on.
    pub fn resync(&self) -> Resync {
        self.resync
    }

    /// Switches on QRESYNC, else CONDSTORE, as far as `wanted` allows and the server
    /// offers (RFC 5161 ENABLE; before any SELECT). A server that refuses keeps the
    /// session on full passes.
    pub(super) async fn enable_resync(&mut self, wanted: Resync) -> Result<(), ImapError> {
        let caps = &self.capabilities;
        // RFC 7162 3.2.3: QRESYNC only by ENABLE. CONDSTORE could be switched on by its
        // first use instead; a server without ENABLE is old enough to get full passes.
        let ask = if !caps.has("ENABLE") {
            return Ok(());
        } else if wanted >= Resync::QResync && caps.has("QRESYNC") {
            "QRESYNC"
        } else if wanted >= Resync::CondStore && caps.has("CONDSTORE") {
            "CONDSTORE"
        } else {
            return Ok(());
        };
        let mut enabled: Vec<String> = Vec::new();
        let answer = self
            .exchange(
                "ENABLE",
                &format!("ENABLE {ask}"),
                |response| match response {
                    Response::Capabilities(names) => {
                        enabled.extend(names.iter().filter_map(|name| match name {
                            Capability::Atom(atom) => Some(atom.to_ascii_uppercase()),
                            _ => None,
                        }));
                        true
                    }
                    _ => false,
                },
            )
            .await;
        match answer {
            Ok(()) => {}
            Err(ImapError::Refused { message, .. }) => {
                tracing::debug!(%message, "the server refused ENABLE {ask}: full flag passes");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        // QRESYNC implies CONDSTORE (RFC 7162 3.2.3); `ENABLED QRESYNC` says both.
        self.resync = if enabled.iter().any(|e| e == "QRESYNC") {
            Resync::QResync
        } else if enabled.iter().any(|e| e == "CONDSTORE") {
            Resync::CondStore
        } else {
            Resync::Full
        };
        Ok(())
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
        self.selected_modseq = None;
        let command = format!("SELECT {}", quote(folder, "SELECT")?);
        let (mut uid_validity, mut uid_next, mut exists) = (None, None, None);
        let mut highest_modseq = None;
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
                    // Absent on `[NOMODSEQ]` (RFC 7162 3.1.2.2).
                    Some(ResponseCode::HighestModSeq(m)) => highest_modseq = Some(m),
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
        // Dovecot reports HIGHESTMODSEQ even to clients that did not ENABLE CONDSTORE:
        // without it the session stays on full passes (and plain STOREs).
        self.selected_modseq = highest_modseq.filter(|_| self.resync != Resync::Full);
        Ok(FolderState {
            uid_validity,
            uid_next,
            exists: exists.unwrap_or(0),
            highest_modseq: self.selected_modseq,
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
        // With mod-sequences, each message's too: their maximum is where the next
        // incremental pass starts.
        let command = if self.selected_modseq.is_some() {
            "UID FETCH 1:* (UID FLAGS MODSEQ)"
        } else {
            "UID FETCH 1:* (UID FLAGS)"
        };
        let mut all = Vec::new();
        self.exchange("UID FETCH", command, |response| {
            let Response::Fetch(_, attributes) = response else {
                return false;
            };
            match uid_flags(attributes) {
                Some(flags) => {
                    all.push(flags);
                    true
                }
                None => false,
            }
        })
        .await?;
        all.sort_by_key(|f| f.uid);
        all.dedup_by_key(|f| f.uid);
        Ok(all)
    }

    /// What changed in the selected folder since mod-sequence `since` (RFC 7162), for
    /// E9's incremental pass: the flags of the messages changed since, and the UIDs
    /// expunged since. `since` must come from this folder and UIDVALIDITY and be at most
    /// its HIGHESTMODSEQ; else read [`ImapSession::flags_of_all`].
    ///
    /// With QRESYNC the server lists the expunged UIDs (`VANISHED`). With CONDSTORE alone,
    /// `known` (from the last call, or [`KnownUids::of`] a full listing) finds them: if
    /// message number `known.count` is still `known.top`, nothing up to it went and only
    /// the UIDs above it are listed (usually none or a few); else every UID is. Refused
    /// without mod-sequences, or without `known` and QRESYNC.
    pub async fn flag_changes(
        &mut self,
        since: u64,
        known: Option<KnownUids>,
    ) -> Result<FlagChanges, ImapError> {
        let refused = |message: &str| ImapError::Refused {
            command: "UID FETCH",
            message: message.to_owned(),
        };
        let Some(selected) = self.selected_modseq else {
            return Err(refused(
                "the selected folder has no mod-sequences: read every message's flags",
            ));
        };
        let qresync = self.resync == Resync::QResync;
        if !qresync && known.is_none() {
            return Err(refused(
                "without QRESYNC deletions are found from the known UIDs: read every message's flags first",
            ));
        }
        // Changes this call reads: not news for the next `idle_wait`. Its HIGHESTMODSEQ
        // (after expunges) counts expunges that no FETCH below would carry the
        // mod-sequence of, so they are not reported again next time.
        let refreshed = self
            .refresh_modseq(|response| {
                matches!(
                    response,
                    Response::Expunge(_) | Response::Vanished { .. } | Response::Fetch(..)
                )
            })
            .await?;
        let command = if qresync {
            // Not `1:*`: `*` is the highest UID there now, and the newest message may be
            // among the expunged ones (RFC 7162 3.2.6 reports only UIDs in the set).
            format!(
                "UID FETCH 1:{} (UID FLAGS) (CHANGEDSINCE {since} VANISHED)",
                u32::MAX
            )
        } else {
            format!("UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE {since})")
        };
        let mut changes = FlagChanges {
            modseq: since.max(selected).max(refreshed.unwrap_or(0)),
            ..FlagChanges::default()
        };
        self.exchange("UID FETCH", &command, |response| match response {
            Response::Fetch(_, attributes) => match uid_flags(attributes) {
                Some(flags) => {
                    changes.changed.push(flags);
                    true
                }
                None => false,
            },
            Response::Vanished { uids, .. } => {
                changes.vanished.extend(uids.iter().cloned());
                true
            }
            _ => false,
        })
        .await?;
        changes.changed.sort_by_key(|f| f.uid);
        changes.changed.dedup_by_key(|f| f.uid);
        // A change committed after this answer gets a higher mod-sequence than any in
        // it, so the highest one seen is a safe next `since`.
        if let Some(highest) = changes.changed.iter().filter_map(|f| f.modseq).max() {
            changes.modseq = changes.modseq.max(highest);
        }
        if let (false, Some(known)) = (qresync, known) {
            let (vanished, now) = self.missing_since(known).await?;
            changes.vanished = vanished;
            changes.known = Some(now);
        }
        Ok(changes)
    }

    /// Without QRESYNC: the UIDs gone since `known` and what the folder holds now.
    async fn missing_since(
        &mut self,
        known: KnownUids,
    ) -> Result<(Vec<std::ops::RangeInclusive<u32>>, KnownUids), ImapError> {
        let max = u32::MAX;
        // A range with `*` would include the highest UID even below its start (RFC 3501
        // 6.4.8), so the end is spelled out.
        let above = known.top.0.checked_add(1);
        let criteria = match (known.count, above) {
            (0, Some(first)) => format!("UID {first}:{max}"),
            (count, Some(first)) => format!("OR {count} UID {first}:{max}"),
            (0, None) => return Ok((Vec::new(), known)),
            (count, None) => count.to_string(),
        };
        let found = self.uid_search(&criteria).await?;
        // Message number `count` is `top` only if none up to `top` was expunged (UIDs
        // only grow); a number past the end finds nothing.
        let intact = known.count == 0 || found.contains(&known.top);
        let newer: Vec<Uid> = found.into_iter().filter(|uid| *uid > known.top).collect();
        if intact {
            let now = KnownUids {
                top: newer.last().copied().unwrap_or(known.top),
                count: known.count.saturating_add(newer.len() as u32),
            };
            let from = above.unwrap_or(max);
            let gone = if above.is_some() {
                uidset::missing_from(from, &newer)
            } else {
                Vec::new()
            };
            return Ok((gone, now));
        }
        let mut present = self.uid_search(&format!("UID 1:{}", known.top)).await?;
        present.retain(|uid| *uid <= known.top);
        present.extend(newer);
        Ok((uidset::missing_from(1, &present), KnownUids::of(present)))
    }

    /// The highest UID in the selected folder; none when it is empty.
    pub async fn highest_uid(&mut self) -> Result<Option<Uid>, ImapError> {
        // Whatever changed is read by the rest of this folder's pass.
        self.refresh(is_change).await?;
        Ok(self.uid_search("UID *").await?.into_iter().max())
    }

    /// Sets or clears `\Seen` on `uids` in the selected folder (E9: completing an
    /// activity marks its mail read). UIDs that no longer exist are ignored by the server.
    pub async fn set_seen(&mut self, uids: &[Uid], seen: bool) -> Result<(), ImapError> {
        self.set_seen_unless_changed(uids, seen, None)
            .await
            .map(drop)
    }

    /// [`ImapSession::set_seen`], but with mod-sequences and `unchanged_since` only on
    /// messages not changed since that mod-sequence (RFC 7162 `UNCHANGEDSINCE`): a
    /// change made on the server after the caller read it is not overwritten. Returns
    /// the UIDs left alone for that reason (the server's MODIFIED); the caller reads
    /// their state again and decides anew.
    pub async fn set_seen_unless_changed(
        &mut self,
        uids: &[Uid],
        seen: bool,
        unchanged_since: Option<u64>,
    ) -> Result<Vec<Uid>, ImapError> {
        let sign = if seen { '+' } else { '-' };
        let condition = match unchanged_since.filter(|_| self.selected_modseq.is_some()) {
            Some(modseq) => format!("(UNCHANGEDSINCE {modseq}) "),
            None => String::new(),
        };
        let mut modified = Vec::new();
        for set in uidset::format(uids) {
            // .SILENT: no FETCH echo of our own change, which would look like news to
            // IDLE. Under CONDSTORE the server still sends UID and MODSEQ: ours too.
            let command = format!("UID STORE {set} {condition}{sign}FLAGS.SILENT (\\Seen)");
            let done = self
                .exchange_tagged("UID STORE", &command, is_store_echo)
                .await?;
            let left = modified_set(&done.text);
            modified.extend(
                uids.iter()
                    .filter(|uid| left.iter().any(|range| range.contains(&uid.0))),
            );
        }
        modified.sort_unstable();
        modified.dedup();
        Ok(modified)
    }

    /// UIDs of the selected folder's messages received on or after `date` (the server's
    /// INTERNALDATE, by the server's calendar: RFC 3501 6.4.4 SEARCH SINCE), ascending. For
    /// the sync window (E3: the last 3 days).
    pub async fn search_since(&mut self, date: NaiveDate) -> Result<Vec<Uid>, ImapError> {
        // RFC 3501 9: date = day-month-year with English month names.
        self.uid_search(&format!("SINCE {}", date.format("%-d-%b-%Y")))
            .await
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
    pub(super) async fn make_ready(&mut self) -> Result<(), ImapError> {
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
        on_data: impl FnMut(&Response<'_>) -> bool,
    ) -> Result<(), ImapError> {
        self.exchange_tagged(name, command, on_data).await.map(drop)
    }

    /// [`ImapSession::refresh`] under CONDSTORE: also the HIGHESTMODSEQ the server
    /// reports with it (RFC 7162 3.2.10: after expunges, in the tagged OK).
    async fn refresh_modseq(
        &mut self,
        covered: impl Fn(&Response<'_>) -> bool,
    ) -> Result<Option<u64>, ImapError> {
        let mut highest = None;
        let done = self
            .exchange_tagged("NOOP", "NOOP", |response| match response {
                Response::Data {
                    status: Status::Ok,
                    outcome,
                } => {
                    if let Some(ResponseCode::HighestModSeq(m)) = outcome.code {
                        highest = highest.max(Some(m));
                    }
                    true
                }
                other => covered(other),
            })
            .await?;
        Ok(highest.max(done.highest_modseq))
    }

    /// [`ImapSession::exchange`], returning what the tagged OK said.
    async fn exchange_tagged(
        &mut self,
        name: &'static str,
        command: &str,
        mut on_data: impl FnMut(&Response<'_>) -> bool,
    ) -> Result<TaggedOk, ImapError> {
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
                            Status::Ok => Ok(TaggedOk {
                                text: outcome.information.as_deref().unwrap_or("").to_owned(),
                                highest_modseq: match outcome.code {
                                    Some(ResponseCode::HighestModSeq(m)) => Some(m),
                                    _ => None,
                                },
                            }),
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
            Ok(Ok(text)) => {
                self.state = State::Ready;
                Ok(text)
            }
            Ok(Err(failure)) => Err(self.fail(name, failure)),
            Err(_) => Err(self.time_out(name, limit)),
        }
    }

    /// Maps a failure to the error and records whether the connection is still usable.
    pub(super) fn fail(&mut self, command: &'static str, failure: Failure) -> ImapError {
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

    pub(super) fn time_out(&mut self, command: &'static str, after: Duration) -> ImapError {
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

/// What a command's tagged OK said besides OK.
struct TaggedOk {
    /// The text; a response code imap-proto does not know (RFC 7162's MODIFIED) is in
    /// it.
    text: String,
    highest_modseq: Option<u64>,
}

/// `\Seen`, `\Deleted` and MODSEQ of one FETCH response; `None` without UID.
fn uid_flags(attributes: &[AttributeValue<'_>]) -> Option<UidFlags> {
    let uid = fetched_uid(attributes)?;
    let flags = fetched_flags(attributes);
    Some(UidFlags {
        uid,
        seen: has_flag(&flags, "\\Seen"),
        deleted: has_flag(&flags, "\\Deleted"),
        modseq: fetched_modseq(attributes),
    })
}

/// What went wrong inside one exchange, before we know what it means for the session.
pub(super) enum Failure {
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
