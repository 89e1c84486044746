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
//! `responseSchema` for a JSON schema); `reasoning_effort` → `thinkingConfig` (a
//! `thinkingBudget` from the effort, see [`crate::reasoning`], with `includeThoughts`;
//! `none` is a budget of 0). Back: text parts, thought parts (`thought: true`, Gemini's
//! thought summaries) as `reasoning_content`, `functionCall` parts as
//! `tool_calls` (ids made up as `call_` and 24 random hex digits where Gemini sends none; a call's
//! `thoughtSignature` rides in its id, hex after `__thought__`, and goes back with the call,
//! as Gemini 3 requires), `finishReason` (`STOP` →
//! `stop`, `MAX_TOKENS` → `length`, `SAFETY`/`RECITATION`/`BLOCKLIST`/`PROHIBITED_CONTENT`/
//! `SPII` → `content_filter`; `MALFORMED_FUNCTION_CALL` and `UNEXPECTED_TOOL_CALL` an error,
//! so the try fails over), a prompt blocked by `promptFeedback.blockReason` as an empty
//! answer with `finish_reason: content_filter`, and `usageMetadata` (cached and thinking
//! tokens included). Not mapped: `n` > 1 (`candidateCount` is left at one so streams stay
//! one choice), `logprobs`.

use crate::chunks::{
    compact_json, completion, embedding_list, made_up_call_id, ChunkWriter, Delta, ToolCallOut,
};
use crate::client::UpstreamBody;
use crate::json::{raw_arguments, raw_array, EmbedRequest, TextInput};
use crate::outbound::{get, post, static_headers, uri};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Uri};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use sluice_core::config::ProviderConfig;
use sluice_core::Error;
use sluice_types::openai::{ChatCompletionRequest, Content, Part, Role, Stop, ToolChoice};
use sluice_types::Usage;
use std::borrow::Cow;
use std::collections::HashMap;

/// The config `type` of this adapter.
pub const PROVIDER_TYPE: &str = "gemini";

/// The `gemini` adapter.
#[derive(Debug)]
pub struct Gemini {
    base_url: String,
    /// `GET {base_url}/v1beta/models`, the health check's model list.
    models_uri: Uri,
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
        let models_uri = uri(config, "/v1beta/models")?;
        Ok(Self {
            models_uri,
            base_url: config.base_url.clone(),
            headers: static_headers(config, auth)?,
            config_name: config.name.clone(),
        })
    }

    /// `GET {base_url}/v1beta/models` with the key header.
    pub fn list_models(&self, request_id: &HeaderValue) -> Request<UpstreamBody> {
        get(&self.models_uri, &self.headers, request_id)
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

pub use crate::error::Untranslatable;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest<'a> {
    contents: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Instruction<'a>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<[Declarations<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    /// The testkit's per-request control of its fake upstream, carried over (see
    /// [`ChatCompletionRequest::x_fake`]).
    #[serde(rename = "x_fake", skip_serializing_if = "Option::is_none")]
    x_fake: Option<&'a Value>,
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    parts: Vec<TurnPart<'a>>,
}

/// A part of a turn, with the thought signature Gemini gave the function call it replays.
#[derive(Serialize)]
struct TurnPart<'a> {
    #[serde(flatten)]
    part: WirePart<'a>,
    #[serde(rename = "thoughtSignature", skip_serializing_if = "Option::is_none")]
    thought_signature: Option<String>,
}

impl<'a> From<WirePart<'a>> for TurnPart<'a> {
    fn from(part: WirePart<'a>) -> Self {
        Self {
            part,
            thought_signature: None,
        }
    }
}

/// What separates a tool call's id from the thought signature Gemini gave the call (hex):
/// Gemini 3 refuses a replayed function call without its signature, and the id is the one
/// field every client sends back as it got it.
const SIGNATURE_MARK: &str = "__thought__";

/// A tool call id carrying Gemini's `signature`.
fn signed_id(id: &str, signature: &str) -> String {
    let mut out = String::with_capacity(id.len() + SIGNATURE_MARK.len() + 2 * signature.len());
    out.push_str(id);
    out.push_str(SIGNATURE_MARK);
    for b in signature.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The thought signature a tool call id carries, if it carries one.
fn signature_of(id: &str) -> Option<String> {
    let (_, hex) = id.split_once(SIGNATURE_MARK)?;
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[derive(Serialize)]
struct Instruction<'a> {
    parts: Vec<WirePart<'a>>,
}

/// A request part: exactly one of its kinds, as Gemini's `Part` union.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum WirePart<'a> {
    Text(&'a str),
    #[serde(rename_all = "camelCase")]
    InlineData {
        mime_type: &'a str,
        data: &'a str,
    },
    #[serde(rename_all = "camelCase")]
    FileData {
        file_uri: &'a str,
    },
    FunctionCall {
        name: &'a str,
        args: &'a RawValue,
    },
    FunctionResponse {
        name: &'a str,
        response: FunctionResult<'a>,
    },
}

/// `functionResponse.response`: the tool's answer when it is a JSON object, else the
/// answer as `{"result": text}`.
#[derive(Serialize)]
#[serde(untagged)]
enum FunctionResult<'a> {
    Object(Box<RawValue>),
    Text { result: Cow<'a, str> },
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<ThinkingConfig>,
}

/// `generationConfig.thinkingConfig`: the budget, and thought summaries asked for (they
/// come back as `reasoning_content`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    thinking_budget: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    include_thoughts: bool,
}

/// Gemini's `thinkingConfig` for `reasoning_effort` (`none`: a budget of 0, thinking off).
fn thinking_config(effort: Option<&str>) -> Result<Option<ThinkingConfig>, Untranslatable> {
    let Some(effort) = effort else {
        return Ok(None);
    };
    let budget = crate::reasoning::budget(effort).ok_or_else(|| {
        Untranslatable(format!(
            "`reasoning_effort` `{effort}` is not one of none, minimal, low, medium, high"
        ))
    })?;
    Ok(Some(ThinkingConfig {
        thinking_budget: budget.unwrap_or(0),
        include_thoughts: budget.is_some(),
    }))
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.max_output_tokens.is_none()
            && self.stop_sequences.is_none()
            && self.seed.is_none()
            && self.response_mime_type.is_none()
            && self.response_schema.is_none()
            && self.thinking_config.is_none()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Declarations<'a> {
    function_declarations: Vec<Declaration<'a>>,
}

#[derive(Serialize)]
struct Declaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<[&'a str; 1]>,
}

fn image_part(url: &str) -> WirePart<'_> {
    if let Some((meta, data)) = url.strip_prefix("data:").and_then(|r| r.split_once(',')) {
        return WirePart::InlineData {
            mime_type: meta.trim_end_matches(";base64"),
            data,
        };
    }
    WirePart::FileData { file_uri: url }
}

fn push_turn<'a>(contents: &mut Vec<Turn<'a>>, role: &'static str, parts: Vec<TurnPart<'a>>) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some(last) if last.role == role => last.parts.extend(parts),
        _ => contents.push(Turn { role, parts }),
    }
}

fn turn_parts(c: &Option<Content>) -> Vec<TurnPart<'_>> {
    parts(c).into_iter().map(TurnPart::from).collect()
}

fn parts(c: &Option<Content>) -> Vec<WirePart<'_>> {
    match c {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![WirePart::Text(t)],
        Some(Content::Parts(ps)) => ps
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(WirePart::Text(text)),
                Part::ImageUrl { image_url } => Some(image_part(&image_url.url)),
                Part::Other => None,
            })
            .collect(),
    }
}

/// The text of `content`, borrowed when it is one string.
fn text_of(content: Option<&Content>) -> Cow<'_, str> {
    match content {
        None => Cow::Borrowed(""),
        Some(Content::Text(t)) => Cow::Borrowed(t),
        Some(c) => Cow::Owned(c.text()),
    }
}

/// The `generateContent` body for `req`.
pub fn to_request(req: &ChatCompletionRequest) -> Result<Vec<u8>, Untranslatable> {
    let mut system = Vec::new();
    let mut contents: Vec<Turn<'_>> = Vec::new();
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => system.extend(parts(&m.content)),
            Role::User => push_turn(&mut contents, "user", turn_parts(&m.content)),
            Role::Assistant => {
                let mut ps = turn_parts(&m.content);
                for call in m.tool_calls.iter().flatten() {
                    call_names.insert(&call.id, &call.function.name);
                    let args = raw_arguments(&call.function.arguments).map_err(|e| {
                        Untranslatable(format!(
                            "`messages[{i}].tool_calls`: arguments are not JSON: {e}"
                        ))
                    })?;
                    ps.push(TurnPart {
                        part: WirePart::FunctionCall {
                            name: &call.function.name,
                            args,
                        },
                        thought_signature: signature_of(&call.id),
                    });
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
                let text = text_of(m.content.as_ref());
                let response = match serde_json::from_str::<Box<RawValue>>(&text) {
                    Ok(raw) if raw.get().trim_start().starts_with('{') => {
                        FunctionResult::Object(raw)
                    }
                    _ => FunctionResult::Text { result: text },
                };
                push_turn(
                    &mut contents,
                    "user",
                    vec![WirePart::FunctionResponse { name, response }.into()],
                );
            }
        }
    }
    if contents.is_empty() {
        return Err(Untranslatable(
            "Gemini needs at least one user message".into(),
        ));
    }
    let mut generation_config = GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        max_output_tokens: req.output_cap(),
        stop_sequences: req.stop.as_ref().map(|s| match s {
            Stop::One(s) => std::slice::from_ref(s),
            Stop::Many(v) => v.as_slice(),
        }),
        seed: req.seed,
        thinking_config: thinking_config(req.reasoning_effort.as_deref())?,
        ..GenerationConfig::default()
    };
    let format = req.response_format.as_ref();
    match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("json_object") => generation_config.response_mime_type = Some("application/json"),
        Some("json_schema") => {
            generation_config.response_mime_type = Some("application/json");
            generation_config.response_schema = format
                .and_then(|f| f.get("json_schema"))
                .and_then(|s| s.get("schema"));
        }
        _ => {}
    }
    let tools = req.tools.as_ref().map(|tools| {
        [Declarations {
            function_declarations: tools
                .iter()
                .map(|t| Declaration {
                    name: &t.function.name,
                    description: t.function.description.as_deref(),
                    parameters: t.function.parameters.as_ref(),
                })
                .collect(),
        }]
    });
    let config = |mode| FunctionCallingConfig {
        mode,
        allowed_function_names: None,
    };
    let calling = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "auto" => Some(config("AUTO")),
            "required" => Some(config("ANY")),
            "none" => Some(config("NONE")),
            other => {
                return Err(Untranslatable(format!(
                    "`tool_choice` `{other}` is not one of auto, required, none"
                )))
            }
        },
        Some(ToolChoice::Named { function }) => Some(FunctionCallingConfig {
            mode: "ANY",
            allowed_function_names: Some([&function.name]),
        }),
    };
    let wire = WireRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(Instruction { parts: system }),
        generation_config,
        tools,
        tool_config: calling.map(|function_calling_config| ToolConfig {
            function_calling_config,
        }),
        x_fake: req.x_fake.as_ref(),
    };
    serde_json::to_vec(&wire).map_err(|e| Untranslatable(e.to_string()))
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
            cache_write_tokens: 0,
            ..Usage::default()
        }
    }
}

/// A `GenerateContentResponse` (whole, or one event of a stream, which may also carry an
/// `error`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    #[serde(default, borrow)]
    candidates: Vec<WireCandidate<'a>>,
    #[serde(default)]
    prompt_feedback: Option<IgnoredAny>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
    #[serde(default, borrow)]
    error: Option<WireError<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate<'a> {
    #[serde(default, borrow)]
    content: Option<WireContent<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
struct WireContent<'a> {
    #[serde(default, borrow)]
    parts: Vec<WireResponsePart<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponsePart<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    thought: Option<bool>,
    /// Gemini's signature of its thinking, on (at least) the first function call of a
    /// step; carried in the call's id (see [`SIGNATURE_MARK`]).
    #[serde(default, borrow)]
    thought_signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function_call: Option<WireFunctionCall<'a>>,
}

#[derive(Debug, Deserialize)]
struct WireFunctionCall<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    args: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct WireError<'a> {
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
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

/// Why an answer that Gemini ended with `reason` is a failed try rather than an answer:
/// `MALFORMED_FUNCTION_CALL` (the model wrote a call that does not parse) and
/// `UNEXPECTED_TOOL_CALL` (a call to a tool the request did not offer) come without a usable
/// message, which reported as `stop` would read as an empty answer. As a failure (502,
/// `upstream_error`) the route's retries and fallbacks get to serve the request.
fn failed_finish(reason: &str) -> Option<String> {
    matches!(reason, "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL").then(|| {
        format!("Gemini ended its answer with {reason}: the model's function call was not usable")
    })
}

/// What a candidate's parts say.
struct Read<'a> {
    /// The answer's text.
    text: Cow<'a, str>,
    /// Thought summaries (`thought: true` parts): the reasoning.
    thoughts: Cow<'a, str>,
    /// Function calls, as stream deltas.
    calls: Vec<ToolCallOut<'a>>,
}

fn append<'a>(to: &mut Cow<'a, str>, t: &'a str) {
    if to.is_empty() {
        *to = Cow::Borrowed(t);
    } else {
        to.to_mut().push_str(t);
    }
}

/// Text, thoughts and function calls (as stream deltas, numbered from `first_call`) of a
/// candidate's parts.
fn read_parts<'a>(content: Option<&'a WireContent<'a>>, first_call: usize) -> Read<'a> {
    let mut text = Cow::Borrowed("");
    let mut thoughts = Cow::Borrowed("");
    let mut calls = Vec::new();
    for part in content.map(|c| c.parts.as_slice()).unwrap_or_default() {
        if let Some(t) = part.text.as_deref() {
            if part.thought == Some(true) {
                append(&mut thoughts, t);
            } else {
                append(&mut text, t);
            }
        }
        if let Some(fc) = &part.function_call {
            let n = first_call + calls.len();
            let id = fc
                .id
                .as_deref()
                .map_or_else(|| Cow::Owned(made_up_call_id()), Cow::Borrowed);
            let id = match part.thought_signature.as_deref() {
                Some(signature) => Cow::Owned(signed_id(&id, signature)),
                None => id,
            };
            calls.push(ToolCallOut::new(
                Some(n),
                id,
                Cow::Borrowed(&fc.name),
                fc.args
                    .map_or(Cow::Borrowed("{}"), |a| compact_json(a.get())),
            ));
        }
    }
    Read {
        text,
        thoughts,
        calls,
    }
}

/// A `chat.completion` body for a `generateContent` response.
pub fn from_response(body: &[u8], model: &str) -> Result<(Vec<u8>, Usage), String> {
    let r: WireResponse<'_> =
        serde_json::from_slice(body).map_err(|e| format!("not a Gemini response: {e}"))?;
    let usage = r.usage_metadata.unwrap_or_default().normalised();
    let (mut read, finish) = match r.candidates.first() {
        Some(c) => {
            if let Some(failure) = c.finish_reason.as_deref().and_then(failed_finish) {
                return Err(failure);
            }
            let read = read_parts(c.content.as_ref(), 0);
            let finish = finish_reason(
                c.finish_reason.as_deref().unwrap_or("STOP"),
                !read.calls.is_empty(),
            );
            (read, finish)
        }
        // No candidate: the prompt itself was blocked (promptFeedback.blockReason).
        None if r.prompt_feedback.is_some() => (read_parts(None, 0), "content_filter"),
        None => return Err("Gemini answered without a candidate".into()),
    };
    // A whole message's tool calls carry no `index`.
    for call in &mut read.calls {
        call.index = None;
    }
    let body = completion(
        "gemini",
        model,
        &read.text,
        &read.thoughts,
        &read.calls,
        finish,
        &usage,
    );
    Ok((body, usage))
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
        let r: WireResponse<'_> =
            serde_json::from_slice(data).map_err(|e| format!("not a Gemini event: {e}"))?;
        if let Some(e) = r.error {
            return Err(e
                .message
                .map_or_else(|| "Gemini stream error".to_string(), Cow::into_owned));
        }
        if let Some(u) = r.usage_metadata {
            self.usage = u.normalised();
        }
        let ended = r
            .candidates
            .first()
            .and_then(|c| c.finish_reason.as_deref());
        if let Some(failure) = ended.and_then(failed_finish) {
            return Err(failure);
        }
        if !self.started {
            self.started = true;
            if self.usage.prompt_tokens > 0 {
                self.writer.prompt_usage(out, &self.usage);
            }
            self.writer.delta(out, Delta::role(), None);
        }
        match r.candidates.first() {
            Some(c) => {
                let read = read_parts(c.content.as_ref(), self.calls);
                if !read.thoughts.is_empty() {
                    self.writer
                        .delta(out, Delta::reasoning(&read.thoughts), None);
                }
                if !read.text.is_empty() {
                    self.writer.delta(out, Delta::content(&read.text), None);
                }
                if !read.calls.is_empty() {
                    self.calls += read.calls.len();
                    self.writer.delta(out, Delta::tool_calls(&read.calls), None);
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

#[derive(Serialize)]
struct BatchEmbed<'a> {
    requests: Vec<EmbedOne<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x_fake: Option<&'a RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EmbedOne<'a> {
    model: &'a str,
    content: Instruction<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimensionality: Option<u64>,
}

/// The `batchEmbedContents` body for an OpenAI embeddings request body.
pub fn to_embed_request(raw: &[u8], upstream_model: &str) -> Result<Vec<u8>, Untranslatable> {
    let r: EmbedRequest<'_> =
        serde_json::from_slice(raw).map_err(|e| Untranslatable(e.to_string()))?;
    let texts = r.texts().ok_or_else(|| {
        Untranslatable(
            "Gemini embeds text only: `input` must be a string or an array of strings".into(),
        )
    })?;
    let texts: &[Cow<'_, str>] = match &texts {
        TextInput::One(t) => std::slice::from_ref(t),
        TextInput::Many(v) => v,
    };
    let model = format!("models/{upstream_model}");
    let body = BatchEmbed {
        requests: texts
            .iter()
            .map(|t| EmbedOne {
                model: &model,
                content: Instruction {
                    parts: vec![WirePart::Text(t)],
                },
                output_dimensionality: r.dimensions,
            })
            .collect(),
        x_fake: r.x_fake,
    };
    serde_json::to_vec(&body).map_err(|e| Untranslatable(e.to_string()))
}

/// An OpenAI embeddings list for a `batchEmbedContents` response. Gemini reports no token
/// counts for embeddings: `estimated_tokens` (from the input's size) stands in.
pub fn from_embed_response(
    body: &[u8],
    model: &str,
    estimated_tokens: u64,
) -> Result<(Vec<u8>, Usage), String> {
    #[derive(Deserialize)]
    struct Emb<'a> {
        #[serde(borrow)]
        values: &'a RawValue,
    }
    #[derive(Deserialize)]
    struct Resp<'a> {
        #[serde(borrow)]
        embeddings: Vec<Emb<'a>>,
    }
    let r: Resp<'_> = serde_json::from_slice(body)
        .map_err(|e| format!("not a Gemini embeddings response: {e}"))?;
    // The vectors pass through as the upstream wrote them (compacted), never parsed into
    // numbers and printed again.
    let vectors = r
        .embeddings
        .iter()
        .map(|e| raw_array(e.values))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        embedding_list(vectors, model, estimated_tokens),
        Usage {
            prompt_tokens: estimated_tokens,
            ..Usage::default()
        },
    ))
}

#[cfg(test)]
mod tests;
