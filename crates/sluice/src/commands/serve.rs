//! `sluice serve`: load the config (file, or the environment), then serve until SIGINT or
//! SIGTERM, draining in-flight requests on the way out.

use anyhow::Context;
use sluice_core::config::Config;
use sluice_core::env::{Env, ProcessEnv, OLLAMA_HOST, SLUICE_CONFIG};
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `sluice serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config file (TOML). Default: `$SLUICE_CONFIG`; without either, providers come from
    /// API-key environment variables.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on; overrides `server.listen`.
    #[arg(long, short)]
    listen: Option<SocketAddr>,
    /// Validate the config and exit: 0 when valid, 1 with the bad key and why.
    #[arg(long)]
    check: bool,
    /// Worker threads, each with its own event loop and upstream pools (default: one per CPU core).
    #[arg(long)]
    threads: Option<usize>,
}

/// Where Ollama would answer, if it does: `OLLAMA_HOST` or `127.0.0.1:11434`.
fn probe_ollama(env: &dyn Env) -> Option<String> {
    let host = env
        .get(OLLAMA_HOST)
        .unwrap_or_else(|| "127.0.0.1:11434".to_string());
    let host = host
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let addr = host.to_socket_addrs().ok()?.next()?;
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    Some(format!("http://{host}/v1"))
}

/// A loaded config and, when it came from a file, the fingerprint of the text it was read
/// from (what the file watcher compares against).
struct Loaded {
    config: Config,
    file: Option<u64>,
}

fn load(args: &ServeArgs) -> anyhow::Result<Loaded> {
    let env = ProcessEnv;
    let (mut config, file) = match &config_path(args) {
        Some(p) => {
            let invalid = || format!("invalid config `{}`", p.display());
            let text = Config::read_file(p).with_context(invalid)?;
            let config = Config::from_toml(&text, &env).with_context(invalid)?;
            (
                config,
                Some(crate::config_watch::fingerprint(text.as_bytes())),
            )
        }
        None => (
            Config::from_env(&env, probe_ollama(&env)).context("invalid environment config")?,
            None,
        ),
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    Ok(Loaded { config, file })
}

/// Runs `sluice serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let Loaded { config, file } = load(&args)?;
    if args.check {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "config OK: {} provider(s), {} model(s), listening on {}",
            config.providers.len(),
            config.models.len(),
            config.server.listen
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::logging::set_format(config.server.log_format);
    let workers = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    // This thread accepts connections and handles signals; `workers` threads serve them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let providers = config.providers.len();
        let upstreams = config
            .providers
            .iter()
            .filter(|p| p.kind != sluice_core::config::ProviderType::Local)
            .count();
        let models = config.models.len();
        let server = sluice_server::Server::bind_with_workers(config, workers)
            .await?
            .release_memory_with(crate::alloc::release);
        reload_on_hangup(&server, args, file);
        let addr = server.local_addr()?;
        tracing::info!(%addr, providers, models, workers, "sluice listening");
        if upstreams == 0 {
            tracing::warn!("no upstream providers configured (local models only): pass --config FILE or set an API key such as OPENAI_API_KEY");
        }
        server.run_workers(shutdown_signal()).await?;
        tracing::info!("sluice stopped");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// Reloads the config from where it came (`--config`, `$SLUICE_CONFIG` or the environment)
/// on SIGHUP, on `POST /admin/config/reload` and, with `[server] watch_config_ms`, when the
/// file changed (from `loaded`, the fingerprint of the file's text the running config came from).
fn reload_on_hangup(server: &sluice_server::Server, args: ServeArgs, loaded: Option<u64>) {
    let live = server.live();
    watch_config(&live, &args, loaded);
    let hook = {
        let live = std::sync::Arc::clone(&live);
        move || match load(&args) {
            Ok(loaded) => live.reload(loaded.config).map_err(|e| e.to_string()),
            Err(e) => {
                let message = format!("{e:#}");
                live.refused(&message);
                Err(message)
            }
        }
    };
    let hook = sluice_server::state::reload::ReloadHook(Box::new(hook));
    let _ = live.get().reload_hook.set(hook);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            if let Some(reload) = live.get().reload_hook.get() {
                let _ = (reload.0)();
            }
        }
    });
}

/// Reloads the config file when its content changes, every `[server] watch_config_ms`.
fn watch_config(
    live: &std::sync::Arc<sluice_server::live::Live>,
    args: &ServeArgs,
    loaded: Option<u64>,
) {
    let Some(every) = live.get().server.watch_config else {
        return;
    };
    let Some(path) = config_path(args) else {
        tracing::warn!("server.watch_config_ms is set but the config comes from the environment: nothing to watch");
        return;
    };
    let live = std::sync::Arc::clone(live);
    crate::config_watch::spawn(path, every, loaded, move || {
        if let Some(reload) = live.get().reload_hook.get() {
            let _ = (reload.0)();
        }
    });
}

/// The config file `sluice serve` reads: `--config`, else `$SLUICE_CONFIG`.
fn config_path(args: &ServeArgs) -> Option<PathBuf> {
    args.config
        .clone()
        .or_else(|| ProcessEnv.get(SLUICE_CONFIG).map(PathBuf::from))
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}
