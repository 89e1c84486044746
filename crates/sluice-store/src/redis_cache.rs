//! The shared cache store: entries in Redis, so every replica behind a load balancer sees
//! every other's cache.
//!
//! Layout, for a configured `prefix`: an entry is the string `{prefix}cache:` + hex(key),
//! written `SET k v PX ttl` (so Redis expires it); the counters are the hash
//! `{prefix}cache:stats`, fields `hits`, `misses`, `saved_nano_usd`, `saved_ms`, grown with
//! `HINCRBY`. `get` pipelines `GET` and `PTTL` to recover the expiry.
//!
//! The semantic index's records go to the stream `{prefix}cache:semantic` (fields `k`: the
//! entry's key, `r`: the record, `e`: the entry's expiry in Unix ms), appended in the same
//! pipeline as the entry's `SET` and trimmed to about [`INDEX_STREAM_LEN`] records. A stream,
//! because every replica must learn the records the others add: each reads it from where it
//! stopped (`XRANGE` after its last id), the whole of it at start. Records whose entry has
//! expired are skipped by readers and trimmed with the oldest.
//!
//! `put` is fire and forget: it spawns a task on the current tokio runtime (so the socket
//! stays on that worker's thread and pool), at most `MAX_IN_FLIGHT` at once; past that,
//! puts are dropped and counted. Counter increments add to atomics, and one task per
//! `COUNTER_BATCH` writes their sum. `stats` walks the keys with `SCAN` and sums `STRLEN`
//! (value bytes, exact at the time of the walk, O(entries): an admin call, not a hot one).

use crate::cache_stats::{CacheStats, CounterDelta, PendingCounters};
use crate::index_records::{IndexCursor, IndexRecord};
use crate::redis::{RedisClient, Value};
use crate::{hex, unix_now_ms, Key, StoreError, UnixMs};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Puts (and counter writes) running at once, beyond which puts are dropped.
const MAX_IN_FLIGHT: usize = 1_024;

/// Records the semantic stream keeps, about (`XADD MAXLEN ~`): the server's index bound.
pub const INDEX_STREAM_LEN: usize = 100_000;

/// Records read from the semantic stream per round trip.
const INDEX_READ_BATCH: usize = 512;

/// How long counter increments gather before one write.
const COUNTER_BATCH: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Inner {
    client: RedisClient,
    prefix: Vec<u8>,
    stats_key: Vec<u8>,
    index_key: Vec<u8>,
    in_flight: AtomicUsize,
    idle: Notify,
    errors: AtomicU64,
    dropped: AtomicU64,
    counters: PendingCounters,
    counter_task: AtomicBool,
}

/// The Redis cache store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

/// Escapes `*?[]\` so `prefix` matches itself in a `SCAN MATCH` pattern.
fn glob_escape(prefix: &[u8], out: &mut Vec<u8>) {
    for &b in prefix {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

// === impl Inner ===

impl Inner {
    fn entry_key(&self, key: &Key) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 6 + 64);
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(b"cache:");
        hex::encode_into(key, &mut k);
        k
    }

    /// Whether a name found by `SCAN` is an entry (and not, say, the stats hash).
    fn is_entry_key(&self, name: &[u8]) -> bool {
        let head = self.prefix.len() + 6;
        name.len() == head + 64 && hex::is_lower_hex(&name[head..])
    }

    fn begin(&self) -> bool {
        if self.in_flight.fetch_add(1, Relaxed) >= MAX_IN_FLIGHT {
            self.end();
            return false;
        }
        true
    }

    fn end(&self) {
        if self.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.idle.notify_waiters();
        }
    }

    fn failed(&self, what: &str, e: &StoreError) {
        self.errors.fetch_add(1, Relaxed);
        tracing::debug!(error = %e, kind = e.kind(), "redis cache {what} failed");
    }

    /// Writes the pending counter increments now.
    async fn save_counters(&self) {
        let delta = self.counters.take();
        if delta.is_zero() {
            return;
        }
        self.in_flight.fetch_add(1, Relaxed);
        let values: Vec<(&str, String)> = delta
            .fields()
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|(name, n)| (name, n.to_string()))
            .collect();
        let commands: Vec<[&[u8]; 4]> = values
            .iter()
            .map(|(name, n)| {
                [
                    &b"HINCRBY"[..],
                    &self.stats_key,
                    name.as_bytes(),
                    n.as_bytes(),
                ]
            })
            .collect();
        let commands: Vec<&[&[u8]]> = commands.iter().map(|c| &c[..]).collect();
        match self.client.pipeline(&commands).await {
            Ok(replies) => {
                if let Some(Value::Error(e)) = replies.iter().find(|r| matches!(r, Value::Error(_)))
                {
                    self.failed("counters", &StoreError::Reply(e.clone()));
                }
            }
            // Nothing was sent: keep the increments for the next write.
            Err(e @ StoreError::Unavailable(_)) => {
                self.counters.add(delta);
                self.failed("counters", &e);
            }
            Err(e) => self.failed("counters", &e),
        }
        self.end();
    }

    /// Walks the entry keys, `SCAN` batch by batch, handing every batch to `then`.
    async fn scan_entries(&self, then: &mut impl AsyncBatch) -> Result<(), StoreError> {
        let mut pattern = Vec::with_capacity(self.prefix.len() + 7);
        glob_escape(&self.prefix, &mut pattern);
        pattern.extend_from_slice(b"cache:*");
        let mut cursor = b"0".to_vec();
        loop {
            let reply = self
                .client
                .cmd(&[b"SCAN", &cursor, b"MATCH", &pattern, b"COUNT", b"1000"])
                .await?;
            let Value::Array(mut parts) = reply else {
                return Err(StoreError::Protocol("SCAN: expected an array".into()));
            };
            let (Some(Value::Array(names)), Some(Value::Bulk(next))) = (parts.pop(), parts.pop())
            else {
                return Err(StoreError::Protocol("SCAN: expected [cursor, keys]".into()));
            };
            let names: Vec<Bytes> = names
                .into_iter()
                .filter_map(|v| match v {
                    Value::Bulk(b) if self.is_entry_key(&b) => Some(b),
                    _ => None,
                })
                .collect();
            if !names.is_empty() {
                then.run(&self.client, names).await?;
            }
            if &next[..] == b"0" {
                return Ok(());
            }
            cursor = next.to_vec();
        }
    }
}

/// The second step of a scan: one round trip per batch of keys.
trait AsyncBatch {
    async fn run(&mut self, client: &RedisClient, keys: Vec<Bytes>) -> Result<(), StoreError>;
}

/// `UNLINK`s each batch, counting what went.
struct Unlink(u64);

impl AsyncBatch for Unlink {
    async fn run(&mut self, client: &RedisClient, keys: Vec<Bytes>) -> Result<(), StoreError> {
        let mut args: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
        args.push(b"UNLINK");
        args.extend(keys.iter().map(|k| &k[..]));
        let removed = client.cmd(&args).await?;
        self.0 += removed
            .as_int()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        Ok(())
    }
}

/// `STRLEN`s each batch (pipelined), counting entries still there and their bytes.
#[derive(Default)]
struct Measure {
    entries: u64,
    bytes: u64,
}

impl AsyncBatch for Measure {
    async fn run(&mut self, client: &RedisClient, keys: Vec<Bytes>) -> Result<(), StoreError> {
        let commands: Vec<[&[u8]; 2]> = keys.iter().map(|k| [&b"STRLEN"[..], &k[..]]).collect();
        let commands: Vec<&[&[u8]]> = commands.iter().map(|c| &c[..]).collect();
        for reply in client.pipeline(&commands).await? {
            // 0: expired between the scan and now.
            if let Some(len) = reply.as_int().filter(|n| *n > 0) {
                self.entries += 1;
                self.bytes += u64::try_from(len).unwrap_or(0);
            }
        }
        Ok(())
    }
}

/// The first error reply of a pipeline's, as an error.
fn first_error(replies: Vec<Value>) -> Result<(), StoreError> {
    match replies.into_iter().find_map(|r| match r {
        Value::Error(e) => Some(e),
        _ => None,
    }) {
        Some(e) => Err(StoreError::Reply(e)),
        None => Ok(()),
    }
}

/// One `XRANGE` entry: its id, and the record when its fields are whole.
fn stream_entry(entry: Value) -> Result<(Bytes, Option<IndexRecord>), StoreError> {
    let bad = || StoreError::Protocol("XRANGE: expected [id, [field, value, ...]]".into());
    let Value::Array(parts) = entry else {
        return Err(bad());
    };
    let Ok([Value::Bulk(id), Value::Array(fields)]) = <[Value; 2]>::try_from(parts) else {
        return Err(bad());
    };
    let (mut key, mut record, mut expires_at) = (None, None, None);
    for pair in fields.chunks_exact(2) {
        if let [Value::Bulk(name), Value::Bulk(value)] = pair {
            match &name[..] {
                b"k" => key = Key::try_from(&value[..]).ok(),
                b"r" => record = Some(value.clone()),
                b"e" => {
                    expires_at = std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse::<UnixMs>().ok());
                }
                _ => {}
            }
        }
    }
    let record = match (key, record, expires_at) {
        (Some(key), Some(record), Some(expires_at)) => Some(IndexRecord {
            key,
            record,
            expires_at,
        }),
        _ => None,
    };
    Ok((id, record))
}

fn counter(fields: &[Value], i: usize) -> u64 {
    match fields.get(i) {
        Some(Value::Bulk(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

// === impl RedisCache ===

impl RedisCache {
    /// A store on the Redis at `url`, its keys under `prefix`, each operation limited to
    /// `op_timeout`. Connects lazily: a Redis that is down fails the calls, not this.
    pub fn new(url: &str, prefix: &str, op_timeout: Duration) -> Result<Self, StoreError> {
        Ok(Self::with_client(
            RedisClient::new(url, op_timeout)?,
            prefix,
        ))
    }

    /// A store over an existing client (to share its pools, or set its backoff).
    pub fn with_client(client: RedisClient, prefix: &str) -> Self {
        let mut stats_key = prefix.as_bytes().to_vec();
        stats_key.extend_from_slice(b"cache:stats");
        let mut index_key = prefix.as_bytes().to_vec();
        index_key.extend_from_slice(b"cache:semantic");
        Self {
            inner: Arc::new(Inner {
                client,
                prefix: prefix.as_bytes().to_vec(),
                stats_key,
                index_key,
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
                errors: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                counters: PendingCounters::default(),
                counter_task: AtomicBool::new(false),
            }),
        }
    }

    /// The client, for other users of the same Redis (limits, budgets).
    pub fn client(&self) -> &RedisClient {
        &self.inner.client
    }

    /// The value under `key` and its expiry (`now` + the remaining `PTTL`).
    pub async fn get(&self, key: &Key, now: UnixMs) -> Result<Option<(Bytes, UnixMs)>, StoreError> {
        let k = self.inner.entry_key(key);
        let replies = self
            .inner
            .client
            .pipeline(&[&[b"GET", &k], &[b"PTTL", &k]])
            .await?;
        match <[Value; 2]>::try_from(replies) {
            Ok([Value::Bulk(value), Value::Int(ttl)]) => Ok(match ttl {
                1.. => Some((value, now.saturating_add(ttl.unsigned_abs()))),
                // No expiry: not written by `put`, but a value all the same.
                -1 => Some((value, UnixMs::MAX)),
                _ => None,
            }),
            Ok([Value::Nil, _]) => Ok(None),
            Ok([Value::Error(e), _] | [_, Value::Error(e)]) => Err(StoreError::Reply(e)),
            _ => Err(StoreError::Protocol("GET/PTTL: unexpected replies".into())),
        }
    }

    /// `SET k v PX ttl` from a task on the current runtime; skipped when already expired
    /// (by the wall clock), counted as an error outside a runtime, dropped past
    /// `MAX_IN_FLIGHT`.
    pub fn put(&self, key: Key, value: Bytes, expires_at: UnixMs) {
        self.put_indexed(key, value, expires_at, None);
    }

    /// [`Self::put`], and the semantic index's record of the entry appended to the stream
    /// in the same pipeline.
    pub fn put_indexed(&self, key: Key, value: Bytes, expires_at: UnixMs, index: Option<Bytes>) {
        let now = unix_now_ms();
        if expires_at <= now {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner
                .failed("put", &StoreError::Unavailable("no tokio runtime".into()));
            return;
        };
        if !self.inner.begin() {
            self.inner.dropped.fetch_add(1, Relaxed);
            return;
        }
        let inner = Arc::clone(&self.inner);
        runtime.spawn(async move {
            // The TTL is taken when the write goes out, not when it was queued.
            let now = unix_now_ms();
            if expires_at <= now {
                inner.end();
                return;
            }
            let k = inner.entry_key(&key);
            let ttl = (expires_at - now).to_string();
            let set = [&b"SET"[..], &k, &value, b"PX", ttl.as_bytes()];
            let result = match &index {
                None => inner.client.cmd(&set).await.map(drop),
                Some(record) => {
                    let (len, expires) = (INDEX_STREAM_LEN.to_string(), expires_at.to_string());
                    let add: [&[u8]; 12] = [
                        b"XADD",
                        &inner.index_key,
                        b"MAXLEN",
                        b"~",
                        len.as_bytes(),
                        b"*",
                        b"k",
                        &key,
                        b"r",
                        record,
                        b"e",
                        expires.as_bytes(),
                    ];
                    inner
                        .client
                        .pipeline(&[&set, &add])
                        .await
                        .and_then(first_error)
                }
            };
            if let Err(e) = result {
                inner.failed("put", &e);
            }
            inner.end();
        });
    }

    /// Unlinks every entry under the prefix and the semantic stream (the counters stay);
    /// returns how many entries.
    pub async fn clear(&self) -> Result<u64, StoreError> {
        let mut unlink = Unlink(0);
        self.inner.scan_entries(&mut unlink).await?;
        self.inner
            .client
            .cmd(&[b"UNLINK", &self.inner.index_key])
            .await?;
        Ok(unlink.0)
    }

    /// The semantic records appended after `cursor` (all of them on a first read) whose
    /// entries are live at `now`, in the order they were written; `cursor` moves past them.
    pub async fn index_since(
        &self,
        cursor: &mut IndexCursor,
        now: UnixMs,
    ) -> Result<Vec<IndexRecord>, StoreError> {
        let mut out = Vec::new();
        loop {
            // After the last id read (exclusive), or from the start while none was read.
            let start = if cursor.last.is_empty() {
                b"-".to_vec()
            } else {
                [&b"("[..], &cursor.last[..]].concat()
            };
            let count = INDEX_READ_BATCH.to_string();
            let reply = self
                .inner
                .client
                .cmd(&[
                    b"XRANGE",
                    &self.inner.index_key,
                    &start,
                    b"+",
                    b"COUNT",
                    count.as_bytes(),
                ])
                .await?;
            let Value::Array(entries) = reply else {
                return Err(StoreError::Protocol("XRANGE: expected an array".into()));
            };
            let read = entries.len();
            for entry in entries {
                let (id, record) = stream_entry(entry)?;
                cursor.started = true;
                cursor.last = id.to_vec();
                out.extend(record.filter(|r| r.expires_at > now));
            }
            cursor.started = true;
            if read < INDEX_READ_BATCH {
                return Ok(out);
            }
        }
    }

    /// Entries and value bytes (a `SCAN` + `STRLEN` walk), and the counters.
    pub async fn stats(&self) -> Result<CacheStats, StoreError> {
        self.inner.save_counters().await;
        let mut measure = Measure::default();
        self.inner.scan_entries(&mut measure).await?;
        let fields = self
            .inner
            .client
            .cmd(&[
                b"HMGET",
                &self.inner.stats_key,
                b"hits",
                b"misses",
                b"saved_nano_usd",
                b"saved_ms",
            ])
            .await?;
        let Value::Array(fields) = fields else {
            return Err(StoreError::Protocol("HMGET: expected an array".into()));
        };
        Ok(CacheStats {
            entries: measure.entries,
            bytes: measure.bytes,
            hits: counter(&fields, 0),
            misses: counter(&fields, 1),
            saved_nano_usd: counter(&fields, 2),
            saved_ms: counter(&fields, 3),
        })
    }

    /// Adds to the counters; a task on the current runtime writes the sum after
    /// `COUNTER_BATCH` (outside a runtime they wait for the next `flush` or `stats`).
    pub fn add_counters(&self, d: CounterDelta) {
        self.inner.counters.add(d);
        if self.inner.counter_task.swap(true, Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.counter_task.store(false, Relaxed);
            return;
        };
        let inner = Arc::clone(&self.inner);
        runtime.spawn(async move {
            tokio::time::sleep(COUNTER_BATCH).await;
            inner.counter_task.store(false, Relaxed);
            inner.save_counters().await;
        });
    }

    /// Writes the pending counters and waits until no put is in flight. Meant for shutdown
    /// (after the server drained) and tests: under a steady stream of new puts from other
    /// tasks it waits until a gap.
    pub async fn flush(&self) {
        self.inner.save_counters().await;
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.inner.in_flight.load(Relaxed) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Failed puts and counter writes since this store was made.
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Relaxed)
    }

    /// Puts dropped because too many were in flight.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Relaxed)
    }
}
