//! Reports of periods that start or end mid-day, run on both ledgers (SQLite in
//! `ledger_sqlite.rs`, PostgreSQL in `postgres.rs`): read from the raw records of the partial
//! edge days and the roll-ups of the whole days between, they must equal the sums of the
//! raw records themselves, to the millisecond.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use sluice_store::ledger::DAY_MS;
use sluice_store::{Dimension, Ledger, ReportRow, SpendRecord};
use std::collections::BTreeMap;

const MINUTE: u64 = 60_000;

fn record(i: u64, ts_ms: u64) -> SpendRecord {
    let key = i % 4;
    SpendRecord {
        ts_ms,
        request_id: format!("split-{i}"),
        key_id: (key != 0).then(|| format!("key_{key}")),
        key_name: (key != 0).then(|| format!("team-{key}")),
        endpoint: "chat".into(),
        route: (i % 3 != 0).then(|| format!("r{}", i % 3)),
        model: (i % 11 != 0).then(|| format!("m{}", i % 5)),
        provider: Some(format!("p{}", i % 2)),
        status: if i % 9 == 0 { 429 } else { 200 },
        prompt_tokens: 100 + i % 37,
        completion_tokens: 10 + i % 13,
        cached_tokens: i % 3,
        cache_write_tokens: i % 2,
        reasoning_tokens: i % 5,
        cost_nano_usd: 1_000 + i * 7,
        latency_ms: 5,
        cache: "miss".into(),
        attempts: 1,
        ..SpendRecord::default()
    }
}

/// The records: one every 41 minutes over the last 10 days, and one on each side of two
/// UTC midnights (today's and three days ago).
fn records(now: u64) -> Vec<SpendRecord> {
    let today = now / DAY_MS * DAY_MS;
    let mut times: Vec<u64> = (0..)
        .map(|k| now - 10 * DAY_MS + k * 41 * MINUTE)
        .take_while(|t| *t <= now)
        .collect();
    for m in [today, today - 3 * DAY_MS] {
        times.extend([m - 1, m, m + 1].into_iter().filter(|t| *t <= now));
    }
    times
        .into_iter()
        .enumerate()
        .map(|(i, t)| record(i as u64, t))
        .collect()
}

/// What a report of `period` grouped by `by` should say: the raw records' sums, highest
/// cost first, then by name.
fn expected(
    records: &[SpendRecord],
    by: Dimension,
    period: &std::ops::Range<u64>,
) -> Vec<ReportRow> {
    let mut groups: BTreeMap<String, ReportRow> = BTreeMap::new();
    for r in records.iter().filter(|r| period.contains(&r.ts_ms)) {
        let value = match by {
            Dimension::Key => r.key_name.clone(),
            Dimension::Model => r.model.clone(),
            Dimension::Provider => r.provider.clone(),
            _ => r.route.clone(),
        };
        let group = value.unwrap_or_else(|| "-".into());
        let row = groups.entry(group.clone()).or_insert_with(|| ReportRow {
            group,
            ..ReportRow::default()
        });
        row.requests += 1;
        row.errors += u64::from(r.status >= 400);
        row.prompt_tokens += r.prompt_tokens;
        row.completion_tokens += r.completion_tokens;
        row.cached_tokens += r.cached_tokens;
        row.cache_write_tokens += r.cache_write_tokens;
        row.reasoning_tokens += r.reasoning_tokens;
        row.cost_nano_usd += r.cost_nano_usd;
    }
    let mut rows: Vec<ReportRow> = groups.into_values().collect();
    rows.sort_by(|a, b| {
        b.cost_nano_usd
            .cmp(&a.cost_nano_usd)
            .then(a.group.cmp(&b.group))
    });
    rows
}

/// Writes the records to `ledger` (empty, raw log kept at least 11 days), then checks
/// periods of every shape against the raw sums.
pub async fn check(ledger: &Ledger) {
    let now = sluice_store::unix_now_ms();
    let today = now / DAY_MS * DAY_MS;
    let records = records(now);
    for r in &records {
        ledger.record(r.clone());
    }
    ledger.flush().await;
    assert_eq!(ledger.written(), records.len() as u64);
    let periods = [
        // The CLI's default: a rolling week, open-ended.
        (now - 7 * DAY_MS, u64::MAX),
        (now - 7 * DAY_MS + 12_345, u64::MAX),
        // Both edges mid-day, whole days between.
        (now - 8 * DAY_MS + 777, now - DAY_MS - 555),
        // Edges a millisecond either side of a midnight.
        (today - 3 * DAY_MS - 1, today + 1),
        (today - 3 * DAY_MS + 1, today - 1),
        (today - 3 * DAY_MS + 1, today),
        // Within one day, and across one midnight with no whole day inside.
        (
            today - 2 * DAY_MS + 3 * 3_600_000,
            today - 2 * DAY_MS + 9 * 3_600_000,
        ),
        (
            today - 3 * DAY_MS - 7 * MINUTE,
            today - 3 * DAY_MS + 7 * MINUTE,
        ),
        (today - DAY_MS - 7 * MINUTE, now),
        // Whole days, read from the roll-ups alone.
        (today - 5 * DAY_MS, today),
    ];
    for (since, until) in periods {
        for by in [
            Dimension::Key,
            Dimension::Model,
            Dimension::Provider,
            Dimension::Route,
        ] {
            let report = ledger.report_between(by, since, until, now).await.unwrap();
            let want = expected(&records, by, &(since..until));
            assert!(!want.is_empty(), "{since}..{until}: no records");
            assert_eq!(report.rows, want, "{by:?} over {since}..{until}");
            let whole_days = since % DAY_MS == 0 && until % DAY_MS == 0;
            assert_eq!(report.from_rollups, whole_days, "{since}..{until}");
        }
    }
}
