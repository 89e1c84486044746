//! `sluice_key_budget_used_ratio`: how much of its budget a key has spent in its current
//! window, for the keys nearest their limit.
//!
//! Read from the spend log off the request path (once a minute, by the background task that
//! flushes the cache's counters), never on a request: the requests' own budget checks stay
//! the limiter's. Bounded cardinality: only the [`MAX_SERIES`] keys with the highest ratio
//! are exported, so a gateway with a hundred thousand keys still exports at most that many
//! series. The spend log is written in batches, so the figure lags the limiter's by the
//! writer's batching (seconds): fine for an alert at 90 %, not for enforcement.

use sluice_store::{KeyRecord, Ledger};
use std::fmt::Write;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Keys exported at most: those nearest their budget.
pub const MAX_SERIES: usize = 50;

/// How often the ratios are read again.
pub const REFRESH: Duration = Duration::from_secs(60);

/// One key's use of its budget.
#[derive(Debug, Clone, PartialEq)]
struct Used {
    id: String,
    name: String,
    ratio: f64,
}

/// The last reading, and when it was taken.
#[derive(Debug, Default)]
pub struct BudgetUse {
    top: Mutex<Vec<Used>>,
    read_at: Mutex<Option<Instant>>,
}

// === impl BudgetUse ===

impl BudgetUse {
    /// Reads the ratios again when [`REFRESH`] has passed since the last reading.
    pub async fn refresh_if_due(&self, ledger: &Ledger, now_ms: u64) {
        {
            let mut at = self.read_at.lock().unwrap_or_else(PoisonError::into_inner);
            if at.is_some_and(|t| t.elapsed() < REFRESH) {
                return;
            }
            *at = Some(Instant::now());
        }
        let keys = match ledger.keys().await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the keys for their budget use");
                return;
            }
        };
        let mut used = Vec::new();
        for k in keys.iter().filter(|k| live(k, now_ms)) {
            let Some(limit) = k.budget_nano_usd.filter(|&l| l > 0) else {
                continue;
            };
            let (window, _) = k.budget_period.window(now_ms);
            let spent = ledger.window_spend(&k.id, &window).await.unwrap_or(0);
            used.push(Used {
                id: k.id.clone(),
                name: k.name.clone(),
                ratio: spent as f64 / limit as f64,
            });
        }
        *self.top.lock().unwrap_or_else(PoisonError::into_inner) = top(used);
    }

    /// Appends the gauge in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP sluice_key_budget_used_ratio Share of its budget a key has spent in its current window (spend log, read every minute; the {MAX_SERIES} keys nearest their limit).\n# TYPE sluice_key_budget_used_ratio gauge");
        let top = self.top.lock().unwrap_or_else(PoisonError::into_inner);
        for u in top.iter() {
            let _ = writeln!(
                out,
                "sluice_key_budget_used_ratio{{key=\"{}\",name=\"{}\"}} {}",
                crate::label::escape(&u.id),
                crate::label::escape(&u.name),
                u.ratio
            );
        }
    }
}

/// Neither revoked nor expired.
fn live(k: &KeyRecord, now_ms: u64) -> bool {
    k.revoked_ms.is_none() && k.expires_ms.is_none_or(|e| e > now_ms)
}

/// The [`MAX_SERIES`] highest ratios, highest first.
fn top(mut used: Vec<Used>) -> Vec<Used> {
    used.sort_by(|a, b| b.ratio.total_cmp(&a.ratio));
    used.truncate(MAX_SERIES);
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_keys_nearest_their_budget() {
        let used: Vec<Used> = (0..MAX_SERIES + 10)
            .map(|i| Used {
                id: format!("key_{i}"),
                name: format!("k{i}"),
                ratio: i as f64 / 100.0,
            })
            .collect();
        let kept = top(used);
        assert_eq!(kept.len(), MAX_SERIES);
        assert_eq!(kept[0].id, format!("key_{}", MAX_SERIES + 9));
        let b = BudgetUse::default();
        *b.top.lock().unwrap() = kept;
        let mut text = String::new();
        b.render(&mut text);
        assert!(
            text.contains("sluice_key_budget_used_ratio{key=\"key_59\",name=\"k59\"} 0.59"),
            "{text}"
        );
        assert!(!text.contains("key_9\""), "{text}");
    }
}
