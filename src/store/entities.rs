//! Contacts, companies, leads and deals: CRUD, identifiers (M7), lead conversion.

use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use super::rows::{
    ENTITY_COLUMNS, FilteredPage, Rows, identifier_rows, like_contains, placeholders,
};
use super::{
    Backend, Page, Paged, Result, Store, StoreError, col, now_ms, on_unique, parse_stored,
};
use crate::crm::model::{
    DealStatus, EntityKind, EntityRef, LeadStatus, Millis, PipelineId, StageId, UserId,
};
use std::collections::{HashMap, HashSet};

use crate::crm::import::{Action, ImportCandidate, Skipped, decide};
use crate::matcher::{Identifier, Search};

pub(crate) type Tx<'a> = Transaction<'a, Any>;

/// One CRM entity as stored; kind-specific fields are `None` where they do not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRecord {
    pub entity: EntityRef,
    pub name: String,
    pub phones: Vec<String>,
    pub emails: Vec<String>,
    pub responsible: Option<UserId>,
    pub source: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub last_activity_at: Millis,
    /// Contacts: their company.
    pub company: Option<String>,
    /// Leads: new | converted | junk.
    pub lead_status: Option<LeadStatus>,
    /// Leads: the customer (contact) of a repeat lead (E14).
    pub customer: Option<String>,
    /// Leads: what the lead became.
    pub converted: Vec<EntityRef>,
    /// Deals.
    pub deal: Option<DealFields>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealFields {
    pub contact: Option<String>,
    pub company: Option<String>,
    pub pipeline: String,
    pub stage: String,
    pub status: DealStatus,
}

/// What a new entity is made of.
#[derive(Debug, Clone)]
pub struct NewEntity {
    pub kind: EntityKind,
    pub name: String,
    pub identifiers: Vec<Identifier>,
    pub responsible: Option<UserId>,
    pub source: String,
    pub company: Option<String>,
    pub customer: Option<String>,
    pub deal: Option<NewDealFields>,
}

#[derive(Debug, Clone)]
pub struct NewDealFields {
    pub contact: Option<String>,
    pub company: Option<String>,
    pub pipeline: PipelineId,
    pub stage: StageId,
}

/// A partial update of an entity; `None` keeps the field.
#[derive(Debug, Clone, Default)]
pub struct EntityPatch {
    pub name: Option<String>,
    pub identifiers: Option<Vec<Identifier>>,
    pub responsible: Option<Option<UserId>>,
    pub source: Option<String>,
    pub company: Option<Option<String>>,
    pub lead_status: Option<LeadStatus>,
    pub deal_stage: Option<StageId>,
}

/// List filters of API.md: `?phone=`, `?email=`, `?responsible=`, the search box `?q=`,
/// and per kind `?status=`, `?pipeline=`, `?stage=`, `?contact=`, `?company=`.
#[derive(Debug, Clone, Default)]
pub struct EntityFilter {
    /// A matcher key (E.164, digits or lowercased e-mail).
    pub identifier: Option<String>,
    pub responsible: Option<UserId>,
    /// Access (A1): only entities one of these employees is responsible for; `None`
    /// for no restriction (unassigned entities are only seen without one).
    pub responsible_in: Option<Vec<UserId>>,
    /// A piece of the name or of an e-mail address, or a phone number (deals: of their
    /// contact or company).
    pub search: Option<Search>,
    /// Leads: new | converted | junk; deals: open | won | lost.
    pub status: Option<String>,
    /// Deals.
    pub pipeline: Option<String>,
    pub stage: Option<String>,
    pub contact: Option<String>,
    /// Contacts and deals.
    pub company: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub created: usize,
    /// The entities created, in the order given (for their webhook events).
    pub entities: Vec<EntityRef>,
    /// Indexes of entities skipped because an identifier was taken (M7).
    pub skipped: Vec<usize>,
}

/// What a contact import did, or would do (dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactImport {
    pub created: Vec<EntityRef>,
    pub updated: Vec<EntityRef>,
    /// By line.
    pub skipped: Vec<Skipped>,
}

/// Imported contacts and companies come from no channel of their own.
const SOURCE_IMPORT: &str = "OTHER";

fn skip_lines(skipped: &mut Vec<Skipped>, candidate: &ImportCandidate, reason: &str) {
    skipped.extend(candidate.lines.iter().map(|&line| Skipped {
        line,
        reason: reason.to_owned(),
    }));
}

/// What a lead conversion produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub contact: EntityRef,
    pub company: Option<EntityRef>,
    pub deal: Option<EntityRef>,
}

pub(crate) fn table(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Contact => "contacts",
        EntityKind::Company => "companies",
        EntityKind::Lead => "leads",
        EntityKind::Deal => "deals",
    }
}

/// M7: takes ownership of an identifier for an entity. `false` means another entity
/// already owns it (possibly created a moment ago by another process).
pub(crate) async fn claim_identifier(
    tx: &mut Tx<'_>,
    value: &str,
    owner: &EntityRef,
    now: Millis,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO identifier_owners (value, entity_kind, entity_id, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (value) DO NOTHING",
    )
    .bind(value)
    .bind(owner.kind.as_str())
    .bind(owner.id.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Inserts the entity row and its identifiers (without claiming them).
pub(crate) async fn insert_entity(
    tx: &mut Tx<'_>,
    id: &str,
    new: &NewEntity,
    now: Millis,
) -> Result<EntityRef> {
    let responsible = new.responsible.as_ref().map(UserId::as_str);
    match new.kind {
        EntityKind::Contact => {
            sqlx::query(
                "INSERT INTO contacts (id, name, company_id, responsible, source, created_at, \
                 updated_at, last_activity_at) VALUES ($1, $2, $3, $4, $5, $6, $6, $6)",
            )
            .bind(id)
            .bind(&new.name)
            .bind(new.company.as_deref())
            .bind(responsible)
            .bind(&new.source)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        EntityKind::Company => {
            sqlx::query(
                "INSERT INTO companies (id, name, responsible, source, created_at, updated_at, \
                 last_activity_at) VALUES ($1, $2, $3, $4, $5, $5, $5)",
            )
            .bind(id)
            .bind(&new.name)
            .bind(responsible)
            .bind(&new.source)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        EntityKind::Lead => {
            sqlx::query(
                "INSERT INTO leads (id, name, status, customer, responsible, source, created_at, \
                 updated_at, last_activity_at) VALUES ($1, $2, 'new', $3, $4, $5, $6, $6, $6)",
            )
            .bind(id)
            .bind(&new.name)
            .bind(new.customer.as_deref())
            .bind(responsible)
            .bind(&new.source)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        EntityKind::Deal => {
            let deal = new.deal.as_ref().ok_or_else(|| {
                StoreError::invalid("pipeline", "a deal needs a pipeline and a stage")
            })?;
            // A deal's status follows its stage, also when it is created in a won or lost
            // one.
            sqlx::query(
                "INSERT INTO deals (id, name, contact_id, company_id, pipeline_id, stage_id, status, \
                 responsible, source, created_at, updated_at, last_activity_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, \
                 COALESCE((SELECT s.status FROM stages s WHERE s.id = $6), 'open'), \
                 $7, $8, $9, $9, $9)",
            )
            .bind(id)
            .bind(&new.name)
            .bind(deal.contact.as_deref())
            .bind(deal.company.as_deref())
            .bind(deal.pipeline.as_str())
            .bind(deal.stage.as_str())
            .bind(responsible)
            .bind(&new.source)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
    }
    let entity = EntityRef::new(new.kind, id);
    insert_identifiers(tx, &entity, &new.identifiers).await?;
    Ok(entity)
}

pub(crate) async fn insert_identifiers(
    tx: &mut Tx<'_>,
    entity: &EntityRef,
    identifiers: &[Identifier],
) -> Result<()> {
    for (position, identifier) in identifiers.iter().enumerate() {
        sqlx::query(
            "INSERT INTO entity_identifiers (entity_kind, entity_id, kind, value, position) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(entity.kind.as_str())
        .bind(entity.id.as_str())
        .bind(identifier.kind().as_str())
        .bind(identifier.key())
        .bind(position as i64)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Moves the ownership of identifiers from one entity to another (lead → contact).
async fn transfer_claims(tx: &mut Tx<'_>, from: &EntityRef, to: &EntityRef) -> Result<()> {
    sqlx::query(
        "UPDATE identifier_owners SET entity_kind = $3, entity_id = $4 \
         WHERE entity_kind = $1 AND entity_id = $2",
    )
    .bind(from.kind.as_str())
    .bind(from.id.as_str())
    .bind(to.kind.as_str())
    .bind(to.id.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Claims every identifier of a new entity or fails with a 409 naming the owner (M7).
async fn claim_all(
    tx: &mut Tx<'_>,
    entity: &EntityRef,
    identifiers: &[Identifier],
    now: Millis,
) -> Result<()> {
    for identifier in identifiers {
        if !claim_identifier(tx, identifier.key(), entity, now).await? {
            let owner = sqlx::query(
                "SELECT entity_kind, entity_id FROM identifier_owners WHERE value = $1",
            )
            .bind(identifier.key())
            .fetch_one(&mut **tx)
            .await?;
            let owner_kind: String = col(&owner, "entity_kind")?;
            let owner_id: String = col(&owner, "entity_id")?;
            if owner_kind == entity.kind.as_str() && owner_id == entity.id {
                continue;
            }
            return Err(StoreError::Conflict {
                code: "duplicate_identifier",
                message: format!(
                    "{} already belongs to {owner_kind}:{owner_id}; an identifier is never used \
                     for a second contact or lead (M7)",
                    identifier.key()
                ),
            });
        }
    }
    Ok(())
}

/// Whether the kind owns its identifiers (contacts, companies, leads) or borrows them.
fn claims(kind: EntityKind) -> bool {
    !matches!(kind, EntityKind::Deal)
}

impl Store {
    /// Creates an entity by hand (API). Its identifiers must be free (M7).
    pub async fn create_entity(&self, new: NewEntity) -> Result<EntityRecord> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        let entity = insert_entity(&mut tx, &id, &new, now)
            .await
            .map_err(|e| match e {
                StoreError::Database(db) => reference_error(db),
                other => other,
            })?;
        if claims(new.kind) {
            claim_all(&mut tx, &entity, &new.identifiers, now).await?;
        }
        self.commit_change(tx, Some(id.as_str())).await?;
        self.get_entity(&entity).await
    }

    /// Creates many contacts or companies in batched transactions with multi-row
    /// statements (imports). An entity any of whose identifiers already belongs to
    /// someone is skipped, not duplicated (M7); its index is reported.
    pub async fn import_entities(&self, entities: &[NewEntity]) -> Result<ImportReport> {
        const BATCH: usize = 5_000;
        let mut report = ImportReport::default();
        for (batch_no, batch) in entities.chunks(BATCH).enumerate() {
            if let Some(i) = batch
                .iter()
                .position(|e| !matches!(e.kind, EntityKind::Contact | EntityKind::Company))
            {
                return Err(StoreError::invalid(
                    format!("[{}]", batch_no * BATCH + i),
                    "only contacts and companies are imported",
                ));
            }
            let now = now_ms();
            let ids: Vec<String> = batch
                .iter()
                .map(|_| uuid::Uuid::now_v7().to_string())
                .collect();
            let mut tx = self.writer().begin().await?;
            let mut claims = Rows::new(
                "identifier_owners",
                &["value", "entity_kind", "entity_id", "created_at"],
                "ON CONFLICT (value) DO NOTHING RETURNING entity_id",
            );
            let mut in_batch = std::collections::HashSet::new();
            let mut duplicate_in_batch = std::collections::HashSet::new();
            for (new, id) in batch.iter().zip(&ids) {
                for identifier in &new.identifiers {
                    // The same identifier twice in one file: the first entity keeps it.
                    if !in_batch.insert(identifier.key().to_owned()) {
                        duplicate_in_batch.insert(id.clone());
                        continue;
                    }
                    claims.push(vec![
                        identifier.key().into(),
                        new.kind.as_str().into(),
                        id.clone().into(),
                        now.into(),
                    ]);
                }
            }
            let mut claimed: std::collections::HashMap<String, usize> =
                std::collections::HashMap::new();
            for row in claims.write(&mut tx).await? {
                *claimed.entry(col(&row, "entity_id")?).or_default() += 1;
            }
            let mut contacts = Rows::new(
                "contacts",
                &[
                    "id",
                    "name",
                    "company_id",
                    "responsible",
                    "source",
                    "created_at",
                    "updated_at",
                    "last_activity_at",
                ],
                "",
            );
            let mut companies = Rows::new("companies", ENTITY_COLUMNS, "");
            let mut identifiers = identifier_rows();
            let mut partly_claimed = Vec::new();
            for (i, (new, id)) in batch.iter().zip(&ids).enumerate() {
                let got = claimed.get(id).copied().unwrap_or(0);
                if got != new.identifiers.len() || duplicate_in_batch.contains(id) {
                    if got > 0 {
                        partly_claimed.push(id.clone());
                    }
                    report.skipped.push(batch_no * BATCH + i);
                    continue;
                }
                let responsible = new.responsible.as_ref().map(ToString::to_string);
                match new.kind {
                    EntityKind::Contact => contacts.push(vec![
                        id.clone().into(),
                        new.name.clone().into(),
                        new.company.clone().into(),
                        responsible.into(),
                        new.source.clone().into(),
                        now.into(),
                        now.into(),
                        now.into(),
                    ]),
                    _ => companies.push(vec![
                        id.clone().into(),
                        new.name.clone().into(),
                        responsible.into(),
                        new.source.clone().into(),
                        now.into(),
                        now.into(),
                        now.into(),
                    ]),
                }
                for (position, identifier) in new.identifiers.iter().enumerate() {
                    identifiers.push(vec![
                        new.kind.as_str().into(),
                        id.clone().into(),
                        identifier.kind().as_str().into(),
                        identifier.key().into(),
                        (position as i64).into(),
                    ]);
                }
                report.created += 1;
                report.entities.push(EntityRef {
                    kind: new.kind,
                    id: id.clone(),
                });
            }
            // Claims of skipped entities go back.
            for chunk in partly_claimed.chunks(500) {
                let sql = format!(
                    "DELETE FROM identifier_owners WHERE entity_id IN ({})",
                    placeholders(1, chunk.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    query = query.bind(id.as_str());
                }
                query.execute(&mut *tx).await?;
            }
            for rows in [contacts, companies, identifiers] {
                if !rows.is_empty() {
                    rows.write(&mut tx).await?;
                }
            }
            tx.commit().await?;
        }
        Ok(report)
    }

    /// `POST /contacts/import`: creates or completes contacts in one transaction, which a
    /// dry run rolls back, so a preview reports exactly what the import would do. Each
    /// candidate is decided by [`crate::crm::import::decide`] from the same matcher as
    /// the intakes (M1–M8); new identifiers are claimed like the intakes claim them, so an
    /// identifier a call or message took meanwhile is never given to a second entity (M7).
    pub async fn import_contacts(
        &self,
        candidates: Vec<ImportCandidate>,
        mut skipped: Vec<Skipped>,
        dry_run: bool,
    ) -> Result<ContactImport> {
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        let all: Vec<Identifier> = candidates
            .iter()
            .flat_map(|c| c.identifiers.iter().cloned())
            .collect();
        let mut outcomes = HashMap::new();
        for chunk in all.chunks(300) {
            for outcome in super::matching::match_all(&mut tx, chunk).await? {
                outcomes.insert(outcome.identifier.key().to_owned(), outcome);
            }
        }
        let mut creates = Vec::new();
        let mut updates: Vec<(&ImportCandidate, EntityRef, Vec<Identifier>)> = Vec::new();
        for candidate in &candidates {
            match decide(candidate, &outcomes) {
                Action::Create => creates.push((candidate, uuid::Uuid::now_v7().to_string())),
                Action::Update { contact, add } => updates.push((candidate, contact, add)),
                Action::Skip(reason) => skip_lines(&mut skipped, candidate, &reason),
            }
        }
        let companies = self
            .companies_by_name(
                &mut tx,
                creates
                    .iter()
                    .map(|(c, _)| c)
                    .chain(updates.iter().map(|(c, _, _)| c))
                    .filter_map(|c| c.company.clone())
                    .collect(),
                now,
            )
            .await?;
        let company_of = |c: &ImportCandidate| {
            c.company
                .as_ref()
                .and_then(|name| companies.get(name))
                .cloned()
        };

        let mut claims = Rows::new(
            "identifier_owners",
            &["value", "entity_kind", "entity_id", "created_at"],
            "ON CONFLICT (value) DO NOTHING RETURNING value",
        );
        for (candidate, id) in &creates {
            for identifier in &candidate.identifiers {
                claims.push(vec![
                    identifier.key().into(),
                    "contact".into(),
                    id.clone().into(),
                    now.into(),
                ]);
            }
        }
        for (_, contact, add) in &updates {
            for identifier in add {
                claims.push(vec![
                    identifier.key().into(),
                    "contact".into(),
                    contact.id.clone().into(),
                    now.into(),
                ]);
            }
        }
        let mut claimed = HashSet::new();
        for row in claims.write(&mut tx).await? {
            claimed.insert(col::<String>(&row, "value")?);
        }

        let mut report = ContactImport::default();
        let mut contacts = Rows::new(
            "contacts",
            &[
                "id",
                "name",
                "company_id",
                "responsible",
                "source",
                "created_at",
                "updated_at",
                "last_activity_at",
            ],
            "",
        );
        let mut identifiers = identifier_rows();
        let mut released = Vec::new();
        for (candidate, id) in &creates {
            // An intake took one of the identifiers between the match and the claim.
            if let Some(taken) = candidate
                .identifiers
                .iter()
                .find(|i| !claimed.contains(i.key()))
            {
                released.push(id.clone());
                let reason = format!("{} was taken meanwhile by another entity (M7)", taken.key());
                skip_lines(&mut skipped, candidate, &reason);
                continue;
            }
            let name = if candidate.name.is_empty() {
                candidate.identifiers[0].key().to_owned()
            } else {
                candidate.name.clone()
            };
            contacts.push(vec![
                id.clone().into(),
                name.into(),
                company_of(candidate).into(),
                candidate
                    .responsible
                    .as_ref()
                    .map(ToString::to_string)
                    .into(),
                SOURCE_IMPORT.into(),
                now.into(),
                now.into(),
                now.into(),
            ]);
            for (position, identifier) in candidate.identifiers.iter().enumerate() {
                identifiers.push(vec![
                    "contact".into(),
                    id.clone().into(),
                    identifier.kind().as_str().into(),
                    identifier.key().into(),
                    (position as i64).into(),
                ]);
            }
            report
                .created
                .push(EntityRef::new(EntityKind::Contact, id.as_str()));
        }
        for chunk in released.chunks(500) {
            let sql = format!(
                "DELETE FROM identifier_owners WHERE entity_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id.as_str());
            }
            query.execute(&mut *tx).await?;
        }
        for rows in [contacts, identifiers] {
            if !rows.is_empty() {
                rows.write(&mut tx).await?;
            }
        }

        for (candidate, contact, add) in &updates {
            sqlx::query(
                "UPDATE contacts SET name = CASE WHEN name = '' THEN $2 ELSE name END, \
                 company_id = COALESCE(company_id, $3), responsible = COALESCE(responsible, $4), \
                 updated_at = $5 WHERE id = $1",
            )
            .bind(contact.id.as_str())
            .bind(candidate.name.as_str())
            .bind(company_of(candidate))
            .bind(candidate.responsible.as_ref().map(UserId::as_str))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let fresh: Vec<Identifier> = add
                .iter()
                .filter(|i| claimed.contains(i.key()))
                .cloned()
                .collect();
            if !fresh.is_empty() {
                let row = sqlx::query(
                    "SELECT COALESCE(MAX(position), -1) + 1 AS next FROM entity_identifiers \
                     WHERE entity_kind = 'contact' AND entity_id = $1",
                )
                .bind(contact.id.as_str())
                .fetch_one(&mut *tx)
                .await?;
                let next: i64 = col(&row, "next")?;
                for (i, identifier) in fresh.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO entity_identifiers (entity_kind, entity_id, kind, value, \
                         position) VALUES ('contact', $1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(contact.id.as_str())
                    .bind(identifier.kind().as_str())
                    .bind(identifier.key())
                    .bind(next + i as i64)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            if !report.updated.contains(contact) {
                report.updated.push(contact.clone());
            }
        }
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        skipped.sort_by_key(|s| s.line);
        report.skipped = skipped;
        Ok(report)
    }

    /// Every employee's id and login address (an import names the responsible by either).
    pub async fn user_keys(&self) -> Result<Vec<(UserId, Option<String>)>> {
        let rows = sqlx::query("SELECT id, email FROM users")
            .fetch_all(self.reader())
            .await?;
        rows.iter()
            .map(|row| Ok((UserId(col(row, "id")?), col(row, "email")?)))
            .collect()
    }

    /// The company of each name, created when no company has that exact name (the oldest
    /// of several with it wins).
    async fn companies_by_name(
        &self,
        tx: &mut Tx<'_>,
        mut names: Vec<String>,
        now: Millis,
    ) -> Result<HashMap<String, String>> {
        names.sort_unstable();
        names.dedup();
        let mut found: HashMap<String, String> = HashMap::new();
        for chunk in names.chunks(500) {
            let sql = format!(
                "SELECT id, name FROM companies WHERE name IN ({}) ORDER BY id DESC",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for name in chunk {
                query = query.bind(name.as_str());
            }
            for row in query.fetch_all(&mut **tx).await? {
                found.insert(col(&row, "name")?, col(&row, "id")?);
            }
        }
        let mut companies = Rows::new("companies", ENTITY_COLUMNS, "");
        for name in names {
            if found.contains_key(&name) {
                continue;
            }
            let id = uuid::Uuid::now_v7().to_string();
            companies.push(vec![
                id.clone().into(),
                name.clone().into(),
                Option::<String>::None.into(),
                SOURCE_IMPORT.into(),
                now.into(),
                now.into(),
                now.into(),
            ]);
            found.insert(name, id);
        }
        if !companies.is_empty() {
            companies.write(tx).await?;
        }
        Ok(found)
    }

    pub async fn get_entity(&self, entity: &EntityRef) -> Result<EntityRecord> {
        let row = sqlx::query(dynamic_sql!(
            "SELECT * FROM {} WHERE id = $1",
            table(entity.kind)
        ))
        .bind(entity.id.as_str())
        .fetch_optional(self.reader())
        .await?
        .ok_or_else(|| StoreError::not_found(entity.kind.as_str(), entity.id.as_str()))?;
        let mut record = entity_from_row(entity.kind, &row)?;
        self.fill_identifiers(std::slice::from_mut(&mut record))
            .await?;
        Ok(record)
    }

    /// The records of `ids` of one `kind` that exist, in a few reads: 500 a statement,
    /// so each look-up of their identifiers stays small.
    pub async fn get_entities(
        &self,
        kind: EntityKind,
        ids: &[String],
    ) -> Result<Vec<EntityRecord>> {
        let mut records = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let mut query = sqlx::query(dynamic_sql!(
                "SELECT * FROM {} WHERE id IN ({})",
                table(kind),
                placeholders(1, chunk.len())
            ));
            for id in chunk {
                query = query.bind(id.as_str());
            }
            let mut found = query
                .fetch_all(self.reader())
                .await?
                .iter()
                .map(|row| entity_from_row(kind, row))
                .collect::<Result<Vec<_>>>()?;
            self.fill_identifiers(&mut found).await?;
            records.append(&mut found);
        }
        Ok(records)
    }

    pub async fn list_entities(
        &self,
        kind: EntityKind,
        filter: &EntityFilter,
        page: &Page,
    ) -> Result<Paged<EntityRecord>> {
        let mut query = FilteredPage::new(
            format!("SELECT e.* FROM {} e WHERE e.id > $1", table(kind)),
            page.after(),
        );
        if let Some(key) = &filter.identifier {
            let clause = if kind == EntityKind::Deal {
                // Deals carry no identifiers: match through their contact or company.
                "EXISTS (SELECT 1 FROM entity_identifiers ei WHERE ei.value = $? AND \
                 ((ei.entity_kind = 'contact' AND ei.entity_id = e.contact_id) OR \
                  (ei.entity_kind = 'company' AND ei.entity_id = e.company_id)))"
                    .to_owned()
            } else {
                format!(
                    "EXISTS (SELECT 1 FROM entity_identifiers ei WHERE ei.value = $? AND \
                     ei.entity_kind = '{}' AND ei.entity_id = e.id)",
                    kind.as_str()
                )
            };
            query.and(&clause, key.clone());
        }
        if let Some(user) = &filter.responsible {
            query.and("e.responsible = $?", user.to_string());
        }
        if let Some(search) = &filter.search {
            let clause = search_clause(&mut query, self.backend(), kind, search);
            query.and_clause(&clause);
        }
        if let Some(status) = &filter.status {
            query.and("e.status = $?", status.clone());
        }
        let deal_columns = [
            (&filter.pipeline, "e.pipeline_id = $?"),
            (&filter.stage, "e.stage_id = $?"),
            (&filter.contact, "e.contact_id = $?"),
        ];
        for (value, clause) in deal_columns {
            if let (EntityKind::Deal, Some(value)) = (kind, value) {
                query.and(clause, value.clone());
            }
        }
        if let (EntityKind::Deal | EntityKind::Contact, Some(company)) = (kind, &filter.company) {
            query.and("e.company_id = $?", company.clone());
        }
        if let Some(users) = &filter.responsible_in {
            query.and_in("e.responsible", users.iter().map(ToString::to_string));
        }
        let rows = query.fetch("e.id", page, self.reader()).await?;
        let mut records = rows
            .iter()
            .map(|row| entity_from_row(kind, row))
            .collect::<Result<Vec<_>>>()?;
        self.fill_identifiers(&mut records).await?;
        Ok(page.finish(records, |r| r.entity.id.clone()))
    }

    pub async fn update_entity(
        &self,
        entity: &EntityRef,
        patch: EntityPatch,
    ) -> Result<EntityRecord> {
        let current = self.get_entity(entity).await?;
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        let t = table(entity.kind);
        let responsible = patch.responsible.unwrap_or(current.responsible.clone());
        sqlx::query(dynamic_sql!(
            "UPDATE {t} SET name = $2, responsible = $3, source = $4, updated_at = $5 WHERE id = $1"
        ))
        .bind(entity.id.as_str())
        .bind(patch.name.as_deref().unwrap_or(&current.name))
        .bind(responsible.as_ref().map(UserId::as_str))
        .bind(patch.source.as_deref().unwrap_or(&current.source))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(reference_error)?;
        if let (EntityKind::Contact, Some(company)) = (entity.kind, &patch.company) {
            sqlx::query("UPDATE contacts SET company_id = $2 WHERE id = $1")
                .bind(entity.id.as_str())
                .bind(company.as_deref())
                .execute(&mut *tx)
                .await?;
        }
        if let (EntityKind::Lead, Some(status)) = (entity.kind, patch.lead_status) {
            sqlx::query("UPDATE leads SET status = $2 WHERE id = $1")
                .bind(entity.id.as_str())
                .bind(status.as_str())
                .execute(&mut *tx)
                .await?;
        }
        if let (EntityKind::Deal, Some(stage)) = (entity.kind, &patch.deal_stage) {
            let row = sqlx::query(
                "SELECT s.status FROM stages s JOIN deals d ON d.pipeline_id = s.pipeline_id \
                 WHERE d.id = $1 AND s.id = $2",
            )
            .bind(entity.id.as_str())
            .bind(stage.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| {
                StoreError::invalid(
                    "stage",
                    format!("stage '{stage}' is not in this deal's pipeline"),
                )
            })?;
            let status: String = col(&row, "status")?;
            sqlx::query("UPDATE deals SET stage_id = $2, status = $3 WHERE id = $1")
                .bind(entity.id.as_str())
                .bind(stage.as_str())
                .bind(status)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(identifiers) = &patch.identifiers {
            sqlx::query("DELETE FROM entity_identifiers WHERE entity_kind = $1 AND entity_id = $2")
                .bind(entity.kind.as_str())
                .bind(entity.id.as_str())
                .execute(&mut *tx)
                .await?;
            if claims(entity.kind) {
                sqlx::query(
                    "DELETE FROM identifier_owners WHERE entity_kind = $1 AND entity_id = $2",
                )
                .bind(entity.kind.as_str())
                .bind(entity.id.as_str())
                .execute(&mut *tx)
                .await?;
                claim_all(&mut tx, entity, identifiers, now).await?;
            }
            insert_identifiers(&mut tx, entity, identifiers).await?;
        }
        self.commit_change(tx, None).await?;
        self.get_entity(entity).await
    }

    pub async fn delete_entity(&self, entity: &EntityRef) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        let done = sqlx::query(dynamic_sql!(
            "DELETE FROM {} WHERE id = $1",
            table(entity.kind)
        ))
        .bind(entity.id.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found(
                entity.kind.as_str(),
                entity.id.as_str(),
            ));
        }
        for sql in [
            "DELETE FROM entity_identifiers WHERE entity_kind = $1 AND entity_id = $2",
            "DELETE FROM identifier_owners WHERE entity_kind = $1 AND entity_id = $2",
            "DELETE FROM activity_entities WHERE entity_kind = $1 AND entity_id = $2",
        ] {
            sqlx::query(sql)
                .bind(entity.kind.as_str())
                .bind(entity.id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        // An activity never exists without an entity.
        sqlx::query(
            "DELETE FROM activities WHERE NOT EXISTS \
             (SELECT 1 FROM activity_entities ae WHERE ae.activity_id = activities.id)",
        )
        .execute(&mut *tx)
        .await?;
        self.commit_change(tx, None).await?;
        Ok(())
    }

    /// Converts a lead into a contact (and optionally a company and a deal). The contact
    /// takes over the lead's identifiers and their ownership (M7), and the lead's
    /// activities are shown on the new entities too.
    pub async fn convert_lead(
        &self,
        lead: &EntityRef,
        company_name: Option<String>,
        deal: Option<(PipelineId, StageId)>,
    ) -> Result<Conversion> {
        let record = self.get_entity(lead).await?;
        if record.lead_status == Some(LeadStatus::Converted) {
            return Err(StoreError::Conflict {
                code: "already_converted",
                message: format!("lead {} was already converted", lead.id),
            });
        }
        let identifiers = self.identifiers_of(lead).await?;
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        let company = match company_name {
            Some(name) => {
                let new = NewEntity {
                    kind: EntityKind::Company,
                    name,
                    identifiers: Vec::new(),
                    responsible: record.responsible.clone(),
                    source: record.source.clone(),
                    company: None,
                    customer: None,
                    deal: None,
                };
                Some(insert_entity(&mut tx, &uuid::Uuid::now_v7().to_string(), &new, now).await?)
            }
            None => None,
        };
        let contact = if let Some(existing) = &record.customer {
            // A repeat lead's customer already exists: no second contact (M7).
            EntityRef::new(EntityKind::Contact, existing.as_str())
        } else {
            let new = NewEntity {
                kind: EntityKind::Contact,
                name: record.name.clone(),
                identifiers: identifiers.clone(),
                responsible: record.responsible.clone(),
                source: record.source.clone(),
                company: company.as_ref().map(|c| c.id.clone()),
                customer: None,
                deal: None,
            };
            let contact =
                insert_entity(&mut tx, &uuid::Uuid::now_v7().to_string(), &new, now).await?;
            transfer_claims(&mut tx, lead, &contact).await?;
            contact
        };
        let deal = match deal {
            Some((pipeline, stage)) => {
                let new = NewEntity {
                    kind: EntityKind::Deal,
                    name: record.name.clone(),
                    identifiers: Vec::new(),
                    responsible: record.responsible.clone(),
                    source: record.source.clone(),
                    company: None,
                    customer: None,
                    deal: Some(NewDealFields {
                        contact: Some(contact.id.clone()),
                        company: company.as_ref().map(|c| c.id.clone()),
                        pipeline,
                        stage,
                    }),
                };
                Some(
                    insert_entity(&mut tx, &uuid::Uuid::now_v7().to_string(), &new, now)
                        .await
                        .map_err(|e| match e {
                            StoreError::Database(db) => reference_error(db),
                            other => other,
                        })?,
                )
            }
            None => None,
        };
        sqlx::query(
            "UPDATE leads SET status = 'converted', converted_contact = $2, converted_company = $3, \
             converted_deal = $4, updated_at = $5 WHERE id = $1",
        )
        .bind(lead.id.as_str())
        .bind(contact.id.as_str())
        .bind(company.as_ref().map(|c| c.id.clone()))
        .bind(deal.as_ref().map(|d| d.id.clone()))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // The history follows the customer.
        for target in std::iter::once(&contact).chain(&company).chain(&deal) {
            sqlx::query(
                "INSERT INTO activity_entities (activity_id, entity_kind, entity_id) \
                 SELECT activity_id, $3, $4 FROM activity_entities \
                 WHERE entity_kind = $1 AND entity_id = $2 ON CONFLICT DO NOTHING",
            )
            .bind(lead.kind.as_str())
            .bind(lead.id.as_str())
            .bind(target.kind.as_str())
            .bind(target.id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        self.commit_change(tx, None).await?;
        Ok(Conversion {
            contact,
            company,
            deal,
        })
    }

    async fn identifiers_of(&self, entity: &EntityRef) -> Result<Vec<Identifier>> {
        let rows = sqlx::query(
            "SELECT kind, value FROM entity_identifiers WHERE entity_kind = $1 AND entity_id = $2 \
             ORDER BY position",
        )
        .bind(entity.kind.as_str())
        .bind(entity.id.as_str())
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| {
                let kind: String = col(row, "kind")?;
                let value: String = col(row, "value")?;
                stored_identifier(&kind, &value)
            })
            .collect()
    }

    /// Loads phones and e-mails for a batch of records in one query.
    async fn fill_identifiers(&self, records: &mut [EntityRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        // Deals show their contact's identifiers.
        let owner_of = |r: &EntityRecord| -> Option<EntityRef> {
            match (&r.entity.kind, &r.deal) {
                (EntityKind::Deal, Some(d)) => d
                    .contact
                    .as_ref()
                    .map(|c| EntityRef::new(EntityKind::Contact, c.as_str()))
                    .or_else(|| {
                        d.company
                            .as_ref()
                            .map(|c| EntityRef::new(EntityKind::Company, c.as_str()))
                    }),
                (EntityKind::Deal, None) => None,
                _ => Some(r.entity.clone()),
            }
        };
        let owners: Vec<EntityRef> = records.iter().filter_map(owner_of).collect();
        if owners.is_empty() {
            return Ok(());
        }
        let placeholders = (0..owners.len())
            .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
            .collect::<Vec<_>>()
            .join(" OR (entity_kind, entity_id) = ");
        let sql = format!(
            "SELECT entity_kind, entity_id, kind, value FROM entity_identifiers \
             WHERE (entity_kind, entity_id) = {placeholders} ORDER BY position"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for owner in &owners {
            query = query.bind(owner.kind.as_str()).bind(owner.id.as_str());
        }
        let rows = query.fetch_all(self.reader()).await?;
        for row in &rows {
            let kind: String = col(row, "entity_kind")?;
            let id: String = col(row, "entity_id")?;
            let identifier_kind: String = col(row, "kind")?;
            let value: String = col(row, "value")?;
            for record in records.iter_mut() {
                if owner_of(record).is_some_and(|o| o.kind.as_str() == kind && o.id == id) {
                    if identifier_kind == "email" {
                        record.emails.push(value.clone());
                    } else {
                        record.phones.push(value.clone());
                    }
                }
            }
        }
        Ok(())
    }
}

/// The condition of a search (`?q=`) on the entity `e` of `kind`: the text inside its name
/// or one of its identifiers (e-mail addresses are stored in lower case), the number
/// itself, or its digits inside a stored number. Deals carry no identifiers and are found
/// by their own name or by their contact's or company's name and identifiers.
///
/// No index serves a substring, so a search reads the list in its `id` order until the
/// page is full: cheap for a common text, a scan of the table for a rare one. The
/// identifiers are searched once per query (an uncorrelated `IN`), not once per row.
fn search_clause(
    query: &mut FilteredPage,
    backend: Backend,
    kind: EntityKind,
    search: &Search,
) -> String {
    let text = query.bind(like_contains(&search.text));
    let mut on_value = Vec::new();
    // Stored identifiers hold no white space: text with a space is a name only (and
    // "contact 12" costs no pass over the identifiers).
    if !search.text.contains(char::is_whitespace) {
        on_value.push(format!("ei.value LIKE {text} ESCAPE '\\'"));
    }
    if let Some(phone) = &search.phone {
        let phone = query.bind(phone.clone());
        on_value.push(format!("ei.value = {phone}"));
    }
    if let Some(digits) = &search.digits {
        let digits = query.bind(like_contains(digits));
        on_value.push(format!("ei.value LIKE {digits} ESCAPE '\\'"));
    }
    let on_value = on_value.join(" OR ");
    let on_value = on_value.as_str();
    let identified = |kind: EntityKind| {
        format!(
            "SELECT ei.entity_id FROM entity_identifiers ei \
             WHERE ei.entity_kind = '{}' AND ({on_value})",
            kind.as_str()
        )
    };
    // SQLite's LIKE ignores the case of ASCII letters by itself (and its LOWER folds no
    // other letter): the name is compared as stored, and also as typed so that `Özdemir`
    // is found. PostgreSQL's LOWER folds every letter.
    let typed =
        (backend == Backend::Sqlite && !search.typed.is_ascii() && search.typed != search.text)
            .then(|| query.bind(like_contains(&search.typed)));
    let name_like = |column: &str| match (backend, &typed) {
        (Backend::Sqlite, Some(typed)) => {
            format!("({column} LIKE {text} ESCAPE '\\' OR {column} LIKE {typed} ESCAPE '\\')")
        }
        (Backend::Sqlite, None) => format!("{column} LIKE {text} ESCAPE '\\'"),
        (Backend::Postgres, _) => format!("LOWER({column}) LIKE {text} ESCAPE '\\'"),
    };
    let mut any = vec![name_like("e.name")];
    if kind == EntityKind::Deal {
        any.push(format!(
            "EXISTS (SELECT 1 FROM contacts c WHERE c.id = e.contact_id AND {})",
            name_like("c.name")
        ));
        any.push(format!(
            "EXISTS (SELECT 1 FROM companies c WHERE c.id = e.company_id AND {})",
            name_like("c.name")
        ));
        if !on_value.is_empty() {
            any.push(format!(
                "e.contact_id IN ({})",
                identified(EntityKind::Contact)
            ));
            any.push(format!(
                "e.company_id IN ({})",
                identified(EntityKind::Company)
            ));
        }
    } else if !on_value.is_empty() {
        any.push(format!("e.id IN ({})", identified(kind)));
    }
    any.join(" OR ")
}

pub(crate) fn stored_identifier(kind: &str, value: &str) -> Result<Identifier> {
    match kind {
        "phone" => Ok(Identifier::Phone(super::matching::stored_phone_key(value))),
        "email" => crate::matcher::parse_email(value)
            .map(Identifier::Email)
            .map_err(|e| StoreError::Corrupt(format!("stored e-mail '{value}': {e}"))),
        other => Err(StoreError::Corrupt(format!("identifier kind '{other}'"))),
    }
}

/// A foreign key that points nowhere is the client's mistake (unknown user, stage …).
fn reference_error(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err
        && db.is_foreign_key_violation()
    {
        return StoreError::invalid(
            "reference",
            "a referenced user, pipeline, stage or source does not exist",
        );
    }
    on_unique(err, "conflict", || "this value is already taken".to_owned())
}

fn entity_from_row(kind: EntityKind, row: &AnyRow) -> Result<EntityRecord> {
    let mut record = EntityRecord {
        entity: EntityRef::new(kind, col::<String>(row, "id")?),
        name: col(row, "name")?,
        phones: Vec::new(),
        emails: Vec::new(),
        responsible: col::<Option<String>>(row, "responsible")?.map(UserId),
        source: col(row, "source")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        last_activity_at: col(row, "last_activity_at")?,
        company: None,
        lead_status: None,
        customer: None,
        converted: Vec::new(),
        deal: None,
    };
    match kind {
        EntityKind::Contact => record.company = col(row, "company_id")?,
        EntityKind::Company => {}
        EntityKind::Lead => {
            let status: String = col(row, "status")?;
            record.lead_status = Some(parse_stored(&status, "leads.status")?);
            record.customer = col(row, "customer")?;
            for (column, kind) in [
                ("converted_contact", EntityKind::Contact),
                ("converted_company", EntityKind::Company),
                ("converted_deal", EntityKind::Deal),
            ] {
                if let Some(id) = col::<Option<String>>(row, column)? {
                    record.converted.push(EntityRef::new(kind, id));
                }
            }
        }
        EntityKind::Deal => {
            let status: String = col(row, "status")?;
            record.deal = Some(DealFields {
                contact: col(row, "contact_id")?,
                company: col(row, "company_id")?,
                pipeline: col(row, "pipeline_id")?,
                stage: col(row, "stage_id")?,
                status: parse_stored(&status, "deals.status")?,
            });
        }
    }
    Ok(record)
}
