//! The pure CRM domain: vocabulary, intake decisions and queue rotation. No I/O here.

pub mod access;
pub mod decision;
pub mod dial;
pub mod dry_run;
pub mod hours;
pub mod import;
pub mod intake;
pub mod mail;
pub mod mail_dry_run;
pub mod mail_flags;
pub mod model;
pub mod privacy;
pub mod queue;
pub mod queueing;
pub mod stats;
pub mod trust;
