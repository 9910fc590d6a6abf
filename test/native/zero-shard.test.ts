// ZeRO-1's optimizer shards in one process: the blocks OptimizerShard::of gives (64-element
// aligned, empty past the layout), the moments a shard holds (zeros outside it, writes outside
// ignored, a checkpoint's slice read back), and a one-rank shard's step equal to the unsharded step
// bit for bit. The multi-rank runs are test/native/zero.test.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { buildSafetensorsHeader, charModelConfig, InsufficientMemoryError, LladaModel, readSafetensorsHeader } from '../../lib/index.js';
import { internals } from '../../lib/model.js';
import { TrainingSession } from '../../lib/train/session.js';
import { createNativeTrainer, native, type NativeEngine, type NativeMoment, type NativeStepOptions, type NativeTrainer } from '../../lib/native/binding.js';
import { args, randomBatch, randomEngine, sameBits } from '../helpers/train.js';

const ADAMW: NativeStepOptions = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 0.5 };

const open: { dispose(): void }[] = [];
const tmp = mkdtempSync(path.join(os.tmpdir(), 'justgrpo-zero-'));
afterAll(() => {
  for (const o of open.reverse()) o.dispose();
  rmSync(tmp, { recursive: true, force: true });
});
function trainerFor(engine: NativeEngine): NativeTrainer {
  const t = new (native().Trainer)(engine, { checkpointActivations: false });
  open.push(t);
  return t;
}
async function engine(): Promise<NativeEngine> {
  const e = await randomEngine();
  open.push(e);
  return e;
}
/** The layout's flat size (alignment padding included): a one-rank shard ends there. */
function layoutTotal(e: NativeEngine): number {
  const t = trainerFor(e);
  t.shardOptimizer(0, 1);
  return t.optimizerShard!.end;
}

describe('OptimizerShard::of', () => {
  it('equal 64-aligned blocks that cover the layout; ranks past it get empty shards', async () => {
    const e = await engine();
    const total = layoutTotal(e);
    const one = trainerFor(e);
    expect(one.optimizerShard).toBeNull();
    one.shardOptimizer(0, 1);
    expect(one.optimizerShard).toEqual({ begin: 0, end: total, block: Math.ceil(total / 64) * 64, rank: 0, ranks: 1 });
    // Three ranks: ceil(total / 3) rounded up to 64; the last block is the shorter one.
    const block3 = Math.ceil(Math.ceil(total / 3) / 64) * 64;
    const shards3 = [0, 1, 2].map((r) => {
      const t = trainerFor(e);
      t.shardOptimizer(r, 3);
      return t.optimizerShard!;
    });
    expect(shards3.map((s) => [s.begin, s.end, s.block])).toEqual([[0, block3, block3], [block3, 2 * block3, block3], [2 * block3, total, block3]]);
    // More ranks than 64-element blocks: blocks of 64, the ranks past the layout hold nothing.
    const ranks = Math.ceil(total / 64) + 3;
    const last = trainerFor(e);
    last.shardOptimizer(ranks - 1, ranks);
    expect(last.optimizerShard).toMatchObject({ begin: total, end: total, block: 64 });
    const edge = trainerFor(e);
    edge.shardOptimizer(Math.floor(total / 64), ranks);
    expect(edge.optimizerShard).toMatchObject({ begin: Math.floor(total / 64) * 64, end: total, block: 64 });
  });

  it('rejects a rank outside [0, ranks), and a second sharding', async () => {
    const e = await engine();
    const t = trainerFor(e);
    expect(() => t.shardOptimizer(2, 2)).toThrow(/Expected an integer in \[0, 2\) for `rank` but received number 2/);
    expect(() => t.shardOptimizer(0, 0)).toThrow(/Expected an integer >= 1 for `ranks`/);
    t.shardOptimizer(1, 2);
    expect(() => t.shardOptimizer(1, 2)).toThrow(/already sharded/);
  });
});

describe('a sharded optimizer state', () => {
  it("each rank's moments are its block: the shards of 3 ranks add up to the whole, writes outside a shard are ignored", async () => {
    const e = await engine();
    const infos = e.paramInfo();
    const trainers = [0, 1, 2].map((r) => {
      const t = trainerFor(e);
      t.shardOptimizer(r, 3);
      return t;
    });
    for (const p of infos) {
      const n = p.shape.reduce((a, b) => a * b, 1);
      const m = Float32Array.from({ length: n }, (_, i) => i + 1), v = Float32Array.from({ length: n }, (_, i) => 2 * i + 1);
      for (const t of trainers) t.setMoments(p.name, m, v);
      const sum = { m: new Float32Array(n), v: new Float32Array(n) };
      let held = 0;
      for (const t of trainers) {
        const got = t.getMoments(p.name);
        for (let i = 0; i < n; i++) {
          // Each element is held by exactly one rank: the others read 0.
          if (got.m[i] !== 0) held++;
          sum.m[i] += got.m[i]!;
          sum.v[i] += got.v[i]!;
        }
      }
      expect(held, p.name).toBe(n);
      expect(sameBits(sum.m, m) && sameBits(sum.v, v), p.name).toBe(true);
    }
  });

  it('a checkpoint of the whole state loads into shards: each reads its slice', async () => {
    const e = await engine();
    const whole = trainerFor(e);
    const infos = e.paramInfo();
    for (const p of infos) {
      const n = p.shape.reduce((a, b) => a * b, 1);
      whole.setMoments(p.name, Float32Array.from({ length: n }, (_, i) => Math.sin(i + n)), Float32Array.from({ length: n }, (_, i) => 1 + Math.cos(i)));
    }
    const entries = infos.flatMap((p) => (['m', 'v'] as NativeMoment[]).map((moment) => ({ name: p.name, moment, shape: p.shape })));
    const { header } = buildSafetensorsHeader(entries.map((x) => ({ name: `${x.moment}.${x.name}`, dtype: 'F32', shape: x.shape })));
    const file = path.join(tmp, 'optimizer.safetensors');
    await whole.saveMoments(file, header, entries.map(({ name, moment }) => ({ name, moment })));
    const h = await readSafetensorsHeader(file);
    const items = entries.map(({ name, moment }) => ({ name, moment, offset: h.tensors.get(`${moment}.${name}`)!.offset, dtype: 'F32' as const }));
    const shards = [0, 1].map((r) => {
      const t = trainerFor(e);
      t.shardOptimizer(r, 2);
      return t;
    });
    for (const t of shards) await t.loadMoments(file, items);
    for (const p of infos) {
      const a = shards[0]!.getMoments(p.name), b = shards[1]!.getMoments(p.name), w = whole.getMoments(p.name);
      expect(sameBits(a.m.map((x, i) => x + b.m[i]!), w.m) && sameBits(a.v.map((x, i) => x + b.v[i]!), w.v), p.name).toBe(true);
    }
  });

  it("one rank's shard (the whole layout) steps bit-identically to the unsharded state, weight decay and clipping included", async () => {
    const [ea, eb] = [await engine(), await engine()];
    const ta = trainerFor(ea), tb = trainerFor(eb);
    tb.shardOptimizer(0, 1);
    for (let s = 0; s < 3; s++) {
      const batch = randomBatch(3, 12, 100, 99, 11 + s);
      const ra = [], rb = [];
      for (const [t, r] of [[ta, ra], [tb, rb]] as const) {
        t.zeroGrad();
        await t.crossEntropyBackward(...args(batch));
        r.push(await t.step(ADAMW));
      }
      expect(rb).toEqual(ra);
      expect(ra[0]!.clipped).toBe(true);
    }
    for (const p of ea.paramInfo()) {
      expect(sameBits(eb.getParam(p.name), ea.getParam(p.name)), p.name).toBe(true);
      const x = ta.getMoments(p.name), y = tb.getMoments(p.name);
      expect(sameBits(y.m, x.m) && sameBits(y.v, x.v), p.name).toBe(true);
    }
  });

  it('a shard of several ranks cannot step without the communicator', async () => {
    const e = await engine();
    const t = trainerFor(e);
    t.shardOptimizer(1, 3);
    await t.crossEntropyBackward(...args(randomBatch(2, 8, 100, 99)));
    await expect(t.step(ADAMW)).rejects.toThrow(/A step of one rank's optimizer shard needs the other 2 ranks/);
  });
});

describe('a Training made sharded (optimizerShard at construction)', () => {
  it('holds the same shard as shardOptimizer after construction, and steps the same', async () => {
    const [ea, eb] = [await engine(), await engine()];
    const ta = trainerFor(ea);
    ta.shardOptimizer(0, 1);
    const tb = new (native().Trainer)(eb, { optimizerShard: { rank: 0, ranks: 1 } });
    open.push(tb);
    expect(tb.optimizerShard).toEqual(ta.optimizerShard);
    const three = new (native().Trainer)(eb, { optimizerShard: { rank: 2, ranks: 3 } });
    open.push(three);
    expect(three.optimizerShard).toMatchObject({ rank: 2, ranks: 3 });
    const batch = randomBatch(3, 12, 100, 99, 5);
    for (const t of [ta, tb]) {
      await t.crossEntropyBackward(...args(batch));
      await t.step(ADAMW);
    }
    for (const p of ea.paramInfo()) expect(sameBits(eb.getParam(p.name), ea.getParam(p.name)), p.name).toBe(true);
    expect(() => new (native().Trainer)(eb, { optimizerShard: { rank: 3, ranks: 3 } })).toThrow(/Expected an integer in \[0, 3\) for `rank`/);
  });

  it('allocates only its shard of the moments: a state that does not fit whole fits as 1 of 8 shards', async () => {
    // About 10M parameters: whole, 120 MB of gradients and moments do not fit under a 100 MB limit;
    // as 1 of 8 shards, 40 MB of gradients and 10 MB of moments do.
    const m = await LladaModel.random(charModelConfig({ dModel: 512, nLayers: 3, nHeads: 8, mlpHiddenSize: 1536, maxSequenceLength: 64 }));
    const saved = process.env.JUSTGRPO_MEMORY_LIMIT;
    process.env.JUSTGRPO_MEMORY_LIMIT = String(100 * 1024 * 1024);
    try {
      expect(() => TrainingSession.create(m)).toThrow(InsufficientMemoryError);
      const t = createNativeTrainer(internals.get(m)!.engine, { optimizerShard: { rank: 7, ranks: 8 } });
      expect(t.optimizerShard).toMatchObject({ rank: 7, ranks: 8 });
      t.dispose();
    } finally {
      if (saved === undefined) delete process.env.JUSTGRPO_MEMORY_LIMIT;
      else process.env.JUSTGRPO_MEMORY_LIMIT = saved;
      await m.dispose();
    }
  });
});
