// The GPU memory plan's arithmetic on LLaDA-8B's shape (DESIGN.md: d 4096, 32 layers, 32 heads,
// mlp 12288, embedding 126464), worked by hand below.
import { describe, expect, it } from 'vitest';

import { formatMemoryPlan, lossWorkspaceBytes, memoryAdvice, memoryPlan, parameterCount, shardElements } from '../../lib/train/memory-plan.js';

const LLADA_8B = { dModel: 4096, nLayers: 32, nHeads: 32, nKvHeads: 32, mlpHiddenSize: 12288, embeddingSize: 126464, maxSequenceLength: 4096 };
const H100 = 80e9, H200 = 141e9;
// 2 * 126464 * 4096 (embedding, head) + 32 * (2 * 4096 + 4 * 4096^2 + 3 * 12288 * 4096) + 4096
const P = 8_015_581_184;
// The reference run: 64 prompts x G 16, prompts ~256 + 256 generated tokens, 16384 tokens per loss call.
const JUSTGRPO = { rolloutSequences: 64 * 16, rolloutLength: 512, lossTokens: 16384 };

describe('memory plan', () => {
  it("counts LLaDA-8B's parameters", () => {
    expect(parameterCount(LLADA_8B)).toBe(P);
  });

  it('bf16: 2 + 4 (master) + 8 (moments) + 4 (gradients) bytes per parameter, 144.3 GB before any activation: fits neither card', () => {
    const plan = memoryPlan(LLADA_8B, { dtype: 'bf16', ...JUSTGRPO });
    expect(plan.weights).toBe(2 * P);
    expect(plan.masterWeights).toBe(4 * P);
    expect(plan.moments).toBe(8 * P);
    expect(plan.gradients).toBe(4 * P);
    expect((plan.weights + plan.masterWeights + plan.moments + plan.gradients) / 1e9).toBeCloseTo(144.28, 2);
    for (const cap of [H100, H200]) expect(memoryAdvice(plan, { dtype: 'bf16', ...JUSTGRPO }, cap)[0]).toMatch(/no batch setting fits/);
    // fp32 state (16 bytes per parameter, 128.2 GB) is below 141 GB only.
    expect(memoryAdvice(plan, { dtype: 'bf16', ...JUSTGRPO }, H200).join('; ')).toMatch(/dtype 'fp32', which needs no separate master copy/);
    expect(memoryAdvice(plan, { dtype: 'bf16', ...JUSTGRPO }, H100).join('; ')).not.toMatch(/fp32/);
  });

  it('fp32: 16 bytes per parameter (128.2 GB); with small rollouts, checkpointing and 4096-token loss calls it fits 141 GB, never 80 GB', () => {
    const options = { dtype: 'fp32' as const, checkpointActivations: true, rolloutSequences: 4 * 16, rolloutLength: 512, lossTokens: 4096 };
    const plan = memoryPlan(LLADA_8B, options);
    expect(plan.masterWeights).toBe(0);
    expect((plan.weights + plan.moments + plan.gradients) / 1e9).toBeCloseTo(128.25, 2);
    expect(plan.total).toBeLessThan(H200);
    expect(memoryAdvice(plan, options, H200)).toEqual([]);
    expect(memoryAdvice(plan, options, H100)[0]).toMatch(/no batch setting fits/);
    // The reference batch sizes do not fit even 141 GB: the advice names the rollout and the loss batch.
    const full = memoryPlan(LLADA_8B, { dtype: 'fp32', ...JUSTGRPO });
    const advice = memoryAdvice(full, { dtype: 'fp32', ...JUSTGRPO }, H200).join('; ');
    expect(advice).toMatch(/lower promptsPerStep/);
    expect(advice).toMatch(/checkpointActivations: true/);
  });

  it('the loss workspace: every layer saved, or with checkpointing only the layer inputs and one layer', () => {
    const N = 4096, R = 8;
    const d = 4096, mlp = 12288, qkd = 3 * 4096, H = 32;
    // One layer's saves in bf16 (each piece a multiple of 256 bytes at these sizes).
    const layer = N * (2 * d + 4 + 2 * qkd + 2 * d + 4 * H + 4 * d + 2 * d + 4 + 2 * 2 * mlp + 2 * mlp);
    const full = lossWorkspaceBytes(LLADA_8B, 'bf16', false, N, R);
    const ckpt = lossWorkspaceBytes(LLADA_8B, 'bf16', true, N, R);
    expect(full - ckpt).toBe(31 * layer);
    // The inputs of 33 streams (32 layer inputs and the output) in fp32 are in both.
    expect(ckpt).toBeGreaterThan(33 * N * d * 4);
  });

  it('counts the kept rollout activations and names their budget when they are large', () => {
    const options = { dtype: 'fp32' as const, checkpointActivations: true, rolloutSequences: 64, rolloutLength: 512, lossTokens: 4096, keptBytes: 16 * 2 ** 30 };
    const plan = memoryPlan(LLADA_8B, options);
    expect(plan.keptActivations).toBe(16 * 2 ** 30);
    expect(plan.total).toBe(memoryPlan(LLADA_8B, { ...options, keptBytes: 0 }).total + 16 * 2 ** 30);
    expect(memoryAdvice(plan, options, H200).join('; ')).toMatch(/lower reuseRolloutMemoryMB/);
  });

  it('prints each part and a verdict per card', () => {
    const options = { dtype: 'bf16' as const, ...JUSTGRPO };
    const text = formatMemoryPlan(memoryPlan(LLADA_8B, options), options, [{ name: 'H100 80 GB', bytes: H100 }, { name: 'H200 141 GB', bytes: H200 }]);
    expect(text).toMatch(/8\.02B parameters, bf16/);
    expect(text).toMatch(/AdamW moments\s+64\.1 GB/);
    expect(text).toMatch(/does not fit H100 80 GB/);
    expect(text).toMatch(/does not fit H200 141 GB/);
  });

  it('zeroStage 1 on 8 ranks: 64.1 GB of AdamW moments become 8.0 GB per rank; bf16 state 88.2 GB per GPU, fits 141 GB only', () => {
    const options = { dtype: 'bf16' as const, ...JUSTGRPO, ranks: 8, zeroStage: 1 as const };
    const plan = memoryPlan(LLADA_8B, options);
    // OptimizerShard::of: ceil(P / 8) = 1_001_947_648, already a multiple of 64.
    expect(plan.momentParams).toBe(1_001_947_648);
    expect(plan.moments).toBe(8 * 1_001_947_648);
    expect(plan.moments / 1e9).toBeCloseTo(8.02, 2);
    expect(memoryPlan(LLADA_8B, { ...options, zeroStage: 0 }).moments / 1e9).toBeCloseTo(64.12, 2);
    // Weights, masters and gradients stay whole: 2 + 4 + 4 bytes per parameter + the shard's moments.
    expect((plan.weights + plan.masterWeights + plan.moments + plan.gradients) / 1e9).toBeCloseTo(88.17, 2);
    expect(memoryAdvice(plan, options, H100)[0]).toMatch(/no batch setting fits.*more ranks/);
    expect(memoryAdvice(plan, options, H200)[0]).not.toMatch(/no batch setting fits/);
    // Without sharding the advice names zeroStage 1.
    expect(memoryAdvice(memoryPlan(LLADA_8B, { ...options, zeroStage: 0 }), options, H200)[0]).toMatch(/zeroStage 1 over several GPUs/);
    const text = formatMemoryPlan(plan, options, [{ name: 'H200 141 GB', bytes: H200 }]);
    expect(text).toMatch(/per rank of 8, zeroStage 1: AdamW moments sharded/);
    expect(text).toMatch(/AdamW moments \(1\/8\)\s+8\.0 GB/);
  });

  it("a rank's shard: ceil(params / ranks) rounded up to 64; one rank or zeroStage 0 holds everything", () => {
    expect(shardElements(1000, 2, 1)).toBe(512);
    expect(shardElements(100, 8, 1)).toBe(64);
    expect(shardElements(1000, 1, 1)).toBe(1000);
    expect(shardElements(1000, 4, 0)).toBe(1000);
    expect(shardElements(128, 2, 1)).toBe(64);
  });
});
