//! Console sign-in: people's password hashes, their sessions, and the first admin's set-up.
//!
//! Sessions are looked up on every cookie-authenticated request and not cached: ending
//! one (sign-out, a deleted person, a new role or password) takes effect at the next
//! request, in every process sharing the database.

use sqlx::any::AnyRow;

use super::{Result, Store, StoreError, UserRecord, col, now_ms, on_unique, parse_stored};
use crate::crm::model::{Millis, Role, UserId};
use crate::session::{EndSessions, SessionTimes};

/// A session to store at sign-in.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// SHA-256 of the cookie's token.
    pub token_hash: String,
    pub user: UserId,
    pub times: SessionTimes,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
}

/// A stored session with its person's current role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub user: UserId,
    pub role: Role,
    pub times: SessionTimes,
}

/// What signing in as an e-mail needs: whose it is and their password hash, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: UserId,
    pub password_hash: Option<String>,
}

/// Longest `user_agent` kept: enough to tell browsers apart, and no more of what any
/// client may write.
const MAX_USER_AGENT: usize = 256;

/// The `settings` row the first admin's set-up locks, so two set-ups at once (two
/// processes on PostgreSQL) cannot both create an admin.
const SETUP_LOCK: &str = "first_admin_setup";

impl Store {
    /// The person with this (lower-cased) e-mail and their password hash.
    pub async fn credentials(&self, email: &str) -> Result<Option<Credentials>> {
        let row = sqlx::query("SELECT id, password_hash FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(self.reader())
            .await?;
        row.map(|row| {
            Ok(Credentials {
                user: UserId(col(&row, "id")?),
                password_hash: col(&row, "password_hash")?,
            })
        })
        .transpose()
    }

    /// Stores a session; a sign-in's audit row goes in its transaction.
    pub async fn create_session(&self, new: &NewSession) -> Result<()> {
        let user_agent = new
            .user_agent
            .as_deref()
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect::<String>());
        let insert = sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at, \
             remote_addr, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new.token_hash.clone())
        .bind(new.user.as_str().to_owned())
        .bind(new.times.created_at)
        .bind(new.times.last_seen_at)
        .bind(new.times.expires_at)
        .bind(new.remote_addr.clone())
        .bind(user_agent);
        self.execute_change(insert, None).await?;
        Ok(())
    }

    /// The session with this token hash, whether or not it is still live (the caller
    /// decides with `session::liveness`).
    pub async fn session(&self, token_hash: &str) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT s.user_id, u.role, s.created_at, s.last_seen_at, s.expires_at \
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// Records that the session was used at `now` (sliding idle end).
    pub async fn touch_session(&self, token_hash: &str, now: Millis) -> Result<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE token_hash = $1")
            .bind(token_hash)
            .bind(now)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Ends one session; `false` if there was none. A sign-out's audit row goes in its
    /// transaction.
    pub async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        let delete = sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash);
        let done = self.execute_change(delete, None).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes the sessions over at `now` (idle since `idle_cutoff` or past their end).
    pub async fn delete_expired_sessions(&self, now: Millis, idle_cutoff: Millis) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
            .bind(now)
            .bind(idle_cutoff)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected())
    }

    /// How many sessions a person has (live or not yet swept).
    pub async fn session_count(&self, user: &UserId) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_one(self.reader())
            .await?;
        col(&row, "n")
    }

    /// Whether some admin can sign in (then the first-start set-up is done).
    pub async fn admin_can_sign_in(&self) -> Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM users WHERE role = 'admin' AND password_hash IS NOT NULL",
        )
        .fetch_one(self.reader())
        .await?;
        Ok(col::<i64>(&row, "n")? > 0)
    }

    /// First start: an admin who can sign in, created with `email` or, if an admin with
    /// that e-mail has no password yet, given this one. `already_set_up` (conflict) once
    /// any admin has a password; `user_exists` if the e-mail is an agent's.
    pub async fn set_up_first_admin(
        &self,
        name: &str,
        email: &str,
        password_hash: &str,
    ) -> Result<UserRecord> {
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        // Taken first: a second set-up waits here for the first to commit, then sees its
        // admin below (PostgreSQL locks the row; SQLite has one writer anyway).
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, '{}', $2) \
             ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at",
        )
        .bind(SETUP_LOCK)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "SELECT COUNT(*) AS n FROM users WHERE role = 'admin' AND password_hash IS NOT NULL",
        )
        .fetch_one(&mut *tx)
        .await?;
        if col::<i64>(&done, "n")? > 0 {
            return Err(StoreError::Conflict {
                code: "already_set_up",
                message: "an admin can sign in already: sign in, or ask them to add you".to_owned(),
            });
        }
        let existing = sqlx::query("SELECT id, role FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&mut *tx)
            .await?;
        let id = match existing {
            Some(row) => {
                let role: String = col(&row, "role")?;
                if parse_stored::<Role>(&role, "users.role")? != Role::Admin {
                    return Err(StoreError::Conflict {
                        code: "user_exists",
                        message: format!(
                            "{email} belongs to an agent: set up the admin with another e-mail"
                        ),
                    });
                }
                let id = UserId(col(&row, "id")?);
                sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
                    .bind(id.as_str())
                    .bind(password_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                id
            }
            None => {
                let id = UserId::generate();
                sqlx::query(
                    "INSERT INTO users (id, name, email, role, password_hash, created_at, \
                     updated_at) VALUES ($1, $2, $3, 'admin', $4, $5, $5)",
                )
                .bind(id.as_str())
                .bind(name)
                .bind(email)
                .bind(password_hash)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    on_unique(e, "user_exists", || {
                        format!("a user with e-mail {email} already exists")
                    })
                })?;
                id
            }
        };
        self.commit_change(tx, None).await?;
        self.get_user(&id).await
    }
}

/// Ends the sessions a change to `user` ends, inside the change's transaction.
pub(crate) async fn end_sessions(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user: &UserId,
    end: &EndSessions,
) -> Result<()> {
    let keep = match end {
        EndSessions::None => return Ok(()),
        EndSessions::All => "",
        EndSessions::AllBut(own) => own.as_str(),
    };
    sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
        .bind(user.as_str())
        .bind(keep)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn session_from_row(row: &AnyRow) -> Result<SessionRecord> {
    let role: String = col(row, "role")?;
    Ok(SessionRecord {
        user: UserId(col(row, "user_id")?),
        role: parse_stored(&role, "users.role")?,
        times: SessionTimes {
            created_at: col(row, "created_at")?,
            last_seen_at: col(row, "last_seen_at")?,
            expires_at: col(row, "expires_at")?,
        },
    })
}
