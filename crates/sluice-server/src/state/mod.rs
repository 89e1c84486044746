//! Everything a request needs, built once from the config: the names (providers with their
//! pools, deployments with their breakers and latency averages, routes with their canaries;
//! `registry`), the stores (cache, ledger, limiter; `stores`), metrics, the local runtime,
//! and the pre-rendered `/v1/models` body.
//!
//! A request names a route, a model, or (on a passthrough provider) any upstream model.
//! [`AppState::plan`] (`plan`) turns that into an ordered list of deployments to try.

mod plan;
mod registry;
pub mod reload;
mod semantic_names;
mod stores;

pub use plan::{overrides, Overrides, Plan, Resolved, Step};
pub use registry::{Deployment, Ewma, Fnv, Route};

use crate::admission::Admission;
use crate::cache::Cache;
use crate::keys::KeyCache;
use crate::metrics::Metrics;
use bytes::Bytes;
use registry::{Name, Registry};

/// The bound on requests in flight of `config` (read before its providers are taken): the
/// one `old` state had when it is the same (requests running and waiting keep their slots and
/// their order across a reload), else a new one.
fn admission(config: &Config, workers: usize, old: Option<&Arc<Admission>>) -> Arc<Admission> {
    let (bound, timeout) = (
        config.requests_in_flight_bound(),
        config.server.queue_timeout,
    );
    match old {
        Some(old) if old.is(bound, timeout) => Arc::clone(old),
        _ => Arc::new(Admission::new(bound, workers, timeout)),
    }
}

/// What a state hands on to the next one at a reload.
struct Carried {
    cache: Option<Arc<Cache>>,
    ledger: Option<Ledger>,
    limiter: Limiter,
    shared_routing: Option<Arc<crate::shared_routing::SharedRouting>>,
    canary_file: Option<Arc<sluice_store::RoutingFile>>,
    files: Option<FileStore>,
    batches: Option<Arc<crate::batches::Batches>>,
    responses: ResponseStore,
    keys: Arc<KeyCache>,
    local: Option<Arc<crate::local::LocalRuntime>>,
    tab_metrics: Arc<crate::metrics::TabMetrics>,
    seeded: Arc<Mutex<HashMap<String, Instant>>>,
    found: Arc<Vec<crate::local::Found>>,
    reloads: Arc<reload::Reloads>,
    reload_hook: Arc<OnceLock<reload::ReloadHook>>,
    tracer: Option<Arc<crate::trace::Tracer>>,
    draining: Arc<AtomicBool>,
    lingering: Arc<crate::drain::Lingering>,
    samples: Option<Arc<crate::samples::Writer>>,
    health_checks: Arc<crate::health_status::Checks>,
    history: Arc<crate::history::History>,
    started: Instant,
}
use sluice_core::config::{
    CacheConfig, Config, KeysConfig, LimitsConfig, RoutingConfig, ServerConfig,
};
use sluice_core::routing::RequestFacts;
use sluice_core::{Error, Secret};
use sluice_providers::Provider;
use sluice_store::{FileStore, Ledger, Limiter, ResponseStore};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

/// Shared, immutable (but for atomics and locks) state of a running gateway.
#[derive(Debug)]
pub struct AppState {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[routing]`.
    pub routing: RoutingConfig,
    /// Providers, in config order.
    pub providers: Vec<Arc<Provider>>,
    /// Configured models in config order, then one catch-all per passthrough provider.
    pub deployments: Vec<Deployment>,
    /// Number of configured models (the catch-alls follow them).
    pub configured_models: usize,
    /// Routes, in config order.
    pub routes: Vec<Route>,
    /// The bound on requests to the proxied endpoints running at once (kept across reloads
    /// that do not change it).
    pub admission: Arc<Admission>,
    index: registry::Index,
    /// Catch-all deployments of passthrough providers.
    passthrough: Vec<usize>,
    /// Admin API key.
    pub master_key: Option<Secret>,
    /// Metrics (shared, so the history can tell a reload's new ones from the old).
    pub metrics: Arc<Metrics>,
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
    pub keys: Arc<KeyCache>,
    /// `[keys]`.
    pub keys_config: KeysConfig,
    /// `[limits]`.
    pub limits_config: LimitsConfig,
    /// The models sluice runs itself, when the config has any.
    pub local: Option<Arc<crate::local::LocalRuntime>>,
    /// Authentication, limit and spend counters.
    pub tab_metrics: Arc<crate::metrics::TabMetrics>,
    /// The Files API's files (`/v1/files`), unless `[files]` is off.
    pub files: Option<FileStore>,
    /// `[[guardrails]]`, compiled.
    pub guardrails: Vec<sluice_core::config::GuardrailConfig>,
    /// The Batch API's batches (`/v1/batches`), unless `[batches]` or `[files]` is off.
    pub batches: Option<Arc<crate::batches::Batches>>,
    /// The client of guardrail webhooks (when a guardrail has one).
    pub webhook_client: Option<sluice_providers::HttpClient>,
    /// The Responses API's stored responses.
    pub responses: ResponseStore,
    /// The providers' active health checks so far (kept across reloads).
    pub health_checks: Arc<crate::health_status::Checks>,
    /// What was served minute by minute, the last 24 hours (kept across reloads).
    pub history: Arc<crate::history::History>,
    /// Routing state shared with the other replicas on Redis (`storage.redis_url`).
    pub shared_routing: Option<Arc<crate::shared_routing::SharedRouting>>,
    /// Without Redis: the file that keeps the canaries' states across restarts.
    canary_file: Option<Arc<sluice_store::RoutingFile>>,
    /// Budget counters seeded from the spend log in this process, and when.
    seeded: Arc<Mutex<HashMap<String, Instant>>>,
    /// Config reloads so far.
    pub reloads: Arc<reload::Reloads>,
    /// Where requests' spans go, when `[observability] otlp_endpoint` is set.
    pub tracer: Option<Arc<crate::trace::Tracer>>,
    /// Payload sampling, when `[observability] sample_rate` is above 0.
    pub samples: Option<Arc<crate::samples::Sampler>>,
    /// The samples' writer (kept across reloads).
    sample_writer: Option<Arc<crate::samples::Writer>>,
    /// How to reload, when the gateway's config can be read again.
    pub reload_hook: Arc<OnceLock<reload::ReloadHook>>,
    /// The server stopped taking connections and drains (`/health/ready` says so); kept
    /// across reloads.
    pub draining: Arc<AtomicBool>,
    /// What requests leave behind after their responses end (a stream's webhooks), waited
    /// for at shutdown; kept across reloads.
    pub lingering: Arc<crate::drain::Lingering>,
    /// Local models found on disk (kept across a reload).
    found: Arc<Vec<crate::local::Found>>,
    /// The settings a reload cannot change (`[storage]`, `[spend]`, `[local]`, `[cache]`'s
    /// store, `server.listen`), as text.
    fixed: String,
    /// Upstream pools per provider.
    workers: usize,
}

impl AppState {
    /// Builds providers, pools (one per worker thread) and tables from a validated config.
    pub fn new(mut config: Config, workers: usize) -> Result<Self, Error> {
        let now = Instant::now();
        let (found, local) = crate::local::start(&config)?;
        let admission = admission(&config, workers, None);
        let r = Registry::build(&mut config, &found, workers, now)?;
        let caches = config.cache.policy.enabled
            || r.deployments.iter().any(|d| d.cache.enabled)
            || r.routes.iter().any(|r| r.config.cache.enabled);
        let stores = stores::open(&config, caches)?;
        let batches = stores
            .files
            .clone()
            .filter(|_| config.batches.enabled)
            .map(|f| Arc::new(crate::batches::Batches::new(f, config.batches)));
        let carried = Carried {
            cache: stores.cache,
            ledger: stores.ledger,
            limiter: stores.limiter,
            shared_routing: stores.shared_routing.map(Arc::new),
            canary_file: stores.canary_file.map(Arc::new),
            files: stores.files,
            batches,
            responses: stores.responses,
            keys: Arc::default(),
            local: local.map(Arc::new),
            tab_metrics: Arc::default(),
            seeded: Arc::default(),
            found: Arc::new(found),
            reloads: Arc::default(),
            reload_hook: Arc::default(),
            tracer: crate::trace::Tracer::start(&config.observability).map_err(|e| {
                sluice_core::ErrorKind::Internal {
                    message: format!("cannot start the OTLP exporter: {e}"),
                }
            })?,
            draining: Arc::default(),
            lingering: Arc::default(),
            samples: stores
                .samples
                .map(crate::samples::Writer::start)
                .transpose()
                .map_err(|e| sluice_core::ErrorKind::Internal {
                    message: format!("cannot start the samples' writer: {e}"),
                })?,
            health_checks: Arc::default(),
            history: Arc::default(),
            started: now,
        };
        let state = Self::assemble(config, r, carried, workers, admission);
        semantic_names::check(&state.names(), &state.cache_config.policy)?;
        if let Some(file) = &state.canary_file {
            // Before the first request: a restarted gateway resumes its rollouts.
            crate::canary_file::sync(file, &state.rollouts());
        }
        Ok(state)
    }

    /// A new state for `config`, carrying this one's stores, keys, local runtime and
    /// counters, and (by name) the breakers, latency averages and canaries of the
    /// deployments and routes it keeps. Refuses a config that changes what only a restart
    /// can (see [`reload::fixed`]).
    pub fn reload(&self, mut config: Config) -> Result<(Self, reload::Changes), Error> {
        reload::check_fixed(&self.fixed, &config)?;
        let now = Instant::now();
        let admission = admission(&config, self.workers, Some(&self.admission));
        let mut r = Registry::build(&mut config, &self.found, self.workers, now)?;
        reload::check_cache(self.cache.is_some(), &config, &r)?;
        let old = reload::Old {
            providers: &self.providers,
            deployments: &self.deployments,
            routes: &self.routes,
        };
        let changes = reload::carry(&old, &mut r);
        let carried = Carried {
            cache: self.cache.clone(),
            ledger: self.ledger.clone(),
            limiter: self.limiter.clone(),
            shared_routing: self.shared_routing.clone(),
            canary_file: self.canary_file.clone(),
            files: self.files.clone(),
            batches: self.batches.clone(),
            responses: self.responses.clone(),
            keys: Arc::clone(&self.keys),
            local: self.local.clone(),
            tab_metrics: Arc::clone(&self.tab_metrics),
            seeded: Arc::clone(&self.seeded),
            found: Arc::clone(&self.found),
            reloads: Arc::clone(&self.reloads),
            reload_hook: Arc::clone(&self.reload_hook),
            tracer: self.tracer.clone(),
            draining: Arc::clone(&self.draining),
            lingering: Arc::clone(&self.lingering),
            samples: self.sample_writer.clone(),
            health_checks: Arc::clone(&self.health_checks),
            history: Arc::clone(&self.history),
            started: self.started,
        };
        let state = Self::assemble(config, r, carried, self.workers, admission);
        semantic_names::check(&state.names(), &state.cache_config.policy)?;
        Ok((state, changes))
    }

    fn assemble(
        config: Config,
        r: Registry,
        c: Carried,
        workers: usize,
        admission: Arc<Admission>,
    ) -> Self {
        let metrics = Metrics::new(
            r.deployments
                .iter()
                .map(|d| (&*d.name, r.providers[d.provider].name())),
            r.routes.iter().map(|r| r.config.name.as_str()),
        );
        let samples = crate::samples::Sampler::new(
            c.samples.as_ref(),
            &config.observability,
            &config.guardrails,
        )
        .map(Arc::new);
        Self {
            admission,
            fixed: reload::fixed(&config),
            ledger: c.ledger,
            spend_enabled: config.spend.enabled,
            limiter: c.limiter,
            shared_routing: c.shared_routing,
            health_checks: c.health_checks,
            history: c.history,
            canary_file: c.canary_file,
            files: c.files,
            webhook_client: config
                .guardrails
                .iter()
                .any(|g| g.webhook.is_some())
                .then(|| sluice_providers::client::plain(std::time::Duration::from_secs(5))),
            guardrails: config.guardrails,
            batches: c.batches,
            responses: c.responses,
            keys: c.keys,
            keys_config: config.keys,
            limits_config: config.limits,
            seeded: c.seeded,
            found: c.found,
            reloads: c.reloads,
            reload_hook: c.reload_hook,
            tracer: c.tracer,
            draining: c.draining,
            lingering: c.lingering,
            samples,
            sample_writer: c.samples,
            workers,
            tab_metrics: c.tab_metrics,
            local: c.local,
            cache: c.cache,
            cache_config: config.cache,
            master_key: config.server.master_key.clone(),
            server: config.server,
            routing: config.routing,
            providers: r.providers,
            deployments: r.deployments,
            configured_models: r.configured_models,
            routes: r.routes,
            index: r.index,
            passthrough: r.passthrough,
            metrics: Arc::new(metrics),
            models_json: r.models_json,
            started: c.started,
        }
    }

    /// What the counters a reload keeps say now (spend, the cache's hits, lookups and
    /// savings), for the overview's history.
    pub fn kept_counts(&self) -> crate::history::Counts {
        use std::sync::atomic::Ordering::Relaxed;
        let mut c = crate::history::Counts {
            spend_nano_usd: self.tab_metrics.spent_nano_usd.load(Relaxed),
            ..crate::history::Counts::default()
        };
        if let Some(cache) = &self.cache {
            let m = &cache.metrics;
            c.cache_hits = m.hits.load(Relaxed) + m.coalesced.load(Relaxed);
            c.cache_lookups = c.cache_hits + m.misses.load(Relaxed);
            c.saved_nano_usd = m.saved_nano_usd.load(Relaxed);
        }
        c
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

    fn names(&self) -> plan::Names<'_> {
        plan::Names {
            index: &self.index,
            passthrough: &self.passthrough,
            providers: &self.providers,
            deployments: &self.deployments,
            routes: &self.routes,
            retry: self.routing.retry,
        }
    }

    /// The `[[guardrails]]` entry named `name`, as an index into [`Self::guardrails`].
    pub fn guardrail(&self, name: &str) -> Option<usize> {
        self.guardrails.iter().position(|g| g.name == name)
    }

    /// Resolves the `model` a client sent: a route or configured model, else
    /// `provider/model` on a passthrough provider, else any name on the only passthrough
    /// provider.
    pub fn resolve<'u>(&self, model: &'u str) -> Result<Resolved<'u>, Error> {
        self.names().resolve(model)
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
        self.names().plan(resolved, facts, body, overrides, stream)
    }

    /// Whether a Responses API request for `resolved` may be answered by a native upstream.
    pub fn may_answer_natively(&self, resolved: Resolved<'_>) -> bool {
        self.names().may_answer_natively(resolved)
    }

    /// Whether the canaries' states are kept in `routing.sqlite` (no Redis).
    pub fn keeps_canaries(&self) -> bool {
        self.canary_file.is_some()
    }

    /// The routes' canary rollouts, as the canaries' file keys them.
    fn rollouts(&self) -> Vec<crate::canary_file::Rollout> {
        self.routes
            .iter()
            .filter_map(|r| {
                let canary = r.canary.as_ref()?;
                let candidate = &*self.deployments[canary.config.target].name;
                let key = crate::canary_file::key(&r.config.name, candidate);
                Some((key, Arc::clone(canary)))
            })
            .collect()
    }

    /// One round of sharing the routes' canary states and the deployments' rate-limit
    /// cooldowns and open breakers with the other replicas (without `storage.redis_url`:
    /// of keeping the canary states in the data directory's `routing.sqlite`); the server
    /// runs it every [`crate::shared_routing::SYNC_INTERVAL`] and at shutdown.
    pub async fn sync_routing(&self) {
        if let Some(file) = &self.canary_file {
            crate::canary_file::sync_async(file, self.rollouts()).await;
        }
        if let Some(shared) = &self.shared_routing {
            let canaries = self.routes.iter().filter_map(|r| {
                let canary = r.canary.as_deref()?;
                let candidate = &*self.deployments[canary.config.target].name;
                Some((r.config.name.as_str(), candidate, canary))
            });
            shared.sync(canaries).await;
            let deployments: Vec<(&str, &sluice_core::breaker::Breaker)> = self
                .deployments
                .iter()
                .map(|d| (&*d.name, &*d.breaker))
                .collect();
            shared.sync_breakers(&deployments).await;
        }
    }

    /// A route by name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        match self.index.get(name) {
            Some(Name::Route(i)) => self.routes.get(*i),
            _ => None,
        }
    }
}
