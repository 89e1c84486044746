//! What each check of a semantic candidate costs, per pair of the labelled set
//! (`tests/fixtures/semantic_pairs.json`), side by side in one run, single-threaded, batch 1:
//! the embedding of the new question (every semantic lookup pays it), the wording checks
//! (`same_question`) and the reranker's score of the pair (a candidate past the checks pays
//! it). With a trained cross-encoder it also prints what the reranker catches: the pairs at or
//! above the vector threshold that pass the wording checks, and those of them the reranker
//! refuses, paraphrases and near misses apart.
//!
//! ```text
//! cargo run --release -p sluice-server --example semantic_checks_bench -- \
//!     target/models/all-MiniLM-L6-v2 CROSS_ENCODER_DIR [rounds] [rerank_threshold]
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use serde_json::Value;
use sluice_local::{CrossEncoder, EmbedModel};
use sluice_server::cache::same_question::same_question;
use std::path::Path;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Pair {
    a: String,
    b: String,
    same: bool,
}

fn pairs() -> Vec<Pair> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/semantic_pairs.json");
    let set: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    set["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Pair {
            a: p["a"].as_str().unwrap().to_owned(),
            b: p["b"].as_str().unwrap().to_owned(),
            same: p["same"].as_bool().unwrap(),
        })
        .collect()
}

fn p50(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let embedder = EmbedModel::load(Path::new(&args[1])).expect("embedding model");
    let reranker = CrossEncoder::load(Path::new(&args[2])).expect("cross-encoder");
    let rounds: usize = args.get(3).map_or(5, |s| s.parse().unwrap());
    let rerank_threshold: f32 = args.get(4).map_or(0.5, |s| s.parse().unwrap());
    let pairs = pairs();
    // Warm both models.
    embedder.embed(&[pairs[0].a.as_str()]).unwrap();
    reranker.score(&pairs[0].a, &[pairs[0].b.as_str()]).unwrap();
    let (mut embed, mut checks, mut rerank) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        for p in &pairs {
            let t = Instant::now();
            std::hint::black_box(embedder.embed(&[p.b.as_str()]).unwrap());
            embed.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(same_question(&p.a, &p.b).is_ok());
            checks.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(reranker.score(&p.b, &[p.a.as_str()]).unwrap());
            rerank.push(t.elapsed());
        }
    }
    let base = p50(embed.clone());
    println!("| step, per pair | p50 | ratio to the embedding |");
    println!("| --- | ---: | ---: |");
    for (name, times) in [
        ("embedding of the question (MiniLM)", embed),
        ("wording checks", checks),
        ("reranker score of the pair", rerank),
    ] {
        let t = p50(times);
        println!(
            "| {name} | {:.3} ms | {:.3} |",
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() / base.as_secs_f64()
        );
    }
    // What the reranker catches among the candidates the vectors and checks let through.
    let threshold = sluice_core::config::DEFAULT_SEMANTIC_THRESHOLD;
    let (mut passed, mut refused) = ([0usize; 2], [0usize; 2]);
    for p in &pairs {
        let v = embedder.embed(&[p.a.as_str(), p.b.as_str()]).unwrap();
        if cosine(&v[0], &v[1]) < threshold || same_question(&p.a, &p.b).is_err() {
            continue;
        }
        let i = usize::from(!p.same);
        passed[i] += 1;
        let score = reranker.score(&p.b, &[p.a.as_str()]).unwrap()[0];
        refused[i] += usize::from(score < rerank_threshold);
    }
    println!(
        "at {threshold} with the checks: {} paraphrases and {} near misses pass; the reranker \
         (threshold {rerank_threshold}) refuses {} of the paraphrases and {} of the near misses",
        passed[0], passed[1], refused[0], refused[1]
    );
}
