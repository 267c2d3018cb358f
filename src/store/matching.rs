//! The matcher's database side: load what the pure matcher needs for one identifier
//! (its candidates, the exclusions that could apply to it), then let it decide.

use super::{Result, Store, col, parse_stored};
use crate::crm::intake::{CustomerContext, OpenDeal};
use crate::crm::model::{CompanyId, ContactId, DealId, EntityKind, EntityRef, UserId};
use crate::matcher::{
    Candidate, Exclusions, Identifier, MatchOutcome, PhoneKey, parse_exception, resolve,
};

/// A stored phone key back into its type: E.164 starts with `+`, the digits fallback never.
pub(crate) fn stored_phone_key(value: &str) -> PhoneKey {
    if value.starts_with('+') {
        PhoneKey::E164(value.to_owned())
    } else {
        PhoneKey::Digits(value.to_owned())
    }
}

impl Store {
    /// M1: resolve one identifier against exceptions, employees and entities.
    pub async fn match_identifier(&self, identifier: Identifier) -> Result<MatchOutcome> {
        let exclusions = self.exclusions_for(&identifier).await?;
        let found = if exclusions.check(&identifier).is_some() {
            Vec::new()
        } else {
            self.candidates(identifier.key()).await?
        };
        Ok(resolve(identifier, &exclusions, found))
    }

    /// The exceptions (M4, M5) and employee identifiers (M6) that could match this
    /// identifier. Loading only these rows keeps a lookup O(log n) however long the lists.
    pub async fn exclusions_for(&self, identifier: &Identifier) -> Result<Exclusions> {
        let key = identifier.key();
        let domain = match identifier {
            Identifier::Email(email) => Some(format!("@{}", email.domain())),
            Identifier::Phone(_) => None,
        };
        let mut exclusions = Exclusions::default();
        let rows = sqlx::query("SELECT value FROM exceptions WHERE value = $1 OR value = $2")
            .bind(key)
            .bind(domain.as_deref().unwrap_or(key))
            .fetch_all(self.reader())
            .await?;
        for row in &rows {
            let value: String = col(row, "value")?;
            match parse_exception(&value, None) {
                Ok(rule) => exclusions.add_exception(&rule),
                Err(err) => tracing::warn!(%value, %err, "stored exception no longer parses"),
            }
        }
        match identifier {
            Identifier::Phone(phone) => {
                let phones = sqlx::query("SELECT value FROM user_phones WHERE value = $1")
                    .bind(key)
                    .fetch_all(self.reader())
                    .await?;
                for row in &phones {
                    exclusions.add_employee_phone(&stored_phone_key(&col::<String>(row, "value")?));
                }
                if let PhoneKey::Digits(digits) = phone {
                    let extensions =
                        sqlx::query("SELECT extension FROM users WHERE extension = $1")
                            .bind(digits.as_str())
                            .fetch_all(self.reader())
                            .await?;
                    for row in &extensions {
                        exclusions.add_employee_extension(&col::<String>(row, "extension")?);
                    }
                }
            }
            Identifier::Email(email) => {
                let users = sqlx::query("SELECT email FROM users WHERE email = $1")
                    .bind(key)
                    .fetch_all(self.reader())
                    .await?;
                if !users.is_empty() {
                    exclusions.add_employee_email(email);
                }
            }
        }
        Ok(exclusions)
    }

    /// Entities that carry this identifier key. Converted leads are left out: the contact
    /// they became carries the identifier now.
    pub async fn candidates(&self, key: &str) -> Result<Vec<Candidate>> {
        let rows = sqlx::query(
            "SELECT ei.entity_kind, ei.entity_id, \
               COALESCE(c.responsible, co.responsible, l.responsible) AS responsible, \
               COALESCE(c.last_activity_at, co.last_activity_at, l.last_activity_at) AS last_activity_at \
             FROM entity_identifiers ei \
             LEFT JOIN contacts c ON ei.entity_kind = 'contact' AND c.id = ei.entity_id \
             LEFT JOIN companies co ON ei.entity_kind = 'company' AND co.id = ei.entity_id \
             LEFT JOIN leads l ON ei.entity_kind = 'lead' AND l.id = ei.entity_id \
             WHERE ei.value = $1 AND (ei.entity_kind <> 'lead' OR l.status <> 'converted')",
        )
        .bind(key)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| {
                let kind: String = col(row, "entity_kind")?;
                Ok(Candidate {
                    entity: EntityRef::new(
                        parse_stored::<EntityKind>(&kind, "entity_identifiers.entity_kind")?,
                        col::<String>(row, "entity_id")?,
                    ),
                    responsible: col::<Option<String>>(row, "responsible")?.map(UserId),
                    last_activity_at: col::<Option<i64>>(row, "last_activity_at")?.unwrap_or(0),
                })
            })
            .collect()
    }

    /// T11/E14: the company of a matched contact and the customer's open deals.
    pub async fn customer_context(&self, best: &Candidate) -> Result<CustomerContext> {
        let column = match best.entity.kind {
            EntityKind::Contact => "contact_id",
            EntityKind::Company => "company_id",
            EntityKind::Lead | EntityKind::Deal => return Ok(CustomerContext::default()),
        };
        let contact_company = if best.entity.kind == EntityKind::Contact {
            sqlx::query("SELECT company_id FROM contacts WHERE id = $1")
                .bind(best.entity.id.as_str())
                .fetch_optional(self.reader())
                .await?
                .map(|row| col::<Option<String>>(&row, "company_id"))
                .transpose()?
                .flatten()
                .map(CompanyId)
        } else {
            None
        };
        let rows = sqlx::query(dynamic_sql!(
            "SELECT id, contact_id, company_id, responsible, last_activity_at FROM deals \
             WHERE {column} = $1 AND status = 'open' ORDER BY last_activity_at DESC, id DESC LIMIT 10"
        ))
        .bind(best.entity.id.as_str())
        .fetch_all(self.reader())
        .await?;
        let open_deals = rows
            .iter()
            .map(|row| {
                Ok(OpenDeal {
                    id: DealId(col(row, "id")?),
                    contact: col::<Option<String>>(row, "contact_id")?.map(ContactId),
                    company: col::<Option<String>>(row, "company_id")?.map(CompanyId),
                    responsible: col::<Option<String>>(row, "responsible")?.map(UserId),
                    last_activity_at: col(row, "last_activity_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CustomerContext {
            contact_company,
            open_deals,
        })
    }
}
