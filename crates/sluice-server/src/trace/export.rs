//! The exporter: a thread of its own, off every request's path, that takes finished
//! requests' spans from a bounded queue (drained every 10 ms, never waited on), gathers them
//! into batches (full at `otlp_max_batch` requests, or sent after `otlp_flush_interval_ms`),
//! encodes each batch and posts it. What does not fit the queue, or is refused by the
//! receiver, is dropped and counted; nothing is retried.

use super::otlp::{self, Source};
use super::post::Poster;
use super::span::{Span, Value};
use bytes::Bytes;
use sluice_core::config::{ObservabilityConfig, OtlpEndpoint};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How often the exporter drains its queue.
const TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// What the queue carries.
pub enum Msg {
    /// One request's spans.
    Spans(Vec<Span>),
    /// Send what is queued now, then say so.
    Flush(oneshot::Sender<()>),
}

/// The exporter's counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Spans the receiver accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped_full: AtomicU64,
    /// Spans dropped because their export failed.
    pub dropped_failed: AtomicU64,
}

/// How batches are made and sent.
struct Exporter {
    rx: mpsc::Receiver<Msg>,
    poster: Poster,
    counters: Arc<Counters>,
    max_batch: usize,
    interval: std::time::Duration,
    resource: Vec<(&'static str, Value)>,
    /// The last export failed (its error was logged; the next failures are not).
    failing: bool,
}

/// Starts the exporter's thread for `config`'s receiver.
pub fn spawn(
    config: &ObservabilityConfig,
    endpoint: OtlpEndpoint,
    rx: mpsc::Receiver<Msg>,
    counters: Arc<Counters>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exporter = Exporter {
        rx,
        poster: Poster::new(endpoint, config.otlp_timeout),
        counters,
        max_batch: config.otlp_max_batch,
        interval: config.otlp_flush_interval,
        resource: vec![
            (
                "service.name",
                Value::Str(config.service_name.as_str().into()),
            ),
            ("service.version", Value::Static(env!("CARGO_PKG_VERSION"))),
            ("telemetry.sdk.name", Value::Static("sluice")),
            ("telemetry.sdk.language", Value::Static("rust")),
        ],
        failing: false,
    };
    std::thread::Builder::new()
        .name("sluice-otlp".into())
        .spawn(move || runtime.block_on(exporter.run()))?;
    Ok(())
}

impl Exporter {
    /// Drains the queue every [`TICK`] without waiting on it: a sender never has to wake
    /// this thread (a wake-up per request, a futex call and a context switch, cost the
    /// request path more than building its spans). A batch goes when it is full, when
    /// `otlp_flush_interval_ms` has passed since the last, on a flush, and at the end.
    async fn run(mut self) {
        let mut batch: Vec<Vec<Span>> = Vec::with_capacity(self.max_batch);
        let mut buf = Vec::new();
        let mut tick = tokio::time::interval(TICK.min(self.interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut due = Instant::now() + self.interval;
        let mut flushes = Vec::new();
        loop {
            tick.tick().await;
            let open = loop {
                match self.rx.try_recv() {
                    Ok(Msg::Spans(spans)) => {
                        batch.push(spans);
                        if batch.len() >= self.max_batch {
                            self.export(&mut batch, &mut buf).await;
                            due = Instant::now() + self.interval;
                        }
                    }
                    Ok(Msg::Flush(done)) => flushes.push(done),
                    Err(TryRecvError::Empty) => break true,
                    // Every sender is gone: the gateway stopped.
                    Err(TryRecvError::Disconnected) => break false,
                }
            };
            if !open || !flushes.is_empty() || Instant::now() >= due {
                self.export(&mut batch, &mut buf).await;
                due = Instant::now() + self.interval;
                for done in flushes.drain(..) {
                    let _ = done.send(());
                }
            }
            if !open {
                return;
            }
        }
    }

    /// Encodes and posts `batch` (emptied), counting what arrived and what did not.
    async fn export(&mut self, batch: &mut Vec<Vec<Span>>, buf: &mut Vec<u8>) {
        if batch.is_empty() {
            return;
        }
        let source = Source {
            resource: &self.resource,
            scope: "sluice",
            version: env!("CARGO_PKG_VERSION"),
        };
        buf.clear();
        otlp::encode(buf, &source, batch.iter().flatten());
        let spans: usize = batch.iter().map(Vec::len).sum();
        batch.clear();
        // The encoded batch itself is the body; the next batch gets a buffer of its size.
        let room = buf.capacity();
        let body = std::mem::replace(buf, Vec::with_capacity(room));
        match self.poster.post(Bytes::from(body)).await {
            Ok(()) => {
                self.counters.exported.fetch_add(spans as u64, Relaxed);
                if std::mem::take(&mut self.failing) {
                    tracing::info!("OTLP traces are exported again");
                }
            }
            Err(e) => {
                self.counters
                    .dropped_failed
                    .fetch_add(spans as u64, Relaxed);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(error = %e, spans, "OTLP trace export failed; spans dropped");
                }
            }
        }
    }
}
