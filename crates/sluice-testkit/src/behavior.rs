//! Per-request control of the fake upstream.
//!
//! A [`Behavior`] says how the fake answers one request: after how long, with
//! which status, whether it hangs, resets the connection, cuts a stream short,
//! and so on. The fake picks the behavior for each request in this order:
//!
//! 1. a top-level `"x_fake"` object in the JSON request body (deserialized as
//!    a [`Behavior`]; `null` counts as absent; every field is optional and
//!    unknown fields are rejected with a 400, so typos do not pass silently);
//! 2. the next behavior of the FIFO script filled with
//!    [`FakeUpstream::push`](crate::FakeUpstream::push);
//! 3. the default behavior, set with
//!    [`FakeUpstream::set_default`](crate::FakeUpstream::set_default).

use serde::{Deserialize, Serialize};

/// How the fake upstream answers one request.
///
/// All fields are public and default to "answer normally, at once". Builder
/// style helpers (`with_*`) are provided for readability:
///
/// ```
/// use sluice_testkit::Behavior;
/// let b = Behavior::new().with_status(429).with_retry_after("1");
/// assert_eq!(b.status, Some(429));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behavior {
    /// Milliseconds to wait before sending the response head.
    pub delay_ms: u64,
    /// Answer with this status instead of the normal response.
    pub status: Option<u16>,
    /// Body to send with [`status`](Self::status). Defaults to an
    /// OpenAI-shaped error whose message is `fake upstream error {status}`.
    pub error_body: Option<String>,
    /// Value of a `Retry-After` header added to the response.
    pub retry_after: Option<String>,
    /// Extra headers added to the response.
    pub headers: Vec<(String, String)>,
    /// Accept the request and never answer; the request is held until the
    /// client goes away (which counts as a cancellation).
    pub hang: bool,
    /// Close the TCP connection abruptly (RST) without sending any response.
    pub reset: bool,
    /// Milliseconds to wait between two SSE events of a streamed response.
    pub chunk_delay_ms: u64,
    /// Streaming only: send this many SSE events (the role chunk counts),
    /// then abort the connection mid-body: no terminating chunk and, unless
    /// the response had fewer events than this, no `[DONE]`. The client sees
    /// a body error, never a clean end. Not counted as a cancellation.
    pub cut_after_chunks: Option<usize>,
    /// Assistant content of a non-streaming chat completion.
    pub content: Option<String>,
    /// Content pieces of a streamed chat completion, one chunk each.
    pub pieces: Option<Vec<String>>,
    /// Streaming only: send content chunks forever, `chunk_delay_ms` apart
    /// (10 ms when `chunk_delay_ms` is 0). For cancellation tests.
    pub infinite_stream: bool,
    /// Answer a chat request with a call of this tool instead of content, whole or
    /// streamed, in every shape (`finish_reason: "tool_calls"`, Anthropic's `tool_use`).
    pub tool_call: Option<FakeToolCall>,
    /// Report this usage instead of the default counts (OpenAI's whole answers and usage
    /// chunks, with `prompt_tokens_details.cached_tokens` and
    /// `completion_tokens_details.reasoning_tokens`; Anthropic's `input_tokens`,
    /// `cache_read_input_tokens`, `cache_creation_input_tokens` and `output_tokens`).
    pub usage: Option<FakeUsage>,
    /// Answer with exactly these bytes instead (see `replay.rs`): for a streamed request,
    /// one write per element (whole SSE events, or NDJSON lines, framing included); for a
    /// whole one, the first element is the JSON body. `chunk_delay_ms` and
    /// `cut_after_chunks` still apply. For transcripts taken from a provider's documented
    /// format that the other fields cannot describe.
    pub replay: Option<Vec<String>>,
}

/// Token counts the fake reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeUsage {
    /// Prompt tokens, cache reads and writes included.
    pub prompt_tokens: u64,
    /// Completion tokens, reasoning included.
    pub completion_tokens: u64,
    /// Prompt tokens read from the prompt cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the prompt cache (Anthropic only).
    pub cache_write_tokens: u64,
    /// Reasoning tokens (OpenAI only).
    pub reasoning_tokens: u64,
}

impl FakeUsage {
    /// OpenAI's `usage` object.
    pub fn openai(&self) -> serde_json::Value {
        serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        })
    }

    /// Anthropic's `usage` object.
    pub fn anthropic(&self) -> serde_json::Value {
        serde_json::json!({
            "input_tokens": self
                .prompt_tokens
                .saturating_sub(self.cached_tokens + self.cache_write_tokens),
            "cache_read_input_tokens": self.cached_tokens,
            "cache_creation_input_tokens": self.cache_write_tokens,
            "output_tokens": self.completion_tokens,
        })
    }
}

/// A tool call the fake answers with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeToolCall {
    /// The function's name.
    pub name: String,
    /// Its arguments: a JSON object, as text (streamed in two pieces where the shape
    /// streams arguments).
    pub arguments: String,
}

impl Behavior {
    /// A behavior that answers normally, at once (same as `Default`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits `ms` milliseconds before the response head.
    pub fn with_delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = ms;
        self
    }

    /// Answers with `status` (and the default OpenAI-shaped error body).
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Answers with `status` and exactly `body`.
    pub fn with_error(mut self, status: u16, body: impl Into<String>) -> Self {
        self.status = Some(status);
        self.error_body = Some(body.into());
        self
    }

    /// Adds a `Retry-After` header.
    pub fn with_retry_after(mut self, value: impl Into<String>) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    /// Adds an extra response header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Never answers; holds the request until the client goes away.
    pub fn with_hang(mut self) -> Self {
        self.hang = true;
        self
    }

    /// Resets the connection without any response.
    pub fn with_reset(mut self) -> Self {
        self.reset = true;
        self
    }

    /// Waits `ms` milliseconds between SSE events.
    pub fn with_chunk_delay_ms(mut self, ms: u64) -> Self {
        self.chunk_delay_ms = ms;
        self
    }

    /// Aborts a streamed response after `n` SSE events.
    pub fn with_cut_after_chunks(mut self, n: usize) -> Self {
        self.cut_after_chunks = Some(n);
        self
    }

    /// Overrides the non-streaming assistant content.
    pub fn with_content(mut self, content: impl Into<String>) -> Self {
        self.content = Some(content.into());
        self
    }

    /// Overrides the streamed content pieces.
    pub fn with_pieces<I, S>(mut self, pieces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.pieces = Some(pieces.into_iter().map(Into::into).collect());
        self
    }

    /// Streams content chunks forever.
    pub fn with_infinite_stream(mut self) -> Self {
        self.infinite_stream = true;
        self
    }

    /// Answers with a call of tool `name` with `arguments` (a JSON object, as text).
    pub fn with_tool_call(mut self, name: impl Into<String>, arguments: impl Into<String>) -> Self {
        self.tool_call = Some(FakeToolCall {
            name: name.into(),
            arguments: arguments.into(),
        });
        self
    }

    /// Answers with exactly `events` (see [`replay`](Self::replay)).
    pub fn with_replay<I, S>(mut self, events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.replay = Some(events.into_iter().map(Into::into).collect());
        self
    }

    /// This behavior as a JSON value, ready to be put under `"x_fake"` in a
    /// request body.
    pub fn to_json(&self) -> serde_json::Value {
        // Serializing a struct of plain strings, numbers and vectors cannot
        // fail; fall back to an empty object rather than panicking.
        serde_json::to_value(self).unwrap_or_else(|_| serde_json::Value::Object(Default::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_json_fills_defaults() {
        let b: Behavior = serde_json::from_str(r#"{"status":503,"retry_after":"2"}"#).unwrap();
        assert_eq!(b, Behavior::new().with_status(503).with_retry_after("2"));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(serde_json::from_str::<Behavior>(r#"{"stauts":503}"#).is_err());
    }

    #[test]
    fn round_trips_through_json() {
        let b = Behavior::new()
            .with_pieces(["a", "b"])
            .with_header("x-a", "1")
            .with_cut_after_chunks(2);
        let back: Behavior = serde_json::from_value(b.to_json()).unwrap();
        assert_eq!(back, b);
    }
}
