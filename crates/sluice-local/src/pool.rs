//! [`Pool`]: loaded models under a memory budget.
//!
//! # Rules
//!
//! * **Cost.** Before a load the pool reserves the [`Loader::estimate`] (for GGUF: file size
//!   plus KV cache, see [`crate::estimate_memory`]); once loaded it replaces the reservation with
//!   the size the loader measured. When a model was measured before and its file is unchanged
//!   (same length and modification time), the measured size is reserved instead of the estimate.
//! * **Lazy, single-flight loads.** A model loads on its first [`Pool::acquire`]. Concurrent
//!   acquires of a model that is loading wait for that one load (they are counted as in flight
//!   from the moment they ask, so the model cannot be evicted between the load and their use).
//!   The load runs on tokio's blocking pool and completes even if every caller gives up.
//! * **Eviction.** When a reservation would exceed the budget, idle, unpinned, loaded models are
//!   unloaded least recently used first; among equally old ones the larger goes first; victims
//!   that the later ones make unnecessary are kept (see [`plan_eviction`]). A model in use
//!   (leased or loading) is never evicted: if only such models could make room the acquire
//!   waits, first come first served, up to [`PoolConfig::busy_wait`] for a lease to end (while
//!   any acquire waits, only the first in line may start a load), then fails with
//!   [`PoolErrorKind::BudgetBusy`] (503 + `Retry-After`); a model larger than the budget
//!   (minus pinned models) fails with [`PoolErrorKind::TooLarge`] (503) and nothing is evicted.
//!   When the measured size exceeds the reservation the pool plans again for the difference, and
//!   unloads the new model with the same errors if it cannot make room: the budget is never
//!   knowingly exceeded.
//! * **Keep-alive.** An idle model unloads `keep_alive` after its last use ([`Pool::sweep`],
//!   driven by [`Pool::run_sweeper`]). The value comes from the request that finished last
//!   (the `keep_alive` given to [`Pool::acquire`]), else the model's [`ModelSpec::keep_alive`],
//!   else the pool's [`PoolConfig::keep_alive`] (5 minutes). [`KeepAlive::Forever`] (a negative
//!   value in Ollama's API) never expires; zero unloads as soon as the last lease is dropped.
//! * **Pins.** A pinned model ([`ModelSpec::pin`], [`Pool::set_pinned`]) is neither swept nor
//!   evicted. Pinning does not load; [`Pool::preload`] / [`Pool::preload_configured`] do.
//! * **Checksums.** When [`ModelSpec::sha256`] is set the file is hashed (streamed) before its
//!   first load and refused with [`PoolErrorKind::ChecksumMismatch`] if it differs; a verified
//!   file is not hashed again until its length or modification time changes.
//!
//! Unlike Ollama's scheduler there is no cap on the number of loaded models (only bytes count),
//! eviction follows last use rather than keep-alive expiry order, and a wrong estimate is
//! corrected by the measurement instead of leading to an out-of-memory kill.
//!
//! The rules are generic over the [`Loader`] and the [`Clock`], so they are tested on virtual
//! time with a fake loader; [`GgufLoader`] is the real one for [`ChatModel`]s.

use std::collections::HashMap;
use std::io::Read;
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};

use crate::error::panic_error;
use crate::{BatchOptions, ChatModel, Embedder, LoadOptions};

/// The default [`KeepAlive`]: 5 minutes, as Ollama's.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5 * 60);

/// Share of the machine's memory [`default_memory_budget`] gives the pool, in percent.
pub const DEFAULT_BUDGET_PERCENT: u64 = 50;

/// [`default_memory_budget`] when the machine's memory cannot be read: 8 GiB.
pub const FALLBACK_MEMORY_BUDGET: u64 = 8 << 30;

/// How long [`PoolError::retry_after`] suggests waiting when the budget is busy.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Bytes read per step while hashing a model file.
const HASH_CHUNK: usize = 1 << 20;

/// Upper bound of one [`Pool::run_sweeper`] sleep.
const SWEEP_MAX_SLEEP: Duration = Duration::from_secs(60);

// === KeepAlive ===

/// How long an idle model stays loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeepAlive {
    /// Never unload for idleness (Ollama: any negative value).
    Forever,
    /// Unload this long after the last use; zero unloads as soon as the model is idle.
    For(Duration),
}

impl Default for KeepAlive {
    fn default() -> Self {
        Self::For(DEFAULT_KEEP_ALIVE)
    }
}

// === impl KeepAlive ===

impl KeepAlive {
    /// Unload as soon as the last lease is dropped.
    pub const UNLOAD_NOW: Self = Self::For(Duration::ZERO);

    /// Ollama's numeric form: seconds, negative (or infinite) is [`KeepAlive::Forever`];
    /// `NaN` is the default.
    pub fn from_secs_f64(seconds: f64) -> Self {
        if seconds.is_nan() {
            Self::default()
        } else if seconds < 0.0 || !seconds.is_finite() {
            Self::Forever
        } else {
            Duration::try_from_secs_f64(seconds).map_or(Self::Forever, Self::For)
        }
    }

    /// Parses Ollama's string form: a number of seconds (`"300"`, `"-1"`) or a Go duration
    /// (`"5m"`, `"1h30m"`, `"500ms"`, `"-1m"`); a negative value is [`KeepAlive::Forever`].
    pub fn parse(text: &str) -> Result<Self, PoolError> {
        let invalid = || PoolError::from(PoolErrorKind::InvalidKeepAlive(text.to_owned()));
        let trimmed = text.trim();
        if let Ok(seconds) = trimmed.parse::<f64>() {
            return Ok(Self::from_secs_f64(seconds));
        }
        let (negative, mut rest) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
        };
        if rest.is_empty() {
            return Err(invalid());
        }
        let mut total = 0.0f64;
        while !rest.is_empty() {
            let number_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(invalid)?;
            let number: f64 = rest[..number_end].parse().map_err(|_| invalid())?;
            rest = &rest[number_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_end] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(invalid()),
            };
            total += number * scale;
            rest = &rest[unit_end..];
        }
        if negative && total > 0.0 {
            return Ok(Self::Forever);
        }
        Ok(Self::from_secs_f64(total))
    }

    /// When a model idle since `idle_since` expires; `None`: never.
    pub fn expires_at(self, idle_since: Instant) -> Option<Instant> {
        match self {
            Self::Forever => None,
            Self::For(duration) => idle_since.checked_add(duration),
        }
    }

    /// Whether the model unloads as soon as it is idle.
    pub fn is_zero(self) -> bool {
        self == Self::UNLOAD_NOW
    }
}

// === Clock ===

/// The pool's source of time, so keep-alive and LRU can be tested on virtual time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to; clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Instant>>);

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

// === impl ManualClock ===

impl ManualClock {
    /// A clock starting at the real current instant.
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Instant::now())))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === Specs and config ===

/// A model the pool may load.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The name requests use.
    pub name: String,
    /// The model file.
    pub path: PathBuf,
    /// Expected SHA-256 of the file (of `model.safetensors` for an embedding model), hex (a
    /// `sha256:` or `sha256-` prefix is accepted).
    pub sha256: Option<String>,
    /// Idle time before unloading; `None`: the pool's default. A request can override it.
    pub keep_alive: Option<KeepAlive>,
    /// Never unload for idleness or eviction.
    pub pin: bool,
    /// Load at start ([`Pool::preload_configured`]).
    pub preload: bool,
    /// How [`GgufLoader`] loads it (sequence slots, queue, context length).
    pub load: LoadOptions,
    /// What it is: a GGUF chat model or an embedding model directory.
    pub kind: ModelKind,
    /// How an embedding model batches requests.
    pub batch: BatchOptions,
}

/// What a local model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A GGUF chat model ([`ChatModel`]).
    Chat,
    /// A sentence-embedding model directory ([`crate::EmbedModel`]).
    Embedding,
}

impl ModelKind {
    /// `chat` or `embedding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embedding => "embedding",
        }
    }
}

// === impl ModelSpec ===

impl ModelSpec {
    /// A spec with defaults: no checksum, the pool's keep-alive, not pinned or preloaded.
    /// The kind follows the path: a directory is an embedding model, a file a GGUF chat model.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let kind = if path.is_dir() {
            ModelKind::Embedding
        } else {
            ModelKind::Chat
        };
        Self {
            name: name.into(),
            path,
            kind,
            batch: BatchOptions::default(),
            sha256: None,
            keep_alive: None,
            pin: false,
            preload: false,
            load: LoadOptions::default(),
        }
    }
}

/// Pool-wide settings (`[local]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Bytes all loaded and loading models may hold together.
    pub memory_budget: u64,
    /// Keep-alive of models whose spec and request give none.
    pub keep_alive: KeepAlive,
    /// How long an acquire waits for models in use to free memory before it fails with
    /// [`PoolErrorKind::BudgetBusy`]; zero fails at once.
    pub busy_wait: Duration,
}

/// [`PoolConfig::busy_wait`]'s default.
pub const DEFAULT_BUSY_WAIT: Duration = Duration::from_secs(30);

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            memory_budget: default_memory_budget(),
            keep_alive: KeepAlive::default(),
            busy_wait: DEFAULT_BUSY_WAIT,
        }
    }
}

/// [`DEFAULT_BUDGET_PERCENT`] of the machine's memory: `MemTotal` from `/proc/meminfo`, lowered
/// to the cgroup's memory limit when one is set (containers); [`FALLBACK_MEMORY_BUDGET`] when
/// neither can be read (including off Linux).
pub fn default_memory_budget() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo_total(&text));
    let limit = cgroup_memory_limit();
    let memory = match (total, limit) {
        (Some(total), Some(limit)) => Some(total.min(limit)),
        (total, limit) => total.or(limit),
    };
    memory.map_or(FALLBACK_MEMORY_BUDGET, |bytes| {
        bytes / 100 * DEFAULT_BUDGET_PERCENT
    })
}

/// `MemTotal` in bytes from the text of `/proc/meminfo`.
pub fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    let scale = match words.next() {
        Some("kB") | Some("KB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(scale)
}

fn cgroup_memory_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    .filter_map(|text| text.trim().parse::<u64>().ok())
    // cgroup v1 reports "no limit" as a huge page-rounded number.
    .find(|&bytes| bytes < (1 << 62))
}

// === Loader ===

/// A loaded model and the bytes it was measured to hold.
#[derive(Debug)]
pub struct Loaded<M> {
    /// The model.
    pub model: M,
    /// Bytes it holds, as measured after loading.
    pub bytes: u64,
}

/// Loads models for a [`Pool`]. Both methods block (file reads): the pool calls them on
/// tokio's blocking pool.
pub trait Loader: Send + Sync + 'static {
    /// What a lease derefs to.
    type Model: Send + Sync + 'static;

    /// Bytes the model is predicted to hold once loaded.
    fn estimate(&self, spec: &ModelSpec) -> crate::Result<u64>;

    /// Loads the model and measures it.
    fn load(&self, spec: &ModelSpec) -> crate::Result<Loaded<Self::Model>>;

    /// What runs a loaded model (`"native"`, `"candle"`), for health and `sluice models`.
    fn engine(&self, _model: &Self::Model) -> Option<&'static str> {
        None
    }
}

/// The [`Loader`] for GGUF chat models: [`crate::estimate_memory`] before, [`ChatModel::load`]
/// and [`ChatModel::memory`] after, with [`ModelSpec::load`]'s options.
#[derive(Debug, Clone, Copy, Default)]
pub struct GgufLoader;

impl Loader for GgufLoader {
    type Model = ChatModel;

    fn estimate(&self, spec: &ModelSpec) -> crate::Result<u64> {
        crate::estimate_memory_with(&spec.path, &spec.load).map(|usage| usage.total())
    }

    fn load(&self, spec: &ModelSpec) -> crate::Result<Loaded<ChatModel>> {
        let model = ChatModel::load(&spec.path, &spec.load)?;
        let bytes = model.memory().total();
        Ok(Loaded { model, bytes })
    }

    fn engine(&self, model: &ChatModel) -> Option<&'static str> {
        Some(model.engine())
    }
}

/// A loaded model of either kind.
#[derive(Debug)]
pub enum LocalModel {
    /// A chat model.
    Chat(ChatModel),
    /// An embedding model behind its batching thread.
    Embedding(Embedder),
}

impl LocalModel {
    /// The chat model, if it is one.
    pub fn as_chat(&self) -> Option<&ChatModel> {
        match self {
            Self::Chat(m) => Some(m),
            Self::Embedding(_) => None,
        }
    }

    /// The embedder, if it is one.
    pub fn as_embedder(&self) -> Option<&Embedder> {
        match self {
            Self::Embedding(e) => Some(e),
            Self::Chat(_) => None,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> ModelKind {
        match self {
            Self::Chat(_) => ModelKind::Chat,
            Self::Embedding(_) => ModelKind::Embedding,
        }
    }
}

/// The [`Loader`] for both kinds ([`ModelSpec::kind`]): GGUF chat models as [`GgufLoader`]
/// loads them, embedding directories as [`crate::EmbedModel`]s behind an [`Embedder`] with
/// [`ModelSpec::batch`]'s options. An embedding model's estimate is its weights as `f32` plus
/// one batch's scratch, before loading and after.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalLoader;

impl Loader for LocalLoader {
    type Model = LocalModel;

    fn estimate(&self, spec: &ModelSpec) -> crate::Result<u64> {
        match spec.kind {
            ModelKind::Chat => GgufLoader.estimate(spec),
            ModelKind::Embedding => {
                crate::estimate_embedding_memory(&spec.path, spec.batch.max_batch)
            }
        }
    }

    fn load(&self, spec: &ModelSpec) -> crate::Result<Loaded<LocalModel>> {
        match spec.kind {
            ModelKind::Chat => GgufLoader.load(spec).map(|l| Loaded {
                model: LocalModel::Chat(l.model),
                bytes: l.bytes,
            }),
            ModelKind::Embedding => {
                let model = crate::EmbedModel::load(&spec.path)?;
                let bytes = model.memory_with_batch(spec.batch.max_batch);
                let embedder = Embedder::new(model, spec.batch)?;
                Ok(Loaded {
                    model: LocalModel::Embedding(embedder),
                    bytes,
                })
            }
        }
    }

    /// Chat models: their engine's; embedding models always run on sluice's own encoder.
    fn engine(&self, model: &LocalModel) -> Option<&'static str> {
        match model {
            LocalModel::Chat(chat) => Some(chat.engine()),
            LocalModel::Embedding(_) => Some("native"),
        }
    }
}

// === Errors ===

/// An error from the pool; cheap to clone (every waiter of a failed load gets it).
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct PoolError(Arc<PoolErrorKind>);

/// What went wrong; see [`PoolError::kind`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolErrorKind {
    /// No model of that name is configured.
    #[error("no local model named `{0}`")]
    NotFound(String),
    /// The model cannot fit even with every other unpinned model unloaded.
    #[error(
        "local model `{name}` needs {need} bytes but the memory budget is {budget} bytes \
         ({pinned} of them held by pinned models)"
    )]
    TooLarge {
        /// The model.
        name: String,
        /// Bytes it needs.
        need: u64,
        /// The pool's budget.
        budget: u64,
        /// Bytes of the budget held by pinned models.
        pinned: u64,
    },
    /// The model would fit, but the models that would have to make room are in use.
    #[error(
        "local model `{name}` needs {need} bytes but only {available} bytes of the memory \
         budget can be freed while the other models are in use; retry later"
    )]
    BudgetBusy {
        /// The model.
        name: String,
        /// Bytes it needs.
        need: u64,
        /// Bytes free plus bytes held by idle, unpinned models.
        available: u64,
    },
    /// The file's SHA-256 differs from the spec's.
    #[error(
        "`{path}` does not match its checksum: expected sha256 `{expected}`, found `{actual}`"
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The spec's digest (lowercase hex).
        expected: String,
        /// The file's digest (lowercase hex).
        actual: String,
    },
    /// The file could not be read to verify its checksum.
    #[error("cannot read `{path}` to verify its checksum: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The spec is unusable (e.g. a malformed `sha256`).
    #[error("invalid local model `{name}`: {reason}")]
    InvalidSpec {
        /// The model.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The loader failed (estimate or load).
    #[error("loading local model `{name}` failed: {source}")]
    LoadFailed {
        /// The model.
        name: String,
        /// The loader's error.
        source: crate::Error,
    },
    /// A `keep_alive` value that is neither seconds nor a duration.
    #[error("invalid keep_alive `{0}` (expected seconds or a duration like `5m`)")]
    InvalidKeepAlive(String),
}

// === impl PoolError ===

impl PoolError {
    /// The kind of error.
    pub fn kind(&self) -> &PoolErrorKind {
        &self.0
    }

    /// The HTTP status the server answers with.
    pub fn status_code(&self) -> u16 {
        match self.kind() {
            PoolErrorKind::NotFound(_) => 404,
            PoolErrorKind::InvalidKeepAlive(_) => 400,
            PoolErrorKind::TooLarge { .. } | PoolErrorKind::BudgetBusy { .. } => 503,
            PoolErrorKind::ChecksumMismatch { .. }
            | PoolErrorKind::Io { .. }
            | PoolErrorKind::InvalidSpec { .. }
            | PoolErrorKind::LoadFailed { .. } => 500,
        }
    }

    /// `Retry-After` for errors that go away by themselves ([`PoolErrorKind::BudgetBusy`]).
    pub fn retry_after(&self) -> Option<Duration> {
        matches!(self.kind(), PoolErrorKind::BudgetBusy { .. }).then_some(BUSY_RETRY_AFTER)
    }

    fn load_failed(name: &str, source: crate::Error) -> Self {
        PoolErrorKind::LoadFailed {
            name: name.to_owned(),
            source,
        }
        .into()
    }

    fn from_plan(name: &str, error: PlanError) -> Self {
        match error {
            PlanError::TooLarge {
                need,
                budget,
                pinned,
            } => PoolErrorKind::TooLarge {
                name: name.to_owned(),
                need,
                budget,
                pinned,
            },
            PlanError::Busy { need, available } => PoolErrorKind::BudgetBusy {
                name: name.to_owned(),
                need,
                available,
            },
        }
        .into()
    }
}

impl From<PoolErrorKind> for PoolError {
    fn from(kind: PoolErrorKind) -> Self {
        Self(Arc::new(kind))
    }
}

// === Eviction planning ===

/// A model holding part of the budget, as [`plan_eviction`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resident {
    /// Bytes it holds (or has reserved while loading).
    pub bytes: u64,
    /// Its last use.
    pub last_used: Instant,
    /// Leased or loading: never evicted.
    pub in_use: bool,
    /// Pinned: never evicted.
    pub pinned: bool,
}

/// Why [`plan_eviction`] found no way to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanError {
    /// `need` exceeds the budget left beside the pinned models.
    TooLarge {
        /// Bytes needed.
        need: u64,
        /// The whole budget.
        budget: u64,
        /// Bytes held by pinned models.
        pinned: u64,
    },
    /// Only models in use could make room.
    Busy {
        /// Bytes needed.
        need: u64,
        /// Bytes free plus bytes of evictable models.
        available: u64,
    },
}

/// Which residents to unload so that `need` more bytes fit in `budget`; indexes into
/// `residents`, in eviction order (empty: it fits already).
///
/// Only idle, unpinned residents are candidates. They are taken least recently used first,
/// the larger first among equally old ones, until enough is free; then victims made
/// unnecessary by later (larger) ones are dropped from the plan, most recently used first, so
/// the set is minimal. Fails with [`PlanError::TooLarge`] when `need` exceeds the budget left
/// beside pinned models (nothing else can help) and [`PlanError::Busy`] when evicting every
/// candidate would not be enough.
pub fn plan_eviction(
    residents: &[Resident],
    need: u64,
    budget: u64,
) -> Result<Vec<usize>, PlanError> {
    let pinned: u64 = residents.iter().filter(|r| r.pinned).map(|r| r.bytes).sum();
    if need > budget.saturating_sub(pinned) {
        return Err(PlanError::TooLarge {
            need,
            budget,
            pinned,
        });
    }
    let used: u64 = residents.iter().map(|r| r.bytes).sum();
    let mut excess = (used + need).saturating_sub(budget);
    if excess == 0 {
        return Ok(Vec::new());
    }
    let mut candidates: Vec<usize> = (0..residents.len())
        .filter(|&i| !residents[i].in_use && !residents[i].pinned)
        .collect();
    candidates.sort_by(|&a, &b| {
        let (a, b) = (&residents[a], &residents[b]);
        a.last_used.cmp(&b.last_used).then(b.bytes.cmp(&a.bytes))
    });
    let mut victims = Vec::new();
    let mut freed = 0u64;
    for index in candidates {
        if freed >= excess {
            break;
        }
        freed += residents[index].bytes;
        victims.push(index);
    }
    if freed < excess {
        let evictable: u64 = residents
            .iter()
            .filter(|r| !r.in_use && !r.pinned)
            .map(|r| r.bytes)
            .sum();
        return Err(PlanError::Busy {
            need,
            available: budget.saturating_sub(used - evictable),
        });
    }
    // The last victim is always needed; earlier ones may not be once it is in.
    excess = freed - excess;
    let mut position = victims.len().saturating_sub(1);
    while position > 0 {
        position -= 1;
        let bytes = residents[victims[position]].bytes;
        if bytes <= excess {
            excess -= bytes;
            victims.remove(position);
        }
    }
    Ok(victims)
}

// === Snapshot ===

/// Whether a model is in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    /// Not loaded.
    Unloaded,
    /// Being loaded (its estimate is reserved).
    Loading,
    /// Loaded.
    Loaded,
}

// === impl ModelState ===

impl ModelState {
    /// Lowercase name for health output and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unloaded => "unloaded",
            Self::Loading => "loading",
            Self::Loaded => "loaded",
        }
    }
}

/// One model in a [`PoolSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStatus {
    /// The model's name.
    pub name: String,
    /// In memory or not.
    pub state: ModelState,
    /// The size reserved before loading (estimate or earlier measurement), once known.
    pub bytes_estimated: Option<u64>,
    /// The size measured after loading.
    pub bytes_measured: Option<u64>,
    /// What runs it, once loaded ([`Loader::engine`]).
    pub engine: Option<&'static str>,
    /// Bytes it counts against the budget now.
    pub bytes_reserved: u64,
    /// The last acquire or release; `None` when not loaded.
    pub last_used: Option<Instant>,
    /// Leases held plus acquires waiting for the load.
    pub in_flight: usize,
    /// Pinned.
    pub pinned: bool,
    /// The keep-alive that applies when it goes idle.
    pub keep_alive: KeepAlive,
    /// When it unloads if it stays idle; `None`: loading, in use, pinned, forever or unloaded.
    pub expires_at: Option<Instant>,
}

/// The pool's state for health and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// The memory budget.
    pub budget: u64,
    /// Bytes reserved by loaded and loading models.
    pub used: u64,
    /// Every configured model, in configuration order.
    pub models: Vec<ModelStatus>,
}

// === impl PoolSnapshot ===

impl PoolSnapshot {
    /// The status of one model.
    pub fn model(&self, name: &str) -> Option<&ModelStatus> {
        self.models.iter().find(|m| m.name == name)
    }
}

/// Progress of [`Pool::preload`], for a CLI progress bar.
#[derive(Debug, Clone)]
pub enum PreloadEvent {
    /// Model `index` (0-based) of `total` starts loading.
    Loading {
        /// The model.
        name: String,
        /// Its position.
        index: usize,
        /// Models to preload.
        total: usize,
    },
    /// It is loaded.
    Loaded {
        /// The model.
        name: String,
        /// Its position.
        index: usize,
        /// Models to preload.
        total: usize,
        /// Bytes it holds.
        bytes: u64,
        /// Wall time of the load.
        elapsed: Duration,
    },
    /// It failed; preloading goes on with the next.
    Failed {
        /// The model.
        name: String,
        /// Its position.
        index: usize,
        /// Models to preload.
        total: usize,
        /// Why.
        error: PoolError,
    },
}

/// What [`Pool::preload`] did.
#[derive(Debug, Clone, Default)]
pub struct PreloadReport {
    /// Models now loaded.
    pub loaded: Vec<String>,
    /// Models that failed, with the error.
    pub failed: Vec<(String, PoolError)>,
}

// === Pool ===

/// Loaded models under a memory budget; cheap to clone (shared state).
pub struct Pool<L: Loader, C: Clock = SystemClock> {
    inner: Arc<Inner<L, C>>,
}

impl<L: Loader, C: Clock> Clone for Pool<L, C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<L: Loader, C: Clock> std::fmt::Debug for Pool<L, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("budget", &self.inner.config.memory_budget)
            .field("used", &self.used())
            .finish_non_exhaustive()
    }
}

struct Inner<L: Loader, C: Clock> {
    loader: L,
    clock: C,
    config: PoolConfig,
    state: Mutex<State<L::Model>>,
    /// Poked when an expiry may have moved earlier (a release), for [`Pool::run_sweeper`].
    changed: Notify,
    /// Woken (all waiters) whenever a lease ends or a model unloads.
    freed: Notify,
}

struct State<M> {
    models: HashMap<String, Record>,
    entries: HashMap<String, Entry<M>>,
    next_seq: u64,
    next_id: u64,
    /// Acquires waiting for memory held by models in use, first come first served: while any
    /// waits, only the first may start a load (others that need one queue behind it).
    waiting: std::collections::VecDeque<u64>,
    next_ticket: u64,
}

/// A configured model.
struct Record {
    spec: Arc<ModelSpec>,
    seq: u64,
    pinned: bool,
    /// The last measured size, valid while the file's fingerprint is unchanged.
    measured: Option<(Fingerprint, u64)>,
    /// The file's fingerprint when its checksum last matched.
    verified: Option<Fingerprint>,
}

/// A loading or loaded model.
struct Entry<M> {
    /// Distinguishes this load from later ones of the same name (for stale releases).
    id: u64,
    phase: Phase<M>,
    estimated: Option<u64>,
    measured: Option<u64>,
    engine: Option<&'static str>,
    reserved: u64,
    in_flight: usize,
    last_used: Instant,
    keep_alive: KeepAlive,
}

enum Phase<M> {
    Loading(watch::Sender<Option<Outcome<M>>>),
    Loaded(Arc<M>),
}

type Outcome<M> = Result<Arc<M>, PoolError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: SystemTime,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        len: metadata.len(),
        modified: metadata.modified().ok()?,
    })
}

// === impl Pool ===

impl<L: Loader> Pool<L, SystemClock> {
    /// A pool of `models` (a later spec of the same name replaces an earlier one).
    pub fn new(loader: L, config: PoolConfig, models: impl IntoIterator<Item = ModelSpec>) -> Self {
        Self::with_clock(loader, config, models, SystemClock)
    }
}

impl<L: Loader, C: Clock> Pool<L, C> {
    /// [`Pool::new`] with another clock.
    pub fn with_clock(
        loader: L,
        config: PoolConfig,
        models: impl IntoIterator<Item = ModelSpec>,
        clock: C,
    ) -> Self {
        let pool = Self {
            inner: Arc::new(Inner {
                loader,
                clock,
                config,
                state: Mutex::new(State {
                    models: HashMap::new(),
                    entries: HashMap::new(),
                    next_seq: 0,
                    next_id: 0,
                    waiting: std::collections::VecDeque::new(),
                    next_ticket: 0,
                }),
                changed: Notify::new(),
                freed: Notify::new(),
            }),
        };
        for spec in models {
            pool.insert_model(spec);
        }
        pool
    }

    /// The memory budget.
    pub fn budget(&self) -> u64 {
        self.inner.config.memory_budget
    }

    /// Bytes reserved by loaded and loading models.
    pub fn used(&self) -> u64 {
        self.inner.lock().entries.values().map(|e| e.reserved).sum()
    }

    /// Adds or replaces a model's spec; a loaded copy keeps running until it unloads, the new
    /// spec applies from the next load. Returns the previous spec.
    pub fn insert_model(&self, spec: ModelSpec) -> Option<Arc<ModelSpec>> {
        let mut state = self.inner.lock();
        let seq = state.next_seq;
        state.next_seq += 1;
        let name = spec.name.clone();
        let record = Record {
            pinned: spec.pin,
            spec: Arc::new(spec),
            seq,
            measured: None,
            verified: None,
        };
        state.models.insert(name, record).map(|old| old.spec)
    }

    /// A model's spec.
    pub fn spec(&self, name: &str) -> Option<Arc<ModelSpec>> {
        self.inner
            .lock()
            .models
            .get(name)
            .map(|r| Arc::clone(&r.spec))
    }

    /// Pins or unpins a model (does not load it).
    pub fn set_pinned(&self, name: &str, pinned: bool) -> Result<(), PoolError> {
        let mut state = self.inner.lock();
        let record = state
            .models
            .get_mut(name)
            .ok_or_else(|| PoolErrorKind::NotFound(name.to_owned()))?;
        record.pinned = pinned;
        drop(state);
        self.inner.changed.notify_one();
        self.inner.freed.notify_waiters();
        Ok(())
    }

    /// A lease on the model, loading it first if needed (see the module docs). `keep_alive`
    /// overrides the model's for the idle period after this lease.
    ///
    /// When the memory it needs is held by models in use, it waits (up to
    /// [`PoolConfig::busy_wait`]) for a lease to end or a model to unload and tries again, so a
    /// workload that cycles through more models than fit queues rather than fails.
    pub async fn acquire(
        &self,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Lease<L::Model>, PoolError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.busy_wait;
        let mut ticket = Ticket {
            inner: &*self.inner,
            id: None,
        };
        loop {
            // Registered before trying, so a release between the failure and the wait counts.
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let blocked = {
                let mut state = self.inner.lock();
                let needs_load = !state.entries.contains_key(name);
                let ahead = match ticket.id {
                    Some(id) => state.waiting.front().is_some_and(|&first| first != id),
                    None => !state.waiting.is_empty(),
                };
                if needs_load && ahead && ticket.id.is_none() {
                    ticket.id = Some(ticket.take(&mut state));
                }
                needs_load && ahead
            };
            let result = if blocked {
                None
            } else {
                Some(self.acquire_once(name, keep_alive).await)
            };
            let last = match result {
                Some(Err(e)) if matches!(e.kind(), PoolErrorKind::BudgetBusy { .. }) => Some(e),
                Some(other) => return other,
                None => None,
            };
            if ticket.id.is_none() {
                let mut state = self.inner.lock();
                ticket.id = Some(ticket.take(&mut state));
            }
            if tokio::time::Instant::now() >= deadline
                || tokio::time::timeout_at(deadline, freed).await.is_err()
            {
                return match last {
                    Some(e) => Err(e),
                    // Timed out behind others: one last try of its own.
                    None => self.acquire_once(name, keep_alive).await,
                };
            }
        }
    }

    async fn acquire_once(
        &self,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Lease<L::Model>, PoolError> {
        let (mut outcome, pending) = {
            let mut guard = self.inner.lock();
            let state = &mut *guard;
            let now = self.inner.clock.now();
            let record = state
                .models
                .get(name)
                .ok_or_else(|| PoolErrorKind::NotFound(name.to_owned()))?;
            let spec = Arc::clone(&record.spec);
            let pending = |id| Pending {
                pool: Arc::clone(&self.inner) as Arc<dyn Release<L::Model>>,
                name: name.to_owned(),
                id,
                keep_alive,
                armed: true,
            };
            match state.entries.get_mut(name) {
                Some(entry) => {
                    entry.in_flight += 1;
                    entry.last_used = now;
                    match &entry.phase {
                        Phase::Loaded(model) => {
                            return Ok(pending(entry.id).into_lease(Arc::clone(model)))
                        }
                        Phase::Loading(tx) => (tx.subscribe(), pending(entry.id)),
                    }
                }
                None => {
                    let id = state.next_id;
                    state.next_id += 1;
                    let (tx, rx) = watch::channel(None);
                    state.entries.insert(
                        name.to_owned(),
                        Entry {
                            id,
                            phase: Phase::Loading(tx),
                            estimated: None,
                            measured: None,
                            engine: None,
                            reserved: 0,
                            in_flight: 1,
                            last_used: now,
                            keep_alive: keep_alive.unwrap_or_else(|| self.inner.keep_alive(&spec)),
                        },
                    );
                    let inner = Arc::clone(&self.inner);
                    let job_name = name.to_owned();
                    // Detached: the load finishes (and releases or commits its reservation)
                    // even if every waiter goes away.
                    drop(tokio::task::spawn_blocking(move || {
                        inner.run_load(&job_name, id, &spec)
                    }));
                    (rx, pending(id))
                }
            }
        };
        let result = match outcome.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        };
        match result {
            Some(Ok(model)) => Ok(pending.into_lease(model)),
            Some(Err(error)) => Err(error),
            None => Err(PoolError::load_failed(
                name,
                crate::ErrorKind::Internal("the load task ended without a result".into()).into(),
            )),
        }
    }

    /// Loads `names` one after the other (acquire and release), reporting progress; failures
    /// are reported and skipped. Preloaded models then follow the usual keep-alive: pin them
    /// to keep them.
    pub async fn preload(
        &self,
        names: &[&str],
        mut progress: impl FnMut(PreloadEvent),
    ) -> PreloadReport {
        let total = names.len();
        let mut report = PreloadReport::default();
        for (index, name) in names.iter().enumerate() {
            let name = (*name).to_owned();
            progress(PreloadEvent::Loading {
                name: name.clone(),
                index,
                total,
            });
            let started = Instant::now();
            match self.acquire(&name, None).await {
                Ok(lease) => {
                    drop(lease);
                    let bytes = self
                        .snapshot()
                        .model(&name)
                        .map_or(0, |status| status.bytes_reserved);
                    progress(PreloadEvent::Loaded {
                        name: name.clone(),
                        index,
                        total,
                        bytes,
                        elapsed: started.elapsed(),
                    });
                    report.loaded.push(name);
                }
                Err(error) => {
                    progress(PreloadEvent::Failed {
                        name: name.clone(),
                        index,
                        total,
                        error: error.clone(),
                    });
                    report.failed.push((name, error));
                }
            }
        }
        report
    }

    /// [`Pool::preload`] of the models whose spec sets `preload` or `pin`, in configuration
    /// order.
    pub async fn preload_configured(&self, progress: impl FnMut(PreloadEvent)) -> PreloadReport {
        let names: Vec<String> = {
            let state = self.inner.lock();
            let mut records: Vec<&Record> = state
                .models
                .values()
                .filter(|r| r.spec.preload || r.spec.pin)
                .collect();
            records.sort_by_key(|r| r.seq);
            records.iter().map(|r| r.spec.name.clone()).collect()
        };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.preload(&names, progress).await
    }

    /// Unloads idle, unpinned models whose keep-alive has expired; returns their names.
    /// The models are dropped on the blocking pool when called inside a tokio runtime.
    pub fn sweep(&self) -> Vec<String> {
        let mut state = self.inner.lock();
        let now = self.inner.clock.now();
        let expired: Vec<String> = state
            .entries
            .iter()
            .filter(|(name, entry)| {
                let pinned = state.models.get(*name).is_some_and(|r| r.pinned);
                matches!(entry.phase, Phase::Loaded(_))
                    && entry.in_flight == 0
                    && !pinned
                    && entry
                        .keep_alive
                        .expires_at(entry.last_used)
                        .is_some_and(|at| at <= now)
            })
            .map(|(name, _)| name.clone())
            .collect();
        let mut models = Vec::new();
        for name in &expired {
            if let Some(entry) = state.entries.remove(name) {
                tracing::info!(model = %name, bytes = entry.reserved, "unloading idle local model");
                models.push(entry.phase);
            }
        }
        drop(state);
        dispose(models);
        expired
    }

    /// The earliest instant an idle model expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        let state = self.inner.lock();
        state
            .entries
            .iter()
            .filter(|(name, entry)| {
                matches!(entry.phase, Phase::Loaded(_))
                    && entry.in_flight == 0
                    && !state.models.get(*name).is_some_and(|r| r.pinned)
            })
            .filter_map(|(_, entry)| entry.keep_alive.expires_at(entry.last_used))
            .min()
    }

    /// Sweeps at every expiry (at least once a minute) until `shutdown` completes. Sleeps on
    /// tokio's timer, so it is meant for the [`SystemClock`].
    pub async fn run_sweeper(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.sweep();
            let now = self.inner.clock.now();
            let wait = self
                .next_expiry()
                .map_or(SWEEP_MAX_SLEEP, |at| at.saturating_duration_since(now))
                .clamp(Duration::from_millis(10), SWEEP_MAX_SLEEP);
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
                () = self.inner.changed.notified() => {}
            }
        }
    }

    /// Every configured model's state, budget and use.
    pub fn snapshot(&self) -> PoolSnapshot {
        let state = self.inner.lock();
        let mut records: Vec<&Record> = state.models.values().collect();
        records.sort_by_key(|r| r.seq);
        let models = records
            .into_iter()
            .map(|record| {
                let name = record.spec.name.clone();
                let default_keep_alive = self.inner.keep_alive(&record.spec);
                match state.entries.get(&name) {
                    None => ModelStatus {
                        name,
                        state: ModelState::Unloaded,
                        bytes_estimated: None,
                        bytes_measured: record.measured.map(|(_, bytes)| bytes),
                        engine: None,
                        bytes_reserved: 0,
                        last_used: None,
                        in_flight: 0,
                        pinned: record.pinned,
                        keep_alive: default_keep_alive,
                        expires_at: None,
                    },
                    Some(entry) => {
                        let loaded = matches!(entry.phase, Phase::Loaded(_));
                        let expires_at = if loaded && entry.in_flight == 0 && !record.pinned {
                            entry.keep_alive.expires_at(entry.last_used)
                        } else {
                            None
                        };
                        ModelStatus {
                            name,
                            state: if loaded {
                                ModelState::Loaded
                            } else {
                                ModelState::Loading
                            },
                            bytes_estimated: entry.estimated,
                            bytes_measured: entry.measured,
                            engine: entry.engine,
                            bytes_reserved: entry.reserved,
                            last_used: Some(entry.last_used),
                            in_flight: entry.in_flight,
                            pinned: record.pinned,
                            keep_alive: entry.keep_alive,
                            expires_at,
                        }
                    }
                }
            })
            .collect();
        PoolSnapshot {
            budget: self.inner.config.memory_budget,
            used: state.entries.values().map(|e| e.reserved).sum(),
            models,
        }
    }
}

// === impl Inner ===

impl<L: Loader, C: Clock> Inner<L, C> {
    fn lock(&self) -> MutexGuard<'_, State<L::Model>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn keep_alive(&self, spec: &ModelSpec) -> KeepAlive {
        spec.keep_alive.unwrap_or(self.config.keep_alive)
    }

    /// The load job of entry `id`, on a blocking thread.
    fn run_load(&self, name: &str, id: u64, spec: &ModelSpec) {
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.load(name, id, spec)))
            .unwrap_or_else(|payload| {
                Err(PoolError::load_failed(
                    name,
                    panic_error("model loader", payload.as_ref()),
                ))
            });
        let mut state = self.lock();
        let Some(entry) = state.entries.get_mut(name).filter(|e| e.id == id) else {
            return;
        };
        let Phase::Loading(tx) = &entry.phase else {
            return;
        };
        let tx = tx.clone();
        match result {
            Ok(model) => {
                let model = Arc::new(model);
                entry.phase = Phase::Loaded(Arc::clone(&model));
                tracing::info!(
                    model = %name,
                    bytes = entry.reserved,
                    estimated = entry.estimated,
                    "loaded local model"
                );
                drop(state);
                tx.send_replace(Some(Ok(model)));
                self.changed.notify_one();
                self.freed.notify_waiters();
            }
            Err(error) => {
                state.entries.remove(name);
                drop(state);
                tracing::warn!(model = %name, %error, "local model load failed");
                tx.send_replace(Some(Err(error)));
            }
        }
    }

    /// Reserve, verify, load, measure. On success the entry's reservation is the measured size;
    /// on failure the caller removes the entry (and with it the reservation).
    fn load(&self, name: &str, id: u64, spec: &ModelSpec) -> Result<L::Model, PoolError> {
        let file = fingerprint(&spec.path);
        let remembered = {
            let state = self.lock();
            state.models.get(name).and_then(|r| match r.measured {
                Some((seen, bytes)) if Some(seen) == file => Some(bytes),
                _ => None,
            })
        };
        let need = match remembered {
            Some(bytes) => bytes,
            None => self
                .loader
                .estimate(spec)
                .map_err(|e| PoolError::load_failed(name, e))?,
        };
        let victims = self.reserve(name, id, need, true)?;
        dispose_inline(victims);

        if let Some(expected) = &spec.sha256 {
            let verified = {
                let state = self.lock();
                state.models.get(name).and_then(|r| r.verified)
            };
            if file.is_none() || verified != file {
                // An embedding model's checksum is its weights file's.
                let weights = spec.path.join("model.safetensors");
                let path = match spec.kind {
                    ModelKind::Chat => &spec.path,
                    ModelKind::Embedding => &weights,
                };
                verify_sha256(name, path, expected)?;
                let mut state = self.lock();
                if let Some(record) = state.models.get_mut(name) {
                    record.verified = file;
                }
            }
        }

        let Loaded { model, bytes } = self
            .loader
            .load(spec)
            .map_err(|e| PoolError::load_failed(name, e))?;
        let engine = self.loader.engine(&model);
        {
            let mut state = self.lock();
            if let Some(record) = state.models.get_mut(name) {
                record.measured = file.map(|f| (f, bytes));
            }
            if let Some(entry) = state.entries.get_mut(name).filter(|e| e.id == id) {
                entry.measured = Some(bytes);
                entry.engine = engine;
            }
        }
        match self.reserve(name, id, bytes, false) {
            Ok(victims) => {
                dispose_inline(victims);
                Ok(model)
            }
            Err(error) => {
                tracing::warn!(
                    model = %name,
                    measured = bytes,
                    estimated = need,
                    "local model measured larger than its estimate and cannot fit"
                );
                drop(model);
                Err(error)
            }
        }
    }

    /// Sets entry `id`'s reservation to `bytes`, evicting what the plan says. `first` is the
    /// reservation before the load (records the estimate).
    fn reserve(
        &self,
        name: &str,
        id: u64,
        bytes: u64,
        first: bool,
    ) -> Result<Vec<Phase<L::Model>>, PoolError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.entries.get(name).is_none_or(|e| e.id != id) {
            return Ok(Vec::new());
        }
        let others: Vec<(&String, Resident)> = state
            .entries
            .iter()
            .filter(|(other, _)| other.as_str() != name)
            .map(|(other, entry)| {
                let resident = Resident {
                    bytes: entry.reserved,
                    last_used: entry.last_used,
                    in_use: entry.in_flight > 0 || matches!(entry.phase, Phase::Loading(_)),
                    pinned: state.models.get(other).is_some_and(|r| r.pinned),
                };
                (other, resident)
            })
            .collect();
        let residents: Vec<Resident> = others.iter().map(|(_, r)| *r).collect();
        // Plan for the whole size (so `TooLarge` compares it to the budget), with our current
        // reservation not counted twice.
        let plan = plan_eviction(&residents, bytes, self.config.memory_budget);
        let victims: Vec<String> = match plan {
            Ok(indexes) => indexes.iter().map(|&i| others[i].0.clone()).collect(),
            Err(error) => return Err(PoolError::from_plan(name, error)),
        };
        let mut evicted = Vec::new();
        for victim in victims {
            if let Some(entry) = state.entries.remove(&victim) {
                tracing::info!(
                    model = %victim,
                    bytes = entry.reserved,
                    for_model = %name,
                    "evicting idle local model"
                );
                evicted.push(entry.phase);
            }
        }
        if let Some(entry) = state.entries.get_mut(name).filter(|e| e.id == id) {
            if first {
                entry.estimated = Some(bytes);
            }
            entry.reserved = bytes;
        }
        Ok(evicted)
    }
}

/// Releases leases and cancelled waits; object-safe so [`Lease`] is generic only over the model.
trait Release<M>: Send + Sync {
    fn release(&self, name: &str, id: u64, keep_alive: Option<KeepAlive>, model: Option<Arc<M>>);
}

impl<L: Loader, C: Clock> Release<L::Model> for Inner<L, C> {
    fn release(
        &self,
        name: &str,
        id: u64,
        keep_alive: Option<KeepAlive>,
        model: Option<Arc<L::Model>>,
    ) {
        let mut state = self.lock();
        let now = self.clock.now();
        let default = state
            .models
            .get(name)
            .map_or(self.config.keep_alive, |r| self.keep_alive(&r.spec));
        let pinned = state.models.get(name).is_some_and(|r| r.pinned);
        let mut unload = false;
        // Whether memory became available to an acquire waiting for it: a loaded model went
        // idle (now evictable) or unloads.
        let mut freed = false;
        if let Some(entry) = state.entries.get_mut(name).filter(|e| e.id == id) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.last_used = now;
            entry.keep_alive = keep_alive.unwrap_or(default);
            let idle = entry.in_flight == 0 && matches!(entry.phase, Phase::Loaded(_));
            freed = idle && !pinned;
            unload = idle && !pinned && entry.keep_alive.is_zero();
        }
        let mut garbage: Vec<Phase<L::Model>> = Vec::new();
        if unload {
            if let Some(entry) = state.entries.remove(name) {
                tracing::info!(model = %name, "unloading local model (keep_alive 0)");
                garbage.push(entry.phase);
            }
        }
        drop(state);
        if let Some(model) = model {
            garbage.push(Phase::Loaded(model));
        }
        dispose(garbage);
        self.changed.notify_one();
        if freed {
            self.freed.notify_waiters();
        }
    }
}

/// Drops unloaded models off the async threads (a [`ChatModel`] joins its slot threads).
fn dispose<M: Send + Sync + 'static>(models: Vec<Phase<M>>) {
    if models.is_empty() {
        return;
    }
    let release = move || {
        drop(models);
        crate::memory::return_freed_memory();
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn_blocking(release)),
        Err(_) => release(),
    }
}

/// Drops evicted models right here (already on a blocking thread), before the next load
/// allocates.
fn dispose_inline<M>(models: Vec<Phase<M>>) {
    if !models.is_empty() {
        drop(models);
        crate::memory::return_freed_memory();
    }
}

// === Lease ===

/// A model in use: derefs to it; dropping it records the last use and lets the model idle.
pub struct Lease<M: Send + Sync + 'static> {
    model: Option<Arc<M>>,
    pool: Arc<dyn Release<M>>,
    name: String,
    id: u64,
    keep_alive: Option<KeepAlive>,
}

// === impl Lease ===

impl<M: Send + Sync + 'static> Lease<M> {
    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Changes the keep-alive that applies after this lease (e.g. from a request field).
    pub fn set_keep_alive(&mut self, keep_alive: Option<KeepAlive>) {
        self.keep_alive = keep_alive;
    }

    /// The shared model handle (for identity checks; holding it does not keep a lease).
    pub fn model(&self) -> Option<&Arc<M>> {
        self.model.as_ref()
    }
}

impl<M: Send + Sync + 'static> Deref for Lease<M> {
    type Target = M;

    fn deref(&self) -> &M {
        match &self.model {
            Some(model) => model,
            // `model` is only taken in `drop`.
            None => unreachable!("lease used after release"),
        }
    }
}

impl<M: Send + Sync + 'static> Drop for Lease<M> {
    fn drop(&mut self) {
        let model = self.model.take();
        self.pool
            .release(&self.name, self.id, self.keep_alive, model);
    }
}

impl<M: Send + Sync + 'static> std::fmt::Debug for Lease<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

/// An acquire's place in [`State::waiting`]; leaving (done, failed, timed out or cancelled)
/// takes it out and wakes the others, so the next in line may load.
struct Ticket<'a, L: Loader, C: Clock> {
    inner: &'a Inner<L, C>,
    id: Option<u64>,
}

impl<L: Loader, C: Clock> Ticket<'_, L, C> {
    fn take(&self, state: &mut State<L::Model>) -> u64 {
        let id = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push_back(id);
        id
    }
}

impl<L: Loader, C: Clock> Drop for Ticket<'_, L, C> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.inner.lock().waiting.retain(|&t| t != id);
            self.inner.freed.notify_waiters();
        }
    }
}

/// An acquire counted in flight while it waits for a load; dropping it (cancellation) undoes
/// the count.
struct Pending<M: Send + Sync + 'static> {
    pool: Arc<dyn Release<M>>,
    name: String,
    id: u64,
    keep_alive: Option<KeepAlive>,
    armed: bool,
}

impl<M: Send + Sync + 'static> Pending<M> {
    fn into_lease(mut self, model: Arc<M>) -> Lease<M> {
        self.armed = false;
        Lease {
            model: Some(model),
            pool: Arc::clone(&self.pool),
            name: std::mem::take(&mut self.name),
            id: self.id,
            keep_alive: self.keep_alive,
        }
    }
}

impl<M: Send + Sync + 'static> Drop for Pending<M> {
    fn drop(&mut self) {
        if self.armed {
            self.pool
                .release(&self.name, self.id, self.keep_alive, None);
        }
    }
}

// === Checksums ===

/// Streams `path` through SHA-256 and compares it with `expected` (hex, optionally prefixed
/// `sha256:` or `sha256-`, any case).
pub fn verify_sha256(name: &str, path: &Path, expected: &str) -> Result<(), PoolError> {
    let expected = normalize_sha256(expected).ok_or_else(|| PoolErrorKind::InvalidSpec {
        name: name.to_owned(),
        reason: format!("`sha256` must be 64 hex digits, got `{expected}`"),
    })?;
    let actual = sha256_file(path)?;
    if actual != expected {
        return Err(PoolErrorKind::ChecksumMismatch {
            path: path.to_path_buf(),
            expected,
            actual,
        }
        .into());
    }
    Ok(())
}

/// The lowercase hex SHA-256 of a file, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> Result<String, PoolError> {
    let io = |source| PoolErrorKind::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_CHUNK];
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e).into()),
        };
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

fn normalize_sha256(text: &str) -> Option<String> {
    let text = text.trim();
    let hex = text
        .strip_prefix("sha256:")
        .or_else(|| text.strip_prefix("sha256-"))
        .unwrap_or(text);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests;
