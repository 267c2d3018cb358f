//! The nodes sharing the database (`nodes`: who runs, seen when) and the leases that
//! give each mailbox poller and carrier registration exactly one owner (`leases`). What
//! a node holds and when a node is lost is decided in `cluster::ownership`, not here.

use super::{Result, Store, col};
use crate::crm::model::Millis;

/// A call still open in the log that another node's B2BUA opened, with when that node
/// was last seen (`None`: it has no row, it left or was forgotten).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCallOfNode {
    pub call_id: String,
    pub node_id: String,
    pub last_seen: Option<Millis>,
}

/// One row of `nodes`, with the leases the node holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    /// Its SIP address (`IP:PORT`) and HTTP address.
    pub sip: String,
    pub http: String,
    pub started_at: Millis,
    pub last_seen: Millis,
    /// Leases not run out, such as `mailbox:<id>`, in name order.
    pub leases: Vec<String>,
}

impl Store {
    /// Records this node as alive at `now` (the first call also records it as started).
    pub async fn heartbeat_node(&self, id: &str, sip: &str, http: &str, now: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO nodes (id, sip, http, started_at, last_seen) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
        )
        .bind(id)
        .bind(sip)
        .bind(http)
        .bind(now)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// A node leaving cleanly: its row and its leases go, so others take over at once.
    pub async fn remove_node(&self, id: &str) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        sqlx::query("DELETE FROM leases WHERE node_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the nodes other than `me` not seen since `before`, with their leases.
    pub async fn forget_nodes(&self, me: &str, before: Millis) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        sqlx::query(
            "DELETE FROM leases WHERE node_id <> $1 \
             AND node_id IN (SELECT id FROM nodes WHERE last_seen < $2)",
        )
        .bind(me)
        .bind(before)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM nodes WHERE id <> $1 AND last_seen < $2")
            .bind(me)
            .bind(before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every node, oldest start first, with the leases each holds at `now`.
    pub async fn nodes(&self, now: Millis) -> Result<Vec<NodeRecord>> {
        let rows = sqlx::query(
            "SELECT id, sip, http, started_at, last_seen FROM nodes ORDER BY started_at, id",
        )
        .fetch_all(self.reader())
        .await?;
        let leases = sqlx::query(
            "SELECT resource, node_id FROM leases WHERE expires_at >= $1 ORDER BY resource",
        )
        .bind(now)
        .fetch_all(self.reader())
        .await?;
        let mut nodes = rows
            .iter()
            .map(|row| {
                Ok(NodeRecord {
                    id: col(row, "id")?,
                    sip: col(row, "sip")?,
                    http: col(row, "http")?,
                    started_at: col(row, "started_at")?,
                    last_seen: col(row, "last_seen")?,
                    leases: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for row in &leases {
            let holder: String = col(row, "node_id")?;
            if let Some(node) = nodes.iter_mut().find(|n| n.id == holder) {
                node.leases.push(col(row, "resource")?);
            }
        }
        Ok(nodes)
    }

    /// Acquires or renews `resource` for `node` until `expires_at`, in one statement: it
    /// is taken only when free, already ours, or run out at `now`. True when `node`
    /// holds it afterwards.
    pub async fn acquire_lease(
        &self,
        resource: &str,
        node: &str,
        now: Millis,
        expires_at: Millis,
    ) -> Result<bool> {
        let row = sqlx::query(
            "INSERT INTO leases (resource, node_id, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (resource) DO UPDATE \
             SET node_id = excluded.node_id, expires_at = excluded.expires_at \
             WHERE leases.node_id = excluded.node_id OR leases.expires_at < $4 \
             RETURNING node_id",
        )
        .bind(resource)
        .bind(node)
        .bind(expires_at)
        .bind(now)
        .fetch_optional(self.writer())
        .await?;
        Ok(row.is_some())
    }

    /// Gives up `resource` if `node` holds it.
    pub async fn release_lease(&self, resource: &str, node: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE resource = $1 AND node_id = $2")
            .bind(resource)
            .bind(node)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// The open calls (no `ended_at`) that nodes other than `me` opened, with their
    /// nodes' last heartbeat.
    pub async fn open_calls_of_other_nodes(&self, me: &str) -> Result<Vec<OpenCallOfNode>> {
        let rows = sqlx::query(
            "SELECT c.call_id, c.node_id, n.last_seen FROM calls c \
             LEFT JOIN nodes n ON n.id = c.node_id \
             WHERE c.ended_at IS NULL AND c.node_id IS NOT NULL AND c.node_id <> $1 \
             ORDER BY c.started_at, c.call_id",
        )
        .bind(me)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OpenCallOfNode {
                    call_id: col(row, "call_id")?,
                    node_id: col(row, "node_id")?,
                    last_seen: col(row, "last_seen")?,
                })
            })
            .collect()
    }

    /// Records on a call still open that its node was lost, in `crm_reason`; once only, so
    /// two nodes sweeping at once, or a sweep repeated, append it once.
    pub async fn note_call_node_lost(&self, call_id: &str, reason: &str) -> Result<()> {
        sqlx::query(
            "UPDATE calls SET crm_reason = CASE WHEN crm_reason = '' THEN $2 \
             ELSE crm_reason || '; ' || $2 END \
             WHERE call_id = $1 AND ended_at IS NULL \
             AND crm_reason <> $2 AND crm_reason NOT LIKE ('%; ' || $2)",
        )
        .bind(call_id)
        .bind(reason)
        .execute(self.writer())
        .await?;
        Ok(())
    }
}
