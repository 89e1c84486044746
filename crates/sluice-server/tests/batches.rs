//! `/v1/batches` over real loopback HTTP, run by sluice itself against fake upstreams: a
//! batch of 1,000 lines over a route whose first target fails, every line answered once;
//! malformed lines reported per line; cancel mid-run; per-key ownership; refusals at create;
//! lines of every endpoint (completions, moderations, embeddings, responses); a batch whose
//! completion window passes mid-run (`expired`); lines waiting for interactive traffic
//! (`yield_above`).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::Method;
use serde_json::{json, Value};
use sluice_testkit::client::TestClient;
use sluice_testkit::{Behavior, FakeUpstream, TestResponse};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MASTER: &str = "sk-master-batches";
const BOUNDARY: &str = "batches-boundary-1f2e";

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-batches-{name}-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway with a master key in front of fakes `a` and `b` (models `a`, `b`; route `r`:
/// `a`, then `b`), its data in `dir`, `extra` TOML appended.
async fn gateway(dir: &Path, a: &FakeUpstream, b: &FakeUpstream, extra: &str) -> Gateway {
    start_with(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "{MASTER}"
[storage]
data_dir = "{dir}"
{extra}
[[providers]]
name = "pa"
type = "openai"
base_url = "{a}"
[[providers]]
name = "pb"
type = "openai"
base_url = "{b}"
[[models]]
name = "a"
provider = "pa"
price = {{ input = 1.0, output = 2.0 }}
[[models]]
name = "b"
provider = "pb"
price = {{ input = 1.0, output = 2.0 }}
[[routes]]
name = "r"
strategy = "fallback"
targets = ["a", "b"]
"#,
        dir = dir.display(),
        a = a.base_url(),
        b = b.base_url(),
    ))
    .await
}

async fn call(
    gw: &Gateway,
    method: Method,
    path: &str,
    body: Vec<u8>,
    key: &str,
    ct: &str,
) -> TestResponse {
    let auth = format!("Bearer {key}");
    let mut headers = vec![("authorization", auth.as_str())];
    if !body.is_empty() {
        headers.push(("content-type", ct));
    }
    TestClient::new()
        .with_timeout(Duration::from_secs(60))
        .request(method, &gw.url(path), body.into(), &headers)
        .await
        .expect("request")
}

async fn upload(gw: &Gateway, key: &str, purpose: &str, name: &str, data: &[u8]) -> String {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let r = call(gw, Method::POST, "/v1/files", body, key, &ct).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

async fn post(gw: &Gateway, path: &str, body: Value, key: &str) -> TestResponse {
    call(
        gw,
        Method::POST,
        path,
        body.to_string().into_bytes(),
        key,
        "application/json",
    )
    .await
}

async fn get(gw: &Gateway, path: &str, key: &str) -> TestResponse {
    call(gw, Method::GET, path, Vec::new(), key, "").await
}

async fn create(gw: &Gateway, key: &str, file: &str, endpoint: &str) -> Value {
    let body = json!({"input_file_id": file, "endpoint": endpoint, "completion_window": "24h", "metadata": {"run": "t"}});
    let r = post(gw, "/v1/batches", body, key).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Polls the batch until `done(status)`, within `within`.
async fn wait_for(
    gw: &Gateway,
    key: &str,
    id: &str,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> Value {
    let until = Instant::now() + within;
    loop {
        let b = get(gw, &format!("/v1/batches/{id}"), key).await.json();
        if done(b["status"].as_str().unwrap()) {
            return b;
        }
        assert!(Instant::now() < until, "batch not done in time: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A file's lines as JSON.
async fn lines(gw: &Gateway, key: &str, id: &Value) -> Vec<Value> {
    let Some(id) = id.as_str() else {
        return Vec::new();
    };
    let r = get(gw, &format!("/v1/files/{id}/content"), key).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn chat_line(id: &str, model: &str) -> String {
    json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": model, "messages": [{"role": "user", "content": format!("hello {id}")}]}})
    .to_string()
}

async fn spend_of(gw: &Gateway, batch: &str) -> Vec<sluice_store::SpendRecord> {
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let all = ledger.export(0).await.unwrap();
    all.into_iter()
        .filter(|r| r.batch_id.as_deref() == Some(batch))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_legacy_completions_runs_through_the_pipeline() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let dir = data_dir("completions");
    let gw = gateway(&dir, &fa, &fb, "").await;
    let input: Vec<String> = (0..3)
        .map(|i| {
            json!({"custom_id": format!("c-{i}"), "method": "POST", "url": "/v1/completions",
                   "body": {"model": "a", "prompt": format!("Once upon a time {i}")}})
            .to_string()
        })
        .collect();
    let file = upload(
        &gw,
        MASTER,
        "batch",
        "in.jsonl",
        input.join("\n").as_bytes(),
    )
    .await;
    let id = create(&gw, MASTER, &file, "/v1/completions").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = wait_for(&gw, MASTER, &id, Duration::from_secs(60), |s| {
        s == "completed"
    })
    .await;
    assert_eq!(b["request_counts"]["completed"], 3, "{b}");
    for l in lines(&gw, MASTER, &b["output_file_id"]).await {
        assert_eq!(l["response"]["body"]["object"], "text_completion", "{l}");
    }
    assert_eq!(fa.request_count(), 3);
    let spend = spend_of(&gw, &id).await;
    assert_eq!(spend.len(), 3);
    assert!(spend.iter().all(|r| r.endpoint == "completions"));
}

#[tokio::test]
async fn a_batch_of_moderations_runs_through_the_pipeline() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let dir = data_dir("moderations");
    let gw = gateway(&dir, &fa, &fb, "").await;
    let input: Vec<String> = (0..3)
        .map(|i| {
            json!({"custom_id": format!("m-{i}"), "method": "POST", "url": "/v1/moderations",
                   "body": {"model": "a", "input": format!("text {i}")}})
            .to_string()
        })
        .collect();
    let file = upload(
        &gw,
        MASTER,
        "batch",
        "in.jsonl",
        input.join("\n").as_bytes(),
    )
    .await;
    let id = create(&gw, MASTER, &file, "/v1/moderations").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = wait_for(&gw, MASTER, &id, Duration::from_secs(60), |s| {
        s == "completed"
    })
    .await;
    assert_eq!(b["request_counts"]["completed"], 3, "{b}");
    for l in lines(&gw, MASTER, &b["output_file_id"]).await {
        assert!(l["response"]["body"]["results"].is_array(), "{l}");
    }
    let spend = spend_of(&gw, &id).await;
    assert_eq!(spend.len(), 3);
    assert!(spend.iter().all(|r| r.endpoint == "moderations"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_lines_over_a_failing_first_target_are_each_answered_once() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    fa.set_default(Behavior::new().with_status(500));
    let dir = data_dir("thousand");
    let gw = gateway(&dir, &fa, &fb, "[batches]\nconcurrency = 16").await;
    let input: Vec<String> = (0..1000)
        .map(|i| chat_line(&format!("req-{i}"), "r"))
        .collect();
    let file = upload(
        &gw,
        MASTER,
        "batch",
        "in.jsonl",
        input.join("\n").as_bytes(),
    )
    .await;
    let b = create(&gw, MASTER, &file, "/v1/chat/completions").await;
    assert_eq!(b["object"], "batch");
    assert_eq!(b["metadata"], json!({"run": "t"}));
    let id = b["id"].as_str().unwrap();
    let b = wait_for(&gw, MASTER, id, Duration::from_secs(120), |s| {
        s == "completed"
    })
    .await;
    assert_eq!(
        b["request_counts"],
        json!({"total": 1000, "completed": 1000, "failed": 0}),
        "{b}"
    );
    assert!(b["error_file_id"].is_null(), "{b}");
    for at in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(b[at].as_u64().is_some(), "{at}: {b}");
    }
    let out = lines(&gw, MASTER, &b["output_file_id"]).await;
    assert_eq!(out.len(), 1000);
    let ids: HashSet<&str> = out
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        (0..1000)
            .map(|i| format!("req-{i}"))
            .collect::<HashSet<_>>()
            .iter()
            .map(String::as_str)
            .collect()
    );
    for l in &out {
        assert_eq!(l["response"]["status_code"], 200, "{l}");
        assert_eq!(l["response"]["body"]["object"], "chat.completion", "{l}");
        assert!(l["error"].is_null());
        assert!(l["id"].as_str().unwrap().starts_with("batch_req_"));
    }
    // Every line was answered by `b` once, whatever `a` did.
    assert_eq!(fb.request_count(), 1000);
    let spend = spend_of(&gw, id).await;
    assert_eq!(spend.len(), 1000);
    assert!(spend
        .iter()
        .all(|r| r.status == 200 && r.route.as_deref() == Some("r")));
    let request_ids: HashSet<&str> = spend.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(request_ids.len(), 1000);
    // The output file is the owner's, purpose batch_output.
    let f = get(
        &gw,
        &format!("/v1/files/{}", b["output_file_id"].as_str().unwrap()),
        MASTER,
    )
    .await
    .json();
    assert_eq!(f["purpose"], "batch_output");
    let metrics = get(&gw, "/metrics", MASTER).await.text();
    assert!(
        metrics.contains("sluice_batch_lines_total{outcome=\"completed\"} 1000"),
        "{metrics}"
    );
}

#[tokio::test]
async fn malformed_lines_are_reported_per_line() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let dir = data_dir("malformed");
    let gw = gateway(&dir, &fa, &fb, "").await;
    let input = [
        chat_line("ok-1", "b"),
        "this is not json".to_string(),
        json!({"method": "POST", "url": "/v1/chat/completions", "body": {}}).to_string(),
        json!({"custom_id": "other", "method": "POST", "url": "/v1/embeddings", "body": {"model": "b", "input": "x"}}).to_string(),
        json!({"custom_id": "notobj", "method": "POST", "url": "/v1/chat/completions", "body": "hi"}).to_string(),
        chat_line("ok-1", "b"),
        String::new(),
        chat_line("unknown-model", "nope"),
        chat_line("ok-2", "b"),
    ];
    let file = upload(
        &gw,
        MASTER,
        "batch",
        "in.jsonl",
        input.join("\n").as_bytes(),
    )
    .await;
    let b = create(&gw, MASTER, &file, "/v1/chat/completions").await;
    let id = b["id"].as_str().unwrap();
    let b = wait_for(&gw, MASTER, id, Duration::from_secs(30), |s| {
        s == "completed"
    })
    .await;
    assert_eq!(
        b["request_counts"],
        json!({"total": 8, "completed": 2, "failed": 6}),
        "{b}"
    );
    let out = lines(&gw, MASTER, &b["output_file_id"]).await;
    let ok: Vec<&str> = out
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ok, ["ok-1", "ok-2"]);
    let errors = lines(&gw, MASTER, &b["error_file_id"]).await;
    let codes: Vec<(Value, Value)> = errors
        .iter()
        .map(|l| (l["custom_id"].clone(), l["error"]["code"].clone()))
        .collect();
    assert_eq!(
        codes,
        [
            (Value::Null, json!("invalid_json")),
            (Value::Null, json!("missing_custom_id")),
            (json!("other"), json!("mismatched_endpoint")),
            (json!("notobj"), json!("invalid_body")),
            (json!("ok-1"), json!("duplicate_custom_id")),
            (json!("unknown-model"), Value::Null),
        ]
    );
    assert!(
        errors[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{}",
        errors[0]
    );
    // A line answered with an error keeps its answer, as OpenAI's error files do.
    let answered = &errors[5]["response"];
    assert_eq!(answered["status_code"], 404, "{answered}");
    assert!(
        answered["body"]["error"]["message"].as_str().is_some(),
        "{answered}"
    );
    assert_eq!(fb.request_count(), 2);
    // An unknown model is refused before any tab is opened, as for a client's request.
    assert_eq!(spend_of(&gw, id).await.len(), 2);
}

#[tokio::test]
async fn create_refuses_what_cannot_run() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let dir = data_dir("refusals");
    let gw = gateway(&dir, &fa, &fb, "").await;
    let notes = upload(&gw, MASTER, "user_data", "notes.txt", b"notes").await;
    for (body, param) in [
        (
            json!({"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
            "input_file_id",
        ),
        (
            json!({"input_file_id": notes, "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
            "input_file_id",
        ),
        (
            json!({"input_file_id": notes, "endpoint": "/v1/audio/speech", "completion_window": "24h"}),
            "endpoint",
        ),
        (
            json!({"input_file_id": notes, "endpoint": "/v1/embeddings", "completion_window": "1h"}),
            "completion_window",
        ),
    ] {
        let r = post(&gw, "/v1/batches", body.clone(), MASTER).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], param, "{body}");
    }
    let r = get(&gw, "/v1/batches/batch_nope", MASTER).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "batch_not_found");
    let r = get(&gw, "/v1/batches", "sk-wrong").await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn cancel_stops_dispatching_and_writes_what_was_done() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    fb.set_default(Behavior::new().with_delay_ms(100));
    let dir = data_dir("cancel");
    let gw = gateway(&dir, &fa, &fb, "[batches]\nconcurrency = 2").await;
    let input: Vec<String> = (0..60).map(|i| chat_line(&format!("c-{i}"), "b")).collect();
    let file = upload(
        &gw,
        MASTER,
        "batch",
        "in.jsonl",
        input.join("\n").as_bytes(),
    )
    .await;
    let id = create(&gw, MASTER, &file, "/v1/chat/completions").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(&gw, MASTER, &id, Duration::from_secs(30), |s| {
        s == "in_progress"
    })
    .await;
    assert!(fb.wait_requests(4, Duration::from_secs(10)).await);
    let r = post(&gw, &format!("/v1/batches/{id}/cancel"), json!({}), MASTER).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        matches!(
            r.json()["status"].as_str(),
            Some("cancelling" | "cancelled")
        ),
        "{}",
        r.text()
    );
    let b = wait_for(&gw, MASTER, &id, Duration::from_secs(30), |s| {
        s == "cancelled"
    })
    .await;
    assert!(b["cancelling_at"].as_u64().is_some() && b["cancelled_at"].as_u64().is_some());
    let done = b["request_counts"]["completed"].as_u64().unwrap();
    assert!((4..60).contains(&done), "{b}");
    // Only the lines that ran reached the upstream; every other line is in the error file.
    assert_eq!(fb.request_count() as u64, done);
    let out = lines(&gw, MASTER, &b["output_file_id"]).await;
    let errors = lines(&gw, MASTER, &b["error_file_id"]).await;
    assert_eq!(out.len() as u64, done);
    assert_eq!(out.len() + errors.len(), 60);
    assert!(errors
        .iter()
        .all(|l| l["error"]["code"] == "batch_cancelled"));
    let all: HashSet<&str> = out
        .iter()
        .chain(&errors)
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(all.len(), 60);
    assert_eq!(spend_of(&gw, &id).await.len() as u64, done);
    // A batch that has ended cannot be cancelled again: it stays as it is.
    let r = post(&gw, &format!("/v1/batches/{id}/cancel"), json!({}), MASTER).await;
    assert_eq!(r.json()["status"], "cancelled");
}

async fn new_key(gw: &Gateway, name: &str) -> (String, String) {
    let r = post(gw, "/admin/keys", json!({ "name": name }), MASTER).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    (
        v["key"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_batch_is_its_keys_and_runs_as_that_key() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let dir = data_dir("owners");
    let gw = gateway(&dir, &fa, &fb, "").await;
    let (alice, alice_id) = new_key(&gw, "alice").await;
    let (bob, _) = new_key(&gw, "bob").await;
    let input = [chat_line("x", "b"), chat_line("y", "b")].join("\n");
    let file = upload(&gw, &alice, "batch", "in.jsonl", input.as_bytes()).await;
    // Bob cannot use Alice's file...
    let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let r = post(&gw, "/v1/batches", body, &bob).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "input_file_id");
    let id = create(&gw, &alice, &file, "/v1/chat/completions").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // ...nor see, list or cancel Alice's batch.
    assert_eq!(
        get(&gw, &format!("/v1/batches/{id}"), &bob).await.status,
        404
    );
    assert_eq!(
        post(&gw, &format!("/v1/batches/{id}/cancel"), json!({}), &bob)
            .await
            .status,
        404
    );
    assert_eq!(
        get(&gw, "/v1/batches", &bob).await.json()["data"],
        json!([])
    );
    let listed = get(&gw, "/v1/batches?limit=5", &alice).await.json();
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert_eq!(listed["has_more"], false);
    let b = wait_for(&gw, &alice, &id, Duration::from_secs(30), |s| {
        s == "completed"
    })
    .await;
    let out = b["output_file_id"].as_str().unwrap();
    assert_eq!(
        get(&gw, &format!("/v1/files/{out}/content"), &bob)
            .await
            .status,
        404
    );
    assert_eq!(lines(&gw, &alice, &b["output_file_id"]).await.len(), 2);
    // The lines ran as Alice's key.
    let spend = spend_of(&gw, &id).await;
    assert_eq!(spend.len(), 2);
    assert!(spend
        .iter()
        .all(|r| r.key_id.as_deref() == Some(alice_id.as_str())));
}

#[tokio::test]
async fn a_key_revoked_mid_batch_stops_it() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    fb.set_default(Behavior::new().with_delay_ms(100));
    let dir = data_dir("revoked");
    let gw = gateway(&dir, &fa, &fb, "[batches]\nconcurrency = 1").await;
    let (alice, alice_id) = new_key(&gw, "alice").await;
    let input: Vec<String> = (0..40).map(|i| chat_line(&format!("k-{i}"), "b")).collect();
    let file = upload(
        &gw,
        &alice,
        "batch",
        "in.jsonl",
        input.join("\n").as_bytes(),
    )
    .await;
    let id = create(&gw, &alice, &file, "/v1/chat/completions").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(fb.wait_requests(3, Duration::from_secs(10)).await);
    let r = call(
        &gw,
        Method::DELETE,
        &format!("/admin/keys/{alice_id}"),
        Vec::new(),
        MASTER,
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The key no longer reads its batch; the master sees it in the store.
    let until = Instant::now() + Duration::from_secs(30);
    let b = loop {
        let b = gw
            .state
            .batches
            .as_ref()
            .unwrap()
            .store
            .get_any(&id)
            .await
            .unwrap()
            .unwrap();
        if b.status == sluice_store::batches::BatchStatus::Failed {
            break b;
        }
        assert!(Instant::now() < until, "not stopped: {b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        b.errors.as_deref().unwrap().contains("key_revoked"),
        "{b:?}"
    );
    let done = b.counts.completed;
    assert!((3..40).contains(&done), "{b:?}");
    // No line started after the revocation was seen (within a second): the upstream got the
    // lines that ran, and nothing since.
    let reached = fb.request_count() as u64;
    assert_eq!(reached, done);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fb.request_count() as u64, reached);
    // The lines that did not run are in the error file (`batch_failed`), not counted as
    // failed (as for a cancelled batch).
    assert_eq!((b.counts.total, b.counts.failed), (40, 0), "{b:?}");
    assert!(b.error_file_id.is_some());
    assert_eq!(spend_of(&gw, &id).await.len() as u64, done);
}

/// A batch of `lines` on `endpoint`, created as the master, run to `completed`.
async fn run_batch(gw: &Gateway, endpoint: &str, lines: &[Value]) -> (String, Value) {
    let input: Vec<String> = lines.iter().map(Value::to_string).collect();
    let file = upload(gw, MASTER, "batch", "in.jsonl", input.join("\n").as_bytes()).await;
    let id = create(gw, MASTER, &file, endpoint).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = wait_for(gw, MASTER, &id, Duration::from_secs(60), |s| {
        !matches!(s, "validating" | "in_progress" | "finalizing")
    })
    .await;
    (id, b)
}

#[tokio::test]
async fn a_batch_of_embeddings_runs_through_the_pipeline() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let dir = data_dir("embeddings");
    let gw = gateway(&dir, &fa, &fb, "").await;
    let input: Vec<Value> = (0..3)
        .map(|i| {
            json!({"custom_id": format!("e-{i}"), "method": "POST", "url": "/v1/embeddings",
                   "body": {"model": "r", "input": [format!("text {i}"), "and more"]}})
        })
        .collect();
    let (id, b) = run_batch(&gw, "/v1/embeddings", &input).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"]["completed"], 3, "{b}");
    let out = lines(&gw, MASTER, &b["output_file_id"]).await;
    assert_eq!(out.len(), 3);
    for l in &out {
        assert_eq!(l["response"]["status_code"], 200, "{l}");
        let body = &l["response"]["body"];
        assert_eq!(body["object"], "list", "{l}");
        assert_eq!(body["data"].as_array().unwrap().len(), 2, "{l}");
        assert_eq!(body["model"], "a", "the route's target that answered: {l}");
    }
    assert_eq!(fa.request_count(), 3, "through the route's first target");
    let spend = spend_of(&gw, &id).await;
    assert_eq!(spend.len(), 3);
    assert!(spend.iter().all(|r| r.endpoint == "embeddings"));
}

#[tokio::test]
async fn a_batch_of_responses_runs_through_the_pipeline() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let dir = data_dir("responses");
    let gw = gateway(&dir, &fa, &fb, "").await;
    let input: Vec<Value> = (0..3)
        .map(|i| {
            json!({"custom_id": format!("r-{i}"), "method": "POST", "url": "/v1/responses",
                   "body": {"model": "b", "input": format!("Say hello {i}"), "instructions": "Be brief."}})
        })
        .collect();
    let (id, b) = run_batch(&gw, "/v1/responses", &input).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"]["completed"], 3, "{b}");
    let out = lines(&gw, MASTER, &b["output_file_id"]).await;
    let ids: HashSet<&str> = out
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, HashSet::from(["r-0", "r-1", "r-2"]));
    for l in &out {
        let body = &l["response"]["body"];
        assert_eq!(body["object"], "response", "{l}");
        assert_eq!(body["status"], "completed", "{l}");
        assert!(
            body["output"].as_array().is_some_and(|o| !o.is_empty()),
            "{l}"
        );
    }
    assert_eq!(fb.request_count(), 3);
    let spend = spend_of(&gw, &id).await;
    assert_eq!(spend.len(), 3);
    assert!(spend.iter().all(|r| r.endpoint == "responses"));
    // A chat line in a Responses batch is reported on its line.
    let mixed = vec![
        input[0].clone(),
        serde_json::from_str(&chat_line("c-0", "b")).unwrap(),
    ];
    let (_, b) = run_batch(&gw, "/v1/responses", &mixed).await;
    assert_eq!(b["status"], "completed", "{b}");
    let errors = lines(&gw, MASTER, &b["error_file_id"]).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["error"]["code"], "mismatched_endpoint");
}

#[tokio::test]
async fn a_batch_whose_completion_window_passes_expires() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    fb.set_default(Behavior::new().with_delay_ms(400));
    let dir = data_dir("expired");
    let gw = gateway(&dir, &fa, &fb, "[batches]\nconcurrency = 1").await;
    let input: Vec<String> = (0..20).map(|i| chat_line(&format!("x-{i}"), "b")).collect();
    let file = upload(
        &gw,
        MASTER,
        "batch",
        "in.jsonl",
        input.join("\n").as_bytes(),
    )
    .await;
    // The window is 24 hours through the API; made here with 2 seconds left.
    let batches = gw.state.batches.as_ref().unwrap();
    let batch = batches
        .store
        .create(sluice_store::batches::NewBatch {
            owner: sluice_store::files::Owner::Master,
            endpoint: "/v1/chat/completions".into(),
            input_file_id: file,
            completion_window: "24h".into(),
            metadata: None,
            expires_at: sluice_store::unix_now_ms() / 1000 + 2,
        })
        .await
        .unwrap();
    batches.wake();
    let b = wait_for(&gw, MASTER, &batch.id, Duration::from_secs(60), |s| {
        matches!(s, "expired" | "completed" | "failed")
    })
    .await;
    assert_eq!(b["status"], "expired", "{b}");
    assert!(b["expired_at"].as_u64().is_some(), "{b}");
    let done = b["request_counts"]["completed"].as_u64().unwrap();
    assert!((1..20).contains(&done), "{b}");
    let out = lines(&gw, MASTER, &b["output_file_id"]).await;
    let errors = lines(&gw, MASTER, &b["error_file_id"]).await;
    assert_eq!(out.len() as u64, done);
    assert_eq!(out.len() + errors.len(), 20, "every line reported once");
    assert!(errors.iter().all(|l| l["error"]["code"] == "batch_expired"));
    assert_eq!(
        fb.request_count() as u64,
        done,
        "no line started after the window"
    );
    assert_eq!(spend_of(&gw, &batch.id).await.len() as u64, done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_lines_wait_while_interactive_traffic_is_above_yield_above() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let dir = data_dir("yield");
    let gw = std::sync::Arc::new(gateway(&dir, &fa, &fb, "[batches]\nyield_above = 0").await);
    // A client's request in flight on `a` for 2 seconds.
    let slow = {
        let gw = std::sync::Arc::clone(&gw);
        tokio::spawn(async move {
            let body = json!({"model": "a", "messages": [{"role": "user", "content": "hi"}],
                              "x_fake": {"delay_ms": 2000}});
            post(&gw, "/v1/chat/completions", body, MASTER).await
        })
    };
    assert!(fa.wait_requests(1, Duration::from_secs(10)).await);
    let input: Vec<String> = (0..3).map(|i| chat_line(&format!("y-{i}"), "b")).collect();
    let file = upload(
        &gw,
        MASTER,
        "batch",
        "in.jsonl",
        input.join("\n").as_bytes(),
    )
    .await;
    let id = create(&gw, MASTER, &file, "/v1/chat/completions").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !slow.is_finished(),
        "the client's request is still in flight"
    );
    assert_eq!(fb.request_count(), 0, "no batch line started beside it");
    let metrics = sluice_testkit::client::get(&gw.url("/metrics"))
        .await
        .unwrap()
        .text();
    let yields: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_batch_yields_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(yields >= 1, "{metrics}");
    assert_eq!(slow.await.unwrap().status, 200);
    let b = wait_for(&gw, MASTER, &id, Duration::from_secs(60), |s| {
        s == "completed"
    })
    .await;
    assert_eq!(b["request_counts"]["completed"], 3, "{b}");
    assert_eq!(fb.request_count(), 3);
}
