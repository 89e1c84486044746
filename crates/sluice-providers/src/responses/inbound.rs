//! A Responses API request read into an OpenAI chat request (see the mapping in
//! [`crate::responses`]). Typed structs that borrow from the body; opaque JSON (schemas,
//! arguments, metadata) stays raw.

use super::object::{new_id, Echo};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// Why a Responses request cannot be served: a message and the top-level field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    /// What is wrong, naming the exact field.
    pub message: String,
    /// The top-level request field at fault.
    pub param: Option<&'static str>,
}

impl BadRequest {
    /// The 400 in OpenAI's shape.
    pub fn to_error(&self) -> sluice_core::Error {
        sluice_core::ErrorKind::InvalidRequest {
            message: self.message.clone(),
            param: self.param,
        }
        .into()
    }
}

fn bad(param: &'static str, message: String) -> BadRequest {
    BadRequest {
        message,
        param: Some(param),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
    #[serde(default, borrow)]
    instructions: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tools: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tool_choice: Option<&'a RawValue>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default, borrow)]
    text: Option<&'a RawValue>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default, borrow)]
    reasoning: Option<InReasoning<'a>>,
    #[serde(default, borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default, borrow)]
    previous_response_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    truncation: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    include: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, borrow)]
    stream_options: Option<&'a RawValue>,
    #[serde(default, borrow)]
    service_tier: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    prompt_cache_key: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    safety_identifier: Option<Cow<'a, str>>,
    #[serde(default)]
    background: Option<bool>,
    /// The testkit's per-request control of its fake upstream, carried over.
    #[serde(default, borrow)]
    x_fake: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct InReasoning<'a> {
    #[serde(default, borrow)]
    effort: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    summary: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    generate_summary: Option<Cow<'a, str>>,
}

/// An input item: the fields of every item type side by side.
#[derive(Deserialize)]
struct InItem<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    role: Option<Cow<'a, str>>,
    /// A string or a list of parts.
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
    /// A string or a list of parts.
    #[serde(default, borrow)]
    output: Option<&'a RawValue>,
    /// A `reasoning` item's, as sluice wrote it (see [`super::object::ENCRYPTED_PREFIX`]).
    #[serde(default, borrow)]
    encrypted_content: Option<Cow<'a, str>>,
}

/// A content part: the fields of every part type side by side.
#[derive(Deserialize)]
struct InPart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    image_url: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    detail: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    file_data: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    filename: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct InTool<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    parameters: Option<&'a RawValue>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct InToolChoice<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct InText<'a> {
    #[serde(default, borrow)]
    format: Option<InFormat<'a>>,
    #[serde(default, borrow)]
    verbosity: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct InFormat<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    schema: Option<&'a RawValue>,
    #[serde(default)]
    strict: Option<bool>,
}

/// A JSON string, borrowed when it has no escapes.
#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    messages: Vec<Msg<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OutToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<OutFormat<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verbosity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_cache_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    safety_identifier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x_fake: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// A chat message: one read from the request, or one of a stored conversation as it was
/// stored.
#[derive(Serialize)]
#[serde(untagged)]
enum Msg<'a> {
    Read(OutMessage<'a>),
    Stored(&'a RawValue),
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum OutMessage<'a> {
    System {
        content: Cow<'a, str>,
    },
    User {
        content: OutContent<'a>,
    },
    Assistant {
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<OutCall<'a>>,
        /// Signed thinking from a `reasoning` item's `encrypted_content`.
        #[serde(skip_serializing_if = "Option::is_none")]
        thinking_blocks: Option<Box<RawValue>>,
    },
    Tool {
        tool_call_id: Cow<'a, str>,
        content: Cow<'a, str>,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutContent<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<OutPart<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutPart<'a> {
    Text { text: Cow<'a, str> },
    ImageUrl { image_url: OutImage<'a> },
    File { file: OutFile<'a> },
}

#[derive(Serialize)]
struct OutImage<'a> {
    url: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct OutFile<'a> {
    file_data: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct OutCall<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: Cow<'a, str>,
    arguments: Cow<'a, str>,
}

#[derive(Serialize)]
struct OutTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunctionSpec<'a>,
}

#[derive(Serialize)]
struct OutFunctionSpec<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutToolChoice<'a> {
    Mode(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        function: NamedFunction<'a>,
    },
}

#[derive(Serialize)]
struct NamedFunction<'a> {
    name: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutFormat<'a> {
    JsonSchema { json_schema: OutSchema<'a> },
    JsonObject,
}

#[derive(Serialize)]
struct OutSchema<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// A translated request: the chat body, whether it streams, and what the answer echoes.
#[derive(Debug)]
pub struct Translated {
    /// The OpenAI chat request body.
    pub body: Vec<u8>,
    /// With `store` (the default): the conversation's chat messages so far (the previous
    /// response's, then this request's input, without `instructions`), a JSON array to keep
    /// with the answer.
    pub input: Option<Vec<u8>>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The request's settings, for the `response` object.
    pub echo: Echo,
    /// What only a native upstream can honour (a built-in tool, `truncation: "auto"`,
    /// an `include` chat cannot answer): the 400 a translated upstream's try gets. The
    /// chat `body` leaves it out.
    pub native_only: Option<BadRequest>,
}

#[derive(Deserialize)]
struct Previous<'a> {
    #[serde(default, borrow)]
    previous_response_id: Option<Cow<'a, str>>,
}

/// The body's `previous_response_id`, if it has one (read before [`to_chat`], which needs
/// the conversation it names).
fn previous_response_id(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Previous<'_>>(body)
        .ok()?
        .previous_response_id
        .map(Cow::into_owned)
}

/// A Responses API request body, read once: what its `previous_response_id` names is
/// fetched, then it is translated ([`Read::to_chat`]) without being read again.
pub struct Read<'a> {
    body: &'a [u8],
    /// `None` when it has fields this translation does not know (the rare path: read
    /// again without them, see [`to_chat`]).
    request: Option<InRequest<'a>>,
}

/// Reads a Responses API request body (a 400 if it is not one).
pub fn read(body: &[u8]) -> Result<Read<'_>, BadRequest> {
    match serde_json::from_slice::<InRequest<'_>>(body) {
        Ok(r) => Ok(Read {
            body,
            request: Some(r),
        }),
        Err(e) if unknown_field(&e).is_some() => Ok(Read {
            body,
            request: None,
        }),
        Err(e) => Err(invalid_request(&e)),
    }
}

impl Read<'_> {
    /// Its `previous_response_id`, if it has one.
    pub fn previous_response_id(&self) -> Option<String> {
        match &self.request {
            Some(r) => r.previous_response_id.as_deref().map(str::to_owned),
            None => previous_response_id(self.body),
        }
    }

    /// See [`to_chat`].
    pub fn to_chat(self, history: Option<&[u8]>) -> Result<Translated, BadRequest> {
        match self.request {
            Some(r) => translate(r, history, Vec::new()),
            None => {
                let (known, unknown) = without_unknown_fields(self.body)?;
                translate(read_request(&known)?, history, unknown)
            }
        }
    }
}

/// The OpenAI chat request for a Responses API request body; `history` is the stored
/// conversation (a JSON array of chat messages) its `previous_response_id` names.
///
/// A top-level field this translation does not know (one the Responses API added since, or
/// a reusable `prompt`) is left out of the chat body and makes the request native-only: a
/// native upstream gets it as sent, a translated try is a 400 naming it. So is a request
/// without `input` (a `prompt` can stand for it).
pub fn to_chat(body: &[u8], history: Option<&[u8]>) -> Result<Translated, BadRequest> {
    read(body)?.to_chat(history)
}

fn read_request(body: &[u8]) -> Result<InRequest<'_>, BadRequest> {
    serde_json::from_slice(body).map_err(|e| invalid_request(&e))
}

fn invalid_request(e: &serde_json::Error) -> BadRequest {
    BadRequest {
        message: format!("invalid Responses request: {e}"),
        param: None,
    }
}

/// The field serde's `deny_unknown_fields` error names, if `e` is one.
fn unknown_field(e: &serde_json::Error) -> Option<String> {
    let text = e.to_string();
    let rest = text.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(field, _)| field.to_owned())
}

/// `body` without the top-level fields [`InRequest`] does not know, and their names (a
/// rare path: the object is read field by field and written again).
fn without_unknown_fields(body: &[u8]) -> Result<(Vec<u8>, Vec<String>), BadRequest> {
    let mut fields: BTreeMap<Cow<'_, str>, &RawValue> =
        serde_json::from_slice(body).map_err(|e| invalid_request(&e))?;
    let mut unknown = Vec::new();
    loop {
        let known = serde_json::to_vec(&fields).map_err(|e| invalid_request(&e))?;
        let Err(e) = serde_json::from_slice::<InRequest<'_>>(&known) else {
            return Ok((known, unknown));
        };
        match unknown_field(&e) {
            Some(field) if fields.remove(field.as_str()).is_some() => unknown.push(field),
            // Another fault: the caller's read reports it.
            _ => return Ok((known, unknown)),
        }
    }
}

/// [`to_chat`] of a request read; `unknown` are the fields it had that were left out.
fn translate(
    r: InRequest<'_>,
    history: Option<&[u8]>,
    unknown: Vec<String>,
) -> Result<Translated, BadRequest> {
    refuse_unsupported(&r, history.is_some())?;
    let history: Vec<&RawValue> = match history {
        Some(h) => serde_json::from_slice(h).map_err(|e| BadRequest {
            message: format!("the stored conversation cannot be read: {e}"),
            param: Some("previous_response_id"),
        })?,
        None => Vec::new(),
    };
    let mut messages = Vec::new();
    if let Some(i) = r.instructions.as_deref().filter(|i| !i.is_empty()) {
        messages.push(Msg::Read(OutMessage::System {
            content: Cow::Borrowed(i),
        }));
    }
    let first = messages.len();
    messages.extend(history.into_iter().map(Msg::Stored));
    if let Some(input) = r.input {
        read_input(input, &mut messages)?;
    }
    let kept = match r.store {
        Some(false) => None,
        _ => Some(serde_json::to_vec(&messages[first..]).unwrap_or_default()),
    };
    if r.input.is_none() && messages.is_empty() {
        // No input (a `prompt` stands for it): native-only (see `beyond_chat`). The chat
        // body, never sent, still reads as a request for the pipeline's view.
        messages.push(Msg::Read(OutMessage::User {
            content: OutContent::Text(Cow::Borrowed("")),
        }));
    }
    let tools = match r.tools {
        Some(t) => parse::<Vec<InTool<'_>>>(t, "tools")?,
        None => Vec::new(),
    };
    let text = r.text.map(|t| parse::<InText<'_>>(t, "text")).transpose()?;
    let native_only = match native_only(&r, &tools)? {
        Some(b) => Some(b),
        None => beyond_chat(&r, &unknown),
    };
    let out = out_request(&r, messages, &tools, text.as_ref())?;
    let body = serde_json::to_vec(&out).map_err(|e| BadRequest {
        message: e.to_string(),
        param: None,
    })?;
    Ok(Translated {
        body,
        input: kept,
        stream: out.stream,
        echo: echo(&r),
        native_only,
    })
}

/// The chat request for `r`, its `messages` already read.
fn out_request<'a>(
    r: &'a InRequest<'a>,
    messages: Vec<Msg<'a>>,
    tools: &'a [InTool<'a>],
    text: Option<&'a InText<'a>>,
) -> Result<OutRequest<'a>, BadRequest> {
    let stream = r.stream.unwrap_or(false);
    Ok(OutRequest {
        model: &r.model,
        messages,
        max_tokens: r.max_output_tokens,
        temperature: r.temperature,
        top_p: r.top_p,
        stream,
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
        tools: out_tools(tools)?,
        tool_choice: r.tool_choice.map(out_tool_choice).transpose()?.flatten(),
        parallel_tool_calls: r.parallel_tool_calls,
        response_format: text
            .and_then(|t| t.format.as_ref())
            .map(out_format)
            .transpose()?
            .flatten(),
        reasoning_effort: r.reasoning.as_ref().and_then(|x| x.effort.as_deref()),
        verbosity: text.and_then(|t| t.verbosity.as_deref()),
        user: r.user.as_deref(),
        service_tier: r.service_tier.as_deref(),
        prompt_cache_key: r.prompt_cache_key.as_deref(),
        safety_identifier: r.safety_identifier.as_deref(),
        x_fake: r.x_fake.filter(|x| x.get() != "null"),
    })
}

/// Parameters sluice cannot honour: 400 naming the field.
fn refuse_unsupported(r: &InRequest<'_>, resolved: bool) -> Result<(), BadRequest> {
    if r.previous_response_id.is_some() && !resolved {
        return Err(bad(
            "previous_response_id",
            "previous_response_id was not resolved to a stored conversation".into(),
        ));
    }
    if r.background == Some(true) {
        return Err(bad(
            "background",
            "background: true is not supported: sluice answers in the request".into(),
        ));
    }
    // Accepted and not acted on: sluice adds no obfuscation.
    let _ = r.stream_options;
    Ok(())
}

fn parse<'a, T: Deserialize<'a>>(raw: &'a RawValue, field: &'static str) -> Result<T, BadRequest> {
    serde_json::from_str(raw.get()).map_err(|e| bad(field, format!("{field}: {e}")))
}

/// The first thing in `r` only a native upstream can honour, as the 400 a translated
/// upstream's try gets: a built-in tool (or a `tool_choice` naming one), `truncation:
/// "auto"`, an `include` value chat has no answer for.
fn native_only(r: &InRequest<'_>, tools: &[InTool<'_>]) -> Result<Option<BadRequest>, BadRequest> {
    const ONLY_NATIVE: &str = "only providers with `responses = \"native\"` have it";
    if let Some((i, t)) = tools.iter().enumerate().find(|(_, t)| t.kind != "function") {
        return Ok(Some(bad(
            "tools",
            format!(
                "tools[{i}].type: `{}` is a built-in tool; {ONLY_NATIVE}, the others take function tools only",
                t.kind
            ),
        )));
    }
    if let Some(raw) = r.tool_choice.filter(|c| c.get().starts_with('{')) {
        let c: InToolChoice<'_> = parse(raw, "tool_choice")?;
        if c.kind != "function" {
            return Ok(Some(bad(
                "tool_choice",
                format!(
                    "tool_choice.type: `{}` is a built-in tool; {ONLY_NATIVE}",
                    c.kind
                ),
            )));
        }
    }
    if let Some(t) = r.truncation.as_deref().filter(|t| *t != "disabled") {
        return Ok(Some(bad(
            "truncation",
            format!("truncation: `{t}` is not supported through chat: sluice does not truncate input; use `disabled` ({ONLY_NATIVE})"),
        )));
    }
    for (i, v) in r.include.iter().flatten().enumerate() {
        if v != "reasoning.encrypted_content" {
            return Ok(Some(bad(
                "include",
                format!("include[{i}]: `{v}` is not supported through chat ({ONLY_NATIVE})"),
            )));
        }
    }
    Ok(None)
}

/// What of `r` chat has no field for: a field this translation does not know, or no
/// `input` at all.
fn beyond_chat(r: &InRequest<'_>, unknown: &[String]) -> Option<BadRequest> {
    if let Some(field) = unknown.first() {
        return Some(BadRequest {
            message: format!(
                "`{field}` is not supported through chat (only providers with `responses = \"native\"` have it)"
            ),
            param: None,
        });
    }
    r.input
        .is_none()
        .then(|| bad("input", "input: Field required".into()))
}

/// What an answer echoes of a field the request left out (or sent as `null`), read once.
type Echoed = LazyLock<Box<RawValue>>;

fn json(text: &str) -> Box<RawValue> {
    serde_json::from_str::<&RawValue>(text).map_or_else(
        |_| RawValue::from_string("null".to_owned()).unwrap_or_default(),
        RawValue::to_owned,
    )
}

static NO_TOOLS: Echoed = LazyLock::new(|| json("[]"));
static AUTO: Echoed = LazyLock::new(|| json("\"auto\""));
static NO_METADATA: Echoed = LazyLock::new(|| json("{}"));
static TEXT: Echoed = LazyLock::new(|| json(r#"{"format":{"type":"text"}}"#));

/// `v`, or `default`: copied, not read again (both are JSON already).
fn echoed(v: Option<&RawValue>, default: &Echoed) -> Box<RawValue> {
    match v.filter(|v| v.get() != "null") {
        Some(v) => v.to_owned(),
        None => (**default).clone(),
    }
}

/// The echo of `r`'s settings.
fn echo(r: &InRequest<'_>) -> Echo {
    let reasoning = r.reasoning.as_ref();
    Echo {
        id: new_id(),
        previous_response_id: r.previous_response_id.as_ref().map(|p| p.to_string()),
        store: r.store.unwrap_or(true),
        model: r.model.to_string(),
        instructions: r.instructions.as_ref().map(|i| i.to_string()),
        tools: echoed(r.tools, &NO_TOOLS),
        tool_choice: echoed(r.tool_choice, &AUTO),
        parallel_tool_calls: r.parallel_tool_calls.unwrap_or(true),
        temperature: r.temperature,
        top_p: r.top_p,
        max_output_tokens: r.max_output_tokens,
        metadata: echoed(r.metadata, &NO_METADATA),
        text: echoed(r.text, &TEXT),
        effort: reasoning
            .and_then(|x| x.effort.as_ref())
            .map(|e| e.to_string()),
        summary: reasoning
            .and_then(|x| x.summary.as_ref().or(x.generate_summary.as_ref()))
            .map(|s| s.to_string()),
        user: r.user.as_ref().map(|u| u.to_string()),
        encrypted_reasoning: r
            .include
            .iter()
            .flatten()
            .any(|v| v == "reasoning.encrypted_content"),
    }
}

/// `input`: a string (one user message) or a list of items.
fn read_input<'a>(input: &'a RawValue, messages: &mut Vec<Msg<'a>>) -> Result<(), BadRequest> {
    if input.get().starts_with('"') {
        let s: Str<'a> = parse(input, "input")?;
        messages.push(Msg::Read(OutMessage::User {
            content: OutContent::Text(s.0),
        }));
        return Ok(());
    }
    let items: Vec<InItem<'a>> = parse(input, "input")?;
    let mut thinking = None;
    for (i, item) in items.into_iter().enumerate() {
        read_item(i, item, messages, &mut thinking)?;
    }
    Ok(())
}

/// The signed thinking in a `reasoning` item's `encrypted_content`, when sluice wrote it.
fn signed_thinking(encrypted: Option<&str>) -> Option<Box<RawValue>> {
    let json = encrypted?.strip_prefix(super::object::ENCRYPTED_PREFIX)?;
    serde_json::from_str::<Box<RawValue>>(json)
        .ok()
        .filter(|raw| raw.get().starts_with('['))
}

/// Reads one item; `thinking` is the signed thinking of a `reasoning` item read before,
/// which goes with the next assistant message.
fn read_item<'a>(
    i: usize,
    item: InItem<'a>,
    messages: &mut Vec<Msg<'a>>,
    thinking: &mut Option<Box<RawValue>>,
) -> Result<(), BadRequest> {
    match item.kind.as_deref().unwrap_or("message") {
        "message" => {
            let mut m = message(i, item)?;
            if let OutMessage::Assistant {
                thinking_blocks, ..
            } = &mut m
            {
                *thinking_blocks = thinking.take();
            }
            messages.push(Msg::Read(m));
        }
        "function_call" => {
            let call = OutCall {
                id: item.call_id.ok_or_else(|| missing(i, "call_id"))?,
                kind: "function",
                function: OutFunction {
                    name: item.name.ok_or_else(|| missing(i, "name"))?,
                    arguments: item.arguments.unwrap_or(Cow::Borrowed("{}")),
                },
            };
            match messages.last_mut() {
                Some(Msg::Read(OutMessage::Assistant { tool_calls, .. })) if thinking.is_none() => {
                    tool_calls.push(call)
                }
                _ => messages.push(Msg::Read(OutMessage::Assistant {
                    content: None,
                    tool_calls: vec![call],
                    thinking_blocks: thinking.take(),
                })),
            }
        }
        "function_call_output" => messages.push(Msg::Read(OutMessage::Tool {
            tool_call_id: item.call_id.ok_or_else(|| missing(i, "call_id"))?,
            content: match item.output {
                Some(o) => joined_text(i, o, "output")?,
                None => return Err(missing(i, "output")),
            },
        })),
        // Only sluice's signed thinking goes back to the model (Anthropic wants it back);
        // chat has no field for other reasoning.
        "reasoning" => *thinking = signed_thinking(item.encrypted_content.as_deref()),
        "item_reference" => {
            return Err(bad(
                "input",
                format!(
                "input[{i}].type: `item_reference` is not supported (stored items are not addressable; continue with previous_response_id)"
            ),
            ))
        }
        other => {
            return Err(bad(
                "input",
                format!("input[{i}].type: unknown or unsupported item type `{other}`"),
            ))
        }
    }
    Ok(())
}

fn missing(i: usize, field: &str) -> BadRequest {
    bad("input", format!("input[{i}].{field}: Field required"))
}

/// A `message` item as a chat message.
fn message<'a>(i: usize, item: InItem<'a>) -> Result<OutMessage<'a>, BadRequest> {
    let content = item.content.ok_or_else(|| missing(i, "content"))?;
    let role = item.role.ok_or_else(|| missing(i, "role"))?;
    Ok(match role.as_ref() {
        "system" | "developer" => OutMessage::System {
            content: joined_text(i, content, "content")?,
        },
        "assistant" => OutMessage::Assistant {
            content: Some(joined_text(i, content, "content")?.into_owned()),
            tool_calls: Vec::new(),
            thinking_blocks: None,
        },
        "user" => OutMessage::User {
            content: user_content(i, content)?,
        },
        other => {
            return Err(bad(
                "input",
                format!(
                "input[{i}].role: `{other}` is not `user`, `assistant`, `system` or `developer`"
            ),
            ))
        }
    })
}

/// A string, or the text of a list of text parts joined.
fn joined_text<'a>(i: usize, raw: &'a RawValue, field: &str) -> Result<Cow<'a, str>, BadRequest> {
    if raw.get().starts_with('"') {
        return Ok(parse::<Str<'a>>(raw, "input")?.0);
    }
    let parts: Vec<InPart<'a>> = parse(raw, "input")?;
    let mut text = String::new();
    for (j, p) in parts.iter().enumerate() {
        match p.kind.as_ref() {
            "input_text" | "output_text" | "text" => text.push_str(p.text.as_deref().unwrap_or("")),
            "refusal" => text.push_str(p.refusal.as_deref().unwrap_or("")),
            other => {
                return Err(bad(
                    "input",
                    format!("input[{i}].{field}[{j}].type: `{other}` is not supported here (text parts only)"),
                ))
            }
        }
    }
    Ok(Cow::Owned(text))
}

/// A user message's content: a string, or its parts as chat parts.
fn user_content<'a>(i: usize, raw: &'a RawValue) -> Result<OutContent<'a>, BadRequest> {
    if raw.get().starts_with('"') {
        return Ok(OutContent::Text(parse::<Str<'a>>(raw, "input")?.0));
    }
    let parts: Vec<InPart<'a>> = parse(raw, "input")?;
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.into_iter().enumerate() {
        let at = || format!("input[{i}].content[{j}]");
        out.push(match p.kind.as_ref() {
            "input_text" | "output_text" | "text" => OutPart::Text {
                text: p.text.unwrap_or(Cow::Borrowed("")),
            },
            "input_image" => OutPart::ImageUrl {
                image_url: OutImage {
                    url: p.image_url.ok_or_else(|| {
                        bad("input", format!("{}.image_url: required (images given by file_id are not supported)", at()))
                    })?,
                    detail: p.detail,
                },
            },
            "input_file" => OutPart::File {
                file: OutFile {
                    file_data: p.file_data.ok_or_else(|| {
                        bad("input", format!("{}.file_data: required (files given by file_id or file_url are not supported)", at()))
                    })?,
                    filename: p.filename,
                },
            },
            other => {
                return Err(bad(
                    "input",
                    format!("{}.type: unknown or unsupported part type `{other}`", at()),
                ))
            }
        });
    }
    Ok(OutContent::Parts(out))
}

/// Function tools as chat tools; built-in tools left out (see [`native_only`]).
fn out_tools<'a>(tools: &'a [InTool<'a>]) -> Result<Vec<OutTool<'a>>, BadRequest> {
    tools
        .iter()
        .enumerate()
        .filter(|(_, t)| t.kind == "function")
        .map(|(i, t)| {
            Ok(OutTool {
                kind: "function",
                function: OutFunctionSpec {
                    name: t
                        .name
                        .as_deref()
                        .ok_or_else(|| bad("tools", format!("tools[{i}].name: Field required")))?,
                    description: t.description.as_deref(),
                    parameters: t.parameters,
                    strict: t.strict,
                },
            })
        })
        .collect()
}

/// `tool_choice` for chat; one naming a built-in tool is left out (see [`native_only`]).
fn out_tool_choice(raw: &RawValue) -> Result<Option<OutToolChoice<'_>>, BadRequest> {
    if raw.get().starts_with('"') {
        let mode: Str<'_> = parse(raw, "tool_choice")?;
        return match mode.0.as_ref() {
            "auto" => Ok(Some(OutToolChoice::Mode("auto"))),
            "none" => Ok(Some(OutToolChoice::Mode("none"))),
            "required" => Ok(Some(OutToolChoice::Mode("required"))),
            other => Err(bad(
                "tool_choice",
                format!("tool_choice: unknown mode `{other}`"),
            )),
        };
    }
    let c: InToolChoice<'_> = parse(raw, "tool_choice")?;
    match (c.kind.as_ref(), c.name) {
        ("function", Some(name)) => Ok(Some(OutToolChoice::Named {
            kind: "function",
            function: NamedFunction { name },
        })),
        ("function", None) => Err(bad(
            "tool_choice",
            "tool_choice.name: Field required".into(),
        )),
        _ => Ok(None),
    }
}

fn out_format<'a>(f: &'a InFormat<'a>) -> Result<Option<OutFormat<'a>>, BadRequest> {
    match f.kind.as_ref() {
        "text" => Ok(None),
        "json_object" => Ok(Some(OutFormat::JsonObject)),
        "json_schema" => Ok(Some(OutFormat::JsonSchema {
            json_schema: OutSchema {
                name: f
                    .name
                    .as_deref()
                    .ok_or_else(|| bad("text", "text.format.name: Field required".into()))?,
                description: f.description.as_deref(),
                schema: f.schema,
                strict: f.strict,
            },
        })),
        other => Err(bad(
            "text",
            format!("text.format.type: unknown format `{other}`"),
        )),
    }
}
