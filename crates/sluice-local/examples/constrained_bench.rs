//! What constrained decoding (`response_format` `json_schema`) costs per generated token on one
//! GGUF file, against unconstrained decoding of the same prompt; prints one JSON line.
//!
//! ```text
//! cargo run --release -p sluice-local --example constrained_bench -- \
//!     --file target/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf [--runs 5] [--gen 128] \
//!     [--schema objects|patterned]
//! cargo run --release -p sluice-local --example constrained_bench -- --print-setup [--schema …]
//! ```
//!
//! `--schema`: `objects` (the default: strings with lengths, arrays, an integer, nested
//! objects) or `patterned` (strings with `pattern`s and `format`s: date, date-time, uuid, email,
//! ipv4).
//!
//! `--print-setup` prints the prompt and the schema (one JSON line) for llama.cpp's side of the
//! comparison, `bench/local_constrained_ref.py` (`bench/local-constrained.sh` runs both).
//!
//! Decode step, both ways, through the public API: a 1-token request (the prefill and one
//! sample) and a whole one of the same prompt; the step is the difference over the further
//! tokens (`gen - 1` unconstrained with `ignore_eos`; the constrained answer ends when its
//! value does). Medians over `--runs`, greedy. Then the constraint alone, replayed on the
//! constrained answer's tokens with a fresh [`sluice_local::Constraint`] per run (so its mask
//! cache starts empty, as a request's does): the time per token to mask a logits row and take
//! the token: mean, median and worst (with the position of the worst). And the schema's
//! compile time, afresh and found in a [`sluice_local::GrammarCache`].

#![allow(clippy::print_stdout)] // a benchmark program prints its result

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use sluice_local::{
    ChatMessage, ChatModel, ChatRequest, Grammar, GrammarCache, LoadOptions, SamplingParams,
};

const PROMPT: &str = "Describe a small HTTP gateway for language models as JSON: a title, a \
one-sentence summary, up to five tags, a rating from 1 to 10, and three sections, each with a \
heading and a short body.";

const PATTERNED_PROMPT: &str = "Register a user of an HTTP gateway for language models as JSON: \
a user code of two capital letters, a dash and four digits, an email address, a birth date, \
the time of registration, an id (a UUID), the client's IPv4 address and a short motto.";

/// The schema (and prompt) `--schema` names.
fn setup(name: &str) -> Result<(&'static str, serde_json::Value), String> {
    match name {
        "objects" => Ok((PROMPT, schema())),
        "patterned" => Ok((PATTERNED_PROMPT, patterned_schema())),
        other => Err(format!("unknown --schema {other} (objects, patterned)")),
    }
}

fn patterned_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{4}$"},
            "email": {"type": "string", "format": "email", "maxLength": 60},
            "born": {"type": "string", "format": "date"},
            "registered": {"type": "string", "format": "date-time"},
            "id": {"type": "string", "format": "uuid"},
            "ip": {"type": "string", "format": "ipv4"},
            "motto": {"type": "string", "pattern": "^[A-Z][a-z ,]*[.!]$", "maxLength": 80}
        },
        "required": ["code", "email", "born", "registered", "id", "ip", "motto"],
        "additionalProperties": false
    })
}

fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 80},
            "summary": {"type": "string", "maxLength": 300},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 5},
            "rating": {"type": "integer"},
            "sections": {
                "type": "array",
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "heading": {"type": "string", "maxLength": 60},
                        "body": {"type": "string", "maxLength": 400}
                    },
                    "required": ["heading", "body"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["title", "summary", "tags", "rating", "sections"],
        "additionalProperties": false
    })
}

fn request(prompt: &str, max_tokens: usize, constraint: Option<Arc<Grammar>>) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new("user", prompt)],
        max_tokens: Some(max_tokens),
        sampling: SamplingParams {
            temperature: Some(0.0),
            ..SamplingParams::default()
        },
        ignore_eos: constraint.is_none(),
        constraint,
        ..ChatRequest::default()
    }
}

/// Seconds per decode step (and the whole answer's tokens) of `max_tokens` tokens.
fn step(
    model: &ChatModel,
    prompt: &str,
    max_tokens: usize,
    constraint: Option<Arc<Grammar>>,
) -> Result<(f64, sluice_local::Completion), Box<dyn std::error::Error>> {
    let started = Instant::now();
    model.generate_blocking(request(prompt, 1, constraint.clone()), |_| {})?;
    let first = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let done = model.generate_blocking(request(prompt, max_tokens, constraint), |_| {})?;
    let all = started.elapsed().as_secs_f64();
    let further = done.usage.completion_tokens.saturating_sub(1).max(1);
    Ok(((all - first) / further as f64, done))
}

/// Seconds to compile `schema` (medians over `runs`): afresh, and found in a
/// [`GrammarCache`] (what a request with a schema seen before pays).
fn compile_times(
    schema: &serde_json::Value,
    runs: usize,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let (mut fresh, mut cached) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let cache = GrammarCache::new();
        let started = Instant::now();
        cache.compile(schema)?;
        fresh.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        cache.compile(schema)?;
        cached.push(started.elapsed().as_secs_f64());
    }
    Ok((median(fresh), median(cached)))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut file, mut runs, mut gen) = (PathBuf::new(), 5usize, 128usize);
    let (mut print_setup, mut schema_name) = (false, "objects".to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--print-setup" {
            print_setup = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--file" => file = PathBuf::from(value),
            "--runs" => runs = value.parse()?,
            "--gen" => gen = value.parse()?,
            "--schema" => schema_name = value,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let (prompt, schema) = setup(&schema_name)?;
    if print_setup {
        // For llama.cpp's side of the comparison (bench/local_constrained_ref.py).
        println!(
            "{}",
            serde_json::json!({"prompt": prompt, "schema": schema})
        );
        return Ok(());
    }
    let options = LoadOptions {
        parallel: 1,
        context_length: Some(2048),
        ..LoadOptions::default()
    };
    let model = ChatModel::load(&file, &options)?;
    let (compile, cached) = compile_times(&schema, runs)?;
    let grammar = Arc::new(Grammar::from_json_schema(&schema)?);
    step(&model, prompt, 8, None)?; // warm-up

    let (mut free, mut constrained, mut answer) = (Vec::new(), Vec::new(), None);
    for _ in 0..runs {
        free.push(step(&model, prompt, gen, None)?.0);
        let (seconds, done) = step(&model, prompt, 1500, Some(Arc::clone(&grammar)))?;
        constrained.push(seconds);
        answer = Some(done);
    }
    let answer = answer.ok_or("--runs must be at least 1")?;
    let parsed: Result<serde_json::Value, _> = serde_json::from_str(&answer.text);
    let valid = parsed
        .as_ref()
        .map_err(ToString::to_string)
        .and_then(|v| sluice_local::testing::json_schema::validate(&schema, v));

    // The constraint alone, replayed on the answer's tokens.
    let vocab = model.info().vocab_size;
    let mut times: Vec<(f64, usize)> = Vec::new();
    for _ in 0..runs {
        let mut constraint = model.constraint(Arc::clone(&grammar));
        for (at, &id) in answer.token_ids.iter().enumerate() {
            let mut logits = vec![0.0f32; vocab];
            let started = Instant::now();
            constraint.apply(&mut logits)?;
            let end = constraint.accept(id, model.token_bytes(id))?;
            let seconds = started.elapsed().as_secs_f64();
            times.push((seconds, at));
            if end || constraint.finished() {
                break;
            }
        }
    }
    let free_step = median(free);
    let mask = times.iter().map(|t| t.0).sum::<f64>() / times.len().max(1) as f64;
    let (worst, worst_at) = times
        .iter()
        .copied()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or_default();
    let mask_p50 = median(times.iter().map(|t| t.0).collect());
    let result = serde_json::json!({
        "file": file.display().to_string(),
        "schema": schema_name,
        "engine": model.engine(),
        "vocab": vocab,
        "runs": runs,
        "free_step_ms": (free_step * 1e5).round() / 100.0,
        "constrained_step_ms": (median(constrained) * 1e5).round() / 100.0,
        "constrained_tokens": answer.usage.completion_tokens,
        "mask_us_per_token": (mask * 1e7).round() / 10.0,
        "mask_p50_us": (mask_p50 * 1e7).round() / 10.0,
        "mask_worst_us": (worst * 1e7).round() / 10.0,
        "mask_worst_at_token": worst_at,
        "mask_share_of_step": (mask / free_step * 1e4).round() / 1e4,
        "compile_us": (compile * 1e7).round() / 10.0,
        "cached_compile_us": (cached * 1e7).round() / 10.0,
        "valid": valid.is_ok(),
        "answer": answer.text,
    });
    println!("{result}");
    Ok(())
}
