//! Output validation (issue 19): answers to `response_format: json_schema` requests checked
//! against the schema by a `validate_json` guardrail, over loopback HTTP against fake
//! upstreams: an invalid answer asked for again (and the retry charged), then refused (502
//! `output_validation_failed`) or passed with `x-sluice-output-valid: false`; valid answers
//! untouched; streams checked at their end; the Responses API's `text.format` alike.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sluice_testkit::client::{get, post_json};
use sluice_testkit::FakeUpstream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const VALID: &str = r#"{"name": "Ann", "age": 31}"#;
const INVALID: &str = r#"{"name": "Ann", "age": "thirty-one"}"#;

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name", "age"],
        "additionalProperties": false
    })
}

fn guard(retries: u32, on_failure: &str) -> String {
    format!(
        r#"
[[guardrails]]
name = "shape"
validate_json = {{ retries = {retries}, on_failure = "{on_failure}" }}
"#
    )
}

/// The common config with `m` applying the guardrail `shape`.
fn config(upstream: &str, guards: &str) -> String {
    config_for(upstream, "").replace(
        "price = { input = 1.0, output = 2.0 }",
        "price = { input = 1.0, output = 2.0 }\nguardrails = [\"shape\"]",
    ) + guards
}

/// A fake OpenAI upstream answering its chat requests with `contents` in turn (the last
/// one again once they run out), each with 10 prompt and 5 completion tokens.
async fn scripted(contents: &'static [&'static str]) -> (String, Recorded) {
    let n = Arc::new(AtomicUsize::new(0));
    let (addr, seen) = fake_provider(move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst).min(contents.len() - 1);
        let body = json!({
            "id": format!("chatcmpl-{i}"), "object": "chat.completion", "created": 1,
            "model": "upstream-m",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": contents[i]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        });
        let body = http_body_util::Full::new(bytes::Bytes::from(body.to_string())).boxed();
        (200, "application/json", body)
    })
    .await;
    (format!("http://{addr}/v1"), seen)
}

fn chat(request_id: &str) -> (String, String) {
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Who is Ann?"}],
        "response_format": {"type": "json_schema",
            "json_schema": {"name": "person", "strict": true, "schema": schema()}}
    });
    (body.to_string(), request_id.to_string())
}

async fn ask(gw: &Gateway, request_id: &str) -> sluice_testkit::client::TestResponse {
    let (body, id) = chat(request_id);
    post_json(
        &gw.url("/v1/chat/completions"),
        body,
        &[("x-request-id", id.as_str())],
    )
    .await
    .unwrap()
}

async fn record(gw: &Gateway, request_id: &str) -> sluice_store::SpendRecord {
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    ledger
        .export(0)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.request_id == request_id)
        .expect("a spend record")
}

fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    )
}

#[tokio::test]
async fn an_invalid_answer_is_asked_for_again_and_the_retry_fixes_it() {
    let (url, seen) = scripted(&[INVALID, VALID]).await;
    let gw = start_with(&config(&url, &guard(1, "error"))).await;
    let id = unique("fixed");
    let r = ask(&gw, &id).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], VALID);
    assert_eq!(seen.lock().unwrap().len(), 2, "asked twice");
    assert!(r.header("x-sluice-output-valid").is_none());
    assert_eq!(r.header("x-sluice-attempts"), Some("2"));
    let rec = record(&gw, &id).await;
    assert_eq!(rec.attempts, 2);
    assert_eq!(
        (rec.prompt_tokens, rec.completion_tokens),
        (20, 10),
        "both answers charged"
    );
    assert_eq!(rec.guardrails.as_deref(), Some("shape:json_schema:retry=1"));
    let metrics = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains(
            r#"sluice_guardrail_findings_total{guardrail="shape",detector="json_schema",action="retry"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_valid_answer_is_not_asked_again_and_other_requests_are_not_checked() {
    let (url, seen) = scripted(&[VALID, "not json at all"]).await;
    let gw = start_with(&config(&url, &guard(1, "error"))).await;
    let r = ask(&gw, &unique("valid")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(seen.lock().unwrap().len(), 1);
    // No `response_format`: nothing to check, whatever the answer.
    let r = post_json(&gw.url("/v1/chat/completions"), CHAT.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "not json at all"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn an_answer_that_stays_invalid_is_refused_with_the_reason() {
    let (url, seen) = scripted(&[INVALID]).await;
    let gw = start_with(&config(&url, &guard(1, "error"))).await;
    let id = unique("refused");
    let r = ask(&gw, &id).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["code"], "output_validation_failed");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("$.age: is not of type `integer`") && message.contains("`shape`"),
        "{message}"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
    let rec = record(&gw, &id).await;
    assert_eq!(rec.status, 502);
    assert_eq!(rec.prompt_tokens, 20, "both answers charged");
    assert_eq!(
        rec.guardrails.as_deref(),
        Some("shape:json_schema:error=1,shape:json_schema:retry=1")
    );

    // With no retries: one try, then the error.
    let (url, seen) = scripted(&["{\"name\": \"Ann\""]).await;
    let gw = start_with(&config(&url, &guard(0, "error"))).await;
    let r = ask(&gw, &unique("once")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("not JSON"), "{}", r.text());
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_answer_that_stays_invalid_is_passed_with_a_header_when_configured() {
    let (url, seen) = scripted(&[INVALID]).await;
    let gw = start_with(&config(&url, &guard(2, "pass"))).await;
    let id = unique("passed");
    let r = ask(&gw, &id).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], INVALID);
    assert_eq!(r.header("x-sluice-output-valid"), Some("false"));
    let reason = r.header("x-sluice-output-invalid").unwrap();
    assert!(reason.contains("$.age"), "{reason}");
    assert_eq!(seen.lock().unwrap().len(), 3, "two retries");
    let rec = record(&gw, &id).await;
    assert_eq!(
        rec.guardrails.as_deref(),
        Some("shape:json_schema:pass=1,shape:json_schema:retry=2")
    );
}

#[tokio::test]
async fn the_responses_apis_text_format_is_validated_too() {
    let (url, seen) = scripted(&[INVALID, VALID]).await;
    let gw = start_with(&config(&url, &guard(1, "error"))).await;
    let body = json!({
        "model": "m", "input": "Who is Ann?",
        "text": {"format": {"type": "json_schema", "name": "person", "schema": schema()}}
    });
    let r = post_json(&gw.url("/v1/responses"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["output"][0]["content"][0]["text"], VALID);
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(
        seen.lock().unwrap()[0].json["response_format"]["type"],
        "json_schema"
    );
}

/// The content of a streamed chat answer, whether it ended with `[DONE]`, and its error.
fn streamed(body: &str) -> (String, bool, Option<Value>) {
    let (mut text, mut done, mut error) = (String::new(), false, None);
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if v.get("error").is_some() {
            error = Some(v["error"].clone());
        } else if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
    }
    (text, done, error)
}

fn chat_stream(answer: &str) -> String {
    let chars: Vec<char> = answer.chars().collect();
    let pieces: Vec<String> = chars.chunks(4).map(|c| c.iter().collect()).collect();
    json!({
        "model": "m", "stream": true,
        "messages": [{"role": "user", "content": "Who is Ann?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema()}},
        "x_fake": {"pieces": pieces}
    })
    .to_string()
}

#[tokio::test]
async fn streams_are_checked_at_their_end() {
    let fake = FakeUpstream::start().await;
    let gw = start_with(&config(&fake.base_url(), &guard(1, "error"))).await;
    let url = gw.url("/v1/chat/completions");
    let r = post_json(&url, chat_stream(VALID), &[]).await.unwrap();
    let (text, done, error) = streamed(&r.text());
    assert_eq!((text.as_str(), done, error), (VALID, true, None));
    let id = unique("stream");
    let r = post_json(&url, chat_stream(INVALID), &[("x-request-id", id.as_str())])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let (text, done, error) = streamed(&r.text());
    assert_eq!(text, INVALID, "the bytes were already sent");
    assert!(!done, "no [DONE] after a failed check");
    let error = error.expect("an error event");
    assert_eq!(error["code"], "output_validation_failed");
    assert!(
        error["message"].as_str().unwrap().contains("$.age"),
        "{error}"
    );
    assert_eq!(fake.request_count(), 2, "a stream is not asked again");
    // Its record ends the moment the stream does: wait for it.
    let ledger = gw.state.ledger.as_ref().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        ledger.flush().await;
        let records = ledger.export(0).await.unwrap();
        if let Some(r) = records.iter().find(|r| r.request_id == id) {
            break r.status;
        }
        assert!(std::time::Instant::now() < deadline, "no spend record");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(status, 502);
    let metrics = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains(
            r#"sluice_guardrail_findings_total{guardrail="shape",detector="json_schema",action="error"} 1"#
        ),
        "{metrics}"
    );
}
