#!/usr/bin/env bash
# The local runtime benchmark, side by side in one run on this machine:
#   embeddings   all-MiniLM-L6-v2: sentence-transformers (PyTorch) at batch 1 and batch 32,
#                against sluice-local's engine at batch 1, batch 32 and 32 concurrent callers
#                through its dynamic batching (examples/embed_bench.rs), and through a running
#                `sluice serve` over HTTP (1 and 32 concurrent clients, one sentence per request,
#                from Python threads; 32 clients again from wrk, installed from Debian if absent)
#   chat         tokens per second on the same GGUF files (Q4_0, Q8_0, Q4_K_M), sluice-local's
#                native engine and candle against llama.cpp (llama-cpp-python), one sequence,
#                2 threads, alternating
#   pool         memory held against the budget while 4 clients cycle through 6 models of
#                which 3 fit (examples/pool_cycle.rs)
# Results go to bench/results/local-<timestamp>/ (one JSON line per measurement, and
# summary.txt). The Python sides install themselves (bench/local-ref-env.sh: PyTorch, several
# GB; bench/local-llama-env.sh: builds llama.cpp, 10-20 minutes the first time).
#
# Usage: bench/local.sh [seconds per measurement, default 10] [parts: embeddings chat pool]
#        (all three parts by default)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-10}"
shift || true
PARTS="${*:-embeddings chat pool}"
part() { [[ " $PARTS " == *" $1 "* ]]; }
OUT="$PWD/bench/results/local-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
MODEL="$PWD/target/models/all-MiniLM-L6-v2"

cargo build --release --locked -p sluice
cargo build --release --locked -p sluice-local --examples
BIN="$PWD/target/release"

if part embeddings; then
scripts/install-minilm.sh target/models
ST_PY="$(bench/local-ref-env.sh)"
echo "== embeddings" >&2
HF_HUB_OFFLINE=1 "$ST_PY" bench/local_embed_ref.py "$MODEL" --sentences 512 \
  --seconds "$SECONDS_EACH" --corpus-out "$OUT/corpus.json" | tail -n 1 > "$OUT/embed-st.json"
"$BIN/examples/embed_bench" "$MODEL" "$OUT/corpus.json" "$SECONDS_EACH" > "$OUT/embed-sluice.json"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$OUT/data/models"
ln -s "$MODEL" "$OUT/data/models/all-MiniLM-L6-v2"
cat > "$OUT/sluice.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[storage]
data_dir = "$OUT/data"
[spend]
enabled = false
[local]
ollama = false
[[providers]]
name = "local"
type = "local"
TOML
SLUICE_LOG=warn "$BIN/sluice" serve --config "$OUT/sluice.toml" 2> "$OUT/sluice.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
for c in 1 32; do
  python3 bench/local_embed_http.py "http://127.0.0.1:$port" "$OUT/corpus.json" \
    --clients "$c" --seconds "$SECONDS_EACH" > "$OUT/embed-http-c$c.json"
done
# 32 clients again from wrk (C, one thread, bench/local_embed_wrk.lua): the Python clients take
# their own share of the two cores, wrk a few microseconds per request.
command -v wrk >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 || true
if command -v wrk >/dev/null 2>&1; then
  python3 -c 'import json, sys
for s in json.load(open(sys.argv[1])):
    print(json.dumps({"model": "all-MiniLM-L6-v2", "input": [s]}))' "$OUT/corpus.json" > "$OUT/bodies.jsonl"
  BODIES="$OUT/bodies.jsonl" wrk -t1 -c32 -d"${SECONDS_EACH}s" -s bench/local_embed_wrk.lua \
    "http://127.0.0.1:$port" | tail -n 1 > "$OUT/embed-http-wrk-c32.json"
fi
kill $pid; wait $pid 2>/dev/null || true
trap - EXIT
fi

if part chat; then
bench/local-llama-env.sh >&2
LLAMA_PY="$PWD/target/bench-llama-env/bin/python"
echo "== chat" >&2
"$BIN/examples/make_bench_gguf" target/bench-gguf q4_0 q8_0 q4_k_m >&2
for dtype in q4_0 q8_0 q4_k_m; do
  file="$PWD/target/bench-gguf/bench-llama-246m-$dtype.gguf"
  # Three sides, one after the other, twice: sluice's native engine, sluice on candle, llama.cpp.
  for _ in 1 2; do
    RAYON_NUM_THREADS=2 CANDLE_NUM_THREADS=2 "$BIN/examples/chat_bench" --file "$file" \
      --gen 128 --runs 3 --engine native >> "$OUT/chat-$dtype-sluice.json"
    RAYON_NUM_THREADS=2 CANDLE_NUM_THREADS=2 "$BIN/examples/chat_bench" --file "$file" \
      --gen 128 --runs 3 --engine candle >> "$OUT/chat-$dtype-candle.json"
    "$LLAMA_PY" bench/local_chat_ref.py --file "$file" --gen 128 --runs 3 --threads 2 \
      >> "$OUT/chat-$dtype-llama.json"
  done
done
fi

if part pool; then
echo "== pool" >&2
# The gateway runs one thread per sequence when several can run at once (this workload).
CANDLE_NUM_THREADS=1 "$BIN/examples/pool_cycle" 6 3 120 > "$OUT/pool.json"
fi

python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, sys, glob, os
out = sys.argv[1]
j = lambda n: json.load(open(os.path.join(out, n)))
have = lambda n: os.path.exists(os.path.join(out, n))
if have("embed-st.json"):
  st, sl = j("embed-st.json"), j("embed-sluice.json")
  h1, h32 = j("embed-http-c1.json"), j("embed-http-c32.json")
  print("embeddings, sentences/s (all-MiniLM-L6-v2, 512 sentences, mean %.1f tokens)" % st.get("mean_tokens", 0))
  print("  sentence-transformers %s, torch %s: batch 1 %.1f, batch 32 %.1f" % (st.get("sentence_transformers"), st["torch"], st["batch1_sps"], st["batch32_sps"]))
  print("  sluice-local engine: batch 1 %.1f (%.2fx), batch 32 %.1f (%.2fx), 32 concurrent callers %.1f (%.2fx of ST batch 32, mean batch %.1f)" % (
      sl["batch1_sps"], sl["batch1_sps"] / st["batch1_sps"], sl["batch32_sps"], sl["batch32_sps"] / st["batch32_sps"],
      sl["concurrent32_sps"], sl["concurrent32_sps"] / st["batch32_sps"], sl["concurrent32_mean_batch"]))
  print("  sluice over HTTP: 1 client %.1f (%.2fx of ST batch 1, p50 %.2f ms), 32 clients %.1f (%.2fx of ST batch 32, p50 %.2f ms)" % (
      h1["sps"], h1["sps"] / st["batch1_sps"], h1["latency_ms_p50"], h32["sps"], h32["sps"] / st["batch32_sps"], h32["latency_ms_p50"]))
  if have("embed-http-wrk-c32.json"):
    w = j("embed-http-wrk-c32.json")
    print("  sluice over HTTP from wrk: 32 clients %.1f (%.2fx of ST batch 32, p50 %.2f ms, %d errors)" % (
        w["sps"], w["sps"] / st["batch32_sps"], w["latency_ms_p50"], w["errors"]))
  print("  load: sluice-local %.0f ms" % sl["load_ms"])
import statistics
for dtype in ("q4_0", "q8_0", "q4_k_m"):
    if not have("chat-%s-llama.json" % dtype):
        continue
    rows = {}
    for side in ("sluice", "candle", "llama"):
        lines = [json.loads(l) for l in open(os.path.join(out, "chat-%s-%s.json" % (dtype, side))) if l.strip()]
        rows[side] = {k: statistics.median(l[k] for l in lines) for k in ("gen_tps", "prefill_tps", "load_ms")}
    s_, c_, l_ = rows["sluice"], rows["candle"], rows["llama"]
    print("chat %s (246M llama, 1 sequence, 2 threads): gen native %.1f, candle %.1f, llama.cpp %.1f tok/s (native %.2fx, candle %.2fx); prefill native %.1f, candle %.1f, llama.cpp %.1f tok/s (%.2fx, %.2fx); load %.0f / %.0f / %.0f ms" % (
        dtype, s_["gen_tps"], c_["gen_tps"], l_["gen_tps"], s_["gen_tps"] / l_["gen_tps"], c_["gen_tps"] / l_["gen_tps"],
        s_["prefill_tps"], c_["prefill_tps"], l_["prefill_tps"], s_["prefill_tps"] / l_["prefill_tps"], c_["prefill_tps"] / l_["prefill_tps"],
        s_["load_ms"], c_["load_ms"], l_["load_ms"]))
if have("pool.json"):
  p = j("pool.json")
  print("pool: %d models of %.1f MB (estimate %.1f MB), budget %.1f MB; max reserved %.1f MB (%.2f of the budget); peak RSS above baseline %.1f MB (%.2f of the budget); %d loads, load p50 %.1f ms; %d/%d answered, %d refused; latency p50 %.0f ms, p95 %.0f ms" % (
      p["models"], p["model_measured_bytes"] / 1e6, p["model_estimate_bytes"] / 1e6, p["budget_bytes"] / 1e6,
      p["max_reserved_bytes"] / 1e6, p["max_reserved_over_budget"], p["rss_peak_above_baseline_bytes"] / 1e6,
      p["rss_peak_above_baseline_over_budget"], p["loads"], p["load_ms_p50"], p["answered"], p["requests"], p["refused"],
      p["latency_ms_p50"], p["latency_ms_p95"]))
PY
echo "results in $OUT" >&2
