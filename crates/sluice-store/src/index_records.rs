//! The semantic index's records as the cache stores keep them: an opaque record (the
//! caller's encoding of a question, its context and its vector) stored with an entry, and
//! read back in bulk by a [`IndexCursor`] so that a gateway rebuilds its index at start
//! and, on a shared store, learns the records other replicas wrote.

use crate::{Key, UnixMs};
use bytes::Bytes;

/// A record stored with the entry at `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRecord {
    /// The entry's key.
    pub key: Key,
    /// The caller's record.
    pub record: Bytes,
    /// When the entry expires.
    pub expires_at: UnixMs,
}

/// Where a reader of a store's index records is: nothing read yet, or what was read last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexCursor {
    /// Whether a read has been done.
    pub(crate) started: bool,
    /// The store's position after the last record read (Redis: its stream id).
    pub(crate) last: Vec<u8>,
}

impl IndexCursor {
    /// Whether this cursor has read anything yet (a first read returns every live record).
    pub fn started(&self) -> bool {
        self.started
    }
}
