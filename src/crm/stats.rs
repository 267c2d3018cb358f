//! Call statistics for the dashboard: how many incoming calls were offered, answered and
//! missed, by hour of the day (UTC), by our number, by queue or by employee. Pure: the
//! caller hands in the calls it may see (the call log's rule) and gets the counts.
//!
//! What counts:
//! - only incoming calls (an outgoing call is offered to nobody);
//! - **offered**: the call came in;
//! - **answered**: somebody answered it;
//! - **missed**: it ended and nobody answered (whatever the outcome: missed, busy,
//!   cancelled, failed). A call still ringing is offered, neither answered nor missed.
//!
//! By employee, a call is offered to everyone it rang and to whoever answered it; it is
//! answered by the one who answered, and missed by all it rang when nobody did. So one
//! call counts once per employee, and an employee's answered and missed may add up to less
//! than what was offered to them (a colleague answered).

use std::collections::BTreeMap;
use std::str::FromStr;

use super::model::{Direction, Millis, UnknownName, UserId};

/// How the counts are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// Hour of the day the call started, `00` to `23` (UTC); every hour is listed.
    Hour,
    /// Our number (E.164) the call came in on.
    Number,
    /// The queue of that number.
    Queue,
    /// The employees it rang or who answered it.
    Agent,
}

impl FromStr for GroupBy {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hour" => Ok(GroupBy::Hour),
            "number" => Ok(GroupBy::Number),
            "queue" => Ok(GroupBy::Queue),
            "agent" => Ok(GroupBy::Agent),
            other => Err(UnknownName {
                what: "grouping",
                value: other.to_owned(),
                choices: "hour, number, queue, agent".to_owned(),
            }),
        }
    }
}

/// What the counts need to know of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSample {
    pub started_at: Millis,
    pub direction: Direction,
    pub answered: bool,
    pub ended: bool,
    pub answered_by: Option<UserId>,
    /// Everyone it rang (ring order and the devices' legs), in any order, repeats allowed.
    pub rang: Vec<UserId>,
    /// Our number (E.164).
    pub number: Option<String>,
    /// The queue of that number.
    pub queue: Option<String>,
}

/// The counts of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub key: String,
    pub offered: u64,
    pub answered: u64,
    pub missed: u64,
}

impl Tally {
    fn new(key: String) -> Self {
        Self {
            key,
            offered: 0,
            answered: 0,
            missed: 0,
        }
    }
}

/// The hour of the day (UTC) of a time, 0 to 23.
pub fn hour_of(at: Millis) -> u8 {
    let ms_of_day = at.rem_euclid(24 * 60 * 60 * 1000);
    u8::try_from(ms_of_day / (60 * 60 * 1000)).unwrap_or(0)
}

/// The counts, grouped; groups in the order of their keys (hours `00` to `23`, all of
/// them). A call without a number or queue is left out of those groupings.
pub fn tally<'a>(calls: impl IntoIterator<Item = &'a CallSample>, by: GroupBy) -> Vec<Tally> {
    let mut groups: BTreeMap<String, Tally> = BTreeMap::new();
    if by == GroupBy::Hour {
        for hour in 0..24 {
            let key = format!("{hour:02}");
            groups.insert(key.clone(), Tally::new(key));
        }
    }
    let mut count = |key: &str, answered: bool, missed: bool| {
        let tally = groups
            .entry(key.to_owned())
            .or_insert_with(|| Tally::new(key.to_owned()));
        tally.offered += 1;
        tally.answered += u64::from(answered);
        tally.missed += u64::from(missed);
    };
    for call in calls
        .into_iter()
        .filter(|c| c.direction == Direction::Incoming)
    {
        let missed = call.ended && !call.answered;
        match by {
            GroupBy::Hour => count(
                &format!("{:02}", hour_of(call.started_at)),
                call.answered,
                missed,
            ),
            GroupBy::Number => {
                if let Some(number) = &call.number {
                    count(number, call.answered, missed);
                }
            }
            GroupBy::Queue => {
                if let Some(queue) = &call.queue {
                    count(queue, call.answered, missed);
                }
            }
            GroupBy::Agent => {
                let mut people: Vec<&UserId> = call.rang.iter().chain(&call.answered_by).collect();
                people.sort();
                people.dedup();
                for user in people {
                    let answered_it = call.answered && call.answered_by.as_ref() == Some(user);
                    count(user.as_str(), answered_it, missed);
                }
            }
        }
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Millis = 60 * 60 * 1000;
    /// 2026-11-23T00:00:00Z.
    const DAY: Millis = 1_795_392_000_000;

    fn call(hour: Millis, answered_by: Option<&str>, ended: bool, rang: &[&str]) -> CallSample {
        CallSample {
            started_at: DAY + hour * HOUR + 59_000,
            direction: Direction::Incoming,
            answered: answered_by.is_some(),
            ended,
            answered_by: answered_by.map(|u| UserId(u.to_owned())),
            rang: rang.iter().map(|u| UserId((*u).to_owned())).collect(),
            number: Some("+4930901820".to_owned()),
            queue: Some("sales".to_owned()),
        }
    }

    fn row(key: &str, offered: u64, answered: u64, missed: u64) -> Tally {
        Tally {
            key: key.to_owned(),
            offered,
            answered,
            missed,
        }
    }

    #[test]
    fn every_hour_is_listed_and_calls_count_in_the_utc_hour_they_started() {
        let calls = [
            call(9, Some("anna"), true, &["anna"]),
            call(9, None, true, &["anna"]),
            call(9, None, false, &["anna"]),
            call(23, None, true, &[]),
        ];
        let hours = tally(&calls, GroupBy::Hour);
        assert_eq!(hours.len(), 24);
        assert_eq!(hours[0], row("00", 0, 0, 0));
        assert_eq!(hours[9], row("09", 3, 1, 1), "one still ringing");
        assert_eq!(hours[23], row("23", 1, 0, 1));
        assert_eq!(
            hour_of(DAY - 1),
            23,
            "the last millisecond of the day before"
        );
    }

    #[test]
    fn outgoing_calls_are_offered_to_nobody() {
        let mut outgoing = call(10, Some("anna"), true, &[]);
        outgoing.direction = Direction::Outgoing;
        assert_eq!(tally(&[outgoing], GroupBy::Number), Vec::<Tally>::new());
    }

    #[test]
    fn by_number_and_queue_leave_out_calls_without_one() {
        let mut elsewhere = call(10, None, true, &[]);
        elsewhere.number = Some("+4940111".to_owned());
        elsewhere.queue = None;
        let calls = [call(10, Some("anna"), true, &["anna"]), elsewhere];
        assert_eq!(
            tally(&calls, GroupBy::Number),
            [row("+4930901820", 1, 1, 0), row("+4940111", 1, 0, 1)]
        );
        assert_eq!(tally(&calls, GroupBy::Queue), [row("sales", 1, 1, 0)]);
    }

    #[test]
    fn by_agent_a_call_counts_once_for_each_employee_it_rang() {
        let calls = [
            // Rang Anna (twice: two devices) and Ben; Ben answered.
            call(10, Some("ben"), true, &["anna", "ben", "anna"]),
            // Rang both, nobody answered: missed by both.
            call(11, None, true, &["anna", "ben"]),
            // Taken over by Carl, whom it never rang.
            call(12, Some("carl"), true, &["anna"]),
        ];
        assert_eq!(
            tally(&calls, GroupBy::Agent),
            [
                row("anna", 3, 0, 1),
                row("ben", 2, 1, 1),
                row("carl", 1, 1, 0)
            ]
        );
    }

    #[test]
    fn groupings_are_read_from_their_names() {
        assert_eq!("queue".parse::<GroupBy>().unwrap(), GroupBy::Queue);
        let err = "day".parse::<GroupBy>().unwrap_err();
        assert!(
            err.to_string().contains("hour, number, queue, agent"),
            "{err}"
        );
    }
}
