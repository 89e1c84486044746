#!/usr/bin/env bash
# Batch throughput (issue 16): N chat requests run as one `/v1/batches` batch by sluice,
# against the same N requests sent directly to sluice's `/v1/chat/completions` by a client
# keeping the same number in flight ([batches] concurrency); release build, fake upstream,
# each request asking the fake for DELAY ms of latency (x_fake.delay_ms). Batch time is from
# `batches.create` to `completed` as the batch object reports it (created_at to
# completed_at, whole seconds) and as polled every 20 ms (the figure given). Results go to
# bench/results/batch-<timestamp>.txt.
#
# Usage: bench/batch.sh [N] [CONCURRENCY]   (default 2000 lines, 8 in flight; delays 0 and 20 ms)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
N=${1:-2000}
CONC=${2:-8}
OUT="$ROOT/bench/results/batch-$(date +%Y%m%d-%H%M%S).txt"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
rm -rf "$TARGET"/release/.fingerprint/sluice*
cargo build --release --locked -p sluice --no-default-features -p sluice-testkit --bin sluice --bin fake-upstream >&2
PY=${SLUICE_PYTHON:-$ROOT/target/pyenv/bin/python}
[ -x "$PY" ] || PY=python3
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$TARGET/release/fake-upstream" --addr 127.0.0.1:18281 >"$WORK/fake.log" 2>&1 &
cat >"$WORK/sluice.toml" <<TOML
[server]
listen = "127.0.0.1:18280"
[storage]
data_dir = "$WORK/data"
[batches]
concurrency = $CONC
[[providers]]
name = "fake"
type = "openai"
base_url = "http://127.0.0.1:18281/v1"
[[models]]
name = "m"
provider = "fake"
price = { input = 0.15, output = 0.60 }
TOML
SLUICE_LOG=warn "$TARGET/release/sluice" serve --threads 2 --config "$WORK/sluice.toml" >"$WORK/sluice.log" 2>&1 &
for _ in $(seq 100); do curl -sf http://127.0.0.1:18280/health >/dev/null && break; sleep 0.05; done
{
  echo "# bench/batch.sh $N $CONC  ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(git rev-parse --short HEAD))"
  "$PY" - "$N" "$CONC" <<'PY'
import http.client, json, sys, time, uuid
from concurrent.futures import ThreadPoolExecutor

n, conc = int(sys.argv[1]), int(sys.argv[2])
PORT = 18280

def call(method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    assert r.status == 200, (r.status, data[:300])
    return data

def body(i, delay, tag):
    return {"model": "m", "messages": [{"role": "user", "content": f"{tag} question {i}"}],
            "x_fake": {"delay_ms": delay}}

def direct(delay, tag):
    def one(i):
        c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
        for j in range(i, n, conc):
            c.request("POST", "/v1/chat/completions", body=json.dumps(body(j, delay, tag)),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse(); r.read()
            assert r.status == 200, r.status
        c.close()
    t = time.perf_counter()
    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(one, range(conc)))
    return time.perf_counter() - t

def batch(delay, tag):
    lines = "\n".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": body(i, delay, tag)}) for i in range(n)).encode()
    b = "bench-batch-boundary"
    form = (f"--{b}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n").encode() \
        + lines + f"\r\n--{b}--\r\n".encode()
    f = json.loads(call("POST", "/v1/files", form, {"Content-Type": f"multipart/form-data; boundary={b}"}))
    t = time.perf_counter()
    created = json.loads(call("POST", "/v1/batches", json.dumps(
        {"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
        {"Content-Type": "application/json"}))
    while True:
        got = json.loads(call("GET", f"/v1/batches/{created['id']}"))
        if got["status"] in ("completed", "failed"):
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - t
    assert got["status"] == "completed" and got["request_counts"]["completed"] == n, got
    return elapsed

print(f"{n} chat requests, {conc} in flight, fake upstream; sluice --threads 2, release")
print(f"{'upstream delay':>15} {'direct req/s':>13} {'batch lines/s':>14} {'batch/direct':>13}")
for delay in (0, 20):
    tag = uuid.uuid4().hex  # no two runs share a prompt
    d = direct(delay, "d" + tag)
    bt = batch(delay, "b" + tag)
    print(f"{delay:>12} ms {n / d:>13.0f} {n / bt:>14.0f} {d / bt:>13.2f}")
PY
} | tee "$OUT"
