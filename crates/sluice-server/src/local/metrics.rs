//! The local runtime's own measurements: load times by model and engine, how long a load
//! still running has been running, evictions by model and reason (told by the pool,
//! [`PoolEvents`]), and the time requests wait in a model's queue (recorded as their
//! answers end): chat and text completions for a slot, embeddings and rerank requests for
//! the batch that runs them; `kind` tells them apart.
//!
//! Every model is known when the runtime starts, so each has its series from the start (a
//! rate sees the first load) and recording is a map lookup that takes no lock (the map never changes) and relaxed atomic
//! adds.

use crate::metrics::Histogram;
use sluice_local::pool::{Eviction, ModelKind, PoolEvents};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Engines with their own load-time series; any other counts under `other`.
const ENGINES: [&str; 2] = ["native", "candle"];

/// One model's measurements.
#[derive(Debug, Default)]
pub struct ModelMetrics {
    label: String,
    /// Load times, by engine in [`ENGINES`] order, then `other`.
    loads: [Histogram; ENGINES.len() + 1],
    /// Evictions, in [`Eviction::ALL`] order.
    evictions: [AtomicU64; Eviction::ALL.len()],
    /// Time requests waited in the model's queue: for a slot (chat), for a batch
    /// (embeddings, rerank).
    pub queue_wait: Histogram,
    /// `model="…",kind="…"`: the queue wait's labels.
    wait_label: String,
    /// When the load running now began (the pool runs one load of a model at a time).
    loading_since: Mutex<Option<Instant>>,
}

impl ModelMetrics {
    fn loading_since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.loading_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every local model's measurements.
#[derive(Debug, Default)]
pub struct LocalMetrics {
    models: Vec<Arc<ModelMetrics>>,
    by_name: HashMap<String, usize>,
}

// === impl LocalMetrics ===

impl LocalMetrics {
    /// Series for each of `models` (the pool's model names, with their kinds).
    pub fn new<'a>(models: impl IntoIterator<Item = (&'a str, ModelKind)>) -> Self {
        let mut metrics = Self::default();
        for (name, kind) in models {
            if metrics.by_name.contains_key(name) {
                continue;
            }
            metrics
                .by_name
                .insert(name.to_owned(), metrics.models.len());
            let label = format!("model=\"{}\"", crate::label::escape(name));
            metrics.models.push(Arc::new(ModelMetrics {
                wait_label: format!("{label},kind=\"{}\"", kind.as_str()),
                label,
                ..ModelMetrics::default()
            }));
        }
        metrics
    }

    /// The measurements of model `name`.
    pub fn model(&self, name: &str) -> Option<&Arc<ModelMetrics>> {
        self.by_name.get(name).map(|&i| &self.models[i])
    }

    /// Appends the series in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        const LOAD: &str = "sluice_local_model_load_duration_seconds";
        let _ = writeln!(out, "# HELP {LOAD} Time a local model took to load (reserve, checksum, load, measure), by model and engine.\n# TYPE {LOAD} histogram");
        // The known engines' series exist from the start (so that `increase()` sees a
        // model's first load); `other` once something else loaded.
        for m in &self.models {
            for (i, (engine, h)) in ENGINES.iter().chain(&["other"]).zip(&m.loads).enumerate() {
                if i < ENGINES.len() || h.count() > 0 {
                    h.render(out, LOAD, &format!("{},engine=\"{engine}\"", m.label));
                }
            }
        }
        const RUNNING: &str = "sluice_local_model_load_running_seconds";
        let _ = writeln!(out, "# HELP {RUNNING} How long the load of a local model running now has been running (0: none is).\n# TYPE {RUNNING} gauge");
        for m in &self.models {
            let running = m.loading_since().map_or(0.0, |t| t.elapsed().as_secs_f64());
            let _ = writeln!(out, "{RUNNING}{{{}}} {running:.3}", m.label);
        }
        const EVICTIONS: &str = "sluice_local_model_evictions_total";
        let _ = writeln!(out, "# HELP {EVICTIONS} Loaded local models unloaded, by model and reason (memory: to make room for another load; keep_alive: idle past their keep-alive).\n# TYPE {EVICTIONS} counter");
        for m in &self.models {
            for (reason, c) in Eviction::ALL.iter().zip(&m.evictions) {
                let _ = writeln!(
                    out,
                    "{EVICTIONS}{{{},reason=\"{}\"}} {}",
                    m.label,
                    reason.as_str(),
                    c.load(Relaxed)
                );
            }
        }
        const WAIT: &str = "sluice_local_queue_wait_seconds";
        let _ = writeln!(out, "# HELP {WAIT} Time a request waited in a local model's queue, by model and kind (chat: for a slot; embedding, rerank: for the batch that ran it).\n# TYPE {WAIT} histogram");
        for m in &self.models {
            m.queue_wait.render(out, WAIT, &m.wait_label);
        }
    }
}

impl PoolEvents for LocalMetrics {
    fn load_started(&self, model: &str) {
        if let Some(m) = self.model(model) {
            *m.loading_since() = Some(Instant::now());
        }
    }

    fn load_ended(&self, model: &str) {
        if let Some(m) = self.model(model) {
            *m.loading_since() = None;
        }
    }

    fn loaded(&self, model: &str, engine: Option<&'static str>, took: Duration) {
        if let Some(m) = self.model(model) {
            let slot = engine
                .and_then(|e| ENGINES.iter().position(|known| *known == e))
                .unwrap_or(ENGINES.len());
            m.loads[slot].observe(took);
        }
    }

    fn evicted(&self, model: &str, reason: Eviction) {
        if let Some(m) = self.model(model) {
            m.evictions[reason.index()].fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_loads_by_engine_evictions_by_reason_and_queue_waits() {
        let m = LocalMetrics::new([
            ("qwen", ModelKind::Chat),
            ("minilm", ModelKind::Embedding),
            ("ce", ModelKind::Rerank),
        ]);
        m.loaded("qwen", Some("native"), Duration::from_secs(75));
        m.loaded("qwen", Some("vulkan"), Duration::from_secs(1));
        m.loaded("nobody", Some("native"), Duration::from_secs(1));
        m.evicted("qwen", Eviction::Memory);
        m.evicted("minilm", Eviction::KeepAlive);
        m.model("qwen")
            .expect("configured")
            .queue_wait
            .observe(Duration::from_millis(40));
        m.model("minilm")
            .expect("configured")
            .queue_wait
            .observe(Duration::from_millis(3));
        let mut text = String::new();
        m.render(&mut text);
        for line in [
            r#"sluice_local_model_load_duration_seconds_bucket{model="qwen",engine="native",le="60"} 0"#,
            r#"sluice_local_model_load_duration_seconds_bucket{model="qwen",engine="native",le="120"} 1"#,
            r#"sluice_local_model_load_duration_seconds_count{model="qwen",engine="other"} 1"#,
            r#"sluice_local_model_evictions_total{model="qwen",reason="memory"} 1"#,
            r#"sluice_local_model_evictions_total{model="qwen",reason="keep_alive"} 0"#,
            r#"sluice_local_model_evictions_total{model="minilm",reason="keep_alive"} 1"#,
            r#"sluice_local_queue_wait_seconds_bucket{model="qwen",kind="chat",le="0.05"} 1"#,
            r#"sluice_local_queue_wait_seconds_bucket{model="qwen",kind="chat",le="0.025"} 0"#,
            r#"sluice_local_queue_wait_seconds_bucket{model="minilm",kind="embedding",le="0.005"} 1"#,
            r#"sluice_local_queue_wait_seconds_count{model="minilm",kind="embedding"} 1"#,
            r#"sluice_local_queue_wait_seconds_count{model="ce",kind="rerank"} 0"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(text.contains(r#"sluice_local_model_load_duration_seconds_count{model="minilm",engine="candle"} 0"#), "{text}");
        assert!(!text.contains(r#"sluice_local_queue_wait_seconds_count{model="qwen"}"#));
        assert!(!text.contains(r#"model="minilm",engine="other""#), "{text}");
        assert!(!text.contains("nobody"), "{text}");
    }

    /// The value of `series` in `text`.
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} in\n{text}"))
    }

    #[test]
    fn a_load_still_running_shows_how_long_it_has_run() {
        let m = LocalMetrics::new([("qwen", ModelKind::Chat), ("minilm", ModelKind::Embedding)]);
        let running = |m: &LocalMetrics, model: &str| {
            let mut text = String::new();
            m.render(&mut text);
            value(
                &text,
                &format!("sluice_local_model_load_running_seconds{{model=\"{model}\"}}"),
            )
        };
        assert_eq!(running(&m, "qwen"), 0.0, "no load yet");
        m.load_started("qwen");
        std::thread::sleep(Duration::from_millis(20));
        assert!(running(&m, "qwen") >= 0.02);
        assert_eq!(running(&m, "minilm"), 0.0);
        m.load_ended("qwen");
        assert_eq!(running(&m, "qwen"), 0.0, "ended, loaded or failed");
    }
}
