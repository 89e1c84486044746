//! `type = "ollama"`: Ollama's native API (`/api/chat`, `/api/embed`), for users who run
//! Ollama and want what its OpenAI-compatible `/v1` lacks: `keep_alive` and the native
//! `options`. Chat streams are newline-delimited JSON, translated line by line.
//!
//! Formats: Ollama's API documentation (`docs/api.md`): "Generate a chat completion"
//! (request, non-streamed response, streamed responses ending with `"done": true`) and
//! "Generate Embeddings" (`/api/embed`).
//!
//! What maps: messages (`system`/`developer` → `system`, images from data URLs →
//! `images`, assistant `tool_calls` with arguments as objects, `tool` messages → `tool`
//! role), `tools`; `temperature`, `top_p`, `seed`, `stop`, `max_tokens` → `options`
//! (`num_predict` for the cap); `response_format` JSON → `format: "json"`, a JSON schema →
//! `format: schema`; `keep_alive` from the request body or the provider's config. Back:
//! `message.content`, `tool_calls` (ids made up: Ollama sends none), `done_reason`
//! (`length` → `length`, else `stop`, `tool_calls` when tools were called), and
//! `prompt_eval_count`/`eval_count` as usage. Not mapped: `n`, `logprobs` (no Ollama
//! counterpart); image URLs that are not data URLs (Ollama takes only inline images).

use crate::chunks::{completion, ChunkWriter};
use crate::client::UpstreamBody;
use crate::openai::{post, static_headers, uri};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::{Request, Uri};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sluice_core::config::ProviderConfig;
use sluice_core::Error;
use sluice_types::openai::{ChatCompletionRequest, Content, Part, Role, ToolChoice};
use sluice_types::Usage;

/// The config `type` of this adapter.
pub const PROVIDER_TYPE: &str = "ollama";

/// The `ollama` adapter: URIs and headers built once at start.
#[derive(Debug)]
pub struct Ollama {
    chat_uri: Uri,
    embed_uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// `keep_alive` sent when the request has none.
    pub keep_alive: Option<String>,
}

impl Ollama {
    /// Prepares `{base_url}/api/chat` and `{base_url}/api/embed`.
    pub fn new(config: &ProviderConfig) -> Result<Self, Error> {
        let auth = config
            .api_key
            .as_ref()
            .map(|k| (AUTHORIZATION, format!("Bearer {}", k.expose())));
        Ok(Self {
            chat_uri: uri(config, "/api/chat")?,
            embed_uri: uri(config, "/api/embed")?,
            headers: static_headers(config, auth)?,
            keep_alive: config.keep_alive.clone(),
        })
    }

    /// The upstream request for chat (`embeddings = false`) or embeddings.
    pub fn request(
        &self,
        embeddings: bool,
        body: Bytes,
        request_id: &HeaderValue,
    ) -> Request<UpstreamBody> {
        let uri = if embeddings {
            &self.embed_uri
        } else {
            &self.chat_uri
        };
        post(uri, &self.headers, body, request_id)
    }
}

/// Why a request cannot be expressed for Ollama.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable(pub String);

/// Reads `keep_alive` from a raw OpenAI request body (a field OpenAI does not have, which
/// Ollama users send).
fn keep_alive_of(body: &[u8]) -> Option<Value> {
    #[derive(Deserialize)]
    struct K {
        #[serde(default)]
        keep_alive: Option<Value>,
    }
    serde_json::from_slice::<K>(body)
        .ok()
        .and_then(|k| k.keep_alive)
}

/// The `/api/chat` body for `req` (whose raw body is `raw`), sent to `upstream_model`.
pub fn to_chat_request(
    req: &ChatCompletionRequest,
    raw: &[u8],
    upstream_model: &str,
    default_keep_alive: Option<&str>,
) -> Result<Vec<u8>, Untranslatable> {
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role {
            Role::System | Role::Developer => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool | Role::Function => "tool",
        };
        let mut msg = Map::new();
        msg.insert("role".into(), Value::String(role.into()));
        let mut images = Vec::new();
        let text = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match p {
                        Part::Text { text: t } => text.push_str(t),
                        Part::ImageUrl { image_url } => {
                            let data = image_url
                                .url
                                .strip_prefix("data:")
                                .and_then(|r| r.split_once(','))
                                .map(|(_, d)| d.to_string())
                                .ok_or_else(|| {
                                    Untranslatable(format!(
                                        "`messages[{i}]`: Ollama takes images only inline, as data URLs"
                                    ))
                                })?;
                            images.push(Value::String(data));
                        }
                        Part::Other => {}
                    }
                }
                text
            }
        };
        msg.insert("content".into(), Value::String(text));
        if !images.is_empty() {
            msg.insert("images".into(), Value::Array(images));
        }
        if let Some(calls) = &m.tool_calls {
            let calls: Result<Vec<Value>, Untranslatable> = calls
                .iter()
                .map(|c| {
                    let args: Value = if c.function.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&c.function.arguments).map_err(|e| {
                            Untranslatable(format!(
                                "`messages[{i}].tool_calls`: arguments are not JSON: {e}"
                            ))
                        })?
                    };
                    Ok(json!({"function": {"name": c.function.name, "arguments": args}}))
                })
                .collect();
            msg.insert("tool_calls".into(), Value::Array(calls?));
        }
        messages.push(Value::Object(msg));
    }
    let mut options = Map::new();
    if let Some(t) = req.temperature {
        options.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        options.insert("top_p".into(), json!(p));
    }
    if let Some(s) = req.seed {
        options.insert("seed".into(), json!(s));
    }
    if let Some(n) = req.output_cap() {
        options.insert("num_predict".into(), json!(n));
    }
    if let Some(stop) = &req.stop {
        options.insert("stop".into(), json!(stop.clone().into_vec()));
    }
    let mut out = Map::new();
    out.insert("model".into(), Value::String(upstream_model.into()));
    out.insert("messages".into(), Value::Array(messages));
    out.insert("stream".into(), Value::Bool(req.stream.unwrap_or(false)));
    if !options.is_empty() {
        out.insert("options".into(), Value::Object(options));
    }
    if let Some(tools) = &req.tools {
        if !matches!(&req.tool_choice, Some(ToolChoice::Mode(m)) if m == "none") {
            let tools: Vec<Value> = tools
                .iter()
                .map(|t| json!({"type": "function", "function": {"name": t.function.name, "description": t.function.description, "parameters": t.function.parameters.clone().unwrap_or_else(|| json!({"type": "object"}))}}))
                .collect();
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    match req
        .response_format
        .as_ref()
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
    {
        Some("json_object") => {
            out.insert("format".into(), Value::String("json".into()));
        }
        Some("json_schema") => {
            if let Some(schema) = req
                .response_format
                .as_ref()
                .and_then(|f| f["json_schema"].get("schema"))
            {
                out.insert("format".into(), schema.clone());
            }
        }
        _ => {}
    }
    match keep_alive_of(raw) {
        Some(k) => {
            out.insert("keep_alive".into(), k);
        }
        None => {
            if let Some(k) = default_keep_alive {
                out.insert("keep_alive".into(), Value::String(k.into()));
            }
        }
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| Untranslatable(e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: String,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    function: WireFunction,
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Debug, Deserialize)]
struct WireChat {
    #[serde(default)]
    message: WireMessage,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    error: Option<String>,
}

impl WireChat {
    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_eval_count.unwrap_or(0),
            completion_tokens: self.eval_count.unwrap_or(0),
            ..Usage::default()
        }
    }
}

fn tool_calls_json(calls: &[WireToolCall], first_index: usize) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "index": first_index + i,
                "id": format!("call_{}", first_index + i),
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments.to_string()},
            })
        })
        .collect()
}

fn finish(done_reason: Option<&str>, tools: bool) -> &'static str {
    match (done_reason, tools) {
        (_, true) => "tool_calls",
        (Some("length"), _) => "length",
        _ => "stop",
    }
}

/// A `chat.completion` body for an `/api/chat` response (`"stream": false`).
pub fn from_chat_response(body: &[u8], model: &str) -> Result<(Vec<u8>, Usage), String> {
    let r: WireChat =
        serde_json::from_slice(body).map_err(|e| format!("not an Ollama chat response: {e}"))?;
    if let Some(e) = r.error {
        return Err(e);
    }
    let usage = r.usage();
    let tools = !r.message.tool_calls.is_empty();
    let calls = if tools {
        tool_calls_json(&r.message.tool_calls, 0)
    } else {
        Vec::new()
    };
    let reason = finish(r.done_reason.as_deref(), tools);
    let body = completion("ollama", model, &r.message.content, calls, reason, &usage);
    Ok((body, usage))
}

/// Translates Ollama's NDJSON chat stream into OpenAI chunk events, one line at a time.
#[derive(Debug)]
pub struct LineTranslator {
    writer: ChunkWriter,
    include_usage: bool,
    started: bool,
    tools_seen: usize,
    usage: Usage,
    done: bool,
}

/// What one line came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineStep {
    /// Keep going.
    Continue,
    /// The last line (`"done": true`) was seen.
    Done,
    /// Ollama reported an error.
    Error(String),
}

impl LineTranslator {
    /// A translator for a stream answering `model`.
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self {
            writer: ChunkWriter::new(model, "ollama"),
            include_usage,
            started: false,
            tools_seen: 0,
            usage: Usage::default(),
            done: false,
        }
    }

    /// Usage counted so far (Ollama reports it on the last line).
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Feeds one NDJSON line; appends the OpenAI events it yields to `out`.
    pub fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> LineStep {
        if line.iter().all(u8::is_ascii_whitespace) {
            return LineStep::Continue;
        }
        let Ok(r) = serde_json::from_slice::<WireChat>(line) else {
            return LineStep::Error("Ollama sent a line that is not JSON".into());
        };
        if let Some(e) = r.error {
            return LineStep::Error(e);
        }
        if !self.started {
            self.started = true;
            self.writer
                .delta(out, json!({"role": "assistant", "content": ""}), None);
        }
        if !r.message.content.is_empty() {
            self.writer
                .delta(out, json!({"content": r.message.content}), None);
        }
        if !r.message.tool_calls.is_empty() {
            let calls = tool_calls_json(&r.message.tool_calls, self.tools_seen);
            self.tools_seen += r.message.tool_calls.len();
            self.writer.delta(out, json!({"tool_calls": calls}), None);
        }
        if r.done {
            self.usage = r.usage();
            let reason = finish(r.done_reason.as_deref(), self.tools_seen > 0);
            self.writer
                .finish(out, reason, self.include_usage.then_some(&self.usage));
            self.done = true;
            return LineStep::Done;
        }
        LineStep::Continue
    }
}

/// The `/api/embed` body for an OpenAI embeddings request body.
pub fn to_embed_request(
    raw: &[u8],
    upstream_model: &str,
    default_keep_alive: Option<&str>,
) -> Result<Vec<u8>, Untranslatable> {
    #[derive(Deserialize)]
    struct Req {
        input: Value,
        #[serde(default)]
        dimensions: Option<u64>,
    }
    let r: Req = serde_json::from_slice(raw).map_err(|e| Untranslatable(e.to_string()))?;
    let texts = match &r.input {
        Value::String(_) => r.input.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => r.input.clone(),
        _ => {
            return Err(Untranslatable(
                "Ollama embeds text only: `input` must be a string or an array of strings".into(),
            ))
        }
    };
    let mut out = json!({"model": upstream_model, "input": texts});
    if let Some(d) = r.dimensions {
        out["dimensions"] = json!(d);
    }
    match keep_alive_of(raw) {
        Some(k) => out["keep_alive"] = k,
        None => {
            if let Some(k) = default_keep_alive {
                out["keep_alive"] = Value::String(k.into());
            }
        }
    }
    serde_json::to_vec(&out).map_err(|e| Untranslatable(e.to_string()))
}

/// An OpenAI embeddings list for an `/api/embed` response.
pub fn from_embed_response(body: &[u8], model: &str) -> Result<(Vec<u8>, Usage), String> {
    #[derive(Deserialize)]
    struct Resp {
        embeddings: Vec<Vec<f64>>,
        #[serde(default)]
        prompt_eval_count: Option<u64>,
    }
    let r: Resp =
        serde_json::from_slice(body).map_err(|e| format!("not an Ollama embed response: {e}"))?;
    let tokens = r.prompt_eval_count.unwrap_or(0);
    let data: Vec<Value> = r
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
        .collect();
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    let usage = Usage {
        prompt_tokens: tokens,
        ..Usage::default()
    };
    Ok((serde_json::to_vec(&out).unwrap_or_default(), usage))
}

#[cfg(test)]
mod tests;
