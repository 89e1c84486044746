//! The overview's history: what the gateway served, minute by minute, for the last 24
//! hours, kept in its memory (`GET /admin/history` serves it, the console's overview draws
//! it).
//!
//! A task wakes at each minute's turn (started by the server) and keeps the counters' growth over the
//! minute that ended: requests, errors, the latency histogram's buckets, tokens, spend, the
//! cache's hits, lookups and savings. Quantiles come from the buckets' growth, as
//! Prometheus' `histogram_quantile` over a `rate` does, so minutes can be merged into longer
//! steps exactly. At most [`KEEP`] minutes are kept (about 200 KB); the current minute is
//! read when asked, so a request shows at once.
//!
//! A config reload rebuilds the per-model metrics (they start again at zero) but keeps the
//! cache's and the spend's counters: the minute of a reload adds what the old state counted
//! since the last turn to what the new one counted since the reload.
//!
//! Why memory and not the spend log: the spend log has no histogram, so a minute's p95 would
//! mean reading and sorting every record of the day (the console reads only the daily
//! roll-ups, to stay fast on big logs), and the console's totals are this process's anyway
//! (`/metrics`). The history is lost on restart and is each replica's own; the spend log's
//! daily roll-ups (the overview's last 30 days) are what survives and what replicas share,
//! and Prometheus keeps fleet-wide history of the same series.

use crate::metrics::{Metrics, BUCKETS};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Minutes kept: 24 hours.
pub const KEEP: u64 = 24 * 60;

/// Latency buckets, not cumulative (see [`crate::metrics::Histogram::add_counts`]).
pub type Buckets = [u64; BUCKETS.len() + 1];

/// Counts over a span of time (or since a start, as totals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests answered.
    pub requests: u64,
    /// Of them, answered with a status of 400 or more.
    pub errors: u64,
    /// Their latencies.
    pub latency: Buckets,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Completion tokens.
    pub tokens_out: u64,
    /// Upstream spend, nano-USD.
    pub spend_nano_usd: u64,
    /// Cache hits and coalesced requests.
    pub cache_hits: u64,
    /// Those and the cache's misses.
    pub cache_lookups: u64,
    /// What the hits saved, nano-USD.
    pub saved_nano_usd: u64,
}

// === impl Counts ===

impl Counts {
    /// `self + other`, field by field.
    pub fn plus(&self, other: &Self) -> Self {
        self.zip(other, u64::saturating_add)
    }

    /// `self - other`, field by field, never below zero.
    pub fn minus(&self, other: &Self) -> Self {
        self.zip(other, u64::saturating_sub)
    }

    fn zip(&self, o: &Self, f: fn(u64, u64) -> u64) -> Self {
        let mut latency = self.latency;
        for (a, b) in latency.iter_mut().zip(&o.latency) {
            *a = f(*a, *b);
        }
        Self {
            requests: f(self.requests, o.requests),
            errors: f(self.errors, o.errors),
            latency,
            tokens_in: f(self.tokens_in, o.tokens_in),
            tokens_out: f(self.tokens_out, o.tokens_out),
            spend_nano_usd: f(self.spend_nano_usd, o.spend_nano_usd),
            cache_hits: f(self.cache_hits, o.cache_hits),
            cache_lookups: f(self.cache_lookups, o.cache_lookups),
            saved_nano_usd: f(self.saved_nano_usd, o.saved_nano_usd),
        }
    }

    /// The `q` quantile of the latencies, in seconds, interpolated inside its bucket as
    /// Prometheus' `histogram_quantile` does (the top bucket's lower bound when it falls
    /// past the last bound); `None` without requests.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count: u64 = self.latency.iter().sum();
        if count == 0 {
            return None;
        }
        let rank = q * count as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for (i, n) in self.latency.iter().enumerate() {
            let upto = below + n;
            if upto as f64 >= rank {
                let Some(upper) = BUCKETS.get(i) else {
                    return Some(lower);
                };
                return Some(match n {
                    0 => *upper,
                    n => lower + (upper - lower) * (rank - below as f64) / *n as f64,
                });
            }
            (lower, below) = (BUCKETS.get(i).copied().unwrap_or(lower), upto);
        }
        Some(lower)
    }
}

/// What a [`Metrics`] (rebuilt by a reload) has counted.
fn served(m: &Metrics) -> Counts {
    let mut c = Counts::default();
    for e in m.endpoints() {
        c.requests += e.requests();
        c.errors += e.errors();
        e.latency.add_counts(&mut c.latency);
        let (tokens_in, tokens_out) = e.tokens();
        c.tokens_in += tokens_in;
        c.tokens_out += tokens_out;
    }
    c
}

/// One minute's counts (or a few minutes', when the clock jumped), by its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// The minute it starts, in minutes since 1970-01-01 UTC.
    pub minute: u64,
    /// The counters' growth over it.
    pub counts: Counts,
    /// The current minute, not over yet.
    pub partial: bool,
}

/// Where the last turn left the counters.
#[derive(Debug)]
struct Base {
    /// The metrics `served` was read from (none before the first turn).
    metrics: Weak<Metrics>,
    served: Counts,
    kept: Counts,
    minute: u64,
}

/// The history (see the module docs); kept across reloads.
#[derive(Debug)]
pub struct History {
    points: Mutex<VecDeque<Point>>,
    base: Mutex<Base>,
}

// === impl History ===

impl History {
    /// An empty history whose first minute is the current one; every counter starts at zero.
    pub fn new() -> Self {
        Self {
            points: Mutex::new(VecDeque::new()),
            base: Mutex::new(Base {
                metrics: Weak::new(),
                served: Counts::default(),
                kept: Counts::default(),
                minute: now_minute(),
            }),
        }
    }

    /// The counters' growth since the last turn: the point of the minute in progress, given
    /// the metrics served with now and what the counters a reload keeps (the cache's, the
    /// spend) say now. The new base is returned with it.
    fn since_base(base: &Base, metrics: &Arc<Metrics>, kept: Counts, minute: u64) -> (Point, Base) {
        let served_now = served(metrics);
        let served_growth = match base.metrics.upgrade() {
            Some(old) if Arc::ptr_eq(&old, metrics) => served_now.minus(&base.served),
            // Reloaded since: the old metrics' growth, then the new ones' from zero.
            Some(old) => served(&old).minus(&base.served).plus(&served_now),
            None => served_now,
        };
        let point = Point {
            minute: base.minute,
            counts: served_growth.plus(&kept.minus(&base.kept)),
            partial: true,
        };
        let next = Base {
            metrics: Arc::downgrade(metrics),
            served: served_now,
            kept,
            minute,
        };
        (point, next)
    }

    /// Ends the minute in progress at `minute`'s start: keeps its point, drops those older
    /// than [`KEEP`] minutes. `metrics` and `kept` as for [`History::read`].
    pub fn turn(&self, metrics: &Arc<Metrics>, kept: Counts, minute: u64) {
        let mut base = self.base.lock().unwrap_or_else(PoisonError::into_inner);
        if minute <= base.minute {
            return;
        }
        let (point, next) = Self::since_base(&base, metrics, kept, minute);
        *base = next;
        drop(base);
        self.push(Point {
            partial: false,
            ..point
        });
    }

    fn push(&self, point: Point) {
        let mut points = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        points.push_back(point);
        while points
            .front()
            .is_some_and(|p| p.minute + KEEP <= point.minute || points.len() as u64 > KEEP)
        {
            points.pop_front();
        }
    }

    /// The points of the last `minutes` minutes (the current one included), oldest first,
    /// `step` minutes merged into each (aligned to multiples of `step` since the epoch).
    /// `metrics` are those requests are served with now, `kept` what the counters a reload
    /// keeps say now (see [`crate::state::AppState::kept_counts`]).
    pub fn read(
        &self,
        metrics: &Arc<Metrics>,
        kept: Counts,
        minutes: u64,
        step: u64,
    ) -> Vec<Point> {
        let now = now_minute();
        let current = {
            let base = self.base.lock().unwrap_or_else(PoisonError::into_inner);
            Self::since_base(&base, metrics, kept, now).0
        };
        let from = (now + 1).saturating_sub(minutes);
        let points = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = points.iter().filter(|p| p.minute >= from).copied();
        merge(kept.chain(std::iter::once(current)), step.max(1))
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

/// `points` (oldest first) merged into steps of `step` minutes; a step holding the partial
/// minute is partial.
fn merge(points: impl Iterator<Item = Point>, step: u64) -> Vec<Point> {
    let mut out: Vec<Point> = Vec::new();
    for p in points {
        let minute = p.minute / step * step;
        match out.last_mut() {
            Some(last) if last.minute == minute => {
                last.counts = last.counts.plus(&p.counts);
                last.partial |= p.partial;
            }
            _ => out.push(Point { minute, ..p }),
        }
    }
    out
}

/// Minutes since 1970-01-01 UTC, now.
pub fn now_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

/// Time to the next minute's turn.
pub fn to_next_minute() -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let into = Duration::from_millis(u64::try_from(now.as_millis() % 60_000).unwrap_or(0));
    Duration::from_secs(60).saturating_sub(into)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(requests: u64, slot: usize) -> Counts {
        let mut c = Counts {
            requests,
            cache_hits: requests / 2,
            cache_lookups: requests,
            ..Counts::default()
        };
        c.latency[slot] = requests;
        c
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_as_prometheus_does() {
        assert_eq!(Counts::default().quantile(0.5), None);
        // 10 in (0.1, 0.25]: the median halfway through it.
        let c = counts(10, 8);
        let p50 = c.quantile(0.5).unwrap_or_default();
        assert!((p50 - 0.175).abs() < 1e-9, "{p50}");
        // Past the last bound: the last bound.
        assert_eq!(counts(4, BUCKETS.len()).quantile(0.95), Some(600.0));
        // 90 fast and 10 slow: the p95 among the slow ones.
        let mixed = counts(90, 0).plus(&counts(10, 12));
        let p95 = mixed.quantile(0.95).unwrap_or_default();
        assert!((2.5..=5.0).contains(&p95), "{p95}");
        assert!(mixed.quantile(0.5).unwrap_or_default() <= 0.0005);
    }

    #[test]
    fn differences_never_go_below_zero() {
        let d = counts(3, 1).minus(&counts(5, 1));
        assert_eq!(d, Counts::default());
    }

    #[test]
    fn steps_merge_minutes_and_keep_the_partial_mark() {
        let point = |minute, requests, partial| Point {
            minute,
            counts: counts(requests, 2),
            partial,
        };
        let merged = merge(
            [
                point(100, 1, false),
                point(101, 2, false),
                point(104, 3, false),
                point(105, 4, true),
            ]
            .into_iter(),
            5,
        );
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].minute, merged[0].counts.requests), (100, 6));
        assert!(!merged[0].partial);
        assert_eq!((merged[1].minute, merged[1].counts.requests), (105, 4));
        assert!(merged[1].partial);
        assert_eq!(merged[0].counts.latency[2], 6);
    }

    #[test]
    fn at_most_a_day_is_kept() {
        let h = History::new();
        for minute in 0..KEEP + 10 {
            h.push(Point {
                minute,
                counts: counts(1, 0),
                partial: false,
            });
        }
        let points = h.points.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(points.len() as u64, KEEP);
        assert_eq!(points.front().map(|p| p.minute), Some(10));
    }
}
