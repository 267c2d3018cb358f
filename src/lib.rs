//! Leadline: a telephony-first gateway that turns phone calls and e-mails into CRM records.
//!
//! The pure core (`crm`, `matcher`, SIP message rules) decides; the adapters (`store`,
//! `http`, later SIP transports and mail) carry data in and out. `App::start` wires the
//! adapters for one process.

pub mod app;
pub mod backup;
pub mod cluster;
pub mod config;
pub mod console;
pub mod crm;
pub mod events;
pub mod http;
pub mod mail;
pub mod matcher;
pub mod media;
pub mod session;
pub mod sip;
pub mod store;
pub mod tls;
pub mod webhooks;

pub use app::{App, StartError};
pub use config::Config;
