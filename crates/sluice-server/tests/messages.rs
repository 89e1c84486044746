//! Inbound `POST /v1/messages`: Anthropic's format in, served by an OpenAI-shaped upstream.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::setup;
use serde_json::json;
use sluice_testkit::client::{post_json, post_stream};

#[tokio::test]
async fn messages_are_served_by_any_provider() {
    let (fake, gw) = setup("").await;
    let body = json!({
        "model": "m",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"}
    });
    let r = post_json(
        &gw.url("/v1/messages"),
        body.to_string(),
        &[("anthropic-version", "2023-06-01")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "m");
    assert_eq!(
        v["content"][0],
        json!({"type": "text", "text": "Hello from the fake upstream."})
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 12);
    assert_eq!(v["usage"]["output_tokens"], 9);
    assert_eq!(r.header("x-sluice-model"), Some("m"));
    let sent = fake.last_request().unwrap().json().unwrap();
    assert_eq!(sent["model"], "upstream-m");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["user"], "u1");
}

#[tokio::test]
async fn streams_come_back_as_anthropic_events() {
    let (_fake, gw) = setup("").await;
    let question = "Tell me about Paris in one sentence, please.";
    let body = json!({"model": "m", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": question}]});
    let mut s = post_stream(&gw.url("/v1/messages"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    let raw = String::from_utf8(s.collect_body().await.unwrap().to_vec()).unwrap();
    let names: Vec<&str> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(
        names.contains(&"content_block_start")
            && names.contains(&"content_block_stop")
            && names.contains(&"message_delta")
    );
    let datas: Vec<serde_json::Value> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = datas
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .filter_map(|d| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello from the fake upstream.");
    let delta = datas.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 5);
    // The upstream counts the prompt only in its last chunk: message_start carries sluice's
    // estimate (the chat content `[{"text":"...","type":"text"}]`, 71 bytes at four a token,
    // and four tokens of framing), message_delta the upstream's.
    assert_eq!(datas[0]["message"]["usage"]["input_tokens"], 18 + 4);
    assert_eq!(datas[0]["message"]["usage"]["output_tokens"], 0);
    assert_eq!(delta["usage"]["input_tokens"], 12);
}

/// An upstream that counts the prompt in its first chunk (vLLM's `continuous_usage_stats`
/// does): message_start carries its figure, not sluice's estimate.
#[tokio::test]
async fn message_start_carries_the_upstreams_count_when_its_first_chunk_has_one() {
    let (fake, gw) = setup("").await;
    let chunk = |delta: serde_json::Value, finish: serde_json::Value, completion: u64| {
        let usage = json!({"prompt_tokens": 321, "completion_tokens": completion,
            "total_tokens": 321 + completion, "prompt_tokens_details": {"cached_tokens": 300}});
        let c = json!({"id": "chatcmpl-u", "object": "chat.completion.chunk", "model": "x",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": usage});
        format!("data: {c}\n\n")
    };
    fake.push(sluice_testkit::Behavior::new().with_replay([
        chunk(json!({"role": "assistant", "content": ""}), json!(null), 0),
        chunk(json!({"content": "Hi."}), json!(null), 1),
        chunk(json!({}), json!("stop"), 2),
        "data: [DONE]\n\n".to_string(),
    ]));
    let body = json!({"model": "m", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "Hi"}]});
    let mut s = post_stream(&gw.url("/v1/messages"), body.to_string(), &[])
        .await
        .unwrap();
    let raw = String::from_utf8(s.collect_body().await.unwrap().to_vec()).unwrap();
    let datas: Vec<serde_json::Value> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let start = &datas[0]["message"]["usage"];
    assert_eq!(datas[0]["type"], "message_start");
    // Anthropic counts cache reads apart from input_tokens.
    assert_eq!(start["input_tokens"], 21, "{start}");
    assert_eq!(start["cache_read_input_tokens"], 300);
    assert_eq!(start["output_tokens"], 0);
    let delta = datas.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["usage"]["input_tokens"], 21);
    assert_eq!(delta["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn errors_come_back_in_anthropic_shape() {
    let (_fake, gw) = setup("").await;
    let r = post_json(
        &gw.url("/v1/messages"),
        r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_tokens"));
    let r = post_json(
        &gw.url("/v1/messages"),
        r#"{"model":"nope","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = post_json(
        &gw.url("/v1/messages"),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"robot","content":"x"}]}"#,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

/// A chat stream whose calls are tangled (see `common::tangled`): every block is whole and
/// in turn (start, its deltas, stop, nothing of it after its stop), each call's input is
/// all its arguments, and the text comes between calls, none of it lost.
#[tokio::test]
async fn tangled_tool_calls_come_back_as_whole_blocks_one_at_a_time() {
    use common::tangled::{stream, CALLS, TEXTS};
    let (fake, gw) = setup("").await;
    fake.push(sluice_testkit::Behavior::new().with_replay(stream(true)));
    let body = json!({"model": "m", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "Hi"}]});
    let mut s = post_stream(&gw.url("/v1/messages"), body.to_string(), &[])
        .await
        .unwrap();
    let raw = String::from_utf8(s.collect_body().await.unwrap().to_vec()).unwrap();
    let datas: Vec<serde_json::Value> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = datas.iter().map(|d| d["type"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "message_start", "{raw}");
    assert_eq!(kinds[kinds.len() - 2..], ["message_delta", "message_stop"]);
    // (block type, id, name, what its deltas said)
    let mut blocks: Vec<(String, String, String, String)> = Vec::new();
    let mut open: Option<u64> = None;
    for d in &datas[1..datas.len() - 2] {
        let index = d["index"].as_u64().unwrap();
        match d["type"].as_str().unwrap() {
            "content_block_start" => {
                assert_eq!((open, index), (None, blocks.len() as u64), "{d}\n{raw}");
                open = Some(index);
                let b = &d["content_block"];
                let field = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
                blocks.push((field("type"), field("id"), field("name"), String::new()));
            }
            "content_block_delta" => {
                assert_eq!(open, Some(index), "a delta outside its block: {d}\n{raw}");
                let delta = &d["delta"];
                let piece = delta["partial_json"].as_str().or(delta["text"].as_str());
                blocks[index as usize].3.push_str(piece.unwrap());
            }
            "content_block_stop" => assert_eq!(open.take(), Some(index), "{d}\n{raw}"),
            other => panic!("{other} inside the message: {raw}"),
        }
    }
    assert_eq!(open, None);
    let text = |t: &str| {
        (
            "text".to_owned(),
            String::new(),
            String::new(),
            t.to_owned(),
        )
    };
    let call = |i: usize| {
        let (id, name, args) = CALLS[i];
        (
            "tool_use".to_owned(),
            id.to_owned(),
            name.to_owned(),
            args.to_owned(),
        )
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
    assert_eq!(blocks, expected, "{raw}");
    let delta = &datas[datas.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 30);
}
