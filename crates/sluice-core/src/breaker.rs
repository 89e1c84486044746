//! Circuit breaker of one deployment.
//!
//! Closed: requests pass; failures are counted. The breaker opens after
//! `consecutive_failures` failures in a row, or when the error rate over the sliding
//! `window` reaches `error_rate` with at least `min_requests` requests in it. Open: requests
//! are refused at no cost (the caller moves on to the next deployment) until `cooldown` has
//! passed. Half-open: exactly one probe is let through; its success closes the breaker, its
//! failure opens it for another cooldown.
//!
//! Replicas of a fleet share one probe: a replica that finds another replica's probe out
//! holds its own back ([`Breaker::probe_elsewhere`]), and a replica told that another's probe
//! closed the breaker closes its own ([`Breaker::closed_elsewhere`]). Moving that news
//! between replicas is the server's job.
//!
//! A deployment whose provider has an active health check is probed by the check alone
//! ([`Breaker::set_probed_by_checks`]): once the cooldown ends, requests keep skipping it
//! until the check's probe ([`Breaker::try_probe`]) has closed it, so no user request is the
//! one that finds the upstream still dead.
//!
//! A rate-limit answer is not a failure: it puts the deployment in a cooldown of the
//! upstream's `Retry-After`, during which it is skipped like an open breaker.
//!
//! Time is passed in, so the logic is tested on virtual time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breaker thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker.
    pub consecutive_failures: u32,
    /// Error rate (0..=1) over the window that opens the breaker.
    pub error_rate: f64,
    /// Requests the window must hold before the error rate counts.
    pub min_requests: u32,
    /// Length of the sliding window.
    pub window: Duration,
    /// How long the breaker stays open before a probe.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            error_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(30),
            cooldown: Duration::from_secs(30),
        }
    }
}

/// The breaker's state, for health and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests pass.
    Closed,
    /// Requests are refused until the cooldown ends.
    Open,
    /// One probe may pass.
    HalfOpen,
}

impl BreakerState {
    /// Name used in health output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// Numeric value for the metrics gauge: 0 closed, 1 open, 2 half-open.
    pub const fn as_gauge(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// Leave to send one request, from [`Breaker::try_acquire`]; hand it back with the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "report the outcome with the permit"]
pub struct Permit {
    /// This request is the half-open probe: its outcome decides the breaker's state.
    pub probe: bool,
}

/// Why a request may not use the deployment now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The breaker is open (or half-open with its probe out).
    Open,
    /// The deployment answered 429 and is cooling down.
    RateLimited,
}

const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Index of the window slice this bucket counts (time since `epoch` / slice).
    slice: u64,
    ok: u32,
    failed: u32,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    opened_at: Option<Instant>,
    probe_out: bool,
    probe_sent: Option<Instant>,
    /// Another replica holds the fleet's probe: no probe leaves here before this.
    probe_elsewhere_until: Option<Instant>,
    consecutive: u32,
    buckets: [Bucket; BUCKETS],
    rate_limited_until: Option<Instant>,
    epoch: Instant,
}

/// One deployment's breaker. Cheap to check: one uncontended lock.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    /// Only a health check may be the half-open probe (the provider has one).
    probed_by_checks: AtomicBool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                opened_at: None,
                probe_out: false,
                probe_sent: None,
                probe_elsewhere_until: None,
                consecutive: 0,
                buckets: [Bucket::default(); BUCKETS],
                rate_limited_until: None,
                epoch: now,
            }),
            probed_by_checks: AtomicBool::new(false),
        }
    }

    /// Whether the half-open probe is left to the provider's active health check
    /// ([`Breaker::try_probe`]): requests then never probe. Set by whoever runs the checks,
    /// and cleared when they stop (a reload that removes the check).
    pub fn set_probed_by_checks(&self, checked: bool) {
        self.probed_by_checks.store(checked, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn slice_len(&self) -> Duration {
        (self.config.window / BUCKETS as u32).max(Duration::from_millis(1))
    }

    /// How long an opening lasts.
    pub fn cooldown(&self) -> Duration {
        self.config.cooldown
    }

    /// The state at `now` (an open breaker whose cooldown is over reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        let inner = self.lock();
        match (inner.state, inner.opened_at) {
            (BreakerState::Open, Some(at)) if now >= at + self.config.cooldown => {
                BreakerState::HalfOpen
            }
            (s, _) => s,
        }
    }

    /// Asks to send a request at `now`. On `Ok` the caller must report the outcome with
    /// [`Breaker::success`], [`Breaker::failure`], [`Breaker::rate_limited`] or
    /// [`Breaker::cancelled`], handing the permit back.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit, Refusal> {
        self.acquire(now, !self.probed_by_checks.load(Ordering::Relaxed))
    }

    /// The health check asks to be the half-open probe at `now`: a permit with `probe` set
    /// when the breaker is half-open (or open with its cooldown over) and no probe is out;
    /// else `None`. Report the check's outcome with the permit as a request would.
    pub fn try_probe(&self, now: Instant) -> Option<Permit> {
        if self.state(now) != BreakerState::HalfOpen {
            return None;
        }
        self.acquire(now, true).ok().filter(|p| p.probe)
    }

    /// [`Breaker::try_acquire`], where `may_probe` says whether the caller may be the
    /// half-open probe (else an open or half-open breaker refuses it).
    fn acquire(&self, now: Instant, may_probe: bool) -> Result<Permit, Refusal> {
        let mut inner = self.lock();
        if inner.rate_limited_until.is_some_and(|until| now < until) {
            return Err(Refusal::RateLimited);
        }
        if inner.state != BreakerState::Closed
            && inner.probe_elsewhere_until.is_some_and(|until| now < until)
        {
            return Err(Refusal::Open);
        }
        match inner.state {
            BreakerState::Closed => Ok(Permit { probe: false }),
            BreakerState::Open | BreakerState::HalfOpen if !may_probe => Err(Refusal::Open),
            BreakerState::Open => {
                let cooled = inner
                    .opened_at
                    .is_none_or(|at| now >= at + self.config.cooldown);
                if cooled {
                    inner.state = BreakerState::HalfOpen;
                    inner.probe_out = true;
                    inner.probe_sent = Some(now);
                    Ok(Permit { probe: true })
                } else {
                    Err(Refusal::Open)
                }
            }
            BreakerState::HalfOpen => {
                // A probe whose outcome never came back (its request was dropped) is given up
                // after a cooldown, so the breaker cannot stay half-open forever.
                let lost = inner
                    .probe_sent
                    .is_some_and(|at| now >= at + self.config.cooldown);
                if inner.probe_out && !lost {
                    Err(Refusal::Open)
                } else {
                    inner.probe_out = true;
                    inner.probe_sent = Some(now);
                    Ok(Permit { probe: true })
                }
            }
        }
    }

    fn record(&self, inner: &mut Inner, now: Instant, ok: bool) {
        let slice_len = self.slice_len().as_nanos().max(1);
        let slice = (now.saturating_duration_since(inner.epoch).as_nanos() / slice_len) as u64;
        let b = &mut inner.buckets[(slice % BUCKETS as u64) as usize];
        if b.slice != slice {
            *b = Bucket {
                slice,
                ok: 0,
                failed: 0,
            };
        }
        if ok {
            b.ok += 1;
        } else {
            b.failed += 1;
        }
    }

    fn window_counts(&self, inner: &Inner, now: Instant) -> (u32, u32) {
        let slice_len = self.slice_len().as_nanos().max(1);
        let current = (now.saturating_duration_since(inner.epoch).as_nanos() / slice_len) as u64;
        inner
            .buckets
            .iter()
            .filter(|b| b.slice + (BUCKETS as u64) > current && b.slice <= current)
            .fold((0, 0), |(ok, failed), b| (ok + b.ok, failed + b.failed))
    }

    /// The request succeeded. Only the probe closes an open breaker: a request that was
    /// already in flight when the breaker opened proves nothing about the deployment now.
    pub fn success(&self, now: Instant, permit: Permit) {
        let mut inner = self.lock();
        self.record(&mut inner, now, true);
        inner.consecutive = 0;
        if permit.probe {
            Self::close(&mut inner);
        }
    }

    fn close(inner: &mut Inner) {
        inner.probe_out = false;
        inner.probe_elsewhere_until = None;
        inner.state = BreakerState::Closed;
        inner.opened_at = None;
        inner.buckets = [Bucket::default(); BUCKETS];
    }

    /// The request failed in a way that counts against the deployment. Returns `true` when
    /// this failure opened the breaker.
    pub fn failure(&self, now: Instant, permit: Permit) -> bool {
        let mut inner = self.lock();
        self.record(&mut inner, now, false);
        inner.consecutive += 1;
        if permit.probe {
            inner.probe_out = false;
        }
        let open = match inner.state {
            // A late failure of a request sent before the breaker opened changes nothing.
            BreakerState::Open => return false,
            BreakerState::HalfOpen => permit.probe,
            BreakerState::Closed => {
                let (ok, failed) = self.window_counts(&inner, now);
                let total = ok + failed;
                inner.consecutive >= self.config.consecutive_failures
                    || (total >= self.config.min_requests
                        && f64::from(failed) >= self.config.error_rate * f64::from(total))
            }
        };
        let opened = open && inner.state == BreakerState::Closed;
        if open {
            inner.state = BreakerState::Open;
            inner.opened_at = Some(now);
            inner.probe_elsewhere_until = None;
        }
        opened
    }

    /// The deployment's active health check failed (as many times in a row as configured):
    /// opens a closed breaker at `now` for a cooldown, as if requests had failed, and a
    /// half-open one whose probe is not out (its cooldown is then counted from `now`). An
    /// open breaker still cooling down is left as it is. Returns `true` when it opened a
    /// closed breaker.
    pub fn trip(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        let cooled = inner
            .opened_at
            .is_none_or(|at| now >= at + self.config.cooldown);
        let reopen = match inner.state {
            BreakerState::Closed => true,
            BreakerState::Open => cooled && !inner.probe_out,
            BreakerState::HalfOpen => !inner.probe_out,
        };
        if !reopen {
            return false;
        }
        let was_closed = inner.state == BreakerState::Closed;
        inner.state = BreakerState::Open;
        inner.opened_at = Some(now);
        inner.probe_elsewhere_until = None;
        was_closed
    }

    /// The upstream answered 429: skip the deployment until `until`; not a failure.
    pub fn rate_limited(&self, until: Instant, permit: Permit) {
        let mut inner = self.lock();
        if permit.probe {
            inner.probe_out = false;
        }
        if inner.rate_limited_until.is_none_or(|u| u < until) {
            inner.rate_limited_until = Some(until);
        }
    }

    /// When an open breaker's cooldown ends, if it is open (not yet half-open) at `now`.
    pub fn open_until(&self, now: Instant) -> Option<Instant> {
        let inner = self.lock();
        match (inner.state, inner.opened_at) {
            (BreakerState::Open, Some(at)) => Some(at + self.config.cooldown).filter(|u| *u > now),
            _ => None,
        }
    }

    /// Another replica's breaker for this deployment opened: open this one too, until
    /// `until` (then half-open, as if it had opened here). A breaker already open for
    /// longer, or half-open with its probe out, is left as it is.
    pub fn open_elsewhere(&self, until: Instant, now: Instant) {
        let mut inner = self.lock();
        let opened_at = until.checked_sub(self.config.cooldown).unwrap_or(now);
        let later = match (inner.state, inner.opened_at) {
            (BreakerState::Closed, _) => true,
            (BreakerState::Open, Some(at)) => at < opened_at,
            (BreakerState::Open, None) => true,
            (BreakerState::HalfOpen, _) => !inner.probe_out,
        };
        if later && until > now {
            inner.state = BreakerState::Open;
            inner.opened_at = Some(opened_at);
            inner.probe_out = false;
            inner.probe_elsewhere_until = None;
            inner.consecutive = 0;
        }
    }

    /// When the breaker's current opening ends (or ended: it may be half-open by now);
    /// `None` while closed. It names the opening the fleet's probe is for.
    pub fn opening_end(&self) -> Option<Instant> {
        let inner = self.lock();
        match (inner.state, inner.opened_at) {
            (BreakerState::Closed, _) | (_, None) => None,
            (_, Some(at)) => Some(at + self.config.cooldown),
        }
    }

    /// Another replica holds the fleet's probe for this opening: hands the local probe
    /// `permit` back and sends none from here before `until` (when the caller asks the
    /// fleet again).
    pub fn probe_elsewhere(&self, permit: Permit, until: Instant) {
        let mut inner = self.lock();
        if permit.probe {
            inner.probe_out = false;
        }
        if inner.state != BreakerState::Closed {
            inner.probe_elsewhere_until = Some(until);
        }
    }

    /// Another replica's probe closed the opening that ended at `end`: closes this breaker
    /// if its own opening ended then or before (a later opening is news of its own) and no
    /// probe of its own is out. Returns whether it closed.
    pub fn closed_elsewhere(&self, end: Instant) -> bool {
        let mut inner = self.lock();
        let ours = match (inner.state, inner.opened_at) {
            (BreakerState::Closed, _) => return false,
            (_, Some(at)) => at + self.config.cooldown,
            (_, None) => end,
        };
        if ours > end || inner.probe_out {
            return false;
        }
        Self::close(&mut inner);
        inner.consecutive = 0;
        true
    }

    /// Another replica's upstream answered 429 for this deployment: skip it until `until`
    /// here too (a cooldown only ever grows).
    pub fn cool_down(&self, until: Instant) {
        let mut inner = self.lock();
        if inner.rate_limited_until.is_none_or(|u| u < until) {
            inner.rate_limited_until = Some(until);
        }
    }

    /// The request ended without a verdict on the deployment: frees a half-open probe.
    pub fn cancelled(&self, permit: Permit) {
        if permit.probe {
            self.lock().probe_out = false;
        }
    }

    /// When a rate-limit cooldown ends, if one is running at `now`.
    pub fn rate_limited_until(&self, now: Instant) -> Option<Instant> {
        self.lock().rate_limited_until.filter(|u| *u > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const NORMAL: Permit = Permit { probe: false };

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            error_rate: 0.5,
            min_requests: 10,
            window: MS(1000),
            cooldown: MS(500),
        }
    }

    #[test]
    fn opens_on_consecutive_failures_then_probes_and_closes() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        for i in 0..3 {
            let p = b.try_acquire(t0).unwrap();
            assert_eq!(b.failure(t0, p), i == 2);
        }
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.try_acquire(t0 + MS(499)), Err(Refusal::Open));
        // Cooldown over: one probe, and only one.
        assert_eq!(b.state(t0 + MS(500)), BreakerState::HalfOpen);
        let probe = b.try_acquire(t0 + MS(500)).unwrap();
        assert!(probe.probe);
        assert_eq!(b.try_acquire(t0 + MS(501)), Err(Refusal::Open));
        b.success(t0 + MS(510), probe);
        assert_eq!(b.state(t0 + MS(510)), BreakerState::Closed);
        assert_eq!(b.try_acquire(t0 + MS(511)), Ok(Permit { probe: false }));
    }

    #[test]
    fn a_failed_health_check_trips_a_closed_breaker_and_its_probe_closes_it() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        assert!(b.trip(t0));
        assert_eq!(b.try_acquire(t0 + MS(10)), Err(Refusal::Open));
        // Still cooling down: a second trip changes nothing (the opening keeps its end).
        assert!(!b.trip(t0 + MS(100)));
        assert_eq!(b.open_until(t0 + MS(100)), Some(t0 + MS(500)));
        // Cooled: the next check is the probe, and its success closes the breaker.
        let probe = b.try_acquire(t0 + MS(500)).unwrap();
        assert!(probe.probe);
        // A trip while that probe is out leaves the probe's verdict to decide.
        assert!(!b.trip(t0 + MS(501)));
        b.success(t0 + MS(510), probe);
        assert_eq!(b.state(t0 + MS(510)), BreakerState::Closed);
        // Half-open without a probe out: a trip opens it for a cooldown from then.
        assert!(b.trip(t0 + MS(600)));
        // Cooled again and still failing: reopened (not a new opening), until 1600.
        assert!(!b.trip(t0 + MS(1100)));
        assert_eq!(b.state(t0 + MS(1100)), BreakerState::Open);
        assert_eq!(b.open_until(t0 + MS(1100)), Some(t0 + MS(1600)));
    }

    #[test]
    fn failed_probe_reopens() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        for _ in 0..3 {
            b.failure(t0, NORMAL);
        }
        let probe = b.try_acquire(t0 + MS(600)).unwrap();
        b.failure(t0 + MS(600), probe);
        assert_eq!(b.state(t0 + MS(601)), BreakerState::Open);
        assert_eq!(b.try_acquire(t0 + MS(1000)), Err(Refusal::Open));
        assert_eq!(b.try_acquire(t0 + MS(1100)), Ok(Permit { probe: true }));
    }

    #[test]
    fn opens_on_error_rate_over_the_window() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        // Alternating: never 3 in a row, but half of them fail.
        for i in 0..10 {
            if i % 2 == 0 {
                b.success(t0 + MS(i * 10), NORMAL);
            } else {
                b.failure(t0 + MS(i * 10), NORMAL);
            }
        }
        assert_eq!(b.state(t0 + MS(100)), BreakerState::Open);
    }

    #[test]
    fn old_failures_leave_the_window() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        for i in 0..9 {
            if i % 2 == 0 {
                b.success(t0, NORMAL);
            } else {
                b.failure(t0, NORMAL);
            }
        }
        // A second later the window is empty: one more failure does not open it.
        b.success(t0 + MS(1500), NORMAL);
        b.failure(t0 + MS(1600), NORMAL);
        assert_eq!(b.state(t0 + MS(1600)), BreakerState::Closed);
    }

    #[test]
    fn rate_limit_is_a_cooldown_not_a_failure() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        b.rate_limited(t0 + MS(300), NORMAL);
        assert_eq!(b.try_acquire(t0 + MS(100)), Err(Refusal::RateLimited));
        assert_eq!(b.try_acquire(t0 + MS(300)), Ok(NORMAL));
        assert_eq!(b.state(t0 + MS(300)), BreakerState::Closed);
    }

    #[test]
    fn a_cooldown_from_elsewhere_only_ever_grows() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        b.cool_down(t0 + MS(300));
        assert_eq!(b.try_acquire(t0 + MS(100)), Err(Refusal::RateLimited));
        b.cool_down(t0 + MS(200));
        assert_eq!(b.rate_limited_until(t0), Some(t0 + MS(300)));
        assert_eq!(b.try_acquire(t0 + MS(300)), Ok(NORMAL));
    }

    #[test]
    fn a_breaker_opened_elsewhere_opens_here_until_the_same_end() {
        let t0 = Instant::now();
        let (a, b) = (Breaker::new(config(), t0), Breaker::new(config(), t0));
        for _ in 0..3 {
            a.failure(t0, NORMAL);
        }
        let until = a.open_until(t0).expect("a is open");
        assert_eq!(b.open_until(t0), None);
        b.open_elsewhere(until, t0 + MS(100));
        assert_eq!(b.try_acquire(t0 + MS(200)), Err(Refusal::Open));
        assert_eq!(b.open_until(t0 + MS(200)), Some(until));
        // Then half-open, as on a: one probe.
        assert_eq!(b.try_acquire(until), Ok(Permit { probe: true }));
        assert_eq!(b.try_acquire(until), Err(Refusal::Open));
        // An end already past changes nothing.
        let c = Breaker::new(config(), t0);
        c.open_elsewhere(t0, t0 + MS(1));
        assert_eq!(c.state(t0 + MS(1)), BreakerState::Closed);
    }

    #[test]
    fn cancelled_probe_frees_the_slot() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        for _ in 0..3 {
            b.failure(t0, NORMAL);
        }
        let probe = b.try_acquire(t0 + MS(500)).unwrap();
        b.cancelled(probe);
        assert_eq!(b.try_acquire(t0 + MS(501)), Ok(Permit { probe: true }));
    }

    #[test]
    fn a_lost_probe_is_given_up_after_a_cooldown() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        for _ in 0..3 {
            b.failure(t0, NORMAL);
        }
        let _lost = b.try_acquire(t0 + MS(500)).unwrap();
        assert_eq!(b.try_acquire(t0 + MS(900)), Err(Refusal::Open));
        assert_eq!(b.try_acquire(t0 + MS(1000)), Ok(Permit { probe: true }));
    }

    #[test]
    fn late_outcomes_of_requests_sent_before_opening_change_nothing() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        let early = b.try_acquire(t0).unwrap();
        for _ in 0..3 {
            b.failure(t0, NORMAL);
        }
        // In flight when it opened: its success does not close it, nor does a late failure
        // push the cooldown further out.
        b.success(t0 + MS(10), early);
        assert_eq!(b.state(t0 + MS(10)), BreakerState::Open);
        assert!(!b.failure(t0 + MS(400), early));
        assert_eq!(b.state(t0 + MS(500)), BreakerState::HalfOpen);
    }

    #[test]
    fn a_probe_held_elsewhere_holds_this_one_back_until_asked_again() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        for _ in 0..3 {
            b.failure(t0, NORMAL);
        }
        let probe = b.try_acquire(t0 + MS(500)).unwrap();
        assert!(probe.probe);
        b.probe_elsewhere(probe, t0 + MS(600));
        assert_eq!(b.try_acquire(t0 + MS(599)), Err(Refusal::Open));
        assert_eq!(b.state(t0 + MS(599)), BreakerState::HalfOpen);
        // Time to ask the fleet again: the local probe is free.
        assert_eq!(b.try_acquire(t0 + MS(600)), Ok(Permit { probe: true }));
    }

    #[test]
    fn a_probe_that_closed_the_breaker_elsewhere_closes_it_here() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        for _ in 0..3 {
            b.failure(t0, NORMAL);
        }
        let end = b.opening_end().expect("open");
        assert_eq!(end, t0 + MS(500));
        // News of an earlier opening's probe changes nothing.
        assert!(!b.closed_elsewhere(end - MS(1)));
        let probe = b.try_acquire(end).unwrap();
        b.probe_elsewhere(probe, end + MS(100));
        assert!(b.closed_elsewhere(end));
        assert_eq!(b.state(end + MS(1)), BreakerState::Closed);
        assert_eq!(b.opening_end(), None);
        assert_eq!(b.try_acquire(end + MS(1)), Ok(NORMAL));
        // A probe of this replica's own that is out keeps the breaker as it is.
        for _ in 0..3 {
            b.failure(end + MS(10), NORMAL);
        }
        let end = b.opening_end().unwrap();
        let _mine = b.try_acquire(end).unwrap();
        assert!(!b.closed_elsewhere(end));
        assert_eq!(b.state(end), BreakerState::HalfOpen);
    }

    #[test]
    fn with_a_health_check_only_the_check_probes() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        b.set_probed_by_checks(true);
        for _ in 0..3 {
            b.failure(t0, NORMAL);
        }
        let end = b.opening_end().expect("open");
        // The cooldown is over: a request is still refused, the check is the probe.
        assert_eq!(b.state(end), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire(end), Err(Refusal::Open));
        assert_eq!(b.try_probe(end - MS(1)), None, "still cooling down");
        let probe = b.try_probe(end).expect("the check probes");
        assert_eq!(b.try_probe(end), None, "one probe at a time");
        assert_eq!(b.try_acquire(end), Err(Refusal::Open));
        b.success(end + MS(1), probe);
        assert_eq!(b.try_acquire(end + MS(2)), Ok(NORMAL));
        // Without the check, a request is the probe again.
        b.set_probed_by_checks(false);
        for _ in 0..3 {
            b.failure(end + MS(3), NORMAL);
        }
        let end = b.opening_end().unwrap();
        assert_eq!(b.try_acquire(end), Ok(Permit { probe: true }));
    }
}
