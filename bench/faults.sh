#!/usr/bin/env bash
# Fault-injection benchmark: a route whose primary fails 50% of requests (in turn a 500, a
# connection reset and a hang) with a healthy fallback, against the same route with a healthy
# primary, side by side in one run of ../shared/bench's harness. Shows that every request is
# answered (errs = 0) and what the failures add to latency once the breaker has opened.
# Results go to bench/results/faults-<timestamp>/.
#
# Usage: bench/faults.sh [extra gateway-bench.sh args]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
HARNESS="$ROOT/../shared/bench"
OUT="$ROOT/bench/results/faults-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
cargo build --release --locked -p sluice -p sluice-testkit
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

FAKE=target/release/fake-upstream
$FAKE --addr 127.0.0.1:18082 --fail-rate 0.5 > "$OUT/primary-faulty.log" 2>&1 & pids+=($!)
$FAKE --addr 127.0.0.1:18083 > "$OUT/primary-healthy.log" 2>&1 & pids+=($!)
$FAKE --addr 127.0.0.1:18084 > "$OUT/fallback.log" 2>&1 & pids+=($!)

config() { # $1 port, $2 primary port
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
[storage]
data_dir = "/tmp/sluice-bench-faults"
[[providers]]
name = "primary"
type = "openai"
base_url = "http://127.0.0.1:$2/v1"
timeout_ms = 500
[[providers]]
name = "fallback"
type = "openai"
base_url = "http://127.0.0.1:18084/v1"
[[models]]
name = "primary-model"
provider = "primary"
upstream = "fake-model"
[[models]]
name = "fallback-model"
provider = "fallback"
upstream = "fake-model"
[[routes]]
name = "fake-model"
strategy = "fallback"
targets = ["primary-model", "fallback-model"]
TOML
}
config 8181 18083 > "$OUT/healthy.toml"
config 8182 18082 > "$OUT/faulty.toml"
SLUICE_LOG=warn target/release/sluice serve --config "$OUT/healthy.toml" > "$OUT/sluice-healthy.log" 2>&1 & pids+=($!)
SLUICE_LOG=warn target/release/sluice serve --config "$OUT/faulty.toml" > "$OUT/sluice-faulty.log" 2>&1 & pids+=($!)
for port in 8181 8182; do
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done
done

"$HARNESS/gateway-bench.sh" --warmup 5 --conc 1,64 --out "$OUT/run" "$@" \
  healthy=http://127.0.0.1:8181 faulty=http://127.0.0.1:8182 | tee "$OUT/table.txt"
curl -s http://127.0.0.1:8182/metrics | grep -E '^sluice_(requests_total|upstream_errors_total|breaker|retries|route)' > "$OUT/faulty-metrics.txt" || true
echo "results in $OUT"
