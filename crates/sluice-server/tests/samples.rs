//! Payload sampling (`[observability] sample_rate`) through a real gateway: a canary
//! route's requests kept with their answers, readable through `GET /admin/samples`, with
//! secrets and redacted values never kept; on the embedded SQLite file and on PostgreSQL
//! (`DATABASE_URL`, a schema of its own).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{start_with, Gateway};
use serde_json::{json, Value};
use sluice_testkit::client::TestClient;
use sluice_testkit::FakeUpstream;
use std::path::PathBuf;

const MASTER: &str = "sk-master-samples";
const SECRET: &str = "sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789ABCD";
const EMAIL: &str = "bob.smith@example.com";

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-samples-{name}-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh PostgreSQL schema (at `DATABASE_URL`) and the URL that selects it.
fn postgres_url() -> String {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!(
        "samples_{}_{}",
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
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}

/// Models `a` and `c` on `fake`, route `r` with `c` as a 50 % canary and the `pii`
/// guardrail (emails redacted), and `extra` appended.
fn config(fake: &FakeUpstream, dir: &std::path::Path, storage: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "{MASTER}"
[storage]
data_dir = "{dir}"
{storage}
[[guardrails]]
name = "pii"
detectors = ["email"]
action = "redact"
[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
api_key = "sk-upstream"
[[models]]
name = "a"
provider = "fake"
upstream = "up-a"
[[models]]
name = "c"
provider = "fake"
upstream = "up-c"
[[routes]]
name = "r"
targets = ["a"]
guardrails = ["pii"]
canary = {{ target = "c", stages = [50] }}
{extra}
"#,
        dir = dir.display(),
        upstream = fake.base_url(),
    )
}

async fn call(
    gw: &Gateway,
    path: &str,
    body: Option<Value>,
    key: &str,
) -> sluice_testkit::TestResponse {
    let auth = format!("Bearer {key}");
    let (method, body) = match body {
        Some(b) => (http::Method::POST, b.to_string().into()),
        None => (http::Method::GET, bytes::Bytes::new()),
    };
    TestClient::new()
        .request(method, &gw.url(path), body, &[("authorization", &auth)])
        .await
        .unwrap()
}

fn chat(stream: bool) -> Value {
    json!({
        "model": "r",
        "stream": stream,
        "messages": [{"role": "user", "content": format!("mail {EMAIL} with the key {SECRET}")}],
    })
}

/// Every sample `GET /admin/samples?{query}` pages through, `limit` at a time.
async fn all_samples(gw: &Gateway, query: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/admin/samples?limit={limit}&{query}{cursor}");
        let r = call(gw, &path, None, MASTER).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.json();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit);
        out.extend(data.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

async fn canary_samples_are_kept_and_cleaned(storage: &str, name: &str) {
    let fake = FakeUpstream::start().await;
    let dir = data_dir(name);
    let gw = start_with(&config(
        &fake,
        &dir,
        storage,
        "[observability]\nsample_rate = 1.0\n",
    ))
    .await;
    let mut sides = Vec::new();
    for i in 0..12 {
        let r = TestClient::new()
            .request(
                http::Method::POST,
                &gw.url("/v1/chat/completions"),
                chat(false).to_string().into(),
                &[
                    ("authorization", &format!("Bearer {MASTER}")),
                    ("x-sluice-route-key", &format!("caller-{i}")),
                ],
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        sides.push(r.header("x-sluice-model").unwrap().to_string());
    }
    let r = call(&gw, "/v1/chat/completions", Some(chat(true)), MASTER).await;
    assert_eq!(r.status, 200);
    sides.push(r.header("x-sluice-model").unwrap().to_string());
    // Writes go on off the request path: wait for the thirteenth.
    let mut samples = Vec::new();
    for _ in 0..100 {
        samples = all_samples(&gw, "route=r", 5).await;
        if samples.len() == 13 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(samples.len(), 13, "{samples:#?}");
    // Newest first: the stream, without its answer.
    assert_eq!(samples[0]["response"], Value::Null);
    assert_eq!(samples[0]["request"]["stream"], true);
    let ids: std::collections::HashSet<&str> =
        samples.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 13);
    for s in &samples {
        assert_eq!(s["model"], "r");
        assert_eq!(s["route"], "r");
        assert_eq!(s["status"], 200);
        assert_eq!(s["endpoint"], "chat");
        assert_eq!(s["canary"], s["deployment"] == "c");
        let text = s.to_string();
        assert!(!text.contains(SECRET), "a secret was kept: {text}");
        assert!(!text.contains(EMAIL), "a redacted value was kept: {text}");
        assert!(!text.contains(MASTER));
    }
    for s in &samples[1..] {
        assert_eq!(s["response"]["object"], "chat.completion", "{s}");
        let content = s["request"]["messages"][0]["content"].as_str().unwrap();
        assert!(
            content.starts_with("mail [EMAIL_1] with the key"),
            "{content}"
        );
    }
    // The canary's answers and the stable target's, side by side.
    let on_c = sides.iter().filter(|s| *s == "c").count();
    assert!(on_c > 0 && on_c < 13, "{sides:?}");
    assert_eq!(
        all_samples(&gw, "route=r&deployment=c", 100).await.len(),
        on_c
    );
    let on_a = all_samples(&gw, "deployment=a", 100).await;
    assert!(on_a.iter().all(|s| s["canary"] == false));
    assert_eq!(all_samples(&gw, "model=nope", 100).await.len(), 0);

    // One request's sample, by its request id (what the console asks for a row).
    let id = samples[3]["request_id"].as_str().unwrap();
    let one = all_samples(&gw, &format!("request_id={id}"), 100).await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0], samples[3]);
    let metrics = call(&gw, "/metrics", None, MASTER).await.text();
    assert!(
        metrics.contains("sluice_samples_kept_total 13"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_samples_dropped_total{reason=\"queue_full\"} 0"));

    // Bad input: clear 400s; no master key, no data.
    for bad in [
        "cursor=abc",
        "cursor=5",
        "colour=red",
        "limit=0",
        "limit=1000",
        "route=%ZZ",
    ] {
        let r = call(&gw, &format!("/admin/samples?{bad}"), None, MASTER).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.json()["error"]["message"].as_str().is_some());
    }
    let r = call(&gw, "/admin/samples", None, "sk-wrong").await;
    assert_eq!(r.status, 401);
    assert!(!r.text().contains("chat.completion"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn canary_samples_are_kept_and_cleaned_on_sqlite() {
    canary_samples_are_kept_and_cleaned("", "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_samples_are_kept_and_cleaned_on_postgres() {
    let storage = format!("database_url = \"{}\"", postgres_url());
    canary_samples_are_kept_and_cleaned(&storage, "postgres").await;
}

#[tokio::test]
async fn without_a_rate_nothing_is_sampled() {
    let fake = FakeUpstream::start().await;
    let dir = data_dir("off");
    let gw = start_with(&config(&fake, &dir, "", "")).await;
    let r = call(&gw, "/v1/chat/completions", Some(chat(false)), MASTER).await;
    assert_eq!(r.status, 200);
    assert!(gw.state.samples.is_none());
    let r = call(&gw, "/admin/samples", None, MASTER).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("sample_rate"), "{}", r.text());
    assert!(!dir.join(sluice_store::open::SAMPLES_FILE).exists());
    let metrics = call(&gw, "/metrics", None, MASTER).await.text();
    assert!(!metrics.contains("sluice_samples_"), "{metrics}");
    let _ = std::fs::remove_dir_all(&dir);
}
