//! A config reload's rules: what it cannot change (the stores, the spend log, the local
//! runtime, the listener: a restart's business), what it keeps (by name: a deployment's
//! breaker and latency averages while its provider and upstream id are the same, a route's
//! canary while its settings are the same), and what changed, for the log.

use super::registry::{Deployment, Registry, Route};
use sluice_core::config::{Config, ProviderConfig};
use sluice_core::{Error, ErrorKind, Secret};
use sluice_providers::Provider;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Reads the config again and reloads it (set by whoever started the gateway from a
/// source it can read again: `sluice serve` from its file); `POST /admin/config/reload` and
/// SIGHUP call it. Its error is the message for the caller.
pub struct ReloadHook(pub Box<dyn Fn() -> Result<Changes, String> + Send + Sync>);

impl std::fmt::Debug for ReloadHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadHook")
    }
}

/// Reloads so far, kept across them: `sluice_config_reloads_total{result}`.
#[derive(Debug, Default)]
pub struct Reloads {
    /// Reloads that swapped the config.
    pub ok: AtomicU64,
    /// Reloads refused (invalid file, or a change that takes a restart).
    pub failed: AtomicU64,
}

impl Reloads {
    /// The counter, in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP sluice_config_reloads_total Config reloads (SIGHUP, POST /admin/config/reload), by result.\n# TYPE sluice_config_reloads_total counter\nsluice_config_reloads_total{{result=\"ok\"}} {}\nsluice_config_reloads_total{{result=\"failed\"}} {}",
            self.ok.load(Relaxed),
            self.failed.load(Relaxed)
        );
    }
}

/// The settings a reload cannot change, as text (secrets compare by their references, not
/// their values: rotate a secret with a restart).
pub fn fixed(config: &Config) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        config.server.log_format,
        config.server.watch_config,
        config.observability,
        config.storage,
        config.spend,
        config.local,
        config.files,
        config.batches,
        config.responses,
        config.server.listen,
        (
            config.cache.memory_bytes,
            config.cache.disk_bytes,
            config.cache.store_timeout
        )
    )
}

/// Refuses `config` when it changes what only a restart can.
pub(super) fn check_fixed(current: &str, config: &Config) -> Result<(), Error> {
    if fixed(config) == current {
        return Ok(());
    }
    Err(ErrorKind::InvalidRequest {
        message:
            "this config changes [storage], [spend], [local], [files], [batches], [responses], \
             [observability], the cache's store, server.listen, server.log_format or \
             server.watch_config_ms, which take a restart; nothing was reloaded"
                .into(),
        param: None,
    }
    .into())
}

/// Refuses turning the response cache on where it was off (its store opens at start).
pub(super) fn check_cache(had_cache: bool, config: &Config, new: &Registry) -> Result<(), Error> {
    let caches = config.cache.policy.enabled
        || new.deployments.iter().any(|d| d.cache.enabled)
        || new.routes.iter().any(|r| r.config.cache.enabled);
    if caches && !had_cache {
        return Err(ErrorKind::InvalidRequest {
            message: "this config turns the response cache on, which takes a restart; nothing was reloaded".into(),
            param: None,
        }
        .into());
    }
    Ok(())
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Models and routes the new config adds.
    pub added: Vec<String>,
    /// Models and routes it no longer has.
    pub removed: Vec<String>,
    /// Deployments and canaries whose live state was kept.
    pub kept: usize,
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "added [{}], removed [{}], live state kept for {}",
            self.added.join(", "),
            self.removed.join(", "),
            self.kept
        )
    }
}

/// The names of the state a reload replaces.
pub(super) struct Old<'a> {
    pub providers: &'a [Arc<Provider>],
    pub deployments: &'a [Deployment],
    pub routes: &'a [Route],
}

/// Hands `old`'s live state to the same deployments and routes of `new`; says what changed.
pub(super) fn carry(old: &Old<'_>, new: &mut Registry) -> Changes {
    let mut changes = Changes::default();
    // An unchanged provider keeps its connection pools.
    for p in &mut new.providers {
        if let Some(o) = old
            .providers
            .iter()
            .find(|o| same_provider(&o.config, &p.config))
        {
            *p = Arc::clone(o);
        }
    }
    for d in &mut new.deployments {
        let provider = new.providers[d.provider].name();
        let same = old.deployments.iter().find(|o| {
            o.name == d.name
                && o.upstream == d.upstream
                && old.providers[o.provider].name() == provider
        });
        if let Some(o) = same {
            d.breaker = Arc::clone(&o.breaker);
            d.ttft = Arc::clone(&o.ttft);
            d.total = Arc::clone(&o.total);
            changes.kept += 1;
        }
    }
    for r in &mut new.routes {
        let Some(canary) = &r.canary else { continue };
        let same = old.routes.iter().find(|o| {
            o.config.name == r.config.name
                && o.canary.as_ref().is_some_and(|c| {
                    format!("{:?}", c.config) == format!("{:?}", canary.config)
                        && old.deployments[c.config.target].name
                            == new.deployments[canary.config.target].name
                })
        });
        if let Some(c) = same.and_then(|o| o.canary.as_ref()) {
            r.canary = Some(Arc::clone(c));
            changes.kept += 1;
        }
    }
    let names = |deps: &[Deployment], routes: &[Route]| -> HashSet<String> {
        deps.iter()
            .map(|d| d.name.to_string())
            .chain(routes.iter().map(|r| r.config.name.clone()))
            .collect()
    };
    let before = names(old.deployments, old.routes);
    let after = names(&new.deployments, &new.routes);
    changes.added = sorted(after.difference(&before));
    changes.removed = sorted(before.difference(&after));
    changes
}

fn sorted<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = names.cloned().collect();
    v.sort();
    v
}

/// Whether two providers' settings are the same, secrets' values included.
fn same_provider(a: &ProviderConfig, b: &ProviderConfig) -> bool {
    let secret = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_string());
    let headers = |h: &[(String, Secret)]| -> Vec<(String, String)> {
        h.iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect()
    };
    format!("{a:?}") == format!("{b:?}")
        && secret(&a.api_key) == secret(&b.api_key)
        && headers(&a.headers) == headers(&b.headers)
}
