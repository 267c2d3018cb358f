//! The decision record: why a call, an e-mail or an activity did what it did to the CRM,
//! in a form people and programs can read (`"decision"` in the API). It is built from
//! what the intake already computed — the matcher's [`MatchOutcome`] and the intake's
//! [`Decision`] — so it explains the real decision and never matches a second time.

use serde::{Deserialize, Serialize};

use crate::crm::intake::Decision;
use crate::crm::model::{CrmAction, EntityRef};
use crate::matcher::{ExclusionReason, Identifier, MatchOutcome, MatchStatus};

/// What was tried, who came into question and why, which rules applied, and the result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DecisionRecord {
    /// The normalised identifiers tried: E.164 (or digits), lower-cased addresses and
    /// their `@domain` (which exception entries can name).
    pub identifiers: Vec<String>,
    /// Every entity the matcher considered, in rank order (M8).
    pub candidates: Vec<CandidateWhy>,
    /// Rule IDs of `docs/rules.md`, in the order they applied, each once.
    pub rules: Vec<String>,
    /// What happened, e.g. `created lead:<id>` or `log only: <reason>`.
    pub outcome: String,
}

/// One entity the matcher considered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CandidateWhy {
    /// `kind:id`, e.g. `contact:0190…`.
    pub entity: String,
    pub why: String,
}

/// One customer identifier's share of a decision: a call has one, an e-mail one per
/// customer address.
#[derive(Debug, Clone, Copy)]
pub struct Considered<'a> {
    /// The identifier as received, to tell an exact match from a normalised one.
    pub raw: &'a str,
    /// `None` when there was nothing to match (a withheld caller).
    pub matched: Option<&'a MatchOutcome>,
    pub decision: &'a Decision,
    /// What the store created for this decision, with its ids.
    pub created: &'a [EntityRef],
}

impl DecisionRecord {
    /// The record of one or more identifiers' decisions, in order.
    pub fn build(parts: &[Considered<'_>]) -> Self {
        let mut record = DecisionRecord::default();
        let several = parts.len() > 1;
        let mut outcomes = Vec::with_capacity(parts.len());
        for part in parts {
            if let Some(matched) = part.matched {
                record.add_identifier(&matched.identifier);
                record.add_rules(identifier_rules(matched));
                record.add_candidates(part.raw, matched);
            }
            record.add_rules(part.decision.rules.iter().copied());
            let outcome = outcome(part);
            outcomes.push(match (several, part.matched) {
                (true, Some(m)) => format!("{}: {outcome}", m.identifier.key()),
                _ => outcome,
            });
        }
        record.outcome = outcomes.join("; ");
        record
    }

    /// A decision the intake never reached (no identifier to match): only logged.
    pub fn logged(rules: &[&'static str], reason: &str) -> Self {
        let mut record = DecisionRecord::default();
        record.add_rules(rules.iter().copied());
        record.outcome = format!("log only: {reason}");
        record
    }

    /// An identifier left out before matching (a blacklisted or unreadable address).
    pub fn add_skipped(
        &mut self,
        identifier: Option<&Identifier>,
        rule: Option<&'static str>,
        why: &str,
    ) {
        if let Some(identifier) = identifier {
            self.add_identifier(identifier);
        }
        self.add_rules(rule);
        self.outcome = if self.outcome.is_empty() {
            format!("log only: {why}")
        } else {
            format!("{}; {why}", self.outcome)
        };
    }

    /// The stored form (a `decision` TEXT column).
    pub fn to_json(&self) -> String {
        // A struct of strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored record; `None` for rows written before records existed.
    pub fn from_stored(text: Option<&str>) -> Option<Self> {
        text.and_then(|t| serde_json::from_str(t).ok())
    }

    fn add_identifier(&mut self, identifier: &Identifier) {
        let mut tried = vec![identifier.key().to_owned()];
        if let Identifier::Email(address) = identifier {
            tried.push(format!("@{}", address.domain()));
        }
        for value in tried {
            if !self.identifiers.contains(&value) {
                self.identifiers.push(value);
            }
        }
    }

    fn add_rules(&mut self, rules: impl IntoIterator<Item = &'static str>) {
        for rule in rules {
            if !self.rules.iter().any(|r| r == rule) {
                self.rules.push(rule.to_owned());
            }
        }
    }

    fn add_candidates(&mut self, raw: &str, matched: &MatchOutcome) {
        let key = matched.identifier.key();
        let how = if raw.trim() == key {
            "exactly".to_owned()
        } else {
            format!("normalised from '{}'", raw.trim())
        };
        let total = matched.matches.len();
        let first = matched.matches.first().map(|c| c.entity.to_string());
        for (rank, candidate) in matched.matches.iter().enumerate() {
            let place = match (rank, &first) {
                (0, _) => format!("rank 1 of {total}, chosen"),
                (_, Some(first)) => format!("rank {} of {total}, after {first}", rank + 1),
                (_, None) => format!("rank {} of {total}", rank + 1),
            };
            self.candidates.push(CandidateWhy {
                entity: candidate.entity.to_string(),
                why: format!("has {key} ({how}); {place} (M8)"),
            });
        }
    }
}

/// M1 always; M2 or M3 for how the identifier was compared; M4 or M6 for an exclusion.
fn identifier_rules(matched: &MatchOutcome) -> Vec<&'static str> {
    let mut rules = vec![
        "M1",
        match matched.identifier {
            Identifier::Phone(_) => "M2",
            Identifier::Email(_) => "M3",
        },
    ];
    if matched.status == MatchStatus::Excluded {
        rules.push(match matched.excluded_by {
            Some(ExclusionReason::Employee) => "M6",
            _ => "M4",
        });
    }
    rules
}

fn outcome(part: &Considered<'_>) -> String {
    let decision = part.decision;
    let list = |entities: &[EntityRef]| {
        entities
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match decision.action {
        CrmAction::Created if decision.attach.is_empty() => {
            format!("created {}", list(part.created))
        }
        CrmAction::Created => format!(
            "created {}, attached to {}",
            list(part.created),
            list(&decision.attach)
        ),
        CrmAction::Attached => format!("attached to {}", list(&decision.attach)),
        CrmAction::Offered => format!("offered to the agent: {}", decision.reason),
        CrmAction::Logged => format!("log only: {}", decision.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::intake::{CallFacts, CustomerContext, IntakeInput, NumberSettings, decide};
    use crate::crm::mail::{MailFacts, MailIntakeInput, MailboxPolicy, decide_mail};
    use crate::crm::model::{
        CrmSettings, Direction, Directions, EntityKind, LeadCreation, NumberId, QueueId, UserId,
    };
    use crate::crm::queue::QueueState;
    use crate::matcher::{
        Candidate, Exclusions, PhoneKey, normalise_phone, parse_email, parse_exception, resolve,
    };

    const RAW: &str = "030 123456";

    fn caller() -> Identifier {
        Identifier::Phone(normalise_phone(RAW, Some("DE".parse().unwrap())).unwrap())
    }

    fn number() -> NumberSettings {
        NumberSettings {
            id: NumberId("n1".into()),
            number: "+49301111".into(),
            default_country: "DE".parse().unwrap(),
            queue: Some(QueueId("q1".into())),
            lead_creation: LeadCreation::Automatic,
            directions: Directions::Incoming,
            route_to_responsible: true,
            ring_timeout_s: 20,
            source: "CALL".into(),
            change_responsible_on_transfer: false,
            trust: Default::default(),
        }
    }

    fn queue() -> QueueState {
        QueueState {
            id: QueueId("q1".into()),
            members: vec![UserId("u1".into()), UserId("u2".into())],
            rotation: 0,
        }
    }

    fn candidate(kind: EntityKind, id: &str, last: i64) -> Candidate {
        Candidate {
            entity: EntityRef::new(kind, id),
            responsible: Some(UserId("u2".into())),
            last_activity_at: last,
        }
    }

    fn call_record(
        number: Option<&NumberSettings>,
        matched: &MatchOutcome,
        created: &[EntityRef],
    ) -> DecisionRecord {
        let facts = CallFacts {
            direction: Direction::Incoming,
            customer_raw: RAW.into(),
            user: None,
            trust_flag: None,
        };
        let queue = queue();
        let decision = decide(IntakeInput {
            facts: &facts,
            number,
            matched,
            customer: &CustomerContext::default(),
            crm: &CrmSettings::default(),
            queue: Some(&queue),
            pipelines: &[],
        });
        DecisionRecord::build(&[Considered {
            raw: RAW,
            matched: Some(matched),
            decision: &decision,
            created,
        }])
    }

    #[test]
    fn t3_m7_a_new_caller_records_the_e164_tried_and_the_lead_created() {
        let matched = resolve(caller(), &Exclusions::default(), Vec::new());
        let lead = EntityRef::new(EntityKind::Lead, "l1");
        let record = call_record(Some(&number()), &matched, std::slice::from_ref(&lead));
        assert_eq!(record.identifiers, vec!["+4930123456"]);
        assert!(record.candidates.is_empty());
        for rule in ["M1", "M2", "T3", "M7", "T9"] {
            assert!(
                record.rules.contains(&rule.to_owned()),
                "{rule} in {:?}",
                record.rules
            );
        }
        assert_eq!(record.outcome, "created lead:l1");
    }

    #[test]
    fn m8_t5_a_known_contact_is_attached_and_every_candidate_says_why() {
        let matched = resolve(
            caller(),
            &Exclusions::default(),
            vec![
                candidate(EntityKind::Lead, "l1", 900),
                candidate(EntityKind::Contact, "c1", 100),
            ],
        );
        let record = call_record(Some(&number()), &matched, &[]);
        assert_eq!(record.outcome, "attached to contact:c1");
        assert_eq!(record.candidates.len(), 2);
        assert_eq!(record.candidates[0].entity, "contact:c1");
        assert!(
            record.candidates[0]
                .why
                .contains("normalised from '030 123456'")
        );
        assert!(record.candidates[0].why.contains("chosen"));
        assert_eq!(record.candidates[1].entity, "lead:l1");
        assert!(record.candidates[1].why.contains("after contact:c1"));
        for rule in ["M8", "T5", "T1"] {
            assert!(
                record.rules.contains(&rule.to_owned()),
                "{rule} in {:?}",
                record.rules
            );
        }
    }

    #[test]
    fn m4_m6_t6_an_exception_or_an_employee_is_log_only_with_its_rule() {
        let mut exceptions = Exclusions::default();
        exceptions.add_exception(&parse_exception(RAW, Some("DE".parse().unwrap())).unwrap());
        let excepted = resolve(caller(), &exceptions, Vec::new());
        let record = call_record(Some(&number()), &excepted, &[]);
        assert!(record.rules.contains(&"M4".to_owned()));
        assert!(record.rules.contains(&"T6".to_owned()));
        assert!(
            record.outcome.starts_with("log only: "),
            "{}",
            record.outcome
        );

        let mut employees = Exclusions::default();
        employees.add_employee_phone(&PhoneKey::E164("+4930123456".into()));
        let employee = resolve(caller(), &employees, Vec::new());
        let record = call_record(Some(&number()), &employee, &[]);
        assert!(record.rules.contains(&"M6".to_owned()));
        assert!(!record.rules.contains(&"M4".to_owned()));
        assert!(record.outcome.contains("employee"), "{}", record.outcome);
    }

    #[test]
    fn t2_a_number_not_configured_is_log_only() {
        let matched = resolve(caller(), &Exclusions::default(), Vec::new());
        let record = call_record(None, &matched, &[]);
        assert!(record.rules.contains(&"T2".to_owned()));
        assert_eq!(
            record.outcome,
            "log only: the number is not configured for CRM integration"
        );
    }

    #[test]
    fn e7_mail_from_a_known_address_names_the_address_its_domain_and_the_entity() {
        let address = Identifier::Email(parse_email("Anna@Example.org").unwrap());
        let matched = resolve(
            address,
            &Exclusions::default(),
            vec![candidate(EntityKind::Contact, "c1", 1)],
        );
        let mailbox = MailboxPolicy {
            id: "mb1".into(),
            name: "Sales".into(),
            crm_link: true,
            create_leads_incoming: true,
            create_leads_outgoing: false,
            route_to_responsible: false,
            queue: None,
            owner: None,
            new_work_to_owner: false,
            default_country: "DE".parse().unwrap(),
        };
        let decision = decide_mail(MailIntakeInput {
            mailbox: &mailbox,
            facts: &MailFacts {
                direction: Direction::Incoming,
                customer: "anna@example.org".into(),
            },
            matched: &matched,
            customer: &CustomerContext::default(),
            crm: &CrmSettings::default(),
            queue: None,
            pipelines: &[],
            by_hand: false,
        });
        let record = DecisionRecord::build(&[Considered {
            raw: "Anna@Example.org",
            matched: Some(&matched),
            decision: &decision,
            created: &[],
        }]);
        assert_eq!(record.identifiers, vec!["anna@example.org", "@example.org"]);
        assert_eq!(record.rules[..2], ["M1".to_owned(), "M3".to_owned()]);
        assert!(record.rules.contains(&"E7".to_owned()));
        assert!(
            !record.rules.iter().any(|r| r == "T1" || r == "T5"),
            "{:?}",
            record.rules
        );
        assert_eq!(record.outcome, "attached to contact:c1");
        assert!(record.candidates[0].why.contains("normalised"));
    }

    #[test]
    fn a_withheld_caller_and_old_rows_have_plain_records() {
        let record = DecisionRecord::logged(&["T1"], "no number");
        assert_eq!(record.outcome, "log only: no number");
        let stored = record.to_json();
        assert_eq!(DecisionRecord::from_stored(Some(&stored)), Some(record));
        assert_eq!(DecisionRecord::from_stored(None), None);
    }
}
