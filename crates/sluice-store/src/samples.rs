//! Sampled payloads (`[observability] sample_rate`): a share of requests' bodies and
//! answers, kept for a while to compare what a route's targets answer (a canary's against
//! the stable target's). What the server hands here is already cleaned of secrets and
//! redacted by the guardrails; this module only keeps, lists and expires it.
//!
//! - Embedded: `samples.sqlite` in the data directory ([`SqliteSamples`]), a file of its
//!   own so that bodies never wait behind the ledger's spend batches.
//! - Replicas: the `samples` table of the ledger's PostgreSQL ([`PgSamples`]).
//!
//! Writes purge expired samples at most hourly.

pub mod postgres;
pub mod sqlite;
pub mod types;

pub use postgres::PgSamples;
pub use sqlite::SqliteSamples;
pub use types::{Sample, SampleQuery, StoredSample, MAX_PAGE};

use crate::StoreError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// How often writes purge expired samples, at most (milliseconds).
const PURGE_EVERY_MS: u64 = 3_600_000;

/// Where the samples are.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `samples.sqlite`, on a thread of its own.
    Sqlite(SqliteSamples),
    /// The ledger's PostgreSQL, on a thread of its own.
    Postgres(PgSamples),
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    /// When a write last purged expired samples (Unix ms).
    purged_at: AtomicU64,
}

/// The samples' store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SampleStore {
    inner: Arc<Inner>,
}

/// A write under way.
pub type Write = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

impl SampleStore {
    /// A store over `backend`.
    pub fn new(backend: Backend) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                purged_at: AtomicU64::new(0),
            }),
        }
    }

    /// Keeps `sample`: the write starts at once on the store's thread (writes started
    /// together go in one transaction on SQLite); the future tells how it went and need
    /// not be awaited for the write to happen. Purges expired samples too when an hour
    /// passed since the last purge.
    pub fn keep(&self, sample: Sample) -> Write {
        let now = sample.ts_ms;
        let last = self.inner.purged_at.load(Relaxed);
        let purge = now >= last.saturating_add(PURGE_EVERY_MS)
            && self
                .inner
                .purged_at
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok();
        let purge_before = purge.then_some(now);
        match &self.inner.backend {
            Backend::Sqlite(b) => Box::pin(b.put(sample, purge_before)),
            Backend::Postgres(b) => Box::pin(b.put(sample, purge_before)),
        }
    }

    /// Samples matching `q`, newest first.
    pub async fn list(&self, q: &SampleQuery) -> Result<Vec<StoredSample>, StoreError> {
        match &self.inner.backend {
            Backend::Sqlite(b) => b.list(q).await,
            Backend::Postgres(b) => b.list(q).await,
        }
    }

    /// Deletes every sample expired at `now_ms`; how many.
    pub async fn purge(&self, now_ms: u64) -> Result<u64, StoreError> {
        match &self.inner.backend {
            Backend::Sqlite(b) => b.purge(now_ms).await,
            Backend::Postgres(b) => b.purge(now_ms).await,
        }
    }
}
