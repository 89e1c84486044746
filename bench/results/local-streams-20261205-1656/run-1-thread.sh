#!/bin/bash
# Q4_0, 1 thread: streams 1 vs 8 alternated, 2 rounds (build: 4fabb35, sluice-local debug assertions off)
R=${R:-/work/h20-target/bench-results}
D=${D:-/work/h20-target/bench-gguf}
for round in 1 2; do
  for s in 1 8; do
    echo "# round $round noassert4 q4_0 streams $s threads 1 $(date -u +%H:%M:%S) $(uptime | sed 's/.*load/load/')"
    RAYON_NUM_THREADS=1 $R/chat_bench-noassert4 --file $D/bench-qwen2-494m-q4_0.gguf --streams $s --gen 128 --runs 3
  done
done
echo "# end $(date -u +%H:%M:%S) $(uptime | sed 's/.*load/load/')"
