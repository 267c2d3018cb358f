//! `/stats`: the dashboard's counts. Calls offered, answered and missed by hour, number,
//! queue or employee (`/stats/calls`, and drawn per hour as SVG in
//! `/stats/calls/chart.svg`), over exactly the calls the caller may see in the call log;
//! mail taken in per mailbox (`/stats/emails`, admins).

mod chart;

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use chart::{ChartLabels, HourBucket, hourly_chart};

use super::AppState;
use super::access::Access;
use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiQuery;
use super::period::{Period, closed_period};
use crate::crm::model::Millis;
use crate::crm::stats::{CallSample, GroupBy, Tally, tally};
use crate::store::{CallFilter, CallRecord, Page, now_ms};

/// The longest period counted at once.
const MAX_DAYS: i64 = 366;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct CallStatsQuery {
    /// From: RFC 3339, or a day `YYYY-MM-DD` (UTC, from its start). Default: today.
    pub from: Option<String>,
    /// To: RFC 3339, or a day `YYYY-MM-DD` (UTC, through its end). Default: the end of
    /// today (or of `from`'s day, when that is later); with `to` alone, that day.
    pub to: Option<String>,
    /// `hour` (00–23, UTC; the default), `number`, `queue` or `agent`.
    pub by: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct PeriodQuery {
    /// As for `/stats/calls`.
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallStatsItem {
    /// The hour `00`–`23` (UTC), our number (E.164), the queue id or the user id.
    pub key: String,
    /// Incoming calls.
    pub offered: u64,
    /// Of those, answered (by employee: answered by them).
    pub answered: u64,
    /// Of those, ended without anyone answering.
    pub missed: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallStats {
    pub items: Vec<CallStatsItem>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MailboxCount {
    /// The mailbox id; null for mail that came to the forward address (E16).
    pub mailbox: Option<String>,
    pub ingested: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmailStats {
    /// Messages taken into the mail store in the period (E15's `ingested_at`).
    pub ingested: u64,
    pub by_mailbox: Vec<MailboxCount>,
}

/// The dashboard's period: `?from=&to=` with today (UTC) for what is left out, at most
/// [`MAX_DAYS`] long.
fn dashboard_period(from: Option<&str>, to: Option<&str>) -> ApiResult<(Millis, Millis)> {
    let Period {
        start: Some(start),
        end: Some(end),
    } = closed_period(from, to, now_ms())?
    else {
        return Err(ApiError::Internal("a closed period has both ends".into()));
    };
    if end - start > MAX_DAYS * 24 * 60 * 60 * 1000 {
        return Err(ApiError::bad_request(
            "invalid_query",
            Some("to".to_owned()),
            format!("a period is at most {MAX_DAYS} days; narrow from and to"),
        ));
    }
    Ok((start, end))
}

/// The calls started in the period that the caller may see, by the call log's own rule
/// and queries (A1, A2), as the counts need them.
async fn visible_samples(
    state: &AppState,
    access: &Access,
    (start, end): (Millis, Millis),
) -> ApiResult<Vec<CallSample>> {
    let filter = CallFilter {
        started_from: Some(start),
        started_before: Some(end),
        visible_to: access.list_scope().filter(|_| !access.sees_all_entities()),
        ..CallFilter::default()
    };
    let mut page = Page {
        limit: Page::MAX,
        after: None,
    };
    let mut queues: HashMap<String, Option<String>> = HashMap::new();
    let mut samples = Vec::new();
    loop {
        let fetched = state.store.list_calls(&filter, &page).await?;
        for call in access.visible_calls(state, fetched.items).await? {
            let queue = match &call.number {
                Some(number) => {
                    if !queues.contains_key(number) {
                        let queue = state
                            .store
                            .number_settings(number)
                            .await?
                            .and_then(|n| n.queue)
                            .map(|q| q.to_string());
                        queues.insert(number.clone(), queue);
                    }
                    queues.get(number).cloned().flatten()
                }
                None => None,
            };
            samples.push(sample(call, queue));
        }
        match fetched.next {
            Some(next) => page.after = Some(next),
            None => return Ok(samples),
        }
    }
}

fn sample(call: CallRecord, queue: Option<String>) -> CallSample {
    let answered = call.answered_at.is_some();
    let mut rang = call.route;
    rang.extend(call.legs.into_iter().map(|leg| leg.user));
    CallSample {
        started_at: call.started_at,
        direction: call.direction,
        answered,
        ended: call.ended_at.is_some(),
        answered_by: call.answered_by,
        rang,
        number: call.number,
        queue,
    }
}

fn item(t: Tally) -> CallStatsItem {
    CallStatsItem {
        key: t.key,
        offered: t.offered,
        answered: t.answered,
        missed: t.missed,
    }
}

/// Incoming calls offered, answered and missed in the period, grouped: an agent counts
/// only the calls they may see in the call log.
#[utoipa::path(get, path = "/stats/calls", tag = "stats", params(CallStatsQuery),
    responses((status = 200, body = CallStats), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
async fn call_stats(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<CallStatsQuery>,
) -> ApiResult<Json<CallStats>> {
    let access = Access::of(&state, &principal).await?;
    let by = match query.by.as_deref() {
        None => GroupBy::Hour,
        Some(text) => text.parse().map_err(|e: crate::crm::model::UnknownName| {
            ApiError::bad_request("invalid_query", Some("by".into()), e.to_string())
        })?,
    };
    let period = dashboard_period(query.from.as_deref(), query.to.as_deref())?;
    let samples = visible_samples(&state, &access, period).await?;
    Ok(Json(CallStats {
        items: tally(&samples, by).into_iter().map(item).collect(),
    }))
}

/// The answered and missed calls per hour of the period as an SVG bar chart, in the
/// reader's language; an agent's counts only the calls they may see.
#[utoipa::path(get, path = "/stats/calls/chart.svg", tag = "stats", params(PeriodQuery),
    responses((status = 200, content_type = "image/svg+xml", body = String),
              (status = 400, body = ErrorBody)))]
async fn call_chart(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<PeriodQuery>,
) -> ApiResult<impl IntoResponse> {
    let access = Access::of(&state, &principal).await?;
    let period = dashboard_period(query.from.as_deref(), query.to.as_deref())?;
    let samples = visible_samples(&state, &access, period).await?;
    let buckets: Vec<HourBucket> = tally(&samples, GroupBy::Hour)
        .into_iter()
        .map(|t| HourBucket {
            hour: t.key.parse().unwrap_or(0),
            answered: t.answered,
            missed: t.missed,
        })
        .collect();
    let lang = crate::console::request_lang(&headers);
    let labels = ChartLabels {
        title: crate::console::text(lang, "chart.title"),
        answered: crate::console::text(lang, "chart.answered"),
        missed: crate::console::text(lang, "chart.missed"),
        empty: crate::console::text(lang, "chart.empty"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Nothing in it loads or runs anything, whoever opens it.
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        hourly_chart(&buckets, &labels),
    ))
}

/// Messages taken into the mail store in the period, in all and by mailbox (admins).
#[utoipa::path(get, path = "/stats/emails", tag = "stats", params(PeriodQuery),
    responses((status = 200, body = EmailStats), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
async fn email_stats(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PeriodQuery>,
) -> ApiResult<Json<EmailStats>> {
    principal.require_admin()?;
    let (start, end) = dashboard_period(query.from.as_deref(), query.to.as_deref())?;
    let counts = state.store.email_counts(start, end).await?;
    let by_mailbox: Vec<MailboxCount> = counts
        .into_iter()
        .map(|(mailbox, n)| MailboxCount {
            mailbox,
            ingested: u64::try_from(n).unwrap_or(0),
        })
        .collect();
    Ok(Json(EmailStats {
        ingested: by_mailbox.iter().map(|m| m.ingested).sum(),
        by_mailbox,
    }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(call_stats))
        .routes(routes!(call_chart))
        .routes(routes!(email_stats))
}
