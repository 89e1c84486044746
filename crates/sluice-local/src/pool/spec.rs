//! What the pool is told: each model's [`ModelSpec`] and the pool-wide [`PoolConfig`].

use std::path::PathBuf;
use std::time::Duration;

use super::budget::default_memory_budget;
use super::keep_alive::KeepAlive;
use crate::{BatchOptions, LoadOptions, Precision};

/// A model the pool may load.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The name requests use.
    pub name: String,
    /// The model file.
    pub path: PathBuf,
    /// Expected SHA-256 of the file (of `model.safetensors` for a directory), hex (a
    /// `sha256:` or `sha256-` prefix is accepted).
    pub sha256: Option<String>,
    /// Idle time before unloading; `None`: the pool's default. A request can override it.
    pub keep_alive: Option<KeepAlive>,
    /// Never unload for idleness or eviction.
    pub pin: bool,
    /// Load at start ([`Pool::preload_configured`](crate::pool::Pool::preload_configured)).
    pub preload: bool,
    /// How [`GgufLoader`](crate::pool::GgufLoader) loads it (sequence slots, queue, context
    /// length).
    pub load: LoadOptions,
    /// What it is: a GGUF chat model, an embedding model or a cross-encoder directory.
    pub kind: ModelKind,
    /// How an embedding model or a reranker batches requests (a reranker's `max_batch`
    /// counts (query, document) pairs).
    pub batch: BatchOptions,
    /// An embedding model's encoder precision ([`Precision::Int8`]: 8-bit linear layers).
    pub precision: Precision,
}

/// What a local model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A GGUF chat model ([`ChatModel`](crate::ChatModel)).
    Chat,
    /// A sentence-embedding model directory ([`crate::EmbedModel`]).
    Embedding,
    /// A cross-encoder directory ([`crate::CrossEncoder`]): `/v1/rerank`.
    Rerank,
}

impl ModelKind {
    /// `chat`, `embedding` or `rerank`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embedding => "embedding",
            Self::Rerank => "rerank",
        }
    }

    /// What the model at `path` is: a directory whose `config.json` names a
    /// `...ForSequenceClassification` is a reranker ([`crate::is_reranker_model`]), another
    /// directory an embedding model, a file a GGUF chat model.
    pub fn of_path(path: &std::path::Path) -> Self {
        if !path.is_dir() {
            Self::Chat
        } else if crate::is_reranker_model(path) {
            Self::Rerank
        } else {
            Self::Embedding
        }
    }
}

// === impl ModelSpec ===

impl ModelSpec {
    /// A spec with defaults: no checksum, the pool's keep-alive, not pinned or preloaded.
    /// The kind follows the path ([`ModelKind::of_path`]).
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let kind = ModelKind::of_path(&path);
        Self {
            name: name.into(),
            path,
            kind,
            batch: BatchOptions::default(),
            precision: Precision::F32,
            sha256: None,
            keep_alive: None,
            pin: false,
            preload: false,
            load: LoadOptions::default(),
        }
    }
}

/// Pool-wide settings (`[local]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Bytes all loaded and loading models may hold together.
    pub memory_budget: u64,
    /// Keep-alive of models whose spec and request give none.
    pub keep_alive: KeepAlive,
    /// How long an acquire waits for models in use to free memory before it fails with
    /// [`PoolErrorKind::BudgetBusy`](crate::pool::PoolErrorKind::BudgetBusy); zero fails at once.
    pub busy_wait: Duration,
}

/// [`PoolConfig::busy_wait`]'s default.
pub const DEFAULT_BUSY_WAIT: Duration = Duration::from_secs(30);

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            memory_budget: default_memory_budget(),
            keep_alive: KeepAlive::default(),
            busy_wait: DEFAULT_BUSY_WAIT,
        }
    }
}
