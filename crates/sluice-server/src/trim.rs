//! Memory given back after a burst. Thousands of connections, their requests and the upstream
//! connections they opened leave the worker's allocator holding freed pages and its upstream
//! pools holding idle connections (up to `pool_max_idle_per_host` each, with their buffers)
//! long after the load ended. Each worker looks at its load once a [`TICK`]: its open client
//! connections plus the requests in flight; when it fell to half or less of its highest since
//! the last look that found a fall, and by at least [`MIN_FALL`], the burst is over: the
//! worker closes its idle plain-HTTP upstream connections beyond the [`KEEP_IDLE`] most
//! recently used of each provider, then asks the allocator to hand its free pages back
//! ([`Release`], given by the binary, which knows its allocator). The burst's requests still in
//! flight at that look return their connections to the pools as they finish, so the worker
//! does it again at each of the next [`SETTLE_TICKS`] looks while the load stays down (a load
//! that rises again ends that). A steady load, however high, never triggers it; the look costs
//! a few atomic loads. A worker left with no connection and no request for a whole look
//! after serving some (many short connections, none a burst) trims once too ([`Idle`]).

use crate::live::Live;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// How often a worker looks at its load.
pub const TICK: Duration = Duration::from_secs(1);

/// Idle upstream connections a worker keeps per provider once a burst is over.
pub const KEEP_IDLE: usize = 16;

/// The smallest fall that ends a burst (connections plus requests).
pub const MIN_FALL: usize = 64;

/// Looks after a burst's end at which the worker trims again.
pub const SETTLE_TICKS: u32 = 10;

/// Hands the allocator's free memory back to the operating system, on the calling thread
/// (the `sluice` binary passes mimalloc's collection), as far as [`Reach`] says.
pub type Release = fn(Reach);

/// How far a release reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The calling thread's heap (cheap: at each look that trims).
    Thread,
    /// Also the C allocator's arenas, process-wide, where SQLite's pages are (a walk under
    /// every arena's lock: only at a burst's end and when a worker went idle, not at the
    /// looks after the end).
    Process,
}

/// A worker's load: its open client connections, the highest load seen since the last fall,
/// and the connections it ever opened.
#[derive(Debug, Default)]
pub struct Load {
    open: AtomicUsize,
    high: AtomicUsize,
    opened: AtomicUsize,
}

impl Load {
    /// A connection opened.
    pub fn opened(&self) {
        self.opened.fetch_add(1, Relaxed);
        let now = self.open.fetch_add(1, Relaxed) + 1;
        self.high.fetch_max(now, Relaxed);
    }

    /// A connection closed.
    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    /// The load now: open connections plus `in_flight`.
    fn now(&self, in_flight: usize) -> usize {
        self.open.load(Relaxed) + in_flight
    }

    /// Whether the load (open connections plus `in_flight`) fell from a burst since the last
    /// fall; a fall starts the count again from the load now.
    pub fn fell(&self, in_flight: usize) -> bool {
        let now = self.now(in_flight);
        let high = self.high.fetch_max(now, Relaxed).max(now);
        if high >= now + MIN_FALL && now <= high / 2 {
            self.high.store(now, Relaxed);
            true
        } else {
            false
        }
    }
}

/// The watch's memory between looks: how many more looks trim after the last burst's end,
/// and the load at that end.
#[derive(Debug, Default)]
struct Settle {
    left: u32,
    floor: usize,
}

impl Settle {
    /// Whether this look trims: at a burst's end, and at the looks after it while the load
    /// stays at or below what it was at that end (or [`KEEP_IDLE`]).
    fn look(&mut self, load: &Load, in_flight: usize) -> bool {
        if load.fell(in_flight) {
            self.left = SETTLE_TICKS;
            self.floor = load.now(in_flight);
            return true;
        }
        if self.left == 0 {
            return false;
        }
        if load.now(in_flight) > self.floor.max(KEEP_IDLE) {
            self.left = 0;
            return false;
        }
        self.left -= 1;
        true
    }

    /// Whether the last look found a burst's end (not one of the looks after it).
    fn just_fell(&self) -> bool {
        self.left == SETTLE_TICKS
    }
}

/// A worker that served connections and has none left: trimmed once, at the
/// first look after a whole [`TICK`] in which no connection opened (a steady stream of short
/// connections, one at a time, never triggers it). What many short-lived connections leave in
/// the allocator, where no burst's fall ([`MIN_FALL`]) ever came, goes back then.
#[derive(Debug, Default)]
struct Idle {
    /// Connections opened as of the last look.
    seen: usize,
    /// Connections opened as of the last trim.
    trimmed: usize,
}

impl Idle {
    /// `load` is the worker's own: a request in flight holds one of its connections open
    /// (the gateway's count of requests in flight is every worker's, and batches').
    fn look(&mut self, load: &Load) -> bool {
        let opened = load.opened.load(Relaxed);
        let quiet = load.open.load(Relaxed) == 0 && opened == self.seen;
        self.seen = opened;
        let due = quiet && opened != self.trimmed;
        if due {
            self.trimmed = opened;
        }
        due
    }
}

/// Worker `worker`'s watch over its load (runs on its runtime until the shutdown begins).
pub async fn watch(load: Arc<Load>, live: Arc<Live>, worker: usize, release: Option<Release>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut settle = Settle::default();
    let mut idle = Idle::default();
    loop {
        tick.tick().await;
        let state = live.get();
        if state.draining.load(Relaxed) {
            // The server stops: the worker's runtime ends with its connections.
            return;
        }
        let in_flight = usize::try_from(state.metrics.in_flight.load(Relaxed)).unwrap_or(0);
        // Both look at every tick: each keeps its own count.
        let settling = settle.look(&load, in_flight);
        let reach = if settle.just_fell() {
            Reach::Process
        } else {
            Reach::Thread
        };
        let reach = if idle.look(&load) {
            Some(Reach::Process)
        } else {
            settling.then_some(reach)
        };
        if let Some(reach) = reach {
            for provider in &state.providers {
                provider.shrink_idle(worker, KEEP_IDLE);
            }
            drop(state);
            if let Some(release) = release {
                release(reach);
            }
            tracing::debug!(
                worker,
                "load fell: idle upstream connections closed, memory released"
            );
        }
    }
}

/// How often the C allocator's arenas are trimmed while the gateway runs ([`trim_arenas`]).
pub const ARENA_TICK: Duration = Duration::from_secs(60);

/// Every `every` ([`ARENA_TICK`] in the server), hands the C allocator's free pages back ([`Reach::Process`]). SQLite
/// allocates from glibc: its live heap stays flat (its page caches are bounded), but its mix of
/// long-lived pages and short-lived buffers fragments glibc's arenas, and free pages between
/// live ones go back to the system only when trimmed (a soak's arenas grew about 0.1 MiB a
/// minute with the live heap flat: BENCHMARKS.md, "The 30-minute soak"). One walk of the arenas
/// a minute, on the acceptor's thread.
pub async fn trim_arenas(release: Release, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: nothing to trim at start.
    tick.tick().await;
    loop {
        tick.tick().await;
        release(Reach::Process);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_over_when_the_load_halved_by_at_least_the_minimum() {
        let load = Load::default();
        for _ in 0..200 {
            load.opened();
        }
        assert!(!load.fell(0), "a steady load");
        for _ in 0..99 {
            load.closed();
        }
        assert!(!load.fell(0), "101 of 200 is not half");
        load.closed();
        assert!(load.fell(0), "100 of 200");
        assert!(!load.fell(0), "counted again from the fall");
        for _ in 0..100 {
            load.closed();
        }
        assert!(load.fell(0), "from 100 to none");
    }

    #[test]
    fn the_looks_after_a_burst_s_end_trim_until_the_load_rises_or_they_run_out() {
        let load = Load::default();
        let mut settle = Settle::default();
        for _ in 0..200 {
            load.opened();
        }
        assert!(!settle.look(&load, 0), "a steady load");
        for _ in 0..150 {
            load.closed();
        }
        assert!(settle.look(&load, 0), "the burst's end");
        for i in 0..SETTLE_TICKS {
            assert!(settle.look(&load, 0), "look {i} after the end");
        }
        assert!(!settle.look(&load, 0), "the looks after the end ran out");

        for _ in 0..150 {
            load.opened();
        }
        for _ in 0..150 {
            load.closed();
        }
        assert!(settle.look(&load, 0), "a second burst's end");
        assert!(settle.look(&load, 0));
        assert!(!settle.look(&load, 30), "the load rose again");
        assert!(
            !settle.look(&load, 0),
            "and the looks after the end are over"
        );
    }

    #[test]
    fn a_worker_left_empty_for_a_whole_tick_trims_once() {
        let load = Load::default();
        let mut idle = Idle::default();
        assert!(!idle.look(&load), "never served anything");
        load.opened();
        load.closed();
        assert!(!idle.look(&load), "a connection opened during the tick");
        load.opened();
        assert!(!idle.look(&load), "one still open");
        load.closed();
        assert!(idle.look(&load), "a whole tick empty: trimmed");
        assert!(!idle.look(&load), "once");
        for _ in 0..3 {
            load.opened();
            load.closed();
            assert!(
                !idle.look(&load),
                "short connections one at a time, steadily"
            );
        }
        assert!(idle.look(&load), "then quiet: trimmed again");
    }

    #[test]
    fn a_small_fall_or_requests_in_flight_are_not_a_burst_s_end() {
        let load = Load::default();
        for _ in 0..40 {
            load.opened();
        }
        for _ in 0..40 {
            load.closed();
        }
        assert!(!load.fell(0), "40 is below the minimum fall");
        assert!(!load.fell(300), "requests in flight are load");
        assert!(!load.fell(200), "300 to 200 is not half");
        assert!(load.fell(0));
    }

    static ARENA_TRIMS: AtomicUsize = AtomicUsize::new(0);

    fn count_trim(reach: Reach) {
        assert_eq!(reach, Reach::Process, "the arenas are process-wide");
        ARENA_TRIMS.fetch_add(1, Relaxed);
    }

    #[tokio::test]
    async fn the_arenas_are_trimmed_every_period_not_at_start() {
        let period = Duration::from_millis(50);
        let started = std::time::Instant::now();
        let task = tokio::spawn(trim_arenas(count_trim, period));
        while ARENA_TRIMS.load(Relaxed) < 2 {
            assert!(started.elapsed() < Duration::from_secs(10), "never trimmed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Two trims take two whole periods at least: none at start.
        assert!(started.elapsed() >= 2 * period);
        task.abort();
    }
}
