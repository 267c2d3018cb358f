//! UID sets for commands (RFC 3501 9 `sequence-set`): `1:5,7,9:12`, split so that no
//! command line grows past what servers accept (Dovecot: 64 KiB; some servers: 8 KiB).

use std::ops::RangeInclusive;

use super::Uid;

/// Longest set written into one command.
const MAX_SET_LEN: usize = 4000;

/// `uids` (any order, duplicates allowed) as compact sets of at most [`MAX_SET_LEN`]
/// bytes each; none for no UIDs. UID 0 does not exist (RFC 3501 2.3.1.1) and is dropped.
pub(super) fn format(uids: &[Uid]) -> Vec<String> {
    let mut sorted: Vec<u32> = uids.iter().map(|u| u.0).filter(|&u| u != 0).collect();
    sorted.sort_unstable();
    sorted.dedup();

    let mut sets = Vec::new();
    let mut current = String::new();
    let mut rest = sorted.as_slice();
    while let Some(&start) = rest.first() {
        // Sorted and unique, so a run is where each UID is its predecessor + 1.
        let run = 1 + rest
            .windows(2)
            .take_while(|pair| pair[0].checked_add(1) == Some(pair[1]))
            .count();
        let end = rest[run - 1];
        rest = &rest[run..];
        let range = if end == start {
            start.to_string()
        } else {
            format!("{start}:{end}")
        };
        if !current.is_empty() && current.len() + 1 + range.len() > MAX_SET_LEN {
            sets.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&range);
    }
    if !current.is_empty() {
        sets.push(current);
    }
    sets
}

/// The UIDs from `from` up to the largest possible one that are not in `present`
/// (ascending, all at least `from`), as ranges: what a listing of every message from
/// `from` up says is gone.
pub(super) fn missing_from(from: u32, present: &[Uid]) -> Vec<RangeInclusive<u32>> {
    let mut missing = Vec::new();
    let mut next = Some(from);
    for uid in present.iter().map(|u| u.0) {
        let Some(start) = next else {
            break;
        };
        if uid > start {
            missing.push(start..=uid - 1);
        }
        if uid >= start {
            next = uid.checked_add(1);
        }
    }
    if let Some(start) = next {
        missing.push(start..=u32::MAX);
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uids(list: &[u32]) -> Vec<Uid> {
        list.iter().copied().map(Uid).collect()
    }

    #[test]
    fn runs_become_ranges() {
        assert_eq!(format(&uids(&[9, 1, 2, 3, 5, 10, 11, 3])), ["1:3,5,9:11"]);
        assert_eq!(format(&uids(&[7])), ["7"]);
        assert!(format(&[]).is_empty());
        assert!(format(&uids(&[0])).is_empty());
        assert_eq!(
            format(&uids(&[u32::MAX - 1, u32::MAX])),
            ["4294967294:4294967295"]
        );
    }

    #[test]
    fn e9_missing_uids_are_the_gaps_of_a_listing() {
        assert_eq!(
            missing_from(1, &uids(&[2, 3, 7])),
            [1..=1, 4..=6, 8..=u32::MAX]
        );
        assert_eq!(missing_from(5, &uids(&[5, 6])), [7..=u32::MAX]);
        assert_eq!(missing_from(5, &[]), [5..=u32::MAX]);
        assert!(
            missing_from(1, &uids(&[1, u32::MAX - 1, u32::MAX]))
                .iter()
                .eq([2..=u32::MAX - 2].iter())
        );
        // A listed UID below `from` (a server's `n:*` answer) changes nothing.
        assert_eq!(missing_from(10, &uids(&[4, 10])), [11..=u32::MAX]);
    }

    #[test]
    fn long_sets_are_split_and_lose_nothing() {
        let odd: Vec<Uid> = (0..5000).map(|i| Uid(i * 2 + 1)).collect();
        let sets = format(&odd);
        assert!(sets.len() > 1);
        assert!(sets.iter().all(|s| s.len() <= MAX_SET_LEN));
        let back: Vec<u32> = sets
            .iter()
            .flat_map(|s| s.split(','))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(back, odd.iter().map(|u| u.0).collect::<Vec<_>>());
    }
}
