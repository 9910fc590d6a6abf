#!/usr/bin/env bash
# Prepares a GPU-machine run of bench/gpu/check.sh, here (no GPU needed): stages Node and the
# prologue into .device/ (as ../shared/device/stage.sh does), builds dist/ (the TypeScript), builds the CUDA
# engine here with OpenBLAS linked in (the GPU machine may have no OpenBLAS; this machine's glibc is
# older than the GPU image's, so the binary runs there) into .device/justgrpo.node, and copies the
# headers a fallback build there needs (node-api-headers, node-addon-api) into .device/include.
#
#   bash bench/gpu/prepare.sh            # then: device run, carry [".device", "dist"],
#                                        #   command "source .device/prologue.sh && bash bench/gpu/check.sh"
# cuBLAS for the build: JUSTGRPO_CUBLAS_ROOT=<dir with include/ and lib/>, else the toolkit's, else a
# nvidia_cublas wheel file on this machine (unpacked to build-cuda-deps/).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
jobs="${JOBS:-2}"

echo "== stage .device (what ../shared/device/stage.sh stages; done here so it also works in a git worktree)"
shared="${JUSTGRPO_SHARED:-$root/../shared}/device"
[ -f "$shared/prologue.sh" ] || { echo "prepare: no $shared/prologue.sh (set JUSTGRPO_SHARED)" >&2; exit 1; }
mkdir -p .device
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qx '/.device/' "$exclude" 2>/dev/null || echo '/.device/' >> "$exclude"
cp "$shared/node-linux-x64.xz" "$shared/prologue.sh" .device/

echo "== dist/ (npm run build:ts)"
npx --no-install tsc -p tsconfig.json

echo "== cuBLAS"
cublas="${JUSTGRPO_CUBLAS_ROOT:-}"
if [ -z "$cublas" ] && [ -f /usr/local/cuda/include/cublas_v2.h ]; then cublas=/usr/local/cuda; fi
if [ -z "$cublas" ]; then
  wheel="$(ls /opt/pypi-more/files/nvidia_cublas-*.whl 2>/dev/null | sort -V | tail -1 || true)"
  [ -n "$wheel" ] || { echo "prepare: no cuBLAS: set JUSTGRPO_CUBLAS_ROOT" >&2; exit 1; }
  mkdir -p build-cuda-deps
  if [ ! -f build-cuda-deps/.from ] || [ "$(cat build-cuda-deps/.from)" != "$wheel" ]; then
    unzip -q -o "$wheel" '*/include/*' '*/lib/libcublas*' -d build-cuda-deps
    echo "$wheel" > build-cuda-deps/.from
  fi
  cublas="$(dirname "$(dirname "$(find "$root/build-cuda-deps" -name cublas_v2.h | head -1)")")"
fi
echo "cuBLAS from $cublas"

echo "== CUDA engine (cmake, sm_80 + sm_90, OpenBLAS static) -> .device/justgrpo.node"
nvcc=/usr/local/cuda/bin/nvcc
[ -x "$nvcc" ] || nvcc="$(command -v nvcc)"
# A fresh configure each time: cached find results (cuBLAS) or another compiler would be stale.
rm -f build-cuda/CMakeCache.txt
cmake -S . -B build-cuda -DJUSTGRPO_CUDA=ON -DJUSTGRPO_OPENBLAS_STATIC=ON -DJUSTGRPO_CUBLAS_ROOT="$cublas" \
  -DCMAKE_JS_INC="$root/node_modules/node-api-headers/include" -DCMAKE_CUDA_COMPILER="$nvcc" >/dev/null
cmake --build build-cuda -j "$jobs"
cp build-cuda/justgrpo.node .device/justgrpo.node
strip --strip-unneeded .device/justgrpo.node

echo "== the packages dist/model.js imports -> .device/node_modules (the GPU machine has no npm registry)"
rm -rf .device/node_modules && mkdir -p .device/node_modules
for pkg in zod @huggingface/jinja @huggingface/tokenizers node-gyp-build; do
  mkdir -p ".device/node_modules/$pkg"
  tar -C "node_modules/$pkg" --exclude='*.d.ts' --exclude='*.d.cts' --exclude='*.d.mts' --exclude='*.map' --exclude='src' -cf - . |
    tar -C ".device/node_modules/$pkg" -xf -
done
# Check that this is all dist/model.js needs: load it from a copy that sees only these packages.
probe="$(mktemp -d "${TMPDIR:-/tmp}/justgrpo-probe.XXXXXX")"
cp -r dist "$probe/dist" && cp -r .device/node_modules "$probe/node_modules" && cp package.json "$probe/"
(cd "$probe" && node -e 'import("./dist/model.js").then(() => console.log("dist/model.js loads with .device/node_modules alone"))')
rm -rf "$probe"

echo "== headers for a fallback build on the GPU machine -> .device/include"
rm -rf .device/include && mkdir -p .device/include
cp -r node_modules/node-api-headers/include .device/include/node-api-headers
cp -r "$(node -p "require('node-addon-api').include_dir")" .device/include/node-addon-api
echo "prepare: .device $(du -sh .device | cut -f1), dist $(du -sh dist | cut -f1); working tree $(git ls-files -z | du -ch --files0-from=- | tail -1 | cut -f1)"
echo 'prepare: run on the GPU machine: carry [".device", "dist"], timeout_s 590,'
echo '  command: source .device/prologue.sh && bash bench/gpu/check.sh'
