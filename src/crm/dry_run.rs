//! The dry-run of a number's settings: what its past calls would have done under other
//! settings. Pure: the adapter reads the calls, the customers as the database knows them
//! now and the queue; each call goes through the same [`decide`] as a live call, in the
//! order the calls came in, and nothing is written.

use std::collections::{HashMap, HashSet};

use crate::crm::intake::{
    CallFacts, CustomerContext, Decision, IntakeInput, NewEntities, NumberSettings, PipelineEntry,
    decide,
};
use crate::crm::model::{
    CrmSettings, EntityKind, EntityRef, Millis, QueueId, SimpleCreates, UserId,
};
use crate::crm::queue::{QueueState, ring_order};
use crate::matcher::{Candidate, Exclusions, MatchOutcome, MatchStatus, resolve};

/// One past call as the call log recorded it, with its customer matched now.
#[derive(Debug, Clone)]
pub struct PastCall {
    /// The call log id.
    pub id: String,
    pub facts: CallFacts,
    /// The customer's match now; `None` for a withheld caller.
    pub matched: Option<MatchOutcome>,
    /// The company and open deals of the best match now.
    pub customer: CustomerContext,
    pub started_at: Millis,
    /// What the call log recorded.
    pub route: Vec<UserId>,
    pub created: Vec<EntityRef>,
    /// The call took a turn of its number's queue (T9).
    pub took_turn: bool,
}

/// The route and what is created, on one side of the comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub route: Vec<UserId>,
    /// Recorded: `kind:id`; proposed: the kinds that would be created (`lead`, `deal`…).
    pub created: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compared {
    pub call: String,
    pub actual: Effect,
    pub proposed: Effect,
}

/// What stays the same for every call of the replay.
#[derive(Debug, Clone, Copy)]
pub struct Proposal<'a> {
    pub number: &'a NumberSettings,
    pub crm: &'a CrmSettings,
    pub pipelines: &'a [PipelineEntry],
}

/// Replays `calls` (oldest first) under `proposal`. `queue` is the proposed queue now;
/// when it is the queue the calls were taken on (`recorded_queue`), the turns they took
/// are wound back, so the replay starts where the first call found the rotation (turns
/// other numbers took meanwhile are not known here). What a call created, or a later
/// call, is not yet known to it: a caller who became a lead is a new caller again. What
/// the replay itself would create is known to the later calls of the same number (M7).
pub fn replay(
    calls: &[PastCall],
    proposal: Proposal<'_>,
    mut queue: Option<QueueState>,
    recorded_queue: Option<&QueueId>,
) -> Vec<Compared> {
    if let Some(state) = &mut queue
        && Some(&state.id) == recorded_queue
    {
        let turns = calls.iter().filter(|c| c.took_turn).count();
        state.rotation -= i64::try_from(turns).unwrap_or(0);
    }
    let mut later: HashSet<EntityRef> = calls.iter().flat_map(|c| c.created.clone()).collect();
    let mut proposed_owner: HashMap<String, Candidate> = HashMap::new();
    let mut out = Vec::with_capacity(calls.len());
    for call in calls {
        let effect = match &call.matched {
            Some(matched) => {
                let (matched, customer) =
                    as_it_was(matched, &call.customer, &later, &proposed_owner);
                let decision = decide(IntakeInput {
                    facts: &call.facts,
                    number: Some(proposal.number),
                    matched: &matched,
                    customer: &customer,
                    crm: proposal.crm,
                    queue: queue.as_ref(),
                    pipelines: proposal.pipelines,
                });
                if decision.advances_queue()
                    && let Some(state) = &mut queue
                {
                    state.rotation += 1;
                }
                let created = decision.create.as_ref().map(kinds).unwrap_or_default();
                claim(
                    &mut proposed_owner,
                    &decision,
                    &matched,
                    &call.id,
                    call.started_at,
                );
                Effect {
                    route: decision.route,
                    created,
                }
            }
            // A withheld caller is only logged and rings the queue in turn.
            None => Effect {
                route: ring_order(None, queue.as_ref()),
                created: Vec::new(),
            },
        };
        for entity in &call.created {
            later.remove(entity);
        }
        out.push(Compared {
            call: call.id.clone(),
            actual: Effect {
                route: call.route.clone(),
                created: call.created.iter().map(ToString::to_string).collect(),
            },
            proposed: effect,
        });
    }
    out
}

/// The match as a call or message would have seen it: without what it and later ones
/// created, with what the replay created before it. `customer` is the context of the
/// best match now; it holds only while that match stays the best.
pub(crate) fn as_it_was(
    matched: &MatchOutcome,
    customer: &CustomerContext,
    later: &HashSet<EntityRef>,
    proposed_owner: &HashMap<String, Candidate>,
) -> (MatchOutcome, CustomerContext) {
    if matched.status == MatchStatus::Excluded {
        return (matched.clone(), CustomerContext::default());
    }
    let mut found: Vec<Candidate> = matched
        .matches
        .iter()
        .filter(|c| !later.contains(&c.entity))
        .cloned()
        .collect();
    found.extend(proposed_owner.get(matched.identifier.key()).cloned());
    let again = resolve(matched.identifier.clone(), &Exclusions::default(), found);
    let customer = if again.chosen().map(|c| &c.entity) == matched.chosen().map(|c| &c.entity) {
        customer.clone()
    } else {
        CustomerContext::default()
    };
    (again, customer)
}

/// M7: what the replay would create for an identifier owns it for the later calls or
/// messages of the replay.
pub(crate) fn claim(
    proposed_owner: &mut HashMap<String, Candidate>,
    decision: &Decision,
    matched: &MatchOutcome,
    by: &str,
    at: Millis,
) {
    if let Some(new) = &decision.create
        && new.claims_identifier()
    {
        proposed_owner.insert(
            matched.identifier.key().to_owned(),
            Candidate {
                entity: EntityRef::new(owner_kind(new), format!("proposed-{by}")),
                responsible: decision.responsible.user().cloned(),
                last_activity_at: at,
            },
        );
    }
}

fn owner_kind(new: &NewEntities) -> EntityKind {
    match new {
        NewEntities::Lead { .. } => EntityKind::Lead,
        NewEntities::CustomerWithDeal {
            kind: SimpleCreates::Company,
            ..
        } => EntityKind::Company,
        NewEntities::CustomerWithDeal { .. } => EntityKind::Contact,
        NewEntities::DealFor { .. } => EntityKind::Deal,
    }
}

/// The kinds a plan would create, the owner first.
pub(crate) fn kinds(new: &NewEntities) -> Vec<String> {
    let mut kinds = vec![owner_kind(new).as_str().to_owned()];
    if let NewEntities::CustomerWithDeal { deal: Some(_), .. } = new {
        kinds.push(EntityKind::Deal.as_str().to_owned());
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::model::{Direction, Directions, LeadCreation, NumberId};
    use crate::matcher::{Identifier, PhoneKey};

    fn number(lead_creation: LeadCreation) -> NumberSettings {
        NumberSettings {
            id: NumberId("n1".into()),
            number: "+49301111".into(),
            default_country: "DE".parse().unwrap(),
            queue: Some(QueueId("q1".into())),
            lead_creation,
            directions: Directions::Incoming,
            route_to_responsible: true,
            ring_timeout_s: 20,
            source: "CALL".into(),
            change_responsible_on_transfer: false,
            trust: Default::default(),
        }
    }

    fn past(id: &str, caller: &str, found: Vec<Candidate>, created: Vec<EntityRef>) -> PastCall {
        PastCall {
            id: id.into(),
            facts: CallFacts {
                direction: Direction::Incoming,
                customer_raw: caller.into(),
                user: None,
                trust_flag: None,
            },
            matched: Some(resolve(
                Identifier::Phone(PhoneKey::E164(caller.into())),
                &Exclusions::default(),
                found,
            )),
            customer: CustomerContext::default(),
            started_at: 1,
            route: Vec::new(),
            took_turn: !created.is_empty(),
            created,
        }
    }

    fn lead(id: &str) -> Candidate {
        Candidate {
            entity: EntityRef::new(EntityKind::Lead, id),
            responsible: Some(UserId("u1".into())),
            last_activity_at: 1,
        }
    }

    fn users(ids: &[&str]) -> Vec<UserId> {
        ids.iter().map(|u| UserId((*u).into())).collect()
    }

    #[test]
    fn t4_t9_a_caller_who_became_a_lead_is_new_again_and_goes_round_the_proposed_queue() {
        let calls = vec![
            past(
                "c1",
                "+491",
                vec![lead("l1")],
                vec![EntityRef::new(EntityKind::Lead, "l1")],
            ),
            past("c2", "+491", vec![lead("l1")], Vec::new()),
            past(
                "c3",
                "+492",
                vec![lead("l3")],
                vec![EntityRef::new(EntityKind::Lead, "l3")],
            ),
        ];
        let queue = QueueState {
            id: QueueId("q1".into()),
            members: users(&["u1", "u2"]),
            rotation: 0,
        };
        let crm = CrmSettings::default();
        let automatic = number(LeadCreation::Automatic);
        let proposal = Proposal {
            number: &automatic,
            crm: &crm,
            pipelines: &[],
        };
        // Now the rotation is 2: both creating calls took a turn of this queue.
        let now = QueueState {
            rotation: 2,
            ..queue.clone()
        };
        let out = replay(&calls, proposal, Some(now.clone()), Some(&queue.id));
        assert_eq!(out[0].proposed.created, vec!["lead"]);
        assert_eq!(out[0].proposed.route, users(&["u1", "u2"]));
        assert_eq!(out[0].actual.created, vec!["lead:l1"]);
        // The second call of +491 finds the lead the replay made for the first (M7).
        assert!(out[1].proposed.created.is_empty());
        assert_eq!(out[2].proposed.created, vec!["lead"]);
        assert_eq!(
            out[2].proposed.route,
            users(&["u2", "u1"]),
            "the turn moved on (T9)"
        );

        let off = number(LeadCreation::Off);
        let out = replay(
            &calls,
            Proposal {
                number: &off,
                ..proposal
            },
            Some(now),
            Some(&queue.id),
        );
        assert!(out.iter().all(|c| c.proposed.created.is_empty()), "{out:?}");
        assert_eq!(out[2].proposed.route, users(&["u1", "u2"]), "no turn taken");
    }
}
