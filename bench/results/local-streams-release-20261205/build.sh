#!/bin/bash
# issue 20 rerun: release builds of chat_bench, make_bench_gguf and the sluice-local test binary
# (for batched_decode_speed) in a fresh target dir, then the two qwen2-494m files.
set -e
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/b3x-target}
cd "$(dirname "$0")/../../.."
git log --oneline -1
df -h /work
date -u +%H:%M:%S
time cargo build --release -p sluice-local --example chat_bench --example make_bench_gguf
date -u +%H:%M:%S
time cargo test --release -p sluice-local --lib --no-run
date -u +%H:%M:%S
time $CARGO_TARGET_DIR/release/examples/make_bench_gguf $CARGO_TARGET_DIR/bench-gguf --shape qwen2-494m q4_0 q4_k_m
date -u +%H:%M:%S
