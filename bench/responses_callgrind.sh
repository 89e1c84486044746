#!/usr/bin/env bash
# Instructions per request of /v1/responses against /v1/chat/completions, counted by
# callgrind (reproducible on a shared machine, unlike CPU time): one sluice process under
# `valgrind --tool=callgrind` in front of the testkit's fake upstream, the scenarios of
# bench/responses.sh (chat, native, native-stored, translated) each sent N times one after
# another on one keep-alive connection after a warm-up, the counters zeroed before and
# dumped after each scenario. Prints instructions per request and the ratio to chat's;
# the dumps (callgrind.out.*) stay in the results directory for callgrind_annotate.
#
# Usage: bench/responses_callgrind.sh [SLUICE_BINARY] [-- --requests 2000]
#   SLUICE_BINARY: a built sluice (default: target/release/sluice).
# Results go to bench/results/responses-callgrind-<timestamp>/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${1:-$TARGET/release/sluice}"
[ "${1:-}" != "" ] && shift
[ "${1:-}" = "--" ] && shift
REQUESTS=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) REQUESTS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
OUT="$ROOT/bench/results/responses-callgrind-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
FAKE="$TARGET/release/fake-upstream"
[ -x "$FAKE" ] || cargo build --release --locked -p sluice-testkit --bin fake-upstream

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
UP=18096 PORT=8296
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
SLUICE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" \
  "$BIN" serve --config "$OUT/sluice.toml" > "$OUT/sluice.log" 2>&1 & pids+=($!)
GW=$!
for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$PORT/health" && break; sleep 0.2; done

python3 - "$PORT" "$REQUESTS" "$GW" "$OUT" <<'PY' | tee "$OUT/table.txt"
import glob, http.client, os, re, subprocess, sys
port, n, pid, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
msgs = '[{"role":"user","content":"Say hello."}]'
scenarios = [
    ("chat", "/v1/chat/completions", '{"model":"compat-model","messages":%s,"max_tokens":16}' % msgs),
    ("native", "/v1/responses", '{"model":"native-model","input":%s,"max_output_tokens":16,"store":false}' % msgs),
    ("native-stored", "/v1/responses", '{"model":"native-model","input":%s,"max_output_tokens":16}' % msgs),
    ("translated", "/v1/responses", '{"model":"compat-model","input":%s,"max_output_tokens":16,"store":false}' % msgs),
]
conn = http.client.HTTPConnection("127.0.0.1", port)
def send(path, body, count):
    for _ in range(count):
        conn.request("POST", path, body, {"content-type": "application/json"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, (path, r.status)
def control(*args):
    subprocess.run(["callgrind_control", *args, pid], check=True, stdout=subprocess.DEVNULL)
for _, path, body in scenarios:  # warm-up
    send(path, body, 200)
results = {}
for name, path, body in scenarios:
    control("--zero")
    send(path, body, n)
    before = set(glob.glob(f"{out}/callgrind.out.*"))
    control(f"--dump={name}")
    dumps = sorted(set(glob.glob(f"{out}/callgrind.out.*")) - before, key=os.path.getmtime)
    total = 0
    for d in dumps:  # one dump per thread with --separate-threads, else one
        m = re.search(r"^summary: (\d+)", open(d).read(), re.M) or re.search(r"^totals: (\d+)", open(d).read(), re.M)
        total += int(m.group(1))
    results[name] = total / n
print(f"| scenario | instructions/request | / chat's |  ({n} requests each)")
print("| --- | ---: | ---: |")
for name, _, _ in scenarios:
    print(f"| {name} | {results[name]:,.0f} | {results[name] / results['chat']:.2f} × |")
PY
rm -rf "$OUT/data"
echo "results in $OUT"
