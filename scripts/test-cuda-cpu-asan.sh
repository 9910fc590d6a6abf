#!/usr/bin/env bash
# npm run test:cuda-cpu:asan: the CUDA-on-CPU tier under AddressSanitizer + UndefinedBehaviorSanitizer.
# Builds the tier with -fsanitize=address,undefined into build-cuda-cpu-asan/ (scripts/build-cuda-cpu.sh
# with JUSTGRPO_CUDA_CPU_SANITIZE=1), then runs test/gpu against it with the sanitizer runtimes
# preloaded into node. Device memory is host memory here, so a kernel that reads or writes past a
# buffer cudaMalloc gave it, or past its shared memory, is reported with the kernel's stack; UBSan
# reports overflow, misaligned access and bad shifts in kernels and in the host code around them.
# Leak checking is off: node and V8 keep memory to their exit (scripts/test-asan.sh covers leaks of
# the CPU engine). Any sanitizer report fails the run. ASan warns once that it "is ignoring requested
# __asan_handle_no_return" and that false positives may follow: HIP-CPU switches between fiber stacks
# it was not told about. No report followed in the runs so far (ops, model and stand-in suites). `npm run test:cuda-cpu:asan -- FILE...` runs
# only those test files.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="$root/build-cuda-cpu-asan"

build_log="$(mktemp "${TMPDIR:-/tmp}/justgrpo-cuda-cpu-asan.XXXXXX")"
trap 'rm -f "$build_log"' EXIT
JUSTGRPO_CUDA_CPU_OUT="$out" JUSTGRPO_CUDA_CPU_SANITIZE=1 bash scripts/build-cuda-cpu.sh | tee "$build_log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "test:cuda-cpu:asan: the sanitized build failed" >&2; exit 1; }
if grep -q '^build:cuda-cpu: skipped' "$build_log"; then
  echo "test:cuda-cpu:asan: skipped (the tier cannot be built here, see above)"
  exit 0
fi

libasan="$(g++ -print-file-name=libasan.so)"
libubsan="$(g++ -print-file-name=libubsan.so)"
[ -f "$libasan" ] && [ -f "$libubsan" ] || { echo "test:cuda-cpu:asan: g++'s libasan/libubsan not found" >&2; exit 1; }
[ -f dist/index.js ] || npx tsc -p tsconfig.json || exit 1

files=("$@")
[ ${#files[@]} -gt 0 ] || files=(test/gpu/tier-selftest.test.ts test/gpu/ops.test.ts test/gpu/backward.test.ts test/gpu/model.test.ts)
log="$out/test.log"
echo "== test/gpu against $out (ASan + UBSan): ${files[*]}"
# --testTimeout: the sanitizers slow the model suite's decoding cases 5-10x, past vitest's 120 s.
# detect_stack_use_after_return=0: HIP-CPU runs each block's threads as fibers on their own stacks,
# which ASan's fake stack does not follow. The sanitized build aborts on the first UBSan report.
JUSTGRPO_PREBUILD="$out" JUSTGRPO_CUDA_CPU_DIR="$out" LD_PRELOAD="$libasan:$libubsan" \
  ASAN_OPTIONS=detect_leaks=0:detect_stack_use_after_return=0:halt_on_error=1:abort_on_error=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  npx --no-install vitest run --testTimeout=900000 "${files[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if ! grep -q "test/gpu runs against the build in JUSTGRPO_PREBUILD=$out" "$log"; then
  echo "test:cuda-cpu:asan: the suites did not run against $out" >&2
  status=1
fi
if grep -qE 'ERROR: AddressSanitizer|runtime error:' "$log"; then
  echo "test:cuda-cpu:asan: sanitizer reports above" >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "test:cuda-cpu:asan: clean" || echo "test:cuda-cpu:asan: FAILED" >&2
exit "$status"
