// Central differences of the native loss against the native gradients, a few entries per op
// family, on the fixture model through setParam. Independent of PyTorch: this checks the backward
// against the engine's own forward.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { native, type NativeEngine, type NativeTrainer } from '../../lib/native/binding.js';
import { args, fixtureEngine, trainCase, type RowBatch } from '../helpers/train.js';

const P = 'model.transformer.';
// The op families and a parameter whose gradient runs through each (GQA model: RoPE and attention
// with two query heads per kv head).
const CASES: [string, string][] = [
  ['embedding', `${P}wte.weight`],
  ['rmsnorm (attn_norm)', `${P}blocks.0.attn_norm.weight`],
  ['rmsnorm (ff_norm)', `${P}blocks.1.ff_norm.weight`],
  ['rmsnorm (ln_f)', `${P}ln_f.weight`],
  ['rope + attention scores (q_proj)', `${P}blocks.0.q_proj.weight`],
  ['rope + attention scores (k_proj)', `${P}blocks.1.k_proj.weight`],
  ['attention values (v_proj)', `${P}blocks.0.v_proj.weight`],
  ['matmul (attn_out)', `${P}blocks.1.attn_out.weight`],
  ['swiglu gate (ff_proj)', `${P}blocks.0.ff_proj.weight`],
  ['swiglu linear (up_proj)', `${P}blocks.1.up_proj.weight`],
  ['matmul (ff_out)', `${P}blocks.0.ff_out.weight`],
  ['LM head + log-softmax', `${P}ff_out.weight`],
];

// The model is fp32 (the loss is summed in double): a step of 1e-2 balances truncation against
// rounding, and differences land within ~1e-4 of each tensor's largest gradient. 1e-3 leaves room
// and still fails a gradient that is off by a term (those err by 1e-2 and more).
const H = 1e-2;
const TOL = 1e-3;

describe('gradients agree with central differences of the loss (gqa_f32)', () => {
  let engine: NativeEngine;
  let trainer: NativeTrainer;
  let batch: RowBatch;
  beforeAll(async () => {
    ({ engine } = await fixtureEngine('gqa_f32'));
    trainer = new (native().Trainer)(engine);
    batch = (await trainCase('gqa_f32')).batch;
    await trainer.crossEntropyBackward(...args(batch));
  });
  afterAll(() => {
    trainer?.dispose();
    engine?.dispose();
  });

  async function centralDifference(name: string, p: Float32Array, i: number, h: number): Promise<number> {
    const q = p.slice();
    q[i] = p[i]! + h;
    engine.setParam(name, q);
    const up = (await trainer.crossEntropyLoss(...args(batch))).loss;
    q[i] = p[i]! - h;
    engine.setParam(name, q);
    const down = (await trainer.crossEntropyLoss(...args(batch))).loss;
    engine.setParam(name, p);
    return (up - down) / (Math.fround(p[i]! + h) - Math.fround(p[i]! - h));
  }

  it.each(CASES)('%s: %s', async (_family, name) => {
    const g = trainer.getGrad(name);
    const p = engine.getParam(name);
    const scale = Math.max(...g.map(Math.abs));
    expect(scale).toBeGreaterThan(0);
    // The three largest entries and three more from a fixed stride (nonzero ones: an embedding row
    // of a token absent from the batch has an exact zero gradient and nothing to check).
    const order = [...g.keys()].sort((a, b) => Math.abs(g[b]!) - Math.abs(g[a]!));
    const nonzero = order.filter((i) => g[i] !== 0);
    const picks = [...new Set([...order.slice(0, 3), ...[0.3, 0.6, 0.9].map((f) => nonzero[Math.floor(f * nonzero.length)]!)])];
    let checked = 0;
    for (const i of picks) {
      const fd = await centralDifference(name, p, i, H);
      // A kink shows as a difference that changes with the step; the model is smooth (no ReLU, no
      // max over inputs in the loss), so none should be skipped, and at most one may be.
      const fdHalf = await centralDifference(name, p, i, H / 2);
      if (Math.abs(fd - fdHalf) > TOL * scale) continue;
      expect(Math.abs(fd - g[i]!) / scale, `${name}[${i}]: gradient ${g[i]} vs central difference ${fd}`).toBeLessThan(TOL);
      checked++;
    }
    expect(checked).toBeGreaterThanOrEqual(picks.length - 1);
  });
});
