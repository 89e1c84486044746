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
use crate::metrics::{EndpointMetrics, UpstreamError};
use crate::state::{AppState, Plan};
use bytes::Bytes;
use http::header::HeaderValue;
use sluice_core::retry::Next;
use sluice_core::{rng, Error, ErrorKind};
use sluice_providers::View;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cooldown after a 429 without `Retry-After`.
const DEFAULT_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(1);

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
}

impl Call<'_> {
    /// Walks the plan until a deployment answers.
    pub async fn walk(&self, outcome: &mut Outcome) -> Result<Answer, Error> {
        walk(self, outcome).await
    }
}

async fn walk(call: &Call<'_>, outcome: &mut Outcome) -> Result<Answer, Error> {
    let endpoint = call.view.operation();
    let Call {
        state,
        view,
        body,
        request_id,
        started,
        plan,
        route_deadline,
    } = *call;
    let route_metrics = plan.route.and_then(|r| state.metrics.route(r));
    let mut waited = Duration::ZERO;
    let mut last_error: Option<Error> = None;
    let mut all_skipped = true;
    // The soonest end of a rate-limit cooldown among skipped deployments.
    let mut cooldown_ends: Option<Instant> = None;
    'steps: for (position, step) in plan.steps.iter().enumerate() {
        let dep = &state.deployments[step.deployment];
        let provider = &state.providers[dep.provider];
        let series = state.metrics.series(step.deployment);
        let metrics = series.endpoint(endpoint);
        let upstream_id = step.upstream.unwrap_or(&dep.upstream);
        if endpoint == sluice_core::Operation::Embeddings && !provider.has_embeddings() {
            last_error = Some(
                ErrorKind::InvalidRequest {
                    message: format!(
                        "model `{}` is served by provider `{}` (type `{}`), which has no embeddings API",
                        dep.name,
                        provider.name(),
                        provider.config.kind.as_str()
                    ),
                    param: Some("model"),
                }
                .into(),
            );
            outcome.deployment = Some(step.deployment);
            continue 'steps;
        }
        let canary = match (step.canary, plan.route) {
            (true, Some(r)) => state.routes[r].canary.as_ref(),
            _ => None,
        };
        let mut tried = 0u32;
        loop {
            let now = Instant::now();
            if route_deadline.is_some_and(|d| now >= d) {
                last_error = Some(route_timeout(plan, state));
                break 'steps;
            }
            let permit = match dep.breaker.try_acquire(now) {
                Ok(p) => p,
                Err(refusal) => {
                    match refusal {
                        sluice_core::breaker::Refusal::Open => {
                            series.skipped_open.fetch_add(1, Relaxed)
                        }
                        sluice_core::breaker::Refusal::RateLimited => {
                            if let Some(until) = dep.breaker.rate_limited_until(now) {
                                cooldown_ends = Some(cooldown_ends.map_or(until, |c| c.min(until)));
                            }
                            series.skipped_rate_limited.fetch_add(1, Relaxed)
                        }
                    };
                    continue 'steps;
                }
            };
            all_skipped = false;
            if tried > 0 {
                series.retries.fetch_add(1, Relaxed);
            }
            tried += 1;
            outcome.attempts += 1;
            outcome.deployment = Some(step.deployment);
            if let (true, Some(rm), 1) = (canary.is_some(), route_metrics, tried) {
                rm.canary_requests.fetch_add(1, Relaxed);
            }
            let prepared = provider.prepare(view, body, upstream_id, request_id)?;
            let deadline = route_deadline.map_or(now + provider.config.timeout, |d| {
                d.min(now + provider.config.timeout)
            });
            let attempt = Attempt {
                state,
                provider,
                deployment: step.deployment,
                op: endpoint,
                started,
                attempt_started: now,
                deadline,
                first_token_timeout: plan.first_token_timeout,
                stream: view.stream(),
                model: view.model(),
                upstream_model: upstream_id,
                estimated_prompt_tokens: view.estimated_prompt_tokens(),
            };
            match attempt.run(prepared, body).await {
                Ok(response) => {
                    dep.breaker.success(Instant::now(), permit);
                    if let Some(c) = canary {
                        c.record(Instant::now(), now.elapsed(), true);
                    }
                    if position > 0 {
                        if let Some(rm) = route_metrics {
                            rm.fallbacks.fetch_add(1, Relaxed);
                        }
                    }
                    return Ok(response);
                }
                Err(e) => {
                    count_upstream_error(metrics, &e);
                    let failed_at = Instant::now();
                    dep.total.observe(failed_at - now);
                    let retry_after = match e.kind() {
                        ErrorKind::UpstreamStatus { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    if e.is_rate_limited() {
                        dep.breaker.rate_limited(
                            failed_at + retry_after.unwrap_or(DEFAULT_RATE_LIMIT_COOLDOWN),
                            permit,
                        );
                    } else if e.counts_against_deployment() {
                        if dep.breaker.failure(failed_at, permit) {
                            series.breaker_opened.fetch_add(1, Relaxed);
                            tracing::warn!(model = %dep.name, error = %e, "circuit breaker opened");
                        }
                    } else {
                        dep.breaker.cancelled(permit);
                    }
                    if let Some(c) = canary {
                        if e.counts_against_deployment() {
                            if let Some(reason) = c.record(failed_at, failed_at - now, false) {
                                roll_back_logged(state, plan, &reason.to_string());
                            }
                        }
                    }
                    if !e.allows_fallback() {
                        return Err(e);
                    }
                    let retryable = e.is_retryable();
                    last_error = Some(e);
                    if !retryable {
                        continue 'steps;
                    }
                    match plan.retry.next(tried, rng::unit(), waited, retry_after) {
                        Next::RetryAfter(wait) => {
                            if route_deadline.is_some_and(|d| Instant::now() + wait >= d) {
                                continue 'steps;
                            }
                            tokio::time::sleep(wait).await;
                            waited += wait;
                        }
                        Next::NextDeployment => continue 'steps,
                    }
                }
            }
        }
    }
    if let Some(r) = plan.route {
        let route = &state.routes[r];
        if let Some(rm) = route_metrics {
            rm.exhausted.fetch_add(1, Relaxed);
        }
        if let (Some(text), View::Chat(chat)) = (&route.config.fallback_response, view) {
            if let Some(rm) = route_metrics {
                rm.degraded.fetch_add(1, Relaxed);
            }
            outcome.degraded = true;
            return Ok(degraded::answer(&route.config.name, text, chat.stream));
        }
    }
    if let (None, Some(until)) = (&last_error, cooldown_ends) {
        let left = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        return Err(ErrorKind::RateLimited {
            message: "every deployment that could answer is cooling down after a rate limit".into(),
            retry_after: Some(left),
        }
        .into());
    }
    Err(last_error.unwrap_or_else(|| {
        let message = if all_skipped {
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
