//! What one e-mail does to the CRM: the mailbox's settings and the e-mail rules (E3, E5,
//! E7, E8, E13, E14) on top of the call intake's [`decide`] — one policy for both
//! channels (M1). Pure: the store gathers the inputs and applies the `Decision`.

use crate::crm::intake::{
    CallFacts, CustomerContext, Decision, IntakeInput, NewEntities, NumberSettings, PipelineEntry,
    Responsible, decide,
};
use crate::crm::model::{
    ContactId, CrmAction, CrmSettings, Direction, Directions, EntityKind, LeadCreation, NumberId,
    QueueId, SOURCE_EMAIL, UserId,
};
use crate::crm::queue::QueueState;
use crate::matcher::{
    Country, ExclusionReason, Exclusions, MatchOutcome, MatchStatus, parse_exception,
};

/// A mailbox as the intake sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxPolicy {
    pub id: String,
    pub name: String,
    /// E3/E12: off means mail is stored but reaches the CRM only when saved by hand.
    pub crm_link: bool,
    /// E3/E6: lead creation for an unknown sender (incoming) and recipient (outgoing).
    pub create_leads_incoming: bool,
    pub create_leads_outgoing: bool,
    /// E13: mail from an existing customer goes to their responsible only if that
    /// employee is in the mailbox's queue.
    pub route_to_responsible: bool,
    pub queue: Option<QueueId>,
    /// The personal mailbox's owner: what their sent mail creates is theirs.
    pub owner: Option<UserId>,
    /// E16: everything a message creates is the owner's, whichever way it went (the
    /// forward address, where the owner is the employee the message came through).
    pub new_work_to_owner: bool,
    pub default_country: Country,
}

/// One customer address of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFacts {
    pub direction: Direction,
    /// The customer's address: the sender of received mail, a recipient of sent mail.
    pub customer: String,
}

/// Everything [`decide_mail`] reads.
#[derive(Debug, Clone, Copy)]
pub struct MailIntakeInput<'a> {
    pub mailbox: &'a MailboxPolicy,
    pub facts: &'a MailFacts,
    pub matched: &'a MatchOutcome,
    pub customer: &'a CustomerContext,
    pub crm: &'a CrmSettings,
    pub queue: Option<&'a QueueState>,
    pub pipelines: &'a [PipelineEntry],
    /// E12: a message saved by hand creates what it needs even with the link off.
    pub by_hand: bool,
}

/// E4/M5: a mailbox's blacklist (addresses and `@domains`) as the matcher's exclusions.
/// Entries that no longer parse are left out: they were checked when saved.
pub fn blacklist(entries: &[String]) -> Exclusions {
    let mut list = Exclusions::default();
    for entry in entries {
        if let Ok(rule) = parse_exception(entry, None) {
            list.add_exception(&rule);
        }
    }
    list
}

/// Decides what one customer address of a message does to the CRM.
pub fn decide_mail(input: MailIntakeInput<'_>) -> Decision {
    let MailIntakeInput {
        mailbox,
        facts,
        matched,
        queue,
        ..
    } = input;
    if !mailbox.crm_link && !input.by_hand {
        return Decision {
            action: CrmAction::Logged,
            reason: format!(
                "the CRM link is off on {}; the message can be saved by hand (E12)",
                mailbox.name
            ),
            create: None,
            attach: Vec::new(),
            matched: None,
            responsible: Responsible::Nobody,
            route: Vec::new(),
            ring_timeout_s: 0,
            source: String::new(),
            rules: vec!["E3", "E12"],
        };
    }
    let channel = channel(mailbox, input.by_hand);
    let call_facts = CallFacts {
        direction: facts.direction,
        customer_raw: facts.customer.clone(),
        user: mailbox.owner.clone(),
        trust_flag: None,
    };
    let mut decision = decide(IntakeInput {
        facts: &call_facts,
        number: Some(&channel),
        matched,
        customer: input.customer,
        crm: input.crm,
        queue,
        pipelines: input.pipelines,
    });
    // Ringing is for calls.
    decision.route.clear();
    decision.ring_timeout_s = 0;
    decision.rules = mail_rules(&decision, matched);

    // E16: a customer's mail that came through an employee is that employee's new work;
    // an existing customer keeps their responsible.
    if mailbox.new_work_to_owner
        && decision.create.is_some()
        && matches!(
            decision.responsible,
            Responsible::Nobody | Responsible::NextInQueue(_)
        )
        && let Some(owner) = &mailbox.owner
    {
        decision.responsible = Responsible::Employee(owner.clone());
        decision.reason = format!(
            "{}; for the employee it came through (E16)",
            decision.reason
        );
        decision.rules.push("E16");
    }

    // E13: a known customer whose responsible is not in this mailbox's queue becomes new
    // work for the queue: a lead linked to the customer, which leaves the address with
    // its owner (M7).
    if mailbox.route_to_responsible
        && matched.status == MatchStatus::Known
        && let (Some(queue), Some(best)) = (queue, decision.matched.clone())
    {
        let in_queue = best
            .responsible
            .as_ref()
            .is_some_and(|r| queue.members.contains(r));
        if !in_queue && let Some(next) = queue.next_member() {
            let customer = (best.entity.kind == EntityKind::Contact)
                .then(|| ContactId(best.entity.id.clone()));
            decision.create = Some(NewEntities::Lead { customer });
            decision.action = CrmAction::Created;
            decision.responsible = Responsible::NextInQueue(next.clone());
            decision.reason = format!(
                "{}; the responsible is not in the queue of {}: a new lead for the next in \
                 queue (E13)",
                matched.reason, mailbox.name
            );
            decision.source = SOURCE_EMAIL.to_owned();
            decision.rules.extend(["E13", "T9"]);
        }
    }
    decision
}

/// The rules of a mail decision: the call intake's account-wide ones (matching, CRM
/// mode, deals) kept, its telephony ones replaced by the e-mail rule that applies.
fn mail_rules(decision: &Decision, matched: &MatchOutcome) -> Vec<&'static str> {
    let mut rules: Vec<&'static str> = decision
        .rules
        .iter()
        .copied()
        .filter(|rule| !rule.starts_with('T') || matches!(*rule, "T3" | "T9" | "T11" | "T12"))
        .collect();
    let channel = match (matched.status, decision.action) {
        (MatchStatus::Excluded, _) => {
            (matched.excluded_by == Some(ExclusionReason::Employee)).then_some("E5")
        }
        (MatchStatus::Known, _) => Some("E7"),
        (MatchStatus::Unknown, CrmAction::Created) => Some("E8"),
        (MatchStatus::Unknown, _) => Some("E3"),
    };
    rules.splice(0..0, channel);
    rules
}

/// The mailbox in the part the number plays for a call: which directions create leads,
/// the queue, the source of what is created.
fn channel(mailbox: &MailboxPolicy, by_hand: bool) -> NumberSettings {
    let directions = match (
        mailbox.create_leads_incoming || by_hand,
        mailbox.create_leads_outgoing || by_hand,
    ) {
        (true, true) => Some(Directions::Both),
        (true, false) => Some(Directions::Incoming),
        (false, true) => Some(Directions::Outgoing),
        (false, false) => None,
    };
    NumberSettings {
        id: NumberId(mailbox.id.clone()),
        number: mailbox.name.clone(),
        default_country: mailbox.default_country,
        queue: mailbox.queue.clone(),
        // E3: with lead creation off, mail is attached to known addresses only.
        lead_creation: if directions.is_some() {
            LeadCreation::Automatic
        } else {
            LeadCreation::Off
        },
        directions: directions.unwrap_or(Directions::Both),
        route_to_responsible: false,
        ring_timeout_s: 0,
        source: SOURCE_EMAIL.to_owned(),
        change_responsible_on_transfer: false,
        trust: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::model::{CrmMode, EntityRef};
    use crate::matcher::{Candidate, Identifier, parse_email, resolve};

    fn mailbox() -> MailboxPolicy {
        MailboxPolicy {
            id: "mb1".into(),
            name: "Sales inbox".into(),
            crm_link: true,
            create_leads_incoming: true,
            create_leads_outgoing: false,
            route_to_responsible: false,
            queue: Some(QueueId("q1".into())),
            owner: None,
            new_work_to_owner: false,
            default_country: "DE".parse().unwrap(),
        }
    }

    fn queue(members: &[&str]) -> QueueState {
        QueueState {
            id: QueueId("q1".into()),
            members: members.iter().map(|m| UserId((*m).into())).collect(),
            rotation: 0,
        }
    }

    fn address() -> Identifier {
        Identifier::Email(parse_email("Kunde@Example.org").unwrap())
    }

    fn unknown() -> MatchOutcome {
        resolve(address(), &Exclusions::default(), Vec::new())
    }

    fn known(kind: EntityKind, responsible: &str) -> MatchOutcome {
        resolve(
            address(),
            &Exclusions::default(),
            vec![Candidate {
                entity: EntityRef::new(kind, "e1"),
                responsible: Some(UserId(responsible.into())),
                last_activity_at: 1,
            }],
        )
    }

    fn decide_for(
        mailbox: &MailboxPolicy,
        direction: Direction,
        matched: &MatchOutcome,
        queue: Option<&QueueState>,
    ) -> Decision {
        let crm = CrmSettings {
            mode: CrmMode::Classic,
            ..CrmSettings::default()
        };
        decide_mail(MailIntakeInput {
            mailbox,
            facts: &MailFacts {
                direction,
                customer: "kunde@example.org".into(),
            },
            matched,
            customer: &CustomerContext::default(),
            crm: &crm,
            queue,
            pipelines: &[],
            by_hand: false,
        })
    }

    #[test]
    fn e8_an_unknown_sender_creates_a_lead_for_the_next_in_queue() {
        let q = queue(&["anna", "ben"]);
        let d = decide_for(&mailbox(), Direction::Incoming, &unknown(), Some(&q));
        assert_eq!(d.action, CrmAction::Created);
        assert_eq!(d.create, Some(NewEntities::Lead { customer: None }));
        assert_eq!(
            d.responsible,
            Responsible::NextInQueue(UserId("anna".into()))
        );
        assert_eq!(d.source, SOURCE_EMAIL);
        assert!(d.route.is_empty(), "mail rings nobody");
    }

    #[test]
    fn e16_new_work_from_the_forward_address_is_the_employee_it_came_through() {
        let mut forward = mailbox();
        forward.owner = Some(UserId("carl".into()));
        forward.new_work_to_owner = true;
        forward.create_leads_outgoing = true;
        let q = queue(&["anna", "ben"]);
        for direction in [Direction::Incoming, Direction::Outgoing] {
            let d = decide_for(&forward, direction, &unknown(), Some(&q));
            assert_eq!(d.action, CrmAction::Created, "{direction:?}");
            assert_eq!(d.responsible, Responsible::Employee(UserId("carl".into())));
        }
        let d = decide_for(&forward, Direction::Incoming, &unknown(), Some(&q));
        assert!(d.reason.contains("E16"), "{}", d.reason);
        // A known customer keeps their responsible.
        let d = decide_for(
            &forward,
            Direction::Incoming,
            &known(EntityKind::Contact, "ben"),
            Some(&q),
        );
        assert_eq!(d.action, CrmAction::Attached);
        assert_ne!(d.responsible, Responsible::Employee(UserId("carl".into())));
        // Without the switch (a personal mailbox), the queue rules stay.
        forward.new_work_to_owner = false;
        let d = decide_for(&forward, Direction::Incoming, &unknown(), Some(&q));
        assert_eq!(
            d.responsible,
            Responsible::NextInQueue(UserId("anna".into()))
        );
    }

    #[test]
    fn e3_lead_creation_is_per_direction() {
        // Outgoing lead creation is off in this mailbox: an unknown recipient is ignored.
        let d = decide_for(&mailbox(), Direction::Outgoing, &unknown(), None);
        assert_eq!(d.action, CrmAction::Logged);
        assert!(d.create.is_none());
        let mut both_off = mailbox();
        both_off.create_leads_incoming = false;
        let d = decide_for(&both_off, Direction::Incoming, &unknown(), None);
        assert_eq!(d.action, CrmAction::Logged, "{}", d.reason);
    }

    #[test]
    fn e3_with_lead_creation_off_known_addresses_still_get_the_activity() {
        let mut off = mailbox();
        off.create_leads_incoming = false;
        let d = decide_for(
            &off,
            Direction::Incoming,
            &known(EntityKind::Contact, "ben"),
            None,
        );
        assert_eq!(d.action, CrmAction::Attached);
        assert_eq!(d.attach, vec![EntityRef::new(EntityKind::Contact, "e1")]);
    }

    #[test]
    fn e7_a_known_sender_is_attached_with_its_responsible() {
        let d = decide_for(
            &mailbox(),
            Direction::Incoming,
            &known(EntityKind::Lead, "ben"),
            Some(&queue(&["anna"])),
        );
        assert_eq!(d.action, CrmAction::Attached);
        assert_eq!(d.responsible, Responsible::Employee(UserId("ben".into())));
    }

    #[test]
    fn e12_with_the_crm_link_off_nothing_reaches_the_crm() {
        let mut off = mailbox();
        off.crm_link = false;
        let d = decide_for(&off, Direction::Incoming, &unknown(), None);
        assert_eq!(d.action, CrmAction::Logged);
        assert!(d.reason.contains("E12"), "{}", d.reason);
    }

    #[test]
    fn e13_a_customer_whose_responsible_is_outside_the_queue_becomes_the_queues_lead() {
        let mut routed = mailbox();
        routed.route_to_responsible = true;
        let q = queue(&["anna", "ben"]);
        let d = decide_for(
            &routed,
            Direction::Incoming,
            &known(EntityKind::Contact, "carl"),
            Some(&q),
        );
        assert_eq!(d.action, CrmAction::Created);
        assert_eq!(
            d.create,
            Some(NewEntities::Lead {
                customer: Some(ContactId("e1".into()))
            }),
            "linked to the customer, so the address stays with its owner (M7)"
        );
        assert_eq!(
            d.responsible,
            Responsible::NextInQueue(UserId("anna".into()))
        );
        // In the queue: attached to the existing entity as usual.
        let d = decide_for(
            &routed,
            Direction::Incoming,
            &known(EntityKind::Contact, "ben"),
            Some(&q),
        );
        assert_eq!(d.action, CrmAction::Attached);
        assert_eq!(d.responsible, Responsible::Employee(UserId("ben".into())));
    }

    #[test]
    fn e5_an_excluded_address_is_logged_only() {
        let mut exclusions = Exclusions::default();
        exclusions.add_employee_email(&parse_email("kunde@example.org").unwrap());
        let matched = resolve(address(), &exclusions, Vec::new());
        let d = decide_for(&mailbox(), Direction::Incoming, &matched, None);
        assert_eq!(d.action, CrmAction::Logged);
        assert!(d.create.is_none());
    }
}
