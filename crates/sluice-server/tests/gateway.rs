//! The gateway core over real loopback HTTP, against the fake upstream.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::*;
use serde_json::json;
use sluice_testkit::client::{get, post_json, post_stream, raw_request};
use std::time::Duration;

const SECS5: Duration = Duration::from_secs(5);

#[tokio::test]
async fn chat_passes_unknown_fields_both_ways_and_rewrites_model() {
    let (fake, gw) = setup("").await;
    let body = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]}
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "seed": 7, "logprobs": true, "n": 2,
        "some_future_field": {"nested": [1, 2, 3]}
    });
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        body.to_string(),
        &[("x-request-id", "req-abc")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-request-id"), Some("req-abc"));
    assert_eq!(r.header("x-sluice-model"), Some("m"));
    assert_eq!(r.header("x-sluice-provider"), Some("fake"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["x_fake_extra"]["kept"], true,
        "unknown response fields pass through"
    );

    let seen = fake.last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-upstream"));
    assert_eq!(seen.header("x-request-id"), Some("req-abc"));
    let mut sent = seen.json().unwrap();
    assert_eq!(sent["model"], "upstream-m");
    sent["model"] = json!("m");
    assert_eq!(
        sent, body,
        "every other field reaches the upstream untouched"
    );
}

#[tokio::test]
async fn unchanged_body_goes_upstream_byte_for_byte() {
    let fake = sluice_testkit::FakeUpstream::start().await;
    let toml = config_for(&fake.base_url(), "").replace("upstream = \"upstream-m\"\n", "");
    let gw = start_with(&toml).await;
    let raw = "{ \"model\" : \"m\",\n \"messages\":[{\"role\":\"user\",\"content\":\"\\u00e9t\\u00e9\"}] }";
    let r = post_json(&gw.url("/v1/chat/completions"), raw, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(&fake.last_request().unwrap().body[..], raw.as_bytes());
}

#[tokio::test]
async fn streams_events_in_order_and_hides_the_usage_chunk_it_asked_for() {
    let (fake, gw) = setup("").await;
    let mut s = post_stream(&gw.url("/v1/chat/completions"), CHAT_STREAM, &[])
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(s.header("x-sluice-model"), Some("m"));
    assert!(s.header("x-request-id").is_some());
    let (events, err) = s.collect_events().await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "Hello from the fake upstream.");
    let with_usage = |e: &String| {
        serde_json::from_str::<serde_json::Value>(e).is_ok_and(|v| v["usage"].is_object())
    };
    assert!(
        !events.iter().any(with_usage),
        "client did not ask for usage: {events:?}"
    );
    // sluice asked the upstream for usage so that it can count tokens.
    assert_eq!(
        fake.last_request().unwrap().json().unwrap()["stream_options"]["include_usage"],
        true
    );
    let metrics = get(&gw.url("/metrics")).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.contains(
            r#"sluice_tokens_total{model="m",provider="fake",endpoint="chat",direction="out"} 5"#
        ),
        "{text}"
    );
    assert!(
        text.contains("sluice_time_to_first_token_seconds_count{model=\"m\""),
        "{text}"
    );
}

#[tokio::test]
async fn stream_usage_is_kept_when_the_client_asks() {
    let (_fake, gw) = setup("").await;
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let mut s = post_stream(&gw.url("/v1/chat/completions"), body, &[])
        .await
        .unwrap();
    let (events, err) = s.collect_events().await;
    assert!(err.is_none());
    let usage: Vec<_> = events
        .iter()
        .filter(|e| {
            serde_json::from_str::<serde_json::Value>(e).is_ok_and(|v| v["usage"].is_object())
        })
        .collect();
    assert_eq!(usage.len(), 1);
    let v: serde_json::Value = serde_json::from_str(usage[0]).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["choices"], json!([]));
}

#[tokio::test]
async fn stream_usage_injection_can_be_turned_off() {
    let (fake, gw) = setup("stream_usage = false").await;
    let mut s = post_stream(&gw.url("/v1/chat/completions"), CHAT_STREAM, &[])
        .await
        .unwrap();
    let _ = s.collect_events().await;
    assert!(fake
        .last_request()
        .unwrap()
        .json()
        .unwrap()
        .get("stream_options")
        .is_none());
}

#[tokio::test]
async fn first_event_reaches_the_client_before_the_stream_ends() {
    // The upstream never ends this stream: a gateway that buffered would never deliver anything.
    let (_fake, gw) = setup("").await;
    let body = chat_with(json!({"infinite_stream": true, "chunk_delay_ms": 20}), true);
    let mut s = post_stream(&gw.url("/v1/chat/completions"), body, &[])
        .await
        .unwrap();
    let first = tokio::time::timeout(SECS5, s.next_chunk())
        .await
        .expect("a chunk before the end");
    let first = first.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
}

#[tokio::test]
async fn client_disconnect_cancels_a_stream_upstream() {
    let (fake, gw) = setup("").await;
    let body = chat_with(json!({"infinite_stream": true, "chunk_delay_ms": 10}), true);
    let mut s = post_stream(&gw.url("/v1/chat/completions"), body, &[])
        .await
        .unwrap();
    let _ = s.next_chunk().await;
    drop(s);
    assert!(
        fake.wait_cancelled(1, SECS5).await,
        "upstream saw its connection close"
    );
    // The gateway counted it and holds nothing in flight.
    for _ in 0..100 {
        if gw
            .state
            .metrics
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        gw.state
            .metrics
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        gw.state
            .metrics
            .client_disconnects
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn client_disconnect_cancels_a_waiting_request_upstream() {
    let (fake, gw) = setup("").await;
    let body = chat_with(json!({"hang": true}), false);
    let url = gw.url("/v1/chat/completions");
    // The response head never comes: give up on it after the upstream has the request.
    let pending = tokio::spawn(async move { post_stream(&url, body, &[]).await });
    assert!(fake.wait_requests(1, SECS5).await);
    pending.abort();
    assert!(
        fake.wait_cancelled(1, SECS5).await,
        "upstream saw its connection close"
    );
}

#[tokio::test]
async fn bad_requests_get_400_with_a_clear_message() {
    let (fake, gw) = setup("").await;
    let cases = [
        ("{\"model\": \"m\", ", "not valid JSON"),
        ("", "empty"),
        ("[]", "must be a JSON object"),
        (r#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
        (r#"{"model":"m"}"#, "`messages` is required"),
        (
            r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
            "`messages[0].role`",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":1}"#,
            "`stream` must be a boolean",
        ),
    ];
    for (body, want) in cases {
        let r = post_json(&gw.url("/v1/chat/completions"), body, &[])
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{body}");
        let v = r.json();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{body}: {msg}");
        assert!(r.header("x-request-id").is_some());
    }
    let r = post_json(&gw.url("/v1/embeddings"), r#"{"model":"emb"}"#, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "input");
    assert_eq!(
        fake.request_count(),
        0,
        "nothing invalid reaches the upstream"
    );
}

#[tokio::test]
async fn unknown_model_is_404_and_unknown_path_404_and_wrong_method_405() {
    let (_fake, gw) = setup("").await;
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        r#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gpt-9"));
    let r = get(&gw.url("/v1/nothing")).await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = get(&gw.url("/v1/chat/completions")).await.unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
}

#[tokio::test]
async fn oversized_body_is_413_without_a_reset() {
    let fake = sluice_testkit::FakeUpstream::start().await;
    let toml = config_for(&fake.base_url(), "").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nmax_body_bytes = 1000",
    );
    let gw = start_with(&toml).await;
    // Declared length: the client writes its whole body before reading, as simple clients do.
    let big = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4 << 20)
    );
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        big.len()
    );
    let mut raw = head.into_bytes();
    raw.extend_from_slice(big.as_bytes());
    let resp = raw_request(gw.addr, &raw).await.unwrap();
    let text = String::from_utf8_lossy(&resp);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(text.contains("max_body_bytes"));
    // Chunked, no declared length: found out while reading.
    let mut raw =
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..64 {
        raw.extend_from_slice(format!("{:x}\r\n{}\r\n", 1024, "y".repeat(1024)).as_bytes());
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let resp = raw_request(gw.addr, &raw).await.unwrap();
    assert!(String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 413"));
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn upstream_4xx_passes_through_with_its_message() {
    let (_fake, gw) = setup("").await;
    let err = r#"{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}"#;
    let body = chat_with(json!({"status": 400, "error_body": err}), false);
    let r = post_json(&gw.url("/v1/chat/completions"), body, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["error"]["message"], "Invalid value for 'temperature'");
    assert_eq!(v["error"]["param"], "temperature");
    assert_eq!(v["error"]["code"], "invalid_value");
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat_with(json!({"status": 401}), false),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["message"], "fake upstream error 401");
}

#[tokio::test]
async fn upstream_429_passes_through_with_retry_after() {
    let (_fake, gw) = setup("").await;
    let body = chat_with(json!({"status": 429, "retry_after": "17"}), false);
    let r = post_json(&gw.url("/v1/chat/completions"), body, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("17"));
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    // The deployment now cools down: the next request is not sent upstream, and gets a 429
    // with the time left.
    let r = post_json(&gw.url("/v1/chat/completions"), CHAT, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 429);
    let left: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=17).contains(&left));
    // The same before a stream starts.
    let (_fake, gw) = setup("").await;
    let body = chat_with(json!({"status": 429, "retry_after": "30"}), true);
    let s = post_stream(&gw.url("/v1/chat/completions"), body, &[])
        .await
        .unwrap();
    assert_eq!(s.status, 429);
    assert_eq!(s.header("retry-after"), Some("30"));
}

#[tokio::test]
async fn upstream_5xx_and_connection_failures_are_502() {
    let (_fake, gw) = setup("").await;
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat_with(json!({"status": 503}), false),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["type"], "upstream_error");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("503"));
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat_with(json!({"reset": true}), false),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "upstream_unreachable");

    // Nothing listens at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let gw2 = start_with(&config_for(&format!("http://127.0.0.1:{port}/v1"), "")).await;
    let r = post_json(&gw2.url("/v1/chat/completions"), CHAT, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 502);
    let m = String::from_utf8_lossy(&get(&gw2.url("/metrics")).await.unwrap().body).to_string();
    assert!(m.contains(r#"sluice_upstream_errors_total{model="m",provider="fake",endpoint="chat",kind="connect"} 2"#), "retried once: {m}");
    assert!(
        m.contains(
            r#"sluice_requests_total{model="m",provider="fake",endpoint="chat",status="502"} 1"#
        ),
        "{m}"
    );
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let (_fake, gw) = setup("timeout_ms = 300").await;
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat_with(json!({"hang": true}), false),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["type"], "timeout_error");
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat_with(json!({"delay_ms": 2000}), true),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 504);
}

#[tokio::test]
async fn mid_stream_failure_ends_with_an_error_event() {
    let (_fake, gw) = setup("").await;
    let body = chat_with(json!({"cut_after_chunks": 2}), true);
    let mut s = post_stream(&gw.url("/v1/chat/completions"), body, &[])
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    let (events, err) = s.collect_events().await;
    assert!(
        err.is_none(),
        "the client's stream ends cleanly, with an error event: {err:?}"
    );
    assert_eq!(events.len(), 3, "{events:?}");
    let last: serde_json::Value = serde_json::from_str(&events[2]).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted");
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[tokio::test]
async fn stalled_stream_ends_with_a_timeout_event() {
    let (_fake, gw) = setup("chunk_timeout_ms = 200").await;
    let body = chat_with(json!({"chunk_delay_ms": 1000}), true);
    let mut s = post_stream(&gw.url("/v1/chat/completions"), body, &[])
        .await
        .unwrap();
    let (events, _) = s.collect_events().await;
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "timeout_error");
    assert!(last["error"]["message"]
        .as_str()
        .unwrap()
        .contains("chunk_timeout_ms"));
}

#[tokio::test]
async fn embeddings_pass_through() {
    let (fake, gw) = setup("").await;
    let r = post_json(
        &gw.url("/v1/embeddings"),
        r#"{"model":"emb","input":["a","bb"],"encoding_format":"float"}"#,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(r.header("x-sluice-model"), Some("emb"));
    let seen = fake.last_request().unwrap();
    assert_eq!(seen.path, "/v1/embeddings");
    assert_eq!(seen.json().unwrap()["encoding_format"], "float");
    let m = String::from_utf8_lossy(&get(&gw.url("/metrics")).await.unwrap().body).to_string();
    assert!(m.contains(r#"sluice_requests_total{model="emb",provider="fake",endpoint="embeddings",status="200"} 1"#), "{m}");
}

#[tokio::test]
async fn models_health_and_metrics() {
    let (_fake, gw) = setup("").await;
    let v = get(&gw.url("/v1/models")).await.unwrap().json();
    let ids: Vec<_> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["m", "emb"]);
    assert_eq!(v["object"], "list");
    let one = get(&gw.url("/v1/models/m")).await.unwrap();
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["owned_by"], "fake");
    assert_eq!(get(&gw.url("/v1/models/zzz")).await.unwrap().status, 404);
    assert_eq!(
        get(&gw.url("/health")).await.unwrap().json()["status"],
        "ok"
    );
    post_json(&gw.url("/v1/chat/completions"), CHAT, &[])
        .await
        .unwrap();
    let d = get(&gw.url("/health/detailed")).await.unwrap().json();
    assert_eq!(d["providers"][0]["name"], "fake");
    assert_eq!(d["models"][0]["requests"], 1);
    let m = get(&gw.url("/metrics")).await.unwrap();
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let m = String::from_utf8_lossy(&m.body).to_string();
    for want in [
        r#"sluice_requests_total{model="m",provider="fake",endpoint="chat",status="200"} 1"#,
        r#"sluice_request_duration_seconds_count{model="m",provider="fake",endpoint="chat"} 1"#,
        r#"sluice_tokens_total{model="m",provider="fake",endpoint="chat",direction="in"} 12"#,
        r#"sluice_tokens_total{model="m",provider="fake",endpoint="chat",direction="out"} 9"#,
        "sluice_requests_in_flight 0",
    ] {
        assert!(m.contains(want), "missing {want} in\n{m}");
    }
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_kept_alive() {
    let (fake, gw) = setup("").await;
    for _ in 0..10 {
        let r = post_json(&gw.url("/v1/chat/completions"), CHAT, &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(fake.connections_accepted(), 1);
}

#[tokio::test]
async fn passthrough_provider_serves_any_model_by_prefix() {
    let (fake, gw) = setup("passthrough = true").await;
    let body = r#"{"model":"fake/gpt-4o-mini","messages":[{"role":"user","content":"x"}]}"#;
    let r = post_json(&gw.url("/v1/chat/completions"), body, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        fake.last_request().unwrap().json().unwrap()["model"],
        "gpt-4o-mini"
    );
    // The only passthrough provider also takes bare names.
    let body = r#"{"model":"llama3","messages":[{"role":"user","content":"x"}]}"#;
    post_json(&gw.url("/v1/chat/completions"), body, &[])
        .await
        .unwrap();
    assert_eq!(
        fake.last_request().unwrap().json().unwrap()["model"],
        "llama3"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_streams() {
    let (_fake, mut gw) = setup("").await;
    let body = chat_with(json!({"chunk_delay_ms": 100}), true);
    let mut s = post_stream(&gw.url("/v1/chat/completions"), body, &[])
        .await
        .unwrap();
    let first = s.next_chunk().await.unwrap().unwrap();
    let server = gw.begin_shutdown();
    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(gw.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "listener closed on shutdown");
    let (events, err) = s.collect_events().await;
    assert!(err.is_none(), "{err:?}");
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "the in-flight stream finished"
    );
    tokio::time::timeout(SECS5, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// `POST /v1/chat/completions` with [`CHAT`], closing the connection after the answer.
fn raw_chat() -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sluice\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{CHAT}",
        CHAT.len()
    )
    .into_bytes()
}

/// Everything the gateway sends on `stream` until it closes it (a reset counts as the end).
async fn read_all(mut stream: tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(SECS5, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A load balancer sends a request to a replica as long as it listens: a connection the
/// gateway took just before its shutdown, whose request had not arrived yet, is answered
/// (not dropped unread, which the balancer cannot retry for a POST).
#[tokio::test]
async fn shutdown_answers_a_connection_taken_before_its_request_arrived() {
    use tokio::io::AsyncWriteExt;
    let (_fake, mut gw) = setup("").await;
    let mut early = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let server = gw.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    early.write_all(&raw_chat()).await.unwrap();
    let answer = read_all(early).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    tokio::time::timeout(SECS5, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Once the shutdown began, a readiness probe that still reaches the gateway (on a
/// connection taken before) is told `draining`, 503: the replica is not to get new traffic.
#[tokio::test]
async fn readiness_is_draining_once_the_shutdown_began() {
    use tokio::io::AsyncWriteExt;
    let (_fake, mut gw) = setup("").await;
    let r = sluice_testkit::client::get(&gw.url("/health/ready"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let mut early = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let server = gw.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    early
        .write_all(b"GET /health/ready HTTP/1.1\r\nhost: sluice\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_all(early).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains(r#""status":"draining""#), "{answer:?}");
    tokio::time::timeout(SECS5, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Connections still in the kernel's accept queue when the shutdown comes (here: behind
/// `max_connections = 1`, held by an idle keep-alive connection) are taken and answered
/// before the listener closes, not reset with it.
#[tokio::test]
async fn shutdown_answers_the_connections_waiting_in_the_accept_queue() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = sluice_testkit::FakeUpstream::start().await;
    let toml = config_for(&fake.base_url(), "").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nmax_connections = 1",
    );
    let mut gw = start_with(&toml).await;
    let mut holder = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    holder
        .write_all(b"GET /health HTTP/1.1\r\nhost: sluice\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = holder.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let mut queued = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    queued.write_all(&raw_chat()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let server = gw.begin_shutdown();
    let answer = read_all(queued).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    tokio::time::timeout(SECS5, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    drop(holder);
}

#[tokio::test]
async fn shutdown_cuts_what_outlives_the_grace_period() {
    let fake = sluice_testkit::FakeUpstream::start().await;
    let toml = config_for(&fake.base_url(), "").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 200",
    );
    let mut gw = start_with(&toml).await;
    let body = chat_with(json!({"infinite_stream": true, "chunk_delay_ms": 10}), true);
    let mut s = post_stream(&gw.url("/v1/chat/completions"), body, &[])
        .await
        .unwrap();
    let _ = s.next_chunk().await;
    let server = gw.begin_shutdown();
    tokio::time::timeout(SECS5, server)
        .await
        .expect("run returns after the grace period")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_serve_with_their_own_pools_and_drain_on_shutdown() {
    use sluice_core::config::Config;
    use sluice_core::env::MapEnv;
    let fake = sluice_testkit::FakeUpstream::start().await;
    let config = Config::from_toml(&config_for(&fake.base_url(), ""), &MapEnv::default()).unwrap();
    let server = sluice_server::Server::bind_with_workers(config, 2)
        .await
        .unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        server.local_addr().unwrap()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(server.run_workers(async {
        let _ = stopped.await;
    }));
    // Each stream is a new client connection; the acceptor deals them out to the two workers.
    for _ in 0..6 {
        let mut s = post_stream(&url, CHAT_STREAM, &[]).await.unwrap();
        let (events, err) = s.collect_events().await;
        assert!(err.is_none());
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    }
    assert_eq!(
        fake.connections_accepted(),
        2,
        "one kept-alive upstream connection per worker pool"
    );
    // A stream in flight at shutdown still finishes.
    let body = chat_with(json!({"chunk_delay_ms": 50}), true);
    let mut s = post_stream(&url, body, &[]).await.unwrap();
    let _ = s.next_chunk().await;
    stop.send(()).unwrap();
    let (events, err) = s.collect_events().await;
    assert!(err.is_none());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    tokio::time::timeout(SECS5, join)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn speaks_http2_to_upstreams_with_prior_knowledge() {
    let (fake, gw) = setup("http2_prior_knowledge = true").await;
    let r = post_json(&gw.url("/v1/chat/completions"), CHAT, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(fake.last_request().unwrap().version, http::Version::HTTP_2);
    let mut s = post_stream(&gw.url("/v1/chat/completions"), CHAT_STREAM, &[])
        .await
        .unwrap();
    let (events, err) = s.collect_events().await;
    assert!(err.is_none());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    // Both requests shared one multiplexed connection.
    assert_eq!(fake.connections_accepted(), 1);
}

#[tokio::test]
async fn serves_http2_clients_with_prior_knowledge() {
    use http_body_util::{BodyExt, Full};
    let (_fake, gw) = setup("").await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (body, want) in [(CHAT, "chat.completion"), (CHAT_STREAM, "[DONE]")] {
        let req = http::Request::post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from_static(body.as_bytes())))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert!(resp.headers().contains_key("x-request-id"));
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&bytes).contains(want));
    }
}

#[tokio::test]
async fn a_stream_without_usage_is_counted_as_an_estimate() {
    // The upstream is not asked for usage (`stream_usage = false`) and sends none.
    let (_fake, gw) = setup("stream_usage = false").await;
    let mut s = post_stream(&gw.url("/v1/chat/completions"), CHAT_STREAM, &[])
        .await
        .unwrap();
    let (events, _) = s.collect_events().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let m = get(&gw.url("/metrics")).await.unwrap().text();
    // Five content events ("Hello", " from", " the", " fake", " upstream.").
    assert!(
        m.contains(
            r#"sluice_tokens_total{model="m",provider="fake",endpoint="chat",direction="out"} 5"#
        ),
        "{m}"
    );
    assert!(m.contains(r#"sluice_tokens_estimated_total{model="m",provider="fake",endpoint="chat",direction="out"} 5"#), "{m}");
    assert!(m.contains(r#"sluice_tokens_estimated_total{model="m",provider="fake",endpoint="chat",direction="in"}"#), "{m}");
}

/// `server.max_requests_in_flight` (by default the providers' `max_connections` summed):
/// requests past the bound wait their turn before the pipeline (the upstream never sees more than the bound at once), every one is answered,
/// `sluice_requests_queued` counts the waiting ones, and what is not proxied (health,
/// metrics) is never held back.
#[tokio::test]
async fn requests_past_the_in_flight_bound_wait_their_turn_before_the_pipeline() {
    let fake = sluice_testkit::FakeUpstream::start().await;
    fake.set_default(sluice_testkit::Behavior::new().with_delay_ms(300));
    // Unset, the bound is the sum of the providers' `max_connections`: here 2.
    let gw = start_with(&config_for(&fake.base_url(), "max_connections = 2")).await;
    let url = gw.url("/v1/chat/completions");
    let sent: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { post_json(&url, CHAT, &[]).await })
        })
        .collect();
    assert!(fake.wait_started(2, SECS5).await);
    // The four others wait before the pipeline (not for a provider slot inside it).
    let deadline = tokio::time::Instant::now() + SECS5;
    loop {
        let m = get(&gw.url("/metrics")).await.unwrap().text();
        if m.contains("\nsluice_requests_queued 4\n") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.started_count(), 2, "the third waits for a slot");
    let health = get(&gw.url("/health")).await.unwrap();
    assert_eq!(health.status, 200, "health is never held back");
    for r in sent {
        let r = r.await.unwrap().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(fake.request_count(), 6);
    assert!(
        fake.peak_open_connections() <= 2,
        "{}",
        fake.peak_open_connections()
    );
    let m = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(m.contains("\nsluice_requests_queued 0\n"), "{m}");
    assert!(m.contains("\nsluice_queue_timeouts_total 0\n"), "{m}");
}

/// A stream holds its slot until its last event; a request that waits past
/// `server.queue_timeout_ms` gets a 503 in OpenAI's shape naming the bound.
#[tokio::test]
async fn a_stream_holds_its_slot_and_a_request_waiting_too_long_gets_a_503() {
    let fake = sluice_testkit::FakeUpstream::start().await;
    let toml = config_for(&fake.base_url(), "").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nmax_requests_in_flight = 1\nqueue_timeout_ms = 200",
    );
    let gw = start_with(&toml).await;
    let slow = chat_with(json!({"chunk_delay_ms": 400}), true);
    let mut stream = post_stream(&gw.url("/v1/chat/completions"), slow, &[])
        .await
        .unwrap();
    assert_eq!(stream.status, 200);
    let first = stream.next_event().await.unwrap().unwrap();
    assert!(first.contains("chat.completion.chunk"), "{first}");
    // The stream's head is out; it still runs, so the next request waits and times out.
    let r = post_json(&gw.url("/v1/chat/completions"), CHAT, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["type"], "service_unavailable");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_requests_in_flight"), "{message}");
    assert!(message.contains("queue_timeout_ms"), "{message}");
    while let Some(event) = stream.next_event().await {
        event.unwrap();
    }
    // The stream ended: its slot is free.
    let r = post_json(&gw.url("/v1/chat/completions"), CHAT, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let m = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(m.contains("\nsluice_queue_timeouts_total 1\n"), "{m}");
}
