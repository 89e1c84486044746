//! `[[models]]`: what clients may ask for by name, the provider serving each, its price,
//! tier and quality, its cache and limits, and, on a `local` provider, its runtime
//! settings.

use super::cache::{CachePolicy, UninitializedCachePolicy};
use super::error::ConfigError;
use super::guardrails::GuardrailConfig;
use super::ledger::TargetLimits;
use super::local::LocalConfig;
use super::providers::{ProviderConfig, ProviderType};
use crate::pricing::Price;
use crate::routing::Tier;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::PathBuf;

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
    /// `local` models: context length, up to the file's (default `[local] context_length`).
    pub context_length: Option<usize>,
    /// `local` models: sequences generated at once (default `[local] parallel`).
    pub parallel: Option<usize>,
    /// `local` embedding models: how the encoder's linear layers compute (`f32`, the default,
    /// or `int8`).
    pub embed_precision: Option<EmbedPrecision>,
    /// The `[[guardrails]]` applied to this model's requests and answers.
    pub guardrails: Option<Vec<String>>,
}

/// Validated `[[models]]`.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// What clients send.
    pub name: String,
    /// Index into [`Config::providers`](super::Config::providers).
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
    /// Its guardrails: indexes into the config's `[[guardrails]]`.
    pub guardrails: Vec<usize>,
}

/// How a local embedding model's encoder computes its linear layers (`embed_precision`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedPrecision {
    /// `f32`: vectors as sentence-transformers computes them.
    #[default]
    F32,
    /// `int8`: 8-bit weights and activations (AVX-512 VNNI; `f32` where the CPU lacks it):
    /// faster, vectors within a cosine of about 0.998 of `f32`'s.
    Int8,
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
    /// Context length (`None`: `[local] context_length`); a file's smaller own limit is checked
    /// when the gateway starts.
    pub context_length: Option<usize>,
    /// Parallel sequences.
    pub parallel: usize,
    /// Embedding models: the encoder's precision.
    pub embed_precision: EmbedPrecision,
}

/// Validates `[[models]]` against the providers: unique names, existing providers, prices,
/// and the keys of `local` models. Models without a cache policy of their own take `cache`,
/// and `local` models without `parallel` take `local`'s.
pub(super) fn load_models(
    models: Vec<UninitializedModelConfig>,
    providers: &[ProviderConfig],
    cache: &CachePolicy,
    local: &LocalConfig,
    guardrails: &[GuardrailConfig],
) -> Result<Vec<ModelConfig>, ConfigError> {
    let mut out = Vec::with_capacity(models.len());
    let mut names = HashSet::new();
    for (i, m) in models.into_iter().enumerate() {
        let at = |key: &str| format!("models[{i}].{key}");
        if m.name.is_empty() {
            return Err(ConfigError::new(at("name"), "must not be empty"));
        }
        if !names.insert(m.name.clone()) {
            return Err(ConfigError::new(
                at("name"),
                format!("a model named `{}` is already defined", m.name),
            ));
        }
        let guards =
            super::guardrails::resolve(m.guardrails.as_deref(), guardrails, &at("guardrails"))?;
        let mut model = load_model(m, providers, cache, local, &at)?;
        model.guardrails = guards;
        out.push(model);
    }
    Ok(out)
}

/// One model; `at` gives the key path of a key of it.
fn load_model(
    m: UninitializedModelConfig,
    providers: &[ProviderConfig],
    cache: &CachePolicy,
    local: &LocalConfig,
    at: &dyn Fn(&str) -> String,
) -> Result<ModelConfig, ConfigError> {
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
        check_price(price, at)?;
    }
    let cache_policy = match &m.cache {
        Some(c) => c.apply(cache, &at("cache"))?,
        None => cache.clone(),
    };
    let limits = m.limits.unwrap_or_default().check(&at("limits"))?;
    let local_model = if providers[provider].kind == ProviderType::Local {
        Some(local_model(&m, local, at)?)
    } else {
        refuse_local_keys(&m, at)?;
        None
    };
    Ok(ModelConfig {
        guardrails: Vec::new(),
        local: local_model,
        limits,
        cache: cache_policy,
        upstream: m.upstream.unwrap_or_else(|| m.name.clone()),
        name: m.name,
        provider,
        price: m.price,
        tier: m.tier,
        quality: m.quality.unwrap_or(0.0),
    })
}

/// Every price must be a non-negative number.
fn check_price(price: &Price, at: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if price.values().iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Err(ConfigError::new(
            at("price"),
            "prices must be non-negative numbers (USD per million tokens)",
        ));
    }
    Ok(())
}

/// The runtime settings of a model on a `local` provider, which needs a path.
fn local_model(
    m: &UninitializedModelConfig,
    local: &LocalConfig,
    at: &dyn Fn(&str) -> String,
) -> Result<LocalModelConfig, ConfigError> {
    let path = m.path.clone().ok_or_else(|| {
        ConfigError::new(
            at("path"),
            "a `local` model needs a path: its GGUF file, or its embedding model's directory",
        )
    })?;
    if m.parallel == Some(0) {
        return Err(ConfigError::new(at("parallel"), "must be greater than 0"));
    }
    if m.context_length == Some(0) {
        return Err(ConfigError::new(
            at("context_length"),
            "must be greater than 0",
        ));
    }
    Ok(LocalModelConfig {
        path,
        sha256: m.sha256.clone(),
        keep_alive: m.keep_alive.clone(),
        pin: m.pin,
        preload: m.preload,
        context_length: m.context_length,
        parallel: m.parallel.unwrap_or(local.parallel),
        embed_precision: m.embed_precision.unwrap_or_default(),
    })
}

/// Refuses the keys that only apply to models of a `local` provider.
fn refuse_local_keys(
    m: &UninitializedModelConfig,
    at: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    let local_only = [
        ("path", m.path.is_some()),
        ("sha256", m.sha256.is_some()),
        ("keep_alive", m.keep_alive.is_some()),
        ("pin", m.pin),
        ("preload", m.preload),
        ("context_length", m.context_length.is_some()),
        ("parallel", m.parallel.is_some()),
        ("embed_precision", m.embed_precision.is_some()),
    ];
    if let Some((key, _)) = local_only.iter().find(|(_, set)| *set) {
        return Err(ConfigError::new(
            at(key),
            "only applies to models of a `type = \"local\"` provider",
        ));
    }
    Ok(())
}
