//! What a cache store counts, shared by both stores: its [`CacheStats`], the increments
//! callers add ([`CounterDelta`]), and the increments not yet written.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What a store holds and has counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries not expired.
    pub entries: u64,
    /// Their value bytes (see each store for what is counted).
    pub bytes: u64,
    /// Cache hits counted with [`crate::CacheStore::add_counters`].
    pub hits: u64,
    /// Cache misses counted.
    pub misses: u64,
    /// Upstream spend avoided by hits, in nano-dollars.
    pub saved_nano_usd: u64,
    /// Upstream latency avoided by hits, in milliseconds.
    pub saved_ms: u64,
}

/// Increments for the persisted counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterDelta {
    /// Cache hits.
    pub hits: u64,
    /// Cache misses.
    pub misses: u64,
    /// Upstream spend avoided, in nano-dollars.
    pub saved_nano_usd: u64,
    /// Upstream latency avoided, in milliseconds.
    pub saved_ms: u64,
}

impl CounterDelta {
    /// Whether every field is zero.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// The counter names as the stores persist them, with their values.
    pub fn fields(&self) -> [(&'static str, u64); 4] {
        [
            ("hits", self.hits),
            ("misses", self.misses),
            ("saved_nano_usd", self.saved_nano_usd),
            ("saved_ms", self.saved_ms),
        ]
    }
}

/// Counter increments not yet written: `add_counters` is four relaxed atomic adds, and the
/// store's writer takes the sum in one swap per batch.
#[derive(Debug, Default)]
pub(crate) struct PendingCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    saved_nano_usd: AtomicU64,
    saved_ms: AtomicU64,
}

impl PendingCounters {
    pub(crate) fn add(&self, d: CounterDelta) {
        for (cell, n) in [
            (&self.hits, d.hits),
            (&self.misses, d.misses),
            (&self.saved_nano_usd, d.saved_nano_usd),
            (&self.saved_ms, d.saved_ms),
        ] {
            if n != 0 {
                cell.fetch_add(n, Relaxed);
            }
        }
    }

    pub(crate) fn take(&self) -> CounterDelta {
        CounterDelta {
            hits: self.hits.swap(0, Relaxed),
            misses: self.misses.swap(0, Relaxed),
            saved_nano_usd: self.saved_nano_usd.swap(0, Relaxed),
            saved_ms: self.saved_ms.swap(0, Relaxed),
        }
    }
}
