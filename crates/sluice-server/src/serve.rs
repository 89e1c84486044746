//! The accept loop and graceful shutdown.
//!
//! Every connection is served by sluice's own HTTP/1.1 server (`front`: keep-alive, no
//! buffer held between requests), or by hyper's HTTP/2 server when its first bytes are
//! HTTP/2's preface (prior knowledge), and watched for graceful shutdown: on the signal the connections waiting in the accept queue are taken and the
//! listener closes, in-flight requests (streams included, and the requests of connections
//! taken before they arrived) finish (see `drain`), and whatever is still running after
//! `server.shutdown_grace_ms` is cut. Batches
//! run on the acceptor's runtime (`batches::executor`); on the signal they stop starting
//! lines, and their lines in flight finish and are recorded within the same grace. So do
//! streamed answers' webhooks and the spend records waiting for them: each worker thread
//! waits for them before its runtime ends. One grace period, from the signal, bounds it all.

use crate::admission::Admission;
use crate::drain::{self, Drain, FirstRead};
use crate::front::{self, Handler, Served};
use crate::live::Live;
use crate::response::ResponseBody;
use crate::router::route;
use crate::state::AppState;
use crate::trim::{self, Load, Release};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sluice_core::config::Config;
use sluice_providers::slots::Slot;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// A bound, not yet running, gateway.
pub struct Server {
    listener: TcpListener,
    live: Arc<Live>,
    workers: usize,
    release: Option<Release>,
}

/// A connection accepted by the acceptor, on its way to a worker, with its connection slot
/// (none for one taken from the accept queue at shutdown).
type Handoff = (std::net::TcpStream, Option<OwnedSemaphorePermit>);

/// What a worker's connections share: the handler of their requests, and the settings.
#[derive(Clone)]
struct Front {
    handler: Arc<Handler>,
    live: Arc<Live>,
    head_timeout: Duration,
}

impl Front {
    fn new(live: &Arc<Live>) -> Self {
        let state = live.get();
        let for_requests = Arc::clone(live);
        // Each request takes the state current when it arrives (see `live`).
        let handler: Handler = Box::new(move |req| {
            let state = for_requests.get();
            Box::pin(async move {
                let admitted = admitted(&state, &req, || req.body().shrink()).await;
                match admitted {
                    Ok(slot) => answer(state, req, slot).await,
                    Err(refused) => refused,
                }
            })
        });
        Self {
            handler: Arc::new(handler),
            live: Arc::clone(live),
            head_timeout: state.server.request_read_timeout,
        }
    }
}

/// A slot of `server.max_requests_in_flight` for a request held to it (`Ok(None)` for the
/// others, and without a bound), or the 503 of one that waited too long; `waits` runs
/// when it must wait.
async fn admitted<B>(
    state: &AppState,
    req: &http::Request<B>,
    waits: impl FnOnce(),
) -> Result<Option<Slot>, http::Response<ResponseBody>> {
    if !Admission::holds(req) {
        return Ok(None);
    }
    state
        .admission
        .admit(&state.metrics, waits)
        .await
        .map_err(|e| crate::response::error_response(&e))
}

/// The request's answer, its route's future boxed (made only now that it runs: a request
/// waiting for its slot holds a few hundred bytes), holding `slot` until the answer ended.
async fn answer<B: crate::request_body::ClientBody>(
    state: Arc<AppState>,
    req: http::Request<B>,
    slot: Option<Slot>,
) -> http::Response<ResponseBody> {
    let response = match Box::pin(route(state, req)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    match slot {
        Some(slot) => response.map(|body| body.holding(slot)),
        None => response,
    }
}

/// Serves one connection on the current runtime; `permit` holds its connection slot.
fn serve_connection(
    front: &Front,
    drain: &Drain,
    load: &Arc<Load>,
    stream: TcpStream,
    permit: Option<OwnedSemaphorePermit>,
) {
    let _ = stream.set_nodelay(true);
    front.live.get().metrics.connections.fetch_add(1, Relaxed);
    load.opened();
    let load = Arc::clone(load);
    let front = front.clone();
    let signal = drain.subscribe();
    tokio::spawn(async move {
        let served = front::serve(stream, signal.clone(), front.head_timeout, &front.handler).await;
        if let Served::Http2(stream) = served {
            // Boxed: hyper's HTTP/2 connection state is not held in every connection's task.
            Box::pin(http2(stream, signal, &front.live)).await;
        }
        load.closed();
        drop(permit);
    });
}

/// Serves an HTTP/2 (prior knowledge) connection with hyper, watched by the drain.
async fn http2(
    stream: front::Rewind,
    signal: tokio::sync::watch::Receiver<bool>,
    live: &Arc<Live>,
) {
    let live = Arc::clone(live);
    // Not held to `server.max_requests_in_flight` (see `admission`): its future is boxed
    // here, as the request runs at once.
    let service = service_fn(move |req| {
        let state = live.get();
        async move { Ok::<_, std::convert::Infallible>(answer(state, req, None).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    drain::watch(signal, conn, FirstRead::done(), |conn| {
        conn.graceful_shutdown()
    })
    .await;
}

/// Serves the connections waiting in `listener`'s accept queue, then closes it.
fn serve_queued(
    listener: TcpListener,
    slots: &Arc<Semaphore>,
    mut serve: impl FnMut(std::net::TcpStream, Option<OwnedSemaphorePermit>),
) {
    let queued = drain::take_queued(listener);
    if !queued.is_empty() {
        tracing::debug!(
            connections = queued.len(),
            "serving the accept queue before the drain"
        );
    }
    for stream in queued {
        serve(stream, Arc::clone(slots).try_acquire_owned().ok());
    }
}

/// Waits for in-flight requests for up to what is left of the grace period.
async fn drain(drain: Drain, state: &AppState, shutdown: Shutdown) {
    if !drain.shutdown(shutdown.left()).await {
        tracing::warn!(
            in_flight = state.metrics.in_flight.load(Relaxed),
            "grace period over: cutting the requests still in flight"
        );
    }
}

/// Accepts the next connection, or `None` once `shutdown` fired.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let permit = tokio::select! {
        p = Arc::clone(slots).acquire_owned() => p.ok()?,
        () = shutdown.as_mut() => return None,
    };
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => return Some((stream, permit)),
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            () = shutdown.as_mut() => return None,
        }
    }
}

/// Starts the task that ends each minute of the overview's history (see `history`) in the
/// state `live` serves.
fn spawn_history(live: &Arc<Live>) -> tokio::task::JoinHandle<()> {
    let live = Arc::clone(live);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(crate::history::to_next_minute()).await;
            let state = live.get();
            let minute = crate::history::now_minute();
            state
                .history
                .turn(&state.metrics, state.kept_counts(), minute);
        }
    })
}

/// Starts worker `index`'s watch over its load (see `trim`), on the current runtime.
fn watch_load(live: &Arc<Live>, index: usize, release: Option<Release>) -> Arc<Load> {
    let load = Arc::new(Load::default());
    tokio::spawn(trim::watch(
        Arc::clone(&load),
        Arc::clone(live),
        index,
        release,
    ));
    load
}

/// One worker thread: its own single-threaded runtime serving the connections handed to it.
async fn worker(
    mut incoming: mpsc::UnboundedReceiver<Handoff>,
    live: Arc<Live>,
    index: usize,
    release: Option<Release>,
    began: Arc<OnceLock<Shutdown>>,
) {
    let front = Front::new(&live);
    let connections = Drain::new();
    let load = watch_load(&live, index, release);
    // The acceptor drops its sender on shutdown, which ends this loop.
    while let Some((stream, permit)) = incoming.recv().await {
        match TcpStream::from_std(stream) {
            Ok(stream) => serve_connection(&front, &connections, &load, stream, permit),
            Err(e) => tracing::warn!(error = %e, "cannot register connection"),
        }
    }
    // The acceptor's grace period, set before it let go of this loop.
    let shutdown = began
        .get()
        .copied()
        .unwrap_or_else(|| Shutdown::began(&live.get()));
    let state = live.get();
    drain(connections, &state, shutdown).await;
    // What this thread's requests left running on its runtime (streamed answers' webhooks,
    // the spend records waiting for them) ends before the runtime does, within the grace.
    if !shutdown.settle(&state).await {
        tracing::warn!(
            worker = index,
            "streamed answers' webhooks still unanswered at shutdown: their records are lost"
        );
    }
    // This thread's last settles go to Redis before its runtime ends.
    state.limiter.flush(LIMITER_FLUSH).await;
}

/// A shutdown's one grace period (`server.shutdown_grace_ms`), counted from its start: the
/// drain and the lingering work after it share it.
#[derive(Clone, Copy)]
struct Shutdown {
    until: tokio::time::Instant,
}

impl Shutdown {
    fn began(state: &AppState) -> Self {
        Self {
            until: tokio::time::Instant::now() + state.server.shutdown_grace,
        }
    }

    /// Waits, until the grace period ends, for streamed answers' webhooks and the spend
    /// records waiting for their verdicts; returns whether they all ended.
    async fn settle(self, state: &AppState) -> bool {
        state.lingering.settle(self.left()).await
    }

    /// What is left of the grace period.
    fn left(self) -> std::time::Duration {
        self.until
            .saturating_duration_since(tokio::time::Instant::now())
    }
}

impl Server {
    /// Builds the state and binds the listener (`server.listen`), for one worker.
    pub async fn bind(config: Config) -> io::Result<Self> {
        Self::bind_with_workers(config, 1).await
    }

    /// Builds the state with one upstream connection pool per worker and binds the listener.
    pub async fn bind_with_workers(config: Config, workers: usize) -> io::Result<Self> {
        let workers = workers.max(1);
        std::fs::create_dir_all(&config.storage.data_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create data directory `{}`: {e}",
                    config.storage.data_dir.display()
                ),
            )
        })?;
        let listen = config.server.listen;
        let state = AppState::new(config, workers).map_err(|e| io::Error::other(e.to_string()))?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
        Ok(Self {
            listener,
            live: Arc::new(Live::new(Arc::new(state))),
            workers,
            release: None,
        })
    }

    /// When a burst of connections is over, each worker calls `release` on its thread to hand
    /// its allocator's free memory back (see `trim`).
    pub fn release_memory_with(mut self, release: Release) -> Self {
        self.release = Some(release);
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The state serving now.
    pub fn state(&self) -> Arc<AppState> {
        self.live.get()
    }

    /// The live state, to reload the config with ([`Live::reload`]).
    pub fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live)
    }

    /// Serves on the current runtime until `shutdown` completes, then drains in-flight
    /// requests for up to `server.shutdown_grace_ms`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Self {
            listener,
            live,
            release,
            ..
        } = self;
        let state = live.get();
        let front = Front::new(&live);
        let connections = Drain::new();
        // One runtime serves everything: its requests use the pools of the threads that are
        // no worker's, which are the ones to shrink.
        let load = watch_load(&live, sluice_providers::NOT_A_WORKER, release);
        let slots = Arc::new(Semaphore::new(state.server.max_connections));
        let flusher = spawn_flusher(&live);
        let batches = spawn_batches(&live);
        let checks = crate::health_check::spawn(&live);
        let history = spawn_history(&live);
        let arenas = release.map(|r| tokio::spawn(trim::trim_arenas(r, trim::ARENA_TICK)));
        tokio::pin!(shutdown);
        while let Some((stream, permit)) = accept(&listener, &slots, &mut shutdown).await {
            serve_connection(&front, &connections, &load, stream, Some(permit));
        }
        checks.abort();
        history.abort();
        if let Some(arenas) = &arenas {
            arenas.abort();
        }
        let shutdown = log_shutdown(&live.get());
        serve_queued(
            listener,
            &slots,
            |stream, permit| match TcpStream::from_std(stream) {
                Ok(s) => serve_connection(&front, &connections, &load, s, permit),
                Err(e) => tracing::warn!(error = %e, "cannot register connection"),
            },
        );
        let state = live.get();
        tokio::join!(
            drain(connections, &state, shutdown),
            stop_batches(&state, batches, shutdown)
        );
        finish(&state, flusher, shutdown).await;
        Ok(())
    }

    /// Serves with one thread per worker, each running its own single-threaded runtime and
    /// its own upstream pools, so that a request and its upstream connection never wake
    /// another thread. This task accepts connections and hands them out round-robin; on
    /// `shutdown` it stops, and every worker drains its in-flight requests.
    pub async fn run_workers(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        if self.workers == 1 {
            return self.run(shutdown).await;
        }
        let Self {
            listener,
            live,
            workers,
            release,
        } = self;
        let state = live.get();
        let began: Arc<OnceLock<Shutdown>> = Arc::default();
        let mut senders = Vec::with_capacity(workers);
        let mut threads = Vec::with_capacity(workers);
        for index in 0..workers {
            let (tx, rx) = mpsc::unbounded_channel::<Handoff>();
            let live = Arc::clone(&live);
            let began = Arc::clone(&began);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sluice-worker-{index}"))
                    .spawn(move || {
                        sluice_providers::set_worker(index);
                        runtime.block_on(worker(rx, live, index, release, began));
                    })?,
            );
            senders.push(tx);
        }
        let slots = Arc::new(Semaphore::new(state.server.max_connections));
        let flusher = spawn_flusher(&live);
        let batches = spawn_batches(&live);
        let checks = crate::health_check::spawn(&live);
        let history = spawn_history(&live);
        let arenas = release.map(|r| tokio::spawn(trim::trim_arenas(r, trim::ARENA_TICK)));
        tokio::pin!(shutdown);
        let mut next = 0;
        while let Some((stream, permit)) = accept(&listener, &slots, &mut shutdown).await {
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand over connection");
                    continue;
                }
            };
            if senders[next].send((stream, Some(permit))).is_err() {
                tracing::error!(worker = next, "worker thread is gone");
            }
            next = (next + 1) % workers;
        }
        checks.abort();
        history.abort();
        if let Some(arenas) = &arenas {
            arenas.abort();
        }
        let shutdown = log_shutdown(&live.get());
        let _ = began.set(shutdown);
        serve_queued(listener, &slots, |stream, permit| {
            if senders[next].send((stream, permit)).is_err() {
                tracing::error!(worker = next, "worker thread is gone");
            }
            next = (next + 1) % workers;
        });
        drop(senders);
        let state = live.get();
        let workers = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        let (joined, ()) = tokio::join!(workers, stop_batches(&state, batches, shutdown));
        joined.map_err(io::Error::other)?;
        finish(&state, flusher, shutdown).await;
        Ok(())
    }
}

/// Every second, sends the cache's counters to its store (where `sluice cache stats`
/// reads them) and reads the semantic index's records the other replicas added to it, unloads the local models whose keep-alive ran out, and shares the routes'
/// canary states with the other replicas (without Redis: keeps them in `routing.sqlite`);
/// every minute, reads the keys' budget use from
/// the spend log (`sluice_key_budget_used_ratio`); at start, loads the local models marked
/// `preload` and takes the fleet's canary states.
fn spawn_flusher(live: &Arc<Live>) -> Option<tokio::task::JoinHandle<()>> {
    let state = live.get();
    if state.cache.is_none()
        && state.local.is_none()
        && state.shared_routing.is_none()
        && !state.keeps_canaries()
        && state.ledger.is_none()
    {
        return None;
    }
    let live = Arc::clone(live);
    Some(tokio::spawn(async move {
        if let Some(local) = &state.local {
            crate::local::preload(local);
        }
        drop(state);
        let mut tick = tokio::time::interval(crate::shared_routing::SYNC_INTERVAL);
        loop {
            tick.tick().await;
            let state = live.get();
            state.sync_routing().await;
            if let Some(cache) = &state.cache {
                cache.flush_counters();
                cache.sync_index().await;
            }
            if let Some(local) = &state.local {
                crate::local::sweep(local);
            }
            if let Some(ledger) = &state.ledger {
                let budgets = &state.tab_metrics.budget_use;
                budgets
                    .refresh_if_due(ledger, sluice_store::unix_now_ms())
                    .await;
            }
        }
    }))
}

/// Runs the batches' executor, when batches are on.
fn spawn_batches(live: &Arc<Live>) -> Option<tokio::task::JoinHandle<()>> {
    live.get().batches.as_ref()?;
    Some(tokio::spawn(crate::batches::executor::run(Arc::clone(
        live,
    ))))
}

/// Stops the batches: no line starts; the lines in flight finish and are recorded, within
/// the shutdown grace (after it they are cut, and run again at the next start).
async fn stop_batches(
    state: &AppState,
    executor: Option<tokio::task::JoinHandle<()>>,
    shutdown: Shutdown,
) {
    let (Some(batches), Some(mut executor)) = (&state.batches, executor) else {
        return;
    };
    batches.stop();
    if tokio::time::timeout(shutdown.left(), &mut executor)
        .await
        .is_err()
    {
        tracing::warn!("grace period over: cutting the batch lines still in flight");
        executor.abort();
    }
}

/// How long a shutdown waits for the limiter's queued settles to reach Redis.
const LIMITER_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// After the drain: the last counters and every pending store write reach the store.
async fn finish(
    state: &AppState,
    flusher: Option<tokio::task::JoinHandle<()>>,
    shutdown: Shutdown,
) {
    if let Some(f) = flusher {
        f.abort();
    }
    // The canaries' last changes reach Redis or the canaries' file.
    state.sync_routing().await;
    // The limits' last settles reach Redis (those the workers' runtimes had no time to send).
    if !state.limiter.flush(LIMITER_FLUSH).await {
        tracing::warn!("limiter: settles still queued at shutdown were not sent");
    }
    if let Some(c) = &state.cache {
        c.flush().await;
    }
    // Streamed answers' webhooks, and the spend records waiting for their verdicts.
    if !shutdown.settle(state).await {
        tracing::warn!(
            "streamed answers' webhooks still unanswered at shutdown: their records are lost"
        );
    }
    if let Some(l) = &state.ledger {
        l.flush().await;
        tracing::info!(
            written = l.written(),
            dropped = l.dropped(),
            failed = l.errors(),
            "spend log flushed"
        );
    }
    // The last requests' spans reach the OTLP receiver.
    if let Some(t) = &state.tracer {
        t.flush(TRACE_FLUSH_TIMEOUT).await;
    }
    // The last sampled payloads reach their store.
    if let Some(s) = &state.samples {
        s.writer().flush(TRACE_FLUSH_TIMEOUT).await;
    }
}

/// Longest wait at shutdown for the last spans to be exported (and for the last samples
/// to be written).
const TRACE_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The shutdown began: `/health/ready` says `draining` from now on.
fn log_shutdown(state: &AppState) -> Shutdown {
    state.draining.store(true, Relaxed);
    tracing::info!(
        in_flight = state.metrics.in_flight.load(Relaxed),
        grace_ms = state.server.shutdown_grace.as_millis() as u64,
        "shutting down: finishing in-flight requests"
    );
    Shutdown::began(state)
}
