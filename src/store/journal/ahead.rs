//! Write-ahead bookkeeping: which opening events appended ahead of their database commit
//! are still in flight, how far the journal's checkpoint may move past them, and when the
//! checkpoint's file is next written.
//!
//! Pure: offsets and durations in, offsets and durations out. The journal file is a sequence of lines; a write-ahead
//! line is known here by where it starts and ends until the checkpoint passes it. A line
//! not known here is a journaled write the replay applies.

use std::collections::BTreeMap;
use std::time::Duration;

/// The checkpoint's file is written at most this often: every commit moves the checkpoint
/// in memory, and one small file write per commit cost more than the commit's share of
/// its group fsync.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// How long the writer may wait before it writes the checkpoint's file: `None`, as long
/// as it likes (the file holds the checkpoint); zero, now. `since_written`: how long ago
/// it was last written, `None` if never in this run. A file behind the checkpoint is safe
/// (a crash replays lines already committed, which the exactly-once paths ignore), so
/// the wait only bounds how many are replayed.
pub fn checkpoint_wait(behind: bool, since_written: Option<Duration>) -> Option<Duration> {
    if !behind {
        return None;
    }
    Some(since_written.map_or(Duration::ZERO, |since| {
        CHECKPOINT_EVERY.saturating_sub(since)
    }))
}

/// What one tracked line's commit has reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Its live write has not answered yet.
    InFlight,
    /// In the database (or refused for good by it): nothing left to replay.
    Done,
}

/// The write-ahead lines past the checkpoint, by where they start.
#[derive(Debug, Default)]
pub struct WriteAhead {
    lines: BTreeMap<u64, (u64, Commit)>,
}

impl WriteAhead {
    /// A write-ahead line was appended at `start..end`.
    pub fn appended(&mut self, start: u64, end: u64) {
        self.lines.insert(start, (end, Commit::InFlight));
    }

    /// The line at `start` is in the database. A line the checkpoint already passed (the
    /// replay applied it meanwhile) is no longer tracked: nothing to do.
    pub fn committed(&mut self, start: u64) {
        if let Some((_, commit)) = self.lines.get_mut(&start) {
            *commit = Commit::Done;
        }
    }

    /// The line at `start` stops being write-ahead (its live write could not reach the
    /// database): from now on it is a journaled write, for the replay.
    pub fn hand_to_replay(&mut self, start: u64) -> bool {
        self.lines.remove(&start).is_some()
    }

    /// What is known of the line at `start`; `None`: a journaled write.
    pub fn state(&self, start: u64) -> Option<Commit> {
        self.lines.get(&start).map(|(_, commit)| *commit)
    }

    /// The replay or the checkpoint went past `start`'s line: forget it.
    pub fn passed(&mut self, start: u64) {
        self.lines.remove(&start);
    }

    /// How far the checkpoint may move from `checkpoint`: past each committed line that
    /// starts where the previous one ended, stopping at a line in flight or at one not
    /// tracked (a journaled write, which only the replay applies). The lines passed are
    /// forgotten.
    pub fn advance(&mut self, checkpoint: u64) -> u64 {
        let mut at = checkpoint;
        while let Some(&(end, Commit::Done)) = self.lines.get(&at) {
            self.lines.remove(&at);
            at = end;
        }
        at
    }

    /// The file was emptied: every offset starts again from 0.
    pub fn clear(&mut self) {
        self.lines.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> WriteAhead {
        let mut ahead = WriteAhead::default();
        ahead.appended(0, 10);
        ahead.appended(10, 25);
        ahead.appended(25, 40);
        ahead
    }

    #[test]
    fn the_checkpoint_moves_past_a_committed_prefix_only() {
        let mut ahead = three();
        ahead.committed(10);
        assert_eq!(ahead.advance(0), 0, "the first line is still in flight");
        ahead.committed(0);
        assert_eq!(ahead.advance(0), 25);
        assert_eq!(ahead.state(0), None, "passed lines are forgotten");
        assert_eq!(ahead.state(25), Some(Commit::InFlight));
        ahead.committed(25);
        assert_eq!(ahead.advance(25), 40);
        assert_eq!(ahead.advance(40), 40, "nothing left");
    }

    #[test]
    fn a_journaled_write_stops_the_checkpoint_for_the_replay() {
        let mut ahead = three();
        assert!(
            ahead.hand_to_replay(10),
            "its live write found the database down"
        );
        ahead.committed(0);
        ahead.committed(25);
        assert_eq!(ahead.advance(0), 10);
        assert_eq!(ahead.state(10), None);
        // The replay applies the journaled line and moves on to where the next one starts.
        assert_eq!(ahead.advance(25), 40);
    }

    #[test]
    fn the_checkpoint_file_is_written_at_most_once_per_interval() {
        assert_eq!(checkpoint_wait(false, None), None, "nothing to write");
        assert_eq!(checkpoint_wait(false, Some(Duration::ZERO)), None);
        assert_eq!(
            checkpoint_wait(true, None),
            Some(Duration::ZERO),
            "the first move is written at once"
        );
        assert_eq!(
            checkpoint_wait(true, Some(Duration::from_millis(30))),
            Some(Duration::from_millis(70))
        );
        assert_eq!(
            checkpoint_wait(true, Some(CHECKPOINT_EVERY)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            checkpoint_wait(true, Some(Duration::from_secs(5))),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_commit_after_the_replay_passed_its_line_changes_nothing() {
        let mut ahead = three();
        ahead.passed(0);
        ahead.committed(0);
        assert_eq!(ahead.state(0), None);
        assert!(!ahead.hand_to_replay(0));
        assert_eq!(ahead.advance(10), 10);
    }
}
