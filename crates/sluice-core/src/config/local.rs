//! `[local]`: the runtime of the models sluice runs itself (memory budget, keep-alive,
//! batching, threads, context length, engine and device).

use super::error::ConfigError;
use super::values::{positive, MS};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[local] context_length` when absent (sluice-local's `DEFAULT_CONTEXT_LENGTH`).
pub const DEFAULT_CONTEXT_LENGTH: usize = 8192;

/// `[local] prompt_cache_slots` when absent.
pub const DEFAULT_PROMPT_CACHE_SLOTS: usize = 1;

/// `[local]` as written: the local model runtime.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedLocalConfig {
    /// Bytes the loaded models may hold together (default: half the machine's memory).
    pub memory_budget: Option<u64>,
    /// Default idle time before a model unloads (default `5m`).
    pub keep_alive: Option<String>,
    /// Default sequences generated at once per model (default 1).
    pub parallel: Option<usize>,
    /// Chat models: positions per sequence the KV cache is sized for, unless a model sets its
    /// own (default 8192, or the file's own if smaller).
    pub context_length: Option<usize>,
    /// Requests that may wait per model when every sequence is busy (default 16).
    pub queue: Option<usize>,
    /// Most choices (`n`) one chat request may ask of a local model (default 8).
    pub max_n: Option<usize>,
    /// A directory of GGUF files served by the first `local` provider (default
    /// `<data_dir>/models`).
    pub models_dir: Option<PathBuf>,
    /// Also serve the GGUF models of an Ollama installation (default `true`).
    pub ollama: Option<bool>,
    /// Where Ollama keeps its models (default `$OLLAMA_MODELS`, else `~/.ollama/models`
    /// and `/usr/share/ollama/.ollama/models`).
    pub ollama_dir: Option<PathBuf>,
    /// Embedding models: inputs per batch at most (default 32).
    pub max_batch: Option<usize>,
    /// Embedding models: longest wait for more requests once one is there (default 2 ms).
    pub max_wait_ms: Option<u64>,
    /// Embedding models: requests that may wait per model (default 256).
    pub embedding_queue: Option<usize>,
    /// How long a request waits for memory held by models in use before 503 (default 30000).
    pub memory_wait_ms: Option<u64>,
    /// Threads a chat model's forward passes use, all its running sequences batched in each
    /// pass (native engine; default: all cores).
    pub threads: Option<usize>,
    /// Which implementation runs chat models: `auto` (default: the native engine where the CPU
    /// and the file's formats allow it, else candle), `native` or `candle`.
    pub engine: Option<String>,
    /// Where chat models run: `cpu` (default), `cuda`, `cuda:N` or `metal` (the GPUs need
    /// sluice-local's `cuda` / `metal` cargo features).
    pub device: Option<String>,
    /// The native engine's KV cache: `f32` (default), `f16` (half the memory) or `q8_0`
    /// (53% of F16's).
    pub kv_cache: Option<String>,
    /// Native engine: finished conversations' KV caches kept per chat model beyond its
    /// `parallel` running ones, for follow-up requests that extend them (default 1; `0`: none
    /// beyond the running ones'). Each costs a running sequence's KV cache in the budget.
    pub prompt_cache_slots: Option<usize>,
    /// Native engine: map the weights from the file (default `true`: the tensors used as
    /// stored stay the file's pages, shared and loaded on first use) or read them (`false`).
    pub mmap: Option<bool>,
}

/// Validated `[local]`.
#[derive(Debug, Clone, Default)]
pub struct LocalConfig {
    /// `None`: half the machine's memory.
    pub memory_budget: Option<u64>,
    /// Default keep-alive, as written (`None`: 5 minutes).
    pub keep_alive: Option<String>,
    /// Default parallel sequences.
    pub parallel: usize,
    /// Default context length of chat models (capped at each file's own).
    pub context_length: usize,
    /// Queue per model.
    pub queue: usize,
    /// Most choices (`n`) per chat request.
    pub max_n: usize,
    /// Directory of GGUF files.
    pub models_dir: Option<PathBuf>,
    /// Serve Ollama's models too.
    pub ollama: bool,
    /// Ollama's model store.
    pub ollama_dir: Option<PathBuf>,
    /// Embedding batches: inputs at most.
    pub max_batch: usize,
    /// Embedding batches: longest gathering wait.
    pub max_wait: Duration,
    /// Embedding requests that may wait per model.
    pub embedding_queue: usize,
    /// Longest wait for memory held by models in use.
    pub memory_wait: Duration,
    /// Threads per chat model's forward passes (`None`: all cores).
    pub threads: Option<usize>,
    /// `auto`, `native` or `candle`.
    pub engine: String,
    /// `cpu`, `cuda`, `cuda:N` or `metal`.
    pub device: String,
    /// `f32`, `f16` or `q8_0`.
    pub kv_cache: String,
    /// KV caches kept for prompt reuse per chat model beyond the running ones.
    pub prompt_cache_slots: usize,
    /// Map the native engine's weights from their files.
    pub mmap: bool,
}

impl UninitializedLocalConfig {
    /// Validates `[local]`.
    pub(crate) fn load(self) -> Result<LocalConfig, ConfigError> {
        Ok(LocalConfig {
            memory_budget: match self.memory_budget {
                Some(0) => {
                    return Err(ConfigError::new(
                        "local.memory_budget",
                        "must be greater than 0 (bytes)",
                    ))
                }
                v => v,
            },
            keep_alive: self.keep_alive,
            parallel: positive(self.parallel, "local.parallel", 1)?,
            context_length: positive(
                self.context_length,
                "local.context_length",
                DEFAULT_CONTEXT_LENGTH,
            )?,
            queue: self.queue.unwrap_or(16),
            max_n: positive(self.max_n, "local.max_n", 8)?,
            models_dir: self.models_dir,
            ollama: self.ollama.unwrap_or(true),
            ollama_dir: self.ollama_dir,
            max_batch: positive(self.max_batch, "local.max_batch", 32)?,
            max_wait: MS(self.max_wait_ms.unwrap_or(2)),
            embedding_queue: positive(self.embedding_queue, "local.embedding_queue", 256)?,
            memory_wait: MS(self.memory_wait_ms.unwrap_or(30_000)),
            threads: match self.threads {
                Some(0) => return Err(ConfigError::new("local.threads", "must be greater than 0")),
                v => v,
            },
            engine: engine(self.engine.as_deref())?,
            device: device(self.device.as_deref())?,
            kv_cache: match self.kv_cache.as_deref() {
                None => "f32".to_owned(),
                Some(k @ ("f32" | "f16" | "q8_0")) => k.to_owned(),
                Some(other) => {
                    return Err(ConfigError::new(
                        "local.kv_cache",
                        format!("`{other}` is not one of `f32`, `f16`, `q8_0`"),
                    ))
                }
            },
            prompt_cache_slots: self
                .prompt_cache_slots
                .unwrap_or(DEFAULT_PROMPT_CACHE_SLOTS),
            mmap: self.mmap.unwrap_or(true),
        })
    }
}

/// `engine` as written, `auto` when absent.
fn engine(engine: Option<&str>) -> Result<String, ConfigError> {
    match engine {
        None => Ok("auto".to_owned()),
        Some(e @ ("auto" | "native" | "candle")) => Ok(e.to_owned()),
        Some(other) => Err(ConfigError::new(
            "local.engine",
            format!("`{other}` is not one of `auto`, `native`, `candle`"),
        )),
    }
}

/// `device` as written, `cpu` when absent.
fn device(device: Option<&str>) -> Result<String, ConfigError> {
    match device {
        None => Ok("cpu".to_owned()),
        Some(d @ ("cpu" | "cuda" | "metal")) => Ok(d.to_owned()),
        Some(d)
            if d.strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<usize>().is_ok()) =>
        {
            Ok(d.to_owned())
        }
        Some(other) => Err(ConfigError::new(
            "local.device",
            format!("`{other}` is not one of `cpu`, `cuda`, `cuda:N`, `metal`"),
        )),
    }
}
