#!/usr/bin/env bash
# The 30-minute soak (issue 17): the suite's soak test (crates/sluice/tests/soak.rs: mixed
# traffic from six clients, chat whole and streamed, cache hits, embeddings, a key's rpm
# refusing, clients leaving streams midway, upstream 500s, resets and cut streams) run
# against a release build of sluice for $SOAK_SECS (default 1800) seconds, with the RSS
# tolerance at 5 %: the mean RSS of the last third (minutes 20-30) within 5 % of the mean of
# the second sixth (minutes 5-10), descriptors and sockets not growing. The test harness and
# the fake upstream are the test's (an unoptimised build); the gateway is the release binary.
#
# cargo test, not nextest: nextest ends a test after 10 minutes (.config/nextest.toml).
# Usage: bench/soak.sh            (SOAK_SECS=600 for a shorter run; SLUICE_BIN=PATH to skip the build)
# Results: bench/results/soak-<timestamp>/{samples.csv,minutes.md,test.log}
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="bench/results/soak-$(date +%Y%m%d-%H%M%S)"
SOAK_SECS="${SOAK_SECS:-1800}"
mkdir -p "$OUT"
if [ -z "${SLUICE_BIN:-}" ]; then
  cargo build --release --locked -p sluice --no-default-features
  SLUICE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/sluice"
fi
export SLUICE_BIN
status=0
SLUICE_SOAK_SECS="$SOAK_SECS" SLUICE_SOAK_TOLERANCE=0.05 SLUICE_SOAK_SAMPLES="$PWD/$OUT/samples.csv" \
  cargo test -p sluice --no-default-features --test soak -- --nocapture \
  >"$OUT/test.log" 2>&1 || status=$?
# Per minute: mean and peak RSS, and the mean of its parts (the heap and stacks, file pages,
# shared memory such as SQLite's WAL index), peak descriptors and sockets.
awk -F, 'NR > 1 { m = int($1 / 60); n[m]++; rss[m] += $2; if ($2 > peak[m]) peak[m] = $2;
                  if ($3 > fds[m]) fds[m] = $3; if ($4 > socks[m]) socks[m] = $4;
                  anon[m] += $5; file[m] += $6; shm[m] += $7 }
         END { print "| minute | mean RSS (MiB) | peak RSS (MiB) | anon | file | shmem | peak fds | peak sockets |";
               print "| --- | --- | --- | --- | --- | --- | --- | --- |";
               for (i = 0; i in n; i++)
                 printf "| %d | %.1f | %.1f | %.1f | %.1f | %.2f | %d | %d |\n", i, rss[i] / n[i] / 1024,
                        peak[i] / 1024, anon[i] / n[i] / 1024, file[i] / n[i] / 1024, shm[i] / n[i] / 1024,
                        fds[i], socks[i] }' \
  "$OUT/samples.csv" >"$OUT/minutes.md"
cat "$OUT/minutes.md"
grep -E "requests in|RSS:|fds:|^data:" "$OUT/test.log" || true
echo "results in $OUT (test exit $status)"
exit "$status"
