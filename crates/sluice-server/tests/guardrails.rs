//! Guardrails (issue 19) over loopback HTTP against the fake upstream: personal data
//! redacted before it leaves (and put back in the answer when asked), requests blocked with
//! nothing sent upstream, answers checked, every finding counted, never logged.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use sluice_testkit::client::{get, post_json};
use sluice_testkit::FakeUpstream;

const PII: &str = "Hi, I am ann@example.com, phone +1 415-555-0132, card 4111 1111 1111 1111.";

/// The guardrails of the streamed-answer tests: the request's emails redacted and put back,
/// cards redacted in answers, secrets in answers blocking.
const STREAM_GUARDS: &str = r#"
[[guardrails]]
name = "pii"
detectors = ["email"]
action = "redact"
restore = true
[[guardrails]]
name = "out"
detectors = ["card"]
action = "redact"
apply_to = "answers"
[[guardrails]]
name = "keys"
detectors = ["secret"]
action = "block"
apply_to = "answers"
"#;

fn config(fake: &FakeUpstream, guardrails: &str, on_model: &str) -> String {
    let base = config_for(&fake.base_url(), "");
    // `m` gets the guardrails; everything else of the common config stays.
    base.replace(
        "price = { input = 1.0, output = 2.0 }",
        &format!("price = {{ input = 1.0, output = 2.0 }}\nguardrails = [{on_model}]"),
    ) + guardrails
}

fn chat(content: &str, answer: Option<&str>) -> String {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": content}]});
    if let Some(a) = answer {
        body["x_fake"] = json!({"content": a});
    }
    body.to_string()
}

#[tokio::test]
async fn redacted_values_never_reach_the_upstream_and_come_back_restored() {
    let fake = FakeUpstream::start().await;
    let guards = r#"
[[guardrails]]
name = "pii"
detectors = ["email", "phone", "card"]
action = "redact"
restore = true
"#;
    let gw = start_with(&config(&fake, guards, "\"pii\"")).await;
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat(PII, Some("Noted, [EMAIL_1]; I will call [PHONE_1].")),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = String::from_utf8_lossy(&fake.last_request().unwrap().body).to_string();
    for value in ["ann@example.com", "415-555-0132", "4111 1111 1111 1111"] {
        assert!(
            !sent.contains(value),
            "{value} reached the upstream: {sent}"
        );
    }
    assert!(
        sent.contains("Hi, I am [EMAIL_1], phone [PHONE_1], card [CARD_1]."),
        "{sent}"
    );
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Noted, ann@example.com; I will call +1 415-555-0132."
    );
    // The same through Anthropic's API.
    let body =
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": PII}]});
    let r = post_json(&gw.url("/v1/messages"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = String::from_utf8_lossy(&fake.last_request().unwrap().body).to_string();
    assert!(
        !sent.contains("ann@example.com") && sent.contains("[EMAIL_1]"),
        "{sent}"
    );
    let metrics = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains(
            r#"sluice_guardrail_findings_total{guardrail="pii",detector="email",action="redact"} 2"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("ann@example.com"));
}

#[tokio::test]
async fn a_blocking_guardrail_refuses_with_nothing_sent_upstream() {
    let fake = FakeUpstream::start().await;
    let guards = r#"
[[guardrails]]
name = "pii"
detectors = ["email", "phone", "card"]
action = "block"
"#;
    let gw = start_with(&config(&fake, guards, "\"pii\"")).await;
    let request_id = format!("guard-block-{}", sluice_store::unix_now_ms());
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat(PII, None),
        &[("x-request-id", request_id.as_str())],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    // Recorded in the spend log, with what the guardrail found (never the value).
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    let record = records
        .iter()
        .find(|rec| rec.request_id == request_id)
        .expect("a spend record for the blocked request");
    assert_eq!(record.status, 400);
    assert_eq!(record.guardrails.as_deref(), Some("pii:email:block=1"));
    let e = &r.json()["error"];
    assert_eq!(e["code"], "guardrail_blocked");
    assert!(
        e["message"].as_str().unwrap().contains("guardrail `pii`"),
        "{e}"
    );
    assert!(
        !r.text().contains("ann@example.com"),
        "the value is never echoed"
    );
    assert_eq!(fake.request_count(), 0, "no upstream call");
    // A clean request goes through.
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat("hello there", None),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn answers_are_checked_before_they_reach_the_client() {
    let fake = FakeUpstream::start().await;
    let guards = r#"
[[guardrails]]
name = "no-secrets-out"
detectors = ["secret"]
action = "block"
apply_to = "answers"
[[guardrails]]
name = "ids"
patterns = { employee = 'EMP-\d{6}' }
action = "redact"
apply_to = "both"
[[guardrails]]
name = "brand"
patterns = { upstream = 'fake upstream' }
action = "redact"
apply_to = "answers"
"#;
    let on = "\"no-secrets-out\", \"ids\", \"brand\"";
    let gw = start_with(&config(&fake, guards, on)).await;
    let leaked = "Your key is sk-proj-abcdefghijklmnopqrstuvwxyz0123456789";
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat("what is my key?", Some(leaked)),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("the answer was blocked"));
    assert!(!r.text().contains("sk-proj-"));
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat("badge EMP-123456", Some("Badge EMP-654321 noted")),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = String::from_utf8_lossy(&fake.last_request().unwrap().body).to_string();
    assert!(sent.contains("badge [EMPLOYEE_1]"), "{sent}");
    // The fake says what it was told, and that was redacted on the way in.
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Badge [EMPLOYEE_2] noted"
    );
    // An answers-only guardrail: the request passes untouched, the answer is redacted.
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat("say hello", None),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from the [UPSTREAM_1]."
    );
}

/// The content of a streamed chat answer, and whether it ended in an error event.
fn streamed(body: &str) -> (String, Option<serde_json::Value>) {
    let mut text = String::new();
    let mut error = None;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        if v.get("error").is_some() {
            error = Some(v["error"].clone());
        } else if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
    }
    (text, error)
}

/// A streamed chat request whose answer comes in pieces of three characters.
fn chat_stream(content: &str, answer: &str) -> String {
    let chars: Vec<char> = answer.chars().collect();
    let pieces: Vec<String> = chars.chunks(3).map(|c| c.iter().collect()).collect();
    json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": content}], "x_fake": {"pieces": pieces}}).to_string()
}

#[tokio::test]
async fn streamed_answers_are_held_back_redacted_restored_and_blocked() {
    let fake = FakeUpstream::start().await;
    let guards = STREAM_GUARDS;
    let gw = start_with(&config(&fake, guards, "\"pii\", \"out\", \"keys\"")).await;
    let url = gw.url("/v1/chat/completions");
    let ids = [0, 1].map(|i| format!("guard-stream-{i}-{}", sluice_store::unix_now_ms()));
    // A placeholder of the request's redaction, split over chunks, comes back whole.
    let r = post_json(
        &url,
        chat_stream(
            "I am ann@example.com",
            "Hello [EMAIL_1], your card 4111 1111 1111 1111 is on file.",
        ),
        &[("x-request-id", ids[0].as_str())],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let (text, error) = streamed(&r.text());
    assert_eq!(error, None, "{}", r.text());
    assert_eq!(
        text,
        "Hello ann@example.com, your card [CARD_1] is on file."
    );
    assert!(!r.text().contains("4111"), "{}", r.text());
    // A secret in the answer ends the stream before it leaves.
    let leak = format!(
        "{} and the key is sk-proj-abcdefghijklmnopqrstuvwxyz0123456789 ok",
        "word ".repeat(80)
    );
    let r = post_json(
        &url,
        chat_stream("key?", &leak),
        &[("x-request-id", ids[1].as_str())],
    )
    .await
    .unwrap();
    let (text, error) = streamed(&r.text());
    assert!(!r.text().contains("sk-proj-"), "{}", r.text());
    assert!(!text.contains("sk-proj"));
    assert_eq!(error.unwrap()["code"], "guardrail_blocked");
    // The spend records say what the request's and the stream's guardrails found.
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    let found = |id: &str| {
        let record = records.iter().find(|rec| rec.request_id == id).unwrap();
        (record.status, record.guardrails.clone())
    };
    assert_eq!(
        found(&ids[0]),
        (200, Some("out:card:redact=1,pii:email:redact=1".into()))
    );
    assert_eq!(found(&ids[1]), (400, Some("keys:secret:block=1".into())));
}

#[tokio::test]
async fn a_webhook_allows_denies_or_rewrites_and_fails_as_configured() {
    let fake = FakeUpstream::start().await;
    // The webhook: denies what mentions "forbidden", rewrites "rude" requests politely.
    let (hook, calls) = fake_provider(|seen| {
        let text = seen.json["body"].to_string();
        if text.contains("forbidden") {
            (200, "application/json", full(r#"{"action":"deny","reason":"off topic"}"#))
        } else if text.contains("rude") {
            (
                200,
                "application/json",
                full(r#"{"action":"rewrite","body":{"model":"m","messages":[{"role":"user","content":"please"}]}}"#),
            )
        } else {
            (200, "application/json", full(r#"{"action":"allow"}"#))
        }
    })
    .await;
    let guards = format!(
        r#"
[[guardrails]]
name = "policy"
webhook = {{ url = "http://{hook}/check", timeout_ms = 2000, headers = {{ authorization = "Bearer hook-secret" }} }}
[[guardrails]]
name = "down"
webhook = {{ url = "http://127.0.0.1:9/never", timeout_ms = 300, on_error = "allow" }}
"#
    );
    let gw = start_with(&config(&fake, &guards, "\"policy\", \"down\"")).await;
    let url = gw.url("/v1/chat/completions");
    let r = post_json(&url, chat("hello", None), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(&url, chat("something forbidden", None), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "guardrail_blocked");
    assert!(r.text().contains("off topic"), "{}", r.text());
    let before = fake.request_count();
    let r = post_json(&url, chat("a rude request", None), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fake.request_count(), before + 1);
    let sent = fake.last_request().unwrap().json().unwrap();
    assert_eq!(sent["messages"][0]["content"], "please");
    {
        let calls = calls.lock().unwrap();
        assert_eq!(calls[0].json["phase"], "request");
        assert_eq!(calls[0].json["guardrail"], "policy");
        assert_eq!(calls[0].headers["authorization"], "Bearer hook-secret");
    }

    // Fail closed (the default): an unreachable webhook denies.
    let closed = r#"
[[guardrails]]
name = "closed"
webhook = { url = "http://127.0.0.1:9/never", timeout_ms = 300 }
"#;
    let gw = start_with(&config(&fake, closed, "\"closed\"")).await;
    let r = post_json(&gw.url("/v1/chat/completions"), chat("hello", None), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("webhook failed"), "{}", r.text());
}

/// A webhook that accepts the connection and never answers: past `timeout_ms` it fails,
/// closed (400, nothing upstream) or open (the request goes on), as `on_error` says.
#[tokio::test]
async fn a_webhook_slower_than_its_timeout_fails_as_configured() {
    let fake = FakeUpstream::start().await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    for (on_error, status) in [("deny", 400), ("allow", 200)] {
        let guards = format!(
            "\n[[guardrails]]\nname = \"slow\"\nwebhook = {{ url = \"http://{addr}/check\", timeout_ms = 200, on_error = \"{on_error}\" }}\n"
        );
        let gw = start_with(&config(&fake, &guards, "\"slow\"")).await;
        let before = fake.request_count();
        let started = std::time::Instant::now();
        let r = post_json(&gw.url("/v1/chat/completions"), chat("hello", None), &[])
            .await
            .unwrap();
        assert_eq!(r.status, status, "{on_error}: {}", r.text());
        assert!(started.elapsed() >= std::time::Duration::from_millis(200));
        if status == 400 {
            assert_eq!(r.json()["error"]["code"], "guardrail_blocked");
            assert!(r.text().contains("webhook failed"), "{}", r.text());
            assert_eq!(fake.request_count(), before, "nothing sent upstream");
        } else {
            assert_eq!(fake.request_count(), before + 1);
        }
    }
}

/// A webhook on answers (`apply_to = "answers"`) is sent the whole answer: it denies one
/// (400 naming the guardrail) and rewrites another (the client gets the rewrite).
#[tokio::test]
async fn a_webhook_on_answers_denies_or_rewrites_the_answer() {
    let fake = FakeUpstream::start().await;
    let (hook, calls) = fake_provider(|seen| {
        let text = seen.json["body"].to_string();
        if text.contains("secret plan") {
            (
                200,
                "application/json",
                full(r#"{"action":"deny","reason":"leak"}"#),
            )
        } else if text.contains("rude") {
            use http_body_util::BodyExt;
            let mut answer = seen.json["body"].clone();
            answer["choices"][0]["message"]["content"] = json!("A polite answer.");
            let verdict = json!({"action": "rewrite", "body": answer}).to_string();
            let body = http_body_util::Full::new(bytes::Bytes::from(verdict)).boxed();
            (200, "application/json", body)
        } else {
            (200, "application/json", full(r#"{"action":"allow"}"#))
        }
    })
    .await;
    let guards = format!(
        "\n[[guardrails]]\nname = \"review\"\napply_to = \"answers\"\nwebhook = {{ url = \"http://{hook}/check\", timeout_ms = 2000 }}\n"
    );
    let gw = start_with(&config(&fake, &guards, "\"review\"")).await;
    let url = gw.url("/v1/chat/completions");
    let r = post_json(&url, chat("hello", Some("A fine answer.")), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "A fine answer."
    );
    let r = post_json(&url, chat("hello", Some("The secret plan is X.")), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "guardrail_blocked");
    assert!(r.text().contains("review"), "{}", r.text());
    assert!(!r.text().contains("secret plan"), "{}", r.text());
    let r = post_json(&url, chat("hello", Some("A rude answer.")), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "A polite answer."
    );
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 3);
    assert!(
        calls.iter().all(|c| c.json["phase"] == "answer"),
        "{:?}",
        calls.len()
    );
}

/// A streamed tool call's arguments through the answer guardrails: a card number split
/// across the argument pieces is redacted before any of it leaves, the request's redacted
/// email comes back whole in the arguments, and a secret in them ends the stream.
#[tokio::test]
async fn streamed_tool_call_arguments_are_guarded_like_content() {
    let fake = FakeUpstream::start().await;
    let guards = STREAM_GUARDS;
    let gw = start_with(&config(&fake, guards, "\"pii\", \"out\", \"keys\"")).await;
    let url = gw.url("/v1/chat/completions");
    let call = |arguments: &str| {
        json!({"model": "m", "stream": true,
               "messages": [{"role": "user", "content": "Pay from ann@example.com"}],
               "x_fake": {"tool_call": {"name": "pay", "arguments": arguments}}})
        .to_string()
    };
    let arguments = |body: &str| {
        let mut args = String::new();
        let mut error = None;
        for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
            if data == "[DONE]" {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            if v.get("error").is_some() {
                error = Some(v["error"].clone());
            }
            for c in v["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                args.push_str(c["function"]["arguments"].as_str().unwrap_or_default());
            }
        }
        (args, error)
    };
    // The card's digits straddle the two argument pieces the fake streams.
    let r = post_json(
        &url,
        call(r#"{"from": "[EMAIL_1]", "card": "4111 1111 1111 1111", "memo": "rent"}"#),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let (args, error) = arguments(&r.text());
    assert_eq!(error, None, "{}", r.text());
    assert!(!r.text().contains("4111"), "{}", r.text());
    let parsed: serde_json::Value = serde_json::from_str(&args).unwrap();
    assert_eq!(
        parsed,
        json!({"from": "ann@example.com", "card": "[CARD_1]", "memo": "rent"})
    );
    assert!(
        r.text().contains("\"finish_reason\":\"tool_calls\""),
        "{}",
        r.text()
    );
    // A secret in the arguments ends the stream before it leaves.
    let r = post_json(
        &url,
        call(r#"{"key": "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789", "memo": "x"}"#),
        &[],
    )
    .await
    .unwrap();
    let (_, error) = arguments(&r.text());
    assert!(!r.text().contains("sk-proj-"), "{}", r.text());
    assert_eq!(error.unwrap()["code"], "guardrail_blocked");
}

/// An upstream that sends text, then two whole calls in one chunk (as converted Gemini and
/// some OpenAI-compatible servers do), the first longer than the hold-back window: the text
/// goes out before the calls, each call keeps its id and name ahead of its arguments, its
/// arguments whole and in order, and the card in them is redacted.
#[tokio::test]
async fn calls_sharing_a_chunk_stay_whole_and_in_order() {
    let long = "x".repeat(300);
    let first = format!(r#"{{"note": "{long}", "card": "4111 1111 1111 1111"}}"#);
    let second = r#"{"city": "Paris"}"#;
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        json!({"id": "chatcmpl-two", "object": "chat.completion.chunk", "created": 1,
               "model": "upstream-m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let events = [
        chunk(json!({"role": "assistant", "content": "Checking."}), None),
        chunk(
            json!({"tool_calls": [
                {"index": 0, "id": "call_0", "type": "function",
                 "function": {"name": "note", "arguments": first}},
                {"index": 1, "id": "call_1", "type": "function",
                 "function": {"name": "weather", "arguments": second}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
    ];
    let body: String = events
        .iter()
        .map(|e| format!("data: {e}\n\n"))
        .chain(std::iter::once("data: [DONE]\n\n".to_string()))
        .collect();
    let (addr, _) = fake_provider(move |_| {
        use http_body_util::BodyExt;
        let body = http_body_util::Full::new(bytes::Bytes::from(body.clone())).boxed();
        (200, "text/event-stream", body)
    })
    .await;
    let guards = "\n[[guardrails]]\nname = \"out\"\ndetectors = [\"card\"]\naction = \"redact\"\napply_to = \"answers\"\n";
    let toml = config_for(&format!("http://{addr}/v1"), "").replace(
        "price = { input = 1.0, output = 2.0 }",
        "price = { input = 1.0, output = 2.0 }\nguardrails = [\"out\"]",
    ) + guards;
    let gw = start_with(&toml).await;
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "go"}]})
            .to_string(),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("4111"), "{}", r.text());
    // Walk the stream as a client does: text, then per call its header before any argument.
    let mut order = Vec::new();
    let mut args: Vec<String> = vec![String::new(); 2];
    for data in r.text().lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        let delta = &v["choices"][0]["delta"];
        if delta["content"].as_str().is_some_and(|t| !t.is_empty()) {
            order.push("text".to_string());
        }
        for c in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().unwrap() as usize;
            if let Some(name) = c["function"]["name"].as_str() {
                order.push(format!("begin {name}"));
            } else {
                assert!(
                    order.contains(&format!("begin {}", ["note", "weather"][i])),
                    "arguments of call {i} before its name: {}",
                    r.text()
                );
            }
            args[i].push_str(c["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    assert_eq!(
        order,
        ["text", "begin note", "begin weather"],
        "{}",
        r.text()
    );
    let note: serde_json::Value = serde_json::from_str(&args[0]).unwrap();
    assert_eq!(note, json!({"note": long, "card": "[CARD_1]"}));
    assert_eq!(args[1], second);
    // The card is counted once.
    let metrics = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains(
            r#"sluice_guardrail_findings_total{guardrail="out",detector="card",action="redact"} 1"#
        ),
        "{metrics}"
    );
}

/// A webhook answer held until the test sends it (the first call's), so that what must
/// not wait for the webhook is seen not to.
struct HeldAnswer(tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>);

impl http_body::Body for HeldAnswer {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A webhook whose first answer is held until the test sends it on the returned sender (the
/// ones after it allow at once): its address and the calls it got.
async fn held_webhook() -> (
    std::net::SocketAddr,
    Recorded,
    tokio::sync::mpsc::UnboundedSender<bytes::Bytes>,
) {
    use http_body_util::BodyExt;
    let (verdict, held) = tokio::sync::mpsc::unbounded_channel::<bytes::Bytes>();
    let held = std::sync::Mutex::new(Some(held));
    let (hook, calls) = fake_provider(move |_| match held.lock().unwrap().take() {
        Some(rx) => (200, "application/json", HeldAnswer(rx).boxed()),
        None => (200, "application/json", full(r#"{"action":"allow"}"#)),
    })
    .await;
    (hook, calls, verdict)
}

/// The spend record of `id`, once it is written (the record of a streamed answer waits for
/// its webhooks' verdict).
async fn record_of(gw: &Gateway, id: &str) -> sluice_store::SpendRecord {
    let ledger = gw.state.ledger.as_ref().unwrap();
    for _ in 0..200 {
        ledger.flush().await;
        let records = ledger.export(0).await.unwrap();
        if let Some(r) = records.into_iter().find(|r| r.request_id == id) {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no spend record of {id}");
}

/// The calls a fake has received, once there are `n`.
async fn calls_of(calls: &Recorded, n: usize) -> Vec<Seen> {
    for _ in 0..200 {
        let seen = calls.lock().unwrap().clone();
        if seen.len() >= n {
            return seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "the webhook got {} calls, not {n}",
        calls.lock().unwrap().len()
    );
}

/// A streamed answer reaches an answer webhook once it has ended, assembled into the shape
/// of a whole answer (text, tool calls, usage, finish reason; the request's redacted values
/// as their placeholders), while the client's stream ends without waiting for the verdict.
/// A deny cannot take the answer back: it is flagged, in the metrics and in the spend
/// record, which waits for the verdict; an allow leaves no trace.
#[tokio::test]
async fn a_streamed_answer_reaches_the_webhook_after_it_ends_and_a_deny_flags_it() {
    let fake = FakeUpstream::start().await;
    let (hook, calls, verdict) = held_webhook().await;
    let guards = format!(
        r#"
[[guardrails]]
name = "pii"
detectors = ["email"]
action = "redact"
restore = true
[[guardrails]]
name = "review"
apply_to = "answers"
webhook = {{ url = "http://{hook}/check", timeout_ms = 30000 }}
"#
    );
    let gw = start_with(&config(&fake, &guards, "\"pii\", \"review\"")).await;
    let url = gw.url("/v1/chat/completions");
    let ids = [0, 1].map(|i| format!("late-hook-{i}-{}", sluice_store::unix_now_ms()));
    // The client gets the whole stream while the webhook's verdict is still held.
    let r = post_json(
        &url,
        chat_stream(
            "I am ann@example.com",
            "Hello [EMAIL_1], the secret plan is X.",
        ),
        &[("x-request-id", ids[0].as_str())],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let (text, error) = streamed(&r.text());
    assert_eq!(error, None, "{}", r.text());
    assert_eq!(text, "Hello ann@example.com, the secret plan is X.");
    assert!(r.text().contains("data: [DONE]"), "{}", r.text());
    // The webhook was sent the whole answer, as a whole answer's webhook is.
    let seen = calls_of(&calls, 1).await;
    let call = &seen[0].json;
    assert_eq!(call["guardrail"], "review");
    assert_eq!(call["phase"], "answer");
    assert_eq!(call["model"], "m");
    let answer = &call["body"];
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Hello [EMAIL_1], the secret plan is X."
    );
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert!(
        answer["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{answer}"
    );
    assert!(
        answer["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "{answer}"
    );
    // Its spend record waits for the verdict...
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let written = ledger.export(0).await.unwrap();
    assert!(
        !written.iter().any(|rec| rec.request_id == ids[0]),
        "recorded before the verdict"
    );
    // ...which denies: the answer, already sent, is flagged.
    verdict
        .send(bytes::Bytes::from_static(
            br#"{"action":"deny","reason":"leak"}"#,
        ))
        .unwrap();
    drop(verdict);
    let record = record_of(&gw, &ids[0]).await;
    assert_eq!(record.status, 200);
    assert_eq!(
        record.guardrails.as_deref(),
        Some("pii:email:redact=1,review:webhook:flag=1")
    );
    let metrics = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains(
            r#"sluice_guardrail_findings_total{guardrail="review",detector="webhook",action="flag"} 1"#
        ),
        "{metrics}"
    );

    // A streamed tool call reaches the webhook whole; an allow flags nothing.
    let body = json!({"model": "m", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Pay the rent"}],
        "x_fake": {"tool_call": {"name": "pay", "arguments": r#"{"memo": "rent", "amount": 900}"#}}});
    let r = post_json(&url, body.to_string(), &[("x-request-id", ids[1].as_str())])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = calls_of(&calls, 2).await;
    let answer = &seen[1].json["body"];
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "pay");
    let arguments: serde_json::Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"memo": "rent", "amount": 900}));
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert!(
        answer["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{answer}"
    );
    let record = record_of(&gw, &ids[1]).await;
    assert_eq!((record.status, record.guardrails), (200, None));
}

/// With the cache on, a streamed answer reaches the webhook whether it is the client's copy
/// of the stream its request leads (a miss, stored for others) or a replay of the stored
/// answer (a hit): the same whole answer, flagged alike in the spend record.
#[tokio::test]
async fn led_and_replayed_streams_reach_the_webhook_too() {
    let fake = FakeUpstream::start().await;
    let (hook, calls) = fake_provider(|_| {
        (
            200,
            "application/json",
            full(r#"{"action":"deny","reason":"no"}"#),
        )
    })
    .await;
    let guards = format!(
        "\n[[guardrails]]\nname = \"review\"\napply_to = \"answers\"\nwebhook = {{ url = \"http://{hook}/check\", timeout_ms = 5000 }}\n[cache]\nenabled = true\nnondeterministic = true\n"
    );
    let gw = start_with(&config(&fake, &guards, "\"review\"")).await;
    let url = gw.url("/v1/chat/completions");
    let unique = sluice_store::unix_now_ms();
    let body = chat_stream(&format!("question {unique}"), "A cached answer.");
    let mut statuses = Vec::new();
    for n in 0..50 {
        let id = format!("late-cached-{n}-{unique}");
        let r = post_json(&url, body.clone(), &[("x-request-id", id.as_str())])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(streamed(&r.text()), ("A cached answer.".into(), None));
        let cache = r.header("x-sluice-cache").unwrap().to_string();
        statuses.push((id, cache.clone()));
        if cache == "hit" {
            break;
        }
        // The stored answer is written once the stream has ended: ask again.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(statuses[0].1, "miss", "{statuses:?}");
    assert_eq!(statuses.last().unwrap().1, "hit", "{statuses:?}");
    let seen = calls_of(&calls, statuses.len()).await;
    for call in &seen {
        assert_eq!(call.json["phase"], "answer");
        let answer = &call.json["body"];
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            "A cached answer."
        );
        assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    }
    for (id, _) in [&statuses[0], statuses.last().unwrap()] {
        let record = record_of(&gw, id).await;
        assert_eq!(
            record.guardrails.as_deref(),
            Some("review:webhook:flag=1"),
            "{id}"
        );
    }
}

/// The common config with one answer guardrail, `review`, whose webhook is `hook`.
fn review_config(fake: &FakeUpstream, hook: &std::net::SocketAddr) -> String {
    let guards = format!(
        r#"
[[guardrails]]
name = "review"
apply_to = "answers"
webhook = {{ url = "http://{hook}/check", timeout_ms = 30000 }}
"#
    );
    config(fake, &guards, "\"review\"")
}

/// With worker threads, a shutdown that begins while a streamed answer's webhook verdict is
/// still awaited waits for it (the worker's runtime, which runs the webhook call, ends only
/// after it): the verdict lands and so does the spend record that waited for it.
#[tokio::test]
async fn a_shutdown_with_worker_threads_waits_for_a_streamed_answers_verdict() {
    let fake = FakeUpstream::start().await;
    let (hook, calls, verdict) = held_webhook().await;
    let mut gw = start_with_workers(&review_config(&fake, &hook), 2).await;
    let id = format!("late-hook-shutdown-{}", sluice_store::unix_now_ms());
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat_stream("hello", "Hello there."),
        &[("x-request-id", id.as_str())],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    calls_of(&calls, 1).await;
    let join = gw.begin_shutdown();
    // The shutdown runs on (the request's worker has no connection left to drain) while the
    // verdict is held.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    verdict
        .send(bytes::Bytes::from_static(
            br#"{"action":"deny","reason":"leak"}"#,
        ))
        .unwrap();
    drop(verdict);
    tokio::time::timeout(std::time::Duration::from_secs(20), join)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ledger = gw.state.ledger.as_ref().unwrap();
    let records = ledger.export(0).await.unwrap();
    let record = records.iter().find(|r| r.request_id == id);
    assert_eq!(
        record.and_then(|r| r.guardrails.as_deref()),
        Some("review:webhook:flag=1"),
        "the spend record waiting for the verdict was lost"
    );
}

/// With worker threads, a stream still running when the shutdown's grace runs out is cut,
/// and its spend record is written: no webhook is asked about a stream that did not end
/// cleanly, so the record does not wait for a verdict (a task the ending runtime would never
/// run).
#[tokio::test]
async fn a_stream_cut_by_the_shutdown_grace_keeps_its_spend_record() {
    let fake = FakeUpstream::start().await;
    let (hook, _calls, _verdict) = held_webhook().await;
    let toml = review_config(&fake, &hook).replacen(
        "[server]\n",
        "[server]\nshutdown_grace_ms = 300\n",
        1,
    );
    let mut gw = start_with_workers(&toml, 2).await;
    let id = format!("cut-by-grace-{}", sluice_store::unix_now_ms());
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}],
        "x_fake": {"infinite_stream": true, "chunk_delay_ms": 20}})
        .to_string();
    let mut s = sluice_testkit::client::post_stream(
        &gw.url("/v1/chat/completions"),
        body,
        &[("x-request-id", id.as_str())],
    )
    .await
    .unwrap();
    assert_eq!(s.status, 200);
    assert!(s.next_event().await.is_some_and(|e| e.is_ok()));
    let join = gw.begin_shutdown();
    tokio::time::timeout(std::time::Duration::from_secs(20), join)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    drop(s);
    let ledger = gw.state.ledger.as_ref().unwrap();
    let records = ledger.export(0).await.unwrap();
    assert!(
        records.iter().any(|r| r.request_id == id),
        "the cut stream's spend record was lost"
    );
}
