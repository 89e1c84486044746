//! The stores a gateway opens at start: the response cache (when anything caches), the
//! ledger of keys and spend (when spend is logged or keys are on), the limiter, the
//! routing state shared on Redis (or, without Redis, the canaries' file), the Files API's
//! files (unless `[files]` is off), the Responses API's stored responses and the sampled
//! payloads (with `[observability] sample_rate`).

use crate::cache::Cache;
use crate::shared_routing::SharedRouting;
use sluice_core::config::Config;
use sluice_core::{Error, ErrorKind};
use sluice_store::{open, FileStore, Ledger, Limiter, ResponseStore, RoutingFile, SampleStore};
use std::sync::Arc;

/// What [`open`] opened.
pub(super) struct Stores {
    pub cache: Option<Arc<Cache>>,
    pub ledger: Option<Ledger>,
    pub limiter: Limiter,
    pub shared_routing: Option<SharedRouting>,
    pub canary_file: Option<RoutingFile>,
    pub files: Option<FileStore>,
    pub responses: ResponseStore,
    pub samples: Option<SampleStore>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> Error {
    ErrorKind::Internal {
        message: format!("{what}: {e}"),
    }
    .into()
}

/// Opens the stores `config` asks for; `caches`: some model or route caches.
pub(super) fn open(config: &Config, caches: bool) -> Result<Stores, Error> {
    let cache = if caches {
        let store = open::cache_store(&config.storage, &config.cache)
            .map_err(|e| internal("cannot open the cache store", e))?;
        Some(Arc::new(Cache::new(&config.cache, Some(store))))
    } else {
        None
    };
    let ledger = if config.spend.enabled || config.server.master_key.is_some() {
        Some(
            open::ledger(&config.storage, &config.spend)
                .map_err(|e| internal("cannot open the spend log and key store", e))?,
        )
    } else {
        None
    };
    let limiter = open::limiter(&config.storage, &config.limits)
        .map_err(|e| internal("cannot set up the Redis limiter", e))?;
    let shared_routing = match &config.storage.redis_url {
        None => None,
        Some(url) => Some(
            SharedRouting::new(
                url.expose(),
                &config.storage.redis_prefix,
                config.limits.redis_timeout,
            )
            .map_err(|e| internal("cannot set up the shared routing state", e))?,
        ),
    };
    let canary_file = match &config.storage.redis_url {
        Some(_) => None,
        None => Some(
            RoutingFile::open(&config.storage.data_dir)
                .map_err(|e| internal("cannot open the routing state file", e))?,
        ),
    };
    let files = match config.files.enabled {
        true => Some(
            open::files(&config.storage, &config.files)
                .map_err(|e| internal("cannot open the files store", e))?,
        ),
        false => None,
    };
    let responses = open::responses(&config.storage, &config.responses)
        .map_err(|e| internal("cannot open the responses store", e))?;
    let samples = match config.observability.sample_rate > 0.0 {
        true => Some(
            open::samples(&config.storage)
                .map_err(|e| internal("cannot open the samples store", e))?,
        ),
        false => None,
    };
    Ok(Stores {
        samples,
        responses,
        cache,
        ledger,
        limiter,
        shared_routing,
        canary_file,
        files,
    })
}
