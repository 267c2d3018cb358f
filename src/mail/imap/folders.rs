//! Finding the inbox, sent, junk and trash folders in a LIST answer: by RFC 6154
//! special-use attribute first, by the usual names second. Pure: takes what LIST said.

/// The folders a mailbox's settings default to (E4) and check against (E11). Names are as
/// the server spells them (modified UTF-7 on the wire), ready for SELECT.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialFolders {
    pub inbox: String,
    pub sent: Option<String>,
    pub junk: Option<String>,
    pub trash: Option<String>,
}

/// One LIST line: the name, its hierarchy delimiter and its attributes, lower-cased with
/// their backslash (`\sent`, `\noselect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ListedFolder {
    pub name: String,
    pub delimiter: Option<String>,
    pub attributes: Vec<String>,
}

impl ListedFolder {
    fn selectable(&self) -> bool {
        // RFC 3501 7.2.2 \Noselect; RFC 5258 \NonExistent.
        !self.has("\\noselect") && !self.has("\\nonexistent")
    }

    fn has(&self, attribute: &str) -> bool {
        self.attributes.iter().any(|a| a == attribute)
    }

    /// The name without an `INBOX` parent (`INBOX.Sent` → `Sent`) for servers that keep
    /// every folder under the inbox (Courier, old Cyrus); `None` for deeper names.
    fn top_level_name(&self) -> Option<&str> {
        let Some(delimiter) = self.delimiter.as_deref().filter(|d| !d.is_empty()) else {
            return Some(&self.name);
        };
        let mut parts = self.name.split(delimiter);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(only), None, _) => Some(only),
            (Some(parent), Some(child), None) if parent.eq_ignore_ascii_case("INBOX") => {
                Some(child)
            }
            _ => None,
        }
    }
}

pub(super) fn pick(
    listed: &[ListedFolder],
    sent_names: &[&str],
    junk_names: &[&str],
    trash_names: &[&str],
) -> SpecialFolders {
    let selectable: Vec<&ListedFolder> = listed.iter().filter(|f| f.selectable()).collect();
    // RFC 3501 5.1: INBOX is case-insensitive; keep the server's spelling.
    let inbox = selectable
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case("INBOX"))
        .map_or_else(|| "INBOX".to_owned(), |f| f.name.clone());
    let find = |attribute: &str, names: &[&str]| -> Option<String> {
        if let Some(folder) = selectable.iter().find(|f| f.has(attribute)) {
            return Some(folder.name.clone());
        }
        names.iter().find_map(|wanted| {
            selectable
                .iter()
                .find(|f| {
                    f.top_level_name()
                        .is_some_and(|name| name.eq_ignore_ascii_case(wanted))
                })
                .map(|f| f.name.clone())
        })
    };
    SpecialFolders {
        inbox,
        sent: find("\\sent", sent_names),
        junk: find("\\junk", junk_names),
        trash: find("\\trash", trash_names),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str, attributes: &[&str]) -> ListedFolder {
        ListedFolder {
            name: name.to_owned(),
            delimiter: Some(".".to_owned()),
            attributes: attributes.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn pick_default(listed: &[ListedFolder]) -> SpecialFolders {
        pick(
            listed,
            &["Sent", "Sent Items", "Sent Messages"],
            &["Junk", "Spam"],
            &["Trash", "Deleted Items"],
        )
    }

    #[test]
    fn e4_special_use_attributes_win_over_names() {
        let found = pick_default(&[
            folder("INBOX", &[]),
            folder("Sent", &[]),
            folder("Gesendet", &["\\sent"]),
            folder("Spam", &[]),
            folder("Junk-Mail", &["\\junk"]),
            folder("Papierkorb", &["\\trash"]),
        ]);
        assert_eq!(found.inbox, "INBOX");
        assert_eq!(found.sent.as_deref(), Some("Gesendet"));
        assert_eq!(found.junk.as_deref(), Some("Junk-Mail"));
        assert_eq!(found.trash.as_deref(), Some("Papierkorb"));
    }

    #[test]
    fn e4_names_are_the_fallback_in_order_and_under_inbox() {
        let found = pick_default(&[
            folder("inbox", &[]),
            folder("INBOX.Sent Messages", &[]),
            folder("Sent Items", &[]),
            folder("Archive.Spam", &[]),
            folder("INBOX.Spam", &[]),
        ]);
        assert_eq!(found.inbox, "inbox");
        // "Sent Items" comes before "Sent Messages" in the list of names.
        assert_eq!(found.sent.as_deref(), Some("Sent Items"));
        // A Spam folder two levels down is somebody's archive, not the junk folder.
        assert_eq!(found.junk.as_deref(), Some("INBOX.Spam"));
        assert_eq!(found.trash, None);
    }

    #[test]
    fn unselectable_folders_are_skipped() {
        let found = pick_default(&[
            folder("INBOX", &[]),
            folder("Sent", &["\\noselect"]),
            folder("Junk", &["\\nonexistent", "\\junk"]),
        ]);
        assert_eq!(found.sent, None);
        assert_eq!(found.junk, None);
    }

    #[test]
    fn gmail_style_names_are_found_by_attribute() {
        let mut sent = folder("[Gmail]/Sent Mail", &["\\sent", "\\haschildren"]);
        sent.delimiter = Some("/".to_owned());
        let found = pick_default(&[folder("INBOX", &[]), sent]);
        assert_eq!(found.sent.as_deref(), Some("[Gmail]/Sent Mail"));
    }
}
