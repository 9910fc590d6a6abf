// The JustGRPO trainer end to end: exact on-policy likelihood, learning, resume, bad input.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

import { InputError, LladaModel, loadModel, type ModelConfig } from '../../lib/index.js';
import { parseGrpoConfig, type GrpoConfigInput } from '../../lib/train/grpo-config.js';
import { GRPOTrainer, runGrpo, type PromptRecord } from '../../lib/train/grpo.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const tmp = tmpDir();
const disposables: { dispose(): unknown }[] = [];
afterAll(async () => {
  for (const d of disposables.reverse()) await d.dispose();
});

const base = (over: Partial<GrpoConfigInput> = {}) =>
  parseGrpoConfig({ model: 'unused', data: { train: 'unused' }, numGenerations: 4, promptsPerStep: 2, maxCompletionLength: 6, learningRate: 1e-2, ...over }, 'test');

const prompt = (ids: number[]): PromptRecord => ({ ids, text: '', columns: {}, source: 'test' });

describe('GRPOTrainer', () => {
  it("the rollout's log-probs are the learner's log-probs of the same tokens (before the update)", async () => {
    const m = await loadModel(path.join(FIXTURES, 'gqa_f32'));
    disposables.push(m);
    const t = await GRPOTrainer.create(m, base({ maxTokensPerBatch: 30 }), { rewardFunctions: { zero: ({ completions }) => completions.map(() => 0) } });
    disposables.push(t);
    const prompts = [[1, 2, 3], [5, 6, 7, 8, 9]];
    const roll = await m.generate(prompts, { decoder: 'ar', genLength: 6, temperature: 1, numSamples: 4, seed: 9 });
    const lik = await t.likelihood({ promptIds: prompts, completionIds: roll.tokens, rewards: [] });
    roll.logprobs.flat().forEach((lp, i) => expect(Math.abs(lp - lik.flat()[i]!)).toBeLessThan(2e-6));
    // And the ratio is 1: with rollout log-probs as the old ones, nothing is clipped and the loss is ~0.
    const rewards = roll.tokens.map((x) => x[0]! % 2);
    const metrics = await t.trainOnRollouts({ promptIds: prompts, completionIds: roll.tokens, rewards, oldLogprobs: roll.logprobs }, 0);
    expect(metrics['clip_ratio/region_mean']).toBe(0);
    expect(Math.abs(metrics.loss)).toBeLessThan(1e-6);
  });

  it('raises the probability of the token the reward prefers', async () => {
    const config: ModelConfig = {
      dModel: 32, nLayers: 1, nHeads: 2, nKvHeads: 2, headDim: 16, mlpHiddenSize: 32, vocabSize: 12, embeddingSize: 12,
      maxSequenceLength: 16, ropeTheta: 10000, rmsNormEps: 1e-5, maskTokenId: 11, eosTokenId: 10, padTokenId: 10, bosTokenId: null,
    };
    const m = await LladaModel.random(config, { seed: 3, initStd: 0.1 });
    disposables.push(m);
    const target = 4;
    const t = await GRPOTrainer.create(m, base({ numGenerations: 8, maxCompletionLength: 3, learningRate: 2e-2 }), {
      rewardFunctions: { likes4: ({ completionIds }) => completionIds.map((ids) => ids.filter((x) => x === target).length) },
    });
    disposables.push(t);
    const prompts = [prompt([1, 2]), prompt([3])];
    const pTarget = async () => {
      const l = await m.logitsAt([[1, 2, 11, 11, 11]], [[2]]);
      const xs = Array.from(l.subarray(0, 11));
      const mx = Math.max(...xs);
      const z = xs.reduce((a, x) => a + Math.exp(x - mx), 0);
      return Math.exp(xs[target]! - mx) / z;
    };
    const before = await pTarget();
    const rewardsSeen: number[] = [];
    for (let step = 0; step < 12; step++) rewardsSeen.push((await t.step(prompts, step)).reward);
    const after = await pTarget();
    expect(after).toBeGreaterThan(Math.max(0.5, 3 * before));
    expect(rewardsSeen.slice(-3).reduce((a, b) => a + b, 0) / 3).toBeGreaterThan(rewardsSeen.slice(0, 3).reduce((a, b) => a + b, 0) / 3);
  });

  it('reward functions that throw, return NaN or the wrong length are named, or scored 0 and counted', async () => {
    const m = await loadModel(path.join(FIXTURES, 'mha_f32'));
    disposables.push(m);
    const bad = {
      thrower: () => {
        throw new Error('boom');
      },
      nan: ({ completions }: { completions: string[] }) => completions.map(() => NaN),
      short: () => [1],
    };
    for (const [name, fn] of Object.entries(bad)) {
      const t = await GRPOTrainer.create(m, base(), { rewardFunctions: { [name]: fn } });
      await expect(t.step([prompt([1, 2]), prompt([3])], 0)).rejects.toThrow(new RegExp(`Reward function \`${name}\` failed`));
      t.dispose();
    }
    const t = await GRPOTrainer.create(m, base({ onRewardError: 'zero' }), { rewardFunctions: { thrower: bad.thrower } });
    const metrics = await t.step([prompt([1, 2]), prompt([3])], 0);
    expect(metrics['rewards/thrower/errors']).toBe(8);
    expect(metrics.reward).toBe(0);
    t.dispose();
  });

  it('refuses rollouts of the wrong shape', async () => {
    const m = await loadModel(path.join(FIXTURES, 'mha_f32'));
    disposables.push(m);
    const t = await GRPOTrainer.create(m, base(), { rewardFunctions: { z: ({ completions }) => completions.map(() => 0) } });
    disposables.push(t);
    const six = [1, 2, 3, 4, 5, 6];
    await expect(t.trainOnRollouts({ promptIds: [[1]], completionIds: [six, six], rewards: [0, 1] }, 0)).rejects.toThrow(InputError);
    await expect(t.trainOnRollouts({ promptIds: [[1]], completionIds: [six, six, six, [1]], rewards: [0, 1, 0, 1] }, 0)).rejects.toThrow(/Completion 3 has 1 tokens/);
  });
});

describe('justgrpo train', () => {
  const data = path.join(tmp, 'toy.jsonl');
  writeFileSync(data, Array.from({ length: 6 }, (_, i) => JSON.stringify({ prompt: `Say ${i}`, answer: String(i) })).join('\n') + '\n');
  const rewardModule = path.join(root, 'examples', 'rewards', 'toy.mjs');
  const cfg = (out: string, over: Partial<GrpoConfigInput> = {}) =>
    parseGrpoConfig({
      model: { init: { dModel: 32, nLayers: 1, nHeads: 2, mlpHiddenSize: 64, maxSequenceLength: 64, seed: 2, initStd: 0.05 } },
      data: { train: data }, rewardModule, rewardFunctions: ['digits'], numGenerations: 4, promptsPerStep: 2,
      maxCompletionLength: 6, learningRate: 3e-3, maxSteps: 4, saveSteps: 2, outputDir: out, seed: 1, ...over,
    }, 'test');
  const metrics = (dir: string) => readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));

  it('resumes bit-exactly from a checkpoint', async () => {
    const full = path.join(tmp, 'full');
    await runGrpo({ config: cfg(full) });
    const part = path.join(tmp, 'part');
    await runGrpo({ config: cfg(part, { maxSteps: 2 }) });
    await runGrpo({ resume: part, overrides: { maxSteps: 4 } });
    const a = metrics(full), b = metrics(part);
    expect(b.map((x) => x.step)).toEqual([1, 2, 3, 4]);
    expect(b.map((x) => [x.loss, x.reward, x.grad_norm])).toEqual(a.map((x) => [x.loss, x.reward, x.grad_norm]));
    expect(readFileSync(path.join(part, 'checkpoint-4', 'model.safetensors')).equals(readFileSync(path.join(full, 'checkpoint-4', 'model.safetensors')))).toBe(true);
  });

  it('writes TRL-named metrics', async () => {
    const out = path.join(tmp, 'names');
    await runGrpo({ config: cfg(out, { maxSteps: 1 }) });
    const m = metrics(out)[0];
    for (const key of ['reward', 'reward_std', 'rewards/digits/mean', 'frac_reward_zero_std', 'completions/mean_length',
      'completions/clipped_ratio', 'entropy', 'clip_ratio/region_mean', 'grad_norm', 'learning_rate', 'step_time', 'num_tokens', 'tokens_per_second'])
      expect(m, key).toHaveProperty([key]);
  });

  it('bad data: an empty dataset and an over-long prompt are named', async () => {
    const empty = path.join(tmp, 'empty.jsonl');
    writeFileSync(empty, '\n');
    await expect(runGrpo({ config: cfg(path.join(tmp, 'e'), { data: { train: empty } }) })).rejects.toThrow(/no prompts/);
    const long = path.join(tmp, 'long.jsonl');
    writeFileSync(long, JSON.stringify({ prompt: 'x'.repeat(80), answer: '1' }) + '\n');
    await expect(runGrpo({ config: cfg(path.join(tmp, 'l'), { data: { train: long } }) })).rejects.toThrow(new RegExp(`${long}:1: the prompt has \\d+ tokens`));
    await expect(runGrpo({ config: cfg(path.join(tmp, 'u'), { rewardFunctions: ['nope'] }) })).rejects.toThrow(/Unknown reward function `nope`/);
  });

  it('the CLI runs one step and prints JSON', () => {
    const file = path.join(tmp, 'cli.json');
    writeFileSync(file, JSON.stringify({ ...cfg(path.join(tmp, 'cli-out')), maxSteps: 1 }));
    const r = spawnSync(process.execPath, [cli, 'train', '--config', file, '--json'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.at(-1)).toMatchObject({ event: 'done', steps: 1 });
    expect(lines.find((l) => l.step === 1)).toHaveProperty('reward');
  });
});
