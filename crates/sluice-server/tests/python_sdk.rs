//! The official OpenAI and Anthropic Python SDKs against a real sluice, over loopback HTTP.
//!
//! Runs `tests/python/test_openai_sdk.py` and `tests/python/test_anthropic_sdk.py` with the
//! gateway's base URL in `SLUICE_BASE_URL`. The interpreter is `$SLUICE_PYTHON`, or `python3`.
//! Without the SDK's module a test is skipped, unless `SLUICE_REQUIRE_PYTHON_SDK=1` (set by
//! `./test.sh`, which installs the SDKs).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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

fn python() -> String {
    std::env::var("SLUICE_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

/// Whether `python` can import `module`; `Err` says why not.
fn sdk_available(python: &str, module: &str) -> Result<(), String> {
    match Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`{python} -c \"import {module}\"` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `{python}`: {e}")),
    }
}

/// Output of the script; `status` is `None` if it was killed after [`TIMEOUT`].
struct Run {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs the script to completion, or kills it after [`TIMEOUT`]. Blocking.
fn run_script(python: &str, script: &str, base_url: &str) -> Run {
    let mut child = Command::new(python)
        .arg(script)
        .env("SLUICE_BASE_URL", base_url)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // Keep the SDK's requests on loopback whatever the machine's proxy settings.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{python} {script}`: {e}"));
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Runs `script` (which needs `module`) against a fresh gateway at `path` of its URL.
async fn drive(module: &'static str, script: &'static str, path: &'static str) {
    let python = python();
    let py = python.clone();
    let available = tokio::task::spawn_blocking(move || sdk_available(&py, module))
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
    let run = tokio::task::spawn_blocking(move || run_script(&python, script, &base_url))
        .await
        .unwrap();
    let report = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        run.stdout, run.stderr
    );
    match run.status {
        None => panic!(
            "{script} did not finish within {}s\n{report}",
            TIMEOUT.as_secs()
        ),
        Some(status) => assert!(status.success(), "{script} failed: {status}\n{report}"),
    }
    assert!(
        run.stdout.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "no summary line\n{report}"
    );
    eprintln!("{}", run.stdout.trim_end());
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
