//! Relays an upstream SSE stream to the client, event by event, as it arrives.
//!
//! Each read from the upstream is split into whole events (see `sluice_types::sse`); the
//! complete ones go to the client at once, as slices of the upstream's own buffer. On the
//! way, the relay notes usage, `finish_reason` and `[DONE]`, and drops the usage chunk that
//! sluice asked for on the client's behalf. A stream that breaks, stalls past
//! `chunk_timeout_ms`, or ends before finishing is closed with an OpenAI-shaped error
//! event, never truncated silently. Dropping the relay (the client went away) drops the
//! upstream body, which closes the upstream connection and so cancels the upstream request.

use super::ending::{Ending, Tracked};
use crate::metrics::UpstreamError;
use crate::response::Aborted;
use crate::state::AppState;
use bytes::Bytes;
use http_body::{Body, Frame};
use sluice_providers::ResponseBody;
use sluice_providers::{StreamFault, StreamReader};
use sluice_types::Usage;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The streaming response body.
pub struct Relay {
    upstream: ResponseBody,
    reader: StreamReader,
    provider: Box<str>,
    chunk_timeout: Duration,
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
    pending: Option<Bytes>,
    first: Option<Bytes>,
    ended: bool,
    /// Ended with an error event.
    failed: bool,
    state: Arc<AppState>,
    series: usize,
    op: sluice_core::Operation,
    started: std::time::Instant,
    recorded: bool,
    estimated_prompt_tokens: u64,
    ttft: Duration,
}

/// How to relay one stream.
pub struct RelayParams {
    /// Reads the upstream's events (translating them where the upstream is not OpenAI's).
    pub reader: StreamReader,
    /// Provider name, for error messages.
    pub provider: Box<str>,
    /// Longest silence between two upstream reads.
    pub chunk_timeout: Duration,
    /// End of the request's total time.
    pub deadline: Instant,
    /// Metrics series.
    pub series: usize,
    /// The operation, for the series' endpoint.
    pub op: sluice_core::Operation,
    /// When the request arrived.
    pub started: std::time::Instant,
    /// Prompt tokens estimated from the request, used if the upstream reports no usage.
    pub estimated_prompt_tokens: u64,
    /// Arrival of the request to the stream's first byte.
    pub ttft: Duration,
}

fn error_event(message: &str, kind: &str, code: &str) -> Bytes {
    let body = sluice_types::ErrorBody {
        message,
        kind,
        param: None,
        code: Some(code),
    }
    .to_json();
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

impl Relay {
    /// Starts relaying `upstream`, whose first bytes `first` were already read.
    pub fn new(upstream: ResponseBody, first: Bytes, state: Arc<AppState>, p: RelayParams) -> Self {
        let idle_until = p.deadline.min(Instant::now() + p.chunk_timeout);
        Self {
            upstream,
            reader: p.reader,
            provider: p.provider,
            chunk_timeout: p.chunk_timeout,
            deadline: p.deadline,
            timer: Box::pin(tokio::time::sleep_until(idle_until)),
            pending: None,
            first: Some(first),
            ended: false,
            failed: false,
            state,
            series: p.series,
            op: p.op,
            started: p.started,
            recorded: false,
            estimated_prompt_tokens: p.estimated_prompt_tokens,
            ttft: p.ttft,
        }
    }

    fn metrics(&self) -> &crate::metrics::EndpointMetrics {
        self.state.metrics.series(self.series).endpoint(self.op)
    }

    /// Ends the stream with an error event.
    fn fail(&mut self, kind: UpstreamError, message: String, code: &str) {
        self.metrics().upstream_error(kind);
        let kind_str = if kind == UpstreamError::Timeout {
            "timeout_error"
        } else {
            "upstream_error"
        };
        self.pending = Some(error_event(&message, kind_str, code));
        self.ended = true;
        self.failed = true;
    }

    /// The stream's usage: the upstream's, else the estimate the metrics count.
    pub fn usage(&self) -> Usage {
        self.reader.usage_or_estimate(self.estimated_prompt_tokens)
    }

    fn upstream_ended(&mut self) {
        self.ended = true;
        match self.reader.end() {
            Ok(tail) => self.pending = tail,
            Err(fault) => self.fault(fault),
        }
    }

    /// Ends the stream for `fault`.
    fn fault(&mut self, fault: StreamFault) {
        let p = &self.provider;
        let (kind, message, code) = match fault {
            // The client has the upstream's own failure event: counted, nothing added.
            StreamFault::Reported(_) => {
                self.metrics().upstream_error(UpstreamError::StreamCut);
                self.ended = true;
                self.failed = true;
                return;
            }
            StreamFault::TooLarge(limit) => (
                UpstreamError::Protocol,
                format!("upstream `{p}` sent an event larger than {limit} bytes (`server.max_event_bytes`)"),
                "upstream_bad_response",
            ),
            StreamFault::Upstream(m) => (
                UpstreamError::StreamCut,
                format!("upstream `{p}` failed mid-stream: {m}"),
                "stream_interrupted",
            ),
            StreamFault::Cut => (
                UpstreamError::StreamCut,
                format!("upstream `{p}` closed the stream before it finished"),
                "stream_interrupted",
            ),
        };
        self.fail(kind, message, code);
    }

    /// Scans one read; returns what to forward now (with the error event that ends the
    /// stream, if the read ended it).
    fn on_data(&mut self, data: Bytes) -> Option<Bytes> {
        let (out, fault) = self.reader.push(data);
        let Some(fault) = fault else {
            return out;
        };
        self.fault(fault);
        match (out, self.pending.take()) {
            (Some(out), Some(error)) => {
                let mut joined = out.to_vec();
                joined.extend_from_slice(&error);
                Some(Bytes::from(joined))
            }
            (out, error) => out.or(error),
        }
    }

    /// Notes the stream's end in the deployment's latency average (once).
    fn record(&mut self) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        if let Some(dep) = self.state.deployments.get(self.series) {
            dep.total.observe(self.started.elapsed());
        }
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = this.pending.take() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.ended {
                this.record();
                return Poll::Ready(None);
            }
            if let Some(data) = this.first.take() {
                match this.on_data(data) {
                    Some(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                    None => continue,
                }
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let next = this.deadline.min(Instant::now() + this.chunk_timeout);
                    this.timer.as_mut().reset(next);
                    if let Some(out) = this.on_data(data) {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    let message = format!("upstream `{}` stream broke: {e}", this.provider);
                    this.fail(UpstreamError::StreamCut, message, "stream_interrupted");
                }
                Poll::Ready(None) => this.upstream_ended(),
                Poll::Pending => {
                    if this.timer.as_mut().poll(cx).is_ready() {
                        let message = if Instant::now() >= this.deadline {
                            format!("upstream `{}` did not finish the stream within the request timeout", this.provider)
                        } else {
                            format!(
                                "upstream `{}` sent nothing for {} ms (`chunk_timeout_ms`)",
                                this.provider,
                                this.chunk_timeout.as_millis()
                            )
                        };
                        this.fail(UpstreamError::Timeout, message, "upstream_timeout");
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Tracked for Relay {
    fn ending(&mut self, completed: bool) -> Ending {
        self.record();
        let status = match (self.failed, completed) {
            (true, _) => 502,
            (false, false) => 499,
            (false, true) => 200,
        };
        Ending {
            status,
            usage: self.usage(),
            estimated: self.reader.reported_usage().is_none(),
            ttft: Some(self.ttft),
        }
    }
}
