//! `type = "anthropic"`: translation between OpenAI's chat format and Anthropic's Messages
//! API, both directions, streaming included.
//!
//! Formats: Anthropic's API reference, "Messages" (request and response bodies), "Streaming
//! Messages" (the `message_start` ... `message_stop` event sequence) and "Errors"; OpenAI's
//! Chat Completions reference for the other side.
//!
//! What maps and how:
//! - `system` and `developer` messages become the top-level `system` (joined by blank lines),
//!   optionally marked with `cache_control` for prompt caching.
//! - `user` content: text parts become `text` blocks, `image_url` parts `image` blocks
//!   (`data:` URLs as base64 sources, others as URL sources).
//! - `assistant` `tool_calls` become `tool_use` blocks (arguments parsed into `input`); `tool`
//!   messages become `tool_result` blocks in a user turn. Consecutive turns of one role are
//!   merged, since Anthropic wants them alternating.
//! - `max_tokens` is required by Anthropic: the client's, else the provider's default.
//! - `stop` → `stop_sequences`; `temperature` (clamped to Anthropic's 0..1), `top_p`;
//!   `tools` → `tools` with `input_schema`; `tool_choice` `auto`/`required`/`none`/named →
//!   `auto`/`any`/`none`/`tool`; `parallel_tool_calls: false` →
//!   `disable_parallel_tool_use`; `user` → `metadata.user_id`.
//! - Back: text blocks join into `content`, `tool_use` blocks become `tool_calls`;
//!   `stop_reason` `end_turn`/`stop_sequence` → `stop`, `max_tokens` → `length`, `tool_use` →
//!   `tool_calls`, `refusal` → `content_filter`; usage counts cache reads and writes as
//!   prompt tokens, with cache reads as `cached_tokens`.
//!
//! Not translated, and why: `n` > 1, `logprobs`, `seed`, `presence_penalty` and
//! `frequency_penalty` have no Messages API equivalent and are dropped; `response_format` has
//! no native JSON mode and is dropped (the model still follows instructions in the prompt).

use crate::chunks::{now_secs, usage_json, ChunkWriter};
use crate::client::UpstreamBody;
use crate::openai::{post, static_headers, uri};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Uri};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sluice_core::config::ProviderConfig;
use sluice_core::Error;
use sluice_types::openai::{ChatCompletionRequest, Content, Part, Role, ToolChoice};
use sluice_types::Usage;

/// The config `type` of this adapter.
pub const PROVIDER_TYPE: &str = "anthropic";

/// The `anthropic-version` header sent.
pub const API_VERSION: &str = "2023-06-01";

/// The `anthropic` adapter: URI and headers built once at start.
#[derive(Debug)]
pub struct Anthropic {
    messages_uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Translation settings.
    pub options: RequestOptions,
}

impl Anthropic {
    /// Prepares the URI (`{base_url}/v1/messages`) and headers (`x-api-key`,
    /// `anthropic-version`) for `config`.
    pub fn new(config: &ProviderConfig) -> Result<Self, Error> {
        let auth = config
            .api_key
            .as_ref()
            .map(|k| (HeaderName::from_static("x-api-key"), k.expose().to_string()));
        let mut headers = static_headers(config, auth)?;
        headers.push((
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        ));
        Ok(Self {
            messages_uri: uri(config, "/v1/messages")?,
            headers,
            options: RequestOptions {
                default_max_tokens: config.default_max_tokens,
                cache_system_min_bytes: config.cache_system_min_bytes,
            },
        })
    }

    /// The upstream request carrying a translated body.
    pub fn request(&self, body: Bytes, request_id: &HeaderValue) -> Request<UpstreamBody> {
        post(&self.messages_uri, &self.headers, body, request_id)
    }
}

/// How a request is translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOptions {
    /// `max_tokens` when the client sends none (Anthropic requires it).
    pub default_max_tokens: u64,
    /// Mark the system prompt for prompt caching when it is at least this many bytes.
    pub cache_system_min_bytes: Option<usize>,
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u64,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
}

#[derive(Serialize)]
struct WireMessage {
    role: &'static str,
    content: Vec<Value>,
}

/// Why a request cannot be expressed for Anthropic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable(pub String);

fn image_block(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((meta, data)) = rest.split_once(',') {
            let media_type = meta.trim_end_matches(";base64");
            return json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}});
        }
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

fn content_blocks(content: &Content) -> Vec<Value> {
    match content {
        Content::Text(t) if t.is_empty() => Vec::new(),
        Content::Text(t) => vec![json!({"type": "text", "text": t})],
        Content::Parts(parts) => parts
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(json!({"type": "text", "text": text})),
                Part::ImageUrl { image_url } => Some(image_block(&image_url.url)),
                Part::Other => None,
            })
            .collect(),
    }
}

fn push_turn(messages: &mut Vec<WireMessage>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => messages.push(WireMessage {
            role,
            content: blocks,
        }),
    }
}

/// The Messages API request body for `req`, sent to `upstream_model`.
pub fn to_request(
    req: &ChatCompletionRequest,
    upstream_model: &str,
    options: RequestOptions,
) -> Result<Vec<u8>, Untranslatable> {
    let mut system_parts: Vec<String> = Vec::new();
    let mut messages: Vec<WireMessage> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                if let Some(c) = &m.content {
                    system_parts.push(c.text());
                }
            }
            Role::User => {
                let blocks = m.content.as_ref().map(content_blocks).unwrap_or_default();
                push_turn(&mut messages, "user", blocks);
            }
            Role::Assistant => {
                let mut blocks = m.content.as_ref().map(content_blocks).unwrap_or_default();
                for call in m.tool_calls.iter().flatten() {
                    let input: Value = if call.function.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&call.function.arguments).map_err(|e| {
                            Untranslatable(format!(
                                "`messages[{i}].tool_calls`: arguments of `{}` are not JSON: {e}",
                                call.function.name
                            ))
                        })?
                    };
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
                }
                push_turn(&mut messages, "assistant", blocks);
            }
            Role::Tool | Role::Function => {
                let id = m
                    .tool_call_id
                    .clone()
                    .or_else(|| m.name.clone())
                    .ok_or_else(|| {
                        Untranslatable(format!(
                            "`messages[{i}]`: a tool message needs `tool_call_id`"
                        ))
                    })?;
                let text = m.content.as_ref().map(Content::text).unwrap_or_default();
                push_turn(
                    &mut messages,
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": text})],
                );
            }
        }
    }
    if messages.is_empty() {
        return Err(Untranslatable(
            "Anthropic needs at least one user or assistant message".into(),
        ));
    }
    let system = (!system_parts.is_empty()).then(|| {
        let text = system_parts.join("\n\n");
        let cache = options
            .cache_system_min_bytes
            .is_some_and(|min| text.len() >= min);
        if cache {
            json!([{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}])
        } else {
            Value::String(text)
        }
    });
    let tools: Vec<Value> = req
        .tools
        .iter()
        .flatten()
        .map(|t| {
            let mut tool = Map::new();
            tool.insert("name".into(), Value::String(t.function.name.clone()));
            if let Some(d) = &t.function.description {
                tool.insert("description".into(), Value::String(d.clone()));
            }
            tool.insert(
                "input_schema".into(),
                t.function
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            );
            Value::Object(tool)
        })
        .collect();
    let mut tool_choice = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "required" => Some(json!({"type": "any"})),
            "none" => Some(json!({"type": "none"})),
            other => {
                return Err(Untranslatable(format!(
                    "`tool_choice` `{other}` is not one of auto, required, none"
                )))
            }
        },
        Some(ToolChoice::Named { function }) => {
            Some(json!({"type": "tool", "name": function.name}))
        }
    };
    if req.parallel_tool_calls == Some(false) && !tools.is_empty() {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        if let Some(obj) = choice.as_object_mut() {
            obj.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    let wire = WireRequest {
        model: upstream_model,
        max_tokens: req.output_cap().unwrap_or(options.default_max_tokens),
        messages,
        system,
        temperature: req.temperature.map(|t| t.clamp(0.0, 1.0)),
        top_p: req.top_p,
        stop_sequences: req.stop.clone().map(|s| s.into_vec()).unwrap_or_default(),
        stream: req.stream.unwrap_or(false),
        tools,
        tool_choice,
        metadata: req.user.as_ref().map(|u| json!({"user_id": u})),
    };
    serde_json::to_vec(&wire).map_err(|e| Untranslatable(e.to_string()))
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    fn merge(&mut self, other: &WireUsage) {
        // `message_delta` repeats or updates the counts; the last non-zero value wins.
        if other.input_tokens > 0 {
            self.input_tokens = other.input_tokens;
        }
        if other.output_tokens > 0 {
            self.output_tokens = other.output_tokens;
        }
        if other.cache_creation_input_tokens.is_some() {
            self.cache_creation_input_tokens = other.cache_creation_input_tokens;
        }
        if other.cache_read_input_tokens.is_some() {
            self.cache_read_input_tokens = other.cache_read_input_tokens;
        }
    }

    fn normalised(&self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let write = self.cache_creation_input_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: self.input_tokens + read + write,
            completion_tokens: self.output_tokens,
            cached_prompt_tokens: read,
            reasoning_tokens: 0,
        }
    }

    fn openai(&self) -> Value {
        usage_json(&self.normalised())
    }
}

#[derive(Debug, Deserialize)]
struct WireResponse {
    id: String,
    #[serde(default)]
    content: Vec<Value>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// A `chat.completion` body for a Messages API response, with its normalised usage.
/// `model` is what the client asked for.
pub fn from_response(body: &[u8], model: &str) -> Result<(Vec<u8>, Usage), String> {
    let r: WireResponse = serde_json::from_slice(body)
        .map_err(|e| format!("not an Anthropic Messages response: {e}"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in &r.content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let out = json!({
        "id": format!("chatcmpl-{}", r.id),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(r.stop_reason.as_deref()),
        }],
        "usage": r.usage.openai(),
    });
    Ok((
        serde_json::to_vec(&out).unwrap_or_default(),
        r.usage.normalised(),
    ))
}

/// Translates Anthropic's event stream into OpenAI `chat.completion.chunk` events, one event
/// at a time.
#[derive(Debug)]
pub struct StreamTranslator {
    writer: ChunkWriter,
    include_usage: bool,
    usage: WireUsage,
    /// For each content block index, the OpenAI tool-call index, if it is a `tool_use`.
    tool_blocks: Vec<(u64, usize)>,
    tools_seen: usize,
    finish: Option<&'static str>,
    done: bool,
}

/// What one upstream event came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamStep {
    /// Keep going.
    Continue,
    /// The stream finished normally.
    Done,
    /// The upstream sent an error event: its message.
    Error(String),
}

impl StreamTranslator {
    /// A translator for a stream answering `model`; `include_usage` adds OpenAI's final
    /// usage chunk.
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self {
            writer: ChunkWriter::new(model, "anthropic"),
            include_usage,
            usage: WireUsage::default(),
            tool_blocks: Vec::new(),
            tools_seen: 0,
            finish: None,
            done: false,
        }
    }

    /// Normalised usage counted so far.
    pub fn usage(&self) -> Usage {
        self.usage.normalised()
    }

    /// Whether `message_stop` was seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds the `data` of one Anthropic event; appends the OpenAI events it yields to `out`.
    pub fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) -> StreamStep {
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return StreamStep::Continue;
        };
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let msg = &v["message"];
                self.writer.id = format!("chatcmpl-{}", msg["id"].as_str().unwrap_or_default());
                if let Ok(u) = serde_json::from_value::<WireUsage>(msg["usage"].clone()) {
                    self.usage.merge(&u);
                }
                self.writer
                    .delta(out, json!({"role": "assistant", "content": ""}), None);
            }
            Some("content_block_start") => {
                let index = v["index"].as_u64().unwrap_or(0);
                let block = &v["content_block"];
                if block["type"] == "tool_use" {
                    let tool_index = self.tools_seen;
                    self.tools_seen += 1;
                    self.tool_blocks.push((index, tool_index));
                    self.writer.delta(
                        out,
                        json!({"tool_calls": [{"index": tool_index, "id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": ""}}]}),
                        None,
                    );
                } else if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                    self.writer.delta(out, json!({"content": text}), None);
                }
            }
            Some("content_block_delta") => {
                let index = v["index"].as_u64().unwrap_or(0);
                let delta = &v["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        self.writer
                            .delta(out, json!({"content": delta["text"]}), None);
                    }
                    Some("input_json_delta") => {
                        if let Some(&(_, tool_index)) =
                            self.tool_blocks.iter().find(|(b, _)| *b == index)
                        {
                            self.writer.delta(
                                out,
                                json!({"tool_calls": [{"index": tool_index, "function": {"arguments": delta["partial_json"]}}]}),
                                None,
                            );
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Ok(u) = serde_json::from_value::<WireUsage>(v["usage"].clone()) {
                    self.usage.merge(&u);
                }
                self.finish = Some(finish_reason(v["delta"]["stop_reason"].as_str()));
            }
            Some("message_stop") => {
                let usage = self.usage.normalised();
                self.writer.finish(
                    out,
                    self.finish.unwrap_or("stop"),
                    self.include_usage.then_some(&usage),
                );
                self.done = true;
                return StreamStep::Done;
            }
            Some("error") => {
                let message = v["error"]["message"]
                    .as_str()
                    .unwrap_or("upstream error")
                    .to_string();
                return StreamStep::Error(message);
            }
            _ => {}
        }
        StreamStep::Continue
    }
}

pub mod inbound;
#[cfg(test)]
mod tests;
