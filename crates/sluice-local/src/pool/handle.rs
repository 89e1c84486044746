//! [`Pool`], the handle: construction, the budget, and the configured models.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;

use super::clock::{Clock, SystemClock};
use super::error::{PoolError, PoolErrorKind};
use super::events::PoolEvents;
use super::loader::Loader;
use super::spec::{ModelSpec, PoolConfig};
use super::state::{Inner, Record, State};

/// Loaded models under a memory budget; cheap to clone (shared state).
pub struct Pool<L: Loader, C: Clock = SystemClock> {
    pub(super) inner: Arc<Inner<L, C>>,
}

impl<L: Loader, C: Clock> Clone for Pool<L, C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<L: Loader, C: Clock> std::fmt::Debug for Pool<L, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("budget", &self.inner.config.memory_budget)
            .field("used", &self.used())
            .finish_non_exhaustive()
    }
}

impl<L: Loader> Pool<L, SystemClock> {
    /// A pool of `models` (a later spec of the same name replaces an earlier one).
    pub fn new(loader: L, config: PoolConfig, models: impl IntoIterator<Item = ModelSpec>) -> Self {
        Self::with_clock(loader, config, models, SystemClock)
    }
}

impl<L: Loader, C: Clock> Pool<L, C> {
    /// [`Pool::new`] with another clock.
    pub fn with_clock(
        loader: L,
        config: PoolConfig,
        models: impl IntoIterator<Item = ModelSpec>,
        clock: C,
    ) -> Self {
        let pool = Self {
            inner: Arc::new(Inner {
                loader,
                clock,
                config,
                state: Mutex::new(State {
                    models: HashMap::new(),
                    entries: HashMap::new(),
                    next_seq: 0,
                    next_id: 0,
                    waiting: std::collections::VecDeque::new(),
                    next_ticket: 0,
                }),
                changed: Notify::new(),
                freed: Notify::new(),
                events: OnceLock::new(),
            }),
        };
        for spec in models {
            pool.insert_model(spec);
        }
        pool
    }

    /// Tells `events` of every load and eviction from now on; `false` (and nothing changes)
    /// when an observer was set before.
    pub fn set_events(&self, events: Arc<dyn PoolEvents>) -> bool {
        self.inner.events.set(events).is_ok()
    }

    /// The memory budget.
    pub fn budget(&self) -> u64 {
        self.inner.config.memory_budget
    }

    /// Bytes reserved by loaded and loading models.
    pub fn used(&self) -> u64 {
        self.inner.lock().entries.values().map(|e| e.reserved).sum()
    }

    /// Adds or replaces a model's spec; a loaded copy keeps running until it unloads, the new
    /// spec applies from the next load. Returns the previous spec.
    pub fn insert_model(&self, spec: ModelSpec) -> Option<Arc<ModelSpec>> {
        let mut state = self.inner.lock();
        let seq = state.next_seq;
        state.next_seq += 1;
        let name = spec.name.clone();
        let record = Record {
            pinned: spec.pin,
            spec: Arc::new(spec),
            seq,
            measured: None,
            verified: None,
        };
        state.models.insert(name, record).map(|old| old.spec)
    }

    /// A model's spec.
    pub fn spec(&self, name: &str) -> Option<Arc<ModelSpec>> {
        self.inner
            .lock()
            .models
            .get(name)
            .map(|r| Arc::clone(&r.spec))
    }

    /// Pins or unpins a model (does not load it).
    pub fn set_pinned(&self, name: &str, pinned: bool) -> Result<(), PoolError> {
        let mut state = self.inner.lock();
        let record = state
            .models
            .get_mut(name)
            .ok_or_else(|| PoolErrorKind::NotFound(name.to_owned()))?;
        record.pinned = pinned;
        drop(state);
        self.inner.changed.notify_one();
        self.inner.freed.notify_waiters();
        Ok(())
    }
}
