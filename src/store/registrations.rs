//! SIP registrations: the location service's bindings (RFC 3261 §10), persisted so a
//! restart or another gateway process sees them.

use sqlx::any::AnyRow;

use super::{Page, Paged, Result, Store, col, now_ms, parse_json_list, parse_stored};
use crate::crm::model::{Millis, TrunkId, TrunkKind};

/// One binding of an address of record to a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRecord {
    pub aor: String,
    /// `user` or `trunk`.
    pub owner_kind: String,
    pub owner_id: String,
    pub contact: String,
    pub expires_at: Millis,
    pub call_id: String,
    pub cseq: i64,
    /// Contact preference (RFC 3261 §20.10), kept as written.
    pub q: Option<String>,
    pub instance: Option<String>,
    pub user_agent: Option<String>,
    pub transport: String,
    pub source: String,
    /// The REGISTER's Path headers (RFC 3327) joined by `, `: the Route of requests to
    /// this binding.
    pub path: Option<String>,
}

/// A live binding as `GET /registrations` lists it: with when the device first
/// registered and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationListing {
    pub record: RegistrationRecord,
    /// When this contact first registered; refreshes keep it, a binding that had expired
    /// starts again. Bindings older than the column show their last refresh.
    pub registered_at: Millis,
    /// The employee's name, or the trunk's.
    pub owner_name: Option<String>,
    /// The employee's extension now.
    pub extension: Option<String>,
}

/// The secret a PBX trunk registers with (it is stored in clear because carrier trunks
/// need it to answer challenges; the API never returns it, A4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkSecret {
    pub trunk: TrunkId,
    pub password: String,
}

/// What tells requests from one trunk apart: its allowed networks as written and the
/// sources of its unexpired registrations (`ip:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkSources {
    pub trunk: TrunkId,
    pub kind: TrunkKind,
    pub allowed_ips: Vec<String>,
    pub registered_from: Vec<String>,
}

impl Store {
    /// The PBX trunk that registers with this username, if it has a password.
    pub async fn pbx_trunk_secret(&self, username: &str) -> Result<Option<TrunkSecret>> {
        let row = sqlx::query(
            "SELECT id, password FROM trunks WHERE kind = 'pbx' AND username = $1 \
             AND password IS NOT NULL ORDER BY created_at LIMIT 1",
        )
        .bind(username)
        .fetch_optional(self.reader())
        .await?;
        row.map(|row| {
            Ok(TrunkSecret {
                trunk: TrunkId(col(&row, "id")?),
                password: col(&row, "password")?,
            })
        })
        .transpose()
    }

    /// The number an employee's outgoing calls go out on, and its trunk:
    /// a number with a trunk whose queue the employee is in, else the first number with
    /// a trunk.
    pub async fn outgoing_line(
        &self,
        user: &crate::crm::model::UserId,
    ) -> Result<Option<(String, TrunkId)>> {
        let row = sqlx::query(
            "SELECT n.number, n.trunk_id FROM numbers n \
             LEFT JOIN queue_members m ON m.queue_id = n.queue_id AND m.user_id = $1 \
             WHERE n.trunk_id IS NOT NULL \
             ORDER BY CASE WHEN m.user_id IS NULL THEN 1 ELSE 0 END, n.created_at, n.number \
             LIMIT 1",
        )
        .bind(user.as_str())
        .fetch_optional(self.reader())
        .await?;
        row.map(|row| Ok((col(&row, "number")?, TrunkId(col(&row, "trunk_id")?))))
            .transpose()
    }

    /// Our numbers with their trunks, oldest first: the lines click-to-call chooses from.
    pub async fn dial_lines(&self) -> Result<Vec<crate::crm::dial::DialLine>> {
        let rows = sqlx::query(dynamic_sql!(
            "SELECT {}, trunk_id FROM numbers ORDER BY created_at, number",
            super::config::NUMBER_SETTINGS_COLUMNS
        ))
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(crate::crm::dial::DialLine {
                    settings: super::config::number_settings_from_row(row)?,
                    trunk: col::<Option<String>>(row, "trunk_id")?.map(TrunkId),
                })
            })
            .collect()
    }

    /// A trunk's password, to answer its digest challenge (never returned by the API).
    pub async fn trunk_password(&self, trunk: &TrunkId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT password FROM trunks WHERE id = $1")
            .bind(trunk.as_str())
            .fetch_optional(self.reader())
            .await?;
        Ok(match row {
            Some(row) => col(&row, "password")?,
            None => None,
        })
    }

    /// Whether an employee's phone is registered from exactly this `ip:port`, read from
    /// the database (the call path uses [`Store::cached_phone_source`]).
    pub async fn is_phone_source(&self, source: &str, now: Millis) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS found FROM registrations WHERE source = $1 AND owner_kind = 'user' \
             AND expires_at > $2 LIMIT 1",
        )
        .bind(source)
        .bind(now)
        .fetch_optional(self.reader())
        .await?;
        Ok(row.is_some())
    }

    /// The unexpired bindings of an employee's devices, read from the database (the call
    /// path uses [`Store::cached_user_bindings`]).
    pub async fn user_bindings(
        &self,
        user: &crate::crm::model::UserId,
        now: Millis,
    ) -> Result<Vec<RegistrationRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM registrations WHERE owner_kind = 'user' AND owner_id = $1 \
             AND expires_at > $2 ORDER BY contact",
        )
        .bind(user.as_str())
        .bind(now)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(registration_from_row).collect()
    }

    /// Every trunk with its allowed networks and current registration sources, read from
    /// the database (the call path uses [`Store::cached_trunk_access`]).
    pub async fn trunk_sources(&self, now: Millis) -> Result<Vec<TrunkSources>> {
        let rows = sqlx::query(
            "SELECT t.id, t.kind, t.allowed_ips, r.source FROM trunks t \
             LEFT JOIN registrations r ON r.owner_kind = 'trunk' AND r.owner_id = t.id \
             AND r.expires_at > $1 ORDER BY t.id",
        )
        .bind(now)
        .fetch_all(self.reader())
        .await?;
        let mut trunks: Vec<TrunkSources> = Vec::new();
        for row in &rows {
            let id: String = col(row, "id")?;
            let source: Option<String> = col(row, "source")?;
            if trunks.last().is_none_or(|t| t.trunk.0 != id) {
                let kind: String = col(row, "kind")?;
                let allowed: String = col(row, "allowed_ips")?;
                trunks.push(TrunkSources {
                    trunk: TrunkId(id),
                    kind: parse_stored(&kind, "trunks.kind")?,
                    allowed_ips: parse_json_list(&allowed, "trunks.allowed_ips")?,
                    registered_from: Vec::new(),
                });
            }
            if let (Some(source), Some(trunk)) = (source, trunks.last_mut()) {
                trunk.registered_from.push(source);
            }
        }
        Ok(trunks)
    }

    /// Replaces the bindings of one address of record: `upsert` is written, `remove`
    /// (contacts) deleted, in one transaction.
    pub async fn save_bindings(
        &self,
        aor: &str,
        upsert: &[RegistrationRecord],
        remove: &[String],
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        for contact in remove {
            sqlx::query("DELETE FROM registrations WHERE aor = $1 AND contact = $2")
                .bind(aor)
                .bind(contact)
                .execute(&mut *tx)
                .await?;
        }
        for b in upsert {
            sqlx::query(
                // A refresh keeps the first registration's time; a binding that had
                // expired (not purged yet) is a new registration.
                "INSERT INTO registrations (aor, owner_kind, owner_id, contact, expires_at, call_id, \
                 cseq, instance, user_agent, transport, source, updated_at, q, registered_at, path) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $12, $14) \
                 ON CONFLICT (aor, contact) DO UPDATE SET owner_kind = excluded.owner_kind, \
                 registered_at = CASE WHEN registrations.expires_at <= excluded.updated_at \
                 OR registrations.registered_at IS NULL THEN excluded.registered_at \
                 ELSE registrations.registered_at END, \
                 owner_id = excluded.owner_id, expires_at = excluded.expires_at, \
                 call_id = excluded.call_id, cseq = excluded.cseq, instance = excluded.instance, \
                 user_agent = excluded.user_agent, transport = excluded.transport, \
                 source = excluded.source, updated_at = excluded.updated_at, q = excluded.q, \
                 path = excluded.path",
            )
            .bind(aor)
            .bind(&b.owner_kind)
            .bind(&b.owner_id)
            .bind(&b.contact)
            .bind(b.expires_at)
            .bind(&b.call_id)
            .bind(b.cseq)
            .bind(b.instance.as_deref())
            .bind(b.user_agent.as_deref())
            .bind(&b.transport)
            .bind(&b.source)
            .bind(now)
            .bind(b.q.as_deref())
            .bind(b.path.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        self.notify_in(&mut tx, &super::snapshot::Change::Binding(aor.to_owned()))
            .await?;
        tx.commit().await?;
        self.cache().bindings_mut().apply_local(aor, upsert, remove);
        Ok(())
    }

    /// The live bindings of one address of record.
    pub async fn bindings(&self, aor: &str, now: Millis) -> Result<Vec<RegistrationRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM registrations WHERE aor = $1 AND expires_at > $2 ORDER BY contact",
        )
        .bind(aor)
        .bind(now)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(registration_from_row).collect()
    }

    /// Every live binding, for `GET /registrations`.
    pub async fn list_registrations(
        &self,
        now: Millis,
        page: &Page,
    ) -> Result<Paged<RegistrationListing>> {
        // Keyset on (aor, contact) joined into one cursor string.
        let rows = sqlx::query(
            "SELECT r.*, COALESCE(r.registered_at, r.updated_at) AS since, \
             COALESCE(u.name, t.name) AS owner_name, u.extension AS owner_extension \
             FROM registrations r \
             LEFT JOIN users u ON r.owner_kind = 'user' AND u.id = r.owner_id \
             LEFT JOIN trunks t ON r.owner_kind = 'trunk' AND t.id = r.owner_id \
             WHERE r.expires_at > $1 AND (r.aor || ' ' || r.contact) > $2 \
             ORDER BY r.aor || ' ' || r.contact LIMIT $3",
        )
        .bind(now)
        .bind(page.after())
        .bind(page.sql_limit())
        .fetch_all(self.reader())
        .await?;
        let records = rows
            .iter()
            .map(|row| {
                Ok(RegistrationListing {
                    record: registration_from_row(row)?,
                    registered_at: col(row, "since")?,
                    owner_name: col(row, "owner_name")?,
                    extension: col(row, "owner_extension")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(page.finish(records, |r| {
            format!("{} {}", r.record.aor, r.record.contact)
        }))
    }

    /// Every live binding over UDP, for NAT keep-alives.
    pub async fn live_udp_bindings(&self, now: Millis) -> Result<Vec<RegistrationRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM registrations WHERE transport = 'udp' AND expires_at > $1 \
             ORDER BY aor, contact",
        )
        .bind(now)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(registration_from_row).collect()
    }

    /// Deletes one binding if it is still the one that was seen (same source, CSeq and
    /// Call-ID):
    /// a device that re-registered meanwhile proved it is alive and keeps its binding.
    pub async fn drop_binding_if_unchanged(
        &self,
        aor: &str,
        contact: &str,
        source: &str,
        cseq: i64,
        call_id: &str,
    ) -> Result<bool> {
        // A rebooted phone registers again with a new Call-ID and may reuse its CSeq:
        // that binding is alive and must not be taken for the dead one.
        let done = sqlx::query(
            "DELETE FROM registrations WHERE aor = $1 AND contact = $2 AND source = $3 \
             AND cseq = $4 AND call_id = $5",
        )
        .bind(aor)
        .bind(contact)
        .bind(source)
        .bind(cseq)
        .bind(call_id)
        .execute(self.writer())
        .await?;
        let dropped = done.rows_affected() > 0;
        if dropped {
            self.cache().bindings_mut().drop_local(aor, contact);
            self.notify(&super::snapshot::Change::Binding(aor.to_owned()))
                .await;
        }
        Ok(dropped)
    }

    /// Deletes bindings that expired; returns how many.
    pub async fn purge_expired_bindings(&self, now: Millis) -> Result<u64> {
        let done = sqlx::query("DELETE FROM registrations WHERE expires_at <= $1")
            .bind(now)
            .execute(self.writer())
            .await?;
        // Other processes skip expired bindings on read: nothing to tell them.
        self.cache().bindings_mut().purge(now);
        Ok(done.rows_affected())
    }

    /// Every binding of one address of record, expired ones too (the snapshot filters).
    pub(crate) async fn bindings_of_aor(&self, aor: &str) -> Result<Vec<RegistrationRecord>> {
        let rows = sqlx::query("SELECT * FROM registrations WHERE aor = $1")
            .bind(aor)
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(registration_from_row).collect()
    }

    /// The secret `name` every node on this database shares: the stored one, or
    /// `candidate`, stored now, when there is none yet. Nodes starting together race on
    /// the primary key; all of them read back the one that won.
    pub async fn shared_secret(&self, name: &str, candidate: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO cluster_secrets (name, value, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(now_ms())
        .execute(self.writer())
        .await?;
        let row = sqlx::query("SELECT value FROM cluster_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(self.writer())
            .await?;
        col(&row, "value")
    }

    /// Every binding (the snapshot's loader).
    pub(crate) async fn all_bindings(&self) -> Result<Vec<RegistrationRecord>> {
        let rows = sqlx::query("SELECT * FROM registrations")
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(registration_from_row).collect()
    }
}

fn registration_from_row(row: &AnyRow) -> Result<RegistrationRecord> {
    Ok(RegistrationRecord {
        aor: col(row, "aor")?,
        owner_kind: col(row, "owner_kind")?,
        owner_id: col(row, "owner_id")?,
        contact: col(row, "contact")?,
        expires_at: col(row, "expires_at")?,
        call_id: col(row, "call_id")?,
        cseq: col(row, "cseq")?,
        q: col(row, "q")?,
        instance: col(row, "instance")?,
        user_agent: col(row, "user_agent")?,
        transport: col(row, "transport")?,
        source: col(row, "source")?,
        path: col(row, "path")?,
    })
}
