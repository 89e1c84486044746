//! Unit and property tests for the memory tier, all on virtual time.

use super::*;

fn key(n: u8) -> Key {
    let mut k = [0u8; 32];
    k[0] = n;
    k[31] = n.wrapping_mul(7);
    k
}

fn value(len: usize) -> Bytes {
    Bytes::from(vec![0xAB; len])
}

#[test]
fn get_returns_what_was_inserted_until_it_expires() {
    let tier = MemoryTier::new(10_000);
    assert!(tier.insert(key(1), Bytes::from_static(b"hello"), 1_000, 0));
    assert_eq!(
        tier.get(&key(1), 999),
        Some((Bytes::from_static(b"hello"), 1_000))
    );
    assert_eq!(tier.get(&key(2), 0), None);
    // Expiry is exclusive: at `expires_at` the entry is gone, and removed.
    assert_eq!(tier.get(&key(1), 1_000), None);
    assert_eq!(tier.len(), 0);
    assert_eq!(tier.bytes(), 0);
}

#[test]
fn refuses_expired_and_oversize_entries() {
    let tier = MemoryTier::new(entry_charge(100));
    assert!(!tier.insert(key(1), value(10), 5, 5), "already expired");
    assert!(
        !tier.insert(key(1), value(101), 50, 5),
        "larger than the budget"
    );
    assert!(tier.insert(key(1), value(100), 50, 5), "exactly the budget");
    assert_eq!(tier.bytes(), entry_charge(100));
    // A refused replace still removes the old value.
    assert!(!tier.insert(key(1), value(101), 50, 5));
    assert_eq!(tier.get(&key(1), 5), None);
    assert!(tier.is_empty());
}

#[test]
fn replacing_a_key_adjusts_bytes() {
    let tier = MemoryTier::new(10_000);
    assert!(tier.insert(key(1), value(100), 50, 0));
    assert!(tier.insert(key(1), value(10), 60, 0));
    assert_eq!(tier.len(), 1);
    assert_eq!(tier.bytes(), entry_charge(10));
    assert_eq!(tier.get(&key(1), 0), Some((value(10), 60)));
}

#[test]
fn evicts_least_recently_used_and_a_get_protects() {
    let tier = MemoryTier::new(3 * entry_charge(10));
    for n in 1..=3 {
        assert!(tier.insert(key(n), value(10), 1_000, 0));
    }
    // Touch 1: now 2 is the least recently used.
    assert!(tier.get(&key(1), 1).is_some());
    assert!(tier.insert(key(4), value(10), 1_000, 2));
    assert!(tier.get(&key(2), 3).is_none(), "2 was evicted");
    for n in [1, 3, 4] {
        assert!(tier.get(&key(n), 3).is_some(), "{n} kept");
    }
    // A large entry evicts as many as it needs, oldest first (order now: 4, 3, 1).
    assert!(tier.insert(key(5), value(10 + entry_charge(10) as usize), 1_000, 4));
    assert_eq!(tier.len(), 2);
    assert!(tier.get(&key(4), 5).is_some());
    assert!(tier.get(&key(5), 5).is_some());
    assert!(tier.bytes() <= tier.max_bytes());
}

#[test]
fn remove_and_clear() {
    let tier = MemoryTier::new(10_000);
    for n in 0..10 {
        assert!(tier.insert(key(n), value(n.into()), 100, 0));
    }
    tier.remove(&key(3));
    tier.remove(&key(200));
    assert_eq!(tier.len(), 9);
    assert!(tier.get(&key(3), 0).is_none());
    tier.clear();
    assert_eq!((tier.len(), tier.bytes()), (0, 0));
    assert!(tier.get(&key(4), 0).is_none());
    // Usable after a clear.
    assert!(tier.insert(key(4), value(4), 100, 0));
    assert_eq!(tier.get(&key(4), 0), Some((value(4), 100)));
}

#[test]
fn shards_split_the_budget_and_keep_the_bound() {
    let tier = MemoryTier::with_shards(1_000, 3);
    assert_eq!(tier.max_bytes(), 1_000);
    let mut rng = XorShift(7);
    for _ in 0..2_000 {
        let k = key(rng.below(64) as u8);
        tier.insert(k, value(rng.below(200) as usize), 100, 0);
        assert!(tier.bytes() <= 1_000);
    }
}

#[test]
fn threads_share_one_tier_and_the_bound_holds() {
    use std::sync::Arc;
    let tier = Arc::new(MemoryTier::new(50_000));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let tier = Arc::clone(&tier);
            std::thread::spawn(move || {
                let mut rng = XorShift(t + 11);
                for i in 0..20_000u64 {
                    let k = key(rng.below(200) as u8);
                    match rng.below(3) {
                        0 => {
                            tier.insert(k, value(rng.below(1_000) as usize), i + 500, i);
                        }
                        1 => {
                            if let Some((v, expires_at)) = tier.get(&k, i) {
                                assert!(expires_at > i && v.len() < 1_000);
                            }
                        }
                        _ => tier.remove(&k),
                    }
                    assert!(tier.bytes() <= 50_000);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker");
    }
    assert!(tier.bytes() <= 50_000);
}

/// A tiny xorshift64* generator: deterministic, seeded.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The obviously correct model: a vector in recency order, most recent first.
struct Model {
    entries: Vec<(Key, Bytes, UnixMs)>,
    max_bytes: u64,
}

impl Model {
    fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| entry_charge(e.1.len())).sum()
    }

    fn remove(&mut self, key: &Key) {
        self.entries.retain(|e| &e.0 != key);
    }

    fn get(&mut self, key: &Key, now: UnixMs) -> Option<(Bytes, UnixMs)> {
        let i = self.entries.iter().position(|e| &e.0 == key)?;
        let entry = self.entries.remove(i);
        if entry.2 <= now {
            return None;
        }
        let hit = (entry.1.clone(), entry.2);
        self.entries.insert(0, entry);
        Some(hit)
    }

    fn insert(&mut self, key: Key, value: Bytes, expires_at: UnixMs, now: UnixMs) -> bool {
        self.remove(&key);
        let charge = entry_charge(value.len());
        if charge > self.max_bytes || expires_at <= now {
            return false;
        }
        while self.bytes() + charge > self.max_bytes {
            self.entries.pop();
        }
        self.entries.insert(0, (key, value, expires_at));
        true
    }
}

#[test]
fn behaves_like_the_reference_model() {
    for seed in 1..=20u64 {
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let max_bytes = 200 + rng.below(2_000);
        let tier = MemoryTier::new(max_bytes);
        let mut model = Model {
            entries: Vec::new(),
            max_bytes,
        };
        let mut now: UnixMs = 1_000;
        for step in 0..3_000 {
            let k = key(rng.below(24) as u8);
            match rng.below(10) {
                0..=3 => {
                    let len = rng.below(max_bytes / 2) as usize;
                    let expires_at = now + rng.below(300);
                    let v = value(len);
                    assert_eq!(
                        tier.insert(k, v.clone(), expires_at, now),
                        model.insert(k, v, expires_at, now),
                        "seed {seed} step {step}: insert"
                    );
                }
                4..=6 => assert_eq!(
                    tier.get(&k, now),
                    model.get(&k, now),
                    "seed {seed} step {step}: get"
                ),
                7 => {
                    tier.remove(&k);
                    model.remove(&k);
                }
                8 => now += rng.below(100),
                _ => {
                    if rng.below(50) == 0 {
                        tier.clear();
                        model.entries.clear();
                    }
                }
            }
            assert_eq!(tier.len(), model.entries.len(), "seed {seed} step {step}");
            assert_eq!(tier.bytes(), model.bytes(), "seed {seed} step {step}");
            assert!(tier.bytes() <= max_bytes);
        }
    }
}

/// Two threads hammering one tier, with one shard and with eight: the measurement behind
/// the module's choice of one lock. Run with `--run-ignored only contention`.
#[test]
#[ignore = "a measurement, not a check"]
fn contention() {
    use std::sync::Arc;
    use std::time::Instant;
    for shards in [1, 8] {
        let tier = Arc::new(MemoryTier::with_shards(64 << 20, shards));
        let start = Instant::now();
        let threads: Vec<_> = (0..2u64)
            .map(|t| {
                let tier = Arc::clone(&tier);
                std::thread::spawn(move || {
                    let mut rng = XorShift(t + 1);
                    let v = value(1_000);
                    for _ in 0..2_000_000 {
                        // 100k distinct keys of 1 kB: most gets hit once warm.
                        let n = rng.below(100_000);
                        let mut k = [0u8; 32];
                        k[..8].copy_from_slice(&n.to_le_bytes());
                        k[8..16].copy_from_slice(&n.wrapping_mul(0x9E37).to_le_bytes());
                        if rng.below(4) == 0 {
                            tier.insert(k, v.clone(), u64::MAX, 0);
                        } else {
                            let _ = tier.get(&k, 0);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("worker");
        }
        let elapsed = start.elapsed();
        println!(
            "shards={shards}: {:?} for 4M ops, {:.0} ns/op/thread",
            elapsed,
            elapsed.as_nanos() as f64 / 2_000_000.0
        );
    }
}
