//! E9 for one stored message: what the server says about it in this pass, against what
//! the store last knew of the server and what the CRM did since. Pure: the store reads
//! the rows and applies the outcome. The full pass (every message's flags) and the
//! incremental one (RFC 7162: only what changed since a mod-sequence) differ only in the
//! [`ServerView`] they build; the decision is the same [`decide`].

use std::collections::HashMap;
use std::ops::RangeInclusive;

/// What the server says about a stored message in this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnServer {
    /// Expunged, or marked `\Deleted` (deleted for E9 even before it is expunged).
    Gone,
    /// Still there, with `\Seen` set (true) or not.
    Seen(bool),
}

/// What the sync does with one stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagSync {
    /// Neither side changed, or both changed the same way.
    Keep,
    /// Gone from the server: the message goes, and with it its activity if it was unseen
    /// (and the lead it created, if untouched).
    Remove,
    /// `\Seen` changed on the server: the stored flag and the activity follow (completed =
    /// seen).
    FollowServer(bool),
    /// The activity was completed (true) or reopened in the CRM: the server follows. The
    /// stored flag changes only once the server took it.
    PushToServer(bool),
}

/// E9's rule. `stored_seen` is the server's `\Seen` as the store last knew it,
/// `completed` the message's activity (none: no activity). When both sides changed, the
/// server wins: its change is the one the CRM has not seen yet.
pub fn decide(stored_seen: bool, completed: Option<bool>, server: OnServer) -> FlagSync {
    match server {
        OnServer::Gone => FlagSync::Remove,
        OnServer::Seen(seen) if seen != stored_seen => FlagSync::FollowServer(seen),
        OnServer::Seen(seen) => match completed {
            Some(completed) if completed != seen => FlagSync::PushToServer(completed),
            _ => FlagSync::Keep,
        },
    }
}

/// What the server reported in one pass, to look each stored message up in.
#[derive(Debug, Clone, Copy)]
pub enum ServerView<'a> {
    /// Every message on the server that is not `\Deleted`, with its `\Seen`: a stored
    /// message that is not listed is gone.
    Full(&'a HashMap<i64, bool>),
    /// Only what changed since the last pass: the `\Seen` of changed messages and the
    /// UIDs expunged (or marked `\Deleted`) since, as sorted, merged ranges (see
    /// [`merge_ranges`]). A message in neither is as the store last knew it.
    Delta {
        changed: &'a HashMap<i64, bool>,
        vanished: &'a [RangeInclusive<i64>],
    },
}

impl ServerView<'_> {
    pub fn on_server(&self, uid: i64, stored_seen: bool) -> OnServer {
        match self {
            ServerView::Full(all) => all.get(&uid).map_or(OnServer::Gone, |&s| OnServer::Seen(s)),
            ServerView::Delta { changed, vanished } => {
                if in_ranges(vanished, uid) {
                    OnServer::Gone
                } else {
                    OnServer::Seen(changed.get(&uid).copied().unwrap_or(stored_seen))
                }
            }
        }
    }
}

/// `ranges` sorted by start, overlapping and adjacent ones joined, empty ones dropped.
pub fn merge_ranges(mut ranges: Vec<RangeInclusive<i64>>) -> Vec<RangeInclusive<i64>> {
    ranges.retain(|r| r.start() <= r.end());
    ranges.sort_by_key(|r| *r.start());
    let mut merged: Vec<RangeInclusive<i64>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if *range.start() <= last.end().saturating_add(1) => {
                if range.end() > last.end() {
                    *last = *last.start()..=*range.end();
                }
            }
            _ => merged.push(range),
        }
    }
    merged
}

/// Whether `uid` is in one of `merged` (the output of [`merge_ranges`]).
pub fn in_ranges(merged: &[RangeInclusive<i64>], uid: i64) -> bool {
    let after = merged.partition_point(|r| *r.start() <= uid);
    after > 0 && uid <= *merged[after - 1].end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e9_a_change_on_the_server_is_followed() {
        assert_eq!(
            decide(false, Some(false), OnServer::Seen(true)),
            FlagSync::FollowServer(true)
        );
        assert_eq!(
            decide(true, Some(true), OnServer::Seen(false)),
            FlagSync::FollowServer(false)
        );
        // A message without an activity still records the server's flag.
        assert_eq!(
            decide(false, None, OnServer::Seen(true)),
            FlagSync::FollowServer(true)
        );
    }

    #[test]
    fn e9_a_change_in_the_crm_is_pushed() {
        assert_eq!(
            decide(false, Some(true), OnServer::Seen(false)),
            FlagSync::PushToServer(true)
        );
        assert_eq!(
            decide(true, Some(false), OnServer::Seen(true)),
            FlagSync::PushToServer(false)
        );
    }

    #[test]
    fn e9_when_both_changed_the_server_wins() {
        // Completed in the CRM while read elsewhere and then marked unread on the server.
        assert_eq!(
            decide(true, Some(true), OnServer::Seen(false)),
            FlagSync::FollowServer(false)
        );
    }

    #[test]
    fn e9_nothing_changed_or_both_the_same_way_keeps() {
        assert_eq!(
            decide(false, Some(false), OnServer::Seen(false)),
            FlagSync::Keep
        );
        assert_eq!(
            decide(true, Some(true), OnServer::Seen(true)),
            FlagSync::Keep
        );
        assert_eq!(decide(true, None, OnServer::Seen(true)), FlagSync::Keep);
    }

    #[test]
    fn e9_gone_from_the_server_is_removed_whatever_the_flags() {
        for (stored, completed) in [(false, Some(false)), (true, Some(true)), (false, None)] {
            assert_eq!(decide(stored, completed, OnServer::Gone), FlagSync::Remove);
        }
    }

    #[test]
    fn e9_full_view_treats_unlisted_messages_as_gone() {
        let all = HashMap::from([(1, true), (3, false)]);
        let view = ServerView::Full(&all);
        assert_eq!(view.on_server(1, false), OnServer::Seen(true));
        assert_eq!(view.on_server(2, false), OnServer::Gone);
        assert_eq!(view.on_server(3, true), OnServer::Seen(false));
    }

    #[test]
    fn e9_delta_view_keeps_unreported_messages_as_stored() {
        let changed = HashMap::from([(5, true), (9, false)]);
        let vanished = merge_ranges(vec![7..=8, 20..=30]);
        let view = ServerView::Delta {
            changed: &changed,
            vanished: &vanished,
        };
        assert_eq!(view.on_server(5, false), OnServer::Seen(true));
        assert_eq!(view.on_server(9, true), OnServer::Seen(false));
        // Not reported: unchanged since the last pass.
        assert_eq!(view.on_server(6, true), OnServer::Seen(true));
        assert_eq!(view.on_server(6, false), OnServer::Seen(false));
        for gone in [7, 8, 20, 25, 30] {
            assert_eq!(view.on_server(gone, false), OnServer::Gone, "uid {gone}");
        }
        assert_eq!(view.on_server(31, false), OnServer::Seen(false));
        // The same decision as a full pass would make for the same server state.
        let full = HashMap::from([(5, true), (6, true), (9, false)]);
        for (uid, stored) in [(5, false), (6, true), (7, false), (9, true)] {
            assert_eq!(
                decide(stored, Some(stored), view.on_server(uid, stored)),
                decide(
                    stored,
                    Some(stored),
                    ServerView::Full(&full).on_server(uid, stored)
                ),
                "uid {uid}"
            );
        }
    }

    #[test]
    fn ranges_are_merged_and_searched() {
        let merged = merge_ranges(vec![
            10..=12,
            1..=3,
            4..=4,
            11..=15,
            RangeInclusive::new(20, 19),
            30..=30,
        ]);
        assert_eq!(merged, vec![1..=4, 10..=15, 30..=30]);
        for (uid, inside) in [(0, false), (1, true), (4, true), (5, false), (9, false)] {
            assert_eq!(in_ranges(&merged, uid), inside, "uid {uid}");
        }
        for (uid, inside) in [(10, true), (15, true), (16, false), (30, true), (31, false)] {
            assert_eq!(in_ranges(&merged, uid), inside, "uid {uid}");
        }
        assert!(!in_ranges(&[], 1));
        assert_eq!(merge_ranges(vec![1..=i64::MAX, 5..=6]), vec![1..=i64::MAX]);
    }
}
