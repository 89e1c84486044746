//! OpenAI's response shapes (`chat.completion`, `chat.completion.chunk`, the embeddings
//! list, `usage`) as typed serialisation structs, written the same way by every translating
//! adapter.
//!
//! Why typed structs: the translations write these on every request (and every streamed
//! event). Serialising borrowed fields straight into the output buffer costs one pass and no
//! intermediate allocation per field, where a `serde_json::Value` tree costs a map
//! allocation per object, a `String` per key and a second walk to print it.

use serde::Serialize;
use sluice_types::Usage;
use std::borrow::Cow;

/// Seconds since the Unix epoch, for `created`.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The start of the comment [`ChunkWriter::prompt_usage`] writes.
const PROMPT_USAGE: &str = ": x-sluice-prompt-usage ";

/// The usage of a [`ChunkWriter::prompt_usage`] comment, if `event` is one.
pub fn prompt_usage_of(event: &[u8]) -> Option<Usage> {
    let line = event.strip_prefix(PROMPT_USAGE.as_bytes())?;
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    Usage::from_response(&line[..end])
}

/// What follows a [`ChunkWriter::prompt_usage`] comment at the start of `events`, if they
/// start with one.
pub fn strip_prompt_usage(events: &[u8]) -> Option<&[u8]> {
    let line = events.strip_prefix(PROMPT_USAGE.as_bytes())?;
    let end = line.windows(2).position(|w| w == b"\n\n")?;
    Some(&line[end + 2..])
}

/// OpenAI's `usage` object.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedTokens,
    completion_tokens_details: ReasoningTokens,
    /// Prompt tokens written to the prompt cache (Anthropic's name; only when there are
    /// any), so that a Messages API answer made from this one can say so.
    #[serde(skip_serializing_if = "is_zero")]
    cache_creation_input_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

impl From<&Usage> for UsageOut {
    fn from(u: &Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total(),
            prompt_tokens_details: CachedTokens {
                cached_tokens: u.cached_prompt_tokens,
            },
            completion_tokens_details: ReasoningTokens {
                reasoning_tokens: u.reasoning_tokens,
            },
            cache_creation_input_tokens: u.cache_write_tokens,
        }
    }
}

/// One tool call, in a `chat.completion` message (no `index`) or in a stream delta (with
/// `index`; the later deltas of a call carry only `index` and `function.arguments`).
#[derive(Debug, Clone, Serialize)]
pub struct ToolCallOut<'a> {
    /// Position among the calls of the answer (stream deltas only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Call id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, str>>,
    /// `"function"`, on the first delta of a call.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'a str>,
    /// The function called.
    pub function: FunctionOut<'a>,
}

/// An id for a tool call whose upstream gave it none (Gemini without `id`, Ollama): `call_`
/// and 24 random hex digits, so the calls of every turn of a conversation have ids of their
/// own (a later turn's `call_0` would collide with an earlier one's when the conversation
/// goes on at a provider that requires unique ids, such as Anthropic's `tool_use` ids).
pub fn made_up_call_id() -> String {
    let (a, b) = (sluice_core::rng::next_u64(), sluice_core::rng::next_u64());
    format!("call_{a:016x}{:08x}", b >> 32)
}

impl<'a> ToolCallOut<'a> {
    /// A whole call (or the first delta of one): id, `type`, name and arguments.
    pub fn new(
        index: Option<usize>,
        id: Cow<'a, str>,
        name: Cow<'a, str>,
        arguments: Cow<'a, str>,
    ) -> Self {
        Self {
            index,
            id: Some(id),
            kind: Some("function"),
            function: FunctionOut {
                name: Some(name),
                arguments,
            },
        }
    }

    /// A later delta of call `index`: a piece of its arguments.
    pub fn arguments(index: usize, arguments: &'a str) -> Self {
        Self {
            index: Some(index),
            id: None,
            kind: None,
            function: FunctionOut {
                name: None,
                arguments: Cow::Borrowed(arguments),
            },
        }
    }
}

/// `function` of a tool call.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionOut<'a> {
    /// Function name (left out of later stream deltas).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Cow<'a, str>>,
    /// Arguments as a JSON string.
    pub arguments: Cow<'a, str>,
}

/// The `delta` of a `chat.completion.chunk` choice.
#[derive(Debug, Default, Serialize)]
pub struct Delta<'a> {
    /// `"assistant"`, on the first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// A piece of content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    /// A piece of a refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<&'a str>,
    /// A piece of reasoning, as DeepSeek-style APIs send it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    /// Tool-call deltas.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub tool_calls: &'a [ToolCallOut<'a>],
    /// Signed thinking (Anthropic's signature of the reasoning streamed so far, or a
    /// redacted block).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub thinking_blocks: &'a [ThinkingBlockOut<'a>],
}

/// A block of signed thinking, in a message's or a delta's `thinking_blocks` (the field
/// LiteLLM uses for them): `{"type": "thinking", "thinking", "signature"}` or
/// `{"type": "redacted_thinking", "data"}`.
#[derive(Debug, Clone, Serialize)]
pub struct ThinkingBlockOut<'a> {
    /// `thinking` or `redacted_thinking`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The thinking's text (empty in a delta: it came as `reasoning_content`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<&'a str>,
    /// Its signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<&'a str>,
    /// A redacted block's data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a str>,
}

impl<'a> ThinkingBlockOut<'a> {
    /// A signed thinking block.
    pub fn signed(thinking: &'a str, signature: &'a str) -> Self {
        Self {
            kind: "thinking",
            thinking: Some(thinking),
            signature: Some(signature),
            data: None,
        }
    }

    /// A redacted thinking block.
    pub fn redacted(data: &'a str) -> Self {
        Self {
            kind: "redacted_thinking",
            thinking: None,
            signature: None,
            data: Some(data),
        }
    }
}

impl<'a> Delta<'a> {
    /// The first delta of an answer: the role, with empty content.
    pub fn role() -> Self {
        Self {
            role: Some("assistant"),
            content: Some(""),
            ..Self::default()
        }
    }

    /// A piece of content.
    pub fn content(text: &'a str) -> Self {
        Self {
            content: Some(text),
            ..Self::default()
        }
    }

    /// A piece of reasoning (`reasoning_content`).
    pub fn reasoning(text: &'a str) -> Self {
        Self {
            reasoning_content: Some(text),
            ..Self::default()
        }
    }

    /// Tool-call deltas.
    pub fn tool_calls(calls: &'a [ToolCallOut<'a>]) -> Self {
        Self {
            tool_calls: calls,
            ..Self::default()
        }
    }

    /// Signed thinking.
    pub fn thinking_blocks(blocks: &'a [ThinkingBlockOut<'a>]) -> Self {
        Self {
            thinking_blocks: blocks,
            ..Self::default()
        }
    }
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

/// One choice of a chunk.
#[derive(Debug, Serialize)]
pub struct ChunkChoice<'a> {
    /// The choice's index.
    pub index: usize,
    /// What it adds.
    pub delta: Delta<'a>,
    /// Why it ended, on its last chunk.
    pub finish_reason: Option<&'a str>,
    /// The log probabilities of the tokens it adds (`{"content": [...]}`), when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<&'a serde_json::Value>,
}

/// Writes the chunks of one stream: a translated one, a local model's, or a stored
/// completion replayed.
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    /// The stream's `id`.
    pub id: String,
    created: u64,
    model: String,
    system_fingerprint: Option<String>,
}

impl ChunkWriter {
    /// A writer for a stream answering `model`, with a provisional id.
    pub fn new(model: &str, id_prefix: &str) -> Self {
        let created = now_secs();
        Self {
            id: format!("chatcmpl-{id_prefix}-{created}"),
            created,
            model: model.to_string(),
            system_fingerprint: None,
        }
    }

    /// A writer for the stream of an existing completion: its `id`, `created`, `model`
    /// and `system_fingerprint`.
    pub fn of_completion(
        id: &str,
        created: u64,
        model: &str,
        system_fingerprint: Option<&str>,
    ) -> Self {
        Self {
            id: id.to_string(),
            created,
            model: model.to_string(),
            system_fingerprint: system_fingerprint.map(str::to_string),
        }
    }

    fn write(&self, out: &mut Vec<u8>, choices: &[ChunkChoice<'_>], usage: Option<UsageOut>) {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: self.system_fingerprint.as_deref(),
            choices,
            usage,
        };
        out.extend_from_slice(b"data: ");
        // Writing plain structs of strings and numbers into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, &chunk);
        out.extend_from_slice(b"\n\n");
    }

    /// A chunk with one choice carrying `delta` (and `finish_reason` when given).
    pub fn delta(&self, out: &mut Vec<u8>, delta: Delta<'_>, finish: Option<&str>) {
        let choice = ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish,
            logprobs: None,
        };
        self.write(out, std::slice::from_ref(&choice), None);
    }

    /// A chunk with every choice in `choices`.
    pub fn choices(&self, out: &mut Vec<u8>, choices: &[ChunkChoice<'_>]) {
        self.write(out, choices, None);
    }

    /// The usage chunk OpenAI sends last when `stream_options.include_usage` is set.
    pub fn usage(&self, out: &mut Vec<u8>, usage: &Usage) {
        self.write(out, &[], Some(usage.into()));
    }

    /// The prompt's usage as the upstream counted it before its first content, as an SSE
    /// comment (`: x-sluice-prompt-usage {"usage":{...}}`), which clients skip: it lets a
    /// Messages API stream's `message_start` carry the upstream's count.
    pub fn prompt_usage(&self, out: &mut Vec<u8>, usage: &Usage) {
        let prompt = Usage {
            prompt_tokens: usage.prompt_tokens,
            cached_prompt_tokens: usage.cached_prompt_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            ..Usage::default()
        };
        out.extend_from_slice(PROMPT_USAGE.as_bytes());
        out.extend_from_slice(b"{\"usage\":");
        let _ = serde_json::to_writer(&mut *out, &UsageOut::from(&prompt));
        out.extend_from_slice(b"}\n\n");
    }

    /// The end of a finished stream: the finish chunk, the usage chunk when asked for, and
    /// `[DONE]`.
    pub fn finish(&self, out: &mut Vec<u8>, finish: &str, usage: Option<&Usage>) {
        self.delta(out, Delta::default(), Some(finish));
        self.end(out, usage);
    }

    /// The end of a stream whose choices have each sent their finish chunk: the usage chunk
    /// when asked for, and `[DONE]`.
    pub fn end(&self, out: &mut Vec<u8>, usage: Option<&Usage>) {
        if let Some(u) = usage {
            self.usage(out, u);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: UsageOut,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: CompletionMessage<'a>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct CompletionMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: &'a [ToolCallOut<'a>],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    thinking_blocks: &'a [ThinkingBlockOut<'a>],
}

/// The parts of a whole `chat.completion` body with one choice.
#[derive(Debug)]
pub struct Answer<'a> {
    /// The body's `id`.
    pub id: &'a str,
    /// The model the client asked for.
    pub model: &'a str,
    /// The assistant's text (`null` when `None`).
    pub content: Option<&'a str>,
    /// Its reasoning, as `reasoning_content` (DeepSeek's and vLLM's field), when the
    /// upstream returned any.
    pub reasoning: Option<&'a str>,
    /// Tool calls, without `index`.
    pub tool_calls: &'a [ToolCallOut<'a>],
    /// Signed thinking, as an Anthropic upstream returned it.
    pub thinking_blocks: &'a [ThinkingBlockOut<'a>],
    /// OpenAI's `finish_reason`.
    pub finish: &'a str,
    /// Usage.
    pub usage: &'a Usage,
}

impl Answer<'_> {
    /// The `chat.completion` body.
    pub fn to_vec(&self) -> Vec<u8> {
        let body = Completion {
            id: self.id,
            object: "chat.completion",
            created: now_secs(),
            model: self.model,
            choices: [CompletionChoice {
                index: 0,
                message: CompletionMessage {
                    role: "assistant",
                    content: self.content,
                    reasoning_content: self.reasoning,
                    tool_calls: self.tool_calls,
                    thinking_blocks: self.thinking_blocks,
                },
                finish_reason: self.finish,
            }],
            usage: self.usage.into(),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// A whole `chat.completion` body with one choice, its id `chatcmpl-{id_prefix}-{created}`;
/// `reasoning` (when not empty) is the message's `reasoning_content`.
pub fn completion(
    id_prefix: &str,
    model: &str,
    content: &str,
    reasoning: &str,
    tool_calls: &[ToolCallOut<'_>],
    finish: &str,
    usage: &Usage,
) -> Vec<u8> {
    let id = format!("chatcmpl-{id_prefix}-{}", now_secs());
    Answer {
        id: &id,
        model,
        content: Some(content),
        reasoning: (!reasoning.is_empty()).then_some(reasoning),
        tool_calls,
        thinking_blocks: &[],
        finish,
        usage,
    }
    .to_vec()
}

#[derive(Serialize)]
struct EmbeddingList<'a, V: Serialize> {
    object: &'static str,
    data: Vec<EmbeddingOut<V>>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingOut<V: Serialize> {
    object: &'static str,
    index: usize,
    embedding: V,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// OpenAI's embeddings list body for `vectors` (each serialised as it is: a list of
/// numbers, or the upstream's raw JSON array), counting `tokens` prompt tokens.
pub fn embedding_list<V: Serialize>(
    vectors: impl IntoIterator<Item = V>,
    model: &str,
    tokens: u64,
) -> Vec<u8> {
    let list = EmbeddingList {
        object: "list",
        data: vectors
            .into_iter()
            .enumerate()
            .map(|(index, embedding)| EmbeddingOut {
                object: "embedding",
                index,
                embedding,
            })
            .collect(),
        model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    serde_json::to_vec(&list).unwrap_or_default()
}

/// `raw` (JSON text) without the whitespace between its tokens: tool-call arguments are
/// passed on as the upstream wrote them, compacted the way OpenAI sends them. Borrows when
/// there is nothing to strip.
pub fn compact_json(raw: &str) -> Cow<'_, str> {
    let bytes = raw.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    let needs = bytes.iter().any(|&b| {
        let ws = !in_string && matches!(b, b' ' | b'\n' | b'\r' | b'\t');
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        }
        ws
    });
    if !needs {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in raw.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\n' | '\r' | '\t') {
            continue;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// An OpenAI-shaped function tool (`{"type": "function", "function": {...}}`), as the inbound
/// `/v1/messages` translation and Ollama's `tools` both write it; `S` is the schema's JSON.
#[derive(Serialize)]
pub(crate) struct FunctionTool<'a, S> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionToolSpec<'a, S>,
}

#[derive(Serialize)]
struct FunctionToolSpec<'a, S> {
    name: &'a str,
    description: Option<&'a str>,
    parameters: ToolSchema<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// A tool's JSON schema: the client's, or `{"type": "object"}`.
#[derive(Serialize)]
#[serde(untagged)]
enum ToolSchema<S> {
    Given(S),
    Object {
        #[serde(rename = "type")]
        kind: &'static str,
    },
}

impl<'a, S> FunctionTool<'a, S> {
    /// A function tool; without a schema, parameters are `{"type": "object"}`.
    pub(crate) fn new(name: &'a str, description: Option<&'a str>, schema: Option<S>) -> Self {
        Self {
            kind: "function",
            function: FunctionToolSpec {
                name,
                description,
                parameters: schema.map_or(ToolSchema::Object { kind: "object" }, ToolSchema::Given),
                strict: None,
            },
        }
    }

    /// The same tool, with the client's `strict` (asks the upstream to hold its calls to
    /// the schema).
    pub(crate) fn strict(mut self, strict: Option<bool>) -> Self {
        self.function.strict = strict;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_json_strips_whitespace_outside_strings_only() {
        assert!(matches!(compact_json(r#"{"a":1}"#), Cow::Borrowed(_)));
        assert_eq!(
            compact_json("{ \"a b\" : [1, \"x \\\" y\"],\n\t\"c\": {} }"),
            r#"{"a b":[1,"x \" y"],"c":{}}"#
        );
    }

    #[test]
    fn chunks_are_openai_shaped() {
        let w = ChunkWriter::new("m", "t");
        let mut out = Vec::new();
        let calls = [ToolCallOut::new(Some(0), "c".into(), "f".into(), "".into())];
        w.delta(&mut out, Delta::tool_calls(&calls), None);
        w.finish(&mut out, "tool_calls", Some(&Usage::default()));
        let text = String::from_utf8(out).unwrap();
        let events: Vec<&str> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .collect();
        assert_eq!(events.len(), 4);
        let first: serde_json::Value = serde_json::from_str(events[0]).unwrap();
        assert_eq!(
            first["choices"][0],
            serde_json::json!({"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}]}, "finish_reason": null})
        );
        assert!(first.get("usage").is_none());
        let finish: serde_json::Value = serde_json::from_str(events[1]).unwrap();
        assert_eq!(finish["choices"][0]["delta"], serde_json::json!({}));
        let usage: serde_json::Value = serde_json::from_str(events[2]).unwrap();
        assert_eq!(usage["choices"], serde_json::json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 0);
        assert_eq!(events[3], "[DONE]");
    }

    #[test]
    fn the_prompt_usage_comment_carries_the_prompts_count_only() {
        let w = ChunkWriter::new("m", "x");
        let mut out = Vec::new();
        let usage = Usage {
            prompt_tokens: 40,
            cached_prompt_tokens: 10,
            cache_write_tokens: 5,
            completion_tokens: 3,
            ..Usage::default()
        };
        w.prompt_usage(&mut out, &usage);
        assert!(out.starts_with(b": x-sluice-prompt-usage {"), "{out:?}");
        assert!(out.ends_with(b"}\n\n"));
        let back = prompt_usage_of(&out).unwrap();
        assert_eq!(
            back,
            Usage {
                completion_tokens: 0,
                ..usage
            }
        );
        assert!(prompt_usage_of(b": x-sluice-cost-usd 0.1\n\n").is_none());
        assert!(prompt_usage_of(b"data: {}\n\n").is_none());
        w.delta(&mut out, Delta::role(), None);
        let rest = strip_prompt_usage(&out).unwrap();
        assert!(rest.starts_with(b"data: {"), "{rest:?}");
        assert_eq!(strip_prompt_usage(rest), None);
    }
}
