//! A number's working hours and its after-hours rule (API.md, "Media fields on a number").
//!
//! Owns the validated schedule (`Hours`: a time zone, weekly intervals, days off), the
//! question "is the number open at this instant", the rule applied when it is not or when
//! nobody in the queue answers (`AfterHours`), and the SIP status of a rejection. Pure:
//! the clock is an argument, nothing here reads the time, a file or the database.
//!
//! Time semantics, chosen so that an admin's reading of the schedule is the right one:
//! - A schedule is read off the wall clock of its time zone. `is_open` converts the
//!   instant to local time (always well defined) and looks the local time up, so
//!   daylight-saving changes need no special case. On the spring-forward day an interval
//!   that starts in the skipped hour starts when the clock jumps (Berlin: 02:30 opens at
//!   03:00), and one that ends in it ends at the jump. On the fall-back day the repeated
//!   hour is looked up on both passes: an interval ending at 02:30 is open in the first
//!   02:00–02:30 and again in the second.
//! - Times have minute resolution; an interval includes its start minute and excludes its
//!   end minute (`["09:00","18:00"]` is open at 17:59:59, closed at 18:00:00).
//! - An interval whose end is before its start runs past midnight into the next day and
//!   belongs to the day it starts on: `fri: [["22:00","06:00"]]` is Friday 22:00 to
//!   Saturday 06:00. `"24:00"` (or `"00:00"`) as an end means midnight at the end of the
//!   day; both are stored, and written back, as `"24:00"`.
//! - A day off closes the intervals that start on it. An overnight interval that started
//!   the evening before a day off still runs until its end; one that would start on a day
//!   off does not start, so nothing of it spills into the next morning.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde_json::{Map, Value};

/// A validation error that names the offending field (`hours.week.mon[0]`) and says what
/// to write instead; the HTTP layer returns it as a 422 with the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct HoursError {
    pub field: String,
    pub message: String,
}

impl HoursError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

const MINUTES_PER_DAY: u16 = 24 * 60;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY as u32;

/// Weekday keys of the JSON shape, in the order of `Weekday::num_days_from_monday`.
const DAY_KEYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One opening interval of a day, in minutes since local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Interval {
    /// 0..=1439.
    start: u16,
    /// 1..=1440 when the interval ends the same day (1440 = midnight), or below `start`
    /// when it runs into the next day.
    end: u16,
}

impl Interval {
    fn overnight(self) -> bool {
        self.end < self.start
    }

    /// Where the interval ends counted from the midnight it starts after (may pass 1440).
    fn end_from_start_day(self) -> u32 {
        if self.overnight() {
            u32::from(self.end) + u32::from(MINUTES_PER_DAY)
        } else {
            u32::from(self.end)
        }
    }

    fn to_json(self) -> Value {
        Value::Array(vec![
            Value::String(format_minutes(self.start)),
            Value::String(format_minutes(self.end)),
        ])
    }
}

/// A number's working hours: open during the listed local intervals, closed otherwise.
/// Built only by [`Hours::parse`] (or serde, which goes through it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct Hours {
    tz: Tz,
    /// Indexed by `Weekday::num_days_from_monday`, sorted by start.
    week: [Vec<Interval>; 7],
    days_off: BTreeSet<NaiveDate>,
}

impl Hours {
    /// Validates the JSON of a number's `hours` field. Every error names the field
    /// (`hours.week.fri[1]`) and what to write instead.
    pub fn parse(value: &Value) -> Result<Hours, HoursError> {
        let Value::Object(object) = value else {
            return Err(HoursError::new(
                "hours",
                "must be an object such as {\"tz\": \"Europe/Berlin\", \"week\": {\"mon\": \
                 [[\"09:00\",\"18:00\"]]}, \"days_off\": []}, or null for always open",
            ));
        };
        if let Some(key) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "tz" | "week" | "days_off"))
        {
            return Err(HoursError::new(
                format!("hours.{key}"),
                "unknown field; the fields are tz, week and days_off",
            ));
        }
        let tz = parse_tz(object.get("tz"))?;
        let week = parse_week(object.get("week"))?;
        let days_off = parse_days_off(object.get("days_off"))?;
        Ok(Hours { tz, week, days_off })
    }

    /// The time zone the schedule is read in.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// Whether the number is open at `at` (see the module doc for DST and days off).
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.tz).naive_local();
        let date = local.date();
        // hour() < 24 and minute() < 60, so this fits comfortably.
        let minute = (local.hour() * 60 + local.minute()) as u16;
        let today = !self.days_off.contains(&date)
            && self
                .intervals(date.weekday())
                .iter()
                .any(|i| i.start <= minute && u32::from(minute) < i.end_from_start_day().min(1440));
        if today {
            return true;
        }
        // An overnight interval of yesterday still runs this morning, unless yesterday
        // was a day off (then it never started).
        date.pred_opt().is_some_and(|yesterday| {
            !self.days_off.contains(&yesterday)
                && self
                    .intervals(yesterday.weekday())
                    .iter()
                    .any(|i| i.overnight() && minute < i.end)
        })
    }

    /// The same JSON shape [`Hours::parse`] reads: weekdays without intervals are left
    /// out, intervals are sorted, a midnight end is written `"24:00"`, days off are
    /// sorted and unique.
    pub fn to_json(&self) -> Value {
        let mut week = Map::new();
        for (key, intervals) in DAY_KEYS.iter().zip(&self.week) {
            if !intervals.is_empty() {
                week.insert(
                    (*key).to_owned(),
                    Value::Array(intervals.iter().map(|i| i.to_json()).collect()),
                );
            }
        }
        let days_off = self
            .days_off
            .iter()
            .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
            .collect();
        let mut object = Map::new();
        object.insert("tz".to_owned(), Value::String(self.tz.name().to_owned()));
        object.insert("week".to_owned(), Value::Object(week));
        object.insert("days_off".to_owned(), Value::Array(days_off));
        Value::Object(object)
    }

    fn intervals(&self, day: Weekday) -> &[Interval] {
        &self.week[day.num_days_from_monday() as usize]
    }
}

impl serde::Serialize for Hours {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl TryFrom<Value> for Hours {
    type Error = HoursError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Hours::parse(&value)
    }
}

fn parse_tz(value: Option<&Value>) -> Result<Tz, HoursError> {
    let example = "use an IANA time zone name such as \"Europe/Berlin\"";
    match value {
        Some(Value::String(name)) => name.parse::<Tz>().map_err(|_| {
            HoursError::new(
                "hours.tz",
                format!("unknown time zone \"{name}\"; {example}"),
            )
        }),
        Some(_) => Err(HoursError::new(
            "hours.tz",
            format!("must be a string; {example}"),
        )),
        None => Err(HoursError::new(
            "hours.tz",
            format!("is required; {example}"),
        )),
    }
}

fn parse_week(value: Option<&Value>) -> Result<[Vec<Interval>; 7], HoursError> {
    let Some(value) = value else {
        return Err(HoursError::new(
            "hours.week",
            "is required: the opening intervals per weekday, e.g. {\"mon\": \
             [[\"09:00\",\"18:00\"]]}; set hours to null for always open",
        ));
    };
    let Value::Object(days) = value else {
        return Err(HoursError::new(
            "hours.week",
            "must be an object with weekday keys (mon … sun), e.g. {\"mon\": \
             [[\"09:00\",\"18:00\"]]}",
        ));
    };
    if let Some(key) = days.keys().find(|k| !DAY_KEYS.contains(&k.as_str())) {
        return Err(HoursError::new(
            format!("hours.week.{key}"),
            "unknown weekday; use mon, tue, wed, thu, fri, sat or sun",
        ));
    }
    let mut week: [Vec<Interval>; 7] = Default::default();
    // Minute-of-week spans accepted so far, with the field that holds each, so that an
    // overlap (also one across midnight into the next day) names both intervals.
    let mut taken: Vec<(u32, u32, usize, String, Interval)> = Vec::new();
    for (day, key) in DAY_KEYS.iter().enumerate() {
        let Some(list) = days.get(*key) else {
            continue;
        };
        let Value::Array(list) = list else {
            return Err(HoursError::new(
                format!("hours.week.{key}"),
                "must be a list of [start, end] pairs such as [[\"09:00\",\"18:00\"]]; \
                 leave the day out (or use []) for closed all day",
            ));
        };
        for (index, item) in list.iter().enumerate() {
            let field = format!("hours.week.{key}[{index}]");
            let interval = parse_interval(item, &field)?;
            let day_start = day as u32 * u32::from(MINUTES_PER_DAY);
            let start = day_start + u32::from(interval.start);
            let end = day_start + interval.end_from_start_day();
            for (other_start, other_end, other_day, other_field, other) in &taken {
                if spans_overlap(start, end, *other_start, *other_end) {
                    let across = if *other_day != day {
                        " (an interval that ends before it starts runs past midnight into \
                         the next day)"
                    } else {
                        ""
                    };
                    return Err(HoursError::new(
                        field,
                        format!(
                            "{}–{} overlaps {other_field} {}–{}{across}; merge them into \
                             one interval or make them touch without overlapping",
                            format_minutes(interval.start),
                            format_minutes(interval.end),
                            format_minutes(other.start),
                            format_minutes(other.end),
                        ),
                    ));
                }
            }
            taken.push((start, end, day, field, interval));
            week[day].push(interval);
        }
        week[day].sort();
    }
    Ok(week)
}

/// Whether two minute-of-week spans overlap, the week being a circle (Sunday night runs
/// into Monday morning).
fn spans_overlap(a_start: u32, a_end: u32, b_start: u32, b_end: u32) -> bool {
    let shifts = [0, MINUTES_PER_WEEK];
    shifts.iter().any(|&sa| {
        shifts
            .iter()
            .any(|&sb| a_start + sa < b_end + sb && b_start + sb < a_end + sa)
    })
}

fn parse_interval(item: &Value, field: &str) -> Result<Interval, HoursError> {
    let shape = "must be a pair [\"HH:MM\", \"HH:MM\"] such as [\"09:00\",\"18:00\"]";
    let Value::Array(pair) = item else {
        return Err(HoursError::new(field, shape));
    };
    let [Value::String(start), Value::String(end)] = pair.as_slice() else {
        return Err(HoursError::new(field, shape));
    };
    let start_minutes = parse_time(start).filter(|&m| m < MINUTES_PER_DAY);
    let Some(start_minutes) = start_minutes else {
        let hint = if start == "24:00" {
            "24:00 can only end an interval; start the next day at \"00:00\"".to_owned()
        } else {
            format!(
                "the start \"{start}\" is not a time; write HH:MM on a 24-hour clock, e.g. \"09:00\""
            )
        };
        return Err(HoursError::new(field, hint));
    };
    let Some(end_minutes) = parse_time(end) else {
        return Err(HoursError::new(
            field,
            format!(
                "the end \"{end}\" is not a time; write HH:MM on a 24-hour clock, e.g. \
                 \"18:00\", or \"24:00\" for midnight"
            ),
        ));
    };
    if start_minutes == end_minutes {
        return Err(HoursError::new(
            field,
            "start and end are the same time; for the whole day write [\"00:00\",\"24:00\"]",
        ));
    }
    // "00:00" as an end is the midnight that ends the day, the same as "24:00".
    let end_minutes = if end_minutes == 0 {
        MINUTES_PER_DAY
    } else {
        end_minutes
    };
    Ok(Interval {
        start: start_minutes,
        end: end_minutes,
    })
}

/// `HH:MM` on a 24-hour clock, `24:00` included; minutes since midnight.
fn parse_time(text: &str) -> Option<u16> {
    let bytes = text.as_bytes();
    if bytes.len() != 5 || bytes[2] != b':' {
        return None;
    }
    let digit = |i: usize| {
        bytes[i]
            .is_ascii_digit()
            .then(|| u16::from(bytes[i] - b'0'))
    };
    let hours = digit(0)? * 10 + digit(1)?;
    let minutes = digit(3)? * 10 + digit(4)?;
    match (hours, minutes) {
        (24, 0) => Some(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Some(hours * 60 + minutes),
        _ => None,
    }
}

fn format_minutes(minutes: u16) -> String {
    let mut text = String::with_capacity(5);
    let _ = write!(text, "{:02}:{:02}", minutes / 60, minutes % 60);
    text
}

fn parse_days_off(value: Option<&Value>) -> Result<BTreeSet<NaiveDate>, HoursError> {
    let list = match value {
        None | Some(Value::Null) => return Ok(BTreeSet::new()),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(HoursError::new(
                "hours.days_off",
                "must be a list of dates such as [\"2026-12-25\"]",
            ));
        }
    };
    list.iter()
        .enumerate()
        .map(|(index, item)| {
            item.as_str().and_then(parse_date).ok_or_else(|| {
                HoursError::new(
                    format!("hours.days_off[{index}]"),
                    "is not a date; write YYYY-MM-DD, e.g. \"2026-12-25\"",
                )
            })
        })
        .collect()
}

/// Strict `YYYY-MM-DD` (chrono's own parser also takes signs and other widths).
fn parse_date(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shape_ok {
        return None;
    }
    let year = text[0..4].parse().ok()?;
    let month = text[5..7].parse().ok()?;
    let day = text[8..10].parse().ok()?;
    NaiveDate::from_ymd_opt(year, month, day)
}

/// What happens to a call outside working hours, or when nobody in the queue answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AfterHours {
    pub action: AfterHoursAction,
    /// The number to forward to, as the admin wrote it (the caller normalises to E.164).
    #[serde(default)]
    pub forward_to: Option<String>,
    /// Longest voicemail message, in seconds.
    #[serde(default = "default_max_message_s")]
    pub max_message_s: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterHoursAction {
    Voicemail,
    Forward,
    Reject,
}

const DEFAULT_MAX_MESSAGE_S: u32 = 120;
const MAX_MESSAGE_S: std::ops::RangeInclusive<u32> = 5..=600;

fn default_max_message_s() -> u32 {
    DEFAULT_MAX_MESSAGE_S
}

impl AfterHours {
    /// Validates the JSON of a number's `after_hours` field (serde's `Deserialize` is for
    /// values this crate stored itself and checks less).
    pub fn parse(value: &Value) -> Result<AfterHours, HoursError> {
        let Value::Object(object) = value else {
            return Err(HoursError::new(
                "after_hours",
                "must be an object such as {\"action\": \"voicemail\", \"max_message_s\": 120}",
            ));
        };
        if let Some(key) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "action" | "forward_to" | "max_message_s"))
        {
            return Err(HoursError::new(
                format!("after_hours.{key}"),
                "unknown field; the fields are action, forward_to and max_message_s",
            ));
        }
        let actions = "use \"voicemail\", \"forward\" or \"reject\"";
        let action = match object.get("action") {
            Some(Value::String(s)) if s == "voicemail" => AfterHoursAction::Voicemail,
            Some(Value::String(s)) if s == "forward" => AfterHoursAction::Forward,
            Some(Value::String(s)) if s == "reject" => AfterHoursAction::Reject,
            Some(Value::String(s)) => {
                return Err(HoursError::new(
                    "after_hours.action",
                    format!("unknown action \"{s}\"; {actions}"),
                ));
            }
            Some(_) => {
                return Err(HoursError::new(
                    "after_hours.action",
                    format!("must be a string; {actions}"),
                ));
            }
            None => {
                return Err(HoursError::new(
                    "after_hours.action",
                    format!("is required; {actions}"),
                ));
            }
        };
        let forward_to = match object.get("forward_to") {
            None | Some(Value::Null) => None,
            Some(Value::String(number)) if is_phone_number(number) => Some(number.clone()),
            Some(_) => {
                return Err(HoursError::new(
                    "after_hours.forward_to",
                    "is not a phone number; write digits with an optional leading + \
                     (spaces and dashes allowed), e.g. \"+49 30 1234567\"",
                ));
            }
        };
        if action == AfterHoursAction::Forward && forward_to.is_none() {
            return Err(HoursError::new(
                "after_hours.forward_to",
                "is required when action is \"forward\": the number to forward the call to, \
                 e.g. \"+49 30 1234567\"",
            ));
        }
        let range = format!(
            "must be a whole number of seconds from {} to {}",
            MAX_MESSAGE_S.start(),
            MAX_MESSAGE_S.end()
        );
        let max_message_s = match object.get("max_message_s") {
            None | Some(Value::Null) => DEFAULT_MAX_MESSAGE_S,
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| MAX_MESSAGE_S.contains(n))
                .ok_or_else(|| HoursError::new("after_hours.max_message_s", range.clone()))?,
            Some(_) => return Err(HoursError::new("after_hours.max_message_s", range)),
        };
        Ok(AfterHours {
            action,
            forward_to,
            max_message_s,
        })
    }
}

/// Digits with an optional leading `+`, spaces and dashes allowed between them.
fn is_phone_number(text: &str) -> bool {
    let rest = text.strip_prefix('+').unwrap_or(text);
    rest.chars().any(|c| c.is_ascii_digit())
        && rest
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
}

/// Why a call is turned away by an after-hours `reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The call arrived outside the number's working hours.
    OutsideHours,
    /// The queue was busy or nobody answered in time.
    NobodyAnswered,
}

/// The SIP final response for a rejected call: 480 Temporarily Unavailable outside hours
/// (RFC 3261 21.4.18: the callee is known but not reachable now), 486 Busy Here when the
/// queue was busy or nobody answered (21.4.24).
pub fn reject_status(why: Closed) -> u16 {
    match why {
        Closed::OutsideHours => 480,
        Closed::NobodyAnswered => 486,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test instants are valid RFC 3339")
            .with_timezone(&Utc)
    }

    fn hours(value: Value) -> Hours {
        Hours::parse(&value).expect("test schedule is valid")
    }

    fn error(value: Value) -> HoursError {
        Hours::parse(&value).expect_err("test schedule is invalid")
    }

    fn office_berlin() -> Hours {
        let day = json!([["09:00", "18:00"]]);
        hours(json!({"tz": "Europe/Berlin", "week": {
            "mon": day, "tue": day, "wed": day, "thu": day, "fri": day,
        }}))
    }

    #[test]
    fn office_hours_follow_berlin_winter_and_summer_time() {
        let h = office_berlin();
        // Monday before the change: CET, UTC+1.
        assert!(!h.is_open(at("2026-03-23T07:59:59Z")));
        assert!(h.is_open(at("2026-03-23T08:00:00Z")));
        assert!(h.is_open(at("2026-03-23T16:59:59Z")));
        assert!(!h.is_open(at("2026-03-23T17:00:00Z")));
        // Monday after 2026-03-29: CEST, UTC+2.
        assert!(!h.is_open(at("2026-03-30T06:59:59Z")));
        assert!(h.is_open(at("2026-03-30T07:00:00Z")));
        assert!(!h.is_open(at("2026-03-30T16:00:00Z")));
        // Monday after 2026-10-25: back to CET.
        assert!(h.is_open(at("2026-10-19T07:00:00Z")));
        assert!(!h.is_open(at("2026-10-26T07:59:00Z")));
        assert!(h.is_open(at("2026-10-26T08:00:00Z")));
        // Weekend closed.
        assert!(!h.is_open(at("2026-03-28T12:00:00Z")));
    }

    #[test]
    fn an_interval_starting_in_the_skipped_spring_hour_opens_at_the_jump() {
        // 2026-03-29 (Sunday): 02:00 CET becomes 03:00 CEST at 01:00 UTC.
        let h = hours(json!({"tz": "Europe/Berlin", "week": {"sun": [["02:30", "05:00"]]}}));
        assert!(!h.is_open(at("2026-03-29T00:59:59Z"))); // 01:59:59 CET
        assert!(h.is_open(at("2026-03-29T01:00:00Z"))); // 03:00 CEST
        assert!(h.is_open(at("2026-03-29T02:59:00Z"))); // 04:59 CEST
        assert!(!h.is_open(at("2026-03-29T03:00:00Z"))); // 05:00 CEST
    }

    #[test]
    fn an_overnight_interval_ending_in_the_skipped_spring_hour_ends_at_the_jump() {
        let h = hours(json!({"tz": "Europe/Berlin", "week": {"sat": [["22:00", "02:30"]]}}));
        assert!(h.is_open(at("2026-03-28T21:00:00Z"))); // Sat 22:00 CET
        assert!(h.is_open(at("2026-03-29T00:59:00Z"))); // Sun 01:59 CET
        assert!(!h.is_open(at("2026-03-29T01:00:00Z"))); // Sun 03:00 CEST
    }

    #[test]
    fn the_repeated_autumn_hour_is_looked_up_on_both_passes() {
        // 2026-10-25 (Sunday): 03:00 CEST becomes 02:00 CET at 01:00 UTC.
        let h = hours(json!({"tz": "Europe/Berlin", "week": {"sat": [["22:00", "02:30"]]}}));
        assert!(h.is_open(at("2026-10-24T20:00:00Z"))); // Sat 22:00 CEST
        assert!(h.is_open(at("2026-10-25T00:29:00Z"))); // 02:29 CEST
        assert!(!h.is_open(at("2026-10-25T00:30:00Z"))); // 02:30 CEST
        assert!(h.is_open(at("2026-10-25T01:00:00Z"))); // 02:00 CET, the second pass
        assert!(h.is_open(at("2026-10-25T01:29:00Z"))); // 02:29 CET
        assert!(!h.is_open(at("2026-10-25T01:30:00Z"))); // 02:30 CET
    }

    #[test]
    fn an_overnight_interval_runs_into_the_next_day_only() {
        // 2026-11-20 is a Friday.
        let h = hours(json!({"tz": "UTC", "week": {"fri": [["22:00", "06:00"]]}}));
        assert!(!h.is_open(at("2026-11-20T21:59:00Z")));
        assert!(h.is_open(at("2026-11-20T22:00:00Z")));
        assert!(h.is_open(at("2026-11-21T05:59:59Z")));
        assert!(!h.is_open(at("2026-11-21T06:00:00Z")));
        assert!(!h.is_open(at("2026-11-21T23:00:00Z")));
        assert!(!h.is_open(at("2026-11-20T03:00:00Z")));
    }

    #[test]
    fn sunday_night_runs_into_monday_morning() {
        // 2026-11-22 is a Sunday.
        let h = hours(json!({"tz": "UTC", "week": {"sun": [["23:00", "01:00"]]}}));
        assert!(h.is_open(at("2026-11-22T23:30:00Z")));
        assert!(h.is_open(at("2026-11-23T00:30:00Z")));
        assert!(!h.is_open(at("2026-11-23T01:00:00Z")));
    }

    #[test]
    fn a_day_off_closes_the_day_but_not_the_night_that_ran_into_it() {
        let week = json!({"fri": [["22:00", "06:00"]], "sat": [["10:00", "14:00"]]});
        let saturday_off = hours(json!({"tz": "UTC", "week": week, "days_off": ["2026-11-21"]}));
        assert!(saturday_off.is_open(at("2026-11-21T05:59:00Z")));
        assert!(!saturday_off.is_open(at("2026-11-21T10:00:00Z")));
        // The next Saturday is an ordinary one.
        assert!(saturday_off.is_open(at("2026-11-28T10:00:00Z")));

        let friday_off = hours(json!({"tz": "UTC", "week": week, "days_off": ["2026-11-20"]}));
        assert!(!friday_off.is_open(at("2026-11-20T22:00:00Z")));
        // The Friday night never started, so nothing of it is left on Saturday.
        assert!(!friday_off.is_open(at("2026-11-21T01:00:00Z")));
        assert!(friday_off.is_open(at("2026-11-21T10:00:00Z")));
    }

    #[test]
    fn christmas_is_closed_in_local_time() {
        let mut json = office_berlin().to_json();
        json["days_off"] = json!(["2026-12-25"]);
        let h = hours(json);
        assert!(h.is_open(at("2026-12-24T09:00:00Z")));
        assert!(!h.is_open(at("2026-12-25T09:00:00Z")));
        // The day off is a local date: 23:30 UTC on the 24th is already the 25th.
        let mut json = hours(
            json!({"tz": "Europe/Berlin", "week": {"thu": [["20:00", "24:00"]],
            "fri": [["00:00", "24:00"]]}}),
        )
        .to_json();
        json["days_off"] = json!(["2026-12-25"]);
        let h = hours(json);
        assert!(h.is_open(at("2026-12-24T22:59:00Z")));
        assert!(!h.is_open(at("2026-12-24T23:30:00Z")));
    }

    #[test]
    fn midnight_ends_are_24_00_and_touching_days_do_not_overlap() {
        let h = hours(json!({"tz": "UTC", "week": {
            "mon": [["18:00", "24:00"]],
            "tue": [["00:00", "02:00"], ["20:00", "00:00"]],
            "sun": [["00:00", "24:00"]],
        }}));
        assert!(h.is_open(at("2026-11-23T23:59:59Z"))); // Monday
        assert!(h.is_open(at("2026-11-24T00:00:00Z"))); // Tuesday
        assert!(!h.is_open(at("2026-11-24T02:00:00Z")));
        assert!(h.is_open(at("2026-11-24T23:59:00Z")));
        assert!(!h.is_open(at("2026-11-25T00:00:00Z")));
        assert!(h.is_open(at("2026-11-22T00:00:00Z")));
        assert!(h.is_open(at("2026-11-22T12:00:00Z")));
        assert_eq!(
            h.to_json()["week"]["tue"],
            json!([["00:00", "02:00"], ["20:00", "24:00"]])
        );
    }

    #[test]
    fn to_json_is_the_input_shape_and_serde_goes_through_parse() {
        let input = json!({"tz": "Europe/Berlin",
            "week": {"wed": [["14:00", "18:00"], ["08:00", "12:00"]], "fri": []},
            "days_off": ["2026-12-31", "2026-12-25", "2026-12-25"]});
        let h = hours(input);
        let expected = json!({"tz": "Europe/Berlin",
            "week": {"wed": [["08:00", "12:00"], ["14:00", "18:00"]]},
            "days_off": ["2026-12-25", "2026-12-31"]});
        assert_eq!(h.to_json(), expected);
        assert_eq!(serde_json::to_value(&h).expect("serialises"), expected);
        assert_eq!(serde_json::from_value::<Hours>(expected).expect("valid"), h);
        let bad = serde_json::from_value::<Hours>(json!({"tz": "Mars/Olympus", "week": {}}));
        assert!(bad.expect_err("invalid").to_string().contains("hours.tz"));
    }

    #[test]
    fn validation_errors_name_the_field() {
        let cases = [
            (json!("09-18"), "hours"),
            (json!({"week": {}}), "hours.tz"),
            (json!({"tz": "Europe/Berln", "week": {}}), "hours.tz"),
            (json!({"tz": 1, "week": {}}), "hours.tz"),
            (json!({"tz": "UTC"}), "hours.week"),
            (json!({"tz": "UTC", "week": []}), "hours.week"),
            (
                json!({"tz": "UTC", "week": {}, "timezone": "UTC"}),
                "hours.timezone",
            ),
            (
                json!({"tz": "UTC", "week": {"monday": []}}),
                "hours.week.monday",
            ),
            (
                json!({"tz": "UTC", "week": {"mon": "09:00-18:00"}}),
                "hours.week.mon",
            ),
            (
                json!({"tz": "UTC", "week": {"mon": [["25:00", "26:00"]]}}),
                "hours.week.mon[0]",
            ),
            (
                json!({"tz": "UTC", "week": {"mon": [["9:00", "18:00"]]}}),
                "hours.week.mon[0]",
            ),
            (
                json!({"tz": "UTC", "week": {"mon": [["09:00", "18:60"]]}}),
                "hours.week.mon[0]",
            ),
            (
                json!({"tz": "UTC", "week": {"mon": [["24:00", "02:00"]]}}),
                "hours.week.mon[0]",
            ),
            (
                json!({"tz": "UTC", "week": {"mon": [["09:00", "09:00"]]}}),
                "hours.week.mon[0]",
            ),
            (
                json!({"tz": "UTC", "week": {"mon": [["09:00"]]}}),
                "hours.week.mon[0]",
            ),
            (
                json!({"tz": "UTC", "week": {"mon": [[9, 18]]}}),
                "hours.week.mon[0]",
            ),
            (
                json!({"tz": "UTC", "week": {"tue": [["08:00", "12:00"], ["11:00", "14:00"]]}}),
                "hours.week.tue[1]",
            ),
            (
                json!({"tz": "UTC", "week": {"fri": [["22:00", "06:00"]], "sat": [["05:00", "09:00"]]}}),
                "hours.week.sat[0]",
            ),
            (
                json!({"tz": "UTC", "week": {"sun": [["23:00", "08:00"]], "mon": [["07:00", "09:00"]]}}),
                "hours.week.sun[0]",
            ),
            (
                json!({"tz": "UTC", "week": {}, "days_off": "2026-12-25"}),
                "hours.days_off",
            ),
            (
                json!({"tz": "UTC", "week": {}, "days_off": ["2026-02-30"]}),
                "hours.days_off[0]",
            ),
            (
                json!({"tz": "UTC", "week": {}, "days_off": ["2026-12-25", "25.12.2026"]}),
                "hours.days_off[1]",
            ),
            (
                json!({"tz": "UTC", "week": {}, "days_off": ["+2026-12-25"]}),
                "hours.days_off[0]",
            ),
        ];
        for (value, field) in cases {
            let e = error(value.clone());
            assert_eq!(e.field, field, "{value} -> {e}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn error_messages_say_what_to_write() {
        let e = error(json!({"tz": "Europe/Berln", "week": {}}));
        assert!(e.message.contains("Europe/Berln") && e.message.contains("Europe/Berlin"));
        let e =
            error(json!({"tz": "UTC", "week": {"tue": [["08:00", "12:00"], ["11:00", "14:00"]]}}));
        assert!(e.message.contains("hours.week.tue[0]"), "{e}");
        let e = error(
            json!({"tz": "UTC", "week": {"fri": [["22:00", "06:00"]], "sat": [["05:00", "09:00"]]}}),
        );
        assert!(
            e.message.contains("hours.week.fri[0]") && e.message.contains("midnight"),
            "{e}"
        );
        let e = error(json!({"tz": "UTC", "week": {"mon": [["09:00", "25:00"]]}}));
        assert!(
            e.message.contains("25:00") && e.message.contains("HH:MM"),
            "{e}"
        );
    }

    #[test]
    fn after_hours_defaults_and_validation() {
        let voicemail = AfterHours::parse(&json!({"action": "voicemail"})).expect("valid");
        assert_eq!(
            voicemail,
            AfterHours {
                action: AfterHoursAction::Voicemail,
                forward_to: None,
                max_message_s: 120
            }
        );
        let forward =
            AfterHours::parse(&json!({"action": "forward", "forward_to": "+49 30-1234567"}))
                .expect("valid");
        assert_eq!(forward.forward_to.as_deref(), Some("+49 30-1234567"));
        for seconds in [5, 600] {
            let r = AfterHours::parse(&json!({"action": "reject", "max_message_s": seconds}));
            assert_eq!(r.expect("valid").max_message_s, seconds);
        }
        let cases = [
            (json!([]), "after_hours"),
            (json!({}), "after_hours.action"),
            (json!({"action": "hangup"}), "after_hours.action"),
            (json!({"action": 1}), "after_hours.action"),
            (json!({"action": "forward"}), "after_hours.forward_to"),
            (
                json!({"action": "forward", "forward_to": null}),
                "after_hours.forward_to",
            ),
            (
                json!({"action": "forward", "forward_to": ""}),
                "after_hours.forward_to",
            ),
            (
                json!({"action": "forward", "forward_to": "+"}),
                "after_hours.forward_to",
            ),
            (
                json!({"action": "forward", "forward_to": "call me"}),
                "after_hours.forward_to",
            ),
            (
                json!({"action": "forward", "forward_to": "49+30"}),
                "after_hours.forward_to",
            ),
            (
                json!({"action": "voicemail", "max_message_s": 4}),
                "after_hours.max_message_s",
            ),
            (
                json!({"action": "voicemail", "max_message_s": 601}),
                "after_hours.max_message_s",
            ),
            (
                json!({"action": "voicemail", "max_message_s": 12.5}),
                "after_hours.max_message_s",
            ),
            (
                json!({"action": "voicemail", "max_message_s": -1}),
                "after_hours.max_message_s",
            ),
            (
                json!({"action": "voicemail", "max_message_s": "120"}),
                "after_hours.max_message_s",
            ),
            (
                json!({"action": "voicemail", "greeting": "x"}),
                "after_hours.greeting",
            ),
        ];
        for (value, field) in cases {
            let e = AfterHours::parse(&value).expect_err("invalid");
            assert_eq!(e.field, field, "{value} -> {e}");
        }
    }

    #[test]
    fn after_hours_serialises_in_the_api_shape() {
        let rule = AfterHours {
            action: AfterHoursAction::Forward,
            forward_to: Some("+4930901820".into()),
            max_message_s: 60,
        };
        let value = serde_json::to_value(&rule).expect("serialises");
        assert_eq!(
            value,
            json!({"action": "forward", "forward_to": "+4930901820", "max_message_s": 60})
        );
        assert_eq!(AfterHours::parse(&value).expect("valid"), rule);
        let stored: AfterHours =
            serde_json::from_value(json!({"action": "reject"})).expect("defaults apply");
        assert_eq!(stored.max_message_s, 120);
    }

    #[test]
    fn rejections_use_480_outside_hours_and_486_when_nobody_answered() {
        assert_eq!(reject_status(Closed::OutsideHours), 480);
        assert_eq!(reject_status(Closed::NobodyAnswered), 486);
    }

    const ZONES: [&str; 6] = [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "UTC",
        "Pacific/Chatham",
    ];

    /// Raw intervals `(day, start, end)` in minutes, kept only where they do not overlap
    /// what was kept before (checked on a minute-of-week bitmap, as the validator must).
    fn schedule() -> impl Strategy<Value = Vec<(usize, u16, u16)>> {
        proptest::collection::vec((0usize..7, 0u16..1440, 0u16..=1440), 0..10).prop_map(|raw| {
            let mut taken = vec![false; 7 * 1440];
            let mut kept = Vec::new();
            for (day, start, end) in raw {
                if start == end {
                    continue;
                }
                let minutes: Vec<usize> = (usize::from(start)..stop(start, end))
                    .map(|m| (day * 1440 + m) % (7 * 1440))
                    .collect();
                if minutes.iter().any(|&m| taken[m]) {
                    continue;
                }
                for m in minutes {
                    taken[m] = true;
                }
                kept.push((day, start, end));
            }
            kept
        })
    }

    /// Where an interval stops, in minutes from the midnight it starts after.
    fn stop(start: u16, end: u16) -> usize {
        if end <= start {
            usize::from(end) + 1440
        } else {
            usize::from(end)
        }
    }

    fn schedule_json(zone: &str, intervals: &[(usize, u16, u16)], days_off: &[NaiveDate]) -> Value {
        let mut week = Map::new();
        for &(day, start, end) in intervals {
            let pair = json!([format_minutes(start), format_minutes(end)]);
            week.entry(DAY_KEYS[day])
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .expect("built as an array")
                .push(pair);
        }
        let days_off: Vec<String> = days_off.iter().map(|d| d.to_string()).collect();
        json!({"tz": zone, "week": week, "days_off": days_off})
    }

    /// Instants spread over four years, and instants within hours of DST changes.
    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        let changes = [
            "2026-03-29T01:00:00Z",
            "2026-10-25T01:00:00Z",
            "2026-03-08T07:00:00Z",
            "2026-11-01T06:00:00Z",
            "2026-04-04T15:00:00Z",
            "2026-10-03T15:30:00Z",
            "2026-09-26T14:00:00Z",
        ]
        .map(|t| at(t).timestamp());
        prop_oneof![
            (1_735_689_600i64..1_861_920_000).boxed(),
            (
                proptest::sample::select(changes.to_vec()),
                -4 * 3600i64..4 * 3600
            )
                .prop_map(|(t, d)| t + d)
                .boxed(),
        ]
        .prop_map(|secs| Utc.timestamp_opt(secs, 0).single().expect("in range"))
    }

    proptest! {
        #[test]
        fn is_open_matches_a_minute_of_week_oracle(
            zone in proptest::sample::select(ZONES.to_vec()),
            intervals in schedule(),
            instants in proptest::collection::vec(instant(), 1..40),
        ) {
            let h = Hours::parse(&schedule_json(zone, &intervals, &[]));
            let h = h.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut open = vec![false; 7 * 1440];
            for &(day, start, end) in &intervals {
                for m in usize::from(start)..stop(start, end) {
                    open[(day * 1440 + m) % (7 * 1440)] = true;
                }
            }
            let tz: Tz = zone.parse().expect("listed zones exist");
            for instant in instants {
                let local = instant.with_timezone(&tz);
                let minute_of_week = local.weekday().num_days_from_monday() as usize * 1440
                    + local.hour() as usize * 60
                    + local.minute() as usize;
                prop_assert_eq!(h.is_open(instant), open[minute_of_week], "{} in {}", instant, zone);
            }
        }

        #[test]
        fn days_off_close_the_intervals_that_start_on_them(
            zone in proptest::sample::select(ZONES.to_vec()),
            intervals in schedule(),
            instants in proptest::collection::vec(instant(), 1..40),
            off_bits in any::<u64>(),
        ) {
            // Days off: the local dates around each instant, chosen by the bits.
            let tz: Tz = zone.parse().expect("listed zones exist");
            let mut days_off = Vec::new();
            for (i, instant) in instants.iter().enumerate() {
                let date = instant.with_timezone(&tz).date_naive();
                if off_bits >> (i % 32 * 2) & 1 == 1 {
                    days_off.push(date);
                }
                if off_bits >> (i % 32 * 2 + 1) & 1 == 1 {
                    days_off.extend(date.pred_opt());
                }
            }
            let h = Hours::parse(&schedule_json(zone, &intervals, &days_off));
            let h = h.map_err(|e| TestCaseError::fail(e.to_string()))?;
            for instant in instants {
                let local = instant.with_timezone(&tz).naive_local();
                let date = local.date();
                let minute = local.hour() as usize * 60 + local.minute() as usize;
                let expected = intervals.iter().any(|&(day, start, end)| {
                    let starts_on = |d: NaiveDate| {
                        d.weekday().num_days_from_monday() as usize == day && !days_off.contains(&d)
                    };
                    let from_today = starts_on(date)
                        && usize::from(start) <= minute && minute < stop(start, end);
                    let from_yesterday = date.pred_opt().is_some_and(starts_on)
                        && 1440 + minute < stop(start, end);
                    from_today || from_yesterday
                });
                prop_assert_eq!(h.is_open(instant), expected, "{} in {}", instant, zone);
            }
        }

        #[test]
        fn to_json_round_trips(zone in proptest::sample::select(ZONES.to_vec()), intervals in schedule()) {
            let h = Hours::parse(&schedule_json(zone, &intervals, &[]));
            let h = h.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(Hours::parse(&h.to_json()), Ok(h));
        }

        #[test]
        fn parse_never_panics(value in arbitrary_json()) {
            let _ = Hours::parse(&value);
            let _ = AfterHours::parse(&value);
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[0-9:+ -]{0,6}".prop_map(Value::String),
            proptest::sample::select(vec![
                "09:00",
                "24:00",
                "00:00",
                "UTC",
                "Europe/Berlin",
                "mon",
                "sun",
                "forward",
                "2026-12-25"
            ])
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    proptest::sample::select(vec![
                        "tz",
                        "week",
                        "days_off",
                        "mon",
                        "fri",
                        "sun",
                        "action",
                        "forward_to",
                        "max_message_s"
                    ])
                    .prop_map(String::from),
                    inner,
                    0..4,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
