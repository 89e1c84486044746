//! The web console (`/ui`): its files and their headers over loopback, the admin calls it
//! makes, and a real browser (Debian's Chromium, driven by Playwright for Python) signing in
//! and using it against a gateway in front of the fake upstream.
//!
//! The browser test runs `tests/browser/test_console.py`; without Playwright or Chromium it
//! is skipped, unless `SLUICE_REQUIRE_BROWSER=1` (set by `./test.sh`, which installs both).
//! Its screenshots go to `$SLUICE_SCREENSHOTS` (default `target/console-screenshots`).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::script::{browser, run_script, screenshots_dir};
use common::{start_reloadable, start_with, Gateway};
use http::Method;
use serde_json::{json, Value};
use sluice_testkit::client::{TestClient, TestResponse};
use sluice_testkit::FakeUpstream;
use std::path::PathBuf;
use std::time::Duration;

const MASTER: &str = "sk-console-master-0123456789";
/// The master key the browser test's config reload changes it to.
const NEXT_MASTER: &str = "sk-console-master-rotated-9876543210";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/test_console.py");

fn data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-console-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway with a master key, the SQLite ledger, the cache, models `m` and `c` (priced)
/// and route `r` to `m` with `c` as its canary.
async fn gateway() -> (FakeUpstream, Gateway) {
    let fake = FakeUpstream::start().await;
    let gw = start_with(&config(&fake)).await;
    (fake, gw)
}

/// [`gateway`]'s config (a new data directory each time).
fn config(fake: &FakeUpstream) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "{MASTER}"
[storage]
data_dir = "{dir}"
[cache]
enabled = true
[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
[[models]]
name = "m"
provider = "fake"
price = {{ input = 1.0, output = 2.0 }}
[[models]]
name = "c"
provider = "fake"
price = {{ input = 1.0, output = 2.0 }}
[[routes]]
name = "r"
targets = ["m"]
canary = {{ target = "c", stages = [10, 50, 100], max_error_rate = 0.5, min_requests = 100, window_ms = 60000 }}
[observability]
sample_rate = 1.0
"#,
        dir = data_dir().display(),
        upstream = fake.base_url(),
    )
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> TestResponse {
    TestClient::new()
        .request(Method::GET, &gw.url(path), bytes::Bytes::new(), headers)
        .await
        .expect("request")
}

async fn send(gw: &Gateway, method: Method, path: &str, body: &str) -> TestResponse {
    let auth = format!("Bearer {MASTER}");
    TestClient::new()
        .request(
            method,
            &gw.url(path),
            bytes::Bytes::from(body.to_string()),
            &[("authorization", &auth)],
        )
        .await
        .expect("request")
}

/// The headers every answer under `/ui` carries.
fn assert_secured(r: &TestResponse) {
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("set-cookie"), None);
}

#[tokio::test]
async fn the_page_is_served_without_data_and_with_its_security_headers() {
    let (_fake, gw) = gateway().await;
    for path in ["/ui", "/ui/"] {
        let r = get(&gw, path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_secured(&r);
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        let page = r.text();
        assert!(page.contains(r#"<form id="login""#), "{page}");
        // No data in the page: no key, no model, no route, no inline script.
        for absent in [MASTER, "\"m\"", "canary", "<script>"] {
            assert!(!page.contains(absent), "{absent} in {page}");
        }
    }
    let r = get(&gw, "/ui/app.js", &[]).await;
    assert_eq!(r.status, 200);
    assert_secured(&r);
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        get(&gw, "/ui/style.css", &[]).await.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    let r = get(&gw, "/ui/nope.js", &[]).await;
    assert_eq!(r.status, 404);
    assert_secured(&r);
    assert_eq!(r.json()["error"]["type"], "not_found_error", "{}", r.text());
    let r = send(&gw, Method::POST, "/ui", "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn files_are_revalidated_by_etag_and_the_vendored_bundle_is_cached_for_good() {
    let (_fake, gw) = gateway().await;
    let r = get(&gw, "/ui/app.js", &[]).await;
    let etag = r.header("etag").expect("an etag").to_string();
    let again = get(&gw, "/ui/app.js", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_secured(&again);
    let other = get(&gw, "/ui/app.js", &[("if-none-match", "\"0\"")]).await;
    assert_eq!(other.status, 200);
    let r = get(&gw, "/ui/vendor/uplot-1.6.32/uPlot.iife.min.js", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let license = get(&gw, "/ui/vendor/uplot-1.6.32/LICENSE", &[]).await;
    assert!(license.text().contains("MIT License"), "{}", license.text());
}

/// Every file the page and its modules name (`src=`, `href=`, `from './x.js'`) is served:
/// a file left out of the binary's list fails here, not in a browser.
#[tokio::test]
async fn every_file_the_page_names_is_served() {
    let (_fake, gw) = gateway().await;
    let mut queue = vec!["/ui".to_string()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let r = get(&gw, &path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        let text = r.text();
        for (open, close) in [("src=\"", '"'), ("href=\"", '"'), ("from './", '\'')] {
            for part in text.split(open).skip(1) {
                let target = &part[..part.find(close).unwrap()];
                if let Some(rest) = target.strip_prefix("/ui/") {
                    queue.push(format!("/ui/{rest}"));
                } else if open.starts_with("from") {
                    queue.push(format!("/ui/{target}"));
                }
            }
        }
    }
    assert!(seen.len() >= 8, "{seen:?}");
}

#[tokio::test]
async fn spend_by_day_and_by_range_behind_the_master_key() {
    let (_fake, gw) = gateway().await;
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        let r = send(&gw, Method::POST, "/v1/chat/completions", &chat.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = get(&gw, "/admin/spend?by=day&since=30d", &[]).await;
    assert_eq!(r.status, 401);
    let r = send(&gw, Method::GET, "/admin/spend?by=day&since=30d", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = r.json();
    assert_eq!(v["by"], "day");
    assert_eq!(v["from_rollups"], true);
    let days = sluice_store::unix_now_ms() / sluice_store::ledger::DAY_MS;
    let (y, m, d) = sluice_store::ledger::civil_from_days(days as i64);
    let today = format!("{y:04}-{m:02}-{d:02}");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["group"], today.as_str());
    assert_eq!(rows[0]["requests"], 3);
    assert!(rows[0]["cost_usd"].as_f64().unwrap() > 0.0, "{v}");
    // A range of days: today alone has the three; a range ending yesterday has none.
    let path = format!("/admin/spend?by=model&from={today}&to={today}");
    let v = send(&gw, Method::GET, &path, "").await.json();
    assert_eq!(v["rows"][0]["group"], "m", "{v}");
    assert_eq!(v["rows"][0]["requests"], 3, "{v}");
    let (y, m, d) = sluice_store::ledger::civil_from_days(days as i64 - 1);
    let path = format!("/admin/spend?by=model&from={y:04}-{m:02}-{d:02}&to={y:04}-{m:02}-{d:02}");
    let v = send(&gw, Method::GET, &path, "").await.json();
    assert_eq!(v["rows"], json!([]), "{v}");
    let path = format!("/admin/spend?from={today}&to={y:04}-{m:02}-{d:02}");
    let r = send(&gw, Method::GET, &path, "").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("backwards"), "{}", r.text());
    let r = send(&gw, Method::GET, "/admin/spend?by=week", "").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("`day`"), "{}", r.text());
}

/// The overview's history (`/admin/history`): the minute in progress shows the requests
/// just served (latency quantiles, tokens, spend and the cache's hits included), behind the
/// master key; bad parameters are a 400 in the API's error shape.
#[tokio::test]
async fn the_history_counts_this_minute_behind_the_master_key() {
    let (_fake, gw) = gateway().await;
    // A miss, a hit and one the cache bypasses; then one the gateway refuses (no such model).
    for extra in [
        json!({"temperature": 0}),
        json!({"temperature": 0}),
        json!({}),
    ] {
        let mut chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        chat.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = send(&gw, Method::POST, "/v1/chat/completions", &chat.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let unknown = json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]});
    let r = send(
        &gw,
        Method::POST,
        "/v1/chat/completions",
        &unknown.to_string(),
    )
    .await;
    assert!(r.status >= 400, "{}", r.text());
    assert_eq!(get(&gw, "/admin/history", &[]).await.status, 401);

    let r = send(&gw, Method::GET, "/admin/history", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = r.json();
    assert_eq!(
        (v["minutes"].as_u64(), v["step_minutes"].as_u64()),
        (Some(1440), Some(1))
    );
    let points = v["points"].as_array().unwrap();
    // A new gateway: at most the minute it started in and the current one.
    assert!((1..=2).contains(&points.len()), "{v}");
    let now = points.last().unwrap();
    assert_eq!(now["partial"], true, "{v}");
    let sum = |k: &str| points.iter().map(|p| p[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("requests"), 4, "{v}");
    assert_eq!(sum("errors"), 1, "{v}");
    assert_eq!((sum("cache_hits"), sum("cache_lookups")), (1, 2), "{v}");
    assert!(sum("tokens_in") > 0 && sum("tokens_out") > 0, "{v}");
    let p95 = points
        .iter()
        .filter_map(|p| p["p95_seconds"].as_f64())
        .fold(0.0, f64::max);
    assert!(p95 > 0.0 && p95 < 10.0, "{v}");
    let p50 = now["p50_seconds"].as_f64().unwrap_or(0.0);
    assert!(p50 <= p95, "{v}");
    let spend: f64 = points
        .iter()
        .map(|p| p["spend_usd"].as_f64().unwrap())
        .sum();
    assert!(spend > 0.0, "{v}");
    let t = now["t"].as_u64().unwrap();
    let unix = sluice_store::unix_now_ms() / 1000;
    assert!(t % 60 == 0 && t <= unix && unix - t < 61, "{v}");

    // Steps merge minutes: one step of 60 holds everything (unless the hour just turned).
    let v: Value = send(&gw, Method::GET, "/admin/history?minutes=2&step=60", "")
        .await
        .json();
    let merged = v["points"].as_array().unwrap();
    assert!((1..=2).contains(&merged.len()), "{v}");
    assert_eq!(
        merged
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum::<u64>(),
        4
    );
    assert!(
        merged.iter().all(|p| p["t"].as_u64().unwrap() % 3600 == 0),
        "{v}"
    );

    for (query, param) in [
        ("minutes=0", "minutes"),
        ("minutes=1441", "minutes"),
        ("minutes=soon", "minutes"),
        ("step=0", "step"),
        ("step=61", "step"),
        ("since=1h", "query"),
        ("minutes=%zz", "minutes"),
    ] {
        let r = send(&gw, Method::GET, &format!("/admin/history?{query}"), "").await;
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["type"], "invalid_request_error", "{query}: {e}");
        assert_eq!(e["error"]["param"], param, "{query}: {e}");
    }
    let r = send(&gw, Method::POST, "/admin/history", "").await;
    assert_eq!(r.status, 405, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_signs_in_and_uses_the_console() {
    let Some((python, chromium)) = tokio::task::spawn_blocking(|| browser(SCRIPT))
        .await
        .unwrap()
    else {
        return;
    };
    // Its last check rotates the master key: a config reload reads the same config with
    // another key.
    let fake = FakeUpstream::start().await;
    let toml = config(&fake);
    let gw = start_reloadable(&toml, toml.replace(MASTER, NEXT_MASTER)).await;
    let base_url = gw.url("");
    let shots = screenshots_dir();
    let run = tokio::task::spawn_blocking(move || {
        run_script(
            &python,
            SCRIPT,
            &[
                ("SLUICE_BASE_URL", base_url.as_str()),
                ("SLUICE_MASTER_KEY", MASTER),
                ("SLUICE_NEXT_MASTER_KEY", NEXT_MASTER),
                ("SLUICE_CHROMIUM", chromium.as_str()),
                ("SLUICE_SCREENSHOTS", shots.as_str()),
            ],
            Duration::from_secs(180),
        )
    })
    .await
    .unwrap();
    run.assert_passed(SCRIPT);
}

/// Without the master key (none, or a wrong one) no admin call the console makes answers
/// data: each is a 401 in the API's error shape, and nothing changes.
#[tokio::test]
async fn every_admin_call_the_console_makes_needs_the_master_key() {
    let (_fake, gw) = gateway().await;
    let calls = [
        (Method::GET, "/admin/routes"),
        (Method::GET, "/admin/keys"),
        (Method::POST, "/admin/keys"),
        (Method::PATCH, "/admin/keys/someone"),
        (Method::DELETE, "/admin/keys/someone"),
        (Method::GET, "/admin/spend?by=day&since=30d"),
        (
            Method::GET,
            "/admin/spend?by=model&from=2026-12-01&to=2026-12-04",
        ),
        (Method::POST, "/admin/routes/r/canary"),
        (Method::GET, "/admin/cache"),
        (Method::DELETE, "/admin/cache"),
        (Method::POST, "/admin/local/models/m/load"),
        (Method::POST, "/admin/local/models/m/unload"),
        (Method::GET, "/admin/requests"),
        (Method::GET, "/admin/samples"),
        (Method::GET, "/admin/history"),
        (Method::GET, "/admin/history?minutes=60&step=5"),
        (Method::GET, "/admin/metrics"),
        (Method::GET, "/admin/health"),
    ];
    for auth in [
        None,
        Some("Bearer sk-wrong"),
        Some("sk-console-master-0123456789"),
    ] {
        for (method, path) in &calls {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
            let r = TestClient::new()
                .request(
                    method.clone(),
                    &gw.url(path),
                    bytes::Bytes::from_static(br#"{"action":"rollback","name":"x"}"#),
                    &headers,
                )
                .await
                .expect("request");
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}: {}", r.text());
            assert_eq!(r.json()["error"]["type"], "authentication_error", "{path}");
        }
    }
    // The canary did not move.
    let v = send(&gw, Method::GET, "/admin/routes", "").await.json();
    assert_eq!(v["routes"][0]["canary"]["rollbacks"], 0, "{v}");
}

/// Every admin endpoint reads its query strictly: a parameter it does not take (a
/// misspelt `form=` on the spend report, anything on an endpoint that takes none), one given
/// twice, or a value that is not one is a 400 in the admin API's error shape naming it, and
/// does nothing; the console's own calls still answer; without the key it stays a 401.
#[tokio::test]
async fn admin_query_parameters_are_strict() {
    let (_fake, gw) = gateway().await;
    let auth = format!("Bearer {MASTER}");
    let refused = [
        (
            Method::GET,
            "/admin/spend?form=2026-12-01",
            "`form`",
            "query",
        ),
        (
            Method::GET,
            "/admin/spend?by=day&since=30d&by=key",
            "`by`",
            "by",
        ),
        (
            Method::GET,
            "/admin/spend?from=2026-12-40",
            "`from`",
            "from",
        ),
        (Method::GET, "/admin/spend?since=%ZZ", "`since`", "since"),
        (
            Method::GET,
            "/admin/requests?colour=red",
            "`colour`",
            "query",
        ),
        (Method::GET, "/admin/requests?limit=0", "`limit`", "limit"),
        (
            Method::GET,
            "/admin/requests?status=teapot",
            "`status`",
            "status",
        ),
        (
            Method::GET,
            "/admin/samples?colour=red",
            "`colour`",
            "query",
        ),
        (Method::GET, "/admin/samples?limit=1000", "`limit`", "limit"),
        (Method::GET, "/admin/samples?cursor=5", "`cursor`", "cursor"),
        (Method::GET, "/admin/history?minute=60", "`minute`", "query"),
        (
            Method::GET,
            "/admin/history?minutes=0",
            "`minutes`",
            "minutes",
        ),
        (
            Method::GET,
            "/admin/history?step=5&step=6",
            "`step`",
            "step",
        ),
        (Method::GET, "/admin/routes?route=r", "`route`", "query"),
        (
            Method::POST,
            "/admin/routes/r/canary?action=promote",
            "`action`",
            "query",
        ),
        (Method::GET, "/admin/keys?limit=5", "`limit`", "query"),
        (Method::POST, "/admin/keys?name=x", "`name`", "query"),
        (Method::GET, "/admin/keys/someone?x=1", "`x`", "query"),
        (
            Method::DELETE,
            "/admin/keys/someone?force",
            "`force`",
            "query",
        ),
        (Method::GET, "/admin/cache?limit=5", "`limit`", "query"),
        (Method::DELETE, "/admin/cache?model=m", "`model`", "query"),
        (
            Method::GET,
            "/admin/metrics?format=json",
            "`format`",
            "query",
        ),
        (Method::GET, "/admin/health?verbose=1", "`verbose`", "query"),
        (
            Method::POST,
            "/admin/config/reload?dry_run=1",
            "`dry_run`",
            "query",
        ),
        (
            Method::POST,
            "/admin/local/models/m/load?now=1",
            "`now`",
            "query",
        ),
    ];
    for (method, path, names, param) in &refused {
        let r = TestClient::new()
            .request(
                method.clone(),
                &gw.url(path),
                bytes::Bytes::from_static(br#"{"action":"rollback"}"#),
                &[("authorization", &auth)],
            )
            .await
            .expect("request");
        assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["type"], "invalid_request_error", "{path}: {e}");
        assert_eq!(e["param"], *param, "{path}: {e}");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains(names), "{path}: {message}");
        // Without the master key, the same call is a 401 that says nothing of the query.
        let r = TestClient::new()
            .request(method.clone(), &gw.url(path), bytes::Bytes::new(), &[])
            .await
            .expect("request");
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text());
    }
    // Nothing was done: the canary did not move, no key was made or revoked.
    let v = send(&gw, Method::GET, "/admin/routes", "").await.json();
    assert_eq!(v["routes"][0]["canary"]["rollbacks"], 0, "{v}");
    let v = send(&gw, Method::GET, "/admin/keys", "").await.json();
    assert_eq!(v["data"], json!([]), "{v}");
    // A valid call with a parameter it does not take does nothing either: a key spec that
    // would make a key, the revocation of a key that exists.
    let r = send(&gw, Method::POST, "/admin/keys?x=1", r#"{"name": "made"}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let kept = send(&gw, Method::POST, "/admin/keys", r#"{"name": "kept"}"#).await;
    assert_eq!(kept.status, 201, "{}", kept.text());
    let id = kept.json()["id"].as_str().unwrap().to_string();
    let r = send(&gw, Method::DELETE, &format!("/admin/keys/{id}?force"), "").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let v = send(&gw, Method::GET, "/admin/keys", "").await.json();
    let keys = v["data"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{v}");
    assert_eq!(keys[0]["name"], "kept", "{v}");
    assert_eq!(keys[0]["status"], "active", "{v}");
    // The calls the console makes still answer.
    for path in [
        "/admin/spend?by=day&since=30d",
        "/admin/spend?by=model&from=2026-12-01&to=2026-12-04",
        "/admin/requests?status=&model=m&limit=20&cursor=",
        "/admin/samples?limit=1",
        "/admin/samples?request_id=req%201",
        "/admin/history?minutes=2",
        "/admin/routes",
        "/admin/routes?",
    ] {
        let r = get(&gw, path, &[("authorization", &auth)]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
}

/// Every data call in the console's scripts goes to `/admin/*` (behind the master key):
/// the metrics and the deployments' health through `/admin/metrics` and `/admin/health`,
/// never the public `/metrics` and `/health/detailed`.
#[tokio::test]
async fn the_console_reads_only_behind_the_master_key() {
    let ui = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    let mut calls = Vec::new();
    for entry in std::fs::read_dir(&ui).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "js") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, _) in text.match_indices("call(") {
                let rest = &text[i + "call(".len()..];
                if let Some(quoted) = rest.strip_prefix(['\'', '`', '"']) {
                    let end = quoted.find(['\'', '`', '"']).unwrap();
                    calls.push((path.clone(), quoted[..end].to_owned()));
                }
            }
        }
    }
    assert!(calls.len() >= 10, "{calls:?}");
    for (file, call) in &calls {
        assert!(call.starts_with("/admin/"), "{}: {call}", file.display());
    }
    let (_fake, gw) = gateway().await;
    let auth = format!("Bearer {MASTER}");
    let r = get(&gw, "/admin/metrics", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("sluice_requests_total"), "{}", r.text());
    let r = get(&gw, "/admin/health", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["providers"][0]["name"], "fake", "{}", r.text());
}

/// `server.public_status = false`: `/metrics` and `/health/detailed` need the master key;
/// `/health` and `/health/ready` (no data) stay open.
#[tokio::test]
async fn status_pages_can_be_put_behind_the_master_key() {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "{MASTER}"
public_status = false
"#
    );
    let gw = start_with(&toml).await;
    let auth = format!("Bearer {MASTER}");
    for path in ["/metrics", "/health/detailed"] {
        let r = get(&gw, path, &[]).await;
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "authentication_error");
        let r = get(&gw, path, &[("authorization", &auth)]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    for path in ["/health", "/health/ready"] {
        assert_eq!(get(&gw, path, &[]).await.status, 200, "{path}");
    }
    // Without a master key the setting would lock everyone out: refused at load.
    let e = sluice_core::config::Config::from_toml(
        "[server]\npublic_status = false\n",
        &sluice_core::env::MapEnv(Default::default()),
    )
    .unwrap_err();
    assert!(e.to_string().contains("server.public_status"), "{e}");
}
