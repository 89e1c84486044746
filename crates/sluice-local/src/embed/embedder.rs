//! [`Embedder`]: an [`EmbedModel`] behind its batching thread; requests are lists of texts,
//! answers a vector per text.

use super::batcher::{BatchOptions, BatchStats, Batched, Batcher};
use super::model::EmbedModel;
use crate::Result;
use std::time::Duration;

/// One request's answer: a vector per input, and the tokens they took.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedOutput {
    /// One vector per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of all inputs after truncation, special tokens included.
    pub prompt_tokens: usize,
    /// How long the request waited in the model's queue for its batch to start.
    pub queue_wait: Duration,
}

impl Batched for EmbedModel {
    type Request = Vec<String>;
    type Tokens = Vec<u32>;
    type Row = Vec<f32>;
    type Output = EmbedOutput;

    const THREAD: &'static str = "sluice-embed";

    fn inputs(texts: &Vec<String>) -> usize {
        texts.len()
    }

    fn tokenize(&self, texts: Vec<String>) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| EmbedModel::tokenize(self, t))
            .collect()
    }

    fn token_count(tokens: &Vec<u32>) -> usize {
        tokens.len()
    }

    fn run(&self, batch: &[&Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let inputs: Vec<&[u32]> = batch.iter().map(|t| t.as_slice()).collect();
        self.embed_tokens(&inputs)
    }

    fn answer(vectors: Vec<Vec<f32>>, prompt_tokens: usize, queue_wait: Duration) -> EmbedOutput {
        EmbedOutput {
            vectors,
            prompt_tokens,
            queue_wait,
        }
    }
}

/// An [`EmbedModel`] behind its batching thread. Dropping it stops the thread once the
/// requests already queued are answered.
pub struct Embedder {
    batcher: Batcher<EmbedModel>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model", self.model())
            .field("options", &self.options())
            .finish()
    }
}

// === impl Embedder ===

impl Embedder {
    /// Starts the batching thread for `model`.
    pub fn new(model: EmbedModel, options: BatchOptions) -> Result<Self> {
        Ok(Self {
            batcher: Batcher::new(model, options)?,
        })
    }

    /// The model.
    pub fn model(&self) -> &EmbedModel {
        self.batcher.model()
    }

    /// The settings in force.
    pub fn options(&self) -> BatchOptions {
        self.batcher.options()
    }

    /// Counters since start.
    pub fn stats(&self) -> BatchStats {
        self.batcher.stats()
    }

    /// Queues `texts`; refuses at once with [`ErrorKind::QueueFull`](crate::ErrorKind::QueueFull)
    /// when the queue is full. The returned future resolves to one vector per text.
    pub fn submit(
        &self,
        texts: Vec<String>,
    ) -> Result<impl std::future::Future<Output = Result<EmbedOutput>> + Send + 'static> {
        self.batcher.submit(texts)
    }

    /// [`Self::submit`] and wait.
    pub async fn embed(&self, texts: Vec<String>) -> Result<EmbedOutput> {
        self.submit(texts)?.await
    }
}
