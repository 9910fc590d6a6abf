#!/bin/sh
# Rebuilds the shipped demo model from random initialisation with `justgrpo sft` and checks that the
# weights are bit-identical to the shipped ones. Usage: sh reproduce.sh [OUT_DIR]
# (from a checkout: sh models/arith-demo/recipe/reproduce.sh; run where `npx justgrpo` resolves).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-runs/arith-demo-sft}
steps=$(node -e "process.stdout.write(String(JSON.parse(require('fs').readFileSync('$here/sft.json','utf8')).maxSteps))")
npx justgrpo sft --config "$here/sft.json" --out "$out"
if cmp "$out/checkpoint-$steps/model.safetensors" "$here/../model.safetensors"; then
  echo "identical: $out/checkpoint-$steps/model.safetensors == $here/../model.safetensors"
else
  echo "DIFFERENT: $out/checkpoint-$steps/model.safetensors differs from the shipped weights" >&2
  exit 1
fi
