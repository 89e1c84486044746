//! Starts a real sluice server on an ephemeral loopback port, in front of a fake upstream.

#![allow(dead_code)]

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
        dir = std::env::temp_dir().join("sluice-test-data").display()
    )
}

pub async fn start_with(toml: &str) -> Gateway {
    let config = Config::from_toml(toml, &MapEnv::default()).expect("valid test config");
    let server = Server::bind(config).await.expect("bind");
    let addr = server.local_addr().expect("addr");
    let state = Arc::clone(server.state());
    let (tx, rx) = oneshot::channel::<()>();
    let join = tokio::spawn(server.run(async {
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
