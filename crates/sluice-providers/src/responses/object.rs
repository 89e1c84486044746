//! The Responses API `response` object: what the request echoes into it ([`Echo`]), its
//! output items, status and usage, written the same way for whole answers and for the
//! snapshots a stream carries.

use serde::Serialize;
use serde_json::value::RawValue;
use sluice_types::Usage;

/// The request's settings, echoed back in every `response` object.
#[derive(Debug, Clone)]
pub struct Echo {
    /// The response's id, `resp_` and 32 hex digits, made when the request is read.
    pub id: String,
    /// `previous_response_id`.
    pub previous_response_id: Option<String>,
    /// `store` (default true).
    pub store: bool,
    /// The model the client asked for.
    pub model: String,
    /// `instructions`.
    pub instructions: Option<String>,
    /// `tools`, as the client sent them (`[]` when absent).
    pub tools: Box<RawValue>,
    /// `tool_choice`, as sent (`"auto"` when absent).
    pub tool_choice: Box<RawValue>,
    /// `parallel_tool_calls` (default true).
    pub parallel_tool_calls: bool,
    /// `temperature`.
    pub temperature: Option<f64>,
    /// `top_p`.
    pub top_p: Option<f64>,
    /// `max_output_tokens`.
    pub max_output_tokens: Option<u64>,
    /// `metadata`, as sent (`{}` when absent).
    pub metadata: Box<RawValue>,
    /// `text`, as sent (`{"format":{"type":"text"}}` when absent).
    pub text: Box<RawValue>,
    /// `reasoning.effort`.
    pub effort: Option<String>,
    /// `reasoning.summary`.
    pub summary: Option<String>,
    /// `user`.
    pub user: Option<String>,
    /// `include` has `reasoning.encrypted_content`: reasoning items carry their signed
    /// thinking (see [`ENCRYPTED_PREFIX`]).
    pub encrypted_reasoning: bool,
}

/// How a reasoning item's `encrypted_content` begins when it is sluice's: the signed
/// thinking an Anthropic upstream returned (its `thinking_blocks`, JSON) follows. Sent back
/// in `input`, it goes back to the model with the turn it belongs to.
pub const ENCRYPTED_PREFIX: &str = "sluice-thinking:";

/// Where a response stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Streaming, not finished.
    InProgress,
    /// Finished normally (a stop or tool calls).
    Completed,
    /// Cut short; the reason is `max_output_tokens` or `content_filter`.
    Incomplete(&'static str),
    /// Failed midway.
    Failed,
}

impl Status {
    /// The status a chat `finish_reason` ends a response with.
    pub fn of_finish(finish: Option<&str>) -> Self {
        match finish {
            Some("length") => Self::Incomplete("max_output_tokens"),
            Some("content_filter") => Self::Incomplete("content_filter"),
            _ => Self::Completed,
        }
    }

    /// The `status` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Incomplete(_) => "incomplete",
            Self::Failed => "failed",
        }
    }

    /// The status of an output item once the response ends so.
    pub fn item_status(self) -> &'static str {
        match self {
            Self::Incomplete(_) => "incomplete",
            Self::InProgress => "in_progress",
            _ => "completed",
        }
    }
}

/// One output item.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    /// The model's reasoning (a chat answer's `reasoning_content`), as one summary part.
    Reasoning {
        /// `rs_...`.
        id: String,
        /// Its summary parts.
        summary: Vec<SummaryText>,
        /// Its signed thinking, when asked for (`include`), see [`ENCRYPTED_PREFIX`].
        #[serde(skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<String>,
        /// The signed thinking (chat `thinking_blocks`, JSON), kept for the stored
        /// conversation.
        #[serde(skip)]
        signed: Option<Box<RawValue>>,
    },
    /// The assistant's message.
    Message {
        /// `msg_...`.
        id: String,
        /// `in_progress`, `completed` or `incomplete`.
        status: &'static str,
        /// Always `assistant`.
        role: &'static str,
        /// Its parts.
        content: Vec<ContentPart>,
    },
    /// A call of a function tool.
    FunctionCall {
        /// `fc_...`.
        id: String,
        /// The id a `function_call_output` answers.
        call_id: String,
        /// The function's name.
        name: String,
        /// Its arguments, JSON text.
        arguments: String,
        /// `in_progress` or `completed`.
        status: &'static str,
    },
}

impl OutputItem {
    /// The item's id.
    pub fn id(&self) -> &str {
        match self {
            Self::Reasoning { id, .. }
            | Self::Message { id, .. }
            | Self::FunctionCall { id, .. } => id,
        }
    }

    /// Sets the item's status (reasoning items have none).
    pub fn set_status(&mut self, to: &'static str) {
        match self {
            Self::Message { status, .. } | Self::FunctionCall { status, .. } => *status = to,
            Self::Reasoning { .. } => {}
        }
    }
}

/// A part of a reasoning item's summary.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryText {
    /// Always `summary_text`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The text.
    pub text: String,
}

impl SummaryText {
    /// A summary part of `text`.
    pub fn new(text: String) -> Self {
        Self {
            kind: "summary_text",
            text,
        }
    }
}

/// A part of the assistant's message.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text.
    OutputText {
        /// The text.
        text: String,
        /// Always empty: chat answers carry no annotations.
        annotations: [(); 0],
        /// Always empty.
        logprobs: [(); 0],
    },
    /// The model refused.
    Refusal {
        /// Its explanation.
        refusal: String,
    },
}

impl ContentPart {
    /// A text part.
    pub fn text(text: String) -> Self {
        Self::OutputText {
            text,
            annotations: [],
            logprobs: [],
        }
    }
}

#[derive(Serialize)]
struct ResponseUsage {
    input_tokens: u64,
    input_tokens_details: InputDetails,
    output_tokens: u64,
    output_tokens_details: OutputDetails,
    total_tokens: u64,
}

#[derive(Serialize)]
struct InputDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct OutputDetails {
    reasoning_tokens: u64,
}

impl From<&Usage> for ResponseUsage {
    fn from(u: &Usage) -> Self {
        Self {
            input_tokens: u.prompt_tokens,
            input_tokens_details: InputDetails {
                cached_tokens: u.cached_prompt_tokens,
            },
            output_tokens: u.completion_tokens,
            output_tokens_details: OutputDetails {
                reasoning_tokens: u.reasoning_tokens,
            },
            total_tokens: u.prompt_tokens + u.completion_tokens,
        }
    }
}

#[derive(Serialize)]
struct Incomplete {
    reason: &'static str,
}

/// `error` of a failed response.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Failure<'a> {
    /// A machine-readable code.
    pub code: &'a str,
    /// What went wrong.
    pub message: &'a str,
}

#[derive(Serialize)]
struct Reasoning<'a> {
    effort: Option<&'a str>,
    summary: Option<&'a str>,
}

/// A `response` object, borrowed from its parts.
#[derive(Serialize)]
pub struct ResponseObject<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    error: Option<Failure<'a>>,
    incomplete_details: Option<Incomplete>,
    instructions: Option<&'a str>,
    max_output_tokens: Option<u64>,
    model: &'a str,
    output: &'a [OutputItem],
    output_text: String,
    parallel_tool_calls: bool,
    previous_response_id: Option<&'a str>,
    reasoning: Reasoning<'a>,
    store: bool,
    temperature: Option<f64>,
    text: &'a RawValue,
    tool_choice: &'a RawValue,
    tools: &'a RawValue,
    top_p: Option<f64>,
    truncation: &'static str,
    usage: Option<ResponseUsage>,
    user: Option<&'a str>,
    metadata: &'a RawValue,
}

/// What a response is made of, besides the request's echo.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Where it stands.
    pub status: Status,
    /// Its output items.
    pub output: &'a [OutputItem],
    /// Its usage, once known.
    pub usage: Option<&'a Usage>,
    /// Why it failed.
    pub error: Option<Failure<'a>>,
}

impl<'a> ResponseObject<'a> {
    /// The object for `parts` of a request that echoes `echo`.
    pub fn new(echo: &'a Echo, parts: Parts<'a>) -> Self {
        Self {
            id: &echo.id,
            object: "response",
            created_at: parts.created_at,
            status: parts.status.as_str(),
            error: parts.error,
            incomplete_details: match parts.status {
                Status::Incomplete(reason) => Some(Incomplete { reason }),
                _ => None,
            },
            instructions: echo.instructions.as_deref(),
            max_output_tokens: echo.max_output_tokens,
            model: &echo.model,
            output: parts.output,
            output_text: output_text(parts.output),
            parallel_tool_calls: echo.parallel_tool_calls,
            previous_response_id: echo.previous_response_id.as_deref(),
            reasoning: Reasoning {
                effort: echo.effort.as_deref(),
                summary: echo.summary.as_deref(),
            },
            store: echo.store,
            temperature: echo.temperature,
            text: &echo.text,
            tool_choice: &echo.tool_choice,
            tools: &echo.tools,
            top_p: echo.top_p,
            truncation: "disabled",
            usage: parts.usage.map(ResponseUsage::from),
            user: echo.user.as_deref(),
            metadata: &echo.metadata,
        }
    }
}

/// The text of every `output_text` part, joined.
fn output_text(output: &[OutputItem]) -> String {
    let mut text = String::new();
    for item in output {
        if let OutputItem::Message { content, .. } = item {
            for part in content {
                if let ContentPart::OutputText { text: t, .. } = part {
                    text.push_str(t);
                }
            }
        }
    }
    text
}

/// A new response id: `resp_` and 32 random hex digits.
pub fn new_id() -> String {
    let (a, b) = (sluice_core::rng::next_u64(), sluice_core::rng::next_u64());
    format!("resp_{a:016x}{b:016x}")
}

/// The id of the output item at `index` of response `id`: `rs_...`, `msg_...` or `fc_...`.
pub fn item_id(id: &str, prefix: &str, index: usize) -> String {
    format!("{prefix}_{}_{index}", id.trim_start_matches("resp_"))
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<StoredCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_blocks: Option<&'a RawValue>,
}

impl OutputItem {
    /// A reasoning item: its summary, and its signed thinking (chat `thinking_blocks`),
    /// written into `encrypted_content` when `encrypted` (the client asked for it).
    pub fn reasoning(
        id: String,
        summary: Vec<SummaryText>,
        signed: Option<Box<RawValue>>,
        encrypted: bool,
    ) -> Self {
        let encrypted_content = signed
            .as_ref()
            .filter(|_| encrypted)
            .map(|s| format!("{ENCRYPTED_PREFIX}{}", s.get()));
        Self::Reasoning {
            id,
            summary,
            encrypted_content,
            signed,
        }
    }
}

#[derive(Serialize)]
struct StoredCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: StoredFunction<'a>,
}

#[derive(Serialize)]
struct StoredFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// The chat `assistant` message that `output` was, for a stored conversation: its text
/// (or, without text, its refusal) and its tool calls.
pub fn assistant_message(output: &[OutputItem]) -> Vec<u8> {
    let mut text = String::new();
    let mut refusal = String::new();
    let mut tool_calls = Vec::new();
    let mut thinking_blocks = None;
    for item in output {
        match item {
            OutputItem::Message { content, .. } => {
                for part in content {
                    match part {
                        ContentPart::OutputText { text: t, .. } => text.push_str(t),
                        ContentPart::Refusal { refusal: r } => refusal.push_str(r),
                    }
                }
            }
            OutputItem::FunctionCall {
                call_id,
                name,
                arguments,
                ..
            } => tool_calls.push(StoredCall {
                id: call_id,
                kind: "function",
                function: StoredFunction { name, arguments },
            }),
            // Only signed thinking goes back to a model (Anthropic wants it back).
            OutputItem::Reasoning { signed, .. } => {
                thinking_blocks = thinking_blocks.or(signed.as_deref());
            }
        }
    }
    let content = match (text.is_empty(), refusal.is_empty()) {
        (false, _) => Some(text),
        (true, false) => Some(refusal),
        (true, true) => None,
    };
    let m = AssistantMessage {
        role: "assistant",
        content,
        tool_calls,
        thinking_blocks,
    };
    serde_json::to_vec(&m).unwrap_or_default()
}

/// A stored conversation: the chat messages of `input` (a JSON array) followed by the
/// `assistant` message that answered them.
pub fn transcript(input: &[u8], assistant: &[u8]) -> Vec<u8> {
    let body = input.strip_suffix(b"]").unwrap_or(b"[");
    let mut out = Vec::with_capacity(input.len() + assistant.len() + 2);
    out.extend_from_slice(body);
    if body.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(assistant);
    out.push(b']');
    out
}
