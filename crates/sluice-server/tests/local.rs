//! Models sluice runs itself (`type = "local"`), through a real gateway on loopback: GGUF
//! files the test generates, answered whole and streamed, with usage, cost and spend, and
//! a model that can never fit the memory budget refused with 503 while a route falls back.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::start_with;
use serde_json::{json, Value};
use sluice_local::testing::{TestArch, TestDType, TestModel};
use sluice_testkit::client::{post_json, post_stream};
use sluice_testkit::FakeUpstream;

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
price = {{ input = 1.0, output = 2.0 }}
[[models]]
name = "tiny-qwen"
provider = "here"
path = "{}"
"#,
        llama.display(),
        qwen.display()
    );
    let (_fake, gw) = gateway("", &models).await;
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
        assert_eq!(streamed_usage.as_ref(), Some(usage), "{model}");
    }
    // Priced like any model: 1 $/M in, 2 $/M out; in the spend log too.
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        chat("tiny", json!({})),
        &[],
    )
    .await
    .unwrap();
    let u = &r.json()["usage"];
    let nano = u["prompt_tokens"].as_u64().unwrap() * 1_000
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
    let local = &health["local"];
    assert!(local["memory_used"].as_u64().unwrap() > 0, "{health}");
    assert!(local["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "tiny" && m["state"] == "loaded"));
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
