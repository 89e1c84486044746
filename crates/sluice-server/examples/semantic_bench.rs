//! The semantic index's lookup among N vectors of one context, side by side in one run:
//! the scalar scan of per-entry vectors sluice had before (`before`), the contiguous `f32`
//! scan of every vector (`exact`), and the sign-code pass with an `f32` re-score of the
//! nearest R (`codes R`, the default for large contexts), with the recall of each against
//! `exact`. Run: `cargo run --release -p sluice-server --no-default-features --example
//! semantic_bench [N]`. Single-threaded; figures are per lookup over 300 queries.
//!
//! Vectors are synthetic, 384 dimensions like all-MiniLM-L6-v2, and anisotropic like real
//! sentence embeddings (a shared direction in every vector); each query is a stored vector
//! moved towards noise (the run prints the range of cosines to their item).

#![allow(clippy::print_stdout)] // a benchmark program prints its table

use sluice_server::cache::index_record::Question;
use sluice_server::cache::semantic::{normalise, Scan, SemanticIndex};
use std::time::{Duration, Instant};

const DIM: usize = 384;
const QUERIES: usize = 300;
const THRESHOLD: f32 = 0.8;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // A sum of uniforms, roughly normal.
        let a = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
        let b = (self.0 & 0xff_ffff) as f32 / (1u64 << 24) as f32;
        a + b - 1.0
    }

    fn vector(&mut self, common: &[f32], weight: f32) -> Vec<f32> {
        normalise(
            common
                .iter()
                .map(|c| c * weight + self.next() * (1.0 - weight))
                .collect(),
        )
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The scan sluice had before: one `Vec` per entry, a scalar sum.
fn before(items: &[Vec<f32>], q: &[f32]) -> Option<usize> {
    let mut c: Vec<(f32, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, v)| (dot(v, q), i))
        .filter(|(s, _)| *s >= THRESHOLD)
        .collect();
    c.sort_by(|a, b| b.0.total_cmp(&a.0));
    c.first().map(|(_, i)| *i)
}

fn key(i: usize) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(i as u64).to_le_bytes());
    k
}

fn percentile(mut t: Vec<Duration>, p: f64) -> Duration {
    t.sort();
    t[((t.len() - 1) as f64 * p) as usize]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let mut rng = Rng(7);
    let common = normalise((0..DIM).map(|_| rng.next()).collect());
    let items: Vec<Vec<f32>> = (0..n).map(|_| rng.vector(&common, 0.35)).collect();
    let queries: Vec<(usize, Vec<f32>)> = (0..QUERIES)
        .map(|k| {
            let target = (k * 7919) % n;
            let mix = 0.3 + 0.6 * (k as f32 / QUERIES as f32);
            let noise = rng.vector(&common, 0.35);
            let q: Vec<f32> = items[target]
                .iter()
                .zip(&noise)
                .map(|(a, b)| a + b * (1.0 - mix) * 0.9)
                .collect();
            (target, normalise(q))
        })
        .collect();
    let context = [1u8; 32];
    let truth: Vec<Option<usize>> = queries.iter().map(|(_, q)| before(&items, q)).collect();
    let cosines: Vec<f32> = queries.iter().map(|(t, q)| dot(&items[*t], q)).collect();
    println!(
        "{n} vectors of {DIM} dimensions, {QUERIES} queries at cosine {:.2}..{:.2} of their item, threshold {THRESHOLD}",
        cosines.iter().cloned().fold(f32::MAX, f32::min),
        cosines.iter().cloned().fold(f32::MIN, f32::max),
    );
    println!("| scan | p50 | p99 | p50 ratio to before | recall of the best match |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut times = Vec::new();
    for (_, q) in &queries {
        let t = Instant::now();
        std::hint::black_box(before(&items, q));
        times.push(t.elapsed());
    }
    let base = percentile(times.clone(), 0.5);
    row("before (scalar, per-entry vectors)", &times, base, 1.0);
    let scans = [
        ("exact (contiguous f32)", usize::MAX, 1),
        ("codes, re-score 128", 0, 128),
        ("codes, re-score 512 (default)", 0, 512),
        ("codes, re-score 2048", 0, 2048),
    ];
    for (name, exact_up_to, rescore) in scans {
        let index = SemanticIndex::with_scan(
            n * DIM * 4,
            Scan {
                exact_up_to,
                rescore,
            },
        );
        for (i, v) in items.iter().enumerate() {
            let question = Question {
                context,
                vector: v.clone(),
                text: String::new(),
            };
            index.insert(question, key(i), u64::MAX);
        }
        let mut times = Vec::new();
        let mut found = 0usize;
        let mut expected = 0usize;
        for ((_, q), want) in queries.iter().zip(&truth) {
            let t = Instant::now();
            let m = index.find(&context, q, THRESHOLD, 0, |_| true);
            times.push(t.elapsed());
            if let Some(w) = want {
                expected += 1;
                found += usize::from(m.map(|m| m.key) == Some(key(*w)));
            }
        }
        row(name, &times, base, found as f64 / expected.max(1) as f64);
    }
}

fn row(name: &str, times: &[Duration], base: Duration, recall: f64) {
    let p50 = percentile(times.to_vec(), 0.5);
    println!(
        "| {name} | {:.3} ms | {:.3} ms | {:.2} | {recall:.3} |",
        p50.as_secs_f64() * 1e3,
        percentile(times.to_vec(), 0.99).as_secs_f64() * 1e3,
        p50.as_secs_f64() / base.as_secs_f64(),
    );
}
