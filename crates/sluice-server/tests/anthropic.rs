//! `type = "anthropic"` over real loopback HTTP: the gateway translates OpenAI requests to
//! the Messages API and the answers back, against a fake Anthropic upstream that serves the
//! documented fixtures of `sluice-testkit/fixtures/anthropic/`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{fake_provider, full, Recorded};
use serde_json::json;
use sluice_testkit::client::{post_json, post_stream};
use sluice_testkit::{Behavior, FakeUpstream};
use std::net::SocketAddr;

const RESPONSE: &str =
    include_str!("../../sluice-testkit/fixtures/anthropic/response_tool_use.json");
const STREAM: &str = include_str!("../../sluice-testkit/fixtures/anthropic/stream_text.sse");
const OVERLOADED: &str =
    include_str!("../../sluice-testkit/fixtures/anthropic/error_overloaded.json");

/// A fake Messages API: the stream fixture for `"stream": true`, a 529 when the body
/// mentions `overload`, else the tool-use response fixture.
async fn fake_anthropic() -> (SocketAddr, Recorded) {
    fake_provider(|req| {
        let text = req.json.to_string();
        if text.contains("overload") {
            (529, "application/json", full(OVERLOADED))
        } else if req.json["stream"] == true {
            (200, "text/event-stream", full(STREAM))
        } else {
            (200, "application/json", full(RESPONSE))
        }
    })
    .await
}

async fn gateway(anthropic: SocketAddr, openai: &FakeUpstream) -> common::Gateway {
    common::start_with(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{dir}"
[[providers]]
name = "anthropic"
type = "anthropic"
base_url = "http://{anthropic}"
api_key = "sk-ant-test"
default_max_tokens = 1024
[[providers]]
name = "openai"
type = "openai"
base_url = "{openai}"
[[models]]
name = "claude"
provider = "anthropic"
upstream = "claude-3-5-sonnet-20241022"
[[models]]
name = "gpt"
provider = "openai"
[[routes]]
name = "r"
targets = ["claude", "gpt"]
"#,
        dir = std::env::temp_dir()
            .join("sluice-test-data")
            .join(
                env!("CARGO_MANIFEST_DIR")
                    .trim_start_matches('/')
                    .replace('/', "_")
            )
            .display(),
        openai = openai.base_url(),
    ))
    .await
}

#[tokio::test]
async fn chat_is_translated_both_ways() {
    let (addr, seen) = fake_anthropic().await;
    let openai = FakeUpstream::start().await;
    let gw = gateway(addr, &openai).await;
    let body = json!({
        "model": "claude",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in SF?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    });
    let r = post_json(&gw.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-sluice-provider"), Some("anthropic"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "claude");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(v["usage"]["prompt_tokens"], 472);

    let seen = seen.lock().unwrap()[0].clone();
    assert_eq!(seen.target, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], "sk-ant-test");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    let sent = seen.json;
    assert_eq!(sent["model"], "claude-3-5-sonnet-20241022");
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 1024);
    assert_eq!(sent["tools"][0]["name"], "get_weather");
}

#[tokio::test]
async fn streams_are_translated_event_by_event() {
    let (addr, _seen) = fake_anthropic().await;
    let openai = FakeUpstream::start().await;
    let gw = gateway(addr, &openai).await;
    let body = json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Hi"}]});
    let mut s = post_stream(&gw.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    let (events, err) = s.collect_events().await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello!");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64()
        ),
        (Some(25), Some(15))
    );
    let m = sluice_testkit::client::get(&gw.url("/metrics"))
        .await
        .unwrap()
        .text();
    assert!(m.contains(r#"sluice_tokens_total{model="claude",provider="anthropic",endpoint="chat",direction="out"} 15"#), "{m}");
}

/// The prompt-usage comment a translated stream carries for `/v1/messages`' `message_start`
/// is sluice's own: a chat client's stream has none, and a Messages client's `message_start`
/// has the upstream's count from it.
#[tokio::test]
async fn the_prompt_usage_comment_stays_inside() {
    let (addr, _seen) = fake_anthropic().await;
    let openai = FakeUpstream::start().await;
    let gw = gateway(addr, &openai).await;
    let body = json!({"model": "claude", "stream": true,
        "messages": [{"role": "user", "content": "Hi"}]});
    let mut s = post_stream(&gw.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .unwrap();
    let raw = String::from_utf8(s.collect_body().await.unwrap().to_vec()).unwrap();
    assert!(raw.starts_with("data: "), "{raw}");
    assert!(!raw.contains("x-sluice-prompt-usage"), "{raw}");
    assert!(raw.contains("\"content\":\"Hello\""), "{raw}");

    let body = json!({"model": "claude", "stream": true, "max_tokens": 50,
        "messages": [{"role": "user", "content": "Hi"}]});
    let mut s = post_stream(&gw.url("/v1/messages"), body.to_string(), &[])
        .await
        .unwrap();
    let raw = String::from_utf8(s.collect_body().await.unwrap().to_vec()).unwrap();
    assert!(!raw.contains("x-sluice-prompt-usage"), "{raw}");
    let start: serde_json::Value = raw
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .unwrap();
    assert_eq!(start["type"], "message_start");
    assert_eq!(start["message"]["usage"]["input_tokens"], 25, "{start}");
}

#[tokio::test]
async fn overloaded_anthropic_falls_back() {
    let (addr, _seen) = fake_anthropic().await;
    let openai = FakeUpstream::start().await;
    openai.set_default(Behavior::new());
    let gw = gateway(addr, &openai).await;
    let body = json!({"model": "r", "messages": [{"role": "user", "content": "overload please"}]});
    let r = post_json(&gw.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sluice-model"), Some("gpt"));
    // Alone, a 529 is a 502 with Anthropic's message.
    let body =
        json!({"model": "claude", "messages": [{"role": "user", "content": "overload please"}]});
    let r = post_json(&gw.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 502);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Overloaded"));
}

#[tokio::test]
async fn embeddings_on_anthropic_are_refused_clearly() {
    let (addr, _seen) = fake_anthropic().await;
    let openai = FakeUpstream::start().await;
    let gw = gateway(addr, &openai).await;
    let r = post_json(
        &gw.url("/v1/embeddings"),
        r#"{"model":"claude","input":"x"}"#,
        &[],
    )
    .await
    .unwrap();
    // A provider without the endpoint is a 404 naming it (issue 16); a route falls back past it.
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "endpoint_not_supported");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not serve /v1/embeddings"));
}

// === Against sluice-testkit's fake anthropic shape, controlled per request by `x_fake` ===

#[tokio::test]
async fn fake_anthropic_honours_per_request_content() {
    common::native::content("anthropic").await;
}

#[tokio::test]
async fn fake_anthropic_cut_mid_stream_ends_in_stream_interrupted() {
    common::native::cut("anthropic").await;
}

#[tokio::test]
async fn fake_anthropic_tool_call_stream() {
    common::native::tool_stream("anthropic").await;
}

#[tokio::test]
async fn fake_anthropic_overloaded_falls_back() {
    common::native::fallback("anthropic", 529).await;
}
