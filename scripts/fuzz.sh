#!/usr/bin/env bash
# npm run fuzz [-- SECONDS]: bounded-time fuzzing of everything that reads untrusted bytes.
#  - native (libFuzzer + AddressSanitizer + UndefinedBehaviorSanitizer, coverage-guided):
#    fuzz_tensor_io (tensor_io reads at a header's offsets/dtypes, 16-bit conversions, tensor-entry
#    lookups) and fuzz_batch (packed-batch, row/target, decode-request, decode-option and
#    model-config checks, then the real forward / loss+backward / decode kernels on what they accept);
#  - TypeScript (fast-check, mutation-based): the safetensors header parser, config.json, the
#    tokenizer files, and loadModel on whole mutated model directories.
# Seeds are real files: the reference fixtures and a model the CLI's `init` writes. SECONDS
# (default 180, or FUZZ_SECONDS) is the total, split half native, half TypeScript. The corpus grows
# in build-fuzz/ across runs. Exit status 1 when anything is found; crashing inputs are kept in
# build-fuzz/artifacts/ (native) and printed (TypeScript).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/native-sanitized.sh

total="${1:-${FUZZ_SECONDS:-180}}"
native_each=$(( total / 4 )); [ "$native_each" -lt 5 ] && native_each=5
ts_time=$(( total / 2 )); [ "$ts_time" -lt 5 ] && ts_time=5
out="build-fuzz"
mkdir -p "$out/artifacts"
findings=0
summary=()

if ! find_clang; then
  echo "fuzz: clang++ (with libFuzzer) is not installed and could not be installed; the NATIVE fuzzers did NOT run." >&2
  echo "fuzz: install it with: sudo apt-get install -y clang" >&2
  summary+=("native: NOT RUN (no clang++)")
  native_ok=0
else
  native_ok=1
  echo "== building the native fuzzers with $CLANGXX ($($CLANGXX --version | head -1))"
  flags=(-O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined)
  if ! compile_engine "$out/obj" "${flags[@]}"; then echo "fuzz: compiling the engine failed" >&2; exit 1; fi
  for t in fuzz_tensor_io fuzz_batch; do
    "$CLANGXX" -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
      "native/fuzz/$t.cpp" "${ENGINE_OBJS[@]}" -lopenblas -lpthread -o "$out/$t" || { echo "fuzz: linking $t failed" >&2; exit 1; }
  done
  node scripts/fuzz-seeds.mjs "$out/seeds" || exit 1
fi

if [ "$native_ok" -eq 1 ]; then
  for t in fuzz_tensor_io fuzz_batch; do
    mkdir -p "$out/corpus-$t"
    echo "== $t for ${native_each}s"
    log="$out/$t.log"
    JUSTGRPO_NUM_THREADS=1 UBSAN_OPTIONS=print_stacktrace=1 "$out/$t" -max_total_time="$native_each" -max_len=4096 \
      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/artifacts/$t-" \
      "$out/corpus-$t" "$out/seeds/$t" >"$log" 2>&1
    rc=$?
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
    corpus=$(ls "$out/corpus-$t" | wc -l)
    if [ $rc -ne 0 ]; then
      findings=$((findings + 1))
      echo "fuzz: $t FOUND A PROBLEM (exit $rc); the input is in $out/artifacts/:" >&2
      grep -E 'ERROR|invariant|runtime error|SUMMARY|Test unit written' "$log" | head -20 >&2
      summary+=("$t: ${execs:-?} executions, ${cov:-?}, corpus $corpus, FOUND A PROBLEM (see $log)")
    else
      summary+=("$t: ${execs:-?} executions, ${cov:-?}, corpus $corpus, no findings")
    fi
  done
fi

echo "== TypeScript parsers for ${ts_time}s (fast-check)"
if [ ! -f dist/index.js ]; then npx tsc -p tsconfig.json || exit 1; fi
node scripts/fuzz-ts.mjs "$ts_time" "$out/ts"
rc=$?
[ $rc -ne 0 ] && findings=$((findings + 1))
[ -f "$out/ts/summary.txt" ] && while IFS= read -r line; do summary+=("$line"); done <"$out/ts/summary.txt"

echo
echo "== fuzz summary"
for s in "${summary[@]}"; do echo "  $s"; done
if [ $findings -gt 0 ]; then echo "fuzz: $findings target(s) found problems"; exit 1; fi
[ "$native_ok" -eq 1 ] || { echo "fuzz: no findings in the TypeScript targets; the native targets did not run"; exit 1; }
echo "fuzz: no findings"
