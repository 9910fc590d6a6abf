// ZeRO-1 (zeroStage 1: the AdamW state sharded across the data-parallel ranks) through the CLI
// under mpirun: 2 sharded ranks give the 2-rank unsharded run and the 1-rank run (losses, gradient
// norms and weights to fp32 round-off), the optimizer file has one format whatever the sharding,
// and runs resume across rank counts with sharding on or off. Weight decay is on, so its rule
// (matrices only) is checked on parameters a shard boundary cuts through. The Open MPI runs check
// the reduce-scatter and all-gather the sharded step is made of; the MPICH run checks them on the
// other ABI, whose in-place reduce-scatter leaves its result at the buffer's start.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { readSafetensorsHeader } from '../../lib/safetensors.js';
import { readF32Tensors, relDiff, tensorsRelDiff } from '../helpers/train.js';
import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const rewards = path.join(root, 'test', 'helpers', 'dp-rewards.mjs');
const tmp = tmpDir('justgrpo-zero-');
cpSync(path.join(root, 'examples', 'data'), path.join(tmp, 'data'), { recursive: true });

const mpirun = spawnSync('mpirun', ['--version'], { encoding: 'utf8' });
const openMpi = !mpirun.error && mpirun.status === 0 && /Open MPI|OpenRTE/.test(mpirun.stdout + mpirun.stderr);
const haveMpirun = !mpirun.error && mpirun.status === 0;
if (!haveMpirun) console.log('skipping the ZeRO-1 tests: mpirun is not on PATH (apt-get install openmpi-bin libopenmpi-dev)');
const mpich = spawnSync('mpiexec.mpich', ['--version'], { encoding: 'utf8' });
const haveMpich = !mpich.error && mpich.status === 0;
if (!haveMpich) console.log('skipping the ZeRO-1 MPICH test: mpiexec.mpich is not on PATH (apt-get install mpich)');

const ONE_THREAD = { JUSTGRPO_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1' };
const MPIRUN_FLAGS = openMpi ? [...(process.getuid?.() === 0 ? ['--allow-run-as-root'] : []), '--oversubscribe', '--bind-to', 'none'] : [];

type Run = { code: number | null; out: string };

/** The CLI alone (ranks 1), under mpirun, or under MPICH's mpiexec, with 2 ranks. */
function justgrpo(args: string[], ranks: 1 | 2 = 1, launcher: 'mpirun' | 'mpich' = 'mpirun'): Promise<Run> {
  const env = { ...process.env, ...ONE_THREAD };
  const [cmd, argv] = ranks === 1
    ? [process.execPath, [cli, ...args]]
    : launcher === 'mpich'
      ? ['mpiexec.mpich', ['-n', '2', process.execPath, cli, ...args]]
      : ['mpirun', [...MPIRUN_FLAGS, '-np', '2', ...(openMpi ? Object.keys(ONE_THREAD).flatMap((k) => ['-x', k]) : []), process.execPath, cli, ...args]];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd as string, argv as string[], { cwd: tmp, env });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

// As in distributed.test.ts: eps 1e-6 keeps AdamW's update linear in round-off-level gradients, so
// the weights compare the arithmetic of the step itself. Weight decay 0.1 (matrices only).
const MODEL = { init: { dModel: 32, nLayers: 2, nHeads: 2, mlpHiddenSize: 64, maxSequenceLength: 64, seed: 0, initStd: 0.05 } };
const OPTIMIZER = { adamEpsilon: 1e-6, weightDecay: 0.1, maxSteps: 3, saveSteps: 1, saveTotalLimit: 3, loggingSteps: 1 };

function grpoConfig(name: string): string {
  const file = path.join(tmp, `${name}.json`);
  writeFileSync(file, JSON.stringify({
    model: MODEL, data: { train: 'data/arith-tiny.jsonl' }, rewardModule: rewards, rewardFunctions: ['digits'],
    numGenerations: 4, promptsPerStep: 3, maxCompletionLength: 8, temperature: 1.0, learningRate: 0.003, seed: 1, ...OPTIMIZER,
  }));
  return file;
}

function sftConfig(name: string, over: Record<string, unknown> = {}): string {
  const file = path.join(tmp, `${name}.json`);
  writeFileSync(file, JSON.stringify({
    model: MODEL, data: { train: 'data/arith-tiny.jsonl' }, batchSize: 5, gradientAccumulationSteps: 2, learningRate: 0.002, seed: 2,
    ...OPTIMIZER, ...over,
  }));
  return file;
}

const metrics = (dir: string) => readFileSync(path.join(tmp, dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
const file = (dir: string, step: number, name: 'model' | 'optimizer') => path.join(tmp, dir, `checkpoint-${step}`, `${name}.safetensors`);


/** Same run: losses and gradient norms per step, and the weights and moments of `step`'s checkpoint. */
async function expectSameRun(a: string, b: string, o: { step: number; steps: number[]; absLoss?: boolean }) {
  const ma = metrics(a).filter((m) => o.steps.includes(m.step)), mb = metrics(b);
  expect(mb.map((m) => m.step)).toEqual(o.steps);
  ma.forEach((x, i) => {
    // GRPO's loss at its first iteration is ~0 by construction: compared absolutely.
    if (o.absLoss) expect(Math.abs(x.loss - mb[i]!.loss)).toBeLessThan(1e-7);
    else expect(relDiff(x.loss, mb[i]!.loss)).toBeLessThan(1e-6);
    expect(relDiff(x.grad_norm!, mb[i]!.grad_norm!)).toBeLessThan(1e-6);
  });
  expect(await tensorsRelDiff(file(a, o.step, 'model'), file(b, o.step, 'model'))).toBeLessThan(1e-6);
  expect(await tensorsRelDiff(file(a, o.step, 'optimizer'), file(b, o.step, 'optimizer'))).toBeLessThan(1e-5);
}

describe.skipIf(!haveMpirun)('ZeRO-1 over MPI (2 ranks on this machine)', () => {
  it('JustGRPO: 2 sharded ranks give the 2-rank unsharded run and the 1-rank run; one optimizer file format', async () => {
    const config = grpoConfig('grpo');
    for (const [out, ranks, extra] of [['g1', 1, []], ['g2', 2, []], ['g2z', 2, ['--zero-stage', '1']]] as const) {
      const r = await justgrpo(['train', '--config', config, '--out', out, ...extra], ranks);
      expect(r.code, r.out).toBe(0);
    }
    await expectSameRun('g1', 'g2z', { step: 3, steps: [1, 2, 3], absLoss: true });
    await expectSameRun('g2', 'g2z', { step: 3, steps: [1, 2, 3], absLoss: true });
    // The file a sharded run writes is the unsharded one: same tensors, order, dtype and metadata.
    const [h1, hz] = [await readSafetensorsHeader(file('g2', 3, 'optimizer')), await readSafetensorsHeader(file('g2z', 3, 'optimizer'))];
    expect([...hz.tensors.entries()]).toEqual([...h1.tensors.entries()]);
    expect(hz.metadata).toEqual(h1.metadata);
    // Every moment was gathered (a rank's block missing would leave zeros): no tensor of v is all zeros.
    for (const [name, t] of await readF32Tensors(file('g2z', 3, 'optimizer')))
      if (name.endsWith('exp_avg_sq')) expect(t.some((x) => x > 0), name).toBe(true);
    // The stored config says zeroStage 1; a resume keeps it unless told otherwise.
    expect(JSON.parse(readFileSync(path.join(tmp, 'g2z', 'checkpoint-3', 'trainer_state.json'), 'utf8')).config.zeroStage).toBe(1);

    // 2 sharded ranks' checkpoint-2 finished by 1 rank; 1 rank's checkpoint-2 finished by 2 sharded ranks.
    const r21 = await justgrpo(['train', '--resume', path.join(tmp, 'g2z', 'checkpoint-2'), '--out', 'g2z-1']);
    expect(r21.code, r21.out).toBe(0);
    const r12 = await justgrpo(['train', '--resume', path.join(tmp, 'g1', 'checkpoint-2'), '--out', 'g1-2z', '--zero-stage', '1'], 2);
    expect(r12.code, r12.out).toBe(0);
    for (const dir of ['g2z-1', 'g1-2z']) await expectSameRun('g1', dir, { step: 3, steps: [3], absLoss: true });
  });

  it('SFT: 2 sharded ranks give the 1-rank run; resumes 2 sharded -> 1 and 1 -> 2 sharded', async () => {
    const plain = sftConfig('sft'), sharded = sftConfig('sft-z', { zeroStage: 1 });
    const one = await justgrpo(['sft', '--config', plain, '--out', 's1']);
    expect(one.code, one.out).toBe(0);
    const two = await justgrpo(['sft', '--config', sharded, '--out', 's2z'], 2);
    expect(two.code, two.out).toBe(0);
    await expectSameRun('s1', 's2z', { step: 3, steps: [1, 2, 3] });
    const r21 = await justgrpo(['sft', '--resume', path.join(tmp, 's2z', 'checkpoint-2'), '--out', 's2z-1', '--zero-stage', '0']);
    expect(r21.code, r21.out).toBe(0);
    const r12 = await justgrpo(['sft', '--resume', path.join(tmp, 's1', 'checkpoint-2'), '--out', 's1-2z', '--zero-stage', '1'], 2);
    expect(r12.code, r12.out).toBe(0);
    for (const dir of ['s2z-1', 's1-2z']) await expectSameRun('s1', dir, { step: 3, steps: [3] });
  });

  it('bf16 (oneDNN products, fp32 masters): 2 sharded ranks give the 2-rank unsharded run, the bf16 copy refreshed from the gathered weights', async () => {
    // Against 2 unsharded ranks, not 1 rank: bf16 products over other micro-batch shapes round
    // differently (5e-5 in the gradient norm), which has nothing to do with the sharding.
    const config = sftConfig('sft-bf16', { dtype: 'bf16' });
    for (const [out, extra] of [['b2', []], ['b2z', ['--zero-stage', '1']]] as const) {
      const r = await justgrpo(['sft', '--config', config, '--out', out, ...extra], 2);
      expect(r.code, r.out).toBe(0);
    }
    // Measured: weights and moments bit-identical, gradient norms equal to 1e-15.
    await expectSameRun('b2', 'b2z', { step: 3, steps: [1, 2, 3] });
  });

  it('zeroStage 1 with one rank is the unsharded run (nothing to share)', async () => {
    const r = await justgrpo(['sft', '--config', sftConfig('sft-z1', { zeroStage: 1, maxSteps: 1 }), '--out', 'z1']);
    expect(r.code, r.out).toBe(0);
    const s = await justgrpo(['sft', '--config', sftConfig('sft-p1', { maxSteps: 1 }), '--out', 'p1']);
    expect(s.code, s.out).toBe(0);
    expect(await tensorsRelDiff(file('p1', 1, 'model'), file('z1', 1, 'model'))).toBe(0);
  });
});

/** test/helpers/dp-collectives.mjs on `ranks` ranks: each rank's JSON line. */
function collectives(launcher: 'mpirun' | 'mpich', ranks: number): Promise<Run> {
  const script = path.join(root, 'test', 'helpers', 'dp-collectives.mjs');
  const [cmd, argv] = launcher === 'mpich'
    ? ['mpiexec.mpich', ['-n', String(ranks), process.execPath, script]]
    : ['mpirun', [...MPIRUN_FLAGS, '-np', String(ranks), process.execPath, script]];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { cwd: tmp, env: { ...process.env, ...ONE_THREAD } });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

function expectCollectives(r: Run, ranks: number) {
  expect(r.code, r.out).toBe(0);
  const lines = r.out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { rank: number; size: number; checked: number; wrong: string[] });
  expect(lines.map((l) => l.rank).sort()).toEqual(Array.from({ length: ranks }, (_, i) => i));
  for (const l of lines) {
    expect(l.size).toBe(ranks);
    expect(l.checked).toBeGreaterThan(0);
    expect(l.wrong, `rank ${l.rank}`).toEqual([]);
  }
}

describe.skipIf(!haveMpirun)("ZeRO-1's collectives (MpiGradComm) under Open MPI", () => {
  it('reduce-scatter leaves block r the sum of every rank\'s block r; all-gather gives every rank every block (2 and 3 ranks, blocks of 1 to 1000)', async () => {
    expectCollectives(await collectives('mpirun', 2), 2);
    expectCollectives(await collectives('mpirun', 3), 3);
  });
});

describe.skipIf(!haveMpich)('ZeRO-1 over MPICH (its in-place reduce-scatter writes at the buffer start)', () => {
  it("the collectives place each rank's block where it belongs under MPICH too", async () => {
    expectCollectives(await collectives('mpich', 2), 2);
  });

  it('2 sharded ranks under mpiexec.mpich give the 1-rank run', async () => {
    const config = sftConfig('sft-mpich', { zeroStage: 1 });
    const one = await justgrpo(['sft', '--config', config, '--out', 'm1']);
    expect(one.code, one.out).toBe(0);
    const two = await justgrpo(['sft', '--config', config, '--out', 'm2'], 2, 'mpich');
    expect(two.code, two.out).toBe(0);
    await expectSameRun('m1', 'm2', { step: 3, steps: [1, 2, 3] });
  });
});

describe('zeroStage in configs and on the command line', () => {
  it('--zero-stage takes 0 or 1 only', async () => {
    const r = await justgrpo(['sft', '--config', sftConfig('sft-bad'), '--out', 'bad', '--zero-stage', '2']);
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/--zero-stage must be 0 or 1/);
  });

  it('a config with zeroStage 3 is one error naming the field', async () => {
    const r = await justgrpo(['sft', '--config', sftConfig('sft-bad3', { zeroStage: 3 }), '--out', 'bad3']);
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/zeroStage/);
  });
});
