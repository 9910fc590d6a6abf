// Rollout-activation reuse: the loss runs backward through the rollout's kept activations instead
// of a second forward. Same tokens, same loss, same gradients (to fp32 round-off) as recomputing,
// whole or in part (a budget that keeps only some steps), and never with weights that changed.
import { afterAll, describe, expect, it } from 'vitest';

import { LladaModel, type ModelConfig } from '../../lib/index.js';
import { parseGrpoConfig, type GrpoConfigInput } from '../../lib/train/grpo-config.js';
import { GRPOTrainer, type PromptRecord } from '../../lib/train/grpo.js';

const disposables: { dispose(): unknown }[] = [];
afterAll(async () => {
  for (const d of disposables.reverse()) await d.dispose();
});

// GQA, three layers (the last runs on the rows only), embedding padding past the vocabulary.
const config: ModelConfig = {
  dModel: 48, nLayers: 3, nHeads: 4, nKvHeads: 2, headDim: 12, mlpHiddenSize: 80, vocabSize: 29, embeddingSize: 32,
  maxSequenceLength: 64, ropeTheta: 10000, rmsNormEps: 1e-5, maskTokenId: 28, eosTokenId: 27, padTokenId: 27, bosTokenId: null,
};
const L = 7;
const cfg = (over: Partial<GrpoConfigInput> = {}) =>
  parseGrpoConfig({ model: 'unused', data: { train: 'unused' }, numGenerations: 4, promptsPerStep: 2, maxCompletionLength: L, learningRate: 1e-3, seed: 5, ...over }, 'test');
const prompts: PromptRecord[] = [[1, 2, 3], [5, 6, 7, 8, 9, 10]].map((ids) => ({ ids, text: '', columns: {}, source: 'test' }));
// Rewards with variance in every group, and one group-mate tie.
const reward = { odd: ({ completionIds }: { completionIds: number[][] }) => completionIds.map((ids) => ids.filter((x) => x % 2 === 1).length) };

async function trainer(over: Partial<GrpoConfigInput>) {
  const model = await LladaModel.random(config, { seed: 11, initStd: 0.2 });
  const t = await GRPOTrainer.create(model, cfg(over), { rewardFunctions: reward });
  disposables.push(model, t);
  return { model, t };
}

function relError(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

async function compareGrads(a: GRPOTrainer, b: GRPOTrainer, bound: number) {
  let compared = 0;
  for (const { name } of a.model.parameterInfo()) {
    const ga = a.session.getGrad(name), gb = b.session.getGrad(name);
    expect(relError(ga, gb), name).toBeLessThan(bound);
    if (gb.some((x) => x !== 0)) compared++;
  }
  expect(compared).toBeGreaterThan(10); // the gradients reach every layer
}

describe('rollout-activation reuse', () => {
  it('gives the same tokens, loss and gradients as recomputing, with every step kept or only some', async () => {
    const plain = await trainer({ reuseRolloutMemoryMB: 0 });
    const all = await trainer({});
    const mp = await plain.t.step(prompts, 0);
    const ma = await all.t.step(prompts, 0);
    expect(mp.reused_positions).toBe(0);
    expect(ma.reused_positions).toBe(L);
    // At step 0 the 4 samples of a prompt are one canvas: at least 3/4 of 1/L of the work is shared.
    expect(ma.rollout_shared).toBeGreaterThanOrEqual(0.75 / L - 1e-12);
    expect(ma.rollout_shared).toBeLessThan(1);
    expect(mp.rollout_shared).toBe(ma.rollout_shared);
    expect(ma.reward).toBe(mp.reward);
    expect(Math.abs(ma.loss - mp.loss)).toBeLessThan(1e-6);
    expect(ma['clip_ratio/region_mean']).toBe(0);
    await compareGrads(all.t, plain.t, 2e-5);

    // A budget of 2.5 average steps keeps the first few steps and recomputes the rest. (The kept
    // bytes stay on record after the optimizer step made the activations stale. Steps differ in
    // size: at step 0 the samples of a prompt are one canvas, kept once.)
    const perStep = all.t.session.keptSteps().bytes / L;
    expect(perStep).toBeGreaterThan(0);
    const some = await trainer({ reuseRolloutMemoryMB: (2.5 * perStep) / 2 ** 20 });
    const ms = await some.t.step(prompts, 0);
    expect(ms.reused_positions).toBeGreaterThanOrEqual(2);
    expect(ms.reused_positions).toBeLessThan(L);
    expect(Math.abs(ms.loss - mp.loss)).toBeLessThan(1e-6);
    await compareGrads(some.t, plain.t, 2e-5);
  });

  it('reuses only the first of numIterations passes, and lossPositions subsets', async () => {
    const plain = await trainer({ reuseRolloutMemoryMB: 0, numIterations: 2, lossPositions: 3 });
    const reuse = await trainer({ numIterations: 2, lossPositions: 3 });
    const mp = await plain.t.step(prompts, 0);
    const mr = await reuse.t.step(prompts, 0);
    // All seven steps were kept; the loss visited the three trained ones.
    expect(mr.reused_positions).toBe(3);
    expect(Math.abs(mr.loss - mp.loss)).toBeLessThan(1e-5);
    // The second pass's gradients (left in the session) after one update each.
    await compareGrads(reuse.t, plain.t, 1e-3);
    for (const { name } of reuse.model.parameterInfo())
      expect(relError(await reuse.model.getParameter(name), await plain.model.getParameter(name)), name).toBeLessThan(1e-5);
  });

  it('refuses kept activations once the weights changed', async () => {
    const { t } = await trainer({});
    await t.step(prompts, 0); // the optimizer step changed the weights after the loss used them
    expect(t.session.keptSteps().steps).toBe(0);
    await expect(t.session.policyLossBackwardKept(0, {
      targets: new Int32Array(8), weights: new Float32Array(8), oldLogprobs: new Float32Array(8), advantages: new Float32Array(8), refLogprobs: null,
    }, { epsilonLow: 0.2, epsilonHigh: 0.2, beta: 0, excludeIds: Int32Array.from([28]) })).rejects.toThrow(/weights changed since the rollout/);
  });
});

