#!/bin/bash
# issue 20 rerun, release build: for each file, each thread count, streams 1 then 8 (a pair),
# medians of 3 runs. No pair starts after $CUTOFF (HH:MM UTC).
T=${T:-/work/b3x-target}
D=$T/bench-gguf
CUTOFF=${CUTOFF:-21:12}
for round in ${ROUNDS:-1 2}; do
  for dtype in ${DTYPES:-q4_k_m q4_0}; do
    for threads in ${THREADS:-2 1}; do
      if [[ $(date -u +%H:%M) > $CUTOFF ]]; then echo "# cutoff $(date -u +%H:%M:%S)"; exit 0; fi
      for s in 1 8; do
        echo "# round $round release $dtype threads $threads streams $s $(date -u +%H:%M:%S) $(uptime | sed 's/.*load/load/')"
        RAYON_NUM_THREADS=$threads $T/release/examples/chat_bench --file $D/bench-qwen2-494m-$dtype.gguf --streams $s --gen 128 --runs ${RUNS:-3}
      done
    done
  done
done
echo "# end $(date -u +%H:%M:%S) $(uptime | sed 's/.*load/load/')"
