//! Canary rollout of a candidate deployment on one route.
//!
//! A request goes to the candidate when the hash of its route key falls in the current
//! stage's percentage: the same key always lands on the same side, and raising the
//! percentage only moves keys onto the candidate, never off it. Stages advance on a
//! schedule or by admin call. After every candidate request the rollback check runs over the
//! window: error rate above `max_error_rate`, or p95 latency above `max_p95`, with at least
//! `min_requests` samples, sends the rollout to 0% and records why.
//!
//! Replicas share a rollout through [`SharedCanary`]: every change made here (an advance, a
//! promotion, a rollback, manual or automatic) raises the canary's epoch, and a replica that
//! reads a higher epoch from elsewhere adopts its stage ([`Canary::adopt`]); at equal epochs
//! a rollback wins. Moving the shared state is the server's job.
//!
//! Time is passed in, so the logic is tested on virtual time.

use crate::config::CanaryConfig;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most samples kept for the rollback check.
const MAX_SAMPLES: usize = 4096;

/// Buckets of the hash space: percentages resolve to 0.01%.
const BUCKETS: u64 = 10_000;

/// Why a rollout was rolled back.
#[derive(Debug, Clone, PartialEq)]
pub enum Rollback {
    /// Error rate over the window.
    ErrorRate {
        /// Observed rate.
        observed: f64,
        /// Threshold.
        limit: f64,
    },
    /// p95 latency over the window.
    Latency {
        /// Observed p95.
        p95: Duration,
        /// Threshold.
        limit: Duration,
    },
    /// An operator asked for it.
    Manual,
    /// Another replica rolled it back.
    Elsewhere,
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ErrorRate { observed, limit } => write!(
                f,
                "candidate error rate {:.1}% over the limit of {:.1}%",
                observed * 100.0,
                limit * 100.0
            ),
            Self::Latency { p95, limit } => write!(
                f,
                "candidate p95 latency {} ms over the limit of {} ms",
                p95.as_millis(),
                limit.as_millis()
            ),
            Self::Manual => f.write_str("rolled back by an operator"),
            Self::Elsewhere => f.write_str("rolled back on another replica"),
        }
    }
}

#[derive(Debug)]
struct Inner {
    /// Index into the stages; `None` once rolled back.
    stage: Option<usize>,
    stage_started: Instant,
    samples: VecDeque<(Instant, Duration, bool)>,
    last_rollback: Option<Rollback>,
    rollbacks: u64,
    /// Raised by every change; see [`SharedCanary`].
    epoch: u64,
}

/// A rollout's state as replicas share it: its stage (`None`: rolled back) and the epoch of
/// the change that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedCanary {
    /// Raised by every change.
    pub epoch: u64,
    /// Index into the stages; `None` once rolled back.
    pub stage: Option<usize>,
}

impl SharedCanary {
    /// `"{epoch} {stage}"`, `-` for rolled back.
    pub fn encode(&self) -> String {
        match self.stage {
            Some(s) => format!("{} {s}", self.epoch),
            None => format!("{} -", self.epoch),
        }
    }

    /// Whether this state is newer than `other`: a higher epoch, or at an equal epoch a
    /// rollback over a live stage.
    pub fn supersedes(&self, other: &Self) -> bool {
        self.epoch > other.epoch
            || (self.epoch == other.epoch && self.stage.is_none() && other.stage.is_some())
    }

    /// Reads [`SharedCanary::encode`]'s text.
    pub fn decode(text: &str) -> Option<Self> {
        let (epoch, stage) = text.trim().split_once(' ')?;
        let stage = match stage {
            "-" => None,
            s => Some(s.parse().ok()?),
        };
        Some(Self {
            epoch: epoch.parse().ok()?,
            stage,
        })
    }
}

/// The live state of one route's canary.
#[derive(Debug)]
pub struct Canary {
    /// Settings.
    pub config: CanaryConfig,
    inner: Mutex<Inner>,
}

/// A point-in-time view, for health and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySnapshot {
    /// Current percentage.
    pub percent: f64,
    /// Current stage index, `None` when rolled back.
    pub stage: Option<usize>,
    /// Rollbacks so far.
    pub rollbacks: u64,
    /// Why the last rollback happened.
    pub last_rollback: Option<String>,
    /// Candidate requests and failures in the window.
    pub window_requests: usize,
    /// Failures among them.
    pub window_failures: usize,
}

/// Which bucket of the hash space a route key falls in (FNV-1a, then a mix).
pub fn bucket(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h % BUCKETS
}

impl Canary {
    /// A rollout at its first stage, started at `now`.
    pub fn new(config: CanaryConfig, now: Instant) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                stage: Some(0),
                stage_started: now,
                samples: VecDeque::new(),
                last_rollback: None,
                rollbacks: 0,
                epoch: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn advance_on_schedule(&self, inner: &mut Inner, now: Instant) {
        let Some(interval) = self.config.stage_interval else {
            return;
        };
        while let Some(stage) = inner.stage {
            if stage + 1 >= self.config.stages.len() || now < inner.stage_started + interval {
                break;
            }
            inner.stage = Some(stage + 1);
            inner.stage_started += interval;
        }
    }

    /// The percentage of traffic the candidate takes at `now`.
    pub fn percent(&self, now: Instant) -> f64 {
        let mut inner = self.lock();
        self.advance_on_schedule(&mut inner, now);
        inner.stage.map_or(0.0, |s| self.config.stages[s])
    }

    /// Whether the request with `key` goes to the candidate at `now`.
    pub fn selects(&self, key: &[u8], now: Instant) -> bool {
        let percent = self.percent(now);
        (bucket(key) as f64) < percent * (BUCKETS as f64) / 100.0
    }

    /// Records a candidate request; returns the rollback it triggered, if any.
    pub fn record(&self, now: Instant, latency: Duration, ok: bool) -> Option<Rollback> {
        let mut inner = self.lock();
        inner.stage?;
        if inner.samples.len() >= MAX_SAMPLES {
            inner.samples.pop_front();
        }
        inner.samples.push_back((now, latency, ok));
        let window = self.config.window;
        while inner
            .samples
            .front()
            .is_some_and(|(t, _, _)| now.saturating_duration_since(*t) > window)
        {
            inner.samples.pop_front();
        }
        let n = inner.samples.len();
        if n < self.config.min_requests as usize {
            return None;
        }
        let failed = inner.samples.iter().filter(|(_, _, ok)| !ok).count();
        let rate = failed as f64 / n as f64;
        let verdict = if rate > self.config.max_error_rate {
            Some(Rollback::ErrorRate {
                observed: rate,
                limit: self.config.max_error_rate,
            })
        } else if let Some(limit) = self.config.max_p95 {
            let mut lat: Vec<Duration> = inner.samples.iter().map(|(_, l, _)| *l).collect();
            lat.sort_unstable();
            let p95 = lat[((n * 95).div_ceil(100)).saturating_sub(1).min(n - 1)];
            (p95 > limit).then_some(Rollback::Latency { p95, limit })
        } else {
            None
        };
        if let Some(reason) = &verdict {
            inner.stage = None;
            inner.epoch += 1;
            inner.rollbacks += 1;
            inner.last_rollback = Some(reason.clone());
            inner.samples.clear();
        }
        verdict
    }

    /// Moves to the next stage (or back into the rollout, at its first stage, after a
    /// rollback). Returns the new percentage.
    pub fn advance(&self, now: Instant) -> f64 {
        let mut inner = self.lock();
        let next = match inner.stage {
            None => 0,
            Some(s) => (s + 1).min(self.config.stages.len() - 1),
        };
        inner.stage = Some(next);
        inner.stage_started = now;
        inner.epoch += 1;
        self.config.stages[next]
    }

    /// Goes to the last stage at once.
    pub fn promote(&self, now: Instant) -> f64 {
        let mut inner = self.lock();
        let last = self.config.stages.len() - 1;
        inner.stage = Some(last);
        inner.stage_started = now;
        inner.epoch += 1;
        self.config.stages[last]
    }

    /// Sends the rollout to 0%.
    pub fn roll_back(&self) {
        let mut inner = self.lock();
        if inner.stage.is_some() {
            inner.stage = None;
            inner.epoch += 1;
            inner.rollbacks += 1;
            inner.last_rollback = Some(Rollback::Manual);
            inner.samples.clear();
        }
    }

    /// The state to share with other replicas.
    pub fn shared(&self) -> SharedCanary {
        let inner = self.lock();
        SharedCanary {
            epoch: inner.epoch,
            stage: inner.stage,
        }
    }

    /// Takes `other`'s stage if it is newer (a higher epoch; at an equal epoch, a rollback
    /// over a live stage). Returns whether anything changed.
    pub fn adopt(&self, other: SharedCanary, now: Instant) -> bool {
        let mut inner = self.lock();
        let ours = SharedCanary {
            epoch: inner.epoch,
            stage: inner.stage,
        };
        let newer = other.supersedes(&ours);
        let stage = other.stage.filter(|&s| s < self.config.stages.len());
        if !newer || (other.stage.is_some() && stage.is_none()) {
            return false;
        }
        if stage.is_none() && inner.stage.is_some() {
            inner.rollbacks += 1;
            inner.last_rollback = Some(Rollback::Elsewhere);
            inner.samples.clear();
        }
        inner.epoch = other.epoch;
        inner.stage = stage;
        inner.stage_started = now;
        true
    }

    /// State for health and metrics.
    pub fn snapshot(&self, now: Instant) -> CanarySnapshot {
        let mut inner = self.lock();
        self.advance_on_schedule(&mut inner, now);
        let window = self.config.window;
        let recent = inner
            .samples
            .iter()
            .filter(|(t, _, _)| now.saturating_duration_since(*t) <= window);
        let (n, failed) = recent.fold((0, 0), |(n, f), (_, _, ok)| (n + 1, f + usize::from(!ok)));
        CanarySnapshot {
            percent: inner.stage.map_or(0.0, |s| self.config.stages[s]),
            stage: inner.stage,
            rollbacks: inner.rollbacks,
            last_rollback: inner.last_rollback.as_ref().map(ToString::to_string),
            window_requests: n,
            window_failures: failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CanaryConfig {
        CanaryConfig {
            target: 0,
            stages: vec![10.0, 50.0, 100.0],
            stage_interval: Some(Duration::from_secs(60)),
            max_error_rate: 0.02,
            max_p95: Some(Duration::from_millis(1000)),
            window: Duration::from_secs(60),
            min_requests: 50,
        }
    }

    #[test]
    fn split_is_stable_and_close_to_the_percentage() {
        let t0 = Instant::now();
        for percent in [10.0, 50.0] {
            let mut c = config();
            c.stages = vec![percent];
            let canary = Canary::new(c, t0);
            let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
            let hits = keys
                .iter()
                .filter(|k| canary.selects(k.as_bytes(), t0))
                .count();
            let share = hits as f64 / 100.0;
            assert!((share - percent).abs() <= 2.0, "{percent}%: {share}%");
            // The same key, the same side, every time.
            for k in &keys[..100] {
                let first = canary.selects(k.as_bytes(), t0);
                assert!((0..5).all(|_| canary.selects(k.as_bytes(), t0) == first));
            }
        }
    }

    #[test]
    fn raising_the_percentage_only_adds_keys() {
        let t0 = Instant::now();
        let canary = Canary::new(config(), t0);
        let keys: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
        let at10: Vec<bool> = keys
            .iter()
            .map(|k| canary.selects(k.as_bytes(), t0))
            .collect();
        let at50: Vec<bool> = keys
            .iter()
            .map(|k| canary.selects(k.as_bytes(), t0 + Duration::from_secs(61)))
            .collect();
        assert!(at10.iter().zip(&at50).all(|(a, b)| !a || *b));
    }

    #[test]
    fn stages_advance_on_schedule_and_by_call() {
        let t0 = Instant::now();
        let canary = Canary::new(config(), t0);
        assert_eq!(canary.percent(t0), 10.0);
        assert_eq!(canary.percent(t0 + Duration::from_secs(60)), 50.0);
        assert_eq!(canary.percent(t0 + Duration::from_secs(500)), 100.0);
        let manual = Canary::new(
            CanaryConfig {
                stage_interval: None,
                ..config()
            },
            t0,
        );
        assert_eq!(manual.percent(t0 + Duration::from_secs(500)), 10.0);
        assert_eq!(manual.advance(t0), 50.0);
        assert_eq!(manual.promote(t0), 100.0);
        manual.roll_back();
        assert_eq!(manual.percent(t0), 0.0);
        assert_eq!(manual.advance(t0), 10.0);
    }

    #[test]
    fn rolls_back_on_an_error_burst() {
        let t0 = Instant::now();
        let canary = Canary::new(config(), t0);
        let ms = Duration::from_millis(100);
        for i in 0..100 {
            assert_eq!(canary.record(t0 + Duration::from_millis(i), ms, true), None);
        }
        let mut fired = None;
        for i in 0..10 {
            fired = fired.or(canary.record(t0 + Duration::from_millis(200 + i), ms, false));
        }
        assert!(
            matches!(fired, Some(Rollback::ErrorRate { .. })),
            "{fired:?}"
        );
        assert_eq!(canary.percent(t0 + Duration::from_secs(1)), 0.0);
        let snap = canary.snapshot(t0 + Duration::from_secs(1));
        assert_eq!(snap.rollbacks, 1);
        assert!(snap.last_rollback.unwrap().contains("error rate"));
    }

    #[test]
    fn rolls_back_on_slow_p95_but_not_before_enough_samples() {
        let t0 = Instant::now();
        let canary = Canary::new(config(), t0);
        let slow = Duration::from_millis(1500);
        for i in 0..49 {
            assert_eq!(
                canary.record(t0 + Duration::from_millis(i), slow, true),
                None
            );
        }
        assert!(matches!(
            canary.record(t0 + Duration::from_millis(50), slow, true),
            Some(Rollback::Latency { .. })
        ));
    }

    #[test]
    fn old_samples_leave_the_window() {
        let t0 = Instant::now();
        let canary = Canary::new(
            CanaryConfig {
                stage_interval: None,
                ..config()
            },
            t0,
        );
        let ms = Duration::from_millis(10);
        for i in 0..40 {
            canary.record(t0 + Duration::from_millis(i), ms, false);
        }
        // Two minutes later the failures are out of the window.
        for i in 0..60 {
            assert_eq!(
                canary.record(
                    t0 + Duration::from_secs(120) + Duration::from_millis(i),
                    ms,
                    true
                ),
                None
            );
        }
    }

    #[test]
    fn replicas_converge_on_the_newest_change_and_a_rollback_wins_a_tie() {
        let t0 = Instant::now();
        let (a, b) = (Canary::new(config(), t0), Canary::new(config(), t0));
        assert_eq!(a.shared(), b.shared());
        a.roll_back();
        let rolled = a.shared();
        assert_eq!(rolled.stage, None);
        assert!(b.adopt(rolled, t0), "b takes a's rollback");
        assert_eq!(b.percent(t0), 0.0);
        assert_eq!(
            b.snapshot(t0).last_rollback.as_deref(),
            Some("rolled back on another replica")
        );
        assert!(!b.adopt(rolled, t0), "nothing new the second time");
        // b's own change is newer than a's state: a adopts it.
        b.advance(t0);
        assert!(a.adopt(b.shared(), t0));
        assert_eq!(a.percent(t0), 10.0);
        // Both change at once: the epochs tie, and the rollback wins on both sides.
        a.advance(t0);
        b.roll_back();
        assert!(a.adopt(b.shared(), t0));
        assert!(!b.adopt(a.shared(), t0));
        assert_eq!((a.percent(t0), b.percent(t0)), (0.0, 0.0));
        // An older state changes nothing; a stage past the config's is refused.
        let old = SharedCanary {
            epoch: 0,
            stage: Some(2),
        };
        assert!(!a.adopt(old, t0));
        let bad = SharedCanary {
            epoch: 99,
            stage: Some(7),
        };
        assert!(!a.adopt(bad, t0));
    }

    #[test]
    fn the_shared_state_reads_back_what_it_wrote() {
        for s in [
            SharedCanary {
                epoch: 0,
                stage: Some(0),
            },
            SharedCanary {
                epoch: 17,
                stage: None,
            },
        ] {
            assert_eq!(SharedCanary::decode(&s.encode()), Some(s));
        }
        assert_eq!(SharedCanary::decode("x 1"), None);
        assert_eq!(SharedCanary::decode("3"), None);
    }
}
