#!/usr/bin/env bash
# Translation benchmark: the same requests through sluice to an OpenAI-compatible upstream and
# to Anthropic-, Gemini- and Ollama-shaped upstreams (the testkit's fake upstream answers all
# four shapes), side by side in one run of ../shared/bench's harness. The difference between
# `openai` and the others is what translation adds per request.
# Results go to bench/results/translation-<timestamp>/.
#
# Usage: bench/translation.sh [extra gateway-bench.sh args]
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESS="$PWD/../shared/bench"
OUT="$PWD/bench/results/translation-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
cargo build --release --locked -p sluice -p sluice-testkit
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

UP=18085
target/release/fake-upstream --addr 127.0.0.1:$UP > "$OUT/upstream.log" 2>&1 & pids+=($!)
port=8280
targets=()
for type in openai anthropic gemini ollama; do
  port=$((port + 1))
  base="http://127.0.0.1:$UP"
  [ "$type" = openai ] && base="$base/v1"
  cat > "$OUT/$type.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[storage]
data_dir = "/tmp/sluice-bench-translation"
[[providers]]
name = "$type"
type = "$type"
base_url = "$base"
[[models]]
name = "fake-model"
provider = "$type"
TOML
  SLUICE_LOG=warn target/release/sluice serve --config "$OUT/$type.toml" > "$OUT/sluice-$type.log" 2>&1 & pids+=($!)
  targets+=("$type=http://127.0.0.1:$port")
done
sleep 1
"$HARNESS/gateway-bench.sh" --upstream-port $UP --warmup 3 --conc 1,64 --out "$OUT/run" "$@" "${targets[@]}" | tee "$OUT/table.txt"
echo "results in $OUT"
