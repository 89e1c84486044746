//! `[cache]` (the response cache's defaults and its stores' bounds) and the `cache = { ... }`
//! policy overrides of `[[models]]` and `[[routes]]`.

use super::error::ConfigError;
use super::values::{positive, MS};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Default time an entry lives: 7 days.
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whose answers a cached answer may be served to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// Only to the virtual key whose request made it (callers without a virtual key share
    /// one scope): one tenant's answers never reach another, and a hit tells nothing about
    /// another tenant's prompts.
    #[default]
    Key,
    /// To every caller: for a gateway that serves one application.
    Global,
}

/// The similarity a semantic hit needs when `threshold` is not set.
pub const DEFAULT_SEMANTIC_THRESHOLD: f32 = 0.85;

/// `semantic = { model = "...", threshold = 0.9 }` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedSemantic {
    /// The embedding model (a `[[models]]` name) that embeds the last user message.
    pub model: String,
    /// Cosine similarity from which a stored question counts as the same (0 to 1).
    pub threshold: Option<f32>,
    /// A reranker model (a `[[models]]` name) that must score the two questions as the same.
    pub reranker: Option<String>,
    /// The reranker's score from which the two count as the same.
    pub rerank_threshold: Option<f32>,
}

/// The reranker score a semantic hit needs when `rerank_threshold` is not set (a
/// cross-encoder's sigmoid output: more likely the same question than not).
pub const DEFAULT_RERANK_THRESHOLD: f32 = 0.5;

/// A cross-encoder that confirms a semantic candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct RerankCheck {
    /// The reranker model's name.
    pub model: Arc<str>,
    /// The score needed (in the model's own scale: 0 to 1 for a sigmoid head).
    pub threshold: f32,
}

/// The semantic stage of a target's cache: a question worded differently from a cached one
/// is answered from it when their embeddings are this similar and the checks agree.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticPolicy {
    /// The embedding model's name.
    pub model: Arc<str>,
    /// Cosine similarity needed.
    pub threshold: f32,
    /// The reranker's check, if one is configured.
    pub reranker: Option<RerankCheck>,
}

impl UninitializedSemantic {
    fn load(&self, at: &str) -> Result<SemanticPolicy, ConfigError> {
        if self.model.is_empty() {
            return Err(ConfigError::new(
                format!("{at}.semantic.model"),
                "must name a model",
            ));
        }
        let threshold = self.threshold.unwrap_or(DEFAULT_SEMANTIC_THRESHOLD);
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(ConfigError::new(
                format!("{at}.semantic.threshold"),
                "must be greater than 0 and at most 1",
            ));
        }
        let reranker = match (&self.reranker, self.rerank_threshold) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{at}.semantic.rerank_threshold"),
                    "needs `reranker`",
                ))
            }
            (Some(m), _) if m.is_empty() => {
                return Err(ConfigError::new(
                    format!("{at}.semantic.reranker"),
                    "must name a model",
                ))
            }
            (Some(_), Some(t)) if !t.is_finite() => {
                return Err(ConfigError::new(
                    format!("{at}.semantic.rerank_threshold"),
                    "must be a finite number",
                ))
            }
            (Some(m), t) => Some(RerankCheck {
                model: Arc::from(m.as_str()),
                threshold: t.unwrap_or(DEFAULT_RERANK_THRESHOLD),
            }),
        };
        Ok(SemanticPolicy {
            model: Arc::from(self.model.as_str()),
            threshold,
            reranker,
        })
    }
}

/// `cache = { ... }` of a model or route as written: each key overrides `[cache]`'s.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedCachePolicy {
    /// Cache this target's answers.
    pub enabled: Option<bool>,
    /// Seconds an entry lives.
    pub ttl_seconds: Option<u64>,
    /// Also cache requests that may answer differently each time (temperature above 0 and
    /// no seed).
    pub nondeterministic: Option<bool>,
    /// Largest answer stored, in bytes.
    pub max_entry_bytes: Option<u64>,
    /// Let identical requests in flight wait for the first one's answer.
    pub coalesce: Option<bool>,
    /// Whose answers are shared: `key` or `global`.
    pub scope: Option<CacheScope>,
    /// The semantic stage, after the exact lookup.
    pub semantic: Option<UninitializedSemantic>,
}

/// `[cache]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedCacheConfig {
    /// Cache answers (default `false`).
    pub enabled: Option<bool>,
    /// Seconds an entry lives (default 7 days).
    pub ttl_seconds: Option<u64>,
    /// Cache non-deterministic requests too (default `false`).
    pub nondeterministic: Option<bool>,
    /// Largest answer stored (default 4 MiB).
    pub max_entry_bytes: Option<u64>,
    /// Coalesce identical in-flight requests (default `true`).
    pub coalesce: Option<bool>,
    /// Whose answers are shared (default `key`).
    pub scope: Option<CacheScope>,
    /// The semantic stage of every target without its own (default: none).
    pub semantic: Option<UninitializedSemantic>,
    /// Bytes held by the in-memory tier (default 128 MiB).
    pub memory_bytes: Option<u64>,
    /// Bytes held by the SQLite file (default 1 GiB).
    pub disk_bytes: Option<u64>,
    /// Bytes of vectors held by the semantic index (default 100,000 of 384 dimensions).
    pub semantic_bytes: Option<u64>,
    /// Longest wait for the shared store (Redis) per operation (default 100 ms).
    pub store_timeout_ms: Option<u64>,
}

/// How one target (a model or a route) caches, `[cache]` merged with its own overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePolicy {
    /// Cache at all.
    pub enabled: bool,
    /// Entry lifetime.
    pub ttl: Duration,
    /// Cache requests that may answer differently each time.
    pub nondeterministic: bool,
    /// Cache chat requests that sample (temperature above 0, no seed): `nondeterministic`,
    /// or, unless `nondeterministic` is written, a semantic stage here (its hits answer
    /// other wordings anyway, so a sampled answer is one of the interchangeable ones).
    pub sampled_chat: bool,
    /// Largest answer stored.
    pub max_entry_bytes: u64,
    /// Coalesce identical in-flight requests.
    pub coalesce: bool,
    /// Whose answers are shared.
    pub scope: CacheScope,
    /// The semantic stage, if any.
    pub semantic: Option<SemanticPolicy>,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl: DEFAULT_TTL,
            nondeterministic: false,
            sampled_chat: false,
            max_entry_bytes: 4 << 20,
            coalesce: true,
            scope: CacheScope::Key,
            semantic: None,
        }
    }
}

/// The semantic index's default bound: 100,000 vectors of 384 dimensions (all-MiniLM-L6-v2),
/// in `f32`.
pub const DEFAULT_SEMANTIC_BYTES: usize = 100_000 * 384 * 4;

/// Validated `[cache]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// The policy of targets without their own.
    pub policy: CachePolicy,
    /// In-memory tier bound.
    pub memory_bytes: u64,
    /// SQLite bound.
    pub disk_bytes: u64,
    /// Semantic index bound (bytes of vectors).
    pub semantic_bytes: usize,
    /// Redis operation timeout.
    pub store_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            policy: CachePolicy::default(),
            memory_bytes: 128 << 20,
            disk_bytes: 1 << 30,
            semantic_bytes: DEFAULT_SEMANTIC_BYTES,
            store_timeout: Duration::from_millis(100),
        }
    }
}

fn ttl(seconds: Option<u64>, base: Duration, at: &str) -> Result<Duration, ConfigError> {
    match seconds {
        Some(0) => Err(ConfigError::new(
            format!("{at}.ttl_seconds"),
            "must be greater than 0",
        )),
        Some(s) => Ok(Duration::from_secs(s)),
        None => Ok(base),
    }
}

impl UninitializedCachePolicy {
    /// This override applied to `base`; `at` is the key path for errors.
    ///
    /// A `semantic` block written here is a request to cache: it turns `enabled` on, and the
    /// caching of sampled chat requests (`sampled_chat`), where they are not written beside it
    /// (a semantic cache serves one question's answer for another, so a sampled answer is one
    /// of the interchangeable ones). Other endpoints' sampled requests (images, speech) stay
    /// as `nondeterministic` says.
    pub fn apply(&self, base: &CachePolicy, at: &str) -> Result<CachePolicy, ConfigError> {
        let semantic_here = self.semantic.is_some();
        let nondeterministic = self.nondeterministic.unwrap_or(base.nondeterministic);
        Ok(CachePolicy {
            enabled: self.enabled.unwrap_or(base.enabled || semantic_here),
            ttl: ttl(self.ttl_seconds, base.ttl, at)?,
            nondeterministic,
            sampled_chat: self
                .nondeterministic
                .unwrap_or(nondeterministic || base.sampled_chat || semantic_here),
            max_entry_bytes: self.max_entry_bytes.unwrap_or(base.max_entry_bytes),
            coalesce: self.coalesce.unwrap_or(base.coalesce),
            scope: self.scope.unwrap_or(base.scope),
            semantic: match &self.semantic {
                Some(s) => Some(s.load(at)?),
                None => base.semantic.clone(),
            },
        })
    }
}

impl UninitializedCacheConfig {
    /// Validates `[cache]`.
    pub fn load(self) -> Result<CacheConfig, ConfigError> {
        let d = CacheConfig::default();
        let policy = UninitializedCachePolicy {
            enabled: self.enabled,
            ttl_seconds: self.ttl_seconds,
            nondeterministic: self.nondeterministic,
            max_entry_bytes: self.max_entry_bytes,
            coalesce: self.coalesce,
            scope: self.scope,
            semantic: self.semantic,
        }
        .apply(&d.policy, "cache")?;
        Ok(CacheConfig {
            policy,
            memory_bytes: positive(self.memory_bytes, "cache.memory_bytes", d.memory_bytes)?,
            disk_bytes: positive(self.disk_bytes, "cache.disk_bytes", d.disk_bytes)?,
            semantic_bytes: usize::try_from(positive(
                self.semantic_bytes,
                "cache.semantic_bytes",
                d.semantic_bytes as u64,
            )?)
            .unwrap_or(usize::MAX),
            store_timeout: MS(positive(
                self.store_timeout_ms,
                "cache.store_timeout_ms",
                100,
            )?),
        })
    }
}
