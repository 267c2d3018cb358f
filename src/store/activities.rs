//! Activities: the timeline entries of calls (and, later, e-mails) on CRM entities.
//! An activity never exists without an entity.

use sqlx::any::AnyRow;

use super::calls::CallEvent;
use super::entities::{Tx, table};
use super::{Page, Paged, Result, Store, StoreError, col, parse_stored};
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
}

impl Store {
    /// The timeline of an entity, newest first.
    pub async fn list_activities(
        &self,
        entity: &EntityRef,
        page: &Page,
    ) -> Result<Paged<ActivityRecord>> {
        let rows = sqlx::query(
            "SELECT a.*, c.recording AS call_recording FROM activities a \
             JOIN activity_entities ae ON ae.activity_id = a.id \
             LEFT JOIN calls c ON c.id = a.call_id \
             WHERE ae.entity_kind = $1 AND ae.entity_id = $2 AND ($3 = '' OR a.id < $3) \
             ORDER BY a.id DESC LIMIT $4",
        )
        .bind(entity.kind.as_str())
        .bind(entity.id.as_str())
        .bind(page.after())
        .bind(page.sql_limit())
        .fetch_all(self.reader())
        .await?;
        let mut activities = rows
            .iter()
            .map(activity_from_row)
            .collect::<Result<Vec<_>>>()?;
        for activity in &mut activities {
            activity.entities = activity_entities(self.reader(), &activity.id).await?;
        }
        Ok(page.finish(activities, |a| a.id.clone()))
    }

    /// Writes (or, with `None`, removes) an activity's note.
    pub async fn set_activity_note(&self, id: &str, note: Option<&str>) -> Result<()> {
        let done = sqlx::query("UPDATE activities SET note = $2 WHERE id = $1")
            .bind(id)
            .bind(note)
            .execute(self.writer())
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
        Some(CallOutcome::Missed | CallOutcome::Cancelled) if direction == Direction::Incoming => {
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
    })
}
