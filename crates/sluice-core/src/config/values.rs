//! Readers of values that every section writes the same way: secrets (a literal or
//! `env::VAR`), counts that must be positive, and durations in milliseconds.

use super::error::ConfigError;
use crate::env::Env;
use crate::secret::{Secret, ENV_PREFIX};
use std::time::Duration;

/// A `*_ms` value as a duration.
pub(super) const MS: fn(u64) -> Duration = Duration::from_millis;

/// `value` when set, which must then not be 0; else `default`.
pub(super) fn positive<T: PartialEq + From<u8>>(
    value: Option<T>,
    path: &str,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        Some(v) if v == T::from(0) => Err(ConfigError::new(path, "must be greater than 0")),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

/// `value` as written (a literal), or the environment variable it names (`env::VAR`).
pub(super) fn resolve_secret(
    value: &str,
    env: &dyn Env,
    path: &str,
) -> Result<Secret, ConfigError> {
    match value.strip_prefix(ENV_PREFIX) {
        Some(var) => env.get(var).map(Secret::new).ok_or_else(|| {
            ConfigError::new(path, format!("environment variable `{var}` is not set"))
        }),
        None => Ok(Secret::new(value)),
    }
}
