//! The sampled payloads' store on SQLite and on PostgreSQL (at `DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, each test in a schema of its own): kept,
//! listed newest first by every filter and by cursor, expired samples hidden then purged;
//! writes started together all kept.

mod common;

use bytes::Bytes;
use common::{unique, TempDir};
use sluice_store::samples::{Backend, PgSamples, Sample, SampleQuery, SqliteSamples};
use sluice_store::SampleStore;
use tokio_postgres::NoTls;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn admin(sql: &str) {
    let (client, connection) = tokio_postgres::connect(&database_url(), NoTls)
        .await
        .expect("PostgreSQL at DATABASE_URL");
    tokio::spawn(connection);
    client.batch_execute(sql).await.expect(sql);
}

const NOW: u64 = 1_764_800_000_000;

/// Sample `n`: route `r` (even) or none, deployment `c` every third, key `k{n % 2}`.
fn sample(n: u64) -> Sample {
    Sample {
        ts_ms: NOW + n,
        expires_ms: NOW + 3_600_000,
        request_id: format!("req-{n}"),
        key_id: Some(format!("k{}", n % 2)),
        endpoint: "chat".into(),
        model: if n % 2 == 0 { "r".into() } else { "a".into() },
        route: (n % 2 == 0).then(|| "r".into()),
        deployment: Some(if n % 3 == 0 { "c" } else { "a" }.into()),
        canary: n % 3 == 0,
        status: 200,
        request: Bytes::from(format!(r#"{{"n":{n}}}"#)),
        response: (n != 4).then(|| Bytes::from(format!(r#"{{"answer":{n}}}"#))),
    }
}

fn query(limit: u32) -> SampleQuery {
    SampleQuery {
        now_ms: NOW,
        limit,
        ..SampleQuery::default()
    }
}

/// The request ids `q` lists, following cursors to the end.
async fn ids(store: &SampleStore, mut q: SampleQuery) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let page = store.list(&q).await.expect("list");
        out.extend(page.iter().map(|s| s.sample.request_id.clone()));
        match page.last() {
            Some(last) if page.len() == q.limit as usize => q.before = Some(last.id),
            _ => return out,
        }
    }
}

/// What every backend must do.
async fn exercise(store: &SampleStore) {
    // Twelve writes started together (one transaction on SQLite), then awaited.
    let writes: Vec<_> = (0..12).map(|n| store.keep(sample(n))).collect();
    for w in writes {
        w.await.expect("keep");
    }
    let mut expired = sample(99);
    expired.expires_ms = NOW - 1;
    store.keep(expired).await.expect("keep");

    let all = store.list(&query(100)).await.expect("list");
    assert_eq!(all.len(), 12, "the expired sample is not listed");
    assert_eq!(all[0].sample, sample(11), "newest first, as kept");
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(all[7].sample.response, None);
    let newest_first =
        |ns: &[u64]| -> Vec<String> { ns.iter().rev().map(|n| format!("req-{n}")).collect() };
    assert_eq!(
        ids(store, query(5)).await,
        newest_first(&(0..12).collect::<Vec<_>>())
    );
    let route = SampleQuery {
        route: Some("r".into()),
        ..query(2)
    };
    assert_eq!(ids(store, route).await, newest_first(&[0, 2, 4, 6, 8, 10]));
    let canary = SampleQuery {
        route: Some("r".into()),
        deployment: Some("c".into()),
        ..query(100)
    };
    assert_eq!(ids(store, canary).await, newest_first(&[0, 6]));
    let by_model_key = SampleQuery {
        model: Some("a".into()),
        key_id: Some("k1".into()),
        ..query(3)
    };
    assert_eq!(
        ids(store, by_model_key).await,
        newest_first(&[1, 3, 5, 7, 9, 11])
    );
    let one = SampleQuery {
        request_id: Some("req-7".into()),
        ..query(100)
    };
    assert_eq!(ids(store, one).await, newest_first(&[7]));
    let none = SampleQuery {
        route: Some("r'; DROP TABLE samples; --".into()),
        ..query(100)
    };
    assert!(ids(store, none).await.is_empty());
    // A page asks for 100 at most.
    assert_eq!(store.list(&query(1000)).await.expect("list").len(), 12);

    // Later, all expired: none listed; the purge deletes them.
    let later = SampleQuery {
        now_ms: NOW + 3_600_000,
        ..query(100)
    };
    assert!(store.list(&later).await.expect("list").is_empty());
    assert_eq!(store.purge(NOW).await.expect("purge"), 1);
    assert_eq!(store.purge(NOW + 3_600_000).await.expect("purge"), 12);
}

#[tokio::test]
async fn sqlite_keeps_lists_and_expires_samples() {
    let dir = TempDir::new();
    let b = SqliteSamples::open(&dir.0.join("samples.sqlite")).expect("open");
    exercise(&SampleStore::new(Backend::Sqlite(b))).await;
}

#[tokio::test]
async fn postgres_keeps_lists_and_expires_samples() {
    let name = unique("samples").replace('-', "_");
    admin(&format!("CREATE SCHEMA {name}")).await;
    let base = database_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-csearch_path%3D{name}");
    let b = PgSamples::open(&url).expect("open");
    exercise(&SampleStore::new(Backend::Postgres(b))).await;
    admin(&format!("DROP SCHEMA {name} CASCADE")).await;
}
