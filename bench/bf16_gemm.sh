#!/bin/sh
# Builds and runs bench/bf16_gemm.cpp: the engine's bf16 products against oneDNN's own matmul and
# OpenBLAS's sgemm at one model size's shapes.
#   sh bench/bf16_gemm.sh [tiny | small | llada] [REPS]
# Needs libdnnl-dev and libopenblas-dev. JUSTGRPO_NUM_THREADS sets our pool's threads, OMP_NUM_THREADS
# oneDNN's; run it under nice on a shared machine.
set -e
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/jg-bf16-gemm}
mkdir -p "$OUT"
CXX=${CXX:-g++}
FLAGS="-std=c++17 -O3 -Wall -Wextra -Wno-unused-parameter -pthread -DJUSTGRPO_ONEDNN"
for f in onednn threadpool; do
  $CXX $FLAGS -c native/cpu/$f.cpp -o "$OUT/$f.o" &
done
wait
$CXX $FLAGS bench/bf16_gemm.cpp "$OUT"/*.o -o "$OUT/bf16_gemm" -ldnnl -lopenblas -ldl
exec "$OUT/bf16_gemm" "$@"
