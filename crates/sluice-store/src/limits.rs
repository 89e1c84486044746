//! Rate limits, concurrency limits and budgets: checked and charged together, atomically,
//! for one request ([`Limiter::admit`]), and settled when the request ends
//! ([`Limiter::settle`], or [`Limiter::settle_later`] without waiting). In process
//! ([`Limiter::Memory`], a [`MemoryLimiter`]) or global across replicas on Redis
//! ([`Limiter::Redis`], a [`RedisLimiter`]: one Lua script decides each ticket, so two
//! replicas never both take the last unit; the tickets of a thread's concurrent requests
//! share one call).
//!
//! Semantics, the same for both (the Redis scripts are a transcription of the memory code,
//! and a property test runs both on one random sequence and compares every decision):
//!
//! - Time is the caller's `now` (Unix ms), never a server clock: on Redis the replicas' wall
//!   clocks are assumed NTP-close. A second is bucket `now / 1000`.
//! - [`CheckKind::Window`]: the units of the buckets `>= now_s - 60` (the current second,
//!   the 60 before it, and any "future" bucket a replica with a clock slightly ahead wrote)
//!   plus `cost` must be at most `limit`; `cost` is charged to bucket `now_s`. Buckets older
//!   than that are deleted when seen. Refused: retry after the ms until enough of the oldest
//!   buckets have left the window for `cost` to fit (bucket `b` leaves at second `b + 61`),
//!   or 60,000 when `cost > limit` (it never fits).
//! - [`CheckKind::Concurrency`]: leases `ticket id -> expiry` (`now + lease`); a lease with
//!   `expiry <= now` is gone. Admitted iff live leases + 1 <= `limit`. Refused: retry after
//!   1,000 ms, or sooner when the earliest lease ends sooner.
//! - [`CheckKind::Budget`]: a spent counter (absent until the first settle with a non-zero
//!   cost, or a [`Limiter::seed`]) and reservations `ticket id -> (amount, expiry)`, with
//!   their sum. Admitted iff spent + reserved + `reserve` <= `limit`. Refused: retry after
//!   the ms until `window_ends`, `None` for a total budget.
//! - All or nothing: every check is evaluated first (stopping at the first refusal, whose
//!   index the [`Denial`] reports); only when all pass is every one charged. A refused
//!   request charges nothing (it may delete expired state).
//! - Settle, per check: Window: if the bucket charged at admission (`ticket.at / 1000`) is
//!   still in the window, it is corrected by `actual - cost`, never below zero (a bucket
//!   already out of the window is left alone). Concurrency: the lease ends. Budget: the
//!   expired reservations are released; if this ticket's reservation is still there it is
//!   removed and `actual` is added to spent. A settle after the lease ended
//!   ([`Ticket::lease_ends`]) adds nothing: the lease must outlast the longest request (the
//!   durable spend log stays exact and re-seeds the counters on restart).
//!   A missing `actual[i]` counts as the estimate (`cost` / `reserve`).
//! - Settle is called once per ticket, with the checks given to admit (or some of them):
//!   the caller's contract, as nothing records which tickets were settled (that record,
//!   one entry per request of the last minute, cost more than the rest of the limiter). A
//!   second settle would correct its windows again; its leases and reservations end once
//!   (a second settle of those changes nothing).
//! - Names: a check's name is used by one kind only, and is unique within a request.
//!   Ticket ids are unique per admission.
//!
//! Memory stays bounded: every state is swept now and then (see [`MemoryLimiter`]); on
//! Redis every key but a total budget's counter expires (see [`RedisLimiter`] for the
//! layout).

mod check;
mod id;
mod memory;
mod redis;
#[cfg(test)]
mod tests;

pub use check::{Check, CheckKind, Denial, Ticket};
pub use id::LimitId;
pub use memory::MemoryLimiter;
pub use redis::RedisLimiter;

use crate::{StoreError, UnixMs};
use std::time::Duration;

/// Limits in process, or on Redis. Cheap to clone; clones share their state.
#[derive(Debug, Clone)]
pub enum Limiter {
    /// In this process.
    Memory(MemoryLimiter),
    /// On Redis, global across replicas; fails open to an in-process fallback.
    Redis(RedisLimiter),
}

impl Default for Limiter {
    fn default() -> Self {
        Self::memory()
    }
}

impl Limiter {
    /// An in-process limiter with no state yet.
    pub fn memory() -> Self {
        Self::Memory(MemoryLimiter::new())
    }

    /// A limiter on the Redis at `url`, its keys `{prefix}lim:{name}...` (the prefix like the
    /// cache's, e.g. `sluice:`), every call limited to `op_timeout`. Connects lazily.
    pub fn redis(url: &str, prefix: &str, op_timeout: Duration) -> Result<Self, StoreError> {
        Ok(Self::Redis(RedisLimiter::new(url, prefix, op_timeout)?))
    }

    /// Admissions the Redis limiter handed to its in-process fallback because Redis failed
    /// (always 0 for the memory limiter).
    pub fn fallbacks(&self) -> u64 {
        match self {
            Self::Memory(_) => 0,
            Self::Redis(r) => r.fallbacks(),
        }
    }

    /// Checks every check; when all pass, charges every one and returns the ticket. The
    /// Redis limiter never fails: when Redis does, its in-process fallback decides (the
    /// ticket says `fallback: true`).
    pub async fn admit(
        &self,
        id: &str,
        checks: &[Check],
        now: UnixMs,
        lease: Duration,
    ) -> Result<Result<Ticket, Denial>, StoreError> {
        Ok(match self {
            Self::Memory(m) => m.admit(id, checks, now, lease),
            Self::Redis(r) => r.admit(id, checks, now, lease).await,
        })
    }

    /// Ends an admission: `actual[i]` is what check `i` really took (Window: the actual
    /// units, replacing `cost` in the bucket it was charged to; Concurrency: ignored, the
    /// lease ends; Budget: the actual cost, added to spent as the reservation ends). Pass
    /// the checks given to [`Limiter::admit`] (or some of them: a window whose actual is its
    /// cost has nothing to settle), and call it once per ticket: a second settle corrects
    /// the windows again. A fallback ticket is settled by the fallback; a Redis ticket
    /// while Redis fails returns the error (its leases and reservations then end with
    /// their lease).
    pub async fn settle(
        &self,
        ticket: &Ticket,
        checks: &[Check],
        actual: &[u64],
        now: UnixMs,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.settle(ticket, checks, actual, now);
                Ok(())
            }
            Self::Redis(r) => r.settle(ticket, checks, actual, now).await,
        }
    }

    /// [`Limiter::settle`] without waiting: in process at once; on Redis queued, and sent
    /// with this thread's next call (a crash loses the queued ones: see [`RedisLimiter`]).
    /// On Redis it needs a tokio runtime.
    pub fn settle_later(&self, ticket: &Ticket, checks: &[Check], actual: &[u64], now: UnixMs) {
        match self {
            Self::Memory(m) => m.settle(ticket, checks, actual, now),
            Self::Redis(r) => r.settle_later(ticket, checks, actual, now),
        }
    }

    /// Settles given to [`Limiter::settle_later`] that never reached Redis (their call
    /// failed, or too many were queued); always 0 for the memory limiter.
    pub fn settles_dropped(&self) -> u64 {
        match self {
            Self::Memory(_) => 0,
            Self::Redis(r) => r.settles_dropped(),
        }
    }

    /// Sends what is queued for Redis, waiting up to `limit` (for a shutdown); whether
    /// nothing is left. The memory limiter has nothing to send.
    pub async fn flush(&self, limit: Duration) -> bool {
        match self {
            Self::Memory(_) => true,
            Self::Redis(r) => r.flush(limit).await,
        }
    }

    /// What budget counter `name` has spent (nano-USD), reservations excluded; 0 if absent.
    pub async fn spent(&self, name: &str) -> Result<u64, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.spent(name)),
            Self::Redis(r) => r.spent(name).await,
        }
    }

    /// Sets budget counter `name` to `spent` unless it already holds a value (a restart
    /// seeds the counters from the durable spend log).
    pub async fn seed(
        &self,
        name: &str,
        spent: u64,
        window_ends: Option<UnixMs>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.seed(name, spent, window_ends);
                Ok(())
            }
            Self::Redis(r) => r.seed(name, spent, window_ends).await,
        }
    }
}
