//! Rate limits, concurrency limits and budgets: checked and charged together, atomically,
//! for one request ([`Limiter::admit`]), and settled when the request ends
//! ([`Limiter::settle`]). In process ([`Limiter::Memory`]) or global across replicas on
//! Redis ([`Limiter::Redis`], one Lua script per call, so two replicas never both take the
//! last unit).
//!
//! (Placeholder: the implementation is in progress; this admits everything.)

use crate::{StoreError, UnixMs};
use std::time::Duration;

/// One limit to check, and charge when every check of the request passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The counter's name, unique per limit, e.g. `key:{id}:rpm`, `model:{name}:tpm`,
    /// `key:{id}:budget:d:2026-12-01`. The Redis limiter prefixes it.
    pub name: String,
    /// What is checked.
    pub kind: CheckKind,
}

/// What a [`Check`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// At most `limit` units in any 60-second window: units are counted in 1-second
    /// buckets, and a request is admitted iff the units of the current second and the 60
    /// before it, plus `cost`, are at most `limit`. `cost` is charged to the current second.
    Window {
        /// Units per minute.
        limit: u64,
        /// Units this request takes (1 for requests; estimated tokens for tokens).
        cost: u64,
    },
    /// At most `limit` requests hold a lease at once. A lease ends at settle, or `lease`
    /// after admission (so a replica that dies does not hold its leases forever).
    Concurrency {
        /// Requests in flight.
        limit: u64,
    },
    /// A budget in nano-USD: admitted iff spent + reserved + `reserve` <= `limit`, where
    /// reserved sums the live reservations of admitted, unsettled requests. `reserve` is
    /// held until settle (or `lease` after admission).
    Budget {
        /// Nano-USD in the window.
        limit: u64,
        /// This request's estimated cost.
        reserve: u64,
        /// When the window ends (the counter may be forgotten after); `None`: never.
        window_ends: Option<UnixMs>,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    /// Index of the first check that refused.
    pub index: usize,
    /// When a retry may pass, in ms from now (`None`: not before the budget window ends,
    /// or never for a total budget; see [`CheckKind::Budget::window_ends`]).
    pub retry_after_ms: Option<u64>,
}

/// An admitted request: hand it back to [`Limiter::settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Unique per admission.
    pub id: String,
    /// When it was admitted.
    pub at: UnixMs,
    /// Admitted by the in-process fallback, because Redis failed.
    pub fallback: bool,
}

/// Limits in process, or on Redis.
#[derive(Debug, Clone, Default)]
pub enum Limiter {
    /// In this process.
    #[default]
    Memory,
}

impl Limiter {
    /// Checks every check; when all pass, charges every one and returns the ticket.
    pub async fn admit(
        &self,
        id: &str,
        checks: &[Check],
        now: UnixMs,
        lease: Duration,
    ) -> Result<Result<Ticket, Denial>, StoreError> {
        let _ = (checks, lease);
        Ok(Ok(Ticket {
            id: id.to_string(),
            at: now,
            fallback: false,
        }))
    }

    /// Ends an admission: `actual[i]` is what check `i` really took (Window: the actual
    /// units, replacing `cost` in the bucket it was charged to; Concurrency: ignored, the
    /// lease ends; Budget: the actual cost, added to spent as the reservation ends).
    pub async fn settle(
        &self,
        ticket: &Ticket,
        checks: &[Check],
        actual: &[u64],
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let _ = (ticket, checks, actual, now);
        Ok(())
    }

    /// What budget counter `name` has spent (nano-USD), reservations excluded.
    pub async fn spent(&self, name: &str) -> Result<u64, StoreError> {
        let _ = name;
        Ok(0)
    }

    /// Sets budget counter `name` to `spent` unless it already holds a value (a restart
    /// seeds the counters from the durable spend log).
    pub async fn seed(
        &self,
        name: &str,
        spent: u64,
        window_ends: Option<UnixMs>,
    ) -> Result<(), StoreError> {
        let _ = (name, spent, window_ends);
        Ok(())
    }
}
