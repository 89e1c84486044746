//! What the providers' active health checks found (see [`crate::health_check`]): each
//! provider's counts and last check, kept across reloads by provider name, for `/metrics`
//! and `/health/detailed`.

use sluice_providers::Provider;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest error text kept for `/health/detailed`.
const ERROR_CHARS: usize = 300;

/// The last check of one provider.
#[derive(Debug, Clone)]
pub struct LastCheck {
    /// When it ended, unix ms.
    pub at_ms: u64,
    /// Whether it passed.
    pub ok: bool,
    /// How long it took.
    pub latency: Duration,
    /// Why it failed.
    pub error: Option<String>,
}

/// One provider's checks so far (kept across reloads, by provider name).
#[derive(Debug, Default)]
pub struct ProviderHealth {
    passed: AtomicU64,
    failed: AtomicU64,
    failed_in_a_row: AtomicU32,
    last: Mutex<Option<LastCheck>>,
}

impl ProviderHealth {
    /// The last check, if one ended.
    pub fn last(&self) -> Option<LastCheck> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Failed checks in a row, up to now.
    pub fn failed_in_a_row(&self) -> u32 {
        self.failed_in_a_row.load(Relaxed)
    }

    /// Records a check's outcome; returns the failed checks in a row since.
    pub(crate) fn record(&self, outcome: &Result<Duration, (Duration, String)>) -> u32 {
        let (ok, latency, error) = match outcome {
            Ok(latency) => (true, *latency, None),
            Err((latency, e)) => (false, *latency, Some(e.chars().take(ERROR_CHARS).collect())),
        };
        let in_a_row = if ok {
            self.passed.fetch_add(1, Relaxed);
            self.failed_in_a_row.store(0, Relaxed);
            0
        } else {
            self.failed.fetch_add(1, Relaxed);
            self.failed_in_a_row.fetch_add(1, Relaxed) + 1
        };
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(LastCheck {
            at_ms: unix_ms(),
            ok,
            latency,
            error,
        });
        in_a_row
    }
}

/// Every provider's checks, kept across reloads.
#[derive(Debug, Default)]
pub struct Checks {
    by_provider: Mutex<HashMap<String, Arc<ProviderHealth>>>,
}

impl Checks {
    /// Provider `name`'s checks (new ones for a provider not seen yet).
    pub fn of(&self, name: &str) -> Arc<ProviderHealth> {
        let mut map = self
            .by_provider
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(name.to_string()).or_default())
    }

    /// Forgets the providers that no longer have a check.
    pub(crate) fn keep_only(&self, names: &[&str]) {
        self.by_provider
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|n, _| names.contains(&n.as_str()));
    }

    /// `sluice_health_checks_total{provider,result}`, `sluice_health_check_up{provider}` and
    /// `sluice_health_check_latency_seconds{provider}` of the `providers` that have a
    /// check.
    pub fn render(&self, providers: &[Arc<Provider>], out: &mut String) {
        let checked: Vec<(&str, Arc<ProviderHealth>)> = providers
            .iter()
            .filter(|p| p.config.health_check.is_some())
            .map(|p| (p.name(), self.of(p.name())))
            .collect();
        if checked.is_empty() {
            return;
        }
        let label = crate::label::escape;
        out.push_str("# HELP sluice_health_checks_total Active health checks of providers, by result.\n# TYPE sluice_health_checks_total counter\n");
        for (name, h) in &checked {
            for (result, n) in [("ok", &h.passed), ("failed", &h.failed)] {
                let _ = writeln!(
                    out,
                    "sluice_health_checks_total{{provider=\"{}\",result=\"{result}\"}} {}",
                    label(name),
                    n.load(Relaxed)
                );
            }
        }
        out.push_str("# HELP sluice_health_check_up Whether the provider's last health check passed (1) or failed (0); absent before the first.\n# TYPE sluice_health_check_up gauge\n");
        let lasts: Vec<_> = checked.iter().map(|(n, h)| (n, h.last())).collect();
        for (name, last) in &lasts {
            if let Some(l) = last {
                let _ = writeln!(
                    out,
                    "sluice_health_check_up{{provider=\"{}\"}} {}",
                    label(name),
                    u8::from(l.ok)
                );
            }
        }
        out.push_str("# HELP sluice_health_check_latency_seconds How long the provider's last health check took.\n# TYPE sluice_health_check_latency_seconds gauge\n");
        for (name, last) in &lasts {
            if let Some(l) = last {
                let _ = writeln!(
                    out,
                    "sluice_health_check_latency_seconds{{provider=\"{}\"}} {:.6}",
                    label(name),
                    l.latency.as_secs_f64()
                );
            }
        }
    }

    /// Provider `provider`'s check for `/health/detailed`: `null` without one.
    pub fn json(&self, provider: &Provider) -> serde_json::Value {
        let Some(config) = &provider.config.health_check else {
            return serde_json::Value::Null;
        };
        let h = self.of(provider.name());
        let last = h.last().map(|l| {
            serde_json::json!({
                "at_unix_ms": l.at_ms,
                "result": if l.ok { "ok" } else { "failed" },
                "latency_ms": l.latency.as_millis() as u64,
                "error": l.error,
            })
        });
        serde_json::json!({
            "kind": config.kind.as_str(),
            "interval_ms": config.interval.as_millis() as u64,
            "failed_in_a_row": h.failed_in_a_row(),
            "last": last,
        })
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
