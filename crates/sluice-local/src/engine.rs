//! Which implementation runs a chat model: the [`Engine`] asked for in [`LoadOptions`], and the
//! one a file gets ([`Chosen`]), decided from its header before loading.

use std::path::Path;

use candle_core::quantized::gguf_file::Content;

use crate::device::DeviceKind;
use crate::error::{ErrorKind, Result};
use crate::gguf::file::Weights;
use crate::gguf::info::{KvCacheType, ModelInfo};

/// The context a chat model runs with unless asked for another (or the file's own, if smaller):
/// sizing the KV cache for a file's full context (32,768 positions and more) would reserve
/// gigabytes of the memory budget for contexts few requests use.
pub const DEFAULT_CONTEXT_LENGTH: usize = 8192;

/// How a model is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Concurrent sequences (KV caches; on candle, a thread each). At least 1.
    pub parallel: usize,
    /// Requests that may wait when every slot is busy; one more is [`ErrorKind::QueueFull`].
    /// `0`: accept only what an idle slot takes at once.
    pub queue_capacity: usize,
    /// Context length, capped at the file's; `None`: [`DEFAULT_CONTEXT_LENGTH`] (on candle,
    /// llama is also capped at 4096: its rope table).
    pub context_length: Option<usize>,
    /// Which implementation runs the model.
    pub engine: Engine,
    /// Threads the model's forward passes compute on (native engine; all its sequences run in
    /// each pass); `None`: every core. candle's pool is process-wide and set by
    /// `CANDLE_NUM_THREADS`.
    pub threads: Option<usize>,
    /// Where the model runs ([`crate::device`]); a GPU runs candle.
    pub device: DeviceKind,
    /// The native engine's KV cache type (candle's is always F32).
    pub kv_cache: KvCacheType,
    /// Native engine: KV caches kept beyond the `parallel` running sequences' for finished
    /// sequences, so that a follow-up request whose prompt extends one (the next turn of a
    /// chat) runs only its new tokens. Each is a running sequence's size and counted in the
    /// model's memory; the least recently used is reused first. `0`: only the running
    /// sequences' caches are kept (candle keeps none).
    pub prompt_cache_slots: usize,
    /// Native engine: how the weights come into memory (candle reads them).
    pub weights: Weights,
}

/// The implementation that runs a chat model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// The native engine when the CPU and the file's tensor formats allow it, else candle.
    #[default]
    Auto,
    /// sluice's own CPU engine (x86-64 with AVX2/FMA/F16C; F32, F16, BF16, Q4_0, Q4_1, Q5_0,
    /// Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K tensors); a file it cannot run is refused.
    Native,
    /// candle's `quantized_llama` / `quantized_qwen2` (any format candle reads).
    Candle,
}

// === impl Engine ===

impl Engine {
    /// Parses `auto`, `native` or `candle`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(Self::Auto),
            "native" => Some(Self::Native),
            "candle" => Some(Self::Candle),
            _ => None,
        }
    }

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Candle => "candle",
        }
    }
}

/// The engine a file runs on, decided from its header before loading.
#[derive(Clone, Copy)]
pub(crate) enum Chosen {
    #[cfg(target_arch = "x86_64")]
    Native(crate::native::Isa),
    Candle,
}

// === impl Chosen ===

impl Chosen {
    pub(crate) fn decide(
        engine: Engine,
        device: DeviceKind,
        path: &Path,
        content: &Content,
        info: &ModelInfo,
    ) -> Result<Self> {
        let no_candle = |reason: String| -> crate::error::Error {
            ErrorKind::UnsupportedByEngine {
                engine: "candle",
                path: path.to_path_buf(),
                reason: format!(
                    "candle has no `{}` implementation here (the native engine runs it{reason})",
                    info.architecture.as_str()
                ),
            }
            .into()
        };
        let candle = info.architecture.runs_on_candle();
        if engine == Engine::Candle {
            return if candle {
                Ok(Self::Candle)
            } else {
                Err(no_candle(String::new()))
            };
        }
        if device.is_gpu() {
            if !candle {
                return Err(no_candle(" on the CPU only".into()));
            }
            if engine == Engine::Native {
                return Err(ErrorKind::UnsupportedByEngine {
                    engine: "native",
                    path: path.to_path_buf(),
                    reason: format!(
                        "it runs on the CPU, not on `{}`: use engine `auto` or `candle`",
                        device.name()
                    ),
                }
                .into());
            }
            return Ok(Self::Candle);
        }
        #[cfg(target_arch = "x86_64")]
        let plan = crate::native::plan(content, info);
        #[cfg(not(target_arch = "x86_64"))]
        let plan: std::result::Result<(), String> = {
            let _ = (content, info);
            Err("it runs on x86-64 only".to_owned())
        };
        match (plan, engine) {
            #[cfg(target_arch = "x86_64")]
            (Ok(isa), _) => Ok(Self::Native(isa)),
            (Err(reason), Engine::Native) => Err(ErrorKind::UnsupportedByEngine {
                engine: "native",
                path: path.to_path_buf(),
                reason,
            }
            .into()),
            (Err(reason), _) if !candle => Err(no_candle(format!("; not this file: {reason}"))),
            #[allow(unreachable_patterns)]
            _ => Ok(Self::Candle),
        }
    }

    /// The KV cache a model holds: the native engine's is `kv` (for its head size), candle's
    /// F32.
    pub(crate) fn kv_type(self, kv: KvCacheType, info: &ModelInfo) -> KvCacheType {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Native(_) => kv.for_head(info.head_dim),
            Self::Candle => KvCacheType::F32,
        }
    }

    /// KV caches a model holds with `options`: one per running sequence, and on the native
    /// engine the prompt cache's too.
    pub(crate) fn kv_slots(self, options: &LoadOptions) -> usize {
        let parallel = options.parallel.max(1);
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Native(_) => parallel + options.prompt_cache_slots,
            Self::Candle => parallel,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Native(_) => "native",
            Self::Candle => "candle",
        }
    }

    /// The context a model runs with: the requested one, else [`DEFAULT_CONTEXT_LENGTH`],
    /// capped at the file's; candle's llama is also capped by its rope table.
    pub(crate) fn context(self, info: &ModelInfo, requested: Option<usize>) -> usize {
        let requested = requested
            .filter(|&r| r > 0)
            .unwrap_or(DEFAULT_CONTEXT_LENGTH);
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Native(_) => info.context_length.min(requested),
            Self::Candle => info.effective_context(Some(requested)),
        }
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            parallel: 1,
            queue_capacity: 16,
            context_length: None,
            engine: Engine::Auto,
            threads: None,
            device: DeviceKind::Cpu,
            kv_cache: KvCacheType::F32,
            prompt_cache_slots: 0,
            weights: Weights::Mapped,
        }
    }
}
