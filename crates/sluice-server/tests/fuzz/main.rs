//! Fuzzing on the stable toolchain: every parser that reads bytes from outside, fed the
//! committed seed corpus (`fuzz/corpus/`, rebuilt by `fuzz/seed.py` from the conformance
//! suite's goldens and transcripts, the config examples and hand-written seeds) and
//! mutations of it by `sluice_testkit::fuzz` (deterministic: a failure found once is found
//! again). No input may panic or hang; what each target must also hold is in its module:
//! request bodies through the in-process pipeline answer errors in their API's shape
//! (`http`), upstream answers whole and streamed translate into well-formed JSON and SSE
//! (`answers`), and through the whole pipeline from a replaying fake upstream (`relayed`),
//! and the stream, multipart and config readers behave whatever the bytes and however they
//! are split into reads (`readers`), and raw bytes on a client connection (`wire`).
//!
//! The suite runs a few thousand inputs per target; a longer run:
//! `SLUICE_FUZZ_ITERS=200000 cargo nextest run -p sluice-server --no-default-features --test fuzz`
//! (`SLUICE_FUZZ_SEED` picks other inputs).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod answers;
mod http;
mod readers;
mod relayed;
mod shape;
mod wire;
