//! `/stats`: counts for the console's dashboard. Calls are counted with the call log's
//! own visibility (A1/A2): an agent's figures cover exactly the calls they can list.

mod chart;
mod period;

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{CACHE_CONTROL, CONTENT_LANGUAGE, CONTENT_TYPE, VARY};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::access::Access;
use super::auth::Principal;
use super::calls::visible_filter;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiQuery;
use crate::crm::stats::{
    self, CallFacts, Counts, GroupBy, HourCount, by_hour, hour_items, hours_from, ordered,
};
use crate::store::{CallFilter, CallRecord, Page, now_ms};

use chart::{ChartLabels, hourly_chart};
use period::Period;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct CallStatsQuery {
    /// Start: a day (`YYYY-MM-DD`, from 00:00 UTC) or an RFC 3339 time. Default: today.
    pub from: Option<String>,
    /// End: a day (that whole day, UTC, included) or an RFC 3339 time (included).
    /// Default: the end of today. At most 366 days after `from`.
    pub to: Option<String>,
    /// hour (default) | number | queue | agent
    pub by: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct PeriodQuery {
    /// Start: a day (`YYYY-MM-DD`, from 00:00 UTC) or an RFC 3339 time. Default: today.
    pub from: Option<String>,
    /// End: a day (that whole day, UTC, included) or an RFC 3339 time (included).
    /// Default: the end of today. At most 366 days after `from`.
    pub to: Option<String>,
}

/// One bucket's figures. Every figure covers the incoming calls that started in the range
/// (and that the reader sees in the call log).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallStatsItem {
    /// The hour `00`..`23` (UTC), our number in E.164, a queue id or a user id.
    pub key: String,
    /// offered: incoming calls started in the range (ringing and waiting ones included).
    pub offered: u64,
    /// answered: answered by an agent (`answered_at` set; the queue answering a caller to
    /// play music does NOT set `answered_at`): outcome `answered`, or talking now.
    pub answered: u64,
    /// missed: ended unanswered with outcome missed, busy, failed or cancelled — NOT
    /// abandoned.
    pub missed: u64,
    /// abandoned: outcome `abandoned` (the caller hung up while waiting in the queue).
    pub abandoned: u64,
    /// avg_wait_s: over the offered calls, the time the caller waited in the queue, a
    /// caller who never waited counting as 0; seconds with millisecond precision (e.g.
    /// 12.5); 0 when nothing was offered.
    pub avg_wait_s: f64,
    /// max_wait_s: the longest wait of an offered call, in seconds (millisecond
    /// precision); 0 when nothing was offered.
    pub max_wait_s: f64,
    /// service_level: share (0.0–1.0) of offered calls answered within 20 s of the
    /// call's start (`answered_at - started_at <= 20000` ms); null when nothing was
    /// offered.
    pub service_level: Option<f64>,
    /// avg_talk_s: average `ended_at - answered_at` over answered calls that have ended,
    /// in seconds (millisecond precision); null when there are none.
    pub avg_talk_s: Option<f64>,
}

impl CallStatsItem {
    fn of(key: String, counts: &Counts) -> Self {
        let figures = counts.figures();
        CallStatsItem {
            key,
            offered: counts.offered,
            answered: counts.answered,
            missed: counts.missed,
            abandoned: counts.abandoned,
            avg_wait_s: figures.avg_wait_s,
            max_wait_s: figures.max_wait_s,
            service_level: figures.service_level,
            avg_talk_s: figures.avg_talk_s,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallStats {
    /// By hour: all 24 hours in order. Otherwise: the most offered first.
    pub items: Vec<CallStatsItem>,
}

/// Incoming calls offered, answered, missed and abandoned in a range, with the callers'
/// wait in the queue, the service level (answered within 20 s) and the talk time; by
/// hour of the day (UTC), our number, queue (the call's own, else its number's current
/// one), or agent (who answered, else who is responsible). Agents count the calls they
/// see in the call log (A1, A2); trunk tokens are refused. Admins' figures are summed in
/// SQL, agents' over their visible calls, by the same rules.
#[utoipa::path(get, path = "/stats/calls", tag = "stats", params(CallStatsQuery),
    responses((status = 200, body = CallStats), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn call_stats(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<CallStatsQuery>,
) -> ApiResult<Json<CallStats>> {
    let access = Access::of(&state, &principal).await?;
    let period = period::parse(query.from.as_deref(), query.to.as_deref(), now_ms())?;
    let by = match query.by.as_deref() {
        None => GroupBy::Hour,
        Some(text) => GroupBy::parse(text).ok_or_else(|| {
            ApiError::field(
                "invalid_group",
                "by",
                format!(
                    "by: '{}' is not a grouping; use one of: {}",
                    text.chars().take(32).collect::<String>(),
                    GroupBy::CHOICES
                ),
            )
        })?,
    };
    let items = if by == GroupBy::Hour {
        hour_items(&hourly(&state, &access, period).await?)
    } else if access.sees_all_entities() {
        ordered(state.store.call_counts(period.from, period.to, by).await?)
    } else {
        let calls = visible_calls(&state, &access, period).await?;
        let queues = match by {
            GroupBy::Queue => state.store.number_queues().await?,
            _ => HashMap::new(),
        };
        stats::tally(calls.iter().map(facts), by, |n| queues.get(n).cloned())
    };
    Ok(Json(CallStats {
        items: items
            .into_iter()
            .map(|(key, c)| CallStatsItem::of(key, &c))
            .collect(),
    }))
}

/// The dashboard's chart: answered and missed incoming calls per hour (UTC) as SVG, in the
/// console's language (`lang` cookie or `Accept-Language`), over the calls the caller
/// sees in the call log (A1, A2).
#[utoipa::path(get, path = "/stats/calls/chart.svg", tag = "stats", params(PeriodQuery),
    responses((status = 200, content_type = "image/svg+xml", body = String),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn call_chart(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<PeriodQuery>,
) -> ApiResult<Response> {
    let access = Access::of(&state, &principal).await?;
    let period = period::parse(query.from.as_deref(), query.to.as_deref(), now_ms())?;
    let buckets = hourly(&state, &access, period).await?;
    let lang = crate::console::request_lang(&headers);
    let text = |key| crate::console::text(lang, key);
    let labels = ChartLabels {
        title: text("chart.title"),
        answered: text("chart.answered"),
        missed: text("chart.missed"),
        empty: text("chart.empty"),
    };
    Ok((
        [
            (CONTENT_TYPE, "image/svg+xml"),
            // Live figures, and per person: no cache may keep them.
            (CACHE_CONTROL, "no-store"),
            (CONTENT_LANGUAGE, lang),
            (VARY, "Accept-Language, Cookie"),
        ],
        hourly_chart(&buckets, &labels),
    )
        .into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MailboxCount {
    /// Mailbox id; null for the forward address.
    pub mailbox: Option<String>,
    pub ingested: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmailStats {
    /// E-mails taken in during the range (by `ingested_at`, E15), every mailbox and the
    /// forward address.
    pub ingested: u64,
    /// Per mailbox, the most first; mailboxes without mail in the range are absent.
    pub by_mailbox: Vec<MailboxCount>,
}

/// E-mails taken in during a range, in all and per mailbox (admin: the counts cover
/// personal mailboxes too, whose mail is their owners').
#[utoipa::path(get, path = "/stats/emails", tag = "stats", params(PeriodQuery),
    responses((status = 200, body = EmailStats), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn email_stats(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PeriodQuery>,
) -> ApiResult<Json<EmailStats>> {
    principal.require_admin()?;
    let period = period::parse(query.from.as_deref(), query.to.as_deref(), now_ms())?;
    let counts = state.store.email_counts(period.from, period.to).await?;
    Ok(Json(EmailStats {
        ingested: counts.iter().map(|(_, n)| n).sum(),
        by_mailbox: counts
            .into_iter()
            .map(|(mailbox, ingested)| MailboxCount { mailbox, ingested })
            .collect(),
    }))
}

/// The 24 hourly buckets of the calls `access` sees in `period`.
async fn hourly(state: &AppState, access: &Access, period: Period) -> ApiResult<[HourCount; 24]> {
    if access.sees_all_entities() {
        let rows = state
            .store
            .call_counts(period.from, period.to, GroupBy::Hour)
            .await?;
        return Ok(hours_from(
            rows.into_iter()
                .filter_map(|(hour, counts)| Some((hour.parse().ok()?, counts))),
        ));
    }
    let calls = visible_calls(state, access, period).await?;
    Ok(by_hour(calls.iter().map(facts)))
}

/// Every call in `period` the caller may see, through the call log's own listing and
/// check. Only for callers below `all`: they see a few days' calls at a time, which fit in
/// memory; those who see everything are counted in SQL instead.
async fn visible_calls(
    state: &AppState,
    access: &Access,
    period: Period,
) -> ApiResult<Vec<CallRecord>> {
    let filter = CallFilter {
        started_from: Some(period.from),
        started_before: Some(period.to),
        ..visible_filter(access)
    };
    let mut page = Page {
        limit: Page::MAX,
        after: None,
    };
    let mut out = Vec::new();
    loop {
        let paged = state.store.list_calls(&filter, &page).await?;
        out.extend(access.visible_calls(state, paged.items).await?);
        match paged.next {
            Some(next) => page.after = Some(next),
            None => return Ok(out),
        }
    }
}

fn facts(call: &CallRecord) -> CallFacts<'_> {
    CallFacts {
        started_at: call.started_at,
        direction: call.direction,
        outcome: call.outcome,
        answered_at: call.answered_at,
        ended_at: call.ended_at,
        number: call.number.as_deref(),
        queue: call.queue.as_ref().map(|q| q.as_str()),
        wait_ms: call.wait_ms,
        answered_by: call.answered_by.as_ref(),
        responsible: call.responsible.as_ref(),
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(call_stats))
        .routes(routes!(call_chart))
        .routes(routes!(email_stats))
}
