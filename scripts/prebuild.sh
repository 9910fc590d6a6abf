#!/usr/bin/env bash
# Builds the prebuilt CPU binary that `npm pack` ships: prebuilds/linux-x64/justgrpo.glibc.node,
# Node-API (one file serves every Node >= 20), stripped, OpenBLAS linked statically. The glibc tag
# keeps node-gyp-build from offering it on musl (Alpine), which builds from source instead. Then checks it:
# no -march in the compile flags, nothing in `ldd` beyond the C/C++ runtime, no undefined symbols
# other than Node-API and versioned glibc/libstdc++/libgcc ones, and that it loads.
#
# The build runs in a temporary copy of the sources so that build/ (the local build that tests and
# other work use, and that the loader prefers) is left alone.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "prebuild: only linux-x64 is prebuilt; build elsewhere with npm run build:native" >&2; exit 1 ;;
esac

stage="$(mktemp -d "${TMPDIR:-/tmp}/justgrpo-prebuild.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
cp -r binding.gyp package.json native "$stage/"
ln -s "$root/node_modules" "$stage/node_modules"

out="prebuilds/linux-x64"
rm -rf "$out"
echo "== prebuildify (napi, strip, JUSTGRPO_OPENBLAS_STATIC=1) in $stage"
# A global npm config nodedir (e.g. /usr) also reaches node-gyp through npm's environment.
JUSTGRPO_OPENBLAS_STATIC=1 npx --no-install prebuildify --napi --strip --tag-libc --cwd "$stage" --out "$root"
node_file="$out/justgrpo.glibc.node"
[ -f "$node_file" ] || { echo "prebuild: $node_file was not produced" >&2; exit 1; }

fail=0
if grep -rhoE -- '-march=[^ ]+|-mavx[^ ]*|-mfma' "$stage/build" --include='*.mk' --include='*.gypi' 2>/dev/null | grep -v 'z196' | sort -u | grep .; then
  echo "prebuild: the compile flags above tie the binary to a CPU beyond x86-64" >&2; fail=1
fi

echo "== ldd $node_file"
ldd "$node_file"
if ldd "$node_file" | awk '{print $1}' | grep -vE '^(linux-vdso\.so\.1|/lib64/ld-linux-x86-64\.so\.2|lib(c|m|pthread|dl|rt|stdc\+\+|gcc_s)\.so\.[0-9]+)$' | grep .; then
  echo "prebuild: the libraries above would have to be installed on the user's machine" >&2; fail=1
fi

# A shared object may keep undefined symbols that fail only when called (e.g. gfortran's runtime,
# had a LAPACK routine from libopenblas.a been pulled in); allow only what Node and glibc provide.
unknown="$(nm -D --undefined-only "$node_file" | awk '{print $NF}' \
  | grep -vE '^napi_|^node_api_|@(GLIBC|GLIBCXX|CXXABI|GCC)_|^(_ITM_deregisterTMCloneTable|_ITM_registerTMCloneTable|__gmon_start__)$' || true)"
if [ -n "$unknown" ]; then
  echo "prebuild: undefined symbols nothing on the user's machine provides:" >&2; echo "$unknown" >&2; fail=1
fi
glibc="$(objdump -T "$node_file" | grep -oE 'GLIBC_[0-9.]+' | sort -uV | tail -1)"
glibcxx="$(objdump -T "$node_file" | grep -oE 'GLIBCXX_[0-9.]+' | sort -uV | tail -1)"

node -e '
  const m = require(process.argv[1]);
  if (!m.Engine || !m.backends.includes("cpu")) throw new Error("the prebuilt binary exports no CPU engine");
  console.log("loads: backends " + m.backends.join(",") + "; " + m.blas);
' "$root/$node_file" || fail=1

[ "$fail" -eq 0 ] || { rm -rf "$out"; exit 1; }
echo "prebuild: $node_file $(stat -c %s "$node_file") bytes; needs $glibc, $glibcxx"
