//! Serving a request on a model sluice runs itself (see `crate::local` for the runtime): a
//! lease on the loaded model (loading it first if need be), the chat submitted to the
//! model's bounded queue or the inputs to its embedding batcher, and the answer as an
//! OpenAI `chat.completion`, an embeddings list, or `chat.completion.chunk` events as
//! tokens come, written by the providers' one chunk writer.
//!
//! When the model cannot take the request (its queue is full, or the memory it needs is
//! held by models in use, or it can never fit the budget) the answer is 503
//! `model_overloaded` with `Retry-After`, which is retryable: a route falls back to its
//! next target.

use super::answer::Answer;
use super::ending::{Ending, Tracked};
use crate::state::AppState;
use bytes::Bytes;
use http_body::{Body, Frame};
use sluice_core::{Error, ErrorKind};
use sluice_local::pool::{KeepAlive, LocalModel, ModelKind, PoolErrorKind};
use sluice_local::{ChatMessage, ChatModel, ChatRequest, GenerationEvent};
use sluice_providers::chunks::{completion, ChunkWriter, Delta};
use sluice_types::Usage;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

fn overloaded(message: String, retry_after: Option<Duration>) -> Error {
    ErrorKind::Overloaded {
        message,
        // Never "retry now": at least a second.
        retry_after: retry_after.map(|d| d.max(Duration::from_secs(1))),
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

fn usage_of(u: sluice_local::Usage) -> Usage {
    Usage {
        prompt_tokens: u.prompt_tokens as u64,
        completion_tokens: u.completion_tokens as u64,
        ..Usage::default()
    }
}

fn runtime(state: &AppState) -> Result<&crate::local::LocalRuntime, Error> {
    state.local.as_ref().ok_or_else(|| {
        ErrorKind::Internal {
            message: "no local runtime".into(),
        }
        .into()
    })
}

/// Serves one chat request on local model `upstream`; `model` is what the client asked for.
pub async fn chat(
    state: &AppState,
    upstream: &str,
    model: &str,
    body: &Bytes,
    stream: bool,
) -> Result<Answer, Error> {
    let local = runtime(state)?;
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
    let mut writer = ChunkWriter::new(model, "local");
    writer.id = format!("chatcmpl-local-{:016x}", sluice_core::rng::next_u64());
    if !stream {
        let done = generation.collect().await.map_err(|e| model_error(&e))?;
        drop(lease);
        let usage = usage_of(done.usage);
        let finish = done.finish_reason.as_str();
        let body = completion("local", model, &done.text, &[], finish, &usage);
        return Ok(Answer::json(Bytes::from(body), Some(usage)));
    }
    Ok(Answer::Stream(Box::new(LocalStream {
        _lease: lease,
        events: generation.into_receiver(),
        writer,
        include_usage,
        started: Instant::now(),
        first: None,
        sent_role: false,
        ended: None,
    })))
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
pub async fn embeddings(
    state: &AppState,
    upstream: &str,
    model: &str,
    body: &Bytes,
) -> Result<Answer, Error> {
    let local = runtime(state)?;
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
    Ok(Answer::json(Bytes::from(text), Some(usage)))
}

/// A local model's answer, streamed as OpenAI chunk events as tokens are generated. Holds
/// the model's lease (so the pool does not evict it) until the stream ends; dropping it (the
/// client left) cancels the generation at its next token.
pub struct LocalStream {
    _lease: sluice_local::pool::Lease<LocalModel>,
    events: mpsc::UnboundedReceiver<sluice_local::Result<GenerationEvent>>,
    writer: ChunkWriter,
    include_usage: bool,
    started: Instant,
    first: Option<Duration>,
    sent_role: bool,
    /// How the stream ended, once it has.
    ended: Option<Ending>,
}

impl LocalStream {
    fn end(&mut self, status: u16, usage: Usage) {
        self.ended = Some(Ending {
            status,
            usage,
            estimated: false,
            ttft: self.first,
        });
    }
}

impl Body for LocalStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.ended.is_some() {
            return Poll::Ready(None);
        }
        let mut out = Vec::new();
        match this.events.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(GenerationEvent::Delta(text)))) => {
                if this.first.is_none() {
                    this.first = Some(this.started.elapsed());
                }
                let mut delta = Delta::content(&text);
                if !this.sent_role {
                    this.sent_role = true;
                    delta.role = Some("assistant");
                }
                this.writer.delta(&mut out, delta, None);
            }
            Poll::Ready(Some(Ok(GenerationEvent::Done(done)))) => {
                let usage = usage_of(done.usage);
                if !this.sent_role {
                    this.writer.delta(&mut out, Delta::role(), None);
                }
                let with_usage = this.include_usage.then_some(&usage);
                this.writer
                    .finish(&mut out, done.finish_reason.as_str(), with_usage);
                this.end(200, usage);
            }
            Poll::Ready(Some(Err(e))) => {
                let body = sluice_types::ErrorBody {
                    message: &e.to_string(),
                    kind: "upstream_error",
                    param: None,
                    code: Some("stream_interrupted"),
                }
                .to_json();
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&body);
                out.extend_from_slice(b"\n\n");
                this.end(502, Usage::default());
            }
            Poll::Ready(None) => {
                out.extend_from_slice(b"data: {\"error\":{\"message\":\"the local model stopped before it finished\",\"type\":\"upstream_error\",\"param\":null,\"code\":\"stream_interrupted\"}}\n\n");
                this.end(502, Usage::default());
            }
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
    }
}

impl Tracked for LocalStream {
    fn ending(&mut self, _completed: bool) -> Ending {
        match self.ended {
            Some(end) => end,
            // The client left before the end: what is known.
            _ => Ending {
                ttft: self.first,
                ..Ending::bare(499)
            },
        }
    }
}
