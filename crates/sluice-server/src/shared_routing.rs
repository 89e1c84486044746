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
//! end, then goes half-open here as there (each replica sends its own probe).
//!
//! Once a second (and at start) each replica offers its canaries' [`SharedCanary`] to Redis
//! with one script call per canary: Redis keeps the newer state (a higher epoch; at an equal
//! epoch, a rollback) and answers with what it holds, which the replica adopts. Redis
//! unreachable: each replica keeps its own state, and `sluice_routing_sync_errors_total`
//! counts the failed calls.

use sluice_core::breaker::Breaker;
use sluice_core::canary::{Canary, SharedCanary};
use sluice_store::redis::Value;
use sluice_store::{RedisClient, StoreError};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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

/// The shared routing state of one gateway.
#[derive(Debug)]
pub struct SharedRouting {
    client: RedisClient,
    prefix: String,
    /// Script calls that failed.
    pub errors: AtomicU64,
    /// Canary states and cooldowns taken from other replicas.
    pub adopted: AtomicU64,
}

impl SharedRouting {
    /// Shares through the Redis at `url`, under `prefix`; connects lazily.
    pub fn new(url: &str, prefix: &str, op_timeout: Duration) -> Result<Self, StoreError> {
        Ok(Self {
            client: RedisClient::new(url, op_timeout)?,
            prefix: prefix.to_string(),
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
            let remote = match remote {
                Value::Bulk(b) => std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()),
                _ => None,
            }
            .unwrap_or(0u64);
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
            "# HELP sluice_routing_adopted_total Canary states and rate-limit cooldowns taken from other replicas.\n# TYPE sluice_routing_adopted_total counter\nsluice_routing_adopted_total {}",
            self.adopted.load(Relaxed)
        );
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
