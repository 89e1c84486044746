//! Handing the memory of unloaded models back to the operating system.
//!
//! The `sluice` binary runs on mimalloc, which keeps freed memory for a while (its purge delay)
//! before it returns it, to serve the next allocations without a page fault. The gateway's
//! request path wants that. But a model's weights and KV caches are hundreds of megabytes freed
//! at once, and a load that follows an eviction would find the process still holding them on
//! top of the new model: resident memory above the budget. After the pool drops a model, it
//! asks mimalloc to collect: free pages go back to the OS now, not after the delay.
//!
//! Where mimalloc is not the global allocator (tests, a library user's own allocator), the call
//! only walks mimalloc's own empty heap.

// Unsafe: the one FFI call into mimalloc (`mi_collect`).
#![allow(unsafe_code)]

/// `mi_collect(true)`: returns the memory mimalloc holds free (this thread's heap, abandoned
/// heaps, delayed purges) to the OS. Costs a walk of the heap: for unloads, not requests.
pub fn return_freed_memory() {
    // SAFETY: `mi_collect` takes no pointers and touches only mimalloc's own bookkeeping; it is
    // safe to call from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
