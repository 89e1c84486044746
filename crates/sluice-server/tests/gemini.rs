//! `type = "gemini"` over real loopback HTTP, against a fake Gemini API that serves the
//! documented fixtures of `sluice-testkit/fixtures/gemini/`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{fake_provider, full, Recorded, Seen};
use serde_json::json;
use sluice_testkit::client::{post_json, post_stream};
use std::net::SocketAddr;

const TEXT: &str = include_str!("../../sluice-testkit/fixtures/gemini/response_text.json");
const BLOCKED: &str = include_str!("../../sluice-testkit/fixtures/gemini/response_blocked.json");
const STREAM: &str = include_str!("../../sluice-testkit/fixtures/gemini/stream.sse");
const EMBED: &str = include_str!("../../sluice-testkit/fixtures/gemini/embed_batch.json");

async fn fake_gemini() -> (SocketAddr, Recorded) {
    fake_provider(|req| {
        if req.target.contains(":streamGenerateContent") {
            (200, "text/event-stream", full(STREAM))
        } else if req.target.contains(":batchEmbedContents") {
            (200, "application/json", full(EMBED))
        } else if req.json.to_string().contains("forbidden topic") {
            (200, "application/json", full(BLOCKED))
        } else {
            (200, "application/json", full(TEXT))
        }
    })
    .await
}

async fn gateway(addr: SocketAddr) -> common::Gateway {
    common::start_with(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{dir}"
[[providers]]
name = "google"
type = "gemini"
base_url = "http://{addr}"
api_key = "AIza-test"
[[models]]
name = "flash"
provider = "google"
upstream = "gemini-2.0-flash"
[[models]]
name = "embed"
provider = "google"
upstream = "text-embedding-004"
"#,
        dir = std::env::temp_dir()
            .join("sluice-test-data")
            .join(
                env!("CARGO_MANIFEST_DIR")
                    .trim_start_matches('/')
                    .replace('/', "_")
            )
            .display(),
    ))
    .await
}

#[tokio::test]
async fn chat_through_generate_content() {
    let (addr, seen) = fake_gemini().await;
    let gw = gateway(addr).await;
    let body = json!({"model": "flash", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How does AI work?"}]});
    let r = post_json(&gw.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "AI works by learning patterns from data."
    );
    assert_eq!(
        r.json()["usage"]["prompt_tokens_details"]["cached_tokens"],
        2
    );
    let Seen {
        target,
        headers,
        json: sent,
    } = seen.lock().unwrap()[0].clone();
    assert_eq!(target, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(headers["x-goog-api-key"], "AIza-test");
    assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(sent["contents"][0]["parts"][0]["text"], "How does AI work?");
}

#[tokio::test]
async fn a_blocked_prompt_is_a_content_filter_finish() {
    let (addr, _seen) = fake_gemini().await;
    let gw = gateway(addr).await;
    let body =
        json!({"model": "flash", "messages": [{"role": "user", "content": "forbidden topic"}]});
    let r = post_json(&gw.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["choices"][0]["finish_reason"], "content_filter");
}

#[tokio::test]
async fn streams_end_when_gemini_closes() {
    let (addr, seen) = fake_gemini().await;
    let gw = gateway(addr).await;
    let body = json!({"model": "flash", "stream": true, "messages": [{"role": "user", "content": "sky?"}]});
    let mut s = post_stream(&gw.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    let (events, err) = s.collect_events().await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "The sky is blue.");
    assert_eq!(
        seen.lock().unwrap()[0].target,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );
}

#[tokio::test]
async fn embeddings_through_batch_embed() {
    let (addr, seen) = fake_gemini().await;
    let gw = gateway(addr).await;
    let r = post_json(
        &gw.url("/v1/embeddings"),
        r#"{"model":"embed","input":["a","b"]}"#,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    let Seen {
        target, json: sent, ..
    } = seen.lock().unwrap()[0].clone();
    assert_eq!(
        target,
        "/v1beta/models/text-embedding-004:batchEmbedContents"
    );
    assert_eq!(sent["requests"][0]["model"], "models/text-embedding-004");
}

// === Against sluice-testkit's fake gemini shape, controlled per request by `x_fake` ===

#[tokio::test]
async fn fake_gemini_honours_per_request_content() {
    common::native::content("gemini").await;
}

#[tokio::test]
async fn fake_gemini_cut_mid_stream_ends_in_stream_interrupted() {
    common::native::cut("gemini").await;
}

#[tokio::test]
async fn fake_gemini_tool_call_stream() {
    common::native::tool_stream("gemini").await;
}

#[tokio::test]
async fn fake_gemini_unavailable_falls_back() {
    common::native::fallback("gemini", 503).await;
}
