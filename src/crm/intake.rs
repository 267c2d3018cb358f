//! The intake policy: what a call does to the CRM. One pure function, `decide`.
//!
//! Inputs are values the adapter gathered (the call's facts, the matcher's outcome, the
//! number's and the account's settings, the queue, the pipelines); the output is a
//! `Decision` the store applies in one transaction. Nothing here reads a clock, a socket
//! or a database, so every rule (T1, T3–T9, T11–T13, E14) is tested without either.

use crate::crm::model::{
    CallOutcome, CompanyId, ContactId, CrmAction, CrmMode, CrmSettings, DealId, Direction,
    EntityKind, EntityRef, LeadCreation, Millis, NumberId, PipelineId, QueueId, SimpleCreates,
    StageId, UserId,
};
use crate::crm::queue::{QueueState, ring_order};
use crate::matcher::{Candidate, Country, MatchOutcome, MatchStatus};

/// A configured number as the intake sees it (T2, T4–T8, T10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberSettings {
    pub id: NumberId,
    /// Our number in E.164.
    pub number: String,
    pub default_country: Country,
    pub queue: Option<QueueId>,
    pub lead_creation: LeadCreation,
    pub directions: crate::crm::model::Directions,
    pub route_to_responsible: bool,
    pub ring_timeout_s: u32,
    pub source: String,
    pub change_responsible_on_transfer: bool,
    /// Caller trust: verification, hourly limit, withheld callers (T6).
    pub trust: crate::crm::trust::TrustSettings,
}

/// What is known about the call itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFacts {
    pub direction: Direction,
    /// The customer's number as received (the caller, or the callee of an outgoing call).
    pub customer_raw: String,
    /// The employee who dialled an outgoing call, if the PBX said.
    pub user: Option<UserId>,
    /// T6: the caller trust rule that keeps this call out of the CRM, if one does.
    pub trust_flag: Option<crate::crm::trust::TrustFlag>,
}

/// An open deal of the best-matching customer (T11, E14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenDeal {
    pub id: DealId,
    pub contact: Option<ContactId>,
    pub company: Option<CompanyId>,
    pub responsible: Option<UserId>,
    pub last_activity_at: Millis,
}

/// What the store found around the best match: its company and its open deals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerContext {
    /// The company a matched contact belongs to.
    pub contact_company: Option<CompanyId>,
    /// Open deals of the matched contact or company, most recently active first.
    pub open_deals: Vec<OpenDeal>,
}

/// A pipeline and its first stage, where new deals go (T12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineEntry {
    pub id: PipelineId,
    pub first_stage: StageId,
    pub is_default: bool,
}

/// Where a new deal goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealTarget {
    pub pipeline: PipelineId,
    pub stage: StageId,
}

/// What to create for the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewEntities {
    /// T3 classic mode: a lead; with `customer` set it is a repeat lead (E14).
    Lead { customer: Option<ContactId> },
    /// T3 simple mode: a contact or company carrying the number, and a deal for it.
    CustomerWithDeal {
        kind: SimpleCreates,
        deal: Option<DealTarget>,
    },
    /// T11: a known customer without an open deal gets one.
    DealFor {
        customer: EntityRef,
        deal: DealTarget,
    },
}

impl NewEntities {
    /// Whether this creates an entity that takes ownership of the identifier (M7).
    /// A deal for an existing customer does not: the customer already owns it.
    pub fn claims_identifier(&self) -> bool {
        match self {
            NewEntities::Lead { customer } => customer.is_none(),
            NewEntities::CustomerWithDeal { .. } => true,
            NewEntities::DealFor { .. } => false,
        }
    }
}

/// Who becomes responsible for what the call creates or touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Responsible {
    /// Nobody (log only, or an empty queue).
    Nobody,
    /// An existing owner: the matched entity's, or the employee who dialled.
    Employee(UserId),
    /// T9: the queue member whose turn it is; the queue's rotation advances.
    NextInQueue(UserId),
}

impl Responsible {
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Responsible::Nobody => None,
            Responsible::Employee(u) | Responsible::NextInQueue(u) => Some(u),
        }
    }
}

/// The intake's answer for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: CrmAction,
    /// Why, in words shown on the call log.
    pub reason: String,
    pub create: Option<NewEntities>,
    /// Existing entities the call activity is attached to (besides what is created).
    pub attach: Vec<EntityRef>,
    /// M8: the entity the matcher chose, recorded on the activity.
    pub matched: Option<Candidate>,
    pub responsible: Responsible,
    /// T5: employees to ring, in order. Empty for outgoing calls.
    pub route: Vec<UserId>,
    /// Ring each target this long before moving on.
    pub ring_timeout_s: u32,
    /// T8: the source of what is created (the number's source).
    pub source: String,
    /// The rule IDs of `docs/rules.md` that gave this answer, in the order applied; shown
    /// in the decision record (`crm::decision`).
    pub rules: Vec<&'static str>,
}

impl Decision {
    /// The queue rotation advances exactly when a queue member was handed new work.
    pub fn advances_queue(&self) -> bool {
        matches!(self.responsible, Responsible::NextInQueue(_))
    }

    /// Whether the call gets an activity (an activity never exists without an entity).
    pub fn records_activity(&self) -> bool {
        matches!(self.action, CrmAction::Created | CrmAction::Attached)
    }
}

/// Everything `decide` reads.
#[derive(Debug, Clone, Copy)]
pub struct IntakeInput<'a> {
    pub facts: &'a CallFacts,
    /// `None`: the call is on a number that is not configured.
    pub number: Option<&'a NumberSettings>,
    pub matched: &'a MatchOutcome,
    pub customer: &'a CustomerContext,
    pub crm: &'a CrmSettings,
    pub queue: Option<&'a QueueState>,
    pub pipelines: &'a [PipelineEntry],
}

/// Decides what a call does to the CRM.
pub fn decide(input: IntakeInput<'_>) -> Decision {
    let IntakeInput {
        facts,
        number,
        matched,
        crm,
        queue,
        pipelines,
        ..
    } = input;
    let incoming = facts.direction == Direction::Incoming;
    let queue_route = |first: Option<&UserId>| {
        if incoming {
            ring_order(first, queue)
        } else {
            Vec::new()
        }
    };

    let Some(number) = number else {
        // T2: integration is configured per number; an unknown number is only logged.
        return log_only(
            "the number is not configured for CRM integration".to_owned(),
            Vec::new(),
            0,
            &["T2"],
        );
    };
    let timeout = number.ring_timeout_s;
    if let Some(flag) = facts.trust_flag {
        // T6: an untrusted caller is routed and logged, never put in the CRM.
        return log_only(
            flag.reason().to_owned(),
            queue_route(None),
            timeout,
            &["T6"],
        );
    }

    match matched.status {
        // T6 / M4 / M6: logged, never in the CRM; the call still rings the queue.
        MatchStatus::Excluded => {
            log_only(matched.reason.clone(), queue_route(None), timeout, &["T6"])
        }
        MatchStatus::Known => match matched.matches.first() {
            Some(best) => known_caller(input, number, best, &queue_route),
            None => log_only(matched.reason.clone(), queue_route(None), timeout, &[]),
        },
        MatchStatus::Unknown => {
            // T7: directions limit creation only; T4: manual offers, off ignores.
            if !number.directions.covers(facts.direction) {
                return log_only(
                    format!(
                        "entities are not created for {} calls on {}",
                        facts.direction, number.number
                    ),
                    queue_route(None),
                    timeout,
                    &["T7"],
                );
            }
            match number.lead_creation {
                LeadCreation::Off => log_only(
                    format!("lead creation is off on {}", number.number),
                    queue_route(None),
                    timeout,
                    &["T4"],
                ),
                LeadCreation::Manual => Decision {
                    action: CrmAction::Offered,
                    reason: format!(
                        "{}; the call window offers to create a lead or contact (T4)",
                        matched.reason
                    ),
                    create: None,
                    attach: Vec::new(),
                    matched: None,
                    responsible: Responsible::Nobody,
                    route: queue_route(None),
                    ring_timeout_s: timeout,
                    source: number.source.clone(),
                    rules: vec!["T4"],
                },
                LeadCreation::Automatic => {
                    let responsible = new_work_owner(facts, queue);
                    let create = match crm.mode {
                        CrmMode::Classic => NewEntities::Lead { customer: None },
                        CrmMode::Simple => NewEntities::CustomerWithDeal {
                            kind: crm.simple_creates,
                            deal: deal_target(crm, pipelines),
                        },
                    };
                    let route = queue_route(responsible.user());
                    let mut rules = vec!["T1", "T4", "T3"];
                    if matches!(create, NewEntities::CustomerWithDeal { deal: Some(_), .. }) {
                        rules.push("T12");
                    }
                    rules.extend(["M7", "T8"]);
                    if matches!(responsible, Responsible::NextInQueue(_)) {
                        rules.push("T9");
                    }
                    if facts.direction == Direction::Outgoing {
                        rules.push("T7");
                    }
                    Decision {
                        action: CrmAction::Created,
                        reason: format!("{}; created {}", matched.reason, describe(&create)),
                        create: Some(create),
                        attach: Vec::new(),
                        matched: None,
                        responsible,
                        route,
                        ring_timeout_s: timeout,
                        source: number.source.clone(),
                        rules,
                    }
                }
            }
        }
    }
}

/// T1, T5, T11, E14: a caller the CRM knows.
fn known_caller(
    input: IntakeInput<'_>,
    number: &NumberSettings,
    best: &Candidate,
    queue_route: &dyn Fn(Option<&UserId>) -> Vec<UserId>,
) -> Decision {
    let IntakeInput {
        facts,
        customer,
        crm,
        queue,
        pipelines,
        ..
    } = input;
    let is_customer = matches!(best.entity.kind, EntityKind::Contact | EntityKind::Company);
    let open_deal = customer.open_deals.first();
    let owner = best.responsible.clone();

    let mut attach = vec![best.entity.clone()];
    let mut create = None;
    let mut rules = vec!["T1", "M8"];
    let mut responsible = owner
        .clone()
        .map(Responsible::Employee)
        .unwrap_or(Responsible::Nobody);

    if is_customer {
        if crm.mode == CrmMode::Simple {
            // T11: contact, its company and the open deal all get the activity.
            rules.push("T11");
            if best.entity.kind == EntityKind::Contact
                && let Some(company) = &customer.contact_company
            {
                attach.push(EntityRef::new(EntityKind::Company, company.as_str()));
            }
        }
        match (crm.mode, crm.repeat_mode, open_deal) {
            (CrmMode::Simple, _, Some(deal)) | (CrmMode::Classic, true, Some(deal)) => {
                if crm.mode == CrmMode::Classic {
                    rules.push("E14");
                }
                attach.push(EntityRef::new(EntityKind::Deal, deal.id.as_str()));
            }
            (CrmMode::Simple, _, None) => {
                if let Some(deal) = deal_target(crm, pipelines) {
                    rules.push("T12");
                    create = Some(NewEntities::DealFor {
                        customer: best.entity.clone(),
                        deal,
                    });
                }
            }
            (CrmMode::Classic, true, None) => {
                rules.push("E14");
                // E14: a returning customer without an open deal: a repeat lead, linked.
                let customer_contact = (best.entity.kind == EntityKind::Contact)
                    .then(|| ContactId(best.entity.id.clone()));
                create = Some(NewEntities::Lead {
                    customer: customer_contact,
                });
            }
            (CrmMode::Classic, false, _) => {}
        }
    }
    if create.is_some() && owner.is_none() {
        responsible = new_work_owner(facts, queue);
        if matches!(responsible, Responsible::NextInQueue(_)) {
            rules.push("T9");
        }
    }

    // T5: the responsible rings first only when the number says so.
    let first = if number.route_to_responsible {
        responsible.user()
    } else {
        None
    };
    if first.is_some() && facts.direction == Direction::Incoming {
        rules.push("T5");
    }
    let route = queue_route(first);
    let reason = match &create {
        Some(new) => format!(
            "{}; known customer, created {}",
            input.matched.reason,
            describe(new)
        ),
        None => input.matched.reason.clone(),
    };
    attach.dedup();
    Decision {
        action: if create.is_some() {
            CrmAction::Created
        } else {
            CrmAction::Attached
        },
        reason,
        create,
        attach,
        matched: Some(best.clone()),
        responsible,
        route,
        ring_timeout_s: number.ring_timeout_s,
        source: number.source.clone(),
        rules,
    }
}

/// T9: new work goes to the queue's next member; an outgoing call's entity belongs to the
/// employee who dialled.
fn new_work_owner(facts: &CallFacts, queue: Option<&QueueState>) -> Responsible {
    if facts.direction == Direction::Outgoing
        && let Some(user) = &facts.user
    {
        return Responsible::Employee(user.clone());
    }
    match queue.and_then(QueueState::next_member) {
        Some(member) => Responsible::NextInQueue(member.clone()),
        None => Responsible::Nobody,
    }
}

/// T12: the configured pipeline's first stage, else the default pipeline's.
fn deal_target(crm: &CrmSettings, pipelines: &[PipelineEntry]) -> Option<DealTarget> {
    let configured = crm
        .deal_pipeline
        .as_ref()
        .and_then(|id| pipelines.iter().find(|p| &p.id == id));
    configured
        .or_else(|| pipelines.iter().find(|p| p.is_default))
        .or_else(|| pipelines.first())
        .map(|p| DealTarget {
            pipeline: p.id.clone(),
            stage: p.first_stage.clone(),
        })
}

fn log_only(
    reason: String,
    route: Vec<UserId>,
    ring_timeout_s: u32,
    rules: &[&'static str],
) -> Decision {
    Decision {
        action: CrmAction::Logged,
        reason,
        create: None,
        attach: Vec::new(),
        matched: None,
        responsible: Responsible::Nobody,
        route,
        ring_timeout_s,
        source: String::new(),
        rules: rules.to_vec(),
    }
}

fn describe(new: &NewEntities) -> &'static str {
    match new {
        NewEntities::Lead { customer: None } => "a lead",
        NewEntities::Lead { customer: Some(_) } => "a repeat lead",
        NewEntities::CustomerWithDeal {
            kind: SimpleCreates::Contact,
            deal: Some(_),
        } => "a contact and a deal",
        NewEntities::CustomerWithDeal {
            kind: SimpleCreates::Company,
            deal: Some(_),
        } => "a company and a deal",
        NewEntities::CustomerWithDeal {
            kind: SimpleCreates::Contact,
            deal: None,
        } => "a contact (no pipeline for a deal)",
        NewEntities::CustomerWithDeal {
            kind: SimpleCreates::Company,
            deal: None,
        } => "a company (no pipeline for a deal)",
        NewEntities::DealFor { .. } => "a deal",
    }
}

/// T13: whether a call's activity is done when the call ends. An incoming call nobody
/// answered leaves an open "call back" activity for the responsible employee.
pub fn call_completes_activity(direction: Direction, outcome: CallOutcome) -> bool {
    direction == Direction::Outgoing || outcome == CallOutcome::Answered
}

#[cfg(test)]
mod tests;
