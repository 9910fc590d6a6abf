// Loss, log-probs, every parameter gradient and an AdamW run of the native trainer against the
// PyTorch reference (float64, test/reference/make_fixtures.py: make_train).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { native, type NativeEngine, type NativeTrainer } from '../../lib/native/binding.js';
import { relError } from '../helpers/fixtures.js';
import { args, TRAIN_MODELS, fixtureEngine, trainCase, type TrainCase } from '../helpers/train.js';

// fp32 against float64, errors relative to each tensor's largest |reference| entry. Gradients land
// near 1e-6 (fp32 sums over d 32 / mlp 48 / 43 tokens); the 1e-4 still catches any wrong
// term, which moves a gradient by 1e-2 or more. Loss and log-probs land near 1e-8.
const GRAD_TOL = 1e-4;
const LOSS_TOL = 1e-5;

describe.each(TRAIN_MODELS)('training matches PyTorch: %s', (name) => {
  let engine: NativeEngine;
  let trainer: NativeTrainer;
  let ref: TrainCase;
  beforeAll(async () => {
    ({ engine } = await fixtureEngine(name));
    trainer = new (native().Trainer)(engine);
    ref = await trainCase(name);
  });
  afterAll(() => {
    trainer?.dispose();
    engine?.dispose();
  });

  it('loss, log-probs and every parameter gradient of a masked SFT batch', async () => {
    trainer.zeroGrad();
    const { loss, logprobs } = await trainer.crossEntropyBackward(...args(ref.batch));
    expect(Math.abs(loss - ref.loss) / Math.abs(ref.loss)).toBeLessThan(LOSS_TOL);
    expect(relError(logprobs, Float32Array.from(ref.logprobs))).toBeLessThan(LOSS_TOL);
    const names = engine.paramInfo().map((p) => p.name);
    expect([...ref.grads.keys()].sort()).toEqual([...names].sort());
    for (const n of names) {
      const want = ref.grads.get(n)!;
      expect(Math.max(...want.map(Math.abs)), `${n} has a zero reference gradient`).toBeGreaterThan(0);
      expect(relError(trainer.getGrad(n), want), n).toBeLessThan(GRAD_TOL);
    }
  });

  it('crossEntropyLoss gives the same loss and log-probs bit for bit and leaves the gradients alone', async () => {
    trainer.zeroGrad();
    const full = await trainer.crossEntropyBackward(...args(ref.batch));
    const grad = trainer.getGrad('model.transformer.blocks.1.q_proj.weight');
    const only = await trainer.crossEntropyLoss(...args(ref.batch));
    expect(only.loss).toBe(full.loss);
    expect(only.logprobs).toEqual(full.logprobs);
    expect(trainer.getGrad('model.transformer.blocks.1.q_proj.weight')).toEqual(grad);
  });

  it('10 AdamW steps (weight decay, clipping) follow the reference losses', async () => {
    // A fresh engine: the run starts from the stored weights.
    const { engine: e } = await fixtureEngine(name);
    const t = new (native().Trainer)(e);
    try {
      const a = ref.adamw;
      for (let s = 0; s < a.steps; s++) {
        t.zeroGrad();
        const { loss } = await t.crossEntropyBackward(...args(ref.batch));
        expect(Math.abs(loss - a.losses[s]!) / a.losses[s]!, `loss before step ${s}`).toBeLessThan(LOSS_TOL);
        const r = await t.step(a);
        // A norm of gradients: gradients' tolerance.
        expect(Math.abs(r.gradNorm - a.gradNorms[s]!) / a.gradNorms[s]!, `grad norm of step ${s}`).toBeLessThan(GRAD_TOL);
        expect(r.clipped).toBe(a.gradNorms[s]! > a.maxGradNorm);
        expect(r.nonFinite).toBe(0);
      }
      expect(t.stepCount).toBe(a.steps);
    } finally {
      t.dispose();
      e.dispose();
    }
  });
});
