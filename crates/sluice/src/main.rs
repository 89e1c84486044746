//! The `sluice` binary: parses the command line and hands off to one module per subcommand.
// `alloc` calls into the allocator and the kernel; nothing else is unsafe.
#![deny(unsafe_code)]

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod alloc;
mod commands;
mod config_watch;
mod logging;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sluice: a fast, local-first AI gateway with an OpenAI-compatible API.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (or, with --check, validate a config and exit).
    Serve(commands::serve::ServeArgs),
    /// The response cache: stats, clear, warm.
    Cache(commands::cache::CacheArgs),
    /// Cost tools: simulate a routing config on recorded traffic.
    Cost(commands::cost::CostArgs),
    /// Virtual keys: create, list, show, update, revoke.
    Keys(commands::keys::KeysArgs),
    /// The spend log: reports by key, model, provider, route or day.
    Spend(commands::spend::SpendArgs),
    /// Local models: what is configured and found on disk, and what a running gateway holds.
    Models(commands::models::ModelsArgs),
}

fn main() -> ExitCode {
    alloc::init();
    let cli = Cli::parse();
    logging::init();
    let result = match cli.command {
        Command::Serve(args) => commands::serve::run(args),
        Command::Cache(args) => commands::cache::run(args),
        Command::Cost(args) => commands::cost::run(args),
        Command::Keys(args) => commands::keys::run(args),
        Command::Spend(args) => commands::spend::run(args),
        Command::Models(args) => commands::models::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
