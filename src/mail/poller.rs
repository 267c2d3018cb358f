//! The IMAP pollers: one task per connected mailbox, and the supervisor
//! that starts, restarts and stops them as mailboxes are added, changed or removed.
//!
//! A mailbox task connects, finds its folders (SPECIAL-USE), and per folder: collects
//! new messages after its checkpoint (UIDVALIDITY + last UID, so a restart neither
//! refetches nor loses mail), takes them into the store in batches, then mirrors seen/
//! unseen and deletions both ways (E9). It then waits: IMAP IDLE where the mailbox asks
//! for it and the server offers it, else the mailbox's interval; a change in the CRM
//! (an activity completed) wakes it early. Errors are shown on the mailbox (E10) and the
//! task reconnects with a growing, jittered back-off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::credentials::{Credentials, LoginError};
use super::imap::{
    self, Body, Fetched, FolderState, IdleOutcome, ImapSession, ImapSettings, KnownUids, Resync,
    Security, Uid,
};
use super::intake::incoming;
use super::{ContactDraft, Insiders};
use crate::cluster::Leases;
use crate::cluster::ownership::{Kind, RENEW_EVERY};
use crate::crm::model::{EntityKind, MailCheck, MailSecurity};
use crate::events::EventBus;
use crate::matcher::{Identifier, parse_email};
use crate::store::{
    FlagCheckpoint, FlagDelta, FolderCheckpoint, FolderPosition, IncomingEmail, KnownMessages,
    MailOrigin, MailboxRecord, NewEntity, ServerFlags, Store, StoreError,
};

/// Messages per fetch (and per store transaction, unless batches wait for the store).
const BATCH: usize = 200;
/// Batches waiting between two stages, when their bytes allow ([`IN_FLIGHT_BYTES`]).
const PIPELINE_DEPTH: usize = 4;
/// Raw mail fetched and not yet stored, at most (a larger batch still passes alone): the
/// memory the pipeline may hold, whatever the size of the batches.
const IN_FLIGHT_BYTES: usize = 64 << 20;
/// When batches wait for the store, it takes them in one transaction up to this many
/// messages and bytes of raw mail.
const MERGE_UP_TO: usize = 3 * BATCH;
const MERGE_BYTES: usize = 16 << 20;
const BACKOFF_MIN: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// How soon a mailbox that waits for someone (no OAuth2 refresh token yet, or a rejected
/// one) looks again: `leadline mailbox authorize` stores the token from another process,
/// which does not wake the poller. A look reads the database only: a rejected token is
/// not sent to the provider again.
const OPERATOR_RECHECK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Imap(#[from] imap::ImapError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error("reading fetched mail failed: {0}")]
    Parse(String),
}

/// The IMAP client settings of a stored mailbox.
pub fn imap_settings(mailbox: &MailboxRecord, password: String) -> ImapSettings {
    let security = match mailbox.security {
        MailSecurity::Tls => Security::Tls,
        MailSecurity::Starttls => Security::StartTls,
        MailSecurity::None => Security::None,
    };
    ImapSettings::new(
        mailbox.host.clone(),
        mailbox.port,
        security,
        mailbox.username.clone(),
        password,
    )
}

/// Runs the pollers until `cancel`; `changed` is woken by the API when mailboxes or
/// activities change. A mailbox is polled only while this node holds its lease, so
/// several nodes on one database never poll one mailbox at once.
pub async fn run(
    store: Store,
    events: EventBus,
    credentials: Credentials,
    changed: Arc<Notify>,
    leases: Leases,
    cancel: CancellationToken,
) {
    let mut tasks: HashMap<String, (MailboxRecord, CancellationToken, Arc<Notify>)> =
        HashMap::new();
    let mut held = leases.watch();
    // Woken by a change here (kick the pollers kept) or by a lease or a look at what
    // other nodes changed (start and stop pollers only).
    let mut kick_kept = true;
    loop {
        match store.all_mailboxes().await {
            Ok(mailboxes) => {
                leases.want(Kind::Mailbox, mailboxes.iter().map(|m| m.id.as_str()));
                let wanted: HashMap<String, MailboxRecord> = mailboxes
                    .into_iter()
                    .filter(|m| leases.holds(Kind::Mailbox, &m.id))
                    .map(|m| (m.id.clone(), m))
                    .collect();
                tasks.retain(|id, (running, stop, kick)| match wanted.get(id) {
                    Some(now) if same_settings(running, now) => {
                        // A change elsewhere (an activity completed): sync now.
                        if kick_kept {
                            kick.notify_one();
                        }
                        true
                    }
                    _ => {
                        stop.cancel();
                        false
                    }
                });
                for (id, mailbox) in wanted {
                    if tasks.contains_key(&id) {
                        continue;
                    }
                    let stop = cancel.child_token();
                    let kick = Arc::new(Notify::new());
                    let poller = Poller {
                        store: store.clone(),
                        events: events.clone(),
                        credentials: credentials.clone(),
                        mailbox: mailbox.clone(),
                        kick: kick.clone(),
                        stop: stop.clone(),
                    };
                    let span =
                        tracing::info_span!("mailbox", id = %mailbox.id, host = %mailbox.host);
                    tokio::spawn(tracing::Instrument::instrument(poller.run(), span));
                    tasks.insert(id, (mailbox, stop, kick));
                }
            }
            Err(err) => tracing::error!(%err, "cannot read the mailboxes"),
        }
        kick_kept = tokio::select! {
            () = cancel.cancelled() => return,
            () = changed.notified() => true,
            // A lease taken or lost: start or stop that mailbox's poller.
            Ok(()) = held.changed() => false,
            // Mailboxes added or removed through another node are seen here only so.
            () = tokio::time::sleep(RENEW_EVERY) => false,
        };
    }
}

/// Whether two readings of a mailbox need the same connection and folders: the state
/// columns change all the time and must not restart the task.
fn same_settings(a: &MailboxRecord, b: &MailboxRecord) -> bool {
    let key = |m: &MailboxRecord| {
        let mut m = m.clone();
        m.state = String::new();
        m.last_error = None;
        m.last_sync_at = None;
        m
    };
    key(a) == key(b)
}

struct Poller {
    store: Store,
    /// Where the messages stored are announced to webhooks.
    events: EventBus,
    credentials: Credentials,
    mailbox: MailboxRecord,
    kick: Arc<Notify>,
    stop: CancellationToken,
}

/// One folder the mailbox processes, with its role for the direction (E2).
#[derive(Debug, Clone)]
struct Folder {
    name: String,
    role: &'static str,
}

impl Poller {
    async fn run(self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let outcome = tokio::select! {
                () = self.stop.cancelled() => return,
                outcome = self.session() => outcome,
            };
            let err = match outcome {
                Ok(()) => return,
                Err(err) => err,
            };
            tracing::warn!(mailbox = %self.mailbox.id, %err, "mailbox sync failed; retrying");
            let _ = self
                .store
                .set_mailbox_state(&self.mailbox.id, "error", Some(&err.to_string()))
                .await;
            let wait = match &err {
                PollError::Login(login) if login.awaits_operator() => OPERATOR_RECHECK,
                _ => {
                    let wait = jitter(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    wait
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                // A settings change restarts the task; any other kick retries at once.
                () = self.kick.notified() => {}
            }
        }
    }

    /// One connection's life: returns `Ok` only when stopped.
    async fn session(&self) -> Result<(), PollError> {
        self.store
            .set_mailbox_state(&self.mailbox.id, "connecting", None)
            .await?;
        let mut session = self.credentials.connect(&self.mailbox).await?;
        let folders = self.folders(&mut session).await?;
        // IDLE watches one folder: the inbox, where customers' mail arrives.
        let watched = folders
            .iter()
            .find(|f| f.role == "inbox")
            .unwrap_or(&folders[0])
            .clone();
        loop {
            self.store
                .set_mailbox_state(&self.mailbox.id, "syncing", None)
                .await?;
            // The watched folder last: the session stays on it, so mail that arrives
            // after its fetch is announced (EXISTS) and the IDLE below returns at once.
            for folder in folders.iter().filter(|f| f.name != watched.name) {
                self.sync_folder(&mut session, folder).await?;
            }
            self.sync_folder(&mut session, &watched).await?;
            self.store
                .set_mailbox_state(&self.mailbox.id, "idle", None)
                .await?;
            let interval = self.mailbox.check.interval();
            if self.mailbox.check == MailCheck::Idle && session.capabilities().idle() {
                tokio::select! {
                    () = self.stop.cancelled() => return Ok(()),
                    () = self.kick.notified() => {}
                    outcome = session.idle_wait(interval) => {
                        if let IdleOutcome::NewData = outcome? {
                            metrics::counter!("leadline_mail_idle_wakeups_total").increment(1);
                        }
                    }
                }
            } else {
                tokio::select! {
                    () = self.stop.cancelled() => return Ok(()),
                    () = self.kick.notified() => {}
                    () = tokio::time::sleep(interval) => {}
                }
            }
        }
    }

    /// The folders to process (E2, E4): the configured ones, else inbox and sent.
    async fn folders(&self, session: &mut ImapSession) -> Result<Vec<Folder>, PollError> {
        let special = session.special_folders().await?;
        let role = |name: &str| {
            if name.eq_ignore_ascii_case(&special.inbox) {
                "inbox"
            } else if special.sent.as_deref() == Some(name) {
                "sent"
            } else {
                "other"
            }
        };
        Ok(match &self.mailbox.folders {
            Some(names) => names
                .iter()
                .map(|n| Folder {
                    name: n.clone(),
                    role: role(n),
                })
                .collect(),
            None => std::iter::once(special.inbox.clone())
                .chain(special.sent.clone())
                .map(|n| Folder {
                    role: role(&n),
                    name: n,
                })
                .collect(),
        })
    }

    async fn sync_folder(
        &self,
        session: &mut ImapSession,
        folder: &Folder,
    ) -> Result<(), PollError> {
        let state = session.select(&folder.name).await?;
        let validity = i64::from(state.uid_validity);
        let checkpoint = self
            .store
            .folder_checkpoint(&self.mailbox.id, &folder.name)
            .await?;
        let last = match checkpoint {
            Some(c) if c.uid_validity == validity => c.last_uid,
            other => {
                if other.is_some() {
                    // RFC 3501 §2.3.1.1: the old UIDs mean nothing now. Messages come in
                    // again and the store recognises those it has (by Message-ID).
                    tracing::info!(folder = %folder.name, "UIDVALIDITY changed; re-reading the folder");
                    metrics::counter!("leadline_mail_uidvalidity_changes_total").increment(1);
                }
                self.first_uid(session).await? - 1
            }
        };
        let last = self.collect(session, folder, validity, last).await?;
        if checkpoint.is_none_or(|c| c.uid_validity != validity || c.last_uid != last) {
            self.store
                .set_folder_checkpoint(
                    &self.mailbox.id,
                    &folder.name,
                    folder.role,
                    FolderCheckpoint {
                        uid_validity: validity,
                        last_uid: last,
                    },
                )
                .await?;
        }
        // E9 both ways.
        self.sync_flags(session, folder, validity, &state).await
    }

    /// E9 both ways for the selected folder: the server's `\Seen` and deletions into the
    /// CRM, the CRM's completions onto the server.
    ///
    /// The incremental read is `UID FETCH … (CHANGEDSINCE m VANISHED)` after the new-mail
    /// loop, not `SELECT (QRESYNC (…))`: the same answer, read where it is used, and the
    /// SELECT (and the loop between) stay as they are for every server.
    ///
    /// With mod-sequences (RFC 7162) and a flag checkpoint of this UIDVALIDITY it reads
    /// only what changed since that checkpoint: the changed flags, and the deletions
    /// from QRESYNC's VANISHED or, with CONDSTORE alone, from a position check. Else
    /// (first pass, no CONDSTORE, `NOMODSEQ`, a new UIDVALIDITY, a checkpoint past the
    /// server's HIGHESTMODSEQ) it reads every message's flags, and with mod-sequences
    /// records where the next pass can start.
    async fn sync_flags(
        &self,
        session: &mut ImapSession,
        folder: &Folder,
        validity: i64,
        state: &FolderState,
    ) -> Result<(), PollError> {
        let started = std::time::Instant::now();
        let (mailbox, name) = (self.mailbox.id.as_str(), folder.name.as_str());
        let qresync = session.resync() == Resync::QResync;
        let highest = state.highest_modseq.and_then(|m| i64::try_from(m).ok());
        // A mod-sequence past the server's means the folder's history was reset (a restore):
        // what changed since cannot be asked for.
        let saved = self
            .store
            .flag_checkpoint(mailbox, name)
            .await?
            .filter(|c| c.uid_validity == validity)
            .filter(|c| highest.is_some_and(|h| (0..=h).contains(&c.highest_modseq)))
            .map(|c| {
                let known = c.known.and_then(|k| {
                    Some(KnownUids {
                        top: Uid(u32::try_from(k.top_uid).ok()?),
                        count: u32::try_from(k.count).ok()?,
                    })
                });
                (c, known)
            })
            .filter(|(_, known)| qresync || known.is_some());
        let (plan, modseq) = match saved {
            Some((saved, known)) => {
                let changes = session
                    .flag_changes(saved.highest_modseq.unsigned_abs(), known)
                    .await?;
                // A message marked `\Deleted` is deleted for E9, as in the full pass.
                let (deleted, changed): (Vec<_>, Vec<_>) =
                    changes.changed.iter().partition(|f| f.deleted);
                let delta = FlagDelta {
                    changed: changed.into_iter().map(server_flags).collect(),
                    vanished: changes
                        .vanished
                        .iter()
                        .map(|r| i64::from(*r.start())..=i64::from(*r.end()))
                        .chain(deleted.iter().map(|f| {
                            let uid = i64::from(f.uid.0);
                            uid..=uid
                        }))
                        .collect(),
                };
                let modseq = i64::try_from(changes.modseq).unwrap_or(saved.highest_modseq);
                let checkpoint = FlagCheckpoint {
                    uid_validity: validity,
                    highest_modseq: modseq,
                    known: changes.known.map(known_messages),
                };
                let plan = self
                    .store
                    .sync_folder_delta(mailbox, name, validity, &delta, checkpoint)
                    .await?;
                (plan, Some(modseq))
            }
            None => {
                let all = session.flags_of_all().await?;
                // Every change up to the highest mod-sequence seen is in this answer.
                let modseq = highest.map(|h| {
                    all.iter()
                        .filter_map(|f| f.modseq.and_then(|m| i64::try_from(m).ok()))
                        .fold(h, i64::max)
                });
                let checkpoint = modseq.map(|highest_modseq| FlagCheckpoint {
                    uid_validity: validity,
                    highest_modseq,
                    known: (!qresync)
                        .then(|| known_messages(KnownUids::of(all.iter().map(|f| f.uid)))),
                });
                let flags: Vec<ServerFlags> = all
                    .iter()
                    .filter(|f| !f.deleted)
                    .map(server_flags)
                    .collect();
                let plan = self
                    .store
                    .sync_folder(mailbox, name, validity, &flags, checkpoint)
                    .await?;
                (plan, modseq)
            }
        };
        if plan.followed > 0 || plan.removed > 0 {
            tracing::debug!(folder = %name, followed = plan.followed, removed = plan.removed, "E9: server changes taken in");
        }
        for (list, seen) in [(&plan.set_seen, true), (&plan.set_unseen, false)] {
            if list.is_empty() {
                continue;
            }
            let uids: Vec<Uid> = list.iter().map(|u| Uid(*u as u32)).collect();
            // UNCHANGEDSINCE: a message changed on the server after this pass read it is
            // left alone; the next pass reads its new state and decides again.
            let pushed = session
                .set_seen_unless_changed(&uids, seen, modseq.map(|m| m as u64))
                .await;
            match pushed {
                Ok(modified) => {
                    let done: Vec<i64> = list
                        .iter()
                        .copied()
                        .filter(|u| !modified.contains(&Uid(*u as u32)))
                        .collect();
                    self.store
                        .flags_pushed(mailbox, name, validity, &done, seen)
                        .await?;
                }
                Err(imap::ImapError::Refused { message, .. }) => {
                    tracing::warn!(folder = %name, %message, "the server refused to change \\Seen; the activities follow the server");
                    self.store
                        .flags_refused(mailbox, name, validity, list)
                        .await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let kind = if saved.is_some() {
            "incremental"
        } else {
            "full"
        };
        metrics::histogram!("leadline_mail_flag_pass_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Collects the messages after `after` into the store and returns the folder position
    /// reached. Fetching, parsing and storing overlap (a batch is fetched while the ones
    /// before are parsed and stored); batches reach the store in order, and every store
    /// transaction moves the checkpoint with the messages it stores, so the checkpoint is
    /// never past a message that is not stored. An error of any stage ends the others:
    /// the store still takes the batches fetched before a fetch error, and a store error
    /// stops the fetching at its next batch.
    async fn collect(
        &self,
        session: &mut ImapSession,
        folder: &Folder,
        validity: i64,
        after: i64,
    ) -> Result<i64, PollError> {
        let insiders = Arc::new(self.insiders().await?);
        let (to_parse, mut fetched) = mpsc::channel::<(Vec<Fetched>, i64, Budget)>(PIPELINE_DEPTH);
        let budget = Arc::new(Semaphore::new(IN_FLIGHT_BYTES));
        let (to_store, mut parsed) = mpsc::channel::<Collected>(PIPELINE_DEPTH);
        let fetch = async move {
            let mut last = after;
            loop {
                let started = Instant::now();
                let batch = session.fetch_since(Uid(last as u32), BATCH).await?;
                stage_time("fetch", started);
                let Some(newest) = batch.iter().map(|m| i64::from(m.uid.0)).max() else {
                    return Ok(());
                };
                last = last.max(newest);
                let bytes = batch.iter().map(|m| m.size as usize).sum::<usize>();
                let Ok(held) = budget
                    .clone()
                    .acquire_many_owned(bytes.clamp(1, IN_FLIGHT_BYTES) as u32)
                    .await
                else {
                    return Ok(());
                };
                if to_parse.send((batch, last, vec![held])).await.is_err() {
                    // The store stopped; its error is the one reported.
                    return Ok::<(), PollError>(());
                }
            }
        };
        let parsing = insiders.clone();
        let parse = async move {
            while let Some((batch, last, budget)) = fetched.recv().await {
                let origin = Origin {
                    mailbox: self.mailbox.id.clone(),
                    folder: folder.name.clone(),
                    role: folder.role,
                    validity,
                    insiders: parsing.clone(),
                };
                // mail-parser is CPU work: off the async threads, so that fetching and
                // storing go on meanwhile.
                let collected =
                    tokio::task::spawn_blocking(move || origin.parse(batch, last, budget))
                        .await
                        // A panic in the parser: nothing from this batch on is stored.
                        .map_err(|e| PollError::Parse(e.to_string()))?;
                if to_store.send(collected).await.is_err() {
                    break;
                }
            }
            Ok::<(), PollError>(())
        };
        let store = async move {
            let importing = self.mailbox.vcard_contacts && self.mailbox.crm_link;
            let mut reached = after;
            let mut held: Option<Collected> = None;
            loop {
                let mut batch = match held.take() {
                    Some(batch) => batch,
                    None => match parsed.recv().await {
                        Some(batch) => batch,
                        None => break,
                    },
                };
                // Behind the fetch: the batches waiting go into one transaction. Not one
                // with cards to import, whose contacts must come before its own messages
                // but after those before it.
                while batch.emails.len() < MERGE_UP_TO
                    && batch.bytes < MERGE_BYTES
                    && let Ok(next) = parsed.try_recv()
                {
                    if importing && !next.cards.is_empty() {
                        held = Some(next);
                        break;
                    }
                    batch.emails.extend(next.emails);
                    batch.bytes += next.bytes;
                    batch.last = next.last;
                    batch.budget.extend(next.budget);
                }
                let Collected {
                    emails,
                    cards,
                    last,
                    budget,
                    ..
                } = batch;
                // Cards first: a customer who sends their card gets the message on the
                // new contact, not on a lead made of the same address (M7 keeps one owner).
                if importing && !cards.is_empty() {
                    self.import_cards(cards, &insiders).await?;
                }
                let position = FolderPosition {
                    mailbox: &self.mailbox.id,
                    folder: &folder.name,
                    role: folder.role,
                    checkpoint: FolderCheckpoint {
                        uid_validity: validity,
                        last_uid: last,
                    },
                };
                let outcomes = self.store.ingest_folder_emails(&emails, &position).await?;
                crate::webhooks::records::announce_mail(&self.store, &self.events, &outcomes).await;
                let fresh = outcomes.iter().filter(|o| o.email.is_some()).count();
                metrics::counter!("leadline_mail_ingested_total").increment(fresh as u64);
                reached = last;
                drop((emails, budget));
            }
            Ok::<i64, PollError>(reached)
        };
        let (fetched, parsed, stored) = tokio::join!(fetch, parse, store);
        let reached = stored?;
        parsed?;
        fetched?;
        Ok(reached)
    }

    /// The first UID to collect on a folder never read (or re-numbered): the sync window
    /// (E3) decides; all mail starts at 1.
    async fn first_uid(&self, session: &mut ImapSession) -> Result<i64, PollError> {
        let Some(days) = self.mailbox.sync_window_days else {
            return Ok(1);
        };
        let since = chrono::Utc::now().date_naive() - chrono::Days::new(u64::from(days));
        let uids = session.search_since(since).await?;
        Ok(match uids.iter().map(|u| i64::from(u.0)).min() {
            Some(first) => first,
            // Nothing in the window: start after the newest message.
            None => i64::from(u32::MAX).min(
                session
                    .highest_uid()
                    .await?
                    .map_or(0, |uid| i64::from(uid.0))
                    + 1,
            ),
        })
    }

    /// E3: vCards attached to collected mail become contacts (or companies); a card
    /// whose address or number is already on an entity is skipped (M7), and a card of
    /// someone on the company's side is no customer (M6). The contacts are announced
    /// before the messages that carried them.
    async fn import_cards(
        &self,
        cards: Vec<ContactDraft>,
        insiders: &Insiders,
    ) -> Result<(), PollError> {
        let country = self.store.crm_settings().await?.default_country;
        let entities: Vec<NewEntity> = cards
            .into_iter()
            .filter(|card| !card.emails.iter().any(|e| insiders.contains(e)))
            .filter_map(|card| contact_from_card(card, country, self.mailbox.owner.clone()))
            .collect();
        if entities.is_empty() {
            return Ok(());
        }
        let report = self.store.import_entities(&entities).await?;
        tracing::info!(
            created = report.created,
            skipped = report.skipped.len(),
            "contacts from vCards"
        );
        crate::webhooks::records::announce_cards(
            &self.store,
            &self.events,
            &self.mailbox,
            &report.entities,
        )
        .await;
        Ok(())
    }

    /// The company's side (M6): this mailbox, every employee, every connected mailbox.
    async fn insiders(&self) -> Result<Insiders, PollError> {
        let addresses = self.store.insider_addresses().await?;
        Ok(Insiders::new(
            parse_email(&self.mailbox.address).ok(),
            addresses.iter().filter_map(|a| parse_email(a).ok()),
        ))
    }
}

/// A contact (or company) made of a vCard; `None` for a card with nothing to match on.
fn contact_from_card(
    card: ContactDraft,
    country: crate::matcher::Country,
    responsible: Option<crate::crm::model::UserId>,
) -> Option<NewEntity> {
    let mut identifiers: Vec<Identifier> =
        card.emails.iter().cloned().map(Identifier::Email).collect();
    identifiers.extend(
        card.phones
            .iter()
            .filter_map(|p| crate::matcher::normalise_phone(p, Some(country)).ok())
            .map(Identifier::Phone),
    );
    if identifiers.is_empty() {
        return None;
    }
    let name = card
        .name
        .clone()
        .or_else(|| card.organisation.clone())
        .unwrap_or_else(|| identifiers[0].key().to_owned());
    Some(NewEntity {
        kind: if card.is_company {
            EntityKind::Company
        } else {
            EntityKind::Contact
        },
        name,
        identifiers,
        responsible,
        source: crate::crm::model::SOURCE_EMAIL.to_owned(),
        company: None,
        customer: None,
        deal: None,
    })
}

fn server_flags(flags: &imap::UidFlags) -> ServerFlags {
    ServerFlags {
        uid: i64::from(flags.uid.0),
        seen: flags.seen,
    }
}

fn known_messages(known: KnownUids) -> KnownMessages {
    KnownMessages {
        top_uid: i64::from(known.top.0),
        count: i64::from(known.count),
    }
}

/// ±25 % so that many mailboxes failing together do not retry together.
fn jitter(base: Duration) -> Duration {
    use rand::Rng as _;
    let factor = rand::rng().random_range(0.75..1.25);
    base.mul_f64(factor)
}

/// A batch as the store takes it, with the folder position it reaches (a message left on
/// the server for its size counts as collected).
struct Collected {
    emails: Vec<IncomingEmail>,
    cards: Vec<ContactDraft>,
    last: i64,
    /// Raw bytes of `emails`.
    bytes: usize,
    /// Their part of [`IN_FLIGHT_BYTES`], given back once stored.
    budget: Budget,
}

type Budget = Vec<OwnedSemaphorePermit>;

/// What parsing a fetched batch needs to know about where it came from.
struct Origin {
    mailbox: String,
    folder: String,
    role: &'static str,
    validity: i64,
    insiders: Arc<Insiders>,
}

impl Origin {
    fn parse(&self, fetched: Vec<Fetched>, last: i64, budget: Budget) -> Collected {
        let started = Instant::now();
        let mut emails = Vec::with_capacity(fetched.len());
        let mut cards = Vec::new();
        for message in fetched {
            let Body::Raw(raw) = message.body else {
                tracing::warn!(uid = %message.uid, size = message.size, "message over the size limit left on the server");
                continue;
            };
            let origin = MailOrigin::Folder {
                mailbox: self.mailbox.clone(),
                folder: self.folder.clone(),
                uid_validity: self.validity,
                uid: i64::from(message.uid.0),
            };
            let received_at = message
                .internal_date
                .map_or_else(crate::store::now_ms, |d| d.timestamp_millis());
            let (email, drafts) = incoming(
                origin,
                raw,
                message.seen,
                received_at,
                self.role,
                &self.insiders,
            );
            emails.push(email);
            cards.extend(drafts);
        }
        stage_time("parse", started);
        Collected {
            bytes: emails.iter().map(|e| e.raw.len()).sum(),
            emails,
            cards,
            last,
            budget,
        }
    }
}

/// `leadline_mail_stage_seconds{stage}`: where a batch's time goes (the store side adds
/// `match` and `store`); the stages overlap, so their sum exceeds the wall time.
fn stage_time(stage: &'static str, started: Instant) {
    metrics::histogram!("leadline_mail_stage_seconds", "stage" => stage)
        .record(started.elapsed().as_secs_f64());
}
