// Whole models on the CUDA backend against the CPU backend and the PyTorch fixtures: logits, the
// decoders (exact tokens in fp32), log-probs, save/load. Cases live in parity.mjs.
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import './tier.js';

import { loadModel } from '../../lib/index.js';
import { EngineError, InputError } from '../../lib/errors.js';
import { internals, type LladaModel } from '../../lib/model.js';
import { native } from '../../lib/native/binding.js';
import { FIXTURES, FIXTURE_MODELS, logitsCases } from '../helpers/fixtures.js';
// @ts-expect-error plain JavaScript module shared with the GPU machine's runner
import { cpuAsCuda, gpuStatus, modelCases } from './parity.mjs';

const status = gpuStatus(native()) as { ok: boolean; reason: string };
if (!status.ok) console.log(`skipping the CUDA model parity tests: ${status.reason}`);

describe.skipIf(!status.ok)('CUDA models match the CPU backend and PyTorch', () => {
  const ctx = {
    loadModel,
    fixtures: FIXTURES,
    models: FIXTURE_MODELS,
    logitsCases,
    engineOf: (m: LladaModel) => internals.get(m)!.engine,
  };
  for (const c of modelCases(ctx) as { name: string; run: () => Promise<unknown> }[]) {
    it(c.name, async () => {
      await expect(c.run()).resolves.toBeDefined();
    });
  }
});

describe('CUDA model parity harness', () => {
  it('every model case passes when its "CUDA" models run on the CPU (the cases themselves are sound)', async () => {
    const ctx = {
      loadModel: cpuAsCuda(native(), loadModel).loadModel,
      fixtures: FIXTURES,
      models: FIXTURE_MODELS,
      logitsCases,
      engineOf: (m: LladaModel) => internals.get(m)!.engine,
    };
    const cases = modelCases(ctx) as { name: string; run: () => Promise<unknown> }[];
    expect(cases.length).toBeGreaterThan(20);
    for (const c of cases) await expect(c.run(), c.name).resolves.toBeDefined();
  });
});

describe('backend selection', () => {
  it("loadModel with backend 'cuda' works only where it can, and says why not otherwise", async () => {
    const dir = path.join(FIXTURES, 'gqa_f32');
    const load = loadModel(dir, { backend: 'cuda', dtype: 'F32' });
    if (!native().backends.includes('cuda')) {
      await expect(load).rejects.toThrow(InputError);
      await expect(loadModel(dir, { backend: 'cuda' })).rejects.toThrow(/not in this build.*npm run build:cuda/);
    } else if (native().cuda!.deviceCount() === 0) {
      await expect(load).rejects.toThrow(EngineError);
      await expect(loadModel(dir, { backend: 'cuda' })).rejects.toThrow(/no GPU to run on/);
    } else {
      const m = await load;
      expect(m.backend).toBe('cuda');
      await m.dispose();
    }
  });

  it('an unknown backend is an input error', async () => {
    await expect(loadModel(path.join(FIXTURES, 'gqa_f32'), { backend: 'tpu' as never })).rejects.toThrow(InputError);
  });

  it("a CPU model reports backend 'cpu'", async () => {
    const m = await loadModel(path.join(FIXTURES, 'gqa_f32'));
    expect(m.backend).toBe('cpu');
    await m.dispose();
  });
});
