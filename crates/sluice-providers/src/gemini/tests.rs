//! Translation tests against fixtures written from the Gemini API reference
//! (`crates/sluice-testkit/fixtures/gemini/`, see its README).

use super::*;
use serde_json::json;

const TEXT: &str = include_str!("../../../sluice-testkit/fixtures/gemini/response_text.json");
const CALL: &str =
    include_str!("../../../sluice-testkit/fixtures/gemini/response_function_call.json");
const BLOCKED: &str = include_str!("../../../sluice-testkit/fixtures/gemini/response_blocked.json");
const STREAM: &str = include_str!("../../../sluice-testkit/fixtures/gemini/stream.sse");
const EMBED: &str = include_str!("../../../sluice-testkit/fixtures/gemini/embed_batch.json");

fn translate(req: serde_json::Value) -> serde_json::Value {
    let req: ChatCompletionRequest = serde_json::from_value(req).unwrap();
    serde_json::from_slice(&to_request(&req).unwrap()).unwrap()
}

#[test]
fn request_maps_roles_parts_tools_and_config() {
    let out = translate(json!({
        "model": "g",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}]},
            {"role": "assistant", "tool_calls": [{"id": "c7", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Boston\"}"}}]},
            {"role": "tool", "tool_call_id": "c7", "content": "{\"temp\": 21}"},
            {"role": "tool", "tool_call_id": "c7", "content": "sunny"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "w", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0.5, "top_p": 0.8, "max_completion_tokens": 100, "stop": ["X"], "seed": 3,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}
    }));
    assert_eq!(
        out["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    let c = out["contents"].as_array().unwrap();
    assert_eq!(c.len(), 3);
    assert_eq!(c[0]["role"], "user");
    assert_eq!(
        c[0]["parts"][1],
        json!({"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}})
    );
    assert_eq!(
        c[1],
        json!({"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Boston"}}}]})
    );
    // Both tool results in one user turn, named after the call they answer.
    assert_eq!(
        c[2]["parts"][0],
        json!({"functionResponse": {"name": "get_weather", "response": {"temp": 21}}})
    );
    assert_eq!(
        c[2]["parts"][1],
        json!({"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}})
    );
    assert_eq!(
        out["generationConfig"],
        json!({"temperature": 0.5, "topP": 0.8, "maxOutputTokens": 100, "stopSequences": ["X"], "seed": 3, "responseMimeType": "application/json", "responseSchema": {"type": "object"}})
    );
    assert_eq!(
        out["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );
    assert_eq!(
        out["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]})
    );
}

#[test]
fn request_errors() {
    let req: ChatCompletionRequest = serde_json::from_value(json!({"model": "g", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]})).unwrap();
    assert!(to_request(&req).unwrap_err().0.contains("nope"));
    let req: ChatCompletionRequest = serde_json::from_value(
        json!({"model": "g", "messages": [{"role": "system", "content": "x"}]}),
    )
    .unwrap();
    assert!(to_request(&req).is_err());
}

#[test]
fn responses() {
    let (body, usage) = from_response(TEXT.as_bytes(), "g").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "AI works by learning patterns from data."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_prompt_tokens
        ),
        (4, 9, 2)
    );
    let (body, _) = from_response(CALL.as_bytes(), "g").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_current_weather");
    assert_eq!(
        call["function"]["arguments"],
        r#"{"location":"Boston, MA"}"#
    );
    let id = call["id"].as_str().unwrap();
    assert!(id.starts_with("call_") && id.len() == 29, "{id}");
    // Each answer's made-up ids are its own: a later turn's first call never repeats it.
    let (again, _) = from_response(CALL.as_bytes(), "g").unwrap();
    let again: serde_json::Value = serde_json::from_slice(&again).unwrap();
    assert_ne!(
        again["choices"][0]["message"]["tool_calls"][0]["id"],
        call["id"]
    );
    let (body, _) = from_response(BLOCKED.as_bytes(), "g").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(finish_reason("SAFETY", false), "content_filter");
    assert_eq!(finish_reason("MAX_TOKENS", false), "length");
}

#[test]
fn stream_needs_the_end_call() {
    let mut t = StreamTranslator::new("g", true);
    let mut out = Vec::new();
    for event in STREAM.split("\n\n") {
        if let Some(data) = sluice_types::sse::event_data(event.as_bytes()) {
            t.on_event(&data, &mut out).unwrap();
        }
    }
    assert!(t.end(&mut out));
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
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "The sky is blue.");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 5);
    // A stream cut before any finish reason is not a finished stream.
    let mut cut = StreamTranslator::new("g", false);
    cut.on_event(
        br#"{"candidates":[{"content":{"parts":[{"text":"The"}]}}]}"#,
        &mut Vec::new(),
    )
    .unwrap();
    assert!(!cut.end(&mut Vec::new()));
}

#[test]
fn embeddings() {
    let out: serde_json::Value = serde_json::from_slice(
        &to_embed_request(
            br#"{"model":"e","input":["a","b"],"dimensions":4}"#,
            "text-embedding-004",
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        out["requests"][1],
        json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 4})
    );
    let (body, usage) = from_embed_response(EMBED.as_bytes(), "e", 2).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(usage.prompt_tokens, 2);
}

/// Reads a `generateContent` body back into an OpenAI request (test only: the gateway never
/// needs this direction), with placeholder tool-call ids.
fn back_to_openai(body: &serde_json::Value) -> ChatCompletionRequest {
    let texts = |parts: &serde_json::Value| -> String {
        parts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["text"].as_str())
            .collect()
    };
    let mut messages = Vec::new();
    if let Some(sys) = body.get("systemInstruction") {
        messages.push(json!({"role": "system", "content": texts(&sys["parts"])}));
    }
    for c in body["contents"].as_array().unwrap() {
        let parts = &c["parts"];
        if c["role"] == "user" {
            for p in parts.as_array().unwrap() {
                if let Some(r) = p.get("functionResponse") {
                    messages.push(json!({"role": "tool", "tool_call_id": "x", "content": r["response"]["result"]}));
                }
            }
            let text = texts(parts);
            if !text.is_empty() {
                messages.push(json!({"role": "user", "content": text}));
            }
        } else {
            let calls: Vec<serde_json::Value> = parts
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p.get("functionCall"))
                .map(|f| json!({"id": "x", "type": "function", "function": {"name": f["name"], "arguments": f["args"].to_string()}}))
                .collect();
            let mut m = json!({"role": "assistant", "content": texts(parts)});
            if !calls.is_empty() {
                m["tool_calls"] = json!(calls);
            }
            messages.push(m);
        }
    }
    let g = &body["generationConfig"];
    let mut req = json!({"model": "m", "messages": messages, "max_tokens": g["maxOutputTokens"], "temperature": g["temperature"], "top_p": g["topP"], "stop": g["stopSequences"]});
    if let Some(decls) = body["tools"][0]["functionDeclarations"].as_array() {
        req["tools"] = json!(decls.iter().map(|d| json!({"type": "function", "function": {"name": d["name"], "description": d["description"], "parameters": d["parameters"]}})).collect::<Vec<_>>());
    }
    let cfg = &body["toolConfig"]["functionCallingConfig"];
    req["tool_choice"] = match (
        cfg["mode"].as_str(),
        cfg["allowedFunctionNames"][0].as_str(),
    ) {
        (Some("ANY"), Some(name)) => json!({"type": "function", "function": {"name": name}}),
        (Some("ANY"), None) => json!("required"),
        (Some("AUTO"), _) => json!("auto"),
        (Some("NONE"), _) => json!("none"),
        _ => serde_json::Value::Null,
    };
    serde_json::from_value(req).unwrap()
}

#[test]
fn round_trip_through_gemini_keeps_what_both_formats_express() {
    use crate::test_support::{essence_without, generate, Gen};
    let mut g = Gen(0x9e31);
    for case in 0..500 {
        let original: ChatCompletionRequest = serde_json::from_value(generate(&mut g)).unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(&to_request(&original).unwrap()).unwrap();
        let back = back_to_openai(&body);
        // Gemini has no end-user field and no tool-call ids.
        assert_eq!(
            essence_without(&back, &["user"]),
            essence_without(&original, &["user"]),
            "case {case}: {body}"
        );
    }
}

#[test]
fn thoughts_become_reasoning_content_and_effort_a_thinking_budget() {
    let body = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "Hm.", "thought": true}, {"text": "Yes."}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1, "thoughtsTokenCount": 7}});
    let (out, usage) = from_response(body.to_string().as_bytes(), "m").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["message"]["reasoning_content"], "Hm.");
    assert_eq!(v["choices"][0]["message"]["content"], "Yes.");
    assert_eq!((usage.completion_tokens, usage.reasoning_tokens), (8, 7));
    let mut t = StreamTranslator::new("g", false);
    let mut out = Vec::new();
    t.on_event(body.to_string().as_bytes(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(r#""delta":{"reasoning_content":"Hm."}"#),
        "{text}"
    );
    let wire = translate(json!({"model": "g", "reasoning_effort": "high",
        "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(
        wire["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 16384, "includeThoughts": true})
    );
    let off = translate(json!({"model": "g", "reasoning_effort": "none",
        "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(
        off["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 0})
    );
}

#[test]
fn thought_signatures_ride_in_call_ids_and_go_back() {
    let body = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "Q2lR+/=="},
            {"functionCall": {"name": "g", "args": {}}}]}, "finishReason": "STOP"}]});
    let (out, _) = from_response(body.to_string().as_bytes(), "m").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let calls = &v["choices"][0]["message"]["tool_calls"];
    let signed = calls[0]["id"].as_str().unwrap().to_owned();
    assert!(
        signed.starts_with("call_") && signed[5..].find("__thought__") == Some(24),
        "{signed}"
    );
    assert!(
        signed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "{signed}"
    );
    let second = calls[1]["id"].as_str().unwrap().to_owned();
    assert!(
        second.starts_with("call_") && !second.contains("__thought__"),
        "{second}"
    );
    let wire = translate(json!({"model": "g", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": signed, "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
            {"id": second, "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": signed, "content": "1"},
        {"role": "tool", "tool_call_id": second, "content": "2"}]}));
    let parts = &wire["contents"][1]["parts"];
    assert_eq!(
        parts[0],
        json!({"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "Q2lR+/=="})
    );
    assert_eq!(parts[1], json!({"functionCall": {"name": "g", "args": {}}}));
    assert_eq!(
        wire["contents"][2]["parts"][0]["functionResponse"]["name"],
        "f"
    );
}

#[test]
fn a_malformed_function_call_is_a_failed_try_not_an_empty_answer() {
    for reason in ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"] {
        let body = json!({"candidates": [{"content": {"role": "model", "parts": []},
            "finishReason": reason}], "usageMetadata": {"promptTokenCount": 9}});
        let e = from_response(body.to_string().as_bytes(), "g").unwrap_err();
        assert!(e.contains(reason), "{e}");
        let mut t = StreamTranslator::new("g", false);
        let mut out = Vec::new();
        let e = t
            .on_event(body.to_string().as_bytes(), &mut out)
            .unwrap_err();
        assert!(e.contains(reason), "{e}");
        assert!(out.is_empty(), "nothing written before the failure");
    }
    let stop = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]},
        "finishReason": "STOP"}]});
    assert!(from_response(stop.to_string().as_bytes(), "g").is_ok());
}
