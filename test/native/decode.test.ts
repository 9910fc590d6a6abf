// The decoders: the AR-order rollout against a naive loop over logits, sampling against a known
// distribution, determinism, schedules, options and cancellation.
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { AbortError, InputError, LladaModel, loadModel, type ModelConfig } from '../../lib/index.js';
import { FIXTURES } from '../helpers/fixtures.js';

const models: LladaModel[] = [];
afterAll(async () => {
  for (const m of models) await m.dispose();
});
async function fixture(name: string): Promise<LladaModel> {
  const m = await loadModel(path.join(FIXTURES, name));
  models.push(m);
  return m;
}

/** log-softmax over the first vocabSize columns with the mask token excluded, in float64. */
function logSoftmax(row: Float32Array, config: ModelConfig): number[] {
  let max = -Infinity;
  for (let v = 0; v < config.vocabSize; v++) if (v !== config.maskTokenId) max = Math.max(max, row[v]!);
  let z = 0;
  for (let v = 0; v < config.vocabSize; v++) if (v !== config.maskTokenId) z += Math.exp(row[v]! - max);
  return Array.from({ length: config.vocabSize }, (_, v) => (v === config.maskTokenId ? -Infinity : row[v]! - max - Math.log(z)));
}

/** JustGRPO's rollout written out: feed [prompt, x_<t, MASK...] and read row prompt_len + t. */
async function naiveRollout(m: LladaModel, prompt: number[], L: number, pick: (lp: number[], t: number) => number) {
  const x = [...prompt, ...Array(L).fill(m.config.maskTokenId)];
  const logprobs: number[] = [];
  for (let t = 0; t < L; t++) {
    const lp = logSoftmax(await m.logitsAt([x], [[prompt.length + t]]), m.config);
    const tok = pick(lp, t);
    x[prompt.length + t] = tok;
    logprobs.push(lp[tok]!);
  }
  return { tokens: x.slice(prompt.length), logprobs };
}

const argmax = (a: number[]) => a.reduce((best, v, i) => (v > a[best]! ? i : best), 0);

describe('AR-order rollout', () => {
  it.each(['mha_f32', 'gqa_f32'])('greedy rollout equals the naive loop over logits (%s)', async (name) => {
    const m = await fixture(name);
    for (const prompt of [[5, 9, 2], [57, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]) {
      const r = await m.generate(prompt, { decoder: 'ar', genLength: 12 });
      const naive = await naiveRollout(m, prompt, 12, (lp) => argmax(lp));
      expect(r.tokens[0]).toEqual(naive.tokens);
      r.logprobs[0]!.forEach((lp, t) => expect(lp).toBeCloseTo(naive.logprobs[t]!, 5));
      expect(r.nfe).toEqual([12]);
      expect(r.commitSteps[0]).toEqual(Array.from({ length: 12 }, (_, t) => t));
    }
  });

  it('sampled rollouts: log-probs are the learner\'s log-probs of the same tokens', async () => {
    const m = await fixture('gqa_f32');
    const prompts = [[3, 4, 5], [7, 8, 9, 10, 11, 12, 13]];
    const r = await m.generate(prompts, { decoder: 'ar', genLength: 10, temperature: 1, numSamples: 3, seed: 11 });
    expect(r.tokens).toHaveLength(6);
    for (let row = 0; row < 6; row++) {
      const prompt = prompts[Math.floor(row / 3)]!;
      const teacher = await naiveRollout(m, prompt, 10, (_lp, t) => r.tokens[row]![t]!);
      r.logprobs[row]!.forEach((lp, t) => expect(lp).toBeCloseTo(teacher.logprobs[t]!, 5));
      expect(r.tokens[row]!.every((t) => t >= 0 && t < m.config.vocabSize && t !== m.config.maskTokenId)).toBe(true);
    }
    // Samples of one prompt differ (different streams).
    expect(r.tokens[0]).not.toEqual(r.tokens[1]);
  });

  it('results do not depend on the batch: a prompt alone with seed s + p repeats index p', async () => {
    const m = await fixture('mha_f32');
    const prompts = [[1, 2, 3], [4, 5, 6, 7, 8], [9]];
    const batch = await m.generate(prompts, { decoder: 'ar', genLength: 8, temperature: 1, numSamples: 2, seed: 40 });
    const alone = await m.generate(prompts[1]!, { decoder: 'ar', genLength: 8, temperature: 1, numSamples: 2, seed: 41 });
    expect(alone.tokens).toEqual(batch.tokens.slice(2, 4));
    // OpenBLAS may order a row's sums differently for other batch sizes: log-probs agree to fp32 round-off.
    alone.logprobs.flat().forEach((lp, i) => expect(Math.abs(lp - batch.logprobs.slice(2, 4).flat()[i]!)).toBeLessThan(1e-5));
    const again = await m.generate(prompts, { decoder: 'ar', genLength: 8, temperature: 1, numSamples: 2, seed: 40 });
    expect(again.tokens).toEqual(batch.tokens);
  });

  it('identical canvases are computed once (forwardTokens), with the results of one sample alone', async () => {
    const m = await fixture('gqa_f32');
    const prompt = [3, 4, 5, 6];
    const n = prompt.length + 8;
    // Greedy: the four samples stay identical, so every step runs one canvas.
    const opts = { decoder: 'low_confidence', genLength: 8, blockLength: 4, steps: 8 } as const;
    const one = await m.generate(prompt, opts);
    const four = await m.generate(prompt, { ...opts, numSamples: 4 });
    expect(one.forwardTokens).toBe(8 * n);
    expect(four.forwardTokens).toBe(8 * n);
    for (const row of four.tokens) expect(row).toEqual(one.tokens[0]);
    // The shared canvas's rows are computed in a bigger GEMM: fp32 round-off only.
    four.logprobs.flat().forEach((lp, i) => expect(Math.abs(lp - one.logprobs[0]![i % 8]!)).toBeLessThan(1e-5));
    // AR order at temperature 1: at step t the samples with the same first t tokens share a canvas.
    const ar = await m.generate(prompt, { decoder: 'ar', genLength: 8, temperature: 1, numSamples: 4, seed: 3 });
    let expected = 0;
    for (let t = 0; t < 8; t++) expected += new Set(ar.tokens.map((row) => row.slice(0, t).join(','))).size * n;
    expect(ar.forwardTokens).toBe(expected);
    expect(expected).toBeLessThan(4 * 8 * n);
    const alone = await m.generate(prompt, { decoder: 'ar', genLength: 8, temperature: 1, numSamples: 1, seed: 3 });
    expect(alone.tokens[0]).toEqual(ar.tokens[0]);
  });

  it('at temperature 1 draws follow the model\'s distribution (chi-square)', async () => {
    // With no transformer blocks the next-token distribution at a masked row is fixed and known.
    const config: ModelConfig = {
      dModel: 16, nLayers: 0, nHeads: 2, nKvHeads: 2, headDim: 8, mlpHiddenSize: 16, vocabSize: 12, embeddingSize: 12,
      maxSequenceLength: 8, ropeTheta: 10000, rmsNormEps: 1e-5, maskTokenId: 11, eosTokenId: null, padTokenId: null, bosTokenId: null,
    };
    const m = await LladaModel.random(config, { seed: 7, initStd: 0.4 });
    models.push(m);
    const p = logSoftmax(await m.logitsAt([[1, 11]], [[1]]), config).map(Math.exp);
    const N = 20000;
    const r = await m.generate([1], { decoder: 'ar', genLength: 1, temperature: 1, numSamples: N, seed: 5 });
    const counts = Array(config.vocabSize).fill(0);
    for (const row of r.tokens) counts[row[0]!]++;
    expect(counts[11]).toBe(0); // the mask token is never sampled
    let chi2 = 0;
    for (let v = 0; v < 11; v++) chi2 += (counts[v] - N * p[v]!) ** 2 / (N * p[v]!);
    // 10 degrees of freedom: P(chi2 > 29.59) = 0.001.
    expect(chi2).toBeLessThan(29.59);
    // And the distribution is far from uniform, so the test has power.
    expect(Math.max(...p) / Math.min(...p.slice(0, 11))).toBeGreaterThan(3);
  });

  it('entropies are the entropy of the sampling distribution', async () => {
    const m = await fixture('mha_f32');
    const r = await m.generate([1, 2], { decoder: 'ar', genLength: 3, temperature: 0.5, seed: 1 });
    const x = [1, 2, ...r.tokens[0]!];
    for (let t = 0; t < 3; t++) {
      const masked = [...x.slice(0, 2 + t), ...Array(3 - t).fill(60)];
      const lp = logSoftmax(await m.logitsAt([masked], [[2 + t]]), m.config);
      // softmax(l / T) with T = 0.5
      const scaled = lp.map((v) => (Number.isFinite(v) ? 2 * v : -Infinity));
      const mx = Math.max(...scaled);
      const z = scaled.reduce((a, v) => a + Math.exp(v - mx), 0);
      const q = scaled.map((v) => Math.exp(v - mx) / z);
      const h = -q.reduce((a, v) => a + (v > 0 ? v * Math.log(v) : 0), 0);
      expect(r.entropies[0]![t]).toBeCloseTo(h, 4);
    }
  });
});

describe('parallel decoders', () => {
  it('follow LLaDA\'s schedule: genLength 10, blockLength 5, steps 4 -> 3, 2 per block', async () => {
    const m = await fixture('mha_f32');
    const r = await m.generate([1, 2, 3], { decoder: 'low_confidence', genLength: 10, blockLength: 5, steps: 4 });
    expect(r.transfers[0]).toEqual([3, 2, 3, 2]);
    expect(r.nfe).toEqual([4]);
    expect(r.tokens[0]!.every((t) => t !== 60)).toBe(true);
    // Block order: positions of block 0 are committed in steps 0-1, block 1 in steps 2-3.
    expect(r.commitSteps[0]!.slice(0, 5).every((s) => s < 2)).toBe(true);
    expect(r.commitSteps[0]!.slice(5).every((s) => s >= 2)).toBe(true);
  });

  it('more steps than tokens leave empty steps at the end of each block, as LLaDA does', async () => {
    const m = await fixture('mha_f32');
    const r = await m.generate([1], { decoder: 'low_confidence', genLength: 6, blockLength: 3, steps: 8 });
    expect(r.transfers[0]).toEqual([1, 1, 1, 0, 1, 1, 1, 0]);
    expect(r.nfe).toEqual([8]);
  });

  it('threshold commits at least one token per step and finishes every block', async () => {
    const m = await fixture('gqa_f32');
    const strict = await m.generate([1, 2], { decoder: 'threshold', genLength: 16, blockLength: 8, threshold: 1 });
    expect(strict.transfers[0]).toEqual(Array(16).fill(1));
    const loose = await m.generate([1, 2], { decoder: 'threshold', genLength: 16, blockLength: 8, threshold: 0 });
    expect(loose.transfers[0]).toEqual([8, 8]);
    expect(loose.nfe).toEqual([2]);
  });

  it('random remasking and every confidence measure decode fully and deterministically', async () => {
    const m = await fixture('mha_f32');
    for (const opts of [
      { decoder: 'random' as const },
      { decoder: 'low_confidence' as const, confidence: 'margin' as const },
      { decoder: 'low_confidence' as const, confidence: 'entropy' as const },
      { decoder: 'threshold' as const, confidence: 'entropy' as const, threshold: 0.2 },
    ]) {
      const a = await m.generate([4, 5], { ...opts, genLength: 8, blockLength: 4, steps: 4, temperature: 1, seed: 3 });
      const b = await m.generate([4, 5], { ...opts, genLength: 8, blockLength: 4, steps: 4, temperature: 1, seed: 3 });
      expect(a.tokens).toEqual(b.tokens);
      expect(a.tokens[0]!.every((t) => t !== 60 && t < 61)).toBe(true);
    }
  });

  it('classifier-free guidance counts two forward passes per step', async () => {
    const m = await fixture('mha_f32');
    const r = await m.generate([1, 2, 3], { genLength: 8, blockLength: 8, steps: 4, cfgScale: 1 });
    expect(r.nfe).toEqual([8]);
    const plain = await m.generate([1, 2, 3], { genLength: 8, blockLength: 8, steps: 4 });
    expect(r.tokens).not.toEqual(plain.tokens);
  });

  it('minNewTokens holds back the stop tokens', async () => {
    const m = await fixture('mha_f32');
    // Make token 58 (eos) overwhelmingly likely by steering the LM head row.
    const head = await m.getParameter('model.transformer.ff_out.weight');
    const saved = head.slice();
    for (let i = 58 * 32; i < 59 * 32; i++) head[i] = head[i]! * 50;
    await m.setParameter('model.transformer.ff_out.weight', head);
    try {
      const free = await m.generate([1, 2], { decoder: 'ar', genLength: 6 });
      const held = await m.generate([1, 2], { decoder: 'ar', genLength: 6, minNewTokens: 4, stopTokenIds: [58] });
      expect(free.tokens[0]!.filter((t) => t === 58).length).toBeGreaterThan(0);
      expect(held.tokens[0]!.slice(0, 4)).not.toContain(58);
    } finally {
      await m.setParameter('model.transformer.ff_out.weight', saved);
    }
  });
});

describe('options and calls', () => {
  it.each([
    [{ genLength: 10, blockLength: 4 }, /blockLength that divides genLength \(10\)/],
    [{ genLength: 16, blockLength: 8, steps: 3 }, /multiple of the number of blocks \(2 = genLength \/ blockLength\)/],
    [{ decoder: 'beam' }, /Expected one of 'ar', 'low_confidence', 'random', 'threshold' for `decoder`/],
    [{ temperature: -1 }, /finite number >= 0 for `temperature`/],
    [{ threshold: 2, decoder: 'threshold' }, /number in \[0, 1\] for `threshold`/],
    [{ genLength: 64, blockLength: 32 }, /exceeds the model's maximum length 64/],
  ])('refuses %o', async (opts, message) => {
    const m = await fixture('mha_f32');
    await expect(m.generate([1, 2, 3, 4, 5], opts as never)).rejects.toThrow(InputError);
    await expect(m.generate([1, 2, 3, 4, 5], opts as never)).rejects.toThrow(message);
  });

  it('reports progress with the canvas filling in', async () => {
    const m = await fixture('mha_f32');
    const seen: [number, number][] = [];
    await m.generate([1, 2], {
      genLength: 8, blockLength: 8, steps: 4,
      onProgress: (f, canvas) => seen.push([f, canvas.filter((t) => t === 60).length]),
    });
    // Progress is delivered asynchronously; let the queue drain.
    await new Promise((r) => setTimeout(r, 20));
    expect(seen.map((s) => s[0])).toEqual([0.25, 0.5, 0.75, 1]);
    expect(seen.map((s) => s[1])).toEqual([6, 4, 2, 0]);
  });

  it('every progress update reaches the listener before the Promise settles, none after', async () => {
    const m = await fixture('mha_f32');
    for (let i = 0; i < 5; i++) {
      const seen: number[] = [];
      let settled = false, late = 0;
      await m.generate([1, 2], {
        genLength: 8, blockLength: 8, steps: 4,
        onProgress: (f) => (settled ? late++ : seen.push(f)),
      });
      settled = true;
      expect(seen).toEqual([0.25, 0.5, 0.75, 1]);
      await new Promise((r) => setTimeout(r, 20));
      expect(late).toBe(0);
    }
  });

  it('an AbortSignal stops a long decode and the model stays usable', async () => {
    const m = await LladaModel.random(
      { dModel: 128, nLayers: 4, nHeads: 4, nKvHeads: 4, headDim: 32, mlpHiddenSize: 256, vocabSize: 100, embeddingSize: 104,
        maxSequenceLength: 512, ropeTheta: 10000, rmsNormEps: 1e-5, maskTokenId: 99, eosTokenId: 98, padTokenId: 98, bosTokenId: 97 },
      { seed: 1 },
    );
    models.push(m);
    const ac = new AbortController();
    const t0 = performance.now();
    const call = m.generate([1, 2, 3], { decoder: 'ar', genLength: 256, numSamples: 8, signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await expect(call).rejects.toThrow(AbortError);
    expect(performance.now() - t0).toBeLessThan(3000);
    const r = await m.generate([1, 2, 3], { decoder: 'ar', genLength: 4 });
    expect(r.tokens[0]).toHaveLength(4);
    await expect(m.generate([1], { genLength: 4, signal: AbortSignal.abort() })).rejects.toThrow(AbortError);
  });
});
