//! Configuration: one TOML file, loaded in two phases.
//!
//! 1. The file is parsed into a TOML table, `SLUICE__SECTION__KEY` environment overrides are
//!    applied to it, and it is deserialised into the `Uninitialized*` structs with
//!    `deny_unknown_fields`; errors name the failing key path (`providers[1].base_url`).
//! 2. [`UninitializedConfig::load`] resolves secrets and presets and checks the rules that
//!    span fields (unique names, models pointing at existing providers, URLs that parse),
//!    returning an immutable [`Config`].
//!
//! With no file at all, [`Config::from_env`] builds providers from the usual API-key
//! variables (see [`crate::env`]).

use crate::env::{Env, OVERRIDE_PREFIX};
use crate::presets::{self, Preset};
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod cache;
mod error;
mod ledger;
mod routes;
#[cfg(test)]
mod tests;
mod values;

use values::{resolve_secret, MS};

pub use cache::{
    CacheConfig, CachePolicy, UninitializedCacheConfig, UninitializedCachePolicy,
    DEFAULT_TTL as DEFAULT_CACHE_TTL,
};
pub use error::ConfigError;
pub use ledger::{
    KeysConfig, LimitsConfig, SpendConfig, TargetLimits, UninitializedKeysConfig,
    UninitializedLimitsConfig, UninitializedSpendConfig,
};
pub use routes::{
    CanaryConfig, RouteConfig, RoutingConfig, UninitializedCanary, UninitializedRetry,
    UninitializedRoute, UninitializedRouting, UninitializedTiers,
};

// === Uninitialized (as written) ===

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedConfig {
    /// `[server]`.
    #[serde(default)]
    pub server: UninitializedServerConfig,
    /// `[storage]`.
    #[serde(default)]
    pub storage: UninitializedStorageConfig,
    /// `[[providers]]`.
    #[serde(default)]
    pub providers: Vec<UninitializedProviderConfig>,
    /// `[[models]]`.
    #[serde(default)]
    pub models: Vec<UninitializedModelConfig>,
    /// `[routing]`: defaults for routes and models.
    #[serde(default)]
    pub routing: UninitializedRouting,
    /// `[[routes]]`: virtual models.
    #[serde(default)]
    pub routes: Vec<UninitializedRoute>,
    /// `[cache]`: the response cache.
    #[serde(default)]
    pub cache: UninitializedCacheConfig,
    /// `[keys]`: virtual keys.
    #[serde(default)]
    pub keys: UninitializedKeysConfig,
    /// `[limits]`: rate limits and budgets.
    #[serde(default)]
    pub limits: UninitializedLimitsConfig,
    /// `[spend]`: the spend log.
    #[serde(default)]
    pub spend: UninitializedSpendConfig,
    /// `[local]`: the local model runtime.
    #[serde(default)]
    pub local: UninitializedLocalConfig,
}

/// `[server]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedServerConfig {
    /// Address to listen on.
    pub listen: Option<String>,
    /// Largest request body accepted.
    pub max_body_bytes: Option<u64>,
    /// Largest non-streamed upstream response accepted.
    pub max_response_bytes: Option<u64>,
    /// Largest single SSE event accepted from an upstream.
    pub max_event_bytes: Option<u64>,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_ms: Option<u64>,
    /// How long a client may take to send its request head and body.
    pub request_read_timeout_ms: Option<u64>,
    /// Most connections served at once; more wait in the kernel's accept queue.
    pub max_connections: Option<usize>,
    /// Key of the admin API (`/admin/*`): literal or `env::VAR`.
    pub master_key: Option<String>,
}

/// `[storage]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedStorageConfig {
    /// Directory for embedded state.
    pub data_dir: Option<PathBuf>,
    /// Redis shared by every replica (cache; literal or `env::VAR`).
    pub redis_url: Option<String>,
    /// Prefix of every Redis key sluice writes (default `sluice:`).
    pub redis_prefix: Option<String>,
    /// PostgreSQL shared by every replica (spend log and keys; literal or `env::VAR`).
    pub database_url: Option<String>,
}

/// Provider wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderType {
    /// OpenAI's API and every server compatible with it.
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Ollama's native API.
    Ollama,
    /// Google's Gemini API.
    Gemini,
    /// Models sluice runs itself (`sluice-local`).
    Local,
}

impl ProviderType {
    /// The config name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Ollama => "ollama",
            Self::Gemini => "gemini",
            Self::Local => "local",
        }
    }
}

/// `[[providers]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedProviderConfig {
    /// Name models refer to.
    pub name: String,
    /// Wire format.
    #[serde(rename = "type")]
    pub kind: ProviderType,
    /// A known OpenAI-compatible upstream; supplies `base_url` and `stream_usage`.
    pub preset: Option<String>,
    /// API root (with version path, e.g. `https://api.openai.com/v1`).
    pub base_url: Option<String>,
    /// Literal key or `env::VAR`.
    pub api_key: Option<String>,
    /// Extra headers sent upstream; values may be `env::VAR`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TCP+TLS connect timeout.
    pub connect_timeout_ms: Option<u64>,
    /// Whole-request timeout.
    pub timeout_ms: Option<u64>,
    /// Longest silence between two reads of a response body (streams included).
    pub chunk_timeout_ms: Option<u64>,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout_ms: Option<u64>,
    /// Most idle connections kept per host.
    pub pool_max_idle_per_host: Option<usize>,
    /// Speak HTTP/2 without TLS negotiation (h2c), for local servers that support it.
    #[serde(default)]
    pub http2_prior_knowledge: bool,
    /// Ask for `stream_options.include_usage` on streams so tokens can be counted.
    pub stream_usage: Option<bool>,
    /// Accept any model name as `provider/model` (and bare names if this is the only such provider).
    #[serde(default)]
    pub passthrough: bool,
    /// `anthropic`: `max_tokens` sent when the client sets none (Anthropic requires it).
    pub default_max_tokens: Option<u64>,
    /// `anthropic`: mark system prompts of at least this many bytes for prompt caching.
    pub cache_system_min_bytes: Option<usize>,
    /// `ollama`: `keep_alive` sent when a request has none (`"5m"`, `"1h"`, `"-1"`, `"0"`).
    pub keep_alive: Option<String>,
}

/// Price of a model in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens.
    pub input: f64,
    /// Completion tokens.
    pub output: f64,
    /// Prompt tokens read from the provider's prompt cache (default: `input`).
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the provider's prompt cache (default: `input`; Anthropic
    /// charges 1.25x `input` for 5-minute cache writes).
    pub cache_write: Option<f64>,
}

impl Price {
    /// What `prompt` tokens (of which `cached` were prompt-cache reads and `written`
    /// prompt-cache writes) and `completion` tokens (reasoning included) cost, in nano-USD
    /// (USD per million tokens is nano-USD per thousandth of a token), each kind rounded
    /// once, so sums of many requests are exact integers.
    pub fn cost_nano_usd(&self, prompt: u64, cached: u64, written: u64, completion: u64) -> u64 {
        let cached = cached.min(prompt);
        let written = written.min(prompt - cached);
        let nano = |tokens: u64, usd_per_million: f64| {
            (tokens as f64 * usd_per_million * 1000.0).round() as u64
        };
        nano(prompt - cached - written, self.input)
            + nano(cached, self.cached_input.unwrap_or(self.input))
            + nano(written, self.cache_write.unwrap_or(self.input))
            + nano(completion, self.output)
    }
}

/// Size tier of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Small, cheap, fast.
    Small,
    /// Medium.
    Medium,
    /// Large, premium.
    Large,
}

/// `[[models]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedModelConfig {
    /// What clients send as `model`.
    pub name: String,
    /// The provider that serves it.
    pub provider: String,
    /// The model id sent upstream (default: `name`).
    pub upstream: Option<String>,
    /// Price per million tokens.
    pub price: Option<Price>,
    /// Size tier.
    pub tier: Option<Tier>,
    /// Quality rank for the `quality` strategy (higher is better).
    pub quality: Option<f64>,
    /// Response cache overrides.
    pub cache: Option<UninitializedCachePolicy>,
    /// Rate limits of this model, over every key.
    pub limits: Option<TargetLimits>,
    /// `local` models: the GGUF file, or an embedding model's directory.
    pub path: Option<PathBuf>,
    /// `local` models: the file's expected SHA-256 (hex).
    pub sha256: Option<String>,
    /// `local` models: how long the model stays loaded when idle (`5m`, `1h`, `0`, `-1`).
    pub keep_alive: Option<String>,
    /// `local` models: never unload.
    #[serde(default)]
    pub pin: bool,
    /// `local` models: load at start.
    #[serde(default)]
    pub preload: bool,
    /// `local` models: context length (default the file's).
    pub context_length: Option<usize>,
    /// `local` models: sequences generated at once (default `[local] parallel`).
    pub parallel: Option<usize>,
}

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
    /// Requests that may wait per model when every sequence is busy (default 16).
    pub queue: Option<usize>,
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
    /// Threads one chat sequence's matrix products use (default: all cores when at most one
    /// sequence can run at a time, else 1 so that sequences run side by side).
    pub threads: Option<usize>,
    /// Which implementation runs chat models: `auto` (default: the native engine where the CPU
    /// and the file's formats allow it, else candle), `native` or `candle`.
    pub engine: Option<String>,
    /// Where chat models run: `cpu` (default), `cuda`, `cuda:N` or `metal` (the GPUs need
    /// sluice-local's `cuda` / `metal` cargo features).
    pub device: Option<String>,
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
    /// Queue per model.
    pub queue: usize,
    /// Directory of GGUF files.
    pub models_dir: Option<PathBuf>,
    /// Serve Ollama's models too.
    pub ollama: bool,
    /// Ollama's model store.
    pub ollama_dir: Option<PathBuf>,
    /// Embedding batches: inputs at most.
    pub max_batch: usize,
    /// Embedding batches: longest gathering wait.
    pub max_wait: std::time::Duration,
    /// Embedding requests that may wait per model.
    pub embedding_queue: usize,
    /// Longest wait for memory held by models in use.
    pub memory_wait: std::time::Duration,
    /// Threads per chat sequence (`None`: chosen from the concurrency).
    pub threads: Option<usize>,
    /// `auto`, `native` or `candle`.
    pub engine: String,
    /// `cpu`, `cuda`, `cuda:N` or `metal`.
    pub device: String,
}

/// A `local` model's runtime settings.
#[derive(Debug, Clone, Default)]
pub struct LocalModelConfig {
    /// The GGUF file.
    pub path: PathBuf,
    /// Expected SHA-256.
    pub sha256: Option<String>,
    /// Keep-alive, as written.
    pub keep_alive: Option<String>,
    /// Never unload.
    pub pin: bool,
    /// Load at start.
    pub preload: bool,
    /// Context length.
    pub context_length: Option<usize>,
    /// Parallel sequences.
    pub parallel: usize,
}

// === Config (validated) ===

/// A validated, immutable configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// Providers, in file order.
    pub providers: Vec<ProviderConfig>,
    /// Models, in file order.
    pub models: Vec<ModelConfig>,
    /// `[routing]`.
    pub routing: RoutingConfig,
    /// Routes, in file order.
    pub routes: Vec<RouteConfig>,
    /// `[cache]`.
    pub cache: CacheConfig,
    /// `[keys]`.
    pub keys: KeysConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[spend]`.
    pub spend: SpendConfig,
    /// `[local]`.
    pub local: LocalConfig,
}

/// Validated `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Default 10 MiB.
    pub max_body_bytes: u64,
    /// Default 64 MiB.
    pub max_response_bytes: u64,
    /// Default 4 MiB.
    pub max_event_bytes: u64,
    /// Default 30 s.
    pub shutdown_grace: Duration,
    /// Default 60 s.
    pub request_read_timeout: Duration,
    /// Default 10,000.
    pub max_connections: usize,
    /// Admin API key; the admin API is off without it.
    pub master_key: Option<Secret>,
}

/// Validated `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Default `.sluice`.
    pub data_dir: PathBuf,
    /// Shared Redis.
    pub redis_url: Option<Secret>,
    /// Prefix of Redis keys.
    pub redis_prefix: String,
    /// Shared PostgreSQL.
    pub database_url: Option<Secret>,
}

/// Validated `[[providers]]`.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Name.
    pub name: String,
    /// Wire format.
    pub kind: ProviderType,
    /// API root without a trailing slash.
    pub base_url: String,
    /// Resolved key.
    pub api_key: Option<Secret>,
    /// Extra headers, values resolved.
    pub headers: Vec<(String, Secret)>,
    /// Default 5 s.
    pub connect_timeout: Duration,
    /// Default 600 s.
    pub timeout: Duration,
    /// Default 120 s.
    pub chunk_timeout: Duration,
    /// Default 90 s.
    pub pool_idle_timeout: Duration,
    /// Default 256.
    pub pool_max_idle_per_host: usize,
    /// h2c.
    pub http2_prior_knowledge: bool,
    /// Ask for usage on streams.
    pub stream_usage: bool,
    /// Accept unconfigured model names.
    pub passthrough: bool,
    /// `anthropic`: default `max_tokens` (4096).
    pub default_max_tokens: u64,
    /// `anthropic`: prompt-caching threshold for system prompts.
    pub cache_system_min_bytes: Option<usize>,
    /// `ollama`: default `keep_alive`.
    pub keep_alive: Option<String>,
}

/// Validated `[[models]]`.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// What clients send.
    pub name: String,
    /// Index into [`Config::providers`].
    pub provider: usize,
    /// Id sent upstream.
    pub upstream: String,
    /// Price per million tokens.
    pub price: Option<Price>,
    /// Size tier.
    pub tier: Option<Tier>,
    /// Quality rank (default 0).
    pub quality: f64,
    /// Response cache policy.
    pub cache: CachePolicy,
    /// Rate limits over every key.
    pub limits: TargetLimits,
    /// Runtime settings of a model on a `local` provider.
    pub local: Option<LocalModelConfig>,
}

impl UninitializedConfig {
    /// Parses TOML text, with `SLUICE__SECTION__KEY` overrides from `env` applied first.
    pub fn parse(text: &str, env: &dyn Env) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new("", format!("invalid TOML: {e}")))?;
        apply_overrides(&mut table, env)?;
        let de = toml::Value::Table(table);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let message = e.into_inner().to_string();
            // toml appends context lines (`in `server``); the path already says where.
            let first = message.lines().next().unwrap_or_default().trim_end();
            ConfigError::new(path, first.to_string())
        })
    }

    /// Checks cross-field rules and resolves secrets, giving the immutable config.
    pub fn load(self, env: &dyn Env) -> Result<Config, ConfigError> {
        let s = self.server;
        let listen = match s.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(l) => l.parse().map_err(|_| {
                ConfigError::new(
                    "server.listen",
                    format!("`{l}` is not an address such as `127.0.0.1:8080` or `[::1]:8080`"),
                )
            })?,
        };
        let positive = |v: Option<u64>, key: &str, default: u64| match v {
            Some(0) => Err(ConfigError::new(key, "must be greater than 0")),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let server = ServerConfig {
            listen,
            max_body_bytes: positive(s.max_body_bytes, "server.max_body_bytes", 10 << 20)?,
            max_response_bytes: positive(
                s.max_response_bytes,
                "server.max_response_bytes",
                64 << 20,
            )?,
            max_event_bytes: positive(s.max_event_bytes, "server.max_event_bytes", 4 << 20)?,
            shutdown_grace: MS(s.shutdown_grace_ms.unwrap_or(30_000)),
            request_read_timeout: MS(positive(
                s.request_read_timeout_ms,
                "server.request_read_timeout_ms",
                60_000,
            )?),
            max_connections: match s.max_connections {
                Some(0) => {
                    return Err(ConfigError::new(
                        "server.max_connections",
                        "must be greater than 0",
                    ))
                }
                Some(n) => n,
                None => 10_000,
            },
            master_key: s
                .master_key
                .as_deref()
                .map(|k| resolve_secret(k, env, "server.master_key"))
                .transpose()?,
        };
        let redis_url = self
            .storage
            .redis_url
            .as_deref()
            .map(|u| resolve_secret(u, env, "storage.redis_url"))
            .transpose()?;
        if let Some(u) = &redis_url {
            let url = u.expose();
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError::new(
                    "storage.redis_url",
                    "must start with redis:// (e.g. `redis://127.0.0.1:6379`)",
                ));
            }
        }
        let database_url = self
            .storage
            .database_url
            .as_deref()
            .map(|u| resolve_secret(u, env, "storage.database_url"))
            .transpose()?;
        if let Some(u) = &database_url {
            let url = u.expose();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::new(
                    "storage.database_url",
                    "must start with postgres:// (e.g. `postgres://sluice@127.0.0.1/sluice`)",
                ));
            }
        }
        let storage = StorageConfig {
            database_url,
            data_dir: self
                .storage
                .data_dir
                .unwrap_or_else(|| PathBuf::from(".sluice")),
            redis_url,
            redis_prefix: self
                .storage
                .redis_prefix
                .unwrap_or_else(|| "sluice:".to_string()),
        };
        let cache = self.cache.load()?;
        let keys = self.keys.load()?;
        let limits = self.limits.load()?;
        let spend = self.spend.load()?;
        let local = LocalConfig {
            memory_budget: match self.local.memory_budget {
                Some(0) => {
                    return Err(ConfigError::new(
                        "local.memory_budget",
                        "must be greater than 0 (bytes)",
                    ))
                }
                v => v,
            },
            keep_alive: self.local.keep_alive,
            parallel: match self.local.parallel {
                Some(0) => {
                    return Err(ConfigError::new("local.parallel", "must be greater than 0"))
                }
                v => v.unwrap_or(1),
            },
            queue: self.local.queue.unwrap_or(16),
            models_dir: self.local.models_dir,
            ollama: self.local.ollama.unwrap_or(true),
            ollama_dir: self.local.ollama_dir,
            max_batch: match self.local.max_batch {
                Some(0) => {
                    return Err(ConfigError::new(
                        "local.max_batch",
                        "must be greater than 0",
                    ))
                }
                v => v.unwrap_or(32),
            },
            max_wait: std::time::Duration::from_millis(self.local.max_wait_ms.unwrap_or(2)),
            embedding_queue: match self.local.embedding_queue {
                Some(0) => {
                    return Err(ConfigError::new(
                        "local.embedding_queue",
                        "must be greater than 0",
                    ))
                }
                v => v.unwrap_or(256),
            },
            memory_wait: std::time::Duration::from_millis(
                self.local.memory_wait_ms.unwrap_or(30_000),
            ),
            threads: match self.local.threads {
                Some(0) => return Err(ConfigError::new("local.threads", "must be greater than 0")),
                v => v,
            },
            engine: match self.local.engine.as_deref() {
                None => "auto".to_owned(),
                Some(e @ ("auto" | "native" | "candle")) => e.to_owned(),
                Some(other) => {
                    return Err(ConfigError::new(
                        "local.engine",
                        format!("`{other}` is not one of `auto`, `native`, `candle`"),
                    ))
                }
            },
            device: match self.local.device.as_deref() {
                None => "cpu".to_owned(),
                Some(d @ ("cpu" | "cuda" | "metal")) => d.to_owned(),
                Some(d)
                    if d.strip_prefix("cuda:")
                        .is_some_and(|n| n.parse::<usize>().is_ok()) =>
                {
                    d.to_owned()
                }
                Some(other) => {
                    return Err(ConfigError::new(
                        "local.device",
                        format!("`{other}` is not one of `cpu`, `cuda`, `cuda:N`, `metal`"),
                    ))
                }
            },
        };

        let mut providers = Vec::with_capacity(self.providers.len());
        let mut names = HashSet::new();
        for (i, p) in self.providers.into_iter().enumerate() {
            let at = |key: &str| format!("providers[{i}].{key}");
            if p.name.is_empty() {
                return Err(ConfigError::new(at("name"), "must not be empty"));
            }
            if !names.insert(p.name.clone()) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("a provider named `{}` is already defined", p.name),
                ));
            }
            providers.push(load_provider(p, env, &at)?);
        }

        let mut models = Vec::with_capacity(self.models.len());
        let mut model_names = HashSet::new();
        for (i, m) in self.models.into_iter().enumerate() {
            let at = |key: &str| format!("models[{i}].{key}");
            if m.name.is_empty() {
                return Err(ConfigError::new(at("name"), "must not be empty"));
            }
            if !model_names.insert(m.name.clone()) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("a model named `{}` is already defined", m.name),
                ));
            }
            let provider = providers
                .iter()
                .position(|p| p.name == m.provider)
                .ok_or_else(|| {
                    ConfigError::new(
                        at("provider"),
                        format!("no provider named `{}` is defined", m.provider),
                    )
                })?;
            if let Some(price) = &m.price {
                let all = [
                    Some(price.input),
                    Some(price.output),
                    price.cached_input,
                    price.cache_write,
                ];
                if all.iter().flatten().any(|v| !v.is_finite() || *v < 0.0) {
                    return Err(ConfigError::new(
                        at("price"),
                        "prices must be non-negative numbers (USD per million tokens)",
                    ));
                }
            }
            let cache_policy = match &m.cache {
                Some(c) => c.apply(&cache.policy, &at("cache"))?,
                None => cache.policy,
            };
            let limits = m.limits.unwrap_or_default().check(&at("limits"))?;
            let is_local = providers[provider].kind == ProviderType::Local;
            let local_model = if is_local {
                let path = m.path.clone().ok_or_else(|| {
                    ConfigError::new(
                        at("path"),
                        "a `local` model needs a path: its GGUF file, or its embedding model's directory",
                    )
                })?;
                if m.parallel == Some(0) {
                    return Err(ConfigError::new(at("parallel"), "must be greater than 0"));
                }
                Some(LocalModelConfig {
                    path,
                    sha256: m.sha256.clone(),
                    keep_alive: m.keep_alive.clone(),
                    pin: m.pin,
                    preload: m.preload,
                    context_length: m.context_length,
                    parallel: m.parallel.unwrap_or(local.parallel),
                })
            } else {
                let local_only = [
                    ("path", m.path.is_some()),
                    ("sha256", m.sha256.is_some()),
                    ("keep_alive", m.keep_alive.is_some()),
                    ("pin", m.pin),
                    ("preload", m.preload),
                    ("context_length", m.context_length.is_some()),
                    ("parallel", m.parallel.is_some()),
                ];
                if let Some((key, _)) = local_only.iter().find(|(_, set)| *set) {
                    return Err(ConfigError::new(
                        at(key),
                        "only applies to models of a `type = \"local\"` provider",
                    ));
                }
                None
            };
            models.push(ModelConfig {
                local: local_model,
                limits,
                cache: cache_policy,
                upstream: m.upstream.unwrap_or_else(|| m.name.clone()),
                name: m.name,
                provider,
                price: m.price,
                tier: m.tier,
                quality: m.quality.unwrap_or(0.0),
            });
        }
        let routing = self.routing.load()?;
        let routes = routes::load_routes(self.routes, &models, &routing, &cache.policy)?;

        Ok(Config {
            server,
            storage,
            providers,
            models,
            routing,
            routes,
            cache,
            keys,
            limits,
            spend,
            local,
        })
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn load_provider(
    p: UninitializedProviderConfig,
    env: &dyn Env,
    at: &dyn Fn(&str) -> String,
) -> Result<ProviderConfig, ConfigError> {
    let preset: Option<&Preset> = match &p.preset {
        Some(name) => Some(presets::find(name).ok_or_else(|| {
            ConfigError::new(
                at("preset"),
                format!(
                    "unknown preset `{name}`; expected one of {}",
                    presets::names()
                ),
            )
        })?),
        None => None,
    };
    if p.kind != ProviderType::OpenAi && p.preset.is_some() {
        return Err(ConfigError::new(
            at("preset"),
            "presets are for `type = \"openai\"` providers",
        ));
    }
    if p.kind != ProviderType::Anthropic
        && (p.default_max_tokens.is_some() || p.cache_system_min_bytes.is_some())
    {
        return Err(ConfigError::new(
            at(if p.default_max_tokens.is_some() {
                "default_max_tokens"
            } else {
                "cache_system_min_bytes"
            }),
            "only applies to `type = \"anthropic\"` providers",
        ));
    }
    if p.kind != ProviderType::Ollama && p.keep_alive.is_some() {
        return Err(ConfigError::new(
            at("keep_alive"),
            "only applies to `type = \"ollama\"` providers",
        ));
    }
    if p.kind == ProviderType::Local
        && (p.base_url.is_some() || p.api_key.is_some() || p.passthrough)
    {
        return Err(ConfigError::new(
            at(if p.base_url.is_some() {
                "base_url"
            } else if p.api_key.is_some() {
                "api_key"
            } else {
                "passthrough"
            }),
            "does not apply to `type = \"local\"` providers: sluice runs their models itself",
        ));
    }
    let base_url = match (&p.base_url, preset, p.kind) {
        (None, None, ProviderType::Local) => "http://local.invalid".to_string(),
        (Some(u), _, _) => u.trim_end_matches('/').to_string(),
        (None, Some(pr), _) => pr.base_url.to_string(),
        (None, None, ProviderType::Anthropic) => "https://api.anthropic.com".to_string(),
        (None, None, ProviderType::Ollama) => "http://127.0.0.1:11434".to_string(),
        (None, None, ProviderType::Gemini) => {
            "https://generativelanguage.googleapis.com".to_string()
        }
        (None, None, ProviderType::OpenAi) => presets::PRESETS[0].base_url.to_string(),
    };
    let rest = base_url
        .strip_prefix("http://")
        .or_else(|| base_url.strip_prefix("https://"))
        .ok_or_else(|| {
            ConfigError::new(
                at("base_url"),
                format!("`{base_url}` must start with http:// or https://"),
            )
        })?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || rest.contains(char::is_whitespace) || rest.contains(['?', '#']) {
        return Err(ConfigError::new(
            at("base_url"),
            format!("`{base_url}` is not a valid API root URL"),
        ));
    }
    let api_key = p
        .api_key
        .as_deref()
        .map(|k| resolve_secret(k, env, &at("api_key")))
        .transpose()?;
    let mut headers = Vec::with_capacity(p.headers.len());
    for (name, value) in &p.headers {
        let path = at(&format!("headers.{name}"));
        if !is_token(name) {
            return Err(ConfigError::new(path, "is not a valid HTTP header name"));
        }
        let value = resolve_secret(value, env, &path)?;
        if value
            .expose()
            .bytes()
            .any(|b| b == b'\r' || b == b'\n' || b == 0)
        {
            return Err(ConfigError::new(
                path,
                "header values must not contain line breaks",
            ));
        }
        headers.push((name.to_ascii_lowercase(), value));
    }
    let nonzero = |v: Option<u64>, key: &str, default: u64| match v {
        Some(0) => Err(ConfigError::new(at(key), "must be greater than 0")),
        Some(v) => Ok(MS(v)),
        None => Ok(MS(default)),
    };
    Ok(ProviderConfig {
        connect_timeout: nonzero(p.connect_timeout_ms, "connect_timeout_ms", 5_000)?,
        timeout: nonzero(p.timeout_ms, "timeout_ms", 600_000)?,
        chunk_timeout: nonzero(p.chunk_timeout_ms, "chunk_timeout_ms", 120_000)?,
        pool_idle_timeout: nonzero(p.pool_idle_timeout_ms, "pool_idle_timeout_ms", 90_000)?,
        pool_max_idle_per_host: p.pool_max_idle_per_host.unwrap_or(256),
        http2_prior_knowledge: p.http2_prior_knowledge,
        stream_usage: p
            .stream_usage
            .unwrap_or_else(|| preset.is_none_or(|pr| pr.stream_usage)),
        passthrough: p.passthrough,
        default_max_tokens: match p.default_max_tokens {
            Some(0) => {
                return Err(ConfigError::new(
                    at("default_max_tokens"),
                    "must be greater than 0",
                ))
            }
            Some(n) => n,
            None => 4096,
        },
        cache_system_min_bytes: p.cache_system_min_bytes,
        keep_alive: p.keep_alive,
        name: p.name,
        kind: p.kind,
        base_url,
        api_key,
        headers,
    })
}

/// Applies `SLUICE__SECTION__KEY=value` overrides to the parsed file. The value is read as
/// a TOML value when it parses as one (`8080`, `true`, `"x"`), else as a plain string.
fn apply_overrides(table: &mut toml::Table, env: &dyn Env) -> Result<(), ConfigError> {
    for (var, raw) in env.with_prefix(OVERRIDE_PREFIX) {
        let path: Vec<String> = var[OVERRIDE_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                "",
                format!("environment override `{var}` must have the form SLUICE__SECTION__KEY"),
            ));
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let mut node = &mut *table;
        for part in &path[..path.len() - 1] {
            let entry = node
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry.as_table_mut().ok_or_else(|| {
                ConfigError::new(
                    part.clone(),
                    format!("`{var}` overrides a key that is not a table"),
                )
            })?;
        }
        if let Some(last) = path.last() {
            node.insert(last.clone(), value);
        }
    }
    Ok(())
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn from_file(path: &Path, env: &dyn Env) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "",
                format!("cannot read config file `{}`: {e}", path.display()),
            )
        })?;
        UninitializedConfig::parse(&text, env)?.load(env)
    }

    /// Parses and validates config text.
    pub fn from_toml(text: &str, env: &dyn Env) -> Result<Self, ConfigError> {
        UninitializedConfig::parse(text, env)?.load(env)
    }

    /// The config used without a file: a passthrough provider for every preset whose key
    /// variable is set, plus `extra` providers found by probing (Ollama), plus a `local`
    /// provider for the models in `<data_dir>/models` (and Ollama's store when no Ollama
    /// server answers: a running Ollama serves its own models).
    pub fn from_env(env: &dyn Env, ollama_base_url: Option<String>) -> Result<Self, ConfigError> {
        let mut text = String::new();
        if ollama_base_url.is_some() {
            text.push_str("[local]\nollama = false\n\n");
        }
        for preset in presets::PRESETS.iter().filter(|p| !p.key_env.is_empty()) {
            if env.get(preset.key_env).is_some() {
                text.push_str(&format!(
                    "[[providers]]\nname = \"{0}\"\ntype = \"openai\"\npreset = \"{0}\"\napi_key = \"env::{1}\"\npassthrough = true\n\n",
                    preset.name, preset.key_env
                ));
            }
        }
        if let Some(url) = ollama_base_url {
            text.push_str(&format!(
                "[[providers]]\nname = \"ollama\"\ntype = \"openai\"\npreset = \"ollama\"\nbase_url = {}\npassthrough = true\n",
                serde_json::to_string(&url).unwrap_or_default()
            ));
        }
        text.push_str("\n[[providers]]\nname = \"local\"\ntype = \"local\"\n");
        Self::from_toml(&text, env)
    }

    /// A config for tests: listens on an ephemeral loopback port, no providers.
    pub fn test_default() -> Self {
        let mut c = UninitializedConfig::default()
            .load(&crate::env::MapEnv::default())
            .unwrap_or_else(|e| unreachable!("the empty config is valid: {e}"));
        c.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c
    }
}
