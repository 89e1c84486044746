//! The global limiter: the state in Redis, every admission decided by a Lua script
//! (`EVALSHA`) that checks every check of the request and, only if all pass, charges all of
//! them; Redis runs a script alone, so no two replicas ever both take the last unit. A
//! settle runs in the same script, when it has anything to do. The script transcribes the
//! memory limiter (same decisions, same `now`: the caller's clock, never Redis `TIME`), with
//! as few Redis calls as that allows: each call inside a script costs about as much as the
//! work it does.
//!
//! Layout, for a configured `prefix` and a check named `name` (`K` = `{prefix}lim:{name}`):
//! - Window: `K#w`, a HASH: one field per 1-second bucket (second -> units), plus `t`, the
//!   sum of the buckets, and `o`, a second no bucket is older than. An admission reads `t`,
//!   `o` and the current bucket (one `HMGET`), admits iff `t + cost <= limit`, and charges
//!   the bucket and `t` in one `HSET`. When `o` is older than the window (at most once a
//!   second), it first expires the buckets from `o` to the window's start: one `HMGET` and
//!   one `HDEL` of those fields (an `HGETALL` after a gap of more than 20 s), subtracted
//!   from `t`, and `o` moves to the window's start. Only a refusal reads every bucket
//!   (`HGETALL`), for its retry-after. A hash without `t` (a new key, or one a settle
//!   made) is counted from its fields. The key expires 65 s (61 s plus slack for clock
//!   skew) after its newest bucket was made: `PEXPIRE` only when a call makes a bucket.
//! - Concurrency: `K`, a ZSET ticket id -> lease expiry. Admitted iff the members + 1 <=
//!   limit (`ZCARD`) or, when not, the live ones (`ZCOUNT` of the expiries `> now`) + 1 <=
//!   limit: the same decision, as expired leases only ever add. The key's expiry: when
//!   `PTTL` shows less than the lease plus a minute left, it is set to the lease plus two
//!   minutes, and the expired members are deleted (so about once a minute).
//! - Budget: `K`, the spent counter, a decimal string (`INCRBY` at settle, `SET NX` at seed;
//!   `PEXPIRE` to a day past the window's end, when it has one, as a settle creates it);
//!   `K#reserved`, the reservations' total, a decimal string; and `K#leases`, a ZSET
//!   `{ticket id}:{amount}` -> reservation expiry (the amount in the member: releasing an
//!   expired reservation needs no other lookup, and a settle finds its own by the check's
//!   `reserve`). Admitted iff spent + reserved + `reserve` <= limit (one `MGET`), counting
//!   the expired reservations too unless that refuses: then they are released first
//!   (`ZRANGEBYSCORE`) and it looks again. The expired ones are also released when the
//!   expiry of `K#leases` and `K#reserved` (always one expiry, set like a concurrency
//!   key's) is extended.
//!
//! The window and reservation keys are named apart from the previous layout's (a window's
//! `K`, `K#settled`, `K#res`, `K#lease`: no longer written, they expire): during a rolling
//! upgrade, old and new replicas on one Redis count those limits separately rather than
//! corrupt each other's totals. The concurrency ZSET and the spent counter are unchanged,
//! and shared.
//!
//! Settle is called once per ticket: the caller's contract (the gateway takes the ticket
//! out of an `Option`). It is what lets a window settle be a plain correction of its
//! bucket, with no record of the tickets settled (a second settle corrects it again, in
//! the memory limiter too). A lease or a reservation is removed once, so those settles are
//! idempotent anyway. Only the checks that change something are sent: a window whose actual
//! equals its cost, or whose bucket has left the window, is dropped on this side, and a
//! settle left with nothing (an rpm-only request) makes no call. A reservation whose lease
//! has ended (`Ticket::lease_ends`) is released with nothing spent.
//!
//! Batches: one call carries many tickets. Each thread (a sluice worker runs one runtime on
//! one thread) has its own queue per limiter, a lane: an admission or a settle joins it, and
//! when no call is out for that lane, a task (a flight) is spawned that sends everything
//! queued, up to [`MAX_BATCH`] admissions and as many settles, in one script call, hands
//! each admission its own answer, and goes again while more was queued meanwhile. So a
//! request costs at most one round trip on its way in, shared with the requests of its
//! thread that arrived while the previous call was out, and its settle rides on a later
//! call, off the request path: settles alone wait up to `SETTLE_WAIT` (2 ms) for an
//! admission to ride with, so that one client's next request does not wait for its
//! previous request's settle call. Within a call the settles run first, then the admissions
//! one after the other, each atomic on its own, exactly as if sent alone. An admission
//! whose caller stopped waiting while its call was out (the request was cancelled) is
//! given back: its concurrency slots and reservations are released by a settle queued for
//! the next call (its windows keep the charge, as for any request dropped before its end).
//!
//! Settles the caller does not wait for ([`RedisLimiter::settle_later`], the gateway's)
//! wait in the lane, at most [`SETTLE_QUEUE`] per thread; beyond that a settle is dropped
//! and counted ([`RedisLimiter::settles_dropped`]), like one whose call failed. What a
//! crash (SIGKILL) loses is the queued settles and those in the call that was out: in
//! practice the requests that ended during the last round trip, never more than
//! [`SETTLE_QUEUE`] + [`MAX_BATCH`] per worker thread. A lost settle costs what a replica
//! that dies mid-request costs: its lease and its reservation end when the lease does
//! (`[limits] lease`), its token window keeps the estimate (over-counted, never under),
//! and its budget counter misses the actual cost until the counter is seeded again from
//! the durable spend log (after it expires, or Redis restarts). [`RedisLimiter::flush`]
//! sends the queued settles at shutdown.
//!
//! The script is loaded once with `SCRIPT LOAD` and run with `EVALSHA`; after `NOSCRIPT`
//! (a restarted or flushed Redis) the call is sent again as `EVAL`, which caches it anew.
//! The arguments come formatted from here (seconds, expiries, members, retry-afters, a
//! window settle's signed correction) and the kinds of the checks as one string (`w`, `c`,
//! `b` per check). Lua numbers are doubles: limits, costs and amounts are capped at 2^53 - 1
//! on the way in (9 million USD in nano-USD), below which the script's arithmetic is exact.
//!
//! Failures fail open: when a script call fails (Redis down, a timeout, an error reply),
//! each admission of its batch goes to an in-process [`MemoryLimiter`] (the ticket says
//! `fallback: true`, and its settle goes there too), is counted
//! ([`RedisLimiter::fallbacks`]) and logged at warn at most once per `WARN_EVERY`. The
//! client's backoff makes the calls during an outage fail at once. `spent`, `seed` and the
//! awaited settle of a Redis ticket return the error; a settle not waited for is counted
//! ([`RedisLimiter::settles_dropped`]). While failing over, each replica enforces every
//! limit on its own (so up to the limit per replica). A call that timed out may still have
//! run: its charges stay in Redis until their leases or windows end.
//!
//! One Redis, not a Redis Cluster: a request's keys need not share a hash slot.

mod encode;
mod lane;
mod lua;

use super::check::{millis, Check, Denial, Ticket, BUDGET_GRACE_MS};
use super::memory::MemoryLimiter;
use crate::redis::{RedisClient, Value};
use crate::{unix_now_ms, StoreError, UnixMs};
use encode::{num, Keys, Part};
use lane::{Admit, AdmitReply, Batch, Claim, Flying, Lane, Settle};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// At most one warning per this long.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// The most admissions, and the most settles, one script call carries (Redis runs nothing
/// else while the script runs: about 40 µs per admission with four checks).
pub const MAX_BATCH: usize = 64;

/// The most settles waiting in one thread's lane; more are dropped (and counted).
pub const SETTLE_QUEUE: usize = 4_096;

/// How long queued settles wait for an admission to share their call.
const SETTLE_WAIT: Duration = Duration::from_millis(2);

/// How often [`RedisLimiter::flush`] looks again at a lane whose flight is out.
const FLUSH_POLL: Duration = Duration::from_millis(2);

static NEXT_LIMITER_ID: AtomicU64 = AtomicU64::new(1);

/// This thread's lanes, by limiter id; the `Weak` tells when a limiter is gone.
type Lanes = HashMap<u64, (Weak<Inner>, Arc<Lane>)>;

thread_local! {
    static LANES: RefCell<Lanes> = RefCell::new(HashMap::new());
}

/// The script's source and, once loaded, its SHA1.
#[derive(Debug)]
struct Script {
    src: &'static str,
    sha: OnceLock<String>,
}

struct Inner {
    id: u64,
    client: RedisClient,
    keys: Keys,
    script: Script,
    fallback: MemoryLimiter,
    fallbacks: AtomicU64,
    settles_dropped: AtomicU64,
    /// Every thread's lane, for [`RedisLimiter::flush`].
    lanes: Mutex<Vec<Arc<Lane>>>,
    epoch: Instant,
    /// When the last warning went out (ms since `epoch`, plus 1; 0: never).
    warned_at: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("client", &self.client)
            .field("prefix", &self.keys.prefix)
            .finish_non_exhaustive()
    }
}

/// The Redis limiter. Cheap to clone; clones share the client, the script's SHA1, the
/// lanes, the fallback and the counters.
#[derive(Debug, Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

/// A copy of `e` for each of the callers whose batch it failed.
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Timeout(d) => StoreError::Timeout(*d),
        StoreError::Protocol(s) => StoreError::Protocol(s.clone()),
        StoreError::Reply(s) => StoreError::Reply(s.clone()),
        StoreError::Io(io) => StoreError::Io(std::io::Error::new(io.kind(), io.to_string())),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Reads one admission's entry of the script's reply.
fn admit_reply(reply: Value) -> Result<Result<(), Denial>, StoreError> {
    let bad = || StoreError::Protocol("limiter admit: unexpected reply".into());
    let Value::Array(parts) = reply else {
        return Err(bad());
    };
    match parts.as_slice() {
        [Value::Int(1)] => Ok(Ok(())),
        [Value::Int(0), Value::Int(index), Value::Int(retry)] => Ok(Err(Denial {
            index: usize::try_from(*index).map_err(|_| bad())?,
            retry_after_ms: u64::try_from(*retry).ok(),
        })),
        _ => Err(bad()),
    }
}

// === impl Inner ===

impl Inner {
    /// This thread's lane (made and registered on first use).
    fn lane(self: &Arc<Self>) -> Arc<Lane> {
        let found = LANES.try_with(|lanes| {
            let mut lanes = lanes.borrow_mut();
            if let Some((_, lane)) = lanes.get(&self.id) {
                return Arc::clone(lane);
            }
            // A new limiter on this thread: forget the lanes of limiters that are gone.
            lanes.retain(|_, (limiter, _)| limiter.strong_count() > 0);
            let lane = Arc::new(Lane::default());
            lanes.insert(self.id, (Arc::downgrade(self), Arc::clone(&lane)));
            self.register(&lane);
            lane
        });
        // A thread being torn down: a lane of its own for this call.
        found.unwrap_or_else(|_| {
            let lane = Arc::new(Lane::default());
            self.register(&lane);
            lane
        })
    }

    fn register(&self, lane: &Arc<Lane>) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        // Forget the lanes of threads that ended (held here only) once they are empty.
        lanes.retain(|l| Arc::strong_count(l) > 1 || !l.is_empty());
        lanes.push(Arc::clone(lane));
    }

    /// Starts a flight for `lane` on this runtime; without one, leaves the lane idle (what
    /// is queued goes with the next call, or [`RedisLimiter::flush`]).
    fn take_off(self: &Arc<Self>, lane: Arc<Lane>) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(fly(Arc::clone(self), Flying::new(lane)));
            }
            Err(_) => {
                lane.set_idle();
                tracing::warn!("redis limiter: no runtime to send the queued calls on");
            }
        }
    }

    /// Runs the script with `EVALSHA` (loading it first if this process has not yet), or
    /// `EVAL` after `NOSCRIPT`.
    async fn eval(&self, argv_tail: &[&[u8]], numkeys: usize) -> Result<Value, StoreError> {
        let script = &self.script;
        let sha = match script.sha.get() {
            Some(sha) => sha.as_str(),
            None => {
                let sha = match self
                    .client
                    .cmd(&[b"SCRIPT", b"LOAD", script.src.as_bytes()])
                    .await?
                {
                    Value::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
                    other => {
                        return Err(StoreError::Protocol(format!(
                            "SCRIPT LOAD: expected a bulk string, got {other:?}"
                        )))
                    }
                };
                script.sha.get_or_init(|| sha).as_str()
            }
        };
        let numkeys = numkeys.to_string();
        let mut argv: Vec<&[u8]> = Vec::with_capacity(3 + argv_tail.len());
        argv.extend([&b"EVALSHA"[..], sha.as_bytes(), numkeys.as_bytes()]);
        argv.extend_from_slice(argv_tail);
        match self.client.cmd(&argv).await {
            Err(StoreError::Reply(e)) if e.starts_with("NOSCRIPT") => {
                argv[0] = b"EVAL";
                argv[1] = script.src.as_bytes();
                self.client.cmd(&argv).await
            }
            other => other,
        }
    }

    /// Sends `batch` in one script call and hands out the answers; returns the settles
    /// that release what the admissions nobody waits for any more took.
    async fn send(&self, batch: Batch) -> Vec<Settle> {
        let parts = || {
            let settles = batch.settles.iter().map(|s| &s.part);
            settles.chain(batch.admits.iter().map(|a| &a.part))
        };
        let counts = [
            batch.settles.len().to_string().into_bytes(),
            batch.admits.len().to_string().into_bytes(),
        ];
        let numkeys = parts().map(|p| p.keys.len()).sum();
        let mut tail: Vec<&[u8]> = Vec::with_capacity(numkeys + 64);
        tail.extend(parts().flat_map(|p| p.keys.iter().map(Vec::as_slice)));
        tail.extend(counts.iter().map(Vec::as_slice));
        tail.extend(parts().flat_map(|p| p.args.iter().map(Vec::as_slice)));
        let reply = self.eval(&tail, numkeys).await.and_then(|v| match v {
            Value::Array(entries) if entries.len() == batch.admits.len() => Ok(entries),
            other => Err(StoreError::Protocol(format!(
                "limiter: unexpected reply {other:?}"
            ))),
        });
        self.answer(batch, reply)
    }

    fn answer(&self, batch: Batch, reply: Result<Vec<Value>, StoreError>) -> Vec<Settle> {
        let mut releases = Vec::new();
        match reply {
            Ok(entries) => {
                for s in batch.settles {
                    if let Some(tx) = s.reply {
                        let _ = tx.send(Ok(()));
                    }
                }
                for (a, entry) in batch.admits.into_iter().zip(entries) {
                    // Admitted, but the request was cancelled meanwhile: give it back.
                    if let Err(Ok(Ok(()))) = a.reply.send(admit_reply(entry)) {
                        releases.extend(
                            Keys::release(&a.part).map(|part| Settle { part, reply: None }),
                        );
                    }
                }
            }
            Err(e) => {
                let what = if batch.admits.is_empty() {
                    "settle"
                } else {
                    "admit"
                };
                self.warn(what, &e);
                for s in batch.settles {
                    match s.reply {
                        Some(tx) => {
                            let _ = tx.send(Err(copy(&e)));
                        }
                        None => {
                            self.settles_dropped.fetch_add(1, Relaxed);
                        }
                    }
                }
                for a in batch.admits {
                    let _ = a.reply.send(Err(copy(&e)));
                }
            }
        }
        releases
    }

    /// Queues `settles` on `lane`, whose flight (the caller) sends them next.
    fn requeue(&self, lane: &Lane, settles: Vec<Settle>) {
        for settle in settles {
            if lane.push_settle(settle, SETTLE_QUEUE).is_err() {
                self.settles_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Logs a failure at warn, at most once per [`WARN_EVERY`].
    fn warn(&self, what: &str, e: &StoreError) {
        let now = u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.warned_at.load(Relaxed);
        if last != 0 && now.saturating_sub(last) < millis(WARN_EVERY) {
            return;
        }
        if self
            .warned_at
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_ok()
        {
            tracing::warn!(
                error = %e,
                kind = e.kind(),
                fallbacks = self.fallbacks.load(Relaxed),
                "redis limiter: {what} failed; admissions go to the in-process fallback"
            );
        }
    }
}

/// A flight: sends its lane's queue, batch after batch, until it is empty. Settles alone
/// wait up to [`SETTLE_WAIT`] for an admission to go with (nobody waits for them; the
/// admission does, and a request that follows another at once would otherwise wait for the
/// other's settle call before its own).
async fn fly(inner: Arc<Inner>, flying: Flying) {
    loop {
        if flying.lane().settles_only() {
            flying.lane().admission(SETTLE_WAIT).await;
        }
        let Some(batch) = flying.lane().next(MAX_BATCH) else {
            break;
        };
        let releases = inner.send(batch).await;
        inner.requeue(flying.lane(), releases);
    }
    flying.land();
}

// === impl RedisLimiter ===

impl RedisLimiter {
    /// A limiter on the Redis at `url`, its keys under `{prefix}lim:`, every call limited to
    /// `op_timeout`. Connects lazily: a Redis that is down fails over, not this.
    pub fn new(url: &str, prefix: &str, op_timeout: Duration) -> Result<Self, StoreError> {
        Ok(Self::with_client(
            RedisClient::new(url, op_timeout)?,
            prefix,
        ))
    }

    /// A limiter over an existing client (to share its pools, or set its backoff).
    pub fn with_client(client: RedisClient, prefix: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                id: NEXT_LIMITER_ID.fetch_add(1, Relaxed),
                client,
                keys: Keys {
                    prefix: prefix.to_owned(),
                },
                script: Script {
                    src: lua::RUN_LUA,
                    sha: OnceLock::new(),
                },
                fallback: MemoryLimiter::new(),
                fallbacks: AtomicU64::new(0),
                settles_dropped: AtomicU64::new(0),
                lanes: Mutex::new(Vec::new()),
                epoch: Instant::now(),
                warned_at: AtomicU64::new(0),
            }),
        }
    }

    /// The client.
    pub fn client(&self) -> &RedisClient {
        &self.inner.client
    }

    /// The in-process limiter that admits while Redis fails.
    pub fn fallback(&self) -> &MemoryLimiter {
        &self.inner.fallback
    }

    /// Admissions handed to the fallback because Redis failed, since this limiter was made.
    pub fn fallbacks(&self) -> u64 {
        self.inner.fallbacks.load(Relaxed)
    }

    /// Settles not waited for that never reached Redis: their call failed, or their
    /// thread's queue was full.
    pub fn settles_dropped(&self) -> u64 {
        self.inner.settles_dropped.load(Relaxed)
    }

    /// Checks every check and charges them all if all pass, atomically, in a script call
    /// shared with the admissions and settles this thread queued meanwhile; when the call
    /// fails, the fallback decides.
    pub async fn admit(
        &self,
        id: &str,
        checks: &[Check],
        now: UnixMs,
        lease: Duration,
    ) -> Result<Ticket, Denial> {
        let lease_ms = millis(lease);
        let ticket = Ticket {
            id: id.to_owned(),
            at: now,
            lease_ends: now.saturating_add(lease_ms),
            fallback: false,
        };
        if checks.is_empty() {
            return Ok(ticket);
        }
        let part = self.inner.keys.admit(&ticket, checks, lease_ms);
        let (tx, rx) = oneshot::channel::<AdmitReply>();
        let lane = self.inner.lane();
        if lane.push_admit(Admit { part, reply: tx }) {
            self.inner.take_off(lane);
        }
        let reply = rx
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("limiter call dropped".into())));
        match reply {
            Ok(decision) => decision.map(|()| ticket),
            Err(e) => {
                self.inner.fallbacks.fetch_add(1, Relaxed);
                self.inner.warn("admit", &e);
                self.inner
                    .fallback
                    .admit(id, checks, now, lease)
                    .map(|t| Ticket {
                        fallback: true,
                        ..t
                    })
            }
        }
    }

    /// Ends an admission (a fallback ticket: in the fallback), and waits until Redis has.
    pub async fn settle(
        &self,
        ticket: &Ticket,
        checks: &[Check],
        actual: &[u64],
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let Some(part) = self.settle_part(ticket, checks, actual, now) else {
            return Ok(());
        };
        let (tx, rx) = oneshot::channel();
        self.queue_settle(Settle {
            part,
            reply: Some(tx),
        })?;
        let reply = rx
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("limiter call dropped".into())));
        if let Err(e) = &reply {
            self.inner.warn("settle", e);
        }
        reply
    }

    /// Ends an admission without waiting: the settle is queued and goes with this thread's
    /// next call (see the module's documentation for what a crash loses). Needs a tokio
    /// runtime to send it on.
    pub fn settle_later(&self, ticket: &Ticket, checks: &[Check], actual: &[u64], now: UnixMs) {
        let Some(part) = self.settle_part(ticket, checks, actual, now) else {
            return;
        };
        if self.queue_settle(Settle { part, reply: None }).is_err() {
            self.inner.settles_dropped.fetch_add(1, Relaxed);
        }
    }

    /// What a settle sends; `None` when nothing (a fallback ticket is settled here).
    fn settle_part(
        &self,
        ticket: &Ticket,
        checks: &[Check],
        actual: &[u64],
        now: UnixMs,
    ) -> Option<Part> {
        if ticket.fallback {
            self.inner.fallback.settle(ticket, checks, actual, now);
            return None;
        }
        self.inner.keys.settle(ticket, checks, actual, now)
    }

    fn queue_settle(&self, settle: Settle) -> Result<(), StoreError> {
        let lane = self.inner.lane();
        match lane.push_settle(settle, SETTLE_QUEUE) {
            Ok(true) => {
                self.inner.take_off(lane);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(_) => Err(StoreError::Unavailable(
                "limiter: too many settles queued".into(),
            )),
        }
    }

    /// Sends everything queued on every thread's lane, and waits for the calls out, for up
    /// to `limit`: for a shutdown, after the worker threads stopped (their queues may hold
    /// settles their runtimes had no time to send). Returns whether every lane is empty.
    pub async fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let lanes: Vec<Arc<Lane>> = {
                let lanes = self.inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
                lanes.clone()
            };
            let mut busy = false;
            for lane in lanes {
                match lane.claim(MAX_BATCH) {
                    Claim::Batch(batch) => {
                        let flying = Flying::new(lane);
                        let releases = self.inner.send(batch).await;
                        self.inner.requeue(flying.lane(), releases);
                        drop(flying);
                        busy = true; // look again: there may be more
                    }
                    Claim::Busy => busy = true,
                    Claim::Empty => {}
                }
            }
            if !busy {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(FLUSH_POLL).await;
        }
    }

    /// What budget counter `name` has spent; 0 if absent.
    pub async fn spent(&self, name: &str) -> Result<u64, StoreError> {
        let key = self.inner.keys.key(name, "");
        match self.inner.client.cmd(&[b"GET", &key]).await? {
            Value::Nil => Ok(0),
            Value::Bulk(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| StoreError::Protocol("budget counter: not a number".into())),
            other => Err(StoreError::Protocol(format!(
                "GET: unexpected reply {other:?}"
            ))),
        }
    }

    /// Sets budget counter `name` to `spent` unless it exists (`SET NX`), expiring a day
    /// past `window_ends` (by the wall clock) when there is one.
    pub async fn seed(
        &self,
        name: &str,
        spent: u64,
        window_ends: Option<UnixMs>,
    ) -> Result<(), StoreError> {
        let key = self.inner.keys.key(name, "");
        let value = num(spent);
        let ttl = window_ends.map(|end| {
            end.saturating_sub(unix_now_ms())
                .saturating_add(BUDGET_GRACE_MS)
                .to_string()
        });
        let mut args: Vec<&[u8]> = vec![b"SET", &key, &value, b"NX"];
        if let Some(ttl) = &ttl {
            args.extend([&b"PX"[..], ttl.as_bytes()]);
        }
        self.inner.client.cmd(&args).await.map(|_| ())
    }
}
