//! What a semantic-cache miss waits for: one question of about 100 tokens embedded alone
//! (batch 1), with the encoder in `f32` and in 8 bits (`Precision::Int8`), side by side in one
//! run, on rayon's whole pool and on one thread:
//!
//! ```text
//! cargo build --release -p sluice-local --example embed_precision_bench
//! target/release/examples/embed_precision_bench target/models/all-MiniLM-L6-v2 [rounds] [per_round]
//! ```
//!
//! Each round embeds `per_round` questions with every setting in turn (so load on a shared
//! machine falls on all of them alike); the p50 and p90 of every call's latency are printed per
//! setting, with the questions' mean token count.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::path::Path;
use std::time::Instant;

use sluice_local::{EmbedModel, Precision};

// As in the `sluice` binary: the allocator decides how often a forward pass's buffers fault in.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORDS: &[&str] = &[
    "the",
    "a",
    "how",
    "can",
    "I",
    "make",
    "my",
    "service",
    "faster",
    "when",
    "it",
    "reads",
    "data",
    "from",
    "database",
    "every",
    "request",
    "and",
    "what",
    "should",
    "change",
    "in",
    "code",
    "to",
    "keep",
    "memory",
    "low",
    "while",
    "users",
    "upload",
    "large",
    "files",
    "is",
    "there",
    "better",
    "way",
    "cache",
    "results",
    "for",
    "an",
    "hour",
    "without",
    "losing",
    "updates",
    "that",
    "arrive",
    "later",
    "please",
    "explain",
    "why",
    "slow",
    "query",
    "plan",
    "uses",
    "index",
    "on",
    "table",
    "with",
    "million",
    "rows",
    "team",
    "wants",
    "simple",
    "answer",
    "which",
    "works",
    "both",
    "old",
    "new",
    "version",
    "of",
    "library",
    "we",
    "also",
    "need",
    "tests",
    "deploy",
    "safely",
    "this",
    "week",
    "before",
    "customers",
    "notice",
    "any",
    "problem",
    "server",
    "logs",
    "show",
    "errors",
    "at",
    "night",
];

/// `n` questions of 96 words (about 100 tokens with MiniLM's tokenizer), deterministic.
fn questions(n: usize) -> Vec<String> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            let words: Vec<&str> = (0..96)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    WORDS[(s % WORDS.len() as u64) as usize]
                })
                .collect();
            format!("{}?", words.join(" "))
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(&args[1]);
    let rounds: usize = args.get(2).map_or(10, |s| s.parse().unwrap());
    let per_round: usize = args.get(3).map_or(20, |s| s.parse().unwrap());
    let f32 = EmbedModel::load_with_precision(dir, Precision::F32).unwrap();
    let int8 = EmbedModel::load_with_precision(dir, Precision::Int8).unwrap();
    let texts = questions(32);
    let tokens: usize = texts.iter().map(|t| f32.tokenize(t).unwrap().len()).sum();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let all = rayon::current_num_threads();
    let settings: [(&str, &EmbedModel, bool); 4] = [
        ("f32", &f32, false),
        ("int8", &int8, false),
        ("f32 1 thread", &f32, true),
        ("int8 1 thread", &int8, true),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); settings.len()];
    let mut next = 0;
    for round in 0..=rounds {
        for (s, &(_, model, single)) in settings.iter().enumerate() {
            for _ in 0..per_round {
                let text = texts[next % texts.len()].as_str();
                next += 1;
                let start = Instant::now();
                if single {
                    one.install(|| model.embed(&[text]).unwrap());
                } else {
                    model.embed(&[text]).unwrap();
                }
                // Round 0 warms up.
                if round > 0 {
                    times[s].push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
    }
    println!(
        "{} questions of {:.1} tokens on average, {rounds} rounds of {per_round} per setting, \
         pool of {all} threads",
        texts.len(),
        tokens as f64 / texts.len() as f64
    );
    println!("setting        |    p50 ms |    p90 ms");
    for ((name, ..), t) in settings.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        println!(
            "{name:<14} | {:>9.3} | {:>9.3}",
            percentile(t, 0.5),
            percentile(t, 0.9)
        );
    }
}
