//! Continuous batching on the native engine: one thread per model runs every running
//! sequence in one forward pass per step ([`Batch::forward`]), so the weights are read once
//! per step for all of them.
//!
//! - **Joining and leaving**: between steps, queued requests take free slots, and sequences
//!   that finished, failed or lost their caller leave at once.
//! - **Prefill in chunks**: a prompt enters the cache a chunk per step ([`PREFILL_CHUNK`]
//!   tokens when nothing else runs; [`SHARED_CHUNK`] in all per step while other sequences
//!   are generating), so a long prompt delays the others' next token by one chunk at most.
//! - **Prompt reuse**: a slot keeps the tokens its cache holds after its request ends, and the
//!   model has [`crate::LoadOptions::prompt_cache_slots`] slots beyond its `parallel` running
//!   ones, so that up to that many finished sequences' caches outlive the running ones'. A new
//!   request takes the free slot whose tokens share the longest prefix with its prompt, truncated
//!   to that prefix (a prompt that diverges inside the cached tokens keeps only the common part),
//!   when the shared prefix is at least half of what the slot holds (it throws away less of
//!   another conversation than it saves; no minimum: the cache is used where it is, so any
//!   shared token is one not run). Otherwise it takes an empty slot, else the least recently
//!   used one (whose cache is thrown away beyond what it shares: LRU eviction). It
//!   runs only the rest of its prompt (multi-turn chat: the earlier turns are in the cache
//!   already). The reused tokens are reported as [`super::types::Usage::cached_prompt_tokens`].
//!   Slots are per model: a cache is never reused across models or KV cache types.

use std::panic::AssertUnwindSafe;

use super::queue::{lock, Shared};
use super::sequence::{Job, Next, Sequence, PREFILL_CHUNK};
use crate::error::{panic_error, Error, ErrorKind};
use crate::native::{Batch, Step};

/// Prompt tokens per step, over all prefilling sequences, while others are generating.
const SHARED_CHUNK: usize = 128;

/// A sequence in a slot.
struct Running {
    slot: usize,
    sequence: Sequence,
    /// The sampled token to run next (`None` while the prompt is still going in).
    next: Option<u32>,
}

/// The scheduler's view of the slots.
struct Slots {
    /// Per slot, the tokens whose keys and values its cache holds, in position order.
    held: Vec<Vec<u32>>,
    /// Per slot, whether a sequence runs in it.
    busy: Vec<bool>,
    /// Per slot, when it was last taken or released (the least recently used is evicted first,
    /// and goes first on a tie).
    taken: Vec<u64>,
    clock: u64,
    /// Sequences that may run at once (the other slots only keep finished ones' caches).
    parallel: usize,
}

// === impl Slots ===

impl Slots {
    /// `slots` caches, at most `parallel` of them running.
    fn new(slots: usize, parallel: usize) -> Self {
        Self {
            held: vec![Vec::new(); slots],
            busy: vec![false; slots],
            taken: vec![0; slots],
            clock: 0,
            parallel: parallel.min(slots),
        }
    }

    /// Sequences that may start now.
    fn free(&self) -> usize {
        let busy = self.busy.iter().filter(|b| **b).count();
        self.parallel.saturating_sub(busy)
    }

    /// Takes a free slot for `prompt` and returns it with the number of prompt tokens its
    /// cache already holds (see the module's doc for which slot). The last prompt token is
    /// always left to run, for its logits.
    fn take(&mut self, prompt: &[u32]) -> Option<(usize, usize)> {
        if self.free() == 0 {
            return None;
        }
        let free = || (0..self.held.len()).filter(|&s| !self.busy[s]);
        let common = |s: usize| common_prefix(&self.held[s], prompt);
        let held = |s: usize| self.held[s].len();
        // Reuse is free (the slot's cache is used where it is): any shared prefix is worth
        // taking, unless it throws away more of another conversation than it saves.
        let worth = |s: usize, c: usize| c * 2 >= held(s);
        let best = free()
            .map(|s| (s, common(s)))
            .filter(|&(s, c)| c > 0 && worth(s, c))
            .max_by_key(|&(s, c)| (c, self.taken[s]));
        let slot = match best {
            Some((s, _)) => s,
            // An empty slot, else the least recently used.
            None => free().min_by_key(|&s| (held(s) > 0, self.taken[s]))?,
        };
        let reuse = common(slot).min(prompt.len().saturating_sub(1));
        self.held[slot].truncate(reuse);
        self.busy[slot] = true;
        self.clock += 1;
        self.taken[slot] = self.clock;
        Some((slot, reuse))
    }

    fn release(&mut self, slot: usize) {
        self.busy[slot] = false;
        self.clock += 1;
        self.taken[slot] = self.clock;
    }

    /// Forgets what a slot's cache holds (after a failed pass left it unknown).
    fn forget(&mut self, slot: usize) {
        self.held[slot].clear();
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The scheduler thread of a native model: admits, steps and retires sequences until the model
/// is dropped.
/// At most `parallel` sequences run at once; the batch's other slots keep finished ones' caches.
pub(super) fn batch_loop(shared: &Shared, mut batch: Batch, parallel: usize) {
    let mut state = Slots::new(batch.slots(), parallel);
    let mut running: Vec<Running> = Vec::new();
    while admit(shared, &mut state, &mut running) {
        // Callers that went away free their slots before the pass.
        let gone = (0..running.len())
            .filter(|&i| running[i].sequence.is_cancelled())
            .map(|i| (i, Err(None)))
            .collect();
        retire(shared, &mut state, &mut running, gone);
        if running.is_empty() {
            continue;
        }
        let plan = plan(&state, &running);
        let steps: Vec<Step<'_>> = plan
            .iter()
            .map(|(i, tokens)| Step {
                slot: running[*i].slot,
                tokens,
                position: state.held[running[*i].slot].len(),
            })
            .collect();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| batch.forward(&steps)))
            .unwrap_or_else(|payload| Err(panic_error("generation", payload.as_ref())));
        let logits = match outcome {
            Ok(logits) => logits,
            Err(error) => {
                fail_planned(shared, &mut state, &mut running, &plan, error);
                continue;
            }
        };
        let mut ended = Vec::new();
        for ((i, tokens), logits) in plan.into_iter().zip(logits) {
            let r = &mut running[i];
            state.held[r.slot].extend_from_slice(&tokens);
            if state.held[r.slot].len() < r.sequence.prompt().len() {
                continue; // more prompt to run
            }
            match r.sequence.step(&shared.tokenizer, logits) {
                Ok(Next::Feed(token)) => r.next = Some(token),
                Ok(Next::Finished(reason)) => ended.push((i, Ok(reason))),
                Ok(Next::Cancelled) => ended.push((i, Err(None))),
                Err(error) => ended.push((i, Err(Some(error)))),
            }
        }
        retire(shared, &mut state, &mut running, ended);
    }
    for r in running {
        r.sequence.fail(ErrorKind::Unloaded.into());
    }
}

/// Takes queued requests into free slots, waiting while nothing runs; `false` once the model
/// is dropped.
fn admit(shared: &Shared, state: &mut Slots, running: &mut Vec<Running>) -> bool {
    let mut queue = lock(&shared.queue);
    loop {
        if queue.closed {
            return false;
        }
        while state.free() > 0 {
            let Some(job) = queue.pending.pop_front() else {
                break;
            };
            queue.busy += 1;
            running.push(start(shared, state, job));
        }
        if !running.is_empty() {
            return true;
        }
        queue = shared
            .ready
            .wait(queue)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
}

fn start(shared: &Shared, state: &mut Slots, job: Job) -> Running {
    let (slot, reuse) = state
        .take(&job.prompt_ids)
        .unwrap_or_else(|| unreachable!("admitted without a free slot"));
    Running {
        slot,
        sequence: Sequence::start(job, shared.context_length, reuse, &shared.tokenizer),
        next: None,
    }
}

/// This step's tokens per running sequence (by index): its next token, or the next chunk of
/// its prompt within the step's prefill budget.
fn plan(state: &Slots, running: &[Running]) -> Vec<(usize, Vec<u32>)> {
    let generating = running.iter().any(|r| r.next.is_some());
    let mut budget = if generating {
        SHARED_CHUNK
    } else {
        PREFILL_CHUNK
    };
    let mut plan = Vec::with_capacity(running.len());
    for (i, r) in running.iter().enumerate() {
        if let Some(token) = r.next {
            plan.push((i, vec![token]));
            continue;
        }
        let done = state.held[r.slot].len();
        let rest = &r.sequence.prompt()[done..];
        let take = rest.len().min(budget);
        if take > 0 {
            budget -= take;
            plan.push((i, rest[..take].to_vec()));
        }
    }
    plan
}

/// Ends the sequences of a pass that failed; their caches hold unknown state now.
fn fail_planned(
    shared: &Shared,
    state: &mut Slots,
    running: &mut Vec<Running>,
    plan: &[(usize, Vec<u32>)],
    error: Error,
) {
    tracing::error!(%error, "a local model's forward pass failed");
    let text = error.to_string();
    // A lone sequence gets the error itself, several its text.
    let mut first = (plan.len() == 1).then_some(error);
    let mut ended = Vec::with_capacity(plan.len());
    for (i, _) in plan {
        state.forget(running[*i].slot);
        let error = first
            .take()
            .unwrap_or_else(|| ErrorKind::Internal(text.clone()).into());
        ended.push((*i, Err(Some(error))));
    }
    retire(shared, state, running, ended);
}

type Ending = (usize, Result<super::types::FinishReason, Option<Error>>);

/// Removes ended sequences (indices into `running`), frees their slots, then tells their
/// callers (the slot is free before a caller can send a follow-up request).
fn retire(shared: &Shared, state: &mut Slots, running: &mut Vec<Running>, mut ended: Vec<Ending>) {
    if ended.is_empty() {
        return;
    }
    ended.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
    let mut done = Vec::with_capacity(ended.len());
    for (i, result) in ended {
        let r = running.swap_remove(i);
        state.release(r.slot);
        done.push((r.sequence, result));
    }
    lock(&shared.queue).busy -= done.len();
    for (sequence, result) in done {
        match result {
            Ok(reason) => sequence.finish(reason),
            Err(Some(error)) => sequence.fail(error),
            Err(None) => {}
        }
    }
}
