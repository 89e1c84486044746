//! Observability through the real binary and the files in `deploy/`: JSON logs carry each
//! request's id on every line; the Prometheus alerts pass `promtool` (rules and unit tests);
//! the alerts and the Grafana dashboard name only metrics sluice exports (the list in
//! `deploy/prometheus/metrics.txt`, which the README's table and a running gateway's
//! `/metrics` are checked against).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{temp_dir, Serving};
use serde_json::{json, Value};
use sluice_testkit::client::{get, post_json, post_stream};
use sluice_testkit::FakeUpstream;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn config(dir: &Path, upstream: &str, server_extra: &str) -> PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "sk-admin"
{server_extra}
[storage]
data_dir = "{dir}"
[cache]
enabled = true
[routing]
retry = {{ attempts = 1 }}
breaker = {{ consecutive_failures = 1, cooldown_ms = 60000 }}
[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
[[models]]
name = "m"
provider = "fake"
price = {{ input = 1.0, output = 2.0 }}
[[models]]
name = "flaky"
provider = "fake"
upstream = "m"
[[routes]]
name = "auto"
targets = ["flaky", "m"]
"#,
        dir = dir.display()
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const ADMIN: (&str, &str) = ("authorization", "Bearer sk-admin");

/// The lines logged since `from` (a length of the log).
fn lines_since(s: &Serving, from: usize) -> Vec<String> {
    let log = s.log.lock().unwrap();
    log[from..].lines().map(str::to_string).collect()
}

fn log_len(s: &Serving) -> usize {
    s.log.lock().unwrap().len()
}

/// Every line `lines` parsed, failing on the first that is not a JSON object.
fn parsed(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

#[tokio::test]
async fn json_logs_carry_the_request_id_on_every_line_of_a_request() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir("json-logs");
    let cfg = config(&dir, &fake.base_url(), "log_format = \"json\"");
    // sluice's own debug lines (a request's end); libraries' (hyper-util's connection pool,
    // on connection tasks of its own) stay at info.
    let gw = Serving::start_with(&cfg, &[("SLUICE_LOG", "info,sluice_server=debug")]);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A request whose first target fails: its breaker opens (a warning), the route falls
    // back, the request ends (a debug line): every line logged meanwhile is this request's.
    let from = log_len(&gw);
    fake.push(sluice_testkit::Behavior::new().with_status(500));
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        &[ADMIN, ("x-request-id", "abc")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = parsed(&lines_since(&gw, from));
    assert!(lines.len() >= 2, "{lines:?}");
    for l in &lines {
        assert_eq!(l["request_id"], "abc", "{l}");
        for key in ["timestamp", "level", "target", "message"] {
            assert!(l[key].is_string(), "{key} in {l}");
        }
    }
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(messages.contains(&"circuit breaker opened"), "{messages:?}");
    assert!(messages.contains(&"request finished"), "{messages:?}");

    // A stream ends after its handler returned: its last line still carries its id.
    let from = log_len(&gw);
    let mut s = post_stream(
        &gw.url("/v1/chat/completions"),
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "yo"}]})
            .to_string(),
        &[ADMIN, ("x-request-id", "def")],
    )
    .await
    .unwrap();
    let (events, err) = s.collect_events().await;
    assert!(err.is_none() && events.last().is_some_and(|e| e == "[DONE]"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = parsed(&lines_since(&gw, from));
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "request finished" && l["request_id"] == "def"),
        "{lines:?}"
    );
    for l in &lines {
        assert_eq!(l["request_id"], "def", "{l}");
    }

    // Every line the gateway wrote, start and stop included, is JSON.
    let log = std::sync::Arc::clone(&gw.log);
    assert!(gw.stop());
    let all: Vec<String> = log.lock().unwrap().lines().map(str::to_string).collect();
    let all = parsed(&all);
    assert!(
        all.iter().any(|l| l["message"] == "sluice listening"),
        "{all:?}"
    );
}

/// `promtool`, from `PATH`; `None` (the test is skipped) unless the suite requires it.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_PROMTOOL").is_none(),
            "promtool is not installed (Debian's `prometheus` package has it)"
        );
        eprintln!("skipped: promtool is not installed (./test.sh installs it)");
    }
    found
}

fn run_promtool(promtool: &Path, args: &[&str]) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(root().join("deploy/prometheus"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", promtool.display()));
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alerts_pass_promtool_and_each_fires_on_its_unit_test() {
    let Some(promtool) = promtool() else { return };
    run_promtool(&promtool, &["check", "rules", "alerts.yml"]);
    run_promtool(&promtool, &["test", "rules", "alerts_test.yml"]);
    // Each alert has a unit test that expects it to fire.
    let alerts = read("deploy/prometheus/alerts.yml");
    let tests = read("deploy/prometheus/alerts_test.yml");
    let names: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(names.len(), 9, "{names:?}");
    for name in names {
        assert!(
            tests.contains(&format!(
                "alertname: {name}\n        exp_alerts:\n          - "
            )),
            "no test expects {name} to fire"
        );
    }
}

/// `deploy/prometheus/metrics.txt`: every metric sluice exports, with its type.
fn exported() -> BTreeMap<String, String> {
    read("deploy/prometheus/metrics.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_string(), kind.trim().to_string())
        })
        .collect()
}

/// The `sluice_*` metric names in `text`, a histogram's series (`_bucket`, `_sum`,
/// `_count`) named by the histogram.
fn names_in(text: &str, known: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("sluice_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| known.get(*b).is_some_and(|k| k == "histogram"))
            .unwrap_or(name);
        names.insert(base.to_string());
        rest = &tail[end..];
    }
    names
}

/// Every `expr` of the dashboard's panels.
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_alerts_and_the_dashboard_name_only_exported_metrics() {
    let known = exported();
    let alerts = read("deploy/prometheus/alerts.yml");
    let alerts_tests = read("deploy/prometheus/alerts_test.yml");
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/sluice.json")).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 16, "{exprs:?}");
    for (what, text) in [
        ("alerts.yml", alerts),
        ("alerts_test.yml", alerts_tests),
        ("sluice.json", exprs.join("\n")),
    ] {
        let names = names_in(&text, &known);
        assert!(!names.is_empty(), "{what}");
        let unknown: Vec<&String> = names.iter().filter(|n| !known.contains_key(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{what} names {unknown:?}, which sluice does not export"
        );
    }
    // The dashboard covers what it is for.
    let all = exprs.join("\n");
    for needle in [
        "sluice_requests_total",
        "histogram_quantile(0.5, sum by (provider, le) (rate(sluice_request_duration_seconds_bucket",
        "histogram_quantile(0.95, sum by (provider, le) (rate(sluice_request_duration_seconds_bucket",
        "sluice_tokens_total",
        "sluice_spend_usd_total",
        "sluice_cache_hits_total",
        "sluice_breaker_state",
        "sluice_local_memory_used_bytes",
        "sluice_local_memory_budget_bytes",
        "sluice_local_model_load_duration_seconds_bucket",
        "sluice_local_queue_depth",
    ] {
        assert!(all.contains(needle), "the dashboard lacks {needle}");
    }
}

#[test]
fn the_list_of_metrics_is_the_readmes_table() {
    let known = exported();
    let readme = read("README.md");
    let table = readme
        .split("### Metrics (`GET /metrics`)")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap();
    let in_table: BTreeSet<String> = table
        .lines()
        .filter(|l| l.starts_with("| `sluice_"))
        .flat_map(|l| names_in(l.split('|').nth(1).unwrap(), &known))
        .collect();
    let listed: BTreeSet<String> = known.keys().cloned().collect();
    assert_eq!(
        in_table, listed,
        "README's table and deploy/prometheus/metrics.txt differ"
    );
}

#[tokio::test]
async fn every_series_a_gateway_exports_is_in_the_list_with_its_type() {
    let known = exported();
    let fake = FakeUpstream::start().await;
    let dir = temp_dir("metrics-list");
    let gw = Serving::start(&config(&dir, &fake.base_url(), ""));
    for model in ["m", "auto"] {
        let r = post_json(
            &gw.url("/v1/chat/completions"),
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
            &[ADMIN],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
    }
    let text = get(&gw.url("/metrics")).await.unwrap().text();
    let mut seen = 0;
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line["# TYPE ".len()..].split(' ');
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        assert_eq!(known.get(name).map(String::as_str), Some(kind), "{line}");
        seen += 1;
    }
    assert!(seen >= 30, "{text}");
    assert!(gw.stop());
}
