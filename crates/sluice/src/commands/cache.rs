//! `sluice cache stats|clear|warm`: the response cache from the command line.
//!
//! `stats` and `clear` open the config's cache store directly (the SQLite file in the data
//! directory, or Redis), so they work whether or not a gateway is running; `clear` also
//! asks a running gateway to drop its in-memory tier (`DELETE /admin/cache`, with the
//! master key). `warm` sends a JSONL file of requests through a running gateway.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_core::config::Config;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `sluice cache`.
#[derive(Debug, clap::Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    command: CacheCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CacheCommand {
    /// Entries, bytes, hit rate and USD saved, from the cache store.
    Stats(Target),
    /// Drop every entry (the store's, and a running gateway's in-memory tier).
    Clear(Target),
    /// Send a JSONL file of requests through a running gateway, so their answers are cached.
    Warm(WarmArgs),
}

/// Which gateway's cache.
#[derive(Debug, clap::Args)]
struct Target {
    /// Config file (TOML). Default: `$SLUICE_CONFIG`.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A running gateway (default: `http://` + `server.listen`).
    #[arg(long)]
    url: Option<String>,
}

#[derive(Debug, clap::Args)]
struct WarmArgs {
    /// JSONL file: one chat completions request body per line (or an embeddings body, with
    /// `input`); blank lines and lines starting with `#` are skipped.
    file: PathBuf,
    #[command(flatten)]
    target: Target,
    /// Requests sent at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Bearer key sent with each request (a virtual key, or the master key).
    #[arg(long, env = "SLUICE_API_KEY")]
    key: Option<String>,
}

fn load(target: &Target) -> anyhow::Result<Config> {
    let path = super::config_path(target.config.clone())
        .context("no config: pass --config FILE or set SLUICE_CONFIG")?;
    Config::from_file(&path, &sluice_core::env::ProcessEnv)
        .with_context(|| format!("invalid config `{}`", path.display()))
}

/// Runs `sluice cache ...`.
pub fn run(args: CacheArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match args.command {
            CacheCommand::Stats(t) => stats(&t).await,
            CacheCommand::Clear(t) => clear(&t).await,
            CacheCommand::Warm(w) => warm(w).await,
        }
    })
}

fn open(config: &Config) -> anyhow::Result<sluice_store::CacheStore> {
    sluice_store::open::cache_store(&config.storage, &config.cache)
        .context("cannot open the cache store")
}

fn store_name(config: &Config) -> String {
    match &config.storage.redis_url {
        Some(_) => format!("redis (prefix `{}`)", config.storage.redis_prefix),
        None => format!(
            "sqlite ({})",
            config
                .storage
                .data_dir
                .join(sluice_store::open::CACHE_FILE)
                .display()
        ),
    }
}

async fn stats(target: &Target) -> anyhow::Result<ExitCode> {
    let config = load(target)?;
    let store = open(&config)?;
    let s = store.stats().await.context("cannot read the cache store")?;
    let lookups = s.hits + s.misses;
    let rate = if lookups == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", s.hits as f64 * 100.0 / lookups as f64)
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "store       {}", store_name(&config))?;
    writeln!(out, "entries     {}", s.entries)?;
    writeln!(out, "bytes       {}", super::human_bytes(s.bytes))?;
    writeln!(out, "hits        {}", s.hits)?;
    writeln!(out, "misses      {}", s.misses)?;
    writeln!(out, "hit rate    {rate}")?;
    writeln!(out, "saved       ${:.6}", s.saved_nano_usd as f64 / 1e9)?;
    writeln!(
        out,
        "saved time  {:.1} s",
        Duration::from_millis(s.saved_ms).as_secs_f64()
    )?;
    Ok(ExitCode::SUCCESS)
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn clear(target: &Target) -> anyhow::Result<ExitCode> {
    let config = load(target)?;
    let store = open(&config)?;
    let removed = store
        .clear()
        .await
        .context("cannot clear the cache store")?;
    store.flush().await;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "removed {removed} entries from {}",
        store_name(&config)
    )?;
    // A running gateway keeps hits in memory too: ask it to drop them.
    let url = format!(
        "{}/admin/cache",
        super::base_url(target.url.as_deref(), &config)
    );
    let Some(key) = &config.server.master_key else {
        writeln!(
            out,
            "no `server.master_key`: a running gateway keeps its in-memory entries until they expire or it restarts"
        )?;
        return Ok(ExitCode::SUCCESS);
    };
    let req = http::Request::delete(&url)
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", key.expose()),
        )
        .body(Full::new(Bytes::new()))?;
    match tokio::time::timeout(Duration::from_secs(5), client().request(req)).await {
        Ok(Ok(r)) if r.status().is_success() => {
            writeln!(out, "the gateway at {url} dropped its in-memory entries")?;
        }
        Ok(Ok(r)) => writeln!(out, "the gateway at {url} answered {}", r.status())?,
        _ => writeln!(out, "no gateway answered at {url}")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Requests of a warm-up file.
fn read_requests(path: &Path) -> anyhow::Result<Vec<(&'static str, Bytes)>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read `{}`", path.display()))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("`{}` line {}: not JSON", path.display(), n + 1))?;
        let Some(obj) = v.as_object() else {
            bail!("`{}` line {}: not a JSON object", path.display(), n + 1);
        };
        let endpoint = if obj.contains_key("messages") {
            "/v1/chat/completions"
        } else if obj.contains_key("input") {
            "/v1/embeddings"
        } else {
            bail!(
                "`{}` line {}: neither `messages` (chat) nor `input` (embeddings)",
                path.display(),
                n + 1
            );
        };
        out.push((endpoint, Bytes::from(line.to_string())));
    }
    Ok(out)
}

#[derive(Default)]
struct Tally {
    done: AtomicU64,
    hit: AtomicU64,
    miss: AtomicU64,
    bypass: AtomicU64,
    failed: AtomicU64,
}

fn progress(t: &Tally, total: u64, out: &mut impl Write) {
    const WIDTH: u64 = 30;
    let done = t.done.load(Relaxed);
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    let _ = write!(
        out,
        "\r[{bar}] {done}/{total}  hit {} miss {} bypass {} failed {}",
        t.hit.load(Relaxed),
        t.miss.load(Relaxed),
        t.bypass.load(Relaxed),
        t.failed.load(Relaxed)
    );
    let _ = out.flush();
}

async fn warm(args: WarmArgs) -> anyhow::Result<ExitCode> {
    let config = load(&args.target)?;
    let base = super::base_url(args.target.url.as_deref(), &config);
    let requests = read_requests(&args.file)?;
    let total = requests.len() as u64;
    let key = args.key.or_else(|| {
        config
            .server
            .master_key
            .as_ref()
            .map(|k| k.expose().to_string())
    });
    let client = client();
    let tally = Arc::new(Tally::default());
    let queue = Arc::new(std::sync::Mutex::new(requests.into_iter()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, tally, queue, base, key) = (
            client.clone(),
            Arc::clone(&tally),
            Arc::clone(&queue),
            base.clone(),
            key.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let next = queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .next();
                let Some((path, body)) = next else { break };
                let mut req = http::Request::post(format!("{base}{path}"))
                    .header(http::header::CONTENT_TYPE, "application/json");
                if let Some(k) = &key {
                    req = req.header(http::header::AUTHORIZATION, format!("Bearer {k}"));
                }
                let outcome = match req.body(Full::new(body)) {
                    Ok(req) => client.request(req).await.ok(),
                    Err(_) => None,
                };
                let counter = match outcome {
                    Some(r) if r.status().is_success() => {
                        let status = r
                            .headers()
                            .get("x-sluice-cache")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("bypass")
                            .to_string();
                        // Read the whole answer: a stream is cached when it ends.
                        let _ = r.into_body().collect().await;
                        match status.as_str() {
                            "hit" => &tally.hit,
                            "miss" => &tally.miss,
                            _ => &tally.bypass,
                        }
                    }
                    _ => &tally.failed,
                };
                counter.fetch_add(1, Relaxed);
                tally.done.fetch_add(1, Relaxed);
            }
        }));
    }
    let mut err = std::io::stderr();
    let mut all = Box::pin(futures_join(workers));
    loop {
        tokio::select! {
            () = &mut all => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => progress(&tally, total, &mut err),
        }
    }
    progress(&tally, total, &mut err);
    let _ = writeln!(err);
    let elapsed = started.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "warmed {total} requests in {elapsed:.1} s against {base}: {} newly cached (miss), {} already cached (hit), {} not cacheable (bypass), {} failed",
        tally.miss.load(Relaxed),
        tally.hit.load(Relaxed),
        tally.bypass.load(Relaxed),
        tally.failed.load(Relaxed)
    )?;
    Ok(if tally.failed.load(Relaxed) == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
