// The CUDA backend's NCCL path (native/cuda/nccl.cpp) on the CUDA-on-CPU tier, where device memory
// is host memory: a test NCCL (test/helpers/fake-nccl.cpp, built here with mpicxx) plays NCCL's
// collectives with MPI on the same pointers, so the engine's own code runs unchanged: loading NCCL
// at run time, the ABI it declares, rank 0's unique id broadcast over MPI, the in-place
// all-reduce / reduce-scatter / all-gather, the wait on the stream and its time-out. A 2-rank SFT
// and JustGRPO run over it give the 1-rank run and the host-MPI path; a missing NCCL falls back with
// a printed reason (or fails when JUSTGRPO_NCCL=1); JUSTGRPO_NCCL=0 forces MPI. What it does not
// check: a real NCCL on real GPUs (bench/gpu/check.sh's NCCL smoke stage, bench/gpu/multi.sh).
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { beforeAll, describe, expect, it } from 'vitest';

import { gpuBuild } from './tier.js';

import { native } from '../../lib/native/binding.js';
import { relDiff, tensorsRelDiff } from '../helpers/train.js';
import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const tierDir = path.resolve(root, process.env.JUSTGRPO_CUDA_CPU_DIR ?? 'build-cuda-cpu');
const tmp = tmpDir('justgrpo-nccl-');
const fakeLib = path.join(tmp, 'libnccl-test.so');

const mpirun = spawnSync('mpirun', ['--version'], { encoding: 'utf8' });
const openMpi = !mpirun.error && mpirun.status === 0 && /Open MPI|OpenRTE/.test(mpirun.stdout + mpirun.stderr);
// Open MPI's wrapper by name where Debian has both MPIs (plain mpicxx may be MPICH's): the test NCCL
// must use the libmpi the engine opens under Open MPI's mpirun.
const cxx = existsSync('/usr/bin/mpicxx.openmpi') ? 'mpicxx.openmpi' : 'mpicxx';
const mpicxx = spawnSync(cxx, ['--version'], { encoding: 'utf8' });
const skipReason = !gpuBuild.tier
  ? 'these tests run on the CUDA-on-CPU tier only (the test NCCL works on host memory; on a GPU, bench/gpu runs the real one)'
  : !openMpi
    ? 'Open MPI\'s mpirun is not on PATH (apt-get install openmpi-bin libopenmpi-dev)'
    : mpicxx.error || mpicxx.status !== 0
      ? `${cxx} is not on PATH (apt-get install libopenmpi-dev): the test NCCL cannot be built`
      : '';
if (skipReason) console.log(`skipping the NCCL tests: ${skipReason}`);

const MPIRUN_FLAGS = [...(process.getuid?.() === 0 ? ['--allow-run-as-root'] : []), '--oversubscribe', '--bind-to', 'none'];
// One thread per rank, the tier's build for every process the CLI starts.
const BASE_ENV = { JUSTGRPO_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1', JUSTGRPO_PREBUILD: tierDir, JUSTGRPO_NCCL_LIBRARY: fakeLib };

type Run = { code: number | null; out: string };

/** The CLI alone, or under mpirun with `ranks` ranks; `env` reaches every rank (and replaces BASE_ENV's keys). */
function justgrpo(args: string[], o: { ranks?: number; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<Run> {
  const extra = { ...BASE_ENV, ...o.env };
  const env = { ...process.env, ...extra };
  const ranks = o.ranks ?? 1;
  const [cmd, argv] = ranks === 1
    ? [process.execPath, [cli, ...args]]
    : ['mpirun', [...MPIRUN_FLAGS, '-np', String(ranks), ...Object.keys(extra).flatMap((k) => ['-x', k]), process.execPath, cli, ...args]];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd as string, argv as string[], { cwd: tmp, env });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 240_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

const MODEL = { init: { dModel: 32, nLayers: 2, nHeads: 2, mlpHiddenSize: 64, maxSequenceLength: 64, seed: 0, initStd: 0.05 } };
// fp32 on the device, so ranks and rank counts differ only in the order of fp32 sums; Adam's eps as
// in test/native/distributed.test.ts (a round-off-level gradient element stays linear in g).
const COMMON = { backend: 'cuda', dtype: 'fp32', adamEpsilon: 1e-6, saveSteps: 3, saveTotalLimit: 1, loggingSteps: 1, maxSteps: 3 };

function sftConfig(): string {
  const file = path.join(tmp, 'sft.json');
  writeFileSync(file, JSON.stringify({
    model: MODEL, data: { train: 'data/arith-tiny.jsonl' }, batchSize: 5, gradientAccumulationSteps: 2, learningRate: 0.002, seed: 2, ...COMMON,
  }));
  return file;
}

function grpoConfig(): string {
  const file = path.join(tmp, 'grpo.json');
  writeFileSync(file, JSON.stringify({
    model: MODEL, data: { train: 'data/arith-tiny.jsonl' }, rewardModule: path.join(root, 'test', 'helpers', 'dp-rewards.mjs'),
    rewardFunctions: ['digits'], numGenerations: 4, promptsPerStep: 3, maxCompletionLength: 8, temperature: 1.0, learningRate: 0.003,
    seed: 1, logCompletions: true, ...COMMON,
  }));
  return file;
}

const metrics = (dir: string) => readFileSync(path.join(tmp, dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);

/** The largest ||a - b|| / ||a|| over the tensors of two runs' final weights. */
const weightsRelDiff = (a: string, b: string) =>
  tensorsRelDiff(path.join(tmp, a, 'checkpoint-3', 'model.safetensors'), path.join(tmp, b, 'checkpoint-3', 'model.safetensors'));

/**
 * Losses and gradient norms to `tol` relative, and the final weights; returns the weights'
 * difference. tol 0: bit for bit (two ranks' sums are one fp32 addition, the same whichever library
 * adds).
 */
async function expectSameRun(a: string, b: string, o: { grpo?: boolean; tol?: number; weightsTol?: number } = {}): Promise<number> {
  const tol = o.tol ?? 1e-6;
  const ma = metrics(a), mb = metrics(b);
  expect(mb.map((m) => m.step)).toEqual([1, 2, 3]);
  const within = (d: number) => (tol === 0 ? expect(d).toBe(0) : expect(d).toBeLessThan(tol));
  ma.forEach((x, i) => {
    // GRPO's first-iteration loss is ~0 by construction: compared absolutely.
    if (o.grpo) within(Math.abs(x.loss! - mb[i]!.loss!) * 10);  // 1e-7 absolute at tol 1e-6
    else within(relDiff(x.loss!, mb[i]!.loss!));
    within(relDiff(x.grad_norm!, mb[i]!.grad_norm!));
  });
  const w = await weightsRelDiff(a, b);
  if (o.weightsTol !== undefined) expect(w).toBeLessThan(o.weightsTol);
  else within(w);
  return w;
}

describe.skipIf(skipReason !== '')('NCCL data parallelism on the CUDA-on-CPU tier (a test NCCL over MPI)', () => {
  beforeAll(() => {
    cpSync(path.join(root, 'examples', 'data'), path.join(tmp, 'data'), { recursive: true });
    // OMPI_SKIP_MPICXX: the C API only (Open MPI's C++ bindings warn under -Wextra and are not used).
    const cc = spawnSync(cxx, ['-std=c++17', '-shared', '-fPIC', '-O1', '-Wall', '-Wextra', '-Werror', '-DOMPI_SKIP_MPICXX', '-DMPICH_SKIP_MPICXX',
      path.join(root, 'test', 'helpers', 'fake-nccl.cpp'), '-o', fakeLib], { encoding: 'utf8' });
    expect(cc.status, cc.stderr).toBe(0);
  });

  it('one rank without MPI (the 1-GPU smoke path): the in-place all-reduce, reduce-scatter and all-gather are exact; the library is named', () => {
    // nccl_library() loads once per process: this file's process loads the test NCCL.
    process.env.JUSTGRPO_NCCL_LIBRARY = fakeLib;
    const cuda = native().cuda!;
    const lib = cuda.ncclLibrary();
    expect(lib).toEqual({ loaded: true, name: `NCCL 2.99.0 (${fakeLib})`, error: '' });
    const p = cuda.ncclProbe({ sizes: Float64Array.of(4096, 1 << 20), iters: 2 });
    expect(p.failures).toEqual([]);
    expect([p.rank, p.ranks, p.library]).toEqual([0, 1, lib.name]);
    expect(p.timings.map((t) => t.bytes)).toEqual([4096, 1 << 20]);
    for (const t of p.timings) {
      expect(t.seconds).toBeGreaterThan(0);
      expect(t.busbw).toBe(0);  // one rank moves nothing between ranks
    }
  });

  it('2 ranks under mpirun: the probe\'s collectives are exact, with a bus bandwidth', async () => {
    const script = path.join(tmp, 'probe.mjs');
    writeFileSync(script, `
      import { native, createNativeCommunicator, unwrapNative } from ${JSON.stringify(path.join(root, 'dist', 'native', 'binding.js'))};
      const comm = createNativeCommunicator();
      const p = native().cuda.ncclProbe({ communicator: unwrapNative(comm), sizes: Float64Array.of(1 << 16), iters: 2, timeoutSeconds: 60 });
      console.log('probe ' + JSON.stringify(p));
      comm.finalize();
    `);
    const env = { ...BASE_ENV, JUSTGRPO_FAKE_NCCL_LOG: path.join(tmp, 'probe-log') };
    const r = await new Promise<Run>((resolve) => {
      const child = spawn('mpirun', [...MPIRUN_FLAGS, '-np', '2', ...Object.keys(env).flatMap((k) => ['-x', k]), process.execPath, script], { env: { ...process.env, ...env } });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      child.on('close', (code) => resolve({ code, out }));
    });
    expect(r.code, r.out).toBe(0);
    const probes = r.out.split('\n').filter((l) => l.startsWith('probe ')).map((l) => JSON.parse(l.slice(6)));
    expect(probes.map((p) => p.rank).sort()).toEqual([0, 1]);
    for (const p of probes) {
      expect(p.failures).toEqual([]);
      expect(p.ranks).toBe(2);
      expect(p.timings[0].busbw).toBeCloseTo(p.timings[0].algbw, 10);  // 2 (n - 1) / n = 1 for two ranks
    }
    // The calls the engine made, in NCCL's in-place forms (the test NCCL refuses any other overlap).
    const log = readFileSync(path.join(tmp, 'probe-log.1'), 'utf8').trim().split('\n');
    expect(log.slice(0, 4)).toEqual(['init 2', 'allreduce 2000 7', 'reducescatter 1000 7', 'allgather 4000 1']);
  });

  // Each CLI run on the tier takes 10-60 s on the 2-core machine (the kernels run on CPU threads).
  it('SFT: 2 ranks over NCCL give the 1-rank run and the host-MPI path (losses and weights to 1e-6); the log says which', { timeout: 480_000 }, async () => {
    const config = sftConfig();
    const one = await justgrpo(['sft', '--config', config, '--out', 's1']);
    expect(one.code, one.out).toBe(0);
    const nccl = await justgrpo(['sft', '--config', config, '--out', 's2n'], { ranks: 2, env: { JUSTGRPO_FAKE_NCCL_LOG: path.join(tmp, 'sft-log') } });
    expect(nccl.code, nccl.out).toBe(0);
    expect(nccl.out).toContain(`Data parallelism: gradients summed on the GPUs by NCCL 2.99.0 (${fakeLib}) (2 ranks, bootstrapped over Open MPI`);
    // One all-reduce of the whole gradient buffer per step, on both ranks.
    for (const r of [0, 1]) {
      const log = readFileSync(path.join(tmp, `sft-log.${r}`), 'utf8').trim().split('\n');
      expect(log[0]).toBe('init 2');
      expect(log.filter((l) => l.startsWith('allreduce '))).toHaveLength(3);
      expect(new Set(log.filter((l) => l.startsWith('allreduce ')))).toHaveProperty('size', 1);
    }
    const host = await justgrpo(['sft', '--config', config, '--out', 's2m'], { ranks: 2, env: { JUSTGRPO_NCCL: '0' } });
    expect(host.code, host.out).toBe(0);
    expect(host.out).toMatch(/Data parallelism: gradients summed over Open MPI .* through host memory \(JUSTGRPO_NCCL=0\)/);
    expect(host.out).not.toContain('NCCL 2.99.0');
    await expectSameRun('s2m', 's2n', { tol: 0 });
    console.log(`SFT, 1 rank vs 2 ranks over NCCL: weights ${(await expectSameRun('s1', 's2n')).toExponential(2)} relative`);
  });

  it('ZeRO-1 over NCCL: the reduce-scatter and all-gather run on the device buffers; 2 sharded ranks give the unsharded NCCL run and the sharded MPI run', { timeout: 480_000 }, async () => {
    const config = sftConfig();
    if (!existsSync(path.join(tmp, 's2n', 'checkpoint-3'))) {
      const base = await justgrpo(['sft', '--config', config, '--out', 's2n'], { ranks: 2 });
      expect(base.code, base.out).toBe(0);
    }
    const zero = await justgrpo(['sft', '--config', config, '--out', 's2z', '--zero-stage', '1'], { ranks: 2, env: { JUSTGRPO_FAKE_NCCL_LOG: path.join(tmp, 'zero-log') } });
    expect(zero.code, zero.out).toBe(0);
    expect(zero.out).toContain('gradients summed on the GPUs by NCCL 2.99.0');
    // Per step and rank: one reduce-scatter of the gradients and one all-gather of the fp32 weights
    // (4 bytes a parameter, as bytes), and no all-reduce of the gradients.
    for (const r of [0, 1]) {
      const log = readFileSync(path.join(tmp, `zero-log.${r}`), 'utf8').trim().split('\n');
      const rs = log.filter((l) => l.startsWith('reducescatter ')), ag = log.filter((l) => l.startsWith('allgather '));
      expect(rs).toHaveLength(3);
      expect(ag).toHaveLength(3);
      expect(log.filter((l) => l.startsWith('allreduce '))).toEqual([]);
      const block = Number(rs[0]!.split(' ')[1]);
      expect(ag[0]).toBe(`allgather ${4 * block} 1`);
    }
    // The sharded step over MPI (host staging) is the same arithmetic: bit for bit.
    const host = await justgrpo(['sft', '--config', config, '--out', 's2zm', '--zero-stage', '1'], { ranks: 2, env: { JUSTGRPO_NCCL: '0' } });
    expect(host.code, host.out).toBe(0);
    await expectSameRun('s2zm', 's2z', { tol: 0 });
    // Against the unsharded run only the gradient norm's summation order differs.
    console.log(`SFT, 2 ranks over NCCL, ZeRO-1 vs unsharded: weights ${(await expectSameRun('s2n', 's2z')).toExponential(2)} relative`);
  });

  it('JustGRPO: 2 ranks over NCCL give the host-MPI run bit for bit and the 1-rank run (same completions; losses to 1e-6, weights 2e-6)', { timeout: 480_000 }, async () => {
    const config = grpoConfig();
    const one = await justgrpo(['train', '--config', config, '--out', 'g1']);
    expect(one.code, one.out).toBe(0);
    const two = await justgrpo(['train', '--config', config, '--out', 'g2'], { ranks: 2 });
    expect(two.code, two.out).toBe(0);
    expect(two.out).toContain('gradients summed on the GPUs by NCCL 2.99.0');
    const host = await justgrpo(['train', '--config', config, '--out', 'g2m'], { ranks: 2, env: { JUSTGRPO_NCCL: '0' } });
    expect(host.code, host.out).toBe(0);
    for (const dir of ['g2', 'g2m'])
      expect(readFileSync(path.join(tmp, dir, 'completions.jsonl'), 'utf8')).toBe(readFileSync(path.join(tmp, 'g1', 'completions.jsonl'), 'utf8'));
    metrics('g1').forEach((m, i) => expect(metrics('g2')[i]!.reward).toBe(m.reward));
    // NCCL's path is MPI's, bit for bit; against one rank, the weights differ by the backend's own
    // data-parallel round-off (per-rank batches summed in another order): measured 1.28e-6 on the
    // tier after 3 steps, the same with MPI, so 2e-6 here (a wrong sum or a missed rank is off by
    // 1e-2 or more).
    await expectSameRun('g2m', 'g2', { grpo: true, tol: 0 });
    console.log(`JustGRPO, 1 rank vs 2 ranks over NCCL: weights ${(await expectSameRun('g1', 'g2', { grpo: true, weightsTol: 2e-6 })).toExponential(2)} relative`);
  });

  it('a missing NCCL: the host path with one line saying why; with JUSTGRPO_NCCL=1 an error; a bad JUSTGRPO_NCCL is refused', { timeout: 480_000 }, async () => {
    const config = sftConfig();
    const missing = path.join(tmp, 'no-such-dir', 'libnccl.so.2');
    const fallback = await justgrpo(['sft', '--config', config, '--out', 'm2'], { ranks: 2, env: { JUSTGRPO_NCCL_LIBRARY: missing } });
    expect(fallback.code, fallback.out).toBe(0);
    const lines = fallback.out.split('\n').filter((l) => l.includes('NCCL is not used'));
    expect(lines).toHaveLength(1);  // rank 0 says it once
    expect(lines[0]).toContain(`rank 0: JUSTGRPO_NCCL_LIBRARY=${missing} cannot be loaded`);
    expect(lines[0]).toMatch(/gradients go through host memory over Open MPI/);
    await expectSameRun('s2m', 'm2', { tol: 0 });

    const required = await justgrpo(['sft', '--config', config, '--out', 'm3'], { ranks: 2, env: { JUSTGRPO_NCCL_LIBRARY: missing, JUSTGRPO_NCCL: '1' } });
    expect(required.code).not.toBe(0);
    expect(required.out).toContain(`NCCL was asked for (JUSTGRPO_NCCL=1) but rank 0: JUSTGRPO_NCCL_LIBRARY=${missing} cannot be loaded`);
    expect(existsSync(path.join(tmp, 'm3', 'checkpoint-3'))).toBe(false);

    const bad = await justgrpo(['sft', '--config', config, '--out', 'm4'], { ranks: 2, env: { JUSTGRPO_NCCL: 'yes' } });
    expect(bad.code).not.toBe(0);
    expect(bad.out).toContain("Expected 0 (MPI through host memory) or 1 (NCCL, required) for `JUSTGRPO_NCCL` but received 'yes'");
  });

  it('a rank that never joins the all-reduce: the other times out with an error that names the collective, and the job ends', { timeout: 240_000 }, async () => {
    const r = await justgrpo(['sft', '--config', sftConfig(), '--out', 't2'], {
      ranks: 2, env: { JUSTGRPO_FAKE_NCCL_SKIP_RANK: '1', JUSTGRPO_COLLECTIVE_TIMEOUT: '4' }, timeoutMs: 120_000,
    });
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/Rank 0: the all-reduce of the gradients \(NCCL collective 1, GPU 0\) timed out after 4 s/);
    expect(r.out).toContain('NCCL cannot say which one');
  });
});
