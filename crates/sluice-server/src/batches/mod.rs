//! OpenAI's Batch API (`/v1/batches`), run by sluice itself (or forwarded, see `forward`):
//! every line of a batch's input file goes through the whole request pipeline in process,
//! as the key that created the batch, so keys, limits, budgets, the cache, routes with their fallbacks and the spend log
//! (each record with the batch's id) apply to it as to any request, for any model or route,
//! local models included.
//!
//! Lifecycle: `validating` (the input file read, malformed lines recorded as failed) →
//! `in_progress` (lines dispatched, at most `[batches] concurrency` at once, waiting while
//! interactive traffic is above `[batches] yield_above`) → `finalizing` (output and error
//! files written) → `completed`. `cancelling` → `cancelled` and `expired` write what was
//! done. Every ended line is recorded at once in the store, so a restarted gateway resumes
//! a batch where it stopped and never runs a line twice; a stopping gateway finishes the
//! lines in flight (within `server.shutdown_grace_ms`) and records them first.
//!
//! The files: `handle` (what the rest of the gateway holds: the stores, the signals,
//! counters), `api` (the endpoints), `wire` (the JSON), `input` (reading and checking the
//! input file's lines), `line` (one line through the pipeline), `runner` (one batch, start
//! to end), `output` (the output and error files), `executor` (the background task that
//! finds batches to run, holds their leases and stops them at shutdown), `forward` (a batch
//! forwarded to a provider's own Batch API when every line's model is on one that has it:
//! uploaded, polled, its results collected and charged at the batch price), `start` (which
//! of the two ways a batch goes), `fault` (a test hook that crashes the gateway between a
//! line's charge and its result).

pub mod api;
pub mod executor;
mod fault;
mod forward;
pub mod handle;
mod input;
mod line;
mod output;
mod runner;
mod start;
mod wire;

pub use handle::Batches;
