//! The stored responses: on SQLite and on PostgreSQL (at `DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, each test in a schema of its own): stored,
//! read by their owner only, withheld (`store: false`, too large), deleted, expired and
//! purged; a store reopened on the same file, and two stores on one PostgreSQL.

mod common;

use bytes::Bytes;
use common::{unique, TempDir};
use sluice_store::files::{unix_now_s, Owner};
use sluice_store::responses::{
    Backend, Content, Kept, NewResponse, PgResponses, ResponseOptions, ResponseStore,
    SqliteResponses, Withheld,
};
use tokio_postgres::NoTls;

const OPTIONS: ResponseOptions = ResponseOptions {
    ttl_s: 3600,
    max_bytes: 1000,
};

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
        let name = unique("responses").replace('-', "_");
        admin(&format!("CREATE SCHEMA {name}")).await;
        let base = database_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{name}");
        Self { name, url }
    }

    fn store(&self) -> ResponseStore {
        let pg = PgResponses::open(&self.url).expect("open the postgres responses store");
        ResponseStore::new(Backend::Postgres(pg), OPTIONS)
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

fn sqlite_store(dir: &TempDir) -> ResponseStore {
    let b = SqliteResponses::open(&dir.0.join("responses.sqlite")).expect("open sqlite");
    ResponseStore::new(Backend::Sqlite(b), OPTIONS)
}

fn content(text: &str) -> Content {
    Content {
        response: Bytes::from(format!(r#"{{"id":"x","output_text":"{text}"}}"#)),
        input_items: Bytes::from_static(br#"[{"id":"msg_1","type":"message"}]"#),
        conversation: Bytes::from_static(br#"[{"role":"user","content":"hi"}]"#),
    }
}

fn new(id: &str, owner: &Owner, content: Option<Content>) -> NewResponse {
    NewResponse {
        id: id.into(),
        owner: owner.clone(),
        created_at: unix_now_s(),
        content,
    }
}

/// What every backend must do.
async fn exercise(store: &ResponseStore) {
    let alice = Owner::Key("key_alice".into());
    let bob = Owner::Key("key_bob".into());
    let id = format!("resp_{}", unique("a").replace('-', "_"));
    store
        .put(new(&id, &alice, Some(content("one"))))
        .await
        .expect("put");
    let got = store.get(&id, &alice).await.expect("get").expect("stored");
    assert_eq!(got.kept, Kept::Content(content("one")));
    assert_eq!(got.owner, alice);
    assert_eq!(got.expires_at, got.created_at + 3600);
    // Another owner's response is absent, whoever asks.
    assert_eq!(store.get(&id, &bob).await.expect("get"), None);
    assert_eq!(store.get(&id, &Owner::Master).await.expect("get"), None);
    assert!(!store.delete(&id, &bob).await.expect("delete"));
    assert_eq!(store.get("resp_../x", &alice).await.expect("bad id"), None);
    // The same id from another owner (an upstream's ids are not sluice's to choose) never
    // replaces the first owner's response; the same owner's replaces it.
    store
        .put(new(&id, &bob, Some(content("bob's"))))
        .await
        .expect("put");
    let got = store
        .get(&id, &alice)
        .await
        .expect("get")
        .expect("still alice's");
    assert_eq!(got.kept, Kept::Content(content("one")));
    assert_eq!(store.get(&id, &bob).await.expect("get"), None);
    store
        .put(new(&id, &alice, Some(content("one"))))
        .await
        .expect("put again");

    // `store: false` and too large: known, without content, not deletable.
    let off = format!("{id}_off");
    store
        .put(new(&off, &Owner::Master, None))
        .await
        .expect("put");
    let got = store
        .get(&off, &Owner::Master)
        .await
        .expect("get")
        .expect("known");
    assert_eq!(got.kept, Kept::Withheld(Withheld::NotStored));
    assert!(!store.delete(&off, &Owner::Master).await.expect("delete"));
    let big = format!("{id}_big");
    store
        .put(new(&big, &alice, Some(content(&"x".repeat(1000)))))
        .await
        .expect("put");
    let got = store.get(&big, &alice).await.expect("get").expect("known");
    assert_eq!(got.kept, Kept::Withheld(Withheld::TooLarge));

    // Deleted: absent.
    assert!(store.delete(&id, &alice).await.expect("delete"));
    assert_eq!(store.get(&id, &alice).await.expect("get"), None);
    assert!(!store.delete(&id, &alice).await.expect("delete again"));

    // Expired: absent, then purged.
    let old = format!("{id}_old");
    let mut n = new(&old, &alice, Some(content("old")));
    n.created_at -= 7200;
    store.put(n).await.expect("put");
    assert_eq!(store.get(&old, &alice).await.expect("get"), None);
    assert!(store.purge_expired().await.expect("purge") >= 1);
    store.check().await.expect("check");
}

#[tokio::test]
async fn sqlite_stores_responses_and_keeps_them_across_a_reopen() {
    let dir = TempDir::new();
    let store = sqlite_store(&dir);
    exercise(&store).await;
    // A write not awaited is done all the same, and a reopened file has it.
    let id = "resp_kept";
    drop(store.put(new(id, &Owner::Master, Some(content("kept")))));
    drop(store);
    let again = sqlite_store(&dir);
    let got = again
        .get(id, &Owner::Master)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(got.kept, Kept::Content(content("kept")));
}

#[tokio::test]
async fn postgres_stores_responses_and_two_stores_share_them() {
    let schema = TestSchema::new().await;
    let a = schema.store();
    exercise(&a).await;
    let b = schema.store();
    let owner = Owner::Key("key_shared".into());
    a.put(new("resp_shared", &owner, Some(content("shared"))))
        .await
        .expect("put");
    let got = b
        .get("resp_shared", &owner)
        .await
        .expect("get")
        .expect("shared");
    assert_eq!(got.kept, Kept::Content(content("shared")));
    assert!(b.delete("resp_shared", &owner).await.expect("delete"));
    assert_eq!(a.get("resp_shared", &owner).await.expect("get"), None);
}
