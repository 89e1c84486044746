//! Models sluice runs itself: a `type = "local"` provider's models are GGUF files served in
//! process by `sluice-local`, behind the model pool (memory budget, lazy single-flight loads,
//! LRU eviction, keep-alive). A request for one acquires a lease on the loaded model (loading
//! it first if need be), submits the chat to the model's bounded queue, and answers with an
//! OpenAI `chat.completion`, or streams `chat.completion.chunk` events as tokens come.
//!
//! When the model cannot take the request (its queue is full, or the memory it needs is held
//! by models in use, or it can never fit the budget) the answer is 503 `model_overloaded` with
//! `Retry-After`, which is retryable: a route falls back to its next target.

use serde_json::json;
use sluice_core::config::{Config, EmbedPrecision};
use sluice_core::{Error, ErrorKind};
use sluice_local::pool::{KeepAlive, LocalLoader, ModelKind, ModelSpec, Pool, PoolConfig};
use sluice_local::{BatchOptions, Engine, KvCacheType, LoadOptions, Weights};
use std::sync::Arc;
use std::time::Instant;

use super::metrics::LocalMetrics;

/// The local runtime of a gateway: one pool for every local model.
#[derive(Debug)]
pub struct LocalRuntime {
    /// The models, by their upstream name.
    pub pool: Pool<LocalLoader>,
    /// Their load times, evictions and queue waits.
    pub metrics: Arc<LocalMetrics>,
    /// Most choices (`n`) per chat request (`[local] max_n`).
    pub max_n: usize,
    /// Compiled JSON schemas (`response_format`, tools' parameters), kept across requests.
    pub grammars: sluice_local::GrammarCache,
}

fn config_error(message: String) -> Error {
    ErrorKind::Internal { message }.into()
}

/// Local models found on disk rather than configured: `[local] models_dir`, and Ollama's
/// store. Names already configured are left to the config; unsupported architectures are
/// passed over (and logged).
pub fn discover(config: &Config) -> Vec<sluice_local::discovery::DiscoveredModel> {
    use sluice_local::discovery;
    let configured: std::collections::HashSet<&str> =
        config.models.iter().map(|m| m.name.as_str()).collect();
    let mut found = Vec::new();
    let dir = config
        .local
        .models_dir
        .clone()
        .unwrap_or_else(|| config.storage.data_dir.join("models"));
    if dir.is_dir() {
        match discovery::scan_models_dir(&dir) {
            Ok(d) => found.push(d),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot scan the models directory")
            }
        }
    }
    if config.local.ollama {
        match discovery::ollama_models(config.local.ollama_dir.as_deref()) {
            Ok(d) => found.push(d),
            Err(e) => tracing::debug!(error = %e, "no Ollama models"),
        }
    }
    let mut models = Vec::new();
    let mut names = std::collections::HashSet::new();
    for d in found {
        for s in &d.skipped {
            tracing::debug!(path = %s.path.display(), reason = %s.reason, "local model passed over");
        }
        for m in d.models {
            if !m.is_supported() {
                tracing::info!(model = %m.name, architecture = ?m.architecture, "found a model of an architecture sluice cannot run yet");
                continue;
            }
            if configured.contains(m.name.as_str()) || !names.insert(m.name.clone()) {
                continue;
            }
            models.push(m);
        }
    }
    models
}

/// The runtime for the config's local models and the `found` ones, if there are any.
pub fn build(
    config: &Config,
    found: &[sluice_local::discovery::DiscoveredModel],
) -> Result<Option<LocalRuntime>, Error> {
    // Validated by the config loader; a default-built config has it empty.
    let engine = Engine::parse(&config.local.engine).unwrap_or_default();
    let device = sluice_local::DeviceKind::parse(&config.local.device).unwrap_or_default();
    let kv_cache = KvCacheType::parse(&config.local.kv_cache).unwrap_or_default();
    let weights = if config.local.mmap {
        Weights::Mapped
    } else {
        Weights::Read
    };
    let batch = BatchOptions {
        max_batch: config.local.max_batch,
        max_wait: config.local.max_wait,
        queue: config.local.embedding_queue,
    };
    let mut specs = Vec::new();
    for m in found {
        let mut spec = m.to_spec();
        spec.load.parallel = config.local.parallel;
        // Ollama's `num_ctx`, else `[local] context_length` (both capped at the file's).
        spec.load.context_length = spec
            .load
            .context_length
            .or(Some(config.local.context_length));
        spec.load.queue_capacity = config.local.queue;
        spec.load.engine = engine;
        spec.load.device = device;
        spec.load.kv_cache = kv_cache;
        spec.load.prompt_cache_slots = config.local.prompt_cache_slots;
        spec.load.weights = weights;
        spec.batch = batch;
        specs.push(spec);
    }
    for m in &config.models {
        let Some(l) = &m.local else { continue };
        let mut spec = ModelSpec::new(m.upstream.clone(), l.path.clone());
        spec.sha256.clone_from(&l.sha256);
        spec.keep_alive = match &l.keep_alive {
            Some(k) => Some(
                KeepAlive::parse(k)
                    .map_err(|e| config_error(format!("model `{}`: `keep_alive`: {e}", m.name)))?,
            ),
            None => None,
        };
        spec.pin = l.pin;
        spec.preload = l.preload;
        spec.load = LoadOptions {
            parallel: l.parallel,
            queue_capacity: config.local.queue,
            context_length: Some(context_length(m, l, config)?),
            engine,
            threads: None,
            device,
            kv_cache,
            prompt_cache_slots: config.local.prompt_cache_slots,
            weights,
        };
        spec.batch = batch;
        spec.precision = match l.embed_precision {
            EmbedPrecision::F32 => sluice_local::Precision::F32,
            EmbedPrecision::Int8 => sluice_local::Precision::Int8,
        };
        specs.push(spec);
    }
    if specs.is_empty() {
        return Ok(None);
    }
    set_chat_threads(config, &mut specs);
    let mut pool_config = PoolConfig {
        busy_wait: config.local.memory_wait,
        ..PoolConfig::default()
    };
    if let Some(b) = config.local.memory_budget {
        pool_config.memory_budget = b;
    } else if device.is_gpu() {
        // On a GPU the models' weights and caches are in its memory: the budget is a share of
        // that (Metal's is the machine's memory, the default already).
        match device.default_budget() {
            Some(b) => pool_config.memory_budget = b,
            None if device == sluice_local::DeviceKind::Metal => {}
            None => tracing::warn!(
                device = %device.name(),
                "cannot read the GPU's memory (nvidia-smi): the budget is a share of the machine's memory; set `[local] memory_budget`"
            ),
        }
    }
    if let Some(k) = &config.local.keep_alive {
        pool_config.keep_alive =
            KeepAlive::parse(k).map_err(|e| config_error(format!("`local.keep_alive`: {e}")))?;
    }
    tracing::info!(
        models = specs.len(),
        memory_budget = pool_config.memory_budget,
        "local model runtime"
    );
    let metrics = Arc::new(LocalMetrics::new(
        specs.iter().map(|s| (s.name.as_str(), s.kind)),
    ));
    let pool = Pool::new(LocalLoader, pool_config, specs);
    pool.set_events(Arc::clone(&metrics) as Arc<dyn sluice_local::pool::PoolEvents>);
    Ok(Some(LocalRuntime {
        pool,
        metrics,
        max_n: config.local.max_n,
        grammars: sluice_local::GrammarCache::new(),
    }))
}

/// A configured chat model's context length: its own, else `[local] context_length` (capped at
/// the file's when it loads). Its own above the file's limit is a config error; a file that
/// cannot be read now is left to its first load to report.
fn context_length(
    m: &sluice_core::config::ModelConfig,
    l: &sluice_core::config::LocalModelConfig,
    config: &Config,
) -> Result<usize, Error> {
    let Some(asked) = l.context_length else {
        return Ok(config.local.context_length);
    };
    if sluice_local::is_embedding_model(&l.path) {
        return Ok(asked);
    }
    match sluice_local::read_model_info(&l.path) {
        Ok(info) if asked > info.context_length => Err(config_error(format!(
            "model `{}`: `context_length` {asked} exceeds the file's context length {}",
            m.name, info.context_length
        ))),
        _ => Ok(asked),
    }
}

/// Sets the threads each chat sequence computes on: the native engine's per-slot workers
/// (`LoadOptions::threads`) and candle's process-wide pool (`CANDLE_NUM_THREADS`, read at the
/// first load, unless the environment already sets it). When more than one chat sequence can
/// run at once (the sum of `parallel` over the chat models), each runs on one thread, so that
/// sequences run side by side instead of taking turns (candle's pool runs one job at a time and
/// its idle workers spin: measured 20× slower at 4 concurrent requests over 3 models); a lone
/// sequence gets every core. `[local] threads` overrides the choice.
fn set_chat_threads(config: &Config, specs: &mut [ModelSpec]) {
    const VAR: &str = "CANDLE_NUM_THREADS";
    let sequences: usize = specs
        .iter()
        .filter(|s| s.kind == ModelKind::Chat)
        .map(|s| s.load.parallel)
        .sum();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let threads = config
        .local
        .threads
        .unwrap_or(if sequences > 1 { 1 } else { cores });
    tracing::info!(threads, sequences, "local chat threads per sequence");
    for spec in specs.iter_mut() {
        spec.load.threads = Some(threads);
    }
    if std::env::var_os(VAR).is_none() {
        // Before any model runs: nothing reads it concurrently yet.
        std::env::set_var(VAR, threads.to_string());
    }
}

/// `/health/detailed`'s view of the pool.
pub fn health(local: &LocalRuntime) -> serde_json::Value {
    let s = local.pool.snapshot();
    let models: Vec<serde_json::Value> = s
        .models
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "kind": local.pool.spec(&m.name).map(|s| s.kind.as_str()),
                "state": m.state.as_str(),
                "bytes_estimated": m.bytes_estimated,
                "bytes_measured": m.bytes_measured,
                "engine": m.engine,
                "context_length": m.context_length,
                "bytes_reserved": m.bytes_reserved,
                "in_flight": m.in_flight,
                "pinned": m.pinned,
                "idle_seconds": m.last_used.map(|t| t.elapsed().as_secs()),
                "unloads_in_seconds": m.expires_at.map(|t| {
                    t.saturating_duration_since(Instant::now()).as_secs()
                }),
            })
        })
        .collect();
    json!({"memory_budget": s.budget, "memory_used": s.used, "models": models})
}

/// Appends the pool's Prometheus series.
pub fn render(local: &LocalRuntime, out: &mut String) {
    use std::fmt::Write;
    let s = local.pool.snapshot();
    let _ = writeln!(
        out,
        "# HELP sluice_local_memory_budget_bytes Bytes the loaded local models may hold.\n# TYPE sluice_local_memory_budget_bytes gauge\nsluice_local_memory_budget_bytes {}",
        s.budget
    );
    let _ = writeln!(
        out,
        "# HELP sluice_local_memory_used_bytes Bytes the loaded and loading local models hold.\n# TYPE sluice_local_memory_used_bytes gauge\nsluice_local_memory_used_bytes {}",
        s.used
    );
    type Value = fn(&sluice_local::pool::ModelStatus) -> u64;
    let series: [(&str, &str, Value); 4] = [
        (
            "sluice_local_model_loaded",
            "1 while a local model is in memory (loading counts), else 0.",
            |m| u64::from(m.state.as_str() != "unloaded"),
        ),
        (
            "sluice_local_model_bytes",
            "Bytes a local model counts against the budget.",
            |m| m.bytes_reserved,
        ),
        (
            "sluice_local_model_in_flight",
            "Requests holding or waiting for a local model.",
            |m| m.in_flight as u64,
        ),
        (
            "sluice_local_queue_depth",
            "Requests waiting in a loaded local model's queue for a slot or a batch.",
            |m| m.queued as u64,
        ),
    ];
    for (name, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for m in &s.models {
            let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", m.name, value(m));
        }
    }
    local.metrics.render(out);
    const SCHEMAS: &str = "sluice_local_schemas_total";
    let _ = writeln!(out, "# HELP {SCHEMAS} JSON schemas of local chat requests (response_format, tools' parameters), by whether they were compiled or found compiled in the cache.\n# TYPE {SCHEMAS} counter");
    let grammars = &local.grammars;
    let _ = writeln!(
        out,
        "{SCHEMAS}{{result=\"compiled\"}} {}",
        grammars.compiled()
    );
    let _ = writeln!(out, "{SCHEMAS}{{result=\"cached\"}} {}", grammars.reused());
}

/// Renders preload progress on stderr: a bar redrawn in place when stderr is a terminal, one
/// line per model otherwise (logs), and the log event either way.
fn preload_progress() -> impl FnMut(sluice_local::PreloadEvent) {
    use sluice_local::PreloadEvent;
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut held = 0u64;
    move |event| {
        let (index, total, name, note) = match &event {
            PreloadEvent::Loading { name, index, total } => {
                tracing::info!(model = %name, "preloading local model {}/{total}", index + 1);
                (*index, *total, name, "loading".to_owned())
            }
            PreloadEvent::Loaded {
                name,
                index,
                total,
                bytes,
                elapsed,
            } => {
                held += bytes;
                tracing::info!(model = %name, bytes, elapsed_ms = elapsed.as_millis() as u64, "preloaded local model");
                (
                    index + 1,
                    *total,
                    name,
                    format!("{} MiB in {:.1} s", bytes >> 20, elapsed.as_secs_f64()),
                )
            }
            PreloadEvent::Failed {
                name,
                index,
                total,
                error,
            } => {
                tracing::warn!(model = %name, error = %error, "local model did not preload");
                (index + 1, *total, name, format!("failed: {error}"))
            }
        };
        if !tty {
            return;
        }
        const WIDTH: usize = 24;
        let filled = (index * WIDTH).checked_div(total).unwrap_or(WIDTH);
        let bar: String = "#".repeat(filled) + &"-".repeat(WIDTH - filled);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2Kpreloading [{bar}] {index}/{total}  {name}: {note}  ({} MiB held, {:.1} s)",
            held >> 20,
            started.elapsed().as_secs_f64()
        );
        if index == total && !matches!(event, PreloadEvent::Loading { .. }) {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}

/// The runtime of a config's local models, and the models found on disk (name, file) that
/// join its first `local` provider.
pub fn start(config: &Config) -> Result<(Vec<super::found::Found>, Option<LocalRuntime>), Error> {
    let has_provider = config
        .providers
        .iter()
        .any(|p| p.kind == sluice_core::config::ProviderType::Local);
    let found = if has_provider {
        discover(config)
    } else {
        Vec::new()
    };
    let local = build(config, &found)?;
    let found = found
        .into_iter()
        .map(|m| super::found::Found {
            name: m.name,
            path: m.path,
        })
        .collect();
    Ok((found, local))
}

/// Starts loading the models marked `preload`, in the background.
pub fn preload(local: &LocalRuntime) {
    let pool = local.pool.clone();
    tokio::spawn(async move {
        let report = pool.preload_configured(preload_progress()).await;
        if !report.failed.is_empty() {
            tracing::warn!(failed = ?report.failed, "local models that did not preload");
        }
    });
}

/// Unloads the models whose keep-alive ran out.
pub fn sweep(local: &LocalRuntime) {
    for name in local.pool.sweep() {
        tracing::info!(model = %name, "local model unloaded: keep-alive over");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::env::MapEnv;

    #[test]
    fn embed_precision_reaches_the_model_spec() {
        let toml = "[[providers]]\nname = \"l\"\ntype = \"local\"\n\
            [[models]]\nname = \"a\"\nprovider = \"l\"\npath = \"/nowhere/minilm\"\nembed_precision = \"int8\"\n\
            [[models]]\nname = \"b\"\nprovider = \"l\"\npath = \"/nowhere/minilm\"\n";
        let config = Config::from_toml(toml, &MapEnv::default()).unwrap();
        let local = build(&config, &[]).unwrap().unwrap();
        let precision = |name: &str| local.pool.spec(name).unwrap().precision;
        assert_eq!(precision("a"), sluice_local::Precision::Int8);
        assert_eq!(precision("b"), sluice_local::Precision::F32);
    }
}
