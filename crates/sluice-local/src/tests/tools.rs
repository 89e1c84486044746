//! Tool calls watched for in a random-weight model's output: a Hermes-format template with
//! `<tool_call>` tokens the model writes by chance; whatever it writes, every call it starts
//! is constrained to one of the tools and parses and validates, the streamed call text is
//! the call, and no marker leaks into the text.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{load, write, TempDir};
use crate::testing::json_schema::validate;
use crate::testing::{TestArch, TestDType, TestModel, HERMES_TEMPLATE};
use crate::{
    ChatMessage, ChatRequest, GenerationEvent, Grammar, SamplingParams, ToolCalls, ToolFormat,
};

fn weather() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": false
    })
}

/// The calls' grammar: `{"name": "weather", "arguments": …}`.
fn call_schema() -> Value {
    json!({"anyOf": [{
        "type": "object",
        "properties": {"name": {"const": "weather"}, "arguments": weather()},
        "required": ["name", "arguments"],
        "additionalProperties": false
    }]})
}

fn request(seed: u64, parallel: bool) -> ChatRequest {
    let format = ToolFormat::Hermes;
    ChatRequest {
        messages: vec![ChatMessage::new("user", "Weather in Paris?")],
        max_tokens: Some(300),
        sampling: SamplingParams {
            temperature: Some(1.0),
            seed: Some(seed),
            ..SamplingParams::default()
        },
        tools: Some(vec![
            json!({"type": "function", "function": {"name": "weather", "parameters": weather()}}),
        ]),
        tool_calls: Some(ToolCalls {
            start: format.start(),
            grammar: Arc::new(Grammar::from_json_schema(&call_schema()).expect("compiles")),
            parallel,
        }),
        ..ChatRequest::default()
    }
}

#[test]
fn watched_calls_validate_and_stream_apart_from_text() {
    let dir = TempDir::new();
    let spec = TestModel {
        tool_tokens: true,
        chat_template: Some(HERMES_TEMPLATE.to_owned()),
        context_length: 1024,
        ..TestModel::tiny(TestArch::Qwen2, TestDType::Q8_0)
    };
    let model = load(&write(&dir, &spec), 1);
    assert_eq!(model.tool_format(), ToolFormat::Hermes);
    let prompt = model
        .render_prompt_with_tools(
            &request(0, true).messages,
            request(0, true).tools.as_deref(),
        )
        .expect("renders");
    assert!(
        prompt.contains("<tools>\n{") && prompt.contains("\"name\": \"weather\""),
        "{prompt}"
    );
    let mut with_calls = 0;
    for seed in 0..12 {
        let parallel = seed % 2 == 0;
        let mut generation = model.submit(request(seed, parallel)).expect("submits");
        let (mut text, mut calls) = (String::new(), Vec::<String>::new());
        let done = loop {
            match generation.blocking_next().expect("event").expect("ok") {
                GenerationEvent::Delta(d) => text.push_str(&d),
                GenerationEvent::Call { index, text } => {
                    if calls.len() <= index {
                        calls.resize(index + 1, String::new());
                    }
                    calls[index].push_str(&text);
                }
                GenerationEvent::Done(done) => break done,
                GenerationEvent::Logprobs(_) => {}
            }
        };
        assert_eq!(text, done.text);
        assert_eq!(calls, done.calls);
        assert!(!text.contains("<tool_call>"), "{text}");
        if !parallel {
            assert!(done.calls.len() <= 1);
        }
        for (i, call) in done.calls.iter().enumerate() {
            if i + 1 == done.calls.len() && !done.calls_complete {
                continue;
            }
            let value: Value = serde_json::from_str(call).unwrap_or_else(|e| panic!("{e}: {call}"));
            validate(&call_schema(), &value).unwrap_or_else(|e| panic!("{e}: {call}"));
            with_calls += 1;
        }
    }
    assert!(with_calls > 0, "no seed made a call");
}

#[test]
fn tool_results_render_through_the_template() {
    let dir = TempDir::new();
    let spec = TestModel {
        tool_tokens: true,
        chat_template: Some(HERMES_TEMPLATE.to_owned()),
        ..TestModel::tiny(TestArch::Qwen2, TestDType::Q8_0)
    };
    let model = load(&write(&dir, &spec), 1);
    let call = ChatMessage {
        tool_calls: Some(vec![
            json!({"type": "function", "id": "c1", "function": {"name": "weather", "arguments": {"city": "Paris"}}}),
        ]),
        ..ChatMessage::new("assistant", "")
    };
    let result = ChatMessage {
        tool_call_id: Some("c1".into()),
        name: Some("weather".into()),
        ..ChatMessage::new("tool", "{\"temp\": 21}")
    };
    let messages = [ChatMessage::new("user", "Weather?"), call, result];
    let prompt = model.render_prompt(&messages).expect("renders");
    assert!(
        prompt.ends_with("<|im_start|>assistant\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"),
        "{prompt}"
    );
}
