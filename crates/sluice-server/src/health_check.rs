//! Active health checks (`[[providers]] health_check`): one task per provider that has one
//! sends the provider's cheapest request that proves it answers (its model list, or a
//! one-token chat completion) every `interval_ms`, jittered by ±10%, one at a time, and
//! feeds the outcome to the breakers of the provider's deployments:
//!
//! - `failures` failed checks in a row open every closed breaker of the provider (so routes
//!   skip it before a user request finds it dead), shared with the fleet on Redis like an
//!   opening by failed requests;
//! - once an open breaker's cooldown is over, the check is its half-open probe (the fleet's
//!   one probe on Redis, claimed like a request's): its success closes the breaker, on every
//!   replica, and its failure opens it for another cooldown.
//!
//! A passing check does not close a breaker that requests opened before its cooldown is
//! over: the cooldown runs, and a check runs as it ends, as its probe. The tasks start with the server,
//! are replaced when a reload swaps the state (a supervisor watches for it), and stop at
//! shutdown. What they found is kept in [`crate::health_status`], across reloads, for
//! `/metrics` (`sluice_health_checks_total`, `sluice_health_check_up`,
//! `sluice_health_check_latency_seconds`) and `/health/detailed`.

use crate::health_status::ProviderHealth;
use crate::live::Live;
use crate::shared_routing::{FleetProbe, ProbeVerdict, SharedRouting};
use crate::state::AppState;
use http::HeaderValue;
use http_body_util::BodyExt;
use sluice_core::breaker::{Breaker, BreakerState, Permit};
use sluice_core::config::HealthCheckConfig;
use sluice_providers::Provider;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How often the supervisor looks for a reloaded state.
const RELOAD_POLL: Duration = Duration::from_millis(200);

/// Starts the supervisor: it runs the checkers of the serving state and replaces them when
/// a reload swaps it. Aborting the returned task stops every checker.
pub fn spawn(live: &Arc<Live>) -> JoinHandle<()> {
    let live = Arc::clone(live);
    tokio::spawn(async move {
        let mut serving: Option<(Arc<AppState>, Running)> = None;
        loop {
            let state = live.get();
            if serving
                .as_ref()
                .is_none_or(|(s, _)| !Arc::ptr_eq(s, &state))
            {
                // Dropping the old `Running` aborts its checkers (a check in flight included).
                drop(serving.take());
                let running = start(&state);
                serving = Some((state, running));
            }
            tokio::time::sleep(RELOAD_POLL).await;
        }
    })
}

/// The checker tasks of one state; dropping it stops them.
struct Running(Vec<JoinHandle<()>>);

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn start(state: &Arc<AppState>) -> Running {
    let checked: Vec<&str> = state
        .providers
        .iter()
        .filter(|p| p.config.health_check.is_some())
        .map(|p| p.name())
        .collect();
    state.health_checks.keep_only(&checked);
    // A checked provider's breakers are probed by its check alone (breakers carried over a
    // reload take the new config's word).
    for d in &state.deployments {
        let provider = &state.providers[d.provider];
        d.breaker
            .set_probed_by_checks(provider.config.health_check.is_some());
    }
    let tasks = state
        .providers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let config = p.config.health_check.clone()?;
            let checker = Checker {
                provider: Arc::clone(p),
                deployments: state
                    .deployments
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.provider == i)
                    .map(|(index, d)| Watched {
                        index,
                        name: d.name.to_string(),
                        breaker: Arc::clone(&d.breaker),
                    })
                    .collect(),
                state: Arc::clone(state),
                shared: state.shared_routing.clone(),
                health: state.health_checks.of(p.name()),
                config,
            };
            Some(tokio::spawn(checker.run()))
        })
        .collect();
    Running(tasks)
}

/// One provider's checker.
struct Checker {
    provider: Arc<Provider>,
    config: HealthCheckConfig,
    /// The provider's deployments.
    deployments: Vec<Watched>,
    /// The state the checker serves (its metrics).
    state: Arc<AppState>,
    shared: Option<Arc<SharedRouting>>,
    health: Arc<ProviderHealth>,
}

/// One of the provider's deployments, as its checker sees it.
struct Watched {
    /// Its index in the state's deployments (and metrics' series).
    index: usize,
    name: String,
    breaker: Arc<Breaker>,
}

/// A half-open breaker's probe that the check holds.
struct Probe<'a> {
    name: &'a str,
    breaker: &'a Breaker,
    permit: Permit,
    fleet: Option<FleetProbe>,
}

impl Checker {
    async fn run(self) {
        // The first check soon (a dead upstream is found before the first requests), spread
        // so that replicas started together do not check together.
        let first = self.config.interval.min(Duration::from_secs(1));
        let mut due = Instant::now() + first.mul_f64(sluice_core::rng::unit() * 0.1);
        loop {
            let now = Instant::now();
            if now >= due || self.probe_due(now) {
                self.once().await;
                due = Instant::now() + self.jittered_interval();
            }
            tokio::time::sleep_until(self.wake_at(due).into()).await;
        }
    }

    /// The interval, jittered by ±10%.
    fn jittered_interval(&self) -> Duration {
        self.config
            .interval
            .mul_f64(0.9 + 0.2 * sluice_core::rng::unit())
    }

    /// Whether a breaker of the provider waits for its probe (its cooldown is over): requests
    /// never probe a checked provider, the check must.
    fn probe_due(&self, now: Instant) -> bool {
        self.deployments
            .iter()
            .any(|d| d.breaker.state(now) == BreakerState::HalfOpen)
    }

    /// When to look again: the next check, or sooner when an open breaker's cooldown ends
    /// (the check is then its probe), and at least once a cooldown, so that a breaker opened
    /// by requests in the meantime is probed when its own cooldown ends, not a whole interval
    /// later.
    fn wake_at(&self, due: Instant) -> Instant {
        let now = Instant::now();
        let cooldown = self
            .deployments
            .iter()
            .map(|d| d.breaker.cooldown())
            .min()
            .unwrap_or(self.config.interval)
            .max(Duration::from_millis(10));
        self.deployments
            .iter()
            .filter_map(|d| d.breaker.open_until(now))
            .fold(due.min(now + cooldown), Instant::min)
    }

    /// One check, and its verdict given to the breakers.
    async fn once(&self) {
        let probes = self.claim_probes().await;
        let outcome = self.check().await;
        let in_a_row = self.health.record(&outcome);
        let now = Instant::now();
        let provider = self.provider.name();
        if let Err((_, e)) = &outcome {
            tracing::debug!(provider, error = %e, in_a_row, "health check failed");
        }
        for p in probes {
            let verdict = if outcome.is_ok() {
                p.breaker.success(now, p.permit);
                tracing::info!(
                    model = p.name,
                    "circuit breaker closed by a passing health check"
                );
                ProbeVerdict::Closed
            } else {
                p.breaker.failure(now, p.permit);
                ProbeVerdict::Failed
            };
            if let (Some(shared), Some(fleet)) = (&self.shared, p.fleet) {
                shared.settle_probe(p.name, fleet, verdict);
            }
        }
        if outcome.is_err() && in_a_row >= self.config.failures {
            for d in &self.deployments {
                if d.breaker.trip(now) {
                    let series = self.state.metrics.series(d.index);
                    series.breaker_opened.fetch_add(1, Relaxed);
                    tracing::warn!(
                        model = %d.name,
                        provider,
                        failed_checks = in_a_row,
                        "circuit breaker opened by failing health checks"
                    );
                }
            }
        }
    }

    /// The probes of the provider's half-open breakers (the fleet's, on Redis), which this
    /// check answers for.
    async fn claim_probes(&self) -> Vec<Probe<'_>> {
        let mut probes = Vec::new();
        let now = Instant::now();
        for d in &self.deployments {
            let (name, breaker) = (d.name.as_str(), &*d.breaker);
            let Some(permit) = breaker.try_probe(now) else {
                continue;
            };
            let (permit, fleet) = match &self.shared {
                Some(shared) => match shared.claim_probe(name, breaker, permit).await {
                    Ok(claimed) => claimed,
                    // Another replica's probe is out: its verdict will come.
                    Err(_) => continue,
                },
                None => (permit, None),
            };
            if !permit.probe {
                // A probe elsewhere already closed this opening.
                continue;
            }
            probes.push(Probe {
                name,
                breaker,
                permit,
                fleet,
            });
        }
        probes
    }

    /// Sends the check; its latency, or its latency and why it failed.
    async fn check(&self) -> Result<Duration, (Duration, String)> {
        let started = Instant::now();
        let request_id = HeaderValue::from_static("sluice-health-check");
        let request = self
            .provider
            .health_request(&self.config.kind, &request_id)
            .map_err(|e| (started.elapsed(), e.to_string()))?;
        let answer = async {
            let response = self
                .provider
                .send(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            if status.is_success() {
                Ok(())
            } else {
                let text = String::from_utf8_lossy(&body);
                Err(format!("upstream answered {status}: {}", text.trim()))
            }
        };
        match tokio::time::timeout(self.config.timeout, answer).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(e)) => Err((started.elapsed(), e)),
            Err(_) => Err((
                started.elapsed(),
                format!("no answer within {} ms", self.config.timeout.as_millis()),
            )),
        }
    }
}
