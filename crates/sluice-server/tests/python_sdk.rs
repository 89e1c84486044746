//! The official OpenAI and Anthropic Python SDKs against a real sluice, over loopback HTTP.
//!
//! Runs `tests/python/test_openai_sdk.py` and `tests/python/test_anthropic_sdk.py` with the
//! gateway's base URL in `SLUICE_BASE_URL`. The interpreter is `$SLUICE_PYTHON`, or `python3`.
//! Without the SDK's module a test is skipped, unless `SLUICE_REQUIRE_PYTHON_SDK=1` (set by
//! `./test.sh`, which installs the SDKs).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::script::{importable, python, run_script};
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
const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `script` (which needs `module`) against a fresh gateway at `path` of its URL.
async fn drive(module: &'static str, script: &'static str, path: &'static str) {
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
        return;
    }

    let (_fake, gw) = common::setup("").await;
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
