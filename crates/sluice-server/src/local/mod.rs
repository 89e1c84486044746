//! Models sluice runs itself: a `type = "local"` provider's models are GGUF files and
//! sentence-embedding models served in process by `sluice-local`, behind one model pool
//! (memory budget, lazy single-flight loads, LRU eviction, keep-alive). This module builds
//! and reports on the runtime; `pipeline::local` serves requests on it.
//!
//! The runtime is the `local` cargo feature (on by default). Without it, sluice builds
//! without candle: a `local` provider's models answer with an error that says so.

#[cfg(not(feature = "local"))]
mod absent;
#[cfg(feature = "local")]
mod admin;
mod found;
#[cfg(feature = "local")]
mod metrics;
#[cfg(feature = "local")]
mod runtime;

#[cfg(not(feature = "local"))]
pub use absent::{health, load, preload, render, start, sweep, unload, LocalRuntime};
#[cfg(feature = "local")]
pub use admin::{load, unload};
pub use found::Found;
#[cfg(feature = "local")]
pub use metrics::{LocalMetrics, ModelMetrics};
#[cfg(feature = "local")]
pub use runtime::{discover, health, preload, render, start, sweep, LocalRuntime};
