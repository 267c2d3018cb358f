//! Several nodes on one database: a UDP binding gets its keep-alive OPTIONS from one node
//! (the holder of the `keepalive:udp` lease), not from every node, and from another node
//! once the holder is killed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leadline::store::{RegistrationRecord, Store};
use serde_json::json;
use tokio::net::UdpSocket;

use crate::common::postgres::PgServer;
use crate::common::wait_until;
use crate::node_process::NodeProcess;

const TOKEN: &str = "cluster-keepalive-admin-token-0123456789";
const LEASE: &str = "keepalive:udp";
/// A killed holder's lease runs out (15 s), the survivor's next try (every 5 s) takes it
/// and its first ping falls within the 5 s interval; room for a loaded machine.
const TAKEOVER_DEADLINE: Duration = Duration::from_secs(90);

/// One OPTIONS as the phone saw it: the node's SIP address it came from, and its Call-ID
/// (a ping's retransmissions share one).
type Ping = (SocketAddr, String);

/// A phone behind NAT that answers every OPTIONS with 200 and notes who sent it.
struct Phone {
    addr: SocketAddr,
    pings: Arc<Mutex<Vec<Ping>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Phone {
    async fn start() -> Phone {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let pings = Arc::new(Mutex::new(Vec::new()));
        let seen = pings.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if !text.starts_with("OPTIONS ") {
                    continue;
                }
                let header = |name: &str| {
                    text.lines()
                        .filter(|l| {
                            l.split(':')
                                .next()
                                .is_some_and(|h| h.trim().eq_ignore_ascii_case(name))
                        })
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                };
                let call_id = header("Call-ID")
                    .first()
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
                    .unwrap_or_default();
                let mut answer = String::from("SIP/2.0 200 OK\r\n");
                for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
                    for line in header(name) {
                        answer.push_str(&line);
                        answer.push_str("\r\n");
                    }
                }
                answer.push_str("Content-Length: 0\r\n\r\n");
                let _ = socket.send_to(answer.as_bytes(), from).await;
                let mut seen = seen.lock().unwrap();
                if !seen.iter().any(|(_, c)| *c == call_id) {
                    seen.push((from, call_id));
                }
            }
        });
        Phone { addr, pings, task }
    }

    fn pings(&self) -> Vec<Ping> {
        self.pings.lock().unwrap().clone()
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The nodes' `generic` profile pings UDP bindings every 5 s, the shortest allowed.
fn fast_profiles(dir: &Path) {
    let generic = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("sip-profiles/generic.toml"),
    )
    .unwrap();
    assert!(generic.contains("udp_options_s = 30"));
    std::fs::write(
        dir.join("generic.toml"),
        generic.replace("udp_options_s = 30", "udp_options_s = 5"),
    )
    .unwrap();
}

/// This node's SIP address and the holder of the keep-alive lease (its SIP address), as
/// `node` lists the nodes.
async fn sip_and_holder(node: &NodeProcess) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let nodes = node.get("/nodes").await?;
    let items = nodes["items"].as_array()?;
    let sip = |n: &serde_json::Value| n["sip"].as_str()?.parse::<SocketAddr>().ok();
    let own = items.iter().find(|n| n["http"] == node.http.as_str())?;
    let holders: Vec<SocketAddr> = items
        .iter()
        .filter(|n| {
            n["leases"]
                .as_array()
                .is_some_and(|l| l.contains(&json!(LEASE)))
        })
        .filter_map(sip)
        .collect();
    assert!(holders.len() <= 1, "one holder at most: {nodes}");
    Some((sip(own)?, holders.first().copied()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_is_kept_alive_by_one_node_and_by_another_when_it_is_killed() {
    let server = PgServer::shared();
    let url = server.create_database("cluster_keepalive").await;
    let profiles = tempfile::tempdir().unwrap();
    fast_profiles(profiles.path());
    let profiles_dir = profiles.path().to_str().unwrap();
    let args = [
        "--sip",
        "127.0.0.1:0",
        "--database-url",
        url.as_str(),
        "--sip-profiles",
        profiles_dir,
    ];
    let mut nodes = vec![
        NodeProcess::start(TOKEN, &args).await,
        NodeProcess::start(TOKEN, &args).await,
    ];

    // A phone registered over UDP from its NAT address, as the registrar stores it.
    let phone = Phone::start().await;
    let store = Store::connect(&url).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let binding = RegistrationRecord {
        aor: "101".into(),
        owner_kind: "user".into(),
        owner_id: "nobody".into(),
        contact: format!("sip:101@{}", phone.addr),
        expires_at: now + 3_600_000,
        call_id: "phone-1".into(),
        cseq: 1,
        q: None,
        instance: None,
        user_agent: Some("phone".into()),
        transport: "udp".into(),
        source: phone.addr.to_string(),
        path: None,
    };
    store.save_bindings("101", &[binding], &[]).await.unwrap();
    store.close().await;

    // Two pings from the holder, none from the other node.
    let holder = wait_until(
        TAKEOVER_DEADLINE,
        "a node to hold the keep-alive lease",
        || async {
            match sip_and_holder(&nodes[1]).await {
                Some((_, Some(holder))) => Ok(holder),
                _ => Err(nodes[1].get("/nodes").await),
            }
        },
    )
    .await;
    wait_until(TAKEOVER_DEADLINE, "two keep-alives", || async {
        let pings = phone.pings();
        (pings.len() >= 2).then_some(()).ok_or(pings.len())
    })
    .await;
    let senders: HashSet<SocketAddr> = phone.pings().iter().map(|(from, _)| *from).collect();
    assert_eq!(
        senders,
        HashSet::from([holder]),
        "only the lease holder pings"
    );

    // The holder is killed: the other node takes the lease and pings the phone.
    let mut sips = Vec::new();
    for node in &nodes {
        sips.push(sip_and_holder(node).await.expect("node answers").0);
    }
    let killed = sips
        .iter()
        .position(|s| *s == holder)
        .expect("holder is a node");
    let survivor = 1 - killed;
    nodes[killed].kill().await;
    let before = phone.pings().len();
    wait_until(
        TAKEOVER_DEADLINE,
        "a keep-alive from the survivor",
        || async {
            phone.pings()[before..]
                .iter()
                .any(|(from, _)| *from == sips[survivor])
                .then_some(())
                .ok_or_else(|| format!("{:?}", phone.pings()))
        },
    )
    .await;
    let taken = wait_until(
        TAKEOVER_DEADLINE,
        "the survivor to list itself as holder",
        || async { sip_and_holder(&nodes[survivor]).await?.1 },
    )
    .await;
    assert_eq!(taken, sips[survivor]);
}
