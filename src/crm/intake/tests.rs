//! Each test names the rule of `docs/rules.md` it proves.

use super::*;
use crate::crm::model::{Directions, SOURCE_CALL};
use crate::crm::trust::TrustFlag;
use crate::matcher::{Exclusions, Identifier, PhoneKey, parse_exception, resolve};

const CALLER: &str = "+4930123456";

fn number() -> NumberSettings {
    NumberSettings {
        id: NumberId("n1".into()),
        number: "+4930901820".into(),
        default_country: "DE".parse().unwrap(),
        queue: Some(QueueId("q1".into())),
        lead_creation: LeadCreation::Automatic,
        directions: Directions::Incoming,
        route_to_responsible: true,
        ring_timeout_s: 20,
        source: SOURCE_CALL.into(),
        change_responsible_on_transfer: false,
        trust: Default::default(),
    }
}

fn queue(rotation: i64) -> QueueState {
    QueueState {
        id: QueueId("q1".into()),
        members: vec![
            UserId("anna".into()),
            UserId("ben".into()),
            UserId("cem".into()),
        ],
        rotation,
    }
}

fn pipelines() -> Vec<PipelineEntry> {
    vec![
        PipelineEntry {
            id: PipelineId("default".into()),
            first_stage: StageId("default-new".into()),
            is_default: true,
        },
        PipelineEntry {
            id: PipelineId("calls".into()),
            first_stage: StageId("calls-inbox".into()),
            is_default: false,
        },
    ]
}

fn incoming() -> CallFacts {
    CallFacts {
        direction: Direction::Incoming,
        customer_raw: "030 123456".into(),
        user: None,
        trust_flag: None,
    }
}

fn outgoing(user: &str) -> CallFacts {
    CallFacts {
        direction: Direction::Outgoing,
        customer_raw: "030 123456".into(),
        user: Some(UserId(user.into())),
        trust_flag: None,
    }
}

fn caller() -> Identifier {
    Identifier::Phone(PhoneKey::E164(CALLER.into()))
}

fn unknown() -> MatchOutcome {
    resolve(caller(), &Exclusions::default(), Vec::new())
}

fn known(kind: EntityKind, id: &str, responsible: &str) -> MatchOutcome {
    resolve(
        caller(),
        &Exclusions::default(),
        vec![Candidate {
            entity: EntityRef::new(kind, id),
            responsible: Some(UserId(responsible.into())),
            last_activity_at: 1,
        }],
    )
}

fn excepted() -> MatchOutcome {
    let mut exclusions = Exclusions::default();
    exclusions.add_exception(&parse_exception(CALLER, None).unwrap());
    resolve(caller(), &exclusions, Vec::new())
}

fn classic() -> CrmSettings {
    CrmSettings::default()
}

fn simple() -> CrmSettings {
    CrmSettings {
        mode: CrmMode::Simple,
        ..CrmSettings::default()
    }
}

struct Case {
    facts: CallFacts,
    number: Option<NumberSettings>,
    matched: MatchOutcome,
    customer: CustomerContext,
    crm: CrmSettings,
    queue: Option<QueueState>,
}

impl Case {
    fn new(matched: MatchOutcome) -> Self {
        Self {
            facts: incoming(),
            number: Some(number()),
            matched,
            customer: CustomerContext::default(),
            crm: classic(),
            queue: Some(queue(0)),
        }
    }

    fn decide(&self) -> Decision {
        decide(IntakeInput {
            facts: &self.facts,
            number: self.number.as_ref(),
            matched: &self.matched,
            customer: &self.customer,
            crm: &self.crm,
            queue: self.queue.as_ref(),
            pipelines: &pipelines(),
        })
    }
}

fn user(id: &str) -> UserId {
    UserId(id.into())
}

fn route(d: &Decision) -> Vec<&str> {
    d.route.iter().map(UserId::as_str).collect()
}

fn open_deal(id: &str) -> OpenDeal {
    OpenDeal {
        id: DealId(id.into()),
        contact: Some(ContactId("c1".into())),
        company: None,
        responsible: Some(user("ben")),
        last_activity_at: 5,
    }
}

#[test]
fn t1_new_caller_creates_and_known_caller_is_attached() {
    let new = Case::new(unknown()).decide();
    assert_eq!(new.action, CrmAction::Created);
    assert!(new.records_activity());

    let again = Case::new(known(EntityKind::Lead, "l1", "anna")).decide();
    assert_eq!(again.action, CrmAction::Attached);
    assert_eq!(again.create, None);
    assert_eq!(again.attach, vec![EntityRef::new(EntityKind::Lead, "l1")]);
    assert_eq!(again.matched.unwrap().entity.id, "l1");
}

#[test]
fn t2_unconfigured_number_is_only_logged() {
    let mut case = Case::new(unknown());
    case.number = None;
    let d = case.decide();
    assert_eq!(d.action, CrmAction::Logged);
    assert!(!d.records_activity());
    assert!(d.reason.contains("not configured"), "{}", d.reason);
}

#[test]
fn t3_classic_mode_creates_a_lead() {
    let d = Case::new(unknown()).decide();
    assert_eq!(d.create, Some(NewEntities::Lead { customer: None }));
    assert!(d.create.unwrap().claims_identifier());
}

#[test]
fn t3_simple_mode_creates_contact_and_deal_in_default_pipeline() {
    let mut case = Case::new(unknown());
    case.crm = simple();
    let d = case.decide();
    assert_eq!(
        d.create,
        Some(NewEntities::CustomerWithDeal {
            kind: SimpleCreates::Contact,
            deal: Some(DealTarget {
                pipeline: PipelineId("default".into()),
                stage: StageId("default-new".into()),
            }),
        })
    );
}

#[test]
fn t3_simple_mode_can_create_a_company_instead() {
    let mut case = Case::new(unknown());
    case.crm = CrmSettings {
        simple_creates: SimpleCreates::Company,
        ..simple()
    };
    let d = case.decide();
    assert!(matches!(
        d.create,
        Some(NewEntities::CustomerWithDeal {
            kind: SimpleCreates::Company,
            ..
        })
    ));
}

#[test]
fn t4_manual_mode_offers_and_creates_nothing() {
    let mut case = Case::new(unknown());
    case.number.as_mut().unwrap().lead_creation = LeadCreation::Manual;
    let d = case.decide();
    assert_eq!(d.action, CrmAction::Offered);
    assert_eq!(d.create, None);
    assert_eq!(d.responsible, Responsible::Nobody);
    assert!(!d.advances_queue());
    // The call still rings the queue.
    assert_eq!(route(&d), ["anna", "ben", "cem"]);
}

#[test]
fn t4_lead_creation_off_only_logs() {
    let mut case = Case::new(unknown());
    case.number.as_mut().unwrap().lead_creation = LeadCreation::Off;
    let d = case.decide();
    assert_eq!(d.action, CrmAction::Logged);
    assert_eq!(d.create, None);
}

#[test]
fn t4_lead_creation_off_still_attaches_known_callers() {
    let mut case = Case::new(known(EntityKind::Contact, "c1", "ben"));
    case.number.as_mut().unwrap().lead_creation = LeadCreation::Off;
    assert_eq!(case.decide().action, CrmAction::Attached);
}

#[test]
fn t5_known_caller_rings_responsible_first_then_queue() {
    let d = Case::new(known(EntityKind::Contact, "c1", "cem")).decide();
    assert_eq!(d.responsible, Responsible::Employee(user("cem")));
    assert_eq!(route(&d), ["cem", "anna", "ben"]);
    assert!(!d.advances_queue());
}

#[test]
fn t5_without_route_to_responsible_the_queue_rings_in_turn() {
    let mut case = Case::new(known(EntityKind::Contact, "c1", "cem"));
    case.number.as_mut().unwrap().route_to_responsible = false;
    case.queue = Some(queue(1));
    let d = case.decide();
    assert_eq!(route(&d), ["ben", "cem", "anna"]);
}

#[test]
fn t6_exception_number_is_logged_not_created() {
    let d = Case::new(excepted()).decide();
    assert_eq!(d.action, CrmAction::Logged);
    assert_eq!(d.create, None);
    assert!(d.attach.is_empty());
    assert!(!d.advances_queue());
    assert!(d.reason.contains("exception"), "{}", d.reason);
    // Logged, but the call is still routed to people.
    assert_eq!(route(&d), ["anna", "ben", "cem"]);
}

#[test]
fn t6_a_flagged_caller_is_routed_and_logged_but_never_created_or_attached() {
    for flag in [TrustFlag::Rate, TrustFlag::VerificationFailed] {
        for matched in [unknown(), known(EntityKind::Contact, "c1", "ben")] {
            let mut case = Case::new(matched);
            case.facts.trust_flag = Some(flag);
            let d = case.decide();
            assert_eq!(d.action, CrmAction::Logged);
            assert_eq!(d.create, None);
            assert!(d.attach.is_empty());
            assert!(!d.records_activity());
            assert!(!d.advances_queue());
            assert_eq!(d.reason, flag.reason());
            assert_eq!(route(&d), ["anna", "ben", "cem"]);
        }
    }
}

#[test]
fn t7_direction_not_enabled_creates_nothing() {
    let mut case = Case::new(unknown());
    case.facts = outgoing("ben");
    let d = case.decide();
    assert_eq!(d.action, CrmAction::Logged);
    assert!(d.reason.contains("outgoing"), "{}", d.reason);
}

#[test]
fn t7_outgoing_enabled_creates_for_the_dialler_and_rings_nobody() {
    let mut case = Case::new(unknown());
    case.facts = outgoing("ben");
    case.number.as_mut().unwrap().directions = Directions::Both;
    let d = case.decide();
    assert_eq!(d.action, CrmAction::Created);
    assert_eq!(d.responsible, Responsible::Employee(user("ben")));
    assert!(d.route.is_empty());
    assert!(!d.advances_queue());
}

#[test]
fn t8_created_entities_take_the_numbers_source() {
    let mut case = Case::new(unknown());
    case.number.as_mut().unwrap().source = "HOTLINE".into();
    assert_eq!(case.decide().source, "HOTLINE");
    assert_eq!(Case::new(unknown()).decide().source, SOURCE_CALL);
}

#[test]
fn t9_new_caller_goes_to_next_queue_member() {
    let first = Case::new(unknown()).decide();
    assert_eq!(first.responsible, Responsible::NextInQueue(user("anna")));
    assert!(first.advances_queue());
    assert_eq!(route(&first), ["anna", "ben", "cem"]);

    let mut second = Case::new(unknown());
    second.queue = Some(queue(1));
    let d = second.decide();
    assert_eq!(d.responsible, Responsible::NextInQueue(user("ben")));
    assert_eq!(route(&d), ["ben", "cem", "anna"]);
}

#[test]
fn t9_number_without_queue_creates_without_responsible() {
    let mut case = Case::new(unknown());
    case.queue = None;
    let d = case.decide();
    assert_eq!(d.action, CrmAction::Created);
    assert_eq!(d.responsible, Responsible::Nobody);
    assert!(d.route.is_empty());
}

#[test]
fn t11_simple_known_contact_attaches_to_contact_company_and_open_deal() {
    let mut case = Case::new(known(EntityKind::Contact, "c1", "ben"));
    case.crm = simple();
    case.customer = CustomerContext {
        contact_company: Some(CompanyId("co1".into())),
        open_deals: vec![open_deal("d1")],
    };
    let d = case.decide();
    assert_eq!(d.action, CrmAction::Attached);
    assert_eq!(
        d.attach,
        vec![
            EntityRef::new(EntityKind::Contact, "c1"),
            EntityRef::new(EntityKind::Company, "co1"),
            EntityRef::new(EntityKind::Deal, "d1"),
        ]
    );
}

#[test]
fn t11_simple_known_contact_without_open_deal_gets_a_new_deal() {
    let mut case = Case::new(known(EntityKind::Contact, "c1", "ben"));
    case.crm = simple();
    let d = case.decide();
    assert_eq!(d.action, CrmAction::Created);
    assert_eq!(
        d.create,
        Some(NewEntities::DealFor {
            customer: EntityRef::new(EntityKind::Contact, "c1"),
            deal: DealTarget {
                pipeline: PipelineId("default".into()),
                stage: StageId("default-new".into()),
            },
        })
    );
    // The customer's owner keeps the new deal; the queue does not rotate.
    assert_eq!(d.responsible, Responsible::Employee(user("ben")));
    assert!(!d.create.unwrap().claims_identifier());
}

#[test]
fn t12_deals_go_to_the_configured_pipeline_first_stage() {
    let mut case = Case::new(unknown());
    case.crm = CrmSettings {
        deal_pipeline: Some(PipelineId("calls".into())),
        ..simple()
    };
    let d = case.decide();
    assert_eq!(
        d.create,
        Some(NewEntities::CustomerWithDeal {
            kind: SimpleCreates::Contact,
            deal: Some(DealTarget {
                pipeline: PipelineId("calls".into()),
                stage: StageId("calls-inbox".into()),
            }),
        })
    );
}

#[test]
fn t12_a_deleted_configured_pipeline_falls_back_to_the_default() {
    let mut case = Case::new(unknown());
    case.crm = CrmSettings {
        deal_pipeline: Some(PipelineId("gone".into())),
        ..simple()
    };
    let d = case.decide();
    assert!(matches!(
        d.create,
        Some(NewEntities::CustomerWithDeal { deal: Some(DealTarget { ref pipeline, .. }), .. })
            if pipeline.as_str() == "default"
    ));
}

#[test]
fn t13_missed_incoming_call_leaves_an_open_activity() {
    assert!(!call_completes_activity(
        Direction::Incoming,
        CallOutcome::Missed
    ));
    assert!(!call_completes_activity(
        Direction::Incoming,
        CallOutcome::Cancelled
    ));
    assert!(call_completes_activity(
        Direction::Incoming,
        CallOutcome::Answered
    ));
    assert!(call_completes_activity(
        Direction::Outgoing,
        CallOutcome::Busy
    ));
}

#[test]
fn e14_repeat_mode_attaches_returning_customer_to_open_deal() {
    let mut case = Case::new(known(EntityKind::Contact, "c1", "ben"));
    case.crm = CrmSettings {
        repeat_mode: true,
        ..classic()
    };
    case.customer.open_deals = vec![open_deal("d1")];
    let d = case.decide();
    assert_eq!(d.action, CrmAction::Attached);
    assert!(d.attach.contains(&EntityRef::new(EntityKind::Deal, "d1")));
}

#[test]
fn e14_repeat_mode_without_open_deal_creates_linked_repeat_lead() {
    let mut case = Case::new(known(EntityKind::Contact, "c1", "ben"));
    case.crm = CrmSettings {
        repeat_mode: true,
        ..classic()
    };
    let d = case.decide();
    assert_eq!(
        d.create,
        Some(NewEntities::Lead {
            customer: Some(ContactId("c1".into()))
        })
    );
    assert_eq!(d.attach, vec![EntityRef::new(EntityKind::Contact, "c1")]);
    assert_eq!(d.responsible, Responsible::Employee(user("ben")));
    // A repeat lead shares the customer's number: it does not claim it (M7).
    assert!(!d.create.unwrap().claims_identifier());
}

#[test]
fn e14_repeat_mode_off_classic_only_attaches() {
    let mut case = Case::new(known(EntityKind::Contact, "c1", "ben"));
    case.customer.open_deals = vec![open_deal("d1")];
    let d = case.decide();
    assert_eq!(d.action, CrmAction::Attached);
    assert_eq!(d.attach, vec![EntityRef::new(EntityKind::Contact, "c1")]);
}

#[test]
fn m8_known_lead_is_attached_even_in_repeat_mode() {
    let mut case = Case::new(known(EntityKind::Lead, "l1", "anna"));
    case.crm = CrmSettings {
        repeat_mode: true,
        ..classic()
    };
    let d = case.decide();
    assert_eq!(d.action, CrmAction::Attached);
    assert_eq!(d.create, None);
}
