//! Chat generation speed of sluice-local on one GGUF file, the counterpart of
//! `bench/local_chat_ref.py` (llama.cpp through llama-cpp-python): same prompt text, greedy
//! sampling, one sequence, exactly `--gen` tokens (`ignore_eos`), prints one JSON line.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p sluice-local --example chat_bench -- \
//!     --file target/bench-gguf/bench-llama-246m-q4_0.gguf [--gen 128] [--runs 3] [--ctx 1024] \
//!     [--engine auto|native|candle] [--kv f32|f16|q8_0] [--streams N]
//! ```
//!
//! Timing, through the public API only (`ChatModel::generate_blocking`): the load is timed on its
//! own, then a warm-up request of 8 tokens (`warmup_ms`: it includes candle's one-off weight
//! repacking); then each run is a 1-token request (prompt forward + one greedy sample: the
//! prefill) and a `--gen`-token one; prefill tok/s is prompt tokens over the first,
//! gen tok/s is `gen - 1` over the difference (each further token is one forward + one sample).
//! Medians over `--runs`. candle's CPU thread count comes from `RAYON_NUM_THREADS` (default: the
//! physical cores) and is reported as `threads`.
//!
//! Each request's message begins with its own number (`[3] You are reviewing …`), so that no
//! request reuses another's KV cache (the native engine keeps a finished sequence's cache for
//! a prompt that extends it); `cached_prompt_tokens` reports the most any request reused.
//! Memory: the model's own count of its weights and KV caches, and the process's resident
//! memory after the runs (`VmRSS`).
//!
//! `--streams N` measures continuous batching instead: the model loads with
//! `parallel = N`, and each run submits N `--gen`-token requests at once (unique short prompts,
//! as `bench/local_batch_client.py`'s) and
//! waits for all; `aggregate_tps` is the tokens generated over the run's wall time (prefill
//! included), median over `--runs`.

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
    /// `--streams`: the concurrent mode.
    streams: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        file: PathBuf::new(),
        gen: 128,
        runs: 3,
        ctx: 1024,
        engine: Engine::Auto,
        kv: KvCacheType::F32,
        streams: None,
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
            "--streams" => args.streams = Some(number(value()?)?),
            "--engine" => {
                let name = value()?;
                args.engine = Engine::parse(&name)
                    .ok_or(format!("--engine {name}: auto, native or candle"))?;
            }
            "--kv" => {
                let name = value()?;
                args.kv =
                    KvCacheType::parse(&name).ok_or(format!("--kv {name}: f32, f16 or q8_0"))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.file.as_os_str().is_empty() {
        return Err("--file is required".into());
    }
    if args.gen < 2 || args.runs == 0 || args.streams == Some(0) {
        return Err("--gen must be at least 2, --runs and --streams at least 1".into());
    }
    Ok(args)
}

/// Request `n`'s message: the prompt behind its own number.
fn message(n: usize) -> ChatMessage {
    ChatMessage::new("user", format!("[{n}] {PROMPT}"))
}

/// A `--streams` request's short message, as `bench/local_batch_client.py` sends.
fn short_message(n: usize) -> ChatMessage {
    ChatMessage::new(
        "user",
        format!("Request {n}: write a long, detailed essay about rivers, their history and how people use them today."),
    )
}

fn request(n: usize, max_tokens: usize) -> ChatRequest {
    let message = if n >= 1000 {
        short_message(n)
    } else {
        message(n)
    };
    ChatRequest {
        messages: vec![message],
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

/// One request's seconds, token ids and prompt tokens reused from a kept cache.
struct Timed {
    seconds: f64,
    ids: Vec<u32>,
    cached: usize,
}

/// Request `n` of `max_tokens`, timed, checking it produced exactly that many.
fn timed(
    model: &ChatModel,
    n: usize,
    max_tokens: usize,
) -> Result<Timed, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let completion = model.generate_blocking(request(n, max_tokens), |_| {})?;
    let seconds = started.elapsed().as_secs_f64();
    if completion.usage.completion_tokens != max_tokens {
        return Err(format!(
            "asked for {max_tokens} tokens, got {}",
            completion.usage.completion_tokens
        )
        .into());
    }
    Ok(Timed {
        seconds,
        ids: completion.token_ids,
        cached: completion.usage.cached_prompt_tokens,
    })
}

/// The process's resident memory in MiB (`VmRSS`), where `/proc` has it.
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
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

/// `--streams`: median aggregate tok/s of `streams` concurrent requests per run.
fn streams(model: &ChatModel, args: &Args, streams: usize) -> Result<f64, String> {
    let mut rates = Vec::new();
    for run in 0..args.runs {
        let started = Instant::now();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..streams)
                .map(|i| {
                    let n = 1000 * (run + 1) + i;
                    scope.spawn(move || timed(model, n, args.gen).map_err(|e| e.to_string()))
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .map_err(|_| "a stream panicked".to_owned())?
                    .map(drop)
            })
        })?;
        rates.push((streams * args.gen) as f64 / started.elapsed().as_secs_f64());
    }
    Ok(median(rates))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let options = LoadOptions {
        parallel: args.streams.unwrap_or(1),
        queue_capacity: args.streams.unwrap_or(1),
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
    let prompt_tokens = model.prompt_tokens(&[message(0)])?.len();

    // Warm-up: thread pool, allocator, and candle's lazy repacking of the weights into its
    // x86 kernels' layout (done at the first matmul that uses them, not at load).
    let warmup = timed(&model, 0, 8)?.seconds;
    if let Some(n) = args.streams {
        let aggregate = streams(&model, &args, n)?;
        let result = serde_json::json!({
            "engine": format!("sluice-local/{}", model.engine()),
            "file": args.file.display().to_string(),
            "threads": options.threads.unwrap_or_else(candle_core::utils::get_num_threads),
            "streams": n,
            "gen_tokens": args.gen,
            "aggregate_tps": (aggregate * 100.0).round() / 100.0,
            "runs": args.runs,
            "kv": args.kv.as_str(),
            "rss_mib": rss_mib(),
        });
        println!("{result}");
        return Ok(());
    }
    let (mut prefill, mut gen, mut ids, mut cached) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for run in 0..args.runs {
        let first = timed(&model, 2 * run + 1, 1)?;
        let all = timed(&model, 2 * run + 2, args.gen)?;
        cached = cached.max(first.cached).max(all.cached);
        ids = all.ids;
        prefill.push(prompt_tokens as f64 / first.seconds);
        gen.push((args.gen - 1) as f64 / (all.seconds - first.seconds));
    }
    let memory = model.memory();
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
        "kv": args.kv.as_str(),
        "cached_prompt_tokens": cached,
        "weights_bytes": memory.weights_bytes,
        "kv_cache_bytes": memory.kv_cache_bytes,
        "rss_mib": rss_mib(),
        "first_ids": &ids[..ids.len().min(8)],
    });
    println!("{result}");
    Ok(())
}
