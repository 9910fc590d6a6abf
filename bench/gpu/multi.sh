#!/usr/bin/env bash
# Data parallelism over NCCL on one machine with N >= 2 GPUs: not part of check.sh (the lent GPU
# machines have one GPU; check.sh runs the 1-GPU NCCL smoke test). Needs mpirun (Open MPI or
# MPICH), NCCL (found as check.sh finds it), and the package with a CUDA engine (npm ci && npm run
# build:cuda && npm run build:ts).
#
#   bash bench/gpu/multi.sh [N]          # N ranks, one per GPU (default: every GPU nvidia-smi lists)
#
# 1. NCCL's all-reduce at 32 MB .. 1 GB on N ranks: time, algbw and busbw = bytes / time * 2 (N - 1) / N
#    (bench/gpu/nccl.mjs), then the same at 2 ranks;
# 2. the same tiny SFT and JustGRPO runs (fp32 on the GPU, 3 steps) with 1 rank and with 2 and N
#    ranks over NCCL (JUSTGRPO_NCCL=1: a fallback to MPI would be an error, not a pass), compared by
#    bench/gpu/compare-runs.mjs: JustGRPO's completions token for token, losses, gradient norms and
#    weights to 1e-5 relative (ranks sum their gradients in another order, and cuBLAS may pick other
#    kernels for other batch shapes: fp32 round-off; a wrong sum is off by order 1).
# Output under $OUT (default .gpu-out/multi); exit status 1 when a comparison fails.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root" || exit 1
OUT="${OUT:-$root/.gpu-out}/multi"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/multi.log") 2>&1

gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
N="${1:-$gpus}"
if ! command -v mpirun >/dev/null; then echo "multi: skipped: no mpirun (apt-get install openmpi-bin)"; exit 0; fi
if [ "${gpus:-0}" -lt 2 ] || [ "$N" -lt 2 ]; then echo "multi: skipped: ${gpus:-0} GPU(s) here; needs 2 or more (the 1-GPU smoke test is in check.sh)"; exit 0; fi
[ "$N" -le "$gpus" ] || { echo "multi: $N ranks asked for but $gpus GPUs here" >&2; exit 1; }
[ -f dist/cli/main.js ] || { echo "multi: dist/ is missing (npm run build:ts)" >&2; exit 1; }

# NCCL from PyTorch's pip package where the engine's own search would miss it.
source "$root/bench/gpu/nccl-env.sh"
export JUSTGRPO_NCCL=1 JUSTGRPO_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
flags=(--bind-to none)
if mpirun --version 2>&1 | grep -q 'Open MPI'; then
  [ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
  for v in JUSTGRPO_NCCL JUSTGRPO_NCCL_LIBRARY JUSTGRPO_NUM_THREADS OPENBLAS_NUM_THREADS LD_LIBRARY_PATH; do
    [ -n "${!v:-}" ] && flags+=(-x "$v")
  done
fi
echo "multi: $N of $gpus GPUs; $(mpirun --version 2>&1 | head -1); JUSTGRPO_NCCL_LIBRARY=${JUSTGRPO_NCCL_LIBRARY:-(library path)}"
nvidia-smi topo -m 2>/dev/null | head -$((N + 2))

echo; echo "== NCCL all-reduce bus bandwidth"
for n in $(printf '%s\n' "$N" 2 | sort -un); do
  timeout 300 mpirun "${flags[@]}" -np "$n" node bench/gpu/nccl.mjs --sizes 32M,64M,128M,256M,512M,1G --iters 20 \
    --json "$OUT/nccl-$n.json" || echo "multi: the bandwidth run on $n ranks failed (status $?)"
done

echo; echo "== 1 rank vs 2..N ranks over NCCL"
runs="$OUT/runs"
rm -rf "$runs" && mkdir -p "$runs"
cp -r examples/data "$runs/data"
model='{"init":{"dModel":64,"nLayers":2,"nHeads":4,"mlpHiddenSize":128,"maxSequenceLength":64,"seed":0,"initStd":0.05}}'
common='"backend":"cuda","dtype":"fp32","adamEpsilon":1e-6,"maxSteps":3,"saveSteps":3,"saveTotalLimit":1,"loggingSteps":1'
# Prompts and examples per step not divisible by the rank count: uneven shards too.
echo "{\"model\":$model,\"data\":{\"train\":\"data/arith-tiny.jsonl\"},\"batchSize\":$((2 * N + 1)),\"gradientAccumulationSteps\":2,\"learningRate\":0.002,\"seed\":2,$common}" >"$runs/sft.json"
echo "{\"model\":$model,\"data\":{\"train\":\"data/arith-tiny.jsonl\"},\"rewardModule\":\"$root/test/helpers/dp-rewards.mjs\",\"rewardFunctions\":[\"digits\"],\"numGenerations\":4,\"promptsPerStep\":$((N + 1)),\"maxCompletionLength\":8,\"temperature\":1.0,\"learningRate\":0.003,\"seed\":1,\"logCompletions\":true,$common}" >"$runs/grpo.json"
status=0
for cmd in sft train; do
  config=$([ "$cmd" = sft ] && echo sft.json || echo grpo.json)
  (cd "$runs" && timeout 300 node "$root/dist/cli/main.js" "$cmd" --config "$config" --out "$cmd-1" >"$cmd-1.log" 2>&1) ||
    { echo "multi: $cmd on 1 rank failed (see $runs/$cmd-1.log)"; status=1; continue; }
  for n in $(printf '%s\n' 2 "$N" | sort -un); do
    if ! (cd "$runs" && timeout 300 mpirun "${flags[@]}" -np "$n" node "$root/dist/cli/main.js" "$cmd" --config "$config" --out "$cmd-$n" >"$cmd-$n.log" 2>&1); then
      echo "multi: $cmd on $n ranks failed (see $runs/$cmd-$n.log)"; tail -5 "$runs/$cmd-$n.log"; status=1; continue
    fi
    grep -h 'Data parallelism' "$runs/$cmd-$n.log" | head -1
    echo "-- $cmd: 1 rank vs $n ranks"
    node bench/gpu/compare-runs.mjs "$runs/$cmd-1" "$runs/$cmd-$n" --tol 1e-5 || status=1
  done
done
echo; echo "multi: done (status $status); files in $OUT"
exit "$status"
