//! The calls of a lost node: a node killed without a shutdown leaves the calls it had
//! logged as open. Every node sweeps for them every [`SWEEP_EVERY`] and closes those whose
//! node has not been seen for [`LOST_AFTER_MS`]: `ended` now with the outcome `failed`,
//! through the same call-event path as any `ended` (so an unanswered call keeps its
//! call-back activity, and a call closed by two sweeping nodes is closed once), and
//! "node lost" added to the call's `crm_reason`. [`lost_calls`] decides which; [`sweep`]
//! is the task.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::NodeId;
use crate::crm::model::{CallEventKind, CallOutcome, Millis};
use crate::store::cluster::OpenCallOfNode;
use crate::store::{CallEvent, Store, StoreError, now_ms};

/// How often a node looks for lost nodes' calls.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// A node not seen for this long is lost: many missed heartbeats (one every 2 s), so a
/// node that is only slow to reach the database keeps its calls.
pub const LOST_AFTER_MS: Millis = 30_000;
/// What is added to a closed call's `crm_reason`.
pub const REASON: &str = "node lost";

/// The open calls, among those other nodes opened, whose node is lost at `now`: not seen
/// for more than [`LOST_AFTER_MS`], or gone from the nodes (it left or was forgotten).
pub fn lost_calls(open: &[OpenCallOfNode], now: Millis) -> Vec<&OpenCallOfNode> {
    open.iter()
        .filter(|call| match call.last_seen {
            Some(seen) => now.saturating_sub(seen) > LOST_AFTER_MS,
            None => true,
        })
        .collect()
}

/// Sweeps until `cancel`. Never closes this node's own calls: a node cut off from the
/// database still runs them.
pub async fn sweep(store: Store, node: NodeId, cancel: CancellationToken) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        match sweep_once(&store, &node).await {
            Ok(()) if failing => {
                tracing::info!("lost nodes' calls are swept again");
                failing = false;
            }
            Ok(()) => {}
            Err(err) if !failing => {
                tracing::warn!(%err, "cannot sweep lost nodes' calls");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

async fn sweep_once(store: &Store, node: &NodeId) -> Result<(), StoreError> {
    let open = store.open_calls_of_other_nodes(node.as_str()).await?;
    for lost in lost_calls(&open, now_ms()) {
        let Some(call) = store.call_by_call_id(&lost.call_id).await? else {
            continue;
        };
        // The reason first: a sweep cut short between the two finds the call still open
        // and closes it, and the reason is never added twice.
        store.note_call_node_lost(&call.call_id, REASON).await?;
        let ended = CallEvent {
            call_id: call.call_id.clone(),
            event: CallEventKind::Ended,
            direction: call.direction,
            from: call.from.clone(),
            to: call.to.clone(),
            user: None,
            outcome: Some(CallOutcome::Failed),
            at: now_ms(),
            diverted_from: None,
            verstat: None,
        };
        let outcome = store.apply_call_event(&ended).await?;
        if !outcome.repeated {
            tracing::warn!(call_id = %call.call_id, node = %lost.node_id, "closed a lost node's call");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(call: &str, node: &str, last_seen: Option<Millis>) -> OpenCallOfNode {
        OpenCallOfNode {
            call_id: call.to_owned(),
            node_id: node.to_owned(),
            last_seen,
        }
    }

    fn ids(calls: Vec<&OpenCallOfNode>) -> Vec<&str> {
        calls.into_iter().map(|c| c.call_id.as_str()).collect()
    }

    #[test]
    fn a_node_seen_within_the_limit_keeps_its_calls() {
        let now = 1_000_000;
        let calls = [
            open("a", "n1", Some(now)),
            open("b", "n1", Some(now - LOST_AFTER_MS)),
        ];
        assert!(lost_calls(&calls, now).is_empty());
    }

    #[test]
    fn a_node_not_seen_past_the_limit_loses_its_calls() {
        let now = 1_000_000;
        let calls = [
            open("a", "n1", Some(now - LOST_AFTER_MS - 1)),
            open("b", "n2", Some(now - 1_000)),
            open("c", "n1", Some(now - LOST_AFTER_MS - 1)),
        ];
        assert_eq!(ids(lost_calls(&calls, now)), ["a", "c"]);
    }

    #[test]
    fn a_node_without_a_row_is_lost() {
        let calls = [open("a", "gone", None), open("b", "n2", Some(5))];
        assert_eq!(ids(lost_calls(&calls, 10)), ["a"]);
    }

    #[test]
    fn a_clock_behind_the_heartbeat_loses_nothing() {
        let calls = [open("a", "n1", Some(50_000))];
        assert!(lost_calls(&calls, 10_000).is_empty());
    }
}
