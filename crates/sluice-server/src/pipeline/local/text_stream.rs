//! A local model's streamed text completion: generation events written as
//! `text_completion` events (the prompt first when `echo` asked for it), ending the request
//! (the guard's [`Tracked`]) when the generation ends or the client leaves.

use super::stream::{interrupted, Interrupted};
use super::write::usage_of;
use crate::local::ModelMetrics;
use crate::pipeline::ending::{Ending, Tracked};
use crate::response::Aborted;
use bytes::Bytes;
use http_body::{Body, Frame};
use sluice_local::pool::LocalModel;
use sluice_local::GenerationEvent;
use sluice_providers::text_completion::TextWriter;
use sluice_types::Usage;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A local model's text completion, streamed as tokens are generated. Holds the model's
/// lease until the stream ends; dropping it (the client left) cancels the generation at its
/// next token.
pub struct LocalTextStream {
    _lease: sluice_local::pool::Lease<LocalModel>,
    events: mpsc::UnboundedReceiver<sluice_local::Result<GenerationEvent>>,
    writer: TextWriter,
    include_usage: bool,
    /// The prompt, still to be sent first (`echo`).
    echo: Option<String>,
    measured: Option<Arc<ModelMetrics>>,
    started: Instant,
    first: Option<Duration>,
    ended: Option<Ending>,
}

impl LocalTextStream {
    /// The stream of `events`, written by `writer`, holding `lease` until it ends.
    pub(super) fn new(
        lease: sluice_local::pool::Lease<LocalModel>,
        events: mpsc::UnboundedReceiver<sluice_local::Result<GenerationEvent>>,
        writer: TextWriter,
        include_usage: bool,
        echo: Option<String>,
        measured: Option<Arc<ModelMetrics>>,
    ) -> Self {
        Self {
            _lease: lease,
            events,
            writer,
            include_usage,
            echo,
            measured,
            started: Instant::now(),
            first: None,
            ended: None,
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

impl Body for LocalTextStream {
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
        if let Some(prompt) = this.echo.take() {
            this.writer.text(&mut out, &prompt);
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
        }
        match this.events.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(GenerationEvent::Delta(text)))) => {
                this.first.get_or_insert_with(|| this.started.elapsed());
                this.writer.text(&mut out, &text);
            }
            // A text completion offers no tools and asks no log probabilities: neither comes.
            Poll::Ready(Some(Ok(GenerationEvent::Call { .. } | GenerationEvent::Logprobs(_)))) => {}
            Poll::Ready(Some(Ok(GenerationEvent::Done(done)))) => {
                if let Some(m) = &this.measured {
                    m.queue_wait.observe(done.queue_wait);
                }
                let usage = usage_of(done.usage);
                let with_usage = this.include_usage.then_some(&usage);
                this.writer
                    .finish(&mut out, done.finish_reason.as_str(), with_usage);
                this.end(200, usage);
            }
            Poll::Ready(Some(Err(e))) => {
                interrupted(&mut out, Interrupted::Failed(e.to_string().as_str()));
                this.end(502, Usage::default());
            }
            Poll::Ready(None) => {
                interrupted(&mut out, Interrupted::Stopped);
                this.end(502, Usage::default());
            }
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
    }
}

impl Tracked for LocalTextStream {
    fn ending(&mut self, _completed: bool) -> Ending {
        match self.ended {
            Some(end) => end,
            // The client left before the end: what is known.
            None => Ending {
                ttft: self.first,
                ..Ending::bare(499)
            },
        }
    }
}
