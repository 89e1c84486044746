#!/bin/bash
# issue 20 rerun, release test binary: batched_decode_speed (16 steps of 1 slot against 16 of
# 8 slots in one pass, alternated, ROUNDS rounds) per file and thread count.
T=${T:-/work/b3x-target}
BIN=${BIN:?the release test binary, target/release/deps/sluice_local-HASH}
for dtype in ${DTYPES:-q4_k_m q4_0}; do
  for threads in ${THREADS:-2 1}; do
    echo "# decode release $dtype threads $threads $(date -u +%H:%M:%S) $(uptime | sed 's/.*load/load/')"
    SLUICE_BENCH_GGUF=$T/bench-gguf/bench-qwen2-494m-$dtype.gguf THREADS=$threads ROUNDS=${ROUNDS:-4} \
      $BIN native::tests::batched_decode_speed --exact --ignored --nocapture 2>&1 | grep -E '^(round|median)'
  done
done
echo "# end $(date -u +%H:%M:%S) $(uptime | sed 's/.*load/load/')"
