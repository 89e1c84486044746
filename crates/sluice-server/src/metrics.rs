//! Prometheus metrics with fixed label sets, kept in atomics.
//!
//! Every label combination is known when the config loads (one series per configured model,
//! one per passthrough provider, one for requests that never resolved a model), so
//! recording is a few relaxed atomic adds: no map lookup, no lock, no allocation.

use crate::label::escape;
use sluice_core::Operation;
use sluice_store::{CheckKind, Ledger, Limiter};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Statuses with their own slot; anything else counts under `other`.
const STATUSES: [u16; 19] = [
    200, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 499, 500, 501, 502, 503, 504, 529,
];
const STATUS_SLOTS: usize = STATUSES.len() + 1;

/// Upper bounds (seconds) of the latency histograms: from half a millisecond (a cache hit)
/// to ten minutes (a long generation, a local model's load), so that quantiles such as a p95
/// (`histogram_quantile`) stay meaningful up to minutes.
pub const BUCKETS: [f64; 19] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

/// Kinds of upstream failure counted by `sluice_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Could not connect, or the connection broke before a response.
    Connect,
    /// A timeout fired.
    Timeout,
    /// 429.
    RateLimited,
    /// Other 4xx.
    Status4xx,
    /// 5xx.
    Status5xx,
    /// A response that could not be used.
    Protocol,
    /// A stream that ended without finishing.
    StreamCut,
}

const UPSTREAM_ERRORS: [(UpstreamError, &str); 7] = [
    (UpstreamError::Connect, "connect"),
    (UpstreamError::Timeout, "timeout"),
    (UpstreamError::RateLimited, "rate_limited"),
    (UpstreamError::Status4xx, "status_4xx"),
    (UpstreamError::Status5xx, "status_5xx"),
    (UpstreamError::Protocol, "protocol"),
    (UpstreamError::StreamCut, "stream_cut"),
];

/// The `endpoint` label of each operation's series, in [`Operation::index`] order.
const ENDPOINTS: [&str; OPERATIONS] = {
    let mut labels = [""; OPERATIONS];
    let mut i = 0;
    while i < OPERATIONS {
        labels[i] = Operation::ALL[i].as_str();
        i += 1;
    }
    labels
};

/// How many operations there are.
const OPERATIONS: usize = Operation::ALL.len();

/// A histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            let le = BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }

    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Adds the observations so far to `into`, bucket by bucket (not cumulative: slot `i`
    /// counts those above `BUCKETS[i - 1]` up to `BUCKETS[i]`, the last those above all).
    pub fn add_counts(&self, into: &mut [u64; BUCKETS.len() + 1]) {
        for (sum, c) in into.iter_mut().zip(&self.counts) {
            *sum += c.load(Relaxed);
        }
    }
}

/// The measurements of one endpoint of one series.
#[derive(Debug, Default)]
pub struct EndpointMetrics {
    status: [AtomicU64; STATUS_SLOTS],
    /// Time from request received to response complete.
    pub latency: Histogram,
    /// Time from request received to the first byte of the upstream's body (streams).
    pub ttft: Histogram,
    tokens_in: AtomicU64,
    tokens_out: AtomicU64,
    tokens_cached: AtomicU64,
    tokens_estimated_in: AtomicU64,
    tokens_estimated_out: AtomicU64,
    upstream_errors: [AtomicU64; UPSTREAM_ERRORS.len()],
}

impl EndpointMetrics {
    /// Counts a request by the status it was answered with.
    pub fn count_status(&self, status: u16) {
        let slot = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(STATUSES.len());
        self.status[slot].fetch_add(1, Relaxed);
    }

    /// Adds token usage.
    pub fn add_usage(&self, usage: &sluice_types::Usage) {
        self.tokens_in.fetch_add(usage.prompt_tokens, Relaxed);
        self.tokens_out.fetch_add(usage.completion_tokens, Relaxed);
        self.tokens_cached
            .fetch_add(usage.cached_prompt_tokens, Relaxed);
    }

    /// Records that `usage` (already added) is an estimate: the upstream reported none.
    pub fn add_estimated(&self, usage: &sluice_types::Usage) {
        self.tokens_estimated_in
            .fetch_add(usage.prompt_tokens, Relaxed);
        self.tokens_estimated_out
            .fetch_add(usage.completion_tokens, Relaxed);
    }

    /// Counts an upstream failure.
    pub fn upstream_error(&self, kind: UpstreamError) {
        if let Some(i) = UPSTREAM_ERRORS.iter().position(|(k, _)| *k == kind) {
            self.upstream_errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Requests answered so far, any status.
    pub fn requests(&self) -> u64 {
        self.status.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Requests answered with a status of 400 or more so far (those under `other` are not
    /// counted: it gathers every status without a slot, successes too).
    pub fn errors(&self) -> u64 {
        STATUSES
            .iter()
            .zip(&self.status)
            .filter(|(s, _)| **s >= 400)
            .map(|(_, c)| c.load(Relaxed))
            .sum()
    }

    /// Prompt and completion tokens so far.
    pub fn tokens(&self) -> (u64, u64) {
        (self.tokens_in.load(Relaxed), self.tokens_out.load(Relaxed))
    }

    /// Upstream failures so far.
    pub fn upstream_errors(&self) -> u64 {
        self.upstream_errors.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// The measurements of one model (or passthrough provider).
#[derive(Debug)]
pub struct Series {
    labels: String,
    endpoints: [EndpointMetrics; OPERATIONS],
    /// Tries after the first on this deployment.
    pub retries: AtomicU64,
    /// Requests that skipped this deployment: breaker open.
    pub skipped_open: AtomicU64,
    /// Requests that skipped this deployment: rate-limit cooldown.
    pub skipped_rate_limited: AtomicU64,
    /// Times the breaker opened.
    pub breaker_opened: AtomicU64,
}

/// Reads one counter of a series.
type SeriesCounter = fn(&Series) -> &AtomicU64;
/// Reads one counter of a route.
type RouteCounter = fn(&RouteMetrics) -> &AtomicU64;

/// The measurements of one route.
#[derive(Debug)]
pub struct RouteMetrics {
    label: String,
    /// Requests answered by a deployment other than the first in their plan.
    pub fallbacks: AtomicU64,
    /// Requests answered with the static fallback response.
    pub degraded: AtomicU64,
    /// Requests that every deployment failed.
    pub exhausted: AtomicU64,
    /// Canary rollbacks.
    pub canary_rollbacks: AtomicU64,
    /// Requests sent to the canary candidate.
    pub canary_requests: AtomicU64,
}

impl Series {
    /// The measurements of operation `op`.
    pub fn endpoint(&self, op: Operation) -> &EndpointMetrics {
        &self.endpoints[op.index()]
    }
}

/// All of sluice's metrics.
#[derive(Debug)]
pub struct Metrics {
    series: Vec<Series>,
    routes: Vec<RouteMetrics>,
    /// Requests in flight right now.
    pub in_flight: AtomicI64,
    /// Clients that went away before their response was complete.
    pub client_disconnects: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Requests waiting for one of `server.max_requests_in_flight`.
    pub queued: AtomicI64,
    /// Requests that waited past `server.queue_timeout_ms` (answered 503).
    pub queue_timeouts: AtomicU64,
}

impl Metrics {
    /// One series per `(model, provider)` pair, in the order given; the last series is for
    /// requests that never resolved a model.
    pub fn new<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        routes: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let new_series = |labels: String| Series {
            labels,
            endpoints: Default::default(),
            retries: AtomicU64::new(0),
            skipped_open: AtomicU64::new(0),
            skipped_rate_limited: AtomicU64::new(0),
            breaker_opened: AtomicU64::new(0),
        };
        let mut series: Vec<Series> = pairs
            .into_iter()
            .map(|(model, provider)| {
                new_series(format!(
                    "model=\"{}\",provider=\"{}\"",
                    escape(model),
                    escape(provider)
                ))
            })
            .collect();
        series.push(new_series("model=\"\",provider=\"\"".to_string()));
        let routes = routes
            .into_iter()
            .map(|name| RouteMetrics {
                label: format!("route=\"{}\"", escape(name)),
                fallbacks: AtomicU64::new(0),
                degraded: AtomicU64::new(0),
                exhausted: AtomicU64::new(0),
                canary_rollbacks: AtomicU64::new(0),
                canary_requests: AtomicU64::new(0),
            })
            .collect();
        Self {
            series,
            routes,
            in_flight: AtomicI64::new(0),
            client_disconnects: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            queued: AtomicI64::new(0),
            queue_timeouts: AtomicU64::new(0),
        }
    }

    /// The metrics of route `index`.
    pub fn route(&self, index: usize) -> Option<&RouteMetrics> {
        self.routes.get(index)
    }

    /// The series at `index` (the unresolved series if out of range).
    pub fn series(&self, index: usize) -> &Series {
        let last = self.series.len() - 1;
        &self.series[index.min(last)]
    }

    /// Every endpoint of every series.
    pub fn endpoints(&self) -> impl Iterator<Item = &EndpointMetrics> {
        self.series.iter().flat_map(|s| s.endpoints.iter())
    }

    /// The series for requests that never resolved a model.
    pub fn unresolved(&self) -> &Series {
        self.series(usize::MAX)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_requests(&mut out);
        self.render_latency(&mut out);
        self.render_tokens(&mut out);
        self.render_errors(&mut out);
        self.render_series_counters(&mut out);
        self.render_routes(&mut out);
        self.render_gauges(&mut out);
        out
    }

    /// Requests answered, by series, endpoint and status.
    fn render_requests(&self, out: &mut String) {
        out.push_str("# HELP sluice_requests_total Requests answered, by model, provider, endpoint and HTTP status.\n# TYPE sluice_requests_total counter\n");
        for s in &self.series {
            for (e, em) in ENDPOINTS.iter().zip(&s.endpoints) {
                for (i, c) in em.status.iter().enumerate() {
                    let n = c.load(Relaxed);
                    if n > 0 {
                        let status = STATUSES
                            .get(i)
                            .map_or_else(|| "other".to_string(), u16::to_string);
                        let _ = writeln!(
                            out,
                            "sluice_requests_total{{{},endpoint=\"{e}\",status=\"{status}\"}} {n}",
                            s.labels
                        );
                    }
                }
            }
        }
    }

    /// The latency histograms: to the response's end, and to the first streamed byte.
    fn render_latency(&self, out: &mut String) {
        out.push_str("# HELP sluice_request_duration_seconds Time from request received to response complete.\n# TYPE sluice_request_duration_seconds histogram\n");
        for s in &self.series {
            for (e, em) in ENDPOINTS.iter().zip(&s.endpoints) {
                if em.latency.count() > 0 {
                    em.latency.render(
                        out,
                        "sluice_request_duration_seconds",
                        &format!("{},endpoint=\"{e}\"", s.labels),
                    );
                }
            }
        }
        out.push_str("# HELP sluice_time_to_first_token_seconds Time from request received to the upstream's first streamed byte.\n# TYPE sluice_time_to_first_token_seconds histogram\n");
        for s in &self.series {
            let em = &s.endpoints[0];
            if em.ttft.count() > 0 {
                em.ttft.render(
                    out,
                    "sluice_time_to_first_token_seconds",
                    &format!("{},endpoint=\"chat\"", s.labels),
                );
            }
        }
    }

    /// Tokens counted, and those of them estimated.
    fn render_tokens(&self, out: &mut String) {
        out.push_str("# HELP sluice_tokens_total Tokens counted from upstream usage, by direction.\n# TYPE sluice_tokens_total counter\n");
        for s in &self.series {
            for (e, em) in ENDPOINTS.iter().zip(&s.endpoints) {
                for (dir, c) in [
                    ("in", &em.tokens_in),
                    ("out", &em.tokens_out),
                    ("cached_in", &em.tokens_cached),
                ] {
                    let n = c.load(Relaxed);
                    if n > 0 {
                        let _ = writeln!(
                            out,
                            "sluice_tokens_total{{{},endpoint=\"{e}\",direction=\"{dir}\"}} {n}",
                            s.labels
                        );
                    }
                }
            }
        }
        out.push_str("# HELP sluice_tokens_estimated_total Tokens in sluice_tokens_total that sluice estimated because the upstream streamed no usage (prompt from the request's size, completion from the content events).\n# TYPE sluice_tokens_estimated_total counter\n");
        for s in &self.series {
            for (e, em) in ENDPOINTS.iter().zip(&s.endpoints) {
                for (dir, c) in [
                    ("in", &em.tokens_estimated_in),
                    ("out", &em.tokens_estimated_out),
                ] {
                    let n = c.load(Relaxed);
                    if n > 0 {
                        let _ = writeln!(out, "sluice_tokens_estimated_total{{{},endpoint=\"{e}\",direction=\"{dir}\"}} {n}", s.labels);
                    }
                }
            }
        }
    }

    /// Upstream failures by kind.
    fn render_errors(&self, out: &mut String) {
        out.push_str("# HELP sluice_upstream_errors_total Upstream failures, by kind.\n# TYPE sluice_upstream_errors_total counter\n");
        for s in &self.series {
            for (e, em) in ENDPOINTS.iter().zip(&s.endpoints) {
                for ((_, kind), c) in UPSTREAM_ERRORS.iter().zip(&em.upstream_errors) {
                    let n = c.load(Relaxed);
                    if n > 0 {
                        let _ = writeln!(out, "sluice_upstream_errors_total{{{},endpoint=\"{e}\",kind=\"{kind}\"}} {n}", s.labels);
                    }
                }
            }
        }
    }

    /// Per-deployment counters: retries, breaker skips and openings.
    fn render_series_counters(&self, out: &mut String) {
        let per_series: [(&str, &str, SeriesCounter); 4] = [
            (
                "sluice_retries_total",
                "Tries after the first on a deployment.",
                |s| &s.retries,
            ),
            ("sluice_breaker_skips_total{reason=\"open\"}", "", |s| {
                &s.skipped_open
            }),
            (
                "sluice_breaker_skips_total{reason=\"rate_limited\"}",
                "",
                |s| &s.skipped_rate_limited,
            ),
            (
                "sluice_breaker_opened_total",
                "Times a deployment's circuit breaker opened.",
                |s| &s.breaker_opened,
            ),
        ];
        out.push_str("# HELP sluice_breaker_skips_total Requests that skipped a deployment whose breaker was open or which was cooling down after a 429.\n# TYPE sluice_breaker_skips_total counter\n");
        for (name, help, get) in per_series {
            let (metric, extra) = match name.split_once('{') {
                Some((m, rest)) => (m, format!(",{}", rest.trim_end_matches('}'))),
                None => (name, String::new()),
            };
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            }
            for s in &self.series {
                let n = get(s).load(Relaxed);
                if n > 0 {
                    let _ = writeln!(out, "{metric}{{{}{extra}}} {n}", s.labels);
                }
            }
        }
    }

    /// Per-route counters: fallbacks, degraded answers, exhaustion, canaries.
    fn render_routes(&self, out: &mut String) {
        let per_route: [(&str, &str, RouteCounter); 5] = [
            (
                "sluice_route_fallbacks_total",
                "Requests answered by a deployment other than the first planned.",
                |r| &r.fallbacks,
            ),
            (
                "sluice_route_degraded_total",
                "Requests answered with the route's static fallback response.",
                |r| &r.degraded,
            ),
            (
                "sluice_route_exhausted_total",
                "Requests that every deployment of the route failed.",
                |r| &r.exhausted,
            ),
            (
                "sluice_canary_requests_total",
                "Requests sent to a canary candidate.",
                |r| &r.canary_requests,
            ),
            (
                "sluice_canary_rollbacks_total",
                "Automatic and manual canary rollbacks.",
                |r| &r.canary_rollbacks,
            ),
        ];
        for (metric, help, get) in per_route {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            for r in &self.routes {
                let _ = writeln!(out, "{metric}{{{}}} {}", r.label, get(r).load(Relaxed));
            }
        }
    }

    /// In flight, queued, disconnects, connections.
    fn render_gauges(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP sluice_requests_queued Requests waiting for one of server.max_requests_in_flight.\n# TYPE sluice_requests_queued gauge\nsluice_requests_queued {}", self.queued.load(Relaxed));
        let _ = writeln!(out, "# HELP sluice_queue_timeouts_total Requests that waited past server.queue_timeout_ms (answered 503).\n# TYPE sluice_queue_timeouts_total counter\nsluice_queue_timeouts_total {}", self.queue_timeouts.load(Relaxed));
        let _ = writeln!(out, "# HELP sluice_requests_in_flight Requests being served now.\n# TYPE sluice_requests_in_flight gauge\nsluice_requests_in_flight {}", self.in_flight.load(Relaxed));
        let _ = writeln!(out, "# HELP sluice_client_disconnects_total Clients that went away before their response was complete.\n# TYPE sluice_client_disconnects_total counter\nsluice_client_disconnects_total {}", self.client_disconnects.load(Relaxed));
        let _ = writeln!(out, "# HELP sluice_connections_total Client connections accepted.\n# TYPE sluice_connections_total counter\nsluice_connections_total {}", self.connections.load(Relaxed));
    }
}

/// Counters of authentication, limits and spend.
#[derive(Debug, Default)]
pub struct TabMetrics {
    /// Requests refused with 401.
    pub auth_failures: AtomicU64,
    /// Refusals by requests per minute.
    pub refused_rpm: AtomicU64,
    /// Refusals by tokens per minute.
    pub refused_tpm: AtomicU64,
    /// Refusals by concurrent requests.
    pub refused_concurrency: AtomicU64,
    /// Refusals by budget.
    pub refused_budget: AtomicU64,
    /// Nano-USD spent upstream.
    pub spent_nano_usd: AtomicU64,
    /// Values guardrails found, by guardrail, detector and action (locked only when
    /// something is found).
    pub guardrail_findings:
        std::sync::Mutex<std::collections::BTreeMap<(String, String, &'static str), u64>>,
    /// The keys nearest their budget (read from the spend log in the background).
    pub budget_use: crate::budget_use::BudgetUse,
}

impl TabMetrics {
    /// Counts `nano_usd` spent, saturating: a forged or corrupt price (a record of
    /// `i64::MAX`, say) pins the counter at its largest value rather than wrapping it to a
    /// small one.
    pub fn add_spent(&self, nano_usd: u64) {
        let _ = self
            .spent_nano_usd
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_add(nano_usd)));
    }

    /// Counts what guardrails found.
    pub fn guarded(&self, findings: &[sluice_guard::Finding]) {
        if findings.is_empty() {
            return;
        }
        let mut m = self
            .guardrail_findings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for f in findings {
            *m.entry((f.guardrail.clone(), f.detector.clone(), f.action.as_str()))
                .or_insert(0) += 1;
        }
    }

    /// Counts a refusal by a check of `kind` (`tokens`: a tokens-per-minute window).
    pub fn refused(&self, kind: CheckKind, tokens: bool) {
        let c = match (kind, tokens) {
            (CheckKind::Budget { .. }, _) => &self.refused_budget,
            (CheckKind::Concurrency { .. }, _) => &self.refused_concurrency,
            (_, true) => &self.refused_tpm,
            _ => &self.refused_rpm,
        };
        c.fetch_add(1, Relaxed);
    }

    /// Appends the Prometheus text of these counters, the spend log's and the limiter's.
    pub fn render(&self, limiter: &Limiter, ledger: Option<&Ledger>, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP sluice_auth_failures_total Requests refused for a missing, unknown, revoked or expired key.\n# TYPE sluice_auth_failures_total counter\nsluice_auth_failures_total {}",
            self.auth_failures.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sluice_limit_refusals_total Requests refused by a rate limit, concurrency limit or budget.\n# TYPE sluice_limit_refusals_total counter"
        );
        for (limit, c) in [
            ("rpm", &self.refused_rpm),
            ("tpm", &self.refused_tpm),
            ("concurrency", &self.refused_concurrency),
            ("budget", &self.refused_budget),
        ] {
            let _ = writeln!(
                out,
                "sluice_limit_refusals_total{{limit=\"{limit}\"}} {}",
                c.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sluice_spend_usd_total Upstream spend priced by sluice, in USD.\n# TYPE sluice_spend_usd_total counter\nsluice_spend_usd_total {}",
            crate::money::usd(self.spent_nano_usd.load(Relaxed))
        );
        let _ = writeln!(
            out,
            "# HELP sluice_guardrail_findings_total Values guardrails found, by guardrail, detector and action (the values are never logged).\n# TYPE sluice_guardrail_findings_total counter"
        );
        let findings = self
            .guardrail_findings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((guardrail, detector, action), n) in findings.iter() {
            let _ = writeln!(
                out,
                "sluice_guardrail_findings_total{{guardrail=\"{}\",detector=\"{}\",action=\"{action}\"}} {n}",
                escape(guardrail),
                escape(detector)
            );
        }
        drop(findings);
        let _ = writeln!(
            out,
            "# HELP sluice_limiter_fallbacks_total Limiter calls served in process because Redis failed.\n# TYPE sluice_limiter_fallbacks_total counter\nsluice_limiter_fallbacks_total {}",
            limiter.fallbacks()
        );
        let _ = writeln!(
            out,
            "# HELP sluice_limiter_settles_dropped_total Limiter settles that never reached Redis (their call failed, or too many were queued).\n# TYPE sluice_limiter_settles_dropped_total counter\nsluice_limiter_settles_dropped_total {}",
            limiter.settles_dropped()
        );
        if let Some(l) = ledger {
            let _ = writeln!(
                out,
                "# HELP sluice_spend_log_records_total Spend records by what became of them.\n# TYPE sluice_spend_log_records_total counter"
            );
            for (result, n) in [
                ("written", l.written()),
                ("dropped", l.dropped()),
                ("failed", l.errors()),
            ] {
                let _ = writeln!(
                    out,
                    "sluice_spend_log_records_total{{store=\"{}\",result=\"{result}\"}} {n}",
                    l.kind()
                );
            }
            let _ = writeln!(
                out,
                "# HELP sluice_spend_log_queued Spend records waiting for the writer.\n# TYPE sluice_spend_log_queued gauge\nsluice_spend_log_queued {}",
                l.queued()
            );
            self.budget_use.render(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new([("gpt", "openai")], ["auto"]);
        let e = m.series(0).endpoint(Operation::Chat);
        e.count_status(200);
        e.count_status(418);
        e.latency.observe(Duration::from_millis(3));
        e.add_usage(&sluice_types::Usage {
            prompt_tokens: 5,
            completion_tokens: 7,
            ..Default::default()
        });
        e.upstream_error(UpstreamError::Timeout);
        m.unresolved().endpoint(Operation::Chat).count_status(404);
        let text = m.render();
        assert!(text.contains(r#"sluice_requests_total{model="gpt",provider="openai",endpoint="chat",status="200"} 1"#), "{text}");
        assert!(text.contains(r#"status="other"} 1"#));
        assert!(text.contains(
            r#"sluice_requests_total{model="",provider="",endpoint="chat",status="404"} 1"#
        ));
        assert!(text.contains(r#"sluice_request_duration_seconds_bucket{model="gpt",provider="openai",endpoint="chat",le="0.0025"} 0"#));
        assert!(text.contains(r#"sluice_request_duration_seconds_bucket{model="gpt",provider="openai",endpoint="chat",le="0.005"} 1"#));
        assert!(text.contains(r#"sluice_request_duration_seconds_count{model="gpt",provider="openai",endpoint="chat"} 1"#));
        assert!(text.contains(r#"direction="out"} 7"#));
        assert!(text.contains(r#"kind="timeout"} 1"#));
        assert_eq!(e.requests(), 2);
    }

    #[test]
    fn spend_saturates_rather_than_wrapping() {
        let m = TabMetrics::default();
        m.add_spent(5);
        assert_eq!(m.spent_nano_usd.load(Relaxed), 5);
        // Three records of i64::MAX would wrap a plain sum to a small number.
        for _ in 0..3 {
            m.add_spent(i64::MAX as u64);
        }
        assert_eq!(m.spent_nano_usd.load(Relaxed), u64::MAX);
        m.add_spent(1);
        assert_eq!(m.spent_nano_usd.load(Relaxed), u64::MAX);
    }
}
