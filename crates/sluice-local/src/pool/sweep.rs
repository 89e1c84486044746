//! Keep-alive expiry: [`Pool::sweep`] and the task that runs it, [`Pool::run_sweeper`].

use std::time::{Duration, Instant};

use super::clock::Clock;
use super::events::Eviction;
use super::handle::Pool;
use super::loader::Loader;
use super::state::{dispose, Phase};

/// Upper bound of one [`Pool::run_sweeper`] sleep.
const SWEEP_MAX_SLEEP: Duration = Duration::from_secs(60);

impl<L: Loader, C: Clock> Pool<L, C> {
    /// Unloads idle, unpinned models whose keep-alive has expired; returns their names.
    /// The models are dropped on the blocking pool when called inside a tokio runtime.
    pub fn sweep(&self) -> Vec<String> {
        let mut state = self.inner.lock();
        let now = self.inner.clock.now();
        let expired: Vec<String> = state
            .entries
            .iter()
            .filter(|(name, entry)| {
                let pinned = state.models.get(*name).is_some_and(|r| r.pinned);
                matches!(entry.phase, Phase::Loaded(_))
                    && entry.in_flight == 0
                    && !pinned
                    && entry
                        .keep_alive
                        .expires_at(entry.last_used)
                        .is_some_and(|at| at <= now)
            })
            .map(|(name, _)| name.clone())
            .collect();
        let mut models = Vec::new();
        for name in &expired {
            if let Some(entry) = state.entries.remove(name) {
                tracing::info!(model = %name, bytes = entry.reserved, "unloading idle local model");
                self.inner.evicted(name, Eviction::KeepAlive);
                models.push(entry.phase);
            }
        }
        drop(state);
        dispose(models);
        expired
    }

    /// The earliest instant an idle model expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        let state = self.inner.lock();
        state
            .entries
            .iter()
            .filter(|(name, entry)| {
                matches!(entry.phase, Phase::Loaded(_))
                    && entry.in_flight == 0
                    && !state.models.get(*name).is_some_and(|r| r.pinned)
            })
            .filter_map(|(_, entry)| entry.keep_alive.expires_at(entry.last_used))
            .min()
    }

    /// Sweeps at every expiry (at least once a minute) until `shutdown` completes. Sleeps on
    /// tokio's timer, so it is meant for the [`SystemClock`](crate::pool::SystemClock).
    pub async fn run_sweeper(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.sweep();
            let now = self.inner.clock.now();
            let wait = self
                .next_expiry()
                .map_or(SWEEP_MAX_SLEEP, |at| at.saturating_duration_since(now))
                .clamp(Duration::from_millis(10), SWEEP_MAX_SLEEP);
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
                () = self.inner.changed.notified() => {}
            }
        }
    }
}
