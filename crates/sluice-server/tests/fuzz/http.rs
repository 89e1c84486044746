//! Request bodies from clients through the pipeline in process (`sluice_server::route`, as
//! the server calls it for every request): chat, completions, embeddings, Anthropic's
//! Messages, the Responses API, multipart uploads (transcriptions, files) and the admin
//! API's key specs. Whatever the body, the answer comes (no panic, no hang) and an error is
//! in the endpoint's own shape: OpenAI's `{"error": {"message", "type"}}`, Anthropic's
//! `{"type": "error", "error": {...}}` on `/v1/messages`; never a 500. The one upstream is a
//! closed port, so a body that is valid ends in a 502 (or the route's fallback).

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use sluice_core::config::Config;
use sluice_core::env::MapEnv;
use sluice_server::AppState;
use sluice_testkit::fuzz;
use std::sync::Arc;

const ITERS: usize = 2000;
const MASTER: &str = "sk-master-0123456789abcdef";
const BOUNDARY: &str = "sluiceFuzzBoundary";

/// A gateway with a model `m` on a closed port, a route `r` with a fallback, and a ledger.
fn gateway() -> Arc<AppState> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sluice-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "{MASTER}"
[storage]
data_dir = "{dir}"
[[providers]]
name = "fake"
type = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-upstream"
[[models]]
name = "m"
provider = "fake"
price = {{ input = 1.0, output = 2.0 }}
[[routes]]
name = "r"
targets = ["m"]
fallback_response = "busy, try later"
"#,
        dir = dir.display()
    );
    let config = Config::from_toml(&toml, &MapEnv::default()).unwrap();
    Arc::new(AppState::new(config, 1).unwrap())
}

/// Which error shape an endpoint answers in.
#[derive(Clone, Copy)]
pub enum Shape {
    OpenAi,
    Anthropic,
}

/// Sends every input of `target` to `path` with `content_type`, checking each answer.
fn drive(target: &str, path: &'static str, content_type: String, shape: Shape) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = rt.block_on(async { gateway() });
    fuzz::run(target, ITERS, move |b, _| {
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("content-type", content_type.as_str())
            .header("authorization", format!("Bearer {MASTER}"))
            .body(Full::new(Bytes::copy_from_slice(b)))
            .unwrap();
        let (status, body) = rt.block_on(async {
            let r = sluice_server::route(Arc::clone(&state), req).await.unwrap();
            let status = r.status();
            (status, r.into_body().collect().await.unwrap().to_bytes())
        });
        check(path, status, &body, shape);
    });
}

pub fn check(path: &str, status: StatusCode, body: &[u8], shape: Shape) {
    let text = || String::from_utf8_lossy(body).into_owned();
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{path}: {}",
        text()
    );
    if status.is_success() {
        return;
    }
    assert!(
        status.is_client_error() || [502, 503, 504].contains(&status.as_u16()),
        "{path}: {status}: {}",
        text()
    );
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{path}: {status}: not JSON ({e}): {}", text()));
    assert!(v["error"]["message"].is_string(), "{path}: {status}: {v}");
    assert!(v["error"]["type"].is_string(), "{path}: {status}: {v}");
    if let Shape::Anthropic = shape {
        assert_eq!(v["type"], "error", "{path}: {status}: {v}");
    }
}

fn json() -> String {
    "application/json".into()
}

#[test]
fn chat_bodies() {
    drive("chat", "/v1/chat/completions", json(), Shape::OpenAi);
}

#[test]
fn completions_bodies() {
    drive("completions", "/v1/completions", json(), Shape::OpenAi);
}

#[test]
fn embeddings_bodies() {
    drive("embeddings", "/v1/embeddings", json(), Shape::OpenAi);
}

#[test]
fn messages_bodies() {
    drive("messages", "/v1/messages", json(), Shape::Anthropic);
}

#[test]
fn responses_bodies() {
    drive("responses", "/v1/responses", json(), Shape::OpenAi);
}

#[test]
fn multipart_uploads() {
    let form = || format!("multipart/form-data; boundary={BOUNDARY}");
    drive(
        "multipart",
        "/v1/audio/transcriptions",
        form(),
        Shape::OpenAi,
    );
    drive("multipart", "/v1/files", form(), Shape::OpenAi);
}

#[test]
fn admin_key_specs() {
    drive("admin-keys", "/admin/keys", json(), Shape::OpenAi);
}
