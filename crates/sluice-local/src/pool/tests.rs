//! Pool rules on virtual time with a fake loader, plus one test with real GGUF files.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::testing::{TestArch, TestDType, TestModel};

const MINUTE: Duration = Duration::from_secs(60);

// === Fake loader ===

struct FakeModel {
    name: String,
    drops: Arc<AtomicUsize>,
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct FakeState {
    /// name → (estimate, measured)
    sizes: Mutex<HashMap<String, (u64, u64)>>,
    loads: Mutex<HashMap<String, usize>>,
    fail_next: Mutex<HashSet<String>>,
    /// `false`: loads block until [`FakeState::open`].
    gate: Mutex<bool>,
    gate_changed: Condvar,
    started: AtomicUsize,
    drops: Arc<AtomicUsize>,
}

impl FakeState {
    fn loads(&self, name: &str) -> usize {
        self.loads.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    fn open(&self) {
        *self.gate.lock().unwrap() = true;
        self.gate_changed.notify_all();
    }

    fn close(&self) {
        *self.gate.lock().unwrap() = false;
    }
}

#[derive(Clone)]
struct FakeLoader(Arc<FakeState>);

impl Loader for FakeLoader {
    type Model = FakeModel;

    fn estimate(&self, spec: &ModelSpec) -> crate::Result<u64> {
        let sizes = self.0.sizes.lock().unwrap();
        Ok(sizes[&spec.name].0)
    }

    fn load(&self, spec: &ModelSpec) -> crate::Result<Loaded<FakeModel>> {
        self.0.started.fetch_add(1, Ordering::SeqCst);
        let mut open = self.0.gate.lock().unwrap();
        while !*open {
            open = self.0.gate_changed.wait(open).unwrap();
        }
        drop(open);
        *self
            .0
            .loads
            .lock()
            .unwrap()
            .entry(spec.name.clone())
            .or_default() += 1;
        if self.0.fail_next.lock().unwrap().remove(&spec.name) {
            return Err(crate::ErrorKind::Backend("fake load failure".into()).into());
        }
        let bytes = self.0.sizes.lock().unwrap()[&spec.name].1;
        Ok(Loaded {
            model: FakeModel {
                name: spec.name.clone(),
                drops: Arc::clone(&self.0.drops),
            },
            bytes,
        })
    }

    fn engine(&self, _model: &FakeModel) -> Option<&'static str> {
        Some("fake")
    }

    fn queued(&self, _model: &FakeModel) -> usize {
        3
    }
}

struct Harness {
    pool: Pool<FakeLoader, ManualClock>,
    fake: Arc<FakeState>,
    clock: ManualClock,
}

/// A pool of fake models `(name, estimate, measured)`.
fn harness_with(
    budget: u64,
    models: &[(&str, u64, u64)],
    edit: impl Fn(&mut ModelSpec),
) -> Harness {
    let fake = Arc::new(FakeState::default());
    fake.open();
    let mut specs = Vec::new();
    for (name, estimate, measured) in models {
        fake.sizes
            .lock()
            .unwrap()
            .insert((*name).to_owned(), (*estimate, *measured));
        let mut spec = ModelSpec::new(*name, format!("/nonexistent/{name}.gguf"));
        edit(&mut spec);
        specs.push(spec);
    }
    let clock = ManualClock::new();
    let config = PoolConfig {
        memory_budget: budget,
        keep_alive: KeepAlive::default(),
        busy_wait: Duration::ZERO,
    };
    let pool = Pool::with_clock(FakeLoader(Arc::clone(&fake)), config, specs, clock.clone());
    Harness { pool, fake, clock }
}

fn harness(budget: u64, models: &[(&str, u64)]) -> Harness {
    let models: Vec<(&str, u64, u64)> = models.iter().map(|(n, s)| (*n, *s, *s)).collect();
    harness_with(budget, &models, |_| {})
}

/// A failed assertion must not leave a load blocked on a closed gate: the runtime would wait
/// for that blocking thread forever on its way down.
impl Drop for Harness {
    fn drop(&mut self) {
        self.fake.open();
    }
}

impl Harness {
    fn state(&self, name: &str) -> ModelState {
        self.pool.snapshot().model(name).unwrap().state
    }

    fn loaded(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .pool
            .snapshot()
            .models
            .into_iter()
            .filter(|m| m.state == ModelState::Loaded)
            .map(|m| m.name)
            .collect();
        names.sort();
        names
    }

    /// Acquires and releases at once.
    async fn touch(&self, name: &str) {
        drop(self.pool.acquire(name, None).await.unwrap());
    }
}

/// Polls `condition` for up to 10 s of real time.
async fn eventually(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-local-pool-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// === plan_eviction ===

fn resident(bytes: u64, age: u64, base: Instant) -> Resident {
    Resident {
        bytes,
        last_used: base + Duration::from_secs(age),
        in_use: false,
        pinned: false,
    }
}

#[test]
fn plan_is_empty_when_it_fits() {
    let t = Instant::now();
    let residents = [resident(30, 0, t), resident(30, 1, t)];
    assert_eq!(plan_eviction(&residents, 40, 100), Ok(vec![]));
    assert_eq!(plan_eviction(&[], 100, 100), Ok(vec![]));
}

#[test]
fn plan_takes_least_recently_used_first() {
    let t = Instant::now();
    let residents = [resident(40, 5, t), resident(40, 1, t), resident(20, 3, t)];
    // Excess 40: the oldest (index 1) alone is enough.
    assert_eq!(plan_eviction(&residents, 40, 100), Ok(vec![1]));
    // Excess 60: oldest, then the next oldest.
    assert_eq!(plan_eviction(&residents, 60, 100), Ok(vec![1, 2]));
}

#[test]
fn plan_breaks_ties_by_the_larger_saving() {
    let t = Instant::now();
    let residents = [resident(20, 1, t), resident(50, 1, t), resident(30, 1, t)];
    assert_eq!(plan_eviction(&residents, 10, 100), Ok(vec![1]));
}

#[test]
fn plan_drops_victims_made_unnecessary() {
    let t = Instant::now();
    // Excess 30: the oldest (10) is not enough, the next (60) alone is.
    let residents = [resident(10, 0, t), resident(60, 1, t)];
    assert_eq!(plan_eviction(&residents, 60, 100), Ok(vec![1]));
}

#[test]
fn plan_never_picks_models_in_use_or_pinned() {
    let t = Instant::now();
    let mut busy = resident(60, 0, t);
    busy.in_use = true;
    let mut pinned = resident(20, 0, t);
    pinned.pinned = true;
    let idle = resident(10, 5, t);
    assert_eq!(
        plan_eviction(&[busy, pinned, idle], 50, 100),
        Err(PlanError::Busy {
            need: 50,
            available: 20
        })
    );
    assert_eq!(plan_eviction(&[busy, pinned, idle], 20, 100), Ok(vec![2]));
    assert_eq!(
        plan_eviction(&[busy, pinned, idle], 90, 100),
        Err(PlanError::TooLarge {
            need: 90,
            budget: 100,
            pinned: 20
        })
    );
}

// === Pool ===

#[tokio::test]
async fn loads_lazily_on_first_use_and_reuses() {
    let h = harness(100, &[("a", 40)]);
    assert_eq!(h.state("a"), ModelState::Unloaded);
    assert_eq!(h.fake.loads("a"), 0);

    let lease = h.pool.acquire("a", None).await.unwrap();
    assert_eq!((*lease).name, "a");
    assert_eq!(lease.name(), "a");
    assert_eq!(h.fake.loads("a"), 1);
    assert_eq!(h.pool.snapshot().model("a").unwrap().in_flight, 1);
    drop(lease);
    assert_eq!(h.pool.snapshot().model("a").unwrap().in_flight, 0);

    h.touch("a").await;
    assert_eq!(h.fake.loads("a"), 1);
    assert_eq!(h.pool.used(), 40);
}

#[tokio::test]
async fn unknown_model_is_not_found() {
    let h = harness(100, &[("a", 40)]);
    let error = h.pool.acquire("nope", None).await.unwrap_err();
    assert!(matches!(error.kind(), PoolErrorKind::NotFound(n) if n == "nope"));
    assert_eq!(error.status_code(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acquires_share_one_load() {
    let h = harness(100, &[("a", 40)]);
    h.fake.close();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let pool = h.pool.clone();
        tasks.spawn(async move { pool.acquire("a", None).await });
    }
    // The load reserves before it starts (and blocks on the gate): wait for both.
    eventually(|| {
        h.pool.snapshot().model("a").unwrap().in_flight == 100
            && h.fake.started.load(Ordering::SeqCst) >= 1
    })
    .await;
    let status = h.pool.snapshot().model("a").unwrap().clone();
    assert_eq!(status.state, ModelState::Loading);
    assert_eq!(status.bytes_reserved, 40);
    assert_eq!(h.fake.started.load(Ordering::SeqCst), 1);

    h.fake.open();
    let mut leases = Vec::new();
    while let Some(result) = tasks.join_next().await {
        leases.push(result.unwrap().unwrap());
    }
    assert_eq!(h.fake.loads("a"), 1);
    let first = Arc::clone(leases[0].model().unwrap());
    assert!(leases
        .iter()
        .all(|l| Arc::ptr_eq(l.model().unwrap(), &first)));
    assert_eq!(h.pool.snapshot().model("a").unwrap().in_flight, 100);
    drop(leases);
    assert_eq!(h.pool.snapshot().model("a").unwrap().in_flight, 0);
}

#[tokio::test]
async fn a_cancelled_wait_is_not_counted_in_flight() {
    let h = harness(100, &[("a", 40)]);
    h.fake.close();
    let pool = h.pool.clone();
    let task = tokio::spawn(async move { pool.acquire("a", None).await.map(drop) });
    eventually(|| h.fake.started.load(Ordering::SeqCst) == 1).await;
    task.abort();
    let _ = task.await;
    assert_eq!(h.pool.snapshot().model("a").unwrap().in_flight, 0);
    h.fake.open();
    eventually(|| h.state("a") == ModelState::Loaded).await;
    assert_eq!(h.pool.snapshot().model("a").unwrap().in_flight, 0);
}

#[tokio::test]
async fn evicts_the_least_recently_used_idle_model() {
    let h = harness(100, &[("a", 40), ("b", 40), ("c", 40)]);
    h.touch("a").await;
    h.clock.advance(MINUTE);
    h.touch("b").await;
    h.clock.advance(MINUTE);
    h.touch("a").await; // `b` is now the least recently used
    h.clock.advance(MINUTE);
    h.touch("c").await;
    assert_eq!(h.loaded(), ["a", "c"]);
    assert_eq!(h.pool.used(), 80);
    // The evicted model is dropped. Usually before the new one loads; but the load's watch
    // channel holds a reference to the model it announced until the loading thread lets
    // go of its sender, which a loaded machine can delay past the eviction (seen in CI), so
    // the drop is awaited rather than asserted at once.
    eventually(|| h.fake.drops.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test]
async fn equally_old_candidates_evict_the_larger_first() {
    let h = harness(100, &[("small", 30), ("large", 50), ("new", 40)]);
    let small = h.pool.acquire("small", None).await.unwrap();
    let large = h.pool.acquire("large", None).await.unwrap();
    h.clock.advance(MINUTE);
    // Released at the same (virtual) instant.
    drop(small);
    drop(large);
    h.touch("new").await;
    assert_eq!(h.loaded(), ["new", "small"]);
}

#[tokio::test]
async fn an_acquire_waits_for_a_model_in_use_to_free_its_memory() {
    let fake = Arc::new(FakeState::default());
    fake.open();
    let mut specs = Vec::new();
    for name in ["a", "b"] {
        fake.sizes.lock().unwrap().insert(name.to_owned(), (60, 60));
        specs.push(ModelSpec::new(name, format!("/nonexistent/{name}.gguf")));
    }
    let config = PoolConfig {
        memory_budget: 100,
        keep_alive: KeepAlive::default(),
        busy_wait: Duration::from_secs(30),
    };
    let pool = Pool::new(FakeLoader(Arc::clone(&fake)), config, specs);
    let a = pool.acquire("a", None).await.unwrap();
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("b", None).await.map(|_| ()) })
    };
    // It waits rather than failing while `a` is in use...
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished());
    assert_eq!(fake.loads("b"), 0);
    // ...and gets `b` (evicting `a`) once `a`'s lease ends.
    drop(a);
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting acquire went on")
        .unwrap()
        .unwrap();
    assert_eq!(fake.loads("b"), 1);

    // First come, first served: while `b` waits for `a`'s memory, a later acquire that needs
    // a load (`c`) queues behind it instead of taking the memory `a` frees.
    fake.sizes.lock().unwrap().insert("c".to_owned(), (60, 60));
    pool.insert_model(ModelSpec::new("c", "/nonexistent/c.gguf"));
    let b = pool.acquire("b", None).await.unwrap();
    let first = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("a", None).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    let second = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("c", None).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(b);
    let a = tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("the first in line went on")
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!second.is_finished(), "the later acquire jumped the queue");
    assert_eq!(fake.loads("c"), 0);
    drop(a);
    tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second in line went on")
        .unwrap()
        .unwrap();
    assert_eq!(fake.loads("c"), 1);

    // With a short wait it gives up with BudgetBusy.
    let config = PoolConfig {
        memory_budget: 100,
        keep_alive: KeepAlive::default(),
        busy_wait: Duration::from_millis(20),
    };
    let specs = ["a", "b"].map(|n| ModelSpec::new(n, format!("/nonexistent/{n}.gguf")));
    let pool = Pool::new(FakeLoader(Arc::clone(&fake)), config, specs);
    let _a = pool.acquire("a", None).await.unwrap();
    let error = pool.acquire("b", None).await.unwrap_err();
    assert!(
        matches!(error.kind(), PoolErrorKind::BudgetBusy { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn a_model_in_use_is_never_evicted() {
    let h = harness(100, &[("a", 60), ("b", 60)]);
    let lease = h.pool.acquire("a", None).await.unwrap();
    let error = h.pool.acquire("b", None).await.unwrap_err();
    match error.kind() {
        PoolErrorKind::BudgetBusy {
            name,
            need,
            available,
        } => {
            assert_eq!((name.as_str(), *need, *available), ("b", 60, 40));
        }
        other => panic!("expected BudgetBusy, got {other:?}"),
    }
    assert_eq!(error.status_code(), 503);
    assert_eq!(error.retry_after(), Some(BUSY_RETRY_AFTER));
    assert_eq!(h.fake.loads("b"), 0);
    assert_eq!(h.loaded(), ["a"]);
    assert_eq!(h.state("b"), ModelState::Unloaded);
    assert_eq!(h.pool.used(), 60);

    drop(lease);
    h.touch("b").await;
    assert_eq!(h.loaded(), ["b"]);
}

#[tokio::test]
async fn a_model_larger_than_the_budget_is_refused_and_nothing_is_evicted() {
    let h = harness(100, &[("a", 40), ("huge", 150)]);
    h.touch("a").await;
    let error = h.pool.acquire("huge", None).await.unwrap_err();
    assert!(matches!(
        error.kind(),
        PoolErrorKind::TooLarge {
            need: 150,
            budget: 100,
            pinned: 0,
            ..
        }
    ));
    assert_eq!(error.status_code(), 503);
    assert_eq!(error.retry_after(), None);
    assert!(
        error.to_string().contains("`huge` needs 150 bytes"),
        "{error}"
    );
    assert_eq!(h.loaded(), ["a"]);
    assert_eq!(h.fake.loads("huge"), 0);
    assert_eq!(h.pool.used(), 40);
}

#[tokio::test]
async fn a_measured_size_above_the_estimate_evicts_more() {
    let h = harness_with(100, &[("a", 50, 50), ("b", 40, 70)], |_| {});
    h.touch("a").await;
    // 50 + 40 fits; 50 + 70 does not: `a` goes after the measurement.
    h.touch("b").await;
    assert_eq!(h.loaded(), ["b"]);
    let status = h.pool.snapshot().model("b").unwrap().clone();
    assert_eq!(status.bytes_estimated, Some(40));
    assert_eq!(status.bytes_measured, Some(70));
    assert_eq!(status.bytes_reserved, 70);
    assert_eq!(h.pool.used(), 70);
}

#[tokio::test]
async fn a_measured_size_that_cannot_fit_unloads_the_new_model() {
    let h = harness_with(100, &[("a", 50, 50), ("b", 40, 70)], |_| {});
    let lease = h.pool.acquire("a", None).await.unwrap();
    let error = h.pool.acquire("b", None).await.unwrap_err();
    assert!(matches!(
        error.kind(),
        PoolErrorKind::BudgetBusy {
            need: 70,
            available: 50,
            ..
        }
    ));
    assert_eq!(h.fake.loads("b"), 1);
    eventually(|| h.fake.drops.load(Ordering::SeqCst) == 1).await;
    assert_eq!(h.state("b"), ModelState::Unloaded);
    assert_eq!(h.pool.used(), 50);
    assert_eq!(&lease.name, "a");
}

#[tokio::test]
async fn a_smaller_measurement_lowers_the_reservation() {
    let h = harness_with(100, &[("a", 80, 30), ("b", 60, 60)], |_| {});
    h.touch("a").await;
    assert_eq!(h.pool.used(), 30);
    h.touch("b").await;
    assert_eq!(h.loaded(), ["a", "b"]);
}

/// Records what the pool tells its observer.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl PoolEvents for Recorder {
    fn load_started(&self, model: &str) {
        self.0.lock().unwrap().push(format!("loading {model}"));
    }

    fn load_ended(&self, model: &str) {
        self.0.lock().unwrap().push(format!("load ended {model}"));
    }

    fn loaded(&self, model: &str, engine: Option<&'static str>, _took: Duration) {
        self.0
            .lock()
            .unwrap()
            .push(format!("loaded {model} {engine:?}"));
    }

    fn evicted(&self, model: &str, reason: Eviction) {
        self.0
            .lock()
            .unwrap()
            .push(format!("evicted {model} {}", reason.as_str()));
    }
}

#[tokio::test]
async fn the_observer_hears_loads_and_evictions_with_their_reasons() {
    let h = harness(100, &[("a", 60), ("b", 60)]);
    let recorder = Arc::new(Recorder::default());
    assert!(h
        .pool
        .set_events(Arc::clone(&recorder) as Arc<dyn PoolEvents>));
    assert!(!h.pool.set_events(Arc::new(Recorder::default())));
    h.touch("a").await;
    h.clock.advance(MINUTE);
    h.touch("b").await; // `a` makes room
    h.clock.advance(10 * MINUTE);
    assert_eq!(h.pool.sweep(), ["b"]);
    assert_eq!(
        *recorder.0.lock().unwrap(),
        [
            "loading a",
            "load ended a",
            "loaded a Some(\"fake\")",
            "loading b",
            "evicted a memory",
            "load ended b",
            "loaded b Some(\"fake\")",
            "evicted b keep_alive",
        ]
    );
}

#[tokio::test]
async fn idle_models_unload_after_keep_alive() {
    let h = harness(100, &[("a", 40)]);
    h.touch("a").await;
    let status = h.pool.snapshot().model("a").unwrap().clone();
    assert_eq!(status.keep_alive, KeepAlive::For(DEFAULT_KEEP_ALIVE));
    assert_eq!(status.expires_at, Some(h.clock.now() + DEFAULT_KEEP_ALIVE));
    assert_eq!(h.pool.next_expiry(), status.expires_at);

    h.clock.advance(4 * MINUTE);
    assert!(h.pool.sweep().is_empty());
    h.clock.advance(MINUTE);
    assert_eq!(h.pool.sweep(), ["a"]);
    assert_eq!(h.state("a"), ModelState::Unloaded);
    assert_eq!(h.pool.used(), 0);
    eventually(|| h.fake.drops.load(Ordering::SeqCst) == 1).await;
    assert_eq!(h.pool.next_expiry(), None);
}

#[tokio::test]
async fn a_model_in_use_is_not_swept() {
    let h = harness(100, &[("a", 40)]);
    let lease = h.pool.acquire("a", None).await.unwrap();
    h.clock.advance(60 * MINUTE);
    assert!(h.pool.sweep().is_empty());
    drop(lease);
    h.clock.advance(4 * MINUTE);
    assert!(
        h.pool.sweep().is_empty(),
        "keep-alive counts from the release"
    );
}

#[tokio::test]
async fn keep_alive_per_model_and_per_request() {
    let h = harness_with(100, &[("a", 10, 10), ("b", 10, 10)], |spec| {
        if spec.name == "b" {
            spec.keep_alive = Some(KeepAlive::For(MINUTE));
        }
    });
    drop(
        h.pool
            .acquire("a", Some(KeepAlive::For(10 * MINUTE)))
            .await
            .unwrap(),
    );
    h.touch("b").await;
    h.clock.advance(2 * MINUTE);
    assert_eq!(h.pool.sweep(), ["b"], "per-model keep_alive");
    h.clock.advance(7 * MINUTE);
    assert!(h.pool.sweep().is_empty(), "per-request keep_alive");
    h.clock.advance(MINUTE);
    assert_eq!(h.pool.sweep(), ["a"]);

    // Forever, then a later request without one returns to the default.
    drop(h.pool.acquire("a", Some(KeepAlive::Forever)).await.unwrap());
    h.clock.advance(24 * 60 * MINUTE);
    assert!(h.pool.sweep().is_empty());
    assert_eq!(h.pool.snapshot().model("a").unwrap().expires_at, None);
    h.touch("a").await;
    h.clock.advance(5 * MINUTE);
    assert_eq!(h.pool.sweep(), ["a"]);
}

#[tokio::test]
async fn keep_alive_zero_unloads_right_after_use() {
    let h = harness(100, &[("a", 40)]);
    let first = h
        .pool
        .acquire("a", Some(KeepAlive::UNLOAD_NOW))
        .await
        .unwrap();
    let second = h.pool.acquire("a", None).await.unwrap();
    drop(first);
    assert_eq!(h.state("a"), ModelState::Loaded, "still in use");
    let mut second = second;
    second.set_keep_alive(Some(KeepAlive::UNLOAD_NOW));
    drop(second);
    assert_eq!(h.state("a"), ModelState::Unloaded);
    assert_eq!(h.pool.used(), 0);
    eventually(|| h.fake.drops.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test]
async fn pinned_models_survive_sweeps_and_eviction() {
    let h = harness_with(100, &[("a", 60, 60), ("b", 60, 60)], |spec| {
        spec.pin = spec.name == "a";
    });
    h.touch("a").await;
    h.clock.advance(24 * 60 * MINUTE);
    assert!(h.pool.sweep().is_empty());
    let status = h.pool.snapshot().model("a").unwrap().clone();
    assert!(status.pinned);
    assert_eq!(status.expires_at, None);

    let error = h.pool.acquire("b", None).await.unwrap_err();
    assert!(matches!(
        error.kind(),
        PoolErrorKind::TooLarge {
            need: 60,
            budget: 100,
            pinned: 60,
            ..
        }
    ));
    assert_eq!(h.loaded(), ["a"]);

    h.pool.set_pinned("a", false).unwrap();
    h.touch("b").await;
    assert_eq!(h.loaded(), ["b"]);
    assert!(h.pool.set_pinned("nope", true).is_err());
}

#[tokio::test]
async fn preload_loads_configured_models_with_progress() {
    let h = harness_with(
        100,
        &[("a", 10, 10), ("b", 20, 20), ("c", 30, 30)],
        |spec| {
            spec.preload = spec.name != "b";
        },
    );
    let mut events = Vec::new();
    let report = h.pool.preload_configured(|event| events.push(event)).await;
    assert_eq!(report.loaded, ["a", "c"]);
    assert!(report.failed.is_empty());
    assert_eq!(h.loaded(), ["a", "c"]);
    assert_eq!(events.len(), 4);
    assert!(matches!(
        &events[0],
        PreloadEvent::Loading { name, index: 0, total: 2 } if name == "a"
    ));
    assert!(matches!(
        &events[3],
        PreloadEvent::Loaded { name, index: 1, total: 2, bytes: 30, .. } if name == "c"
    ));
    assert_eq!(h.pool.snapshot().model("a").unwrap().in_flight, 0);

    let report = h.pool.preload(&["b", "missing"], |_| {}).await;
    assert_eq!(report.loaded, ["b"]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, "missing");
}

#[tokio::test]
async fn a_failed_load_releases_its_reservation_and_the_next_acquire_retries() {
    let h = harness(100, &[("a", 40)]);
    let recorder = Arc::new(Recorder::default());
    assert!(h
        .pool
        .set_events(Arc::clone(&recorder) as Arc<dyn PoolEvents>));
    h.fake.fail_next.lock().unwrap().insert("a".into());
    let error = h.pool.acquire("a", None).await.unwrap_err();
    assert_eq!(
        *recorder.0.lock().unwrap(),
        ["loading a", "load ended a"],
        "a failed load ends too"
    );
    assert!(matches!(error.kind(), PoolErrorKind::LoadFailed { name, .. } if name == "a"));
    assert!(error.to_string().contains("fake load failure"), "{error}");
    assert_eq!(error.status_code(), 500);
    assert_eq!(h.state("a"), ModelState::Unloaded);
    assert_eq!(h.pool.used(), 0);

    h.touch("a").await;
    assert_eq!(h.fake.loads("a"), 2);
    assert_eq!(h.state("a"), ModelState::Loaded);
}

#[tokio::test]
async fn checksums_are_verified_before_loading() {
    let dir = TempDir::new();
    let path = dir.path("hello.gguf");
    std::fs::write(&path, b"hello").unwrap();
    let hello = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    assert_eq!(sha256_file(&path).unwrap(), hello);

    let wrong = "0".repeat(64);
    let h = harness_with(
        100,
        &[("bad", 10, 10), ("good", 10, 10), ("malformed", 10, 10)],
        |spec| {
            spec.path.clone_from(&path);
            spec.sha256 = Some(match spec.name.as_str() {
                "bad" => wrong.clone(),
                "good" => format!("sha256:{}", hello.to_ascii_uppercase()),
                _ => "abc".to_owned(),
            });
        },
    );

    let error = h.pool.acquire("bad", None).await.unwrap_err();
    match error.kind() {
        PoolErrorKind::ChecksumMismatch {
            path: p,
            expected,
            actual,
        } => {
            assert_eq!(p, &path);
            assert_eq!(expected, &wrong);
            assert_eq!(actual, hello);
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert!(error.to_string().contains("does not match its checksum"));
    assert_eq!(h.fake.loads("bad"), 0);
    assert_eq!(h.pool.used(), 0);

    h.touch("good").await;
    assert_eq!(h.fake.loads("good"), 1);

    let error = h.pool.acquire("malformed", None).await.unwrap_err();
    assert!(
        matches!(error.kind(), PoolErrorKind::InvalidSpec { .. }),
        "{error}"
    );

    let missing = verify_sha256("x", &dir.path("missing"), hello).unwrap_err();
    assert!(matches!(missing.kind(), PoolErrorKind::Io { .. }));
}

#[tokio::test]
async fn snapshot_reports_state_bytes_use_and_expiry() {
    let h = harness_with(
        100,
        &[("a", 40, 35), ("b", 20, 20), ("c", 10, 10)],
        |spec| {
            spec.pin = spec.name == "b";
        },
    );
    h.fake.close();
    let pool = h.pool.clone();
    let loading = tokio::spawn(async move { pool.acquire("c", None).await.map(drop) });
    eventually(|| h.fake.started.load(Ordering::SeqCst) == 1).await;
    let snapshot = h.pool.snapshot();
    let c = snapshot.model("c").unwrap();
    assert_eq!(c.state, ModelState::Loading);
    assert_eq!(c.state.as_str(), "loading");
    assert_eq!(
        (c.bytes_estimated, c.bytes_measured, c.bytes_reserved),
        (Some(10), None, 10)
    );
    assert_eq!(c.in_flight, 1);
    assert_eq!(c.expires_at, None);
    h.fake.open();
    loading.await.unwrap().unwrap();

    let lease = h.pool.acquire("a", None).await.unwrap();
    h.touch("b").await;
    let now = h.clock.now();
    let snapshot = h.pool.snapshot();
    assert_eq!(snapshot.budget, 100);
    assert_eq!(snapshot.used, 35 + 20 + 10);
    let names: Vec<&str> = snapshot.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"], "configuration order");
    let a = snapshot.model("a").unwrap();
    assert_eq!(
        a,
        &ModelStatus {
            name: "a".into(),
            state: ModelState::Loaded,
            bytes_estimated: Some(40),
            bytes_measured: Some(35),
            engine: Some("fake"),
            context_length: None,
            bytes_reserved: 35,
            last_used: Some(now),
            in_flight: 1,
            queued: 3,
            pinned: false,
            keep_alive: KeepAlive::For(DEFAULT_KEEP_ALIVE),
            expires_at: None,
        }
    );
    let b = snapshot.model("b").unwrap();
    assert!(b.pinned);
    assert_eq!(b.expires_at, None);
    let c = snapshot.model("c").unwrap();
    assert_eq!(c.expires_at, Some(now + DEFAULT_KEEP_ALIVE));
    drop(lease);
    assert_eq!(
        h.pool.snapshot().model("a").unwrap().expires_at,
        Some(now + DEFAULT_KEEP_ALIVE)
    );
}

#[tokio::test]
async fn the_sweeper_stops_on_shutdown() {
    let h = harness(100, &[("a", 40)]);
    drop(
        h.pool
            .acquire("a", Some(KeepAlive::For(Duration::ZERO)))
            .await,
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let pool = h.pool.clone();
    let sweeper = tokio::spawn(async move {
        pool.run_sweeper(async {
            let _ = rx.await;
        })
        .await;
    });
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), sweeper)
        .await
        .unwrap()
        .unwrap();
}

// === KeepAlive and budget helpers ===

#[test]
fn keep_alive_parses_ollama_forms() {
    let secs = |s| KeepAlive::For(Duration::from_secs(s));
    assert_eq!(KeepAlive::parse("300").unwrap(), secs(300));
    assert_eq!(KeepAlive::parse("0").unwrap(), KeepAlive::UNLOAD_NOW);
    assert_eq!(KeepAlive::parse("-1").unwrap(), KeepAlive::Forever);
    assert_eq!(KeepAlive::parse("5m").unwrap(), secs(300));
    assert_eq!(KeepAlive::parse("1h30m").unwrap(), secs(5400));
    assert_eq!(
        KeepAlive::parse("500ms").unwrap(),
        KeepAlive::For(Duration::from_millis(500))
    );
    assert_eq!(KeepAlive::parse("-1m").unwrap(), KeepAlive::Forever);
    assert_eq!(KeepAlive::parse(" 10s ").unwrap(), secs(10));
    for bad in ["", "5 minutes", "m", "1x", "-"] {
        let error = KeepAlive::parse(bad).unwrap_err();
        assert_eq!(error.status_code(), 400, "{bad:?}");
    }
    assert_eq!(KeepAlive::from_secs_f64(-0.5), KeepAlive::Forever);
    assert_eq!(KeepAlive::from_secs_f64(f64::NAN), KeepAlive::default());
    assert!(KeepAlive::UNLOAD_NOW.is_zero());
}

#[test]
fn meminfo_total_is_parsed() {
    let text = "MemTotal:       16318712 kB\nMemFree:         1000 kB\n";
    assert_eq!(parse_meminfo_total(text), Some(16_318_712 * 1024));
    assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
    assert_eq!(parse_meminfo_total("MemTotal: x kB\n"), None);
    let budget = default_memory_budget();
    assert!(budget > 0);
    if cfg!(target_os = "linux") {
        let total =
            parse_meminfo_total(&std::fs::read_to_string("/proc/meminfo").unwrap()).unwrap();
        assert!(budget <= total / 2);
    }
}

// === GgufLoader ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gguf_models_evict_each_other_under_a_budget_for_one() {
    let dir = TempDir::new();
    let mut specs = Vec::new();
    for (name, seed) in [("first", 1), ("second", 2)] {
        let path = dir.path(&format!("{name}.gguf"));
        let model = TestModel {
            seed,
            ..TestModel::tiny(TestArch::Llama, TestDType::Q8_0)
        };
        model.write(&path).unwrap();
        let mut spec = ModelSpec::new(name, path);
        spec.sha256 = Some(sha256_file(&spec.path).unwrap());
        specs.push(spec);
    }
    let estimate = GgufLoader.estimate(&specs[0]).unwrap();
    assert_eq!(GgufLoader.estimate(&specs[1]).unwrap(), estimate);
    let budget = estimate * 3 / 2;
    let config = PoolConfig {
        memory_budget: budget,
        keep_alive: KeepAlive::default(),
        busy_wait: Duration::ZERO,
    };
    let pool = Pool::new(GgufLoader, config, specs);

    let first = pool.acquire("first", None).await.unwrap();
    assert_eq!(first.info().block_count, 2);
    let measured = first.memory().total();
    assert!(
        measured <= budget && 2 * measured > budget,
        "measured {measured}, budget {budget}"
    );
    drop(first);

    let second = pool.acquire("second", None).await.unwrap();
    let reply = second
        .submit(crate::ChatRequest {
            messages: vec![crate::ChatMessage::new("user", "hi")],
            max_tokens: Some(2),
            ..crate::ChatRequest::default()
        })
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(reply.usage.completion_tokens >= 1);
    let snapshot = pool.snapshot();
    assert_eq!(snapshot.model("first").unwrap().state, ModelState::Unloaded);
    assert_eq!(snapshot.model("second").unwrap().state, ModelState::Loaded);
    assert_eq!(
        snapshot.model("second").unwrap().engine,
        Some(second.engine())
    );
    assert_eq!(snapshot.model("first").unwrap().engine, None, "unloaded");
    assert_eq!(snapshot.used, measured);
}

#[tokio::test]
async fn an_operator_unloads_an_idle_model_even_pinned_but_not_one_in_use() {
    let h = harness(100, &[("a", 40), ("b", 40)]);
    assert_eq!(h.pool.unload("a").unwrap(), Unload::NotLoaded);
    h.touch("a").await;
    h.pool.set_pinned("a", true).unwrap();
    assert_eq!(h.pool.unload("a").unwrap(), Unload::Unloaded { bytes: 40 });
    assert!(h.loaded().is_empty());
    assert_eq!(h.pool.used(), 0);
    eventually(|| h.fake.drops.load(Ordering::SeqCst) == 1).await;
    let lease = h.pool.acquire("b", None).await.unwrap();
    assert_eq!(h.pool.unload("b").unwrap(), Unload::InUse { in_flight: 1 });
    assert_eq!(h.loaded(), ["b"]);
    drop(lease);
    assert_eq!(h.pool.unload("b").unwrap(), Unload::Unloaded { bytes: 40 });
    let e = h.pool.unload("nope").unwrap_err();
    assert!(matches!(e.kind(), PoolErrorKind::NotFound(_)), "{e}");
}
