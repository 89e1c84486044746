//! The one place a request ends. A [`Finish`] is opened when a proxied request arrives and
//! owns everything its end settles: the in-flight count, the metrics (status, latency or
//! cache-hit latency, tokens, client disconnects) and the tab (limits settled, the spend
//! record queued, the cost). Whichever body ends the response completes it, exactly once:
//! a whole answer when its head is built, a stream ([`Guarded`]) when it ends, aborts or is
//! dropped, and a request dropped before any answer (the client left) when the guard is.

use super::ending::{Ending, Tracked};
use super::tab::{End, Tab};
use super::traced::{Ended, Recording};
use crate::cache::CacheStatus;
use crate::response::Aborted;
use crate::samples::{Draft, Ended as SampleEnd};
use crate::state::AppState;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sluice_core::Operation;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// What the request came to, for headers, metrics and the spend record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// Deployment that answered (or was tried last).
    pub deployment: Option<usize>,
    /// Upstream tries.
    pub attempts: u32,
    /// The route the client named, if it named one.
    pub route: Option<usize>,
    /// Answered with the route's static fallback.
    pub degraded: bool,
    /// What the cache did.
    pub cache: CacheStatus,
    /// Seconds since the cached answer was stored.
    pub cache_age: Option<u64>,
    /// A semantic hit's similarity to the cached question.
    pub cache_similarity: Option<f32>,
    /// Prompt tokens estimated from the request.
    pub estimated_prompt_tokens: u64,
    /// What the upstream used for an answer that ended in an error anyway (a guardrail
    /// refused it): the tab charges it.
    pub spent: Option<sluice_types::Usage>,
    /// The answer came from a native Responses upstream, in the Responses API's format.
    pub native: bool,
    /// The deployment that answered is its route's canary candidate.
    pub canary: bool,
    /// The answer's usage is sluice's reading, not the upstream's (a transcription's
    /// seconds read from its audio file or its cues, see `audio_length`).
    pub usage_estimated: bool,
}

/// The guard of one request. See the module docs.
#[derive(Debug)]
pub struct Finish {
    state: Arc<AppState>,
    op: Operation,
    started: Instant,
    /// What happened so far.
    pub outcome: Outcome,
    tab: Option<Tab>,
    /// The status of the response head (what the status metrics count).
    head_status: u16,
    done: bool,
    /// The request's trace, when the gateway sends traces.
    trace: Option<Arc<Recording>>,
    /// What is kept of a sampled request.
    sample: Option<Box<(Draft, String)>>,
}

impl Finish {
    /// Opens the guard of a request of `op` that arrived at `started` with `headers`.
    pub fn start(
        state: &Arc<AppState>,
        op: Operation,
        started: Instant,
        headers: &http::HeaderMap,
    ) -> Self {
        state.metrics.in_flight.fetch_add(1, Relaxed);
        Self {
            state: Arc::clone(state),
            op,
            started,
            outcome: Outcome::default(),
            tab: None,
            head_status: 499,
            done: false,
            trace: state
                .tracer
                .as_ref()
                .map(|_| Recording::begin(headers, started)),
            sample: None,
        }
    }

    /// Samples this request (its body as sent upstream, its request id), when the
    /// gateway samples and picks it; `draft` is not called otherwise.
    pub fn sample(&mut self, draft: impl FnOnce() -> Draft, request_id: &str) {
        let Some(sampler) = self.state.samples.as_ref().filter(|s| s.picks()) else {
            return;
        };
        let mut d = draft();
        d.request = sampler.bound(d.request);
        self.sample = Some(Box::new((d, request_id.to_string())));
    }

    /// The whole answer the client gets, when the request is sampled.
    pub fn sample_answer(&mut self, body: &Bytes) {
        if let (Some(s), Some(sampler)) = (self.sample.as_mut(), &self.state.samples) {
            s.0.response = Some(sampler.bound(body.clone()));
        }
    }

    /// The request's trace, when the gateway sends traces.
    pub fn trace(&self) -> Option<&Arc<Recording>> {
        self.trace.as_ref()
    }

    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// What guardrails found, for the spend record (the latest summary wins).
    pub fn note_guardrails(&mut self, summary: Option<String>) {
        if let (Some(tab), Some(s)) = (self.tab.as_mut(), summary) {
            tab.set_guardrails(s);
        }
    }

    /// The spend record waits for `verdict` (a streamed answer's webhooks, see
    /// `guard_late`) before it is written, and adds what it says.
    pub fn defer_guardrails(&mut self, verdict: Option<super::guard_late::LateVerdict>) {
        if let (Some(tab), Some(v)) = (self.tab.as_mut(), verdict) {
            tab.defer_guardrails(v);
        }
    }

    /// No verdict will come for the spend record (the stream did not end cleanly, so no
    /// webhook is asked): it is written at once, not by a task that a runtime shutting down
    /// would never run.
    pub fn no_verdict(&mut self) {
        if let Some(tab) = self.tab.as_mut() {
            tab.no_verdict();
        }
    }

    /// The request's tab, opened past its limits.
    pub fn set_tab(&mut self, tab: Tab) {
        self.tab = Some(tab);
    }

    /// The status of the head sent (or about to be).
    pub fn set_head_status(&mut self, status: u16) {
        self.head_status = status;
    }

    /// Whether the answer came from an upstream (not the cache, not a degraded answer).
    pub fn answered_upstream(&self, status: u16) -> bool {
        (200..300).contains(&status) && !self.outcome.degraded && !self.outcome.cache.served()
    }

    /// Moves the request's end to another guard (a stream driven for a flight of
    /// coalesced requests ends it, not this response); this one then ends nothing.
    pub fn hand_over(&mut self) -> Self {
        let handed = Self {
            state: Arc::clone(&self.state),
            op: self.op,
            started: self.started,
            outcome: self.outcome,
            tab: self.tab.take(),
            head_status: self.head_status,
            done: self.done,
            trace: self.trace.take(),
            sample: self.sample.take(),
        };
        self.done = true;
        handed
    }

    /// Ends the request (once; later calls do nothing). Returns its cost in nano-USD when a
    /// tab was closed.
    pub fn complete(&mut self, end: Ending) -> Option<u64> {
        if std::mem::replace(&mut self.done, true) {
            return None;
        }
        let state = &self.state;
        let o = &self.outcome;
        let metrics = match o.deployment {
            Some(d) => state.metrics.series(d),
            None => state.metrics.unresolved(),
        }
        .endpoint(self.op);
        metrics.count_status(self.head_status);
        let elapsed = self.started.elapsed();
        match (&state.cache, o.cache.served()) {
            (Some(c), true) => c.metrics.hit_latency.observe(elapsed),
            _ => metrics.latency.observe(elapsed),
        }
        if !o.degraded && !o.cache.served() {
            metrics.add_usage(&end.usage);
            if end.estimated {
                metrics.add_estimated(&end.usage);
            }
        }
        if end.status == 499 {
            state.metrics.client_disconnects.fetch_add(1, Relaxed);
        }
        state.metrics.in_flight.fetch_sub(1, Relaxed);
        tracing::debug!(
            status = end.status,
            model = o.deployment.map(|d| &*state.deployments[d].name),
            elapsed_ms = elapsed.as_millis() as u64,
            "request finished"
        );
        let cost = self.tab.take().map(|tab| {
            tab.close(End {
                deployment: o.deployment,
                status: end.status,
                usage: end.usage,
                usage_estimated: end.estimated,
                ttft: end.ttft,
                cache: o.cache,
                attempts: o.attempts,
            })
        });
        if let (Some(recording), Some(tracer)) = (self.trace.take(), &state.tracer) {
            let ended = Ended {
                op: self.op,
                status: end.status,
                head_status: self.head_status,
                usage: end.usage,
                cost,
                deployment: o.deployment,
                route: o.route,
                degraded: o.degraded,
                cache: o.cache,
                attempts: o.attempts,
            };
            tracer.submit(recording.spans(state, &ended));
        }
        if let Some(sample) = self.sample.take() {
            keep_sample(state, *sample, self.op, o, end.status);
        }
        cost
    }
}

/// Hands a sampled request to the sampler, with how it ended.
fn keep_sample(
    state: &AppState,
    (draft, request_id): (Draft, String),
    op: Operation,
    o: &Outcome,
    status: u16,
) {
    let Some(sampler) = &state.samples else {
        return;
    };
    let ended = SampleEnd {
        request_id,
        endpoint: op.as_str(),
        route: o.route.map(|r| state.routes[r].config.name.clone()),
        deployment: o.deployment.map(|d| state.deployments[d].name.to_string()),
        canary: o.canary,
        status,
    };
    sampler.keep(draft, ended);
}

impl Drop for Finish {
    fn drop(&mut self) {
        // Nothing ended the request: its client left before any answer.
        let _ = self.complete(Ending::bare(499));
    }
}

/// A streamed body that ends its request when it ends (see the module docs). For the
/// client who paid, a clean end is followed by an SSE comment with the cost
/// (`: x-sluice-cost-usd 0.00225`), which SSE readers skip. A pipe that breaks off
/// ([`Aborted`]) ends the request as the pipe tells it (a 502), then passes the abort on.
pub struct Guarded {
    inner: Box<dyn Tracked>,
    finish: Option<Finish>,
    pays: bool,
    /// How the stream ended, once it has.
    ended: Option<Ending>,
}

impl Guarded {
    /// `inner`, ending `finish` when it ends; `pays`: send the cost comment.
    pub fn new(inner: Box<dyn Tracked>, finish: Finish, pays: bool) -> Self {
        Self {
            inner,
            finish: Some(finish),
            pays,
            ended: None,
        }
    }

    /// How the stream ended, once it has.
    pub fn ended(&self) -> Option<Ending> {
        self.ended
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                let Some(mut finish) = this.finish.take() else {
                    return Poll::Ready(None);
                };
                let end = this.inner.ending(true);
                this.ended = Some(end);
                finish.note_guardrails(this.inner.guardrails());
                let cost = finish.complete(end);
                match cost {
                    Some(nano) if this.pays && end.status == 200 => {
                        let comment = format!(": x-sluice-cost-usd {}\n\n", super::tab::usd(nano));
                        Poll::Ready(Some(Ok(Frame::data(Bytes::from(comment)))))
                    }
                    _ => Poll::Ready(None),
                }
            }
            Poll::Ready(Some(Err(aborted))) => {
                // The stream says how it failed (a 502); the response is aborted.
                if let Some(mut finish) = this.finish.take() {
                    let end = this.inner.ending(true);
                    this.ended = Some(end);
                    finish.note_guardrails(this.inner.guardrails());
                    finish.no_verdict();
                    finish.complete(end);
                }
                Poll::Ready(Some(Err(aborted)))
            }
            other => other,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(mut finish) = self.finish.take() {
            let end = self.inner.ending(false);
            finish.note_guardrails(self.inner.guardrails());
            finish.no_verdict();
            finish.complete(end);
        }
    }
}
