//! Constrained decoding through [`ChatModel`] on random-weight models: whatever the weights
//! prefer, every answer parses and validates against its schema, streamed deltas make the same
//! text, on both engines and both tokenizer kinds, and alongside other sequences of a batch.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{load_on, messages, write, TempDir};
use crate::testing::json_schema::validate;
use crate::testing::{TestArch, TestDType, TestModel};
use crate::{
    ChatModel, ChatRequest, Engine, FinishReason, GenerationEvent, Grammar, SamplingParams,
};

/// One schema per feature; strings and arrays are bounded so a random model's answer ends.
fn schemas() -> Vec<Value> {
    vec![
        json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}, "age": {"type": "integer"}, "ok": {"type": "boolean"}}, "required": ["name", "age"], "additionalProperties": false}),
        json!({"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 4}),
        json!({"enum": ["red", "green", 3, null]}),
        json!({"type": "string", "minLength": 2, "maxLength": 6}),
        json!({"type": ["integer", "null"]}),
        json!({
            "$defs": {"point": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}, "required": ["x", "y"], "additionalProperties": false}},
            "type": "object",
            "properties": {
                "shape": {"oneOf": [{"const": "line"}, {"const": "dot"}]},
                "points": {"type": "array", "maxItems": 3, "items": {"$ref": "#/$defs/point"}},
                "label": {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}]}
            },
            "required": ["shape", "points"],
            "additionalProperties": false
        }),
    ]
}

fn request(schema: &Value, seed: u64) -> ChatRequest {
    ChatRequest {
        messages: messages(),
        max_tokens: Some(2000),
        sampling: SamplingParams {
            temperature: Some(1.0),
            seed: Some(seed),
            ..SamplingParams::default()
        },
        constraint: Some(Arc::new(
            Grammar::from_json_schema(schema).expect("compiles"),
        )),
        ..ChatRequest::default()
    }
}

/// Runs `request`, checks the streamed deltas make the text, and parses and validates it.
fn check(model: &ChatModel, schema: &Value, request: ChatRequest) -> Value {
    let mut deltas = String::new();
    let done = model
        .generate_blocking(request, |d| deltas.push_str(d))
        .expect("generates");
    assert_eq!(deltas, done.text);
    assert_eq!(done.finish_reason, FinishReason::Stop, "{:?}", done.text);
    let value: Value =
        serde_json::from_str(&done.text).unwrap_or_else(|e| panic!("{e}: {:?}", done.text));
    if let Err(e) = validate(schema, &value) {
        panic!("{e}: {:?}", done.text);
    }
    value
}

#[test]
fn every_schema_feature_validates_on_random_models() {
    let dir = TempDir::new();
    let files = [
        (
            TestModel::tiny(TestArch::Llama, TestDType::Q4_0),
            Engine::Native,
        ),
        (
            TestModel::tiny(TestArch::Qwen2, TestDType::Q8_0),
            Engine::Candle,
        ),
        (
            TestModel::tiny_sentencepiece(TestDType::Q8_0),
            Engine::Native,
        ),
    ];
    for (i, (spec, engine)) in files.iter().enumerate() {
        let path = dir.path(&format!("{i}.gguf"));
        spec.write(&path).expect("write");
        let model = load_on(&path, 1, *engine);
        for schema in schemas() {
            for seed in 0..3 {
                check(&model, &schema, request(&schema, seed));
            }
        }
    }
}

/// Strings with patterns and formats, integers and numbers with bounds and steps, a `oneOf` of
/// patterned strings: every answer's strings match (checked with the `regex` crate and by
/// parsing the formats) and its numbers are within, on both engines and both tokenizer kinds.
#[test]
fn patterns_formats_and_bounds_validate_on_random_models() {
    let dir = TempDir::new();
    // Two objects rather than one: a random model's whitespace between properties would take
    // one answer past `max_tokens`.
    let schemas = [
        json!({
            "type": "object",
            "properties": {
                "code": {"type": "string", "pattern": r"^[A-Z]{2}-\d{3}$"},
                "tag": {"type": "string", "pattern": "ok|no", "maxLength": 8},
                "line": {"type": "string", "pattern": r#"^"[a-z ]*"\n?$"#, "maxLength": 10},
                "day": {"type": "string", "format": "date"},
                "at": {"type": "string", "format": "date-time"},
                "age": {"type": "integer", "minimum": 18, "exclusiveMaximum": 100}
            },
            "required": ["code", "tag", "line", "day", "at", "age"],
            "additionalProperties": false
        }),
        json!({
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "ip": {"type": "string", "format": "ipv4"},
                "mail": {"type": "string", "format": "email", "maxLength": 24},
                "host": {"type": "string", "format": "hostname", "maxLength": 16},
                "delta": {"type": "integer", "minimum": -3, "maximum": 3}
            },
            "required": ["id", "ip", "mail", "host", "delta"],
            "additionalProperties": false
        }),
        json!({
            "type": "object",
            "properties": {
                "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "temp": {"type": "number", "minimum": -40.5, "maximum": -0.25, "multipleOf": 0.25},
                "count": {"type": "integer", "multipleOf": 3, "minimum": -9, "maximum": 30},
                "key": {"oneOf": [
                    {"type": "string", "pattern": "^[0-9]{4}$"},
                    {"type": "string", "pattern": "^[a-z]{2,6}$"}
                ]}
            },
            "required": ["ratio", "temp", "count", "key"],
            "additionalProperties": false
        }),
    ];
    let code = regex::Regex::new(r"^[A-Z]{2}-[0-9]{3}$").expect("regex");
    let files = [
        (
            TestModel::tiny(TestArch::Llama, TestDType::Q4_0),
            Engine::Native,
        ),
        (
            TestModel::tiny(TestArch::Qwen2, TestDType::Q8_0),
            Engine::Candle,
        ),
        (
            TestModel::tiny_sentencepiece(TestDType::Q8_0),
            Engine::Native,
        ),
    ];
    for (i, (spec, engine)) in files.iter().enumerate() {
        let path = dir.path(&format!("{i}.gguf"));
        spec.write(&path).expect("write");
        let model = load_on(&path, 1, *engine);
        for schema in &schemas {
            for seed in 0..2 {
                let request = ChatRequest {
                    max_tokens: Some(4000),
                    ..request(schema, seed)
                };
                let value = check(&model, schema, request);
                if let Some(got) = value.get("code").and_then(Value::as_str) {
                    assert!(code.is_match(got), "{got:?}");
                }
            }
        }
    }
}

#[test]
fn json_object_answers_an_object_and_greedy_answers_end() {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Llama, TestDType::Q8_0));
    let model = load_on(&path, 1, Engine::Native);
    let any = json!({"type": "object"});
    for seed in 0..4 {
        let request = ChatRequest {
            constraint: Some(Arc::new(Grammar::json_object())),
            max_tokens: Some(4000),
            ..request(&any, seed)
        };
        let value = check(&model, &any, request);
        assert!(value.is_object());
    }
    // Greedy decoding of a random model under a bounded schema still ends in a valid value.
    let schema = &schemas()[0];
    let greedy = ChatRequest {
        sampling: SamplingParams {
            temperature: Some(0.0),
            ..SamplingParams::default()
        },
        ..request(schema, 0)
    };
    check(&model, schema, greedy);
}

/// Constrained and free sequences batched together: each constrained answer validates, and the
/// free one is what it is alone.
#[test]
fn constrained_sequences_batch_with_free_ones() {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Llama, TestDType::Q4_0));
    let free = ChatRequest {
        constraint: None,
        max_tokens: Some(40),
        ignore_eos: true,
        ..request(&json!({}), 7)
    };
    let alone = load_on(&path, 1, Engine::Native)
        .generate_blocking(free.clone(), |_| {})
        .expect("generates");
    let model = load_on(&path, 3, Engine::Native);
    let schemas = schemas();
    let constrained: Vec<_> = (0..2)
        .map(|i| {
            let schema = schemas[i * 5].clone();
            let generation = model.submit(request(&schema, i as u64)).expect("submit");
            (schema, generation)
        })
        .collect();
    let together = model.submit(free).expect("submit");
    for (schema, mut generation) in constrained {
        let done = loop {
            if let GenerationEvent::Done(done) =
                generation.blocking_next().expect("event").expect("ok")
            {
                break done;
            }
        };
        let value: Value = serde_json::from_str(&done.text).expect("parses");
        validate(&schema, &value).expect("validates");
    }
    let mut together = together;
    let done = loop {
        if let GenerationEvent::Done(done) = together.blocking_next().expect("event").expect("ok") {
            break done;
        }
    };
    assert_eq!(done.token_ids, alone.token_ids);
}
