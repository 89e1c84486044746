//! Relays an upstream SSE stream to the client, event by event, as it arrives.
//!
//! Each read from the upstream is split into whole events (see `sluice_types::sse`); the
//! complete ones go to the client at once, as slices of the upstream's own buffer. On the
//! way, the relay notes usage, `finish_reason` and `[DONE]`, and drops the usage chunk that
//! sluice asked for on the client's behalf. A stream that breaks, stalls past
//! `chunk_timeout_ms`, or ends before finishing is closed with an OpenAI-shaped error
//! event, never truncated silently. Dropping the relay (the client went away) drops the
//! upstream body, which closes the upstream connection and so cancels the upstream request.

use crate::metrics::{Endpoint, UpstreamError};
use crate::state::AppState;
use crate::tab::{End, Tab};
use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use sluice_providers::anthropic::{StreamStep, StreamTranslator};
use sluice_providers::gemini::StreamTranslator as GeminiTranslator;
use sluice_providers::ollama::{LineStep, LineTranslator};

/// Turns a non-OpenAI stream into OpenAI chunk events.
pub enum Translator {
    /// Anthropic's SSE events.
    Anthropic(StreamTranslator),
    /// Ollama's NDJSON lines.
    Ollama(LineTranslator),
    /// Gemini's SSE events, which have no end marker.
    Gemini(GeminiTranslator),
}

impl Translator {
    /// Feeds one event (or line); appends what it yields. `Err` carries an upstream error.
    fn feed(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<bool, String> {
        match self {
            Self::Anthropic(t) => match event_data(raw) {
                None => Ok(false),
                Some(data) => match t.on_event(&data, out) {
                    StreamStep::Continue => Ok(false),
                    StreamStep::Done => Ok(true),
                    StreamStep::Error(m) => Err(m),
                },
            },
            Self::Ollama(t) => match t.on_line(raw, out) {
                LineStep::Continue => Ok(false),
                LineStep::Done => Ok(true),
                LineStep::Error(m) => Err(m),
            },
            Self::Gemini(t) => match event_data(raw) {
                None => Ok(false),
                Some(data) => t.on_event(&data, out).map(|()| false),
            },
        }
    }

    /// The upstream ended: whether that finishes the stream (appending what closes it).
    fn end(&mut self, out: &mut Vec<u8>) -> bool {
        match self {
            Self::Gemini(t) => t.end(out),
            Self::Anthropic(_) | Self::Ollama(_) => false,
        }
    }

    fn usage(&self) -> Usage {
        match self {
            Self::Anthropic(t) => t.usage(),
            Self::Ollama(t) => t.usage(),
            Self::Gemini(t) => t.usage(),
        }
    }
}
use sluice_types::sse::{after_key, event_data, Keep, SseScanner};
use sluice_types::Usage;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// What the relay has seen of the stream so far.
#[derive(Debug, Default)]
struct Seen {
    done: bool,
    finish: bool,
    usage: Option<Usage>,
    /// Events carrying content: the basis of an estimate when the upstream sends no usage
    /// (OpenAI-compatible servers stream about one token per event).
    content_events: u64,
}

impl Seen {
    fn observe(&mut self, event: &[u8], strip_usage: bool) -> Keep {
        let Some(data) = event_data(event) else {
            return Keep::Yes;
        };
        if data.as_ref() == b"[DONE]" {
            self.done = true;
            return Keep::Yes;
        }
        if after_key(&data, b"\"usage\"").is_some_and(|v| !v.starts_with(b"null")) {
            if let Some(u) = Usage::from_response(&data) {
                self.usage = Some(u);
                let usage_only =
                    after_key(&data, b"\"choices\"").is_some_and(|v| v.starts_with(b"[]"));
                if strip_usage && usage_only {
                    return Keep::Drop;
                }
            }
        }
        if after_key(&data, b"\"content\"")
            .is_some_and(|v| v.starts_with(b"\"") && !v.starts_with(b"\"\""))
        {
            self.content_events += 1;
        }
        if !self.finish
            && after_key(&data, b"\"finish_reason\"").is_some_and(|v| v.starts_with(b"\""))
        {
            self.finish = true;
        }
        Keep::Yes
    }
}

/// The streaming response body.
pub struct Relay {
    upstream: Incoming,
    scanner: SseScanner,
    seen: Seen,
    strip_usage: bool,
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
    started: std::time::Instant,
    recorded: bool,
    translator: Option<Translator>,
    estimated_prompt_tokens: u64,
    ttft: Duration,
    /// The request's tab, closed when the stream ends, with how it was served.
    tab: Option<(Tab, u32, &'static str)>,
    /// Send the cost as a last SSE comment (`: x-sluice-cost-usd 0.00225`) once the tab
    /// closes: this relay's client is the one who paid.
    cost_comment: bool,
}

/// How to relay one stream.
pub struct RelayParams {
    /// Drop the usage chunk (sluice asked for it, the client did not).
    pub strip_usage: bool,
    /// Provider name, for error messages.
    pub provider: Box<str>,
    /// Longest silence between two upstream reads.
    pub chunk_timeout: Duration,
    /// End of the request's total time.
    pub deadline: Instant,
    /// Metrics series.
    pub series: usize,
    /// When the request arrived.
    pub started: std::time::Instant,
    /// Translate the upstream's events (Anthropic's, Ollama's) into OpenAI chunks.
    pub translator: Option<Translator>,
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
    pub fn new(upstream: Incoming, first: Bytes, state: Arc<AppState>, p: RelayParams) -> Self {
        let idle_until = p.deadline.min(Instant::now() + p.chunk_timeout);
        Self {
            upstream,
            scanner: match p.translator {
                Some(Translator::Ollama(_)) => {
                    SseScanner::lines(state.server.max_event_bytes as usize)
                }
                _ => SseScanner::new(state.server.max_event_bytes as usize),
            },
            seen: Seen::default(),
            strip_usage: p.strip_usage,
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
            started: p.started,
            recorded: false,
            translator: p.translator,
            estimated_prompt_tokens: p.estimated_prompt_tokens,
            ttft: p.ttft,
            tab: None,
            cost_comment: false,
        }
    }

    /// Gives the stream the request's tab, to close when it ends: `attempts` upstream
    /// tries, `cache` what the cache did.
    pub fn attach(&mut self, tab: Tab, attempts: u32, cache: &'static str) {
        self.tab = Some((tab, attempts, cache));
    }

    /// Ends a clean stream with an SSE comment that carries its cost, after `[DONE]`
    /// (SSE readers skip comments, so no client is disturbed by it).
    pub fn send_cost_comment(&mut self) {
        self.cost_comment = true;
    }

    fn metrics(&self) -> &crate::metrics::EndpointMetrics {
        self.state
            .metrics
            .series(self.series)
            .endpoint(Endpoint::Chat)
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

    /// Whether the stream is over and finished as it should (not cut, not failed).
    pub fn ended_cleanly(&self) -> bool {
        self.ended && !self.failed && self.pending.is_none()
    }

    /// The stream's usage: the upstream's, else the estimate the metrics count.
    pub fn usage(&self) -> Usage {
        self.seen.usage.unwrap_or(Usage {
            prompt_tokens: self.estimated_prompt_tokens,
            completion_tokens: self.seen.content_events,
            ..Usage::default()
        })
    }

    fn upstream_ended(&mut self) {
        let tail = self.scanner.finish();
        self.ended = true;
        if let (Some(t), false) = (self.translator.as_mut(), tail.is_empty()) {
            // An unterminated last record (NDJSON without a final newline) still counts.
            let mut out = Vec::new();
            if let Ok(done) = t.feed(&tail, &mut out) {
                self.seen.done |= done;
                self.seen.usage = Some(t.usage());
            }
            if self.seen.done {
                self.pending = (!out.is_empty()).then(|| Bytes::from(out));
                return;
            }
        }
        if let (Some(t), false) = (self.translator.as_mut(), self.seen.done) {
            // Streams without an end marker (Gemini's) finish when the upstream closes.
            let mut out = Vec::new();
            if t.end(&mut out) {
                self.seen.done = true;
                self.seen.usage = Some(t.usage());
                self.pending = Some(Bytes::from(out));
                return;
            }
        }
        if self.seen.done {
            // A translated stream forwards only what the translator made of it.
            self.pending = (!tail.is_empty() && self.translator.is_none()).then_some(tail);
        } else if self.seen.finish {
            // Finished but without the `[DONE]` marker some servers omit: complete it.
            let mut out = tail.to_vec();
            out.extend_from_slice(b"data: [DONE]\n\n");
            self.pending = Some(Bytes::from(out));
        } else {
            let message = format!(
                "upstream `{}` closed the stream before it finished",
                self.provider
            );
            self.fail(UpstreamError::StreamCut, message, "stream_interrupted");
        }
    }

    /// Scans one read; returns what to forward now.
    fn on_data(&mut self, data: Bytes) -> Option<Bytes> {
        if self.translator.is_some() {
            return self.translate(data);
        }
        let Relay {
            scanner,
            seen,
            strip_usage,
            ..
        } = self;
        let strip = *strip_usage;
        match scanner.push(data, |ev| seen.observe(ev, strip)) {
            Ok(out) if out.is_empty() => None,
            Ok(out) => Some(out),
            Err(too_large) => {
                let message = format!(
                    "upstream `{}` sent an event larger than {} bytes (`server.max_event_bytes`)",
                    self.provider, too_large.0
                );
                self.fail(UpstreamError::Protocol, message, "upstream_bad_response");
                None
            }
        }
    }

    /// Translates the complete events of one read into OpenAI chunks.
    fn translate(&mut self, data: Bytes) -> Option<Bytes> {
        let Relay {
            scanner,
            seen,
            translator,
            ..
        } = self;
        let translator = translator.as_mut()?;
        let mut out = Vec::new();
        let mut upstream_error = None;
        let pushed = scanner.push(data, |ev| {
            match translator.feed(ev, &mut out) {
                Ok(done) => seen.done |= done,
                Err(m) => upstream_error = Some(m),
            }
            Keep::Drop
        });
        seen.usage = Some(translator.usage());
        if let Err(too_large) = pushed {
            let message = format!(
                "upstream `{}` sent an event larger than {} bytes (`server.max_event_bytes`)",
                self.provider, too_large.0
            );
            self.fail(UpstreamError::Protocol, message, "upstream_bad_response");
        } else if let Some(m) = upstream_error {
            let message = format!("upstream `{}` failed mid-stream: {m}", self.provider);
            self.fail(UpstreamError::StreamCut, message, "stream_interrupted");
        }
        match (out.is_empty(), self.pending.take()) {
            (true, None) => None,
            (true, Some(p)) => Some(p),
            (false, None) => Some(Bytes::from(out)),
            (false, Some(p)) => {
                out.extend_from_slice(&p);
                Some(Bytes::from(out))
            }
        }
    }

    /// Records the stream's end; returns its cost when a tab was closed.
    fn record(&mut self, completed: bool) -> Option<u64> {
        if self.recorded {
            return None;
        }
        self.recorded = true;
        let elapsed = self.started.elapsed();
        let m = self.metrics();
        m.latency.observe(elapsed);
        if let Some(dep) = self.state.deployments.get(self.series) {
            dep.total.observe(elapsed);
        }
        match &self.seen.usage {
            Some(u) => m.add_usage(u),
            None => {
                // The upstream sent no usage: count honestly, and say it is an estimate.
                let estimate = Usage {
                    prompt_tokens: self.estimated_prompt_tokens,
                    completion_tokens: self.seen.content_events,
                    ..Usage::default()
                };
                m.add_usage(&estimate);
                m.add_estimated(&estimate);
            }
        }
        if !completed {
            self.state.metrics.client_disconnects.fetch_add(1, Relaxed);
        }
        let mut cost = None;
        if let Some((tab, attempts, cache)) = self.tab.take() {
            let status = match (self.failed, completed) {
                (true, _) => 502,
                (false, false) => 499,
                (false, true) => 200,
            };
            cost = Some(tab.close(End {
                deployment: Some(self.series),
                status,
                usage: self.usage(),
                usage_estimated: self.seen.usage.is_none(),
                ttft: Some(self.ttft),
                cache,
                attempts,
            }));
        }
        self.state.metrics.in_flight.fetch_sub(1, Relaxed);
        cost
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = this.pending.take() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.ended {
                if let (Some(nano), true, false) =
                    (this.record(true), this.cost_comment, this.failed)
                {
                    let comment = format!(": x-sluice-cost-usd {}\n\n", crate::tab::usd(nano));
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(comment)))));
                }
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

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.record(false);
    }
}
