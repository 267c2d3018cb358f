//! The time bounds `?from=` and `?to=` of the call log and the statistics: an RFC 3339
//! instant, or a day `YYYY-MM-DD` in UTC that counts whole (from its first millisecond
//! through its last). Turned into a half-open range of milliseconds.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta};

use super::error::{ApiError, ApiResult};
use crate::crm::model::Millis;

/// Times from `start` (included) until `end` (excluded), in UTC milliseconds; `None`
/// leaves that side open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Period {
    pub start: Option<Millis>,
    pub end: Option<Millis>,
}

/// Which side of a period a bound is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    From,
    To,
}

/// Reads one bound; an instant is included on either side, a day from its start (`from`)
/// or through its end (`to`). The error says what to write.
fn bound(text: &str, side: Side) -> Result<Millis, String> {
    let text = text.trim();
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let day = match side {
            Side::From => day,
            Side::To => day
                .checked_add_signed(TimeDelta::days(1))
                .ok_or_else(|| format!("'{text}' is past the last day we can count"))?,
        };
        return Ok(day.and_time(NaiveTime::MIN).and_utc().timestamp_millis());
    }
    match DateTime::parse_from_rfc3339(text) {
        Ok(at) => Ok(match side {
            Side::From => at.timestamp_millis(),
            // Half-open: the instant itself is still in the period.
            Side::To => at.timestamp_millis() + 1,
        }),
        Err(_) => Err(format!(
            "'{text}' is neither a day like 2026-11-23 nor a time like 2026-11-23T10:00:00Z"
        )),
    }
}

/// The period of `?from=&to=`; errors name the field. A `to` before `from` is refused.
pub fn period(from: Option<&str>, to: Option<&str>) -> ApiResult<Period> {
    let read = |field: &str, text: Option<&str>, side| {
        text.map(|t| bound(t, side)).transpose().map_err(|message| {
            ApiError::bad_request(
                "invalid_query",
                Some(field.to_owned()),
                format!("{field}: {message}"),
            )
        })
    };
    let start = read("from", from, Side::From)?;
    let end = read("to", to, Side::To)?;
    if let (Some(start), Some(end)) = (start, end)
        && end <= start
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            Some("to".to_owned()),
            "to must not be before from",
        ));
    }
    Ok(Period { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> Millis {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn a_day_counts_whole_from_its_first_to_its_last_millisecond_in_utc() {
        let p = period(Some("2026-11-23"), Some("2026-11-23")).unwrap();
        assert_eq!(p.start, Some(ms("2026-11-23T00:00:00Z")));
        assert_eq!(p.end, Some(ms("2026-11-24T00:00:00Z")));
        // The year's last day ends at the next year's first instant.
        let p = period(None, Some("2026-12-31")).unwrap();
        assert_eq!(p.end, Some(ms("2027-01-01T00:00:00Z")));
    }

    #[test]
    fn an_instant_is_included_on_both_sides_whatever_its_offset() {
        let p = period(
            Some("2026-11-23T10:00:00+01:00"),
            Some("2026-11-23T10:30:00.250Z"),
        )
        .unwrap();
        assert_eq!(p.start, Some(ms("2026-11-23T09:00:00Z")));
        assert_eq!(p.end, Some(ms("2026-11-23T10:30:00.250Z") + 1));
    }

    #[test]
    fn bad_bounds_name_their_field() {
        for (from, to, field) in [
            (Some("23.11.2026"), None, "from"),
            (None, Some("2026-02-30"), "to"),
            (Some("2026-11-24"), Some("2026-11-23"), "to"),
            (None, Some("today"), "to"),
        ] {
            match period(from, to).unwrap_err() {
                ApiError::Invalid {
                    field: Some(f),
                    code,
                    ..
                } => assert_eq!(
                    (f.as_str(), code),
                    (field, "invalid_query"),
                    "{from:?} {to:?}"
                ),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(period(None, None).unwrap(), Period::default());
    }
}
