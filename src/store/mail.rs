//! The mail side of the store: connected mailboxes and their folder checkpoints, the
//! mail store, and the intake of collected messages (E1–E16) through the shared matcher
//! and `crm::mail::decide_mail`, one transaction per batch of messages.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use sqlx::any::AnyRow;

use super::entities::Tx;
use super::mail_intake::{EmailFacts, IntakeSettings, Looked, Planner, Turns};
use super::matching::match_all;
use super::rows::placeholders;
use super::{
    Page, Paged, Result, Store, StoreError, col, flag, json_list, now_ms, parse_json_list,
    parse_stored,
};
use crate::crm::mail::MailboxPolicy;
use crate::crm::mail_flags::{self, FlagSync, ServerView, merge_ranges};
use crate::crm::model::{
    Direction, EntityKind, EntityRef, MailAuth, MailCheck, MailSecurity, MailboxKind, Millis,
    OAuth2Provider, QueueId, UserId,
};
use crate::matcher::{Exclusions, Identifier, parse_email};

/// A mailbox as configured, without its password (A4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxRecord {
    pub id: String,
    pub name: String,
    pub kind: MailboxKind,
    pub owner: Option<UserId>,
    pub address: String,
    pub host: String,
    pub port: u16,
    pub security: MailSecurity,
    pub username: String,
    pub auth: MailAuth,
    /// The OAuth2 client of an `oauth2` mailbox.
    pub oauth2: Option<OAuth2Settings>,
    pub folders: Option<Vec<String>>,
    pub spam_folder: Option<String>,
    pub sync_window_days: Option<u32>,
    pub crm_link: bool,
    pub create_leads_incoming: bool,
    pub create_leads_outgoing: bool,
    pub vcard_contacts: bool,
    pub route_to_responsible: bool,
    pub blacklist: Vec<String>,
    pub queue: Option<QueueId>,
    pub check: MailCheck,
    pub state: String,
    pub last_error: Option<String>,
    pub last_sync_at: Option<Millis>,
    pub created_at: Millis,
}

/// A mailbox's settings on creation; `password` is kept for the IMAP login only.
#[derive(Debug, Clone)]
pub struct NewMailbox {
    pub name: String,
    pub kind: MailboxKind,
    pub owner: Option<UserId>,
    pub address: String,
    pub host: String,
    pub port: u16,
    pub security: MailSecurity,
    pub username: String,
    pub password: String,
    pub auth: MailAuth,
    /// Required for `MailAuth::Oauth2`, ignored otherwise.
    pub oauth2: Option<NewOAuth2>,
    pub folders: Option<Vec<String>>,
    pub spam_folder: Option<String>,
    pub sync_window_days: Option<u32>,
    pub crm_link: bool,
    pub create_leads_incoming: bool,
    pub create_leads_outgoing: bool,
    pub vcard_contacts: bool,
    pub route_to_responsible: bool,
    pub blacklist: Vec<String>,
    pub queue: Option<QueueId>,
    pub check: MailCheck,
}

/// An OAuth2 mailbox's client without its secrets (A4): only whether they are set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Settings {
    pub provider: Option<OAuth2Provider>,
    pub token_url: String,
    pub device_authorization_url: Option<String>,
    pub client_id: String,
    pub scope: String,
    pub client_secret_set: bool,
    pub refresh_token_set: bool,
}

/// An OAuth2 client on creation or update; the secrets are write-only.
#[derive(Debug, Clone)]
pub struct NewOAuth2 {
    pub provider: Option<OAuth2Provider>,
    pub token_url: String,
    pub device_authorization_url: Option<String>,
    pub client_id: String,
    pub scope: String,
    pub client_secret: SecretUpdate,
    pub refresh_token: SecretUpdate,
}

/// What an update does to a write-only secret (on creation `Keep` is `Clear`).
#[derive(Clone, PartialEq, Eq)]
pub enum SecretUpdate {
    Keep,
    Set(String),
    Clear,
}

impl SecretUpdate {
    /// `(changed, value)` for `CASE WHEN changed = 1 THEN value ELSE column END`.
    fn bind(&self) -> (i64, Option<&str>) {
        match self {
            SecretUpdate::Keep => (0, None),
            SecretUpdate::Set(value) => (1, Some(value)),
            SecretUpdate::Clear => (1, None),
        }
    }
}

impl std::fmt::Debug for SecretUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A4: a secret never reaches a log line.
        f.write_str(match self {
            SecretUpdate::Keep => "Keep",
            SecretUpdate::Set(_) => "Set(<redacted>)",
            SecretUpdate::Clear => "Clear",
        })
    }
}

/// The secrets of an OAuth2 mailbox, for the credentials only (A4).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OAuth2Secrets {
    pub client_secret: Option<String>,
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for OAuth2Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Secrets")
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The poller's view of where it is in one folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderCheckpoint {
    pub uid_validity: i64,
    pub last_uid: i64,
}

/// A folder's checkpoint as a batch of it leaves it.
#[derive(Debug, Clone, Copy)]
pub struct FolderPosition<'a> {
    pub mailbox: &'a str,
    pub folder: &'a str,
    /// inbox | sent | other
    pub role: &'a str,
    pub checkpoint: FolderCheckpoint,
}

/// One attachment as the mail store lists it (the bytes stay in the raw message).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttachmentInfo {
    pub name: Option<String>,
    pub content_type: String,
    pub size: u64,
}

/// Where a collected message sits: a folder position of a mailbox, or the forward
/// address (E16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailOrigin {
    Folder {
        mailbox: String,
        folder: String,
        uid_validity: i64,
        uid: i64,
    },
    /// The forward address (E16); `employee`: the one the message came through, who gets
    /// what it creates.
    Forward { employee: Option<UserId> },
}

/// A collected message, parsed and with its customers found (the adapter's facts).
#[derive(Debug, Clone)]
pub struct IncomingEmail {
    pub origin: MailOrigin,
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub thread_root: Option<String>,
    pub direction: Direction,
    pub from: String,
    pub from_name: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub received_at: Millis,
    pub seen: bool,
    pub attachments: Vec<AttachmentInfo>,
    pub raw: Vec<u8>,
    /// The customers' addresses: the sender of received mail, the recipients of sent
    /// mail (employees and connected mailboxes are excluded by the matcher, M6).
    pub customers: Vec<String>,
}

/// What the intake did with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailOutcome {
    /// `None`: this folder position was collected before (a replay, not a new message).
    pub email: Option<String>,
    pub action: String,
    pub activity: Option<String>,
    pub created: Vec<EntityRef>,
}

/// A message of the mail store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailRecord {
    pub id: String,
    pub mailbox: Option<String>,
    pub folder: Option<String>,
    pub uid: Option<i64>,
    pub message_id: Option<String>,
    pub direction: Direction,
    pub from: String,
    pub from_name: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub received_at: Millis,
    pub ingested_at: Millis,
    pub completed_at: Option<Millis>,
    pub seen: bool,
    pub attachments: Vec<AttachmentInfo>,
    pub size: u64,
    pub crm_action: String,
    pub crm_reason: String,
    pub activity: Option<String>,
    pub entities: Vec<EntityRef>,
    /// Why the intake did what it did; `None` for mail stored before decision records.
    pub decision: Option<crate::crm::decision::DecisionRecord>,
}

/// Filters of `GET /emails`.
#[derive(Debug, Clone, Default)]
pub struct EmailFilter {
    pub mailbox: Option<String>,
    pub entity: Option<EntityRef>,
    /// Access: only mail of the agent's personal mailboxes, of company mailboxes of
    /// their queues, and on entities they see.
    pub visible_to: Option<super::access::ListScope>,
}

/// What the server says about a message the store holds, for the two-way sync (E9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFlags {
    pub uid: i64,
    pub seen: bool,
}

/// What the sync decided for the server side: flags to set there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// UIDs to mark `\Seen` on the server (their activity was completed in the CRM).
    /// The store records the new flag once the server took it ([`Store::flags_pushed`]).
    pub set_seen: Vec<i64>,
    /// UIDs to mark unseen (their activity was reopened).
    pub set_unseen: Vec<i64>,
    /// Messages gone from the server whose activity was removed (E9).
    pub removed: usize,
    /// Messages whose `\Seen` changed on the server (their activity followed).
    pub followed: usize,
}

/// What changed on the server since the last flag pass of a folder (RFC 7162), for
/// [`Store::sync_folder_delta`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagDelta {
    /// Messages whose flags changed (or that are new), not `\Deleted`.
    pub changed: Vec<ServerFlags>,
    /// UIDs expunged or marked `\Deleted` since; may name UIDs the store never had.
    pub vanished: Vec<RangeInclusive<i64>>,
}

/// Where the last flag pass of a folder left off, so that the next one reads only what
/// changed (RFC 7162). Void for another UIDVALIDITY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagCheckpoint {
    pub uid_validity: i64,
    /// Every change up to this mod-sequence was read.
    pub highest_modseq: i64,
    /// Without QRESYNC: what the server held when last listed, to find deletions by
    /// position.
    pub known: Option<KnownMessages>,
}

/// `count` messages had a UID up to `top_uid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownMessages {
    pub top_uid: i64,
    pub count: i64,
}

const MAILBOX_COLUMNS: &str = "id, name, kind, owner, address, host, port, security, username, \
     folders, spam_folder, sync_window_days, crm_link, create_leads_incoming, \
     create_leads_outgoing, vcard_contacts, route_to_responsible, blacklist, queue_id, \
     check_every, state, last_error, last_sync_at, created_at, auth, oauth2_provider, \
     oauth2_token_url, oauth2_device_authorization_url, oauth2_client_id, oauth2_scope, \
     CAST(CASE WHEN oauth2_client_secret IS NULL THEN 0 ELSE 1 END AS BIGINT) AS oauth2_secret_set, \
     CAST(CASE WHEN oauth2_refresh_token IS NULL THEN 0 ELSE 1 END AS BIGINT) AS oauth2_refresh_set";

/// The stored side of E9 for one folder and UIDVALIDITY ($1, $2, $3): each message with
/// the completion of its activity.
const SYNC_ROWS: &str = "SELECT e.id, e.uid, e.seen, e.activity_id, a.completed FROM emails e \
     LEFT JOIN activities a ON a.id = e.activity_id WHERE e.mailbox_id = $1 AND e.folder = $2";

/// UIDs per `IN (…)` list: well under the bind limits of SQLite and PostgreSQL.
const UID_CHUNK: usize = 500;

const EMAIL_COLUMNS: &str = "id, mailbox_id, folder, uid, message_id, direction, from_addr, \
     from_name, to_addrs, cc_addrs, subject, received_at, ingested_at, completed_at, seen, \
     attachments, size, crm_action, crm_reason, activity_id, decision";

impl Store {
    pub async fn create_mailbox(&self, new: &NewMailbox) -> Result<MailboxRecord> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        let oauth2 = new.oauth2.as_ref().filter(|_| new.auth == MailAuth::Oauth2);
        self.execute_change(
            sqlx::query(
                "INSERT INTO mailboxes (id, name, kind, owner, address, host, port, security, \
             username, password, folders, spam_folder, sync_window_days, crm_link, \
             create_leads_incoming, create_leads_outgoing, vcard_contacts, \
             route_to_responsible, blacklist, queue_id, check_every, state, created_at, \
             updated_at, auth, oauth2_provider, oauth2_token_url, \
             oauth2_device_authorization_url, oauth2_client_id, oauth2_scope, \
             oauth2_client_secret, oauth2_refresh_token) VALUES ($1, $2, $3, $4, $5, $6, $7, \
             $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, 'connecting', \
             $22, $22, $23, $24, $25, $26, $27, $28, $29, $30)",
            )
            .bind(&id)
            .bind(&new.name)
            .bind(new.kind.as_str())
            .bind(new.owner.as_ref().map(UserId::as_str))
            .bind(new.address.to_lowercase())
            .bind(&new.host)
            .bind(i64::from(new.port))
            .bind(new.security.as_str())
            .bind(&new.username)
            .bind(&new.password)
            .bind(new.folders.as_deref().map(json_list))
            .bind(new.spam_folder.as_deref())
            .bind(new.sync_window_days.map(i64::from))
            .bind(flag(new.crm_link))
            .bind(flag(new.create_leads_incoming))
            .bind(flag(new.create_leads_outgoing))
            .bind(flag(new.vcard_contacts))
            .bind(flag(new.route_to_responsible))
            .bind(json_list(&new.blacklist))
            .bind(new.queue.as_ref().map(QueueId::as_str))
            .bind(new.check.as_str())
            .bind(now)
            .bind(new.auth.as_str())
            .bind(oauth2.and_then(|o| o.provider).map(OAuth2Provider::as_str))
            .bind(oauth2.map(|o| o.token_url.as_str()))
            .bind(oauth2.and_then(|o| o.device_authorization_url.as_deref()))
            .bind(oauth2.map(|o| o.client_id.as_str()))
            .bind(oauth2.map(|o| o.scope.as_str()))
            .bind(oauth2.and_then(|o| o.client_secret.bind().1))
            .bind(oauth2.and_then(|o| o.refresh_token.bind().1)),
            Some(id.as_str()),
        )
        .await
        .map_err(|e| {
            super::on_unique(e, "mailbox_exists", || {
                format!(
                    "the IMAP account {}@{}:{} is already connected",
                    new.username, new.host, new.port
                )
            })
        })?;
        self.get_mailbox(&id).await
    }

    pub async fn get_mailbox(&self, id: &str) -> Result<MailboxRecord> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.reader())
        .await?
        .ok_or_else(|| StoreError::not_found("mailbox", id))?;
        mailbox_from_row(&row)
    }

    pub async fn list_mailboxes(&self, page: &Page) -> Result<Paged<MailboxRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE ($1 = '' OR id > $1) \
             ORDER BY id LIMIT $2"
        )))
        .bind(page.after())
        .bind(page.sql_limit())
        .fetch_all(self.reader())
        .await?;
        let items = rows
            .iter()
            .map(mailbox_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(page.finish(items, |m| m.id.clone()))
    }

    /// Every mailbox, for the pollers.
    pub async fn all_mailboxes(&self) -> Result<Vec<MailboxRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MAILBOX_COLUMNS} FROM mailboxes ORDER BY id"
        )))
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(mailbox_from_row).collect()
    }

    /// Replaces a mailbox's settings; `password: None` keeps the stored one.
    pub async fn update_mailbox(
        &self,
        id: &str,
        new: &NewMailbox,
        password_changed: bool,
    ) -> Result<MailboxRecord> {
        // A password mailbox keeps no OAuth2 client and no OAuth2 secret.
        let oauth2 = new.oauth2.as_ref().filter(|_| new.auth == MailAuth::Oauth2);
        let cleared = SecretUpdate::Clear;
        let client_secret = oauth2.map_or(&cleared, |o| &o.client_secret).bind();
        let refresh_token = oauth2.map_or(&cleared, |o| &o.refresh_token).bind();
        let done = self.execute_change(sqlx::query(
            "UPDATE mailboxes SET name = $2, address = $3, host = $4, port = $5, security = $6, \
             username = $7, password = CASE WHEN $8 = 1 THEN $9 ELSE password END, \
             folders = $10, spam_folder = $11, sync_window_days = $12, crm_link = $13, \
             create_leads_incoming = $14, create_leads_outgoing = $15, vcard_contacts = $16, \
             route_to_responsible = $17, blacklist = $18, queue_id = $19, check_every = $20, \
             updated_at = $21, auth = $22, oauth2_provider = $23, oauth2_token_url = $24, \
             oauth2_device_authorization_url = $25, oauth2_client_id = $26, oauth2_scope = $27, \
             oauth2_client_secret = CASE WHEN $28 = 1 THEN $29 ELSE oauth2_client_secret END, \
             oauth2_refresh_token = CASE WHEN $30 = 1 THEN $31 ELSE oauth2_refresh_token END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(&new.name)
        .bind(new.address.to_lowercase())
        .bind(&new.host)
        .bind(i64::from(new.port))
        .bind(new.security.as_str())
        .bind(&new.username)
        .bind(flag(password_changed))
        .bind(&new.password)
        .bind(new.folders.as_deref().map(json_list))
        .bind(new.spam_folder.as_deref())
        .bind(new.sync_window_days.map(i64::from))
        .bind(flag(new.crm_link))
        .bind(flag(new.create_leads_incoming))
        .bind(flag(new.create_leads_outgoing))
        .bind(flag(new.vcard_contacts))
        .bind(flag(new.route_to_responsible))
        .bind(json_list(&new.blacklist))
        .bind(new.queue.as_ref().map(QueueId::as_str))
        .bind(new.check.as_str())
        .bind(now_ms())
        .bind(new.auth.as_str())
        .bind(oauth2.and_then(|o| o.provider).map(OAuth2Provider::as_str))
        .bind(oauth2.map(|o| o.token_url.as_str()))
        .bind(oauth2.and_then(|o| o.device_authorization_url.as_deref()))
        .bind(oauth2.map(|o| o.client_id.as_str()))
        .bind(oauth2.map(|o| o.scope.as_str()))
        .bind(client_secret.0)
        .bind(client_secret.1)
        .bind(refresh_token.0)
        .bind(refresh_token.1)
        , None)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("mailbox", id));
        }
        self.get_mailbox(id).await
    }

    pub async fn delete_mailbox(&self, id: &str) -> Result<()> {
        let done = self
            .execute_change(
                sqlx::query("DELETE FROM mailboxes WHERE id = $1").bind(id),
                None,
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("mailbox", id));
        }
        Ok(())
    }

    /// The IMAP password, for the poller and the connection test only.
    pub async fn mailbox_password(&self, id: &str) -> Result<String> {
        let row = sqlx::query("SELECT password FROM mailboxes WHERE id = $1")
            .bind(id)
            .fetch_optional(self.reader())
            .await?
            .ok_or_else(|| StoreError::not_found("mailbox", id))?;
        col(&row, "password")
    }

    /// The client secret and refresh token of an OAuth2 mailbox, for the credentials only.
    pub async fn mailbox_oauth2_secrets(&self, id: &str) -> Result<OAuth2Secrets> {
        let row = sqlx::query(
            "SELECT oauth2_client_secret, oauth2_refresh_token FROM mailboxes WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.reader())
        .await?
        .ok_or_else(|| StoreError::not_found("mailbox", id))?;
        Ok(OAuth2Secrets {
            client_secret: col(&row, "oauth2_client_secret")?,
            refresh_token: col(&row, "oauth2_refresh_token")?,
        })
    }

    /// Stores the refresh token `leadline mailbox authorize` obtained.
    pub async fn set_mailbox_refresh_token(&self, id: &str, refresh_token: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE mailboxes SET oauth2_refresh_token = $2, updated_at = $3 \
             WHERE id = $1 AND auth = 'oauth2'",
        )
        .bind(id)
        .bind(refresh_token)
        .bind(now_ms())
        .execute(self.writer())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("OAuth2 mailbox", id));
        }
        Ok(())
    }

    /// A token endpoint that rotates refresh tokens answered a refresh with a new one:
    /// store it, unless the stored token is no longer the one used (someone stored a new
    /// grant meanwhile, which wins). Returns whether it was stored.
    pub async fn rotate_mailbox_refresh_token(
        &self,
        id: &str,
        used: &str,
        new: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE mailboxes SET oauth2_refresh_token = $3 \
             WHERE id = $1 AND oauth2_refresh_token = $2",
        )
        .bind(id)
        .bind(used)
        .bind(new)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// E10: what the mailbox page shows: connected and syncing, idle, or the last error.
    pub async fn set_mailbox_state(
        &self,
        id: &str,
        state: &str,
        last_error: Option<&str>,
    ) -> Result<()> {
        let synced = (state == "idle").then(now_ms);
        sqlx::query(
            "UPDATE mailboxes SET state = $2, last_error = $3, \
             last_sync_at = COALESCE($4, last_sync_at) WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(last_error)
        .bind(synced)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    pub async fn folder_checkpoint(
        &self,
        mailbox: &str,
        folder: &str,
    ) -> Result<Option<FolderCheckpoint>> {
        let row = sqlx::query(
            "SELECT uid_validity, last_uid FROM mail_folders WHERE mailbox_id = $1 AND folder = $2",
        )
        .bind(mailbox)
        .bind(folder)
        .fetch_optional(self.reader())
        .await?;
        row.map(|row| {
            Ok(FolderCheckpoint {
                uid_validity: col(&row, "uid_validity")?,
                last_uid: col(&row, "last_uid")?,
            })
        })
        .transpose()
    }

    pub async fn set_folder_checkpoint(
        &self,
        mailbox: &str,
        folder: &str,
        role: &str,
        checkpoint: FolderCheckpoint,
    ) -> Result<()> {
        let position = FolderPosition {
            mailbox,
            folder,
            role,
            checkpoint,
        };
        write_checkpoint(self.writer(), &position).await
    }

    /// Takes a batch of collected messages into the mail store and the CRM, in one
    /// transaction. A folder position collected before is skipped (restart, replay); a
    /// Message-ID seen before gets no second activity; after a UIDVALIDITY change a
    /// message already stored moves to its new position instead of coming in again.
    pub async fn ingest_emails(&self, emails: &[IncomingEmail]) -> Result<Vec<EmailOutcome>> {
        if emails.is_empty() {
            return Ok(Vec::new());
        }
        super::mail_intake::ingest_batch(self, emails, None).await
    }

    /// [`Store::ingest_emails`] for a batch of one folder, moving the folder's checkpoint
    /// in the same transaction: it never passes a message that is not stored.
    pub async fn ingest_folder_emails(
        &self,
        emails: &[IncomingEmail],
        position: &FolderPosition<'_>,
    ) -> Result<Vec<EmailOutcome>> {
        if emails.is_empty() {
            write_checkpoint(self.writer(), position).await?;
            return Ok(Vec::new());
        }
        super::mail_intake::ingest_batch(self, emails, Some(position)).await
    }

    /// E12: saves one stored message to the CRM by hand (a mailbox with the CRM link
    /// off). Refused when every address on it is an employee's.
    pub async fn save_email(&self, id: &str) -> Result<EmailRecord> {
        let email = self.get_email(id).await?;
        if email.activity.is_some() {
            return Ok(email);
        }
        let snapshot = self.config_snapshot().await?;
        let mut tx = self.writer().begin().await?;
        let (policy, blacklist) = match &email.mailbox {
            Some(mailbox) => load_policy(&mut tx, mailbox, &snapshot.crm).await?,
            None => forward_policy(&snapshot.crm, None),
        };
        let customers: Vec<String> = match email.direction {
            Direction::Incoming => vec![email.from.clone()],
            Direction::Outgoing => email.to.iter().chain(&email.cc).cloned().collect(),
        };
        let identifiers: Vec<Identifier> = customers
            .iter()
            .filter_map(|a| parse_email(a).ok().map(Identifier::Email))
            .collect();
        let matched = match_all(&mut tx, &identifiers).await?;
        if matched
            .iter()
            .all(|m| m.status == crate::matcher::MatchStatus::Excluded)
        {
            return Err(StoreError::Conflict {
                code: "employee_only",
                message: "every address on this message is an employee's or excluded: only \
                          customer mail goes to the CRM (E12)"
                    .into(),
            });
        }
        let settings = IntakeSettings {
            crm: &snapshot.crm,
            queues: &snapshot.queues,
            pipelines: &snapshot.pipelines,
        };
        let queues: Vec<&QueueId> = policy
            .queue
            .iter()
            .filter(|q| snapshot.queues.contains_key(*q))
            .collect();
        let looked = Looked::for_customers(&mut tx, &customers, &queues).await?;
        let facts = EmailFacts {
            direction: email.direction,
            subject: &email.subject,
            message_id: email.message_id.as_deref(),
            seen: email.seen,
            received_at: email.received_at,
        };
        let now = now_ms();
        let mut planner = Planner::new(&looked, &settings, None);
        let mut decided = planner.decide(&facts, &customers, &policy, &blacklist, true, now)?;
        match planner.take_turns(&mut tx).await? {
            Turns::Taken => {}
            Turns::Moved(rotations) => {
                planner = Planner::new(&looked, &settings, Some(&rotations));
                decided = planner.decide(&facts, &customers, &policy, &blacklist, true, now)?;
            }
            Turns::LostRace(err) => return Err(err),
        }
        planner.write(&mut tx).await??;
        let (activity, created, reason) = (decided.activity, decided.created, decided.reason);
        let record = crate::crm::decision::DecisionRecord {
            outcome: format!("saved by hand (E12): {}", decided.record.outcome),
            ..decided.record
        };
        sqlx::query(
            "UPDATE emails SET crm_action = $2, crm_reason = $3, created_entities = $4, \
             activity_id = $5, decision = $6 WHERE id = $1",
        )
        .bind(&email.id)
        .bind(if created.is_empty() {
            "attached"
        } else {
            "created"
        })
        .bind(format!("saved by hand (E12): {reason}"))
        .bind(json_list(
            &created.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ))
        .bind(activity.as_deref())
        .bind(record.to_json())
        .execute(&mut *tx)
        .await?;
        self.commit_change(tx, None).await?;
        self.get_email(id).await
    }

    pub async fn get_email(&self, id: &str) -> Result<EmailRecord> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EMAIL_COLUMNS} FROM emails WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.reader())
        .await?
        .ok_or_else(|| StoreError::not_found("email", id))?;
        let mut email = email_from_row(&row)?;
        self.fill_entities(std::slice::from_mut(&mut email)).await?;
        Ok(email)
    }

    pub async fn email_raw(&self, id: &str) -> Result<Vec<u8>> {
        let row = sqlx::query("SELECT raw FROM emails WHERE id = $1")
            .bind(id)
            .fetch_optional(self.reader())
            .await?
            .ok_or_else(|| StoreError::not_found("email", id))?;
        col(&row, "raw")
    }

    /// The mail store, newest first.
    pub async fn list_emails(
        &self,
        filter: &EmailFilter,
        page: &Page,
    ) -> Result<Paged<EmailRecord>> {
        let mut query = super::rows::FilteredPage::new(
            format!("SELECT {EMAIL_COLUMNS} FROM emails e WHERE ($1 = '' OR e.id < $1)"),
            page.after(),
        );
        if let Some(mailbox) = &filter.mailbox {
            query.and("e.mailbox_id = $?", mailbox.clone());
        }
        if let Some(entity) = &filter.entity {
            let kind = query.bind(entity.kind.as_str().to_owned());
            let id = query.bind(entity.id.clone());
            query.and_clause(&format!(
                "e.activity_id IN (SELECT activity_id FROM activity_entities \
                 WHERE entity_kind = {kind} AND entity_id = {id})"
            ));
        }
        if let Some(scope) = &filter.visible_to {
            let me = query.bind(scope.me.to_string());
            let on_entities = super::access::activity_in_scope(
                &mut query,
                "activity_entities ae WHERE ae.activity_id = e.activity_id",
                scope.responsibles.as_deref(),
            );
            query.and_clause(&format!(
                "e.mailbox_id IN (SELECT m.id FROM mailboxes m WHERE m.kind = 'personal' \
                 AND m.owner = {me}) \
                 OR (e.activity_id IS NULL AND e.mailbox_id IN (SELECT m.id FROM mailboxes m \
                 JOIN queue_members qm ON qm.queue_id = m.queue_id \
                 WHERE m.kind = 'company' AND qm.user_id = {me})) \
                 OR {on_entities}"
            ));
        }
        let rows = query.fetch("e.id DESC", page, self.reader()).await?;
        let mut items = rows
            .iter()
            .map(email_from_row)
            .collect::<Result<Vec<_>>>()?;
        self.fill_entities(&mut items).await?;
        Ok(page.finish(items, |e| e.id.clone()))
    }

    async fn fill_entities(&self, emails: &mut [EmailRecord]) -> Result<()> {
        for email in emails.iter_mut() {
            if let Some(activity) = &email.activity {
                email.entities =
                    super::activities::activity_entities(self.reader(), activity).await?;
            }
        }
        Ok(())
    }

    /// E9, both ways, for one folder: what the server says against what the store last
    /// saw and what the CRM did since. A flag that changed on the server completes or
    /// reopens the activity; an activity completed or reopened in the CRM is pushed to
    /// the server (the returned plan); a message gone from the server takes its activity
    /// with it when it was unseen, and the lead it created when untouched.
    ///
    /// `server` is every message on the server that is not `\Deleted`. `checkpoint` is
    /// recorded with the outcome for the next pass to read only what changed (none: it
    /// reads everything again).
    pub async fn sync_folder(
        &self,
        mailbox: &str,
        folder: &str,
        uid_validity: i64,
        server: &[ServerFlags],
        checkpoint: Option<FlagCheckpoint>,
    ) -> Result<SyncPlan> {
        let on_server: HashMap<i64, bool> = server.iter().map(|f| (f.uid, f.seen)).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SYNC_ROWS} AND e.uid_validity = $3"
        )))
        .bind(mailbox)
        .bind(folder)
        .bind(uid_validity)
        .fetch_all(self.reader())
        .await?;
        let view = ServerView::Full(&on_server);
        self.apply_flag_sync(mailbox, folder, &rows, view, checkpoint)
            .await
    }

    /// [`Store::sync_folder`] from what changed on the server since `checkpoint`'s
    /// predecessor (RFC 7162): the same decisions, reading only the messages the delta
    /// names and those the CRM changed.
    pub async fn sync_folder_delta(
        &self,
        mailbox: &str,
        folder: &str,
        uid_validity: i64,
        delta: &FlagDelta,
        checkpoint: FlagCheckpoint,
    ) -> Result<SyncPlan> {
        /// Past this many UID ranges one read of the folder beats a long OR.
        const MAX_RANGES: usize = 100;
        let changed: HashMap<i64, bool> = delta.changed.iter().map(|f| (f.uid, f.seen)).collect();
        let vanished = merge_ranges(delta.vanished.clone());
        let touched = merge_ranges(
            delta
                .changed
                .iter()
                .map(|f| f.uid..=f.uid)
                .chain(vanished.iter().cloned())
                .collect(),
        );
        // The CRM's changes are the rows whose activity no longer matches the flag.
        let mut sql = format!("{SYNC_ROWS} AND e.uid_validity = $3 AND (a.completed <> e.seen");
        let few = touched.len() <= MAX_RANGES;
        if few {
            for i in 0..touched.len() {
                sql.push_str(&format!(
                    " OR e.uid BETWEEN ${} AND ${}",
                    4 + 2 * i,
                    5 + 2 * i
                ));
            }
        } else {
            sql.push_str(" OR 1 = 1");
        }
        sql.push(')');
        // Placeholders only: the UIDs are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(mailbox)
            .bind(folder)
            .bind(uid_validity);
        if few {
            for range in &touched {
                query = query.bind(*range.start()).bind(*range.end());
            }
        }
        let rows = query.fetch_all(self.reader()).await?;
        let view = ServerView::Delta {
            changed: &changed,
            vanished: &vanished,
        };
        self.apply_flag_sync(mailbox, folder, &rows, view, Some(checkpoint))
            .await
    }

    /// Applies E9's decision ([`mail_flags::decide`]) to each row of [`SYNC_ROWS`] and
    /// records the flag checkpoint, in one transaction.
    async fn apply_flag_sync(
        &self,
        mailbox: &str,
        folder: &str,
        rows: &[AnyRow],
        view: ServerView<'_>,
        checkpoint: Option<FlagCheckpoint>,
    ) -> Result<SyncPlan> {
        let mut plan = SyncPlan::default();
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        for row in rows {
            let id: String = col(row, "id")?;
            let uid: i64 = col(row, "uid")?;
            let stored_seen = col::<i64>(row, "seen")? != 0;
            let activity: Option<String> = col(row, "activity_id")?;
            let completed = col::<Option<i64>>(row, "completed")?.map(|c| c != 0);
            match mail_flags::decide(stored_seen, completed, view.on_server(uid, stored_seen)) {
                FlagSync::Keep => {}
                FlagSync::Remove => {
                    remove_email(&mut tx, &id, stored_seen, activity.as_deref()).await?;
                    plan.removed += 1;
                }
                FlagSync::FollowServer(seen) => {
                    sqlx::query("UPDATE emails SET seen = $2, completed_at = $3 WHERE id = $1")
                        .bind(&id)
                        .bind(flag(seen))
                        .bind(seen.then_some(now))
                        .execute(&mut *tx)
                        .await?;
                    if let Some(activity) = &activity {
                        set_activity_completed(&mut tx, activity, seen, now).await?;
                    }
                    plan.followed += 1;
                }
                // The stored flag stays what the server has until the server took the
                // change: a push that is lost or refused is not mistaken for a change
                // on the server, and is tried again.
                FlagSync::PushToServer(true) => plan.set_seen.push(uid),
                FlagSync::PushToServer(false) => plan.set_unseen.push(uid),
            }
        }
        let known = checkpoint.and_then(|c| c.known);
        sqlx::query(
            "UPDATE mail_folders SET flags_uid_validity = $3, highest_modseq = $4, \
             known_uid = $5, known_count = $6 WHERE mailbox_id = $1 AND folder = $2",
        )
        .bind(mailbox)
        .bind(folder)
        .bind(checkpoint.map(|c| c.uid_validity))
        .bind(checkpoint.map(|c| c.highest_modseq))
        .bind(known.map(|k| k.top_uid))
        .bind(known.map(|k| k.count))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(plan)
    }

    /// Where the last flag pass of `folder` left off; none when it read nothing to go on
    /// from.
    pub async fn flag_checkpoint(
        &self,
        mailbox: &str,
        folder: &str,
    ) -> Result<Option<FlagCheckpoint>> {
        let row = sqlx::query(
            "SELECT flags_uid_validity, highest_modseq, known_uid, known_count \
             FROM mail_folders WHERE mailbox_id = $1 AND folder = $2",
        )
        .bind(mailbox)
        .bind(folder)
        .fetch_optional(self.reader())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let validity: Option<i64> = col(&row, "flags_uid_validity")?;
        let modseq: Option<i64> = col(&row, "highest_modseq")?;
        let known_uid: Option<i64> = col(&row, "known_uid")?;
        let known_count: Option<i64> = col(&row, "known_count")?;
        Ok(validity
            .zip(modseq)
            .map(|(uid_validity, highest_modseq)| FlagCheckpoint {
                uid_validity,
                highest_modseq,
                known: known_uid
                    .zip(known_count)
                    .map(|(top_uid, count)| KnownMessages { top_uid, count }),
            }))
    }

    /// The server took a planned push (E9): the stored flag of `uids` is now `seen`.
    pub async fn flags_pushed(
        &self,
        mailbox: &str,
        folder: &str,
        uid_validity: i64,
        uids: &[i64],
        seen: bool,
    ) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        for chunk in uids.chunks(UID_CHUNK) {
            let sql = format!(
                "UPDATE emails SET seen = $4 WHERE mailbox_id = $1 AND folder = $2 \
                 AND uid_validity = $3 AND uid IN ({})",
                placeholders(5, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(mailbox)
                .bind(folder)
                .bind(uid_validity)
                .bind(flag(seen));
            for uid in chunk {
                query = query.bind(*uid);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The server refused a planned push (a read-only folder): the activities of `uids`
    /// follow the server's flag instead, which the store still holds, so the two sides
    /// agree again and the push is not tried for ever.
    pub async fn flags_refused(
        &self,
        mailbox: &str,
        folder: &str,
        uid_validity: i64,
        uids: &[i64],
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        for chunk in uids.chunks(UID_CHUNK) {
            let sql = format!(
                "SELECT activity_id, seen FROM emails WHERE mailbox_id = $1 AND folder = $2 \
                 AND uid_validity = $3 AND activity_id IS NOT NULL AND uid IN ({})",
                placeholders(4, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(mailbox)
                .bind(folder)
                .bind(uid_validity);
            for uid in chunk {
                query = query.bind(*uid);
            }
            for row in query.fetch_all(&mut *tx).await? {
                let activity: String = col(&row, "activity_id")?;
                let seen = col::<i64>(&row, "seen")? != 0;
                set_activity_completed(&mut tx, &activity, seen, now).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// M6: every address on the company's side: employees' logins and connected
    /// mailboxes.
    pub async fn insider_addresses(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT email AS address FROM users WHERE email IS NOT NULL \
             UNION SELECT address FROM mailboxes",
        )
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(|row| col(row, "address")).collect()
    }

    /// Every address on the company's side with the employee it belongs to: employees'
    /// logins, and connected mailboxes (a personal one is its owner's, a company one
    /// nobody's). E16 reads whose customer a forwarded message is from it.
    pub async fn staff_addresses(&self) -> Result<Vec<(String, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT email AS address, id AS user_id FROM users WHERE email IS NOT NULL \
             UNION ALL SELECT address, owner AS user_id FROM mailboxes",
        )
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| Ok((col(row, "address")?, col(row, "user_id")?)))
            .collect()
    }

    /// E16: the secret of the account's forward address, made on first use.
    pub async fn forward_secret(&self) -> Result<String> {
        let read = |row: Option<AnyRow>| row.map(|r| col::<String>(&r, "value")).transpose();
        let select = "SELECT value FROM settings WHERE key = 'forward_secret'";
        if let Some(secret) = read(sqlx::query(select).fetch_optional(self.reader()).await?)? {
            return Ok(secret);
        }
        // 96 random bits, lower-case so that the address survives case-folding MTAs.
        let secret: String = {
            use rand::Rng as _;
            let mut rng = rand::rng();
            (0..20)
                .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz234567"[rng.random_range(0..32)]))
                .collect()
        };
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ('forward_secret', $1, $2) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(&secret)
        .bind(now_ms())
        .execute(self.writer())
        .await?;
        read(sqlx::query(select).fetch_optional(self.writer()).await?)?
            .ok_or_else(|| StoreError::Corrupt("settings.forward_secret".into()))
    }

    /// E16: `crm-<secret>@<domain>`.
    pub async fn forward_address(&self, domain: &str) -> Result<String> {
        Ok(format!("crm-{}@{domain}", self.forward_secret().await?))
    }

    /// Completes or reopens an activity (E9: an e-mail's activity is mirrored to the
    /// server's `\Seen` by the next sync).
    pub async fn set_activity_done(&self, id: &str, completed: bool) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        let found = sqlx::query("SELECT id FROM activities WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            return Err(StoreError::not_found("activity", id));
        }
        set_activity_completed(&mut tx, id, completed, now_ms()).await?;
        self.commit_change(tx, None).await?;
        Ok(())
    }
}

/// E9: deleting an unseen message deletes its activity (unless a copy elsewhere still
/// holds it), and the lead it created if that lead is untouched and has no other
/// activity. A seen message leaves its completed activity in the history.
async fn remove_email(tx: &mut Tx<'_>, id: &str, seen: bool, activity: Option<&str>) -> Result<()> {
    let created: Option<String> = sqlx::query("SELECT created_entities FROM emails WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|row| col(&row, "created_entities"))
        .transpose()?;
    sqlx::query("DELETE FROM emails WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let Some(activity) = activity.filter(|_| !seen) else {
        return Ok(());
    };
    let copies = sqlx::query("SELECT id FROM emails WHERE activity_id = $1")
        .bind(activity)
        .fetch_optional(&mut **tx)
        .await?;
    if copies.is_some() {
        return Ok(());
    }
    sqlx::query("DELETE FROM activities WHERE id = $1")
        .bind(activity)
        .execute(&mut **tx)
        .await?;
    for entity in parse_json_list(&created.unwrap_or_default(), "emails.created_entities")? {
        let Ok(entity) = entity.parse::<EntityRef>() else {
            continue;
        };
        if entity.kind != EntityKind::Lead {
            continue;
        }
        let untouched = sqlx::query(
            "SELECT l.id FROM leads l WHERE l.id = $1 AND l.updated_at = l.created_at \
             AND NOT EXISTS (SELECT 1 FROM activity_entities ae WHERE ae.entity_kind = 'lead' \
             AND ae.entity_id = l.id)",
        )
        .bind(entity.id.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        if untouched.is_some() {
            sqlx::query(
                "DELETE FROM identifier_owners WHERE entity_kind = 'lead' AND entity_id = $1",
            )
            .bind(entity.id.as_str())
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "DELETE FROM entity_identifiers WHERE entity_kind = 'lead' AND entity_id = $1",
            )
            .bind(entity.id.as_str())
            .execute(&mut **tx)
            .await?;
            sqlx::query("DELETE FROM leads WHERE id = $1")
                .bind(entity.id.as_str())
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

async fn set_activity_completed(
    tx: &mut Tx<'_>,
    activity: &str,
    completed: bool,
    now: Millis,
) -> Result<()> {
    sqlx::query("UPDATE activities SET completed = $2, completed_at = $3 WHERE id = $1")
        .bind(activity)
        .bind(flag(completed))
        .bind(completed.then_some(now))
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE emails SET completed_at = $2 WHERE activity_id = $1")
        .bind(activity)
        .bind(completed.then_some(now))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) fn email_subject(direction: Direction, subject: &str) -> String {
    let subject = if subject.trim().is_empty() {
        "(no subject)"
    } else {
        subject.trim()
    };
    match direction {
        Direction::Incoming => format!("E-mail received: {subject}"),
        Direction::Outgoing => format!("E-mail sent: {subject}"),
    }
}

pub(super) async fn load_policy(
    tx: &mut Tx<'_>,
    mailbox: &str,
    crm: &crate::crm::model::CrmSettings,
) -> Result<(MailboxPolicy, Exclusions)> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = $1"
    )))
    .bind(mailbox)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::not_found("mailbox", mailbox))?;
    let record = mailbox_from_row(&row)?;
    let blacklist = crate::crm::mail::blacklist(&record.blacklist);
    Ok((
        MailboxPolicy {
            id: record.id,
            name: record.name,
            crm_link: record.crm_link,
            create_leads_incoming: record.create_leads_incoming,
            create_leads_outgoing: record.create_leads_outgoing,
            route_to_responsible: record.route_to_responsible,
            queue: record.queue,
            new_work_to_owner: false,
            owner: record.owner,
            default_country: crm.default_country,
        },
        blacklist,
    ))
}

/// E16: the forward address belongs to the account: what a message creates is the
/// employee's it came through, else nobody's.
pub(super) fn forward_policy(
    crm: &crate::crm::model::CrmSettings,
    employee: Option<UserId>,
) -> (MailboxPolicy, Exclusions) {
    (
        MailboxPolicy {
            id: "forward".into(),
            name: "the forward address".into(),
            crm_link: true,
            create_leads_incoming: true,
            create_leads_outgoing: true,
            route_to_responsible: false,
            queue: None,
            new_work_to_owner: employee.is_some(),
            owner: employee,
            default_country: crm.default_country,
        },
        Exclusions::default(),
    )
}

pub(super) async fn write_checkpoint<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    position: &FolderPosition<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO mail_folders (mailbox_id, folder, role, uid_validity, last_uid) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (mailbox_id, folder) DO UPDATE SET \
         role = excluded.role, uid_validity = excluded.uid_validity, \
         last_uid = excluded.last_uid",
    )
    .bind(position.mailbox)
    .bind(position.folder)
    .bind(position.role)
    .bind(position.checkpoint.uid_validity)
    .bind(position.checkpoint.last_uid)
    .execute(executor)
    .await?;
    Ok(())
}

fn mailbox_from_row(row: &AnyRow) -> Result<MailboxRecord> {
    let folders: Option<String> = col(row, "folders")?;
    let port: i64 = col(row, "port")?;
    Ok(MailboxRecord {
        id: col(row, "id")?,
        name: col(row, "name")?,
        kind: parse_stored(&col::<String>(row, "kind")?, "mailboxes.kind")?,
        owner: col::<Option<String>>(row, "owner")?.map(UserId),
        address: col(row, "address")?,
        host: col(row, "host")?,
        port: u16::try_from(port).map_err(|_| StoreError::Corrupt("mailboxes.port".into()))?,
        security: parse_stored(&col::<String>(row, "security")?, "mailboxes.security")?,
        username: col(row, "username")?,
        auth: parse_stored(&col::<String>(row, "auth")?, "mailboxes.auth")?,
        oauth2: oauth2_from_row(row)?,
        folders: folders
            .map(|f| parse_json_list(&f, "mailboxes.folders"))
            .transpose()?,
        spam_folder: col(row, "spam_folder")?,
        sync_window_days: col::<Option<i64>>(row, "sync_window_days")?
            .and_then(|d| u32::try_from(d).ok()),
        crm_link: col::<i64>(row, "crm_link")? != 0,
        create_leads_incoming: col::<i64>(row, "create_leads_incoming")? != 0,
        create_leads_outgoing: col::<i64>(row, "create_leads_outgoing")? != 0,
        vcard_contacts: col::<i64>(row, "vcard_contacts")? != 0,
        route_to_responsible: col::<i64>(row, "route_to_responsible")? != 0,
        blacklist: parse_json_list(&col::<String>(row, "blacklist")?, "mailboxes.blacklist")?,
        queue: col::<Option<String>>(row, "queue_id")?.map(QueueId),
        check: parse_stored(&col::<String>(row, "check_every")?, "mailboxes.check_every")?,
        state: col(row, "state")?,
        last_error: col(row, "last_error")?,
        last_sync_at: col(row, "last_sync_at")?,
        created_at: col(row, "created_at")?,
    })
}

fn oauth2_from_row(row: &AnyRow) -> Result<Option<OAuth2Settings>> {
    let (Some(token_url), Some(client_id), Some(scope)) = (
        col::<Option<String>>(row, "oauth2_token_url")?,
        col::<Option<String>>(row, "oauth2_client_id")?,
        col::<Option<String>>(row, "oauth2_scope")?,
    ) else {
        return Ok(None);
    };
    Ok(Some(OAuth2Settings {
        provider: col::<Option<String>>(row, "oauth2_provider")?
            .map(|p| parse_stored(&p, "mailboxes.oauth2_provider"))
            .transpose()?,
        token_url,
        device_authorization_url: col(row, "oauth2_device_authorization_url")?,
        client_id,
        scope,
        client_secret_set: col::<i64>(row, "oauth2_secret_set")? != 0,
        refresh_token_set: col::<i64>(row, "oauth2_refresh_set")? != 0,
    }))
}

fn email_from_row(row: &AnyRow) -> Result<EmailRecord> {
    let attachments: String = col(row, "attachments")?;
    Ok(EmailRecord {
        id: col(row, "id")?,
        mailbox: col(row, "mailbox_id")?,
        folder: col(row, "folder")?,
        uid: col(row, "uid")?,
        message_id: col(row, "message_id")?,
        direction: parse_stored(&col::<String>(row, "direction")?, "emails.direction")?,
        from: col(row, "from_addr")?,
        from_name: col(row, "from_name")?,
        to: parse_json_list(&col::<String>(row, "to_addrs")?, "emails.to_addrs")?,
        cc: parse_json_list(&col::<String>(row, "cc_addrs")?, "emails.cc_addrs")?,
        subject: col(row, "subject")?,
        received_at: col(row, "received_at")?,
        ingested_at: col(row, "ingested_at")?,
        completed_at: col(row, "completed_at")?,
        seen: col::<i64>(row, "seen")? != 0,
        attachments: serde_json::from_str(&attachments)
            .map_err(|e| StoreError::Corrupt(format!("emails.attachments: {e}")))?,
        size: u64::try_from(col::<i64>(row, "size")?).unwrap_or(0),
        crm_action: col(row, "crm_action")?,
        crm_reason: col(row, "crm_reason")?,
        activity: col(row, "activity_id")?,
        entities: Vec::new(),
        decision: crate::crm::decision::DecisionRecord::from_stored(
            col::<Option<String>>(row, "decision")?.as_deref(),
        ),
    })
}
