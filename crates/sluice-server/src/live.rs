//! The state requests are served with, swapped whole by a config reload: a request takes the
//! current state when it arrives and keeps it to its end (streams included), so requests in
//! flight finish on the config they started with while new ones get the new one.

use crate::state::reload::Changes;
use crate::state::AppState;
use sluice_core::config::Config;
use sluice_core::Error;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, PoisonError, RwLock};

/// The live state of a gateway (see the module docs).
#[derive(Debug)]
pub struct Live {
    current: RwLock<Arc<AppState>>,
}

impl Live {
    /// Serving `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        Self {
            current: RwLock::new(state),
        }
    }

    /// The state to serve a request with.
    pub fn get(&self) -> Arc<AppState> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Swaps in the state of `config` (checked first: on an error nothing changes, the
    /// current config keeps serving), and says what changed.
    pub fn reload(&self, config: Config) -> Result<Changes, Error> {
        let current = self.get();
        match current.reload(config) {
            Ok((next, changes)) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
                current.reloads.ok.fetch_add(1, Relaxed);
                tracing::info!(%changes, "config reloaded");
                Ok(changes)
            }
            Err(e) => {
                current.reloads.failed.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "config reload refused: the current config keeps serving");
                Err(e)
            }
        }
    }

    /// Counts a reload that failed before it reached [`Live::reload`] (an unreadable or
    /// invalid file).
    pub fn refused(&self, why: &str) {
        self.get().reloads.failed.fetch_add(1, Relaxed);
        tracing::warn!(
            error = why,
            "config reload refused: the current config keeps serving"
        );
    }
}
