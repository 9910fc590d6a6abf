// The CPU backend's bf16 compute dtype (matrix products with bf16 inputs and fp32 sums through
// oneDNN, fp32 master weights, everything else fp32) against the fp32 engine, its exact reference.
//
// Tolerances. Rounding an input to bf16 errs by at most 2^-9 relative (8 significant bits, round to
// nearest). A product of length K sums K terms, each off by up to ~2 * 2^-9 of its size with random
// signs, so the sum is off by ~sqrt(K) * 2^-9 of a typical term, against a sum of ~sqrt(K) typical
// terms for random-sign inputs: ~2^-9 = 2e-3 of the output's scale per product, whatever K. Errors
// of the products in a row (q/k/v, attention output, the MLP's three, the head) and across layers
// add up to a few times that. Measured on the fixture models (K = 32..48, 2 layers; relative error
// = max |bf16 - fp32| / max |fp32| per tensor): logits 3.9e-3..7.5e-3, SFT gradients 1.1e-2..1.7e-2,
// the rest below. PyTorch 1.13's bf16 autocast on the same weights errs as much or more
// (test/reference/autocast_error.py; it runs the attention's products in bf16 too): logits
// 8.1e-3..1.3e-2, SFT gradients up to 2.9e-2. The bounds are ours with a 2-3x margin: a wrong
// transpose or a stale bf16 weight copy moves them by 0.1 to 1. Also measured (and printed by the
// tests): greedy AR decoding agrees with fp32 on 124 of 128 tokens (120 before the first
// difference), and the bf16 rollout's log-probs equal the bf16 learner's to 4.8e-7.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, LladaModel, type ModelConfig } from '../../lib/index.js';
import { native, type NativeEngine, type NativeTrainer } from '../../lib/native/binding.js';
import { DEMO_QUICK, demoGrpoConfig } from '../../lib/demo/demo.js';
import { parseGrpoConfig } from '../../lib/train/grpo-config.js';
import { GRPOTrainer, type PromptRecord } from '../../lib/train/grpo.js';
import { parseSftConfig, runSft } from '../../lib/train/sft.js';
import { FIXTURES, FIXTURE_MODELS, logitsCases, relError } from '../helpers/fixtures.js';
import { tmpDir } from '../helpers/tmp.js';
import { args, fixtureEngine, TRAIN_MODELS, trainCase } from '../helpers/train.js';

const LOGITS_TOL = 3e-2;
const GRAD_TOL = 5e-2;
// The GRPO gradient sums per-sample gradients weighted by advantages of mean 0 per group, so it is
// a difference of terms larger than itself and keeps their absolute error: measured 1.7e-2..4.9e-2
// per tensor (every tensor alike, the LM head's included), with each side's own log-probs as the
// old ones. A wrong product moves it by O(1).
const GRPO_GRAD_TOL = 1e-1;

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

const grpoConfig = (over: Record<string, unknown> = {}) =>
  parseGrpoConfig({ model: 'unused', data: { train: 'unused' }, numGenerations: 4, promptsPerStep: 2, maxCompletionLength: 7, learningRate: 1e-3, seed: 5, ...over }, 'test');
const zeroReward = { zero: ({ completions }: { completions: string[] }) => completions.map(() => 0) };
// Rewards with variance in every group.
const oddReward = { odd: ({ completionIds }: { completionIds: number[][] }) => completionIds.map((ids) => ids.filter((x) => x % 2 === 1).length) };
// GQA, three layers (the last runs on the rows only), embedding padding past the vocabulary.
const config: ModelConfig = {
  dModel: 48, nLayers: 3, nHeads: 4, nKvHeads: 2, headDim: 12, mlpHiddenSize: 80, vocabSize: 29, embeddingSize: 32,
  maxSequenceLength: 64, ropeTheta: 10000, rmsNormEps: 1e-5, maskTokenId: 28, eosTokenId: 27, padTokenId: 27, bosTokenId: null,
};
const prompts = [[1, 2, 3], [5, 6, 7, 8, 9, 10]];
const records: PromptRecord[] = prompts.map((ids) => ({ ids, text: '', columns: {}, source: 'test' }));

describe('bf16 GRPO', () => {
  it('gradients of the GRPO loss on the same rollouts within the bf16 bound of fp32', async () => {
    const roll = await keep(await LladaModel.random(config, { seed: 11, initStd: 0.2 })).generate(prompts, {
      decoder: 'ar', genLength: 7, temperature: 1, numSamples: 4, seed: 3,
    });
    const rewards = roll.tokens.map((ids) => ids.filter((x) => x % 2 === 1).length);
    const grads = async (dtype: 'fp32' | 'bf16') => {
      // With masters, so both sides train the same fp32 values and only the arithmetic differs.
      const m = keep(await LladaModel.random(config, { seed: 11, initStd: 0.2, dtype, masterWeights: true }));
      // No clipping: each side's own clip coefficient would scale its gradients differently.
      const t = keep(await GRPOTrainer.create(m, grpoConfig({ maxGradNorm: 0 }), { rewardFunctions: oddReward }));
      // Each side's own log-probs as the old ones (ratio 1, as on-policy): with the fp32 rollout's,
      // the bf16 side's ratios would be off by its log-prob error (~1e-2), and the advantages (mean
      // 0 per group) cancel the rest of the gradient far more than that.
      const oldLogprobs = await t.likelihood({ promptIds: prompts, completionIds: roll.tokens, rewards: [] });
      const metrics = await t.trainOnRollouts({ promptIds: prompts, completionIds: roll.tokens, rewards, oldLogprobs }, 0);
      return { t, metrics, names: m.parameterInfo().map((p) => p.name) };
    };
    const a = await grads('fp32'), b = await grads('bf16');
    // The loss sums ratio * advantage with advantages of mean 0 per group, so it is ~0 and its error
    // is absolute: ratios off by the log-probs' bf16 error (~1e-2) times advantages ~1.
    expect(Math.abs(b.metrics.loss - a.metrics.loss)).toBeLessThan(LOGITS_TOL);
    let worst = 0, compared = 0;
    for (const n of a.names) {
      const ga = a.t.session.getGrad(n), gb = b.t.session.getGrad(n);
      if (!ga.some((x) => x !== 0)) continue;
      compared++;
      const err = relError(gb, ga);
      worst = Math.max(worst, err);
      expect(err, n).toBeLessThan(GRPO_GRAD_TOL);
    }
    expect(compared).toBeGreaterThan(20);
    console.log(`bf16 GRPO gradients, max relative error ${worst.toExponential(2)} over ${compared} tensors`);
  });

  it("the rollout's log-probs are the learner's log-probs of the same tokens, both in bf16", async () => {
    const m = keep(await loadModel(path.join(FIXTURES, 'gqa_f32'), { dtype: 'bf16' }));
    const t = keep(await GRPOTrainer.create(m, grpoConfig({ maxTokensPerBatch: 30, maxCompletionLength: 6 }), { rewardFunctions: zeroReward }));
    const ps = [[1, 2, 3], [5, 6, 7, 8, 9]];
    const roll = await m.generate(ps, { decoder: 'ar', genLength: 6, temperature: 1, numSamples: 4, seed: 9 });
    const lik = (await t.likelihood({ promptIds: ps, completionIds: roll.tokens, rewards: [] })).flat();
    const diffs = roll.logprobs.flat().map((lp, i) => Math.abs(lp - lik[i]!));
    const worst = Math.max(...diffs);
    console.log(`bf16 rollout vs learner log-probs: max |diff| ${worst.toExponential(2)} over ${diffs.length} tokens`);
    expect(worst).toBeLessThan(2e-6);
  });

  // The reuse path back-propagates through the rollout's own activations, so its forward is the
  // sampler's by construction; the loss agrees with recomputing to fp32 round-off. The gradients
  // agree to the bf16 bound, not to fp32 round-off: backward rounds each product's output gradient
  // to bf16, and the kept rollout sums identical canvases' gradients before that rounding where the
  // recomputed chunks round them one by one (measured 4.3e-3, L2 relative).
  it('the rollout-activation reuse path gives the same loss as recomputing, gradients to the bf16 bound', async () => {
    const make = async (over: Record<string, unknown>) => {
      const model = keep(await LladaModel.random(config, { seed: 11, initStd: 0.2, dtype: 'bf16' }));
      return keep(await GRPOTrainer.create(model, grpoConfig(over), { rewardFunctions: oddReward }));
    };
    const plain = await make({ reuseRolloutMemoryMB: 0 });
    const all = await make({});
    const mp = await plain.step(records, 0);
    const ma = await all.step(records, 0);
    expect(mp.reused_positions).toBe(0);
    expect(ma.reused_positions).toBe(7);
    expect(ma.reward).toBe(mp.reward);
    expect(Math.abs(ma.loss - mp.loss)).toBeLessThan(1e-6);
    let worst = 0;
    for (const { name } of all.model.parameterInfo()) worst = Math.max(worst, relError(all.session.getGrad(name), plain.session.getGrad(name)));
    console.log(`bf16 reuse vs recompute gradients: max relative error ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(GRAD_TOL);
  });

  it('greedy decoding mostly agrees with fp32', async () => {
    const ps = Array.from({ length: 8 }, (_, i) => Array.from({ length: 4 + (i % 3) }, (_, j) => (i * 7 + j * 3) % 27));
    const decode = async (dtype: 'fp32' | 'bf16') =>
      (await keep(await LladaModel.random(config, { seed: 11, initStd: 0.2, dtype })).generate(ps, { decoder: 'ar', genLength: 16 })).tokens;
    const a = await decode('fp32'), b = await decode('bf16');
    let same = 0, prefix = 0;
    for (let i = 0; i < a.length; i++) {
      a[i]!.forEach((x, t) => (same += x === b[i]![t] ? 1 : 0));
      const k = a[i]!.findIndex((x, t) => x !== b[i]![t]);
      prefix += k < 0 ? a[i]!.length : k;
    }
    const n = a.length * a[0]!.length;
    console.log(`bf16 vs fp32 greedy: ${same}/${n} tokens equal, ${prefix}/${n} before the first difference`);
    expect(same / n).toBeGreaterThan(0.7);
  });
});

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const tmp = tmpDir();
const run = (...a: string[]) => execFileSync(process.execPath, [cli, ...a], { encoding: 'utf8' });

describe('bf16 from configs and the CLI', () => {
  it("the trainer configs' dtype field: fp32 by default, bf16 on request, anything else named in the error", () => {
    const base = { model: 'x', data: { train: 'x' } };
    expect(grpoConfig().dtype).toBe('fp32');
    expect(grpoConfig({ dtype: 'bf16' }).dtype).toBe('bf16');
    expect(parseSftConfig({ ...base, dtype: 'bf16' }, 'test').dtype).toBe('bf16');
    expect(() => parseSftConfig({ ...base, dtype: 'fp16' }, 'cfg.yaml')).toThrow(/cfg\.yaml: `dtype`/);
  });

  it('an SFT run in bf16 trains the bf16 model: its losses are near the fp32 run\'s, not equal', async () => {
    const losses = async (dtype: 'fp32' | 'bf16') => {
      const out = path.join(tmp, `sft-${dtype}`);
      await runSft({ config: parseSftConfig({
        model: { init: { dModel: 64, nLayers: 2, nHeads: 4, mlpHiddenSize: 128, maxSequenceLength: 96, seed: 1, initStd: 0.05 } },
        data: { train: path.join(root, 'examples', 'data', 'arith-tiny.jsonl') },
        batchSize: 8, learningRate: 3e-3, maxSteps: 3, saveSteps: 3, seed: 4, outputDir: out, dtype,
      }, 'test') });
      return readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { loss: number }).loss);
    };
    const a = await losses('fp32'), b = await losses('bf16');
    expect(b).toHaveLength(3);
    b.forEach((x, i) => {
      expect(x).not.toBe(a[i]);
      expect(Math.abs(x - a[i]!) / a[i]!).toBeLessThan(LOGITS_TOL);
    });
  });

  it('--dtype bf16 on generate and bench; info says what runs the bf16 products', () => {
    const dir = path.join(tmp, 'cli-model');
    run('init', '--out', dir, '--d-model', '32', '--layers', '1', '--heads', '2', '--mlp', '32');
    const g = JSON.parse(run('generate', '--model', dir, '--prompt', 'x', '--raw', '--decoder', 'ar', '--gen-length', '4', '--dtype', 'bf16', '--json'));
    expect(g.completions[0].tokens).toHaveLength(4);
    const b = JSON.parse(run('bench', '--model', dir, '--only', 'forward', '--runs', '1', '--dtype', 'bf16', '--json'));
    expect(b.model).toMatchObject({ dtype: 'BF16', kernels: expect.stringMatching(/^oneDNN /) });
    const f = JSON.parse(run('bench', '--model', dir, '--only', 'forward', '--runs', '1', '--json'));
    expect(f.model).toMatchObject({ dtype: 'F32', kernels: expect.stringMatching(/^OpenBLAS /) });
    expect(run('info', '--model', dir)).toMatch(/cpu bf16\s+oneDNN \d/);
  });

  it("the demo's dtype reaches its JustGRPO config (fp32 by default), and `demo --dtype` is a documented flag", () => {
    expect(demoGrpoConfig(DEMO_QUICK, 0, 'm', 'o').dtype).toBe('fp32');
    expect(demoGrpoConfig(DEMO_QUICK, 0, 'm', 'o', 'bf16').dtype).toBe('bf16');
    expect(run('demo', '--help')).toMatch(/--dtype <name>\s+fp32 \| bf16/);
  });
});

describe('bf16 where the CPU has no bf16 instructions', () => {
  // oneDNN's kernels are capped with ONEDNN_MAX_CPU_ISA in a child process (read when oneDNN loads):
  // AVX512_CORE emulates bf16 in oneDNN's own kernels; AVX2 has no bf16 matmul in oneDNN 2.6, so the
  // engine widens the bf16 inputs to fp32 for OpenBLAS. Either computes the same products (bf16 x bf16
  // is exact in fp32), so the logits agree with the native bf16 ones to fp32 round-off.
  // JUSTGRPO_BF16_PRODUCTS=openblas asks for the widened path on any CPU.
  it.each([
    ['ONEDNN_MAX_CPU_ISA=AVX512_CORE', { ONEDNN_MAX_CPU_ISA: 'AVX512_CORE' }, /avx512_core \(bf16 emulated\)/],
    ['ONEDNN_MAX_CPU_ISA=AVX2', { ONEDNN_MAX_CPU_ISA: 'AVX2' }, /avx2: no bf16 matmul for this CPU/],
    ['JUSTGRPO_BF16_PRODUCTS=openblas', { JUSTGRPO_BF16_PRODUCTS: 'openblas' }, /widened to fp32 for OpenBLAS \(JUSTGRPO_BF16_PRODUCTS=openblas\)/],
  ])('%s: the same logits as the bf16 instructions give', async (_name, env, kernels) => {
    const dir = path.join(FIXTURES, 'gqa_f32');
    const ids = [[1, 2, 3, 4, 5, 6, 7, 60, 60, 60], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]];
    const script = `import { loadModel } from ${JSON.stringify(path.join(root, 'dist', 'index.js'))};
      const m = await loadModel(${JSON.stringify(dir)}, { dtype: 'bf16' });
      const l = await m.logits(${JSON.stringify(ids)});
      console.log(JSON.stringify({ name: m.deviceInfo().name, logits: Array.from(l) }));`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8', env: { ...process.env, ...env },
    });
    const r = JSON.parse(out) as { name: string; logits: number[] };
    expect(r.name).toMatch(kernels);
    const here = await keep(await loadModel(dir, { dtype: 'bf16' })).logits(ids);
    const f32 = await keep(await loadModel(dir)).logits(ids);
    expect(relError(Float32Array.from(r.logits), here)).toBeLessThan(1e-5);
    expect(relError(Float32Array.from(r.logits), f32)).toBeLessThan(LOGITS_TOL);
  });
});
