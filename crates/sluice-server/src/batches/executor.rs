//! The background task that runs batches: it looks for batches with work left whose lease
//! is free (at start, when a batch is created, and every few seconds, which is how a
//! replica takes over the batches of one that died), claims each, runs it (at most
//! `[batches] max_running` at once) and renews its lease while it runs, reading its status
//! back (a cancel asked through another replica). At shutdown it stops the runners, which
//! finish and record their lines in flight, and lets go of the leases, so the next start
//! resumes them at once.
//!
//! A batch forwarded to a provider's Batch API is run one step at a time: after each poll
//! it is parked (its lease let go, not runnable before `[batches] poll_interval_ms`), so it
//! holds no slot of `max_running` while the upstream works; a cancel makes it runnable at
//! once.
//!
//! What a kill (SIGKILL, a crash) can cost: the lines in flight at that moment, whose
//! results were not recorded, run again at the next start (and are charged again if their
//! spend records had been written). An embedded store's leases are cleared at start (its
//! data directory is one gateway's); a shared store's run out after [`LEASE`].

use super::handle::{Batches, Signal};
use super::runner::Run;
use crate::live::Live;
use sluice_store::batches::BatchStatus;
use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(30);

/// How often a running batch's lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// How often the store is searched for batches to run without being woken.
const SCAN_EVERY: Duration = Duration::from_secs(2);

fn lease_until(now_ms: u64) -> u64 {
    now_ms + LEASE.as_millis() as u64
}

/// Runs batches until the gateway stops (see the module docs); returns once every runner
/// has stopped.
pub async fn run(live: Arc<Live>) {
    let Some(batches) = live.get().batches.clone() else {
        return;
    };
    super::fault::announce();
    if batches.store.is_embedded() {
        if let Err(e) = batches.store.release_all().await {
            tracing::warn!(error = %e, "cannot clear the batches' leases");
        }
    }
    let mut running: JoinSet<String> = JoinSet::new();
    let mut ids = HashSet::new();
    while !batches.is_stopping() {
        start_runnable(&live, &batches, &mut running, &mut ids).await;
        tokio::select! {
            () = batches.woken() => {}
            () = tokio::time::sleep(SCAN_EVERY) => {}
            Some(Ok(id)) = running.join_next() => { ids.remove(&id); }
        }
    }
    while let Some(ended) = running.join_next().await {
        if let Ok(id) = ended {
            ids.remove(&id);
        }
    }
}

/// Claims and starts the batches with work left, up to `max_running`.
async fn start_runnable(
    live: &Arc<Live>,
    batches: &Arc<Batches>,
    running: &mut JoinSet<String>,
    ids: &mut HashSet<String>,
) {
    let free = batches.config.max_running.saturating_sub(ids.len());
    if free == 0 {
        return;
    }
    let now = sluice_store::unix_now_ms();
    let found = match batches.store.runnable(now, free + ids.len()).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for batches to run");
            return;
        }
    };
    let fresh: Vec<_> = found
        .into_iter()
        .filter(|b| !ids.contains(&b.id))
        .take(free)
        .collect();
    for batch in fresh {
        let claimed = batches
            .store
            .claim(&batch.id, &batches.runner_id, now, lease_until(now))
            .await;
        if !matches!(claimed, Ok(true)) {
            continue;
        }
        ids.insert(batch.id.clone());
        let run = Run {
            live: Arc::clone(live),
            batches: Arc::clone(batches),
            batch,
        };
        running.spawn(supervise(run));
    }
}

/// Runs one batch, renewing its lease meanwhile, and lets go of the lease at the end.
async fn supervise(run: Run) -> String {
    let (batches, id) = (Arc::clone(&run.batches), run.batch.id.clone());
    tracing::info!(batch = %id, status = run.batch.status.as_str(), "running batch");
    batches.metrics.running.fetch_add(1, Relaxed);
    let renew = tokio::spawn(renew(Arc::clone(&batches), id.clone()));
    let parked = super::start::go(run).await;
    renew.abort();
    batches.forget(&id);
    let store = &batches.store;
    let let_go = if parked {
        // A forwarded batch: not runnable again before its next poll.
        let every = batches.config.poll_interval;
        let until = sluice_store::unix_now_ms() + every.as_millis() as u64;
        let waker = Arc::clone(&batches);
        tokio::spawn(async move {
            tokio::time::sleep(every).await;
            waker.wake();
        });
        store.park(&id, &batches.runner_id, until).await
    } else {
        store.release(&id, &batches.runner_id).await
    };
    if let Err(e) = let_go {
        tracing::warn!(batch = %id, error = %e, "cannot let go of a batch's lease");
    }
    batches.metrics.running.fetch_sub(1, Relaxed);
    id
}

/// Renews batch `id`'s lease every [`RENEW_EVERY`]; a cancel asked elsewhere, or the lease
/// lost, is passed on to the runner.
async fn renew(batches: Arc<Batches>, id: String) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let now = sluice_store::unix_now_ms();
        let store = &batches.store;
        match store
            .claim(&id, &batches.runner_id, now, lease_until(now))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(batch = %id, "another gateway took the batch over");
                batches.signal(&id, Signal::Lost);
            }
            Err(e) => tracing::warn!(batch = %id, error = %e, "cannot renew a batch's lease"),
        }
        if let Ok(Some(b)) = store.get_any(&id).await {
            if b.status == BatchStatus::Cancelling {
                batches.signal(&id, Signal::Cancel);
            }
        }
    }
}
