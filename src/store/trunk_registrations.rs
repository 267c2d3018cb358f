//! Our outbound registrations to carrier trunks (T2): the accounts to register with, and
//! where each registration stands (`trunk_registrations`), so the API and other gateway
//! processes can show it. Which REGISTER to send when is decided in `sip::trunk`, not here.

use std::collections::HashMap;
use std::fmt;

use sqlx::any::AnyRow;

use super::{Result, Store, StoreError, col, parse_stored};
use crate::crm::model::{Millis, Transport, TrunkId, TrunkRegistrationState};

/// A carrier trunk we register to, with the secret needed to answer its challenge. Read
/// only by the SIP side; the API never sees the password (A4).
#[derive(Clone, PartialEq, Eq)]
pub struct CarrierAccount {
    pub id: TrunkId,
    pub name: String,
    pub profile: String,
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    pub username: String,
    pub password: Option<String>,
}

impl fmt::Debug for CarrierAccount {
    /// Without the password: accounts end up in logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CarrierAccount")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("profile", &self.profile)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One row of `trunk_registrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkRegistrationRecord {
    pub trunk: TrunkId,
    pub state: TrunkRegistrationState,
    /// Until when the carrier holds our binding, as its last 200 OK said.
    pub registered_until: Option<Millis>,
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub failures: i64,
    pub next_attempt_at: Option<Millis>,
    pub updated_at: Millis,
}

impl Store {
    /// Carrier trunks set to register that name a host and a username. The profile still
    /// decides (`registration_interval_s = 0` means the carrier is not registered to).
    pub async fn carrier_accounts(&self) -> Result<Vec<CarrierAccount>> {
        let rows = sqlx::query(
            "SELECT id, name, profile, host, port, transport, username, password FROM trunks \
             WHERE kind = 'carrier' AND register = 1 AND host IS NOT NULL \
             AND username IS NOT NULL ORDER BY id",
        )
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(account_from_row).collect()
    }

    /// Writes the state of one trunk's registration. Returns `false` when the trunk no
    /// longer exists (deleted meanwhile: its row went with it, and nothing is written).
    pub async fn save_trunk_registration(&self, record: &TrunkRegistrationRecord) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO trunk_registrations (trunk_id, state, registered_until, last_error, \
             failures, next_attempt_at, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM trunks WHERE id = $1) \
             ON CONFLICT (trunk_id) DO UPDATE SET state = excluded.state, \
             registered_until = excluded.registered_until, last_error = excluded.last_error, \
             failures = excluded.failures, next_attempt_at = excluded.next_attempt_at, \
             updated_at = excluded.updated_at",
        )
        .bind(record.trunk.as_str())
        .bind(record.state.as_str())
        .bind(record.registered_until)
        .bind(record.last_error.as_deref())
        .bind(record.failures)
        .bind(record.next_attempt_at)
        .bind(record.updated_at)
        .execute(self.writer())
        .await;
        match done {
            Ok(done) => Ok(done.rows_affected() > 0),
            // Deleted between the check and the insert.
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    pub async fn trunk_registration(
        &self,
        trunk: &TrunkId,
    ) -> Result<Option<TrunkRegistrationRecord>> {
        let row = sqlx::query("SELECT * FROM trunk_registrations WHERE trunk_id = $1")
            .bind(trunk.as_str())
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// Every stored registration state, by trunk (one row per carrier trunk: few).
    pub async fn trunk_registrations(&self) -> Result<HashMap<TrunkId, TrunkRegistrationRecord>> {
        let rows = sqlx::query("SELECT * FROM trunk_registrations")
            .fetch_all(self.reader())
            .await?;
        rows.iter()
            .map(|row| record_from_row(row).map(|r| (r.trunk.clone(), r)))
            .collect()
    }

    /// The SIP profile of every trunk, for timers towards bindings a trunk registered.
    pub async fn trunk_profiles(&self) -> Result<HashMap<TrunkId, String>> {
        let rows = sqlx::query("SELECT id, profile FROM trunks")
            .fetch_all(self.reader())
            .await?;
        rows.iter()
            .map(|row| Ok((TrunkId(col(row, "id")?), col(row, "profile")?)))
            .collect()
    }
}

fn account_from_row(row: &AnyRow) -> Result<CarrierAccount> {
    let port: i64 = col(row, "port")?;
    let transport: String = col(row, "transport")?;
    Ok(CarrierAccount {
        id: TrunkId(col(row, "id")?),
        name: col(row, "name")?,
        profile: col(row, "profile")?,
        host: col(row, "host")?,
        port: u16::try_from(port)
            .map_err(|_| StoreError::Corrupt(format!("trunks.port {port}")))?,
        transport: parse_stored(&transport, "trunks.transport")?,
        username: col(row, "username")?,
        password: col(row, "password")?,
    })
}

fn record_from_row(row: &AnyRow) -> Result<TrunkRegistrationRecord> {
    let state: String = col(row, "state")?;
    Ok(TrunkRegistrationRecord {
        trunk: TrunkId(col(row, "trunk_id")?),
        state: parse_stored(&state, "trunk_registrations.state")?,
        registered_until: col(row, "registered_until")?,
        last_error: col(row, "last_error")?,
        failures: col(row, "failures")?,
        next_attempt_at: col(row, "next_attempt_at")?,
        updated_at: col(row, "updated_at")?,
    })
}
