//! The Responses API's stored responses (`store: true`, the default): each response's
//! object, input items and the conversation that continues it (`previous_response_id`),
//! by id and owner, until it expires.
//!
//! - Embedded: `responses.sqlite` in the data directory ([`SqliteResponses`]).
//! - Replicas: the `responses` table of the ledger's PostgreSQL ([`PgResponses`]): any
//!   replica reads and continues a response another one made.
//!
//! Invariants: every lookup is scoped to an [`Owner`]: another owner's response is absent,
//! exactly like one that does not exist or has expired. A response made with
//! `store: false`, or larger than `max_bytes`, is kept as a row without content
//! ([`Withheld`]), so continuing it is refused with the reason rather than as unknown; it
//! is never read back or listed. [`ResponseStore::put`] starts the write at once, so it is
//! done even if the caller stops waiting; writes purge expired rows at most hourly
//! ([`ResponseStore::purge_expired`] does it at once).
//!
//! The files: `types` (what is stored), `sqlite` and `postgres` (the two backends).

pub mod postgres;
pub mod sqlite;
pub mod types;

pub use postgres::PgResponses;
pub use sqlite::SqliteResponses;
pub use types::{is_valid_id, Content, Kept, NewResponse, StoredResponse, Withheld, PURGE_BATCH};

use crate::files::{unix_now_s, Owner};
use crate::StoreError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// How often writes purge expired responses, at most (seconds).
const PURGE_EVERY_S: u64 = 3600;

/// A write under way ([`ResponseStore::put`]): it runs whether or not this is awaited.
pub type Pending = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// Where the responses are.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `responses.sqlite`, on a thread of its own.
    Sqlite(SqliteResponses),
    /// The ledger's PostgreSQL, on a thread of its own.
    Postgres(PgResponses),
}

macro_rules! both {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            Self::Sqlite($b) => $e,
            Self::Postgres($b) => $e,
        }
    };
}

// === impl Backend ===

impl Backend {
    /// Stores `r` (replacing a row of its id and owner; a row of its id and another owner
    /// stays as it was, and `r` is not stored), then, with `purge_before`, deletes up to
    /// [`PURGE_BATCH`] rows expired by then. Started at once.
    pub fn put(&self, r: StoredResponse, purge_before: Option<u64>) -> Pending {
        both!(self, b => Box::pin(b.put(r, purge_before)))
    }

    /// The response `id` of `owner` unexpired at `now` (Unix seconds).
    pub async fn get(
        &self,
        id: &str,
        owner: &Owner,
        now: u64,
    ) -> Result<Option<StoredResponse>, StoreError> {
        both!(self, b => b.get(id, owner, now).await)
    }

    /// Deletes the response `id` of `owner` (one with content, unexpired at `now`);
    /// whether there was one.
    pub async fn delete(&self, id: &str, owner: &Owner, now: u64) -> Result<bool, StoreError> {
        both!(self, b => b.delete(id, owner, now).await)
    }

    /// Deletes every response expired at `now`; how many.
    pub async fn purge(&self, now: u64) -> Result<u64, StoreError> {
        both!(self, b => b.purge(now).await)
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// How long responses are kept and how large one may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseOptions {
    /// Seconds a response is kept.
    pub ttl_s: u64,
    /// Largest [`Content`] kept, in bytes.
    pub max_bytes: u64,
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    options: ResponseOptions,
    /// When a write last purged expired responses (Unix seconds).
    purged_at: AtomicU64,
}

/// The stored responses: a [`Backend`] under [`ResponseOptions`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ResponseStore {
    inner: Arc<Inner>,
}

// === impl ResponseStore ===

impl ResponseStore {
    /// A store over `backend`.
    pub fn new(backend: Backend, options: ResponseOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                options,
                purged_at: AtomicU64::new(0),
            }),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// Stores `new` until `created_at` + the ttl: its content, or (for `store: false`, or
    /// content over `max_bytes`) the reason it has none. The write starts now.
    pub fn put(&self, new: NewResponse) -> Pending {
        let max = self.inner.options.max_bytes;
        let kept = match new.content {
            None => Kept::Withheld(Withheld::NotStored),
            Some(c) if c.bytes() > max => {
                tracing::warn!(id = %new.id, bytes = c.bytes(), max, "response too large to store");
                Kept::Withheld(Withheld::TooLarge)
            }
            Some(c) => Kept::Content(c),
        };
        let row = StoredResponse {
            expires_at: new.created_at.saturating_add(self.inner.options.ttl_s),
            id: new.id,
            owner: new.owner,
            created_at: new.created_at,
            kept,
        };
        self.inner.backend.put(row, self.purge_due())
    }

    /// The response `id` of `owner`: `None` when there is none, it is another owner's, or
    /// it has expired. A [`Kept::Withheld`] one can be neither read nor continued.
    pub async fn get(&self, id: &str, owner: &Owner) -> Result<Option<StoredResponse>, StoreError> {
        if !is_valid_id(id) {
            return Ok(None);
        }
        self.inner.backend.get(id, owner, unix_now_s()).await
    }

    /// Deletes the response `id` of `owner`; whether there was one it could read.
    pub async fn delete(&self, id: &str, owner: &Owner) -> Result<bool, StoreError> {
        if !is_valid_id(id) {
            return Ok(false);
        }
        self.inner.backend.delete(id, owner, unix_now_s()).await
    }

    /// Deletes every expired response now; how many.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.inner.backend.purge(unix_now_s()).await
    }

    /// A cheap check that the backend answers.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.inner
            .backend
            .get("resp_ready", &Owner::Master, unix_now_s())
            .await
            .map(drop)
    }

    /// `Some(now)` when the last purge is an hour old (and this caller takes the turn).
    fn purge_due(&self) -> Option<u64> {
        let now = unix_now_s();
        let last = self.inner.purged_at.load(Relaxed);
        let due = now >= last + PURGE_EVERY_S
            && self
                .inner
                .purged_at
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok();
        due.then_some(now)
    }
}
