//! A load, on a blocking thread: reserve the memory (evicting idle models), verify the checksum,
//! load, measure, and settle the reservation on the measured size.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use super::checksum::verify_sha256;
use super::clock::Clock;
use super::error::PoolError;
use super::events::Eviction;
use super::eviction::{plan_eviction, Resident};
use super::loader::{Loaded, Loader};
use super::spec::{ModelKind, ModelSpec};
use super::state::{dispose_inline, fingerprint, Fingerprint, Inner, Phase, State};
use crate::error::panic_error;

impl<L: Loader, C: Clock> Inner<L, C> {
    /// The load job of entry `id`, on a blocking thread.
    pub(super) fn run_load(&self, name: &str, id: u64, spec: &ModelSpec) {
        let started = self.clock.now();
        tracing::info!(model = %name, "loading local model");
        if let Some(events) = self.events.get() {
            events.load_started(name);
        }
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.load(name, id, spec)))
            .unwrap_or_else(|payload| {
                Err(PoolError::load_failed(
                    name,
                    panic_error("model loader", payload.as_ref()),
                ))
            });
        if let Some(events) = self.events.get() {
            events.load_ended(name);
        }
        let mut state = self.lock();
        let Some(entry) = state.entries.get_mut(name).filter(|e| e.id == id) else {
            return;
        };
        let Phase::Loading(tx) = &entry.phase else {
            return;
        };
        let tx = tx.clone();
        match result {
            Ok(model) => {
                let model = Arc::new(model);
                entry.phase = Phase::Loaded(Arc::clone(&model));
                tracing::info!(
                    model = %name,
                    bytes = entry.reserved,
                    estimated = entry.estimated,
                    "loaded local model"
                );
                drop(state);
                if let Some(events) = self.events.get() {
                    let took = self.clock.now().saturating_duration_since(started);
                    events.loaded(name, self.loader.engine(&model), took);
                }
                tx.send_replace(Some(Ok(model)));
                // The channel's value holds the model until the last sender and receiver
                // go: let go of the sender now, not after the notifications, so an eviction
                // soon after is not kept from dropping the model.
                drop(tx);
                self.changed.notify_one();
                self.freed.notify_waiters();
            }
            Err(error) => {
                state.entries.remove(name);
                drop(state);
                tracing::warn!(model = %name, %error, "local model load failed");
                tx.send_replace(Some(Err(error)));
            }
        }
    }

    /// Reserve, verify, load, measure. On success the entry's reservation is the measured size;
    /// on failure the caller removes the entry (and with it the reservation).
    fn load(&self, name: &str, id: u64, spec: &ModelSpec) -> Result<L::Model, PoolError> {
        let file = fingerprint(&spec.path);
        let need = match self.remembered_size(name, file) {
            Some(bytes) => bytes,
            None => self
                .loader
                .estimate(spec)
                .map_err(|e| PoolError::load_failed(name, e))?,
        };
        let victims = self.reserve(name, id, need, true)?;
        dispose_inline(victims);
        if let Some(expected) = &spec.sha256 {
            self.verify(name, spec, expected, file)?;
        }
        let Loaded { model, bytes } = self
            .loader
            .load(spec)
            .map_err(|e| PoolError::load_failed(name, e))?;
        let shown = (
            self.loader.engine(&model),
            self.loader.context_length(&model),
        );
        self.record_measurement(name, id, file, bytes, shown);
        match self.reserve(name, id, bytes, false) {
            Ok(victims) => {
                dispose_inline(victims);
                Ok(model)
            }
            Err(error) => {
                tracing::warn!(
                    model = %name,
                    measured = bytes,
                    estimated = need,
                    "local model measured larger than its estimate and cannot fit"
                );
                drop(model);
                Err(error)
            }
        }
    }

    /// The size `name` was measured at, if its file is unchanged since.
    fn remembered_size(&self, name: &str, file: Option<Fingerprint>) -> Option<u64> {
        let state = self.lock();
        state.models.get(name).and_then(|r| match r.measured {
            Some((seen, bytes)) if Some(seen) == file => Some(bytes),
            _ => None,
        })
    }

    /// Checks the file against `expected`, unless it matched before and is unchanged since.
    fn verify(
        &self,
        name: &str,
        spec: &ModelSpec,
        expected: &str,
        file: Option<Fingerprint>,
    ) -> Result<(), PoolError> {
        let verified = {
            let state = self.lock();
            state.models.get(name).and_then(|r| r.verified)
        };
        if file.is_none() || verified != file {
            // A directory's (embedding model, reranker) checksum is its weights file's.
            let weights = spec.path.join("model.safetensors");
            let path = match spec.kind {
                ModelKind::Chat => &spec.path,
                ModelKind::Embedding | ModelKind::Rerank => &weights,
            };
            verify_sha256(name, path, expected)?;
            let mut state = self.lock();
            if let Some(record) = state.models.get_mut(name) {
                record.verified = file;
            }
        }
        Ok(())
    }

    /// Remembers the measured size for the next load of an unchanged file, and shows it and
    /// the engine and context length on entry `id`.
    fn record_measurement(
        &self,
        name: &str,
        id: u64,
        file: Option<Fingerprint>,
        bytes: u64,
        (engine, context_length): (Option<&'static str>, Option<usize>),
    ) {
        let mut state = self.lock();
        if let Some(record) = state.models.get_mut(name) {
            record.measured = file.map(|f| (f, bytes));
        }
        if let Some(entry) = state.entries.get_mut(name).filter(|e| e.id == id) {
            entry.measured = Some(bytes);
            entry.engine = engine;
            entry.context_length = context_length;
        }
    }

    /// Sets entry `id`'s reservation to `bytes`, evicting what the plan says. `first` is the
    /// reservation before the load (records the estimate).
    fn reserve(
        &self,
        name: &str,
        id: u64,
        bytes: u64,
        first: bool,
    ) -> Result<Vec<Phase<L::Model>>, PoolError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.entries.get(name).is_none_or(|e| e.id != id) {
            return Ok(Vec::new());
        }
        let others = residents_besides(state, name);
        let residents: Vec<Resident> = others.iter().map(|(_, r)| *r).collect();
        // Plan for the whole size (so `TooLarge` compares it to the budget), with our current
        // reservation not counted twice.
        let plan = plan_eviction(&residents, bytes, self.config.memory_budget);
        let victims: Vec<String> = match plan {
            Ok(indexes) => indexes.iter().map(|&i| others[i].0.clone()).collect(),
            Err(error) => return Err(PoolError::from_plan(name, error)),
        };
        let mut evicted = Vec::new();
        for victim in victims {
            if let Some(entry) = state.entries.remove(&victim) {
                tracing::info!(
                    model = %victim,
                    bytes = entry.reserved,
                    for_model = %name,
                    "evicting idle local model"
                );
                self.evicted(&victim, Eviction::Memory);
                evicted.push(entry.phase);
            }
        }
        if let Some(entry) = state.entries.get_mut(name).filter(|e| e.id == id) {
            if first {
                entry.estimated = Some(bytes);
            }
            entry.reserved = bytes;
        }
        Ok(evicted)
    }
}

/// Every entry but `name`'s, as [`plan_eviction`] sees it.
fn residents_besides<'s, M>(state: &'s State<M>, name: &str) -> Vec<(&'s String, Resident)> {
    state
        .entries
        .iter()
        .filter(|(other, _)| other.as_str() != name)
        .map(|(other, entry)| {
            let resident = Resident {
                bytes: entry.reserved,
                last_used: entry.last_used,
                in_use: entry.in_flight > 0 || matches!(entry.phase, Phase::Loading(_)),
                pinned: state.models.get(other).is_some_and(|r| r.pinned),
            };
            (other, resident)
        })
        .collect()
}
