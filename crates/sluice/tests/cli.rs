//! The `sluice` binary: `serve --check`, and a real process that drains on SIGTERM.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.env_remove("SLUICE_CONFIG").env("SLUICE_LOG", "info");
    c
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "/tmp/sluice-cli-data"
[[providers]]
name = "openai"
type = "openai"
api_key = "sk-x"
[[models]]
name = "gpt-4o-mini"
provider = "openai"
price = { input = 0.15, output = 0.60 }
"#;

#[test]
fn check_accepts_a_valid_config() {
    let path = write_config("good.toml", GOOD);
    let out = sluice()
        .args(["serve", "--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK: 1 provider(s), 1 model(s)"));
}

#[test]
fn check_names_the_bad_key_and_why() {
    let cases = [
        (
            GOOD.replace("listen =", "listn ="),
            "server.listn",
            "unknown field",
        ),
        (
            GOOD.replace("provider = \"openai\"", "provider = \"azure\""),
            "models[0].provider",
            "no provider named `azure`",
        ),
        (
            GOOD.replace(
                "api_key = \"sk-x\"",
                "api_key = \"env::SLUICE_TEST_UNSET_VAR\"",
            ),
            "providers[0].api_key",
            "SLUICE_TEST_UNSET_VAR",
        ),
        (
            GOOD.replace("type = \"openai\"", "type = \"carrier-pigeon\""),
            "providers[0].type",
            "unknown variant",
        ),
    ];
    for (i, (text, key, why)) in cases.iter().enumerate() {
        let path = write_config(&format!("bad{i}.toml"), text);
        let out = sluice()
            .args(["serve", "--check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(key) && err.contains(why),
            "want {key} / {why} in: {err}"
        );
    }
    let out = sluice()
        .args(["serve", "--check", "--config", "/nonexistent/sluice.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn without_a_config_providers_come_from_the_environment() {
    let out = sluice()
        .args(["serve", "--check"])
        .env("OPENAI_API_KEY", "sk-1")
        .env("GROQ_API_KEY", "gsk-1")
        .env("OLLAMA_HOST", "127.0.0.1:9")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two from the keys, and the `local` provider every such config has.
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 provider(s)"));
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let path = write_config("serve.toml", GOOD);
    let mut child = sluice()
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("sluice logs its address").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // It answers.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    for line in lines.by_ref() {
        rest.push_str(&line.unwrap());
        rest.push('\n');
    }
    let code = child.wait().unwrap();
    assert!(code.success(), "exit {code:?}: {rest}");
    assert!(
        rest.contains("shutting down") && rest.contains("sluice stopped"),
        "{rest}"
    );
}

#[test]
fn cost_simulate_reproduces_the_sample_and_projects_the_saving() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = sluice()
        .current_dir(root)
        .args([
            "cost",
            "simulate",
            "--log",
            "examples/traffic-sample.jsonl",
            "--config",
            "examples/cost-routing.toml",
        ])
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Replayed 100,000 requests"), "{text}");
    assert!(text.contains("Current monthly cost:   $117.88"), "{text}");
    let projected = text
        .lines()
        .find_map(|l| l.strip_prefix("Projected monthly cost: $"))
        .unwrap();
    let projected: f64 = projected.replace(',', "").parse().unwrap();
    assert!(projected < 117.88 * 0.9, "{text}");
    assert!(text.contains("gpt-4o -> gpt-4o-mini"), "{text}");
    // Per provider, side by side: OpenAI's share now is $87.50, Anthropic's $30.00.
    let openai = text.lines().find(|l| l.starts_with("openai")).unwrap();
    assert!(openai.contains("$87.50"), "{openai}");
    let anthropic = text.lines().find(|l| l.starts_with("anthropic")).unwrap();
    assert!(anthropic.contains("$30.00"), "{anthropic}");

    // A record the config cannot place is a clear error, with its line.
    let bad = write_config(
        "bad-traffic.jsonl",
        "{\"model\":\"gpt-5\",\"prompt_tokens\":1}\n",
    );
    let out = sluice()
        .current_dir(root)
        .args([
            "cost",
            "simulate",
            "--config",
            "examples/cost-routing.toml",
            "--log",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && err.contains("gpt-5"), "{err}");
}

/// `GET path` on `addr`, the response as text.
fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
    resp
}

#[test]
fn sighup_reloads_the_config_file_and_keeps_the_old_one_when_the_new_is_invalid() {
    let path = write_config("reload.toml", GOOD);
    let mut child = sluice()
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("sluice logs its address").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let hup = || {
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    assert!(!get(&addr, "/v1/models").contains("\"second\""));
    // A model added to the file is listed after SIGHUP, without a restart.
    let more = format!("{GOOD}\n[[models]]\nname = \"second\"\nprovider = \"openai\"\n");
    std::fs::write(&path, more).unwrap();
    hup();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !get(&addr, "/v1/models").contains("\"second\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "the reload never showed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // An invalid file is refused: the config before it keeps serving.
    std::fs::write(
        &path,
        GOOD.replace("provider = \"openai\"", "provider = \"nope\""),
    )
    .unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(500));
    let models = get(&addr, "/v1/models");
    assert!(
        models.contains("\"second\"") && models.contains("gpt-4o-mini"),
        "{models}"
    );
    let metrics = get(&addr, "/metrics");
    assert!(
        metrics.contains("sluice_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_config_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: String = lines.map_while(Result::ok).collect::<Vec<_>>().join("\n");
    assert!(child.wait().unwrap().success());
    assert!(
        rest.contains("config reloaded") && rest.contains("added [second]"),
        "{rest}"
    );
    assert!(
        rest.contains("config reload refused") && rest.contains("nope"),
        "{rest}"
    );
}

/// Writes `text` as Kubernetes updates a ConfigMap volume: into a new timestamped directory,
/// then swaps the `..data` symlink to it (`dir/sluice.toml` links to `..data/sluice.toml`).
fn configmap_update(dir: &std::path::Path, version: u32, text: &str) {
    let data = dir.join(format!("..2026_12_05_{version}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("sluice.toml"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("sluice.toml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/sluice.toml", &link).unwrap();
    }
}

#[test]
fn a_watched_config_reloads_when_its_configmap_is_updated() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let good = GOOD.replace("[server]\n", "[server]\nwatch_config_ms = 100\n");
    configmap_update(&dir, 1, &good);
    let mut child = sluice()
        .args(["serve", "--config"])
        .arg(dir.join("sluice.toml"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("sluice logs its address").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    assert!(!get(&addr, "/v1/models").contains("\"second\""));
    // A model added to the ConfigMap is listed without a signal or a call.
    let more = format!("{good}\n[[models]]\nname = \"second\"\nprovider = \"openai\"\n");
    configmap_update(&dir, 2, &more);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !get(&addr, "/v1/models").contains("\"second\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "the reload never showed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // An invalid update is refused once; the config before it keeps serving.
    configmap_update(
        &dir,
        3,
        &good.replace("provider = \"openai\"", "provider = \"nope\""),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !get(&addr, "/metrics").contains("sluice_config_reloads_total{result=\"failed\"} 1") {
        assert!(
            std::time::Instant::now() < deadline,
            "the refusal never showed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let models = get(&addr, "/v1/models");
    assert!(models.contains("\"second\""), "{models}");
    let metrics = get(&addr, "/metrics");
    assert!(
        metrics.contains("sluice_config_reloads_total{result=\"ok\"} 1")
            && metrics.contains("sluice_config_reloads_total{result=\"failed\"} 1"),
        "refused once, not at every tick: {metrics}"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: String = lines.map_while(Result::ok).collect::<Vec<_>>().join("\n");
    assert!(child.wait().unwrap().success());
    assert!(rest.contains("config file changed"), "{rest}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `method path` on `addr` with the admin key `key` and a JSON `body`: the response's body.
fn admin_call(addr: &str, method: &str, path: &str, key: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    resp.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// Without Redis a canary's state is kept in the data directory: a rollback made just
/// before a SIGTERM (written at shutdown, not only by the next once-a-second round) is still
/// in force after the restart.
#[test]
fn a_canary_rolled_back_just_before_sigterm_stays_rolled_back_after_a_restart() {
    let dir = common::temp_dir("canary");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "sk-admin"
[storage]
data_dir = "{}"
[[providers]]
name = "openai"
type = "openai"
api_key = "sk-x"
[[models]]
name = "a"
provider = "openai"
[[models]]
name = "b"
provider = "openai"
[[routes]]
name = "r"
targets = ["a", "b"]
canary = {{ target = "b", stages = [10, 50, 100] }}
"#,
        dir.display()
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    let percent = |s: &common::Serving| {
        let routes = admin_call(&s.addr, "GET", "/admin/routes", "sk-admin", "");
        let v: serde_json::Value = serde_json::from_str(&routes).unwrap();
        v["routes"][0]["canary"]["percent"].as_f64().unwrap()
    };
    let s = common::Serving::start(&path);
    assert_eq!(percent(&s), 10.0);
    let rollback = r#"{"action":"rollback"}"#;
    admin_call(
        &s.addr,
        "POST",
        "/admin/routes/r/canary",
        "sk-admin",
        rollback,
    );
    assert!(s.stop());
    let s = common::Serving::start(&path);
    assert_eq!(percent(&s), 0.0, "the rollback outlived the restart");
    assert!(s.stop());
}
