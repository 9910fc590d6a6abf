#!/usr/bin/env node
// npm's install hook. Uses, in node-gyp-build's order, a local build (build/Release) or the prebuilt
// binary for this platform (prebuilds/<platform>-<arch>) when one loads; otherwise builds the engine
// from source with node-gyp, and when that fails says what a source build needs.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const target = `${process.platform}-${process.arch}`;
// npm warns that it will stop passing --build-from-source on; JUSTGRPO_BUILD_FROM_SOURCE=1 stays.
const fromSource = process.env.JUSTGRPO_BUILD_FROM_SOURCE === '1' || process.env.npm_config_build_from_source === 'true';

let why = 'a source build was asked for';
if (!fromSource) {
  try {
    require(require('node-gyp-build').resolve(root));
    process.exit(0);
  } catch (err) {
    why = String(err?.message ?? err).split('\n')[0];
    console.error(`justgrpo: no native engine for ${target} loads (${why}); building it from source with node-gyp.`);
  }
}

// node-gyp: the project's own (a checkout), else the one npm bundles, else whatever is on PATH.
let command = 'node-gyp';
let args = ['rebuild'];
try {
  const gypPkg = require.resolve('node-gyp/package.json');
  const bin = require(gypPkg).bin;
  args = [path.join(path.dirname(gypPkg), typeof bin === 'string' ? bin : bin['node-gyp']), 'rebuild'];
  command = process.execPath;
} catch {
  if (process.env.npm_config_node_gyp) {
    command = process.execPath;
    args = [process.env.npm_config_node_gyp, 'rebuild'];
  }
}
const result = spawnSync(command, args, { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
if (result.status === 0) process.exit(0);

console.error(`
justgrpo: building the native engine from source failed${result.error ? ` (${result.error.message})` : ''}.
  No prebuilt binary loads on this machine (${target}): ${why}.
  The prebuilt binary is for linux-x64 with glibc >= 2.34 and libstdc++ from GCC >= 12
  (Debian 12, Ubuntu 22.04, Fedora 36 and later).
  A source build needs a C++17 compiler, make, python3 and OpenBLAS with its headers, e.g. on
  Debian/Ubuntu:  sudo apt-get install -y g++ make python3 libopenblas-dev
  then run:       npm rebuild justgrpo
`);
process.exit(1);
