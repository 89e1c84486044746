//! A local model's streamed answer: generation events written as OpenAI chunk events by
//! the providers' chunk writer, ending the request (the guard's [`Tracked`]) when the
//! generation ends or the client leaves.

use super::calls::CallScanner;
use super::tools::{call_id, call_of, CallShape};
use super::write::usage_of;
use crate::local::ModelMetrics;
use crate::pipeline::ending::{Ending, Tracked};
use crate::response::Aborted;
use bytes::Bytes;
use http_body::{Body, Frame};
use sluice_local::pool::LocalModel;
use sluice_local::GenerationEvent;
use sluice_providers::chunks::{ChunkWriter, Delta, ToolCallOut};
use sluice_types::Usage;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A local model's answer, streamed as OpenAI chunk events as tokens are generated. Holds
/// the model's lease (so the pool does not evict it) until the stream ends; dropping it (the
/// client left) cancels the generation at its next token.
pub struct LocalStream {
    _lease: sluice_local::pool::Lease<LocalModel>,
    events: mpsc::UnboundedReceiver<sluice_local::Result<GenerationEvent>>,
    writer: ChunkWriter,
    include_usage: bool,
    /// The model's measurements: the queue wait is recorded when the generation ends.
    measured: Option<Arc<ModelMetrics>>,
    started: Instant,
    first: Option<Duration>,
    sent_role: bool,
    /// A forced tool call: its shape, its id, and the text so far.
    tool: Option<(CallShape, String, String)>,
    /// The calls of an answer that may call: each one's reader and id, and whether its
    /// first delta (with the name) went out.
    calls: Vec<(CallScanner, String, bool)>,
    /// How the stream ended, once it has.
    ended: Option<Ending>,
    /// The prompt's length, told (as a prompt-usage comment) with the first frame; `None`
    /// once told.
    prompt_tokens: Option<u64>,
}

impl LocalStream {
    /// The stream of `events`, written by `writer`, holding `lease` until it ends.
    pub(super) fn new(
        lease: sluice_local::pool::Lease<LocalModel>,
        events: mpsc::UnboundedReceiver<sluice_local::Result<GenerationEvent>>,
        writer: ChunkWriter,
        include_usage: bool,
        measured: Option<Arc<ModelMetrics>>,
        tool_call: Option<CallShape>,
    ) -> Self {
        Self {
            _lease: lease,
            events,
            writer,
            include_usage,
            measured,
            started: Instant::now(),
            first: None,
            sent_role: false,
            tool: tool_call.map(|shape| (shape, call_id(), String::new())),
            calls: Vec::new(),
            ended: None,
            prompt_tokens: None,
        }
    }

    /// Tells the prompt's length before the first token, for a Messages API stream's
    /// `message_start` (see [`ChunkWriter::prompt_usage`]).
    pub(super) fn prompt_tokens(mut self, tokens: u64) -> Self {
        self.prompt_tokens = Some(tokens);
        self
    }

    /// A delta of call `index` (of an answer that may call): nothing until the function's
    /// name is known, then the name, then the arguments as they come.
    /// Returns whether it wrote one.
    fn call_delta(&mut self, out: &mut Vec<u8>, index: usize, text: &str, first: bool) -> bool {
        let key = match &self.tool {
            Some((CallShape::Watched { key }, ..)) => *key,
            _ => return false,
        };
        while self.calls.len() <= index {
            self.calls.push((CallScanner::new(key), call_id(), false));
        }
        let (scanner, id, named) = &mut self.calls[index];
        let arguments = scanner.push(text);
        let call = if *named {
            if arguments.is_empty() {
                return false;
            }
            ToolCallOut::arguments(index, &arguments)
        } else {
            let Some(name) = scanner.take_name() else {
                return false;
            };
            *named = true;
            ToolCallOut::new(
                Some(index),
                id.as_str().into(),
                name.into(),
                arguments.as_str().into(),
            )
        };
        let mut delta = Delta::tool_calls(std::slice::from_ref(&call));
        if first {
            delta.role = Some("assistant");
        }
        self.writer.delta(out, delta, None);
        true
    }

    fn end(&mut self, status: u16, usage: Usage) {
        self.ended = Some(Ending {
            status,
            usage,
            estimated: false,
            ttft: self.first,
        });
    }
}

impl Body for LocalStream {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        if this.ended.is_some() {
            return Poll::Ready(None);
        }
        let mut out = Vec::new();
        let event = match this.events.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(event) => event,
        };
        if let Some(prompt_tokens) = this.prompt_tokens.take() {
            let usage = Usage {
                prompt_tokens,
                ..Usage::default()
            };
            this.writer.prompt_usage(&mut out, &usage);
        }
        match event {
            Some(Ok(GenerationEvent::Delta(text))) => {
                if this.first.is_none() {
                    this.first = Some(this.started.elapsed());
                }
                let first = !this.sent_role;
                this.sent_role = true;
                match &mut this.tool {
                    None | Some((CallShape::Watched { .. }, ..)) => {
                        let mut delta = Delta::content(&text);
                        if first {
                            delta.role = Some("assistant");
                        }
                        this.writer.delta(&mut out, delta, None);
                    }
                    // The arguments as they come: the first delta names the call.
                    Some((CallShape::Arguments { name }, id, sent)) => {
                        let call = if sent.is_empty() {
                            ToolCallOut::new(
                                Some(0),
                                id.as_str().into(),
                                name.as_str().into(),
                                text.as_str().into(),
                            )
                        } else {
                            ToolCallOut::arguments(0, &text)
                        };
                        sent.push_str(&text);
                        let mut delta = Delta::tool_calls(std::slice::from_ref(&call));
                        if first {
                            delta.role = Some("assistant");
                        }
                        this.writer.delta(&mut out, delta, None);
                    }
                    // The call is sent whole at the end, once its name is known.
                    Some((CallShape::Wrapped, _, held)) => {
                        held.push_str(&text);
                        if first {
                            this.writer.delta(
                                &mut out,
                                Delta {
                                    role: Some("assistant"),
                                    ..Delta::default()
                                },
                                None,
                            );
                        }
                    }
                }
            }
            Some(Ok(GenerationEvent::Call { index, text })) => {
                if this.first.is_none() {
                    this.first = Some(this.started.elapsed());
                }
                let first = !this.sent_role;
                if this.call_delta(&mut out, index, &text, first) {
                    this.sent_role = true;
                }
            }
            Some(Ok(GenerationEvent::Done(done))) => {
                if let Some(m) = &this.measured {
                    m.queue_wait.observe(done.queue_wait);
                }
                let usage = usage_of(done.usage);
                if !this.sent_role {
                    this.writer.delta(&mut out, Delta::role(), None);
                }
                let with_usage = this.include_usage.then_some(&usage);
                let mut finish = done.finish_reason.as_str();
                if let Some((shape, id, text)) = &this.tool {
                    if let CallShape::Wrapped = shape {
                        let (name, arguments) = call_of(shape, text);
                        let call = ToolCallOut::new(
                            Some(0),
                            id.as_str().into(),
                            name.into(),
                            arguments.into(),
                        );
                        this.writer.delta(
                            &mut out,
                            Delta::tool_calls(std::slice::from_ref(&call)),
                            None,
                        );
                    }
                    let complete = match shape {
                        CallShape::Watched { .. } => !done.calls.is_empty() && done.calls_complete,
                        _ => done.finish_reason == sluice_local::FinishReason::Stop,
                    };
                    if complete {
                        finish = "tool_calls";
                    }
                }
                this.writer.finish(&mut out, finish, with_usage);
                this.end(200, usage);
            }
            Some(Err(e)) => {
                interrupted(&mut out, Interrupted::Failed(&e.to_string()));
                this.end(502, Usage::default());
            }
            None => {
                interrupted(&mut out, Interrupted::Stopped);
                this.end(502, Usage::default());
            }
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
    }
}

/// Why a local stream ended before its generation did.
pub(super) enum Interrupted<'a> {
    /// The generation failed, saying this.
    Failed(&'a str),
    /// The generation's channel closed without a result.
    Stopped,
}

/// The error event that ends a local stream cut short (`stream_interrupted`).
pub(super) fn interrupted(out: &mut Vec<u8>, why: Interrupted<'_>) {
    let message = match why {
        Interrupted::Failed(m) => m,
        Interrupted::Stopped => "the local model stopped before it finished",
    };
    let body = sluice_types::ErrorBody {
        message,
        kind: "upstream_error",
        param: None,
        code: Some("stream_interrupted"),
    }
    .to_json();
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\n\n");
}

impl Tracked for LocalStream {
    fn ending(&mut self, _completed: bool) -> Ending {
        match self.ended {
            Some(end) => end,
            // The client left before the end: what is known.
            _ => Ending {
                ttft: self.first,
                ..Ending::bare(499)
            },
        }
    }
}
