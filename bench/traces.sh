#!/usr/bin/env bash
# What OpenTelemetry traces cost (issue 18): one sluice binary run twice side by side in one
# run of bench/pipeline.sh, without traces (`off`) and with `[observability] otlp_endpoint`
# pointed at an OTLP/HTTP sink that accepts every export and discards it (`on`,
# bench/traces.toml), with a bare nginx proxy as the floor; wrk at concurrency 1 and 64. The
# sink is tests' receiver in its `--discard` mode (a Python process of its own: its CPU is not
# sluice's). Results go to bench/results/pipeline-<timestamp>/.
#
# Usage: bench/traces.sh [SLUICE_BINARY] [-- extra gateway-bench.sh args]
#   SLUICE_BINARY: a built release binary (default: cargo build --release -p sluice, then
#   target/release/sluice).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-}
if [ -n "$BIN" ] && [ "$BIN" != "--" ]; then shift; else
  cargo build --release --locked -p sluice
  BIN="$PWD/target/release/sluice"
fi
[ "${1:-}" = "--" ] && shift

python3 crates/sluice-server/tests/python/otlp_receiver.py --discard --port 4318 > /tmp/sluice-otlp-sink.log 2>&1 &
SINK=$!
trap 'kill $SINK 2>/dev/null || true; wait $SINK 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do grep -q '^PORT' /tmp/sluice-otlp-sink.log && break; sleep 0.1; done

bench/pipeline.sh off="$BIN" on="$BIN:bench/traces.toml" -- "$@"
