//! Local models from the admin API and the console: load and unload.

use super::*;

const MASTER: &str = "sk-local-admin";

/// A gateway with the master key and one local model, `tiny`.
async fn admin_gateway(name: &str) -> common::Gateway {
    let path = model_file(name, TestArch::Llama);
    let dir = std::env::temp_dir().join(format!(
        "sluice-local-admin-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "{MASTER}"
[storage]
data_dir = "{dir}"
[[providers]]
name = "here"
type = "local"
[[models]]
name = "tiny"
provider = "here"
path = "{path}"
"#,
        dir = dir.display(),
        path = path.display(),
    );
    start_with(&toml).await
}

/// An operator loads and unloads a local model through the admin API (what the console's
/// local models page calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_loads_and_unloads_a_local_model() {
    use http::Method;
    use sluice_testkit::client::TestClient;
    let gw = admin_gateway("admin").await;
    let call = |method: Method, path: &str, key: Option<&str>| {
        let url = gw.url(path);
        let auth = key.map(|k| format!("Bearer {k}"));
        async move {
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            TestClient::new()
                .request(method, &url, bytes::Bytes::new(), &headers)
                .await
                .unwrap()
        }
    };
    let key = Some(MASTER);
    let state = |health: &Value| health["local"]["models"][0]["state"].clone();
    let health = || call(Method::GET, "/health/detailed", None);
    assert_eq!(state(&health().await.json()), "unloaded");

    let r = call(Method::POST, "/admin/local/models/tiny/load", None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = call(Method::POST, "/admin/local/models/tiny/load", key).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "loaded");
    assert_eq!(state(&health().await.json()), "loaded");

    let r = call(Method::POST, "/admin/local/models/tiny/unload", key).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["freed_bytes"].as_u64().unwrap() > 0,
        "{}",
        r.text()
    );
    let h = health().await.json();
    assert_eq!(state(&h), "unloaded");
    assert_eq!(h["local"]["memory_used"], 0, "{h}");
    let metrics = call(Method::GET, "/metrics", None).await.text();
    let line = r#"sluice_local_model_evictions_total{model="tiny",reason="operator"} 1"#;
    assert!(metrics.contains(line), "{metrics}");

    let r = call(Method::POST, "/admin/local/models/tiny/unload", key).await;
    assert_eq!(r.json()["freed_bytes"], 0, "{}", r.text());
    let r = call(Method::POST, "/admin/local/models/nope/load", key).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = call(Method::POST, "/admin/local/models/tiny/reload", key).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = call(Method::GET, "/admin/local/models/tiny/load", key).await;
    assert_eq!(r.status, 405, "{}", r.text());
}

/// The console's local models page in a real browser: the pool, and `tiny` loaded and
/// unloaded with its buttons (`tests/browser/test_console_models.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_loads_and_unloads_a_local_model_in_the_console() {
    const SCRIPT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/browser/test_console_models.py"
    );
    let Some((python, chromium)) = tokio::task::spawn_blocking(|| common::script::browser(SCRIPT))
        .await
        .unwrap()
    else {
        return;
    };
    let gw = admin_gateway("browser").await;
    let base_url = gw.url("");
    let shots = common::script::screenshots_dir();
    let run = tokio::task::spawn_blocking(move || {
        common::script::run_script(
            &python,
            SCRIPT,
            &[
                ("SLUICE_BASE_URL", base_url.as_str()),
                ("SLUICE_MASTER_KEY", MASTER),
                ("SLUICE_CHROMIUM", chromium.as_str()),
                ("SLUICE_SCREENSHOTS", shots.as_str()),
            ],
            std::time::Duration::from_secs(180),
        )
    })
    .await
    .unwrap();
    run.assert_passed(SCRIPT);
}
