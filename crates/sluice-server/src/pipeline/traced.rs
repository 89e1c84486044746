//! What one request's trace says, recorded as it goes and turned into spans when the
//! request ends (by the [`super::finish::Finish`] guard, for every endpoint): a span for
//! the request (kind server, with OpenTelemetry's GenAI attributes, the route, key and
//! cache status), a child span per upstream try (kind client: retries and fallbacks each
//! show), and the limit and cache decisions as events of the request span.
//!
//! A [`Recording`] exists only when the gateway has a tracer; without one nothing here
//! runs. The request's trace is the client's when it sent a valid `traceparent` (the
//! request span is then the client span's child), else a new one; every try sends the
//! upstream a `traceparent` whose parent is the try's span.

use super::answer::Answer;
use crate::cache::CacheStatus;
use crate::state::AppState;
use crate::trace::context::{self, SpanId, TraceId};
use crate::trace::span::{Attribute, Event, Kind, Span, Status, Value};
use http::header::{HeaderMap, HeaderValue};
use sluice_core::config::ProviderType;
use sluice_core::{Error, ErrorKind, Operation};
use sluice_store::KeyRecord;
use sluice_types::Usage;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Longest `tracestate` kept (the recommendation's limit is 512 bytes).
const MAX_TRACE_STATE: usize = 512;

/// The trace of one request, as far as it went.
#[derive(Debug)]
pub struct Recording {
    trace_id: TraceId,
    /// The request span's id.
    span_id: SpanId,
    /// The client's span, from its `traceparent`.
    parent: Option<SpanId>,
    flags: u8,
    trace_state: Option<Box<str>>,
    /// Unix time (ns) of `started`.
    wall: u64,
    started: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    model: Option<Box<str>>,
    key: Option<Arc<KeyRecord>>,
    attempts: Vec<Try>,
    events: Vec<Noted>,
}

/// One upstream try.
#[derive(Debug)]
struct Try {
    span_id: SpanId,
    deployment: usize,
    upstream: Box<str>,
    started: Instant,
    /// When it ended; `None` for an answer streamed to the client, which ends with it.
    ended: Option<Instant>,
    failed: Option<Failure>,
}

#[derive(Debug)]
struct Failure {
    status: Option<u16>,
    kind: &'static str,
    message: Box<str>,
}

/// An event of the request span.
#[derive(Debug)]
struct Noted {
    at: Instant,
    name: &'static str,
    attributes: Vec<Attribute>,
}

/// How a request ended, as its span tells it.
pub struct Ended {
    pub op: Operation,
    /// The status the client got in the end.
    pub status: u16,
    /// The status of the response head.
    pub head_status: u16,
    /// Tokens used upstream.
    pub usage: Usage,
    /// Its cost, in nano-USD, when it was charged.
    pub cost: Option<u64>,
    /// The deployment that answered (or was tried last).
    pub deployment: Option<usize>,
    /// The route the client named.
    pub route: Option<usize>,
    /// Answered with the route's static fallback.
    pub degraded: bool,
    /// What the cache did.
    pub cache: CacheStatus,
    /// Upstream tries.
    pub attempts: u32,
}

impl Recording {
    /// The recording of a request that arrived `started` with `headers`.
    pub fn begin(headers: &HeaderMap, started: Instant) -> Arc<Self> {
        let parent = headers.get("traceparent").and_then(context::parse);
        let trace_state = match parent {
            Some(_) => headers
                .get("tracestate")
                .and_then(|v| v.to_str().ok())
                .filter(|s| !s.is_empty() && s.len() <= MAX_TRACE_STATE)
                .map(Into::into),
            None => None,
        };
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .saturating_sub(started.elapsed().as_nanos() as u64);
        Arc::new(Self {
            trace_id: parent.map_or_else(TraceId::random, |p| p.trace_id),
            span_id: SpanId::random(),
            parent: parent.map(|p| p.span_id),
            flags: parent.map_or(1, |p| p.flags),
            trace_state,
            wall,
            started,
            inner: Mutex::default(),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The model the client asked for and the key it used.
    pub fn note_request(&self, model: &str, key: Option<&Arc<KeyRecord>>) {
        let mut inner = self.inner();
        inner.model = Some(model.into());
        inner.key = key.cloned();
    }

    /// Something that happened to the request now.
    pub fn event(&self, name: &'static str, attributes: Vec<Attribute>) {
        let at = Instant::now();
        self.inner().events.push(Noted {
            at,
            name,
            attributes,
        });
    }

    /// A try of `deployment` (sending `upstream` as the model) begins: its span's id.
    pub fn attempt(&self, deployment: usize, upstream: &str) -> SpanId {
        let span_id = SpanId::random();
        self.inner().attempts.push(Try {
            span_id,
            deployment,
            upstream: upstream.into(),
            started: Instant::now(),
            ended: None,
            failed: None,
        });
        span_id
    }

    /// The `traceparent` of the upstream request made by try `span`.
    pub fn upstream_header(&self, span: SpanId) -> HeaderValue {
        context::header(self.trace_id, span, self.flags)
    }

    /// The `traceparent` of a request the gateway makes for this one through its own
    /// pipeline (the semantic stage's embedding): its span is the request span's child.
    pub fn child_header(&self) -> HeaderValue {
        context::header(self.trace_id, self.span_id, self.flags)
    }

    /// The `tracestate` the client sent, to pass on upstream.
    pub fn trace_state(&self) -> Option<HeaderValue> {
        self.trace_state
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
    }

    /// Try `span` ended with `result` (a streamed answer's try ends with the request).
    pub fn attempt_ended(&self, span: SpanId, result: &Result<Answer, Error>) {
        let now = Instant::now();
        let mut inner = self.inner();
        let Some(t) = inner.attempts.iter_mut().rev().find(|t| t.span_id == span) else {
            return;
        };
        match result {
            Ok(Answer::Stream(_) | Answer::Piped { .. }) => {}
            Ok(_) => t.ended = Some(now),
            Err(e) => {
                t.ended = Some(now);
                let status = match e.kind() {
                    ErrorKind::UpstreamStatus { status, .. } => Some(*status),
                    _ => None,
                };
                t.failed = Some(Failure {
                    status,
                    kind: e.metric_label(),
                    message: e.message().into(),
                });
            }
        }
    }

    /// The request's spans: its own, then one per try.
    pub fn spans(&self, state: &AppState, ended: &Ended) -> Vec<Span> {
        let now = Instant::now();
        let mut inner = self.inner();
        let mut spans = Vec::with_capacity(1 + inner.attempts.len());
        spans.push(self.request_span(state, ended, &mut inner, now));
        for (n, t) in inner.attempts.iter().enumerate() {
            spans.push(self.attempt_span(state, ended, t, n, now));
        }
        spans
    }

    fn at(&self, t: Instant) -> u64 {
        self.wall + t.saturating_duration_since(self.started).as_nanos() as u64
    }

    fn request_span(
        &self,
        state: &AppState,
        ended: &Ended,
        inner: &mut Inner,
        now: Instant,
    ) -> Span {
        let o = ended;
        let op = operation_name(ended.op);
        let model = inner.model.take();
        let mut a: Vec<Attribute> = Vec::with_capacity(16);
        a.push(("gen_ai.operation.name", Value::Static(op)));
        if let Some(m) = &model {
            a.push(("gen_ai.request.model", Value::Str(m.clone())));
        }
        // A deployment answered only if it was tried or its cached answer replayed: the
        // model a client named is resolved before its limits, which may refuse it.
        let answered = o
            .deployment
            .filter(|_| !o.degraded && (o.attempts > 0 || o.cache.served()));
        if let Some(d) = answered {
            let dep = &state.deployments[d];
            let provider = &state.providers[dep.provider];
            a.push(("gen_ai.response.model", Value::Str(dep.upstream.clone())));
            a.push((
                "gen_ai.provider.name",
                Value::Static(provider_name(provider.config.kind)),
            ));
            a.push(("sluice.provider", provider.name().into()));
            a.push(("sluice.model", Value::Str(dep.name.clone())));
        }
        if !o.cache.served() && !o.degraded {
            a.push((
                "gen_ai.usage.input_tokens",
                ended.usage.prompt_tokens.into(),
            ));
            a.push((
                "gen_ai.usage.output_tokens",
                ended.usage.completion_tokens.into(),
            ));
        }
        a.push(("http.response.status_code", u64::from(ended.status).into()));
        if let Some(r) = o.route {
            a.push(("sluice.route", state.routes[r].config.name.as_str().into()));
        }
        if let Some(k) = &inner.key {
            a.push(("sluice.key.name", k.name.as_str().into()));
            a.push(("sluice.key.id", k.id.as_str().into()));
        }
        a.push(("sluice.cache.status", Value::Static(o.cache.as_str())));
        a.push(("sluice.attempts", u64::from(o.attempts).into()));
        if o.degraded {
            a.push(("sluice.degraded", Value::Bool(true)));
        }
        if let Some(nano) = ended.cost {
            a.push(("sluice.cost_usd", Value::Float(nano as f64 / 1e9)));
        }
        let status = match ended.status {
            s if s >= 500 => Status::Error(format!("answered {s}").into()),
            _ => Status::Unset,
        };
        if ended.status >= 400 {
            a.push(("error.type", ended.status.to_string().as_str().into()));
        }
        let events = std::mem::take(&mut inner.events)
            .into_iter()
            .map(|e| Event {
                time: self.at(e.at),
                name: e.name,
                attributes: e.attributes,
            })
            .collect();
        Span {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            trace_state: self.trace_state.clone(),
            flags: self.flags,
            remote_parent: self.parent.is_some(),
            name: match &model {
                Some(m) => span_name(op, m),
                None => op.into(),
            },
            kind: Kind::Server,
            start: self.wall,
            end: self.at(now),
            attributes: a,
            events,
            status,
        }
    }

    fn attempt_span(
        &self,
        state: &AppState,
        ended: &Ended,
        t: &Try,
        n: usize,
        now: Instant,
    ) -> Span {
        let dep = &state.deployments[t.deployment];
        let provider = &state.providers[dep.provider];
        let op = operation_name(ended.op);
        let mut a: Vec<Attribute> = Vec::with_capacity(10);
        a.push(("gen_ai.operation.name", Value::Static(op)));
        a.push(("gen_ai.request.model", Value::Str(t.upstream.clone())));
        a.push((
            "gen_ai.provider.name",
            Value::Static(provider_name(provider.config.kind)),
        ));
        a.push(("sluice.provider", provider.name().into()));
        a.push(("sluice.model", Value::Str(dep.name.clone())));
        a.push(("sluice.attempt", (n as u64 + 1).into()));
        let status = match &t.failed {
            Some(f) => {
                if let Some(s) = f.status {
                    a.push(("http.response.status_code", u64::from(s).into()));
                }
                a.push(("error.type", Value::Static(f.kind)));
                Status::Error(f.message.clone())
            }
            None => {
                // The try that answered: its status is the answer's.
                a.push((
                    "http.response.status_code",
                    u64::from(ended.head_status).into(),
                ));
                match ended.status {
                    s if s >= 500 => Status::Error(format!("the answer ended with {s}").into()),
                    _ => Status::Unset,
                }
            }
        };
        Span {
            trace_id: self.trace_id,
            span_id: t.span_id,
            parent: Some(self.span_id),
            trace_state: self.trace_state.clone(),
            flags: self.flags,
            remote_parent: false,
            name: span_name(op, &t.upstream),
            kind: Kind::Client,
            start: self.at(t.started),
            end: self.at(t.ended.unwrap_or(now)),
            attributes: a,
            events: Vec::new(),
            status,
        }
    }
}

/// A span's name as the conventions make it, `{operation} {model}` (`chat gpt-4o`), joined
/// without the formatting machinery (it runs for every traced request).
fn span_name(op: &str, model: &str) -> Box<str> {
    let mut s = String::with_capacity(op.len() + 1 + model.len());
    s.push_str(op);
    s.push(' ');
    s.push_str(model);
    s.into_boxed_str()
}

/// `gen_ai.operation.name`: the convention's names where it has one, else sluice's.
fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Chat => "chat",
        Operation::Completion => "text_completion",
        Operation::Embeddings => "embeddings",
        other => other.as_str(),
    }
}

/// `gen_ai.provider.name`: the API the provider speaks, in the convention's names.
fn provider_name(kind: ProviderType) -> &'static str {
    match kind {
        ProviderType::OpenAi => "openai",
        ProviderType::Anthropic => "anthropic",
        ProviderType::Gemini => "gcp.gemini",
        ProviderType::Ollama => "ollama",
        ProviderType::Local => "sluice.local",
    }
}
