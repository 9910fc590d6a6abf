#!/usr/bin/env bash
# Installs the packed tarball into a fresh project the way a user does: `npm install --ignore-scripts`
# (so nothing builds), a clean environment, and a PATH that holds only node, npm, npx, sh and fake
# compilers that fail (and leave a mark) if anything calls them. Then runs the CLI from that project:
# --version, init, info (must report the prebuilt binary), generate and a one-step train. Prints the
# tarball size and the time of each step.
#
# Needs dist/ (npm run build:ts) and prebuilds/ (npm run build:prebuilt). Dependencies come from npm's
# cache when it has them (--prefer-offline), else from the registry.
# JUSTGRPO_INSTALL_TEST_KEEP=1 keeps the temporary directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

die() { echo "install-test: $*" >&2; exit 1; }
compgen -G 'prebuilds/linux-x64/*.node' >/dev/null || die "no prebuilt binary in prebuilds/linux-x64; run npm run build:prebuilt first"
[ -f dist/cli/main.js ] || die "no dist/; run npm run build:ts first"
version="$(node -p 'require("./package.json").version')"

work="$(mktemp -d "${TMPDIR:-/tmp}/justgrpo-install-test.XXXXXX")"
if [ "${JUSTGRPO_INSTALL_TEST_KEEP:-}" = 1 ]; then echo "install-test: keeping $work"; else trap 'rm -rf "$work"' EXIT; fi

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

echo "== npm pack"
tarball="$work/$(npm pack --silent --pack-destination "$work" | tail -1)"
[ -f "$tarball" ] || die "npm pack produced no tarball"
tar -tzf "$tarball" > "$work/contents.txt"
grep -q '^package/prebuilds/linux-x64/.*\.node$' "$work/contents.txt" || die "the tarball has no prebuilt binary"
grep -q '^package/dist/index.d.ts$' "$work/contents.txt" || die "the tarball has no dist/index.d.ts"
if grep -E '^package/(test|build|runs|bench|examples|node_modules|lib)/' "$work/contents.txt"; then die "the tarball holds the files above"; fi
tar_bytes="$(stat -c %s "$tarball")"
unpacked_bytes="$(tar -xzOf "$tarball" | wc -c)"

# A user's machine: node and npm, no compiler. Anything that reaches for one fails and leaves a mark.
bin="$work/bin"
mkdir -p "$bin"
for tool in node npm npx sh; do ln -s "$(command -v "$tool")" "$bin/$tool"; done
for tool in gcc g++ cc c++ clang clang++ make cmake python python3 node-gyp; do
  printf '#!/bin/sh\necho "install-test: %s was called" >&2\ntouch "%s/compiler-called"\nexit 127\n' "$tool" "$work" > "$bin/$tool"
  chmod +x "$bin/$tool"
done
user_env=(env -i HOME="$HOME" PATH="$bin" LANG=C.UTF-8 TMPDIR="${TMPDIR:-/tmp}")
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY npm_config_cache npm_config_registry npm_config_userconfig; do
  [ -n "${!v:-}" ] && user_env+=("$v=${!v}")
done

proj="$work/project"
mkdir -p "$proj"
printf '{ "name": "justgrpo-install-test", "private": true, "type": "module" }\n' > "$proj/package.json"
cd "$proj"

echo "== npm install --ignore-scripts $(basename "$tarball")"
t0="$(now)"
"${user_env[@]}" npm install --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error "$tarball"
t_install="$(elapsed "$t0")"

echo "== npx justgrpo --version"
t0="$(now)"
got="$("${user_env[@]}" npx --no-install justgrpo --version)"
t_version="$(elapsed "$t0")"
[ "$got" = "$version" ] || die "--version printed '$got', expected '$version'"

echo "== npx justgrpo init"
t0="$(now)"
"${user_env[@]}" npx --no-install justgrpo init --out m --d-model 32 --layers 1 --heads 2 --mlp 32
t_init="$(elapsed "$t0")"
[ -f m/config.json ] && [ -f m/model.safetensors ] || die "init wrote no model"

echo "== npx justgrpo info (which binary loaded)"
"${user_env[@]}" npx --no-install justgrpo info --model m --json > info.json
"${user_env[@]}" node -e '
  const e = JSON.parse(require("fs").readFileSync("info.json", "utf8")).engine;
  console.log(`engine: ${e.source} ${e.path} (${e.backends.join(", ")}; ${e.blas})`);
  if (e.source !== "prebuilt" || !e.path.includes("/node_modules/justgrpo/prebuilds/linux-x64/")) {
    console.error("install-test: expected the prebuilt binary from node_modules/justgrpo/prebuilds"); process.exit(1);
  }'

echo "== npm rebuild justgrpo (the install hook, as without --ignore-scripts: must take the prebuilt binary)"
"${user_env[@]}" npm rebuild justgrpo --loglevel=error
[ ! -e "$work/compiler-called" ] || die "the install hook tried to build although the prebuilt binary loads"

echo "== the install hook with no prebuilt binary (must fail and say what a source build needs)"
mv node_modules/justgrpo/prebuilds "$work/prebuilds-aside"
if "${user_env[@]}" npm rebuild justgrpo --loglevel=error > hook.log 2>&1; then die "the install hook passed without a binary"; fi
mv "$work/prebuilds-aside" node_modules/justgrpo/prebuilds
rm -f "$work/compiler-called"
grep -q 'apt-get install -y g++ make python3 libopenblas-dev' hook.log || { cat hook.log >&2; die "the install hook's failure does not say what to install"; }
sed -n '/justgrpo: building the native engine/,/npm rebuild justgrpo/p' hook.log

echo "== npx justgrpo generate"
t0="$(now)"
"${user_env[@]}" npx --no-install justgrpo generate --model m --prompt hi --gen-length 8 --block-length 8 --steps 8 --json > gen.json
t_generate="$(elapsed "$t0")"
"${user_env[@]}" node -e '
  const r = JSON.parse(require("fs").readFileSync("gen.json", "utf8"));
  const c = r.completions[0];
  if (c.tokens.length !== 8 || r.nfe < 1) { console.error("install-test: unexpected generate output", r); process.exit(1); }
  console.log(`generated ${c.tokens.length} tokens in ${r.nfe} forward passes: ${JSON.stringify(c.text)}`);'

# bf16 opens oneDNN (libdnnl.so.2) only when asked for; where the system has it the prebuilt binary
# runs bf16 as is, and where it does not the error says what to install.
echo "== npx justgrpo generate --dtype bf16"
if "${user_env[@]}" npx --no-install justgrpo generate --model m --prompt hi --gen-length 8 --block-length 8 --steps 8 --dtype bf16 --json > gen-bf16.json 2> gen-bf16.err; then
  "${user_env[@]}" node -e '
    const [a, b] = process.argv.slice(1).map((f) => JSON.parse(require("fs").readFileSync(f, "utf8")).completions[0].tokens);
    if (b.length !== 8) { console.error("install-test: unexpected generate output"); process.exit(1); }
    console.log(`8 tokens in bf16, ${JSON.stringify(a) === JSON.stringify(b) ? "the same as" : "different from"} fp32'"'"'s`);' gen.json gen-bf16.json
  "${user_env[@]}" npx --no-install justgrpo info --model m | grep '^cpu bf16'
else
  grep -q 'libdnnl' gen-bf16.err || { cat gen-bf16.err >&2; die "bf16 failed without saying what to install"; }
  echo "bf16 is unavailable here, as the error says: $(cat gen-bf16.err)"
fi

echo "== npx justgrpo train --max-steps 1"
mkdir -p data rewards
printf '%s\n' '{"prompt":"What is 1 + 2?","response":"3"}' '{"prompt":"What is 2 + 2?","response":"4"}' \
  '{"prompt":"What is 3 + 1?","response":"4"}' '{"prompt":"What is 2 + 5?","response":"7"}' > data/tiny.jsonl
cat > rewards/digits.mjs <<'EOF'
export function digits({ completions }) {
  return completions.map((c) => (c.length === 0 ? 0 : [...c].filter((ch) => ch >= '0' && ch <= '9').length / c.length));
}
EOF
cat > grpo.json <<'EOF'
{
  "model": "m",
  "data": { "train": "data/tiny.jsonl" },
  "rewardModule": "rewards/digits.mjs",
  "rewardFunctions": ["digits"],
  "numGenerations": 4,
  "promptsPerStep": 2,
  "maxCompletionLength": 8,
  "maxSteps": 10,
  "seed": 0,
  "outputDir": "run"
}
EOF
t0="$(now)"
"${user_env[@]}" npx --no-install justgrpo train --config grpo.json --max-steps 1 --json > train.jsonl
t_train="$(elapsed "$t0")"
"${user_env[@]}" node -e '
  const lines = require("fs").readFileSync("train.jsonl", "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const done = lines.find((l) => l.event === "done");
  const step = lines.find((l) => l.step === 1 && l.event === undefined);
  if (!done || done.steps !== 1 || !step || !Number.isFinite(step.loss)) { console.error("install-test: unexpected train output", lines); process.exit(1); }
  console.log(`trained 1 step: reward ${step.reward.toFixed(3)}, loss ${step.loss.toExponential(2)}; checkpoint ${done.checkpoint}`);'

[ ! -e "$work/compiler-called" ] || die "a compiler or build tool was called (see above)"

# CPU-feature safety: run generate again on emulated older CPUs, when qemu-user is installed. An
# instruction the CPU lacks kills the process with SIGILL. qemu64 is QEMU's default model (an AMD
# K8 without 3DNow!); Conroe is a Core 2 (SSSE3, no SSE4 or AVX).
if command -v qemu-x86_64 >/dev/null 2>&1; then
  for cpu in qemu64 Conroe; do
    echo "== generate under qemu-x86_64 -cpu $cpu"
    "${user_env[@]}" "$(command -v qemu-x86_64)" -cpu "$cpu" "$(command -v node)" node_modules/justgrpo/dist/cli/main.js \
      generate --model m --prompt hi --gen-length 8 --block-length 8 --steps 8 --json 2> "qemu-$cpu.err" > "qemu-$cpu.json" \
      || { grep -v '^qemu-x86_64: warning' "qemu-$cpu.err" >&2; die "generate failed on an emulated $cpu CPU"; }
    # Other BLAS kernels round differently, so the tokens may differ; only say whether they do.
    "${user_env[@]}" node -e '
      const [a, b] = process.argv.slice(1).map((f) => JSON.parse(require("fs").readFileSync(f, "utf8")).completions[0].tokens);
      if (b.length !== 8) { console.error("install-test: unexpected generate output"); process.exit(1); }
      console.log(`8 tokens, ${JSON.stringify(a) === JSON.stringify(b) ? "the same as" : "different from"} this CPU'"'"'s`);' gen.json "qemu-$cpu.json"
  done
  # bf16 on a CPU with no bf16 instructions (nor AVX): the products widen their inputs for OpenBLAS.
  if [ -s gen-bf16.json ]; then
    echo "== generate --dtype bf16 under qemu-x86_64 -cpu Conroe"
    "${user_env[@]}" "$(command -v qemu-x86_64)" -cpu Conroe "$(command -v node)" node_modules/justgrpo/dist/cli/main.js \
      generate --model m --prompt hi --gen-length 8 --block-length 8 --steps 8 --dtype bf16 --json 2> qemu-bf16.err > qemu-bf16.json \
      || { grep -v '^qemu-x86_64: warning' qemu-bf16.err >&2; die "bf16 generate failed on an emulated Conroe CPU"; }
    "${user_env[@]}" node -e '
      const [a, b] = process.argv.slice(1).map((f) => JSON.parse(require("fs").readFileSync(f, "utf8")).completions[0].tokens);
      if (b.length !== 8) { console.error("install-test: unexpected generate output"); process.exit(1); }
      console.log(`8 tokens, ${JSON.stringify(a) === JSON.stringify(b) ? "the same as" : "different from"} this CPU'"'"'s bf16`);' gen-bf16.json qemu-bf16.json
  fi
else
  echo "== skipped the emulated-CPU runs: qemu-x86_64 is not installed (apt-get install qemu-user)"
fi

cat <<EOF
install-test: ok
  tarball        $(basename "$tarball"): $tar_bytes bytes packed, $unpacked_bytes unpacked, $(wc -l < "$work/contents.txt") files
  npm install    ${t_install}s (--ignore-scripts, no compiler on PATH)
  first runs     --version ${t_version}s, init ${t_init}s, generate ${t_generate}s, train --max-steps 1 ${t_train}s
EOF
