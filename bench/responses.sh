#!/usr/bin/env bash
# /v1/responses through sluice against /v1/chat/completions, side by side in one run: one
# sluice process in front of the testkit's fake upstream (which answers chat completions and
# OpenAI's Responses API natively), driven by wrk in turn with
#   chat             POST /v1/chat/completions (bytes passed through: the baseline)
#   native           POST /v1/responses to a `responses = "native"` provider, store: false
#   native-stored    the same with store: true (the default: a write per response)
#   translated       POST /v1/responses to a chat-only provider (translated both ways), store: false
# and, per scenario, requests per second, wrk's latency percentiles and the gateway's CPU
# time per request (from /proc, the whole process), repeated and interleaved.
#
# Usage: bench/responses.sh [SLUICE_BINARY] [-- --conc 1,64 --duration 10 --repeat 3]
#   SLUICE_BINARY: a built sluice (default: target/release/sluice, built here if absent).
# Results go to bench/results/responses-<timestamp>/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${1:-$TARGET/release/sluice}"
[ "${1:-}" != "" ] && shift
[ "${1:-}" = "--" ] && shift
CONC=1,64 DURATION=10 REPEAT=3
while [ $# -gt 0 ]; do
  case "$1" in
    --conc) CONC=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
OUT="$ROOT/bench/results/responses-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
if [ ! -x "$BIN" ]; then cargo build --release --locked -p sluice; fi
cargo build --release --locked -p sluice-testkit --bin fake-upstream
FAKE="$TARGET/release/fake-upstream"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
UP=18095 PORT=8295
"$FAKE" --addr 127.0.0.1:$UP > "$OUT/upstream.log" 2>&1 & pids+=($!)
cat > "$OUT/sluice.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[storage]
data_dir = "$OUT/data"
[spend]
enabled = false
[[providers]]
name = "native"
type = "openai"
base_url = "http://127.0.0.1:$UP/v1"
responses = "native"
[[providers]]
name = "compat"
type = "openai"
base_url = "http://127.0.0.1:$UP/v1"
[[models]]
name = "native-model"
provider = "native"
[[models]]
name = "compat-model"
provider = "compat"
TOML
SLUICE_LOG=warn "$BIN" serve --config "$OUT/sluice.toml" > "$OUT/sluice.log" 2>&1 & pids+=($!)
GW=$!
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/health" && break; sleep 0.1; done

declare -A PATHS BODIES
PATHS[chat]=/v1/chat/completions
BODIES[chat]='{"model":"compat-model","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
PATHS[native]=/v1/responses
BODIES[native]='{"model":"native-model","input":[{"role":"user","content":"Say hello."}],"max_output_tokens":16,"store":false}'
PATHS[native-stored]=/v1/responses
BODIES[native-stored]='{"model":"native-model","input":[{"role":"user","content":"Say hello."}],"max_output_tokens":16}'
PATHS[translated]=/v1/responses
BODIES[translated]='{"model":"compat-model","input":[{"role":"user","content":"Say hello."}],"max_output_tokens":16,"store":false}'
SCENARIOS=(chat native native-stored translated)

for s in "${SCENARIOS[@]}"; do
  code=$(curl -s -o "$OUT/$s.sample.json" -w '%{http_code}' -H 'content-type: application/json' \
    -d "${BODIES[$s]}" "http://127.0.0.1:$PORT${PATHS[$s]}")
  [ "$code" = 200 ] || { echo "$s answered $code: $(cat "$OUT/$s.sample.json")" >&2; exit 1; }
  cat > "$OUT/$s.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[${BODIES[$s]}]]
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.1f %.1f %.1f\n", summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, latency:percentile(50), latency:percentile(99), summary.duration))
end
LUA
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$GW/stat"; }
HZ=$(getconf CLK_TCK)
echo "scenario conc repeat requests errors p50_us p99_us duration_us cpu_ticks" > "$OUT/raw.txt"
IFS=, read -ra concs <<< "$CONC"
for c in "${concs[@]}"; do
  for s in "${SCENARIOS[@]}"; do  # warm-up
    wrk -t1 -c"$c" -d2s -s "$OUT/$s.lua" "http://127.0.0.1:$PORT${PATHS[$s]}" > /dev/null
  done
  for r in $(seq 1 "$REPEAT"); do
    for s in "${SCENARIOS[@]}"; do
      before=$(cpu_ticks)
      line=$(wrk -t1 -c"$c" -d"${DURATION}s" -s "$OUT/$s.lua" "http://127.0.0.1:$PORT${PATHS[$s]}" | grep '^RESULT')
      after=$(cpu_ticks)
      echo "$s $c $r ${line#RESULT } $((after - before))" >> "$OUT/raw.txt"
    done
  done
done

python3 - "$OUT/raw.txt" "$HZ" <<'PY' | tee "$OUT/table.txt"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
hz = int(sys.argv[2])
cells = {}
for s, c, r, req, err, p50, p99, dur, ticks in rows:
    cells.setdefault((int(c), s), []).append((int(req), int(err), float(p50), float(p99), float(dur), int(ticks)))
print("| conc | scenario | rps | p50 ms | p99 ms | CPU ms/req | CPU / chat's |")
print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
base = {}
for (c, s), runs in sorted(cells.items(), key=lambda kv: (kv[0][0], ["chat", "native", "native-stored", "translated"].index(kv[0][1]))):
    rps = statistics.median(r[0] / (r[4] / 1e6) for r in runs)
    p50 = statistics.median(r[2] for r in runs) / 1000
    p99 = statistics.median(r[3] for r in runs) / 1000
    cpu = statistics.median(r[5] * 1000 / hz / max(r[0], 1) for r in runs)
    errors = sum(r[1] for r in runs)
    if s == "chat":
        base[c] = cpu
    ratio = cpu / base[c] if base.get(c) else float("nan")
    note = f" ({errors} errors)" if errors else ""
    print(f"| {c} | {s}{note} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | {cpu:.4f} | {ratio:.2f} × |")
PY
rm -rf "$OUT/data"
echo "results in $OUT"
