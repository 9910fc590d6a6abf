// ZeRO-1 on the CUDA backend (cuda::Training::step_sharded over host-memory collectives): a
// one-rank shard steps exactly as the unsharded state does, in fp32 and bf16 (the bf16 copy the
// products read rewritten from the gathered fp32 weights, rounded as AdamW rounds it); the shards
// of 3 ranks hold the moments between them; and 2 sharded ranks under mpirun (through the CLI,
// backend 'cuda') give the 1-rank run. On a GPU or on the CUDA-on-CPU tier (test/gpu/tier.ts).
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

import { gpuBuild } from './tier.js';

import { native, type NativeEngine, type NativeEngineOptions, type NativeStepOptions, type NativeTrainer } from '../../lib/native/binding.js';
import { tmpDir } from '../helpers/tmp.js';
import { args, fixtureEngine, readF32Tensors, sameBits, trainCase } from '../helpers/train.js';
// @ts-expect-error plain JavaScript module shared with the GPU machine's runner
import { gpuStatus } from './parity.mjs';

const status = gpuStatus(native()) as { ok: boolean; reason: string };
if (!status.ok) console.log(`skipping the CUDA ZeRO-1 tests: ${status.reason}`);

const ADAMW: NativeStepOptions = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 0.5 };

const open: { dispose(): void }[] = [];
afterAll(() => {
  for (const o of open.reverse()) o.dispose();
});
async function gpuEngine(o: NativeEngineOptions): Promise<NativeEngine> {
  const { engine } = await fixtureEngine('gqa_f32', { backend: 'cuda', ...o });
  open.push(engine);
  return engine;
}
function trainerFor(engine: NativeEngine): NativeTrainer {
  const t = new (native().Trainer)(engine, {});
  open.push(t);
  return t;
}

describe.skipIf(!status.ok)('ZeRO-1 on the CUDA backend, one process', () => {
  for (const dtype of ['F32', 'BF16'] as const) {
    it(`${dtype}: one rank's shard steps as the unsharded state does (weights, moments, statistics), weight decay and clipping on`, async () => {
      const { batch } = await trainCase('gqa_f32');
      const [ea, eb] = [await gpuEngine({ dtype }), await gpuEngine({ dtype })];
      const ta = trainerFor(ea), tb = trainerFor(eb);
      tb.shardOptimizer(0, 1);
      for (let s = 0; s < 3; s++) {
        const ra = [], rb = [];
        for (const [t, r] of [[ta, ra], [tb, rb]] as const) {
          t.zeroGrad();
          await t.crossEntropyBackward(...args(batch));
          r.push(await t.step(ADAMW));
        }
        expect(rb).toEqual(ra);
      }
      for (const p of ea.paramInfo()) {
        expect(sameBits(eb.getParam(p.name), ea.getParam(p.name)), p.name).toBe(true);
        const x = ta.getMoments(p.name), y = tb.getMoments(p.name);
        expect(sameBits(y.m, x.m) && sameBits(y.v, x.v), p.name).toBe(true);
      }
    });
  }

  it('the shards of 3 ranks hold every moment once: they add up to the whole', async () => {
    const e = await gpuEngine({ dtype: 'F32' });
    const trainers = [0, 1, 2].map((r) => {
      const t = trainerFor(e);
      t.shardOptimizer(r, 3);
      return t;
    });
    for (const p of e.paramInfo()) {
      const n = p.shape.reduce((a, b) => a * b, 1);
      const m = Float32Array.from({ length: n }, (_, i) => i + 1), v = Float32Array.from({ length: n }, (_, i) => 2 * i + 1);
      for (const t of trainers) t.setMoments(p.name, m, v);
      const sum = { m: new Float32Array(n), v: new Float32Array(n) };
      for (const t of trainers) {
        const got = t.getMoments(p.name);
        for (let i = 0; i < n; i++) {
          sum.m[i] += got.m[i]!;
          sum.v[i] += got.v[i]!;
        }
      }
      expect(sameBits(sum.m, m) && sameBits(sum.v, v), p.name).toBe(true);
    }
  });
});

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const mpirun = spawnSync('mpirun', ['--version'], { encoding: 'utf8' });
const openMpi = !mpirun.error && mpirun.status === 0 && /Open MPI|OpenRTE/.test(mpirun.stdout + mpirun.stderr);
if (status.ok && !openMpi) console.log("skipping the CUDA ZeRO-1 2-rank test: Open MPI's mpirun is not on PATH");

describe.skipIf(!status.ok || !openMpi)('ZeRO-1 on the CUDA backend, 2 ranks under mpirun', () => {
  it('SFT on backend cuda: 2 sharded ranks give the 1-rank run (losses, weights, one optimizer file format)', async () => {
    const tmp = tmpDir('justgrpo-zero-gpu-');
    cpSync(path.join(root, 'examples', 'data'), path.join(tmp, 'data'), { recursive: true });
    const config = path.join(tmp, 'sft.json');
    writeFileSync(config, JSON.stringify({
      model: { init: { dModel: 32, nLayers: 2, nHeads: 2, mlpHiddenSize: 64, maxSequenceLength: 64, seed: 0, initStd: 0.05 } },
      data: { train: 'data/arith-tiny.jsonl' }, batchSize: 4, learningRate: 0.002, maxSteps: 2, seed: 2, saveSteps: 2, loggingSteps: 1,
      adamEpsilon: 1e-6, weightDecay: 0.1, backend: 'cuda', dtype: 'fp32',
    }));
    // Every rank loads the build this file runs against: the tier's, or the default one on a GPU.
    const env: NodeJS.ProcessEnv = { ...process.env, JUSTGRPO_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1' };
    if (gpuBuild.tier) env.JUSTGRPO_PREBUILD = path.resolve(root, process.env.JUSTGRPO_CUDA_CPU_DIR ?? 'build-cuda-cpu');
    const run = (argv: string[], ranks: number) => new Promise<{ code: number | null; out: string }>((resolve, reject) => {
      const flags = ranks > 1
        ? [...(process.getuid?.() === 0 ? ['--allow-run-as-root'] : []), '--oversubscribe', '--bind-to', 'none', '-np', String(ranks),
          ...['JUSTGRPO_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'JUSTGRPO_PREBUILD'].filter((k) => env[k] !== undefined).flatMap((k) => ['-x', k])]
        : [];
      const child = ranks > 1 ? spawn('mpirun', [...flags, process.execPath, cli, ...argv], { cwd: tmp, env }) : spawn(process.execPath, [cli, ...argv], { cwd: tmp, env });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, out });
      });
    });
    const one = await run(['sft', '--config', config, '--out', 'one'], 1);
    expect(one.code, one.out).toBe(0);
    const two = await run(['sft', '--config', config, '--out', 'two', '--zero-stage', '1'], 2);
    expect(two.code, two.out).toBe(0);
    // Rank 0 printed the GPU memory plan per rank, with the moments of one shard.
    expect(two.out).toMatch(/GPU memory plan \(.*per rank of 2, zeroStage 1: AdamW moments sharded\)/);
    expect(two.out).toMatch(/AdamW moments \(1\/2\)/);
    expect(one.out).not.toMatch(/per rank/);
    const metrics = (d: string) => readFileSync(path.join(tmp, d, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    const [m1, m2] = [metrics('one'), metrics('two')];
    expect(m2.map((m) => m.step)).toEqual([1, 2]);
    m1.forEach((a, i) => {
      expect(Math.abs(a.loss - m2[i]!.loss) / Math.abs(a.loss)).toBeLessThan(1e-6);
      expect(Math.abs(a.grad_norm! - m2[i]!.grad_norm!) / a.grad_norm!).toBeLessThan(1e-6);
    });
    for (const name of ['model', 'optimizer']) {
      const a = await readF32Tensors(path.join(tmp, 'one', 'checkpoint-2', `${name}.safetensors`));
      const b = await readF32Tensors(path.join(tmp, 'two', 'checkpoint-2', `${name}.safetensors`));
      expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
      for (const [k, x] of a) {
        const y = b.get(k)!;
        let d = 0, n = 0;
        for (let i = 0; i < x.length; i++) {
          d += (x[i]! - y[i]!) ** 2;
          n += x[i]! ** 2;
        }
        expect(Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-30), `${name} ${k}`).toBeLessThan(name === 'model' ? 1e-6 : 1e-5);
      }
    }
  }, 600_000);
});
