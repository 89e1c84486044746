//! The PostgreSQL ledger against the PostgreSQL at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test works in a fresh schema of its own
//! (the ledger connects with `search_path` set to it), dropped at the end.

mod common;

use common::free_port;
use sluice_store::ledger::{civil_from_days, Purged, DAY_MS};
use sluice_store::postgres::PgLedger;
use sluice_store::{
    unix_now_ms, BudgetPeriod, Dimension, KeyRecord, LedgerOptions, Report, ReportRow, SpendRecord,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `url` with one more query parameter.
fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

async fn client(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Runs `f` on a runtime of its own on another thread (usable from `Drop` and sync tests).
fn on_own_runtime<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .join()
    .expect("helper thread")
}

/// A fresh schema, dropped (with everything in it) when this is dropped.
struct TestDb {
    schema: String,
    /// The ledger's URL: `DATABASE_URL` with `search_path` set to the schema.
    url: String,
}

impl TestDb {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        let schema = format!(
            "t_{}_{nanos}_{}",
            std::process::id(),
            N.fetch_add(1, Relaxed)
        );
        let base = database_url();
        let sql = format!("CREATE SCHEMA {schema}");
        let admin = base.clone();
        on_own_runtime(move || {
            Box::pin(async move {
                client(&admin)
                    .await
                    .batch_execute(&sql)
                    .await
                    .expect("create schema");
            })
        });
        let url = with_param(&base, &format!("options=-csearch_path%3D{schema}"));
        Self { schema, url }
    }

    /// A client whose `search_path` is the schema.
    async fn client(&self) -> Client {
        client(&self.url).await
    }

    fn open(&self, options: LedgerOptions) -> PgLedger {
        PgLedger::open(&self.url, options).expect("open the ledger")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let base = database_url();
        on_own_runtime(move || {
            Box::pin(async move {
                if let Err(e) = client(&base).await.batch_execute(&sql).await {
                    eprintln!("dropping the test schema: {e}");
                }
            })
        });
    }
}

fn options() -> LedgerOptions {
    LedgerOptions {
        // Only flushes and full batches write: the tests decide when.
        flush_interval: Duration::from_secs(3600),
        ..LedgerOptions::default()
    }
}

fn rec(ts_ms: u64, key: Option<&str>, model: Option<&str>, cost: u64) -> SpendRecord {
    SpendRecord {
        ts_ms,
        request_id: format!("req-{ts_ms}-{cost}"),
        key_id: key.map(|k| format!("key_{k}")),
        key_name: key.map(str::to_string),
        endpoint: "chat".into(),
        route: None,
        model: model.map(str::to_string),
        provider: model.map(|m| format!("prov-{m}")),
        status: 200,
        prompt_tokens: 10 + cost % 7,
        completion_tokens: 5 + cost % 3,
        cached_tokens: cost % 2,
        cache_write_tokens: cost % 5,
        reasoning_tokens: cost % 4,
        cost_nano_usd: cost,
        latency_ms: 100 + cost % 50,
        ttft_ms: Some(20),
        cache: "miss".into(),
        attempts: 1,
        stream: false,
        usage_estimated: false,
        batch_id: None,
        guardrails: (cost % 3 == 0).then(|| "pii:email:redact=1".into()),
    }
}

async fn count(db: &Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.expect(sql).get(0)
}

#[tokio::test]
async fn records_are_batched_and_flushed() {
    let t = TestDb::new();
    let ledger = t.open(LedgerOptions {
        batch_size: 128,
        ..options()
    });
    let now = unix_now_ms();
    let mut expected_cost = 0;
    let mut expected_prompt = 0;
    for i in 0..1000u64 {
        let mut r = rec(
            now + i,
            Some(["a", "b", "c"][i as usize % 3]),
            Some("m"),
            i * 1000,
        );
        r.stream = i % 2 == 0;
        r.ttft_ms = (i % 3 == 0).then_some(i);
        r.batch_id = (i % 4 == 0).then(|| "batch_x".to_string());
        expected_cost += r.cost_nano_usd;
        expected_prompt += r.prompt_tokens;
        ledger.record(r);
    }
    ledger.flush().await;
    assert_eq!(ledger.written(), 1000);
    assert_eq!(ledger.queued(), 0);
    assert_eq!((ledger.errors(), ledger.dropped()), (0, 0));
    let db = t.client().await;
    let row = db
        .query_one(
            "SELECT count(*), sum(cost_nano_usd)::BIGINT, sum(prompt_tokens)::BIGINT,
                    count(*) FILTER (WHERE stream), count(ttft_ms)
             FROM spend_log",
            &[],
        )
        .await
        .expect("sums");
    assert_eq!(row.get::<_, i64>(0), 1000);
    assert_eq!(row.get::<_, i64>(1), expected_cost as i64);
    assert_eq!(row.get::<_, i64>(2), expected_prompt as i64);
    assert_eq!(row.get::<_, i64>(3), 500);
    assert_eq!(row.get::<_, i64>(4), 334);
    let batch = "SELECT count(*) FROM spend_log WHERE batch_id = 'batch_x'";
    assert_eq!(count(&db, batch).await, 250);
    // Every field survives the trip.
    let first = db
        .query_one(
            "SELECT ts_ms, request_id, key_id, key_name, endpoint, route, model, provider,
                    status, cache, attempts, stream, usage_estimated, ttft_ms
             FROM spend_log ORDER BY ts_ms LIMIT 1",
            &[],
        )
        .await
        .expect("first");
    assert_eq!(first.get::<_, i64>(0), now as i64);
    assert_eq!(
        first.get::<_, String>(1),
        "req-".to_string() + &now.to_string() + "-0"
    );
    assert_eq!(first.get::<_, Option<String>>(2).as_deref(), Some("key_a"));
    assert_eq!(first.get::<_, Option<String>>(3).as_deref(), Some("a"));
    assert_eq!(first.get::<_, String>(4), "chat");
    assert_eq!(first.get::<_, Option<String>>(5), None);
    assert_eq!(first.get::<_, Option<String>>(6).as_deref(), Some("m"));
    assert_eq!(first.get::<_, Option<String>>(7).as_deref(), Some("prov-m"));
    assert_eq!(first.get::<_, i32>(8), 200);
    assert_eq!(first.get::<_, String>(9), "miss");
    assert_eq!(first.get::<_, i32>(10), 1);
    assert!(first.get::<_, bool>(11));
    assert!(!first.get::<_, bool>(12));
    assert_eq!(first.get::<_, Option<i64>>(13), Some(0));
    // A later record waits for its batch (the interval is an hour), then a flush writes it.
    ledger.record(rec(now, None, None, 1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ledger.queued(), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM spend_log").await, 1000);
    ledger.flush().await;
    assert_eq!(count(&db, "SELECT count(*) FROM spend_log").await, 1001);
    assert_eq!((ledger.written(), ledger.queued()), (1001, 0));
}

#[tokio::test]
async fn a_full_batch_or_the_interval_writes_without_a_flush() {
    let t = TestDb::new();
    let ledger = t.open(LedgerOptions {
        batch_size: 10,
        flush_interval: Duration::from_millis(200),
        ..LedgerOptions::default()
    });
    let now = unix_now_ms();
    for i in 0..10 {
        ledger.record(rec(now, Some("a"), Some("m"), i));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while ledger.written() < 10 {
        assert!(Instant::now() < deadline, "a full batch is written at once");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ledger.record(rec(now, Some("a"), Some("m"), 1));
    let started = Instant::now();
    while ledger.written() < 11 {
        assert!(
            Instant::now() < deadline,
            "the interval writes a lone record"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn rollups_and_budget_windows_agree_with_the_log() {
    let t = TestDb::new();
    let ledger = t.open(LedgerOptions {
        batch_size: 37,
        retention_days: 0,
        ..options()
    });
    // Four days across a month boundary, two keys, no key, two models, statuses.
    let base = 20_786 * DAY_MS; // 2026-11-29
    let mut records = Vec::new();
    for i in 0..400u64 {
        let ts = base + (i % 4) * DAY_MS + i * 1000;
        let key = [Some("a"), Some("b"), None][i as usize % 3];
        let mut r = rec(ts, key, Some(["m1", "m2"][i as usize % 2]), 1_000 + i * 17);
        r.status = if i % 10 == 0 { 502 } else { 200 };
        r.route = (i % 5 == 0).then(|| "fast".to_string());
        records.push(r.clone());
        ledger.record(r);
    }
    ledger.flush().await;
    assert_eq!(ledger.written(), 400);
    let db = t.client().await;
    // The roll-ups are the raw log grouped by day.
    let from_log = db
        .query(
            "SELECT ts_ms / 86400000 AS day, COALESCE(key_id, ''), COALESCE(key_name, ''),
                    COALESCE(model, ''), COALESCE(provider, ''), COALESCE(route, ''),
                    count(*), count(*) FILTER (WHERE status >= 400),
                    sum(prompt_tokens)::BIGINT, sum(completion_tokens)::BIGINT,
                    sum(cached_tokens)::BIGINT, sum(cache_write_tokens)::BIGINT,
                    sum(reasoning_tokens)::BIGINT, sum(cost_nano_usd)::BIGINT,
                    sum(latency_ms)::BIGINT
             FROM spend_log GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6",
            &[],
        )
        .await
        .expect("log");
    let rollups = db
        .query(
            "SELECT day, key_id, key_name, model, provider, route, requests, errors,
                    prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,
                    reasoning_tokens, cost_nano_usd, latency_ms_sum
             FROM spend_daily ORDER BY 1, 2, 3, 4, 5, 6",
            &[],
        )
        .await
        .expect("rollups");
    assert!(rollups.len() > 10);
    assert_eq!(from_log.len(), rollups.len());
    for (a, b) in from_log.iter().zip(&rollups) {
        assert_eq!(a.get::<_, i64>(0), b.get::<_, i64>(0));
        for c in 1..6 {
            assert_eq!(a.get::<_, String>(c), b.get::<_, String>(c));
        }
        for c in 6..15 {
            assert_eq!(a.get::<_, i64>(c), b.get::<_, i64>(c), "column {c}");
        }
    }
    // The budget windows are each key's spend per day, per month and in total.
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &records {
        let Some(key) = &r.key_id else { continue };
        for p in [BudgetPeriod::Total, BudgetPeriod::Day, BudgetPeriod::Month] {
            *expected
                .entry((key.clone(), p.window(r.ts_ms).0))
                .or_default() += r.cost_nano_usd;
        }
    }
    assert_eq!(expected.len(), 2 * (1 + 4 + 2));
    let stored: BTreeMap<(String, String), u64> = db
        .query(
            r#"SELECT key_id, "window", cost_nano_usd FROM budget_spend"#,
            &[],
        )
        .await
        .expect("windows")
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get::<_, i64>(2) as u64))
        .collect();
    assert_eq!(stored, expected);
    for ((key, window), cost) in &expected {
        assert_eq!(
            ledger.window_spend(key, window).await.expect("spend"),
            *cost
        );
    }
    assert!(expected.contains_key(&("key_a".to_string(), "m:2026-11".to_string())));
    assert!(expected.contains_key(&("key_a".to_string(), "d:2026-12-02".to_string())));
    assert_eq!(
        ledger
            .window_spend("key_a", "d:2025-01-01")
            .await
            .expect("none"),
        0
    );
    assert_eq!(
        ledger.window_spend("nobody", "total").await.expect("none"),
        0
    );
    // A second batch adds to the same rows.
    let total_a = expected[&("key_a".to_string(), "total".to_string())];
    ledger.record(rec(base, Some("a"), Some("m1"), 5));
    ledger.flush().await;
    assert_eq!(
        ledger.window_spend("key_a", "total").await.expect("spend"),
        total_a + 5
    );
}

fn row(group: &str, requests: u64, errors: u64, cost: u64) -> (String, u64, u64, u64) {
    (group.to_string(), requests, errors, cost)
}

fn summary(report: &Report) -> Vec<(String, u64, u64, u64)> {
    report
        .rows
        .iter()
        .map(|r| (r.group.clone(), r.requests, r.errors, r.cost_nano_usd))
        .collect()
}

#[tokio::test]
async fn reports_group_by_each_dimension() {
    let t = TestDb::new();
    let ledger = t.open(options());
    let now = unix_now_ms();
    let mut records = vec![
        rec(now - 1000, Some("alice"), Some("gpt"), 300),
        rec(now - 900, Some("alice"), Some("claude"), 200),
        rec(now - 800, Some("bob"), Some("gpt"), 500),
        rec(now - 700, None, Some("gpt"), 100),
        rec(now - 600, None, None, 0),
        // Before the report's period.
        rec(now - 10 * 60_000, Some("carol"), Some("gpt"), 10_000),
    ];
    records[0].route = Some("fast".into());
    records[1].route = Some("fast".into());
    records[2].route = Some("".into());
    records[3].status = 429;
    records[4].status = 500;
    records[4].route = Some("smart".into());
    for r in records.clone() {
        ledger.record(r);
    }
    ledger.flush().await;
    let since = now - 60_000;
    let by_key = ledger
        .report(Dimension::Key, since, now)
        .await
        .expect("key");
    assert!(!by_key.from_rollups);
    assert_eq!(
        summary(&by_key),
        [
            row("alice", 2, 0, 500),
            row("bob", 1, 0, 500),
            row("-", 2, 2, 100)
        ]
    );
    let alice = &by_key.rows[0];
    let expected = ReportRow {
        group: "alice".into(),
        requests: 2,
        errors: 0,
        prompt_tokens: records[0].prompt_tokens + records[1].prompt_tokens,
        completion_tokens: records[0].completion_tokens + records[1].completion_tokens,
        cached_tokens: records[0].cached_tokens + records[1].cached_tokens,
        cache_write_tokens: records[0].cache_write_tokens + records[1].cache_write_tokens,
        reasoning_tokens: records[0].reasoning_tokens + records[1].reasoning_tokens,
        cost_nano_usd: 500,
    };
    assert_eq!(alice, &expected);
    let by_model = ledger
        .report(Dimension::Model, since, now)
        .await
        .expect("model");
    assert_eq!(
        summary(&by_model),
        [
            row("gpt", 3, 1, 900),
            row("claude", 1, 0, 200),
            row("-", 1, 1, 0)
        ]
    );
    let by_provider = ledger
        .report(Dimension::Provider, since, now)
        .await
        .expect("provider");
    assert_eq!(
        summary(&by_provider),
        [
            row("prov-gpt", 3, 1, 900),
            row("prov-claude", 1, 0, 200),
            row("-", 1, 1, 0)
        ]
    );
    // '' and NULL are both "none"; equal costs order by group (bytewise).
    let by_route = ledger
        .report(Dimension::Route, since, now)
        .await
        .expect("route");
    assert_eq!(
        summary(&by_route),
        [
            row("-", 2, 1, 600),
            row("fast", 2, 0, 500),
            row("smart", 1, 1, 0)
        ]
    );
    // The whole period (still inside the raw log's retention).
    let all = ledger
        .report(Dimension::Key, now - DAY_MS, now)
        .await
        .expect("all");
    assert_eq!(
        all.rows[0],
        ReportRow {
            group: "carol".into(),
            requests: 1,
            ..all.rows[0].clone()
        }
    );
    assert_eq!(all.rows.len(), 4);
    // Nothing in the period: no rows.
    let empty = ledger
        .report(Dimension::Key, now + 1, now)
        .await
        .expect("empty");
    assert_eq!(empty, Report::default());
}

#[tokio::test]
async fn reports_fall_back_to_rollups_past_retention() {
    let t = TestDb::new();
    let ledger = t.open(LedgerOptions {
        retention_days: 30,
        ..options()
    });
    let now = unix_now_ms();
    let old = now - 40 * DAY_MS;
    ledger.record(rec(old, Some("alice"), Some("gpt"), 700));
    let mut failed = rec(old + 1, Some("bob"), Some("gpt"), 50);
    failed.status = 503;
    ledger.record(failed);
    ledger.record(rec(now - 1000, Some("alice"), Some("gpt"), 300));
    ledger.flush().await;
    // Inside retention: the raw log, from `since` exactly.
    let recent = ledger
        .report(Dimension::Key, now - 2 * DAY_MS, now)
        .await
        .expect("recent");
    assert!(!recent.from_rollups);
    assert_eq!(summary(&recent), [row("alice", 1, 0, 300)]);
    // Past retention: the roll-ups, from the day of `since`.
    let long = ledger
        .report(Dimension::Key, now - 45 * DAY_MS, now)
        .await
        .expect("long");
    assert!(long.from_rollups);
    assert_eq!(
        summary(&long),
        [row("alice", 2, 0, 1000), row("bob", 1, 1, 50)]
    );
    let by_model = ledger
        .report(Dimension::Model, now - 45 * DAY_MS, now)
        .await
        .expect("model");
    assert_eq!(summary(&by_model), [row("gpt", 3, 1, 1050)]);
    assert_eq!(
        by_model.rows[0].prompt_tokens,
        long.rows.iter().map(|r| r.prompt_tokens).sum::<u64>()
    );
    // Once the raw rows are purged, the roll-ups still answer.
    let purged = ledger.purge(now).await.expect("purge");
    assert_eq!(purged.records, 2);
    let after = ledger
        .report(Dimension::Key, now - 45 * DAY_MS, now)
        .await
        .expect("after");
    assert_eq!(after, long);
    // retention_days = 0 keeps the raw log forever: a period that is not whole UTC days
    // is read to the millisecond, its partial first day from the raw log and its whole
    // days from the roll-ups, which outlive the purge (so they still count its records).
    drop(ledger);
    let forever = t.open(LedgerOptions {
        retention_days: 0,
        ..options()
    });
    let exact = forever
        .report(Dimension::Key, 1, now)
        .await
        .expect("forever");
    assert!(!exact.from_rollups);
    assert_eq!(summary(&exact), summary(&long));
    // Within a day past the purge: the raw log alone, which no longer has them.
    let raw = forever
        .report_between(Dimension::Key, old - 5, old + 5, now)
        .await
        .expect("raw");
    assert!(raw.rows.is_empty());
}

#[tokio::test]
async fn purge_applies_retention() {
    let t = TestDb::new();
    let ledger = t.open(LedgerOptions {
        retention_days: 30,
        rollup_retention_days: 0,
        ..options()
    });
    let now = unix_now_ms();
    let stamps = [now - 60 * DAY_MS, now - 40 * DAY_MS, now - 10 * DAY_MS, now];
    for &ts in &stamps {
        ledger.record(rec(ts, Some("a"), Some("m"), 10));
    }
    ledger.flush().await;
    let db = t.client().await;
    let windows_before = count(&db, "SELECT count(*) FROM budget_spend").await;
    let purged = ledger.purge(now).await.expect("purge");
    // Raw: the two older than 30 days. Roll-ups: none (kept forever). Windows: every day
    // window before today and every month window before this month; never `total`.
    let (this_month, _) = BudgetPeriod::Month.window(now);
    let old_months: std::collections::BTreeSet<String> = stamps
        .iter()
        .map(|&ts| BudgetPeriod::Month.window(ts).0)
        .filter(|m| *m < this_month)
        .collect();
    assert_eq!(
        purged,
        Purged {
            records: 2,
            rollups: 0,
            windows: 3 + old_months.len() as u64,
        }
    );
    assert_eq!(count(&db, "SELECT count(*) FROM spend_log").await, 2);
    assert_eq!(count(&db, "SELECT count(*) FROM spend_daily").await, 4);
    let left: Vec<String> = db
        .query(r#"SELECT "window" FROM budget_spend ORDER BY 1"#, &[])
        .await
        .expect("windows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut expected = vec![
        BudgetPeriod::Day.window(now).0,
        this_month.clone(),
        "total".to_string(),
    ];
    expected.sort();
    assert_eq!(left, expected);
    assert_eq!(
        windows_before as usize,
        left.len() + purged.windows as usize
    );
    assert_eq!(
        ledger.window_spend("key_a", "total").await.expect("total"),
        40
    );
    // Purging again removes nothing.
    assert_eq!(ledger.purge(now).await.expect("again"), Purged::default());
    drop(ledger);

    // Roll-ups past their own retention go too; retention 0 keeps raw rows.
    let ledger = t.open(LedgerOptions {
        retention_days: 0,
        rollup_retention_days: 20,
        ..options()
    });
    ledger.record(rec(now - 100 * DAY_MS, None, None, 1));
    ledger.flush().await;
    // The purge at open already took the roll-ups of 60 and 40 days ago.
    assert_eq!(count(&db, "SELECT count(*) FROM spend_daily").await, 3);
    let purged = ledger.purge(now).await.expect("purge");
    assert_eq!((purged.records, purged.rollups), (0, 1));
    assert_eq!(count(&db, "SELECT count(*) FROM spend_log").await, 3);
    assert_eq!(count(&db, "SELECT count(*) FROM spend_daily").await, 2);
}

#[tokio::test]
async fn the_writer_purges_at_open() {
    let t = TestDb::new();
    let now = unix_now_ms();
    let ledger = t.open(LedgerOptions {
        retention_days: 0,
        ..options()
    });
    ledger.record(rec(now - 40 * DAY_MS, Some("a"), None, 1));
    ledger.record(rec(now, Some("a"), None, 1));
    ledger.flush().await;
    drop(ledger);
    let _ledger = t.open(LedgerOptions {
        retention_days: 30,
        ..options()
    });
    // Right after `open` returns, on the writer thread.
    let db = t.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&db, "SELECT count(*) FROM spend_log").await != 1 {
        assert!(Instant::now() < deadline, "not purged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn full_key(n: u32) -> KeyRecord {
    KeyRecord {
        id: format!("key_{n:016x}"),
        name: format!("team-{n}"),
        hash: format!("{:064x}", u64::from(n) * 7919),
        hint: format!("sk-sl…{n:04}"),
        models: vec!["gpt-4o".into(), "route:fast".into(), "quo\"te".into()],
        rpm: Some(60),
        tpm: Some(2_000_000),
        max_concurrent: Some(4),
        budget_nano_usd: Some(5_000_000_000),
        budget_period: BudgetPeriod::Month,
        metadata: r#"{"team":"ml","n":1}"#.into(),
        created_ms: 1_700_000_000_000 + u64::from(n),
        expires_ms: Some(1_800_000_000_000),
        revoked_ms: None,
        guardrails: vec!["pii".into(), "secrets".into()],
    }
}

#[tokio::test]
async fn keys_round_trip() {
    let t = TestDb::new();
    let ledger = t.open(options());
    assert_eq!(ledger.keys().await.expect("none"), []);
    assert_eq!(ledger.key("key_nope").await.expect("none"), None);
    assert_eq!(ledger.key_by_hash("00").await.expect("none"), None);

    let full = full_key(1);
    let bare = KeyRecord {
        id: "key_0000000000000002".into(),
        name: "bare".into(),
        hash: "ab".repeat(32),
        hint: "sk-sl…beef".into(),
        models: vec![],
        rpm: None,
        tpm: None,
        max_concurrent: None,
        budget_nano_usd: None,
        budget_period: BudgetPeriod::Total,
        metadata: "{}".into(),
        created_ms: 1_600_000_000_000,
        expires_ms: None,
        revoked_ms: None,
        guardrails: vec![],
    };
    ledger.save_key(&full).await.expect("save full");
    ledger.save_key(&bare).await.expect("save bare");
    assert_eq!(
        ledger.key_by_hash(&full.hash).await.expect("by hash"),
        Some(full.clone())
    );
    assert_eq!(
        ledger.key_by_hash(&bare.hash).await.expect("by hash"),
        Some(bare.clone())
    );
    assert_eq!(
        ledger.key(&full.id).await.expect("by id"),
        Some(full.clone())
    );
    assert_eq!(
        ledger.key("bare").await.expect("by name"),
        Some(bare.clone())
    );
    // Oldest first.
    assert_eq!(
        ledger.keys().await.expect("list"),
        [bare.clone(), full.clone()]
    );

    // By name: the newest key of that name; an id match wins over a name match.
    let mut newer = full_key(3);
    newer.name = full.name.clone();
    newer.budget_period = BudgetPeriod::Day;
    ledger.save_key(&newer).await.expect("save newer");
    assert_eq!(
        ledger.key(&full.name).await.expect("by name"),
        Some(newer.clone())
    );
    let mut named_like_an_id = full_key(4);
    named_like_an_id.name = bare.id.clone();
    named_like_an_id.created_ms = u64::MAX / 4;
    ledger.save_key(&named_like_an_id).await.expect("save");
    assert_eq!(
        ledger.key(&bare.id).await.expect("by id"),
        Some(bare.clone())
    );

    // Update in place (same id): every field replaced, Some to None and back.
    let mut updated = full.clone();
    updated.name = "renamed".into();
    updated.hash = "cd".repeat(32);
    updated.models = vec!["only-this".into()];
    updated.rpm = None;
    updated.tpm = Some(1);
    updated.max_concurrent = None;
    updated.budget_nano_usd = None;
    updated.budget_period = BudgetPeriod::Total;
    updated.metadata = r#"{"x":[1,2]}"#.into();
    updated.expires_ms = None;
    ledger.save_key(&updated).await.expect("update");
    assert_eq!(
        ledger.key(&full.id).await.expect("by id"),
        Some(updated.clone())
    );
    assert_eq!(
        ledger.key_by_hash(&full.hash).await.expect("old hash"),
        None
    );
    assert_eq!(
        ledger.key_by_hash(&updated.hash).await.expect("new hash"),
        Some(updated.clone())
    );
    assert_eq!(ledger.keys().await.expect("list").len(), 4);

    // Revoke: still listed and found, with the time it was revoked.
    let mut revoked = updated.clone();
    revoked.revoked_ms = Some(1_750_000_000_000);
    ledger.save_key(&revoked).await.expect("revoke");
    assert_eq!(
        ledger.key_by_hash(&revoked.hash).await.expect("hash"),
        Some(revoked.clone())
    );
    let listed = ledger.keys().await.expect("list");
    assert_eq!(
        listed,
        [bare.clone(), revoked.clone(), newer, named_like_an_id]
    );

    // Another key with a hash already taken is refused.
    let mut clash = full_key(9);
    clash.hash = bare.hash.clone();
    let err = ledger.save_key(&clash).await.expect_err("duplicate hash");
    assert_eq!(err.kind(), "postgres");
    assert!(err.to_string().contains("duplicate key"), "{err}");

    // An empty metadata is stored as an empty JSON object.
    let mut no_meta = full_key(10);
    no_meta.metadata = String::new();
    ledger.save_key(&no_meta).await.expect("save");
    let got = ledger.key(&no_meta.id).await.expect("get").expect("some");
    assert_eq!(got.metadata, "{}");
    // The stored JSON columns are what the schema says.
    let db = t.client().await;
    let r = db
        .query_one(
            "SELECT models, metadata, budget_period FROM keys WHERE id = $1",
            &[&full.id],
        )
        .await
        .expect("row");
    assert_eq!(r.get::<_, String>(0), r#"["only-this"]"#);
    assert_eq!(r.get::<_, String>(1), r#"{"x":[1,2]}"#);
    assert_eq!(r.get::<_, String>(2), "total");
}

#[tokio::test]
async fn the_secret_is_never_stored() {
    let t = TestDb::new();
    let ledger = t.open(options());
    let secret = format!("sk-sluice-{}", common::unique("secret").replace('-', ""));
    let hash = blake3::hash(secret.as_bytes()).to_hex().to_string();
    let key = KeyRecord {
        id: "key_00000000000000aa".into(),
        name: "secretive".into(),
        hash: hash.clone(),
        hint: format!("{}…{}", &secret[..6], &secret[secret.len() - 4..]),
        models: vec![],
        metadata: r#"{"owner":"x"}"#.into(),
        created_ms: unix_now_ms(),
        ..KeyRecord::default()
    };
    ledger.save_key(&key).await.expect("save");
    let mut r = rec(unix_now_ms(), Some("secretive"), Some("m"), 5);
    r.key_id = Some(key.id.clone());
    ledger.record(r);
    ledger.flush().await;
    assert_eq!(ledger.key_by_hash(&hash).await.expect("by hash"), Some(key));
    let db = t.client().await;
    let tables: Vec<String> = db
        .query(
            "SELECT table_name::TEXT FROM information_schema.tables
             WHERE table_schema = current_schema() ORDER BY 1",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "budget_spend",
            "keys",
            "sluice_schema",
            "spend_daily",
            "spend_log"
        ]
    );
    let mut rows = 0;
    for table in &tables {
        rows += count(&db, &format!("SELECT count(*) FROM {table}")).await;
        let sql = format!("SELECT count(*) FROM {table} t WHERE strpos(t::TEXT, $1) > 0");
        let hits: i64 = db.query_one(&sql, &[&secret]).await.expect("scan").get(0);
        assert_eq!(hits, 0, "{table} holds the secret");
        let with_hash: i64 = db.query_one(&sql, &[&hash]).await.expect("scan").get(0);
        assert_eq!(with_hash, i64::from(table == "keys"), "{table}");
    }
    assert!(rows >= 5);
}

#[test]
fn flush_covers_records_from_several_runtimes() {
    let t = TestDb::new();
    // Opened outside any runtime.
    let ledger = t.open(LedgerOptions {
        batch_size: 64,
        ..options()
    });
    let now = unix_now_ms();
    let threads: Vec<_> = (0..4u64)
        .map(|n| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    for i in 0..250 {
                        ledger.record(rec(now, Some(&format!("t{n}")), Some("m"), i + 1));
                        if i % 50 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    // Each runtime's flush covers its own records.
                    ledger.flush().await;
                    let spent = ledger
                        .window_spend(&format!("key_t{n}"), "total")
                        .await
                        .expect("spend");
                    assert_eq!(spent, (1..=250).sum::<u64>());
                });
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(ledger.written(), 1000);
    assert_eq!(
        (ledger.queued(), ledger.errors(), ledger.dropped()),
        (0, 0, 0)
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt
        .block_on(ledger.report(Dimension::Key, now - 1, now))
        .expect("report");
    assert_eq!(report.rows.len(), 4);
    assert!(report.rows.iter().all(|r| r.requests == 250));
}

#[test]
fn a_closed_port_fails_open_outside_a_runtime() {
    let url = format!("postgres://postgres@127.0.0.1:{}/test", free_port());
    let started = Instant::now();
    let err = PgLedger::open(&url, options()).expect_err("nothing listens");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), "postgres");
    assert!(err.to_string().contains("connect"), "{err}");
}

#[tokio::test]
async fn a_closed_port_fails_open_inside_a_runtime() {
    let url = format!("postgres://postgres@127.0.0.1:{}/test", free_port());
    let started = Instant::now();
    let err = PgLedger::open(&url, options()).expect_err("nothing listens");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.kind(), "postgres", "{err}");
    // A bad URL fails as clearly.
    let err = PgLedger::open("postgres://[nope", options()).expect_err("bad url");
    assert_eq!(err.kind(), "postgres", "{err}");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let t = TestDb::new();
    drop(t.open(options()));
    let db = t.client().await;
    assert_eq!(
        count(&db, "SELECT max(version)::BIGINT FROM sluice_schema").await,
        5
    );
    // Opening again keeps the one version row.
    drop(t.open(options()));
    assert_eq!(count(&db, "SELECT count(*) FROM sluice_schema").await, 1);
    db.batch_execute("UPDATE sluice_schema SET version = 6")
        .await
        .expect("bump");
    let err = PgLedger::open(&t.url, options()).expect_err("newer schema");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn the_queue_is_bounded() {
    let t = TestDb::new();
    let ledger = t.open(LedgerOptions {
        max_queued: 10,
        batch_size: 100,
        ..options()
    });
    for i in 0..25 {
        ledger.record(rec(unix_now_ms(), None, None, i));
    }
    assert_eq!((ledger.queued(), ledger.dropped()), (10, 15));
    ledger.flush().await;
    assert_eq!(
        (ledger.queued(), ledger.written(), ledger.dropped()),
        (0, 10, 15)
    );
    ledger.record(rec(unix_now_ms(), None, None, 1));
    ledger.flush().await;
    assert_eq!((ledger.written(), ledger.dropped()), (11, 15));
}

#[tokio::test]
async fn dropping_the_ledger_writes_what_is_queued() {
    let t = TestDb::new();
    let ledger = t.open(options());
    for i in 0..300 {
        ledger.record(rec(unix_now_ms(), Some("a"), None, i));
    }
    let clone = ledger.clone();
    drop(ledger);
    assert_eq!(clone.queued(), 300, "a clone keeps the writer");
    drop(clone);
    let db = t.client().await;
    assert_eq!(count(&db, "SELECT count(*) FROM spend_log").await, 300);
}

#[tokio::test]
async fn the_writer_reconnects_after_its_connection_is_killed() {
    let t = TestDb::new();
    let app = format!("sluice-test-{}", t.schema);
    let url = with_param(&t.url, &format!("application_name={app}"));
    let ledger = PgLedger::open(&url, options()).expect("open");
    ledger.record(rec(unix_now_ms(), Some("a"), None, 1));
    ledger.flush().await;
    let db = t.client().await;
    let killed = count(
        &db,
        &format!(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = '{app}') k"
        ),
    )
    .await;
    assert_eq!(killed, 1);
    // The next batch (and query) finds the connection closed and makes a new one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..50 {
        ledger.record(rec(unix_now_ms(), Some("a"), None, i));
    }
    ledger.flush().await;
    assert_eq!((ledger.written(), ledger.errors()), (51, 0));
    assert_eq!(count(&db, "SELECT count(*) FROM spend_log").await, 51);
    assert!(ledger
        .keys()
        .await
        .expect("query after reconnect")
        .is_empty());
}

#[tokio::test]
async fn failed_batches_are_retried_then_counted() {
    let t = TestDb::new();
    let ledger = t.open(options());
    let db = t.client().await;
    db.batch_execute("ALTER TABLE spend_log RENAME TO spend_log_away")
        .await
        .expect("rename");
    for i in 0..20 {
        ledger.record(rec(unix_now_ms(), Some("a"), None, i));
    }
    let started = Instant::now();
    ledger.flush().await;
    // Six tries with backoff (0.2 + 0.4 + 0.8 + 1.6 + 3.2 s), then given up and counted.
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        (ledger.errors(), ledger.written(), ledger.queued()),
        (20, 0, 0)
    );
    // Nothing half-written: the roll-ups and windows were rolled back with the log.
    assert_eq!(count(&db, "SELECT count(*) FROM spend_daily").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM budget_spend").await, 0);
    // Queries keep working meanwhile (the connection is fine); once the table is back,
    // writes resume (after the writer's backoff).
    assert!(ledger.keys().await.expect("keys").is_empty());
    db.batch_execute("ALTER TABLE spend_log_away RENAME TO spend_log")
        .await
        .expect("rename back");
    ledger.record(rec(unix_now_ms(), Some("a"), None, 1));
    ledger.flush().await;
    assert_eq!((ledger.errors(), ledger.written()), (20, 1));
}

#[test]
fn day_numbers_match_the_window_names() {
    // The roll-up day of a timestamp and its day window name the same UTC date.
    let ts = 20_788 * DAY_MS + 3_600_000;
    let (y, m, d) = civil_from_days((ts / DAY_MS) as i64);
    assert_eq!(
        BudgetPeriod::Day.window(ts).0,
        format!("d:{y:04}-{m:02}-{d:02}")
    );
}

#[tokio::test]
async fn a_version_1_schema_gains_batch_id_and_guardrails() {
    let t = TestDb::new();
    let ledger = t.open(options());
    ledger.record(rec(unix_now_ms(), None, Some("m"), 1));
    ledger.flush().await;
    drop(ledger);
    let db = t.client().await;
    db.batch_execute(
        "DROP INDEX spend_log_batch_id; ALTER TABLE spend_log DROP COLUMN batch_id;
         ALTER TABLE spend_log DROP COLUMN guardrails; ALTER TABLE keys DROP COLUMN guardrails;
         UPDATE sluice_schema SET version = 1;",
    )
    .await
    .expect("back to version 1");
    let ledger = t.open(options());
    let mut r = rec(unix_now_ms() + 1, None, Some("m"), 2);
    r.batch_id = Some("batch_y".into());
    r.guardrails = Some("pii:card:redact=1".into());
    ledger.record(r);
    ledger.flush().await;
    let version = "SELECT max(version)::BIGINT FROM sluice_schema";
    assert_eq!(count(&db, version).await, 5);
    let mut k = full_key(9);
    k.guardrails = vec!["pii".into()];
    ledger.save_key(&k).await.expect("a key with guardrails");
    assert_eq!(ledger.key(&k.id).await.expect("read"), Some(k));
    let with = "SELECT count(*) FROM spend_log WHERE batch_id = 'batch_y'";
    assert_eq!(count(&db, with).await, 1);
    let records = ledger.export(0).await.expect("export");
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].batch_id.as_deref(), Some("batch_y"));
    assert_eq!(records[1].guardrails.as_deref(), Some("pii:card:redact=1"));
}

/// A batch line's record: its request id is the line's, the same each time it runs.
fn line_rec(line: u64, ts_ms: u64) -> SpendRecord {
    SpendRecord {
        request_id: format!("batch_req_x_{line}"),
        batch_id: Some("batch_x".into()),
        ..rec(ts_ms, Some("a"), Some("m"), 1_000)
    }
}

#[tokio::test]
async fn a_batch_line_recorded_twice_is_one_record_charged_once() {
    let t = TestDb::new();
    let ledger = t.open(options());
    let now = unix_now_ms();
    // Twice in one write (beside a record of no batch), then in a later write, then after
    // a restart.
    ledger.record(line_rec(1, now));
    ledger.record(line_rec(1, now + 1));
    ledger.record(rec(now + 2, Some("a"), Some("m"), 7));
    ledger.record(line_rec(2, now + 3));
    ledger.flush().await;
    ledger.record(line_rec(2, now + 4));
    // The same request id outside a batch is another request's record: kept.
    ledger.record(SpendRecord {
        batch_id: None,
        ..line_rec(2, now + 5)
    });
    ledger.flush().await;
    drop(ledger);
    let ledger = t.open(options());
    ledger.record(line_rec(1, now + 6));
    ledger.flush().await;
    assert_eq!(ledger.errors(), 0);
    let records = ledger.export(0).await.expect("export");
    let ids: Vec<(&str, Option<&str>)> = records
        .iter()
        .map(|r| (r.request_id.as_str(), r.batch_id.as_deref()))
        .collect();
    assert_eq!(
        ids,
        [
            ("batch_req_x_1", Some("batch_x")),
            (records[1].request_id.as_str(), None),
            ("batch_req_x_2", Some("batch_x")),
            ("batch_req_x_2", None),
        ]
    );
    // The roll-ups and the budget windows count each line once.
    let db = t.client().await;
    let daily = "SELECT sum(requests)::BIGINT FROM spend_daily";
    assert_eq!(count(&db, daily).await, 4);
    let cost = "SELECT sum(cost_nano_usd)::BIGINT FROM spend_daily";
    assert_eq!(count(&db, cost).await, 3_007);
    let (window, _) = BudgetPeriod::Total.window(now);
    assert_eq!(
        ledger.window_spend("key_a", &window).await.expect("window"),
        3_007
    );
}

#[tokio::test]
async fn a_version_4_schema_with_a_line_charged_twice_gains_the_unique_index() {
    let t = TestDb::new();
    let ledger = t.open(options());
    let now = unix_now_ms();
    ledger.record(line_rec(1, now));
    ledger.flush().await;
    drop(ledger);
    // Version 4, as an older sluice left it: the line's record written twice.
    let db = t.client().await;
    db.batch_execute(
        "DROP INDEX spend_log_batch_line;
         INSERT INTO spend_log (ts_ms, request_id, key_id, key_name, endpoint, route, model,
             provider, status, prompt_tokens, completion_tokens, cached_tokens,
             cache_write_tokens, reasoning_tokens, cost_nano_usd, latency_ms, ttft_ms, cache,
             attempts, stream, usage_estimated, batch_id, guardrails)
         SELECT ts_ms, request_id, key_id, key_name, endpoint, route, model, provider, status,
             prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,
             reasoning_tokens, cost_nano_usd, latency_ms, ttft_ms, cache, attempts, stream,
             usage_estimated, batch_id, guardrails FROM spend_log;
         UPDATE sluice_schema SET version = 4;",
    )
    .await
    .expect("back to version 4");
    let ledger = t.open(options());
    // The earlier duplicate is kept (it was charged), renamed; the line is not charged again.
    ledger.record(line_rec(1, now + 1));
    ledger.flush().await;
    assert_eq!(ledger.errors(), 0);
    let ids: Vec<String> = ledger
        .export(0)
        .await
        .expect("export")
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], "batch_req_x_1");
    assert!(ids[1].starts_with("batch_req_x_1#"), "{ids:?}");
}

#[tokio::test]
async fn a_report_by_day_reads_the_rollups_oldest_first() {
    let t = TestDb::new();
    // Retention 0 keeps the raw log forever: by day still reads the roll-ups.
    let ledger = t.open(LedgerOptions {
        retention_days: 0,
        ..options()
    });
    // 2026-11-30T23:59:59.999Z, then two on 2026-12-01 and one on 2026-12-03.
    let nov30 = 1_796_083_199_999;
    for (ts, cost) in [
        (nov30 + 1, 20),
        (nov30 + 2 * DAY_MS + 1, 40),
        (nov30, 10),
        (nov30 + 3_600_000, 30),
    ] {
        ledger.record(rec(ts, Some("alice"), Some("gpt"), cost));
    }
    ledger.flush().await;
    let now = nov30 + 3 * DAY_MS;
    let by_day = ledger
        .report(Dimension::Day, nov30 - DAY_MS, now)
        .await
        .expect("by day");
    assert!(by_day.from_rollups);
    assert_eq!(
        summary(&by_day),
        [
            row("2026-11-30", 1, 0, 10),
            row("2026-12-01", 2, 0, 50),
            row("2026-12-03", 1, 0, 40)
        ]
    );
    // From the day of `since`: 2026-12-01 and after.
    let later = ledger
        .report(Dimension::Day, nov30 + 2, now)
        .await
        .expect("later");
    assert_eq!(later.rows.len(), 2);
    // A range: roll-ups in whole days, up to the day holding `until`'s last millisecond.
    let two_days = ledger
        .report_between(Dimension::Day, nov30, nov30 + 1 + DAY_MS, now)
        .await
        .expect("range");
    let groups: Vec<&str> = two_days.rows.iter().map(|r| r.group.as_str()).collect();
    assert_eq!(groups, ["2026-11-30", "2026-12-01"]);
    // From the raw log, to the millisecond: the last one of 2026-11-30 and the first of
    // 2026-12-01.
    let raw = ledger
        .report_between(Dimension::Model, nov30, nov30 + 2, now)
        .await
        .expect("range");
    assert!(!raw.from_rollups);
    assert_eq!(raw.rows.iter().map(|r| r.requests).sum::<u64>(), 2);
}

#[tokio::test]
async fn the_request_log_pages_filters_and_bounds_its_search() {
    let db = TestDb::new();
    let ledger = sluice_store::Ledger::Postgres(db.open(options()));
    common::request_log::check(&ledger).await;
}

#[tokio::test]
async fn reports_from_partial_days_and_rollups_equal_the_raw_sums() {
    let db = TestDb::new();
    let ledger = sluice_store::Ledger::Postgres(db.open(options()));
    common::split_reports::check(&ledger).await;
}

#[tokio::test]
async fn a_version_4_ledger_of_many_batch_lines_migrates_on_little_work_mem() {
    let t = TestDb::new();
    let ledger = t.open(options());
    ledger.record(line_rec(0, unix_now_ms()));
    ledger.flush().await;
    drop(ledger);
    // Version 4 with 40,000 batch lines, each one record: the rename's lookup of each line's
    // first record must not scan a list of all of them per row (a NOT IN subplan does once it
    // outgrows work_mem: 800 million comparisons).
    let db = t.client().await;
    db.batch_execute(
        "DROP INDEX spend_log_batch_line;
         INSERT INTO spend_log (ts_ms, request_id, key_id, key_name, endpoint, route, model,
             provider, status, prompt_tokens, completion_tokens, cached_tokens,
             cache_write_tokens, reasoning_tokens, cost_nano_usd, latency_ms, ttft_ms, cache,
             attempts, stream, usage_estimated, batch_id, guardrails)
         SELECT ts_ms, 'batch_req_x_' || g, key_id, key_name, endpoint, route, model, provider,
             status, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,
             reasoning_tokens, cost_nano_usd, latency_ms, ttft_ms, cache, attempts, stream,
             usage_estimated, batch_id, guardrails
         FROM spend_log, generate_series(1, 40000) g;
         ANALYZE spend_log;
         UPDATE sluice_schema SET version = 4;",
    )
    .await
    .expect("back to version 4");
    // (How long it takes is not asserted here: 2 s with EXISTS, 44 s with NOT IN, on this
    // machine; timings belong in benchmarks.)
    let small = format!("{}%20-cwork_mem%3D64kB", t.url);
    let ledger = PgLedger::open(&small, options()).expect("migrate");
    assert_eq!(ledger.export(0).await.expect("export").len(), 40_001);
}
