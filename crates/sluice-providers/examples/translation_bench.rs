//! Per-request cost of each provider translation, to set against the gateway's own cost per
//! request (BENCHMARKS.md). Run: `cargo run --release -p sluice-providers --example
//! translation_bench`. Single-threaded; each figure is the median of 5 rounds of N calls.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // a benchmark program prints its table

use sluice_providers::{anthropic, gemini, ollama};
use sluice_types::openai::ChatCompletionRequest;
use sluice_types::sse::event_data;
use std::hint::black_box;
use std::time::Instant;

const N: u32 = 20_000;

/// The harness's request (`gateway-bench.sh`): one short user message, `max_tokens` 16.
const REQUEST: &str =
    r#"{"model":"fake-model","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}"#;

fn time(name: &str, mut f: impl FnMut()) {
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..N {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(N)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    println!("| {name} | {:.2} |", rounds[2]);
}

fn main() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../sluice-testkit/fixtures");
    let read = |p: &str| std::fs::read(format!("{fixtures}/{p}")).unwrap();
    let a_resp = read("anthropic/response_tool_use.json");
    let a_stream = read("anthropic/stream_text.sse");
    let g_resp = read("gemini/response_text.json");
    let g_stream = read("gemini/stream.sse");
    let o_resp = read("ollama/chat_response.json");
    let o_stream = read("ollama/chat_stream.ndjson");
    let opts = anthropic::RequestOptions {
        default_max_tokens: 4096,
        cache_system_min_bytes: None,
    };

    println!("| translation (per request) | µs |");
    println!("| --- | ---: |");
    time(
        "parse the typed OpenAI request (shared by all three)",
        || {
            black_box(serde_json::from_str::<ChatCompletionRequest>(REQUEST).unwrap());
        },
    );
    let req: ChatCompletionRequest = serde_json::from_str(REQUEST).unwrap();
    time("anthropic: request", || {
        black_box(anthropic::to_request(&req, "claude", opts).unwrap());
    });
    time("anthropic: response", || {
        black_box(anthropic::from_response(&a_resp, "m").unwrap());
    });
    time("anthropic: whole stream (8 events)", || {
        let mut t = anthropic::StreamTranslator::new("m", false);
        let mut out = Vec::new();
        // One `data:` line per event: each line is read as an event of its own.
        for e in a_stream.split_inclusive(|&b| b == b'\n') {
            if let Some(d) = event_data(e) {
                t.on_event(&d, &mut out);
            }
        }
        black_box(out);
    });
    time("gemini: request", || {
        black_box(gemini::to_request(&req).unwrap());
    });
    time("gemini: response", || {
        black_box(gemini::from_response(&g_resp, "m").unwrap());
    });
    time("gemini: whole stream (2 events)", || {
        let mut t = gemini::StreamTranslator::new("m", false);
        let mut out = Vec::new();
        for e in g_stream.split_inclusive(|&b| b == b'\n') {
            if let Some(d) = event_data(e) {
                let _ = t.on_event(&d, &mut out);
            }
        }
        t.end(&mut out);
        black_box(out);
    });
    time("ollama: request", || {
        black_box(ollama::to_chat_request(&req, REQUEST.as_bytes(), "llama3.2", None).unwrap());
    });
    time("ollama: response", || {
        black_box(ollama::from_chat_response(&o_resp, "m").unwrap());
    });
    time("ollama: whole stream (4 lines)", || {
        let mut t = ollama::LineTranslator::new("m", false);
        let mut out = Vec::new();
        for line in o_stream.split(|&b| b == b'\n') {
            t.on_line(line, &mut out);
        }
        black_box(out);
    });
    let in_req =
        br#"{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"Say hello."}]}"#;
    time("inbound /v1/messages: request", || {
        black_box(anthropic::inbound::to_openai(in_req).unwrap());
    });
}
