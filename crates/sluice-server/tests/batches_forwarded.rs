//! `/v1/batches` forwarded to a provider's own Batch API (`batch = "native"`), over real
//! loopback HTTP against the fake upstream's Files and Batch APIs: the input uploaded with
//! the upstream's model names, the batch made, polled and collected (sluice's ids, the
//! client's model names), one spend record per answered line at the batch price; a restart
//! mid-poll resumes polling and charges each line once; cancel passed on; an upstream
//! failure, refusal or expiry surfaces in the batch; a batch with a line on a provider
//! without a batch API is run by sluice.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::Method;
use serde_json::{json, Value};
use sluice_testkit::client::TestClient;
use sluice_testkit::{BatchOutcome, Behavior, FakeUpstream, TestResponse};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MASTER: &str = "sk-master-forward";
const BOUNDARY: &str = "forward-boundary-9a8b";

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-forward-{name}-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway in front of `native` (provider `oai`, `batch = "native"`: models `gpt`, sent
/// as `gpt-up`, at $2/$8 per million tokens, and `gpt-set`, with its own batch price) and
/// `plain` (provider `plain`, sluice runs its batches: model `other`); polls every 50 ms.
async fn gateway(dir: &Path, native: &FakeUpstream, plain: &FakeUpstream) -> Gateway {
    start_with(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "{MASTER}"
[storage]
data_dir = "{dir}"
[batches]
poll_interval_ms = 50
[[providers]]
name = "oai"
type = "openai"
base_url = "{native}"
batch = "native"
[[providers]]
name = "plain"
type = "openai"
base_url = "{plain}"
[[models]]
name = "gpt"
provider = "oai"
upstream = "gpt-up"
price = {{ input = 2.0, output = 8.0 }}
[[models]]
name = "gpt-set"
provider = "oai"
price = {{ input = 2.0, output = 8.0, batch_input = 0.5, batch_output = 1.0 }}
[[models]]
name = "other"
provider = "plain"
price = {{ input = 2.0, output = 8.0 }}
"#,
        dir = dir.display(),
        native = native.base_url(),
        plain = plain.base_url(),
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

async fn upload(gw: &Gateway, key: &str, data: &str) -> String {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data.as_bytes());
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let r = call(gw, Method::POST, "/v1/files", body, key, &ct).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

async fn post(gw: &Gateway, path: &str, body: Value, key: &str) -> TestResponse {
    let body = body.to_string().into_bytes();
    call(gw, Method::POST, path, body, key, "application/json").await
}

async fn get(gw: &Gateway, path: &str, key: &str) -> TestResponse {
    call(gw, Method::GET, path, Vec::new(), key, "").await
}

/// Uploads `lines` and makes a chat batch of them; its id.
async fn batch_of(gw: &Gateway, key: &str, lines: &[String]) -> String {
    let file = upload(gw, key, &lines.join("\n")).await;
    let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let r = post(gw, "/v1/batches", body, key).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

async fn wait_for(gw: &Gateway, key: &str, id: &str, done: impl Fn(&str) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let b = get(gw, &format!("/v1/batches/{id}"), key).await.json();
        if done(b["status"].as_str().unwrap()) {
            return b;
        }
        assert!(Instant::now() < until, "batch not done in time: {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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

fn chat_line(id: &str, model: &str, extra: Value) -> String {
    let mut body =
        json!({"model": model, "messages": [{"role": "user", "content": format!("hello {id}")}]});
    if let Value::Object(m) = extra {
        body.as_object_mut().unwrap().extend(m);
    }
    json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions", "body": body})
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

/// The requests `fake` got at `method` `path` (a prefix when it ends with `*`).
fn sent(fake: &FakeUpstream, method: &str, path: &str) -> Vec<sluice_testkit::RecordedRequest> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method.as_str() == method)
        .filter(|r| match path.strip_suffix('*') {
            Some(prefix) => r.path.starts_with(prefix),
            None => r.path == path,
        })
        .collect()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_batch_runs_upstream_and_is_charged_at_the_batch_price() {
    let (native, plain) = (FakeUpstream::start().await, FakeUpstream::start().await);
    native.set_batch_outcome(BatchOutcome::Complete { after_polls: 3 });
    let dir = data_dir("end-to-end");
    let gw = gateway(&dir, &native, &plain).await;
    let (alice, alice_id) = new_key(&gw, "alice").await;
    let input = [
        chat_line("a", "gpt", json!({})),
        "not json at all".to_string(),
        chat_line("b", "gpt-set", json!({})),
        chat_line("refused", "gpt", json!({"x_fake": {"status": 400}})),
        chat_line("c", "gpt", json!({"max_tokens": 5})),
    ];
    let id = batch_of(&gw, &alice, &input).await;
    let b = wait_for(&gw, &alice, &id, |s| s == "completed").await;
    assert_eq!(
        b["request_counts"],
        json!({"total": 5, "completed": 3, "failed": 2}),
        "{b}"
    );
    for at in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(b[at].as_u64().is_some(), "{at}: {b}");
    }
    // The input went up once, the malformed line left out, each model the upstream's name.
    let files = sent(&native, "POST", "/v1/files");
    assert_eq!(files.len(), 1);
    let uploaded = String::from_utf8_lossy(&files[0].body).to_string();
    assert!(
        uploaded.contains("name=\"purpose\"\r\n\r\nbatch\r\n"),
        "{uploaded}"
    );
    assert!(!uploaded.contains("not json at all"), "{uploaded}");
    let sent_lines: Vec<Value> = uploaded
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let models: Vec<&str> = sent_lines
        .iter()
        .map(|l| l["body"]["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["gpt-up", "gpt-set", "gpt-up", "gpt-up"]);
    assert_eq!(sent_lines[3]["body"]["max_tokens"], 5);
    let made = sent(&native, "POST", "/v1/batches");
    assert_eq!(made.len(), 1);
    let made = made[0].json().unwrap();
    assert_eq!(made["endpoint"], "/v1/chat/completions");
    assert_eq!(made["metadata"]["sluice_batch_id"], id.as_str());
    assert!(native.batch_polls() >= 3);
    // No line went through the chat endpoint: the upstream's batch answered them.
    assert!(sent(&native, "POST", "/v1/chat/completions").is_empty());
    // The output: sluice's ids, the client's model names.
    let out = lines(&gw, &alice, &b["output_file_id"]).await;
    let ids: Vec<&str> = out
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    for (l, model) in out.iter().zip(["gpt", "gpt-set", "gpt"]) {
        assert!(l["id"].as_str().unwrap().starts_with("batch_req_"), "{l}");
        assert_eq!(l["response"]["status_code"], 200, "{l}");
        assert_eq!(l["response"]["body"]["model"], model, "{l}");
        assert_eq!(l["response"]["body"]["object"], "chat.completion", "{l}");
        assert!(
            l["response"]["request_id"]
                .as_str()
                .unwrap()
                .starts_with("req_"),
            "{l}"
        );
        assert!(l["error"].is_null());
    }
    let errors = lines(&gw, &alice, &b["error_file_id"]).await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0]["error"]["code"], "invalid_json");
    assert_eq!(errors[1]["custom_id"], "refused");
    assert_eq!(errors[1]["response"]["status_code"], 400);
    // One spend record per answered line, the batch's, the key's, at the batch price:
    // 12 prompt and 9 completion tokens at half of $2/$8, or at gpt-set's $0.5/$1.
    let spend = spend_of(&gw, &id).await;
    assert_eq!(spend.len(), 4, "{spend:?}");
    for r in &spend {
        assert_eq!(r.key_id.as_deref(), Some(alice_id.as_str()));
        assert_eq!(r.provider.as_deref(), Some("oai"));
        assert_eq!(r.endpoint, "chat");
        let want = match (r.model.as_deref(), r.status) {
            (_, 400) => 0,
            (Some("gpt"), 200) => 12 * 1_000 + 9 * 4_000,
            (Some("gpt-set"), 200) => 12 * 500 + 9 * 1_000,
            other => panic!("unexpected record {other:?}"),
        };
        assert_eq!(r.cost_nano_usd, want, "{r:?}");
        if r.status == 200 {
            assert_eq!((r.prompt_tokens, r.completion_tokens), (12, 9));
        }
    }
    // The upstream's files are removed once collected.
    assert_eq!(sent(&native, "DELETE", "/v1/files/*").len(), 3);
    let metrics = get(&gw, "/metrics", MASTER).await.text();
    assert!(
        metrics.contains("sluice_batch_lines_total{outcome=\"completed\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_poll_resumes_polling_and_charges_each_line_once() {
    let (native, plain) = (FakeUpstream::start().await, FakeUpstream::start().await);
    native.set_batch_outcome(BatchOutcome::Complete { after_polls: 8 });
    let dir = data_dir("restart");
    let mut gw = gateway(&dir, &native, &plain).await;
    let input: Vec<String> = (0..20)
        .map(|i| chat_line(&format!("r-{i}"), "gpt", json!({})))
        .collect();
    let id = batch_of(&gw, MASTER, &input).await;
    let b = wait_for(&gw, MASTER, &id, |s| s == "in_progress").await;
    assert_eq!(b["request_counts"]["total"], 20);
    let until = Instant::now() + Duration::from_secs(30);
    while native.batch_polls() < 2 {
        assert!(Instant::now() < until, "not polled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.begin_shutdown().await.unwrap().unwrap();
    drop(gw);
    let polls = native.batch_polls();
    assert!(polls < 8, "{polls}");
    let gw = gateway(&dir, &native, &plain).await;
    let b = wait_for(&gw, MASTER, &id, |s| s == "completed").await;
    assert_eq!(
        b["request_counts"],
        json!({"total": 20, "completed": 20, "failed": 0}),
        "{b}"
    );
    // Sent once: the restarted gateway polled the batch it had made.
    assert_eq!(sent(&native, "POST", "/v1/files").len(), 1);
    assert_eq!(sent(&native, "POST", "/v1/batches").len(), 1);
    assert_eq!(lines(&gw, MASTER, &b["output_file_id"]).await.len(), 20);
    let spend = spend_of(&gw, &id).await;
    assert_eq!(spend.len(), 20);
    let ids: std::collections::HashSet<&str> =
        spend.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_is_passed_on_upstream() {
    let (native, plain) = (FakeUpstream::start().await, FakeUpstream::start().await);
    native.set_batch_outcome(BatchOutcome::Complete {
        after_polls: 1_000_000,
    });
    let dir = data_dir("cancel");
    let gw = gateway(&dir, &native, &plain).await;
    let input: Vec<String> = (0..5)
        .map(|i| chat_line(&format!("c-{i}"), "gpt", json!({})))
        .collect();
    let id = batch_of(&gw, MASTER, &input).await;
    wait_for(&gw, MASTER, &id, |s| s == "in_progress").await;
    let r = post(&gw, &format!("/v1/batches/{id}/cancel"), json!({}), MASTER).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = wait_for(&gw, MASTER, &id, |s| s == "cancelled").await;
    let cancels = sent(&native, "POST", "/v1/batches/*");
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert!(cancels[0].path.ends_with("/cancel"));
    assert_eq!(b["request_counts"]["completed"], 0, "{b}");
    let errors = lines(&gw, MASTER, &b["error_file_id"]).await;
    assert_eq!(errors.len(), 5);
    assert!(errors
        .iter()
        .all(|l| l["error"]["code"] == "batch_cancelled"));
    assert!(spend_of(&gw, &id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_refusals_and_expiry_surface_in_the_batch() {
    let (native, plain) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let dir = data_dir("failures");
    let gw = gateway(&dir, &native, &plain).await;
    let input: Vec<String> = (0..4)
        .map(|i| chat_line(&format!("f-{i}"), "gpt", json!({})))
        .collect();
    // The upstream fails the batch.
    native.set_batch_outcome(BatchOutcome::Fail { after_polls: 2 });
    let id = batch_of(&gw, MASTER, &input).await;
    let b = wait_for(&gw, MASTER, &id, |s| s == "failed").await;
    assert_eq!(b["errors"]["data"][0]["code"], "server_error", "{b}");
    assert!(b["failed_at"].as_u64().is_some());
    let errors = lines(&gw, MASTER, &b["error_file_id"]).await;
    assert_eq!(errors.len(), 4);
    assert!(errors.iter().all(|l| l["error"]["code"] == "batch_failed"));
    // The upstream refuses the upload.
    native.push(Behavior::new().with_status(400));
    let id = batch_of(&gw, MASTER, &input).await;
    let b = wait_for(&gw, MASTER, &id, |s| s == "failed").await;
    assert_eq!(b["errors"]["data"][0]["code"], "upstream_error", "{b}");
    let message = b["errors"]["data"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("oai") && message.contains("400"),
        "{message}"
    );
    // A busy upstream (503) is asked again at the next poll.
    native.set_batch_outcome(BatchOutcome::Complete { after_polls: 1 });
    native.push(Behavior::new().with_status(503));
    let id = batch_of(&gw, MASTER, &input).await;
    wait_for(&gw, MASTER, &id, |s| s == "completed").await;
    // The upstream's window passes: half answered, the rest `batch_expired`.
    native.set_batch_outcome(BatchOutcome::Expire { after_polls: 2 });
    let id = batch_of(&gw, MASTER, &input).await;
    let b = wait_for(&gw, MASTER, &id, |s| s == "expired").await;
    assert_eq!(
        b["request_counts"],
        json!({"total": 4, "completed": 2, "failed": 2}),
        "{b}"
    );
    let errors = lines(&gw, MASTER, &b["error_file_id"]).await;
    assert!(
        errors.iter().all(|l| l["error"]["code"] == "batch_expired"),
        "{errors:?}"
    );
    assert_eq!(spend_of(&gw, &id).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_line_elsewhere_is_run_by_sluice() {
    let (native, plain) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let dir = data_dir("mixed");
    let gw = gateway(&dir, &native, &plain).await;
    let input = [
        chat_line("n", "gpt", json!({})),
        chat_line("p", "other", json!({})),
    ];
    let id = batch_of(&gw, MASTER, &input).await;
    let b = wait_for(&gw, MASTER, &id, |s| s == "completed").await;
    assert_eq!(b["request_counts"]["completed"], 2, "{b}");
    assert!(sent(&native, "POST", "/v1/batches").is_empty());
    assert_eq!(sent(&native, "POST", "/v1/chat/completions").len(), 1);
    assert_eq!(plain.request_count(), 1);
    // Run by sluice: at the normal price (12 * $2 + 9 * $8 per million).
    let spend = spend_of(&gw, &id).await;
    assert!(
        spend
            .iter()
            .all(|r| r.cost_nano_usd == 12 * 2_000 + 9 * 8_000),
        "{spend:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_mid_poll_cancels_the_upstream_batch_and_fails_it() {
    let (native, plain) = (FakeUpstream::start().await, FakeUpstream::start().await);
    native.set_batch_outcome(BatchOutcome::Complete {
        after_polls: 1_000_000,
    });
    let dir = data_dir("revoked");
    let gw = gateway(&dir, &native, &plain).await;
    let (alice, alice_id) = new_key(&gw, "alice").await;
    let input: Vec<String> = (0..3)
        .map(|i| chat_line(&format!("k-{i}"), "gpt", json!({})))
        .collect();
    let id = batch_of(&gw, &alice, &input).await;
    wait_for(&gw, &alice, &id, |s| s == "in_progress").await;
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
    assert_eq!(
        sent(&native, "POST", "/v1/batches/*").len(),
        1,
        "the cancel went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collect_cut_midway_is_taken_again_without_charging_twice() {
    let (native, plain) = (FakeUpstream::start().await, FakeUpstream::start().await);
    native.set_batch_outcome(BatchOutcome::Complete { after_polls: 1 });
    let dir = data_dir("recollect");
    let gw = gateway(&dir, &native, &plain).await;
    let mut input: Vec<String> = (0..6)
        .map(|i| chat_line(&format!("o-{i}"), "gpt", json!({})))
        .collect();
    input.push(chat_line("bad", "gpt", json!({"x_fake": {"status": 422}})));
    // The upload, the create, the poll and the output file go through; reading the error
    // file fails (503), after the output file's lines were recorded and charged.
    for _ in 0..4 {
        native.push(Behavior::new());
    }
    native.push(Behavior::new().with_status(503));
    let id = batch_of(&gw, MASTER, &input).await;
    let b = wait_for(&gw, MASTER, &id, |s| s == "completed").await;
    assert_eq!(
        b["request_counts"],
        json!({"total": 7, "completed": 6, "failed": 1}),
        "{b}"
    );
    // The output file was read twice, its lines charged once.
    assert_eq!(sent(&native, "GET", "/v1/files/*").len(), 4);
    assert_eq!(lines(&gw, MASTER, &b["output_file_id"]).await.len(), 6);
    assert_eq!(lines(&gw, MASTER, &b["error_file_id"]).await.len(), 1);
    let spend = spend_of(&gw, &id).await;
    assert_eq!(spend.len(), 7, "{spend:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_repeats_its_request_id_has_every_line_charged() {
    let (native, plain) = (FakeUpstream::start().await, FakeUpstream::start().await);
    native.set_batch_outcome(BatchOutcome::Complete { after_polls: 1 });
    let dir = data_dir("same-request-id");
    let gw = gateway(&dir, &native, &plain).await;
    // Three lines answered with an empty request id, three with the same one.
    let input: Vec<String> = (0..6)
        .map(|i| {
            let given = if i < 3 { "" } else { "req_same" };
            chat_line(
                &format!("s-{i}"),
                "gpt",
                json!({"x_fake": {"request_id": given}}),
            )
        })
        .collect();
    let id = batch_of(&gw, MASTER, &input).await;
    let b = wait_for(&gw, MASTER, &id, |s| s == "completed").await;
    // The result lines keep the upstream's request id.
    let out = lines(&gw, MASTER, &b["output_file_id"]).await;
    let given: Vec<&str> = out
        .iter()
        .map(|l| l["response"]["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(given, ["", "", "", "req_same", "req_same", "req_same"]);
    // Each line charged, under sluice's own line id.
    let spend = spend_of(&gw, &id).await;
    assert_eq!(spend.len(), 6, "{spend:?}");
    let mut ids: Vec<&str> = spend.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    let suffix = id.strip_prefix("batch_").unwrap();
    let want: Vec<String> = (0..6).map(|i| format!("batch_req_{suffix}_{i}")).collect();
    assert_eq!(ids, want, "{spend:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collect_flushes_the_spend_log_once_a_group_of_lines() {
    let (native, plain) = (FakeUpstream::start().await, FakeUpstream::start().await);
    native.set_batch_outcome(BatchOutcome::Complete { after_polls: 1 });
    let dir = data_dir("grouped");
    let gw = gateway(&dir, &native, &plain).await;
    let input: Vec<String> = (0..600)
        .map(|i| chat_line(&format!("g-{i}"), "gpt", json!({})))
        .collect();
    let id = batch_of(&gw, MASTER, &input).await;
    let b = wait_for(&gw, MASTER, &id, |s| s == "completed").await;
    assert_eq!(
        b["request_counts"],
        json!({"total": 600, "completed": 600, "failed": 0}),
        "{b}"
    );
    assert_eq!(lines(&gw, MASTER, &b["output_file_id"]).await.len(), 600);
    let spend = spend_of(&gw, &id).await;
    assert_eq!(spend.len(), 600);
    // 600 lines in groups of at most 256: 3 flushes, not one a line.
    let metrics = get(&gw, "/metrics", MASTER).await.text();
    let flushes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_batch_spend_flushes_total "))
        .expect("the flush counter")
        .parse()
        .unwrap();
    assert_eq!(flushes, 3, "{metrics}");
}
