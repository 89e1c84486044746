//! A ticket's part of a script call: the keys and the arguments of one admission or one
//! settle, formatted as the script reads them (see [`super::lua`]).

use super::super::check::{Check, CheckKind, Ticket, BUDGET_GRACE_MS, WINDOW_SPAN_S};
use crate::UnixMs;

/// The largest number the scripts take (Lua numbers are doubles, exact up to 2^53).
const MAX_EXACT: u64 = (1 << 53) - 1;

/// How much longer than its longest lease a concurrency or reservation key is kept, at
/// least (when less is left, the script extends it to the lease plus twice this).
const LEASE_GRACE_MS: u64 = 60_000;

/// One ticket's keys and arguments.
#[derive(Debug, Default)]
pub(super) struct Part {
    pub keys: Vec<Vec<u8>>,
    pub args: Vec<Vec<u8>>,
}

/// Where the keys live: `{prefix}lim:{name}{suffix}`.
#[derive(Debug)]
pub(super) struct Keys {
    pub prefix: String,
}

/// A number for the scripts: decimal, capped at [`MAX_EXACT`].
pub(super) fn num(n: u64) -> Vec<u8> {
    n.min(MAX_EXACT).to_string().into_bytes()
}

/// `Some(n)` as [`num`], `None` as `-1`.
fn num_or_none(n: Option<u64>) -> Vec<u8> {
    n.map_or_else(|| b"-1".to_vec(), num)
}

/// A reservation's member in the leases ZSET: `{ticket id}:{amount}`.
fn member(id: &str, reserve: u64) -> Vec<u8> {
    format!("{id}:{}", reserve.min(MAX_EXACT)).into_bytes()
}

/// `actual - cost` (both capped), signed decimal.
fn delta(cost: u64, actual: u64) -> Vec<u8> {
    let (cost, actual) = (cost.min(MAX_EXACT), actual.min(MAX_EXACT));
    if actual >= cost {
        (actual - cost).to_string().into_bytes()
    } else {
        format!("-{}", cost - actual).into_bytes()
    }
}

// === impl Keys ===

impl Keys {
    /// The key of counter `name` with `suffix`.
    pub fn key(&self, name: &str, suffix: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 4 + name.len() + suffix.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(b"lim:");
        k.extend_from_slice(name.as_bytes());
        k.extend_from_slice(suffix.as_bytes());
        k
    }

    /// Appends the keys of `check`, in the order the script reads them.
    fn push_keys(&self, keys: &mut Vec<Vec<u8>>, check: &Check) {
        match check.kind {
            CheckKind::Window { .. } => keys.push(self.key(&check.name, "#w")),
            CheckKind::Concurrency { .. } => keys.push(self.key(&check.name, "")),
            CheckKind::Budget { .. } => {
                keys.push(self.key(&check.name, ""));
                keys.push(self.key(&check.name, "#reserved"));
                keys.push(self.key(&check.name, "#leases"));
            }
        }
    }

    /// The admission of `ticket` (`lease_ms` long) for `checks` (not empty).
    pub fn admit(&self, ticket: &Ticket, checks: &[Check], lease_ms: u64) -> Part {
        let (id, now) = (ticket.id.as_str(), ticket.at);
        let mut kinds = Vec::with_capacity(checks.len());
        let mut part = Part {
            keys: Vec::with_capacity(3 * checks.len()),
            args: Vec::with_capacity(6 + 4 * checks.len()),
        };
        let args = &mut part.args;
        args.extend([Vec::new(), num(now), num(now / 1_000)]); // the kinds go first
        let mut leasing = false;
        for check in checks {
            self.push_keys(&mut part.keys, check);
            match check.kind {
                CheckKind::Window { limit, cost } => {
                    kinds.push(b'w');
                    args.extend([num(limit), num(cost)]);
                }
                CheckKind::Concurrency { limit } => {
                    kinds.push(b'c');
                    args.push(num(limit));
                    leasing = true;
                }
                CheckKind::Budget {
                    limit,
                    reserve,
                    window_ends,
                } => {
                    kinds.push(b'b');
                    let retry = window_ends.map(|end| end.saturating_sub(now));
                    args.extend([
                        num(limit),
                        num(reserve),
                        member(id, reserve),
                        num_or_none(retry),
                    ]);
                    leasing = true;
                }
            }
        }
        if leasing {
            args.extend([
                id.as_bytes().to_vec(),
                num(ticket.lease_ends),
                num(lease_ms.saturating_add(LEASE_GRACE_MS)),
            ]);
        }
        args[0] = kinds;
        part
    }

    /// The settle of `ticket` at `now`: only the checks that change something (a window
    /// whose actual is its cost, or whose bucket has left the window, is left out); `None`
    /// when none does.
    pub fn settle(
        &self,
        ticket: &Ticket,
        checks: &[Check],
        actual: &[u64],
        now: UnixMs,
    ) -> Option<Part> {
        let in_window = ticket.at / 1_000 >= (now / 1_000).saturating_sub(WINDOW_SPAN_S);
        let mut kinds = Vec::with_capacity(checks.len());
        let mut part = Part {
            keys: Vec::with_capacity(3 * checks.len()),
            args: Vec::with_capacity(2 + 4 * checks.len()),
        };
        let args = &mut part.args;
        args.extend([Vec::new(), num(ticket.at / 1_000)]); // the kinds go first
                                                           // A reservation whose lease has ended is released, and nothing is spent.
        let live = ticket.lease_ends > now;
        for (i, check) in checks.iter().enumerate() {
            let actual = actual.get(i).copied();
            match check.kind {
                CheckKind::Window { cost, .. } => {
                    let actual = actual.unwrap_or(cost);
                    if !in_window || actual.min(MAX_EXACT) == cost.min(MAX_EXACT) {
                        continue;
                    }
                    kinds.push(b'w');
                    args.push(delta(cost, actual));
                }
                CheckKind::Concurrency { .. } => {
                    kinds.push(b'c');
                    args.push(ticket.id.as_bytes().to_vec());
                }
                CheckKind::Budget {
                    reserve,
                    window_ends,
                    ..
                } => {
                    kinds.push(b'b');
                    let ttl = window_ends
                        .map(|end| end.saturating_sub(now).saturating_add(BUDGET_GRACE_MS));
                    args.extend([
                        member(&ticket.id, reserve),
                        num(reserve),
                        num(if live { actual.unwrap_or(reserve) } else { 0 }),
                        num_or_none(ttl),
                    ]);
                }
            }
            self.push_keys(&mut part.keys, check);
        }
        if kinds.is_empty() {
            return None;
        }
        part.args[0] = kinds;
        Some(part)
    }

    /// What gives back the leases and reservations an admission took (`admit`, a part made
    /// by [`Keys::admit`]) when nobody took its ticket (the request was cancelled while its
    /// call was out): the concurrency slots end, the reservations are released with
    /// nothing spent, and the windows keep their charge, as for a request dropped before
    /// it ended. `None` when it took neither.
    pub fn release(admit: &Part) -> Option<Part> {
        let kinds = admit.args.first()?;
        let at = admit.args.get(2)?;
        // The ticket id comes third from the end when anything was leased.
        let id = admit
            .args
            .len()
            .checked_sub(3)
            .and_then(|i| admit.args.get(i))?;
        let mut part = Part {
            keys: Vec::with_capacity(admit.keys.len()),
            args: vec![Vec::new(), at.clone()],
        };
        let mut released = Vec::with_capacity(kinds.len());
        let (mut k, mut a) = (0, 3);
        for &kind in kinds {
            match kind {
                b'w' => (k, a) = (k + 1, a + 2),
                b'c' => {
                    released.push(b'c');
                    part.keys.push(admit.keys.get(k)?.clone());
                    part.args.push(id.clone());
                    (k, a) = (k + 1, a + 1);
                }
                _ => {
                    released.push(b'b');
                    part.keys.extend_from_slice(admit.keys.get(k..k + 3)?);
                    let (reserve, member) = (admit.args.get(a + 1)?, admit.args.get(a + 2)?);
                    part.args.extend([
                        member.clone(),
                        reserve.clone(),
                        b"0".to_vec(),
                        b"-1".to_vec(),
                    ]);
                    (k, a) = (k + 3, a + 4);
                }
            }
        }
        if released.is_empty() {
            return None;
        }
        part.args[0] = released;
        Some(part)
    }
}
