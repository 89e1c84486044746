//! [`Lease`]: a model in use. Dropping it (or cancelling an acquire that waits for a load)
//! releases the model back to the pool, which may then unload it.

use std::ops::Deref;
use std::sync::Arc;

use super::clock::Clock;
use super::events::Eviction;
use super::keep_alive::KeepAlive;
use super::loader::Loader;
use super::state::{dispose, Inner, Phase};

/// Releases leases and cancelled waits; object-safe so [`Lease`] is generic only over the model.
pub(super) trait Release<M>: Send + Sync {
    fn release(&self, name: &str, id: u64, keep_alive: Option<KeepAlive>, model: Option<Arc<M>>);
}

impl<L: Loader, C: Clock> Release<L::Model> for Inner<L, C> {
    fn release(
        &self,
        name: &str,
        id: u64,
        keep_alive: Option<KeepAlive>,
        model: Option<Arc<L::Model>>,
    ) {
        let mut state = self.lock();
        let now = self.clock.now();
        let default = state
            .models
            .get(name)
            .map_or(self.config.keep_alive, |r| self.keep_alive(&r.spec));
        let pinned = state.models.get(name).is_some_and(|r| r.pinned);
        let mut unload = false;
        // Whether memory became available to an acquire waiting for it: a loaded model went
        // idle (now evictable) or unloads.
        let mut freed = false;
        if let Some(entry) = state.entries.get_mut(name).filter(|e| e.id == id) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.last_used = now;
            entry.keep_alive = keep_alive.unwrap_or(default);
            let idle = entry.in_flight == 0 && matches!(entry.phase, Phase::Loaded(_));
            freed = idle && !pinned;
            unload = idle && !pinned && entry.keep_alive.is_zero();
        }
        let mut garbage: Vec<Phase<L::Model>> = Vec::new();
        if unload {
            if let Some(entry) = state.entries.remove(name) {
                tracing::info!(model = %name, "unloading local model (keep_alive 0)");
                self.evicted(name, Eviction::KeepAlive);
                garbage.push(entry.phase);
            }
        }
        // The lease's own reference: while the pool's entry still holds the model (checked
        // under the lock, which eviction and unloading take), letting it go is a reference
        // count, not a model, and goes now; only the last reference needs the blocking
        // thread. (Sent there in every case, a late-running drop kept an evicted model alive
        // past the load it was evicted for.)
        if let Some(model) = model {
            if state.entries.get(name).is_some_and(|e| e.id == id) {
                drop(model);
            } else {
                garbage.push(Phase::Loaded(model));
            }
        }
        drop(state);
        dispose(garbage);
        self.changed.notify_one();
        if freed {
            self.freed.notify_waiters();
        }
    }
}

// === Lease ===

/// A model in use: derefs to it; dropping it records the last use and lets the model idle.
pub struct Lease<M: Send + Sync + 'static> {
    model: Option<Arc<M>>,
    pool: Arc<dyn Release<M>>,
    name: String,
    id: u64,
    keep_alive: Option<KeepAlive>,
}

// === impl Lease ===

impl<M: Send + Sync + 'static> Lease<M> {
    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Changes the keep-alive that applies after this lease (e.g. from a request field).
    pub fn set_keep_alive(&mut self, keep_alive: Option<KeepAlive>) {
        self.keep_alive = keep_alive;
    }

    /// The shared model handle (for identity checks; holding it does not keep a lease).
    pub fn model(&self) -> Option<&Arc<M>> {
        self.model.as_ref()
    }
}

impl<M: Send + Sync + 'static> Deref for Lease<M> {
    type Target = M;

    fn deref(&self) -> &M {
        match &self.model {
            Some(model) => model,
            // `model` is only taken in `drop`.
            None => unreachable!("lease used after release"),
        }
    }
}

impl<M: Send + Sync + 'static> Drop for Lease<M> {
    fn drop(&mut self) {
        let model = self.model.take();
        self.pool
            .release(&self.name, self.id, self.keep_alive, model);
    }
}

impl<M: Send + Sync + 'static> std::fmt::Debug for Lease<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

/// An acquire counted in flight while it waits for a load; dropping it (cancellation) undoes
/// the count.
pub(super) struct Pending<M: Send + Sync + 'static> {
    pub(super) pool: Arc<dyn Release<M>>,
    pub(super) name: String,
    pub(super) id: u64,
    pub(super) keep_alive: Option<KeepAlive>,
    pub(super) armed: bool,
}

impl<M: Send + Sync + 'static> Pending<M> {
    pub(super) fn into_lease(mut self, model: Arc<M>) -> Lease<M> {
        self.armed = false;
        Lease {
            model: Some(model),
            pool: Arc::clone(&self.pool),
            name: std::mem::take(&mut self.name),
            id: self.id,
            keep_alive: self.keep_alive,
        }
    }
}

impl<M: Send + Sync + 'static> Drop for Pending<M> {
    fn drop(&mut self) {
        if self.armed {
            self.pool
                .release(&self.name, self.id, self.keep_alive, None);
        }
    }
}
