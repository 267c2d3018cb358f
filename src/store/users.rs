//! Employees and their tokens.

use sqlx::any::AnyRow;

use super::{Result, Store, StoreError, col, now_ms, on_unique, parse_stored};
use crate::crm::model::{Millis, Role, TokenId, TrunkId, UserId};
use crate::sip::digest::{self, Algorithm, Ha1Pair};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    pub name: String,
    pub email: Option<String>,
    pub role: Role,
    pub extension: Option<String>,
    /// E.164 (or digits for numbers that do not parse).
    pub phones: Vec<String>,
    pub has_sip_password: bool,
    /// Whether the person has a console password (the hash never leaves the store).
    pub has_password: bool,
    /// Digest algorithms their phones are offered, most preferred first; `None`: the
    /// gateway's order.
    pub sip_digest: Option<Vec<Algorithm>>,
    /// How many calls of ours they may be in at once before queues offer them no more.
    pub max_calls: u32,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: String,
    /// Lowercased (M3).
    pub email: String,
    pub role: Role,
    pub extension: Option<String>,
    pub phones: Vec<String>,
    pub sip: Option<Ha1Pair>,
    /// The console password's argon2id PHC string.
    pub password_hash: Option<String>,
    /// `None`: the gateway's digest order.
    pub sip_digest: Option<Vec<Algorithm>>,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub name: Option<String>,
    pub email: Option<String>,
    pub role: Option<Role>,
    /// `Some(None)` removes the extension.
    pub extension: Option<Option<String>>,
    pub phones: Option<Vec<String>>,
    pub sip: Option<Ha1Pair>,
    /// A new console password (argon2id PHC string).
    pub password_hash: Option<String>,
    /// `Some(None)` goes back to the gateway's digest order.
    pub sip_digest: Option<Option<Vec<Algorithm>>>,
    /// The session (token hash) the change is made with, when it is the changed person's:
    /// setting one's own password keeps it (see `session::sessions_to_end`).
    pub own_session: Option<String>,
}

/// A bounded page of a list, keyed by id (ids are time-ordered).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: u32,
    pub after: Option<String>,
}

impl Page {
    pub const MAX: u32 = 500;
    pub const DEFAULT: u32 = 100;

    pub(crate) fn sql_limit(&self) -> i64 {
        // One extra row tells whether there is a next page.
        i64::from(self.limit.clamp(1, Self::MAX)) + 1
    }

    /// Cuts the extra row and returns the cursor of the next page.
    pub(crate) fn finish<T>(&self, mut rows: Vec<T>, id: impl Fn(&T) -> String) -> Paged<T> {
        let limit = self.limit.clamp(1, Self::MAX) as usize;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(&id)
        } else {
            None
        };
        Paged { items: rows, next }
    }

    pub(crate) fn after(&self) -> &str {
        self.after.as_deref().unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Who a stored token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOwner {
    Bootstrap,
    User { id: UserId, role: Role },
    Trunk(TrunkId),
}

const USER_COLUMNS: &str = "id, name, email, role, extension, sip_ha1_md5, password_hash, sip_digest, max_calls, \
     created_at";

impl Store {
    pub async fn create_user(&self, new: NewUser) -> Result<UserRecord> {
        let id = UserId::generate();
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        sqlx::query(
            "INSERT INTO users (id, name, email, role, extension, sip_realm, sip_ha1_md5, \
             sip_ha1_sha256, password_hash, sip_digest, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
        )
        .bind(id.as_str())
        .bind(&new.name)
        .bind(&new.email)
        .bind(new.role.as_str())
        .bind(new.extension.as_deref())
        .bind(new.sip.as_ref().map(|s| s.realm.clone()))
        .bind(new.sip.as_ref().map(|s| s.md5.clone()))
        .bind(new.sip.as_ref().map(|s| s.sha256.clone()))
        .bind(new.password_hash.as_deref())
        .bind(new.sip_digest.as_deref().map(digest::order_text))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| user_conflict(e, &new.email, new.extension.as_deref()))?;
        replace_phones(&mut tx, &id, &new.phones).await?;
        self.commit_change(tx, Some(id.as_str())).await?;
        self.get_user(&id).await
    }

    pub async fn get_user(&self, id: &UserId) -> Result<UserRecord> {
        let row = sqlx::query(dynamic_sql!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(self.reader())
        .await?
        .ok_or_else(|| StoreError::not_found("user", id.as_str()))?;
        let mut user = user_from_row(&row)?;
        user.phones = self.user_phones(id).await?;
        Ok(user)
    }

    pub async fn list_users(&self, page: &Page) -> Result<Paged<UserRecord>> {
        let rows = sqlx::query(dynamic_sql!(
            "SELECT {USER_COLUMNS} FROM users WHERE id > $1 AND email IS NOT NULL \
             ORDER BY id LIMIT $2"
        ))
        .bind(page.after())
        .bind(page.sql_limit())
        .fetch_all(self.reader())
        .await?;
        let mut users = rows.iter().map(user_from_row).collect::<Result<Vec<_>>>()?;
        for user in &mut users {
            user.phones = self.user_phones(&user.id).await?;
        }
        Ok(page.finish(users, |u| u.id.to_string()))
    }

    pub async fn update_user(&self, id: &UserId, patch: UserPatch) -> Result<UserRecord> {
        let current = self.get_user(id).await?;
        let email = patch.email.or(current.email);
        let extension = patch.extension.unwrap_or_else(|| current.extension.clone());
        let role = patch.role.unwrap_or(current.role);
        let end = crate::session::sessions_to_end(
            role != current.role,
            patch.password_hash.is_some(),
            patch.own_session.as_deref(),
        );
        let mut tx = self.writer().begin().await?;
        sqlx::query(
            "UPDATE users SET name = $2, email = $3, role = $4, extension = $5, updated_at = $6 \
             WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(patch.name.unwrap_or(current.name))
        .bind(email.as_deref())
        .bind(role.as_str())
        .bind(extension.as_deref())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| user_conflict(e, email.as_deref().unwrap_or(""), extension.as_deref()))?;
        if let Some(sip) = patch.sip {
            sqlx::query(
                "UPDATE users SET sip_realm = $2, sip_ha1_md5 = $3, sip_ha1_sha256 = $4 WHERE id = $1",
            )
            .bind(id.as_str())
            .bind(sip.realm)
            .bind(sip.md5)
            .bind(sip.sha256)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(order) = &patch.sip_digest {
            sqlx::query("UPDATE users SET sip_digest = $2 WHERE id = $1")
                .bind(id.as_str())
                .bind(order.as_deref().map(digest::order_text))
                .execute(&mut *tx)
                .await?;
        }
        if let Some(password_hash) = &patch.password_hash {
            sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
                .bind(id.as_str())
                .bind(password_hash)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(phones) = &patch.phones {
            replace_phones(&mut tx, id, phones).await?;
        }
        // In the change's transaction: no request sees the new role or password with a
        // session that should have ended.
        super::sessions::end_sessions(&mut tx, id, &end).await?;
        self.commit_change(tx, None).await?;
        // A role change applies to the user's tokens at once.
        self.tokens().clear();
        // A webhook owner's role decides what their webhooks carry.
        self.webhook_cache.clear();
        if extension != current.extension {
            self.config_changed().await;
        }
        self.get_user(id).await
    }

    pub async fn delete_user(&self, id: &UserId) -> Result<()> {
        let done = self
            .execute_change(
                sqlx::query("DELETE FROM users WHERE id = $1").bind(id.as_str()),
                None,
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("user", id.as_str()));
        }
        // Queue memberships, tokens, webhooks and sessions went with the user (cascade).
        self.config_changed().await;
        self.tokens().clear();
        self.webhook_cache.clear();
        Ok(())
    }

    async fn user_phones(&self, id: &UserId) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT value FROM user_phones WHERE user_id = $1 ORDER BY position")
                .bind(id.as_str())
                .fetch_all(self.reader())
                .await?;
        rows.iter().map(|r| col(r, "value")).collect()
    }

    /// Stores a token hash for a user, a trunk, or (both `None`) the bootstrap admin.
    pub async fn create_token(
        &self,
        token_hash: &str,
        role: &str,
        user: Option<&UserId>,
        trunk: Option<&TrunkId>,
        label: &str,
    ) -> Result<TokenId> {
        let id = TokenId::generate();
        self.execute_change(
            sqlx::query(
                "INSERT INTO tokens (id, user_id, trunk_id, token_hash, role, label, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id.as_str())
            .bind(user.map(UserId::as_str))
            .bind(trunk.map(TrunkId::as_str))
            .bind(token_hash)
            .bind(role)
            .bind(label)
            .bind(now_ms()),
            None,
        )
        .await?;
        Ok(id)
    }

    /// Who a token belongs to. Every API request asks, so answers are cached: cleared when
    /// this process changes a user, and at most `TOKEN_CACHE_TTL` old for changes made by
    /// another process. Unknown tokens are not cached (a flood of random tokens must not
    /// grow memory).
    pub async fn token_owner(&self, token_hash: &str) -> Result<Option<TokenOwner>> {
        if let Some(owner) = self.tokens().get(token_hash) {
            return Ok(Some(owner));
        }
        let owner = self.load_token_owner(token_hash).await?;
        if let Some(owner) = &owner {
            self.tokens().put(token_hash, owner.clone());
        }
        Ok(owner)
    }

    /// Records that a stored token was just used, at most once a minute per token in this
    /// process, so a busy client costs one small write a minute and not one a request. A
    /// failure is only logged: the request itself is fine.
    pub async fn token_used(&self, token_hash: &str) {
        let now = now_ms();
        if !self.tokens().use_due(token_hash, now) {
            return;
        }
        if let Err(err) = sqlx::query("UPDATE tokens SET last_used_at = $2 WHERE token_hash = $1")
            .bind(token_hash)
            .bind(now)
            .execute(self.writer())
            .await
        {
            tracing::warn!(%err, "cannot record a token's use");
        }
    }

    /// A user's tokens in id (creation) order: never the token or its hash.
    pub async fn list_user_tokens(&self, user: &UserId, page: &Page) -> Result<Paged<TokenInfo>> {
        let rows = sqlx::query(
            "SELECT id, created_at, last_used_at FROM tokens \
             WHERE user_id = $1 AND ($2 = '' OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(user.as_str())
        .bind(page.after())
        .bind(page.sql_limit())
        .fetch_all(self.reader())
        .await?;
        let tokens = rows
            .iter()
            .map(|row| {
                Ok(TokenInfo {
                    id: TokenId(col(row, "id")?),
                    created_at: col(row, "created_at")?,
                    last_used_at: col(row, "last_used_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(page.finish(tokens, |t| t.id.to_string()))
    }

    /// Revokes one of a user's tokens; `NotFound` when the user has no such token. This
    /// process refuses it at once; others within `TOKEN_CACHE_TTL`.
    pub async fn delete_user_token(&self, user: &UserId, token: &str) -> Result<()> {
        let deleted = self
            .execute_change(
                sqlx::query("DELETE FROM tokens WHERE id = $1 AND user_id = $2")
                    .bind(token)
                    .bind(user.as_str()),
                None,
            )
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::not_found("token", token));
        }
        self.tokens().clear();
        Ok(())
    }

    async fn load_token_owner(&self, token_hash: &str) -> Result<Option<TokenOwner>> {
        let row = sqlx::query(
            "SELECT t.user_id, t.trunk_id, u.role FROM tokens t \
             LEFT JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.reader())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user: Option<String> = col(&row, "user_id")?;
        let trunk: Option<String> = col(&row, "trunk_id")?;
        Ok(Some(match (user, trunk) {
            (Some(id), _) => {
                let role: String = col(&row, "role")?;
                TokenOwner::User {
                    id: UserId(id),
                    role: parse_stored(&role, "users.role")?,
                }
            }
            (None, Some(trunk)) => TokenOwner::Trunk(TrunkId(trunk)),
            (None, None) => TokenOwner::Bootstrap,
        }))
    }

    /// Whether a bootstrap admin token was ever generated (first start is when it was not).
    pub async fn has_bootstrap_token(&self) -> Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM tokens WHERE user_id IS NULL AND trunk_id IS NULL",
        )
        .fetch_one(self.reader())
        .await?;
        Ok(col::<i64>(&row, "n")? > 0)
    }
}

async fn replace_phones(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &UserId,
    phones: &[String],
) -> Result<()> {
    sqlx::query("DELETE FROM user_phones WHERE user_id = $1")
        .bind(id.as_str())
        .execute(&mut **tx)
        .await?;
    let mut seen = std::collections::HashSet::new();
    for (position, phone) in phones.iter().enumerate() {
        if !seen.insert(phone) {
            continue;
        }
        sqlx::query("INSERT INTO user_phones (user_id, value, position) VALUES ($1, $2, $3)")
            .bind(id.as_str())
            .bind(phone)
            .bind(position as i64)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn user_conflict(err: sqlx::Error, email: &str, extension: Option<&str>) -> StoreError {
    on_unique(err, "user_exists", || match extension {
        Some(ext) => format!("a user with e-mail {email} or extension {ext} already exists"),
        None => format!("a user with e-mail {email} already exists"),
    })
}

fn user_from_row(row: &AnyRow) -> Result<UserRecord> {
    let role: String = col(row, "role")?;
    let ha1: Option<String> = col(row, "sip_ha1_md5")?;
    let password: Option<String> = col(row, "password_hash")?;
    Ok(UserRecord {
        id: UserId(col(row, "id")?),
        name: col(row, "name")?,
        email: col(row, "email")?,
        role: parse_stored(&role, "users.role")?,
        extension: col(row, "extension")?,
        phones: Vec::new(),
        has_sip_password: ha1.is_some(),
        has_password: password.is_some(),
        sip_digest: stored_order(col(row, "sip_digest")?)?,
        max_calls: u32::try_from(col::<i64>(row, "max_calls")?).unwrap_or(1),
        created_at: col(row, "created_at")?,
    })
}

/// `users.sip_digest` as written by [`digest::order_text`].
fn stored_order(text: Option<String>) -> Result<Option<Vec<Algorithm>>> {
    text.map(|text| {
        digest::parse_order(text.split(','))
            .map_err(|_| StoreError::Corrupt(format!("column users.sip_digest holds '{text}'")))
    })
    .transpose()
}

/// How long a cached token answer is trusted (changes made by another process).
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);
/// Cached tokens at most; the cache starts over beyond (tokens are few: users and trunks).
const TOKEN_CACHE_MAX: usize = 10_000;

/// How often a token's `last_used_at` is written at most, per process.
pub const TOKEN_USE_EVERY_MS: Millis = 60_000;

/// One of a user's API tokens, as listed: never the token or its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: TokenId,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
}

/// Token hash → owner, with the time it was read.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    entries: std::sync::RwLock<std::collections::HashMap<String, (TokenOwner, std::time::Instant)>>,
    /// Token hash → when this process last wrote its use.
    used: std::sync::Mutex<std::collections::HashMap<String, Millis>>,
}

/// Whether a use at `now` is to be written, after one written at `last`.
fn use_due(last: Option<Millis>, now: Millis) -> bool {
    last.is_none_or(|last| now - last >= TOKEN_USE_EVERY_MS || now < last)
}

impl TokenCache {
    /// Whether this use is to be written; if so, it counts as written from now on.
    fn use_due(&self, hash: &str, now: Millis) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if !use_due(used.get(hash).copied(), now) {
            return false;
        }
        if used.len() >= TOKEN_CACHE_MAX {
            // Forgetting only means one more write per token.
            used.clear();
        }
        used.insert(hash.to_owned(), now);
        true
    }

    fn get(&self, hash: &str) -> Option<TokenOwner> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(owner, _)| owner.clone())
    }

    fn put(&self, hash: &str, owner: TokenOwner) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= TOKEN_CACHE_MAX {
            entries.clear();
        }
        entries.insert(hash.to_owned(), (owner, std::time::Instant::now()));
    }

    pub fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// What a registrar needs to check a REGISTER for one extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipCredentials {
    pub user: UserId,
    pub realm: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
    /// The user's own digest order, if they have one.
    pub sip_digest: Option<Vec<Algorithm>>,
}

impl Store {
    /// The digest credentials of the employee with this extension, if they have a SIP
    /// password.
    pub async fn sip_credentials(&self, extension: &str) -> Result<Option<SipCredentials>> {
        let row = sqlx::query(
            "SELECT id, sip_realm, sip_ha1_md5, sip_ha1_sha256, sip_digest FROM users \
             WHERE extension = $1 AND sip_ha1_md5 IS NOT NULL",
        )
        .bind(extension)
        .fetch_optional(self.reader())
        .await?;
        row.map(|row| {
            Ok(SipCredentials {
                user: UserId(col(&row, "id")?),
                realm: col::<Option<String>>(&row, "sip_realm")?.unwrap_or_default(),
                ha1_md5: col::<Option<String>>(&row, "sip_ha1_md5")?.unwrap_or_default(),
                ha1_sha256: col::<Option<String>>(&row, "sip_ha1_sha256")?.unwrap_or_default(),
                sip_digest: stored_order(col(&row, "sip_digest")?)?,
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod token_use_tests {
    use super::*;

    #[test]
    fn a_tokens_use_is_written_at_most_once_a_minute() {
        assert!(use_due(None, 1_000));
        assert!(!use_due(Some(1_000), 1_000 + TOKEN_USE_EVERY_MS - 1));
        assert!(use_due(Some(1_000), 1_000 + TOKEN_USE_EVERY_MS));
        assert!(use_due(Some(5_000), 1_000), "the clock went back");
        let cache = TokenCache::default();
        assert!(cache.use_due("h", 0));
        assert!(!cache.use_due("h", 30_000));
        assert!(cache.use_due("other", 30_000));
        assert!(cache.use_due("h", 60_000));
    }
}
