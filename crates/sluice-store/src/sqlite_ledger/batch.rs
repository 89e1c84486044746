//! A batch's one transaction: its records, inserted many rows to a statement, and what they
//! add to the daily roll-ups and to the budget windows, summed in memory first (so a batch
//! of 512 records costs 16 inserts and a handful of upserts). The statements are prepared
//! once, for the writer's life ([`Statements`]): the many-row insert takes longer to parse
//! than a batch takes to insert.
//!
//! A batch line's record (one with a `batch_id`) is written at most once: it is inserted on
//! its own with `ON CONFLICT DO NOTHING` against the unique index on `(batch_id,
//! request_id)`, and only if it was inserted does it add to the roll-ups and budget
//! windows. A line run again after a crash (its request id is the same) is not charged
//! again.

use crate::ledger::protocol::RECORD_COLUMNS;
use crate::ledger::types::{BudgetPeriod, SpendRecord, DAY_MS};
use crate::sql_int::to_sql;
use rusqlite::{params, Connection, Statement, ToSql};
use std::collections::HashMap;

/// The writer's prepared statements, on its connection.
pub(super) struct Statements<'c> {
    /// [`ROWS_PER_INSERT`] records.
    many: Statement<'c>,
    /// One record.
    one: Statement<'c>,
    /// One batch line's record, unless the line has one already.
    line: Statement<'c>,
    rollup: Statement<'c>,
    window: Statement<'c>,
}

impl<'c> Statements<'c> {
    pub(super) fn prepare(conn: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Self {
            many: conn.prepare(&insert_sql(ROWS_PER_INSERT))?,
            one: conn.prepare(&insert_sql(1))?,
            line: conn.prepare(&format!("{} {LINE_CONFLICT}", insert_sql(1)))?,
            rollup: conn.prepare(ROLLUP_SQL)?,
            window: conn.prepare(WINDOW_SQL)?,
        })
    }
}

/// Writes `records` with their roll-ups and budget windows in one transaction.
pub(super) fn write(
    conn: &Connection,
    s: &mut Statements<'_>,
    records: &[SpendRecord],
) -> rusqlite::Result<()> {
    // The writer is the connection's only user and nests no transaction.
    let tx = conn.unchecked_transaction()?;
    let (lines, others): (Vec<&SpendRecord>, Vec<&SpendRecord>) =
        records.iter().partition(|r| r.batch_id.is_some());
    insert(s, &others)?;
    let mut sums = BatchSums::default();
    for r in others {
        sums.add(r);
    }
    for r in lines {
        bind(&mut s.line, 0, r)?;
        if s.line.raw_execute()? > 0 {
            sums.add(r);
        }
    }
    upsert_rollups(&mut s.rollup, &sums.rollups)?;
    upsert_windows(&mut s.window, &sums.windows)?;
    tx.commit()
}

/// Records one statement inserts at once: a batch of 512 is 16 statements, not 512.
const ROWS_PER_INSERT: usize = 32;

/// Columns of a `spend_log` row that a record fills.
const COLUMNS: usize = 23;

/// What makes a batch line's insert a no-op when the line has a record already (the
/// unique index of schema version 5).
pub(super) const LINE_CONFLICT: &str =
    "ON CONFLICT (batch_id, request_id) WHERE batch_id IS NOT NULL DO NOTHING";

/// `INSERT INTO spend_log` of `rows` records.
fn insert_sql(rows: usize) -> String {
    let mut sql = format!("INSERT INTO spend_log ({RECORD_COLUMNS}) VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for col in 1..=COLUMNS {
            if col > 1 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("?{}", row * COLUMNS + col));
        }
        sql.push(')');
    }
    sql
}

/// The records: [`ROWS_PER_INSERT`] to a statement, the rest one by one.
fn insert(s: &mut Statements<'_>, records: &[&SpendRecord]) -> rusqlite::Result<()> {
    let mut chunks = records.chunks_exact(ROWS_PER_INSERT);
    for chunk in chunks.by_ref() {
        for (row, r) in chunk.iter().enumerate() {
            bind(&mut s.many, row * COLUMNS, r)?;
        }
        s.many.raw_execute()?;
    }
    for r in chunks.remainder() {
        bind(&mut s.one, 0, r)?;
        s.one.raw_execute()?;
    }
    Ok(())
}

/// Binds `r` to the parameters after `at`, in [`RECORD_COLUMNS`]' order.
fn bind(s: &mut Statement<'_>, at: usize, r: &SpendRecord) -> rusqlite::Result<()> {
    let values: [&dyn ToSql; COLUMNS] = [
        &to_sql(r.ts_ms),
        &r.request_id,
        &r.key_id,
        &r.key_name,
        &r.endpoint,
        &r.route,
        &r.model,
        &r.provider,
        &r.status,
        &to_sql(r.prompt_tokens),
        &to_sql(r.completion_tokens),
        &to_sql(r.cached_tokens),
        &to_sql(r.cache_write_tokens),
        &to_sql(r.reasoning_tokens),
        &to_sql(r.cost_nano_usd),
        &to_sql(r.latency_ms),
        &r.ttft_ms.map(to_sql),
        &r.cache,
        &r.attempts,
        &r.stream,
        &r.usage_estimated,
        &r.batch_id,
        &r.guardrails,
    ];
    for (i, v) in values.into_iter().enumerate() {
        s.raw_bind_parameter(at + i + 1, v)?;
    }
    Ok(())
}

/// Adds a batch's sums to a daily roll-up row (a non-empty key name replaces the row's: a
/// key renamed during the day).
const ROLLUP_SQL: &str = "INSERT INTO spend_daily (day, key_id, key_name, model, provider, route,
         requests, errors, prompt_tokens, completion_tokens, cached_tokens,
         cache_write_tokens, reasoning_tokens, cost_nano_usd, latency_ms_sum)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
     ON CONFLICT (day, key_id, model, provider, route) DO UPDATE SET
         key_name = CASE WHEN excluded.key_name = '' THEN key_name
                         ELSE excluded.key_name END,
         requests = requests + excluded.requests,
         errors = errors + excluded.errors,
         prompt_tokens = prompt_tokens + excluded.prompt_tokens,
         completion_tokens = completion_tokens + excluded.completion_tokens,
         cached_tokens = cached_tokens + excluded.cached_tokens,
         cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
         reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
         cost_nano_usd = cost_nano_usd + excluded.cost_nano_usd,
         latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum";

/// Adds a batch's spend to a key's budget window.
const WINDOW_SQL: &str = "INSERT INTO budget_spend (key_id, window, cost_nano_usd)
     VALUES (?1, ?2, ?3)
     ON CONFLICT (key_id, window) DO UPDATE SET
         cost_nano_usd = cost_nano_usd + excluded.cost_nano_usd";

/// The batch's sums added to their daily roll-up rows.
fn upsert_rollups(
    rollup: &mut Statement<'_>,
    rollups: &HashMap<RollupKey<'_>, RollupSums<'_>>,
) -> rusqlite::Result<()> {
    for (k, s) in rollups {
        rollup.execute(params![
            to_sql(k.day),
            k.key_id,
            s.key_name,
            k.model,
            k.provider,
            k.route,
            to_sql(s.requests),
            to_sql(s.errors),
            to_sql(s.prompt_tokens),
            to_sql(s.completion_tokens),
            to_sql(s.cached_tokens),
            to_sql(s.cache_write_tokens),
            to_sql(s.reasoning_tokens),
            to_sql(s.cost_nano_usd),
            to_sql(s.latency_ms_sum),
        ])?;
    }
    Ok(())
}

/// The batch's spend added to each key's budget windows.
fn upsert_windows(
    window: &mut Statement<'_>,
    windows: &HashMap<(&str, String), u64>,
) -> rusqlite::Result<()> {
    for ((key_id, w), cost) in windows {
        window.execute(params![key_id, w, to_sql(*cost)])?;
    }
    Ok(())
}

/// The group a record adds to in `spend_daily`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RollupKey<'a> {
    day: u64,
    key_id: &'a str,
    model: &'a str,
    provider: &'a str,
    route: &'a str,
}

/// Sums of one roll-up group within a batch.
#[derive(Debug, Clone, Default)]
struct RollupSums<'a> {
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

/// A batch's additions to `spend_daily` and `budget_spend`, borrowing the records' text.
#[derive(Debug, Default)]
struct BatchSums<'a> {
    rollups: HashMap<RollupKey<'a>, RollupSums<'a>>,
    windows: HashMap<(&'a str, String), u64>,
}

impl<'a> BatchSums<'a> {
    fn add(&mut self, r: &'a SpendRecord) {
        let key = RollupKey {
            day: r.ts_ms / DAY_MS,
            key_id: r.key_id.as_deref().unwrap_or_default(),
            model: r.model.as_deref().unwrap_or_default(),
            provider: r.provider.as_deref().unwrap_or_default(),
            route: r.route.as_deref().unwrap_or_default(),
        };
        let s = self.rollups.entry(key).or_default();
        if let Some(name) = &r.key_name {
            s.key_name = name;
        }
        s.requests += 1;
        s.errors += u64::from(r.status >= 400);
        s.prompt_tokens += r.prompt_tokens;
        s.completion_tokens += r.completion_tokens;
        s.cached_tokens += r.cached_tokens;
        s.cache_write_tokens += r.cache_write_tokens;
        s.reasoning_tokens += r.reasoning_tokens;
        s.cost_nano_usd = s.cost_nano_usd.saturating_add(r.cost_nano_usd);
        s.latency_ms_sum += r.latency_ms;
        if let (Some(id), true) = (&r.key_id, r.cost_nano_usd > 0) {
            for period in [BudgetPeriod::Total, BudgetPeriod::Day, BudgetPeriod::Month] {
                let (window, _) = period.window(r.ts_ms);
                let w = self.windows.entry((id, window)).or_default();
                *w = w.saturating_add(r.cost_nano_usd);
            }
        }
    }
}
