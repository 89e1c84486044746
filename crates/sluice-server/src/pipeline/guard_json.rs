//! Output validation (a `validate_json` guardrail): an answer is checked against the
//! schemas its chat request gave (the Responses API's and Anthropic's requests become chat
//! at the edge, their schemas with them):
//!
//! - `response_format: {"type": "json_schema", "json_schema": {"schema": ...}}`: each
//!   choice's text content parses as JSON and matches the schema (detector `json_schema`);
//! - `tools` (unless the guardrail says `tools = false`): each tool call names a tool the
//!   request offered, and a function call's arguments parse as JSON and match its tool's
//!   `parameters`, `strict` or not (detector `tool_arguments`).
//!
//! The schemas are checked by [`sluice_guard::schema`]. A whole answer that fails is asked
//! for again (`retries` times; each try an attempt, charged), then refused (502
//! `output_validation_failed`) or passed with `x-sluice-output-valid: false`, as
//! configured. A stream is checked when it ends ([`super::guard_stream`], with what
//! [`super::guard_gather`] gathered of it).

use crate::state::AppState;
use serde_json::Value;
use sluice_core::{Error, ErrorKind};
use sluice_guard::{Action, Finding};
use sluice_types::Usage;
use std::borrow::Cow;
use std::sync::Arc;

/// Which of a request's schemas an answer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `response_format`'s schema.
    Format,
    /// The offered tools: a call of a tool not offered, or arguments that do not match.
    Tools,
}

impl Check {
    /// The detector a failure of this check is counted under.
    fn detector(self) -> &'static str {
        match self {
            Self::Format => "json_schema",
            Self::Tools => "tool_arguments",
        }
    }
}

/// Why an answer failed its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The check it failed.
    pub check: Check,
    /// Where and why (`$.age: is not of type `integer``).
    pub reason: String,
}

/// One tool call of an answer, as the checks read it.
#[derive(Debug)]
pub struct Call<'a> {
    /// The tool it names.
    pub name: &'a str,
    /// A function call's arguments (JSON text); `None` for a custom tool's free input.
    pub arguments: Option<Cow<'a, str>>,
}

/// A tool the request offered.
#[derive(Debug)]
struct Offered {
    name: String,
    /// A function's `parameters` (`None`: not given, any arguments).
    schema: Option<Value>,
}

/// The check of one request's answers.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The `validate_json` guardrail's name.
    pub guardrail: String,
    /// `response_format`'s schema, when the request asks for one.
    format: Option<Arc<Value>>,
    /// The offered tools, when tool calls are checked (empty: a call of any tool fails).
    tools: Option<Arc<[Offered]>>,
    /// Tries left.
    pub retries: u32,
    /// Pass a failing answer (flagged) rather than refuse it.
    pub pass: bool,
}

/// The 400 of a request whose schemas cannot be checked.
fn bad(message: String, param: &'static str) -> Error {
    ErrorKind::InvalidRequest {
        message,
        param: Some(param),
    }
    .into()
}

/// `response_format`'s JSON schema, if the request asks for one.
fn format_schema(request: &Value) -> Result<Option<Value>, Error> {
    let format = &request["response_format"];
    if format["type"] != "json_schema" {
        return Ok(None);
    }
    match format["json_schema"].get("schema") {
        None | Some(Value::Null) => Ok(None),
        Some(s @ (Value::Object(_) | Value::Bool(_))) => Ok(Some(s.clone())),
        Some(_) => Err(bad(
            "response_format.json_schema.schema: must be a JSON Schema object".into(),
            "response_format",
        )),
    }
}

/// The tools `request` offers (`None`: none). Function tools need a name, and their
/// `parameters`, when given, must be a schema object; custom tools are offered by name;
/// other kinds (a provider's built-in tools) are not called as functions and are skipped.
fn offered(request: &Value) -> Result<Option<Vec<Offered>>, Error> {
    let tools = match request.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(tools)) if tools.is_empty() => return Ok(None),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(bad("tools: must be a list of tools".into(), "tools")),
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let kind = tool["type"].as_str().unwrap_or("function");
        let spec = match kind {
            "function" | "custom" => &tool[kind],
            _ => continue,
        };
        let Some(name) = spec["name"].as_str().filter(|n| !n.is_empty()) else {
            return Err(bad(
                format!("tools[{i}].{kind}.name: a name is required"),
                "tools",
            ));
        };
        let schema = match (kind, spec.get("parameters")) {
            ("function", Some(s @ Value::Object(_))) => Some(s.clone()),
            (_, None | Some(Value::Null)) | ("custom", _) => None,
            (_, Some(_)) => {
                return Err(bad(
                    format!("tools[{i}].function.parameters: must be a JSON Schema object"),
                    "tools",
                ))
            }
        };
        out.push(Offered {
            name: name.to_string(),
            schema,
        });
    }
    Ok(Some(out))
}

impl Validation {
    /// The check the first of the guardrails `applying` with `validate_json` asks of the
    /// chat request `body`: `None` when it gives no schema to check (no `json_schema`
    /// format, no tools or tools not checked). A schema that cannot be one is a 400.
    pub fn of(state: &AppState, applying: &[usize], body: &[u8]) -> Result<Option<Self>, Error> {
        let Some((g, v)) = applying
            .iter()
            .find_map(|&g| Some((g, state.guardrails[g].validate_json?)))
        else {
            return Ok(None);
        };
        // A body that is not JSON was refused by the view already.
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return Ok(None);
        };
        let format = format_schema(&request)?;
        let tools = match v.tools {
            true => offered(&request)?,
            false => None,
        };
        if format.is_none() && tools.is_none() {
            return Ok(None);
        }
        // Structured output with tool checks on and no tools: a call of any tool fails.
        let tools = tools.or_else(|| v.tools.then(Vec::new));
        Ok(Some(Self {
            guardrail: state.guardrails[g].name.clone(),
            format: format.map(Arc::new),
            tools: tools.map(Arc::from),
            retries: v.retries,
            pass: v.pass,
        }))
    }

    /// The check a failure of the answer as a whole (not JSON) counts under.
    fn main_check(&self) -> Check {
        match self.format {
            Some(_) => Check::Format,
            None => Check::Tools,
        }
    }

    /// Checks one choice: its text content (a choice with none, or only whitespace beside
    /// tool calls, has no structured output to check) and its tool calls.
    pub fn check_choice(&self, content: Option<&str>, calls: &[Call<'_>]) -> Result<(), Failure> {
        let content = content.filter(|c| calls.is_empty() || !c.trim().is_empty());
        if let (Some(schema), Some(text)) = (&self.format, content) {
            let checked = serde_json::from_str::<Value>(text.trim())
                .map_err(|e| format!("the content is not JSON ({e})"))
                .and_then(|value| sluice_guard::schema::validate(schema, &value));
            checked.map_err(|reason| Failure {
                check: Check::Format,
                reason,
            })?;
        }
        let Some(tools) = &self.tools else {
            return Ok(());
        };
        for (k, call) in calls.iter().enumerate() {
            check_call(tools, call).map_err(|why| Failure {
                check: Check::Tools,
                reason: format!("tool call {k} to `{}`: {why}", call.name),
            })?;
        }
        Ok(())
    }

    /// Checks every choice of a whole chat answer.
    pub fn check_answer(&self, body: &[u8]) -> Result<(), Failure> {
        let Ok(answer) = serde_json::from_slice::<Value>(body) else {
            return Err(Failure {
                check: self.main_check(),
                reason: "the answer is not JSON".into(),
            });
        };
        let choices = answer["choices"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, choice) in choices.iter().enumerate() {
            let message = &choice["message"];
            let calls: Vec<Call<'_>> = message["tool_calls"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(call_of)
                .collect();
            self.check_choice(message["content"].as_str(), &calls)
                .map_err(|f| in_choice(f, i, choices.len()))?;
        }
        Ok(())
    }

    /// The finding of a failed `check` that did `action`.
    pub fn finding(&self, check: Check, action: Action) -> Finding {
        Finding {
            guardrail: self.guardrail.clone(),
            detector: check.detector().into(),
            action,
        }
    }

    /// The 502 of an answer that failed for `reason`.
    pub fn error(&self, reason: String) -> Error {
        ErrorKind::OutputInvalid {
            guardrail: self.guardrail.clone(),
            reason,
        }
        .into()
    }
}

/// A failure of choice `i` of `n`, saying which when there are several.
pub fn in_choice(f: Failure, i: impl std::fmt::Display, n: usize) -> Failure {
    match n {
        0 | 1 => f,
        _ => Failure {
            reason: format!("choice {i}: {}", f.reason),
            ..f
        },
    }
}

/// A whole answer's tool call (`{"function": {"name", "arguments"}}`, or a custom tool's
/// `{"custom": {"name", "input"}}`).
fn call_of(call: &Value) -> Call<'_> {
    let function = &call["function"];
    if function.is_object() {
        let arguments = match &function["arguments"] {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            Value::Null => Cow::Borrowed(""),
            other => Cow::Owned(other.to_string()),
        };
        return Call {
            name: function["name"].as_str().unwrap_or_default(),
            arguments: Some(arguments),
        };
    }
    Call {
        name: call["custom"]["name"].as_str().unwrap_or_default(),
        arguments: None,
    }
}

/// Checks one call against the offered tools; the error says why, without the call.
fn check_call(tools: &[Offered], call: &Call<'_>) -> Result<(), String> {
    let Some(tool) = tools.iter().find(|t| t.name == call.name) else {
        return Err(format!("no tool `{}` was offered", call.name));
    };
    let (Some(schema), Some(arguments)) = (&tool.schema, &call.arguments) else {
        return Ok(());
    };
    // A call of a function without parameters may come with no arguments at all.
    let arguments = match arguments.trim() {
        "" => "{}",
        text => text,
    };
    let value: Value =
        serde_json::from_str(arguments).map_err(|e| format!("the arguments are not JSON ({e})"))?;
    sluice_guard::schema::validate(schema, &value)
}

/// Two answers' usage together (an answer asked for again and its retry).
pub fn add(a: Usage, b: Usage) -> Usage {
    Usage {
        prompt_tokens: a.prompt_tokens + b.prompt_tokens,
        completion_tokens: a.completion_tokens + b.completion_tokens,
        cached_prompt_tokens: a.cached_prompt_tokens + b.cached_prompt_tokens,
        reasoning_tokens: a.reasoning_tokens + b.reasoning_tokens,
        cache_write_tokens: a.cache_write_tokens + b.cache_write_tokens,
        characters: a.characters + b.characters,
        audio_ms: a.audio_ms + b.audio_ms,
        images: a.images + b.images,
    }
}
