//! [`Reranker`]: a [`CrossEncoder`] behind the batching thread embeddings use. A request is a
//! query and its documents; each (query, document) pair is one input, so the pairs of
//! concurrent requests share batches.

use super::model::{CrossEncoder, PairTokens};
use crate::embed::batcher::{BatchOptions, BatchStats, Batched, Batcher};
use crate::error::RerankInputError;
use crate::{ErrorKind, Result};
use std::time::Duration;

/// Documents one request may hold at most.
pub const MAX_RERANK_DOCUMENTS: usize = 1000;

/// One request's answer: a score per document, and the tokens the encoder saw.
#[derive(Debug, Clone, PartialEq)]
pub struct RerankOutput {
    /// One score per document, in the documents' order (not sorted).
    pub scores: Vec<f32>,
    /// Tokens of all pairs as encoded (`[CLS] query [SEP] document [SEP]`, after truncation):
    /// the query counts once per document.
    pub prompt_tokens: usize,
    /// How long the request waited in the model's queue for its batch to start.
    pub queue_wait: Duration,
}

/// A query with its documents, checked.
pub(crate) struct RerankRequest {
    query: String,
    documents: Vec<String>,
}

impl Batched for CrossEncoder {
    type Request = RerankRequest;
    type Tokens = PairTokens;
    type Row = f32;
    type Output = RerankOutput;

    const THREAD: &'static str = "sluice-rerank";

    fn inputs(request: &RerankRequest) -> usize {
        request.documents.len()
    }

    fn tokenize(&self, request: RerankRequest) -> Result<Vec<PairTokens>> {
        let documents: Vec<&str> = request.documents.iter().map(String::as_str).collect();
        self.tokenize_pairs(&request.query, &documents)
    }

    fn token_count(tokens: &PairTokens) -> usize {
        tokens.ids.len()
    }

    fn run(&self, batch: &[&PairTokens]) -> Result<Vec<f32>> {
        self.score_tokens(batch)
    }

    fn answer(scores: Vec<f32>, prompt_tokens: usize, queue_wait: Duration) -> RerankOutput {
        RerankOutput {
            scores,
            prompt_tokens,
            queue_wait,
        }
    }
}

/// A [`CrossEncoder`] behind its batching thread. Dropping it stops the thread once the
/// requests already queued are answered.
pub struct Reranker {
    batcher: Batcher<CrossEncoder>,
}

impl std::fmt::Debug for Reranker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reranker")
            .field("model", self.model())
            .field("options", &self.options())
            .finish()
    }
}

// === impl Reranker ===

impl Reranker {
    /// Starts the batching thread for `model`; `options.max_batch` counts pairs.
    pub fn new(model: CrossEncoder, options: BatchOptions) -> Result<Self> {
        Ok(Self {
            batcher: Batcher::new(model, options)?,
        })
    }

    /// The model.
    pub fn model(&self) -> &CrossEncoder {
        self.batcher.model()
    }

    /// The settings in force.
    pub fn options(&self) -> BatchOptions {
        self.batcher.options()
    }

    /// Counters since start (`inputs` counts documents).
    pub fn stats(&self) -> BatchStats {
        self.batcher.stats()
    }

    /// Checks and queues a request. Refuses at once with [`ErrorKind::InvalidRerank`] (an
    /// empty query, no documents, more than [`MAX_RERANK_DOCUMENTS`]) or
    /// [`ErrorKind::QueueFull`]. The returned future resolves to a score per document.
    /// Empty documents are scored like any other.
    pub fn submit(
        &self,
        query: String,
        documents: Vec<String>,
    ) -> Result<impl std::future::Future<Output = Result<RerankOutput>> + Send + 'static> {
        let refuse = |why| Err(ErrorKind::InvalidRerank(why).into());
        if query.is_empty() {
            return refuse(RerankInputError::EmptyQuery);
        }
        if documents.is_empty() {
            return refuse(RerankInputError::NoDocuments);
        }
        if documents.len() > MAX_RERANK_DOCUMENTS {
            return refuse(RerankInputError::TooManyDocuments {
                count: documents.len(),
                max: MAX_RERANK_DOCUMENTS,
            });
        }
        self.batcher.submit(RerankRequest { query, documents })
    }

    /// [`Self::submit`] and wait: the score of each `(query, document)` pair, as
    /// sentence-transformers' `CrossEncoder.predict` gives it.
    pub async fn score(&self, query: String, documents: Vec<String>) -> Result<RerankOutput> {
        self.submit(query, documents)?.await
    }
}
