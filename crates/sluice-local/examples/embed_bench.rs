//! Embedding throughput of sluice-local on a sentence-transformers model directory, over a
//! corpus written by `bench/local_embed_ref.py --corpus-out` (so both engines embed the same
//! texts):
//!
//! ```text
//! cargo run --release -p sluice-local --example embed_bench -- \
//!     target/models/all-MiniLM-L6-v2 target/embed-corpus.json [seconds]
//! ```
//!
//! Prints one JSON line: `batch1_sps` (each sentence alone, in turn), `batch32_sps` (the corpus
//! in batches of 32, in corpus order: no sorting by length, no padding) and `concurrent32_sps`
//! (32 concurrent callers, one sentence per request, through [`Embedder`]'s dynamic batching).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_local::{BatchOptions, EmbedModel, Embedder};

// As in the `sluice` binary: the allocator decides how often a forward pass's buffers fault in.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rate(seconds: f64, mut pass: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut done = 0;
    loop {
        done += pass();
        if start.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(&args[1]);
    let corpus: Vec<String> =
        serde_json::from_slice(&std::fs::read(&args[2]).expect("corpus")).expect("corpus json");
    let seconds: f64 = args.get(3).map_or(10.0, |s| s.parse().expect("seconds"));
    let started = Instant::now();
    let model = EmbedModel::load(dir).expect("load");
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let refs: Vec<&str> = corpus.iter().map(String::as_str).collect();
    model.embed(&refs[..32]).unwrap();

    let mut i = 0;
    let batch1 = rate(seconds, || {
        model.embed(&[refs[i % refs.len()]]).unwrap();
        i += 1;
        1
    });
    let batch32 = rate(seconds, || {
        for chunk in refs.chunks(32) {
            model.embed(chunk).unwrap();
        }
        refs.len()
    });

    let embedder = Arc::new(
        Embedder::new(
            EmbedModel::load(dir).expect("load"),
            BatchOptions {
                max_batch: 32,
                max_wait: Duration::from_millis(2),
                queue: 256,
            },
        )
        .expect("embedder"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let corpus = Arc::new(corpus);
    let concurrent = runtime.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let clients: Vec<_> = (0..32)
            .map(|_| {
                let (embedder, next, corpus) = (embedder.clone(), next.clone(), corpus.clone());
                tokio::spawn(async move {
                    let mut done = 0usize;
                    while Instant::now() < deadline {
                        let i = next.fetch_add(1, Ordering::Relaxed) % corpus.len();
                        embedder.embed(vec![corpus[i].clone()]).await.unwrap();
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let mut done = 0;
        for c in clients {
            done += c.await.unwrap();
        }
        done as f64 / start.elapsed().as_secs_f64()
    });
    let stats = embedder.stats();
    println!(
        "{}",
        serde_json::json!({
            "engine": "sluice-local",
            "threads": rayon::current_num_threads(),
            "load_ms": (load_ms * 10.0).round() / 10.0,
            "batch1_sps": (batch1 * 10.0).round() / 10.0,
            "batch32_sps": (batch32 * 10.0).round() / 10.0,
            "concurrent32_sps": (concurrent * 10.0).round() / 10.0,
            "concurrent32_mean_batch": stats.inputs as f64 / stats.batches.max(1) as f64,
        })
    );
}
