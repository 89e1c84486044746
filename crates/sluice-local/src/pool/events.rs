//! [`PoolEvents`]: what the pool tells an observer as models load and unload (for metrics).
//! The pool knows no metric format; the gateway keeps its own counters.

use std::time::Duration;

/// Why a loaded model left memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Idle, and unloaded to make room for another model's load.
    Memory,
    /// Its keep-alive ran out (or was zero when its last lease ended).
    KeepAlive,
    /// An operator unloaded it ([`Pool::unload`](super::Pool::unload)).
    Operator,
}

// === impl Eviction ===

impl Eviction {
    /// Every reason, in a fixed order (for metric series).
    pub const ALL: [Self; 3] = [Self::Memory, Self::KeepAlive, Self::Operator];

    /// Lowercase name for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::KeepAlive => "keep_alive",
            Self::Operator => "operator",
        }
    }

    /// Position in [`Self::ALL`].
    pub fn index(self) -> usize {
        match self {
            Self::Memory => 0,
            Self::KeepAlive => 1,
            Self::Operator => 2,
        }
    }
}

/// Told what the pool does. Called on the pool's own threads (a load's blocking thread, the
/// sweeper, a lease's drop), some of them under the pool's lock: an observer only records,
/// and never calls back into the pool.
pub trait PoolEvents: Send + Sync + 'static {
    /// Model `model`'s load began (a load that hangs is seen only through this and
    /// [`load_ended`](Self::load_ended)).
    fn load_started(&self, _model: &str) {}

    /// Model `model`'s load ended, loaded or failed (before [`loaded`](Self::loaded)).
    fn load_ended(&self, _model: &str) {}

    /// Model `model` loaded in `took` (reserving, checksum, load and measure), run by `engine`
    /// ([`Loader::engine`](super::Loader::engine)).
    fn loaded(&self, model: &str, engine: Option<&'static str>, took: Duration);

    /// Loaded model `model` left memory for `reason`.
    fn evicted(&self, model: &str, reason: Eviction);
}
