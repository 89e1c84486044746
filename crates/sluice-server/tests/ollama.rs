//! `type = "ollama"` over real loopback HTTP, against a fake Ollama that serves the
//! documented fixtures of `sluice-testkit/fixtures/ollama/`, streaming NDJSON line by line.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use bytes::Bytes;
use common::{fake_provider, full, Recorded};
use http_body_util::BodyExt;
use hyper::body::Frame;
use serde_json::json;
use sluice_testkit::client::{post_json, post_stream};
use std::convert::Infallible;
use std::net::SocketAddr;

const CHAT: &str = include_str!("../../sluice-testkit/fixtures/ollama/chat_response.json");
const STREAM: &str = include_str!("../../sluice-testkit/fixtures/ollama/chat_stream.ndjson");
const EMBED: &str = include_str!("../../sluice-testkit/fixtures/ollama/embed_response.json");

async fn fake_ollama() -> (SocketAddr, Recorded) {
    fake_provider(
        |req| match (req.target.as_str(), req.json["stream"] == true) {
            // One line per frame, as Ollama flushes them.
            ("/api/chat", true) => (
                200,
                "application/x-ndjson",
                Lines(
                    STREAM
                        .lines()
                        .map(|l| Bytes::from(format!("{l}\n")))
                        .collect(),
                )
                .boxed(),
            ),
            ("/api/chat", false) => (200, "application/json", full(CHAT)),
            _ => (200, "application/json", full(EMBED)),
        },
    )
    .await
}

/// A body that yields one frame per line, each as its own frame.
struct Lines(std::collections::VecDeque<Bytes>);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

async fn gateway(addr: SocketAddr) -> common::Gateway {
    common::start_with(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{dir}"
[[providers]]
name = "ollama"
type = "ollama"
base_url = "http://{addr}"
keep_alive = "10m"
[[models]]
name = "local"
provider = "ollama"
upstream = "llama3.2"
[[models]]
name = "minilm"
provider = "ollama"
upstream = "all-minilm"
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
async fn chat_and_keep_alive() {
    let (addr, seen) = fake_ollama().await;
    let gw = gateway(addr).await;
    let body = json!({"model": "local", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20});
    let r = post_json(&gw.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello! How are you today?"
    );
    assert_eq!(r.json()["usage"]["completion_tokens"], 298);
    let body = json!({"model": "local", "messages": [{"role": "user", "content": "hi"}], "keep_alive": -1});
    post_json(&gw.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].target, "/api/chat");
    assert_eq!(seen[0].json["model"], "llama3.2");
    assert_eq!(seen[0].json["keep_alive"], "10m", "the provider's default");
    assert_eq!(seen[0].json["options"]["num_predict"], 20);
    assert_eq!(
        seen[1].json["keep_alive"], -1,
        "the request's own, passed through"
    );
}

#[tokio::test]
async fn ndjson_stream_is_relayed_as_sse() {
    let (addr, _seen) = fake_ollama().await;
    let gw = gateway(addr).await;
    let body = json!({"model": "local", "stream": true, "messages": [{"role": "user", "content": "sky?"}]});
    let mut s = post_stream(&gw.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
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
    let m = sluice_testkit::client::get(&gw.url("/metrics"))
        .await
        .unwrap()
        .text();
    assert!(m.contains(r#"sluice_tokens_total{model="local",provider="ollama",endpoint="chat",direction="out"} 282"#), "{m}");
}

#[tokio::test]
async fn embeddings_through_ollama() {
    let (addr, seen) = fake_ollama().await;
    let gw = gateway(addr).await;
    let r = post_json(
        &gw.url("/v1/embeddings"),
        r#"{"model":"minilm","input":"hello"}"#,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.json()["data"][0]["embedding"].as_array().unwrap().len(),
        10
    );
    assert_eq!(r.json()["usage"]["prompt_tokens"], 8);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].target, "/api/embed");
    assert_eq!(
        seen[0].json,
        json!({"model": "all-minilm", "input": "hello", "keep_alive": "10m"})
    );
}

// === Against sluice-testkit's fake ollama shape, controlled per request by `x_fake` ===

#[tokio::test]
async fn fake_ollama_honours_per_request_content() {
    common::native::content("ollama").await;
}

#[tokio::test]
async fn fake_ollama_cut_mid_stream_ends_in_stream_interrupted() {
    common::native::cut("ollama").await;
}

#[tokio::test]
async fn fake_ollama_tool_call_stream() {
    common::native::tool_stream("ollama").await;
}

#[tokio::test]
async fn fake_ollama_failing_falls_back() {
    common::native::fallback("ollama", 500).await;
}
