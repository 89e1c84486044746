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
//! role, with `tool_name`: the function of the call it answers), `tools`; `temperature`,
//! `top_p`, `seed`, `stop`, `max_tokens` → `options` (`num_predict` for the cap); `response_format` JSON → `format: "json"`, a JSON schema →
//! `format: schema`; `keep_alive` from the request body or the provider's config;
//! `reasoning_effort` → `think: true` (`false` for `none`). Back: `message.content`,
//! `message.thinking` as `reasoning_content`, `tool_calls` (ids made up: Ollama sends
//! none), `done_reason`
//! (`length` → `length`, else `stop`, `tool_calls` when tools were called), and
//! `prompt_eval_count`/`eval_count` as usage. Not mapped: `n`, `logprobs` (no Ollama
//! counterpart); image URLs that are not data URLs (Ollama takes only inline images).

use crate::chunks::{
    compact_json, completion, embedding_list, made_up_call_id, ChunkWriter, Delta, FunctionTool,
    ToolCallOut,
};
use crate::client::UpstreamBody;
use crate::json::{raw_arguments, raw_array, EmbedRequest};
use crate::outbound::{get, post, static_headers, uri};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
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
pub const PROVIDER_TYPE: &str = "ollama";

/// The `ollama` adapter: URIs and headers built once at start.
#[derive(Debug)]
pub struct Ollama {
    chat_uri: Uri,
    embed_uri: Uri,
    /// `GET {base_url}/api/tags`, the health check's model list.
    tags_uri: Uri,
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
            tags_uri: uri(config, "/api/tags")?,
            headers: static_headers(config, auth)?,
            keep_alive: config.keep_alive.clone(),
        })
    }

    /// `GET {base_url}/api/tags`: the models the server has.
    pub fn list_models(&self, request_id: &HeaderValue) -> Request<UpstreamBody> {
        get(&self.tags_uri, &self.headers, request_id)
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

pub use crate::error::Untranslatable;

#[derive(Serialize)]
struct WireChatRequest<'a> {
    model: &'a str,
    messages: Vec<OutMessage<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Options::is_empty")]
    options: Options<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<FunctionTool<'a, &'a Value>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<Format<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_alive: Option<KeepAlive<'a>>,
    /// `think`: `true`, or `false` for `reasoning_effort: "none"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    think: Option<bool>,
    /// The testkit's per-request control of its fake upstream, carried over (see
    /// [`ChatCompletionRequest::x_fake`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    x_fake: Option<&'a Value>,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: Cow<'a, str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<OutCall<'a>>>,
    /// A tool message's function: which call it answers, as Ollama tells them apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_name: Option<&'a str>,
}

#[derive(Serialize)]
struct OutCall<'a> {
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    arguments: &'a RawValue,
}

#[derive(Serialize, Default)]
struct Options<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_predict: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a [String]>,
}

impl Options<'_> {
    fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.seed.is_none()
            && self.num_predict.is_none()
            && self.stop.is_none()
    }
}

/// `format`: `"json"`, or a JSON schema.
#[derive(Serialize)]
#[serde(untagged)]
enum Format<'a> {
    Json(&'static str),
    Schema(&'a Value),
}

/// `keep_alive`: the client's (any JSON, as sent) or the provider's default.
#[derive(Serialize)]
#[serde(untagged)]
enum KeepAlive<'a> {
    Client(&'a RawValue),
    Default(&'a str),
}

/// Reads `keep_alive` from a raw OpenAI request body (a field OpenAI does not have, which
/// Ollama users send).
fn keep_alive_of(body: &[u8]) -> Option<&RawValue> {
    #[derive(Deserialize)]
    struct K<'a> {
        #[serde(default, borrow)]
        keep_alive: Option<&'a RawValue>,
    }
    serde_json::from_slice::<K<'_>>(body)
        .ok()
        .and_then(|k| k.keep_alive)
}

fn keep_alive<'a>(client: Option<&'a RawValue>, default: Option<&'a str>) -> Option<KeepAlive<'a>> {
    client
        .map(KeepAlive::Client)
        .or(default.map(KeepAlive::Default))
}

/// The `/api/chat` body for `req` (whose raw body is `raw`), sent to `upstream_model`.
pub fn to_chat_request(
    req: &ChatCompletionRequest,
    raw: &[u8],
    upstream_model: &str,
    default_keep_alive: Option<&str>,
) -> Result<Vec<u8>, Untranslatable> {
    let mut messages = Vec::with_capacity(req.messages.len());
    let mut call_names: Vec<(&str, &str)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role {
            Role::System | Role::Developer => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool | Role::Function => "tool",
        };
        let mut images = Vec::new();
        let content = match &m.content {
            None => Cow::Borrowed(""),
            Some(Content::Text(t)) => Cow::Borrowed(t.as_str()),
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
                                .map(|(_, d)| d)
                                .ok_or_else(|| {
                                    Untranslatable(format!(
                                        "`messages[{i}]`: Ollama takes images only inline, as data URLs"
                                    ))
                                })?;
                            images.push(data);
                        }
                        Part::Other => {}
                    }
                }
                Cow::Owned(text)
            }
        };
        let tool_calls = match &m.tool_calls {
            None => None,
            Some(calls) => Some(
                calls
                    .iter()
                    .map(|c| {
                        let arguments = raw_arguments(&c.function.arguments).map_err(|e| {
                            Untranslatable(format!(
                                "`messages[{i}].tool_calls`: arguments are not JSON: {e}"
                            ))
                        })?;
                        Ok(OutCall {
                            function: OutFunction {
                                name: &c.function.name,
                                arguments,
                            },
                        })
                    })
                    .collect::<Result<Vec<_>, Untranslatable>>()?,
            ),
        };
        for c in m.tool_calls.iter().flatten() {
            call_names.push((&c.id, &c.function.name));
        }
        let tool_name = match m.role {
            Role::Tool | Role::Function => m
                .tool_call_id
                .as_deref()
                .and_then(|id| call_names.iter().find(|(c, _)| *c == id))
                .map(|&(_, name)| name)
                .or(m.name.as_deref()),
            _ => None,
        };
        messages.push(OutMessage {
            role,
            content,
            images,
            tool_calls,
            tool_name,
        });
    }
    let tools = req
        .tools
        .as_ref()
        .filter(|_| !matches!(&req.tool_choice, Some(ToolChoice::Mode(m)) if m == "none"))
        .map(|tools| {
            tools
                .iter()
                .map(|t| {
                    FunctionTool::new(
                        &t.function.name,
                        t.function.description.as_deref(),
                        t.function.parameters.as_ref(),
                    )
                })
                .collect()
        });
    let format_spec = req.response_format.as_ref();
    let format = match format_spec
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
    {
        Some("json_object") => Some(Format::Json("json")),
        Some("json_schema") => format_spec
            .and_then(|f| f.get("json_schema"))
            .and_then(|s| s.get("schema"))
            .map(Format::Schema),
        _ => None,
    };
    let wire = WireChatRequest {
        model: upstream_model,
        messages,
        stream: req.stream.unwrap_or(false),
        options: Options {
            temperature: req.temperature,
            top_p: req.top_p,
            seed: req.seed,
            num_predict: req.output_cap(),
            stop: req.stop.as_ref().map(|s| match s {
                Stop::One(s) => std::slice::from_ref(s),
                Stop::Many(v) => v.as_slice(),
            }),
        },
        tools,
        format,
        keep_alive: keep_alive(keep_alive_of(raw), default_keep_alive),
        think: req.reasoning_effort.as_deref().map(|e| e != "none"),
        x_fake: req.x_fake.as_ref(),
    };
    serde_json::to_vec(&wire).map_err(|e| Untranslatable(e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
struct WireMessage<'a> {
    #[serde(default, borrow)]
    content: Cow<'a, str>,
    /// The model's reasoning, when `think` was on.
    #[serde(default, borrow)]
    thinking: Cow<'a, str>,
    #[serde(default, borrow)]
    tool_calls: Vec<WireToolCall<'a>>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall<'a> {
    #[serde(borrow)]
    function: WireFunction<'a>,
}

#[derive(Debug, Deserialize)]
struct WireFunction<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    arguments: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct WireChat<'a> {
    #[serde(default, borrow)]
    message: WireMessage<'a>,
    #[serde(default)]
    done: bool,
    #[serde(default, borrow)]
    done_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
}

impl WireChat<'_> {
    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_eval_count.unwrap_or(0),
            completion_tokens: self.eval_count.unwrap_or(0),
            ..Usage::default()
        }
    }
}

/// OpenAI tool calls for Ollama's (which have no ids: [`made_up_call_id`] stands in), numbered from
/// `first_index`.
fn tool_calls<'a>(calls: &'a [WireToolCall<'a>], first_index: usize) -> Vec<ToolCallOut<'a>> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            ToolCallOut::new(
                Some(first_index + i),
                Cow::Owned(made_up_call_id()),
                Cow::Borrowed(&c.function.name),
                c.function
                    .arguments
                    .map_or(Cow::Borrowed("{}"), |a| compact_json(a.get())),
            )
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
    let r: WireChat<'_> =
        serde_json::from_slice(body).map_err(|e| format!("not an Ollama chat response: {e}"))?;
    if let Some(e) = r.error {
        return Err(e.into_owned());
    }
    let usage = r.usage();
    let mut calls = tool_calls(&r.message.tool_calls, 0);
    // A whole message's tool calls carry no `index`.
    for call in &mut calls {
        call.index = None;
    }
    let reason = finish(r.done_reason.as_deref(), !calls.is_empty());
    let body = completion(
        "ollama",
        model,
        &r.message.content,
        &r.message.thinking,
        &calls,
        reason,
        &usage,
    );
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
        let Ok(r) = serde_json::from_slice::<WireChat<'_>>(line) else {
            return LineStep::Error("Ollama sent a line that is not JSON".into());
        };
        if let Some(e) = r.error {
            return LineStep::Error(e.into_owned());
        }
        if !self.started {
            self.started = true;
            self.writer.delta(out, Delta::role(), None);
        }
        if !r.message.thinking.is_empty() {
            self.writer
                .delta(out, Delta::reasoning(&r.message.thinking), None);
        }
        if !r.message.content.is_empty() {
            self.writer
                .delta(out, Delta::content(&r.message.content), None);
        }
        if !r.message.tool_calls.is_empty() {
            let calls = tool_calls(&r.message.tool_calls, self.tools_seen);
            self.tools_seen += calls.len();
            self.writer.delta(out, Delta::tool_calls(&calls), None);
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

#[derive(Serialize)]
struct WireEmbedRequest<'a> {
    model: &'a str,
    input: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_alive: Option<KeepAlive<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x_fake: Option<&'a RawValue>,
}

/// The `/api/embed` body for an OpenAI embeddings request body.
pub fn to_embed_request(
    raw: &[u8],
    upstream_model: &str,
    default_keep_alive: Option<&str>,
) -> Result<Vec<u8>, Untranslatable> {
    let r: EmbedRequest<'_> =
        serde_json::from_slice(raw).map_err(|e| Untranslatable(e.to_string()))?;
    if r.texts().is_none() {
        return Err(Untranslatable(
            "Ollama embeds text only: `input` must be a string or an array of strings".into(),
        ));
    }
    let body = WireEmbedRequest {
        model: upstream_model,
        // Checked to be text above; passed on as the client wrote it.
        input: r.input,
        dimensions: r.dimensions,
        keep_alive: keep_alive(r.keep_alive, default_keep_alive),
        x_fake: r.x_fake,
    };
    serde_json::to_vec(&body).map_err(|e| Untranslatable(e.to_string()))
}

/// An OpenAI embeddings list for an `/api/embed` response.
pub fn from_embed_response(body: &[u8], model: &str) -> Result<(Vec<u8>, Usage), String> {
    #[derive(Deserialize)]
    struct Resp<'a> {
        #[serde(borrow)]
        embeddings: Vec<&'a RawValue>,
        #[serde(default)]
        prompt_eval_count: Option<u64>,
    }
    let r: Resp<'_> =
        serde_json::from_slice(body).map_err(|e| format!("not an Ollama embed response: {e}"))?;
    let tokens = r.prompt_eval_count.unwrap_or(0);
    // The vectors pass through as the upstream wrote them (compacted), never parsed into
    // numbers and printed again.
    let vectors = r
        .embeddings
        .iter()
        .map(|e| raw_array(e))
        .collect::<Result<Vec<_>, _>>()?;
    let usage = Usage {
        prompt_tokens: tokens,
        ..Usage::default()
    };
    Ok((embedding_list(vectors, model, tokens), usage))
}

#[cfg(test)]
mod tests;
