//! # sluice-local
//!
//! The local model runtime: GGUF chat models (`llama`, `qwen2`) run on sluice's own CPU engine
//! (`native`: AVX2 / AVX-512 VNNI integer kernels over the file's quantized blocks) or, for
//! what that engine does not run, on candle (the `cuda` and `metal` features forward to
//! candle's and are untested here), with the
//! tokenizer and chat template taken from the file and streaming generation on dedicated OS
//! threads; BERT-family sentence embeddings and cross-encoder reranking behind a dynamic
//! batching thread; and one pool that keeps them under a memory budget. No dependency on other sluice crates; the
//! server wires it in.
//!
//! ## Using it
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_local::Error> {
//! use sluice_local::{ChatMessage, ChatModel, ChatRequest, GenerationEvent, LoadOptions};
//!
//! let path = std::path::Path::new("model.gguf");
//! let options = LoadOptions { parallel: 2, queue_capacity: 8, context_length: Some(4096), ..LoadOptions::default() };
//! let budget = sluice_local::estimate_memory(path, options.parallel, options.context_length)?;
//! // `load` reads the whole file: run it on a blocking thread.
//! let model = ChatModel::load(path, &options)?;
//! let request = ChatRequest {
//!     messages: vec![ChatMessage::new("user", "Hello")],
//!     max_tokens: Some(64),
//!     ..ChatRequest::default()
//! };
//! let mut generation = model.submit(request)?; // `QueueFull` at once when saturated → 503
//! while let Some(event) = generation.next().await {
//!     match event? {
//!         GenerationEvent::Delta(text) => { /* send an SSE chunk */ let _ = text; }
//!         GenerationEvent::Done(done) => { let _ = (done.finish_reason.as_str(), done.usage); }
//!         _ => {} // calls (with tools), log probabilities (when asked)
//!     }
//! }
//! # let _ = budget; Ok(()) }
//! ```
//!
//! ## Pieces
//!
//! * [`gguf`]: the header, read and checked against the file (`gguf/file`), its keys
//!   (`gguf/metadata`) and the model's shape ([`ModelInfo`], `gguf/info`); [`estimate_memory`]
//!   (from file size + header) and the accounting behind [`ChatModel::memory`].
//! * `tokenizer`: the tokenizer from `tokenizer.ggml.*`, of either kind: byte-level BPE
//!   (`tokenizer.ggml.model = "gpt2"`: Llama 3, Qwen2) with the pre-tokenizer chosen by
//!   `tokenizer.ggml.pre`, or SentencePiece (`"llama"`: Llama 2, Mistral, TinyLlama) encoded by
//!   score as llama.cpp does (`tokenizer/spm`); UTF-8-safe streaming decode.
//! * `template`: `tokenizer.chat_template` on minijinja with `transformers` parity
//!   (`raise_exception`, `strftime_now`, Python-exact `tojson`).
//! * [`constrain`]: constrained decoding: a JSON Schema (or "any JSON object") compiled to a
//!   byte-level matcher, and per-token masks over the vocabulary's byte trie.
//! * `stop`: stop strings spanning tokens (held back, never emitted).
//! * [`tools`]: a chat template's tool format ([`ToolFormat`]) and what a request that lets the
//!   model call tools asks ([`ToolCalls`]); the model watches the output for a call
//!   (`model/calls`), constrains it to the tools' grammar and streams it apart from text.
//! * `engine`: [`Engine`] and the rest of [`LoadOptions`], and the engine a file runs on,
//!   decided from its header (the native one where it can, else candle).
//! * [`model`]: [`ChatModel`]: the bounded queue, continuous batching with prompt reuse
//!   (native) or a thread per slot (candle), sampling, stop strings, streaming.
//! * `native`: the native engine (x86-64): the number formats (`format`), weights as stored
//!   (`quant`, `weights`), activations quantized as ggml does (`acts`), the kernels (`simd`), a
//!   fork-join pool per model (`workers`), KV caches (`cache`), the llama/qwen2 forward pass
//!   over several slots' rows at once (`batch`).
//! * [`pool`]: [`Pool`], loaded models under a memory budget: lazy single-flight loads,
//!   LRU eviction of idle models (never one in use), keep-alive, pins, preload, SHA-256
//!   checks, a [`PoolSnapshot`] for health; generic over a [`Loader`] ([`GgufLoader`] for
//!   [`ChatModel`]s, [`LocalLoader`] for both kinds) and a [`Clock`]. One file per job under
//!   `pool/`.
//! * [`embed`]: BERT-family sentence embeddings ([`EmbedModel`], safetensors in the
//!   sentence-transformers layout, `embed/model`) on an unpadded encoder (`embed/bert`, its
//!   linear layers on weights packed at load, `embed/packed`), behind [`Embedder`]'s dynamic
//!   batching thread (`embed/batcher`, generic over what it batches).
//! * [`rerank`]: cross-encoder reranking ([`CrossEncoder`], a sentence-transformers
//!   `CrossEncoder` directory of a one-label `BertForSequenceClassification`): pairs tokenized
//!   `[CLS] query [SEP] document [SEP]` and cut `longest_first`, the same encoder with the
//!   document as token type 1, BERT's pooler and classifier, the activation
//!   sentence-transformers picks ([`Activation`]); behind [`Reranker`]'s batching thread, which
//!   is the embeddings' one. Scores match sentence-transformers' `CrossEncoder.predict`
//!   (`tests/rerank.rs`, on fixtures made by `scripts/make-cross-encoder-fixture.py`).
//! * [`memory`]: hands freed memory back to the OS after an unload (mimalloc's `mi_collect`).
//! * [`discovery`]: GGUF files in a models directory and models in Ollama's manifest store.
//! * [`device`]: where a chat model runs ([`DeviceKind`]: the CPU, or a GPU on candle's
//!   backends) and the memory a GPU offers the pool.
//! * [`testing`]: seeded writer of tiny llama/qwen2 GGUF files in F32, F16, Q8_0, Q4_0 and
//!   Q4_K_M, with a byte-level BPE or a SentencePiece vocabulary, used by the tests and by
//!   benchmarks.
//!
//! ## Limits
//!
//! * On candle: llama positions are capped at 4096 (its rope table) and Llama-3.1 rope scaling
//!   is ignored; qwen2 slots each hold a copy of the weights (candle's qwen2 model is not
//!   `Clone`); its CPU thread pool is process-wide (`CANDLE_NUM_THREADS`, read at the first
//!   load). The native engine has none of these limits.
//! * Memory accounting excludes candle's lazily built x86 repack of K-quant weights and
//!   attention transients (both engines).
//!
//! ## Unsafe code
//!
//! Six modules use `unsafe`, each allowing it in its first lines with the reason: the native
//! kernels (`native/simd`), worker pool (`native/workers`) and weights' file mapping
//! (`native/blob`), the packed products
//! (`embed/packed`) and `gemm` calls (`embed/bert`) of the encoder, and the `mi_collect` call
//! (`memory`). Every unsafe block and impl there states the invariant it relies on
//! (`// SAFETY:`, enforced by `clippy::undocumented_unsafe_blocks`), and every unsafe fn its
//! contract (`# Safety`).

// Unsafe code is allowed only in the modules that say why (`#![allow(unsafe_code)]`). There,
// every unsafe block and impl states the invariant it relies on (`// SAFETY:`), and an unsafe
// fn's own unsafe operations sit in such blocks too, under the fn's `# Safety` contract.
#![warn(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

pub mod constrain;
pub mod device;
pub mod discovery;
pub mod embed;
mod engine;
pub mod error;
pub mod gguf;
pub mod memory;
pub mod model;
#[cfg(target_arch = "x86_64")]
mod native;
pub mod pool;
pub mod rerank;
mod stop;
mod template;
pub mod testing;
mod tokenizer;
pub mod tools;

pub use constrain::{Constraint, ConstraintError, Grammar, GrammarCache, SchemaError};
pub use device::DeviceKind;
pub use embed::{
    estimate_embedding_memory, is_embedding_model, BatchOptions, BatchStats, EmbedModel,
    EmbedOutput, Embedder, EmbedderStats, Pooling, Precision,
};
pub use error::{Error, ErrorKind, RerankInputError, Result};
pub use gguf::{
    estimate_memory, estimate_memory_with, read_model_info, Architecture, MemoryUsage, ModelInfo,
};
pub use model::{
    ChatModel, ChatRequest, Completion, Engine, FinishReason, Generation, GenerationEvent,
    KvCacheType, LoadOptions, SamplingParams, TokenLogprob, Usage, Weights, DEFAULT_CONTEXT_LENGTH,
};
pub use pool::{
    default_memory_budget, plan_eviction, Clock, GgufLoader, KeepAlive, Lease, Loaded, Loader,
    LocalLoader, LocalModel, ModelKind, ModelSpec, ModelState, ModelStatus, Pool, PoolConfig,
    PoolError, PoolErrorKind, PoolSnapshot, PreloadEvent, PreloadReport, SystemClock,
};
pub use rerank::{
    estimate_rerank_memory, is_reranker_model, Activation, CrossEncoder, RerankOutput, Reranker,
    MAX_RERANK_DOCUMENTS,
};
pub use template::{ChatMessage, DEFAULT_CHAT_TEMPLATE};
pub use tools::{CallStart, ToolCalls, ToolFormat};

#[cfg(test)]
mod tests;
