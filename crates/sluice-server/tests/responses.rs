//! Inbound `POST /v1/responses`: OpenAI's Responses API in, served through the chat
//! pipeline by an OpenAI-shaped upstream (and any other provider through its chat
//! translation).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{fake_provider, full, setup, start_with};
use serde_json::{json, Value};
use sluice_testkit::client::{post_json, post_stream, TestResponse};
use sluice_testkit::{Behavior, FakeUpstream};

async fn create(gw: &common::Gateway, body: Value) -> TestResponse {
    post_json(&gw.url("/v1/responses"), body.to_string(), &[])
        .await
        .unwrap()
}

/// The events of a streamed answer: `(event name, data)`, checked to be well framed: the
/// SSE `event:` is the data's `type`, and `sequence_number`s count from 0.
async fn events(gw: &common::Gateway, body: Value) -> Vec<(String, Value)> {
    let mut s = post_stream(&gw.url("/v1/responses"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    let raw = String::from_utf8(s.collect_body().await.unwrap().to_vec()).unwrap();
    let mut out = Vec::new();
    for block in raw.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap();
        let data = block
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["type"], name, "{block}");
        assert_eq!(v["sequence_number"], out.len(), "{block}");
        out.push((name.to_owned(), v));
    }
    out
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn text_is_answered_as_a_response() {
    let (fake, gw) = setup("").await;
    let body = json!({
        "model": "m",
        "instructions": "Be brief.",
        "input": "Hello",
        "max_output_tokens": 100,
        "temperature": 0.5,
        "metadata": {"ticket": "42"},
        "user": "u1",
        "store": false,
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "low"}
    });
    let r = create(&gw, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "m");
    assert_eq!(v["instructions"], "Be brief.");
    assert_eq!(v["metadata"], json!({"ticket": "42"}));
    let item = &v["output"][0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["status"], "completed");
    assert_eq!(item["content"][0]["type"], "output_text");
    assert_eq!(item["content"][0]["text"], "Hello from the fake upstream.");
    assert_eq!(v["output_text"], "Hello from the fake upstream.");
    assert_eq!(v["usage"]["input_tokens"], 12);
    assert_eq!(v["usage"]["output_tokens"], 9);
    assert_eq!(v["usage"]["total_tokens"], 21);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(r.header("x-sluice-model"), Some("m"));
    let sent = fake.last_request().unwrap().json().unwrap();
    assert_eq!(sent["model"], "upstream-m");
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    );
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["temperature"], 0.5);
    assert_eq!(sent["user"], "u1");
    assert_eq!(sent["reasoning_effort"], "low");
    assert!(sent.get("metadata").is_none() && sent.get("store").is_none());
}

#[tokio::test]
async fn usage_details_and_the_spend_record_count_the_call() {
    let (_fake, gw) = setup("").await;
    let usage = json!({"prompt_tokens": 100, "completion_tokens": 40, "cached_tokens": 30,
                       "cache_write_tokens": 0, "reasoning_tokens": 25});
    let r = create(
        &gw,
        json!({"model": "m", "input": "hi", "x_fake": {"usage": usage}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let u = &r.json()["usage"];
    assert_eq!(u["input_tokens"], 100);
    assert_eq!(u["input_tokens_details"]["cached_tokens"], 30);
    assert_eq!(u["output_tokens"], 40);
    assert_eq!(u["output_tokens_details"]["reasoning_tokens"], 25);
    assert_eq!(u["total_tokens"], 140);
    let id = r.header("x-request-id").unwrap().to_owned();
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    let rec = records.iter().find(|r| r.request_id == id).unwrap();
    assert_eq!(rec.endpoint, "responses");
    assert_eq!((rec.prompt_tokens, rec.completion_tokens), (100, 40));
    assert_eq!(rec.cached_tokens, 30);
    // Token metrics count it too (under the chat operation's series, as /v1/messages).
    let metrics = sluice_testkit::client::get(&gw.url("/metrics"))
        .await
        .unwrap()
        .text();
    for line in [
        "endpoint=\"chat\",direction=\"in\"} 100",
        "endpoint=\"chat\",direction=\"out\"} 40",
        "endpoint=\"chat\",direction=\"cached_in\"} 30",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("sluice_tokens_total{") && l.ends_with(line)),
            "{line}: {metrics}"
        );
    }
}

#[tokio::test]
async fn the_cache_answers_a_repeated_response_whole_and_streamed() {
    let fake = FakeUpstream::start().await;
    let gw = start_with(&common::config_for(
        &fake.base_url(),
        "[cache]\nenabled = true",
    ))
    .await;
    let nonce = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
    let body = json!({"model": "m", "input": nonce, "temperature": 0});
    let first = create(&gw, body.clone()).await;
    assert_eq!(first.header("x-sluice-cache"), Some("miss"));
    let second = create(&gw, body.clone()).await;
    assert_eq!(second.header("x-sluice-cache"), Some("hit"));
    assert_eq!(second.json()["output_text"], first.json()["output_text"]);
    assert_eq!(fake.request_count(), 1);
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let evs = events(&gw, streamed).await;
    assert_eq!(
        fake.request_count(),
        1,
        "the stream was answered from the cache"
    );
    let (last, v) = evs.last().unwrap();
    assert_eq!(last, "response.completed");
    assert_eq!(
        v["response"]["output_text"],
        "Hello from the fake upstream."
    );
}

#[tokio::test]
async fn a_function_call_comes_back_as_an_item() {
    let (fake, gw) = setup("").await;
    let body = json!({
        "model": "m",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]}],
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather now",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                   "strict": true}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": false,
        "x_fake": {"tool_call": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
    });
    let r = create(&gw, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "completed");
    let call = &v["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["call_id"], "call_fake_1");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], "{\"city\":\"Paris\"}");
    assert!(call["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(v["output"].as_array().unwrap().len(), 1);
    let sent = fake.last_request().unwrap().json().unwrap();
    assert_eq!(
        sent["tools"][0],
        json!({"type": "function", "function": {"name": "get_weather", "description": "Weather now",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
               "strict": true}})
    );
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(sent["parallel_tool_calls"], false);
    assert_eq!(
        sent["messages"][0]["content"],
        json!([{"type": "text", "text": "Weather in Paris?"}])
    );
}

#[tokio::test]
async fn a_streamed_function_call_arrives_argument_by_argument() {
    let (_fake, gw) = setup("").await;
    let body = json!({
        "model": "m", "stream": true, "input": "Weather in Paris?",
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "x_fake": {"tool_call": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
    });
    let evs = events(&gw, body).await;
    let n = names(&evs);
    assert_eq!(
        &n[..3],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added"
        ]
    );
    assert_eq!(n.last(), Some(&"response.completed"));
    let added = &evs[2].1;
    assert_eq!(added["output_index"], 0);
    assert_eq!(added["item"]["type"], "function_call");
    assert_eq!(added["item"]["call_id"], "call_fake_1");
    assert_eq!(added["item"]["name"], "get_weather");
    let item_id = added["item"]["id"].clone();
    let deltas: Vec<&Value> = evs
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, v)| v)
        .collect();
    assert!(deltas.len() >= 2, "arguments in pieces: {n:?}");
    assert!(deltas
        .iter()
        .all(|d| d["item_id"] == item_id && d["output_index"] == 0));
    let joined: String = deltas
        .iter()
        .map(|d| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(joined, "{\"city\":\"Paris\"}");
    let done = evs
        .iter()
        .find(|(n, _)| n == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done.1["arguments"], "{\"city\":\"Paris\"}");
    let item_done = evs
        .iter()
        .find(|(n, _)| n == "response.output_item.done")
        .unwrap();
    assert_eq!(item_done.1["item"]["status"], "completed");
    assert_eq!(item_done.1["item"]["arguments"], "{\"city\":\"Paris\"}");
    let completed = &evs.last().unwrap().1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["output"][0]["type"], "function_call");
    assert_eq!(completed["usage"]["input_tokens"], 12);
    assert!(!n.contains(&"response.content_part.added"));
}

#[tokio::test]
async fn streamed_text_follows_the_event_sequence() {
    let (fake, gw) = setup("").await;
    let evs = events(&gw, json!({"model": "m", "stream": true, "input": "Hi"})).await;
    let n = names(&evs);
    let deltas = n
        .iter()
        .filter(|e| **e == "response.output_text.delta")
        .count();
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(n, expected);
    let text: String = evs
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, v)| v["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello from the fake upstream.");
    let done = evs
        .iter()
        .find(|(n, _)| n == "response.output_text.done")
        .unwrap();
    assert_eq!(done.1["text"], text);
    assert_eq!(done.1["content_index"], 0);
    let created = &evs[0].1["response"];
    assert_eq!(created["status"], "in_progress");
    let completed = &evs.last().unwrap().1["response"];
    assert_eq!(completed["id"], created["id"]);
    assert_eq!(completed["output"][0]["content"][0]["text"], text);
    assert_eq!(completed["usage"]["output_tokens"], 5);
    let sent = fake.last_request().unwrap().json().unwrap();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn function_call_output_is_fed_back_as_a_tool_message() {
    let (fake, gw) = setup("").await;
    let body = json!({
        "model": "m",
        "input": [
            {"type": "message", "role": "user", "content": "Weather in Paris?"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
             "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "{\"temp\":21}"}
        ]
    });
    let r = create(&gw, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = fake.last_request().unwrap().json().unwrap();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
              "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":21}"}
        ])
    );
}

#[tokio::test]
async fn structured_output_becomes_a_response_format() {
    let (fake, gw) = setup("").await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}},
                        "required": ["answer"], "additionalProperties": false});
    let body = json!({
        "model": "m", "input": "Answer in JSON",
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": true}},
        "x_fake": {"content": "{\"answer\":\"yes\"}"}
    });
    let r = create(&gw, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["output_text"], "{\"answer\":\"yes\"}");
    assert_eq!(r.json()["text"]["format"]["type"], "json_schema");
    let sent = fake.last_request().unwrap().json().unwrap();
    assert_eq!(
        sent["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": true}})
    );
    let body = json!({"model": "m", "input": "JSON", "text": {"format": {"type": "json_object"}}});
    assert_eq!(create(&gw, body).await.status, 200);
    let sent = fake.last_request().unwrap().json().unwrap();
    assert_eq!(sent["response_format"], json!({"type": "json_object"}));
}

const LENGTH_WHOLE: &str = r#"{"id":"chatcmpl-len","object":"chat.completion","created":1,"model":"x","choices":[{"index":0,"message":{"role":"assistant","content":"Once upon"},"finish_reason":"length"}],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#;
const LENGTH_STREAM: &str = "data: {\"id\":\"chatcmpl-len\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Once\"},\"finish_reason\":null}]}\n\ndata: {\"id\":\"chatcmpl-len\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" upon\"},\"finish_reason\":\"length\"}]}\n\ndata: {\"id\":\"chatcmpl-len\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\ndata: [DONE]\n\n";

#[tokio::test]
async fn max_output_tokens_ends_incomplete() {
    let (addr, seen) = fake_provider(|s| match s.json["stream"].as_bool() {
        Some(true) => (200, "text/event-stream", full(LENGTH_STREAM)),
        _ => (200, "application/json", full(LENGTH_WHOLE)),
    })
    .await;
    let gw = start_with(&common::config_for(&format!("http://{addr}/v1"), "")).await;
    let r = create(
        &gw,
        json!({"model": "m", "input": "A story", "max_output_tokens": 2}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(v["output"][0]["status"], "incomplete");
    assert_eq!(v["output_text"], "Once upon");
    assert_eq!(seen.lock().unwrap()[0].json["max_tokens"], 2);
    let evs = events(
        &gw,
        json!({"model": "m", "input": "A story", "stream": true}),
    )
    .await;
    let (last, v) = evs.last().unwrap();
    assert_eq!(last, "response.incomplete");
    assert_eq!(
        v["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(v["response"]["usage"]["output_tokens"], 2);
    let item_done = evs
        .iter()
        .find(|(n, _)| n == "response.output_item.done")
        .unwrap();
    assert_eq!(item_done.1["item"]["status"], "incomplete");
}

#[tokio::test]
async fn errors_come_back_in_openai_shape() {
    let (fake, gw) = setup("").await;
    fake.push(Behavior::new().with_error(
        400,
        r#"{"error":{"message":"bad thing","type":"invalid_request_error","param":"input","code":null}}"#,
    ));
    let r = create(&gw, json!({"model": "m", "input": "x"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["message"], "bad thing");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = create(&gw, json!({"model": "nope", "input": "x"})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["param"], "model");
    // A stream that breaks midway ends with `response.failed`, never a silent cut.
    let body = json!({"model": "m", "input": "x", "stream": true,
                      "x_fake": {"cut_after_chunks": 2}});
    let evs = events(&gw, body).await;
    let (last, v) = evs.last().unwrap();
    assert_eq!(last, "response.failed");
    assert_eq!(v["response"]["status"], "failed");
    assert!(v["response"]["error"]["message"].as_str().is_some());
}

#[tokio::test]
async fn what_cannot_be_honoured_is_refused_by_name() {
    let (fake, gw) = setup("").await;
    let cases = [
        (
            json!({"tools": [{"type": "web_search_preview"}]}),
            "tools",
            "web_search_preview",
        ),
        (
            json!({"tool_choice": {"type": "file_search"}}),
            "tool_choice",
            "file_search",
        ),
        (json!({"truncation": "auto"}), "truncation", "auto"),
        (
            json!({"input": [{"type": "item_reference", "id": "x"}]}),
            "input",
            "item_reference",
        ),
        (
            json!({"input": [{"type": "computer_call"}]}),
            "input",
            "input[0].type",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "input",
            "input_audio",
        ),
        (
            json!({"include": ["file_search_call.results"]}),
            "include",
            "include[0]",
        ),
    ];
    for (extra, param, says) in cases {
        let mut body = json!({"model": "m", "input": "x"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = create(&gw, body.clone()).await;
        assert_eq!(r.status, 400, "{body}");
        let e = &r.json()["error"];
        assert_eq!(e["param"], param, "{body}: {e}");
        assert!(e["message"].as_str().unwrap().contains(says), "{body}: {e}");
    }
    let r = create(&gw, json!({"model": "m", "input": "x", "seed": 1})).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("seed"));
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn a_route_falls_back_for_responses() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{dir}"
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
[[models]]
name = "b"
provider = "pb"
[[routes]]
name = "r"
strategy = "fallback"
targets = ["a", "b"]
"#,
        dir = std::env::temp_dir()
            .join("sluice-test-data")
            .join(
                env!("CARGO_MANIFEST_DIR")
                    .trim_start_matches('/')
                    .replace('/', "_")
            )
            .display(),
        a = fa.base_url(),
        b = fb.base_url(),
    );
    let gw = start_with(&toml).await;
    fa.set_default(Behavior::new().with_status(500));
    let r = create(&gw, json!({"model": "r", "input": "hi"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-model"), Some("b"));
    assert_eq!(r.header("x-sluice-route"), Some("r"));
    assert_eq!(r.json()["model"], "r");
    assert_eq!(r.json()["output_text"], "Hello from the fake upstream.");
    assert!(fa.request_count() >= 1);
    let evs = events(&gw, json!({"model": "r", "input": "hi", "stream": true})).await;
    assert_eq!(evs.last().unwrap().0, "response.completed");
}

#[tokio::test]
async fn previous_response_id_continues_a_stored_conversation() {
    let (fake, gw) = setup("").await;
    let r1 = create(&gw, json!({"model": "m", "input": "My name is Ann."})).await;
    assert_eq!(r1.status, 200, "{}", r1.text());
    let id1 = r1.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(r1.json()["store"], true);
    let body = json!({"model": "m", "input": "What is my name?", "instructions": "Be brief.",
                      "previous_response_id": id1, "stream": true});
    let evs = events(&gw, body).await;
    let done = &evs.last().unwrap().1["response"];
    assert_eq!(done["previous_response_id"], id1.as_str());
    let id2 = done["id"].as_str().unwrap().to_owned();
    assert_ne!(id1, id2);
    let sent = fake.last_request().unwrap().json().unwrap();
    let answer = "Hello from the fake upstream.";
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "My name is Ann."},
               {"role": "assistant", "content": answer},
               {"role": "user", "content": "What is my name?"}])
    );
    // The streamed answer was kept too, tool calls included.
    let body = json!({"model": "m", "input": "Call it", "previous_response_id": id2,
                      "x_fake": {"tool_call": {"name": "f", "arguments": "{}"}}});
    let r3 = create(&gw, body).await;
    assert_eq!(r3.status, 200, "{}", r3.text());
    let sent = fake.last_request().unwrap().json().unwrap();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 5, "{sent}");
    assert_eq!(
        sent["messages"][3],
        json!({"role": "assistant", "content": answer})
    );
    let id3 = r3.json()["id"].as_str().unwrap().to_owned();
    let body = json!({"model": "m", "previous_response_id": id3, "input": [
        {"type": "function_call_output", "call_id": "call_fake_1", "output": "done"}]});
    assert_eq!(create(&gw, body).await.status, 200);
    let sent = fake.last_request().unwrap().json().unwrap();
    assert_eq!(
        sent["messages"][5],
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_fake_1",
               "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
    );
    assert_eq!(
        sent["messages"][6],
        json!({"role": "tool", "tool_call_id": "call_fake_1", "content": "done"})
    );
}

#[tokio::test]
async fn an_unknown_or_unstored_previous_response_is_refused() {
    let (fake, gw) = setup("").await;
    let r = create(
        &gw,
        json!({"model": "m", "input": "x", "previous_response_id": "resp_nope"}),
    )
    .await;
    assert_eq!(r.status, 404);
    let e = &r.json()["error"];
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["param"], "previous_response_id");
    assert_eq!(e["code"], "previous_response_not_found");
    assert!(e["message"].as_str().unwrap().contains("resp_nope"));
    let r = create(&gw, json!({"model": "m", "input": "x", "store": false})).await;
    assert_eq!(r.json()["store"], false);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = create(
        &gw,
        json!({"model": "m", "input": "y", "previous_response_id": id}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("store: false"));
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn a_key_sees_only_its_own_responses() {
    let fake = FakeUpstream::start().await;
    let toml = common::config_for(&fake.base_url(), "").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nmaster_key = \"sk-admin\"",
    );
    let gw = start_with(&toml).await;
    let mut keys = Vec::new();
    for name in ["resp-a", "resp-b"] {
        let r = post_json(
            &gw.url("/admin/keys"),
            json!({"name": name}).to_string(),
            &[("authorization", "Bearer sk-admin")],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
        keys.push(format!("Bearer {}", r.json()["key"].as_str().unwrap()));
    }
    let ask = |key: &str, body: Value| {
        let url = gw.url("/v1/responses");
        let key = key.to_owned();
        async move {
            post_json(&url, body.to_string(), &[("authorization", &key)])
                .await
                .unwrap()
        }
    };
    let r = ask(&keys[0], json!({"model": "m", "input": "secret"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let mine = json!({"model": "m", "input": "again", "previous_response_id": id});
    assert_eq!(ask(&keys[0], mine.clone()).await.status, 200);
    assert_eq!(ask(&keys[1], mine).await.status, 404);
}

/// A chat stream whose calls are tangled (see `common::tangled`): every item is whole and in
/// turn (added, its deltas, its `.done` events, nothing of it after its `output_item.done`),
/// each call's arguments all of its pieces, and the text in messages between calls.
#[tokio::test]
async fn tangled_tool_calls_come_back_as_whole_items_one_at_a_time() {
    use common::tangled::{stream, CALLS, TEXTS};
    let (fake, gw) = setup("").await;
    fake.push(Behavior::new().with_replay(stream(true)));
    let evs = events(&gw, json!({"model": "m", "stream": true, "input": "Hi"})).await;
    let n = names(&evs);
    assert_eq!(n[..2], ["response.created", "response.in_progress"]);
    assert_eq!(n.last(), Some(&"response.completed"));
    // (item type, call_id, name, what its deltas said)
    let mut items: Vec<(String, String, String, String)> = Vec::new();
    let mut done: Vec<Value> = Vec::new();
    let mut open: Option<u64> = None;
    for (name, e) in &evs[2..evs.len() - 1] {
        let index = e["output_index"].as_u64().unwrap();
        match name.as_str() {
            "response.output_item.added" => {
                assert_eq!((open, index), (None, items.len() as u64), "{e}");
                open = Some(index);
                let field = |k: &str| e["item"][k].as_str().unwrap_or_default().to_owned();
                items.push((
                    field("type"),
                    field("call_id"),
                    field("name"),
                    String::new(),
                ));
            }
            "response.output_item.done" => {
                assert_eq!(open.take(), Some(index), "{e}");
                done.push(e["item"].clone());
            }
            _ => {
                assert_eq!(open, Some(index), "an event outside its item: {e}");
                assert_eq!(e["item_id"], evs_item_id(&evs, index), "{e}");
                if let Some(piece) = e["delta"].as_str() {
                    items[index as usize].3.push_str(piece);
                }
                if name == "response.function_call_arguments.done" {
                    assert_eq!(e["arguments"], items[index as usize].3.as_str(), "{e}");
                }
            }
        }
    }
    assert_eq!(open, None);
    let text = |t: &str| {
        (
            "message".to_owned(),
            String::new(),
            String::new(),
            t.to_owned(),
        )
    };
    let call = |i: usize| {
        let (id, name, args) = CALLS[i];
        let t = "function_call".to_owned();
        (t, id.to_owned(), name.to_owned(), args.to_owned())
    };
    let expected = vec![
        text(TEXTS[0]),
        call(0),
        call(1),
        text(TEXTS[1]),
        call(2),
        call(3),
        call(4),
        text(TEXTS[2]),
    ];
    assert_eq!(items, expected);
    let completed = &evs.last().unwrap().1["response"];
    assert_eq!(completed["output"], Value::Array(done));
    assert_eq!(completed["output"][1]["arguments"], CALLS[0].2);
    assert_eq!(completed["output_text"], TEXTS.concat());
    assert_eq!(completed["status"], "completed");
}

/// The `id` of the item that `output_item.added` gave `index`.
fn evs_item_id(evs: &[(String, Value)], index: u64) -> Value {
    evs.iter()
        .find(|(n, e)| n == "response.output_item.added" && e["output_index"] == index)
        .map(|(_, e)| e["item"]["id"].clone())
        .unwrap()
}
