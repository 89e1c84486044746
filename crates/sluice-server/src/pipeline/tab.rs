//! A request's tab: opened before the request reaches the cache or a provider, closed when
//! its answer has been sent (for a stream: when the stream ends).
//!
//! Opening checks and charges, in one atomic limiter call, every limit that applies: the
//! key's requests and tokens per minute, its concurrent requests and its budget (the
//! request's estimated cost is reserved), and the requested model's or route's own limits
//! over every key. A refusal is a 429 with `Retry-After` (`insufficient_quota` for a
//! budget). Closing prices the actual usage, settles the limiter (the token estimate is
//! corrected, the reservation replaced by the actual cost, the concurrency slot freed) and
//! queues the spend record; neither waits for a store. A tab dropped without closing (a
//! path that forgot, a panic) still frees what it holds.

use crate::cache::CacheStatus;
use crate::keys::Identity;
use crate::state::{AppState, Resolved};
use sluice_core::config::{Price, TargetLimits};
use sluice_core::pricing::Billed;
use sluice_core::{Error, ErrorKind};
use sluice_store::{
    BudgetPeriod, Check, CheckKind, Denial, KeyRecord, LimitId, SpendRecord, Ticket,
};
use sluice_types::{MediaUnits, Usage};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Makes admission ids unique within the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// What the actual value of a check is, at settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    Requests,
    Tokens,
    Lease,
    Cost,
}

impl Measure {
    fn of(limit: &LimitId) -> Self {
        match limit {
            LimitId::KeyRpm(_) | LimitId::ModelRpm(_) => Self::Requests,
            LimitId::KeyTpm(_) | LimitId::ModelTpm(_) => Self::Tokens,
            LimitId::KeyConcurrency(_) | LimitId::ModelConcurrency(_) => Self::Lease,
            LimitId::KeyBudget { .. } => Self::Cost,
        }
    }

    fn is_tokens(self) -> bool {
        self == Self::Tokens
    }
}

/// What [`Tab::open`] needs to know of the request.
#[derive(Debug, Clone, Copy)]
pub struct Opening<'a> {
    /// `chat`, `embeddings` or `messages`.
    pub endpoint: &'static str,
    /// What the client asked for.
    pub model: &'a str,
    /// What that resolved to.
    pub resolved: Resolved<'a>,
    /// Prompt tokens, estimated from the request.
    pub prompt_tokens: u64,
    /// The request's `max_tokens`, if any.
    pub max_tokens: Option<u64>,
    /// A stream was asked for.
    pub stream: bool,
    /// `x-request-id`.
    pub request_id: &'a str,
    /// When the request arrived.
    pub started: Instant,
    /// What a media request is billed by that only the request tells.
    pub units: Option<&'a MediaUnits>,
    /// The batch whose line the request is.
    pub batch_id: Option<&'a str>,
}

/// How a request ended.
#[derive(Debug, Clone, Copy)]
pub struct End {
    /// The deployment that answered (or was tried last).
    pub deployment: Option<usize>,
    /// The status the client got (499: the client left; 502: a stream failed midway).
    pub status: u16,
    /// Tokens used upstream (zero for cache hits).
    pub usage: Usage,
    /// `usage` is sluice's estimate.
    pub usage_estimated: bool,
    /// Time to the first byte of a stream.
    pub ttft: Option<Duration>,
    /// What the cache did.
    pub cache: CacheStatus,
    /// Upstream attempts.
    pub attempts: u32,
}

/// An open tab. See the module docs.
#[derive(Debug)]
pub struct Tab {
    state: Arc<AppState>,
    key: Option<Arc<KeyRecord>>,
    ticket: Option<Ticket>,
    /// The limits that apply, as the limiter takes them (no copy per call)...
    checks: Vec<Check>,
    /// ...and which limit each one is, index for index.
    limits: Vec<LimitId>,
    endpoint: &'static str,
    request_id: Box<str>,
    route: Option<usize>,
    stream: bool,
    ts_ms: u64,
    started: Instant,
    /// A media request's units (characters, images asked for, their size and quality).
    units: Option<Box<MediaUnits>>,
    /// The batch whose line the request is.
    batch_id: Option<Box<str>>,
    /// What guardrails found (see [`Tab::set_guardrails`]).
    guardrails: Option<String>,
    /// What a streamed answer's webhooks flag, which the spend record waits for (see
    /// [`Tab::defer_guardrails`]).
    late: Option<super::guard_late::LateVerdict>,
}

fn price_of<'s>(state: &'s AppState, resolved: Resolved<'_>) -> Vec<&'s Price> {
    match resolved {
        Resolved::Model(d) => state.deployments[d].price.iter().collect(),
        Resolved::Route(r) => state.routes[r]
            .config
            .targets
            .iter()
            .filter_map(|&d| state.deployments[d].price.as_ref())
            .collect(),
        Resolved::Passthrough { .. } => Vec::new(),
    }
}

/// The key's own limits that apply, as checks (its budget counter seeded first).
async fn key_limits(
    state: &Arc<AppState>,
    k: &KeyRecord,
    o: &Opening<'_>,
    completion: u64,
    now_ms: u64,
) -> Vec<(LimitId, Check)> {
    let id = || k.id.clone();
    let est_tokens = o.prompt_tokens + completion;
    let mut limits = Vec::new();
    if let Some(limit) = k.rpm {
        let kind = CheckKind::Window { limit, cost: 1 };
        limits.push(checked(LimitId::KeyRpm(id()), kind));
    }
    if let Some(limit) = k.tpm {
        let kind = CheckKind::Window {
            limit,
            cost: est_tokens,
        };
        limits.push(checked(LimitId::KeyTpm(id()), kind));
    }
    if let Some(limit) = k.max_concurrent {
        let kind = CheckKind::Concurrency { limit };
        limits.push(checked(LimitId::KeyConcurrency(id()), kind));
    }
    if let Some(limit) = k.budget_nano_usd {
        // The dearest price the request may be served at; never less than a
        // nano-dollar, so a spent budget refuses even unpriced requests.
        // Media units known from the request (characters to speak, images asked for) are
        // reserved too; audio seconds are known only from the answer.
        let asked = o.units.map(|u| Billed {
            characters: u.characters,
            images: u.images,
            image_size: u.image_size,
            image_quality: u.image_quality.as_deref(),
            request: true,
            ..Billed::default()
        });
        let reserve = price_of(state, o.resolved)
            .iter()
            .map(|p| {
                p.cost_nano_usd(o.prompt_tokens, 0, 0, completion)
                    + asked.as_ref().map_or(0, |b| p.units_nano_usd(b))
            })
            .max()
            .unwrap_or(0)
            .max(1);
        let (window, window_ends) = k.budget_period.window(now_ms);
        let kind = CheckKind::Budget {
            limit,
            reserve,
            window_ends,
        };
        let budget = LimitId::KeyBudget {
            key: id(),
            window: window.clone(),
        };
        let (budget, check) = checked(budget, kind);
        seed(state, &k.id, &window, &check.name, window_ends).await;
        limits.push((budget, check));
    }
    limits
}

/// The requested model's or route's own limits, over every key, as checks.
fn target_limits(state: &AppState, o: &Opening<'_>, est_tokens: u64) -> Vec<(LimitId, Check)> {
    let target = match o.resolved {
        Resolved::Model(d) => state.deployments[d].limits,
        Resolved::Route(r) => state.routes[r].config.limits,
        Resolved::Passthrough { .. } => TargetLimits::default(),
    };
    let model = || o.model.to_string();
    let mut limits = Vec::new();
    if let Some(limit) = target.rpm {
        let kind = CheckKind::Window { limit, cost: 1 };
        limits.push(checked(LimitId::ModelRpm(model()), kind));
    }
    if let Some(limit) = target.tpm {
        let kind = CheckKind::Window {
            limit,
            cost: est_tokens,
        };
        limits.push(checked(LimitId::ModelTpm(model()), kind));
    }
    if let Some(limit) = target.max_concurrent {
        let kind = CheckKind::Concurrency { limit };
        limits.push(checked(LimitId::ModelConcurrency(model()), kind));
    }
    limits
}

/// A limit with its check.
fn checked(id: LimitId, kind: CheckKind) -> (LimitId, Check) {
    let check = id.check(kind);
    (id, check)
}

/// A denial's wait; never zero, so the client is never told to retry at once.
fn retry_after(ms: Option<u64>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(ms.max(1)))
}

// === impl Tab ===

impl Tab {
    /// Checks and charges the request's limits; `Err` is the refusal to send.
    pub async fn open(
        state: &Arc<AppState>,
        identity: &Identity,
        o: Opening<'_>,
    ) -> Result<Self, Error> {
        let key = identity.key().cloned();
        let now_ms = sluice_store::unix_now_ms();
        let completion = o
            .max_tokens
            .unwrap_or(state.limits_config.default_completion_tokens);
        let est_tokens = o.prompt_tokens + completion;
        let mut limits = Vec::new();
        if let Some(k) = &key {
            limits = key_limits(state, k, &o, completion, now_ms).await;
        }
        limits.extend(target_limits(state, &o, est_tokens));
        let route = match o.resolved {
            Resolved::Route(r) => Some(r),
            _ => None,
        };
        let (checks, limits) = limits.into_iter().map(|(id, c)| (c, id)).unzip();
        let mut tab = Self {
            state: Arc::clone(state),
            key,
            ticket: None,
            checks,
            limits,
            endpoint: o.endpoint,
            request_id: o.request_id.into(),
            route,
            stream: o.stream,
            ts_ms: now_ms,
            started: o.started,
            units: o.units.map(|u| Box::new(u.clone())),
            batch_id: o.batch_id.map(Into::into),
            guardrails: None,
            late: None,
        };
        if tab.checks.is_empty() {
            return Ok(tab);
        }
        let id = format!("{}#{}", o.request_id, NEXT_ID.fetch_add(1, Relaxed));
        let lease = state.limits_config.lease;
        match state.limiter.admit(&id, &tab.checks, now_ms, lease).await {
            Ok(Ok(ticket)) => {
                tab.ticket = Some(ticket);
                Ok(tab)
            }
            Ok(Err(denial)) => {
                if let (Some(c), Some(l)) =
                    (tab.checks.get(denial.index), tab.limits.get(denial.index))
                {
                    state
                        .tab_metrics
                        .refused(c.kind, Measure::of(l).is_tokens());
                }
                let e = tab.refusal(denial, o.model).await;
                tab.record_refusal(&e);
                Err(e)
            }
            Err(e) => {
                // The limiter falls back to in-process limits on its own; an error here
                // means it could not even do that. Serve rather than refuse.
                tracing::warn!(error = %e, "limiter failed: request admitted unchecked");
                Ok(tab)
            }
        }
    }

    /// How many limits (rates, concurrency, budgets) the request was checked against.
    pub fn limit_count(&self) -> usize {
        self.checks.len()
    }

    async fn refusal(&self, denial: Denial, model: &str) -> Error {
        let (Some(check), Some(limit)) =
            (self.checks.get(denial.index), self.limits.get(denial.index))
        else {
            return ErrorKind::RateLimited {
                message: "rate limit exceeded".into(),
                retry_after: retry_after(denial.retry_after_ms),
            }
            .into();
        };
        let whose = match &self.key {
            Some(k) if limit.key_id().is_some() => format!("the key `{}`", k.name),
            _ => format!("the model `{model}`"),
        };
        let after = retry_after(denial.retry_after_ms);
        match (check.kind, Measure::of(limit)) {
            (CheckKind::Budget { limit, reserve, .. }, _) => {
                let spent = self.state.limiter.spent(&check.name).await.unwrap_or(0);
                let period = self.key.as_ref().map_or(BudgetPeriod::Total, |k| k.budget_period);
                let per = match period {
                    BudgetPeriod::Day => " daily",
                    BudgetPeriod::Month => " monthly",
                    BudgetPeriod::Total => "",
                };
                ErrorKind::BudgetExceeded {
                    message: format!(
                        "{whose} has spent ${} of its ${}{per} budget; this request may cost up to ${}",
                        usd(spent),
                        usd(limit),
                        usd(reserve)
                    ),
                    retry_after: after,
                }
                .into()
            }
            (CheckKind::Window { limit, cost }, Measure::Tokens) if cost > limit => {
                ErrorKind::RateLimited {
                    message: format!(
                        "{whose} allows {limit} tokens per minute; this request may use {cost} (prompt plus `max_tokens`)"
                    ),
                    retry_after: after,
                }
                .into()
            }
            (CheckKind::Window { limit, .. }, m) => ErrorKind::RateLimited {
                message: format!(
                    "{whose} is over its limit of {limit} {} per minute",
                    if m == Measure::Tokens { "tokens" } else { "requests" }
                ),
                retry_after: after,
            }
            .into(),
            (CheckKind::Concurrency { limit }, _) => ErrorKind::RateLimited {
                message: format!("{whose} already has {limit} requests in flight (its `max_concurrent`)"),
                retry_after: after,
            }
            .into(),
        }
    }

    fn base_record(&self) -> SpendRecord {
        SpendRecord {
            ts_ms: self.ts_ms,
            request_id: self.request_id.to_string(),
            key_id: self.key.as_ref().map(|k| k.id.clone()),
            key_name: self.key.as_ref().map(|k| k.name.clone()),
            endpoint: self.endpoint.to_string(),
            route: self.route.map(|r| self.state.routes[r].config.name.clone()),
            stream: self.stream,
            latency_ms: self.started.elapsed().as_millis() as u64,
            cache: "bypass".into(),
            batch_id: self.batch_id.as_deref().map(str::to_string),
            guardrails: self.guardrails.clone(),
            ..SpendRecord::default()
        }
    }

    fn record_refusal(&self, e: &Error) {
        if let (Some(ledger), true) = (&self.state.ledger, self.state.spend_enabled) {
            let mut r = self.base_record();
            r.status = e.status_code();
            ledger.record(r);
        }
    }

    /// Notes what guardrails found, for the spend record.
    pub fn set_guardrails(&mut self, summary: String) {
        self.guardrails = Some(summary);
    }

    /// The spend record waits for `verdict` before it is queued, and adds what it says to
    /// its guardrails (the answer has gone already: nothing else waits).
    pub fn defer_guardrails(&mut self, verdict: super::guard_late::LateVerdict) {
        self.late = Some(verdict);
    }

    /// The spend record waits for no verdict after all (see [`Finish::no_verdict`]).
    ///
    /// [`Finish::no_verdict`]: super::finish::Finish::no_verdict
    pub fn no_verdict(&mut self) {
        self.late = None;
    }

    /// Queues `r`, once the verdict it waits for (if any) is in: the sender dropped
    /// unsent (the stream did not end cleanly, or its answer was whole) says nothing.
    fn queue(&mut self, ledger: &sluice_store::Ledger, mut r: SpendRecord) {
        let Some(late) = self.late.take() else {
            return ledger.record(r);
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return ledger.record(r);
        }
        let ledger = ledger.clone();
        let linger = self.state.lingering.hold();
        tokio::spawn(async move {
            if let Ok(Some(flagged)) = late.await {
                r.guardrails = Some(match r.guardrails.take() {
                    Some(found) => format!("{found},{flagged}"),
                    None => flagged,
                });
            }
            ledger.record(r);
            drop(linger);
        });
    }

    /// Closes the tab: prices the usage, settles the limits, queues the spend record.
    /// Returns the cost in nano-USD.
    pub fn close(mut self, end: End) -> u64 {
        let state = Arc::clone(&self.state);
        let dep = end.deployment.and_then(|d| state.deployments.get(d));
        let cost = dep
            .and_then(|d| d.price.as_ref())
            .map_or(0, |p| self.cost(p, &end));
        self.settle(end.usage.total(), cost);
        if cost > 0 {
            state.tab_metrics.add_spent(cost);
        }
        if let (Some(ledger), true) = (&state.ledger, state.spend_enabled) {
            let u = &end.usage;
            let mut r = self.base_record();
            r.model = dep.map(|d| d.name.to_string());
            r.provider = dep.map(|d| state.providers[d.provider].name().to_string());
            r.status = end.status;
            r.prompt_tokens = u.prompt_tokens;
            r.completion_tokens = u.completion_tokens;
            r.cached_tokens = u.cached_prompt_tokens;
            r.cache_write_tokens = u.cache_write_tokens;
            r.reasoning_tokens = u.reasoning_tokens;
            r.cost_nano_usd = cost;
            r.ttft_ms = end.ttft.map(|t| t.as_millis() as u64);
            r.cache = end.cache.as_str().to_string();
            r.attempts = end.attempts;
            r.usage_estimated = end.usage_estimated;
            self.queue(ledger, r);
        }
        cost
    }

    /// What the request cost at `price`: its tokens, and for media its characters, audio,
    /// images and the per-request price (answered requests only).
    fn cost(&self, price: &Price, end: &End) -> u64 {
        let u = &end.usage;
        let tokens = crate::money::cost_nano_usd(price, u);
        let answered = (200..300).contains(&end.status)
            && matches!(end.cache, CacheStatus::Bypass | CacheStatus::Miss);
        if !answered {
            return tokens;
        }
        let asked = self.units.as_deref();
        let billed = Billed {
            characters: u.characters.max(asked.map_or(0, |a| a.characters)),
            audio_ms: u.audio_ms,
            images: if u.images > 0 {
                u.images
            } else {
                asked.map_or(0, |a| a.images)
            },
            image_size: asked.and_then(|a| a.image_size),
            image_quality: asked.and_then(|a| a.image_quality.as_deref()),
            request: true,
        };
        tokens.saturating_add(price.units_nano_usd(&billed))
    }

    /// Hands the limiter the actual tokens and cost (once).
    fn settle(&mut self, tokens: u64, cost: u64) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        // A request-count window took exactly what it charged: nothing to settle there.
        let (checks, actual): (Vec<Check>, Vec<u64>) = self
            .checks
            .iter()
            .zip(&self.limits)
            .map(|(c, l)| (c, Measure::of(l)))
            .filter(|(_, m)| *m != Measure::Requests)
            .map(|(c, m)| {
                let actual = match m {
                    Measure::Tokens => tokens,
                    Measure::Cost => cost,
                    Measure::Lease | Measure::Requests => 0,
                };
                (c.clone(), actual)
            })
            .unzip();
        if checks.is_empty() {
            return;
        }
        // Off the request path: on Redis, queued and sent with this thread's next call.
        let now = sluice_store::unix_now_ms();
        self.state
            .limiter
            .settle_later(&ticket, &checks, &actual, now);
    }
}

impl Drop for Tab {
    fn drop(&mut self) {
        // Not closed: free the slot and the reservation, charge the estimate's tokens.
        let tokens = self
            .checks
            .iter()
            .zip(&self.limits)
            .find_map(|(c, l)| match (c.kind, Measure::of(l)) {
                (CheckKind::Window { cost, .. }, Measure::Tokens) => Some(cost),
                _ => None,
            })
            .unwrap_or(0);
        self.settle(tokens, 0);
    }
}

/// The budget check of key `k` now, reserving `reserve`: its id, its window and when
/// that ends, and the check under `limit`.
fn budget_check(k: &KeyRecord, reserve: u64, limit: u64) -> (String, Option<u64>, Check) {
    let (window, window_ends) = k.budget_period.window(sluice_store::unix_now_ms());
    let id = LimitId::KeyBudget {
        key: k.id.clone(),
        window: window.clone(),
    };
    let check = id.check(CheckKind::Budget {
        limit,
        reserve,
        window_ends,
    });
    (window, window_ends, check)
}

/// Whether key `k`'s budget is spent now (a batch is then not forwarded: run by sluice,
/// each of its lines is refused as any request would be).
pub async fn budget_spent(state: &Arc<AppState>, k: &KeyRecord) -> bool {
    let Some(limit) = k.budget_nano_usd else {
        return false;
    };
    let (window, ends, check) = budget_check(k, 0, limit);
    seed(state, &k.id, &window, &check.name, ends).await;
    state
        .limiter
        .spent(&check.name)
        .await
        .is_ok_and(|spent| spent >= limit)
}

/// Charges a batch line that a provider's own Batch API answered: its cost counted in the
/// spend metrics and the key's budget, its spend record queued as it is. Nothing is
/// admitted or refused: the work was done upstream.
pub async fn charge_upstream_line(
    state: &Arc<AppState>,
    key: Option<&KeyRecord>,
    record: SpendRecord,
) {
    let cost = record.cost_nano_usd;
    if cost > 0 {
        state.tab_metrics.add_spent(cost);
        if let Some(k) = key.filter(|k| k.budget_nano_usd.is_some()) {
            add_to_budget(state, k, cost, &record.request_id).await;
        }
    }
    if let (Some(ledger), true) = (&state.ledger, state.spend_enabled) {
        ledger.record(record);
    }
}

/// Adds `cost` to key `k`'s budget counter: an admission that reserves nothing under no
/// limit, settled at `cost`.
async fn add_to_budget(state: &Arc<AppState>, k: &KeyRecord, cost: u64, request_id: &str) {
    let (window, ends, check) = budget_check(k, 0, i64::MAX as u64);
    seed(state, &k.id, &window, &check.name, ends).await;
    let now = sluice_store::unix_now_ms();
    let id = format!("{request_id}#{}", NEXT_ID.fetch_add(1, Relaxed));
    let checks = [check];
    let lease = state.limits_config.lease;
    let settled = match state.limiter.admit(&id, &checks, now, lease).await {
        Ok(Ok(ticket)) => state.limiter.settle(&ticket, &checks, &[cost], now).await,
        Ok(Err(_)) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = settled {
        tracing::warn!(error = %e, "cannot count a batch line's cost in its key's budget");
    }
}

/// How often a budget counter on Redis is seeded again (a no-op while Redis holds it; after
/// a Redis restart that lost it, the spend log's figure comes back).
const RESEED_INTERVAL: Duration = Duration::from_secs(60);

/// Seeds a budget counter from the durable spend log: before the window's first request in
/// this process (waited for), and on Redis again every minute (in the background).
async fn seed(state: &Arc<AppState>, key_id: &str, window: &str, name: &str, ends: Option<u64>) {
    match state.seeded_at(name) {
        None => seed_now(state, key_id, window, name, ends).await,
        Some(at)
            if matches!(state.limiter, sluice_store::Limiter::Redis(_))
                && at.elapsed() >= RESEED_INTERVAL =>
        {
            state.mark_seeded(name);
            let (state, key_id, window, name) = (
                Arc::clone(state),
                key_id.to_string(),
                window.to_string(),
                name.to_string(),
            );
            tokio::spawn(async move { seed_now(&state, &key_id, &window, &name, ends).await });
        }
        Some(_) => {}
    }
}

async fn seed_now(state: &AppState, key_id: &str, window: &str, name: &str, ends: Option<u64>) {
    let Some(ledger) = &state.ledger else {
        state.mark_seeded(name);
        return;
    };
    match ledger.window_spend(key_id, window).await {
        Ok(spent) => match state.limiter.seed(name, spent, ends).await {
            Ok(()) => state.mark_seeded(name),
            Err(e) => tracing::warn!(error = %e, "cannot seed the budget counter"),
        },
        Err(e) => tracing::warn!(error = %e, "cannot read the key's spend"),
    }
}

pub use crate::money::usd;
