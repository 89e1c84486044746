//! `[keys]`, `[limits]` and `[spend]`: virtual keys, rate limits and budgets, and the spend
//! log; plus the `limits = { ... }` of `[[models]]` and `[[routes]]`.

use super::error::ConfigError;
use super::values::{positive, MS};
use serde::Deserialize;
use std::time::Duration;

/// `limits = { rpm, tpm, max_concurrent }` of a model or route, as written and validated.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetLimits {
    /// Requests per minute, over every key.
    pub rpm: Option<u64>,
    /// Tokens per minute (prompt + completion), over every key.
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u64>,
}

impl TargetLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.max_concurrent.is_some()
    }

    pub(crate) fn check(self, at: &str) -> Result<Self, ConfigError> {
        for (v, k) in [
            (self.rpm, "rpm"),
            (self.tpm, "tpm"),
            (self.max_concurrent, "max_concurrent"),
        ] {
            if v == Some(0) {
                return Err(ConfigError::new(
                    format!("{at}.{k}"),
                    "must be greater than 0 (leave it out for no limit)",
                ));
            }
        }
        Ok(self)
    }
}

/// `[keys]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedKeysConfig {
    /// How long a replica trusts its copy of a key before reading it again (default 5 s).
    pub cache_ttl_ms: Option<u64>,
}

/// `[limits]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedLimitsConfig {
    /// Completion tokens assumed when a request sets no `max_tokens` (default 512).
    pub default_completion_tokens: Option<u64>,
    /// Longest a concurrency slot or budget reservation is held if its request never ends
    /// (a replica died), in ms (default 600,000).
    pub lease_ms: Option<u64>,
    /// Longest wait for Redis per limiter call before falling back to in-process limits
    /// (default 100 ms).
    pub redis_timeout_ms: Option<u64>,
}

/// `[spend]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedSpendConfig {
    /// Keep the spend log (default `true`).
    pub enabled: Option<bool>,
    /// Days raw records are kept (default 30; 0: forever).
    pub retention_days: Option<u64>,
    /// Days daily roll-ups are kept (default 0: forever).
    pub rollup_retention_days: Option<u64>,
    /// Records written per batch at most (default 512).
    pub batch_size: Option<usize>,
    /// Records waiting beyond which new ones are dropped and counted (default 100,000).
    pub max_queued: Option<usize>,
}

/// Validated `[keys]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysConfig {
    /// Key cache lifetime.
    pub cache_ttl: Duration,
}

/// Validated `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Completion tokens assumed without `max_tokens`.
    pub default_completion_tokens: u64,
    /// Lease of concurrency slots and budget reservations.
    pub lease: Duration,
    /// Redis wait per limiter call.
    pub redis_timeout: Duration,
}

/// Validated `[spend]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendConfig {
    /// Keep the spend log.
    pub enabled: bool,
    /// Days raw records are kept (0: forever).
    pub retention_days: u64,
    /// Days roll-ups are kept (0: forever).
    pub rollup_retention_days: u64,
    /// Batch size.
    pub batch_size: usize,
    /// Queue bound.
    pub max_queued: usize,
}

impl UninitializedKeysConfig {
    pub(crate) fn load(self) -> Result<KeysConfig, ConfigError> {
        Ok(KeysConfig {
            cache_ttl: Duration::from_millis(self.cache_ttl_ms.unwrap_or(5_000)),
        })
    }
}

impl UninitializedLimitsConfig {
    pub(crate) fn load(self) -> Result<LimitsConfig, ConfigError> {
        Ok(LimitsConfig {
            default_completion_tokens: self.default_completion_tokens.unwrap_or(512),
            lease: MS(positive(self.lease_ms, "limits.lease_ms", 600_000)?),
            redis_timeout: MS(positive(
                self.redis_timeout_ms,
                "limits.redis_timeout_ms",
                100,
            )?),
        })
    }
}

impl UninitializedSpendConfig {
    pub(crate) fn load(self) -> Result<SpendConfig, ConfigError> {
        let batch_size = positive(self.batch_size, "spend.batch_size", 512)?;
        Ok(SpendConfig {
            enabled: self.enabled.unwrap_or(true),
            retention_days: self.retention_days.unwrap_or(30),
            rollup_retention_days: self.rollup_retention_days.unwrap_or(0),
            batch_size,
            max_queued: self.max_queued.unwrap_or(100_000),
        })
    }
}
