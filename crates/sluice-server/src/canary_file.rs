//! Canary rollouts kept across restarts without Redis: each route's canary state is offered
//! to `routing.sqlite` in the data directory ([`RoutingFile`]) at start, once a second while
//! serving and at shutdown; the file keeps the newer state (the fleet's rule on Redis,
//! [`SharedCanary::supersedes`]) and the route takes what the file holds. So an advance or a
//! rollback outlives a restart, and gateways sharing a data directory share their rollouts.
//! A file that fails is logged and the canary keeps its own state.

use sluice_core::canary::{Canary, SharedCanary};
use sluice_store::RoutingFile;
use std::sync::Arc;
use std::time::Instant;

/// One rollout: its key in the file (`route:{route}:canary:{candidate}`, as on Redis; a new
/// candidate is a new rollout) and its live state.
pub type Rollout = (String, Arc<Canary>);

/// The key of `route`'s rollout of `candidate`.
pub fn key(route: &str, candidate: &str) -> String {
    format!("route:{route}:canary:{candidate}")
}

/// Offers each rollout's state to `file` and adopts what it keeps; blocks on SQLite.
pub fn sync(file: &RoutingFile, rollouts: &[Rollout]) {
    for (key, canary) in rollouts {
        let offered = canary.shared();
        let kept = file.exchange(key, |stored| {
            match stored.and_then(SharedCanary::decode) {
                Some(stored) if !offered.supersedes(&stored) => stored,
                _ => offered,
            }
            .encode()
        });
        match kept.map(|k| SharedCanary::decode(&k)) {
            Ok(Some(kept)) => {
                if canary.adopt(kept, Instant::now()) {
                    tracing::info!(rollout = %key, stage = ?kept.stage, "canary state taken from routing.sqlite");
                }
            }
            Ok(None) => {
                tracing::warn!(rollout = %key, "routing.sqlite holds an unreadable canary state")
            }
            Err(e) => {
                tracing::warn!(rollout = %key, error = %e, "cannot keep the canary state in routing.sqlite")
            }
        }
    }
}

/// [`sync`] off the runtime's threads.
pub async fn sync_async(file: &Arc<RoutingFile>, rollouts: Vec<Rollout>) {
    if rollouts.is_empty() {
        return;
    }
    let file = Arc::clone(file);
    let _ = tokio::task::spawn_blocking(move || sync(&file, &rollouts)).await;
}
