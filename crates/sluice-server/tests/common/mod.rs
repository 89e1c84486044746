//! Starts a real sluice server on an ephemeral loopback port, in front of a fake upstream.

#![allow(dead_code)]

pub mod script;
pub mod tangled;

use sluice_core::config::Config;
use sluice_core::env::MapEnv;
use sluice_server::Server;
use sluice_testkit::FakeUpstream;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    pub state: Arc<sluice_server::AppState>,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends the shutdown signal and returns the server task.
    pub fn begin_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.join.take().expect("server still running")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A config with provider `fake` at `upstream` (key `sk-upstream`), models `m` (sent
/// upstream as `upstream-m`) and `emb`, plus `extra` TOML appended.
pub fn config_for(upstream: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{dir}"
[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
api_key = "sk-upstream"
{extra}
[[models]]
name = "m"
provider = "fake"
upstream = "upstream-m"
price = {{ input = 1.0, output = 2.0 }}
[[models]]
name = "emb"
provider = "fake"
"#,
        dir = std::env::temp_dir()
            .join("sluice-test-data")
            .join(
                env!("CARGO_MANIFEST_DIR")
                    .trim_start_matches('/')
                    .replace('/', "_")
            )
            .display()
    )
}

pub async fn start_with(toml: &str) -> Gateway {
    start_with_workers(toml, 1).await
}

/// A gateway started from `toml` with `workers` worker threads (`sluice serve --workers`).
pub async fn start_with_workers(toml: &str, workers: usize) -> Gateway {
    let config = Config::from_toml(toml, &MapEnv::default()).expect("valid test config");
    run(Server::bind_with_workers(config, workers)
        .await
        .expect("bind"))
}

/// A gateway started from `toml` whose config reload (`POST /admin/config/reload`) reads
/// `next`, as `sluice serve` reads its file again.
pub async fn start_reloadable(toml: &str, next: String) -> Gateway {
    let config = Config::from_toml(toml, &MapEnv::default()).expect("valid test config");
    let server = Server::bind(config).await.expect("bind");
    let live = server.live();
    let hook = move || {
        let config = Config::from_toml(&next, &MapEnv::default()).map_err(|e| e.to_string())?;
        live.reload(config).map_err(|e| e.to_string())
    };
    let hook = sluice_server::state::reload::ReloadHook(Box::new(hook));
    assert!(server.state().reload_hook.set(hook).is_ok(), "set once");
    run(server)
}

fn run(server: Server) -> Gateway {
    let addr = server.local_addr().expect("addr");
    let state = server.state();
    let (tx, rx) = oneshot::channel::<()>();
    let join = tokio::spawn(server.run_workers(async {
        let _ = rx.await;
    }));
    Gateway {
        addr,
        state,
        stop: Some(tx),
        join: Some(join),
    }
}

/// A fake upstream and a gateway in front of it; `provider_extra` goes into the provider table.
pub async fn setup(provider_extra: &str) -> (FakeUpstream, Gateway) {
    let fake = FakeUpstream::start().await;
    let gw = start_with(&config_for(&fake.base_url(), provider_extra)).await;
    (fake, gw)
}

pub const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
pub const CHAT_STREAM: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;

/// A chat body with an `x_fake` behavior for the fake upstream.
pub fn chat_with(behavior: serde_json::Value, stream: bool) -> String {
    serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
        "x_fake": behavior,
    })
    .to_string()
}

/// One request a fake provider received.
#[derive(Clone)]
pub struct Seen {
    /// Path and query.
    pub target: String,
    /// Request headers.
    pub headers: http::HeaderMap,
    /// The body, as JSON.
    pub json: serde_json::Value,
}

/// What a fake provider received, in order.
pub type Recorded = Arc<std::sync::Mutex<Vec<Seen>>>;

/// A response body of a fake provider.
pub type FakeBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

/// A whole response body.
pub fn full(text: &'static str) -> FakeBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes::Bytes::from_static(text.as_bytes())).boxed()
}

/// A fake provider API on loopback (for wire formats other than OpenAI's): records every
/// request, and answers each with `answer(request) = (status, content type, body)`.
pub async fn fake_provider<F>(answer: F) -> (SocketAddr, Recorded)
where
    F: Fn(&Seen) -> (u16, &'static str, FakeBody) + Send + Sync + 'static,
{
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Recorded = Arc::default();
    let record = Arc::clone(&seen);
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let record = Arc::clone(&record);
                        let answer = Arc::clone(&answer);
                        async move {
                            let target = req.uri().path_and_query().unwrap().to_string();
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let json = serde_json::from_slice(&body).unwrap_or_default();
                            let seen = Seen {
                                target,
                                headers,
                                json,
                            };
                            let (status, ctype, body) = answer(&seen);
                            record.lock().unwrap().push(seen);
                            let mut resp = http::Response::new(body);
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            resp.headers_mut()
                                .insert("content-type", http::HeaderValue::from_static(ctype));
                            Ok::<_, std::convert::Infallible>(resp)
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

/// Checks, through sluice, that a native provider (`kind`: `anthropic`, `gemini` or
/// `ollama`) served by `sluice-testkit`'s fake honours the client's per-request `x_fake`:
/// content whole and streamed, a mid-stream cut, a streamed tool call, and a route falling
/// back from the native provider to an OpenAI one.
pub mod native {
    use super::{start_with, Gateway};
    use serde_json::{json, Value};
    use sluice_testkit::client::{post_json, post_stream};
    use sluice_testkit::{Behavior, FakeUpstream};

    /// A gateway with provider `native` of type `kind` at `fake` (model `native`, sent
    /// upstream as `native-upstream`), provider `openai` at `openai` (model `gpt`), and
    /// route `r` = `[native, gpt]`.
    pub async fn gateway(kind: &str, fake: &FakeUpstream, openai: &FakeUpstream) -> Gateway {
        start_with(&format!(
            r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{dir}"
[[providers]]
name = "native"
type = "{kind}"
base_url = "{native}"
api_key = "test-key"
[[providers]]
name = "openai"
type = "openai"
base_url = "{openai}"
[[models]]
name = "native"
provider = "native"
upstream = "native-upstream"
[[models]]
name = "gpt"
provider = "openai"
[[routes]]
name = "r"
targets = ["native", "gpt"]
"#,
            dir = std::env::temp_dir()
                .join("sluice-test-data")
                .join(
                    env!("CARGO_MANIFEST_DIR")
                        .trim_start_matches('/')
                        .replace('/', "_")
                )
                .display(),
            native = fake.url(""),
            openai = openai.base_url(),
        ))
        .await
    }

    async fn setup(kind: &str) -> (FakeUpstream, FakeUpstream, Gateway) {
        let fake = FakeUpstream::start().await;
        let openai = FakeUpstream::start().await;
        let gw = gateway(kind, &fake, &openai).await;
        (fake, openai, gw)
    }

    fn body(model: &str, stream: bool, behavior: Behavior) -> String {
        json!({
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
            "stream_options": {"include_usage": stream},
            "x_fake": behavior.to_json(),
        })
        .to_string()
    }

    /// The events of a streamed answer, and the chunks among them (all but `[DONE]`).
    async fn stream(gw: &Gateway, body: String) -> (Vec<String>, Vec<Value>) {
        let mut s = post_stream(&gw.url("/v1/chat/completions"), body, &[])
            .await
            .expect("stream opens");
        assert_eq!(s.status, 200);
        let (events, err) = s.collect_events().await;
        assert!(err.is_none(), "the client's stream ends cleanly: {err:?}");
        let chunks = events
            .iter()
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).expect("a JSON event"))
            .collect();
        (events, chunks)
    }

    fn text(chunks: &[Value]) -> String {
        chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect()
    }

    /// Per-request content, whole and streamed; `x_fake` reached the fake through the
    /// translation.
    pub async fn content(kind: &str) {
        let (fake, _openai, gw) = setup(kind).await;
        let b = Behavior::new().with_content("Bonjour from the native fake.");
        let r = post_json(
            &gw.url("/v1/chat/completions"),
            body("native", false, b),
            &[],
        )
        .await
        .expect("answer");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-sluice-provider"), Some("native"));
        let v = r.json();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "Bonjour from the native fake."
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        let sent = fake.last_request().expect("the fake got the request");
        assert!(sent.json().is_some_and(|j| j["x_fake"].is_object()));

        let b = Behavior::new().with_pieces(["Un", ", deux", ", trois."]);
        let (events, chunks) = stream(&gw, body("native", true, b)).await;
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(text(&chunks), "Un, deux, trois.");
        assert!(chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"));
        let usage = &chunks.last().expect("a usage chunk")["usage"];
        assert_eq!(usage["completion_tokens"], 3, "{usage}");
    }

    /// A stream cut by the upstream ends in sluice's `stream_interrupted` error event, and
    /// no `[DONE]`.
    pub async fn cut(kind: &str) {
        let (_fake, _openai, gw) = setup(kind).await;
        let pieces = [
            "one", " two", " three", " four", " five", " six", " seven", " eight",
        ];
        let b = Behavior::new()
            .with_pieces(pieces)
            .with_chunk_delay_ms(5)
            .with_cut_after_chunks(5);
        let (events, chunks) = stream(&gw, body("native", true, b)).await;
        assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
        let last = chunks.last().expect("an error event");
        assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
        let partial = text(&chunks);
        assert!(
            !partial.is_empty() && pieces.concat().starts_with(&partial),
            "the pieces before the cut came through: {partial:?}"
        );
    }

    /// A streamed tool call comes out as OpenAI tool-call deltas.
    pub async fn tool_stream(kind: &str) {
        let (_fake, _openai, gw) = setup(kind).await;
        let b = Behavior::new().with_tool_call("get_weather", r#"{"city": "Paris", "days": 2}"#);
        let (events, chunks) = stream(&gw, body("native", true, b)).await;
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
            .flatten()
            .collect();
        assert!(!calls.is_empty(), "{events:?}");
        assert!(calls.iter().all(|c| c["index"] == 0));
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert!(calls[0]["id"].is_string());
        let arguments: String = calls
            .iter()
            .filter_map(|c| c["function"]["arguments"].as_str())
            .collect();
        let arguments: Value = serde_json::from_str(&arguments).expect("whole JSON arguments");
        assert_eq!(arguments, json!({"city": "Paris", "days": 2}));
        let finish = chunks
            .iter()
            .find_map(|c| c["choices"][0]["finish_reason"].as_str());
        assert_eq!(finish, Some("tool_calls"));
    }

    /// A route falls back from the failing native provider (`status`, with the provider's
    /// own error shape) to the OpenAI one.
    pub async fn fallback(kind: &str, status: u16) {
        let (fake, openai, gw) = setup(kind).await;
        // A body's `x_fake` would reach both fakes: here each is told by its default.
        fake.set_default(Behavior::new().with_status(status));
        openai.set_default(Behavior::new().with_content("from the fallback"));
        let plain = |model: &str| {
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
        };
        let r = post_json(&gw.url("/v1/chat/completions"), plain("r"), &[])
            .await
            .expect("answer");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-sluice-model"), Some("gpt"));
        assert_eq!(
            r.json()["choices"][0]["message"]["content"],
            "from the fallback"
        );
        assert!(
            fake.request_count() >= 1,
            "the native provider was tried first"
        );
        // Alone, the native provider's failure is a 502 (or the status it maps to).
        let r = post_json(&gw.url("/v1/chat/completions"), plain("native"), &[])
            .await
            .expect("answer");
        assert!(r.status >= 500, "{} {}", r.status, r.text());
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("fake upstream error {status}"))),
            "the provider's own error message is passed on: {}",
            r.text()
        );
    }
}
