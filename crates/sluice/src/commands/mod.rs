//! One module per subcommand.

pub mod cache;
pub mod cost;
pub mod serve;

use sluice_core::env::{Env, ProcessEnv, SLUICE_CONFIG, SLUICE_LOG};
use std::path::PathBuf;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Logs to stderr, filtered by `SLUICE_LOG` (default `info`).
pub fn init_logging() {
    let filter: Targets = std::env::var(SLUICE_LOG)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .try_init();
}

/// The config file: `--config`, else `$SLUICE_CONFIG`.
pub fn config_path(arg: Option<PathBuf>) -> Option<PathBuf> {
    arg.or_else(|| ProcessEnv.get(SLUICE_CONFIG).map(PathBuf::from))
}
