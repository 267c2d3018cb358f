//! The IMAP adapter (`leadline::mail::imap`) against a real Dovecot 2.3
//! (`tests/common/dovecot.rs`): the `test` endpoint's three errors (E10), the folders a
//! mailbox defaults to (E4, E11), fetching without marking read (E2, E9), seen/deleted
//! sync (E9), UIDVALIDITY, the sync window (E3) and IDLE (E6).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{Days, Utc};
use leadline::mail::imap::{
    self, Body, CertificateDer, IdleOutcome, ImapError, ImapSession, ImapSettings, Security, Uid,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::dovecot::{DOMAIN, Dovecot, Options};
use crate::common::wait_until;

const USER: &str = "alice";

fn settings(dovecot: &Dovecot, security: Security) -> ImapSettings {
    let port = match security {
        Security::Tls => dovecot.imaps_port(),
        Security::StartTls | Security::None => dovecot.imap_port(),
    };
    let mut settings = ImapSettings::new("127.0.0.1", port, security, USER, dovecot.password(USER));
    settings.extra_roots = vec![CertificateDer::from(dovecot.ca_certificate_der())];
    settings
}

async fn session(dovecot: &Dovecot) -> ImapSession {
    imap::connect(&settings(dovecot, Security::StartTls))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", dovecot.log_text()))
}

fn message(n: usize) -> Vec<u8> {
    format!(
        "From: Customer {n} <customer{n}@example.com>\r\n\
         To: {USER}@{DOMAIN}\r\n\
         Subject: Request {n}\r\n\
         Message-ID: <request-{n}@example.com>\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         \r\n\
         Hello, please call me back about offer {n}.\r\n\
         .A line that starts with a dot.\r\n"
    )
    .into_bytes()
}

fn raw(body: &Body) -> &[u8] {
    match body {
        Body::Raw(raw) => raw,
        Body::TooLarge => panic!("expected a downloaded body"),
    }
}

/// All messages above `after`, in batches of `limit`, as the poller will read them.
async fn fetch_all(
    session: &mut ImapSession,
    after: Uid,
    limit: usize,
) -> Vec<leadline::mail::imap::Fetched> {
    let mut all = Vec::new();
    let mut last = after;
    loop {
        let batch = session.fetch_since(last, limit).await.expect("fetch_since");
        let Some(newest) = batch.last() else {
            return all;
        };
        assert!(batch.len() <= limit);
        last = newest.uid;
        all.extend(batch);
    }
}

#[tokio::test]
async fn e10_test_login_works_with_starttls_tls_and_plain_and_fetches_nothing() {
    let dovecot = Dovecot::start();
    dovecot.deliver(USER, &message(1)).await;
    for security in [Security::StartTls, Security::Tls, Security::None] {
        imap::test_login(&settings(&dovecot, security))
            .await
            .unwrap_or_else(|e| panic!("{security:?}: {e}\n{}", dovecot.log_text()));
    }
    // The certificate names localhost too.
    let mut by_name = settings(&dovecot, Security::Tls);
    by_name.host = "localhost".to_owned();
    imap::test_login(&by_name).await.expect("TLS to localhost");

    // E10: the tests selected nothing: the message is still \Recent for the first
    // session that does (RFC 3501 2.3.2).
    let mut session = session(&dovecot).await;
    session.select("INBOX").await.expect("SELECT");
    let fetched = session.fetch_since(Uid(0), 10).await.expect("fetch");
    assert!(
        fetched[0].flags.iter().any(|f| f == "\\Recent"),
        "{:?}",
        fetched[0].flags
    );
}

#[tokio::test]
async fn e10_wrong_password_is_login_failed() {
    let dovecot = Dovecot::start();
    let mut wrong = settings(&dovecot, Security::StartTls);
    wrong.password = "not-the-password".to_owned();
    let started = Instant::now();
    let error = imap::test_login(&wrong)
        .await
        .expect_err("a wrong password fails");
    assert_eq!(error.code(), "login_failed", "{error}");
    assert!(matches!(error, ImapError::LoginFailed { .. }));
    assert!(!error.to_string().contains("not-the-password"), "{error}");
    // Dovecot's auth_failure_delay (2 s) fits in the login deadline.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn e10_closed_port_is_connect_failed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    let settings = ImapSettings::new("127.0.0.1", port, Security::Tls, USER, "x");
    let error = imap::test_login(&settings)
        .await
        .expect_err("nothing listens");
    assert_eq!(error.code(), "connect_failed", "{error}");
}

#[tokio::test]
async fn e10_silent_server_is_connect_failed_within_the_deadline() {
    // Accepts TCP, never greets: the black hole a wrong port behind a firewall can be.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    for security in [Security::None, Security::StartTls] {
        let mut settings = ImapSettings::new("127.0.0.1", port, security, USER, "x");
        settings.timeouts.connect = Duration::from_millis(500);
        let started = Instant::now();
        let error = imap::test_login(&settings).await.expect_err("no greeting");
        assert_eq!(error.code(), "connect_failed", "{error}");
        assert!(error.to_string().contains("greeting"), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn e10_tls_to_a_plain_port_is_tls_failed() {
    let dovecot = Dovecot::start();
    let mut settings = settings(&dovecot, Security::Tls);
    settings.port = dovecot.imap_port();
    let error = imap::test_login(&settings).await.expect_err("plain port");
    assert_eq!(error.code(), "tls_failed", "{error}");
}

#[tokio::test]
async fn e10_untrusted_certificate_is_tls_failed() {
    let dovecot = Dovecot::start();
    for security in [Security::Tls, Security::StartTls] {
        let mut settings = settings(&dovecot, security);
        settings.extra_roots.clear();
        let error = imap::test_login(&settings).await.expect_err("unknown CA");
        assert_eq!(error.code(), "tls_failed", "{security:?}: {error}");
        assert!(error.to_string().contains("certificate"), "{error}");
    }
}

#[tokio::test]
async fn e10_server_without_starttls_is_tls_failed() {
    // A server that does not offer STARTTLS: the password is never sent in the clear.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let _server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"* OK [CAPABILITY IMAP4rev1 IDLE] no TLS here\r\n")
                .await;
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink).await;
            });
        }
    });
    let settings = ImapSettings::new("127.0.0.1", port, Security::StartTls, USER, "x");
    let error = imap::test_login(&settings).await.expect_err("no STARTTLS");
    assert_eq!(error.code(), "tls_failed", "{error}");
    assert!(error.to_string().contains("STARTTLS"), "{error}");
}

#[tokio::test]
async fn e4_e11_special_folders_by_special_use() {
    let dovecot = Dovecot::start();
    let mut session = session(&dovecot).await;
    let caps = session.capabilities().clone();
    assert!(
        caps.idle() && caps.special_use() && caps.uidplus(),
        "{caps:?}"
    );
    let folders = session.special_folders().await.expect("LIST");
    assert_eq!(folders.inbox, "INBOX");
    assert_eq!(folders.sent.as_deref(), Some("Sent"));
    assert_eq!(folders.junk.as_deref(), Some("Junk"));
    assert_eq!(folders.trash.as_deref(), Some("Trash"));
    session.logout().await.expect("logout");
}

#[tokio::test]
async fn e4_special_folders_by_name_without_special_use() {
    let dovecot = Dovecot::start_with(Options {
        special_use: false,
        ..Options::default()
    });
    let mut session = session(&dovecot).await;
    let folders = session.special_folders().await.expect("LIST");
    assert_eq!(folders.sent.as_deref(), Some("Sent Items"));
    assert_eq!(folders.junk.as_deref(), Some("Spam"));
    assert_eq!(folders.trash.as_deref(), Some("Deleted Items"));
}

#[tokio::test]
async fn e2_fetch_since_returns_delivered_mail_and_leaves_it_unseen() {
    let dovecot = Dovecot::start();
    for n in 1..=3 {
        dovecot.deliver(USER, &message(n)).await;
    }
    let mut session = session(&dovecot).await;
    let state = session.select("INBOX").await.expect("SELECT");
    assert_eq!(state.exists, 3);
    assert_eq!(state.uid_next, Some(Uid(4)));

    let fetched = session.fetch_since(Uid(0), 100).await.expect("fetch");
    let uids: Vec<u32> = fetched.iter().map(|f| f.uid.0).collect();
    assert_eq!(uids, [1, 2, 3]);
    for (n, mail) in (1..).zip(&fetched) {
        let text = String::from_utf8_lossy(raw(&mail.body)).into_owned();
        assert!(
            text.contains(&format!("Subject: Request {n}\r\n")),
            "{text}"
        );
        // LMTP adds the delivery headers; the dot-stuffed line arrives unstuffed.
        assert!(
            text.contains(&format!("Delivered-To: {USER}@{DOMAIN}")),
            "{text}"
        );
        assert!(
            text.contains("\r\n.A line that starts with a dot.\r\n"),
            "{text}"
        );
        assert_eq!(mail.size as usize, raw(&mail.body).len());
        assert!(!mail.seen, "{:?}", mail.flags);
        let received = mail.internal_date.expect("INTERNALDATE");
        assert!(
            (Utc::now() - received).num_minutes().abs() < 5,
            "{received}"
        );
    }

    // `4:*` also names UID 3 (RFC 3501 6.4.8): nothing new means nothing returned.
    assert!(
        session
            .fetch_since(Uid(3), 100)
            .await
            .expect("fetch")
            .is_empty()
    );
    assert!(
        session
            .fetch_since(Uid(u32::MAX), 100)
            .await
            .expect("fetch")
            .is_empty()
    );
    assert_eq!(
        session.fetch_since(Uid(1), 1).await.expect("fetch")[0].uid,
        Uid(2)
    );

    // E9: BODY.PEEK left every message unseen, for us and for another client.
    let flags = session.flags_of_all().await.expect("flags");
    assert!(flags.iter().all(|f| !f.seen && !f.deleted), "{flags:?}");
    let seen_by_doveadm = dovecot.flags(USER, "INBOX");
    assert_eq!(seen_by_doveadm.len(), 3, "{seen_by_doveadm:?}");
    assert!(seen_by_doveadm.iter().all(|(_, f)| !f.contains("\\Seen")));
}

#[tokio::test]
async fn e2_batches_respect_limit_and_byte_budget_in_uid_order() {
    let dovecot = Dovecot::start();
    let messages: Vec<Vec<u8>> = (1..=40).map(message).collect();
    dovecot.seed_maildir(USER, "Sent", &messages);
    let mut settings = settings(&dovecot, Security::StartTls);
    // About three messages per batch.
    settings.limits.max_batch_bytes = 3 * messages[0].len() as u64 + 10;
    let mut session = imap::connect(&settings).await.expect("connect");
    session.select("Sent").await.expect("SELECT Sent");

    let all = fetch_all(&mut session, Uid(0), 7).await;
    let uids: Vec<u32> = all.iter().map(|f| f.uid.0).collect();
    assert_eq!(uids, (1..=40).collect::<Vec<_>>());
    let mut subjects: Vec<String> = all
        .iter()
        .map(|f| {
            let text = String::from_utf8_lossy(raw(&f.body)).into_owned();
            let start = text.find("Subject: ").expect("subject") + 9;
            text[start..].lines().next().unwrap_or_default().to_owned()
        })
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 40);
}

#[tokio::test]
async fn e2_mail_arriving_or_expunged_during_a_pass_is_handled() {
    let dovecot = Dovecot::start();
    let messages: Vec<Vec<u8>> = (1..=10).map(message).collect();
    dovecot.seed_maildir(USER, "INBOX", &messages);
    let mut session = session(&dovecot).await;
    session.select("INBOX").await.expect("SELECT");
    let first = session.fetch_since(Uid(0), 3).await.expect("fetch");
    assert_eq!(first.len(), 3);

    // Mid-pass: one message expunged ahead of us, one new one delivered.
    dovecot.expunge(USER, "INBOX", 5);
    dovecot.deliver(USER, &message(11)).await;
    let rest = fetch_all(&mut session, first[2].uid, 3).await;
    let uids: Vec<u32> = rest.iter().map(|f| f.uid.0).collect();
    assert_eq!(uids, [4, 6, 7, 8, 9, 10, 11]);
}

#[tokio::test]
async fn e2_oversized_message_is_reported_not_downloaded() {
    let dovecot = Dovecot::start();
    let mut big = message(1);
    big.extend(std::iter::repeat_n(b'x', 20_000));
    big.extend_from_slice(b"\r\n");
    dovecot.deliver(USER, &big).await;
    dovecot.deliver(USER, &message(2)).await;
    let mut settings = settings(&dovecot, Security::StartTls);
    settings.limits.max_message_bytes = 10_000;
    let mut session = imap::connect(&settings).await.expect("connect");
    session.select("INBOX").await.expect("SELECT");

    let fetched = session.fetch_since(Uid(0), 10).await.expect("fetch");
    assert_eq!(fetched.len(), 2);
    assert_eq!(fetched[0].body, Body::TooLarge);
    assert!(fetched[0].size > 20_000);
    assert!(raw(&fetched[1].body).starts_with(b"Return-Path"));
    // Not downloaded: Dovecot sent one body only.
    session.logout().await.expect("logout");
    wait_until(Duration::from_secs(10), "Dovecot's logout line", || async {
        dovecot.log_text().contains("body_count=1 ").then_some(())
    })
    .await;
}

#[tokio::test]
async fn e9_set_seen_both_ways_is_visible_to_another_client() {
    let dovecot = Dovecot::start();
    for n in 1..=3 {
        dovecot.deliver(USER, &message(n)).await;
    }
    let mut ours = session(&dovecot).await;
    ours.select("INBOX").await.expect("SELECT");
    ours.set_seen(&[Uid(1), Uid(3)], true)
        .await
        .expect("STORE +");

    let mut other = session(&dovecot).await;
    other.select("INBOX").await.expect("SELECT");
    let seen: Vec<(u32, bool)> = other
        .flags_of_all()
        .await
        .expect("flags")
        .iter()
        .map(|f| (f.uid.0, f.seen))
        .collect();
    assert_eq!(seen, [(1, true), (2, false), (3, true)]);

    ours.set_seen(&[Uid(3)], false).await.expect("STORE -");
    let seen: Vec<(u32, bool)> = other
        .flags_of_all()
        .await
        .expect("flags")
        .iter()
        .map(|f| (f.uid.0, f.seen))
        .collect();
    assert_eq!(seen, [(1, true), (2, false), (3, false)]);
    // Storing on a UID that does not exist is not an error.
    ours.set_seen(&[Uid(99)], true)
        .await
        .expect("STORE on nothing");
}

#[tokio::test]
async fn e9_flags_of_all_reflects_expunge_deleted_and_seen_by_others() {
    let dovecot = Dovecot::start();
    for n in 1..=4 {
        dovecot.deliver(USER, &message(n)).await;
    }
    let mut session = session(&dovecot).await;
    session.select("INBOX").await.expect("SELECT");
    assert_eq!(session.flags_of_all().await.expect("flags").len(), 4);

    dovecot.expunge(USER, "INBOX", 2);
    dovecot.add_flag(USER, "INBOX", 3, "\\Deleted");
    dovecot.add_flag(USER, "INBOX", 4, "\\Seen");
    let flags = session.flags_of_all().await.expect("flags");
    let summary: Vec<(u32, bool, bool)> =
        flags.iter().map(|f| (f.uid.0, f.seen, f.deleted)).collect();
    assert_eq!(
        summary,
        [(1, false, false), (3, false, true), (4, true, false)]
    );

    // An empty folder answers with no messages, not an error.
    session.select("Trash").await.expect("SELECT Trash");
    assert!(session.flags_of_all().await.expect("flags").is_empty());
    assert!(
        session
            .fetch_since(Uid(0), 10)
            .await
            .expect("fetch")
            .is_empty()
    );
}

#[tokio::test]
async fn e2_uidvalidity_changes_when_the_folder_is_recreated() {
    let dovecot = Dovecot::start();
    dovecot.create_folder(USER, "Projects");
    dovecot.save(USER, "Projects", &message(1));
    let mut session = session(&dovecot).await;
    let before = session.select("Projects").await.expect("SELECT");
    assert_eq!(before.exists, 1);

    dovecot.recreate_folder(USER, "Projects");
    dovecot.save(USER, "Projects", &message(2));
    let after = session.select("Projects").await.expect("SELECT again");
    assert_ne!(after.uid_validity, before.uid_validity);
    let fetched = session.fetch_since(Uid(0), 10).await.expect("fetch");
    assert_eq!(fetched.len(), 1);
    assert!(String::from_utf8_lossy(raw(&fetched[0].body)).contains("Request 2"));

    // A folder that does not exist is a refusal the session survives.
    let error = session.select("No such folder").await.expect_err("missing");
    assert_eq!(error.code(), "command_refused", "{error}");
    session.select("INBOX").await.expect("still usable");
}

#[tokio::test]
async fn e3_search_since_gives_the_sync_window() {
    let dovecot = Dovecot::start();
    let old = SystemTime::now() - Duration::from_secs(10 * 24 * 3600);
    dovecot.seed_maildir_at(USER, "INBOX", &[message(1), message(2)], old);
    dovecot.deliver(USER, &message(3)).await;
    let mut session = session(&dovecot).await;
    session.select("INBOX").await.expect("SELECT");

    let today = Utc::now().date_naive();
    let window = session
        .search_since(today - Days::new(3))
        .await
        .expect("SEARCH");
    assert_eq!(window.len(), 1, "{window:?}");
    let all = session
        .search_since(today - Days::new(30))
        .await
        .expect("SEARCH");
    assert_eq!(all.len(), 3, "{all:?}");
    let fetched = session.fetch_uids(&window).await.expect("fetch window");
    assert_eq!(fetched.len(), 1);
    assert!(String::from_utf8_lossy(raw(&fetched[0].body)).contains("Subject: Request 3\r\n"));
    let received = fetched[0].internal_date.expect("INTERNALDATE");
    assert_eq!(received.date_naive(), today);
}

#[tokio::test]
async fn e6_idle_wakes_within_2s_of_an_lmtp_delivery() {
    let dovecot = Dovecot::start();
    let mut session = session(&dovecot).await;
    session.select("INBOX").await.expect("SELECT");

    let delivering = async {
        // Let IDLE start first; the delivery would be seen either way, this only makes
        // the measurement the IDLE path.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = Instant::now();
        dovecot.deliver(USER, &message(1)).await;
        sent
    };
    let waiting = async {
        let outcome = session.idle_wait(Duration::from_secs(20)).await;
        (outcome, Instant::now())
    };
    let (sent, (outcome, woke)) = tokio::join!(delivering, waiting);
    assert_eq!(outcome.expect("IDLE"), IdleOutcome::NewData);
    let latency = woke.saturating_duration_since(sent);
    eprintln!("IDLE woke {latency:?} after the LMTP delivery started");
    assert!(latency < Duration::from_secs(2), "{latency:?}");

    // The session is usable right after IDLE and sees the new mail.
    let fetched = session.fetch_since(Uid(0), 10).await.expect("fetch");
    assert_eq!(fetched.len(), 1);
}

#[tokio::test]
async fn e6_idle_wait_times_out_cleanly() {
    let dovecot = Dovecot::start();
    let mut session = session(&dovecot).await;
    session.select("INBOX").await.expect("SELECT");
    let started = Instant::now();
    let outcome = session
        .idle_wait(Duration::from_millis(700))
        .await
        .expect("IDLE");
    assert_eq!(outcome, IdleOutcome::Timeout);
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    session.select("INBOX").await.expect("usable after IDLE");
    session.logout().await.expect("logout");
}

#[tokio::test]
async fn e6_idle_is_reissued_and_can_be_abandoned() {
    let dovecot = Dovecot::start();
    let mut settings = settings(&dovecot, Security::Tls);
    settings.timeouts.idle_renew = Duration::from_millis(300);
    let mut session = imap::connect(&settings).await.expect("connect");
    session.select("INBOX").await.expect("SELECT");

    // Several IDLE rounds, each ended with DONE, then a clean timeout.
    let outcome = session
        .idle_wait(Duration::from_millis(1_100))
        .await
        .expect("IDLE");
    assert_eq!(outcome, IdleOutcome::Timeout);

    // Abandon an IDLE midway (a shutdown signal in `select!`): the session recovers.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        session.idle_wait(Duration::from_secs(60)),
    )
    .await;
    assert!(abandoned.is_err(), "IDLE should still be waiting");
    dovecot.deliver(USER, &message(1)).await;
    let fetched = session
        .fetch_since(Uid(0), 10)
        .await
        .expect("fetch after abandon");
    assert_eq!(fetched.len(), 1);

    // A renewed IDLE still notices mail.
    let delivering = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        dovecot.deliver(USER, &message(2)).await;
    };
    let (outcome, ()) = tokio::join!(session.idle_wait(Duration::from_secs(20)), delivering);
    assert_eq!(outcome.expect("IDLE"), IdleOutcome::NewData);
}

/// A scripted server that answers just enough for LOGIN, SELECT, IDLE/DONE and LOGOUT,
/// and records every line it gets: what Dovecot cannot show us, the IDLE rhythm.
async fn scripted_idle_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (read, mut write) = stream.into_split();
        let mut lines = tokio::io::BufReader::new(read).lines();
        let _ = write
            .write_all(b"* OK [CAPABILITY IMAP4rev1 IDLE] scripted\r\n")
            .await;
        let mut idling = None;
        while let Ok(Some(line)) = lines.next_line().await {
            log.lock().expect("lock").push(line.clone());
            let reply = if line == "DONE" {
                format!(
                    "{} OK Idle completed\r\n",
                    idling.take().unwrap_or_default()
                )
            } else {
                let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                match rest.split(' ').next().unwrap_or("") {
                    "LOGIN" => format!("{tag} OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"),
                    "SELECT" => format!(
                        "* 0 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 1] ok\r\n\
                         {tag} OK [READ-WRITE] Select completed\r\n"
                    ),
                    "IDLE" => {
                        idling = Some(tag.to_owned());
                        "+ idling\r\n".to_owned()
                    }
                    "LOGOUT" => format!("* BYE bye\r\n{tag} OK Logout completed\r\n"),
                    _ => format!("{tag} BAD not scripted\r\n"),
                }
            };
            if write.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    (port, received)
}

#[tokio::test]
async fn e6_idle_is_ended_and_reissued_every_idle_renew() {
    let (port, received) = scripted_idle_server().await;
    let mut settings = ImapSettings::new("127.0.0.1", port, Security::None, USER, "x");
    // RFC 2177: at least every 29 minutes; here every 200 ms.
    settings.timeouts.idle_renew = Duration::from_millis(200);
    let mut session = imap::connect(&settings).await.expect("connect");
    session.select("INBOX").await.expect("SELECT");
    let outcome = session
        .idle_wait(Duration::from_millis(1_000))
        .await
        .expect("IDLE");
    assert_eq!(outcome, IdleOutcome::Timeout);
    session.logout().await.expect("logout");

    let lines = received.lock().expect("lock").clone();
    let verbs: Vec<&str> = lines
        .iter()
        .map(|l| {
            if l == "DONE" {
                "DONE"
            } else {
                l.split(' ').nth(1).unwrap_or("")
            }
        })
        .collect();
    let idles = verbs.iter().filter(|v| **v == "IDLE").count();
    assert!((4..=6).contains(&idles), "{verbs:?}");
    let mut expected = vec!["LOGIN", "SELECT"];
    expected.extend(std::iter::repeat_n(["IDLE", "DONE"], idles).flatten());
    expected.push("LOGOUT");
    assert_eq!(verbs, expected);
}

#[tokio::test]
async fn e6_change_reported_during_a_command_wakes_idle_at_once() {
    let dovecot = Dovecot::start();
    let mut session = session(&dovecot).await;
    session.select("INBOX").await.expect("SELECT");
    dovecot.deliver(USER, &message(1)).await;
    // The next command's answer carries `* 1 EXISTS`; IDLE must not wait for another.
    session.flags_of_all().await.expect("flags");
    let started = Instant::now();
    let outcome = session
        .idle_wait(Duration::from_secs(20))
        .await
        .expect("IDLE");
    assert_eq!(outcome, IdleOutcome::NewData);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // Once reported, it is not reported again.
    let outcome = session
        .idle_wait(Duration::from_millis(700))
        .await
        .expect("IDLE");
    assert_eq!(outcome, IdleOutcome::Timeout);
}

#[tokio::test]
async fn dovecot_harness_removes_its_directory_after_drop() {
    let dovecot = Dovecot::start();
    let dir = dovecot.dir().to_path_buf();
    assert!(dir.join("dovecot.conf").exists());
    drop(dovecot);
    wait_until(
        Duration::from_secs(30),
        "the Dovecot directory to go",
        || async { (!dir.exists()).then_some(()) },
    )
    .await;
}
