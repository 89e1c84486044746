//! The Batch API's store, in SQLite and in PostgreSQL (at `DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, each test in a schema of its own): batches
//! owned and listed, a line's result recorded once, counts, leases, cancel and finish.

mod common;

use common::{unique, TempDir};
use sluice_store::batches::{BatchStatus, Forward, LineResult, NewBatch, Outcome};
use sluice_store::files::{FileIndex, Owner, PgIndex, SqliteIndex};
use sluice_store::BatchStore;
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

fn new_batch(owner: &Owner) -> NewBatch {
    NewBatch {
        owner: owner.clone(),
        endpoint: "/v1/chat/completions".into(),
        input_file_id: "file-abc".into(),
        completion_window: "24h".into(),
        metadata: Some(r#"{"a":"b"}"#.into()),
        expires_at: 4_000_000_000,
    }
}

fn result(line: u64, outcome: Outcome) -> LineResult {
    LineResult {
        line,
        outcome,
        text: format!(r#"{{"line":{line}}}"#),
    }
}

async fn exercise(store: &BatchStore) {
    let (me, other) = (Owner::Key("key_a".into()), Owner::Key("key_b".into()));
    let b = store.create(new_batch(&me)).await.expect("create");
    assert!(b.id.starts_with("batch_"));
    assert_eq!(b.status, BatchStatus::Validating);
    assert_eq!(b.metadata.as_deref(), Some(r#"{"a":"b"}"#));
    assert!(store.get(&b.id, &other).await.expect("get").is_none());
    assert_eq!(store.get(&b.id, &me).await.expect("get"), Some(b.clone()));

    // Leases: one runner at a time, free again once released.
    assert!(store.claim(&b.id, "r1", 1000, 2000).await.expect("claim"));
    assert!(!store.claim(&b.id, "r2", 1500, 2500).await.expect("claim"));
    assert!(store.runnable(1500, 10).await.expect("runnable").is_empty());
    assert_eq!(store.runnable(2001, 10).await.expect("runnable").len(), 1);
    store.release(&b.id, "r1").await.expect("release");
    assert!(store.claim(&b.id, "r2", 1500, 2500).await.expect("claim"));

    assert!(store.start(&b.id, 3).await.expect("start"));
    assert!(store
        .record(&b.id, result(0, Outcome::Completed))
        .await
        .expect("record"));
    assert!(!store
        .record(&b.id, result(0, Outcome::Failed))
        .await
        .expect("again"));
    assert!(store
        .record(&b.id, result(2, Outcome::Failed))
        .await
        .expect("record"));
    let now = store.get(&b.id, &me).await.expect("get").expect("there");
    assert_eq!(now.status, BatchStatus::InProgress);
    assert_eq!(
        (now.counts.total, now.counts.completed, now.counts.failed),
        (3, 1, 1)
    );
    assert_eq!(store.done_lines(&b.id).await.expect("done"), vec![0, 2]);
    let page = store.results(&b.id, Some(0), 10).await.expect("results");
    assert_eq!(page, vec![result(2, Outcome::Failed)]);

    // Cancel: only the owner, only while running.
    assert!(store
        .request_cancel(&b.id, &other)
        .await
        .expect("cancel")
        .is_none());
    let c = store
        .request_cancel(&b.id, &me)
        .await
        .expect("cancel")
        .expect("there");
    assert_eq!(c.status, BatchStatus::Cancelling);
    assert!(c.times.cancelling_at.is_some());
    store
        .finish(&b.id, BatchStatus::Cancelled, Some("file-o".into()), None)
        .await
        .expect("finish");
    let done = store.get(&b.id, &me).await.expect("get").expect("there");
    assert_eq!(done.status, BatchStatus::Cancelled);
    assert_eq!((done.counts.completed, done.counts.failed), (1, 1));
    assert_eq!(done.output_file_id.as_deref(), Some("file-o"));
    assert!(store.done_lines(&b.id).await.expect("done").is_empty());
    assert!(store
        .runnable(u64::MAX / 2, 10)
        .await
        .expect("runnable")
        .is_empty());

    // Listing: newest first, paged, per owner.
    let second = store.create(new_batch(&me)).await.expect("create");
    store.create(new_batch(&other)).await.expect("create");
    let page = store.list(&me, None, 1).await.expect("list");
    assert_eq!(page.batches[0].id, second.id);
    assert!(page.has_more);
    let page = store.list(&me, Some(&second.id), 10).await.expect("list");
    assert_eq!(page.batches.len(), 1);
    assert_eq!(page.batches[0].id, b.id);
    assert!(!page.has_more);
    assert!(store
        .transition(&second.id, BatchStatus::Validating, BatchStatus::Failed)
        .await
        .expect("t"));
    assert!(!store
        .transition(&second.id, BatchStatus::Validating, BatchStatus::Failed)
        .await
        .expect("t"));
    forwarding(store, &me).await;
}

async fn runnable(store: &BatchStore, id: &str, at: u64) -> bool {
    let found = store.runnable(at, 100).await.expect("runnable");
    found.iter().any(|x| x.id == id)
}

/// A forwarded batch's upstream state, step by step; the upstream's counts in the batch's
/// until zeroed; a parked batch not runnable before its time unless cancelled.
async fn forwarding(store: &BatchStore, me: &Owner) {
    let b = store.create(new_batch(me)).await.expect("create");
    assert!(store.forwarded(&b.id).await.expect("forwarded").is_none());
    store.forward_to(&b.id, "oai").await.expect("forward");
    store.forward_to(&b.id, "other").await.expect("again");
    store.forward_file(&b.id, "file-up").await.expect("file");
    store.forward_create_sent(&b.id).await.expect("sent");
    store.forward_made(&b.id, "batch_up").await.expect("made");
    assert!(store.start(&b.id, 5).await.expect("start"));
    assert!(store
        .record(&b.id, result(1, Outcome::Failed))
        .await
        .expect("record"));
    store.forward_counts(&b.id, 3, 1).await.expect("counts");
    let f = store
        .forwarded(&b.id)
        .await
        .expect("forwarded")
        .expect("there");
    assert_eq!(
        f,
        Forward {
            provider: "oai".into(),
            file_id: Some("file-up".into()),
            create_sent: true,
            upstream_id: Some("batch_up".into()),
            completed: 3,
            failed: 1,
            cancel_sent: false,
        }
    );
    let now = store.get(&b.id, me).await.expect("get").expect("there");
    assert_eq!(
        (now.counts.total, now.counts.completed, now.counts.failed),
        (5, 3, 2)
    );
    store.forward_counts(&b.id, 0, 0).await.expect("zeroed");
    let now = store.get(&b.id, me).await.expect("get").expect("there");
    assert_eq!((now.counts.completed, now.counts.failed), (0, 1));
    // Parked until 5000: not runnable before, runnable at once when cancelled.
    assert!(store.claim(&b.id, "r1", 1000, 2000).await.expect("claim"));
    store.park(&b.id, "r1", 5000).await.expect("park");
    assert!(!runnable(store, &b.id, 4000).await);
    assert!(runnable(store, &b.id, 5001).await);
    store.request_cancel(&b.id, me).await.expect("cancel");
    assert!(runnable(store, &b.id, 4000).await);
    store.forward_cancel_sent(&b.id).await.expect("cancel sent");
    store
        .set_errors(&b.id, r#"{"object":"list","data":[]}"#.into())
        .await
        .expect("errors");
    let f = store
        .forwarded(&b.id)
        .await
        .expect("forwarded")
        .expect("there");
    assert!(f.cancel_sent);
    let now = store.get(&b.id, me).await.expect("get").expect("there");
    assert_eq!(
        now.errors.as_deref(),
        Some(r#"{"object":"list","data":[]}"#)
    );
}

#[tokio::test]
async fn sqlite_batches() {
    let dir = TempDir::new();
    let index = SqliteIndex::open(&dir.0.join("files.sqlite")).expect("open");
    exercise(&BatchStore::new(FileIndex::Sqlite(index))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_batches() {
    let name = unique("batches").replace('-', "_");
    admin(&format!("CREATE SCHEMA {name}")).await;
    let base = database_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-csearch_path%3D{name}");
    let index = tokio::task::block_in_place(|| PgIndex::open(&url).expect("open"));
    exercise(&BatchStore::new(FileIndex::Postgres(index))).await;
    admin(&format!("DROP SCHEMA {name} CASCADE")).await;
}
