//! `[[providers]] health_check`: an active check of a provider, run in the background at an
//! interval, whose results feed the breakers of the provider's deployments.

use super::error::ConfigError;
use super::values::{positive, MS};
use serde::Deserialize;
use std::time::Duration;

/// `health_check = { ... }` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedHealthCheck {
    /// Time between two checks (default 30000).
    pub interval_ms: Option<u64>,
    /// Longest wait for one check's answer (default 5000).
    pub timeout_ms: Option<u64>,
    /// `models` (default: the provider's model list) or `chat` (a 1-token chat completion).
    pub kind: Option<String>,
    /// `chat`: the upstream model asked.
    pub model: Option<String>,
    /// Failed checks in a row that open the breakers (default 2).
    pub failures: Option<u32>,
}

/// What a check asks the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// Its model list: `GET {base_url}/models` (`openai`), `GET /v1/models` (`anthropic`),
    /// `GET /v1beta/models` (`gemini`), `GET /api/tags` (`ollama`). Costs nothing.
    Models,
    /// A chat completion of one token from `model` (the upstream's id), `"ping"` as prompt.
    Chat {
        /// The upstream model asked.
        model: String,
    },
}

impl HealthCheckKind {
    /// Name used in config, logs and `/health/detailed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Models => "models",
            Self::Chat { .. } => "chat",
        }
    }
}

/// A validated `health_check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// Time between two checks (each replica jitters it by up to ±10%).
    pub interval: Duration,
    /// Longest wait for one check's answer; over it the check failed.
    pub timeout: Duration,
    /// What the check asks.
    pub kind: HealthCheckKind,
    /// Failed checks in a row that open the breakers of the provider's deployments.
    pub failures: u32,
}

/// Validates `health_check` of a provider; `at` gives the key path of a key of the provider.
pub(super) fn load_health_check(
    h: UninitializedHealthCheck,
    local: bool,
    at: &dyn Fn(&str) -> String,
) -> Result<HealthCheckConfig, ConfigError> {
    let key = |k: &str| at(&format!("health_check.{k}"));
    if local {
        return Err(ConfigError::new(
            at("health_check"),
            "does not apply to `type = \"local\"` providers: sluice runs their models itself",
        ));
    }
    let kind =
        match (h.kind.as_deref().unwrap_or("models"), h.model) {
            ("models", None) => HealthCheckKind::Models,
            ("models", Some(_)) => {
                return Err(ConfigError::new(
                    key("model"),
                    "only applies to `kind = \"chat\"` (a `models` check asks for no model)",
                ))
            }
            ("chat", Some(model)) if !model.is_empty() => HealthCheckKind::Chat { model },
            ("chat", _) => return Err(ConfigError::new(
                key("model"),
                "`kind = \"chat\"` needs the upstream model to ask, e.g. `model = \"gpt-4o-mini\"`",
            )),
            (other, _) => {
                return Err(ConfigError::new(
                    key("kind"),
                    format!("unknown kind `{other}`: expected `models` or `chat`"),
                ))
            }
        };
    Ok(HealthCheckConfig {
        interval: MS(positive(h.interval_ms, &key("interval_ms"), 30_000)?),
        timeout: MS(positive(h.timeout_ms, &key("timeout_ms"), 5_000)?),
        kind,
        failures: positive(h.failures, &key("failures"), 2)?,
    })
}
