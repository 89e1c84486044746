//! The counters a ledger's handles and its writer thread share, the same for both
//! implementations: records queued, dropped, failed and written.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What [`crate::Ledger::queued`], [`crate::Ledger::dropped`], [`crate::Ledger::errors`]
/// and [`crate::Ledger::written`] read.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Records sent to the writer and not yet written or given up.
    pub(crate) queued: AtomicU64,
    /// Records dropped because `max_queued` were waiting.
    pub(crate) dropped: AtomicU64,
    /// Records whose write failed.
    pub(crate) errors: AtomicU64,
    /// Records written.
    pub(crate) written: AtomicU64,
}

impl Counters {
    /// Counts one more record queued and returns how many are queued with it, unless
    /// `max_queued` are already waiting: then it is counted as dropped instead (`None`).
    pub(crate) fn enqueue(&self, max_queued: u64) -> Option<u64> {
        let before = self.queued.fetch_add(1, Relaxed);
        if before >= max_queued {
            self.queued.fetch_sub(1, Relaxed);
            self.dropped.fetch_add(1, Relaxed);
            return None;
        }
        Some(before + 1)
    }

    /// `n` queued records are done with: written, or failed.
    pub(crate) fn resolved(&self, n: usize, written: bool) {
        let n = n as u64;
        self.queued.fetch_sub(n, Relaxed);
        if written {
            self.written.fetch_add(n, Relaxed);
        } else {
            self.errors.fetch_add(n, Relaxed);
        }
    }
}
