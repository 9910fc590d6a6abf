// The GPU benchmark's arithmetic (bench/gpu/shapes.mjs), checked where it can be without a GPU:
// its parameter count against the engine's, and its presets against LLaDA-8B's published size.
import { describe, expect, it } from 'vitest';

import { parseModelConfig } from '../../lib/config.js';
import { LladaModel } from '../../lib/model.js';
// @ts-expect-error plain JavaScript module of the GPU benchmark
import { PRESETS, forwardFlops, numParams, rawConfig } from '../../bench/gpu/shapes.mjs';

describe('GPU benchmark shapes', () => {
  it('counts the parameters the engine allocates (tiny preset)', async () => {
    const model = await LladaModel.random(parseModelConfig(rawConfig(PRESETS.tiny, 128)));
    expect(numParams(PRESETS.tiny)).toBe(model.numParams);
    await model.dispose();
  });

  it('LLaDA-8B has 8.02B parameters and a forward of T tokens costs about 2 * params * T FLOPs', () => {
    const p = PRESETS.llada8b;
    expect(numParams(p) / 1e9).toBeCloseTo(8.02, 2);
    // With the head at one row and short sequences, FLOPs approach 2 * (non-embedding params) per token.
    const nonEmbedding = numParams(p) - 2 * p.vocab * p.d - p.d;
    const f = forwardFlops(p, 1000, 1, 0);
    expect(f / (2 * nonEmbedding * 1000)).toBeGreaterThan(0.99);
    expect(f / (2 * nonEmbedding * 1000)).toBeLessThan(1.01);
  });
});
