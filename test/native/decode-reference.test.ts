// Greedy outputs of every decoder against the PyTorch re-implementation of LLaDA's generate and
// Fast-dLLM's threshold rule (test/reference/make_decode_fixtures.py): token for token.
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { InputError, loadModel, type LladaModel } from '../../lib/index.js';
import { FIXTURES } from '../helpers/fixtures.js';

type Case = {
  name: string; model: string; prompt: number[]; decoder: 'low_confidence' | 'threshold';
  confidence: 'probability' | 'margin' | 'entropy'; gen_length: number; block_length: number; steps: number;
  threshold: number | null; cfg_scale: number; tokens: number[]; nfe: number; transfers: number[]; min_margin: number;
};
const spec = JSON.parse(readFileSync(path.join(FIXTURES, 'decode', 'decode.json'), 'utf8')) as {
  cases: Case[];
  invalid: { gen_length: number; block_length: number; steps: number; reason: string }[];
};

const models = new Map<string, LladaModel>();
afterAll(async () => {
  for (const m of models.values()) await m.dispose();
});
async function model(name: string) {
  if (!models.has(name)) models.set(name, await loadModel(path.join(FIXTURES, name)));
  return models.get(name)!;
}

describe('greedy decoding matches the PyTorch reference', () => {
  it.each(spec.cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    // Every decision in the fixture has a margin above 1e-4, far above fp32 round-off.
    expect(c.min_margin).toBeGreaterThan(1e-4);
    const m = await model(c.model);
    const ar = c.block_length === 1 && c.steps === c.gen_length && c.decoder === 'low_confidence';
    const r = await m.generate(c.prompt, {
      decoder: ar ? 'ar' : c.decoder, confidence: c.confidence, genLength: c.gen_length, blockLength: c.block_length,
      steps: c.steps, threshold: c.threshold ?? undefined, cfgScale: c.cfg_scale, temperature: 0,
    });
    expect(r.tokens[0]).toEqual(c.tokens);
    expect(r.nfe[0]).toBe(c.nfe);
    expect(r.transfers[0]).toEqual(c.transfers);
  });
});

describe('invalid schedules are refused as LLaDA refuses them', () => {
  it.each(spec.invalid.map((v) => [`gen ${v.gen_length}, block ${v.block_length}, steps ${v.steps}: ${v.reason}`, v] as const))(
    '%s',
    async (_name, v) => {
      const m = await model('mha_f32');
      await expect(
        m.generate([1, 2], { decoder: 'low_confidence', genLength: v.gen_length, blockLength: v.block_length, steps: v.steps }),
      ).rejects.toThrow(InputError);
    },
  );
});
