//! `Country`: the ISO 3166 region whose national dialling rules apply to a number written
//! without a country code (M2). Only regions the phone-number metadata knows are accepted,
//! so every `Country` can be handed to `phonenumber` without a lookup failing later.

use std::fmt;
use std::str::FromStr;

use phonenumber::country::Id;
use phonenumber::metadata::DATABASE;
use serde::{Deserialize, Serialize};

/// An ISO 3166 region like `DE`. Parsed case-insensitively (`de` is fine), shown upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Country(Id);

/// A region code the phone-number metadata does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a known country; write a two-letter ISO 3166 code such as DE, ES or US")]
pub struct UnknownCountry(pub String);

impl Country {
    /// The `phonenumber` region id, for calling the crate.
    pub fn id(self) -> Id {
        self.0
    }

    /// The upper-case code, e.g. `"DE"`.
    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }

    /// Every region the metadata knows, in code order.
    pub fn all() -> Vec<Country> {
        let mut all: Vec<Country> = DATABASE
            .iter()
            .filter_map(|meta| meta.id().parse().ok())
            .collect();
        all.sort();
        all
    }
}

// Ordered by code, so lists of countries read alphabetically.
impl Ord for Country {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Country {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for Country {
    type Err = UnknownCountry;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let code = s.trim().to_ascii_uppercase();
        // `phonenumber` unwraps the metadata of the region it is given, so a region must
        // both name an `Id` and have metadata before it becomes a `Country`.
        match code.parse::<Id>() {
            Ok(id) if DATABASE.by_id(id.as_ref()).is_some() => Ok(Country(id)),
            _ => Err(UnknownCountry(s.to_owned())),
        }
    }
}

impl TryFrom<String> for Country {
    type Error = UnknownCountry;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Country> for String {
    fn from(value: Country) -> Self {
        value.as_str().to_owned()
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn m2_country_parses_case_insensitively() {
        let de: Country = "de".parse().unwrap();
        assert_eq!(de, " DE ".parse().unwrap());
        assert_eq!(de.as_str(), "DE");
        assert_eq!(de.to_string(), "DE");
        assert_eq!(de.id(), Id::DE);
    }

    #[test]
    fn m2_unknown_country_is_refused_with_a_hint() {
        let err = "XX".parse::<Country>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "'XX' is not a known country; write a two-letter ISO 3166 code such as DE, ES or US"
        );
        assert!("".parse::<Country>().is_err());
        assert!("001".parse::<Country>().is_err());
        assert!("Deutschland".parse::<Country>().is_err());
    }

    #[test]
    fn m2_country_serde_is_the_code() {
        let de: Country = serde_json::from_str("\"de\"").unwrap();
        assert_eq!(serde_json::to_string(&de).unwrap(), "\"DE\"");
        assert!(serde_json::from_str::<Country>("\"ZZ\"").is_err());
    }

    #[test]
    fn m2_every_metadata_region_is_a_country() {
        let all = Country::all();
        assert!(all.len() > 200, "only {} regions", all.len());
        for country in all {
            assert_eq!(country.as_str().parse::<Country>(), Ok(country));
        }
    }
}
