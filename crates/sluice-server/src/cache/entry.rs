//! What a cache entry holds, and the two ways it is served.
//!
//! An entry is one answer in one canonical form, whatever the client that caused it asked
//! for: the OpenAI JSON body (`chat.completion` or the embeddings list), plus a little
//! metadata (who answered, usage, what it cost, how long it took). A streamed answer is
//! assembled into that form as it passes ([`Assembler`]); a streaming client is served an
//! entry by [`to_sse`], which writes it as `chat.completion.chunk` events.
//!
//! Audio from text-to-speech is kept as the upstream sent it, with its content type in the
//! metadata, and replayed byte for byte.
//!
//! Wire form: `SLC1`, the metadata's length (u32, little endian), the metadata as JSON, the
//! body.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_providers::chunks::{ChunkChoice, ChunkWriter, Delta, ThinkingBlockOut, ToolCallOut};
use sluice_types::sse::event_data;
use sluice_types::Usage;
use std::borrow::Cow;

const MAGIC: &[u8; 4] = b"SLC1";

/// Who made an answer, and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The deployment (model name as configured) that answered.
    pub model: String,
    /// Its provider.
    pub provider: String,
    /// When the answer was stored (Unix ms).
    pub created_ms: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Prompt tokens from the provider's prompt cache.
    pub cached_prompt_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
    /// What the answer cost upstream, in nano-USD (0 when unpriced).
    pub cost_nano_usd: u64,
    /// How long the upstream took to answer, in ms.
    pub latency_ms: u64,
    /// The content type of a raw answer (text-to-speech audio), replayed as it came; `None`
    /// for the OpenAI JSON bodies of every other entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

impl Meta {
    /// The usage recorded.
    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_prompt_tokens: self.cached_prompt_tokens,
            reasoning_tokens: self.reasoning_tokens,
            cache_write_tokens: 0,
            ..Usage::default()
        }
    }

    /// Sets the usage.
    pub fn set_usage(&mut self, u: &Usage) {
        self.prompt_tokens = u.prompt_tokens;
        self.completion_tokens = u.completion_tokens;
        self.cached_prompt_tokens = u.cached_prompt_tokens;
        self.reasoning_tokens = u.reasoning_tokens;
    }
}

/// A cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Metadata.
    pub meta: Meta,
    /// The OpenAI JSON body.
    pub body: Bytes,
}

impl Answer {
    /// The stored form.
    pub fn encode(&self) -> Bytes {
        let meta = serde_json::to_vec(&self.meta).unwrap_or_default();
        let mut out = BytesMut::with_capacity(8 + meta.len() + self.body.len());
        out.put_slice(MAGIC);
        out.put_u32_le(meta.len() as u32);
        out.put_slice(&meta);
        out.put_slice(&self.body);
        out.freeze()
    }

    /// Reads the stored form; `None` for anything else (another version, a torn value).
    pub fn decode(raw: &Bytes) -> Option<Self> {
        let rest = raw.strip_prefix(MAGIC)?;
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let meta_bytes = rest.get(4..4 + len)?;
        let meta = serde_json::from_slice(meta_bytes).ok()?;
        let start = MAGIC.len() + 4 + len;
        Some(Self {
            meta,
            body: raw.slice(start..),
        })
    }
}

// === Streams into completions ===

#[derive(Deserialize)]
struct ChunkIn<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    created: Option<u64>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    system_fingerprint: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Vec<ChoiceIn<'a>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChoiceIn<'a> {
    #[serde(default)]
    index: usize,
    #[serde(default, borrow)]
    delta: DeltaIn<'a>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    logprobs: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct DeltaIn<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCallIn<'a>>>,
    #[serde(borrow)]
    thinking_blocks: Option<Vec<ThinkingBlockIn<'a>>>,
}

/// A block of signed thinking in a delta (Anthropic's, as its translation writes it: a
/// signature with empty `thinking`, the text having come as `reasoning_content`, or a
/// redacted block), or in a replayed message (with its text).
#[derive(Deserialize)]
struct ThinkingBlockIn<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ToolCallIn<'a> {
    #[serde(default)]
    index: usize,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<FunctionIn<'a>>,
}

#[derive(Deserialize)]
struct FunctionIn<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// One choice as it builds up.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq, Clone)]
struct Message {
    role: String,
    content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall>,
    /// Signed thinking (Anthropic's), which a client must send back with the turn: kept so
    /// that a cached answer replays it as the upstream's did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    thinking_blocks: Vec<ThinkingBlock>,
    /// How much of `reasoning_content` the blocks so far cover (while assembling).
    #[serde(skip)]
    reasoning_signed: usize,
}

/// A stored block of signed thinking: `thinking` with its text and signature, or
/// `redacted_thinking` with its data.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq, Clone)]
struct ThinkingBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thinking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
}

impl Message {
    /// Adds a streamed block: a signature with empty text signs the reasoning streamed
    /// since the previous block.
    fn sign(&mut self, b: ThinkingBlockIn<'_>) {
        let reasoning = self.reasoning_content.as_deref().unwrap_or("");
        let thinking = match (b.kind.as_ref(), b.thinking.as_deref()) {
            ("thinking", None | Some("")) => Some(
                reasoning
                    .get(self.reasoning_signed..)
                    .unwrap_or("")
                    .to_owned(),
            ),
            (_, t) => t.map(str::to_owned),
        };
        self.reasoning_signed = reasoning.len();
        self.thinking_blocks.push(ThinkingBlock {
            kind: b.kind.into_owned(),
            thinking,
            signature: b.signature.map(Cow::into_owned),
            data: b.data.map(Cow::into_owned),
        });
    }

    /// Whether the reasoning is exactly the signed blocks' text, in order, so that it
    /// replays as the upstream streamed it: each block's text, then its signature.
    fn reasoning_is_signed(&self) -> bool {
        let signed = self
            .thinking_blocks
            .iter()
            .filter_map(|b| b.thinking.as_deref());
        let mut joined = String::new();
        signed.for_each(|t| joined.push_str(t));
        !self.thinking_blocks.is_empty()
            && self.reasoning_content.as_deref().unwrap_or("") == joined
    }
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq, Clone)]
struct ToolCall {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    function: Function,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq, Clone)]
struct Function {
    name: String,
    arguments: String,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq, Clone)]
struct Choice {
    index: usize,
    message: Message,
    finish_reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<CachedDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<ReasoningDetails>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct CachedDetails {
    cached_tokens: u64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct ReasoningDetails {
    reasoning_tokens: u64,
}

impl From<&Usage> for UsageOut {
    fn from(u: &Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
            prompt_tokens_details: (u.cached_prompt_tokens > 0).then_some(CachedDetails {
                cached_tokens: u.cached_prompt_tokens,
            }),
            completion_tokens_details: (u.reasoning_tokens > 0).then_some(ReasoningDetails {
                reasoning_tokens: u.reasoning_tokens,
            }),
        }
    }
}

/// A `chat.completion`, as stored and as read back for replay.
#[derive(Debug, Serialize, Deserialize)]
struct Completion {
    id: String,
    object: Cow<'static, str>,
    created: u64,
    model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<String>,
    choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

/// Builds a `chat.completion` from the chunk events of a stream as they pass.
#[derive(Debug, Default)]
pub struct Assembler {
    id: String,
    created: u64,
    model: String,
    system_fingerprint: Option<String>,
    choices: Vec<Choice>,
    /// Something in the stream cannot be stored faithfully (an error event, an event that
    /// does not parse).
    unstorable: bool,
    /// The stream carries what the completion leaves out (logprobs): not stored, though
    /// the completion says the rest of it.
    lossy: bool,
    /// The usage of the stream's usage chunk, if it had one.
    usage: Option<Usage>,
}

impl Assembler {
    /// Feeds one SSE event as the client received it.
    pub fn event(&mut self, event: &[u8]) {
        let Some(data) = event_data(event) else {
            return;
        };
        if data.as_ref() == b"[DONE]" {
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<ChunkIn<'_>>(&data) else {
            self.unstorable = true;
            return;
        };
        if chunk.error.is_some() {
            self.unstorable = true;
            return;
        }
        if let Some(u) = chunk.usage {
            if let Ok(u) = serde_json::from_str::<UsageOut>(u.get()) {
                self.usage = Some(Usage::from(&u));
            }
        }
        if let Some(id) = chunk.id {
            if self.id.is_empty() {
                self.id = id.into_owned();
            }
        }
        if let Some(c) = chunk.created {
            self.created = c;
        }
        if let Some(m) = chunk.model {
            if self.model.is_empty() {
                self.model = m.into_owned();
            }
        }
        if let Some(f) = chunk.system_fingerprint {
            self.system_fingerprint = Some(f.into_owned());
        }
        for c in chunk.choices {
            if c.logprobs.is_some_and(|l| l.get() != "null") {
                self.lossy = true;
            }
            while self.choices.len() <= c.index {
                let index = self.choices.len();
                self.choices.push(Choice {
                    index,
                    message: Message {
                        role: "assistant".into(),
                        ..Message::default()
                    },
                    finish_reason: None,
                });
            }
            let choice = &mut self.choices[c.index];
            let m = &mut choice.message;
            let append = |slot: &mut Option<String>, piece: Option<Cow<'_, str>>| {
                if let Some(p) = piece {
                    slot.get_or_insert_with(String::new).push_str(&p);
                }
            };
            append(&mut m.content, c.delta.content);
            append(&mut m.refusal, c.delta.refusal);
            append(&mut m.reasoning_content, c.delta.reasoning_content);
            for b in c.delta.thinking_blocks.unwrap_or_default() {
                m.sign(b);
            }
            for t in c.delta.tool_calls.unwrap_or_default() {
                while m.tool_calls.len() <= t.index {
                    m.tool_calls.push(ToolCall {
                        kind: "function".into(),
                        ..ToolCall::default()
                    });
                }
                let call = &mut m.tool_calls[t.index];
                if let Some(id) = t.id {
                    call.id.push_str(&id);
                }
                if let Some(f) = t.function {
                    if let Some(n) = f.name {
                        call.function.name.push_str(&n);
                    }
                    if let Some(a) = f.arguments {
                        call.function.arguments.push_str(&a);
                    }
                }
            }
            if let Some(f) = c.finish_reason {
                choice.finish_reason = Some(f.into_owned());
            }
        }
    }

    /// The completion, with `usage`; `None` if the stream cannot be stored.
    pub fn finish(self, usage: &Usage) -> Option<Bytes> {
        if self.lossy {
            return None;
        }
        self.completion(Some(usage))
    }

    /// The completion the stream says (without its logprobs), with `usage`, else the
    /// usage of its usage chunk; `None` if it says none (no choices, an error event, an
    /// event that does not parse).
    pub fn completion(self, usage: Option<&Usage>) -> Option<Bytes> {
        if self.unstorable || self.choices.is_empty() {
            return None;
        }
        let usage = usage.copied().or(self.usage);
        let completion = Completion {
            id: self.id,
            object: Cow::Borrowed("chat.completion"),
            created: self.created,
            model: self.model,
            system_fingerprint: self.system_fingerprint,
            choices: self.choices,
            usage: usage.as_ref().map(UsageOut::from),
        };
        serde_json::to_vec(&completion).ok().map(Bytes::from)
    }
}

// === Completions into streams ===

impl From<&UsageOut> for Usage {
    fn from(u: &UsageOut) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_prompt_tokens: u
                .prompt_tokens_details
                .as_ref()
                .map_or(0, |d| d.cached_tokens),
            reasoning_tokens: u
                .completion_tokens_details
                .as_ref()
                .map_or(0, |d| d.reasoning_tokens),
            cache_write_tokens: 0,
            ..Usage::default()
        }
    }
}

/// A stored message as the one delta that carries all of it (but reasoning replayed block
/// by block before it: see [`signed_deltas`]).
fn whole_delta<'a>(
    m: &'a Message,
    calls: &'a [ToolCallOut<'a>],
    blocks: &'a [ThinkingBlockOut<'a>],
) -> Delta<'a> {
    let signed = m.reasoning_is_signed();
    Delta {
        role: (!signed).then_some("assistant"),
        content: Some(m.content.as_deref().unwrap_or("")),
        refusal: m.refusal.as_deref(),
        reasoning_content: m.reasoning_content.as_deref().filter(|_| !signed),
        tool_calls: calls,
        thinking_blocks: if signed { &[] } else { blocks },
    }
}

/// A stored block as a chunk writes it; `streamed`: its text left out (it goes as
/// `reasoning_content` before it, as Anthropic's translation streams it).
fn block_out(b: &ThinkingBlock, streamed: bool) -> ThinkingBlockOut<'_> {
    match b.kind.as_str() {
        "redacted_thinking" => ThinkingBlockOut::redacted(b.data.as_deref().unwrap_or("")),
        _ => ThinkingBlockOut::signed(
            if streamed {
                ""
            } else {
                b.thinking.as_deref().unwrap_or("")
            },
            b.signature.as_deref().unwrap_or(""),
        ),
    }
}

/// A message's signed reasoning as the upstream streamed it, when its blocks cover it
/// (see [`Message::reasoning_is_signed`]): per block its text as `reasoning_content`, then
/// the block with its signature; the first event names the role.
fn signed_deltas(writer: &ChunkWriter, out: &mut Vec<u8>, index: usize, m: &Message) {
    if !m.reasoning_is_signed() {
        return;
    }
    let mut role = Some("assistant");
    for b in &m.thinking_blocks {
        let block = [block_out(b, true)];
        let mut delta = Delta::thinking_blocks(&block);
        if let Some(t) = b.thinking.as_deref().filter(|t| !t.is_empty()) {
            let text = Delta {
                role: role.take(),
                ..Delta::reasoning(t)
            };
            writer.choices(out, &[chunk_choice(index, text)]);
        }
        delta.role = role.take();
        writer.choices(out, &[chunk_choice(index, delta)]);
    }
}

fn chunk_choice(index: usize, delta: Delta<'_>) -> ChunkChoice<'_> {
    ChunkChoice {
        index,
        delta,
        finish_reason: None,
        logprobs: None,
    }
}

/// A stored completion as the event stream a streaming client expects, written by the
/// providers' chunk writer: per choice one event with the whole message, then one with its
/// finish reason, then usage when the client asked for it (`stream_options.include_usage`),
/// then `[DONE]`. `None` if `body` is not a completion.
pub fn to_sse(body: &[u8], include_usage: bool) -> Option<Bytes> {
    let c: Completion = serde_json::from_slice(body).ok()?;
    let writer =
        ChunkWriter::of_completion(&c.id, c.created, &c.model, c.system_fingerprint.as_deref());
    let calls: Vec<Vec<ToolCallOut<'_>>> = c
        .choices
        .iter()
        .map(|ch| {
            let calls = ch.message.tool_calls.iter().enumerate();
            calls
                .map(|(i, t)| ToolCallOut {
                    kind: Some(&t.kind),
                    ..ToolCallOut::new(
                        Some(i),
                        Cow::Borrowed(&t.id),
                        Cow::Borrowed(&t.function.name),
                        Cow::Borrowed(&t.function.arguments),
                    )
                })
                .collect()
        })
        .collect();
    let blocks: Vec<Vec<ThinkingBlockOut<'_>>> = c
        .choices
        .iter()
        .map(|ch| {
            let blocks = ch.message.thinking_blocks.iter();
            blocks.map(|b| block_out(b, false)).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(body.len() + 512);
    for ch in &c.choices {
        signed_deltas(&writer, &mut out, ch.index, &ch.message);
    }
    let content: Vec<ChunkChoice<'_>> = c
        .choices
        .iter()
        .zip(calls.iter().zip(&blocks))
        .map(|(ch, (calls, blocks))| {
            chunk_choice(ch.index, whole_delta(&ch.message, calls, blocks))
        })
        .collect();
    writer.choices(&mut out, &content);
    let finish: Vec<ChunkChoice<'_>> = c
        .choices
        .iter()
        .map(|ch| ChunkChoice {
            index: ch.index,
            delta: Delta::default(),
            finish_reason: Some(ch.finish_reason.as_deref().unwrap_or("stop")),
            logprobs: None,
        })
        .collect();
    writer.choices(&mut out, &finish);
    if let (true, Some(u)) = (include_usage, &c.usage) {
        writer.usage(&mut out, &Usage::from(u));
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_types::sse::{Keep, SseScanner};

    fn assemble(stream: &[u8], usage: &Usage) -> Option<Bytes> {
        let mut a = Assembler::default();
        let mut scanner = SseScanner::new(1 << 20);
        let _ = scanner.push(Bytes::copy_from_slice(stream), |ev| {
            a.event(ev);
            Keep::Yes
        });
        a.finish(usage)
    }

    #[test]
    fn entries_round_trip() {
        let a = Answer {
            meta: Meta {
                model: "m".into(),
                provider: "p".into(),
                created_ms: 5,
                prompt_tokens: 3,
                cost_nano_usd: 42,
                ..Meta::default()
            },
            body: Bytes::from_static(b"{\"x\":1}"),
        };
        assert_eq!(Answer::decode(&a.encode()), Some(a));
        assert_eq!(Answer::decode(&Bytes::from_static(b"SLC2....")), None);
        assert_eq!(Answer::decode(&Bytes::from_static(b"SLC1\xff\xff")), None);
    }

    #[test]
    fn a_stream_assembles_into_a_completion_and_replays_as_the_same_stream() {
        let stream = concat!(
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 4,
            cached_prompt_tokens: 2,
            reasoning_tokens: 0,
            cache_write_tokens: 0,
            ..Usage::default()
        };
        let body = assemble(stream.as_bytes(), &usage).expect("storable");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["id"], "c1");
        assert_eq!(v["choices"][0]["message"]["content"], "Hello");
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_1");
        assert_eq!(call["function"]["name"], "get");
        assert_eq!(call["function"]["arguments"], "{\"a\":1}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["total_tokens"], 14);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 2);

        // Replayed as a stream, it assembles into the same completion.
        let sse = to_sse(&body, true).expect("a completion");
        let text = std::str::from_utf8(&sse).expect("utf-8");
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert!(text.contains("\"choices\":[],\"usage\""));
        assert_eq!(assemble(&sse, &usage), Some(body.clone()));
        let no_usage = to_sse(&body, false).expect("a completion");
        assert!(!std::str::from_utf8(&no_usage)
            .expect("utf-8")
            .contains("\"usage\""));
    }

    #[test]
    fn signed_thinking_is_kept_and_replayed_as_it_streamed() {
        let head = r#"data: {"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":"#;
        let event = |delta: &str| format!("{head}{delta},\"finish_reason\":null}}]}}\n\n");
        let stream = [
            event(r#"{"role":"assistant","reasoning_content":"Let me "}"#),
            event(r#"{"reasoning_content":"think."}"#),
            event(r#"{"thinking_blocks":[{"type":"thinking","thinking":"","signature":"sig1"}]}"#),
            event(r#"{"thinking_blocks":[{"type":"redacted_thinking","data":"opaque"}]}"#),
            event(r#"{"content":"Hi"}"#),
            format!("{head}{{}},\"finish_reason\":\"stop\"}}]}}\n\ndata: [DONE]\n\n"),
        ]
        .concat();
        let usage = Usage::default();
        let body = assemble(stream.as_bytes(), &usage).expect("storable");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let m = &v["choices"][0]["message"];
        assert_eq!(m["reasoning_content"], "Let me think.");
        assert_eq!(
            m["thinking_blocks"],
            serde_json::json!([
                {"type": "thinking", "thinking": "Let me think.", "signature": "sig1"},
                {"type": "redacted_thinking", "data": "opaque"}
            ])
        );
        // Replayed as a stream: the reasoning, then its signature, as the upstream sent
        // them; assembled again, the same completion.
        let sse = to_sse(&body, false).expect("a completion");
        let text = std::str::from_utf8(&sse).unwrap();
        let reasoning = text
            .find(r#""reasoning_content":"Let me think.""#)
            .expect(text);
        let signature = text.find(r#""signature":"sig1""#).expect(text);
        assert!(reasoning < signature, "{text}");
        assert!(!text.contains(r#""thinking":"Let me"#), "{text}");
        assert_eq!(assemble(&sse, &usage), Some(body));

        // A whole answer's blocks (stored as it came) replay with their signature too.
        let whole = br#"{"id":"c","object":"chat.completion","created":7,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","reasoning_content":"Hm.","thinking_blocks":[{"type":"thinking","thinking":"Hm.","signature":"s2"}]},"finish_reason":"stop"}]}"#;
        let sse = to_sse(whole, false).expect("a completion");
        let again = assemble(&sse, &usage).expect("storable");
        let again: serde_json::Value = serde_json::from_slice(&again).unwrap();
        assert_eq!(
            again["choices"][0]["message"]["thinking_blocks"][0]["signature"],
            "s2"
        );
        assert_eq!(again["choices"][0]["message"]["reasoning_content"], "Hm.");
    }

    #[test]
    fn a_completion_replays_as_these_chunks() {
        let body = br#"{"id":"c","object":"chat.completion","created":7,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"no","tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"},{"index":1,"message":{"role":"assistant","content":"hi","reasoning_content":"hm"},"finish_reason":null}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let sse = to_sse(body, true).expect("a completion");
        let head = r#"data: {"id":"c","object":"chat.completion.chunk","created":7,"model":"m","system_fingerprint":"fp","choices":"#;
        let expected = [
            format!(
                r#"{head}[{{"index":0,"delta":{{"role":"assistant","content":"","refusal":"no","tool_calls":[{{"index":0,"id":"t","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}},"finish_reason":null}},{{"index":1,"delta":{{"role":"assistant","content":"hi","reasoning_content":"hm"}},"finish_reason":null}}]}}"#
            ),
            format!(
                r#"{head}[{{"index":0,"delta":{{}},"finish_reason":"tool_calls"}},{{"index":1,"delta":{{}},"finish_reason":"stop"}}]}}"#
            ),
            format!(
                r#"{head}[],"usage":{{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"prompt_tokens_details":{{"cached_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0}}}}}}"#
            ),
            "data: [DONE]".to_string(),
        ];
        assert_eq!(
            std::str::from_utf8(&sse).unwrap(),
            expected.join("\n\n") + "\n\n"
        );
    }

    #[test]
    fn streams_that_cannot_be_stored() {
        let usage = Usage::default();
        let error = b"data: {\"error\":{\"message\":\"cut\"}}\n\n";
        assert_eq!(assemble(error, &usage), None);
        let logprobs = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"logprobs\":{\"content\":[]},\"finish_reason\":\"stop\"}]}\n\n";
        assert_eq!(assemble(logprobs, &usage), None);
        assert_eq!(assemble(b"data: [DONE]\n\n", &usage), None);
        assert_eq!(assemble(b"data: {not json\n\n", &usage), None);
    }
}
