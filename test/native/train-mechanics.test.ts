// What the trainer promises beyond matching PyTorch: accumulation, activation checkpointing,
// determinism, non-finite gradients, clipping, weight decay, optimizer state round trips,
// argument validation, disposal, and not blocking the event loop.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { buildSafetensorsHeader, readSafetensorsHeader } from '../../lib/index.js';
import { native, type NativeEngine, type NativeMoment, type NativeStepOptions, type NativeTrainer } from '../../lib/native/binding.js';
import { relError } from '../helpers/fixtures.js';
import {
  allGrads, allParams, args, fixtureEngine, packBatch, randomBatch, randomEngine, sameBits, trainCase,
} from '../helpers/train.js';

const P = 'model.transformer.';
const ADAMW: NativeStepOptions = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 1 };

const open: { dispose(): void }[] = [];
afterAll(() => {
  for (const o of open.reverse()) o.dispose();
});
function trainerFor(engine: NativeEngine, checkpointActivations = false): NativeTrainer {
  const t = new (native().Trainer)(engine, { checkpointActivations });
  open.push(t);
  return t;
}
async function fixture(name = 'gqa_f32') {
  const { engine } = await fixtureEngine(name);
  open.push(engine);
  return { engine, batch: (await trainCase(name)).batch };
}
function norm(grads: Map<string, Float32Array>): number {
  let s = 0;
  for (const g of grads.values()) for (const x of g) s += x * x;
  return Math.sqrt(s);
}

describe('gradient accumulation', () => {
  it('two half batches give the gradients of the full batch', async () => {
    const { engine, batch } = await fixture();
    const trainer = trainerFor(engine);
    await trainer.crossEntropyBackward(...args(batch));
    const full = allGrads(trainer, engine);
    // Split by sequence: the first two sequences, then the third, rows re-indexed to each half.
    const cut = batch.seqStarts[2]!;
    const seqs = [0, 1, 2].map((s) => [...batch.tokens.subarray(batch.seqStarts[s]!, batch.seqStarts[s + 1]!)]);
    const pick = (inA: boolean) => [...batch.rows.keys()].filter((r) => (batch.rows[r]! < cut) === inA);
    const half = (inA: boolean) => {
      const idx = pick(inA);
      return packBatch(inA ? seqs.slice(0, 2) : seqs.slice(2), idx.map((r) => batch.rows[r]! - (inA ? 0 : cut)),
        idx.map((r) => batch.targets[r]!), idx.map((r) => batch.weights[r]!));
    };
    trainer.zeroGrad();
    const a = await trainer.crossEntropyBackward(...args(half(true)));
    const b = await trainer.crossEntropyBackward(...args(half(false)));
    const total = await trainer.crossEntropyLoss(...args(batch));
    expect(Math.abs(a.loss + b.loss - total.loss) / total.loss).toBeLessThan(1e-6);
    // Same sums in another order: fp32 rounding only.
    for (const [name, g] of allGrads(trainer, engine)) expect(relError(g, full.get(name)!), name).toBeLessThan(1e-5);
  });
});

describe('rows', () => {
  it('a repeated row counts like one row with the summed weight; no rows is a zero loss and zero gradients', async () => {
    const { engine, batch } = await fixture();
    const trainer = trainerFor(engine);
    const twice = { ...batch, rows: Int32Array.from([5, 5, 30]), targets: Int32Array.from([3, 3, 62]), weights: Float32Array.from([0.25, 0.5, 1]) };
    const once = { ...batch, rows: Int32Array.from([5, 30]), targets: Int32Array.from([3, 62]), weights: Float32Array.from([0.75, 1]) };
    const a = await trainer.crossEntropyBackward(...args(twice));
    const ga = allGrads(trainer, engine);
    trainer.zeroGrad();
    const b = await trainer.crossEntropyBackward(...args(once));
    expect(Math.abs(a.loss - b.loss) / b.loss).toBeLessThan(1e-6);
    expect(a.logprobs[0]).toBe(a.logprobs[1]);
    // Target 62 lies in the padded rows of the embedding (>= vocab_size 61): allowed, logits span 64.
    expect(a.logprobs[2]).toBe(b.logprobs[1]);
    for (const [name, g] of allGrads(trainer, engine)) expect(relError(ga.get(name)!, g), name).toBeLessThan(1e-5);
    trainer.zeroGrad();
    const none = await trainer.crossEntropyBackward(...args({ ...batch, rows: new Int32Array(0), targets: new Int32Array(0), weights: new Float32Array(0) }));
    expect(none.loss).toBe(0);
    expect(none.logprobs.length).toBe(0);
    for (const [name, g] of allGrads(trainer, engine)) expect(g.every((x) => x === 0), name).toBe(true);
  });
});

describe('identical sequences', () => {
  it('are computed once: the loss and gradients of a batch with repeats equal those of separate calls', async () => {
    const { engine, batch } = await fixture();
    const trainer = trainerFor(engine);
    const seqs = [0, 1, 2].map((s) => [...batch.tokens.subarray(batch.seqStarts[s]!, batch.seqStarts[s + 1]!)]);
    // Packed as [s0, s1, s1, s2, s1]: sequence 1 three times, each copy with its own rows, targets and weights.
    const [len0, len1, len2] = seqs.map((x) => x.length) as [number, number, number];
    const at = [len0, len0 + len1, len0 + 2 * len1 + len2];  // where the copies of s1 start
    const inS1 = [1, 3, len1 - 1];
    const repeated = packBatch([seqs[0]!, seqs[1]!, seqs[1]!, seqs[2]!, seqs[1]!],
      [2, ...at.flatMap((o) => inS1.map((r) => o + r))],
      [7, 1, 2, 3, 4, 5, 6, 9, 10, 11], [1, 0.5, 0.25, 2, 1, 1, 1, 0.75, 0.5, 0.125]);
    expect(repeated.rows.length).toBe(10);
    const before = engine.tokensComputed();
    const a = await trainer.crossEntropyBackward(...args(repeated));
    // Three distinct sequences went through the layers, not five.
    expect(engine.tokensComputed() - before).toBe(len0 + len1 + len2);
    const ga = allGrads(trainer, engine);
    trainer.zeroGrad();
    // The same rows as separate calls: sequence 0, then each copy of sequence 1 alone.
    const rowLists = [[2], inS1, inS1, inS1];
    const targetLists = [[7], [1, 2, 3], [4, 5, 6], [9, 10, 11]];
    const weightLists = [[1], [0.5, 0.25, 2], [1, 1, 1], [0.75, 0.5, 0.125]];
    let total = 0;
    const parts: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await trainer.crossEntropyBackward(...args(packBatch([i === 0 ? seqs[0]! : seqs[1]!], rowLists[i]!, targetLists[i]!, weightLists[i]!)));
      total += r.loss;
      parts.push(...r.logprobs);
    }
    expect(Math.abs(a.loss - total) / Math.abs(total)).toBeLessThan(1e-6);
    a.logprobs.forEach((lp, i) => expect(Math.abs(lp - parts[i]!)).toBeLessThan(1e-5));
    for (const [name, g] of allGrads(trainer, engine)) expect(relError(ga.get(name)!, g), name).toBeLessThan(1e-5);
  });
});

describe('activation checkpointing', () => {
  it('gives bit-identical loss and gradients with less workspace', async () => {
    // Three layers: the last runs on the rows only and is always kept, so checkpointing saves
    // memory from the third layer on.
    const engine = await randomEngine({ nLayers: 3 });
    open.push(engine);
    const batch = randomBatch(4, 40, 100, 99);
    const plain = trainerFor(engine, false);
    const ckpt = trainerFor(engine, true);
    const a = await plain.crossEntropyBackward(...args(batch));
    const b = await ckpt.crossEntropyBackward(...args(batch));
    expect(b.loss).toBe(a.loss);
    expect(sameBits(b.logprobs, a.logprobs)).toBe(true);
    const ga = allGrads(plain, engine), gb = allGrads(ckpt, engine);
    for (const [name, g] of ga) expect(sameBits(gb.get(name)!, g), name).toBe(true);
    expect(ckpt.workspaceBytes(160, 80)).toBeLessThan(plain.workspaceBytes(160, 80));
  });
});

describe('determinism', () => {
  // Large enough that every threaded kernel splits its work (attention over 8 sequences x 2 kv
  // heads, norms over 512 rows), so any dependence on thread timing would show.
  async function run(): Promise<{ losses: number[]; norms: number[]; params: Map<string, Float32Array>; grads: Map<string, Float32Array> }> {
    const engine = await randomEngine({ dModel: 128, mlpHiddenSize: 320 }, 3);
    open.push(engine);
    const trainer = trainerFor(engine);
    const batch = randomBatch(8, 64, 100, 99, 11);
    const losses: number[] = [], norms: number[] = [];
    for (let s = 0; s < 3; s++) {
      trainer.zeroGrad();
      losses.push((await trainer.crossEntropyBackward(...args(batch))).loss);
      norms.push((await trainer.step({ ...ADAMW, lr: 1e-2 })).gradNorm);
    }
    return { losses, norms, params: allParams(engine), grads: allGrads(trainer, engine) };
  }

  it('two runs give bit-identical losses, gradients and weights', async () => {
    const a = await run();
    const b = await run();
    expect(b.losses).toEqual(a.losses);
    expect(b.norms).toEqual(a.norms);
    for (const [name, p] of a.params) expect(sameBits(b.params.get(name)!, p), name).toBe(true);
    for (const [name, g] of a.grads) expect(sameBits(b.grads.get(name)!, g), name).toBe(true);
  });
});

describe('step', () => {
  it('zeroes and counts non-finite gradients (a NaN weight)', async () => {
    const { engine, batch } = await fixture();
    const trainer = trainerFor(engine);
    // A NaN in the embedding of a token of the first sequence only: that sequence's activations
    // turn NaN, the other sequences' stay finite, so some gradients are NaN and some are not.
    const tok = [...batch.tokens.subarray(0, batch.seqStarts[1]!)].find(
      (t) => !batch.tokens.subarray(batch.seqStarts[1]!).includes(t))!;
    const wte = engine.getParam(`${P}wte.weight`);
    const d = wte.length / 64;
    const poisoned = wte.slice();
    poisoned[tok * d + 3] = NaN;
    engine.setParam(`${P}wte.weight`, poisoned);
    await trainer.crossEntropyBackward(...args(batch));
    let bad = 0, total = 0;
    for (const g of allGrads(trainer, engine).values()) {
      total += g.length;
      for (const x of g) if (!Number.isFinite(x)) bad++;
    }
    expect(bad).toBeGreaterThan(0);
    expect(bad).toBeLessThan(total);
    const r = await trainer.step(ADAMW);
    expect(r.nonFinite).toBe(bad);
    expect(Number.isFinite(r.gradNorm)).toBe(true);
    for (const [name, g] of allGrads(trainer, engine)) expect(g.every(Number.isFinite), name).toBe(true);
    // Only the poisoned element itself stays NaN among the weights.
    let nanParams = 0;
    for (const p of allParams(engine).values()) for (const x of p) if (Number.isNaN(x)) nanParams++;
    expect(nanParams).toBe(1);
  });

  it('clips to maxGradNorm, reports the norm before clipping and leaves the gradients clipped', async () => {
    const { engine, batch } = await fixture();
    const trainer = trainerFor(engine);
    await trainer.crossEntropyBackward(...args(batch));
    const before = norm(allGrads(trainer, engine));
    const r = await trainer.step({ ...ADAMW, maxGradNorm: before / 4 });
    expect(r.clipped).toBe(true);
    expect(Math.abs(r.gradNorm - before) / before).toBeLessThan(1e-6);
    expect(Math.abs(norm(allGrads(trainer, engine)) - before / 4) / (before / 4)).toBeLessThan(1e-5);
    // The first moment saw the clipped gradient: m = (1 - beta1) * g.
    const name = `${P}blocks.0.q_proj.weight`;
    const g = trainer.getGrad(name);
    const { m } = trainer.getMoments(name);
    expect(relError(m, g.map((x) => x * 0.1))).toBeLessThan(1e-6);
  });

  it('does not clip below maxGradNorm, nor with maxGradNorm 0 or Infinity', async () => {
    const { engine, batch } = await fixture();
    const trainer = trainerFor(engine);
    for (const maxGradNorm of [1e9, 0, Infinity]) {
      trainer.zeroGrad();
      await trainer.crossEntropyBackward(...args(batch));
      const g = allGrads(trainer, engine);
      const r = await trainer.step({ ...ADAMW, maxGradNorm });
      expect(r.clipped).toBe(false);
      for (const [name, x] of allGrads(trainer, engine)) expect(sameBits(x, g.get(name)!), name).toBe(true);
    }
  });

  it('decays 2-D weight matrices only, never the RMSNorm weights', async () => {
    const { engine } = await fixture();
    const trainer = trainerFor(engine);
    const before = allParams(engine);
    // Zero gradients and moments: the Adam term is 0 / (0 + eps) = 0, leaving the decay alone.
    trainer.zeroGrad();
    await trainer.step({ ...ADAMW, lr: 0.1, weightDecay: 0.5 });
    const decay = Math.fround(1 - 0.1 * 0.5);
    const shapes = new Map(engine.paramInfo().map((p) => [p.name, p.shape]));
    for (const [name, p] of allParams(engine)) {
      const want = shapes.get(name)!.length === 2 ? before.get(name)!.map((x) => Math.fround(x * decay)) : before.get(name)!;
      expect(sameBits(p, want), name).toBe(true);
    }
    expect(trainer.stepCount).toBe(1);
  });

  it('zeroGrad clears the gradients', async () => {
    const { engine, batch } = await fixture();
    const trainer = trainerFor(engine);
    await trainer.crossEntropyBackward(...args(batch));
    expect(trainer.getGrad(`${P}ln_f.weight`).some((x) => x !== 0)).toBe(true);
    trainer.zeroGrad();
    for (const [name, g] of allGrads(trainer, engine)) expect(g.every((x) => x === 0), name).toBe(true);
    // ... and the next backward starts from zero.
    await trainer.crossEntropyBackward(...args(batch));
    const once = trainer.getGrad(`${P}ln_f.weight`);
    trainer.zeroGrad();
    await trainer.crossEntropyBackward(...args(batch));
    expect(sameBits(trainer.getGrad(`${P}ln_f.weight`), once)).toBe(true);
  });
});

describe('optimizer state', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'justgrpo-train-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  async function steps(engine: NativeEngine, trainer: NativeTrainer, n: number) {
    const batch = (await trainCase('gqa_f32')).batch;
    for (let s = 0; s < n; s++) {
      trainer.zeroGrad();
      await trainer.crossEntropyBackward(...args(batch));
      await trainer.step(ADAMW);
    }
  }

  it('a run restored from saveMoments/loadMoments, the weights and stepCount continues bit-identically', async () => {
    const { engine: a } = await fixture();
    await steps(a, trainerFor(a), 3);

    const { engine: b } = await fixture();
    const tb = trainerFor(b);
    await steps(b, tb, 2);
    const infos = b.paramInfo();
    const entries = infos.flatMap((p) => (['m', 'v'] as NativeMoment[]).map((moment) => ({ name: p.name, moment, shape: p.shape })));
    const { header } = buildSafetensorsHeader(entries.map((e) => ({ name: `${e.moment}.${e.name}`, dtype: 'F32', shape: e.shape })));
    const file = path.join(tmp, 'optimizer.safetensors');
    await tb.saveMoments(file, header, entries.map(({ name, moment }) => ({ name, moment })));
    const weights = allParams(b);
    const stepCount = tb.stepCount;

    const { engine: c } = await fixture();
    for (const [name, w] of weights) c.setParam(name, w);
    const tc = trainerFor(c);
    const h = await readSafetensorsHeader(file);
    await tc.loadMoments(file, entries.map(({ name, moment }) => {
      const t = h.tensors.get(`${moment}.${name}`)!;
      return { name, moment, offset: t.offset, dtype: 'F32' as const };
    }));
    for (const p of infos) {
      const x = tb.getMoments(p.name), y = tc.getMoments(p.name);
      expect(sameBits(y.m, x.m) && sameBits(y.v, x.v), p.name).toBe(true);
    }
    tc.stepCount = stepCount;
    await steps(c, tc, 1);
    for (const [name, w] of allParams(a)) expect(sameBits(c.getParam(name), w), name).toBe(true);
  });

  it('getMoments/setMoments and stepCount restore the state too', async () => {
    const { engine: a } = await fixture();
    const ta = trainerFor(a);
    await steps(a, ta, 2);
    const { engine: b } = await fixture();
    for (const [name, w] of allParams(a)) b.setParam(name, w);
    const tb = trainerFor(b);
    for (const p of a.paramInfo()) {
      const { m, v } = ta.getMoments(p.name);
      tb.setMoments(p.name, m, v);
    }
    tb.stepCount = ta.stepCount;
    await steps(a, ta, 1);
    await steps(b, tb, 1);
    for (const [name, w] of allParams(a)) expect(sameBits(b.getParam(name), w), name).toBe(true);
    expect(() => (tb.stepCount = -1)).toThrow(/`stepCount`/);
    expect(() => tb.setMoments(`${P}ln_f.weight`, new Float32Array(3), new Float32Array(3))).toThrow(/`m`/);
  });
});

describe('arguments', () => {
  it('are validated with one clear error naming the argument', async () => {
    const { engine, batch } = await fixture();
    const trainer = trainerFor(engine);
    const call = (change: Partial<typeof batch>) => () => trainer.crossEntropyBackward(...args({ ...batch, ...change }));
    const N = batch.tokens.length, R = batch.rows.length;
    const bad: [Partial<typeof batch>, RegExp][] = [
      [{ tokens: batch.tokens.map((t, i) => (i === 5 ? 61 : t)) }, /token ids in \[0, 61\) for `tokens` but received 61 at index 5/],
      [{ tokens: new Float32Array(N) as unknown as Int32Array }, /Expected an Int32Array for `tokens` but received a Float32Array/],
      [{ seqStarts: Int32Array.from([0, 9, N - 1]) }, /`seqStarts`/],
      [{ seqStarts: Int32Array.from([0, 9, 9, N]) }, /sequences of 1 to 64 tokens for `seqStarts`/],
      [{ rows: batch.rows.map((r, i) => (i === 2 ? N : r)) }, /row indices in \[0, 43\) for `rows` but received 43 at index 2/],
      [{ targets: batch.targets.subarray(1) }, /one target per row \(15\) for `targets`/],
      [{ targets: batch.targets.map((t, i) => (i === 0 ? 64 : t)) }, /target ids in \[0, 64\) for `targets`/],
      [{ weights: new Float32Array(R + 1) }, /one weight per row \(15\) for `weights`/],
      [{ weights: batch.weights.map((w, i) => (i === 1 ? NaN : w)) }, /finite weights for `weights`/],
    ];
    for (const [change, msg] of bad) expect(call(change)).toThrow(msg);
    expect(call({})).not.toThrow();
    await Promise.resolve();
    for (const [opts, msg] of [
      [{ ...ADAMW, lr: NaN }, /`lr`/], [{ ...ADAMW, beta1: 1 }, /`beta1`/], [{ ...ADAMW, beta2: -0.1 }, /`beta2`/],
      [{ ...ADAMW, eps: 0 }, /`eps`/], [{ ...ADAMW, weightDecay: -1 }, /`weightDecay`/], [{ ...ADAMW, maxGradNorm: -1 }, /`maxGradNorm`/],
      [{ lr: 1e-3 }, /`beta1`/],
    ] as [NativeStepOptions, RegExp][])
      expect(() => trainer.step(opts)).toThrow(msg);
    expect(() => trainer.getGrad('nope')).toThrow(/parameter name for `name`/);
    expect(() => new (native().Trainer)({} as NativeEngine)).toThrow(/Expected an Engine for `engine`/);
  });

  it('calls are refused while the engine is busy, and after dispose', async () => {
    const { engine, batch } = await fixture();
    const trainer = trainerFor(engine);
    const running = trainer.crossEntropyBackward(...args(batch));
    expect(() => trainer.crossEntropyLoss(...args(batch))).toThrow(/busy/);
    expect(() => engine.forward(batch.tokens, batch.seqStarts, batch.rows)).toThrow(/busy/);
    expect(() => trainer.getGrad(`${P}ln_f.weight`)).toThrow(/busy/);
    await running;
    trainer.dispose();
    expect(() => trainer.zeroGrad()).toThrow(/Trainer is disposed/);
    expect(() => trainer.crossEntropyBackward(...args(batch))).toThrow(/Trainer is disposed/);
    const other = trainerFor(engine);
    engine.dispose();
    expect(() => other.step(ADAMW)).toThrow(/Model is disposed/);
  });
});

describe('event loop', () => {
  it('crossEntropyBackward does not block it', async () => {
    const engine = await randomEngine({ dModel: 256, nLayers: 4, nHeads: 4, nKvHeads: 4, mlpHiddenSize: 768 });
    open.push(engine);
    const trainer = trainerFor(engine);
    const batch = randomBatch(8, 64, 100, 99);
    let turns = 0, done = false;
    const spin = () => {
      if (done) return;
      turns++;
      setImmediate(spin);
    };
    setImmediate(spin);
    await trainer.crossEntropyBackward(...args(batch));
    done = true;
    expect(turns).toBeGreaterThan(5);
  });
});
