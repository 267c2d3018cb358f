//! E9 (seen and deleted, both ways) on the incremental path: with RFC 7162 the poller's
//! flag pass reads only what changed since the last HIGHESTMODSEQ — with QRESYNC (the
//! server lists expunged UIDs), with CONDSTORE alone (deletions found by position) — and
//! without either every message's flags, as before. A real Dovecot (its announced
//! capabilities cut down with `imap_capability`), the gateway's poller connected through
//! a loopback proxy that counts the server's `* n FETCH` responses per command, and a
//! second IMAP client that changes flags with `UID STORE`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use leadline::mail::imap::{self, Body, ImapSession, ImapSettings, Security, Uid};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::common::dovecot::{DOMAIN, Dovecot, Options};
use crate::common::wait_until;
use crate::helpers::TestApp;

const USER: &str = "alice";
/// Messages received within the sync window: the ones the CRM holds.
const RECENT: usize = 12;
/// Long enough for a pass over 10,000 messages' flags on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);
/// What Dovecot announces without RFC 7162, and with CONDSTORE but not QRESYNC.
const WITHOUT_CONDSTORE: &str =
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ UIDPLUS SPECIAL-USE";
const CONDSTORE_ONLY: &str =
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ UIDPLUS SPECIAL-USE CONDSTORE";

fn message(n: usize) -> Vec<u8> {
    format!(
        "From: Kunde {n} <kunde{n}@example.org>\r\nTo: <{USER}@{DOMAIN}>\r\n\
         Subject: Anfrage {n}\r\nMessage-ID: <cs-{n}@example.org>\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nBitte um Rueckruf.\r\n"
    )
    .into_bytes()
}

/// One client command as the proxy saw it, and the server's `* n FETCH` responses to it.
#[derive(Clone, Debug)]
struct Command {
    line: String,
    fetches: usize,
    done: bool,
}

impl Command {
    /// A read of flags only: the E9 pass (`1:*` or `CHANGEDSINCE`), not a fetch of new
    /// mail (which asks for INTERNALDATE or the body).
    fn reads_flags(&self) -> bool {
        let line = self.line.to_ascii_uppercase();
        line.contains("UID FETCH")
            && line.contains("FLAGS")
            && !line.contains("INTERNALDATE")
            && !line.contains("BODY")
    }
}

/// A loopback proxy in front of Dovecot's IMAP port that logs every client command with
/// the number of untagged FETCH responses the server sent while it ran (literals are
/// skipped, so a message body cannot look like a response).
struct FetchCounter {
    port: u16,
    log: Arc<Mutex<Vec<Command>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FetchCounter {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FetchCounter {
    async fn start(upstream: u16) -> FetchCounter {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let log: Arc<Mutex<Vec<Command>>> = Arc::default();
        let shared = log.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, shared.clone()));
            }
        });
        FetchCounter { port, log, accept }
    }

    fn commands(&self) -> Vec<Command> {
        self.log.lock().unwrap().clone()
    }

    /// The flag reads (finished ones) after the first `from` commands.
    fn flag_reads_since(&self, from: usize) -> Vec<Command> {
        self.commands()
            .into_iter()
            .skip(from)
            .filter(|c| c.reads_flags() && c.done)
            .collect()
    }
}

async fn relay(client: TcpStream, server: TcpStream, log: Arc<Mutex<Vec<Command>>>) {
    let (client_read, mut client_write) = client.into_split();
    let (server_read, mut server_write) = server.into_split();
    // The command in progress on this connection: (index in the log, tag).
    let current: Arc<Mutex<Option<(usize, String)>>> = Arc::default();
    let to_server = {
        let (log, current) = (log.clone(), current.clone());
        async move {
            let mut reader = BufReader::new(client_read);
            let mut line = Vec::new();
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                // Recorded before it is forwarded: the answer cannot come earlier.
                if let Some((tag, _)) = text.split_once(' ')
                    && !text.eq_ignore_ascii_case("DONE")
                {
                    let mut log = log.lock().unwrap();
                    log.push(Command {
                        line: text.clone(),
                        fetches: 0,
                        done: false,
                    });
                    *current.lock().unwrap() = Some((log.len() - 1, tag.to_owned()));
                }
                if server_write.write_all(&line).await.is_err() {
                    return;
                }
            }
        }
    };
    let to_client = async move {
        let mut reader = BufReader::new(server_read);
        loop {
            let Some(response) = read_response(&mut reader).await else {
                return;
            };
            {
                let head = String::from_utf8_lossy(&response[..response.len().min(200)]);
                let words: Vec<&str> = head.split_whitespace().take(3).collect();
                let mut current = current.lock().unwrap();
                if let Some((index, tag)) = current.clone() {
                    let mut log = log.lock().unwrap();
                    if words.len() == 3
                        && words[0] == "*"
                        && words[1].bytes().all(|b| b.is_ascii_digit())
                        && words[2].eq_ignore_ascii_case("FETCH")
                    {
                        log[index].fetches += 1;
                    } else if words.first() == Some(&tag.as_str()) {
                        log[index].done = true;
                        *current = None;
                    }
                }
            }
            if client_write.write_all(&response).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(to_server, to_client);
}

/// One whole server response: a line, and where it ends in a literal `{n}`, the n bytes
/// and the rest of the response after them.
async fn read_response(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<Vec<u8>> {
    let mut response = Vec::new();
    loop {
        let start = response.len();
        if reader.read_until(b'\n', &mut response).await.ok()? == 0 {
            return None;
        }
        let line = &response[start..];
        let literal = line
            .strip_suffix(b"}\r\n")
            .and_then(|l| l.iter().rposition(|&b| b == b'{').map(|at| &l[at + 1..]))
            .and_then(|n| std::str::from_utf8(n.strip_suffix(b"+").unwrap_or(n)).ok())
            .and_then(|n| n.parse::<usize>().ok());
        let Some(size) = literal else {
            return Some(response);
        };
        let at = response.len();
        response.resize(at + size, 0);
        reader.read_exact(&mut response[at..]).await.ok()?;
    }
}

/// A Dovecot mailbox of `old` messages outside the sync window and [`RECENT`] inside it,
/// connected to the gateway through the counting proxy; the CRM holds the recent ones.
struct Setup {
    dovecot: Dovecot,
    proxy: FetchCounter,
    mailbox: String,
    /// The second IMAP client (straight to Dovecot), on INBOX.
    other: ImapSession,
    /// UIDs of the recent messages, ascending, with their Message-IDs.
    recent: Vec<(u32, String)>,
    old: usize,
}

async fn connect(app: &TestApp, capability: Option<&str>, old: usize) -> Setup {
    let dovecot = Dovecot::start_with(Options {
        imap_capability: capability.map(str::to_owned),
        ..Options::default()
    });
    let month_ago = SystemTime::now() - Duration::from_secs(30 * 86_400);
    let old_mail: Vec<Vec<u8>> = (0..old).map(|n| message(100_000 + n)).collect();
    dovecot.seed_maildir_at(USER, "INBOX", &old_mail, month_ago);
    let settings = ImapSettings::new(
        "127.0.0.1",
        dovecot.imap_port(),
        Security::None,
        USER,
        dovecot.password(USER),
    );
    let mut other = imap::connect(&settings)
        .await
        .unwrap_or_else(|e| panic!("second client: {e}\n{}", dovecot.log_text()));
    // Looking numbers the old mail first: the recent messages get the UIDs after it.
    other.select("INBOX").await.expect("SELECT");
    assert_eq!(
        other.highest_uid().await.expect("UID SEARCH"),
        Some(Uid(old as u32))
    );
    let recent_mail: Vec<Vec<u8>> = (0..RECENT).map(message).collect();
    dovecot.seed_maildir(USER, "INBOX", &recent_mail);
    other.select("INBOX").await.expect("SELECT");
    let uids: Vec<Uid> = (1..=RECENT as u32).map(|n| Uid(old as u32 + n)).collect();
    let mut recent: Vec<(u32, String)> = other
        .fetch_uids(&uids)
        .await
        .expect("fetch the recent messages")
        .into_iter()
        .map(|m| {
            let Body::Raw(raw) = m.body else {
                panic!("a small message came back too large");
            };
            let text = String::from_utf8_lossy(&raw).into_owned();
            let id = text
                .lines()
                .find_map(|l| l.strip_prefix("Message-ID: <"))
                .and_then(|l| l.strip_suffix('>'))
                .expect("a Message-ID")
                .to_owned();
            (m.uid.0, id)
        })
        .collect();
    recent.sort();
    assert_eq!(recent.len(), RECENT);

    let proxy = FetchCounter::start(dovecot.imap_port()).await;
    let anna = app
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let queue = app
        .post_ok(
            "/api/v1/queues",
            json!({"name": "Sales", "members": [anna]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .clone();
    let mailbox = app
        .post_ok(
            "/api/v1/mailboxes",
            json!({
                "name": "Sales inbox", "kind": "company", "host": "127.0.0.1",
                "port": proxy.port, "security": "none", "username": USER,
                "password": dovecot.password(USER), "address": format!("{USER}@{DOMAIN}"),
                "queue": queue, "check": "idle", "sync_window_days": 3,
            }),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let setup = Setup {
        dovecot,
        proxy,
        mailbox,
        other,
        recent,
        old,
    };
    wait_until(DEADLINE, "the recent messages to be collected", || async {
        (emails(app).await.len() == RECENT).then_some(())
    })
    .await;
    wait_for_idle(app, &setup.mailbox).await;
    setup
}

async fn wait_for_idle(app: &TestApp, mailbox: &str) {
    wait_until(DEADLINE, "the mailbox to be idle", || async {
        let value = app.get_ok(&format!("/api/v1/mailboxes/{mailbox}")).await;
        (value["state"] == "idle").then_some(())
    })
    .await;
}

async fn emails(app: &TestApp) -> Vec<Value> {
    app.get_ok("/api/v1/emails?limit=500").await["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn by_message_id(emails: &[Value], id: &str) -> Option<Value> {
    emails.iter().find(|e| e["message_id"] == id).cloned()
}

/// `\Seen` of one message as Dovecot itself has it.
fn seen_on_server(dovecot: &Dovecot, uid: u32) -> bool {
    let uid = uid.to_string();
    dovecot
        .doveadm(&[
            "-f", "tab", "fetch", "-u", USER, "flags", "mailbox", "INBOX", "uid", &uid,
        ])
        .contains("\\Seen")
}

/// The E9 rules through one mailbox, whichever path the flag pass takes; returns the
/// number of `* n FETCH` responses the flag reads got after 10 messages were marked
/// read by the other client.
async fn e9_both_ways(app: &TestApp, setup: &mut Setup) -> usize {
    let folder_size = setup.old + RECENT;
    // The first pass read every message's flags (nothing to start from yet).
    let first = setup.proxy.flag_reads_since(0);
    assert!(
        first.iter().any(|c| c.fetches == folder_size),
        "a first pass over all {folder_size} messages: {first:?}"
    );

    // A flag set on the server completes the activity: 10 messages read elsewhere.
    let mark = setup.proxy.commands().len();
    let read: Vec<Uid> = setup.recent[..10]
        .iter()
        .map(|(uid, _)| Uid(*uid))
        .collect();
    setup
        .other
        .set_seen(&read, true)
        .await
        .expect("UID STORE by the other client");
    let read_ids: Vec<String> = setup.recent[..10]
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    wait_until(DEADLINE, "10 activities completed", || async {
        let emails = emails(app).await;
        let done = read_ids
            .iter()
            .filter(|id| by_message_id(&emails, id).is_some_and(|e| e["completed_at"].is_string()))
            .count();
        (done == 10).then_some(()).ok_or(format!("{done} of 10"))
    })
    .await;
    wait_for_idle(app, &setup.mailbox).await;
    let fetched: usize = setup
        .proxy
        .flag_reads_since(mark)
        .iter()
        .map(|c| c.fetches)
        .sum();

    // A deletion of an unseen message on the server removes its activity and the
    // untouched lead it created.
    let (deleted_uid, deleted_id) = setup.recent[10].clone();
    let leads = app.leads().await.len();
    setup.dovecot.expunge(USER, "INBOX", deleted_uid);
    wait_until(
        DEADLINE,
        "the deleted message and its lead to go",
        || async {
            let gone = by_message_id(&emails(app).await, &deleted_id).is_none();
            (gone && app.leads().await.len() == leads - 1).then_some(())
        },
    )
    .await;

    // A completion in the CRM reaches the server…
    let (crm_uid, crm_id) = setup.recent[11].clone();
    let email = by_message_id(&emails(app).await, &crm_id).expect("the last recent message");
    let activity = email["activity"].as_str().expect("an activity").to_owned();
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/activities/{activity}"),
            Some(&app.admin),
            Some(json!({"completed": true})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let dovecot = &setup.dovecot;
    wait_until(DEADLINE, "\\Seen set on the server", || async {
        seen_on_server(dovecot, crm_uid).then_some(())
    })
    .await;
    let pushed = wait_until(DEADLINE, "the store to record the push", || async {
        by_message_id(&emails(app).await, &crm_id).filter(|e| e["seen"] == true)
    })
    .await;
    // …and does not come back as a change on the server in the next pass (that would
    // complete the activity again, at a new time).
    dovecot.deliver(USER, &message(999)).await;
    wait_until(DEADLINE, "the next pass to collect new mail", || async {
        by_message_id(&emails(app).await, "cs-999@example.org").map(|_| ())
    })
    .await;
    wait_for_idle(app, &setup.mailbox).await;
    let after = by_message_id(&emails(app).await, &crm_id).expect("still there");
    assert_eq!(after["completed_at"], pushed["completed_at"], "{after}");
    assert_eq!(after["seen"], true);
    assert!(seen_on_server(dovecot, crm_uid));
    fetched
}

/// E9 with QRESYNC on a 10,000-message mailbox: after 10 messages are marked read on
/// the server, the pass reads those 10 messages' flags, not 10,000; deletions come from
/// VANISHED; a completion pushed from the CRM is not read back as the server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e9_incremental_pass_reads_only_the_changed_flags_of_10000_messages() {
    let app = TestApp::spawn().await;
    let mut setup = connect(&app, None, 10_000 - RECENT).await;
    let fetched = e9_both_ways(&app, &mut setup).await;
    // Each change is read once; a second time only if Dovecot also reported it
    // unsolicited during the read.
    assert!(
        (10..=20).contains(&fetched),
        "10 changed messages, {fetched} FETCH responses: {:?}",
        setup.proxy.commands()
    );
    let incremental = setup
        .proxy
        .flag_reads_since(0)
        .into_iter()
        .filter(|c| c.line.contains("CHANGEDSINCE"))
        .count();
    assert!(incremental > 0, "no incremental pass");
    app.stop().await;
}

/// E9 with CONDSTORE but not QRESYNC: changed flags by mod-sequence, deletions found by
/// comparing the known message count with the server's (a position check), and listed
/// only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e9_incremental_pass_with_condstore_only_finds_deletions_by_position() {
    let app = TestApp::spawn().await;
    let mut setup = connect(&app, Some(CONDSTORE_ONLY), 300).await;
    let fetched = e9_both_ways(&app, &mut setup).await;
    assert!(
        (10..=20).contains(&fetched),
        "10 changed messages, {fetched} FETCH responses: {:?}",
        setup.proxy.commands()
    );
    let lines: Vec<String> = setup.proxy.commands().into_iter().map(|c| c.line).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("CHANGEDSINCE") && !l.contains("VANISHED")),
        "{lines:?}"
    );
    // The expunge was found by position, then by listing the UIDs.
    assert!(
        lines.iter().any(|l| l.contains("UID SEARCH OR ")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("UID SEARCH UID 1:")),
        "{lines:?}"
    );
    app.stop().await;
}

/// E9 without CONDSTORE: every pass reads every message's flags, as before, and the
/// rules hold the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e9_without_condstore_every_pass_reads_every_message() {
    let app = TestApp::spawn().await;
    let mut setup = connect(&app, Some(WITHOUT_CONDSTORE), 300).await;
    let folder_size = setup.old + RECENT;
    let mark = setup.proxy.commands().len();
    let fetched = e9_both_ways(&app, &mut setup).await;
    assert!(fetched >= folder_size, "{fetched} FETCH responses");
    let reads = setup.proxy.flag_reads_since(mark);
    let inbox_reads: Vec<&Command> = reads.iter().filter(|c| c.fetches > 0).collect();
    assert!(!inbox_reads.is_empty());
    for read in inbox_reads {
        assert!(
            !read.line.contains("CHANGEDSINCE") && !read.line.contains("MODSEQ"),
            "{read:?}"
        );
        // The whole folder, give or take the message deleted and the one delivered.
        assert!(read.fetches >= folder_size - 1, "{read:?}");
    }
    let lines: Vec<String> = setup.proxy.commands().into_iter().map(|c| c.line).collect();
    assert!(!lines.iter().any(|l| l.contains("ENABLE")), "{lines:?}");
    app.stop().await;
}

/// The same incremental pass on PostgreSQL (the delta's row query there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e9_incremental_pass_on_postgresql() {
    let server = crate::common::postgres::PgServer::shared();
    let url = server.create_database("mail_e9_condstore").await;
    let app = TestApp::spawn_with(|config, _| config.database_url = url).await;
    let mut setup = connect(&app, Some(CONDSTORE_ONLY), 100).await;
    let fetched = e9_both_ways(&app, &mut setup).await;
    assert!((10..=20).contains(&fetched), "{fetched} FETCH responses");
    app.stop().await;
}

fn direct(dovecot: &Dovecot) -> ImapSettings {
    ImapSettings::new(
        "127.0.0.1",
        dovecot.imap_port(),
        Security::None,
        USER,
        dovecot.password(USER),
    )
}

/// The adapter: with QRESYNC, `flag_changes` gives the flags changed since a
/// mod-sequence and the UIDs expunged since (the newest one too), and the next
/// mod-sequence to ask from.
#[tokio::test]
async fn e9_flag_changes_with_qresync_give_changed_flags_and_vanished_uids() {
    let dovecot = Dovecot::start();
    let mail: Vec<Vec<u8>> = (0..6).map(message).collect();
    dovecot.seed_maildir(USER, "INBOX", &mail);
    let mut ours = imap::connect(&direct(&dovecot)).await.expect("connect");
    assert_eq!(ours.resync(), imap::Resync::QResync);
    let state = ours.select("INBOX").await.expect("SELECT");
    let all = ours.flags_of_all().await.expect("flags");
    assert_eq!(all.len(), 6);
    let since = all
        .iter()
        .filter_map(|f| f.modseq)
        .fold(state.highest_modseq.expect("HIGHESTMODSEQ"), u64::max);

    let none = ours
        .flag_changes(since, None)
        .await
        .expect("nothing changed");
    assert!(
        none.changed.is_empty() && none.vanished.is_empty(),
        "{none:?}"
    );
    assert_eq!(none.modseq, since);

    dovecot.add_flag(USER, "INBOX", 2, "\\Seen");
    dovecot.add_flag(USER, "INBOX", 3, "\\Deleted");
    dovecot.expunge(USER, "INBOX", 4);
    dovecot.expunge(USER, "INBOX", 6);
    let changes = ours.flag_changes(since, None).await.expect("CHANGEDSINCE");
    let changed: Vec<(u32, bool, bool)> = changes
        .changed
        .iter()
        .map(|f| (f.uid.0, f.seen, f.deleted))
        .collect();
    assert_eq!(changed, [(2, true, false), (3, false, true)]);
    let vanished: Vec<u32> = changes.vanished.iter().flat_map(|r| r.clone()).collect();
    assert_eq!(vanished, [4, 6]);
    assert!(changes.modseq > since);
    assert_eq!(changes.known, None);

    let again = ours
        .flag_changes(changes.modseq, None)
        .await
        .expect("again");
    assert!(
        again.changed.is_empty() && again.vanished.is_empty(),
        "{again:?}"
    );
}

/// The adapter with CONDSTORE alone: no deletion, one small search; a deletion below
/// the known top is found by position and the UIDs listed; new mail moves the known top.
#[tokio::test]
async fn e9_flag_changes_with_condstore_only_find_deletions_by_position() {
    let dovecot = Dovecot::start_with(Options {
        imap_capability: Some(CONDSTORE_ONLY.to_owned()),
        ..Options::default()
    });
    let mail: Vec<Vec<u8>> = (0..5).map(message).collect();
    dovecot.seed_maildir(USER, "INBOX", &mail);
    let mut ours = imap::connect(&direct(&dovecot)).await.expect("connect");
    assert_eq!(ours.resync(), imap::Resync::CondStore);
    let state = ours.select("INBOX").await.expect("SELECT");
    let all = ours.flags_of_all().await.expect("flags");
    let known = imap::KnownUids::of(all.iter().map(|f| f.uid));
    assert_eq!(
        known,
        imap::KnownUids {
            top: Uid(5),
            count: 5
        }
    );
    let since = state.highest_modseq.expect("HIGHESTMODSEQ");
    assert!(
        ours.flag_changes(since, None).await.is_err(),
        "without QRESYNC the known UIDs are needed"
    );

    dovecot.deliver(USER, &message(5)).await;
    let changes = ours
        .flag_changes(since, Some(known))
        .await
        .expect("new mail");
    assert_eq!(
        changes.known,
        Some(imap::KnownUids {
            top: Uid(6),
            count: 6
        })
    );
    assert_eq!(changes.vanished, [7..=u32::MAX]);

    dovecot.expunge(USER, "INBOX", 2);
    dovecot.expunge(USER, "INBOX", 6);
    let known = changes.known.unwrap();
    let changes = ours
        .flag_changes(changes.modseq, Some(known))
        .await
        .expect("deletions");
    assert_eq!(changes.vanished, [2..=2, 6..=u32::MAX]);
    assert_eq!(
        changes.known,
        Some(imap::KnownUids {
            top: Uid(5),
            count: 4
        })
    );
}

/// E9 pushes under CONDSTORE: a message changed on the server after the pass read it is
/// left alone (UNCHANGEDSINCE, reported as MODIFIED); the others are set.
#[tokio::test]
async fn e9_a_push_does_not_overwrite_a_change_made_after_the_read() {
    let dovecot = Dovecot::start();
    let mail: Vec<Vec<u8>> = (0..3).map(message).collect();
    dovecot.seed_maildir(USER, "INBOX", &mail);
    let mut ours = imap::connect(&direct(&dovecot)).await.expect("connect");
    let state = ours.select("INBOX").await.expect("SELECT");
    let read_at = state.highest_modseq.expect("HIGHESTMODSEQ");
    // Someone flags message 1 after we read it.
    dovecot.add_flag(USER, "INBOX", 1, "\\Flagged");
    let left = ours
        .set_seen_unless_changed(&[Uid(1), Uid(2)], true, Some(read_at))
        .await
        .expect("UID STORE UNCHANGEDSINCE");
    assert_eq!(left, [Uid(1)]);
    let flags = dovecot.flags(USER, "INBOX");
    let seen: Vec<(u32, bool)> = flags
        .iter()
        .map(|(uid, f)| (*uid, f.contains("\\Seen")))
        .collect();
    assert_eq!(seen, [(1, false), (2, true), (3, false)]);
    // The \Flagged made elsewhere is news; read it.
    ours.flags_of_all().await.expect("flags");
    // Our own STORE is not: the next IDLE does not return at once for it.
    let now = ours.select("INBOX").await.expect("SELECT");
    let left = ours
        .set_seen_unless_changed(&[Uid(3)], true, now.highest_modseq)
        .await
        .expect("UID STORE UNCHANGEDSINCE");
    assert!(left.is_empty());
    let outcome = ours
        .idle_wait(Duration::from_millis(300))
        .await
        .expect("IDLE");
    assert_eq!(outcome, imap::IdleOutcome::Timeout);
}
