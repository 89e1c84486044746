//! The [`Loader`] trait: how the pool loads a model and learns what it holds.

use super::spec::ModelSpec;

/// A loaded model and the bytes it was measured to hold.
#[derive(Debug)]
pub struct Loaded<M> {
    /// The model.
    pub model: M,
    /// Bytes it holds, as measured after loading.
    pub bytes: u64,
}

/// Loads models for a [`Pool`](crate::pool::Pool). Both methods block (file reads): the pool
/// calls them on tokio's blocking pool.
pub trait Loader: Send + Sync + 'static {
    /// What a lease derefs to.
    type Model: Send + Sync + 'static;

    /// Bytes the model is predicted to hold once loaded.
    fn estimate(&self, spec: &ModelSpec) -> crate::Result<u64>;

    /// Loads the model and measures it.
    fn load(&self, spec: &ModelSpec) -> crate::Result<Loaded<Self::Model>>;

    /// What runs a loaded model (`"native"`, `"candle"`), for health and `sluice models`.
    fn engine(&self, _model: &Self::Model) -> Option<&'static str> {
        None
    }

    /// The context length a loaded chat model runs with, for health.
    fn context_length(&self, _model: &Self::Model) -> Option<usize> {
        None
    }

    /// Requests waiting in the loaded model's own queue for a slot or a batch, for metrics.
    /// Called under the pool's lock: reads a counter or a short lock of the model's, no more.
    fn queued(&self, _model: &Self::Model) -> usize {
        0
    }
}
