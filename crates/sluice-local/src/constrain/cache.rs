//! [`GrammarCache`]: compiled schemas kept for the requests that ask for the same schema again
//! (an agent sends its tools and `response_format` with every turn), so that a `pattern`'s DFA
//! and its liveness table are built once.
//!
//! Keyed by the schema's canonical text (`serde_json`'s serialization of the parsed value:
//! whitespace does not matter, and numbers count as `serde_json` reads them: `1e2` is
//! `100.0`, while `1` and `1.0` are two keys). Bounded by [`MAX_SCHEMAS`] entries and
//! [`MAX_BYTES`] of compiled tables, the least recently used entry leaving first; a grammar
//! larger than the whole budget is compiled for its request and not kept. Refused schemas are
//! not kept (they are compiled again, and refused again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

use super::schema::{Grammar, SchemaError};

/// Most compiled schemas kept.
pub const MAX_SCHEMAS: usize = 256;
/// Most bytes of compiled tables (nodes and pattern automata, approximately) kept.
pub const MAX_BYTES: usize = 64 << 20;

/// Compiled schemas by canonical text, least recently used leaving first.
#[derive(Debug, Default)]
pub struct GrammarCache {
    entries: Mutex<Entries>,
    compiled: AtomicU64,
    reused: AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    /// Text → (grammar, its size, when last used).
    map: HashMap<String, (Arc<Grammar>, usize, u64)>,
    bytes: usize,
    clock: u64,
}

// === impl GrammarCache ===

impl GrammarCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The grammar of `schema`: the one kept, else compiled (and kept).
    pub fn compile(&self, schema: &Value) -> Result<Arc<Grammar>, SchemaError> {
        let key = schema.to_string();
        if let Some(grammar) = self.lock().get(&key) {
            self.reused.fetch_add(1, Relaxed);
            return Ok(grammar);
        }
        // Compiled outside the lock: a large pattern takes a while.
        let grammar = Arc::new(Grammar::from_json_schema(schema)?);
        self.compiled.fetch_add(1, Relaxed);
        self.lock().insert(key, Arc::clone(&grammar));
        Ok(grammar)
    }

    /// Schemas compiled (not found kept).
    pub fn compiled(&self) -> u64 {
        self.compiled.load(Relaxed)
    }

    /// Schemas found kept.
    pub fn reused(&self) -> u64 {
        self.reused.load(Relaxed)
    }

    /// Schemas kept now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Entries ===

impl Entries {
    fn get(&mut self, key: &str) -> Option<Arc<Grammar>> {
        self.clock += 1;
        let clock = self.clock;
        self.map.get_mut(key).map(|(grammar, _, used)| {
            *used = clock;
            Arc::clone(grammar)
        })
    }

    fn insert(&mut self, key: String, grammar: Arc<Grammar>) {
        let size = grammar.heap_bytes() + key.len();
        if size > MAX_BYTES || self.map.contains_key(&key) {
            return;
        }
        while self.map.len() >= MAX_SCHEMAS || self.bytes + size > MAX_BYTES {
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, _, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((_, freed, _)) = self.map.remove(&oldest) {
                self.bytes -= freed;
            }
        }
        self.clock += 1;
        self.bytes += size;
        self.map.insert(key, (grammar, size, self.clock));
    }
}
