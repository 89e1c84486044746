//! Forced tool calls on a local model: `tools` with `tool_choice` `required` or a named
//! function. The model's output is constrained to the call (the function's `parameters`
//! schema; with several tools, `{"name": …, "arguments": …}` of one of them), the tools are
//! described to it in a system message (the fallback prompt: chat templates' own tool formats
//! are not rendered yet), and the answer is OpenAI's `tool_calls` with `finish_reason`
//! `tool_calls`. `tool_choice` `none` answers in text without the tools; `auto` (the default
//! with tools) is refused, naming `tool_choice`: a local model does not yet decide by itself.

use super::errors::invalid;
use serde_json::{json, Value};
use sluice_core::Error;
use sluice_local::{ChatMessage, Grammar};
use sluice_types::openai::{ChatCompletionRequest, Tool, ToolChoice};
use std::sync::Arc;

/// How the constrained output becomes the call.
#[derive(Debug, Clone)]
pub(super) enum CallShape {
    /// One function: the output is its arguments.
    Arguments { name: String },
    /// Several: the output is `{"name": …, "arguments": …}`.
    Wrapped,
}

/// A request's forced call: its shape, its constraint and the prompt that describes the tools.
pub(super) struct ToolPlan {
    pub shape: CallShape,
    pub grammar: Arc<Grammar>,
    pub system: ChatMessage,
}

/// The forced call of `r`, if it has one (`None` without tools or with `tool_choice` `none`).
pub(super) fn plan(r: &ChatCompletionRequest) -> Result<Option<ToolPlan>, Error> {
    let tools = match r.tools.as_deref() {
        None | Some([]) => return Ok(None),
        Some(tools) => tools,
    };
    let chosen: Vec<&Tool> = match &r.tool_choice {
        Some(ToolChoice::Mode(mode)) if mode == "none" => return Ok(None),
        Some(ToolChoice::Mode(mode)) if mode == "required" => tools.iter().collect(),
        Some(ToolChoice::Named { function }) => {
            let tool = tools
                .iter()
                .find(|t| t.function.name == function.name)
                .ok_or_else(|| {
                    invalid(
                        format!("`tool_choice` names `{}`, which is not among `tools`", function.name),
                        "tool_choice",
                    )
                })?;
            vec![tool]
        }
        _ => {
            return Err(invalid(
                "local models call tools only when told to: set `tool_choice` to `required` or to a named function (`auto` is not supported)".into(),
                "tool_choice",
            ))
        }
    };
    for tool in tools {
        if tool.function.name.is_empty() {
            return Err(invalid(
                "every tool needs a `function.name`".into(),
                "tools",
            ));
        }
    }
    let parameters = |t: &Tool| {
        t.function
            .parameters
            .clone()
            .unwrap_or_else(|| json!({"type": "object"}))
    };
    let compile = |schema: &Value, name: &str| {
        Grammar::from_json_schema(schema)
            .map_err(|e| invalid(format!("the parameters of tool `{name}`: {e}"), "tools"))
    };
    let (shape, grammar) = match chosen.as_slice() {
        [one] => {
            let name = one.function.name.clone();
            let grammar = compile(&parameters(one), &name)?;
            (CallShape::Arguments { name }, grammar)
        }
        several => {
            if several
                .iter()
                .any(|t| parameters(t).to_string().contains("\"$ref\""))
            {
                return Err(invalid(
                    "with several tools to choose from, parameters with `$ref` are not supported: name the function in `tool_choice`".into(),
                    "tools",
                ));
            }
            let branches: Vec<Value> = several
                .iter()
                .map(|t| {
                    json!({
                        "type": "object",
                        "properties": {"name": {"const": t.function.name}, "arguments": parameters(t)},
                        "required": ["name", "arguments"],
                        "additionalProperties": false
                    })
                })
                .collect();
            (
                CallShape::Wrapped,
                compile(&json!({"anyOf": branches}), "…")?,
            )
        }
    };
    Ok(Some(ToolPlan {
        system: ChatMessage::new("system", prompt(tools, &shape)),
        shape,
        grammar: Arc::new(grammar),
    }))
}

/// The fallback prompt: the tools, and the call to answer with.
fn prompt(tools: &[Tool], shape: &CallShape) -> String {
    let mut text = String::from("You have these functions:\n");
    for t in tools {
        let parameters = t
            .function
            .parameters
            .clone()
            .unwrap_or_else(|| json!({"type": "object"}));
        text.push_str(&format!(
            "- {}: {} Arguments (JSON Schema): {}\n",
            t.function.name,
            t.function.description.as_deref().unwrap_or(""),
            parameters
        ));
    }
    match shape {
        CallShape::Arguments { name } => text.push_str(&format!(
            "Call `{name}` now: answer with only its arguments, as a JSON object."
        )),
        CallShape::Wrapped => text.push_str(
            "Call one of them now: answer with only {\"name\": the function, \"arguments\": its arguments as a JSON object}.",
        ),
    }
    text
}

/// The call in a finished answer: the function's name and its arguments as JSON text.
pub(super) fn call_of(shape: &CallShape, text: &str) -> (String, String) {
    match shape {
        CallShape::Arguments { name } => (name.clone(), text.trim().to_owned()),
        CallShape::Wrapped => {
            let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            let name = value["name"].as_str().unwrap_or_default().to_owned();
            (name, value["arguments"].to_string())
        }
    }
}

/// A tool call's id.
pub(super) fn call_id() -> String {
    format!("call_{:016x}", sluice_core::rng::next_u64())
}
