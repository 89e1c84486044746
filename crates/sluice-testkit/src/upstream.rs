//! The fake upstream server: OpenAI's shape here, the native shapes of other providers in
//! [`crate::native`].

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::behavior::Behavior;
use crate::body::{CancelGuard, Counters, FakeBody, OpenGuard, SseStream, Ticker};
use crate::native::{self, Api, Shape};
use crate::responses::{self, ChatRequest, ChunkFactory};

/// Delay between events of an infinite stream when `chunk_delay_ms` is 0.
const INFINITE_STREAM_MIN_DELAY: Duration = Duration::from_millis(10);

/// One request received by the fake upstream, recorded before its behavior
/// was applied.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Request method.
    pub method: Method,
    /// Request path, without the query string.
    pub path: String,
    /// Query string, if any (without the `?`).
    pub query: Option<String>,
    /// HTTP version the request came in (HTTP/1.1, or HTTP/2 over prior knowledge).
    pub version: http::Version,
    /// Request headers, as received.
    pub headers: HeaderMap,
    /// Complete request body.
    pub body: Bytes,
}

impl RecordedRequest {
    /// The value of header `name`, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// State shared by the server tasks and the [`FakeUpstream`] handle.
#[derive(Debug)]
struct Shared {
    counters: Arc<Counters>,
    requests: Mutex<Vec<RecordedRequest>>,
    script: Mutex<VecDeque<Behavior>>,
    default: Mutex<Behavior>,
    chaos: Mutex<Option<Chaos>>,
    recording: AtomicBool,
    next_id: AtomicU64,
    batch_api: crate::openai_batches::State,
}

/// Locks a mutex, ignoring poisoning (the data stays usable for a fake).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fake upstream serving HTTP/1.1 on a loopback port.
///
/// Endpoints: `POST /v1/chat/completions` (plain and SSE streaming),
/// `POST /v1/embeddings` and `GET /v1/models`, and the native shapes of
/// Anthropic, Gemini and Ollama (see [`crate::native`]); anything else is a
/// 404 with an OpenAI-shaped error. How each request is answered is controlled by a
/// [`Behavior`]; every request is recorded (see [`requests`](Self::requests)).
///
/// The server runs on tasks of the current tokio runtime and stops when the
/// handle is dropped or [`shutdown`](Self::shutdown) is called; open
/// connections are closed then.
#[derive(Debug)]
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeUpstream {
    /// Starts a fake upstream on `127.0.0.1` with a free port.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound (a broken test environment).
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("binding the fake upstream to 127.0.0.1:0")
    }

    /// Starts a fake upstream bound to exactly `addr`.
    pub async fn start_on(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            counters: Arc::new(Counters::default()),
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Behavior::default()),
            chaos: Mutex::new(None),
            recording: AtomicBool::new(true),
            next_id: AtomicU64::new(1),
            batch_api: crate::openai_batches::State::default(),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The URL of `path` (which should start with `/`) on this server, e.g.
    /// `url("/v1/models")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Queues `behavior` for the next request that has no `x_fake` field.
    /// Queued behaviors are consumed one per request, in order.
    pub fn push(&self, behavior: Behavior) {
        lock(&self.shared.script).push_back(behavior);
    }

    /// Drops every queued behavior.
    pub fn clear_script(&self) {
        lock(&self.shared.script).clear();
    }

    /// Sets the behavior used when a request has no `x_fake` field and the
    /// script is empty.
    pub fn set_default(&self, behavior: Behavior) {
        *lock(&self.shared.default) = behavior;
    }

    /// Makes a share `rate` (0 to 1) of the requests that have no `x_fake` and no script
    /// fail, each with one of `failures` in turn; the others get the default. The draw is a
    /// fixed pseudo-random sequence, so runs repeat.
    pub fn set_chaos(&self, rate: f64, failures: Vec<Behavior>) {
        *lock(&self.shared.chaos) = (!failures.is_empty()).then_some(Chaos {
            rate: rate.clamp(0.0, 1.0),
            failures,
            state: 0x853c_49e6_748f_ea9b,
            next: 0,
        });
    }

    /// Sets how the fake's batches (`POST /v1/batches`) made from now on end (default:
    /// completed at the second poll).
    pub fn set_batch_outcome(&self, outcome: crate::BatchOutcome) {
        self.shared.batch_api.set_outcome(outcome);
    }

    /// Polls (`GET /v1/batches/{id}`) of every batch so far.
    pub fn batch_polls(&self) -> u64 {
        self.shared.batch_api.polls()
    }

    /// Turns recording of requests on or off (on by default). Counters keep
    /// counting either way; turn recording off for long benchmark runs.
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::SeqCst);
    }

    /// Every request received so far (while recording was on), in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The most recent recorded request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.requests).last().cloned()
    }

    /// Removes and returns the recorded requests.
    pub fn take_requests(&self) -> Vec<RecordedRequest> {
        std::mem::take(&mut *lock(&self.shared.requests))
    }

    /// Number of requests received so far (recorded or not).
    pub fn request_count(&self) -> usize {
        self.shared.counters.requests.load(Ordering::SeqCst)
    }

    /// Number of requests whose head arrived, counted before their body is read: a
    /// request still sending its body counts here and not yet in
    /// [`request_count`](Self::request_count).
    pub fn started_count(&self) -> usize {
        self.shared.counters.started.load(Ordering::SeqCst)
    }

    /// Number of requests whose body broke off before its end (the client aborted it
    /// mid-body); they get no response and are not in [`request_count`](Self::request_count).
    pub fn broken_body_count(&self) -> usize {
        self.shared.counters.broken_bodies.load(Ordering::SeqCst)
    }

    /// Waits until [`started_count`](Self::started_count) reaches `n`; `false` if
    /// `timeout` passed first.
    pub async fn wait_started(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.started_count() >= n).await
    }

    /// Waits until [`broken_body_count`](Self::broken_body_count) reaches `n`; `false` if
    /// `timeout` passed first.
    pub async fn wait_broken_bodies(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.broken_body_count() >= n)
            .await
    }

    /// Number of responses abandoned before they were completely sent: the
    /// client went away during `delay_ms`, while `hang`ing, or in the middle
    /// of a stream.
    pub fn cancelled_count(&self) -> usize {
        self.shared.counters.cancelled.load(Ordering::SeqCst)
    }

    /// Number of TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.shared.counters.connections.load(Ordering::SeqCst)
    }

    /// The most TCP connections that were open at once so far.
    pub fn peak_open_connections(&self) -> usize {
        self.shared.counters.peak_open.load(Ordering::SeqCst)
    }

    /// Waits until [`cancelled_count`](Self::cancelled_count) reaches `n`;
    /// `false` if `timeout` passed first.
    pub async fn wait_cancelled(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.cancelled_count() >= n)
            .await
    }

    /// Waits until [`request_count`](Self::request_count) reaches `n`;
    /// `false` if `timeout` passed first.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.request_count() >= n).await
    }

    async fn wait_until(&self, timeout: Duration, cond: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.counters.changed.notified();
            tokio::pin!(notified);
            // Register before checking, so a change in between is not missed.
            notified.as_mut().enable();
            if cond() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return cond();
            }
        }
    }

    /// Stops the server and closes its connections.
    pub async fn shutdown(mut self) {
        self.task.abort();
        // The task ends as cancelled; that is the expected outcome.
        let _ = (&mut self.task).await;
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections until aborted; aborting drops the `JoinSet`, which
/// aborts every connection task.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(_) => {
                // Typically EMFILE; back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        shared.counters.bump(&shared.counters.connections);
        // Best effort: Nagle only adds latency to small SSE events.
        let _ = stream.set_nodelay(true);
        conns.spawn(serve_connection(stream, Arc::clone(&shared)));
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _open = OpenGuard::new(Arc::clone(&shared.counters));
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ConnIo {
        inner: stream,
        reset: Arc::clone(&reset),
    });
    let service = service_fn(move |req| handle(Arc::clone(&shared), Arc::clone(&reset), req));
    // HTTP/1.1, or HTTP/2 when the client starts with the h2c preface.
    // Errors here are expected (resets, cuts, clients going away).
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

/// A TCP stream that is closed with RST (zero linger) when `reset` is set.
struct ConnIo {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            // Best effort: without it the close is a plain FIN, still no
            // response.
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Service error that makes hyper drop the connection without a response.
#[derive(Debug)]
struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fake upstream dropped the connection")
    }
}

impl StdError for DropConnection {}

async fn handle(
    shared: Arc<Shared>,
    reset: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> Result<Response<FakeBody>, DropConnection> {
    let (parts, body) = req.into_parts();
    shared.counters.bump(&shared.counters.started);
    // A body that cannot be read means the connection is already broken.
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            shared.counters.bump(&shared.counters.broken_bodies);
            return Err(DropConnection);
        }
    };

    if shared.recording.load(Ordering::SeqCst) {
        lock(&shared.requests).push(RecordedRequest {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            version: parts.version,
            headers: parts.headers.clone(),
            body: body.clone(),
        });
    }
    shared.counters.bump(&shared.counters.requests);
    let mut guard = CancelGuard::new(Arc::clone(&shared.counters));

    let parsed: Option<Result<Value, serde_json::Error>> =
        (!body.is_empty()).then(|| serde_json::from_slice(&body));
    let behavior = match choose_behavior(&shared, parsed.as_ref()) {
        Ok(b) => b,
        Err(msg) => {
            guard.disarm();
            return Ok(error_response(StatusCode::BAD_REQUEST, &msg));
        }
    };
    let (status_override, extra_headers) = match validate(&behavior) {
        Ok(v) => v,
        Err(msg) => {
            guard.disarm();
            return Ok(error_response(StatusCode::BAD_REQUEST, &msg));
        }
    };

    if behavior.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behavior.delay_ms)).await;
    }
    if behavior.hang {
        // Held until hyper drops this future (the client went away), which
        // drops the armed guard and counts a cancellation.
        std::future::pending::<()>().await;
    }
    if behavior.reset {
        guard.disarm();
        reset.store(true, Ordering::SeqCst);
        return Err(DropConnection);
    }

    let mut response = match status_override {
        Some(status) => {
            guard.disarm();
            let message = format!("fake upstream error {}", status.as_u16());
            let body = match (&behavior.error_body, Api::of(parts.uri.path())) {
                (Some(b), _) => Bytes::from(b.clone()),
                (None, Some(api)) => api.error_body(status.as_u16(), &message),
                (None, None) => {
                    responses::error_json(&message, responses::error_type_for(status.as_u16()))
                }
            };
            json_response(status, body)
        }
        None => {
            let content_type = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if crate::openai_batches::is_batch_api(parts.uri.path()) {
                guard.disarm();
                let a =
                    shared
                        .batch_api
                        .route(&parts.method, parts.uri.path(), content_type, &body);
                let mut resp = json_response(a.status, a.body);
                if !a.json {
                    resp.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                }
                resp
            } else if parts.method == Method::POST && crate::media::is_media(parts.uri.path()) {
                crate::media::route(parts.uri.path(), content_type, &body, &behavior, guard)
            } else {
                route(
                    &shared,
                    &parts.method,
                    parts.uri.path(),
                    parsed,
                    &behavior,
                    guard,
                )
            }
        }
    };
    response.headers_mut().extend(extra_headers);
    Ok(response)
}

/// Picks the behavior: `x_fake` in the body, else the script, else the
/// default.
fn choose_behavior(
    shared: &Shared,
    parsed: Option<&Result<Value, serde_json::Error>>,
) -> Result<Behavior, String> {
    if let Some(Ok(Value::Object(obj))) = parsed {
        if let Some(x) = obj.get("x_fake").filter(|x| !x.is_null()) {
            return Behavior::deserialize(x).map_err(|e| format!("invalid `x_fake` behavior: {e}"));
        }
    }
    if let Some(b) = lock(&shared.script).pop_front() {
        return Ok(b);
    }
    if let Some(chaos) = lock(&shared.chaos).as_mut() {
        if let Some(b) = chaos.draw() {
            return Ok(b);
        }
    }
    Ok(lock(&shared.default).clone())
}

/// Random failures, see [`FakeUpstream::set_chaos`].
#[derive(Debug)]
struct Chaos {
    rate: f64,
    failures: Vec<Behavior>,
    state: u64,
    next: usize,
}

impl Chaos {
    fn draw(&mut self) -> Option<Behavior> {
        // splitmix64
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        if unit >= self.rate {
            return None;
        }
        let b = self.failures[self.next % self.failures.len()].clone();
        self.next += 1;
        Some(b)
    }
}

/// Checks the status and headers of a behavior up front, so that a bad one
/// gives a 400 instead of a half-built response.
fn validate(b: &Behavior) -> Result<(Option<StatusCode>, HeaderMap), String> {
    let status = b
        .status
        .map(|s| {
            StatusCode::from_u16(s)
                .ok()
                .filter(|c| !c.is_informational())
                .ok_or_else(|| format!("invalid `x_fake` status {s}"))
        })
        .transpose()?;
    if let Some(t) = &b.tool_call {
        if !matches!(
            serde_json::from_str::<Value>(&t.arguments),
            Ok(Value::Object(_))
        ) {
            return Err(format!(
                "invalid `x_fake` tool_call arguments {:?}: not a JSON object",
                t.arguments
            ));
        }
    }
    let mut headers = HeaderMap::new();
    if let Some(ra) = &b.retry_after {
        let v = HeaderValue::from_str(ra)
            .map_err(|_| format!("invalid `x_fake` retry_after {ra:?}"))?;
        headers.insert(RETRY_AFTER, v);
    }
    for (name, value) in &b.headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid `x_fake` header name {name:?}"))?;
        let v = HeaderValue::from_str(value)
            .map_err(|_| format!("invalid `x_fake` header value {value:?}"))?;
        headers.append(n, v);
    }
    Ok((status, headers))
}

fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    parsed: Option<Result<Value, serde_json::Error>>,
    behavior: &Behavior,
    mut guard: CancelGuard,
) -> Response<FakeBody> {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    if let (&Method::POST, Some(events)) = (method, &behavior.replay) {
        let body = parsed.and_then(Result::ok);
        let mut resp = crate::replay::response(path, body.as_ref(), events, behavior, guard);
        add_request_id(&mut resp, id);
        return resp;
    }
    if method == Method::POST {
        if let Some(api) = Api::of(path) {
            return native_response(&api, id, parsed, behavior, guard);
        }
    }
    match (method, path) {
        (&Method::POST, "/v1/chat/completions") => {
            let req = match json_body(parsed).and_then(|v| ChatRequest::from_json(&v)) {
                Ok(r) => r,
                Err(msg) => {
                    guard.disarm();
                    return error_response(StatusCode::BAD_REQUEST, &msg);
                }
            };
            let mut resp = if req.stream {
                chat_stream(id, &req, behavior, guard)
            } else {
                guard.disarm();
                let content = behavior
                    .content
                    .as_deref()
                    .unwrap_or(responses::DEFAULT_CONTENT);
                let body = responses::chat_completion(
                    &format!("chatcmpl-fake-{id}"),
                    responses::now_unix(),
                    &req.model,
                    content,
                    behavior.tool_call.as_ref(),
                    behavior.usage.as_ref(),
                );
                json_response(StatusCode::OK, body)
            };
            add_request_id(&mut resp, id);
            resp
        }
        (&Method::POST, "/v1/completions") => {
            let mut resp = crate::completions::answer(id, parsed, behavior, guard);
            add_request_id(&mut resp, id);
            resp
        }
        (&Method::POST, "/v1/embeddings") => {
            guard.disarm();
            let out = json_body(parsed).and_then(|v| responses::embeddings(&v));
            let mut resp = match out {
                Ok(body) => json_response(StatusCode::OK, body),
                Err(msg) => error_response(StatusCode::BAD_REQUEST, &msg),
            };
            add_request_id(&mut resp, id);
            resp
        }
        (&Method::GET, "/v1/models") => {
            guard.disarm();
            json_response(StatusCode::OK, responses::models())
        }
        _ => {
            guard.disarm();
            error_response(
                StatusCode::NOT_FOUND,
                &format!("Unknown request URL: {method} {path}"),
            )
        }
    }
}

fn json_body(parsed: Option<Result<Value, serde_json::Error>>) -> Result<Value, String> {
    match parsed {
        None => Err("request body is empty".to_owned()),
        Some(Err(e)) => Err(format!("request body is not valid JSON: {e}")),
        Some(Ok(v)) => Ok(v),
    }
}

fn chat_stream(
    id: u64,
    req: &ChatRequest,
    behavior: &Behavior,
    guard: CancelGuard,
) -> Response<FakeBody> {
    let factory = ChunkFactory {
        id: format!("chatcmpl-fake-{id}"),
        created: responses::now_unix(),
        model: req.model.clone(),
        include_usage: req.include_usage,
    };
    let pieces: Vec<String> = match &behavior.pieces {
        Some(p) => p.clone(),
        None => responses::DEFAULT_PIECES
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    };
    let mut queue = VecDeque::with_capacity(pieces.len() + 4);
    queue.push_back(factory.role());
    let mut delay = Duration::from_millis(behavior.chunk_delay_ms);
    let ticker = if let Some(tool) = &behavior.tool_call {
        queue.push_back(factory.tool_call_start(&tool.name));
        let mut mid = tool.arguments.len() / 2;
        while !tool.arguments.is_char_boundary(mid) {
            mid -= 1;
        }
        let (a, b) = tool.arguments.split_at(mid);
        queue.push_back(factory.tool_call_arguments(a));
        queue.push_back(factory.tool_call_arguments(b));
        queue.push_back(factory.finish_with("tool_calls"));
        if req.include_usage {
            queue.push_back(factory.usage(responses::COMPLETION_TOKENS, behavior.usage.as_ref()));
        }
        queue.push_back(responses::sse_done());
        None
    } else if behavior.infinite_stream {
        if delay.is_zero() {
            delay = INFINITE_STREAM_MIN_DELAY;
        }
        Some(Ticker {
            shape: Shape::OpenAi(factory),
            pieces,
            next: 0,
        })
    } else {
        for p in &pieces {
            queue.push_back(factory.content(p));
        }
        queue.push_back(factory.finish());
        if req.include_usage {
            queue.push_back(factory.usage(pieces.len() as u64, behavior.usage.as_ref()));
        }
        queue.push_back(responses::sse_done());
        None
    };
    let stream = SseStream::new(queue, ticker, delay, behavior.cut_after_chunks, guard);
    let mut resp = Response::new(FakeBody::sse(stream));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn add_request_id(resp: &mut Response<FakeBody>, id: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("req_fake_{id}")) {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
}

/// Answers a native-shape request (Anthropic, Gemini, Ollama) under `behavior`.
fn native_response(
    api: &Api,
    id: u64,
    parsed: Option<Result<Value, serde_json::Error>>,
    behavior: &Behavior,
    mut guard: CancelGuard,
) -> Response<FakeBody> {
    let body = match parsed {
        Some(Err(e)) => {
            guard.disarm();
            return json_response(
                StatusCode::BAD_REQUEST,
                api.error_body(400, &format!("request body is not valid JSON: {e}")),
            );
        }
        Some(Ok(v)) => Some(v),
        None => None,
    };
    let mut resp = match native::answer(api, id, body.as_ref(), behavior) {
        native::Answer::Whole(body) => {
            guard.disarm();
            json_response(StatusCode::OK, body)
        }
        native::Answer::Stream {
            content_type,
            events,
            endless,
        } => {
            let (ticker, delay) = ticker_and_delay(endless, behavior);
            let stream = SseStream::new(
                events.into(),
                ticker,
                delay,
                behavior.cut_after_chunks,
                guard,
            );
            let mut resp = Response::new(FakeBody::sse(stream));
            let h = resp.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
    };
    add_request_id(&mut resp, id);
    resp
}

/// The endless content generator (when `infinite_stream` gave a shape) and the delay
/// between events.
fn ticker_and_delay(endless: Option<Shape>, behavior: &Behavior) -> (Option<Ticker>, Duration) {
    let mut delay = Duration::from_millis(behavior.chunk_delay_ms);
    let ticker = endless.map(|shape| {
        if delay.is_zero() {
            delay = INFINITE_STREAM_MIN_DELAY;
        }
        Ticker {
            shape,
            pieces: behavior.pieces.clone().unwrap_or_else(|| {
                responses::DEFAULT_PIECES
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            }),
            next: 0,
        }
    });
    (ticker, delay)
}

fn json_response(status: StatusCode, body: Bytes) -> Response<FakeBody> {
    let mut resp = Response::new(FakeBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error_response(status: StatusCode, message: &str) -> Response<FakeBody> {
    json_response(
        status,
        responses::error_json(message, responses::error_type_for(status.as_u16())),
    )
}
