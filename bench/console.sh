#!/usr/bin/env bash
# The console's data calls on a big spend log (issue 18): every call a page of /ui makes,
# timed through a release build of sluice whose ledger holds ROWS records (default ten
# million) spread over the last 30 days, with their daily roll-ups: once in SQLite
# (embedded) and once in PostgreSQL (storage.database_url). Each call is made once to warm
# up, then 5 times; the median and the slowest are reported (curl's time_total, seconds).
#
# Usage: bench/console.sh [ROWS]
# Needs sqlite3, psql and PostgreSQL at $DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test). Results go to bench/results/console-<timestamp>/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
ROWS="${1:-10000000}"
BIN="${SLUICE_BIN:-$ROOT/target/release/sluice}"
DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
OUT="$ROOT/bench/results/console-$(date +%Y%m%d-%H%M%S)"
MASTER="sk-console-bench"
PORT=18191
mkdir -p "$OUT"
[ -x "$BIN" ] || cargo build --release --locked -p sluice --no-default-features

DATA="/tmp/sluice-console-bench-$$"
schema="sluice_console_$$"
pid=""
stop() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; fi; }
cleanup() {
  stop
  rm -rf "$DATA"
  psql "$DATABASE_URL" -X -q -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
}
trap cleanup EXIT
sep='?'; case "$DATABASE_URL" in *\?*) sep='&';; esac
PG_URL="${DATABASE_URL}${sep}options=-csearch_path%3D$schema"

config() { # file [storage extra]
  sed -e "s#^listen = .*#listen = \"127.0.0.1:$PORT\"\nmaster_key = \"$MASTER\"#" \
      -e "s#^data_dir = .*#data_dir = \"$DATA\"\n$2#" bench/sluice-bench.toml > "$1"
}
start() { # config
  SLUICE_LOG=warn "$BIN" serve --config "$1" >> "$OUT/sluice.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/health" && return; sleep 0.1; done
  echo "sluice did not start" >&2; exit 1
}

NOW_MS=$(( $(date +%s) * 1000 ))
SPAN_MS=$(( 30 * 86400000 ))
# The records, as one INSERT ... SELECT over a sequence `i` (SEQ: the database's own):
# arrivals evenly over 30 days in id order, 200 keys, 8 models on 4 providers and one rare
# model (one request in 100,000), 3 routes on half the requests, 2 % 429s and 1 % 502s.
records_sql() { # SEQ
  cat <<SQL
INSERT INTO spend_log (ts_ms, request_id, key_id, key_name, endpoint, route, model, provider,
  status, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,
  reasoning_tokens, cost_nano_usd, latency_ms, ttft_ms, cache, attempts, stream,
  usage_estimated)
SELECT $NOW_MS - $SPAN_MS + (i * $SPAN_MS) / $ROWS, 'req-' || i,
  'key_seed_' || ((i * 7919) % 200), 'key-' || ((i * 7919) % 200), 'chat',
  CASE WHEN i % 2 = 0 THEN 'r' || (i % 3) END,
  CASE WHEN i % 100000 = 7 THEN 'rare-model' ELSE 'model-' || (i % 8) END,
  'provider-' || (i % 4),
  CASE WHEN i % 50 = 0 THEN 429 WHEN i % 100 = 1 THEN 502 ELSE 200 END,
  100 + i % 900, 20 + i % 300, 0, 0, 0, (100 + i % 900) * 150 + (20 + i % 300) * 600,
  i % 2000, NULL, CASE WHEN i % 5 = 0 THEN 'hit' ELSE 'miss' END, 1, $3, $4
FROM $1;
SQL
}
rollups_sql() {
  cat <<SQL
INSERT INTO spend_daily (day, key_id, key_name, model, provider, route, requests, errors,
  prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens,
  cost_nano_usd, latency_ms_sum)
SELECT ts_ms / 86400000, coalesce(key_id, ''), max(coalesce(key_name, '')),
  coalesce(model, ''), coalesce(provider, ''), coalesce(route, ''), count(*),
  sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END), sum(prompt_tokens), sum(completion_tokens),
  sum(cached_tokens), sum(cache_write_tokens), sum(reasoning_tokens), sum(cost_nano_usd),
  sum(latency_ms)
FROM spend_log GROUP BY 1, 2, 4, 5, 6;
SQL
}

make_keys() {
  for k in $(seq 0 199); do
    curl -sf -o /dev/null -X POST "http://127.0.0.1:$PORT/admin/keys" \
      -H "authorization: Bearer $MASTER" -H 'content-type: application/json' \
      -d "{\"name\": \"key-$k\", \"rpm\": 1000, \"budget_usd\": 100}"
  done
}

# One call: a warm-up, then 5 timed; prints "median max".
timed() { # path
  local url="http://127.0.0.1:$PORT$1" t=()
  curl -sf -o /dev/null -H "authorization: Bearer $MASTER" "$url" || { echo "FAILED $1" >&2; echo "- -"; return; }
  for _ in 1 2 3 4 5; do
    t+=("$(curl -s -o /dev/null -w '%{time_total}' -H "authorization: Bearer $MASTER" "$url")")
  done
  printf '%s\n' "${t[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.3f %.3f\n", a[3], a[5]}'
}

# The cursor of page N of a query (following next_cursor from the first page).
cursor_of() { # query pages
  local q="$1" n="$2" c=""
  for _ in $(seq 1 "$n"); do
    c=$(curl -sf -H "authorization: Bearer $MASTER" "http://127.0.0.1:$PORT/admin/requests?$q${c:+&cursor=$c}" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["next_cursor"] or "")')
  done
  echo "$c"
}

measure() { # label
  local today from hour_ago deep
  today=$(date -u +%Y-%m-%d)
  from=$(date -u -d '29 days ago' +%Y-%m-%d)
  hour_ago=$(( NOW_MS - 3600000 ))
  deep=$(cursor_of "limit=50" 20)
  {
    echo "overview: spend a day, 30 days|/admin/spend?by=day&since=30d"
    echo "overview: metrics|/metrics"
    for by in key model provider route; do
      echo "spend: by $by, 30 days|/admin/spend?by=$by&from=$from&to=$today"
    done
    echo "spend: by key, since=7d (the CLI's default, not a console call: the partial first day from the raw log, whole days from the roll-ups)|/admin/spend?by=key&since=7d"
    echo "keys: list (200 keys, spend in window)|/admin/keys"
    echo "routes|/admin/routes"
    echo "cache|/admin/cache"
    echo "local models|/health/detailed"
    echo "requests: newest 50|/admin/requests"
    echo "requests: page 21 (by cursor)|/admin/requests?limit=50&cursor=$deep"
    echo "requests: one key (1 in 200)|/admin/requests?key=key-7"
    echo "requests: errors|/admin/requests?status=errors"
    echo "requests: route r1 and 429|/admin/requests?route=r1&status=429"
    echo "requests: last hour|/admin/requests?from=$hour_ago"
    echo "requests: a rare model (1 in 100,000; bounded search)|/admin/requests?model=rare-model"
    echo "requests: a model never used (bounded search)|/admin/requests?model=none"
  } | while IFS='|' read -r what path; do
    printf '| %s | %s | %s |\n' "$1" "$what" "$(timed "$path" | sed 's/ / | /')"
  done
}

# For scale, the rolling 7 days summed from the raw log alone (the plan sluice used before the
# reports read whole days from the roll-ups), run by the database's own client: a warm-up,
# then 5 timed; prints "median max". CLIENT: a command that reads SQL on stdin. (psql's
# figure is the server's, as sluice's is; the sqlite3 shell's default page cache makes its
# figure several times sluice's own for the same query.)
RAW_WEEK_SQL="SELECT coalesce(nullif(key_name, ''), '-') AS g, count(*), sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END),
  sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), sum(cache_write_tokens),
  sum(reasoning_tokens), sum(cost_nano_usd)
FROM spend_log WHERE ts_ms >= $(( NOW_MS - 7 * 86400000 )) GROUP BY g ORDER BY 9 DESC;"
raw_week() { # CLIENT...
  local t=() t0
  echo "$RAW_WEEK_SQL" | "$@" > /dev/null
  for _ in 1 2 3 4 5; do
    t0=$(date +%s%N)
    echo "$RAW_WEEK_SQL" | "$@" > /dev/null
    t+=("$(( ($(date +%s%N) - t0) / 1000000 ))")
  done
  printf '%s\n' "${t[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.3f | %.3f\n", a[3]/1000, a[5]/1000}'
}

echo "| ledger | call | median s | slowest s |" > "$OUT/results.md"
echo "| --- | --- | ---: | ---: |" >> "$OUT/results.md"

# SQLite: the schema made by sluice, then the records and roll-ups, then the calls.
config "$OUT/sqlite.toml" ""
start "$OUT/sqlite.toml"; stop
t0=$(date +%s)
sqlite3 "$DATA/ledger.sqlite" <<SQL
PRAGMA journal_mode = WAL;
BEGIN;
$(records_sql "(WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $ROWS - 1) SELECT i FROM n) AS seq" "" "i % 2" 0)
$(rollups_sql)
COMMIT;
ANALYZE;
SQL
echo "sqlite: $ROWS records seeded in $(( $(date +%s) - t0 )) s, $(du -h "$DATA/ledger.sqlite" | cut -f1)" | tee -a "$OUT/seed.txt"
start "$OUT/sqlite.toml"
make_keys
measure sqlite | tee -a "$OUT/results.md"
echo "| sqlite | spend: by key, 7 days summed from the raw log alone (the old plan; sqlite3) | $(raw_week sqlite3 "$DATA/ledger.sqlite") |" | tee -a "$OUT/results.md"
stop

# PostgreSQL: the same in a schema of its own.
psql "$DATABASE_URL" -X -q -c "CREATE SCHEMA $schema"
rm -rf "$DATA"
config "$OUT/postgres.toml" "database_url = \"$PG_URL\""
start "$OUT/postgres.toml"; stop
t0=$(date +%s)
psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 <<SQL
SET search_path = $schema;
$(records_sql "generate_series(0::bigint, $ROWS - 1) AS i" "" "(i % 2 = 0)" false)
$(rollups_sql)
VACUUM ANALYZE spend_log;
VACUUM ANALYZE spend_daily;
SQL
echo "postgres: $ROWS records seeded in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/seed.txt"
start "$OUT/postgres.toml"
make_keys
measure postgres | tee -a "$OUT/results.md"
echo "| postgres | spend: by key, 7 days summed from the raw log alone (the old plan; psql) | $(raw_week psql "$PG_URL" -X -q) |" | tee -a "$OUT/results.md"
stop
echo "results in $OUT/results.md"
