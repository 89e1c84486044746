#!/usr/bin/env bash
# The upload path's throughput and memory (issue 16): multipart audio uploads of 1, 10 and
# 100 MB (10^6 bytes) sent to `/v1/audio/transcriptions`, straight to the fake upstream and
# through sluice (release build), interleaved upload by upload in one run; sluice's resident
# memory at idle, its peak (VmHWM) over the run, and after. Results go to
# bench/results/upload-<timestamp>.txt.
#
# Usage: bench/upload.sh [ROUNDS]   (default 5 rounds per size and target)
# BUILD_FLAGS (e.g. `--no-default-features`: the local runtime is not on the upload path)
# goes to the release build. BASELINE_SLUICE, the path of another sluice binary (an older
# build), adds it as a third target in the same interleaved rounds (port 18182), so the two
# builds are compared side by side under the same load. NO_BUILD=1 uses the release
# binaries already in the target directory as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
ROUNDS=${1:-5}
OUT="$ROOT/bench/results/upload-$(date +%Y%m%d-%H%M%S).txt"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${NO_BUILD:-}" ]; then
  rm -rf "$TARGET"/release/.fingerprint/sluice*
  # shellcheck disable=SC2086 # BUILD_FLAGS is a list of flags
  cargo build --release --locked ${BUILD_FLAGS:-} -p sluice -p sluice-testkit --bin sluice --bin fake-upstream >&2
fi
PY=${SLUICE_PYTHON:-$ROOT/target/pyenv/bin/python}
[ -x "$PY" ] || PY=python3
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$TARGET/release/fake-upstream" --addr 127.0.0.1:18181 >"$WORK/fake.log" 2>&1 &
cat >"$WORK/sluice.toml" <<TOML
[server]
listen = "127.0.0.1:18180"
upload_dir = "$WORK"
[storage]
data_dir = "$WORK/data"
[[providers]]
name = "fake"
type = "openai"
base_url = "http://127.0.0.1:18181/v1"
[[models]]
name = "stt"
provider = "fake"
upstream = "whisper-1"
TOML
SLUICE_LOG=warn "$TARGET/release/sluice" serve --threads 2 --config "$WORK/sluice.toml" >"$WORK/sluice.log" 2>&1 &
SLUICE_PID=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18180/health >/dev/null && break; sleep 0.05; done
BASELINE_PORT=0
if [ -n "${BASELINE_SLUICE:-}" ]; then
  mkdir -p "$WORK/baseline"
  sed -e 's/18180/18182/' -e "s|upload_dir = \"$WORK\"|upload_dir = \"$WORK/baseline\"|" \
    -e "s|$WORK/data|$WORK/baseline/data|" "$WORK/sluice.toml" >"$WORK/baseline.toml"
  SLUICE_LOG=warn "$BASELINE_SLUICE" serve --threads 2 --config "$WORK/baseline.toml" >"$WORK/baseline.log" 2>&1 &
  for _ in $(seq 100); do curl -sf http://127.0.0.1:18182/health >/dev/null && break; sleep 0.05; done
  BASELINE_PORT=18182
fi
{
  echo "# bench/upload.sh $ROUNDS  ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(git rev-parse --short HEAD)${BUILD_FLAGS:+, $BUILD_FLAGS})"
  "$PY" - "$SLUICE_PID" "$ROUNDS" "$BASELINE_PORT" <<'PY'
import http.client, sys, time

pid, rounds, baseline = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
BOUNDARY = "bench-boundary-7d1c"

def kib(field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1])

def body(size):
    audio = (bytes(range(256)) * (size // 256 + 1))[:size]
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nstt\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()
    return head + audio + f"\r\n--{BOUNDARY}--\r\n".encode()

def send(port, payload):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t = time.perf_counter()
    c.request("POST", "/v1/audio/transcriptions", body=payload,
              headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    r = c.getresponse()
    r.read()
    elapsed = time.perf_counter() - t
    c.close()
    assert r.status == 200, r.status
    return elapsed

idle = kib("VmRSS:")
print(f"sluice RSS at idle: {idle / 1024:.1f} MiB")
extra = f" {'baseline MB/s':>14} {'ratio':>6}" if baseline else ""
print(f"{'size':>7} {'direct MB/s':>12} {'sluice MB/s':>12} {'ratio':>6} {'added ms (median)':>18}{extra}")
for size in (1_000_000, 10_000_000, 100_000_000):
    payload = body(size)
    direct, through, before = [], [], []
    for _ in range(rounds):
        direct.append(send(18181, payload))
        through.append(send(18180, payload))
        if baseline:
            before.append(send(baseline, payload))
    med = lambda xs: sorted(xs)[len(xs) // 2]
    d, s = med(direct), med(through)
    row = f"{size // 1_000_000:>5}MB {size / d / 1e6:>12.0f} {size / s / 1e6:>12.0f} {d / s:>6.2f} {1000 * (s - d):>18.1f}"
    if baseline:
        b = med(before)
        row += f" {size / b / 1e6:>14.0f} {d / b:>6.2f}"
    print(row)
peak = kib("VmHWM:")
time.sleep(2)
after = kib("VmRSS:")
print(f"sluice RSS peak over the run (VmHWM): {peak / 1024:.1f} MiB (+{(peak - idle) / 1024:.1f} MiB over idle); 2 s after: {after / 1024:.1f} MiB")
PY
} | tee "$OUT"
echo "results: $OUT" >&2
