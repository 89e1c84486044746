//! The gateway's names, built once from the config: providers with their pools, deployments
//! (configured models, models found on disk, passthrough catch-alls) with their breakers
//! and latency averages, routes with their canaries, the name index every request looks up,
//! and the pre-rendered `/v1/models` body.

use crate::local::Found;
use bytes::Bytes;
use http::HeaderValue;
use sluice_core::breaker::{Breaker, BreakerConfig};
use sluice_core::canary::Canary;
use sluice_core::config::{
    CachePolicy, Config, ModelConfig, Price, RouteConfig, TargetLimits, Tier,
};
use sluice_core::{Error, ErrorKind};
use sluice_providers::Provider;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Weight of a new sample in the latency averages.
const EWMA_ALPHA: f64 = 0.2;

/// An exponentially weighted moving average kept in an atomic (milliseconds, f64 bits;
/// 0 = no sample yet). Concurrent updates may lose one sample; an average does not mind.
#[derive(Debug, Default)]
pub struct Ewma(AtomicU64);

impl Ewma {
    /// Adds a sample.
    pub fn observe(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let old = f64::from_bits(self.0.load(Relaxed));
        let new = if old == 0.0 {
            ms.max(f64::MIN_POSITIVE)
        } else {
            old + EWMA_ALPHA * (ms - old)
        };
        self.0.store(new.to_bits(), Relaxed);
    }

    /// The average, if any sample was taken.
    pub fn get(&self) -> Option<f64> {
        let v = f64::from_bits(self.0.load(Relaxed));
        (v > 0.0).then_some(v)
    }
}

/// A model as configured (or a passthrough provider's catch-all): which provider serves it,
/// under which id, and its live health.
#[derive(Debug)]
pub struct Deployment {
    /// What clients send (`provider/*` for a passthrough catch-all).
    pub name: Box<str>,
    /// Index into [`AppState::providers`].
    pub provider: usize,
    /// Id sent upstream (empty for a passthrough catch-all: the request supplies it).
    pub upstream: Box<str>,
    /// `x-sluice-model` value.
    pub header_value: HeaderValue,
    /// Price per million tokens.
    pub price: Option<Price>,
    /// Size tier.
    pub tier: Option<Tier>,
    /// Quality rank.
    pub quality: f64,
    /// Circuit breaker (shared with the deployment of the same name across a reload).
    pub breaker: Arc<Breaker>,
    /// Time to first byte of the response body.
    pub ttft: Arc<Ewma>,
    /// Time to the end of the response.
    pub total: Arc<Ewma>,
    /// Response cache policy.
    pub cache: CachePolicy,
    /// Rate limits over every key.
    pub limits: TargetLimits,
    /// Its guardrails: indexes into [`AppState::guardrails`](super::AppState::guardrails).
    pub guardrails: Vec<usize>,
}

/// A route with its live canary.
#[derive(Debug)]
pub struct Route {
    /// Validated settings.
    pub config: RouteConfig,
    /// `x-sluice-route` value.
    pub header_value: HeaderValue,
    /// The canary, if configured (kept across a reload while its settings are unchanged).
    pub canary: Option<Arc<Canary>>,
}

/// FNV-1a: model names are short and chosen by the operator, so a DoS-resistant hash buys
/// nothing on this lookup, which every request makes.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// What a name in the index stands for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Name {
    Model(usize),
    Route(usize),
}

fn header_value(name: &str, what: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(name).map_err(|_| {
        Error::from(ErrorKind::Internal {
            message: format!("{what} name `{name}` is not a valid header value"),
        })
    })
}

/// The name index.
pub(super) type Index = HashMap<Box<str>, Name, BuildHasherDefault<Fnv>>;

/// Everything named, as [`super::AppState`] holds it.
pub(super) struct Registry {
    pub providers: Vec<Arc<Provider>>,
    pub deployments: Vec<Deployment>,
    pub configured_models: usize,
    pub routes: Vec<Route>,
    pub index: Index,
    pub passthrough: Vec<usize>,
    pub models_json: Bytes,
}

impl Registry {
    /// Builds the names of `config` (its providers, models and routes are taken), with the
    /// local models `found` on disk joining the first `local` provider.
    pub(super) fn build(
        config: &mut Config,
        found: &[Found],
        workers: usize,
        now: Instant,
    ) -> Result<Self, Error> {
        let local_provider = config
            .providers
            .iter()
            .position(|p| p.kind == sluice_core::config::ProviderType::Local);
        let providers = std::mem::take(&mut config.providers)
            .into_iter()
            .map(|p| Provider::new(p, workers).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let models = std::mem::take(&mut config.models);
        let route_configs = std::mem::take(&mut config.routes);
        let mut index =
            Index::with_capacity_and_hasher(models.len() + route_configs.len(), Default::default());
        let new = NewDeployment {
            breaker: config.routing.breaker,
            cache: config.cache.policy.clone(),
            now,
        };
        let mut deployments = Vec::with_capacity(models.len());
        for (i, m) in models.into_iter().enumerate() {
            index.insert(m.name.clone().into_boxed_str(), Name::Model(i));
            deployments.push(new.configured(m)?);
        }
        if let Some(p) = local_provider {
            for m in found {
                tracing::info!(model = %m.name, path = %m.path.display(), "local model found");
                index.insert(
                    m.name.clone().into_boxed_str(),
                    Name::Model(deployments.len()),
                );
                deployments.push(new.plain(&m.name, "model", p, &m.name)?);
            }
        }
        let configured_models = deployments.len();
        let mut passthrough = Vec::new();
        for (i, p) in providers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.config.passthrough)
        {
            passthrough.push(deployments.len());
            deployments.push(new.plain(&format!("{}/*", p.name()), "provider", i, "")?);
        }
        let mut routes = Vec::with_capacity(route_configs.len());
        for (i, r) in route_configs.into_iter().enumerate() {
            index.insert(r.name.clone().into_boxed_str(), Name::Route(i));
            routes.push(Route {
                header_value: header_value(&r.name, "route")?,
                canary: r.canary.clone().map(|c| Arc::new(Canary::new(c, now))),
                config: r,
            });
        }
        let models_json = render_models(&deployments[..configured_models], &routes, &providers);
        Ok(Self {
            providers,
            deployments,
            configured_models,
            routes,
            index,
            passthrough,
            models_json,
        })
    }
}

/// What every new deployment starts with.
struct NewDeployment {
    breaker: BreakerConfig,
    cache: CachePolicy,
    now: Instant,
}

impl NewDeployment {
    /// A configured model.
    fn configured(&self, m: ModelConfig) -> Result<Deployment, Error> {
        Ok(Deployment {
            header_value: header_value(&m.name, "model")?,
            name: m.name.into(),
            provider: m.provider,
            upstream: m.upstream.into(),
            price: m.price,
            tier: m.tier,
            quality: m.quality,
            breaker: Arc::new(Breaker::new(self.breaker, self.now)),
            ttft: Arc::default(),
            total: Arc::default(),
            cache: m.cache,
            limits: m.limits,
            guardrails: m.guardrails,
        })
    }

    /// A deployment with no settings of its own (a model found on disk, a passthrough
    /// catch-all): `what` names it in an error.
    fn plain(
        &self,
        name: &str,
        what: &str,
        provider: usize,
        upstream: &str,
    ) -> Result<Deployment, Error> {
        Ok(Deployment {
            header_value: header_value(name, what)?,
            name: name.into(),
            provider,
            upstream: upstream.into(),
            price: None,
            tier: None,
            quality: 0.0,
            breaker: Arc::new(Breaker::new(self.breaker, self.now)),
            ttft: Arc::default(),
            total: Arc::default(),
            cache: self.cache.clone(),
            limits: TargetLimits::default(),
            guardrails: Vec::new(),
        })
    }
}

fn render_models(
    deployments: &[Deployment],
    routes: &[Route],
    providers: &[Arc<Provider>],
) -> Bytes {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut data: Vec<serde_json::Value> = deployments
        .iter()
        .map(|d| {
            serde_json::json!({
                "id": &*d.name,
                "object": "model",
                "created": created,
                "owned_by": providers[d.provider].name(),
            })
        })
        .collect();
    data.extend(routes.iter().map(|r| {
        serde_json::json!({
            "id": r.config.name,
            "object": "model",
            "created": created,
            "owned_by": "sluice",
        })
    }));
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({"object": "list", "data": data}))
            .unwrap_or_default(),
    )
}
