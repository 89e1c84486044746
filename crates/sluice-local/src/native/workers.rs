//! A fork-join pool for one sequence: the caller and `threads − 1` workers share each job's
//! tasks. A decode step runs about 80 short jobs (a few tens of microseconds each), so waking
//! sleeping threads per job would cost more than the work: between jobs the workers spin for
//! [`SPIN`], then sleep until the next one.

// Unsafe: a job's closure and the job itself reach the worker threads as lifetime-erased
// pointers; `Workers::run` waits for every worker before they go out of scope.
#![allow(unsafe_code)]

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// A job as the workers see it: `tasks` calls of `f`, taken one by one from `next`.
struct Job {
    /// The caller's closure with its lifetime erased; valid until every worker has checked in
    /// on `finished` (the caller waits for that before returning).
    f: *const (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    finished: AtomicUsize,
    panicked: AtomicBool,
}

struct Shared {
    /// Bumped for each job (and at shutdown); workers watch it.
    epoch: AtomicU64,
    job: AtomicUsize,
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// The pool; dropping it stops the workers.
pub(crate) struct Workers {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

// === impl Workers ===

impl Workers {
    /// A pool computing on `threads` threads in all (the caller is one of them).
    pub(crate) fn new(threads: usize, name: &str) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut handles = Vec::new();
        for i in 1..threads.max(1) {
            let shared = Arc::clone(&shared);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("{name}-w{i}"))
                    .spawn(move || worker(&shared))?,
            );
        }
        Ok(Self { shared, handles })
    }

    /// Threads computing (the caller included).
    pub(crate) fn threads(&self) -> usize {
        self.handles.len() + 1
    }

    /// Calls `f(i)` for every `i < tasks`, spread over the threads; returns when all are done.
    /// A panic in a task is raised here once every task has ended.
    pub(crate) fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.handles.is_empty() || tasks <= 1 {
            (0..tasks).for_each(f);
            return;
        }
        // SAFETY: only the lifetime is erased. The pointer is read by workers while they run
        // this job, and the loop below returns only once every worker has checked in on
        // `finished`, after its last use of `job` and `f`.
        let f: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        let job = Job {
            f,
            tasks,
            next: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        let s = &self.shared;
        s.job.store(&job as *const Job as usize, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.wake.notify_all();
        }
        let caller = std::panic::catch_unwind(AssertUnwindSafe(|| work(&job)));
        while job.finished.load(Ordering::Acquire) < self.handles.len() {
            std::hint::spin_loop();
        }
        s.job.store(0, Ordering::SeqCst);
        if let Err(payload) = caller {
            std::panic::resume_unwind(payload);
        }
        if job.panicked.load(Ordering::Relaxed) {
            panic!("a worker thread's task panicked");
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let s = &self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _guard = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.wake.notify_all();
        }
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Takes tasks of `job` until none is left.
fn work(job: &Job) {
    loop {
        let i = job.next.fetch_add(1, Ordering::Relaxed);
        if i >= job.tasks {
            return;
        }
        // SAFETY: `f` outlives the job (see `Workers::run`).
        unsafe { (*job.f)(i) };
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let started = Instant::now();
        let mut spins = 0u32;
        // Spin for the next job, then sleep.
        let epoch = loop {
            let epoch = s.epoch.load(Ordering::SeqCst);
            if epoch != seen {
                break epoch;
            }
            spins = spins.wrapping_add(1);
            if spins % 256 == 0 && started.elapsed() > SPIN {
                s.sleepers.fetch_add(1, Ordering::SeqCst);
                let mut guard = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
                while s.epoch.load(Ordering::SeqCst) == seen {
                    guard = s.wake.wait(guard).unwrap_or_else(PoisonError::into_inner);
                }
                drop(guard);
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
            } else {
                std::hint::spin_loop();
            }
        };
        seen = epoch;
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let ptr = s.job.load(Ordering::SeqCst) as *const Job;
        if ptr.is_null() {
            continue;
        }
        // SAFETY: a non-null `job` is the caller's live job: it stays alive until this worker
        // checks in on `finished` below, which is its last access.
        let job = unsafe { &*ptr };
        if std::panic::catch_unwind(AssertUnwindSafe(|| work(job))).is_err() {
            job.panicked.store(true, Ordering::Relaxed);
        }
        job.finished.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_across_many_jobs() {
        let pool = Workers::new(3, "test").expect("spawn");
        assert_eq!(pool.threads(), 3);
        for tasks in [0, 1, 2, 7, 64] {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..50 {
                pool.run(tasks, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
            }
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 50),
                "{tasks}"
            );
        }
    }

    #[test]
    fn workers_wake_after_sleeping_and_a_panic_reaches_the_caller() {
        let pool = Workers::new(2, "test").expect("spawn");
        std::thread::sleep(SPIN * 5);
        let count = AtomicUsize::new(0);
        pool.run(16, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 16);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run(8, &|i| assert!(i != 5, "task 5 fails"));
        }));
        assert!(result.is_err());
        // Still usable.
        let count = AtomicUsize::new(0);
        pool.run(4, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 4);
    }
}
