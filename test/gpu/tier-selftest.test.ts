// The CUDA-on-CPU tier's stand-ins (native/cuda/compat) checked against direct formulas before the
// parity suites trust them: bf16 rounding, the 32-lane shuffles, the launch limits, cublasGemmEx
// (op N/T, leading dimensions, alpha/beta, beta 0 never reads C, bf16 output), WMMA m16n16k16.
// The program is built with the tier (npm run build:cuda-cpu); this file skips, saying why, without it.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const dir = path.resolve(root, process.env.JUSTGRPO_CUDA_CPU_DIR ?? 'build-cuda-cpu');
const program = path.join(dir, 'build', 'Release', 'cuda-cpu-selftest');
const built = existsSync(program);
if (!built) console.log(`skipping the CUDA-on-CPU stand-in checks: no ${program} (npm run build:cuda-cpu)`);

describe.skipIf(!built)('CUDA-on-CPU stand-ins match their CUDA definitions', () => {
  it('every check of native/cuda/compat/selftest.cpp passes', () => {
    const r = spawnSync(program, [], { encoding: 'utf8', timeout: 60_000 });
    const lines = r.stdout.split('\n');
    const failed = lines.filter((l) => l.startsWith('FAIL'));
    expect(failed, r.stdout + r.stderr).toEqual([]);
    // bf16 (2), shuffles (4), launch limits (2), GEMM (3 + 1 refusal), WMMA (1)
    expect(lines.filter((l) => l.startsWith('PASS')).length).toBe(13);
    expect(r.status).toBe(0);
  });
});
