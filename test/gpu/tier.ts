// Which build test/gpu runs against. Imported first by each GPU suite, before anything loads the
// native module:
//  - JUSTGRPO_PREBUILD set: that build, whatever it is (scripts/test-cuda-cpu-asan.sh points it at
//    the sanitized tier);
//  - else the default build when it has the CUDA backend and sees a GPU (a real GPU always wins);
//  - else the CUDA-on-CPU tier (`npm run build:cuda-cpu`: native/cuda compiled by g++ against
//    HIP-CPU) when build-cuda-cpu/ holds it, unless JUSTGRPO_CUDA_CPU=0;
//  - else the default build, and the suites skip with the reason gpuStatus gives.
// The same tests and tolerances run on a GPU and on the tier.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { native } from '../../lib/native/binding.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(import.meta.url);

type Loaded = { backends: string[]; cuda?: { deviceCount(): number } };

function choose(): { tier: boolean; note: string } {
  if (process.env.JUSTGRPO_PREBUILD) return { tier: false, note: `the build in JUSTGRPO_PREBUILD=${process.env.JUSTGRPO_PREBUILD}` };
  const dir = path.resolve(root, process.env.JUSTGRPO_CUDA_CPU_DIR ?? 'build-cuda-cpu');
  const file = path.join(dir, 'build', 'Release', 'justgrpo.node');
  const load = require('node-gyp-build') as { resolve(dir: string): string };
  let gpu = false;
  try {
    const dflt = require(load.resolve(root)) as Loaded;
    gpu = dflt.backends.includes('cuda') && (dflt.cuda?.deviceCount() ?? 0) > 0;
  } catch {
    // The default build does not load: native() below reports why.
  }
  if (gpu) return { tier: false, note: 'the default build, on a GPU' };
  if (process.env.JUSTGRPO_CUDA_CPU === '0') return { tier: false, note: 'the default build (JUSTGRPO_CUDA_CPU=0)' };
  if (!existsSync(file)) return { tier: false, note: `the default build (no CUDA-on-CPU build at ${file}: npm run build:cuda-cpu)` };
  process.env.JUSTGRPO_PREBUILD = dir;
  try {
    native();  // loads and keeps the tier's module for this test file
  } finally {
    delete process.env.JUSTGRPO_PREBUILD;
  }
  return { tier: true, note: `the CUDA-on-CPU tier (${file}: kernels on CPU threads through HIP-CPU)` };
}

/** Whether test/gpu runs on the CUDA-on-CPU tier, and a line saying which build it runs against. */
export const gpuBuild = choose();
console.log(`test/gpu runs against ${gpuBuild.note}`);
