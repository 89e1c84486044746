//! `POST /v1/responses` to a native upstream (`responses = "native"` on an `openai`
//! provider, as OpenAI's own API is by default): the request goes to `{base_url}/responses`
//! as the client sent it but for `model`, the answer comes back as it came, whole or
//! streamed; sluice stores it, expands `previous_response_id` itself, counts it, and falls
//! back to translated providers.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{config_for, start_with};
use serde_json::{json, Value};
use sluice_testkit::client::{get, post_json, post_stream, TestResponse};
use sluice_testkit::{Behavior, FakeUpstream};

async fn native() -> (FakeUpstream, common::Gateway) {
    let fake = FakeUpstream::start().await;
    fake.set_recording(true);
    let gw = start_with(&config_for(&fake.base_url(), "responses = \"native\"")).await;
    (fake, gw)
}

async fn create(gw: &common::Gateway, body: &Value) -> TestResponse {
    post_json(&gw.url("/v1/responses"), body.to_string(), &[])
        .await
        .unwrap()
}

async fn stream_text(gw: &common::Gateway, body: &Value) -> String {
    let mut s = post_stream(&gw.url("/v1/responses"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    String::from_utf8(s.collect_body().await.unwrap().to_vec()).unwrap()
}

/// `(event name, data)` of each event of an SSE text.
fn events(raw: &str) -> Vec<(String, Value)> {
    raw.split("\n\n")
        // Blank blocks, and sluice's closing comment (`: x-sluice-cost-usd ...`).
        .filter(|b| !b.trim().is_empty() && !b.starts_with(':'))
        .map(|block| {
            let name = block
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_default();
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or_else(|| panic!("no data in {block:?} of {raw}"));
            (name.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

fn upstream_bodies(fake: &FakeUpstream, path: &str) -> Vec<Value> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path == path)
        .map(|r| r.json().unwrap())
        .collect()
}

#[tokio::test]
async fn a_whole_answer_passes_through_byte_for_byte_and_the_request_too() {
    let (fake, gw) = native().await;
    let translatable = json!({
        "model": "m", "input": "Hello", "instructions": "Be brief.", "store": true,
        "metadata": {"k": "v"}, "max_output_tokens": 50
    });
    let r = create(&gw, &translatable).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = fake.take_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/responses");
    let mut expected = translatable.clone();
    expected["model"] = json!("upstream-m");
    assert_eq!(sent[0].json().unwrap(), expected, "only the model changed");
    assert_eq!(
        sent[0].header("authorization"),
        Some("Bearer sk-upstream"),
        "the provider's key"
    );
    let v = r.json();
    assert!(
        v["id"].as_str().unwrap().starts_with("resp_fake_"),
        "the upstream's own id: {v}"
    );
    assert_eq!(v["model"], "upstream-m", "the upstream's object, untouched");
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        "Hello from the fake upstream."
    );
    assert_eq!(r.header("x-sluice-provider"), Some("fake"));
    // The fake's answer to the same request, asked directly, is the same bytes but for
    // the creation time.
    let direct = post_json(&fake.url("/v1/responses"), expected.to_string(), &[])
        .await
        .unwrap();
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("created_at");
        v.as_object_mut().unwrap().remove("id");
        v["output"][0].as_object_mut().unwrap().remove("id");
        v
    };
    assert_eq!(strip(direct.json()), strip(v));
}

#[tokio::test]
async fn a_stream_passes_through_event_by_event_and_is_stored() {
    let (fake, gw) = native().await;
    let body = json!({"model": "m", "input": "Hello", "stream": true});
    let raw = stream_text(&gw, &body).await;
    let direct = {
        let mut upstream = body.clone();
        upstream["model"] = json!("upstream-m");
        let mut s = post_stream(&fake.url("/v1/responses"), upstream.to_string(), &[])
            .await
            .unwrap();
        String::from_utf8(s.collect_body().await.unwrap().to_vec()).unwrap()
    };
    let names = |raw: &str| -> Vec<String> { events(raw).into_iter().map(|e| e.0).collect() };
    assert_eq!(names(&raw), names(&direct));
    assert_eq!(
        names(&raw).first().map(String::as_str),
        Some("response.created")
    );
    assert_eq!(
        names(&raw).last().map(String::as_str),
        Some("response.completed")
    );
    let all = events(&raw);
    let deltas: String = all
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "Hello from the fake upstream.");
    let id = all[0].1["response"]["id"].as_str().unwrap().to_owned();
    // Stored under the upstream's id before the last event was sent.
    let stored = get(&gw.url(&format!("/v1/responses/{id}"))).await.unwrap();
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert_eq!(stored.json()["output"][0]["content"][0]["text"], deltas);
}

#[tokio::test]
async fn previous_response_id_is_expanded_by_sluice_for_the_native_upstream() {
    let (fake, gw) = native().await;
    let first = create(&gw, &json!({"model": "m", "input": "My name is Ann."})).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let first_id = first.json()["id"].as_str().unwrap().to_owned();
    let second = create(
        &gw,
        &json!({"model": "m", "input": "What is my name?", "previous_response_id": first_id}),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.text());
    // The answer says what it continued, though the upstream never saw the pointer.
    assert_eq!(second.json()["previous_response_id"], json!(first_id));
    let sent = upstream_bodies(&fake, "/v1/responses");
    assert_eq!(sent.len(), 2);
    let second_sent = &sent[1];
    assert!(
        second_sent.get("previous_response_id").is_none(),
        "{second_sent}"
    );
    let input = second_sent["input"].as_array().unwrap();
    assert_eq!(input.len(), 3, "{second_sent}");
    assert_eq!(input[0]["role"], "user");
    assert_eq!(input[0]["content"][0]["text"], "My name is Ann.");
    assert!(
        input[0].get("id").is_none(),
        "sluice's listing ids stay home"
    );
    assert_eq!(input[1]["type"], "message");
    assert_eq!(input[1]["role"], "assistant");
    assert_eq!(
        input[1],
        first.json()["output"][0],
        "the upstream's own item, as it came"
    );
    assert_eq!(
        input[2],
        json!({"role": "user", "content": "What is my name?"})
    );
    // The conversation lists as OpenAI lists it.
    let second_id = second.json()["id"].as_str().unwrap().to_owned();
    let items = get(&gw.url(&format!("/v1/responses/{second_id}/input_items?order=asc")))
        .await
        .unwrap();
    assert_eq!(items.status, 200, "{}", items.text());
    assert_eq!(items.json()["data"].as_array().unwrap().len(), 3);
    // Streamed, every `response` object says it too, the stored one included.
    let raw = stream_text(
        &gw,
        &json!({"model": "m", "input": "Again?", "previous_response_id": second_id,
                "stream": true}),
    )
    .await;
    let all = events(&raw);
    for (name, data) in all.iter().filter(|(_, d)| d.get("response").is_some()) {
        assert_eq!(
            data["response"]["previous_response_id"],
            json!(second_id),
            "{name}"
        );
    }
    let third = all[0].1["response"]["id"].as_str().unwrap();
    let stored = get(&gw.url(&format!("/v1/responses/{third}")))
        .await
        .unwrap();
    assert_eq!(stored.json()["previous_response_id"], json!(second_id));
}

#[tokio::test]
async fn a_native_conversation_continues_on_a_translated_fallback() {
    // The route's first target is native, its second a chat-only OpenAI-compatible server.
    let native_fake = FakeUpstream::start().await;
    let chat_fake = FakeUpstream::start().await;
    chat_fake.set_recording(true);
    let toml = config_for(&native_fake.base_url(), "responses = \"native\"")
        + &format!(
            r#"
[[providers]]
name = "compat"
type = "openai"
base_url = "{}"
[[models]]
name = "c"
provider = "compat"
[[routes]]
name = "r"
targets = ["m", "c"]
"#,
            chat_fake.base_url()
        );
    let gw = start_with(&toml).await;
    let first = create(&gw, &json!({"model": "r", "input": "My name is Ann."})).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-sluice-provider"), Some("fake"));
    let first_id = first.json()["id"].as_str().unwrap().to_owned();
    // The native upstream fails: the next target answers through chat, continuing the
    // conversation the native one began.
    native_fake.set_default(Behavior::new().with_status(500));
    let second = create(
        &gw,
        &json!({"model": "r", "input": "What is my name?", "previous_response_id": first_id}),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.header("x-sluice-provider"), Some("compat"));
    let sent = upstream_bodies(&chat_fake, "/v1/chat/completions");
    let messages = sent[0]["messages"].as_array().unwrap();
    let texts: Vec<&str> = messages
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        texts,
        [
            "My name is Ann.",
            "Hello from the fake upstream.",
            "What is my name?"
        ],
        "{messages:?}"
    );
    // And the translated answer is in the Responses shape sluice writes.
    assert!(second.json()["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(second.json()["object"], "response");
}

#[tokio::test]
async fn usage_from_the_native_answer_is_counted_whole_and_streamed() {
    let (_fake, gw) = native().await;
    let usage = json!({"prompt_tokens": 100, "completion_tokens": 40, "cached_tokens": 30,
                       "cache_write_tokens": 0, "reasoning_tokens": 25});
    let whole = create(
        &gw,
        &json!({"model": "m", "input": "hi", "x_fake": {"usage": usage}}),
    )
    .await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    let mut s = post_stream(
        &gw.url("/v1/responses"),
        json!({"model": "m", "input": "hi", "stream": true, "x_fake": {"usage": usage}})
            .to_string(),
        &[],
    )
    .await
    .unwrap();
    let streamed_id = s.header("x-request-id").unwrap().to_owned();
    let _ = s.collect_body().await.unwrap();
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    for id in [whole.header("x-request-id").unwrap(), streamed_id.as_str()] {
        let rec = records.iter().find(|r| r.request_id == id).unwrap();
        assert_eq!(rec.endpoint, "responses");
        assert_eq!(
            (
                rec.prompt_tokens,
                rec.completion_tokens,
                rec.cached_tokens,
                rec.reasoning_tokens
            ),
            (100, 40, 30, 25)
        );
        assert!(!rec.usage_estimated);
        // input 1.0 and output 2.0 per million, no cached price: 100 in, 40 out.
        assert_eq!(rec.cost_nano_usd, 100 * 1_000 + 40 * 2_000);
    }
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_the_responses_error_event() {
    let (_fake, gw) = native().await;
    let raw = stream_text(
        &gw,
        &json!({"model": "m", "input": "hi", "stream": true, "x_fake": {"cut_after_chunks": 4}}),
    )
    .await;
    let all = events(&raw);
    let (name, last) = all.last().unwrap();
    assert_eq!(name, "error", "{raw}");
    assert_eq!(last["type"], "error");
    assert_eq!(last["code"], "stream_interrupted");
    assert_eq!(
        last["sequence_number"],
        all[all.len() - 2].1["sequence_number"].as_u64().unwrap() + 1
    );
    assert!(!raw.contains("\"response.completed\""));
}

#[tokio::test]
async fn an_openai_provider_with_a_custom_base_url_translates_to_chat() {
    // The contract: no `responses` key and a custom base_url → chat completions upstream.
    let fake = FakeUpstream::start().await;
    fake.set_recording(true);
    let gw = start_with(&config_for(&fake.base_url(), "")).await;
    let r = create(&gw, &json!({"model": "m", "input": "hi"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/chat/completions"]);
}

#[tokio::test]
async fn native_answers_are_never_cached() {
    let fake = FakeUpstream::start().await;
    fake.set_recording(true);
    let extra = "responses = \"native\"\n[cache]\nenabled = true";
    let gw = start_with(&config_for(&fake.base_url(), extra)).await;
    let body = json!({"model": "m", "input": "hi", "temperature": 0});
    for _ in 0..2 {
        let r = create(&gw, &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-sluice-cache"), Some("bypass"));
    }
    assert_eq!(upstream_bodies(&fake, "/v1/responses").len(), 2);
}

#[tokio::test]
async fn an_upstream_error_comes_back_in_openais_shape() {
    let (_fake, gw) = native().await;
    let r = create(
        &gw,
        &json!({"model": "m", "input": "hi", "x_fake": {"status": 400}}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn built_in_tools_go_to_native_upstreams_and_are_refused_by_name_elsewhere() {
    let native_fake = FakeUpstream::start().await;
    native_fake.set_recording(true);
    let chat_fake = FakeUpstream::start().await;
    let toml = config_for(&native_fake.base_url(), "responses = \"native\"")
        + &format!(
            r#"
[[providers]]
name = "compat"
type = "openai"
base_url = "{}"
[[models]]
name = "c"
provider = "compat"
[[routes]]
name = "r"
targets = ["m", "c"]
"#,
            chat_fake.base_url()
        );
    let gw = start_with(&toml).await;
    let body = json!({
        "model": "m", "input": "news?", "tools": [{"type": "web_search_preview"}],
        "tool_choice": {"type": "web_search_preview"}, "truncation": "auto",
        "include": ["web_search_call.action.sources"]
    });
    let r = create(&gw, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = native_fake.take_requests();
    let mut expected = body.clone();
    expected["model"] = json!("upstream-m");
    assert_eq!(sent[0].json().unwrap(), expected);
    // A model without a native upstream: 400 naming the field, nothing sent.
    let mut on_chat = body.clone();
    on_chat["model"] = json!("c");
    let r = create(&gw, &on_chat).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["param"], "tools");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("web_search_preview"),
        "{e}"
    );
    assert_eq!(chat_fake.request_count(), 0);
    // A route whose native target fails does not send it to the chat-only one.
    native_fake.set_default(Behavior::new().with_status(500));
    let mut on_route = body.clone();
    on_route["model"] = json!("r");
    let r = create(&gw, &on_route).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "tools");
    assert_eq!(chat_fake.request_count(), 0);
}

/// Fields the Responses API has that sluice's translation does not know (newer ones, a
/// reusable `prompt` standing for `input`) reach native upstreams as sent; a model served
/// through chat refuses them by name, sending nothing.
#[tokio::test]
async fn unknown_fields_go_to_native_upstreams_as_sent_and_are_refused_by_name_elsewhere() {
    let native_fake = FakeUpstream::start().await;
    native_fake.set_recording(true);
    let chat_fake = FakeUpstream::start().await;
    let toml = config_for(&native_fake.base_url(), "responses = \"native\"")
        + &format!(
            r#"
[[providers]]
name = "compat"
type = "openai"
base_url = "{}"
[[models]]
name = "c"
provider = "compat"
"#,
            chat_fake.base_url()
        );
    let gw = start_with(&toml).await;
    let body = json!({"model": "m", "prompt": {"id": "pmpt_1", "version": "2"},
                      "max_tool_calls": 2, "store": false});
    let r = create(&gw, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut expected = body.clone();
    expected["model"] = json!("upstream-m");
    assert_eq!(native_fake.take_requests()[0].json().unwrap(), expected);
    let mut on_chat = body.clone();
    on_chat["model"] = json!("c");
    on_chat["input"] = json!("hi");
    let r = create(&gw, &on_chat).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("`max_tool_calls` is not supported through chat"),
        "{message}"
    );
    assert_eq!(chat_fake.request_count(), 0);
}

#[tokio::test]
async fn a_routes_degraded_answer_after_native_failures_is_written_as_a_response() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Behavior::new().with_status(500));
    let toml = config_for(&fake.base_url(), "responses = \"native\"")
        + r#"
[[routes]]
name = "r"
targets = ["m"]
fallback_response = "We are busy, please retry in a minute."
"#;
    let gw = start_with(&toml).await;
    let r = create(&gw, &json!({"model": "r", "input": "hi"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-degraded"), Some("true"));
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        "We are busy, please retry in a minute."
    );
    let raw = stream_text(&gw, &json!({"model": "r", "input": "hi", "stream": true})).await;
    assert_eq!(
        events(&raw).last().map(|e| e.0.as_str()),
        Some("response.completed"),
        "{raw}"
    );
}

#[tokio::test]
async fn a_native_response_failed_event_is_passed_on_and_counted_as_a_failure() {
    let (fake, gw) = native().await;
    let failed = r#"{"type":"response.failed","sequence_number":1,"response":{"id":"resp_up_failed","object":"response","status":"failed","error":{"code":"server_error","message":"The model crashed."},"output":[],"usage":{"input_tokens":7,"output_tokens":0,"total_tokens":7}}}"#;
    fake.push(Behavior::new().with_replay([
        r#"event: response.created
data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_up_failed","object":"response","status":"in_progress","output":[]}}

"#
        .to_owned(),
        format!("event: response.failed\ndata: {failed}\n\n"),
    ]));
    let mut s = post_stream(
        &gw.url("/v1/responses"),
        json!({"model": "m", "input": "hi", "stream": true}).to_string(),
        &[],
    )
    .await
    .unwrap();
    let id = s.header("x-request-id").unwrap().to_owned();
    let raw = String::from_utf8(s.collect_body().await.unwrap().to_vec()).unwrap();
    let all = events(&raw);
    let names: Vec<&str> = all.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["response.created", "response.failed"], "{raw}");
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    let rec = records.iter().find(|r| r.request_id == id).unwrap();
    assert_eq!(rec.status, 502, "a failure, not a success");
    assert_eq!(rec.prompt_tokens, 7);
    // A failed response is not stored.
    let stored = get(&gw.url("/v1/responses/resp_up_failed")).await.unwrap();
    assert_eq!(stored.status, 404);
}
