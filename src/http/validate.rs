//! Input validation shared by the resources: turns API text into domain values, with
//! errors that name the field.

use serde::{Deserialize, Deserializer};

use super::error::{ApiError, ApiResult};
use crate::matcher::{Country, normalise_phone, parse_email};

/// A display name: trimmed, not empty, bounded.
pub fn name(field: &str, value: &str) -> ApiResult<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ApiError::field(
            "required",
            field,
            format!("{field} must not be empty"),
        ));
    }
    if trimmed.chars().count() > 200 {
        return Err(ApiError::field(
            "too_long",
            field,
            format!("{field} must be at most 200 characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// The longest note an activity keeps, in characters.
pub const MAX_NOTE: usize = 10_000;

/// An activity's note: `None` (or only white space) removes it. Kept as written, line
/// breaks included; NUL is refused (PostgreSQL text cannot hold it).
pub fn note(field: &str, value: Option<String>) -> ApiResult<Option<String>> {
    let Some(text) = value.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > MAX_NOTE {
        return Err(ApiError::field(
            "too_long",
            field,
            format!("{field} must be at most {MAX_NOTE} characters"),
        ));
    }
    if text.contains('\0') {
        return Err(ApiError::field(
            "invalid_text",
            field,
            format!("{field} must not contain NUL characters"),
        ));
    }
    Ok(Some(text))
}

/// M3: an e-mail address, lowercased.
pub fn email(field: &str, value: &str) -> ApiResult<String> {
    parse_email(value)
        .map(|e| e.as_str().to_owned())
        .map_err(|e| ApiError::field("invalid_email", field, format!("{field}: {e}")))
}

/// An internal extension: 1 to 10 digits.
pub fn extension(field: &str, value: &str) -> ApiResult<String> {
    let value = value.trim();
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::field(
            "invalid_extension",
            field,
            format!("{field} must be 1 to 10 digits, e.g. 101"),
        ));
    }
    Ok(value.to_owned())
}

/// M2: phone numbers normalised to E.164 with the given country (digits if unparsable).
pub fn phones(field: &str, values: &[String], country: Option<Country>) -> ApiResult<Vec<String>> {
    values
        .iter()
        .enumerate()
        .map(|(i, raw)| phone(&format!("{field}[{i}]"), raw, country))
        .collect()
}

pub fn phone(field: &str, raw: &str, country: Option<Country>) -> ApiResult<String> {
    normalise_phone(raw, country)
        .map(|key| key.as_str().to_owned())
        .map_err(|e| ApiError::field("invalid_phone", field, format!("{field}: {e}")))
}

/// Strict E.164 (`+` and 8–15 digits), for our own numbers.
pub fn e164(field: &str, raw: &str, country: Option<Country>) -> ApiResult<String> {
    let key = normalise_phone(raw, country)
        .map_err(|e| ApiError::field("invalid_number", field, format!("{field}: {e}")))?;
    if !key.is_e164() {
        return Err(ApiError::field(
            "invalid_number",
            field,
            format!(
                "{field}: '{raw}' is not a phone number in international form; write it as +4930901820"
            ),
        ));
    }
    Ok(key.as_str().to_owned())
}

/// For PATCH fields where `null` means "remove" and absent means "keep":
/// absent → `None`, `null` → `Some(None)`, value → `Some(Some(v))`.
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// An IP address or a CIDR network (`192.0.2.10`, `198.51.100.0/24`, `2001:db8::/32`).
pub fn ip_or_network(field: &str, value: &str) -> ApiResult<()> {
    let (addr, prefix) = match value.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (value, None),
    };
    let ip: std::net::IpAddr = addr.parse().map_err(|_| {
        ApiError::field(
            "invalid_ip",
            field,
            format!("{field}: '{value}' is not an IP address or network like 192.0.2.0/24"),
        )
    })?;
    if let Some(prefix) = prefix {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(p) if p <= max => {}
            _ => {
                return Err(ApiError::field(
                    "invalid_ip",
                    field,
                    format!("{field}: prefix length of '{value}' must be 0 to {max}"),
                ));
            }
        }
    }
    Ok(())
}

/// A host name or IP literal for a trunk.
pub fn host(field: &str, value: &str) -> ApiResult<()> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && (value.parse::<std::net::IpAddr>().is_ok()
            || value.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if !ok {
        return Err(ApiError::field(
            "invalid_host",
            field,
            format!("{field}: '{value}' is not a host name or IP address"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_kept_as_written_and_blank_removes_it() {
        assert_eq!(
            note("note", Some(" Call back on Monday.\nAsk for Ben. ".into())).unwrap(),
            Some(" Call back on Monday.\nAsk for Ben. ".to_owned())
        );
        assert_eq!(note("note", None).unwrap(), None);
        assert_eq!(note("note", Some(" \n ".into())).unwrap(), None);
    }

    #[test]
    fn a_note_is_bounded_in_characters_not_bytes() {
        let longest = "ü".repeat(MAX_NOTE);
        assert!(note("note", Some(longest.clone())).is_ok());
        match note("note", Some(longest + "x")).unwrap_err() {
            ApiError::Invalid { field, code, .. } => {
                assert_eq!((field.as_deref(), code), (Some("note"), "too_long"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(note("note", Some("a\0b".into())).is_err());
    }
}
