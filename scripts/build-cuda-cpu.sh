#!/usr/bin/env bash
# npm run build:cuda-cpu: the CUDA-on-CPU test tier. Builds the addon with the CUDA backend compiled
# by g++ (native/cuda's own sources, unchanged, against the HIP CPU Runtime and native/cuda/compat)
# into build-cuda-cpu/build/Release/justgrpo.node, where test/gpu finds it and runs the same parity
# suites a GPU runs. build/ (the CPU engine) is left alone.
#
# Needs ../shared/vendor/hip-cpu with its patches (or JUSTGRPO_VENDOR_DIR naming that vendor/
# directory), libtbb-dev, cmake and g++. Where the vendor copy or libtbb-dev is missing it prints why
# and exits 0 without building: the tier is skipped, and test/gpu says so.
#
# Options (environment): JUSTGRPO_CUDA_CPU_OUT (default build-cuda-cpu), JUSTGRPO_CUDA_CPU_SANITIZE=1
# (ASan + UBSan, used by scripts/test-cuda-cpu-asan.sh), JUSTGRPO_CUDA_CPU_JOBS (default 2).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

out="${JUSTGRPO_CUDA_CPU_OUT:-$root/build-cuda-cpu}"
case "$out" in /*) ;; *) out="$root/$out" ;; esac
vendor="${JUSTGRPO_VENDOR_DIR:-$root/../shared/vendor}"
sanitize="${JUSTGRPO_CUDA_CPU_SANITIZE:-0}"
jobs="${JUSTGRPO_CUDA_CPU_JOBS:-2}"

skip() {
  echo "build:cuda-cpu: skipped: $1"
  exit 0
}
[ -f "$vendor/hip-cpu/include/hip/hip_runtime.h" ] ||
  skip "no HIP-CPU copy at $vendor/hip-cpu (set JUSTGRPO_VENDOR_DIR to the directory holding hip-cpu/ and hip-cpu-patches/)"
[ -f /usr/include/tbb/tbb.h ] || [ -f /usr/include/oneapi/tbb.h ] ||
  skip "libtbb-dev is not installed (HIP-CPU runs kernels through TBB with g++: apt-get install libtbb-dev)"
command -v cmake >/dev/null 2>&1 || skip "cmake is not installed"
napi_inc="$root/node_modules/node-api-headers/include"
[ -f "$napi_inc/node_api.h" ] || { echo "build:cuda-cpu: $napi_inc/node_api.h missing (npm ci first)" >&2; exit 1; }

# A patched copy of HIP-CPU, remade when the vendor copy or its patches change.
mkdir -p "$out"
stamp="$( (cd "$vendor" && find hip-cpu hip-cpu-patches -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)"
if [ "$(cat "$out/hip-cpu/.justgrpo-patched" 2>/dev/null || true)" != "$stamp" ]; then
  rm -rf "$out/hip-cpu" "$out/hip-cpu.tmp"
  cp -r "$vendor/hip-cpu" "$out/hip-cpu.tmp"
  for p in "$vendor"/hip-cpu-patches/*.patch; do
    [ -f "$p" ] || continue
    patch -d "$out/hip-cpu.tmp" -p1 -s --no-backup-if-mismatch <"$p" ||
      { echo "build:cuda-cpu: $(basename "$p") does not apply to $vendor/hip-cpu" >&2; exit 1; }
  done
  echo "$stamp" >"$out/hip-cpu.tmp/.justgrpo-patched"
  mv "$out/hip-cpu.tmp" "$out/hip-cpu"
  echo "build:cuda-cpu: HIP-CPU copied to $out/hip-cpu with $(ls "$vendor"/hip-cpu-patches/*.patch 2>/dev/null | wc -l) patch(es)"
fi

addon_inc="$(node -p "require('node-addon-api').include_dir")"
start=$(date +%s)
cmake -S "$root" -B "$out/cmake" -DCMAKE_BUILD_TYPE=Release -DJUSTGRPO_CUDA_ON_CPU=ON \
  -DJUSTGRPO_SANITIZE="$([ "$sanitize" = 1 ] && echo ON || echo OFF)" \
  -DJUSTGRPO_HIP_CPU_DIR="$out/hip-cpu" -DCMAKE_JS_INC="$napi_inc" -DNODE_ADDON_API_DIR="$root/$addon_inc" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$out/build/Release" >"$out/cmake.log" 2>&1 ||
  { cat "$out/cmake.log" >&2; echo "build:cuda-cpu: cmake configure failed" >&2; exit 1; }
cmake --build "$out/cmake" -j "$jobs" ||
  { echo "build:cuda-cpu: build failed" >&2; exit 1; }
echo "build:cuda-cpu: $out/build/Release/justgrpo.node ($(($(date +%s) - start)) s)"
