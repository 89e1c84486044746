//! A batch interrupted by SIGTERM, through the real binary: the stopping gateway starts no
//! more lines, finishes and records those in flight, and the restarted one resumes the batch
//! where it stopped; every line reaches the upstream once and is charged once. Killed by
//! SIGKILL instead, the lines in flight run again after the restart, each charged once (its
//! killed run never ended, so never recorded), and no line that had a result goes uncharged.
//! Crashed at the worst point, after a line's spend record and before its result (a fault
//! hook aborts there), the line runs again and is still charged once; a forwarded batch
//! crashed there while its results are collected is collected again, each line charged
//! once.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{temp_dir, Serving};
use http::Method;
use serde_json::{json, Value};
use sluice_testkit::client::TestClient;
use sluice_testkit::{BatchOutcome, Behavior, FakeUpstream};
use std::collections::HashMap;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LINES: usize = 200;
const BOUNDARY: &str = "sigterm-batch-boundary";

fn config(dir: &Path, upstream: &str) -> PathBuf {
    config_with(dir, upstream, "")
}

/// [`config`], `provider` added to its provider's table (`batch = "native"`, say).
fn config_with(dir: &Path, upstream: &str, provider: &str) -> PathBuf {
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace_ms = 10000
[storage]
data_dir = "{data}"
[batches]
concurrency = 4
poll_interval_ms = 50
[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
{provider}
[[models]]
name = "m"
provider = "fake"
price = {{ input = 1.0, output = 2.0 }}
"#,
            data = dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

async fn request(s: &Serving, method: Method, path: &str, body: Vec<u8>, ct: &str) -> Value {
    let headers = [("content-type", ct)];
    let r = TestClient::new()
        .request(
            method,
            &s.url(path),
            body.into(),
            if ct.is_empty() { &[] } else { &headers },
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.try_json().unwrap_or(Value::String(r.text()))
}

async fn upload(s: &Serving, data: &[u8]) -> String {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let f = request(s, Method::POST, "/v1/files", body, &ct).await;
    f["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_by_sigterm_completes_after_restart_with_every_line_once() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Behavior::new().with_delay_ms(40));
    let dir = temp_dir("batch-sigterm");
    let cfg = config(&dir, &fake.base_url());
    let first = Serving::start(&cfg);
    let input: Vec<String> = (0..LINES)
        .map(|i| {
            json!({"custom_id": format!("r-{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "m", "messages": [{"role": "user", "content": format!("q {i}")}]}})
            .to_string()
        })
        .collect();
    let file = upload(&first, input.join("\n").as_bytes()).await;
    let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let b = request(
        &first,
        Method::POST,
        "/v1/batches",
        body.to_string().into_bytes(),
        "application/json",
    )
    .await;
    let id = b["id"].as_str().unwrap().to_string();
    assert!(fake.wait_requests(30, Duration::from_secs(30)).await);
    // SIGTERM mid-batch: the gateway exits cleanly after its lines in flight.
    assert!(first.stop(), "the first gateway did not exit cleanly");
    let answered_before = fake.request_count();
    assert!((30..LINES).contains(&answered_before), "{answered_before}");
    let second = Serving::start(&cfg);
    let until = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let b = request(
            &second,
            Method::GET,
            &format!("/v1/batches/{id}"),
            Vec::new(),
            "",
        )
        .await;
        if b["status"] == "completed" {
            break b;
        }
        assert!(Instant::now() < until, "not completed: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        done["request_counts"],
        json!({"total": LINES, "completed": LINES, "failed": 0}),
        "{done}"
    );
    // Every line reached the upstream once: none was lost, none was sent again.
    assert_eq!(fake.request_count(), LINES);
    let out_id = done["output_file_id"].as_str().unwrap();
    let content = request(
        &second,
        Method::GET,
        &format!("/v1/files/{out_id}/content"),
        Vec::new(),
        "",
    )
    .await;
    let text = content
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| content.to_string());
    let ids: HashSet<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["custom_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!((text.lines().count(), ids.len()), (LINES, LINES));
    assert!(second.stop());
    // ...and was charged once: one spend record per line, each with the batch's id.
    let ledger = sluice_store::open::ledger_at(&dir.join("data").join("ledger.sqlite"))
        .unwrap()
        .unwrap();
    let records = ledger.export(0).await.unwrap();
    let ours: Vec<_> = records
        .iter()
        .filter(|r| r.batch_id.as_deref() == Some(id.as_str()))
        .collect();
    assert_eq!(ours.len(), LINES);
    let distinct: HashSet<&str> = ours.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(distinct.len(), LINES);
    assert!(ours.iter().all(|r| r.status == 200 && r.cost_nano_usd > 0));
}

/// The batch's `LINES` lines, uploaded and run on `s`: its id.
async fn start_batch(s: &Serving) -> String {
    let input: Vec<String> = (0..LINES)
        .map(|i| {
            json!({"custom_id": format!("r-{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "m", "messages": [{"role": "user", "content": format!("q {i}")}]}})
            .to_string()
        })
        .collect();
    let file = upload(s, input.join("\n").as_bytes()).await;
    let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let b = request(
        s,
        Method::POST,
        "/v1/batches",
        body.to_string().into_bytes(),
        "application/json",
    )
    .await;
    b["id"].as_str().unwrap().to_string()
}

/// Waits until batch `id` has completed on `s`: the batch and its output's `custom_id`s.
async fn completed(s: &Serving, id: &str) -> (Value, HashSet<String>) {
    let until = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let b = request(s, Method::GET, &format!("/v1/batches/{id}"), Vec::new(), "").await;
        if b["status"] == "completed" {
            break b;
        }
        assert!(Instant::now() < until, "not completed: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out_id = done["output_file_id"].as_str().unwrap();
    let path = format!("/v1/files/{out_id}/content");
    let content = request(s, Method::GET, &path, Vec::new(), "").await;
    let text = content
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| content.to_string());
    let ids: HashSet<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["custom_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        text.lines().count(),
        LINES,
        "one output line per input line"
    );
    (done, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_killed_by_sigkill_completes_after_restart_its_lines_charged_once() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Behavior::new().with_delay_ms(40));
    let dir = temp_dir("batch-sigkill");
    let cfg = config(&dir, &fake.base_url());
    let mut first = Serving::start(&cfg);
    let id = start_batch(&first).await;
    assert!(fake.wait_requests(30, Duration::from_secs(30)).await);
    // SIGKILL mid-batch: nothing is finished, flushed or let go.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(first);
    let second = Serving::start(&cfg);
    let (done, ids) = completed(&second, &id).await;
    assert_eq!(
        done["request_counts"],
        json!({"total": LINES, "completed": LINES, "failed": 0}),
        "{done}"
    );
    assert_eq!(ids.len(), LINES, "every line answered once");
    // The lines in flight at the kill (at most `concurrency`, 4) reached the upstream twice.
    let again = fake.request_count() - LINES;
    assert!(again <= 4, "{again} lines ran again");
    assert!(second.stop());
    let ledger = sluice_store::open::ledger_at(&dir.join("data").join("ledger.sqlite"))
        .unwrap()
        .unwrap();
    let mut charged: HashMap<String, usize> = HashMap::new();
    for r in ledger.export(0).await.unwrap() {
        if r.batch_id.as_deref() == Some(id.as_str()) {
            assert!(r.status == 200 && r.cost_nano_usd > 0, "{r:?}");
            *charged.entry(r.request_id.clone()).or_default() += 1;
        }
    }
    // Every line is charged: a line's spend record is written before its result, so a
    // line that has a result (and is not run again) was charged...
    assert_eq!(charged.len(), LINES, "a line went uncharged");
    // ...and the lines run again were charged once: their killed runs never ended (and a
    // kill between a line's spend record and its result leaves one record, see below).
    let twice: Vec<_> = charged.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "charged twice: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_a_lines_charge_and_its_result_charges_it_once() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Behavior::new().with_delay_ms(40));
    let dir = temp_dir("batch-fault");
    let cfg = config(&dir, &fake.base_url());
    // Aborts once line 10's spend record is durable, before its result is recorded.
    let mut first = Serving::start_with(&cfg, &[("SLUICE_FAULT_ABORT_AFTER_CHARGE", "10")]);
    let id = start_batch(&first).await;
    let until = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = first.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < until, "the fault hook did not fire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!exit.success(), "{exit:?}");
    // The hook's last words (read from the pipe by another thread) say where it stopped.
    let hook = "SLUICE_FAULT_ABORT_AFTER_CHARGE=10";
    let until = Instant::now() + Duration::from_secs(5);
    while !first.log.lock().unwrap().contains(hook) {
        assert!(Instant::now() < until, "aborted elsewhere");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first);
    let second = Serving::start(&cfg);
    let (done, ids) = completed(&second, &id).await;
    assert_eq!(
        done["request_counts"],
        json!({"total": LINES, "completed": LINES, "failed": 0}),
        "{done}"
    );
    assert_eq!(ids.len(), LINES, "every line answered once");
    assert!(second.stop());
    // Line 10 (from 0: `q 10`) ran twice upstream: its result was never recorded.
    let asked_line_10 = fake
        .requests()
        .iter()
        .filter(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            body["messages"][0]["content"] == "q 10"
        })
        .count();
    assert_eq!(asked_line_10, 2);
    // ...and is charged once, as is every other line.
    let ledger = sluice_store::open::ledger_at(&dir.join("data").join("ledger.sqlite"))
        .unwrap()
        .unwrap();
    let mut charged: HashMap<String, usize> = HashMap::new();
    for r in ledger.export(0).await.unwrap() {
        if r.batch_id.as_deref() == Some(id.as_str()) {
            *charged.entry(r.request_id.clone()).or_default() += 1;
        }
    }
    assert_eq!(charged.len(), LINES, "a line went uncharged");
    let line_10 = format!("batch_req_{}_10", id.strip_prefix("batch_").unwrap());
    assert_eq!(charged.get(&line_10), Some(&1), "{charged:?}");
    assert!(charged.values().all(|n| *n == 1), "{charged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_collecting_a_forwarded_batch_charges_each_line_once() {
    let fake = FakeUpstream::start().await;
    fake.set_batch_outcome(BatchOutcome::Complete { after_polls: 1 });
    let dir = temp_dir("forward-fault");
    let cfg = config_with(&dir, &fake.base_url(), r#"batch = "native""#);
    // Aborts once line 10's spend record is durable (with those of the lines collected
    // with it), before its result is recorded.
    let mut first = Serving::start_with(&cfg, &[("SLUICE_FAULT_ABORT_AFTER_CHARGE", "10")]);
    let id = start_batch(&first).await;
    let until = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = first.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < until, "the fault hook did not fire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!exit.success(), "{exit:?}");
    let hook = "SLUICE_FAULT_ABORT_AFTER_CHARGE=10";
    let until = Instant::now() + Duration::from_secs(5);
    while !first.log.lock().unwrap().contains(hook) {
        assert!(Instant::now() < until, "aborted elsewhere");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first);
    let second = Serving::start(&cfg);
    let (done, ids) = completed(&second, &id).await;
    assert_eq!(
        done["request_counts"],
        json!({"total": LINES, "completed": LINES, "failed": 0}),
        "{done}"
    );
    assert_eq!(ids.len(), LINES, "every line answered once");
    assert!(second.stop());
    // Run upstream as one batch, never by sluice line by line.
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.path != "/v1/chat/completions"));
    let ledger = sluice_store::open::ledger_at(&dir.join("data").join("ledger.sqlite"))
        .unwrap()
        .unwrap();
    let mut charged: HashMap<String, usize> = HashMap::new();
    for r in ledger.export(0).await.unwrap() {
        if r.batch_id.as_deref() == Some(id.as_str()) {
            assert!(r.status == 200 && r.cost_nano_usd > 0, "{r:?}");
            *charged.entry(r.request_id.clone()).or_default() += 1;
        }
    }
    assert_eq!(charged.len(), LINES, "a line went uncharged");
    assert!(charged.values().all(|n| *n == 1), "{charged:?}");
}
