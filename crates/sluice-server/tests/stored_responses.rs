//! The Responses API's stored responses over HTTP: `GET`, `DELETE` and `input_items` of a
//! stored response, each key seeing only its own; `store: false` never retrievable;
//! `previous_response_id` across a gateway restart (a new gateway on the same data
//! directory) and across two gateways on one PostgreSQL (at `DATABASE_URL`).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::start_with;
use http::Method;
use serde_json::{json, Value};
use sluice_testkit::client::{post_stream, TestClient, TestResponse};
use sluice_testkit::FakeUpstream;
use std::path::PathBuf;

const MASTER: &str = "sk-admin";

fn data_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-stored-responses-{tag}-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway with a master key in front of `fake`, its state in `dir`, `storage` appended
/// to `[storage]`.
fn config(fake: &FakeUpstream, dir: &std::path::Path, storage: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "{MASTER}"
[storage]
data_dir = "{}"
{storage}
[[providers]]
name = "fake"
type = "openai"
base_url = "{}"
[[models]]
name = "m"
provider = "fake"
"#,
        dir.display(),
        fake.base_url()
    )
}

async fn call(
    gw: &common::Gateway,
    method: Method,
    path: &str,
    body: Value,
    key: &str,
) -> TestResponse {
    let auth = format!("Bearer {key}");
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let mut headers = vec![("authorization", auth.as_str())];
    if !body.is_empty() {
        headers.push(("content-type", "application/json"));
    }
    TestClient::new()
        .request(method, &gw.url(path), body.into(), &headers)
        .await
        .unwrap()
}

async fn create(gw: &common::Gateway, key: &str, body: Value) -> TestResponse {
    let r = call(gw, Method::POST, "/v1/responses", body, key).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

async fn get(gw: &common::Gateway, key: &str, path: &str) -> TestResponse {
    call(gw, Method::GET, path, Value::Null, key).await
}

async fn new_key(gw: &common::Gateway, name: &str) -> String {
    let r = call(
        gw,
        Method::POST,
        "/admin/keys",
        json!({"name": name}),
        MASTER,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_owned()
}

fn assert_not_found(r: &TestResponse, id: &str) {
    assert_eq!(r.status, 404, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["type"], "invalid_request_error");
    assert!(e["message"].as_str().unwrap().contains(id), "{e}");
}

fn ids(page: &Value) -> Vec<&str> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_stored_response_is_retrieved_listed_and_deleted_by_its_key_only() {
    let fake = FakeUpstream::start().await;
    let gw = start_with(&config(&fake, &data_dir("crud"), "")).await;
    let (alice, bob) = (new_key(&gw, "alice").await, new_key(&gw, "bob").await);
    let r = create(
        &gw,
        &alice,
        json!({"model": "m", "input": "Hello", "metadata": {"t": "1"}}),
    )
    .await;
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let got = get(&gw, &alice, &format!("/v1/responses/{id}")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json(), r.json());
    let got = get(
        &gw,
        &alice,
        &format!("/responses/{id}?include[]=message.input_image.image_url"),
    )
    .await;
    assert_eq!(got.json()["id"], id.as_str());
    let bad = get(&gw, &alice, &format!("/v1/responses/{id}?include=nope")).await;
    assert_eq!(
        (bad.status, bad.json()["error"]["param"].clone()),
        (400, json!("include"))
    );
    let items = get(&gw, &alice, &format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(
        items.json(),
        json!({"object": "list", "data": [{"id": format!("msg_{}_in0", &id[5..]), "type": "message",
               "role": "user", "content": [{"type": "input_text", "text": "Hello"}],
               "status": "completed"}],
               "first_id": format!("msg_{}_in0", &id[5..]), "last_id": format!("msg_{}_in0", &id[5..]),
               "has_more": false})
    );
    // Another key's response (or the master's look at it) is a 404, and stays.
    for (key, path) in [
        (&bob, format!("/v1/responses/{id}")),
        (&bob, format!("/v1/responses/{id}/input_items")),
        (&MASTER.to_owned(), format!("/v1/responses/{id}")),
    ] {
        assert_not_found(&get(&gw, key, &path).await, &id);
    }
    assert_not_found(
        &call(
            &gw,
            Method::DELETE,
            &format!("/v1/responses/{id}"),
            Value::Null,
            &bob,
        )
        .await,
        &id,
    );
    let cont = json!({"model": "m", "input": "again", "previous_response_id": id});
    assert_eq!(
        call(&gw, Method::POST, "/v1/responses", cont.clone(), &bob)
            .await
            .status,
        404
    );
    // Deleted: gone for good.
    let d = call(
        &gw,
        Method::DELETE,
        &format!("/v1/responses/{id}"),
        Value::Null,
        &alice,
    )
    .await;
    assert_eq!(
        d.json(),
        json!({"id": id, "object": "response", "deleted": true})
    );
    assert_not_found(&get(&gw, &alice, &format!("/v1/responses/{id}")).await, &id);
    assert_not_found(
        &call(
            &gw,
            Method::DELETE,
            &format!("/v1/responses/{id}"),
            Value::Null,
            &alice,
        )
        .await,
        &id,
    );
    assert_eq!(
        call(&gw, Method::POST, "/v1/responses", cont, &alice)
            .await
            .status,
        404
    );
    assert_eq!(
        get(&gw, &alice, "/v1/responses/resp_nope/other")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn store_false_is_never_retrievable() {
    let fake = FakeUpstream::start().await;
    let gw = start_with(&config(&fake, &data_dir("nostore"), "")).await;
    let r = create(
        &gw,
        MASTER,
        json!({"model": "m", "input": "x", "store": false}),
    )
    .await;
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_not_found(&get(&gw, MASTER, &format!("/v1/responses/{id}")).await, &id);
    assert_not_found(
        &get(&gw, MASTER, &format!("/v1/responses/{id}/input_items")).await,
        &id,
    );
    assert_not_found(
        &call(
            &gw,
            Method::DELETE,
            &format!("/v1/responses/{id}"),
            Value::Null,
            MASTER,
        )
        .await,
        &id,
    );
    let r = call(
        &gw,
        Method::POST,
        "/v1/responses",
        json!({"model": "m", "input": "y", "previous_response_id": id}),
        MASTER,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("store: false"));
}

#[tokio::test]
async fn input_items_follow_the_conversation_and_page_by_cursor() {
    let fake = FakeUpstream::start().await;
    let gw = start_with(&config(&fake, &data_dir("items"), "")).await;
    let r1 = create(&gw, MASTER, json!({"model": "m", "input": "one"})).await;
    let id1 = r1.json()["id"].as_str().unwrap().to_owned();
    // The second turn streams: it is stored when its stream completes.
    let body = json!({"model": "m", "previous_response_id": id1, "stream": true, "input": [
        {"role": "user", "content": "two"}, {"role": "user", "content": [{"type": "input_text", "text": "three"}]}]});
    let auth = format!("Bearer {MASTER}");
    let mut s = post_stream(
        &gw.url("/v1/responses"),
        body.to_string(),
        &[("authorization", &auth)],
    )
    .await
    .unwrap();
    let raw = String::from_utf8(s.collect_body().await.unwrap().to_vec()).unwrap();
    assert!(raw.contains("response.completed"), "{raw}");
    let done: Value = raw
        .split("\n\n")
        .filter_map(|b| b.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .last()
        .unwrap();
    let id2 = done["response"]["id"].as_str().unwrap().to_owned();
    let stored = get(&gw, MASTER, &format!("/v1/responses/{id2}")).await;
    assert_eq!(stored.json(), done["response"]);
    let (h1, h2) = (&id1[5..], &id2[5..]);
    let all = [
        format!("msg_{h1}_in0"),
        format!("msg_{h1}_0"),
        format!("msg_{h2}_in0"),
        format!("msg_{h2}_in1"),
    ];
    let page = get(
        &gw,
        MASTER,
        &format!("/v1/responses/{id2}/input_items?order=asc"),
    )
    .await
    .json();
    assert_eq!(
        ids(&page),
        all.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(page["data"][1]["role"], "assistant");
    assert_eq!(
        page["data"][2]["content"],
        json!([{"type": "input_text", "text": "two"}])
    );
    // Newest first by default, two at a time.
    let p1 = get(
        &gw,
        MASTER,
        &format!("/v1/responses/{id2}/input_items?limit=2"),
    )
    .await
    .json();
    assert_eq!(ids(&p1), [all[3].as_str(), all[2].as_str()]);
    assert_eq!(
        (p1["has_more"].clone(), p1["last_id"].clone()),
        (json!(true), json!(all[2]))
    );
    let p2 = get(
        &gw,
        MASTER,
        &format!("/v1/responses/{id2}/input_items?limit=2&after={}", all[2]),
    )
    .await
    .json();
    assert_eq!(ids(&p2), [all[1].as_str(), all[0].as_str()]);
    assert_eq!(p2["has_more"], false);
    let bad = get(
        &gw,
        MASTER,
        &format!("/v1/responses/{id2}/input_items?limit=500"),
    )
    .await;
    assert_eq!(
        (bad.status, bad.json()["error"]["param"].clone()),
        (400, json!("limit"))
    );
}

#[tokio::test]
async fn previous_response_id_survives_a_gateway_restart() {
    let fake = FakeUpstream::start().await;
    let dir = data_dir("restart");
    let mut gw = start_with(&config(&fake, &dir, "")).await;
    let key = new_key(&gw, "k").await;
    let r = create(&gw, &key, json!({"model": "m", "input": "My name is Ann."})).await;
    let id = r.json()["id"].as_str().unwrap().to_owned();
    gw.begin_shutdown().await.unwrap().unwrap();
    drop(gw);
    let gw = start_with(&config(&fake, &dir, "")).await;
    assert_eq!(
        get(&gw, &key, &format!("/v1/responses/{id}")).await.json(),
        r.json()
    );
    create(
        &gw,
        &key,
        json!({"model": "m", "input": "Name?", "previous_response_id": id}),
    )
    .await;
    let sent = fake.last_request().unwrap().json().unwrap();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "user", "content": "My name is Ann."})
    );
    assert_eq!(sent["messages"][1]["role"], "assistant");
    assert_eq!(
        sent["messages"][2],
        json!({"role": "user", "content": "Name?"})
    );
}

/// A fresh PostgreSQL schema (at `DATABASE_URL`) and the URL that selects it.
fn postgres_schema() -> (String, String) {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!(
        "resp_{}_{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    );
    let out = std::process::Command::new("psql")
        .args([&base, "-X", "-q", "-c", &format!("CREATE SCHEMA {schema}")])
        .output()
        .expect("psql is installed (test.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sep = if base.contains('?') { '&' } else { '?' };
    (
        format!("{base}{sep}options=-csearch_path%3D{schema}"),
        schema,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_postgres_continue_each_others_responses() {
    let fake = FakeUpstream::start().await;
    let (database, schema) = postgres_schema();
    let storage = format!("database_url = \"{database}\"");
    let a = start_with(&config(&fake, &data_dir("pg-a"), &storage)).await;
    let b = start_with(&config(&fake, &data_dir("pg-b"), &storage)).await;
    let (key, other) = (new_key(&a, "tenant").await, new_key(&a, "other").await);
    let r1 = create(&a, &key, json!({"model": "m", "input": "one"})).await;
    let id1 = r1.json()["id"].as_str().unwrap().to_owned();
    let r2 = create(
        &b,
        &key,
        json!({"model": "m", "input": "two", "previous_response_id": id1}),
    )
    .await;
    let id2 = r2.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        fake.last_request().unwrap().json().unwrap()["messages"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    create(
        &a,
        &key,
        json!({"model": "m", "input": "three", "previous_response_id": id2}),
    )
    .await;
    assert_eq!(
        fake.last_request().unwrap().json().unwrap()["messages"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        get(&a, &key, &format!("/v1/responses/{id2}")).await.json(),
        r2.json()
    );
    assert_not_found(
        &get(&b, &other, &format!("/v1/responses/{id1}")).await,
        &id1,
    );
    let d = call(
        &b,
        Method::DELETE,
        &format!("/v1/responses/{id1}"),
        Value::Null,
        &key,
    )
    .await;
    assert_eq!(d.json()["deleted"], true);
    assert_not_found(&get(&a, &key, &format!("/v1/responses/{id1}")).await, &id1);
    drop((a, b));
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let _ = std::process::Command::new("psql")
        .args([
            &base,
            "-X",
            "-q",
            "-c",
            &format!("DROP SCHEMA {schema} CASCADE"),
        ])
        .output();
}
