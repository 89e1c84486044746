//! Chat generation speed of sluice-local on one GGUF file, the counterpart of
//! `bench/local_chat_ref.py` (llama.cpp through llama-cpp-python): same prompt text, greedy
//! sampling, one sequence, exactly `--gen` tokens (`ignore_eos`), prints one JSON line.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p sluice-local --example chat_bench -- \
//!     --file target/bench-gguf/bench-llama-246m-q4_0.gguf [--gen 128] [--runs 3] [--ctx 1024] \
//!     [--engine auto|native|candle] [--kv f32|f16]
//! ```
//!
//! Timing, through the public API only (`ChatModel::generate_blocking`): the load is timed on its
//! own, then a warm-up request of 8 tokens (`warmup_ms`: it includes candle's one-off weight
//! repacking); then each run is a 1-token request (prompt forward + one greedy sample: the
//! prefill) and a `--gen`-token one; prefill tok/s is prompt tokens over the first,
//! gen tok/s is `gen - 1` over the difference (each further token is one forward + one sample).
//! Medians over `--runs`. candle's CPU thread count comes from `RAYON_NUM_THREADS` (default: the
//! physical cores) and is reported as `threads`.

#![allow(clippy::print_stdout)] // a benchmark program prints its result

use std::path::PathBuf;
use std::time::Instant;

use sluice_local::{
    ChatMessage, ChatModel, ChatRequest, Engine, KvCacheType, LoadOptions, SamplingParams,
};

/// The user message; `bench/local_chat_ref.py` has the same text.
const PROMPT: &str = "You are reviewing the design of a small HTTP gateway that forwards chat \
completion requests to several upstream model providers. It keeps per-key rate limits, a \
response cache and a cost ledger, and it can also run small local models. Explain, in a few \
short paragraphs, which parts of such a gateway are most likely to become a bottleneck under \
heavy load, how you would measure each of them, and what you would change first.";

struct Args {
    file: PathBuf,
    gen: usize,
    runs: usize,
    ctx: usize,
    engine: Engine,
    kv: KvCacheType,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        file: PathBuf::new(),
        gen: 128,
        runs: 3,
        ctx: 1024,
        engine: Engine::Auto,
        kv: KvCacheType::F32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--file" => args.file = PathBuf::from(value()?),
            "--gen" => args.gen = number(value()?)?,
            "--runs" => args.runs = number(value()?)?,
            "--ctx" => args.ctx = number(value()?)?,
            "--engine" => {
                let name = value()?;
                args.engine = Engine::parse(&name)
                    .ok_or(format!("--engine {name}: auto, native or candle"))?;
            }
            "--kv" => {
                let name = value()?;
                args.kv = KvCacheType::parse(&name).ok_or(format!("--kv {name}: f32 or f16"))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.file.as_os_str().is_empty() {
        return Err("--file is required".into());
    }
    if args.gen < 2 || args.runs == 0 {
        return Err("--gen must be at least 2 and --runs at least 1".into());
    }
    Ok(args)
}

fn request(max_tokens: usize) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new("user", PROMPT)],
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        sampling: SamplingParams {
            temperature: Some(0.0),
            seed: Some(1),
            ..SamplingParams::default()
        },
        ignore_eos: true,
        ..ChatRequest::default()
    }
}

/// Seconds and token ids of one request of `max_tokens`, checking it produced exactly that many.
fn timed(
    model: &ChatModel,
    max_tokens: usize,
) -> Result<(f64, Vec<u32>), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let completion = model.generate_blocking(request(max_tokens), |_| {})?;
    let seconds = started.elapsed().as_secs_f64();
    if completion.usage.completion_tokens != max_tokens {
        return Err(format!(
            "asked for {max_tokens} tokens, got {}",
            completion.usage.completion_tokens
        )
        .into());
    }
    Ok((seconds, completion.token_ids))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let options = LoadOptions {
        parallel: 1,
        queue_capacity: 1,
        context_length: Some(args.ctx),
        engine: args.engine,
        kv_cache: args.kv,
        threads: std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|t| t.parse().ok()),
        ..LoadOptions::default()
    };
    let started = Instant::now();
    let model = ChatModel::load(&args.file, &options)?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let prompt_tokens = model
        .prompt_tokens(&[ChatMessage::new("user", PROMPT)])?
        .len();

    // Warm-up: thread pool, allocator, and candle's lazy repacking of the weights into its
    // x86 kernels' layout (done at the first matmul that uses them, not at load).
    let (warmup, _) = timed(&model, 8)?;
    let (mut prefill, mut gen, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let (first, _) = timed(&model, 1)?;
        let (all, all_ids) = timed(&model, args.gen)?;
        ids = all_ids;
        prefill.push(prompt_tokens as f64 / first);
        gen.push((args.gen - 1) as f64 / (all - first));
    }
    let result = serde_json::json!({
        "engine": format!("sluice-local/{}", model.engine()),
        "version": env!("CARGO_PKG_VERSION"),
        "file": args.file.display().to_string(),
        "threads": options.threads.unwrap_or_else(candle_core::utils::get_num_threads),
        "load_ms": (load_ms * 10.0).round() / 10.0,
        "warmup_ms": (warmup * 1e4).round() / 10.0,
        "prompt_tokens": prompt_tokens,
        "prefill_tps": (median(prefill) * 100.0).round() / 100.0,
        "gen_tokens": args.gen,
        "gen_tps": (median(gen) * 100.0).round() / 100.0,
        "runs": args.runs,
        "first_ids": &ids[..ids.len().min(8)],
    });
    println!("{result}");
    Ok(())
}
