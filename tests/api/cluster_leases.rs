//! Several nodes on one database: the node list, and exactly one node running each
//! mailbox's poller (a lease), taken over by another node when the holder is killed.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::dovecot::{DOMAIN, Dovecot};
use crate::common::postgres::PgServer;
use crate::common::wait_until;
use crate::helpers::TestApp;
use crate::node_process::NodeProcess;

const TOKEN: &str = "cluster-test-admin-token-0123456789";
/// A killed holder's lease runs out (15 s) and the survivor's next try (every 5 s) takes
/// it; the deadline leaves room for a loaded machine.
const TAKEOVER_DEADLINE: Duration = Duration::from_secs(90);

/// `GET /nodes` on the embedded default: this one node, its addresses and times.
#[tokio::test]
async fn nodes_lists_the_running_node_to_admins_only() {
    let app = TestApp::spawn().await;
    let nodes = app.get_ok("/api/v1/nodes").await;
    let items = nodes["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{nodes}");
    let node = &items[0];
    assert_eq!(node["sip"], app.sip_addr().to_string());
    assert_eq!(node["http"], app.base.trim_start_matches("http://"));
    for time in ["started_at", "last_seen"] {
        let text = node[time].as_str().expect(time);
        assert!(
            chrono::DateTime::parse_from_rfc3339(text).is_ok(),
            "{time}: {text}"
        );
    }
    assert_eq!(node["leases"], json!([]));
    assert!(!node["id"].as_str().unwrap().is_empty());

    let agent = app
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let token = app.token_for(&agent).await;
    let resp = app
        .client
        .get(format!("{}/api/v1/nodes", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    app.stop().await;
}

/// A node of this test: a gateway process of its own.
struct Node(NodeProcess);

impl std::ops::Deref for Node {
    type Target = NodeProcess;
    fn deref(&self) -> &NodeProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut NodeProcess {
        &mut self.0
    }
}

impl Node {
    async fn start(database_url: &str) -> Node {
        let args = ["--sip", "127.0.0.1:0", "--database-url", database_url];
        Node(NodeProcess::start(TOKEN, &args).await)
    }

    /// The HTTP address of the node holding `lease`, as this node lists the nodes.
    async fn holder_of(&self, lease: &str) -> Option<String> {
        let nodes = self.get("/nodes").await?;
        let holders: Vec<String> = nodes["items"]
            .as_array()?
            .iter()
            .filter(|n| {
                n["leases"]
                    .as_array()
                    .is_some_and(|l| l.contains(&json!(lease)))
            })
            .filter_map(|n| n["http"].as_str().map(str::to_owned))
            .collect();
        assert!(holders.len() <= 1, "one holder at most: {nodes}");
        holders.into_iter().next()
    }

    async fn emails_with_subject(&self, subject: &str) -> Option<usize> {
        let emails = self.get("/emails?limit=500").await?;
        Some(
            emails["items"]
                .as_array()?
                .iter()
                .filter(|e| e["subject"] == subject)
                .count(),
        )
    }
}

fn message(subject: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Kunde <kunde@example.org>\r\nTo: <alice@{DOMAIN}>\r\nSubject: {subject}\r\n\
         Message-ID: <{id}@example.org>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nBitte ein Angebot.\r\n"
    )
    .into_bytes()
}

/// Two nodes on one PostgreSQL: one of them polls the mailbox; killed with kill -9, the
/// other takes the mailbox over, and mail delivered meanwhile is collected exactly once,
/// the mail collected before not again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_is_polled_by_one_node_and_taken_over_when_it_is_killed() {
    let server = PgServer::shared();
    let url = server.create_database("cluster_mailbox_lease").await;
    let dovecot = Dovecot::start();
    let mut nodes = vec![Node::start(&url).await, Node::start(&url).await];
    let mailbox = nodes[0]
        .post(
            "/mailboxes",
            json!({
                "name": "Sales inbox", "kind": "company", "host": "127.0.0.1",
                "port": dovecot.imap_port(), "security": "none", "username": "alice",
                "password": dovecot.password("alice"), "address": format!("alice@{DOMAIN}"),
                "check": "idle", "sync_window_days": null,
            }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lease = format!("mailbox:{mailbox}");
    let holder = wait_until(TAKEOVER_DEADLINE, "one node to hold the mailbox", || {
        nodes[1].holder_of(&lease)
    })
    .await;
    dovecot.deliver("alice", &message("Before", "before")).await;
    wait_until(TAKEOVER_DEADLINE, "the first mail collected", || async {
        (nodes[0].emails_with_subject("Before").await? == 1).then_some(())
    })
    .await;

    let killed = nodes
        .iter()
        .position(|n| n.http == holder)
        .expect("the holder is one of the two nodes");
    let mut gone = nodes.remove(killed);
    gone.kill().await;
    let survivor = &nodes[0];
    dovecot
        .deliver("alice", &message("Meanwhile", "meanwhile"))
        .await;

    wait_until(
        TAKEOVER_DEADLINE,
        "the survivor to take the mailbox",
        || async { (survivor.holder_of(&lease).await? == survivor.http).then_some(()) },
    )
    .await;
    wait_until(
        TAKEOVER_DEADLINE,
        "the mail delivered meanwhile",
        || async { (survivor.emails_with_subject("Meanwhile").await? >= 1).then_some(()) },
    )
    .await;
    // One more mail after the takeover: collected once, and by then every earlier pass
    // of the survivor is over, so a double collection would show.
    dovecot.deliver("alice", &message("After", "after")).await;
    wait_until(TAKEOVER_DEADLINE, "the mail delivered after", || async {
        (survivor.emails_with_subject("After").await? >= 1).then_some(())
    })
    .await;
    for subject in ["Before", "Meanwhile", "After"] {
        assert_eq!(
            survivor.emails_with_subject(subject).await,
            Some(1),
            "'{subject}' collected exactly once"
        );
    }
    let leads = survivor.get("/leads?limit=500").await.unwrap();
    assert_eq!(leads["items"].as_array().unwrap().len(), 1, "{leads}");
}

/// The contacts bound at `carrier`'s registrar for its account 201, with seconds left.
async fn bindings(carrier: &TestApp) -> Vec<(String, i64)> {
    let listing = carrier.get_ok("/api/v1/registrations").await;
    listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["aor"] == "201")
        .map(|b| {
            (
                b["contact"].as_str().unwrap().to_owned(),
                b["expires_in_s"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Two nodes on one PostgreSQL and a carrier trunk (another Leadline's registrar): one
/// node registers it; killed with kill -9, the other node takes the trunk's lease and
/// registers from its own address while the killed node's binding has not expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_registration_runs_on_one_node_and_moves_when_it_is_killed() {
    let carrier = TestApp::spawn().await;
    carrier
        .post_ok(
            "/api/v1/users",
            json!({"name": "Trunk account", "email": "trunk@example.com", "role": "agent",
                   "extension": "201", "sip_password": "trunk-secret-201"}),
            StatusCode::CREATED,
        )
        .await;
    let server = PgServer::shared();
    let url = server.create_database("cluster_trunk_lease").await;
    let mut nodes = vec![Node::start(&url).await, Node::start(&url).await];
    let trunk = nodes[0]
        .post(
            "/trunks",
            json!({"name": "Leadline carrier", "kind": "carrier", "host": "127.0.0.1",
                   "port": carrier.sip_addr().port(), "username": "201",
                   "password": "trunk-secret-201"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lease = format!("trunk:{trunk}");
    let holder = wait_until(TAKEOVER_DEADLINE, "one node to hold the trunk", || {
        nodes[1].holder_of(&lease)
    })
    .await;
    let sip_of = |node: &Node| {
        let node = node.http.clone();
        async move {
            let listing = reqwest::Client::new()
                .get(format!("http://{node}/api/v1/nodes"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()?;
            listing["items"]
                .as_array()?
                .iter()
                .find(|n| node.ends_with(n["http"].as_str().unwrap_or("-")))
                .and_then(|n| n["sip"].as_str().map(str::to_owned))
        }
    };
    let killed = nodes
        .iter()
        .position(|n| n.http == holder)
        .expect("the holder is one of the two nodes");
    let killed_sip = wait_until(TAKEOVER_DEADLINE, "the holder's SIP address", || {
        sip_of(&nodes[killed])
    })
    .await;
    let survivor_sip = wait_until(TAKEOVER_DEADLINE, "the other's SIP address", || {
        sip_of(&nodes[1 - killed])
    })
    .await;
    wait_until(TAKEOVER_DEADLINE, "the holder's binding", || async {
        let bound = bindings(&carrier).await;
        (bound.len() == 1 && bound[0].0.contains(&killed_sip)).then_some(())
    })
    .await;

    let mut gone = nodes.remove(killed);
    gone.kill().await;
    let survivor = &nodes[0];
    wait_until(
        TAKEOVER_DEADLINE,
        "the survivor to take the trunk",
        || async { (survivor.holder_of(&lease).await? == survivor.http).then_some(()) },
    )
    .await;
    let bound = wait_until(TAKEOVER_DEADLINE, "the survivor's binding", || async {
        let bound = bindings(&carrier).await;
        bound
            .iter()
            .any(|(contact, _)| contact.contains(&survivor_sip))
            .then_some(bound)
    })
    .await;
    let old = bound
        .iter()
        .find(|(contact, _)| contact.contains(&killed_sip))
        .expect("the killed node's binding is still listed");
    assert!(old.1 > 0, "registered again before it expired: {bound:?}");
    carrier.stop().await;
}
