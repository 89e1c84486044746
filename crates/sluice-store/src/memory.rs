//! The in-memory cache tier: opaque values under 32-byte keys, bounded by bytes, evicted
//! least recently used first, each entry with an absolute expiry.
//!
//! Invariants, after every operation:
//! - `bytes() <= max_bytes`, where an entry is charged `value.len() + KEY_BYTES +
//!   ENTRY_OVERHEAD` (see [`entry_charge`]);
//! - an entry whose `expires_at <= now` is never returned (it is removed when seen);
//! - every operation is O(1): a hash map from key to a slot in a slab, and the slots form a
//!   doubly linked list in recency order (indices, not pointers: no `unsafe`).
//!
//! Why one lock and not shards: the lock guards a hash lookup and a few index writes (well
//! under a microsecond), nothing is awaited inside it, and sluice runs one worker thread per
//! core. Measured with two threads hammering one tier (25% inserts, 100k keys; `cargo nextest
//! run -p sluice-store --run-ignored only contention --no-capture`, this crate at
//! `opt-level=3`) on the shared 2-core machine under a load of about 6: one shard 2.9 µs per
//! op per thread, eight shards 3.5 µs. The load makes the absolute numbers noisy, but shards
//! bought nothing at two cores, while they split the byte budget (an entry must fit its
//! shard's share) and keep the LRU order per shard only. So [`MemoryTier::new`] uses one
//! lock; [`MemoryTier::with_shards`] is there for machines with many cores.
//!
//! Expired entries are not swept: one is removed when a `get` sees it, or evicted in LRU
//! order like any other (an entry nobody reads drifts to the tail).

use crate::{Key, UnixMs};
use bytes::Bytes;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Bytes charged for a key.
pub const KEY_BYTES: u64 = 32;

/// Bytes charged per entry on top of its key and value: the slab slot (links, expiry, the
/// `Bytes` handle) and the hash map's slot, rounded up. An estimate, fixed so that the bound
/// is exact arithmetic rather than a measurement of the allocator.
pub const ENTRY_OVERHEAD: u64 = 96;

/// What an entry with a value of `value_len` bytes is charged against the byte budget.
pub const fn entry_charge(value_len: usize) -> u64 {
    value_len as u64 + KEY_BYTES + ENTRY_OVERHEAD
}

/// The in-memory tier: bounded by bytes, LRU eviction, expiry on the caller's clock.
///
/// All methods take `&self` and are safe to call from several threads at once; a lock is
/// held only for the map operation itself.
pub struct MemoryTier {
    shards: Box<[Mutex<Lru>]>,
}

// === impl MemoryTier ===

impl MemoryTier {
    /// A tier holding at most `max_bytes` (as charged by [`entry_charge`]).
    pub fn new(max_bytes: u64) -> Self {
        Self::with_shards(max_bytes, 1)
    }

    /// A tier split into `shards` locks (at least one), chosen by the key's first byte; each
    /// shard gets an equal share of `max_bytes`, and the LRU order is kept per shard.
    pub fn with_shards(max_bytes: u64, shards: usize) -> Self {
        let shards = shards.clamp(1, 256);
        let share = max_bytes / shards as u64;
        let extra = max_bytes % shards as u64;
        let shards = (0..shards)
            .map(|i| {
                let budget = share + u64::from((i as u64) < extra);
                Mutex::new(Lru::new(budget))
            })
            .collect();
        Self { shards }
    }

    fn shard(&self, key: &Key) -> MutexGuard<'_, Lru> {
        let i = usize::from(key[0]) % self.shards.len();
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The value under `key` and its expiry, if present and not expired at `now`. A hit
    /// makes the entry the most recently used; an expired entry is removed.
    pub fn get(&self, key: &Key, now: UnixMs) -> Option<(Bytes, UnixMs)> {
        self.shard(key).get(key, now)
    }

    /// Stores `value` under `key` until `expires_at`, evicting least recently used entries
    /// until it fits. Returns `false`, and stores nothing, when the entry alone is larger
    /// than the budget (of its shard) or is already expired at `now`; in every case an
    /// older value under `key` is gone afterwards.
    pub fn insert(&self, key: Key, value: Bytes, expires_at: UnixMs, now: UnixMs) -> bool {
        self.shard(&key).insert(key, value, expires_at, now)
    }

    /// Removes the entry under `key`, if any.
    pub fn remove(&self, key: &Key) {
        self.shard(key).remove(key);
    }

    /// Removes every entry.
    pub fn clear(&self) {
        for shard in &*self.shards {
            shard.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }

    /// The number of entries held (expired ones not yet seen included).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }

    /// Whether the tier holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes charged for the entries held.
    pub fn bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).bytes)
            .sum()
    }

    /// The byte budget, all shards together.
    pub fn max_bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).max_bytes)
            .sum()
    }
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTier")
            .field("shards", &self.shards.len())
            .field("len", &self.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// Hashes a key by folding its four 8-byte words with a multiply. Keys are BLAKE3 hashes,
/// already uniform, so SipHash's DoS resistance would buy nothing here.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

const NIL: u32 = u32::MAX;

/// One slab slot: an entry and its links in recency order.
struct Node {
    key: Key,
    value: Bytes,
    expires_at: UnixMs,
    /// Towards the most recently used end.
    prev: u32,
    /// Towards the least recently used end.
    next: u32,
}

/// One shard: a byte-bounded LRU map.
struct Lru {
    map: HashMap<Key, u32, BuildHasherDefault<KeyHasher>>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used: the next to evict.
    tail: u32,
    bytes: u64,
    max_bytes: u64,
}

// === impl Lru ===

impl Lru {
    fn new(max_bytes: u64) -> Self {
        Self {
            map: HashMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            max_bytes,
        }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[i as usize];
            n.prev = NIL;
            n.next = old;
        }
        if old == NIL {
            self.tail = i;
        } else {
            self.nodes[old as usize].prev = i;
        }
        self.head = i;
    }

    /// Unlinks slot `i`, frees it and its value, and uncharges it.
    fn release(&mut self, i: u32) {
        self.unlink(i);
        let node = &mut self.nodes[i as usize];
        let value = std::mem::take(&mut node.value);
        self.map.remove(&node.key);
        self.bytes -= entry_charge(value.len());
        self.free.push(i);
    }

    fn get(&mut self, key: &Key, now: UnixMs) -> Option<(Bytes, UnixMs)> {
        let i = *self.map.get(key)?;
        let node = &self.nodes[i as usize];
        if node.expires_at <= now {
            self.release(i);
            return None;
        }
        let hit = (node.value.clone(), node.expires_at);
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
        Some(hit)
    }

    fn insert(&mut self, key: Key, value: Bytes, expires_at: UnixMs, now: UnixMs) -> bool {
        self.remove(&key);
        let charge = entry_charge(value.len());
        // The slab is indexed by `u32`: 4 billion entries, each charged over 128 bytes.
        let full = self.free.is_empty() && self.nodes.len() >= NIL as usize;
        if charge > self.max_bytes || expires_at <= now || full {
            return false;
        }
        while self.bytes + charge > self.max_bytes && self.tail != NIL {
            self.release(self.tail);
        }
        let node = Node {
            key,
            value,
            expires_at,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                let i = self.nodes.len() as u32;
                self.nodes.push(node);
                i
            }
        };
        self.push_front(i);
        self.map.insert(key, i);
        self.bytes += charge;
        true
    }

    fn remove(&mut self, key: &Key) {
        if let Some(&i) = self.map.get(key) {
            self.release(i);
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.nodes.clear();
        self.free.clear();
        self.head = NIL;
        self.tail = NIL;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests;
