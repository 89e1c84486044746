//! [`PoolSnapshot`]: every configured model's state, for health and metrics.

use std::time::Instant;

use super::clock::Clock;
use super::handle::Pool;
use super::keep_alive::KeepAlive;
use super::loader::Loader;
use super::state::{Entry, Phase, Record};

/// Whether a model is in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    /// Not loaded.
    Unloaded,
    /// Being loaded (its estimate is reserved).
    Loading,
    /// Loaded.
    Loaded,
}

// === impl ModelState ===

impl ModelState {
    /// Lowercase name for health output and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unloaded => "unloaded",
            Self::Loading => "loading",
            Self::Loaded => "loaded",
        }
    }
}

/// One model in a [`PoolSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStatus {
    /// The model's name.
    pub name: String,
    /// In memory or not.
    pub state: ModelState,
    /// The size reserved before loading (estimate or earlier measurement), once known.
    pub bytes_estimated: Option<u64>,
    /// The size measured after loading.
    pub bytes_measured: Option<u64>,
    /// What runs it, once loaded ([`Loader::engine`]).
    pub engine: Option<&'static str>,
    /// The context length a loaded chat model runs with ([`Loader::context_length`]).
    pub context_length: Option<usize>,
    /// Bytes it counts against the budget now.
    pub bytes_reserved: u64,
    /// The last acquire or release; `None` when not loaded.
    pub last_used: Option<Instant>,
    /// Leases held plus acquires waiting for the load.
    pub in_flight: usize,
    /// Requests waiting in the loaded model's own queue ([`Loader::queued`]).
    pub queued: usize,
    /// Pinned.
    pub pinned: bool,
    /// The keep-alive that applies when it goes idle.
    pub keep_alive: KeepAlive,
    /// When it unloads if it stays idle; `None`: loading, in use, pinned, forever or unloaded.
    pub expires_at: Option<Instant>,
}

/// The pool's state for health and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// The memory budget.
    pub budget: u64,
    /// Bytes reserved by loaded and loading models.
    pub used: u64,
    /// Every configured model, in configuration order.
    pub models: Vec<ModelStatus>,
}

// === impl PoolSnapshot ===

impl PoolSnapshot {
    /// The status of one model.
    pub fn model(&self, name: &str) -> Option<&ModelStatus> {
        self.models.iter().find(|m| m.name == name)
    }
}
impl<L: Loader, C: Clock> Pool<L, C> {
    /// Every configured model's state, budget and use.
    pub fn snapshot(&self) -> PoolSnapshot {
        let state = self.inner.lock();
        let mut records: Vec<&Record> = state.models.values().collect();
        records.sort_by_key(|r| r.seq);
        let models = records
            .into_iter()
            .map(|record| self.status(record, state.entries.get(&record.spec.name)))
            .collect();
        PoolSnapshot {
            budget: self.inner.config.memory_budget,
            used: state.entries.values().map(|e| e.reserved).sum(),
            models,
        }
    }

    /// A configured model's status, from its record and its entry when loading or loaded.
    fn status(&self, record: &Record, entry: Option<&Entry<L::Model>>) -> ModelStatus {
        let name = record.spec.name.clone();
        let Some(entry) = entry else {
            return ModelStatus {
                name,
                state: ModelState::Unloaded,
                bytes_estimated: None,
                bytes_measured: record.measured.map(|(_, bytes)| bytes),
                engine: None,
                context_length: None,
                bytes_reserved: 0,
                last_used: None,
                in_flight: 0,
                queued: 0,
                pinned: record.pinned,
                keep_alive: self.inner.keep_alive(&record.spec),
                expires_at: None,
            };
        };
        let (loaded, queued) = match &entry.phase {
            Phase::Loaded(model) => (true, self.inner.loader.queued(model)),
            Phase::Loading(_) => (false, 0),
        };
        let expires_at = if loaded && entry.in_flight == 0 && !record.pinned {
            entry.keep_alive.expires_at(entry.last_used)
        } else {
            None
        };
        ModelStatus {
            name,
            state: if loaded {
                ModelState::Loaded
            } else {
                ModelState::Loading
            },
            bytes_estimated: entry.estimated,
            bytes_measured: entry.measured,
            engine: entry.engine,
            context_length: entry.context_length,
            bytes_reserved: entry.reserved,
            last_used: Some(entry.last_used),
            in_flight: entry.in_flight,
            queued,
            pinned: record.pinned,
            keep_alive: entry.keep_alive,
            expires_at,
        }
    }
}
