//! The gateway's bound on requests running at once (`server.max_requests_in_flight`).
//!
//! A request to a proxied endpoint (one the pipeline serves) takes one of the bound's slots
//! before its handler starts, and holds it until its answer ended (a stream's last byte).
//! Past the bound it waits, in arrival order, within `server.queue_timeout_ms` (then a 503),
//! holding only its head and the bytes read with it: the handler's state (a boxed future of
//! some kilobytes, its body, its parsed request) is made only once it runs. So a burst of
//! connections many times what the upstreams take at once costs little more than its
//! sockets, where otherwise every request would wait inside the pipeline for an upstream
//! slot with all of that held. The bound is shared out among the worker threads, as the
//! providers' slots are (`sluice_providers::slots`). Everything else (health, metrics, the
//! admin API, models, files, batches) is never held back by it, nor are HTTP/2 requests: a
//! waiting HTTP/2 stream's unread body would hold its connection's flow-control window, which
//! the running streams of the same connection may need to send theirs.

use crate::endpoint::Endpoint;
use crate::metrics::Metrics;
use http::{Method, Request};
use sluice_core::{Error, ErrorKind};
use sluice_providers::slots::{Slot, Slots};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The bound and how long a request waits for it.
pub struct Admission {
    slots: Slots,
    bound: Option<usize>,
    timeout: Duration,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("bound", &self.bound)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// `bound` requests at once (`None`: no bound), shared out among `workers`.
    pub fn new(bound: Option<usize>, workers: usize, timeout: Duration) -> Self {
        Self {
            slots: Slots::new(bound.unwrap_or(0), workers),
            bound,
            timeout,
        }
    }

    /// Whether this is the bound `bound` with `timeout`.
    pub fn is(&self, bound: Option<usize>, timeout: Duration) -> bool {
        self.bound == bound && self.timeout == timeout
    }

    /// Whether `req` is held to the bound: a `POST` to a proxied endpoint.
    pub fn holds<B>(req: &Request<B>) -> bool {
        req.method() == Method::POST && Endpoint::at(req.uri().path()).is_some()
    }

    /// A slot for a request that [`Admission::holds`] (`None` without a bound), waiting
    /// for one if need be; `waits` runs first when it must wait (the connection lets go of
    /// what it does not need meanwhile). An error (503) when none freed within the timeout.
    pub async fn admit(
        &self,
        metrics: &Metrics,
        waits: impl FnOnce(),
    ) -> Result<Option<Slot>, Error> {
        let worker = sluice_providers::worker();
        if let Ok(slot) = self.slots.try_take(worker) {
            return Ok(slot);
        }
        waits();
        let queued = Queued::count(metrics);
        let waited = tokio::time::timeout(self.timeout, self.slots.take(worker)).await;
        drop(queued);
        waited.map_err(|_| {
            metrics.queue_timeouts.fetch_add(1, Relaxed);
            ErrorKind::Unavailable {
                message: format!(
                    "the gateway is running its most requests at once ({}, \
                     `server.max_requests_in_flight`) and none ended within {} ms \
                     (`server.queue_timeout_ms`)",
                    self.bound.unwrap_or_default(),
                    self.timeout.as_millis()
                ),
            }
            .into()
        })
    }
}

/// A request counted in `sluice_requests_queued` while it waits, however the wait ends
/// (admitted, timed out, or dropped with its client).
struct Queued<'m>(&'m Metrics);

impl<'m> Queued<'m> {
    fn count(metrics: &'m Metrics) -> Self {
        metrics.queued.fetch_add(1, Relaxed);
        Self(metrics)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Waker};

    fn metrics() -> Metrics {
        Metrics::new([], [])
    }

    #[tokio::test]
    async fn a_request_past_the_bound_waits_and_says_so_first() {
        let admission = Admission::new(Some(1), 1, Duration::from_secs(60));
        let m = metrics();
        let held = admission.admit(&m, || panic!("a free slot: no wait")).await;
        let held = held.unwrap();
        assert!(held.is_some());
        let mut told = false;
        let mut second = Box::pin(admission.admit(&m, || told = true));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert_eq!(m.queued.load(Relaxed), 1);
        drop(held);
        let std::task::Poll::Ready(Ok(Some(_))) = second.as_mut().poll(&mut cx) else {
            panic!("the freed slot goes to the waiting request");
        };
        drop(second);
        assert!(told, "the wait was announced");
        assert_eq!(m.queued.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn a_request_that_waits_past_the_timeout_gets_a_503() {
        let admission = Admission::new(Some(1), 1, Duration::from_millis(50));
        let m = metrics();
        let _held = admission.admit(&m, || {}).await.unwrap();
        let err = admission.admit(&m, || {}).await.unwrap_err();
        assert_eq!(err.status_code(), 503);
        assert!(err.to_string().contains("max_requests_in_flight"), "{err}");
        assert_eq!(m.queue_timeouts.load(Relaxed), 1);
        assert_eq!(m.queued.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn a_request_dropped_while_it_waits_is_no_longer_counted() {
        let admission = Admission::new(Some(1), 1, Duration::from_secs(60));
        let m = metrics();
        let _held = admission.admit(&m, || {}).await.unwrap();
        let mut waiting = Box::pin(admission.admit(&m, || {}));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(m.queued.load(Relaxed), 1);
        drop(waiting);
        assert_eq!(m.queued.load(Relaxed), 0, "its client left");
    }

    #[tokio::test]
    async fn without_a_bound_nothing_waits() {
        let admission = Admission::new(None, 2, Duration::from_secs(1));
        let m = metrics();
        for _ in 0..100 {
            let slot = admission.admit(&m, || panic!("no wait")).await.unwrap();
            assert!(slot.is_none());
        }
    }

    #[test]
    fn only_the_proxied_endpoints_are_held() {
        let req = |method: Method, path: &str| {
            Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap()
        };
        assert!(Admission::holds(&req(Method::POST, "/v1/chat/completions")));
        assert!(Admission::holds(&req(Method::POST, "/v1/messages")));
        assert!(!Admission::holds(&req(Method::GET, "/v1/models")));
        assert!(!Admission::holds(&req(Method::GET, "/health")));
        assert!(!Admission::holds(&req(
            Method::POST,
            "/admin/config/reload"
        )));
        assert!(!Admission::holds(&req(Method::GET, "/v1/chat/completions")));
    }
}
