//! Request coalescing: identical requests that arrive while the first is still upstream
//! wait for its answer instead of calling the upstream again.
//!
//! The first request with a key becomes the *leader* of a [`Flight`]; later ones are
//! *followers*. A non-streamed leader publishes its answer when it has it. A streamed
//! leader's upstream stream is driven by a task of its own (so that the leader's client
//! leaving does not cut the followers off), and every client of the flight, the leader's
//! included, reads the events from the flight: a follower that joins late first receives
//! every event sent so far, then the rest as it arrives. A follower whose mode differs from
//! the leader's (streaming or not, usage chunk or not) waits for the finished answer and is
//! served it in its own mode.
//!
//! A leader that fails (an error, no answer, a stream that did not finish cleanly, its
//! request dropped) marks the flight failed: its followers are released to try on their own
//! (the first of them to come back leads a new flight). A flight is taken out of the map
//! only after its answer is in the cache, so a request arriving at any moment either joins
//! the flight, hits the cache, or leads: never a second upstream call for a stored answer.
//! When every client of a streamed flight has gone, the upstream stream is dropped, which
//! cancels the upstream request, as for any stream.

use super::entry::Answer;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sluice_store::Key;
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{mpsc, watch, Notify};

/// Where a flight is.
#[derive(Debug, Clone)]
pub enum Status {
    /// The leader is waiting for the upstream.
    Pending,
    /// The leader's stream is on its way: clients in the same mode may subscribe.
    Streaming,
    /// The answer, stored.
    Done(Arc<Answer>),
    /// The leader failed: followers try on their own.
    Failed,
}

/// The events of a streamed flight so far, and who receives them.
#[derive(Debug, Default)]
struct Fan {
    /// `include_usage` of the leader's stream (its events carry a usage chunk or not).
    include_usage: bool,
    chunks: Vec<Bytes>,
    subscribers: Vec<mpsc::UnboundedSender<Bytes>>,
    closed: bool,
}

/// One key's request in flight.
#[derive(Debug)]
pub struct Flight {
    status: watch::Sender<Status>,
    fan: Mutex<Fan>,
    /// Clients that want this flight's answer (leader's included).
    interest: AtomicUsize,
    /// Signalled when `interest` drops to zero.
    gone: Notify,
}

impl Flight {
    fn new() -> Self {
        Self {
            status: watch::channel(Status::Pending).0,
            fan: Mutex::new(Fan::default()),
            interest: AtomicUsize::new(0),
            gone: Notify::new(),
        }
    }

    fn fan(&self) -> std::sync::MutexGuard<'_, Fan> {
        self.fan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a client; the guard unregisters it.
    pub fn interest(self: &Arc<Self>) -> Interest {
        self.interest.fetch_add(1, Ordering::AcqRel);
        Interest(Arc::clone(self))
    }

    /// Whether no client wants the answer any more.
    pub fn abandoned(&self) -> bool {
        self.interest.load(Ordering::Acquire) == 0
    }

    /// Waits until the last client has gone (may wake spuriously: check [`Self::abandoned`]).
    pub async fn gone(&self) {
        self.gone.notified().await;
    }

    /// The leader's stream starts: clients in its mode may subscribe from now on.
    pub fn start_stream(&self, include_usage: bool) {
        self.fan().include_usage = include_usage;
        self.status.send_replace(Status::Streaming);
    }

    /// Sends one piece of the stream to every subscriber and keeps it for late ones.
    pub fn push(&self, chunk: Bytes) {
        let mut fan = self.fan();
        fan.subscribers.retain(|s| s.send(chunk.clone()).is_ok());
        fan.chunks.push(chunk);
    }

    /// Subscribes to the stream: everything sent so far, then the rest. `None` if the
    /// stream is in another mode or already over.
    pub fn subscribe(self: &Arc<Self>, include_usage: bool) -> Option<FlightBody> {
        let interest = self.interest();
        let mut fan = self.fan();
        if fan.closed || fan.include_usage != include_usage {
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for c in &fan.chunks {
            let _ = tx.send(c.clone());
        }
        fan.subscribers.push(tx);
        drop(fan);
        Some(FlightBody {
            rx,
            _interest: interest,
        })
    }

    fn close(&self, status: Status) {
        let mut fan = self.fan();
        fan.closed = true;
        fan.subscribers.clear();
        fan.chunks = Vec::new();
        drop(fan);
        self.status.send_replace(status);
    }

    /// Waits until the flight has an answer, has failed, or (for a client in the leader's
    /// stream mode) is streaming.
    pub async fn wait(&self, stream_mode: Option<bool>) -> Status {
        let mut rx = self.status.subscribe();
        loop {
            let status = rx.borrow_and_update().clone();
            match status {
                Status::Done(_) | Status::Failed => return status,
                Status::Streaming if stream_mode == Some(self.fan().include_usage) => {
                    return status
                }
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Status::Failed;
            }
        }
    }
}

/// A client's claim on a flight's answer.
#[derive(Debug)]
pub struct Interest(Arc<Flight>);

impl Drop for Interest {
    fn drop(&mut self) {
        if self.0.interest.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.gone.notify_one();
        }
    }
}

/// The flights in the air, by key.
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<Key, Arc<Flight>>>,
}

/// What a request is in its key's flight.
pub enum Join {
    /// First: call the upstream and settle the flight.
    Leader(Leader),
    /// Another is already upstream: wait for it.
    Follower(Arc<Flight>),
}

impl Flights {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Flight>>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Joins the flight of `key`, or starts one.
    pub fn join(self: &Arc<Self>, key: Key) -> Join {
        let mut map = self.map();
        if let Some(f) = map.get(&key) {
            return Join::Follower(Arc::clone(f));
        }
        let flight = Arc::new(Flight::new());
        map.insert(key, Arc::clone(&flight));
        Join::Leader(Leader {
            flights: Arc::clone(self),
            key,
            flight,
            settled: false,
        })
    }

    /// A flight of one, not in the map: nobody joins it (coalescing off), but its stream
    /// is driven and stored the same way.
    pub fn solo(self: &Arc<Self>, key: Key) -> Leader {
        Leader {
            flights: Arc::clone(self),
            key,
            flight: Arc::new(Flight::new()),
            settled: false,
        }
    }

    /// Flights in the air.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// No flight in the air.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    fn remove(&self, key: &Key, flight: &Arc<Flight>) {
        let mut map = self.map();
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }
}

/// The leader's handle on its flight. Dropped unsettled, it fails the flight.
pub struct Leader {
    flights: Arc<Flights>,
    key: Key,
    flight: Arc<Flight>,
    settled: bool,
}

impl Leader {
    /// The flight.
    pub fn flight(&self) -> &Arc<Flight> {
        &self.flight
    }

    /// The key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Publishes the answer (already in the cache) and lands the flight.
    pub fn done(mut self, answer: Arc<Answer>) {
        self.settle(Status::Done(answer));
    }

    /// Lands the flight without an answer: followers try on their own.
    pub fn fail(mut self) {
        self.settle(Status::Failed);
    }

    fn settle(&mut self, status: Status) {
        if self.settled {
            return;
        }
        self.settled = true;
        self.flights.remove(&self.key, &self.flight);
        self.flight.close(status);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.settle(Status::Failed);
    }
}

/// A client's view of a streamed flight.
#[derive(Debug)]
pub struct FlightBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
    _interest: Interest,
}

impl Body for FlightBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|c| c.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn answer() -> Arc<Answer> {
        Arc::new(Answer {
            meta: super::super::entry::Meta::default(),
            body: Bytes::from_static(b"{}"),
        })
    }

    #[tokio::test]
    async fn one_leader_then_followers_get_its_answer() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(leader) = flights.join([1; 32]) else {
            panic!("first is the leader")
        };
        let Join::Follower(f) = flights.join([1; 32]) else {
            panic!("second follows")
        };
        assert!(matches!(flights.join([2; 32]), Join::Leader(_)));
        let waiting = tokio::spawn(async move { f.wait(None).await });
        leader.done(answer());
        assert!(matches!(waiting.await.expect("joined"), Status::Done(_)));
        assert_eq!(flights.len(), 0, "a landed flight leaves the map");
        assert!(matches!(flights.join([1; 32]), Join::Leader(_)));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(leader) = flights.join([1; 32]) else {
            panic!("leader")
        };
        let Join::Follower(f) = flights.join([1; 32]) else {
            panic!("follower")
        };
        drop(leader);
        assert!(matches!(f.wait(None).await, Status::Failed));
        assert!(matches!(flights.join([1; 32]), Join::Leader(_)));
    }

    #[tokio::test]
    async fn late_subscribers_get_the_stream_from_the_start() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(leader) = flights.join([1; 32]) else {
            panic!("leader")
        };
        let flight = Arc::clone(leader.flight());
        flight.start_stream(false);
        let early = flight.subscribe(false).expect("same mode");
        flight.push(Bytes::from_static(b"a"));
        let late = flight.subscribe(false).expect("same mode");
        assert!(flight.subscribe(true).is_none(), "another usage mode waits");
        flight.push(Bytes::from_static(b"b"));
        leader.done(answer());
        for body in [early, late] {
            let all = body.collect().await.expect("infallible").to_bytes();
            assert_eq!(&all[..], b"ab");
        }
        assert!(flight.subscribe(false).is_none(), "closed");
    }

    #[tokio::test]
    async fn interest_counts_clients() {
        let flight = Arc::new(Flight::new());
        let a = flight.interest();
        let b = flight.interest();
        drop(a);
        assert!(!flight.abandoned());
        drop(b);
        assert!(flight.abandoned());
        // The permit is kept for a waiter that comes later.
        tokio::time::timeout(std::time::Duration::from_secs(5), flight.gone())
            .await
            .expect("notified");
    }
}
