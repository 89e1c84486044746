#!/usr/bin/env bash
# The response-cache benchmark: cache hits through sluice against the upstream directly and
# against sluice without a cache (the core path), side by side in one run of
# ../shared/bench's harness, at concurrency 1 and 64, non-streaming and streaming (a hit
# replayed as SSE). Targets:
#   core          sluice, no cache: every request goes upstream
#   hit-embedded  [cache] with the embedded store (memory tier in front of SQLite)
#   hit-redis     [cache] with storage.redis_url (memory tier in front of Redis)
#   redis-only    the same with a 1-byte memory tier: every hit is read from Redis
# The harness sends one fixed request, so after the first request every request to a cache
# target is a hit (`nondeterministic = true`, as the body has no temperature).
# Results go to bench/results/cache-<timestamp>/.
#
# Usage: bench/cache.sh [extra gateway-bench.sh args]
# Needs ../shared/bench/setup.sh to have run once, and Redis at $REDIS_URL (default
# redis://127.0.0.1:6379).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
HARNESS="$ROOT/../shared/bench"
OUT="$ROOT/bench/results/cache-$(date +%Y%m%d-%H%M%S)"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
mkdir -p "$OUT"

cargo build --release --locked -p sluice
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

prefix="sluice-bench-$$:"
config() { # name port cache-table storage-extra
  local f="$OUT/$1.toml"
  sed -e "s#^listen = .*#listen = \"127.0.0.1:$2\"#" \
      -e "s#^data_dir = .*#data_dir = \"/tmp/sluice-bench-$1-$$\"\n$4#" bench/sluice-bench.toml > "$f"
  printf '\n[cache]\n%b\n' "$3" >> "$f"
  echo "$f"
}
start() { # name port config
  SLUICE_LOG=warn target/release/sluice serve --config "$3" > "$OUT/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$2/health" && return; sleep 0.1; done
  echo "$1 did not start" >&2; exit 1
}
start core 8080 "$(config core 8080 'enabled = false' '')"
start hit-embedded 8081 "$(config embedded 8081 'enabled = true\nnondeterministic = true' '')"
start hit-redis 8082 "$(config redis 8082 'enabled = true\nnondeterministic = true' "redis_url = \"$REDIS_URL\"\nredis_prefix = \"$prefix\"")"
start redis-only 8083 "$(config redisonly 8083 'enabled = true\nnondeterministic = true\nmemory_bytes = 1' "redis_url = \"$REDIS_URL\"\nredis_prefix = \"$prefix\"")"

"$HARNESS/gateway-bench.sh" --tool wrk --warmup 5 --conc 1,64 --out "$OUT/run" "$@" \
  core=http://127.0.0.1:8080 hit-embedded=http://127.0.0.1:8081 \
  hit-redis=http://127.0.0.1:8082 redis-only=http://127.0.0.1:8083 | tee "$OUT/table.txt"
for port in 8081 8082 8083; do
  echo "== 127.0.0.1:$port" >> "$OUT/metrics.txt"
  curl -s "http://127.0.0.1:$port/metrics" | grep -E '^sluice_cache_(hits|misses|coalesced|store_errors)' >> "$OUT/metrics.txt" || true
done
cat "$OUT/metrics.txt"
echo "results in $OUT"
