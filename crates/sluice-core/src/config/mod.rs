//! Configuration: one TOML file, loaded in two phases.
//!
//! 1. The file is parsed into a TOML table, `SLUICE__SECTION__KEY` environment overrides are
//!    applied to it, and it is deserialised into the `Uninitialized*` structs with
//!    `deny_unknown_fields`; errors name the failing key path (`providers[1].base_url`).
//! 2. [`UninitializedConfig::load`] resolves secrets and presets and checks the rules that
//!    span fields (unique names, models pointing at existing providers, URLs that parse),
//!    returning an immutable [`Config`].
//!
//! Each section has a module of its own, with the section as written, as validated, and the
//! load from one to the other; [`UninitializedConfig::load`] runs the loads one section
//! after the other and stops at the first error. Everything public is re-exported here.
//!
//! With no file at all, [`Config::from_env`] builds providers from the usual API-key
//! variables (see [`crate::env`]).

use crate::env::Env;
use crate::presets;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

mod batches;
mod cache;
mod error;
mod files;
mod guardrails;
mod health;
mod ledger;
mod local;
mod models;
mod observability;
mod overrides;
mod providers;
mod responses;
mod routes;
mod server;
mod storage;
#[cfg(test)]
mod tests;
mod values;

pub use crate::pricing::Price;
pub use crate::routing::Tier;
pub use batches::{BatchesConfig, UninitializedBatchesConfig};
pub use cache::{
    CacheConfig, CachePolicy, CacheScope, RerankCheck, SemanticPolicy, UninitializedCacheConfig,
    UninitializedCachePolicy, UninitializedSemantic, DEFAULT_RERANK_THRESHOLD,
    DEFAULT_SEMANTIC_THRESHOLD, DEFAULT_TTL as DEFAULT_CACHE_TTL,
};
pub use error::ConfigError;
pub use files::{FilesConfig, UninitializedFilesConfig};
pub use guardrails::{
    GuardrailConfig, UninitializedGuardrail, UninitializedValidateJson, UninitializedWebhook,
    ValidateJson, WebhookConfig,
};
pub use health::{HealthCheckConfig, HealthCheckKind, UninitializedHealthCheck};
pub use ledger::{
    KeysConfig, LimitsConfig, SpendConfig, TargetLimits, UninitializedKeysConfig,
    UninitializedLimitsConfig, UninitializedSpendConfig,
};
pub use local::{LocalConfig, UninitializedLocalConfig};
pub use models::{EmbedPrecision, LocalModelConfig, ModelConfig, UninitializedModelConfig};
pub use observability::{ObservabilityConfig, OtlpEndpoint, UninitializedObservabilityConfig};
pub use providers::{
    BatchMode, ProviderConfig, ProviderType, ResponsesMode, UninitializedProviderConfig,
};
pub use responses::{ResponsesConfig, UninitializedResponsesConfig};
pub use routes::{
    CanaryConfig, RouteConfig, RoutingConfig, UninitializedCanary, UninitializedRetry,
    UninitializedRoute, UninitializedRouting, UninitializedTiers,
};
pub use server::{InFlight, LogFormat, ServerConfig, UninitializedServerConfig};
pub use storage::{StorageConfig, UninitializedStorageConfig};

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
    /// `[files]`: the Files API's store.
    #[serde(default)]
    pub files: UninitializedFilesConfig,
    /// `[batches]`: the Batch API, run by sluice.
    #[serde(default)]
    pub batches: UninitializedBatchesConfig,
    /// `[[guardrails]]`.
    #[serde(default)]
    pub guardrails: Vec<UninitializedGuardrail>,
    /// `[responses]`: the Responses API's stored responses.
    #[serde(default)]
    pub responses: UninitializedResponsesConfig,
    /// `[observability]`: traces.
    #[serde(default)]
    pub observability: UninitializedObservabilityConfig,
}

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
    /// `[files]`.
    pub files: FilesConfig,
    /// `[batches]`.
    pub batches: BatchesConfig,
    /// `[[guardrails]]`, in file order (models and routes refer to them by index).
    pub guardrails: Vec<GuardrailConfig>,
    /// `[responses]`.
    pub responses: ResponsesConfig,
    /// `[observability]`.
    pub observability: ObservabilityConfig,
}

impl UninitializedConfig {
    /// Parses TOML text, with `SLUICE__SECTION__KEY` overrides from `env` applied first.
    pub fn parse(text: &str, env: &dyn Env) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new("", format!("invalid TOML: {e}")))?;
        overrides::apply(&mut table, env)?;
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

    /// Checks cross-field rules and resolves secrets, giving the immutable config. The
    /// sections are checked in a fixed order, providers before the models that name them and
    /// models before the routes, and the first error is the one returned.
    pub fn load(self, env: &dyn Env) -> Result<Config, ConfigError> {
        let server = self.server.load(env)?;
        let storage = self.storage.load(env)?;
        let cache = self.cache.load()?;
        let keys = self.keys.load()?;
        let limits = self.limits.load()?;
        let spend = self.spend.load()?;
        let local = self.local.load()?;
        let files = self.files.load()?;
        let batches = self.batches.load()?;
        let guardrails = guardrails::load_guardrails(self.guardrails, env)?;
        let responses = self.responses.load()?;
        let observability = self.observability.load()?;
        let providers = providers::load_providers(self.providers, env)?;
        let models =
            models::load_models(self.models, &providers, &cache.policy, &local, &guardrails)?;
        let routing = self.routing.load()?;
        let routes =
            routes::load_routes(self.routes, &models, &routing, &cache.policy, &guardrails)?;
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
            files,
            batches,
            guardrails,
            responses,
            observability,
        })
    }
}

impl Config {
    /// The bound on requests to the proxied endpoints running at once (see [`InFlight`]);
    /// `None`: no bound.
    pub fn requests_in_flight_bound(&self) -> Option<usize> {
        match self.server.max_requests_in_flight {
            InFlight::At(n) => Some(n),
            InFlight::Unbounded => None,
            InFlight::ProvidersSum => self
                .providers
                .iter()
                .try_fold(0usize, |sum, p| {
                    (p.max_connections > 0).then(|| sum.saturating_add(p.max_connections))
                })
                .filter(|&n| n > 0),
        }
    }

    /// Reads, parses and validates a config file.
    pub fn from_file(path: &Path, env: &dyn Env) -> Result<Self, ConfigError> {
        Self::from_toml(&Self::read_file(path)?, env)
    }

    /// A config file's text, or the error that names the file.
    pub fn read_file(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "",
                format!("cannot read config file `{}`: {e}", path.display()),
            )
        })
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
