//! The samples' writer: a thread of its own, off every request's path, that takes sampled
//! requests from a bounded queue ([`QUEUE`]), cleans their bodies (secrets and redacted
//! values replaced) and writes them to the store, the ones queued together at once (one
//! transaction on SQLite). What does not fit the queue, or whose write fails, is dropped
//! and counted; nothing is retried.

use super::clean::{clean, Cleaners};
use sluice_store::samples::{Sample, Write};
use sluice_store::SampleStore;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Samples waiting to be written, at most. Each holds at most two bodies of
/// `sample_max_bytes`, so the queue holds at most `2 × QUEUE × sample_max_bytes` (32 MiB at
/// the default 64 KiB).
pub const QUEUE: usize = 256;

/// Samples cleaned and written together, at most.
const BATCH: usize = 64;

enum Msg {
    Keep(Box<Sample>, Cleaners),
    /// Write what is queued now, then say so.
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
struct Counters {
    kept: AtomicU64,
    dropped_full: AtomicU64,
    failed: AtomicU64,
}

/// Cleans and writes samples on a thread of its own. One per gateway (kept across
/// reloads).
#[derive(Debug)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    store: SampleStore,
    counters: Arc<Counters>,
}

impl Writer {
    /// Starts the writer's thread, writing to `store`.
    pub fn start(store: SampleStore) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = Thread {
            rx,
            store: store.clone(),
            counters: Arc::clone(&counters),
            failing: false,
        };
        std::thread::Builder::new()
            .name("sluice-samples".into())
            .spawn(move || runtime.block_on(thread.run()))?;
        Ok(Arc::new(Self {
            tx,
            store,
            counters,
        }))
    }

    /// Queues `sample`, to be cleaned by `cleaners` and written; drops (and counts) it when
    /// the queue is full. Never waits.
    pub fn submit(&self, sample: Sample, cleaners: Cleaners) {
        if self
            .tx
            .try_send(Msg::Keep(Box::new(sample), cleaners))
            .is_err()
        {
            self.counters.dropped_full.fetch_add(1, Relaxed);
        }
    }

    /// Writes everything queued so far and waits (at most `timeout`) until it is written.
    pub async fn flush(&self, timeout: Duration) {
        let (done, written) = oneshot::channel();
        let flushed = async {
            if self.tx.send(Msg::Flush(done)).await.is_ok() {
                let _ = written.await;
            }
        };
        if tokio::time::timeout(timeout, flushed).await.is_err() {
            tracing::warn!("sampled payloads were not all written before shutdown");
        }
    }

    /// The store the samples are written to.
    pub fn store(&self) -> &SampleStore {
        &self.store
    }

    /// The writer's counters, in Prometheus text.
    pub fn render(&self, out: &mut String) {
        let c = &self.counters;
        let _ = write!(
            out,
            "# HELP sluice_samples_kept_total Sampled payloads written to the store.\n\
             # TYPE sluice_samples_kept_total counter\n\
             sluice_samples_kept_total {}\n\
             # HELP sluice_samples_dropped_total Sampled payloads not kept: the writer's queue was full, or their write failed.\n\
             # TYPE sluice_samples_dropped_total counter\n\
             sluice_samples_dropped_total{{reason=\"queue_full\"}} {}\n\
             sluice_samples_dropped_total{{reason=\"write_failed\"}} {}\n",
            c.kept.load(Relaxed),
            c.dropped_full.load(Relaxed),
            c.failed.load(Relaxed),
        );
    }
}

/// The writer's thread.
struct Thread {
    rx: mpsc::Receiver<Msg>,
    store: SampleStore,
    counters: Arc<Counters>,
    /// The last write failed (its error was logged; the next failures are not).
    failing: bool,
}

impl Thread {
    async fn run(mut self) {
        let mut writes: Vec<Write> = Vec::with_capacity(BATCH);
        let mut flushed = Vec::new();
        // Every sender gone: the gateway stopped.
        while let Some(first) = self.rx.recv().await {
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Keep(mut sample, cleaners) => {
                        sample.request = clean(&cleaners, sample.request);
                        sample.response = sample.response.map(|r| clean(&cleaners, r));
                        writes.push(self.store.keep(*sample));
                    }
                    Msg::Flush(done) => flushed.push(done),
                }
                if writes.len() < BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            for write in writes.drain(..) {
                self.count(write.await);
            }
            for done in flushed.drain(..) {
                let _ = done.send(());
            }
        }
    }

    fn count(&mut self, written: Result<(), sluice_store::StoreError>) {
        match written {
            Ok(()) => {
                self.counters.kept.fetch_add(1, Relaxed);
                if std::mem::take(&mut self.failing) {
                    tracing::info!("sampled payloads are written again");
                }
            }
            Err(e) => {
                self.counters.failed.fetch_add(1, Relaxed);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(error = %e, "a sampled payload was not written; dropped");
                }
            }
        }
    }
}
