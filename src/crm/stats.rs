//! Call statistics for the dashboard: what counts as offered, answered, missed and
//! abandoned, how long callers waited and talked, and how calls fall into buckets (hour
//! of the day, our number, queue, agent). Pure: the store sums with SQL where it may, and
//! the same rules sum fetched calls here; both yield [`Counts`] of whole milliseconds,
//! turned into seconds and shares only by [`Counts::figures`], so the two paths and both
//! databases give identical numbers.
//!
//! The mapping onto the call log's `outcome` vocabulary (T13):
//! - only **incoming** calls count: an outgoing call is not offered to anyone, and one
//!   nobody picked up is not a call the company missed;
//! - **offered**: every incoming call that started in the range, including calls still
//!   ringing or waiting in a queue (so `offered >= answered + missed + abandoned`);
//! - **answered**: answered by an agent: outcome `answered`, or no outcome yet but
//!   answered (talking now). The queue answering a caller to play music does not set
//!   `answered_at`, so a caller who is only waiting is not answered;
//! - **missed**: outcome `missed`, `busy`, `failed` or `cancelled` — the caller did not
//!   reach anyone, whatever the reason the PBX or the B2BUA gave — but not `abandoned`;
//! - **abandoned**: outcome `abandoned`, the caller hung up while waiting in the queue.
//!
//! And the timings, each call counted once in its bucket:
//! - **wait**: `wait_ms` of every offered call, a caller who never waited (no `wait_ms`)
//!   counting as 0;
//! - **service level**: answered calls whose answer came at most 20 s after the call's
//!   start, as a share of the offered calls;
//! - **talk**: `ended_at - answered_at` of answered calls that have ended.
//!
//! A time that runs backwards (a PBX's clocks) counts as 0, never negative.

use super::model::{CallOutcome, Direction, Millis, UserId};

/// Outcomes that count as missed; the store's SQL lists the same ones.
pub const MISSED_OUTCOMES: [CallOutcome; 4] = [
    CallOutcome::Missed,
    CallOutcome::Busy,
    CallOutcome::Failed,
    CallOutcome::Cancelled,
];

/// The outcome that counts as abandoned; the store's SQL uses the same one.
pub const ABANDONED_OUTCOME: CallOutcome = CallOutcome::Abandoned;

/// An answer at most this long after the call's start is within the service level.
pub const SERVICE_LEVEL_MS: Millis = 20_000;

const HOUR_MS: Millis = 3_600_000;

/// Where one call stands for the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallClass {
    Answered,
    Missed,
    /// The caller hung up while waiting in the queue.
    Abandoned,
    /// Offered and not over yet (ringing, or waiting in the queue).
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
        Some(o) if o == ABANDONED_OUTCOME => CallClass::Abandoned,
        // Every outcome is one of the above; an unknown one would not be missed.
        Some(_) => CallClass::Open,
        None if answered => CallClass::Answered,
        None => CallClass::Open,
    })
}

/// The sums of one bucket, in whole calls and milliseconds: what SQL aggregates and what
/// the pure tally adds up. [`Counts::figures`] turns them into the API's averages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub offered: u64,
    pub answered: u64,
    pub missed: u64,
    pub abandoned: u64,
    /// The waits of the offered calls added up (no wait counting as 0).
    pub wait_ms: u64,
    /// The longest wait of an offered call.
    pub max_wait_ms: u64,
    /// Answered calls whose answer came within [`SERVICE_LEVEL_MS`] of their start.
    pub answered_in_time: u64,
    /// Answered calls that have ended, and their talk added up.
    pub talked: u64,
    pub talk_ms: u64,
}

/// One hour of the day's counts (the chart's bar pair).
pub type HourCount = Counts;

/// A bucket's averages and shares as the API shows them: seconds rounded to the
/// millisecond, shares unrounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Average wait of the offered calls; 0 when none were offered.
    pub avg_wait_s: f64,
    /// Longest wait of an offered call; 0 when none were offered.
    pub max_wait_s: f64,
    /// Share (0.0–1.0) of the offered calls answered within 20 s; `None` when none were
    /// offered.
    pub service_level: Option<f64>,
    /// Average talk of the answered calls that have ended; `None` when there are none.
    pub avg_talk_s: Option<f64>,
}

/// Milliseconds as seconds: exact to the millisecond (the nearest `f64` to the decimal,
/// which JSON writes as e.g. `12.5`).
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The average of `sum` over `n`, rounded to the whole millisecond (halves up), in
/// integers so both databases' sums give the same result.
fn average_ms(sum: u64, n: u64) -> Option<u64> {
    (n > 0).then(|| ((u128::from(sum) * 2 + u128::from(n)) / (u128::from(n) * 2)) as u64)
}

/// A duration from `from` to `to` for the sums: one running backwards counts as 0.
fn span(from: Millis, to: Millis) -> u64 {
    u64::try_from(to.saturating_sub(from)).unwrap_or(0)
}

impl Counts {
    /// What one call adds to its bucket, or `None` when it does not count.
    pub fn of(call: &CallFacts<'_>) -> Option<Counts> {
        let class = classify(call.direction, call.outcome, call.answered_at.is_some())?;
        let answered = class == CallClass::Answered;
        let wait = call.wait_ms.map_or(0, |w| span(0, w));
        let answer = call.answered_at.filter(|_| answered);
        let in_time =
            answer.is_some_and(|at| at.saturating_sub(call.started_at) <= SERVICE_LEVEL_MS);
        let talk = answer.zip(call.ended_at).map(|(a, e)| span(a, e));
        Some(Counts {
            offered: 1,
            answered: u64::from(answered),
            missed: u64::from(class == CallClass::Missed),
            abandoned: u64::from(class == CallClass::Abandoned),
            wait_ms: wait,
            max_wait_ms: wait,
            answered_in_time: u64::from(in_time),
            talked: u64::from(talk.is_some()),
            talk_ms: talk.unwrap_or(0),
        })
    }

    /// Adds another bucket's sums to this one's.
    pub fn merge(&mut self, other: &Counts) {
        self.offered += other.offered;
        self.answered += other.answered;
        self.missed += other.missed;
        self.abandoned += other.abandoned;
        self.wait_ms += other.wait_ms;
        self.max_wait_ms = self.max_wait_ms.max(other.max_wait_ms);
        self.answered_in_time += other.answered_in_time;
        self.talked += other.talked;
        self.talk_ms += other.talk_ms;
    }

    pub fn total(buckets: &[Counts]) -> Counts {
        buckets.iter().fold(Counts::default(), |mut all, b| {
            all.merge(b);
            all
        })
    }

    /// The bucket's averages and shares.
    pub fn figures(&self) -> Figures {
        Figures {
            avg_wait_s: seconds(average_ms(self.wait_ms, self.offered).unwrap_or(0)),
            max_wait_s: seconds(self.max_wait_ms),
            service_level: (self.offered > 0)
                .then(|| self.answered_in_time as f64 / self.offered as f64),
            avg_talk_s: average_ms(self.talk_ms, self.talked).map(seconds),
        }
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
    /// The queue the call itself records, else (calls from before queueing) the queue of
    /// its number as the number is set up now; calls with neither are left out.
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
    pub answered_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    /// Our number, E.164.
    pub number: Option<&'a str>,
    /// The queue the call records (calls from before queueing have none).
    pub queue: Option<&'a str>,
    /// How long the caller waited in the queue; `None` when they never waited.
    pub wait_ms: Option<i64>,
    pub answered_by: Option<&'a UserId>,
    pub responsible: Option<&'a UserId>,
}

/// Counts calls per hour of the day: always 24 buckets.
pub fn by_hour<'a>(calls: impl IntoIterator<Item = CallFacts<'a>>) -> [HourCount; 24] {
    let mut hours = [Counts::default(); 24];
    for call in calls {
        if let Some(counts) = Counts::of(&call) {
            hours[hour_of_day(call.started_at)].merge(&counts);
        }
    }
    hours
}

/// Counts calls by `by`; `queue_of` gives the queue of one of our numbers (for calls that
/// record none). Hours come as all 24 in order; other keys most offered first, then by
/// key.
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
        let Some(counts) = Counts::of(&call) else {
            continue;
        };
        let key = match by {
            GroupBy::Hour => unreachable!("handled above"),
            GroupBy::Number => call.number.map(str::to_owned),
            GroupBy::Queue => call
                .queue
                .map(str::to_owned)
                .or_else(|| call.number.and_then(&queue_of)),
            GroupBy::Agent => call
                .answered_by
                .or(call.responsible)
                .map(|u| u.as_str().to_owned()),
        };
        if let Some(key) = key {
            buckets.entry(key).or_default().merge(&counts);
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

    /// An incoming call on the sales number: answered 5 s after its start when it has an
    /// answer (`answered_by`, or outcome `answered`), ended 65 s after it when it has an
    /// outcome.
    fn call<'a>(
        started_at: Millis,
        outcome: Option<CallOutcome>,
        answered_by: Option<&'a UserId>,
        responsible: Option<&'a UserId>,
    ) -> CallFacts<'a> {
        let answered = answered_by.is_some() || outcome == Some(CallOutcome::Answered);
        CallFacts {
            started_at,
            direction: Direction::Incoming,
            outcome,
            answered_at: answered.then_some(started_at + 5_000),
            ended_at: outcome.map(|_| started_at + 65_000),
            number: Some("+4930901820"),
            queue: None,
            wait_ms: None,
            answered_by,
            responsible,
        }
    }

    /// A call as the queue desk leaves it: waited `wait_ms` (answered by an agent `answer`
    /// ms after the start, and ended `end` ms after it, when given) with `outcome`.
    fn queued(
        wait_ms: Option<i64>,
        answer: Option<Millis>,
        end: Option<Millis>,
        outcome: Option<CallOutcome>,
    ) -> CallFacts<'static> {
        CallFacts {
            started_at: DAY,
            direction: Direction::Incoming,
            outcome,
            answered_at: answer.map(|a| DAY + a),
            ended_at: end.map(|e| DAY + e),
            number: Some("+4930901820"),
            queue: Some("sales"),
            wait_ms,
            answered_by: None,
            responsible: None,
        }
    }

    /// Offered, answered, missed and abandoned.
    fn calls_of(c: &Counts) -> [u64; 4] {
        [c.offered, c.answered, c.missed, c.abandoned]
    }

    fn sum<'a>(calls: impl IntoIterator<Item = CallFacts<'a>>) -> Counts {
        Counts::total(&by_hour(calls))
    }

    const DAY: Millis = 1_795_392_000_000; // 2026-11-23T00:00:00Z

    #[test]
    fn busy_failed_cancelled_and_missed_all_count_as_missed_and_abandoned_does_not() {
        for o in CallOutcome::ALL {
            let class = classify(Direction::Incoming, Some(*o), false).unwrap();
            assert_eq!(
                class == CallClass::Missed,
                MISSED_OUTCOMES.contains(o),
                "{o}"
            );
            assert_eq!(
                class == CallClass::Abandoned,
                *o == ABANDONED_OUTCOME,
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
        assert_eq!(
            classify(Direction::Incoming, Some(CallOutcome::Abandoned), false),
            Some(CallClass::Abandoned)
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
        c.wait_ms = Some(4_000);
        assert_eq!(Counts::of(&c), None);
        assert_eq!(sum([c]), Counts::default());
    }

    #[test]
    fn no_calls_wait_nothing_and_have_no_service_level_or_talk() {
        let none = Counts::default().figures();
        assert_eq!(
            none,
            Figures {
                avg_wait_s: 0.0,
                max_wait_s: 0.0,
                service_level: None,
                avg_talk_s: None,
            }
        );
        assert_eq!(sum(std::iter::empty()).figures(), none);
    }

    #[test]
    fn a_call_still_ringing_is_offered_only_and_lowers_the_service_level() {
        let ringing = queued(None, None, None, None);
        let answered = queued(None, Some(3_000), Some(33_000), Some(CallOutcome::Answered));
        let counts = sum([ringing, answered]);
        assert_eq!(calls_of(&counts), [2, 1, 0, 0]);
        let figures = counts.figures();
        assert_eq!(figures.service_level, Some(0.5));
        assert_eq!(
            figures.avg_talk_s,
            Some(30.0),
            "the ringing call has no talk"
        );
        assert_eq!(figures.avg_wait_s, 0.0);
    }

    #[test]
    fn a_call_talking_now_is_answered_but_has_no_talk_yet() {
        let talking = queued(Some(2_000), Some(12_000), None, None);
        let counts = sum([talking]);
        assert_eq!(calls_of(&counts), [1, 1, 0, 0]);
        assert_eq!((counts.answered_in_time, counts.talked), (1, 0));
        assert_eq!(counts.figures().avg_talk_s, None);
        assert_eq!(counts.figures().service_level, Some(1.0));
    }

    #[test]
    fn an_abandoned_call_is_neither_answered_nor_missed_and_its_wait_counts() {
        let abandoned = queued(
            Some(47_250),
            None,
            Some(47_300),
            Some(CallOutcome::Abandoned),
        );
        let counts = sum([abandoned]);
        assert_eq!(calls_of(&counts), [1, 0, 0, 1]);
        let figures = counts.figures();
        assert_eq!(figures.avg_wait_s, 47.25);
        assert_eq!(figures.max_wait_s, 47.25);
        assert_eq!(figures.service_level, Some(0.0));
        assert_eq!(figures.avg_talk_s, None);
    }

    #[test]
    fn a_caller_who_never_waited_counts_as_waiting_zero() {
        let counts = sum([
            queued(None, Some(1_000), Some(2_000), Some(CallOutcome::Answered)),
            queued(
                Some(9_001),
                Some(10_000),
                Some(70_000),
                Some(CallOutcome::Answered),
            ),
        ]);
        assert_eq!(counts.wait_ms, 9_001);
        let figures = counts.figures();
        // 9001 / 2 = 4500.5 ms: rounded to the millisecond, halves up.
        assert_eq!(figures.avg_wait_s, 4.501);
        assert_eq!(figures.max_wait_s, 9.001);
        assert_eq!(figures.avg_talk_s, Some(30.5));
    }

    #[test]
    fn the_service_level_is_answers_within_20_s_of_the_start_over_offered_calls() {
        let counts = sum([
            queued(
                Some(15_000),
                Some(20_000),
                Some(30_000),
                Some(CallOutcome::Answered),
            ),
            queued(
                Some(19_000),
                Some(20_001),
                Some(30_000),
                Some(CallOutcome::Answered),
            ),
            queued(None, None, Some(5_000), Some(CallOutcome::Missed)),
            // Answered per the PBX, but when is unknown: not within the service level.
            queued(None, None, Some(5_000), Some(CallOutcome::Answered)),
        ]);
        assert_eq!(calls_of(&counts), [4, 3, 1, 0]);
        assert_eq!(counts.answered_in_time, 1);
        assert_eq!(counts.figures().service_level, Some(0.25));
        // Only the two with both times have a talk: 10 s and 9.999 s.
        assert_eq!(counts.talked, 2);
        assert_eq!(counts.figures().avg_talk_s, Some(10.0));
    }

    #[test]
    fn a_missed_call_with_an_answer_time_is_missed_and_not_within_the_service_level() {
        // A PBX that says `answered` and then ends the call as failed.
        let odd = queued(None, Some(1_000), Some(2_000), Some(CallOutcome::Failed));
        let counts = sum([odd]);
        assert_eq!(calls_of(&counts), [1, 0, 1, 0]);
        assert_eq!((counts.answered_in_time, counts.talked), (0, 0));
    }

    #[test]
    fn times_running_backwards_count_as_zero() {
        let counts = sum([queued(
            Some(-5),
            Some(4_000),
            Some(3_000),
            Some(CallOutcome::Answered),
        )]);
        assert_eq!((counts.wait_ms, counts.max_wait_ms), (0, 0));
        assert_eq!((counts.talked, counts.talk_ms), (1, 0));
        assert_eq!(counts.figures().avg_talk_s, Some(0.0));
    }

    #[test]
    fn buckets_merge_sums_and_keep_the_longest_wait() {
        let a = sum([queued(Some(3_000), None, None, None)]);
        let b = sum([queued(
            Some(8_000),
            None,
            Some(9_000),
            Some(CallOutcome::Abandoned),
        )]);
        let both = Counts::total(&[a, b]);
        assert_eq!(calls_of(&both), [2, 0, 0, 1]);
        assert_eq!((both.wait_ms, both.max_wait_ms), (11_000, 8_000));
        assert_eq!(both.figures().avg_wait_s, 5.5);
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
        assert_eq!(calls_of(&hours[9]), [3, 1, 2, 0]);
        assert_eq!(hours[9].figures().service_level, Some(1.0 / 3.0));
        assert_eq!(calls_of(&hours[14]), [1, 0, 0, 0]);
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
        let keyed: Vec<(&str, [u64; 4])> = items
            .iter()
            .map(|(k, c)| (k.as_str(), calls_of(c)))
            .collect();
        assert_eq!(keyed, [("anna", [1, 1, 0, 0]), ("ben", [1, 0, 1, 0])]);
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
        assert_eq!(by_queue.len(), 1);
        assert_eq!(by_queue[0].0, "sales");
        assert_eq!(calls_of(&by_queue[0].1), [2, 1, 1, 0]);
    }

    #[test]
    fn a_calls_own_queue_wins_over_its_numbers_current_queue() {
        let mut moved = queued(Some(1_000), None, Some(2_000), Some(CallOutcome::Abandoned));
        moved.queue = Some("support");
        let mut old = call(DAY, Some(CallOutcome::Missed), None, None);
        old.number = Some("+4930111");
        let mut nowhere = old;
        nowhere.number = None;
        let items = tally([moved, old, nowhere], GroupBy::Queue, |n| {
            (n == "+4930111").then(|| "sales".to_owned())
        });
        let keyed: Vec<(&str, [u64; 4])> = items
            .iter()
            .map(|(k, c)| (k.as_str(), calls_of(c)))
            .collect();
        assert_eq!(keyed, [("sales", [1, 0, 1, 0]), ("support", [1, 0, 0, 1])]);
    }

    #[test]
    fn hours_counted_by_the_database_fill_24_buckets() {
        let one = Counts {
            offered: 1,
            answered: 1,
            ..Default::default()
        };
        let hours = hours_from([(3, one), (24, one), (-1, one)]);
        assert_eq!(hours[3], one);
        assert_eq!(Counts::total(&hours), one);
        assert_eq!(GroupBy::parse("queue"), Some(GroupBy::Queue));
        assert_eq!(GroupBy::parse("day"), None);
    }
}
