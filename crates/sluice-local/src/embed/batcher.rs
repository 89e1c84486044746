//! Dynamic batching: one thread per loaded embedding model takes requests from a bounded
//! queue and runs the inputs of many requests as one batch.
//!
//! The thread takes the first waiting request, then every request already waiting, up to
//! `max_batch` inputs. If that leaves room, it waits up to `max_wait` (counted from the first
//! request's arrival at the thread) for more, unless the previous batch held one request and
//! no other is waiting: a lone client pays no wait. Each caller gets its own rows back, in
//! order. A request whose inputs exceed `max_batch` runs whole, as successive batches of at
//! most `max_batch` inputs. A full queue refuses at once with [`ErrorKind::QueueFull`] (the
//! server's 503 with `Retry-After`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::model::EmbedModel;
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

/// One request's answer: a vector per input, and the tokens they took.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedOutput {
    /// One vector per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of all inputs after truncation, special tokens included.
    pub prompt_tokens: usize,
}

/// Counters of an [`Embedder`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmbedderStats {
    /// Batches run.
    pub batches: u64,
    /// Requests answered.
    pub requests: u64,
    /// Inputs embedded.
    pub inputs: u64,
    /// Requests waiting now.
    pub queued: usize,
}

struct Job {
    texts: Vec<String>,
    arrived: Instant,
    reply: oneshot::Sender<Result<EmbedOutput>>,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    requests: AtomicU64,
    inputs: AtomicU64,
    queued: AtomicUsize,
}

/// An [`EmbedModel`] behind its batching thread. Dropping it stops the thread once the
/// requests already queued are answered.
pub struct Embedder {
    model: Arc<EmbedModel>,
    tx: SyncSender<Job>,
    options: BatchOptions,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &self.model)
            .field("options", &self.options)
            .finish()
    }
}

impl Embedder {
    /// Starts the batching thread for `model`.
    pub fn new(model: EmbedModel, options: BatchOptions) -> Result<Self> {
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
            .name("sluice-embed".into())
            .spawn(move || worker.run())
            .map_err(|e| ErrorKind::Internal(format!("cannot start the embedding thread: {e}")))?;
        Ok(Self {
            model,
            tx,
            options,
            counters,
        })
    }

    /// The model.
    pub fn model(&self) -> &EmbedModel {
        &self.model
    }

    /// The settings in force.
    pub fn options(&self) -> BatchOptions {
        self.options
    }

    /// Counters since start.
    pub fn stats(&self) -> EmbedderStats {
        EmbedderStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
            inputs: self.counters.inputs.load(Ordering::Relaxed),
            queued: self.counters.queued.load(Ordering::Relaxed),
        }
    }

    /// Queues `texts`; refuses at once with [`ErrorKind::QueueFull`] when the queue is full.
    /// The returned future resolves to one vector per text.
    pub fn submit(
        &self,
        texts: Vec<String>,
    ) -> Result<impl std::future::Future<Output = Result<EmbedOutput>> + Send + 'static> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            texts,
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
                Err(ErrorKind::Internal("embedding thread ended".into()).into())
            })
        })
    }

    /// [`Self::submit`] and wait.
    pub async fn embed(&self, texts: Vec<String>) -> Result<EmbedOutput> {
        self.submit(texts)?.await
    }
}

struct Worker {
    model: Arc<EmbedModel>,
    rx: Receiver<Job>,
    options: BatchOptions,
    counters: Arc<Counters>,
}

impl Worker {
    fn run(self) {
        let mut previous_jobs = 1;
        while let Ok(first) = self.rx.recv() {
            let deadline = first.arrived + self.options.max_wait;
            let mut inputs = first.texts.len();
            let mut jobs = vec![first];
            while inputs < self.options.max_batch {
                match self.rx.try_recv() {
                    Ok(job) => {
                        inputs += job.texts.len();
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
                        inputs += job.texts.len();
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

    fn run_batch(&self, jobs: Vec<Job>) {
        let model = &*self.model;
        // Tokenize; a job whose text fails is answered alone.
        let mut ready = Vec::with_capacity(jobs.len());
        for job in jobs {
            let tokens: Result<Vec<Vec<u32>>> =
                job.texts.iter().map(|t| model.tokenize(t)).collect();
            match tokens {
                Ok(tokens) => ready.push((job.reply, tokens)),
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        let all: Vec<&[u32]> = ready
            .iter()
            .flat_map(|(_, t)| t.iter().map(Vec::as_slice))
            .collect();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut vectors = Vec::with_capacity(all.len());
            for chunk in all.chunks(self.options.max_batch) {
                vectors.extend(model.embed_tokens(chunk)?);
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, Error>(vectors)
        }))
        .unwrap_or_else(|p| Err(crate::error::panic_error("the embedding batch", &*p)));
        self.counters
            .inputs
            .fetch_add(all.len() as u64, Ordering::Relaxed);
        self.counters
            .requests
            .fetch_add(ready.len() as u64, Ordering::Relaxed);
        match result {
            Ok(vectors) => {
                let mut vectors = vectors.into_iter();
                for (reply, tokens) in ready {
                    let prompt_tokens = tokens.iter().map(Vec::len).sum();
                    let mine = vectors.by_ref().take(tokens.len()).collect();
                    let _ = reply.send(Ok(EmbedOutput {
                        vectors: mine,
                        prompt_tokens,
                    }));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for (reply, _) in ready {
                    let _ = reply.send(Err(ErrorKind::Backend(message.clone()).into()));
                }
            }
        }
    }
}
