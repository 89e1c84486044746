//! Runs a Python script against a running gateway (the official SDKs' checks, the browser
//! test of the console): the interpreter is `$SLUICE_PYTHON`, or `python3`.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The interpreter: `$SLUICE_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("SLUICE_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

/// Whether `python` can import `module`; `Err` says why not.
pub fn importable(python: &str, module: &str) -> Result<(), String> {
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

/// Output of a script; `status` is `None` if it was killed at its deadline.
pub struct Run {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics unless the script exited 0 and printed its `N passed, 0 failed` line.
    pub fn assert_passed(&self, script: &str) {
        let report = format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        );
        match self.status {
            None => panic!("{script} did not finish in time\n{report}"),
            Some(status) => assert!(status.success(), "{script} failed: {status}\n{report}"),
        }
        assert!(
            self.stdout
                .lines()
                .any(|l| l.ends_with(" passed, 0 failed")),
            "no summary line\n{report}"
        );
        eprintln!("{}", self.stdout.trim_end());
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `script` with `env` to completion, or kills it after `timeout`. Blocking.
pub fn run_script(python: &str, script: &str, env: &[(&str, &str)], timeout: Duration) -> Run {
    let mut child = Command::new(python)
        .arg(script)
        .envs(env.iter().copied())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // Keep the script's requests on loopback whatever the machine's proxy settings.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{python} {script}`: {e}"));
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
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
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// The interpreter and the Chromium for a browser test of `script`: `None` (after saying why)
/// when Playwright or Chromium is missing, unless `SLUICE_REQUIRE_BROWSER=1` (set by
/// `./test.sh`, which installs both), where that fails the test. Chromium is
/// `$SLUICE_CHROMIUM`, else `/usr/bin/chromium`. Blocking.
pub fn browser(script: &str) -> Option<(String, String)> {
    let python = python();
    let chromium = std::env::var("SLUICE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let available = importable(&python, "playwright.sync_api").and_then(|()| {
        std::path::Path::new(&chromium)
            .exists()
            .then_some(())
            .ok_or_else(|| format!("no Chromium at `{chromium}` (set SLUICE_CHROMIUM)"))
    });
    match available {
        Ok(()) => Some((python, chromium)),
        Err(why) => {
            assert!(
                std::env::var("SLUICE_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "the browser test is required (SLUICE_REQUIRE_BROWSER=1) but cannot run: {why}; \
                 run ./test.sh, which installs Chromium and Playwright"
            );
            eprintln!("SKIPPED {script}: {why} (run ./test.sh, which installs them)");
            None
        }
    }
}

/// Where browser tests write their screenshots: `$SLUICE_SCREENSHOTS`, else
/// `target/console-screenshots` in the workspace.
pub fn screenshots_dir() -> String {
    std::env::var("SLUICE_SCREENSHOTS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/console-screenshots"
        )
        .into()
    })
}
