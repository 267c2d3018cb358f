//! Erasure of a person's data: which entities an erasure covers, what it does to each
//! kind of record, and the tombstones that keep erased data from coming back.
//!
//! Pure: the store reads what belongs to the person ([`Found`]), [`plan`] turns it into an
//! [`ErasurePlan`] of ids and file names (never personal data, so it can be written down
//! before anything is deleted and finished after a crash), and [`tombstone_hash`] is the
//! one way an identifier, Call-ID or Message-ID is remembered afterwards.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::{EntityKind, EntityRef};

/// What may be erased: a person, as a lead or a contact. Companies and deals are not
/// people; a contact's own deals go with the contact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("'{0}' is not an entity reference; write it as lead:<id> or contact:<id>")]
    Malformed(String),
    #[error("a {0} is not a person: only lead:<id> or contact:<id> can be erased")]
    NotAPerson(EntityKind),
}

/// Parses the `entity` of an erasure or export request.
pub fn parse_target(text: &str) -> Result<EntityRef, TargetError> {
    let target: EntityRef = text
        .parse()
        .map_err(|_| TargetError::Malformed(text.to_owned()))?;
    match target.kind {
        EntityKind::Lead | EntityKind::Contact => Ok(target),
        other => Err(TargetError::NotAPerson(other)),
    }
}

/// What a tombstone remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TombstoneKind {
    /// A phone number or e-mail address of the person (the matcher's key).
    Identifier,
    /// The Call-ID of an erased call: a replayed event of it creates nothing.
    CallId,
    /// The Message-ID of an erased e-mail: a re-synced copy of it is skipped.
    MessageId,
}

impl TombstoneKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TombstoneKind::Identifier => "identifier",
            TombstoneKind::CallId => "call_id",
            TombstoneKind::MessageId => "message_id",
        }
    }
}

/// Hex SHA-256 of the installation's salt, the kind and the value. The salt keeps a
/// tombstone from being checked against a list of all phone numbers by anyone who reads
/// the table alone; the kind keeps a Call-ID from matching an identical Message-ID.
pub fn tombstone_hash(salt: &str, kind: TombstoneKind, value: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [salt, kind.as_str(), value] {
        hasher.update(part.as_bytes());
        // A separator no part contains, so ("ab", "c") and ("a", "bc") differ.
        hasher.update([0u8]);
    }
    hex::encode(hasher.finalize())
}

/// A call of the person: kept for statistics, with the customer side blanked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundCall {
    /// `calls.id`.
    pub id: String,
    pub call_id: String,
    /// File name in the recordings folder (a recording or a voicemail message).
    pub recording: Option<String>,
}

/// An e-mail of the person: deleted with its raw message and attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundEmail {
    pub id: String,
    pub message_id: Option<String>,
}

/// Everything the store found that belongs to the person.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The person and what goes with them (leads, the contact's own deals).
    pub entities: Vec<EntityRef>,
    /// The matcher keys (E.164, lowercased e-mail) of those entities.
    pub identifiers: Vec<String>,
    pub activities: Vec<String>,
    pub calls: Vec<FoundCall>,
    pub emails: Vec<FoundEmail>,
}

/// What an erasure did, as the API answers it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErasedCounts {
    pub entities: u64,
    pub activities: u64,
    pub calls: u64,
    pub emails: u64,
    pub recordings: u64,
}

/// A call to anonymise: its record id, and what its Call-ID becomes (the tombstone's
/// hash, so that a replayed event of it finds the anonymised call and changes nothing).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlannedCall {
    pub id: String,
    pub erased_call_id: String,
}

/// The Call-ID an erased call is kept under.
pub fn erased_call_id(call_id_hash: &str) -> String {
    format!("erased:{call_id_hash}")
}

/// A tombstone as stored: the kind and the salted hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tombstone {
    pub kind: TombstoneKind,
    pub hash: String,
}

/// The erasure written down before it starts: ids and file names only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasurePlan {
    pub entities: Vec<EntityRef>,
    pub activities: Vec<String>,
    /// The calls to anonymise.
    pub calls: Vec<PlannedCall>,
    pub emails: Vec<String>,
    /// Recording and voicemail files to delete (plain names in the recordings folder).
    pub recordings: Vec<String>,
}

impl ErasurePlan {
    pub fn counts(&self) -> ErasedCounts {
        let n = |len: usize| len as u64;
        ErasedCounts {
            entities: n(self.entities.len()),
            activities: n(self.activities.len()),
            calls: n(self.calls.len()),
            emails: n(self.emails.len()),
            recordings: n(self.recordings.len()),
        }
    }
}

/// What marks a webhook delivery still owed as the person's: the ids of everything the
/// plan erases. Each record a delivery carries names its own id and its entities' (`kind:id`),
/// a call update its call log id, so no identifier needs to be kept in the plan.
pub fn outbox_marks(plan: &ErasurePlan) -> Vec<String> {
    let mut marks: Vec<String> = plan
        .entities
        .iter()
        .map(|e| e.id.clone())
        .chain(plan.activities.iter().cloned())
        .chain(plan.calls.iter().map(|c| c.id.clone()))
        .chain(plan.emails.iter().cloned())
        .filter(|m| !m.is_empty())
        .collect();
    marks.sort();
    marks.dedup();
    marks
}

/// A `LIKE` pattern (with `\\` as its escape) that finds `text` anywhere in a column put
/// through SQL's `LOWER`, and may find more: [`holds_mark`] decides. `%`, `_` and `\\` in
/// `text` match only themselves. SQLite's `LOWER` and `LIKE` fold ASCII letters only, and
/// PostgreSQL's `LOWER` others only under a Unicode `LC_CTYPE`, so each run of non-ASCII
/// characters becomes `%`: `JÖRG` in a body is a candidate for `jörg`, and so is a letter
/// whose folding changes its length (`STRASSE` for `straße`). Over-selecting costs a
/// parse; missing would leave the person's data in the outbox.
pub fn like_anywhere(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    // Whether the pattern ends in a wildcard `%` (not an escaped one): runs collapse.
    let mut wild = true;
    for c in text.chars() {
        if !c.is_ascii() {
            if !wild {
                pattern.push('%');
                wild = true;
            }
            continue;
        }
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c.to_ascii_lowercase());
        wild = false;
    }
    if !wild {
        pattern.push('%');
    }
    pattern
}

/// Full Unicode case folding, the form marks and bodies are compared in: `JÖRG` and
/// `jörg`, `STRASSE` and `straße` are the same.
fn fold(text: &str) -> String {
    unicase::UniCase::new(text).to_folded_case()
}

/// Whether a delivery's `body` (its JSON as sent) holds `mark` (an id, an E.164 number or
/// a lower-case address) on its own, in any letter case (Unicode's, not only ASCII's). `LIKE` only finds candidates:
/// another person's number that merely begins with the person's (`+49305550123` in
/// `+493055501234`), or an address that ends with theirs, is not theirs, and their
/// address after an escaped line break (`\ngreta@…`) is. So each string of the JSON is
/// read unescaped and the mark must not continue a longer number, address or id.
pub fn holds_mark(body: &str, mark: &str) -> bool {
    fn strings<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::String(s) => out.push(s),
            serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| {
                out.push(k);
                strings(v, out);
            }),
            _ => {}
        }
    }
    let mark = fold(mark);
    if mark.is_empty() {
        return false;
    }
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(value) => {
            let mut found = Vec::new();
            strings(&value, &mut found);
            found.iter().any(|s| holds_word(&fold(s), &mark))
        }
        // Not JSON (never written so): the text as it is, erring towards deleting.
        Err(_) => fold(body).contains(&mark),
    }
}

/// `mark` in `text` with no letter, digit or address character right before it, and none
/// right after it but a dot that ends a sentence.
fn holds_word(text: &str, mark: &str) -> bool {
    let joins_before = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '%');
    let joins_after = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-');
    text.match_indices(mark).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let mut after = text[at + mark.len()..].chars();
        let next = after.next();
        let free_after = match next {
            None => true,
            Some('.') => !after.next().is_some_and(|c| c.is_alphanumeric()),
            Some(c) => !joins_after(c),
        };
        !before.is_some_and(joins_before) && free_after
    })
}

/// The plan and the tombstones of what was found, hashed with the installation's
/// `salt`: no identifier, Call-ID or Message-ID leaves here unhashed.
pub fn plan(found: &Found, salt: &str) -> (ErasurePlan, Vec<Tombstone>) {
    let unique = |items: Vec<String>| -> Vec<String> {
        items
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let mut entities = found.entities.clone();
    entities.sort_by(|a, b| (a.kind.as_str(), &a.id).cmp(&(b.kind.as_str(), &b.id)));
    entities.dedup();
    let calls: BTreeSet<PlannedCall> = found
        .calls
        .iter()
        .map(|c| PlannedCall {
            id: c.id.clone(),
            erased_call_id: erased_call_id(&tombstone_hash(
                salt,
                TombstoneKind::CallId,
                &c.call_id,
            )),
        })
        .collect();
    let plan = ErasurePlan {
        entities,
        activities: unique(found.activities.clone()),
        calls: calls.into_iter().collect(),
        emails: unique(found.emails.iter().map(|e| e.id.clone()).collect()),
        recordings: unique(
            found
                .calls
                .iter()
                .filter_map(|c| c.recording.clone())
                .filter(|f| is_plain_file_name(f))
                .collect(),
        ),
    };
    let tombstones: BTreeSet<Tombstone> = found
        .identifiers
        .iter()
        .map(|v| (TombstoneKind::Identifier, v.as_str()))
        .chain(
            found
                .calls
                .iter()
                .map(|c| (TombstoneKind::CallId, c.call_id.as_str())),
        )
        .chain(
            found
                .emails
                .iter()
                .filter_map(|e| e.message_id.as_deref())
                .map(|id| (TombstoneKind::MessageId, id)),
        )
        .map(|(kind, value)| Tombstone {
            kind,
            hash: tombstone_hash(salt, kind, value),
        })
        .collect();
    (plan, tombstones.into_iter().collect())
}

/// Only a plain file name is ever stored for a recording; anything else is not ours to
/// delete.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '\\']) && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_is_searched_for_every_erased_id_and_only_literally() {
        let plan = ErasurePlan {
            entities: vec![EntityRef {
                kind: EntityKind::Contact,
                id: "c1".into(),
            }],
            activities: vec!["a1".into(), "a2".into()],
            calls: Vec::new(),
            emails: vec!["e1".into(), "a1".into()],
            recordings: vec!["r.wav".into()],
        };
        assert_eq!(outbox_marks(&plan), ["a1", "a2", "c1", "e1"]);
        assert_eq!(like_anywhere("+4930"), "%+4930%");
        assert_eq!(
            like_anywhere("Greta_M%x\\y@Kunde.example"),
            "%greta\\_m\\%x\\\\y@kunde.example%"
        );
    }

    #[test]
    fn a_mark_counts_on_its_own_not_inside_another_number_or_address() {
        let call =
            r#"{"event":"call.ringing","data":{"customer":"+49305550123","number":"+4930901820"}}"#;
        assert!(holds_mark(call, "+49305550123"));
        assert!(
            !holds_mark(call, "+4930555012"),
            "a shorter number is another's"
        );
        let longer = r#"{"data":{"customer":"+493055501234"}}"#;
        assert!(
            !holds_mark(longer, "+49305550123"),
            "a longer number is another's"
        );
        let sip = r#"{"data":{"from":"sip:+49305550123@pbx.example"}}"#;
        assert!(holds_mark(sip, "+49305550123"));
        let mail = r#"{"data":{"from":"Greta <Greta.Mustermann@Kunde.example>","note":"Bitte an\ngreta.mustermann@kunde.example."}}"#;
        assert!(holds_mark(mail, "greta.mustermann@kunde.example"));
        let note = r#"{"data":{"note":"Mail\ngreta@kunde.example."}}"#;
        assert!(
            holds_mark(note, "greta@kunde.example"),
            "after an escaped line break"
        );
        for other in [
            r#"{"data":{"from":"margreta@kunde.example"}}"#,
            r#"{"data":{"from":"x.greta@kunde.example"}}"#,
            r#"{"data":{"from":"greta@kunde.example.org"}}"#,
        ] {
            assert!(!holds_mark(other, "greta@kunde.example"), "{other}");
        }
        assert!(holds_mark(r#"{"entity":"contact:c1"}"#, "c1"));
        assert!(holds_mark(r#"{"entity":"contact:C1"}"#, "c1"));
        assert!(holds_mark("not json, c1 here", "c1"));
        assert!(!holds_mark(call, ""));
    }

    #[test]
    fn m3_the_outbox_pattern_over_selects_non_ascii_letters_rather_than_miss_them() {
        assert_eq!(like_anywhere("jörg@example.com"), "%j%rg@example.com%");
        assert_eq!(like_anywhere("JÖRG@Example.com"), "%j%rg@example.com%");
        assert_eq!(like_anywhere("øyvind@ærø.dk"), "%yvind@%r%.dk%");
        assert_eq!(like_anywhere("straße"), "%stra%e%");
        assert_eq!(like_anywhere("ö_%\\ü"), "%\\_\\%\\\\%");
        assert_eq!(like_anywhere("jörg%"), "%j%rg\\%%");
    }

    #[test]
    fn m3_a_mark_is_found_in_any_unicode_capitals_and_only_its_own() {
        let body = r#"{"data":{"from":"Jörg <JÖRG@Example.com>"}}"#;
        assert!(holds_mark(body, "jörg@example.com"));
        assert!(holds_mark(body, "JÖRG@EXAMPLE.COM"));
        assert!(!holds_mark(body, "jürg@example.com"));
        assert!(!holds_mark(
            r#"{"from":"JÄRG@Example.com"}"#,
            "jörg@example.com"
        ));
        assert!(
            holds_mark(
                r#"{"from":"STRASSE@Kunde.example"}"#,
                "straße@kunde.example"
            ),
            "folding may change the length"
        );
        assert!(holds_mark(r#"{"from":"ΣΊΣΥΦΟΣ@x.gr"}"#, "σίσυφος@x.gr"));
        assert!(!holds_mark(
            r#"{"from":"xJÖRG@Example.com"}"#,
            "jörg@example.com"
        ));
    }

    fn found() -> Found {
        Found {
            entities: vec![
                EntityRef::new(EntityKind::Contact, "c1"),
                EntityRef::new(EntityKind::Lead, "l1"),
                EntityRef::new(EntityKind::Contact, "c1"),
            ],
            identifiers: vec!["+4930123456".into(), "anna@example.com".into()],
            activities: vec!["a2".into(), "a1".into(), "a2".into()],
            calls: vec![
                FoundCall {
                    id: "k1".into(),
                    call_id: "call-1@pbx".into(),
                    recording: Some("k1.wav".into()),
                },
                FoundCall {
                    id: "k2".into(),
                    call_id: "call-2@pbx".into(),
                    recording: Some("../etc/passwd".into()),
                },
            ],
            emails: vec![
                FoundEmail {
                    id: "e1".into(),
                    message_id: Some("<m1@example.com>".into()),
                },
                FoundEmail {
                    id: "e2".into(),
                    message_id: None,
                },
            ],
        }
    }

    #[test]
    fn only_people_can_be_erased() {
        assert_eq!(
            parse_target("contact:c1").unwrap(),
            EntityRef::new(EntityKind::Contact, "c1")
        );
        assert!(parse_target("lead:l1").is_ok());
        assert_eq!(
            parse_target("deal:d1"),
            Err(TargetError::NotAPerson(EntityKind::Deal))
        );
        assert!(matches!(parse_target("c1"), Err(TargetError::Malformed(_))));
        assert!(matches!(
            parse_target("person:c1"),
            Err(TargetError::Malformed(_))
        ));
    }

    #[test]
    fn the_plan_holds_ids_once_and_only_safe_file_names() {
        let (plan, _) = plan(&found(), "salt");
        assert_eq!(plan.entities.len(), 2);
        assert_eq!(plan.activities, vec!["a1", "a2"]);
        let calls: Vec<&str> = plan.calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(calls, vec!["k1", "k2"]);
        assert_eq!(plan.emails, vec!["e1", "e2"]);
        assert_eq!(plan.recordings, vec!["k1.wav"]);
        assert_eq!(
            plan.counts(),
            ErasedCounts {
                entities: 2,
                activities: 2,
                calls: 2,
                emails: 2,
                recordings: 1
            }
        );
    }

    #[test]
    fn the_plan_holds_no_personal_data_but_the_tombstones_remember_it() {
        let (plan, tombstones) = plan(&found(), "salt");
        let text = format!("{}{tombstones:?}", serde_json::to_string(&plan).unwrap());
        for secret in [
            "+4930123456",
            "anna@example.com",
            "call-1@pbx",
            "m1@example.com",
        ] {
            assert!(!text.contains(secret), "{secret} in the plan");
        }
        let has = |kind, value| {
            tombstones.contains(&Tombstone {
                kind,
                hash: tombstone_hash("salt", kind, value),
            })
        };
        assert!(has(TombstoneKind::Identifier, "+4930123456"));
        assert!(has(TombstoneKind::CallId, "call-2@pbx"));
        assert!(has(TombstoneKind::MessageId, "<m1@example.com>"));
        assert_eq!(tombstones.len(), 5);
        // A replayed event of an erased call finds it under its tombstone.
        let hash = tombstone_hash("salt", TombstoneKind::CallId, "call-1@pbx");
        assert!(
            plan.calls
                .iter()
                .any(|c| c.erased_call_id == erased_call_id(&hash))
        );
    }

    #[test]
    fn tombstone_hashes_depend_on_salt_kind_and_value() {
        let h = tombstone_hash("salt", TombstoneKind::CallId, "x@y");
        assert_eq!(h.len(), 64);
        assert_eq!(h, tombstone_hash("salt", TombstoneKind::CallId, "x@y"));
        assert_ne!(h, tombstone_hash("pepper", TombstoneKind::CallId, "x@y"));
        assert_ne!(h, tombstone_hash("salt", TombstoneKind::MessageId, "x@y"));
        assert_ne!(h, tombstone_hash("salt", TombstoneKind::CallId, "x@z"));
        assert_ne!(
            tombstone_hash("ab", TombstoneKind::CallId, "c"),
            tombstone_hash("a", TombstoneKind::CallId, "bc")
        );
        assert!(!h.contains("x@y"));
    }
}
