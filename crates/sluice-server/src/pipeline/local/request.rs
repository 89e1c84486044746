//! What a local model is asked, read from the client's body: the chat request (messages,
//! sampling, stop strings, `keep_alive`, refusing what local models do not do) and the
//! embeddings request (text inputs, encoding, dimensions).

use super::errors::invalid;
use super::tools::{asked, offers, Asked};
use sluice_core::{Error, ErrorKind};
use sluice_local::pool::KeepAlive;
use sluice_local::{ChatMessage, ChatRequest, Grammar, GrammarCache};
use std::sync::Arc;

/// Fields of a chat request that the typed OpenAI request does not carry.
#[derive(serde::Deserialize)]
struct ChatExtras {
    /// As Ollama takes it: see [`keep_alive_of`].
    #[serde(default)]
    keep_alive: Option<serde_json::Value>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<u64>,
    /// Not OpenAI's, but llama.cpp's, Ollama's and vLLM's: sample from the `top_k` likeliest.
    #[serde(default)]
    top_k: Option<u64>,
    /// llama.cpp's and vLLM's: keep generating past the end-of-turn token, up to `max_tokens`
    /// (benchmarks that need answers of one length).
    #[serde(default)]
    ignore_eos: Option<bool>,
}

/// A chat request for a local model, read from the client's body.
pub(super) struct LocalChat {
    pub request: ChatRequest,
    /// Whether the stream ends with usage.
    pub include_usage: bool,
    /// The request's own keep-alive.
    pub keep_alive: Option<KeepAlive>,
    /// The tools asked, fitted to the model's tool format once it is known.
    pub tools: Option<Asked>,
    /// Choices asked (`n`).
    pub n: u64,
}

/// The chat of an OpenAI request, for a local model. What a local model cannot do is refused
/// with a 400 naming the parameter, never silently dropped: a JSON schema outside the
/// supported subset, `top_logprobs` without `logprobs`; the tools are checked here and fitted to
/// the model's tool format once it is loaded ([`super::tools::prepare`]).
pub(super) fn chat_request(body: &[u8], grammars: &GrammarCache) -> Result<LocalChat, Error> {
    let r: sluice_types::openai::ChatCompletionRequest =
        serde_json::from_slice(body).map_err(|e| -> Error {
            ErrorKind::InvalidRequest {
                message: format!("invalid request body: {e}"),
                param: None,
            }
            .into()
        })?;
    let extras: ChatExtras = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("invalid request body: {e}"), "n"))?;
    let tools = asked(&r, grammars)?;
    if offers(&tools)
        && r.response_format
            .as_ref()
            .is_some_and(|f| f["type"] != "text")
    {
        return Err(invalid(
            "on a local model, tool calls are constrained to the tools' parameters: leave out `response_format` (or set `tool_choice` to `none`)".into(),
            "response_format",
        ));
    }
    let constraint = r
        .response_format
        .as_ref()
        .map(|f| constraint_of(f, grammars))
        .transpose()?
        .flatten();
    if extras.n == Some(0) {
        return Err(invalid("`n` must be at least 1".into(), "n"));
    }
    let logprobs = logprobs_of(&extras)?;
    let messages = messages_of(&r.messages);
    let mut req = ChatRequest {
        messages,
        max_tokens: r
            .max_completion_tokens
            .or(r.max_tokens)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        stop: r
            .stop
            .map(sluice_types::openai::Stop::into_vec)
            .unwrap_or_default(),
        constraint,
        logprobs,
        ..ChatRequest::default()
    };
    req.sampling.temperature = r.temperature;
    req.sampling.top_p = r.top_p;
    req.sampling.seed = r.seed.map(|s| s as u64);
    req.sampling.top_k = extras
        .top_k
        .filter(|&k| k > 0)
        .map(|k| usize::try_from(k).unwrap_or(usize::MAX));
    req.ignore_eos = extras.ignore_eos.unwrap_or(false);
    let include_usage = r.stream_options.is_some_and(|o| o.include_usage);
    Ok(LocalChat {
        request: req,
        include_usage,
        keep_alive: keep_alive_of(extras.keep_alive)?,
        tools,
        n: extras.n.unwrap_or(1),
    })
}

/// `logprobs` and `top_logprobs` (0 to 20, only with `logprobs`): the alternatives asked per
/// token.
fn logprobs_of(extras: &ChatExtras) -> Result<Option<usize>, Error> {
    let top = extras.top_logprobs;
    if extras.logprobs != Some(true) {
        if top.is_some_and(|t| t > 0) {
            return Err(invalid(
                "`top_logprobs` needs `logprobs: true`".into(),
                "top_logprobs",
            ));
        }
        return Ok(None);
    }
    if top.is_some_and(|t| t > 20) {
        return Err(invalid(
            "`top_logprobs` must be between 0 and 20".into(),
            "top_logprobs",
        ));
    }
    Ok(Some(top.unwrap_or(0) as usize))
}

/// The conversation as the chat template reads it: roles, text, an assistant's calls (their
/// arguments as JSON values) and the call a tool result answers (with the function's name,
/// found among the earlier calls).
fn messages_of(messages: &[sluice_types::openai::Message]) -> Vec<ChatMessage> {
    use sluice_types::openai::Role;
    let mut names: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System | Role::Developer => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool | Role::Function => "tool",
            };
            let mut message = ChatMessage::new(
                role,
                m.content.as_ref().map(|c| c.text()).unwrap_or_default(),
            );
            if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_empty()) {
                message.tool_calls = Some(
                    calls
                        .iter()
                        .map(|c| {
                            names.insert(&c.id, &c.function.name);
                            let arguments = serde_json::from_str(&c.function.arguments)
                                .unwrap_or_else(|_| serde_json::json!(c.function.arguments));
                            serde_json::json!({
                                "type": "function",
                                "id": c.id,
                                "function": {"name": c.function.name, "arguments": arguments}
                            })
                        })
                        .collect(),
                );
            }
            if role == "tool" {
                message.tool_call_id = m.tool_call_id.clone();
                message.name = m.name.clone().or_else(|| {
                    let id = m.tool_call_id.as_deref()?;
                    names.get(id).map(|n| (*n).to_owned())
                });
            }
            message
        })
        .collect()
}

/// The constraint of a `response_format`: none for `text`, any JSON object for `json_object`,
/// the compiled schema for `json_schema`, kept in `grammars` (a schema outside the supported
/// subset, or invalid, is a 400 naming the keyword and where it is).
fn constraint_of(
    format: &serde_json::Value,
    grammars: &GrammarCache,
) -> Result<Option<Arc<Grammar>>, Error> {
    let kind = format.get("type").and_then(|t| t.as_str()).unwrap_or("");
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(Arc::new(Grammar::json_object()))),
        "json_schema" => {
            let schema = format
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .ok_or_else(|| {
                    invalid(
                        "`response_format.json_schema.schema` is missing".into(),
                        "response_format",
                    )
                })?;
            let grammar = grammars.compile(schema).map_err(|e| {
                invalid(
                    format!("`response_format.json_schema.schema`: {e}"),
                    "response_format",
                )
            })?;
            Ok(Some(grammar))
        }
        other => Err(invalid(
            format!("`response_format` `{other}` is not supported (use `text`, `json_object` or `json_schema`)"),
            "response_format",
        )),
    }
}

/// A request's own `keep_alive` (as Ollama takes it: a duration such as `"10m"`, a number of
/// seconds, `0` to unload when done, a negative value to stay loaded), if it has one.
pub(super) fn keep_alive_of(value: Option<serde_json::Value>) -> Result<Option<KeepAlive>, Error> {
    let bad = |e: &dyn std::fmt::Display| invalid(format!("`keep_alive`: {e}"), "keep_alive");
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => KeepAlive::parse(&s).map(Some).map_err(|e| bad(&e)),
        Some(serde_json::Value::Number(n)) => match n.as_f64() {
            Some(secs) if secs.is_finite() => Ok(Some(KeepAlive::from_secs_f64(secs))),
            _ => Err(bad(&"not a number of seconds")),
        },
        Some(_) => Err(bad(&"a duration such as \"5m\", or a number of seconds")),
    }
}

/// An OpenAI embeddings request for a local model, read in one pass.
pub(super) struct EmbeddingRequest {
    /// Text only: token arrays are another model's tokens.
    pub texts: Vec<String>,
    pub base64: bool,
    pub dimensions: Option<u64>,
    pub keep_alive: Option<KeepAlive>,
}

pub(super) fn embedding_request(body: &[u8]) -> Result<EmbeddingRequest, Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Input {
        One(String),
        Many(Vec<serde_json::Value>),
    }
    #[derive(serde::Deserialize)]
    struct Wire {
        input: Input,
        encoding_format: Option<String>,
        dimensions: Option<u64>,
        keep_alive: Option<serde_json::Value>,
    }
    let w: Wire = serde_json::from_slice(body).map_err(|e| {
        invalid(
            format!("invalid request body: {e}; `input` must be a string or an array of strings"),
            "input",
        )
    })?;
    let keep_alive = keep_alive_of(w.keep_alive)?;
    let base64 = match w.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid(
                format!("`encoding_format` must be `float` or `base64`, not `{other}`"),
                "encoding_format",
            ))
        }
    };
    let texts = match w.input {
        Input::One(s) => vec![s],
        Input::Many(items) => {
            if items.is_empty() {
                return Err(invalid("`input` must not be empty".into(), "input"));
            }
            items
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => Ok(s),
                    _ => Err(invalid(
                        "local embedding models take text: `input` must be a string or an array of strings (token arrays are not accepted)".into(),
                        "input",
                    )),
                })
                .collect::<Result<_, _>>()?
        }
    };
    Ok(EmbeddingRequest {
        texts,
        base64,
        dimensions: w.dimensions,
        keep_alive,
    })
}

/// A rerank document: a string, or an object whose `text` is ranked (the object is what
/// `return_documents` gives back).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum WireDocument {
    Text(String),
    Object(serde_json::Map<String, serde_json::Value>),
}

/// One document of a rerank request.
pub(super) struct RerankDocument {
    /// The text scored.
    pub text: String,
    /// What `return_documents` answers with: `{"text": ...}`, or the client's object.
    pub returned: serde_json::Value,
}

/// A rerank request for a local cross-encoder.
pub(super) struct RerankRequest {
    pub query: String,
    pub documents: Vec<RerankDocument>,
    pub top_n: Option<usize>,
    pub return_documents: bool,
    pub keep_alive: Option<KeepAlive>,
}

#[derive(serde::Deserialize)]
struct RerankWire {
    query: String,
    documents: Vec<WireDocument>,
    #[serde(default)]
    top_n: Option<usize>,
    #[serde(default)]
    return_documents: Option<bool>,
    #[serde(default)]
    keep_alive: Option<serde_json::Value>,
}

/// The rerank request (the pipeline's view has checked its shape).
pub(super) fn rerank_request(body: &[u8]) -> Result<RerankRequest, Error> {
    let w: RerankWire = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("invalid request body: {e}"), "documents"))?;
    let documents = w
        .documents
        .into_iter()
        .enumerate()
        .map(|(i, d)| match d {
            WireDocument::Text(t) => Ok(RerankDocument {
                returned: serde_json::json!({ "text": t }),
                text: t,
            }),
            WireDocument::Object(o) => match o.get("text").and_then(|t| t.as_str()) {
                Some(t) => Ok(RerankDocument {
                    text: t.to_string(),
                    returned: serde_json::Value::Object(o),
                }),
                None => Err(invalid(
                    format!("`documents[{i}]` must be a string or an object with a string `text`"),
                    "documents",
                )),
            },
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RerankRequest {
        query: w.query,
        documents,
        top_n: w.top_n,
        return_documents: w.return_documents.unwrap_or(false),
        keep_alive: keep_alive_of(w.keep_alive)?,
    })
}
