//! Inbound Anthropic compatibility: `POST /v1/messages` in Anthropic's format, served by any
//! provider. The request becomes an OpenAI chat request (the gateway's own format); the
//! answer, whole or streamed, becomes a Messages API answer again.
//!
//! Format: Anthropic's API reference, "Messages" and "Streaming Messages".
//!
//! Reasoning: `thinking` (`enabled` with `budget_tokens`) becomes chat's `reasoning_effort`
//! (see [`crate::reasoning`]); the answer's `reasoning_content` (whatever the upstream:
//! Anthropic's thinking, Gemini's thought summaries, Ollama's `thinking`, DeepSeek's or
//! vLLM's `reasoning_content`) comes back as a `thinking` block before the text, streamed
//! as `thinking_delta`s. Its `signature` is Anthropic's when the upstream is Anthropic (chat
//! carries it in `thinking_blocks`, the field LiteLLM uses, and the stream as a
//! `signature_delta`), else empty; signed `thinking` and `redacted_thinking` blocks of
//! earlier turns go back upstream the same way (Anthropic refuses a thinking turn that
//! called tools without them), unsigned ones are dropped on the way in. A chat `refusal` is written as text (Anthropic's models refuse in words; its
//! `refusal` stop reason is what `content_filter` becomes).
//!
//! Both directions go through typed structs that borrow from the input (`Cow<str>` for
//! text, `&RawValue` for opaque JSON such as tool inputs and schemas), never through a
//! `serde_json::Value` tree.

use crate::call_order::{CallDelta, CallOrder, Step};
use crate::chunks::{compact_json, FunctionTool};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_types::Usage;
use std::borrow::Cow;

/// Why an Anthropic request cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

#[derive(Deserialize)]
struct InRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    max_tokens: Option<u64>,
    #[serde(borrow)]
    messages: Vec<InMessage<'a>>,
    #[serde(default, borrow)]
    system: Option<&'a RawValue>,
    #[serde(default, borrow)]
    stop_sequences: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, borrow)]
    tools: Option<Vec<InTool<'a>>>,
    #[serde(default, borrow)]
    tool_choice: Option<InToolChoice<'a>>,
    #[serde(default, borrow)]
    metadata: Option<InMetadata<'a>>,
    #[serde(default, borrow)]
    thinking: Option<InThinking<'a>>,
    /// Structured output: `{"format": {"type": "json_schema", "schema": ...}}`.
    #[serde(default, borrow)]
    output_config: Option<InOutputConfig<'a>>,
    /// The structured outputs beta's place for the same format (still accepted).
    #[serde(default, borrow)]
    output_format: Option<InOutputFormat<'a>>,
    /// The testkit's per-request control of its fake upstream, carried over.
    #[serde(default, borrow)]
    x_fake: Option<&'a RawValue>,
}

/// `thinking`: `{"type": "enabled", "budget_tokens": N}` or `{"type": "disabled"}`.
#[derive(Deserialize)]
struct InThinking<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    budget_tokens: Option<u64>,
}

/// `output_config` (what else it holds, such as `effort`, is not read here).
#[derive(Deserialize)]
struct InOutputConfig<'a> {
    #[serde(default, borrow)]
    format: Option<InOutputFormat<'a>>,
}

/// A structured output format: `{"type": "json_schema", "schema": {...}}`.
#[derive(Deserialize)]
struct InOutputFormat<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct InMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    /// A string or a list of blocks (read by [`blocks_of`]).
    #[serde(borrow)]
    content: &'a RawValue,
}

/// A content block: the fields of every block type side by side.
#[derive(Deserialize)]
struct InBlock<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    source: Option<InSource<'a>>,
    #[serde(default, borrow)]
    tool_use_id: Option<Cow<'a, str>>,
    /// `tool_result` content: a string or text blocks.
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct InSource<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    media_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    url: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct InTool<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    input_schema: Option<&'a RawValue>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct InToolChoice<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
struct InMetadata<'a> {
    #[serde(default, borrow)]
    user_id: Option<&'a RawValue>,
}

/// A JSON string, borrowed when it has no escapes.
#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

/// A string or a list of blocks.
enum Blocks<'a> {
    Text(Cow<'a, str>),
    List(Vec<InBlock<'a>>),
}

fn blocks_of(raw: &RawValue) -> Option<Blocks<'_>> {
    match raw.get().as_bytes().first() {
        Some(b'"') => serde_json::from_str::<Str<'_>>(raw.get())
            .ok()
            .map(|s| Blocks::Text(s.0)),
        Some(b'[') => serde_json::from_str(raw.get()).ok().map(Blocks::List),
        _ => None,
    }
}

/// The text of a string or of a list of blocks (their `text`s joined); empty otherwise.
fn text_of(raw: Option<&RawValue>) -> Cow<'_, str> {
    match raw.and_then(blocks_of) {
        Some(Blocks::Text(t)) => t,
        Some(Blocks::List(blocks)) => Cow::Owned(
            blocks
                .iter()
                .filter_map(|b| b.text.as_deref())
                .collect::<String>(),
        ),
        None => Cow::Borrowed(""),
    }
}

fn image_url(source: &InSource<'_>) -> Option<String> {
    match source.kind.as_deref()? {
        "base64" => Some(format!(
            "data:{};base64,{}",
            source.media_type.as_deref()?,
            source.data.as_deref()?
        )),
        "url" => Some(source.url.as_deref()?.to_string()),
        _ => None,
    }
}

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    messages: Vec<OutMessage<'a>>,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<Vec<Cow<'a, str>>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<FunctionTool<'a, &'a RawValue>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OutToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<OutFormat<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x_fake: Option<&'a RawValue>,
}

/// Chat's `response_format` of a structured output request.
#[derive(Serialize)]
struct OutFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    json_schema: OutSchema<'a>,
}

#[derive(Serialize)]
struct OutSchema<'a> {
    name: &'static str,
    schema: &'a RawValue,
    strict: bool,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum OutMessage<'a> {
    System {
        content: Cow<'a, str>,
    },
    User {
        content: Vec<OutPart<'a>>,
    },
    Tool {
        tool_call_id: Option<Cow<'a, str>>,
        content: Cow<'a, str>,
    },
    Assistant {
        content: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<OutCall<'a>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        thinking_blocks: Vec<Signed<'a>>,
    },
}

/// A block of signed thinking, carried through chat as `thinking_blocks` (see the module
/// docs), both ways.
#[derive(Debug, Serialize, Deserialize)]
struct Signed<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    signature: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    data: Option<Cow<'a, str>>,
}

impl Signed<'_> {
    /// The same block, borrowing this one's text.
    fn borrowed(&self) -> Signed<'_> {
        fn borrowed<'b>(t: &'b Option<Cow<'_, str>>) -> Option<Cow<'b, str>> {
            t.as_deref().map(Cow::Borrowed)
        }
        Signed {
            kind: Cow::Borrowed(&self.kind),
            thinking: borrowed(&self.thinking),
            signature: borrowed(&self.signature),
            data: borrowed(&self.data),
        }
    }

    fn into_owned(self) -> Signed<'static> {
        let owned = |t: Option<Cow<'_, str>>| t.map(|t| Cow::Owned(t.into_owned()));
        Signed {
            kind: Cow::Owned(self.kind.into_owned()),
            thinking: owned(self.thinking),
            signature: owned(self.signature),
            data: owned(self.data),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutPart<'a> {
    Text { text: Option<Cow<'a, str>> },
    ImageUrl { image_url: OutImage },
}

#[derive(Serialize)]
struct OutImage {
    url: String,
}

#[derive(Serialize)]
struct OutCall<'a> {
    id: Option<Cow<'a, str>>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: Option<Cow<'a, str>>,
    arguments: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutToolChoice<'a> {
    Mode(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        function: NamedFunction<'a>,
    },
}

#[derive(Serialize)]
struct NamedFunction<'a> {
    name: Option<&'a str>,
}

/// The OpenAI chat request body for an Anthropic Messages request body. Returns the body,
/// the model asked for, and whether it streams.
pub fn to_openai(body: &[u8]) -> Result<(Vec<u8>, String, bool), BadRequest> {
    let r: InRequest<'_> = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("invalid Messages request: {e}")))?;
    let max_tokens = r
        .max_tokens
        .ok_or_else(|| BadRequest("max_tokens: Field required".into()))?;
    let mut messages = Vec::new();
    if let Some(system) = r.system.filter(|s| s.get() != "null") {
        messages.push(OutMessage::System {
            content: text_of(Some(system)),
        });
    }
    for (i, m) in r.messages.iter().enumerate() {
        let blocks = match blocks_of(m.content) {
            Some(Blocks::Text(s)) => vec![InBlock {
                kind: Some(Cow::Borrowed("text")),
                text: Some(s),
                source: None,
                tool_use_id: None,
                content: None,
                id: None,
                name: None,
                input: None,
                thinking: None,
                signature: None,
                data: None,
            }],
            Some(Blocks::List(list)) => list,
            None => {
                return Err(BadRequest(format!(
                    "messages.{i}.content: expected a string or a list of blocks"
                )))
            }
        };
        match m.role.as_ref() {
            "user" => {
                let mut parts = Vec::new();
                for b in blocks {
                    match b.kind.as_deref() {
                        Some("text") => parts.push(OutPart::Text { text: b.text }),
                        Some("image") => {
                            if let Some(url) = b.source.as_ref().and_then(image_url) {
                                parts.push(OutPart::ImageUrl {
                                    image_url: OutImage { url },
                                });
                            }
                        }
                        Some("tool_result") => messages.push(OutMessage::Tool {
                            tool_call_id: b.tool_use_id,
                            content: text_of(b.content),
                        }),
                        _ => {}
                    }
                }
                if !parts.is_empty() {
                    messages.push(OutMessage::User { content: parts });
                }
            }
            "assistant" => {
                let mut content = String::new();
                let mut tool_calls = Vec::new();
                let mut thinking_blocks = Vec::new();
                for b in blocks {
                    match b.kind.as_deref() {
                        Some("text") => content.push_str(b.text.as_deref().unwrap_or("")),
                        // Only Anthropic's own (signed) thinking can go back to a model.
                        Some("thinking")
                            if b.signature.as_deref().is_some_and(|s| !s.is_empty()) =>
                        {
                            thinking_blocks.push(Signed {
                                kind: Cow::Borrowed("thinking"),
                                thinking: b.thinking,
                                signature: b.signature,
                                data: None,
                            })
                        }
                        Some("redacted_thinking") if b.data.is_some() => {
                            thinking_blocks.push(Signed {
                                kind: Cow::Borrowed("redacted_thinking"),
                                thinking: None,
                                signature: None,
                                data: b.data,
                            })
                        }
                        Some("tool_use") => tool_calls.push(OutCall {
                            id: b.id,
                            kind: "function",
                            function: OutFunction {
                                name: b.name,
                                arguments: b
                                    .input
                                    .map_or(Cow::Borrowed("{}"), |i| compact_json(i.get())),
                            },
                        }),
                        _ => {}
                    }
                }
                messages.push(OutMessage::Assistant {
                    content,
                    tool_calls,
                    thinking_blocks,
                });
            }
            other => {
                return Err(BadRequest(format!(
                    "messages.{i}.role: `{other}` is not `user` or `assistant`"
                )))
            }
        }
    }
    let stream = r.stream.unwrap_or(false);
    let reasoning_effort = match &r.thinking {
        None => None,
        Some(t) if t.kind == "disabled" => None,
        Some(t) if t.kind == "enabled" => {
            Some(crate::reasoning::effort(t.budget_tokens.ok_or_else(
                || BadRequest("thinking.enabled.budget_tokens: Field required".into()),
            )?))
        }
        Some(t) => {
            return Err(BadRequest(format!(
                "thinking.type: `{}` is not `enabled` or `disabled`",
                t.kind
            )))
        }
    };
    let tools = r.tools.as_ref().map(|tools| {
        tools
            .iter()
            .map(|t| {
                FunctionTool::new(&t.name, t.description.as_deref(), t.input_schema)
                    .strict(t.strict)
            })
            .collect()
    });
    let response_format = response_format(&r)?;
    let tool_choice = r.tool_choice.as_ref().map(|c| match c.kind.as_deref() {
        Some("any") => OutToolChoice::Mode("required"),
        Some("none") => OutToolChoice::Mode("none"),
        Some("tool") => OutToolChoice::Named {
            kind: "function",
            function: NamedFunction {
                name: c.name.as_deref(),
            },
        },
        _ => OutToolChoice::Mode("auto"),
    });
    let out = OutRequest {
        model: &r.model,
        messages,
        max_tokens,
        temperature: r.temperature,
        top_p: r.top_p,
        stop: r.stop_sequences.filter(|s| !s.is_empty()),
        stream,
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
        tools,
        tool_choice,
        parallel_tool_calls: r
            .tool_choice
            .as_ref()
            .and_then(|c| c.disable_parallel_tool_use)
            .filter(|d| *d)
            .map(|_| false),
        user: r
            .metadata
            .as_ref()
            .and_then(|m| m.user_id)
            .filter(|u| u.get() != "null"),
        reasoning_effort,
        response_format,
        x_fake: r.x_fake,
    };
    let body = serde_json::to_vec(&out).map_err(|e| BadRequest(e.to_string()))?;
    Ok((body, r.model.into_owned(), stream))
}

/// Chat's `response_format` of a request's structured output (`output_config.format`, or
/// the beta's `output_format`): its schema, strict as Anthropic's always is.
fn response_format<'a>(r: &InRequest<'a>) -> Result<Option<OutFormat<'a>>, BadRequest> {
    let (format, at) = match (&r.output_config, &r.output_format) {
        (Some(InOutputConfig { format: Some(f) }), _) => (f, "output_config.format"),
        (_, Some(f)) => (f, "output_format"),
        _ => return Ok(None),
    };
    if format.kind != "json_schema" {
        return Err(BadRequest(format!(
            "{at}.type: `{}` is not `json_schema`",
            format.kind
        )));
    }
    let schema = format
        .schema
        .filter(|s| s.get().starts_with('{'))
        .ok_or_else(|| BadRequest(format!("{at}.schema: a JSON Schema object is required")))?;
    Ok(Some(OutFormat {
        kind: "json_schema",
        json_schema: OutSchema {
            name: "output",
            schema,
            strict: true,
        },
    }))
}

/// The Messages API id of a completion id: `msg_` and the id without `chatcmpl-` (an id
/// that already is Anthropic's, from an Anthropic upstream, kept as it is).
fn message_id(completion_id: &str) -> String {
    let id = completion_id.trim_start_matches("chatcmpl-");
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{id}")
    }
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's `usage`.
#[derive(Serialize)]
struct AnthropicUsage {
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
}

impl From<&Usage> for AnthropicUsage {
    fn from(u: &Usage) -> Self {
        Self {
            input_tokens: u
                .prompt_tokens
                .saturating_sub(u.cached_prompt_tokens + u.cache_write_tokens),
            output_tokens: u.completion_tokens,
            cache_creation_input_tokens: u.cache_write_tokens,
            cache_read_input_tokens: u.cached_prompt_tokens,
        }
    }
}

#[derive(Deserialize)]
struct InCompletion<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Vec<InChoice<'a>>,
}

#[derive(Deserialize)]
struct InChoice<'a> {
    #[serde(default, borrow)]
    message: Option<InAnswer<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct InAnswer<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<InCall<'a>>>,
    #[serde(default, borrow)]
    thinking_blocks: Option<Vec<Signed<'a>>>,
}

#[derive(Deserialize)]
struct InCall<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<InFunction<'a>>,
}

#[derive(Deserialize)]
struct InFunction<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct OutAnswer<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<OutBlock<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: AnthropicUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutBlock<'a> {
    Thinking {
        thinking: &'a str,
        /// Anthropic's, carried in `thinking_blocks`; else empty (see the module docs).
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
    Text {
        text: &'a str,
    },
    ToolUse {
        id: Option<&'a str>,
        name: Option<&'a str>,
        input: Input,
    },
}

/// A tool input: the model's arguments when they are JSON, else `{}`.
#[derive(Serialize)]
#[serde(untagged)]
enum Input {
    Json(Box<RawValue>),
    Empty {},
}

impl Input {
    fn of(arguments: Option<&str>) -> Self {
        arguments
            .and_then(|a| serde_json::from_str::<Box<RawValue>>(a).ok())
            .map_or(Input::Empty {}, Input::Json)
    }
}

/// The Messages API answer for an OpenAI `chat.completion` body.
pub fn from_openai(body: &[u8], model: &str) -> Result<Vec<u8>, String> {
    let v: InCompletion<'_> =
        serde_json::from_slice(body).map_err(|e| format!("invalid chat completion: {e}"))?;
    let choice = v.choices.first();
    let msg = choice.and_then(|c| c.message.as_ref());
    let mut content = Vec::new();
    let signed = msg
        .and_then(|m| m.thinking_blocks.as_deref())
        .unwrap_or_default();
    for b in signed {
        match (b.kind.as_ref(), &b.data) {
            ("redacted_thinking", Some(data)) => content.push(OutBlock::RedactedThinking { data }),
            _ => content.push(OutBlock::Thinking {
                thinking: b.thinking.as_deref().unwrap_or(""),
                signature: b.signature.as_deref().unwrap_or(""),
            }),
        }
    }
    if let Some(t) = msg
        .and_then(|m| m.reasoning_content.as_deref())
        .filter(|t| !t.is_empty() && signed.is_empty())
    {
        content.push(OutBlock::Thinking {
            thinking: t,
            signature: "",
        });
    }
    // A refusal is the model's own words: Anthropic's models write theirs as text.
    for t in [
        msg.and_then(|m| m.content.as_deref()),
        msg.and_then(|m| m.refusal.as_deref()),
    ]
    .into_iter()
    .flatten()
    .filter(|t| !t.is_empty())
    {
        content.push(OutBlock::Text { text: t });
    }
    for call in msg
        .and_then(|m| m.tool_calls.as_ref())
        .into_iter()
        .flatten()
    {
        let function = call.function.as_ref();
        content.push(OutBlock::ToolUse {
            id: call.id.as_deref(),
            name: function.and_then(|f| f.name.as_deref()),
            input: Input::of(function.and_then(|f| f.arguments.as_deref())),
        });
    }
    let usage = Usage::from_response(body).unwrap_or_default();
    let id = v.id.as_deref().unwrap_or("sluice");
    let out = OutAnswer {
        id: message_id(id),
        kind: "message",
        role: "assistant",
        model,
        content,
        stop_reason: stop_reason(choice.and_then(|c| c.finish_reason.as_deref())),
        stop_sequence: None,
        usage: (&usage).into(),
    };
    serde_json::to_vec(&out).map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// Anthropic's error `type` for a gateway (OpenAI-style) error type.
fn error_kind(kind: &str) -> &str {
    match kind {
        "not_found_error"
        | "authentication_error"
        | "permission_error"
        | "rate_limit_error"
        | "request_too_large"
        | "invalid_request_error" => kind,
        "timeout_error" | "upstream_error" | "server_error" | "service_unavailable" => "api_error",
        _ => "invalid_request_error",
    }
}

fn error_out<'a>(kind: &'a str, message: &'a str) -> ErrorOut<'a> {
    ErrorOut {
        kind: "error",
        error: ErrorDetail {
            kind: error_kind(kind),
            message,
        },
    }
}

/// An Anthropic error body.
pub fn error_body(kind: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&error_out(kind, message)).unwrap_or_default()
}

#[derive(Debug, PartialEq, Eq)]
enum Block {
    None,
    Thinking(usize),
    Text(usize),
    Tool(usize),
}

/// Turns a stream of OpenAI `chat.completion.chunk` events into Anthropic's event sequence.
#[derive(Debug)]
pub struct StreamConverter {
    model: String,
    started: bool,
    block: Block,
    next_index: usize,
    /// OpenAI tool-call index → Anthropic block index.
    tools: Vec<(u64, usize)>,
    /// The tool calls put in order: one block at a time, text and thinking between them.
    calls: CallOrder<Said<'static>>,
    finish: Option<String>,
    usage: Usage,
    /// The prompt's tokens as sluice estimated them, for `message_start` when the upstream
    /// has not counted them by its first chunk.
    input_estimate: u64,
    done: bool,
}

/// One Anthropic stream event.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart {
        message: StartMessage<'a>,
    },
    ContentBlockStart {
        index: usize,
        content_block: OutBlock<'a>,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta<'a>,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: StopDelta,
        usage: AnthropicUsage,
    },
    MessageStop,
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "message_start",
            Self::ContentBlockStart { .. } => "content_block_start",
            Self::ContentBlockDelta { .. } => "content_block_delta",
            Self::ContentBlockStop { .. } => "content_block_stop",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageStop => "message_stop",
        }
    }
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<&'a str>,
    stop_sequence: Option<&'a str>,
    usage: AnthropicUsage,
}

/// `delta` of `content_block_delta`, tagged with its wire type.
#[derive(Serialize)]
#[serde(tag = "type")]
enum BlockDelta<'a> {
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
}

fn write_event(out: &mut Vec<u8>, name: &str, data: &impl Serialize) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Writing plain structs of strings and numbers into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}

fn event(out: &mut Vec<u8>, e: &Event<'_>) {
    write_event(out, e.name(), e);
}

#[derive(Deserialize)]
struct InChunk<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Vec<InChunkChoice<'a>>,
    #[serde(default, borrow)]
    error: Option<InError<'a>>,
}

#[derive(Deserialize)]
struct InChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<InDelta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct InDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<CallDelta<'a>>>,
    #[serde(default, borrow)]
    thinking_blocks: Option<Vec<Signed<'a>>>,
}

/// What a chunk carries besides tool calls, written in its turn (held while a call is open).
#[derive(Debug)]
enum Said<'a> {
    Thinking(Cow<'a, str>),
    Signed(Signed<'a>),
    Text(Cow<'a, str>),
}

impl Said<'_> {
    fn into_owned(self) -> Said<'static> {
        match self {
            Self::Thinking(t) => Said::Thinking(Cow::Owned(t.into_owned())),
            Self::Signed(b) => Said::Signed(b.into_owned()),
            Self::Text(t) => Said::Text(Cow::Owned(t.into_owned())),
        }
    }
}

#[derive(Deserialize)]
struct InError<'a> {
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
}

impl StreamConverter {
    /// A converter answering `model`.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            started: false,
            block: Block::None,
            next_index: 0,
            tools: Vec::new(),
            calls: CallOrder::default(),
            finish: None,
            usage: Usage::default(),
            input_estimate: 0,
            done: false,
        }
    }

    /// `message_start` says the prompt is `tokens` long unless the upstream's first chunk
    /// counts it (the exact figure comes with `message_delta` in any case).
    pub fn input_estimate(mut self, tokens: u64) -> Self {
        self.input_estimate = tokens;
        self
    }

    /// Whether the stream has been closed with `message_stop`.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn start(&mut self, out: &mut Vec<u8>, id: &str) {
        if self.started {
            return;
        }
        self.started = true;
        // The upstream's count when its first chunk has one, sluice's estimate if not.
        let mut usage = AnthropicUsage::from(&self.usage);
        if self.usage.prompt_tokens == 0 {
            usage.input_tokens = self.input_estimate;
        }
        usage.output_tokens = 0;
        event(
            out,
            &Event::MessageStart {
                message: StartMessage {
                    id: message_id(id),
                    kind: "message",
                    role: "assistant",
                    model: &self.model,
                    content: [],
                    stop_reason: None,
                    stop_sequence: None,
                    usage,
                },
            },
        );
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        let index = match self.block {
            Block::None => return,
            Block::Thinking(i) | Block::Text(i) | Block::Tool(i) => i,
        };
        event(out, &Event::ContentBlockStop { index });
        self.block = Block::None;
    }

    /// Writes one step of the ordered tool calls: a `tool_use` block's start, a piece of its
    /// input, its stop.
    fn on_call_step(&mut self, out: &mut Vec<u8>, step: Step<'_, Said<'_>>) {
        match step {
            Step::Begin { call, id, name } => {
                self.close_block(out);
                let index = self.next_index;
                self.next_index += 1;
                self.tools.push((call, index));
                self.block = Block::Tool(index);
                let content_block = OutBlock::ToolUse {
                    id: id.as_deref(),
                    name: name.as_deref(),
                    input: Input::Empty {},
                };
                event(
                    out,
                    &Event::ContentBlockStart {
                        index,
                        content_block,
                    },
                );
            }
            Step::Args { call, piece } => {
                if let Some(&(_, index)) = self.tools.iter().find(|(t, _)| *t == call) {
                    let delta = BlockDelta::InputJson {
                        partial_json: &piece,
                    };
                    event(out, &Event::ContentBlockDelta { index, delta });
                }
            }
            Step::End { call } => {
                let open = self.tools.iter().find(|(t, _)| *t == call).map(|t| t.1);
                if matches!(self.block, Block::Tool(i) if Some(i) == open) {
                    self.close_block(out);
                }
            }
            Step::Other(said) => self.write_said(out, &said),
        }
    }

    /// Writes what a chunk said besides calls now, or holds it until the open call ends.
    fn say(&mut self, out: &mut Vec<u8>, said: Said<'_>) {
        if !self.calls.is_open() {
            return self.write_said(out, &said);
        }
        let mut calls = std::mem::take(&mut self.calls);
        calls.on_other(said.into_owned(), &mut |step| self.on_call_step(out, step));
        self.calls = calls;
    }

    /// Writes text or thinking into its block (opening it), or a signature.
    fn write_said(&mut self, out: &mut Vec<u8>, said: &Said<'_>) {
        match said {
            Said::Thinking(thinking) => {
                let index = self.open(out, Block::Thinking);
                let delta = BlockDelta::Thinking { thinking };
                event(out, &Event::ContentBlockDelta { index, delta });
            }
            Said::Signed(b) => self.on_signed(out, b),
            Said::Text(text) => {
                let index = self.open(out, Block::Text);
                let delta = BlockDelta::Text { text };
                event(out, &Event::ContentBlockDelta { index, delta });
            }
        }
    }

    /// Ends every tool call, open or waiting.
    fn flush_calls(&mut self, out: &mut Vec<u8>) {
        let mut calls = std::mem::take(&mut self.calls);
        calls.flush(&mut |step| self.on_call_step(out, step));
        self.calls = calls;
    }

    /// The index of the open block of kind `kind` (`Block::Text` or `Block::Thinking`),
    /// closing another one and opening it if need be.
    fn open(&mut self, out: &mut Vec<u8>, kind: fn(usize) -> Block) -> usize {
        let probe = kind(0);
        match (&self.block, &probe) {
            (Block::Text(i), Block::Text(_)) | (Block::Thinking(i), Block::Thinking(_)) => {
                return *i
            }
            _ => {}
        }
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.block = kind(index);
        let content_block = match probe {
            Block::Thinking(_) => OutBlock::Thinking {
                thinking: "",
                signature: "",
            },
            _ => OutBlock::Text { text: "" },
        };
        event(
            out,
            &Event::ContentBlockStart {
                index,
                content_block,
            },
        );
        index
    }

    /// Signed thinking: a signature ends the open thinking block (`signature_delta`), a
    /// redacted block is a block of its own.
    fn on_signed(&mut self, out: &mut Vec<u8>, b: &Signed<'_>) {
        match (b.kind.as_ref(), b.signature.as_deref(), b.data.as_deref()) {
            ("thinking", Some(signature), _) => {
                let index = self.open(out, Block::Thinking);
                let delta = BlockDelta::Signature { signature };
                event(out, &Event::ContentBlockDelta { index, delta });
            }
            ("redacted_thinking", _, Some(data)) => {
                self.close_block(out);
                let index = self.next_index;
                self.next_index += 1;
                let content_block = OutBlock::RedactedThinking { data };
                event(
                    out,
                    &Event::ContentBlockStart {
                        index,
                        content_block,
                    },
                );
                event(out, &Event::ContentBlockStop { index });
            }
            _ => {}
        }
    }

    /// Feeds the `data` of one OpenAI SSE event; appends Anthropic events to `out`.
    pub fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if data == b"[DONE]" {
            self.finish_stream(out);
            return;
        }
        let Ok(v) = serde_json::from_slice::<InChunk<'_>>(data) else {
            return;
        };
        if let Some(err) = &v.error {
            let message = err.message.as_deref().unwrap_or("upstream error");
            let kind = err.kind.as_deref().unwrap_or("api_error");
            write_event(out, "error", &error_out(kind, message));
            self.done = true;
            return;
        }
        if let Some(u) = Usage::from_response(data) {
            self.usage = u;
        }
        self.start(out, v.id.as_deref().unwrap_or("sluice"));
        let Some(choice) = v.choices.first() else {
            return;
        };
        let delta = choice.delta.as_ref();
        if let Some(d) = delta {
            self.on_delta(out, d);
        }
        if let Some(f) = choice.finish_reason.as_deref() {
            self.finish = Some(f.to_string());
            // The choice is over: so is every call.
            self.flush_calls(out);
        }
    }

    /// One chunk's delta: thinking, its signature, text (a refusal too: Anthropic's models
    /// write theirs as text), then tool calls.
    fn on_delta(&mut self, out: &mut Vec<u8>, d: &InDelta<'_>) {
        fn some<'b>(t: &'b Option<Cow<'_, str>>) -> Option<&'b str> {
            t.as_deref().filter(|t| !t.is_empty())
        }
        if let Some(t) = some(&d.reasoning_content) {
            self.say(out, Said::Thinking(Cow::Borrowed(t)));
        }
        for b in d.thinking_blocks.as_deref().unwrap_or_default() {
            self.say(out, Said::Signed(b.borrowed()));
        }
        for text in [some(&d.content), some(&d.refusal)].into_iter().flatten() {
            self.say(out, Said::Text(Cow::Borrowed(text)));
        }
        let mut calls = std::mem::take(&mut self.calls);
        for call in d.tool_calls.iter().flatten() {
            calls.on_delta(call.piece(), &mut |step| self.on_call_step(out, step));
        }
        self.calls = calls;
    }

    /// Closes the stream: the open block, `message_delta` with the stop reason and usage,
    /// `message_stop`.
    pub fn finish_stream(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start(out, "sluice");
        self.flush_calls(out);
        self.close_block(out);
        // An upstream that never counted (one that ignores `include_usage`) leaves the
        // estimate standing: message_delta's usage replaces message_start's in the SDKs.
        let mut usage = AnthropicUsage::from(&self.usage);
        if self.usage.prompt_tokens == 0 {
            usage.input_tokens = self.input_estimate;
        }
        event(
            out,
            &Event::MessageDelta {
                delta: StopDelta {
                    stop_reason: stop_reason(self.finish.as_deref()),
                    stop_sequence: None,
                },
                usage,
            },
        );
        event(out, &Event::MessageStop);
        self.done = true;
    }
}

impl crate::reframe::Reframe for StreamConverter {
    fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        StreamConverter::on_event(self, data, out);
    }

    fn is_done(&self) -> bool {
        StreamConverter::is_done(self)
    }

    fn finish_stream(&mut self, out: &mut Vec<u8>) {
        StreamConverter::finish_stream(self, out);
    }

    /// `message_start` carries it (if it has not gone yet), as Anthropic's own does.
    fn on_prompt_usage(&mut self, usage: Usage) {
        if !self.started {
            self.usage = usage;
        }
    }
}
