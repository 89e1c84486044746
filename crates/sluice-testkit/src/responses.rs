//! JSON payloads produced by the fake upstream.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::behavior::FakeToolCall;

/// Assistant content of a non-streaming chat completion, unless overridden.
pub const DEFAULT_CONTENT: &str = "Hello from the fake upstream.";

/// Content pieces of a streamed chat completion, unless overridden.
pub const DEFAULT_PIECES: [&str; 5] = ["Hello", " from", " the", " fake", " upstream."];

/// Number of dimensions of fake embeddings when the request has no
/// `dimensions` field.
pub const DEFAULT_EMBEDDING_DIMS: usize = 8;

/// Id of the single model listed by `GET /v1/models`.
pub const FAKE_MODEL_ID: &str = "fake-model";

/// Prompt tokens reported in chat completion usage.
pub const PROMPT_TOKENS: u64 = 12;

/// Completion tokens reported in non-streaming chat completion usage.
pub const COMPLETION_TOKENS: u64 = 9;

/// Largest `dimensions` honoured for embeddings (keeps responses bounded).
const MAX_EMBEDDING_DIMS: usize = 65_536;

/// An OpenAI-shaped error body.
pub(crate) fn error_json(message: &str, kind: &str) -> Bytes {
    let v = json!({
        "error": {"message": message, "type": kind, "param": null, "code": null}
    });
    Bytes::from(v.to_string())
}

/// The OpenAI error `type` usually paired with an HTTP status.
pub(crate) fn error_type_for(status: u16) -> &'static str {
    match status {
        400 | 404 | 405 | 409 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "api_error",
    }
}

/// Seconds since the Unix epoch (a fixed date if the clock is before it).
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1_700_000_000)
}

/// The parts of a chat completion request the fake looks at.
#[derive(Debug)]
pub(crate) struct ChatRequest {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
}

impl ChatRequest {
    /// Reads the interesting fields of a parsed request body.
    pub fn from_json(body: &Value) -> Result<Self, String> {
        let obj = body
            .as_object()
            .ok_or_else(|| "request body must be a JSON object".to_owned())?;
        let model = match obj.get("model") {
            None | Some(Value::Null) => FAKE_MODEL_ID.to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("`model` must be a string".to_owned()),
        };
        let stream = match obj.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("`stream` must be a boolean".to_owned()),
        };
        let include_usage = obj
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Self {
            model,
            stream,
            include_usage,
        })
    }
}

/// A complete non-streaming `chat.completion` body: `content`, or a call of `tool`.
pub(crate) fn chat_completion(
    id: &str,
    created: u64,
    model: &str,
    content: &str,
    tool: Option<&FakeToolCall>,
    usage: Option<&crate::behavior::FakeUsage>,
) -> Bytes {
    let mut v = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS
        },
        "system_fingerprint": "fp_fake",
        "x_fake_extra": {"kept": true}
    });
    if let Some(u) = usage {
        v["usage"] = u.openai();
    }
    if let Some(t) = tool {
        v["choices"][0]["message"]["content"] = Value::Null;
        v["choices"][0]["message"]["tool_calls"] = json!([{
            "id": "call_fake_1", "type": "function",
            "function": {"name": t.name, "arguments": t.arguments},
        }]);
        v["choices"][0]["finish_reason"] = json!("tool_calls");
    }
    Bytes::from(v.to_string())
}

/// Builds the `chat.completion.chunk` events of one streamed response.
#[derive(Debug, Clone)]
pub(crate) struct ChunkFactory {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
}

impl ChunkFactory {
    fn chunk(&self, delta: Value, finish_reason: Value) -> Bytes {
        let mut v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason
            }]
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        sse_data(&v.to_string())
    }

    /// The first chunk: the assistant role with empty content.
    pub fn role(&self) -> Bytes {
        self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)
    }

    /// A chunk carrying one content piece.
    pub fn content(&self, piece: &str) -> Bytes {
        self.chunk(json!({"content": piece}), Value::Null)
    }

    /// The chunk with an empty delta and `finish_reason: "stop"`.
    pub fn finish(&self) -> Bytes {
        self.finish_with("stop")
    }

    /// The chunk with an empty delta and `finish_reason`.
    pub fn finish_with(&self, reason: &str) -> Bytes {
        self.chunk(json!({}), json!(reason))
    }

    /// The first delta of a tool call: id, type, name, empty arguments.
    pub fn tool_call_start(&self, name: &str) -> Bytes {
        self.chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_fake_1", "type": "function",
                                   "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        )
    }

    /// A later delta of the tool call: a piece of its arguments.
    pub fn tool_call_arguments(&self, piece: &str) -> Bytes {
        self.chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            Value::Null,
        )
    }

    /// The trailing usage chunk (`choices: []`).
    pub fn usage(
        &self,
        completion_tokens: u64,
        usage: Option<&crate::behavior::FakeUsage>,
    ) -> Bytes {
        let mut v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": completion_tokens,
                "total_tokens": PROMPT_TOKENS + completion_tokens
            }
        });
        if let Some(u) = usage {
            v["usage"] = u.openai();
        }
        sse_data(&v.to_string())
    }
}

/// One SSE event carrying `payload` as its data.
pub(crate) fn sse_data(payload: &str) -> Bytes {
    let mut s = String::with_capacity(payload.len() + 8);
    s.push_str("data: ");
    s.push_str(payload);
    s.push_str("\n\n");
    Bytes::from(s)
}

/// The final `data: [DONE]` event.
pub(crate) fn sse_done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// The `GET /v1/models` body.
pub(crate) fn models() -> Bytes {
    let v = json!({
        "object": "list",
        "data": [{
            "id": FAKE_MODEL_ID,
            "object": "model",
            "created": 1_700_000_000u64,
            "owned_by": "fake"
        }]
    });
    Bytes::from(v.to_string())
}

/// The `POST /v1/embeddings` body for a parsed request, or a message for a
/// 400 error.
pub(crate) fn embeddings(body: &Value) -> Result<Bytes, String> {
    let obj = body
        .as_object()
        .ok_or_else(|| "request body must be a JSON object".to_owned())?;
    let model = match obj.get("model") {
        None | Some(Value::Null) => FAKE_MODEL_ID,
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("`model` must be a string".to_owned()),
    };
    let dims = match obj.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_EMBEDDING_DIMS,
        Some(v) => v
            .as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .filter(|d| (1..=MAX_EMBEDDING_DIMS).contains(d))
            .ok_or_else(|| {
                format!("`dimensions` must be an integer between 1 and {MAX_EMBEDDING_DIMS}")
            })?,
    };
    // Byte length of each input: strings count their UTF-8 bytes, token
    // arrays count 4 bytes per token.
    let lengths: Vec<usize> = match obj.get("input") {
        Some(Value::String(s)) => vec![s.len()],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err("`input` must not be empty".to_owned())
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            vec![items.len() * 4]
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.len()),
                Value::Array(tokens) if tokens.iter().all(Value::is_number) => Ok(tokens.len() * 4),
                _ => Err("`input` items must be strings or token arrays".to_owned()),
            })
            .collect::<Result<_, _>>()?,
        None | Some(Value::Null) => return Err("missing required parameter `input`".to_owned()),
        Some(_) => {
            return Err("`input` must be a string or an array".to_owned());
        }
    };
    let data: Vec<Value> = lengths
        .iter()
        .enumerate()
        .map(|(index, len)| {
            json!({
                "object": "embedding",
                "index": index,
                "embedding": embedding_vector(*len, index, dims),
            })
        })
        .collect();
    let total_bytes: usize = lengths.iter().sum();
    let tokens = total_bytes.div_ceil(4).max(1);
    let v = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    });
    Ok(Bytes::from(v.to_string()))
}

/// A deterministic vector in `[-1, 1]` derived from an input's length and
/// index.
pub(crate) fn embedding_vector(len: usize, index: usize, dims: usize) -> Vec<f32> {
    (0..dims)
        .map(|j| {
            // Small integers convert to f64 exactly; precision does not matter
            // for fake data anyway.
            let x = (len as f64 + 1.0) * (j as f64 + 1.0) + index as f64 * 0.5;
            // Round to 6 decimals so the JSON stays short.
            ((x.sin() * 1e6).round() / 1e6) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_count_inputs_and_tokens() {
        let body = json!({"model": "m", "input": ["abcd", "abcde"]});
        let out: Value = serde_json::from_slice(&embeddings(&body).unwrap()).unwrap();
        assert_eq!(out["data"].as_array().unwrap().len(), 2);
        assert_eq!(out["usage"]["prompt_tokens"], 3);
        assert_eq!(out["model"], "m");

        let tokens = json!({"model": "m", "input": [1, 2, 3]});
        let out: Value = serde_json::from_slice(&embeddings(&tokens).unwrap()).unwrap();
        assert_eq!(out["data"].as_array().unwrap().len(), 1);
        assert_eq!(out["usage"]["prompt_tokens"], 3);

        let empty = json!({"model": "m", "input": ""});
        let out: Value = serde_json::from_slice(&embeddings(&empty).unwrap()).unwrap();
        assert_eq!(out["usage"]["prompt_tokens"], 1);
    }

    #[test]
    fn embeddings_reject_bad_input() {
        assert!(embeddings(&json!({"model": "m"})).is_err());
        assert!(embeddings(&json!({"model": "m", "input": []})).is_err());
        assert!(embeddings(&json!({"model": "m", "input": [{}]})).is_err());
        assert!(embeddings(&json!({"model": "m", "input": "x", "dimensions": 0})).is_err());
    }

    #[test]
    fn vectors_are_deterministic() {
        assert_eq!(embedding_vector(5, 1, 8), embedding_vector(5, 1, 8));
        assert_ne!(embedding_vector(5, 1, 8), embedding_vector(6, 1, 8));
    }
}
