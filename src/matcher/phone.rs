//! Phone numbers as the matcher compares them (M2): E.164 when the number can be read,
//! otherwise the digits as written, so a number is never dropped.
//!
//! Reading is done by the `phonenumber` crate. Two of its bugs are worked around here (the
//! first is described in the design notes' CRATES.md; the canary test below shows both):
//!
//! - A number that already carries its country code (`+39 02…`, `00 39 02…`) parsed with a
//!   *different* default region has that region's trunk prefix stripped from it
//!   (`+39212345678`). So international spellings are parsed with no region at all; an
//!   international dialling prefix (`00`, `011`, …) is rewritten to `+` first.
//! - Its check before stripping a trunk prefix is wrong, so a national number that itself
//!   begins with the trunk digit loses it (`+7 800 123-45-67` → `+7001234567`; written
//!   nationally, `8 800…`, it loses two `8`s). So the number as written is preferred when it
//!   is valid, and a national reading gets back what was stripped beyond one trunk prefix.
//!
//! Only numbers the metadata calls valid become E.164 from a national spelling: digits
//! without a country code may just as well be an extension (`101`) or a service code
//! (`112`), and inventing `+49101` for them would match the wrong people.

use std::fmt;

use phonenumber::Type;
use phonenumber::metadata::{DATABASE, Metadata};

use super::country::Country;

/// A phone number normalised for comparison (M2). Built only by [`normalise_phone`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PhoneKey {
    /// The E.164 form, `+4930901820`.
    E164(String),
    /// Fallback for a number that could not be read: all ASCII digits of the input,
    /// e.g. an internal extension `101`. Never starts with `+`.
    Digits(String),
}

impl PhoneKey {
    /// The stored and compared text: `+4930901820` or `101`.
    pub fn as_str(&self) -> &str {
        match self {
            PhoneKey::E164(text) | PhoneKey::Digits(text) => text,
        }
    }

    pub fn is_e164(&self) -> bool {
        matches!(self, PhoneKey::E164(_))
    }
}

impl fmt::Display for PhoneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text is not a phone number at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("'{0}' contains no digits, so it is not a phone number")]
    NoDigits(String),
}

/// E.164 allows at most 15 digits, country code included (ITU-T E.164 §6.2.1).
const MAX_E164_DIGITS: usize = 15;

/// The international prefix ITU-T recommends and most countries (and many PBXs) dial.
const ITU_INTERNATIONAL_PREFIX: &str = "00";

/// M2: normalise `input` for comparison. `default_country` is the country of the number or
/// mailbox the input arrived on; it is used only for national spellings.
///
/// Returns [`PhoneKey::E164`] when the number can be read, otherwise
/// [`PhoneKey::Digits`] with every ASCII digit of the input. Fails only when the input has
/// no ASCII digit at all.
pub fn normalise_phone(
    input: &str,
    default_country: Option<Country>,
) -> Result<PhoneKey, PhoneError> {
    let digits: String = input.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return Err(PhoneError::NoDigits(input.to_owned()));
    }
    Ok(match read_e164(input, default_country) {
        Some(e164) => PhoneKey::E164(e164),
        None => PhoneKey::Digits(digits),
    })
}

/// The E.164 form of `input`, if it can be read as a number.
fn read_e164(input: &str, country: Option<Country>) -> Option<String> {
    // Like the crate, ignore anything before the number (`Tel. `, `tel:`).
    let start = input.find(|c: char| c.is_ascii_digit() || is_plus(c))?;
    let body = &input[start..];
    let first = body.chars().next()?;
    if is_plus(first) {
        return read_international(input, &body[first.len_utf8()..]);
    }

    match country {
        None => after_idd(body, ITU_INTERNATIONAL_PREFIX).and_then(read_after_idd),
        Some(country) => {
            let idd = region_idd(country, body);
            idd.and_then(|idd| after_idd(body, &idd))
                .and_then(read_after_idd)
                .or_else(|| read_national(input, body, country))
                // A PBX may dial 00 for abroad even where the national prefix differs
                // (011 in the US); tried only when the national reading found nothing.
                .or_else(|| after_idd(body, ITU_INTERNATIONAL_PREFIX).and_then(read_after_idd))
        }
    }
}

/// `+CC…` in any spelling the crate reads (`+49 (0)30…`, `tel:+1-506-…`). `after_plus` is
/// the text after the `+`.
fn read_international(text: &str, after_plus: &str) -> Option<String> {
    // Region `None`: the CRATES.md bug bites whenever a region is given.
    let parsed = phonenumber::parse(None, text).ok()?;
    let code = parsed.code().value();
    let written = written_digits(after_plus);
    let written_nsn = written.strip_prefix(&code.to_string());

    let parsed_nsn = parsed.national().to_string();
    let valid = |nsn: &&str| is_valid(code, nsn);

    // 1. The number as written, unless a trunk prefix makes it invalid. Preferring it over
    //    the crate's reading also makes every E.164 we return read back as itself.
    written_nsn
        .filter(valid)
        .and_then(|nsn| e164(code, nsn))
        // 2. The crate's reading: it drops `(0)` trunk prefixes and maps vanity letters.
        .or_else(|| {
            Some(parsed_nsn.as_str())
                .filter(valid)
                .and_then(|nsn| e164(code, nsn))
        })
        // 3. A country code was written, so trust it for a range newer than our metadata,
        //    as long as the country's general pattern allows the number.
        .or_else(|| {
            written_nsn
                .filter(|nsn| matches_general(code, nsn))
                .and_then(|nsn| e164(code, nsn))
        })
}

/// The rest of a number dialled with an international prefix, rewritten as `+…`.
fn read_after_idd(rest: &str) -> Option<String> {
    read_international(&format!("+{rest}"), rest)
}

/// A national spelling, read with the default country's dialling rules.
fn read_national(input: &str, body: &str, country: Country) -> Option<String> {
    let parsed = phonenumber::parse(Some(country.id()), input).ok()?;
    let code = parsed.code().value();
    let parsed_nsn = parsed.national().to_string();
    if is_valid(code, &parsed_nsn) {
        return e164(code, &parsed_nsn);
    }
    // The crate strips a trunk prefix twice when the number begins with the prefix digit
    // (RU `8 800 …` → `00 …`). Strip it once from what was written instead.
    let prefix = DATABASE.by_id(country.as_str())?.national_prefix()?;
    let written = written_digits(body);
    let once = written.strip_prefix(prefix)?;
    if once.len() > parsed_nsn.len() && once.ends_with(&parsed_nsn) && is_valid(code, once) {
        return e164(code, once);
    }
    None
}

fn e164(code: u16, nsn: &str) -> Option<String> {
    let code = code.to_string();
    let plausible = !nsn.is_empty()
        && nsn.bytes().all(|b| b.is_ascii_digit())
        && code.len() + nsn.len() <= MAX_E164_DIGITS;
    plausible.then(|| format!("+{code}{nsn}"))
}

fn is_plus(c: char) -> bool {
    c == '+' || c == '\u{FF0B}'
}

/// Characters that may separate the digits of one written number.
fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '-' | '.' | '/' | '(' | ')' | '[' | ']' | '\u{00A0}' | '\u{2010}'
            ..='\u{2015}' | '\u{2212}' | '\u{3000}'
    )
}

/// The digits of the number at the start of `text`, up to the first character that cannot
/// be part of it (`;ext=`, `x12`, a letter, …).
fn written_digits(text: &str) -> String {
    text.chars()
        .take_while(|&c| c.is_ascii_digit() || is_separator(c))
        .filter(char::is_ascii_digit)
        .collect()
}

/// The digits of `country`'s international dialling prefix when `body` starts with it
/// (`011` in the US, `810` in Russia).
fn region_idd(country: Country, body: &str) -> Option<String> {
    let pattern = DATABASE.by_id(country.as_str())?.international_prefix()?;
    let digits = written_digits(body);
    let found = pattern.find(&digits).filter(|m| m.start() == 0)?;
    Some(digits[..found.end()].to_owned())
}

/// The text after the international prefix `idd`, when `body` starts with it and a country
/// code follows (country codes never start with 0).
fn after_idd<'a>(body: &'a str, idd: &str) -> Option<&'a str> {
    if idd.is_empty() || !written_digits(body).starts_with(idd) {
        return None;
    }
    let mut seen = 0;
    let end = body.char_indices().find_map(|(index, c)| {
        if c.is_ascii_digit() {
            seen += 1;
            if seen == idd.len() {
                return Some(index + c.len_utf8());
            }
        }
        None
    })?;
    let rest = &body[end..];
    written_digits(rest)
        .starts_with(|c: char| c != '0')
        .then_some(rest)
}

/// The region of calling code `code` that `nsn` belongs to, chosen as libphonenumber does:
/// by the region's leading digits, else by a number type that matches.
fn region_for(code: u16, nsn: &str) -> Option<&'static Metadata> {
    let regions = DATABASE.by_code(&code)?;
    if let [only] = regions[..] {
        return Some(only);
    }
    regions
        .into_iter()
        .find(|meta| match meta.leading_digits() {
            Some(pattern) => pattern.find(nsn).is_some_and(|m| m.start() == 0),
            None => has_number_type(meta, nsn),
        })
}

/// Whether `nsn` is a valid national significant number of calling code `code`: it
/// matches a number type of its region, as libphonenumber's `isValidNumber`. The crate's
/// patterns match from the start but are not anchored at the end, so a valid number with
/// more digits after it passes too; `e164` caps the length.
fn is_valid(code: u16, nsn: &str) -> bool {
    region_for(code, nsn).is_some_and(|meta| has_number_type(meta, nsn))
}

/// The number types libphonenumber tries, in its order.
const NUMBER_TYPES: [Type; 10] = [
    Type::PremiumRate,
    Type::TollFree,
    Type::SharedCost,
    Type::Voip,
    Type::PersonalNumber,
    Type::Pager,
    Type::Uan,
    Type::Voicemail,
    Type::FixedLine,
    Type::Mobile,
];

fn has_number_type(meta: &Metadata, nsn: &str) -> bool {
    let descriptors = meta.descriptors();
    descriptors.general().is_match(nsn)
        && NUMBER_TYPES
            .iter()
            .any(|&kind| descriptors.get(kind).is_some_and(|d| d.is_match(nsn)))
}

fn matches_general(code: u16, nsn: &str) -> bool {
    DATABASE.by_code(&code).is_some_and(|regions| {
        regions
            .iter()
            .any(|meta| meta.descriptors().general().is_match(nsn))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn de() -> Option<Country> {
        Some("DE".parse().unwrap())
    }

    fn country(code: &str) -> Option<Country> {
        Some(code.parse().unwrap())
    }

    fn expect_e164(input: &str, country: Option<Country>) -> String {
        match normalise_phone(input, country) {
            Ok(PhoneKey::E164(text)) => text,
            other => panic!("{input:?} with {country:?}: expected E.164, got {other:?}"),
        }
    }

    #[test]
    fn m2_national_format_uses_number_country() {
        for input in [
            "030 1234567",
            "(030) 123-4567",
            "030/1234567",
            "+49 (0)30 1234567",
            "0049 30 1234567",
            "+49301234567",
        ] {
            assert_eq!(expect_e164(input, de()), "+49301234567", "{input}");
        }
        assert_eq!(expect_e164("tel:+1-506-234-5678", None), "+15062345678");
        assert_eq!(expect_e164("(506) 234-5678", country("CA")), "+15062345678");
    }

    #[test]
    fn m2_international_form_ignores_default_country() {
        // CRATES.md: parsed with DE, the Italian trunk-less 0 would be stripped.
        assert_eq!(expect_e164("+39 02 1234 5678", de()), "+390212345678");
        assert_eq!(expect_e164("00 39 02 1234 5678", de()), "+390212345678");
        assert_eq!(
            expect_e164("011 39 02 1234 5678", country("US")),
            "+390212345678"
        );
        assert_eq!(
            expect_e164("+49 1512 3456789", country("US")),
            "+4915123456789"
        );
    }

    #[test]
    fn m2_zero_zero_prefix_is_international_without_a_country() {
        assert_eq!(expect_e164("0039 02 1234 5678", None), "+390212345678");
        // A US PBX that dials 00 for abroad instead of 011.
        assert_eq!(
            expect_e164("0049 30 1234567", country("US")),
            "+49301234567"
        );
    }

    #[test]
    fn m2_number_beginning_with_trunk_digit_keeps_it() {
        let ru = country("RU");
        assert_eq!(expect_e164("8 (800) 123-45-67", ru), "+78001234567");
        assert_eq!(expect_e164("88001234567", ru), "+78001234567");
        assert_eq!(expect_e164("+7 800 123-45-67", de()), "+78001234567");
        assert_eq!(expect_e164("+78091234567", None), "+78091234567");
        assert_eq!(expect_e164("810 7 800 123-45-67", ru), "+78001234567");
    }

    #[test]
    fn m2_extension_is_not_part_of_the_number() {
        assert_eq!(expect_e164("+49 30 1234567 ext. 12", None), "+49301234567");
        assert_eq!(
            expect_e164("tel:+49-30-1234567;ext=12", None),
            "+49301234567"
        );
        assert_eq!(expect_e164("030 1234567 x12", de()), "+49301234567");
    }

    #[test]
    fn m2_text_around_the_number_is_ignored() {
        assert_eq!(expect_e164("Tel. +49 30 1234567", None), "+49301234567");
        assert_eq!(expect_e164("Mobil: 0151 23456789", de()), "+4915123456789");
        assert_eq!(expect_e164("\u{FF0B}49 30 1234567", None), "+49301234567");
        assert_eq!(expect_e164("+1 800 FLOWERS", None), "+18003569377");
    }

    #[test]
    fn m2_unreadable_number_is_kept_as_digits() {
        let digits = |input: &str, country| match normalise_phone(input, country) {
            Ok(PhoneKey::Digits(text)) => text,
            other => panic!("{input:?}: expected digits, got {other:?}"),
        };
        // Internal extensions and service codes are not numbers of the default country.
        assert_eq!(digits("101", de()), "101");
        assert_eq!(digits("2001", de()), "2001");
        assert_eq!(digits("112", de()), "112");
        assert_eq!(digits("101", country("US")), "101");
        // A national spelling without a country to read it with.
        assert_eq!(digits("030 1234567", None), "0301234567");
        // No such country code.
        assert_eq!(digits("+999 1234", None), "9991234");
        assert_eq!(digits("sip:101@pbx", de()), "101");
    }

    #[test]
    fn m2_no_digits_is_an_error_naming_the_input() {
        for input in ["", "   ", "+", "anonymous", "+ - ()"] {
            assert_eq!(
                normalise_phone(input, de()),
                Err(PhoneError::NoDigits(input.to_owned()))
            );
        }
        assert_eq!(
            PhoneError::NoDigits("anonymous".into()).to_string(),
            "'anonymous' contains no digits, so it is not a phone number"
        );
    }

    #[test]
    fn m2_phone_key_text() {
        let key = normalise_phone("030 1234567", de()).unwrap();
        assert!(key.is_e164());
        assert_eq!(key.as_str(), "+49301234567");
        assert_eq!(key.to_string(), "+49301234567");
        let key = normalise_phone("101", de()).unwrap();
        assert!(!key.is_e164());
        assert_eq!(key.as_str(), "101");
    }

    /// The crate bugs worked around above. If one of these fails after a `phonenumber`
    /// upgrade, the bug is fixed: the workaround may go, the vectors still decide.
    #[test]
    fn canary_phonenumber_bugs_still_present() {
        let parse = |region, input| {
            phonenumber::parse(region, input)
                .map(|n| n.format().mode(phonenumber::Mode::E164).to_string())
                .ok()
        };
        use phonenumber::country::Id;
        assert_eq!(
            parse(Some(Id::DE), "+39 02 1234 5678").as_deref(),
            Some("+39212345678")
        );
        assert_eq!(parse(None, "+78001234567").as_deref(), Some("+7001234567"));
    }

    /// `tests/data/phone/expected.tsv`: libphonenumber's own parse of 746 spellings.
    #[test]
    fn m2_corpus_vectors_all_normalise_to_expected_e164() {
        let data = include_str!("../../tests/data/phone/expected.tsv");
        let mut lines = data.lines();
        let header = lines.next().unwrap_or_default();
        assert!(header.starts_with("input\tdefault_region\texpected_e164"));
        let mut wrong = Vec::new();
        let mut total = 0;
        for line in lines {
            let fields: Vec<&str> = line.split('\t').collect();
            let [input, region, expected, ..] = fields[..] else {
                panic!("short row: {line:?}");
            };
            let region = (!region.is_empty()).then(|| region.parse::<Country>().unwrap());
            total += 1;
            let got = normalise_phone(input, region);
            if got != Ok(PhoneKey::E164(expected.to_owned())) {
                wrong.push(format!("{input:?} {region:?}: {got:?}, want {expected}"));
            }
        }
        assert_eq!(total, 746);
        assert!(
            wrong.is_empty(),
            "{} wrong:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn any_country() -> impl Strategy<Value = Option<Country>> {
            prop::option::of(prop::sample::select(Country::all()))
        }

        /// Spellings people and carriers use, so that many inputs do read as numbers.
        fn phone_like() -> impl Strategy<Value = String> {
            (
                prop::sample::select(vec!["", "+", "00", "011", "810", "tel:+", "+0", "8 "]),
                prop::sample::select(vec![
                    "", "1", "7", "31", "33", "34", "39", "41", "43", "44", "48", "49", "380",
                ]),
                "[0-9 ()./-]{0,16}",
                prop::sample::select(vec!["", " ext. 12", ";ext=7", " x3", "#"]),
            )
                .prop_map(|(prefix, code, rest, tail)| format!("{prefix}{code}{rest}{tail}"))
        }

        /// Every example number of the metadata: (region, calling code, national number).
        fn examples() -> Vec<(Country, u16, String)> {
            let mut examples = Vec::new();
            for meta in DATABASE.iter() {
                let Ok(country) = meta.id().parse::<Country>() else {
                    continue;
                };
                for kind in NUMBER_TYPES {
                    if let Some(nsn) = meta.descriptors().get(kind).and_then(|d| d.example()) {
                        examples.push((country, meta.country_code(), nsn.to_owned()));
                    }
                }
            }
            examples.sort();
            examples
        }

        /// Real numbers with their last digits changed, in the spellings of the corpus.
        fn number_like() -> impl Strategy<Value = (String, Option<Country>)> {
            (
                prop::sample::select(examples()),
                "[0-9]{0,3}",
                0..5usize,
                prop::bool::ANY,
            )
                .prop_map(|((country, code, nsn), tail, spelling, spaced)| {
                    let keep = nsn.len().saturating_sub(tail.len());
                    let nsn = format!("{}{tail}", &nsn[..keep]);
                    let nsn = if spaced && nsn.len() > 3 {
                        format!("{} {}", &nsn[..3], &nsn[3..])
                    } else {
                        nsn
                    };
                    let prefix = DATABASE
                        .by_id(country.as_str())
                        .and_then(|m| m.national_prefix())
                        .unwrap_or_default();
                    match spelling {
                        0 => (format!("+{code}{nsn}"), None),
                        1 => (format!("+{code} ({prefix}){nsn}"), Some(country)),
                        2 => (format!("00 {code} {nsn}"), None),
                        3 => (format!("tel:+{code}-{nsn}"), Some(country)),
                        _ => (format!("{prefix}{nsn}"), Some(country)),
                    }
                })
        }

        proptest! {
            #[test]
            fn m2_normalise_phone_never_panics(input in "\\PC{0,40}", country in any_country()) {
                let _ = normalise_phone(&input, country);
            }

            #[test]
            fn m2_normalise_phone_never_panics_on_phone_like_text(
                input in phone_like(),
                country in any_country(),
            ) {
                let _ = normalise_phone(&input, country);
            }

            #[test]
            fn m2_e164_round_trips_under_any_country(
                input in phone_like(),
                country in any_country(),
                other in any_country(),
            ) {
                if let Ok(PhoneKey::E164(text)) = normalise_phone(&input, country) {
                    for again in [None, country, other] {
                        prop_assert_eq!(
                            normalise_phone(&text, again),
                            Ok(PhoneKey::E164(text.clone())),
                            "from {:?} with {:?}", input, country
                        );
                    }
                }
            }

            #[test]
            fn m2_e164_of_real_numbers_round_trips_under_any_country(
                (input, country) in number_like(),
                other in any_country(),
            ) {
                if let Ok(PhoneKey::E164(text)) = normalise_phone(&input, country) {
                    for again in [None, country, other] {
                        prop_assert_eq!(
                            normalise_phone(&text, again),
                            Ok(PhoneKey::E164(text.clone())),
                            "from {:?} with {:?}", input, country
                        );
                    }
                }
            }

            #[test]
            fn m2_digits_fallback_keeps_every_digit(input in phone_like(), country in any_country()) {
                if let Ok(PhoneKey::Digits(text)) = normalise_phone(&input, country) {
                    let digits: String = input.chars().filter(char::is_ascii_digit).collect();
                    prop_assert_eq!(text, digits);
                }
            }
        }
    }
}
