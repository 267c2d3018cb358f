//! Webhooks: call events and CRM records created or changed, sent as signed HTTP
//! callbacks to the URLs employees register, each webhook told only what its owner may
//! see.
//!
//! This module owns the rules, as pure functions: which events exist, what a webhook URL
//! and secret may be, whether an owner sees a call update (the call window's rule, A2) or
//! a record (A1/A2, [`crate::events::RecordUpdate::visible_to`]),
//! and how a body is signed. [`delivery`] owns the task that follows the event bus and the
//! per-webhook queues that send; [`records`] announces what the mail intake wrote. The API is `http::webhooks`, the table
//! `store::webhooks`. Nothing here may let a slow or dead receiver hold up a call or
//! another webhook.

pub mod delivery;
pub mod records;

use std::net::IpAddr;

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::Sha256;

use crate::crm::access::{AccessSettings, Viewer};
use crate::events::CallUpdate;

/// The events a webhook may subscribe to.
pub const EVENTS: [&str; 9] = [
    "call.ringing",
    "call.answered",
    "call.ended",
    "lead.created",
    "contact.created",
    "deal.created",
    "entity.updated",
    "email.ingested",
    "activity.created",
];

/// The event of an entity of this kind created, if webhooks have one (companies do not).
pub fn created_event(kind: crate::crm::model::EntityKind) -> Option<&'static str> {
    use crate::crm::model::EntityKind;
    match kind {
        EntityKind::Lead => Some("lead.created"),
        EntityKind::Contact => Some("contact.created"),
        EntityKind::Deal => Some("deal.created"),
        EntityKind::Company => None,
    }
}

/// Whether any webhook follows `event`: from the cached list, so a publisher can skip
/// reading a record nobody is sent.
pub async fn followed(store: &crate::store::Store, event: &str) -> bool {
    match store.webhooks_cached().await {
        Ok(hooks) => hooks.iter().any(|h| h.events.iter().any(|e| e == event)),
        // Reading it again at dispatch fails the same way and is logged there.
        Err(_) => true,
    }
}

/// Longest URL accepted; longer ones are surely not a receiver's address.
const MAX_URL: usize = 2048;
/// A shorter secret makes the signature guessable.
const MIN_SECRET: usize = 16;
const MAX_SECRET: usize = 256;

/// A webhook setting the rules refuse, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("url: {0}")]
    Url(String),
    #[error("events: name at least one of {}", EVENTS.join(", "))]
    NoEvents,
    #[error("events[{index}]: '{name}' is not an event; use {}", EVENTS.join(", "))]
    UnknownEvent { index: usize, name: String },
    #[error(
        "secret must be {MIN_SECRET} to {MAX_SECRET} characters; leave it out to get a generated one"
    )]
    Secret,
}

impl Error {
    /// The request field the error is about.
    pub fn field(&self) -> String {
        match self {
            Error::Url(_) => "url".to_owned(),
            Error::NoEvents => "events".to_owned(),
            Error::UnknownEvent { index, .. } => format!("events[{index}]"),
            Error::Secret => "secret".to_owned(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::Url(_) => "invalid_url",
            Error::NoEvents | Error::UnknownEvent { .. } => "invalid_event",
            Error::Secret => "invalid_secret",
        }
    }
}

/// An `http` or `https` URL with a host. Credentials in it are refused: the URL is shown
/// to whoever may read the webhook, and the secret is the place for a shared secret.
/// Without `private_targets`, a host written as a non-public address or `localhost` is
/// refused too (names are checked again, resolved, at each delivery).
pub fn parse_url(text: &str, private_targets: bool) -> Result<reqwest::Url, Error> {
    let text = text.trim();
    if text.len() > MAX_URL {
        return Err(Error::Url(format!("at most {MAX_URL} characters")));
    }
    let url = reqwest::Url::parse(text).map_err(|e| {
        Error::Url(format!(
            "'{text}' is not a URL ({e}): write https://host/path"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Url(format!(
            "scheme '{}' is not supported: use https:// (or http://)",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::Url("a URL needs a host".to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Url(
            "no credentials in the URL: receivers check the signature made with the secret"
                .to_owned(),
        ));
    }
    if !private_targets {
        let host = url.host_str().unwrap_or_default();
        let inside = match literal_ip(&url) {
            Some(ip) => !is_public(ip),
            None => {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                host == "localhost" || host.ends_with(".localhost")
            }
        };
        if inside {
            return Err(Error::Url(format!(
                "{host} is not a public address: webhooks may not call the gateway's own \
                 network unless the operator sets webhook_private_targets"
            )));
        }
    }
    Ok(url)
}

/// The address in a URL whose host is written as one.
pub fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    url.host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether an address is on the public internet: not loopback, private (RFC 1918, RFC
/// 4193), shared (RFC 6598), link-local (cloud metadata lives there), unspecified,
/// broadcast, multicast or documentation; IPv4 inside IPv6 is judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b)
        }
    }
}

/// The subscribed events, each once, in the order given.
pub fn parse_events(names: &[String]) -> Result<Vec<String>, Error> {
    if names.is_empty() {
        return Err(Error::NoEvents);
    }
    let mut events: Vec<String> = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        if !EVENTS.contains(&name.as_str()) {
            return Err(Error::UnknownEvent {
                index,
                name: name.clone(),
            });
        }
        if !events.contains(name) {
            events.push(name.clone());
        }
    }
    Ok(events)
}

/// The secret given, if acceptable, else a new random one.
pub fn secret_or_generated(given: Option<&str>) -> Result<String, Error> {
    match given {
        Some(secret) if (MIN_SECRET..=MAX_SECRET).contains(&secret.chars().count()) => {
            Ok(secret.to_owned())
        }
        Some(_) => Err(Error::Secret),
        None => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            Ok(format!(
                "whsec_{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            ))
        }
    }
}

/// The webhook event of a call update (`ringing` → `call.ringing`).
pub fn event_name(update: &CallUpdate) -> Option<&'static str> {
    match update.event.as_str() {
        "ringing" => Some("call.ringing"),
        "answered" => Some("call.answered"),
        "ended" => Some("call.ended"),
        _ => None,
    }
}

/// Whether a webhook's owner may be told of this update: the rule of the call window and
/// the call log (A2). Admins get every call; an agent the calls that concern them (ringing
/// them, answered by them, their customer's) and those whose entity they may see at the
/// account's level. An update with no entity is seen only by those who see everything.
pub fn owner_sees(settings: AccessSettings, owner: &Viewer, update: &CallUpdate) -> bool {
    update.visible_to(settings, owner)
}

/// `X-Leadline-Signature`: `sha256=` and the hex HMAC-SHA256 of the body with the secret.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::crm::access::Level;
    use crate::crm::model::UserId;

    fn update(ringing: &[&str], answered_by: Option<&str>, entity_of: Option<&str>) -> CallUpdate {
        CallUpdate {
            event: "ringing".into(),
            call: Some("call-1".into()),
            call_id: "c1".into(),
            direction: "incoming".into(),
            customer: "+4917612345678".into(),
            number: "+4930901820".into(),
            entity: entity_of.map(|_| "lead:l1".to_owned()),
            name: None,
            responsible: entity_of.map(str::to_owned),
            ringing: ringing.iter().map(|s| (*s).to_owned()).collect(),
            answered_by: answered_by.map(str::to_owned),
            outcome: None,
            at: "2026-11-23T10:00:00Z".into(),
        }
    }

    fn agent(name: &str, mates: &[&str]) -> Viewer {
        let mut queue_mates: HashSet<UserId> = mates.iter().map(|m| UserId((*m).into())).collect();
        queue_mates.insert(UserId(name.into()));
        Viewer {
            user: Some(UserId(name.into())),
            admin: false,
            queue_mates,
        }
    }

    fn level(view: Level) -> AccessSettings {
        AccessSettings {
            agent_view: view,
            agent_edit: Level::Own,
        }
    }

    #[test]
    fn an_agent_owner_gets_the_calls_that_ring_them_or_that_they_answer() {
        let anna = agent("anna", &[]);
        let own = level(Level::Own);
        assert!(owner_sees(
            own,
            &anna,
            &update(&["anna"], None, Some("ben"))
        ));
        assert!(owner_sees(own, &anna, &update(&[], Some("anna"), None)));
        assert!(owner_sees(own, &anna, &update(&[], None, Some("anna"))));
    }

    #[test]
    fn at_own_an_agent_owner_gets_nothing_of_a_colleagues_call() {
        let anna = agent("anna", &["ben"]);
        let own = level(Level::Own);
        assert!(!owner_sees(
            own,
            &anna,
            &update(&["ben"], None, Some("ben"))
        ));
        assert!(!owner_sees(
            own,
            &anna,
            &update(&["ben"], Some("ben"), None)
        ));
    }

    #[test]
    fn wider_levels_reach_queue_mates_customers_then_every_call() {
        let anna = agent("anna", &["ben"]);
        let bens_customer = update(&["ben"], None, Some("ben"));
        let strangers_customer = update(&["carl"], None, Some("carl"));
        let no_entity = update(&["carl"], None, None);
        assert!(owner_sees(level(Level::Queue), &anna, &bens_customer));
        assert!(!owner_sees(level(Level::Queue), &anna, &strangers_customer));
        assert!(!owner_sees(level(Level::Queue), &anna, &no_entity));
        assert!(owner_sees(level(Level::All), &anna, &strangers_customer));
        assert!(owner_sees(level(Level::All), &anna, &no_entity));
    }

    #[test]
    fn an_admin_owner_gets_every_call() {
        let admin = Viewer {
            user: None,
            admin: true,
            queue_mates: HashSet::new(),
        };
        let own = level(Level::Own);
        assert!(owner_sees(
            own,
            &admin,
            &update(&["ben"], None, Some("ben"))
        ));
        assert!(owner_sees(own, &admin, &update(&[], None, None)));
    }

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_are_http_or_https_with_a_host_and_no_credentials() {
        assert!(parse_url("https://crm.example.com/hooks/leadline", false).is_ok());
        assert!(parse_url("http://127.0.0.1:8080/x", true).is_ok());
        for bad in [
            "ftp://example.com/x",
            "example.com/x",
            "https://user:pw@example.com/",
            "file:///etc/passwd",
            "",
        ] {
            let err = parse_url(bad, true).unwrap_err();
            assert_eq!(
                (err.code(), err.field()),
                ("invalid_url", "url".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn events_are_known_names_each_once() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parse_events(&names(&["call.ended", "call.ringing", "call.ended"])).unwrap(),
            names(&["call.ended", "call.ringing"])
        );
        assert_eq!(parse_events(&[]), Err(Error::NoEvents));
        let err = parse_events(&names(&["call.ringing", "call.exploded"])).unwrap_err();
        assert_eq!(err.field(), "events[1]");
        assert!(err.to_string().contains("activity.created"), "{err}");
        assert_eq!(
            parse_events(&names(&[
                "lead.created",
                "entity.updated",
                "email.ingested"
            ]))
            .unwrap(),
            names(&["lead.created", "entity.updated", "email.ingested"])
        );
    }

    #[test]
    fn a_missing_secret_is_generated_and_a_short_one_refused() {
        let generated = secret_or_generated(None).unwrap();
        assert!(generated.starts_with("whsec_") && generated.len() > 40);
        assert_ne!(generated, secret_or_generated(None).unwrap());
        assert_eq!(secret_or_generated(Some("short")), Err(Error::Secret));
        assert_eq!(
            secret_or_generated(Some("a-long-enough-secret")).unwrap(),
            "a-long-enough-secret"
        );
    }

    #[test]
    fn without_private_targets_a_webhook_cannot_call_inside() {
        for inside in [
            "http://127.0.0.1:8080/x",
            "http://10.1.2.3/x",
            "http://172.16.0.1/x",
            "http://192.168.1.1/x",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/x",
            "http://0.0.0.0/x",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://[fe80::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://localhost:8080/x",
            "http://api.localhost/x",
        ] {
            let err = parse_url(inside, false).unwrap_err();
            assert_eq!(err.code(), "invalid_url", "{inside}");
            assert!(
                parse_url(inside, true).is_ok(),
                "allowed by the operator: {inside}"
            );
        }
        for outside in [
            "https://8.8.8.8/x",
            "https://[2606:4700::1111]/x",
            "https://hooks.example.com/x",
        ] {
            assert!(parse_url(outside, false).is_ok(), "{outside}");
        }
    }
}
