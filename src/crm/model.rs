//! Domain vocabulary of the CRM: ids, entity kinds and the enums every layer shares.
//!
//! Everything here is a plain value: no I/O, no database types. Enums that are stored or
//! sent over the API have one spelling, given by `as_str`/`FromStr` and serde's
//! `snake_case`, so the database, the API and the docs use the same words.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::matcher::Country;

/// Declares a string id newtype. Ids are UUID v7 text (time-ordered, so inserts append to
/// B-tree indexes instead of scattering).
macro_rules! string_id {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7().to_string())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }
    )*};
}

string_id!(
    UserId,
    QueueId,
    TrunkId,
    NumberId,
    PipelineId,
    StageId,
    ContactId,
    CompanyId,
    LeadId,
    DealId,
    ActivityId,
    CallRecordId,
    ExceptionId,
    TokenId,
    /// An entry of the audit log.
    AuditId,
    WebhookId,
);

/// Declares a closed set of names with one spelling for database, API and docs.
macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            /// The accepted spellings, for error messages.
            pub fn choices() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(UnknownName {
                        what: stringify!($name),
                        value: other.to_owned(),
                        choices: Self::choices(),
                    }),
                }
            }
        }
    };
}

/// A stored or submitted name that is not one of the enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a valid {what}; use one of: {choices}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
    pub choices: String,
}

named_enum!(
    /// What an employee may do (A1).
    Role { Admin => "admin", Agent => "agent" }
);
named_enum!(
    /// T3: account-wide CRM mode.
    CrmMode { Classic => "classic", Simple => "simple" }
);
named_enum!(
    /// T3: what simple mode creates for a new customer besides the deal.
    SimpleCreates { Contact => "contact", Company => "company" }
);
named_enum!(
    /// T4: per number, whether a new caller becomes an entity on its own.
    LeadCreation { Automatic => "automatic", Manual => "manual", Off => "off" }
);
named_enum!(
    /// T7: per number, which call directions create entities.
    Directions { Incoming => "incoming", Outgoing => "outgoing", Both => "both" }
);
named_enum!(
    /// Direction of one call or e-mail, seen from the company.
    Direction { Incoming => "incoming", Outgoing => "outgoing" }
);
named_enum!(
    /// T13: how a call ended.
    CallOutcome {
        Answered => "answered",
        Missed => "missed",
        Busy => "busy",
        Failed => "failed",
        Cancelled => "cancelled",
        Abandoned => "abandoned",
    }
);
named_enum!(
    /// Whether an employee takes queue calls now: a registered phone is not the same as
    /// an available agent.
    Presence { Available => "available", Paused => "paused", Offline => "offline" }
);
named_enum!(
    /// Who of a queue's free agents is offered a call: the rotation (T9), all at once,
    /// or the one idle the longest.
    QueueStrategy { InTurn => "in_turn", RingAll => "ring_all", LongestIdle => "longest_idle" }
);
named_enum!(
    /// What happens to a caller who waited a queue's `max_wait_s`.
    OverflowAction { Voicemail => "voicemail", Forward => "forward", Reject => "reject" }
);
named_enum!(
    /// Life of a lead: converted leads keep their history, junk ones are closed.
    LeadStatus { New => "new", Converted => "converted", Junk => "junk" }
);
named_enum!(
    /// Life of a deal; a deal is "open" until won or lost.
    DealStatus { Open => "open", Won => "won", Lost => "lost" }
);
named_enum!(
    /// The four CRM entity kinds; the order of declaration is M8's ranking.
    EntityKind { Contact => "contact", Company => "company", Lead => "lead", Deal => "deal" }
);
named_enum!(
    /// T2: a carrier trunk we register out to, or a customer PBX that reaches us.
    TrunkKind { Carrier => "carrier", Pbx => "pbx" }
);
named_enum!(
    /// SIP transport of a trunk: `tls` is SIP over TLS (RFC 3261 §26), to carriers only
    /// over a connection the gateway opens and verifies.
    Transport { Udp => "udp", Tcp => "tcp", Tls => "tls" }
);

impl Transport {
    /// The port a trunk uses when none is given (RFC 3261 §19.1.2: 5061 for TLS).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 5060,
            Transport::Tls => 5061,
        }
    }
}
named_enum!(
    /// Where our outbound REGISTER to a carrier trunk stands (T2: rented numbers arrive
    /// only while it is registered).
    TrunkRegistrationState {
        Registering => "registering",
        Registered => "registered",
        Failed => "failed",
        Unregistered => "unregistered",
    }
);
named_enum!(
    /// The steps of a call that a PBX (or our own B2BUA) reports.
    CallEventKind { Ringing => "ringing", Answered => "answered", Ended => "ended" }
);
named_enum!(
    /// What an activity records.
    ActivityKind { Call => "call", Email => "email" }
);
named_enum!(
    /// E1: an employee's own mailbox, or one the company connects.
    MailboxKind { Personal => "personal", Company => "company" }
);
named_enum!(
    /// How the IMAP connection is protected.
    MailSecurity { Tls => "tls", Starttls => "starttls", None => "none" }
);
named_enum!(
    /// How a mailbox logs in: IMAP LOGIN with a password, or an OAuth2 access token
    /// (servers such as Microsoft 365 and Gmail that no longer take passwords).
    MailAuth { Password => "password", Oauth2 => "oauth2" }
);
named_enum!(
    /// An OAuth2 provider whose endpoints and scope a mailbox need not spell out.
    OAuth2Provider { Microsoft => "microsoft", Google => "google" }
);
named_enum!(
    /// E6: how often a mailbox is checked; `idle` keeps an IMAP IDLE connection open.
    MailCheck {
        Idle => "idle",
        M2 => "2m",
        M5 => "5m",
        M10 => "10m",
        H1 => "1h",
        H3 => "3h",
        H12 => "12h",
    }
);

impl MailCheck {
    /// The polling interval; for `idle`, how long one IDLE lasts before it is renewed
    /// (RFC 2177 asks for less than 30 minutes).
    pub fn interval(self) -> std::time::Duration {
        let minutes = match self {
            MailCheck::Idle => 25,
            MailCheck::M2 => 2,
            MailCheck::M5 => 5,
            MailCheck::M10 => 10,
            MailCheck::H1 => 60,
            MailCheck::H3 => 180,
            MailCheck::H12 => 720,
        };
        std::time::Duration::from_secs(minutes * 60)
    }
}

named_enum!(
    /// What the intake did with a call, kept on the call log row.
    CrmAction {
        Created => "created",
        Attached => "attached",
        Offered => "offered",
        Logged => "logged",
    }
);

impl Directions {
    /// T7: does this setting cover a call in `direction`?
    pub fn covers(self, direction: Direction) -> bool {
        matches!(
            (self, direction),
            (Directions::Both, _)
                | (Directions::Incoming, Direction::Incoming)
                | (Directions::Outgoing, Direction::Outgoing)
        )
    }
}

impl EntityKind {
    /// M8: contact before company before lead (deals are not matched directly).
    pub fn rank(self) -> u8 {
        match self {
            EntityKind::Contact => 0,
            EntityKind::Company => 1,
            EntityKind::Lead => 2,
            EntityKind::Deal => 3,
        }
    }
}

/// A reference to one entity, written `kind:id` in the API (`lead:0190…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityRef {
    pub kind: EntityKind,
    pub id: String,
}

impl EntityRef {
    pub fn new(kind: EntityKind, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
        }
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

/// `kind:id` that does not name an entity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not an entity reference; write it as contact:<id>, company:<id>, lead:<id> or deal:<id>"
)]
pub struct BadEntityRef(pub String);

impl FromStr for EntityRef {
    type Err = BadEntityRef;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, id) = s
            .split_once(':')
            .ok_or_else(|| BadEntityRef(s.to_owned()))?;
        let kind = kind.parse().map_err(|_| BadEntityRef(s.to_owned()))?;
        if id.is_empty() {
            return Err(BadEntityRef(s.to_owned()));
        }
        Ok(Self::new(kind, id))
    }
}

impl Serialize for EntityRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EntityRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The account-wide CRM settings (T3, T12, E14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CrmSettings {
    pub mode: CrmMode,
    pub simple_creates: SimpleCreates,
    /// Pipeline for deals created from calls and e-mail; `None` = the default pipeline.
    pub deal_pipeline: Option<PipelineId>,
    pub repeat_mode: bool,
    /// Country for phone numbers written in national form where no number gives one
    /// (employees' phones, exceptions, manually entered contacts).
    pub default_country: Country,
}

impl Default for CrmSettings {
    fn default() -> Self {
        Self {
            mode: CrmMode::Classic,
            simple_creates: SimpleCreates::Contact,
            deal_pipeline: None,
            repeat_mode: false,
            // The product started from German help pages; admins change it in /settings/crm.
            default_country: "DE".parse().expect("the phone metadata knows DE"),
        }
    }
}

/// The built-in source of entities created from calls (T8).
pub const SOURCE_CALL: &str = "CALL";
/// The built-in source of entities created from e-mail.
pub const SOURCE_EMAIL: &str = "EMAIL";

/// Milliseconds since the Unix epoch, UTC: how times are stored and passed to the core.
pub type Millis = i64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_ref_round_trips_through_text() {
        let r: EntityRef = "lead:0190abc".parse().unwrap();
        assert_eq!(r, EntityRef::new(EntityKind::Lead, "0190abc"));
        assert_eq!(r.to_string(), "lead:0190abc");
        assert!("person:1".parse::<EntityRef>().is_err());
        assert!("lead:".parse::<EntityRef>().is_err());
        assert!("lead".parse::<EntityRef>().is_err());
    }

    #[test]
    fn unknown_name_lists_the_choices() {
        let err = "sometimes".parse::<LeadCreation>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "'sometimes' is not a valid LeadCreation; use one of: automatic, manual, off"
        );
    }

    #[test]
    fn a_tls_trunk_defaults_to_port_5061_and_is_spelt_tls() {
        assert_eq!("tls".parse::<Transport>().unwrap(), Transport::Tls);
        assert_eq!(Transport::Tls.default_port(), 5061);
        assert_eq!(Transport::Udp.default_port(), 5060);
        assert_eq!(Transport::Tcp.default_port(), 5060);
    }

    #[test]
    fn t7_directions_cover() {
        assert!(Directions::Both.covers(Direction::Outgoing));
        assert!(Directions::Incoming.covers(Direction::Incoming));
        assert!(!Directions::Incoming.covers(Direction::Outgoing));
        assert!(!Directions::Outgoing.covers(Direction::Incoming));
    }
}
