//! A batch of records as the three statements of its transaction: the records as one
//! `INSERT ... SELECT * FROM UNNEST(...)`, and the batch's daily roll-up rows and budget
//! windows, summed here first (so no row is touched twice by one statement) and sorted
//! (so replicas lock rows in the same order), as `INSERT ... ON CONFLICT ... DO UPDATE`.
//! Each statement's text and the columns it is given are kept side by side here: their
//! orders must agree.
//!
//! A batch line's record (one with a `batch_id`) is written at most once: the batch's line
//! records go first, as one `INSERT ... ON CONFLICT DO NOTHING RETURNING` against the
//! unique index on `(batch_id, request_id)`, and only those it inserted add to the roll-ups
//! and budget windows. A line run again after a crash (its request id is the same) is not
//! charged again. A batch without line records keeps its single pipelined round trip.

use crate::ledger::protocol::RECORD_COLUMNS;
use crate::ledger::types::{BudgetPeriod, SpendRecord, DAY_MS};
use crate::sql_int::{opt_to_sql, to_sql};
use std::collections::BTreeMap;
use tokio_postgres::types::ToSql;

/// The types of [`LogColumns`]' arrays, in [`RECORD_COLUMNS`]' order (the columns they
/// fill).
const LOG_ARRAYS: &str = "$1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
    $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::INTEGER[], $10::BIGINT[], $11::BIGINT[],
    $12::BIGINT[], $13::BIGINT[], $14::BIGINT[], $15::BIGINT[], $16::BIGINT[], $17::BIGINT[],
    $18::TEXT[], $19::INTEGER[], $20::BOOLEAN[], $21::BOOLEAN[], $22::TEXT[], $23::TEXT[]";

/// The batch's records, given [`LogColumns`]: its columns [`RECORD_COLUMNS`], the ones a
/// record is read back from (SQLite's insert names the same).
pub(super) fn insert_log() -> String {
    format!("INSERT INTO spend_log ({RECORD_COLUMNS}) SELECT * FROM UNNEST({LOG_ARRAYS})")
}

/// A batch's line records, given [`LogColumns`]: those not yet written are inserted (a
/// line twice in the batch once), and their `(batch_id, request_id)` returned. The same
/// insert as [`insert_log`]'s.
pub(super) fn insert_lines() -> String {
    format!(
        "{} ON CONFLICT (batch_id, request_id) WHERE batch_id IS NOT NULL DO NOTHING
        RETURNING batch_id, request_id",
        insert_log()
    )
}

/// The batch's additions to the daily roll-ups, given [`DailyColumns`].
pub(super) const UPSERT_DAILY: &str = "INSERT INTO spend_daily AS t (day, key_id, key_name, model,
        provider, route, requests, errors, prompt_tokens, completion_tokens, cached_tokens,
        cache_write_tokens, reasoning_tokens, cost_nano_usd, latency_ms_sum)
    SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
        $6::TEXT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[],
        $12::BIGINT[], $13::BIGINT[], $14::BIGINT[], $15::BIGINT[])
    ON CONFLICT (day, key_id, model, provider, route) DO UPDATE SET
        key_name = EXCLUDED.key_name,
        requests = t.requests + EXCLUDED.requests,
        errors = t.errors + EXCLUDED.errors,
        prompt_tokens = t.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = t.completion_tokens + EXCLUDED.completion_tokens,
        cached_tokens = t.cached_tokens + EXCLUDED.cached_tokens,
        cache_write_tokens = t.cache_write_tokens + EXCLUDED.cache_write_tokens,
        reasoning_tokens = t.reasoning_tokens + EXCLUDED.reasoning_tokens,
        cost_nano_usd = t.cost_nano_usd + EXCLUDED.cost_nano_usd,
        latency_ms_sum = t.latency_ms_sum + EXCLUDED.latency_ms_sum";

/// The batch's additions to the budget windows, given [`BudgetColumns`].
pub(super) const UPSERT_BUDGET: &str = r#"INSERT INTO budget_spend AS t (key_id, "window", cost_nano_usd)
    SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[])
    ON CONFLICT (key_id, "window") DO UPDATE SET
        cost_nano_usd = t.cost_nano_usd + EXCLUDED.cost_nano_usd"#;

/// A batch's records as the columns of the `UNNEST` insert.
pub(super) struct LogColumns<'a> {
    ts_ms: Vec<i64>,
    request_id: Vec<&'a str>,
    key_id: Vec<Option<&'a str>>,
    key_name: Vec<Option<&'a str>>,
    endpoint: Vec<&'a str>,
    route: Vec<Option<&'a str>>,
    model: Vec<Option<&'a str>>,
    provider: Vec<Option<&'a str>>,
    status: Vec<i32>,
    prompt_tokens: Vec<i64>,
    completion_tokens: Vec<i64>,
    cached_tokens: Vec<i64>,
    cache_write_tokens: Vec<i64>,
    reasoning_tokens: Vec<i64>,
    cost_nano_usd: Vec<i64>,
    latency_ms: Vec<i64>,
    ttft_ms: Vec<Option<i64>>,
    cache: Vec<&'a str>,
    attempts: Vec<i32>,
    stream: Vec<bool>,
    usage_estimated: Vec<bool>,
    batch_id: Vec<Option<&'a str>>,
    guardrails: Vec<Option<&'a str>>,
}

impl<'a> LogColumns<'a> {
    /// The columns of `records`.
    pub(super) fn new(records: &[&'a SpendRecord]) -> Self {
        let mut c = Self::with_capacity(records.len());
        for &r in records {
            c.push(r);
        }
        c
    }

    fn with_capacity(n: usize) -> Self {
        Self {
            ts_ms: Vec::with_capacity(n),
            request_id: Vec::with_capacity(n),
            key_id: Vec::with_capacity(n),
            key_name: Vec::with_capacity(n),
            endpoint: Vec::with_capacity(n),
            route: Vec::with_capacity(n),
            model: Vec::with_capacity(n),
            provider: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            prompt_tokens: Vec::with_capacity(n),
            completion_tokens: Vec::with_capacity(n),
            cached_tokens: Vec::with_capacity(n),
            cache_write_tokens: Vec::with_capacity(n),
            reasoning_tokens: Vec::with_capacity(n),
            cost_nano_usd: Vec::with_capacity(n),
            latency_ms: Vec::with_capacity(n),
            ttft_ms: Vec::with_capacity(n),
            cache: Vec::with_capacity(n),
            attempts: Vec::with_capacity(n),
            stream: Vec::with_capacity(n),
            usage_estimated: Vec::with_capacity(n),
            batch_id: Vec::with_capacity(n),
            guardrails: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, r: &'a SpendRecord) {
        self.ts_ms.push(to_sql(r.ts_ms));
        self.request_id.push(&r.request_id);
        self.key_id.push(r.key_id.as_deref());
        self.key_name.push(r.key_name.as_deref());
        self.endpoint.push(&r.endpoint);
        self.route.push(r.route.as_deref());
        self.model.push(r.model.as_deref());
        self.provider.push(r.provider.as_deref());
        self.status.push(i32::from(r.status));
        self.prompt_tokens.push(to_sql(r.prompt_tokens));
        self.completion_tokens.push(to_sql(r.completion_tokens));
        self.cached_tokens.push(to_sql(r.cached_tokens));
        self.cache_write_tokens.push(to_sql(r.cache_write_tokens));
        self.reasoning_tokens.push(to_sql(r.reasoning_tokens));
        self.cost_nano_usd.push(to_sql(r.cost_nano_usd));
        self.latency_ms.push(to_sql(r.latency_ms));
        self.ttft_ms.push(opt_to_sql(r.ttft_ms));
        self.cache.push(&r.cache);
        self.attempts
            .push(i32::try_from(r.attempts).unwrap_or(i32::MAX));
        self.stream.push(r.stream);
        self.usage_estimated.push(r.usage_estimated);
        self.batch_id.push(r.batch_id.as_deref());
        self.guardrails.push(r.guardrails.as_deref());
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 23] {
        [
            &self.ts_ms,
            &self.request_id,
            &self.key_id,
            &self.key_name,
            &self.endpoint,
            &self.route,
            &self.model,
            &self.provider,
            &self.status,
            &self.prompt_tokens,
            &self.completion_tokens,
            &self.cached_tokens,
            &self.cache_write_tokens,
            &self.reasoning_tokens,
            &self.cost_nano_usd,
            &self.latency_ms,
            &self.ttft_ms,
            &self.cache,
            &self.attempts,
            &self.stream,
            &self.usage_estimated,
            &self.batch_id,
            &self.guardrails,
        ]
    }
}

/// A roll-up row's primary key: day, key_id, model, provider, route (`''` for none).
type DailyKey<'a> = (i64, &'a str, &'a str, &'a str, &'a str);

/// What a batch adds to one roll-up row.
#[derive(Default)]
struct DailySum<'a> {
    key_name: &'a str,
    requests: u64,
    errors: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    cost_nano_usd: u64,
    latency_ms_sum: u64,
}

/// A batch summed into roll-up rows and budget windows, in primary-key order.
pub(super) struct Sums<'a> {
    daily: BTreeMap<DailyKey<'a>, DailySum<'a>>,
    budget: BTreeMap<(&'a str, String), u64>,
}

impl<'a> Sums<'a> {
    pub(super) fn new(records: &[&'a SpendRecord]) -> Self {
        let mut daily: BTreeMap<DailyKey<'a>, DailySum<'a>> = BTreeMap::new();
        let mut budget: BTreeMap<(&'a str, String), u64> = BTreeMap::new();
        for &r in records {
            let key_id = r.key_id.as_deref().unwrap_or("");
            let key = (
                to_sql(r.ts_ms / DAY_MS),
                key_id,
                r.model.as_deref().unwrap_or(""),
                r.provider.as_deref().unwrap_or(""),
                r.route.as_deref().unwrap_or(""),
            );
            let s = daily.entry(key).or_default();
            // The latest name wins (a key renamed during the day).
            s.key_name = r.key_name.as_deref().unwrap_or("");
            s.requests += 1;
            s.errors += u64::from(r.status >= 400);
            s.prompt_tokens = s.prompt_tokens.saturating_add(r.prompt_tokens);
            s.completion_tokens = s.completion_tokens.saturating_add(r.completion_tokens);
            s.cached_tokens = s.cached_tokens.saturating_add(r.cached_tokens);
            s.cache_write_tokens = s.cache_write_tokens.saturating_add(r.cache_write_tokens);
            s.reasoning_tokens = s.reasoning_tokens.saturating_add(r.reasoning_tokens);
            s.cost_nano_usd = s.cost_nano_usd.saturating_add(r.cost_nano_usd);
            s.latency_ms_sum = s.latency_ms_sum.saturating_add(r.latency_ms);
            if let Some(key_id) = r.key_id.as_deref() {
                for period in [BudgetPeriod::Total, BudgetPeriod::Day, BudgetPeriod::Month] {
                    let (window, _) = period.window(r.ts_ms);
                    let spent = budget.entry((key_id, window)).or_default();
                    *spent = spent.saturating_add(r.cost_nano_usd);
                }
            }
        }
        Self { daily, budget }
    }
}

/// Roll-up rows as the columns of the `UNNEST` upsert.
pub(super) struct DailyColumns<'a> {
    day: Vec<i64>,
    key_id: Vec<&'a str>,
    key_name: Vec<&'a str>,
    model: Vec<&'a str>,
    provider: Vec<&'a str>,
    route: Vec<&'a str>,
    sums: [Vec<i64>; 9],
}

impl<'a> DailyColumns<'a> {
    pub(super) fn new(sums: &Sums<'a>) -> Self {
        let mut c = Self {
            day: Vec::new(),
            key_id: Vec::new(),
            key_name: Vec::new(),
            model: Vec::new(),
            provider: Vec::new(),
            route: Vec::new(),
            sums: Default::default(),
        };
        for (&(day, key_id, model, provider, route), s) in &sums.daily {
            c.day.push(day);
            c.key_id.push(key_id);
            c.key_name.push(s.key_name);
            c.model.push(model);
            c.provider.push(provider);
            c.route.push(route);
            let values = [
                s.requests,
                s.errors,
                s.prompt_tokens,
                s.completion_tokens,
                s.cached_tokens,
                s.cache_write_tokens,
                s.reasoning_tokens,
                s.cost_nano_usd,
                s.latency_ms_sum,
            ];
            for (column, v) in c.sums.iter_mut().zip(values) {
                column.push(to_sql(v));
            }
        }
        c
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 15] {
        let [a, b, c, d, e, f, g, h, i] = &self.sums;
        [
            &self.day,
            &self.key_id,
            &self.key_name,
            &self.model,
            &self.provider,
            &self.route,
            a,
            b,
            c,
            d,
            e,
            f,
            g,
            h,
            i,
        ]
    }
}

/// Budget windows as the columns of the `UNNEST` upsert.
pub(super) struct BudgetColumns<'a> {
    key_id: Vec<&'a str>,
    window: Vec<&'a str>,
    cost_nano_usd: Vec<i64>,
}

impl<'a> BudgetColumns<'a> {
    pub(super) fn new(sums: &'a Sums<'a>) -> Self {
        let mut c = Self {
            key_id: Vec::new(),
            window: Vec::new(),
            cost_nano_usd: Vec::new(),
        };
        for ((key_id, window), &cost) in &sums.budget {
            c.key_id.push(*key_id);
            c.window.push(window.as_str());
            c.cost_nano_usd.push(to_sql(cost));
        }
        c
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 3] {
        [&self.key_id, &self.window, &self.cost_nano_usd]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_inserts_name_each_column_once_with_one_array_each() {
        let columns = RECORD_COLUMNS.split(',').count();
        let arrays = LOG_ARRAYS.split(',').count();
        // As many as `LogColumns::params` gives.
        assert_eq!((columns, arrays), (23, 23));
        let (log, lines) = (insert_log(), insert_lines());
        assert!(lines.starts_with(&log), "{lines}");
        assert!(lines.ends_with("RETURNING batch_id, request_id"), "{lines}");
    }
}
