//! `[storage]`: where state is kept: the data directory of a lone replica, Redis and
//! PostgreSQL when replicas share it.

use super::error::ConfigError;
use super::values::resolve_secret;
use crate::env::Env;
use crate::secret::Secret;
use serde::Deserialize;
use std::path::PathBuf;

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

impl UninitializedStorageConfig {
    /// Validates `[storage]`, reading the URLs from `env` when they are `env::VAR`.
    pub(crate) fn load(self, env: &dyn Env) -> Result<StorageConfig, ConfigError> {
        let redis_url = url(
            self.redis_url.as_deref(),
            env,
            "storage.redis_url",
            &["redis://", "rediss://"],
            "must start with redis:// (e.g. `redis://127.0.0.1:6379`)",
        )?;
        let database_url = url(
            self.database_url.as_deref(),
            env,
            "storage.database_url",
            &["postgres://", "postgresql://"],
            "must start with postgres:// (e.g. `postgres://sluice@127.0.0.1/sluice`)",
        )?;
        Ok(StorageConfig {
            database_url,
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from(".sluice")),
            redis_url,
            redis_prefix: self.redis_prefix.unwrap_or_else(|| "sluice:".to_string()),
        })
    }
}

/// A URL, literal or `env::VAR`, that must start with one of `schemes` (else `refusal`).
fn url(
    value: Option<&str>,
    env: &dyn Env,
    path: &str,
    schemes: &[&str],
    refusal: &str,
) -> Result<Option<Secret>, ConfigError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let url = resolve_secret(value, env, path)?;
    if !schemes.iter().any(|s| url.expose().starts_with(s)) {
        return Err(ConfigError::new(path, refusal));
    }
    Ok(Some(url))
}
