//! Payload sampling (`[observability] sample_rate`): which requests are kept, and what of
//! them. A sampled request's body (as sent upstream: after the guardrails' redactions) and
//! its whole answer (as the client got it) are cleaned once more before they are stored:
//! every secret the `secret` detector knows (provider keys, tokens, private keys) and every
//! value the configured `redact` guardrails find is replaced by a placeholder, so neither
//! an API key nor a redacted value is ever kept. Headers (and so the caller's own key) are
//! never kept at all. Streamed answers and errors' answers are not kept (the request is,
//! with `response: null`).
//!
//! The request pays for the draw and, when sampled, for holding its bodies (shared, not
//! copied; a body above `sample_max_bytes` is dropped there and then, for a note of its
//! size). Cleaning and writing happen on the writer's thread ([`writer`]), behind a
//! bounded queue. Without a rate there is no [`Sampler`] and nothing is drawn.

mod clean;
mod writer;

pub use clean::Cleaners;
pub use writer::Writer;

use bytes::Bytes;
use clean::omitted;
use sluice_core::config::{GuardrailConfig, ObservabilityConfig};
use sluice_core::rng;
use sluice_guard::{Action, Guardrail};
use sluice_store::samples::Sample;
use std::sync::Arc;

/// Decides which requests are sampled and hands them to the writer. One per config (the
/// `redact` guardrails may change on reload); the writer is the gateway's.
#[derive(Debug)]
pub struct Sampler {
    writer: Arc<Writer>,
    rate: f64,
    retention_ms: u64,
    max_bytes: usize,
    cleaners: Cleaners,
}

/// A sampled request, as far as it went.
#[derive(Debug, Default)]
pub struct Draft {
    /// The request body, as sent upstream.
    pub request: Bytes,
    /// The model or route the client named.
    pub model: String,
    /// The key's id.
    pub key_id: Option<String>,
    /// The whole answer the client got.
    pub response: Option<Bytes>,
}

/// How a sampled request ended.
#[derive(Debug)]
pub struct Ended {
    /// `x-request-id`.
    pub request_id: String,
    /// The operation.
    pub endpoint: &'static str,
    /// The route, when the client named one.
    pub route: Option<String>,
    /// The deployment that answered, or was tried last.
    pub deployment: Option<String>,
    /// That deployment is its route's canary candidate.
    pub canary: bool,
    /// The status the client got.
    pub status: u16,
}

impl Sampler {
    /// The sampler of `config`, handing samples to `writer`; `None` without sampling.
    pub fn new(
        writer: Option<&Arc<Writer>>,
        config: &ObservabilityConfig,
        guardrails: &[GuardrailConfig],
    ) -> Option<Self> {
        let writer = Arc::clone(writer?);
        if config.sample_rate <= 0.0 {
            return None;
        }
        let secret = Guardrail::new("sampled secrets", &["secret".into()], &[], Action::Redact)
            .map(Arc::new)
            .map_err(|e| tracing::error!(error = %e, "the secret detector is missing"))
            .ok();
        let cleaners = secret
            .into_iter()
            .chain(
                guardrails
                    .iter()
                    .filter_map(|g| g.guard.clone())
                    .filter(|g| g.action == Action::Redact),
            )
            .collect();
        Some(Self {
            writer,
            rate: config.sample_rate,
            retention_ms: u64::try_from(config.sample_retention.as_millis()).unwrap_or(u64::MAX),
            max_bytes: config.sample_max_bytes,
            cleaners,
        })
    }

    /// Whether the next request is sampled.
    pub fn picks(&self) -> bool {
        self.rate >= 1.0 || rng::unit() < self.rate
    }

    /// `body` if it is at most `sample_max_bytes`, else a note of its size (so a queued
    /// sample never holds a large body).
    pub fn bound(&self, body: Bytes) -> Bytes {
        match body.len() <= self.max_bytes {
            true => body,
            false => omitted(body.len()),
        }
    }

    /// Queues `draft` as it `ended`, to be cleaned and written by the writer (dropped, and
    /// counted, when the writer's queue is full). Never waits.
    pub fn keep(&self, draft: Draft, ended: Ended) {
        let now = sluice_store::unix_now_ms();
        let sample = Sample {
            ts_ms: now,
            expires_ms: now.saturating_add(self.retention_ms),
            request_id: ended.request_id,
            key_id: draft.key_id,
            endpoint: ended.endpoint.into(),
            model: draft.model,
            route: ended.route,
            deployment: ended.deployment,
            canary: ended.canary,
            status: ended.status,
            request: draft.request,
            response: draft.response,
        };
        self.writer.submit(sample, Arc::clone(&self.cleaners));
    }

    /// The writer (its store, for the admin API).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }
}
