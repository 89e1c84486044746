//! A connection with its prepared statements, and what runs on it: a batch's transaction
//! (its statements are in `batch`), reports, exports, budget windows, retention, keys.

use super::batch::{
    insert_lines, insert_log, BudgetColumns, DailyColumns, LogColumns, Sums, UPSERT_BUDGET,
    UPSERT_DAILY,
};
use super::queue::Pending;
use crate::ledger::log::{self, LogPage, LogPosition, LogQuery, LogRow, StatusFilter, TsRange};
use crate::ledger::protocol::RECORD_COLUMNS;
use crate::ledger::sources::ReportSources;
use crate::ledger::types::{
    BudgetPeriod, Dimension, KeyRecord, Purged, Report, ReportRow, SpendRecord, DAY_MS,
};
use crate::sql_int::{from_sql, opt_from_sql, opt_to_sql, to_sql};
use crate::{StoreError, UnixMs};
use std::ops::Range;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

/// What a key has spent in one budget window.
const WINDOW_SPEND: &str =
    r#"SELECT cost_nano_usd FROM budget_spend WHERE key_id = $1 AND "window" = $2"#;

/// The columns of `keys`, in [`key_from_row`]'s order.
const KEY_COLUMNS: &str = "id, name, hash, hint, models, rpm, tpm, max_concurrent, \
    budget_nano_usd, budget_period, metadata, created_ms, expires_ms, revoked_ms, guardrails";

/// The retention settings, copied out of the options for the queries.
#[derive(Clone, Copy)]
pub(super) struct Retention {
    pub(super) raw_days: u64,
    pub(super) rollup_days: u64,
}

/// A connection with its prepared statements.
pub(super) struct Conn {
    client: Client,
    insert_log: Statement,
    insert_lines: Statement,
    upsert_daily: Statement,
    upsert_budget: Statement,
    window_spend: Statement,
    key_by_hash: Statement,
    key: Statement,
    keys: Statement,
    save_key: Statement,
}

impl Conn {
    /// Whether the connection is gone (closed by either side).
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Prepares the statements on `client`.
    pub(super) async fn prepare(client: Client) -> Result<Self, StoreError> {
        let [by_hash, key, keys, save] = key_statements();
        let (log, lines) = (insert_log(), insert_lines());
        // Pipelined: one round trip for all of them.
        let (
            insert_log,
            insert_lines,
            upsert_daily,
            upsert_budget,
            window_spend,
            key_by_hash,
            key,
            keys,
            save,
        ) = tokio::try_join!(
            client.prepare(&log),
            client.prepare(&lines),
            client.prepare(UPSERT_DAILY),
            client.prepare(UPSERT_BUDGET),
            client.prepare(WINDOW_SPEND),
            client.prepare(&by_hash),
            client.prepare(&key),
            client.prepare(&keys),
            client.prepare(&save),
        )?;
        Ok(Self {
            client,
            insert_log,
            insert_lines,
            upsert_daily,
            upsert_budget,
            window_spend,
            key_by_hash,
            key,
            keys,
            save_key: save,
        })
    }

    /// Writes `batch` with its roll-ups and budget windows in one transaction; a batch
    /// line's record only if the line has none yet (see `batch`).
    pub(super) async fn write(&mut self, batch: &[Pending]) -> Result<(), StoreError> {
        let (lines, others): (Vec<&SpendRecord>, Vec<&SpendRecord>) = batch
            .iter()
            .map(|p| &*p.record)
            .partition(|r| r.batch_id.is_some());
        let log_columns = LogColumns::new(&others);
        // What the roll-ups and budget windows add: the others, and the lines inserted now.
        let mut counted = others;
        let tx = self.client.transaction().await?;
        if !lines.is_empty() {
            let line_columns = LogColumns::new(&lines);
            let inserted = tx.query(&self.insert_lines, &line_columns.params()).await?;
            let mut fresh = std::collections::HashSet::with_capacity(inserted.len());
            for row in &inserted {
                fresh.insert((row.try_get::<_, String>(0)?, row.try_get::<_, String>(1)?));
            }
            // Each inserted line once (a line twice in the batch was inserted once).
            counted.extend(lines.into_iter().filter(|r| {
                let key = (r.batch_id.clone().unwrap_or_default(), r.request_id.clone());
                fresh.remove(&key)
            }));
        }
        let sums = Sums::new(&counted);
        let daily_columns = DailyColumns::new(&sums);
        let budget_columns = BudgetColumns::new(&sums);
        let (log, daily, budget) = (
            log_columns.params(),
            daily_columns.params(),
            budget_columns.params(),
        );
        // Pipelined: the three statements go in one round trip.
        tokio::try_join!(
            tx.execute(&self.insert_log, &log),
            tx.execute(&self.upsert_daily, &daily),
            tx.execute(&self.upsert_budget, &budget),
        )?;
        tx.commit().await?;
        Ok(())
    }

    /// Spend grouped by `by`, in `period`: by day from the daily roll-ups; else from the
    /// sources [`ReportSources::plan`] picks (the raw records of the partial days at the
    /// period's edges, the roll-ups of the whole days between).
    pub(super) async fn report(
        &self,
        by: Dimension,
        period: Range<UnixMs>,
        now: UnixMs,
        retention_days: u64,
    ) -> Result<Report, StoreError> {
        let sources = ReportSources::plan(by, &period, now, retention_days);
        let days = [to_sql(sources.days.start), to_sql(sources.days.end)];
        let rows = if by == Dimension::Day {
            // By day, oldest first (the date sorts as text).
            let sql = format!(
                "SELECT to_char(to_timestamp(day * 86400) AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
                     {ROLLUP_SUMS}
                 FROM spend_daily WHERE day >= $1 AND day < $2 GROUP BY 1 ORDER BY 1"
            );
            self.client.query(&sql, &[&days[0], &days[1]]).await?
        } else {
            let (head, tail) = (&sources.head, &sources.tail);
            let bounds = [
                to_sql(head.start),
                to_sql(head.end),
                days[0],
                days[1],
                to_sql(tail.start),
                to_sql(tail.end),
            ];
            let params: Vec<&(dyn ToSql + Sync)> =
                bounds.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
            self.client.query(&split_sql(by.column()), &params).await?
        };
        let rows = rows
            .iter()
            .map(report_row)
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        Ok(Report {
            rows,
            from_rollups: sources.from_rollups,
        })
    }

    pub(super) async fn export(&self, since: UnixMs) -> Result<Vec<SpendRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM spend_log WHERE ts_ms >= $1 ORDER BY ts_ms, id",
            RECORD_COLUMNS
        );
        let rows = self.client.query(&sql, &[&to_sql(since)]).await?;
        rows.iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(StoreError::from)
    }

    /// A page of the request log (see [`crate::ledger::log`]).
    pub(super) async fn log(&self, q: &LogQuery) -> Result<LogPage, StoreError> {
        let after = q.after.unwrap_or(log::START);
        let searched = TsRange::edge(q, after);
        let after_ts = to_sql(after.ts_ms);
        // Without filters a page examines no more than it shows: no edge to find.
        let edge = match q.filters() {
            false => None,
            true => {
                let sql = log::edge_sql(|n| format!("${n}"));
                let offset = i64::from(q.scan_limit.max(1)) - 1;
                let params: [&(dyn ToSql + Sync); 5] =
                    [&searched.low, &searched.high, &after_ts, &after.id, &offset];
                match self.client.query_opt(&sql, &params).await? {
                    Some(r) => Some(LogPosition {
                        ts_ms: from_sql(r.try_get(0)?),
                        id: r.try_get(1)?,
                    }),
                    None => None,
                }
            }
        };
        let bound = edge.unwrap_or(log::NO_EDGE);
        let read = TsRange::page(q, after, bound);
        let (low, high) = q.status.map_or((0, 1000), StatusFilter::range);
        let (low, high) = (i32::from(low), i32::from(high));
        let (bound_ts, limit) = (to_sql(bound.ts_ms), i64::from(q.limit) + 1);
        let params: [&(dyn ToSql + Sync); 14] = [
            &read.low,
            &read.high,
            &after_ts,
            &after.id,
            &bound_ts,
            &bound.id,
            &q.key,
            &q.model,
            &q.route,
            &q.provider,
            &q.endpoint,
            &low,
            &high,
            &limit,
        ];
        let sql = log::page_sql(RECORD_COLUMNS, |n| format!("${n}"));
        let rows = self.client.query(&sql, &params).await?;
        let found = rows
            .iter()
            .map(|r| {
                Ok(LogRow {
                    record: record_from_row(r)?,
                    id: r.try_get(23)?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        Ok(LogPage::assemble(found, q.limit, edge))
    }

    pub(super) async fn window_spend(&self, key_id: &str, window: &str) -> Result<u64, StoreError> {
        let row = self
            .client
            .query_opt(&self.window_spend, &[&key_id, &window])
            .await?;
        Ok(match row {
            Some(row) => from_sql(row.try_get(0)?),
            None => 0,
        })
    }

    pub(super) async fn purge(
        &mut self,
        now: UnixMs,
        options: &Retention,
    ) -> Result<Purged, StoreError> {
        let tx = self.client.transaction().await?;
        let mut purged = Purged::default();
        if options.raw_days > 0 {
            let before = now.saturating_sub(options.raw_days.saturating_mul(DAY_MS));
            purged.records = tx
                .execute("DELETE FROM spend_log WHERE ts_ms < $1", &[&to_sql(before)])
                .await?;
        }
        if options.rollup_days > 0 {
            let before = (now / DAY_MS).saturating_sub(options.rollup_days);
            purged.rollups = tx
                .execute("DELETE FROM spend_daily WHERE day < $1", &[&to_sql(before)])
                .await?;
        }
        let (today, _) = BudgetPeriod::Day.window(now);
        let (this_month, _) = BudgetPeriod::Month.window(now);
        purged.windows = tx
            .execute(
                r#"DELETE FROM budget_spend
                   WHERE (left("window", 2) = 'd:' AND "window" COLLATE "C" < $1)
                      OR (left("window", 2) = 'm:' AND "window" COLLATE "C" < $2)"#,
                &[&today, &this_month],
            )
            .await?;
        tx.commit().await?;
        Ok(purged)
    }

    pub(super) async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = self.client.query_opt(&self.key_by_hash, &[&hash]).await?;
        row.as_ref().map(key_from_row).transpose()
    }

    pub(super) async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = self.client.query_opt(&self.key, &[&id]).await?;
        row.as_ref().map(key_from_row).transpose()
    }

    pub(super) async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = self.client.query(&self.keys, &[]).await?;
        rows.iter().map(key_from_row).collect()
    }

    pub(super) async fn save_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let models = serde_json::to_string(&key.models)
            .map_err(|e| StoreError::Protocol(format!("key models: {e}")))?;
        let guardrails = serde_json::to_string(&key.guardrails)
            .map_err(|e| StoreError::Protocol(format!("key guardrails: {e}")))?;
        let metadata = if key.metadata.is_empty() {
            "{}"
        } else {
            key.metadata.as_str()
        };
        self.client
            .execute(
                &self.save_key,
                &[
                    &key.id,
                    &key.name,
                    &key.hash,
                    &key.hint,
                    &models,
                    &opt_to_sql(key.rpm),
                    &opt_to_sql(key.tpm),
                    &opt_to_sql(key.max_concurrent),
                    &opt_to_sql(key.budget_nano_usd),
                    &key.budget_period.as_str(),
                    &metadata,
                    &to_sql(key.created_ms),
                    &opt_to_sql(key.expires_ms),
                    &opt_to_sql(key.revoked_ms),
                    &guardrails,
                ],
            )
            .await?;
        Ok(())
    }
}

fn key_from_row(row: &Row) -> Result<KeyRecord, StoreError> {
    let id: String = row.try_get(0)?;
    let models: String = row.try_get(4)?;
    let models = if models.is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&models).map_err(|e| {
            StoreError::Protocol(format!(
                "keys.models of {id} is not a JSON string array: {e}"
            ))
        })?
    };
    let guardrails: Option<String> = row.try_get(14)?;
    let guardrails = match guardrails.filter(|g| !g.is_empty()) {
        None => Vec::new(),
        Some(g) => serde_json::from_str(&g).map_err(|e| {
            StoreError::Protocol(format!(
                "keys.guardrails of {id} is not a JSON string array: {e}"
            ))
        })?,
    };
    let period: String = row.try_get(9)?;
    let budget_period = BudgetPeriod::parse(&period)
        .ok_or_else(|| StoreError::Protocol(format!("keys.budget_period of {id} is {period:?}")))?;
    Ok(KeyRecord {
        id,
        name: row.try_get(1)?,
        hash: row.try_get(2)?,
        hint: row.try_get(3)?,
        models,
        rpm: opt_from_sql(row.try_get(5)?),
        tpm: opt_from_sql(row.try_get(6)?),
        max_concurrent: opt_from_sql(row.try_get(7)?),
        budget_nano_usd: opt_from_sql(row.try_get(8)?),
        budget_period,
        metadata: row.try_get(10)?,
        created_ms: from_sql(row.try_get(11)?),
        expires_ms: opt_from_sql(row.try_get(12)?),
        revoked_ms: opt_from_sql(row.try_get(13)?),
        guardrails,
    })
}

/// The statements of the keys: by hash, by id (else the newest by name), all, and the
/// upsert, in [`key_from_row`]'s column order.
fn key_statements() -> [String; 4] {
    let by_hash = format!("SELECT {KEY_COLUMNS} FROM keys WHERE hash = $1");
    let key = format!(
        "SELECT {KEY_COLUMNS} FROM keys WHERE id = $1 OR name = $1
         ORDER BY (id = $1) DESC, created_ms DESC, id DESC LIMIT 1"
    );
    let keys = format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY created_ms, id");
    let save = format!(
        "INSERT INTO keys ({KEY_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, hash = EXCLUDED.hash,
             hint = EXCLUDED.hint, models = EXCLUDED.models, rpm = EXCLUDED.rpm,
             tpm = EXCLUDED.tpm, max_concurrent = EXCLUDED.max_concurrent,
             budget_nano_usd = EXCLUDED.budget_nano_usd,
             budget_period = EXCLUDED.budget_period, metadata = EXCLUDED.metadata,
             created_ms = EXCLUDED.created_ms, expires_ms = EXCLUDED.expires_ms,
             revoked_ms = EXCLUDED.revoked_ms, guardrails = EXCLUDED.guardrails"
    );
    [by_hash, key, keys, save]
}

/// The sums of a report read from the roll-ups, each a `BIGINT`.
const ROLLUP_SUMS: &str = "sum(requests)::BIGINT, sum(errors)::BIGINT,
    sum(prompt_tokens)::BIGINT, sum(completion_tokens)::BIGINT, sum(cached_tokens)::BIGINT,
    sum(cache_write_tokens)::BIGINT, sum(reasoning_tokens)::BIGINT,
    sum(cost_nano_usd)::BIGINT";

/// A report grouped by `col`, highest cost first: raw records in `[$1, $2)` and `[$5, $6)`
/// (ms), roll-ups in days `[$3, $4)`. An empty range costs one probe of its index.
fn split_sql(col: &str) -> String {
    let group = format!("COALESCE(NULLIF({col}, ''), '-')");
    let raw = |from: u8, to: u8| {
        format!(
            "SELECT {group} AS g, count(*)::BIGINT, count(*) FILTER (WHERE status >= 400)::BIGINT,
                 sum(prompt_tokens)::BIGINT, sum(completion_tokens)::BIGINT,
                 sum(cached_tokens)::BIGINT, sum(cache_write_tokens)::BIGINT,
                 sum(reasoning_tokens)::BIGINT, sum(cost_nano_usd)::BIGINT
             FROM spend_log WHERE ts_ms >= ${from} AND ts_ms < ${to} GROUP BY 1"
        )
    };
    format!(
        "SELECT g, sum(n)::BIGINT, sum(e)::BIGINT, sum(p)::BIGINT, sum(c)::BIGINT,
             sum(cr)::BIGINT, sum(cw)::BIGINT, sum(r)::BIGINT, sum(usd)::BIGINT
         FROM (
             {head}
             UNION ALL
             SELECT {group}, {ROLLUP_SUMS} FROM spend_daily WHERE day >= $3 AND day < $4
             GROUP BY 1
             UNION ALL
             {tail}
         ) AS parts (g, n, e, p, c, cr, cw, r, usd)
         GROUP BY g ORDER BY 9 DESC, g COLLATE \"C\"",
        head = raw(1, 2),
        tail = raw(5, 6),
    )
}

/// A row of a report query.
fn report_row(r: &Row) -> Result<ReportRow, tokio_postgres::Error> {
    Ok(ReportRow {
        group: r.try_get(0)?,
        requests: from_sql(r.try_get(1)?),
        errors: from_sql(r.try_get(2)?),
        prompt_tokens: from_sql(r.try_get(3)?),
        completion_tokens: from_sql(r.try_get(4)?),
        cached_tokens: from_sql(r.try_get(5)?),
        cache_write_tokens: from_sql(r.try_get(6)?),
        reasoning_tokens: from_sql(r.try_get(7)?),
        cost_nano_usd: from_sql(r.try_get(8)?),
    })
}

/// A row of `spend_log`, its columns in [`RECORD_COLUMNS`]'s order.
fn record_from_row(r: &Row) -> Result<SpendRecord, tokio_postgres::Error> {
    let n = |i| -> Result<u64, tokio_postgres::Error> { Ok(from_sql(r.try_get(i)?)) };
    let status: i32 = r.try_get(8)?;
    let attempts: i32 = r.try_get(18)?;
    Ok(SpendRecord {
        ts_ms: n(0)?,
        request_id: r.try_get(1)?,
        key_id: r.try_get(2)?,
        key_name: r.try_get(3)?,
        endpoint: r.try_get(4)?,
        route: r.try_get(5)?,
        model: r.try_get(6)?,
        provider: r.try_get(7)?,
        status: u16::try_from(status).unwrap_or(0),
        prompt_tokens: n(9)?,
        completion_tokens: n(10)?,
        cached_tokens: n(11)?,
        cache_write_tokens: n(12)?,
        reasoning_tokens: n(13)?,
        cost_nano_usd: n(14)?,
        latency_ms: n(15)?,
        ttft_ms: opt_from_sql(r.try_get(16)?),
        cache: r.try_get(17)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        stream: r.try_get(19)?,
        usage_estimated: r.try_get(20)?,
        batch_id: r.try_get(21)?,
        guardrails: r.try_get(22)?,
    })
}
