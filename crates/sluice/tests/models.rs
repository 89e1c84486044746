//! `sluice models`: the local models of a config, and what a running gateway's pool holds.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{sluice, temp_dir, Serving};
use sluice_local::testing::minilm_dir;
use std::io::{Read, Write};

fn post(addr: &str, path: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn models_json(config: &std::path::Path, url: Option<&str>) -> serde_json::Value {
    let mut c = sluice();
    c.args(["models", "--json", "--config"]).arg(config);
    if let Some(u) = url {
        c.args(["--url", u]);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn models_lists_files_and_the_pool_of_a_running_gateway() {
    let dir = temp_dir("models");
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(minilm_dir(), models.join("all-MiniLM-L6-v2")).unwrap();
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[local]\nollama = false\n[[providers]]\nname = \"here\"\ntype = \"local\"\n",
            dir.display()
        ),
    )
    .unwrap();

    // Without a gateway: the files.
    let v = models_json(&config, Some("http://127.0.0.1:9"));
    assert!(v["gateway"].is_null(), "{v}");
    let m = &v["models"][0];
    assert_eq!(m["name"], "all-MiniLM-L6-v2", "{v}");
    assert_eq!(m["kind"], "embedding");
    assert_eq!(m["source"], "models_dir");
    assert!(m["size"].as_u64().unwrap() > 80 << 20);

    // With one, after a request loaded the model with its own keep-alive.
    let s = Serving::start(&config);
    let r = post(
        &s.addr,
        "/v1/embeddings",
        r#"{"model":"all-MiniLM-L6-v2","input":"hello","keep_alive":"1h"}"#,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let v = models_json(&config, Some(&s.url("")));
    assert_eq!(v["gateway"], s.url(""), "{v}");
    let pool = &v["models"][0]["pool"];
    assert_eq!(pool["state"], "loaded", "{v}");
    assert_eq!(pool["engine"], "native", "{v}");
    assert_eq!(pool["in_flight"], 0);
    assert!(pool["bytes_reserved"].as_u64().unwrap() > 80 << 20, "{v}");
    let unloads = pool["unloads_in_seconds"].as_u64().unwrap();
    assert!((3500..=3600).contains(&unloads), "{v}");
    assert!(v["memory_used"].as_u64().unwrap() >= pool["bytes_reserved"].as_u64().unwrap());
    assert!(s.stop());
}
