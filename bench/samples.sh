#!/usr/bin/env bash
# What payload sampling costs (issue 18): one sluice binary run three times side by side in
# one run of bench/pipeline.sh: without sampling (`off`), with `[observability]
# sample_rate = 0.01` (`sampled-1pct`, bench/samples-0.01.toml) and with every request
# sampled (`sampled-all`, bench/samples-1.toml), with a bare nginx proxy as the floor; wrk at
# concurrency 1 and 64. Every 5 s the sampled gateways' sluice_samples_* counters are read
# from /metrics into samples-metrics.txt beside the run's results (how many were kept, how
# many the bounded queue dropped). Results go to bench/results/pipeline-<timestamp>/.
#
# Usage: bench/samples.sh [SLUICE_BINARY] [-- extra gateway-bench.sh args]
#   SLUICE_BINARY: a built release binary (default: cargo build --release -p sluice, then
#   target/release/sluice).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-}
if [ -n "$BIN" ] && [ "$BIN" != "--" ]; then shift; else
  cargo build --release --locked -p sluice
  BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/sluice"
fi
[ "${1:-}" = "--" ] && shift

METRICS=$(mktemp)
# pipeline.sh serves its builds on ports 8081, 8082, ... in the order given.
(
  while sleep 5; do
    for port in 8082 8083; do
      { echo "# $(date -u +%H:%M:%S) :$port"
        curl -s "http://127.0.0.1:$port/metrics" | grep '^sluice_samples_' || true; } >> "$METRICS"
    done
  done
) &
POLL=$!
trap 'kill $POLL 2>/dev/null || true; wait $POLL 2>/dev/null || true' EXIT

bench/pipeline.sh off="$BIN" sampled-1pct="$BIN:bench/samples-0.01.toml" \
  sampled-all="$BIN:bench/samples-1.toml" -- "$@"
OUT=$(ls -d bench/results/pipeline-* | tail -1)
mv "$METRICS" "$OUT/samples-metrics.txt"
# The last counters read before the gateways stopped: :8082 sampled-1pct, :8083 sampled-all.
grep -e '^# ' -e '^sluice' "$OUT/samples-metrics.txt" | grep -B1 '^sluice' | tail -8
