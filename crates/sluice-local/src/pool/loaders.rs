//! The real [`Loader`]s: [`GgufLoader`] for chat models and [`LocalLoader`] for every kind.

use super::loader::{Loaded, Loader};
use super::spec::{ModelKind, ModelSpec};
use crate::{ChatModel, CrossEncoder, Embedder, Reranker};

/// The [`Loader`] for GGUF chat models: [`crate::estimate_memory`] before, [`ChatModel::load`]
/// and [`ChatModel::memory`] after, with [`ModelSpec::load`]'s options.
#[derive(Debug, Clone, Copy, Default)]
pub struct GgufLoader;

impl Loader for GgufLoader {
    type Model = ChatModel;

    fn estimate(&self, spec: &ModelSpec) -> crate::Result<u64> {
        crate::estimate_memory_with(&spec.path, &spec.load).map(|usage| usage.total())
    }

    fn load(&self, spec: &ModelSpec) -> crate::Result<Loaded<ChatModel>> {
        let model = ChatModel::load(&spec.path, &spec.load)?;
        let bytes = model.memory().total();
        Ok(Loaded { model, bytes })
    }

    fn engine(&self, model: &ChatModel) -> Option<&'static str> {
        Some(model.engine())
    }

    fn context_length(&self, model: &ChatModel) -> Option<usize> {
        Some(model.context_length())
    }

    fn queued(&self, model: &ChatModel) -> usize {
        model.queued()
    }
}

/// A loaded model of any kind.
#[derive(Debug)]
pub enum LocalModel {
    /// A chat model.
    Chat(ChatModel),
    /// An embedding model behind its batching thread.
    Embedding(Embedder),
    /// A cross-encoder behind its batching thread.
    Rerank(Reranker),
}

impl LocalModel {
    /// The chat model, if it is one.
    pub fn as_chat(&self) -> Option<&ChatModel> {
        match self {
            Self::Chat(m) => Some(m),
            _ => None,
        }
    }

    /// The embedder, if it is one.
    pub fn as_embedder(&self) -> Option<&Embedder> {
        match self {
            Self::Embedding(e) => Some(e),
            _ => None,
        }
    }

    /// The reranker, if it is one.
    pub fn as_reranker(&self) -> Option<&Reranker> {
        match self {
            Self::Rerank(r) => Some(r),
            _ => None,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> ModelKind {
        match self {
            Self::Chat(_) => ModelKind::Chat,
            Self::Embedding(_) => ModelKind::Embedding,
            Self::Rerank(_) => ModelKind::Rerank,
        }
    }
}

/// The [`Loader`] for every kind ([`ModelSpec::kind`]): GGUF chat models as [`GgufLoader`]
/// loads them, embedding directories as [`crate::EmbedModel`]s behind an [`Embedder`] and
/// cross-encoder directories as [`CrossEncoder`]s behind a [`Reranker`], both with
/// [`ModelSpec::batch`]'s options. An encoder's estimate is its weights as `f32` plus one
/// batch's scratch (`max_batch` sequences of the longest length), before loading and after.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalLoader;

impl Loader for LocalLoader {
    type Model = LocalModel;

    fn estimate(&self, spec: &ModelSpec) -> crate::Result<u64> {
        match spec.kind {
            ModelKind::Chat => GgufLoader.estimate(spec),
            ModelKind::Embedding => {
                crate::estimate_embedding_memory(&spec.path, spec.batch.max_batch)
            }
            ModelKind::Rerank => crate::estimate_rerank_memory(&spec.path, spec.batch.max_batch),
        }
    }

    fn load(&self, spec: &ModelSpec) -> crate::Result<Loaded<LocalModel>> {
        match spec.kind {
            ModelKind::Chat => GgufLoader.load(spec).map(|l| Loaded {
                model: LocalModel::Chat(l.model),
                bytes: l.bytes,
            }),
            ModelKind::Embedding => {
                let model = crate::EmbedModel::load_with_precision(&spec.path, spec.precision)?;
                let bytes = model.memory_with_batch(spec.batch.max_batch);
                let embedder = Embedder::new(model, spec.batch)?;
                Ok(Loaded {
                    model: LocalModel::Embedding(embedder),
                    bytes,
                })
            }
            ModelKind::Rerank => {
                let model = CrossEncoder::load(&spec.path)?;
                let bytes = model.memory_with_batch(spec.batch.max_batch);
                let reranker = Reranker::new(model, spec.batch)?;
                Ok(Loaded {
                    model: LocalModel::Rerank(reranker),
                    bytes,
                })
            }
        }
    }

    /// Chat models: their engine's; embedding models and rerankers always run on sluice's own
    /// encoder.
    fn engine(&self, model: &LocalModel) -> Option<&'static str> {
        match model {
            LocalModel::Chat(chat) => Some(chat.engine()),
            LocalModel::Embedding(_) | LocalModel::Rerank(_) => Some("native"),
        }
    }

    fn context_length(&self, model: &LocalModel) -> Option<usize> {
        model.as_chat().map(ChatModel::context_length)
    }

    fn queued(&self, model: &LocalModel) -> usize {
        match model {
            LocalModel::Chat(chat) => chat.queued(),
            LocalModel::Embedding(e) => e.stats().queued,
            LocalModel::Rerank(r) => r.stats().queued,
        }
    }
}
