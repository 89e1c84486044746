//! OpenTelemetry traces over OTLP/HTTP (protobuf), with sluice's own small pieces: W3C
//! trace context (`context`), the span data model (`span`), its protobuf encoding
//! (`otlp`), and the exporter thread (`export`, posting with `post`). What a request's
//! spans say (GenAI attributes, attempts, events) is the pipeline's business
//! (`pipeline/traced.rs`); this module only carries spans to the receiver.
//!
//! Without `[observability] otlp_endpoint` there is no [`Tracer`], and the pipeline builds
//! no span.

pub mod context;
mod export;
pub mod otlp;
mod post;
pub mod span;

use export::{Counters, Msg};
use sluice_core::config::ObservabilityConfig;
use span::Span;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Sends finished spans to the OTLP receiver, in batches, from a thread of its own.
#[derive(Debug)]
pub struct Tracer {
    tx: mpsc::Sender<Msg>,
    counters: Arc<Counters>,
}

impl Tracer {
    /// The tracer of `config`, when it names a receiver (its exporter thread started).
    pub fn start(config: &ObservabilityConfig) -> std::io::Result<Option<Arc<Self>>> {
        let Some(endpoint) = config.otlp.clone() else {
            return Ok(None);
        };
        let (tx, rx) = mpsc::channel(config.otlp_queue);
        let counters = Arc::new(Counters::default());
        export::spawn(config, endpoint, rx, Arc::clone(&counters))?;
        Ok(Some(Arc::new(Self { tx, counters })))
    }

    /// Queues one request's spans for export; drops (and counts) them when the queue is
    /// full. Never waits.
    pub fn submit(&self, spans: Vec<Span>) {
        if let Err(e) = self.tx.try_send(Msg::Spans(spans)) {
            let n = match e.into_inner() {
                Msg::Spans(s) => s.len(),
                Msg::Flush(_) => 0,
            };
            self.counters.dropped_full.fetch_add(n as u64, Relaxed);
        }
    }

    /// Sends everything queued so far and waits (at most `timeout`) until it was.
    pub async fn flush(&self, timeout: Duration) {
        let (done, sent) = oneshot::channel();
        let flushed = async {
            if self.tx.send(Msg::Flush(done)).await.is_ok() {
                let _ = sent.await;
            }
        };
        if tokio::time::timeout(timeout, flushed).await.is_err() {
            tracing::warn!("OTLP traces were not all sent before shutdown");
        }
    }

    /// The exporter's counters, in Prometheus text.
    pub fn render(&self, out: &mut String) {
        let c = &self.counters;
        let _ = write!(
            out,
            "# HELP sluice_trace_spans_exported_total Spans the OTLP receiver accepted.\n\
             # TYPE sluice_trace_spans_exported_total counter\n\
             sluice_trace_spans_exported_total {}\n\
             # HELP sluice_trace_spans_dropped_total Spans not exported: the exporter's queue was full, or their export failed.\n\
             # TYPE sluice_trace_spans_dropped_total counter\n\
             sluice_trace_spans_dropped_total{{reason=\"queue_full\"}} {}\n\
             sluice_trace_spans_dropped_total{{reason=\"export_failed\"}} {}\n",
            c.exported.load(Relaxed),
            c.dropped_full.load(Relaxed),
            c.dropped_failed.load(Relaxed),
        );
    }
}
