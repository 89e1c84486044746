//! Models sluice runs itself (`type = "local"`), through a real gateway on loopback: GGUF
//! files the test generates, answered whole and streamed, with usage, cost and spend, and
//! a model that can never fit the memory budget refused with 503 while a route falls back.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod batches;
mod choices;
#[path = "../common/mod.rs"]
mod common;
mod completions;
mod console;
mod constrained;
mod llama_tools;
mod semantic_cache;
mod tools;

use common::start_with;
use serde_json::{json, Value};
use sluice_local::testing::{cosine, minilm_dir, TestArch, TestDType, TestModel};
use sluice_testkit::client::{
    post_json, post_stream, ClientError, TestClient, TestResponse, TestStream,
};
use sluice_testkit::FakeUpstream;

/// How long a call to a real model file may take: the test build runs SmolLM2 on a machine
/// that builds and tests other crates at the same time, where 48 tokens have taken more than
/// the client's default 30 s.
const SLOW: std::time::Duration = std::time::Duration::from_secs(300);

/// [`post_json`] with [`SLOW`]'s time limit.
async fn post_json_slow(
    url: &str,
    body: impl Into<bytes::Bytes>,
    headers: &[(&str, &str)],
) -> Result<TestResponse, ClientError> {
    TestClient::new()
        .with_timeout(SLOW)
        .post_json(url, body, headers)
        .await
}

/// [`post_stream`] with [`SLOW`]'s time limit (for the head and each chunk).
async fn post_stream_slow(
    url: &str,
    body: impl Into<bytes::Bytes>,
    headers: &[(&str, &str)],
) -> Result<TestStream, ClientError> {
    let method = http::Method::POST;
    sluice_testkit::client::open_stream(method, url, body.into(), headers, SLOW).await
}

fn model_file(name: &str, arch: TestArch) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-local-{name}-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.gguf");
    TestModel::tiny(arch, TestDType::Q8_0).write(&path).unwrap();
    path
}

fn chat(model: &str, extra: Value) -> String {
    let mut v = json!({
        "model": model,
        "temperature": 0,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hello"}],
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string()
}

async fn gateway(local_extra: &str, models: &str) -> (FakeUpstream, common::Gateway) {
    let fake = FakeUpstream::start().await;
    let dir = std::env::temp_dir().join(format!("sluice-local-data-{}", std::process::id()));
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{dir}"
[local]
{local_extra}
[[providers]]
name = "here"
type = "local"
[[providers]]
name = "cloud"
type = "openai"
base_url = "{upstream}"
{models}
"#,
        dir = dir.display(),
        upstream = fake.base_url(),
    );
    (fake, start_with(&toml).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_model_answers_whole_and_streamed() {
    let llama = model_file("answers", TestArch::Llama);
    let qwen = model_file("answers-qwen", TestArch::Qwen2);
    let models = format!(
        r#"
[[models]]
name = "tiny"
provider = "here"
path = "{}"
price = {{ input = 1.0, output = 2.0, cached_input = 0.5 }}
[[models]]
name = "tiny-qwen"
provider = "here"
path = "{}"
"#,
        llama.display(),
        qwen.display()
    );
    // No kept caches: every request of a model runs on its one slot, whose cache the next
    // request reuses as far as its prompt shares it (`a_second_turn_reuses_the_kept_conversation`
    // has the kept ones).
    let (_fake, gw) = gateway("prompt_cache_slots = 0", &models).await;
    for model in ["tiny", "tiny-qwen"] {
        let r = post_json(&gw.url("/v1/chat/completions"), chat(model, json!({})), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], model);
        assert_eq!(r.header("x-sluice-provider"), Some("here"));
        let usage = &v["usage"];
        let completion = usage["completion_tokens"].as_u64().unwrap();
        assert!((1..=8).contains(&completion), "{v}");
        assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
        let whole = v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();

        // Streamed, greedy: the same text, chunk by chunk, then usage and [DONE].
        let body = chat(
            model,
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        );
        let mut s = post_stream(&gw.url("/v1/chat/completions"), body, &[])
            .await
            .unwrap();
        assert_eq!(s.status, 200);
        let (events, err) = s.collect_events().await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let mut text = String::new();
        let mut streamed_usage = None;
        for e in &events[..events.len() - 1] {
            let c: Value = serde_json::from_str(e).unwrap();
            if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if !c["usage"].is_null() {
                streamed_usage = Some(c["usage"].clone());
            }
        }
        assert_eq!(text, whole, "{model}");
        // The same prompt again: its slot kept every prompt token but the last.
        let mut streamed_usage = streamed_usage.expect("usage in the stream");
        let prompt = usage["prompt_tokens"].as_u64().unwrap();
        assert_eq!(
            usage["prompt_tokens_details"]["cached_tokens"], 0,
            "{model}"
        );
        let cached = streamed_usage["prompt_tokens_details"]["cached_tokens"].take();
        assert_eq!(cached, prompt - 1, "{model}");
        streamed_usage["prompt_tokens_details"]["cached_tokens"] = json!(0);
        assert_eq!(&streamed_usage, usage, "{model}");
    }
    // `ignore_eos` (llama.cpp's extension): exactly `max_tokens`, ended by the length.
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat("tiny", json!({"ignore_eos": true, "max_tokens": 30})),
        &[],
    )
    .await
    .unwrap();
    let v = r.json();
    assert_eq!(v["usage"]["completion_tokens"], 30, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    // Priced like any model: 1 $/M in, 0.5 $/M for the reused prompt tokens, 2 $/M out; in
    // the spend log too.
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat("tiny", json!({})),
        &[],
    )
    .await
    .unwrap();
    let u = &r.json()["usage"];
    let cached = u["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached > 0, "{u}");
    let nano = (u["prompt_tokens"].as_u64().unwrap() - cached) * 1_000
        + cached * 500
        + u["completion_tokens"].as_u64().unwrap() * 2_000;
    assert_eq!(
        r.header("x-sluice-cost-usd").map(str::to_string),
        Some(sluice_server::admin_keys::usd(nano))
    );
    let health = sluice_testkit::client::get(&gw.url("/health/detailed"))
        .await
        .unwrap()
        .json();
    let metrics = sluice_testkit::client::get(&gw.url("/metrics"))
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("sluice_local_model_loaded{model=\"tiny\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_local_memory_budget_bytes "));
    // One load of `tiny`, on the native engine; chat requests' queue waits; nothing
    // evicted; nothing queued now.
    for line in [
        "sluice_local_model_load_duration_seconds_count{model=\"tiny\",engine=\"native\"} 1",
        "sluice_local_model_evictions_total{model=\"tiny\",reason=\"memory\"} 0",
        "sluice_local_queue_depth{model=\"tiny\"} 0",
        "sluice_local_queue_wait_seconds_bucket{model=\"tiny\",kind=\"chat\",le=\"+Inf\"}",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let local = &health["local"];
    assert!(local["memory_used"].as_u64().unwrap() > 0, "{health}");
    assert!(local["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "tiny" && m["state"] == "loaded"));
}

/// What a local model cannot do is refused by name (400, the parameter in `param`), not
/// dropped; what it can do (`top_k`, `response_format` text, `n` 1) is served. A JSON schema
/// outside the supported subset, or one whose `$ref` points nowhere, is refused naming why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_a_local_model_cannot_honour_are_refused_by_name() {
    let llama = model_file("unsupported", TestArch::Llama);
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\n",
        llama.display()
    );
    let (_fake, gw) = gateway("", &models).await;
    let url = gw.url("/v1/chat/completions");
    let tool = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    for (extra, param) in [
        (
            json!({"tools": tool, "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "", "parameters": {}}}]}),
            "tools",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "a b", "parameters": {}}}]}),
            "tools",
        ),
        (
            json!({"tools": tool, "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            json!({"tools": tool, "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            "tool_choice",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string", "format": "int32"}}}}}], "tool_choice": "required"}),
            "tools",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "^a(?=b)"}}}}),
            "response_format",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/nowhere"}}}}),
            "response_format",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "number", "multipleOf": 0.01}}}}),
            "response_format",
        ),
        (
            json!({"response_format": {"type": "yaml"}}),
            "response_format",
        ),
        (json!({"n": 9}), "n"),
        (json!({"n": 0}), "n"),
        (json!({"top_logprobs": 3}), "top_logprobs"),
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
    ] {
        let r = post_json(&url, chat("tiny", extra.clone()), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{extra}: {}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["param"], param, "{extra}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        if extra.to_string().contains("pattern") {
            assert!(
                message.contains("the pattern `^a(?=b)` is not supported")
                    && message.contains("look-around"),
                "{message}"
            );
        }
        if extra.to_string().contains("int32") {
            assert!(
                message.contains("the `format` `int32` is not supported"),
                "{message}"
            );
        }
        if extra.to_string().contains("multipleOf") {
            assert!(
                message.contains("`multipleOf` 0.01 cannot be enforced exactly")
                    && message.contains("#/multipleOf"),
                "{message}"
            );
        }
        if extra.to_string().contains("nowhere") {
            assert!(message.contains("points nowhere"), "{message}");
        }
    }
    // The request's own keep-alive is read in the same pass, and checked.
    let r = post_json(&url, chat("tiny", json!({"keep_alive": "soon"})), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "keep_alive");
    let extra = json!({"top_k": 1, "response_format": {"type": "text"}, "n": 1, "tools": [], "keep_alive": "1h"});
    let r = post_json(&url, chat("tiny", extra), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `[local] device = "cuda"` on a build without CUDA: the gateway starts, and a request to a
/// local chat model gets an error that says why, not an answer computed on the CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_device_this_build_lacks_is_reported() {
    if cfg!(feature = "cuda") {
        return;
    }
    let llama = model_file("no-cuda", TestArch::Llama);
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\n",
        llama.display()
    );
    let (_fake, gw) = gateway("device = \"cuda\"", &models).await;
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat("tiny", json!({})),
        &[],
    )
    .await
    .unwrap();
    assert!(r.status >= 500, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("--features cuda"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_cannot_fit_is_refused_and_a_route_falls_back() {
    let llama = model_file("too-big", TestArch::Llama);
    let models = format!(
        r#"
[[models]]
name = "tiny"
provider = "here"
path = "{}"
[[models]]
name = "gpt"
provider = "cloud"
[[routes]]
name = "auto"
targets = ["tiny", "gpt"]
"#,
        llama.display()
    );
    let (fake, gw) = gateway("memory_budget = 1000", &models).await;
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat("tiny", json!({})),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], "model_overloaded");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("budget"),
        "{v}"
    );
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat("auto", json!({})),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-model"), Some("gpt"));
    assert_eq!(fake.request_count(), 1);
}

/// Files the engine cannot run (an unsupported architecture, a tensor type no engine reads)
/// are refused with 503 `model_unsupported` naming what is missing, never as a bad file or a
/// 502 blaming an upstream; a route falls back past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_engine_cannot_run_is_refused_saying_what_is_missing() {
    let gemma = model_file("mamba", TestArch::Llama);
    TestModel {
        architecture_name: Some("mamba".into()),
        ..TestModel::tiny(TestArch::Llama, TestDType::Q8_0)
    }
    .write(&gemma)
    .unwrap();
    let iq = model_file("iq4nl", TestArch::Llama);
    sluice_local::testing::set_tensor_type(&iq, "blk.0.ffn_up.weight", 20).unwrap();
    let models = format!(
        r#"
[[models]]
name = "gemma"
provider = "here"
path = "{}"
[[models]]
name = "iq"
provider = "here"
path = "{}"
[[models]]
name = "gpt"
provider = "cloud"
[[routes]]
name = "auto"
targets = ["iq", "gpt"]
"#,
        gemma.display(),
        iq.display()
    );
    let (fake, gw) = gateway("", &models).await;
    for (model, says) in [
        ("gemma", vec!["architecture", "`mamba`"]),
        ("iq", vec!["IQ4_NL", "blk.0.ffn_up.weight"]),
    ] {
        let r = post_json(&gw.url("/v1/chat/completions"), chat(model, json!({})), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["code"], "model_unsupported", "{v}");
        assert_eq!(v["error"]["type"], "service_unavailable", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        for word in says {
            assert!(message.contains(word), "{message}");
        }
        assert!(!message.contains("not a valid GGUF"), "{message}");
        assert!(!message.contains("upstream"), "{message}");
    }
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat("auto", json!({})),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-model"), Some("gpt"));
    assert_eq!(fake.request_count(), 1);
}

/// A model runs with its own `context_length` (shown in `/health/detailed`), else the file's
/// when smaller than `[local] context_length`; a prompt too long for it is a 400 that says so,
/// streamed or not; a `context_length` above the file's is a config error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_longer_than_the_context_is_a_400_and_health_shows_the_context() {
    let llama = model_file("context", TestArch::Llama);
    let models = format!(
        r#"
[[models]]
name = "short"
provider = "here"
path = "{path}"
context_length = 64
[[models]]
name = "whole"
provider = "here"
path = "{path}"
"#,
        path = llama.display()
    );
    let (_fake, gw) = gateway("context_length = 4096", &models).await;
    let long = json!({"messages": [{"role": "user", "content": "hello ".repeat(40)}]});
    for stream in [false, true] {
        let body = chat(
            "short",
            json!({"stream": stream, "messages": long["messages"]}),
        );
        let r = post_json(&gw.url("/v1/chat/completions"), body, &[])
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("context length is 64"), "{message}");
    }
    for model in ["short", "whole"] {
        let r = post_json(&gw.url("/v1/chat/completions"), chat(model, json!({})), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let health = sluice_testkit::client::get(&gw.url("/health/detailed"))
        .await
        .unwrap()
        .json();
    let context = |name: &str| {
        health["local"]["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["context_length"].clone())
    };
    assert_eq!(context("short"), Some(json!(64)), "{health}");
    assert_eq!(
        context("whole"),
        Some(json!(512)),
        "the file's own: {health}"
    );

    let toml = format!(
        "[storage]\ndata_dir = \"{}\"\n[[providers]]\nname = \"here\"\ntype = \"local\"\n\
         [[models]]\nname = \"big\"\nprovider = \"here\"\npath = \"{}\"\ncontext_length = 100000\n",
        std::env::temp_dir()
            .join("sluice-local-context-data")
            .display(),
        llama.display()
    );
    let config =
        sluice_core::config::Config::from_toml(&toml, &sluice_core::env::MapEnv::default())
            .unwrap();
    let err = sluice_server::Server::bind(config).await.err().unwrap();
    assert!(
        err.to_string()
            .contains("`context_length` 100000 exceeds the file's context length 512"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_in_the_models_dir_and_in_ollamas_store_are_served() {
    let root = std::env::temp_dir().join(format!(
        "sluice-local-found-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    // A models directory with one GGUF file, served under its file name.
    let models_dir = root.join("models");
    std::fs::create_dir_all(&models_dir).unwrap();
    TestModel::tiny(TestArch::Llama, TestDType::Q4_0)
        .write(&models_dir.join("dir-model.gguf"))
        .unwrap();
    // An Ollama store: a manifest naming a blob by its sha256.
    let store = root.join("ollama");
    let blob = store.join("blobs").join("tmp.gguf");
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    TestModel::tiny(TestArch::Qwen2, TestDType::Q8_0)
        .write(&blob)
        .unwrap();
    let hex = sluice_local::pool::sha256_file(&blob).unwrap();
    let size = std::fs::metadata(&blob).unwrap().len();
    std::fs::rename(&blob, store.join("blobs").join(format!("sha256-{hex}"))).unwrap();
    let manifest = store.join("manifests/registry.ollama.ai/library/tiny-qwen/q8");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::write(
        &manifest,
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": format!("sha256:{hex}"), "size": 1},
            "layers": [{"mediaType": "application/vnd.ollama.image.model",
                        "digest": format!("sha256:{hex}"), "size": size}],
        })
        .to_string(),
    )
    .unwrap();
    let local = format!(
        "models_dir = \"{}\"\nollama_dir = \"{}\"",
        models_dir.display(),
        store.display()
    );
    let (_fake, gw) = gateway(&local, "").await;
    let listed = sluice_testkit::client::get(&gw.url("/v1/models"))
        .await
        .unwrap()
        .json();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"dir-model") && ids.contains(&"tiny-qwen:q8"),
        "{listed}"
    );
    for model in ["dir-model", "tiny-qwen:q8"] {
        let r = post_json(&gw.url("/v1/chat/completions"), chat(model, json!({})), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        assert_eq!(r.header("x-sluice-provider"), Some("here"));
    }
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn from_base64(text: &str) -> Vec<f32> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut bytes = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk
            .iter()
            .map(|&c| if c == b'=' { 0 } else { value(c) })
            .fold(0u32, |n, v| (n << 6) | v);
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        bytes.extend_from_slice(&three[..3 - pad]);
    }
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_embeddings_match_the_reference_over_http() {
    let reference: Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../sluice-local/tests/fixtures/minilm_reference.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let sentences = reference["sentences"].as_array().unwrap();
    // Served from a models directory (as the run command installs it), and from the config
    // under another name with a price.
    let root = std::env::temp_dir().join(format!(
        "sluice-local-embed-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    let models_dir = root.join("models");
    std::fs::create_dir_all(&models_dir).unwrap();
    std::os::unix::fs::symlink(minilm_dir(), models_dir.join("all-MiniLM-L6-v2")).unwrap();
    let chat_model = model_file("embed-chat", TestArch::Llama);
    let local = format!("models_dir = \"{}\"\nmax_wait_ms = 5", models_dir.display());
    let models = format!(
        r#"
[[models]]
name = "minilm"
provider = "here"
path = "{}"
price = {{ input = 0.02, output = 0.0 }}
[[models]]
name = "tiny"
provider = "here"
path = "{}"
"#,
        minilm_dir().display(),
        chat_model.display()
    );
    let (_fake, gw) = gateway(&local, &models).await;
    let url = gw.url("/v1/embeddings");

    let texts: Vec<&str> = sentences
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    let tokens: u64 = sentences
        .iter()
        .map(|s| s["tokens"].as_u64().unwrap())
        .sum();
    let body = json!({"model": "all-MiniLM-L6-v2", "input": texts}).to_string();
    let r = post_json(&url, body, &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "all-MiniLM-L6-v2");
    assert_eq!(v["usage"]["prompt_tokens"], tokens);
    assert_eq!(v["usage"]["total_tokens"], tokens);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), sentences.len());
    for (i, (d, s)) in data.iter().zip(sentences).enumerate() {
        assert_eq!(d["index"], i);
        assert_eq!(d["object"], "embedding");
        let c = cosine(&floats(&d["embedding"]), &floats(&s["embedding"]));
        assert!(c >= 0.999, "cosine {c} for {}", s["text"]);
    }

    // One string, base64 (what the OpenAI SDKs ask for by default), priced.
    let body = json!({"model": "minilm", "input": texts[0], "encoding_format": "base64"});
    let r = post_json(&url, body.to_string(), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-provider"), Some("here"));
    let cost: f64 = r.header("x-sluice-cost-usd").unwrap().parse().unwrap();
    let want = sentences[0]["tokens"].as_f64().unwrap() * 0.02 / 1e6;
    assert!((cost - want).abs() < 1e-12, "cost {cost}, want {want}");
    let v = r.json();
    let got = from_base64(v["data"][0]["embedding"].as_str().unwrap());
    assert_eq!(got.len(), 384);
    assert!(cosine(&got, &floats(&sentences[0]["embedding"])) >= 0.999);

    // 32 concurrent clients: every answer is its own input's vector.
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (url, s) = (url.clone(), sentences[i % sentences.len()].clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": "all-MiniLM-L6-v2", "input": [s["text"]]});
            let r = post_json(&url, body.to_string(), &[]).await.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            let got = floats(&r.json()["data"][0]["embedding"]);
            assert!(cosine(&got, &floats(&s["embedding"])) >= 0.999);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    // Bad input: clear 400s in the OpenAI shape.
    for (body, param) in [
        (json!({"model": "minilm", "input": [[1, 2, 3]]}), "input"),
        (
            json!({"model": "minilm", "input": "x", "dimensions": 64}),
            "dimensions",
        ),
        (
            json!({"model": "minilm", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            json!({"model": "minilm", "input": "x", "keep_alive": "soon"}),
            "keep_alive",
        ),
        (json!({"model": "tiny", "input": "x"}), "model"),
    ] {
        let r = post_json(&url, body.to_string(), &[]).await.unwrap();
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], param, "{body}: {}", r.text());
    }
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat("minilm", json!({})),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("embedding model"), "{}", r.text());

    // Every answered request's wait for its batch is in the queue-wait histogram, under
    // its model and kind: 33 on the models directory's copy, one on `minilm` (the 400s
    // never queued).
    let metrics = sluice_testkit::client::get(&gw.url("/metrics"))
        .await
        .unwrap()
        .text();
    for line in [
        "sluice_local_queue_wait_seconds_count{model=\"all-MiniLM-L6-v2\",kind=\"embedding\"} 33",
        "sluice_local_queue_wait_seconds_count{model=\"minilm\",kind=\"embedding\"} 1",
        "sluice_local_queue_wait_seconds_count{model=\"tiny\",kind=\"chat\"} 0",
        "sluice_local_queue_depth{model=\"minilm\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // The pool shows it.
    let health = sluice_testkit::client::get(&gw.url("/health/detailed"))
        .await
        .unwrap()
        .json();
    let listed = health["local"]["models"].as_array().unwrap();
    let minilm = listed.iter().find(|m| m["name"] == "minilm").unwrap();
    assert_eq!(minilm["kind"], "embedding", "{health}");
    assert_eq!(minilm["state"], "loaded", "{health}");
}

/// The cross-encoder fixture of sluice-local (a random-initialised one-label BERT saved by
/// sentence-transformers) and the scores `CrossEncoder.predict` gave it.
fn cross_encoder(activation: &str) -> (std::path::PathBuf, Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sluice-local/tests/fixtures/cross-encoder");
    let reference: Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    (
        dir.join(activation),
        reference["models"][activation].clone(),
    )
}

#[tokio::test]
async fn local_rerank_matches_sentence_transformers_over_http() {
    let (sigmoid, reference) = cross_encoder("sigmoid");
    // From the config, and from a models directory by its directory name.
    let root = std::env::temp_dir().join(format!(
        "sluice-local-rerank-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    let models_dir = root.join("models");
    std::fs::create_dir_all(&models_dir).unwrap();
    std::os::unix::fs::symlink(&sigmoid, models_dir.join("tiny-cross-encoder")).unwrap();
    let local = format!("models_dir = \"{}\"\nmax_wait_ms = 5", models_dir.display());
    let models = format!(
        "[[models]]\nname = \"ce\"\nprovider = \"here\"\npath = \"{}\"\nprice = {{ request = 0.001 }}\n",
        sigmoid.display()
    );
    let (_fake, gw) = gateway(&local, &models).await;
    let url = gw.url("/v1/rerank");
    let mut answered = 0;
    for name in ["ce", "tiny-cross-encoder"] {
        for req in reference["requests"].as_array().unwrap() {
            let docs = req["documents"].as_array().unwrap();
            if docs.is_empty() || req["query"].as_str().unwrap().is_empty() {
                continue;
            }
            let body = json!({"model": name, "query": req["query"], "documents": docs, "return_documents": true});
            let r = post_json(&url, body.to_string(), &[]).await.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            let v = r.json();
            let results = v["results"].as_array().unwrap();
            assert_eq!(results.len(), docs.len());
            let mut last = f64::INFINITY;
            for res in results {
                let i = res["index"].as_u64().unwrap() as usize;
                let score = res["relevance_score"].as_f64().unwrap();
                let want = req["scores"][i].as_f64().unwrap();
                assert!(
                    (score - want).abs() < 1e-4,
                    "{name} doc {i}: {score} vs {want}"
                );
                assert!(score <= last, "sorted by score");
                last = score;
                assert_eq!(res["document"]["text"], docs[i]);
            }
            let tokens: u64 = req["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap())
                .sum();
            assert_eq!(v["usage"]["prompt_tokens"], tokens);
            answered += 1;
        }
    }
    // Each request's wait for its batch is in the queue-wait histogram, by model and kind.
    let metrics = sluice_testkit::client::get(&gw.url("/metrics"))
        .await
        .unwrap()
        .text();
    for name in ["ce", "tiny-cross-encoder"] {
        let line = format!(
            "sluice_local_queue_wait_seconds_count{{model=\"{name}\",kind=\"rerank\"}} {}",
            answered / 2
        );
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    // top_n, the price per request, and bad input.
    let body =
        json!({"model": "ce", "query": "canal locks", "documents": ["a", "b", "c"], "top_n": 2});
    let r = post_json(&url, body.to_string(), &[]).await.unwrap();
    assert_eq!(r.json()["results"].as_array().unwrap().len(), 2);
    assert_eq!(r.header("x-sluice-cost-usd"), Some("0.001"));
    let body = json!({"model": "ce", "query": "q", "documents": [{"title": "no text"}]});
    let r = post_json(&url, body.to_string(), &[]).await.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "documents");
    // A reranker is not an embedding model.
    let r = post_json(
        &gw.url("/v1/embeddings"),
        json!({"model": "ce", "input": "x"}).to_string(),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("is a reranker: use /v1/rerank"),
        "{}",
        r.text()
    );
}

/// `[local] prompt_cache_slots`: a conversation's second turn, after another conversation ran
/// on the model's only running sequence, reuses the first turn's KV cache: `cached_tokens`
/// covers the first turn's prompt and is priced at `cached_input`. With `prompt_cache_slots =
/// 0` the other conversation took that cache and the second turn runs (almost) whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_turn_reuses_the_kept_conversation() {
    let llama = model_file("kept", TestArch::Llama);
    let models = format!(
        r#"
[[models]]
name = "tiny"
provider = "here"
path = "{}"
price = {{ input = 1.0, output = 2.0, cached_input = 0.5 }}
"#,
        llama.display()
    );
    for kept in [1, 0] {
        let (_fake, gw) = gateway(&format!("prompt_cache_slots = {kept}"), &models).await;
        let ask = |messages: Value| chat("tiny", json!({ "messages": messages }));
        let question = json!({"role": "user", "content": "Tell me about the sea."});
        let url = gw.url("/v1/chat/completions");
        let first = post_json(&url, ask(json!([question])), &[])
            .await
            .unwrap()
            .json();
        let other = json!([{"role": "user", "content": "Something else entirely, please."}]);
        let r = post_json(&url, ask(other), &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let answer = first["choices"][0]["message"]["content"].clone();
        let turn = json!([
            question,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "And the mountains?"},
        ]);
        let r = post_json(&url, ask(turn), &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let u = &r.json()["usage"];
        let cached = u["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        let first_prompt = first["usage"]["prompt_tokens"].as_u64().unwrap();
        if kept == 0 {
            assert!(cached < first_prompt, "{u}");
            continue;
        }
        assert!(cached >= first_prompt, "{u} after {}", first["usage"]);
        let nano = (u["prompt_tokens"].as_u64().unwrap() - cached) * 1_000
            + cached * 500
            + u["completion_tokens"].as_u64().unwrap() * 2_000;
        assert_eq!(
            r.header("x-sluice-cost-usd").map(str::to_string),
            Some(sluice_server::admin_keys::usd(nano))
        );
    }
}
