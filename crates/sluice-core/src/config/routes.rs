//! `[routing]` (defaults for every route and model) and `[[routes]]` (virtual models).

use super::cache::{CachePolicy, UninitializedCachePolicy};
use super::error::ConfigError;
use super::guardrails::GuardrailConfig;
use super::ledger::TargetLimits;
use super::models::ModelConfig;
use super::values::MS;
use crate::breaker::BreakerConfig;
use crate::retry::RetryPolicy;
use crate::routing::{Strategy, Tier, TierRules};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// `retry = { ... }` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedRetry {
    /// Tries per deployment, the first included.
    pub attempts: Option<u32>,
    /// Backoff base.
    pub backoff_ms: Option<u64>,
    /// Largest backoff.
    pub max_backoff_ms: Option<u64>,
    /// Total waiting time per request.
    pub budget_ms: Option<u64>,
    /// Longest `Retry-After` waited for on the same deployment.
    pub max_retry_after_ms: Option<u64>,
}

impl UninitializedRetry {
    fn apply(&self, base: RetryPolicy, at: &str) -> Result<RetryPolicy, ConfigError> {
        if self.attempts == Some(0) {
            return Err(ConfigError::new(
                format!("{at}.attempts"),
                "must be at least 1 (the first try)",
            ));
        }
        Ok(RetryPolicy {
            attempts: self.attempts.unwrap_or(base.attempts),
            backoff: self.backoff_ms.map_or(base.backoff, MS),
            max_backoff: self.max_backoff_ms.map_or(base.max_backoff, MS),
            budget: self.budget_ms.map_or(base.budget, MS),
            max_retry_after: self.max_retry_after_ms.map_or(base.max_retry_after, MS),
        })
    }
}

/// `breaker = { ... }` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedBreaker {
    /// Failures in a row that open it.
    pub consecutive_failures: Option<u32>,
    /// Error rate over the window that opens it.
    pub error_rate: Option<f64>,
    /// Requests needed in the window before the rate counts.
    pub min_requests: Option<u32>,
    /// Window length.
    pub window_ms: Option<u64>,
    /// Time open before a probe.
    pub cooldown_ms: Option<u64>,
}

/// `tiers = { ... }` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedTiers {
    /// Weight below which a request is small.
    pub small_below: Option<u64>,
    /// Weight below which a request is medium.
    pub medium_below: Option<u64>,
    /// Weight added when tools are present.
    pub tools_weight: Option<u64>,
    /// Messages that make a conversation long.
    pub long_conversation: Option<usize>,
    /// Weight added to a long conversation.
    pub long_conversation_weight: Option<u64>,
    /// Output tokens assumed without `max_tokens`.
    pub default_max_tokens: Option<u64>,
    /// Keywords raising a request to at least a tier.
    #[serde(default)]
    pub keywords: BTreeMap<String, Tier>,
}

impl UninitializedTiers {
    fn apply(&self, base: &TierRules, at: &str) -> Result<TierRules, ConfigError> {
        let rules = TierRules {
            small_below: self.small_below.unwrap_or(base.small_below),
            medium_below: self.medium_below.unwrap_or(base.medium_below),
            tools_weight: self.tools_weight.unwrap_or(base.tools_weight),
            long_conversation: self.long_conversation.unwrap_or(base.long_conversation),
            long_conversation_weight: self
                .long_conversation_weight
                .unwrap_or(base.long_conversation_weight),
            default_max_tokens: self.default_max_tokens.unwrap_or(base.default_max_tokens),
            keywords: if self.keywords.is_empty() {
                base.keywords.clone()
            } else {
                self.keywords.iter().map(|(k, t)| (k.clone(), *t)).collect()
            },
        };
        if rules.small_below > rules.medium_below {
            return Err(ConfigError::new(
                format!("{at}.small_below"),
                "must not be greater than `medium_below`",
            ));
        }
        Ok(rules)
    }
}

/// `[routing]` as written: defaults for every route and model.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedRouting {
    /// Retry defaults.
    #[serde(default)]
    pub retry: UninitializedRetry,
    /// Breaker settings (per deployment).
    #[serde(default)]
    pub breaker: UninitializedBreaker,
    /// Tier thresholds and signals.
    #[serde(default)]
    pub tiers: UninitializedTiers,
}

/// `canary = { ... }` of a route as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedCanary {
    /// The candidate model.
    pub target: String,
    /// Percentages to go through, in order (default `[10, 50, 100]`).
    pub stages: Option<Vec<f64>>,
    /// Advance to the next stage after this long (absent: only by admin call).
    pub stage_interval_ms: Option<u64>,
    /// Roll back when the candidate's error rate over the window exceeds this (default 0.02).
    pub max_error_rate: Option<f64>,
    /// Roll back when the candidate's p95 latency over the window exceeds this.
    pub max_p95_ms: Option<u64>,
    /// Window of the rollback check (default 5 minutes).
    pub window_ms: Option<u64>,
    /// Candidate requests needed in the window before the check (default 20).
    pub min_requests: Option<u32>,
}

/// `[[routes]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedRoute {
    /// What clients send as `model`.
    pub name: String,
    /// How targets are ordered (default `fallback`).
    pub strategy: Option<Strategy>,
    /// Model names.
    pub targets: Vec<String>,
    /// Weights for `weighted`, one per target.
    pub weights: Option<Vec<f64>>,
    /// Retry overrides.
    pub retry: Option<UninitializedRetry>,
    /// Tier overrides.
    pub tiers: Option<UninitializedTiers>,
    /// Total deadline of a request on this route.
    pub timeout_ms: Option<u64>,
    /// Longest wait for a deployment's first byte before falling back.
    pub first_token_timeout_ms: Option<u64>,
    /// Content of a static answer when every target failed (marked `x-sluice-degraded: true`).
    pub fallback_response: Option<String>,
    /// Canary rollout of a candidate model.
    pub canary: Option<UninitializedCanary>,
    /// Response cache overrides.
    pub cache: Option<UninitializedCachePolicy>,
    /// Rate limits of this route, over every key.
    pub limits: Option<TargetLimits>,
    /// The `[[guardrails]]` applied to this route's requests and answers (besides its
    /// targets').
    pub guardrails: Option<Vec<String>>,
}

/// Validated canary settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryConfig {
    /// Index of the candidate model.
    pub target: usize,
    /// Stage percentages.
    pub stages: Vec<f64>,
    /// Automatic stage interval.
    pub stage_interval: Option<Duration>,
    /// Rollback threshold on error rate.
    pub max_error_rate: f64,
    /// Rollback threshold on p95 latency.
    pub max_p95: Option<Duration>,
    /// Rollback window.
    pub window: Duration,
    /// Requests needed before the check.
    pub min_requests: u32,
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Name clients send.
    pub name: String,
    /// Ordering strategy.
    pub strategy: Strategy,
    /// Indexes of target models.
    pub targets: Vec<usize>,
    /// Weights, one per target.
    pub weights: Vec<f64>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Tier rules.
    pub tiers: TierRules,
    /// Total deadline.
    pub timeout: Option<Duration>,
    /// First-byte deadline per deployment.
    pub first_token_timeout: Option<Duration>,
    /// Static degraded answer.
    pub fallback_response: Option<String>,
    /// Canary.
    pub canary: Option<CanaryConfig>,
    /// Response cache policy.
    pub cache: CachePolicy,
    /// Rate limits over every key.
    pub limits: TargetLimits,
    /// Its own guardrails (its targets' apply too): indexes into `[[guardrails]]`.
    pub guardrails: Vec<usize>,
}

/// Validated `[routing]`.
#[derive(Debug, Clone, Default)]
pub struct RoutingConfig {
    /// Default retry policy (models used directly, and routes without their own).
    pub retry: RetryPolicy,
    /// Breaker settings of every deployment.
    pub breaker: BreakerConfig,
    /// Default tier rules.
    pub tiers: TierRules,
}

impl UninitializedRouting {
    /// Validates `[routing]`.
    pub fn load(self) -> Result<RoutingConfig, ConfigError> {
        let retry = self.retry.apply(RetryPolicy::default(), "routing.retry")?;
        let d = BreakerConfig::default();
        let b = self.breaker;
        if b.error_rate.is_some_and(|r| !(r > 0.0 && r <= 1.0)) {
            return Err(ConfigError::new(
                "routing.breaker.error_rate",
                "must be in (0, 1]",
            ));
        }
        if b.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "routing.breaker.consecutive_failures",
                "must be at least 1",
            ));
        }
        let breaker = BreakerConfig {
            consecutive_failures: b.consecutive_failures.unwrap_or(d.consecutive_failures),
            error_rate: b.error_rate.unwrap_or(d.error_rate),
            min_requests: b.min_requests.unwrap_or(d.min_requests),
            window: b.window_ms.map_or(d.window, MS),
            cooldown: b.cooldown_ms.map_or(d.cooldown, MS),
        };
        let tiers = self.tiers.apply(&TierRules::default(), "routing.tiers")?;
        Ok(RoutingConfig {
            retry,
            breaker,
            tiers,
        })
    }
}

/// Validates `[[routes]]` against the models: unique names that are not model names,
/// targets that are. What a route leaves out it takes from `defaults`, and its cache policy
/// from `cache`.
pub fn load_routes(
    routes: Vec<UninitializedRoute>,
    models: &[ModelConfig],
    defaults: &RoutingConfig,
    cache: &CachePolicy,
    guardrails: &[GuardrailConfig],
) -> Result<Vec<RouteConfig>, ConfigError> {
    let model_index = |name: &str| models.iter().position(|m| m.name == name);
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(routes.len());
    for (i, r) in routes.into_iter().enumerate() {
        let at = |key: &str| format!("routes[{i}].{key}");
        if r.name.is_empty() {
            return Err(ConfigError::new(at("name"), "must not be empty"));
        }
        if model_index(&r.name).is_some() {
            return Err(ConfigError::new(
                at("name"),
                format!("`{}` is already a model name", r.name),
            ));
        }
        if !names.insert(r.name.clone()) {
            return Err(ConfigError::new(
                at("name"),
                format!("a route named `{}` is already defined", r.name),
            ));
        }
        let guards =
            super::guardrails::resolve(r.guardrails.as_deref(), guardrails, &at("guardrails"))?;
        let mut route = load_route(r, &model_index, defaults, cache, &at)?;
        route.guardrails = guards;
        out.push(route);
    }
    Ok(out)
}

/// One route; `model_index` finds a model by name, `at` gives the key path of a key of the
/// route.
fn load_route(
    r: UninitializedRoute,
    model_index: &dyn Fn(&str) -> Option<usize>,
    defaults: &RoutingConfig,
    cache: &CachePolicy,
    at: &dyn Fn(&str) -> String,
) -> Result<RouteConfig, ConfigError> {
    let targets = targets(&r.targets, model_index, at)?;
    let weights = weights(r.weights, targets.len(), at)?;
    let retry = match &r.retry {
        Some(x) => x.apply(defaults.retry, &at("retry"))?,
        None => defaults.retry,
    };
    let tiers = match &r.tiers {
        Some(x) => x.apply(&defaults.tiers, &at("tiers"))?,
        None => defaults.tiers.clone(),
    };
    let canary = match r.canary {
        Some(c) => Some(load_canary(c, model_index, at)?),
        None => None,
    };
    let cache = match &r.cache {
        Some(c) => c.apply(cache, &at("cache"))?,
        None => cache.clone(),
    };
    let limits = r.limits.unwrap_or_default().check(&at("limits"))?;
    Ok(RouteConfig {
        limits,
        cache,
        strategy: r.strategy.unwrap_or(Strategy::Fallback),
        targets,
        weights,
        retry,
        tiers,
        timeout: optional_ms(r.timeout_ms, &at("timeout_ms"))?,
        first_token_timeout: optional_ms(r.first_token_timeout_ms, &at("first_token_timeout_ms"))?,
        fallback_response: r.fallback_response,
        canary,
        name: r.name,
        guardrails: Vec::new(),
    })
}

/// The indexes of the models a route names: at least one, each defined and listed once.
fn targets(
    names: &[String],
    model_index: &dyn Fn(&str) -> Option<usize>,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<usize>, ConfigError> {
    if names.is_empty() {
        return Err(ConfigError::new(
            at("targets"),
            "must name at least one model",
        ));
    }
    let mut targets = Vec::with_capacity(names.len());
    for (j, t) in names.iter().enumerate() {
        let idx = model_index(t).ok_or_else(|| {
            ConfigError::new(
                at(&format!("targets[{j}]")),
                format!("no model named `{t}` is defined"),
            )
        })?;
        if targets.contains(&idx) {
            return Err(ConfigError::new(
                at(&format!("targets[{j}]")),
                format!("`{t}` is listed twice"),
            ));
        }
        targets.push(idx);
    }
    Ok(targets)
}

/// The weights of `targets` targets: one each, non-negative; all 1 when absent.
fn weights(
    weights: Option<Vec<f64>>,
    targets: usize,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<f64>, ConfigError> {
    match weights {
        None => Ok(vec![1.0; targets]),
        Some(w) if w.len() != targets => Err(ConfigError::new(
            at("weights"),
            format!("has {} entries for {} targets", w.len(), targets),
        )),
        Some(w) if w.iter().any(|x| !x.is_finite() || *x < 0.0) => Err(ConfigError::new(
            at("weights"),
            "must be non-negative numbers",
        )),
        Some(w) => Ok(w),
    }
}

/// A route's canary: a defined candidate, stages that are percentages, an error rate that is
/// a fraction.
fn load_canary(
    c: UninitializedCanary,
    model_index: &dyn Fn(&str) -> Option<usize>,
    at: &dyn Fn(&str) -> String,
) -> Result<CanaryConfig, ConfigError> {
    let target = model_index(&c.target).ok_or_else(|| {
        ConfigError::new(
            at("canary.target"),
            format!("no model named `{}` is defined", c.target),
        )
    })?;
    let stages = c.stages.unwrap_or_else(|| vec![10.0, 50.0, 100.0]);
    if stages.is_empty()
        || stages
            .iter()
            .any(|s| !s.is_finite() || *s < 0.0 || *s > 100.0)
    {
        return Err(ConfigError::new(
            at("canary.stages"),
            "must be percentages from 0 to 100",
        ));
    }
    let max_error_rate = c.max_error_rate.unwrap_or(0.02);
    if !(0.0..=1.0).contains(&max_error_rate) {
        return Err(ConfigError::new(
            at("canary.max_error_rate"),
            "must be in [0, 1]",
        ));
    }
    Ok(CanaryConfig {
        target,
        stages,
        stage_interval: optional_ms(c.stage_interval_ms, &at("canary.stage_interval_ms"))?,
        max_error_rate,
        max_p95: optional_ms(c.max_p95_ms, &at("canary.max_p95_ms"))?,
        window: optional_ms(c.window_ms, &at("canary.window_ms"))?
            .unwrap_or(Duration::from_secs(300)),
        min_requests: c.min_requests.unwrap_or(20),
    })
}

/// A `*_ms` value that may be left out but not be 0.
fn optional_ms(value: Option<u64>, path: &str) -> Result<Option<Duration>, ConfigError> {
    match value {
        Some(0) => Err(ConfigError::new(path, "must be greater than 0")),
        v => Ok(v.map(MS)),
    }
}
