//! `GET /nodes` (admin): the gateway processes sharing the database, when each was last
//! seen, and the leases each holds (which mailboxes it polls, which carriers it
//! registers with).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Principal;
use super::error::ApiResult;
use crate::store::cluster::NodeRecord;
use crate::store::{now_ms, rfc3339};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Node {
    pub id: String,
    /// The node's SIP address (`IP:PORT`).
    pub sip: String,
    /// The node's HTTP address (`IP:PORT`).
    pub http: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339: its last heartbeat (every 2 s while it runs).
    pub last_seen: String,
    /// Work this node alone runs now: `mailbox:<id>`, `trunk:<id>`.
    pub leases: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeList {
    pub items: Vec<Node>,
}

impl From<NodeRecord> for Node {
    fn from(n: NodeRecord) -> Self {
        Self {
            id: n.id,
            sip: n.sip,
            http: n.http,
            started_at: rfc3339(n.started_at),
            last_seen: rfc3339(n.last_seen),
            leases: n.leases,
        }
    }
}

/// The nodes sharing the database, oldest start first (admin). A node stopped cleanly is
/// no longer listed; a killed one stays with its last heartbeat.
#[utoipa::path(get, path = "/nodes", tag = "operations",
    responses((status = 200, body = NodeList)))]
async fn list_nodes(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<NodeList>> {
    principal.require_admin()?;
    let nodes = state.store.nodes(now_ms()).await?;
    Ok(Json(NodeList {
        items: nodes.into_iter().map(Node::from).collect(),
    }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_nodes))
}
