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
//! - `reasoning_effort` → `thinking` (`enabled`, a budget from the effort, see
//!   [`crate::reasoning`], kept below `max_tokens`; `none` leaves thinking off).
//! - Back: text blocks join into `content`, `thinking` blocks into `reasoning_content`
//!   (streamed as `reasoning_content` deltas), and, signed, into `thinking_blocks` (the
//!   field LiteLLM uses: `{"type": "thinking", "thinking", "signature"}`, or
//!   `redacted_thinking` with its `data`; streamed as a delta carrying the signature when
//!   `signature_delta` comes); an assistant message's `thinking_blocks` go back first in
//!   its turn, so that Anthropic accepts a thinking turn that called tools. `tool_use`
//!   blocks become `tool_calls`;
//!   `stop_reason` `end_turn`/`stop_sequence` → `stop`, `max_tokens` → `length`, `tool_use` →
//!   `tool_calls`, `refusal` → `content_filter`; usage counts cache reads and writes as
//!   prompt tokens, with cache reads as `cached_tokens`.
//!
//! - `response_format` `json_schema` → `output_config.format` (`json_schema` with the schema:
//!   Anthropic's structured outputs).
//!
//! Not translated, and why: `n` > 1, `logprobs`, `seed`, `presence_penalty` and
//! `frequency_penalty` have no Messages API equivalent and are dropped; `response_format`
//! `json_object` has no counterpart (Anthropic's JSON formats take a schema whose objects are
//! closed) and is not sent (the model follows the prompt, which OpenAI's JSON mode requires to
//! ask for JSON).

use crate::chunks::{compact_json, Answer, ChunkWriter, Delta, ThinkingBlockOut, ToolCallOut};
use crate::client::UpstreamBody;
use crate::json::raw_arguments;
use crate::outbound::{get, post, static_headers, uri};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Uri};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use sluice_core::config::ProviderConfig;
use sluice_core::Error;
use sluice_types::openai::{ChatCompletionRequest, Content, Part, Role, Stop, ToolChoice};
use sluice_types::Usage;
use std::borrow::Cow;

/// The config `type` of this adapter.
pub const PROVIDER_TYPE: &str = "anthropic";

/// The `anthropic-version` header sent.
pub const API_VERSION: &str = "2023-06-01";

/// The `anthropic` adapter: URI and headers built once at start.
#[derive(Debug)]
pub struct Anthropic {
    messages_uri: Uri,
    /// `GET {base_url}/v1/models`, the health check's model list.
    models_uri: Uri,
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
            models_uri: uri(config, "/v1/models")?,
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

    /// `GET {base_url}/v1/models` with the key and version headers.
    pub fn list_models(&self, request_id: &HeaderValue) -> Request<UpstreamBody> {
        get(&self.models_uri, &self.headers, request_id)
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
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<System>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<Thinking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<OutputConfig<'a>>,
    /// The testkit's per-request control of its fake upstream, carried over (see
    /// [`ChatCompletionRequest::x_fake`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    x_fake: Option<&'a Value>,
}

/// `output_config`: the answer's JSON schema (Anthropic's structured outputs).
#[derive(Serialize)]
struct OutputConfig<'a> {
    format: OutputFormat<'a>,
}

#[derive(Serialize)]
struct OutputFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: &'a Value,
}

/// `output_config` for chat's `response_format`: a `json_schema` format's schema as
/// Anthropic's JSON output format. `json_object` has no counterpart (Anthropic's formats
/// take a schema whose objects are closed) and `text` is the default: neither sends one.
fn output_config(format: Option<&Value>) -> Result<Option<OutputConfig<'_>>, Untranslatable> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text" | "json_object") => Ok(None),
        Some("json_schema") => {
            let schema = format
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    Untranslatable(
                        "`response_format.json_schema.schema` must be a JSON Schema object".into(),
                    )
                })?;
            Ok(Some(OutputConfig {
                format: OutputFormat {
                    kind: "json_schema",
                    schema,
                },
            }))
        }
        _ => Err(Untranslatable(
            "`response_format.type` must be text, json_object or json_schema".into(),
        )),
    }
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

/// A content block of a request message.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
    Text {
        text: &'a str,
    },
    Image {
        source: ImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a RawValue,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: String,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

/// `system`: a string, or one text block marked for prompt caching.
#[derive(Serialize)]
#[serde(untagged)]
enum System {
    Text(String),
    Cached([CachedText; 1]),
}

#[derive(Serialize)]
struct CachedText {
    #[serde(rename = "type")]
    kind: &'static str,
    text: String,
    cache_control: CacheControl,
}

#[derive(Serialize)]
struct CacheControl {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Schema<'a>,
}

/// A tool's JSON schema: the client's, or an empty object schema.
#[derive(Serialize)]
#[serde(untagged)]
enum Schema<'a> {
    Given(&'a Value),
    Empty(EmptySchema),
}

#[derive(Serialize)]
struct EmptySchema {
    #[serde(rename = "type")]
    kind: &'static str,
    properties: Empty,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct WireToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

/// `thinking`: extended thinking on, with a budget below `max_tokens`.
#[derive(Serialize)]
struct Thinking {
    #[serde(rename = "type")]
    kind: &'static str,
    budget_tokens: u64,
}

/// Anthropic's `thinking` for `reasoning_effort`, within `max_tokens` (Anthropic wants
/// the budget at least 1,024 tokens and below `max_tokens`).
fn thinking(effort: Option<&str>, max_tokens: u64) -> Result<Option<Thinking>, Untranslatable> {
    let Some(effort) = effort else {
        return Ok(None);
    };
    let budget = crate::reasoning::budget(effort).ok_or_else(|| {
        Untranslatable(format!(
            "`reasoning_effort` `{effort}` is not one of none, minimal, low, medium, high"
        ))
    })?;
    let Some(budget) = budget else {
        return Ok(None);
    };
    let budget = budget.min(max_tokens.saturating_sub(1));
    if budget < 1024 {
        return Err(Untranslatable(format!(
            "`reasoning_effort` needs `max_tokens` above 1024: Anthropic's thinking budget is at least 1024 tokens and below `max_tokens` ({max_tokens})"
        )));
    }
    Ok(Some(Thinking {
        kind: "enabled",
        budget_tokens: budget,
    }))
}

pub use crate::error::Untranslatable;

fn image_block(url: &str) -> Block<'_> {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((meta, data)) = rest.split_once(',') {
            let media_type = meta.trim_end_matches(";base64");
            return Block::Image {
                source: ImageSource::Base64 { media_type, data },
            };
        }
    }
    Block::Image {
        source: ImageSource::Url { url },
    }
}

fn content_blocks(content: &Content) -> Vec<Block<'_>> {
    match content {
        Content::Text(t) if t.is_empty() => Vec::new(),
        Content::Text(t) => vec![Block::Text { text: t }],
        Content::Parts(parts) => parts
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(Block::Text { text }),
                Part::ImageUrl { image_url } => Some(image_block(&image_url.url)),
                Part::Other => None,
            })
            .collect(),
    }
}

fn push_turn<'a>(messages: &mut Vec<WireMessage<'a>>, role: &'static str, blocks: Vec<Block<'a>>) {
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
    let mut messages: Vec<WireMessage<'_>> = Vec::new();
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
                // Signed thinking goes first, as Anthropic returned it: a thinking turn
                // that called tools is refused without it.
                let mut blocks: Vec<Block<'_>> = m
                    .thinking_blocks
                    .iter()
                    .flatten()
                    .filter_map(|b| match (b.kind.as_str(), &b.signature, &b.data) {
                        ("thinking", Some(signature), _) => Some(Block::Thinking {
                            thinking: b.thinking.as_deref().unwrap_or(""),
                            signature,
                        }),
                        ("redacted_thinking", _, Some(data)) => {
                            Some(Block::RedactedThinking { data })
                        }
                        _ => None,
                    })
                    .collect();
                blocks.extend(m.content.as_ref().map(content_blocks).unwrap_or_default());
                for call in m.tool_calls.iter().flatten() {
                    let input = raw_arguments(&call.function.arguments).map_err(|e| {
                        Untranslatable(format!(
                            "`messages[{i}].tool_calls`: arguments of `{}` are not JSON: {e}",
                            call.function.name
                        ))
                    })?;
                    blocks.push(Block::ToolUse {
                        id: &call.id,
                        name: &call.function.name,
                        input,
                    });
                }
                push_turn(&mut messages, "assistant", blocks);
            }
            Role::Tool | Role::Function => {
                let id = m
                    .tool_call_id
                    .as_deref()
                    .or(m.name.as_deref())
                    .ok_or_else(|| {
                        Untranslatable(format!(
                            "`messages[{i}]`: a tool message needs `tool_call_id`"
                        ))
                    })?;
                let text = m.content.as_ref().map(Content::text).unwrap_or_default();
                push_turn(
                    &mut messages,
                    "user",
                    vec![Block::ToolResult {
                        tool_use_id: id,
                        content: text,
                    }],
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
            System::Cached([CachedText {
                kind: "text",
                text,
                cache_control: CacheControl { kind: "ephemeral" },
            }])
        } else {
            System::Text(text)
        }
    });
    let tools: Vec<WireTool<'_>> = req
        .tools
        .iter()
        .flatten()
        .map(|t| WireTool {
            name: &t.function.name,
            description: t.function.description.as_deref(),
            input_schema: t.function.parameters.as_ref().map_or(
                Schema::Empty(EmptySchema {
                    kind: "object",
                    properties: Empty {},
                }),
                Schema::Given,
            ),
        })
        .collect();
    let choice = |kind| WireToolChoice {
        kind,
        name: None,
        disable_parallel_tool_use: None,
    };
    let mut tool_choice = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "auto" => Some(choice("auto")),
            "required" => Some(choice("any")),
            "none" => Some(choice("none")),
            other => {
                return Err(Untranslatable(format!(
                    "`tool_choice` `{other}` is not one of auto, required, none"
                )))
            }
        },
        Some(ToolChoice::Named { function }) => Some(WireToolChoice {
            name: Some(&function.name),
            ..choice("tool")
        }),
    };
    if req.parallel_tool_calls == Some(false) && !tools.is_empty() {
        tool_choice
            .get_or_insert_with(|| choice("auto"))
            .disable_parallel_tool_use = Some(true);
    }
    let max_tokens = req.output_cap().unwrap_or(options.default_max_tokens);
    let wire = WireRequest {
        model: upstream_model,
        max_tokens,
        messages,
        system,
        temperature: req.temperature.map(|t| t.clamp(0.0, 1.0)),
        top_p: req.top_p,
        stop_sequences: match &req.stop {
            None => &[],
            Some(Stop::One(s)) => std::slice::from_ref(s),
            Some(Stop::Many(v)) => v,
        },
        stream: req.stream.unwrap_or(false),
        tools,
        tool_choice,
        metadata: req.user.as_deref().map(|user_id| Metadata { user_id }),
        thinking: thinking(req.reasoning_effort.as_deref(), max_tokens)?,
        output_config: output_config(req.response_format.as_ref())?,
        x_fake: req.x_fake.as_ref(),
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
            cache_write_tokens: write,
            ..Usage::default()
        }
    }
}

#[derive(Debug, Deserialize)]
struct WireResponse<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    content: Vec<WireBlock<'a>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: WireUsage,
}

/// A content block of a response (or of `content_block_start`): the fields of every block
/// type side by side, so that tool inputs stay borrowed raw JSON.
#[derive(Debug, Deserialize)]
struct WireBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    /// A `thinking` block's text.
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    /// A `thinking` block's signature.
    #[serde(default, borrow)]
    signature: Option<Cow<'a, str>>,
    /// A `redacted_thinking` block's data.
    #[serde(default, borrow)]
    data: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
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
    let r: WireResponse<'_> = serde_json::from_slice(body)
        .map_err(|e| format!("not an Anthropic Messages response: {e}"))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    let mut signed = Vec::new();
    for block in &r.content {
        match block.kind.as_ref() {
            "text" => text.push_str(block.text.as_deref().unwrap_or("")),
            "thinking" => {
                let thinking = block.thinking.as_deref().unwrap_or("");
                reasoning.push_str(thinking);
                if let Some(signature) = block.signature.as_deref() {
                    signed.push(ThinkingBlockOut::signed(thinking, signature));
                }
            }
            // Encrypted: nothing a client could read, but Anthropic wants it back.
            "redacted_thinking" => {
                if let Some(data) = block.data.as_deref() {
                    signed.push(ThinkingBlockOut::redacted(data));
                }
            }
            "tool_use" => tool_calls.push(ToolCallOut::new(
                None,
                block.id.clone().unwrap_or_default(),
                block.name.clone().unwrap_or_default(),
                block
                    .input
                    .map_or(Cow::Borrowed("{}"), |i| compact_json(i.get())),
            )),
            _ => {}
        }
    }
    let usage = r.usage.normalised();
    let id = format!("chatcmpl-{}", r.id);
    let out = Answer {
        id: &id,
        model,
        content: (!text.is_empty() || tool_calls.is_empty()).then_some(text.as_str()),
        reasoning: (!reasoning.is_empty()).then_some(reasoning.as_str()),
        tool_calls: &tool_calls,
        thinking_blocks: &signed,
        finish: finish_reason(r.stop_reason.as_deref()),
        usage: &usage,
    };
    Ok((out.to_vec(), usage))
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

/// One streamed event: the fields of every event type side by side.
#[derive(Debug, Deserialize)]
struct WireEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    message: Option<WireStart<'a>>,
    #[serde(default)]
    index: u64,
    #[serde(default, borrow)]
    content_block: Option<WireBlock<'a>>,
    #[serde(default, borrow)]
    delta: Option<WireDelta<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default, borrow)]
    error: Option<WireError<'a>>,
}

/// `message` of `message_start`.
#[derive(Debug, Deserialize)]
struct WireStart<'a> {
    #[serde(default, borrow)]
    id: Cow<'a, str>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// `delta` of `content_block_delta` and of `message_delta`.
#[derive(Debug, Deserialize)]
struct WireDelta<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct WireError<'a> {
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
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
        let Ok(v) = serde_json::from_slice::<WireEvent<'_>>(data) else {
            return StreamStep::Continue;
        };
        match v.kind.as_ref() {
            "message_start" => {
                if let Some(msg) = &v.message {
                    self.writer.id = format!("chatcmpl-{}", msg.id);
                    if let Some(u) = &msg.usage {
                        self.usage.merge(u);
                        self.writer.prompt_usage(out, &self.usage.normalised());
                    }
                }
                self.writer.delta(out, Delta::role(), None);
            }
            "content_block_start" => {
                let Some(block) = v.content_block else {
                    return StreamStep::Continue;
                };
                if block.kind == "tool_use" {
                    let tool_index = self.tools_seen;
                    self.tools_seen += 1;
                    self.tool_blocks.push((v.index, tool_index));
                    let call = [ToolCallOut::new(
                        Some(tool_index),
                        block.id.unwrap_or_default(),
                        block.name.unwrap_or_default(),
                        Cow::Borrowed(""),
                    )];
                    self.writer.delta(out, Delta::tool_calls(&call), None);
                } else if let Some(text) = block.text.as_deref().filter(|t| !t.is_empty()) {
                    self.writer.delta(out, Delta::content(text), None);
                } else if let Some(t) = block.thinking.as_deref().filter(|t| !t.is_empty()) {
                    self.writer.delta(out, Delta::reasoning(t), None);
                } else if let (true, Some(data)) =
                    (block.kind == "redacted_thinking", block.data.as_deref())
                {
                    let blocks = [ThinkingBlockOut::redacted(data)];
                    self.writer
                        .delta(out, Delta::thinking_blocks(&blocks), None);
                }
            }
            "content_block_delta" => {
                let Some(delta) = &v.delta else {
                    return StreamStep::Continue;
                };
                match delta.kind.as_deref() {
                    Some("text_delta") => {
                        if let Some(text) = delta.text.as_deref() {
                            self.writer.delta(out, Delta::content(text), None);
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(t) = delta.thinking.as_deref().filter(|t| !t.is_empty()) {
                            self.writer.delta(out, Delta::reasoning(t), None);
                        }
                    }
                    Some("signature_delta") => {
                        if let Some(signature) = delta.signature.as_deref() {
                            let blocks = [ThinkingBlockOut::signed("", signature)];
                            self.writer
                                .delta(out, Delta::thinking_blocks(&blocks), None);
                        }
                    }
                    Some("input_json_delta") => {
                        if let Some(&(_, tool_index)) =
                            self.tool_blocks.iter().find(|(b, _)| *b == v.index)
                        {
                            let call = [ToolCallOut::arguments(
                                tool_index,
                                delta.partial_json.as_deref().unwrap_or(""),
                            )];
                            self.writer.delta(out, Delta::tool_calls(&call), None);
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = &v.usage {
                    self.usage.merge(u);
                }
                self.finish = Some(finish_reason(
                    v.delta.as_ref().and_then(|d| d.stop_reason.as_deref()),
                ));
            }
            "message_stop" => {
                let usage = self.usage.normalised();
                self.writer.finish(
                    out,
                    self.finish.unwrap_or("stop"),
                    self.include_usage.then_some(&usage),
                );
                self.done = true;
                return StreamStep::Done;
            }
            "error" => {
                let message = v
                    .error
                    .and_then(|e| e.message)
                    .map_or_else(|| "upstream error".to_string(), Cow::into_owned);
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
