//! What the in-memory and the Redis limiter share: the checks a request asks for, the
//! answers (a [`Ticket`] or a [`Denial`]), and the constants of the semantics documented on
//! the parent module.

use crate::UnixMs;
use std::time::Duration;

/// Buckets before the current one that a window counts (so a window spans 61 buckets).
pub(super) const WINDOW_SPAN_S: u64 = 60;

/// A window refusal's retry-after when `cost > limit`: it never fits.
pub(super) const NEVER_FITS_MS: u64 = 60_000;

/// A concurrency refusal's retry-after when no lease ends sooner.
pub(super) const CONCURRENCY_RETRY_MS: u64 = 1_000;

/// How long a budget counter outlives its window.
pub(super) const BUDGET_GRACE_MS: u64 = 86_400_000;

/// One limit to check, and charge when every check of the request passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The counter's name, unique per limit: a [`super::LimitId`]'s name (`key:{id}:rpm`,
    /// `model:{name}:tpm`, `key:{id}:budget:d:2026-12-01`; see [`super::LimitId::check`]).
    /// The Redis limiter prefixes it.
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
    /// When a retry may pass, in ms from now. A budget answers the ms until its window ends
    /// ([`CheckKind::Budget::window_ends`]), and `None` for a total budget (never).
    pub retry_after_ms: Option<u64>,
}

/// An admitted request: hand it back to [`super::Limiter::settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Unique per admission.
    pub id: String,
    /// When it was admitted.
    pub at: UnixMs,
    /// When its leases and reservations end (`at` plus the lease).
    pub lease_ends: UnixMs,
    /// Admitted by the in-process fallback, because Redis failed.
    pub fallback: bool,
}

/// A duration in whole ms, saturating.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
