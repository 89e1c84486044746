//! One module per subcommand.

pub mod cache;
pub mod cost;
pub mod keys;
pub mod models;
pub mod serve;
pub mod spend;

use anyhow::Context;
use sluice_core::config::Config;
use sluice_core::env::{Env, ProcessEnv, SLUICE_CONFIG};
use std::path::PathBuf;

/// The process environment, with a placeholder for unset variables: commands that send
/// nothing upstream (a simulation, key management, reports) need no provider secrets.
pub struct LenientEnv;

impl Env for LenientEnv {
    fn get(&self, key: &str) -> Option<String> {
        Some(ProcessEnv.get(key).unwrap_or_else(|| "unset".to_string()))
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        ProcessEnv.with_prefix(prefix)
    }
}

/// The config of an offline command: `--config`, else `$SLUICE_CONFIG`, else the defaults
/// `sluice serve` runs with (data under `./.sluice`).
pub fn offline_config(arg: Option<PathBuf>) -> anyhow::Result<Config> {
    match config_path(arg) {
        Some(path) => Config::from_file(&path, &LenientEnv)
            .with_context(|| format!("invalid config `{}`", path.display())),
        None => Config::from_toml("", &LenientEnv).context("default config"),
    }
}

/// Opens the config's ledger (keys and spend log).
pub fn open_ledger(config: &Config) -> anyhow::Result<sluice_store::Ledger> {
    std::fs::create_dir_all(&config.storage.data_dir).with_context(|| {
        format!(
            "cannot create data directory `{}`",
            config.storage.data_dir.display()
        )
    })?;
    sluice_store::open::ledger(&config.storage, &config.spend)
        .context("cannot open the key store and spend log")
}

/// A current-thread runtime for a command's I/O.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
/// The config file: `--config`, else `$SLUICE_CONFIG`.
pub fn config_path(arg: Option<PathBuf>) -> Option<PathBuf> {
    arg.or_else(|| ProcessEnv.get(SLUICE_CONFIG).map(PathBuf::from))
}

/// `n` bytes in binary units (`1.5 GiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A running gateway's base URL: `url`, else `http://` + `server.listen` (loopback when it
/// listens on every address).
pub fn base_url(url: Option<&str>, config: &Config) -> String {
    match url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let mut addr = config.server.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        }
    }
}
