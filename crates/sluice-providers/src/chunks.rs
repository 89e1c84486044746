//! OpenAI `chat.completion.chunk` events and usage objects, written the same way by every
//! translating adapter.

use serde_json::{json, Value};
use sluice_types::Usage;

/// Seconds since the Unix epoch, for `created`.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// OpenAI's `usage` object for normalised usage.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total(),
        "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

/// Writes the chunks of one translated stream.
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    /// The stream's `id`.
    pub id: String,
    created: u64,
    model: String,
}

impl ChunkWriter {
    /// A writer for a stream answering `model`, with a provisional id.
    pub fn new(model: &str, id_prefix: &str) -> Self {
        let created = now_secs();
        Self {
            id: format!("chatcmpl-{id_prefix}-{created}"),
            created,
            model: model.to_string(),
        }
    }

    fn write(out: &mut Vec<u8>, chunk: &Value) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(chunk.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    /// A chunk with one choice carrying `delta` (and `finish_reason` when given).
    pub fn delta(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        let chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        Self::write(out, &chunk);
    }

    /// The usage chunk OpenAI sends last when `stream_options.include_usage` is set.
    pub fn usage(&self, out: &mut Vec<u8>, usage: &Usage) {
        let chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [], "usage": usage_json(usage),
        });
        Self::write(out, &chunk);
    }

    /// The end of a finished stream: the finish chunk, the usage chunk when asked for, and
    /// `[DONE]`.
    pub fn finish(&self, out: &mut Vec<u8>, finish: &str, usage: Option<&Usage>) {
        self.delta(out, json!({}), Some(finish));
        if let Some(u) = usage {
            self.usage(out, u);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

/// A whole `chat.completion` body with one choice. `tool_calls` may carry the `index` they
/// have in stream deltas; it is left out here, as OpenAI does.
pub fn completion(
    id_prefix: &str,
    model: &str,
    content: &str,
    mut tool_calls: Vec<Value>,
    finish: &str,
    usage: &Usage,
) -> Vec<u8> {
    let mut message = json!({"role": "assistant", "content": content});
    if !tool_calls.is_empty() {
        for c in &mut tool_calls {
            if let Some(o) = c.as_object_mut() {
                o.remove("index");
            }
        }
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let created = now_secs();
    let out = json!({
        "id": format!("chatcmpl-{id_prefix}-{created}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage_json(usage),
    });
    serde_json::to_vec(&out).unwrap_or_default()
}
