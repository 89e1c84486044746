//! The limiter's one Lua script: a batch of settles, then a batch of admissions, each ticket
//! decided on its own (the layout and the semantics are on the parent module). Redis runs
//! the script alone, so every ticket's checks and charges are still atomic, and the settles
//! of a batch land before its admissions (a lease a request just gave back is free for the
//! next one).
//!
//! KEYS: the settles' keys, then the admissions', per check in order: window: buckets;
//! concurrency: leases; budget: spent, reserved, reservation leases.
//!
//! ARGV: the number of settles, the number of admissions, then each settle's arguments,
//! then each admission's:
//! - settle: kinds (one of `w`, `c`, `b` per check), the second the ticket was admitted
//!   in, then per check: `w` actual - cost (signed; only sent when not 0 and the bucket is
//!   still in the window); `c` ticket id; `b` member (`{id}:{reserve}`) reserve, what is
//!   spent (the actual cost; 0 when the lease has ended), spent-ttl-ms (-1: no window end).
//! - admission: kinds, now, the second of now, then per check: `w` limit cost; `c` limit;
//!   `b` limit reserve member retry-ms (-1: none); then, if any check is `c` or `b`: ticket
//!   id, lease expiry, the keys' minimum time to live (lease + 60 s).
//!
//! Reply: one entry per admission, in order: `{1}` admitted, `{0, index, retry_ms (-1:
//! none)}` refused.
//!
//! A batch touches the same few keys once per ticket (a key's windows, its concurrency
//! set, its budget), so the script keeps a write-back cache of the window hashes' fields and
//! the budget counters: each is read from Redis once per call and written once at its end
//! (`HSET` of the changed fields, `INCRBY` of the net change, then any `PEXPIRE` a ticket
//! asked for), and a key's expiry is looked at (`PTTL`) once per call. Redis runs the script
//! alone, so no client sees the difference; the decisions are those of the tickets run one
//! by one (a property test compares them). The rare paths that read a whole hash (a window
//! expiring old buckets, a refusal's retry-after) first write that key's changes back. The
//! concurrency and lease sets are used directly.

/// The script.
pub(super) const RUN_LUA: &str = r"
local call, tonumber, byte, format = redis.call, tonumber, string.byte, string.format

-- The write-back cache. Hashes: hv[key][field] a value (false: absent), hd[key][field] true
-- when changed. Counters: cv[key] the value Redis holds (a number), cd[key] the change not
-- yet written (nil: untouched). px[key] an expiry to set once written; ttl[key] true once
-- this call has looked at (and maybe extended) the key's expiry.
local hv, hd, cv, cd, px, ttl = {}, {}, {}, {}, {}, {}

-- Window hash `key`'s total `t`, oldest second `o` and bucket `sec` (each a string, or
-- false when absent): from the cache, or with one `HMGET` (a few Lua table reads cost far
-- less than a call).
local function wget(key, sec)
  local c = hv[key]
  if not c then c = {}; hv[key] = c end
  local t, o, b = c.t, c.o, c[sec]
  if t == nil or o == nil or b == nil then
    local v = call('HMGET', key, 't', 'o', sec)
    if t == nil then t = v[1]; c.t = t end
    if o == nil then o = v[2]; c.o = o end
    if b == nil then b = v[3]; c[sec] = b end
  end
  return t, o, b
end

-- Sets fields of hash `key` (pairs: field, value), written at the end.
local function hset(key, f1, v1, f2, v2, f3, v3)
  local cache, dirty = hv[key], hd[key]
  if not cache then cache = {}; hv[key] = cache end
  if not dirty then dirty = {}; hd[key] = dirty end
  cache[f1], dirty[f1] = v1, true
  if f2 then cache[f2], dirty[f2] = v2, true end
  if f3 then cache[f3], dirty[f3] = v3, true end
end

-- Writes hash `key`'s changes and its expiry, and forgets it (before a whole-hash read).
local function hflush(key)
  local dirty = hd[key]
  if dirty then
    local args = {}
    for f in pairs(dirty) do
      args[#args + 1] = f
      args[#args + 1] = hv[key][f]
    end
    if #args > 0 then call('HSET', key, unpack(args)) end
  end
  if px[key] then call('PEXPIRE', key, px[key]) end
  hv[key], hd[key], px[key] = nil, nil, nil
end

-- Counter `key`'s value (0 when absent).
local function cget(key)
  local v = cv[key]
  if v == nil then
    v = tonumber(call('GET', key)) or 0
    cv[key] = v
  end
  return v + (cd[key] or 0)
end

-- Both budget counters' values in one `MGET` when neither is cached.
local function cget2(a, b)
  if cv[a] == nil and cv[b] == nil then
    local v = call('MGET', a, b)
    cv[a], cv[b] = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  end
  return cget(a), cget(b)
end

-- Adds `n` to counter `key` (written with `INCRBY`, which keeps its expiry); its new value.
local function incr(key, n)
  local v = cget(key)
  cd[key] = (cd[key] or 0) + n
  return v + n
end

-- Writes everything changed: the hashes, the counters, then the expiries.
local function flush()
  for key in pairs(hd) do hflush(key) end
  for key, d in pairs(cd) do call('INCRBY', key, format('%d', d)) end
  for key, ms in pairs(px) do call('PEXPIRE', key, ms) end
end

-- Releases the reservations whose lease ended (expiry <= now); returns their total.
local function release(leases, reserved, nows)
  local gone = call('ZRANGEBYSCORE', leases, '-inf', nows)
  if #gone == 0 then return 0 end
  local freed = 0
  for _, m in ipairs(gone) do freed = freed + (tonumber(string.match(m, ':(%d+)$')) or 0) end
  call('ZREMRANGEBYSCORE', leases, '-inf', nows)
  if freed > 0 then incr(reserved, -freed) end
  return freed
end

-- Concurrency set `key`'s members: `ZCARD` once, then counted here (zc[key]) as this
-- call adds and removes them.
local zc = {}
local function zcard(key)
  if zc[key] == nil then zc[key] = call('ZCARD', key) end
  return zc[key]
end

-- How many keys and arguments a ticket's checks take.
local function span(kinds, settle)
  local nk, na, leasing = 0, 0, false
  for i = 1, #kinds do
    local kind = byte(kinds, i)
    if kind == 119 then
      nk, na = nk + 1, na + (settle and 1 or 2)
    elseif kind == 99 then
      nk, na, leasing = nk + 1, na + 1, true
    else
      nk, na, leasing = nk + 3, na + 4, true
    end
  end
  if settle then return nk, na + 2 end
  if leasing then na = na + 3 end
  return nk, na + 3
end

-- One settle: its keys from KEYS[k], its arguments from ARGV[a].
local function settle(k, a)
  local kinds, ats = ARGV[a], ARGV[a + 1]
  local at = tonumber(ats)
  a = a + 2
  for i = 1, #kinds do
    local kind = byte(kinds, i)
    if kind == 119 then -- w: correct the bucket, never below zero
      local key, delta = KEYS[k], tonumber(ARGV[a])
      k, a = k + 1, a + 1
      local tv, ov, bv = wget(key, ats)
      local b = tonumber(bv) or 0
      local left = b + delta
      if left < 0 then left = 0 end
      if left ~= b then
        local t, o = tonumber(tv), tonumber(ov)
        if not t then
          -- No total (a new key): the next admission counts the buckets.
          hset(key, ats, format('%d', left))
        elseif o and o <= at then
          hset(key, ats, format('%d', left), 't', format('%d', t + left - b))
        else
          hset(key, ats, format('%d', left), 't', format('%d', t + left - b), 'o', ats)
        end
        if not bv then px[key] = 65000 end
      end
    elseif kind == 99 then -- c: the lease ends
      if call('ZREM', KEYS[k], ARGV[a]) == 1 and zc[KEYS[k]] then
        zc[KEYS[k]] = zc[KEYS[k]] - 1
      end
      k, a = k + 1, a + 1
    else -- b: the reservation ends, and what it cost is spent
      local spent, reserved, leases = KEYS[k], KEYS[k + 1], KEYS[k + 2]
      local actual = ARGV[a + 2]
      if call('ZREM', leases, ARGV[a]) == 1 then
        incr(reserved, -tonumber(ARGV[a + 1]))
        if actual ~= '0' and incr(spent, tonumber(actual)) == tonumber(actual)
            and ARGV[a + 3] ~= '-1' then
          px[spent] = ARGV[a + 3]
        end
      end
      k, a = k + 3, a + 4
    end
  end
end

-- A window's total and oldest second, with the buckets older than the window expired.
-- Returns total, oldest, and the current bucket's units (a string, or false).
local function window_state(key, secs, low)
  local tv, ov, bv = wget(key, secs)
  local t, o = tonumber(tv), tonumber(ov)
  if t and o and o >= low then return t, o, bv end
  -- Reads and deletes buckets: this call's changes go to Redis first.
  hflush(key)
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
  if moved then hset(key, 't', format('%d', t), 'o', format('%d', o)) end
  return t, o, bv
end

-- A window refusal's retry: when enough of the oldest buckets have left for `cost`.
local function window_retry(key, t, cost, limit, now)
  if cost > limit then return 60000 end
  hflush(key)
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
    if used + cost <= limit then return (b + 61) * 1000 - now end
  end
  return 60000
end

-- One admission: its keys from KEYS[k0], its arguments from ARGV[a0].
local function admit(k0, a0)
  local kinds, nows, secs = ARGV[a0], ARGV[a0 + 1], ARGV[a0 + 2]
  local now, sec = tonumber(nows), tonumber(secs)
  local low = sec - 60
  local n = #kinds
  -- Per window check i: st[i] its total, st[n + i] its current bucket, st[2n + i] its `o`.
  local st = {}
  local k, a = k0, a0 + 3
  for i = 1, n do
    local kind = byte(kinds, i)
    if kind == 119 then -- w
      local key = KEYS[k]
      local limit, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
      k, a = k + 1, a + 2
      local t, o, b = window_state(key, secs, low)
      if t + cost > limit then
        return {0, i - 1, window_retry(key, t, cost, limit, now)}
      end
      st[i], st[n + i], st[2 * n + i] = t, b, o
    elseif kind == 99 then -- c
      local key, limit = KEYS[k], tonumber(ARGV[a])
      k, a = k + 1, a + 1
      -- Every member counts, unless that is too many: then only the live ones.
      if zcard(key) + 1 > limit then
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
      local s, r = cget2(spent, reserved)
      local need = s + r + reserve
      -- Every reservation counts, unless that is too much: then only the live ones.
      if need > limit and need - release(leases, reserved, nows) > limit then
        return {0, i - 1, tonumber(retry)}
      end
    end
  end

  -- Every check passed: charge them all.
  local id, expiry, gc = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  k, a = k0, a0 + 3
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
          hset(key, secs, format('%d', units), 't', t)
        else
          hset(key, secs, format('%d', units), 't', t, 'o', secs)
        end
        if not b then px[key] = 65000 end
      end
    elseif kind == 99 then
      local key = KEYS[k]
      k, a = k + 1, a + 1
      if call('ZADD', key, expiry, id) == 1 and zc[key] then zc[key] = zc[key] + 1 end
      -- Less than the lease plus a minute left: extend, and drop the expired leases.
      if not ttl[key] then
        ttl[key] = true
        if call('PTTL', key) < gc then
          call('PEXPIRE', key, format('%d', gc + 60000))
          call('ZREMRANGEBYSCORE', key, '-inf', nows)
          zc[key] = nil
        end
      end
    else
      local reserved, leases = KEYS[k + 1], KEYS[k + 2]
      local reserve, member = ARGV[a + 1], ARGV[a + 2]
      k, a = k + 3, a + 4
      if call('ZADD', leases, expiry, member) == 1 then incr(reserved, tonumber(reserve)) end
      -- The same, for both keys: they keep one expiry.
      if not ttl[leases] then
        ttl[leases] = true
        if call('PTTL', leases) < gc then
          local ms = format('%d', gc + 60000)
          call('PEXPIRE', leases, ms)
          px[reserved] = ms
          release(leases, reserved, nows)
        end
      end
    end
  end
  return {1}
end

local settles, admits = tonumber(ARGV[1]), tonumber(ARGV[2])
local k, a = 1, 3
for _ = 1, settles do
  local nk, na = span(ARGV[a], true)
  settle(k, a)
  k, a = k + nk, a + na
end
local out = {}
for j = 1, admits do
  local nk, na = span(ARGV[a], false)
  out[j] = admit(k, a)
  k, a = k + nk, a + na
end
flush()
return out
";
