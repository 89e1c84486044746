//! Models sluice runs itself: a `type = "local"` provider's models are GGUF files served in
//! process by `sluice-local`, behind the model pool (memory budget, lazy single-flight loads,
//! LRU eviction, keep-alive). A request for one acquires a lease on the loaded model (loading
//! it first if need be), submits the chat to the model's bounded queue, and answers with an
//! OpenAI `chat.completion`, or streams `chat.completion.chunk` events as tokens come.
//!
//! When the model cannot take the request (its queue is full, or the memory it needs is held
//! by models in use, or it can never fit the budget) the answer is 503 `model_overloaded` with
//! `Retry-After`, which is retryable: a route falls back to its next target.

use crate::body::ResponseBody;
use crate::proxy::UsageSeen;
use crate::state::AppState;
use crate::tab::{End, Tab};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};
use serde_json::json;
use sluice_core::config::Config;
use sluice_core::{Error, ErrorKind};
use sluice_local::pool::{
    KeepAlive, LocalLoader, LocalModel, ModelKind, ModelSpec, Pool, PoolConfig, PoolErrorKind,
};
use sluice_local::{
    BatchOptions, ChatMessage, ChatModel, ChatRequest, Engine, GenerationEvent, LoadOptions,
};
use sluice_types::Usage;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The local runtime of a gateway: one pool for every local model.
#[derive(Debug)]
pub struct LocalRuntime {
    /// The models, by their upstream name.
    pub pool: Pool<LocalLoader>,
}

fn config_error(message: String) -> Error {
    ErrorKind::Internal { message }.into()
}

/// Local models found on disk rather than configured: `[local] models_dir`, and Ollama's
/// store. Names already configured are left to the config; unsupported architectures are
/// passed over (and logged).
pub fn discover(config: &Config) -> Vec<sluice_local::discovery::DiscoveredModel> {
    use sluice_local::discovery;
    let configured: std::collections::HashSet<&str> =
        config.models.iter().map(|m| m.name.as_str()).collect();
    let mut found = Vec::new();
    let dir = config
        .local
        .models_dir
        .clone()
        .unwrap_or_else(|| config.storage.data_dir.join("models"));
    if dir.is_dir() {
        match discovery::scan_models_dir(&dir) {
            Ok(d) => found.push(d),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot scan the models directory")
            }
        }
    }
    if config.local.ollama {
        match discovery::ollama_models(config.local.ollama_dir.as_deref()) {
            Ok(d) => found.push(d),
            Err(e) => tracing::debug!(error = %e, "no Ollama models"),
        }
    }
    let mut models = Vec::new();
    let mut names = std::collections::HashSet::new();
    for d in found {
        for s in &d.skipped {
            tracing::debug!(path = %s.path.display(), reason = %s.reason, "local model passed over");
        }
        for m in d.models {
            if !m.is_supported() {
                tracing::info!(model = %m.name, architecture = ?m.architecture, "found a model of an architecture sluice cannot run yet");
                continue;
            }
            if configured.contains(m.name.as_str()) || !names.insert(m.name.clone()) {
                continue;
            }
            models.push(m);
        }
    }
    models
}

/// The runtime for the config's local models and the `found` ones, if there are any.
pub fn build(
    config: &Config,
    found: &[sluice_local::discovery::DiscoveredModel],
) -> Result<Option<LocalRuntime>, Error> {
    // Validated by the config loader; a default-built config has it empty.
    let engine = Engine::parse(&config.local.engine).unwrap_or_default();
    let device = sluice_local::DeviceKind::parse(&config.local.device).unwrap_or_default();
    let batch = BatchOptions {
        max_batch: config.local.max_batch,
        max_wait: config.local.max_wait,
        queue: config.local.embedding_queue,
    };
    let mut specs = Vec::new();
    for m in found {
        let mut spec = m.to_spec();
        spec.load.parallel = config.local.parallel;
        spec.load.queue_capacity = config.local.queue;
        spec.load.engine = engine;
        spec.load.device = device;
        spec.batch = batch;
        specs.push(spec);
    }
    for m in &config.models {
        let Some(l) = &m.local else { continue };
        let mut spec = ModelSpec::new(m.upstream.clone(), l.path.clone());
        spec.sha256.clone_from(&l.sha256);
        spec.keep_alive = match &l.keep_alive {
            Some(k) => Some(
                KeepAlive::parse(k)
                    .map_err(|e| config_error(format!("model `{}`: `keep_alive`: {e}", m.name)))?,
            ),
            None => None,
        };
        spec.pin = l.pin;
        spec.preload = l.preload;
        spec.load = LoadOptions {
            parallel: l.parallel,
            queue_capacity: config.local.queue,
            context_length: l.context_length,
            engine,
            threads: None,
            device,
        };
        spec.batch = batch;
        specs.push(spec);
    }
    if specs.is_empty() {
        return Ok(None);
    }
    set_chat_threads(config, &mut specs);
    let mut pool_config = PoolConfig {
        busy_wait: config.local.memory_wait,
        ..PoolConfig::default()
    };
    if let Some(b) = config.local.memory_budget {
        pool_config.memory_budget = b;
    } else if device.is_gpu() {
        // On a GPU the models' weights and caches are in its memory: the budget is a share of
        // that (Metal's is the machine's memory, the default already).
        match device.default_budget() {
            Some(b) => pool_config.memory_budget = b,
            None if device == sluice_local::DeviceKind::Metal => {}
            None => tracing::warn!(
                device = %device.name(),
                "cannot read the GPU's memory (nvidia-smi): the budget is a share of the machine's memory; set `[local] memory_budget`"
            ),
        }
    }
    if let Some(k) = &config.local.keep_alive {
        pool_config.keep_alive =
            KeepAlive::parse(k).map_err(|e| config_error(format!("`local.keep_alive`: {e}")))?;
    }
    tracing::info!(
        models = specs.len(),
        memory_budget = pool_config.memory_budget,
        "local model runtime"
    );
    Ok(Some(LocalRuntime {
        pool: Pool::new(LocalLoader, pool_config, specs),
    }))
}

/// Sets the threads each chat sequence computes on: the native engine's per-slot workers
/// (`LoadOptions::threads`) and candle's process-wide pool (`CANDLE_NUM_THREADS`, read at the
/// first load, unless the environment already sets it). When more than one chat sequence can
/// run at once (the sum of `parallel` over the chat models), each runs on one thread, so that
/// sequences run side by side instead of taking turns (candle's pool runs one job at a time and
/// its idle workers spin: measured 20× slower at 4 concurrent requests over 3 models); a lone
/// sequence gets every core. `[local] threads` overrides the choice.
fn set_chat_threads(config: &Config, specs: &mut [ModelSpec]) {
    const VAR: &str = "CANDLE_NUM_THREADS";
    let sequences: usize = specs
        .iter()
        .filter(|s| s.kind == ModelKind::Chat)
        .map(|s| s.load.parallel)
        .sum();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let threads = config
        .local
        .threads
        .unwrap_or(if sequences > 1 { 1 } else { cores });
    tracing::info!(threads, sequences, "local chat threads per sequence");
    for spec in specs.iter_mut() {
        spec.load.threads = Some(threads);
    }
    if std::env::var_os(VAR).is_none() {
        // Before any model runs: nothing reads it concurrently yet.
        std::env::set_var(VAR, threads.to_string());
    }
}

fn overloaded(message: String, retry_after: Option<Duration>) -> Error {
    ErrorKind::Overloaded {
        message,
        retry_after: retry_after.map(|d| format!("{}", d.as_secs().max(1))),
    }
    .into()
}

fn pool_error(e: &sluice_local::pool::PoolError) -> Error {
    match e.kind() {
        PoolErrorKind::TooLarge { .. } | PoolErrorKind::BudgetBusy { .. } => {
            overloaded(e.to_string(), e.retry_after())
        }
        PoolErrorKind::NotFound { .. } => ErrorKind::ModelNotFound {
            model: e.to_string(),
        }
        .into(),
        _ => ErrorKind::UpstreamProtocol {
            provider: "local".into(),
            message: e.to_string(),
        }
        .into(),
    }
}

fn model_error(e: &sluice_local::Error) -> Error {
    if e.is_queue_full() {
        return overloaded(e.to_string(), Some(Duration::from_secs(1)));
    }
    match e.kind() {
        sluice_local::ErrorKind::InvalidRequest { .. }
        | sluice_local::ErrorKind::ContextLengthExceeded { .. } => ErrorKind::InvalidRequest {
            message: e.to_string(),
            param: Some("messages"),
        }
        .into(),
        _ => ErrorKind::UpstreamProtocol {
            provider: "local".into(),
            message: e.to_string(),
        }
        .into(),
    }
}

/// Fields of a chat request that the typed OpenAI request does not carry.
#[derive(serde::Deserialize)]
struct ChatExtras {
    /// As Ollama takes it: see [`keep_alive_of`].
    #[serde(default)]
    keep_alive: Option<serde_json::Value>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    logprobs: Option<bool>,
    /// Not OpenAI's, but llama.cpp's, Ollama's and vLLM's: sample from the `top_k` likeliest.
    #[serde(default)]
    top_k: Option<u64>,
}

/// The chat of an OpenAI request, for a local model. What a local model cannot do is refused
/// with a 400 naming the parameter, never silently dropped: `tools` (it would answer in text
/// without knowing them), a `response_format` other than `text`, `n` above 1, `logprobs`.
/// Returns the request, whether the stream ends with usage, and the request's own keep-alive.
fn chat_request(body: &[u8]) -> Result<(ChatRequest, bool, Option<KeepAlive>), Error> {
    let r: sluice_types::openai::ChatCompletionRequest =
        serde_json::from_slice(body).map_err(|e| -> Error {
            ErrorKind::InvalidRequest {
                message: format!("invalid request body: {e}"),
                param: None,
            }
            .into()
        })?;
    let extras: ChatExtras = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("invalid request body: {e}"), "n"))?;
    if r.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(invalid(
            "local models do not call tools: leave out `tools`, or route this request to a provider's model".into(),
            "tools",
        ));
    }
    if let Some(format) = &r.response_format {
        let kind = format.get("type").and_then(|t| t.as_str()).unwrap_or("");
        if kind != "text" {
            return Err(invalid(
                format!("local models answer in plain text: `response_format` `{kind}` is not supported"),
                "response_format",
            ));
        }
    }
    if extras.n.is_some_and(|n| n != 1) {
        return Err(invalid(
            "local models return one choice: `n` must be 1".into(),
            "n",
        ));
    }
    if extras.logprobs == Some(true) {
        return Err(invalid(
            "local models do not return `logprobs`".into(),
            "logprobs",
        ));
    }
    let messages = r
        .messages
        .iter()
        .map(|m| {
            use sluice_types::openai::Role;
            let role = match m.role {
                Role::System | Role::Developer => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool | Role::Function => "tool",
            };
            ChatMessage::new(
                role,
                m.content.as_ref().map(|c| c.text()).unwrap_or_default(),
            )
        })
        .collect();
    let mut req = ChatRequest {
        messages,
        max_tokens: r
            .max_completion_tokens
            .or(r.max_tokens)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        stop: r
            .stop
            .map(sluice_types::openai::Stop::into_vec)
            .unwrap_or_default(),
        ..ChatRequest::default()
    };
    req.sampling.temperature = r.temperature;
    req.sampling.top_p = r.top_p;
    req.sampling.seed = r.seed.map(|s| s as u64);
    req.sampling.top_k = extras
        .top_k
        .filter(|&k| k > 0)
        .map(|k| usize::try_from(k).unwrap_or(usize::MAX));
    let include_usage = r.stream_options.is_some_and(|o| o.include_usage);
    Ok((req, include_usage, keep_alive_of(extras.keep_alive)?))
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn usage_of(u: sluice_local::Usage) -> Usage {
    Usage {
        prompt_tokens: u.prompt_tokens as u64,
        completion_tokens: u.completion_tokens as u64,
        ..Usage::default()
    }
}

fn usage_json(u: &Usage) -> serde_json::Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total(),
    })
}

/// Serves one chat request on local model `upstream`; `model` is what the client asked for.
pub async fn serve(
    state: &AppState,
    deployment: usize,
    upstream: &str,
    model: &str,
    body: &Bytes,
    stream: bool,
) -> Result<Response<ResponseBody>, Error> {
    let Some(local) = &state.local else {
        return Err(config_error("no local runtime".into()));
    };
    let (request, include_usage, keep_alive) = chat_request(body)?;
    let lease = local
        .pool
        .acquire(upstream, keep_alive)
        .await
        .map_err(|e| pool_error(&e))?;
    let chat: &ChatModel = lease
        .as_chat()
        .ok_or_else(|| wrong_kind(model, ModelKind::Embedding))?;
    let generation = chat.submit(request).map_err(|e| model_error(&e))?;
    let id = format!("chatcmpl-local-{:016x}", sluice_core::rng::next_u64());
    let created = unix_secs();
    if !stream {
        let done = generation.collect().await.map_err(|e| model_error(&e))?;
        drop(lease);
        let usage = usage_of(done.usage);
        let v = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": done.text},
                "finish_reason": done.finish_reason.as_str(),
            }],
            "usage": usage_json(&usage),
        });
        let mut r = crate::body::json(StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default());
        r.extensions_mut().insert(UsageSeen(usage));
        return Ok(r);
    }
    let stream = LocalStream {
        deployment,
        _lease: lease,
        events: generation.into_receiver(),
        id,
        created,
        model: model.to_string(),
        include_usage,
        started: Instant::now(),
        first: None,
        sent_role: false,
        ended: false,
        tab: None,
        tracker: None,
    };
    let mut r = Response::new(ResponseBody::Local(Box::new(stream)));
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    Ok(r)
}

fn wrong_kind(model: &str, kind: ModelKind) -> Error {
    let message = match kind {
        ModelKind::Embedding => {
            format!("model `{model}` is an embedding model: use /v1/embeddings")
        }
        ModelKind::Chat => format!("model `{model}` is a chat model: use /v1/chat/completions"),
    };
    ErrorKind::InvalidRequest {
        message,
        param: Some("model"),
    }
    .into()
}

fn invalid(message: String, param: &'static str) -> Error {
    ErrorKind::InvalidRequest {
        message,
        param: Some(param),
    }
    .into()
}

/// A request's own `keep_alive` (as Ollama takes it: a duration such as `"10m"`, a number of
/// seconds, `0` to unload when done, a negative value to stay loaded), if it has one.
fn keep_alive_of(value: Option<serde_json::Value>) -> Result<Option<KeepAlive>, Error> {
    let bad = |e: &dyn std::fmt::Display| invalid(format!("`keep_alive`: {e}"), "keep_alive");
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => KeepAlive::parse(&s).map(Some).map_err(|e| bad(&e)),
        Some(serde_json::Value::Number(n)) => match n.as_f64() {
            Some(secs) if secs.is_finite() => Ok(Some(KeepAlive::from_secs_f64(secs))),
            _ => Err(bad(&"not a number of seconds")),
        },
        Some(_) => Err(bad(&"a duration such as \"5m\", or a number of seconds")),
    }
}

/// An OpenAI embeddings request for a local model, read in one pass.
struct EmbeddingRequest {
    /// Text only: token arrays are another model's tokens.
    texts: Vec<String>,
    base64: bool,
    dimensions: Option<u64>,
    keep_alive: Option<KeepAlive>,
}

fn embedding_request(body: &[u8]) -> Result<EmbeddingRequest, Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Input {
        One(String),
        Many(Vec<serde_json::Value>),
    }
    #[derive(serde::Deserialize)]
    struct Wire {
        input: Input,
        encoding_format: Option<String>,
        dimensions: Option<u64>,
        keep_alive: Option<serde_json::Value>,
    }
    let w: Wire = serde_json::from_slice(body).map_err(|e| {
        invalid(
            format!("invalid request body: {e}; `input` must be a string or an array of strings"),
            "input",
        )
    })?;
    let keep_alive = keep_alive_of(w.keep_alive)?;
    let base64 = match w.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid(
                format!("`encoding_format` must be `float` or `base64`, not `{other}`"),
                "encoding_format",
            ))
        }
    };
    let texts = match w.input {
        Input::One(s) => vec![s],
        Input::Many(items) => {
            if items.is_empty() {
                return Err(invalid("`input` must not be empty".into(), "input"));
            }
            items
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => Ok(s),
                    _ => Err(invalid(
                        "local embedding models take text: `input` must be a string or an array of strings (token arrays are not accepted)".into(),
                        "input",
                    )),
                })
                .collect::<Result<_, _>>()?
        }
    };
    Ok(EmbeddingRequest {
        texts,
        base64,
        dimensions: w.dimensions,
        keep_alive,
    })
}

/// Little-endian `f32`s in standard base64, as OpenAI's `encoding_format: "base64"` answers.
fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Serves one embeddings request on local model `upstream`; `model` is what the client asked
/// for. The inputs join the model's next batch.
pub async fn serve_embeddings(
    state: &AppState,
    upstream: &str,
    model: &str,
    body: &Bytes,
) -> Result<Response<ResponseBody>, Error> {
    let Some(local) = &state.local else {
        return Err(config_error("no local runtime".into()));
    };
    let request = embedding_request(body)?;
    if local
        .pool
        .spec(upstream)
        .is_some_and(|s| s.kind == ModelKind::Chat)
    {
        return Err(wrong_kind(model, ModelKind::Chat));
    }
    let lease = local
        .pool
        .acquire(upstream, request.keep_alive)
        .await
        .map_err(|e| pool_error(&e))?;
    let embedder = lease
        .as_embedder()
        .ok_or_else(|| wrong_kind(model, ModelKind::Chat))?;
    let dimensions = embedder.model().dimensions();
    if let Some(d) = request.dimensions.filter(|&d| d != dimensions as u64) {
        return Err(invalid(
            format!("this model's embeddings have {dimensions} dimensions; `dimensions` cannot change that (asked {d})"),
            "dimensions",
        ));
    }
    let (texts, base64) = (request.texts, request.base64);
    let out = embedder
        .submit(texts)
        .map_err(|e| model_error(&e))?
        .await
        .map_err(|e| model_error(&e))?;
    drop(lease);
    // Written by hand: each float in its shortest `f32` form (serde_json would widen them to
    // `f64` digits, half again as many bytes).
    use std::fmt::Write;
    let mut text = String::with_capacity(
        64 + out.vectors.len() * (out.vectors.first().map_or(0, Vec::len) * 12 + 48),
    );
    text.push_str("{\"object\":\"list\",\"data\":[");
    for (index, v) in out.vectors.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        let _ = write!(
            text,
            "{{\"object\":\"embedding\",\"index\":{index},\"embedding\":"
        );
        if base64 {
            text.push('"');
            text.push_str(&base64_f32(v));
            text.push('"');
        } else {
            text.push('[');
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                if x.is_finite() {
                    let _ = write!(text, "{x}");
                } else {
                    text.push('0');
                }
            }
            text.push(']');
        }
        text.push('}');
    }
    let usage = Usage {
        prompt_tokens: out.prompt_tokens as u64,
        ..Usage::default()
    };
    let _ = write!(
        text,
        "],\"model\":{},\"usage\":{{\"prompt_tokens\":{n},\"total_tokens\":{n}}}}}",
        serde_json::Value::from(model),
        n = usage.prompt_tokens
    );
    let mut r = crate::body::json(StatusCode::OK, text.into_bytes());
    r.extensions_mut().insert(UsageSeen(usage));
    Ok(r)
}

/// A local model's answer, streamed as OpenAI chunk events as tokens are generated. Holds
/// the model's lease (so the pool does not evict it) until the stream ends; dropping it (the
/// client left) cancels the generation at its next token.
pub struct LocalStream {
    deployment: usize,
    _lease: sluice_local::pool::Lease<LocalModel>,
    events: mpsc::UnboundedReceiver<sluice_local::Result<GenerationEvent>>,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    started: Instant,
    first: Option<Duration>,
    sent_role: bool,
    ended: bool,
    tab: Option<(Tab, u32, &'static str)>,
    /// The gateway and the request's start, to count it finished (in flight, latency) when
    /// the stream ends rather than when its head is sent.
    tracker: Option<(std::sync::Arc<AppState>, Instant)>,
}

impl LocalStream {
    /// Gives the stream the request's tab, to close when it ends.
    pub fn attach(&mut self, tab: Tab, attempts: u32, cache: &'static str) {
        self.tab = Some((tab, attempts, cache));
    }

    fn chunk(&self, delta: serde_json::Value, finish: Option<&str>) -> serde_json::Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    /// Counts the request as in flight until the stream ends (see [`Self::close`]).
    pub fn track(&mut self, state: std::sync::Arc<AppState>, started: Instant) {
        self.tracker = Some((state, started));
    }

    fn close(&mut self, status: u16, usage: Usage) -> Option<u64> {
        if let Some((state, started)) = self.tracker.take() {
            state
                .metrics
                .series(self.deployment)
                .endpoint(sluice_core::Operation::Chat)
                .latency
                .observe(started.elapsed());
            state
                .metrics
                .in_flight
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (tab, attempts, cache) = self.tab.take()?;
        Some(tab.close(End {
            deployment: Some(self.deployment),
            status,
            usage,
            usage_estimated: false,
            ttft: self.first,
            cache,
            attempts,
        }))
    }
}

fn event(out: &mut String, v: &serde_json::Value) {
    out.push_str("data: ");
    out.push_str(&v.to_string());
    out.push_str("\n\n");
}

impl Body for LocalStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let mut out = String::new();
        match this.events.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(GenerationEvent::Delta(text)))) => {
                if this.first.is_none() {
                    this.first = Some(this.started.elapsed());
                }
                let delta = if this.sent_role {
                    json!({"content": text})
                } else {
                    this.sent_role = true;
                    json!({"role": "assistant", "content": text})
                };
                let c = this.chunk(delta, None);
                event(&mut out, &c);
            }
            Poll::Ready(Some(Ok(GenerationEvent::Done(done)))) => {
                this.ended = true;
                let usage = usage_of(done.usage);
                let delta = if this.sent_role {
                    json!({})
                } else {
                    json!({"role": "assistant", "content": ""})
                };
                let c = this.chunk(delta, Some(done.finish_reason.as_str()));
                event(&mut out, &c);
                if this.include_usage {
                    let mut u = this.chunk(json!({}), None);
                    u["choices"] = json!([]);
                    u["usage"] = usage_json(&usage);
                    event(&mut out, &u);
                }
                out.push_str("data: [DONE]\n\n");
                if let Some(nano) = this.close(200, usage) {
                    out.push_str(&format!(
                        ": x-sluice-cost-usd {}\n\n",
                        crate::tab::usd(nano)
                    ));
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.ended = true;
                let body = sluice_types::ErrorBody {
                    message: &e.to_string(),
                    kind: "upstream_error",
                    param: None,
                    code: Some("stream_interrupted"),
                }
                .to_json();
                out.push_str("data: ");
                out.push_str(&String::from_utf8_lossy(&body));
                out.push_str("\n\n");
                this.close(502, Usage::default());
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.close(502, Usage::default());
                out.push_str("data: {\"error\":{\"message\":\"the local model stopped before it finished\",\"type\":\"upstream_error\",\"param\":null,\"code\":\"stream_interrupted\"}}\n\n");
            }
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
    }
}

impl Drop for LocalStream {
    fn drop(&mut self) {
        // The client left before the end: the tab closes with what is known.
        let _ = self.close(499, Usage::default());
    }
}

/// `/health/detailed`'s view of the pool.
pub fn health(local: &LocalRuntime) -> serde_json::Value {
    let s = local.pool.snapshot();
    let models: Vec<serde_json::Value> = s
        .models
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "kind": local.pool.spec(&m.name).map(|s| s.kind.as_str()),
                "state": m.state.as_str(),
                "bytes_estimated": m.bytes_estimated,
                "bytes_measured": m.bytes_measured,
                "engine": m.engine,
                "bytes_reserved": m.bytes_reserved,
                "in_flight": m.in_flight,
                "pinned": m.pinned,
                "idle_seconds": m.last_used.map(|t| t.elapsed().as_secs()),
                "unloads_in_seconds": m.expires_at.map(|t| {
                    t.saturating_duration_since(Instant::now()).as_secs()
                }),
            })
        })
        .collect();
    json!({"memory_budget": s.budget, "memory_used": s.used, "models": models})
}

/// Appends the pool's Prometheus series.
pub fn render(local: &LocalRuntime, out: &mut String) {
    use std::fmt::Write;
    let s = local.pool.snapshot();
    let _ = writeln!(
        out,
        "# HELP sluice_local_memory_budget_bytes Bytes the loaded local models may hold.\n# TYPE sluice_local_memory_budget_bytes gauge\nsluice_local_memory_budget_bytes {}",
        s.budget
    );
    let _ = writeln!(
        out,
        "# HELP sluice_local_memory_used_bytes Bytes the loaded and loading local models hold.\n# TYPE sluice_local_memory_used_bytes gauge\nsluice_local_memory_used_bytes {}",
        s.used
    );
    type Value = fn(&sluice_local::pool::ModelStatus) -> u64;
    let series: [(&str, &str, Value); 3] = [
        (
            "sluice_local_model_loaded",
            "1 while a local model is in memory (loading counts), else 0.",
            |m| u64::from(m.state.as_str() != "unloaded"),
        ),
        (
            "sluice_local_model_bytes",
            "Bytes a local model counts against the budget.",
            |m| m.bytes_reserved,
        ),
        (
            "sluice_local_model_in_flight",
            "Requests holding or waiting for a local model.",
            |m| m.in_flight as u64,
        ),
    ];
    for (name, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for m in &s.models {
            let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", m.name, value(m));
        }
    }
}

/// Renders preload progress on stderr: a bar redrawn in place when stderr is a terminal, one
/// line per model otherwise (logs), and the log event either way.
pub fn preload_progress() -> impl FnMut(sluice_local::PreloadEvent) {
    use sluice_local::PreloadEvent;
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut held = 0u64;
    move |event| {
        let (index, total, name, note) = match &event {
            PreloadEvent::Loading { name, index, total } => {
                tracing::info!(model = %name, "preloading local model {}/{total}", index + 1);
                (*index, *total, name, "loading".to_owned())
            }
            PreloadEvent::Loaded {
                name,
                index,
                total,
                bytes,
                elapsed,
            } => {
                held += bytes;
                tracing::info!(model = %name, bytes, elapsed_ms = elapsed.as_millis() as u64, "preloaded local model");
                (
                    index + 1,
                    *total,
                    name,
                    format!("{} MiB in {:.1} s", bytes >> 20, elapsed.as_secs_f64()),
                )
            }
            PreloadEvent::Failed {
                name,
                index,
                total,
                error,
            } => {
                tracing::warn!(model = %name, error = %error, "local model did not preload");
                (index + 1, *total, name, format!("failed: {error}"))
            }
        };
        if !tty {
            return;
        }
        const WIDTH: usize = 24;
        let filled = (index * WIDTH).checked_div(total).unwrap_or(WIDTH);
        let bar: String = "#".repeat(filled) + &"-".repeat(WIDTH - filled);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2Kpreloading [{bar}] {index}/{total}  {name}: {note}  ({} MiB held, {:.1} s)",
            held >> 20,
            started.elapsed().as_secs_f64()
        );
        if index == total && !matches!(event, PreloadEvent::Loading { .. }) {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}
