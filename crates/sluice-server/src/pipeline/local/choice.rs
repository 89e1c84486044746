//! [`ChoiceStream`]: one choice of a local model's streamed answer (one generation), its
//! events written as chunk deltas of that choice's `index`: text, or the calls made (a
//! forced call's arguments as they come, or calls read out of an answer that may call), the
//! tokens' `logprobs` with the chunk that follows them, and its own `finish_reason`.

use super::calls::CallScanner;
use super::tools::{call_id, call_of, CallShape};
use super::write::logprobs_json;
use sluice_local::{Completion, GenerationEvent, TokenLogprob};
use sluice_providers::chunks::{ChunkChoice, ChunkWriter, Delta, ToolCallOut};

/// One choice being streamed.
pub(super) struct ChoiceStream {
    index: usize,
    sent_role: bool,
    /// A forced tool call: its shape, its id, and the text so far.
    tool: Option<(CallShape, String, String)>,
    /// The calls of an answer that may call: each one's reader and id, and whether its
    /// first delta (with the name) went out.
    calls: Vec<(CallScanner, String, bool)>,
    /// With `logprobs`: the tokens not yet written, and how many were.
    logprobs: Option<(Vec<TokenLogprob>, usize)>,
}

impl ChoiceStream {
    /// Choice `index`, whose answer may become calls of `shape`, with its tokens' log
    /// probabilities when `logprobs`.
    pub(super) fn new(index: usize, shape: Option<CallShape>, logprobs: bool) -> Self {
        Self {
            index,
            sent_role: false,
            tool: shape.map(|shape| (shape, call_id(), String::new())),
            calls: Vec::new(),
            logprobs: logprobs.then(|| (Vec::new(), 0)),
        }
    }

    /// Marks the role as sent (by a chunk opening every choice).
    pub(super) fn role_sent(&mut self) {
        self.sent_role = true;
    }

    /// Writes what `event` adds (the last one, `Done`, is [`Self::finish`]'s).
    pub(super) fn event(
        &mut self,
        writer: &ChunkWriter,
        out: &mut Vec<u8>,
        event: GenerationEvent,
    ) {
        match event {
            GenerationEvent::Delta(text) => self.text(writer, out, &text),
            GenerationEvent::Call { index, text } => self.call_delta(writer, out, index, &text),
            GenerationEvent::Logprobs(tokens) => {
                if let Some((pending, _)) = &mut self.logprobs {
                    pending.extend(tokens);
                }
            }
            GenerationEvent::Done(done) => self.finish(writer, out, &done),
        }
    }

    /// A chunk of this choice: the role on its first, the log probabilities not yet written
    /// (on the last, `finish`, all that are left, even none).
    fn write(
        &mut self,
        writer: &ChunkWriter,
        out: &mut Vec<u8>,
        mut delta: Delta<'_>,
        finish: Option<&str>,
    ) {
        if !self.sent_role {
            self.sent_role = true;
            delta.role = Some("assistant");
        }
        let logprobs = match &mut self.logprobs {
            Some((pending, sent)) if !pending.is_empty() || finish.is_some() => {
                *sent += pending.len();
                Some(logprobs_json(true, &std::mem::take(pending)))
            }
            _ => None,
        };
        let choice = ChunkChoice {
            index: self.index,
            delta,
            finish_reason: finish,
            logprobs: logprobs.as_ref(),
        };
        writer.choices(out, std::slice::from_ref(&choice));
    }

    /// Generated text: content, or a forced call's arguments.
    fn text(&mut self, writer: &ChunkWriter, out: &mut Vec<u8>, text: &str) {
        match &mut self.tool {
            None | Some((CallShape::Watched { .. }, ..)) => {
                self.write(writer, out, Delta::content(text), None);
            }
            // The arguments as they come (from their first non-space byte, as a whole
            // answer has them): the first delta names the call.
            Some((CallShape::Arguments { name }, id, sent)) => {
                let text = if sent.is_empty() {
                    text.trim_start()
                } else {
                    text
                };
                if text.is_empty() {
                    return;
                }
                let call = if sent.is_empty() {
                    ToolCallOut::new(Some(0), id.clone().into(), name.clone().into(), text.into())
                } else {
                    ToolCallOut::arguments(0, text)
                };
                sent.push_str(text);
                self.write(
                    writer,
                    out,
                    Delta::tool_calls(std::slice::from_ref(&call)),
                    None,
                );
            }
            // The call in the template's format: read as a call the model started.
            Some((CallShape::Framed { .. }, _, held)) => {
                held.push_str(text);
                self.call_delta(writer, out, 0, text);
            }
            // The call is sent whole at the end, once its name is known.
            Some((CallShape::Wrapped, _, held)) => {
                held.push_str(text);
                if !self.sent_role {
                    self.write(writer, out, Delta::default(), None);
                }
            }
        }
    }

    /// A delta of call `index` (of an answer that may call): nothing until the function's
    /// name is known, then the name, then the arguments as they come.
    fn call_delta(&mut self, writer: &ChunkWriter, out: &mut Vec<u8>, index: usize, text: &str) {
        let key = match &self.tool {
            Some((CallShape::Watched { key } | CallShape::Framed { key }, ..)) => *key,
            _ => return,
        };
        while self.calls.len() <= index {
            self.calls.push((CallScanner::new(key), call_id(), false));
        }
        let (scanner, id, named) = &mut self.calls[index];
        let arguments = scanner.push(text);
        let call = if *named {
            if arguments.is_empty() {
                return;
            }
            ToolCallOut::arguments(index, &arguments)
        } else {
            let Some(name) = scanner.take_name() else {
                return;
            };
            *named = true;
            ToolCallOut::new(
                Some(index),
                id.clone().into(),
                name.into(),
                arguments.into(),
            )
        };
        self.write(
            writer,
            out,
            Delta::tool_calls(std::slice::from_ref(&call)),
            None,
        );
    }

    /// The end of the choice: a held forced call, then its finish chunk (`tool_calls` once
    /// the calls are complete) with the log probabilities left (a stop string's tokens).
    fn finish(&mut self, writer: &ChunkWriter, out: &mut Vec<u8>, done: &Completion) {
        if let Some((pending, sent)) = &mut self.logprobs {
            *pending = done.logprobs.get(*sent..).unwrap_or_default().to_vec();
        }
        if !self.sent_role {
            self.write(writer, out, Delta::role(), None);
        }
        let mut finish = done.finish_reason.as_str();
        let Some((shape, id, text)) = self.tool.clone() else {
            self.write(writer, out, Delta::default(), Some(finish));
            return;
        };
        let complete = match &shape {
            CallShape::Watched { .. } => !done.calls.is_empty() && done.calls_complete,
            _ => done.finish_reason == sluice_local::FinishReason::Stop,
        };
        if complete {
            finish = "tool_calls";
        }
        // A call held to the end (several functions forced), or a framed one cut before its
        // name: sent whole, as the whole answer has it.
        let named = self.calls.first().is_some_and(|(_, _, named)| *named);
        let held = match shape {
            CallShape::Wrapped => true,
            CallShape::Framed { .. } => !named,
            _ => false,
        };
        if held {
            let (name, arguments) = call_of(&shape, &text);
            let call = ToolCallOut::new(Some(0), id.into(), name.into(), arguments.into());
            self.write(
                writer,
                out,
                Delta::tool_calls(std::slice::from_ref(&call)),
                None,
            );
        }
        self.write(writer, out, Delta::default(), Some(finish));
    }
}
