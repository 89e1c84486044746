//! A local model's whole answer: a `chat.completion` of one choice per generation (`n`),
//! each its text or the calls made (and the text before them), with its tokens' `logprobs`
//! when asked; usage counts the prompt once and sums the completions.

use super::tools::{self, CallShape};
use super::write::{logprobs_json, usage_of};
use sluice_local::Completion;
use sluice_providers::chunks::ToolCallOut;
use sluice_types::Usage;

/// What every choice of a whole answer shares.
pub(super) struct Whole<'a> {
    pub id: &'a str,
    pub model: &'a str,
    /// How an answer becomes calls, if it may.
    pub shape: Option<&'a CallShape>,
    /// Whether the tokens' log probabilities were asked for.
    pub logprobs: bool,
}

impl Whole<'_> {
    /// The body answering `done` (one completion per choice, in order), and its usage.
    pub(super) fn body(&self, done: &[Completion]) -> (Vec<u8>, Usage) {
        let mut usage = Usage::default();
        for (i, d) in done.iter().enumerate() {
            let one = usage_of(d.usage);
            if i == 0 {
                usage.prompt_tokens = one.prompt_tokens;
                usage.cached_prompt_tokens = one.cached_prompt_tokens;
            }
            usage.completion_tokens += one.completion_tokens;
        }
        let mut bodies = done.iter().map(|d| self.one(d, &usage));
        let first = bodies.next().unwrap_or_default();
        if done.len() < 2 {
            return (first, usage);
        }
        // Several choices: the first body with every body's choice, each at its index.
        let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&first) else {
            return (first, usage);
        };
        let mut choices = vec![v["choices"][0].take()];
        for body in bodies {
            let mut other: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            choices.push(other["choices"][0].take());
        }
        for (index, choice) in choices.iter_mut().enumerate() {
            choice["index"] = index.into();
        }
        v["choices"] = choices.into();
        (v.to_string().into_bytes(), usage)
    }

    /// The body of one choice.
    fn one(&self, done: &Completion, usage: &Usage) -> Vec<u8> {
        let body = whole_body(self.id, self.model, self.shape, done, usage);
        if !self.logprobs {
            return body;
        }
        let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return body;
        };
        v["choices"][0]["logprobs"] = logprobs_json(true, &done.logprobs);
        v.to_string().into_bytes()
    }
}

/// A whole answer: text, or the calls (and the text before them).
fn whole_body(
    id: &str,
    model: &str,
    shape: Option<&CallShape>,
    done: &Completion,
    usage: &Usage,
) -> Vec<u8> {
    let (content, calls): (Option<&str>, Vec<(String, String)>) = match shape {
        None => (Some(&done.text), Vec::new()),
        Some(shape @ CallShape::Watched { .. }) => (
            Some(done.text.as_str()).filter(|t| !t.is_empty() || done.calls.is_empty()),
            done.calls
                .iter()
                .map(|c| tools::call_of(shape, c))
                .filter(|(name, _)| !name.is_empty())
                .collect(),
        ),
        Some(shape) => (None, vec![tools::call_of(shape, &done.text)]),
    };
    let out: Vec<ToolCallOut> = calls
        .into_iter()
        .map(|(name, arguments)| {
            ToolCallOut::new(None, tools::call_id().into(), name.into(), arguments.into())
        })
        .collect();
    sluice_providers::chunks::Answer {
        id,
        model,
        content: if out.is_empty() {
            Some(content.unwrap_or_default())
        } else {
            content
        },
        reasoning: None,
        tool_calls: &out,
        thinking_blocks: &[],
        finish: if out.is_empty() {
            done.finish_reason.as_str()
        } else {
            tool_finish(shape, done)
        },
        usage,
    }
    .to_vec()
}

/// `finish_reason` of an answer that may call: `tool_calls` once the calls are complete.
fn tool_finish(shape: Option<&CallShape>, done: &Completion) -> &'static str {
    let complete = match shape {
        None => false,
        Some(CallShape::Watched { .. }) => !done.calls.is_empty() && done.calls_complete,
        Some(_) => done.finish_reason == sluice_local::FinishReason::Stop,
    };
    if complete {
        "tool_calls"
    } else {
        done.finish_reason.as_str()
    }
}
