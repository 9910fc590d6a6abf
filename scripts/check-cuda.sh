#!/usr/bin/env bash
# Compile-only check of the CUDA backend (`npm run check:cuda`), for machines with nvcc and no GPU,
# so that a syntax error never waits for a GPU: every native/cuda/*.cu through nvcc for sm_80 and
# sm_90, and the C++ that uses the CUDA runtime (native/cuda/*.cpp, and native/addon/*.cpp with
# JUSTGRPO_CUDA) through the host compiler. matmul.cpp needs cuBLAS's headers: it is
# checked when they are found (JUSTGRPO_CUBLAS_ROOT, the toolkit, a pip-installed nvidia-cublas, or a
# nvidia_cublas wheel file), else skipped with a message. Without nvcc the whole check is skipped.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

nvcc="${NVCC:-$(command -v nvcc || true)}"
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
if [ -z "$nvcc" ]; then
  echo "check:cuda: skipped: no nvcc on this machine (the CUDA backend is compiled only where the CUDA toolkit is)"
  exit 0
fi

# The toolkit's headers (cuda_runtime_api.h), for the host compiler.
cuda_inc=""
for d in "${CUDA_HOME:-/nonexistent}/include" /usr/local/cuda/include \
  "$(dirname "$(dirname "$(readlink -f "$nvcc")")")/include" /usr/include; do
  if [ -f "$d/cuda_runtime_api.h" ]; then cuda_inc="$d"; break; fi
done
[ -n "$cuda_inc" ] || { echo "check:cuda: nvcc is $nvcc but no cuda_runtime_api.h was found" >&2; exit 1; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/justgrpo-check-cuda.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# cuBLAS headers, if any are to be had without a download.
cublas_inc=""
for d in "${JUSTGRPO_CUBLAS_ROOT:-/nonexistent}/include" "$cuda_inc" \
  $(python3 -c 'import nvidia, os; [print(os.path.join(p, s, "include")) for p in nvidia.__path__ for s in ("cu13", "cublas")]' 2>/dev/null || true); do
  if [ -f "$d/cublas_v2.h" ]; then cublas_inc="$d"; break; fi
done
if [ -z "$cublas_inc" ]; then
  wheel="$(ls /opt/pypi-more/files/nvidia_cublas-*.whl 2>/dev/null | sort -V | tail -1 || true)"
  if [ -n "$wheel" ] && command -v unzip >/dev/null 2>&1 && unzip -q -o "$wheel" '*/include/cublas*.h' -d "$tmp/cublas" 2>/dev/null; then
    cublas_inc="$(dirname "$(find "$tmp/cublas" -name cublas_v2.h | head -1)")"
  fi
fi

napi_inc="$root/node_modules/node-api-headers/include"
addon_inc="$(node -p "require('node-addon-api').include_dir" 2>/dev/null || true)"
[ -f "$napi_inc/node_api.h" ] || { echo "check:cuda: node-api-headers missing (npm ci first)" >&2; exit 1; }

echo "check:cuda: $("$nvcc" --version | tail -1)"
echo "check:cuda: nvcc for sm_80 and sm_90:" native/cuda/*.cu
status=0
# Two at a time (the machine has two cores); each prints its errors, and any failure fails the check.
printf '%s\n' native/cuda/*.cu | xargs -P 2 -I{} sh -c \
  '"$0" -std=c++17 -O3 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -c "{}" -o "$1/$(basename "{}").o" || { echo "check:cuda: FAILED {}" >&2; exit 255; }' \
  "$nvcc" "$tmp" || status=1

host=(g++ -std=c++17 -fsyntax-only -Wall -Wextra -Wno-unused-parameter -Werror -DJUSTGRPO_CUDA -DNAPI_VERSION=8
  -DNAPI_CPP_EXCEPTIONS -I"$cuda_inc" -I"$napi_inc" -I"$root/$addon_inc")
# Every host file of the CUDA backend, and the addon as a CUDA build compiles it (backends.cpp and
# testops.cpp name the CUDA backend there).
files=()
for f in native/cuda/*.cpp native/addon/*.cpp; do [ "$f" = native/cuda/matmul.cpp ] || files+=("$f"); done
if [ -n "$cublas_inc" ]; then
  files+=(native/cuda/matmul.cpp)
  host+=(-I"$cublas_inc")
else
  echo "check:cuda: native/cuda/matmul.cpp skipped: no cuBLAS headers here (set JUSTGRPO_CUBLAS_ROOT to check it)"
fi
echo "check:cuda: host compiler:" "${files[@]}"
for f in "${files[@]}"; do
  if ! "${host[@]}" "$f"; then echo "check:cuda: FAILED $f" >&2; status=1; fi
done
if [ "$status" -ne 0 ]; then echo "check:cuda: failed"; exit 1; fi
echo "check:cuda: ok (compiled, not run: running needs an NVIDIA GPU, see bench/gpu/check.sh)"
