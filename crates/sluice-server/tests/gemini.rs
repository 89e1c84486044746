//! `type = "gemini"` over real loopback HTTP, against a fake Gemini API that serves the
//! documented fixtures of `sluice-testkit/fixtures/gemini/`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use serde_json::json;
use sluice_testkit::client::{post_json, post_stream};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const TEXT: &str = include_str!("../../sluice-testkit/fixtures/gemini/response_text.json");
const BLOCKED: &str = include_str!("../../sluice-testkit/fixtures/gemini/response_blocked.json");
const STREAM: &str = include_str!("../../sluice-testkit/fixtures/gemini/stream.sse");
const EMBED: &str = include_str!("../../sluice-testkit/fixtures/gemini/embed_batch.json");

type Seen = Arc<Mutex<Vec<(String, http::HeaderMap, serde_json::Value)>>>;

async fn fake_gemini() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let record = Arc::clone(&record);
                    async move {
                        let target = req.uri().path_and_query().unwrap().to_string();
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let blocked = json.to_string().contains("forbidden topic");
                        record.lock().unwrap().push((target.clone(), headers, json));
                        let (ctype, out) = if target.contains(":streamGenerateContent") {
                            ("text/event-stream", STREAM)
                        } else if target.contains(":batchEmbedContents") {
                            ("application/json", EMBED)
                        } else if blocked {
                            ("application/json", BLOCKED)
                        } else {
                            ("application/json", TEXT)
                        };
                        let mut resp =
                            http::Response::new(Full::new(Bytes::from_static(out.as_bytes())));
                        resp.headers_mut()
                            .insert("content-type", http::HeaderValue::from_static(ctype));
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
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
        dir = std::env::temp_dir().join("sluice-test-data").display(),
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
    let (target, headers, sent) = seen.lock().unwrap()[0].clone();
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
        seen.lock().unwrap()[0].0,
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
    let (target, _, sent) = seen.lock().unwrap()[0].clone();
    assert_eq!(
        target,
        "/v1beta/models/text-embedding-004:batchEmbedContents"
    );
    assert_eq!(sent["requests"][0]["model"], "models/text-embedding-004");
}
