//! Opening the stores from a config (`sluice_store::open`): which store each config picks,
//! that the config's settings reach it, and that a store which cannot be opened fails. The
//! shared stores are the Redis at `REDIS_URL` and the PostgreSQL at `DATABASE_URL`.

mod common;

use common::{free_port, key, now, redis_url, unique, TempDir};
use sluice_core::env::MapEnv;
use sluice_core::{Config, Secret};
use sluice_store::ledger::DAY_MS;
use sluice_store::{open, CacheStore, Check, CheckKind, Ledger, Limiter, SpendRecord};
use std::path::Path;
use std::time::Duration;

/// The default config, its data in `dir`.
fn config_in(dir: &Path) -> Config {
    let mut config = Config::from_toml("", &MapEnv::default()).expect("default config");
    config.storage.data_dir = dir.to_path_buf();
    config
}

fn record(ts_ms: u64, request_id: &str) -> SpendRecord {
    SpendRecord {
        ts_ms,
        request_id: request_id.into(),
        endpoint: "chat".into(),
        status: 200,
        cost_nano_usd: 1_000,
        cache: "miss".into(),
        attempts: 1,
        ..SpendRecord::default()
    }
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Runs `sql` on the PostgreSQL at `DATABASE_URL`, on a runtime of its own.
fn postgres(sql: String) {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (client, connection) =
                tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
                    .await
                    .expect("PostgreSQL at DATABASE_URL");
            tokio::spawn(connection);
            client.batch_execute(&sql).await.expect("sql");
        });
    })
    .join()
    .expect("postgres thread");
}

#[tokio::test]
async fn without_a_database_url_the_ledger_is_a_sqlite_file_in_the_data_dir() {
    let dir = TempDir::new();
    let config = config_in(&dir.0);
    let ledger = open::ledger(&config.storage, &config.spend).expect("open");
    assert!(matches!(ledger, Ledger::Sqlite(_)));
    assert!(dir.0.join(open::LEDGER_FILE).is_file());
    ledger.record(record(now(), "r1"));
    ledger.flush().await;
    assert_eq!(ledger.written(), 1);
    drop(ledger);
    // The file keeps it: opened again from the same config, the record is there.
    let again = open::ledger(&config.storage, &config.spend).expect("reopen");
    let records = again.export(0).await.expect("export");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].request_id, "r1");
}

#[tokio::test]
async fn the_spend_config_reaches_the_ledger() {
    // max_queued: with 0, every record is dropped and counted.
    let dir = TempDir::new();
    let mut config = config_in(&dir.0);
    config.spend.max_queued = 0;
    let ledger = open::ledger(&config.storage, &config.spend).expect("open");
    ledger.record(record(now(), "dropped"));
    ledger.flush().await;
    assert_eq!((ledger.dropped(), ledger.written()), (1, 0));
    drop(ledger);

    // retention_days: a record older than a day is purged, a newer one kept.
    let dir = TempDir::new();
    let mut config = config_in(&dir.0);
    config.spend.retention_days = 1;
    let ledger = open::ledger(&config.storage, &config.spend).expect("open");
    let t = now();
    ledger.record(record(t - 3 * DAY_MS, "old"));
    ledger.record(record(t, "new"));
    ledger.flush().await;
    let purged = ledger.purge(t).await.expect("purge");
    assert_eq!(purged.records, 1);
    let left = ledger.export(0).await.expect("export");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].request_id, "new");
}

#[tokio::test]
async fn with_a_database_url_the_ledger_is_postgres() {
    let schema = format!("t_open_{}", unique("").replace('-', "_"));
    postgres(format!("CREATE SCHEMA {schema}"));
    let dir = TempDir::new();
    let mut config = config_in(&dir.0);
    let url = format!("{}?options=-csearch_path%3D{schema}", database_url());
    config.storage.database_url = Some(Secret::new(url));
    let ledger = open::ledger(&config.storage, &config.spend).expect("open");
    assert!(matches!(ledger, Ledger::Postgres(_)));
    ledger.record(record(now(), "pg"));
    ledger.flush().await;
    let records = ledger.export(0).await.expect("export");
    assert_eq!(records.len(), 1);
    assert!(!dir.0.join(open::LEDGER_FILE).exists());
    drop(ledger);
    postgres(format!("DROP SCHEMA {schema} CASCADE"));
}

#[tokio::test]
async fn a_ledger_at_a_path_is_read_without_pruning_and_other_files_are_none() {
    let dir = TempDir::new();
    let mut config = config_in(&dir.0);
    config.spend.retention_days = 1;
    let ledger = open::ledger(&config.storage, &config.spend).expect("open");
    ledger.record(record(now() - 3 * DAY_MS, "old"));
    ledger.flush().await;
    drop(ledger);
    let path = dir.0.join(open::LEDGER_FILE);
    let read = open::ledger_at(&path).expect("open").expect("a ledger");
    assert!(matches!(read, Ledger::Sqlite(_)));
    read.purge(now()).await.expect("purge");
    assert_eq!(read.export(0).await.expect("export").len(), 1);

    let jsonl = dir.0.join("traffic.jsonl");
    std::fs::write(&jsonl, "{}\n").expect("write");
    assert!(open::ledger_at(&jsonl).expect("not a ledger").is_none());
    assert!(open::ledger_at(&dir.0.join("missing"))
        .expect("none")
        .is_none());
    assert!(open::is_database_url("postgresql://u@h/db"));
    let url = format!("postgres://postgres@127.0.0.1:{}/test", free_port());
    assert!(open::ledger_at(Path::new(&url)).is_err());
}

#[test]
fn a_ledger_that_cannot_be_opened_fails() {
    // No data directory: the SQLite file cannot be made (the caller makes the directory).
    let dir = TempDir::new();
    let config = config_in(&dir.0.join("missing").join("deeper"));
    assert!(open::ledger(&config.storage, &config.spend).is_err());

    // Nothing listens at the database URL.
    let mut config = config_in(&dir.0);
    let url = format!("postgres://postgres@127.0.0.1:{}/test", free_port());
    config.storage.database_url = Some(Secret::new(url));
    assert!(open::ledger(&config.storage, &config.spend).is_err());
}

#[tokio::test]
async fn without_a_redis_url_the_cache_store_is_a_sqlite_file_in_the_data_dir() {
    let dir = TempDir::new();
    let config = config_in(&dir.0);
    let store = open::cache_store(&config.storage, &config.cache).expect("open");
    assert!(matches!(store, CacheStore::Sqlite(_)));
    assert!(dir.0.join(open::CACHE_FILE).is_file());
    let expires = now() + 60_000;
    store.put(key(1), "v".into(), expires);
    store.flush().await;
    let got = store.get(&key(1), now()).await.expect("get");
    assert_eq!(got, Some(("v".into(), expires)));
}

#[tokio::test]
async fn with_a_redis_url_the_cache_store_is_redis_under_the_prefix() {
    let dir = TempDir::new();
    let mut config = config_in(&dir.0);
    config.storage.redis_url = Some(Secret::new(redis_url()));
    config.storage.redis_prefix = format!("{}:", unique("open"));
    let store = open::cache_store(&config.storage, &config.cache).expect("open");
    assert!(matches!(store, CacheStore::Redis(_)));
    let expires = now() + 60_000;
    store.put(key(2), "v".into(), expires);
    store.flush().await;
    let (value, _) = store.get(&key(2), now()).await.expect("get").expect("hit");
    assert_eq!(value, "v");
    // Another config's prefix does not see it.
    config.storage.redis_prefix = format!("{}:", unique("open-other"));
    let other = open::cache_store(&config.storage, &config.cache).expect("open");
    assert_eq!(other.get(&key(2), now()).await.expect("get"), None);
    assert_eq!(store.clear().await.expect("clear"), 1);
    assert!(!dir.0.join(open::CACHE_FILE).exists());
}

#[test]
fn a_cache_store_or_limiter_that_cannot_be_opened_fails() {
    let dir = TempDir::new();
    let config = config_in(&dir.0.join("missing").join("deeper"));
    assert!(open::cache_store(&config.storage, &config.cache).is_err());

    let mut config = config_in(&dir.0);
    config.storage.redis_url = Some(Secret::new("rediss://127.0.0.1:6379"));
    assert!(open::cache_store(&config.storage, &config.cache).is_err());
    assert!(open::limiter(&config.storage, &config.limits).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_is_in_process_without_redis_and_shared_on_redis() {
    let dir = TempDir::new();
    let mut config = config_in(&dir.0);
    let limiter = open::limiter(&config.storage, &config.limits).expect("open");
    assert!(matches!(limiter, Limiter::Memory(_)));

    config.storage.redis_url = Some(Secret::new(redis_url()));
    config.storage.redis_prefix = format!("{}:", unique("open"));
    config.limits.redis_timeout = Duration::from_secs(2);
    let a = open::limiter(&config.storage, &config.limits).expect("open");
    let b = open::limiter(&config.storage, &config.limits).expect("open");
    assert!(matches!(a, Limiter::Redis(_)));
    // Two limiters from one config share their state: a limit of one request admits one.
    let checks = [Check {
        name: "rpm".into(),
        kind: CheckKind::Window { limit: 1, cost: 1 },
    }];
    let lease = Duration::from_secs(60);
    let t = now();
    let first = a.admit("t1", &checks, t, lease).await.expect("admit");
    let ticket = first.expect("the first request is admitted");
    assert!(!ticket.fallback, "Redis answered");
    let second = b.admit("t2", &checks, t, lease).await.expect("admit");
    assert!(
        second.is_err(),
        "the second is refused by the other limiter"
    );
}
