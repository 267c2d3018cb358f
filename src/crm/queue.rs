//! Queue rotation (T9) and ring order (T5), as pure functions over a rotation counter.
//!
//! A queue's state is one counter that only grows; the next member is
//! `members[counter % len]`. Storing a counter rather than "the last member" keeps the
//! rotation well defined when members are added or removed, and lets the database advance
//! it atomically (`rotation = rotation + 1`) when several processes share a queue.

use crate::crm::model::{QueueId, UserId};

/// A queue as the intake sees it: ordered members and the rotation counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueState {
    pub id: QueueId,
    pub members: Vec<UserId>,
    pub rotation: i64,
}

impl QueueState {
    /// Index of the member whose turn it is, or `None` for an empty queue.
    pub fn next_index(&self) -> Option<usize> {
        let len = i64::try_from(self.members.len()).ok().filter(|&n| n > 0)?;
        usize::try_from(self.rotation.rem_euclid(len)).ok()
    }

    /// T9: the member whose turn it is (the first member for the very first call).
    pub fn next_member(&self) -> Option<&UserId> {
        self.next_index().map(|i| &self.members[i])
    }

    /// All members, starting with the one whose turn it is and wrapping around.
    pub fn in_turn_order(&self) -> Vec<UserId> {
        let Some(start) = self.next_index() else {
            return Vec::new();
        };
        self.members[start..]
            .iter()
            .chain(&self.members[..start])
            .cloned()
            .collect()
    }
}

/// T5: the order in which to ring: `first` (the responsible), then the queue in turn
/// order, each employee once.
pub fn ring_order(first: Option<&UserId>, queue: Option<&QueueState>) -> Vec<UserId> {
    let mut order: Vec<UserId> = first.cloned().into_iter().collect();
    if let Some(queue) = queue {
        for member in queue.in_turn_order() {
            if !order.contains(&member) {
                order.push(member);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(members: &[&str], rotation: i64) -> QueueState {
        QueueState {
            id: QueueId("q".into()),
            members: members.iter().map(|m| UserId((*m).into())).collect(),
            rotation,
        }
    }

    fn ids(order: &[UserId]) -> Vec<&str> {
        order.iter().map(UserId::as_str).collect()
    }

    #[test]
    fn t9_first_call_goes_to_first_member_then_round_robin() {
        let picks: Vec<String> = (0..5)
            .map(|rotation| {
                let q = queue(&["anna", "ben", "cem"], rotation);
                q.next_member().unwrap().to_string()
            })
            .collect();
        assert_eq!(picks, ["anna", "ben", "cem", "anna", "ben"]);
    }

    #[test]
    fn t9_empty_queue_has_no_next_member() {
        assert_eq!(queue(&[], 7).next_member(), None);
        assert!(queue(&[], 7).in_turn_order().is_empty());
    }

    #[test]
    fn t9_rotation_survives_membership_changes() {
        // Counter 4 over three members points at the second; after one leaves, the
        // counter still names a valid member instead of running off the end.
        assert_eq!(
            queue(&["a", "b", "c"], 4).next_member().unwrap().as_str(),
            "b"
        );
        assert_eq!(queue(&["a", "c"], 4).next_member().unwrap().as_str(), "a");
        // A negative counter (hand-edited database) still picks a member.
        assert!(queue(&["a", "b"], -3).next_member().is_some());
    }

    #[test]
    fn t5_responsible_rings_first_then_queue_without_duplicates() {
        let q = queue(&["a", "b", "c"], 1);
        assert_eq!(
            ids(&ring_order(Some(&UserId("c".into())), Some(&q))),
            ["c", "b", "a"]
        );
        assert_eq!(
            ids(&ring_order(Some(&UserId("x".into())), Some(&q))),
            ["x", "b", "c", "a"]
        );
        assert_eq!(ids(&ring_order(None, Some(&q))), ["b", "c", "a"]);
        assert_eq!(ids(&ring_order(Some(&UserId("x".into())), None)), ["x"]);
    }
}
