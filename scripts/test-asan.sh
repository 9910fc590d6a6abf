#!/usr/bin/env bash
# npm run test:asan: the engine under AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer.
#  1. native/fuzz/sanitize_main.cpp: the whole C++ path (forward, loss + backward with and without
#     checkpointing, AdamW, every decoder, tensor I/O, the refusals) as one program: leaks checked
#     with no suppressions at all.
#  2. The N-API addon built with -fsanitize=address,undefined in a temporary copy (build/ is left
#     alone), loaded through JUSTGRPO_PREBUILD, running the native test suite (test/native) with the
#     sanitizer runtime preloaded into node. LeakSanitizer runs at each worker's exit with
#     scripts/lsan-node.supp, which suppresses Node/V8/libuv/OpenSSL/ICU/OpenBLAS only. Left out:
#     the four files that mostly start `justgrpo` child processes (cli, sft, crash-safety,
#     resource-faults): each child node under the preloaded runtime takes 30-100 s to start here, and
#     what they run in the engine is what the other files run in-process. Also left out: the one
#     test that asserts a wall-clock bound (an abort within 3 s), which the sanitizers' 5-20x
#     slowdown breaks; test/native/native-misuse.test.ts aborts decodes without a clock.
# Any sanitizer report fails the run. Builds go to build-asan/. `npm run test:asan -- FILE...`
# runs only those test files in part 2.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/native-sanitized.sh
out="$root/build-asan"
mkdir -p "$out"
status=0

if ! find_clang; then
  echo "test:asan: clang++ is not installed and could not be installed (sudo apt-get install -y clang); part 1 did NOT run" >&2
  status=1
else
  echo "== 1. sanitize_main: the engine's C++ path under ASan + UBSan + LSan ($CLANGXX)"
  flags=(-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all)
  if compile_engine "$out/obj" "${flags[@]}" &&
    "$CLANGXX" -std=c++17 "${flags[@]}" native/fuzz/sanitize_main.cpp "${ENGINE_OBJS[@]}" -lopenblas -lpthread -o "$out/sanitize_main"; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "$out/sanitize_main" || { echo "test:asan: sanitize_main FAILED" >&2; status=1; }
  else
    echo "test:asan: building sanitize_main failed" >&2; status=1
  fi
fi

echo "== 2. the addon under ASan + UBSan, running test/native"
stage="$out/addon"
rm -rf "$stage/native"
mkdir -p "$stage"
cp -r binding.gyp package.json native "$stage/"
ln -sfn "$root/node_modules" "$stage/node_modules"
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
if ! (cd "$stage" && CXXFLAGS="$san" CFLAGS="$san" LDFLAGS="-fsanitize=address,undefined" \
    npx --no-install node-gyp rebuild -j 2 >"$out/addon-build.log" 2>&1); then
  echo "test:asan: building the sanitized addon failed (see $out/addon-build.log)" >&2; exit 1
fi
libasan="$(g++ -print-file-name=libasan.so)"
libubsan="$(g++ -print-file-name=libubsan.so)"
[ -f "$libasan" ] || { echo "test:asan: $libasan not found (g++'s libasan)" >&2; exit 1; }
[ -f dist/index.js ] || npx tsc -p tsconfig.json || exit 1
loaded=$(JUSTGRPO_PREBUILD="$stage" LD_PRELOAD="$libasan:$libubsan" ASAN_OPTIONS=detect_leaks=0 \
  node -e "import('./dist/index.js').then((m) => console.log(m.nativeInfo().path))")
case "$loaded" in
  "$stage"/*) echo "   the sanitized addon loads: $loaded" ;;
  *) echo "test:asan: the tests would load $loaded, not the sanitized build in $stage" >&2; exit 1 ;;
esac
# LeakSanitizer must be live in node with these suppressions: a library that leaks 1234 bytes has to be reported.
printf '#include <stdlib.h>\nvoid* volatile jg_keep;\n__attribute__((constructor)) static void jg_leak(void) { jg_keep = malloc(1234); jg_keep = 0; }\n' >"$out/leak-canary.c"
gcc -shared -fPIC -fsanitize=address "$out/leak-canary.c" -o "$out/leak-canary.so" || exit 1
canary=$(LD_PRELOAD="$libasan:$out/leak-canary.so" ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS="suppressions=$root/scripts/lsan-node.supp" \
  node -e 1 2>&1)  # exits non-zero when it reports the leak
if grep -q 'Direct leak of 1234 byte' <<<"$canary"; then
  echo "   LeakSanitizer is live in node (a 1234-byte canary leak is reported through the suppressions)"
else
  echo "test:asan: LeakSanitizer did not report the canary leak; leak checking is not working here" >&2; exit 1
fi
log="$out/test-native.log"
# Node's own allocator interplay: V8 reserves huge virtual ranges, so no RSS or allocation caps;
# the sanitizer report goes to a file per process so a worker's report is never lost.
rm -f "$out"/report.*
JUSTGRPO_PREBUILD="$stage" LD_PRELOAD="$libasan:$libubsan" \
  ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:allocator_may_return_null=1:log_path=$out/report:detect_odr_violation=0" \
  LSAN_OPTIONS="suppressions=$root/scripts/lsan-node.supp:print_suppressions=0" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$out/report" \
  npx vitest run "${@:-test/native}" --pool=forks --testTimeout=900000 --hookTimeout=900000 \
    --exclude test/native/cli.test.ts --exclude test/native/crash-safety.test.ts \
    --exclude test/native/resource-faults.test.ts --exclude test/native/sft.test.ts \
    --testNamePattern '^(?!.*an AbortSignal stops a long decode).*$' 2>&1 | tee "$log" | grep -E 'Test Files|Tests |FAIL|✓|×' 
vitest_status=${PIPESTATUS[0]}
reports=$(ls "$out"/report.* 2>/dev/null | wc -l)
if [ "$reports" -gt 0 ]; then
  echo "test:asan: $reports sanitizer report(s):" >&2
  for r in "$out"/report.*; do echo "--- $r" >&2; head -40 "$r" >&2; done
  status=1
fi
if ! grep -q "JUSTGRPO_PREBUILD\|Test Files" "$log"; then status=1; fi
[ "$vitest_status" -ne 0 ] && { echo "test:asan: test/native failed under the sanitizers (see $log)" >&2; status=1; }
[ $status -eq 0 ] && echo "test:asan: clean (sanitize_main and test/native, no sanitizer reports)"
exit $status
