//! The mailbox dry-run's reads: a mailbox's last stored messages with their customers
//! matched as the database knows them now. Reads only.

use std::collections::{HashMap, HashSet};

use super::matching::{customer_contexts, match_all};
use super::{Result, Store, col, parse_json_list, parse_stored};
use crate::crm::decision::DecisionRecord;
use crate::crm::mail_dry_run::{PastAddress, PastEmail};
use crate::crm::model::{CrmAction, Direction, EntityRef};
use crate::matcher::{Candidate, Identifier, MatchOutcome, parse_email};

/// Identifiers per match statement, as the mail intake looks them up.
const MATCH_CHUNK: usize = 250;

/// A stored message before its addresses are matched.
struct Stored {
    id: String,
    direction: Direction,
    message_id: Option<String>,
    customers: Vec<Identifier>,
    collected_at: i64,
    created: Vec<EntityRef>,
    activity: Option<String>,
    first_of_activity: Option<String>,
    took_turn: bool,
}

impl Store {
    /// The last `last` messages of `mailbox`, oldest (first collected) first.
    pub async fn past_emails(&self, mailbox: &str, last: u32) -> Result<Vec<PastEmail>> {
        let rows = sqlx::query(
            "SELECT e.id, e.direction, e.message_id, e.from_addr, e.to_addrs, e.cc_addrs, \
             e.ingested_at, e.crm_action, e.created_entities, e.activity_id, e.decision, \
             (SELECT MIN(o.id) FROM emails o WHERE o.activity_id = e.activity_id) \
             AS first_of_activity \
             FROM emails e WHERE e.mailbox_id = $1 \
             ORDER BY e.ingested_at DESC, e.id DESC LIMIT $2",
        )
        .bind(mailbox)
        .bind(i64::from(last))
        .fetch_all(self.reader())
        .await?;
        let mut stored = Vec::with_capacity(rows.len());
        for row in rows.iter().rev() {
            let direction: Direction =
                parse_stored(&col::<String>(row, "direction")?, "emails.direction")?;
            // E2: the customers as the intake took them; employees are excluded by the
            // matcher (M6), as when the message came in.
            let customers: Vec<String> = match direction {
                Direction::Incoming => vec![col(row, "from_addr")?],
                Direction::Outgoing => {
                    let mut to = parse_json_list(&col::<String>(row, "to_addrs")?, "emails.to")?;
                    to.extend(parse_json_list(
                        &col::<String>(row, "cc_addrs")?,
                        "emails.cc",
                    )?);
                    to
                }
            };
            let record =
                DecisionRecord::from_stored(col::<Option<String>>(row, "decision")?.as_deref());
            let action: String = col(row, "crm_action")?;
            stored.push(Stored {
                id: col(row, "id")?,
                direction,
                message_id: col(row, "message_id")?,
                customers: customers
                    .iter()
                    .filter_map(|a| parse_email(a).ok().map(Identifier::Email))
                    .collect(),
                collected_at: col(row, "ingested_at")?,
                created: parse_json_list(
                    &col::<String>(row, "created_entities")?,
                    "emails.created_entities",
                )?
                .iter()
                .map(|e| parse_stored(e, "emails.created_entities"))
                .collect::<Result<_>>()?,
                activity: col(row, "activity_id")?,
                first_of_activity: col(row, "first_of_activity")?,
                // T9: the recorded decision names the queue turn; rows from before
                // decision records took one when they created something.
                took_turn: match &record {
                    Some(record) => record.rules.iter().any(|r| r == "T9"),
                    None => action == CrmAction::Created.as_str(),
                },
            });
        }

        let mut seen = HashSet::new();
        let identifiers: Vec<Identifier> = stored
            .iter()
            .flat_map(|e| e.customers.iter().cloned())
            .filter(|i| seen.insert(i.key().to_owned()))
            .collect();
        let mut conn = self.reader().acquire().await?;
        let mut matches: HashMap<String, MatchOutcome> = HashMap::new();
        for chunk in identifiers.chunks(MATCH_CHUNK) {
            for outcome in match_all(&mut conn, chunk).await? {
                matches.insert(outcome.identifier.key().to_owned(), outcome);
            }
        }
        let bests: Vec<Candidate> = matches
            .values()
            .filter_map(|m| m.chosen().cloned())
            .collect();
        let mut contexts = HashMap::new();
        for chunk in bests.chunks(MATCH_CHUNK * 2) {
            contexts.extend(customer_contexts(&mut conn, chunk).await?);
        }

        let window: HashSet<String> = stored.iter().map(|e| e.id.clone()).collect();
        Ok(stored
            .into_iter()
            .map(|email| {
                let addresses = email
                    .customers
                    .iter()
                    .filter_map(|i| matches.get(i.key()))
                    .map(|matched| PastAddress {
                        customer: matched
                            .chosen()
                            .and_then(|best| contexts.get(&best.entity).cloned())
                            .unwrap_or_default(),
                        matched: matched.clone(),
                    })
                    .collect();
                let joined_earlier = email
                    .first_of_activity
                    .as_ref()
                    .is_some_and(|first| *first != email.id && !window.contains(first));
                PastEmail {
                    id: email.id,
                    direction: email.direction,
                    message_id: email.message_id,
                    addresses,
                    collected_at: email.collected_at,
                    created: email.created,
                    activity: email.activity.is_some(),
                    joined_earlier,
                    took_turn: email.took_turn,
                }
            })
            .collect())
    }
}
