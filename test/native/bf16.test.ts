// The CPU backend's bf16 compute dtype (matrix products with bf16 inputs and fp32 sums through
// oneDNN, fp32 master weights, everything else fp32) against the fp32 engine, its exact reference.
//
// Tolerances. Rounding an input to bf16 errs by at most 2^-9 relative (8 significant bits, round to
// nearest). A product of length K sums K terms, each off by up to ~2 * 2^-9 of its size with random
// signs, so the sum is off by ~sqrt(K) * 2^-9 of a typical term, against a sum of ~sqrt(K) typical
// terms for random-sign inputs: ~2^-9 = 2e-3 of the output's scale per product, whatever K. Errors
// of the products in a row (q/k/v, attention output, the MLP's three, the head) and across layers
// add up to a few times that. Measured on the fixture models (K = 32..48, 2 layers; relative error
// = max |bf16 - fp32| / max |fp32| per tensor): logits 4.7e-3..1.1e-2, SFT gradients up to 1.8e-2,
// GRPO gradients up to 2.2e-2, rollout log-probs against the learner's 0. The bounds below are
// those with a 2-3x margin: a wrong transpose or a stale bf16 weight copy moves them by 0.1 to 1.
import path from 'node:path';
import { execFileSync } from 'node:child_process';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, LladaModel, type ModelConfig } from '../../lib/index.js';
import { native, type NativeEngine, type NativeTrainer } from '../../lib/native/binding.js';
import { parseGrpoConfig } from '../../lib/train/grpo-config.js';
import { GRPOTrainer, type PromptRecord } from '../../lib/train/grpo.js';
import { FIXTURES, FIXTURE_MODELS, logitsCases, relError } from '../helpers/fixtures.js';
import { args, fixtureEngine, randomBatch, TRAIN_MODELS, trainCase } from '../helpers/train.js';

const LOGITS_TOL = 3e-2;
const GRAD_TOL = 5e-2;

const disposables: { dispose(): unknown }[] = [];
afterAll(async () => {
  for (const d of disposables.reverse()) await d.dispose();
});
const keep = <T extends { dispose(): unknown }>(x: T): T => (disposables.push(x), x);

describe('bf16 on the CPU: the engine', () => {
  it('says which dtype and which oneDNN kernels it runs; fp32 stays the default', async () => {
    const { engine: f32 } = await fixtureEngine('mha_f32');
    const { engine: b16 } = await fixtureEngine('mha_f32', { dtype: 'BF16' });
    keep(f32);
    keep(b16);
    expect(f32.deviceInfo().dtype).toBe('F32');
    expect(b16.deviceInfo()).toMatchObject({ backend: 'cpu', dtype: 'BF16' });
    expect(b16.deviceInfo().name).toMatch(/oneDNN \d+\.\d+\.\d+, \w+/);
    console.log(`bf16 products: ${b16.deviceInfo().name}`);
  });

  it('rejects a dtype it does not have, naming the option', async () => {
    await expect(loadModel(path.join(FIXTURES, 'mha_f32'), { dtype: 'fp16' as 'bf16' })).rejects.toThrow(/`dtype`/);
  });
});

describe.each(FIXTURE_MODELS)('bf16 logits against the float64 reference: %s', (name) => {
  it('every case within the bf16 bound, and not bit-equal to fp32 (the products did run in bf16)', async () => {
    const f32 = keep(await loadModel(path.join(FIXTURES, name)));
    const b16 = keep(await loadModel(path.join(FIXTURES, name), { dtype: 'bf16' }));
    let worst = 0;
    for (const c of logitsCases(name)) {
      const got = await b16.logits(c.ids);
      const err = relError(got, c.logits);
      worst = Math.max(worst, err);
      expect(err, c.name).toBeLessThan(LOGITS_TOL);
      expect(relError(await f32.logits(c.ids), c.logits), c.name).toBeLessThan(1e-5);
      expect(err, c.name).toBeGreaterThan(1e-5);
    }
    console.log(`${name}: bf16 logits, max relative error ${worst.toExponential(2)}`);
  });
});

describe.each(TRAIN_MODELS)('bf16 training against the fp32 engine: %s', (name) => {
  let f32: NativeEngine, b16: NativeEngine;
  let tf: NativeTrainer, tb: NativeTrainer;
  beforeAll(async () => {
    f32 = keep((await fixtureEngine(name)).engine);
    b16 = keep((await fixtureEngine(name, { dtype: 'BF16' })).engine);
    tf = keep(new (native().Trainer)(f32));
    tb = keep(new (native().Trainer)(b16));
  });

  it('SFT loss, log-probs and every gradient within the bf16 bound', async () => {
    const ref = await trainCase(name);
    tf.zeroGrad();
    tb.zeroGrad();
    const a = await tf.crossEntropyBackward(...args(ref.batch));
    const b = await tb.crossEntropyBackward(...args(ref.batch));
    expect(Math.abs(b.loss - a.loss) / Math.abs(a.loss)).toBeLessThan(LOGITS_TOL);
    expect(relError(b.logprobs, a.logprobs)).toBeLessThan(LOGITS_TOL);
    let worst = 0;
    for (const { name: n } of f32.paramInfo()) {
      const err = relError(tb.getGrad(n), tf.getGrad(n));
      worst = Math.max(worst, err);
      expect(err, n).toBeLessThan(GRAD_TOL);
    }
    console.log(`${name}: bf16 SFT gradients, max relative error ${worst.toExponential(2)}`);
  });

  it('an optimizer step refreshes the bf16 weights: logits equal a fresh bf16 engine holding the new weights', async () => {
    const ref = await trainCase(name);
    tb.zeroGrad();
    await tb.crossEntropyBackward(...args(ref.batch));
    await tb.step({ ...ref.adamw, lr: 1e-2 });
    const fresh = keep((await fixtureEngine(name, { dtype: 'BF16' })).engine);
    for (const { name: n } of b16.paramInfo()) fresh.setParam(n, b16.getParam(n));
    const ids = [[1, 2, 3, 4, 5, 6, 7, 8]];
    const flat = Int32Array.from(ids.flat());
    const rows = Int32Array.from(ids[0]!.keys());
    const got = await b16.forward(flat, Int32Array.from([0, flat.length]), rows);
    const want = await fresh.forward(flat, Int32Array.from([0, flat.length]), rows);
    expect(got).toEqual(want);
    const before = await (await fixtureEngine(name, { dtype: 'BF16' })).engine.forward(flat, Int32Array.from([0, flat.length]), rows);
    expect(relError(got, before)).toBeGreaterThan(1e-3);
  });
});
