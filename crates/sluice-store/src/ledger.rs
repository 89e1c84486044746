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
//!           cache, attempts, stream, usage_estimated)
//! spend_daily(day, key_id, key_name, model, provider, route, requests, errors,
//!             prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,
//!             reasoning_tokens, cost_nano_usd, latency_ms_sum,
//!             PRIMARY KEY (day, key_id, model, provider, route))   -- '' for none
//! budget_spend(key_id, window, cost_nano_usd, PRIMARY KEY (key_id, window))
//! keys(id PRIMARY KEY, name, hash UNIQUE, hint, models, rpm, tpm, max_concurrent,
//!      budget_nano_usd, budget_period, metadata, created_ms, expires_ms, revoked_ms)
//! ```

use crate::postgres::PgLedger;
use crate::sqlite_ledger::SqliteLedger;
use crate::{StoreError, UnixMs};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::oneshot;

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// One answered (or refused) request, as the spend log keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendRecord {
    /// When the request arrived (Unix ms).
    pub ts_ms: UnixMs,
    /// `x-request-id`.
    pub request_id: String,
    /// The virtual key's id, if one was used.
    pub key_id: Option<String>,
    /// The virtual key's name.
    pub key_name: Option<String>,
    /// `chat`, `embeddings` or `messages`.
    pub endpoint: String,
    /// The route the client named, if it named one.
    pub route: Option<String>,
    /// The deployment (configured model) that answered or was tried last; for a request
    /// that named a model, that model.
    pub model: Option<String>,
    /// The provider of `model`.
    pub provider: Option<String>,
    /// HTTP status sent to the client.
    pub status: u16,
    /// Prompt tokens, cached reads and cache writes included.
    pub prompt_tokens: u64,
    /// Completion tokens, reasoning included.
    pub completion_tokens: u64,
    /// Prompt tokens read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// Completion tokens spent on hidden reasoning.
    pub reasoning_tokens: u64,
    /// What it cost, in nano-USD.
    pub cost_nano_usd: u64,
    /// Arrival to the last byte sent.
    pub latency_ms: u64,
    /// Arrival to the first byte of a stream.
    pub ttft_ms: Option<u64>,
    /// `hit`, `miss`, `bypass` or `coalesced`.
    pub cache: String,
    /// Upstream attempts made.
    pub attempts: u32,
    /// The client asked for a stream.
    pub stream: bool,
    /// The upstream sent no usage: the tokens are sluice's estimate.
    pub usage_estimated: bool,
}

/// How often a budget resets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BudgetPeriod {
    /// Every UTC day.
    Day,
    /// Every UTC calendar month.
    Month,
    /// Never.
    #[default]
    Total,
}

impl BudgetPeriod {
    /// `day`, `month` or `total`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
            Self::Total => "total",
        }
    }

    /// Parses `day`, `month` or `total` (also `daily`, `monthly`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" | "daily" => Some(Self::Day),
            "month" | "monthly" => Some(Self::Month),
            "total" => Some(Self::Total),
            _ => None,
        }
    }

    /// The budget window that holds `now`: `total`, `d:2026-12-01` or `m:2026-12` (UTC),
    /// and when it ends (Unix ms; `None` for `total`).
    pub fn window(self, now: UnixMs) -> (String, Option<UnixMs>) {
        let day = now / DAY_MS;
        let (y, m, d) = civil_from_days(day as i64);
        match self {
            Self::Total => ("total".to_string(), None),
            Self::Day => (format!("d:{y:04}-{m:02}-{d:02}"), Some((day + 1) * DAY_MS)),
            Self::Month => {
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let end = days_from_civil(ny, nm, 1) as u64 * DAY_MS;
                (format!("m:{y:04}-{m:02}"), Some(end))
            }
        }
    }
}

/// The UTC date of a day number (days since 1970-01-01): `(year, month, day)`.
/// Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The day number (days since 1970-01-01) of a UTC date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A virtual key as stored (the secret itself is never stored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRecord {
    /// Stable id (`key_` + 16 hex digits).
    pub id: String,
    /// Human name, unique among live keys by convention (not enforced).
    pub name: String,
    /// Hex BLAKE3 of the secret.
    pub hash: String,
    /// What identifies the key to a person: the secret's prefix and last four characters.
    pub hint: String,
    /// Models and routes the key may use; empty: all.
    pub models: Vec<String>,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u64>,
    /// Budget in nano-USD per `budget_period`.
    pub budget_nano_usd: Option<u64>,
    /// How often the budget resets.
    pub budget_period: BudgetPeriod,
    /// A JSON object, stored as text.
    pub metadata: String,
    /// Created (Unix ms).
    pub created_ms: UnixMs,
    /// Stops working at (Unix ms).
    pub expires_ms: Option<UnixMs>,
    /// Revoked at (Unix ms).
    pub revoked_ms: Option<UnixMs>,
}

/// What a report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Key name (`-` for requests without a key).
    Key,
    /// Deployment.
    Model,
    /// Provider.
    Provider,
    /// Route (`-` for requests that named a model).
    Route,
}

impl Dimension {
    /// Parses `key`, `model`, `provider` or `route`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "key" => Some(Self::Key),
            "model" => Some(Self::Model),
            "provider" => Some(Self::Provider),
            "route" => Some(Self::Route),
            _ => None,
        }
    }

    /// The column it groups by (in both `spend_log` and `spend_daily`).
    pub const fn column(self) -> &'static str {
        match self {
            Self::Key => "key_name",
            Self::Model => "model",
            Self::Provider => "provider",
            Self::Route => "route",
        }
    }
}

/// One row of a spend report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportRow {
    /// The group's value (`-` for none).
    pub group: String,
    /// Requests.
    pub requests: u64,
    /// Requests answered with a status of 400 or more.
    pub errors: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Prompt-cache reads.
    pub cached_tokens: u64,
    /// Prompt-cache writes.
    pub cache_write_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
    /// Nano-USD.
    pub cost_nano_usd: u64,
}

/// A spend report: rows ordered by cost, highest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The groups.
    pub rows: Vec<ReportRow>,
    /// Read from the daily roll-ups (the period reaches past the raw log's retention), so
    /// the period starts at a UTC midnight.
    pub from_rollups: bool,
}

/// Tuning of a ledger.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// Records written per transaction at most (default 512).
    pub batch_size: usize,
    /// Records waiting beyond which new ones are dropped (default 100,000).
    pub max_queued: usize,
    /// Longest a record waits before its batch is written (default 1 s).
    pub flush_interval: Duration,
    /// Days raw records are kept (default 30; 0 keeps them forever).
    pub retention_days: u64,
    /// Days daily roll-ups are kept (default 0: forever).
    pub rollup_retention_days: u64,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        Self {
            batch_size: 512,
            max_queued: 100_000,
            flush_interval: Duration::from_secs(1),
            retention_days: 30,
            rollup_retention_days: 0,
        }
    }
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Raw records.
    pub records: u64,
    /// Roll-up rows.
    pub rollups: u64,
    /// Ended budget windows.
    pub windows: u64,
}

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
        both!(self, l => l.report(by, since, now).await)
    }

    /// The raw records at or after `since`, oldest first (for replays such as
    /// `sluice cost simulate`).
    pub async fn export(&self, since: UnixMs) -> Result<Vec<SpendRecord>, StoreError> {
        both!(self, l => l.export(since).await)
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

// === shared by the implementations ===

/// Where a ledger's writer sends an answer.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What a ledger handle asks of its writer thread (the same for both implementations).
pub(crate) enum Msg {
    Record(Box<SpendRecord>),
    Flush(oneshot::Sender<()>),
    Report {
        by: Dimension,
        since: UnixMs,
        now: UnixMs,
        reply: Reply<Report>,
    },
    Export {
        since: UnixMs,
        reply: Reply<Vec<SpendRecord>>,
    },
    WindowSpend {
        key_id: String,
        window: String,
        reply: Reply<u64>,
    },
    Purge {
        now: UnixMs,
        reply: Reply<Purged>,
    },
    KeyByHash {
        hash: String,
        reply: Reply<Option<KeyRecord>>,
    },
    Key {
        id: String,
        reply: Reply<Option<KeyRecord>>,
    },
    Keys(Reply<Vec<KeyRecord>>),
    SaveKey {
        key: Box<KeyRecord>,
        reply: Reply<()>,
    },
    Shutdown,
}

/// The columns of `spend_log` a record is read from, in [`SpendRecord`]'s order.
pub(crate) const RECORD_COLUMNS: &str = "ts_ms, request_id, key_id, key_name, endpoint, route, \
     model, provider, status, prompt_tokens, completion_tokens, cached_tokens, \
     cache_write_tokens, reasoning_tokens, cost_nano_usd, latency_ms, ttft_ms, cache, attempts, \
     stream, usage_estimated";

/// The group a record adds to in `spend_daily`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RollupKey {
    pub(crate) day: u64,
    pub(crate) key_id: String,
    pub(crate) model: String,
    pub(crate) provider: String,
    pub(crate) route: String,
}

/// Sums of one roll-up group within a batch.
#[derive(Debug, Clone, Default)]
pub(crate) struct RollupSums {
    pub(crate) key_name: String,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    pub(crate) cached_tokens: u64,
    pub(crate) cache_write_tokens: u64,
    pub(crate) reasoning_tokens: u64,
    pub(crate) cost_nano_usd: u64,
    pub(crate) latency_ms_sum: u64,
}

/// A batch's additions to `spend_daily` and `budget_spend`.
#[derive(Debug, Default)]
pub(crate) struct BatchSums {
    pub(crate) rollups: HashMap<RollupKey, RollupSums>,
    pub(crate) windows: HashMap<(String, String), u64>,
}

impl BatchSums {
    pub(crate) fn add(&mut self, r: &SpendRecord) {
        let key = RollupKey {
            day: r.ts_ms / DAY_MS,
            key_id: r.key_id.clone().unwrap_or_default(),
            model: r.model.clone().unwrap_or_default(),
            provider: r.provider.clone().unwrap_or_default(),
            route: r.route.clone().unwrap_or_default(),
        };
        let s = self.rollups.entry(key).or_default();
        if let Some(name) = &r.key_name {
            s.key_name.clone_from(name);
        }
        s.requests += 1;
        s.errors += u64::from(r.status >= 400);
        s.prompt_tokens += r.prompt_tokens;
        s.completion_tokens += r.completion_tokens;
        s.cached_tokens += r.cached_tokens;
        s.cache_write_tokens += r.cache_write_tokens;
        s.reasoning_tokens += r.reasoning_tokens;
        s.cost_nano_usd += r.cost_nano_usd;
        s.latency_ms_sum += r.latency_ms;
        if let (Some(id), true) = (&r.key_id, r.cost_nano_usd > 0) {
            for period in [BudgetPeriod::Total, BudgetPeriod::Day, BudgetPeriod::Month] {
                let (window, _) = period.window(r.ts_ms);
                *self.windows.entry((id.clone(), window)).or_default() += r.cost_nano_usd;
            }
        }
    }
}

/// Which source a report reads, by the retention in force.
pub(crate) fn reads_rollups(since: UnixMs, now: UnixMs, retention_days: u64) -> bool {
    retention_days > 0 && since < now.saturating_sub(retention_days * DAY_MS)
}

/// Ended budget windows: day windows before today's and month windows before this month's
/// sort below these names.
pub(crate) fn current_windows(now: UnixMs) -> (String, String) {
    (
        BudgetPeriod::Day.window(now).0,
        BudgetPeriod::Month.window(now).0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for z in [-1, 0, 1, 59, 60, 365, 10_957, 20_423, 20_788, 100_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
    }

    #[test]
    fn windows() {
        let now = 20_788 * DAY_MS + 5_000; // 2026-12-01T00:00:05Z
        assert_eq!(BudgetPeriod::Total.window(now), ("total".into(), None));
        assert_eq!(
            BudgetPeriod::Day.window(now),
            ("d:2026-12-01".into(), Some(20_789 * DAY_MS))
        );
        let (w, end) = BudgetPeriod::Month.window(now);
        assert_eq!(w, "m:2026-12");
        assert_eq!(
            civil_from_days((end.unwrap() / DAY_MS) as i64),
            (2027, 1, 1)
        );
    }
}
