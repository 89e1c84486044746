//! The route walk: the plan's deployments in order, each behind its circuit breaker, tried
//! (see `attempt`), retried with backoff on retryable failures, then the next deployment;
//! when everything failed, the route's degraded answer or the last error.
//!
//! A streamed request is committed only when its first byte has arrived from the upstream;
//! until then a failure (or a first byte slower than `first_token_timeout_ms`) falls back
//! like any other. After that, the stream owns the request and a failure ends it with an
//! error event.

use super::answer::Answer;
use super::attempt::Attempt;
use super::degraded;
use super::finish::Outcome;
use super::traced::Recording;
use crate::metrics::{EndpointMetrics, RouteMetrics, Series, UpstreamError};
use crate::shared_routing::{FleetProbe, ProbeVerdict};
use crate::state::{AppState, Deployment, Plan, Step};
use crate::trace::context::SpanId;
use crate::trace::span::{Attribute, Value};
use bytes::Bytes;
use http::header::HeaderValue;
use sluice_core::breaker::{Permit, Refusal};
use sluice_core::canary::Canary;
use sluice_core::retry::Next;
use sluice_core::{rng, Error, ErrorKind};
use sluice_providers::responses::inbound::BadRequest;
use sluice_providers::{Prepared, View};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cooldown after a 429 without `Retry-After`.
const DEFAULT_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(1);

/// W3C Trace Context's headers, sent upstream when the gateway traces.
const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// One request on its way upstream: everything the walk along its plan needs.
pub struct Call<'a> {
    /// The gateway.
    pub state: &'a Arc<AppState>,
    /// The request body's view.
    pub view: &'a View<'a>,
    /// The request body, in OpenAI's format.
    pub body: &'a Bytes,
    /// `x-request-id`.
    pub request_id: &'a HeaderValue,
    /// When the request arrived.
    pub started: Instant,
    /// The deployments to try.
    pub plan: &'a Plan<'a>,
    /// The route's deadline, if it has a `timeout_ms`.
    pub route_deadline: Option<Instant>,
    /// A Responses API request as native upstreams are sent it (`responses = "native"`);
    /// `None` for every other request, and for one that must go through chat.
    pub native: Option<&'a Bytes>,
    /// What of it only a native upstream can honour: a translated try's 400.
    pub native_only: Option<&'a BadRequest>,
    /// The request's trace, when the gateway sends traces.
    pub trace: Option<&'a Recording>,
}

impl Call<'_> {
    /// The native Responses body, when `provider` takes it.
    fn native_for(&self, provider: &sluice_providers::Provider) -> Option<&Bytes> {
        self.native.filter(|_| provider.responses_native())
    }
}

impl Call<'_> {
    /// Walks the plan until a deployment answers.
    pub async fn walk(&self, outcome: &mut Outcome) -> Result<Answer, Error> {
        walk(self, outcome).await
    }
}

/// What the walk has seen so far.
struct Walked<'a> {
    route_metrics: Option<&'a RouteMetrics>,
    /// Time spent in retry backoff.
    waited: Duration,
    last_error: Option<Error>,
    /// Every deployment was skipped (breaker open or cooling down).
    all_skipped: bool,
    /// The soonest end of a rate-limit cooldown among skipped deployments.
    cooldown_ends: Option<Instant>,
}

/// How one deployment's tries ended.
enum Tried {
    Answered(Answer),
    /// An error no other deployment could help with.
    Failed(Error),
    /// On to the next deployment.
    Next,
    /// The route's deadline passed.
    OutOfTime,
}

async fn walk(call: &Call<'_>, outcome: &mut Outcome) -> Result<Answer, Error> {
    let plan = call.plan;
    let mut w = Walked {
        route_metrics: plan.route.and_then(|r| call.state.metrics.route(r)),
        waited: Duration::ZERO,
        last_error: None,
        all_skipped: true,
        cooldown_ends: None,
    };
    for (position, step) in plan.steps.iter().enumerate() {
        match call.deployment(step, &mut w, outcome).await {
            Tried::Answered(answer) => {
                if let (true, Some(rm)) = (position > 0, w.route_metrics) {
                    rm.fallbacks.fetch_add(1, Relaxed);
                }
                return Ok(answer);
            }
            Tried::Failed(e) => return Err(e),
            Tried::Next => {}
            Tried::OutOfTime => {
                w.last_error = Some(route_timeout(plan, call.state));
                break;
            }
        }
    }
    call.exhausted(w, outcome)
}

impl Call<'_> {
    /// One deployment of the plan: behind its breaker, tried, retried with backoff while
    /// its failures are retryable.
    async fn deployment(
        &self,
        step: &Step<'_>,
        w: &mut Walked<'_>,
        outcome: &mut Outcome,
    ) -> Tried {
        let Call {
            state, view, plan, ..
        } = *self;
        let dep = &state.deployments[step.deployment];
        let provider = &state.providers[dep.provider];
        let series = state.metrics.series(step.deployment);
        let endpoint = view.operation();
        if !provider.serves(endpoint) {
            w.last_error = Some(provider.unsupported(endpoint));
            outcome.deployment = Some(step.deployment);
            return Tried::Next;
        }
        let canary = match (step.canary, plan.route) {
            (true, Some(r)) => state.routes[r].canary.as_deref(),
            _ => None,
        };
        let mut tried = 0u32;
        loop {
            let now = Instant::now();
            if self.route_deadline.is_some_and(|d| now >= d) {
                return Tried::OutOfTime;
            }
            let (permit, fleet_probe) = match self.acquire(dep, now).await {
                Ok(p) => p,
                Err(refusal) => {
                    skipped(refusal, dep, series, now, w);
                    if let Some(t) = self.trace {
                        t.event("sluice.deployment_skipped", skip_event(refusal, dep));
                    }
                    return Tried::Next;
                }
            };
            w.all_skipped = false;
            if tried > 0 {
                series.retries.fetch_add(1, Relaxed);
            }
            tried += 1;
            outcome.attempts += 1;
            outcome.deployment = Some(step.deployment);
            outcome.native = self.native_for(provider).is_some();
            outcome.canary = canary.is_some();
            if let (true, Some(rm), 1) = (canary.is_some(), w.route_metrics, tried) {
                rm.canary_requests.fetch_add(1, Relaxed);
            }
            let span = self
                .trace
                .map(|t| t.attempt(step.deployment, step.upstream.unwrap_or(&dep.upstream)));
            let tried_once = self.attempt(step, now, span).await;
            if let (Some(t), Some(span)) = (self.trace, span) {
                t.attempt_ended(span, &tried_once);
            }
            let e = match tried_once {
                Ok(answer) => {
                    dep.breaker.success(Instant::now(), permit);
                    self.settle_probe(dep, fleet_probe, ProbeVerdict::Closed);
                    if let Some(c) = canary {
                        c.record(Instant::now(), now.elapsed(), true);
                    }
                    return Tried::Answered(answer);
                }
                Err(e) => e,
            };
            count_upstream_error(series.endpoint(endpoint), &e);
            let (retry_after, verdict) = self.failed(dep, series, canary, permit, now, &e);
            self.settle_probe(dep, fleet_probe, verdict);
            if !e.allows_fallback() {
                return Tried::Failed(e);
            }
            let retryable = e.is_retryable();
            w.last_error = Some(e);
            if !retryable {
                return Tried::Next;
            }
            match plan.retry.next(tried, rng::unit(), w.waited, retry_after) {
                Next::RetryAfter(wait) => {
                    if self
                        .route_deadline
                        .is_some_and(|d| Instant::now() + wait >= d)
                    {
                        return Tried::Next;
                    }
                    tokio::time::sleep(wait).await;
                    w.waited += wait;
                }
                Next::NextDeployment => return Tried::Next,
            }
        }
    }

    /// Leave from `dep`'s breaker to send a request `now`; a half-open breaker's probe is
    /// the fleet's with shared routing state (see [`crate::shared_routing`]).
    async fn acquire(
        &self,
        dep: &Deployment,
        now: Instant,
    ) -> Result<(Permit, Option<FleetProbe>), Refusal> {
        let permit = dep.breaker.try_acquire(now)?;
        match &self.state.shared_routing {
            Some(shared) if permit.probe => {
                shared.claim_probe(&dep.name, &dep.breaker, permit).await
            }
            _ => Ok((permit, None)),
        }
    }

    /// Tells the fleet what its probe proved, if this request was it.
    fn settle_probe(&self, dep: &Deployment, probe: Option<FleetProbe>, verdict: ProbeVerdict) {
        if let (Some(shared), Some(probe)) = (&self.state.shared_routing, probe) {
            shared.settle_probe(&dep.name, probe, verdict);
        }
    }

    /// One try of `step`, started `now` (in span `span` of the request's trace).
    async fn attempt(
        &self,
        step: &Step<'_>,
        now: Instant,
        span: Option<SpanId>,
    ) -> Result<Answer, Error> {
        let Call {
            state,
            view,
            body,
            request_id,
            started,
            plan,
            route_deadline,
            ..
        } = *self;
        let dep = &state.deployments[step.deployment];
        let provider = &state.providers[dep.provider];
        let upstream_id = step.upstream.unwrap_or(&dep.upstream);
        let mut prepared = match self.native_for(provider) {
            Some(native) => provider.prepare_responses(native, upstream_id, request_id)?,
            None => match self.native_only {
                Some(refused) => return Err(refused.to_error()),
                None => provider.prepare(view, body, upstream_id, request_id)?,
            },
        };
        if let (Some(t), Some(span), Prepared::Http { request, .. }) =
            (self.trace, span, &mut prepared)
        {
            let h = request.headers_mut();
            h.insert(TRACEPARENT, t.upstream_header(span));
            match t.trace_state() {
                Some(state) => h.insert(TRACESTATE, state),
                None => h.remove(TRACESTATE),
            };
        }
        let deadline = route_deadline.map_or(now + provider.config.timeout, |d| {
            d.min(now + provider.config.timeout)
        });
        let attempt = Attempt {
            state,
            provider,
            deployment: step.deployment,
            op: view.operation(),
            started,
            attempt_started: now,
            deadline,
            first_token_timeout: plan.first_token_timeout,
            stream: view.stream(),
            model: view.model(),
            upstream_model: upstream_id,
            estimated_prompt_tokens: view.estimated_prompt_tokens(),
            arriving: match view {
                View::Upload(_, u) => u.live.as_ref(),
                _ => None,
            },
        };
        attempt.run(prepared, body).await
    }

    /// Settles a failed try with the deployment's breaker, latency average and canary;
    /// returns the upstream's `Retry-After`, if it sent one, and what the try proved about
    /// the deployment.
    fn failed(
        &self,
        dep: &Deployment,
        series: &Series,
        canary: Option<&Canary>,
        permit: Permit,
        started: Instant,
        e: &Error,
    ) -> (Option<Duration>, ProbeVerdict) {
        let failed_at = Instant::now();
        dep.total.observe(failed_at - started);
        let retry_after = match e.kind() {
            ErrorKind::UpstreamStatus { retry_after, .. } => *retry_after,
            _ => None,
        };
        let verdict = if e.is_rate_limited() {
            let until = failed_at + retry_after.unwrap_or(DEFAULT_RATE_LIMIT_COOLDOWN);
            dep.breaker.rate_limited(until, permit);
            ProbeVerdict::None
        } else if e.counts_against_deployment() {
            if dep.breaker.failure(failed_at, permit) {
                series.breaker_opened.fetch_add(1, Relaxed);
                tracing::warn!(model = %dep.name, error = %e, "circuit breaker opened");
            }
            ProbeVerdict::Failed
        } else {
            dep.breaker.cancelled(permit);
            ProbeVerdict::None
        };
        if let (Some(c), true) = (canary, e.counts_against_deployment()) {
            if let Some(reason) = c.record(failed_at, failed_at - started, false) {
                roll_back_logged(self.state, self.plan, &reason.to_string());
            }
        }
        (retry_after, verdict)
    }

    /// Every deployment failed or was skipped: the route's degraded answer, else a
    /// cooldown's 429, else the last error.
    fn exhausted(&self, w: Walked<'_>, outcome: &mut Outcome) -> Result<Answer, Error> {
        if let Some(r) = self.plan.route {
            let route = &self.state.routes[r];
            if let Some(rm) = w.route_metrics {
                rm.exhausted.fetch_add(1, Relaxed);
            }
            let degraded = match (&route.config.fallback_response, self.view) {
                (Some(text), View::Chat(c)) => {
                    Some(degraded::answer(&route.config.name, text, c.stream))
                }
                (Some(text), View::Completion(c)) => {
                    Some(degraded::text_answer(&route.config.name, text, c.stream))
                }
                _ => None,
            };
            if let Some(answer) = degraded {
                if let Some(rm) = w.route_metrics {
                    rm.degraded.fetch_add(1, Relaxed);
                }
                outcome.degraded = true;
                // The route's own answer is chat's, whatever the last try was.
                outcome.native = false;
                return Ok(answer);
            }
        }
        if let (None, Some(until)) = (&w.last_error, w.cooldown_ends) {
            let left = until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            return Err(ErrorKind::RateLimited {
                message: "every deployment that could answer is cooling down after a rate limit"
                    .into(),
                retry_after: Some(left),
            }
            .into());
        }
        Err(w.last_error.unwrap_or_else(|| {
            let message = if w.all_skipped {
                "no healthy deployment: every target is behind an open circuit breaker or cooling down after a rate limit"
            } else {
                "every deployment failed"
            };
            ErrorKind::Unavailable {
                message: message.to_string(),
            }
            .into()
        }))
    }
}

/// The request span's event of a deployment skipped by its breaker.
fn skip_event(refusal: Refusal, dep: &Deployment) -> Vec<Attribute> {
    let why = match refusal {
        Refusal::Open => "breaker_open",
        Refusal::RateLimited => "rate_limited",
    };
    vec![
        ("sluice.model", Value::Str(dep.name.clone())),
        ("sluice.skip_reason", Value::Static(why)),
    ]
}

/// Counts a deployment skipped by its breaker, and notes when a cooldown ends.
fn skipped(refusal: Refusal, dep: &Deployment, series: &Series, now: Instant, w: &mut Walked<'_>) {
    match refusal {
        Refusal::Open => series.skipped_open.fetch_add(1, Relaxed),
        Refusal::RateLimited => {
            if let Some(until) = dep.breaker.rate_limited_until(now) {
                w.cooldown_ends = Some(w.cooldown_ends.map_or(until, |c| c.min(until)));
            }
            series.skipped_rate_limited.fetch_add(1, Relaxed)
        }
    };
}

fn route_timeout(plan: &Plan<'_>, state: &AppState) -> Error {
    let name = plan
        .route
        .map_or("", |r| state.routes[r].config.name.as_str());
    ErrorKind::UpstreamTimeout {
        provider: format!("route {name}"),
        message: format!(
            "no deployment answered within the route's {} ms (`timeout_ms`)",
            plan.timeout.unwrap_or_default().as_millis()
        ),
    }
    .into()
}

fn roll_back_logged(state: &AppState, plan: &Plan<'_>, reason: &str) {
    if let Some(r) = plan.route {
        tracing::warn!(route = %state.routes[r].config.name, %reason, "canary rolled back");
        if let Some(rm) = state.metrics.route(r) {
            rm.canary_rollbacks.fetch_add(1, Relaxed);
        }
    }
}

fn count_upstream_error(m: &EndpointMetrics, e: &Error) {
    let kind = match e.kind() {
        ErrorKind::UpstreamStatus { status: 429, .. } => UpstreamError::RateLimited,
        ErrorKind::UpstreamStatus { status, .. } if *status < 500 => UpstreamError::Status4xx,
        ErrorKind::UpstreamStatus { .. } => UpstreamError::Status5xx,
        ErrorKind::UpstreamConnect { .. } => UpstreamError::Connect,
        ErrorKind::UpstreamTimeout { .. } => UpstreamError::Timeout,
        _ => UpstreamError::Protocol,
    };
    m.upstream_error(kind);
}
