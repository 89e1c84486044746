//! `[batches]`: OpenAI's Batch API (`/v1/batches`), run by sluice itself or forwarded to a
//! provider's own. Its state lives
//! beside the files' (`files.sqlite`, or the PostgreSQL of `storage.database_url`), so it
//! needs `[files]` on.

use super::error::ConfigError;
use serde::Deserialize;

/// `[batches]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedBatchesConfig {
    /// Serve `/v1/batches` and run batches (default `true`; needs `[files]`).
    pub enabled: Option<bool>,
    /// Lines of one batch in flight at once (default 8).
    pub concurrency: Option<usize>,
    /// Batch lines wait while more interactive requests than this are in flight (default 64).
    pub yield_above: Option<u64>,
    /// Batches run at once by this gateway (default 4).
    pub max_running: Option<usize>,
    /// Most lines in one input file (default 50,000, OpenAI's bound).
    pub max_lines: Option<u64>,
    /// How often a batch forwarded to a provider's Batch API is polled (default 30,000 ms).
    pub poll_interval_ms: Option<u64>,
}

/// Validated `[batches]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchesConfig {
    /// Serve `/v1/batches` and run batches.
    pub enabled: bool,
    /// Lines of one batch in flight at once.
    pub concurrency: usize,
    /// Batch lines wait while more interactive requests than this are in flight.
    pub yield_above: u64,
    /// Batches run at once by this gateway.
    pub max_running: usize,
    /// Most lines in one input file.
    pub max_lines: u64,
    /// How often a forwarded batch is polled.
    pub poll_interval: std::time::Duration,
}

impl Default for BatchesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrency: 8,
            yield_above: 64,
            max_running: 4,
            max_lines: 50_000,
            poll_interval: std::time::Duration::from_secs(30),
        }
    }
}

impl UninitializedBatchesConfig {
    pub(crate) fn load(self) -> Result<BatchesConfig, ConfigError> {
        let d = BatchesConfig::default();
        let c = BatchesConfig {
            enabled: self.enabled.unwrap_or(d.enabled),
            concurrency: self.concurrency.unwrap_or(d.concurrency),
            yield_above: self.yield_above.unwrap_or(d.yield_above),
            max_running: self.max_running.unwrap_or(d.max_running),
            max_lines: self.max_lines.unwrap_or(d.max_lines),
            poll_interval: self
                .poll_interval_ms
                .map_or(d.poll_interval, std::time::Duration::from_millis),
        };
        for (key, value) in [
            ("batches.concurrency", c.concurrency as u64),
            ("batches.max_running", c.max_running as u64),
            ("batches.max_lines", c.max_lines),
            (
                "batches.poll_interval_ms",
                c.poll_interval.as_millis() as u64,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        Ok(c)
    }
}
