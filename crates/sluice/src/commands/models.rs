//! `sluice models`: the local models a gateway with this config serves (configured, in the
//! models directory, in Ollama's store), and, when a gateway is running, what its pool holds
//! now (state, bytes, in-flight requests, idle time, time to unload).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_core::config::{Config, ProviderType};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `sluice models`.
#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    /// Config file (TOML). Default: `$SLUICE_CONFIG`, else the defaults `sluice serve` uses.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A running gateway to ask for the pool's state (default: `http://` + `server.listen`).
    #[arg(long)]
    url: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

struct Row {
    name: String,
    kind: &'static str,
    source: &'static str,
    size: u64,
    path: PathBuf,
}

fn rows(config: &Config) -> Vec<Row> {
    let mut rows = Vec::new();
    for m in &config.models {
        let (Some(l), ProviderType::Local) = (&m.local, config.providers[m.provider].kind) else {
            continue;
        };
        rows.push(Row {
            name: m.upstream.clone(),
            kind: if l.path.is_dir() { "embedding" } else { "chat" },
            source: "config",
            size: model_size(&l.path),
            path: l.path.clone(),
        });
    }
    #[cfg(feature = "local")]
    for m in sluice_server::local::discover(config) {
        rows.push(Row {
            kind: kind(&m.path),
            source: match m.source {
                sluice_local::discovery::Source::Directory => "models_dir",
                sluice_local::discovery::Source::Ollama { .. } => "ollama",
            },
            size: m.size,
            name: m.name,
            path: m.path,
        });
    }
    rows
}

/// A directory is an embedding model, a file a GGUF chat model (as the pool decides).
#[cfg(feature = "local")]
fn kind(path: &std::path::Path) -> &'static str {
    sluice_local::ModelSpec::new("", path).kind.as_str()
}

fn model_size(path: &std::path::Path) -> u64 {
    let file = if path.is_dir() {
        path.join("model.safetensors")
    } else {
        path.to_path_buf()
    };
    std::fs::metadata(file).map_or(0, |m| m.len())
}

/// The pool's models by name, from a running gateway's `/health/detailed`.
async fn live(base: &str, config: &Config) -> Option<serde_json::Value> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::get(format!("{base}/health/detailed"));
    if let Some(key) = &config.server.master_key {
        req = req.header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", key.expose()),
        );
    }
    let req = req.body(Full::new(Bytes::new())).ok()?;
    let r = tokio::time::timeout(Duration::from_secs(2), client.request(req))
        .await
        .ok()?
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let body = r.into_body().collect().await.ok()?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    Some(v.get("local")?.clone())
}

fn seconds(v: &serde_json::Value) -> String {
    v.as_u64().map_or_else(
        || "-".to_owned(),
        |s| match s {
            0..=119 => format!("{s}s"),
            120..=7199 => format!("{}m", s / 60),
            _ => format!("{}h", s / 3600),
        },
    )
}

/// Runs `sluice models`.
pub fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    let config = super::offline_config(args.config)?;
    let rows = rows(&config);
    let base = super::base_url(args.url.as_deref(), &config);
    let live = super::runtime()?.block_on(live(&base, &config));
    let pool = |name: &str| -> Option<serde_json::Value> {
        live.as_ref()?
            .get("models")?
            .as_array()?
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let models: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "kind": r.kind,
                    "source": r.source,
                    "size": r.size,
                    "path": r.path,
                    "pool": pool(&r.name),
                })
            })
            .collect();
        let v = serde_json::json!({
            "gateway": live.as_ref().map(|_| &base),
            "memory_budget": live.as_ref().and_then(|l| l.get("memory_budget")),
            "memory_used": live.as_ref().and_then(|l| l.get("memory_used")),
            "models": models,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    match &live {
        Some(l) => writeln!(
            out,
            "gateway {base}: {} of {} in use",
            super::human_bytes(l["memory_used"].as_u64().unwrap_or(0)),
            super::human_bytes(l["memory_budget"].as_u64().unwrap_or(0)),
        )?,
        None => writeln!(out, "no gateway answered at {base}: showing files only")?,
    }
    if rows.is_empty() {
        writeln!(
            out,
            "no local models: add `[[models]] provider = \"<a type = \\\"local\\\" provider>\"` with a `path`, or put models in {}",
            config
                .local
                .models_dir
                .clone()
                .unwrap_or_else(|| config.storage.data_dir.join("models"))
                .display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    writeln!(
        out,
        "{:width$}  {:9}  {:10}  {:>9}  {:8}  {:6}  {:>9}  {:>4}  {:>5}  {:>7}  PATH",
        "NAME", "KIND", "SOURCE", "SIZE", "STATE", "ENGINE", "HELD", "BUSY", "IDLE", "UNLOADS"
    )?;
    for r in &rows {
        let p = pool(&r.name).unwrap_or_default();
        let state = p["state"].as_str().unwrap_or("-");
        let engine = p["engine"].as_str().unwrap_or("-");
        let held = p["bytes_reserved"]
            .as_u64()
            .filter(|&b| b > 0)
            .map_or_else(|| "-".to_owned(), super::human_bytes);
        let busy = p["in_flight"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        let unloads = if p["pinned"] == true {
            "pinned".to_owned()
        } else {
            seconds(&p["unloads_in_seconds"])
        };
        writeln!(
            out,
            "{:width$}  {:9}  {:10}  {:>9}  {:8}  {:6}  {:>9}  {:>4}  {:>5}  {:>7}  {}",
            r.name,
            r.kind,
            r.source,
            super::human_bytes(r.size),
            state,
            engine,
            held,
            busy,
            seconds(&p["idle_seconds"]),
            unloads,
            r.path.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_read_as_people_say_them() {
        assert_eq!(seconds(&serde_json::json!(5)), "5s");
        assert_eq!(seconds(&serde_json::json!(300)), "5m");
        assert_eq!(seconds(&serde_json::json!(7200)), "2h");
        assert_eq!(seconds(&serde_json::Value::Null), "-");
    }
}
