//! Tools on a local model: `tools`, `tool_choice` and `parallel_tool_calls`, and the calls
//! and results of earlier turns, in the model's own tool format (see
//! [`sluice_local::ToolFormat`]).
//!
//! * `auto` (the default with tools): the tools go to a chat template that renders them, or
//!   into the fallback prompt (a system message describing them and asking for
//!   `<tool_call>{"name": …, "arguments": …}</tool_call>`); the model answers in text or starts
//!   a call, whose JSON is then constrained to one of the tools (name and arguments).
//! * `required` or a named function: the whole answer is constrained to the call. With a
//!   template that renders tools, the tools go to the template and the answer is the call in
//!   its format (`{"name": …, <key>: …}` of one of the chosen tools, after the format's call
//!   marker, which is put at the end of the prompt); else the tools are described in the
//!   fallback prompt and the answer is the function's `parameters` (with several tools,
//!   `{"name": …, "arguments": …}` of one of them).
//! * `none`: the tools are not offered; the model answers in text.
//!
//! A call's grammar holds each tool's `parameters` as a branch of one schema; their `$ref`s
//! (into their own `$defs`) are rewritten to point there (`super::refs`).
//!
//! Earlier calls and results are rendered by a template with a tool format as it defines
//! (Qwen's `<tool_response>`, Llama's `ipython` turn); under the fallback, an assistant's calls
//! become `<tool_call>` text and a tool result a user turn in `<tool_response>`.

use super::errors::invalid;
use super::refs::rebased;
use serde_json::{json, Value};
use sluice_core::Error;
use sluice_local::{ChatMessage, ChatRequest, Grammar, GrammarCache, ToolCalls, ToolFormat};
use sluice_types::openai::{ChatCompletionRequest, Tool, ToolChoice};
use std::sync::Arc;

/// How the answer becomes calls.
#[derive(Debug, Clone)]
pub(super) enum CallShape {
    /// Forced, one function: the output is its arguments.
    Arguments { name: String },
    /// Forced, several: the output is `{"name": …, "arguments": …}`.
    Wrapped,
    /// Forced, in the template's own tool format: the output is the call's
    /// `{"name": …, <key>: …}` (after the format's call marker, put in the prompt), read as it
    /// streams like a call the model starts itself.
    Framed { key: &'static str },
    /// The model may call: calls come apart from the text, their arguments under `key`.
    Watched { key: &'static str },
}

/// What a request asks about tools.
pub(super) struct Asked {
    tools: Vec<Tool>,
    choice: Choice,
    /// `parallel_tool_calls` (default true).
    parallel: bool,
}

enum Choice {
    None,
    Auto,
    /// `required` (all tools) or a named one.
    Forced(Vec<usize>),
}

/// The tools of `r` (`None` without any), checked: every tool named as OpenAI requires
/// (`^[a-zA-Z0-9_-]{1,64}$`), its `parameters` a schema sluice can constrain to, `tool_choice`
/// `none`, `auto`, `required` or a function among `tools`.
pub(super) fn asked(
    r: &ChatCompletionRequest,
    grammars: &GrammarCache,
) -> Result<Option<Asked>, Error> {
    let tools = match r.tools.as_deref() {
        None | Some([]) => {
            let forced = match &r.tool_choice {
                Some(ToolChoice::Mode(mode)) => mode == "required",
                Some(ToolChoice::Named { .. }) => true,
                None => false,
            };
            if forced {
                return Err(invalid("`tool_choice` needs `tools`".into(), "tool_choice"));
            }
            return Ok(None);
        }
        Some(tools) => tools,
    };
    for tool in tools {
        let name = &tool.function.name;
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(invalid(
                format!("every tool needs a `function.name` of 1 to 64 letters, digits, `_` or `-` (got `{name}`)"),
                "tools",
            ));
        }
        compile(&parameters(tool), name, grammars)?;
    }
    let choice = match &r.tool_choice {
        None => Choice::Auto,
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "none" => Choice::None,
            "auto" => Choice::Auto,
            "required" => Choice::Forced((0..tools.len()).collect()),
            other => {
                return Err(invalid(
                    format!(
                    "`tool_choice` must be `none`, `auto`, `required` or a function, not `{other}`"
                ),
                    "tool_choice",
                ))
            }
        },
        Some(ToolChoice::Named { function }) => {
            let at = tools
                .iter()
                .position(|t| t.function.name == function.name)
                .ok_or_else(|| {
                    invalid(
                        format!(
                            "`tool_choice` names `{}`, which is not among `tools`",
                            function.name
                        ),
                        "tool_choice",
                    )
                })?;
            Choice::Forced(vec![at])
        }
    };
    Ok(Some(Asked {
        tools: tools.to_vec(),
        choice,
        parallel: r.parallel_tool_calls.unwrap_or(true),
    }))
}

/// Whether the request forces a call or lets the model call (then its `response_format` has
/// no place: the calls are constrained to the tools).
pub(super) fn offers(asked: &Option<Asked>) -> bool {
    asked
        .as_ref()
        .is_some_and(|a| !matches!(a.choice, Choice::None))
}

/// Fits `request` to the model's tool `format`: the history of calls and results, then the
/// tools asked. Returns how the answer becomes calls, if it may.
pub(super) fn prepare(
    asked: Option<Asked>,
    format: ToolFormat,
    request: &mut ChatRequest,
    grammars: &GrammarCache,
) -> Result<Option<CallShape>, Error> {
    if !format.renders_tools() {
        fallback_history(&mut request.messages);
    }
    let Some(asked) = asked else {
        return Ok(None);
    };
    match &asked.choice {
        Choice::None => Ok(None),
        Choice::Forced(chosen) => {
            let chosen: Vec<&Tool> = chosen.iter().map(|&i| &asked.tools[i]).collect();
            if format.renders_tools() {
                let key = format.arguments_key();
                request.constraint = Some(wrapped(&chosen, key, grammars)?);
                request.tools = Some(asked.tools.iter().map(tool_object).collect());
                request.answer_prefix = format.forced_prefix().map(str::to_owned);
                return Ok(Some(CallShape::Framed { key }));
            }
            let (shape, grammar) = forced(&chosen, grammars)?;
            request.constraint = Some(grammar);
            add_system(&mut request.messages, forced_prompt(&asked.tools, &shape));
            Ok(Some(shape))
        }
        Choice::Auto => {
            let key = format.arguments_key();
            let refs: Vec<&Tool> = asked.tools.iter().collect();
            let grammar = wrapped(&refs, key, grammars)?;
            if format.renders_tools() {
                request.tools = Some(asked.tools.iter().map(tool_object).collect());
            } else {
                add_system(&mut request.messages, auto_prompt(&asked.tools));
            }
            request.tool_calls = Some(ToolCalls {
                start: format.start(),
                grammar,
                parallel: asked.parallel && format.parallel(),
            });
            Ok(Some(CallShape::Watched { key }))
        }
    }
}

fn parameters(t: &Tool) -> Value {
    t.function
        .parameters
        .clone()
        .unwrap_or_else(|| json!({"type": "object"}))
}

fn compile(schema: &Value, name: &str, grammars: &GrammarCache) -> Result<Arc<Grammar>, Error> {
    grammars
        .compile(schema)
        .map_err(|e| invalid(format!("the parameters of tool `{name}`: {e}"), "tools"))
}

/// A forced call's shape and grammar.
fn forced(chosen: &[&Tool], grammars: &GrammarCache) -> Result<(CallShape, Arc<Grammar>), Error> {
    match chosen {
        [one] => {
            let name = one.function.name.clone();
            let grammar = compile(&parameters(one), &name, grammars)?;
            Ok((CallShape::Arguments { name }, grammar))
        }
        several => Ok((CallShape::Wrapped, wrapped(several, "arguments", grammars)?)),
    }
}

/// The grammar of `{"name": …, <key>: …}` of one of `tools`: branch `i` of an `anyOf`,
/// its parameters at `/anyOf/i/properties/<key>`, where their `$ref`s are made to point.
fn wrapped(tools: &[&Tool], key: &str, grammars: &GrammarCache) -> Result<Arc<Grammar>, Error> {
    let branches: Vec<Value> = tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let arguments = rebased(&parameters(t), &format!("/anyOf/{i}/properties/{key}"));
            json!({
                "type": "object",
                "properties": {"name": {"const": t.function.name}, key: arguments},
                "required": ["name", key],
                "additionalProperties": false
            })
        })
        .collect();
    compile(&json!({"anyOf": branches}), "…", grammars)
}

/// A tool as templates read it: OpenAI's object.
fn tool_object(t: &Tool) -> Value {
    let mut function = json!({"name": t.function.name, "parameters": parameters(t)});
    if let Some(d) = &t.function.description {
        function["description"] = json!(d);
    }
    json!({"type": "function", "function": function})
}

/// Adds `text` to the system message (first), or puts one first.
fn add_system(messages: &mut Vec<ChatMessage>, text: String) {
    match messages.first_mut() {
        Some(first) if first.role == "system" => {
            first.content = format!("{}\n\n{}", first.content, text);
        }
        _ => messages.insert(0, ChatMessage::new("system", text)),
    }
}

/// The tools, one a line.
fn described(tools: &[Tool]) -> String {
    let mut text = String::from("You have these functions:\n");
    for t in tools {
        text.push_str(&format!(
            "- {}: {} Arguments (JSON Schema): {}\n",
            t.function.name,
            t.function.description.as_deref().unwrap_or(""),
            parameters(t)
        ));
    }
    text
}

/// The fallback prompt of a forced call.
fn forced_prompt(tools: &[Tool], shape: &CallShape) -> String {
    let mut text = described(tools);
    match shape {
        CallShape::Arguments { name } => text.push_str(&format!(
            "Call `{name}` now: answer with only its arguments, as a JSON object."
        )),
        _ => text.push_str(
            "Call one of them now: answer with only {\"name\": the function, \"arguments\": its arguments as a JSON object}.",
        ),
    }
    text
}

/// The fallback prompt of `auto`: the model may answer or call.
fn auto_prompt(tools: &[Tool]) -> String {
    let mut text = described(tools);
    text.push_str(
        "To call a function, answer with <tool_call>{\"name\": the function, \"arguments\": its arguments as a JSON object}</tool_call>; otherwise answer in text.",
    );
    text
}

/// Earlier calls and results for a template without a tool format: an assistant's calls as
/// `<tool_call>` text, a result as a user turn in `<tool_response>`.
fn fallback_history(messages: &mut [ChatMessage]) {
    for m in messages.iter_mut() {
        if let Some(calls) = m.tool_calls.take() {
            for call in calls {
                let f = &call["function"];
                let text = json!({"name": f["name"], "arguments": f["arguments"]});
                if !m.content.is_empty() {
                    m.content.push('\n');
                }
                m.content
                    .push_str(&format!("<tool_call>\n{text}\n</tool_call>"));
            }
        }
        if m.role == "tool" {
            m.role = "user".into();
            m.content = format!("<tool_response>\n{}\n</tool_response>", m.content);
            m.tool_call_id = None;
            m.name = None;
        }
    }
}

/// The call in a forced answer: the function's name and its arguments as JSON text.
pub(super) fn call_of(shape: &CallShape, text: &str) -> (String, String) {
    match shape {
        CallShape::Arguments { name } => (name.clone(), text.trim_start().to_owned()),
        CallShape::Wrapped => super::calls::CallScanner::read("arguments", text),
        CallShape::Watched { key } | CallShape::Framed { key } => {
            super::calls::CallScanner::read(key, text)
        }
    }
}

/// A tool call's id.
pub(super) fn call_id() -> String {
    format!("call_{:016x}", sluice_core::rng::next_u64())
}
