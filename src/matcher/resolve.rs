//! M1: the one decision both channels make about an identifier.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::exclusions::{ExclusionReason, Exclusions};
use super::identifier::Identifier;
use super::rank::{Candidate, rank};

/// What the matcher concluded about an identifier.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MatchStatus {
    /// At least one contact, company or lead carries it.
    Known,
    /// Nobody carries it: a candidate for a new entity.
    Unknown,
    /// On the exceptions list or an employee's (M4, M6): recorded, never in the CRM.
    Excluded,
}

/// The decision, with a sentence saying why, for the activity and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchOutcome {
    pub identifier: Identifier,
    pub status: MatchStatus,
    pub reason: String,
    /// Ranked (M8); empty unless `Known`.
    pub matches: Vec<Candidate>,
    /// Which list excluded the identifier (M4 or M6); `None` unless `Excluded`.
    pub excluded_by: Option<ExclusionReason>,
}

impl MatchOutcome {
    /// M8: the entity the activity goes to, recorded on the activity.
    pub fn chosen(&self) -> Option<&Candidate> {
        self.matches.first()
    }
}

/// M1: decide about `identifier`, given the exclusions and the candidates the store found
/// for its key. An exclusion wins over any match: an employee who is also a contact is
/// still an employee, so nothing is attached (M4, M6).
pub fn resolve(
    identifier: Identifier,
    exclusions: &Exclusions,
    found: Vec<Candidate>,
) -> MatchOutcome {
    if let Some(exclusion) = exclusions.check(&identifier) {
        return MatchOutcome {
            identifier,
            status: MatchStatus::Excluded,
            reason: exclusion.message,
            matches: Vec::new(),
            excluded_by: Some(exclusion.reason),
        };
    }
    let matches = rank(found);
    let (status, reason) = match matches.as_slice() {
        [] => (
            MatchStatus::Unknown,
            format!("no contact, company or lead has {identifier}"),
        ),
        [only] => (
            MatchStatus::Known,
            format!("matched {} by {identifier}", only.entity),
        ),
        [first, ..] => (
            MatchStatus::Known,
            format!(
                "matched {} by {identifier}, the first of {} matches",
                first.entity,
                matches.len()
            ),
        ),
    };
    MatchOutcome {
        identifier,
        status,
        reason,
        matches,
        excluded_by: None,
    }
}

impl MatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchStatus::Known => "known",
            MatchStatus::Unknown => "unknown",
            MatchStatus::Excluded => "excluded",
        }
    }
}

impl fmt::Display for MatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::model::{EntityKind, EntityRef, UserId};
    use crate::matcher::{normalise_phone, parse_email, parse_exception};

    fn candidate(kind: EntityKind, id: &str, last_activity_at: i64) -> Candidate {
        Candidate {
            entity: EntityRef::new(kind, id),
            responsible: Some(UserId::from(format!("u-{id}"))),
            last_activity_at,
        }
    }

    fn caller(input: &str) -> Identifier {
        Identifier::Phone(normalise_phone(input, Some("DE".parse().unwrap())).unwrap())
    }

    #[test]
    fn m1_known_caller_is_matched_to_ranked_entities() {
        let outcome = resolve(
            caller("030 123456"),
            &Exclusions::default(),
            vec![
                candidate(EntityKind::Lead, "l1", 900),
                candidate(EntityKind::Deal, "d1", 999),
                candidate(EntityKind::Contact, "c1", 100),
            ],
        );
        assert_eq!(outcome.status, MatchStatus::Known);
        assert_eq!(
            outcome.reason,
            "matched contact:c1 by +4930123456, the first of 2 matches"
        );
        let chosen = outcome.chosen().unwrap();
        assert_eq!(chosen.entity, EntityRef::new(EntityKind::Contact, "c1"));
        assert_eq!(chosen.responsible, Some(UserId::from("u-c1".to_owned())));
        assert_eq!(outcome.matches.len(), 2);
    }

    #[test]
    fn m1_single_match_reason_names_entity_and_key() {
        let address = Identifier::Email(parse_email("Kunde <Kunde@Example.de>").unwrap());
        let outcome = resolve(
            address,
            &Exclusions::default(),
            vec![candidate(EntityKind::Company, "co1", 1)],
        );
        assert_eq!(outcome.status, MatchStatus::Known);
        assert_eq!(outcome.reason, "matched company:co1 by kunde@example.de");
    }

    #[test]
    fn m1_nobody_has_it_is_unknown() {
        let outcome = resolve(caller("030 123456"), &Exclusions::default(), Vec::new());
        assert_eq!(outcome.status, MatchStatus::Unknown);
        assert_eq!(
            outcome.reason,
            "no contact, company or lead has +4930123456"
        );
        assert!(outcome.matches.is_empty());
        assert_eq!(outcome.chosen(), None);
    }

    #[test]
    fn m8_only_deals_found_is_unknown() {
        let outcome = resolve(
            caller("030 123456"),
            &Exclusions::default(),
            vec![candidate(EntityKind::Deal, "d1", 1)],
        );
        assert_eq!(outcome.status, MatchStatus::Unknown);
    }

    #[test]
    fn m4_excluded_wins_over_known() {
        let mut exclusions = Exclusions::default();
        exclusions.add_exception(&parse_exception("+49 30 123456", None).unwrap());
        let outcome = resolve(
            caller("030 123456"),
            &exclusions,
            vec![candidate(EntityKind::Contact, "c1", 1)],
        );
        assert_eq!(outcome.status, MatchStatus::Excluded);
        assert_eq!(outcome.reason, "+4930123456 is on the exceptions list");
        assert!(outcome.matches.is_empty());
    }

    #[test]
    fn m6_employee_extension_is_excluded_even_if_an_entity_has_it() {
        let mut exclusions = Exclusions::default();
        exclusions.add_employee_extension("101");
        let outcome = resolve(
            caller("101"),
            &exclusions,
            vec![candidate(EntityKind::Lead, "l1", 1)],
        );
        assert_eq!(outcome.status, MatchStatus::Excluded);
        assert_eq!(outcome.reason, "extension 101 belongs to an employee");
    }

    #[test]
    fn m1_status_spelling() {
        assert_eq!(MatchStatus::Excluded.as_str(), "excluded");
        assert_eq!(
            serde_json::to_string(&MatchStatus::Unknown).unwrap(),
            "\"unknown\""
        );
        assert_eq!(
            serde_json::from_str::<MatchStatus>("\"known\"").unwrap(),
            MatchStatus::Known
        );
    }
}
