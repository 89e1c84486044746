//! Tools on local models with `tool_choice` `auto`: the model answers in text or calls, in
//! its template's tool format; a call is OpenAI's `tool_calls` whose arguments validate,
//! streamed as argument deltas that make the same call; results go back in the next turn.

use super::*;

fn hermes_file(name: &str) -> std::path::PathBuf {
    let path = model_file(name, TestArch::Qwen2);
    TestModel {
        tool_tokens: true,
        chat_template: Some(sluice_local::testing::HERMES_TEMPLATE.to_owned()),
        context_length: 2048,
        ..TestModel::tiny(TestArch::Qwen2, TestDType::Q8_0)
    }
    .write(&path)
    .unwrap();
    path
}

fn weather() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": false
    })
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "weather", "description": "d", "parameters": weather()}}])
}

/// A streamed answer's content, calls (name, arguments) by index, and finish reason.
fn read_stream(events: &[String]) -> (String, Vec<(String, String)>, String) {
    let (mut content, mut calls, mut finish) =
        (String::new(), Vec::<(String, String)>::new(), String::new());
    for e in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(e).unwrap();
        let choice = &c["choices"][0];
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.to_string();
        }
        if let Some(t) = choice["delta"]["content"].as_str() {
            content.push_str(t);
        }
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap() as usize;
            if calls.len() <= index {
                assert!(
                    call["id"].is_string() && call["function"]["name"].is_string(),
                    "{call}"
                );
                calls.resize(index + 1, Default::default());
            }
            if let Some(n) = call["function"]["name"].as_str() {
                calls[index].0.push_str(n);
            }
            if let Some(a) = call["function"]["arguments"].as_str() {
                calls[index].1.push_str(a);
            }
        }
    }
    (content, calls, finish)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_answers_in_text_or_calls_that_validate_whole_and_streamed() {
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\n",
        hermes_file("auto").display()
    );
    let (_fake, gw) = gateway("", &models).await;
    let url = gw.url("/v1/chat/completions");
    let mut called = 0;
    for seed in 0..8 {
        let mut extra =
            json!({"tools": tools(), "temperature": 1, "seed": seed, "max_tokens": 200});
        if seed % 2 == 1 {
            extra["tool_choice"] = json!("auto");
            extra["parallel_tool_calls"] = json!(false);
        }
        let r = post_json(&url, chat("tiny", extra.clone()), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let message = &v["choices"][0]["message"];
        let content = message["content"].as_str().unwrap_or_default().to_string();
        assert!(!content.contains("<tool_call>"), "{v}");
        let calls: Vec<(String, String)> = message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                assert!(c["id"].as_str().unwrap().starts_with("call_"), "{c}");
                (
                    c["function"]["name"].as_str().unwrap().to_string(),
                    c["function"]["arguments"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let finish = v["choices"][0]["finish_reason"]
            .as_str()
            .unwrap()
            .to_string();
        if finish == "tool_calls" {
            assert!(!calls.is_empty(), "{v}");
            if seed % 2 == 1 {
                assert_eq!(calls.len(), 1, "parallel_tool_calls false: {v}");
            }
            for (name, arguments) in &calls {
                assert_eq!(name, "weather");
                let parsed: Value =
                    serde_json::from_str(arguments).unwrap_or_else(|e| panic!("{e}: {arguments}"));
                sluice_local::testing::json_schema::validate(&weather(), &parsed)
                    .unwrap_or_else(|e| panic!("{e}: {arguments}"));
            }
            called += 1;
        } else {
            assert!(calls.is_empty() || finish == "length", "{v}");
        }

        extra["stream"] = json!(true);
        let mut s = post_stream(&url, chat("tiny", extra), &[]).await.unwrap();
        assert_eq!(s.status, 200);
        let (events, err) = s.collect_events().await;
        assert!(err.is_none(), "{err:?}");
        let (streamed_content, streamed_calls, streamed_finish) = read_stream(&events);
        assert_eq!(
            streamed_content, content,
            "the same seed streams the same text"
        );
        assert_eq!(
            streamed_calls, calls,
            "the same seed streams the same calls"
        );
        assert_eq!(streamed_finish, finish);
    }
    assert!(called > 0, "no seed called the tool");

    // `none`: the tools are not offered, the answer is text.
    let r = post_json(
        &url,
        chat("tiny", json!({"tools": tools(), "tool_choice": "none", "temperature": 1, "seed": 1, "max_tokens": 40})),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(v["choices"][0]["message"]["tool_calls"].is_null(), "{v}");
    assert_ne!(v["choices"][0]["finish_reason"], "tool_calls");
}

/// Parameters whose `$ref`s point into their own `$defs` (as pydantic and zod write them),
/// two tools each with a `point` of its own: under `auto` (the default) and forced among the
/// two, on a template that renders tools and under the fallback prompt, every call validates
/// against its own function's parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_with_refs_into_their_defs_work_under_auto_and_among_several_tools() {
    let plain = model_file("refs-plain", TestArch::Qwen2);
    TestModel {
        context_length: 2048,
        ..TestModel::tiny(TestArch::Qwen2, TestDType::Q8_0)
    }
    .write(&plain)
    .unwrap();
    let models = format!(
        "[[models]]\nname = \"hermes\"\nprovider = \"here\"\npath = \"{}\"\n[[models]]\nname = \"plain\"\nprovider = \"here\"\npath = \"{}\"\n",
        hermes_file("refs").display(),
        plain.display()
    );
    let (_fake, gw) = gateway("", &models).await;
    let url = gw.url("/v1/chat/completions");
    let place = json!({
        "type": "object",
        "description": "a \"$ref\" in a description is only text",
        "properties": {
            "at": {"$ref": "#/$defs/point"},
            "near": {"anyOf": [{"$ref": "#/$defs/point"}, {"type": "null"}]}
        },
        "required": ["at", "near"],
        "additionalProperties": false,
        "$defs": {"point": {
            "type": "object",
            "properties": {"x": {"enum": [0, 1, 2]}, "y": {"type": "boolean"}},
            "required": ["x", "y"],
            "additionalProperties": false
        }}
    });
    let route = json!({
        "type": "object",
        "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
        "required": ["from", "to"],
        "additionalProperties": false,
        "$defs": {"point": {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 6}},
            "required": ["name"],
            "additionalProperties": false
        }}
    });
    let tools = json!([
        {"type": "function", "function": {"name": "place", "parameters": place}},
        {"type": "function", "function": {"name": "route", "parameters": route}}
    ]);
    // Validates every call of a finished answer; returns how many there were.
    let check = |calls: &[(String, String)], finish: &str| -> usize {
        if finish != "tool_calls" {
            return 0;
        }
        for (name, arguments) in calls {
            let schema = if name == "place" { &place } else { &route };
            assert!(name == "place" || name == "route", "{name}");
            let parsed: Value =
                serde_json::from_str(arguments).unwrap_or_else(|e| panic!("{e}: {arguments}"));
            sluice_local::testing::json_schema::validate(schema, &parsed)
                .unwrap_or_else(|e| panic!("{name}: {e}: {arguments}"));
        }
        calls.len()
    };
    let mut auto_calls = 0;
    for model in ["hermes", "plain"] {
        for seed in 0..6 {
            // `auto`, whole and streamed alike.
            let mut extra =
                json!({"tools": tools, "temperature": 1, "seed": seed, "max_tokens": 200});
            let r = super::post_json_slow(&url, chat(model, extra.clone()), &[])
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{model}: {}", r.text());
            let v = r.json();
            let message = &v["choices"][0]["message"];
            let calls: Vec<(String, String)> = message["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let f = &c["function"];
                    (
                        f["name"].as_str().unwrap().to_string(),
                        f["arguments"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
            auto_calls += check(&calls, finish);
            extra["stream"] = json!(true);
            let mut s = super::post_stream_slow(&url, chat(model, extra), &[])
                .await
                .unwrap();
            let (events, err) = s.collect_events().await;
            assert!(err.is_none(), "{err:?}");
            let (_, streamed_calls, streamed_finish) = read_stream(&events);
            assert_eq!((streamed_calls, streamed_finish.as_str()), (calls, finish));

            // Forced to one of the two.
            if seed < 2 {
                let extra = json!({"tools": tools, "tool_choice": "required", "temperature": 1, "seed": seed, "max_tokens": 300});
                let r = super::post_json_slow(&url, chat(model, extra), &[])
                    .await
                    .unwrap();
                assert_eq!(r.status, 200, "{model}: {}", r.text());
                let v = r.json();
                let call = &v["choices"][0]["message"]["tool_calls"][0]["function"];
                let calls = [(
                    call["name"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{v}"))
                        .to_string(),
                    call["arguments"].as_str().unwrap().to_string(),
                )];
                let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
                assert_eq!(check(&calls, finish), 1, "{model}: {v}");
            }
        }
    }
    assert!(auto_calls > 0, "no seed called a tool under `auto`");
}

/// A two-turn tool loop: the call and its result go back, rendered through the template's
/// tool format (and through the fallback's for a template without one), and the model
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_results_are_fed_back_in_the_next_turn() {
    let models = format!(
        "[[models]]\nname = \"hermes\"\nprovider = \"here\"\npath = \"{}\"\n[[models]]\nname = \"plain\"\nprovider = \"here\"\npath = \"{}\"\n",
        hermes_file("loop").display(),
        model_file("loop-plain", TestArch::Qwen2).display()
    );
    let (_fake, gw) = gateway("", &models).await;
    let url = gw.url("/v1/chat/completions");
    for model in ["hermes", "plain"] {
        let messages = json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"c\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"}
        ]);
        let body = json!({"model": model, "messages": messages, "tools": tools(), "temperature": 0, "max_tokens": 8});
        let r = super::post_json_slow(&url, body.to_string(), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let v = r.json();
        let usage = &v["usage"];
        // The result is in the prompt: more tokens than the question alone.
        assert!(
            usage["prompt_tokens"].as_u64().unwrap() > 40,
            "{model}: {v}"
        );
    }
}

/// The real SmolLM2 file (skipped without `SLUICE_SMOLLM2_GGUF`), greedy, with `auto` and a
/// question that needs the tool: its template has no tool format, so the fallback prompt
/// offers the tools; the answer is a call whose arguments validate, or text, never a broken
/// call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_with_auto_answers_with_a_valid_call_or_text() {
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
        // Room for a call; a text answer is cut short (the test build is unoptimised, and the
        // test client gives up after 30 s).
        "max_tokens": 48,
        "messages": [{"role": "user", "content": "What is the weather in Paris right now? Use the tool."}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city.", "parameters": parameters}}],
        "tool_choice": "auto"
    });
    let r = super::post_json_slow(&gw.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    eprintln!("{v}");
    let message = &v["choices"][0]["message"];
    match message["tool_calls"].as_array() {
        Some(calls) => {
            assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
            for call in calls {
                assert_eq!(call["function"]["name"], "get_weather");
                let arguments: Value =
                    serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
                sluice_local::testing::json_schema::validate(&parameters, &arguments).unwrap();
            }
        }
        None => {
            let text = message["content"].as_str().unwrap();
            assert!(!text.contains("<tool_call>"), "{text}");
        }
    }
}

/// `/v1/messages` and `/v1/responses` become chat before a local model answers: tools work
/// there too, whole and streamed, as each API's own calls (`tool_use` blocks, `function_call`
/// items) whose arguments validate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_work_through_messages_and_responses() {
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\n",
        hermes_file("apis").display()
    );
    let (_fake, gw) = gateway("", &models).await;
    let anthropic_tools =
        json!([{"name": "weather", "description": "d", "input_schema": weather()}]);
    let body = json!({
        "model": "tiny", "max_tokens": 200, "temperature": 1,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": anthropic_tools, "tool_choice": {"type": "any"}
    });
    let r = post_json(&gw.url("/v1/messages"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["stop_reason"], "tool_use", "{v}");
    let block = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(block["name"], "weather");
    sluice_local::testing::json_schema::validate(&weather(), &block["input"]).unwrap();

    // Auto through /v1/messages: a call when the model makes one, text otherwise.
    for seed in 0..3 {
        let mut auto = body.clone();
        auto["tool_choice"] = json!({"type": "auto"});
        auto["stream"] = json!(true);
        auto["seed"] = json!(seed);
        let mut s = post_stream(&gw.url("/v1/messages"), auto.to_string(), &[])
            .await
            .unwrap();
        assert_eq!(s.status, 200);
        let (events, err) = s.collect_events().await;
        assert!(err.is_none(), "{err:?}");
        let mut inputs: Vec<String> = Vec::new();
        let mut stop = String::new();
        let mut told = None;
        for e in &events {
            let Ok(c) = serde_json::from_str::<Value>(e) else {
                continue;
            };
            // message_start tells the prompt's length as the model tokenized it: the
            // input_tokens and cache reads that message_delta counts at the end.
            if c["type"] == "message_start" {
                told = c["message"]["usage"]["input_tokens"].as_u64();
            }
            if c["type"] == "message_delta" {
                let u = &c["usage"];
                let counted = u["input_tokens"].as_u64().unwrap()
                    + u["cache_read_input_tokens"].as_u64().unwrap();
                assert_eq!(told, Some(counted), "{c}");
            }
            if c["type"] == "content_block_start" && c["content_block"]["type"] == "tool_use" {
                inputs.push(String::new());
            }
            if let Some(reason) = c["delta"]["stop_reason"].as_str() {
                stop = reason.to_string();
            }
            if c["delta"]["type"] == "input_json_delta" {
                inputs
                    .last_mut()
                    .unwrap()
                    .push_str(c["delta"]["partial_json"].as_str().unwrap());
            }
        }
        if stop == "max_tokens" {
            // The last call may be cut short.
            inputs.pop();
        }
        for input in inputs {
            let parsed: Value =
                serde_json::from_str(&input).unwrap_or_else(|e| panic!("{e}: {input}"));
            sluice_local::testing::json_schema::validate(&weather(), &parsed).unwrap();
        }
    }

    let body = json!({
        "model": "tiny", "max_output_tokens": 200, "temperature": 1,
        "input": "Weather in Paris?",
        "tools": [{"type": "function", "name": "weather", "description": "d", "parameters": weather()}],
        "tool_choice": "required"
    });
    let r = post_json(&gw.url("/v1/responses"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let item = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(item["name"], "weather");
    let arguments: Value = serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
    sluice_local::testing::json_schema::validate(&weather(), &arguments).unwrap();
}

/// `n` above 1 on a local model: that many choices of the same prompt, each as one alone with
/// its seed (`seed + i`) would be, prompt tokens counted once and completion tokens summed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_choices_are_each_what_one_alone_would_be() {
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\n",
        model_file("n", TestArch::Llama).display()
    );
    let (_fake, gw) = gateway("parallel = 2", &models).await;
    let url = gw.url("/v1/chat/completions");
    let r = post_json(
        &url,
        chat(
            "tiny",
            json!({"n": 3, "temperature": 1, "seed": 5, "max_tokens": 12}),
        ),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{v}");
    let mut completion_tokens = 0;
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i, "{v}");
        let alone = post_json(
            &url,
            chat(
                "tiny",
                json!({"temperature": 1, "seed": 5 + i, "max_tokens": 12}),
            ),
            &[],
        )
        .await
        .unwrap()
        .json();
        assert_eq!(
            c["message"]["content"], alone["choices"][0]["message"]["content"],
            "{v}"
        );
        assert_eq!(c["finish_reason"], alone["choices"][0]["finish_reason"]);
        completion_tokens += alone["usage"]["completion_tokens"].as_u64().unwrap();
        assert_eq!(v["usage"]["prompt_tokens"], alone["usage"]["prompt_tokens"]);
    }
    assert_eq!(v["usage"]["completion_tokens"], completion_tokens, "{v}");
}

/// `logprobs` with `top_logprobs` on a local model, greedy: each token's log probability is
/// the likeliest of its alternatives (listed most likely first), the tokens make the text,
/// and with `n` each choice has its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_are_the_sampled_tokens_with_their_alternatives() {
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\n",
        model_file("logprobs", TestArch::Llama).display()
    );
    let (_fake, gw) = gateway("", &models).await;
    let url = gw.url("/v1/chat/completions");
    let r = post_json(
        &url,
        chat(
            "tiny",
            json!({"logprobs": true, "top_logprobs": 3, "max_tokens": 10, "n": 2}),
        ),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    for choice in v["choices"].as_array().unwrap() {
        let content = choice["logprobs"]["content"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"));
        assert!(!content.is_empty(), "{v}");
        let mut bytes = Vec::new();
        for t in content {
            let logprob = t["logprob"].as_f64().unwrap();
            assert!(logprob <= 0.0, "{t}");
            let top = t["top_logprobs"].as_array().unwrap();
            assert_eq!(top.len(), 3, "{t}");
            assert_eq!(
                top[0]["token"], t["token"],
                "greedy takes the likeliest: {t}"
            );
            assert!((top[0]["logprob"].as_f64().unwrap() - logprob).abs() < 1e-6);
            assert!(top
                .windows(2)
                .all(|w| w[0]["logprob"].as_f64() >= w[1]["logprob"].as_f64()));
            bytes.extend(
                t["bytes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_u64().unwrap() as u8),
            );
        }
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            choice["message"]["content"].as_str().unwrap(),
            "{v}"
        );
    }
    let r = post_json(&url, chat("tiny", json!({"max_tokens": 4})), &[])
        .await
        .unwrap();
    assert!(r.json()["choices"][0]["logprobs"].is_null());
}

/// A forced call (`required`, a named function) on a model whose template renders tools: the
/// prompt is the template's own rendering of the tools, then its call marker (`<tool_call>`)
/// where the answer starts, exactly; the answer is the call, whose arguments validate, whole
/// and streamed alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_calls_use_the_templates_tool_format() {
    let file = hermes_file("forced");
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\n",
        file.display()
    );
    let (_fake, gw) = gateway("", &models).await;
    let url = gw.url("/v1/chat/completions");
    let forecast =
        json!({"type": "function", "function": {"name": "forecast", "parameters": weather()}});
    let two = json!([tools()[0], forecast]);
    // The prompt the template gives the tools, with the marker after it.
    let model =
        sluice_local::ChatModel::load(&file, &sluice_local::LoadOptions::default()).unwrap();
    let messages = [sluice_local::ChatMessage::new("user", "hello")];
    let bos = model.prompt_tokens(&messages).unwrap().len()
        - model
            .tokenize(&model.render_prompt(&messages).unwrap())
            .unwrap()
            .len();
    let tool_objects = two.as_array().unwrap().clone();
    let rendered = model
        .render_prompt_with_tools(&messages, Some(&tool_objects))
        .unwrap();
    assert!(rendered.contains("<tools>"), "{rendered}");
    let expected = bos
        + model
            .tokenize(&format!("{rendered}<tool_call>\n"))
            .unwrap()
            .len();
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "forecast"}}),
    ] {
        for seed in 0..3 {
            let extra = json!({"tools": two, "tool_choice": choice, "temperature": 1, "seed": seed, "max_tokens": 200});
            let r = post_json(&url, chat("tiny", extra.clone()), &[])
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            let v = r.json();
            assert_eq!(v["usage"]["prompt_tokens"], expected, "{v}");
            assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
            let message = &v["choices"][0]["message"];
            let calls: Vec<(String, String)> = message["tool_calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    let f = &c["function"];
                    (
                        f["name"].as_str().unwrap().to_string(),
                        f["arguments"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            assert_eq!(calls.len(), 1, "{v}");
            if choice.is_object() {
                assert_eq!(calls[0].0, "forecast", "{v}");
            }
            let arguments: Value = serde_json::from_str(&calls[0].1).unwrap();
            sluice_local::testing::json_schema::validate(&weather(), &arguments)
                .unwrap_or_else(|e| panic!("{e}: {arguments}"));

            let mut streamed = extra;
            streamed["stream"] = json!(true);
            let mut s = post_stream(&url, chat("tiny", streamed), &[])
                .await
                .unwrap();
            let (events, err) = s.collect_events().await;
            assert!(err.is_none(), "{err:?}");
            let (content, streamed_calls, finish) = read_stream(&events);
            assert_eq!((content.as_str(), finish.as_str()), ("", "tool_calls"));
            assert_eq!(streamed_calls, calls, "the same seed streams the same call");
        }
    }
}
