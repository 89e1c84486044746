//! The ledger's records, keys, reports and options: what callers pass and get back, the
//! same for both implementations.

use crate::UnixMs;
use std::time::Duration;

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
    /// The batch (`batch_…`) whose line this request was; `None` for a client's request.
    pub batch_id: Option<String>,
    /// What guardrails found, `guardrail:detector:action=count` joined by `,` (never the
    /// values); `None` when none applied or found anything.
    pub guardrails: Option<String>,
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

/// The day number of a UTC date written `YYYY-MM-DD`; `None` for anything else (a month
/// 13, a 30 February).
pub fn parse_day(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let mut next = |len: usize| {
        parts
            .next()
            .filter(|p| p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
    };
    let (y, m, d) = (next(4)?, next(2)?, next(2)?);
    let day = days_from_civil(i64::from(y), m, d);
    (civil_from_days(day) == (i64::from(y), m, d)).then_some(day)
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
    /// The `[[guardrails]]` (by name) applied to this key's requests, besides the model's
    /// and the route's.
    pub guardrails: Vec<String>,
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
    /// UTC day (`YYYY-MM-DD`), oldest first: always read from the daily roll-ups (one row
    /// a day, however many records), so a period starts at a UTC midnight.
    Day,
}

impl Dimension {
    /// Parses `key`, `model`, `provider`, `route` or `day`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "key" => Some(Self::Key),
            "model" => Some(Self::Model),
            "provider" => Some(Self::Provider),
            "route" => Some(Self::Route),
            "day" => Some(Self::Day),
            _ => None,
        }
    }

    /// Its name, as [`Dimension::parse`] reads it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Model => "model",
            Self::Provider => "provider",
            Self::Route => "route",
            Self::Day => "day",
        }
    }

    /// The column it groups by (in both `spend_log` and `spend_daily`; `day` is only in
    /// `spend_daily`, days since the Unix epoch).
    pub const fn column(self) -> &'static str {
        match self {
            Self::Key => "key_name",
            Self::Model => "model",
            Self::Provider => "provider",
            Self::Route => "route",
            Self::Day => "day",
        }
    }
}

/// The start of a report's period `text` long (`7d`, `24h`, `30m`; see
/// [`sluice_core::keys::parse_duration`]) ending at `now`, in Unix ms.
pub fn since(text: &str, now: UnixMs) -> Result<UnixMs, String> {
    let d = sluice_core::keys::parse_duration(text)?;
    Ok(now.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

/// Whether a spend report of `period` grouped by `by` reads the daily roll-ups rather than
/// the raw log: always by day; for a period of whole UTC days (the roll-ups hold the same
/// sums, in a few hundred rows a day instead of every request's); and for a period that
/// starts past the raw log's retention (`retention_days`, 0: forever).
pub fn reads_rollups(
    by: Dimension,
    period: &std::ops::Range<UnixMs>,
    now: UnixMs,
    retention_days: u64,
) -> bool {
    let whole_days =
        period.start % DAY_MS == 0 && (period.end == UnixMs::MAX || period.end % DAY_MS == 0);
    let past_retention = retention_days > 0
        && period.start < now.saturating_sub(retention_days.saturating_mul(DAY_MS));
    by == Dimension::Day || whole_days || past_retention
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

/// A spend report: rows ordered by cost, highest first (by [`Dimension::Day`]: by day,
/// oldest first).
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
    fn dates_parse_strictly() {
        assert_eq!(parse_day("2026-12-01"), Some(20_788));
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2024-02-29"), Some(19_782));
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-1-01",
            "26-12-01",
            "2026-12-01x",
            "2026/12/01",
            "",
            "2026-12",
            "+026-12-01",
            "2026-00-10",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn report_periods() {
        assert_eq!(since("7d", 10 * DAY_MS), Ok(3 * DAY_MS));
        assert_eq!(since("24h", DAY_MS / 2), Ok(0));
        assert!(since("7x", DAY_MS).is_err());
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
