//! Translation tests against fixtures written from Ollama's documented formats
//! (`crates/sluice-testkit/fixtures/ollama/`, see its README).

use super::*;
use serde_json::json;

const CHAT: &str = include_str!("../../../sluice-testkit/fixtures/ollama/chat_response.json");
const TOOLS: &str = include_str!("../../../sluice-testkit/fixtures/ollama/chat_tools.json");
const STREAM: &str = include_str!("../../../sluice-testkit/fixtures/ollama/chat_stream.ndjson");
const EMBED: &str = include_str!("../../../sluice-testkit/fixtures/ollama/embed_response.json");

fn translate(req: serde_json::Value, keep_alive: Option<&str>) -> serde_json::Value {
    let raw = serde_json::to_vec(&req).unwrap();
    let parsed: ChatCompletionRequest = serde_json::from_slice(&raw).unwrap();
    serde_json::from_slice(&to_chat_request(&parsed, &raw, "llama3.2", keep_alive).unwrap())
        .unwrap()
}

#[test]
fn request_maps_messages_options_tools_format_and_keep_alive() {
    let out = translate(
        json!({
            "model": "local",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "2"}
            ],
            "temperature": 0.2, "top_p": 0.9, "seed": 7, "max_tokens": 64, "stop": "END",
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "response_format": {"type": "json_object"},
            "stream": true,
            "keep_alive": "30m"
        }),
        Some("5m"),
    );
    assert_eq!(out["model"], "llama3.2");
    assert_eq!(out["stream"], true);
    assert_eq!(
        out["keep_alive"], "30m",
        "the request's keep_alive wins over the default"
    );
    assert_eq!(out["format"], "json");
    assert_eq!(
        out["options"],
        json!({"temperature": 0.2, "top_p": 0.9, "seed": 7, "num_predict": 64, "stop": ["END"]})
    );
    let m = &out["messages"];
    assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(m[1]["images"], json!(["iVBORw0KGgo="]));
    assert_eq!(
        m[2]["tool_calls"][0]["function"]["arguments"],
        json!({"x": 1})
    );
    assert_eq!(
        m[3],
        json!({"role": "tool", "content": "2", "tool_name": "f"})
    );
    assert_eq!(out["tools"][0]["function"]["name"], "f");
    let defaulted = translate(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        Some("5m"),
    );
    assert_eq!(defaulted["keep_alive"], "5m");
    assert_eq!(defaulted["stream"], false);
}

#[test]
fn request_refuses_remote_images() {
    let raw = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#;
    let parsed: ChatCompletionRequest = serde_json::from_slice(raw).unwrap();
    assert!(to_chat_request(&parsed, raw, "m", None)
        .unwrap_err()
        .0
        .contains("data URLs"));
}

#[test]
fn chat_response_and_tool_calls() {
    let (body, usage) = from_chat_response(CHAT.as_bytes(), "local").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello! How are you today?"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["model"], "local");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (26, 298));
    let (body, _) = from_chat_response(TOOLS.as_bytes(), "local").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_current_weather");
    let args: serde_json::Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"format": "celsius", "location": "Paris, FR"}));
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(
        from_chat_response(br#"{"error":"model 'x' not found"}"#, "m").unwrap_err(),
        "model 'x' not found"
    );
}

#[test]
fn ndjson_stream_becomes_chunks() {
    let mut t = LineTranslator::new("local", true);
    let mut out = Vec::new();
    let mut done = false;
    for line in STREAM.lines() {
        done |= t.on_line(line.as_bytes(), &mut out) == LineStep::Done;
    }
    assert!(done);
    let text = String::from_utf8(out).unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "The sky is blue.");
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 282);
    assert_eq!(t.usage().prompt_tokens, 26);
    assert!(
        matches!(t.on_line(br#"{"error":"boom"}"#, &mut Vec::new()), LineStep::Error(m) if m == "boom")
    );
}

#[test]
fn embeddings_both_ways() {
    let out: serde_json::Value = serde_json::from_slice(
        &to_embed_request(
            br#"{"model":"e","input":["a","b"],"dimensions":8,"keep_alive":"1h"}"#,
            "all-minilm",
            None,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"model": "all-minilm", "input": ["a", "b"], "dimensions": 8, "keep_alive": "1h"})
    );
    assert!(to_embed_request(br#"{"model":"e","input":[[1,2]]}"#, "m", None).is_err());
    let (body, usage) = from_embed_response(EMBED.as_bytes(), "e").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 10);
    assert_eq!(usage.prompt_tokens, 8);
}

/// Reads an `/api/chat` body back into an OpenAI request (test only), with placeholder
/// tool-call ids.
fn back_to_openai(body: &serde_json::Value) -> ChatCompletionRequest {
    let messages: Vec<serde_json::Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let mut out = json!({"role": m["role"], "content": m["content"]});
            if m["role"] == "tool" {
                out["tool_call_id"] = json!("x");
            }
            if let Some(calls) = m["tool_calls"].as_array() {
                out["tool_calls"] = json!(calls.iter().map(|c| json!({"id": "x", "type": "function", "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"].to_string()}})).collect::<Vec<_>>());
            }
            out
        })
        .collect();
    let o = &body["options"];
    let mut req = json!({"model": "m", "messages": messages, "max_tokens": o["num_predict"], "temperature": o["temperature"], "top_p": o["top_p"], "stop": o["stop"]});
    if let Some(tools) = body["tools"].as_array() {
        req["tools"] = json!(tools);
    }
    serde_json::from_value(req).unwrap()
}

#[test]
fn round_trip_through_ollama_keeps_what_both_formats_express() {
    use crate::test_support::{essence_without, generate, Gen};
    let mut g = Gen(0x0112);
    for case in 0..500 {
        let original: ChatCompletionRequest = serde_json::from_value(generate(&mut g)).unwrap();
        // Only `keep_alive` is read from the raw body, and generated requests have none.
        let body: serde_json::Value =
            serde_json::from_slice(&to_chat_request(&original, b"{}", "m", None).unwrap()).unwrap();
        let back = back_to_openai(&body);
        // Ollama has no end-user field, no tool_choice and no tool-call ids.
        let drop = ["user", "tool_choice"];
        assert_eq!(
            essence_without(&back, &drop),
            essence_without(&original, &drop),
            "case {case}: {body}"
        );
    }
}

#[test]
fn thinking_becomes_reasoning_content_and_effort_think() {
    let line = json!({"model": "q", "message": {"role": "assistant", "content": "Yes.", "thinking": "Hm."},
        "done": true, "done_reason": "stop", "prompt_eval_count": 2, "eval_count": 3});
    let (out, _) = from_chat_response(line.to_string().as_bytes(), "m").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["message"]["reasoning_content"], "Hm.");
    let mut t = LineTranslator::new("m", false);
    let mut out = Vec::new();
    t.on_line(line.to_string().as_bytes(), &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(r#""delta":{"reasoning_content":"Hm."}"#),
        "{text}"
    );
    let wire = translate(
        json!({"model": "q", "reasoning_effort": "low", "messages": [{"role": "user", "content": "hi"}]}),
        None,
    );
    assert_eq!(wire["think"], true);
}

#[test]
fn tool_results_name_their_function() {
    let wire = translate(
        json!({"model": "q", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c2", "content": "2"},
            {"role": "tool", "tool_call_id": "c1", "content": "1"}]}),
        None,
    );
    assert_eq!(wire["messages"][2]["tool_name"], "g");
    assert_eq!(wire["messages"][3]["tool_name"], "f");
    assert!(wire["messages"][1].get("tool_name").is_none());
}
