//! A fleet: three `sluice serve` processes on one Redis and one PostgreSQL behind a real
//! load balancer (Debian's nginx, `proxy_next_upstream error timeout`), under steady load
//! from several clients (whole and streamed chat) against the fake upstream. Each replica is
//! restarted in turn, twice (SIGTERM, drain, start), and every replica reloads its config
//! (SIGHUP), with no client request failing; then a key's rpm and a key's budget hold exactly
//! across the replicas (no replica overspends the budget at its boundary), a canary rolled back on one replica is rolled back on every replica within 2 s, and the
//! spend log in PostgreSQL holds exactly one record per answered request.
//!
//! nginx: the test is skipped without it unless `SLUICE_REQUIRE_NGINX=1` (set by `./test.sh`,
//! which installs it).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{drop_schema, postgres_schema, temp_dir, unique, Serving};
use serde_json::{json, Value};
use sluice_testkit::client::{post_stream, TestClient};
use sluice_testkit::{Behavior, FakeUpstream};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MASTER: &str = "sk-admin";
const REPLICAS: usize = 3;

/// nginx's binary, if it is installed.
fn nginx_binary() -> Option<PathBuf> {
    ["nginx", "/usr/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|bin| {
            Command::new(bin)
                .arg("-v")
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// A port free now (the replicas listen on fixed ports: nginx names them, and a restarted
/// replica takes its port back).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx in front of the replicas, in the foreground, from a config of its own. A replica
/// that refuses a connection (stopped, not yet started again) costs a request nothing: nginx
/// sends it to the next replica (`proxy_next_upstream error`, before anything was sent).
/// `max_fails=0`: nginx does not take a replica out after a refusal (with its default, for
/// 10 s), which a rolling restart quicker than that would turn into "no live upstreams" for
/// a moment; the fleet test restarts every replica within a few seconds.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    fn start(bin: &Path, replicas: &[u16]) -> Self {
        let dir = temp_dir("nginx");
        // Its worker may run as another user: it writes its temporary files here.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let port = free_port();
        let servers: String = replicas
            .iter()
            .map(|p| format!("    server 127.0.0.1:{p} max_fails=0;\n"))
            .collect();
        let d = dir.display();
        let text = format!(
            r#"
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream sluice {{
{servers}  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://sluice;
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_next_upstream error timeout;
      proxy_next_upstream_tries {REPLICAS};
      proxy_connect_timeout 2s;
      proxy_read_timeout 30s;
    }}
  }}
}}
"#
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, text).unwrap();
        let child = Command::new(bin)
            .args(["-p"])
            .arg(&dir)
            .args(["-e"])
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen: {}", {
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            });
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// One replica's config file: it listens on `port`; `extra` is appended.
fn write_config(dir: &Path, port: u16, upstream: &str, storage: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
master_key = "{MASTER}"
shutdown_grace_ms = 10000
[storage]
data_dir = "{dir}"
{storage}
[limits]
# A loaded test machine can be slow to answer: the limits stay on Redis (past the timeout a
# replica would check them in process, as documented, and the rpm would not be exact).
redis_timeout_ms = 2000
[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
[[models]]
name = "m"
provider = "fake"
price = {{ input = 1.0, output = 2.0 }}
[[models]]
name = "m2"
provider = "fake"
price = {{ input = 1.0, output = 2.0 }}
[[routes]]
name = "r"
targets = ["m", "m2"]
canary = {{ target = "m2", stages = [50, 100] }}
{extra}
"#,
        dir = dir.display()
    );
    let path = dir.join("sluice.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

fn chat(stream: bool) -> String {
    json!({"model": "r", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// What the load's clients saw: the request ids answered, and every failure.
#[derive(Default)]
struct Tally {
    answered: Mutex<Vec<String>>,
    failed: Mutex<Vec<String>>,
}

/// One client: requests through nginx, one after the other, until `stop`; each with an
/// `x-request-id` of its own (sluice keeps it, so the spend log names it).
async fn client(
    url: String,
    key: String,
    id: usize,
    stream: bool,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let http = TestClient::new().with_timeout(Duration::from_secs(30));
    let auth = bearer(&key);
    let mut n = 0;
    while !stop.load(Relaxed) {
        n += 1;
        let rid = format!("fleet-{id}-{n}");
        let headers = [
            ("authorization", auth.as_str()),
            ("x-request-id", rid.as_str()),
        ];
        let outcome = if stream {
            match post_stream(&url, chat(true), &headers).await {
                Ok(mut s) if s.status == 200 => match s.collect_events().await {
                    (events, None) if events.last().map(String::as_str) == Some("[DONE]") => Ok(()),
                    (events, err) => Err(format!("stream ended early: {err:?} after {events:?}")),
                },
                Ok(mut s) => {
                    let status = s.status;
                    Err(format!("status {status}: {:?}", s.collect_body().await))
                }
                Err(e) => Err(format!("{e:?}")),
            }
        } else {
            match http.post_json(&url, chat(false), &headers).await {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("status {}: {}", r.status, r.text())),
                Err(e) => Err(format!("{e:?}")),
            }
        };
        match outcome {
            Ok(()) => tally.answered.lock().unwrap().push(rid),
            Err(why) => tally.failed.lock().unwrap().push(format!("{rid}: {why}")),
        }
    }
}

async fn admin(url: &str, body: Option<Value>) -> Value {
    let http = TestClient::new();
    let auth = bearer(MASTER);
    let headers = [("authorization", auth.as_str())];
    let r = match body {
        Some(b) => http.post_json(url, b.to_string(), &headers).await,
        None => {
            http.request(http::Method::GET, url, Default::default(), &headers)
                .await
        }
    }
    .unwrap();
    assert!(r.status < 300, "{url}: {} {}", r.status, r.text());
    r.json()
}

/// The canary's percentage on route `r` as `replica` reports it.
async fn canary_percent(replica: &Serving) -> f64 {
    let v = admin(&replica.url("/admin/routes"), None).await;
    let r = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "r")
        .unwrap()
        .clone();
    r["canary"]["percent"].as_f64().unwrap()
}

/// Runs `sql` on the test's schema; one line a row, columns split by `|`.
fn psql(database: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([database, "-X", "-q", "-tA", "-c", sql])
        .output()
        .expect("psql is installed (test.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The requests in flight when a replica began to shut down, from its log line.
fn in_flight_at_shutdown(log: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("shutting down"))
        .expect("the replica logs its shutdown");
    let n = line
        .split("in_flight=")
        .nth(1)
        .expect("in_flight in the line");
    n.split_whitespace().next().unwrap().parse().unwrap()
}

/// Starts the replica of `config` (blocking: it waits for the address in the log).
async fn start(config: PathBuf) -> Serving {
    tokio::task::spawn_blocking(move || Serving::start(&config))
        .await
        .unwrap()
}

/// SIGTERM, the drain, the exit; returns whether it exited 0.
async fn stop(replica: Serving) -> bool {
    tokio::task::spawn_blocking(move || replica.stop())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_behind_nginx_restarts_and_reloads_without_failing_a_request() {
    let Some(bin) = nginx_binary() else {
        assert!(
            std::env::var("SLUICE_REQUIRE_NGINX").is_err(),
            "SLUICE_REQUIRE_NGINX is set but nginx is not installed"
        );
        eprintln!("skipped: nginx is not installed (./test.sh installs it)");
        return;
    };
    let began = Instant::now();
    let fake = FakeUpstream::start().await;
    // Requests take a while, streams longer: a SIGTERM always finds some in flight.
    fake.set_default(Behavior::new().with_delay_ms(20).with_chunk_delay_ms(40));
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let (database, schema) = postgres_schema("sluice_fleet");
    let storage = format!(
        "redis_url = \"{redis}\"\nredis_prefix = \"{}:\"\ndatabase_url = \"{database}\"",
        unique("sluice-fleet")
    );
    let ports: Vec<u16> = (0..REPLICAS).map(|_| free_port()).collect();
    let dirs: Vec<PathBuf> = (0..REPLICAS)
        .map(|i| temp_dir(&format!("fleet-{i}")))
        .collect();
    let configs: Vec<PathBuf> = (0..REPLICAS)
        .map(|i| write_config(&dirs[i], ports[i], &fake.base_url(), &storage, ""))
        .collect();
    let mut replicas = Vec::new();
    for c in &configs {
        replicas.push(start(c.clone()).await);
    }
    let nginx = Nginx::start(&bin, &ports);
    let url = nginx.url("/v1/chat/completions");

    // Keys live in PostgreSQL: made on one replica, used through every one.
    let made = admin(
        &replicas[0].url("/admin/keys"),
        Some(json!({"name": "load"})),
    )
    .await;
    let load_key = made["key"].as_str().unwrap().to_string();
    let made = admin(
        &replicas[0].url("/admin/keys"),
        Some(json!({"name": "limited", "rpm": 20})),
    )
    .await;
    let limited_key = made["key"].as_str().unwrap().to_string();

    let stop_load = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(client(
                url.clone(),
                load_key.clone(),
                i,
                i % 4 == 0,
                Arc::clone(&stop_load),
                Arc::clone(&tally),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Each replica in turn, twice: SIGTERM (its requests in flight finish), then started
    // again on its port.
    let mut drained = 0;
    for _round in 0..2 {
        for (i, config) in configs.iter().enumerate() {
            let old = replicas.remove(i);
            let (pid, log) = (old.child.id(), Arc::clone(&old.log));
            assert!(stop(old).await, "replica {i} ({pid}) exits 0 after SIGTERM");
            drained += in_flight_at_shutdown(&log.lock().unwrap());
            replicas.insert(i, start(config.clone()).await);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    assert!(drained > 0, "no SIGTERM found a request in flight");

    // A reload on every replica: a model added to the file is served without a restart.
    for (i, c) in configs.iter().enumerate() {
        let extra = "[[models]]\nname = \"m3\"\nprovider = \"fake\"\n";
        write_config(&dirs[i], ports[i], &fake.base_url(), &storage, extra);
        assert_eq!(c, &dirs[i].join("sluice.toml"));
        let status = Command::new("kill")
            .args(["-HUP", &replicas[i].child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    for (i, replica) in replicas.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let models = admin(&replica.url("/v1/models"), None).await;
            let names: Vec<&str> = models["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|m| m["id"].as_str())
                .collect();
            if names.contains(&"m3") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {i} did not reload: {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // An rpm limit is exact over the fleet: 60 requests at once against rpm 20.
    let burst: Vec<_> = (0..60)
        .map(|_| {
            let (url, auth) = (url.clone(), bearer(&limited_key));
            tokio::spawn(async move {
                let r = TestClient::new()
                    .post_json(&url, chat(false), &[("authorization", &auth)])
                    .await
                    .unwrap();
                r.status
            })
        })
        .collect();
    let mut statuses = BTreeMap::new();
    for b in burst {
        *statuses.entry(b.await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        BTreeMap::from([(200, 20), (429, 40)]),
        "rpm 20 over the fleet"
    );

    // A budget is exact over the fleet: room for exactly 10 requests, 40 at once through
    // every replica; no replica overspends it.
    budget_holds_over_the_fleet(&url, &replicas[0]).await;

    // A canary rolled back on one replica is rolled back on every replica within 2 s.
    for replica in &replicas {
        assert_eq!(canary_percent(replica).await, 50.0);
    }
    let rolled_at = Instant::now();
    admin(
        &replicas[1].url("/admin/routes/r/canary"),
        Some(json!({"action": "rollback"})),
    )
    .await;
    for (i, replica) in replicas.iter().enumerate() {
        while canary_percent(replica).await != 0.0 {
            assert!(
                rolled_at.elapsed() < Duration::from_secs(2),
                "replica {i} still sends canary traffic"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    stop_load.store(true, Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    for (i, replica) in replicas.into_iter().enumerate() {
        assert!(stop(replica).await, "replica {i} exits 0");
    }
    let failed = tally.failed.lock().unwrap().clone();
    let answered = tally.answered.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} failed requests: {failed:#?}\nnginx: {}",
        failed.len(),
        nginx.log()
    );
    // nginx found the stopped replicas closed, and sent their requests elsewhere.
    let refused = nginx.log().matches("Connection refused").count();
    assert!(refused > 0, "{}", nginx.log());
    assert!(
        answered.len() > 100,
        "only {} requests answered",
        answered.len()
    );

    // The spend log: exactly one record per answered request, and none for another.
    let rows = psql(
        &database,
        "SELECT request_id, count(*) FROM spend_log WHERE key_name = 'load' GROUP BY request_id",
    );
    let mut recorded = BTreeSet::new();
    for line in rows.lines() {
        let (rid, n) = line.split_once('|').unwrap();
        assert_eq!(n, "1", "{rid} has {n} spend records");
        recorded.insert(rid.to_string());
    }
    let answered: BTreeSet<String> = answered.into_iter().collect();
    assert_eq!(
        recorded, answered,
        "spend records against answered requests"
    );
    let limited = psql(
        &database,
        "SELECT count(*) FROM spend_log WHERE key_name = 'limited' AND status = 200",
    );
    assert_eq!(limited.trim(), "20");
    let budget = psql(
        &database,
        "SELECT count(*) || '|' || coalesce(sum(cost_nano_usd), 0) FROM spend_log \
         WHERE key_name = 'budget' AND status = 200",
    );
    assert_eq!(
        budget.trim(),
        format!("10|{}", 10 * PER_REQUEST),
        "the budget's worth of answers, each at its price"
    );
    drop_schema(&schema);
    eprintln!(
        "fleet test: {} requests answered in {:?}; {drained} in flight at the SIGTERMs; \
         {refused} connections refused and sent elsewhere by nginx",
        recorded.len(),
        began.elapsed()
    );
}

/// Each budgeted request costs exactly its estimate: 5 prompt tokens (estimated from "hi") at
/// $1 and `max_tokens` 9 completion tokens at $2 per million = 23,000 nano-USD.
const PER_REQUEST: u64 = 5 * 1_000 + 9 * 2_000;

/// A chat request to `m` whose actual cost is its estimate ([`PER_REQUEST`]).
fn exact_chat() -> String {
    let mut b = Behavior::new();
    b.usage = Some(sluice_testkit::FakeUsage {
        prompt_tokens: 5,
        completion_tokens: 9,
        ..sluice_testkit::FakeUsage::default()
    });
    json!({
        "model": "m",
        "max_tokens": 9,
        "messages": [{"role": "user", "content": "hi"}],
        "x_fake": b.to_json(),
    })
    .to_string()
}

/// A key with room for exactly 10 requests (made on `replica`), sent 40 at once through the
/// load balancer at `url`: exactly 10 answered, 30 refused as `budget_exceeded`, and once
/// they settled the next request is refused too (the spend is the budget exactly).
async fn budget_holds_over_the_fleet(url: &str, replica: &Serving) {
    let budget_usd = (10 * PER_REQUEST) as f64 / 1e9;
    let made = admin(
        &replica.url("/admin/keys"),
        Some(json!({"name": "budget", "budget_usd": budget_usd})),
    )
    .await;
    let auth = bearer(made["key"].as_str().unwrap());
    let burst: Vec<_> = (0..40)
        .map(|_| {
            let (url, auth) = (url.to_string(), auth.clone());
            tokio::spawn(async move {
                let r = TestClient::new()
                    .post_json(&url, exact_chat(), &[("authorization", &auth)])
                    .await
                    .unwrap();
                let code = r.json()["error"]["code"].as_str().map(str::to_string);
                (
                    r.status,
                    code,
                    r.header("x-sluice-cost-usd").map(str::to_string),
                )
            })
        })
        .collect();
    let mut statuses = BTreeMap::new();
    for b in burst {
        let (status, code, cost) = b.await.unwrap();
        match status {
            200 => assert_eq!(cost.as_deref(), Some("0.000023")),
            429 => assert_eq!(code.as_deref(), Some("budget_exceeded")),
            _ => {}
        }
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        BTreeMap::from([(200, 10), (429, 30)]),
        "a budget of 10 requests over the fleet"
    );
    // Settled: the spend is the budget exactly, so the next request is refused on any
    // replica.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = TestClient::new()
        .post_json(url, exact_chat(), &[("authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
}

/// How long before a SIGKILL an answered request may have ended and still lack its spend
/// record: the ledger writer's flush interval (1 s), and time for the batch in flight on a
/// loaded machine.
const UNFLUSHED: Duration = Duration::from_millis(2500);

/// One request's fate, with when it began and ended.
struct Timed {
    rid: String,
    began: Instant,
    ended: Instant,
    outcome: Result<(), String>,
}

/// A client of streams (`stream`) or whole requests through nginx until `stop`, each timed.
async fn timed_client(
    url: String,
    key: String,
    id: usize,
    stream: bool,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Timed>>>,
) {
    let http = TestClient::new().with_timeout(Duration::from_secs(30));
    let auth = bearer(&key);
    let mut n = 0;
    while !stop.load(Relaxed) {
        n += 1;
        let rid = format!("kill-{id}-{n}");
        let headers = [
            ("authorization", auth.as_str()),
            ("x-request-id", rid.as_str()),
        ];
        let began = Instant::now();
        let outcome = if stream {
            match post_stream(&url, chat(true), &headers).await {
                Ok(mut s) if s.status == 200 => match s.collect_events().await {
                    (events, None) if events.last().map(String::as_str) == Some("[DONE]") => Ok(()),
                    (_, err) => Err(format!("stream ended early: {err:?}")),
                },
                Ok(s) => Err(format!("status {}", s.status)),
                Err(e) => Err(format!("{e:?}")),
            }
        } else {
            match http.post_json(&url, chat(false), &headers).await {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("status {}: {}", r.status, r.text())),
                Err(e) => Err(format!("{e:?}")),
            }
        };
        let ended = Instant::now();
        log.lock().unwrap().push(Timed {
            rid,
            began,
            ended,
            outcome,
        });
    }
}

/// A replica killed with SIGKILL in the middle of streams: only the requests it had in
/// flight fail (nginx cannot move a response it has begun to relay), every request begun
/// after the kill is answered by the other replicas, and the spend log misses only records
/// of requests answered within the writer's flush interval (1 s) before the kill: the
/// records the killed replica had queued but not yet written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_stream_loses_only_its_streams_and_unflushed_spend() {
    let Some(bin) = nginx_binary() else {
        assert!(
            std::env::var("SLUICE_REQUIRE_NGINX").is_err(),
            "SLUICE_REQUIRE_NGINX is set but nginx is not installed"
        );
        eprintln!("skipped: nginx is not installed (./test.sh installs it)");
        return;
    };
    let fake = FakeUpstream::start().await;
    // Streams of about a second: a kill always finds some in flight.
    fake.set_default(Behavior::new().with_delay_ms(10).with_chunk_delay_ms(150));
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let (database, schema) = postgres_schema("sluice_kill");
    let storage = format!(
        "redis_url = \"{redis}\"\nredis_prefix = \"{}:\"\ndatabase_url = \"{database}\"",
        unique("sluice-kill")
    );
    let ports: Vec<u16> = (0..REPLICAS).map(|_| free_port()).collect();
    let mut replicas = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let dir = temp_dir(&format!("kill-{i}"));
        let config = write_config(&dir, *port, &fake.base_url(), &storage, "");
        replicas.push(start(config).await);
    }
    let nginx = Nginx::start(&bin, &ports);
    let url = nginx.url("/v1/chat/completions");
    let made = admin(
        &replicas[0].url("/admin/keys"),
        Some(json!({"name": "load"})),
    )
    .await;
    let key = made["key"].as_str().unwrap().to_string();

    let stop_load = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..9)
        .map(|i| {
            let (url, key) = (url.clone(), key.clone());
            let (stop, log) = (Arc::clone(&stop_load), Arc::clone(&log));
            tokio::spawn(timed_client(url, key, i, i % 3 != 0, stop, log))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut killed = replicas.remove(1);
    let killed_at = Instant::now();
    killed.child.kill().unwrap(); // SIGKILL
    killed.child.wait().unwrap();
    // A request sent while the signal was on its way was in flight too.
    let dead_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop_load.store(true, Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    for (i, replica) in replicas.into_iter().enumerate() {
        assert!(stop(replica).await, "replica {i} exits 0");
    }

    let log = std::mem::take(&mut *log.lock().unwrap());
    let failed: Vec<&Timed> = log.iter().filter(|t| t.outcome.is_err()).collect();
    // Only requests in flight at the kill failed; every later one was answered.
    for t in &failed {
        assert!(
            t.began < dead_at && t.ended >= killed_at,
            "{} failed without being in flight at the kill (began {:?} after it, ended {:?} \
             after it, the kill took {:?}): {:?}",
            t.rid,
            t.began.saturating_duration_since(killed_at),
            t.ended.saturating_duration_since(killed_at),
            dead_at - killed_at,
            t.outcome
        );
    }
    assert!(!failed.is_empty(), "the kill found no request in flight");
    let after = log.iter().filter(|t| t.began > dead_at).count();
    assert!(after > 20, "only {after} requests after the kill");
    assert!(
        failed.len() <= 9,
        "more failures than clients: {}",
        failed.len()
    );

    // The spend log: one record per answered request, but for requests answered within the
    // flush interval before the kill (the killed replica's unwritten records); none for a
    // failed request.
    let rows = psql(
        &database,
        "SELECT request_id, count(*) FROM spend_log WHERE key_name = 'load' GROUP BY request_id",
    );
    let mut recorded = BTreeMap::new();
    for line in rows.lines() {
        let (rid, n) = line.split_once('|').unwrap();
        recorded.insert(rid.to_string(), n.to_string());
    }
    let (mut lost, mut oldest_lost) = (0, Duration::ZERO);
    for t in &log {
        match (&t.outcome, recorded.get(&t.rid)) {
            (Ok(()), Some(n)) => assert_eq!(n, "1", "{} has {n} records", t.rid),
            (Ok(()), None) => {
                lost += 1;
                oldest_lost = oldest_lost.max(killed_at.saturating_duration_since(t.ended));
                // Sent before the replica was dead, and answered at most the flush interval
                // before the kill: an answer the replica wrote just before it died can reach
                // the client (through nginx) after the kill began.
                assert!(
                    t.began < dead_at && killed_at.saturating_duration_since(t.ended) < UNFLUSHED,
                    "{} has no record: began {:?} after the replica was dead, answered {:?} \
                     before the kill",
                    t.rid,
                    t.began.saturating_duration_since(dead_at),
                    killed_at.saturating_duration_since(t.ended)
                );
            }
            (Err(_), _) => {}
        }
    }
    drop_schema(&schema);
    eprintln!(
        "kill test: {} requests, {} failed at the kill, {after} after it, {lost} spend records \
         lost (answered at most {oldest_lost:?} before the kill)",
        log.len(),
        failed.len()
    );
}
