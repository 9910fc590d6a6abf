// GPU training (cuda::Training, native/cuda/training.cpp and loss.cu) against the CPU backend's
// trainer, the reference: the same fixture weights on both, the same batch, then the loss, the
// log-probs, every parameter's gradient, and the weights and AdamW moments after whole steps.
//
// Tolerances. fp32 mode: both backends sum in fp32 (the head's log-sum-exp and the loss in double)
// but in other orders (cuBLAS or its stand-in versus OpenBLAS, the CPU's per-token first layer and
// rows-only last layer versus the GPU's full layers), so values agree to fp32 rounding over a
// 2-layer model: 1e-5 relative (relError: max |a - b| over max |b|). bf16 mode: every product
// reads bf16 inputs (8 significant bits, relative rounding 2^-9 = 2e-3 per value) and activations
// are stored in bf16; gradients pass through about ten rounded products from the head down to the
// embedding, and the softmax's p - onehot amplifies the logits' ~1e-3 error, so the GPU's bf16
// gradients are compared with the CPU's fp32 ones (on the same bf16-rounded weights) at 5e-2
// relative (measured 2.2e-2 worst); a wrong index or a missing term gives errors of order 1. Weights after AdamW: the update lr * m / sqrt(v) is scale-free, so
// an element whose gradient is tiny next to its tensor's largest carries that gradient's rounding
// difference (1e-3 relative for it) into a full-size update of lr = 1e-2: 1e-4 against a wrong term,
// which moves weights by lr (3e-2 of their ~0.3 size).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it, vi } from 'vitest';

import './tier.js';

import { GRPOTrainer, loadModel, parseSftConfig, runSft, type RewardFunction } from '../../lib/index.js';
import { DEMO_MODEL_DIR } from '../../lib/demo/shipped.js';
import {
  createNativeTrainer, native, type NativeEngine, type NativeEngineOptions, type NativePolicyLossOptions, type NativeStepOptions, type NativeTrainer,
} from '../../lib/native/binding.js';
import { relError } from '../helpers/fixtures.js';
import { lossWorkspaceBytes } from '../../lib/train/memory-plan.js';
import { openModel } from '../../lib/train/run.js';
import { tmpDir } from '../helpers/tmp.js';
import { allGrads, allParams, args, fixtureEngine, packBatch, sameBits, trainCase, type RowBatch } from '../helpers/train.js';
import { internals, type LladaModel } from '../../lib/model.js';
import { FIXTURES } from '../helpers/fixtures.js';
// @ts-expect-error plain JavaScript module shared with the GPU machine's runner
import { gpuStatus } from './parity.mjs';
// @ts-expect-error plain JavaScript module shared with the GPU machine's runner
import { trainingCases } from './training-cases.mjs';

const status = gpuStatus(native()) as { ok: boolean; reason: string };
if (!status.ok) console.log(`skipping the CUDA training tests: ${status.reason}`);

const P = 'model.transformer.';
const FP32 = 1e-5;
const BF16 = 5e-2;
const STEP = 1e-4;
const ADAMW: NativeStepOptions = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 1 };

type Pair = { V: number; config: Awaited<ReturnType<typeof fixtureEngine>>['config']; cpu: NativeEngine; gpu: NativeEngine; tc: NativeTrainer; tg: NativeTrainer; batch: RowBatch; dispose(): void };

async function pair(name: string, gpu: NativeEngineOptions = { backend: 'cuda', dtype: 'F32' }, checkpoint = false): Promise<Pair> {
  const { engine: cpu, config } = await fixtureEngine(name);
  // bf16 without masters: getParam gives the weights the products read (a Trainer widens them).
  const g = (await fixtureEngine(name, gpu.dtype === 'BF16' ? { masterWeights: false, ...gpu } : gpu)).engine;
  const tc = new (native().Trainer)(cpu, {});
  // bf16: the CPU reference takes the GPU's rounded weights (exact in fp32), so the comparison
  // measures the bf16 arithmetic, not the weights' rounding.
  if (gpu.dtype === 'BF16') for (const p of cpu.paramInfo()) cpu.setParam(p.name, g.getParam(p.name));
  const tg = new (native().Trainer)(g, { checkpointActivations: checkpoint });
  const batch = (await trainCase(name)).batch;
  return {
    V: config.embeddingSize, config, cpu, gpu: g, tc, tg, batch,
    dispose() {
      tc.dispose();
      tg.dispose();
      cpu.dispose();
      g.dispose();
    },
  };
}

function expectClose(a: Map<string, Float32Array>, b: Map<string, Float32Array>, tol: number, what: string) {
  expect(a.size).toBe(b.size);
  for (const [name, x] of a) expect(relError(x, b.get(name)!), `${what} ${name}`).toBeLessThan(tol);
}
function expectNumberClose(a: number, b: number, tol: number, what: string) {
  expect(Math.abs(a - b) / Math.max(Math.abs(b), 1e-30), what).toBeLessThan(tol);
}
function moments(t: NativeTrainer, e: NativeEngine, which: 'm' | 'v'): Map<string, Float32Array> {
  return new Map(e.paramInfo().map((p) => [p.name, t.getMoments(p.name)[which]]));
}

// GRPO inputs that put rows in all three regions: the old log-probs are the current ones shifted
// so that ratio = exp(shift): 0.5 with A < 0 (LOW, clipped), 1.6 with A > 0 (HIGH, clipped), and
// near 1 (unclipped); a reference model a little off the policy, so the k3 KL term is not zero.
function grpoOptions(logprobs: Float32Array, excludeIds: number[]): NativePolicyLossOptions {
  const R = logprobs.length;
  const old = new Float32Array(R), adv = new Float32Array(R), ref = new Float32Array(R);
  for (let r = 0; r < R; r++) {
    const kind = r % 3;
    const shift = kind === 0 ? Math.log(0.5) : kind === 1 ? Math.log(1.6) : 0.05;
    old[r] = logprobs[r]! - shift;
    adv[r] = kind === 0 ? -1.25 : kind === 1 ? 0.75 : r % 2 ? 0.5 : -0.5;
    ref[r] = logprobs[r]! + 0.3 * Math.sin(r + 1);
  }
  return { oldLogprobs: old, advantages: adv, refLogprobs: ref, epsilonLow: 0.2, epsilonHigh: 0.28, beta: 0.04, excludeIds: Int32Array.from(excludeIds) };
}

// An id to exclude that no row targets.
function unusedId(b: RowBatch, embeddingSize: number): number {
  for (let id = embeddingSize - 1; id >= 0; id--) if (!b.targets.includes(id)) return id;
  throw new Error('every id is a target');
}

describe.skipIf(!status.ok)('CUDA training matches the CPU backend (fp32)', () => {
  for (const name of ['gqa_f32', 'mha_f32']) {
    it(`SFT cross-entropy: loss, log-probs and every gradient (${name})`, async () => {
      const p = await pair(name);
      try {
        const a = await p.tc.crossEntropyBackward(...args(p.batch));
        const b = await p.tg.crossEntropyBackward(...args(p.batch));
        expectNumberClose(b.loss, a.loss, FP32, 'loss');
        expect(relError(b.logprobs, a.logprobs)).toBeLessThan(FP32);
        expectClose(allGrads(p.tg, p.gpu), allGrads(p.tc, p.cpu), FP32, 'grad');
        // Forward only: the same loss bit for bit as the backward call's, and no gradients touched.
        const before = allGrads(p.tg, p.gpu);
        const f = await p.tg.crossEntropyLoss(...args(p.batch));
        expect(f.loss).toBe(b.loss);
        expect(sameBits(f.logprobs, b.logprobs)).toBe(true);
        for (const [n, g] of allGrads(p.tg, p.gpu)) expect(sameBits(g, before.get(n)!), n).toBe(true);
      } finally {
        p.dispose();
      }
    });

    it(`GRPO with KL, clipping in both regions and an excluded id: loss, regions and every gradient (${name})`, async () => {
      const p = await pair(name);
      try {
        const V = p.V;
        const exclude = [unusedId(p.batch, V)];
        const lp = (await p.tc.policyLoss(...args(p.batch), grpoOptions(new Float32Array(p.batch.rows.length), exclude))).logprobs;
        const o = grpoOptions(lp, exclude);
        const a = await p.tc.policyLossBackward(...args(p.batch), o);
        const b = await p.tg.policyLossBackward(...args(p.batch), o);
        expect([...a.clipped].filter((x) => x === 1).length).toBeGreaterThan(0);
        expect([...a.clipped].filter((x) => x === 2).length).toBeGreaterThan(0);
        expect([...a.clipped].filter((x) => x === 0).length).toBeGreaterThan(0);
        expect([...b.clipped]).toEqual([...a.clipped]);
        expectNumberClose(b.loss, a.loss, FP32, 'loss');
        expect(relError(b.logprobs, a.logprobs)).toBeLessThan(FP32);
        expectClose(allGrads(p.tg, p.gpu), allGrads(p.tc, p.cpu), FP32, 'grad');
      } finally {
        p.dispose();
      }
    });
  }

  it('identical sequences in a batch are computed once and their rows\' gradients add up (gqa_f32)', async () => {
    const p = await pair('gqa_f32');
    try {
      const b = p.batch;
      const s0 = [...b.tokens.subarray(b.seqStarts[0]!, b.seqStarts[1]!)];
      const s1 = [...b.tokens.subarray(b.seqStarts[1]!, b.seqStarts[2]!)];
      // Three copies of s0 and one of s1, with rows in every copy (some repeated).
      const L0 = s0.length;
      const rows = [1, L0 + 1, 2 * L0 + 3, 2 * L0 + 3, 3 * L0 + 2, 4];
      const batch = packBatch([s0, s0, s0, s1], rows, [5, 5, 9, 9, 11, 7], [0.5, 0.25, 1, 0.5, 2, 0.125]);
      const before = p.gpu.tokensComputed();
      const a = await p.tc.crossEntropyBackward(...args(batch));
      const g = await p.tg.crossEntropyBackward(...args(batch));
      expect(p.gpu.tokensComputed() - before).toBe(L0 + s1.length);
      expectNumberClose(g.loss, a.loss, FP32, 'loss');
      expectClose(allGrads(p.tg, p.gpu), allGrads(p.tc, p.cpu), FP32, 'grad');
    } finally {
      p.dispose();
    }
  });

  it('no rows: a zero loss and zero gradients', async () => {
    const p = await pair('gqa_f32');
    try {
      const empty = { ...p.batch, rows: new Int32Array(0), targets: new Int32Array(0), weights: new Float32Array(0) };
      const r = await p.tg.crossEntropyBackward(...args(empty));
      expect(r.loss).toBe(0);
      expect(r.logprobs).toHaveLength(0);
      for (const [n, g] of allGrads(p.tg, p.gpu)) expect(g.every((x) => x === 0), n).toBe(true);
    } finally {
      p.dispose();
    }
  });

  it('whole SFT and JustGRPO steps: weights and AdamW moments after two clipped steps each (gqa_f32)', async () => {
    const p = await pair('gqa_f32');
    try {
      const V = p.V;
      const exclude = [unusedId(p.batch, V)];
      for (const kind of ['sft', 'grpo'] as const) {
        for (let step = 0; step < 2; step++) {
          p.tc.zeroGrad();
          p.tg.zeroGrad();
          if (kind === 'sft') {
            await p.tc.crossEntropyBackward(...args(p.batch));
            await p.tg.crossEntropyBackward(...args(p.batch));
          } else {
            const lp = (await p.tc.crossEntropyLoss(...args(p.batch))).logprobs;
            const o = grpoOptions(lp, exclude);
            await p.tc.policyLossBackward(...args(p.batch), o);
            await p.tg.policyLossBackward(...args(p.batch), o);
          }
          // GRPO's gradients are far smaller than SFT's: a smaller clip keeps clipping active.
          const o = kind === 'sft' ? ADAMW : { ...ADAMW, maxGradNorm: 1e-3 };
          const a = await p.tc.step(o);
          const b = await p.tg.step(o);
          expect(a.clipped, `${kind} step ${step} clips`).toBe(true);
          expect(b).toMatchObject({ clipped: true, skipped: false, nonFinite: 0 });
          expectNumberClose(b.gradNorm, a.gradNorm, FP32, `${kind} grad norm`);
          expect(p.tg.stepCount).toBe(p.tc.stepCount);
          expectClose(allParams(p.gpu), allParams(p.cpu), STEP, `${kind} step ${step} param`);
          expectClose(moments(p.tg, p.gpu, 'm'), moments(p.tc, p.cpu, 'm'), FP32, `${kind} m`);
          expectClose(moments(p.tg, p.gpu, 'v'), moments(p.tc, p.cpu, 'v'), FP32, `${kind} v`);
        }
      }
    } finally {
      p.dispose();
    }
  });

  it('non-finite gradients: zeroed and counted, or the whole update skipped, as on the CPU', async () => {
    const p = await pair('gqa_f32');
    try {
      const name = `${P}blocks.1.ff_out.weight`;
      const bad = (g: Float32Array) => {
        const x = g.slice();
        x[3] = NaN;
        x[17] = Infinity;
        x[40] = -Infinity;
        return x;
      };
      for (const t of [p.tc, p.tg]) await t.crossEntropyBackward(...args(p.batch));
      for (const t of [p.tc, p.tg]) t.setGrad(name, bad(t.getGrad(name)));
      const before = allParams(p.gpu);
      const mBefore = moments(p.tg, p.gpu, 'm');
      const sa = await p.tc.step({ ...ADAMW, skipNonFinite: true });
      const sb = await p.tg.step({ ...ADAMW, skipNonFinite: true });
      expect(sa).toMatchObject({ skipped: true, nonFinite: 3 });
      expect(sb).toMatchObject({ skipped: true, nonFinite: 3 });
      expect(p.tg.stepCount).toBe(0);
      for (const [n, x] of allParams(p.gpu)) expect(sameBits(x, before.get(n)!), n).toBe(true);
      for (const [n, x] of moments(p.tg, p.gpu, 'm')) expect(sameBits(x, mBefore.get(n)!), n).toBe(true);
      // The skipped step zeroed them too (as the CPU does); poisoned again, and zeroed instead of
      // skipping: the step applies and matches the CPU's.
      for (const t of [p.tc, p.tg]) t.setGrad(name, bad(t.getGrad(name)));
      const za = await p.tc.step(ADAMW);
      const zb = await p.tg.step(ADAMW);
      expect(zb).toMatchObject({ skipped: false, nonFinite: 3 });
      expect(za.nonFinite).toBe(3);
      expectNumberClose(zb.gradNorm, za.gradNorm, FP32, 'grad norm');
      expect(p.tg.getGrad(name).every(Number.isFinite)).toBe(true);
      expectClose(allParams(p.gpu), allParams(p.cpu), STEP, 'param');
    } finally {
      p.dispose();
    }
  });

  it('activation checkpointing gives the same bits as keeping every layer', async () => {
    const a = await pair('gqa_f32');
    const b = await pair('gqa_f32', { backend: 'cuda', dtype: 'F32' }, true);
    try {
      const o = grpoOptions((await a.tg.crossEntropyLoss(...args(a.batch))).logprobs, []);
      const ra = await a.tg.policyLossBackward(...args(a.batch), o);
      const rb = await b.tg.policyLossBackward(...args(b.batch), o);
      expect(rb.loss).toBe(ra.loss);
      const ga = allGrads(a.tg, a.gpu);
      for (const [n, g] of allGrads(b.tg, b.gpu)) expect(sameBits(g, ga.get(n)!), n).toBe(true);
      expect(b.tg.workspaceBytes(64, 16)).toBeLessThan(a.tg.workspaceBytes(64, 16));
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('gradients accumulate across calls until zeroGrad, and getGrad/setGrad/moments round-trip', async () => {
    const p = await pair('gqa_f32');
    try {
      await p.tg.crossEntropyBackward(...args(p.batch));
      const once = allGrads(p.tg, p.gpu);
      await p.tg.crossEntropyBackward(...args(p.batch));
      for (const [n, g] of allGrads(p.tg, p.gpu)) expect(relError(g, once.get(n)!.map((x) => 2 * x)), n).toBeLessThan(1e-6);
      p.tg.zeroGrad();
      for (const g of allGrads(p.tg, p.gpu).values()) expect(g.every((x) => x === 0)).toBe(true);
      const name = `${P}blocks.0.k_proj.weight`;
      const x = Float32Array.from(once.get(name)!, (v, i) => v + i * 1e-3);
      p.tg.setGrad(name, x);
      expect(sameBits(p.tg.getGrad(name), x)).toBe(true);
      p.tg.setMoments(name, x, x.map(Math.abs));
      const m = p.tg.getMoments(name);
      expect(sameBits(m.m, x) && sameBits(m.v, x.map(Math.abs))).toBe(true);
    } finally {
      p.dispose();
    }
  });

});

describe.skipIf(!status.ok)('CUDA training in bf16 against the CPU in fp32', () => {
  it('SFT and GRPO gradients, and a step, within bf16 tolerance (gqa_f32)', async () => {
    const p = await pair('gqa_f32', { backend: 'cuda', dtype: 'BF16' });
    try {
      const a = await p.tc.crossEntropyBackward(...args(p.batch));
      const b = await p.tg.crossEntropyBackward(...args(p.batch));
      expectNumberClose(b.loss, a.loss, BF16, 'loss');
      expectClose(allGrads(p.tg, p.gpu), allGrads(p.tc, p.cpu), BF16, 'grad');
      p.tc.zeroGrad();
      p.tg.zeroGrad();
      const o = grpoOptions(a.logprobs, []);
      const ga = await p.tc.policyLossBackward(...args(p.batch), o);
      const gb = await p.tg.policyLossBackward(...args(p.batch), o);
      expectNumberClose(gb.loss, ga.loss, BF16, 'GRPO loss');
      expectClose(allGrads(p.tg, p.gpu), allGrads(p.tc, p.cpu), BF16, 'GRPO grad');
      // The step updates fp32 master weights; the bf16 weights the products read follow them.
      const before = allParams(p.gpu);
      await p.tc.step(ADAMW);
      const s = await p.tg.step(ADAMW);
      expect(s.skipped).toBe(false);
      const after = allParams(p.gpu);
      // lr 1e-2 moves weights by ~1e-2, far above bf16's rounding of weights of size ~0.1 (4e-4).
      let changed = 0;
      for (const [n, x] of after) if (!sameBits(x, before.get(n)!)) changed++;
      expect(changed).toBe(after.size);
      expectClose(after, allParams(p.cpu), BF16, 'param');
    } finally {
      p.dispose();
    }
  });
});

describe.skipIf(!status.ok)('CUDA bf16 master weights', () => {
  const root = tmpDir('justgrpo-cuda-masters-');
  const isBf16 = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length).every((u) => (u & 0xffff) === 0);

  it("with masters an F32 checkpoint's values load, train and save/reload exactly; without, the weights are bf16 and a trainer widens them", async () => {
    const dir = path.join(FIXTURES, 'gqa_f32');
    const ref = await loadModel(dir);  // the CPU in fp32: the checkpoint's own values
    const withM = await loadModel(dir, { backend: 'cuda', dtype: 'bf16', masterWeights: true });
    const without = await loadModel(dir, { backend: 'cuda', dtype: 'bf16' });
    const out = path.join(root, 'stepped');
    try {
      const names = internals.get(ref)!.engine.paramInfo().map((p) => p.name);
      let rounded = 0;
      for (const name of names) {
        const x = await ref.getParameter(name);
        expect(sameBits(await withM.getParameter(name), x), name).toBe(true);
        const b = await without.getParameter(name);
        expect(isBf16(b), name).toBe(true);
        if (!sameBits(b, x)) rounded++;
      }
      expect(rounded).toBeGreaterThan(0);
      // A step with a learning rate below bf16's resolution of these weights (~1e-3 of their size):
      // the masters move, and a checkpoint written in F32 and loaded again resumes from them exactly.
      const e = internals.get(withM)!.engine;
      const t = createNativeTrainer(e, {});
      const batch = (await trainCase('gqa_f32')).batch;
      await t.crossEntropyBackward(...args(batch));
      expect((await t.step({ ...ADAMW, lr: 1e-6, maxGradNorm: 0 })).skipped).toBe(false);
      t.dispose();
      const stepped = allParams(e);
      let moved = 0;
      for (const name of names) if (!sameBits(stepped.get(name)!, await ref.getParameter(name))) moved++;
      expect(moved).toBeGreaterThan(0);
      await withM.save(out, { dtype: 'F32' });
      const again = await loadModel(out, { backend: 'cuda', dtype: 'bf16', masterWeights: true });
      try {
        for (const name of names) expect(sameBits(await again.getParameter(name), stepped.get(name)!), name).toBe(true);
      } finally {
        again.dispose();
      }
      // Without masters, a trainer starts from the bf16 values (widened exactly).
      const w = internals.get(without)!.engine;
      const before = allParams(w);
      const t2 = createNativeTrainer(w, {});
      for (const [name, x] of allParams(w)) expect(sameBits(x, before.get(name)!), name).toBe(true);
      t2.dispose();
    } finally {
      ref.dispose();
      withM.dispose();
      without.dispose();
    }
  });
});

describe.skipIf(!status.ok)('CUDA training through the public API', () => {
  it('the memory plan\'s loss workspace is the bytes the trainer carves (fp32 and bf16, with and without checkpointing)', async () => {
    for (const dtype of ['F32', 'BF16'] as const) {
      for (const checkpoint of [false, true]) {
        const p = await pair('gqa_f32', { backend: 'cuda', dtype }, checkpoint);
        try {
          for (const [N, R] of [[100, 7], [43, 43], [1, 1]] as const)
            expect(p.tg.workspaceBytes(N, R), `${dtype} ${checkpoint} ${N} ${R}`).toBe(
              lossWorkspaceBytes(p.config, dtype === 'BF16' ? 'bf16' : 'fp32', checkpoint, N, R));
        } finally {
          p.dispose();
        }
      }
    }
  });

  it("a 2-step SFT run with backend 'cuda' (runSft) prints its memory plan and matches the CPU run's losses and checkpoint", async () => {
    const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
    const tmp = tmpDir();
    // One random model saved once (a random model made on the GPU draws other values).
    const init = await openModel({ init: { dModel: 64, nLayers: 2, nHeads: 4, mlpHiddenSize: 128, maxSequenceLength: 96, seed: 1, initStd: 0.05 } }, root);
    const modelDir = path.join(tmp, 'init');
    await init.save(modelDir);
    await init.dispose();
    const run = async (backend: 'cpu' | 'cuda') => {
      const out = path.join(tmp, `sft-${backend}`);
      await runSft({ config: parseSftConfig({
        model: modelDir,
        data: { train: path.join(root, 'examples', 'data', 'arith-tiny.jsonl') },
        batchSize: 4, learningRate: 3e-3, maxSteps: 2, saveSteps: 2, seed: 4, outputDir: out, backend,
      }, 'test') });
      const metrics = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { loss: number; grad_norm: number });
      const model = await loadModel(path.join(out, 'checkpoint-2'));
      const weights = new Map<string, Float32Array>();
      for (const { name } of model.parameterInfo()) weights.set(name, await model.getParameter(name));
      await model.dispose();
      return { metrics, weights };
    };
    const a = await run('cpu');
    const printed: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => (printed.push(String(chunk)), true));
    let b: Awaited<ReturnType<typeof run>>;
    try {
      b = await run('cuda');
    } finally {
      spy.mockRestore();
    }
    expect(printed.join('')).toMatch(/GPU memory plan \(.*fp32\):[\s\S]*AdamW moments[\s\S]*loss workspace/);
    expect(b.metrics).toHaveLength(2);
    b.metrics.forEach((m, i) => {
      expectNumberClose(m.loss, a.metrics[i]!.loss, FP32, `loss of step ${i + 1}`);
      expectNumberClose(m.grad_norm, a.metrics[i]!.grad_norm, FP32, `grad norm of step ${i + 1}`);
    });
    expectClose(b.weights, a.weights, STEP, 'weight in checkpoint-2');
  });

  it("two JustGRPO steps of GRPOTrainer on a 'cuda' model (fp32) match the same steps on the CPU", async () => {
    // Rewards that differ within each group: the number of digits in the completion.
    const digits: RewardFunction = ({ completions }) => completions.map((c) => (c.match(/[0-9]/g) ?? []).length);
    const config = { numGenerations: 4, promptsPerStep: 2, maxCompletionLength: 8, learningRate: 1e-3, seed: 3, maxGradNorm: 0.5 };
    const run = async (backend: 'cpu' | 'cuda') => {
      const model = await loadModel(DEMO_MODEL_DIR, { backend, dtype: 'F32' });
      const trainer = await GRPOTrainer.create(model, config, { rewardFunctions: { digits } });
      try {
        const metrics: Awaited<ReturnType<typeof trainer.step>>[] = [];
        for (const prompts of [['12+9=', '3+4='], ['7*6=', '10-3=']]) metrics.push(await trainer.step(prompts));
        const weights = new Map<string, Float32Array>();
        for (const { name } of model.parameterInfo()) weights.set(name, await model.getParameter(name));
        return { metrics, weights };
      } finally {
        await trainer.dispose();
        await model.dispose();
      }
    };
    const a = await run('cpu');
    const b = await run('cuda');
    for (let s = 0; s < 2; s++) {
      const ma = a.metrics[s]!, mb = b.metrics[s]!;
      // The fp32 rollouts draw the same tokens, so the rewards are the same numbers.
      expect(mb.reward).toBe(ma.reward);
      expect(ma.frac_reward_zero_std).toBeLessThan(1);
      // Both ran the first step's loss backward through the rollout's kept activations.
      if (s === 0) expect(mb.reused_positions).toBe(ma.reused_positions);
      // At ratio 1 the loss is -sum(w A), zero up to rounding (advantages sum to zero per group), so
      // it is compared absolutely; the gradients are not small, and their norm is compared relatively.
      expect(Math.abs(mb.loss - ma.loss), `loss of step ${s + 1}`).toBeLessThan(1e-6);
      expectNumberClose(mb.grad_norm, ma.grad_norm, STEP, `grad norm of step ${s + 1}`);
    }
    expectClose(b.weights, a.weights, STEP, 'weight after two steps');
  });
});

describe.skipIf(!status.ok)('CUDA rollouts that keep their activations for the loss', () => {
  // One GRPOTrainer step each on the same weights: keeping every step, a budget for some steps only,
  // and none; the same tokens, loss and gradients (kept activations are the recomputed ones).
  const digits: RewardFunction = ({ completions }) => completions.map((c) => (c.match(/[0-9]/g) ?? []).length);
  const L = 6;
  async function stepWith(reuseRolloutMemoryMB: number) {
    const model = await loadModel(DEMO_MODEL_DIR, { backend: 'cuda', dtype: 'F32' });
    const trainer = await GRPOTrainer.create(model, {
      numGenerations: 4, promptsPerStep: 2, maxCompletionLength: L, learningRate: 1e-3, seed: 9, reuseRolloutMemoryMB,
    }, { rewardFunctions: { digits } });
    const m = await trainer.step(['5+5=', '9-2=']);
    const grads = new Map(model.parameterInfo().map(({ name }) => [name, trainer.session.getGrad(name)]));
    const kept = trainer.session.keptSteps();
    await trainer.dispose();
    await model.dispose();
    return { m, grads, kept };
  }

  it('gives the same rewards, loss and gradients as recomputing, with every step kept or some', async () => {
    const none = await stepWith(0);
    const all = await stepWith(64);
    // About a third of the steps' activations (a step of 8 sequences of ~12 tokens keeps ~0.9 MB here).
    const some = await stepWith(2);
    expect(none.m.reused_positions).toBe(0);
    expect(all.m.reused_positions).toBe(L);
    expect(some.m.reused_positions).toBeGreaterThan(0);
    expect(some.m.reused_positions).toBeLessThan(L);
    for (const r of [all, some]) {
      expect(r.m.reward).toBe(none.m.reward);
      expect(Math.abs(r.m.loss - none.m.loss)).toBeLessThan(1e-6);
      expectNumberClose(r.m.grad_norm, none.m.grad_norm, FP32, 'grad norm');
      expectClose(r.grads, none.grads, FP32, 'grad');
    }
    // The step changed the weights: what was kept is stale and counts for nothing.
    expect(all.kept.steps).toBe(0);
  });
});

describe.skipIf(!status.ok)('the GPU machine\'s training cases (training-cases.mjs, run by bench/gpu/parity.mjs)', () => {
  const ctx = { loadModel, fixtures: FIXTURES, engineOf: (m: LladaModel) => internals.get(m)!.engine, createTrainer: createNativeTrainer };
  for (const c of trainingCases(ctx) as { name: string; run: (n: unknown) => Promise<unknown> }[]) {
    it(c.name, async () => {
      await expect(c.run(native())).resolves.toBeDefined();
    });
  }
});
