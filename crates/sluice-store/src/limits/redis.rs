//! The global limiter: the state in Redis, every admission one Lua script (`EVALSHA`) that
//! checks every check of the request and, only if all pass, charges all of them; Redis runs
//! a script alone, so no two replicas ever both take the last unit. A settle is one more
//! script, when it has anything to do. The scripts transcribe the memory limiter (same
//! decisions, same `now`: the caller's clock, never Redis `TIME`), with as few Redis calls
//! as that allows: each call inside a script costs about as much as the work it does.
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
//! The scripts are loaded once with `SCRIPT LOAD` and run with `EVALSHA`; after `NOSCRIPT`
//! (a restarted or flushed Redis) the call is sent again as `EVAL`, which caches it anew.
//! The arguments come formatted from here (seconds, expiries, members, retry-afters, a
//! window settle's signed correction) and the kinds of the checks as one string (`w`, `c`,
//! `b` per check). Lua numbers are doubles: limits, costs and amounts are capped at 2^53 - 1
//! on the way in (9 million USD in nano-USD), below which the script's arithmetic is exact.
//!
//! Failures fail open: when a script call fails (Redis down, a timeout, an error reply),
//! the admission goes to an in-process [`MemoryLimiter`] (the ticket says `fallback: true`,
//! and its settle goes there too), is counted ([`RedisLimiter::fallbacks`]) and logged at
//! warn at most once per `WARN_EVERY`. The client's backoff makes the calls during an
//! outage fail at once. `spent`, `seed` and the settle of a Redis ticket return the error.
//! While failing over, each replica enforces every limit on its own (so up to the limit per
//! replica). A call that timed out may still have run: its charges stay in Redis until
//! their leases or windows end.
//!
//! One Redis, not a Redis Cluster: a request's keys need not share a hash slot.

use super::check::{millis, Check, CheckKind, Denial, Ticket, BUDGET_GRACE_MS, WINDOW_SPAN_S};
use super::memory::MemoryLimiter;
use crate::redis::{RedisClient, Value};
use crate::{unix_now_ms, StoreError, UnixMs};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// At most one warning per this long.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// The largest number the scripts take (Lua numbers are doubles, exact up to 2^53).
const MAX_EXACT: u64 = (1 << 53) - 1;

/// How much longer than its longest lease a concurrency or reservation key is kept, at
/// least (when less is left, the scripts extend it to the lease plus twice this).
const LEASE_GRACE_MS: u64 = 60_000;

/// Helpers both scripts share.
macro_rules! lua_prelude {
    () => {
        r"
local call, tonumber, byte, format = redis.call, tonumber, string.byte, string.format
"
    };
}

/// KEYS, per check: window: buckets; concurrency: leases; budget: spent, reserved,
/// reservation leases. ARGV: kinds (one of `w`, `c`, `b` per check), now, the second of
/// now, then per check: `w` limit cost; `c` limit; `b` limit reserve member
/// (`{id}:{reserve}`) retry-ms (-1: none); then, if any check is `c` or `b`: ticket id,
/// lease expiry, the keys' minimum time to live (lease + 60 s).
/// Reply: `{1}` admitted, `{0, index, retry_ms (-1: none)}` refused.
const ADMIT_LUA: &str = concat!(
    lua_prelude!(),
    r"
local kinds, nows, secs = ARGV[1], ARGV[2], ARGV[3]
local now, sec = tonumber(nows), tonumber(secs)
local low = sec - 60
local n = #kinds
-- Per window check i: st[i] its total, st[n + i] its current bucket, st[2n + i] its `o`.
local st = {}

-- Releases the reservations whose lease ended (expiry <= now); returns their total.
local function release(leases, reserved)
  local gone = call('ZRANGEBYSCORE', leases, '-inf', nows)
  if #gone == 0 then return 0 end
  local freed = 0
  for _, m in ipairs(gone) do freed = freed + (tonumber(string.match(m, ':(%d+)$')) or 0) end
  call('ZREMRANGEBYSCORE', leases, '-inf', nows)
  if freed > 0 then call('DECRBY', reserved, format('%d', freed)) end
  return freed
end

local k, a = 1, 4
for i = 1, n do
  local kind = byte(kinds, i)
  if kind == 119 then -- w
    local key = KEYS[k]
    local limit, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    k, a = k + 1, a + 2
    local v = call('HMGET', key, 't', 'o', secs)
    local t, o = tonumber(v[1]), tonumber(v[2])
    if not (t and o and o >= low) then
      local moved = true
      if t and o and low - o <= 20 then
        -- Expire the buckets from `o` to the window's start (one a second, mostly).
        local fs, gone = {}, {}
        for b = o, low - 1 do fs[#fs + 1] = b end
        local vs = call('HMGET', key, unpack(fs))
        for j = 1, #fs do
          if vs[j] then
            t = t - tonumber(vs[j])
            gone[#gone + 1] = fs[j]
          end
        end
        if #gone > 0 then call('HDEL', key, unpack(gone)) end
        o = low
      else
        -- A new key, a long gap, or buckets without a total: count every bucket.
        local f = call('HGETALL', key)
        local had, gone = t, {}
        t, o = 0, nil
        for j = 1, #f, 2 do
          local b = tonumber(f[j])
          if b then
            if b < low then
              gone[#gone + 1] = f[j]
            else
              t = t + tonumber(f[j + 1])
              if not o or b < o then o = b end
            end
          end
        end
        if #gone > 0 then call('HDEL', key, unpack(gone)) end
        if had then o = o or low else moved = o ~= nil end
      end
      -- Written now, whatever the other checks decide.
      if moved then call('HSET', key, 't', format('%d', t), 'o', format('%d', o)) end
    end
    if t + cost > limit then
      -- Retry when enough of the oldest buckets have left the window for `cost`.
      local retry = 60000
      if cost <= limit then
        local f = call('HGETALL', key)
        local bs, units = {}, {}
        for j = 1, #f, 2 do
          local b = tonumber(f[j])
          if b then
            bs[#bs + 1] = b
            units[b] = tonumber(f[j + 1])
          end
        end
        table.sort(bs)
        local used = t
        for _, b in ipairs(bs) do
          used = used - units[b]
          if used + cost <= limit then
            retry = (b + 61) * 1000 - now
            break
          end
        end
      end
      return {0, i - 1, retry}
    end
    st[i], st[n + i], st[2 * n + i] = t, v[3], o
  elseif kind == 99 then -- c
    local key, limit = KEYS[k], tonumber(ARGV[a])
    k, a = k + 1, a + 1
    -- Every member counts, unless that is too many: then only the live ones.
    if call('ZCARD', key) + 1 > limit then
      local open = '(' .. nows
      if call('ZCOUNT', key, open, '+inf') + 1 > limit then
        local retry = 1000
        local first = call('ZRANGEBYSCORE', key, open, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
        if first[2] then retry = math.min(retry, tonumber(first[2]) - now) end
        return {0, i - 1, retry}
      end
    end
  else -- b
    local spent, reserved, leases = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    local limit, reserve = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    local retry = ARGV[a + 3]
    k, a = k + 3, a + 4
    local v = call('MGET', spent, reserved)
    local need = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0) + reserve
    -- Every reservation counts, unless that is too much: then only the live ones.
    if need > limit and need - release(leases, reserved) > limit then
      return {0, i - 1, tonumber(retry)}
    end
  end
end

-- Every check passed: charge them all.
local id, expiry, gc = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
k, a = 1, 4
for i = 1, n do
  local kind = byte(kinds, i)
  if kind == 119 then
    local key, cost = KEYS[k], tonumber(ARGV[a + 1])
    k, a = k + 1, a + 2
    if cost > 0 then
      local b, o = st[n + i], st[2 * n + i]
      local units = cost
      if b then units = units + tonumber(b) end
      local t = format('%d', st[i] + cost)
      if o and o <= sec then
        call('HSET', key, secs, format('%d', units), 't', t)
      else
        call('HSET', key, secs, format('%d', units), 't', t, 'o', secs)
      end
      if not b then call('PEXPIRE', key, 65000) end
    end
  elseif kind == 99 then
    local key = KEYS[k]
    k, a = k + 1, a + 1
    call('ZADD', key, expiry, id)
    -- Less than the lease plus a minute left: extend, and drop the expired leases.
    if call('PTTL', key) < gc then
      call('PEXPIRE', key, format('%d', gc + 60000))
      call('ZREMRANGEBYSCORE', key, '-inf', nows)
    end
  else
    local reserved, leases = KEYS[k + 1], KEYS[k + 2]
    local reserve, member = ARGV[a + 1], ARGV[a + 2]
    k, a = k + 3, a + 4
    if call('ZADD', leases, expiry, member) == 1 then call('INCRBY', reserved, reserve) end
    -- The same, for both keys: they keep one expiry.
    if call('PTTL', leases) < gc then
      local ms = format('%d', gc + 60000)
      call('PEXPIRE', leases, ms)
      call('PEXPIRE', reserved, ms)
      release(leases, reserved)
    end
  end
end
return {1}
"
);

/// KEYS as for admit, for the checks sent. ARGV: kinds, the second the ticket was admitted
/// in, then per check: `w` actual - cost (signed; only sent when not 0 and the bucket is
/// still in the window); `c` ticket id; `b` member (`{id}:{reserve}`) reserve, what is
/// spent (the actual cost; 0 when the lease has ended), spent-ttl-ms (-1: no window end).
/// Reply: 1.
const SETTLE_LUA: &str = concat!(
    lua_prelude!(),
    r"
local kinds, ats = ARGV[1], ARGV[2]
local at = tonumber(ats)
local k, a = 1, 3
for i = 1, #kinds do
  local kind = byte(kinds, i)
  if kind == 119 then -- w: correct the bucket, never below zero
    local key, delta = KEYS[k], tonumber(ARGV[a])
    k, a = k + 1, a + 1
    local v = call('HMGET', key, ats, 't', 'o')
    local b = tonumber(v[1]) or 0
    local left = b + delta
    if left < 0 then left = 0 end
    if left ~= b then
      local t, o = tonumber(v[2]), tonumber(v[3])
      if not t then
        -- No total (a new key): the next admission counts the buckets.
        call('HSET', key, ats, format('%d', left))
      elseif o and o <= at then
        call('HSET', key, ats, format('%d', left), 't', format('%d', t + left - b))
      else
        call('HSET', key, ats, format('%d', left), 't', format('%d', t + left - b), 'o', ats)
      end
      if not v[1] then call('PEXPIRE', key, 65000) end
    end
  elseif kind == 99 then -- c: the lease ends
    call('ZREM', KEYS[k], ARGV[a])
    k, a = k + 1, a + 1
  else -- b: the reservation ends, and what it cost is spent
    local spent, reserved, leases = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    local actual = ARGV[a + 2]
    if call('ZREM', leases, ARGV[a]) == 1 then
      call('DECRBY', reserved, ARGV[a + 1])
      if actual ~= '0' and call('INCRBY', spent, actual) == tonumber(actual)
          and ARGV[a + 3] ~= '-1' then
        call('PEXPIRE', spent, ARGV[a + 3])
      end
    end
    k, a = k + 3, a + 4
  end
end
return 1
"
);

/// A script's source and, once loaded, its SHA1.
#[derive(Debug)]
struct Script {
    src: &'static str,
    sha: OnceLock<String>,
}

impl Script {
    const fn new(src: &'static str) -> Self {
        Self {
            src,
            sha: OnceLock::new(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    client: RedisClient,
    prefix: String,
    admit: Script,
    settle: Script,
    fallback: MemoryLimiter,
    fallbacks: AtomicU64,
    epoch: Instant,
    /// When the last warning went out (ms since `epoch`, plus 1; 0: never).
    warned_at: AtomicU64,
}

/// The Redis limiter. Cheap to clone; clones share the client, the scripts' SHA1s, the
/// fallback and the counters.
#[derive(Debug, Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

/// A number for the scripts: decimal, capped at [`MAX_EXACT`].
fn num(n: u64) -> Vec<u8> {
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

// === impl Inner ===

impl Inner {
    fn key(&self, name: &str, suffix: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 4 + name.len() + suffix.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(b"lim:");
        k.extend_from_slice(name.as_bytes());
        k.extend_from_slice(suffix.as_bytes());
        k
    }

    /// Appends the keys of `check`, in the order the scripts read them.
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

    /// Runs `script` with `EVALSHA` (loading it first if this process has not yet), or
    /// `EVAL` after `NOSCRIPT`.
    async fn eval(
        &self,
        script: &Script,
        keys: &[Vec<u8>],
        args: &[Vec<u8>],
    ) -> Result<Value, StoreError> {
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
        let numkeys = keys.len().to_string();
        let mut argv: Vec<&[u8]> = Vec::with_capacity(3 + keys.len() + args.len());
        argv.extend([&b"EVALSHA"[..], sha.as_bytes(), numkeys.as_bytes()]);
        argv.extend(keys.iter().map(Vec::as_slice));
        argv.extend(args.iter().map(Vec::as_slice));
        match self.client.cmd(&argv).await {
            Err(StoreError::Reply(e)) if e.starts_with("NOSCRIPT") => {
                argv[0] = b"EVAL";
                argv[1] = script.src.as_bytes();
                self.client.cmd(&argv).await
            }
            other => other,
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

/// Reads the admit script's reply.
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
                client,
                prefix: prefix.to_owned(),
                admit: Script::new(ADMIT_LUA),
                settle: Script::new(SETTLE_LUA),
                fallback: MemoryLimiter::new(),
                fallbacks: AtomicU64::new(0),
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

    /// Checks every check and charges them all if all pass, in one script; when the script
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
        let mut kinds = Vec::with_capacity(checks.len());
        let mut keys = Vec::with_capacity(3 * checks.len());
        let mut args = Vec::with_capacity(6 + 4 * checks.len());
        args.extend([Vec::new(), num(now), num(now / 1_000)]); // the kinds go first
        let mut leasing = false;
        for check in checks {
            self.inner.push_keys(&mut keys, check);
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
        let reply = self.inner.eval(&self.inner.admit, &keys, &args).await;
        match reply.and_then(admit_reply) {
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

    /// Ends an admission in one script (a fallback ticket: in the fallback).
    pub async fn settle(
        &self,
        ticket: &Ticket,
        checks: &[Check],
        actual: &[u64],
        now: UnixMs,
    ) -> Result<(), StoreError> {
        if ticket.fallback {
            self.inner.fallback.settle(ticket, checks, actual, now);
            return Ok(());
        }
        // A window bucket out of the window is left alone (as is one with nothing to
        // correct): such checks are not sent, and a settle left with none sends nothing.
        let in_window = ticket.at / 1_000 >= (now / 1_000).saturating_sub(WINDOW_SPAN_S);
        let mut kinds = Vec::with_capacity(checks.len());
        let mut keys = Vec::with_capacity(3 * checks.len());
        let mut args = Vec::with_capacity(2 + 4 * checks.len());
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
            self.inner.push_keys(&mut keys, check);
        }
        if kinds.is_empty() {
            return Ok(());
        }
        args[0] = kinds;
        match self.inner.eval(&self.inner.settle, &keys, &args).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.inner.warn("settle", &e);
                Err(e)
            }
        }
    }

    /// What budget counter `name` has spent; 0 if absent.
    pub async fn spent(&self, name: &str) -> Result<u64, StoreError> {
        let key = self.inner.key(name, "");
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
        let key = self.inner.key(name, "");
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
