#!/bin/bash
# kernel_speed, alternated: each round runs every build at both widths, on the best kernels
# and on AVX2 alone. The builds are the sluice-local test binary of each commit, dev profile,
# debug assertions off:
#   cargo test -p sluice-local --lib --no-run \
#     --config 'profile.dev.package.sluice-local.debug-assertions=false'
#   cp target/debug/deps/sluice_local-<hash> $BINS/<name>
# run 1: before (92d0efb), after (8d54e40, Q5_0 in 4-row tiles), after8 (9801626, 8-row tiles)
# run 2: before, after8, quadfold (1e59415)
# run 3: release builds (cargo test --release ... --no-run), before (92d0efb) and final (e7d9735)
# runs 4, 5: Q5_0 only, best kernels, 8-row tiles (1e59415) against 4-row tiles (e7d9735),
#   release and dev-without-assertions builds, the script run twice
BINS=${BINS:-target/kernel-bins}
cd crates/sluice-local
for round in 1 2 3; do
  for cols in 1024 896; do
    for bin in "$@"; do
      for avx in 0 1; do
        if [ $avx = 1 ]; then export SLUICE_TEST_AVX2_ONLY=1; else unset SLUICE_TEST_AVX2_ONLY; fi
        KERNEL_COLS=$cols KERNEL_TYPES=Q4_0,Q5_0 "../../$BINS/$bin" native::tests::kernel_speed \
          --ignored --nocapture 2>&1 | grep "ns per" \
          | sed "s/^/round=$round cols=$cols bin=$bin avx2only=$avx /"
      done
    done
  done
done
