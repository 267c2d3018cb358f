//! Integration tests: the real application on port 0 with a temp database, over HTTP.
//! One test binary (modules below) so the crate links once.

mod access;
mod audit;
mod audit_in_tx;
mod backup_restore;
mod baresip;
mod browser_harness;
mod call_setup;
mod calls_sip;
mod cluster_events;
mod cluster_front;
mod cluster_keepalive;
mod cluster_leases;
mod cluster_load;
mod cluster_lost;
mod cluster_outage;
mod cluster_wal;
#[path = "../common/mod.rs"]
mod common;
mod console_admin;
mod console_agent;
mod console_api;
mod console_browser;
mod console_stats;
mod decisions;
mod dial;
mod forward_redirect;
mod helpers;
mod http_contract;
mod https;
mod imap;
mod import;
mod mail;
mod mail_condstore;
mod mailbox_dry_run;
mod media;
mod migration_checksums;
mod node_process;
mod oauth2;
mod postgres;
mod presence;
mod privacy;
mod queueing;
mod replay_webhooks;
mod scenarios;
mod session;
mod sip;
mod sip_answers;
mod sip_carrier;
mod sip_digest;
mod sip_overload;
mod sip_scan;
mod sip_tls;
mod sip_tls_trunk;
mod srtp;
mod stages;
mod stats_queue;
mod store;
mod trust;
mod trust_voicemail;
mod webhooks;
mod webhooks_records;

use helpers::TestApp;

macro_rules! on_sqlite {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let app = TestApp::spawn().await;
            scenarios::$name(&app).await;
            app.stop().await;
        }
    )*};
}

mod sqlite {
    use super::*;

    on_sqlite!(
        t1_new_caller_creates_one_lead_then_is_matched,
        t3_simple_mode_creates_contact_and_deal,
        t6_exception_number_is_logged_only,
        repeated_event_creates_nothing_new,
        t13_call_lifecycle_and_missed_call,
        t4_manual_mode_creates_on_request,
        concurrent_steps_of_one_call_log_it_once,
        t10_transfer_changes_responsible_when_enabled,
        missed_call_back_closes_when_the_customer_is_reached,
    );
}
