//! Per-request cost of each provider translation, to set against the gateway's own cost per
//! request (BENCHMARKS.md). Run: `cargo run --release -p sluice-providers --example
//! translation_bench`. Single-threaded; each figure is the median of 5 rounds of N calls.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // a benchmark program prints its table

use sluice_providers::responses::{answer, inbound, items, native, stream};
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
    responses(&read);
}

/// `/v1/responses`: what the gateway does per request besides its pipeline, natively (the
/// edge's reading, which every Responses request pays, the model spliced, the answer read
/// for what is stored and its usage) and translated (the same reading, and the chat answer
/// written back), against chat's own view of a chat request.
fn responses(read: &dyn Fn(&str) -> Vec<u8>) {
    let native_resp = read("openai/responses_text.json");
    let native_stream = read("openai/responses_stream_text.sse");
    let body = bytes::Bytes::from_static(
        br#"{"model":"fake-model","input":[{"role":"user","content":"Say hello."}],"max_output_tokens":16}"#,
    );
    let chat_answer = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1741476542,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":36,"completion_tokens":10,"total_tokens":46}}"#;
    let chat_body = bytes::Bytes::from_static(REQUEST.as_bytes());
    time(
        "chat (for scale): the view of a chat request and its model spliced",
        || {
            let v = sluice_types::ChatRequest::parse(&chat_body).unwrap();
            black_box(v.upstream_body(&chat_body, "gpt-4.1", false));
        },
    );
    let edge = || {
        let t = inbound::to_chat(&body, None).unwrap();
        let kept = items::input_items(&body, &t.echo.id, None).unwrap();
        (t, kept)
    };
    time(
        "responses: the edge's reading (to chat, input items kept)",
        || {
            black_box(edge());
        },
    );
    time("responses native: request (model spliced)", || {
        black_box(native::with_model(&body, "gpt-4.1").unwrap());
    });
    time("responses native: whole answer read (kept, usage)", || {
        black_box(native::kept(&native_resp).unwrap());
        black_box(sluice_types::Usage::from_response(&native_resp));
    });
    time(
        "responses native: whole stream read as it passes (17 events)",
        || {
            let mut r = sluice_providers::Reader::Responses.stream("m", 1 << 20);
            black_box(r.push(bytes::Bytes::from(native_stream.clone())));
            black_box(r.end().ok());
        },
    );
    time("responses native: whole stream watched (17 events)", || {
        let mut w = native::NativeWatcher::new(None, Box::new(|k, r| drop(black_box((k, r)))));
        let mut out = Vec::new();
        for e in native_stream.split_inclusive(|&b| b == b'\n') {
            w.on_event(e, &mut out);
        }
        black_box(out);
    });
    let (t, _) = edge();
    time("responses translated: whole answer written back", || {
        black_box(answer::from_chat(chat_answer, &t.echo).unwrap());
    });
    let chunks: Vec<String> = ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"]
        .iter()
        .map(|p| format!(r#"{{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{{"content":"{p}"}},"finish_reason":null}}]}}"#))
        .chain([r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":36,"completion_tokens":10,"total_tokens":46}}"#.to_owned(), "[DONE]".to_owned()])
        .collect();
    let sse: Vec<u8> = chunks
        .iter()
        .flat_map(|c| format!("data: {c}\n\n").into_bytes())
        .collect();
    time(
        "chat (for scale): whole stream read as it passes (11 chunks)",
        || {
            let mut r =
                sluice_providers::Reader::OpenAi { strip_usage: false }.stream("m", 1 << 20);
            black_box(r.push(bytes::Bytes::from(sse.clone())));
            black_box(r.end().ok());
        },
    );
    time(
        "responses translated: whole stream written back (11 chunks)",
        || {
            let mut c = stream::StreamConverter::new(t.echo.clone());
            let mut out = Vec::new();
            for ch in &chunks {
                sluice_providers::Reframe::on_event(&mut c, ch.as_bytes(), &mut out);
            }
            black_box(out);
        },
    );
}
