//! The `from`/`to` bounds of a statistics request: a date (`YYYY-MM-DD`, a whole day in
//! UTC, `to` inclusive) or an RFC 3339 time; by default today (UTC).

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta};

use crate::crm::model::Millis;
use crate::http::error::ApiError;

const DAY_MS: Millis = 86_400_000;
/// The longest range: a leap year of whole days.
pub const MAX_DAYS: i64 = 366;

/// The half-open range `[from, to)` in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: Millis,
    pub to: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error(
        "{field}: '{value}' is neither a date (YYYY-MM-DD) nor an RFC 3339 time; write e.g. \
         2026-11-23 or 2026-11-23T10:00:00Z"
    )]
    Unreadable { field: &'static str, value: String },
    #[error("to ({to}) is before from ({from})")]
    Reversed { from: String, to: String },
    #[error("the range is longer than {MAX_DAYS} days; ask for a shorter one")]
    TooLong,
}

impl From<PeriodError> for ApiError {
    fn from(err: PeriodError) -> Self {
        let (code, field) = match &err {
            PeriodError::Unreadable { field, .. } => ("invalid_time", *field),
            PeriodError::Reversed { .. } => ("invalid_range", "to"),
            PeriodError::TooLong => ("range_too_long", "to"),
        };
        ApiError::field(code, field, err.to_string())
    }
}

/// One bound as given: a whole day or an instant.
enum Bound {
    Day(Millis),
    At(Millis),
}

fn read(field: &'static str, text: &str) -> Result<Bound, PeriodError> {
    let text = text.trim();
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(Bound::Day(
            day.and_time(NaiveTime::MIN).and_utc().timestamp_millis(),
        ));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| Bound::At(t.timestamp_millis()))
        .map_err(|_| PeriodError::Unreadable {
            field,
            value: text.chars().take(64).collect(),
        })
}

fn start_of_day(at: Millis) -> Millis {
    at - at.rem_euclid(DAY_MS)
}

/// The range asked for: a missing `from` starts at the start of `to`'s day, or today; a
/// missing `to` ends with today (or with `from`'s day when that is later).
pub fn parse(from: Option<&str>, to: Option<&str>, now: Millis) -> Result<Period, PeriodError> {
    let from_bound = from.map(|t| read("from", t)).transpose()?;
    let to_bound = to.map(|t| read("to", t)).transpose()?;
    let to_ms = match &to_bound {
        Some(Bound::Day(day)) => day + DAY_MS,
        Some(Bound::At(at)) => *at,
        None => {
            let end_of_today = start_of_day(now) + DAY_MS;
            match &from_bound {
                Some(Bound::Day(day)) => end_of_today.max(day + DAY_MS),
                Some(Bound::At(at)) => end_of_today.max(start_of_day(*at) + DAY_MS),
                None => end_of_today,
            }
        }
    };
    let from_ms = match from_bound {
        Some(Bound::Day(day) | Bound::At(day)) => day,
        None if to.is_some() => start_of_day(to_ms - 1),
        None => start_of_day(now),
    };
    // A `to` day ends after `from` unless the whole day lies before it (`to` the day
    // before a `from` day); a `to` time may equal `from` (an empty range).
    let reversed = match to_bound {
        Some(Bound::Day(_)) => to_ms <= from_ms,
        _ => to_ms < from_ms,
    };
    if reversed {
        return Err(PeriodError::Reversed {
            from: from.unwrap_or_default().trim().chars().take(64).collect(),
            to: to.unwrap_or_default().trim().chars().take(64).collect(),
        });
    }
    if TimeDelta::milliseconds(to_ms - from_ms) > TimeDelta::days(MAX_DAYS) {
        return Err(PeriodError::TooLong);
    }
    Ok(Period {
        from: from_ms,
        to: to_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV_23: Millis = 1_795_392_000_000; // 2026-11-23T00:00:00Z
    const NOW: Millis = NOV_23 + 10 * 3_600_000 + 5;

    #[test]
    fn default_is_today_in_utc() {
        assert_eq!(
            parse(None, None, NOW),
            Ok(Period {
                from: NOV_23,
                to: NOV_23 + DAY_MS
            })
        );
    }

    #[test]
    fn dates_are_whole_days_and_to_is_inclusive() {
        assert_eq!(
            parse(Some("2026-11-23"), Some("2026-11-24"), NOW),
            Ok(Period {
                from: NOV_23,
                to: NOV_23 + 2 * DAY_MS
            })
        );
        assert_eq!(
            parse(Some("2026-11-23"), Some("2026-11-23"), NOW).map(|p| p.to - p.from),
            Ok(DAY_MS)
        );
        assert_eq!(
            parse(None, Some("2026-11-20"), NOW),
            Ok(Period {
                from: NOV_23 - 3 * DAY_MS,
                to: NOV_23 - 2 * DAY_MS
            })
        );
    }

    #[test]
    fn times_are_instants_with_any_offset() {
        assert_eq!(
            parse(
                Some("2026-11-23T10:00:00+01:00"),
                Some("2026-11-23T12:00:00Z"),
                NOW
            ),
            Ok(Period {
                from: NOV_23 + 9 * 3_600_000,
                to: NOV_23 + 12 * 3_600_000
            })
        );
    }

    #[test]
    fn a_missing_to_ends_with_today_or_with_a_later_from_day() {
        assert_eq!(
            parse(Some("2026-11-01"), None, NOW).map(|p| p.to),
            Ok(NOV_23 + DAY_MS)
        );
        assert_eq!(
            parse(Some("2026-12-01"), None, NOW).map(|p| p.to - p.from),
            Ok(DAY_MS)
        );
    }

    #[test]
    fn to_before_from_and_unreadable_bounds_are_refused() {
        assert!(matches!(
            parse(Some("2026-11-23"), Some("2026-11-22"), NOW),
            Err(PeriodError::Reversed { .. })
        ));
        assert!(
            parse(Some("2026-11-22T12:00:00Z"), Some("2026-11-22"), NOW).is_ok(),
            "from noon to the end of that day"
        );
        assert!(matches!(
            parse(Some("2026-11-23T00:00:00Z"), Some("2026-11-22"), NOW),
            Err(PeriodError::Reversed { .. })
        ));
        assert!(matches!(
            parse(Some("23.11.2026"), None, NOW),
            Err(PeriodError::Unreadable { field: "from", .. })
        ));
        assert!(matches!(
            parse(None, Some("2026-02-30"), NOW),
            Err(PeriodError::Unreadable { field: "to", .. })
        ));
        let ApiError::Invalid { field, code, .. } =
            ApiError::from(parse(Some("2026-11-23"), Some("2026-11-01"), NOW).unwrap_err())
        else {
            panic!("a 4xx with a field")
        };
        assert_eq!((field.as_deref(), code), (Some("to"), "invalid_range"));
    }

    #[test]
    fn at_most_366_days() {
        assert!(parse(Some("2024-01-01"), Some("2024-12-31"), NOW).is_ok());
        assert_eq!(
            parse(Some("2024-01-01"), Some("2025-01-01"), NOW),
            Err(PeriodError::TooLong)
        );
    }
}
