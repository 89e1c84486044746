//! The in-process limiter: every counter in one `HashMap` per kind behind one `Mutex`.
//!
//! Why one lock: an admission does a few map lookups and a sum over at most 61 buckets per
//! check, nothing is awaited inside the lock, and sluice runs one worker thread per core.
//!
//! State, per name (see the parent module for the semantics it implements):
//! - window: `buckets` second -> units (a `BTreeMap`, so pruning the old ones is one
//!   `split_off`); nothing per ticket (a ticket is settled once: the caller's contract);
//! - concurrency: [`Leases`], ticket id -> expiry, with an index ordered by expiry;
//! - budget: `spent` (`None`: absent), reservation amounts by ticket id, their [`Leases`]
//!   and their sum `reserved`.
//!
//! Invariants: `reserved` is the sum of `amounts`; `amounts` and the budget's leases have
//! the same ids; a `Leases`' map and index hold the same pairs. Expired state is dropped
//! when a call touches its name, and every `SWEEP_EVERY_MS` (of the callers' clock) a sweep
//! walks every name, drops what is expired and removes names left empty (and budget counters
//! a day past their window), so memory stays bounded by the live state.

use super::check::{
    millis, Check, CheckKind, Denial, Ticket, BUDGET_GRACE_MS, CONCURRENCY_RETRY_MS, NEVER_FITS_MS,
    WINDOW_SPAN_S,
};
use crate::UnixMs;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How often (in the callers' ms) a call sweeps every name.
const SWEEP_EVERY_MS: u64 = 10_000;

/// The in-process limiter. Cheap to clone; clones share their state.
#[derive(Clone, Default)]
pub struct MemoryLimiter {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("MemoryLimiter");
        // `try_lock`: never wait (or deadlock) for a debug print.
        if let Ok(st) = self.state.try_lock() {
            d.field("windows", &st.windows.len())
                .field("concurrency", &st.leases.len())
                .field("budgets", &st.budgets.len());
        }
        d.finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    windows: HashMap<String, Window>,
    leases: HashMap<String, Leases>,
    budgets: HashMap<String, Budget>,
    next_sweep: UnixMs,
}

#[derive(Default)]
struct Window {
    buckets: BTreeMap<u64, u64>,
}

/// Leases by ticket id, with an index by expiry.
#[derive(Default)]
struct Leases {
    by_id: HashMap<String, UnixMs>,
    by_expiry: BTreeSet<(UnixMs, String)>,
}

#[derive(Default)]
struct Budget {
    spent: Option<u64>,
    window_ends: Option<UnixMs>,
    amounts: HashMap<String, u64>,
    leases: Leases,
    reserved: u64,
}

/// The entry for `name`, made empty if absent (without allocating the name when present).
fn slot<'a, T: Default>(map: &'a mut HashMap<String, T>, name: &str) -> &'a mut T {
    if !map.contains_key(name) {
        map.insert(name.to_owned(), T::default());
    }
    map.get_mut(name)
        .unwrap_or_else(|| unreachable!("inserted above"))
}

// === impl Window ===

impl Window {
    /// The first bucket in the window at second `sec`.
    fn low(sec: u64) -> u64 {
        sec.saturating_sub(WINDOW_SPAN_S)
    }

    /// Drops the buckets that left the window.
    fn prune(&mut self, sec: u64) {
        let low = Self::low(sec);
        if self
            .buckets
            .first_key_value()
            .is_some_and(|(&b, _)| b < low)
        {
            self.buckets = self.buckets.split_off(&low);
        }
    }

    /// `Err(retry_after_ms)` when `cost` does not fit now (after [`Window::prune`]).
    fn check(&self, limit: u64, cost: u64, now: UnixMs) -> Result<(), u64> {
        let mut used = self
            .buckets
            .values()
            .fold(0u64, |sum, &units| sum.saturating_add(units));
        if used.saturating_add(cost) <= limit {
            return Ok(());
        }
        if cost > limit {
            return Err(NEVER_FITS_MS);
        }
        for (&bucket, &units) in &self.buckets {
            used = used.saturating_sub(units);
            if used.saturating_add(cost) <= limit {
                // Bucket `b` is out of the window from second `b + 61` on.
                let leaves = (bucket + WINDOW_SPAN_S + 1).saturating_mul(1_000);
                return Err(leaves.saturating_sub(now));
            }
        }
        Err(NEVER_FITS_MS) // unreachable: with every bucket gone, `cost <= limit` fits
    }

    fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

// === impl Leases ===

impl Leases {
    /// Removes the leases with `expiry <= now`; returns their ids.
    fn expire(&mut self, now: UnixMs) -> Vec<String> {
        if self.by_expiry.first().is_none_or(|(e, _)| *e > now) {
            return Vec::new();
        }
        let live = self
            .by_expiry
            .split_off(&(now.saturating_add(1), String::new()));
        let gone = std::mem::replace(&mut self.by_expiry, live);
        gone.into_iter()
            .map(|(_, id)| {
                self.by_id.remove(&id);
                id
            })
            .collect()
    }

    /// Adds (or moves) the lease of `id`.
    fn insert(&mut self, id: &str, expiry: UnixMs) {
        if let Some(old) = self.by_id.insert(id.to_owned(), expiry) {
            self.by_expiry.remove(&(old, id.to_owned()));
        }
        self.by_expiry.insert((expiry, id.to_owned()));
    }

    /// Ends the lease of `id`, if any.
    fn remove(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some(expiry) => {
                self.by_expiry.remove(&(expiry, id.to_owned()));
                true
            }
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }

    fn first_expiry(&self) -> Option<UnixMs> {
        self.by_expiry.first().map(|(e, _)| *e)
    }
}

// === impl Budget ===

impl Budget {
    /// Releases the reservations whose lease ended.
    fn release_expired(&mut self, now: UnixMs) {
        for id in self.leases.expire(now) {
            if let Some(amount) = self.amounts.remove(&id) {
                self.reserved = self.reserved.saturating_sub(amount);
            }
        }
    }
}

// === impl State ===

impl State {
    fn maybe_sweep(&mut self, now: UnixMs) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now.saturating_add(SWEEP_EVERY_MS);
        let sec = now / 1_000;
        self.windows.retain(|_, w| {
            w.prune(sec);
            !w.is_empty()
        });
        self.leases.retain(|_, l| {
            l.expire(now);
            l.len() > 0
        });
        self.budgets.retain(|_, b| {
            b.release_expired(now);
            if b.window_ends
                .is_some_and(|end| end.saturating_add(BUDGET_GRACE_MS) <= now)
            {
                b.spent = None;
            }
            b.spent.is_some() || !b.amounts.is_empty()
        });
    }

    /// `Err(retry_after_ms)` when `check` refuses now.
    fn check(&mut self, check: &Check, now: UnixMs) -> Result<(), Option<u64>> {
        match check.kind {
            CheckKind::Window { limit, cost } => {
                let w = slot(&mut self.windows, &check.name);
                w.prune(now / 1_000);
                w.check(limit, cost, now).map_err(Some)
            }
            CheckKind::Concurrency { limit } => {
                let l = slot(&mut self.leases, &check.name);
                l.expire(now);
                if (l.len() as u64).saturating_add(1) <= limit {
                    return Ok(());
                }
                let sooner = l.first_expiry().map_or(u64::MAX, |e| e.saturating_sub(now));
                Err(Some(sooner.min(CONCURRENCY_RETRY_MS)))
            }
            CheckKind::Budget {
                limit,
                reserve,
                window_ends,
            } => {
                let b = slot(&mut self.budgets, &check.name);
                b.release_expired(now);
                let need = b
                    .spent
                    .unwrap_or(0)
                    .saturating_add(b.reserved)
                    .saturating_add(reserve);
                if need <= limit {
                    return Ok(());
                }
                Err(window_ends.map(|end| end.saturating_sub(now)))
            }
        }
    }

    /// Charges `check` (which passed) to ticket `id`.
    fn charge(&mut self, check: &Check, id: &str, now: UnixMs, lease_ms: u64) {
        let expiry = now.saturating_add(lease_ms);
        match check.kind {
            CheckKind::Window { cost, .. } => {
                if cost > 0 {
                    let units = slot(&mut self.windows, &check.name)
                        .buckets
                        .entry(now / 1_000)
                        .or_insert(0);
                    *units = units.saturating_add(cost);
                }
            }
            CheckKind::Concurrency { .. } => slot(&mut self.leases, &check.name).insert(id, expiry),
            CheckKind::Budget { reserve, .. } => {
                let b = slot(&mut self.budgets, &check.name);
                if !b.amounts.contains_key(id) {
                    b.amounts.insert(id.to_owned(), reserve);
                    b.reserved = b.reserved.saturating_add(reserve);
                }
                b.leases.insert(id, expiry);
            }
        }
    }

    fn settle(&mut self, ticket: &Ticket, check: &Check, actual: Option<u64>, now: UnixMs) {
        match check.kind {
            CheckKind::Window { cost, .. } => {
                let actual = actual.unwrap_or(cost);
                let bucket = ticket.at / 1_000;
                if bucket < Window::low(now / 1_000) || actual == cost {
                    return; // out of the window: left alone; or nothing to correct
                }
                let w = slot(&mut self.windows, &check.name);
                let units = w.buckets.get(&bucket).copied().unwrap_or(0);
                match units.saturating_add(actual).saturating_sub(cost) {
                    0 => w.buckets.remove(&bucket),
                    left => w.buckets.insert(bucket, left),
                };
            }
            CheckKind::Concurrency { .. } => {
                if let Some(l) = self.leases.get_mut(&check.name) {
                    l.remove(&ticket.id);
                }
            }
            CheckKind::Budget {
                reserve,
                window_ends,
                ..
            } => {
                let actual = actual.unwrap_or(reserve);
                let Some(b) = self.budgets.get_mut(&check.name) else {
                    return;
                };
                b.release_expired(now);
                let Some(amount) = b.amounts.remove(&ticket.id) else {
                    return; // settled before, or its lease ended
                };
                b.leases.remove(&ticket.id);
                b.reserved = b.reserved.saturating_sub(amount);
                if actual > 0 {
                    b.spent = Some(b.spent.unwrap_or(0).saturating_add(actual));
                    if window_ends.is_some() {
                        b.window_ends = window_ends;
                    }
                }
            }
        }
    }
}

// === impl MemoryLimiter ===

impl MemoryLimiter {
    /// A limiter with no state yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks every check; when all pass, charges every one to ticket `id` (leases and
    /// reservations until `now + lease`) and returns the ticket.
    pub fn admit(
        &self,
        id: &str,
        checks: &[Check],
        now: UnixMs,
        lease: Duration,
    ) -> Result<Ticket, Denial> {
        let mut st = self.lock();
        st.maybe_sweep(now);
        for (index, check) in checks.iter().enumerate() {
            if let Err(retry_after_ms) = st.check(check, now) {
                return Err(Denial {
                    index,
                    retry_after_ms,
                });
            }
        }
        let lease_ms = millis(lease);
        for check in checks {
            st.charge(check, id, now, lease_ms);
        }
        Ok(Ticket {
            id: id.to_owned(),
            at: now,
            lease_ends: now.saturating_add(lease_ms),
            fallback: false,
        })
    }

    /// Ends an admission (see [`super::Limiter::settle`]).
    pub fn settle(&self, ticket: &Ticket, checks: &[Check], actual: &[u64], now: UnixMs) {
        let mut st = self.lock();
        st.maybe_sweep(now);
        for (i, check) in checks.iter().enumerate() {
            st.settle(ticket, check, actual.get(i).copied(), now);
        }
    }

    /// What budget counter `name` has spent, reservations excluded; 0 if absent.
    pub fn spent(&self, name: &str) -> u64 {
        self.lock()
            .budgets
            .get(name)
            .and_then(|b| b.spent)
            .unwrap_or(0)
    }

    /// Sets budget counter `name` to `spent` unless it already holds a value.
    pub fn seed(&self, name: &str, spent: u64, window_ends: Option<UnixMs>) {
        let mut st = self.lock();
        let b = slot(&mut st.budgets, name);
        if b.spent.is_none() {
            b.spent = Some(spent);
            b.window_ends = window_ends;
        }
    }

    /// Names held (windows, concurrency limits, budgets): what the sweep keeps bounded.
    pub fn names(&self) -> usize {
        let st = self.lock();
        st.windows.len() + st.leases.len() + st.budgets.len()
    }
}
