//! Inbound Anthropic compatibility: `POST /v1/messages` in Anthropic's format, served by any
//! provider. The request becomes an OpenAI chat request (the gateway's own format); the
//! answer, whole or streamed, becomes a Messages API answer again.
//!
//! Format: Anthropic's API reference, "Messages" and "Streaming Messages".

use serde::Deserialize;
use serde_json::{json, Map, Value};
use sluice_types::Usage;

/// Why an Anthropic request cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

#[derive(Deserialize)]
struct InRequest {
    model: String,
    max_tokens: Option<u64>,
    messages: Vec<InMessage>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    content: Value,
}

#[derive(Deserialize)]
struct InTool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn image_url(block: &Value) -> Option<String> {
    let source = block.get("source")?;
    match source.get("type").and_then(Value::as_str)? {
        "base64" => Some(format!(
            "data:{};base64,{}",
            source.get("media_type")?.as_str()?,
            source.get("data")?.as_str()?
        )),
        "url" => Some(source.get("url")?.as_str()?.to_string()),
        _ => None,
    }
}

/// The OpenAI chat request body for an Anthropic Messages request body. Returns the body,
/// the model asked for, and whether it streams.
pub fn to_openai(body: &[u8]) -> Result<(Vec<u8>, String, bool), BadRequest> {
    let r: InRequest = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("invalid Messages request: {e}")))?;
    let max_tokens = r
        .max_tokens
        .ok_or_else(|| BadRequest("max_tokens: Field required".into()))?;
    let mut messages = Vec::new();
    if let Some(system) = &r.system {
        messages.push(json!({"role": "system", "content": text_of(system)}));
    }
    for (i, m) in r.messages.iter().enumerate() {
        let blocks: Vec<Value> = match &m.content {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(a) => a.clone(),
            _ => {
                return Err(BadRequest(format!(
                    "messages.{i}.content: expected a string or a list of blocks"
                )))
            }
        };
        match m.role.as_str() {
            "user" => {
                let mut parts = Vec::new();
                for b in &blocks {
                    match b.get("type").and_then(Value::as_str) {
                        Some("text") => parts.push(json!({"type": "text", "text": b["text"]})),
                        Some("image") => {
                            if let Some(url) = image_url(b) {
                                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                            }
                        }
                        Some("tool_result") => {
                            messages.push(json!({
                                "role": "tool",
                                "tool_call_id": b["tool_use_id"],
                                "content": text_of(b.get("content").unwrap_or(&Value::Null)),
                            }));
                        }
                        _ => {}
                    }
                }
                if !parts.is_empty() {
                    messages.push(json!({"role": "user", "content": parts}));
                }
            }
            "assistant" => {
                let text: String = blocks
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str())
                    .collect();
                let calls: Vec<Value> = blocks
                    .iter()
                    .filter(|b| b["type"] == "tool_use")
                    .map(|b| json!({"id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": b.get("input").map_or_else(|| "{}".into(), Value::to_string)}}))
                    .collect();
                let mut msg = json!({"role": "assistant", "content": text});
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::Array(calls);
                }
                messages.push(msg);
            }
            other => {
                return Err(BadRequest(format!(
                    "messages.{i}.role: `{other}` is not `user` or `assistant`"
                )))
            }
        }
    }
    let stream = r.stream.unwrap_or(false);
    let mut out = Map::new();
    out.insert("model".into(), json!(r.model));
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), json!(max_tokens));
    if let Some(t) = r.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = r.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if let Some(s) = r.stop_sequences.filter(|s| !s.is_empty()) {
        out.insert("stop".into(), json!(s));
    }
    if stream {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(tools) = &r.tools {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema.clone().unwrap_or_else(|| json!({"type": "object"}))}}))
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &r.tool_choice {
        let c = match choice.get("type").and_then(Value::as_str) {
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": choice["name"]}}),
            _ => json!("auto"),
        };
        out.insert("tool_choice".into(), c);
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if let Some(user) = r.metadata.as_ref().and_then(|m| m.get("user_id")) {
        out.insert("user".into(), user.clone());
    }
    let body = serde_json::to_vec(&Value::Object(out)).map_err(|e| BadRequest(e.to_string()))?;
    Ok((body, r.model, stream))
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

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens.saturating_sub(u.cached_prompt_tokens),
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_prompt_tokens,
    })
}

/// The Messages API answer for an OpenAI `chat.completion` body.
pub fn from_openai(body: &[u8], model: &str) -> Result<Vec<u8>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid chat completion: {e}"))?;
    let choice = &v["choices"][0];
    let msg = &choice["message"];
    let mut content = Vec::new();
    if let Some(t) = msg["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for call in msg["tool_calls"].as_array().into_iter().flatten() {
        let input: Value = call["function"]["arguments"]
            .as_str()
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_else(|| json!({}));
        content.push(json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}));
    }
    let usage = Usage::from_response(body).unwrap_or_default();
    let id = v["id"].as_str().unwrap_or("sluice");
    let out = json!({
        "id": format!("msg_{}", id.trim_start_matches("chatcmpl-")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str()),
        "stop_sequence": null,
        "usage": usage_json(&usage),
    });
    serde_json::to_vec(&out).map_err(|e| e.to_string())
}

/// An Anthropic error body.
pub fn error_body(kind: &str, message: &str) -> Vec<u8> {
    let kind = match kind {
        "not_found_error"
        | "authentication_error"
        | "permission_error"
        | "rate_limit_error"
        | "request_too_large"
        | "invalid_request_error" => kind,
        "timeout_error" | "upstream_error" | "server_error" | "service_unavailable" => "api_error",
        _ => "invalid_request_error",
    };
    serde_json::to_vec(&json!({"type": "error", "error": {"type": kind, "message": message}}))
        .unwrap_or_default()
}

#[derive(Debug, PartialEq, Eq)]
enum Block {
    None,
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
    finish: Option<String>,
    usage: Usage,
    done: bool,
}

fn event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
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
            finish: None,
            usage: Usage::default(),
            done: false,
        }
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
        event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
            "id": format!("msg_{}", id.trim_start_matches("chatcmpl-")), "type": "message", "role": "assistant",
            "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        );
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        let index = match self.block {
            Block::None => return,
            Block::Text(i) | Block::Tool(i) => i,
        };
        event(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
        self.block = Block::None;
    }

    /// Feeds the `data` of one OpenAI SSE event; appends Anthropic events to `out`.
    pub fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if data == b"[DONE]" {
            self.finish_stream(out);
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        if let Some(err) = v.get("error") {
            let message = err["message"].as_str().unwrap_or("upstream error");
            let kind = err["type"].as_str().unwrap_or("api_error");
            event(
                out,
                "error",
                &serde_json::from_slice::<Value>(&error_body(kind, message)).unwrap_or_default(),
            );
            self.done = true;
            return;
        }
        self.start(out, v["id"].as_str().unwrap_or("sluice"));
        if let Some(u) = Usage::from_response(data) {
            self.usage = u;
        }
        let choice = &v["choices"][0];
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            if !matches!(self.block, Block::Text(_)) {
                self.close_block(out);
                let index = self.next_index;
                self.next_index += 1;
                self.block = Block::Text(index);
                event(
                    out,
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                );
            }
            if let Block::Text(index) = self.block {
                event(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
                );
            }
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let tool = call["index"].as_u64().unwrap_or(0);
            let index = match self.tools.iter().find(|(t, _)| *t == tool) {
                Some(&(_, i)) => i,
                None => {
                    self.close_block(out);
                    let index = self.next_index;
                    self.next_index += 1;
                    self.tools.push((tool, index));
                    self.block = Block::Tool(index);
                    event(
                        out,
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": {}}}),
                    );
                    index
                }
            };
            if let Some(args) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                event(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}}),
                );
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(f.to_string());
        }
    }

    /// Closes the stream: the open block, `message_delta` with the stop reason and usage,
    /// `message_stop`.
    pub fn finish_stream(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start(out, "sluice");
        self.close_block(out);
        let mut usage = usage_json(&self.usage);
        if let Some(o) = usage.as_object_mut() {
            o.retain(|k, _| {
                k == "output_tokens" || k == "input_tokens" || k == "cache_read_input_tokens"
            });
        }
        event(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null}, "usage": usage}),
        );
        event(out, "message_stop", &json!({"type": "message_stop"}));
        self.done = true;
    }
}
