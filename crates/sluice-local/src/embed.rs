//! Sentence embeddings from BERT-family models in the sentence-transformers layout: a directory
//! with `config.json`, `tokenizer.json` and `model.safetensors`, plus (optionally)
//! `modules.json`, `sentence_bert_config.json` and the pooling module's `config.json`.
//!
//! Vectors match sentence-transformers': the text is tokenized with the model's tokenizer,
//! truncated to `max_seq_length` (from `sentence_bert_config.json`; the `tokenizer.json` of
//! some packages pads and truncates to another length, which is overridden), run through the
//! encoder ([`bert`]), pooled as the pooling module says (mean over tokens by default; CLS and
//! max also), and L2-normalised when `modules.json` lists a `Normalize` module. A directory
//! without `modules.json` gets mean pooling and normalisation.
//!
//! [`EmbedModel`] (in `model`) loads such a directory and embeds a batch; [`Embedder`] (in
//! `embedder`) puts a model behind a thread ([`batcher`]) that gathers concurrent requests into
//! batches. `files` reads the directory's files. The encoder and the batching thread also
//! serve cross-encoders (the `rerank` module), which pair texts as two segments.

pub mod batcher;
pub mod bert;
mod embedder;
pub(crate) mod files;
mod model;
#[cfg(target_arch = "x86_64")]
mod packed;
#[cfg(target_arch = "x86_64")]
mod packed_i8;

pub use batcher::{BatchOptions, BatchStats, EmbedderStats};
pub use bert::Precision;
pub use embedder::{EmbedOutput, Embedder};
pub use model::{estimate_embedding_memory, is_embedding_model, EmbedModel, Pooling};
