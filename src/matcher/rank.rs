//! M8: the order of the known entities that carry an identifier.

use std::collections::HashSet;

use crate::crm::model::{EntityKind, EntityRef, Millis, UserId};

/// A known entity that carries the identifier, as found by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub entity: EntityRef,
    pub responsible: Option<UserId>,
    pub last_activity_at: Millis,
}

/// M8: contact, then company, then lead; within a kind the most recently active first;
/// ties go to the smaller id (ids are UUID v7, so the older entity), so the order never
/// depends on the order the store returned. Deals are dropped: they are reached through
/// their contact or company, never matched directly. An entity reported twice (its number
/// in two fields) keeps its first place.
pub fn rank(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.retain(|candidate| candidate.entity.kind != EntityKind::Deal);
    candidates.sort_by(|a, b| {
        a.entity
            .kind
            .rank()
            .cmp(&b.entity.kind.rank())
            .then(b.last_activity_at.cmp(&a.last_activity_at))
            .then_with(|| a.entity.id.cmp(&b.entity.id))
    });
    let mut seen = HashSet::new();
    candidates.retain(|candidate| seen.insert(candidate.entity.clone()));
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(kind: EntityKind, id: &str, last_activity_at: Millis) -> Candidate {
        Candidate {
            entity: EntityRef::new(kind, id),
            responsible: None,
            last_activity_at,
        }
    }

    fn order(candidates: &[Candidate]) -> Vec<String> {
        candidates.iter().map(|c| c.entity.to_string()).collect()
    }

    #[test]
    fn m8_contact_before_company_before_lead() {
        let ranked = rank(vec![
            candidate(EntityKind::Lead, "l1", 900),
            candidate(EntityKind::Company, "co1", 500),
            candidate(EntityKind::Contact, "c1", 100),
        ]);
        assert_eq!(order(&ranked), ["contact:c1", "company:co1", "lead:l1"]);
    }

    #[test]
    fn m8_most_recently_active_first_within_a_kind() {
        let ranked = rank(vec![
            candidate(EntityKind::Contact, "old", 100),
            candidate(EntityKind::Lead, "l1", 50),
            candidate(EntityKind::Contact, "new", 300),
            candidate(EntityKind::Contact, "mid", 200),
        ]);
        assert_eq!(
            order(&ranked),
            ["contact:new", "contact:mid", "contact:old", "lead:l1"]
        );
    }

    #[test]
    fn m8_ties_are_broken_by_id_whatever_the_input_order() {
        let a = candidate(EntityKind::Contact, "0190a", 100);
        let b = candidate(EntityKind::Contact, "0190b", 100);
        let forward = rank(vec![a.clone(), b.clone()]);
        let backward = rank(vec![b, a]);
        assert_eq!(forward, backward);
        assert_eq!(order(&forward), ["contact:0190a", "contact:0190b"]);
    }

    #[test]
    fn m8_deals_are_never_candidates() {
        let ranked = rank(vec![
            candidate(EntityKind::Deal, "d1", 999),
            candidate(EntityKind::Lead, "l1", 1),
        ]);
        assert_eq!(order(&ranked), ["lead:l1"]);
        assert!(rank(vec![candidate(EntityKind::Deal, "d1", 1)]).is_empty());
    }

    #[test]
    fn m8_an_entity_found_twice_is_listed_once() {
        let ranked = rank(vec![
            candidate(EntityKind::Contact, "c1", 100),
            candidate(EntityKind::Contact, "c2", 200),
            candidate(EntityKind::Contact, "c1", 300),
        ]);
        assert_eq!(order(&ranked), ["contact:c1", "contact:c2"]);
        assert_eq!(ranked[0].last_activity_at, 300);
    }
}
