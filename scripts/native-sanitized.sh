# Sourced by scripts/fuzz.sh and scripts/test-asan.sh: finds clang++ (installing it with apt-get
# when run as root and missing) and compiles the engine's pure C++ sources (native/common,
# native/cpu; no N-API) into "$objdir" with the given flags, in parallel, skipping up-to-date objects.

find_clang() {
  for c in clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
    if command -v "$c" >/dev/null 2>&1; then CLANGXX="$c"; return 0; fi
  done
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== clang++ not found: apt-get install -y clang"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null 2>&1; }
    command -v clang++ >/dev/null 2>&1 && { CLANGXX=clang++; return 0; }
  fi
  return 1
}

# compile_engine OBJDIR FLAGS...: one object per source of native/common and native/cpu.
compile_engine() {
  local objdir="$1"; shift
  mkdir -p "$objdir"
  local pids=() src obj
  ENGINE_OBJS=()
  for src in native/common/*.cpp native/cpu/*.cpp; do
    obj="$objdir/$(echo "$src" | tr / _).o"
    ENGINE_OBJS+=("$obj")
    if [ "$obj" -nt "$src" ] && [ -z "$(find native/common native/cpu -name '*.h' -newer "$obj" | head -1)" ]; then continue; fi
    "$CLANGXX" -std=c++17 "$@" -c "$src" -o "$obj" &
    pids+=($!)
    # two compiles at a time: the development machine has two cores
    if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}" || return 1; pids=("${pids[@]:1}"); fi
  done
  for p in "${pids[@]}"; do wait "$p" || return 1; done
}
