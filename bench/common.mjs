// Helpers the bench scripts share: the median timer, the table printer and the PyTorch runner (the
// model sizes are the library's BENCH_SIZES, dist/bench.js).
// They live here rather than in run.mjs, because run.mjs awaits its sections at top level and a
// section that imported it back (scaling.mjs did) would wait on run.mjs forever: Node then exits
// with code 13 and nothing printed.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { median } from '../dist/bench.js';

const here = path.dirname(fileURLToPath(import.meta.url));

export { median };

export async function timeMedian(fn, runs) {
  await fn(); // warm-up
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    times.push((performance.now() - t0) / 1000);
  }
  return median(times);
}

/** The python3 that has torch (Debian's python3-torch lives under /usr/bin/python3), or null. */
export function torchPython() {
  for (const py of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(py, ['-c', 'import torch'], { encoding: 'utf8' });
    if (r.status === 0) return py;
  }
  return null;
}

/**
 * Runs a PyTorch bench script under each thread setting and keeps the fastest: torch's intra-op
 * threads and OpenBLAS's threads compete for the same cores, and which split wins depends on shape.
 */
export function torchBest(py, script, spec, settings = [[1, 2], [2, 1]]) {
  let best = null;
  for (const [torchThreads, blasThreads] of settings) {
    const r = spawnSync(py, [path.join(here, script), JSON.stringify({ ...spec, threads: torchThreads })], {
      encoding: 'utf8',
      env: { ...process.env, OPENBLAS_NUM_THREADS: String(blasThreads), OMP_NUM_THREADS: String(blasThreads) },
    });
    if (r.status !== 0) throw new Error(`${script} failed: ${r.stderr}`);
    const out = JSON.parse(r.stdout.trim().split('\n').pop());
    if (!best || out.median_s < best.median_s) best = { ...out, setting: `torch ${torchThreads} / BLAS ${blasThreads}` };
  }
  return best;
}

export function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  for (const r of rows) console.log(r.map((c, i) => String(c).padEnd(widths[i])).join('  '));
}
