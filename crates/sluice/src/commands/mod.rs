//! One module per subcommand.

pub mod serve;

use sluice_core::env::SLUICE_LOG;
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
