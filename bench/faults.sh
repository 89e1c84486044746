#!/usr/bin/env bash
# Fault-injection benchmark: a route whose primary fails 50% of requests (in turn a 500, a
# connection reset and a hang) with a healthy fallback, against the same route with a healthy
# primary, side by side in one run of ../shared/bench's harness. Shows that every request is
# answered (errs = 0) and what the failures add to latency once the breaker has opened:
# `faulty-open` has a 10-minute breaker cooldown, so after warm-up its breaker stays open for
# the whole run; `faulty` has the default 30 s cooldown, so its breaker lets a probe through
# every 30 s and, when the probe succeeds, closes until the failures open it again.
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

config() { # $1 port, $2 primary port, $3 breaker cooldown (ms)
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
[routing]
breaker = { cooldown_ms = $3 }
[[routes]]
name = "fake-model"
strategy = "fallback"
targets = ["primary-model", "fallback-model"]
TOML
}
config 8181 18083 30000 > "$OUT/healthy.toml"
config 8182 18082 30000 > "$OUT/faulty.toml"
config 8183 18082 600000 > "$OUT/faulty-open.toml"
for name in healthy faulty faulty-open; do
  SLUICE_LOG=warn target/release/sluice serve --config "$OUT/$name.toml" > "$OUT/sluice-$name.log" 2>&1 & pids+=($!)
done
for port in 8181 8182 8183; do
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done
done

"$HARNESS/gateway-bench.sh" --warmup 5 --conc 1,64 --out "$OUT/run" "$@" \
  healthy=http://127.0.0.1:8181 faulty-open=http://127.0.0.1:8183 faulty=http://127.0.0.1:8182 | tee "$OUT/table.txt"
# sluice's own view: answered requests by status, upstream failures, breaker activity, and the
# latency histogram (which shows how many requests paid for a hang).
for port in 8181 8183 8182; do
  echo "== 127.0.0.1:$port"
  curl -s "http://127.0.0.1:$port/metrics" | grep -E '^sluice_(requests_total|upstream_errors_total|breaker|retries|route_)|^sluice_request_duration_seconds_(bucket|count).*le="(0.01|0.05|0.25|0.5|1|\+Inf)"'
done > "$OUT/metrics.txt" || true
echo "results in $OUT"
