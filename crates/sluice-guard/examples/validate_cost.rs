//! What output validation costs per answer (a `validate_json` guardrail): the steps the
//! gateway takes on a whole chat answer (parse it, then each choice's content against the
//! `response_format` schema, or each tool call's arguments against its tool's
//! `parameters`), over a structured answer of about 1 KB and a tool call of a typical
//! size. Run by bench/guard.sh: `cargo run --release -p sluice-guard --example
//! validate_cost`.

#![allow(clippy::print_stdout)] // a benchmark program prints its result

use serde_json::{json, Value};
use sluice_guard::schema::validate;
use std::time::Instant;

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "age": {"type": "integer", "minimum": 0},
            "email": {"type": "string", "format": "email"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
            "address": {"type": "object", "properties": {
                "street": {"type": "string"}, "city": {"type": "string"},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["street", "city"], "additionalProperties": false},
            "notes": {"type": "string"}
        },
        "required": ["name", "age", "email", "tags", "address"],
        "additionalProperties": false
    })
}

fn structured_answer() -> String {
    let content = json!({
        "name": "Ann Example", "age": 31, "email": "ann@example.com",
        "tags": ["customer", "beta", "eu", "annual", "priority", "newsletter"],
        "address": {"street": "1 Rue de Rivoli", "city": "Paris", "zip": "75001"},
        "notes": "Prefers email. Renewal due in March; asked about the enterprise plan twice this quarter and wants a call with the account team before the end of the month. Time zone CET."
    })
    .to_string();
    chat_answer(json!({"role": "assistant", "content": content}))
}

fn weather_tool() -> Value {
    json!({"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "units": {"enum": ["metric", "imperial"]}},
        "required": ["city"], "additionalProperties": false})
}

fn tool_answer() -> String {
    chat_answer(
        json!({"role": "assistant", "content": null, "tool_calls": [{
        "id": "call_abc123", "type": "function",
        "function": {"name": "get_weather",
            "arguments": "{\"city\": \"Paris\", \"days\": 3, \"units\": \"metric\"}"}}]}),
    )
}

fn chat_answer(message: Value) -> String {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
        "model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "stop",
        "message": message}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 80, "total_tokens": 200}})
    .to_string()
}

/// The gateway's steps on one whole answer; `Err` when it fails.
fn check(answer: &str, format: Option<&Value>, tool: &Value) -> Result<(), String> {
    let answer: Value = serde_json::from_str(answer).map_err(|e| e.to_string())?;
    for choice in answer["choices"].as_array().into_iter().flatten() {
        let message = &choice["message"];
        if let (Some(schema), Some(text)) = (format, message["content"].as_str()) {
            let value: Value = serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
            validate(schema, &value)?;
        }
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
            let value: Value = serde_json::from_str(arguments).map_err(|e| e.to_string())?;
            validate(tool, &value)?;
        }
    }
    Ok(())
}

fn main() {
    let (format, tool) = (person_schema(), weather_tool());
    for (name, answer, format) in [
        ("structured output", structured_answer(), Some(&format)),
        ("one tool call", tool_answer(), None),
    ] {
        check(&answer, format, &tool).expect("a valid answer");
        let rounds = 50_000;
        for _ in 0..2_000 {
            std::hint::black_box(check(&answer, format, &tool)).ok();
        }
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(check(std::hint::black_box(&answer), format, &tool)).ok();
        }
        let per = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        // The JSON parse of the answer alone, which the check cannot skip.
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(serde_json::from_str::<Value>(std::hint::black_box(&answer))).ok();
        }
        let parse = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        println!(
            "{name:>18} ({} bytes): {per:.2} µs per answer checked, of which {parse:.2} µs parsing the answer",
            answer.len()
        );
    }
}
