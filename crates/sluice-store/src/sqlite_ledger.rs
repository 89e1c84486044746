//! The embedded SQLite ledger (placeholder; in progress).

use crate::ledger::{Dimension, KeyRecord, LedgerOptions, Purged, Report, SpendRecord};
use crate::{StoreError, UnixMs};

/// The PostgreSQL ledger.
#[derive(Debug, Clone)]
pub struct SqliteLedger {}

fn todo_err() -> StoreError {
    StoreError::Unavailable("sqlite ledger not implemented yet".into())
}

impl SqliteLedger {
    /// Connects to `url`, creates the schema if absent, and starts the writer thread.
    pub fn open(_path: &std::path::Path, _options: LedgerOptions) -> Result<Self, StoreError> {
        Err(todo_err())
    }
    /// See [`crate::Ledger::record`].
    pub fn record(&self, _r: SpendRecord) {}
    /// See [`crate::Ledger::flush`].
    pub async fn flush(&self) {}
    /// See [`crate::Ledger::report`].
    pub async fn report(
        &self,
        _by: Dimension,
        _since: UnixMs,
        _now: UnixMs,
    ) -> Result<Report, StoreError> {
        Err(todo_err())
    }
    /// See [`crate::Ledger::window_spend`].
    pub async fn window_spend(&self, _key_id: &str, _window: &str) -> Result<u64, StoreError> {
        Err(todo_err())
    }
    /// See [`crate::Ledger::purge`].
    pub async fn purge(&self, _now: UnixMs) -> Result<Purged, StoreError> {
        Err(todo_err())
    }
    /// See [`crate::Ledger::key_by_hash`].
    pub async fn key_by_hash(&self, _hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        Err(todo_err())
    }
    /// See [`crate::Ledger::key`].
    pub async fn key(&self, _id: &str) -> Result<Option<KeyRecord>, StoreError> {
        Err(todo_err())
    }
    /// See [`crate::Ledger::keys`].
    pub async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        Err(todo_err())
    }
    /// See [`crate::Ledger::save_key`].
    pub async fn save_key(&self, _key: &KeyRecord) -> Result<(), StoreError> {
        Err(todo_err())
    }
    /// See [`crate::Ledger::dropped`].
    pub fn dropped(&self) -> u64 {
        0
    }
    /// See [`crate::Ledger::errors`].
    pub fn errors(&self) -> u64 {
        0
    }
    /// See [`crate::Ledger::written`].
    pub fn written(&self) -> u64 {
        0
    }
    /// See [`crate::Ledger::queued`].
    pub fn queued(&self) -> u64 {
        0
    }
}
