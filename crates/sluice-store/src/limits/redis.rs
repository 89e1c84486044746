//! The global limiter: the state in Redis, every admission one Lua script (`EVALSHA`) that
//! checks every check of the request and, only if all pass, charges all of them; Redis runs
//! a script alone, so no two replicas ever both take the last unit. Every settle is one more
//! script. The scripts transcribe the memory limiter (same semantics, same `now`: the
//! caller's clock, never Redis `TIME`).
//!
//! Layout, for a configured `prefix` and a check named `name` (`K` = `{prefix}lim:{name}`):
//! - Window: `K`, a HASH second -> units (buckets older than the window deleted by the
//!   script, `PEXPIRE` 65 s on every charge: 61 s plus slack for clock skew), and
//!   `K#settled`, a ZSET ticket id -> bucket of the tickets settled on it (members out of
//!   the window deleted by the script; `PEXPIRE` 65 s).
//! - Concurrency: `K`, a ZSET ticket id -> lease expiry (expired members deleted on every
//!   admission); the key expires a minute after its longest lease.
//! - Budget: `K`, the spent counter, a decimal string (`INCRBY` at settle, `SET NX` at seed;
//!   `PEXPIRE` to a day past the window's end when it has one); `K#res`, a HASH `t:{ticket
//!   id}` -> reserved amount plus `sum`, their total; and `K#lease`, a ZSET ticket id ->
//!   reservation expiry. Both expire a minute after their longest lease.
//!
//! The scripts are loaded once with `SCRIPT LOAD` and run with `EVALSHA`; after `NOSCRIPT`
//! (a restarted or flushed Redis) the call is sent again as `EVAL`, which caches it anew.
//! Lua numbers are doubles: limits, costs and amounts are capped at 2^53 - 1 on the way in
//! (9 million USD in nano-USD), below which the script's arithmetic is exact.
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

use super::{millis, Check, CheckKind, Denial, MemoryLimiter, Ticket, BUDGET_GRACE_MS};
use crate::redis::{RedisClient, Value};
use crate::{unix_now_ms, StoreError, UnixMs};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// At most one warning per this long.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// The largest number the scripts take (Lua numbers are doubles, exact up to 2^53).
const MAX_EXACT: u64 = (1 << 53) - 1;

/// Helpers both scripts share. `ARGV[1]` is always `now`.
macro_rules! lua_prelude {
    () => {
        r"
local now = tonumber(ARGV[1])
local sec = math.floor(now / 1000)
local function fmt(x) return string.format('%d', x) end
-- Sets the key's expiry to `ms` unless it already lasts longer.
local function keep(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, fmt(ms)) end
end
local function unreserve(res, amount)
  local left = tonumber(redis.call('HGET', res, 'sum') or '0') - amount
  if left > 0 then
    redis.call('HSET', res, 'sum', fmt(left))
  else
    redis.call('HDEL', res, 'sum')
  end
end
-- Releases the budget reservations whose lease ended (expiry <= now).
local function release_expired(res, leases)
  local gone = redis.call('ZRANGEBYSCORE', leases, '-inf', ARGV[1])
  if #gone == 0 then return end
  local freed = 0
  for _, t in ipairs(gone) do
    local amount = redis.call('HGET', res, 't:' .. t)
    if amount then
      freed = freed + tonumber(amount)
      redis.call('HDEL', res, 't:' .. t)
    end
  end
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', ARGV[1])
  unreserve(res, freed)
end
"
    };
}

/// KEYS, per check: window: buckets, settled; concurrency: leases; budget: spent,
/// reservations, reservation leases. ARGV: now, lease ms, ticket id, then four per check:
/// `w` limit cost -, `c` limit - -, `b` limit reserve window-end (-1: none).
/// Reply: `{1}` admitted, `{0, index, retry_ms (-1: none)}` refused.
const ADMIT_LUA: &str = concat!(
    lua_prelude!(),
    r"
local lease = tonumber(ARGV[2])
local id = ARGV[3]
local n = (#ARGV - 3) / 4
local plan = {}
local k = 1
for i = 1, n do
  local a = 3 + (i - 1) * 4
  local kind = ARGV[a + 1]
  local limit = tonumber(ARGV[a + 2])
  if kind == 'w' then
    local key = KEYS[k]
    k = k + 2
    local cost = tonumber(ARGV[a + 3])
    local low = sec - 60
    local fields = redis.call('HGETALL', key)
    local used = 0
    local live = {}
    for j = 1, #fields, 2 do
      local b = tonumber(fields[j])
      if b < low then
        redis.call('HDEL', key, fields[j])
      else
        local units = tonumber(fields[j + 1])
        used = used + units
        live[#live + 1] = {b, units}
      end
    end
    if used + cost > limit then
      local retry = 60000
      if cost <= limit then
        table.sort(live, function(x, y) return x[1] < y[1] end)
        for _, e in ipairs(live) do
          used = used - e[2]
          if used + cost <= limit then
            retry = (e[1] + 61) * 1000 - now
            break
          end
        end
      end
      return {0, i - 1, retry}
    end
    plan[i] = {kind, key, ARGV[a + 3]}
  elseif kind == 'c' then
    local key = KEYS[k]
    k = k + 1
    redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
    if redis.call('ZCARD', key) + 1 > limit then
      local retry = 1000
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if first[2] then retry = math.min(retry, tonumber(first[2]) - now) end
      return {0, i - 1, retry}
    end
    plan[i] = {kind, key}
  else
    local spent_key, res, leases = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    k = k + 3
    local reserve = tonumber(ARGV[a + 3])
    local ends = tonumber(ARGV[a + 4])
    release_expired(res, leases)
    local spent = tonumber(redis.call('GET', spent_key) or '0')
    local reserved = tonumber(redis.call('HGET', res, 'sum') or '0')
    if spent + reserved + reserve > limit then
      local retry = -1
      if ends >= 0 then retry = math.max(ends - now, 0) end
      return {0, i - 1, retry}
    end
    plan[i] = {kind, res, leases, ARGV[a + 3]}
  end
end
local expiry = fmt(now + lease)
local gc = lease + 60000
for i = 1, n do
  local p = plan[i]
  if p[1] == 'w' then
    if tonumber(p[3]) > 0 then
      redis.call('HINCRBY', p[2], fmt(sec), p[3])
      redis.call('PEXPIRE', p[2], 65000)
    end
  elseif p[1] == 'c' then
    redis.call('ZADD', p[2], expiry, id)
    keep(p[2], gc)
  else
    if redis.call('HSETNX', p[2], 't:' .. id, p[4]) == 1 then
      redis.call('HINCRBY', p[2], 'sum', p[4])
    end
    redis.call('ZADD', p[3], expiry, id)
    keep(p[2], gc)
    keep(p[3], gc)
  end
end
return {1}
"
);

/// KEYS as for admit. ARGV: now, ticket id, admitted at, then four per check:
/// `w` cost actual -, `c` - - -, `b` actual window-end (-1: none) -. Reply: 1.
const SETTLE_LUA: &str = concat!(
    lua_prelude!(),
    r"
local id = ARGV[2]
local at = math.floor(tonumber(ARGV[3]) / 1000)
local n = (#ARGV - 3) / 4
local k = 1
for i = 1, n do
  local a = 3 + (i - 1) * 4
  local kind = ARGV[a + 1]
  if kind == 'w' then
    local key, settled = KEYS[k], KEYS[k + 1]
    k = k + 2
    if at >= sec - 60 then
      redis.call('ZREMRANGEBYSCORE', settled, '-inf', '(' .. fmt(sec - 60))
      if redis.call('ZADD', settled, 'NX', fmt(at), id) == 1 then
        redis.call('PEXPIRE', settled, 65000)
        local cost, actual = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
        if actual ~= cost then
          local field = fmt(at)
          local left = tonumber(redis.call('HGET', key, field) or '0') + actual - cost
          if left > 0 then
            redis.call('HSET', key, field, fmt(left))
            redis.call('PEXPIRE', key, 65000)
          else
            redis.call('HDEL', key, field)
          end
        end
      end
    end
  elseif kind == 'c' then
    redis.call('ZREM', KEYS[k], id)
    k = k + 1
  else
    local spent_key, res, leases = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    k = k + 3
    release_expired(res, leases)
    local amount = redis.call('HGET', res, 't:' .. id)
    if amount then
      redis.call('HDEL', res, 't:' .. id)
      redis.call('ZREM', leases, id)
      unreserve(res, tonumber(amount))
      if tonumber(ARGV[a + 2]) > 0 then
        redis.call('INCRBY', spent_key, ARGV[a + 2])
        local ends = tonumber(ARGV[a + 3])
        if ends >= 0 then
          redis.call('PEXPIRE', spent_key, fmt(math.max(ends - now, 0) + 86400000))
        end
      end
    end
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

/// The window end for the scripts, `-1` for none.
fn ends(window_ends: Option<UnixMs>) -> Vec<u8> {
    window_ends.map_or_else(|| b"-1".to_vec(), num)
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

    /// The keys of every check, in the order the scripts read them.
    fn keys(&self, checks: &[Check]) -> Vec<Vec<u8>> {
        let mut keys = Vec::with_capacity(checks.len() * 3);
        for check in checks {
            keys.push(self.key(&check.name, ""));
            match check.kind {
                CheckKind::Window { .. } => keys.push(self.key(&check.name, "#settled")),
                CheckKind::Concurrency { .. } => {}
                CheckKind::Budget { .. } => {
                    keys.push(self.key(&check.name, "#res"));
                    keys.push(self.key(&check.name, "#lease"));
                }
            }
        }
        keys
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
        let ticket = Ticket {
            id: id.to_owned(),
            at: now,
            fallback: false,
        };
        if checks.is_empty() {
            return Ok(ticket);
        }
        let mut args = Vec::with_capacity(3 + 4 * checks.len());
        args.extend([num(now), num(millis(lease)), id.as_bytes().to_vec()]);
        for check in checks {
            let [kind, a, b, c]: [Vec<u8>; 4] = match check.kind {
                CheckKind::Window { limit, cost } => [b"w".to_vec(), num(limit), num(cost), vec![]],
                CheckKind::Concurrency { limit } => [b"c".to_vec(), num(limit), vec![], vec![]],
                CheckKind::Budget {
                    limit,
                    reserve,
                    window_ends,
                } => [b"b".to_vec(), num(limit), num(reserve), ends(window_ends)],
            };
            args.extend([kind, a, b, c]);
        }
        let keys = self.inner.keys(checks);
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
        if checks.is_empty() {
            return Ok(());
        }
        let mut args = Vec::with_capacity(3 + 4 * checks.len());
        args.extend([num(now), ticket.id.as_bytes().to_vec(), num(ticket.at)]);
        for (i, check) in checks.iter().enumerate() {
            let actual = actual.get(i).copied();
            let [kind, a, b, c]: [Vec<u8>; 4] = match check.kind {
                CheckKind::Window { cost, .. } => [
                    b"w".to_vec(),
                    num(cost),
                    num(actual.unwrap_or(cost)),
                    vec![],
                ],
                CheckKind::Concurrency { .. } => [b"c".to_vec(), vec![], vec![], vec![]],
                CheckKind::Budget {
                    reserve,
                    window_ends,
                    ..
                } => [
                    b"b".to_vec(),
                    num(actual.unwrap_or(reserve)),
                    ends(window_ends),
                    vec![],
                ],
            };
            args.extend([kind, a, b, c]);
        }
        let keys = self.inner.keys(checks);
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
