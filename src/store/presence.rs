//! Employees' presence: whether they take queue calls now (`available`, `paused` with a
//! reason, `offline`). Stored so it outlives a restart; the live part (in a call, in
//! wrap-up) is the queue desk's, in memory.

use super::{Result, Store, StoreError, col, parse_stored};
use crate::crm::model::{Millis, Presence, UserId};

/// One employee's presence as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    pub user: UserId,
    pub status: Presence,
    /// Why a paused agent is paused (free text, shown to colleagues).
    pub reason: Option<String>,
    /// When the status was last set; `None` when it never was (available since created).
    pub since: Option<Millis>,
    /// How many calls of ours they may be in at once.
    pub max_calls: u32,
}

impl Store {
    /// Sets an employee's presence; the reason is kept only with `paused`.
    pub async fn set_presence(
        &self,
        user: &UserId,
        status: Presence,
        reason: Option<&str>,
        at: Millis,
    ) -> Result<PresenceRecord> {
        let reason = reason.filter(|_| status == Presence::Paused);
        let done = self
            .execute_change(
                sqlx::query(
                    "UPDATE users SET presence = $2, presence_reason = $3, presence_since = $4 \
             WHERE id = $1",
                )
                .bind(user.as_str())
                .bind(status.as_str())
                .bind(reason)
                .bind(at),
                None,
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("user", user.as_str()));
        }
        Ok(PresenceRecord {
            user: user.clone(),
            status,
            reason: reason.map(str::to_owned),
            since: Some(at),
            max_calls: self.max_calls(user).await?,
        })
    }

    /// How many calls of ours `user` may be in at once.
    pub async fn max_calls(&self, user: &UserId) -> Result<u32> {
        let row = sqlx::query("SELECT max_calls FROM users WHERE id = $1")
            .bind(user.as_str())
            .fetch_optional(self.reader())
            .await?
            .ok_or_else(|| StoreError::not_found("user", user.as_str()))?;
        Ok(u32::try_from(col::<i64>(&row, "max_calls")?).unwrap_or(1))
    }

    /// Sets how many calls of ours `user` may be in at once (at least 1).
    pub async fn set_max_calls(&self, user: &UserId, max_calls: u32) -> Result<()> {
        let done = self
            .execute_change(
                sqlx::query("UPDATE users SET max_calls = $2 WHERE id = $1")
                    .bind(user.as_str())
                    .bind(i64::from(max_calls.max(1))),
                None,
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("user", user.as_str()));
        }
        Ok(())
    }

    /// Every employee's presence (the bootstrap admin, who has no e-mail, excluded).
    pub async fn presences(&self) -> Result<Vec<PresenceRecord>> {
        let rows = sqlx::query(
            "SELECT id, presence, presence_reason, presence_since, max_calls FROM users \
             WHERE email IS NOT NULL ORDER BY id",
        )
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| {
                let status: String = col(row, "presence")?;
                Ok(PresenceRecord {
                    user: UserId(col(row, "id")?),
                    status: parse_stored(&status, "users.presence")?,
                    reason: col(row, "presence_reason")?,
                    since: col(row, "presence_since")?,
                    max_calls: u32::try_from(col::<i64>(row, "max_calls")?).unwrap_or(1),
                })
            })
            .collect()
    }
}
