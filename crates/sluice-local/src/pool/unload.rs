//! [`Pool::unload`]: an operator unloads one model now (the admin API's "unload"), whatever
//! its keep-alive or pin, provided no request holds it.

use super::clock::Clock;
use super::error::{PoolError, PoolErrorKind};
use super::events::Eviction;
use super::handle::Pool;
use super::loader::Loader;
use super::state::{dispose, Phase};

/// What [`Pool::unload`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unload {
    /// It was loaded and idle: it left memory, freeing these bytes of the budget.
    Unloaded {
        /// Bytes it counted against the budget.
        bytes: u64,
    },
    /// It was not in memory: nothing to do.
    NotLoaded,
    /// It is loading, or requests hold it: it stays (ask again once they end).
    InUse {
        /// Requests holding or waiting for it.
        in_flight: usize,
    },
}

impl<L: Loader, C: Clock> Pool<L, C> {
    /// Unloads the configured model `name` if it is loaded and idle (a pin does not keep it:
    /// the operator asked; it loads again on its next request). See [`Unload`].
    pub fn unload(&self, name: &str) -> Result<Unload, PoolError> {
        let mut state = self.inner.lock();
        if !state.models.contains_key(name) {
            return Err(PoolErrorKind::NotFound(name.to_owned()).into());
        }
        let Some(entry) = state.entries.get(name) else {
            return Ok(Unload::NotLoaded);
        };
        if entry.in_flight > 0 || matches!(entry.phase, Phase::Loading(_)) {
            return Ok(Unload::InUse {
                in_flight: entry.in_flight,
            });
        }
        let Some(entry) = state.entries.remove(name) else {
            return Ok(Unload::NotLoaded);
        };
        drop(state);
        tracing::info!(model = %name, bytes = entry.reserved, "local model unloaded by an operator");
        self.inner.evicted(name, Eviction::Operator);
        self.inner.changed.notify_one();
        self.inner.freed.notify_waiters();
        let bytes = entry.reserved;
        dispose(vec![entry.phase]);
        Ok(Unload::Unloaded { bytes })
    }
}
