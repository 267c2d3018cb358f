//! The matcher (M1-M8), shared by calls and e-mail.
//!
//! It owns three decisions: how a phone number or an e-mail address becomes the key the CRM
//! compares ([`normalise_phone`], [`parse_email`] → [`Identifier`]); whether that identifier
//! is excluded by the exceptions list or because it is an employee's ([`Exclusions`]); and
//! which known entities it belongs to, in what order ([`rank`], [`resolve`]).
//!
//! It is pure: no I/O, no database, no clock. The store finds the candidates by
//! [`Identifier::key`] and loads the exclusions; the intake acts on the [`MatchOutcome`].
//! Creating entities and keeping them unique (M7) is not done here. [`search`] reads the
//! entity lists' search box the same way (a number in any spelling, M2).

mod country;
mod email;
mod exception;
mod exclusions;
mod identifier;
mod phone;
mod rank;
mod resolve;
mod search;

pub use country::{Country, UnknownCountry};
pub use email::{
    Domain, DomainError, EmailAddress, EmailError, Mailbox, parse_email, parse_mailbox,
};
pub use exception::{ExceptionError, ExceptionRule, parse_exception};
pub use exclusions::{Exclusion, ExclusionReason, Exclusions};
pub use identifier::{Identifier, IdentifierKind};
pub use phone::{PhoneError, PhoneKey, normalise_phone};
pub use rank::{Candidate, rank};
pub use resolve::{MatchOutcome, MatchStatus, resolve};
pub use search::{MIN_SEARCH_DIGITS, Search, looks_like_phone, search};
