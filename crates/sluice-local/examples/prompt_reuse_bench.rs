//! Time to first token of a chat's second turn, with prompt reuse and without, on one GGUF
//! file (native engine): prints one JSON line.
//!
//! ```text
//! cargo run --release -p sluice-local --example prompt_reuse_bench -- \
//!     --file target/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf [--runs 5] [--threads 2] \
//!     [--repeat 4] [--ctx 2048]
//! ```
//!
//! Two models of the same file, one sequence each: one keeps a finished conversation's KV cache
//! (`prompt_cache_slots = 1`), the other does not (`0`). Each run, on each model in turn: a
//! conversation's first turn (a system message of `--repeat` copies of a paragraph, a
//! question, 32 greedy tokens), then another conversation (8 tokens) on the model's only
//! running sequence, then the first conversation's second turn, timed from submission to its
//! first token (a 1-token request: the prompt's forward passes and one sample). With the kept
//! cache only the second turn's new tokens run; without it, the whole prompt does. Every run's
//! conversation is new (its run number first in the system message), so nothing carries over
//! between runs. Medians over `--runs`, after one warm-up run.

#![allow(clippy::print_stdout)] // a benchmark program prints its result

use std::path::PathBuf;
use std::time::Instant;

use sluice_local::{ChatMessage, ChatModel, ChatRequest, Engine, LoadOptions, SamplingParams};

const PARAGRAPH: &str = "You are reviewing the design of a small HTTP gateway that forwards \
chat completion requests to several upstream model providers. It keeps per-key rate limits, a \
response cache and a cost ledger, and it can also run small local models. ";

struct Args {
    file: PathBuf,
    runs: usize,
    threads: usize,
    repeat: usize,
    ctx: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        file: PathBuf::new(),
        runs: 5,
        threads: 2,
        repeat: 4,
        ctx: 2048,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--file" => args.file = PathBuf::from(&value),
            "--runs" => args.runs = number()?,
            "--threads" => args.threads = number()?,
            "--repeat" => args.repeat = number()?,
            "--ctx" => args.ctx = number()?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.file.as_os_str().is_empty() || args.runs == 0 {
        return Err("--file is required and --runs must be at least 1".into());
    }
    Ok(args)
}

fn request(messages: Vec<ChatMessage>, max_tokens: usize) -> ChatRequest {
    ChatRequest {
        messages,
        max_tokens: Some(max_tokens),
        sampling: SamplingParams {
            temperature: Some(0.0),
            ..SamplingParams::default()
        },
        ignore_eos: true,
        ..ChatRequest::default()
    }
}

/// One turn's timing: milliseconds to the first token, prompt tokens, reused ones.
struct Turn {
    ms: f64,
    prompt: usize,
    cached: usize,
}

/// Run `run` of the scenario on `model`: first turn, another conversation, the timed second
/// turn.
fn second_turn(model: &ChatModel, run: usize, repeat: usize) -> Result<Turn, sluice_local::Error> {
    let system = format!("Conversation {run}. {}", PARAGRAPH.repeat(repeat));
    let mut turn = vec![
        ChatMessage::new("system", &system),
        ChatMessage::new("user", "Which part becomes the bottleneck first, and why?"),
    ];
    let first = model.generate_blocking(request(turn.clone(), 32), |_| {})?;
    let other = vec![ChatMessage::new("user", format!("Name a colour ({run})."))];
    model.generate_blocking(request(other, 8), |_| {})?;
    turn.push(ChatMessage::new("assistant", &first.text));
    turn.push(ChatMessage::new("user", "How would you measure it?"));
    let started = Instant::now();
    let done = model.generate_blocking(request(turn, 1), |_| {})?;
    Ok(Turn {
        ms: started.elapsed().as_secs_f64() * 1e3,
        prompt: done.usage.prompt_tokens,
        cached: done.usage.cached_prompt_tokens,
    })
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
    let load = |kept| {
        let options = LoadOptions {
            parallel: 1,
            queue_capacity: 1,
            context_length: Some(args.ctx),
            engine: Engine::Native,
            threads: Some(args.threads),
            prompt_cache_slots: kept,
            ..LoadOptions::default()
        };
        ChatModel::load(&args.file, &options)
    };
    let models = [load(1)?, load(0)?];
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut last = Vec::new();
    for run in 0..=args.runs {
        last.clear();
        for (model, times) in models.iter().zip(&mut times) {
            let turn = second_turn(model, run, args.repeat)?;
            // Run 0 warms up.
            if run > 0 {
                times.push(turn.ms);
            }
            last.push(turn);
        }
    }
    let [with, without] = times.map(median);
    let result = serde_json::json!({
        "file": args.file.display().to_string(),
        "threads": args.threads,
        "runs": args.runs,
        "prompt_tokens": last[0].prompt,
        "cached_tokens": {"reuse": last[0].cached, "no_reuse": last[1].cached},
        "ttft_ms": {
            "reuse": (with * 10.0).round() / 10.0,
            "no_reuse": (without * 10.0).round() / 10.0,
        },
        "speedup": (without / with * 100.0).round() / 100.0,
    });
    println!("{result}");
    Ok(())
}
