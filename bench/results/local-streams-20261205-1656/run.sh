#!/bin/bash
# issue 20: the dev build (debug assertions on, as BENCHMARKS' issue-20 builds) and the same
# with sluice-local's debug assertions off; streams 1 vs 8 alternated, 2 rounds, 2 threads
# The two builds' chat_bench copied to $R/chat_bench-dev and $R/chat_bench-noassert.
R=${R:-target/bench-results}
D=${D:-target/bench-gguf}
dtype=${DTYPE:-q4_0}
for round in 1 2; do
  for bin in dev noassert; do
    for s in 1 8; do
      echo "# round $round $bin $dtype streams $s $(date -u +%H:%M:%S) $(uptime | sed 's/.*load/load/')"
      RAYON_NUM_THREADS=${THREADS:-2} $R/chat_bench-$bin --file $D/bench-qwen2-494m-$dtype.gguf --streams $s --gen 128 --runs ${RUNS:-1}
    done
  done
done
echo "# end $(date -u +%H:%M:%S) $(uptime | sed 's/.*load/load/')"
