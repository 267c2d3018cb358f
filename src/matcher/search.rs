//! What a search box's text means for the entity lists (`?q=`): a piece of a name or an
//! e-mail address, and, when it is written like a phone number, that number in any
//! spelling or a run of its digits.
//!
//! Names and addresses are compared in lower case; a number is read as the `?phone=`
//! filter reads it (M2), so `030 901820` finds `+4930901820`, and its digits without
//! leading zeros are looked for inside stored numbers, so `901820` and `0049 30 9018` find
//! it too.

use super::{Country, normalise_phone};

/// The fewest digits that are looked for inside stored numbers: fewer would find nearly
/// every number.
pub const MIN_SEARCH_DIGITS: usize = 3;

/// A search, ready for the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// The text in lower case, to be found inside names and e-mail addresses.
    pub text: String,
    /// The text as typed (trimmed), for a database whose lower case covers ASCII letters
    /// only: `Özdemir` is then still found as written.
    pub typed: String,
    /// The number as the matcher stores it (E.164, or digits when it does not parse),
    /// when the text is written like a phone number.
    pub phone: Option<String>,
    /// Digits to be found inside stored numbers: the text's digits without leading zeros
    /// (national and international prefixes), at least [`MIN_SEARCH_DIGITS`] of them.
    pub digits: Option<String>,
}

/// Whether the text is written like a phone number: digits with the usual separators,
/// and nothing else.
pub fn looks_like_phone(text: &str) -> bool {
    text.chars().any(|c| c.is_ascii_digit())
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || " +-()/.".contains(c))
}

/// Reads a search box; `None` for one that holds only white space. National numbers are
/// read with `country`, as the `?phone=` filter does.
pub fn search(text: &str, country: Option<Country>) -> Option<Search> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let (phone, digits) = if looks_like_phone(text) {
        let phone = normalise_phone(text, country)
            .ok()
            .map(|key| key.as_str().to_owned());
        let digits: String = text
            .chars()
            .filter(char::is_ascii_digit)
            .skip_while(|&c| c == '0')
            .collect();
        (phone, (digits.len() >= MIN_SEARCH_DIGITS).then_some(digits))
    } else {
        (None, None)
    };
    Some(Search {
        text: text.to_lowercase(),
        typed: text.to_owned(),
        phone,
        digits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn de() -> Option<Country> {
        Some("DE".parse().unwrap())
    }

    #[test]
    fn a_name_is_found_in_lower_case_and_is_no_number() {
        let s = search("  Müller GmbH ", de()).unwrap();
        assert_eq!(s.text, "müller gmbh");
        assert_eq!(s.typed, "Müller GmbH");
        assert_eq!((s.phone, s.digits), (None, None));
        assert_eq!(search(" \t", de()), None);
    }

    #[test]
    fn m2_a_number_in_any_spelling_is_read_like_the_phone_filter() {
        let s = search("030 901820", de()).unwrap();
        assert_eq!(s.phone.as_deref(), Some("+4930901820"));
        assert_eq!(s.digits.as_deref(), Some("30901820"));
        let s = search("+49 (30) 901-820", de()).unwrap();
        assert_eq!(s.phone.as_deref(), Some("+4930901820"));
        assert_eq!(s.digits.as_deref(), Some("4930901820"));
    }

    #[test]
    fn a_run_of_digits_is_looked_for_inside_stored_numbers() {
        let s = search("901820", de()).unwrap();
        assert_eq!(s.digits.as_deref(), Some("901820"));
        assert!("+4930901820".contains(s.digits.as_deref().unwrap()));
        // International and national prefixes are not part of a stored E.164 number.
        let s = search("0049 30 9018", de()).unwrap();
        assert!("+4930901820".contains(s.digits.as_deref().unwrap()));
        // Too few digits would find almost every number.
        assert_eq!(search("07", de()).unwrap().digits, None);
    }

    #[test]
    fn text_with_letters_is_no_number() {
        assert!(!looks_like_phone("Room 101"));
        assert!(!looks_like_phone("-- ()"));
        assert!(looks_like_phone("030/901820"));
        assert_eq!(search("Room 101", de()).unwrap().phone, None);
    }
}
