// Data parallelism on one machine (`npm run bench:dp [-- --size small]`): the same JustGRPO and SFT
// runs as 1 rank x T threads and as T ranks x 1 thread (T = this machine's cores, at most 8), the
// latter also with the optimizer state sharded (zeroStage 1), from
// the step times the runs log (median over the steps after the first). Needs mpirun (Open MPI or MPICH).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { BENCH_SIZES } from '../dist/bench.js';
import { median, table } from './common.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const size = process.argv.includes('--size') ? process.argv[process.argv.indexOf('--size') + 1] : 'tiny';
const T = Math.min(8, os.availableParallelism());
const version = spawnSync('mpirun', ['--version'], { encoding: 'utf8' });
if (version.error || version.status !== 0) {
  console.log('bench:dp: mpirun is not on PATH (apt-get install openmpi-bin libopenmpi-dev); nothing measured');
  process.exit(0);
}
const openMpi = /Open MPI|OpenRTE/.test(version.stdout + version.stderr);
const flags = openMpi ? [...(process.getuid?.() === 0 ? ['--allow-run-as-root'] : []), '--oversubscribe', '--bind-to', 'none'] : [];

const { vocabSize: _v, nKvHeads: _k, ...dims } = BENCH_SIZES[size];
const model = { init: { ...dims, maxSequenceLength: 128, seed: 0, initStd: 0.02 } };
const data = path.join(root, 'examples', 'data', 'arith-tiny.jsonl');
const dir = mkdtempSync(path.join(os.tmpdir(), 'justgrpo-bench-dp-'));
const configs = {
  train: { model, data: { train: data }, rewardModule: path.join(root, 'examples', 'rewards', 'toy.mjs'), rewardFunctions: ['digits'],
    numGenerations: 8, promptsPerStep: T, maxCompletionLength: 16, learningRate: 1e-4, maxSteps: 4, saveSteps: 1000 },
  sft: { model, data: { train: data }, batchSize: 8 * T, learningRate: 1e-4, maxSteps: 6, saveSteps: 1000 },
};

function run(command, ranks, threads, zeroStage = 0) {
  const out = path.join(dir, `${command}-${ranks}x${threads}-z${zeroStage}`);
  const file = `${out}.json`;
  writeFileSync(file, JSON.stringify({ ...configs[command], outputDir: out, zeroStage }));
  const env = { ...process.env, JUSTGRPO_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) };
  const args = [cli, command, '--config', file];
  const r = ranks === 1
    ? spawnSync(process.execPath, args, { env, encoding: 'utf8' })
    : spawnSync('mpirun', [...flags, '-np', String(ranks), process.execPath, ...args], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${command} ${ranks}x${threads} failed:\n${r.stderr}`);
  const steps = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  return { seconds: median(steps.slice(1).map((m) => m.step_time)), tokensPerSecond: median(steps.slice(1).map((m) => m.tokens_per_second)) };
}

try {
  console.log(`## Data parallelism on one machine: ${size} model, ${T} cores (${version.stdout.split('\n')[0]})`);
  const rows = [['run', 'layout', 'step s', 'tokens/s', 'vs 1 rank']];
  for (const command of ['train', 'sft']) {
    const one = run(command, 1, T), many = run(command, T, 1), sharded = run(command, T, 1, 1);
    rows.push([command, `1 rank x ${T} threads`, one.seconds.toFixed(3), one.tokensPerSecond.toFixed(0), '1.00x']);
    rows.push([command, `${T} ranks x 1 thread`, many.seconds.toFixed(3), many.tokensPerSecond.toFixed(0), `${(one.seconds / many.seconds).toFixed(2)}x`]);
    rows.push([command, `${T} ranks x 1 thread, zeroStage 1`, sharded.seconds.toFixed(3), sharded.tokensPerSecond.toFixed(0), `${(one.seconds / sharded.seconds).toFixed(2)}x`]);
  }
  table(rows);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
