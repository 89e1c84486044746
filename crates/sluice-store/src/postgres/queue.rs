//! The records waiting for the writer, with the tries each has had: when the next batch is
//! due, when a failed one may be tried again, which records are given up, and the flushes
//! waiting for them.

use super::backoff::Backoff;
use crate::ledger::types::SpendRecord;
use crate::StoreError;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Tries a record gets before it is given up and counted in [`super::PgLedger::errors`].
pub const MAX_ATTEMPTS: u32 = 6;

/// A record waiting for the writer.
pub(super) struct Pending {
    pub(super) record: Box<SpendRecord>,
    /// When the writer received it.
    arrived: Instant,
    /// Failed tries so far.
    attempts: u32,
}

/// The waiting records, oldest first, and the flushes waiting for them.
pub(super) struct Queue {
    batch_size: usize,
    flush_interval: Duration,
    pending: VecDeque<Pending>,
    /// No batch written before this (set after a failed one).
    retry_at: Option<Instant>,
    /// The wait after the next failed batch.
    backoff: Backoff,
    /// Records received since open.
    received: u64,
    /// Flushes waiting, with the count of records received before each.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
}

impl Queue {
    /// Batches of at most `batch_size` (at least 1), due once the oldest record has waited
    /// `flush_interval`.
    pub(super) fn new(batch_size: usize, flush_interval: Duration) -> Self {
        Self {
            batch_size: batch_size.max(1),
            flush_interval,
            pending: VecDeque::new(),
            retry_at: None,
            backoff: Backoff::default(),
            received: 0,
            flushes: Vec::new(),
        }
    }

    /// A record received.
    pub(super) fn push(&mut self, record: Box<SpendRecord>) {
        self.received += 1;
        self.pending.push_back(Pending {
            record,
            arrived: Instant::now(),
            attempts: 0,
        });
    }

    /// A flush: answered once every record received before it is written or given up.
    pub(super) fn flush(&mut self, reply: oneshot::Sender<()>) {
        self.flushes.push((self.received, reply));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether a whole batch is waiting.
    pub(super) fn is_full(&self) -> bool {
        self.pending.len() >= self.batch_size
    }

    /// When the next batch is due, if a record waits: now for a whole batch or a flush,
    /// else when the oldest record has waited `flush_interval`; never before the retry
    /// time of a failed batch.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let front = self.pending.front()?;
        let mut due = if self.is_full() || !self.flushes.is_empty() {
            Instant::now()
        } else {
            front.arrived + self.flush_interval
        };
        if let Some(at) = self.retry_at {
            due = due.max(at);
        }
        Some(due)
    }

    /// Whether a batch is due at `now`.
    pub(super) fn due(&self, now: Instant) -> bool {
        let Some(front) = self.pending.front() else {
            return false;
        };
        if self.retry_at.is_some_and(|at| now < at) {
            return false;
        }
        self.is_full() || !self.flushes.is_empty() || now >= front.arrived + self.flush_interval
    }

    /// The next batch: the oldest `batch_size` waiting records.
    pub(super) fn batch(&mut self) -> &[Pending] {
        let n = self.pending.len().min(self.batch_size);
        &self.pending.make_contiguous()[..n]
    }

    /// The batch of `n` records is written.
    pub(super) fn written(&mut self, n: usize) {
        self.pending.drain(..n);
        self.retry_at = None;
        self.backoff.reset();
    }

    /// No batch before `at` (the connection's own backoff): not a try.
    pub(super) fn wait_until(&mut self, at: Instant) {
        self.retry_at = Some(at);
    }

    /// The batch of `n` records failed with `e`, and with it every waiting record's try if
    /// `all` (the connection broke). Gives up the records that have had [`MAX_ATTEMPTS`]
    /// tries and returns how many.
    pub(super) fn failed(&mut self, n: usize, all: bool, e: &StoreError) -> usize {
        let retry_in = self.backoff.fail();
        self.retry_at = Some(Instant::now() + retry_in);
        // A broken connection fails every waiting record's try, a statement's error only
        // the batch's: either way a prefix of the queue, so the records given up (those at
        // MAX_ATTEMPTS) are the oldest, and flushes stay in order.
        let tried = if all { self.pending.len() } else { n };
        for p in self.pending.iter_mut().take(tried) {
            p.attempts += 1;
        }
        let mut given_up = 0;
        while self
            .pending
            .front()
            .is_some_and(|p| p.attempts >= MAX_ATTEMPTS)
        {
            self.pending.pop_front();
            given_up += 1;
        }
        if given_up > 0 {
            tracing::warn!(
                records = given_up,
                error = %e,
                "postgres ledger: records given up after {MAX_ATTEMPTS} tries"
            );
        } else {
            tracing::warn!(
                records = tried,
                error = %e,
                ?retry_in,
                "postgres ledger: write failed, will retry"
            );
        }
        given_up
    }

    /// Answers the flushes whose records are all written or given up.
    pub(super) fn answer_flushes(&mut self) {
        let resolved = self.received - self.pending.len() as u64;
        if self.flushes.iter().any(|(target, _)| *target <= resolved) {
            for (target, reply) in std::mem::take(&mut self.flushes) {
                if target <= resolved {
                    let _ = reply.send(());
                } else {
                    self.flushes.push((target, reply));
                }
            }
        }
    }

    /// Drops every waiting record (at shutdown); returns how many.
    pub(super) fn clear(&mut self) -> usize {
        let rest = self.pending.len();
        self.pending.clear();
        rest
    }

    /// Answers every flush, whatever became of its records (at shutdown).
    pub(super) fn release_flushes(&mut self) {
        for (_, reply) in self.flushes.drain(..) {
            let _ = reply.send(());
        }
    }
}
