//! Click-to-call: which of our numbers an employee's call goes out from, and the
//! customer's number it dials. Pure: the HTTP handler loads the numbers and the B2BUA
//! places the call.

use crate::crm::intake::NumberSettings;
use crate::crm::model::{Direction, TrunkId};
use crate::matcher::{Country, PhoneKey, normalise_phone};

/// One of our numbers as click-to-call sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DialLine {
    pub settings: NumberSettings,
    /// The trunk its calls go out through; `None` for a number no trunk carries.
    pub trunk: Option<TrunkId>,
}

/// A line that can carry the call: the number and its trunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChosenLine {
    pub settings: NumberSettings,
    pub trunk: TrunkId,
}

/// Why a click-to-call cannot be placed as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialRefusal {
    #[error("'{0}' is not one of our numbers")]
    UnknownNumber(String),
    #[error("the number {0} has no trunk to call out through")]
    NoTrunk(String),
    #[error(
        "no number allows outgoing calls and has a trunk: set a number's directions to \
         'outgoing' or 'both' and give it a trunk, or name the number to call from"
    )]
    NoOutgoingNumber,
    #[error("'{to}' is not a phone number that can be dialled (read with the country {country})")]
    BadTarget { to: String, country: String },
}

/// The line to call from. A named number (E.164, or national in the account's
/// `country`) is used whatever its `directions` say: they decide what the call creates
/// (T7), not whether it may be made. Without one, the first line (in `lines`' order)
/// whose directions cover outgoing calls and that has a trunk.
pub fn choose_line(
    lines: &[DialLine],
    requested: Option<&str>,
    country: Country,
) -> Result<ChosenLine, DialRefusal> {
    let chosen = match requested.map(str::trim) {
        Some(asked) => {
            let key = normalise_phone(asked, Some(country))
                .map_err(|_| DialRefusal::UnknownNumber(asked.to_owned()))?;
            let found = lines
                .iter()
                .find(|l| l.settings.number == key.as_str())
                .ok_or_else(|| DialRefusal::UnknownNumber(asked.to_owned()))?;
            let trunk = found
                .trunk
                .clone()
                .ok_or_else(|| DialRefusal::NoTrunk(found.settings.number.clone()))?;
            (found, trunk)
        }
        None => lines
            .iter()
            .filter(|l| l.settings.directions.covers(Direction::Outgoing))
            .find_map(|l| l.trunk.clone().map(|t| (l, t)))
            .ok_or(DialRefusal::NoOutgoingNumber)?,
    };
    Ok(ChosenLine {
        settings: chosen.0.settings.clone(),
        trunk: chosen.1,
    })
}

/// The customer's number in E.164, a national spelling read with the number's country.
/// Only a number that reads as a real phone number is dialled: digits that do not (an
/// extension, a typo) would reach the carrier as a call to nowhere.
pub fn target(to: &str, country: Country) -> Result<String, DialRefusal> {
    let refused = || DialRefusal::BadTarget {
        to: to.to_owned(),
        country: country.as_str().to_owned(),
    };
    if to.len() > 64 {
        return Err(refused());
    }
    match normalise_phone(to, Some(country)) {
        Ok(PhoneKey::E164(e164)) => Ok(e164),
        _ => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::model::{Directions, LeadCreation, NumberId};

    fn line(number: &str, directions: Directions, trunk: Option<&str>) -> DialLine {
        DialLine {
            settings: NumberSettings {
                id: NumberId(format!("id-{number}")),
                number: number.to_owned(),
                default_country: "DE".parse().unwrap(),
                queue: None,
                lead_creation: LeadCreation::Automatic,
                directions,
                route_to_responsible: true,
                ring_timeout_s: 20,
                source: "CALL".into(),
                change_responsible_on_transfer: false,
                trust: Default::default(),
            },
            trunk: trunk.map(|t| TrunkId(t.to_owned())),
        }
    }

    fn de() -> Country {
        "DE".parse().unwrap()
    }

    #[test]
    fn t7_without_a_number_the_first_line_allowing_outgoing_calls_with_a_trunk() {
        let lines = [
            line("+4930111111", Directions::Incoming, Some("t1")),
            line("+4930222222", Directions::Both, None),
            line("+4930333333", Directions::Outgoing, Some("t3")),
            line("+4930444444", Directions::Both, Some("t4")),
        ];
        let chosen = choose_line(&lines, None, de()).unwrap();
        assert_eq!(chosen.settings.number, "+4930333333");
        assert_eq!(chosen.trunk, TrunkId("t3".into()));
    }

    #[test]
    fn t7_no_line_allowing_outgoing_calls_is_no_outgoing_number() {
        let lines = [
            line("+4930111111", Directions::Incoming, Some("t1")),
            line("+4930222222", Directions::Both, None),
        ];
        assert_eq!(
            choose_line(&lines, None, de()),
            Err(DialRefusal::NoOutgoingNumber)
        );
        assert_eq!(
            choose_line(&[], None, de()),
            Err(DialRefusal::NoOutgoingNumber)
        );
    }

    #[test]
    fn a_named_number_is_found_in_any_spelling_whatever_its_directions() {
        let lines = [
            line("+4930901820", Directions::Incoming, Some("t1")),
            line("+4930222222", Directions::Both, Some("t2")),
        ];
        for asked in ["+4930901820", "030 901820", " +49 30 901820 "] {
            let chosen = choose_line(&lines, Some(asked), de()).unwrap();
            assert_eq!(chosen.settings.number, "+4930901820", "{asked}");
            assert_eq!(chosen.trunk, TrunkId("t1".into()));
        }
    }

    #[test]
    fn a_named_number_without_a_trunk_or_unknown_is_refused() {
        let lines = [line("+4930901820", Directions::Both, None)];
        assert_eq!(
            choose_line(&lines, Some("+4930901820"), de()),
            Err(DialRefusal::NoTrunk("+4930901820".into()))
        );
        assert_eq!(
            choose_line(&lines, Some("+4930999999"), de()),
            Err(DialRefusal::UnknownNumber("+4930999999".into()))
        );
        assert_eq!(
            choose_line(&lines, Some("sales"), de()),
            Err(DialRefusal::UnknownNumber("sales".into()))
        );
    }

    #[test]
    fn the_customer_is_dialled_in_e164_read_with_the_numbers_country() {
        assert_eq!(target("030 1234567", de()).unwrap(), "+49301234567");
        assert_eq!(target("+44 20 7946 0958", de()).unwrap(), "+442079460958");
        assert_eq!(
            target("0049 30 1234567", de()).unwrap(),
            "+49301234567",
            "an international prefix ignores the country"
        );
    }

    #[test]
    fn what_is_no_dialable_number_is_refused() {
        for to in ["", "abc", "101", "12", &"1".repeat(65)] {
            assert!(
                matches!(target(to, de()), Err(DialRefusal::BadTarget { .. })),
                "{to:?}"
            );
        }
    }
}
