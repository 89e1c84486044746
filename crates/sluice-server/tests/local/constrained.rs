//! Constrained output on local models: JSON schemas and forced tool calls.

use super::*;

/// `response_format` `json_schema` and `json_object` on a random-weight model: whole and
/// streamed answers parse and validate against the schema; the schema, sent six times, is
/// compiled once (`sluice_local_schemas_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_answers_validate_whole_and_streamed() {
    let llama = model_file("json", TestArch::Llama);
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\n",
        llama.display()
    );
    let (_fake, gw) = gateway("", &models).await;
    let url = gw.url("/v1/chat/completions");
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "population": {"type": "integer"},
            "score": {"type": "number", "exclusiveMinimum": -1, "maximum": 2.5, "multipleOf": 0.25},
            "tags": {"type": "array", "items": {"enum": ["big", "old", "wet"]}, "maxItems": 3}
        },
        "required": ["city", "population", "score", "tags"],
        "additionalProperties": false
    });
    let object = json!({"type": "object"});
    let formats = [
        (
            json!({"type": "json_schema", "json_schema": {"name": "city", "strict": true, "schema": schema}}),
            &schema,
        ),
        (json!({"type": "json_object"}), &object),
    ];
    for (format, schema) in formats {
        // Sampled answers under the schema. Under `json_object` a random model fills keys and
        // strings without bounds for long (sluice-local's tests give it the room to end): here
        // the answer is an object's beginning, whole and streamed alike.
        let open = format["type"] == "json_object";
        for seed in 0..3 {
            let extra = json!({"response_format": format, "temperature": 1, "seed": seed, "max_tokens": 480});
            let r = post_json(&url, chat("tiny", extra.clone()), &[])
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            let v = r.json();
            let whole = v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string();
            if open && v["choices"][0]["finish_reason"] == "length" {
                assert!(whole.trim_start().starts_with('{'), "{whole}");
            } else {
                assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
                let value: Value =
                    serde_json::from_str(&whole).unwrap_or_else(|e| panic!("{e}: {whole}"));
                sluice_local::testing::json_schema::validate(schema, &value)
                    .unwrap_or_else(|e| panic!("{e}: {whole}"));
            }

            let mut streamed = extra;
            streamed["stream"] = json!(true);
            let mut s = post_stream(&url, chat("tiny", streamed), &[])
                .await
                .unwrap();
            assert_eq!(s.status, 200);
            let (events, err) = s.collect_events().await;
            assert!(err.is_none(), "{err:?}");
            let text: String = events[..events.len() - 1]
                .iter()
                .filter_map(|e| {
                    let c: Value = serde_json::from_str(e).unwrap();
                    c["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_string)
                })
                .collect();
            assert_eq!(text, whole, "the same seed streams the same answer");
        }
    }
    let metrics = sluice_testkit::client::get(&gw.url("/metrics"))
        .await
        .unwrap()
        .text();
    for series in [
        "sluice_local_schemas_total{result=\"compiled\"} 1\n",
        "sluice_local_schemas_total{result=\"cached\"} 5\n",
    ] {
        assert!(metrics.contains(series), "{series}: {metrics}");
    }
}

/// Forced tool calls (`tool_choice` `required` with one or two tools, or a named one): the
/// answer is a `tool_calls` message whose arguments parse and validate against the tool's
/// `parameters`, with `finish_reason` `tool_calls`; streamed, the same call in deltas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_tool_call_validates_whole_and_streamed() {
    // The tools' description makes a long prompt in the test vocabulary (about a token a
    // byte): a context of 2048 positions.
    let llama = model_file("tools", TestArch::Llama);
    TestModel {
        context_length: 2048,
        ..TestModel::tiny(TestArch::Llama, TestDType::Q8_0)
    }
    .write(&llama)
    .unwrap();
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\n",
        llama.display()
    );
    let (_fake, gw) = gateway("", &models).await;
    let url = gw.url("/v1/chat/completions");
    let weather = json!({
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 16}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": false
    });
    let add = json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
        "additionalProperties": false
    });
    let tool = |name: &str, parameters: &Value| json!({"type": "function", "function": {"name": name, "description": "d", "parameters": parameters}});
    let cases = [
        (json!([tool("weather", &weather)]), json!("required")),
        (
            json!([tool("weather", &weather), tool("add", &add)]),
            json!("required"),
        ),
        (
            json!([tool("weather", &weather), tool("add", &add)]),
            json!({"type": "function", "function": {"name": "add"}}),
        ),
    ];
    for (tools, choice) in cases {
        for seed in 0..2 {
            let extra = json!({"tools": tools, "tool_choice": choice, "temperature": 1, "seed": seed, "max_tokens": 480});
            let r = super::post_json_slow(&url, chat("tiny", extra.clone()), &[])
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            let v = r.json();
            let choice0 = &v["choices"][0];
            assert_eq!(choice0["finish_reason"], "tool_calls", "{v}");
            assert!(choice0["message"]["content"].is_null(), "{v}");
            let call = &choice0["message"]["tool_calls"][0];
            assert_eq!(call["type"], "function");
            let name = call["function"]["name"].as_str().unwrap().to_string();
            let arguments = call["function"]["arguments"].as_str().unwrap().to_string();
            let parsed: Value =
                serde_json::from_str(&arguments).unwrap_or_else(|e| panic!("{e}: {arguments}"));
            let schema = if name == "add" { &add } else { &weather };
            assert!(name == "add" || name == "weather", "{v}");
            if choice.is_object() {
                assert_eq!(name, "add");
            }
            sluice_local::testing::json_schema::validate(schema, &parsed)
                .unwrap_or_else(|e| panic!("{e}: {arguments}"));

            let mut streamed = extra;
            streamed["stream"] = json!(true);
            let mut s = super::post_stream_slow(&url, chat("tiny", streamed), &[])
                .await
                .unwrap();
            assert_eq!(s.status, 200);
            let (events, err) = s.collect_events().await;
            assert!(err.is_none(), "{err:?}");
            let (mut streamed_name, mut streamed_arguments, mut finish) =
                (String::new(), String::new(), String::new());
            for e in &events[..events.len() - 1] {
                let c: Value = serde_json::from_str(e).unwrap();
                if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
                    finish = f.to_string();
                }
                let delta = &c["choices"][0]["delta"]["tool_calls"][0];
                if let Some(n) = delta["function"]["name"].as_str() {
                    streamed_name.push_str(n);
                }
                if let Some(a) = delta["function"]["arguments"].as_str() {
                    streamed_arguments.push_str(a);
                }
            }
            assert_eq!(finish, "tool_calls");
            assert_eq!(streamed_name, name);
            let streamed: Value = serde_json::from_str(&streamed_arguments)
                .unwrap_or_else(|e| panic!("{e}: {streamed_arguments}"));
            assert_eq!(streamed, parsed, "the same seed streams the same call");
        }
    }
}

/// The real SmolLM2 file (`SLUICE_SMOLLM2_GGUF`, which the test command sets; skipped without
/// it), greedy, asked for the weather with a forced call: the call's arguments validate and
/// name the city asked about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_makes_a_forced_tool_call_that_makes_sense() {
    let Some(file) = std::env::var_os("SLUICE_SMOLLM2_GGUF") else {
        eprintln!("skipped: SLUICE_SMOLLM2_GGUF is not set");
        return;
    };
    let models = format!(
        "[[models]]\nname = \"smol\"\nprovider = \"here\"\npath = \"{}\"\n",
        std::path::Path::new(&file).display()
    );
    let (_fake, gw) = gateway("context_length = 2048", &models).await;
    let parameters = json!({
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": false
    });
    let body = json!({
        "model": "smol",
        "temperature": 0,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "What is the weather in Paris, in celsius?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city.", "parameters": parameters}}],
        "tool_choice": "required"
    });
    let r = super::post_json_slow(&gw.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    eprintln!("{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let call = &v["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_weather");
    let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    sluice_local::testing::json_schema::validate(&parameters, &arguments).unwrap();
    assert!(
        arguments["city"].as_str().unwrap().contains("Paris"),
        "{arguments}"
    );
}
