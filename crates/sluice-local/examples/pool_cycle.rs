//! Memory held against the budget under a workload that cycles through more models than fit.
//!
//! ```text
//! cargo run --release -p sluice-local --example pool_cycle -- [models] [fit] [requests] [wait_s]
//! ```
//!
//! Writes `models` (default 6) llama Q8_0 GGUF files of about 60 MB each, sets the pool's
//! budget to `fit` (default 3) models' estimates plus half of one, then runs `requests`
//! (default 120) chat requests of 8 tokens from 4 concurrent clients, each client stepping
//! through the models in turn from its own offset, so almost every request finds its model
//! evicted. A sampler reads the pool's reserved bytes and the process's resident memory every
//! 5 ms. A request whose memory is held by models in use waits up to `wait_s` (default 30,
//! `[local] memory_wait_ms`) for one to finish; 0 refuses at once. Prints one JSON line: the budget, the largest reservation seen, the largest resident
//! memory above the baseline (after the files are written, before any load), loads, the load
//! time (median and max), refusals, and request latency (median, p95).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_local::pool::{GgufLoader, Loaded, Loader, ModelSpec, Pool, PoolConfig};
use sluice_local::testing::{TestArch, TestDType, TestModel};
use sluice_local::{ChatMessage, ChatModel, ChatRequest, KeepAlive};

// As in the `sluice` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// [`GgufLoader`], counting and timing loads.
struct Counting {
    loads: AtomicU64,
    times: Mutex<Vec<Duration>>,
}

#[derive(Clone)]
struct Shared(Arc<Counting>);

impl Loader for Shared {
    type Model = ChatModel;
    fn estimate(&self, spec: &ModelSpec) -> sluice_local::Result<u64> {
        GgufLoader.estimate(spec)
    }
    fn load(&self, spec: &ModelSpec) -> sluice_local::Result<Loaded<ChatModel>> {
        let started = Instant::now();
        let loaded = GgufLoader.load(spec)?;
        self.0.loads.fetch_add(1, Ordering::Relaxed);
        self.0.times.lock().unwrap().push(started.elapsed());
        Ok(loaded)
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let models = args.first().copied().unwrap_or(6);
    let fit = args.get(1).copied().unwrap_or(3);
    let requests = args.get(2).copied().unwrap_or(120);
    let wait_secs = args.get(3).copied().unwrap_or(30) as u64;
    let dir = std::env::temp_dir().join(format!("sluice-pool-cycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut specs = Vec::new();
    for i in 0..models {
        let path = dir.join(format!("m{i}.gguf"));
        let mut m = TestModel::tiny(TestArch::Llama, TestDType::Q8_0);
        m.layers = 8;
        m.hidden = 512;
        m.heads = 8;
        m.kv_heads = 4;
        m.ffn = 1536;
        m.context_length = 2048;
        m.seed = 100 + i as u64;
        m.write(&path).unwrap();
        let mut spec = ModelSpec::new(format!("m{i}"), path);
        // As the gateway sets it when several sequences can run at once: one thread each.
        spec.load.threads = Some(1);
        specs.push(spec);
    }
    let estimate = GgufLoader.estimate(&specs[0]).unwrap();
    let budget = estimate * fit as u64 + estimate / 2;
    let counting = Arc::new(Counting {
        loads: AtomicU64::new(0),
        times: Mutex::new(Vec::new()),
    });
    let pool = Pool::new(
        Shared(counting.clone()),
        PoolConfig {
            memory_budget: budget,
            keep_alive: KeepAlive::default(),
            busy_wait: Duration::from_secs(wait_secs),
        },
        specs,
    );
    let baseline = rss_bytes();

    let done = Arc::new(AtomicBool::new(false));
    let peaks = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let sampler = {
        let (pool, done, peaks) = (pool.clone(), done.clone(), peaks.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peaks.0.fetch_max(pool.used(), Ordering::Relaxed);
                peaks.1.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let clients = 4;
    let started = Instant::now();
    let (latencies, refused) = runtime.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..clients {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut refused = 0;
                for r in 0..requests / clients {
                    let name = format!("m{}", (c + r) % models);
                    let t = Instant::now();
                    match pool.acquire(&name, None).await {
                        Ok(lease) => {
                            let request = ChatRequest {
                                messages: vec![ChatMessage::new("user", "hello there")],
                                max_tokens: Some(8),
                                ..ChatRequest::default()
                            };
                            lease.submit(request).unwrap().collect().await.unwrap();
                            latencies.push(t.elapsed());
                        }
                        Err(_) => refused += 1,
                    }
                }
                (latencies, refused)
            }));
        }
        let mut all = Vec::new();
        let mut refused = 0;
        for t in tasks {
            let (l, r) = t.await.unwrap();
            all.extend(l);
            refused += r;
        }
        (all, refused)
    });
    let wall = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let snapshot = pool.snapshot();
    let measured = snapshot
        .models
        .iter()
        .filter_map(|m| m.bytes_measured)
        .max()
        .unwrap_or(0);
    let mut latencies = latencies;
    latencies.sort();
    let mut loads = counting.times.lock().unwrap().clone();
    loads.sort();
    let max_used = peaks.0.load(Ordering::Relaxed);
    let rss_peak = peaks.1.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "models": models,
            "fit": fit,
            "requests": requests,
            "clients": clients,
            "model_estimate_bytes": estimate,
            "model_measured_bytes": measured,
            "budget_bytes": budget,
            "max_reserved_bytes": max_used,
            "max_reserved_over_budget": max_used as f64 / budget as f64,
            "rss_baseline_bytes": baseline,
            "rss_peak_above_baseline_bytes": rss_peak.saturating_sub(baseline),
            "rss_peak_above_baseline_over_budget": rss_peak.saturating_sub(baseline) as f64 / budget as f64,
            "loads": counting.loads.load(Ordering::Relaxed),
            "load_ms_p50": percentile(&loads, 0.5),
            "load_ms_max": percentile(&loads, 1.0),
            "refused": refused,
            "answered": latencies.len(),
            "latency_ms_p50": percentile(&latencies, 0.5),
            "latency_ms_p95": percentile(&latencies, 0.95),
            "wall_s": wall.as_secs_f64(),
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
}
