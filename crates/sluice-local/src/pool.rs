//! [`Pool`]: loaded models under a memory budget.
//!
//! # Rules
//!
//! * **Cost.** Before a load the pool reserves the [`Loader::estimate`] (for GGUF: file size
//!   plus KV cache, see [`crate::estimate_memory`]); once loaded it replaces the reservation with
//!   the size the loader measured. When a model was measured before and its file is unchanged
//!   (same length and modification time), the measured size is reserved instead of the estimate.
//! * **Lazy, single-flight loads.** A model loads on its first [`Pool::acquire`]. Concurrent
//!   acquires of a model that is loading wait for that one load (they are counted as in flight
//!   from the moment they ask, so the model cannot be evicted between the load and their use).
//!   The load runs on tokio's blocking pool and completes even if every caller gives up.
//! * **Eviction.** When a reservation would exceed the budget, idle, unpinned, loaded models are
//!   unloaded least recently used first; among equally old ones the larger goes first; victims
//!   that the later ones make unnecessary are kept (see [`plan_eviction`]). A model in use
//!   (leased or loading) is never evicted: if only such models could make room the acquire
//!   waits, first come first served, up to [`PoolConfig::busy_wait`] for a lease to end (while
//!   any acquire waits, only the first in line may start a load), then fails with
//!   [`PoolErrorKind::BudgetBusy`] (503 + `Retry-After`); a model larger than the budget
//!   (minus pinned models) fails with [`PoolErrorKind::TooLarge`] (503) and nothing is evicted.
//!   When the measured size exceeds the reservation the pool plans again for the difference, and
//!   unloads the new model with the same errors if it cannot make room: the budget is never
//!   knowingly exceeded.
//! * **Keep-alive.** An idle model unloads `keep_alive` after its last use ([`Pool::sweep`],
//!   driven by [`Pool::run_sweeper`]). The value comes from the request that finished last
//!   (the `keep_alive` given to [`Pool::acquire`]), else the model's [`ModelSpec::keep_alive`],
//!   else the pool's [`PoolConfig::keep_alive`] (5 minutes). [`KeepAlive::Forever`] (a negative
//!   value in Ollama's API) never expires; zero unloads as soon as the last lease is dropped.
//! * **Pins.** A pinned model ([`ModelSpec::pin`], [`Pool::set_pinned`]) is neither swept nor
//!   evicted. Pinning does not load; [`Pool::preload`] / [`Pool::preload_configured`] do.
//! * **Checksums.** When [`ModelSpec::sha256`] is set the file is hashed (streamed) before its
//!   first load and refused with [`PoolErrorKind::ChecksumMismatch`] if it differs; a verified
//!   file is not hashed again until its length or modification time changes.
//!
//! Unlike Ollama's scheduler there is no cap on the number of loaded models (only bytes count),
//! eviction follows last use rather than keep-alive expiry order, and a wrong estimate is
//! corrected by the measurement instead of leading to an out-of-memory kill.
//!
//! The rules are generic over the [`Loader`] and the [`Clock`], so they are tested on virtual
//! time with a fake loader; [`GgufLoader`] is the real one for [`ChatModel`](crate::ChatModel)s.
//!
//! # Layout
//!
//! [`handle`](Pool) holds the configured models; `acquire`, `lease`, `load` (reserve, verify,
//! load, measure), `sweep` (keep-alive), `unload` (an operator's), `preload` and `snapshot`
//! are what the pool does;
//! `state` is what they share. The rules' inputs and outputs each have a file: `spec`,
//! `keep_alive`, `clock`, `loader` (the trait) and `loaders` (the real ones), `error`,
//! `events` (what an observer is told: load times, evictions),
//! `eviction` (the plan), `budget` (the machine's memory) and `checksum`.

mod acquire;
mod budget;
mod checksum;
mod clock;
mod error;
mod events;
mod eviction;
mod handle;
mod keep_alive;
mod lease;
mod load;
mod loader;
mod loaders;
mod preload;
mod snapshot;
mod spec;
mod state;
mod sweep;
mod unload;

pub use budget::{
    default_memory_budget, parse_meminfo_total, DEFAULT_BUDGET_PERCENT, FALLBACK_MEMORY_BUDGET,
};
pub use checksum::{sha256_file, verify_sha256};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{PoolError, PoolErrorKind, BUSY_RETRY_AFTER};
pub use events::{Eviction, PoolEvents};
pub use eviction::{plan_eviction, PlanError, Resident};
pub use handle::Pool;
pub use keep_alive::{KeepAlive, DEFAULT_KEEP_ALIVE};
pub use lease::Lease;
pub use loader::{Loaded, Loader};
pub use loaders::{GgufLoader, LocalLoader, LocalModel};
pub use preload::{PreloadEvent, PreloadReport};
pub use snapshot::{ModelState, ModelStatus, PoolSnapshot};
pub use spec::{ModelKind, ModelSpec, PoolConfig, DEFAULT_BUSY_WAIT};
pub use unload::Unload;

#[cfg(test)]
mod tests;
