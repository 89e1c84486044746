//! What a model's threads share with its handle: the model's description, the tokenizer and
//! template, and the queue of requests waiting for a slot.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use candle_core::Device;

use super::sequence::Job;
use crate::constrain::TokenTrie;
use crate::gguf::ModelInfo;
use crate::template::ChatTemplate;
use crate::tokenizer::GgufTokenizer;

/// What a model's threads share with its handle.
pub(super) struct Shared {
    pub(super) info: ModelInfo,
    pub(super) context_length: usize,
    pub(super) tokenizer: GgufTokenizer,
    pub(super) template: ChatTemplate,
    pub(super) chat_template_source: String,
    pub(super) queue: Mutex<QueueState>,
    pub(super) ready: Condvar,
    pub(super) queue_capacity: usize,
    pub(super) slots: usize,
    pub(super) device: Device,
    /// The vocabulary's byte trie for constrained requests, built by the first one.
    pub(super) token_trie: OnceLock<Arc<TokenTrie>>,
}

// === impl Shared ===

impl Shared {
    /// The vocabulary's byte trie (built on first use: a few milliseconds for 150k tokens).
    pub(super) fn token_trie(&self) -> Arc<TokenTrie> {
        let trie = self.token_trie.get_or_init(|| {
            let t = &self.tokenizer;
            Arc::new(TokenTrie::new(
                t.tokens.len(),
                |id| t.token_bytes(id),
                &t.stop_ids,
            ))
        });
        Arc::clone(trie)
    }
}

#[derive(Default)]
pub(super) struct QueueState {
    pub(super) pending: VecDeque<Job>,
    /// Slots generating right now.
    pub(super) busy: usize,
    pub(super) closed: bool,
}

/// The next queued request for a slot thread, waiting for one; `None` once the model is
/// dropped.
pub(super) fn next_job(shared: &Shared) -> Option<Job> {
    let mut queue = lock(&shared.queue);
    loop {
        if queue.closed {
            return None;
        }
        if let Some(job) = queue.pending.pop_front() {
            queue.busy += 1;
            return Some(job);
        }
        queue = shared
            .ready
            .wait(queue)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

pub(super) fn lock(mutex: &Mutex<QueueState>) -> MutexGuard<'_, QueueState> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
