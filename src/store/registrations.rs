//! SIP registrations: the location service's bindings (RFC 3261 §10), persisted so a
//! restart or another gateway process sees them.

use sqlx::any::AnyRow;

use super::{Page, Paged, Result, Store, col, now_ms};
use crate::crm::model::Millis;

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
}

impl Store {
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
                "INSERT INTO registrations (aor, owner_kind, owner_id, contact, expires_at, call_id, \
                 cseq, instance, user_agent, transport, source, updated_at, q) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (aor, contact) DO UPDATE SET owner_kind = excluded.owner_kind, \
                 owner_id = excluded.owner_id, expires_at = excluded.expires_at, \
                 call_id = excluded.call_id, cseq = excluded.cseq, instance = excluded.instance, \
                 user_agent = excluded.user_agent, transport = excluded.transport, \
                 source = excluded.source, updated_at = excluded.updated_at, q = excluded.q",
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
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
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
    ) -> Result<Paged<RegistrationRecord>> {
        // Keyset on (aor, contact) joined into one cursor string.
        let rows = sqlx::query(
            "SELECT * FROM registrations WHERE expires_at > $1 AND (aor || ' ' || contact) > $2 \
             ORDER BY aor || ' ' || contact LIMIT $3",
        )
        .bind(now)
        .bind(page.after())
        .bind(page.sql_limit())
        .fetch_all(self.reader())
        .await?;
        let records = rows
            .iter()
            .map(registration_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(page.finish(records, |r| format!("{} {}", r.aor, r.contact)))
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

    /// Deletes one binding if it is still the one that was seen (same source and CSeq):
    /// a device that re-registered meanwhile proved it is alive and keeps its binding.
    pub async fn drop_binding_if_unchanged(
        &self,
        aor: &str,
        contact: &str,
        source: &str,
        cseq: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM registrations WHERE aor = $1 AND contact = $2 AND source = $3 \
             AND cseq = $4",
        )
        .bind(aor)
        .bind(contact)
        .bind(source)
        .bind(cseq)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes bindings that expired; returns how many.
    pub async fn purge_expired_bindings(&self, now: Millis) -> Result<u64> {
        let done = sqlx::query("DELETE FROM registrations WHERE expires_at <= $1")
            .bind(now)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected())
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
    })
}
