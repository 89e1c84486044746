//! Dynamic batching: one thread per loaded encoder model (embeddings, reranking) takes
//! requests from a bounded queue and runs the inputs of many requests as one batch.
//!
//! The thread takes the first waiting request, then every request already waiting, up to
//! `max_batch` inputs. If that leaves room, it waits up to `max_wait` (counted from the first
//! request's arrival at the thread) for more, unless the previous batch held one request and
//! no other is waiting: a lone client pays no wait. Each caller gets its own rows back, in
//! order. A request whose inputs exceed `max_batch` runs whole, as successive batches of at
//! most `max_batch` inputs. A full queue refuses at once with [`ErrorKind::QueueFull`] (the
//! server's 503 with `Retry-After`). Each answer says how long its request waited, from
//! its submission to the start of the batch that ran it.
//!
//! What a model does with a batch is the [`Batched`] trait: tokenize a request into inputs,
//! run inputs as one batch (a row each), assemble a request's answer from its rows. The
//! `Embedder` (embeddings) and `Reranker` (cross-encoder scores) are thin typed fronts over a
//! [`Batcher`] of their model.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::{Error, ErrorKind, Result};

/// Batching settings (per model, from `[local]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Inputs per batch at most.
    pub max_batch: usize,
    /// Longest wait for more requests once one is there.
    pub max_wait: Duration,
    /// Requests that may wait; more are refused.
    pub queue: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::from_millis(2),
            queue: 256,
        }
    }
}

/// What a [`Batcher`] runs: requests tokenized into inputs, inputs encoded many at a time.
pub(crate) trait Batched: Send + Sync + 'static {
    /// One caller's request (texts to embed; a query and its documents).
    type Request: Send + 'static;
    /// One input, tokenized.
    type Tokens: Send + 'static;
    /// What one input yields (a vector; a score).
    type Row: Send + 'static;
    /// One request's answer.
    type Output: Send + 'static;

    /// The batching thread's name.
    const THREAD: &'static str;

    /// Inputs the request holds (what [`BatchOptions::max_batch`] counts).
    fn inputs(request: &Self::Request) -> usize;

    /// Tokenizes a request: one sequence per input.
    fn tokenize(&self, request: Self::Request) -> Result<Vec<Self::Tokens>>;

    /// Tokens of one tokenized input, as the encoder sees them.
    fn token_count(tokens: &Self::Tokens) -> usize;

    /// Runs inputs as one batch: one row per input, in order.
    fn run(&self, batch: &[&Self::Tokens]) -> Result<Vec<Self::Row>>;

    /// A request's answer from its rows (in order), its tokens, and how long it waited
    /// in the queue for its batch.
    fn answer(rows: Vec<Self::Row>, prompt_tokens: usize, queue_wait: Duration) -> Self::Output;
}

/// Counters of a batching thread (an `Embedder`'s or a `Reranker`'s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches run.
    pub batches: u64,
    /// Requests answered.
    pub requests: u64,
    /// Inputs run (texts embedded, documents scored).
    pub inputs: u64,
    /// Requests waiting now.
    pub queued: usize,
}

/// The counters of an `Embedder`.
pub type EmbedderStats = BatchStats;

struct Job<M: Batched> {
    request: M::Request,
    inputs: usize,
    arrived: Instant,
    reply: oneshot::Sender<Result<M::Output>>,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    requests: AtomicU64,
    inputs: AtomicU64,
    queued: AtomicUsize,
}

/// A model behind its batching thread. Dropping it stops the thread once the requests
/// already queued are answered.
pub(crate) struct Batcher<M: Batched> {
    model: Arc<M>,
    tx: SyncSender<Job<M>>,
    options: BatchOptions,
    counters: Arc<Counters>,
}

// === impl Batcher ===

impl<M: Batched> Batcher<M> {
    /// Starts the batching thread for `model`.
    pub(crate) fn new(model: M, options: BatchOptions) -> Result<Self> {
        let options = BatchOptions {
            max_batch: options.max_batch.max(1),
            queue: options.queue.max(1),
            ..options
        };
        let model = Arc::new(model);
        let (tx, rx) = std::sync::mpsc::sync_channel(options.queue);
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            model: model.clone(),
            rx,
            options,
            counters: counters.clone(),
        };
        std::thread::Builder::new()
            .name(M::THREAD.into())
            .spawn(move || worker.run())
            .map_err(|e| {
                ErrorKind::Internal(format!("cannot start the `{}` thread: {e}", M::THREAD))
            })?;
        Ok(Self {
            model,
            tx,
            options,
            counters,
        })
    }

    /// The model.
    pub(crate) fn model(&self) -> &M {
        &self.model
    }

    /// The settings in force.
    pub(crate) fn options(&self) -> BatchOptions {
        self.options
    }

    /// Counters since start.
    pub(crate) fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
            inputs: self.counters.inputs.load(Ordering::Relaxed),
            queued: self.counters.queued.load(Ordering::Relaxed),
        }
    }

    /// Queues `request`; refuses at once with [`ErrorKind::QueueFull`] when the queue is full.
    pub(crate) fn submit(
        &self,
        request: M::Request,
    ) -> Result<impl std::future::Future<Output = Result<M::Output>> + Send + 'static> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs: M::inputs(&request),
            request,
            arrived: Instant::now(),
            reply,
        };
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.tx.try_send(job) {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(match e {
                TrySendError::Full(_) => ErrorKind::QueueFull {
                    capacity: self.options.queue,
                }
                .into(),
                TrySendError::Disconnected(_) => ErrorKind::Unloaded.into(),
            });
        }
        Ok(async move {
            answer.await.unwrap_or_else(|_| {
                Err(ErrorKind::Internal(format!("the `{}` thread ended", M::THREAD)).into())
            })
        })
    }
}

struct Worker<M: Batched> {
    model: Arc<M>,
    rx: Receiver<Job<M>>,
    options: BatchOptions,
    counters: Arc<Counters>,
}

impl<M: Batched> Worker<M> {
    fn run(self) {
        let mut previous_jobs = 1;
        while let Ok(first) = self.rx.recv() {
            let deadline = first.arrived + self.options.max_wait;
            let mut inputs = first.inputs;
            let mut jobs = vec![first];
            while inputs < self.options.max_batch {
                match self.rx.try_recv() {
                    Ok(job) => {
                        inputs += job.inputs;
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            let concurrent = jobs.len() > 1 || previous_jobs > 1;
            while concurrent && inputs < self.options.max_batch {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                match self.rx.recv_timeout(left) {
                    Ok(job) => {
                        inputs += job.inputs;
                        jobs.push(job);
                    }
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            self.counters
                .queued
                .fetch_sub(jobs.len(), Ordering::Relaxed);
            previous_jobs = jobs.len();
            self.run_batch(jobs);
        }
    }

    fn run_batch(&self, jobs: Vec<Job<M>>) {
        let model = &*self.model;
        let started = Instant::now();
        // Tokenize; a job whose input fails is answered alone.
        let mut ready = Vec::with_capacity(jobs.len());
        for job in jobs {
            let waited = started.saturating_duration_since(job.arrived);
            match model.tokenize(job.request) {
                Ok(tokens) => ready.push((job.reply, tokens, waited)),
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        let all: Vec<&M::Tokens> = ready.iter().flat_map(|(_, t, _)| t.iter()).collect();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut rows = Vec::with_capacity(all.len());
            for chunk in all.chunks(self.options.max_batch) {
                rows.extend(model.run(chunk)?);
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, Error>(rows)
        }))
        .unwrap_or_else(|p| Err(crate::error::panic_error(M::THREAD, &*p)));
        self.counters
            .inputs
            .fetch_add(all.len() as u64, Ordering::Relaxed);
        self.counters
            .requests
            .fetch_add(ready.len() as u64, Ordering::Relaxed);
        match result {
            Ok(rows) => {
                let mut rows = rows.into_iter();
                for (reply, tokens, waited) in ready {
                    let prompt_tokens = tokens.iter().map(M::token_count).sum();
                    let mine = rows.by_ref().take(tokens.len()).collect();
                    let _ = reply.send(Ok(M::answer(mine, prompt_tokens, waited)));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for (reply, _, _) in ready {
                    let _ = reply.send(Err(ErrorKind::Backend(message.clone()).into()));
                }
            }
        }
    }
}
