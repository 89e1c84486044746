//! The proxy path of `/v1/chat/completions` and `/v1/embeddings`: read and check the body,
//! resolve the model or route into a plan, and walk the plan until a deployment answers:
//! circuit breaker, try, retry with backoff on retryable failures, fall back to the next
//! deployment, and, when everything failed, the route's degraded answer or the last error.
//!
//! A streamed request is committed only when its first byte has arrived from the upstream;
//! until then a failure (or a first byte slower than `first_token_timeout_ms`) falls back
//! like any other. After that, the relay owns the stream and a failure ends it with an
//! error event.

use crate::auth;
use crate::body::{self, error_response, ResponseBody, UpstreamReadError};
use crate::cache::entry::{self, Answer};
use crate::cache::flight;
use crate::cache::{self, Cache};
use crate::metrics::{EndpointMetrics, UpstreamError};
use crate::relay::{Relay, RelayParams};
use crate::state::{self, AppState, Plan, Resolved};
use crate::tab::{self, End, Opening, Tab};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_core::cache as cache_key;
use sluice_core::retry::{self, Next};
use sluice_core::{rng, Error, ErrorKind, Operation as Endpoint};
use sluice_providers::error as upstream_error;
use sluice_providers::{Prepared, Provider, Reader, View};
use sluice_types::Usage;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `x-sluice-model`.
pub const X_SLUICE_MODEL: HeaderName = HeaderName::from_static("x-sluice-model");
/// `x-sluice-provider`.
pub const X_SLUICE_PROVIDER: HeaderName = HeaderName::from_static("x-sluice-provider");
/// `x-sluice-attempts`.
pub const X_SLUICE_ATTEMPTS: HeaderName = HeaderName::from_static("x-sluice-attempts");
/// `x-sluice-route`.
pub const X_SLUICE_ROUTE: HeaderName = HeaderName::from_static("x-sluice-route");
/// `x-sluice-degraded`.
pub const X_SLUICE_DEGRADED: HeaderName = HeaderName::from_static("x-sluice-degraded");
/// `x-sluice-cache`: `hit`, `miss` or `bypass` on responses; directives on requests.
pub const X_SLUICE_CACHE: HeaderName = HeaderName::from_static("x-sluice-cache");
/// `x-sluice-coalesced`: `true` when the answer came from an identical request in flight.
pub const X_SLUICE_COALESCED: HeaderName = HeaderName::from_static("x-sluice-coalesced");
/// `x-sluice-cache-age`: seconds since a cached answer was stored.
pub const X_SLUICE_CACHE_AGE: HeaderName = HeaderName::from_static("x-sluice-cache-age");
/// `x-sluice-cost-usd`: what the request cost (absent on streams, whose cost is known only
/// at their end: see the spend log).
pub const X_SLUICE_COST_USD: HeaderName = HeaderName::from_static("x-sluice-cost-usd");

/// The usage an upstream reported for a whole (non-streamed) answer, carried to the tab in
/// the response's extensions.
#[derive(Debug, Clone, Copy)]
pub struct UsageSeen(pub Usage);

/// Rounds a released follower may rejoin a new flight before it calls on its own.
const MAX_FLIGHT_ROUNDS: usize = 3;

/// Longest upstream error body read.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// Cooldown after a 429 without `Retry-After`.
const DEFAULT_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(1);

/// What the cache did for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheStatus {
    Hit,
    Miss,
    Bypass,
}

/// What the request came to, for headers and metrics.
#[derive(Default)]
struct Outcome {
    /// Deployment that answered (or was tried last).
    deployment: Option<usize>,
    attempts: u32,
    route: Option<usize>,
    degraded: bool,
    cache: Option<CacheStatus>,
    /// Served from an identical request's flight.
    coalesced: bool,
    /// Seconds since the cached answer was stored.
    cache_age: Option<u64>,
    /// The response is a flight whose upstream stream records its own metrics.
    driven: bool,
    /// The request's tab, until it is closed or handed to the stream that closes it.
    tab: Option<Tab>,
    /// Prompt tokens estimated from the request.
    estimated_prompt_tokens: u64,
}

/// Serves one proxied request of `endpoint`.
pub async fn serve(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    parts: http::request::Parts,
    source: BodySource,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let started = Instant::now();
    state.metrics.in_flight.fetch_add(1, Relaxed);
    let mut outcome = Outcome::default();
    let result = proxy(
        state,
        endpoint,
        parts,
        source,
        request_id,
        started,
        &mut outcome,
    )
    .await;
    let mut response = match result {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    let cost = close_tab(&mut response, &mut outcome);
    let metrics = match outcome.deployment {
        Some(d) => state.metrics.series(d),
        None => state.metrics.unresolved(),
    }
    .endpoint(endpoint);
    metrics.count_status(response.status().as_u16());
    let h = response.headers_mut();
    if let Some(d) = outcome.deployment {
        let dep = &state.deployments[d];
        h.insert(X_SLUICE_MODEL, dep.header_value.clone());
        h.insert(
            X_SLUICE_PROVIDER,
            state.providers[dep.provider].header_value.clone(),
        );
    }
    h.insert(X_SLUICE_ATTEMPTS, HeaderValue::from(outcome.attempts));
    if let Some(r) = outcome.route {
        h.insert(X_SLUICE_ROUTE, state.routes[r].header_value.clone());
    }
    if outcome.degraded {
        h.insert(X_SLUICE_DEGRADED, HeaderValue::from_static("true"));
    }
    h.insert(
        X_SLUICE_CACHE,
        HeaderValue::from_static(match outcome.cache {
            Some(CacheStatus::Hit) => "hit",
            Some(CacheStatus::Miss) => "miss",
            Some(CacheStatus::Bypass) | None => "bypass",
        }),
    );
    if outcome.coalesced {
        h.insert(X_SLUICE_COALESCED, HeaderValue::from_static("true"));
    }
    if let Some(age) = outcome.cache_age {
        h.insert(X_SLUICE_CACHE_AGE, HeaderValue::from(age));
    }
    if let Some(nano) = cost {
        if let Ok(v) = HeaderValue::from_str(&tab::usd(nano)) {
            h.insert(X_SLUICE_COST_USD, v);
        }
    }
    // A relayed or local stream records its own latency and in-flight count when it ends.
    if let ResponseBody::Local(local) = response.body_mut() {
        local.track(Arc::clone(state), started);
    } else if !matches!(response.body(), ResponseBody::Relay(_)) && !outcome.driven {
        if outcome.cache == Some(CacheStatus::Hit) {
            if let Some(c) = &state.cache {
                c.metrics.hit_latency.observe(started.elapsed());
            }
        } else {
            metrics.latency.observe(started.elapsed());
        }
        state.metrics.in_flight.fetch_sub(1, Relaxed);
    }
    response
}

/// Closes the request's tab now, or hands it to the stream that closes it at its end.
/// Returns the cost when it is known now.
fn close_tab(response: &mut Response<ResponseBody>, outcome: &mut Outcome) -> Option<u64> {
    let tab = outcome.tab.take()?;
    let cache = match (outcome.coalesced, outcome.cache) {
        (true, _) => "coalesced",
        (false, Some(CacheStatus::Hit)) => "hit",
        (false, Some(CacheStatus::Miss)) => "miss",
        (false, _) => "bypass",
    };
    match response.body_mut() {
        ResponseBody::Relay(relay) => {
            relay.attach(tab, outcome.attempts, cache);
            relay.send_cost_comment();
            return None;
        }
        ResponseBody::Local(local) => {
            local.attach(tab, outcome.attempts, cache);
            return None;
        }
        _ => {}
    }
    let status = response.status();
    let answered_upstream =
        status.is_success() && !outcome.degraded && !matches!(cache, "hit" | "coalesced");
    let (usage, usage_estimated) = match response.extensions().get::<UsageSeen>() {
        Some(u) => (u.0, false),
        None if answered_upstream => (
            Usage {
                prompt_tokens: outcome.estimated_prompt_tokens,
                ..Usage::default()
            },
            true,
        ),
        None => (Usage::default(), false),
    };
    Some(tab.close(End {
        deployment: outcome.deployment,
        status: status.as_u16(),
        usage,
        usage_estimated,
        ttft: None,
        cache,
        attempts: outcome.attempts,
    }))
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

fn invalid(e: sluice_types::InvalidRequest) -> Error {
    ErrorKind::InvalidRequest {
        message: e.message,
        param: e.param,
    }
    .into()
}

/// Where a proxied request's body comes from.
pub enum BodySource {
    /// Still on the connection: read it under `max_body_bytes`.
    Incoming(Incoming),
    /// Already read (and translated, for `/v1/messages`).
    Ready(Bytes),
}

/// Reads a client body under the configured limits.
pub async fn read_body(
    state: &AppState,
    parts: &http::request::Parts,
    incoming: Incoming,
) -> Result<Bytes, Error> {
    let content_length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects_continue = parts
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    body::read_limited(
        incoming,
        content_length,
        expects_continue,
        state.server.max_body_bytes,
        state.server.request_read_timeout,
    )
    .await
}

async fn proxy(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    parts: http::request::Parts,
    source: BodySource,
    request_id: &HeaderValue,
    started: Instant,
    outcome: &mut Outcome,
) -> Result<Response<ResponseBody>, Error> {
    // Who is asking comes before reading what they ask.
    let identity = auth::authenticate(state, &parts.headers).await?;
    let (body, label) = match source {
        BodySource::Incoming(incoming) => (
            read_body(state, &parts, incoming).await?,
            match endpoint {
                Endpoint::Chat => "chat",
                Endpoint::Embeddings => "embeddings",
            },
        ),
        BodySource::Ready(b) => (b, "messages"),
    };

    let view = View::parse(endpoint, &body).map_err(invalid)?;
    identity.check_model(view.model())?;
    let resolved = state.resolve(view.model())?;
    let overrides = state::overrides(&parts.headers, view.user())?;
    let directives = match parts.headers.get(&X_SLUICE_CACHE) {
        None => cache_key::Directives::default(),
        Some(v) => v
            .to_str()
            .map_err(|_| String::from("`x-sluice-cache` must be ASCII"))
            .and_then(cache_key::Directives::parse)
            .map_err(|message| -> Error {
                ErrorKind::InvalidRequest {
                    message,
                    param: None,
                }
                .into()
            })?,
    };
    let stream = view.stream();
    if let Resolved::Model(d) = resolved {
        outcome.deployment = Some(d);
    }
    if let Resolved::Route(r) = resolved {
        outcome.route = Some(r);
    }
    let facts = view.facts();
    outcome.estimated_prompt_tokens = facts.prompt_tokens;
    let request_id_text = request_id.to_str().unwrap_or_default();
    let opening = Opening {
        endpoint: label,
        model: view.model(),
        resolved,
        prompt_tokens: facts.prompt_tokens,
        max_tokens: facts.max_tokens,
        stream,
        request_id: request_id_text,
        started,
    };
    outcome.tab = Some(Tab::open(state, &identity, opening).await?);
    // The cache stage: a hit or an identical request in flight answers before any plan.
    let leading = match &state.cache {
        None => None,
        Some(cache) => {
            match cache_stage(
                state,
                cache,
                endpoint,
                &view,
                resolved,
                &body,
                &directives,
                outcome,
            )
            .await
            {
                Stage::Answered(r) => return Ok(r),
                Stage::Upstream => None,
                Stage::Lead(leader, store_plan) => Some((cache, leader, store_plan)),
            }
        }
    };
    let plan = state.plan(resolved, &facts, &body, &overrides, stream);
    let call = Call {
        state,
        endpoint,
        view: &view,
        body: &body,
        request_id,
        started,
        plan: &plan,
        route_deadline: plan.timeout.map(|t| started + t),
    };
    match leading {
        None => call.walk(outcome).await,
        Some((cache, leader, store_plan)) => {
            let include_usage = view.include_usage();
            call.lead(cache, leader, store_plan, include_usage, outcome)
                .await
        }
    }
}

/// What the cache stage made of a request.
enum Stage {
    /// Answered from the cache or from an identical request in flight.
    Answered(Response<ResponseBody>),
    /// Not cacheable: call upstream, store nothing.
    Upstream,
    /// Call upstream as the leader of a flight, and store the answer by the plan.
    Lead(flight::Leader, StorePlan),
}

/// Key, decision, lookup and coalescing of one request.
#[expect(
    clippy::too_many_arguments,
    reason = "the request's parts, read once by the proxy"
)]
async fn cache_stage(
    state: &AppState,
    cache: &Arc<Cache>,
    endpoint: Endpoint,
    view: &View<'_>,
    resolved: Resolved<'_>,
    body: &Bytes,
    directives: &cache_key::Directives,
    outcome: &mut Outcome,
) -> Stage {
    let (target, policy) = match resolved {
        Resolved::Model(d) => (&*state.deployments[d].name, state.deployments[d].cache),
        Resolved::Route(r) => (
            state.routes[r].config.name.as_str(),
            state.routes[r].config.cache,
        ),
        Resolved::Passthrough { .. } => (view.model(), state.cache_config.policy),
    };
    let decision = if policy.enabled {
        cache_key::request_key(endpoint, target, body)
            .ok()
            .map(|k| {
                (
                    k.key,
                    cache_key::decide(&policy, directives, k.deterministic),
                )
            })
    } else {
        None
    };
    let Some((
        key,
        cache_key::Decision::Use {
            lookup,
            store,
            coalesce,
            ttl,
        },
    )) = decision
    else {
        cache.metrics.bypasses.fetch_add(1, Relaxed);
        outcome.cache = Some(CacheStatus::Bypass);
        return Stage::Upstream;
    };
    let stream = view.stream();
    let include_usage = view.include_usage();
    if lookup {
        if let Some(answer) = cache.lookup(&key).await {
            cache.metrics.hits.fetch_add(1, Relaxed);
            cache.saved(&answer);
            outcome.cache = Some(CacheStatus::Hit);
            return Stage::Answered(answered(state, &answer, stream, include_usage, outcome));
        }
        cache.metrics.misses.fetch_add(1, Relaxed);
    }
    outcome.cache = Some(CacheStatus::Miss);
    let store_plan = StorePlan {
        store,
        ttl,
        max_bytes: policy.max_entry_bytes,
    };
    if coalesce {
        for _ in 0..MAX_FLIGHT_ROUNDS {
            match cache.flights.join(key) {
                flight::Join::Leader(leader) => return Stage::Lead(leader, store_plan),
                flight::Join::Follower(f) => {
                    if let Some(r) = follow(state, &f, stream, include_usage, outcome).await {
                        return Stage::Answered(r);
                    }
                }
            }
        }
    }
    Stage::Lead(cache.flights.solo(key), store_plan)
}

/// How a leader stores its answer.
#[derive(Debug, Clone, Copy)]
struct StorePlan {
    store: bool,
    ttl: Duration,
    max_bytes: u64,
}

/// A cached (or coalesced) answer, in the client's mode.
fn answered(
    state: &AppState,
    answer: &Answer,
    stream: bool,
    include_usage: bool,
    outcome: &mut Outcome,
) -> Response<ResponseBody> {
    outcome.deployment = state
        .deployments
        .iter()
        .position(|d| *d.name == answer.meta.model);
    outcome.cache_age = Some(cache::unix_ms().saturating_sub(answer.meta.created_ms) / 1000);
    if stream {
        if let Some(sse) = entry::to_sse(&answer.body, include_usage) {
            return sse_response(ResponseBody::Events(Some(sse)));
        }
    }
    body::json(StatusCode::OK, answer.body.clone())
}

/// Headers of every event stream sluice sends.
fn sse_response(body: ResponseBody) -> Response<ResponseBody> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    h.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    r
}

/// Waits for an identical request's answer; `None` when that request failed.
async fn follow(
    state: &AppState,
    flight: &Arc<flight::Flight>,
    stream: bool,
    include_usage: bool,
    outcome: &mut Outcome,
) -> Option<Response<ResponseBody>> {
    let cache = state.cache.as_ref()?;
    let _waiting = flight.interest();
    loop {
        match flight.wait(stream.then_some(include_usage)).await {
            flight::Status::Done(answer) => {
                cache.metrics.coalesced.fetch_add(1, Relaxed);
                cache.saved(&answer);
                outcome.coalesced = true;
                outcome.cache = Some(CacheStatus::Hit);
                return Some(answered(state, &answer, stream, include_usage, outcome));
            }
            flight::Status::Streaming => {
                if let Some(body) = flight.subscribe(include_usage) {
                    cache.metrics.coalesced.fetch_add(1, Relaxed);
                    outcome.coalesced = true;
                    outcome.cache = Some(CacheStatus::Hit);
                    return Some(sse_response(ResponseBody::Flight(Box::new(body))));
                }
            }
            flight::Status::Failed => return None,
            flight::Status::Pending => {}
        }
    }
}

/// One request on its way upstream: everything the walk along its plan needs.
struct Call<'a> {
    state: &'a Arc<AppState>,
    endpoint: Endpoint,
    view: &'a View<'a>,
    body: &'a Bytes,
    request_id: &'a HeaderValue,
    started: Instant,
    plan: &'a Plan<'a>,
    route_deadline: Option<Instant>,
}

impl Call<'_> {
    /// Calls upstream as the leader of `leader`'s flight: stores a successful, complete
    /// answer, and lets the flight's followers have it.
    async fn lead(
        &self,
        cache: &Arc<Cache>,
        leader: flight::Leader,
        plan: StorePlan,
        include_usage: bool,
        outcome: &mut Outcome,
    ) -> Result<Response<ResponseBody>, Error> {
        let response = self.walk(outcome).await?;
        let Some(d) = outcome
            .deployment
            .filter(|_| response.status() == StatusCode::OK && !outcome.degraded)
        else {
            return Ok(response);
        };
        let dep = &self.state.deployments[d];
        let meta = entry::Meta {
            model: dep.name.to_string(),
            provider: self.state.providers[dep.provider].name().to_string(),
            ..entry::Meta::default()
        };
        let (head, body) = response.into_parts();
        match body {
            ResponseBody::Relay(mut relay) => {
                if let Some(tab) = outcome.tab.take() {
                    relay.attach(tab, outcome.attempts, "miss");
                }
                let flight = Arc::clone(leader.flight());
                flight.start_stream(include_usage);
                let own = flight.subscribe(include_usage);
                let store = cache::StreamStore {
                    leader,
                    meta,
                    store: plan.store,
                    ttl: plan.ttl,
                    max_bytes: plan.max_bytes,
                    price: dep.price,
                    started: self.started,
                };
                tokio::spawn(cache::drive(
                    Arc::clone(cache),
                    relay,
                    store,
                    self.state.server.max_event_bytes as usize,
                ));
                outcome.driven = true;
                let body = match own {
                    Some(b) => ResponseBody::Flight(Box::new(b)),
                    None => ResponseBody::full(Bytes::new()),
                };
                Ok(Response::from_parts(head, body))
            }
            ResponseBody::Full(bytes) => {
                let bytes = bytes.unwrap_or_default();
                let mut meta = meta;
                if let Some(u) = Usage::from_response(&bytes) {
                    meta.set_usage(&u);
                    meta.cost_nano_usd = dep.price.map_or(0, |p| cache::cost_nano_usd(&p, &u));
                }
                meta.latency_ms = self.started.elapsed().as_millis() as u64;
                meta.created_ms = cache::unix_ms();
                let is_json = head
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
                let answer = Answer {
                    meta,
                    body: bytes.clone(),
                };
                if plan.store && is_json {
                    cache.insert(*leader.key(), &answer, plan.ttl, plan.max_bytes);
                }
                if is_json {
                    leader.done(Arc::new(answer));
                } else {
                    leader.fail();
                }
                Ok(Response::from_parts(head, ResponseBody::full(bytes)))
            }
            other => Ok(Response::from_parts(head, other)),
        }
    }

    /// Walks the plan until a deployment answers.
    async fn walk(&self, outcome: &mut Outcome) -> Result<Response<ResponseBody>, Error> {
        walk(self, outcome).await
    }
}

async fn walk(call: &Call<'_>, outcome: &mut Outcome) -> Result<Response<ResponseBody>, Error> {
    let Call {
        state,
        endpoint,
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
        if endpoint == Endpoint::Embeddings && !provider.has_embeddings() {
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
                endpoint,
                started,
                attempt_started: now,
                deadline,
                first_token_timeout: plan.first_token_timeout,
                stream: view.stream(),
                model: view.model(),
                upstream_model: upstream_id,
                estimated_prompt_tokens: view.facts().prompt_tokens,
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
                        ErrorKind::UpstreamStatus { retry_after, .. } => {
                            retry::parse_retry_after(retry_after.as_deref(), None)
                        }
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
            return Ok(degraded(&route.config.name, text, chat.stream));
        }
    }
    if let (None, Some(until)) = (&last_error, cooldown_ends) {
        let seconds = until
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
            .ceil()
            .max(1.0);
        return Err(ErrorKind::RateLimited {
            message: "every deployment that could answer is cooling down after a rate limit".into(),
            retry_after: Some(format!("{seconds}")),
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

/// The route's static answer, as a chat completion or as a stream of one.
fn degraded(route: &str, text: &str, stream: bool) -> Response<ResponseBody> {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let id = format!("chatcmpl-degraded-{created}");
    if !stream {
        let body = serde_json::json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": route,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        });
        return body::json(
            StatusCode::OK,
            serde_json::to_vec(&body).unwrap_or_default(),
        );
    }
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        serde_json::json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": route,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let mut out = String::new();
    for c in [
        chunk(
            serde_json::json!({"role": "assistant", "content": text}),
            None,
        ),
        chunk(serde_json::json!({}), Some("stop")),
    ] {
        out.push_str("data: ");
        out.push_str(&c.to_string());
        out.push_str("\n\n");
    }
    out.push_str("data: [DONE]\n\n");
    sse_response(ResponseBody::Events(Some(Bytes::from(out))))
}

/// One try on one deployment.
struct Attempt<'a> {
    state: &'a Arc<AppState>,
    provider: &'a Provider,
    deployment: usize,
    endpoint: Endpoint,
    started: Instant,
    attempt_started: Instant,
    deadline: Instant,
    first_token_timeout: Option<Duration>,
    stream: bool,
    /// What the client asked for (translated answers name it).
    model: &'a str,
    /// The model id sent upstream.
    upstream_model: &'a str,
    /// Prompt tokens estimated from the request.
    estimated_prompt_tokens: u64,
}

impl Attempt<'_> {
    fn timeout(&self, message: String) -> Error {
        ErrorKind::UpstreamTimeout {
            provider: self.provider.name().to_string(),
            message,
        }
        .into()
    }

    fn read_error(&self, e: UpstreamReadError) -> Error {
        let name = self.provider.name().to_string();
        match e {
            UpstreamReadError::Timeout => ErrorKind::UpstreamTimeout {
                provider: name,
                message: "the response body did not arrive in time".into(),
            },
            UpstreamReadError::Broken(m) => ErrorKind::UpstreamConnect {
                provider: name,
                message: format!("the connection broke while reading the response: {m}"),
            },
            UpstreamReadError::TooLarge => ErrorKind::UpstreamProtocol {
                provider: name,
                message: format!(
                    "response larger than {} bytes (`server.max_response_bytes`)",
                    self.state.server.max_response_bytes
                ),
            },
        }
        .into()
    }

    async fn run(&self, prepared: Prepared, body: &Bytes) -> Result<Response<ResponseBody>, Error> {
        let provider = self.provider;
        let dep = &self.state.deployments[self.deployment];
        let (upstream_req, reader) = match prepared {
            Prepared::Http { request, reader } => (request, reader),
            Prepared::InProcess if self.endpoint == Endpoint::Embeddings => {
                return crate::local::serve_embeddings(
                    self.state,
                    self.upstream_model,
                    self.model,
                    body,
                )
                .await;
            }
            Prepared::InProcess => {
                return crate::local::serve(
                    self.state,
                    self.deployment,
                    self.upstream_model,
                    self.model,
                    body,
                    self.stream,
                )
                .await;
            }
        };
        let metrics = self
            .state
            .metrics
            .series(self.deployment)
            .endpoint(self.endpoint);
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let chunk_timeout = provider.config.chunk_timeout;
        // A stream must show its first byte within `first_token_timeout_ms` of the try's
        // start (response head included), else the next deployment gets the request.
        let first_wait = match (self.stream, self.first_token_timeout) {
            (true, Some(t)) => Some(t),
            _ => None,
        };
        let head_deadline = first_wait.map_or(deadline, |t| {
            deadline.min(tokio::time::Instant::from_std(self.attempt_started) + t)
        });
        let response =
            match tokio::time::timeout_at(head_deadline, provider.send(upstream_req)).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(match first_wait {
                        Some(t) if head_deadline < deadline => self.timeout(format!(
                            "no first token within {} ms (`first_token_timeout_ms`)",
                            t.as_millis()
                        )),
                        _ => self.timeout(format!(
                            "no response within {} ms",
                            self.deadline
                                .duration_since(self.attempt_started)
                                .as_millis()
                        )),
                    })
                }
            };
        let (head, mut upstream) = response.into_parts();

        if !head.status.is_success() {
            let header = |name: &str| head.headers.get(name).and_then(|v| v.to_str().ok());
            let retry_after = match (header("retry-after"), header("retry-after-ms")) {
                (Some(s), _) => Some(s.to_string()),
                (None, Some(ms)) => ms
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .map(|ms| format!("{}", (ms / 1000.0).ceil())),
                (None, None) => None,
            };
            let bytes = body::read_upstream(upstream, MAX_ERROR_BODY, deadline, chunk_timeout)
                .await
                .unwrap_or_default();
            return Err(upstream_error::from_response(
                provider.name(),
                head.status.as_u16(),
                retry_after,
                &bytes,
            ));
        }

        let is_sse = head
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if self.stream && (is_sse || reader.streams_lines()) {
            // Commit only once the first byte is here: until then, failing over is free.
            let first_deadline = match first_wait {
                Some(_) => head_deadline,
                None => deadline.min(tokio::time::Instant::now() + chunk_timeout),
            };
            let wait = first_wait.unwrap_or(chunk_timeout);
            let first = loop {
                match tokio::time::timeout_at(first_deadline, upstream.frame()).await {
                    Err(_) => {
                        return Err(
                            self.timeout(format!("no first token within {} ms", wait.as_millis()))
                        )
                    }
                    Ok(None) => {
                        return Err(ErrorKind::UpstreamProtocol {
                            provider: provider.name().to_string(),
                            message: "the stream ended before any data".into(),
                        }
                        .into())
                    }
                    Ok(Some(Err(e))) => {
                        return Err(ErrorKind::UpstreamConnect {
                            provider: provider.name().to_string(),
                            message: format!("the stream broke before any data: {e}"),
                        }
                        .into())
                    }
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => break data,
                        _ => continue,
                    },
                }
            };
            let ttft = self.attempt_started.elapsed();
            dep.ttft.observe(ttft);
            metrics.ttft.observe(self.started.elapsed());
            let relay = Relay::new(
                upstream,
                first,
                Arc::clone(self.state),
                RelayParams {
                    reader: reader.stream(self.model, self.state.server.max_event_bytes as usize),
                    provider: provider.name().into(),
                    chunk_timeout,
                    deadline,
                    series: self.deployment,
                    started: self.started,
                    estimated_prompt_tokens: self.estimated_prompt_tokens,
                    ttft: self.started.elapsed(),
                },
            );
            return Ok(sse_response(ResponseBody::Relay(Box::new(relay))));
        }

        let bytes: Bytes = body::read_upstream(
            upstream,
            self.state.server.max_response_bytes,
            deadline,
            chunk_timeout,
        )
        .await
        .map_err(|e| self.read_error(e))?;
        dep.total.observe(self.attempt_started.elapsed());
        let (bytes, seen) = reader
            .whole(bytes, self.model)
            .map_err(|message| -> Error {
                ErrorKind::UpstreamProtocol {
                    provider: provider.name().to_string(),
                    message,
                }
                .into()
            })?;
        if let Some(u) = &seen {
            metrics.add_usage(u);
        }
        let mut r = Response::new(ResponseBody::full(bytes));
        if let Some(u) = seen {
            r.extensions_mut().insert(UsageSeen(u));
        }
        *r.status_mut() = head.status;
        let content_type = match reader {
            Reader::OpenAi { .. } => head.headers.get(http::header::CONTENT_TYPE).cloned(),
            _ => None,
        }
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, content_type);
        Ok(r)
    }
}
