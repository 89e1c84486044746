//! Helpers for tests that run the real `sluice` binary.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The binary under test: `SLUICE_BIN` (a release build, for `bench/soak.sh`), else cargo's.
pub fn sluice() -> Command {
    let bin = std::env::var_os("SLUICE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_sluice").into());
    let mut c = Command::new(bin);
    c.env_remove("SLUICE_CONFIG").env("SLUICE_LOG", "info");
    c
}

pub fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(&format!("sluice-cli-{name}")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh PostgreSQL schema for this test, and the URL that selects it.
pub fn postgres_schema(name: &str) -> (String, String) {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = unique(name).replace('-', "_");
    let out = std::process::Command::new("psql")
        .args([&base, "-X", "-q", "-c", &format!("CREATE SCHEMA {schema}")])
        .output()
        .expect("psql is installed (test.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sep = if base.contains('?') { '&' } else { '?' };
    (
        format!("{base}{sep}options=-csearch_path%3D{schema}"),
        schema,
    )
}

pub fn drop_schema(schema: &str) {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let _ = std::process::Command::new("psql")
        .args([
            &base,
            "-X",
            "-q",
            "-c",
            &format!("DROP SCHEMA {schema} CASCADE"),
        ])
        .output();
}

/// A running `sluice serve` and its address.
pub struct Serving {
    pub child: Child,
    pub addr: String,
    /// Everything it logged so far.
    pub log: Arc<Mutex<String>>,
}

impl Serving {
    pub fn start(config: &Path) -> Self {
        Self::start_with(config, &[])
    }

    /// Starts with extra environment variables.
    pub fn start_with(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = sluice()
            .args(["serve", "--threads", "2", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let addr = loop {
            let line = lines.next().expect("sluice logs its address").unwrap();
            log.lock().unwrap().push_str(&line);
            log.lock().unwrap().push('\n');
            // A text line (`addr=127.0.0.1:8080`) or a JSON one (`"addr":"127.0.0.1:8080"`).
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
            if let Some(rest) = line.split("\"addr\":\"").nth(1) {
                break rest.split('"').next().unwrap().to_string();
            }
        };
        // Keep reading so the child never blocks on a full pipe.
        let keep = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut l = keep.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Self { child, addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, then waits for the exit; returns whether it exited 0.
    pub fn stop(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().is_ok_and(|s| s.success())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
