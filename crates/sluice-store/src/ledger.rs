//! The ledger: virtual keys and the spend log, behind one closed enum ([`Ledger`]) with two
//! implementations that share one schema and one set of semantics: embedded SQLite
//! ([`crate::sqlite_ledger::SqliteLedger`], a file in the data directory) and PostgreSQL
//! ([`crate::postgres::PgLedger`], shared by replicas).
//!
//! Semantics both implementations keep:
//! - [`Ledger::record`] never blocks and never fails to the caller: records are queued for
//!   the writer, which writes them in batches (one transaction per batch, at most
//!   `batch_size` records, at least every `flush_interval`). In the same transaction it adds
//!   each record to the daily roll-up (`spend_daily`) and to the per-key budget windows
//!   (`budget_spend`), so the three never disagree. Past `max_queued` waiting records a
//!   record is dropped and counted ([`Ledger::dropped`]).
//! - [`Ledger::flush`] returns once every record queued before it is written (or failed and
//!   counted in [`Ledger::errors`]).
//! - Retention: [`Ledger::purge`] deletes raw records older than `retention_days` and
//!   budget windows that have ended; roll-ups are kept (or pruned past
//!   `rollup_retention_days`). The writer runs it at open and every hour.
//! - Keys are stored with the BLAKE3 hash of their secret, never the secret.
//!
//! Schema (SQLite types shown; PostgreSQL uses `BIGINT`/`BOOLEAN`/`TEXT`):
//!
//! ```sql
//! spend_log(id INTEGER PRIMARY KEY, ts_ms, request_id, key_id, key_name, endpoint, route,
//!           model, provider, status, prompt_tokens, completion_tokens, cached_tokens,
//!           cache_write_tokens, reasoning_tokens, cost_nano_usd, latency_ms, ttft_ms,
//!           cache, attempts, stream, usage_estimated, batch_id)
//! spend_daily(day, key_id, key_name, model, provider, route, requests, errors,
//!             prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,
//!             reasoning_tokens, cost_nano_usd, latency_ms_sum,
//!             PRIMARY KEY (day, key_id, model, provider, route))   -- '' for none
//! budget_spend(key_id, window, cost_nano_usd, PRIMARY KEY (key_id, window))
//! keys(id PRIMARY KEY, name, hash UNIQUE, hint, models, rpm, tpm, max_concurrent,
//!      budget_nano_usd, budget_period, metadata, created_ms, expires_ms, revoked_ms)
//! ```

pub(crate) mod counters;
pub(crate) mod log;
pub(crate) mod protocol;
pub(crate) mod sources;
pub(crate) mod types;

pub use log::{LogPage, LogPosition, LogQuery, LogRow, StatusFilter};
pub use types::{
    civil_from_days, days_from_civil, parse_day, since, BudgetPeriod, Dimension, KeyRecord,
    LedgerOptions, Purged, Report, ReportRow, SpendRecord, DAY_MS,
};

use crate::postgres::PgLedger;
use crate::sqlite_ledger::SqliteLedger;
use crate::{StoreError, UnixMs};

/// Virtual keys and the spend log: embedded SQLite, or PostgreSQL shared by replicas.
#[derive(Debug, Clone)]
pub enum Ledger {
    /// A SQLite file, owned by one writer thread.
    Sqlite(SqliteLedger),
    /// PostgreSQL, driven by its own thread.
    Postgres(PgLedger),
}

macro_rules! both {
    ($self:ident, $l:ident => $e:expr) => {
        match $self {
            Self::Sqlite($l) => $e,
            Self::Postgres($l) => $e,
        }
    };
}

// === impl Ledger ===

impl Ledger {
    /// Queues one record; never blocks.
    pub fn record(&self, r: SpendRecord) {
        both!(self, l => l.record(r))
    }

    /// Waits until every record queued before is written or counted as failed.
    pub async fn flush(&self) {
        both!(self, l => l.flush().await)
    }

    /// Spend grouped by `by`, of the records at or after `since` (Unix ms).
    pub async fn report(
        &self,
        by: Dimension,
        since: UnixMs,
        now: UnixMs,
    ) -> Result<Report, StoreError> {
        self.report_between(by, since, UnixMs::MAX, now).await
    }

    /// Spend grouped by `by`, of the records at or after `since` and before `until` (Unix
    /// ms). Read from the daily roll-ups, the period is whole UTC days: from `since`'s day
    /// to the day holding the last millisecond before `until`.
    pub async fn report_between(
        &self,
        by: Dimension,
        since: UnixMs,
        until: UnixMs,
        now: UnixMs,
    ) -> Result<Report, StoreError> {
        both!(self, l => l.report_between(by, since, until, now).await)
    }

    /// The raw records at or after `since`, oldest first (for replays such as
    /// `sluice cost simulate`).
    pub async fn export(&self, since: UnixMs) -> Result<Vec<SpendRecord>, StoreError> {
        both!(self, l => l.export(since).await)
    }

    /// A page of the request log: the records `query` matches, newest first, the search
    /// bounded by its `scan_limit` (see [`log`]).
    pub async fn log(&self, query: LogQuery) -> Result<LogPage, StoreError> {
        both!(self, l => l.log(query).await)
    }

    /// What `key_id` spent in budget `window` (see [`BudgetPeriod::window`]), in nano-USD,
    /// records still queued excluded.
    pub async fn window_spend(&self, key_id: &str, window: &str) -> Result<u64, StoreError> {
        both!(self, l => l.window_spend(key_id, window).await)
    }

    /// Deletes what retention no longer keeps (see the module docs).
    pub async fn purge(&self, now: UnixMs) -> Result<Purged, StoreError> {
        both!(self, l => l.purge(now).await)
    }

    /// The key whose secret hashes to `hash`.
    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        both!(self, l => l.key_by_hash(hash).await)
    }

    /// The key with id `id`, else the newest key named `id`.
    pub async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        both!(self, l => l.key(id).await)
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        both!(self, l => l.keys().await)
    }

    /// Inserts the key, or replaces the one with its id.
    pub async fn save_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        both!(self, l => l.save_key(key).await)
    }

    /// Records dropped because the queue was full, since open.
    pub fn dropped(&self) -> u64 {
        both!(self, l => l.dropped())
    }

    /// Records whose write failed, since open.
    pub fn errors(&self) -> u64 {
        both!(self, l => l.errors())
    }

    /// Records written, since open.
    pub fn written(&self) -> u64 {
        both!(self, l => l.written())
    }

    /// Records waiting for the writer.
    pub fn queued(&self) -> u64 {
        both!(self, l => l.queued())
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}
