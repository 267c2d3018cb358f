//! The matcher's database side: load what the pure matcher needs for identifiers (their
//! candidates, the exclusions that could apply to them) in one query, then let it decide.
//! Works on a pooled connection (`/match`) and inside the intake's write transaction.

use std::collections::HashMap;

use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::rows::placeholders;
use super::script::Stmt;
use super::{Result, Store, col, parse_stored};
use crate::crm::intake::{CustomerContext, OpenDeal};
use crate::crm::model::{CompanyId, ContactId, DealId, EntityKind, EntityRef, UserId};
use crate::matcher::{
    Candidate, ExceptionRule, Exclusions, Identifier, MatchOutcome, PhoneKey, parse_exception,
    resolve,
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
        let mut conn = self.reader().acquire().await?;
        let mut outcomes = match_all(&mut conn, std::slice::from_ref(&identifier)).await?;
        Ok(outcomes.pop().expect("one outcome per identifier"))
    }

    /// T11/E14: the company of a matched contact and the customer's open deals.
    pub async fn customer_context(&self, best: &Candidate) -> Result<CustomerContext> {
        let mut conn = self.reader().acquire().await?;
        Ok(customer_contexts(&mut conn, std::slice::from_ref(best))
            .await?
            .remove(&best.entity)
            .unwrap_or_default())
    }
}

/// Matches many identifiers with one query: exceptions (M4, M5), employees and the
/// addresses of connected mailboxes (M6), and
/// entities carrying them, then the pure matcher decides each (M1, M8). Index look-ups
/// only, so the cost does not grow with the number of contacts or exceptions.
pub(crate) async fn match_all(
    conn: &mut AnyConnection,
    identifiers: &[Identifier],
) -> Result<Vec<MatchOutcome>> {
    Ok(match_all_named(conn, identifiers).await?.0)
}

/// [`match_all`], with the name of every candidate found (the call path shows it).
pub(crate) async fn match_all_named(
    conn: &mut AnyConnection,
    identifiers: &[Identifier],
) -> Result<(Vec<MatchOutcome>, HashMap<EntityRef, String>)> {
    let Some(stmt) = match_statement(identifiers) else {
        return Ok((Vec::new(), HashMap::new()));
    };
    let rows = stmt.fetch_all(conn).await?;
    matched_from_rows(identifiers, &rows)
}

/// The one query of [`match_all_named`] (`None` without identifiers): the intake on
/// SQLite sends it with its other reads in one command.
pub(crate) fn match_statement(identifiers: &[Identifier]) -> Option<Stmt> {
    if identifiers.is_empty() {
        return None;
    }
    let mut keys: Vec<&str> = identifiers.iter().map(Identifier::key).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut domains: Vec<String> = identifiers
        .iter()
        .filter_map(|i| match i {
            Identifier::Email(email) => Some(format!("@{}", email.domain())),
            Identifier::Phone(_) => None,
        })
        .collect();
    domains.sort_unstable();
    domains.dedup();
    let keys_in = placeholders(1, keys.len());
    let exception_values = placeholders(1, keys.len() + domains.len());
    let sql = format!(
        "SELECT 'exception' AS source, value AS k, value AS a, CAST(NULL AS TEXT) AS b, \
                CAST(NULL AS TEXT) AS c, CAST(NULL AS BIGINT) AS d, CAST(NULL AS TEXT) AS e \
           FROM exceptions WHERE value IN ({exception_values}) \
         UNION ALL SELECT 'employee_phone', value, value, NULL, NULL, NULL, NULL \
           FROM user_phones WHERE value IN ({keys_in}) \
         UNION ALL SELECT 'employee_extension', extension, extension, NULL, NULL, NULL, NULL \
           FROM users WHERE extension IN ({keys_in}) \
         UNION ALL SELECT 'employee_email', email, email, NULL, NULL, NULL, NULL \
           FROM users WHERE email IN ({keys_in}) \
         UNION ALL SELECT 'employee_email', address, address, NULL, NULL, NULL, NULL \
           FROM mailboxes WHERE address IN ({keys_in}) \
         UNION ALL SELECT 'candidate', ei.value, ei.entity_kind, ei.entity_id, \
           COALESCE(c.responsible, co.responsible, l.responsible), \
           COALESCE(c.last_activity_at, co.last_activity_at, l.last_activity_at), \
           COALESCE(c.name, co.name, l.name) \
           FROM entity_identifiers ei \
           LEFT JOIN contacts c ON ei.entity_kind = 'contact' AND c.id = ei.entity_id \
           LEFT JOIN companies co ON ei.entity_kind = 'company' AND co.id = ei.entity_id \
           LEFT JOIN leads l ON ei.entity_kind = 'lead' AND l.id = ei.entity_id \
           WHERE ei.value IN ({keys_in}) AND (ei.entity_kind <> 'lead' OR l.status <> 'converted')"
    );
    let mut stmt = Stmt::new(sql);
    for key in &keys {
        stmt = stmt.bind(*key);
    }
    for domain in domains {
        stmt = stmt.bind(domain);
    }
    Some(stmt)
}

/// What the pure matcher decides for each of `identifiers` from the rows of
/// [`match_statement`], with the names of the candidates.
pub(crate) fn matched_from_rows(
    identifiers: &[Identifier],
    rows: &[AnyRow],
) -> Result<(Vec<MatchOutcome>, HashMap<EntityRef, String>)> {
    let mut exceptions: HashMap<String, ExceptionRule> = HashMap::new();
    let mut employees: HashMap<String, Vec<String>> = HashMap::new();
    let mut found: HashMap<String, Vec<Candidate>> = HashMap::new();
    let mut names: HashMap<EntityRef, String> = HashMap::new();
    for row in rows {
        let source: String = col(row, "source")?;
        let key: String = col(row, "k")?;
        let a: String = col(row, "a")?;
        match source.as_str() {
            "exception" => match parse_exception(&a, None) {
                Ok(rule) => {
                    exceptions.insert(key, rule);
                }
                Err(err) => tracing::warn!(value = %a, %err, "stored exception no longer parses"),
            },
            "candidate" => {
                let entity = EntityRef::new(
                    parse_stored::<EntityKind>(&a, "entity_identifiers.entity_kind")?,
                    col::<Option<String>>(row, "b")?.unwrap_or_default(),
                );
                if let Some(name) = col::<Option<String>>(row, "e")? {
                    names.insert(entity.clone(), name);
                }
                found.entry(key).or_default().push(Candidate {
                    entity,
                    responsible: col::<Option<String>>(row, "c")?.map(UserId),
                    last_activity_at: col::<Option<i64>>(row, "d")?.unwrap_or(0),
                });
            }
            employee => employees.entry(key).or_default().push(employee.to_owned()),
        }
    }

    let outcomes = identifiers
        .iter()
        .map(|identifier| {
            let key = identifier.key();
            let mut exclusions = Exclusions::default();
            if let Some(rule) = exceptions.get(key) {
                exclusions.add_exception(rule);
            }
            if let Identifier::Email(email) = identifier
                && let Some(rule) = exceptions.get(&format!("@{}", email.domain()))
            {
                exclusions.add_exception(rule);
            }
            for employee in employees.get(key).into_iter().flatten() {
                match (employee.as_str(), identifier) {
                    ("employee_phone", Identifier::Phone(phone)) => {
                        exclusions.add_employee_phone(phone)
                    }
                    ("employee_extension", _) => exclusions.add_employee_extension(key),
                    ("employee_email", Identifier::Email(email)) => {
                        exclusions.add_employee_email(email)
                    }
                    _ => {}
                }
            }
            let candidates = if exclusions.check(identifier).is_some() {
                Vec::new()
            } else {
                found.get(key).cloned().unwrap_or_default()
            };
            Ok(resolve(identifier.clone(), &exclusions, candidates))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((outcomes, names))
}

/// T11/E14 for many customers at once: the company of each matched contact and the open
/// deals of each matched contact or company, most recently active first.
pub(crate) async fn customer_contexts(
    conn: &mut AnyConnection,
    bests: &[Candidate],
) -> Result<HashMap<EntityRef, CustomerContext>> {
    let contacts: Vec<&str> = bests
        .iter()
        .filter(|c| c.entity.kind == EntityKind::Contact)
        .map(|c| c.entity.id.as_str())
        .collect();
    let companies: Vec<&str> = bests
        .iter()
        .filter(|c| c.entity.kind == EntityKind::Company)
        .map(|c| c.entity.id.as_str())
        .collect();
    let mut contexts: HashMap<EntityRef, CustomerContext> = HashMap::new();
    if contacts.is_empty() && companies.is_empty() {
        return Ok(contexts);
    }
    if !contacts.is_empty() {
        let sql = format!(
            "SELECT id, company_id FROM contacts WHERE id IN ({})",
            placeholders(1, contacts.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in &contacts {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let id: String = col(&row, "id")?;
            contexts
                .entry(EntityRef::new(EntityKind::Contact, id))
                .or_default()
                .contact_company = col::<Option<String>>(&row, "company_id")?.map(CompanyId);
        }
    }
    // Placeholders for the two lists; an empty list matches nothing.
    let contact_in = if contacts.is_empty() {
        "NULL".to_owned()
    } else {
        placeholders(1, contacts.len())
    };
    let company_in = if companies.is_empty() {
        "NULL".to_owned()
    } else {
        placeholders(contacts.len() + 1, companies.len())
    };
    let sql = format!(
        "SELECT id, contact_id, company_id, responsible, last_activity_at FROM deals \
         WHERE status = 'open' AND (contact_id IN ({contact_in}) OR company_id IN ({company_in})) \
         ORDER BY last_activity_at DESC, id DESC"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in contacts.iter().chain(&companies) {
        query = query.bind(*id);
    }
    for row in query.fetch_all(&mut *conn).await? {
        let deal = OpenDeal {
            id: DealId(col(&row, "id")?),
            contact: col::<Option<String>>(&row, "contact_id")?.map(ContactId),
            company: col::<Option<String>>(&row, "company_id")?.map(CompanyId),
            responsible: col::<Option<String>>(&row, "responsible")?.map(UserId),
            last_activity_at: col(&row, "last_activity_at")?,
        };
        if let Some(contact) = &deal.contact
            && contacts.contains(&contact.as_str())
        {
            contexts
                .entry(EntityRef::new(EntityKind::Contact, contact.as_str()))
                .or_default()
                .open_deals
                .push(deal.clone());
        }
        if let Some(company) = &deal.company
            && companies.contains(&company.as_str())
        {
            contexts
                .entry(EntityRef::new(EntityKind::Company, company.as_str()))
                .or_default()
                .open_deals
                .push(deal);
        }
    }
    Ok(contexts)
}
