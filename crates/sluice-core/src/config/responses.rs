//! `[responses]`: the Responses API's stored responses (`store: true`, the default): how
//! long they are kept and how large one may be. They live where the ledger does
//! (`responses.sqlite` in `storage.data_dir`, or the PostgreSQL of `storage.database_url`).

use super::error::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// How long a stored response is kept by default: 30 days, as OpenAI keeps them.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The largest stored response by default (its object, input items and conversation).
pub const DEFAULT_MAX_BYTES: u64 = 32 << 20;

/// `[responses]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedResponsesConfig {
    /// Seconds a stored response is kept (default 30 days).
    pub ttl_seconds: Option<u64>,
    /// Largest stored response in bytes (default 32 MiB); a larger one is not stored.
    pub max_bytes: Option<u64>,
}

/// Validated `[responses]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsesConfig {
    /// How long a stored response is kept.
    pub ttl: Duration,
    /// Largest stored response in bytes.
    pub max_bytes: u64,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl UninitializedResponsesConfig {
    pub(crate) fn load(self) -> Result<ResponsesConfig, ConfigError> {
        if self.ttl_seconds == Some(0) {
            return Err(ConfigError::new(
                "responses.ttl_seconds",
                "must be at least 1 (a response kept for no time cannot be continued)",
            ));
        }
        if self.max_bytes == Some(0) {
            return Err(ConfigError::new(
                "responses.max_bytes",
                "must be at least 1",
            ));
        }
        let default = ResponsesConfig::default();
        Ok(ResponsesConfig {
            ttl: self.ttl_seconds.map_or(default.ttl, Duration::from_secs),
            max_bytes: self.max_bytes.unwrap_or(default.max_bytes),
        })
    }
}
