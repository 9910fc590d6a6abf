// Numerical faults during training: NaN/Inf injected into a gradient or a reward is caught,
// counted and reported, and the values are zeroed or the step skipped per config while training
// goes on; a loss that explodes stops the run before its step is applied, keeping (and naming) the
// last good checkpoint.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

import { loadModel, TrainingDivergedError, type LladaModel } from '../../lib/index.js';
import { checkLoss } from '../../lib/train/faults.js';
import { GRPOTrainer, type PromptRecord } from '../../lib/train/grpo.js';
import { parseGrpoConfig, type GrpoConfigInput } from '../../lib/train/grpo-config.js';
import type { TrainingSession } from '../../lib/train/session.js';
import { parseSftConfig, runSft, type SftConfigInput } from '../../lib/train/sft.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const tmp = tmpDir();
const data = path.join(root, 'examples', 'data', 'arith-tiny.jsonl');
const disposables: { dispose(): unknown }[] = [];
afterAll(async () => {
  for (const d of disposables.reverse()) await d.dispose();
});

const grpo = (over: Partial<GrpoConfigInput> = {}) =>
  parseGrpoConfig({ model: 'unused', data: { train: 'unused' }, numGenerations: 4, promptsPerStep: 2, maxCompletionLength: 6, learningRate: 1e-2, ...over }, 'test');
const prompt = (ids: number[]): PromptRecord => ({ ids, text: '', columns: {}, source: 'test' });
const prompts = [prompt([1, 2]), prompt([3])];
const byParity = ({ completionIds }: { completionIds: number[][] }) => completionIds.map((ids) => ids.filter((t) => t % 2 === 0).length / ids.length);

const EMB = 'model.transformer.wte.weight';
const HEAD = 'model.transformer.ff_out.weight';

/** Puts `value` into two entries of the LM head's gradient. */
function poison(value: number) {
  return (session: TrainingSession) => {
    const g = session.getGrad(HEAD);
    g[5] = value;
    g[17] = value;
    session.setGrad(HEAD, g);
  };
}

async function fixtureModel(): Promise<LladaModel> {
  const m = await loadModel(path.join(FIXTURES, 'mha_f32'));
  disposables.push(m);
  return m;
}

const same = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('NaN or Inf in a gradient', () => {
  it("nonFiniteGradients: 'zero' (the default) zeroes and counts them and applies the rest of the update", async () => {
    const m = await fixtureModel();
    const t = await GRPOTrainer.create(m, grpo(), { rewardFunctions: { parity: byParity } });
    disposables.push(t);
    const before = await m.getParameter(HEAD);
    const metrics = await t.step(prompts, 0, { onGradients: poison(NaN) });
    expect(metrics.non_finite).toBe(2);
    expect(metrics.skipped).toBe(0);
    const after = await m.getParameter(HEAD);
    expect(after.every(Number.isFinite)).toBe(true);
    expect(same(before, after)).toBe(false);
    expect(t.session.stepCount).toBe(1);
    // Training continues: the next step is clean.
    const next = await t.step(prompts, 1);
    expect(next.non_finite).toBe(0);
  });

  it("nonFiniteGradients: 'skip' skips the whole update (weights, moments and step count unchanged) and counts it", async () => {
    const m = await fixtureModel();
    const t = await GRPOTrainer.create(m, grpo({ nonFiniteGradients: 'skip' }), { rewardFunctions: { parity: byParity } });
    disposables.push(t);
    const before = await m.getParameter(EMB);
    const metrics = await t.step(prompts, 0, { onGradients: poison(Infinity) });
    expect(metrics.non_finite).toBe(2);
    expect(metrics.skipped).toBe(1);
    expect(same(before, await m.getParameter(EMB))).toBe(true);
    expect(t.session.stepCount).toBe(0);
    const next = await t.step(prompts, 1);
    expect(next.skipped).toBe(0);
    expect(t.session.stepCount).toBe(1);
    expect(same(before, await m.getParameter(EMB))).toBe(false);
  });

  it('an SFT run with a poisoned step reports it in metrics.jsonl and finishes', async () => {
    const out = path.join(tmp, 'sft-skip');
    const config: SftConfigInput = {
      model: { init: { dModel: 32, nLayers: 1, nHeads: 2, mlpHiddenSize: 48, maxSequenceLength: 96, seed: 1 } },
      data: { train: data }, batchSize: 4, maxSteps: 4, saveSteps: 2, outputDir: out, nonFiniteGradients: 'skip',
    };
    const r = await runSft({ config: parseSftConfig(config, 'test') }, { onGradients: (step, session) => (step === 2 ? poison(NaN)(session) : undefined) });
    expect(r.steps).toBe(4);
    const lines = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.step, l.non_finite, l.skipped])).toEqual([[1, 0, 0], [2, 2, 1], [3, 0, 0], [4, 0, 0]]);
  });
});

describe('NaN or Inf in a reward', () => {
  const oneBad = (value: number) => (a: { completionIds: number[][] }) => byParity(a).map((x, i) => (i === 3 ? value : x));

  it("onRewardError: 'error' (the default) names the function, the value and the completion", async () => {
    const m = await fixtureModel();
    const t = await GRPOTrainer.create(m, grpo(), { rewardFunctions: { parity: oneBad(NaN) } });
    disposables.push(t);
    await expect(t.step(prompts, 0)).rejects.toThrow(/Reward function `parity` failed: returned NaN for completion 3 \(set onRewardError/);
  });

  it("onRewardError: 'zero' zeroes only the bad scores, counts them and trains", async () => {
    const m = await fixtureModel();
    const t = await GRPOTrainer.create(m, grpo({ onRewardError: 'zero' }), { rewardFunctions: { parity: oneBad(-Infinity) } });
    disposables.push(t);
    const before = await m.getParameter(EMB);
    const metrics = await t.step(prompts, 0);
    expect(metrics['rewards/parity/errors']).toBe(1);
    expect(metrics.skipped).toBe(0);
    expect(Number.isFinite(metrics.reward)).toBe(true);
    expect(same(before, await m.getParameter(EMB))).toBe(false);
  });

  it("onRewardError: 'skip' skips the step's update and counts it", async () => {
    const m = await fixtureModel();
    const t = await GRPOTrainer.create(m, grpo({ onRewardError: 'skip' }), { rewardFunctions: { parity: oneBad(NaN) } });
    disposables.push(t);
    const before = await m.getParameter(EMB);
    const metrics = await t.step(prompts, 0);
    expect(metrics.skipped).toBe(1);
    expect(metrics['rewards/parity/errors']).toBe(1);
    expect(same(before, await m.getParameter(EMB))).toBe(true);
    expect(t.session.stepCount).toBe(0);
  });
});

describe('an exploding loss', () => {
  it('a non-finite loss or one above maxLoss is a TrainingDivergedError naming the step', () => {
    expect(() => checkLoss(3, 7, undefined)).not.toThrow();
    expect(() => checkLoss(NaN, 7, undefined)).toThrow(/The loss exploded at step 7 \(NaN\)/);
    expect(() => checkLoss(Infinity, 2, 10)).toThrow(TrainingDivergedError);
    expect(() => checkLoss(-12, 3, 10)).toThrow(/step 3 \(-12 exceeds maxLoss 10\)/);
  });

  it('stops an SFT run before applying the step and keeps the last good checkpoint', async () => {
    const out = path.join(tmp, 'explode');
    // A learning rate of 30 without clipping: the loss climbs within a few steps.
    const config: SftConfigInput = {
      model: { init: { dModel: 32, nLayers: 1, nHeads: 2, mlpHiddenSize: 48, maxSequenceLength: 96, seed: 1 } },
      data: { train: data }, batchSize: 4, maxSteps: 40, saveSteps: 1, saveTotalLimit: 2, learningRate: 30, maxGradNorm: 0,
      outputDir: out, maxLoss: 20,
    };
    const err = await runSft({ config: parseSftConfig(config, 'test') }).then(() => null, (e: unknown) => e as Error);
    expect(err).toBeInstanceOf(TrainingDivergedError);
    const m = /exploded at step (\d+) \(([-\d.e+]+|NaN|Infinity) (exceeds maxLoss 20\))?.*The last good checkpoint is (\S+): resume/.exec(err!.message);
    expect(m, err!.message).not.toBeNull();
    const bad = Number(m![1]);
    expect(bad).toBeGreaterThan(1);
    expect(m![4]).toBe(path.join(out, `checkpoint-${bad - 1}`));
    expect(existsSync(path.join(out, `checkpoint-${bad - 1}`, 'trainer_state.json'))).toBe(true);
    expect(readdirSync(out).filter((n) => n.startsWith(`checkpoint-${bad}`))).toEqual([]);
    const steps = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
    expect(steps.at(-1)).toBe(bad - 1);
    // The kept checkpoint loads and its weights are finite.
    const kept = await loadModel(path.join(out, `checkpoint-${bad - 1}`));
    disposables.push(kept);
    expect((await kept.getParameter(HEAD)).every(Number.isFinite)).toBe(true);
  });
});
