//! The request pipeline of every proxied endpoint, one path left to right:
//!
//! ```text
//! Finish opened (in flight) ─ auth ─ body read under max_body_bytes ─ edge (Anthropic, Responses → chat)
//!   ─ view (one borrowed parse) ─ model allowed? resolved ─ tab: limits and budget
//!   ─ cache: lookup, coalescing ─ plan ─ walk: breaker, attempt, retry, fallback
//!   ─ Answer ─ respond: headers; the Finish ends the request now (whole answers) or when
//!     its stream ends (relayed, local, coalesced) or is dropped (client gone)
//! ```
//!
//! Every stage is generic over the [`Endpoint`] description; provider differences live in
//! `sluice-providers` ([`sluice_providers::Provider::prepare`]).

mod answer;
mod attempt;
mod audio_cache;
mod audio_length;
pub mod auth;
mod cache;
mod degraded;
mod edge;
mod ending;
mod finish;
mod guard;
mod guard_gather;
mod guard_hook;
mod guard_json;
mod guard_late;
mod guard_stream;
#[cfg(feature = "local")]
mod local;
mod pipe;
mod reframe;
mod relay;
mod semantic;
pub mod tab;
mod traced;
mod turn;
mod walk;

use crate::endpoint::Endpoint;
use crate::headers::{
    X_SLUICE_ATTEMPTS, X_SLUICE_CACHE, X_SLUICE_CACHE_AGE, X_SLUICE_CACHE_SIMILARITY,
    X_SLUICE_COALESCED, X_SLUICE_COST_USD, X_SLUICE_DEGRADED, X_SLUICE_MODEL, X_SLUICE_PROVIDER,
    X_SLUICE_ROUTE,
};
use crate::request_body::ClientBody;
use crate::response::{self, error_response, ResponseBody};
use crate::state::{self, AppState, Resolved};
use crate::trace::span::{Attribute, Value};
use answer::Answer;
pub use auth::Caller;
use bytes::Bytes;
use edge::Edge;
use ending::Ending;
use finish::{Finish, Guarded, Outcome};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};
use sluice_core::{Error, ErrorKind, Operation};
use sluice_providers::responses::inbound::BadRequest;
use sluice_providers::{Upload, View};
use sluice_types::Usage;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tab::{Opening, Tab};
use walk::Call;

/// Serves one client request of a proxied `endpoint`.
pub async fn serve<B: ClientBody>(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    req: Request<B>,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    serve_as(state, endpoint, req, request_id, &Caller::Client).await
}

/// Serves one request of a proxied `endpoint` from `caller` (a client, or a batch's line
/// run in process).
pub async fn serve_as<B: ClientBody>(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    req: Request<B>,
    request_id: &HeaderValue,
    caller: &Caller,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let mut finish = Finish::start(state, endpoint.operation(), started, req.headers());
    let mut edge = Edge::new(endpoint.protocol());
    let mut guarded = guard::Guarded::default();
    let result = run(
        state,
        endpoint,
        req,
        (request_id, caller),
        &mut finish,
        &mut edge,
        &mut guarded,
    )
    .await;
    let mut response = respond(state, result, finish, edge).await;
    guarded.flag(&mut response);
    response
}

/// A `/v1/embeddings` request of the gateway's own (the semantic stage's), as
/// [`Caller::Gateway`], boxed (see [`semantic::OwnEmbeddings`]).
fn serve_own_embeddings<'a>(
    state: &'a Arc<AppState>,
    req: Request<http_body_util::Full<Bytes>>,
    request_id: &'a HeaderValue,
) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send + 'a>> {
    static GATEWAY: Caller = Caller::Gateway;
    Box::pin(serve_as(
        state,
        Endpoint::Embeddings,
        req,
        request_id,
        &GATEWAY,
    ))
}

/// The stages, from the request to its answer.
async fn run<B: ClientBody>(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    req: Request<B>,
    (request_id, caller): (&HeaderValue, &Caller),
    finish: &mut Finish,
    edge: &mut Edge,
    guarded: &mut guard::Guarded,
) -> Result<Answer, Error> {
    let (parts, incoming) = req.into_parts();
    // Who is asking comes before reading what they ask.
    let identity = caller.identity(state, &parts.headers).await?;
    let (body, upload, rest) = read(state, endpoint, &parts, incoming, &identity, edge).await?;
    let read = Read {
        headers: &parts.headers,
        identity: &identity,
        body: &body,
        upload: &upload,
    };
    let answering = answer(
        state,
        endpoint,
        read,
        (request_id, caller),
        finish,
        edge,
        guarded,
    );
    match rest {
        None => answering.await,
        // Boxed: held inline, the pair made every request's future (kept for as long as the
        // request is in flight, uploads or not) the size of both (+10 KiB a request: 4,096
        // busy connections peaked 40 MiB higher).
        Some(rest) => Box::pin(alongside(answering, rest.finish())).await,
    }
}

/// The request as read: its headers, who asks, its body or upload.
struct Read<'a> {
    headers: &'a http::HeaderMap,
    identity: &'a crate::keys::Identity,
    body: &'a Bytes,
    upload: &'a Upload,
}

/// Answers a request while the rest of its upload arrives: the upload's end is awaited
/// only as long as the answer is; an upload that fails (cut, too large, malformed) ends
/// the request with its error at once, the try under way dropped (its upstream request
/// aborted, never counted against the deployment).
async fn alongside(
    answering: impl std::future::Future<Output = Result<Answer, Error>>,
    rest: impl std::future::Future<Output = Result<(), Error>>,
) -> Result<Answer, Error> {
    tokio::pin!(answering, rest);
    let mut arrived = false;
    loop {
        tokio::select! {
            biased;
            r = &mut rest, if !arrived => match r {
                Ok(()) => arrived = true,
                Err(e) => return Err(e),
            },
            a = &mut answering => return a,
        }
    }
}

/// The stages after reading, from the view to the answer.
async fn answer(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    read: Read<'_>,
    (request_id, caller): (&HeaderValue, &Caller),
    finish: &mut Finish,
    edge: &mut Edge,
    guarded: &mut guard::Guarded,
) -> Result<Answer, Error> {
    let Read {
        headers,
        identity,
        body,
        upload,
    } = read;
    let op = endpoint.operation();
    let first = parse(op, body, upload)?;
    edge.estimate_input(first.estimated_prompt_tokens());
    identity.check_model(first.model())?;
    let resolved = state.resolve(first.model())?;
    let native_body = match state.may_answer_natively(resolved) {
        true => edge.native_body().transpose()?,
        false => None,
    };
    let native_only = edge.native_only().cloned();
    let native = native_body.as_ref();
    only_natively(native, native_only.as_ref())?;
    let asked = Asked {
        endpoint,
        headers,
        identity,
        view: &first,
        body,
        resolved,
        request_id,
        batch_id: caller.batch_id(),
        native,
        native_only: native_only.as_ref(),
        no_cache: false,
    };
    open_tab(state, &asked, finish).await?;
    // Guardrails see the request before anything else does (cache keys included), once
    // its tab is open (a blocked request is counted and recorded like any other).
    let key = identity.key().map(|k| &**k);
    let redacted = guard::request(state, resolved, key, first.model(), body, guarded).await;
    finish.note_guardrails(guarded.summary());
    let redacted = redacted?;
    if first.stream() {
        // A streamed answer's webhooks answer after it has gone: its record waits for them.
        finish.defer_guardrails(guarded.defer_verdict(state));
    }
    finish.sample(
        || crate::samples::Draft {
            request: redacted.clone().unwrap_or_else(|| body.clone()),
            model: first.model().to_string(),
            key_id: identity.key().map(|k| k.id.clone()),
            response: None,
        },
        request_id.to_str().unwrap_or_default(),
    );
    // A request the guardrails rewrote, or whose answer they read, goes through chat, where
    // they act; never around them to a native upstream.
    let asked = Asked {
        native: asked
            .native
            .filter(|_| redacted.is_none() && !guarded.touches_answers()),
        no_cache: guarded.validating(),
        ..asked
    };
    only_natively(asked.native, asked.native_only)?;
    let view;
    let asked = match &redacted {
        None => asked,
        Some(b) => {
            view = parse(op, b, upload)?;
            Asked {
                view: &view,
                body: b,
                ..asked
            }
        }
    };
    let mut answer = stages(state, &asked, finish).await;
    // An answer that fails its JSON schema is asked for again while tries are left.
    while guarded.retry(state, &answer) {
        answer = stages(state, &asked, finish).await;
    }
    let answer = guard_answer(state, guarded, (op, first.model()), answer, finish).await;
    finish.note_guardrails(guarded.summary());
    match op {
        Operation::Transcription | Operation::Translation => {
            audio_length::fill(upload, answer, finish).await
        }
        _ => answer,
    }
}

/// The request's body: an upload spooled as it arrives (with the rest of it still to read
/// when it was handed on early), every other body read whole (and, for Anthropic's and the
/// Responses API's clients, read into chat).
async fn read<'a, B: ClientBody>(
    state: &'a AppState,
    endpoint: Endpoint,
    parts: &http::request::Parts,
    incoming: B,
    identity: &crate::keys::Identity,
    edge: &mut Edge,
) -> Result<(Bytes, Upload, Option<Box<crate::upload::Rest<'a, B>>>), Error> {
    use crate::upload::Received;
    let op = endpoint.operation();
    if op.is_upload() {
        return Ok(
            match crate::upload::receive(&state.server, op, parts, incoming).await? {
                Received::Whole(upload) => (Bytes::new(), upload, None),
                Received::Early(upload, rest) => (Bytes::new(), upload, Some(rest)),
            },
        );
    }
    let raw = crate::request_body::read_body(&state.server, parts, incoming).await?;
    let owner = identity.key().map(|k| k.id.as_str());
    let (body, read) = Edge::read(endpoint.protocol(), raw, owner, &state.responses).await?;
    *edge = read;
    Ok((body, Upload::default(), None))
}

/// The request read through its operation's view.
fn parse<'a>(op: Operation, body: &'a [u8], upload: &'a Upload) -> Result<View<'a>, Error> {
    if op.is_upload() {
        return Ok(View::Upload(op, upload));
    }
    View::parse(op, body).map_err(|e| -> Error {
        ErrorKind::InvalidRequest {
            message: e.message,
            param: e.param,
        }
        .into()
    })
}

/// What the stages after reading know of the request.
struct Asked<'a> {
    endpoint: Endpoint,
    headers: &'a http::HeaderMap,
    identity: &'a crate::keys::Identity,
    view: &'a View<'a>,
    body: &'a Bytes,
    resolved: Resolved<'a>,
    request_id: &'a HeaderValue,
    /// The batch whose line this is (`None`: a client's request).
    batch_id: Option<&'a str>,
    /// A Responses API request as native upstreams are sent it, when one may answer it.
    native: Option<&'a Bytes>,
    /// What of it only a native upstream can honour.
    native_only: Option<&'a BadRequest>,
    /// Around the cache (answers validated against a JSON schema).
    no_cache: bool,
}

/// The 400 of a request that asks for what only a native Responses upstream can honour
/// when none may answer it.
fn only_natively(native: Option<&Bytes>, native_only: Option<&BadRequest>) -> Result<(), Error> {
    match (native, native_only) {
        (None, Some(b)) => Err(b.to_error()),
        _ => Ok(()),
    }
}

/// The tab: every limit and the budget checked and charged.
async fn open_tab(state: &Arc<AppState>, a: &Asked<'_>, finish: &mut Finish) -> Result<(), Error> {
    let (view, resolved) = (a.view, a.resolved);
    let facts = view.facts();
    let o = &mut finish.outcome;
    match resolved {
        Resolved::Model(d) => o.deployment = Some(d),
        Resolved::Route(r) => o.route = Some(r),
        Resolved::Passthrough { .. } => {}
    }
    o.estimated_prompt_tokens = facts.prompt_tokens;
    // An image upload is billed by the size and quality its form asks for.
    let upload_units = match view {
        View::Upload(Operation::ImageEdit | Operation::ImageVariation, u) => Some(u.image_units()),
        _ => None,
    };
    let opening = Opening {
        endpoint: a.endpoint.label(),
        model: view.model(),
        resolved,
        prompt_tokens: facts.prompt_tokens,
        max_tokens: facts.max_tokens,
        stream: view.stream(),
        request_id: a.request_id.to_str().unwrap_or_default(),
        started: finish.started(),
        units: match view {
            View::Media(m) => Some(&m.units),
            _ => upload_units.as_ref(),
        },
        batch_id: a.batch_id,
    };
    let opened = Tab::open(state, a.identity, opening).await;
    if let Some(t) = finish.trace() {
        t.note_request(view.model(), a.identity.key());
        t.event("sluice.limits", limits_event(&opened));
    }
    finish.set_tab(opened?);
    Ok(())
}

/// The limits' decision, as the request span's event says it.
fn limits_event(opened: &Result<Tab, Error>) -> Vec<Attribute> {
    match opened {
        Ok(tab) => vec![
            ("sluice.limits.outcome", Value::Static("admitted")),
            ("sluice.limits.checked", (tab.limit_count() as u64).into()),
        ],
        Err(e) => vec![
            ("sluice.limits.outcome", Value::Static("refused")),
            ("error.type", Value::Static(e.metric_label())),
            ("sluice.limits.message", e.message().as_str().into()),
        ],
    }
}

/// The cache's decision, as the request span's event says it.
fn cache_event(o: &Outcome, staged: &cache::Stage) -> Vec<Attribute> {
    let mut a = vec![("sluice.cache.status", Value::Static(o.cache.as_str()))];
    if let cache::Stage::Lead(..) = staged {
        a.push(("sluice.cache.leads_flight", Value::Bool(true)));
    }
    if let Some(age) = o.cache_age {
        a.push(("sluice.cache.age_s", age.into()));
    }
    if let Some(similarity) = o.cache_similarity {
        a.push((
            "sluice.cache.similarity",
            Value::Float(f64::from(similarity)),
        ));
    }
    a
}

/// The cache, the plan and the walk.
async fn stages(
    state: &Arc<AppState>,
    a: &Asked<'_>,
    finish: &mut Finish,
) -> Result<Answer, Error> {
    let (view, body, resolved) = (a.view, a.body, a.resolved);
    let overrides = state::overrides(a.headers, view.user())?;
    let directives = cache::directives(a.headers)?;
    let facts = view.facts();
    // The cache stage: a hit or an identical request in flight answers before any plan.
    let leading = match &state.cache {
        // Uploads are never cached: their bodies are spooled, not hashed.
        Some(_) if view.operation().is_upload() => None,
        // Native Responses answers carry their upstream's own ids: never replayed or shared.
        Some(_) if a.native.is_some() => None,
        // An answer that may be asked for again (it failed its schema) is never replayed.
        Some(_) if a.no_cache => None,
        None => None,
        Some(c) => {
            let trace = finish.trace().cloned();
            let asked = cache::Asked {
                view,
                resolved,
                body,
                directives: &directives,
                key_id: a.identity.key().map(|k| k.id.as_str()),
                request_id: a.request_id,
                own_embeddings: serve_own_embeddings,
                trace: trace.as_deref(),
            };
            let staged = cache::stage(state, c, &asked, &mut finish.outcome).await;
            if let Some(t) = finish.trace() {
                t.event("sluice.cache", cache_event(&finish.outcome, &staged));
            }
            match staged {
                cache::Stage::Answered(a) => return Ok(a),
                cache::Stage::Upstream => None,
                cache::Stage::Lead(leader, plan) => Some((c, leader, plan)),
            }
        }
    };
    let plan = state.plan(resolved, &facts, body, &overrides, view.stream());
    let trace = finish.trace().cloned();
    let call = Call {
        trace: trace.as_deref(),
        state,
        view,
        body,
        request_id: a.request_id,
        started: finish.started(),
        plan: &plan,
        route_deadline: plan.timeout.map(|t| finish.started() + t),
        native: a.native,
        native_only: a.native_only,
    };
    match leading {
        None => call.walk(&mut finish.outcome).await,
        Some((c, leader, plan)) => cache::lead(&call, c, leader, plan, finish).await,
    }
}

/// A whole answer through the answer guardrails (and redacted values put back). A blocked
/// answer is an error whose tab still counts what the upstream used.
async fn guard_answer(
    state: &Arc<AppState>,
    guarded: &mut guard::Guarded,
    (op, model): (Operation, &str),
    answer: Result<Answer, Error>,
    finish: &mut Finish,
) -> Result<Answer, Error> {
    if !guarded.touches_answers() {
        return answer;
    }
    match answer {
        Ok(Answer::Whole {
            status,
            content_type,
            body,
            usage,
        }) => {
            let usage = guarded.charged(usage);
            let checked = match guarded.validate(state, status, &body) {
                Ok(()) => guarded.answer(state, model, body).await,
                Err(e) => Err(e),
            };
            match checked {
                Ok(body) => Ok(Answer::Whole {
                    status,
                    content_type,
                    body,
                    usage,
                }),
                Err(e) => {
                    finish.outcome.spent = Some(usage.unwrap_or_default());
                    Err(e)
                }
            }
        }
        Ok(Answer::Stream(inner)) => Ok(Answer::Stream(Box::new(
            guard_stream::GuardedStream::new(inner, guarded.filter(state, (op, model)))
                .usage_at_ending(),
        ))),
        Ok(Answer::Events(events)) => Ok(Answer::Events(
            guarded.filter(state, (op, model)).whole(&events),
        )),
        Ok(Answer::Detached(copy)) => Ok(Answer::DetachedGuarded(Box::new(
            guard_stream::GuardedStream::new(copy, guarded.filter(state, (op, model))),
        ))),
        // A retry that failed still charges the answers before it.
        Err(e) => {
            finish.outcome.spent = guarded.charged(None).or(finish.outcome.spent);
            Err(e)
        }
        other => other,
    }
}

/// The answer as an HTTP response in the endpoint's protocol, with sluice's headers; the
/// request ends here for whole answers (once what the edge stores of them is stored), and
/// with the stream for streams.
async fn respond(
    state: &AppState,
    result: Result<Answer, Error>,
    mut finish: Finish,
    mut edge: Edge,
) -> Response<ResponseBody> {
    let (response, cost) = match result {
        Err(e) => error(&mut finish, &e, &edge),
        Ok(Answer::Whole {
            status,
            content_type,
            body,
            usage,
        }) => match edge.whole(body, content_type, finish.outcome.native) {
            Ok((body, content_type, storing)) => {
                if let Some(Err(e)) = match storing {
                    Some(s) => Some(s.await),
                    None => None,
                } {
                    tracing::warn!(error = %e, "a response was not stored");
                }
                finish.set_head_status(status.as_u16());
                finish.sample_answer(&body);
                let end = whole_ending(&finish, status.as_u16(), usage);
                let cost = finish.complete(end);
                let mut r = response::json(status, body);
                r.headers_mut().insert(CONTENT_TYPE, content_type);
                (r, cost)
            }
            Err(message) => {
                let provider = finish.outcome.deployment.map_or("upstream".into(), |d| {
                    state.providers[state.deployments[d].provider]
                        .name()
                        .to_string()
                });
                let e: Error = ErrorKind::UpstreamProtocol { provider, message }.into();
                error(&mut finish, &e, &edge)
            }
        },
        Ok(Answer::Events(events)) => {
            finish.set_head_status(200);
            let cost = finish.complete(Ending::bare(200));
            (
                response::sse(edge.stream(ResponseBody::Events(Some(events)), false)),
                cost,
            )
        }
        Ok(Answer::Stream(stream)) => {
            finish.set_head_status(200);
            let outcome = finish.outcome;
            let body = ResponseBody::stream(Guarded::new(stream, finish, true));
            let r = response::sse(edge.stream(body, outcome.native));
            return with_headers(state, r, &outcome, None);
        }
        Ok(Answer::Piped {
            content_type,
            content_length,
            body,
        }) => {
            finish.set_head_status(200);
            let outcome = finish.outcome;
            // Audio has no comments: the cost goes to the spend log only.
            let mut r = Response::new(ResponseBody::stream(Guarded::new(body, finish, false)));
            r.headers_mut().insert(CONTENT_TYPE, content_type);
            if let Some(len) = content_length {
                r.headers_mut().insert(http::header::CONTENT_LENGTH, len);
            }
            return with_headers(state, r, &outcome, None);
        }
        Ok(Answer::Detached(copy)) => (
            response::sse(edge.stream(ResponseBody::stream(copy), false)),
            None,
        ),
        Ok(Answer::DetachedGuarded(copy)) => (
            response::sse(edge.stream(ResponseBody::stream(copy), false)),
            None,
        ),
    };
    let outcome = finish.outcome;
    with_headers(state, response, &outcome, cost)
}

/// An error response in the endpoint's protocol; the request ends with it.
fn error(finish: &mut Finish, e: &Error, edge: &Edge) -> (Response<ResponseBody>, Option<u64>) {
    let status = e.status_code();
    finish.set_head_status(status);
    let ending = match finish.outcome.spent {
        // The upstream answered (and was paid) before a guardrail refused the answer.
        Some(usage) => Ending {
            status,
            usage,
            estimated: false,
            ttft: None,
        },
        None => Ending::bare(status),
    };
    let cost = finish.complete(ending);
    let mut r = error_response(e);
    if let Some(body) = edge.error_body(e.error_type(), &e.message()) {
        *r.body_mut() = ResponseBody::full(body);
    }
    (r, cost)
}

/// How a whole answer ended: its usage, else (for an upstream's answer) the estimate.
fn whole_ending(finish: &Finish, status: u16, usage: Option<Usage>) -> Ending {
    match usage {
        Some(usage) => Ending {
            status,
            usage,
            estimated: finish.outcome.usage_estimated,
            ttft: None,
        },
        None if finish.answered_upstream(status) => Ending {
            status,
            usage: Usage {
                prompt_tokens: finish.outcome.estimated_prompt_tokens,
                ..Usage::default()
            },
            estimated: true,
            ttft: None,
        },
        None => Ending::bare(status),
    }
}

/// sluice's headers on a proxied answer.
fn with_headers(
    state: &AppState,
    mut response: Response<ResponseBody>,
    o: &Outcome,
    cost: Option<u64>,
) -> Response<ResponseBody> {
    let h = response.headers_mut();
    if let Some(d) = o.deployment {
        let dep = &state.deployments[d];
        h.insert(X_SLUICE_MODEL, dep.header_value.clone());
        h.insert(
            X_SLUICE_PROVIDER,
            state.providers[dep.provider].header_value.clone(),
        );
    }
    h.insert(X_SLUICE_ATTEMPTS, HeaderValue::from(o.attempts));
    if let Some(r) = o.route {
        h.insert(X_SLUICE_ROUTE, state.routes[r].header_value.clone());
    }
    if o.degraded {
        h.insert(X_SLUICE_DEGRADED, HeaderValue::from_static("true"));
    }
    h.insert(X_SLUICE_CACHE, HeaderValue::from_static(o.cache.header()));
    if o.cache == crate::cache::CacheStatus::Coalesced {
        h.insert(X_SLUICE_COALESCED, HeaderValue::from_static("true"));
    }
    if let Some(age) = o.cache_age {
        h.insert(X_SLUICE_CACHE_AGE, HeaderValue::from(age));
    }
    if let Some(similarity) = o.cache_similarity {
        if let Ok(v) = HeaderValue::from_str(&format!("{similarity:.4}")) {
            h.insert(X_SLUICE_CACHE_SIMILARITY, v);
        }
    }
    if let Some(nano) = cost {
        if let Ok(v) = HeaderValue::from_str(&tab::usd(nano)) {
            h.insert(X_SLUICE_COST_USD, v);
        }
    }
    response
}
