//! Everything a request needs, built once from the config: providers with their pools,
//! deployments with their breakers and latency averages, routes with their canaries,
//! metrics, and the pre-rendered `/v1/models` body.
//!
//! A request names a route, a model, or (on a passthrough provider) any upstream model.
//! [`AppState::plan`] turns that into an ordered list of deployments to try: a model is a
//! route of one target.

use crate::cache::Cache;
use crate::keys::KeyCache;
use crate::metrics::Metrics;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use sluice_core::breaker::Breaker;
use sluice_core::canary::Canary;
use sluice_core::config::{
    CacheConfig, CachePolicy, Config, KeysConfig, LimitsConfig, Price, RouteConfig, RoutingConfig,
    ServerConfig, TargetLimits, Tier,
};
use sluice_core::retry::RetryPolicy;
use sluice_core::routing::{self, Candidate, Priority, RequestFacts, Strategy};
use sluice_core::{rng, Error, ErrorKind, Secret};
use sluice_providers::Provider;
use sluice_store::{open, Ledger, Limiter};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
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
    /// Circuit breaker.
    pub breaker: Breaker,
    /// Time to first byte of the response body.
    pub ttft: Ewma,
    /// Time to the end of the response.
    pub total: Ewma,
    /// Response cache policy.
    pub cache: CachePolicy,
    /// Rate limits over every key.
    pub limits: TargetLimits,
}

/// A route with its live canary.
#[derive(Debug)]
pub struct Route {
    /// Validated settings.
    pub config: RouteConfig,
    /// `x-sluice-route` value.
    pub header_value: HeaderValue,
    /// The canary, if configured.
    pub canary: Option<Canary>,
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

#[derive(Debug, Clone, Copy)]
enum Name {
    Model(usize),
    Route(usize),
}

/// What the client's `model` named.
#[derive(Debug, Clone, Copy)]
pub enum Resolved<'u> {
    /// A configured model.
    Model(usize),
    /// A route.
    Route(usize),
    /// A passthrough provider's catch-all deployment, with the upstream id to send.
    Passthrough {
        /// The catch-all deployment.
        deployment: usize,
        /// Upstream model id.
        upstream: &'u str,
    },
}

/// One deployment to try.
#[derive(Debug, Clone, Copy)]
pub struct Step<'u> {
    /// Index into [`AppState::deployments`].
    pub deployment: usize,
    /// Upstream id when the request supplies it (passthrough).
    pub upstream: Option<&'u str>,
    /// This step is a canary candidate.
    pub canary: bool,
}

/// How one request is served: the deployments to try, in order, and the policies.
#[derive(Debug, Clone)]
pub struct Plan<'u> {
    /// Deployments to try, in order.
    pub steps: Vec<Step<'u>>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Total deadline.
    pub timeout: Option<Duration>,
    /// First-byte deadline per deployment.
    pub first_token_timeout: Option<Duration>,
    /// The route, if one was named.
    pub route: Option<usize>,
}

/// Per-request routing inputs read from headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides<'h> {
    /// `x-sluice-priority`.
    pub priority: Option<Priority>,
    /// `x-sluice-tier`.
    pub tier: Option<Tier>,
    /// `x-sluice-route-key`, else the bearer token, else `user`.
    pub route_key: Option<&'h [u8]>,
}

/// Reads the routing headers; `user` is the body's `user` field.
pub fn overrides<'h>(
    headers: &'h HeaderMap,
    user: Option<&'h str>,
) -> Result<Overrides<'h>, Error> {
    let bad = |message: String| -> Error {
        ErrorKind::InvalidRequest {
            message,
            param: None,
        }
        .into()
    };
    let priority = match headers.get("x-sluice-priority") {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(Priority::parse).ok_or_else(|| {
            bad("`x-sluice-priority` must be `cost`, `speed` or `quality`".into())
        })?),
    };
    let tier = match headers.get("x-sluice-tier") {
        None => None,
        Some(v) => Some(match v.to_str().map(|s| s.trim().to_ascii_lowercase()) {
            Ok(s) if s == "small" => Tier::Small,
            Ok(s) if s == "medium" => Tier::Medium,
            Ok(s) if s == "large" => Tier::Large,
            _ => {
                return Err(bad(
                    "`x-sluice-tier` must be `small`, `medium` or `large`".into()
                ))
            }
        }),
    };
    let route_key = headers
        .get("x-sluice-route-key")
        .map(HeaderValue::as_bytes)
        .or_else(|| {
            headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .and_then(|v| v.strip_prefix(b"Bearer "))
        })
        .or(user.map(str::as_bytes));
    Ok(Overrides {
        priority,
        tier,
        route_key,
    })
}

/// Shared, immutable (but for atomics and locks) state of a running gateway.
#[derive(Debug)]
pub struct AppState {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[routing]`.
    pub routing: RoutingConfig,
    /// Providers, in config order.
    pub providers: Vec<Provider>,
    /// Configured models in config order, then one catch-all per passthrough provider.
    pub deployments: Vec<Deployment>,
    /// Number of configured models (the catch-alls follow them).
    pub configured_models: usize,
    /// Routes, in config order.
    pub routes: Vec<Route>,
    index: HashMap<Box<str>, Name, BuildHasherDefault<Fnv>>,
    /// Catch-all deployments of passthrough providers.
    passthrough: Vec<usize>,
    /// Admin API key.
    pub master_key: Option<Secret>,
    /// Metrics.
    pub metrics: Metrics,
    /// `GET /v1/models`, rendered once.
    pub models_json: Bytes,
    /// When the gateway started.
    pub started: Instant,
    /// The response cache, when any model or route caches.
    pub cache: Option<Arc<Cache>>,
    /// `[cache]` as configured.
    pub cache_config: CacheConfig,
    /// Keys and the spend log: SQLite in the data directory, or PostgreSQL.
    pub ledger: Option<Ledger>,
    /// Write the spend log (`spend.enabled`).
    pub spend_enabled: bool,
    /// Rate limits and budgets: in process, or on Redis.
    pub limiter: Limiter,
    /// Virtual keys seen lately.
    pub keys: KeyCache,
    /// `[keys]`.
    pub keys_config: KeysConfig,
    /// `[limits]`.
    pub limits_config: LimitsConfig,
    /// The models sluice runs itself, when the config has any.
    pub local: Option<crate::local::LocalRuntime>,
    /// Authentication, limit and spend counters.
    pub tab_metrics: crate::metrics::TabMetrics,
    /// Budget counters seeded from the spend log in this process, and when.
    seeded: Mutex<HashMap<String, Instant>>,
}

fn header_value(name: &str, what: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(name).map_err(|_| {
        Error::from(ErrorKind::Internal {
            message: format!("{what} name `{name}` is not a valid header value"),
        })
    })
}

impl AppState {
    /// Builds providers, pools (one per worker thread) and tables from a validated config.
    pub fn new(config: Config, workers: usize) -> Result<Self, Error> {
        let now = Instant::now();
        // Models found on disk join the first `local` provider, like configured ones.
        let local_provider = config
            .providers
            .iter()
            .position(|p| p.kind == sluice_core::config::ProviderType::Local);
        let (found, local) = crate::local::start(&config)?;
        let providers = config
            .providers
            .into_iter()
            .map(|p| Provider::new(p, workers))
            .collect::<Result<Vec<_>, _>>()?;
        let breaker = config.routing.breaker;
        let mut deployments = Vec::with_capacity(config.models.len());
        let mut index = HashMap::with_capacity_and_hasher(
            config.models.len() + config.routes.len(),
            Default::default(),
        );
        for (i, m) in config.models.into_iter().enumerate() {
            index.insert(m.name.clone().into_boxed_str(), Name::Model(i));
            deployments.push(Deployment {
                header_value: header_value(&m.name, "model")?,
                name: m.name.into(),
                provider: m.provider,
                upstream: m.upstream.into(),
                price: m.price,
                tier: m.tier,
                quality: m.quality,
                breaker: Breaker::new(breaker, now),
                ttft: Ewma::default(),
                total: Ewma::default(),
                cache: m.cache,
                limits: m.limits,
            });
        }
        if let Some(p) = local_provider {
            for m in &found {
                tracing::info!(model = %m.name, path = %m.path.display(), "local model found");
                index.insert(
                    m.name.clone().into_boxed_str(),
                    Name::Model(deployments.len()),
                );
                deployments.push(Deployment {
                    header_value: header_value(&m.name, "model")?,
                    name: m.name.clone().into(),
                    provider: p,
                    upstream: m.name.clone().into(),
                    price: None,
                    tier: None,
                    quality: 0.0,
                    breaker: Breaker::new(breaker, now),
                    ttft: Ewma::default(),
                    total: Ewma::default(),
                    cache: config.cache.policy,
                    limits: TargetLimits::default(),
                });
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
            let name = format!("{}/*", p.name());
            deployments.push(Deployment {
                header_value: header_value(&name, "provider")?,
                name: name.into(),
                provider: i,
                upstream: "".into(),
                price: None,
                tier: None,
                quality: 0.0,
                breaker: Breaker::new(breaker, now),
                ttft: Ewma::default(),
                total: Ewma::default(),
                cache: config.cache.policy,
                limits: TargetLimits::default(),
            });
        }
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.into_iter().enumerate() {
            index.insert(r.name.clone().into_boxed_str(), Name::Route(i));
            routes.push(Route {
                header_value: header_value(&r.name, "route")?,
                canary: r.canary.clone().map(|c| Canary::new(c, now)),
                config: r,
            });
        }
        let metrics = Metrics::new(
            deployments
                .iter()
                .map(|d| (&*d.name, providers[d.provider].name())),
            routes.iter().map(|r| r.config.name.as_str()),
        );
        let models_json = render_models(&deployments[..configured_models], &routes, &providers);
        let caches = config.cache.policy.enabled
            || deployments.iter().any(|d| d.cache.enabled)
            || routes.iter().any(|r| r.config.cache.enabled);
        let cache = if caches {
            let store = open::cache_store(&config.storage, &config.cache).map_err(|e| {
                Error::from(ErrorKind::Internal {
                    message: format!("cannot open the cache store: {e}"),
                })
            })?;
            Some(Arc::new(Cache::new(&config.cache, Some(store))))
        } else {
            None
        };
        let spend_enabled = config.spend.enabled;
        let ledger = if spend_enabled || config.server.master_key.is_some() {
            Some(open::ledger(&config.storage, &config.spend).map_err(|e| {
                Error::from(ErrorKind::Internal {
                    message: format!("cannot open the spend log and key store: {e}"),
                })
            })?)
        } else {
            None
        };
        let limiter = open::limiter(&config.storage, &config.limits).map_err(|e| {
            Error::from(ErrorKind::Internal {
                message: format!("cannot set up the Redis limiter: {e}"),
            })
        })?;
        Ok(Self {
            ledger,
            spend_enabled,
            limiter,
            keys: KeyCache::default(),
            keys_config: config.keys,
            limits_config: config.limits,
            seeded: Mutex::new(HashMap::new()),
            tab_metrics: crate::metrics::TabMetrics::default(),
            local,
            cache,
            cache_config: config.cache,
            server: config.server.clone(),
            master_key: config.server.master_key,
            routing: config.routing,
            providers,
            deployments,
            configured_models,
            routes,
            index,
            passthrough,
            metrics,
            models_json,
            started: now,
        })
    }

    /// Resolves the `model` a client sent: a route or configured model, else
    /// `provider/model` on a passthrough provider, else any name on the only passthrough
    /// provider.
    pub fn resolve<'u>(&self, model: &'u str) -> Result<Resolved<'u>, Error> {
        match self.index.get(model) {
            Some(Name::Model(i)) => return Ok(Resolved::Model(*i)),
            Some(Name::Route(i)) => return Ok(Resolved::Route(*i)),
            None => {}
        }
        if let Some((prefix, rest)) = model.split_once('/') {
            if let Some(&d) = self
                .passthrough
                .iter()
                .find(|&&d| self.providers[self.deployments[d].provider].name() == prefix)
            {
                return Ok(Resolved::Passthrough {
                    deployment: d,
                    upstream: rest,
                });
            }
        }
        if let [d] = self.passthrough[..] {
            return Ok(Resolved::Passthrough {
                deployment: d,
                upstream: model,
            });
        }
        Err(ErrorKind::ModelNotFound {
            model: model.to_string(),
        }
        .into())
    }

    /// The deployments to try for one request, in order, with the policies that apply.
    pub fn plan<'u>(
        &self,
        resolved: Resolved<'u>,
        facts: &RequestFacts,
        body: &[u8],
        overrides: &Overrides<'_>,
        stream: bool,
    ) -> Plan<'u> {
        let single = |deployment, upstream| Plan {
            steps: vec![Step {
                deployment,
                upstream,
                canary: false,
            }],
            retry: self.routing.retry,
            timeout: None,
            first_token_timeout: None,
            route: None,
        };
        let route_index = match resolved {
            Resolved::Model(d) => return single(d, None),
            Resolved::Passthrough {
                deployment,
                upstream,
            } => return single(deployment, Some(upstream)),
            Resolved::Route(r) => r,
        };
        let route = &self.routes[route_index];
        let rc = &route.config;
        let candidates: Vec<Candidate> = rc
            .targets
            .iter()
            .zip(&rc.weights)
            .map(|(&d, &weight)| {
                let dep = &self.deployments[d];
                let (first, second) = if stream {
                    (&dep.ttft, &dep.total)
                } else {
                    (&dep.total, &dep.ttft)
                };
                Candidate {
                    deployment: d,
                    weight,
                    price: dep.price,
                    quality: dep.quality,
                    tier: dep.tier,
                    latency_ms: first.get().or_else(|| second.get()),
                }
            })
            .collect();
        let strategy = overrides.priority.map_or(rc.strategy, Priority::strategy);
        let tier = match (rc.strategy, overrides.tier) {
            (_, Some(t)) => Some(t),
            (Strategy::Tier, None) => Some(rc.tiers.classify(facts, body)),
            _ => None,
        };
        let mut order = if let (Some(t), true) = (tier, strategy != Strategy::Tier) {
            // A tier route with a priority override: the request's tier first, ordered by the
            // priority; the other tiers after, likewise.
            let (same, rest): (Vec<Candidate>, Vec<Candidate>) =
                candidates.iter().partition(|c| c.tier == Some(t));
            let mut unit = rng::unit;
            let mut o = routing::order(
                strategy,
                &same,
                facts,
                None,
                rc.tiers.default_max_tokens,
                &mut unit,
            );
            o.extend(routing::order(
                strategy,
                &rest,
                facts,
                None,
                rc.tiers.default_max_tokens,
                &mut unit,
            ));
            o
        } else {
            routing::order(
                strategy,
                &candidates,
                facts,
                tier,
                rc.tiers.default_max_tokens,
                &mut rng::unit,
            )
        };
        let mut steps: Vec<Step<'u>> = Vec::with_capacity(order.len() + 1);
        if let Some(canary) = &route.canary {
            let candidate = canary.config.target;
            let now = Instant::now();
            let selected = match overrides.route_key {
                Some(key) => canary.selects(key, now),
                // No key: split request by request.
                None => rng::unit() * 100.0 < canary.percent(now),
            };
            order.retain(|&d| d != candidate);
            if selected {
                steps.push(Step {
                    deployment: candidate,
                    upstream: None,
                    canary: true,
                });
            }
        }
        steps.extend(order.into_iter().map(|deployment| Step {
            deployment,
            upstream: None,
            canary: false,
        }));
        Plan {
            steps,
            retry: rc.retry,
            timeout: rc.timeout,
            first_token_timeout: rc.first_token_timeout,
            route: Some(route_index),
        }
    }

    /// Whether budget counter `name` was seeded in this process.
    pub fn seeded_contains(&self, name: &str) -> bool {
        self.seeded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(name)
    }

    /// When budget counter `name` was last seeded, if ever.
    pub fn seeded_at(&self, name: &str) -> Option<Instant> {
        self.seeded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
    }

    /// Notes that budget counter `name` is seeded.
    pub fn mark_seeded(&self, name: &str) {
        let mut seeded = self.seeded.lock().unwrap_or_else(PoisonError::into_inner);
        if seeded.len() >= 100_000 {
            // Windows of days gone by: forget them all, the live ones are seeded again.
            seeded.clear();
        }
        seeded.insert(name.to_string(), Instant::now());
    }

    /// A route by name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        match self.index.get(name) {
            Some(Name::Route(i)) => self.routes.get(*i),
            _ => None,
        }
    }
}

fn render_models(deployments: &[Deployment], routes: &[Route], providers: &[Provider]) -> Bytes {
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
