//! This node's row among the nodes: recorded at start, kept alive by a heartbeat every
//! [`HEARTBEAT_EVERY`], removed (with its leases) on a clean shutdown. A node killed
//! without a shutdown stays listed with its last heartbeat until it is forgotten.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use super::NodeId;
use super::ownership::HEARTBEAT_EVERY;
use crate::crm::model::Millis;
use crate::store::{Backend, Store, StoreError, now_ms};

/// Nodes not seen for this long are forgotten (their rows only: a lost node's calls are
/// found without its row).
const FORGET_AFTER_MS: Millis = 24 * 3600 * 1000;

/// Where other nodes and operators reach this node.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub sip: SocketAddr,
    pub http: SocketAddr,
}

/// Records this node as started. With the embedded database only one node runs, so
/// whatever an earlier, killed process left (its row, its leases) is cleared first.
pub async fn register(store: &Store, node: &NodeId, at: Addresses) -> Result<(), StoreError> {
    let now = now_ms();
    let before = match store.backend() {
        Backend::Sqlite => Millis::MAX,
        Backend::Postgres => now - FORGET_AFTER_MS,
    };
    store.forget_nodes(node.as_str(), before).await?;
    store
        .heartbeat_node(
            node.as_str(),
            &at.sip.to_string(),
            &at.http.to_string(),
            now,
        )
        .await
}

/// The heartbeat until `cancel`; then the node's row and leases are removed.
pub async fn heartbeat(store: Store, node: NodeId, at: Addresses, cancel: CancellationToken) {
    let (sip, http) = (at.sip.to_string(), at.http.to_string());
    let mut failing = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
        }
        match store
            .heartbeat_node(node.as_str(), &sip, &http, now_ms())
            .await
        {
            Ok(()) if failing => {
                tracing::info!("node heartbeat recorded again");
                failing = false;
            }
            Ok(()) => {}
            Err(err) if !failing => {
                tracing::warn!(%err, "cannot record the node heartbeat");
                failing = true;
            }
            Err(_) => {}
        }
    }
    if let Err(err) = store.remove_node(node.as_str()).await {
        tracing::warn!(%err, "cannot remove this node's row at shutdown");
    }
}
