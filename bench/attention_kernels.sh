#!/bin/sh
# Builds bench/attention_kernels.cpp against the working tree's CPU attention kernels (jg::cpu) and a
# base commit's (jg_old::cpu), then runs it with the given arguments (default: check).
#   sh bench/attention_kernels.sh [check | time old|new|both small|tiny|llada REPS]
# BASE (default 3d0728a, the per-key dot/axpy kernels) picks the old kernels; EXTRA adds compiler
# flags (-DJG_NO_MULTIVERSION builds only the baseline x86-64 clones); JUSTGRPO_NUM_THREADS sets the
# thread count as in the addon. Run it under nice on a shared machine.
set -e
cd "$(dirname "$0")/.."
BASE=${BASE:-3d0728a}
OUT=${OUT:-/tmp/jg-attention-bench}
mkdir -p "$OUT/old"
rm -f "$OUT"/*.o
rm -rf "$OUT/old"/*
git archive "$BASE" native/cpu | tar -x -C "$OUT/old" --strip-components=2
CXX=${CXX:-g++}
FLAGS="-std=c++17 -O3 -Wall -Wextra -Wno-unused-parameter -pthread $EXTRA"
for f in attention simd threadpool; do
  $CXX $FLAGS -c native/cpu/$f.cpp -o "$OUT/new_$f.o" &
  $CXX $FLAGS -Djg=jg_old -c "$OUT/old/$f.cpp" -o "$OUT/old_$f.o" &
done
wait
$CXX $FLAGS bench/attention_kernels.cpp "$OUT"/new_*.o "$OUT"/old_*.o -o "$OUT/attention_kernels"
exec "$OUT/attention_kernels" "$@"
