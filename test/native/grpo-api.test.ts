// Training from code through the package root: a partial trainer config with the CLI's defaults,
// prompts as strings or rows, step numbering; each lossType's loss against its formula applied to
// the per-token terms; logCompletions.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import {
  COMPLETIONS_FILE, GRPOTrainer, LladaModel, LOSS_TYPES, loadModel, promptRecords, runGrpo, type LossType, type ModelConfig, type RewardFunction,
} from '../../lib/index.js';
import { DEMO_MODEL_DIR } from '../../lib/demo/shipped.js';
import { tmpDir } from '../helpers/tmp.js';

const tmp = tmpDir();
const disposables: { dispose(): unknown }[] = [];
afterAll(async () => {
  for (const d of disposables.reverse()) await d.dispose();
});

describe('GRPOTrainer from code', () => {
  it('takes a partial config, prompt strings and dataset rows; metrics.step is the step just done', async () => {
    const model = await loadModel(DEMO_MODEL_DIR);
    disposables.push(model);
    const seen: string[][] = [];
    const digits: RewardFunction = ({ prompts, completions, answer }) => {
      seen.push(prompts);
      // A column that no prompt of the step has is absent (plain strings have no columns).
      const gold = answer as unknown[] | undefined;
      return completions.map((c, i) => (gold?.[i] !== undefined && c.includes(String(gold[i])) ? 1 : 0));
    };
    const trainer = await GRPOTrainer.create(model, { numGenerations: 4, promptsPerStep: 2, maxCompletionLength: 12 }, { rewardFunctions: { digits } });
    disposables.push(trainer);
    expect(trainer.config).toMatchObject({ numGenerations: 4, seed: 0, learningRate: 5e-6, lossType: 'justgrpo', rewardFunctions: ['digits'] });
    const m1 = await trainer.step(['12+9=', { question: '3+4=', answer: '7' }]);
    expect(m1.step).toBe(1);
    expect(Number.isFinite(m1.loss)).toBe(true);
    expect(trainer.stepsDone).toBe(1);
    expect(seen[0]).toEqual(['12+9=', '12+9=', '12+9=', '12+9=', '3+4=', '3+4=', '3+4=', '3+4=']);
    const m2 = await trainer.step(promptRecords(model.tokenizer, ['1+1=']));
    expect(m2.step).toBe(2);
    await expect(trainer.step([42 as unknown as string])).rejects.toThrow(/`prompts\[0\]`/);
  });

  it('promptRecords: strings and rows, template as the tokenizer says', () => {
    return loadModel(DEMO_MODEL_DIR).then(async (model) => {
      disposables.push(model);
      const [a, b] = promptRecords(model.tokenizer, ['2+2=', { prompt: '5+1=', answer: '6', level: 1 }]);
      expect(a).toMatchObject({ text: '2+2=', ids: model.tokenizer.encode('2+2='), columns: {} });
      expect(b).toMatchObject({ text: '5+1=', columns: { answer: '6', level: 1 } });
    });
  });
});

// Rollouts made by hand: 3 prompts x G = 2, L = 4, end token 10 at chosen places, so the mask
// lengths differ (4, 2, 1, 4, 3, 4), one group has equal rewards (A = 0), and the local batches
// (promptsPerStep 2) hold 4 and 2 completions. Old log-probs are the policy's shifted by fixed
// offsets, so ratios spread over both clip boundaries.
describe('lossType: the loss equals the formula applied to the per-token terms', () => {
  const config: ModelConfig = {
    dModel: 32, nLayers: 1, nHeads: 2, nKvHeads: 2, headDim: 16, mlpHiddenSize: 32, vocabSize: 12, embeddingSize: 12,
    maxSequenceLength: 16, ropeTheta: 10000, rmsNormEps: 1e-5, maskTokenId: 11, eosTokenId: 10, padTokenId: 10, bosTokenId: null,
  };
  const L = 4, G = 2, eps = 0.2, epsHigh = 0.28;
  const promptIds = [[1, 2], [3], [4, 5, 6]];
  const completionIds = [[7, 3, 2, 1], [4, 10, 10, 10], [10, 10, 10, 10], [1, 2, 3, 4], [5, 6, 10, 10], [9, 8, 7, 6]];
  const maskLengths = [4, 2, 1, 4, 3, 4];
  const rewards = [1, 0, 0.5, 2, 1, 1];
  const offset = (i: number, t: number) => 0.35 * Math.sin(3 * i + 5 * t + 1);

  // Advantages by hand: groups (1, 0), (0.5, 2), (1, 1); unbiased std of a pair (a, b) is |a - b| / sqrt 2.
  const advantage = (a: number, b: number) => (a - (a + b) / 2) / (Math.abs(a - b) / Math.SQRT2 + 1e-4);
  const A = [advantage(1, 0), advantage(0, 1), advantage(0.5, 2), advantage(2, 0.5), 0, 0];

  // TRL's definitions, written out per loss type (B = 2 local batches: completions 0-3 and 4-5).
  function expectedWeight(type: LossType, i: number, t: number): number {
    const m = t < maskLengths[i]! ? 1 : 0;
    const batch = i < 4 ? [0, 1, 2, 3] : [4, 5];
    const active = (is: number[]) => is.reduce((a, j) => a + maskLengths[j]!, 0);
    switch (type) {
      case 'justgrpo': return 1 / (L * 4); // 4 completions with A != 0, every position
      case 'grpo': return m / maskLengths[i]! / batch.length / 2;
      case 'bnpo': return m / active(batch) / 2;
      case 'dr_grpo': return m / (L * batch.length) / 2;
      case 'dapo': return m / active([0, 1, 2, 3, 4, 5]);
    }
  }

  it.each(LOSS_TYPES)('%s', async (lossType) => {
    const model = await LladaModel.random(config, { seed: 5, initStd: 0.1 });
    disposables.push(model);
    const trainer = await GRPOTrainer.create(model, {
      numGenerations: G, promptsPerStep: 2, maxCompletionLength: L, lossType, epsilon: eps, epsilonHigh: epsHigh, learningRate: 1e-3, maxTokensPerBatch: 20,
    }, { rewardFunctions: { given: () => rewards } });
    disposables.push(trainer);
    const r = { promptIds, completionIds, rewards };
    const logprobs = await trainer.likelihood(r);
    const old = logprobs.map((row, i) => row.map((lp, t) => lp + offset(i, t)));
    let expected = 0, clippedLow = 0, clippedHigh = 0;
    for (let i = 0; i < completionIds.length; i++)
      for (let t = 0; t < L; t++) {
        const ratio = Math.exp(logprobs[i]![t]! - old[i]![t]!);
        const clipped = Math.min(Math.max(ratio, 1 - eps), 1 + epsHigh);
        expected += expectedWeight(lossType, i, t) * -Math.min(ratio * A[i]!, clipped * A[i]!);
        if (A[i] !== 0 && ratio < 1 - eps) clippedLow++;
        if (A[i] !== 0 && ratio > 1 + epsHigh) clippedHigh++;
      }
    expect(clippedLow + clippedHigh, 'the offsets reach the clip boundaries').toBeGreaterThan(0);
    const m = await trainer.trainOnRollouts({ ...r, oldLogprobs: old });
    expect(m.step).toBe(1);
    expect(Math.abs(expected)).toBeGreaterThan(1e-3);
    expect(Math.abs(m.loss - expected) / Math.abs(expected)).toBeLessThan(1e-4);
  });
});

describe('logCompletions', () => {
  it('appends every logging step\'s prompts, completions, rewards and advantages to completions.jsonl', async () => {
    const data = path.join(tmp, 'toy.jsonl');
    writeFileSync(data, Array.from({ length: 4 }, (_, i) => JSON.stringify({ prompt: `Say ${i}`, answer: String(i) })).join('\n') + '\n');
    const out = path.join(tmp, 'run');
    await runGrpo({
      config: {
        model: { init: { dModel: 32, nLayers: 1, nHeads: 2, mlpHiddenSize: 64, maxSequenceLength: 64, seed: 2, initStd: 0.05 } },
        data: { train: data }, rewardModule: path.resolve('examples/rewards/toy.mjs'), rewardFunctions: ['digits'],
        num_generations: 2, promptsPerStep: 2, maxCompletionLength: 5, maxSteps: 3, logging_steps: 2, log_completions: true, outputDir: out,
      } as never,
    });
    const lines = readFileSync(path.join(out, COMPLETIONS_FILE), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    // Steps 2 (loggingSteps) and 3 (the last), 2 prompts x 2 completions each.
    expect(lines.map((l) => l.step)).toEqual([2, 2, 2, 2, 3, 3, 3, 3]);
    for (const l of lines) {
      expect(l.prompt).toMatch(/^Say \d$/);
      expect(typeof l.completion).toBe('string');
      expect(typeof l.reward).toBe('number');
      expect(l.rewards).toEqual({ digits: l.reward });
      expect(typeof l.advantage).toBe('number');
    }
    // Advantages are group-relative: each group's sum is 0.
    for (let g = 0; g < lines.length; g += 2) expect(lines[g].advantage + lines[g + 1].advantage).toBeCloseTo(0, 9);
    const metrics = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(metrics.map((m) => m.step)).toEqual([2, 3]);
  });
});
