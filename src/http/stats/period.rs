//! The range of a statistics request: the call log's `?from=&to=` bounds, read by
//! `http::period` (a day `YYYY-MM-DD` counted whole in UTC, or an RFC 3339 time,
//! included), with the dashboard's default (today, UTC) and limit (366 days).

use crate::crm::model::Millis;
use crate::http::error::{ApiError, ApiResult};
use crate::http::period::period;

const DAY_MS: Millis = 86_400_000;
/// The longest range: a leap year of whole days.
pub const MAX_DAYS: i64 = 366;

/// The half-open range `[from, to)` in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: Millis,
    pub to: Millis,
}

/// Well-formed bounds the statistics refuse (422, `field: "to"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("to is before from: the range would hold no time at all")]
    Reversed,
    #[error("the range is longer than {MAX_DAYS} days; ask for a shorter one")]
    TooLong,
}

impl From<RangeError> for ApiError {
    fn from(err: RangeError) -> Self {
        let code = match err {
            RangeError::Reversed => "invalid_range",
            RangeError::TooLong => "range_too_long",
        };
        ApiError::field(code, "to", err.to_string())
    }
}

/// The range of `?from=&to=`: an unreadable bound is the call log's `400 invalid_query`
/// naming it, a reversed or too long range `422`.
pub fn parse(from: Option<&str>, to: Option<&str>, now: Millis) -> ApiResult<Period> {
    // Each side alone: whether the two fit together is `resolve`'s rule, with its code.
    let start = period(from, None)?.start;
    let end = period(None, to)?.end;
    Ok(resolve(start, end, now)?)
}

fn start_of_day(at: Millis) -> Millis {
    at - at.rem_euclid(DAY_MS)
}

/// Fills in the open sides: without `from` the range starts with the day `to` ends in,
/// or today; without `to` it ends with today, or with `from`'s day when that is later.
pub fn resolve(
    start: Option<Millis>,
    end: Option<Millis>,
    now: Millis,
) -> Result<Period, RangeError> {
    let to = end.unwrap_or_else(|| {
        let end_of_today = start_of_day(now) + DAY_MS;
        start.map_or(end_of_today, |s| end_of_today.max(start_of_day(s) + DAY_MS))
    });
    let from = start.unwrap_or_else(|| match end {
        Some(end) => start_of_day(end - 1),
        None => start_of_day(now),
    });
    if to <= from {
        return Err(RangeError::Reversed);
    }
    if to - from > MAX_DAYS * DAY_MS {
        return Err(RangeError::TooLong);
    }
    Ok(Period { from, to })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV_23: Millis = 1_795_392_000_000; // 2026-11-23T00:00:00Z
    const NOW: Millis = NOV_23 + 10 * 3_600_000 + 5;

    #[test]
    fn default_is_today_in_utc() {
        assert_eq!(
            parse(None, None, NOW).unwrap(),
            Period {
                from: NOV_23,
                to: NOV_23 + DAY_MS
            }
        );
    }

    #[test]
    fn days_count_whole_and_a_lone_to_day_is_that_day() {
        assert_eq!(
            parse(Some("2026-11-23"), Some("2026-11-24"), NOW).unwrap(),
            Period {
                from: NOV_23,
                to: NOV_23 + 2 * DAY_MS
            }
        );
        assert_eq!(
            parse(None, Some("2026-11-20"), NOW).unwrap(),
            Period {
                from: NOV_23 - 3 * DAY_MS,
                to: NOV_23 - 2 * DAY_MS
            }
        );
    }

    #[test]
    fn a_missing_to_ends_with_today_or_with_a_later_from_day() {
        assert_eq!(
            parse(Some("2026-11-01"), None, NOW).unwrap().to,
            NOV_23 + DAY_MS
        );
        let later = parse(Some("2026-12-01T08:00:00Z"), None, NOW).unwrap();
        assert_eq!(later.to - start_of_day(later.from), DAY_MS);
    }

    #[test]
    fn to_before_from_is_422_on_to_and_unreadable_bounds_are_400_on_theirs() {
        for (from, to) in [
            ("2026-11-23", "2026-11-22"),
            ("2026-11-23T10:00:00Z", "2026-11-23T09:59:59Z"),
        ] {
            let ApiError::Invalid {
                status,
                code,
                field,
                ..
            } = parse(Some(from), Some(to), NOW).unwrap_err()
            else {
                panic!("a 4xx naming a field")
            };
            assert_eq!(
                (status.as_u16(), code, field.as_deref()),
                (422, "invalid_range", Some("to"))
            );
        }
        assert!(
            parse(
                Some("2026-11-23T10:00:00Z"),
                Some("2026-11-23T10:00:00Z"),
                NOW
            )
            .is_ok(),
            "a `to` time is included"
        );
        let ApiError::Invalid { status, field, .. } =
            parse(Some("23.11.2026"), None, NOW).unwrap_err()
        else {
            panic!("a 4xx naming a field")
        };
        assert_eq!((status.as_u16(), field.as_deref()), (400, Some("from")));
    }

    #[test]
    fn at_most_366_days() {
        assert!(parse(Some("2024-01-01"), Some("2024-12-31"), NOW).is_ok());
        assert_eq!(
            resolve(Some(NOV_23), Some(NOV_23 + 367 * DAY_MS), NOW),
            Err(RangeError::TooLong)
        );
        assert!(matches!(
            parse(Some("2024-01-01"), Some("2025-01-01"), NOW),
            Err(ApiError::Invalid {
                code: "range_too_long",
                ..
            })
        ));
    }
}
