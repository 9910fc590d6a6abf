#!/usr/bin/env bash
# Everything a GPU visit needs, in one go (under 8 minutes on an H200, plus at most 5 for the
# sanitizers and 1 for NCCL): the CUDA engine (the binary prepared by bench/gpu/prepare.sh, else built here with
# cmake), the backend parity tests (bench/gpu/parity.mjs) and compute-sanitizer on them, a 1-GPU
# NCCL smoke test (bench/gpu/nccl.mjs --smoke; several GPUs: bench/gpu/multi.sh), the LLaDA-8B-shaped benchmark of the engine (bench.mjs) and of PyTorch eager
# (torch_bench.py) on the same card, and the table with ratios (report.mjs). Everything it prints
# also goes to $OUT/check.log; parity.txt, nccl.json, engine.json, torch.json and table.txt go to $OUT too.
#
#   source .device/prologue.sh && bash bench/gpu/check.sh      # on the GPU machine (carry .device, dist)
#   bash bench/gpu/check.sh --dry-run                          # here: the same steps on the CPU, tiny shapes
#
# After the parity tests, compute-sanitizer (memcheck, racecheck, synccheck) runs the op cases of the
# same suite: the authority on races, barriers and out-of-bounds accesses in the kernels, which the
# CUDA-on-CPU tier cannot see (warp-level races above all). Its findings go to
# $OUT/sanitizer-<tool>.txt and one line each in the log; they do not stop the check or change its
# exit status (read the `compute-sanitizer ...: FAILED` lines).
#
# Each stage has its own time limit, and a failing stage does not stop the ones after it; the exit
# status is that of the parity tests.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root" || exit 1
dry=0
[ "${1:-}" = "--dry-run" ] && dry=1
OUT="${OUT:-$root/.gpu-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/check.log") 2>&1
t0=$SECONDS
stage() { echo; echo "== [$((SECONDS - t0)) s] $*"; }

stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
echo "node $(node --version 2>/dev/null || echo missing); $(python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null || echo 'no torch')"
[ -f dist/model.js ] || { echo "check: dist/ is missing: run bench/gpu/prepare.sh here and carry dist"; exit 1; }
if [ ! -d node_modules ] && [ -d .device/node_modules ]; then
  cp -r .device/node_modules node_modules  # the few packages dist/model.js imports
fi

stage "cuBLAS"
# PyTorch's images carry cuBLAS as the pip package nvidia-cublas (nvidia/cu13 or nvidia/cublas in
# site-packages); the toolkit's lib64 is the other place.
cublas_lib=""
for d in $(python3 -c 'import nvidia, os; [print(os.path.join(p, s, "lib")) for p in nvidia.__path__ for s in ("cu13", "cublas")]' 2>/dev/null) \
  /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  if ls "$d"/libcublas.so* >/dev/null 2>&1; then cublas_lib="$d"; break; fi
done
if [ -n "$cublas_lib" ]; then
  echo "cuBLAS libraries in $cublas_lib: $(cd "$cublas_lib" && ls libcublas*.so* | tr '\n' ' ')"
  export LD_LIBRARY_PATH="$cublas_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  echo "no cuBLAS library found (the CUDA engine cannot load)"
fi

loads_cuda() {
  node -e 'const m = require(process.argv[1]); if (!m.backends.includes("cuda")) throw new Error("no cuda backend");
    const n = m.cuda.deviceCount(); console.log(`loads: backends ${m.backends}, ${n} device(s) ${m.cuda.unavailableReason()}`);
    if (n === 0) process.exit(3);' "$1"
}

stage "engine"
mkdir -p build/Release
if [ "$dry" -eq 1 ]; then
  [ -f build/Release/justgrpo.node ] || cp .device/justgrpo.node build/Release/justgrpo.node
  echo "dry run: using build/Release/justgrpo.node as it is (no GPU needed)"
elif [ -f .device/justgrpo.node ] && cp .device/justgrpo.node build/Release/justgrpo.node && loads_cuda build/Release/justgrpo.node; then
  echo "using the binary prepared by bench/gpu/prepare.sh"
else
  echo "the prepared binary is missing or does not load here: building with cmake"
  inc="$(dirname "$cublas_lib")/include"
  [ -f "$inc/cublas_v2.h" ] || inc=/usr/local/cuda/include
  nvcc_bin="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
  if ! { timeout 300 cmake -S . -B build-cuda -DJUSTGRPO_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DJUSTGRPO_CUBLAS_ROOT="$(dirname "$inc")" -DCMAKE_CUDA_COMPILER="$nvcc_bin" \
      -DCMAKE_JS_INC="$root/.device/include/node-api-headers" -DNODE_ADDON_API_DIR="$root/.device/include/node-addon-api" &&
    timeout 300 cmake --build build-cuda -j "$(nproc)" &&
    cp build-cuda/justgrpo.node build/Release/justgrpo.node && loads_cuda build/Release/justgrpo.node; }; then
    echo "check: no CUDA engine could be built or loaded here"
  fi
fi
node -e 'import(process.argv[1]).then((b) => console.log(JSON.stringify(b.nativeInfo())))' "$root/dist/native/binding.js"

stage "parity tests (CUDA vs CPU backend)"
timeout 240 node bench/gpu/parity.mjs 2>&1 | tee "$OUT/parity.txt"
parity=${PIPESTATUS[0]}
echo "parity exit status: $parity"
if grep -q '^FAIL attention.*tensor-cores' "$OUT/parity.txt"; then
  # Time the CUDA-core attention instead (correct, slower) rather than a wrong kernel.
  export JUSTGRPO_CUDA_ATTENTION=simple
  echo "the tensor-core attention failed its parity test: the benchmark uses JUSTGRPO_CUDA_ATTENTION=simple"
fi

stage "compute-sanitizer on the parity suite's op cases (memcheck, racecheck, synccheck)"
sanitizer="$(command -v compute-sanitizer || true)"
[ -z "$sanitizer" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && sanitizer=/usr/local/cuda/bin/compute-sanitizer
# The op cases only (each kernel on several shapes, both attention kernels): the model cases run the
# same kernels many times over, which the tools' slowdown (10-100x for racecheck) cannot afford here.
op_filter='^(embedding|rmsnorm|matmul|rope|attention|swiglu|residual|sample|logprob|select)'
if [ "$dry" -eq 1 ]; then
  echo "compute-sanitizer: skipped: dry run (no GPU)"
elif [ -z "$sanitizer" ]; then
  echo "compute-sanitizer: skipped: not found (it comes with the CUDA toolkit: /usr/local/cuda/bin)"
elif ! grep -q '^parity: [0-9][0-9]* CUDA device' "$OUT/parity.txt"; then
  echo "compute-sanitizer: skipped: the parity suite did not run on a GPU (status $parity, see $OUT/parity.txt)"
else
  for tool in memcheck racecheck synccheck; do
    # racecheck: shared-memory hazards between threads (a missing __syncthreads or __syncwarp);
    # synccheck: barriers reached by only part of a block or warp; memcheck: out-of-bounds and
    # misaligned device accesses.
    extra=()
    [ "$tool" = racecheck ] && extra=(--racecheck-report all)
    timeout "${JUSTGRPO_SANITIZER_TIMEOUT:-100}" "$sanitizer" --tool "$tool" "${extra[@]}" --error-exitcode 86 \
      --print-limit 20 node bench/gpu/parity.mjs "$op_filter" >"$OUT/sanitizer-$tool.txt" 2>&1
    st=$?
    summary="$(grep -E '(ERROR|RACECHECK|SYNCCHECK) SUMMARY' "$OUT/sanitizer-$tool.txt" | tail -1)"
    counts="$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$OUT/sanitizer-$tool.txt" | tail -1)"
    case $st in
      0) echo "compute-sanitizer $tool: clean (${summary:-no summary}; parity under the tool: ${counts:-no count})" ;;
      124) echo "compute-sanitizer $tool: DID NOT FINISH in ${JUSTGRPO_SANITIZER_TIMEOUT:-100} s (not a pass; $OUT/sanitizer-$tool.txt)" ;;
      86) echo "compute-sanitizer $tool: FAILED: ${summary:-hazards reported} (see $OUT/sanitizer-$tool.txt); the check goes on" ;;
      *) echo "compute-sanitizer $tool: FAILED: exit status $st (${counts:-no count}; see $OUT/sanitizer-$tool.txt); the check goes on" ;;
    esac
    grep -E '^========= (Invalid|Race|Barrier|Error|Warning)' "$OUT/sanitizer-$tool.txt" | sort | uniq -c | head -5
  done
fi

stage "NCCL smoke (one GPU, one rank, no MPI launcher)"
# NCCL from PyTorch's pip package where the engine's own search would miss it.
source "$root/bench/gpu/nccl-env.sh"
echo "JUSTGRPO_NCCL_LIBRARY=${JUSTGRPO_NCCL_LIBRARY:-(unset: libnccl.so.2 on the library path)}"
# Seconds at most: a 1-rank communicator, three checked collectives, two timed sizes.
timeout 60 node bench/gpu/nccl.mjs --smoke --json "$OUT/nccl.json" || echo "NCCL smoke failed or timed out (status $?)"

# shellcheck disable=SC2054  # the commas are inside option values
if [ "$dry" -eq 1 ]; then
  engine_args=(--backend cpu --preset tiny --batch 2 --seqs 32,64 --prompt 8 --gen 16 --block 8 --steps 2 --warmSteps 1 --trainBatch 2 --trainT 32)
  torch_cmd=(/usr/bin/python3 bench/gpu/torch_bench.py --device cpu --preset tiny --dtype float32 --batch 2 --seqs 32,64 --prompt 8 --gen 16 --steps 2 --train-batch 2 --train-t 32)
else
  engine_args=()
  torch_cmd=(python3 bench/gpu/torch_bench.py)
fi
stage "benchmark: justgrpo engine"
timeout 200 node bench/gpu/bench.mjs "${engine_args[@]}" --json "$OUT/engine.json" || echo "engine benchmark failed or timed out (status $?)"
stage "benchmark: PyTorch eager"
PYTHONUNBUFFERED=1 timeout 200 "${torch_cmd[@]}" --json "$OUT/torch.json" || echo "PyTorch benchmark failed or timed out (status $?)"

stage "report"
node bench/gpu/report.mjs "$OUT/engine.json" "$OUT/torch.json" | tee "$OUT/table.txt"
stage "done: parity status $parity; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit "$parity"
