//! What the gateway holds of its batches ([`Batches`]): the batches' store and the files'
//! store, `[batches]`, the signals between the endpoints and the runners (a new batch, a
//! cancel, the gateway stopping) and the counters behind the `sluice_batch_*` metrics.

use sluice_core::config::BatchesConfig;
use sluice_store::{BatchStore, FileStore};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use tokio::sync::{watch, Notify};

/// Counters of batch work.
#[derive(Debug, Default)]
pub struct BatchMetrics {
    /// Lines answered 2xx.
    pub lines_completed: AtomicU64,
    /// Lines that failed (malformed, or answered otherwise).
    pub lines_failed: AtomicU64,
    /// Lines in the pipeline now.
    pub lines_in_flight: AtomicI64,
    /// Batches this gateway runs now.
    pub running: AtomicI64,
    /// Times a line waited for interactive traffic to fall under `yield_above`.
    pub yields: AtomicU64,
    /// Times batch work waited for the spend log's records to be durable before recording
    /// results (once a line on sluice's own path, once a group of lines when collecting a
    /// forwarded batch).
    pub spend_flushes: AtomicU64,
}

/// What a batch's runner is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Its cancel was asked: finish the lines in flight, write what was done.
    Cancel,
    /// Another gateway holds its lease now: stop, write nothing.
    Lost,
}

/// The batches of a gateway. One per process, carried across config reloads.
#[derive(Debug)]
pub struct Batches {
    /// Batches and their lines' results.
    pub store: BatchStore,
    /// Input, output and error files.
    pub files: FileStore,
    /// `[batches]`.
    pub config: BatchesConfig,
    /// This process's name in the batches' leases.
    pub runner_id: String,
    /// Counters.
    pub metrics: BatchMetrics,
    /// A batch was created: look for work now.
    wake: Notify,
    /// What the runners of some batches are told.
    signals: Mutex<HashMap<String, Signal>>,
    /// `true` once the gateway is stopping.
    stopping: watch::Sender<bool>,
}

// === impl Batches ===

impl Batches {
    /// The batches kept beside `files`.
    pub fn new(files: FileStore, config: BatchesConfig) -> Self {
        let runner_id = sluice_store::files::id::random_id("runner_").unwrap_or_else(|_| {
            format!(
                "runner_{}_{}",
                std::process::id(),
                sluice_store::unix_now_ms()
            )
        });
        Self {
            store: BatchStore::new(files.index().clone()),
            files,
            config,
            runner_id,
            metrics: BatchMetrics::default(),
            wake: Notify::new(),
            signals: Mutex::default(),
            stopping: watch::Sender::new(false),
        }
    }

    /// Tells the executor there is work.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until [`Self::wake`].
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Tells batch `id`'s runner `signal` (a cancel through this gateway reaches it at
    /// once; one through another replica at its next lease renewal).
    pub fn signal(&self, id: &str, signal: Signal) {
        let mut map = self.signals.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(id.to_string(), signal);
    }

    /// What batch `id`'s runner was told, if anything.
    pub fn signalled(&self, id: &str) -> Option<Signal> {
        let map = self.signals.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(id).copied()
    }

    /// Forgets what batch `id`'s runner was told (its runner has ended).
    pub fn forget(&self, id: &str) {
        let mut map = self.signals.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(id);
    }

    /// The gateway is stopping: no line starts from now on.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
        self.wake.notify_one();
    }

    /// Whether the gateway is stopping.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once the gateway is stopping.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Appends the `sluice_batch_*` metrics' Prometheus text.
    pub fn render(&self, out: &mut String) {
        let m = &self.metrics;
        let _ = writeln!(
            out,
            "# HELP sluice_batch_lines_total Batch lines ended, by outcome.\n# TYPE sluice_batch_lines_total counter\nsluice_batch_lines_total{{outcome=\"completed\"}} {}\nsluice_batch_lines_total{{outcome=\"failed\"}} {}",
            m.lines_completed.load(Relaxed),
            m.lines_failed.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sluice_batch_lines_in_flight Batch lines in the pipeline now.\n# TYPE sluice_batch_lines_in_flight gauge\nsluice_batch_lines_in_flight {}",
            m.lines_in_flight.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sluice_batches_running Batches this gateway runs now.\n# TYPE sluice_batches_running gauge\nsluice_batches_running {}",
            m.running.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sluice_batch_yields_total Times a batch line waited for interactive traffic to fall under batches.yield_above.\n# TYPE sluice_batch_yields_total counter\nsluice_batch_yields_total {}",
            m.yields.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sluice_batch_spend_flushes_total Times batch work waited for its spend records to be durable before recording results.\n# TYPE sluice_batch_spend_flushes_total counter\nsluice_batch_spend_flushes_total {}",
            m.spend_flushes.load(Relaxed)
        );
    }
}
