//! `POST /v1/completions` (legacy text completions) over real loopback HTTP, against the fake
//! upstream's documented `text_completion` format: passed through whole and streamed (model
//! spliced, usage asked for and hidden as for chat), a spend record with endpoint
//! `completions` and the upstream's exact usage, the budget reserved from `max_tokens` (16
//! when absent), a route falling over a provider without the endpoint (and its degraded
//! answer when nothing can answer), the cache serving a
//! stored completion whole and as events, and bad input refused with 400 naming the field.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use sluice_testkit::client::{get, post_json, post_stream};
use sluice_testkit::FakeUpstream;

fn completion(extra: Value) -> String {
    let mut v = json!({"model": "m", "prompt": "Once upon a time", "max_tokens": 7});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string()
}

/// The text of a streamed answer, and its events (`[DONE]` last).
async fn streamed(gw: &Gateway, body: String) -> (String, Vec<Value>, Option<String>) {
    let mut s = post_stream(&gw.url("/v1/completions"), body, &[])
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    let cache = s.header("x-sluice-cache").map(str::to_string);
    let (events, err) = s.collect_events().await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let parsed: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text = parsed
        .iter()
        .filter_map(|v| v["choices"][0]["text"].as_str())
        .collect();
    (text, parsed, cache)
}

#[tokio::test]
async fn a_completion_passes_through_with_the_model_spliced_and_other_fields_kept() {
    let (fake, gw) = setup("").await;
    let body =
        completion(json!({"suffix": "The end.", "echo": false, "logit_bias": {"50256": -100}}));
    let r = post_json(&gw.url("/v1/completions"), body.clone(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "Hello from the fake upstream.");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 12);
    assert_eq!(r.header("x-sluice-model"), Some("m"));
    assert_eq!(r.header("x-sluice-provider"), Some("fake"));
    // 12 prompt tokens at $1 and 9 completion tokens at $2 per million.
    assert_eq!(r.header("x-sluice-cost-usd"), Some("0.00003"));
    let seen = fake.last_request().unwrap();
    assert_eq!(seen.path, "/v1/completions");
    // Only `model` changed: every other byte as the client sent it.
    let expected = body.replacen("\"model\":\"m\"", "\"model\":\"upstream-m\"", 1);
    assert_eq!(String::from_utf8_lossy(&seen.body), expected);
    // OpenAI's clients may leave out the `/v1`.
    let r = post_json(&gw.url("/completions"), completion(json!({})), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn a_streamed_completion_is_relayed_with_the_usage_asked_for_and_hidden() {
    let (fake, gw) = setup("").await;
    let (text, events, _) = streamed(&gw, completion(json!({"stream": true}))).await;
    assert_eq!(text, "Hello from the fake upstream.");
    assert!(events.iter().all(|e| e["object"] == "text_completion"));
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(
        events.iter().all(|e| e.get("usage").is_none()),
        "the usage sluice asked for is not shown: {events:?}"
    );
    let sent = fake.last_request().unwrap().json().unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    // A client that asks for usage gets the usage event.
    let body = completion(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let (_, events, _) = streamed(&gw, body).await;
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 12);
}

#[tokio::test]
async fn spend_records_say_completions_with_the_upstreams_exact_usage() {
    let (_fake, gw) = setup("").await;
    let usage = json!({"usage": {"prompt_tokens": 41, "completion_tokens": 13}});
    let mut ids = Vec::new();
    for stream in [false, true] {
        let id = format!("cmpl-spend-{stream}-{}", sluice_store::unix_now_ms());
        let body = completion(json!({"stream": stream, "x_fake": usage}));
        let headers = [("x-request-id", id.as_str())];
        if stream {
            let mut s = post_stream(&gw.url("/v1/completions"), body, &headers)
                .await
                .unwrap();
            let (_, err) = s.collect_events().await;
            assert!(err.is_none(), "{err:?}");
        } else {
            let r = post_json(&gw.url("/v1/completions"), body, &headers)
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
        }
        ids.push(id);
    }
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    for id in &ids {
        let rec = records
            .iter()
            .find(|r| &r.request_id == id)
            .expect("a spend record");
        assert_eq!(rec.endpoint, "completions");
        assert_eq!((rec.prompt_tokens, rec.completion_tokens), (41, 13), "{id}");
        assert!(!rec.usage_estimated, "{id}");
        assert_eq!(rec.model.as_deref(), Some("m"));
        // 41 at $1 and 13 at $2 per million.
        assert_eq!(rec.cost_nano_usd, 67_000, "{id}");
    }
    let metrics = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains(
            r#"sluice_requests_total{model="m",provider="fake",endpoint="completion",status="200"} 2"#
        ),
        "{metrics}"
    );
    // `/health/detailed` counts them among the model's requests.
    let d = get(&gw.url("/health/detailed")).await.unwrap().json();
    let m = d["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "m")
        .unwrap();
    assert_eq!(m["requests"], 2, "{m}");
}

#[tokio::test]
async fn a_stream_without_usage_is_counted_by_its_pieces() {
    let (fake, gw) = setup("stream_usage = false").await;
    let id = format!("cmpl-estimate-{}", sluice_store::unix_now_ms());
    let body = completion(json!({"stream": true}));
    let mut s = post_stream(
        &gw.url("/v1/completions"),
        body,
        &[("x-request-id", id.as_str())],
    )
    .await
    .unwrap();
    let (_, err) = s.collect_events().await;
    assert!(err.is_none(), "{err:?}");
    let sent = fake.last_request().unwrap().json().unwrap();
    assert!(sent.get("stream_options").is_none(), "{sent}");
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    let rec = records
        .iter()
        .find(|r| r.request_id == id)
        .expect("a spend record");
    assert!(rec.usage_estimated);
    // The fake streams its five default pieces, one a token.
    assert_eq!(rec.completion_tokens, 5);
    assert!(rec.prompt_tokens > 0);
}

#[tokio::test]
async fn the_budget_is_reserved_from_max_tokens_or_openais_default_of_16() {
    let fake = FakeUpstream::start().await;
    let config = config_for(&fake.base_url(), "").replace(
        "price = { input = 1.0, output = 2.0 }",
        "price = { input = 1.0, output = 2.0 }\nlimits = { tpm = 100 }",
    );
    let gw = start_with(&config).await;
    let body = json!({"model": "m", "prompt": "Once upon a time"}).to_string();
    let r = post_json(&gw.url("/v1/completions"), body, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "a prompt and 16 tokens fit: {}", r.text());
    let body = completion(json!({"max_tokens": 500}));
    let r = post_json(&gw.url("/v1/completions"), body, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("max_tokens"), "{}", r.text());
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn a_route_falls_over_a_provider_without_completions() {
    let fake = FakeUpstream::start().await;
    let other = FakeUpstream::start().await;
    let extra = format!(
        r#"
[[providers]]
name = "chat-only"
type = "openai"
base_url = "{}"
endpoints = ["chat"]
[[models]]
name = "a"
provider = "chat-only"
[[models]]
name = "b"
provider = "fake"
[[routes]]
name = "text"
targets = ["a", "b"]
[[routes]]
name = "text-down"
targets = ["a"]
fallback_response = "Come back later."
"#,
        other.base_url()
    );
    let gw = start_with(&(config_for(&fake.base_url(), "") + &extra)).await;
    let r = post_json(
        &gw.url("/v1/completions"),
        completion(json!({"model": "text"})),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-provider"), Some("fake"));
    assert_eq!(other.request_count(), 0);
    // Alone, the provider's lack is the 404 the other endpoints give.
    let r = post_json(
        &gw.url("/v1/completions"),
        completion(json!({"model": "a"})),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["code"], "endpoint_not_supported");
    assert!(
        e["message"].as_str().unwrap().contains("/v1/completions"),
        "{e}"
    );
    // A route with nothing that can answer gives its degraded answer as a text completion.
    for stream in [false, true] {
        let body = completion(json!({"model": "text-down", "stream": stream}));
        if stream {
            let (text, events, _) = streamed(&gw, body).await;
            assert_eq!(text, "Come back later.");
            assert!(events.iter().all(|e| e["object"] == "text_completion"));
        } else {
            let r = post_json(&gw.url("/v1/completions"), body, &[])
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("x-sluice-degraded"), Some("true"));
            assert_eq!(r.json()["object"], "text_completion");
            assert_eq!(r.json()["choices"][0]["text"], "Come back later.");
        }
    }
}

/// A gateway on `fake` with the cache on, in a fresh data directory (entries of earlier
/// runs never answer).
async fn cached_gateway(fake: &FakeUpstream) -> Gateway {
    let dir = std::env::temp_dir().join(format!(
        "sluice-completions-cache-{}-{}",
        std::process::id(),
        sluice_core::rng::next_u64()
    ));
    let config = config_for(&fake.base_url(), "") + "[cache]\nenabled = true\n";
    let shared = config
        .lines()
        .find(|l| l.starts_with("data_dir = "))
        .unwrap()
        .to_string();
    start_with(&config.replace(&shared, &format!("data_dir = \"{}\"", dir.display()))).await
}

#[tokio::test]
async fn a_stored_completion_answers_again_whole_and_as_events() {
    let fake = FakeUpstream::start().await;
    let gw = cached_gateway(&fake).await;
    let body = completion(json!({"temperature": 0}));
    let first = post_json(&gw.url("/v1/completions"), body.clone(), &[])
        .await
        .unwrap();
    assert_eq!(first.header("x-sluice-cache"), Some("miss"));
    let second = post_json(&gw.url("/v1/completions"), body, &[])
        .await
        .unwrap();
    assert_eq!(second.header("x-sluice-cache"), Some("hit"));
    assert_eq!(second.json()["choices"], first.json()["choices"]);
    // A streaming client is served the same entry as `text_completion` events.
    let body = completion(json!({"temperature": 0, "stream": true,
        "stream_options": {"include_usage": true}}));
    let (text, events, cache) = streamed(&gw, body).await;
    assert_eq!(cache.as_deref(), Some("hit"));
    assert_eq!(text, "Hello from the fake upstream.");
    assert!(events.iter().all(|e| e["object"] == "text_completion"));
    assert_eq!(events.last().unwrap()["usage"]["completion_tokens"], 9);
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn a_streamed_completion_is_stored_and_served_whole() {
    let fake = FakeUpstream::start().await;
    let gw = cached_gateway(&fake).await;
    let (text, _, cache) = streamed(&gw, completion(json!({"seed": 11, "stream": true}))).await;
    assert_eq!(cache.as_deref(), Some("miss"));
    let r = post_json(
        &gw.url("/v1/completions"),
        completion(json!({"seed": 11})),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.header("x-sluice-cache"), Some("hit"), "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], text);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn answer_guardrails_hold_back_and_redact_a_streamed_completions_text() {
    let fake = FakeUpstream::start().await;
    let config = config_for(&fake.base_url(), "").replace(
        "price = { input = 1.0, output = 2.0 }",
        "price = { input = 1.0, output = 2.0 }\nguardrails = [\"out\"]",
    ) + "[[guardrails]]\nname = \"out\"\ndetectors = [\"card\"]\naction = \"redact\"\napply_to = \"answers\"\n";
    let gw = start_with(&config).await;
    let answer = "Your card 4111 1111 1111 1111 is on file.";
    let chars: Vec<char> = answer.chars().collect();
    let pieces: Vec<String> = chars.chunks(3).map(|c| c.iter().collect()).collect();
    let body = completion(
        json!({"stream": true, "stream_options": {"include_usage": true},
        "x_fake": {"pieces": pieces, "content": answer}}),
    );
    let (text, events, _) = streamed(&gw, body).await;
    assert_eq!(text, "Your card [CARD_1] is on file.");
    assert!(events.iter().all(|e| e["object"] == "text_completion"));
    assert!(
        !events.iter().any(|e| e.to_string().contains("4111")),
        "{events:?}"
    );
    assert_eq!(
        events.last().unwrap()["choices"],
        json!([]),
        "the usage event passes"
    );
    // Whole, too.
    let body = completion(json!({"x_fake": {"content": answer}}));
    let r = post_json(&gw.url("/v1/completions"), body, &[])
        .await
        .unwrap();
    assert_eq!(
        r.json()["choices"][0]["text"],
        "Your card [CARD_1] is on file."
    );
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field_before_any_upstream_call() {
    let (fake, gw) = setup("").await;
    let cases = [
        (json!({"model": "m"}), "prompt"),
        (json!({"model": "m", "prompt": 42}), "prompt"),
        (json!({"model": "m", "prompt": []}), "prompt"),
        (json!({"model": "m", "prompt": ["a", 1]}), "prompt"),
        (json!({"prompt": "x"}), "model"),
        (
            json!({"model": "m", "prompt": "x", "stream": "yes"}),
            "stream",
        ),
        (
            json!({"model": "m", "prompt": "x", "max_tokens": -1}),
            "max_tokens",
        ),
    ];
    for (body, param) in cases {
        let r = post_json(&gw.url("/v1/completions"), body.to_string(), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["type"], "invalid_request_error", "{body}");
        assert_eq!(e["param"], param, "{body}: {e}");
    }
    let r = post_json(&gw.url("/v1/completions"), "not json", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(fake.request_count(), 0);
}
