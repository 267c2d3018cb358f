//! Activities: the timeline entries of calls and e-mails on CRM entities, an employee's
//! open work among them, and their notes. An activity never exists without an entity.

use std::collections::HashMap;

use sqlx::any::AnyRow;

use super::calls::CallEvent;
use super::entities::{Tx, table};
use super::rows::{FilteredPage, placeholders};
use super::{Page, Paged, Result, Store, StoreError, col, parse_stored};
use crate::crm::decision::DecisionRecord;
use crate::crm::model::{
    ActivityKind, CallOutcome, CallRecordId, Direction, EntityRef, Millis, UserId,
};
use crate::matcher::Candidate;

/// One activity on the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityRecord {
    pub id: String,
    pub kind: ActivityKind,
    pub direction: Direction,
    pub subject: String,
    pub completed: bool,
    pub responsible: Option<UserId>,
    pub call: Option<String>,
    /// The call has a recording (or is a voicemail message).
    pub has_recording: bool,
    pub matched: Option<String>,
    pub match_reason: Option<String>,
    pub entities: Vec<EntityRef>,
    pub created_at: Millis,
    pub completed_at: Option<Millis>,
    /// The employee's note on it (what was said, what to do next).
    pub note: Option<String>,
    /// E-mail activities: the stored message (the first copy, when several mailboxes
    /// hold one).
    pub email: Option<String>,
    /// Why the intake made it; `None` for activities older than decision records and
    /// for those made by hand.
    pub decision: Option<DecisionRecord>,
}

/// Which activities a list holds.
#[derive(Debug, Clone, Default)]
pub struct ActivityFilter {
    /// The timeline of this entity.
    pub entity: Option<EntityRef>,
    /// Activities this employee is responsible for (their work).
    pub responsible: Option<UserId>,
    /// Completed (`true`) or open (`false`) ones.
    pub completed: Option<bool>,
}

impl Store {
    /// Activities newest first: an entity's timeline, an employee's work, or both.
    pub async fn list_activities(
        &self,
        filter: &ActivityFilter,
        page: &Page,
    ) -> Result<Paged<ActivityRecord>> {
        // A timeline is driven by the entity's links (a join, then a sort of its few
        // rows); an employee's work by the (responsible, completed, id) index.
        let from = if filter.entity.is_some() {
            "activities a JOIN activity_entities ae ON ae.activity_id = a.id"
        } else {
            "activities a"
        };
        let mut query = FilteredPage::new(
            format!(
                "SELECT a.*, c.recording AS call_recording, \
                 CASE WHEN a.kind = 'email' THEN \
                   (SELECT MIN(m.id) FROM emails m WHERE m.activity_id = a.id) END AS email_id \
                 FROM {from} LEFT JOIN calls c ON c.id = a.call_id \
                 WHERE ($1 = '' OR a.id < $1)"
            ),
            page.after(),
        );
        if let Some(entity) = &filter.entity {
            query.and("ae.entity_kind = $?", entity.kind.as_str().to_owned());
            query.and("ae.entity_id = $?", entity.id.clone());
        }
        if let Some(user) = &filter.responsible {
            query.and("a.responsible = $?", user.to_string());
        }
        if let Some(completed) = filter.completed {
            let completed = query.bind_int(i64::from(completed));
            query.and_clause(&format!("a.completed = {completed}"));
        }
        let rows = query.fetch("a.id DESC", page, self.reader()).await?;
        let mut activities = rows
            .iter()
            .map(activity_from_row)
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<&str> = activities.iter().map(|a| a.id.as_str()).collect();
        let mut links = entities_of_activities(self.reader(), &ids).await?;
        for activity in &mut activities {
            activity.entities = links.remove(&activity.id).unwrap_or_default();
        }
        Ok(page.finish(activities, |a| a.id.clone()))
    }

    /// Writes (or, with `None`, removes) an activity's note.
    pub async fn set_activity_note(&self, id: &str, note: Option<&str>) -> Result<()> {
        let done = self
            .execute_change(
                sqlx::query("UPDATE activities SET note = $2 WHERE id = $1")
                    .bind(id)
                    .bind(note),
                None,
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("activity", id));
        }
        Ok(())
    }
}

/// Every entity an activity is shown on, in a stable order.
pub(crate) async fn activity_entities(
    pool: &sqlx::AnyPool,
    activity: &str,
) -> Result<Vec<EntityRef>> {
    let links = sqlx::query(
        "SELECT entity_kind, entity_id FROM activity_entities WHERE activity_id = $1 \
         ORDER BY entity_kind, entity_id",
    )
    .bind(activity)
    .fetch_all(pool)
    .await?;
    links
        .iter()
        .map(|link| {
            let kind: String = col(link, "entity_kind")?;
            Ok(EntityRef::new(
                parse_stored(&kind, "activity_entities.entity_kind")?,
                col::<String>(link, "entity_id")?,
            ))
        })
        .collect()
}

/// The entities of many activities in one query, each in a stable order.
async fn entities_of_activities(
    pool: &sqlx::AnyPool,
    activities: &[&str],
) -> Result<HashMap<String, Vec<EntityRef>>> {
    let mut out: HashMap<String, Vec<EntityRef>> = HashMap::new();
    for chunk in activities.chunks(500) {
        let mut query = sqlx::query(dynamic_sql!(
            "SELECT activity_id, entity_kind, entity_id FROM activity_entities \
             WHERE activity_id IN ({}) ORDER BY entity_kind, entity_id",
            placeholders(1, chunk.len())
        ));
        for id in chunk {
            query = query.bind(*id);
        }
        for link in query.fetch_all(pool).await? {
            let kind: String = col(&link, "entity_kind")?;
            out.entry(col(&link, "activity_id")?)
                .or_default()
                .push(EntityRef::new(
                    parse_stored(&kind, "activity_entities.entity_kind")?,
                    col::<String>(&link, "entity_id")?,
                ));
        }
    }
    Ok(out)
}

pub(crate) fn activity_subject(
    direction: Direction,
    customer: &str,
    outcome: Option<CallOutcome>,
) -> String {
    let base = match direction {
        Direction::Incoming => format!("Incoming call from {customer}"),
        Direction::Outgoing => format!("Outgoing call to {customer}"),
    };
    match outcome {
        Some(CallOutcome::Answered) | None => base,
        Some(CallOutcome::Missed | CallOutcome::Cancelled | CallOutcome::Abandoned)
            if direction == Direction::Incoming =>
        {
            format!("Call back: missed call from {customer}")
        }
        Some(other) => format!("{base} ({other})"),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_call_activity(
    tx: &mut Tx<'_>,
    event: &CallEvent,
    call_row_id: &CallRecordId,
    entities: &[EntityRef],
    matched: Option<&Candidate>,
    reason: &str,
    responsible: Option<&UserId>,
    now: Millis,
) -> Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    let customer = match event.direction {
        Direction::Incoming => &event.from,
        Direction::Outgoing => &event.to,
    };
    sqlx::query(
        "INSERT INTO activities (id, kind, direction, subject, completed, responsible, call_id, \
         matched, match_reason, created_at) VALUES ($1, 'call', $2, $3, 0, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(event.direction.as_str())
    .bind(activity_subject(event.direction, customer, None))
    .bind(responsible.map(UserId::as_str))
    .bind(call_row_id.as_str())
    .bind(matched.map(|m| m.entity.to_string()))
    .bind(reason)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let mut seen = std::collections::HashSet::new();
    for entity in entities.iter().filter(|e| seen.insert((*e).clone())) {
        sqlx::query(
            "INSERT INTO activity_entities (activity_id, entity_kind, entity_id) VALUES ($1, $2, $3)",
        )
        .bind(&id)
        .bind(entity.kind.as_str())
        .bind(entity.id.as_str())
        .execute(&mut **tx)
        .await?;
        sqlx::query(dynamic_sql!(
            "UPDATE {} SET last_activity_at = $2 WHERE id = $1",
            table(entity.kind)
        ))
        .bind(entity.id.as_str())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(id)
}

fn activity_from_row(row: &AnyRow) -> Result<ActivityRecord> {
    let kind: String = col(row, "kind")?;
    let direction: String = col(row, "direction")?;
    Ok(ActivityRecord {
        id: col(row, "id")?,
        kind: parse_stored(&kind, "activities.kind")?,
        direction: parse_stored(&direction, "activities.direction")?,
        subject: col(row, "subject")?,
        completed: col::<i64>(row, "completed")? == 1,
        responsible: col::<Option<String>>(row, "responsible")?.map(UserId),
        call: col(row, "call_id")?,
        has_recording: col::<Option<String>>(row, "call_recording")?.is_some(),
        matched: col(row, "matched")?,
        match_reason: col(row, "match_reason")?,
        entities: Vec::new(),
        created_at: col(row, "created_at")?,
        completed_at: col(row, "completed_at")?,
        note: col(row, "note")?,
        email: col(row, "email_id")?,
        decision: DecisionRecord::from_stored(col::<Option<String>>(row, "decision")?.as_deref()),
    })
}
