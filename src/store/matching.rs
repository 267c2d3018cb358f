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
    /// M1: resolve one identifier against exceptions, employees and entities, with one
    /// query: every call and e-mail does this, so it is one round trip and index look-ups
    /// only (O(log n) however many contacts and exceptions there are).
    pub async fn match_identifier(&self, identifier: Identifier) -> Result<MatchOutcome> {
        let key = identifier.key();
        let domain = match &identifier {
            Identifier::Email(email) => format!("@{}", email.domain()),
            Identifier::Phone(_) => key.to_owned(),
        };
        let rows = sqlx::query(
            "SELECT 'exception' AS source, value AS a, CAST(NULL AS TEXT) AS b, \
                    CAST(NULL AS TEXT) AS c, CAST(NULL AS BIGINT) AS d \
               FROM exceptions WHERE value = $1 OR value = $2 \
             UNION ALL SELECT 'employee_phone', value, NULL, NULL, NULL \
               FROM user_phones WHERE value = $1 \
             UNION ALL SELECT 'employee_extension', extension, NULL, NULL, NULL \
               FROM users WHERE extension = $1 \
             UNION ALL SELECT 'employee_email', email, NULL, NULL, NULL \
               FROM users WHERE email = $1 \
             UNION ALL SELECT 'candidate', ei.entity_kind, ei.entity_id, \
               COALESCE(c.responsible, co.responsible, l.responsible), \
               COALESCE(c.last_activity_at, co.last_activity_at, l.last_activity_at) \
               FROM entity_identifiers ei \
               LEFT JOIN contacts c ON ei.entity_kind = 'contact' AND c.id = ei.entity_id \
               LEFT JOIN companies co ON ei.entity_kind = 'company' AND co.id = ei.entity_id \
               LEFT JOIN leads l ON ei.entity_kind = 'lead' AND l.id = ei.entity_id \
               WHERE ei.value = $1 AND (ei.entity_kind <> 'lead' OR l.status <> 'converted')",
        )
        .bind(key)
        .bind(&domain)
        .fetch_all(self.reader())
        .await?;
        let mut exclusions = Exclusions::default();
        let mut found = Vec::new();
        for row in &rows {
            let source: String = col(row, "source")?;
            let a: String = col(row, "a")?;
            match (source.as_str(), &identifier) {
                ("exception", _) => match parse_exception(&a, None) {
                    Ok(rule) => exclusions.add_exception(&rule),
                    Err(err) => {
                        tracing::warn!(value = %a, %err, "stored exception no longer parses")
                    }
                },
                ("employee_phone", _) => exclusions.add_employee_phone(&stored_phone_key(&a)),
                ("employee_extension", _) => exclusions.add_employee_extension(&a),
                ("employee_email", Identifier::Email(email)) => {
                    exclusions.add_employee_email(email)
                }
                ("candidate", _) => found.push(Candidate {
                    entity: EntityRef::new(
                        parse_stored::<EntityKind>(&a, "entity_identifiers.entity_kind")?,
                        col::<Option<String>>(row, "b")?.unwrap_or_default(),
                    ),
                    responsible: col::<Option<String>>(row, "c")?.map(UserId),
                    last_activity_at: col::<Option<i64>>(row, "d")?.unwrap_or(0),
                }),
                _ => {}
            }
        }
        if exclusions.check(&identifier).is_some() {
            found.clear();
        }
        Ok(resolve(identifier, &exclusions, found))
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
