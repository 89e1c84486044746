//! End-to-end tests of the fake upstream and the test client, over loopback.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_testkit::client::{self, ClientError};
use sluice_testkit::{Behavior, FakeUpstream, TestClient};

const WAIT: Duration = Duration::from_secs(5);

fn chat_url(fake: &FakeUpstream) -> String {
    format!("{}/chat/completions", fake.base_url())
}

fn chat_body(extra: Value) -> Vec<u8> {
    let mut body = json!({
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "hi"}]
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&body).expect("serialize request body")
}

fn parse_events(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .map(|e| serde_json::from_str(e).expect("SSE payload is JSON"))
        .collect()
}

#[tokio::test]
async fn non_streaming_chat() {
    let fake = FakeUpstream::start().await;
    let resp = client::post_json(&chat_url(&fake), chat_body(json!({})), &[("x-test", "1")])
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = resp.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-test");
    assert!(v["id"].is_string());
    assert!(v["created"].is_u64());
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the fake upstream."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21})
    );
    assert_eq!(v["x_fake_extra"], json!({"kept": true}));

    assert_eq!(fake.request_count(), 1);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, http::Method::POST);
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    assert_eq!(reqs[0].header("x-test"), Some("1"));
    assert_eq!(reqs[0].json().unwrap()["model"], "gpt-test");
    assert_eq!(fake.cancelled_count(), 0);
}

#[tokio::test]
async fn content_override() {
    let fake = FakeUpstream::start().await;
    let body = chat_body(json!({"x_fake": Behavior::new().with_content("custom").to_json()}));
    let resp = client::post_json(&chat_url(&fake), body, &[])
        .await
        .unwrap();
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "custom");
}

#[tokio::test]
async fn streaming_without_usage() {
    let fake = FakeUpstream::start().await;
    let mut s = client::post_stream(&chat_url(&fake), chat_body(json!({"stream": true})), &[])
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    let (events, err) = s.collect_events().await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.len(), 8, "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = parse_events(&events);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["model"], "gpt-test");
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = chunks[1..6]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello from the fake upstream.");
    assert_eq!(chunks[6]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(fake.cancelled_count(), 0);
}

#[tokio::test]
async fn streaming_with_usage_and_pieces() {
    let fake = FakeUpstream::start().await;
    let body = chat_body(json!({
        "stream": true,
        "stream_options": {"include_usage": true},
        "x_fake": {"pieces": ["a", "b"], "chunk_delay_ms": 5}
    }));
    let mut s = client::post_stream(&chat_url(&fake), body, &[])
        .await
        .unwrap();
    let (events, err) = s.collect_events().await;
    assert!(err.is_none(), "{err:?}");
    // role, 2 pieces, finish, usage, [DONE]
    assert_eq!(events.len(), 6, "{events:?}");
    let chunks = parse_events(&events);
    let usage = &chunks[4];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14})
    );
    assert!(chunks[..4].iter().all(|c| c["usage"].is_null()));
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "a");
}

#[tokio::test]
async fn default_stream_usage_matches_contract() {
    let fake = FakeUpstream::start().await;
    let body = chat_body(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let mut s = client::post_stream(&chat_url(&fake), body, &[])
        .await
        .unwrap();
    let (events, err) = s.collect_events().await;
    assert!(err.is_none());
    let chunks = parse_events(&events);
    assert_eq!(
        chunks.last().unwrap()["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17})
    );
}

#[tokio::test]
async fn x_fake_status_and_retry_after() {
    let fake = FakeUpstream::start().await;
    let body = chat_body(json!({
        "x_fake": {"status": 429, "retry_after": "3", "headers": [["x-extra", "yes"]]}
    }));
    let resp = client::post_json(&chat_url(&fake), body, &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("retry-after"), Some("3"));
    assert_eq!(resp.header("x-extra"), Some("yes"));
    let v = resp.json();
    assert_eq!(v["error"]["message"], "fake upstream error 429");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(v["error"]["param"].is_null());
    assert!(v["error"]["code"].is_null());

    let body = chat_body(json!({"x_fake": {"status": 500, "error_body": "plain"}}));
    let resp = client::post_json(&chat_url(&fake), body, &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), "plain");
}

#[tokio::test]
async fn bad_x_fake_and_bad_body_are_400() {
    let fake = FakeUpstream::start().await;
    let body = chat_body(json!({"x_fake": {"stauts": 500}}));
    let resp = client::post_json(&chat_url(&fake), body, &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 400);
    assert!(resp.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("x_fake"));

    let resp = client::post_json(&chat_url(&fake), "{not json", &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error"]["type"], "invalid_request_error");

    let resp = client::post_json(&fake.url("/v1/embeddings"), "[1]", &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 400);
}

#[tokio::test]
async fn script_order_then_default() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Behavior::new().with_status(418));
    fake.push(Behavior::new().with_status(500));
    fake.push(Behavior::new().with_status(503));
    fake.push(Behavior::new());
    let c = TestClient::new();
    let url = chat_url(&fake);
    // An x_fake request does not consume the script.
    let r = c
        .post_json(&url, chat_body(json!({"x_fake": {"status": 502}})), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 502);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            c.post_json(&url, chat_body(json!({})), &[])
                .await
                .unwrap()
                .status,
        );
    }
    assert_eq!(statuses, [500, 503, 200, 418, 418]);
    // The pooled client reused its connection.
    assert_eq!(fake.connections_accepted(), 1);
    assert_eq!(fake.request_count(), 6);
}

#[tokio::test]
async fn models_and_not_found() {
    let fake = FakeUpstream::start().await;
    let resp = client::get(&format!("{}/models", fake.base_url()))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.json(),
        json!({"object": "list", "data": [{
            "id": "fake-model", "object": "model", "created": 1_700_000_000u64, "owned_by": "fake"
        }]})
    );
    let resp = client::get(&fake.url("/v1/nope")).await.unwrap();
    assert_eq!(resp.status, 404);
    let v = resp.json();
    assert!(v["error"]["message"].is_string());
    assert!(v["error"]["type"].is_string());
    assert!(v["error"]["param"].is_null() && v["error"]["code"].is_null());
}

#[tokio::test]
async fn embeddings_shape() {
    let fake = FakeUpstream::start().await;
    let url = format!("{}/embeddings", fake.base_url());
    let body = json!({"model": "emb-test", "input": ["hello", "world!!"]}).to_string();
    let resp = client::post_json(&url, body, &[]).await.unwrap();
    assert_eq!(resp.status, 200);
    let v = resp.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "emb-test");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        assert_eq!(d["embedding"].as_array().unwrap().len(), 8);
    }
    // 12 bytes -> 3 tokens
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

    let body = json!({"model": "e", "input": "x", "dimensions": 3}).to_string();
    let v = client::post_json(&url, body, &[]).await.unwrap().json();
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 3);
    assert_eq!(v["usage"]["prompt_tokens"], 1);
}

#[tokio::test]
async fn reset_gives_client_error() {
    let fake = FakeUpstream::start().await;
    let body = chat_body(json!({"x_fake": {"reset": true}}));
    let err = client::post_json(&chat_url(&fake), body.clone(), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Request(_)), "{err}");

    let err = client::post_stream(&chat_url(&fake), body, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Request(_)), "{err}");
    assert_eq!(fake.request_count(), 2);
    assert_eq!(fake.cancelled_count(), 0);
}

#[tokio::test]
async fn cut_after_chunks_breaks_the_stream() {
    let fake = FakeUpstream::start().await;
    for delay in [0, 5] {
        let body = chat_body(json!({
            "stream": true,
            "x_fake": {"cut_after_chunks": 3, "chunk_delay_ms": delay}
        }));
        let mut s = client::post_stream(&chat_url(&fake), body, &[])
            .await
            .unwrap();
        assert_eq!(s.status, 200);
        let (events, err) = s.collect_events().await;
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(!events.iter().any(|e| e == "[DONE]"));
        let err = err.expect("the stream must end with an error");
        assert!(err.is_body(), "{err}");
    }
    // A cut beyond the end still breaks the stream after everything.
    let body = chat_body(json!({"stream": true, "x_fake": {"cut_after_chunks": 100}}));
    let mut s = client::post_stream(&chat_url(&fake), body, &[])
        .await
        .unwrap();
    let (events, err) = s.collect_events().await;
    assert_eq!(events.len(), 8);
    assert!(err.is_some());
    assert_eq!(fake.cancelled_count(), 0);
}

#[tokio::test]
async fn hang_then_client_drop_counts_a_cancellation() {
    let fake = FakeUpstream::start().await;
    let url = chat_url(&fake);
    let body = chat_body(json!({"x_fake": {"hang": true}}));
    let task = tokio::spawn(async move { client::post_stream(&url, body, &[]).await });
    assert!(fake.wait_requests(1, WAIT).await);
    // Still hanging: no answer, no cancellation.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!task.is_finished());
    assert_eq!(fake.cancelled_count(), 0);
    // Dropping the client future closes its connection.
    task.abort();
    assert!(fake.wait_cancelled(1, WAIT).await);
    assert_eq!(fake.cancelled_count(), 1);
}

#[tokio::test]
async fn hang_with_pooled_client_and_timeout() {
    let fake = FakeUpstream::start().await;
    fake.push(Behavior::new().with_hang());
    let c = TestClient::new().with_timeout(Duration::from_millis(100));
    let err = c
        .post_json(&chat_url(&fake), chat_body(json!({})), &[])
        .await
        .unwrap_err();
    assert_eq!(err, ClientError::Timeout);
    assert!(fake.wait_cancelled(1, WAIT).await);
}

#[tokio::test]
async fn delay_then_client_drop_counts_a_cancellation() {
    let fake = FakeUpstream::start().await;
    fake.push(Behavior::new().with_delay_ms(10_000));
    let c = TestClient::new().with_timeout(Duration::from_millis(50));
    let err = c.get(&fake.url("/v1/models")).await.unwrap_err();
    assert_eq!(err, ClientError::Timeout);
    assert!(fake.wait_cancelled(1, WAIT).await);
}

#[tokio::test]
async fn infinite_stream_then_drop_counts_a_cancellation() {
    let fake = FakeUpstream::start().await;
    let body = chat_body(json!({
        "stream": true,
        "x_fake": {"infinite_stream": true, "chunk_delay_ms": 1}
    }));
    let mut s = client::post_stream(&chat_url(&fake), body, &[])
        .await
        .unwrap();
    for _ in 0..20 {
        let ev = s.next_event().await.unwrap().unwrap();
        assert_ne!(ev, "[DONE]");
    }
    assert_eq!(fake.cancelled_count(), 0);
    drop(s);
    assert!(fake.wait_cancelled(1, WAIT).await);
    assert_eq!(fake.cancelled_count(), 1);
}

#[tokio::test]
async fn stream_chunks_arrive_incrementally() {
    let fake = FakeUpstream::start().await;
    let body = chat_body(json!({"stream": true, "x_fake": {"chunk_delay_ms": 40}}));
    let started = std::time::Instant::now();
    let mut s = client::post_stream(&chat_url(&fake), body, &[])
        .await
        .unwrap();
    let first = s.next_event().await.unwrap().unwrap();
    // The first event comes well before the remaining 7 delays (280 ms).
    assert!(started.elapsed() < Duration::from_millis(200));
    assert!(first.contains("\"role\":\"assistant\""));
    let (rest, err) = s.collect_events().await;
    assert!(err.is_none());
    assert_eq!(rest.len(), 7);
}

#[tokio::test]
async fn recording_can_be_turned_off_and_cleared() {
    let fake = FakeUpstream::start().await;
    fake.set_recording(false);
    client::get(&fake.url("/v1/models")).await.unwrap();
    assert!(fake.requests().is_empty());
    assert_eq!(fake.request_count(), 1);
    fake.set_recording(true);
    client::get(&fake.url("/v1/models?x=1")).await.unwrap();
    let last = fake.last_request().unwrap();
    assert_eq!(last.query.as_deref(), Some("x=1"));
    assert_eq!(fake.take_requests().len(), 1);
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn raw_request_reads_until_close() {
    let fake = FakeUpstream::start().await;
    let out = client::raw_request(fake.addr(), b"NOT HTTP AT ALL\r\n\r\n")
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");

    let out = client::raw_request(
        fake.addr(),
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("fake-model"));
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let fake = FakeUpstream::start().await;
    let url = fake.url("/v1/models");
    client::get(&url).await.unwrap();
    fake.shutdown().await;
    let err = client::get(&url).await.unwrap_err();
    assert!(matches!(err, ClientError::Request(_)), "{err}");
}

#[tokio::test]
async fn invalid_urls_are_rejected() {
    assert!(matches!(
        client::get("https://example.com/").await,
        Err(ClientError::InvalidUrl(_))
    ));
    assert!(matches!(
        client::post_stream("/relative", "", &[]).await,
        Err(ClientError::InvalidUrl(_))
    ));
}

#[tokio::test]
async fn chaos_fails_a_share_of_requests_in_turn() {
    let fake = FakeUpstream::start().await;
    fake.set_chaos(
        0.5,
        vec![
            Behavior::new().with_status(500),
            Behavior::new().with_status(503),
        ],
    );
    let mut statuses = Vec::new();
    for _ in 0..200 {
        let resp = client::post_json(&chat_url(&fake), chat_body(json!({})), &[])
            .await
            .expect("response");
        statuses.push(resp.status);
    }
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert!(
        (70..=130).contains(&failed),
        "{failed} of 200 failed at rate 0.5"
    );
    let first_two: Vec<u16> = statuses
        .iter()
        .copied()
        .filter(|s| *s != 200)
        .take(2)
        .collect();
    assert_eq!(first_two, [500, 503], "failures come in turn");
    // `x_fake` still wins.
    let resp = client::post_json(&chat_url(&fake), chat_body(json!({"x_fake": {}})), &[])
        .await
        .expect("response");
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn speaks_native_provider_shapes() {
    let fake = FakeUpstream::start().await;
    let post = |path: &str, body: &'static str| {
        let url = fake.url(path);
        async move { client::post_json(&url, body, &[]).await.expect("response") }
    };
    let r = post(
        "/v1/messages",
        r#"{"model":"c","max_tokens":5,"messages":[]}"#,
    )
    .await;
    assert_eq!(r.json()["type"], "message");
    let r = post("/v1/messages", r#"{"model":"c","stream":true}"#).await;
    assert!(r.text().contains("message_start"));
    let r = post("/v1beta/models/g:generateContent", "{}").await;
    assert!(r.json()["candidates"].is_array());
    let r = post("/v1beta/models/g:streamGenerateContent?alt=sse", "{}").await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let r = post("/api/chat", r#"{"model":"l","stream":false}"#).await;
    assert_eq!(r.json()["done"], true);
    let r = post("/api/embed", r#"{"model":"e","input":"x"}"#).await;
    assert!(r.json()["embeddings"].is_array());
}
