//! Leadline: a telephony-first gateway that turns phone calls and e-mails into CRM records.

pub mod crm;
pub mod matcher;
