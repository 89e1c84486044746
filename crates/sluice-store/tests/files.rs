//! The Files API's store: metadata in SQLite and in PostgreSQL (at `DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, each test in a schema of its own), contents
//! written whole or not at all, and two stores (replicas) sharing one directory and one
//! PostgreSQL.

mod common;

use common::{unique, TempDir};
use sluice_store::files::{
    Contents, FileIndex, FileStore, ListQuery, NewFile, Order, Owner, PgIndex, Purpose, SqliteIndex,
};
use std::path::Path;
use tokio::io::AsyncReadExt;
use tokio_postgres::NoTls;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh PostgreSQL schema, dropped when this is.
struct TestSchema {
    name: String,
    url: String,
}

impl TestSchema {
    async fn new() -> Self {
        let name = unique("files").replace('-', "_");
        admin(&format!("CREATE SCHEMA {name}")).await;
        let base = database_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{name}");
        Self { name, url }
    }

    fn index(&self) -> FileIndex {
        FileIndex::Postgres(PgIndex::open(&self.url).expect("open the postgres files index"))
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(admin(&sql));
        })
        .join()
        .expect("drop schema");
    }
}

async fn admin(sql: &str) {
    let (client, connection) = tokio_postgres::connect(&database_url(), NoTls)
        .await
        .expect("PostgreSQL at DATABASE_URL");
    tokio::spawn(connection);
    client.batch_execute(sql).await.expect(sql);
}

fn sqlite_store(dir: &Path) -> FileStore {
    let index = SqliteIndex::open(&dir.join("files.sqlite")).expect("open the sqlite index");
    let contents = Contents::open(&dir.join("files")).expect("contents dir");
    FileStore::new(FileIndex::Sqlite(index), contents)
}

fn new(owner: &Owner, purpose: Purpose, filename: &str) -> NewFile {
    NewFile {
        owner: owner.clone(),
        purpose,
        filename: filename.into(),
        expires_after: None,
    }
}

async fn content(store: &FileStore, id: &str, owner: &Owner) -> Option<Vec<u8>> {
    let (_, mut file) = store.open(id, owner).await.expect("open")?;
    let mut out = Vec::new();
    file.read_to_end(&mut out).await.expect("read");
    Some(out)
}

fn ids(page: &sluice_store::files::Page) -> Vec<&str> {
    page.files.iter().map(|f| f.id.as_str()).collect()
}

/// What every index must do: create, read, list by pages, own, delete, expire.
async fn exercise(store: &FileStore) {
    let alice = Owner::Key("key_alice".into());
    let bob = Owner::Key("key_bob".into());
    let a = store
        .create(new(&alice, Purpose::Batch, "in.jsonl"), b"{\"a\":1}\n")
        .await
        .expect("create");
    assert!(a.id.starts_with("file-"));
    assert_eq!(
        (a.bytes, a.purpose, a.filename.as_str()),
        (8, Purpose::Batch, "in.jsonl")
    );
    let mut more = Vec::new();
    for i in 0..4 {
        let purpose = if i % 2 == 0 {
            Purpose::UserData
        } else {
            Purpose::Batch
        };
        let f = store
            .create_from_reader(new(&alice, purpose, "x.txt"), &b"hello"[..])
            .await
            .expect("create from reader");
        more.push(f.id);
    }
    let m = store
        .create(new(&Owner::Master, Purpose::Vision, "cat.png"), b"png")
        .await
        .expect("master's");

    assert_eq!(
        store.get(&a.id, &alice).await.expect("get"),
        Some(a.clone())
    );
    assert_eq!(
        content(store, &a.id, &alice).await.as_deref(),
        Some(&b"{\"a\":1}\n"[..])
    );
    // Another owner's file is absent, whichever the owner.
    assert_eq!(store.get(&a.id, &bob).await.expect("get"), None);
    assert_eq!(store.get(&a.id, &Owner::Master).await.expect("get"), None);
    assert_eq!(store.get(&m.id, &alice).await.expect("get"), None);
    assert!(content(store, &a.id, &bob).await.is_none());
    assert!(!store.delete(&a.id, &bob).await.expect("delete"));
    assert_eq!(
        store.get("file-../../etc", &alice).await.expect("bad id"),
        None
    );

    // Newest first by default; pages follow the cursor.
    let all = store
        .list(&alice, &ListQuery::default())
        .await
        .expect("list");
    let mut expected: Vec<&str> = std::iter::once(a.id.as_str())
        .chain(more.iter().map(String::as_str))
        .collect();
    expected.reverse();
    assert_eq!(ids(&all), expected);
    assert!(!all.has_more);
    let q = |after: Option<&str>, order| ListQuery {
        after: after.map(str::to_string),
        limit: 2,
        order,
        purpose: None,
    };
    let p1 = store
        .list(&alice, &q(None, Order::Asc))
        .await
        .expect("page 1");
    assert_eq!(ids(&p1), [a.id.as_str(), more[0].as_str()]);
    assert!(p1.has_more);
    let p2 = store
        .list(&alice, &q(Some(&more[0]), Order::Asc))
        .await
        .expect("page 2");
    assert_eq!(ids(&p2), [more[1].as_str(), more[2].as_str()]);
    let p3 = store
        .list(&alice, &q(Some(&more[2]), Order::Asc))
        .await
        .expect("page 3");
    assert_eq!(ids(&p3), [more[3].as_str()]);
    assert!(!p3.has_more);
    let d2 = store
        .list(&alice, &q(Some(&more[2]), Order::Desc))
        .await
        .expect("desc");
    assert_eq!(ids(&d2), [more[1].as_str(), more[0].as_str()]);
    let batch_only = ListQuery {
        purpose: Some(Purpose::Batch),
        order: Order::Asc,
        ..ListQuery::default()
    };
    let b = store.list(&alice, &batch_only).await.expect("by purpose");
    assert_eq!(ids(&b), [a.id.as_str(), more[1].as_str(), more[3].as_str()]);
    let masters = store
        .list(&Owner::Master, &ListQuery::default())
        .await
        .expect("list");
    assert_eq!(ids(&masters), [m.id.as_str()]);
    assert!(store
        .list(&bob, &ListQuery::default())
        .await
        .expect("list")
        .files
        .is_empty());

    // Delete: the row and the content go.
    assert!(store.delete(&a.id, &alice).await.expect("delete"));
    assert!(!store.delete(&a.id, &alice).await.expect("delete twice"));
    assert_eq!(store.get(&a.id, &alice).await.expect("get"), None);
    assert!(!store.contents().dir().join(&a.id).exists());

    // An expired file is absent, and purged with its content.
    let mut gone = new(&alice, Purpose::BatchOutput, "out.jsonl");
    gone.expires_after = Some(0);
    let e = store.create(gone, b"old").await.expect("create");
    assert_eq!(e.expires_at, Some(e.created_at), "one reading of the clock");
    assert_eq!(store.get(&e.id, &alice).await.expect("get"), None);
    assert!(store.contents().dir().join(&e.id).exists());
    assert!(store.purge_expired().await.expect("purge") >= 1);
    assert!(!store.contents().dir().join(&e.id).exists());
}

#[tokio::test]
async fn sqlite_index_stores_lists_owns_deletes_and_expires() {
    let dir = TempDir::new();
    exercise(&sqlite_store(&dir.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_index_stores_lists_owns_deletes_and_expires() {
    let schema = TestSchema::new().await;
    let dir = TempDir::new();
    let index = tokio::task::block_in_place(|| schema.index());
    let store = FileStore::new(index, Contents::open(&dir.0).expect("contents"));
    exercise(&store).await;
}

#[tokio::test]
async fn a_cut_upload_leaves_nothing_behind() {
    let dir = TempDir::new();
    let store = sqlite_store(&dir.0);
    let owner = Owner::Master;
    let mut upload = store.upload().await.expect("upload");
    let id = upload.id().to_string();
    upload.write(&[b'x'; 100_000]).await.expect("write");
    assert_eq!(upload.bytes(), 100_000);
    drop(upload);
    let files = dir.0.join("files");
    let left: Vec<_> = std::fs::read_dir(files.join("tmp")).expect("tmp").collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(!files.join(&id).exists());
    assert_eq!(store.get(&id, &owner).await.expect("get"), None);
    assert!(store
        .list(&owner, &ListQuery::default())
        .await
        .expect("list")
        .files
        .is_empty());
}

#[tokio::test]
async fn a_crash_mid_upload_is_swept_after_a_day() {
    let dir = TempDir::new();
    let tmp = dir.0.join("files").join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let old = tmp.join("file-old.part");
    let fresh = tmp.join("file-fresh.part");
    std::fs::write(&old, b"half").expect("write");
    std::fs::write(&fresh, b"half").expect("write");
    let two_days = std::time::Duration::from_secs(2 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .and_then(|f| f.set_modified(std::time::SystemTime::now() - two_days))
        .expect("age the file");
    let _store = sqlite_store(&dir.0);
    assert!(!old.exists(), "a day-old cut upload is removed");
    assert!(
        fresh.exists(),
        "another replica may still be writing this one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_directory_and_one_postgres() {
    let schema = TestSchema::new().await;
    let dir = TempDir::new();
    let (a, b) = tokio::task::block_in_place(|| {
        let open = || FileStore::new(schema.index(), Contents::open(&dir.0).expect("contents"));
        (open(), open())
    });
    let owner = Owner::Key("key_1".into());
    let f = a
        .create(new(&owner, Purpose::Batch, "in.jsonl"), b"line\n")
        .await
        .expect("create on a");
    assert_eq!(
        b.get(&f.id, &owner).await.expect("get on b"),
        Some(f.clone())
    );
    assert_eq!(
        content(&b, &f.id, &owner).await.as_deref(),
        Some(&b"line\n"[..])
    );
    let listed = b
        .list(&owner, &ListQuery::default())
        .await
        .expect("list on b");
    assert_eq!(ids(&listed), [f.id.as_str()]);
    assert!(b.delete(&f.id, &owner).await.expect("delete on b"));
    assert_eq!(a.get(&f.id, &owner).await.expect("get on a"), None);
    assert!(content(&a, &f.id, &owner).await.is_none());
}

#[tokio::test]
async fn an_unreachable_postgres_fails_to_open() {
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/test?connect_timeout=1",
        common::free_port()
    );
    let err = tokio::task::spawn_blocking(move || PgIndex::open(&url))
        .await
        .expect("join")
        .expect_err("nothing listens there");
    assert!(!err.to_string().is_empty());
}
