//! The embedded ledger on a real SQLite file: batching, roll-ups and budget windows that
//! agree with the raw log, reports, retention, keys, restart persistence.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use sluice_store::ledger::{Purged, DAY_MS};
use sluice_store::sqlite_ledger::SqliteLedger;
use sluice_store::{BudgetPeriod, Dimension, KeyRecord, Ledger, LedgerOptions, SpendRecord};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-ledger-{name}-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn record(i: u64, ts_ms: u64) -> SpendRecord {
    let key = i % 3;
    SpendRecord {
        ts_ms,
        request_id: format!("req-{i}"),
        key_id: (key != 0).then(|| format!("key_{key}")),
        key_name: (key != 0).then(|| format!("team-{key}")),
        endpoint: "chat".into(),
        route: (i % 2 == 0).then(|| "auto".to_string()),
        model: Some(if i % 5 == 0 { "big" } else { "small" }.to_string()),
        provider: Some("openai".into()),
        status: if i % 10 == 0 { 502 } else { 200 },
        prompt_tokens: 100 + i,
        completion_tokens: 10,
        cached_tokens: 5,
        cache_write_tokens: 1,
        reasoning_tokens: 2,
        cost_nano_usd: 1_000 + i,
        latency_ms: 7,
        ttft_ms: Some(3),
        cache: "miss".into(),
        attempts: 1,
        stream: i % 2 == 1,
        usage_estimated: false,
        batch_id: (i % 4 == 0).then(|| format!("batch_{i}")),
        guardrails: (i % 3 == 0).then(|| "pii:email:redact=2,pii:card:block=1".into()),
    }
}

fn open(dir: &std::path::Path, options: LedgerOptions) -> Ledger {
    Ledger::Sqlite(SqliteLedger::open(&dir.join("ledger.sqlite"), options).unwrap())
}

#[tokio::test]
async fn batches_rollups_windows_and_reports_agree() {
    let dir = temp_dir("batches");
    let ledger = open(&dir, LedgerOptions::default());
    let now = sluice_store::unix_now_ms();
    for i in 0..1_000 {
        ledger.record(record(i, now - 1_000 + i));
    }
    ledger.flush().await;
    assert_eq!(ledger.written(), 1_000);
    assert_eq!(ledger.queued(), 0);
    assert_eq!(ledger.dropped() + ledger.errors(), 0);

    let total_cost: u64 = (0..1_000).map(|i| 1_000 + i).sum();
    let since = now - DAY_MS;
    let raw = ledger.report(Dimension::Key, since, now).await.unwrap();
    assert!(!raw.from_rollups);
    assert_eq!(
        raw.rows.iter().map(|r| r.cost_nano_usd).sum::<u64>(),
        total_cost
    );
    assert_eq!(raw.rows.iter().map(|r| r.requests).sum::<u64>(), 1_000);
    let names: Vec<&str> = raw.rows.iter().map(|r| r.group.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["-", "team-1", "team-2"]);
    // Highest cost first.
    assert!(raw
        .rows
        .windows(2)
        .all(|w| w[0].cost_nano_usd >= w[1].cost_nano_usd));
    let errors: u64 = raw.rows.iter().map(|r| r.errors).sum();
    assert_eq!(errors, 100);

    // The roll-ups say the same (a period past a 1-day retention reads them).
    let short = open(
        &dir,
        LedgerOptions {
            retention_days: 1,
            ..LedgerOptions::default()
        },
    );
    let rolled = short
        .report(Dimension::Key, now - 10 * DAY_MS, now)
        .await
        .unwrap();
    assert!(rolled.from_rollups);
    let mut a = raw.rows.clone();
    let mut b = rolled.rows.clone();
    a.sort_by(|x, y| x.group.cmp(&y.group));
    b.sort_by(|x, y| x.group.cmp(&y.group));
    assert_eq!(a, b);

    for by in [Dimension::Model, Dimension::Provider, Dimension::Route] {
        let r = ledger.report(by, since, now).await.unwrap();
        assert_eq!(
            r.rows.iter().map(|r| r.cost_nano_usd).sum::<u64>(),
            total_cost
        );
    }
    let routes = ledger.report(Dimension::Route, since, now).await.unwrap();
    let mut groups: Vec<_> = routes.rows.iter().map(|r| r.group.clone()).collect();
    groups.sort();
    assert_eq!(groups, ["-", "auto"]);

    // Budget windows: key_1's spend in each window is the sum of its records.
    let key1: u64 = (0..1_000).filter(|i| i % 3 == 1).map(|i| 1_000 + i).sum();
    for period in [BudgetPeriod::Total, BudgetPeriod::Day, BudgetPeriod::Month] {
        let (w, _) = period.window(now - 500);
        let (w_first, _) = period.window(now - 1_000);
        if w == w_first {
            assert_eq!(ledger.window_spend("key_1", &w).await.unwrap(), key1, "{w}");
        }
    }
    assert_eq!(ledger.window_spend("nobody", "total").await.unwrap(), 0);
}

/// Batches are written many records to a statement, the rest one by one: every field of
/// every record comes back as it was recorded, in order, whatever the batch's size.
#[tokio::test]
async fn every_record_comes_back_as_recorded_whatever_the_batch_size() {
    for (n, batch_size) in [
        (1, 512),
        (31, 512),
        (32, 512),
        (100, 512),
        (1_000, 512),
        (70, 33),
    ] {
        let dir = temp_dir("fields");
        let ledger = open(
            &dir,
            LedgerOptions {
                batch_size,
                ..LedgerOptions::default()
            },
        );
        let now = sluice_store::unix_now_ms();
        let recorded: Vec<SpendRecord> = (0..n)
            .map(|i| {
                let mut r = record(i, now - 10_000 + i);
                // The optional fields empty on some records, set on others.
                r.ttft_ms = (i % 2 == 0).then_some(i);
                r.usage_estimated = i % 7 == 0;
                r.attempts = 1 + u32::try_from(i % 3).unwrap();
                r
            })
            .collect();
        for r in &recorded {
            ledger.record(r.clone());
        }
        ledger.flush().await;
        assert_eq!(
            ledger.written(),
            n,
            "{n} records in batches of {batch_size}"
        );
        assert_eq!(
            ledger.export(0).await.unwrap(),
            recorded,
            "{n} in {batch_size}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// No query reads the log by key: the `(key_id, ts_ms)` index an older file has is dropped
/// when it is opened (the time index stays).
#[tokio::test]
async fn the_key_index_of_an_older_file_is_dropped() {
    let dir = temp_dir("key-index");
    drop(open(&dir, LedgerOptions::default()));
    let indexes = |conn: &rusqlite::Connection| -> Vec<String> {
        let mut s = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'spend_log' AND sql IS NOT NULL ORDER BY name")
            .unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let conn = rusqlite::Connection::open(dir.join("ledger.sqlite")).unwrap();
    assert_eq!(
        indexes(&conn),
        ["spend_log_batch", "spend_log_batch_line", "spend_log_ts"]
    );
    conn.execute_batch("CREATE INDEX spend_log_key_ts ON spend_log (key_id, ts_ms);")
        .unwrap();
    drop(conn);
    drop(open(&dir, LedgerOptions::default()));
    let conn = rusqlite::Connection::open(dir.join("ledger.sqlite")).unwrap();
    assert_eq!(
        indexes(&conn),
        ["spend_log_batch", "spend_log_batch_line", "spend_log_ts"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn retention_purges_old_records_and_ended_windows() {
    let dir = temp_dir("purge");
    let ledger = open(
        &dir,
        LedgerOptions {
            retention_days: 7,
            rollup_retention_days: 30,
            ..LedgerOptions::default()
        },
    );
    let now = sluice_store::unix_now_ms();
    ledger.record(record(1, now - 40 * DAY_MS));
    ledger.record(record(4, now - 8 * DAY_MS));
    ledger.record(record(7, now - 1_000));
    ledger.flush().await;
    let purged = ledger.purge(now).await.unwrap();
    assert_eq!(purged.records, 2);
    assert_eq!(purged.rollups, 1);
    // Day windows of 40 and 8 days ago, month window of 40 days ago (and maybe of 8).
    assert!(purged.windows >= 3, "{purged:?}");
    let raw = ledger.report(Dimension::Key, 0, now).await;
    // `since = 0` reaches past retention: roll-ups, of which the 8-day-old one survives.
    let raw = raw.unwrap();
    assert!(raw.from_rollups);
    assert_eq!(raw.rows.iter().map(|r| r.requests).sum::<u64>(), 2);
    let recent = ledger
        .report(Dimension::Key, now - DAY_MS, now)
        .await
        .unwrap();
    assert_eq!(recent.rows.iter().map(|r| r.requests).sum::<u64>(), 1);
    // `total` windows are never purged.
    assert_eq!(
        ledger.window_spend("key_1", "total").await.unwrap(),
        (1_000 + 1) + (1_000 + 4) + (1_000 + 7)
    );
    assert_eq!(ledger.purge(now).await.unwrap(), Purged::default());
}

fn key(id: &str, name: &str, created_ms: u64) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        name: name.into(),
        hash: blake_hex(id),
        hint: "sk-sluice-…abcd".into(),
        models: vec!["gpt-4o-mini".into(), "auto".into()],
        rpm: Some(60),
        tpm: None,
        max_concurrent: Some(4),
        budget_nano_usd: Some(5_000_000_000),
        budget_period: BudgetPeriod::Month,
        metadata: r#"{"team":"a"}"#.into(),
        created_ms,
        expires_ms: None,
        revoked_ms: None,
        guardrails: vec!["pii".into()],
    }
}

fn blake_hex(s: &str) -> String {
    // Any 64-hex-digit string stands in for a hash here.
    format!(
        "{:0>64}",
        s.bytes().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[tokio::test]
async fn keys_round_trip_and_survive_restart() {
    let dir = temp_dir("keys");
    let path = dir.join("ledger.sqlite");
    let ledger = SqliteLedger::open(&path, LedgerOptions::default()).unwrap();
    let a = key("key_a", "team-a", 1);
    let mut b = key("key_b", "team-b", 2);
    b.models.clear();
    b.rpm = None;
    b.budget_nano_usd = None;
    b.budget_period = BudgetPeriod::Total;
    b.expires_ms = Some(99);
    ledger.save_key(&a).await.unwrap();
    ledger.save_key(&b).await.unwrap();
    assert_eq!(ledger.key_by_hash(&a.hash).await.unwrap(), Some(a.clone()));
    assert_eq!(ledger.key("key_b").await.unwrap(), Some(b.clone()));
    assert_eq!(ledger.key("team-a").await.unwrap(), Some(a.clone()));
    assert_eq!(ledger.key("nobody").await.unwrap(), None);
    let mut revoked = a.clone();
    revoked.revoked_ms = Some(5);
    ledger.save_key(&revoked).await.unwrap();
    // A newer key of the same name wins a lookup by name.
    let a2 = key("key_a2", "team-a", 3);
    ledger.save_key(&a2).await.unwrap();
    assert_eq!(ledger.key("team-a").await.unwrap(), Some(a2.clone()));
    ledger.shutdown();
    drop(ledger);

    let ledger = SqliteLedger::open(&path, LedgerOptions::default()).unwrap();
    assert_eq!(ledger.keys().await.unwrap(), vec![revoked, b, a2]);
}

#[tokio::test]
async fn records_from_many_threads_all_land_and_survive_restart() {
    let dir = temp_dir("threads");
    let path = dir.join("ledger.sqlite");
    let ledger = SqliteLedger::open(&path, LedgerOptions::default()).unwrap();
    let now = sluice_store::unix_now_ms();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let l = ledger.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    l.record(record(t * 1_000 + i, now));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // No flush: shutdown writes what is queued.
    ledger.shutdown();
    drop(ledger);
    let ledger = Ledger::Sqlite(SqliteLedger::open(&path, LedgerOptions::default()).unwrap());
    let r = ledger.report(Dimension::Provider, 0, now).await.unwrap();
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.rows[0].requests, 2_000);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let dir = temp_dir("full");
    let ledger = open(
        &dir,
        LedgerOptions {
            max_queued: 0,
            ..LedgerOptions::default()
        },
    );
    ledger.record(record(1, 1));
    ledger.flush().await;
    assert_eq!(ledger.dropped(), 1);
    assert_eq!(ledger.written(), 0);
}

#[tokio::test]
async fn a_full_batch_is_written_without_waiting_for_the_interval() {
    // The writer gathers records parked, woken by nothing until a batch is full: with an
    // hour-long interval, a full batch must still be written at once, and a query answered.
    let dir = temp_dir("full-batch");
    let ledger = open(
        &dir,
        LedgerOptions {
            batch_size: 4,
            flush_interval: std::time::Duration::from_secs(3600),
            ..LedgerOptions::default()
        },
    );
    let now = sluice_store::unix_now_ms();
    // The first record starts the batch; the others come once the writer is parked.
    ledger.record(record(0, now));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for i in 1..4 {
        ledger.record(record(i, now));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ledger.written() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(ledger.written(), 4, "a full batch waits for no interval");
    // One more record starts a batch that the hour would end; a query ends it now.
    ledger.record(record(4, now));
    let asked = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        ledger.report(Dimension::Key, now - 1_000, now + 1_000),
    )
    .await
    .expect("a query wakes the gathering writer")
    .unwrap();
    let requests: u64 = asked.rows.iter().map(|r| r.requests).sum();
    assert_eq!(
        requests, 5,
        "the records before the query are written first"
    );
}

#[tokio::test]
async fn a_version_1_file_gains_batch_id_and_guardrails_and_keeps_its_records() {
    let dir = temp_dir("v1");
    let ledger = open(&dir, LedgerOptions::default());
    let now = sluice_store::unix_now_ms();
    ledger.record(record(1, now));
    ledger.flush().await;
    drop(ledger);
    // Back to version 1, as a file written by an older sluice.
    let conn = rusqlite::Connection::open(dir.join("ledger.sqlite")).unwrap();
    conn.execute_batch(
        "DROP INDEX spend_log_batch; DROP INDEX spend_log_batch_line;
         ALTER TABLE spend_log DROP COLUMN batch_id;
         ALTER TABLE spend_log DROP COLUMN guardrails; ALTER TABLE keys DROP COLUMN guardrails;
         INSERT INTO keys (id, name, hash, hint, models, budget_period, metadata, created_ms)
         VALUES ('key_old', 'old', 'ff', 'h', '[]', 'total', '{}', 1);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    let ledger = open(&dir, LedgerOptions::default());
    let old = ledger.key("key_old").await.unwrap().expect("the older key");
    assert!(old.guardrails.is_empty());
    let mut k = key("key_new", "new", now);
    k.guardrails = vec!["pii".into(), "secrets".into()];
    ledger.save_key(&k).await.unwrap();
    assert_eq!(ledger.key("key_new").await.unwrap(), Some(k));
    ledger.record(record(4, now + 1));
    ledger.record(record(6, now + 2));
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].batch_id, None);
    assert_eq!(records[1].batch_id.as_deref(), Some("batch_4"));
    assert_eq!(
        records[2].guardrails.as_deref(),
        Some("pii:email:redact=2,pii:card:block=1")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A batch line's record: its request id is the line's, the same each time it runs.
fn line_record(line: u64, ts_ms: u64) -> SpendRecord {
    SpendRecord {
        request_id: format!("batch_req_x_{line}"),
        key_id: Some("key_1".into()),
        key_name: Some("team-1".into()),
        route: None,
        batch_id: Some("batch_x".into()),
        cost_nano_usd: 1_000,
        ..record(1, ts_ms)
    }
}

#[tokio::test]
async fn a_batch_line_recorded_twice_is_one_record_charged_once() {
    let dir = temp_dir("line-twice");
    let ledger = open(&dir, LedgerOptions::default());
    let now = sluice_store::unix_now_ms();
    // Twice in one write, then again in a later write, then after a restart.
    ledger.record(line_record(1, now));
    ledger.record(line_record(1, now + 1));
    ledger.record(line_record(2, now + 2));
    ledger.flush().await;
    ledger.record(line_record(2, now + 3));
    // The same request id outside a batch is another request's record: kept.
    ledger.record(SpendRecord {
        batch_id: None,
        ..line_record(2, now + 4)
    });
    ledger.flush().await;
    drop(ledger);
    let ledger = open(&dir, LedgerOptions::default());
    ledger.record(line_record(1, now + 5));
    ledger.flush().await;
    assert_eq!(ledger.errors(), 0);
    let records = ledger.export(0).await.unwrap();
    let lines: Vec<(&str, Option<&str>)> = records
        .iter()
        .map(|r| (r.request_id.as_str(), r.batch_id.as_deref()))
        .collect();
    assert_eq!(
        lines,
        [
            ("batch_req_x_1", Some("batch_x")),
            ("batch_req_x_2", Some("batch_x")),
            ("batch_req_x_2", None),
        ]
    );
    // The roll-ups and the budget windows count each line once.
    let report = ledger
        .report(Dimension::Key, now - DAY_MS, now + 10)
        .await
        .unwrap();
    assert_eq!(report.rows.iter().map(|r| r.requests).sum::<u64>(), 3);
    assert_eq!(
        report.rows.iter().map(|r| r.cost_nano_usd).sum::<u64>(),
        3_000
    );
    let (window, _) = BudgetPeriod::Total.window(now);
    assert_eq!(ledger.window_spend("key_1", &window).await.unwrap(), 3_000);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_version_4_file_with_a_line_charged_twice_gains_the_unique_index() {
    let dir = temp_dir("v4");
    let ledger = open(&dir, LedgerOptions::default());
    let now = sluice_store::unix_now_ms();
    ledger.record(line_record(1, now));
    ledger.flush().await;
    drop(ledger);
    // Version 4, as an older sluice left it: the line's record written twice.
    let conn = rusqlite::Connection::open(dir.join("ledger.sqlite")).unwrap();
    conn.execute_batch(
        "DROP INDEX spend_log_batch_line;
         INSERT INTO spend_log (ts_ms, request_id, key_id, key_name, endpoint, route, model,
             provider, status, prompt_tokens, completion_tokens, cached_tokens,
             cache_write_tokens, reasoning_tokens, cost_nano_usd, latency_ms, ttft_ms, cache,
             attempts, stream, usage_estimated, batch_id, guardrails)
         SELECT ts_ms, request_id, key_id, key_name, endpoint, route, model, provider, status,
             prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,
             reasoning_tokens, cost_nano_usd, latency_ms, ttft_ms, cache, attempts, stream,
             usage_estimated, batch_id, guardrails FROM spend_log;
         PRAGMA user_version = 4;",
    )
    .unwrap();
    drop(conn);
    let ledger = open(&dir, LedgerOptions::default());
    // The earlier duplicate is kept (it was charged), renamed; the line is not charged again.
    ledger.record(line_record(1, now + 1));
    ledger.flush().await;
    assert_eq!(ledger.errors(), 0);
    let ids: Vec<String> = ledger
        .export(0)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], "batch_req_x_1");
    assert!(ids[1].starts_with("batch_req_x_1#"), "{ids:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn many_openers_of_a_new_file_at_once_all_succeed() {
    // Replicas on one directory, or a gateway and the CLI: the first opening of a new file
    // (WAL switch, schema) takes locks SQLite's busy timeout does not wait for.
    for round in 0..5 {
        let dir = temp_dir(&format!("openers-{round}"));
        let path = dir.join("ledger.sqlite");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let openers: Vec<_> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), std::sync::Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    SqliteLedger::open(&path, LedgerOptions::default()).map(drop)
                })
            })
            .collect();
        for o in openers {
            o.join().unwrap().expect("opened");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test]
async fn a_report_by_day_reads_the_rollups_oldest_first() {
    let dir = temp_dir("by-day");
    // The raw log still holds these records: by day reads the roll-ups all the same.
    let ledger = open(&dir, LedgerOptions::default());
    // 2026-11-30T23:59:59.999Z, then two on 2026-12-01 and one on 2026-12-03.
    let nov30 = 1_796_083_199_999;
    for (i, ts) in [nov30 + 1, nov30 + 2 * DAY_MS + 1, nov30, nov30 + 3_600_000]
        .into_iter()
        .enumerate()
    {
        ledger.record(record(i as u64 + 1, ts));
    }
    ledger.flush().await;
    let now = nov30 + 3 * DAY_MS;
    let by_day = ledger
        .report(Dimension::Day, nov30 - DAY_MS, now)
        .await
        .unwrap();
    assert!(by_day.from_rollups);
    let days: Vec<(&str, u64, u64)> = by_day
        .rows
        .iter()
        .map(|r| (r.group.as_str(), r.requests, r.cost_nano_usd))
        .collect();
    // `record(i, _)` costs 1000 + i.
    assert_eq!(
        days,
        [
            ("2026-11-30", 1, 1_003),
            ("2026-12-01", 2, 1_001 + 1_004),
            ("2026-12-03", 1, 1_002)
        ]
    );
    let later = ledger.report(Dimension::Day, nov30 + 2, now).await.unwrap();
    assert_eq!(later.rows.len(), 2);
    // A range: roll-ups in whole days, up to the day holding `until`'s last millisecond.
    let two_days = ledger
        .report_between(Dimension::Day, nov30, nov30 + 1 + DAY_MS, now)
        .await
        .unwrap();
    let groups: Vec<&str> = two_days.rows.iter().map(|r| r.group.as_str()).collect();
    assert_eq!(groups, ["2026-11-30", "2026-12-01"]);
    // From the raw log, to the millisecond: the last one of 2026-11-30 and the first of
    // 2026-12-01.
    let raw = ledger
        .report_between(Dimension::Model, nov30, nov30 + 2, now)
        .await
        .unwrap();
    assert!(!raw.from_rollups);
    assert_eq!(raw.rows.iter().map(|r| r.requests).sum::<u64>(), 2);
    assert_eq!(Dimension::parse("day"), Some(Dimension::Day));
    assert_eq!(Dimension::Day.name(), "day");
}

#[tokio::test]
async fn the_request_log_pages_filters_and_bounds_its_search() {
    let dir = temp_dir("request-log");
    let ledger = open(&dir, LedgerOptions::default());
    common::request_log::check(&ledger).await;
}

#[tokio::test]
async fn reports_from_partial_days_and_rollups_equal_the_raw_sums() {
    let dir = temp_dir("split-reports");
    let ledger = open(&dir, LedgerOptions::default());
    common::split_reports::check(&ledger).await;
}
