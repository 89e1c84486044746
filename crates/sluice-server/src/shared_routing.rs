//! Routing state shared by every replica on Redis (`storage.redis_url`): each route's canary
//! stage, so that a rollback (manual or automatic) or an advance on one replica reaches the
//! others within a sync interval, and a restarted replica takes the rollout where the fleet
//! left it instead of at its first stage; each deployment's rate-limit cooldown, so that one
//! replica's 429 with `Retry-After` from an upstream is honoured by all; and each
//! deployment's open breaker, so that a dead upstream found by one replica is skipped by all.
//!
//! Breakers: each round reads every deployment's `{prefix}cooldown:{deployment}` (a 429's
//! cooldown) and `{prefix}open:{deployment}` (an open breaker's end) with one `MGET` each,
//! takes the later ones, and writes this replica's own later ones (`SET ... PXAT`, so a key
//! expires when its deadline passes). A breaker opened elsewhere opens here until the same
//! end, then goes half-open here as there.
//!
//! Half-open, the fleet sends one probe: the replica whose breaker hands out a probe first
//! claims `{prefix}probe:{deployment}` (`SET NX`, for a cooldown: a probe whose outcome
//! never comes is given up then, as in the breaker). Other replicas find it taken, hold
//! their own probe back (asking again every [`PROBE_RECHECK`] at most) and skip the
//! deployment meanwhile. The probe's success writes `{prefix}closed:{deployment}` (the end
//! of the opening it closed); replicas read it when they ask to probe and in every round,
//! and close their breakers for that opening. Its failure reopens the breaker on the
//! prober, which shares the new opening like any other. A probe that ends without a verdict
//! (the client left, a 429) frees the claim. Redis unreachable: each replica probes on its
//! own.
//!
//! Once a second (and at start) each replica offers its canaries' [`SharedCanary`] to Redis
//! with one script call per canary: Redis keeps the newer state (a higher epoch; at an equal
//! epoch, a rollback) and answers with what it holds, which the replica adopts. Redis
//! unreachable: each replica keeps its own state, and `sluice_routing_sync_errors_total`
//! counts the failed calls.

use sluice_core::breaker::{Breaker, Permit, Refusal};
use sluice_core::canary::{Canary, SharedCanary};
use sluice_store::redis::Value;
use sluice_store::{RedisClient, StoreError};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often replicas sync.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// KEYS[1] the canary's key; ARGV[1] the offered state, ARGV[2] its epoch, ARGV[3] `1` when
/// it is a rollback. Keeps the newer of the stored and the offered state; returns it.
const OFFER: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local epoch = tonumber(string.match(cur, '^(%d+)'))
  local offered = tonumber(ARGV[2])
  local rolled = string.sub(cur, -1) == '-'
  if epoch and (epoch > offered or (epoch == offered and (rolled or ARGV[3] ~= '1'))) then
    return cur
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
";

/// Longest a replica that found the fleet's probe taken waits before it asks again.
pub const PROBE_RECHECK: Duration = Duration::from_millis(200);

/// Slack when two replicas' ends of one opening are compared (they travel as unix
/// milliseconds and come back as instants).
const SAME_OPENING_MS: u64 = 10;

/// How long the news of a closing probe is kept (the replicas read it within a round; a
/// later opening ends later, so old news never closes it).
const CLOSED_KEPT: Duration = Duration::from_secs(60);

/// KEYS[1] the deployment's probe key, KEYS[2] its closed key; ARGV[1] the end of the
/// opening to probe (unix ms), ARGV[2] this replica's token, ARGV[3] the claim's time to
/// live (ms), ARGV[4] [`SAME_OPENING_MS`]. Returns -2 when a probe already closed that
/// opening, -1 when the probe is this replica's, else the ms the other claim has left.
const CLAIM: &str = r"
local closed = tonumber(redis.call('GET', KEYS[2]) or '')
if closed and closed + tonumber(ARGV[4]) >= tonumber(ARGV[1]) then
  return -2
end
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return -1
end
if redis.call('GET', KEYS[1]) == ARGV[2] then
  return -1
end
return math.max(redis.call('PTTL', KEYS[1]), 0)
";

/// KEYS[1] a probe key; ARGV[1] this replica's token. Frees the claim if it is ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The fleet's probe of one opening of a deployment's breaker, held by this replica:
/// settle it with [`SharedRouting::settle_probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetProbe {
    /// End of the opening probed, unix ms.
    end_ms: u64,
}

/// What a fleet probe's request proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeVerdict {
    /// It succeeded: the breaker closed; every replica closes its own.
    Closed,
    /// It failed: the breaker reopened here (shared like any opening).
    Failed,
    /// No verdict (the client left, a 429): another replica may probe.
    None,
}

/// The shared routing state of one gateway.
#[derive(Debug)]
pub struct SharedRouting {
    client: RedisClient,
    prefix: String,
    /// Names this replica's probe claims.
    token: String,
    /// Script calls that failed.
    pub errors: AtomicU64,
    /// Canary states, cooldowns, open breakers and closings taken from other replicas.
    pub adopted: AtomicU64,
}

impl SharedRouting {
    /// Shares through the Redis at `url`, under `prefix`; connects lazily.
    pub fn new(url: &str, prefix: &str, op_timeout: Duration) -> Result<Self, StoreError> {
        Ok(Self {
            client: RedisClient::new(url, op_timeout)?,
            prefix: prefix.to_string(),
            token: format!(
                "{}-{:016x}",
                std::process::id(),
                sluice_core::rng::next_u64()
            ),
            errors: AtomicU64::new(0),
            adopted: AtomicU64::new(0),
        })
    }

    /// One sync round over the routes' canaries (`(route name, candidate's name, canary)`;
    /// a new candidate on a route is a new rollout, with a state of its own).
    pub async fn sync<'a>(&self, canaries: impl Iterator<Item = (&'a str, &'a str, &'a Canary)>) {
        for (route, candidate, canary) in canaries {
            let key = format!("{}route:{route}:canary:{candidate}", self.prefix);
            match self.offer(&key, canary.shared()).await {
                Ok(held) => {
                    if canary.adopt(held, Instant::now()) {
                        self.adopted.fetch_add(1, Relaxed);
                        tracing::info!(route, stage = ?held.stage, "canary state taken from the fleet");
                    }
                }
                Err(e) => {
                    self.errors.fetch_add(1, Relaxed);
                    tracing::debug!(route, error = %e, "routing state sync failed");
                }
            }
        }
    }

    /// One sync round over the deployments' breakers (`(deployment name, breaker)`): their
    /// rate-limit cooldowns and their open states.
    pub async fn sync_breakers<'a>(&self, deployments: &[(&'a str, &'a Breaker)]) {
        for hold in [Hold::Cooldown, Hold::Open] {
            self.sync_hold(hold, deployments).await;
        }
        self.sync_closed(deployments).await;
    }

    /// Closes the breakers whose opening another replica's probe closed.
    async fn sync_closed<'a>(&self, deployments: &[(&'a str, &'a Breaker)]) {
        let opened: Vec<_> = deployments
            .iter()
            .filter(|(_, b)| b.opening_end().is_some())
            .collect();
        if opened.is_empty() {
            return;
        }
        let keys: Vec<String> = opened
            .iter()
            .map(|(name, _)| self.key("closed", name))
            .collect();
        let mut mget: Vec<&[u8]> = vec![b"MGET"];
        mget.extend(keys.iter().map(|k| k.as_bytes()));
        let Ok(Value::Array(held)) = self.client.cmd(&mget).await else {
            self.errors.fetch_add(1, Relaxed);
            return;
        };
        for ((name, breaker), closed) in opened.into_iter().zip(held) {
            if let Some(end) = parse_ms(&closed) {
                if breaker.closed_elsewhere(instant_of(end + SAME_OPENING_MS)) {
                    self.adopted.fetch_add(1, Relaxed);
                    tracing::info!(model = name, "circuit breaker closed by the fleet's probe");
                }
            }
        }
    }

    fn key(&self, what: &str, deployment: &str) -> String {
        format!("{}{what}:{deployment}", self.prefix)
    }

    /// Checks a half-open breaker's probe `permit` against the fleet (other permits pass as
    /// they are). Ok with the fleet's probe when this replica holds it now; Ok without one
    /// when a probe elsewhere already closed this opening (the breaker closes here too) or
    /// Redis did not answer (the replica probes on its own); refused while another
    /// replica's probe is out.
    pub async fn claim_probe(
        &self,
        name: &str,
        breaker: &Breaker,
        permit: Permit,
    ) -> Result<(Permit, Option<FleetProbe>), Refusal> {
        let Some(end) = breaker.opening_end().filter(|_| permit.probe) else {
            return Ok((permit, None));
        };
        let end_ms = unix_ms_of(end);
        let (probe, closed) = (self.key("probe", name), self.key("closed", name));
        let (end_text, ttl) = (
            end_ms.to_string(),
            breaker.cooldown().as_millis().to_string(),
        );
        let reply = self
            .client
            .cmd(&[
                b"EVAL",
                CLAIM.as_bytes(),
                b"2",
                probe.as_bytes(),
                closed.as_bytes(),
                end_text.as_bytes(),
                self.token.as_bytes(),
                ttl.as_bytes(),
                SAME_OPENING_MS.to_string().as_bytes(),
            ])
            .await;
        match reply {
            Ok(Value::Int(-1)) => Ok((permit, Some(FleetProbe { end_ms }))),
            Ok(Value::Int(-2)) => {
                breaker.cancelled(permit);
                if breaker.closed_elsewhere(end) {
                    self.adopted.fetch_add(1, Relaxed);
                }
                Ok((Permit { probe: false }, None))
            }
            Ok(Value::Int(left)) => {
                let wait = Duration::from_millis(left.max(1) as u64).min(PROBE_RECHECK);
                breaker.probe_elsewhere(permit, Instant::now() + wait);
                Err(Refusal::Open)
            }
            other => {
                self.errors.fetch_add(1, Relaxed);
                tracing::debug!(model = name, reply = ?other, "fleet probe claim failed: probing alone");
                Ok((permit, None))
            }
        }
    }

    /// Tells the fleet what its probe, held here, proved (in the background: the request
    /// that probed does not wait).
    pub fn settle_probe(self: &Arc<Self>, name: &str, probe: FleetProbe, verdict: ProbeVerdict) {
        if verdict == ProbeVerdict::Failed {
            // The reopened breaker is shared by the next round; the claim runs out with the
            // new opening's cooldown still ahead, so no replica probes early.
            return;
        }
        let (shared, name) = (Arc::clone(self), name.to_string());
        tokio::spawn(async move { shared.settle(&name, probe, verdict).await });
    }

    async fn settle(&self, name: &str, probe: FleetProbe, verdict: ProbeVerdict) {
        let reply = if verdict == ProbeVerdict::Closed {
            let end = probe.end_ms.to_string();
            let kept = CLOSED_KEPT.as_millis().to_string();
            let closed = self.key("closed", name);
            self.client
                .cmd(&[
                    b"SET",
                    closed.as_bytes(),
                    end.as_bytes(),
                    b"PX",
                    kept.as_bytes(),
                ])
                .await
        } else {
            let key = self.key("probe", name);
            self.client
                .cmd(&[
                    b"EVAL",
                    RELEASE.as_bytes(),
                    b"1",
                    key.as_bytes(),
                    self.token.as_bytes(),
                ])
                .await
        };
        if reply.is_err() {
            self.errors.fetch_add(1, Relaxed);
        }
    }

    async fn sync_hold<'a>(&self, hold: Hold, deployments: &[(&'a str, &'a Breaker)]) {
        if deployments.is_empty() {
            return;
        }
        let keys: Vec<String> = deployments
            .iter()
            .map(|(name, _)| format!("{}{}:{name}", self.prefix, hold.key()))
            .collect();
        let mut mget: Vec<&[u8]> = vec![b"MGET"];
        mget.extend(keys.iter().map(|k| k.as_bytes()));
        let held = match self.client.cmd(&mget).await {
            Ok(Value::Array(values)) => values,
            other => {
                self.errors.fetch_add(1, Relaxed);
                tracing::debug!(reply = ?other, "breaker state sync failed");
                return;
            }
        };
        let (now, now_ms) = (Instant::now(), unix_ms());
        for ((key, (_, breaker)), remote) in keys.iter().zip(deployments).zip(held) {
            let remote = parse_ms(&remote).unwrap_or(0);
            let local = hold
                .local(breaker, now)
                .map_or(0, |u| now_ms + u.duration_since(now).as_millis() as u64);
            if remote > local && remote > now_ms {
                hold.adopt(breaker, now + Duration::from_millis(remote - now_ms), now);
                self.adopted.fetch_add(1, Relaxed);
            } else if local > remote {
                let value = local.to_string();
                let set: [&[u8]; 5] = [
                    b"SET",
                    key.as_bytes(),
                    value.as_bytes(),
                    b"PXAT",
                    value.as_bytes(),
                ];
                if self.client.cmd(&set).await.is_err() {
                    self.errors.fetch_add(1, Relaxed);
                }
            }
        }
    }

    async fn offer(&self, key: &str, state: SharedCanary) -> Result<SharedCanary, StoreError> {
        let offered = state.encode();
        let epoch = state.epoch.to_string();
        let rollback = if state.stage.is_none() { "1" } else { "0" };
        let reply = self
            .client
            .cmd(&[
                b"EVAL",
                OFFER.as_bytes(),
                b"1",
                key.as_bytes(),
                offered.as_bytes(),
                epoch.as_bytes(),
                rollback.as_bytes(),
            ])
            .await?;
        let text = match &reply {
            Value::Bulk(b) => std::str::from_utf8(b).ok(),
            _ => None,
        };
        text.and_then(SharedCanary::decode).ok_or_else(|| {
            StoreError::Protocol(format!("canary state: unexpected reply {reply:?}"))
        })
    }

    /// `sluice_routing_sync_errors_total` and `sluice_routing_adopted_total`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP sluice_routing_sync_errors_total Calls to share routing state on Redis that failed (each replica then keeps its own).\n# TYPE sluice_routing_sync_errors_total counter\nsluice_routing_sync_errors_total {}",
            self.errors.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sluice_routing_adopted_total Canary states, rate-limit cooldowns, open breakers and probes' closings taken from other replicas.\n# TYPE sluice_routing_adopted_total counter\nsluice_routing_adopted_total {}",
            self.adopted.load(Relaxed)
        );
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `at` in unix milliseconds.
fn unix_ms_of(at: Instant) -> u64 {
    let (now, now_ms) = (Instant::now(), unix_ms());
    match at.checked_duration_since(now) {
        Some(ahead) => now_ms + ahead.as_millis() as u64,
        None => now_ms.saturating_sub((now - at).as_millis() as u64),
    }
}

/// Unix milliseconds `ms` as an instant.
fn instant_of(ms: u64) -> Instant {
    let (now, now_ms) = (Instant::now(), unix_ms());
    if ms >= now_ms {
        now + Duration::from_millis(ms - now_ms)
    } else {
        now.checked_sub(Duration::from_millis(now_ms - ms))
            .unwrap_or(now)
    }
}

/// A key's value read as unix milliseconds.
fn parse_ms(value: &Value) -> Option<u64> {
    match value {
        Value::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// A deadline a deployment's breaker holds that the fleet shares.
#[derive(Debug, Clone, Copy)]
enum Hold {
    /// A 429's cooldown.
    Cooldown,
    /// An open breaker's cooldown.
    Open,
}

impl Hold {
    fn key(self) -> &'static str {
        match self {
            Self::Cooldown => "cooldown",
            Self::Open => "open",
        }
    }

    fn local(self, breaker: &Breaker, now: Instant) -> Option<Instant> {
        match self {
            Self::Cooldown => breaker.rate_limited_until(now),
            Self::Open => breaker.open_until(now),
        }
    }

    fn adopt(self, breaker: &Breaker, until: Instant, now: Instant) {
        match self {
            Self::Cooldown => breaker.cool_down(until),
            Self::Open => breaker.open_elsewhere(until, now),
        }
    }
}
