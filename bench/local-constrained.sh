#!/usr/bin/env bash
# Constrained decoding's cost per generated token, sluice-local against llama.cpp in one run on
# the same GGUF file (default SmolLM2-135M-Instruct Q4_1), the same prompt and JSON schema
# (constrained_bench's, handed to llama.cpp by `--print-setup`), greedy, one sequence, 2 threads:
#   sluice     crates/sluice-local/examples/constrained_bench.rs: decode step unconstrained and
#              constrained, and the constraint alone (mask + take the token)
#   llama.cpp  bench/local_constrained_ref.py (llama-cpp-python): decode step without and with
#              its grammar sampler (LlamaGrammar.from_json_schema), and the sampler alone
# The two alternate, --rounds times each. Results go to bench/results/constrained-<timestamp>/
# (one JSON line per run, and summary.txt with each engine's constrained/unconstrained ratio).
#
# Usage: bench/local-constrained.sh [rounds, default 2] [gguf file] [schema: objects (default) or
#        patterned (strings with patterns and formats; constrained_bench --schema)]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-2}"
FILE="${2:-$PWD/target/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
SCHEMA="${3:-objects}"
OUT="$PWD/bench/results/constrained-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/examples/constrained_bench"
cargo build --release --locked -p sluice-local --example constrained_bench
bench/local-llama-env.sh >&2
PY="${BENCH_LLAMA_ENV:-$PWD/target/bench-llama-env}/bin/python"

"$BIN" --print-setup --schema "$SCHEMA" > "$OUT/setup.json"
{ uptime; nproc; } > "$OUT/machine.txt"
for round in $(seq "$ROUNDS"); do
  echo "== round $round: sluice" >&2
  "$BIN" --file "$FILE" --runs 3 --schema "$SCHEMA" >> "$OUT/sluice.json"
  echo "== round $round: llama.cpp" >&2
  "$PY" bench/local_constrained_ref.py --file "$FILE" --setup "$OUT/setup.json" --runs 3 --threads 2 \
    >> "$OUT/llama-cpp.json"
done
uptime >> "$OUT/machine.txt"

python3 - "$OUT" > "$OUT/summary.txt" <<'PY'
import json, sys
out = sys.argv[1]
rows = lambda name: [json.loads(l) for l in open(f"{out}/{name}") if l.strip()]
print("engine     free step ms  constrained step ms  step ratio  constraint us/token  share of free step  tokens  valid")
for r in rows("sluice.json"):
    ratio = r["constrained_step_ms"] / r["free_step_ms"]
    print(f"sluice     {r['free_step_ms']:12.2f}  {r['constrained_step_ms']:19.2f}  {ratio:10.3f}  "
          f"{r['mask_us_per_token']:19.1f}  {r['mask_share_of_step']:18.4f}  {r['constrained_tokens']:6}  {r['valid']}")
for r in rows("llama-cpp.json"):
    print(f"llama.cpp  {r['free_step_ms']:12.2f}  {r['constrained_step_ms']:19.2f}  {r['step_ratio']:10.3f}  "
          f"{r['grammar_us_per_token']:19.1f}  {r['grammar_share_of_step']:18.4f}  {r['constrained_tokens']:6}  {r['parses']}")
PY
cat "$OUT/summary.txt"
echo "results in $OUT" >&2
