//! The official OpenAI and Anthropic Python SDKs against a real sluice, over loopback HTTP.
//!
//! Runs `tests/python/test_openai_sdk.py` and `tests/python/test_anthropic_sdk.py` with the
//! gateway's base URL in `SLUICE_BASE_URL`; `test_anthropic_sdk_upstreams.py` and
//! `test_openai_responses_upstreams.py` against a gateway whose models sit on Anthropic,
//! Gemini and OpenAI-compatible upstreams (one fake speaking all three). The interpreter is `$SLUICE_PYTHON`, or `python3`.
//! Without the SDK's module a test is skipped, unless `SLUICE_REQUIRE_PYTHON_SDK=1` (set by
//! `./test.sh`, which installs the SDKs).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::script::{importable, python, run_script};
use serde_json::json;
use sluice_testkit::FakeUpstream;
use std::time::Duration;

const OPENAI_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/test_openai_sdk.py"
);
const ANTHROPIC_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/test_anthropic_sdk.py"
);
const FILES_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/test_openai_files.py"
);
const BATCHES_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/test_openai_batches.py"
);
const FORWARDED_BATCHES_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/test_openai_batches_forwarded.py"
);
const ANTHROPIC_UPSTREAMS_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/test_anthropic_sdk_upstreams.py"
);
const RESPONSES_UPSTREAMS_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/test_openai_responses_upstreams.py"
);
const NATIVE_RESPONSES_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/test_openai_responses_native.py"
);
const TIMEOUT: Duration = Duration::from_secs(120);

/// The Python interpreter, when it has `module`; `None` (the test skipped) when it has not
/// and the SDKs are not required.
async fn python_with(module: &'static str, script: &str) -> Option<String> {
    let python = python();
    let py = python.clone();
    let available = tokio::task::spawn_blocking(move || importable(&py, module))
        .await
        .unwrap();
    if let Err(why) = available {
        if std::env::var("SLUICE_REQUIRE_PYTHON_SDK").as_deref() == Ok("1") {
            panic!(
                "the `{module}` Python SDK is required (SLUICE_REQUIRE_PYTHON_SDK=1) but unavailable: \
                 {why}; run ./test.sh, which installs the SDKs"
            );
        }
        eprintln!(
            "SKIPPED {script}: {why} (run ./test.sh, which installs the SDKs, or set SLUICE_PYTHON)"
        );
        return None;
    }
    Some(python)
}

/// Runs `script` against `gw` at `path` of its URL.
async fn run(python: String, script: &'static str, gw: &common::Gateway, path: &'static str) {
    let base_url = gw.url(path);
    let run = tokio::task::spawn_blocking(move || {
        run_script(
            &python,
            script,
            &[("SLUICE_BASE_URL", base_url.as_str())],
            TIMEOUT,
        )
    })
    .await
    .unwrap();
    run.assert_passed(script);
}

/// Runs `script` (which needs `module`) against a fresh gateway at `path` of its URL.
async fn drive(module: &'static str, script: &'static str, path: &'static str) {
    let Some(python) = python_with(module, script).await else {
        return;
    };
    let (_fake, gw) = common::setup("").await;
    run(python, script, &gw, path).await;
}

/// A fake upstream speaking every format, and a gateway with model `claude` on an
/// `anthropic` provider, `gem` on a `gemini` one and `oai` on an `openai` one, all at it.
async fn upstreams() -> (FakeUpstream, common::Gateway) {
    let fake = FakeUpstream::start().await;
    let mut toml = common::config_for(&fake.base_url(), "");
    for (name, kind) in [
        ("claude", "anthropic"),
        ("gem", "gemini"),
        ("oai", "openai"),
    ] {
        let base = if kind == "openai" {
            fake.base_url()
        } else {
            fake.url("")
        };
        toml.push_str(&format!(
            "[[providers]]\nname = \"{kind}\"\ntype = \"{kind}\"\nbase_url = \"{base}\"\napi_key = \"k\"\n\
             [[models]]\nname = \"{name}\"\nprovider = \"{kind}\"\nupstream = \"{name}-upstream\"\n"
        ));
    }
    let gw = common::start_with(&toml).await;
    (fake, gw)
}

/// The bodies of the requests `fake` received at paths ending with `path`.
fn sent(fake: &FakeUpstream, path: &str) -> Vec<serde_json::Value> {
    fake.requests()
        .iter()
        .filter(|r| r.path.ends_with(path))
        .filter_map(|r| r.json())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_streams_tools_and_thinking_over_anthropic_and_openai_upstreams() {
    let script = ANTHROPIC_UPSTREAMS_SCRIPT;
    let Some(python) = python_with("anthropic", script).await else {
        return;
    };
    let (fake, gw) = upstreams().await;
    run(python, script, &gw, "").await;
    // Thinking went upstream in each format's own terms.
    let anthropic = sent(&fake, "/v1/messages");
    assert!(
        anthropic
            .iter()
            .any(|b| b["thinking"] == json!({"type": "enabled", "budget_tokens": 1024})),
        "{anthropic:?}"
    );
    // Anthropic's signed thinking went back to it first in its turn; nothing of the sort
    // went to the OpenAI-compatible upstream, whose thinking had no signature.
    assert!(
        anthropic.iter().any(|b| b["messages"][1]["content"][0]
            == json!({"type": "thinking", "thinking": "The user asks about Paris. Check the forecast.",
                      "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxB"})),
        "{anthropic:?}"
    );
    let openai = sent(&fake, "/chat/completions");
    assert!(
        openai.iter().any(|b| b["reasoning_effort"] == "low"),
        "{openai:?}"
    );
    assert!(
        openai.iter().all(|b| !b.to_string().contains("thinking")),
        "{openai:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_drives_responses_over_anthropic_and_gemini_upstreams() {
    let script = RESPONSES_UPSTREAMS_SCRIPT;
    let Some(python) = python_with("openai", script).await else {
        return;
    };
    let (fake, gw) = upstreams().await;
    run(python, script, &gw, "/v1").await;
    // A continued response's upstream request carries the first call's input and answer.
    let anthropic = sent(&fake, "/v1/messages");
    let continued = |bodies: &[serde_json::Value], first: &str| {
        bodies.iter().any(|b| {
            let text = b.to_string();
            text.contains(first)
                && text.contains("What is my name?")
                && text.contains("Hello from the fake upstream.")
        })
    };
    assert!(
        continued(&anthropic, "My name is Ann (claude)."),
        "{anthropic:?}"
    );
    let gemini = sent(&fake, ":generateContent");
    assert!(continued(&gemini, "My name is Ann (gem)."), "{gemini:?}");
    // Anthropic's signed thinking went back to it, through the stored conversation and
    // through the replayed encrypted_content.
    let signed = json!({"type": "thinking", "thinking": "The user asks about Paris. Check the forecast.",
                        "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxB"});
    let with_thinking = |bodies: &[serde_json::Value], marker: &str| {
        bodies.iter().any(|b| {
            b.to_string().contains(marker)
                && b["messages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["role"] == "assistant" && m["content"][0] == signed)
        })
    };
    assert!(with_thinking(&anthropic, "And Rome?\""), "{anthropic:?}");
    assert!(
        with_thinking(&anthropic, "And Rome? (replayed)"),
        "{anthropic:?}"
    );
    // Structured output reached Gemini as its response schema.
    assert!(
        gemini.iter().any(
            |b| b["generationConfig"]["responseMimeType"] == "application/json"
                && b["generationConfig"]["responseSchema"]["properties"]["answer"].is_object()
        ),
        "{gemini:?}"
    );
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_works_against_sluice() {
    drive("openai", OPENAI_SCRIPT, "/v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_anthropic_sdk_works_against_messages() {
    drive("anthropic", ANTHROPIC_SCRIPT, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_drives_the_files_api() {
    drive("openai", FILES_SCRIPT, "/v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_drives_the_batch_api() {
    drive("openai", BATCHES_SCRIPT, "/v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_drives_a_batch_forwarded_to_the_upstreams_batch_api() {
    let script = FORWARDED_BATCHES_SCRIPT;
    let Some(python) = python_with("openai", script).await else {
        return;
    };
    let fake = FakeUpstream::start().await;
    // Slow enough that the script sees the batch running and cancels it before it ends.
    fake.set_batch_outcome(sluice_testkit::BatchOutcome::Complete { after_polls: 20 });
    let dir = std::env::temp_dir().join(format!(
        "sluice-sdk-forwarded-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    // A data directory of its own: no other test's batch is forwarded here.
    let toml = common::config_for(&fake.base_url(), "batch = \"native\"").replace(
        "[storage]\n",
        &format!("[storage]\ndata_dir = \"{}\"\n#", dir.display()),
    ) + "[batches]\npoll_interval_ms = 50\n";
    let gw = common::start_with(&toml).await;
    run(python, script, &gw, "/v1").await;
    let sent = |method: &str, suffix: &str| {
        fake.requests()
            .iter()
            .filter(|r| {
                r.method.as_str() == method
                    && r.path.starts_with("/v1/batches")
                    && r.path.ends_with(suffix)
            })
            .count()
    };
    assert_eq!(sent("POST", "/v1/batches"), 2);
    assert_eq!(sent("POST", "/cancel"), 1);
    let uploaded = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/files")
        .unwrap();
    assert!(String::from_utf8_lossy(&uploaded.body).contains("\"upstream-m\""));
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.path != "/v1/chat/completions"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_drives_a_native_responses_upstream() {
    let script = NATIVE_RESPONSES_SCRIPT;
    let Some(python) = python_with("openai", script).await else {
        return;
    };
    let (_fake, gw) = common::setup("responses = \"native\"").await;
    run(python, script, &gw, "/v1").await;
}
