//! Counts for the dashboard's statistics, aggregated in the database over a time range
//! (the rules of what counts are `crm::stats`'s).

use std::collections::HashMap;

use super::{Result, Store, col};
use crate::crm::model::Millis;
use crate::crm::stats::{ABANDONED_OUTCOME, Counts, GroupBy, MISSED_OUTCOMES, SERVICE_LEVEL_MS};

impl Store {
    /// Incoming calls that started in `[from, to)`, summed by `by` in SQL (index
    /// `calls_started`) as `crm::stats` counts them. For callers who may see every call:
    /// the per-call access check of the call log lets all of them through, so nothing is
    /// counted that they could not list. Hours are keyed by their number (0..=23).
    ///
    /// Only whole calls and milliseconds are summed here (the averages are
    /// [`Counts::figures`]'s), so SQLite and PostgreSQL give the same numbers.
    pub async fn call_counts(
        &self,
        from: Millis,
        to: Millis,
        by: GroupBy,
    ) -> Result<Vec<(String, Counts)>> {
        let (key, join, present) = match by {
            GroupBy::Hour => ("(c.started_at / 3600000) % 24", "", "1 = 1"),
            GroupBy::Number => ("c.number", "", "c.number IS NOT NULL"),
            // The call's own queue; calls from before queueing recorded none and fall back
            // on their number's queue as it is set up now.
            GroupBy::Queue => (
                "COALESCE(c.queue_id, n.queue_id)",
                "LEFT JOIN numbers n ON n.number = c.number",
                "COALESCE(c.queue_id, n.queue_id) IS NOT NULL",
            ),
            GroupBy::Agent => (
                "COALESCE(c.answered_by, c.responsible)",
                "",
                "COALESCE(c.answered_by, c.responsible) IS NOT NULL",
            ),
        };
        let sql = format!(
            "SELECT {key} AS stat_key, {sums} FROM calls c {join} \
             WHERE c.direction = 'incoming' AND c.started_at >= $1 AND c.started_at < $2 AND {present} \
             GROUP BY {key}",
            sums = sums_sql(),
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(to)
            .fetch_all(self.reader())
            .await?;
        rows.iter()
            .map(|row| {
                let key = match by {
                    GroupBy::Hour => col::<i64>(row, "stat_key")?.to_string(),
                    _ => col::<String>(row, "stat_key")?,
                };
                let count = |name| col::<i64>(row, name).map(|n| n.max(0) as u64);
                Ok((
                    key,
                    Counts {
                        offered: count("offered")?,
                        answered: count("answered")?,
                        missed: count("missed")?,
                        abandoned: count("abandoned")?,
                        wait_ms: count("wait_ms")?,
                        max_wait_ms: count("max_wait_ms")?,
                        answered_in_time: count("answered_in_time")?,
                        talked: count("talked")?,
                        talk_ms: count("talk_ms")?,
                    },
                ))
            })
            .collect()
    }

    /// The queue of each of our numbers that has one, by E.164.
    pub async fn number_queues(&self) -> Result<HashMap<String, String>> {
        let rows = sqlx::query("SELECT number, queue_id FROM numbers WHERE queue_id IS NOT NULL")
            .fetch_all(self.reader())
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    col::<String>(row, "number")?,
                    col::<String>(row, "queue_id")?,
                ))
            })
            .collect()
    }
}

/// The select list of [`Store::call_counts`]: `crm::stats`'s rules for one call, summed.
/// Sums of `BIGINT` columns are cast back: PostgreSQL's `SUM(bigint)` is `numeric`. A time
/// running backwards counts as 0, as in `crm::stats`.
fn sums_sql() -> String {
    // The outcomes and the threshold are constants of the code, not input.
    let missed = MISSED_OUTCOMES
        .iter()
        .map(|o| format!("'{}'", o.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let abandoned = ABANDONED_OUTCOME.as_str();
    let answered = "(c.outcome = 'answered' OR (c.outcome IS NULL AND c.answered_at IS NOT NULL))";
    let answer_known = format!("{answered} AND c.answered_at IS NOT NULL");
    let talk = format!("{answer_known} AND c.ended_at IS NOT NULL");
    let wait = "CASE WHEN c.wait_ms > 0 THEN c.wait_ms ELSE 0 END";
    format!(
        "COUNT(*) AS offered, \
         SUM(CASE WHEN {answered} THEN 1 ELSE 0 END) AS answered, \
         SUM(CASE WHEN c.outcome IN ({missed}) THEN 1 ELSE 0 END) AS missed, \
         SUM(CASE WHEN c.outcome = '{abandoned}' THEN 1 ELSE 0 END) AS abandoned, \
         CAST(SUM({wait}) AS BIGINT) AS wait_ms, \
         CAST(MAX({wait}) AS BIGINT) AS max_wait_ms, \
         SUM(CASE WHEN {answer_known} AND c.answered_at - c.started_at <= {SERVICE_LEVEL_MS} \
             THEN 1 ELSE 0 END) AS answered_in_time, \
         SUM(CASE WHEN {talk} THEN 1 ELSE 0 END) AS talked, \
         CAST(SUM(CASE WHEN {talk} AND c.ended_at > c.answered_at \
             THEN c.ended_at - c.answered_at ELSE 0 END) AS BIGINT) AS talk_ms"
    )
}

impl Store {
    /// E-mails taken in (E15's `ingested_at`) in `[from, to)`, by mailbox (`None`: the
    /// forward address), most first (index `emails_ingested`).
    pub async fn email_counts(
        &self,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<(Option<String>, u64)>> {
        let rows = sqlx::query(
            "SELECT mailbox_id, COUNT(*) AS ingested FROM emails \
             WHERE ingested_at >= $1 AND ingested_at < $2 GROUP BY mailbox_id",
        )
        .bind(from)
        .bind(to)
        .fetch_all(self.reader())
        .await?;
        let mut counts = rows
            .iter()
            .map(|row| {
                Ok((
                    col::<Option<String>>(row, "mailbox_id")?,
                    col::<i64>(row, "ingested")?.max(0) as u64,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        counts.sort_by(|(ma, a), (mb, b)| b.cmp(a).then_with(|| ma.cmp(mb)));
        Ok(counts)
    }
}
