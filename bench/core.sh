#!/usr/bin/env bash
# The gateway-core benchmark: sluice against direct-to-upstream, a bare nginx reverse proxy
# (the floor: what forwarding alone costs on this machine today) and LiteLLM's proxy
# (2 workers, its best setting here), side by side in one run of ../shared/bench's harness,
# at concurrency 1, 16 and 64, non-streaming and streaming; then sluice alone with a 4 KB
# prompt at concurrency 64. Results go to bench/results/core-<timestamp>/.
#
# Usage: bench/core.sh [--no-litellm] [extra gateway-bench.sh args]
# Needs ../shared/bench/setup.sh to have run once; installs Debian's nginx-light if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
HARNESS="$ROOT/../shared/bench"
OUT="$ROOT/bench/results/core-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
LITELLM=1
if [ "${1:-}" = "--no-litellm" ]; then LITELLM=0; shift; fi

cargo build --release --locked -p sluice
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

SLUICE_LOG=warn target/release/sluice serve --config bench/sluice-bench.toml --listen 127.0.0.1:8080 > "$OUT/sluice.log" 2>&1 &
pids+=($!)
targets=(sluice=http://127.0.0.1:8080)
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
"$HARNESS/nginx/run-nginx.sh" 18090 18080 > "$OUT/nginx.log" 2>&1 &
pids+=($!)
targets+=(nginx=http://127.0.0.1:18090)
if [ "$LITELLM" = 1 ]; then
  "$HARNESS/litellm/run-litellm.sh" 2 4002 18080 > "$OUT/litellm.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 120); do
    curl -s -o /dev/null http://127.0.0.1:4002/health/liveliness && break
    sleep 1
  done
  sleep 5
  targets+=(litellm-2w=http://127.0.0.1:4002)
fi
for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:8080/health && break; sleep 0.1; done

warmup=5; [ "$LITELLM" = 1 ] && warmup=30
"$HARNESS/gateway-bench.sh" --warmup "$warmup" --out "$OUT/default" "$@" "${targets[@]}" | tee "$OUT/default.txt"
"$HARNESS/gateway-bench.sh" --warmup 5 --conc 64 --prompt-bytes 4096 --stream-samples 0 --out "$OUT/prompt4k" "$@" sluice=http://127.0.0.1:8080 nginx=http://127.0.0.1:18090 | tee "$OUT/prompt4k.txt"
echo "results in $OUT"
