#!/usr/bin/env bash
# The keys benchmark: what authentication, limits and spend logging add to a request, side
# by side in one run of ../shared/bench's harness, at concurrency 1 and 64. Targets:
#   core          sluice without a master key and with the spend log off: the core path
#   keys-embedded a master key, every request with a virtual key that has an rpm, a tpm, a
#                 concurrency limit and a budget (all far above the load), checked and
#                 settled in process; one spend record per request to the SQLite ledger
#   keys-redis    the same with storage.redis_url: every request's limits checked and
#                 settled on Redis (one Lua call per batch of a worker thread's concurrent
#                 admissions and queued settles); spend log in SQLite
#   keys-shared   Redis for the limits and PostgreSQL (storage.database_url) for the keys
#                 and the spend log: how replicas run
#   keys-redis-base  (only with BASE_BIN=path) keys-redis's config on another sluice binary,
#                 e.g. a build of an earlier commit: a before/after in one run
# Every keyed gateway holds the same virtual key (made with the admin API's `key` field),
# which the harness sends to every target. Results go to bench/results/keys-<timestamp>/.
#
# Usage: [SLUICE_BIN=path] [BASE_BIN=path] bench/keys.sh [extra gateway-bench.sh args]
# (SLUICE_BIN: a release binary built already, e.g. with --no-default-features; without it
# the script builds target/release/sluice.)
# Needs ../shared/bench/setup.sh to have run once, Redis at $REDIS_URL (default
# redis://127.0.0.1:6379) and PostgreSQL at $DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
HARNESS="$ROOT/../shared/bench"
OUT="$ROOT/bench/results/keys-$(date +%Y%m%d-%H%M%S)"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
KEY="sk-sluice-bench-0123456789abcdef0123456789abcdef"
MASTER="sk-bench-master"
mkdir -p "$OUT"

BIN="${SLUICE_BIN:-target/release/sluice}"
BASE_BIN="${BASE_BIN:-}"
[ -n "${SLUICE_BIN:-}" ] || cargo build --release --locked -p sluice
pids=()
schema="sluice_bench_$$"
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  psql "$DATABASE_URL" -X -q -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql "$DATABASE_URL" -X -q -c "CREATE SCHEMA $schema"
sep='?'; case "$DATABASE_URL" in *\?*) sep='&';; esac
PG_URL="${DATABASE_URL}${sep}options=-csearch_path%3D$schema"

prefix="sluice-bench-$$:"
config() { # name port server-extra storage-extra tail
  local f="$OUT/$1.toml"
  sed -e "s#^listen = .*#listen = \"127.0.0.1:$2\"\n$3#" \
      -e "s#^data_dir = .*#data_dir = \"/tmp/sluice-bench-$1-$$\"\n$4#" bench/sluice-bench.toml > "$f"
  printf '\n%b\n' "$5" >> "$f"
  echo "$f"
}
start() { # name port config [binary]
  SLUICE_LOG=warn "${4:-$BIN}" serve --config "$3" > "$OUT/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$2/health" && return; sleep 0.1; done
  echo "$1 did not start" >&2; exit 1
}
make_key() { # port
  curl -sf -o /dev/null -X POST "http://127.0.0.1:$1/admin/keys" \
    -H "authorization: Bearer $MASTER" -H 'content-type: application/json' \
    -d "{\"name\": \"bench\", \"key\": \"$KEY\", \"rpm\": 100000000, \"tpm\": 100000000000, \"max_concurrent\": 100000, \"budget_usd\": 1000000000}"
}
keyed="master_key = \"$MASTER\""
start core 8080 "$(config core 8080 '' '' '[spend]\nenabled = false')"
start keys-embedded 8081 "$(config embedded 8081 "$keyed" '' '')"
start keys-redis 8082 "$(config redis 8082 "$keyed" "redis_url = \"$REDIS_URL\"\nredis_prefix = \"$prefix\"" '')"
start keys-shared 8083 "$(config shared 8083 "$keyed" "redis_url = \"$REDIS_URL\"\nredis_prefix = \"${prefix}s:\"\ndatabase_url = \"$PG_URL\"" '')"
ports=(8081 8082 8083)
base=()
if [ -n "$BASE_BIN" ]; then
  start keys-redis-base 8084 "$(config redis-base 8084 "$keyed" "redis_url = \"$REDIS_URL\"\nredis_prefix = \"${prefix}b:\"" '')" "$BASE_BIN"
  ports+=(8084)
  base=(keys-redis-base=http://127.0.0.1:8084)
fi
for port in "${ports[@]}"; do make_key "$port"; done
# Redis's own count of the limiter's script calls and their time (all clients of that Redis:
# use one of its own for exact figures), before and after the run.
scripts() { redis-cli -u "$REDIS_URL" INFO commandstats | tr -d '\r' \
  | awk -F'[:,=]' '/^cmdstat_(evalsha|eval):/ { c += $3; u += $5 } END { print c + 0, u + 0 }'; }
read -r calls0 usec0 < <(scripts)

"$HARNESS/gateway-bench.sh" --tool wrk --warmup 5 --conc 1,64 --key "$KEY" --out "$OUT/run" "$@" \
  core=http://127.0.0.1:8080 keys-embedded=http://127.0.0.1:8081 \
  keys-redis=http://127.0.0.1:8082 keys-shared=http://127.0.0.1:8083 "${base[@]}" | tee "$OUT/table.txt"
for port in "${ports[@]}"; do
  echo "== 127.0.0.1:$port" >> "$OUT/metrics.txt"
  curl -s "http://127.0.0.1:$port/metrics" \
    | grep -E '^sluice_(spend_log|limiter_fallbacks|limiter_settles|limit_refusals|auth_failures)' >> "$OUT/metrics.txt" || true
done
read -r calls1 usec1 < <(scripts)
# The requests the Redis targets answered: their spend records (every one, warm-up included).
answered=0
for port in 8082 8083 ${BASE_BIN:+8084}; do
  n=$(curl -s "http://127.0.0.1:$port/metrics" \
    | awk '/^sluice_spend_log_records_total\{.*result="written"/ { s += $2 } END { print s + 0 }')
  answered=$((answered + n))
done
{
  echo "== redis (keys-redis, keys-shared${BASE_BIN:+, keys-redis-base}): script calls and time during the run"
  echo "script calls $((calls1 - calls0)), usec $((usec1 - usec0)), requests answered $answered"
  if [ "$answered" -gt 0 ]; then
    awk -v c=$((calls1 - calls0)) -v u=$((usec1 - usec0)) -v n="$answered" \
      'BEGIN { printf "calls per request %.3f, redis usec per request %.1f\n", c / n, u / n }'
  fi
} >> "$OUT/metrics.txt"
cat "$OUT/metrics.txt"
echo "results in $OUT"
