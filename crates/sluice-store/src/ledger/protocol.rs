//! What a ledger handle and its writer thread share, the same for both implementations: the
//! messages the handle sends, and the columns a record is read back from.

use super::log::{LogPage, LogQuery};
use super::types::{Dimension, KeyRecord, Purged, Report, SpendRecord};
use crate::{StoreError, UnixMs};
use tokio::sync::oneshot;

/// Where a ledger's writer sends an answer.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What a ledger handle asks of its writer thread (the same for both implementations).
pub(crate) enum Msg {
    Record(Box<SpendRecord>),
    Flush(oneshot::Sender<()>),
    Report {
        by: Dimension,
        since: UnixMs,
        until: UnixMs,
        now: UnixMs,
        reply: Reply<Report>,
    },
    Export {
        since: UnixMs,
        reply: Reply<Vec<SpendRecord>>,
    },
    Log {
        query: Box<LogQuery>,
        reply: Reply<LogPage>,
    },
    WindowSpend {
        key_id: String,
        window: String,
        reply: Reply<u64>,
    },
    Purge {
        now: UnixMs,
        reply: Reply<Purged>,
    },
    KeyByHash {
        hash: String,
        reply: Reply<Option<KeyRecord>>,
    },
    Key {
        id: String,
        reply: Reply<Option<KeyRecord>>,
    },
    Keys(Reply<Vec<KeyRecord>>),
    SaveKey {
        key: Box<KeyRecord>,
        reply: Reply<()>,
    },
    Shutdown,
}

/// The columns of `spend_log` a record is read from, in [`SpendRecord`]'s order.
pub(crate) const RECORD_COLUMNS: &str = "ts_ms, request_id, key_id, key_name, endpoint, route, \
     model, provider, status, prompt_tokens, completion_tokens, cached_tokens, \
     cache_write_tokens, reasoning_tokens, cost_nano_usd, latency_ms, ttft_ms, cache, attempts, \
     stream, usage_estimated, batch_id, guardrails";
