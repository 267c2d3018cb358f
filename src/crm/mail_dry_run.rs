//! The dry-run of a mailbox's settings: what its last stored messages would have done
//! under other settings. Pure: the adapter reads the messages and their customers as the
//! database knows them now; each customer address goes through the mail intake's own
//! [`decide_mail`], messages in the order they were collected, and nothing is written.

use std::collections::{HashMap, HashSet};

use crate::crm::dry_run::{as_it_was, claim, kinds};
use crate::crm::intake::{CustomerContext, PipelineEntry};
use crate::crm::mail::{MailFacts, MailIntakeInput, MailboxPolicy, decide_mail};
use crate::crm::model::{CrmSettings, Direction, EntityRef, Millis, QueueId};
use crate::crm::queue::QueueState;
use crate::matcher::{Candidate, Exclusions, MatchOutcome};

/// One customer address of a stored message, matched now.
#[derive(Debug, Clone)]
pub struct PastAddress {
    pub matched: MatchOutcome,
    /// The company and open deals of the best match now.
    pub customer: CustomerContext,
}

/// One stored message as the intake recorded it.
#[derive(Debug, Clone)]
pub struct PastEmail {
    /// The mail store's id.
    pub id: String,
    pub direction: Direction,
    pub message_id: Option<String>,
    /// The customer addresses that parse (E2: the sender of received mail, the
    /// recipients of sent mail), in the message's order.
    pub addresses: Vec<PastAddress>,
    pub collected_at: Millis,
    /// What the intake recorded.
    pub created: Vec<EntityRef>,
    pub activity: bool,
    /// The message joined the activity of a copy collected before the replayed ones (the
    /// same Message-ID in another folder or mailbox): it would join it again.
    pub joined_earlier: bool,
    /// The message took a turn of its mailbox's queue (T9).
    pub took_turn: bool,
}

/// What a message does to the CRM, on one side of the comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailEffect {
    /// Recorded: `kind:id`; proposed: the kinds that would be created (`lead`, `deal`…).
    pub created: Vec<String>,
    /// The message has (or would have) an activity on the CRM.
    pub activity: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailCompared {
    pub email: String,
    pub actual: MailEffect,
    pub proposed: MailEffect,
}

/// What stays the same for every message of the replay.
#[derive(Debug, Clone, Copy)]
pub struct MailProposal<'a> {
    pub mailbox: &'a MailboxPolicy,
    /// E4: the proposed blacklist as the matcher's exclusions.
    pub blacklist: &'a Exclusions,
    pub crm: &'a CrmSettings,
    pub pipelines: &'a [PipelineEntry],
}

/// Replays `emails` (oldest first) under `proposal`, as the number dry-run replays calls:
/// `queue` is the proposed queue now, wound back by the turns the messages took when it
/// is the one they were taken on (`recorded_queue`); what a message and later ones
/// created is not known to it; what the replay would create is known to later messages
/// of the same address (M7). A message by hand (E12) is replayed as collected.
pub fn replay(
    emails: &[PastEmail],
    proposal: MailProposal<'_>,
    mut queue: Option<QueueState>,
    recorded_queue: Option<&QueueId>,
) -> Vec<MailCompared> {
    if let Some(state) = &mut queue
        && Some(&state.id) == recorded_queue
    {
        let turns = emails.iter().filter(|e| e.took_turn).count();
        state.rotation -= i64::try_from(turns).unwrap_or(0);
    }
    let mut later: HashSet<EntityRef> = emails.iter().flat_map(|e| e.created.clone()).collect();
    let mut proposed_owner: HashMap<String, Candidate> = HashMap::new();
    // One activity per Message-ID: a later copy joins the one the replay made.
    let mut with_activity: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(emails.len());
    for email in emails {
        let joins = email.joined_earlier
            || email
                .message_id
                .as_deref()
                .is_some_and(|id| with_activity.contains(id));
        let proposed = if joins {
            MailEffect {
                created: Vec::new(),
                activity: true,
            }
        } else {
            let effect = decide_all(email, proposal, &mut queue, &later, &mut proposed_owner);
            if effect.activity
                && let Some(id) = &email.message_id
            {
                with_activity.insert(id);
            }
            effect
        };
        for entity in &email.created {
            later.remove(entity);
        }
        out.push(MailCompared {
            email: email.id.clone(),
            actual: MailEffect {
                created: email.created.iter().map(ToString::to_string).collect(),
                activity: email.activity,
            },
            proposed,
        });
    }
    out
}

/// Every customer address of one message through [`decide_mail`]: the message gets an
/// activity when a decision attaches or creates something (E7, E8).
fn decide_all(
    email: &PastEmail,
    proposal: MailProposal<'_>,
    queue: &mut Option<QueueState>,
    later: &HashSet<EntityRef>,
    proposed_owner: &mut HashMap<String, Candidate>,
) -> MailEffect {
    let mut seen = HashSet::new();
    let mut effect = MailEffect {
        created: Vec::new(),
        activity: false,
    };
    for address in &email.addresses {
        let identifier = &address.matched.identifier;
        if !seen.insert(identifier.key().to_owned())
            || proposal.blacklist.check(identifier).is_some()
        {
            continue;
        }
        let (matched, customer) =
            as_it_was(&address.matched, &address.customer, later, proposed_owner);
        let decision = decide_mail(MailIntakeInput {
            mailbox: proposal.mailbox,
            facts: &MailFacts {
                direction: email.direction,
                customer: identifier.key().to_owned(),
            },
            matched: &matched,
            customer: &customer,
            crm: proposal.crm,
            queue: queue.as_ref(),
            pipelines: proposal.pipelines,
            by_hand: false,
        });
        if decision.advances_queue()
            && let Some(state) = queue
        {
            state.rotation += 1;
        }
        if !decision.records_activity() {
            continue;
        }
        if let Some(new) = &decision.create {
            effect.created.extend(kinds(new));
        }
        effect.activity |= decision.create.is_some() || !decision.attach.is_empty();
        claim(
            proposed_owner,
            &decision,
            &matched,
            &email.id,
            email.collected_at,
        );
    }
    effect
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::mail::blacklist;
    use crate::crm::model::{EntityKind, UserId};
    use crate::matcher::{Identifier, parse_email, resolve};

    fn mailbox(create_leads_incoming: bool) -> MailboxPolicy {
        MailboxPolicy {
            id: "mb1".into(),
            name: "Sales inbox".into(),
            crm_link: true,
            create_leads_incoming,
            create_leads_outgoing: false,
            route_to_responsible: false,
            queue: Some(QueueId("q1".into())),
            owner: None,
            new_work_to_owner: false,
            default_country: "DE".parse().unwrap(),
        }
    }

    fn address(raw: &str, found: Vec<Candidate>) -> PastAddress {
        PastAddress {
            matched: resolve(
                Identifier::Email(parse_email(raw).unwrap()),
                &Exclusions::default(),
                found,
            ),
            customer: CustomerContext::default(),
        }
    }

    fn past(id: &str, from: &str, found: Vec<Candidate>, created: Vec<EntityRef>) -> PastEmail {
        PastEmail {
            id: id.into(),
            direction: Direction::Incoming,
            message_id: Some(format!("<{id}@example.org>")),
            addresses: vec![address(from, found)],
            collected_at: 1,
            activity: true,
            took_turn: !created.is_empty(),
            created,
            joined_earlier: false,
        }
    }

    fn lead(id: &str) -> Candidate {
        Candidate {
            entity: EntityRef::new(EntityKind::Lead, id),
            responsible: Some(UserId("u1".into())),
            last_activity_at: 1,
        }
    }

    fn replay_with(
        emails: &[PastEmail],
        policy: &MailboxPolicy,
        list: &[&str],
    ) -> Vec<MailCompared> {
        let crm = CrmSettings::default();
        let list: Vec<String> = list.iter().map(|e| (*e).to_owned()).collect();
        let blacklist = blacklist(&list);
        let queue = QueueState {
            id: QueueId("q1".into()),
            members: vec![UserId("u1".into())],
            rotation: 0,
        };
        replay(
            emails,
            MailProposal {
                mailbox: policy,
                blacklist: &blacklist,
                crm: &crm,
                pipelines: &[],
            },
            Some(queue),
            policy.queue.as_ref(),
        )
    }

    fn mail() -> Vec<PastEmail> {
        vec![
            past(
                "m1",
                "neu@kunde.example",
                vec![lead("l1")],
                vec![EntityRef::new(EntityKind::Lead, "l1")],
            ),
            past("m2", "neu@kunde.example", vec![lead("l1")], Vec::new()),
            past(
                "m3",
                "spam@werbung.example",
                vec![lead("l3")],
                vec![EntityRef::new(EntityKind::Lead, "l3")],
            ),
        ]
    }

    #[test]
    fn e8_m7_a_sender_who_became_a_lead_is_new_again_and_their_next_message_finds_it() {
        let out = replay_with(&mail(), &mailbox(true), &[]);
        assert_eq!(out[0].proposed.created, vec!["lead"]);
        assert!(out[0].proposed.activity);
        assert_eq!(out[0].actual.created, vec!["lead:l1"]);
        // The second message of the sender finds the lead the replay made for the first.
        assert!(out[1].proposed.created.is_empty());
        assert!(out[1].proposed.activity);
        assert_eq!(out[2].proposed.created, vec!["lead"]);
    }

    #[test]
    fn e3_e4_lead_creation_off_and_the_blacklist_leave_unknown_senders_stored_only() {
        let out = replay_with(&mail(), &mailbox(false), &[]);
        for item in [&out[0], &out[2]] {
            assert_eq!(
                item.proposed,
                MailEffect {
                    created: Vec::new(),
                    activity: false
                },
                "E3: unknown senders are only stored"
            );
        }
        // The lead the first message did create is known to the second (E7).
        assert!(out[1].proposed.created.is_empty() && out[1].proposed.activity);
        let out = replay_with(&mail(), &mailbox(true), &["@werbung.example"]);
        assert_eq!(out[0].proposed.created, vec!["lead"]);
        assert_eq!(
            out[2].proposed,
            MailEffect {
                created: Vec::new(),
                activity: false
            },
            "E4: a blacklisted sender reaches no CRM record"
        );
        assert_eq!(out[2].actual.created, vec!["lead:l3"]);
    }

    #[test]
    fn a_copy_of_a_message_joins_its_activity_instead_of_deciding_again() {
        let mut emails = mail();
        let mut copy = past("m4", "neu@kunde.example", Vec::new(), Vec::new());
        copy.message_id = emails[0].message_id.clone();
        emails.push(copy);
        let out = replay_with(&emails, &mailbox(true), &[]);
        assert_eq!(
            out[3].proposed,
            MailEffect {
                created: Vec::new(),
                activity: true
            }
        );
    }
}
