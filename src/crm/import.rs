//! Bulk import of contacts (`POST /contacts/import`): the rows of a CSV file or the cards
//! of a vCard file become candidate contacts, each row checked on its own, rows of one
//! person merged, and for each candidate the decision to create a contact, complete an
//! existing one or skip it, from what the matcher (M1–M8) says about its identifiers.
//! No I/O: the store looks identifiers up and writes.

use std::collections::{BTreeSet, HashMap};

use super::model::{EntityKind, EntityRef, UserId};
use crate::mail::vcard::ContactDraft;
use crate::matcher::{
    Country, Identifier, MatchOutcome, MatchStatus, normalise_phone, parse_email,
};

/// The columns a CSV file may have, in any order.
pub const COLUMNS: [&str; 5] = ["name", "phone", "email", "company", "responsible"];

/// A file that cannot be imported at all (single rows are skipped instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("the file is empty: a CSV file starts with a header row ({})", COLUMNS.join(","))]
    Empty,
    #[error("unknown column(s) {}: the columns are {}", .0.join(", "), COLUMNS.join(", "))]
    UnknownColumns(Vec<String>),
    #[error("column '{0}' appears twice")]
    RepeatedColumn(String),
    #[error("a file without a 'phone' or 'email' column has nothing to match contacts on")]
    NoIdentifierColumn,
    #[error("line {0}: a quoted value is never closed")]
    UnclosedQuote(usize),
}

/// One row of the file as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportRow {
    /// CSV: the line the row starts on (the header is line 1); vCard: the card's position.
    pub line: usize,
    pub name: Option<String>,
    pub phones: Vec<String>,
    pub emails: Vec<String>,
    pub company: Option<String>,
    pub responsible: Option<String>,
}

/// A row or candidate left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub line: usize,
    pub reason: String,
}

/// One person of the file: rows sharing a phone number or an address merged (M7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportCandidate {
    /// The lines merged into it, ascending.
    pub lines: Vec<usize>,
    /// Empty when no row gave one.
    pub name: String,
    /// Matcher keys, unique, in file order.
    pub identifiers: Vec<Identifier>,
    pub company: Option<String>,
    pub responsible: Option<UserId>,
}

/// What to do with a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create,
    /// Complete this existing contact with the identifiers it lacks.
    Update {
        contact: EntityRef,
        add: Vec<Identifier>,
    },
    Skip(String),
}

/// Splits one cell into its values: several phone numbers or addresses in one cell are
/// separated by `;` or `,` (neither occurs in a number or a plain address).
fn values(cell: &str) -> Vec<String> {
    cell.split([';', ','])
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn non_empty(cell: &str) -> Option<String> {
    let cell = cell.trim();
    (!cell.is_empty()).then(|| cell.to_owned())
}

/// RFC 4180 records with the line each starts on: quoted fields may hold separators,
/// doubled quotes and line breaks; CRLF and LF both end a record.
fn records(text: &str) -> Result<Vec<(usize, Vec<String>)>, ImportError> {
    let mut out = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut start = 1;
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            ',' => record.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                out.push((start, std::mem::take(&mut record)));
                line += 1;
                start = line;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(ImportError::UnclosedQuote(start));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        out.push((start, record));
    }
    // Blank lines are no rows.
    out.retain(|(_, r)| r.iter().any(|f| !f.trim().is_empty()));
    Ok(out)
}

/// The rows of a CSV file with a header row naming some of [`COLUMNS`] (any order, any
/// letter case). A row with more cells than the header has its extra cells ignored.
pub fn read_csv(text: &str) -> Result<Vec<ImportRow>, ImportError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = records(text)?.into_iter();
    let (_, header) = records.next().ok_or(ImportError::Empty)?;
    let header: Vec<String> = header.iter().map(|h| h.trim().to_lowercase()).collect();
    let unknown: Vec<String> = header
        .iter()
        .filter(|h| !COLUMNS.contains(&h.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(ImportError::UnknownColumns(unknown));
    }
    let mut seen = BTreeSet::new();
    if let Some(twice) = header.iter().find(|h| !seen.insert(h.as_str())) {
        return Err(ImportError::RepeatedColumn(twice.clone()));
    }
    if !seen.contains("phone") && !seen.contains("email") {
        return Err(ImportError::NoIdentifierColumn);
    }
    let at = |name: &str| header.iter().position(|h| h == name);
    let [name, phone, email, company, responsible] = COLUMNS.map(at);
    Ok(records
        .map(|(line, cells)| {
            let cell = |i: Option<usize>| i.and_then(|i| cells.get(i)).map_or("", |c| c.as_str());
            ImportRow {
                line,
                name: non_empty(cell(name)),
                phones: values(cell(phone)),
                emails: values(cell(email)),
                company: non_empty(cell(company)),
                responsible: non_empty(cell(responsible)),
            }
        })
        .collect())
}

/// The cards of a vCard file as rows; a card's "line" is its position in the file.
pub fn rows_from_cards(cards: Vec<ContactDraft>) -> Vec<ImportRow> {
    cards
        .into_iter()
        .enumerate()
        .map(|(i, card)| ImportRow {
            line: i + 1,
            name: card.name.clone(),
            phones: card.phones,
            emails: card.emails.iter().map(ToString::to_string).collect(),
            company: card.organisation,
            responsible: None,
        })
        .collect()
}

/// Checks each row and merges rows of one person. `country` reads national numbers (M2);
/// `users` finds a responsible employee by user id or lower-cased login address.
pub fn candidates(
    rows: Vec<ImportRow>,
    country: Country,
    users: &HashMap<String, UserId>,
) -> (Vec<ImportCandidate>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let mut valid: Vec<ImportCandidate> = Vec::new();
    'rows: for row in rows {
        let skip = |reason: String| Skipped {
            line: row.line,
            reason,
        };
        let mut identifiers: Vec<Identifier> = Vec::new();
        for phone in &row.phones {
            match normalise_phone(phone, Some(country)) {
                Ok(key) => identifiers.push(Identifier::Phone(key)),
                Err(e) => {
                    skipped.push(skip(format!("phone '{phone}': {e}")));
                    continue 'rows;
                }
            }
        }
        for email in &row.emails {
            match parse_email(email) {
                Ok(address) => identifiers.push(Identifier::Email(address)),
                Err(e) => {
                    skipped.push(skip(format!("email '{email}': {e}")));
                    continue 'rows;
                }
            }
        }
        if identifiers.is_empty() {
            skipped.push(skip("no phone number or e-mail address to match on".into()));
            continue;
        }
        let responsible = match &row.responsible {
            None => None,
            Some(r) => match users.get(r).or_else(|| users.get(&r.to_lowercase())) {
                Some(user) => Some(user.clone()),
                None => {
                    skipped.push(skip(format!("responsible '{r}' is no user")));
                    continue;
                }
            },
        };
        let mut unique: Vec<Identifier> = Vec::new();
        for id in identifiers {
            if !unique.iter().any(|u| u.key() == id.key()) {
                unique.push(id);
            }
        }
        valid.push(ImportCandidate {
            lines: vec![row.line],
            name: row.name.unwrap_or_default(),
            identifiers: unique,
            company: row.company,
            responsible,
        });
    }
    (merge(valid), skipped)
}

/// M7 inside the file: rows sharing an identifier, directly or through other rows, are one
/// person. The first row's name, company and responsible win; later rows fill gaps.
fn merge(rows: Vec<ImportCandidate>) -> Vec<ImportCandidate> {
    let mut parent: Vec<usize> = (0..rows.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut owner: HashMap<&str, usize> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        for id in &row.identifiers {
            if let Some(&j) = owner.get(id.key()) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                // The earlier row stays the root, so the first row's fields win.
                parent[a.max(b)] = a.min(b);
            } else {
                owner.insert(id.key(), i);
            }
        }
    }
    let roots: Vec<usize> = (0..rows.len()).map(|i| root(&mut parent, i)).collect();
    let mut merged: Vec<Option<ImportCandidate>> = vec![None; rows.len()];
    for (row, r) in rows.into_iter().zip(roots) {
        match &mut merged[r] {
            slot @ None => *slot = Some(row),
            Some(into) => {
                into.lines.extend(row.lines);
                if into.name.is_empty() {
                    into.name = row.name;
                }
                into.company = into.company.take().or(row.company);
                into.responsible = into.responsible.take().or(row.responsible);
                for id in row.identifiers {
                    if !into.identifiers.iter().any(|u| u.key() == id.key()) {
                        into.identifiers.push(id);
                    }
                }
            }
        }
    }
    merged.into_iter().flatten().collect()
}

/// What becomes of a candidate, from the matcher's outcome for each of its identifiers
/// (`outcomes` by key):
/// - an excluded identifier (M4, M6) skips it, with the matcher's reason;
/// - identifiers nobody has: a new contact;
/// - identifiers of one contact only (M8's choice for each): that contact is completed;
/// - an identifier of a lead or company, or of two contacts: skipped, as a lead is
///   converted and not imported over, and two people are never merged by an import.
pub fn decide(candidate: &ImportCandidate, outcomes: &HashMap<String, MatchOutcome>) -> Action {
    let mut owner: Option<&EntityRef> = None;
    let mut add = Vec::new();
    for id in &candidate.identifiers {
        let Some(outcome) = outcomes.get(id.key()) else {
            add.push(id.clone());
            continue;
        };
        match outcome.status {
            MatchStatus::Excluded => return Action::Skip(outcome.reason.clone()),
            MatchStatus::Unknown => add.push(id.clone()),
            MatchStatus::Known => {
                let Some(chosen) = outcome.chosen() else {
                    add.push(id.clone());
                    continue;
                };
                if chosen.entity.kind != EntityKind::Contact {
                    return Action::Skip(format!(
                        "{} belongs to {}; only contacts are completed by an import",
                        id.key(),
                        chosen.entity
                    ));
                }
                match owner {
                    Some(known) if *known != chosen.entity => {
                        return Action::Skip(format!(
                            "the row's identifiers belong to two contacts, {known} and {}",
                            chosen.entity
                        ));
                    }
                    _ => owner = Some(&chosen.entity),
                }
            }
        }
    }
    match owner {
        Some(contact) => Action::Update {
            contact: contact.clone(),
            add,
        },
        None => Action::Create,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::{Candidate, Exclusions, resolve};

    fn de() -> Country {
        "DE".parse().unwrap()
    }

    fn rows(csv: &str) -> (Vec<ImportCandidate>, Vec<Skipped>) {
        let mut users = HashMap::new();
        users.insert("u1".to_owned(), UserId("u1".into()));
        users.insert("anna@example.com".to_owned(), UserId("u1".into()));
        candidates(read_csv(csv).unwrap(), de(), &users)
    }

    #[test]
    fn columns_in_any_order_and_several_values_per_cell() {
        let (c, skipped) =
            rows("Email,Name,phone\r\n\"a@x.de; B@x.de\",\"Meyer, Anna\",030 1234567\r\n");
        assert!(skipped.is_empty());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, "Meyer, Anna");
        let keys: Vec<&str> = c[0].identifiers.iter().map(Identifier::key).collect();
        assert_eq!(keys, ["+49301234567", "a@x.de", "b@x.de"]);
    }

    #[test]
    fn unknown_columns_are_named() {
        let err = read_csv("name,phone,fax,mobile\n").unwrap_err();
        assert_eq!(
            err,
            ImportError::UnknownColumns(vec!["fax".into(), "mobile".into()])
        );
        assert!(err.to_string().contains("fax, mobile"));
        assert_eq!(
            read_csv("name,company\n"),
            Err(ImportError::NoIdentifierColumn)
        );
        assert_eq!(
            read_csv("name,phone,\"x\n"),
            Err(ImportError::UnclosedQuote(1))
        );
    }

    #[test]
    fn bad_rows_are_skipped_with_their_line() {
        let (c, skipped) = rows(
            "name,phone,email,responsible\n\
             Ok,030 1234567,,anna@example.com\n\
             \"Two\nlines\",,not-an-address,\n\
             \n\
             Nobody,,,\n\
             Stranger,0301111111,,zed\n",
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].responsible, Some(UserId("u1".into())));
        let lines: Vec<usize> = skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, [3, 6, 7]);
        assert!(skipped[0].reason.contains("not-an-address"));
        assert!(skipped[2].reason.contains("'zed'"));
    }

    #[test]
    fn m7_rows_of_one_person_are_merged_inside_the_file() {
        let (c, _) = rows(
            "name,phone,email,company\n\
             ,030 1234567,,\n\
             Anna,,anna@x.de,ACME\n\
             Anna M.,+49 30 1234567,anna@x.de,\n\
             Bob,0302222222,,\n",
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].lines, [2, 3, 4]);
        assert_eq!(c[0].name, "Anna");
        assert_eq!(c[0].company.as_deref(), Some("ACME"));
        assert_eq!(c[0].identifiers.len(), 2);
        assert_eq!(c[1].lines, [5]);
    }

    fn outcome(id: &Identifier, owners: &[EntityRef], exclusions: &Exclusions) -> MatchOutcome {
        let found = owners
            .iter()
            .map(|e| Candidate {
                entity: e.clone(),
                responsible: None,
                last_activity_at: 0,
            })
            .collect();
        resolve(id.clone(), exclusions, found)
    }

    #[test]
    fn m7_m8_m6_decide_create_complete_or_skip() {
        let (c, _) = rows("phone,email\n030 1234567,anna@x.de\n");
        let [phone, email] = [&c[0].identifiers[0], &c[0].identifiers[1]];
        let contact = EntityRef::new(EntityKind::Contact, "c1");
        let none = Exclusions::default();
        let mut outcomes = HashMap::new();
        assert_eq!(decide(&c[0], &outcomes), Action::Create);

        outcomes.insert(
            phone.key().to_owned(),
            outcome(phone, std::slice::from_ref(&contact), &none),
        );
        outcomes.insert(email.key().to_owned(), outcome(email, &[], &none));
        assert_eq!(
            decide(&c[0], &outcomes),
            Action::Update {
                contact: contact.clone(),
                add: vec![email.clone()]
            }
        );

        let lead = EntityRef::new(EntityKind::Lead, "l1");
        outcomes.insert(email.key().to_owned(), outcome(email, &[lead], &none));
        assert!(matches!(decide(&c[0], &outcomes), Action::Skip(r) if r.contains("lead:l1")));

        let other = EntityRef::new(EntityKind::Contact, "c2");
        outcomes.insert(email.key().to_owned(), outcome(email, &[other], &none));
        assert!(matches!(decide(&c[0], &outcomes), Action::Skip(r) if r.contains("two contacts")));

        let mut employees = Exclusions::default();
        if let Identifier::Email(address) = email {
            employees.add_employee_email(address);
        }
        outcomes.insert(email.key().to_owned(), outcome(email, &[], &employees));
        assert!(matches!(decide(&c[0], &outcomes), Action::Skip(_)));
    }
}
