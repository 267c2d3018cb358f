//! Several nodes on one database: the calls a node killed with kill -9 had logged as
//! open are closed by a surviving node (outcome `failed`, "node lost").

use std::time::Duration;

use serde_json::{Value, json};

use crate::calls_sip::{CALLER, NUMBER, Sipp};
use crate::common::postgres::PgServer;
use crate::common::{free_port, wait_until};
use crate::node_process::NodeProcess;

const TOKEN: &str = "cluster-lost-admin-token-0123456789";
/// The survivor closes the call once the killed node has not been seen for 30 s, at its
/// next sweep (every 5 s); the deadline leaves room for a loaded machine.
const CLOSE_DEADLINE: Duration = Duration::from_secs(90);

/// A node of this test: a gateway process of its own on `sip_port`.
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
    async fn start(database_url: &str, sip_port: u16) -> Node {
        let sip = format!("127.0.0.1:{sip_port}");
        // SIPp answers only MD5 challenges.
        let args = [
            "--sip",
            &sip,
            "--sip-digest",
            "md5,sha256",
            "--database-url",
            database_url,
        ];
        Node(NodeProcess::start(TOKEN, &args).await)
    }

    /// The only call in the log, once `ready` says it is as awaited.
    async fn the_call(&self, ready: impl Fn(&Value) -> bool) -> Option<Value> {
        let calls = self.get("/calls").await?;
        let items = calls["items"].as_array()?;
        assert!(items.len() <= 1, "one call: {calls}");
        items.first().filter(|call| ready(call)).cloned()
    }
}

/// Two nodes on one PostgreSQL; a carrier call answered on node A is up when A is killed
/// with kill -9: node B closes it in the log as failed, "node lost", and the caller's
/// lead stays the one lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m7_a_killed_nodes_open_call_is_closed_by_a_surviving_node() {
    let url = PgServer::shared()
        .create_database("cluster_lost_call")
        .await;
    let (sip_a, sip_b) = (free_port(), free_port());
    let mut a = Node::start(&url, sip_a).await;
    let anna = a.sales_line(NUMBER).await;
    let b = Node::start(&url, sip_b).await;

    let phone_port = free_port();
    let (registered, messages) = Sipp::start(
        "register.xml",
        phone_port,
        Some(format!("127.0.0.1:{sip_a}")),
        &["-s", "101", "-au", "101", "-ap", "pw-101-secret"],
    )
    .finish()
    .await;
    assert!(registered, "Anna's phone registers with node A: {messages}");
    let phone = Sipp::start("agent_answer.xml", phone_port, None, &[]);
    // The carrier waits for a BYE that never comes: the call stays up until A dies.
    let carrier = Sipp::start(
        "carrier_call_hung_up.xml",
        0,
        Some(format!("127.0.0.1:{sip_a}")),
        &["-s", NUMBER, "-key", "caller", CALLER],
    );
    let answered = wait_until(Duration::from_secs(30), "the call answered on A", || {
        a.the_call(|call| call["answered_at"].is_string())
    })
    .await;
    assert!(answered["ended_at"].is_null(), "{answered}");

    a.kill().await;
    let closed = wait_until(CLOSE_DEADLINE, "node B to close the call", || {
        b.the_call(|call| call["ended_at"].is_string())
    })
    .await;
    assert_eq!(closed["outcome"], "failed", "{closed}");
    assert_eq!(closed["id"], answered["id"], "{closed}");
    assert!(
        closed["crm_reason"]
            .as_str()
            .is_some_and(|reason| reason.ends_with("node lost")),
        "{closed}"
    );
    assert_eq!(closed["answered_by"], json!(anna), "{closed}");
    let leads = b.get("/leads?limit=500").await.unwrap();
    assert_eq!(leads["items"].as_array().unwrap().len(), 1, "{leads}");
    carrier.stop().await;
    phone.stop().await;
}
