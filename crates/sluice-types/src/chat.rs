//! `POST /v1/chat/completions`: the light request view.
//!
//! One pass over the body checks that it is a JSON object with a string `model` and a
//! non-empty `messages` array of objects with a known `role`, reads the handful of fields
//! that sluice acts on, and records where `model` and `stream_options` sit so they can be
//! rewritten by splicing. Every other field is skipped unparsed and forwarded as it came.

use crate::splice::ModelAndUsage;
use crate::{json_error, span_in, InvalidRequest};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::ops::Range;

/// The roles OpenAI's chat API accepts.
pub const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
    #[serde(default)]
    thinking_blocks: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<Vec<Message<'a>>>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow, default)]
    seed: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// What sluice knows about a chat request after one pass over its body.
#[derive(Debug, Clone)]
pub struct ChatRequest<'a> {
    /// The model or route the client named.
    pub model: Cow<'a, str>,
    model_span: Range<usize>,
    /// `"stream": true`.
    pub stream: bool,
    /// The client asked for a usage chunk at the end of the stream.
    pub include_usage: bool,
    stream_options: Option<(Range<usize>, &'a str)>,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    /// `temperature`, when given.
    pub temperature: Option<f64>,
    /// A `seed` was given.
    pub has_seed: bool,
    /// A non-empty `tools` array was given.
    pub has_tools: bool,
    /// Number of messages.
    pub message_count: usize,
    /// Bytes of message content, of assistant messages' tool calls and of the tools'
    /// definitions: the basis of prompt-token estimates.
    pub content_bytes: usize,
    /// The `user` field, when given.
    pub user: Option<Cow<'a, str>>,
    /// An assistant message carries `thinking_blocks` (Anthropic's signed thinking, as
    /// sluice's translation writes it into chat).
    pub signed_thinking: bool,
}

/// `body` with every message's `thinking_blocks` removed (a rare path: the body is read
/// and written again). `None` if it does not parse, which [`ChatRequest::parse`] has ruled out.
fn without_thinking_blocks(body: &Bytes) -> Option<Bytes> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    for m in v.get_mut("messages")?.as_array_mut()? {
        if let Some(m) = m.as_object_mut() {
            m.remove("thinking_blocks");
        }
    }
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

/// Checks that the body starts like a JSON object, with a clear message when it does not.
pub(crate) fn expect_object(body: &[u8]) -> Result<(), InvalidRequest> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(InvalidRequest::body(
            "request body is empty; expected a JSON object",
        )),
        Some(b'{') => Ok(()),
        Some(_) => Err(InvalidRequest::body("request body must be a JSON object")),
    }
}

/// Reads a required string field (`model`) and where it sits.
pub(crate) fn model_field<'a>(
    body: &'a [u8],
    raw: Option<&'a RawValue>,
) -> Result<(Cow<'a, str>, Range<usize>), InvalidRequest> {
    let raw = raw.ok_or_else(|| {
        InvalidRequest::param("model", "you must provide a model parameter (`model`)")
    })?;
    let model: Cow<'a, str> = serde_json::from_str(raw.get())
        .map_err(|_| InvalidRequest::param("model", "`model` must be a string"))?;
    if model.is_empty() {
        return Err(InvalidRequest::param("model", "`model` must not be empty"));
    }
    let span = span_in(body, raw.get())
        .ok_or_else(|| InvalidRequest::body("internal: `model` not borrowed from body"))?;
    Ok((model, span))
}

pub(crate) fn opt_u64(
    raw: Option<&RawValue>,
    param: &'static str,
) -> Result<Option<u64>, InvalidRequest> {
    raw.map(|r| {
        serde_json::from_str::<u64>(r.get()).map_err(|_| {
            InvalidRequest::param(param, format!("`{param}` must be a non-negative integer"))
        })
    })
    .transpose()
}

pub(crate) fn opt_f64(
    raw: Option<&RawValue>,
    param: &'static str,
) -> Result<Option<f64>, InvalidRequest> {
    raw.map(|r| {
        serde_json::from_str::<f64>(r.get())
            .map_err(|_| InvalidRequest::param(param, format!("`{param}` must be a number")))
    })
    .transpose()
}

/// `stream`, `stream_options.include_usage`, and where `stream_options` sits (for splicing).
pub(crate) fn stream_fields<'a>(
    body: &'a [u8],
    stream: Option<&'a RawValue>,
    stream_options: Option<&'a RawValue>,
) -> Result<StreamFields<'a>, InvalidRequest> {
    let streams = match stream {
        None => false,
        Some(r) => serde_json::from_str::<bool>(r.get())
            .map_err(|_| InvalidRequest::param("stream", "`stream` must be a boolean"))?,
    };
    let Some(r) = stream_options else {
        return Ok(StreamFields {
            stream: streams,
            include_usage: false,
            options: None,
        });
    };
    let opts: StreamOptions = serde_json::from_str(r.get()).map_err(|_| {
        InvalidRequest::param(
            "stream_options",
            "`stream_options` must be an object such as {\"include_usage\": true}",
        )
    })?;
    let span = span_in(body, r.get())
        .ok_or_else(|| InvalidRequest::body("internal: `stream_options` not borrowed from body"))?;
    Ok(StreamFields {
        stream: streams,
        include_usage: opts.include_usage.unwrap_or(false),
        options: Some((span, r.get())),
    })
}

/// A request's `stream` and `stream_options`, read.
pub(crate) struct StreamFields<'a> {
    /// `"stream": true`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// Where `stream_options` sits, and its raw value.
    pub options: Option<(Range<usize>, &'a str)>,
}

impl<'a> ChatRequest<'a> {
    /// Parses and validates a chat request body.
    pub fn parse(body: &'a [u8]) -> Result<Self, InvalidRequest> {
        expect_object(body)?;
        let wire: Wire<'a> = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
        let (model, model_span) = model_field(body, wire.model)?;

        let messages = wire.messages.ok_or_else(|| {
            InvalidRequest::param("messages", "`messages` is required: a non-empty array")
        })?;
        if messages.is_empty() {
            return Err(InvalidRequest::param(
                "messages",
                "`messages` must contain at least one message",
            ));
        }
        let mut content_bytes = 0;
        let signed_thinking = messages.iter().any(|m| m.thinking_blocks.is_some());
        for (i, m) in messages.iter().enumerate() {
            match m.role.as_deref() {
                None => {
                    return Err(InvalidRequest::param(
                        "messages",
                        format!("`messages[{i}]` has no `role`"),
                    ))
                }
                Some(r) if !ROLES.contains(&r) => {
                    return Err(InvalidRequest::param(
                        "messages",
                        format!(
                            "`messages[{i}].role` is `{r}`; expected one of {}",
                            ROLES.join(", ")
                        ),
                    ))
                }
                Some(_) => {}
            }
            if let Some(c) = m.content {
                let first = c.get().as_bytes().first().copied();
                if !matches!(first, Some(b'"' | b'[' | b'n')) {
                    return Err(InvalidRequest::param(
                        "messages",
                        format!(
                            "`messages[{i}].content` must be a string or an array of content parts"
                        ),
                    ));
                }
                content_bytes += c.get().len();
            }
            content_bytes += m.tool_calls.map_or(0, |t| t.get().len());
        }
        content_bytes += wire.tools.map_or(0, |t| t.get().len());

        let StreamFields {
            stream,
            include_usage,
            options: stream_options,
        } = stream_fields(body, wire.stream, wire.stream_options)?;
        let max_tokens = match opt_u64(wire.max_completion_tokens, "max_completion_tokens")? {
            Some(v) => Some(v),
            None => opt_u64(wire.max_tokens, "max_tokens")?,
        };
        let temperature = opt_f64(wire.temperature, "temperature")?;
        let has_tools = wire
            .tools
            .is_some_and(|t| t.get().starts_with('[') && t.get() != "[]");

        Ok(Self {
            model,
            model_span,
            stream,
            include_usage,
            stream_options,
            max_tokens,
            temperature,
            has_seed: wire.seed.is_some(),
            has_tools,
            message_count: messages.len(),
            content_bytes,
            user: wire.user,
            signed_thinking,
        })
    }

    /// The body to send upstream: `model` replaced by `upstream_model` when it differs, and,
    /// for a stream, `stream_options.include_usage` set when `force_usage` asks for it so that
    /// sluice can count tokens; messages' `thinking_blocks` left out (Anthropic's signed
    /// thinking means nothing to another model, and OpenAI refuses a message field it does
    /// not know: a conversation begun on Anthropic falls back to an OpenAI model with the
    /// thinking's text still in `reasoning_content`). Without changes it is the same buffer.
    pub fn upstream_body(&self, body: &Bytes, upstream_model: &str, force_usage: bool) -> Bytes {
        let out = ModelAndUsage {
            model: &self.model,
            model_span: &self.model_span,
            stream: self.stream,
            include_usage: self.include_usage,
            stream_options: self.stream_options.as_ref(),
        }
        .apply(body, upstream_model, force_usage);
        match self.signed_thinking {
            true => without_thinking_blocks(&out).unwrap_or(out),
            false => out,
        }
    }

    /// Prompt tokens estimated from the size of the messages, their tool calls and the tools'
    /// definitions (about four bytes a token, plus a few tokens of framing per message), for
    /// limits and routing before the provider has counted.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        (self.content_bytes as u64).div_ceil(4) + 4 * self.message_count as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ChatRequest<'_>, InvalidRequest> {
        ChatRequest::parse(s.as_bytes())
    }

    #[test]
    fn reads_fields() {
        let r = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":5,"temperature":0,"tools":[{"type":"function"}],"user":"u1","x":{"y":[1,2]}}"#).unwrap();
        assert_eq!(r.model, "m");
        assert!(r.stream);
        assert!(!r.include_usage);
        assert_eq!(r.max_tokens, Some(5));
        assert_eq!(r.temperature, Some(0.0));
        assert!(r.has_tools);
        assert_eq!(r.user.as_deref(), Some("u1"));
        assert_eq!(r.message_count, 1);
    }

    /// Tools' definitions and earlier tool calls are prompt tokens too (a request with a few
    /// tools sends hundreds of tokens of schema with a one-line question).
    #[test]
    fn the_estimate_counts_tools_and_tool_calls() {
        let plain = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let tools = r#"[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]"#;
        let call = r#"[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]"#;
        let body = format!(
            r#"{{"model":"m","tools":{tools},"messages":[{{"role":"user","content":"hi"}},{{"role":"assistant","content":null,"tool_calls":{call}}}]}}"#
        );
        let with = parse(&body).unwrap();
        let bytes = r#""hi""#.len() + tools.len() + call.len();
        assert_eq!(with.content_bytes, bytes);
        assert!(with.estimated_prompt_tokens() > plain.estimated_prompt_tokens() + 40);
    }

    #[test]
    fn signed_thinking_is_not_sent_to_openai_format_upstreams() {
        let text = r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"a","reasoning_content":"r","thinking_blocks":[{"type":"thinking","thinking":"r","signature":"s"}]},{"role":"user","content":"more"}]}"#;
        let body = Bytes::from(text);
        let r = ChatRequest::parse(&body).unwrap();
        assert!(r.signed_thinking);
        let v: serde_json::Value =
            serde_json::from_slice(&r.upstream_body(&body, "gpt-4o", false)).unwrap();
        assert_eq!(v["model"], "gpt-4o");
        assert_eq!(v["messages"][1].get("thinking_blocks"), None);
        assert_eq!(v["messages"][1]["reasoning_content"], "r");
        assert_eq!(v["messages"].as_array().unwrap().len(), 3);
        let plain = Bytes::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        let r = ChatRequest::parse(&plain).unwrap();
        assert!(!r.signed_thinking);
        assert_eq!(r.upstream_body(&plain, "m", false), plain);
    }

    #[test]
    fn clear_errors() {
        let cases = [
            ("", "empty"),
            ("[1]", "must be a JSON object"),
            ("{\"model\":", "not valid JSON"),
            (
                r#"{"messages":[{"role":"user","content":"x"}]}"#,
                "provide a model",
            ),
            (r#"{"model":3,"messages":[]}"#, "`model` must be a string"),
            (r#"{"model":"m"}"#, "`messages` is required"),
            (r#"{"model":"m","messages":[]}"#, "at least one"),
            (r#"{"model":"m","messages":"hi"}"#, "invalid request body"),
            (
                r#"{"model":"m","messages":[{"content":"x"}]}"#,
                "`messages[0]` has no `role`",
            ),
            (
                r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
                "`messages[0].role` is `robot`",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
                "`messages[0].content` must be",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
                "`stream` must be a boolean",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":-1}"#,
                "`max_tokens` must be",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"temperature":"hot"}"#,
                "`temperature` must be",
            ),
            (
                r#"{"model":"m","model":"n","messages":[{"role":"user"}]}"#,
                "duplicate field",
            ),
        ];
        for (body, want) in cases {
            let err = parse(body).unwrap_err();
            assert!(err.message.contains(want), "{body}: {}", err.message);
        }
    }

    #[test]
    fn rewrites_model_and_injects_usage() {
        let raw = r#"{"model":"alias","messages":[{"role":"user","content":"hi"}],"stream":true,"seed":1}"#;
        let body = Bytes::from(raw);
        let r = ChatRequest::parse(&body).unwrap();
        let out = r.upstream_body(&body, "gpt-4o", true);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "gpt-4o");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["seed"], 1);
        // Nothing to change: the very same buffer goes upstream.
        let same = r.upstream_body(&body, "alias", false);
        assert_eq!(same.as_ptr(), body.as_ptr());
    }

    #[test]
    fn keeps_other_stream_options() {
        let raw = r#"{"model":"m","messages":[{"role":"user"}],"stream":true,"stream_options":{"continuous_usage_stats":true}}"#;
        let body = Bytes::from(raw);
        let r = ChatRequest::parse(&body).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&r.upstream_body(&body, "m", true)).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["continuous_usage_stats"], true);
    }

    #[test]
    fn escaped_model_name() {
        let raw = r#"{"model":"a\u002fb","messages":[{"role":"user"}]}"#;
        let body = Bytes::from(raw);
        let r = ChatRequest::parse(&body).unwrap();
        assert_eq!(r.model, "a/b");
        let v: serde_json::Value =
            serde_json::from_slice(&r.upstream_body(&body, "up", false)).unwrap();
        assert_eq!(v["model"], "up");
    }
}
