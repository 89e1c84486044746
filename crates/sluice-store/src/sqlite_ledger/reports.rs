//! What is read from the spend log and the roll-ups (reports, exports, a budget window's
//! spend), and retention.

use crate::ledger::log::{self, LogPage, LogPosition, LogQuery, LogRow, StatusFilter, TsRange};
use crate::ledger::protocol::RECORD_COLUMNS;
use crate::ledger::sources::ReportSources;
use crate::ledger::types::{
    BudgetPeriod, Dimension, LedgerOptions, Purged, Report, ReportRow, SpendRecord, DAY_MS,
};
use crate::sql_int::{from_sql, to_sql};
use crate::UnixMs;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::ops::Range;

/// Spend grouped by `by`, in `period`: by day from the daily roll-ups; else from the
/// sources [`ReportSources::plan`] picks (the raw records of the partial days at the
/// period's edges, the roll-ups of the whole days between).
pub(super) fn report(
    conn: &Connection,
    by: Dimension,
    period: Range<UnixMs>,
    now: UnixMs,
    retention_days: u64,
) -> rusqlite::Result<Report> {
    let sources = ReportSources::plan(by, &period, now, retention_days);
    let days = (to_sql(sources.days.start), to_sql(sources.days.end));
    let rows = if by == Dimension::Day {
        // The primary key starts with `day`: one range of the index, one row a day.
        let mut s = conn.prepare(
            "SELECT date(day * 86400, 'unixepoch') AS g, sum(requests), sum(errors),
                 sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens),
                 sum(cache_write_tokens), sum(reasoning_tokens), sum(cost_nano_usd)
             FROM spend_daily WHERE day >= ?1 AND day < ?2 GROUP BY day ORDER BY day",
        )?;
        let rows = s.query_map(params![days.0, days.1], report_row)?;
        rows.collect::<rusqlite::Result<_>>()?
    } else {
        let mut s = conn.prepare(&split_sql(by.column()))?;
        let (head, tail) = (&sources.head, &sources.tail);
        let rows = s.query_map(
            params![
                to_sql(head.start),
                to_sql(head.end),
                days.0,
                days.1,
                to_sql(tail.start),
                to_sql(tail.end)
            ],
            report_row,
        )?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    Ok(Report {
        rows,
        from_rollups: sources.from_rollups,
    })
}

/// A report grouped by `col`, highest cost first: raw records in `[?1, ?2)` and
/// `[?5, ?6)` (ms), roll-ups in days `[?3, ?4)`. An empty range costs one probe of its
/// index.
fn split_sql(col: &str) -> String {
    let raw = |from: u8, to: u8| {
        format!(
            "SELECT coalesce(nullif({col}, ''), '-') AS g, count(*) AS n, sum(status >= 400) AS e,
                 sum(prompt_tokens) AS p, sum(completion_tokens) AS c, sum(cached_tokens) AS cr,
                 sum(cache_write_tokens) AS cw, sum(reasoning_tokens) AS r,
                 sum(cost_nano_usd) AS usd
             FROM spend_log WHERE ts_ms >= ?{from} AND ts_ms < ?{to} GROUP BY g"
        )
    };
    format!(
        "SELECT g, sum(n), sum(e), sum(p), sum(c), sum(cr), sum(cw), sum(r), sum(usd) FROM (
             {head}
             UNION ALL
             SELECT coalesce(nullif({col}, ''), '-') AS g, sum(requests), sum(errors),
                 sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens),
                 sum(cache_write_tokens), sum(reasoning_tokens), sum(cost_nano_usd)
             FROM spend_daily WHERE day >= ?3 AND day < ?4 GROUP BY g
             UNION ALL
             {tail}
         ) GROUP BY g ORDER BY sum(usd) DESC, g",
        head = raw(1, 2),
        tail = raw(5, 6),
    )
}

/// A row of a report query.
fn report_row(r: &Row<'_>) -> rusqlite::Result<ReportRow> {
    let n = |i| -> rusqlite::Result<u64> { Ok(from_sql(r.get::<_, i64>(i)?)) };
    Ok(ReportRow {
        group: r.get(0)?,
        requests: n(1)?,
        errors: n(2)?,
        prompt_tokens: n(3)?,
        completion_tokens: n(4)?,
        cached_tokens: n(5)?,
        cache_write_tokens: n(6)?,
        reasoning_tokens: n(7)?,
        cost_nano_usd: n(8)?,
    })
}

/// The raw records at or after `since`, oldest first.
pub(super) fn export(conn: &Connection, since: UnixMs) -> rusqlite::Result<Vec<SpendRecord>> {
    let mut s = conn.prepare(&format!(
        "SELECT {RECORD_COLUMNS} FROM spend_log WHERE ts_ms >= ?1 ORDER BY ts_ms, id"
    ))?;
    let rows = s.query_map(params![to_sql(since)], record_from_row)?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
}

/// A page of the request log (see [`crate::ledger::log`]).
pub(super) fn log(conn: &Connection, q: &LogQuery) -> rusqlite::Result<LogPage> {
    let after = q.after.unwrap_or(log::START);
    let searched = TsRange::edge(q, after);
    let after_ts = to_sql(after.ts_ms);
    // Without filters a page examines no more than it shows: no edge to find.
    let edge = match q.filters() {
        false => None,
        true => {
            let mut s = conn.prepare(&log::edge_sql(|n| format!("?{n}")))?;
            let offset = i64::from(q.scan_limit.max(1)) - 1;
            let (low, high) = (searched.low, searched.high);
            s.query_row(params![low, high, after_ts, after.id, offset], |r| {
                Ok(LogPosition {
                    ts_ms: from_sql(r.get(0)?),
                    id: r.get(1)?,
                })
            })
            .optional()?
        }
    };
    let bound = edge.unwrap_or(log::NO_EDGE);
    let read = TsRange::page(q, after, bound);
    let status = q.status.map_or((0, 1000), StatusFilter::range);
    let mut s = conn.prepare(&log::page_sql(RECORD_COLUMNS, |n| format!("?{n}")))?;
    let rows = s.query_map(
        params![
            read.low,
            read.high,
            after_ts,
            after.id,
            to_sql(bound.ts_ms),
            bound.id,
            q.key,
            q.model,
            q.route,
            q.provider,
            q.endpoint,
            status.0,
            status.1,
            i64::from(q.limit) + 1,
        ],
        |r| {
            Ok(LogRow {
                record: record_from_row(r)?,
                id: r.get(23)?,
            })
        },
    )?;
    let found = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(LogPage::assemble(found, q.limit, edge))
}

/// A row of `spend_log`, its columns in [`RECORD_COLUMNS`]'s order.
fn record_from_row(r: &Row<'_>) -> rusqlite::Result<SpendRecord> {
    let n = |i| -> rusqlite::Result<u64> { Ok(from_sql(r.get::<_, i64>(i)?)) };
    Ok(SpendRecord {
        ts_ms: n(0)?,
        request_id: r.get(1)?,
        key_id: r.get(2)?,
        key_name: r.get(3)?,
        endpoint: r.get(4)?,
        route: r.get(5)?,
        model: r.get(6)?,
        provider: r.get(7)?,
        status: r.get(8)?,
        prompt_tokens: n(9)?,
        completion_tokens: n(10)?,
        cached_tokens: n(11)?,
        cache_write_tokens: n(12)?,
        reasoning_tokens: n(13)?,
        cost_nano_usd: n(14)?,
        latency_ms: n(15)?,
        ttft_ms: r.get::<_, Option<i64>>(16)?.map(from_sql),
        cache: r.get(17)?,
        attempts: r.get(18)?,
        stream: r.get(19)?,
        usage_estimated: r.get(20)?,
        batch_id: r.get(21)?,
        guardrails: r.get(22)?,
    })
}

/// What `key_id` spent in budget `window`, in nano-USD (0 if nothing).
pub(super) fn window_spend(conn: &Connection, key_id: &str, window: &str) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT cost_nano_usd FROM budget_spend WHERE key_id = ?1 AND window = ?2",
        params![key_id, window],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|v| v.map_or(0, from_sql))
}

/// Deletes the raw records past `retention_days`, the roll-ups past
/// `rollup_retention_days` (0: kept forever) and the budget windows that have ended.
pub(super) fn purge(
    conn: &Connection,
    now: UnixMs,
    options: &LedgerOptions,
) -> rusqlite::Result<Purged> {
    // The writer is the connection's only user and nests no transaction.
    let tx = conn.unchecked_transaction()?;
    let mut purged = Purged::default();
    if options.retention_days > 0 {
        let horizon = now.saturating_sub(options.retention_days * DAY_MS);
        purged.records = tx.execute(
            "DELETE FROM spend_log WHERE ts_ms < ?1",
            params![to_sql(horizon)],
        )? as u64;
    }
    if options.rollup_retention_days > 0 {
        let horizon = now.saturating_sub(options.rollup_retention_days * DAY_MS);
        purged.rollups = tx.execute(
            "DELETE FROM spend_daily WHERE day < ?1",
            params![to_sql(horizon / DAY_MS)],
        )? as u64;
    }
    let (day, month) = current_windows(now);
    purged.windows = tx.execute(
        "DELETE FROM budget_spend WHERE (window LIKE 'd:%' AND window < ?1)
             OR (window LIKE 'm:%' AND window < ?2)",
        params![day, month],
    )? as u64;
    tx.commit()?;
    Ok(purged)
}

/// Ended budget windows: day windows before today's and month windows before this month's
/// sort below these names.
fn current_windows(now: UnixMs) -> (String, String) {
    (
        BudgetPeriod::Day.window(now).0,
        BudgetPeriod::Month.window(now).0,
    )
}
