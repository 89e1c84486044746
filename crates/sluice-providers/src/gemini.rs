//! `type = "gemini"`: Google's Gemini API (`generateContent`, `streamGenerateContent` with
//! `alt=sse`, `batchEmbedContents`), translated to and from OpenAI's format.
//!
//! Formats: the Gemini API reference, "Generating content" (`GenerateContentRequest`,
//! `GenerateContentResponse`, `UsageMetadata`, `FinishReason`, `PromptFeedback`),
//! "Function calling", and "Embeddings" (`batchEmbedContents`).
//!
//! What maps: `system`/`developer` messages → `systemInstruction`; `user` → `user` and
//! `assistant` → `model` turns (consecutive turns of one role merged); text parts, images as
//! `inlineData` (data URLs) or `fileData` (other URLs); assistant `tool_calls` →
//! `functionCall` parts; `tool` messages → `functionResponse` parts (the function's name is
//! found from the call they answer); `tools` → `functionDeclarations`, `tool_choice` →
//! `toolConfig.functionCallingConfig` (`AUTO`, `ANY`, `NONE`, or `ANY` restricted to the
//! named function); `temperature`, `top_p`, `max_tokens`, `stop`, `seed` →
//! `generationConfig`; `response_format` JSON → `responseMimeType: application/json` (with
//! `responseSchema` for a JSON schema). Back: text parts, `functionCall` parts as
//! `tool_calls` (ids made up as `call_N` where Gemini sends none), `finishReason` (`STOP` →
//! `stop`, `MAX_TOKENS` → `length`, `SAFETY`/`RECITATION`/`BLOCKLIST`/`PROHIBITED_CONTENT`/
//! `SPII` → `content_filter`), a prompt blocked by `promptFeedback.blockReason` as an empty
//! answer with `finish_reason: content_filter`, and `usageMetadata` (cached and thinking
//! tokens included). Not mapped: `n` > 1 (`candidateCount` is left at one so streams stay
//! one choice), `logprobs`.

use crate::chunks::{completion, ChunkWriter};
use crate::client::UpstreamBody;
use crate::openai::{post, static_headers, uri};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Uri};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sluice_core::config::ProviderConfig;
use sluice_core::Error;
use sluice_types::openai::{ChatCompletionRequest, Content, Part, Role, ToolChoice};
use sluice_types::Usage;
use std::collections::HashMap;

/// The config `type` of this adapter.
pub const PROVIDER_TYPE: &str = "gemini";

/// The `gemini` adapter.
#[derive(Debug)]
pub struct Gemini {
    base_url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    config_name: String,
}

impl Gemini {
    /// Prepares the headers (`x-goog-api-key`) for `config`.
    pub fn new(config: &ProviderConfig) -> Result<Self, Error> {
        let auth = config.api_key.as_ref().map(|k| {
            (
                HeaderName::from_static("x-goog-api-key"),
                k.expose().to_string(),
            )
        });
        // Checks that the base URL forms a URI at start rather than per request.
        uri(config, "/v1beta/models")?;
        Ok(Self {
            base_url: config.base_url.clone(),
            headers: static_headers(config, auth)?,
            config_name: config.name.clone(),
        })
    }

    /// The upstream request: `generateContent`, `streamGenerateContent?alt=sse` or
    /// `batchEmbedContents` of `model`.
    pub fn request(
        &self,
        model: &str,
        method: Method,
        body: Bytes,
        request_id: &HeaderValue,
    ) -> Result<Request<UpstreamBody>, Error> {
        let path = match method {
            Method::Generate => "generateContent",
            Method::Stream => "streamGenerateContent?alt=sse",
            Method::Embed => "batchEmbedContents",
        };
        let uri: Uri = format!("{}/v1beta/models/{model}:{path}", self.base_url)
            .parse()
            .map_err(|_| {
                Error::from(sluice_core::ErrorKind::InvalidRequest {
                    message: format!(
                        "model id `{model}` does not fit in a URL of provider `{}`",
                        self.config_name
                    ),
                    param: Some("model"),
                })
            })?;
        Ok(post(&uri, &self.headers, body, request_id))
    }
}

/// Which Gemini method a request calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `generateContent`.
    Generate,
    /// `streamGenerateContent` with SSE.
    Stream,
    /// `batchEmbedContents`.
    Embed,
}

/// Why a request cannot be expressed for Gemini.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable(pub String);

fn image_part(url: &str) -> Value {
    if let Some((meta, data)) = url.strip_prefix("data:").and_then(|r| r.split_once(',')) {
        return json!({"inlineData": {"mimeType": meta.trim_end_matches(";base64"), "data": data}});
    }
    json!({"fileData": {"fileUri": url}})
}

fn push_turn(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut() {
        if last["role"] == role {
            if let Some(p) = last["parts"].as_array_mut() {
                p.extend(parts);
                return;
            }
        }
    }
    contents.push(json!({"role": role, "parts": parts}));
}

/// The `generateContent` body for `req`.
pub fn to_request(req: &ChatCompletionRequest) -> Result<Vec<u8>, Untranslatable> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in req.messages.iter().enumerate() {
        let parts = |c: &Option<Content>| -> Vec<Value> {
            match c {
                None => Vec::new(),
                Some(Content::Text(t)) if t.is_empty() => Vec::new(),
                Some(Content::Text(t)) => vec![json!({"text": t})],
                Some(Content::Parts(ps)) => ps
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text { text } => Some(json!({"text": text})),
                        Part::ImageUrl { image_url } => Some(image_part(&image_url.url)),
                        Part::Other => None,
                    })
                    .collect(),
            }
        };
        match m.role {
            Role::System | Role::Developer => system.extend(parts(&m.content)),
            Role::User => push_turn(&mut contents, "user", parts(&m.content)),
            Role::Assistant => {
                let mut ps = parts(&m.content);
                for call in m.tool_calls.iter().flatten() {
                    call_names.insert(&call.id, &call.function.name);
                    let args: Value = if call.function.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&call.function.arguments).map_err(|e| {
                            Untranslatable(format!(
                                "`messages[{i}].tool_calls`: arguments are not JSON: {e}"
                            ))
                        })?
                    };
                    ps.push(json!({"functionCall": {"name": call.function.name, "args": args}}));
                }
                push_turn(&mut contents, "model", ps);
            }
            Role::Tool | Role::Function => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let name = call_names
                    .get(id)
                    .copied()
                    .or(m.name.as_deref())
                    .ok_or_else(|| {
                        Untranslatable(format!(
                            "`messages[{i}]`: no earlier tool call has the id `{id}`, and Gemini needs the function's name"
                        ))
                    })?;
                let text = m.content.as_ref().map(Content::text).unwrap_or_default();
                let response = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"result": text}));
                push_turn(
                    &mut contents,
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
        }
    }
    if contents.is_empty() {
        return Err(Untranslatable(
            "Gemini needs at least one user message".into(),
        ));
    }
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let mut gen = Map::new();
    if let Some(t) = req.temperature {
        gen.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        gen.insert("topP".into(), json!(p));
    }
    if let Some(n) = req.output_cap() {
        gen.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(stop) = &req.stop {
        gen.insert("stopSequences".into(), json!(stop.clone().into_vec()));
    }
    if let Some(seed) = req.seed {
        gen.insert("seed".into(), json!(seed));
    }
    match req
        .response_format
        .as_ref()
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
    {
        Some("json_object") => {
            gen.insert("responseMimeType".into(), json!("application/json"));
        }
        Some("json_schema") => {
            gen.insert("responseMimeType".into(), json!("application/json"));
            if let Some(schema) = req
                .response_format
                .as_ref()
                .and_then(|f| f["json_schema"].get("schema"))
            {
                gen.insert("responseSchema".into(), schema.clone());
            }
        }
        _ => {}
    }
    if !gen.is_empty() {
        out.insert("generationConfig".into(), Value::Object(gen));
    }
    if let Some(tools) = &req.tools {
        let decls: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.function.name});
                if let Some(desc) = &t.function.description {
                    d["description"] = json!(desc);
                }
                if let Some(p) = &t.function.parameters {
                    d["parameters"] = p.clone();
                }
                d
            })
            .collect();
        out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    let mode = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "auto" => Some(json!({"mode": "AUTO"})),
            "required" => Some(json!({"mode": "ANY"})),
            "none" => Some(json!({"mode": "NONE"})),
            other => {
                return Err(Untranslatable(format!(
                    "`tool_choice` `{other}` is not one of auto, required, none"
                )))
            }
        },
        Some(ToolChoice::Named { function }) => {
            Some(json!({"mode": "ANY", "allowedFunctionNames": [function.name]}))
        }
    };
    if let Some(mode) = mode {
        out.insert("toolConfig".into(), json!({"functionCallingConfig": mode}));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| Untranslatable(e.to_string()))
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
}

impl WireUsage {
    fn normalised(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_token_count,
            completion_tokens: self.candidates_token_count + self.thoughts_token_count,
            cached_prompt_tokens: self.cached_content_token_count,
            reasoning_tokens: self.thoughts_token_count,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    #[serde(default)]
    candidates: Vec<WireCandidate>,
    #[serde(default)]
    prompt_feedback: Option<Value>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// OpenAI's `finish_reason` for a Gemini `finishReason`.
pub fn finish_reason(reason: &str, tools: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if tools => "tool_calls",
        _ => "stop",
    }
}

/// Text and function calls of a candidate's parts.
fn read_parts(content: Option<&Value>, first_call: usize) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in content
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // Thought summaries are not part of the answer.
        if part.get("thought") == Some(&Value::Bool(true)) {
            continue;
        }
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(fc) = part.get("functionCall") {
            let n = first_call + calls.len();
            calls.push(json!({
                "index": n,
                "id": fc.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{n}"), str::to_string),
                "type": "function",
                "function": {"name": fc["name"], "arguments": fc.get("args").map_or_else(|| "{}".to_string(), Value::to_string)},
            }));
        }
    }
    (text, calls)
}

/// A `chat.completion` body for a `generateContent` response.
pub fn from_response(body: &[u8], model: &str) -> Result<(Vec<u8>, Usage), String> {
    let r: WireResponse =
        serde_json::from_slice(body).map_err(|e| format!("not a Gemini response: {e}"))?;
    let usage = r.usage_metadata.unwrap_or_default().normalised();
    let (text, calls, finish) = match r.candidates.first() {
        Some(c) => {
            let (text, calls) = read_parts(c.content.as_ref(), 0);
            let finish = finish_reason(
                c.finish_reason.as_deref().unwrap_or("STOP"),
                !calls.is_empty(),
            );
            (text, calls, finish)
        }
        // No candidate: the prompt itself was blocked (promptFeedback.blockReason).
        None if r.prompt_feedback.is_some() => (String::new(), Vec::new(), "content_filter"),
        None => return Err("Gemini answered without a candidate".into()),
    };
    Ok((
        completion("gemini", model, &text, calls, finish, &usage),
        usage,
    ))
}

/// Translates `streamGenerateContent?alt=sse` events into OpenAI chunk events. Gemini's
/// stream has no end marker: [`StreamTranslator::end`] closes it when the upstream does.
#[derive(Debug)]
pub struct StreamTranslator {
    writer: ChunkWriter,
    include_usage: bool,
    started: bool,
    calls: usize,
    usage: Usage,
    finish: Option<&'static str>,
}

impl StreamTranslator {
    /// A translator for a stream answering `model`.
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self {
            writer: ChunkWriter::new(model, "gemini"),
            include_usage,
            started: false,
            calls: 0,
            usage: Usage::default(),
            finish: None,
        }
    }

    /// Usage so far (each event carries the running totals).
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Feeds the `data` of one event. `Err` is an error Gemini reported in the stream.
    pub fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let v: Value = serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
        if let Some(e) = v.get("error") {
            return Err(e["message"]
                .as_str()
                .unwrap_or("Gemini stream error")
                .to_string());
        }
        let r: WireResponse = serde_json::from_value(v).map_err(|e| e.to_string())?;
        if let Some(u) = r.usage_metadata {
            self.usage = u.normalised();
        }
        if !self.started {
            self.started = true;
            self.writer
                .delta(out, json!({"role": "assistant", "content": ""}), None);
        }
        match r.candidates.first() {
            Some(c) => {
                let (text, calls) = read_parts(c.content.as_ref(), self.calls);
                if !text.is_empty() {
                    self.writer.delta(out, json!({"content": text}), None);
                }
                if !calls.is_empty() {
                    self.calls += calls.len();
                    self.writer.delta(out, json!({"tool_calls": calls}), None);
                }
                if let Some(reason) = &c.finish_reason {
                    self.finish = Some(finish_reason(reason, self.calls > 0));
                }
            }
            None if r.prompt_feedback.is_some() => self.finish = Some("content_filter"),
            None => {}
        }
        Ok(())
    }

    /// Closes the stream when the upstream ends: the finish chunk, the usage chunk if asked
    /// for, and `[DONE]`. Returns `false` when the stream ended without a finish reason
    /// (cut short).
    pub fn end(&mut self, out: &mut Vec<u8>) -> bool {
        let Some(finish) = self.finish else {
            return false;
        };
        self.writer
            .finish(out, finish, self.include_usage.then_some(&self.usage));
        true
    }
}

/// The `batchEmbedContents` body for an OpenAI embeddings request body.
pub fn to_embed_request(raw: &[u8], upstream_model: &str) -> Result<Vec<u8>, Untranslatable> {
    #[derive(Deserialize)]
    struct Req {
        input: Value,
        #[serde(default)]
        dimensions: Option<u64>,
    }
    let r: Req = serde_json::from_slice(raw).map_err(|e| Untranslatable(e.to_string()))?;
    let texts: Vec<&str> = match &r.input {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).collect()
        }
        _ => {
            return Err(Untranslatable(
                "Gemini embeds text only: `input` must be a string or an array of strings".into(),
            ))
        }
    };
    let requests: Vec<Value> = texts
        .iter()
        .map(|t| {
            let mut req = json!({"model": format!("models/{upstream_model}"), "content": {"parts": [{"text": t}]}});
            if let Some(d) = r.dimensions {
                req["outputDimensionality"] = json!(d);
            }
            req
        })
        .collect();
    serde_json::to_vec(&json!({"requests": requests})).map_err(|e| Untranslatable(e.to_string()))
}

/// An OpenAI embeddings list for a `batchEmbedContents` response. Gemini reports no token
/// counts for embeddings: `estimated_tokens` (from the input's size) stands in.
pub fn from_embed_response(
    body: &[u8],
    model: &str,
    estimated_tokens: u64,
) -> Result<(Vec<u8>, Usage), String> {
    #[derive(Deserialize)]
    struct Emb {
        values: Vec<f64>,
    }
    #[derive(Deserialize)]
    struct Resp {
        embeddings: Vec<Emb>,
    }
    let r: Resp = serde_json::from_slice(body)
        .map_err(|e| format!("not a Gemini embeddings response: {e}"))?;
    let data: Vec<Value> = r
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e.values}))
        .collect();
    let out = json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": estimated_tokens, "total_tokens": estimated_tokens},
    });
    Ok((
        serde_json::to_vec(&out).unwrap_or_default(),
        Usage {
            prompt_tokens: estimated_tokens,
            ..Usage::default()
        },
    ))
}

#[cfg(test)]
mod tests;
