//! Several gateway processes ("nodes") sharing one PostgreSQL behind a SIP load balancer:
//! what a node is called, and the parts that make the nodes one service.

pub mod events;
pub mod leases;
pub mod lost;
pub mod nodes;
pub mod ownership;

pub use leases::Leases;

use std::fmt;

/// This process among the nodes sharing the database: a fresh id at every start, so a
/// restarted node is a new node and what the old one held is taken over like any lost
/// node's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(pub String);

impl NodeId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
