//! Llama 3.1's tool format end to end, on a generated file whose chat template renders tools
//! as Llama 3.1's does: the tools in the system turn after `Environment: ipython`, a call as
//! the whole answer `{"name": …, "parameters": …}`, an assistant's earlier call as that JSON,
//! and a tool's result as an `ipython` turn. Forced and `auto` calls come back as OpenAI's
//! `tool_calls` whose arguments validate, whole and streamed alike.

use super::*;
use sluice_local::{ChatMessage, ChatModel, LoadOptions, ToolFormat};

/// A Llama-3.1-style template with tools, written for the tests from the documented shape of
/// Llama 3.1's JSON tool calling (the tool definitions in the system prompt).
const LLAMA31_TEMPLATE: &str = concat!(
    "{{- bos_token -}}",
    "{%- if messages and messages[0].role == 'system' -%}",
    "{%- set system = messages[0].content -%}{%- set turns = messages[1:] -%}",
    "{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}{%- endif -%}",
    "{%- if tools or system -%}",
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' -}}",
    "{%- if tools -%}",
    "{{- 'Environment: ipython\\n\\n' -}}",
    "{{- 'To call a function, respond with only a JSON object {\"name\": function name, \"parameters\": dictionary of argument name and its value}. The functions:\\n\\n' -}}",
    "{%- for tool in tools -%}{{- tool | tojson -}}{{- '\\n\\n' -}}{%- endfor -%}",
    "{%- endif -%}",
    "{{- system -}}{{- '<|eot_id|>' -}}",
    "{%- endif -%}",
    "{%- for message in turns -%}",
    "{%- if message.role == 'assistant' and message.tool_calls -%}",
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}",
    "{%- for call in message.tool_calls -%}",
    "{{- '{\"name\": \"' + call.function.name + '\", \"parameters\": ' + (call.function.arguments | tojson) + '}' -}}",
    "{%- endfor -%}",
    "{{- '<|eot_id|>' -}}",
    "{%- elif message.role == 'tool' or message.role == 'ipython' -%}",
    "{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' + message.content + '<|eot_id|>' -}}",
    "{%- else -%}",
    "{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content | trim + '<|eot_id|>' -}}",
    "{%- endif -%}",
    "{%- endfor -%}",
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}",
);

fn llama31_file(name: &str) -> std::path::PathBuf {
    let path = model_file(name, TestArch::Llama);
    TestModel {
        chat_template: Some(LLAMA31_TEMPLATE.to_owned()),
        context_length: 2048,
        ..TestModel::tiny(TestArch::Llama, TestDType::Q8_0)
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

fn add() -> Value {
    json!({
        "type": "object",
        "properties": {"a": {"enum": [1, 2, 3]}, "b": {"type": "boolean"}},
        "required": ["a", "b"],
        "additionalProperties": false
    })
}

/// The tools as the gateway hands them to the template (no descriptions: the same objects).
fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "weather", "parameters": weather()}},
        {"type": "function", "function": {"name": "add", "parameters": add()}}
    ])
}

/// An answer's `(content, calls, finish_reason)`, whole.
fn read_whole(v: &Value) -> (String, Vec<(String, String)>, String) {
    let choice = &v["choices"][0];
    let content = choice["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let calls = choice["message"]["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            assert!(c["id"].as_str().unwrap().starts_with("call_"), "{c}");
            let f = &c["function"];
            (
                f["name"].as_str().unwrap().to_string(),
                f["arguments"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let finish = choice["finish_reason"].as_str().unwrap().to_string();
    (content, calls, finish)
}

/// The same, streamed.
fn read_streamed(events: &[String]) -> (String, Vec<(String, String)>, String) {
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
                assert!(call["function"]["name"].is_string(), "{call}");
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

/// Asks whole and streamed; asserts both are the same answer and returns it.
async fn whole_and_streamed(url: &str, extra: Value) -> (String, Vec<(String, String)>, String) {
    let r = post_json(url, chat("tiny", extra.clone()), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let whole = read_whole(&r.json());
    let mut streamed = extra;
    streamed["stream"] = json!(true);
    let mut s = post_stream(url, chat("tiny", streamed), &[]).await.unwrap();
    assert_eq!(s.status, 200);
    let (events, err) = s.collect_events().await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        read_streamed(&events),
        whole,
        "the same seed streams the same answer"
    );
    whole
}

/// The call's arguments parse and validate against its function's parameters.
fn assert_valid(call: &(String, String)) {
    let schema = match call.0.as_str() {
        "weather" => weather(),
        "add" => add(),
        other => panic!("a call of `{other}`"),
    };
    let arguments: Value =
        serde_json::from_str(&call.1).unwrap_or_else(|e| panic!("{e}: {}", call.1));
    sluice_local::testing::json_schema::validate(&schema, &arguments)
        .unwrap_or_else(|e| panic!("{e}: {}", call.1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama31_tools_render_through_its_template_and_its_calls_parse_whole_and_streamed() {
    let file = llama31_file("llama31");
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\n",
        file.display()
    );
    let (_fake, gw) = gateway("", &models).await;
    let url = gw.url("/v1/chat/completions");

    // The template is recognised as Llama 3's tool format and renders the tools itself.
    let model = ChatModel::load(&file, &LoadOptions::default()).unwrap();
    assert_eq!(model.tool_format(), ToolFormat::Llama3);
    let hello = [ChatMessage::new("user", "hello")];
    let bos = model.prompt_tokens(&hello).unwrap().len()
        - model
            .tokenize(&model.render_prompt(&hello).unwrap())
            .unwrap()
            .len();
    let tool_objects = tools().as_array().unwrap().clone();
    let rendered = model
        .render_prompt_with_tools(&hello, Some(&tool_objects))
        .unwrap();
    assert!(
        rendered.contains("Environment: ipython\n\n")
            && rendered.contains("\"name\": \"weather\"")
            && rendered.ends_with(
                "<|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
            ),
        "{rendered}"
    );
    // A forced call is the whole answer: nothing follows the template's prompt.
    let forced_prompt = bos + model.tokenize(&rendered).unwrap().len();

    // Forced: `required` (either function) and a named one.
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "add"}}),
    ] {
        for seed in 0..3 {
            let extra = json!({"tools": tools(), "tool_choice": choice, "temperature": 1, "seed": seed, "max_tokens": 200});
            let r = post_json(&url, chat("tiny", extra.clone()), &[])
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            let v = r.json();
            assert_eq!(v["usage"]["prompt_tokens"], forced_prompt, "{v}");
            assert!(v["choices"][0]["message"]["content"].is_null(), "{v}");
            let (content, calls, finish) = whole_and_streamed(&url, extra).await;
            assert_eq!((content.as_str(), finish.as_str()), ("", "tool_calls"));
            assert_eq!(calls.len(), 1, "{calls:?}");
            if choice.is_object() {
                assert_eq!(calls[0].0, "add");
            }
            assert_valid(&calls[0]);
        }
    }

    // `auto`: a call is an answer that opens with `{`. A random model opens with it now and
    // then: two tokens of each seed tell which seeds start a call (cut there, the unfinished
    // call is held back: no content, `length`), and those seeds, given room, end their call,
    // which parses and validates; the other seeds answer in text, never a call.
    let (mut called, mut texts) = (0, 0);
    for seed in 0..400 {
        let probe = json!({"tools": tools(), "temperature": 1, "seed": seed, "max_tokens": 2});
        let r = post_json(&url, chat("tiny", probe), &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let (content, _, finish) = read_whole(&r.json());
        let starts_a_call = content.is_empty() && finish == "length";
        if !starts_a_call && texts >= 2 {
            continue;
        }
        let extra = json!({"tools": tools(), "temperature": 1, "seed": seed, "max_tokens": 200});
        let (content, calls, finish) = whole_and_streamed(&url, extra).await;
        if starts_a_call {
            assert_eq!((content.as_str(), finish.as_str()), ("", "tool_calls"));
            assert_eq!(calls.len(), 1, "Llama 3 makes one call a turn: {calls:?}");
            assert_valid(&calls[0]);
            called += 1;
        } else {
            assert!(calls.is_empty() && finish != "tool_calls", "{calls:?}");
            assert!(!content.trim_start().starts_with('{'), "{content}");
            texts += 1;
        }
        if called >= 2 && texts >= 2 {
            break;
        }
    }
    assert!(called >= 2, "only {called} of 400 seeds started a call");

    // The call and its result go back in the next turn as the template renders them: the
    // call as its JSON, the result as an `ipython` turn.
    let messages = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"c\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"}
    ]);
    let body = json!({"model": "tiny", "messages": messages, "tools": tools(), "tool_choice": "none", "temperature": 0, "max_tokens": 4});
    let r = post_json(&url, body.to_string(), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let history = [
        ChatMessage::new("user", "Weather in Paris?"),
        ChatMessage {
            tool_calls: Some(vec![
                json!({"type": "function", "id": "call_1", "function": {"name": "weather", "arguments": {"city": "Paris", "unit": "c"}}}),
            ]),
            ..ChatMessage::new("assistant", "")
        },
        ChatMessage {
            tool_call_id: Some("call_1".into()),
            name: Some("weather".into()),
            ..ChatMessage::new("tool", "{\"temp\": 21}")
        },
    ];
    let rendered = model.render_prompt(&history).unwrap();
    assert!(
        rendered.ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"weather\", \"parameters\": {\"city\": \"Paris\", \"unit\": \"c\"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n{\"temp\": 21}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
        "{rendered}"
    );
    // `none` offers no tools: the prompt is the history alone, exactly.
    assert_eq!(
        v["usage"]["prompt_tokens"],
        model.prompt_tokens(&history).unwrap().len(),
        "{v}"
    );
    // `auto` (the default): the same history after the tools, rendered by the template.
    let mut body = body;
    body.as_object_mut().unwrap().remove("tool_choice");
    let r = post_json(&url, body.to_string(), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let with_tools = model
        .render_prompt_with_tools(&history, Some(&tool_objects))
        .unwrap();
    assert!(with_tools.ends_with(&rendered[rendered.find("<|start_header_id|>user").unwrap()..]));
    assert_eq!(
        r.json()["usage"]["prompt_tokens"],
        bos + model.tokenize(&with_tools).unwrap().len()
    );
}
