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

// === Tool calls ===

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
            "days": {"type": "integer", "minimum": 1}},
            "required": ["city"], "additionalProperties": false}}}])
}

/// An assistant message calling `name` with `arguments`.
fn calling(name: &str, arguments: &str) -> Value {
    json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
        "type": "function", "function": {"name": name, "arguments": arguments}}]})
}

/// A fake OpenAI upstream answering its chat requests with `messages` in turn (the last
/// one again once they run out; a list of several: one choice each).
async fn scripted_messages(messages: Vec<Value>) -> (String, Recorded) {
    let n = Arc::new(AtomicUsize::new(0));
    let (addr, seen) = fake_provider(move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst).min(messages.len() - 1);
        let choices: Vec<Value> = match &messages[i] {
            Value::Array(several) => several.clone(),
            one => vec![one.clone()],
        }
        .into_iter()
        .enumerate()
        .map(|(k, m)| json!({"index": k, "finish_reason": "stop", "message": m}))
        .collect();
        let body = json!({
            "id": format!("chatcmpl-{i}"), "object": "chat.completion", "created": 1,
            "model": "upstream-m", "choices": choices,
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        });
        let body = http_body_util::Full::new(bytes::Bytes::from(body.to_string())).boxed();
        (200, "application/json", body)
    })
    .await;
    (format!("http://{addr}/v1"), seen)
}

async fn ask_tools(
    gw: &Gateway,
    request_id: &str,
    extra: Value,
) -> sluice_testkit::client::TestResponse {
    let mut body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": weather_tools()
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post_json(
        &gw.url("/v1/chat/completions"),
        body.to_string(),
        &[("x-request-id", request_id)],
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn tool_call_arguments_that_miss_their_schema_are_asked_for_again() {
    let bad = calling("get_weather", r#"{"city": 75001}"#);
    let good = calling("get_weather", r#"{"city": "Paris", "days": 2}"#);
    let (url, seen) = scripted_messages(vec![bad, good.clone()]).await;
    let gw = start_with(&config(&url, &guard(1, "error"))).await;
    let id = unique("tool-fixed");
    let r = ask_tools(&gw, &id, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["tool_calls"],
        good["tool_calls"]
    );
    assert_eq!(seen.lock().unwrap().len(), 2, "asked twice");
    assert_eq!(r.header("x-sluice-attempts"), Some("2"));
    let rec = record(&gw, &id).await;
    assert_eq!((rec.prompt_tokens, rec.completion_tokens), (20, 10));
    assert_eq!(
        rec.guardrails.as_deref(),
        Some("shape:tool_arguments:retry=1")
    );
    let metrics = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains(
            r#"sluice_guardrail_findings_total{guardrail="shape",detector="tool_arguments",action="retry"} 1"#
        ),
        "{metrics}"
    );
    // Arguments that match pass at once, `strict` or not; so does a plain answer.
    let (url, seen) = scripted_messages(vec![
        good,
        json!({"role": "assistant", "content": "Sunny."}),
    ])
    .await;
    let gw = start_with(&config(&url, &guard(1, "error"))).await;
    assert_eq!(ask_tools(&gw, &unique("ok"), json!({})).await.status, 200);
    assert_eq!(ask_tools(&gw, &unique("ok2"), json!({})).await.status, 200);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn tool_calls_that_stay_invalid_are_refused_naming_the_tool_and_the_path() {
    for (arguments, want) in [
        (
            r#"{"city": 75001}"#,
            "tool call 0 to `get_weather`: $.city: is not of type `string`",
        ),
        (
            r#"{"city": "Paris", "days": 0}"#,
            "tool call 0 to `get_weather`: $.days:",
        ),
        (r#"{"town": "Paris"}"#, "tool call 0 to `get_weather`: $:"),
        (
            r#"{"city": "Par"#,
            "tool call 0 to `get_weather`: the arguments are not JSON",
        ),
    ] {
        let (url, seen) = scripted_messages(vec![calling("get_weather", arguments)]).await;
        let gw = start_with(&config(&url, &guard(1, "error"))).await;
        let id = unique("tool-refused");
        let r = ask_tools(&gw, &id, json!({})).await;
        assert_eq!(r.status, 502, "{}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["code"], "output_validation_failed");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.contains(want) && message.contains("`shape`"),
            "{message}"
        );
        assert_eq!(seen.lock().unwrap().len(), 2);
        let rec = record(&gw, &id).await;
        assert_eq!(rec.status, 502);
        assert_eq!(
            rec.guardrails.as_deref(),
            Some("shape:tool_arguments:error=1,shape:tool_arguments:retry=1")
        );
    }
}

#[tokio::test]
async fn a_call_of_a_tool_that_was_not_offered_fails() {
    let launch = calling("launch_rocket", "{}");
    let (url, seen) = scripted_messages(vec![launch.clone()]).await;
    let gw = start_with(&config(&url, &guard(0, "pass"))).await;
    let id = unique("not-offered");
    let r = ask_tools(&gw, &id, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-output-valid"), Some("false"));
    let reason = r.header("x-sluice-output-invalid").unwrap();
    assert!(
        reason.contains("tool call 0 to `launch_rocket`: no tool `launch_rocket` was offered"),
        "{reason}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "no retries configured");
    assert_eq!(
        record(&gw, &id).await.guardrails.as_deref(),
        Some("shape:tool_arguments:pass=1")
    );
    // A structured output request offers no tools: any call fails (the format's check
    // passes, there being no content).
    let (url, _) = scripted_messages(vec![launch]).await;
    let gw = start_with(&config(&url, &guard(0, "error"))).await;
    let r = ask(&gw, &unique("format-call")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.text().contains("no tool `launch_rocket` was offered"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn tool_checks_can_be_switched_off_and_other_choices_are_checked_too() {
    let bad = calling("get_weather", r#"{"city": 75001}"#);
    let (url, seen) = scripted_messages(vec![bad.clone()]).await;
    let off =
        "\n[[guardrails]]\nname = \"shape\"\nvalidate_json = { retries = 1, tools = false }\n";
    let gw = start_with(&config(&url, off)).await;
    let r = ask_tools(&gw, &unique("off"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(seen.lock().unwrap().len(), 1, "tools not checked");
    // n = 2: the second choice's call fails, and the reason says which choice.
    let good = calling("get_weather", r#"{"city": "Paris"}"#);
    let (url, _) = scripted_messages(vec![json!([good, bad])]).await;
    let gw = start_with(&config(&url, &guard(0, "error"))).await;
    let r = ask_tools(&gw, &unique("n2"), json!({"n": 2})).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.text()
            .contains("choice 1: tool call 0 to `get_weather`: $.city"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn schemas_that_cannot_be_checked_are_refused_in_the_apis_shape() {
    let (url, seen) = scripted_messages(vec![json!({"role": "assistant", "content": "x"})]).await;
    let gw = start_with(&config(&url, &guard(1, "error"))).await;
    let chat = gw.url("/v1/chat/completions");
    let m = json!([{"role": "user", "content": "hi"}]);
    for (body, want) in [
        (
            json!({"model": "m", "messages": m, "tools": [{"type": "function", "function": {"name": "f", "parameters": 5}}]}),
            "tools[0].function.parameters: must be a JSON Schema object",
        ),
        (
            json!({"model": "m", "messages": m, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}},
                {"type": "function", "function": {"parameters": {}}}]}),
            "tools[1].function.name",
        ),
        (
            json!({"model": "m", "messages": m, "tools": {"f": {}}}),
            "tools: must be a list",
        ),
        (
            json!({"model": "m", "messages": m, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": "object"}}}),
            "response_format.json_schema.schema",
        ),
    ] {
        let r = post_json(&chat, body.to_string(), &[]).await.unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["type"], "invalid_request_error", "{e}");
        assert!(e["message"].as_str().unwrap().contains(want), "{e}");
    }
    // Through `/v1/messages`: Anthropic's error shape.
    let body = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "f", "input_schema": [1, 2]}]});
    let r = post_json(&gw.url("/v1/messages"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    for (format, want) in [
        (
            json!({"output_config": {"format": {"type": "json_object"}}}),
            "output_config.format.type",
        ),
        (
            json!({"output_config": {"format": {"type": "json_schema"}}}),
            "output_config.format.schema",
        ),
        (
            json!({"output_format": {"type": "json_schema", "schema": 3}}),
            "output_format.schema",
        ),
    ] {
        let mut body = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in format.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = post_json(&gw.url("/v1/messages"), body.to_string(), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(want),
            "{}",
            r.text()
        );
    }
    assert_eq!(seen.lock().unwrap().len(), 0, "nothing went upstream");
}

// === Anthropic's Messages API ===

#[tokio::test]
async fn messages_structured_output_and_tool_use_are_validated() {
    for format in [
        json!({"output_config": {"format": {"type": "json_schema", "schema": schema()}}}),
        json!({"output_format": {"type": "json_schema", "schema": schema()}}),
    ] {
        let (url, seen) = scripted(&[INVALID, VALID]).await;
        let gw = start_with(&config(&url, &guard(1, "error"))).await;
        let mut body = json!({"model": "m", "max_tokens": 100,
            "messages": [{"role": "user", "content": "Who is Ann?"}]});
        for (k, v) in format.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = post_json(&gw.url("/v1/messages"), body.to_string(), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["content"][0]["text"], VALID);
        let sent = seen.lock().unwrap();
        assert_eq!(sent.len(), 2, "the invalid answer was asked for again");
        assert_eq!(sent[0].json["response_format"]["type"], "json_schema");
        assert_eq!(
            sent[0].json["response_format"]["json_schema"]["schema"],
            schema()
        );
    }

    // tool_use input against the tool's input_schema: refused in Anthropic's shape.
    let (url, seen) = scripted_messages(vec![calling("get_weather", r#"{"city": 75001}"#)]).await;
    let gw = start_with(&config(&url, &guard(1, "error"))).await;
    let body = json!({"model": "m", "max_tokens": 100,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"name": "get_weather", "strict": true,
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]});
    let r = post_json(&gw.url("/v1/messages"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("tool call 0 to `get_weather`: $.city"),
        "{message}"
    );
    let sent = seen.lock().unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].json["tools"][0]["function"]["strict"], true);
}

// === Streams: tool calls, several choices ===

/// Each choice's content of a streamed chat answer, whether it ended with `[DONE]`, and
/// its error.
fn streamed_choices(body: &str) -> (Vec<String>, bool, Option<Value>) {
    let (mut texts, mut done, mut error) = (Vec::<String>::new(), false, None);
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if v.get("error").is_some() {
            error = Some(v["error"].clone());
        }
        for c in v["choices"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().unwrap() as usize;
            if texts.len() <= i {
                texts.resize(i + 1, String::new());
            }
            texts[i].push_str(c["delta"]["content"].as_str().unwrap_or_default());
        }
    }
    (texts, done, error)
}

fn tool_stream(arguments: &str) -> String {
    json!({
        "model": "m", "stream": true,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": weather_tools(),
        "x_fake": {"tool_call": {"name": "get_weather", "arguments": arguments}}
    })
    .to_string()
}

async fn stream_status(gw: &Gateway, id: &str) -> (u16, Option<String>) {
    let ledger = gw.state.ledger.as_ref().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        ledger.flush().await;
        let records = ledger.export(0).await.unwrap();
        if let Some(r) = records.iter().find(|r| r.request_id == id) {
            return (r.status, r.guardrails.clone());
        }
        assert!(std::time::Instant::now() < deadline, "no spend record");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn streamed_tool_call_arguments_are_gathered_and_checked_at_the_end() {
    let fake = FakeUpstream::start().await;
    let gw = start_with(&config(&fake.base_url(), &guard(1, "error"))).await;
    let url = gw.url("/v1/chat/completions");
    let r = post_json(&url, tool_stream(r#"{"city": "Paris", "days": 3}"#), &[])
        .await
        .unwrap();
    let (_, done, error) = streamed_choices(&r.text());
    assert_eq!((done, error), (true, None), "{}", r.text());
    let id = unique("tool-stream");
    let r = post_json(
        &url,
        tool_stream(r#"{"city": 75001}"#),
        &[("x-request-id", id.as_str())],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let (_, done, error) = streamed_choices(&r.text());
    assert!(!done, "no [DONE] after a failed check");
    let error = error.expect("an error event");
    assert_eq!(error["code"], "output_validation_failed");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("tool call 0 to `get_weather`: $.city"),
        "{message}"
    );
    assert_eq!(fake.request_count(), 2, "a stream is not asked again");
    assert_eq!(
        stream_status(&gw, &id).await,
        (502, Some("shape:tool_arguments:error=1".into()))
    );

    // Passed: the stream ends as usual, the failure counted.
    let gw = start_with(&config(&fake.base_url(), &guard(1, "pass"))).await;
    let id = unique("tool-stream-pass");
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        tool_stream(r#"{"city": "Paris", "extra": 1}"#),
        &[("x-request-id", id.as_str())],
    )
    .await
    .unwrap();
    let (_, done, error) = streamed_choices(&r.text());
    assert_eq!((done, error), (true, None));
    assert_eq!(
        stream_status(&gw, &id).await.1.as_deref(),
        Some("shape:tool_arguments:pass=1")
    );
}

/// Chunk events of two choices, interleaved, with `[DONE]`.
fn two_choices(first: &str, second: &str) -> Vec<String> {
    let chunk = |index: usize, delta: Value, finish: Option<&str>| {
        let c = json!({"id": "chatcmpl-r", "object": "chat.completion.chunk", "created": 1,
            "model": "upstream-m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let split = |s: &str| -> (String, String) {
        let cut = s.len() / 2;
        (s[..cut].to_string(), s[cut..].to_string())
    };
    let ((a1, a2), (b1, b2)) = (split(first), split(second));
    vec![
        chunk(0, json!({"role": "assistant", "content": ""}), None),
        chunk(1, json!({"role": "assistant", "content": ""}), None),
        chunk(0, json!({"content": a1}), None),
        chunk(1, json!({"content": b1}), None),
        chunk(0, json!({"content": a2}), None),
        chunk(1, json!({"content": b2}), None),
        chunk(0, json!({}), Some("stop")),
        chunk(1, json!({}), Some("stop")),
        "data: [DONE]\n\n".to_string(),
    ]
}

fn n2_stream(events: Vec<String>) -> String {
    json!({
        "model": "m", "stream": true, "n": 2,
        "messages": [{"role": "user", "content": "Who is Ann?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema()}},
        "x_fake": {"replay": events}
    })
    .to_string()
}

#[tokio::test]
async fn every_choice_of_a_stream_is_checked_and_kept_apart() {
    let fake = FakeUpstream::start().await;
    let gw = start_with(&config(&fake.base_url(), &guard(1, "error"))).await;
    let url = gw.url("/v1/chat/completions");
    let r = post_json(&url, n2_stream(two_choices(VALID, VALID)), &[])
        .await
        .unwrap();
    let (texts, done, error) = streamed_choices(&r.text());
    assert_eq!(
        (texts, done, error),
        (vec![VALID.to_string(), VALID.to_string()], true, None)
    );
    let r = post_json(&url, n2_stream(two_choices(VALID, INVALID)), &[])
        .await
        .unwrap();
    let (texts, done, error) = streamed_choices(&r.text());
    assert_eq!(texts, [VALID, INVALID]);
    assert!(!done);
    let message = error.expect("an error event")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("choice 1: $.age: is not of type `integer`"),
        "{message}"
    );

    // With a detector on answers too, each choice is held back on its own: its content
    // stays in its choice, redacted.
    let pii = "\n[[guardrails]]\nname = \"pii\"\ndetectors = [\"email\"]\naction = \"redact\"\napply_to = \"answers\"\n";
    let toml = config(&fake.base_url(), &(guard(1, "error") + pii)).replace(
        "guardrails = [\"shape\"]",
        "guardrails = [\"shape\", \"pii\"]",
    );
    let gw = start_with(&toml).await;
    let first = r#"{"name": "ann@example.com", "age": 31}"#;
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        n2_stream(two_choices(first, VALID)),
        &[],
    )
    .await
    .unwrap();
    let (texts, done, error) = streamed_choices(&r.text());
    assert_eq!(
        (texts, done, error),
        (
            vec![
                r#"{"name": "[EMAIL_1]", "age": 31}"#.to_string(),
                VALID.to_string()
            ],
            true,
            None
        ),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn messages_and_responses_tool_calls_are_checked_streamed_and_whole() {
    // A Messages stream whose tool_use input misses the schema ends with an `error` event.
    let fake = FakeUpstream::start().await;
    let gw = start_with(&config(&fake.base_url(), &guard(1, "error"))).await;
    let body = json!({"model": "m", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"name": "get_weather", "input_schema": weather_tools()[0]["function"]["parameters"]}],
        "x_fake": {"tool_call": {"name": "get_weather", "arguments": "{\"city\": 75001}"}}});
    let r = post_json(&gw.url("/v1/messages"), body.to_string(), &[])
        .await
        .unwrap();
    let text = r.text();
    assert!(
        text.contains("event: tool_use") || text.contains("\"tool_use\""),
        "{text}"
    );
    assert!(text.contains("event: error"), "{text}");
    assert!(
        text.contains("tool call 0 to `get_weather`: $.city"),
        "{text}"
    );
    assert!(!text.contains("event: message_stop"), "{text}");

    // The Responses API's function tools, whole.
    let bad = calling("get_weather", r#"{"city": 75001}"#);
    let (url, seen) = scripted_messages(vec![bad]).await;
    let gw = start_with(&config(&url, &guard(1, "error"))).await;
    let body = json!({"model": "m", "input": "Weather in Paris?", "tools": [{"type": "function",
        "name": "get_weather", "parameters": weather_tools()[0]["function"]["parameters"]}]});
    let r = post_json(&gw.url("/v1/responses"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "output_validation_failed");
    assert!(
        r.text().contains("tool call 0 to `get_weather`: $.city"),
        "{}",
        r.text()
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}
