//! The cache stage: the request's key and the policy's decision, a lookup (memory, then
//! the store), coalescing with an identical request in flight, and, for the leader of a
//! flight, the store of its answer once it is whole: at once for a whole answer, and for a
//! stream when the task that drives it for every client of the flight sees it end cleanly
//! (speech's SSE events kept as sent), and for text-to-speech audio when the client's copy
//! of it ends cleanly (see `audio_cache`).

use super::answer::Answer;
use super::audio_cache;
use super::ending::{Ending, Tracked};
use super::finish::{Finish, Guarded, Outcome};
use super::semantic::{self, Probe};
use super::walk::Call;
use crate::cache::entry::{self, Answer as Entry, Assembler, Meta};
use crate::cache::flight::{self, FlightBody, Leader};
use crate::cache::index_record::Question;
use crate::cache::text::{self, TextAssembler};
use crate::cache::{self, Cache, CacheStatus};
use crate::headers::X_SLUICE_CACHE;
use crate::response::Aborted;
use crate::state::{AppState, Resolved};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use sluice_core::cache as cache_key;
use sluice_core::config::{CacheScope, Price};
use sluice_core::pricing::Billed;
use sluice_core::{Error, ErrorKind, Operation};
use sluice_providers::View;
use sluice_store::Key;
use sluice_types::sse::{Keep, SseScanner};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Rounds a released follower may rejoin a new flight before it calls on its own.
const MAX_FLIGHT_ROUNDS: usize = 3;

/// The request's `x-sluice-cache` directives.
pub fn directives(headers: &HeaderMap) -> Result<cache_key::Directives, Error> {
    match headers.get(&X_SLUICE_CACHE) {
        None => Ok(cache_key::Directives::default()),
        Some(v) => v
            .to_str()
            .map_err(|_| String::from("`x-sluice-cache` must be ASCII"))
            .and_then(cache_key::Directives::parse)
            .map_err(|message| {
                ErrorKind::InvalidRequest {
                    message,
                    param: None,
                }
                .into()
            }),
    }
}

/// What the cache stage reads of a request.
pub struct Asked<'a> {
    /// The body's view.
    pub view: &'a View<'a>,
    /// What its model resolved to.
    pub resolved: Resolved<'a>,
    /// The body, in OpenAI's format.
    pub body: &'a Bytes,
    /// `x-sluice-cache`.
    pub directives: &'a cache_key::Directives,
    /// The virtual key's id, when the caller used one.
    pub key_id: Option<&'a str>,
    /// The request's id (the semantic stage's own requests are named after it).
    pub request_id: &'a HeaderValue,
    /// The pipeline's entry for the semantic stage's own embeddings requests.
    pub own_embeddings: semantic::OwnEmbeddings,
    /// The request's trace, which the semantic stage's own requests continue.
    pub trace: Option<&'a super::traced::Recording>,
}

/// What the cache stage made of a request.
pub enum Stage {
    /// Answered from the cache or from an identical request in flight.
    Answered(Answer),
    /// Not cacheable: call upstream, store nothing.
    Upstream,
    /// Call upstream as the leader of a flight, and store the answer by the plan.
    Lead(Leader, StorePlan),
}

/// How a leader stores its answer.
#[derive(Debug)]
pub struct StorePlan {
    store: bool,
    ttl: Duration,
    max_bytes: u64,
    include_usage: bool,
    /// The request's operation: how a stream is assembled into an entry.
    op: Operation,
    /// The question to index with the answer (semantic stage).
    semantic: Option<Question>,
}

/// Stores a leader's answer by the plan (and indexes its question for the semantic stage).
fn store(cache: &Cache, key: Key, entry: &Entry, plan: StorePlan) {
    cache.insert(key, entry, (plan.ttl, plan.max_bytes), plan.semantic);
}

/// Key, decision, lookup and coalescing of one request.
pub async fn stage(
    state: &Arc<AppState>,
    cache: &Arc<Cache>,
    asked: &Asked<'_>,
    outcome: &mut Outcome,
) -> Stage {
    let view = asked.view;
    let (target, policy) = match asked.resolved {
        Resolved::Model(d) => (&*state.deployments[d].name, &state.deployments[d].cache),
        Resolved::Route(r) => (
            state.routes[r].config.name.as_str(),
            &state.routes[r].config.cache,
        ),
        Resolved::Passthrough { .. } => (view.model(), &state.cache_config.policy),
    };
    // One tenant's answers never reach another (nor do its flights coalesce with theirs)
    // unless the target's cache is `global`.
    let scope = match policy.scope {
        CacheScope::Key => asked.key_id,
        CacheScope::Global => None,
    };
    let decision = if policy.enabled {
        cache_key::request_key(view.operation(), target, scope, asked.body)
            .ok()
            .map(|k| {
                let chat = view.operation() == Operation::Chat;
                let decision = cache_key::decide(policy, asked.directives, (k.deterministic, chat));
                (k.key, decision)
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
        outcome.cache = CacheStatus::Bypass;
        return Stage::Upstream;
    };
    let stream = view.stream();
    let include_usage = view.include_usage();
    let op = view.operation();
    let mode = Mode {
        op,
        stream,
        include_usage,
    };
    let mut pending = None;
    if lookup {
        if let Some(entry) = cache.lookup(&key).await {
            cache.metrics.hits.fetch_add(1, Relaxed);
            cache.saved(&entry);
            outcome.cache = CacheStatus::Hit;
            return Stage::Answered(replay(state, &entry, mode, outcome));
        }
        if let Some(policy) = &policy.semantic {
            match semantic::probe(
                state,
                cache,
                policy,
                (view.operation(), asked.body),
                (target, scope),
                (
                    semantic::Parent {
                        request_id: asked.request_id,
                        trace: asked.trace,
                    },
                    asked.own_embeddings,
                ),
            )
            .await
            {
                Some(Probe::Hit { entry, similarity }) => {
                    cache.metrics.semantic_hits.fetch_add(1, Relaxed);
                    cache.saved(&entry);
                    outcome.cache = CacheStatus::SemanticHit;
                    outcome.cache_similarity = Some(similarity);
                    return Stage::Answered(replay(state, &entry, mode, outcome));
                }
                Some(Probe::Miss(p)) => pending = Some(p),
                None => {}
            }
        }
        cache.metrics.misses.fetch_add(1, Relaxed);
    }
    outcome.cache = CacheStatus::Miss;
    let plan = StorePlan {
        store,
        ttl,
        max_bytes: policy.max_entry_bytes,
        include_usage,
        op,
        semantic: pending,
    };
    if coalesce {
        for _ in 0..MAX_FLIGHT_ROUNDS {
            match cache.flights.join(key) {
                flight::Join::Leader(leader) => return Stage::Lead(leader, plan),
                flight::Join::Follower(f) => {
                    if let Some(a) = follow(state, &f, mode, outcome).await {
                        return Stage::Answered(a);
                    }
                }
            }
        }
    }
    Stage::Lead(cache.flights.solo(key), plan)
}

/// How a client asked for its answer.
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// The request's operation (chat's entries replay as chunks, text completions' as
    /// `text_completion` events).
    op: Operation,
    stream: bool,
    include_usage: bool,
}

/// A stored (or coalesced) answer, in the client's mode.
fn replay(state: &AppState, entry: &Entry, mode: Mode, outcome: &mut Outcome) -> Answer {
    outcome.deployment = state
        .deployments
        .iter()
        .position(|d| *d.name == entry.meta.model);
    outcome.cache_age = Some(cache::unix_ms().saturating_sub(entry.meta.created_ms) / 1000);
    // Speech's events, replayed as they were sent.
    if entry.meta.content_type.as_deref() == Some(EVENTS) {
        return Answer::Events(entry.body.clone());
    }
    // Audio, replayed as it came.
    if let Some(content_type) = entry
        .meta
        .content_type
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
    {
        return Answer::Piped {
            content_type,
            content_length: Some(HeaderValue::from(entry.body.len())),
            body: Box::new(audio_cache::Replay::new(entry.body.clone())),
        };
    }
    if mode.stream {
        let sse = match mode.op {
            Operation::Completion => text::to_sse(&entry.body, mode.include_usage),
            _ => entry::to_sse(&entry.body, mode.include_usage),
        };
        if let Some(sse) = sse {
            return Answer::Events(sse);
        }
    }
    Answer::json(entry.body.clone(), None)
}

/// Waits for an identical request's answer; `None` when that request failed.
async fn follow(
    state: &AppState,
    flight: &Arc<flight::Flight>,
    mode: Mode,
    outcome: &mut Outcome,
) -> Option<Answer> {
    let (stream, include_usage) = (mode.stream, mode.include_usage);
    let cache = state.cache.as_ref()?;
    let _waiting = flight.interest();
    loop {
        match flight.wait(stream.then_some(include_usage)).await {
            flight::Status::Done(entry) => {
                cache.metrics.coalesced.fetch_add(1, Relaxed);
                cache.saved(&entry);
                outcome.cache = CacheStatus::Coalesced;
                return Some(replay(state, &entry, mode, outcome));
            }
            flight::Status::Streaming => {
                if let Some(body) = flight.subscribe(include_usage) {
                    cache.metrics.coalesced.fetch_add(1, Relaxed);
                    outcome.cache = CacheStatus::Coalesced;
                    return Some(Answer::Stream(Box::new(Follower(body))));
                }
            }
            flight::Status::Failed => return None,
            flight::Status::Pending => {}
        }
    }
}

/// A coalesced client's copy of a leader's stream: ends the client's own request.
struct Follower(FlightBody);

impl Body for Follower {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        Pin::new(&mut self.get_mut().0)
            .poll_frame(cx)
            .map_err(Aborted::from)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Tracked for Follower {
    fn ending(&mut self, completed: bool) -> Ending {
        Ending::bare(if completed { 200 } else { 499 })
    }
}

/// Calls upstream as the leader of `leader`'s flight: stores a successful, complete
/// answer, and lets the flight's followers have it. A streamed answer is driven by a task
/// of its own, which ends the request; the leader's client reads its copy from the flight.
pub async fn lead(
    call: &Call<'_>,
    cache: &Arc<Cache>,
    leader: Leader,
    plan: StorePlan,
    finish: &mut Finish,
) -> Result<Answer, Error> {
    let answer = call.walk(&mut finish.outcome).await?;
    let Some(d) = finish
        .outcome
        .deployment
        .filter(|_| !finish.outcome.degraded)
    else {
        return Ok(answer);
    };
    let state = call.state;
    let dep = &state.deployments[d];
    let meta = Meta {
        model: dep.name.to_string(),
        provider: state.providers[dep.provider].name().to_string(),
        ..Meta::default()
    };
    match answer {
        Answer::Stream(stream) => {
            let mut meta = meta;
            let mut units_nano_usd = 0;
            if plan.op == Operation::Speech {
                // Kept as the events sent, and replayed as such (see `Assembling::Events`).
                meta.content_type = Some(EVENTS.to_string());
                units_nano_usd = speech_units_nano_usd(dep.price.as_ref(), call.view);
            }
            finish.set_head_status(200);
            let driven = Guarded::new(stream, finish.hand_over(), false);
            let flight = Arc::clone(leader.flight());
            flight.start_stream(plan.include_usage);
            let own = flight.subscribe(plan.include_usage);
            let store = StreamStore {
                leader,
                meta,
                plan,
                price: dep.price.clone(),
                units_nano_usd,
                started: call.started,
            };
            let max_event = state.server.max_event_bytes as usize;
            tokio::spawn(drive(Arc::clone(cache), driven, store, max_event));
            Ok(match own {
                Some(copy) => Answer::Detached(copy),
                None => Answer::Events(Bytes::new()),
            })
        }
        Answer::Whole {
            status,
            content_type,
            body,
            usage,
        } => {
            let mut meta = meta;
            if let Some(u) = &usage {
                meta.set_usage(u);
                meta.cost_nano_usd = dep.price.as_ref().map_or(0, |p| cache::cost_nano_usd(p, u));
            }
            meta.latency_ms = call.started.elapsed().as_millis() as u64;
            meta.created_ms = cache::unix_ms();
            let is_json = status == StatusCode::OK
                && content_type.as_bytes().starts_with(b"application/json");
            let entry = Entry {
                meta,
                body: body.clone(),
            };
            if plan.store && is_json {
                store(cache, *leader.key(), &entry, plan);
            }
            if is_json {
                leader.done(Arc::new(entry));
            } else {
                leader.fail();
            }
            Ok(Answer::Whole {
                status,
                content_type,
                body,
                usage,
            })
        }
        Answer::Piped {
            content_type,
            content_length,
            body,
        } => {
            let mut meta = meta;
            meta.content_type = content_type.to_str().ok().map(str::to_string);
            meta.cost_nano_usd = speech_units_nano_usd(dep.price.as_ref(), call.view);
            let keep = audio_cache::Keep {
                cache: Arc::clone(cache),
                leader,
                store: plan.store,
                ttl: plan.ttl,
                max_bytes: plan.max_bytes,
                meta,
                started: call.started,
            };
            Ok(Answer::Piped {
                content_type,
                content_length,
                body: Box::new(audio_cache::Tee::new(body, keep)),
            })
        }
        other => Ok(other),
    }
}

/// The content type of speech's events, kept in their entry's metadata: such an entry is
/// replayed as the events it holds.
const EVENTS: &str = "text/event-stream";

/// What speech costs by its request's characters (a cache hit saves it).
fn speech_units_nano_usd(price: Option<&Price>, view: &View<'_>) -> u64 {
    match (price, view) {
        (Some(p), View::Media(m)) => p.units_nano_usd(&Billed {
            characters: m.units.characters,
            audio_ms: 0,
            images: 0,
            image_size: None,
            image_quality: None,
            request: true,
        }),
        _ => 0,
    }
}

/// What to store when a streamed answer ends.
struct StreamStore {
    leader: Leader,
    /// Known when the stream started; usage and latency are filled at the end.
    meta: Meta,
    plan: StorePlan,
    price: Option<Price>,
    /// What the answer costs besides its tokens (speech's characters).
    units_nano_usd: u64,
    started: Instant,
}

/// Drives a leader's upstream stream for every client of its flight, assembles it, and
/// stores it if it ended cleanly. Ends early, dropping (so cancelling) the upstream stream,
/// when every client has gone.
async fn drive(cache: Arc<Cache>, mut stream: Guarded, store: StreamStore, max_event: usize) {
    let flight = Arc::clone(store.leader.flight());
    let mut scanner = SseScanner::new(max_event);
    let mut assembler = match store.plan.op {
        Operation::Completion => Assembling::Text(TextAssembler::default()),
        Operation::Speech => Assembling::Events(Some(Vec::new())),
        _ => Assembling::Chat(Assembler::default()),
    };
    let mut abandoned = false;
    loop {
        tokio::select! {
            biased;
            () = flight.gone() => {
                if flight.abandoned() {
                    abandoned = true;
                    break;
                }
            }
            frame = stream.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if store.plan.store
                            && !assembler.data(&mut scanner, &data, store.plan.max_bytes)
                        {
                            cache.metrics.too_large.fetch_add(1, Relaxed);
                        }
                        flight.push(data);
                    }
                }
                None => break,
                // The stream ended its request as it aborted (see `Guarded`).
                Some(Err(_)) => break,
            }
        }
    }
    let ended = stream.ended().filter(|e| !abandoned && e.status == 200);
    drop(stream);
    let Some(end) = ended else {
        store.leader.fail();
        return;
    };
    let mut meta = store.meta;
    meta.set_usage(&end.usage);
    meta.cost_nano_usd = store
        .price
        .map_or(0, |p| cache::cost_nano_usd(&p, &end.usage))
        .saturating_add(store.units_nano_usd);
    meta.latency_ms = store.started.elapsed().as_millis() as u64;
    meta.created_ms = cache::unix_ms();
    let body = if store.plan.store {
        assembler.finish(&end.usage)
    } else {
        None
    };
    match body {
        Some(body) => {
            let entry = Entry { meta, body };
            self::store(&cache, *store.leader.key(), &entry, store.plan);
            store.leader.done(Arc::new(entry));
        }
        None => store.leader.fail(),
    }
}

/// A stream assembled into its entry's form.
enum Assembling {
    Chat(Assembler),
    Text(TextAssembler),
    /// Speech's events, kept as sent: a replay rebuilt from their audio would cut its
    /// `speech.audio.delta` events differently. `None` once past the entry bound.
    Events(Option<Vec<u8>>),
}

impl Assembling {
    /// Takes a piece of the stream; `false` when it took the copy past `max_bytes` (the
    /// copy is dropped: the answer is not stored).
    fn data(&mut self, scanner: &mut SseScanner, data: &Bytes, max_bytes: u64) -> bool {
        let mut event = |a: &mut dyn FnMut(&[u8])| {
            let _ = scanner.push(data.clone(), |ev| {
                a(ev);
                Keep::Yes
            });
        };
        match self {
            Self::Chat(a) => event(&mut |ev| a.event(ev)),
            Self::Text(a) => event(&mut |ev| a.event(ev)),
            Self::Events(None) => {}
            Self::Events(Some(copy)) => {
                if (copy.len() + data.len()) as u64 > max_bytes {
                    *self = Self::Events(None);
                    return false;
                }
                copy.extend_from_slice(data);
            }
        }
        true
    }

    fn finish(self, usage: &sluice_types::Usage) -> Option<Bytes> {
        match self {
            Self::Chat(a) => a.finish(usage),
            Self::Text(a) => a.finish(usage),
            Self::Events(copy) => copy.map(Bytes::from),
        }
    }
}
