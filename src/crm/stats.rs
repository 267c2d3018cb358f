//! Call statistics for the dashboard: what counts as offered, answered and missed, and
//! how calls fall into buckets (hour of the day, our number, queue, agent). Pure: the
//! store counts with SQL where it may, and the same rules count fetched calls here.
//!
//! The mapping onto the call log's `outcome` vocabulary (T13):
//! - only **incoming** calls count: an outgoing call is not offered to anyone, and one
//!   nobody picked up is not a call the company missed;
//! - **offered**: every incoming call that started in the range, including calls still
//!   ringing (so `offered >= answered + missed`);
//! - **answered**: outcome `answered`, or no outcome yet but answered (talking now);
//! - **missed**: outcome `missed`, `busy`, `failed` or `cancelled` — the caller did not
//!   reach anyone, whatever the reason the PBX or the B2BUA gave.

use super::model::{CallOutcome, Direction, Millis, UserId};

/// Outcomes that count as missed; the store's SQL lists the same ones.
pub const MISSED_OUTCOMES: [CallOutcome; 4] = [
    CallOutcome::Missed,
    CallOutcome::Busy,
    CallOutcome::Failed,
    CallOutcome::Cancelled,
];

const HOUR_MS: Millis = 3_600_000;

/// Where one call stands for the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallClass {
    Answered,
    Missed,
    /// Offered and not over yet (ringing).
    Open,
}

/// The class of a call, or `None` when it does not count (outgoing calls).
pub fn classify(
    direction: Direction,
    outcome: Option<CallOutcome>,
    answered: bool,
) -> Option<CallClass> {
    if direction != Direction::Incoming {
        return None;
    }
    Some(match outcome {
        Some(CallOutcome::Answered) => CallClass::Answered,
        Some(o) if MISSED_OUTCOMES.contains(&o) => CallClass::Missed,
        // Every outcome is one of the above; an unknown one would not be missed.
        Some(_) => CallClass::Open,
        None if answered => CallClass::Answered,
        None => CallClass::Open,
    })
}

/// Offered, answered and missed calls of one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub offered: u64,
    pub answered: u64,
    pub missed: u64,
}

/// One hour of the day's counts (the chart's bar pair).
pub type HourCount = Counts;

impl Counts {
    pub fn add(&mut self, class: CallClass) {
        self.offered += 1;
        match class {
            CallClass::Answered => self.answered += 1,
            CallClass::Missed => self.missed += 1,
            CallClass::Open => {}
        }
    }

    pub fn total(buckets: &[Counts]) -> Counts {
        buckets.iter().fold(Counts::default(), |a, b| Counts {
            offered: a.offered + b.offered,
            answered: a.answered + b.answered,
            missed: a.missed + b.missed,
        })
    }
}

/// The hour of the day (UTC) of a time, 0..=23.
pub fn hour_of_day(at: Millis) -> usize {
    // Bounded to 0..24 by `rem_euclid`, also for times before 1970.
    at.div_euclid(HOUR_MS).rem_euclid(24) as usize
}

/// The key of an hour as the API shows it: `"00"` to `"23"`.
pub fn hour_key(hour: usize) -> String {
    format!("{hour:02}")
}

/// What the statistics group calls by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// Hour of the day (UTC) the call started.
    Hour,
    /// Our number (E.164) it came in on; calls on numbers not configured are left out.
    Number,
    /// The queue of that number (as the number is set up now); numbers without one are
    /// left out.
    Queue,
    /// The employee who answered it, else the one responsible for its customer (who is
    /// to call back a missed call); calls with neither are left out.
    Agent,
}

impl GroupBy {
    pub const CHOICES: &'static str = "hour, number, queue, agent";

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "hour" => GroupBy::Hour,
            "number" => GroupBy::Number,
            "queue" => GroupBy::Queue,
            "agent" => GroupBy::Agent,
            _ => return None,
        })
    }
}

/// The facts of one call the statistics read.
#[derive(Debug, Clone, Copy)]
pub struct CallFacts<'a> {
    pub started_at: Millis,
    pub direction: Direction,
    pub outcome: Option<CallOutcome>,
    pub answered: bool,
    /// Our number, E.164.
    pub number: Option<&'a str>,
    pub answered_by: Option<&'a UserId>,
    pub responsible: Option<&'a UserId>,
}

/// Counts calls per hour of the day: always 24 buckets.
pub fn by_hour<'a>(calls: impl IntoIterator<Item = CallFacts<'a>>) -> [HourCount; 24] {
    let mut hours = [Counts::default(); 24];
    for call in calls {
        if let Some(class) = classify(call.direction, call.outcome, call.answered) {
            hours[hour_of_day(call.started_at)].add(class);
        }
    }
    hours
}

/// Counts calls by `by`; `queue_of` gives the queue of one of our numbers. Hours come as
/// all 24 in order; other keys most offered first, then by key.
pub fn tally<'a>(
    calls: impl IntoIterator<Item = CallFacts<'a>>,
    by: GroupBy,
    queue_of: impl Fn(&str) -> Option<String>,
) -> Vec<(String, Counts)> {
    if by == GroupBy::Hour {
        return hour_items(&by_hour(calls));
    }
    let mut buckets: std::collections::HashMap<String, Counts> = Default::default();
    for call in calls {
        let Some(class) = classify(call.direction, call.outcome, call.answered) else {
            continue;
        };
        let key = match by {
            GroupBy::Hour => unreachable!("handled above"),
            GroupBy::Number => call.number.map(str::to_owned),
            GroupBy::Queue => call.number.and_then(&queue_of),
            GroupBy::Agent => call
                .answered_by
                .or(call.responsible)
                .map(|u| u.as_str().to_owned()),
        };
        if let Some(key) = key {
            buckets.entry(key).or_default().add(class);
        }
    }
    ordered(buckets.into_iter().collect())
}

/// The 24 hours as keyed items, `"00"` first.
pub fn hour_items(hours: &[HourCount; 24]) -> Vec<(String, Counts)> {
    hours
        .iter()
        .enumerate()
        .map(|(h, c)| (hour_key(h), *c))
        .collect()
}

/// Hours counted elsewhere (the database), as all 24 buckets; out-of-range hours are
/// ignored rather than trusted.
pub fn hours_from(rows: impl IntoIterator<Item = (i64, Counts)>) -> [HourCount; 24] {
    let mut hours = [Counts::default(); 24];
    for (hour, counts) in rows {
        if let Some(bucket) = usize::try_from(hour).ok().and_then(|h| hours.get_mut(h)) {
            *bucket = counts;
        }
    }
    hours
}

/// Most offered first, then by key, so the dashboard's top rows are the busiest.
pub fn ordered(mut items: Vec<(String, Counts)>) -> Vec<(String, Counts)> {
    items.sort_by(|(ka, a), (kb, b)| b.offered.cmp(&a.offered).then_with(|| ka.cmp(kb)));
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(
        started_at: Millis,
        outcome: Option<CallOutcome>,
        answered_by: Option<&'a UserId>,
        responsible: Option<&'a UserId>,
    ) -> CallFacts<'a> {
        CallFacts {
            started_at,
            direction: Direction::Incoming,
            outcome,
            answered: answered_by.is_some(),
            number: Some("+4930901820"),
            answered_by,
            responsible,
        }
    }

    const DAY: Millis = 1_795_392_000_000; // 2026-11-23T00:00:00Z

    #[test]
    fn busy_failed_cancelled_and_missed_all_count_as_missed() {
        for o in CallOutcome::ALL {
            let class = classify(Direction::Incoming, Some(*o), false).unwrap();
            assert_eq!(
                class == CallClass::Missed,
                MISSED_OUTCOMES.contains(o),
                "{o}"
            );
        }
        assert_eq!(
            classify(Direction::Incoming, Some(CallOutcome::Answered), true),
            Some(CallClass::Answered)
        );
        assert_eq!(
            classify(Direction::Incoming, None, true),
            Some(CallClass::Answered),
            "talking now"
        );
        assert_eq!(
            classify(Direction::Incoming, None, false),
            Some(CallClass::Open),
            "still ringing"
        );
    }

    #[test]
    fn outgoing_calls_are_not_counted() {
        assert_eq!(
            classify(Direction::Outgoing, Some(CallOutcome::Missed), false),
            None
        );
        let mut c = call(DAY, Some(CallOutcome::Answered), None, None);
        c.direction = Direction::Outgoing;
        assert_eq!(Counts::total(&by_hour([c])), Counts::default());
    }

    #[test]
    fn hours_are_utc_hours_of_the_day_also_before_1970() {
        assert_eq!(hour_of_day(DAY), 0);
        assert_eq!(hour_of_day(DAY + 7 * HOUR_MS + 59 * 60_000), 7);
        assert_eq!(hour_of_day(DAY + 24 * HOUR_MS - 1), 23);
        assert_eq!(hour_of_day(-1), 23);
        assert_eq!(hour_key(7), "07");
    }

    #[test]
    fn by_hour_has_all_24_hours_with_zeros_and_sums_days() {
        let hours = by_hour([
            call(DAY + 9 * HOUR_MS, Some(CallOutcome::Answered), None, None),
            call(DAY + 9 * HOUR_MS + 5, Some(CallOutcome::Busy), None, None),
            // The next day's 09:00 falls into the same hour of the day.
            call(DAY + 33 * HOUR_MS, Some(CallOutcome::Missed), None, None),
            call(DAY + 14 * HOUR_MS, None, None, None),
        ]);
        assert_eq!(
            hours[9],
            Counts {
                offered: 3,
                answered: 1,
                missed: 2
            }
        );
        assert_eq!(
            hours[14],
            Counts {
                offered: 1,
                answered: 0,
                missed: 0
            }
        );
        let items = tally(std::iter::empty(), GroupBy::Hour, |_| None);
        assert_eq!(items.len(), 24);
        assert_eq!(items[0].0, "00");
        assert_eq!(items[23].0, "23");
        assert!(items.iter().all(|(_, c)| *c == Counts::default()));
    }

    #[test]
    fn agents_are_who_answered_else_who_is_responsible() {
        let (anna, ben) = (UserId("anna".into()), UserId("ben".into()));
        let items = tally(
            [
                call(DAY, Some(CallOutcome::Answered), Some(&anna), Some(&ben)),
                call(DAY, Some(CallOutcome::Missed), None, Some(&ben)),
                call(DAY, Some(CallOutcome::Missed), None, None),
            ],
            GroupBy::Agent,
            |_| None,
        );
        assert_eq!(
            items,
            [
                (
                    "anna".to_owned(),
                    Counts {
                        offered: 1,
                        answered: 1,
                        missed: 0
                    }
                ),
                (
                    "ben".to_owned(),
                    Counts {
                        offered: 1,
                        answered: 0,
                        missed: 1
                    }
                ),
            ]
        );
    }

    #[test]
    fn numbers_and_queues_leave_out_calls_without_one_and_busiest_come_first() {
        let mut other = call(DAY, Some(CallOutcome::Answered), None, None);
        other.number = Some("+4930111");
        let mut unconfigured = call(DAY, Some(CallOutcome::Answered), None, None);
        unconfigured.number = None;
        let calls = [
            other,
            call(DAY, Some(CallOutcome::Answered), None, None),
            call(DAY, Some(CallOutcome::Cancelled), None, None),
            unconfigured,
        ];
        let by_number = tally(calls, GroupBy::Number, |_| None);
        let keys: Vec<&str> = by_number.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["+4930901820", "+4930111"]);
        let by_queue = tally(calls, GroupBy::Queue, |n| {
            (n == "+4930901820").then(|| "sales".to_owned())
        });
        assert_eq!(
            by_queue,
            [(
                "sales".to_owned(),
                Counts {
                    offered: 2,
                    answered: 1,
                    missed: 1
                }
            )]
        );
    }

    #[test]
    fn hours_counted_by_the_database_fill_24_buckets() {
        let one = Counts {
            offered: 1,
            answered: 1,
            missed: 0,
        };
        let hours = hours_from([(3, one), (24, one), (-1, one)]);
        assert_eq!(hours[3], one);
        assert_eq!(Counts::total(&hours), one);
        assert_eq!(GroupBy::parse("queue"), Some(GroupBy::Queue));
        assert_eq!(GroupBy::parse("day"), None);
    }
}
