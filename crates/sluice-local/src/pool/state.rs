//! The pool's shared state: configured models, loading and loaded entries, and the queue of
//! acquires waiting for memory.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Instant, SystemTime};

use tokio::sync::{watch, Notify};

use super::clock::Clock;
use super::error::PoolError;
use super::events::{Eviction, PoolEvents};
use super::keep_alive::KeepAlive;
use super::loader::Loader;
use super::spec::{ModelSpec, PoolConfig};

/// What every handle of a pool shares.
pub(super) struct Inner<L: Loader, C: Clock> {
    pub(super) loader: L,
    pub(super) clock: C,
    pub(super) config: PoolConfig,
    pub(super) state: Mutex<State<L::Model>>,
    /// Poked when an expiry may have moved earlier (a release), for
    /// [`Pool::run_sweeper`](crate::pool::Pool::run_sweeper).
    pub(super) changed: Notify,
    /// Woken (all waiters) whenever a lease ends or a model unloads.
    pub(super) freed: Notify,
    /// Told of loads and evictions, once set ([`Pool::set_events`](crate::pool::Pool::set_events)).
    pub(super) events: OnceLock<Arc<dyn PoolEvents>>,
}

/// What `Inner::state` guards.
pub(super) struct State<M> {
    pub(super) models: HashMap<String, Record>,
    pub(super) entries: HashMap<String, Entry<M>>,
    pub(super) next_seq: u64,
    pub(super) next_id: u64,
    /// Acquires waiting for memory held by models in use, first come first served: while any
    /// waits, only the first may start a load (others that need one queue behind it).
    pub(super) waiting: VecDeque<u64>,
    pub(super) next_ticket: u64,
}

/// A configured model.
pub(super) struct Record {
    pub(super) spec: Arc<ModelSpec>,
    pub(super) seq: u64,
    pub(super) pinned: bool,
    /// The last measured size, valid while the file's fingerprint is unchanged.
    pub(super) measured: Option<(Fingerprint, u64)>,
    /// The file's fingerprint when its checksum last matched.
    pub(super) verified: Option<Fingerprint>,
}

/// A loading or loaded model.
pub(super) struct Entry<M> {
    /// Distinguishes this load from later ones of the same name (for stale releases).
    pub(super) id: u64,
    pub(super) phase: Phase<M>,
    pub(super) estimated: Option<u64>,
    pub(super) measured: Option<u64>,
    pub(super) engine: Option<&'static str>,
    pub(super) context_length: Option<usize>,
    pub(super) reserved: u64,
    pub(super) in_flight: usize,
    pub(super) last_used: Instant,
    pub(super) keep_alive: KeepAlive,
}

pub(super) enum Phase<M> {
    Loading(watch::Sender<Option<Outcome<M>>>),
    Loaded(Arc<M>),
}

pub(super) type Outcome<M> = Result<Arc<M>, PoolError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint {
    len: u64,
    modified: SystemTime,
}

pub(super) fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        len: metadata.len(),
        modified: metadata.modified().ok()?,
    })
}

impl<L: Loader, C: Clock> Inner<L, C> {
    pub(super) fn lock(&self) -> MutexGuard<'_, State<L::Model>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn keep_alive(&self, spec: &ModelSpec) -> KeepAlive {
        spec.keep_alive.unwrap_or(self.config.keep_alive)
    }

    /// Tells the observer, if any, that `model` left memory.
    pub(super) fn evicted(&self, model: &str, reason: Eviction) {
        if let Some(events) = self.events.get() {
            events.evicted(model, reason);
        }
    }
}

/// Drops unloaded models off the async threads (a [`ChatModel`](crate::ChatModel) joins its slot
/// threads).
pub(super) fn dispose<M: Send + Sync + 'static>(models: Vec<Phase<M>>) {
    if models.is_empty() {
        return;
    }
    let release = move || {
        drop(models);
        crate::memory::return_freed_memory();
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn_blocking(release)),
        Err(_) => release(),
    }
}

/// Drops evicted models right here (already on a blocking thread), before the next load
/// allocates.
pub(super) fn dispose_inline<M>(models: Vec<Phase<M>>) {
    if !models.is_empty() {
        drop(models);
        crate::memory::return_freed_memory();
    }
}
