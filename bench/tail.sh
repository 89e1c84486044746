#!/usr/bin/env bash
# The tail, the memory and the start (issue 22): the measures independent gateway benchmarks
# publish (onthebench's rules), for sluice, a bare nginx proxy and LiteLLM's proxy, in one run
# against ../shared/bench's fast fake upstream, each gateway pinned to one core (taskset, when
# there is one), the client and the upstream on another:
#   1. latency at one connection and time to first token on fresh connections: every target in
#      turn within each round (direct, sluice, nginx, LiteLLM), nearest-rank percentiles, added
#      latency = the gateway's percentile minus the direct leg's in the same round, median over
#      rounds;
#   2. resident memory: at idle, then with 64, 256, 1,024 and 4,096 keep-alive connections open
#      (idle, then all sending requests back to back; peak sampled every 10 ms), and 1, 5 and
#      10 s after the last ones closed;
#   3. cold start: exec to the first answered chat completion (config: one OpenAI-compatible
#      provider), several runs.
# The client is crates/sluice-testkit/examples/tailbench. Results go to bench/results/tail-<timestamp>/.
#
# Usage: bench/tail.sh [--no-litellm] [--sluice BIN] [--quick]
#   --sluice BIN  the sluice binary to measure (default: target/release/sluice, built without
#                 the local runtime if absent)
#   --quick       1 round, 1 s windows, 200 TTFT samples, connections up to 1,024, 3 cold starts
# Needs ../shared/bench/setup.sh to have run once; installs Debian's nginx-light if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
STATE="${BENCH_STATE:-$HOME/.cache/sluice-bench}"
HARNESS="$ROOT/../shared/bench"
OUT="$ROOT/bench/results/tail-$(date +%Y%m%d-%H%M%S)"
LITELLM=1 QUICK=0 SLUICE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-litellm) LITELLM=0 ;;
    --quick) QUICK=1 ;;
    --sluice) SLUICE="$2"; shift ;;
    *) sed -n 2,21p "$0"; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "$SLUICE" ]; then
  SLUICE="$CARGO_TARGET_DIR/release/sluice"
  [ -x "$SLUICE" ] || cargo build --release --locked -p sluice --no-default-features
fi
cargo build --release --locked -q -p sluice-testkit --example tailbench
BENCH="$CARGO_TARGET_DIR/release/examples/tailbench"
UPSTREAM="$STATE/upstream-target/release/fake-upstream"
[ -x "$UPSTREAM" ] || { echo "run ../shared/bench/setup.sh first" >&2; exit 2; }
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
ulimit -n "$(ulimit -Hn)"

# Ports of our own, so that another benchmark's processes on the usual ones are not measured.
UP=18280 SL=18281 NG=18282 LL=18283 COLD=18284
GW=() CL=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then GW=(taskset -c 1) CL=(taskset -c 0); fi
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { # PORT SECONDS
  for _ in $(seq 1 $(($2 * 10))); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done
  echo "nothing answers on port $1" >&2; exit 1
}
for p in $UP $SL $NG $LL $COLD; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "port $p is taken" >&2; exit 1; fi
done

"${CL[@]}" "$UPSTREAM" --addr "127.0.0.1:$UP" --threads 1 > "$OUT/upstream.log" 2>&1 &
pids+=($!)
sed -e "s|127.0.0.1:18080|127.0.0.1:$UP|" -e "s|^data_dir = .*|data_dir = \"$OUT/sluice-data\"|" \
  bench/sluice-bench.toml > "$OUT/sluice.toml"
SLUICE_LOG=warn "${GW[@]}" "$SLUICE" serve --config "$OUT/sluice.toml" --listen "127.0.0.1:$SL" > "$OUT/sluice.log" 2>&1 &
SLUICE_PID=$!; pids+=("$SLUICE_PID")

nginx_conf() { # PORT DIR
  mkdir -p "$2"
  cat > "$2/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
daemon off;
pid $2/nginx.pid;
error_log $2/error.log;
events { worker_connections 16384; }
http {
  access_log off;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$1;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
CONF
}
nginx_conf $NG "$OUT/nginx"
"${GW[@]}" nginx -c "$OUT/nginx/nginx.conf" -p "$OUT/nginx" > "$OUT/nginx.log" 2>&1 &
NGINX_PID=$!; pids+=("$NGINX_PID")

targets=(--target "direct=127.0.0.1:$UP" --target "sluice=127.0.0.1:$SL@$SLUICE_PID" --target "nginx=127.0.0.1:$NG@$NGINX_PID")
if [ "$LITELLM" = 1 ]; then
  "${GW[@]}" "$HARNESS/litellm/run-litellm.sh" 1 $LL $UP > "$OUT/litellm.log" 2>&1 &
  LITELLM_PID=$!; pids+=("$LITELLM_PID")
  for _ in $(seq 1 120); do curl -s -o /dev/null "http://127.0.0.1:$LL/health/liveliness" && break; sleep 1; done
  targets+=(--target "litellm=127.0.0.1:$LL@$LITELLM_PID")
fi
wait_port $SL 10; wait_port $NG 10

if [ "$QUICK" = 1 ]; then
  lat=(--rounds 1 --window 1 --ttft-samples 200) levels=64,256,1024 runs=3
else
  lat=(--rounds 5 --window 3 --ttft-samples 1000) levels=64,256,1024,4096 runs=20
fi
{
  echo "sluice: $SLUICE ($(git -C "$ROOT" rev-parse --short HEAD)); pinned: ${GW[*]:-no}"
  echo
  echo "## Latency at c=1 and TTFT on fresh connections"
  "${CL[@]}" "$BENCH" latency "${targets[@]/@*/}" --reference nginx "${lat[@]}" 2> "$OUT/latency.log"
  echo
  echo "## Resident memory"
  "${CL[@]}" "$BENCH" memory "${targets[@]:2}" --levels "$levels" 2> "$OUT/memory.log"
  echo
  echo "## Cold start: exec to the first answered chat completion, ms"
  echo "| target | runs | best | median | worst |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  sed -e "s|^listen = .*|listen = \"127.0.0.1:$COLD\"|" -e "s|^data_dir = .*|data_dir = \"$OUT/cold-data\"|" \
    "$OUT/sluice.toml" > "$OUT/cold.toml"
  "${CL[@]}" "$BENCH" coldstart --name sluice --addr "127.0.0.1:$COLD" --runs $runs -- \
    "${GW[@]}" "$SLUICE" serve --config "$OUT/cold.toml" 2>> "$OUT/cold.log"
  nginx_conf $COLD "$OUT/nginx-cold"
  "${CL[@]}" "$BENCH" coldstart --name nginx --addr "127.0.0.1:$COLD" --runs $runs -- \
    "${GW[@]}" nginx -c "$OUT/nginx-cold/nginx.conf" -p "$OUT/nginx-cold" 2>> "$OUT/cold.log"
  if [ "$LITELLM" = 1 ]; then
    "${CL[@]}" "$BENCH" coldstart --name litellm --addr "127.0.0.1:$COLD" --runs 2 -- \
      "${GW[@]}" "$HARNESS/litellm/run-litellm.sh" 1 $COLD $UP 2>> "$OUT/cold.log"
  fi
} | tee "$OUT/table.md"
rm -rf "$OUT/sluice-data" "$OUT/cold-data"
echo "results in $OUT"
