//! The mail side of the store: connected mailboxes and their folder checkpoints, the
//! mail store, and the intake of collected messages (E1–E16) through the shared matcher
//! and `crm::mail::decide_mail`, one transaction per batch of messages.

use sqlx::any::AnyRow;

use super::entities::Tx;
use super::mail_intake::{EmailFacts, IntakeSettings, Looked, Planner, Turns};
use super::matching::match_all;
use super::{
    Page, Paged, Result, Store, StoreError, col, flag, json_list, now_ms, parse_json_list,
    parse_stored,
};
use crate::crm::mail::MailboxPolicy;
use crate::crm::model::{
    Direction, EntityKind, EntityRef, MailCheck, MailSecurity, MailboxKind, Millis, QueueId, UserId,
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
    Forward,
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
    pub set_seen: Vec<i64>,
    /// UIDs to mark unseen (their activity was reopened).
    pub set_unseen: Vec<i64>,
    /// Messages gone from the server whose activity was removed (E9).
    pub removed: usize,
}

const MAILBOX_COLUMNS: &str = "id, name, kind, owner, address, host, port, security, username, \
     folders, spam_folder, sync_window_days, crm_link, create_leads_incoming, \
     create_leads_outgoing, vcard_contacts, route_to_responsible, blacklist, queue_id, \
     check_every, state, last_error, last_sync_at, created_at";

const EMAIL_COLUMNS: &str = "id, mailbox_id, folder, uid, message_id, direction, from_addr, \
     from_name, to_addrs, cc_addrs, subject, received_at, ingested_at, completed_at, seen, \
     attachments, size, crm_action, crm_reason, activity_id";

impl Store {
    pub async fn create_mailbox(&self, new: &NewMailbox) -> Result<MailboxRecord> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO mailboxes (id, name, kind, owner, address, host, port, security, \
             username, password, folders, spam_folder, sync_window_days, crm_link, \
             create_leads_incoming, create_leads_outgoing, vcard_contacts, \
             route_to_responsible, blacklist, queue_id, check_every, state, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             $15, $16, $17, $18, $19, $20, $21, 'connecting', $22, $22)",
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
        .execute(self.writer())
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
        let done = sqlx::query(
            "UPDATE mailboxes SET name = $2, address = $3, host = $4, port = $5, security = $6, \
             username = $7, password = CASE WHEN $8 = 1 THEN $9 ELSE password END, \
             folders = $10, spam_folder = $11, sync_window_days = $12, crm_link = $13, \
             create_leads_incoming = $14, create_leads_outgoing = $15, vcard_contacts = $16, \
             route_to_responsible = $17, blacklist = $18, queue_id = $19, check_every = $20, \
             updated_at = $21 WHERE id = $1",
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
        .execute(self.writer())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("mailbox", id));
        }
        self.get_mailbox(id).await
    }

    pub async fn delete_mailbox(&self, id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM mailboxes WHERE id = $1")
            .bind(id)
            .execute(self.writer())
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
            None => forward_policy(&snapshot.crm),
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
        sqlx::query(
            "UPDATE emails SET crm_action = $2, crm_reason = $3, created_entities = $4, \
             activity_id = $5 WHERE id = $1",
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
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
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
    pub async fn sync_folder(
        &self,
        mailbox: &str,
        folder: &str,
        uid_validity: i64,
        server: &[ServerFlags],
    ) -> Result<SyncPlan> {
        let on_server: std::collections::HashMap<i64, bool> =
            server.iter().map(|f| (f.uid, f.seen)).collect();
        let rows = sqlx::query(
            "SELECT e.id, e.uid, e.seen, e.activity_id, a.completed FROM emails e \
             LEFT JOIN activities a ON a.id = e.activity_id \
             WHERE e.mailbox_id = $1 AND e.folder = $2 AND e.uid_validity = $3",
        )
        .bind(mailbox)
        .bind(folder)
        .bind(uid_validity)
        .fetch_all(self.reader())
        .await?;
        let mut plan = SyncPlan::default();
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        for row in &rows {
            let id: String = col(row, "id")?;
            let uid: i64 = col(row, "uid")?;
            let stored_seen = col::<i64>(row, "seen")? != 0;
            let activity: Option<String> = col(row, "activity_id")?;
            let completed = col::<Option<i64>>(row, "completed")?.map(|c| c != 0);
            match on_server.get(&uid) {
                None => {
                    remove_email(&mut tx, &id, stored_seen, activity.as_deref()).await?;
                    plan.removed += 1;
                }
                Some(&seen) if seen != stored_seen => {
                    // Changed on the server: the activity follows.
                    sqlx::query("UPDATE emails SET seen = $2, completed_at = $3 WHERE id = $1")
                        .bind(&id)
                        .bind(flag(seen))
                        .bind(seen.then_some(now))
                        .execute(&mut *tx)
                        .await?;
                    if let Some(activity) = &activity {
                        set_activity_completed(&mut tx, activity, seen, now).await?;
                    }
                }
                Some(&seen) => {
                    // Changed in the CRM: the server follows.
                    if let Some(completed) = completed
                        && completed != seen
                    {
                        if completed {
                            plan.set_seen.push(uid);
                        } else {
                            plan.set_unseen.push(uid);
                        }
                        sqlx::query("UPDATE emails SET seen = $2, completed_at = $3 WHERE id = $1")
                            .bind(&id)
                            .bind(flag(completed))
                            .bind(completed.then_some(now))
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(plan)
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
        tx.commit().await?;
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
            owner: record.owner,
            default_country: crm.default_country,
        },
        blacklist,
    ))
}

/// E16: the forward address belongs to the account: leads for unknown customers go to
/// the account's default queue rules (none: nobody responsible).
pub(super) fn forward_policy(crm: &crate::crm::model::CrmSettings) -> (MailboxPolicy, Exclusions) {
    (
        MailboxPolicy {
            id: "forward".into(),
            name: "the forward address".into(),
            crm_link: true,
            create_leads_incoming: true,
            create_leads_outgoing: true,
            route_to_responsible: false,
            queue: None,
            owner: None,
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
    })
}
