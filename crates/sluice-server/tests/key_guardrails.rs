//! Guardrails carried by a virtual key (issue 19): set through the admin API, checked
//! against `[[guardrails]]`, stored with the key (SQLite, and PostgreSQL at
//! `DATABASE_URL`), applied besides the model's (each once), and a key whose guardrail
//! left the config refused (503, fail closed). Real gateways on loopback in front of the
//! fake upstream.

#![allow(clippy::unwrap_used)]

mod common;

use common::{start_with, Gateway};
use http::Method;
use serde_json::{json, Value};
use sluice_testkit::client::{TestClient, TestResponse};
use sluice_testkit::FakeUpstream;

const MASTER: &str = "sk-master-test";

const GUARDS: &str = r#"
[[guardrails]]
name = "pii"
detectors = ["email"]
action = "block"
[[guardrails]]
name = "audit"
detectors = ["email"]
action = "log"
[[guardrails]]
name = "shape"
validate_json = { retries = 0 }
"#;

/// A fresh data directory.
fn data_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-keyguard-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway config: models `m` (no guardrails) and `g` (`audit`, when `guards` has it),
/// the ledger in `dir` or at `database`, and `guards`.
fn config(upstream: &str, dir: &std::path::Path, database: Option<&str>, guards: &str) -> String {
    let storage = database.map_or(String::new(), |d| format!("database_url = \"{d}\""));
    let g = if guards.contains("\"audit\"") {
        "guardrails = [\"audit\"]"
    } else {
        ""
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "{MASTER}"
[storage]
data_dir = "{dir}"
{storage}
[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
api_key = "sk-upstream"
[[models]]
name = "m"
provider = "fake"
[[models]]
name = "g"
provider = "fake"
{g}
{guards}
"#,
        dir = dir.display(),
    )
}

async fn call(gw: &Gateway, method: Method, path: &str, body: Value, key: &str) -> TestResponse {
    let auth = format!("Bearer {key}");
    TestClient::new()
        .request(
            method,
            &gw.url(path),
            bytes::Bytes::from(body.to_string()),
            &[("authorization", auth.as_str())],
        )
        .await
        .expect("request")
}

async fn admin(gw: &Gateway, method: Method, path: &str, body: Value) -> TestResponse {
    call(gw, method, path, body, MASTER).await
}

async fn chat_as(gw: &Gateway, key: &str, model: &str, text: &str) -> TestResponse {
    let body = json!({"model": model, "messages": [{"role": "user", "content": text}]});
    call(gw, Method::POST, "/v1/chat/completions", body, key).await
}

const EMAIL: &str = "write to ann@example.com please";

/// The whole scenario, on the ledger `database` selects (`None`: SQLite in a data dir).
async fn key_guardrails(database: Option<&str>) {
    let fake = FakeUpstream::start().await;
    let dir = data_dir();
    let gw = start_with(&config(&fake.base_url(), &dir, database, GUARDS)).await;

    // An unknown name is refused at creation and at update.
    let r = admin(
        &gw,
        Method::POST,
        "/admin/keys",
        json!({"name": "x", "guardrails": ["pii", "nope"]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("`nope`"), "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "guardrails");

    let r = admin(
        &gw,
        Method::POST,
        "/admin/keys",
        json!({"name": "guarded", "guardrails": ["pii"]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["guardrails"], json!(["pii"]));
    let guarded = r.json()["key"].as_str().unwrap().to_string();
    let r = admin(&gw, Method::POST, "/admin/keys", json!({"name": "plain"})).await;
    assert_eq!(r.json()["guardrails"], json!([]));
    let plain = r.json()["key"].as_str().unwrap().to_string();

    // The key's guardrail applies to a model that has none; another key's requests pass.
    let r = chat_as(&gw, &guarded, "m", EMAIL).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "guardrail_blocked");
    assert_eq!(fake.request_count(), 0, "nothing sent upstream");
    let r = chat_as(&gw, &plain, "m", EMAIL).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fake.request_count(), 1);

    // A key's `validate_json` guardrail checks its structured answers.
    let r = admin(
        &gw,
        Method::POST,
        "/admin/keys",
        json!({"name": "shaped", "guardrails": ["shape"]}),
    )
    .await;
    let shaped = r.json()["key"].as_str().unwrap().to_string();
    let structured = json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
        "x_fake": {"content": "not JSON"}
    });
    let path = "/v1/chat/completions";
    let r = call(&gw, Method::POST, path, structured.clone(), &shaped).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "output_validation_failed");
    let r = call(&gw, Method::POST, path, structured, &plain).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A PATCH to an unknown name changes nothing; to `audit`, the model's own: applied once.
    let r = admin(
        &gw,
        Method::PATCH,
        "/admin/keys/guarded",
        json!({"guardrails": ["ghost"]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = admin(
        &gw,
        Method::PATCH,
        "/admin/keys/guarded",
        json!({"guardrails": ["audit"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["guardrails"], json!(["audit"]));
    let r = admin(&gw, Method::GET, "/admin/keys/guarded", Value::Null).await;
    assert_eq!(r.json()["guardrails"], json!(["audit"]), "stored");
    let r = chat_as(&gw, &guarded, "g", EMAIL).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    let last = records
        .iter()
        .rev()
        .find(|r| r.model.as_deref() == Some("g"));
    assert_eq!(
        last.and_then(|r| r.guardrails.as_deref()),
        Some("audit:email:log=1"),
        "the model's and the key's `audit` ran once"
    );

    // Back to `pii`; then a gateway on the same store whose config has no `pii` refuses the
    // key's requests (503) rather than sending what it would have blocked.
    let r = admin(
        &gw,
        Method::PATCH,
        "/admin/keys/guarded",
        json!({"guardrails": ["pii"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let other = start_with(&config(&fake.base_url(), &dir, database, "")).await;
    let before = fake.request_count();
    let r = chat_as(&other, &guarded, "m", "hello").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("`pii`"), "{}", r.text());
    assert_eq!(fake.request_count(), before, "nothing sent upstream");
    let r = chat_as(&other, &plain, "m", "hello").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Clearing the key's guardrails lets it through again.
    let r = call(
        &other,
        Method::PATCH,
        "/admin/keys/guarded",
        json!({"guardrails": null}),
        MASTER,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = chat_as(&other, &guarded, "m", "hello").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_guardrails_on_sqlite() {
    key_guardrails(None).await;
}

/// A fresh PostgreSQL schema (at `DATABASE_URL`) and the URL that selects it.
fn postgres_schema() -> (String, String) {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!(
        "keyguard_{}_{}",
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
async fn key_guardrails_on_postgres() {
    let (database, schema) = postgres_schema();
    key_guardrails(Some(&database)).await;
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
