//! [`Pool::preload`]: loading models ahead of their first request, with progress.

use std::time::{Duration, Instant};

use super::clock::Clock;
use super::error::PoolError;
use super::handle::Pool;
use super::loader::Loader;
use super::state::Record;

/// Progress of [`Pool::preload`], for a CLI progress bar.
#[derive(Debug, Clone)]
pub enum PreloadEvent {
    /// Model `index` (0-based) of `total` starts loading.
    Loading {
        /// The model.
        name: String,
        /// Its position.
        index: usize,
        /// Models to preload.
        total: usize,
    },
    /// It is loaded.
    Loaded {
        /// The model.
        name: String,
        /// Its position.
        index: usize,
        /// Models to preload.
        total: usize,
        /// Bytes it holds.
        bytes: u64,
        /// Wall time of the load.
        elapsed: Duration,
    },
    /// It failed; preloading goes on with the next.
    Failed {
        /// The model.
        name: String,
        /// Its position.
        index: usize,
        /// Models to preload.
        total: usize,
        /// Why.
        error: PoolError,
    },
}

/// What [`Pool::preload`] did.
#[derive(Debug, Clone, Default)]
pub struct PreloadReport {
    /// Models now loaded.
    pub loaded: Vec<String>,
    /// Models that failed, with the error.
    pub failed: Vec<(String, PoolError)>,
}

impl<L: Loader, C: Clock> Pool<L, C> {
    /// Loads `names` one after the other (acquire and release), reporting progress; failures
    /// are reported and skipped. Preloaded models then follow the usual keep-alive: pin them
    /// to keep them.
    pub async fn preload(
        &self,
        names: &[&str],
        mut progress: impl FnMut(PreloadEvent),
    ) -> PreloadReport {
        let total = names.len();
        let mut report = PreloadReport::default();
        for (index, name) in names.iter().enumerate() {
            let name = (*name).to_owned();
            progress(PreloadEvent::Loading {
                name: name.clone(),
                index,
                total,
            });
            let started = Instant::now();
            match self.acquire(&name, None).await {
                Ok(lease) => {
                    drop(lease);
                    let bytes = self
                        .snapshot()
                        .model(&name)
                        .map_or(0, |status| status.bytes_reserved);
                    progress(PreloadEvent::Loaded {
                        name: name.clone(),
                        index,
                        total,
                        bytes,
                        elapsed: started.elapsed(),
                    });
                    report.loaded.push(name);
                }
                Err(error) => {
                    progress(PreloadEvent::Failed {
                        name: name.clone(),
                        index,
                        total,
                        error: error.clone(),
                    });
                    report.failed.push((name, error));
                }
            }
        }
        report
    }

    /// [`Pool::preload`] of the models whose spec sets `preload` or `pin`, in configuration
    /// order.
    pub async fn preload_configured(&self, progress: impl FnMut(PreloadEvent)) -> PreloadReport {
        let names: Vec<String> = {
            let state = self.inner.lock();
            let mut records: Vec<&Record> = state
                .models
                .values()
                .filter(|r| r.spec.preload || r.spec.pin)
                .collect();
            records.sort_by_key(|r| r.seq);
            records.iter().map(|r| r.spec.name.clone()).collect()
        };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.preload(&names, progress).await
    }
}
