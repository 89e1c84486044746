#!/usr/bin/env bash
# The request pipeline's cost, before and after a change, side by side in one run: two or
# more sluice builds (given as git revisions or binaries) and a bare nginx proxy (the floor),
# interleaved by ../shared/bench's harness at concurrency 1 and 64, with wrk. Each build
# serves bench/sluice-bench.toml with its own data directory. Results go to
# bench/results/pipeline-<timestamp>/.
#
# Usage: bench/pipeline.sh NAME=BUILD[:EXTRA.toml] NAME=BUILD[:EXTRA.toml] [...] [-- extra gateway-bench.sh args]
#   BUILD: a path to a built `sluice` binary, or a git revision (built in a worktree under
#   target/bench-worktrees with the shared target directory, cached by commit).
#   EXTRA.toml: appended to that build's config (e.g. bench/no-spend.toml).
# Needs ../shared/bench/setup.sh to have run once; installs Debian's nginx-light if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
HARNESS="$ROOT/../shared/bench"
OUT="$ROOT/bench/results/pipeline-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
builds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do builds+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#builds[@]} -ge 2 ] || { sed -n 2,10p "$0"; exit 2; }

# A binary for a revision: built once in a worktree, cached by commit.
binary_for() {
  local spec=$1
  if [ -x "$spec" ]; then echo "$spec"; return; fi
  local rev; rev=$(git rev-parse --verify "$spec^{commit}")
  local bin="$ROOT/target/bench-bins/sluice-$rev"
  if [ ! -x "$bin" ]; then
    local wt="$ROOT/target/bench-worktrees/$rev"
    [ -d "$wt" ] || git worktree add --detach "$wt" "$rev" >&2
    # Cargo hashes a workspace member's path relative to the workspace root, so every
    # checkout shares the same artifacts, and their fingerprints name the files of the last
    # checkout built: forget the workspace's own fingerprints (not its dependencies') before
    # and after, or a build of another checkout is taken as fresh.
    rm -rf "$ROOT"/target/release/.fingerprint/sluice*
    (cd "$wt" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release --locked -p sluice >&2)
    mkdir -p "$(dirname "$bin")"
    cp "$ROOT/target/release/sluice" "$bin"
    rm -rf "$ROOT"/target/release/.fingerprint/sluice*
  fi
  echo "$bin"
}
names=() bins=() extras=()
for b in "${builds[@]}"; do
  spec=${b#*=}
  names+=("${b%%=*}")
  bins+=("$(binary_for "${spec%%:*}")")
  if [ "$spec" != "${spec%%:*}" ]; then extras+=("${spec#*:}"); else extras+=(""); fi
  echo "${b%%=*}: $spec (${bins[-1]})" | tee -a "$OUT/builds.txt"
done

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
start() { # NAME BIN PORT EXTRA
  local dir="$OUT/$1-data"
  mkdir -p "$dir"
  sed "s|^data_dir = .*|data_dir = \"$dir\"|" bench/sluice-bench.toml > "$OUT/$1.toml"
  if [ -n "$4" ]; then cat "$4" >> "$OUT/$1.toml"; fi
  SLUICE_LOG=warn "$2" serve --config "$OUT/$1.toml" --listen "127.0.0.1:$3" > "$OUT/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$3/health" && return; sleep 0.1; done
  echo "$1 did not start; see $OUT/$1.log" >&2; exit 1
}
targets=()
for i in "${!names[@]}"; do
  start "${names[$i]}" "${bins[$i]}" $((8081 + i)) "${extras[$i]}"
  targets+=("${names[$i]}=http://127.0.0.1:$((8081 + i))")
done
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
"$HARNESS/nginx/run-nginx.sh" 18090 18080 > "$OUT/nginx.log" 2>&1 &
pids+=($!)
sleep 0.5

"$HARNESS/gateway-bench.sh" --tool wrk --conc 1,64 --warmup 5 --out "$OUT/run" "$@" \
  "${targets[@]}" nginx=http://127.0.0.1:18090 \
  | tee "$OUT/table.txt"
rm -rf "$OUT"/*-data # each build's spend log: hundreds of MB after a run, not results
echo "results in $OUT"
