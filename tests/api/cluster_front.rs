//! Several nodes on one PostgreSQL behind the SIP proxy: what the nodes share for the
//! front (the digest nonce key, bindings with their Path), and the whole front: two
//! `leadline serve` processes behind Kamailio with `deploy/kamailio/leadline.cfg`, a
//! SIPp phone registered through it and a SIPp carrier calling through it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use leadline::sip::digest::{self, NonceKey, NonceState};
use leadline::store::{RegistrationRecord, Store};

use crate::calls_sip::{NUMBER, Sipp};
use crate::common::postgres::PgServer;
use crate::common::{free_port, wait_until};
use crate::node_process::NodeProcess;

async fn node(url: &str) -> Store {
    let store = Store::connect(url).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// The first node to start stores its nonce key; every later node reads that one back,
/// so a nonce node A challenged with checks as fresh on node B.
#[tokio::test]
async fn nodes_on_one_database_share_the_digest_nonce_key() {
    let url = PgServer::shared().create_database("front_nonce").await;
    let (a, b) = (node(&url).await, node(&url).await);
    let key_a = a
        .shared_secret("digest_nonce_key", &NonceKey::generate().to_hex())
        .await
        .unwrap();
    let key_b = b
        .shared_secret("digest_nonce_key", &NonceKey::generate().to_hex())
        .await
        .unwrap();
    assert_eq!(key_a, key_b);
    let (key_a, key_b) = (
        NonceKey::from_hex(&key_a).unwrap(),
        NonceKey::from_hex(&key_b).unwrap(),
    );
    let nonce = digest::issue_nonce(&key_a, "leadline", 1_000);
    assert_eq!(
        digest::check_nonce(&key_b, "leadline", &nonce, 2_000, digest::NONCE_MAX_AGE_MS),
        NonceState::Fresh
    );
    a.close().await;
    b.close().await;
}

/// A binding registered through the proxy keeps its Path in the shared table: the other
/// node reads it back with the binding and rings the phone along it.
#[tokio::test]
async fn a_binding_keeps_its_path_for_every_node() {
    let url = PgServer::shared().create_database("front_path").await;
    let (a, b) = (node(&url).await, node(&url).await);
    let now = 1_000_000;
    let path = "<sip:127.0.0.1:5060;lr;received=sip:192.0.2.10:40000>";
    let binding = RegistrationRecord {
        aor: "101".into(),
        owner_kind: "user".into(),
        owner_id: "u1".into(),
        contact: "sip:101@192.168.1.20:5060".into(),
        expires_at: now + 60_000,
        call_id: "reg-path".into(),
        cseq: 1,
        q: None,
        instance: None,
        user_agent: None,
        transport: "udp".into(),
        source: "127.0.0.1:5060".into(),
        path: Some(path.into()),
    };
    a.save_bindings("101", std::slice::from_ref(&binding), &[])
        .await
        .unwrap();
    assert_eq!(
        b.bindings("101", now).await.unwrap(),
        std::slice::from_ref(&binding)
    );
    let refreshed = RegistrationRecord {
        cseq: 2,
        path: None,
        ..binding
    };
    b.save_bindings("101", std::slice::from_ref(&refreshed), &[])
        .await
        .unwrap();
    assert_eq!(a.bindings("101", now).await.unwrap()[0].path, None);
    a.close().await;
    b.close().await;
}

const TOKEN: &str = "front-test-admin-token-0123456789";

/// A `leadline serve` node behind the proxy.
pub(crate) struct Node(NodeProcess);

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
    /// A node on `database_url` at `127.0.0.1:sip_port` behind the proxy at `proxy`, with
    /// `extra` arguments.
    pub(crate) async fn start_with(
        database_url: &str,
        sip_port: u16,
        proxy: u16,
        extra: &[&str],
    ) -> Node {
        let sip = format!("127.0.0.1:{sip_port}");
        let proxy = format!("127.0.0.1:{proxy}");
        let mut args = vec![
            "--sip",
            &sip,
            "--sip-proxy",
            &proxy,
            // SIPp answers only the first challenge, and only MD5.
            "--sip-digest",
            "md5,sha256",
            "--database-url",
            database_url,
        ];
        args.extend_from_slice(extra);
        Node(NodeProcess::start(TOKEN, &args).await)
    }

    /// `GET /api/v1{path}`, answered.
    pub(crate) async fn read(&self, path: &str) -> Value {
        self.get(path)
            .await
            .unwrap_or_else(|| panic!("GET {path} answers"))
    }

    /// Calls this node ended (`leadline_calls_total`, every outcome).
    pub(crate) async fn calls(&self) -> u64 {
        let text = reqwest::Client::new()
            .get(format!("http://{}/metrics", self.http))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|line| line.starts_with("leadline_calls_total"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|n| n as u64)
            .sum()
    }

    async fn leads(&self) -> usize {
        self.read("/leads?limit=500").await["items"]
            .as_array()
            .unwrap()
            .len()
    }

    /// Whether this node's in-memory bindings ring Anna's phone.
    pub(crate) async fn rings(&self, user: &str) -> bool {
        self.read("/presence").await["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["user"] == user && p["devices"] == 1)
    }
}

/// Kamailio with the shipped configuration, in the foreground in a process group of its
/// own: dropping it kills the group (its children too).
pub(crate) struct Kamailio {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    pub(crate) fn start(port: u16, nodes: &[u16]) -> Kamailio {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("dispatcher.list");
        let lines: String = nodes
            .iter()
            .map(|p| format!("1 sip:127.0.0.1:{p}\n"))
            .collect();
        std::fs::write(&list, lines).unwrap();
        let binary = if Path::new("/usr/sbin/kamailio").exists() {
            "/usr/sbin/kamailio"
        } else {
            "kamailio"
        };
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kamailio/leadline.cfg");
        let child = Command::new(binary)
            .arg("-f")
            .arg(&config)
            // Without a protocol: UDP and TCP on the one address, as the README says.
            .args(["-A", &format!("LISTEN=127.0.0.1:{port}")])
            .args(["-A", &format!("DISPATCHER_LIST=\"{}\"", list.display())])
            .args(["-DD", "-E", "-m", "64", "-M", "8"])
            .arg("-Y")
            .arg(dir.path())
            .arg("-w")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("kamailio runs (scripts/test installs it)");
        Kamailio { child, _dir: dir }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

/// One carrier call through the proxy from `caller`; whether it was set up and ended.
pub(crate) async fn call_through(proxy: u16, caller: &str) -> (bool, String) {
    Sipp::start(
        "carrier_call_routed.xml",
        0,
        Some(format!("127.0.0.1:{proxy}")),
        &["-s", NUMBER, "-key", "caller", caller],
    )
    .finish()
    .await
}

/// The whole front: a phone registered through Kamailio (challenged by one node,
/// answering to whichever the proxy picks next) is rung by both nodes, calls from new
/// callers spread over both nodes with one lead each (M7), and after one node is killed
/// with SIGKILL every new call succeeds on the other once the dispatcher noticed.
/// Two nodes (B started once A has the sales line), Kamailio in front of both, and
/// Anna's phone registered through Kamailio and known to both nodes; the phone answers
/// every call until stopped.
pub(crate) struct Front {
    pub(crate) a: Node,
    pub(crate) b: Node,
    pub(crate) anna: String,
    pub(crate) proxy: u16,
    pub(crate) phone: Sipp,
    _kamailio: Kamailio,
}

impl Front {
    pub(crate) async fn start(database: &str, node_args: &[&str], phone_args: &[&str]) -> Front {
        let url = PgServer::shared().create_database(database).await;
        let (proxy, sip_a, sip_b) = (free_port(), free_port(), free_port());
        let a = Node::start_with(&url, sip_a, proxy, node_args).await;
        let anna = a.sales_line(NUMBER).await;
        let b = Node::start_with(&url, sip_b, proxy, node_args).await;
        let kamailio = Kamailio::start(proxy, &[sip_a, sip_b]);
        wait_until(Duration::from_secs(20), "Kamailio to listen", || async {
            std::net::UdpSocket::bind(("127.0.0.1", proxy))
                .is_err()
                .then_some(())
        })
        .await;
        let phone_port = free_port();
        let (registered, messages) = Sipp::start(
            "register.xml",
            phone_port,
            Some(format!("127.0.0.1:{proxy}")),
            &["-s", "101", "-au", "101", "-ap", "pw-101-secret"],
        )
        .finish()
        .await;
        assert!(
            registered,
            "the phone registers through Kamailio: {messages}"
        );
        for node in [&a, &b] {
            wait_until(
                Duration::from_secs(20),
                "both nodes to know the phone",
                || async { node.rings(&anna).await.then_some(()) },
            )
            .await;
        }
        let phone = Sipp::start("agent_answer_many.xml", phone_port, None, phone_args);
        Front {
            a,
            b,
            anna,
            proxy,
            phone,
            _kamailio: kamailio,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m7_calls_spread_over_two_nodes_behind_kamailio_and_survive_a_killed_node() {
    let Front {
        a,
        b,
        proxy,
        phone,
        anna: _,
        _kamailio,
    } = Front::start("front_two_nodes", &[], &["-m", "1000", "-timeout", "170s"]).await;

    let callers: Vec<String> = (0..4).map(|i| format!("+49176555000{i}")).collect();
    for caller in &callers {
        let (ok, messages) = call_through(proxy, caller).await;
        assert!(
            ok,
            "the call from {caller} rings the phone and ends: {messages}"
        );
    }
    let (calls_a, calls_b) = wait_until(Duration::from_secs(10), "4 calls logged", || async {
        let counts = (a.calls().await, b.calls().await);
        (counts.0 + counts.1 == 4).then_some(counts)
    })
    .await;
    assert!(
        calls_a >= 1 && calls_b >= 1,
        "calls on both nodes: {calls_a} and {calls_b}"
    );
    assert_eq!(b.leads().await, callers.len(), "one lead per caller");

    let mut a = a;
    a.kill().await;
    // Once the dispatcher took node A out (or failed an INVITE over to B), calls succeed.
    let mut attempts = 0;
    wait_until(Duration::from_secs(60), "a call after node A died", || {
        attempts += 1;
        let caller = format!("+4917655510{attempts:02}");
        async move { call_through(proxy, &caller).await.0.then_some(()) }
    })
    .await;
    for i in 0..3 {
        let caller = format!("+4917655520{i:02}");
        let (ok, messages) = call_through(proxy, &caller).await;
        assert!(ok, "the call from {caller} succeeds on node B: {messages}");
    }
    let leads = b.leads().await;
    // One lead per caller that reached a node; none twice, none lost.
    assert!(
        leads >= callers.len() + 1 + 3 && leads <= callers.len() + attempts + 3,
        "{leads} leads for {} callers",
        callers.len() + attempts + 3
    );
    phone.stop().await;
}
