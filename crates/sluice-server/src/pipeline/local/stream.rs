//! A local model's streamed answer: the events of its generations (one per choice, `n` of
//! them) written as OpenAI chunk events by the providers' chunk writer, each choice's deltas
//! as they come under its `index` ([`ChoiceStream`]), then usage and `[DONE]` once every
//! choice has finished; the request (the guard's [`Tracked`]) ends when they all have or the
//! client leaves.

use super::choice::ChoiceStream;
use super::tools::CallShape;
use super::write::usage_of;
use crate::local::ModelMetrics;
use crate::pipeline::ending::{Ending, Tracked};
use crate::response::Aborted;
use bytes::Bytes;
use http_body::{Body, Frame};
use sluice_local::pool::LocalModel;
use sluice_local::GenerationEvent;
use sluice_providers::chunks::{ChunkChoice, ChunkWriter, Delta};
use sluice_types::Usage;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The events of one generation.
pub(super) type Events = mpsc::UnboundedReceiver<sluice_local::Result<GenerationEvent>>;

/// A local model's answer, streamed as OpenAI chunk events as tokens are generated. Holds
/// the model's lease (so the pool does not evict it) until the stream ends; dropping it (the
/// client left) cancels the generations at their next token.
pub struct LocalStream {
    _lease: sluice_local::pool::Lease<LocalModel>,
    /// Per choice, its events (`None` once it finished) and its writer.
    choices: Vec<(Option<Events>, ChoiceStream)>,
    writer: ChunkWriter,
    include_usage: bool,
    /// The model's measurements: each choice's queue wait is recorded when it ends.
    measured: Option<Arc<ModelMetrics>>,
    started: Instant,
    first: Option<Duration>,
    /// With several choices, the chunk opening each of them in order is still to come.
    opening: bool,
    /// The choices' usage so far: the prompt counted once, completions summed.
    usage: Usage,
    /// How the stream ended, once it has.
    ended: Option<Ending>,
    /// The prompt's length, told (as a prompt-usage comment) with the first frame; `None`
    /// once told.
    prompt_tokens: Option<u64>,
}

/// How one choice's stream is written.
pub(super) struct Shape {
    /// How its answer becomes calls, if it may.
    pub calls: Option<CallShape>,
    /// Whether its tokens' log probabilities are sent.
    pub logprobs: bool,
    pub include_usage: bool,
}

impl LocalStream {
    /// The stream of the choices whose events are `events`, written by `writer`, holding
    /// `lease` until it ends.
    pub(super) fn new(
        lease: sluice_local::pool::Lease<LocalModel>,
        events: Vec<Events>,
        writer: ChunkWriter,
        shape: Shape,
        measured: Option<Arc<ModelMetrics>>,
    ) -> Self {
        let opening = events.len() > 1;
        let choices = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let choice = ChoiceStream::new(i, shape.calls.clone(), shape.logprobs);
                (Some(e), choice)
            })
            .collect();
        Self {
            _lease: lease,
            choices,
            writer,
            include_usage: shape.include_usage,
            measured,
            started: Instant::now(),
            first: None,
            opening,
            usage: Usage::default(),
            ended: None,
            prompt_tokens: None,
        }
    }

    /// Tells the prompt's length with the first frame, for a Messages API stream's
    /// `message_start` (see [`ChunkWriter::prompt_usage`]).
    pub(super) fn prompt_tokens(mut self, tokens: u64) -> Self {
        self.prompt_tokens = Some(tokens);
        self
    }

    /// One chunk naming every choice's role, in order (clients build their choices as they
    /// first appear).
    fn open(&mut self, out: &mut Vec<u8>) {
        let opening: Vec<ChunkChoice<'_>> = (0..self.choices.len())
            .map(|index| ChunkChoice {
                index,
                delta: Delta::role(),
                finish_reason: None,
                logprobs: None,
            })
            .collect();
        self.writer.choices(out, &opening);
        for (_, choice) in &mut self.choices {
            choice.role_sent();
        }
    }

    /// Writes the events of choice `i` that are ready; `Err` when its generation failed or
    /// stopped short (the stream then ends).
    fn drain(
        &mut self,
        i: usize,
        out: &mut Vec<u8>,
        cx: &mut Context<'_>,
    ) -> Result<(), Interrupted<String>> {
        let (events, choice) = &mut self.choices[i];
        let Some(rx) = events else { return Ok(()) };
        loop {
            let event = match rx.poll_recv(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(None) => return Err(Interrupted::Stopped),
                Poll::Ready(Some(Err(e))) => return Err(Interrupted::Failed(e.to_string())),
                Poll::Ready(Some(Ok(event))) => event,
            };
            if self.first.is_none() && !matches!(event, GenerationEvent::Logprobs(_)) {
                self.first = Some(self.started.elapsed());
            }
            if let GenerationEvent::Done(done) = &event {
                if let Some(m) = &self.measured {
                    m.queue_wait.observe(done.queue_wait);
                }
                let one = usage_of(done.usage);
                if i == 0 {
                    self.usage.prompt_tokens = one.prompt_tokens;
                    self.usage.cached_prompt_tokens = one.cached_prompt_tokens;
                }
                self.usage.completion_tokens += one.completion_tokens;
                *events = None;
                choice.event(&self.writer, out, event);
                return Ok(());
            }
            choice.event(&self.writer, out, event);
        }
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
        if let Some(prompt_tokens) = this.prompt_tokens.take() {
            let usage = Usage {
                prompt_tokens,
                ..Usage::default()
            };
            this.writer.prompt_usage(&mut out, &usage);
        }
        if std::mem::take(&mut this.opening) {
            this.open(&mut out);
        }
        for i in 0..this.choices.len() {
            if let Err(why) = this.drain(i, &mut out, cx) {
                let why = match &why {
                    Interrupted::Failed(m) => Interrupted::Failed(m.as_str()),
                    Interrupted::Stopped => Interrupted::Stopped,
                };
                interrupted(&mut out, why);
                this.end(502, Usage::default());
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
        if this.choices.iter().all(|(events, _)| events.is_none()) {
            let usage = this.usage;
            this.writer
                .end(&mut out, this.include_usage.then_some(&usage));
            this.end(200, usage);
        }
        if out.is_empty() {
            return Poll::Pending;
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
    }
}

/// Why a local stream ended before its generation did.
pub(super) enum Interrupted<M> {
    /// The generation failed, saying this.
    Failed(M),
    /// The generation's channel closed without a result.
    Stopped,
}

/// The error event that ends a local stream cut short (`stream_interrupted`).
pub(super) fn interrupted(out: &mut Vec<u8>, why: Interrupted<&str>) {
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
